//! The single-partition commit rule of ARCHITECTURE §4 as a sans-IO state machine.
//!
//! [`Adjudicator::commit`] is the critical section: it checks the request, assigns τc and
//! returns the `Commit` record to append, updating `floor`, the conflict window and the
//! outcome table before it returns. The caller appends the record, reports durability
//! with [`Adjudicator::appended`] (or failure with [`Adjudicator::append_failed`]) and
//! answers the client once `now().earliest > τc` (commit wait). It does no I/O and reads
//! no clock: time comes in as an argument, so every path is unit- and property-testable.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use journaldb_proto::{
    LookupMap, Lsn, PartitionId, PlantedBug, TimeInterval, Timestamp, TxnId, pb,
};

use crate::protocol::{CommitDecision, CommitRequest, Unavailable, Verdict, Vote};
use crate::window::ConflictWindow;

mod cross;

/// Settings of an adjudicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjudicatorConfig {
    /// How far past `now().latest` a client's τs may be before the request is refused
    /// (the skew guard): one fast client clock must not drag every floor forward.
    /// Default 1 s, far above the clock error bound of any healthy host (≈1 ms).
    pub max_skew: Duration,
    /// Conflict window and oldest snapshot accepted (default 5 min, ARCHITECTURE §8).
    pub max_txn_age: Duration,
    /// How long a participant's vote may stay undecided before the participant asks the
    /// coordinator (`Status`) itself: the longest a client that died mid-protocol can keep
    /// other writers of its keys out. Default 3 s — far above a healthy commit's few
    /// milliseconds, so a live client's `Decide` nearly always arrives first.
    pub vote_timeout: Duration,
    /// A deliberately planted bug, for proving that checkers catch it. Never set outside
    /// tests and simulation.
    #[doc(hidden)]
    pub planted_bug: Option<PlantedBug>,
}

impl Default for AdjudicatorConfig {
    fn default() -> Self {
        AdjudicatorConfig {
            max_skew: Duration::from_secs(1),
            max_txn_age: Duration::from_secs(5 * 60),
            vote_timeout: Duration::from_secs(3),
            planted_bug: None,
        }
    }
}

/// A committed outcome kept for idempotent retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    commit_ts: Timestamp,
    /// Where its record was queued, once it was: durable once the journal's durable end
    /// passes it, whether or not the request that queued it still waits (it may have been
    /// dropped).
    lsn: Option<Lsn>,
    /// Known durable without looking at the position (replayed, or reported).
    durable: bool,
}

/// A coordinator's abort of a transaction it was asked about before it committed
/// (ARCHITECTURE §4, step 5): from then on, every kind of commit request for it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AbortMark {
    /// At or above the transaction's τs: the mark is kept while a request with that τs
    /// could still pass the horizon check.
    pub(crate) bound: Timestamp,
    /// Where its `Decided` record was queued; `None` once replayed (durable).
    pub(crate) lsn: Option<Lsn>,
}

/// The commit state machine of one partition.
#[derive(Debug)]
pub struct Adjudicator {
    partition: PartitionId,
    config: AdjudicatorConfig,
    /// Largest τ appended (or being appended) to this adjudicator's journal.
    floor: Timestamp,
    window: ConflictWindow,
    outcomes: LookupMap<TxnId, Outcome>,
    /// `(τc, id)` of the same outcomes in the order recorded (τ order), for pruning with
    /// the window.
    outcomes_by_ts: VecDeque<(Timestamp, TxnId)>,
    pub(crate) stepped_down: bool,
    /// Keys prepared by undecided cross-partition transactions (participant side).
    pub(crate) pending: BTreeMap<Bytes, TxnId>,
    /// Undecided cross-partition transactions this partition voted for.
    pub(crate) prepared: BTreeMap<TxnId, Vote>,
    /// Transactions whose vote here was decided, by the τ of the `Decided` record (in that
    /// order, for pruning with the outcomes): a `Prepare` repeated after the decision is
    /// refused instead of casting a second, undecidable vote. With where the record that
    /// decided it was queued (`None` once replayed, or if it is not known).
    decided: LookupMap<TxnId, Option<Lsn>>,
    decided_by_ts: VecDeque<(Timestamp, TxnId)>,
    /// Transactions this partition decided to abort as coordinator (when asked `Status`
    /// before they committed), durably: pruned once their bound is below the horizon.
    pub(crate) aborted: BTreeMap<TxnId, AbortMark>,
    /// Every record of the journal below this position is durable (as last observed).
    durable_end: Lsn,
    /// Every transaction that committed here with τc above this has its outcome in
    /// `outcomes` (the start of the replay, raised as outcomes are pruned): `Status` for a
    /// snapshot below it cannot tell "aborted" from "forgotten".
    outcomes_from: Timestamp,
}

