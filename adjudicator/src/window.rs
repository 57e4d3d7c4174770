//! The conflict window: for each key written inside the window, the τ of its last write.
//!
//! Invariant: every write with τ > `horizon` is remembered (its key maps to a τ at least
//! as large); writes at or below the horizon may be forgotten. The horizon only rises, so
//! nothing a live snapshot (τs ≥ horizon) could conflict with is ever pruned. Memory is
//! bounded by the writes per window. It does not decide anything: `core.rs` does.
//!
//! Every commit looks up each key it writes, so the keys live in a hash map (one hash per
//! lookup, where a tree of 100 k keys compares keys 17 times); the τ-ordered index beside
//! it compares timestamps first and serves only pruning.

use std::collections::BTreeSet;

use bytes::Bytes;
use journaldb_proto::{LookupMap, Timestamp};

/// Last-write timestamps of keys, pruned below a monotone horizon.
#[derive(Debug, Default)]
pub(crate) struct ConflictWindow {
    last_write: LookupMap<Bytes, Timestamp>,
    /// The same entries ordered by τ, for pruning.
    by_ts: BTreeSet<(Timestamp, Bytes)>,
    horizon: Timestamp,
}

impl ConflictWindow {
    /// The τ of the last write of `key` inside the window, if any.
    pub(crate) fn last_write(&self, key: &[u8]) -> Option<Timestamp> {
        self.last_write.get(key).copied()
    }

    /// Records a write of `key` at `ts` (keeping the larger τ if one is already known).
    pub(crate) fn record(&mut self, key: &Bytes, ts: Timestamp) {
        if ts <= self.horizon {
            return;
        }
        match self.last_write.get(key) {
            Some(&prev) if prev >= ts => {}
            Some(&prev) => {
                self.by_ts.remove(&(prev, key.clone()));
                self.insert(key, ts);
            }
            None => self.insert(key, ts),
        }
    }

    fn insert(&mut self, key: &Bytes, ts: Timestamp) {
        self.last_write.insert(key.clone(), ts);
        self.by_ts.insert((ts, key.clone()));
    }

    /// Raises the horizon to `h` (never lowers it) and forgets writes at or below it.
    pub(crate) fn advance_horizon(&mut self, h: Timestamp) {
        if h <= self.horizon {
            return;
        }
        self.horizon = h;
        while let Some((ts, _)) = self.by_ts.first() {
            if *ts > h {
                break;
            }
            if let Some((_, key)) = self.by_ts.pop_first() {
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
}
