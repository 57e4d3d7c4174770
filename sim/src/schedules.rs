//! Named schedules for replicated journals (issue 14): where the fault kinds of
//! [`crate::faults`] open windows at random times on random hosts, a schedule aims at the
//! leader of a partition's Raft group — found from the running nodes' own status
//! ([`SimCluster::leader_of`]) — and plays one known-dangerous sequence against it, round
//! after round, for the whole fault phase. Each action goes through the fault driver, so
//! the trace shows it and the heal at the end of the fault phase undoes it.
//!
//! | schedule | what each round does |
//! |---|---|
//! | `leader-crash` | crashes a partition's leader while appends are in flight; restarts it later. Half the rounds, one follower stops getting appends first and the other is cut off at the crash: the next leader is elected by the lagging follower and the restarted leader, with what the crashed leader's disk kept |
//! | `deposed-leader` | cuts a leader off from the other nodes (clients still reach it, so it keeps taking requests and proposing until check-quorum deposes it); heals; then often cuts the next leader off, so the first may lead again in a later term |
//! | `figure-8` | Raft's figure 8: a leader appends alone and crashes; the next does the same; the first comes back, is elected and replicates its old-term entries to a majority, and crashes before committing one of its own term; the second comes back and may overwrite them |
//! | `election-crash` | crashes a leader, then a second node during the election that follows; restarts both |
//! | `minority-partition` | isolates one node (the leader half the time) from every host for 1–3 s at a time |
//! | `decide-churn` | hands a partition's leadership to another voter every 30–200 ms, under cross-partition load: many handovers land within 2ε of a participant's `Decide` |
//! | `coordinator-crash` | crashes a partition's leader for 50–300 ms every 100–400 ms under cross-partition load, with clients dying mid-protocol: coordinators die between collecting votes and appending |
//! | `client-clock-ahead` | once the workload's setup is over, one client's clock an hour ahead (claiming its usual bound) all through the fault phase — its clock is monotone, so it stays there after the heal — and a leader crash midway |
//! | `skew-at-bound` | every clock at an extreme of its bound all through the fault phase (nodes and half the clients ahead, the rest behind), leaders crashing every 0.5–1.5 s |
//! | `disk-wiped` | once: crashes a node (a partition's leader half the time), wipes its disk and brings its host back as a new node under a new name (ARCHITECTURE §5 rule 3), which the operator host replaces it by in the metadata group and every Raft group; then leaders crash for 200–800 ms every 0.3–1 s, so the new node's vote is needed while an original node is down |

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use journaldb_proto::PartitionId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::cluster::SimCluster;
use crate::driver::Driver;
use crate::faults::{FaultKind, Target, Window};
use crate::recorder::FAULT_PHASE;
use crate::recorder::Replacement;

/// A named schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Schedule {
    /// A leader crashes mid-append.
    LeaderCrash,
    /// A deposed leader keeps proposing after a partition.
    DeposedLeader,
    /// Raft's figure 8.
    Figure8,
    /// A crash during an election.
    ElectionCrash,
    /// A minority partitioned for long periods.
    MinorityPartition,
    /// A participant's leader changing around its `Decide`s.
    DecideChurn,
    /// A coordinator dying between collecting votes and appending.
    CoordinatorCrash,
    /// A client's clock an hour ahead.
    ClientClockAhead,
    /// Every clock at an extreme of its bound.
    SkewAtBound,
    /// A replica's disk wiped, and the node replaced.
    DiskWiped,
}

