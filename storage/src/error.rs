//! The storage crate's errors: [`Error`] (with `is_retryable`) for every storage operation,
//! and [`CrossbarError`], a journal record that breaks an invariant the crossbar checks.
//! Their own module, so that the version store and the crossbar both depend on it and not
//! on each other.

use journaldb_proto::{Lsn, PartitionId, Timestamp};

/// Result alias for storage.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine failed to read or write.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// Stored bytes are not what this format writes.
    #[error("corrupt storage: {0}")]
    Corruption(String),
    /// The request is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A read at `at` timed out waiting for the watermark (one journal is behind).
    #[error("read at {at} timed out: the watermark is at {watermark}")]
    WatermarkTimeout {
        /// The read timestamp.
        at: Timestamp,
        /// The watermark when the deadline passed.
        watermark: Timestamp,
    },
    /// The storage node was closed.
    #[error("storage node is closed")]
    Closed,
    /// A read below the garbage-collection horizon: the versions it needs may be gone.
    #[error("snapshot {at} is older than the garbage-collection horizon {horizon}")]
    SnapshotTooOld {
        /// The read timestamp.
        at: Timestamp,
        /// The horizon.
        horizon: Timestamp,
    },
    /// A journal record broke an invariant; nothing of it was applied.
    #[error(transparent)]
    Crossbar(#[from] CrossbarError),
    /// The journal a feed reads in process failed.
    #[error("journal: {0}")]
    Journal(#[source] journaldb_journal::Error),
}

impl Error {
    /// Whether retrying may succeed: a watermark timeout (the lagging journal may catch
    /// up) or a too-old snapshot (retry at a newer one); the rest need an operator or a
    /// fixed request.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::WatermarkTimeout { .. } | Error::SnapshotTooOld { .. } => true,
            Error::Journal(e) => e.is_retryable(),
            Error::Io(_)
            | Error::Corruption(_)
            | Error::InvalidArgument(_)
            | Error::Closed
            | Error::Crossbar(_) => false,
        }
    }
}

/// A record that breaks a journal invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrossbarError {
    /// A record of a journal the crossbar was not configured with.
    #[error("{0} is not one of this crossbar's journals")]
    UnknownJournal(PartitionId),
    /// Lsns of a journal must be dense.
    #[error("{journal}: got {got}, expected {expected}")]
    LsnGap {
        /// The journal.
        journal: PartitionId,
        /// The Lsn pushed.
        got: Lsn,
        /// The Lsn expected next.
        expected: Lsn,
    },
    /// τ of a journal's records must strictly increase.
    #[error("{journal}: {lsn} has τ {ts}, not after the previous τ {previous}")]
    TimestampOrder {
        /// The journal.
        journal: PartitionId,
        /// The record.
        lsn: Lsn,
        /// Its τ.
        ts: Timestamp,
        /// The previous record's τ.
        previous: Timestamp,
    },
    /// The record cannot be decoded.
    #[error("{journal}: {lsn} is malformed: {reason}")]
    Malformed {
        /// The journal.
        journal: PartitionId,
        /// The record.
        lsn: Lsn,
        /// What is wrong.
        reason: String,
    },
}
