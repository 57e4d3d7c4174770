//! Maintenance of a cluster node (ARCHITECTURE §5 "Truncation", §6 "GC"), with the rules
//! the embedded database uses ([`journaldb_storage::retention`], the adjudicator's
//! `keep_journal_from`); only the transport differs.
//!
//! - A **storage replica** checkpoints every checkpoint interval: its garbage-collection
//!   horizon rises to `now − retention` and what it has applied becomes durable
//!   ([`StorageNode::maintain`]). It answers `Checkpointed` with its newest durable
//!   checkpoint below a cutoff.
//! - A **journal's node** asks every storage replica of the cluster, every interval, for
//!   that checkpoint and drops the journal's segments below the smallest position any
//!   replica reports — never below its adjudicator's oldest undecided vote, never while a
//!   replica does not answer or has none (the journal is then its only copy).
//!
//! A failed round (a store that cannot flush, a segment that cannot be removed) is the
//! node's failure: [`ClusterNode::is_failed`](crate::ClusterNode::is_failed) reports it, so
//! `serve` exits and a supervisor restarts the node, which recovers from disk.

use std::sync::Arc;
use std::time::Duration;

use journaldb::Error;
use journaldb_adjudicator::Partition;
use journaldb_proto::pb::storage_service_client::StorageServiceClient;
use journaldb_proto::{Clock, Timestamp, pb};
use journaldb_storage::retention::{self, checkpoint_from_reply};
use journaldb_storage::{Checkpoint, Engine, StorageNode};
use tonic::transport::Channel;

/// The first error of a maintenance round, shared by a node's maintenance tasks.
pub(crate) type Failure = Arc<parking_lot::Mutex<Option<Error>>>;

/// What both maintenance tasks need.
#[derive(Clone)]
pub(crate) struct Maintenance {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) retention: Duration,
    pub(crate) every: Duration,
    pub(crate) failure: Failure,
}

impl Maintenance {
    /// `now − retention`: versions and records older than this need not be kept.
    fn cutoff(&self) -> Timestamp {
        self.clock.now().earliest.saturating_sub(self.retention)
    }

    fn fail(&self, error: Error) {
        self.failure.lock().get_or_insert(error);
    }

    /// A storage replica's rounds, for as long as the node runs.
    pub(crate) async fn checkpoint<S: Engine>(self, node: Arc<StorageNode<S>>) {
        loop {
            tokio::time::sleep(self.every).await;
            if let Err(e) = node.maintain(self.cutoff()) {
                return self.fail(Error::from(e));
            }
        }
    }

    /// A journal node's rounds: truncates `parts`' journals as far as every storage replica
    /// (`replicas`, one channel each) and each partition's undecided votes allow.
    pub(crate) async fn truncate(self, parts: Vec<Arc<Partition>>, replicas: Vec<Channel>) {
        loop {
            tokio::time::sleep(self.every).await;
            let cutoff = self.cutoff();
            let Some(checkpoints) = ask_replicas(&replicas, cutoff).await else {
                continue; // a replica did not answer: keep everything this round
            };
            for part in &parts {
                let keep_from = part.adjudicator().keep_journal_from(cutoff);
                let Some(first) = retention::first_to_keep(&checkpoints, part.id(), keep_from)
                else {
                    continue;
                };
                if let Err(e) = part.journal().truncate_prefix(first) {
                    return self.fail(Error::from(e));
                }
            }
        }
    }
}

/// Every replica's newest durable checkpoint below `cutoff`; `None` unless each answered
/// with one. A checkpoint at or past the cutoff (the replica answered beyond the question)
/// keeps the journal whole: `first_to_keep` refuses it, `keep_from` being at most the
/// cutoff.
async fn ask_replicas(replicas: &[Channel], cutoff: Timestamp) -> Option<Vec<Checkpoint>> {
    let mut checkpoints = Vec::with_capacity(replicas.len());
    for channel in replicas {
        let reply = StorageServiceClient::new(channel.clone())
            .checkpointed(pb::CheckpointedRequest {
                before: cutoff.as_nanos(),
            })
            .await
            .ok()?
            .into_inner();
        checkpoints.push(checkpoint_from_reply(reply).ok()??);
    }
    Some(checkpoints)
}
