//! A cluster node's replicated journals, as `journaldb serve` runs them (ARCHITECTURE §5;
//! issue 14): one Raft group per partition this node holds a replica of (group id =
//! partition + 1; group 0 is kept for the metadata group), all driven by one [`Driver`]
//! whose messages travel over `JournalService.Raft`; a [`Leadership`] per partition, which
//! serves the partition's adjudicator while this node leads its group; and the
//! `AdjudicatorService` of such a node ([`super::forwarding`]), which forwards a request
//! to the partition's leader when that is another replica.
//!
//! The node also holds a replica of the metadata group ([`MetadataGroup`], group 0) if it
//! is one of its voters, and reaches its peers at the addresses the metadata group gives
//! ([`PeerBook`]).
//!
//! Replica logs are created only on a node's first start (a data directory without a
//! manifest): when it is told to bootstrap (`NodeEnv::bootstrap`), with the configured
//! voters; when it joins (`NodeEnv::join`), as the replacement of a lost node the metadata
//! group already names, empty but for each group's first configuration, in which it is no
//! member (it never campaigns until the group's leader adds it). A node that has started
//! before and finds a replica's log missing refuses to start: its votes and
//! acknowledgements were lost with the log, and a replica never rejoins under its old Raft
//! id (rule 3). The members of a group are its log's: its configuration changes
//! (replacements) are Raft's, never the configuration file's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use journaldb::cluster::transport::lazy_channel;
use journaldb::{Error, Result};
use journaldb_journal::disk::Disk;
use journaldb_proto::pb::journal_service_client::JournalServiceClient;
use journaldb_proto::{MAX_MESSAGE_BYTES, PartitionId, pb};
use journaldb_raft::raft::StateRole;
use journaldb_raft::raft::prelude::ConfState;
use journaldb_raft::{
    Driver, DriverConfig, GroupId, GrpcInbox, GrpcTransport, LogError, LogId, LogOptions,
    LogWriter, NodeId, RaftLog, ReplicatedJournal,
};
use tonic::Request;

use super::Leadership;
use super::forwarding::Leaders;
use super::metadata::{self, METADATA, MetadataGroup, PeerBook};
use crate::config::{NodeConfig, TlsFiles};
use crate::env::{NodeEnv, peer};

/// The Raft group of partition `p`'s journal.
pub(crate) fn group_of(p: PartitionId) -> GroupId {
    GroupId(u64::from(p.get()) + 1)
}

/// Where group `group`'s replica log lives in a node's data directory.
fn log_dir(config: &NodeConfig, group: GroupId) -> std::path::PathBuf {
    match group.0.checked_sub(1) {
        Some(p) => config.data_dir.join(format!("raft-{p}")),
        None => config.data_dir.join("raft-meta"),
    }
}

/// How this start finds the node's replica logs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start<'a> {
    /// They exist (the node has started before).
    Restart,
    /// A new cluster's first start: create them with the configured voters.
    Bootstrap,
    /// A replacement node's first start: create them empty, from the topology, which names
    /// this node.
    Join(&'a pb::Metadata),
}

/// The groups this node holds a replica of, by the configuration (the metadata group if it
/// is one of partition 0's replicas, then its partitions'), and each one's configured
/// voters.
fn configured_groups(config: &NodeConfig) -> Vec<(GroupId, Vec<NodeId>)> {
    let voters = |p: u32| {
        let mut ids: Vec<NodeId> = config
            .replicas(p)
            .iter()
            .map(|n| NodeConfig::raft_id_of(&n.name))
            .collect();
        ids.sort_unstable();
        ids
    };
    let me = NodeConfig::raft_id_of(&config.node);
    let metadata = voters(0);
    metadata
        .contains(&me)
        .then(|| (METADATA, metadata.clone()))
        .into_iter()
        .chain(
            config
                .me()
                .partitions
                .iter()
                .map(|&p| (group_of(PartitionId::new(p)), voters(p))),
        )
        .collect()
}

