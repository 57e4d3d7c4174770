//! The crossbar (ARCHITECTURE §6): merges the records of every journal and releases, as
//! one atomic [`WriteBatch`], everything at or below the **watermark** — the smallest, over
//! journals, of the newest τ seen in each. A journal's records strictly increase in τ, so
//! once every journal has shown a record past τ, no record ≤ τ can still arrive: reads at
//! τ ≤ watermark are complete.
//!
//! A journal's writer can also *promise* τ in memory ([`Crossbar::promise`]): "no record
//! with τ ≤ ts after Lsn `through`". Once the records up to `through` are pushed, the journal
//! counts as having shown τ ts — a heartbeat without a write, for a storage node in the same
//! process as the writer (embedded mode), whose promise cannot outlive it.
//!
//! Sans-IO: callers push records they tailed and write the batches it returns. It checks
//! both invariants it relies on — dense Lsns and strictly increasing τ per journal — and
//! reports a violation as an error rather than apply a wrong history. It does not own
//! reading journals or waiting for the watermark.

use std::collections::{BTreeMap, VecDeque};

use journaldb_proto::{Lsn, Mutation, MutationOp, PartitionId, Timestamp, pb};

use crate::error::CrossbarError;
use crate::store::{Version, WriteBatch};

#[derive(Debug)]
struct Queue {
    /// Newest τ seen in this journal (0 before any record).
    newest: Timestamp,
    /// The Lsn the next pushed record must have.
    next_lsn: Lsn,
    /// Records not yet released: (τ, Lsn, versions).
    pending: VecDeque<(Timestamp, Lsn, Vec<Version>)>,
    /// Promises waiting for their records: (through, τ), in order of both.
    promises: VecDeque<(Lsn, Timestamp)>,
}

impl Queue {
    /// Counts the promises whose records have all been pushed.
    fn keep_promises(&mut self) {
        while let Some(&(through, ts)) = self.promises.front() {
            if through >= self.next_lsn {
                break;
            }
            self.newest = self.newest.max(ts);
            self.promises.pop_front();
        }
    }
}

/// Merges journals by τ up to the watermark.
#[derive(Debug)]
pub struct Crossbar {
    journals: BTreeMap<PartitionId, Queue>,
    /// The watermark of the last batch released.
    released: Timestamp,
}

impl Crossbar {
    /// A crossbar over journals that have been applied up to the given Lsns (`Lsn::ZERO`
    /// for none), and whose newest applied τ is `applied_ts` (the store's watermark).
    pub fn new(
        journals: impl IntoIterator<Item = (PartitionId, Lsn)>,
        applied_ts: Timestamp,
    ) -> Self {
        Crossbar {
            journals: journals
                .into_iter()
                .map(|(p, applied)| {
                    let queue = Queue {
                        newest: applied_ts,
                        next_lsn: applied.next(),
                        pending: VecDeque::new(),
                        promises: VecDeque::new(),
                    };
                    (p, queue)
                })
                .collect(),
            released: applied_ts,
        }
    }

    /// The journals this crossbar merges.
    pub fn journals(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.journals.keys().copied()
    }

    /// The Lsn the next record of `journal` must have (`None` for a journal not merged
    /// here): where a feed that restarts must continue.
    pub fn next_lsn(&self, journal: PartitionId) -> Option<Lsn> {
        self.journals.get(&journal).map(|q| q.next_lsn)
    }

    /// The watermark: every record with τ ≤ this has been pushed, from every journal.
    pub fn watermark(&self) -> Timestamp {
        self.journals
            .values()
            .map(|q| q.newest)
            .min()
            .unwrap_or(Timestamp::ZERO)
    }

