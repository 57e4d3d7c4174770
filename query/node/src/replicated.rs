//! A partition's adjudicator on the leader of its journal's Raft group (ARCHITECTURE §4
//! "Failover", §5 "Rules beside the log"; issue 14).
//!
//! [`lead`] is what a node runs when it becomes leader of a partition's group in a term:
//! 1. it appends an `EpochStart` in that term and waits for it to be committed and
//!    applied here — everything before it in the log is then committed and durable here;
//! 2. it reads the journal up to that record and replays it (`ReplayMode::Failover`);
//! 3. only then does the partition serve, over a [`TermLog`]: the replicated journal bound
//!    to that one term. A record is acknowledged only once committed in that term while
//!    this node still leads it (rule 1), and submitted only while it does (rule 2). When
//!    the term ends, every wait fails (`CommitUnknown` to the client, which asks again by
//!    transaction id) and the adjudicator steps down; the partition is not used again —
//!    the next term starts from the log, never from this one's memory.
//!
//! [`roles`] is how `journaldb serve` runs them: the driver of a node's groups, a
//! [`Leadership`] per partition, and the adjudicator service that serves the partitions led
//! here and forwards the rest to their leaders.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use journaldb_adjudicator::{
    AdjudicatorConfig, Partition, PartitionLog, RecoveryError, ReplayMode, Submission, SubmitError,
    replay_payloads,
};
use journaldb_proto::{Clock, Lsn, PartitionId, PlantedBug, pb};
use journaldb_raft::{NodeId, Pending, ReplicatedJournal, ReplicationError};
use journaldb_storage::follow::{Batch, Source};
use prost::Message;

/// A replicated journal bound to the one term in which this node leads it: what a
/// partition's adjudicator appends to on the leader.
#[derive(Debug)]
pub struct TermLog {
    journal: ReplicatedJournal,
    /// The term; it changes only with the planted `ProposeInLaterTerm` ([`TermLog::rebind`]).
    term: AtomicU64,
    /// The highest durable end seen, so it never goes back once the term has ended.
    durable: AtomicU64,
}

impl TermLog {
    /// `journal` in `term`, whose records are durable below `durable` already.
    pub fn new(journal: ReplicatedJournal, term: u64, durable: Lsn) -> TermLog {
        TermLog {
            journal,
            term: AtomicU64::new(term),
            durable: AtomicU64::new(durable.get()),
        }
    }

    /// The term.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    /// Whether this node still leads the term and takes records in it.
    pub fn is_current(&self) -> bool {
        self.journal.next_lsn(self.term()).is_some()
    }

    /// The first record this replica still holds.
    pub fn first_lsn(&self) -> Lsn {
        self.journal.first_lsn()
    }

    /// Proposes, in this log's term, that every replica drop the records before `before`
    /// (ARCHITECTURE §5 "Truncation"): an entry after every record submitted so far, acted
    /// on by each replica once committed. Refused once the term has ended.
    pub fn propose_truncation(&self, before: Lsn) -> Result<(), ReplicationError> {
        self.journal.propose_truncation(self.term(), before)
    }

    /// The planted [`PlantedBug::ProposeInLaterTerm`]: binds this log, and the memory of
    /// the adjudicator over it, to a later term of this node's — never done otherwise
    /// (rule 2: a term change discards the adjudicator's memory).
    fn rebind(&self, term: u64) {
        self.term.fetch_max(term, Ordering::Relaxed);
    }
}

/// A record submitted in a [`TermLog`]'s term.
#[derive(Debug)]
pub struct TermSubmission(Pending);

impl Submission for TermSubmission {
    fn lsn(&self) -> Lsn {
        self.0.lsn()
    }

    async fn durable(self) -> Result<Lsn, String> {
        self.0.committed().await.map_err(|e| e.to_string())
    }
}

impl PartitionLog for TermLog {
    type Submitted<'a> = TermSubmission;

    fn submit_now(&self, record: Bytes) -> Result<TermSubmission, SubmitError> {
        match self.journal.submit(self.term(), record) {
            Ok(pending) => Ok(TermSubmission(pending)),
            Err(ReplicationError::TooLarge { size, limit }) => Err(SubmitError::TooLarge {
                size: size as u64,
                limit: limit as u64,
            }),
            Err(e) => Err(SubmitError::Failed(e.to_string())),
        }
    }

    fn room(&self) -> impl Future<Output = ()> + Send {
        self.journal.room(self.term())
    }

    fn durable_end(&self) -> Lsn {
        let now = self
            .journal
            .acknowledged_end(self.term())
            .map_or(0, Lsn::get);
        Lsn::new(self.durable.fetch_max(now, Ordering::Relaxed).max(now))
    }

    async fn durable_through(&self, end: Lsn) -> Result<(), String> {
        if end <= self.durable_end() {
            return Ok(());
        }
        self.journal
            .acknowledged_through(self.term(), end)
            .await
            .map_err(|e| e.to_string())
    }

    fn submitted_end(&self) -> Lsn {
        self.journal
            .next_lsn(self.term())
            .unwrap_or_else(|| self.durable_end())
    }

    fn describe(&self) -> String {
        format!("{:?} in term {}", self.journal.group(), self.term())
    }
}

