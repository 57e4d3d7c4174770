//! [`SimCluster`]: a journaldb cluster of simulated hosts — the real `ClusterNode` (journals,
//! adjudicators, storage replica, every gRPC service) on each, over turmoil's network, with
//! journals on turmoil's file system, storage in memory (rebuilt from the journals after a
//! restart), a [`SimClock`] per host, and knobs drawn from the run's seed.
//!
//! This is the library API for testing your own service against journaldb under faults:
//! build a `turmoil::Sim`, add a cluster with [`SimCluster::add_to`], add your own hosts
//! with `sim.host`/`sim.client`, and inside them connect with [`SimCluster::connect`]
//! (see `sim/examples/`). The fault driver of [`crate::run`] is one user of it.

use std::sync::Arc;
use std::time::Duration;

use journaldb::{Client, ClientOptions, StorageEngine};
use journaldb_adjudicator::AdjudicatorConfig;
use journaldb_journal::{Flusher, JournalOptions};
use journaldb_node::{ClusterNode, LateRequests, NodeConfig, NodeEntry, NodeEnv};
use journaldb_proto::{PartitionId, PlantedBug};
use journaldb_raft::ReplicatedJournal;
use journaldb_raft::raft::StateRole;

use crate::replicas::Registry;
use journaldb_storage::WriteFaults;
use journaldb_storage::service::StorageServerConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::clock::SimClock;
use crate::disk::{DiskFaults, SimDisk};
use crate::net;

/// The port every simulated node listens on.
pub const PORT: u16 = 7000;

/// Where every simulated node keeps its data (on its host's file system).
const DATA_DIR: &str = "/data";

/// The cluster's randomised settings (FoundationDB's knobs), drawn from the seed within
/// sane ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knobs {
    /// Node hosts (each runs some partitions' journal and adjudicator, and a storage
    /// replica).
    pub nodes: usize,
    /// Partitions of the key space.
    pub partitions: u32,
    /// How often an idle journal gets a heartbeat.
    pub heartbeat: Duration,
    /// Every host's clock error bound.
    pub clock_bound: Duration,
    /// Clients' request deadline.
    pub request_timeout: Duration,
    /// How long a storage replica lets a read wait for its watermark.
    pub read_timeout: Duration,
    /// Network latency range.
    pub min_latency: Duration,
    /// Network latency range.
    pub max_latency: Duration,
    /// Largest batch a journal's flusher writes.
    pub max_batch_bytes: u64,
    /// How long a participant's vote may stay undecided before it asks the coordinator.
    pub vote_timeout: Duration,
    /// Replicas of each partition's journal: 1, or every node (a Raft group each).
    pub replicas: usize,
    /// The Raft tick of replicated journals.
    pub raft_tick: Duration,
    /// The cluster id (seeds the replicated journals' election timeouts).
    pub cluster_id: u64,
    /// How long a replica log's flush takes on each node (the simulated disk is otherwise
    /// instant): 0.05–8 ms, drawn per node — one slow disk among fast ones is common.
    pub raft_sync_latency: Vec<Duration>,
    /// With replicated journals: one more node, the first (`n1`), that holds no replica
    /// and is only a storage replica: its feeds tail the journals from their voters, and
    /// clients read from it first (the first storage replica of the topology).
    pub storage_only: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            nodes: 3,
            partitions: 2,
            heartbeat: Duration::from_millis(20),
            clock_bound: Duration::from_millis(1),
            request_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(1),
            min_latency: Duration::from_micros(200),
            max_latency: Duration::from_millis(2),
            max_batch_bytes: 4 << 20,
            vote_timeout: Duration::from_secs(1),
            replicas: 1,
            raft_tick: Duration::from_millis(20),
            cluster_id: 1,
            raft_sync_latency: Vec::new(),
            storage_only: false,
        }
    }
}

