//! Fault kinds and their schedules (ARCHITECTURE §7). A run's schedule is drawn from its
//! seed: for every enabled kind, a few windows at random times, each with a random target
//! and length. The driver applies a window's start and end between simulation steps.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A kind of fault, named by the token the CLI takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The network between two hosts (or one host and all others) drops everything.
    Partition,
    /// Messages between two hosts are held, then delivered all at once.
    Hold,
    /// Every message takes longer (up to tens of milliseconds).
    Latency,
    /// A node crashes (unsynced writes are lost) and restarts later.
    Crash,
    /// A crash that tears unsynced writes: a random subset of their blocks survives.
    Torn,
    /// A node's disk fails every write and sync; its journal is poisoned, the node stops
    /// (fail-stop) and is restarted once the disk works again.
    DiskError,
    /// A host's clock is offset and drifts, within its error bound.
    Clock,
    /// One node's links become slow.
    Slow,
    /// A host's clock leaves its error bound while still claiming it: real-time order may
    /// break (reported, not a failure); snapshot isolation must hold.
    ClockBoundViolation,
    /// A client dies mid-protocol: half its commits are abandoned at a random moment
    /// (between prepares, between `CommitPrepared` and `Decide`, with a request in
    /// flight), and it goes on as a new process.
    ClientCrash,
    /// A node's storage engine fails every write (the feed retries; the watermark waits).
    StorageError,
    /// A rogue client host sends absurd and random protocol messages to every service.
    Hostile,
    /// Every clock at an extreme of its bound at once: nodes and half the clients ahead by
    /// the full bound, the other clients behind by it — the largest skew the bound allows,
    /// where real-time order is most fragile (it must hold).
    Skew,
    /// A node's server holds half the adjudicator requests it receives and serves them
    /// only 0.05–3 s after the clients' request deadline — past the client's deadline, and
    /// often past its retries and `Status` questions: a request delayed in the network past
    /// every timeout. (A node's own `Status` question to another node has a 2 s deadline,
    /// which a held request with a short client deadline may still meet.)
    Late,
}

impl FaultKind {
    /// Every kind, in display order.
    pub const ALL: [FaultKind; 14] = [
        FaultKind::Partition,
        FaultKind::Hold,
        FaultKind::Latency,
        FaultKind::Crash,
        FaultKind::Torn,
        FaultKind::DiskError,
        FaultKind::Clock,
        FaultKind::Slow,
        FaultKind::ClockBoundViolation,
        FaultKind::ClientCrash,
        FaultKind::StorageError,
        FaultKind::Hostile,
        FaultKind::Skew,
        FaultKind::Late,
    ];

    /// The CLI token.
    pub fn token(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Hold => "hold",
            FaultKind::Latency => "latency",
            FaultKind::Crash => "crash",
            FaultKind::Torn => "torn",
            FaultKind::DiskError => "disk-error",
            FaultKind::Clock => "clock",
            FaultKind::Slow => "slow",
            FaultKind::ClockBoundViolation => "clock-bound-violation",
            FaultKind::ClientCrash => "client-crash",
            FaultKind::StorageError => "storage-error",
            FaultKind::Hostile => "hostile",
            FaultKind::Skew => "skew",
            FaultKind::Late => "late",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// The enabled fault kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultSet(pub BTreeSet<FaultKind>);

impl FaultSet {
    /// Whether `kind` is enabled.
    pub fn has(&self, kind: FaultKind) -> bool {
        self.0.contains(&kind)
    }
}

impl fmt::Display for FaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        if self.0.len() == FaultKind::ALL.len() {
            return f.write_str("all");
        }
        let tokens: Vec<&str> = self.0.iter().map(|k| k.token()).collect();
        f.write_str(&tokens.join(","))
    }
}

impl FromStr for FaultSet {
    type Err = String;

    /// A comma-separated list of tokens, `all`, or `none`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match token {
                "all" => set.extend(FaultKind::ALL),
                "none" => {}
                _ => {
                    let kind = FaultKind::ALL
                        .into_iter()
                        .find(|k| k.token() == token)
                        .ok_or_else(|| {
                            let known: Vec<&str> =
                                FaultKind::ALL.iter().map(|k| k.token()).collect();
                            format!(
                                "unknown fault {token:?}; known: {}, all, none",
                                known.join(", ")
                            )
                        })?;
                    set.insert(kind);
                }
            }
        }
        Ok(FaultSet(set))
    }
}

