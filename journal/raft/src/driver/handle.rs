//! [`ReplicatedJournal`]: one group's journal as its users see it — the adjudicator that
//! submits records on the leader, and readers (storage, a failover replay) that follow
//! what is committed. The driver task does the Raft work behind it.
//!
//! Rules it keeps (ARCHITECTURE §5, "Rules beside the log"):
//! - **A record is submitted for a term** (rule 2) and queued only while this node leads
//!   that term; its Lsn is assigned at once, densely, so journal order is the caller's
//!   order. Once anything submitted in a term cannot be proposed, the term's queue closes
//!   for good: the caller steps down.
//! - **An acknowledgement reports a commit in the proposing term** (rule 1): a
//!   [`Pending`] resolves `Ok` only when an entry of its term holding its Lsn is applied
//!   here while this node still leads that term; if the term ends first it resolves
//!   [`ReplicationError::CommitUnknown`] — the record may yet commit under another leader.
//! - **Readers never see past what is committed and durable here** (rule 7): the readable
//!   end is the Lsn after the last applied entry.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use journaldb_proto::Lsn;
use parking_lot::Mutex;
use raft::StateRole;
use raft::prelude::{ConfChangeV2, Entry};
use tokio::sync::{Notify, oneshot, watch};

use crate::entry::EntryBatch;
use crate::log::{LogError, RaftLog};

use super::conf::Members;
use super::{GroupId, NodeId};

/// Why a replicated journal refused or could not confirm something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// This node does not lead the term asked for (or no longer accepts records in it).
    #[error("not the leader of term {term} (current term {current}, leader {leader:?})")]
    NotLeader {
        /// The term asked for.
        term: u64,
        /// This node's current term.
        current: u64,
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// The term ended with the record in flight: it may or may not commit under the next
    /// leader. Ask again by transaction id.
    #[error("leadership of term {term} ended before Lsn {lsn} was confirmed")]
    CommitUnknown {
        /// The proposing term.
        term: u64,
        /// The record's Lsn.
        lsn: Lsn,
    },
    /// Records from `lsn` are no longer in this replica's log (compacted, or replaced by a
    /// snapshot).
    #[error("{group:?}: records before {first} are gone; {lsn} was asked for")]
    Truncated {
        /// The group.
        group: GroupId,
        /// The Lsn asked for.
        lsn: Lsn,
        /// The first Lsn still held.
        first: Lsn,
    },
    /// A record larger than one Raft message carries; nothing was queued.
    #[error("a record of {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The record's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A membership change was refused: not a change this group can make now (the
    /// reason says why), or another is in flight.
    #[error("membership change refused: {reason}")]
    Membership {
        /// Why.
        reason: String,
    },
    /// A new replica did not catch up with the leader in the time given; it stays a
    /// learner (run the replacement again to continue).
    #[error("node {node} has the log up to {matched} of {target} so far")]
    CatchingUp {
        /// The new replica.
        node: NodeId,
        /// The last index the leader knows it holds.
        matched: u64,
        /// The commit index it must reach.
        target: u64,
    },
    /// The group stopped on this node: its log failed, or the driver stopped.
    #[error("{group:?} stopped: {reason}")]
    Stopped {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
}

impl ReplicationError {
    /// Whether trying again (here or at the current leader) can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ReplicationError::NotLeader { .. } | ReplicationError::CatchingUp { .. }
        )
    }
}

/// What a group looks like from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// This node's role in the group.
    pub role: StateRole,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The index of the last entry applied here.
    pub applied: u64,
    /// The Lsn after the last record readable here (committed and durable).
    pub readable: Lsn,
    /// Why the group stopped on this node, if it did.
    pub failed: Option<String>,
    /// The members, as the configuration applied here has them.
    pub members: Members,
    /// The commit index this node knows of (as of its last applied entries).
    pub commit: u64,
}

