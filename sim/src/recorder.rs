//! The recording API between the runner and the workloads: a run's timeline, the state
//! every simulated host shares with the driver ([`Shared`]: trace, counts, failures,
//! markers, fault switches) and a client process's context ([`ClientCtx`]: its Elle
//! process number, its random choices, how it records and — inside a `client-crash`
//! window — abandons a commit). Workloads record through this; they do not know the
//! runner (`run.rs`), which builds the cluster, the hosts and the schedule around them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use journaldb::{Client, CommitInfo, ScanRange, Transaction};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How long faults are injected, in simulated time.
pub const FAULT_PHASE: Duration = Duration::from_secs(6);
/// How long the workload goes on after every fault healed.
pub const QUIET: Duration = Duration::from_secs(3);
/// When clients stop starting transactions.
pub const RUN_LENGTH: Duration = FAULT_PHASE.saturating_add(QUIET);
/// How long after the workload the checker waits before reading (faults have healed).
pub const SETTLE: Duration = Duration::from_secs(1);
/// Client processes (hosts `c1`, `c2`, …).
pub const CLIENTS: usize = 8;
/// State shared by the driver and every simulated host of a run.
#[derive(Debug, Default)]
pub struct Shared {
    pub(crate) trace: Mutex<Vec<String>>,
    pub(crate) counts: Mutex<Counts>,
    pub(crate) failures: Mutex<Vec<String>>,
    pub(crate) expected: Mutex<Vec<String>>,
    /// Marker keys of acknowledged and of failed transactions.
    pub(crate) markers: Mutex<(Vec<Bytes>, Vec<Bytes>)>,
    pub(crate) setup_done: Mutex<bool>,
    /// Workload clients that have not finished.
    pub(crate) running: Mutex<usize>,
    /// Client hosts inside a `client-crash` window (by windows open): their commits may
    /// be abandoned mid-protocol, as by a client process that dies.
    pub(crate) crashing: Mutex<BTreeMap<String, u32>>,
    /// `hostile` windows open: the rogue host sends absurd and random requests meanwhile.
    pub(crate) hostile: Mutex<u32>,
    /// Client hosts whose process died mid-commit: the run loop restarts each (turmoil's
    /// bounce), which ends every task of the dead process — its requests in flight and its
    /// background `Decide` retries — as a process's death does.
    pub(crate) killed: Mutex<Vec<String>>,
    /// Nodes the `disk-wiped` schedule asks the operator host to replace.
    pub(crate) replacements: Mutex<std::collections::VecDeque<Replacement>>,
}

/// A node the `disk-wiped` schedule asks the operator host to replace: `old` by `new`,
/// which serves at `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replacement {
    pub(crate) old: String,
    pub(crate) new: String,
    pub(crate) address: String,
}

#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) commits: u64,
    pub(crate) reads: u64,
    pub(crate) aborts: BTreeMap<String, u64>,
}

fn stamp(t: Duration) -> String {
    format!("{:>4}.{:06}", t.as_secs(), t.subsec_micros())
}

/// Simulated time since the run started, inside a host.
pub fn sim_now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

impl Shared {
    /// Adds an event to the trace.
    pub fn event(&self, at: Duration, who: &str, what: impl std::fmt::Display) {
        self.trace
            .lock()
            .push(format!("{} {who:<5} {what}", stamp(at)));
    }

    /// Records a guarantee violation.
    pub fn fail(&self, what: String) {
        self.failures.lock().push(what);
    }
}

