//! [`ClusterNode`]: one node of a cluster, running the roles its [`NodeConfig`] names on one
//! gRPC listener — `JournalService` and `AdjudicatorService` for its partitions,
//! `StorageService` if it is a storage replica (fed from every partition's journal over
//! `Tail`, wherever that journal lives), `ClusterService` (the static topology) and the
//! standard `grpc.health.v1.Health` service.
//!
//! Each of its partitions' adjudicators is rebuilt from its journal at start
//! (`ReplayMode::Failover`), appends a heartbeat whenever its journal has been idle for
//! the heartbeat interval, so storage watermarks everywhere keep moving, and forgets
//! conflicts older than the longest transaction about once a second. Votes a crash
//! left undecided (a `Prepared` without its `Decided`) are resolved at start by asking
//! each one's coordinator — on this node or another, retrying until it answers — and
//! recording the answer, so no key stays pending. Time comes from the bounded-error
//! [`SystemClock`](journaldb_proto::SystemClock). With `[tls]` in the configuration every connection — clients to the
//! node and node to node — is TLS (rustls), verified against the cluster's CA.
//!
//! In a cluster whose journals are replicated (each partition on several nodes), the node
//! holds a replica of each of its partitions' Raft groups instead
//! ([`crate::replicated`]): `JournalService` carries the groups' messages, a partition's
//! adjudicator (with its heartbeat and vote resolution) runs only on its group's leader,
//! in one term at a time, other replicas forward its requests there, and the storage
//! replica feeds from this node's own replicas, up to what is committed.

use std::sync::Arc;
use std::time::Duration;