/// Acknowledgements of the term this node leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Acks {
    /// The term they are for.
    pub term: u64,
    /// Records of `term` below this Lsn are committed in `term` and applied here.
    pub end: Lsn,
    /// No more will come in `term`: it ended, or a proposal of it was dropped.
    pub closed: bool,
}

/// Records submitted in the term this node leads, not yet proposed.
#[derive(Debug)]
pub(super) struct Queue {
    /// The term, and whether it still accepts records.
    pub term: u64,
    pub open: bool,
    /// The Lsn the next submitted record gets.
    pub next_lsn: Lsn,
    /// Queued records; the first has Lsn `next_lsn - records.len()`.
    pub records: Vec<Bytes>,
    /// `(Lsn, bytes)` of every record submitted in `term` and not yet acknowledged.
    pub unacked: VecDeque<(Lsn, usize)>,
    /// Their bytes: what [`ReplicatedJournal::room`] bounds.
    pub unacked_bytes: usize,
    /// This node should hand the leadership of `term` over: the term takes no records
    /// (a proposal was dropped, or taking the partition over failed), and another voter
    /// can serve a new term sooner than this one would end by itself.
    pub step_down: bool,
    /// A truncation to propose in `term` after the queued records
    /// ([`ReplicatedJournal::propose_truncation`]): records before this Lsn.
    pub truncate: Option<Lsn>,
}

impl Queue {
    /// An empty queue for `term`, open if this node leads it.
    pub fn new(term: u64, open: bool, next_lsn: Lsn) -> Queue {
        Queue {
            term,
            open,
            next_lsn,
            records: Vec::new(),
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            step_down: false,
            truncate: None,
        }
    }

    /// Forgets what is unacknowledged below `end` (acknowledged), or everything (the term
    /// ended); `true` if bytes were released.
    pub fn release(&mut self, end: Option<Lsn>) -> bool {
        let before = self.unacked_bytes;
        while let Some(&(lsn, bytes)) = self.unacked.front() {
            if end.is_some_and(|end| lsn >= end) {
                break;
            }
            self.unacked.pop_front();
            self.unacked_bytes -= bytes;
        }
        self.unacked_bytes != before
    }
}

/// A change the driver is asked to propose, and where it answers with the entry's index.
#[derive(Debug)]
pub(super) struct ChangeRequest {
    pub change: ConfChangeV2,
    /// A node that must still be a voter when the change is proposed.
    pub voter: Option<NodeId>,
    pub reply: oneshot::Sender<Result<u64, ReplicationError>>,
}

/// What the handle and the driver share for one group.
#[derive(Debug)]
pub(super) struct Shared {
    pub group: GroupId,
    pub log: RaftLog,
    pub queue: Mutex<Queue>,
    pub acks: watch::Sender<Acks>,
    pub status: watch::Sender<GroupStatus>,
    /// Wakes the driver: records were queued.
    pub wake: Arc<Notify>,
    /// Wakes this group's flusher: something was staged outside a Ready (compaction).
    pub flush: Arc<Notify>,
    /// Wakes [`ReplicatedJournal::room`] waiters: unacknowledged bytes were released.
    pub room: Notify,
    /// How many unacknowledged bytes a term may have before `room` waits.
    pub max_unacked_bytes: usize,
    /// The largest record `submit` takes: one record must fit one Raft message.
    pub max_record_bytes: usize,
    /// The planted [`journaldb_proto::PlantedBug::AckInLaterTerm`]: a [`Pending`]
    /// resolves once its Lsn is readable here, whatever term committed it.
    pub ack_in_any_term: bool,
    /// A membership change for the driver to propose.
    pub change: Mutex<Option<ChangeRequest>>,
    /// Each member's `matched` index, while this node leads.
    pub progress: Mutex<Vec<(NodeId, u64)>>,
}

/// One group's journal on this node. Clones share it.
#[derive(Debug, Clone)]
pub struct ReplicatedJournal {
    pub(super) shared: Arc<Shared>,
}

