//! Rebuilding an adjudicator from its journal (ARCHITECTURE §4, "Failover" and "Embedded
//! partitions"). The adjudicator's state is transient: everything it needs is in the
//! records it appended.
//!
//! - [`ReplayMode::Failover`]: replay the last `max_txn_age` of the journal: `Commit`
//!   records set `last_write` (for this partition's keys) and the outcomes of retries;
//!   `Decided` records set `last_write` (and a coordinator's own abort rebuilds the aborted
//!   set, so it stays binding); `Prepared` records without a `Decided` stay
//!   pending, to be resolved through their coordinators (the node asks them in the
//!   background while it serves; until then a pending vote refuses writers of its keys).
//!   The horizon is computed from the clock after the replay. A journal whose oldest
//!   records were dropped knows outcomes and writes only from its first record on (or
//!   from the τc of a commit whose vote was dropped, if later): its horizon starts there.
//! - [`ReplayMode::Embedded`]: a reopened embedded database has no transaction in flight,
//!   so the conflict window is not rebuilt: the horizon is the floor (the last τ), and only
//!   undecided `Prepared` records (after the last storage checkpoint) matter.
//!
//! It does not read the journal (the caller passes its records) nor resolve undecided votes.

use journaldb_proto::{Mutation, PartitionId, TimeInterval, Timestamp, TxnId, pb};

use crate::core::{AbortMark, Adjudicator, AdjudicatorConfig};
use crate::protocol::Vote;

/// How much state to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayMode {
    /// Reopen of an embedded database: horizon = floor, window empty. Records before the
    /// storage checkpoint are not replayed, so the caller passes the checkpoint's τ (the
    /// storage watermark): the floor is at least that.
    Embedded {
        /// τ of the last storage checkpoint.
        checkpoint_ts: Timestamp,
    },
    /// A new adjudicator taking over a journal at `now`: rebuild the window.
    Failover {
        /// The clock reading at which the new adjudicator starts serving.
        now: TimeInterval,
        /// Whether the journal's oldest records were dropped (§5 truncation): outcomes are
        /// then known only for commits from the first replayed record on, and `Status`
        /// below it answers "too old" rather than "not committed".
        truncated: bool,
    },
}