impl Adjudicator {
    /// Its settings.
    pub fn config(&self) -> &AdjudicatorConfig {
        &self.config
    }

    /// An adjudicator whose journal's last τ is `floor`. Nothing before it is known, so
    /// the horizon starts at `floor` too: a transaction whose snapshot predates the restart
    /// gets `TooOld` rather than a commit that might miss a conflict (ARCHITECTURE §4,
    /// embedded reopen).
    pub fn new(partition: PartitionId, config: AdjudicatorConfig, floor: Timestamp) -> Self {
        let mut window = ConflictWindow::default();
        window.advance_horizon(floor);
        Adjudicator {
            partition,
            config,
            floor,
            window,
            outcomes: LookupMap::new(),
            outcomes_by_ts: VecDeque::new(),
            stepped_down: false,
            pending: BTreeMap::new(),
            prepared: BTreeMap::new(),
            decided: LookupMap::new(),
            decided_by_ts: VecDeque::new(),
            aborted: BTreeMap::new(),
            durable_end: Lsn::ZERO,
            outcomes_from: floor,
        }
    }

    /// The partition this adjudicator owns.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// Largest τ appended to this adjudicator's journal.
    pub fn floor(&self) -> Timestamp {
        self.floor
    }

    /// Snapshots older than this get `TooOld`.
    pub fn horizon(&self) -> Timestamp {
        self.window.horizon()
    }

    /// Keys in the conflict window (its memory use).
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// Raises the horizon to `now().latest − max_txn_age` and forgets what lies below it.
    ///
    /// Outcomes and abort marks are kept by age alone (`now().latest − max_txn_age`), not
    /// by the window's horizon, which an embedded reopen raises to the floor at once: the
    /// outcomes replayed there must still answer `Status` for the votes being resolved.
    pub fn advance_horizon(&mut self, now: TimeInterval) {
        let h = now.latest.saturating_sub(self.config.max_txn_age);
        self.window.advance_horizon(h);
        if h <= self.outcomes_from {
            return;
        }
        // Outcomes with τc ≥ h are kept, so "not found" for a bound ≥ h means "never
        // committed": a commit has τc ≥ every vote and > its τs.
        self.outcomes_from = h;
        while let Some(&(ts, txn)) = self.outcomes_by_ts.front() {
            if ts >= h {
                break;
            }
            self.outcomes_by_ts.pop_front();
            if self.outcomes.get(&txn).is_some_and(|o| o.commit_ts == ts) {
                self.outcomes.remove(&txn);
            }
        }
        while let Some(&(ts, txn)) = self.decided_by_ts.front() {
            if ts >= h {
                break;
            }
            self.decided_by_ts.pop_front();
            self.decided.remove(&txn);
        }
        // A request with τs = h still passes the horizon check: keep marks at h.
        self.aborted.retain(|_, mark| mark.bound >= h);
    }

    /// The journal reports every record below `end` durable: outcomes queued there count
    /// as durable from now on, even if the request that queued them is gone.
    pub fn observe_durable(&mut self, end: Lsn) {
        if self.config.planted_bug == Some(PlantedBug::ForgetQueuedOutcomes) {
            return;
        }
        self.durable_end = self.durable_end.max(end);
    }

    /// Whether a record queued at `lsn` is known durable.
    pub(crate) fn is_durable_at(&self, lsn: Option<Lsn>) -> bool {
        lsn.is_some_and(|lsn| lsn < self.durable_end)
    }

