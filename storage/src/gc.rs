//! Garbage collection of old versions (ARCHITECTURE §6), written once for every engine.
//!
//! With horizon h, a read at τ ≥ h must answer as before; reads below h are refused
//! (`SnapshotTooOld`, by the storage node). So a pass keeps every version newer than h and,
//! per key, the newest version at or below h — the one a read at h sees — and drops the
//! older ones. A version is dropped only after a newer version of the same key at or below
//! h was seen *in the same pass* (entries come newest first): a pass that sees only part of
//! a key's versions, as a RocksDB compaction of some files does, keeps what it cannot judge.
//!
//! A tombstone that is the newest version at or below h hides nothing a read at τ ≥ h could
//! see, so it can go too — but only in a pass that sees every version of the key (a full
//! compaction); otherwise an older version left in another file would come back to life.
//! [`GcPass`] is the decision procedure; the engines run it (the memory engine over its whole
//! map, RocksDB as a compaction filter).

use journaldb_proto::Timestamp;

use crate::encoding::version_prefix;

const TS_BYTES: usize = 8;

/// One pass over entries in key order, deciding which to keep.
#[derive(Debug)]
pub struct GcPass {
    horizon: Timestamp,
    complete: bool,
    /// The version-key prefix of the last key whose newest version ≤ h this pass has seen.
    covered: Option<Vec<u8>>,
}

impl GcPass {
    /// A pass with horizon `horizon`; `complete` if it sees every version of every key it
    /// sees at all (then tombstones at or below the horizon go too).
    pub fn new(horizon: Timestamp, complete: bool) -> Self {
        GcPass {
            horizon,
            complete,
            covered: None,
        }
    }

    /// Whether to keep the entry `(key, value)`; entries must come in ascending key order.
    /// Anything that is not a well-formed version is kept.
    pub fn keep(&mut self, key: &[u8], value: &[u8]) -> bool {
        let Some(prefix) = version_prefix(key) else {
            return true;
        };
        let Ok(ts) = <[u8; TS_BYTES]>::try_from(&key[prefix.len()..]) else {
            return true;
        };
        if Timestamp::from_nanos(!u64::from_be_bytes(ts)) > self.horizon {
            return true;
        }
        if self.covered.as_deref() == Some(prefix) {
            return false; // a newer version ≤ h of this key was kept (or was a tombstone)
        }
        self.covered = Some(prefix.to_vec());
        let tombstone = value == [0];
        !(tombstone && self.complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{encode_value, version_key};

    /// (user key, τ, value or tombstone)
    type Entry<'a> = (&'a [u8], u64, Option<&'a [u8]>);

    fn run(entries: &[Entry<'_>], h: u64, complete: bool) -> Vec<(Vec<u8>, u64)> {
        let mut pairs: Vec<_> = entries
            .iter()
            .map(|(k, ts, v)| {
                (
                    version_key(k, Timestamp::from_nanos(*ts)),
                    encode_value(*v),
                    (k.to_vec(), *ts),
                )
            })
            .collect();
        pairs.sort();
        let mut pass = GcPass::new(Timestamp::from_nanos(h), complete);
        pairs
            .into_iter()
            .filter(|(k, v, _)| pass.keep(k, v))
            .map(|(_, _, id)| id)
            .collect()
    }

    #[test]
    fn keeps_versions_above_the_horizon_and_the_newest_at_or_below_it() {
        let kept = run(
            &[
                (b"a", 5, Some(b"1")),
                (b"a", 10, Some(b"2")),
                (b"a", 20, Some(b"3")),
                (b"a", 30, Some(b"4")),
            ],
            20,
            false,
        );
        assert_eq!(kept, vec![(b"a".to_vec(), 30), (b"a".to_vec(), 20)]);
    }

    #[test]
    fn keys_that_are_prefixes_of_each_other_are_judged_separately() {
        let kept = run(
            &[
                (b"a", 5, Some(b"1")),
                (b"a\0", 6, Some(b"2")),
                (b"a\0", 4, Some(b"3")),
                (b"ab", 1, Some(b"4")),
            ],
            10,
            false,
        );
        assert_eq!(
            kept,
            vec![
                (b"a".to_vec(), 5),
                (b"a\0".to_vec(), 6),
                (b"ab".to_vec(), 1)
            ]
        );
    }

    #[test]
    fn a_tombstone_at_the_horizon_goes_only_in_a_complete_pass() {
        let entries: &[Entry<'_>] = &[
            (b"k", 3, Some(b"old")),
            (b"k", 7, None),
            (b"k", 12, Some(b"new")),
        ];
        assert_eq!(
            run(entries, 10, false),
            vec![(b"k".to_vec(), 12), (b"k".to_vec(), 7)]
        );
        assert_eq!(run(entries, 10, true), vec![(b"k".to_vec(), 12)]);
    }

    #[test]
    fn metadata_and_malformed_keys_are_kept() {
        let mut pass = GcPass::new(Timestamp::from_nanos(u64::MAX), true);
        assert!(pass.keep(&[0x00, b'w'], &[1, 2]));
        assert!(pass.keep(&[crate::encoding::DATA_PREFIX, 1], &[0]));
    }
}
