//! The state machine's inputs and outputs: the requests an [`Adjudicator`](crate::Adjudicator)
//! decides — a single-partition [`CommitRequest`], a cross-partition [`PrepareRequest`] —
//! and what it decides ([`CommitDecision`], [`PrepareDecision`], [`StatusDecision`],
//! [`TxnStatus`]), with the [`Vote`] a participant holds. Plain data: they depend on nothing
//! else in this crate, so the single- and cross-partition halves of the state machine, the
//! I/O around it and the service all build on them without building on each other.

use bytes::Bytes;
use journaldb_proto::{Epoch, Lsn, Mutation, PartitionId, Timestamp, TxnId, pb};

/// A commit request: the write set of a transaction that read at `start_ts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRequest {
    /// Chosen by the client; the same on every retry of this commit.
    pub txn_id: TxnId,
    /// τs: the snapshot the transaction read at.
    pub start_ts: Timestamp,
    /// The writes (non-empty; read-only transactions never reach an adjudicator).
    pub mutations: Vec<Mutation>,
    /// Whether the client already sent this commit and did not learn the outcome.
    pub retry: bool,
}

/// The decision on a transaction: a value, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Committed at τc.
    Committed {
        /// τc.
        commit_ts: Timestamp,
    },
    /// Another transaction wrote `key` and committed after this one's snapshot.
    Conflict {
        /// One key written by both.
        key: Bytes,
    },
    /// The snapshot is older than the conflict window; retry with a new snapshot.
    TooOld,
}

/// What the caller must do with a commit request.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitDecision {
    /// Append `record`; once it is durable and `now().earliest > commit_ts`, answer
    /// `Committed { commit_ts }`. The adjudicator already counts it as committed.
    Append {
        /// τc.
        commit_ts: Timestamp,
        /// The `Commit` record to append to this adjudicator's journal.
        record: pb::Record,
    },
    /// Answer this verdict (for `Committed`, after commit wait). Nothing to append.
    Verdict(Verdict),
    /// A retry of a commit whose record is being appended: answer `Committed` once that
    /// append is durable (and commit wait has passed).
    InFlight {
        /// τc of the first attempt.
        commit_ts: Timestamp,
    },
    /// A retried request (`retry: true`) for a transaction this adjudicator never saw
    /// commit, refused by `verdict`: the original request may still be on its way, so the
    /// refusal is made binding first — append `record` (a coordinator's abort), and once it
    /// is durable answer `verdict`. Nothing of this transaction commits afterwards.
    AbortThen {
        /// The refusal to answer once the abort is durable.
        verdict: Verdict,
        /// The `Decided` record of the abort (boxed: a rare decision should not grow
        /// every other one).
        record: Box<pb::Record>,
    },
    /// Refused for now, nothing changed; the client may retry.
    Unavailable(Unavailable),
    /// A retry whose outcome this adjudicator no longer remembers: the transaction may
    /// have committed. The client must not re-run it.
    Unknown,
    /// The request is malformed; nothing changed.
    Invalid(String),
}

/// Why a request was refused with nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// τs (or the τc it would need) is too far ahead of this adjudicator's clock.
    SkewGuard {
        /// The offending timestamp.
        ts: Timestamp,
        /// The latest this adjudicator accepts now.
        limit: Timestamp,
    },
    /// An append failed; this adjudicator has stepped down and decides nothing more.
    SteppedDown,
    /// The coordinator aborted the transaction for good before it committed (asked
    /// `Status`, or refused a retry): it did not commit and may be re-run.
    AbortedByResolution,
}

/// A participant's undecided vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The vote τ (also the `Prepared` record's τ).
    pub vote_ts: Timestamp,
    /// The keys prepared here.
    pub keys: Vec<Bytes>,
    /// The coordinator to ask if no decision arrives.
    pub coordinator: PartitionId,
    /// When it was cast (`now().latest` then; the vote τ after a replay): the vote is
    /// resolved by asking the coordinator once it is older than the vote timeout.
    pub cast_at: Timestamp,
    /// Where its `Prepared` record was queued (`None` for a vote replayed from the
    /// journal, durable by then): until that Lsn is durable, the vote exists only in
    /// memory and is given to no one (ARCHITECTURE §5 rule 1).
    pub lsn: Option<Lsn>,
}

