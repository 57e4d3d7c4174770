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
//!    cleared) and appends `Decided` off the client's path;
//! 5. [`Adjudicator::status`]: a participant that hears nothing asks C; an undecided C
//!    decides abort and never commits that transaction afterwards.
//!
//! Not here: messaging, timeouts and journal-based resolution when C is unreachable (the
//! services drive those), and coordinator epochs beyond recording them.

use bytes::Bytes;
use journaldb_proto::{Epoch, Mutation, PartitionId, TimeInterval, Timestamp, TxnId, pb};

use crate::core::{Adjudicator, CommitDecision, Unavailable};

/// A participant's undecided vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The vote τ (also the `Prepared` record's τ).
    pub vote_ts: Timestamp,
    /// The keys prepared here.
    pub keys: Vec<Bytes>,
    /// The coordinator to ask if no decision arrives.
    pub coordinator: PartitionId,
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
    /// Already voted (a retried `Prepare`): reply with the same vote.
    Voted {
        /// The vote given before.
        vote_ts: Timestamp,
    },
    /// No vote: the transaction must abort (a conflict, `TooOld`, skew, stepped down…).
    Refused(CommitDecision),
}

/// A coordinator's answer to `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    /// Committed at τc, durably.
    Committed(Timestamp),
    /// The `Commit` is being appended: ask again.
    InFlight,
    /// Aborted (possibly decided just now, by this question).
    Aborted,
}

impl Adjudicator {
    /// Participant, step 2: votes on `req` (at most once per txn_id).
    pub fn prepare(&mut self, now: TimeInterval, req: &PrepareRequest) -> PrepareDecision {
        if self.stepped_down {
            return PrepareDecision::Refused(CommitDecision::Unavailable(Unavailable::SteppedDown));
        }
        if let Some(vote) = self.prepared.get(&req.txn_id) {
            return PrepareDecision::Voted {
                vote_ts: vote.vote_ts,
            };
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
            return PrepareDecision::Refused(CommitDecision::Verdict(
                crate::core::Verdict::Conflict { key },
            ));
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
    /// decided abort (a participant asked [`Adjudicator::status`] first).
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
        if let Some(known) = self.known_outcome(txn_id) {
            return known;
        }
        if self.aborted.contains_key(&txn_id) {
            return CommitDecision::Unavailable(Unavailable::AbortedByResolution);
        }
        let max_vote = votes.iter().copied().max().unwrap_or(Timestamp::ZERO);
        let commit_ts = max_vote
            .max(self.floor().next())
            .max(start_ts.next())
            .max(now.latest);
        let limit = now.latest.saturating_add(self.max_skew());
        if commit_ts > limit {
            // Abort rather than drag the floor past the clock (skew guard).
            self.aborted.insert(txn_id, self.floor());
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

    /// Coordinator, step 5: the fate of `txn_id`. An undecided transaction is decided
    /// aborted now, and [`Adjudicator::commit_prepared`] will refuse it from then on.
    pub fn status(&mut self, txn_id: TxnId) -> TxnStatus {
        match self.known_outcome(txn_id) {
            Some(CommitDecision::Verdict(crate::core::Verdict::Committed { commit_ts })) => {
                TxnStatus::Committed(commit_ts)
            }
            Some(_) => TxnStatus::InFlight,
            None => {
                let floor = self.floor();
                self.aborted.entry(txn_id).or_insert(floor);
                TxnStatus::Aborted
            }
        }
    }

    /// Participant, step 4: records the decision on a transaction it voted for and returns
    /// the `Decided` record to append; `None` if it holds no undecided vote for it (never
    /// prepared here, or already decided: decisions are idempotent).
    pub fn decide(&mut self, txn_id: TxnId, commit_ts: Option<Timestamp>) -> Option<pb::Record> {
        let vote = self.prepared.remove(&txn_id)?;
        for k in &vote.keys {
            if self.pending.get(k) == Some(&txn_id) {
                self.pending.remove(k);
            }
            if let Some(ts) = commit_ts {
                self.record_write(k, ts);
            }
        }
        if let Some(ts) = commit_ts {
            self.raise_floor(ts);
        }
        let record_ts = self.take_ts(self.floor().next());
        let outcome = match commit_ts {
            Some(ts) => pb::decided::Outcome::CommittedTs(ts.as_nanos()),
            None => pb::decided::Outcome::Aborted(pb::Aborted {}),
        };
        Some(pb::Record {
            kind: Some(pb::record::Kind::Decided(pb::Decided {
                txn_id: Some(txn_id.into()),
                record_ts: record_ts.as_nanos(),
                outcome: Some(outcome),
            })),
        })
    }

    /// Whether `key` is prepared by an undecided transaction here.
    pub fn is_pending(&self, key: &[u8]) -> bool {
        self.pending.contains_key(key)
    }

    /// Undecided votes of this participant, for resolution by asking their coordinators.
    pub fn undecided(&self) -> impl Iterator<Item = (TxnId, &Vote)> {
        self.prepared.iter().map(|(id, v)| (*id, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{AdjudicatorConfig, Verdict};

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
        assert_eq!(
            a.prepare(now, &prepare_req(1, 50, "k")),
            PrepareDecision::Voted { vote_ts: vote }
        );
        // Another transaction writing k conflicts while the vote is undecided.
        assert!(matches!(
            a.prepare(now, &prepare_req(2, 90, "k")),
            PrepareDecision::Refused(CommitDecision::Verdict(Verdict::Conflict { .. }))
        ));
        let decided = a
            .decide(TxnId::new(1), Some(ts(120)))
            .expect("a Decided record");
        assert!(
            decided.ts() > Some(ts(120)),
            "Decided is after the commit τ it reports"
        );
        assert_eq!(a.decide(TxnId::new(1), Some(ts(120))), None, "idempotent");
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
        assert_eq!(c.status(TxnId::new(9)), TxnStatus::Aborted);
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
    }

    #[test]
    fn the_commit_ts_is_at_least_every_vote_and_status_reports_it() {
        let mut c = adj(0);
        let now = TimeInterval::exact(ts(100));
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
        assert_eq!(c.status(TxnId::new(5)), TxnStatus::InFlight);
        c.appended(TxnId::new(5));
        assert_eq!(c.status(TxnId::new(5)), TxnStatus::Committed(ts(140)));
    }
}