impl Knobs {
    /// Knobs drawn from `rng`, for a cluster whose journals have `replicas` replicas.
    pub fn draw(rng: &mut ChaCha8Rng, replicas: usize) -> Knobs {
        let mut knobs = Knobs {
            nodes: 3,
            partitions: rng.random_range(1..=4),
            heartbeat: Duration::from_millis(rng.random_range(5..=20)),
            // A quarter of the seeds get a wide bound (8–16 ms, NTP-like): the window in
            // which a version is durable but still in the future is then wide enough for
            // readers to land in it.
            clock_bound: Duration::from_micros(if rng.random_bool(0.25) {
                rng.random_range(8_000..=16_000)
            } else {
                rng.random_range(500..=5_000)
            }),
            request_timeout: Duration::from_millis(rng.random_range(500..=3_000)),
            read_timeout: Duration::from_millis(rng.random_range(300..=2_000)),
            min_latency: Duration::from_micros(rng.random_range(50..=500)),
            max_latency: Duration::from_micros(rng.random_range(1_000..=8_000)),
            max_batch_bytes: [4 << 10, 64 << 10, 4 << 20][rng.random_range(0..3)],
            vote_timeout: Duration::from_millis(rng.random_range(300..=2_500)),
            ..Knobs::default()
        };
        // Drawn last, so a single-replica run draws what it drew before replication.
        if replicas > 1 {
            knobs.replicas = replicas;
            knobs.nodes = knobs.nodes.max(replicas);
            knobs.raft_tick = Duration::from_millis(rng.random_range(10..=50));
            knobs.cluster_id = rng.random_range(1..=u64::MAX >> 1);
            knobs.raft_sync_latency = (0..knobs.nodes)
                .map(|_| Duration::from_micros(rng.random_range(50..=8_000)))
                .collect();
            // Last, so the draws above are what they were before it.
            if rng.random_bool(0.5) {
                knobs.storage_only = true;
                knobs.nodes += 1;
            }
        }
        knobs
    }
}

/// One simulated node as the harness controls it.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// Its host name (also its DNS name).
    pub name: String,
    /// The switch that makes its disk fail.
    pub disk: Arc<DiskFaults>,
    /// The switch that makes its storage engine's writes fail.
    pub storage: WriteFaults,
    /// Its clock.
    pub clock: Arc<SimClock>,
    /// The switch that makes its server hold some adjudicator requests past their
    /// callers' deadlines (the `late` fault).
    pub late: LateSwitch,
    /// Which node its host runs: the one it was created with, or the node that replaced it
    /// on a wiped disk ([`SimCluster::replace_node`]).
    identity: Arc<parking_lot::Mutex<Identity>>,
}

/// The node a host runs, read at each start of its process.
#[derive(Debug, Clone)]
struct Identity {
    config: NodeConfig,
    /// Its first start is a replacement's (`NodeEnv::join`).
    join: bool,
    /// Its data directory is wiped before the next start.
    wipe: bool,
}

/// The `late` fault's switch on one node: while a window is open, half the requests to its
/// adjudicators are served only after the clients' deadline and up to 3 s more — past the
/// client's retry, its `Status` question and, often, the participants' vote timeout.
#[derive(Debug, Clone)]
pub struct LateSwitch(Arc<parking_lot::Mutex<LateState>>);

#[derive(Debug)]
struct LateState {
    open: u32,
    /// Requests held since the last window opened.
    held: u64,
    rng: ChaCha8Rng,
    /// The clients' request deadline: every held request is held longer.
    past: Duration,
}

impl LateSwitch {
    /// A closed switch; held requests are held longer than `deadline`.
    pub fn new(deadline: Duration) -> Self {
        LateSwitch(Arc::new(parking_lot::Mutex::new(LateState {
            open: 0,
            held: 0,
            rng: ChaCha8Rng::seed_from_u64(0),
            past: deadline,
        })))
    }

    /// A window opens (its choices drawn from `seed`) or closes; returns how many requests
    /// were held since the last window opened.
    pub fn set(&self, open: bool, seed: u64) -> u64 {
        let mut state = self.0.lock();
        let held = state.held;
        if open {
            state.open += 1;
            state.held = 0;
            state.rng = ChaCha8Rng::seed_from_u64(seed);
        } else {
            state.open = state.open.saturating_sub(1);
        }
        held
    }

    /// How long to hold a request for `path`, if at all.
    fn pick(&self, path: &str) -> Option<Duration> {
        let mut state = self.0.lock();
        if state.open == 0 || !path.starts_with("/journaldb.v1.AdjudicatorService/") {
            return None;
        }
        let past = state.past;
        let delay = state
            .rng
            .random_bool(0.5)
            .then(|| past + Duration::from_millis(state.rng.random_range(50..=3_000)));
        state.held += u64::from(delay.is_some());
        delay
    }

    /// The node's side of the switch.
    fn requests(&self) -> LateRequests {
        let switch = self.clone();
        LateRequests::new(move |path| switch.pick(path))
    }
}

/// A simulated journaldb cluster. Cheap to clone; use it inside simulated hosts to connect.
#[derive(Debug, Clone)]
pub struct SimCluster {
    knobs: Knobs,
    nodes: Vec<SimNode>,
    /// The running nodes' replicas of replicated journals, and their audit.
    replicas: Registry,
}

