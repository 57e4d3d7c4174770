//! Each named schedule's rounds ([`super::Schedule`]): one method of [`Scenario`] per
//! schedule, called by [`Scenario::poll`] at each step's time and returning how long until
//! its next step. What a round may do at an instant is [`Act`]'s.

use std::time::Duration;

use rand::Rng;

use super::{Act, MARGIN, Scenario};
use crate::faults::{FaultKind, Target};
use crate::recorder::{FAULT_PHASE, Replacement};

impl Scenario {
    pub(super) fn leader_crash(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
        match self.step {
            0 => {
                let leader = match self.round_leader(act, Duration::ZERO) {
                    Ok(leader) => leader,
                    Err(wait) => return wait,
                };
                let followers: Vec<String> =
                    act.nodes().into_iter().filter(|n| *n != leader).collect();
                let lagging = followers[self.rng.random_range(0..followers.len())].clone();
                self.first = Some(leader.clone());
                if self.rng.random_bool(0.5) {
                    // Half the rounds, one follower stops getting the leader's appends
                    // first: the leader goes on with the other follower alone …
                    act.window(
                        FaultKind::Partition,
                        Target::Link(leader.clone(), lagging.clone()),
                        Duration::ZERO,
                    );
                    self.cut.push((leader, lagging.clone()));
                    self.second = followers.into_iter().find(|f| *f != lagging);
                    self.step = 1;
                    self.ms(50..=300)
                } else {
                    self.step = 1;
                    Duration::ZERO
                }
            }
            1 => {
                // … and crashes mid-append; the follower that has its latest entries is
                // cut off at the same moment, so the next leader is elected by the lagging
                // follower and the crashed leader once it is back — with what the crashed
                // leader's disk kept.
                let down = self.ms(200..=1_200);
                let leader = self.first.clone();
                if let Some(leader) = &leader {
                    act.crash(leader, down);
                }
                act.heal(&mut self.cut);
                if let Some(follower) = self.second.clone() {
                    let cut = act.cut_from_nodes(&follower, down);
                    self.cut.extend(cut);
                }
                self.step = 2;
                down
            }
            2 => {
                act.restart(self.first.as_deref());
                self.step = 3;
                self.ms(0..=200)
            }
            _ => {
                act.heal(&mut self.cut);
                self.end_round();
                self.ms(100..=600)
            }
        }
    }

    pub(super) fn deposed_leader(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
        match self.step {
            0 => {
                let leader = match self.round_leader(act, Duration::ZERO) {
                    Ok(leader) => leader,
                    Err(wait) => return wait,
                };
                let cut = self.ms(300..=1_500);
                self.cut.extend(act.cut_from_nodes(&leader, cut));
                self.first = Some(leader);
                self.step = 1;
                cut
            }
            1 => {
                act.heal(&mut self.cut);
                self.step = 2;
                self.ms(100..=500)
            }
            2 => {
                // Half the time the next leader is cut off too: the first may then lead
                // again, in a later term, and must not go on from its old term's memory.
                let next = act.leader(self.partition);
                match next.filter(|n| Some(n) != self.first.as_ref()) {
                    Some(next) if self.rng.random_bool(0.5) && self.may_start(act.now) => {
                        let cut = self.ms(300..=1_200);
                        self.cut.extend(act.cut_from_nodes(&next, cut));
                        self.step = 3;
                        cut
                    }
                    _ => {
                        self.end_round();
                        self.ms(200..=600)
                    }
                }
            }
            _ => {
                act.heal(&mut self.cut);
                self.end_round();
                self.ms(200..=600)
            }
        }
    }