/// A submitted record: its Lsn, and a wait for its acknowledgement.
#[derive(Debug)]
pub struct Pending {
    term: u64,
    lsn: Lsn,
    acks: watch::Receiver<Acks>,
    /// Set only with the planted `AckInLaterTerm`: the status whose readable end it
    /// wrongly trusts.
    any_term: Option<watch::Receiver<GroupStatus>>,
}

impl Pending {
    /// The record's Lsn.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Resolves once the record is committed in its term and applied here, while this node
    /// still leads that term; [`ReplicationError::CommitUnknown`] if the term ends first.
    pub async fn committed(mut self) -> Result<Lsn, ReplicationError> {
        let unknown = ReplicationError::CommitUnknown {
            term: self.term,
            lsn: self.lsn,
        };
        if let Some(mut status) = self.any_term.take() {
            // The planted bug: an Lsn readable here is taken for this record, whoever
            // proposed the entry that holds it.
            return match status.wait_for(|s| s.readable > self.lsn).await {
                Ok(_) => Ok(self.lsn),
                Err(_) => Err(unknown),
            };
        }
        loop {
            {
                let acks = self.acks.borrow_and_update();
                if acks.term == self.term && acks.end > self.lsn {
                    return Ok(self.lsn);
                }
                if acks.term != self.term || acks.closed {
                    return Err(unknown);
                }
            }
            if self.acks.changed().await.is_err() {
                return Err(unknown);
            }
        }
    }
}

impl Shared {
    /// Compacts the log up to the entry before the one holding `before` (whole entries),
    /// as far as what is applied here and durably committed allows; `true` once it got
    /// there (nothing before `before` is left to drop).
    pub(super) fn compact_before(&self, before: Lsn) -> Result<bool, LogError> {
        let log = &self.log;
        let state = log.state();
        if before <= state.first_lsn {
            return Ok(true);
        }
        let limit = state.applied.min(log.durable_state().hard_state.commit);
        let wanted = match log.index_of_lsn(before) {
            Some(holding) => holding - 1,
            // Past every record: every entry may go.
            None => log.last_entry_index(),
        };
        let to = wanted.min(limit);
        if to > state.truncated.0 {
            log.compact(to)?;
            self.flush.notify_one();
        }
        Ok(to == wanted)
    }
}

impl ReplicatedJournal {
    /// The group.
    pub fn group(&self) -> GroupId {
        self.shared.group
    }

    /// The group as this node sees it now.
    pub fn status(&self) -> GroupStatus {
        self.shared.status.borrow().clone()
    }

    /// Watches the group's status (role, term, leader, readable end).
    pub fn watch_status(&self) -> watch::Receiver<GroupStatus> {
        self.shared.status.subscribe()
    }

    /// The Lsn of the first record this replica still holds (after its truncation point).
    pub fn first_lsn(&self) -> Lsn {
        self.shared.log.state().first_lsn
    }

