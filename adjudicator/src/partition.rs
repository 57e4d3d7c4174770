//! [`Partition`]: one adjudicator with its journal, doing the I/O the state machine leaves
//! to its caller (ARCHITECTURE §4, §5). The critical section — decide, then queue the record
//! on the journal — runs under one lock, so journal order is τ order; durability is awaited
//! outside it. A failed append makes the adjudicator step down: nothing it decides after
//! that can be trusted until a reopen (or failover) recovers the journal.
//!
//! The lock is a synchronous one, held for microseconds and never across an `.await`: an
//! async mutex hands the lock to the next waiting task, which then holds it until a worker
//! gets round to polling it — under load, a convoy in which most of a commit's latency is
//! waiting for the lock. Backpressure is therefore awaited before locking
//! ([`PartitionLog::room`]) and the record queued without waiting
//! ([`PartitionLog::submit_now`]).
//!
//! The journal is any [`PartitionLog`]: the single-node [`Journal`] by default, or a
//! replicated journal bound to one Raft term, whose records are durable once committed in
//! that term (ARCHITECTURE §5); the commit path is the same.
//!
//! The embedded database calls a `Partition` directly; the `AdjudicatorService` serves the
//! same methods over gRPC, so the commit path is written once. It does not choose τs,
//! route keys to partitions or drive the cross-partition protocol across partitions: the
//! transaction (client side) does.

use std::sync::Arc;

use bytes::Bytes;
use journaldb_journal::Journal;
use journaldb_proto::{Lsn, Mutation, PartitionId, TimeInterval, Timestamp, TxnId, pb};
use parking_lot::{Mutex, MutexGuard};
use prost::Message;

use crate::core::{Adjudicator, AdjudicatorConfig};
use crate::log::{PartitionLog, Submission, SubmitError};
use crate::protocol::{
    CommitDecision, CommitRequest, PrepareDecision, PrepareRequest, StatusDecision, TxnStatus,
    Verdict,
};
use crate::replay::{ReplayError, ReplayMode};
use journaldb_proto::PlantedBug;

/// Why a [`Partition`] call did not commit (or vote).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The adjudicator's decision: a conflict, a too-old snapshot, unavailability, an
    /// unknown outcome, an invalid request (never `Append` or `Committed`).
    Decision(CommitDecision),
    /// The journal failed while appending: the record may or may not be durable. The
    /// adjudicator has stepped down.
    AppendFailed,
}

/// One partition: its adjudicator and its journal.
pub struct Partition<L: PartitionLog = Journal> {
    id: PartitionId,
    adj: Mutex<Adjudicator>,
    journal: Arc<L>,
    /// The planted [`PlantedBug::AckBeforeDurable`].
    ack_before_durable: bool,
    /// The planted [`PlantedBug::ProposeInLaterTerm`]: a record lost with its term does
    /// not make the adjudicator step down (its memory is carried into a later term).
    keep_memory: bool,
}

impl<L: PartitionLog> std::fmt::Debug for Partition<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("id", &self.id)
            .field("journal", &self.journal.describe())
            .finish_non_exhaustive()
    }
}

fn encode(record: &pb::Record) -> Bytes {
    Bytes::from(record.encode_to_vec())
}

/// Why a partition could not be recovered from its journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// Reading the journal failed.
    #[error(transparent)]
    Journal(#[from] journaldb_journal::Error),
    /// A record's payload is not a `Record`.
    #[error("{partition}, {lsn}: undecodable record: {reason}")]
    Undecodable {
        /// The partition.
        partition: PartitionId,
        /// Where the record is.
        lsn: Lsn,
        /// What the decoder said.
        reason: String,
    },
    /// The records cannot be replayed.
    #[error("{partition}: {error}")]
    Replay {
        /// The partition.
        partition: PartitionId,
        /// What is wrong with them.
        error: ReplayError,
    },
}

impl Partition {
    /// Recovery (ARCHITECTURE §4): partition `id`'s adjudicator rebuilt from `journal`'s
    /// records from `from` on — read, decoded and [`Adjudicator::replay`]ed in `mode`;
    /// `owns` says which keys are the partition's. The one recovery both the embedded
    /// database and a cluster node run.
    pub fn recover(
        id: PartitionId,
        config: AdjudicatorConfig,
        journal: Arc<Journal>,
        from: Lsn,
        owns: impl Fn(&[u8]) -> bool,
        mode: ReplayMode,
    ) -> Result<Partition, RecoveryError> {
        let payloads = journal
            .read_from(from)?
            .collect::<Result<Vec<_>, journaldb_journal::Error>>()?;
        let adj = replay_payloads(id, config, payloads, owns, mode)?;
        Ok(Partition::new(id, adj, journal))
    }
}