    /// The record of `txn_id`'s decision (its `Commit`, a coordinator's abort, or a
    /// participant's `Prepared`) was queued at `lsn`.
    pub fn queued(&mut self, txn_id: TxnId, lsn: Lsn) {
        if let Some(outcome) = self.outcomes.get_mut(&txn_id) {
            outcome.lsn = Some(lsn);
        } else if let Some(mark) = self.aborted.get_mut(&txn_id) {
            mark.lsn = Some(lsn);
        } else if let Some(vote) = self.prepared.get_mut(&txn_id) {
            vote.lsn = Some(lsn);
        }
        // The same record may also decide this partition's own vote (a coordinator's
        // `Commit` or abort); the first record to decide it is the one to wait for.
        if let Some(decided) = self.decided.get_mut(&txn_id) {
            decided.get_or_insert(lsn);
        }
    }

    /// The journal refused, unwritten, the record of the decision just taken for `txn_id`
    /// (it exceeds the journal's record limit): the decision is undone, so retries and
    /// `Status` do not report a commit, a vote or an abort that is in no journal. Keys it
    /// recorded in the conflict window stay (at worst a spurious conflict) and the floor
    /// stays raised (an unused τ).
    pub fn forget(&mut self, txn_id: TxnId) {
        self.outcomes.remove(&txn_id);
        self.aborted.remove(&txn_id);
        self.remove_vote(txn_id);
    }

    /// Removes this partition's undecided vote for `txn_id`, if any, and frees the keys it
    /// holds pending.
    pub(crate) fn remove_vote(&mut self, txn_id: TxnId) -> Option<Vote> {
        let vote = self.prepared.remove(&txn_id)?;
        for k in &vote.keys {
            if self.pending.get(k) == Some(&txn_id) {
                self.pending.remove(k);
            }
        }
        Some(vote)
    }

    /// Raises the horizon to at least `h` (never lowers it).
    pub(crate) fn raise_horizon_to(&mut self, h: Timestamp) {
        self.window.advance_horizon(h);
    }

    /// Outcomes of transactions committed above this τ are all known here.
    pub(crate) fn outcomes_from(&self) -> Timestamp {
        self.outcomes_from
    }

    /// A replay rebuilt the outcomes of every commit above `ts`.
    pub(crate) fn set_outcomes_from(&mut self, ts: Timestamp) {
        self.outcomes_from = ts;
    }

    /// Decides a commit request; see [`CommitDecision`] for what the caller does next.
    pub fn commit(&mut self, now: TimeInterval, req: &CommitRequest) -> CommitDecision {
        if self.stepped_down {
            // A first attempt was not applied; a retry's original may have been.
            return if req.retry {
                CommitDecision::Unknown
            } else {
                CommitDecision::Unavailable(Unavailable::SteppedDown)
            };
        }
        if req.mutations.is_empty() {
            return CommitDecision::Invalid("a commit must write at least one key".into());
        }
        self.advance_horizon(now);
        // 1. A known transaction gets its first outcome; one its coordinator (this
        //    partition) aborted when asked `Status` stays aborted, for every kind of commit.
        if let Some(known) = self.known_outcome(req.txn_id) {
            return known;
        }
        let ignore_marks = self.config.planted_bug == Some(PlantedBug::IgnoreAbortMarks);
        if let Some(refused) = self.abort_mark_refusal(req.txn_id)
            && !ignore_marks
        {
            return refused;
        }
        let limit = match self.admit(now, req.start_ts, req.retry) {
            Ok(limit) => limit,
            // A retry refused by the skew guard: the original, still on its way, might
            // pass later — the outcome is unknown, not a reason to re-run.
            Err(CommitDecision::Unavailable(_)) if req.retry => return CommitDecision::Unknown,
            Err(refused) => return refused,
        };
        // 2. Write-write conflicts inside (τs, now], and keys prepared by others.
        if let Some(key) = self.conflict(
            req.txn_id,
            req.start_ts,
            req.mutations.iter().map(|m| &m.key),
        ) {
            let verdict = Verdict::Conflict { key };
            if req.retry && !ignore_marks {
                let record = Box::new(self.abort_record(req.txn_id, req.start_ts));
                return CommitDecision::AbortThen { verdict, record };
            }
            return CommitDecision::Verdict(verdict);
        }
        // 3. τc: after the clock, the floor and the snapshot.
        let commit_ts = now.latest.max(self.floor.next()).max(req.start_ts.next());
        if commit_ts > limit {
            if req.retry {
                return CommitDecision::Unknown;
            }
            return CommitDecision::Unavailable(Unavailable::SkewGuard {
                ts: commit_ts,
                limit,
            });
        }
        self.take_ts(commit_ts);
        for m in &req.mutations {
            self.window.record(&m.key, commit_ts);
        }
        self.record_outcome(req.txn_id, commit_ts);
        // 4. The record whose durable append is the commit point.
        let record = pb::Record::commit(req.txn_id, commit_ts, req.mutations.iter().cloned(), &[]);
        CommitDecision::Append { commit_ts, record }
    }