/// Why a node could not take over a partition as leader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeadError {
    /// The term ended (or never was this node's) before the partition could serve.
    #[error("{partition}: {error}")]
    Replication {
        /// The partition.
        partition: PartitionId,
        /// What the replicated journal said.
        error: ReplicationError,
    },
    /// The records cannot be replayed (undecodable, or breaking the journal's rules).
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
}

impl LeadError {
    /// Whether a later term may succeed: the term ended under it. The others mean the log
    /// itself is bad.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LeadError::Replication { .. })
    }
}

/// Takes over partition `id` as the leader of `term` of its journal (see the module docs):
/// `EpochStart`, replay of everything before it, then a partition serving in `term`.
/// `owns` says which keys are the partition's; `node` is this node, named in the epoch.
pub async fn lead(
    journal: &ReplicatedJournal,
    term: u64,
    node: NodeId,
    id: PartitionId,
    config: AdjudicatorConfig,
    owns: impl Fn(&[u8]) -> bool,
    clock: &dyn Clock,
) -> Result<Partition<TermLog>, LeadError> {
    let replication = |error| LeadError::Replication {
        partition: id,
        error,
    };
    let epoch_start = pb::Record {
        kind: Some(pb::record::Kind::EpochStart(pb::EpochStart {
            epoch: Some(pb::Epoch {
                counter: term,
                node_id: node,
            }),
        })),
    };
    let pending = journal
        .submit(term, Bytes::from(epoch_start.encode_to_vec()))
        .map_err(replication)?;
    let epoch_lsn = pending.committed().await.map_err(replication)?;
    let mut first = journal.first_lsn();
    let mut payloads = Vec::new();
    let mut from = first;
    while from < epoch_lsn {
        let page = match journal.read(from, 4 << 20) {
            // A truncation committed before the EpochStart took effect here meanwhile:
            // the replay starts over from what the log holds now.
            Err(ReplicationError::Truncated { first: now, .. }) if now > first => {
                (first, from) = (now, now);
                payloads.clear();
                continue;
            }
            page => page.map_err(replication)?,
        };
        let Some((last, _)) = page.last() else {
            // The same, found between the read's check of the first record and its page.
            let now = journal.first_lsn();
            if now > from {
                (first, from) = (now, now);
                payloads.clear();
                continue;
            }
            // Everything before the EpochStart is committed and applied here: a replay that
            // cannot read it all must not serve from part of it.
            return Err(replication(ReplicationError::Stopped {
                group: journal.group(),
                reason: format!("records {from}..{epoch_lsn} are not readable here"),
            }));
        };
        from = last.next();
        payloads.extend(page.into_iter().filter(|(lsn, _)| *lsn < epoch_lsn));
    }
    let mode = ReplayMode::Failover {
        now: clock.now(),
        truncated: first > Lsn::FIRST,
    };
    if config.planted_bug == Some(PlantedBug::ServeWithoutReplay) {
        payloads.clear();
    }
    let adj = replay_payloads(id, config, payloads, owns, mode)?;
    let log = TermLog::new(journal.clone(), term, epoch_lsn.next());
    Ok(Partition::new(id, adj, Arc::new(log)))
}

/// A storage node's feed from this node's replica of a journal (ARCHITECTURE §5 rule 7:
/// storage counts only what is committed — the replica hands out records up to its last
/// applied entry, committed and durable here, whoever leads).
#[derive(Debug)]
pub struct ReplicaSource {
    journal: ReplicatedJournal,
}

/// Most record bytes one batch of a [`ReplicaSource`] carries (at least one record).
const MAX_SOURCE_BATCH_BYTES: usize = 4 << 20;

impl ReplicaSource {
    /// The committed records of `journal` on this node.
    pub fn new(journal: ReplicatedJournal) -> ReplicaSource {
        ReplicaSource { journal }
    }
}

impl Source for ReplicaSource {
    async fn next_batch(&mut self, from: Lsn) -> journaldb_storage::Result<Option<Batch>> {
        let unavailable = |e: ReplicationError| match e {
            // The replica no longer holds what storage needs next: a storage node cannot
            // skip records, so its feed stops (it must be rebuilt from a checkpoint).
            ReplicationError::Truncated { .. } => {
                journaldb_storage::Error::InvalidArgument(e.to_string())
            }
            e => journaldb_storage::Error::Io(e.to_string()),
        };
        // A stopped group (its log failed, raft-rs panicked, the driver stopped) is an
        // error, not the end of the journal: the feed stops and says why.
        self.journal
            .wait_readable(from)
            .await
            .map_err(unavailable)?;
        let records = self
            .journal
            .read(from, MAX_SOURCE_BATCH_BYTES)
            .map_err(unavailable)?;
        debug_assert!(records.first().is_none_or(|(lsn, _)| *lsn == from));
        Ok(Some(Batch {
            first: from,
            payloads: records.into_iter().map(|(_, payload)| payload).collect(),
        }))
    }
}

pub(crate) mod forwarding;
mod leadership;
pub(crate) mod metadata;
pub(crate) mod records;
pub(crate) mod roles;

pub use leadership::{Leadership, Owns, Serving};

#[cfg(test)]
mod schedules;
#[cfg(test)]
mod tests;
