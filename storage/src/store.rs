//! The [`VersionStore`] trait: MVCC versions `(key, τ) → value | tombstone`, read "as of" τ.
//!
//! The MVCC logic (visibility, scans, continuations) is written once, here, on top of an
//! [`Engine`]: an ordered byte map with atomic batch writes and two seeks. Every engine
//! therefore answers identically by construction; the conformance suite checks each anyway.
//! Garbage collection is decided by [`crate::gc::GcPass`] and run by each engine in its own
//! way ([`Engine::collect_garbage`]); refusing reads below the horizon is the storage node's.

use std::collections::BTreeMap;

use bytes::Bytes;
use journaldb_proto::{Lsn, PartitionId, Timestamp};

use crate::encoding::{
    META_PREFIX, after_all_versions, decode_latest, decode_value_owned, decode_version_key,
    encode_latest, encode_value, key_prefix, latest_key, version_key,
};
use crate::error::{Error, Result};

/// One version of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The user key.
    pub key: Bytes,
    /// The τ it was written at (the commit timestamp of its transaction).
    pub ts: Timestamp,
    /// The value, or `None` for a delete (a tombstone).
    pub value: Option<Bytes>,
}

/// Versions and applied journal positions, written atomically together: after a crash the
/// data and the positions agree, and replay from the journal fills in the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Versions to add.
    pub versions: Vec<Version>,
    /// New applied position of each journal this batch advances.
    pub applied: Vec<(PartitionId, Lsn)>,
    /// The new watermark, if this batch advances it: every version ≤ it is now stored.
    pub watermark: Option<Timestamp>,
    /// Every version is newer than all versions of its key written before, as the crossbar
    /// guarantees (it releases in τ order): the store may then refresh latest-version
    /// entries without reading them first.
    pub in_order: bool,
}

/// A key range `[start, end)`; `end: None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRange {
    /// First key included.
    pub start: Bytes,
    /// First key excluded, if any.
    pub end: Option<Bytes>,
}

impl ScanRange {
    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        // The end is the prefix "plus one": drop trailing 0xFF bytes, increment the last.
        let mut end = prefix.to_vec();
        while end.last() == Some(&0xFF) {
            end.pop();
        }
        let end = end.last_mut().map(|b| *b += 1).map(|()| Bytes::from(end));
        ScanRange {
            start: Bytes::copy_from_slice(prefix),
            end,
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        key >= &self.start[..] && self.end.as_ref().is_none_or(|e| key < &e[..])
    }
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// Visible `(key, value)` pairs, in scan order.
    pub rows: Vec<(Bytes, Bytes)>,
    /// The part of the range not yet scanned, if the page stopped at its limit.
    pub resume: Option<ScanRange>,
}