    /// The answer to any commit request for `txn_id` once this coordinator aborted it: a
    /// definite abort once the abort is durable, `Unknown` until then (a refusal reported
    /// before the decision that makes it binding is durable could be contradicted after a
    /// failure). `None` if it did not abort it.
    pub(crate) fn abort_mark_refusal(&self, txn_id: TxnId) -> Option<CommitDecision> {
        let mark = self.aborted.get(&txn_id)?;
        Some(if self.abort_is_durable(mark) {
            CommitDecision::Unavailable(Unavailable::AbortedByResolution)
        } else {
            CommitDecision::Unknown
        })
    }

    /// An abort binds — may be reported — once its record is durable (a mark replayed from
    /// the journal or never queued counts as durable).
    pub(crate) fn abort_is_durable(&self, mark: &AbortMark) -> bool {
        mark.lsn.is_none()
            || self.is_durable_at(mark.lsn)
            || self.config.planted_bug == Some(PlantedBug::AbortFromMemory)
    }

    /// Aborts `txn_id` (whose τs is at most `start_bound`) as its coordinator, for good:
    /// every later commit request for it is refused. Returns the `Decided` record that makes
    /// the abort durable; it also decides this partition's own vote for it, if any.
    pub(crate) fn abort_record(&mut self, txn_id: TxnId, start_bound: Timestamp) -> pb::Record {
        let had_vote = self.remove_vote(txn_id);
        self.aborted.insert(
            txn_id,
            AbortMark {
                bound: start_bound,
                lsn: None,
            },
        );
        let record_ts = self.take_ts(self.floor.next());
        if had_vote.is_some() {
            self.record_decided(txn_id, record_ts);
        }
        pb::Record::coordinator_abort(txn_id, record_ts, start_bound)
    }

    /// The recorded outcome of a committed transaction, as a decision for a retry.
    pub(crate) fn known_outcome(&self, txn_id: TxnId) -> Option<CommitDecision> {
        let outcome = self.outcomes.get(&txn_id)?;
        Some(if outcome.durable || self.is_durable_at(outcome.lsn) {
            CommitDecision::Verdict(Verdict::Committed {
                commit_ts: outcome.commit_ts,
            })
        } else {
            CommitDecision::InFlight {
                commit_ts: outcome.commit_ts,
            }
        })
    }

    /// The request-independent checks of step 1: skew guard and horizon. Returns the
    /// largest τ acceptable now.
    pub(crate) fn admit(
        &self,
        now: TimeInterval,
        start_ts: Timestamp,
        retry: bool,
    ) -> Result<Timestamp, CommitDecision> {
        let limit = now.latest.saturating_add(self.config.max_skew);
        if start_ts > limit {
            return Err(CommitDecision::Unavailable(Unavailable::SkewGuard {
                ts: start_ts,
                limit,
            }));
        }
        if start_ts < self.window.horizon() {
            // A retry may have committed before its outcome was pruned with the window.
            return Err(if retry {
                CommitDecision::Unknown
            } else {
                CommitDecision::Verdict(Verdict::TooOld)
            });
        }
        Ok(limit)
    }

