//! The journal's error type. Every failure names what it was doing and, for on-disk
//! problems, the segment file and byte offset.

use std::io;
use std::path::PathBuf;

use journaldb_proto::Lsn;

/// Result alias for the journal.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or another `Journal` in this one) holds the directory lock.
    #[error("journal directory {dir} is locked by another process")]
    Locked {
        /// The journal directory.
        dir: PathBuf,
    },
    /// An I/O operation failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the journal was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The journal's files are damaged in a way a crash cannot explain. Nothing was
    /// deleted or repaired; the files are as they were found.
    #[error("corrupt journal: {segment}, offset {offset}: {reason}")]
    Corruption {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the damage in the segment.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment was written by a newer (or unknown) format version.
    #[error("{segment} has journal format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The segment file.
        segment: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A write or fsync failed earlier; the journal refuses every later append rather
    /// than retry and risk acknowledging data the disk dropped. Reopen it to recover.
    #[error("journal is poisoned by an earlier I/O error and refuses writes: {cause}")]
    Poisoned {
        /// The I/O error that poisoned it.
        cause: String,
    },
    /// The journal was closed.
    #[error("journal is closed")]
    Closed,
    /// A record is larger than `JournalOptions::max_record_bytes`.
    #[error("record of {size} bytes exceeds the journal's limit of {limit} bytes")]
    RecordTooLarge {
        /// The record's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The position asked for was dropped by `truncate_prefix`.
    #[error("{requested} was truncated; the journal now starts at {first}")]
    Truncated {
        /// The position asked for.
        requested: Lsn,
        /// The first position still held.
        first: Lsn,
    },
    /// The options are inconsistent.
    #[error("invalid journal options: {0}")]
    InvalidOptions(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether retrying the same operation on the same `Journal` may succeed. No journal
    /// error is: a poisoned or closed journal must be reopened, and corrupt files or a
    /// held lock need an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Locked { .. }
            | Error::Io { .. }
            | Error::Corruption { .. }
            | Error::UnsupportedVersion { .. }
            | Error::Poisoned { .. }
            | Error::Closed
            | Error::RecordTooLarge { .. }
            | Error::Truncated { .. }
            | Error::InvalidOptions(_) => false,
        }
    }
}