/// How a transaction ended, from its client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed (at this timestamp, when the client learns it: `transact` does not say).
    Ok(Option<journaldb_proto::Timestamp>),
    /// Certainly not committed (the error kind).
    Fail(&'static str),
    /// Maybe committed.
    Info(&'static str),
}

/// One client process's context: who it is, its random choices, the run's shared state.
#[derive(Debug)]
pub struct ClientCtx {
    /// Its host.
    pub host: String,
    /// Its current process number (Elle's: a new one after every `info`).
    pub process: u64,
    /// Processes per generation (the client count).
    pub stride: u64,
    /// Its random choices.
    pub rng: ChaCha8Rng,
    /// The run's shared state.
    pub shared: Arc<Shared>,
    /// Its counter of marker keys.
    pub(crate) seq: u64,
    /// It abandoned a commit as a dying process would: the next step runs in a new
    /// process, with a new connection.
    pub(crate) crashed: bool,
    /// Processes of this client host that died so far: the one running is the next.
    pub(crate) generation: u64,
}

impl ClientCtx {
    /// A context for `host`, process `process` of `stride`.
    pub fn new(host: &str, process: u64, stride: u64, seed: u64, shared: Arc<Shared>) -> Self {
        ClientCtx {
            host: host.to_owned(),
            process,
            stride,
            rng: ChaCha8Rng::seed_from_u64(seed),
            shared,
            seq: 0,
            crashed: false,
            generation: 0,
        }
    }

    /// Adds an event to the trace, at the current simulated time.
    pub fn event(&self, what: impl std::fmt::Display) {
        self.shared.event(
            sim_now(),
            &self.host,
            format_args!("p{} {what}", self.process),
        );
    }

    /// Writes this transaction's unique marker key into `tx`.
    pub fn mark(&mut self, tx: &mut Transaction) -> journaldb::Result<Bytes> {
        let key = self.next_marker();
        tx.put(key.clone(), Bytes::from_static(b"1"))?;
        Ok(key)
    }

    /// Inside a `client-crash` window, half the commits are abandoned after a random
    /// moment (up to 5 ms): the future is dropped wherever it is — between prepares,
    /// between `CommitPrepared` and `Decide`, with a request in flight.
    fn crash_after(&mut self) -> Option<Duration> {
        let crashing = self.shared.crashing.lock().contains_key(&self.host);
        (crashing && self.rng.random_bool(0.5))
            .then(|| Duration::from_micros(self.rng.random_range(0..5_000)))
    }

    /// Runs `commit` (a commit, or a whole `transact`), abandoning it as a crashing client
    /// would inside a `client-crash` window: then the outcome is unknown (`info`).
    async fn maybe_crash<T>(
        &mut self,
        commit: impl Future<Output = journaldb::Result<T>>,
    ) -> Option<journaldb::Result<T>> {
        match self.crash_after() {
            None => Some(commit.await),
            Some(after) => match tokio::time::timeout(after, commit).await {
                Ok(result) => Some(result),
                Err(_) => {
                    self.event("client crashed mid-commit");
                    self.crashed = true;
                    None
                }
            },
        }
    }

    /// Commits `tx`, records the outcome (counts, markers, trace) and moves to a new
    /// process after an `info`.
    pub async fn commit(&mut self, tx: Transaction, marker: Option<Bytes>) -> Outcome {
        let outcome = match self.maybe_crash(tx.commit()).await {
            Some(result) => classify(result),
            None => Outcome::Info("ClientCrash"),
        };
        self.finish(outcome, marker)
    }

    /// Runs `f` through `client.transact` (its retries, and the outcome questions after
    /// `CommitUnknown`), then records the outcome like [`ClientCtx::commit`]. `f` writes
    /// `marker` itself, in every attempt.
    pub async fn transact<T>(
        &mut self,
        client: &Client,
        marker: Option<Bytes>,
        f: impl AsyncFnMut(&mut Transaction) -> journaldb::Result<T>,
    ) -> (Outcome, Option<T>) {
        let (outcome, value) = match self.maybe_crash(client.transact(f)).await {
            Some(Ok(value)) => (Outcome::Ok(None), Some(value)),
            Some(Err(e)) => (classify(Err(e)), None),
            None => (Outcome::Info("ClientCrash"), None),
        };
        (self.finish(outcome, marker), value)
    }

    /// A marker key for a `transact` whose closure writes it (see [`ClientCtx::mark`]).
    pub fn next_marker(&mut self) -> Bytes {
        self.seq += 1;
        Bytes::from(format!("m/{:06}/{:08}", self.process, self.seq))
    }

    fn finish(&mut self, outcome: Outcome, marker: Option<Bytes>) -> Outcome {
        let writes = marker.is_some();
        self.record(outcome, writes);
        if let Some(marker) = marker {
            let mut markers = self.shared.markers.lock();
            match outcome {
                Outcome::Ok(_) => markers.0.push(marker),
                Outcome::Fail(_) => markers.1.push(marker),
                Outcome::Info(_) => {}
            }
        }
        outcome
    }

    /// Records an outcome reached before commit (a read failed).
    pub fn record(&mut self, outcome: Outcome, writes: bool) {
        let mut counts = self.shared.counts.lock();
        match outcome {
            Outcome::Ok(_) if writes => counts.commits += 1,
            Outcome::Ok(_) => counts.reads += 1,
            Outcome::Fail(kind) | Outcome::Info(kind) => {
                *counts.aborts.entry(kind.to_owned()).or_default() += 1
            }
        }
        drop(counts);
        if let Outcome::Info(_) = outcome {
            self.process += self.stride;
        }
    }
}

/// The outcome of a commit.
pub fn classify(result: journaldb::Result<CommitInfo>) -> Outcome {
    match result {
        Ok(info) => Outcome::Ok(Some(info.commit_ts)),
        Err(e) if e.maybe_committed() => Outcome::Info(e.kind_name()),
        Err(e) => Outcome::Fail(e.kind_name()),
    }
}

/// Every row under `prefix` at one snapshot.
pub async fn scan_prefix(client: &Client, prefix: &[u8]) -> journaldb::Result<Vec<(Bytes, Bytes)>> {
    let tx = client.begin();
    let mut range = ScanRange::prefix(prefix);
    let mut rows = Vec::new();
    loop {
        let page = tx.scan(&range, 1000, false).await?;
        rows.extend(page.rows);
        match page.resume {
            Some(next) => range = next,
            None => return Ok(rows),
        }
    }
}
