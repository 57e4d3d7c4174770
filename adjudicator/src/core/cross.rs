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
mod tests {
    use bytes::Bytes;
    use journaldb_proto::{Epoch, Lsn};

    use super::*;
    use crate::core::AdjudicatorConfig;
    use crate::protocol::CommitRequest;

    fn ts(n: u64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    fn adj(p: u32) -> Adjudicator {
        Adjudicator::new(PartitionId::new(p), AdjudicatorConfig::default(), ts(0))
    }

    fn prepare_req(id: u128, start: u64, key: &'static str) -> PrepareRequest {
        PrepareRequest {
            txn_id: TxnId::new(id),
            start_ts: ts(start),
            keys: vec![Bytes::from_static(key.as_bytes())],
            coordinator: PartitionId::new(0),
            coordinator_epoch: Epoch::default(),
        }
    }

    #[test]
    fn a_participant_votes_once_and_blocks_other_writers_until_decided() {
        let mut a = adj(1);
        let now = TimeInterval::exact(ts(100));
        let vote = match a.prepare(now, &prepare_req(1, 50, "k")) {
            PrepareDecision::Append { vote_ts, record } => {
                assert_eq!(record.ts(), Some(vote_ts));
                vote_ts
            }
            other => panic!("{other:?}"),
        };
        // Its record was queued at Lsn 5: a retried Prepare gets the vote only once that
        // record is durable (answered from memory, the vote could be lost with it).
        a.queued(TxnId::new(1), Lsn::new(5));
        assert_eq!(
            a.prepare(now, &prepare_req(1, 50, "k")),
            PrepareDecision::Voted {
                vote_ts: vote,
                pending: Some(Lsn::new(5))
            }
        );
        a.observe_durable(Lsn::new(6));
        assert_eq!(
            a.prepare(now, &prepare_req(1, 50, "k")),
            PrepareDecision::Voted {
                vote_ts: vote,
                pending: None
            }
        );

        // Another transaction writing k conflicts while the vote is undecided.
        assert!(matches!(
            a.prepare(now, &prepare_req(2, 90, "k")),
            PrepareDecision::Refused(CommitDecision::Verdict(Verdict::Conflict { .. }))
        ));
        assert!(
            a.decide(now, TxnId::new(1), Some(ts(vote.as_nanos() - 1)))
                .is_err(),
            "a commit τ below the vote is refused"
        );
        assert!(a.is_pending(b"k"), "and changes nothing");
        let decided = a
            .decide(now, TxnId::new(1), Some(ts(120)))
            .unwrap()
            .expect("a Decided record");
        assert!(
            decided.ts() > Some(ts(120)),
            "Decided is after the commit τ it reports"
        );
        assert_eq!(
            a.decide(now, TxnId::new(1), Some(ts(120))),
            Ok(None),
            "idempotent"
        );
        // Now k was written at 120: a snapshot before it conflicts, one after does not.
        assert!(matches!(
            a.prepare(now, &prepare_req(3, 110, "k")),
            PrepareDecision::Refused(_)
        ));
        assert!(matches!(
            a.prepare(now, &prepare_req(4, 120, "k")),
            PrepareDecision::Append { .. }
        ));
    }

    #[test]
    fn a_coordinator_that_answered_aborted_never_commits() {
        let mut c = adj(0);
        let now = TimeInterval::exact(ts(100));
        c.prepare(now, &prepare_req(9, 50, "k"));
        let StatusDecision::Abort(record) = c.status(now, TxnId::new(9), ts(50)) else {
            panic!("an undecided transaction is aborted");
        };
        assert!(record.ts() > Some(ts(50)));
        assert!(!c.is_pending(b"k"), "the abort decides its own vote too");
        assert_eq!(
            c.status(now, TxnId::new(9), ts(50)),
            StatusDecision::Known(TxnStatus::Aborted),
            "a record replayed or never queued counts as durable"
        );
        let decision = c.commit_prepared(
            now,
            TxnId::new(9),
            ts(50),
            &[ts(60)],
            &[Mutation::put("k", "v")],
            &[PartitionId::new(1)],
        );
        assert_eq!(
            decision,
            CommitDecision::Unavailable(Unavailable::AbortedByResolution)
        );
        // Binding for single-partition commits too (hardening defect 2).
        let single = CommitRequest {
            txn_id: TxnId::new(9),
            start_ts: ts(50),
            mutations: vec![Mutation::put("k", "v")],
            retry: true,
        };
        assert_eq!(
            c.commit(now, &single),
            CommitDecision::Unavailable(Unavailable::AbortedByResolution)
        );
    }

    /// §5 rule 1: an abort queued but not yet durable is reported as in flight (a failover
    /// could lose its record); with the planted `AbortFromMemory` it is reported at once.
    #[test]
    fn an_abort_is_reported_only_once_its_record_is_durable() {
        for planted in [None, Some(PlantedBug::AbortFromMemory)] {
            let config = AdjudicatorConfig {
                planted_bug: planted,
                ..AdjudicatorConfig::default()
            };
            let mut c = Adjudicator::new(PartitionId::new(0), config, ts(0));
            let now = TimeInterval::exact(ts(100));
            let StatusDecision::Abort(_) = c.status(now, TxnId::new(9), ts(50)) else {
                panic!("an unknown transaction is aborted");
            };
            c.queued(TxnId::new(9), Lsn::new(3));
            let retry = CommitRequest {
                txn_id: TxnId::new(9),
                start_ts: ts(50),
                mutations: vec![Mutation::put("k", "v")],
                retry: true,
            };
            let (status, commit) = (c.status(now, TxnId::new(9), ts(50)), c.commit(now, &retry));
            if planted.is_some() {
                assert_eq!(status, StatusDecision::Known(TxnStatus::Aborted));
                assert_eq!(
                    commit,
                    CommitDecision::Unavailable(Unavailable::AbortedByResolution)
                );
                continue;
            }
            assert_eq!(status, StatusDecision::Known(TxnStatus::InFlight));
            assert_eq!(commit, CommitDecision::Unknown);
            c.observe_durable(Lsn::new(4));
            assert_eq!(
                c.status(now, TxnId::new(9), ts(50)),
                StatusDecision::Known(TxnStatus::Aborted)
            );
            assert_eq!(
                c.commit(now, &retry),
                CommitDecision::Unavailable(Unavailable::AbortedByResolution)
            );
        }
    }

    #[test]
    fn status_below_the_horizon_is_unknown_not_aborted() {
        let config = AdjudicatorConfig {
            max_txn_age: std::time::Duration::from_nanos(100),
            ..AdjudicatorConfig::default()
        };
        let mut c = Adjudicator::new(PartitionId::new(0), config, ts(0));
        let now = TimeInterval::exact(ts(1_000));
        assert_eq!(
            c.status(now, TxnId::new(3), ts(899)),
            StatusDecision::Known(TxnStatus::TooOld(ts(0)))
        );
        assert!(matches!(
            c.status(now, TxnId::new(3), ts(900)),
            StatusDecision::Abort(_)
        ));
        let far = ts(1_000 + std::time::Duration::from_secs(2).as_nanos() as u64);
        assert!(matches!(
            c.status(now, TxnId::new(4), far),
            StatusDecision::Refused(_)
        ));
    }

    #[test]
    fn commit_prepared_needs_the_coordinators_own_vote_and_sane_votes() {
        let mut c = adj(0);
        let now = TimeInterval::exact(ts(100));
        let commit = |c: &mut Adjudicator, votes: &[Timestamp]| {
            c.commit_prepared(
                now,
                TxnId::new(5),
                ts(50),
                votes,
                &[Mutation::put("a", "1"), Mutation::put("b", "2")],
                &[PartitionId::new(0), PartitionId::new(1)],
            )
        };
        assert!(matches!(
            commit(&mut c, &[ts(60), ts(70)]),
            CommitDecision::Invalid(_)
        ));
        c.prepare(now, &prepare_req(5, 50, "a"));
        assert!(matches!(commit(&mut c, &[]), CommitDecision::Invalid(_)));
        assert!(matches!(
            commit(&mut c, &[ts(60), ts(40)]),
            CommitDecision::Invalid(_)
        ));
        assert_eq!(c.floor(), ts(51), "refusals change nothing");
        assert!(matches!(
            commit(&mut c, &[ts(60), ts(70)]),
            CommitDecision::Append { .. }
        ));
    }

    #[test]
    fn the_commit_ts_is_at_least_every_vote_and_status_reports_it() {
        let mut c = adj(0);
        let now = TimeInterval::exact(ts(100));
        c.prepare(now, &prepare_req(5, 50, "a"));
        let decision = c.commit_prepared(
            now,
            TxnId::new(5),
            ts(50),
            &[ts(70), ts(140)],
            &[Mutation::put("a", "1"), Mutation::put("b", "2")],
            &[PartitionId::new(0), PartitionId::new(1)],
        );
        let CommitDecision::Append { commit_ts, record } = decision else {
            panic!("{decision:?}");
        };
        assert_eq!(commit_ts, ts(140));
        let Some(pb::record::Kind::Commit(commit)) = record.kind else {
            panic!("a Commit record");
        };
        assert_eq!(
            (commit.mutations.len(), commit.participants),
            (2, vec![0, 1])
        );
        assert_eq!(
            c.status(now, TxnId::new(5), ts(50)),
            StatusDecision::Known(TxnStatus::InFlight)
        );
        c.queued(TxnId::new(5), journaldb_proto::Lsn::new(7));
        c.observe_durable(journaldb_proto::Lsn::new(7));
        assert_eq!(
            c.status(now, TxnId::new(5), ts(50)),
            StatusDecision::Known(TxnStatus::InFlight),
            "Lsn 7 is not below the durable end 7"
        );
        // Durable once the journal passes its position, whoever waits for it (defect 5).
        c.observe_durable(journaldb_proto::Lsn::new(8));
        assert_eq!(
            c.status(now, TxnId::new(5), ts(50)),
            StatusDecision::Known(TxnStatus::Committed(ts(140)))
        );
    }
}
