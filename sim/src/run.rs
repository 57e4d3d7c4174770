//! One seeded run: a cluster ([`SimCluster`]), client hosts running a workload, a fault
//! schedule applied between simulation steps, and the checks at the end (ARCHITECTURE §7).
//!
//! Timeline of a run: setup (one client writes the initial data), the workload under
//! faults for [`FAULT_PHASE`] of simulated time, then every fault heals (links repaired,
//! stopped nodes restarted, clocks corrected) and the workload goes on for
//! [`QUIET`](crate::recorder::QUIET) (as
//! FoundationDB's tests end with a quiet period: recovery must bring the cluster back);
//! after [`SETTLE`] more, a checker host reads the final state: the workload's own check, and the marker check — every
//! acknowledged commit's marker present, no failed one's. Every random choice comes from
//! the seed, so a run replays exactly: [`RunReport::trace`] holds every event in simulated
//! time, and two runs of a seed produce the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use journaldb::Client;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::clock::SimClock;
use crate::cluster::{Knobs, SimCluster};
use crate::driver::Driver;
use crate::faults::{self, FaultKind, FaultSet, Hosts};
use crate::recorder::{
    CLIENTS, ClientCtx, FAULT_PHASE, RUN_LENGTH, SETTLE, Shared, scan_prefix, sim_now,
};
use crate::schedules::{Scenario, Schedule};
use crate::workload::{Verdict, Workload, WorkloadKind, bank, list_append, register};
use journaldb_proto::{PlantedBug, Timestamp};

/// Simulated time after which a run is declared stuck.
const LIMIT: Duration = Duration::from_secs(120);
/// The liveness check's bound beyond the vote timeout: every key the workload used must
/// accept a write within `vote_timeout + LIVENESS_SLACK` once the checker starts (the
/// faults healed several seconds before), or the run fails.
const LIVENESS_SLACK: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The seed: knobs, schedule, clients' choices and turmoil's network all derive from it.
    pub seed: u64,
    /// The workload.
    pub workload: WorkloadKind,
    /// The fault kinds enabled.
    pub faults: FaultSet,
    /// A bug to plant.
    pub planted: Option<PlantedBug>,
    /// Replicas of each partition's journal: 1 (single-replica journals), or every node
    /// (a Raft group per partition on all of them).
    pub replicas: usize,
    /// A named schedule played against the replicated journals' leaders, on top of the
    /// fault windows of `faults` ([`crate::schedules`]).
    pub schedule: Option<Schedule>,
}

impl RunOptions {
    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run -p journaldb-sim -- replay --seed {} --workload {} --faults {}",
            self.seed, self.workload, self.faults
        );
        if let Some(bug) = self.planted {
            let _ = write!(cmd, " --plant {bug}");
        }
        if self.replicas != 1 {
            let _ = write!(cmd, " --replicas {}", self.replicas);
        }
        if let Some(schedule) = self.schedule {
            let _ = write!(cmd, " --schedule {schedule}");
        }
        cmd.push_str(" --trace");
        cmd
    }
}

/// What a run did and found.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The knobs drawn.
    pub knobs: Knobs,
    /// Committed writing transactions (acknowledged).
    pub commits: u64,
    /// Committed read-only transactions.
    pub reads: u64,
    /// Transactions that did not commit, by error kind (`CommitUnknown` ones are `info`).
    pub aborts: BTreeMap<String, u64>,
    /// Fault windows started, by kind.
    pub fired: BTreeMap<FaultKind, u64>,
    /// Guarantee violations (the seed fails if any).
    pub failures: Vec<String>,
    /// Violations the faults were allowed to cause.
    pub expected: Vec<String>,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Every event, in simulated time.
    pub trace: Vec<String>,
    /// The Elle history (list-append only).
    pub history: Option<String>,
}