/// The groups of a joining node: those the topology gives it, each with its first
/// voters; refused unless its configuration holds the same ones.
fn joining_groups(
    config: &NodeConfig,
    metadata: &pb::Metadata,
) -> Result<Vec<(GroupId, Vec<NodeId>)>> {
    let Some(groups) = metadata::groups_of(metadata, &config.node) else {
        return Err(Error::InvalidArgument(format!(
            "the cluster's topology (version {}) has no node named {}: record the \
             replacement first (`journaldb admin replace`)",
            metadata.version, config.node
        )));
    };
    let configured: Vec<u64> = configured_groups(config).iter().map(|(g, _)| g.0).collect();
    if configured != groups {
        return Err(Error::InvalidArgument(format!(
            "the cluster's topology gives {} the groups {groups:?}, its configuration              {configured:?}: start it with the configuration `journaldb admin replace` wrote",
            config.node
        )));
    }
    groups
        .iter()
        .map(|&g| {
            let voters = metadata::origin(metadata, GroupId(g)).ok_or_else(|| {
                Error::Corruption(format!("the topology has no first voters of group {g}"))
            })?;
            Ok((GroupId(g), voters))
        })
        .collect()
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

/// Opens this node's replica log of each of its groups; on a node's first start creates
/// them (see [`Start`]). The metadata group's comes first if this node holds one.
fn open_logs(config: &NodeConfig, disk: &Arc<dyn Disk>, start: Start) -> Result<Vec<LogWriter>> {
    let me = NodeConfig::raft_id_of(&config.node);
    let cluster = config.cluster_id();
    let groups = match start {
        Start::Join(metadata) => joining_groups(config, metadata)?,
        Start::Restart | Start::Bootstrap => configured_groups(config),
    };
    groups
        .into_iter()
        .map(|(group, voters)| {
            let id = LogId {
                cluster,
                group: group.0,
                replica: me,
            };
            let dir = log_dir(config, group);
            match RaftLog::open(disk.clone(), &dir, id, LogOptions::default()) {
                Ok(writer) => {
                    // A node the group removed (it was replaced) never serves again.
                    let state = writer.log().state();
                    let member = |c: &ConfState| {
                        [&c.voters, &c.learners, &c.voters_outgoing, &c.learners_next]
                            .iter()
                            .any(|ids| ids.contains(&me))
                    };
                    let was = state.confs.iter().any(|(_, c)| member(c));
                    if was && !member(&state.conf_at(u64::MAX)) {
                        return Err(Error::InvalidArgument(format!(
                            "this node is no longer a member of {group:?} (its log in {} \
                             records its removal): it was replaced, and a replaced node \
                             never serves again",
                            dir.display()
                        )));
                    }
                    Ok(writer)
                }
                Err(LogError::NoLog { .. }) if !matches!(start, Start::Restart) => {
                    let conf = ConfState::from((voters, vec![]));
                    RaftLog::create(disk.clone(), &dir, id, LogOptions::default(), conf)
                        .map_err(log_error)
                }
                Err(LogError::NoLog { dir }) => Err(Error::InvalidArgument(format!(
                    "this node has started before, but its replica of {group:?} has no log in \
                     {}: what it voted and acknowledged was lost with it, so it must not \
                     rejoin under its old id; replace the node (`journaldb admin replace`: a \
                     new name, an empty data directory)",
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
    /// This node's replica of the metadata group, if it holds one.
    pub(crate) metadata: Option<MetadataGroup>,
    /// How this node reaches the others.
    pub(crate) peers: PeerBook,
    /// Why this node must not run: the cluster replaced it ([`Replicas::fail_if_retired`]).
    retired: Arc<parking_lot::Mutex<Option<String>>>,
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

    /// Opens (on a first start, creates: see [`Start`]) this node's replica logs, starts
    /// their driver, the metadata group's replica and a follower of each partition's
    /// leadership. Must run within the node's runtime.
    pub(crate) fn start(
        config: &NodeConfig,
        env: &NodeEnv,
        tls: Option<&TlsFiles>,
        start: Start,
    ) -> Result<Replicas> {
        let me = NodeConfig::raft_id_of(&config.node);
        let cluster = config.cluster_id();
        let logs = open_logs(config, &env.disk, start)?;
        let holds_metadata = logs.iter().any(|l| l.log().id().group == METADATA.0);
        let peers = PeerBook::new(
            me,
            config
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.url()))
                .chain(match start {
                    Start::Join(m) => m
                        .nodes
                        .iter()
                        .map(|n| (n.name.clone(), n.address.clone()))
                        .collect(),
                    Start::Restart | Start::Bootstrap => Vec::new(),
                }),
            connector(env, tls),
        )?;
        let raft_peers = peers.clone();
        let connect = Arc::new(move |to: NodeId| {
            let channel = raft_peers.channel(to)?;
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
        let leaders = Leaders {
            me,
            leaderships: Arc::new(leaderships),
            peers: peers.clone(),
        };
        let metadata = holds_metadata.then(|| {
            let journal = driver
                .journal(METADATA)
                .expect("the driver runs every group whose log it was given")
                .clone();
            MetadataGroup::spawn(journal, metadata::genesis(config), peers.clone())
        });
        if let Some(metadata) = &metadata {
            let journals = std::iter::once(METADATA)
                .chain(leaders.leaderships.keys().map(|&p| group_of(p)))
                .filter_map(|g| driver.journal(g).cloned())
                .collect();
            tokio::spawn(finish_replacements(journals, metadata.clone()));
        }
        Ok(Replicas {
            driver,
            leaders,
            metadata,
            peers,
            retired: Arc::default(),
        })
    }

    /// Asks the other nodes, in the background, for the cluster's topology, and fails this
    /// node (see [`Replicas::failure`]) if it names this node retired — a replaced node
    /// never comes back under its name (rule 3), whether bootstrapped on an empty disk or
    /// restarted on the disk it had before it was replaced (if its logs did not receive
    /// its removal). It could not harm the groups (they no longer count it, and an empty
    /// log wins no vote), but it must not look as if it served. In the background, as the
    /// other nodes of a new cluster are starting too.
    pub(crate) fn fail_if_retired(
        &self,
        config: &NodeConfig,
        env: &NodeEnv,
        tls: Option<&TlsFiles>,
    ) {
        let (config, env, tls) = (config.clone(), env.clone(), tls.cloned());
        let retired = self.retired.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                if let Ok(metadata) = fetch_metadata(&config, &env, tls.as_ref()).await {
                    if metadata.retired.contains(&config.node) {
                        *retired.lock() = Some(format!(
                            "the cluster replaced {} (topology version {}): a replaced node \
                             never comes back under its name; start a new node under a new \
                             name (`journaldb admin replace`)",
                            config.node, metadata.version
                        ));
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    /// Where `JournalService.Raft` delivers this node's messages.
    pub(crate) fn inbox(&self, config: &NodeConfig) -> GrpcInbox {
        let groups = self.metadata.as_ref().map(|_| METADATA).into_iter().chain(
            config
                .me()
                .partitions
                .iter()
                .map(|&p| group_of(PartitionId::new(p))),
        );
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
            .chain(self.metadata.as_ref().map(MetadataGroup::journal))
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
        if let Some(why) = self.retired.lock().clone() {
            return Some(why);
        }
        let metadata = self.metadata.as_ref().and_then(|m| {
            let why = m.journal().status().failed?;
            Some(format!("the metadata group: {why}"))
        });
        metadata.or_else(|| {
            self.leaders.leaderships.keys().find_map(|&p| {
                let status = self.driver.journal(group_of(p))?.status();
                status.failed.map(|why| format!("{p}: {why}"))
            })
        })
    }
}

/// How often a node looks for replacements to finish in the groups it leads.
const FINISH_EVERY: Duration = Duration::from_millis(500);
/// How long a group's leader waits for a new replica to catch up, per attempt.
pub(crate) const CATCH_UP_PATIENCE: Duration = Duration::from_secs(20);

/// Finishes, on every group this node leads, the replacements the metadata group
/// recorded: a voter whose name is retired is replaced by the node that holds the group in
/// its stead (`replace_voter_if`: learner, catch-up, joint change, the record checked again
/// before the swap). So a replacement whose operator stopped after `ReplaceNode` — or
/// chained replacements — still finish, and `ReplaceReplica` only hurries them. Ends when
/// the metadata group stops here (the driver stopped).
async fn finish_replacements(journals: Vec<ReplicatedJournal>, metadata: MetadataGroup) {
    let mut every = tokio::time::interval(FINISH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if metadata.journal().status().failed.is_some() {
            return;
        }
        let Some(now) = metadata.metadata() else {
            continue;
        };
        for journal in &journals {
            let status = journal.status();
            if status.role != StateRole::Leader || status.failed.is_some() {
                continue;
            }
            let Some((old, new)) = pending_replacement(&now, journal.group(), &status.members)
            else {
                continue;
            };
            let still = || {
                let now = metadata.metadata().ok_or("no topology here")?;
                match pending_replacement(&now, journal.group(), &journal.status().members) {
                    Some(pair) if pair == (old, new) => Ok(()),
                    _ => Err(format!("the topology no longer replaces {old} by {new}")),
                }
            };
            // Refusals and timeouts are tried again next round.
            let _ = journal
                .replace_voter_if(old, new, CATCH_UP_PATIENCE, still)
                .await;
        }
    }
}

/// In `group`, with `members`: a voter the topology retired, and a node the topology gives
/// the group that is no voter of it yet — a replacement to finish.
fn pending_replacement(
    metadata: &pb::Metadata,
    group: GroupId,
    members: &journaldb_raft::Members,
) -> Option<(NodeId, NodeId)> {
    let retired: Vec<NodeId> = metadata
        .retired
        .iter()
        .map(|n| NodeConfig::raft_id_of(n))
        .collect();
    let old = members
        .voters
        .iter()
        .chain(&members.outgoing)
        .find(|v| retired.contains(v))?;
    let new = metadata
        .nodes
        .iter()
        .filter(|n| n.groups.contains(&group.0))
        .map(|n| NodeConfig::raft_id_of(&n.name))
        .find(|id| !members.voters.contains(id))?;
    Some((*old, new))
}

/// How a node opens a channel to a peer's address: lazily, over TLS if the cluster uses
/// it, through the environment's connector.
pub(crate) fn connector(env: &NodeEnv, tls: Option<&TlsFiles>) -> metadata::Connect {
    let (tls, connector) = (tls.cloned(), env.connector.clone());
    Arc::new(move |url: &str| Ok(lazy_channel(&peer(url, tls.as_ref())?, connector.as_ref())))
}

/// Refuses a join that would bring a voter back with an empty log (rule 3): a name that
/// was one of a group's first voters (an original node that lost its disk), or one a
/// running node counts as a voter of some group already (a replacement that was promoted,
/// then lost its disk). Such a node must be replaced under a new name. A learner that never
/// voted may join again.
pub(crate) async fn check_join(
    config: &NodeConfig,
    metadata: &pb::Metadata,
    env: &NodeEnv,
    tls: Option<&TlsFiles>,
) -> Result<()> {
    use journaldb_proto::pb::cluster_service_client::ClusterServiceClient;
    let me = NodeConfig::raft_id_of(&config.node);
    let lost = |why: String| {
        Error::InvalidArgument(format!(
            "{} {why}: a voter that lost its disk never rejoins under its name; replace it \
             under a new one (`journaldb admin replace`)",
            config.node
        ))
    };
    if let Some(origin) = metadata.origins.iter().find(|o| o.voters.contains(&me)) {
        return Err(lost(format!(
            "was one of group {}'s first voters",
            origin.group
        )));
    }
    let connect = connector(env, tls);
    for node in metadata.nodes.iter().filter(|n| n.name != config.node) {
        let mut request = Request::new(pb::ReplicasRequest {});
        request.set_timeout(Duration::from_secs(2));
        let Ok(reply) = ClusterServiceClient::new(connect(&node.address)?)
            .replicas(request)
            .await
        else {
            continue;
        };
        if let Some(r) = reply
            .get_ref()
            .replicas
            .iter()
            .find(|r| r.voters.contains(&me) || r.outgoing.contains(&me))
        {
            return Err(lost(format!(
                "is a voter of group {} already (so {} says)",
                r.group, node.name
            )));
        }
    }
    Ok(())
}

/// Reads the cluster's topology from the configuration's other nodes, for a node joining
/// the cluster (see [`Start::Join`]).
pub(crate) async fn fetch_metadata(
    config: &NodeConfig,
    env: &NodeEnv,
    tls: Option<&TlsFiles>,
) -> Result<pb::Metadata> {
    let urls: Vec<String> = config
        .nodes
        .iter()
        .filter(|n| n.name != config.node)
        .map(|n| n.url())
        .collect();
    metadata::fetch(&urls, &connector(env, tls)).await
}
