//! The node's `ClusterService`: the topology clients route by (from the metadata group
//! once this node applied it, else from its configuration), the state of the Raft groups
//! this node holds replicas of, as it sees them (what `journaldb admin status` gathers
//! from every node), and the replacement of a lost node (`journaldb admin replace`): the
//! record in the metadata group, then each group's configuration change, each on its
//! group's leader — a node that does not lead forwards the request there once.

use std::collections::BTreeMap;
use std::time::Duration;

use journaldb_proto::pb;
use journaldb_proto::pb::cluster_service_client::ClusterServiceClient;
use journaldb_proto::pb::cluster_service_server::ClusterService;
use journaldb_proto::status::{ErrorKind, FORWARDED, LEADER};
use journaldb_raft::raft::StateRole;
use journaldb_raft::{GroupId, NodeId, ReplicatedJournal, ReplicationError};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::config::NodeConfig;
use crate::replicated::forwarding::forwarded_within;
use crate::replicated::metadata::{self, METADATA, MetadataGroup, PeerBook, ProposeError};
use crate::replicated::roles::{CATCH_UP_PATIENCE, Replicas};

/// How long the node a replacement retires has to answer that it runs.
const ALIVE_PROBE: Duration = Duration::from_secs(1);
/// How long a request forwarded to a group's leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

type Reply<T> = std::result::Result<Response<T>, Status>;

/// What the node's `ClusterService` answers from.
pub(crate) struct ClusterInfo {
    /// The topology by the configuration: what clients get until the metadata group's is
    /// applied here (and on a single-replica cluster, always).
    topology: pb::GetTopologyReply,
    /// This node's name and Raft id.
    name: String,
    node: u64,
    /// Every group it holds a replica of, the metadata group included.
    groups: BTreeMap<GroupId, ReplicatedJournal>,
    metadata: Option<MetadataGroup>,
    peers: Option<PeerBook>,
}

impl ClusterInfo {
    pub(crate) fn new(config: &NodeConfig, replicas: Option<&Replicas>) -> ClusterInfo {
        let journals = replicas.map(Replicas::journals).unwrap_or_default();
        let metadata = replicas.and_then(|r| r.metadata.clone());
        let groups = journals
            .iter()
            .map(|(p, j)| (crate::replicated::roles::group_of(*p), j.clone()))
            .chain(metadata.iter().map(|m| (METADATA, m.journal().clone())))
            .collect();
        ClusterInfo {
            topology: topology(config),
            name: config.node.clone(),
            node: NodeConfig::raft_id_of(&config.node),
            groups,
            metadata,
            peers: replicas.map(|r| r.peers.clone()),
        }
    }

    /// The metadata group's topology as applied here.
    fn applied(&self) -> std::result::Result<std::sync::Arc<pb::Metadata>, Status> {
        let Some(group) = &self.metadata else {
            return Err(ErrorKind::Unavailable
                .status("this node holds no replica of the metadata group; ask another"));
        };
        group.metadata().ok_or_else(|| {
            ErrorKind::Unavailable.status("the metadata group has no topology here yet; retry")
        })
    }

    /// The `ClusterService` of `leader`, to forward `request` to once; else the refusal
    /// that names the leader (if known).
    fn leader<T>(
        &self,
        request: &Request<T>,
        leader: Option<NodeId>,
        what: &str,
    ) -> std::result::Result<ClusterServiceClient<Channel>, Status> {
        let url = leader.and_then(|l| self.peers.as_ref()?.url(l));
        let channel = leader
            .filter(|l| *l != self.node)
            .and_then(|l| self.peers.as_ref()?.channel(l));
        match channel {
            Some(channel) if !request.metadata().contains_key(FORWARDED) => {
                Ok(ClusterServiceClient::new(channel))
            }
            _ => {
                let mut status = ErrorKind::Unavailable.status(match &url {
                    Some(url) => format!("{what} is led by {url}, not by this node"),
                    None => format!("{what} has no leader this node knows of; retry"),
                });
                if let Some(value) = url.and_then(|u| u.parse().ok()) {
                    status.metadata_mut().insert(LEADER, value);
                }
                Err(status)
            }
        }
    }
}