    /// Adds the next record of `journal`.
    pub fn push(
        &mut self,
        journal: PartitionId,
        lsn: Lsn,
        record: &pb::Record,
    ) -> Result<(), CrossbarError> {
        let q = self
            .journals
            .get_mut(&journal)
            .ok_or(CrossbarError::UnknownJournal(journal))?;
        if lsn != q.next_lsn {
            return Err(CrossbarError::LsnGap {
                journal,
                got: lsn,
                expected: q.next_lsn,
            });
        }
        let malformed = |reason: &str| CrossbarError::Malformed {
            journal,
            lsn,
            reason: reason.to_owned(),
        };
        let Some(kind) = &record.kind else {
            return Err(malformed("no record kind"));
        };
        // EpochStart has no τ: it is applied with the records before it.
        let ts = record.ts().unwrap_or(q.newest);
        let is_epoch_start = matches!(kind, pb::record::Kind::EpochStart(_));
        if !is_epoch_start && ts <= q.newest {
            return Err(CrossbarError::TimestampOrder {
                journal,
                lsn,
                ts,
                previous: q.newest,
            });
        }
        let versions = match kind {
            pb::record::Kind::Commit(c) => c
                .mutations
                .iter()
                .map(|m| {
                    let m = Mutation::try_from(m.clone()).map_err(|e| malformed(&e.to_string()))?;
                    let value = match m.op {
                        MutationOp::Put(v) => Some(v),
                        MutationOp::Delete => None,
                    };
                    Ok(Version {
                        key: m.key,
                        ts,
                        value,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        q.newest = ts;
        q.next_lsn = lsn.next();
        q.pending.push_back((ts, lsn, versions));
        q.keep_promises();
        Ok(())
    }

    /// `journal`'s writer promises that after Lsn `through` it holds no record with τ ≤
    /// `ts` (it raised its floor to `ts` having handed out Lsns up to `through`). Records
    /// pushed later with τ ≤ `ts` are refused as out of order.
    pub fn promise(
        &mut self,
        journal: PartitionId,
        through: Lsn,
        ts: Timestamp,
    ) -> Result<(), CrossbarError> {
        let q = self
            .journals
            .get_mut(&journal)
            .ok_or(CrossbarError::UnknownJournal(journal))?;
        if q.promises.back().is_none_or(|&(_, last)| last < ts) {
            q.promises.push_back((through, ts));
        }
        q.keep_promises();
        Ok(())
    }

    /// Every pushed record with τ ≤ the watermark, as one batch with the new applied
    /// position of each journal it advances and the watermark; `None` if neither records
    /// nor the watermark moved. Nothing is consumed: once the batch is stored, hand its
    /// [`Release`] to [`Crossbar::released`]. A batch that could not be stored is simply
    /// built again — its records stay here, so a failed write loses nothing and the
    /// watermark never passes data that is not stored.
    pub fn batch(&self) -> Option<(WriteBatch, Release)> {
        let watermark = self.watermark();
        // Released in τ order: each version is newer than everything released before.
        let mut batch = WriteBatch {
            in_order: true,
            ..WriteBatch::default()
        };
        for (&p, q) in &self.journals {
            let mut last = None;
            for (_, lsn, versions) in q.pending.iter().take_while(|(ts, _, _)| *ts <= watermark) {
                batch.versions.extend(versions.iter().cloned());
                last = Some(*lsn);
            }
            if let Some(lsn) = last {
                batch.applied.push((p, lsn));
            }
        }
        if batch.applied.is_empty() && watermark <= self.released {
            return None;
        }
        batch.watermark = Some(watermark);
        let release = Release {
            applied: batch.applied.clone(),
            watermark,
        };
        Some((batch, release))
    }

    /// The batch of `release` is stored: forgets its records.
    pub fn released(&mut self, release: Release) {
        for (p, through) in release.applied {
            let Some(q) = self.journals.get_mut(&p) else {
                continue;
            };
            while q.pending.front().is_some_and(|(_, lsn, _)| *lsn <= through) {
                q.pending.pop_front();
            }
        }
        assert!(
            release.watermark >= self.released,
            "the crossbar's released watermark moves only forward"
        );
        self.released = release.watermark;
    }
}

/// What a stored batch of [`Crossbar::batch`] releases: the records up to each journal's
/// applied position, and the watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a stored batch is released by Crossbar::released"]
pub struct Release {
    applied: Vec<(PartitionId, Lsn)>,
    watermark: Timestamp,
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use journaldb_proto::TxnId;

    use super::*;

    fn commit(ts: u64, key: &str) -> pb::Record {
        pb::Record::commit(
            TxnId::new(u128::from(ts)),
            Timestamp::from_nanos(ts),
            [Mutation::put(key.to_owned(), format!("v{ts}"))],
            &[],
        )
    }

    fn heartbeat(ts: u64) -> pb::Record {
        pb::Record::heartbeat(Timestamp::from_nanos(ts))
    }

    /// Builds the next batch and releases it, as a store that never fails would.
    fn drain(x: &mut Crossbar) -> Option<WriteBatch> {
        let (batch, release) = x.batch()?;
        x.released(release);
        Some(batch)
    }

    const A: PartitionId = PartitionId::new(0);
    const B: PartitionId = PartitionId::new(1);

    #[test]
    fn releases_only_what_every_journal_has_passed() {
        let mut x = Crossbar::new([(A, Lsn::ZERO), (B, Lsn::ZERO)], Timestamp::ZERO);
        x.push(A, Lsn::new(1), &commit(10, "a")).unwrap();
        x.push(A, Lsn::new(2), &commit(30, "a")).unwrap();
        assert_eq!(x.watermark(), Timestamp::ZERO, "B has said nothing yet");
        assert!(drain(&mut x).is_none());
        x.push(B, Lsn::new(1), &commit(20, "b")).unwrap();
        let batch = drain(&mut x).unwrap();
        let ts: Vec<u64> = batch.versions.iter().map(|v| v.ts.as_nanos()).collect();
        assert_eq!(ts, vec![10, 20]);
        assert_eq!(batch.applied, vec![(A, Lsn::new(1)), (B, Lsn::new(1))]);
        x.push(B, Lsn::new(2), &heartbeat(40)).unwrap();
        let batch = drain(&mut x).unwrap();
        assert_eq!(batch.versions.len(), 1);
        assert_eq!(batch.versions[0].value, Some(Bytes::from_static(b"v30")));
        assert_eq!(batch.applied, vec![(A, Lsn::new(2))]);
        assert_eq!(x.watermark(), Timestamp::from_nanos(30));
    }

    #[test]
    fn a_promise_counts_once_the_records_before_it_are_pushed() {
        let mut x = Crossbar::new([(A, Lsn::ZERO), (B, Lsn::ZERO)], Timestamp::ZERO);
        x.push(A, Lsn::new(1), &commit(10, "a")).unwrap();
        x.push(A, Lsn::new(2), &commit(60, "a")).unwrap();
        // B handed out Lsns 1 and 2 (not yet pushed), then promised 50.
        x.promise(B, Lsn::new(2), Timestamp::from_nanos(50))
            .unwrap();
        assert_eq!(
            x.watermark(),
            Timestamp::ZERO,
            "B's records up to 2 are not here"
        );
        x.push(B, Lsn::new(1), &commit(20, "b")).unwrap();
        assert_eq!(x.watermark(), Timestamp::from_nanos(20));
        x.push(B, Lsn::new(2), &commit(30, "b")).unwrap();
        assert_eq!(x.watermark(), Timestamp::from_nanos(50));
        let batch = drain(&mut x).unwrap();
        let ts: Vec<u64> = batch.versions.iter().map(|v| v.ts.as_nanos()).collect();
        assert_eq!(ts, vec![10, 20, 30], "60 is above the watermark");
        assert_eq!(batch.watermark, Some(Timestamp::from_nanos(50)));
        // A promise alone moves the watermark: a batch with no versions says so.
        x.promise(B, Lsn::new(2), Timestamp::from_nanos(70))
            .unwrap();
        let batch = drain(&mut x).unwrap();
        assert_eq!(batch.watermark, Some(Timestamp::from_nanos(60)));
        assert_eq!(batch.applied, vec![(A, Lsn::new(2))]);
        assert!(drain(&mut x).is_none(), "nothing moved since");
        // Having promised 70, B's next record must be after it.
        assert!(matches!(
            x.push(B, Lsn::new(3), &commit(65, "b")),
            Err(CrossbarError::TimestampOrder { .. })
        ));
    }

    /// Regression: the crossbar forgot a batch before the store had written it, so a
    /// failed write lost its records and the next batch moved the watermark past them.
    #[test]
    fn a_batch_that_was_not_stored_is_built_again_with_what_came_since() {
        let mut x = Crossbar::new([(A, Lsn::ZERO)], Timestamp::ZERO);
        x.push(A, Lsn::new(1), &commit(10, "a")).unwrap();
        x.push(A, Lsn::new(2), &commit(20, "b")).unwrap();
        let (failed, _not_released) = x.batch().unwrap();
        assert_eq!(failed.versions.len(), 2);
        // The write failed: nothing is released. A later record joins the retried batch.
        x.push(A, Lsn::new(3), &commit(30, "c")).unwrap();
        let (retried, release) = x.batch().unwrap();
        let ts: Vec<u64> = retried.versions.iter().map(|v| v.ts.as_nanos()).collect();
        assert_eq!(ts, vec![10, 20, 30]);
        assert_eq!(retried.applied, vec![(A, Lsn::new(3))]);
        assert_eq!(retried.watermark, Some(Timestamp::from_nanos(30)));
        x.released(release);
        assert!(x.batch().is_none(), "everything stored");
    }

    #[test]
    fn invariant_violations_are_errors() {
        let mut x = Crossbar::new([(A, Lsn::new(4))], Timestamp::from_nanos(100));
        assert!(matches!(
            x.push(A, Lsn::new(6), &heartbeat(200)),
            Err(CrossbarError::LsnGap { expected, .. }) if expected == Lsn::new(5)
        ));
        assert!(matches!(
            x.push(A, Lsn::new(5), &heartbeat(100)),
            Err(CrossbarError::TimestampOrder { .. })
        ));
        assert!(matches!(
            x.push(B, Lsn::new(1), &heartbeat(1)),
            Err(CrossbarError::UnknownJournal(_))
        ));
        assert!(matches!(
            x.push(A, Lsn::new(5), &pb::Record { kind: None }),
            Err(CrossbarError::Malformed { .. })
        ));
        // Nothing was consumed by the failed pushes.
        x.push(A, Lsn::new(5), &heartbeat(101)).unwrap();
    }

    #[test]
    fn epoch_starts_are_applied_without_moving_time() {
        let mut x = Crossbar::new([(A, Lsn::ZERO)], Timestamp::ZERO);
        x.push(A, Lsn::new(1), &heartbeat(5)).unwrap();
        let start = pb::Record {
            kind: Some(pb::record::Kind::EpochStart(pb::EpochStart { epoch: None })),
        };
        x.push(A, Lsn::new(2), &start).unwrap();
        assert_eq!(x.watermark(), Timestamp::from_nanos(5));
        assert_eq!(drain(&mut x).unwrap().applied, vec![(A, Lsn::new(2))]);
        x.push(A, Lsn::new(3), &heartbeat(6)).unwrap();
    }
}