    /// Resolves when the records of `term` not yet acknowledged take fewer bytes than the
    /// group's bound (or `term` takes no records any more: `submit` then says why). Await
    /// it before a critical section that submits: raft-rs drops proposals past its own
    /// bound on uncommitted bytes, which would end the term's submissions.
    pub async fn room(&self, term: u64) {
        loop {
            let released = self.shared.room.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let queue = self.shared.queue.lock();
                if !queue.open
                    || queue.term != term
                    || queue.unacked_bytes < self.shared.max_unacked_bytes
                {
                    return;
                }
            }
            released.await;
        }
    }

    /// Asks this node to hand over the leadership of `term` if it still holds it (the
    /// caller cannot serve the term). The term takes no more records.
    pub fn step_down(&self, term: u64) {
        let mut queue = self.shared.queue.lock();
        if queue.term == term {
            queue.open = false;
            queue.step_down = true;
        }
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// Drops this replica's records before `before` from the front of its log (whole
    /// entries only: the entry holding `before` stays), as far as the log allows — up to
    /// what is applied here and durably committed. Returns the first Lsn kept. Deciding
    /// when is the caller's (ARCHITECTURE §5 "Truncation"); a follower that then needs
    /// what is gone gets a snapshot and resumes after it. A cluster's journals truncate
    /// through [`ReplicatedJournal::propose_truncation`] instead, so that every replica
    /// drops the same prefix, and only once a leader's decision is committed.
    pub fn truncate_prefix(&self, before: Lsn) -> Result<Lsn, ReplicationError> {
        self.shared
            .compact_before(before)
            .map_err(|e| ReplicationError::from((self.shared.group, e)))?;
        Ok(self.shared.log.state().first_lsn)
    }

    /// Proposes, in `term`, that every replica drop its records before `before`
    /// ([`EntryCommand::TruncateBefore`](crate::EntryCommand)): an entry after every record
    /// submitted so far in `term`, which each replica acts on when it applies it, so only
    /// once committed. A later call in the same term before the proposal raises the point.
    /// Refused unless this node leads `term` and the term still takes records; a proposal
    /// raft-rs drops is dropped silently (the caller proposes again at its next round).
    /// Deciding `before` is the caller's: it must be safe to drop on every replica.
    pub fn propose_truncation(&self, term: u64, before: Lsn) -> Result<(), ReplicationError> {
        let mut queue = self.shared.queue.lock();
        if !queue.open || queue.term != term {
            let status = self.shared.status.borrow();
            return Err(ReplicationError::NotLeader {
                term,
                current: status.term,
                leader: status.leader,
            });
        }
        if before > queue.next_lsn {
            return Err(ReplicationError::Truncated {
                group: self.shared.group,
                lsn: before,
                first: queue.next_lsn,
            });
        }
        queue.truncate = Some(queue.truncate.map_or(before, |t| t.max(before)));
        drop(queue);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// The largest record [`ReplicatedJournal::submit`] takes.
    pub fn max_record_bytes(&self) -> usize {
        self.shared.max_record_bytes
    }

    /// Records of `term` below this Lsn are acknowledged (committed in `term` and applied
    /// here while this node leads it); `None` once this node is in another term.
    pub fn acknowledged_end(&self, term: u64) -> Option<Lsn> {
        let acks = self.shared.acks.borrow();
        (acks.term == term).then_some(acks.end)
    }

    /// Resolves once records of `term` below `end` are acknowledged (committed in `term`
    /// and applied here while this node leads it); `CommitUnknown` if the term ends first.
    /// Meaningful only for `end` past the term's first committed record (before it, the
    /// acknowledged end also covers earlier terms' uncommitted tail).
    pub async fn acknowledged_through(&self, term: u64, end: Lsn) -> Result<(), ReplicationError> {
        let mut acks = self.shared.acks.subscribe();
        loop {
            {
                let now = acks.borrow_and_update();
                if now.term == term && now.end >= end {
                    return Ok(());
                }
                if now.term != term || now.closed {
                    return Err(ReplicationError::CommitUnknown { term, lsn: end });
                }
            }
            if acks.changed().await.is_err() {
                return Err(ReplicationError::CommitUnknown { term, lsn: end });
            }
        }
    }

    /// The Lsn the next record submitted in `term` would get; `None` unless this node leads
    /// `term` and the term still accepts records.
    pub fn next_lsn(&self, term: u64) -> Option<Lsn> {
        let queue = self.shared.queue.lock();
        (queue.open && queue.term == term).then_some(queue.next_lsn)
    }

    /// Queues `record` to be proposed in `term`, giving it the next Lsn. Refused unless
    /// this node leads `term` and the term still accepts records (ARCHITECTURE §5 rule 2),
    /// and if it is larger than [`ReplicatedJournal::max_record_bytes`].
    pub fn submit(&self, term: u64, record: Bytes) -> Result<Pending, ReplicationError> {
        if record.len() > self.shared.max_record_bytes {
            return Err(ReplicationError::TooLarge {
                size: record.len(),
                limit: self.shared.max_record_bytes,
            });
        }
        let mut queue = self.shared.queue.lock();
        if !queue.open || queue.term != term {
            let status = self.shared.status.borrow();
            if let Some(reason) = &status.failed {
                return Err(ReplicationError::Stopped {
                    group: self.shared.group,
                    reason: reason.clone(),
                });
            }
            return Err(ReplicationError::NotLeader {
                term,
                current: status.term,
                leader: status.leader,
            });
        }
        let lsn = queue.next_lsn;
        queue.next_lsn = lsn.next();
        queue.unacked.push_back((lsn, record.len()));
        queue.unacked_bytes += record.len();
        queue.records.push(record);
        drop(queue);
        self.shared.wake.notify_one();
        Ok(Pending {
            term,
            lsn,
            acks: self.shared.acks.subscribe(),
            any_term: self
                .shared
                .ack_in_any_term
                .then(|| self.shared.status.subscribe()),
        })
    }

    /// The committed records from `from` on that are readable here, up to `max_bytes` of
    /// record data (at least one record if any is readable).
    pub fn read(&self, from: Lsn, max_bytes: usize) -> Result<Vec<(Lsn, Bytes)>, ReplicationError> {
        let readable = self.shared.status.borrow().readable;
        let first = self.shared.log.state().first_lsn;
        if from < first {
            return Err(ReplicationError::Truncated {
                group: self.shared.group,
                lsn: from,
                first,
            });
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut lsn = from;
        while lsn < readable && (out.is_empty() || bytes < max_bytes) {
            let Some(index) = self.shared.log.index_of_lsn(lsn) else {
                break;
            };
            let entry = self.entry(index)?;
            let batch = EntryBatch::decode(&entry.data).map_err(|e| self.stopped(e.to_string()))?;
            let end = batch.end();
            for (at, record) in (batch.first_lsn.get()..).map(Lsn::new).zip(batch.records) {
                if at >= readable {
                    break;
                }
                if at >= lsn {
                    bytes += record.len();
                    out.push((at, record));
                }
            }
            lsn = end;
        }
        Ok(out)
    }

    /// Waits until records from `from` are readable here (or the group stops).
    pub async fn wait_readable(&self, from: Lsn) -> Result<Lsn, ReplicationError> {
        let mut status = self.shared.status.subscribe();
        loop {
            {
                let now = status.borrow_and_update();
                if let Some(reason) = &now.failed {
                    return Err(self.stopped(reason.clone()));
                }
                if now.readable > from {
                    return Ok(now.readable);
                }
            }
            if status.changed().await.is_err() {
                return Err(self.stopped("the driver stopped".into()));
            }
        }
    }

    fn entry(&self, index: u64) -> Result<Entry, ReplicationError> {
        use raft::Storage;
        let context = raft::GetEntriesContext::empty(false);
        match self.shared.log.entries(index, index + 1, None, context) {
            Ok(mut entries) if entries.len() == 1 => Ok(entries.remove(0)),
            Ok(_) => Err(self.stopped(format!("entry {index} is missing"))),
            Err(raft::Error::Store(raft::StorageError::Compacted)) => {
                let first = self.shared.log.state().first_lsn;
                Err(ReplicationError::Truncated {
                    group: self.shared.group,
                    lsn: first,
                    first,
                })
            }
            Err(e) => Err(self.stopped(format!("reading entry {index}: {e}"))),
        }
    }

    pub(super) fn stopped(&self, reason: String) -> ReplicationError {
        ReplicationError::Stopped {
            group: self.shared.group,
            reason,
        }
    }
}

impl From<(GroupId, LogError)> for ReplicationError {
    fn from((group, e): (GroupId, LogError)) -> Self {
        ReplicationError::Stopped {
            group,
            reason: e.to_string(),
        }
    }
}