/// An ordered byte map with atomic batch writes: what an engine provides.
pub trait Engine: Send + Sync {
    /// The first entry with key ≥ `key`.
    fn seek_ge(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// The last entry with key ≤ `key`.
    fn seek_le(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// The value stored under exactly `key`, if any. Engines may use whole-key filters.
    fn get_exact(&self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self
            .seek_ge(key)?
            .filter(|(k, _)| k == key)
            .map(|(_, v)| Bytes::from(v)))
    }
    /// The first entry ≥ the version key `key` that is a version of the same user key
    /// ([`crate::encoding::version_prefix`]): the newest version at or below its τ. An
    /// engine may answer it with prefix filters, skipping files without that key.
    fn seek_version(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let prefix = crate::encoding::version_prefix(key);
        Ok(self
            .seek_ge(key)?
            .filter(|(k, _)| prefix.is_some() && crate::encoding::version_prefix(k) == prefix))
    }
    /// Writes every pair, all or nothing.
    fn write_atomic(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()>;
    /// Makes everything written so far durable (a checkpoint). Nothing to do in memory.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// Whether [`Engine::flush`] makes data survive a restart (false in memory).
    fn is_durable(&self) -> bool;
    /// Lets the engine drop versions hidden below `horizon` by the rules of
    /// [`crate::gc`]: at once (memory) or as it compacts (RocksDB). The caller has already
    /// made reads below `horizon` fail, and never lowers it.
    fn collect_garbage(&self, horizon: Timestamp) -> Result<()>;
    /// Compacts everything now, so garbage and tombstones below the horizon are gone
    /// (a full pass). Nothing more to do in memory.
    fn compact(&self) -> Result<()> {
        Ok(())
    }
    /// Drops every version and latest-version entry, keeping the metadata (what a copy
    /// that was cut short left behind goes before the next one: [`crate::copy`]).
    fn clear_versions(&self) -> Result<()>;
}

impl Engine for Box<dyn Engine> {
    fn seek_ge(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        (**self).seek_ge(key)
    }

    fn seek_le(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        (**self).seek_le(key)
    }

    fn seek_version(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        (**self).seek_version(key)
    }

    fn get_exact(&self, key: &[u8]) -> Result<Option<Bytes>> {
        (**self).get_exact(key)
    }

    fn write_atomic(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        (**self).write_atomic(pairs)
    }

    fn flush(&self) -> Result<()> {
        (**self).flush()
    }

    fn is_durable(&self) -> bool {
        (**self).is_durable()
    }

    fn collect_garbage(&self, horizon: Timestamp) -> Result<()> {
        (**self).collect_garbage(horizon)
    }

    fn compact(&self) -> Result<()> {
        (**self).compact()
    }

    fn clear_versions(&self) -> Result<()> {
        (**self).clear_versions()
    }
}

/// MVCC reads and writes, for every [`Engine`].
pub trait VersionStore: Send + Sync {
    /// Adds versions and applied positions atomically.
    fn write(&self, batch: WriteBatch) -> Result<()>;
    /// The value of `key` as of `at`: its newest version with τ ≤ `at`; `None` if there is
    /// none or it is a tombstone.
    fn get(&self, key: &[u8], at: Timestamp) -> Result<Option<Bytes>>;
    /// At most `limit` visible rows of `range` as of `at`, ascending (or descending when
    /// `reverse`), with the rest of the range to resume from.
    fn scan(
        &self,
        range: &ScanRange,
        at: Timestamp,
        limit: usize,
        reverse: bool,
    ) -> Result<ScanPage>;
    /// The applied position of every journal written so far.
    fn applied(&self) -> Result<BTreeMap<PartitionId, Lsn>>;
    /// The last watermark written (zero if none).
    fn watermark(&self) -> Result<Timestamp>;
    /// Records the garbage-collection horizon (durable at the next flush).
    fn write_gc_horizon(&self, horizon: Timestamp) -> Result<()>;
    /// The last garbage-collection horizon written (zero if none).
    fn gc_horizon(&self) -> Result<Timestamp>;
}

const APPLIED: &[u8] = b"applied/";
const WATERMARK: &[u8] = b"watermark";
const GC_HORIZON: &[u8] = b"gc-horizon";

pub(crate) fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut k = vec![META_PREFIX];
    k.extend_from_slice(name);
    k
}

fn watermark_key() -> Vec<u8> {
    meta_key(WATERMARK)
}

/// The timestamp stored under the meta key `name`, zero if absent.
fn read_ts<E: Engine + ?Sized>(e: &E, name: &[u8]) -> Result<Timestamp> {
    let key = meta_key(name);
    match e.seek_ge(&key)? {
        Some((k, v)) if k == key => {
            let nanos: [u8; 8] = v[..]
                .try_into()
                .map_err(|_| corrupt("malformed timestamp", &k))?;
            Ok(Timestamp::from_nanos(u64::from_be_bytes(nanos)))
        }
        _ => Ok(Timestamp::ZERO),
    }
}

fn applied_key(p: PartitionId) -> Vec<u8> {
    let mut k = vec![META_PREFIX];
    k.extend_from_slice(APPLIED);
    k.extend_from_slice(&p.get().to_be_bytes());
    k
}

fn corrupt(what: &str, key: &[u8]) -> Error {
    Error::Corruption(format!("{what} at key {key:02x?}"))
}

/// The visible version of the user key `key` as of `at`: `Some(None)` for a tombstone.
fn visible<E: Engine + ?Sized>(e: &E, key: &[u8], at: Timestamp) -> Result<Option<Option<Bytes>>> {
    let Some((k, v)) = e.seek_version(&version_key(key, at))? else {
        return Ok(None);
    };
    decode_value_owned(v)
        .map(Some)
        .map_err(|_| corrupt("malformed version value", &k))
}

impl<E: Engine> VersionStore for E {
    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut pairs = Vec::with_capacity(2 * batch.versions.len() + batch.applied.len());
        // The newest version of each key in this batch, to refresh its latest entry.
        let mut newest: BTreeMap<&[u8], &Version> = BTreeMap::new();
        for v in &batch.versions {
            pairs.push((version_key(&v.key, v.ts), encode_value(v.value.as_deref())));
            let slot = newest.entry(&v.key[..]).or_insert(v);
            if v.ts >= slot.ts {
                *slot = v;
            }
        }
        for (key, v) in newest {
            let latest = latest_key(key);
            // Out of order (tests), an older version must not replace the latest entry.
            let newer = batch.in_order || {
                let stored = self.get_exact(&latest)?.map(decode_latest).transpose();
                stored
                    .map_err(|_| corrupt("malformed latest version", &latest))?
                    .is_none_or(|(ts, _)| ts <= v.ts)
            };
            if newer {
                pairs.push((latest, encode_latest(v.ts, v.value.as_deref())));
            }
        }
        for (p, lsn) in &batch.applied {
            pairs.push((applied_key(*p), lsn.get().to_be_bytes().to_vec()));
        }
        if let Some(w) = batch.watermark {
            pairs.push((watermark_key(), w.as_nanos().to_be_bytes().to_vec()));
        }
        self.write_atomic(pairs)
    }