/// A journal that cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// τ of a journal's records must strictly increase.
    #[error("record {index} has τ {ts}, not after {previous}")]
    TimestampOrder {
        /// Position in the replayed sequence.
        index: usize,
        /// Its τ.
        ts: Timestamp,
        /// The previous τ.
        previous: Timestamp,
    },
    /// A record lacks a required field.
    #[error("record {index} is malformed: {reason}")]
    Malformed {
        /// Position in the replayed sequence.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

impl Adjudicator {
    /// An adjudicator rebuilt from `records` (its journal's records in order, from the
    /// start of the window to replay). `owns` says which keys belong to this partition:
    /// a cross-partition `Commit` holds every participant's keys.
    pub fn replay(
        partition: PartitionId,
        config: AdjudicatorConfig,
        records: impl IntoIterator<Item = pb::Record>,
        owns: impl Fn(&[u8]) -> bool,
        mode: ReplayMode,
    ) -> Result<Adjudicator, ReplayError> {
        let start = match mode {
            ReplayMode::Embedded { checkpoint_ts } => checkpoint_ts,
            ReplayMode::Failover { .. } => Timestamp::ZERO,
        };
        let mut replay = Replay {
            adj: Adjudicator::new(partition, config, start),
            rebuild_window: matches!(mode, ReplayMode::Failover { .. }),
            floor: Timestamp::ZERO,
            first_ts: None,
            orphan_commit: Timestamp::ZERO,
        };
        for (index, record) in records.into_iter().enumerate() {
            replay.record(index, &record, &owns)?;
        }
        Ok(replay.finish(mode, start))
    }
}

/// A replay in progress: the adjudicator so far, and what the records showed.
struct Replay {
    adj: Adjudicator,
    rebuild_window: bool,
    /// The last τ replayed.
    floor: Timestamp,
    /// The first τ replayed.
    first_ts: Option<Timestamp>,
    /// τc of a commit decided here whose vote (and so its keys) was truncated away: its
    /// writes cannot be put back in the window.
    orphan_commit: Timestamp,
}

impl Replay {
    fn record(
        &mut self,
        index: usize,
        record: &pb::Record,
        owns: &impl Fn(&[u8]) -> bool,
    ) -> Result<(), ReplayError> {
        let malformed = |reason: &str| ReplayError::Malformed {
            index,
            reason: reason.to_owned(),
        };
        let Some(kind) = record.kind.as_ref() else {
            return Err(malformed("no record kind"));
        };
        if let Some(ts) = record.ts() {
            if ts <= self.floor {
                return Err(ReplayError::TimestampOrder {
                    index,
                    ts,
                    previous: self.floor,
                });
            }
            self.floor = ts;
            self.first_ts.get_or_insert(ts);
        }
        match kind {
            pb::record::Kind::Commit(c) => self.commit(c, owns, &malformed),
            pb::record::Kind::Prepared(p) => self.prepared(p, &malformed),
            pb::record::Kind::Decided(d) => self.decided(d, &malformed),
            pb::record::Kind::Heartbeat(_) | pb::record::Kind::EpochStart(_) => Ok(()),
        }
    }

    /// A `Commit`: its outcome, and the writes of this partition's keys.
    fn commit(
        &mut self,
        c: &pb::Commit,
        owns: &impl Fn(&[u8]) -> bool,
        malformed: &impl Fn(&str) -> ReplayError,
    ) -> Result<(), ReplayError> {
        let txn = txn_id(c.txn_id, malformed)?;
        let ts = Timestamp::from_nanos(c.commit_ts);
        self.adj.record_outcome(txn, ts);
        self.adj.appended(txn);
        if self.rebuild_window {
            for m in &c.mutations {
                let m = Mutation::try_from(m.clone()).map_err(|e| malformed(&e.to_string()))?;
                if owns(&m.key) {
                    self.adj.record_write(&m.key, ts);
                }
            }
        }
        Ok(())
    }

    /// A `Prepared`: a vote, pending until a `Decided` follows.
    fn prepared(
        &mut self,
        p: &pb::Prepared,
        malformed: &impl Fn(&str) -> ReplayError,
    ) -> Result<(), ReplayError> {
        let txn = txn_id(p.txn_id, malformed)?;
        for k in &p.keys {
            self.adj.pending.insert(k.clone(), txn);
        }
        self.adj.prepared.insert(
            txn,
            Vote {
                vote_ts: Timestamp::from_nanos(p.vote_ts),
                keys: p.keys.clone(),
                coordinator: PartitionId::new(p.coordinator),
                cast_at: Timestamp::from_nanos(p.vote_ts),
                lsn: None,
            },
        );
        Ok(())
    }

    /// A `Decided`: the vote's outcome (its keys written at τc if committed), and a
    /// coordinator's own abort, which stays binding.
    fn decided(
        &mut self,
        d: &pb::Decided,
        malformed: &impl Fn(&str) -> ReplayError,
    ) -> Result<(), ReplayError> {
        let txn = txn_id(d.txn_id, malformed)?;
        let committed = match d.outcome {
            Some(pb::decided::Outcome::CommittedTs(ts)) => Some(Timestamp::from_nanos(ts)),
            Some(pb::decided::Outcome::Aborted(_)) => None,
            None => return Err(malformed("Decided without an outcome")),
        };
        if d.coordinator_abort {
            self.adj.aborted.insert(
                txn,
                AbortMark {
                    bound: Timestamp::from_nanos(d.snapshot_bound),
                    lsn: None,
                },
            );
        }
        match self.adj.remove_vote(txn) {
            Some(vote) => {
                self.adj
                    .record_decided(txn, Timestamp::from_nanos(d.record_ts));
                if let (true, Some(ts)) = (self.rebuild_window, committed) {
                    for k in &vote.keys {
                        self.adj.record_write(k, ts);
                    }
                }
            }
            // The coordinator's own `Decided`: the kept `Commit` named its keys.
            None if self.adj.known_outcome(txn).is_some() => {}
            None => self.orphan_commit = self.orphan_commit.max(committed.unwrap_or_default()),
        }
        Ok(())
    }

    /// The floor, the outcomes known and the horizon, once every record is replayed.
    fn finish(mut self, mode: ReplayMode, start: Timestamp) -> Adjudicator {
        let adj = &mut self.adj;
        adj.raise_floor(self.floor);
        match mode {
            ReplayMode::Embedded { .. } => {
                // Every commit after the checkpoint was replayed into the outcomes: records
                // after it hold every τ above it.
                adj.set_outcomes_from(start);
                adj.raise_horizon_to(adj.floor());
            }
            ReplayMode::Failover { now, truncated } => {
                if truncated {
                    // Known: every record from the first one kept on. Below it a commit may
                    // have been dropped, so both the outcomes (`Status`) and the window
                    // (conflicts) start there, together: a `Status` that answers "too old"
                    // for a bound must never meet a commit admitted with a τs at or below
                    // it. A commit whose vote was dropped has unknown keys: the window
                    // starts at its τc too.
                    // Nothing kept with a τ (not reachable today: a journal's last segment
                    // always holds a record): nothing before now is known.
                    let kept_from = self
                        .first_ts
                        .map_or(now.latest, |ts| Timestamp::from_nanos(ts.as_nanos() - 1));
                    let known_from = kept_from.max(self.orphan_commit);
                    adj.set_outcomes_from(known_from);
                    adj.raise_horizon_to(known_from);
                }
                adj.advance_horizon(now);
            }
        }
        // Paired with `Adjudicator::status`: below `outcomes_from` it answers "too old", so
        // no commit may be admitted there (τs < horizon is refused).
        assert!(
            adj.outcomes_from() <= adj.horizon(),
            "replay left outcomes known from {} above the horizon {}",
            adj.outcomes_from(),
            adj.horizon()
        );
        self.adj
    }
}

fn txn_id(
    id: Option<pb::TxnId>,
    malformed: &impl Fn(&str) -> ReplayError,
) -> Result<TxnId, ReplayError> {
    id.map(TxnId::from)
        .ok_or_else(|| malformed("missing txn_id"))
}