impl ClusterInfo {
    /// Refuses to retire node `old` while it runs: it answers at its address as itself
    /// (its Raft id). A replacement is for a node that is lost; a running one is stopped
    /// first. (A new node already serving at the old address answers as itself, not as
    /// `old`.)
    async fn refuse_if_alive(&self, metadata: &pb::Metadata, old: &str) -> Result<(), Status> {
        let Some(node) = metadata.nodes.iter().find(|n| n.name == old) else {
            return Ok(());
        };
        let id = NodeConfig::raft_id_of(old);
        let channel = match self.peers.as_ref().and_then(|p| p.channel(id)) {
            Some(channel) => channel,
            None if id == self.node => {
                return Err(invalid(format!("{old} is this node, which runs")));
            }
            None => return Ok(()),
        };
        let mut request = Request::new(pb::ReplicasRequest {});
        request.set_timeout(ALIVE_PROBE);
        let answer = ClusterServiceClient::new(channel).replicas(request).await;
        match answer {
            Ok(reply) if reply.get_ref().node == id => Err(invalid(format!(
                "{old} runs (it answered at {}): stop it first; only a lost node is replaced",
                node.address
            ))),
            _ => Ok(()),
        }
    }
}

/// A membership request as forwarded to its group's leader.
fn forwarded<T>(request: Request<T>) -> Request<T> {
    forwarded_within(request, FORWARD_TIMEOUT)
}

fn invalid(why: impl Into<String>) -> Status {
    ErrorKind::InvalidArgument.status(why)
}

/// A replication error as a membership request's answer: `Unavailable` — the request
/// may be asked again (a leader changed, a change is in flight, an outcome is unknown: a
/// membership change is idempotent, so asking again finishes or finds it done).
fn replication_status(e: ReplicationError) -> Status {
    ErrorKind::Unavailable.status(e.to_string())
}