/// A `Prepare` for the keys of one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareRequest {
    /// The transaction.
    pub txn_id: TxnId,
    /// Its snapshot τs.
    pub start_ts: Timestamp,
    /// The keys it writes in this participant's partition.
    pub keys: Vec<Bytes>,
    /// The coordinating partition.
    pub coordinator: PartitionId,
    /// The coordinator's epoch; only that epoch may append the `Commit`.
    pub coordinator_epoch: Epoch,
}

/// What a participant does with a `Prepare`.
#[derive(Debug, Clone, PartialEq)]
pub enum PrepareDecision {
    /// Append this `Prepared` record; once durable, reply with `vote_ts`.
    Append {
        /// The vote.
        vote_ts: Timestamp,
        /// The `Prepared` record.
        record: pb::Record,
    },
    /// Already voted (a retried `Prepare`): reply with the same vote — once the record
    /// at `pending` is durable, if it is given (the first `Prepare`'s record may still be
    /// in flight; a vote answered from memory could be lost with it).
    Voted {
        /// The vote given before.
        vote_ts: Timestamp,
        /// The `Prepared` record's Lsn, if it is not known durable yet.
        pending: Option<Lsn>,
    },
    /// No vote: the transaction must abort (a conflict, `TooOld`, skew, stepped down…).
    Refused(CommitDecision),
}

/// A coordinator's answer to `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    /// Committed at τc, durably.
    Committed(Timestamp),
    /// The `Commit` (or the abort) is being appended: ask again.
    InFlight,
    /// Aborted, durably (possibly decided just now, by this question): it never commits.
    Aborted,
    /// Unknown: the transaction's τs is below the coordinator's horizon, so it may have
    /// committed and its outcome been forgotten since. Never a reason to re-run it. It
    /// carries the coordinator's floor: no commit of the transaction can come after it (its
    /// τs is below the horizon), and any earlier one had a commit τ at or below it — so a
    /// participant may decide its vote as committed at the floor, conservatively.
    TooOld(Timestamp),
}

impl TxnStatus {
    /// The `Status` reply that carries this answer over the wire.
    pub fn into_reply(self) -> pb::StatusReply {
        use pb::status_reply::Status as S;
        let status = match self {
            TxnStatus::Committed(ts) => S::CommittedTs(ts.as_nanos()),
            TxnStatus::Aborted => S::Aborted(pb::Aborted {}),
            TxnStatus::InFlight => S::InFlight(pb::Aborted {}),
            TxnStatus::TooOld(floor) => S::TooOld(floor.as_nanos()),
        };
        pb::StatusReply {
            status: Some(status),
        }
    }

    /// The answer a `Status` reply carries; `None` for an empty reply (a peer that sent
    /// no answer, which a caller treats as no answer at all).
    pub fn from_reply(reply: pb::StatusReply) -> Option<TxnStatus> {
        use pb::status_reply::Status as S;
        Some(match reply.status? {
            S::CommittedTs(ts) => TxnStatus::Committed(Timestamp::from_nanos(ts)),
            S::Aborted(_) => TxnStatus::Aborted,
            S::InFlight(_) => TxnStatus::InFlight,
            S::TooOld(floor) => TxnStatus::TooOld(Timestamp::from_nanos(floor)),
        })
    }
}

/// What a coordinator does with a `Status` question.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusDecision {
    /// The answer.
    Known(TxnStatus),
    /// Undecided: it is aborted now. Append this `Decided` record; once it is durable the
    /// answer is [`TxnStatus::Aborted`] (until then, other askers hear `InFlight`).
    Abort(pb::Record),
    /// Not answered, nothing changed (stepped down, or the τ is beyond the skew guard).
    Refused(CommitDecision),
}
