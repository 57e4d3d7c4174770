//! The public [`Error`] of journaldb (ARCHITECTURE §8), classified for callers by
//! [`Error::is_retryable`] (re-run the transaction) and [`Error::maybe_committed`] (the
//! outcome is unknown: re-ask by `TxnId`, never re-run).

use std::time::Duration;

use bytes::Bytes;
use journaldb_adjudicator::{CommitDecision, Refusal, Unavailable, Verdict};
use journaldb_proto::LimitExceeded;

/// Result alias for journaldb.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a journaldb operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another transaction wrote `key` and committed after this one's snapshot.
    #[error("conflict: another transaction wrote key {key:?} after this transaction's snapshot")]
    Conflict {
        /// One key written by both.
        key: Bytes,
    },
    /// The snapshot is older than the conflict window or the retention window.
    #[error("snapshot too old")]
    SnapshotTooOld,
    /// The commit may or may not have happened (e.g. a timeout on the commit path).
    #[error("commit outcome unknown: the transaction may have committed")]
    CommitUnknown,
    /// Temporarily unable to serve; nothing changed.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// A hint for when to retry, if the server has one.
        retry_after: Option<Duration>,
    },
    /// A read did not finish before its deadline (reads only; see `CommitUnknown`).
    #[error("read timed out")]
    Timeout,
    /// A key, value or transaction exceeds a configured limit; nothing changed.
    #[error(transparent)]
    LimitExceeded(#[from] LimitExceeded),
    /// The request is malformed or not allowed; nothing changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Stored data is damaged.
    #[error("corruption: {0}")]
    Corruption(String),
    /// An I/O error.
    #[error("I/O error: {0}")]
    Io(String),
}

impl Error {
    /// Whether re-running the whole transaction may succeed: `Conflict`, `SnapshotTooOld`
    /// and `Unavailable`. Never `CommitUnknown`: re-running a transaction that did commit
    /// would apply it twice.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Conflict { .. } | Error::SnapshotTooOld | Error::Unavailable { .. } => true,
            Error::CommitUnknown
            | Error::Timeout
            | Error::LimitExceeded(_)
            | Error::InvalidArgument(_)
            | Error::Corruption(_)
            | Error::Io(_) => false,
        }
    }

    /// The variant's name, stable for machine-readable output (`shell --json`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::Conflict { .. } => "Conflict",
            Error::SnapshotTooOld => "SnapshotTooOld",
            Error::CommitUnknown => "CommitUnknown",
            Error::Unavailable { .. } => "Unavailable",
            Error::Timeout => "Timeout",
            Error::LimitExceeded(_) => "LimitExceeded",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::Corruption(_) => "Corruption",
            Error::Io(_) => "Io",
        }
    }

    /// Whether the transaction may have committed despite the error.
    pub fn maybe_committed(&self) -> bool {
        match self {
            Error::CommitUnknown => true,
            Error::Conflict { .. }
            | Error::SnapshotTooOld
            | Error::Unavailable { .. }
            | Error::Timeout
            | Error::LimitExceeded(_)
            | Error::InvalidArgument(_)
            | Error::Corruption(_)
            | Error::Io(_) => false,
        }
    }
}

impl From<journaldb_journal::Error> for Error {
    fn from(e: journaldb_journal::Error) -> Self {
        use journaldb_journal::Error as J;
        let msg = e.to_string();
        match e {
            J::Corruption { .. } | J::UnsupportedVersion { .. } => Error::Corruption(msg),
            J::Locked { .. } | J::InvalidOptions(_) | J::RecordTooLarge { .. } => {
                Error::InvalidArgument(msg)
            }
            _ => Error::Io(msg),
        }
    }
}

impl From<journaldb_adjudicator::RecoveryError> for Error {
    fn from(e: journaldb_adjudicator::RecoveryError) -> Self {
        match e {
            journaldb_adjudicator::RecoveryError::Journal(e) => Error::from(e),
            other => Error::Corruption(other.to_string()),
        }
    }
}

impl From<journaldb_storage::Error> for Error {
    fn from(e: journaldb_storage::Error) -> Self {
        use journaldb_storage::Error as S;
        let msg = e.to_string();
        match e {
            S::Journal(e) => Error::from(e),
            S::WatermarkTimeout { .. } => Error::Unavailable {
                reason: msg,
                retry_after: None,
            },
            S::SnapshotTooOld { .. } => Error::SnapshotTooOld,
            S::Corruption(_) | S::Crossbar(_) => Error::Corruption(msg),
            S::InvalidArgument(_) => Error::InvalidArgument(msg),
            _ => Error::Io(msg),
        }
    }
}

/// The error a refused [`journaldb_adjudicator::Partition`] call becomes.
pub(crate) fn refusal(r: Refusal) -> Error {
    match r {
        Refusal::Decision(d) => map_verdict(d),
        Refusal::AppendFailed => Error::CommitUnknown,
    }
}

fn map_verdict(d: CommitDecision) -> Error {
    match d {
        CommitDecision::Verdict(Verdict::Conflict { key }) => Error::Conflict { key },
        CommitDecision::Verdict(Verdict::TooOld) => Error::SnapshotTooOld,
        CommitDecision::Unknown | CommitDecision::InFlight { .. } => Error::CommitUnknown,
        CommitDecision::Unavailable(Unavailable::SteppedDown) => Error::Unavailable {
            reason: "the partition's adjudicator stepped down after a journal failure; reopen the database".into(),
            retry_after: None,
        },
        CommitDecision::Unavailable(u) => Error::Unavailable {
            reason: format!("{u:?}"),
            retry_after: None,
        },
        CommitDecision::Invalid(m) => Error::InvalidArgument(m),
        CommitDecision::Verdict(Verdict::Committed { .. })
        | CommitDecision::Append { .. }
        | CommitDecision::AbortThen { .. } => {
            Error::InvalidArgument("unexpected commit decision".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_definite_failures_are_retryable_and_only_commit_unknown_may_have_committed() {
        let all = [
            Error::Conflict {
                key: Bytes::from_static(b"k"),
            },
            Error::SnapshotTooOld,
            Error::CommitUnknown,
            Error::Unavailable {
                reason: "x".into(),
                retry_after: None,
            },
            Error::Timeout,
            Error::InvalidArgument("x".into()),
            Error::Corruption("x".into()),
            Error::Io("x".into()),
        ];
        let retryable: Vec<bool> = all.iter().map(Error::is_retryable).collect();
        assert_eq!(
            retryable,
            [true, true, false, true, false, false, false, false]
        );
        for e in &all {
            assert_eq!(e.maybe_committed(), matches!(e, Error::CommitUnknown));
            assert!(!(e.is_retryable() && e.maybe_committed()), "{e}");
        }
    }
}