impl SimCluster {
    /// Adds the cluster's node hosts (`n1`, `n2`, …) to `sim`. Partition `p` lives on node
    /// `p mod nodes`, or with replicated journals on every node (but the first, with
    /// [`Knobs::storage_only`]); every node is a storage replica.
    pub fn add_to(sim: &mut turmoil::Sim<'_>, knobs: Knobs, planted: Option<PlantedBug>) -> Self {
        let names: Vec<String> = (1..=knobs.nodes).map(|i| format!("n{i}")).collect();
        let entries: Vec<NodeEntry> = names
            .iter()
            .enumerate()
            .map(|(i, name)| NodeEntry {
                name: name.clone(),
                listen: format!("{name}:{PORT}"),
                address: Some(format!("http://{name}:{PORT}")),
                partitions: (0..knobs.partitions)
                    .filter(|p| match knobs.replicas > 1 {
                        true => !(knobs.storage_only && i == 0),
                        false => *p as usize % knobs.nodes == i,
                    })
                    .collect(),
                storage: true,
            })
            .collect();
        let mut nodes = Vec::new();
        let replicas = Registry::default();
        for (i, name) in names.iter().enumerate() {
            let node = SimNode {
                name: name.clone(),
                disk: Arc::new(DiskFaults::default()),
                storage: WriteFaults::default(),
                clock: Arc::new(SimClock::new(knobs.clock_bound)),
                late: LateSwitch::new(knobs.request_timeout),
                identity: Arc::new(parking_lot::Mutex::new(Identity {
                    config: NodeConfig::new(
                        name.clone(),
                        DATA_DIR,
                        knobs.partitions,
                        Some(knobs.cluster_id),
                        entries.clone(),
                    ),
                    join: false,
                    wipe: false,
                })),
            };
            // Every field spelled out: `NodeEnv::default()` would build (and drop) a
            // system clock, which reads real time.
            let env = NodeEnv {
                disk: Arc::new(SimDisk::new(node.disk.clone())),
                storage: StorageEngine::Memory,
                clock: node.clock.clone(),
                connector: Some(net::connector()),
                journal: JournalOptions {
                    flusher: Flusher::Task,
                    max_batch_bytes: knobs.max_batch_bytes,
                    ..JournalOptions::default()
                },
                heartbeat_interval: knobs.heartbeat,
                adjudicator: AdjudicatorConfig {
                    planted_bug: planted,
                    vote_timeout: knobs.vote_timeout,
                    ..AdjudicatorConfig::default()
                },
                storage_server: StorageServerConfig {
                    read_timeout: knobs.read_timeout,
                    planted_bug: planted,
                    ..StorageServerConfig::default()
                },
                storage_faults: Some(node.storage.clone()),
                late_requests: Some(node.late.requests()),
                raft_tick: Some(knobs.raft_tick),
                raft_sync_latency: knobs.raft_sync_latency.get(i).copied().unwrap_or_default(),
                bootstrap: false,
                join: false,
            };
            // A node bootstraps its replica logs until it has once started: never after,
            // as an operator would not (a wiped disk is not a new node).
            let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let registry = replicas.clone();
            let (host, identity) = (name.clone(), node.identity.clone());
            sim.host(name.as_str(), move || {
                let (mut env, started) = (env.clone(), started.clone());
                let (config, wipe) = {
                    let mut identity = identity.lock();
                    env.join = identity.join;
                    (identity.config.clone(), std::mem::take(&mut identity.wipe))
                };
                env.bootstrap = !env.join && !started.load(std::sync::atomic::Ordering::Relaxed);
                // A new process: the last one's replicas are gone with it.
                registry.forget(&host);
                let (registry, host) = (registry.clone(), host.clone());
                async move {
                    if wipe {
                        // The disk was replaced: nothing of the lost node's data is left.
                        wipe_durably(std::path::Path::new(DATA_DIR))
                            .expect("the simulated file system removes what it holds");
                    }
                    // A node that cannot start or whose journal failed stops (fail-stop);
                    // whoever supervises the simulation restarts it.
                    let _ = run_node(&host, config, env, &started, &registry).await;
                    Ok(())
                }
            });
            nodes.push(node);
        }
        SimCluster {
            knobs,
            nodes,
            replicas,
        }
    }

    /// Node `node`'s replica of partition `p`'s journal, if its process runs one (a
    /// replicated cluster, the node started and has not restarted since).
    pub fn replica(&self, node: &str, p: PartitionId) -> Option<ReplicatedJournal> {
        self.replicas.replica(node, p)
    }

    /// Asks every running node to report the committed records its replicas hold; see
    /// [`SimCluster::replica_disagreements`].
    pub fn request_replica_audit(&self) {
        self.replicas.request_audit();
    }

    /// What the reports asked for by [`SimCluster::request_replica_audit`] show: two
    /// replicas of a partition holding different committed records at one Lsn, or a
    /// replica whose Raft group stopped on a broken invariant (raft-rs panicked). Empty
    /// when they agree (or no node has reported yet).
    pub fn replica_disagreements(&self) -> Vec<String> {
        self.replicas.disagreements()
    }

