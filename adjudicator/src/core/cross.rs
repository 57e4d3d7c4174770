//! The cross-partition protocol of ARCHITECTURE §4, as more inputs to the same state
//! machine (the same floor, window and critical section as single-partition commits):
//!
//! 1. the coordinator C (owner of the first key) sends `Prepare` to every participant Ai,
//!    itself included;
//! 2. [`Adjudicator::prepare`]: Ai checks like a commit, votes at most once per txn_id,
//!    marks the keys pending and returns the `Prepared` record (τ = vote) to append;
//! 3. [`Adjudicator::commit_prepared`]: C picks τc ≥ every vote and appends the **whole**
//!    transaction as one `Commit` in its own journal — one journal holds it;
//! 4. [`Adjudicator::decide`]: each Ai records the decision (last_write = τc, pending
//!    cleared) and appends `Decided` (the commit is already durable in C's journal: the
//!    client awaits only each participant's first answer — embedded once it is queued, in
//!    the cluster once it is durable — and retries a failed one in the background);
//! 5. [`Adjudicator::status`]: a participant that hears nothing for
//!    [`AdjudicatorConfig::vote_timeout`](crate::AdjudicatorConfig) asks C (so does a client
//!    that lost a reply); an undecided C decides abort **durably** (a `Decided` record
//!    marked `coordinator_abort`) and never commits that transaction afterwards, by any
//!    path. Below C's horizon the outcome may be forgotten: the answer is then `TooOld`
//!    (unknown), never `Aborted`.
//!
//! Requests are checked before anything changes: a `Decide` whose τc is below the vote or
//! past the skew guard, a `CommitPrepared` without this coordinator's own vote, a `Status`
//! from the far future are refused. Not here: messaging, timers, routing keys to
//! partitions (the services and the transaction), and coordinator epochs beyond recording
//! them.

use journaldb_proto::{Mutation, PartitionId, TimeInterval, Timestamp, TxnId, pb};

use super::Adjudicator;
use crate::protocol::{
    CommitDecision, PrepareDecision, PrepareRequest, StatusDecision, TxnStatus, Unavailable,
    Verdict, Vote,
};
use journaldb_proto::PlantedBug;

impl Adjudicator {
    /// Participant, step 2: votes on `req` (at most once per txn_id).
    pub fn prepare(&mut self, now: TimeInterval, req: &PrepareRequest) -> PrepareDecision {
        if self.stepped_down {
            return PrepareDecision::Refused(CommitDecision::Unavailable(Unavailable::SteppedDown));
        }
        if let Some(vote) = self.prepared.get(&req.txn_id) {
            let from_memory = self.config.planted_bug == Some(PlantedBug::VoteFromMemory);
            return PrepareDecision::Voted {
                vote_ts: vote.vote_ts,
                pending: vote
                    .lsn
                    .filter(|_| !from_memory && !self.is_durable_at(vote.lsn)),
            };
        }
        if let Some(refused) = self.abort_mark_refusal(req.txn_id) {
            return PrepareDecision::Refused(refused);
        }
        // Decided here already (or committed here as coordinator): a second vote could
        // never be decided consistently with the first decision.
        if self.was_decided(req.txn_id) || self.known_outcome(req.txn_id).is_some() {
            return PrepareDecision::Refused(CommitDecision::Invalid(format!(
                "{}: already decided here; a transaction votes once",
                req.txn_id
            )));
        }
        if req.keys.is_empty() {
            return PrepareDecision::Refused(CommitDecision::Invalid(
                "a prepare must name at least one key".into(),
            ));
        }
        self.advance_horizon(now);
        if let Err(refused) = self.admit(now, req.start_ts, false) {
            return PrepareDecision::Refused(refused);
        }
        if let Some(key) = self.conflict(req.txn_id, req.start_ts, &req.keys) {
            return PrepareDecision::Refused(CommitDecision::Verdict(Verdict::Conflict { key }));
        }
        let vote_ts = self.take_ts(self.floor().next().max(req.start_ts.next()));
        for k in &req.keys {
            self.pending.insert(k.clone(), req.txn_id);
        }
        self.prepared.insert(
            req.txn_id,
            Vote {
                vote_ts,
                keys: req.keys.clone(),
                coordinator: req.coordinator,
                cast_at: now.latest,
                lsn: None,
            },
        );
        let record = pb::Record {
            kind: Some(pb::record::Kind::Prepared(pb::Prepared {
                txn_id: Some(req.txn_id.into()),
                coordinator: req.coordinator.get(),
                coordinator_epoch: Some(req.coordinator_epoch.into()),
                vote_ts: vote_ts.as_nanos(),
                keys: req.keys.clone(),
            })),
        };
        PrepareDecision::Append { vote_ts, record }
    }