/// The topology clients route by, from the metadata group's: each partition's replicas
/// (this node first named as the adjudicator if it holds one: it forwards to the leader),
/// and the storage replicas.
fn topology_of(metadata: &pb::Metadata, me: &str) -> pb::GetTopologyReply {
    let holding = |group: u64| {
        metadata
            .nodes
            .iter()
            .filter(move |n| n.groups.contains(&group))
    };
    pb::GetTopologyReply {
        version: metadata.version,
        partitions: metadata.partitions,
        placements: (0..metadata.partitions)
            .map(|p| {
                let group = u64::from(p) + 1;
                let url = holding(group)
                    .find(|n| n.name == me)
                    .or_else(|| holding(group).next())
                    .map(|n| n.address.clone())
                    .unwrap_or_default();
                pb::PartitionPlacement {
                    partition: p,
                    adjudicator: url.clone(),
                    journal: url,
                    replicas: holding(group).map(|n| n.address.clone()).collect(),
                }
            })
            .collect(),
        storage: metadata
            .nodes
            .iter()
            .filter(|n| n.storage)
            .map(|n| pb::StorageReplica {
                address: n.address.clone(),
                range: Some(pb::KeyRange::default()),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterInfo {
    async fn get_topology(
        &self,
        _request: Request<pb::GetTopologyRequest>,
    ) -> std::result::Result<Response<pb::GetTopologyReply>, Status> {
        match self.metadata.as_ref().and_then(MetadataGroup::metadata) {
            Some(metadata) => Ok(Response::new(topology_of(&metadata, &self.name))),
            None => Ok(Response::new(self.topology.clone())),
        }
    }

    async fn get_metadata(&self, _request: Request<pb::GetMetadataRequest>) -> Reply<pb::Metadata> {
        Ok(Response::new(self.applied()?.as_ref().clone()))
    }

    async fn replace_node(&self, request: Request<pb::ReplaceNodeRequest>) -> Reply<pb::Metadata> {
        let asked = request.get_ref();
        metadata::check_name(&asked.old).map_err(invalid)?;
        metadata::check_name(&asked.new).map_err(invalid)?;
        let replace = pb::ReplaceNodeRequest {
            old: asked.old.clone(),
            new: asked.new.clone(),
            address: metadata::normalize_address(&asked.address).map_err(invalid)?,
        };
        let Some(group) = &self.metadata else {
            return Err(ErrorKind::Unavailable
                .status("this node holds no replica of the metadata group; ask another"));
        };
        if let Some(now) = group.metadata() {
            match metadata::check_replace(&now, &replace) {
                Ok(false) => return Ok(Response::new(now.as_ref().clone())),
                Ok(true) => self.refuse_if_alive(&now, &replace.old).await?,
                Err(why) => return Err(invalid(why)),
            }
        }
        let command = pb::MetadataCommand {
            command: Some(pb::metadata_command::Command::Replace(replace.clone())),
        };
        match group.propose(command).await {
            Ok(now) => match metadata::check_replace(&now, &replace) {
                Ok(false) => Ok(Response::new(now.as_ref().clone())),
                Ok(true) => {
                    Err(ErrorKind::Unavailable.status("the replacement was not applied; retry"))
                }
                Err(why) => Err(invalid(format!("refused when applied: {why}"))),
            },
            Err(ProposeError::NotLeader { leader }) => {
                let mut client = self.leader(&request, leader, "the metadata group")?;
                client.replace_node(forwarded(request)).await
            }
            Err(ProposeError::Replication(e)) => Err(replication_status(e)),
            Err(e @ ProposeError::Stopped(_)) => Err(ErrorKind::Unavailable.status(e.to_string())),
        }
    }

    async fn replace_replica(
        &self,
        request: Request<pb::ReplaceReplicaRequest>,
    ) -> Reply<pb::ReplaceReplicaReply> {
        let asked = request.get_ref();
        metadata::check_name(&asked.old).map_err(invalid)?;
        metadata::check_name(&asked.new).map_err(invalid)?;
        let group = GroupId(asked.group);
        let Some(journal) = self.groups.get(&group) else {
            return Err(invalid(format!(
                "this node holds no replica of group {}",
                asked.group
            )));
        };
        // Only what the metadata group recorded: `new` holds the group, `old` is retired.
        let now = self.applied()?;
        let holds = metadata::groups_of(&now, &asked.new).is_some_and(|g| g.contains(&group.0));
        if !holds || !now.retired.contains(&asked.old) {
            // Perhaps recorded, and not applied here yet: ask again.
            return Err(ErrorKind::Unavailable.status(format!(
                "the topology (version {}) does not record that {} replaces {} in group {}:                  ReplaceNode first",
                now.version, asked.new, asked.old, asked.group
            )));
        }
        let status = journal.status();
        if status.role != StateRole::Leader {
            let what = format!("group {}", asked.group);
            let mut client = self.leader(&request, status.leader, &what)?;
            return client.replace_replica(forwarded(request)).await;
        }
        let (old, new) = (
            NodeConfig::raft_id_of(&asked.old),
            NodeConfig::raft_id_of(&asked.new),
        );
        // Checked again once the new node caught up: the record may have changed meanwhile
        // (a later replacement retired `new` too).
        let still = || match self.applied() {
            Ok(now)
                if metadata::groups_of(&now, &asked.new).is_some_and(|g| g.contains(&group.0)) =>
            {
                Ok(())
            }
            _ => Err(format!(
                "the topology no longer gives {} group {}",
                asked.new, asked.group
            )),
        };
        let members = journal
            .replace_voter_if(old, new, CATCH_UP_PATIENCE, still)
            .await
            .map_err(replication_status)?;
        Ok(Response::new(pb::ReplaceReplicaReply {
            voters: members.voters,
        }))
    }

    async fn replicas(
        &self,
        _request: Request<pb::ReplicasRequest>,
    ) -> std::result::Result<Response<pb::ReplicasReply>, Status> {
        Ok(Response::new(pb::ReplicasReply {
            node: self.node,
            replicas: self
                .groups
                .iter()
                .map(|(group, journal)| replica_status(*group, journal))
                .collect(),
        }))
    }
}

fn replica_status(group: GroupId, journal: &ReplicatedJournal) -> pb::ReplicaStatus {
    let status = journal.status();
    pb::ReplicaStatus {
        group: group.0,
        partition: group.0.saturating_sub(1) as u32,
        role: match status.role {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        }
        .into(),
        term: status.term,
        leader: status.leader.unwrap_or(0),
        commit: status.commit,
        applied: status.applied,
        readable: status.readable.get(),
        voters: status.members.voters,
        learners: status.members.learners,
        outgoing: status.members.outgoing,
        progress: journal
            .progress()
            .into_iter()
            .map(|(node, matched)| pb::PeerProgress { node, matched })
            .collect(),
        failed: status.failed.unwrap_or_default(),
        first_lsn: journal.first_lsn().get(),
    }
}

fn topology(config: &NodeConfig) -> pb::GetTopologyReply {
    let replicated = config.is_replicated();
    pb::GetTopologyReply {
        version: config.topology_version,
        partitions: config.partitions,
        placements: (0..config.partitions)
            .map(|p| {
                let replicas = config.replicas(p);
                // This node, if it holds a replica (it forwards to the leader), else the
                // first replica.
                let url = match replicas.iter().find(|n| n.name == config.node) {
                    Some(me) => me.url(),
                    None => config.owner(p).url(),
                };
                pb::PartitionPlacement {
                    partition: p,
                    adjudicator: url.clone(),
                    journal: url,
                    replicas: match replicated {
                        true => replicas.iter().map(|n| n.url()).collect(),
                        false => Vec::new(),
                    },
                }
            })
            .collect(),
        storage: config
            .nodes
            .iter()
            .filter(|n| n.storage)
            .map(|n| pb::StorageReplica {
                address: n.url(),
                range: Some(pb::KeyRange::default()),
            })
            .collect(),
    }
}
