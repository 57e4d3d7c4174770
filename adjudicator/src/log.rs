//! [`PartitionLog`]: the journal a [`crate::Partition`] appends its records to, as far as
//! the commit path needs one — queue a record now (getting its Lsn), wait for room before
//! the critical section, wait for a record to be durable, and know the durable and
//! submitted ends.
//!
//! Two journals implement it: the single-node [`Journal`] (the embedded database and
//! single-replica clusters: durable = written and fsynced), and a replicated journal bound
//! to one Raft term (durable = committed in that term while its node still leads it,
//! ARCHITECTURE §5 rule 1), which the cluster node provides. A record that cannot become
//! durable in its journal fails its wait; the adjudicator then steps down.

use std::future::Future;

use bytes::Bytes;
use journaldb_journal::{Journal, Submitted};
use journaldb_proto::Lsn;

/// A record queued on a [`PartitionLog`].
pub trait Submission: Send {
    /// Its Lsn.
    fn lsn(&self) -> Lsn;
    /// Resolves once it is durable; `Err` (with why) if it may never be.
    fn durable(self) -> impl Future<Output = Result<Lsn, String>> + Send;
}

/// Why a record was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// Larger than the journal takes; nothing was queued.
    TooLarge {
        /// The record's size.
        size: u64,
        /// The journal's limit.
        limit: u64,
    },
    /// The journal takes no more records (failed, closed, or no longer this writer's).
    Failed(String),
}

/// The journal a partition's adjudicator appends to.
pub trait PartitionLog: Send + Sync + 'static {
    /// A queued record.
    type Submitted<'a>: Submission + 'a
    where
        Self: 'a;

    /// Queues `record` without waiting, giving it the next Lsn.
    fn submit_now(&self, record: Bytes) -> Result<Self::Submitted<'_>, SubmitError>;

    /// Resolves when the journal's queue has room (awaited before the critical section).
    fn room(&self) -> impl Future<Output = ()> + Send;

    /// Every record below this Lsn is durable.
    fn durable_end(&self) -> Lsn;

    /// Resolves once every record below `end` is durable; `Err` (with why) if one of them
    /// may never be.
    fn durable_through(&self, end: Lsn) -> impl Future<Output = Result<(), String>> + Send;

    /// The Lsn the next queued record gets.
    fn submitted_end(&self) -> Lsn;

    /// What to call this journal in messages.
    fn describe(&self) -> String;
}

impl Submission for Submitted<'_> {
    fn lsn(&self) -> Lsn {
        Submitted::lsn(self)
    }

    async fn durable(self) -> Result<Lsn, String> {
        Submitted::durable(self).await.map_err(|e| e.to_string())
    }
}

impl PartitionLog for Journal {
    type Submitted<'a> = Submitted<'a>;

    fn submit_now(&self, record: Bytes) -> Result<Submitted<'_>, SubmitError> {
        Journal::submit_now(self, record).map_err(|e| match e {
            journaldb_journal::Error::RecordTooLarge { size, limit } => {
                SubmitError::TooLarge { size, limit }
            }
            e => SubmitError::Failed(e.to_string()),
        })
    }

    fn room(&self) -> impl Future<Output = ()> + Send {
        Journal::room(self)
    }

    fn durable_end(&self) -> Lsn {
        Journal::durable_end(self)
    }

    fn submitted_end(&self) -> Lsn {
        Journal::submitted_end(self)
    }

    async fn durable_through(&self, end: Lsn) -> Result<(), String> {
        Journal::durable_through(self, end)
            .await
            .map_err(|e| e.to_string())
    }

    fn describe(&self) -> String {
        self.dir().display().to_string()
    }
}
