//! [`LatestCache`]: an [`Engine`] wrapper that keeps keys' latest-version entries
//! (ARCHITECTURE §6's "newest version" index, prefix `0x02`) in memory, so that a read at or
//! after a key's newest version — almost every read of a live workload — costs a map lookup
//! instead of a RocksDB point lookup (bloom filter, block cache, key comparison). Values are
//! shared [`Bytes`]: a hit copies nothing.
//!
//! Coherence: the cache only ever holds what the engine holds.
//! - A write updates the engine first, then the cache, for every latest entry it writes.
//! - A read that misses fetches from the engine and fills the cache only if the entry is
//!   still absent *and* the shard was not cleared meanwhile (a generation number): a
//!   writer that raced ahead has already put the newer entry in, and a fill of an older
//!   value after a clear could otherwise outlive the newer one.
//! - Memory is bounded by an entry count; a shard over its share is cleared whole (the
//!   rarely-read keys come back on demand).
//!
//! Writes are serialised by the storage node (one crossbar), and garbage collection never
//! removes a key's newest put (a newest tombstone may go, after which the cached tombstone
//! and the engine's absence read the same), so no other path can make an entry stale.

use bytes::Bytes;
use journaldb_proto::{LookupMap, Timestamp};
use parking_lot::RwLock;

use crate::encoding::is_latest_key;
use crate::store::{Engine, Result};

const SHARDS: usize = 64;

#[derive(Debug, Default)]
struct Shard {
    entries: LookupMap<Box<[u8]>, Bytes>,
    /// Bumped whenever the shard is cleared.
    generation: u64,
}

/// An engine with its latest-version entries cached in memory.
#[derive(Debug)]
pub struct LatestCache<E> {
    inner: E,
    shards: Vec<RwLock<Shard>>,
    per_shard: usize,
}

impl<E: Engine> LatestCache<E> {
    /// Caches up to about `entries` latest entries of `inner`.
    pub fn new(inner: E, entries: usize) -> Self {
        LatestCache {
            inner,
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            per_shard: entries.div_ceil(SHARDS).max(1),
        }
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    fn shard(&self, key: &[u8]) -> &RwLock<Shard> {
        // FNV-1a: fixed, so shard choice (and eviction) is the same in every run.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[(h % SHARDS as u64) as usize]
    }

    fn insert(&self, shard: &mut Shard, key: Box<[u8]>, value: Bytes) {
        if shard.entries.len() >= self.per_shard && !shard.entries.contains_key(&key) {
            shard.entries.clear();
            shard.generation += 1;
        }
        shard.entries.insert(key, value);
    }
}

impl<E: Engine> Engine for LatestCache<E> {
    fn seek_ge(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.inner.seek_ge(key)
    }

    fn seek_le(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.inner.seek_le(key)
    }

    fn get_exact(&self, key: &[u8]) -> Result<Option<Bytes>> {
        if !is_latest_key(key) {
            return self.inner.get_exact(key);
        }
        let lock = self.shard(key);
        let generation = {
            let shard = lock.read();
            if let Some(value) = shard.entries.get(key) {
                return Ok(Some(value.clone()));
            }
            shard.generation
        };
        let value = self.inner.get_exact(key)?;
        if let Some(value) = &value {
            let mut shard = lock.write();
            if shard.generation == generation && !shard.entries.contains_key(key) {
                self.insert(&mut shard, key.into(), value.clone());
            }
        }
        Ok(value)
    }

    fn seek_version(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.inner.seek_version(key)
    }

    fn write_atomic(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let latest: Vec<(Box<[u8]>, Bytes)> = pairs
            .iter()
            .filter(|(k, _)| is_latest_key(k))
            .map(|(k, v)| (k[..].into(), Bytes::copy_from_slice(v)))
            .collect();
        self.inner.write_atomic(pairs)?;
        for (key, value) in latest {
            let mut shard = self.shard(&key).write();
            self.insert(&mut shard, key, value);
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn is_durable(&self) -> bool {
        self.inner.is_durable()
    }

    fn collect_garbage(&self, horizon: Timestamp) -> Result<()> {
        self.inner.collect_garbage(horizon)
    }

    fn compact(&self) -> Result<()> {
        self.inner.compact()
    }
}