impl RunReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs one seed.
pub fn run(options: &RunOptions) -> RunReport {
    match options.workload {
        WorkloadKind::Bank => run_with(options, bank::Bank::default()),
        WorkloadKind::ListAppend => run_with(options, list_append::ListAppend::default()),
        WorkloadKind::Register => run_with(options, register::Register::default()),
    }
}

fn run_with<W: Workload>(options: &RunOptions, workload: W) -> RunReport {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut knobs = Knobs::draw(&mut rng, options.replicas);
    if options.schedule.is_some_and(Schedule::needs_partitions) {
        knobs.partitions = knobs.partitions.max(2);
    }
    // A schedule aims at the replicas; a node that holds none would dilute it.
    if options.schedule.is_some() && knobs.storage_only {
        knobs.storage_only = false;
        knobs.nodes -= 1;
    }
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(options.seed)
        // A fixed epoch (2026-01-01): timestamps do not depend on when the run happens.
        .epoch(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        .simulation_duration(LIMIT)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(knobs.min_latency)
        .max_message_latency(knobs.max_latency);
    if options.faults.has(FaultKind::Torn) {
        builder.fs().block_size(512);
    }
    let mut sim = builder.build();
    let cluster = SimCluster::add_to(&mut sim, knobs.clone(), options.planted);
    let shared = Arc::new(Shared {
        running: Mutex::new(CLIENTS),
        ..Shared::default()
    });
    let workload = Arc::new(workload);
    shared.event(
        Duration::ZERO,
        "sim",
        format_args!(
            "seed {} workload {} faults {} schedule {:?} planted {:?} knobs {:?}",
            options.seed,
            options.workload,
            options.faults,
            options.schedule,
            options.planted,
            knobs
        ),
    );

    let clients: Vec<String> = (1..=CLIENTS).map(|i| format!("c{i}")).collect();
    let mut client_clocks = Vec::new();
    let reuse_ids = options.planted == Some(PlantedBug::ReuseTxnIds);
    for (i, host) in clients.iter().enumerate() {
        let clock = Arc::new(SimClock::new(knobs.clock_bound));
        client_clocks.push((host.clone(), clock.clone()));
        let ctx = ClientCtx::new(host, i as u64, CLIENTS as u64, rng.random(), shared.clone());
        let id_seed: u64 = rng.random();
        let start = ClientStart {
            clock,
            id_seed,
            does_setup: i == 0,
            reuse_ids,
        };
        // What outlives a process of this host: its context (history, process numbers,
        // random choices), put back by a process that dies.
        let slot = Arc::new(Mutex::new(Some(ctx)));
        let (cluster, workload, shared) = (cluster.clone(), workload.clone(), shared.clone());
        sim.host(host.as_str(), move || {
            let (cluster, workload, shared) = (cluster.clone(), workload.clone(), shared.clone());
            let (start, slot) = (start.clone(), slot.clone());
            async move {
                let ctx = slot
                    .lock()
                    .take()
                    .expect("a client process starts with its context");
                client_main(cluster, workload, ctx, start, shared.clone(), slot).await;
                // A process that finished (a killed one never returns here).
                *shared.running.lock() -= 1;
                Ok(())
            }
        });
    }
    {
        let clock = Arc::new(SimClock::new(knobs.clock_bound));
        let ctx = ClientCtx::new("check", 1 << 40, 1, rng.random(), shared.clone());
        let id_seed: u64 = rng.random();
        let realtime_may_break = options.faults.has(FaultKind::ClockBoundViolation);
        let liveness = knobs.vote_timeout + LIVENESS_SLACK;
        let (cluster, workload) = (cluster.clone(), workload.clone());
        sim.client("check", async move {
            check_main(
                cluster,
                workload,
                ctx,
                clock,
                id_seed,
                realtime_may_break,
                liveness,
            )
            .await;
            Ok(())
        });
    }
    if options.faults.has(FaultKind::Hostile) {
        let rogue_rng = ChaCha8Rng::seed_from_u64(rng.random());
        let clock = Arc::new(SimClock::new(knobs.clock_bound));
        let (urls, shared) = (cluster.urls(), shared.clone());
        sim.client("rogue", async move {
            crate::hostile::rogue_main(urls, rogue_rng, clock, shared).await;
            Ok(())
        });
    }

    if options.schedule == Some(Schedule::DiskWiped) {
        let (urls, shared) = (cluster.urls(), shared.clone());
        sim.client("operator", async move {
            crate::operator::operator_main(urls, shared).await;
            Ok(())
        });
    }

    let hosts = Hosts {
        nodes: cluster.nodes().iter().map(|n| n.name.clone()).collect(),
        clients: clients.clone(),
        // Partition p lives on node p mod nodes (SimCluster::add_to).
        adjudicators: cluster
            .nodes()
            .iter()
            .take(knobs.partitions as usize)
            .map(|n| n.name.clone())
            .collect(),
    };
    let windows = faults::schedule(
        &mut rng,
        &options.faults,
        &hosts,
        FAULT_PHASE,
        knobs.clock_bound,
    );
    // Drawn last, so a run without a schedule draws what it drew before schedules.
    let mut scenario = options
        .schedule
        .map(|s| Scenario::new(s, ChaCha8Rng::seed_from_u64(rng.random())));
    let mut driver = Driver::new(&cluster, client_clocks, &knobs, &shared);
    // Start and end events, in time order (ends before starts at the same instant).
    let mut events: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        events.push((w.start, true, i));
        events.push((w.start + w.length, false, i));
    }
    events.sort();
    let mut next = 0;
    let mut healed = false;
    loop {
        let now = sim.elapsed();
        while next < events.len() && events[next].0 <= now {
            let (_, start, i) = events[next];
            driver.apply(&mut sim, &windows[i], start, now);
            next += 1;
        }
        if !healed && now >= FAULT_PHASE {
            healed = true;
            scenario = None;
            driver.heal(&mut sim, now);
        }
        if let Some(scenario) = &mut scenario {
            scenario.poll(&mut sim, &cluster, &mut driver, now);
        }
        driver.supervise(&mut sim, now);
        for host in std::mem::take(&mut *shared.killed.lock()) {
            sim.bounce(host.as_str());
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                shared.fail(format!("the simulation stopped: {e}"));
                break;
            }
        }
    }
    let simulated = sim.elapsed();
    let fired = driver.into_fired();
    drop(sim);

    let counts = std::mem::take(&mut *shared.counts.lock());
    RunReport {
        seed: options.seed,
        knobs,
        commits: counts.commits,
        reads: counts.reads,
        aborts: counts.aborts,
        fired,
        failures: shared.failures.lock().clone(),
        expected: shared.expected.lock().clone(),
        simulated,
        trace: shared.trace.lock().clone(),
        history: workload.elle_history(),
    }
}

