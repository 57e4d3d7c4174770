//! A cluster node's replicated journals, as `journaldb serve` runs them (ARCHITECTURE §5;
//! issue 14): one Raft group per partition this node holds a replica of (group id =
//! partition + 1; group 0 is kept for the metadata group), all driven by one [`Driver`]
//! whose messages travel over `JournalService.Raft`; a [`Leadership`] per partition, which
//! serves the partition's adjudicator while this node leads its group; and [`Forwarding`],
//! the `AdjudicatorService` of such a node: a request for a partition led here is served
//! here, one for a partition led by another replica is forwarded there once (rule 6:
//! voters forward adjudicator requests to their leader), and anything else is refused
//! `Unavailable` naming the leader this node knows of (rule 8: clients learn leaders from
//! redirects).
//!
//! Replica logs are created only on a node's first start (a data directory without a
//! manifest) when it is told to bootstrap (`NodeEnv::bootstrap`), with the configured
//! voters. A node that has started before and finds a replica's log missing refuses to
//! start: its votes and acknowledgements were lost with the log, and a replica never
//! rejoins under its old Raft id (rule 3). A log whose voters are not the configured
//! replicas is refused too (the configuration was edited; membership changes are not
//! built yet, so a lost node cannot be replaced today: its groups go on with the others).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use journaldb::cluster::transport::lazy_channel;
use journaldb::{Error, Result};
use journaldb_adjudicator::Partition;
use journaldb_adjudicator::service::{AdjudicatorServer, Partitions};
use journaldb_journal::disk::Disk;
use journaldb_proto::pb::adjudicator_service_client::AdjudicatorServiceClient;
use journaldb_proto::pb::adjudicator_service_server::AdjudicatorService;
use journaldb_proto::pb::journal_service_client::JournalServiceClient;
use journaldb_proto::status::{ErrorKind, FORWARDED, LEADER};
use journaldb_proto::{Clock, MAX_MESSAGE_BYTES, PartitionId, pb};
use journaldb_raft::raft::StateRole;
use journaldb_raft::raft::prelude::ConfState;
use journaldb_raft::{
    Driver, DriverConfig, GroupId, GrpcInbox, GrpcTransport, LogError, LogId, LogOptions,
    LogWriter, NodeId, RaftLog, ReplicatedJournal,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{Leadership, Serving, TermLog};
use crate::config::{NodeConfig, TlsFiles};
use crate::env::{NodeEnv, peer};

/// How long a request forwarded to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The Raft group of partition `p`'s journal.
pub(crate) fn group_of(p: PartitionId) -> GroupId {
    GroupId(u64::from(p.get()) + 1)
}

/// Where partition `p`'s replica log lives in a node's data directory.
fn log_dir(config: &NodeConfig, p: u32) -> std::path::PathBuf {
    config.data_dir.join(format!("raft-{p}"))
}

fn log_error(e: LogError) -> Error {
    match e {
        LogError::Corruption { .. } | LogError::UnsupportedVersion { .. } => {
            Error::Corruption(e.to_string())
        }
        LogError::Io { .. } => Error::Io(e.to_string()),
        e => Error::InvalidArgument(e.to_string()),
    }
}

/// Opens this node's replica log of each of its partitions; on a node's first start
/// (`fresh`) creates them, each with the partition's configured replicas as its voters.
fn open_logs(config: &NodeConfig, disk: &Arc<dyn Disk>, fresh: bool) -> Result<Vec<LogWriter>> {
    let me = NodeConfig::raft_id_of(&config.node);
    let cluster = config.cluster_id();
    config
        .me()
        .partitions
        .iter()
        .map(|&p| {
            let id = LogId {
                cluster,
                group: group_of(PartitionId::new(p)).0,
                replica: me,
            };
            let dir = log_dir(config, p);
            let mut voters = config
                .replicas(p)
                .iter()
                .map(|n| NodeConfig::raft_id_of(&n.name))
                .collect::<Vec<_>>();
            voters.sort_unstable();
            match RaftLog::open(disk.clone(), &dir, id, LogOptions::default()) {
                Ok(writer) => {
                    let state = writer.log().state();
                    let mut logged = state.conf_at(u64::MAX).voters;
                    logged.sort_unstable();
                    if logged != voters {
                        return Err(Error::InvalidArgument(format!(
                            "partition {p}: the replica log in {} has voters {logged:?}, the \
                             configuration lists {voters:?}: the nodes of a replicated \
                             partition cannot be edited in the configuration",
                            dir.display()
                        )));
                    }
                    Ok(writer)
                }
                Err(LogError::NoLog { .. }) if fresh => {
                    let conf = ConfState::from((voters, vec![]));
                    RaftLog::create(disk.clone(), &dir, id, LogOptions::default(), conf)
                        .map_err(log_error)
                }
                Err(LogError::NoLog { dir }) => Err(Error::InvalidArgument(format!(
                    "this node has started before, but its replica of partition {p} has no \
                     log in {}: what it voted and acknowledged was lost with it, so it must \
                     not rejoin under its old id; replace the node (a new name in the \
                     configuration, an empty data directory)",
                    dir.display()
                ))),
                Err(e) => Err(log_error(e)),
            }
        })
        .collect()
}

/// This node's replicated journals: the driver of their groups, and who serves what.
#[derive(Debug)]
pub(crate) struct Replicas {
    pub(crate) driver: Driver,
    pub(crate) leaders: Leaders,
}

impl Replicas {
    /// This node's replica of each partition's journal.
    pub(crate) fn journals(&self) -> Vec<(PartitionId, ReplicatedJournal)> {
        self.leaders
            .leaderships
            .keys()
            .filter_map(|&p| Some((p, self.driver.journal(group_of(p))?.clone())))
            .collect()
    }

    /// Opens (`fresh`: creates) this node's replica logs, starts their driver and follows
    /// each partition's leadership. Must run within the node's runtime.
    pub(crate) fn start(
        config: &NodeConfig,
        env: &NodeEnv,
        tls: Option<&TlsFiles>,
        fresh: bool,
    ) -> Result<Replicas> {
        let me = NodeConfig::raft_id_of(&config.node);
        let cluster = config.cluster_id();
        let logs = open_logs(config, &env.disk, fresh)?;
        let mut peers = BTreeMap::new();
        let mut urls = BTreeMap::new();
        for n in &config.nodes {
            let id = NodeConfig::raft_id_of(&n.name);
            urls.insert(id, n.url());
            if id != me {
                peers.insert(
                    id,
                    lazy_channel(&peer(&n.url(), tls)?, env.connector.as_ref()),
                );
            }
        }
        let raft_peers = peers.clone();
        let connect = Arc::new(move |to: NodeId| {
            let channel = raft_peers.get(&to)?.clone();
            Some(
                JournalServiceClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
        });
        let transport = Arc::new(GrpcTransport::new(cluster, me, connect));
        let mut driver_config = DriverConfig::new(me, cluster);
        driver_config.flusher = env.journal.flusher;
        driver_config.sync_latency = env.raft_sync_latency;
        driver_config.planted = env.adjudicator.planted_bug;

        if let Some(tick) = env.raft_tick {
            driver_config.tick = tick;
        }
        let driver = Driver::start(driver_config, logs, transport)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let n = config.partitions;
        let mut leaderships = BTreeMap::new();
        for &p in &config.me().partitions {
            let id = PartitionId::new(p);
            let journal = driver
                .journal(group_of(id))
                .expect("the driver runs every group whose log it was given")
                .clone();
            let owns: super::Owns =
                Arc::new(move |key: &[u8]| journaldb::partition::partition_of(key, n) == id);
            let leadership = Leadership::spawn(
                journal,
                me,
                id,
                env.adjudicator.clone(),
                owns,
                env.clock.clone(),
            );
            leaderships.insert(id, leadership);
        }
        let client = |c: Channel| {
            AdjudicatorServiceClient::new(c)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        };
        let leaders = Leaders {
            me,
            leaderships: Arc::new(leaderships),
            urls: Arc::new(urls),
            peers: Arc::new(peers.into_iter().map(|(id, c)| (id, client(c))).collect()),
        };
        Ok(Replicas { driver, leaders })
    }

    /// Where `JournalService.Raft` delivers this node's messages.
    pub(crate) fn inbox(&self, config: &NodeConfig) -> GrpcInbox {
        let groups = config
            .me()
            .partitions
            .iter()
            .map(|&p| group_of(PartitionId::new(p)));
        GrpcInbox::new(
            config.cluster_id(),
            NodeConfig::raft_id_of(&config.node),
            groups,
            self.driver.inbox(),
        )
    }

    /// Hands the leadership of every group led here to another replica, waiting up to
    /// `wait` for each to have left this node.
    pub(crate) async fn hand_over(&self, wait: Duration) {
        let journals: Vec<_> = self
            .leaders
            .leaderships
            .keys()
            .filter_map(|&p| self.driver.journal(group_of(p)))
            .collect();
        let _ = tokio::time::timeout(wait, async {
            for journal in journals {
                let mut status = journal.watch_status();
                loop {
                    let now = status.borrow_and_update().clone();
                    if now.role != StateRole::Leader || now.failed.is_some() {
                        break;
                    }
                    journal.step_down(now.term);
                    if status.changed().await.is_err() {
                        break;
                    }
                }
            }
        })
        .await;
    }

    /// Why a group stopped on this node, if one did (its log failed, or raft-rs panicked):
    /// the node then fails, so a supervisor restarts it and the log is recovered.
    pub(crate) fn failure(&self) -> Option<String> {
        self.leaders.leaderships.keys().find_map(|&p| {
            let status = self.driver.journal(group_of(p))?.status();
            status.failed.map(|why| format!("{p}: {why}"))
        })
    }
}

/// Which partitions this node serves now: those whose group it leads, each in its term.
#[derive(Debug, Clone)]
pub(crate) struct Leaders {
    me: NodeId,
    pub(crate) leaderships: Arc<BTreeMap<PartitionId, Leadership>>,
    /// Every node's address, by Raft id.
    urls: Arc<BTreeMap<NodeId, String>>,
    /// The adjudicator service of every other node.
    peers: Arc<BTreeMap<NodeId, AdjudicatorServiceClient<Channel>>>,
}

impl Leaders {
    /// The other replica to forward a request for `partition` to, and its address: its
    /// leader, if this node knows one and it is not this node.
    fn leader_elsewhere(
        &self,
        partition: u32,
    ) -> Option<(AdjudicatorServiceClient<Channel>, &str)> {
        let leadership = self.leaderships.get(&PartitionId::new(partition))?;
        match leadership.serving() {
            Serving::Elsewhere {
                leader: Some(leader),
            } if leader != self.me => {
                Some((self.peers.get(&leader)?.clone(), self.urls.get(&leader)?))
            }
            _ => None,
        }
    }
}

impl Partitions for Leaders {
    type Log = TermLog;

    fn serving(&self, id: PartitionId) -> std::result::Result<Arc<Partition<TermLog>>, Status> {
        let Some(leadership) = self.leaderships.get(&id) else {
            return Err(
                ErrorKind::InvalidArgument.status(format!("this node holds no replica of {id}"))
            );
        };
        match leadership.serving() {
            Serving::Leader(partition) => Ok(partition),
            Serving::Elsewhere { leader } => {
                let url = leader
                    .filter(|l| *l != self.me)
                    .and_then(|l| self.urls.get(&l));
                let mut status = match url {
                    Some(url) => ErrorKind::Unavailable
                        .status(format!("{id} is led by {url}, not by this replica")),
                    None if leader == Some(self.me) => ErrorKind::Unavailable
                        .status(format!("{id}: this replica is taking over; retry")),
                    None => ErrorKind::Unavailable
                        .status(format!("{id} has no leader this replica knows of; retry")),
                };
                if let Some(value) = url.and_then(|u| u.parse().ok()) {
                    status.metadata_mut().insert(LEADER, value);
                }
                Err(status)
            }
            Serving::Failed(reason) => Err(ErrorKind::Unavailable
                .status(format!("{id}: this replica cannot serve it: {reason}"))),
        }
    }

    fn ids(&self) -> Vec<PartitionId> {
        self.leaderships
            .iter()
            .filter(|(_, l)| matches!(l.serving(), Serving::Leader(_)))
            .map(|(&p, _)| p)
            .collect()
    }
}

/// The `AdjudicatorService` of a node with replicated journals (see the module docs).
#[derive(Debug)]
pub(crate) struct Forwarding {
    pub(crate) local: AdjudicatorServer<Arc<dyn Clock>, Leaders>,
    pub(crate) leaders: Leaders,
}

/// `request` as forwarded: marked, so it is not forwarded again, with its own deadline.
fn forwarded<T>(request: Request<T>) -> Request<T> {
    let mut next = Request::new(request.into_inner());
    next.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    next.set_timeout(FORWARD_TIMEOUT);
    next
}

impl Forwarding {
    /// The leader to forward a request for `partition` to, unless it was forwarded already.
    fn forward<T>(&self, request: &Request<T>, partition: u32) -> Option<Leader<'_>> {
        if request.metadata().contains_key(FORWARDED) {
            return None;
        }
        let (client, url) = self.leaders.leader_elsewhere(partition)?;
        Some(Leader { client, url })
    }
}

/// The leader a request is forwarded to.
struct Leader<'a> {
    client: AdjudicatorServiceClient<Channel>,
    url: &'a str,
}