impl Schedule {
    /// Every schedule, with its name.
    pub const ALL: [(Schedule, &'static str); 10] = [
        (Schedule::LeaderCrash, "leader-crash"),
        (Schedule::DeposedLeader, "deposed-leader"),
        (Schedule::Figure8, "figure-8"),
        (Schedule::ElectionCrash, "election-crash"),
        (Schedule::MinorityPartition, "minority-partition"),
        (Schedule::DecideChurn, "decide-churn"),
        (Schedule::CoordinatorCrash, "coordinator-crash"),
        (Schedule::ClientClockAhead, "client-clock-ahead"),
        (Schedule::SkewAtBound, "skew-at-bound"),
        (Schedule::DiskWiped, "disk-wiped"),
    ];

    /// Whether it needs transactions across partitions (the run then has at least two).
    pub fn needs_partitions(self) -> bool {
        matches!(self, Schedule::DecideChurn | Schedule::CoordinatorCrash)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Schedule::ALL
            .iter()
            .find(|(s, _)| s == self)
            .map(|(_, n)| *n)
            .expect("every schedule has a name");
        f.write_str(name)
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Schedule::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(schedule, _)| *schedule)
            .ok_or_else(|| {
                let known: Vec<&str> = Schedule::ALL.iter().map(|(_, n)| *n).collect();
                format!("unknown schedule {s:?}; known: {}", known.join(", "))
            })
    }
}

/// No round starts this close to the end of the fault phase.
const MARGIN: Duration = Duration::from_millis(400);

/// A schedule being played: the step of the current round and the nodes it acts on.
pub(crate) struct Scenario {
    schedule: Schedule,
    rng: ChaCha8Rng,
    /// When the next step is due.
    next: Duration,
    step: u32,
    partition: PartitionId,
    /// The round's first and second node (a leader, the next leader).
    first: Option<String>,
    second: Option<String>,
    /// Links cut by this round, to heal.
    cut: Vec<(String, String)>,
    /// Windows meant for the whole fault phase are open.
    opened: bool,
}

impl Scenario {
    pub(crate) fn new(schedule: Schedule, rng: ChaCha8Rng) -> Scenario {
        Scenario {
            schedule,
            rng,
            next: Duration::from_millis(300),
            step: 0,
            partition: PartitionId::new(0),
            first: None,
            second: None,
            cut: Vec::new(),
            opened: false,
        }
    }

    /// Plays what is due at `now` (called between simulation steps, in the fault phase).
    pub(crate) fn poll(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        cluster: &SimCluster,
        driver: &mut Driver<'_>,
        now: Duration,
    ) {
        if now < self.next {
            return;
        }
        let mut act = Act {
            sim,
            cluster,
            driver,
            now,
        };
        let wait = match self.schedule {
            Schedule::LeaderCrash => self.leader_crash(&mut act),
            Schedule::DeposedLeader => self.deposed_leader(&mut act),
            Schedule::Figure8 => self.figure_8(&mut act),
            Schedule::ElectionCrash => self.election_crash(&mut act),
            Schedule::MinorityPartition => self.minority_partition(&mut act),
            Schedule::DecideChurn => self.decide_churn(&mut act),
            Schedule::CoordinatorCrash => self.coordinator_crash(&mut act),
            Schedule::ClientClockAhead => self.client_clock_ahead(&mut act),
            Schedule::SkewAtBound => self.skew_at_bound(&mut act),
            Schedule::DiskWiped => self.disk_wiped(&mut act),
        };
        self.next = now + wait;
    }

    fn ms(&mut self, range: std::ops::RangeInclusive<u64>) -> Duration {
        Duration::from_millis(self.rng.random_range(range))
    }

    /// A round may start now: not too close to the end of the fault phase.
    fn may_start(&self, now: Duration) -> bool {
        now + MARGIN < FAULT_PHASE
    }

    /// Picks a partition and finds its leader; `None` (try again soon) while it has none.
    fn pick_leader(&mut self, act: &mut Act<'_, '_, '_>) -> Option<String> {
        let partitions = act.cluster.knobs().partitions;
        self.partition = PartitionId::new(self.rng.random_range(0..partitions));
        act.leader(self.partition)
    }

    /// The leader a round starts with; `Err(wait)` when none may start now: too close to
    /// the end of the fault phase (the round needs `extra` beyond the margin), or no
    /// leader yet.
    fn round_leader(
        &mut self,
        act: &mut Act<'_, '_, '_>,
        extra: Duration,
    ) -> Result<String, Duration> {
        if !self.may_start(act.now + extra) {
            return Err(FAULT_PHASE);
        }
        match self.pick_leader(act) {
            Some(leader) => Ok(leader),
            None => Err(self.ms(20..=50)),
        }
    }

