//! Randomized fault schedules for one replicated partition on three nodes in one process,
//! in virtual time (issue 14's invariants, ahead of the gRPC wiring and the simulation):
//! clients commit through whichever node serves the partition and retry unknown outcomes
//! by transaction id; meanwhile nodes are cut off (one way or both) and lose power (their
//! disks keep only what was synced, torn by sector) and restart. After the faults heal:
//! - **progress**: every transaction gets a definite outcome;
//! - **no acknowledged commit lost**, none doubled: every commit a client heard of is in
//!   the log exactly once, at the τ it was told, and no aborted transaction is;
//! - **replicas agree**: every node reads the same committed records;
//! - **one server per term**: no two nodes ever served the partition in the same term.
//!
//! Seeds: `REPLICATED_SCHEDULE_SEEDS` (default 20); replay one with
//! `REPLICATED_SCHEDULE_SEED=<seed>`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use journaldb_adjudicator::{
    AdjudicatorConfig, CommitDecision, CommitRequest, Partition, Refusal, Verdict,
};
use journaldb_journal::Flusher;
use journaldb_journal::disk::{CrashDisk, CrashDiskConfig};
use journaldb_proto::{Clock, Lsn, ManualClock, Mutation, PartitionId, Timestamp, TxnId, pb};
use journaldb_raft::raft::prelude::ConfState;
use journaldb_raft::{
    Driver, DriverConfig, GroupId, LocalNetwork, LogId, LogOptions, NodeId, RaftLog,
};
use parking_lot::Mutex;
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Leadership, Owns, Serving, TermLog};

const PARTITION: PartitionId = PartitionId::new(0);
const GROUP: GroupId = GroupId(1);
const NODES: [NodeId; 3] = [1, 2, 3];

struct Node {
    disk: CrashDisk,
    driver: Option<Driver>,
    leadership: Option<Leadership>,
}

struct World {
    seed: u64,
    network: Arc<LocalNetwork>,
    clock: Arc<ManualClock>,
    nodes: Mutex<BTreeMap<NodeId, Node>>,
    /// Every (node, term) that served the partition.
    served: Mutex<BTreeSet<(u64, NodeId)>>,
}

fn log_options() -> LogOptions {
    LogOptions {
        segment_bytes: 32 * 1024,
        block_size: 512,
        preallocate_bytes: 4096,
        cache_bytes: 16 * 1024,
    }
}

fn log_id(node: NodeId) -> LogId {
    LogId {
        cluster: 1,
        group: GROUP.0,
        replica: node,
    }
}

impl World {
    fn new(seed: u64) -> Arc<World> {
        let world = Arc::new(World {
            seed,
            network: LocalNetwork::new(Duration::from_millis(1)),
            clock: Arc::new(ManualClock::new(Timestamp::from_nanos(1_000_000_000))),
            nodes: Mutex::default(),
            served: Mutex::default(),
        });
        for node in NODES {
            let disk = CrashDisk::new(CrashDiskConfig::default());
            let conf = ConfState::from((NODES.to_vec(), vec![]));
            RaftLog::create(
                Arc::new(disk.clone()),
                "/journal/0",
                log_id(node),
                log_options(),
                conf,
            )
            .unwrap();
            world.nodes.lock().insert(
                node,
                Node {
                    disk,
                    driver: None,
                    leadership: None,
                },
            );
            world.boot(node);
        }
        world
    }

    /// Starts `node` on what its disk holds.
    fn boot(&self, node: NodeId) {
        let mut nodes = self.nodes.lock();
        let entry = nodes.get_mut(&node).unwrap();
        let writer = RaftLog::open(
            Arc::new(entry.disk.clone()),
            "/journal/0",
            log_id(node),
            log_options(),
        )
        .unwrap_or_else(|e| panic!("seed {}: node {node} reopening: {e}", self.seed));
        let mut config = DriverConfig::new(node, self.seed);
        config.flusher = Flusher::Task;
        config.tick = Duration::from_millis(10);
        let driver = Driver::start(config, vec![writer], self.network.transport(node)).unwrap();
        self.network.attach(node, driver.inbox());
        let owns: Owns = Arc::new(|_: &[u8]| true);
        let leadership = Leadership::spawn(
            driver.journal(GROUP).unwrap().clone(),
            node,
            PARTITION,
            AdjudicatorConfig::default(),
            owns,
            self.clock.clone(),
        );
        entry.driver = Some(driver);
        entry.leadership = Some(leadership);
    }

