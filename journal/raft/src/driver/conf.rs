//! The types of membership changes ([`super::members`]): a group's members as a
//! configuration names them, and one step of a change.

use raft::prelude::{ConfChangeSingle, ConfChangeType, ConfState};

use super::NodeId;

/// A group's members, as the configuration applied on this node has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Voters (the incoming ones, in a joint configuration).
    pub voters: Vec<NodeId>,
    /// Learners: replicas that receive the log and do not vote.
    pub learners: Vec<NodeId>,
    /// The outgoing voters of a joint configuration; empty outside one.
    pub outgoing: Vec<NodeId>,
}

impl Members {
    /// The members a configuration names.
    pub fn of(conf: &ConfState) -> Members {
        let sorted = |ids: &[u64]| {
            let mut ids = ids.to_vec();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let mut learners = conf.learners.clone();
        learners.extend_from_slice(&conf.learners_next);
        Members {
            voters: sorted(&conf.voters),
            learners: sorted(&learners),
            outgoing: sorted(&conf.voters_outgoing),
        }
    }

    /// Whether this is a joint configuration (a change half done).
    pub fn joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `node` votes, or receives the log, in this configuration.
    pub fn contains(&self, node: NodeId) -> bool {
        self.voters.contains(&node)
            || self.learners.contains(&node)
            || self.outgoing.contains(&node)
    }
}

/// One step of a membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// `node` receives the log without voting.
    AddLearner(NodeId),
    /// `node` (new, or a learner) becomes a voter.
    AddVoter(NodeId),
    /// `node` leaves the group.
    Remove(NodeId),
}

impl MemberChange {
    /// The node it changes.
    pub fn node(self) -> NodeId {
        match self {
            MemberChange::AddLearner(n) | MemberChange::AddVoter(n) | MemberChange::Remove(n) => n,
        }
    }

    pub(super) fn single(self) -> ConfChangeSingle {
        let (node, kind) = match self {
            MemberChange::AddLearner(n) => (n, ConfChangeType::AddLearnerNode),
            MemberChange::AddVoter(n) => (n, ConfChangeType::AddNode),
            MemberChange::Remove(n) => (n, ConfChangeType::RemoveNode),
        };
        single(node, kind)
    }
}

/// One change of one node, as raft-rs takes it.
pub(super) fn single(node_id: NodeId, change_type: ConfChangeType) -> ConfChangeSingle {
    ConfChangeSingle {
        node_id,
        change_type,
        ..ConfChangeSingle::default()
    }
}
