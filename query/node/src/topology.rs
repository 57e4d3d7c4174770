//! The node's `ClusterService`: the topology clients route by, and the state of the Raft
//! groups this node holds replicas of, as it sees them (what `journaldb admin status`
//! gathers from every node).

use journaldb_proto::pb::cluster_service_server::ClusterService;
use journaldb_proto::{PartitionId, pb};
use journaldb_raft::ReplicatedJournal;
use journaldb_raft::raft::StateRole;
use tonic::{Request, Response, Status};

use crate::config::NodeConfig;

/// What the node's `ClusterService` answers from.
pub(crate) struct ClusterInfo {
    topology: pb::GetTopologyReply,
    /// This node's Raft id, and its replicas (none in a single-replica cluster).
    node: u64,
    replicas: Vec<(PartitionId, ReplicatedJournal)>,
}

impl ClusterInfo {
    pub(crate) fn new(
        config: &NodeConfig,
        replicas: Vec<(PartitionId, ReplicatedJournal)>,
    ) -> ClusterInfo {
        ClusterInfo {
            topology: topology(config),
            node: NodeConfig::raft_id_of(&config.node),
            replicas,
        }
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterInfo {
    async fn get_topology(
        &self,
        _request: Request<pb::GetTopologyRequest>,
    ) -> std::result::Result<Response<pb::GetTopologyReply>, Status> {
        Ok(Response::new(self.topology.clone()))
    }

    async fn replicas(
        &self,
        _request: Request<pb::ReplicasRequest>,
    ) -> std::result::Result<Response<pb::ReplicasReply>, Status> {
        Ok(Response::new(pb::ReplicasReply {
            node: self.node,
            replicas: self
                .replicas
                .iter()
                .map(|(p, journal)| replica_status(*p, journal))
                .collect(),
        }))
    }
}

fn replica_status(partition: PartitionId, journal: &ReplicatedJournal) -> pb::ReplicaStatus {
    let status = journal.status();
    pb::ReplicaStatus {
        partition: partition.get(),
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
