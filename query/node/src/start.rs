//! What a [`ClusterNode`](crate::ClusterNode) starts for each of its roles: its
//! partitions' vote resolution and heartbeats (on a replicated journal's leader only, in
//! its term), the journals' truncation rounds, and the storage replica with a feed from
//! every partition's journal. The node itself (listener, services, shutdown) is
//! [`crate::node`]'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use journaldb_adjudicator::{Partition, PartitionLog};
use journaldb_proto::pb::journal_service_client::JournalServiceClient;
use journaldb_proto::pb::storage_service_server::StorageServiceServer;
use journaldb_proto::{Clock, MAX_MESSAGE_BYTES, PartitionId, PlantedBug};
use journaldb_storage::follow::{self, RemoteJournal};
use journaldb_storage::service::StorageServer;
use journaldb_storage::{Engine, Faulty, StorageNode};
use tonic::transport::Channel;

use journaldb::Result;
use journaldb::cluster::transport::lazy_channel;

use crate::config::{NodeConfig, TlsFiles};
use crate::env::{NodeEnv, peer};
use crate::maintenance::{LastError, Maintenance, Topology};
use crate::replicated::roles::{Replicas, group_of};
use crate::replicated::{ReplicaSource, Serving};
use crate::resolver::Resolver;
use crate::tasks::{Started, Tasks};

/// Deadline of a participant's `Status` question to a coordinator on another node.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before a storage feed reconnects to a journal.
const FEED_RETRY: Duration = Duration::from_millis(100);
/// Heartbeat intervals without a record after which a feed leaves the voter it tails
/// (ARCHITECTURE §5 rule 7), and the least such wait.
const FEED_STALL_HEARTBEATS: u32 = 25;
const FEED_STALL_MIN: Duration = Duration::from_secs(2);

/// A storage replica's gRPC service.
type StorageService = StorageServiceServer<StorageServer<Box<dyn Engine>>>;

/// A storage replica: its node, and the service over it.
type Storage = (Arc<StorageNode<Box<dyn Engine>>>, StorageService);

/// The background tasks of this node's partitions: resolution of overdue votes, and the
/// heartbeat that keeps storage watermarks moving and the conflict window bounded.
fn partition_tasks(
    config: &NodeConfig,
    env: &NodeEnv,
    tls: Option<&TlsFiles>,
    partitions: &[Arc<Partition>],
) -> Result<Tasks> {
    let mut tasks = Tasks::default();
    // Votes left undecided — by a crash here, or by a client that died mid-protocol —
    // are resolved once older than the vote timeout (a replayed vote counts from its
    // τ), by asking their coordinators: the same loop serves both.
    let resolver = Resolver {
        local: partitions.to_vec(),
        config: config.clone(),
        channels: coordinator_channels(config, env, tls)?,
        clock: env.clock.clone(),
    };
    let every = resolve_every(env);
    for part in partitions {
        tasks.spawn(resolver.clone().run(part.clone(), every));
        tasks.spawn(heartbeat(
            part.clone(),
            env.clock.clone(),
            env.heartbeat_interval,
        ));
    }
    Ok(tasks)
}

/// How often a partition looks for votes undecided past the vote timeout.
fn resolve_every(env: &NodeEnv) -> Duration {
    (env.adjudicator.vote_timeout / 4).max(Duration::from_millis(10))
}

