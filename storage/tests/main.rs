//! Integration tests of storage (one test binary per crate, see docs/BUILD.md).

mod conformance;
mod copy;
mod crossbar;
mod differential;
mod follow;
mod node;
mod service;

use journaldb_storage::{Engine, LatestCache, MemoryEngine, RocksEngine};

/// A store under test, and whatever keeps it alive (a temp dir).
pub struct Subject {
    /// The store.
    pub store: Box<dyn Engine>,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh in-memory store.
pub fn memory() -> Subject {
    Subject {
        store: Box::new(MemoryEngine::new()),
        _dir: None,
    }
}

/// A fresh RocksDB store in a temporary directory.
pub fn rocks() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    Subject {
        store: Box::new(RocksEngine::open(dir.path()).unwrap()),
        _dir: Some(dir),
    }
}

/// A fresh RocksDB store behind a latest-version cache of `bytes` (small sizes make it
/// evict all the time).
pub fn cached_rocks(bytes: usize) -> Subject {
    let dir = tempfile::tempdir().unwrap();
    Subject {
        store: Box::new(LatestCache::new(
            RocksEngine::open(dir.path()).unwrap(),
            bytes,
        )),
        _dir: Some(dir),
    }
}
