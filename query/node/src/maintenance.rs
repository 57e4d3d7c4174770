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
//! - With **replicated journals** the same rule is the leader's: it proposes the point as
//!   an entry of the log, and every replica drops its prefix when it applies it
//!   ([`Maintenance::truncate_replicated`]).
//!
//! A failed round (a store that cannot flush, a segment that cannot be removed) loses
//! nothing — the journal keeps what it could not drop, the store what it could not collect
//! — and is tried again at the next interval; its error is kept for
//! [`ClusterNode::take_maintenance_error`](crate::ClusterNode::take_maintenance_error),
//! which `serve` prints. A maintenance task that stops (it panicked) is the node's failure:
//! [`ClusterNode::is_failed`](crate::ClusterNode::is_failed) reports it, so `serve` exits
//! and a supervisor restarts the node. The flush and the segment removals run where the
//! journal's flusher says blocking work belongs ([`Flusher::run_blocking`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use journaldb::Error;
use journaldb_adjudicator::{Partition, PartitionLog};
use journaldb_journal::Flusher;
use journaldb_proto::pb::storage_service_client::StorageServiceClient;
use journaldb_proto::{Clock, Timestamp, pb};
use journaldb_storage::retention::{self, checkpoint_from_reply};
use journaldb_storage::{Checkpoint, Engine, StorageNode};
use tonic::transport::Channel;

use crate::replicated::Serving;
use crate::replicated::forwarding::Leaders;
use crate::replicated::metadata::{self, Connect, MetadataGroup};

/// Deadline of a storage replica's answer about its checkpoint.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The last error of a maintenance round, shared by a node's maintenance tasks.
pub(crate) type LastError = Arc<parking_lot::Mutex<Option<Error>>>;

/// What both maintenance tasks need.
#[derive(Clone)]
pub(crate) struct Maintenance {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) retention: Duration,
    pub(crate) every: Duration,
    /// Where blocking disk work runs (the journals' flusher setting).
    pub(crate) blocking: Flusher,
    pub(crate) last_error: LastError,
    /// Becomes true when the node shuts down: the loops stop between rounds, so a round's
    /// blocking work is never left running behind a stopped node.
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
}

impl Maintenance {
    /// `now − retention`: versions and records older than this need not be kept.
    fn cutoff(&self) -> Timestamp {
        self.clock.now().earliest.saturating_sub(self.retention)
    }

    fn failed(&self, error: Error) {
        *self.last_error.lock() = Some(error);
    }

    /// Waits one interval: false if the node is shutting down instead.
    async fn next_round(&mut self) -> bool {
        let every = self.every;
        self.unless_stopped(tokio::time::sleep(every))
            .await
            .is_some()
    }