/// Partition `id`'s adjudicator rebuilt from its journal's payloads `(Lsn, encoded
/// Record)` in order — decoded and [`Adjudicator::replay`]ed in `mode`. The recovery of
/// every journal, single-node or replicated.
pub fn replay_payloads(
    id: PartitionId,
    config: AdjudicatorConfig,
    payloads: impl IntoIterator<Item = (Lsn, Bytes)>,
    owns: impl Fn(&[u8]) -> bool,
    mode: ReplayMode,
) -> Result<Adjudicator, RecoveryError> {
    let records = payloads
        .into_iter()
        .map(|(lsn, payload)| {
            pb::Record::decode(payload).map_err(|e| RecoveryError::Undecodable {
                partition: id,
                lsn,
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Adjudicator::replay(id, config, records, owns, mode).map_err(|error| RecoveryError::Replay {
        partition: id,
        error,
    })
}

impl<L: PartitionLog> Partition<L> {
    /// Partition `id`, decided by `adj` (typically [`Adjudicator::replay`]ed from `journal`).
    pub fn new(id: PartitionId, adj: Adjudicator, journal: Arc<L>) -> Self {
        Partition {
            id,
            ack_before_durable: adj.config().planted_bug == Some(PlantedBug::AckBeforeDurable),
            keep_memory: adj.config().planted_bug == Some(PlantedBug::ProposeInLaterTerm),
            adj: Mutex::new(adj),
            journal,
        }
    }

    /// The partition's id.
    pub fn id(&self) -> PartitionId {
        self.id
    }

    /// The partition's journal.
    pub fn journal(&self) -> &Arc<L> {
        &self.journal
    }

    /// The adjudicator itself, locked: for inspection and maintenance
    /// ([`Adjudicator::advance_horizon`]). Appending while holding it is this module's job.
    /// A synchronous lock: never hold it across an `.await`.
    pub fn adjudicator(&self) -> MutexGuard<'_, Adjudicator> {
        self.adj.lock()
    }

    /// Queues `record`, the decision on `txn` (if it concerns one), while `adj` (this
    /// partition's adjudicator) is locked. A record the journal refuses unwritten (larger
    /// than its record limit) undoes the decision and is an invalid request; any other
    /// failure may have written it, and the adjudicator steps down.
    fn submit(
        &self,
        adj: &mut Adjudicator,
        record: &pb::Record,
        txn: Option<TxnId>,
    ) -> Result<L::Submitted<'_>, Refusal> {
        match self.journal.submit_now(encode(record)) {
            Ok(submitted) => {
                match (txn, &record.kind) {
                    (Some(txn), Some(pb::record::Kind::Decided(_))) => {
                        adj.decision_queued(txn, submitted.lsn());
                    }
                    (Some(txn), _) => adj.queued(txn, submitted.lsn()),
                    (None, _) => {}
                }
                Ok(submitted)
            }
            Err(SubmitError::TooLarge { size, limit }) => {
                if let Some(txn) = txn {
                    adj.forget(txn);
                }
                Err(Refusal::Decision(CommitDecision::Invalid(format!(
                    "the record is {size} bytes, over the journal's limit of {limit}"
                ))))
            }
            Err(SubmitError::Failed(_)) => {
                self.step_down(adj);
                Err(Refusal::AppendFailed)
            }
        }
    }

    /// A record may or may not be durable: nothing the adjudicator decides from here on
    /// can be trusted, so it steps down (until a reopen or failover rebuilds it).
    fn step_down(&self, adj: &mut Adjudicator) {
        if !self.keep_memory {
            adj.append_failed();
        }
    }

    /// Waits until a queued record is durable; the adjudicator steps down if it cannot be.
    async fn durable(&self, submitted: L::Submitted<'_>) -> Result<Lsn, Refusal> {
        if self.ack_before_durable {
            return Ok(submitted.lsn());
        }
        match submitted.durable().await {
            Ok(lsn) => Ok(lsn),
            Err(_) => {
                self.step_down(&mut self.adj.lock());
                Err(Refusal::AppendFailed)
            }
        }
    }

    /// The critical section: once the journal's queue has room, locks the adjudicator,
    /// lets `decide` decide, queues the record it asks for and unlocks; then waits (without
    /// the lock) until that record is durable.
    async fn decide_then_append<T>(
        &self,
        decide: impl FnOnce(&mut Adjudicator) -> Result<Step<T>, Refusal>,
    ) -> Result<T, Refusal> {
        let (value, submitted) = self.decide_then_submit(decide).await?;
        if let Some(submitted) = submitted {
            self.durable(submitted).await?;
        }
        Ok(value)
    }

    /// [`Partition::decide_then_append`] without the wait: the answer, and the queued
    /// record if the decision appended one.
    async fn decide_then_submit<T>(
        &self,
        decide: impl FnOnce(&mut Adjudicator) -> Result<Step<T>, Refusal>,
    ) -> Result<(T, Option<L::Submitted<'_>>), Refusal> {
        self.journal.room().await;
        let mut adj = self.adj.lock();
        adj.observe_durable(self.journal.durable_end());
        Ok(match decide(&mut adj)? {
            Step::Done(value) => (value, None),
            Step::Append(value, record, txn) => (value, Some(self.submit(&mut adj, &record, txn)?)),
        })
    }

    /// A single-partition commit up to the queued `Commit` record, for a caller that learns
    /// of its durability another way (embedded: storage has applied it, and storage applies
    /// only durable records) and so need not be woken for it separately: τc, and the
    /// record (`None` for a retry answered at once). Finish with
    /// [`Partition::finish_commit`].
    pub async fn commit_queued(
        &self,
        now: TimeInterval,
        req: &CommitRequest,
    ) -> Result<(Timestamp, Option<L::Submitted<'_>>), Refusal> {
        let (outcome, submitted) = self
            .decide_then_submit(|adj| match adj.commit(now, req) {
                CommitDecision::AbortThen { verdict, record } => {
                    Ok(Step::Append(Err(verdict), *record, Some(req.txn_id)))
                }
                decision => commit_step(req.txn_id, decision).map(|step| step.map(Ok)),
            })
            .await?;
        match outcome {
            Ok(commit_ts) => Ok((commit_ts, submitted)),
            // A retry refused for good: the refusal is answered once the abort that makes
            // it binding is durable.
            Err(verdict) => {
                if let Some(submitted) = submitted {
                    self.durable(submitted).await?;
                }
                Err(Refusal::Decision(CommitDecision::Verdict(verdict)))
            }
        }
    }

    /// Completes [`Partition::commit_queued`]: `known_durable` if the caller saw the
    /// record durable; otherwise waits for it (the adjudicator steps down if it cannot
    /// be). Retries then get `Committed`.
    pub async fn finish_commit(
        &self,
        txn_id: TxnId,
        submitted: L::Submitted<'_>,
        known_durable: bool,
    ) -> Result<(), Refusal> {
        if known_durable {
            // Paired with storage's rule that it applies only durable records: the caller
            // was woken by the storage watermark passing τc, which implies the record is
            // below the journal's durable end. Should that ever not hold, stop here rather
            // than acknowledge a commit a crash could lose.
            assert!(
                submitted.lsn() < self.journal.durable_end(),
                "{txn_id}: treated as durable at {}, but the journal is durable only below {}",
                submitted.lsn(),
                self.journal.durable_end()
            );
        } else {
            self.durable(submitted).await?;
        }
        self.adj.lock().appended(txn_id);
        Ok(())
    }

    /// A single-partition commit: τc once the `Commit` record is durable (the commit point).
    /// A retry of a committed transaction reports its τc again.
    pub async fn commit(
        &self,
        now: TimeInterval,
        req: &CommitRequest,
    ) -> Result<Timestamp, Refusal> {
        let (commit_ts, queued) = self.commit_queued(now, req).await?;
        if let Some(submitted) = queued {
            self.finish_commit(req.txn_id, submitted, false).await?;
        }
        Ok(commit_ts)
    }

    /// Participant: votes on a cross-partition transaction; the vote τ once its `Prepared`
    /// record is durable. A vote already cast is answered again once the record that cast
    /// it is durable — at once if it is already.
    pub async fn prepare(
        &self,
        now: TimeInterval,
        req: &PrepareRequest,
    ) -> Result<Timestamp, Refusal> {
        let (vote_ts, pending) = self
            .decide_then_append(|adj| match adj.prepare(now, req) {
                PrepareDecision::Append { vote_ts, record } => {
                    Ok(Step::Append((vote_ts, None), record, Some(req.txn_id)))
                }
                PrepareDecision::Voted { vote_ts, pending } => Ok(Step::Done((vote_ts, pending))),
                PrepareDecision::Refused(d) => Err(Refusal::Decision(d)),
            })
            .await?;
        if let Some(lsn) = pending
            && self.journal.durable_through(lsn.next()).await.is_err()
        {
            self.step_down(&mut self.adj.lock());
            return Err(Refusal::AppendFailed);
        }
        Ok(vote_ts)
    }

    /// Coordinator: appends the one `Commit` of a cross-partition transaction whose
    /// participants all voted; τc once it is durable.
    pub async fn commit_prepared(
        &self,
        now: TimeInterval,
        txn_id: TxnId,
        start_ts: Timestamp,
        votes: &[Timestamp],
        mutations: &[Mutation],
        participants: &[PartitionId],
    ) -> Result<Timestamp, Refusal> {
        let commit_ts = self
            .decide_then_append(|adj| {
                commit_step(
                    txn_id,
                    adj.commit_prepared(now, txn_id, start_ts, votes, mutations, participants),
                )
            })
            .await?;
        self.adj.lock().appended(txn_id);
        Ok(commit_ts)
    }

    /// Participant: records the outcome of a transaction it voted for and queues its
    /// `Decided` record. With `wait`, returns once that record is durable; without, once it
    /// is queued (the decision is already in force in memory). Nothing to do if it holds no
    /// undecided vote for `txn_id`; a commit τ below the vote or beyond the skew guard is
    /// refused with nothing changed.
    pub async fn decide(
        &self,
        now: TimeInterval,
        txn_id: TxnId,
        outcome: Option<Timestamp>,
        wait: bool,
    ) -> Result<(), Refusal> {
        self.record_decision(txn_id, wait, |adj| adj.decide(now, txn_id, outcome))
            .await
    }

    /// Participant: records the coordinator's own answer about a vote (its `Status`),
    /// which is never refused (see [`Adjudicator::decide_resolved`]).
    pub async fn decide_resolved(
        &self,
        now: TimeInterval,
        txn_id: TxnId,
        outcome: Option<Timestamp>,
        wait: bool,
    ) -> Result<(), Refusal> {
        self.record_decision(txn_id, wait, |adj| {
            Ok(adj.decide_resolved(now, txn_id, outcome))
        })
        .await
    }

    /// Queues the `Decided` record `decide` returns (if any) and, with `wait`, waits until
    /// it is durable. A vote already decided is answered, with `wait`, once the record that
    /// decided it is durable (§5 rule 1: a repeated `Decide` answered from memory would stop
    /// its sender's retries while a failover can still lose that record).
    async fn record_decision(
        &self,
        txn_id: TxnId,
        wait: bool,
        decide: impl FnOnce(&mut Adjudicator) -> Result<Option<pb::Record>, CommitDecision>,
    ) -> Result<(), Refusal> {
        let (pending, submitted) = self
            .decide_then_submit(|adj| match decide(adj) {
                Ok(Some(record)) => Ok(Step::Append(None, record, Some(txn_id))),
                Ok(None) => Ok(Step::Done(adj.decision_pending(txn_id))),
                Err(refused) => Err(Refusal::Decision(refused)),
            })
            .await?;
        if !wait {
            return Ok(());
        }
        if let Some(submitted) = submitted {
            self.durable(submitted).await?;
        } else if let Some(lsn) = pending
            && self.journal.durable_through(lsn.next()).await.is_err()
        {
            self.step_down(&mut self.adj.lock());
            return Err(Refusal::AppendFailed);
        }
        Ok(())
    }

    /// Coordinator: the fate of `txn_id`, whose τs is at most `start_bound`. An undecided
    /// transaction is aborted for good, and `Aborted` answered once that decision is
    /// durable; `TooOld` if it may have been forgotten (see [`Adjudicator::status`]).
    pub async fn status(
        &self,
        now: TimeInterval,
        txn_id: TxnId,
        start_bound: Timestamp,
    ) -> Result<TxnStatus, Refusal> {
        let (status, submitted) = self
            .decide_then_submit(|adj| match adj.status(now, txn_id, start_bound) {
                StatusDecision::Known(status) => Ok(Step::Done(status)),
                StatusDecision::Abort(record) => {
                    Ok(Step::Append(TxnStatus::Aborted, record, Some(txn_id)))
                }
                StatusDecision::Refused(d) => Err(Refusal::Decision(d)),
            })
            .await?;
        if let Some(submitted) = submitted {
            self.durable(submitted).await?;
        }
        Ok(status)
    }

    /// Resolves this participant's votes left undecided past the vote timeout (their
    /// client died, was cut off, or lost the outcome): asks each one's coordinator with
    /// `ask` — `Status` with the vote τ as the bound — and records the answer. An
    /// unanswered or still-undecided question leaves the vote for the next round. Returns
    /// how many votes were decided.
    pub async fn resolve_overdue<F, Fut>(&self, now: TimeInterval, ask: F) -> usize
    where
        F: Fn(PartitionId, TxnId, Timestamp) -> Fut,
        Fut: Future<Output = Option<TxnStatus>>,
    {
        let overdue = self.adj.lock().overdue(now);
        let mut decided = 0;
        // A coordinator that did not answer is not asked again this round: one unreachable
        // node must not hold up the votes of every other coordinator.
        let mut unreachable = Vec::new();
        for (txn, vote) in overdue {
            if unreachable.contains(&vote.coordinator) {
                continue;
            }
            let outcome = match ask(vote.coordinator, txn, vote.vote_ts).await {
                Some(TxnStatus::Committed(ts)) => Some(ts),
                Some(TxnStatus::Aborted) => None,
                // Maybe committed and forgotten: committed at the coordinator's floor, as
                // far as this participant's conflict window is concerned (conservative).
                Some(TxnStatus::TooOld(floor)) => Some(floor),
                Some(TxnStatus::InFlight) => continue,
                None => {
                    unreachable.push(vote.coordinator);
                    continue;
                }
            };
            if self.decide_resolved(now, txn, outcome, false).await.is_ok() {
                decided += 1;
            }
        }
        decided
    }

    /// Promises, durably, that no record with τ ≤ `ts` will follow those appended so far:
    /// appends a `Heartbeat` at `ts` if the floor had to move (for storage replicas in other
    /// processes, which learn it from the journal). Returns the floor afterwards.
    pub async fn promise_durable(&self, ts: Timestamp) -> Result<Timestamp, Refusal> {
        // When no record is needed, the floor may stand on records only queued so far:
        // the promise is answered once they are durable (in a replicated journal, one that
        // never commits would take the floor with it, §5 rule 1).
        let mut queued_end = Lsn::ZERO;
        let floor = self
            .decide_then_append(|adj| {
                if adj.is_stepped_down() {
                    return Err(Refusal::AppendFailed);
                }
                let record = adj.promise(ts);
                let floor = adj.floor();
                Ok(match record {
                    Some(record) => Step::Append(floor, record, None),
                    None => {
                        queued_end = self.journal.submitted_end();
                        Step::Done(floor)
                    }
                })
            })
            .await?;
        if self.journal.durable_through(queued_end).await.is_err() {
            self.step_down(&mut self.adj.lock());
            return Err(Refusal::AppendFailed);
        }
        Ok(floor)
    }

    /// Promises, in memory, that no record with τ ≤ `ts` will follow those handed out so
    /// far. Returns the last Lsn handed out when the promise raised the floor — what a
    /// storage node in the same process needs to count the promise — and `None` if the
    /// journal already held (or was about to hold) a record at or above `ts`.
    pub fn promise(&self, ts: Timestamp) -> Option<Lsn> {
        let mut adj = self.adj.lock();
        adj.promise(ts)?;
        // Under the lock nothing else is being handed out.
        Some(Lsn::new(
            self.journal.submitted_end().get().saturating_sub(1),
        ))
    }
}

/// What a decision asks of [`Partition::decide_then_append`].
enum Step<T> {
    /// Nothing to append: the answer is ready.
    Done(T),
    /// Append the record (the decision on this transaction, if it is about one); the
    /// answer holds once it is durable.
    Append(T, pb::Record, Option<TxnId>),
}

impl<T> Step<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Step<U> {
        match self {
            Step::Done(value) => Step::Done(f(value)),
            Step::Append(value, record, txn) => Step::Append(f(value), record, txn),
        }
    }
}

/// A commit decision as a [`Step`]: a retry of a durable commit is answered at once.
fn commit_step(txn_id: TxnId, decision: CommitDecision) -> Result<Step<Timestamp>, Refusal> {
    match decision {
        CommitDecision::Append { commit_ts, record } => {
            Ok(Step::Append(commit_ts, record, Some(txn_id)))
        }
        CommitDecision::Verdict(Verdict::Committed { commit_ts }) => Ok(Step::Done(commit_ts)),
        other => Err(Refusal::Decision(other)),
    }
}
