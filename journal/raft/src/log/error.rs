//! The replicated log's error type. On-disk problems name the segment and byte offset.

use std::io;
use std::path::PathBuf;

use super::format::LogId;

/// Result alias for the replicated log.
pub type LogResult<T> = std::result::Result<T, LogError>;

/// Everything that can go wrong in a replica's log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Another process (or another log in this one) holds the directory lock.
    #[error("log directory {dir} is locked by another process")]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
    /// An I/O operation failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the log was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The files are damaged in a way a crash cannot explain. Nothing was repaired.
    #[error("corrupt log: {segment}, offset {offset}: {reason}")]
    Corruption {
        /// The segment file (or the directory, for a damage of the whole).
        segment: PathBuf,
        /// Byte offset of the damage in the segment.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment written by another format version.
    #[error("{segment}: log format version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// The segment file.
        segment: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The directory holds another replica's log (or another group's, or cluster's).
    #[error("{segment} belongs to {found:?}, not {expected:?}")]
    WrongLog {
        /// The segment file.
        segment: PathBuf,
        /// Whose log was asked for.
        expected: LogId,
        /// Whose log it is.
        found: LogId,
    },
    /// `open` found no log: the replica was never created here, or its disk was wiped.
    /// A wiped replica must not rejoin under its old Raft id (ARCHITECTURE §5 rule 3); it
    /// is replaced by a configuration change.
    #[error("no log in {dir}: never created here, or wiped (replace the replica)")]
    NoLog {
        /// The log directory.
        dir: PathBuf,
    },
    /// `create` found a log already there.
    #[error("a log already exists in {dir}")]
    AlreadyExists {
        /// The log directory.
        dir: PathBuf,
    },
    /// A write or fsync failed earlier; nothing more is written.
    #[error("log poisoned by an earlier failure: {reason}")]
    Poisoned {
        /// The first failure.
        reason: String,
    },
    /// The caller asked for something the log must refuse (truncating committed entries,
    /// compacting past the commit index, entries that do not follow the log, bad options).
    #[error("refused: {0}")]
    Refused(String),
}

impl LogError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        LogError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the same call may succeed later with nothing repaired: only a lock held by
    /// a process that may exit. Everything else needs a person or a replacement replica.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Locked { .. })
    }
}