    /// `work`'s result, or `None` if the node shuts down first (`work` is then dropped:
    /// only what does not block may be given here).
    async fn unless_stopped<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.stop.wait_for(|stop| *stop) => None,
            out = work => Some(out),
        }
    }

    /// A storage replica's rounds, for as long as the node runs.
    pub(crate) async fn checkpoint<S: Engine + 'static>(mut self, node: Arc<StorageNode<S>>) {
        while self.next_round().await {
            let (node, cutoff) = (node.clone(), self.cutoff());
            if let Err(e) = self
                .blocking
                .run_blocking(move || node.maintain(cutoff))
                .await
            {
                self.failed(Error::from(e));
            }
        }
    }

    /// A replicated node's rounds (ARCHITECTURE §5 "Truncation", as TiKV's `CompactLog`):
    /// for each partition this node leads and serves, the single-replica rule decides
    /// where its journal may start — every storage replica the topology names has a
    /// checkpoint past it, and it holds no undecided vote of the adjudicator — and the
    /// leader proposes that point in its term, after every record submitted so far. Every
    /// replica drops the prefix when it applies that entry, so only once it is committed:
    /// a deposed leader's proposal truncates nothing. A round that cannot read the
    /// topology, or that any storage replica does not answer, drops nothing.
    pub(crate) async fn truncate_replicated(mut self, leaders: Leaders, mut topology: Topology) {
        // The last point proposed for each partition, with its term: the first Lsn stays
        // below it when it falls inside an entry, and proposing it again changes nothing.
        let mut proposed = BTreeMap::new();
        while self.next_round().await {
            let led: Vec<_> = leaders
                .leaderships
                .iter()
                .filter_map(|(&p, leadership)| match leadership.serving() {
                    Serving::Leader(partition) => Some((p, partition)),
                    _ => None,
                })
                .collect();
            if led.is_empty() {
                continue;
            }
            let cutoff = self.cutoff();
            let Some(replicas) = self.unless_stopped(topology.storage_replicas()).await else {
                return;
            };
            let Some(replicas) = replicas else {
                continue; // no topology: keep everything this round
            };
            let Some(asked) = self.unless_stopped(ask_replicas(&replicas, cutoff)).await else {
                return;
            };
            let Some(checkpoints) = asked else {
                continue; // a replica did not answer: keep everything this round
            };
            for (p, partition) in led {
                let keep_from = partition.adjudicator().keep_journal_from(cutoff);
                let log = partition.journal();
                let Some(first) =
                    retention::first_to_keep(&checkpoints, p, keep_from, log.durable_end())
                else {
                    continue;
                };
                let last = proposed.get(&p).copied();
                if first > log.first_lsn() && last.is_none_or(|last| (log.term(), first) > last) {
                    // Refused only once the term has ended: the next leader decides.
                    if log.propose_truncation(first).is_ok() {
                        proposed.insert(p, (log.term(), first));
                    }
                }
            }
        }
    }

    /// A journal node's rounds: truncates `parts`' journals as far as every storage replica
    /// (`replicas`, one channel each) and each partition's undecided votes allow.
    pub(crate) async fn truncate(mut self, parts: Vec<Arc<Partition>>, replicas: Vec<Channel>) {
        while self.next_round().await {
            let cutoff = self.cutoff();
            let Some(asked) = self.unless_stopped(ask_replicas(&replicas, cutoff)).await else {
                return;
            };
            let Some(checkpoints) = asked else {
                continue; // a replica did not answer: keep everything this round
            };
            for part in &parts {
                let keep_from = part.adjudicator().keep_journal_from(cutoff);
                let end = part.journal().durable_end();
                let Some(first) = retention::first_to_keep(&checkpoints, part.id(), keep_from, end)
                else {
                    continue;
                };
                let journal = part.journal().clone();
                let dropped = self
                    .blocking
                    .run_blocking(move || journal.truncate_prefix(first));
                if let Err(e) = dropped.await {
                    self.failed(Error::from(e));
                }
            }
        }
    }
}

/// Where a replicated node finds the cluster's storage replicas each round: in the
/// topology its replica of the metadata group has applied, or else the newest one the
/// configured nodes give (a lagging node's topology names a replaced storage replica that
/// no longer answers, which keeps the journals whole that round).
pub(crate) struct Topology {
    pub(crate) metadata: Option<MetadataGroup>,
    /// The configured nodes' addresses, asked when this node holds no metadata replica.
    pub(crate) urls: Vec<String>,
    pub(crate) connect: Connect,
    /// A channel per storage replica's address, made once.
    pub(crate) channels: BTreeMap<String, Channel>,
}

impl Topology {
    /// A channel to every storage replica of the cluster; `None` if no topology is at hand.
    async fn storage_replicas(&mut self) -> Option<Vec<Channel>> {
        let metadata = match self.metadata.as_ref().and_then(MetadataGroup::metadata) {
            Some(metadata) => metadata,
            None => Arc::new(metadata::fetch(&self.urls, &self.connect).await.ok()?),
        };
        let mut channels = Vec::new();
        for node in metadata.nodes.iter().filter(|n| n.storage) {
            let channel = match self.channels.get(&node.address) {
                Some(channel) => channel.clone(),
                None => {
                    let channel = (self.connect)(&node.address).ok()?;
                    self.channels.insert(node.address.clone(), channel.clone());
                    channel
                }
            };
            channels.push(channel);
        }
        Some(channels)
    }
}

/// Every replica's newest durable checkpoint below `cutoff`; `None` unless each answered
/// with one. A checkpoint at or past the cutoff (the replica answered beyond the question)
/// keeps the journal whole: `first_to_keep` refuses it, `keep_from` being at most the
/// cutoff.
async fn ask_replicas(replicas: &[Channel], cutoff: Timestamp) -> Option<Vec<Checkpoint>> {
    let mut checkpoints = Vec::with_capacity(replicas.len());
    for channel in replicas {
        let mut request = tonic::Request::new(pb::CheckpointedRequest {
            before: cutoff.as_nanos(),
        });
        request.set_timeout(ASK_TIMEOUT);
        let reply = StorageServiceClient::new(channel.clone())
            .checkpointed(request)
            .await
            .ok()?
            .into_inner();
        checkpoints.push(checkpoint_from_reply(reply).ok()??);
    }
    Some(checkpoints)
}
