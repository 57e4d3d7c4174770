//! Retention (ARCHITECTURE §5 "Truncation", §6 "GC"): which of a storage node's checkpoints
//! let the journals drop their oldest records, and how far. The one place this rule is
//! written; the embedded database and a cluster's journal nodes both call it.
//!
//! A storage node checkpoints every maintenance round ([`StorageNode::maintain`]): its
//! garbage-collection horizon rises to the retention cutoff (`now − retention`) and what
//! it has applied becomes durable. A journal may drop its records up to a checkpoint's
//! position for it once
//!
//! 1. **every** storage replica holds such a checkpoint (a replica's restart resumes from
//!    its own durable positions, never from a dropped record),
//! 2. the checkpoint's records are all older than the retention window (its watermark is
//!    below the cutoff: reads inside the window can be served, and a record a restarted
//!    adjudicator's replay needs — its conflict window spans `max_txn_age ≤ retention` — is
//!    kept), and
//! 3. its records hold no vote still undecided (the caller passes the oldest one's τ).
//!
//! A store that is not durable (the memory engine) is rebuilt from the journals at every
//! start, so its node offers no checkpoint, and nothing is ever truncated while it serves.
//! Sans-IO: callers ask their replicas and truncate.
//!
//! [`StorageNode::maintain`]: crate::StorageNode::maintain

use std::collections::{BTreeMap, VecDeque};

use journaldb_proto::{Lsn, PartitionId, Timestamp, pb};

/// What [`StorageNode::checkpoint`](crate::StorageNode::checkpoint) made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every record of each journal up to this position is stored durably.
    pub applied: BTreeMap<PartitionId, Lsn>,
    /// Every version ≤ this is stored (so every record above was at or below it).
    pub watermark: Timestamp,
    /// The garbage-collection horizon now in force.
    pub gc_horizon: Timestamp,
}

/// A storage node's durable checkpoints that are not yet old enough to truncate to, after
/// the newest one that is.
#[derive(Debug, Default)]
pub struct CheckpointHistory {
    /// Oldest first; at most one has a watermark below the last cutoff (the front).
    checkpoints: VecDeque<Checkpoint>,
}

impl CheckpointHistory {
    /// A history holding `opened_at`, what was durable when the store opened (if it is).
    pub fn new(opened_at: Option<Checkpoint>) -> Self {
        CheckpointHistory {
            checkpoints: opened_at.into_iter().collect(),
        }
    }

    /// Records a durable checkpoint and forgets every one that a newer one, also below
    /// `cutoff`, supersedes.
    pub fn record(&mut self, checkpoint: Checkpoint, cutoff: Timestamp) {
        if let Some(last) = self.checkpoints.back() {
            assert!(
                checkpoint.watermark >= last.watermark,
                "a checkpoint's watermark moves only forward ({} after {})",
                checkpoint.watermark,
                last.watermark
            );
        }
        self.checkpoints.push_back(checkpoint);
        while self
            .checkpoints
            .get(1)
            .is_some_and(|next| next.watermark < cutoff)
        {
            self.checkpoints.pop_front();
        }
    }

    /// The newest checkpoint all of whose records are older than `before` (its watermark
    /// is below it): what journals may drop up to, as far as this node is concerned.
    pub fn before(&self, before: Timestamp) -> Option<&Checkpoint> {
        self.checkpoints
            .iter()
            .take_while(|c| c.watermark < before)
            .last()
    }
}

/// The first position `journal` must keep, given every storage replica's newest
/// checkpoint older than the retention window (`checkpoints`, one per replica) and
/// `keep_from`: the retention cutoff, lowered to the τ of the oldest vote the journal's
/// adjudicator has not decided; `durable_end` is the journal's (no replica can have
/// stored a record the journal has not made durable). `None` keeps the whole journal: no
/// replica at all (the journal is the only copy), a replica without a position for it, a
/// checkpoint not older than `keep_from`, or a position past `durable_end` (a replica that
/// lies, or belongs to another cluster, never makes a journal drop what it has).
pub fn first_to_keep<'a>(
    checkpoints: impl IntoIterator<Item = &'a Checkpoint>,
    journal: PartitionId,
    keep_from: Timestamp,
    durable_end: Lsn,
) -> Option<Lsn> {
    let mut first = None::<Lsn>;
    for checkpoint in checkpoints {
        if checkpoint.watermark >= keep_from {
            return None;
        }
        let next = checkpoint.applied.get(&journal)?.next();
        if next > durable_end {
            return None;
        }
        first = Some(first.map_or(next, |f| f.min(next)));
    }
    first
}

/// `StorageService.Checkpointed`'s reply for `checkpoint`.
pub fn checkpoint_reply(checkpoint: Option<&Checkpoint>) -> pb::CheckpointedReply {
    match checkpoint {
        None => pb::CheckpointedReply::default(),
        Some(c) => pb::CheckpointedReply {
            found: true,
            watermark: c.watermark.as_nanos(),
            applied: c
                .applied
                .iter()
                .map(|(p, lsn)| pb::JournalPosition {
                    partition: p.get(),
                    lsn: lsn.get(),
                })
                .collect(),
        },
    }
}

