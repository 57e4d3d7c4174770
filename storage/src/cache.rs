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
//! - Memory is bounded in bytes (keys, values and a fixed per-entry overhead), not in
//!   entries: values range from empty to 1 MiB, so an entry count bounds nothing. A shard
//!   that an insert would take over its share is cleared whole (the rarely-read keys come
//!   back on demand); an entry larger than a shard's share is not cached at all.
//!
//! Writes are serialised by the storage node (one crossbar), and garbage collection never
//! removes a key's newest put (a newest tombstone may go, after which the cached tombstone
//! and the engine's absence read the same), so no other path can make an entry stale.

use bytes::Bytes;
use journaldb_proto::{LookupMap, Timestamp};
use parking_lot::RwLock;

use crate::encoding::is_latest_key;
use crate::error::Result;
use crate::store::Engine;

const SHARDS: usize = 64;
/// What an entry costs beyond its key and value bytes: the map slot, the boxed key's and
/// the `Bytes`' headers — an estimate, so that a cache of empty values is bounded too.
const ENTRY_OVERHEAD: usize = 64;

/// The default size of a [`LatestCache`]: 64 MiB.
pub const DEFAULT_LATEST_CACHE_BYTES: usize = 64 << 20;

#[derive(Debug, Default)]
struct Shard {
    entries: LookupMap<Box<[u8]>, Bytes>,
    /// What `entries` costs, by [`cost`].
    bytes: usize,
    /// Bumped whenever the shard is cleared.
    generation: u64,
}

fn cost(key: &[u8], value: &Bytes) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// An engine with its latest-version entries cached in memory.
#[derive(Debug)]
pub struct LatestCache<E> {
    inner: E,
    shards: Vec<RwLock<Shard>>,
    /// Each shard's share of the budget, in bytes.
    per_shard: usize,
}

impl<E: Engine> LatestCache<E> {
    /// Caches latest entries of `inner` in up to about `bytes` of memory (0 caches
    /// nothing).
    pub fn new(inner: E, bytes: usize) -> Self {
        LatestCache {
            inner,
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            per_shard: bytes / SHARDS,
        }
    }

    /// Bytes the cached entries cost now (by the estimate the bound uses).
    pub fn cached_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.read().bytes).sum()
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
        let added = cost(&key, &value);
        if let Some(old) = shard.entries.remove(&key) {
            shard.bytes -= cost(&key, &old);
        }
        if added > self.per_shard {
            // Larger than the shard's share: not cached (the engine has it). The older
            // entry of the key is gone above, so no stale value stays behind.
            return;
        }
        if shard.bytes + added > self.per_shard {
            shard.entries.clear();
            shard.bytes = 0;
            shard.generation += 1;
        }
        shard.bytes += added;
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

    fn clear_versions(&self) -> Result<()> {
        self.inner.clear_versions()?;
        for lock in self.shards.iter() {
            let mut shard = lock.write();
            shard.entries.clear();
            shard.bytes = 0;
            shard.generation += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryEngine;
    use crate::encoding::{encode_latest, latest_key};

    fn put(cache: &LatestCache<MemoryEngine>, key: &[u8], value_bytes: usize) {
        let value = vec![7u8; value_bytes];
        let latest = encode_latest(Timestamp::from_nanos(1), Some(&value));
        cache.write_atomic(vec![(latest_key(key), latest)]).unwrap();
    }

    #[test]
    fn memory_stays_within_the_byte_budget_whatever_the_value_sizes() {
        let budget = 1 << 20;
        let cache = LatestCache::new(MemoryEngine::new(), budget);
        for i in 0..2_000u32 {
            // From empty values to 64 KiB ones: an entry count would bound nothing.
            put(&cache, &i.to_be_bytes(), ((i as usize % 5) * 16) << 10);
            assert!(
                cache.cached_bytes() <= budget,
                "{} > {budget}",
                cache.cached_bytes()
            );
        }
        assert!(cache.cached_bytes() > 0);
    }

    #[test]
    fn an_entry_larger_than_a_shard_is_served_by_the_engine_and_never_stale() {
        let cache = LatestCache::new(MemoryEngine::new(), SHARDS * 1024);
        put(&cache, b"k", 10);
        let key = latest_key(b"k");
        assert!(cache.cached_bytes() > 0);
        // A newer value too large to cache replaces the cached one in the engine: the
        // cache must not keep answering with the old.
        put(&cache, b"k", 4096);
        assert_eq!(cache.cached_bytes(), 0);
        let value = cache.get_exact(&key).unwrap().unwrap();
        assert_eq!(
            value.len(),
            encode_latest(Timestamp::from_nanos(1), Some(&[0; 4096])).len()
        );
        assert_eq!(cache.cached_bytes(), 0);
    }
}