    /// Power loss on `node`: its driver and adjudicator go, its disk keeps what was synced.
    async fn crash(&self, node: NodeId, rng: &mut ChaCha8Rng) {
        self.network.detach(node);
        let (driver, disk) = {
            let mut nodes = self.nodes.lock();
            let entry = nodes.get_mut(&node).unwrap();
            entry.leadership = None;
            (entry.driver.take(), entry.disk.clone())
        };
        let crashed = disk.crash(rng.random());
        if let Some(driver) = driver {
            driver.stop().await;
        }
        self.nodes.lock().get_mut(&node).unwrap().disk = crashed;
    }

    /// The partition, from whichever node serves it now (recording who served which term).
    fn serving(&self) -> Option<Arc<Partition<TermLog>>> {
        let nodes = self.nodes.lock();
        let mut found = None;
        for (node, entry) in nodes.iter() {
            if let Some(Serving::Leader(partition)) =
                entry.leadership.as_ref().map(Leadership::serving)
            {
                self.served
                    .lock()
                    .insert((partition.journal().term(), *node));
                found = Some(partition);
            }
        }
        found
    }

    /// Every node's committed records, read from its own replica.
    fn logs(&self) -> BTreeMap<NodeId, Vec<(Lsn, bytes::Bytes)>> {
        let nodes = self.nodes.lock();
        nodes
            .iter()
            .map(|(node, entry)| {
                let journal = entry.driver.as_ref().unwrap().journal(GROUP).unwrap();
                let mut out = Vec::new();
                let mut from = journal.first_lsn();
                loop {
                    let page = journal.read(from, 1 << 20).unwrap();
                    let Some((last, _)) = page.last() else { break };
                    from = last.next();
                    out.extend(page);
                }
                (*node, out)
            })
            .collect()
    }
}

/// What a client knows of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed(Timestamp),
    Aborted,
    Unknown,
}

/// One attempt to commit `request` wherever the partition is served.
async fn attempt(world: &World, request: &CommitRequest) -> Outcome {
    let Some(partition) = world.serving() else {
        return Outcome::Unknown;
    };
    match partition.commit(world.clock.now(), request).await {
        Ok(at) => Outcome::Committed(at),
        Err(Refusal::Decision(CommitDecision::Verdict(Verdict::Committed { commit_ts }))) => {
            Outcome::Committed(commit_ts)
        }
        Err(Refusal::Decision(CommitDecision::Verdict(_))) => Outcome::Aborted,
        // Unavailable, in flight elsewhere, stepped down: ask again later.
        Err(_) => Outcome::Unknown,
    }
}

/// A client: new transactions one after another; an unknown outcome is asked again (by
/// the same transaction id, marked as a retry) until it is definite.
async fn client(
    world: Arc<World>,
    id: u128,
    until: tokio::time::Instant,
) -> BTreeMap<u128, Outcome> {
    let mut outcomes = BTreeMap::new();
    let mut n = 0;
    while tokio::time::Instant::now() < until {
        n += 1;
        let txn = id * 1_000_000 + n;
        let mut request = CommitRequest {
            txn_id: TxnId::new(txn),
            start_ts: world.clock.now().latest,
            mutations: vec![Mutation::put(format!("key {txn}"), "value")],
            retry: false,
        };
        let mut outcome = attempt(&world, &request).await;
        while outcome == Outcome::Unknown && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            request.retry = true;
            outcome = attempt(&world, &request).await;
        }
        outcomes.insert(txn, outcome);
        if outcome == Outcome::Unknown {
            break;
        }
        // A client paces itself (nothing here pushes back on a client that does not).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    outcomes
}

