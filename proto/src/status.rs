//! Errors across gRPC: a [`tonic::Status`] whose `journaldb-error` metadata names the
//! journaldb error kind, so a client rebuilds the typed error it would get embedded
//! (ARCHITECTURE §8). The gRPC code is chosen to match for clients that only look at it.

use tonic::{Code, Status};

/// The metadata key naming the error kind.
pub const ERROR_KIND: &str = "journaldb-error";
/// The metadata key carrying the topology version a node serves, on a refusal of a
/// request routed by another version.
pub const TOPOLOGY_VERSION: &str = "journaldb-topology-version";
/// The metadata key carrying the address of the node a replica believes leads a
/// partition's journal, on a refusal by a replica that does not (ARCHITECTURE §5 rule 8:
/// clients learn leaders from redirects).
pub const LEADER: &str = "journaldb-leader";
/// The metadata key marking a request one replica forwarded to its group's leader: a
/// forwarded request is never forwarded again (no loops while leadership moves).
pub const FORWARDED: &str = "journaldb-forwarded";

/// A journaldb error kind, as sent in [`ERROR_KIND`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A write-write conflict.
    Conflict,
    /// The snapshot is older than the conflict window or GC horizon.
    SnapshotTooOld,
    /// The commit's outcome could not be learned.
    CommitUnknown,
    /// Retry later.
    Unavailable,
    /// A read deadline passed.
    Timeout,
    /// A size or age limit was exceeded.
    LimitExceeded,
    /// A malformed request.
    InvalidArgument,
    /// Stored data is damaged.
    Corruption,
    /// An I/O failure.
    Io,
}

const ALL: [ErrorKind; 9] = [
    ErrorKind::Conflict,
    ErrorKind::SnapshotTooOld,
    ErrorKind::CommitUnknown,
    ErrorKind::Unavailable,
    ErrorKind::Timeout,
    ErrorKind::LimitExceeded,
    ErrorKind::InvalidArgument,
    ErrorKind::Corruption,
    ErrorKind::Io,
];

impl ErrorKind {
    /// The name sent on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Conflict => "Conflict",
            ErrorKind::SnapshotTooOld => "SnapshotTooOld",
            ErrorKind::CommitUnknown => "CommitUnknown",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::LimitExceeded => "LimitExceeded",
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::Corruption => "Corruption",
            ErrorKind::Io => "Io",
        }
    }

    /// The gRPC code that goes with it.
    pub fn code(self) -> Code {
        match self {
            ErrorKind::Conflict => Code::Aborted,
            ErrorKind::SnapshotTooOld => Code::FailedPrecondition,
            ErrorKind::CommitUnknown => Code::Unknown,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Timeout => Code::DeadlineExceeded,
            ErrorKind::LimitExceeded | ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::Corruption => Code::DataLoss,
            ErrorKind::Io => Code::Internal,
        }
    }

    /// A status of this kind.
    pub fn status(self, message: impl Into<String>) -> Status {
        let mut status = Status::new(self.code(), message);
        status.metadata_mut().insert(
            ERROR_KIND,
            self.name().parse().expect("kind names are ASCII"),
        );
        status
    }

    /// The kind a status carries; `None` if it carries none (a transport error, or a
    /// server that is not journaldb).
    pub fn of(status: &Status) -> Option<ErrorKind> {
        let name = status.metadata().get(ERROR_KIND)?.to_str().ok()?;
        ALL.into_iter().find(|k| k.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_the_round_trip_with_its_code() {
        for kind in ALL {
            let status = kind.status("why");
            assert_eq!(ErrorKind::of(&status), Some(kind));
            assert_eq!(status.code(), kind.code());
            assert_eq!(status.message(), "why");
        }
        assert_eq!(ErrorKind::of(&Status::unavailable("no metadata")), None);
    }
}