    fn end_round(&mut self) {
        self.step = 0;
        self.first = None;
        self.second = None;
    }

    fn leader_crash(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
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

    fn deposed_leader(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
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

    fn figure_8(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
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

    fn election_crash(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
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

    fn minority_partition(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
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

    fn decide_churn(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
        if !self.may_start(act.now) {
            return FAULT_PHASE;
        }
        if let Some(leader) = self.pick_leader(act) {
            act.hand_over(&leader, self.partition);
        }
        self.ms(30..=200)
    }

    fn coordinator_crash(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
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

    fn client_clock_ahead(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
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

    fn disk_wiped(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
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

    fn skew_at_bound(&mut self, act: &mut Act<'_, '_, '_>) -> Duration {
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

/// What a schedule can do at one instant, through the fault driver.
struct Act<'s, 'd, 'a> {
    sim: &'s mut turmoil::Sim<'a>,
    cluster: &'s SimCluster,
    driver: &'s mut Driver<'d>,
    now: Duration,
}

impl Act<'_, '_, '_> {
    fn nodes(&self) -> Vec<String> {
        self.cluster
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    fn leader(&mut self, p: PartitionId) -> Option<String> {
        self.cluster.leader_of(self.sim, p).map(|(node, _)| node)
    }

    fn window_with(&mut self, kind: FaultKind, target: Target, length: Duration, amount: i64) {
        let w = Window {
            kind,
            target,
            start: self.now,
            length,
            amount,
            drift_ppm: 0,
        };
        self.driver.apply(self.sim, &w, true, self.now);
    }

    fn window(&mut self, kind: FaultKind, target: Target, length: Duration) {
        self.window_with(kind, target, length, 0);
    }

    fn end(&mut self, kind: FaultKind, target: Target) {
        let w = Window {
            kind,
            target,
            start: self.now,
            length: Duration::ZERO,
            amount: 0,
            drift_ppm: 0,
        };
        self.driver.apply(self.sim, &w, false, self.now);
    }

    /// Crashes `node` (for about `length`, as far as the trace says).
    fn crash(&mut self, node: &str, length: Duration) {
        self.window(FaultKind::Crash, Target::Host(node.to_owned()), length);
    }

    fn crash_named(&mut self, node: Option<&str>) {
        if let Some(node) = node {
            self.crash(node, Duration::ZERO);
        }
    }

    fn restart(&mut self, node: Option<&str>) {
        if let Some(node) = node.filter(|n| self.driver.is_down(n)) {
            self.end(FaultKind::Crash, Target::Host(node.to_owned()));
        }
    }

    /// Cuts `node` off from every other node (not from clients); returns the links cut.
    fn cut_from_nodes(&mut self, node: &str, length: Duration) -> Vec<(String, String)> {
        let mut cut = Vec::new();
        for other in self.nodes().into_iter().filter(|o| o != node) {
            self.window(
                FaultKind::Partition,
                Target::Link(node.to_owned(), other.clone()),
                length,
            );
            cut.push((node.to_owned(), other));
        }
        cut
    }

    fn heal(&mut self, cut: &mut Vec<(String, String)>) {
        for (a, b) in std::mem::take(cut) {
            self.end(FaultKind::Partition, Target::Link(a, b));
        }
    }

    fn isolate(&mut self, node: &str, on: bool, length: Duration) {
        let target = Target::Isolate(node.to_owned());
        match on {
            true => self.window(FaultKind::Partition, target, length),
            false => self.end(FaultKind::Partition, target),
        }
    }

    /// Asks the leader `node` of partition `p` to hand its leadership to another voter.
    fn hand_over(&mut self, node: &str, p: PartitionId) {
        if let Some(journal) = self.cluster.replica(node, p) {
            let term = journal.status().term;
            self.driver.note(
                self.now,
                format_args!("hand over {p} from {node} (term {term})"),
            );
            journal.step_down(term);
        }
    }
}