fn run(seed: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let world = World::new(seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ticking = world.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticking.clock.advance(Duration::from_millis(1));
            }
        });
        let faults_end = tokio::time::Instant::now() + Duration::from_secs(4);
        let clients: Vec<_> = (1..=3u128)
            .map(|id| tokio::spawn(client(world.clone(), id, faults_end)))
            .collect();
        while tokio::time::Instant::now() < faults_end {
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
            let node = NODES[rng.random_range(0..NODES.len())];
            match rng.random_range(0..4) {
                0 => world.network.isolate(node, rng.random_bool(0.5)),
                1 => {
                    let to = NODES[rng.random_range(0..NODES.len())];
                    world.network.cut(node, to, rng.random_bool(0.5));
                }
                2 => {
                    world.crash(node, &mut rng).await;
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
                    world.boot(node);
                }
                _ => {}
            }
        }
        for node in NODES {
            world.network.isolate(node, false);
            for to in NODES {
                world.network.cut(node, to, false);
            }
        }
        let mut outcomes = BTreeMap::new();
        for client in clients {
            outcomes.extend(client.await.unwrap());
        }
        // Progress after healing: every unknown outcome becomes definite.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        for (txn, outcome) in outcomes.iter_mut() {
            let request = CommitRequest {
                txn_id: TxnId::new(*txn),
                start_ts: world.clock.now().latest,
                mutations: vec![Mutation::put(format!("key {txn}"), "value")],
                retry: true,
            };
            while *outcome == Outcome::Unknown {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "seed {seed}: txn {txn} has no outcome 20 s after the faults healed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                *outcome = attempt(&world, &request).await;
            }
        }
        // Let every replica apply what the last leader committed.
        tokio::time::sleep(Duration::from_secs(2)).await;
        check(seed, &world, &outcomes);
    });
}

fn check(seed: u64, world: &World, outcomes: &BTreeMap<u128, Outcome>) {
    let logs = world.logs();
    let first = logs.values().next().unwrap();
    for (node, log) in &logs {
        assert_eq!(log, first, "seed {seed}: node {node}'s replica differs");
    }
    let mut commits: BTreeMap<u128, Vec<Timestamp>> = BTreeMap::new();
    for (lsn, payload) in first {
        let record = pb::Record::decode(payload.clone())
            .unwrap_or_else(|e| panic!("seed {seed}: {lsn}: {e}"));
        if let Some(pb::record::Kind::Commit(commit)) = record.kind {
            let txn = TxnId::from(commit.txn_id.unwrap()).get();
            commits
                .entry(txn)
                .or_default()
                .push(Timestamp::from_nanos(commit.commit_ts));
        }
    }
    let committed = outcomes
        .values()
        .filter(|o| matches!(o, Outcome::Committed(_)))
        .count();
    assert!(committed > 0, "seed {seed}: nothing committed");
    for (txn, outcome) in outcomes {
        let in_log = commits.get(txn).cloned().unwrap_or_default();
        match outcome {
            Outcome::Committed(at) => assert_eq!(
                in_log,
                vec![*at],
                "seed {seed}: txn {txn} was acknowledged at {at:?}"
            ),
            Outcome::Aborted => assert!(in_log.is_empty(), "seed {seed}: txn {txn} aborted"),
            Outcome::Unknown => unreachable!("resolved above"),
        }
    }
    let aborted = outcomes.len() - committed;
    eprintln!(
        "seed {seed}: {committed} committed, {aborted} aborted, {} records, terms served {:?}",
        first.len(),
        world.served.lock()
    );
    let served = world.served.lock();
    let terms: BTreeSet<u64> = served.iter().map(|(term, _)| *term).collect();
    assert_eq!(
        terms.len(),
        served.len(),
        "seed {seed}: two nodes served one term: {served:?}"
    );
}

#[test]
fn replicated_partition_schedules() {
    let seeds: Vec<u64> = match std::env::var("REPLICATED_SCHEDULE_SEED") {
        Ok(seed) => vec![seed.parse().expect("REPLICATED_SCHEDULE_SEED is a u64")],
        Err(_) => {
            let n: u64 = std::env::var("REPLICATED_SCHEDULE_SEEDS")
                .map(|n| n.parse().expect("REPLICATED_SCHEDULE_SEEDS is a u64"))
                .unwrap_or(20);
            (0..n).collect()
        }
    };
    for seed in seeds {
        if let Err(panic) = std::panic::catch_unwind(|| run(seed)) {
            eprintln!(
                "seed {seed} failed; replay with\n  REPLICATED_SCHEDULE_SEED={seed} cargo \
                 nextest run -p journaldb-node replicated_partition_schedules"
            );
            std::panic::resume_unwind(panic);
        }
    }
}
