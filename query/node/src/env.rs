//! [`NodeEnv`]: what a node runs on besides its configuration (the seam the simulation
//! replaces), and [`peer`]: how a node reaches another one.

use std::sync::Arc;
use std::time::Duration;

use journaldb::cluster::transport::{Connector, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
use journaldb::{Error, Result, StorageEngine};
use journaldb_adjudicator::AdjudicatorConfig;
use journaldb_journal::JournalOptions;
use journaldb_journal::disk::{Disk, RealDisk};
use journaldb_proto::{Clock, SystemClock};
use journaldb_storage::WriteFaults;
use journaldb_storage::service::StorageServerConfig;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::config::TlsFiles;
use crate::late::LateRequests;

/// How often an idle journal gets a heartbeat.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(20);

/// What a node runs on besides its configuration. [`NodeEnv::default`] is production: the
/// real file system, RocksDB storage, the host's [`SystemClock`], TCP and default journal
/// options (a flusher thread per journal). The simulation (ARCHITECTURE §7) passes its own disk, memory storage,
/// per-host clock, network connector and task flushers, and draws the knobs from its seed.
#[derive(Clone)]
pub struct NodeEnv {
    /// Where journals (and RocksDB's directory) live.
    pub disk: Arc<dyn Disk>,
    /// The storage replica's engine.
    pub storage: StorageEngine,
    /// The bounded-error clock of commit timestamps, heartbeats and failover.
    pub clock: Arc<dyn Clock>,
    /// How connections to other nodes are opened; `None` is TCP.
    pub connector: Option<Connector>,
    /// Settings of every journal (where its flusher runs, batch sizes).
    pub journal: JournalOptions,
    /// How often an idle journal gets a heartbeat (default 20 ms).
    pub heartbeat_interval: Duration,
    /// Settings of every partition's adjudicator.
    pub adjudicator: AdjudicatorConfig,
    /// Settings of the storage replica's service.
    pub storage_server: StorageServerConfig,
    /// A switch that makes the storage engine's writes fail while it is on: the
    /// simulation's `storage-error` fault. `None` in production.
    pub storage_faults: Option<WriteFaults>,
    /// Requests this node's server receives but serves only after a delay, past their
    /// callers' deadlines: the simulation's `late` fault. `None` in production.
    pub late_requests: Option<LateRequests>,
    /// The Raft tick of replicated journals (elections after about 10 ticks without a
    /// leader, heartbeats every 2); `None` is the driver's default, 50 ms.
    pub raft_tick: Option<Duration>,
    /// How long each flush of a replica log takes before it writes: the simulation's model
    /// of a disk that takes time (its own is instant), so that a crash can land between a
    /// Raft write and its fsync. Zero in production.
    pub raft_sync_latency: Duration,
    /// Whether this start may create the replica logs of a new replicated cluster, on a
    /// data directory that has none (`journaldb serve --bootstrap`, which `cluster start`
    /// passes to a new cluster's nodes; [`ClusterNode::bootstrap`]). Never implicit: a
    /// node whose disk was wiped must not come back under its old Raft id with an empty
    /// log (ARCHITECTURE §5 rule 3). Default false.
    pub bootstrap: bool,
    /// Whether this start may create empty replica logs for a node that replaces a lost
    /// one (`journaldb serve --join`): the cluster's topology, read from the configured
    /// peers, must name this node already (`journaldb admin replace` records it). Never
    /// implicit, like [`NodeEnv::bootstrap`]. Default false.
    pub join: bool,
}

impl Default for NodeEnv {
    fn default() -> Self {
        NodeEnv {
            disk: Arc::new(RealDisk),
            storage: StorageEngine::RocksDb,
            clock: Arc::new(SystemClock::new()),
            connector: None,
            journal: JournalOptions::default(),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            adjudicator: AdjudicatorConfig::default(),
            storage_server: StorageServerConfig::default(),
            storage_faults: None,
            late_requests: None,
            raft_tick: None,
            raft_sync_latency: Duration::ZERO,
            bootstrap: false,
            join: false,
        }
    }
}

impl std::fmt::Debug for NodeEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeEnv")
            .field("disk", &self.disk)
            .field("storage", &self.storage)
            .field("journal", &self.journal)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("adjudicator", &self.adjudicator)
            .field("storage_server", &self.storage_server)
            .finish_non_exhaustive()
    }
}

/// An endpoint for another node: connect timeout, HTTP/2 keep-alive (also idle), and
/// TLS verified against the cluster's CA when the cluster uses TLS.
pub(crate) fn peer(url: &str, tls: Option<&TlsFiles>) -> Result<Endpoint> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::InvalidArgument(format!("{url}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    match tls {
        Some(tls) => endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca)))
            .map_err(|e| Error::InvalidArgument(format!("TLS for {url}: {e}"))),
        None => Ok(endpoint),
    }
}