use journaldb_adjudicator::service::AdjudicatorServer;
use journaldb_adjudicator::{Partition, ReplayMode};
use journaldb_journal::Journal;
use journaldb_journal::service::{JournalServer, RaftInbox};
use journaldb_proto::pb::adjudicator_service_server::AdjudicatorServiceServer;
use journaldb_proto::pb::cluster_service_server::ClusterServiceServer;
use journaldb_proto::pb::journal_service_server::JournalServiceServer;
use journaldb_proto::{Clock, Limits, Lsn, MAX_MESSAGE_BYTES, PartitionId};
use journaldb_raft::ReplicatedJournal;
use journaldb_storage::{Engine, StorageNode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::{Identity, ServerTlsConfig};

use journaldb::cluster::transport::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
use journaldb::partition::partition_of;
use journaldb::{Error, Result};

use crate::config::NodeConfig;
pub use crate::env::NodeEnv;
use crate::maintenance::LastError;
use crate::replicated::forwarding::Forwarding;
use crate::replicated::records::{LEADERLESS_CHECK, Records};
use crate::replicated::roles::{Replicas, Start, check_join, fetch_metadata};
use crate::start::{open_engine, start_roles};
use crate::storage_copy::start_from_copy;
use crate::tasks::Started;
use crate::topology::ClusterInfo;

/// How long `shutdown` lets in-flight requests finish before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a stopping node waits for the groups it leads to elect another leader.
const HAND_OVER_WAIT: Duration = Duration::from_secs(2);

/// A running node. Dropping it stops its background tasks but not its server: call
/// [`ClusterNode::shutdown`].
pub struct ClusterNode {
    server: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    stop: tokio::sync::oneshot::Sender<()>,
    started: Started,
    stop_maintenance: tokio::sync::watch::Sender<bool>,
    journals: Vec<Arc<Journal>>,
    /// The replicated journals, in a replicated cluster.
    replicas: Option<Replicas>,
    /// The storage replica, on a storage node.
    storage: Option<Arc<StorageNode<Box<dyn Engine>>>>,
    /// The last error of a maintenance round not yet taken.
    maintenance_error: LastError,
    addr: std::net::SocketAddr,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn open_partition(config: &NodeConfig, env: &NodeEnv, p: u32) -> Result<Arc<Partition>> {
    let id = PartitionId::new(p);
    let journal = Arc::new(Journal::open_on(
        env.disk.clone(),
        config.data_dir.join(format!("journal-{p}")),
        env.journal.clone(),
    )?);
    let (first, n) = (journal.first_lsn(), config.partitions);
    let mode = ReplayMode::Failover {
        now: env.clock.now(),
        truncated: first != Lsn::FIRST,
    };
    let owns = |key: &[u8]| partition_of(key, n) == id;
    let part = Partition::recover(id, env.adjudicator.clone(), journal, first, owns, mode)?;
    Ok(Arc::new(part))
}

/// Checks and applies what the configuration says about the environment before anything
/// starts: the data directory, the adjudicators' timeouts and transaction age, the
/// partition count on disk, and that the journal can hold any commit a request may make.
/// Returns the limits requests are checked against, and whether this is the node's first
/// start (its data directory has no manifest yet). On a first start of a replicated
/// cluster's node the manifest is written only once its replica logs exist
/// ([`write_manifest`]), so a start that fails before is a first start again.
fn prepare(config: &NodeConfig, env: &mut NodeEnv) -> Result<(Limits, bool)> {
    env.disk
        .create_dir_all(&config.data_dir)
        .map_err(|e| Error::Io(format!("creating {}: {e}", config.data_dir.display())))?;
    let fresh = !env
        .disk
        .list_dir(&config.data_dir)
        .map_err(|e| Error::Io(format!("listing {}: {e}", config.data_dir.display())))?
        .iter()
        .any(|name| name == journaldb::manifest::MANIFEST);
    check_layout(config, env, fresh)?;
    if let Some(ms) = config.vote_timeout_ms {
        env.adjudicator.vote_timeout = Duration::from_millis(ms);
    }
    if config.max_txn_age_ms.is_some() {
        env.adjudicator.max_txn_age = config.max_txn_age();
    }
    if config.retention() < env.adjudicator.max_txn_age {
        return Err(Error::InvalidArgument(format!(
            "retention ({:?}) must be at least the longest transaction ({:?})",
            config.retention(),
            env.adjudicator.max_txn_age
        )));
    }
    // The partition count is fixed at creation and checked at every start.
    if !(fresh && config.is_replicated()) {
        write_manifest(config, env)?;
    }
    let limits = Limits {
        max_txn_age: env.adjudicator.max_txn_age,
        ..Limits::default()
    };
    if limits.max_record_bytes() > env.journal.max_record_bytes {
        return Err(Error::InvalidArgument(format!(
            "the journal's record limit ({} bytes) is below the largest commit record \
             a transaction may need ({} bytes)",
            env.journal.max_record_bytes,
            limits.max_record_bytes()
        )));
    }
    Ok((limits, fresh))
}

/// Refuses a data directory laid out for the other kind of journal (single-replica
/// `journal-P` directories in a replicated cluster's node, or replica logs `raft-P` in a
/// single-replica one: a configuration edited across kinds would start from empty
/// journals and lose the history), and a replicated node's first start without
/// [`NodeEnv::bootstrap`].
fn check_layout(config: &NodeConfig, env: &NodeEnv, fresh: bool) -> Result<()> {
    let names = env
        .disk
        .list_dir(&config.data_dir)
        .map_err(|e| Error::Io(format!("listing {}: {e}", config.data_dir.display())))?;
    let (ours, other) = match config.is_replicated() {
        true => ("replicated", "journal-"),
        false => ("single-replica", "raft-"),
    };
    if let Some(name) = names.iter().find(|n| n.starts_with(other)) {
        return Err(Error::InvalidArgument(format!(
            "{} holds {name}, a journal of the other kind than this {ours} configuration's: \
             a cluster's journals stay replicated or single-replica for its whole life",
            config.data_dir.display()
        )));
    }
    if fresh && config.is_replicated() && !env.bootstrap && !env.join {
        return Err(Error::InvalidArgument(format!(
            "{} holds no replicated journals yet: if this is a new cluster's first start, \
             start the node with --bootstrap (`journaldb cluster start` does); if it replaces \
             a lost node, start it with --join once `journaldb admin replace` recorded it; \
             if the node lost its data, it must not rejoin under its old name (its votes \
             were lost with it): replace it",
            config.data_dir.display()
        )));
    }
    Ok(())
}

/// Writes (or checks) the data directory's manifest: the partition count, fixed at
/// creation.
fn write_manifest(config: &NodeConfig, env: &NodeEnv) -> Result<()> {
    journaldb::manifest::Manifest::load_or_adopt(&*env.disk, &config.data_dir, config.partitions)
        .map(drop)
}

/// `JournalService` over `server`, with the node's message limits, refusing readers of
/// another cluster.
fn journal_service(
    config: &NodeConfig,
    server: JournalServer,
) -> JournalServiceServer<JournalServer> {
    JournalServiceServer::new(server.with_cluster(config.cluster_id()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// `AdjudicatorService` over this node's partitions.
fn adjudicator_service(
    config: &NodeConfig,
    env: &NodeEnv,
    partitions: &[Arc<Partition>],
    limits: Limits,
) -> AdjudicatorServiceServer<AdjudicatorServer<Arc<dyn Clock>>> {
    let server = AdjudicatorServer::new(
        partitions.to_vec(),
        config.partitions,
        env.clock.clone(),
        limits,
    )
    .with_topology_version(config.topology_version);
    AdjudicatorServiceServer::new(server).max_decoding_message_size(MAX_MESSAGE_BYTES)
}

impl ClusterNode {
    /// Starts the node on `listener` (bound by the caller: `serve` binds the configured
    /// address; tests bind port 0), with the production [`NodeEnv`].
    pub async fn start(
        config: NodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<ClusterNode> {
        Self::start_on(config, NodeEnv::default(), listener).await
    }

    /// [`ClusterNode::start`] for a node of a new replicated cluster: on its first start
    /// it creates its replica logs ([`NodeEnv::bootstrap`]). Once they exist, the same as
    /// `start`.
    pub async fn bootstrap(
        config: NodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<ClusterNode> {
        let env = NodeEnv {
            bootstrap: true,
            ..NodeEnv::default()
        };
        Self::start_on(config, env, listener).await
    }

    /// [`ClusterNode::start`] for a node that replaces a lost one: on its first start it
    /// reads the cluster's topology from the configured peers (which must name it:
    /// `journaldb admin replace` records it) and creates empty replica logs for the groups
    /// it gives this node ([`NodeEnv::join`]). Once they exist, the same as `start`.
    pub async fn join(
        config: NodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<ClusterNode> {
        let env = NodeEnv {
            join: true,
            ..NodeEnv::default()
        };
        Self::start_on(config, env, listener).await
    }

    /// [`ClusterNode::start_with`] on a TCP listener.
    async fn start_on(
        config: NodeConfig,
        env: NodeEnv,
        listener: tokio::net::TcpListener,
    ) -> Result<ClusterNode> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Io(format!("listener address: {e}")))?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        Self::start_with(config, env, incoming, addr).await
    }

    /// Starts the node in `env`, serving the connections `incoming` yields; `addr` is the
    /// address they arrive at, as [`ClusterNode::addr`] reports it.
    pub async fn start_with<I, IO, IE>(
        config: NodeConfig,
        mut env: NodeEnv,
        incoming: I,
        addr: std::net::SocketAddr,
    ) -> Result<ClusterNode>
    where
        I: Stream<Item = std::result::Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        let (limits, fresh) = prepare(&config, &mut env)?;
        let tls = config.tls_files().map_err(Error::InvalidArgument)?;
        // Keep-alive on the server side too: a peer that vanished (a crashed host, a
        // connection wedged by a partition) is noticed and its streams end.
        let mut server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .layer(tower::util::option_layer(env.late_requests.clone()));
        if let Some(tls) = &tls {
            server = server
                .tls_config(
                    ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert, &tls.key)),
                )
                .map_err(|e| Error::InvalidArgument(format!("TLS: {e}")))?;
        }
        // A joining node's view of the topology: where it copies its storage from.
        let mut joined = None;
        let (partitions, replicas) = match config.is_replicated() {
            true => {
                let metadata;
                let start = match (fresh, env.bootstrap) {
                    (false, _) => Start::Restart,
                    (true, true) => Start::Bootstrap,
                    (true, false) => {
                        metadata = fetch_metadata(&config, &env, tls.as_ref()).await?;
                        check_join(&config, &metadata, &env, tls.as_ref()).await?;
                        Start::Join(&metadata)
                    }
                };
                if let Start::Join(metadata) = start {
                    joined = Some(metadata.clone());
                }
                let joining = joined.is_some();
                let replicas = Replicas::start(&config, &env, tls.as_ref(), start)?;
                // A joining node checked the topology already.
                if !joining {
                    replicas.fail_if_retired(&config, &env, tls.as_ref());
                }
                // The replica logs exist: from now on this node has started before.
                if fresh && let Err(e) = write_manifest(&config, &env) {
                    replicas.driver.stop().await;
                    return Err(e);
                }
                (Vec::new(), Some(replicas))
            }
            false => {
                let partitions = config
                    .me()
                    .partitions
                    .iter()
                    .map(|&p| open_partition(&config, &env, p))
                    .collect::<Result<Vec<_>>>()?;
                (partitions, None)
            }
        };
        // A storage replica with nothing applied starts from another replica's copy when
        // the journals may have dropped their first records (a replacement, or a copy
        // cut short).
        let engine = match open_engine(&config, &env) {
            Ok(Some(engine)) => start_from_copy(
                &engine,
                &config,
                &env,
                tls.as_ref(),
                replicas.as_ref(),
                joined.as_ref(),
            )
            .await
            .map(|()| Some(engine)),
            opened => opened,
        };
        let engine = match engine {
            Ok(engine) => engine,
            Err(e) => {
                if let Some(replicas) = replicas {
                    replicas.driver.stop().await;
                }
                return Err(e);
            }
        };
        // From here on tasks run: a failure stops every one before it returns.
        let mut started = Started::default();
        let roles = start_roles(
            &config,
            &env,
            tls.as_ref(),
            &partitions,
            replicas.as_ref(),
            engine,
            &mut started,
        );
        let (maintenance, stop_maintenance, storage) = match roles {
            Ok(roles) => roles,
            Err(e) => {
                started.abort().await;
                if let Some(replicas) = replicas {
                    replicas.driver.stop().await;
                }
                return Err(e);
            }
        };

        let (journal, single, replicated) = match &replicas {
            Some(replicas) => {
                let inbox: Arc<dyn RaftInbox> = Arc::new(replicas.inbox(&config));
                // No topology version check (ARCHITECTURE §5 rule 8): the metadata group's
                // version moves with replacements, which never move a key; ownership is
                // checked on every request.
                let local = AdjudicatorServer::routed(
                    replicas.leaders.clone(),
                    config.partitions,
                    env.clock.clone(),
                    limits,
                );
                let forwarding = Forwarding {
                    local,
                    leaders: replicas.leaders.clone(),
                };
                let service = AdjudicatorServiceServer::new(forwarding)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES);
                // Peers' Raft streams, and storage nodes' Tail streams, end when this node
                // stops.
                let closing = stop_maintenance.subscribe();
                let records = Records::new(
                    replicas.leaders.me,
                    replicas.journals(),
                    closing.clone(),
                    LEADERLESS_CHECK,
                );
                let journal = JournalServer::new([])
                    .with_raft(inbox)
                    .with_replicas(Arc::new(records))
                    .with_closing(closing);
                (journal_service(&config, journal), None, Some(service))
            }
            None => (
                journal_service(
                    &config,
                    JournalServer::new(partitions.iter().map(|p| (p.id(), p.journal().clone()))),
                ),
                Some(adjudicator_service(&config, &env, &partitions, limits)),
                None,
            ),
        };
        let (reporter, health) = tonic_health::server::health_reporter();
        let router = server
            .add_service(health)
            .add_service(ClusterServiceServer::new(ClusterInfo::new(
                &config,
                replicas.as_ref(),
            )))
            .add_service(journal)
            .add_optional_service(single)
            .add_optional_service(replicated)
            .add_optional_service(storage.as_ref().map(|(_, service)| service.clone()));
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
            let _ = stopped.await;
        }));
        Ok(ClusterNode {
            server,
            stop,
            started,
            stop_maintenance,
            journals: partitions.iter().map(|p| p.journal().clone()).collect(),
            replicas,
            storage: storage.map(|(node, _)| node),
            maintenance_error: maintenance.last_error,
            addr,
        })
    }

    /// Whether one of its journals has failed (an I/O error poisoned it: its partition
    /// then refuses every commit until the node is restarted, which recovers the journal),
    /// a maintenance loop stopped (it panicked), or a storage feed did (a journal broke an
    /// invariant: this replica can serve nothing newer). `serve` exits when this happens, so a
    /// supervisor restarts the process. A maintenance round that failed is not a failure
    /// of the node: it is tried again ([`ClusterNode::take_maintenance_error`]).
    pub fn is_failed(&self) -> bool {
        self.journals.iter().any(|j| j.is_poisoned())
            || self.started.any_failed()
            || self.failure().is_some()
    }

    /// Why a replicated journal's group stopped on this node (its log failed, or raft-rs
    /// panicked), if one did: the node has failed ([`ClusterNode::is_failed`]).
    pub fn failure(&self) -> Option<String> {
        self.replicas.as_ref()?.failure()
    }

    /// This node's replicas of replicated journals, by partition (none in a cluster of
    /// single-replica journals): each one's Raft status (role, term, leader, applied
    /// index) and, on its leader, a handover ([`ReplicatedJournal::step_down`]).
    pub fn replica_journals(&self) -> Vec<(PartitionId, ReplicatedJournal)> {
        self.replicas
            .as_ref()
            .map(Replicas::journals)
            .unwrap_or_default()
    }

    /// The error of the last maintenance round that failed (storage could not checkpoint,
    /// a journal segment could not be removed), if one did since the last call. Nothing
    /// was lost: the round is tried again every checkpoint interval.
    pub fn take_maintenance_error(&self) -> Option<Error> {
        self.maintenance_error.lock().take()
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops accepting requests, stops heartbeats and feeds, closes the journals (waiting
    /// for queued appends; their Tail streams end) and waits for in-flight requests — at
    /// most 5 s, then drops them.
    pub async fn shutdown(self) -> Result<()> {
        self.shutdown_within(SHUTDOWN_GRACE).await
    }

    /// [`ClusterNode::shutdown`] with a grace period of `grace` for in-flight requests
    /// (zero after a failure, when nothing is worth waiting for).
    pub async fn shutdown_within(self, grace: Duration) -> Result<()> {
        // Groups led here are handed to other replicas first, while this node still
        // serves (forwarding to the new leader, naming it): a rolling restart then costs
        // no election timeout, and clients move before the node goes.
        if let Some(replicas) = &self.replicas {
            replicas.hand_over(grace.min(HAND_OVER_WAIT)).await;
        }
        let _ = self.stop.send(());
        self.stop_maintenance.send_replace(true);
        // Reads waiting for this replica's watermark fail now (`Unavailable`: the client
        // reads from another replica) rather than at their deadline: once this node stops
        // taking requests its replicas stop hearing from their leaders.
        if let Some(storage) = &self.storage {
            storage.close();
        }
        let ClusterNode {
            server,
            started,
            journals,
            replicas,
            maintenance_error,
            ..
        } = self;
        let mut errors = Vec::new();
        match replicas {
            // Requests in flight (a read waiting for this replica's watermark, a commit
            // waiting for its entry) finish while the feeds and the driver still run; then
            // no partition is served any more and the driver stops. A flush that never
            // returns must not hold the node.
            Some(replicas) => {
                errors.extend(drain(server, grace).await);
                started.finish().await;
                for leadership in replicas.leaders.leaderships.values() {
                    leadership.stop();
                }
                if tokio::time::timeout(grace, replicas.driver.stop())
                    .await
                    .is_err()
                {
                    errors.push(Error::Io(
                        "the replicated journals' driver did not stop in time".into(),
                    ));
                }
            }
            // Closing the journals ends their Tail streams, so the server can drain.
            None => {
                started.finish().await;
                for j in &journals {
                    if let Err(e) = j.close() {
                        errors.push(Error::from(e));
                    }
                }
                errors.extend(drain(server, grace).await);
            }
        }
        let first_error = maintenance_error.lock().take();
        first_error
            .or(errors.into_iter().next())
            .map_or(Ok(()), Err)
    }
}

/// Waits up to `grace` for the server's requests in flight, then drops them: a connection
/// that never finishes (its peer is gone) must not keep the node from stopping.
async fn drain(
    mut server: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    grace: Duration,
) -> Option<Error> {
    let served = match tokio::time::timeout(grace, &mut server).await {
        Ok(served) => served,
        Err(_) => {
            server.abort();
            Ok(Ok(()))
        }
    };
    match served {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(Error::Io(format!("server: {e}"))),
        Err(e) => Some(Error::Io(format!("server task: {e}"))),
    }
}