    pub(super) fn figure_8(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
        match self.step {
            // A leader appends alone (cut off from the other nodes, clients still reach
            // it), then crashes.
            0 => {
                let leader = match self.round_leader(act, Duration::from_secs(1)) {
                    Ok(leader) => leader,
                    Err(wait) => return wait,
                };
                let alone = self.ms(30..=150);
                self.cut.extend(act.cut_from_nodes(&leader, alone));
                self.first = Some(leader);
                self.step = 1;
                alone
            }
            1 => {
                let first = self.first.clone();
                act.crash_named(first.as_deref());
                act.heal(&mut self.cut);
                self.step = 2;
                self.ms(10..=30)
            }
            // The next leader, elected without the first's entries, does the same.
            2 => match act
                .leader(self.partition)
                .filter(|n| Some(n) != self.first.as_ref())
            {
                Some(second) => {
                    let alone = self.ms(30..=150);
                    self.cut.extend(act.cut_from_nodes(&second, alone));
                    self.second = Some(second);
                    self.step = 3;
                    alone
                }
                None if act.now + MARGIN < FAULT_PHASE => self.ms(10..=30),
                None => {
                    act.restart(self.first.as_deref());
                    self.end_round();
                    FAULT_PHASE
                }
            },
            3 => {
                let second = self.second.clone();
                act.crash_named(second.as_deref());
                act.heal(&mut self.cut);
                // The first comes back: with the third node it elects a leader, which
                // replicates what it has to a majority.
                act.restart(self.first.as_deref());
                self.step = 4;
                self.ms(150..=600)
            }
            // Whoever is elected now replicates what it has to a majority — the first's
            // entries of an old term among them …
            4 => match act.leader(self.partition) {
                Some(leader) => {
                    self.first = Some(leader);
                    self.step = 5;
                    self.ms(5..=80)
                }
                None if act.now + MARGIN < FAULT_PHASE => self.ms(10..=30),
                None => {
                    act.restart(self.second.as_deref());
                    self.end_round();
                    FAULT_PHASE
                }
            },
            // … and crashes, likely before an entry of its own term is committed; the
            // second comes back with its later-term entries and may overwrite them.
            5 => {
                let leader = self.first.clone();
                act.crash_named(leader.as_deref());
                act.restart(self.second.as_deref());
                self.step = 6;
                self.ms(200..=800)
            }
            _ => {
                act.restart(self.first.as_deref());
                self.end_round();
                self.ms(200..=600)
            }
        }
    }

    pub(super) fn election_crash(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
        let tick = act.cluster.knobs().raft_tick;
        match self.step {
            0 => {
                let leader = match self.round_leader(act, Duration::ZERO) {
                    Ok(leader) => leader,
                    Err(wait) => return wait,
                };
                act.crash(&leader, Duration::ZERO);
                self.first = Some(leader);
                self.step = 1;
                // Election timeouts are 10 to 20 ticks: the next crash lands in the
                // election that follows (or just before or after it).
                tick * self.rng.random_range(8..=24)
            }
            1 => {
                let others: Vec<String> = act
                    .nodes()
                    .into_iter()
                    .filter(|n| Some(n) != self.first.as_ref())
                    .collect();
                let second = others[self.rng.random_range(0..others.len())].clone();
                act.crash(&second, Duration::ZERO);
                self.second = Some(second);
                self.step = 2;
                self.ms(100..=500)
            }
            2 => {
                act.restart(self.first.as_deref());
                self.step = 3;
                self.ms(100..=500)
            }
            _ => {
                act.restart(self.second.as_deref());
                self.end_round();
                self.ms(200..=600)
            }
        }
    }

    pub(super) fn minority_partition(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
        match self.step {
            0 => {
                if !self.may_start(act.now) {
                    return FAULT_PHASE;
                }
                let nodes = act.nodes();
                let node = match self.rng.random_bool(0.5) {
                    true => self.pick_leader(act),
                    false => None,
                }
                .unwrap_or_else(|| nodes[self.rng.random_range(0..nodes.len())].clone());
                let length = self.ms(1_000..=3_000);
                act.isolate(&node, true, length);
                self.first = Some(node);
                self.step = 1;
                length
            }
            _ => {
                if let Some(node) = self.first.clone() {
                    act.isolate(&node, false, Duration::ZERO);
                }
                self.end_round();
                self.ms(200..=800)
            }
        }
    }

    pub(super) fn decide_churn(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
        if !self.may_start(act.now) {
            return FAULT_PHASE;
        }
        if let Some(leader) = self.pick_leader(act) {
            act.hand_over(&leader, self.partition);
        }
        self.ms(30..=200)
    }