    /// Newest version first: one point lookup answers every read at or after it; only
    /// reads older than the key's newest version seek among its versions.
    fn get(&self, key: &[u8], at: Timestamp) -> Result<Option<Bytes>> {
        let latest = latest_key(key);
        if let Some(raw) = self.get_exact(&latest)? {
            let (ts, value) =
                decode_latest(raw).map_err(|_| corrupt("malformed latest version", &latest))?;
            if ts <= at {
                return Ok(value);
            }
        }
        Ok(visible(self, key, at)?.flatten())
    }

    fn scan(
        &self,
        range: &ScanRange,
        at: Timestamp,
        limit: usize,
        reverse: bool,
    ) -> Result<ScanPage> {
        if limit == 0 {
            return Err(Error::InvalidArgument("scan limit must be positive".into()));
        }
        let mut rows = Vec::new();
        // The next user key to consider, found by seeking from `cursor`.
        let mut cursor = if reverse {
            match &range.end {
                Some(end) => key_prefix(end),
                None => vec![crate::encoding::DATA_PREFIX + 1],
            }
        } else {
            key_prefix(&range.start)
        };
        loop {
            let entry = if reverse {
                self.seek_le(&cursor)?
            } else {
                self.seek_ge(&cursor)?
            };
            let Some((k, _)) = entry else { break };
            if k.first() != Some(&crate::encoding::DATA_PREFIX) {
                break;
            }
            let (key, _) =
                decode_version_key(&k).ok_or_else(|| corrupt("malformed version key", &k))?;
            if !range.contains(&key) {
                break;
            }
            if rows.len() == limit {
                // `key` is the first row not returned: the rest of the range includes it.
                let resume = if reverse {
                    let mut end = key;
                    end.push(0); // the smallest key after `key`: `end` is exclusive
                    ScanRange {
                        start: range.start.clone(),
                        end: Some(Bytes::from(end)),
                    }
                } else {
                    ScanRange {
                        start: Bytes::from(key),
                        end: range.end.clone(),
                    }
                };
                return Ok(ScanPage {
                    rows,
                    resume: Some(resume),
                });
            }
            if let Some(Some(value)) = visible(self, &key, at)? {
                rows.push((Bytes::copy_from_slice(&key), value));
            }
            // Versions of `key` lie in [key_prefix(key), after_all_versions(key)): step over
            // them (the seek-le to the prefix lands on the previous user key's versions).
            cursor = if reverse {
                key_prefix(&key)
            } else {
                after_all_versions(&key)
            };
        }
        Ok(ScanPage { rows, resume: None })
    }

    fn watermark(&self) -> Result<Timestamp> {
        read_ts(self, WATERMARK)
    }

    fn write_gc_horizon(&self, horizon: Timestamp) -> Result<()> {
        self.write_atomic(vec![(
            meta_key(GC_HORIZON),
            horizon.as_nanos().to_be_bytes().to_vec(),
        )])
    }

    fn gc_horizon(&self) -> Result<Timestamp> {
        read_ts(self, GC_HORIZON)
    }

    fn applied(&self) -> Result<BTreeMap<PartitionId, Lsn>> {
        let mut out = BTreeMap::new();
        let mut prefix = vec![META_PREFIX];
        prefix.extend_from_slice(APPLIED);
        let mut cursor = prefix.clone();
        while let Some((k, v)) = self.seek_ge(&cursor)? {
            let Some(id) = k.strip_prefix(&prefix[..]) else {
                break;
            };
            let id: [u8; 4] = id
                .try_into()
                .map_err(|_| corrupt("malformed applied key", &k))?;
            let lsn: [u8; 8] = v[..]
                .try_into()
                .map_err(|_| corrupt("malformed applied position", &k))?;
            out.insert(
                PartitionId::new(u32::from_be_bytes(id)),
                Lsn::new(u64::from_be_bytes(lsn)),
            );
            cursor = k;
            cursor.push(0);
        }
        Ok(out)
    }
}