/// How a workload client starts.
#[derive(Clone)]
struct ClientStart {
    clock: Arc<SimClock>,
    /// Seed of its transaction ids (and retry jitter).
    id_seed: u64,
    /// It runs the workload's setup.
    does_setup: bool,
    /// The planted bug `reuse-txn-ids`: a restarted process draws its ids from the same
    /// seed as the one that died.
    reuse_ids: bool,
}

/// One process of a workload client host: connects (with the ids of its generation),
/// runs the setup if it is the first process of the host that does it, then steps the
/// workload until the run ends — or until it dies mid-commit, when it hands its context
/// back to `slot`, asks to be killed and waits for the end.
async fn client_main<W: Workload>(
    cluster: SimCluster,
    workload: Arc<W>,
    mut ctx: ClientCtx,
    start: ClientStart,
    shared: Arc<Shared>,
    slot: Arc<Mutex<Option<ClientCtx>>>,
) {
    let ClientStart {
        clock,
        id_seed,
        does_setup,
        reuse_ids,
    } = start;
    // A new process, like any, draws its own transaction ids (planted bug: the dead one's).
    let seed = if reuse_ids {
        id_seed
    } else {
        id_seed ^ ctx.generation.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    };
    let client = match cluster.connect(clock.clone(), seed, RUN_LENGTH).await {
        Ok(c) => c,
        Err(e) => {
            ctx.event(format_args!("could not connect: {e}"));
            return;
        }
    };
    if does_setup && ctx.generation == 0 {
        loop {
            match workload.setup(&client).await {
                Ok(()) => break,
                Err(e) => {
                    ctx.event(format_args!("setup: {e}"));
                    if sim_now() > RUN_LENGTH {
                        shared.fail(format!("setup never succeeded: {e}"));
                        *shared.setup_done.lock() = true;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        ctx.event("setup done");
        *shared.setup_done.lock() = true;
    }
    while !*shared.setup_done.lock() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while sim_now() < RUN_LENGTH {
        workload.step(&client, &mut ctx).await;
        if std::mem::take(&mut ctx.crashed) {
            // The process dies: it abandoned the commit (its streams are reset as the
            // future drops), lingers for up to 2 ms — a process on its way out — and the
            // run loop kills every task it has left before the next step; a new process
            // takes its place.
            let linger = Duration::from_micros(ctx.rng.random_range(0..=2_000));
            tokio::time::sleep(linger).await;
            ctx.generation += 1;
            shared.killed.lock().push(ctx.host.clone());
            slot.lock().replace(ctx);
            let dead: std::convert::Infallible = std::future::pending().await;
            match dead {}
        }
    }
}

/// The liveness check: every key the workload used accepts a write (of its own value
/// back: nothing the other checks see changes) within `bound`. A vote left pending for
/// good, a stalled partition or a wedged storage feed fails it.
async fn liveness(client: &Client, keys: Vec<Bytes>, bound: Duration) -> Vec<String> {
    let deadline = sim_now() + bound;
    let mut failures = Vec::new();
    for key in keys {
        loop {
            let attempt = async {
                let mut tx = client.begin();
                match tx.get(key.clone()).await? {
                    Some(value) => tx.put(key.clone(), value)?,
                    None => tx.delete(key.clone())?,
                }
                tx.commit().await
            };
            match attempt.await {
                Ok(_) => break,
                Err(e) if sim_now() > deadline => {
                    failures.push(format!(
                        "liveness: key {key:?} accepted no write within {bound:?} of the \
                         check: {e}"
                    ));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    failures
}

/// How long after the liveness check the storage-only node may take to serve a read at a
/// snapshot taken then.
const STORAGE_ONLY_BOUND: Duration = Duration::from_secs(20);

/// The storage-only node (`n1`, [`Knobs::storage_only`]) at `url` serves a read at `at`
/// (a snapshot taken after the liveness check's commits) within `bound`: its feeds, which
/// tail the voters' replicas, are not stuck on a voter that stopped or a stream that went
/// silent (ARCHITECTURE §5 rule 7). Clients fall back to other storage replicas, so a
/// wedged feed there would otherwise go unseen.
async fn storage_only_catches_up(url: &str, at: Timestamp, bound: Duration) -> Option<String> {
    use journaldb_proto::pb::{self, storage_service_client::StorageServiceClient};
    let storage = StorageServiceClient::new(crate::hostile::channel(url, &crate::net::connector()));
    let deadline = sim_now() + bound;
    loop {
        let request = pb::GetRequest {
            key: Bytes::from_static(b"storage-only check"),
            at: at.as_nanos(),
        };
        match storage.clone().get(request).await {
            Ok(_) => return None,
            Err(e) if sim_now() > deadline => {
                return Some(format!(
                    "storage: the storage-only node {url} served no read at {at:?} within \
                     {bound:?} of the liveness check (its feeds are stuck): {e}"
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn check_main<W: Workload>(
    cluster: SimCluster,
    workload: Arc<W>,
    mut ctx: ClientCtx,
    clock: Arc<SimClock>,
    id_seed: u64,
    realtime_may_break: bool,
    liveness_bound: Duration,
) {
    tokio::time::sleep(RUN_LENGTH + SETTLE).await;
    let shared = ctx.shared.clone();
    // A transaction begun before the end may still be finishing: its outcome must be
    // known before the final state is judged.
    while *shared.running.lock() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = match cluster
        .connect(clock.clone(), id_seed, Duration::from_secs(30))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!(
                "the checker could not connect after the faults healed: {e}"
            ));
            return;
        }
    };
    let stuck = liveness(&client, workload.keys(), liveness_bound).await;
    ctx.event(format_args!("liveness check: {} keys stuck", stuck.len()));
    shared.failures.lock().extend(stuck);
    if cluster.knobs().storage_only {
        use journaldb_proto::Clock as _;
        let (url, at) = (&cluster.urls()[0], clock.now().earliest);
        let stale = storage_only_catches_up(url, at, STORAGE_ONLY_BOUND).await;
        ctx.event(format_args!(
            "storage-only check: {}",
            stale.as_deref().unwrap_or("caught up")
        ));
        shared.failures.lock().extend(stale);
    }
    // Faults have healed: the final reads must succeed within a generous deadline.
    let deadline = sim_now() + Duration::from_secs(60);
    let verdict = loop {
        let attempt = async {
            let verdict = workload
                .check(&client, &mut ctx, realtime_may_break)
                .await?;
            let markers = scan_prefix(&client, b"m/").await?;
            Ok::<_, journaldb::Error>((verdict, markers))
        };
        match attempt.await {
            Ok((mut verdict, present)) => {
                let present: std::collections::BTreeSet<Bytes> =
                    present.into_iter().map(|(k, _)| k).collect();
                let (acked, failed) = shared.markers.lock().clone();
                let lost: Vec<&Bytes> = acked.iter().filter(|m| !present.contains(*m)).collect();
                let ghosts: Vec<&Bytes> = failed.iter().filter(|m| present.contains(*m)).collect();
                if !lost.is_empty() {
                    verdict.failures.push(format!(
                        "durability: {} acknowledged commits are missing, e.g. marker {:?}",
                        lost.len(),
                        lost[0]
                    ));
                }
                if !ghosts.is_empty() {
                    verdict.failures.push(format!(
                        "G1a: {} transactions that failed are visible, e.g. marker {:?}",
                        ghosts.len(),
                        ghosts[0]
                    ));
                }
                ctx.event(format_args!(
                    "final check: {} acknowledged markers present, {} failures",
                    acked.len() - lost.len(),
                    verdict.failures.len()
                ));
                break verdict;
            }
            Err(e) => {
                ctx.event(format_args!("final read: {e}"));
                if sim_now() > deadline {
                    break Verdict::failing(vec![format!(
                        "availability: the final state could not be read 60 s after the \
                         faults healed: {e}"
                    )]);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    shared.failures.lock().extend(verdict.failures);
    shared.expected.lock().extend(verdict.expected);
    if cluster.knobs().replicas > 1 {
        // Every replica of a partition holds the same committed records: each node hashes
        // its own (in its host), and they are compared Lsn by Lsn.
        // A node still restarting reports once it runs; one that never does fails the
        // audit rather than shrinking it.
        cluster.request_replica_audit();
        let deadline = sim_now() + Duration::from_secs(10);
        while !cluster.replica_audit_missing().is_empty() && sim_now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut disagreements = cluster.replica_disagreements();
        disagreements.extend(
            cluster
                .replica_audit_missing()
                .into_iter()
                .map(|n| format!("replicas: {n} never reported its replicas for the audit")),
        );

        ctx.event(format_args!(
            "replica audit: {} disagreements",
            disagreements.len()
        ));
        shared.failures.lock().extend(disagreements);
    }
}