impl Leader<'_> {
    /// The leader's reply, relayed; a successful one names the leader (`journaldb-leader`),
    /// so the client sends the partition's next requests there directly.
    fn relay<T>(&self, reply: Reply<T>) -> Reply<T> {
        reply.map(|mut response| {
            if let Ok(value) = self.url.parse() {
                response.metadata_mut().insert(LEADER, value);
            }
            response
        })
    }
}

type Reply<T> = std::result::Result<Response<T>, Status>;

// A forwarded request's reply is relayed as it came, a status too: one without a journaldb
// kind (the leader did not answer in time, the connection broke) is, on the commit path,
// `CommitUnknown` to the client, which asks again by transaction id.
#[tonic::async_trait]
impl AdjudicatorService for Forwarding {
    async fn commit(&self, request: Request<pb::CommitRequest>) -> Reply<pb::CommitReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.commit(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.commit(request).await,
        }
    }

    async fn prepare(&self, request: Request<pb::PrepareRequest>) -> Reply<pb::PrepareReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.prepare(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.prepare(request).await,
        }
    }

    async fn commit_prepared(
        &self,
        request: Request<pb::CommitPreparedRequest>,
    ) -> Reply<pb::CommitReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.commit_prepared(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.commit_prepared(request).await,
        }
    }

    async fn decide(&self, request: Request<pb::DecideRequest>) -> Reply<pb::DecideReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.decide(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.decide(request).await,
        }
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Reply<pb::StatusReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.status(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.status(request).await,
        }
    }

    async fn promise(&self, request: Request<pb::PromiseRequest>) -> Reply<pb::PromiseReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.promise(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.promise(request).await,
        }
    }
}