    /// Step 2: a key written after `start_ts`, or prepared by another transaction.
    pub(crate) fn conflict<'a>(
        &self,
        txn_id: TxnId,
        start_ts: Timestamp,
        keys: impl IntoIterator<Item = &'a Bytes>,
    ) -> Option<Bytes> {
        if self.config.planted_bug == Some(PlantedBug::SkipConflictCheck) {
            return None;
        }
        keys.into_iter()
            .find(|k| {
                self.window.last_write(k).is_some_and(|ts| ts > start_ts)
                    || self.pending.get(*k).is_some_and(|owner| *owner != txn_id)
            })
            .cloned()
    }

    /// Records a committed outcome (not yet durable) for idempotent retries.
    pub(crate) fn record_outcome(&mut self, txn_id: TxnId, commit_ts: Timestamp) {
        self.outcomes.insert(
            txn_id,
            Outcome {
                commit_ts,
                lsn: None,
                durable: false,
            },
        );
        self.outcomes_by_ts.push_back((commit_ts, txn_id));
    }

    /// Assigns `ts` to the next record of this journal: the critical section's one rule.
    pub(crate) fn take_ts(&mut self, ts: Timestamp) -> Timestamp {
        assert!(ts > self.floor, "journal τ must strictly increase");
        self.floor = ts;
        ts
    }

    /// This partition's vote for `txn_id` was decided by a record at `ts`.
    pub(crate) fn record_decided(&mut self, txn_id: TxnId, ts: Timestamp) {
        if self.decided.insert(txn_id, None).is_none() {
            self.decided_by_ts.push_back((ts, txn_id));
        }
    }

    /// Whether this partition's vote for `txn_id` was decided (within the window).
    pub(crate) fn was_decided(&self, txn_id: TxnId) -> bool {
        self.decided.get(&txn_id).is_some()
    }

    /// The `Decided` record of this partition's vote for `txn_id` was queued at `lsn`.
    pub fn decision_queued(&mut self, txn_id: TxnId, lsn: Lsn) {
        if let Some(decided) = self.decided.get_mut(&txn_id) {
            decided.get_or_insert(lsn);
        }
    }

    /// Where the record that decided this partition's vote for `txn_id` was queued, while
    /// it is not durable yet: a repeated `Decide` is answered once it is (ARCHITECTURE §5
    /// rule 1), or its sender would stop retrying a decision a failover can still lose.
    pub fn decision_pending(&self, txn_id: TxnId) -> Option<Lsn> {
        let lsn = (*self.decided.get(&txn_id)?)?;
        (!self.is_durable_at(Some(lsn))).then_some(lsn)
    }

    pub(crate) fn record_write(&mut self, key: &Bytes, ts: Timestamp) {
        self.window.record(key, ts);
    }

    pub(crate) fn raise_floor(&mut self, ts: Timestamp) {
        self.floor = self.floor.max(ts);
    }

    pub(crate) fn max_skew(&self) -> Duration {
        self.config.max_skew
    }

    /// The `Commit` record of `txn_id` is durable: retries now get `Committed` (as they do
    /// anyway once [`Adjudicator::observe_durable`] passes its position).
    pub fn appended(&mut self, txn_id: TxnId) {
        if let Some(outcome) = self.outcomes.get_mut(&txn_id) {
            outcome.durable = true;
        }
    }

    /// An append to this adjudicator's journal failed. Its outcome is unknown, and so is
    /// the journal's state: the adjudicator steps down (callers answer `CommitUnknown` to
    /// in-flight commits) and a new one must recover the journal before serving.
    pub fn append_failed(&mut self) {
        self.stepped_down = true;
    }

    /// Whether [`Adjudicator::append_failed`] made this adjudicator step down.
    pub fn is_stepped_down(&self) -> bool {
        self.stepped_down
    }

    /// A `Heartbeat` record for an idle journal: τ = max(`now().latest`, floor + 1), so
    /// storage watermarks advance without commits.
    pub fn heartbeat(&mut self, now: TimeInterval) -> pb::Record {
        let ts = now.latest.max(self.floor.next());
        self.floor = ts;
        pb::Record::heartbeat(ts)
    }

    /// Promises that this journal will hold no record with τ ≤ `ts` beyond those already
    /// appended: raises the floor to ≥ `ts`. Returns the `Heartbeat` to append if the floor
    /// had to move; `None` means the last appended record already covers `ts`.
    pub fn promise(&mut self, ts: Timestamp) -> Option<pb::Record> {
        if self.floor >= ts {
            return None;
        }
        self.floor = ts;
        Some(pb::Record::heartbeat(ts))
    }
}

#[cfg(test)]
mod tests;
