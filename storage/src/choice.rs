//! [`StorageEngine`]: which engine a storage replica keeps its versions in, and opening
//! it — the one place where both the embedded database and a cluster node make the choice.

use std::path::Path;

#[cfg(feature = "rocksdb")]
use crate::cache::LatestCache;
use crate::error::Result;
use crate::memory::MemoryEngine;
#[cfg(feature = "rocksdb")]
use crate::rocks::RocksEngine;
use crate::store::Engine;

/// Which engine stores the versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageEngine {
    /// RocksDB in `<dir>/storage` (default), behind a [`LatestCache`](crate::LatestCache).
    /// Opening it fails with `InvalidArgument` in a build without the `rocksdb` feature.
    #[default]
    RocksDb,
    /// In memory, rebuilt from the journals at every open (tests, simulation).
    Memory,
}

impl StorageEngine {
    /// Opens the engine of a replica whose data directory is `dir`; RocksDB's newest
    /// versions are cached in up to `latest_cache_bytes` of memory.
    pub fn open(self, dir: &Path, latest_cache_bytes: usize) -> Result<Box<dyn Engine>> {
        Ok(match self {
            #[cfg(feature = "rocksdb")]
            StorageEngine::RocksDb => Box::new(LatestCache::new(
                RocksEngine::open(&dir.join("storage"))?,
                latest_cache_bytes,
            )),
            #[cfg(not(feature = "rocksdb"))]
            StorageEngine::RocksDb => {
                let _ = (dir, latest_cache_bytes);
                return Err(crate::Error::InvalidArgument(
                    "this build of journaldb-storage has no RocksDB (feature `rocksdb`)".into(),
                ));
            }
            StorageEngine::Memory => Box::new(MemoryEngine::new()),
        })
    }
}