/// The checkpoint a `Checkpointed` reply describes (`None`: the replica has none), or what
/// is wrong with it: a position named twice, or at `Lsn` 0.
pub fn checkpoint_from_reply(reply: pb::CheckpointedReply) -> Result<Option<Checkpoint>, String> {
    if !reply.found {
        return Ok(None);
    }
    let mut applied = BTreeMap::new();
    for position in reply.applied {
        let journal = PartitionId::new(position.partition);
        if position.lsn == 0 {
            return Err(format!("a checkpoint names {journal} at Lsn 0"));
        }
        if applied.insert(journal, Lsn::new(position.lsn)).is_some() {
            return Err(format!("a checkpoint names {journal} twice"));
        }
    }
    Ok(Some(Checkpoint {
        applied,
        watermark: Timestamp::from_nanos(reply.watermark),
        // Not part of the reply: truncation does not depend on it.
        gc_horizon: Timestamp::ZERO,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(n: u64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    fn checkpoint(watermark: u64, applied: &[(u32, u64)]) -> Checkpoint {
        Checkpoint {
            applied: applied
                .iter()
                .map(|&(p, l)| (PartitionId::new(p), Lsn::new(l)))
                .collect::<BTreeMap<_, _>>(),
            watermark: ts(watermark),
            gc_horizon: ts(0),
        }
    }

    #[test]
    fn the_history_offers_the_newest_checkpoint_below_the_cutoff() {
        let mut history = CheckpointHistory::new(None);
        assert_eq!(history.before(ts(100)), None);
        history.record(checkpoint(10, &[(0, 5)]), ts(5));
        history.record(checkpoint(20, &[(0, 9)]), ts(15));
        assert_eq!(history.before(ts(15)).unwrap().watermark, ts(10));
        assert_eq!(history.before(ts(10)), None, "not below: kept whole");
        history.record(checkpoint(30, &[(0, 12)]), ts(25));
        // 10 is superseded by 20, which is below 25.
        assert_eq!(history.before(ts(25)).unwrap().watermark, ts(20));
        assert_eq!(history.before(ts(100)).unwrap().watermark, ts(30));
        assert_eq!(
            history.before(ts(15)),
            None,
            "forgotten: nothing older offered"
        );
    }

    #[test]
    #[should_panic(expected = "moves only forward")]
    fn a_checkpoint_behind_the_last_one_stops_the_node() {
        let mut history = CheckpointHistory::new(Some(checkpoint(20, &[])));
        history.record(checkpoint(10, &[]), ts(0));
    }

    #[test]
    fn a_journal_keeps_what_any_replica_still_needs() {
        const END: Lsn = Lsn::new(100);
        let p = PartitionId::new(0);
        let a = checkpoint(10, &[(0, 7), (1, 3)]);
        let b = checkpoint(12, &[(0, 4)]);
        assert_eq!(first_to_keep([&a, &b], p, ts(20), END), Some(Lsn::new(5)));
        assert_eq!(first_to_keep([&a], p, ts(20), END), Some(Lsn::new(8)));
        // A replica with no position for the journal, none at all, or a checkpoint not
        // older than what must be kept (an undecided vote, the retention cutoff).
        assert_eq!(
            first_to_keep([&a, &b], PartitionId::new(1), ts(20), END),
            None
        );
        assert_eq!(first_to_keep([], p, ts(20), END), None);
        assert_eq!(first_to_keep([&a, &b], p, ts(12), END), None);
        assert_eq!(first_to_keep([&a], p, ts(11), END), Some(Lsn::new(8)));
        // A position the journal has not reached: a replica that lies.
        assert_eq!(first_to_keep([&a, &b], p, ts(20), Lsn::new(7)), None);
        assert_eq!(
            first_to_keep([&a, &b], p, ts(20), Lsn::new(8)),
            Some(Lsn::new(5))
        );
    }

    #[test]
    fn a_checkpoint_survives_its_reply_and_a_bad_reply_is_refused() {
        let a = checkpoint(10, &[(0, 7), (1, 3)]);
        let back = checkpoint_from_reply(checkpoint_reply(Some(&a)))
            .unwrap()
            .unwrap();
        assert_eq!((&back.applied, back.watermark), (&a.applied, a.watermark));
        assert_eq!(checkpoint_from_reply(checkpoint_reply(None)), Ok(None));
        let mut twice = checkpoint_reply(Some(&a));
        twice.applied.push(twice.applied[0]);
        assert!(checkpoint_from_reply(twice).is_err());
        let mut zero = checkpoint_reply(Some(&a));
        zero.applied[1].lsn = 0;
        assert!(checkpoint_from_reply(zero).is_err());
    }
}