/// Who a fault window hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One host.
    Host(String),
    /// The link between two hosts.
    Link(String, String),
    /// One host cut off from every other.
    Isolate(String),
    /// The whole network.
    Network,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Host(h) => f.write_str(h),
            Target::Link(a, b) => write!(f, "{a}<->{b}"),
            Target::Isolate(h) => write!(f, "{h}<->*"),
            Target::Network => f.write_str("network"),
        }
    }
}

/// One fault window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Which kind.
    pub kind: FaultKind,
    /// Who it hits.
    pub target: Target,
    /// When it starts, from the start of the workload.
    pub start: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// A parameter drawn with it: the latency (`latency`, `slow`) or the clock offset
    /// (`clock`, `clock-bound-violation`, signed), in nanoseconds; the seed of the
    /// window's choices (`late`).
    pub amount: i64,
    /// A second parameter: clock drift in ppm.
    pub drift_ppm: i64,
}

/// The hosts a schedule may target.
#[derive(Debug, Clone)]
pub struct Hosts {
    /// Node hosts (crash, disk and slowness hit only these).
    pub nodes: Vec<String>,
    /// Client hosts.
    pub clients: Vec<String>,
    /// Node hosts that run at least one adjudicator (`late` holds their requests).
    pub adjudicators: Vec<String>,
}

/// Draws the schedule of `faults` for a workload of length `run`, with clock error bound
/// `bound`. Windows end before `run` does.
pub fn schedule(
    rng: &mut ChaCha8Rng,
    faults: &FaultSet,
    hosts: &Hosts,
    run: Duration,
    bound: Duration,
) -> Vec<Window> {
    let mut windows = Vec::new();
    let run_ms = run.as_millis() as u64;
    let all_hosts: Vec<&String> = hosts.nodes.iter().chain(&hosts.clients).collect();
    for &kind in &faults.0 {
        let count = rng.random_range(1..=2);
        for _ in 0..count {
            let length_ms = match kind {
                FaultKind::Crash | FaultKind::Torn | FaultKind::DiskError => {
                    rng.random_range(100..=1_000)
                }
                _ => rng.random_range(100..=1_500),
            };
            let latest = run_ms.saturating_sub(length_ms + 200).max(300);
            let start_ms = rng.random_range(200..=latest);
            let node_index = rng.random_range(0..hosts.nodes.len());
            let node = hosts.nodes[node_index].clone();
            let adjudicator = hosts.adjudicators[node_index % hosts.adjudicators.len()].clone();
            let any = all_hosts[rng.random_range(0..all_hosts.len())].clone();
            let client = hosts.clients[rng.random_range(0..hosts.clients.len())].clone();
            let target = match kind {
                FaultKind::Partition | FaultKind::Hold => {
                    if rng.random_bool(0.3) {
                        Target::Isolate(node)
                    } else {
                        let other = loop {
                            let h = all_hosts[rng.random_range(0..all_hosts.len())];
                            if *h != any {
                                break h.clone();
                            }
                        };
                        Target::Link(any, other)
                    }
                }
                FaultKind::Latency => Target::Network,
                FaultKind::Clock | FaultKind::ClockBoundViolation => Target::Host(any),
                FaultKind::Crash
                | FaultKind::Torn
                | FaultKind::DiskError
                | FaultKind::Slow
                | FaultKind::StorageError => Target::Host(node),
                FaultKind::Late => Target::Host(adjudicator),
                FaultKind::ClientCrash => Target::Host(client),
                FaultKind::Hostile | FaultKind::Skew => Target::Network,
            };
            let bound_ns = bound.as_nanos() as i64;
            let (amount, drift_ppm) = match kind {
                FaultKind::Latency => (rng.random_range(5_000_000..=40_000_000), 0),
                FaultKind::Slow => (rng.random_range(20_000_000..=100_000_000), 0),
                FaultKind::Clock => (
                    rng.random_range(-bound_ns..=bound_ns),
                    rng.random_range(-200..=200),
                ),
                FaultKind::ClockBoundViolation => {
                    let off = rng.random_range(3 * bound_ns..=20 * bound_ns);
                    (if rng.random_bool(0.5) { off } else { -off }, 0)
                }
                // The seed of the window's choices.
                FaultKind::Late => (rng.random_range(0..i64::MAX), 0),
                _ => (0, 0),
            };
            windows.push(Window {
                kind,
                target,
                start: Duration::from_millis(start_ms),
                length: Duration::from_millis(length_ms),
                amount,
                drift_ppm,
            });
        }
    }
    windows.sort_by_key(|w| (w.start, w.kind));
    windows
}