/// Per partition, the channels a resolver asks its coordinator through, in order: its
/// node; with replicated journals this node first if it holds a replica (it forwards to
/// the leader), then every other replica.
fn coordinator_channels(
    config: &NodeConfig,
    env: &NodeEnv,
    tls: Option<&TlsFiles>,
) -> Result<Arc<Vec<Vec<Channel>>>> {
    let channels = (0..config.partitions)
        .map(|p| {
            let mut replicas = config.replicas(p);
            replicas.sort_by_key(|n| n.name != config.node);
            replicas
                .iter()
                .map(|n| {
                    let endpoint = peer(&n.url(), tls)?.timeout(RESOLVE_TIMEOUT);
                    Ok(lazy_channel(&endpoint, env.connector.as_ref()))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(channels))
}

/// With replicated journals: for each partition this node holds a replica of, whenever it
/// serves the partition in a term, the heartbeat and vote resolution of that term's
/// adjudicator (they end with the term).
fn replicated_tasks(
    config: &NodeConfig,
    env: &NodeEnv,
    tls: Option<&TlsFiles>,
    replicas: &Replicas,
) -> Result<Tasks> {
    let mut tasks = Tasks::default();
    let resolver: Resolver<crate::replicated::TermLog> = Resolver {
        local: Vec::new(),
        config: config.clone(),
        channels: coordinator_channels(config, env, tls)?,
        clock: env.clock.clone(),
    };
    let (every, clock, interval) = (
        resolve_every(env),
        env.clock.clone(),
        env.heartbeat_interval,
    );
    for leadership in replicas.leaders.leaderships.values() {
        let mut watch = leadership.watch();
        let (resolver, clock) = (resolver.clone(), clock.clone());
        tasks.spawn(async move {
            loop {
                let serving = watch.borrow_and_update().clone();
                if let Serving::Leader(part) = serving {
                    // Until the term's adjudicator steps down, or what is served changes.
                    let term = async {
                        tokio::join!(
                            heartbeat(part.clone(), clock.clone(), interval),
                            resolver.clone().run(part, every)
                        )
                    };
                    tokio::select! {
                        biased;
                        changed = watch.changed() => match changed {
                            Ok(()) => continue,
                            Err(_) => return,
                        },
                        _ = term => {}
                    }
                }
                if watch.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(tasks)
}

/// Appends a heartbeat whenever `part`'s journal has been idle for `interval`, and about
/// once a second forgets conflicts older than the longest transaction, so the window's
/// memory stays bounded. Ends when the partition steps down.
async fn heartbeat<L: PartitionLog>(
    part: Arc<Partition<L>>,
    clock: Arc<dyn Clock>,
    interval: Duration,
) {
    let rounds_per_second =
        (Duration::from_secs(1).as_nanos() / interval.as_nanos().max(1)).max(1) as u64;
    let mut tick = tokio::time::interval(interval);
    for round in 0u64.. {
        tick.tick().await;
        if part.promise_durable(clock.now().earliest).await.is_err() {
            return; // stepped down: nothing more to promise
        }
        if round % rounds_per_second == 0 {
            part.adjudicator().advance_horizon(clock.now());
        }
    }
}

/// The maintenance of this node (its journals' truncation rounds, started here; a storage
/// replica's checkpoints, started with it), its loops, and the switch that stops them.
fn start_truncation(
    config: &NodeConfig,
    env: &NodeEnv,
    tls: Option<&TlsFiles>,
    partitions: &[Arc<Partition>],
    replicated: Option<&Replicas>,
    started: &mut Started,
) -> Result<(Maintenance, tokio::sync::watch::Sender<bool>)> {
    let stop = tokio::sync::watch::Sender::new(false);
    let maintenance = Maintenance {
        clock: env.clock.clone(),
        retention: config.retention(),
        every: config.checkpoint_interval(),
        blocking: env.journal.flusher,
        last_error: LastError::default(),
        stop: stop.subscribe(),
    };
    let replicas = config
        .nodes
        .iter()
        .filter(|n| n.storage)
        .map(|n| {
            let endpoint = peer(&n.url(), tls)?.timeout(RESOLVE_TIMEOUT);
            Ok(lazy_channel(&endpoint, env.connector.as_ref()))
        })
        .collect::<Result<Vec<_>>>()?;
    if !partitions.is_empty() {
        started
            .maintenance
            .spawn(maintenance.clone().truncate(partitions.to_vec(), replicas));
    }
    if let Some(replicated) = replicated {
        let topology = Topology {
            metadata: replicated.metadata.clone(),
            urls: config
                .nodes
                .iter()
                .filter(|n| n.name != config.node)
                .map(|n| n.url())
                .collect(),
            connect: crate::replicated::roles::connector(env, tls),
            channels: BTreeMap::new(),
        };
        started.maintenance.spawn(
            maintenance
                .clone()
                .truncate_replicated(replicated.leaders.clone(), topology),
        );
    }
    Ok((maintenance, stop))
}

/// The storage replica: its engine, a feed from every partition's journal wherever it
/// lives (this node's own replica of it, or another node's), its maintenance rounds, and
/// the `StorageService` that serves it.
fn start_storage(
    config: &NodeConfig,
    env: &NodeEnv,
    tls: Option<&TlsFiles>,
    replicas: Option<&Replicas>,
    engine: Box<dyn Engine>,
    maintenance: &Maintenance,
    started: &mut Started,
) -> Result<Storage> {
    let ids: Vec<PartitionId> = (0..config.partitions).map(PartitionId::new).collect();
    let mut node = StorageNode::open(engine, &ids)?;
    if env.storage_server.planted_bug == Some(PlantedBug::ReleaseBeforeWrite) {
        node = node.plant_release_before_write();
    }
    let node = Arc::new(node);
    for &p in &ids {
        // With replicated journals, from this node's own replica if it holds one: what is
        // committed and durable here, whoever leads.
        if let Some(journal) = replicas.and_then(|r| r.driver.journal(group_of(p))) {
            let (node, source) = (node.clone(), ReplicaSource::new(journal.clone()));
            // Ends only if the group stops here (the node then fails and restarts).
            started.feeds.spawn(async move {
                let _ = follow::feed(&node, p, source).await;
            });
            continue;
        }
        // Otherwise from the journal's node, or from any voter of a replicated journal
        // (the feeds of the partitions start at different voters).
        let servers = match replicas {
            Some(_) => config.replicas(p.get()),
            None => vec![config.owner(p.get())],
        };
        let clients = servers
            .iter()
            .map(|n| {
                let channel = lazy_channel(&peer(&n.url(), tls)?, env.connector.as_ref());
                Ok(JournalServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
            })
            .collect::<Result<Vec<_>>>()?;
        let node = node.clone();
        // A journal with a leader gets a record at least every heartbeat interval.
        let stall = (env.heartbeat_interval * FEED_STALL_HEARTBEATS).max(FEED_STALL_MIN);
        let cluster = config.cluster_id();
        started.feeds.spawn(async move {
            // Ends when the journal closes; an invariant break stops it (the node
            // then serves reads only up to its watermark, never a wrong history).
            let source = RemoteJournal::from_any(clients, p.get() as usize, p, FEED_RETRY)
                .stall_after(stall)
                .of_cluster(cluster);
            let _ = follow::feed(&node, p, source).await;
        });
    }
    started
        .maintenance
        .spawn(maintenance.clone().checkpoint(node.clone()));
    let service = StorageServiceServer::new(
        StorageServer::new(node.clone(), env.storage_server.clone())
            .with_clock(env.clock.clone())
            .with_cluster(config.cluster_id()),
    )
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    Ok((node, service))
}

/// Opens the storage replica's engine, if this node is one.
pub(crate) fn open_engine(config: &NodeConfig, env: &NodeEnv) -> Result<Option<Box<dyn Engine>>> {
    if !config.me().storage {
        return Ok(None);
    }
    let engine = env
        .storage
        .open(&config.data_dir, config.latest_cache_bytes())?;
    Ok(Some(match &env.storage_faults {
        Some(faults) => Box::new(Faulty::new(engine, faults.clone())),
        None => engine,
    }))
}

/// Starts every role's background tasks into `started`: the partitions', maintenance and,
/// on a storage replica, its feeds; returns the maintenance settings, its stop switch and
/// the storage service.
pub(crate) fn start_roles(
    config: &NodeConfig,
    env: &NodeEnv,
    tls: Option<&TlsFiles>,
    partitions: &[Arc<Partition>],
    replicas: Option<&Replicas>,
    engine: Option<Box<dyn Engine>>,
    started: &mut Started,
) -> Result<(
    Maintenance,
    tokio::sync::watch::Sender<bool>,
    Option<Storage>,
)> {
    started.partitions = match replicas {
        Some(replicas) => replicated_tasks(config, env, tls, replicas)?,
        None => partition_tasks(config, env, tls, partitions)?,
    };
    let (maintenance, stop) = start_truncation(config, env, tls, partitions, replicas, started)?;
    let storage = match engine {
        Some(engine) => Some(start_storage(
            config,
            env,
            tls,
            replicas,
            engine,
            &maintenance,
            started,
        )?),
        None => None,
    };

    Ok((maintenance, stop, storage))
}