    pub(super) fn coordinator_crash(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
        match self.step {
            0 => {
                if !self.may_start(act.now) {
                    return FAULT_PHASE;
                }
                if !self.opened {
                    // Two clients die mid-protocol all through the fault phase.
                    self.opened = true;
                    act.window(
                        FaultKind::ClientCrash,
                        Target::Host("c1".into()),
                        FAULT_PHASE,
                    );
                    act.window(
                        FaultKind::ClientCrash,
                        Target::Host("c2".into()),
                        FAULT_PHASE,
                    );
                }
                let Some(leader) = self.pick_leader(act) else {
                    return self.ms(20..=50);
                };
                let down = self.ms(50..=300);
                act.crash(&leader, down);
                self.first = Some(leader);
                self.step = 1;
                down
            }
            _ => {
                act.restart(self.first.as_deref());
                self.end_round();
                self.ms(100..=400)
            }
        }
    }

    pub(super) fn client_clock_ahead(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
        match self.step {
            // Once the setup is over: a monotone clock that read an hour ahead never reads
            // less again, so that client's reads and commits fail for the rest of the run
            // (what the schedule is about), and a setup it ran would never finish.
            0 if !act.driver.setup_done() => self.ms(20..=50),
            0 => {
                let clients = act.driver.client_hosts();
                let client = clients[self.rng.random_range(0..clients.len())].clone();
                let hour = Duration::from_secs(3_600).as_nanos() as i64;
                act.window_with(
                    FaultKind::ClockBoundViolation,
                    Target::Host(client),
                    FAULT_PHASE,
                    hour,
                );
                self.step = 1;
                self.ms(2_000..=3_000)
            }
            1 => {
                if let Some(leader) = self.pick_leader(act) {
                    let down = self.ms(200..=800);
                    act.crash(&leader, down);
                    self.first = Some(leader);
                    self.step = 2;
                    return down;
                }
                self.ms(20..=50)
            }
            2 => {
                act.restart(self.first.as_deref());
                self.step = 3;
                FAULT_PHASE
            }
            _ => FAULT_PHASE,
        }
    }

    pub(super) fn disk_wiped(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
        match self.step {
            0 => {
                // The replacement needs time to run before the faults heal.
                let leader = match self.round_leader(act, Duration::from_secs(2)) {
                    Ok(leader) => leader,
                    Err(wait) => return wait,
                };
                let victim = match self.rng.random_bool(0.5) {
                    true => leader,
                    false => {
                        let others: Vec<String> =
                            act.nodes().into_iter().filter(|n| *n != leader).collect();
                        others[self.rng.random_range(0..others.len())].clone()
                    }
                };
                act.crash(&victim, FAULT_PHASE);
                self.first = Some(victim);
                self.step = 1;
                self.ms(100..=600)
            }
            1 => {
                // Its disk is lost; a new node, under a new name, takes its place.
                let host = self.first.clone().expect("step 0 crashed a node");
                let new = format!("{host}-r");
                if let Some((old, address)) = act.cluster.replace_node(&host, &new) {
                    act.driver.note(
                        act.now,
                        format_args!("{host}: disk wiped; {new} replaces {old}"),
                    );
                    act.driver
                        .request_replacement(Replacement { old, new, address });
                }
                act.restart(Some(&host));
                self.step = 2;
                self.ms(500..=1_500)
            }
            2 => {
                // Leaders crash: while one original node is down, the new node's vote
                // is part of every majority.
                let leader = match self.round_leader(act, Duration::ZERO) {
                    Ok(leader) => leader,
                    Err(wait) => return wait,
                };
                let down = self.ms(200..=800);
                act.crash(&leader, down);
                self.second = Some(leader);
                self.step = 3;
                down
            }
            _ => {
                act.restart(self.second.as_deref());
                self.second = None;
                self.step = 2;
                self.ms(300..=1_000)
            }
        }
    }

    pub(super) fn skew_at_bound(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
        match self.step {
            0 => {
                act.window(FaultKind::Skew, Target::Network, FAULT_PHASE);
                self.step = 1;
                self.ms(300..=800)
            }
            1 => {
                let leader = match self.round_leader(act, Duration::ZERO) {
                    Ok(leader) => leader,
                    Err(wait) => return wait,
                };
                let down = self.ms(200..=600);
                act.crash(&leader, down);
                self.first = Some(leader);
                self.step = 2;
                down
            }
            _ => {
                act.restart(self.first.as_deref());
                self.first = None;
                self.step = 1;
                self.ms(500..=1_500)
            }
        }
    }
}