    /// Coordinator, step 3: every participant voted; assigns τc and returns the one
    /// `Commit` record holding all of `mutations`. Refused if this coordinator already
    /// decided abort (a participant or the client asked [`Adjudicator::status`] first), if
    /// τs is below the horizon, if a vote is not after τs or lies beyond the skew guard,
    /// or if this partition — the coordinator owns the first key, so it is a participant
    /// too — holds no vote of its own for the transaction. A refusal changes nothing: the
    /// caller learns the outcome (and makes it binding) through `Status`.
    pub fn commit_prepared(
        &mut self,
        now: TimeInterval,
        txn_id: TxnId,
        start_ts: Timestamp,
        votes: &[Timestamp],
        mutations: &[Mutation],
        participants: &[PartitionId],
    ) -> CommitDecision {
        if self.stepped_down {
            return CommitDecision::Unavailable(Unavailable::SteppedDown);
        }
        self.advance_horizon(now);
        if let Some(known) = self.known_outcome(txn_id) {
            return known;
        }
        let ignore_marks = self.config().planted_bug == Some(PlantedBug::IgnoreAbortMarks);
        if let Some(refused) = self.abort_mark_refusal(txn_id)
            && !ignore_marks
        {
            return refused;
        }
        let limit = match self.admit(now, start_ts, false) {
            Ok(limit) => limit,
            Err(refused) => return refused,
        };
        if mutations.is_empty() || votes.is_empty() || votes.len() != participants.len() {
            return CommitDecision::Invalid(format!(
                "a cross-partition commit needs mutations and one vote per participant \
                 ({} votes, {} participants, {} mutations)",
                votes.len(),
                participants.len(),
                mutations.len()
            ));
        }
        let own_vote = self.prepared.get(&txn_id).filter(|vote| {
            vote.coordinator == self.partition()
                && vote
                    .keys
                    .iter()
                    .all(|k| mutations.iter().any(|m| m.key == *k))
        });
        // The own vote is also what makes an abort binding here: the coordinator's abort
        // decides it, so a `CommitPrepared` arriving after `Status` finds none.
        if !participants.contains(&self.partition()) || (own_vote.is_none() && !ignore_marks) {
            return CommitDecision::Invalid(format!(
                "{txn_id}: the coordinator {} holds no vote of its own for it naming it as \
                 coordinator and covering its keys",
                self.partition()
            ));
        }
        if let Some(bad) = votes.iter().find(|v| **v <= start_ts || **v > limit) {
            return CommitDecision::Invalid(format!(
                "vote {bad} is not inside (τs {start_ts}, {limit}]"
            ));
        }
        let max_vote = votes.iter().copied().max().unwrap_or(Timestamp::ZERO);
        let commit_ts = max_vote
            .max(self.floor().next())
            .max(start_ts.next())
            .max(now.latest);
        if commit_ts > limit {
            // Refused, nothing changed: the caller asks `Status`, which aborts durably.
            return CommitDecision::Unavailable(Unavailable::SkewGuard {
                ts: commit_ts,
                limit,
            });
        }
        self.take_ts(commit_ts);
        self.record_outcome(txn_id, commit_ts);
        let record = pb::Record::commit(txn_id, commit_ts, mutations.iter().cloned(), participants);
        CommitDecision::Append { commit_ts, record }
    }

    /// Coordinator, step 5: the fate of `txn_id`, whose τs is at most `start_bound` (a
    /// participant passes its vote τ). An undecided transaction is aborted now, durably:
    /// the returned record also decides this partition's own vote for it, if any, and no
    /// commit request for it succeeds afterwards. Below the horizon the outcome may have
    /// been forgotten: `TooOld`.
    pub fn status(
        &mut self,
        now: TimeInterval,
        txn_id: TxnId,
        start_bound: Timestamp,
    ) -> StatusDecision {
        if self.stepped_down {
            return StatusDecision::Refused(CommitDecision::Unavailable(Unavailable::SteppedDown));
        }
        self.advance_horizon(now);
        match self.known_outcome(txn_id) {
            Some(CommitDecision::Verdict(Verdict::Committed { commit_ts })) => {
                return StatusDecision::Known(TxnStatus::Committed(commit_ts));
            }
            Some(_) => return StatusDecision::Known(TxnStatus::InFlight),
            None => {}
        }
        if self
            .prepared
            .get(&txn_id)
            .is_some_and(|vote| vote.coordinator != self.partition())
        {
            // Only a transaction's coordinator decides it.
            return StatusDecision::Refused(CommitDecision::Invalid(format!(
                "{txn_id} is coordinated by another partition"
            )));
        }
        if let Some(mark) = self.aborted.get(&txn_id) {
            return StatusDecision::Known(if self.abort_is_durable(mark) {
                TxnStatus::Aborted
            } else {
                TxnStatus::InFlight
            });
        }
        // A commit with τc above the bound would be in `outcomes` unless pruned or before
        // the replay: below that point "not found" does not mean "not committed".
        if start_bound < self.outcomes_from() {
            return StatusDecision::Known(TxnStatus::TooOld(self.floor()));
        }
        let limit = now.latest.saturating_add(self.max_skew());
        if start_bound > limit {
            return StatusDecision::Refused(CommitDecision::Unavailable(Unavailable::SkewGuard {
                ts: start_bound,
                limit,
            }));
        }
        StatusDecision::Abort(self.abort_record(txn_id, start_bound))
    }

