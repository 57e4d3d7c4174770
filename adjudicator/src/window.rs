//! The conflict window: for each key written inside the window, the τ of its last write.
//!
//! Invariant: every write with τ > `horizon` is remembered (its key maps to a τ at least
//! as large); writes at or below the horizon may be forgotten. The horizon only rises, so
//! nothing a live snapshot (τs ≥ horizon) could conflict with is ever pruned. Memory is
//! bounded by the writes per window. It does not decide anything: `core.rs` does.
//!
//! Every commit looks up and records each key it writes, so the keys live in a hash map
//! (one hash per lookup, where a tree of 100 k keys compares keys 17 times), and pruning
//! order is a queue of writes in the order recorded — τ order, as commits are decided —
//! instead of a τ-ordered tree: recording is a push, pruning pops from the front. A
//! queued write whose key was written again since is stale and skipped when popped; the
//! queue is compacted once it holds more than twice as many writes as keys, so memory
//! stays bounded by the keys in the window, however hot they are.

use std::collections::VecDeque;

use bytes::Bytes;
use journaldb_proto::{LookupMap, Timestamp};

/// Last-write timestamps of keys, pruned below a monotone horizon.
#[derive(Debug, Default)]
pub(crate) struct ConflictWindow {
    last_write: LookupMap<Bytes, Timestamp>,
    /// `(τ, key)` of each write recorded, in the order recorded. Every key in `last_write`
    /// has its entry here (the live one); other entries are stale.
    order: VecDeque<(Timestamp, Bytes)>,
    horizon: Timestamp,
}

/// Stale entries tolerated in the queue beyond one per key, before compacting it.
const COMPACT_SLACK: usize = 1024;

impl ConflictWindow {
    /// The τ of the last write of `key` inside the window, if any.
    pub(crate) fn last_write(&self, key: &[u8]) -> Option<Timestamp> {
        self.last_write.get(key).copied()
    }

    /// Records a write of `key` at `ts` (keeping the larger τ if one is already known).
    pub(crate) fn record(&mut self, key: &Bytes, ts: Timestamp) {
        if ts <= self.horizon || self.last_write(key).is_some_and(|prev| prev >= ts) {
            return;
        }
        self.last_write.insert(key.clone(), ts);
        self.order.push_back((ts, key.clone()));
        if self.order.len() > 2 * self.last_write.len() + COMPACT_SLACK {
            let live = &self.last_write;
            self.order.retain(|(ts, key)| live.get(key) == Some(ts));
        }
    }

    /// Raises the horizon to `h` (never lowers it) and forgets writes at or below it.
    /// A write recorded late with an older τ (a cross-partition decision) waits behind
    /// newer ones and is forgotten with them: kept longer is always safe.
    pub(crate) fn advance_horizon(&mut self, h: Timestamp) {
        if h <= self.horizon {
            return;
        }
        self.horizon = h;
        while self.order.front().is_some_and(|(ts, _)| *ts <= h) {
            let Some((ts, key)) = self.order.pop_front() else {
                break;
            };
            if self.last_write.get(&key) == Some(&ts) {
                self.last_write.remove(&key);
            }
        }
    }

    /// Snapshots older than this can no longer be checked for conflicts.
    pub(crate) fn horizon(&self) -> Timestamp {
        self.horizon
    }

    /// Keys remembered.
    pub(crate) fn len(&self) -> usize {
        self.last_write.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(n: u64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    #[test]
    fn remembers_the_latest_write_and_prunes_below_the_horizon() {
        let mut w = ConflictWindow::default();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        w.record(&a, ts(10));
        w.record(&b, ts(20));
        w.record(&a, ts(30));
        w.record(&a, ts(25)); // an older τ (a late Decided) does not lower it
        assert_eq!(w.last_write(b"a"), Some(ts(30)));
        w.advance_horizon(ts(20));
        assert_eq!(
            (w.last_write(b"a"), w.last_write(b"b")),
            (Some(ts(30)), None)
        );
        w.advance_horizon(ts(5));
        assert_eq!(w.horizon(), ts(20), "the horizon never moves back");
        w.record(&b, ts(15));
        assert_eq!(
            w.last_write(b"b"),
            None,
            "writes below the horizon are not kept"
        );
        w.advance_horizon(ts(30));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_hot_key_keeps_the_queue_bounded_and_its_latest_write() {
        let mut w = ConflictWindow::default();
        let hot = Bytes::from_static(b"hot");
        for n in 1..=10_000 {
            w.record(&hot, ts(n));
        }
        assert!(w.order.len() <= 2 + COMPACT_SLACK, "{}", w.order.len());
        assert_eq!(w.last_write(b"hot"), Some(ts(10_000)));
        w.advance_horizon(ts(9_999));
        assert_eq!(
            w.last_write(b"hot"),
            Some(ts(10_000)),
            "its live write is newer"
        );
        w.advance_horizon(ts(10_000));
        assert_eq!((w.len(), w.order.len()), (0, 0));
    }

    #[test]
    fn a_late_older_write_is_kept_until_the_newer_ones_before_it_go() {
        let mut w = ConflictWindow::default();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        w.record(&a, ts(50));
        w.record(&b, ts(20)); // decided late, at an older τ
        w.advance_horizon(ts(30));
        assert_eq!(w.last_write(b"b"), Some(ts(20)), "kept longer: safe");
        w.advance_horizon(ts(50));
        assert_eq!(w.len(), 0);
    }
}