    /// The nodes that have not reported since [`SimCluster::request_replica_audit`].
    pub fn replica_audit_missing(&self) -> Vec<String> {
        self.nodes()
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| !self.replicas.reported(n))
            .collect()
    }

    /// Who leads partition `p`'s journal now, with the term: of the nodes whose hosts
    /// run in `sim`, the one leading the highest term (a deposed leader that has not
    /// heard of the next term still thinks it leads its own). `None` while none does.
    pub fn leader_of(&self, sim: &mut turmoil::Sim<'_>, p: PartitionId) -> Option<(String, u64)> {
        let running: Vec<&SimNode> = self
            .nodes
            .iter()
            .filter(|n| sim.is_host_running(n.name.as_str()))
            .collect();
        running
            .into_iter()
            .filter_map(|n| {
                let status = self.replica(&n.name, p)?.status();
                (status.role == StateRole::Leader && status.failed.is_none())
                    .then(|| (n.name.clone(), status.term))
            })
            .max_by_key(|(_, term)| *term)
    }

    /// Makes host `host`'s node be replaced by a new node named `new` on a wiped disk at
    /// its next start: its data directory is emptied and it joins (`NodeEnv::join`) under
    /// the new name, at the host's address, in the place of the node it ran. Returns the
    /// name of that node and the address; the replacement itself is recorded and carried
    /// out through the cluster's `ClusterService` (`ReplaceNode`, `ReplaceReplica`).
    pub fn replace_node(&self, host: &str, new: &str) -> Option<(String, String)> {
        let node = self.nodes.iter().find(|n| n.name == host)?;
        let mut identity = node.identity.lock();
        let old = identity.config.node.clone();
        let mut config = identity.config.clone();
        config.node = new.to_owned();
        let entry = config.nodes.iter_mut().find(|e| e.name == old)?;
        entry.name = new.to_owned();
        let address = entry.url();
        *identity = Identity {
            config,
            join: true,
            wipe: true,
        };
        Some((old, address))
    }

    /// Its knobs.
    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }

    /// Its nodes.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// Every node's URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}:{PORT}", n.name))
            .collect()
    }

    /// Client options for a simulated host: the simulated network, `clock`, the knobs'
    /// deadlines, and `seed` for transaction ids and retry jitter.
    pub fn client_options(&self, clock: Arc<SimClock>, seed: u64) -> ClientOptions {
        ClientOptions::default()
            .with_request_timeout(self.knobs.request_timeout)
            .with_connect_timeout(self.knobs.request_timeout)
            .with_seed(seed)
            // Replays need the same ids; distinct per client because the seeds are.
            .with_txn_id_seed(seed)
            .with_connector(net::connector())
            .with_clock(clock)
    }

    /// Connects from inside a simulated host, trying each node in turn until one answers
    /// (nodes may be down). Gives up after `patience` of simulated time.
    pub async fn connect(
        &self,
        clock: Arc<SimClock>,
        seed: u64,
        patience: Duration,
    ) -> journaldb::Result<Client> {
        let deadline = tokio::time::Instant::now() + patience;
        let urls = self.urls();
        let mut last = None;
        for round in 0usize.. {
            let url = &urls[round % urls.len()];
            match Client::connect_with(url, self.client_options(clock.clone(), seed)).await {
                Ok(client) => return Ok(client),
                Err(e) => last = Some(e),
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last.expect("at least one attempt"))
    }
}

/// Removes `dir` and everything in it, durably (turmoil's file system, like a real one,
/// keeps a removal only once its directory is synced: a crash would bring files back).
fn wipe_durably(dir: &std::path::Path) -> std::io::Result<()> {
    use turmoil::fs::shim::std::fs as simfs;
    if simfs::metadata(dir).is_err() {
        return Ok(());
    }
    for entry in simfs::read_dir(dir)? {
        let entry = entry?;
        match entry.file_type()?.is_dir() {
            true => wipe_durably(&entry.path())?,
            false => simfs::remove_file(entry.path())?,
        }
    }
    simfs::sync_dir(dir)?;
    simfs::remove_dir(dir)?;
    simfs::sync_dir(dir.parent().unwrap_or(std::path::Path::new("/")))
}

async fn run_node(
    name: &str,
    config: NodeConfig,
    env: NodeEnv,
    started: &std::sync::atomic::AtomicBool,
    registry: &Registry,
) -> journaldb::Result<()> {
    let (incoming, addr) = net::listen(PORT)
        .await
        .map_err(|e| journaldb::Error::Io(format!("listening: {e}")))?;
    let node = ClusterNode::start_with(config, env, incoming, addr).await?;
    started.store(true, std::sync::atomic::Ordering::Relaxed);
    registry.started(name, node.replica_journals());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        registry.report_if_asked(name);
        if node.is_failed() {
            break;
        }
    }
    // Fail-stop: nothing in flight is worth waiting for.
    node.shutdown_within(Duration::ZERO).await
}