    /// Participant, step 4: records the decision on a transaction it voted for and returns
    /// the `Decided` record to append; `Ok(None)` if it holds no undecided vote for it
    /// (never prepared here, or already decided: decisions are idempotent). A commit τ
    /// below the vote (a coordinator picks τc ≥ every vote) or beyond the skew guard is
    /// refused with nothing changed.
    pub fn decide(
        &mut self,
        now: TimeInterval,
        txn_id: TxnId,
        commit_ts: Option<Timestamp>,
    ) -> Result<Option<pb::Record>, CommitDecision> {
        self.decide_checked(now, txn_id, commit_ts, true)
    }

    /// [`Adjudicator::decide`] with the coordinator's own answer (its `Status`), which is
    /// never refused: a commit τ below the vote (a client under-reported the vote to the
    /// coordinator) is raised to the vote, so the keys are always freed and the window is
    /// at worst conservative.
    pub fn decide_resolved(
        &mut self,
        now: TimeInterval,
        txn_id: TxnId,
        commit_ts: Option<Timestamp>,
    ) -> Option<pb::Record> {
        let vote_ts = self.prepared.get(&txn_id)?.vote_ts;
        let commit_ts = commit_ts.map(|ts| ts.max(vote_ts));
        self.decide_checked(now, txn_id, commit_ts, false)
            .unwrap_or(None)
    }

    fn decide_checked(
        &mut self,
        now: TimeInterval,
        txn_id: TxnId,
        commit_ts: Option<Timestamp>,
        check: bool,
    ) -> Result<Option<pb::Record>, CommitDecision> {
        let Some(vote) = self.prepared.get(&txn_id) else {
            return Ok(None);
        };
        if let (Some(ts), true) = (commit_ts, check) {
            let limit = now.latest.saturating_add(self.max_skew());
            if ts < vote.vote_ts || ts > limit {
                return Err(CommitDecision::Invalid(format!(
                    "{txn_id}: a commit τ {ts} outside [vote {}, {limit}]",
                    vote.vote_ts
                )));
            }
        }
        let Some(vote) = self.remove_vote(txn_id) else {
            return Ok(None);
        };
        if let Some(ts) = commit_ts {
            for k in &vote.keys {
                self.record_write(k, ts);
            }
            self.raise_floor(ts);
        }
        let record_ts = self.take_ts(self.floor().next());
        self.record_decided(txn_id, record_ts);
        Ok(Some(pb::Record::decided(txn_id, record_ts, commit_ts)))
    }

    /// Whether `key` is prepared by an undecided transaction here.
    pub fn is_pending(&self, key: &[u8]) -> bool {
        self.pending.contains_key(key)
    }

    /// Undecided votes of this participant, for resolution by asking their coordinators.
    pub fn undecided(&self) -> impl Iterator<Item = (TxnId, &Vote)> {
        self.prepared.iter().map(|(id, v)| (*id, v))
    }

    /// Where its journal must be kept from (ARCHITECTURE §5 truncation): the retention
    /// `cutoff`, or the τ of its oldest undecided vote if that is older — a restart's replay
    /// must find every undecided `Prepared` to resolve it.
    pub fn keep_journal_from(&self, cutoff: Timestamp) -> Timestamp {
        self.prepared
            .values()
            .map(|vote| vote.vote_ts)
            .fold(cutoff, Timestamp::min)
    }

    /// Undecided votes cast more than the vote timeout before `now`: the ones to resolve
    /// by asking their coordinators (`Status` with the vote τ as the bound).
    pub fn overdue(&self, now: TimeInterval) -> Vec<(TxnId, Vote)> {
        if self.config().planted_bug == Some(PlantedBug::NoVoteTimeout) {
            return Vec::new();
        }
        let cutoff = now.earliest.saturating_sub(self.config().vote_timeout);
        self.prepared
            .iter()
            .filter(|(_, v)| v.cast_at <= cutoff)
            .map(|(id, v)| (*id, v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
