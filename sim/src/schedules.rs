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

mod rounds;

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
