//! [`Closable`]: a storage engine that [`Database::close`](crate::Database::close) can shut
//! while clones of the database (and transactions) still hold the storage node, so that
//! `close` really frees the data directory — RocksDB's own lock included. Afterwards every
//! access fails with the storage `Closed` error.

use journaldb_proto::Timestamp;
use journaldb_storage::{Engine, Error, Result};
use parking_lot::RwLock;

/// An engine until [`Closable::shut`], then nothing.
pub(crate) struct Closable(RwLock<Option<Box<dyn Engine>>>);

impl Closable {
    pub(crate) fn new(engine: Box<dyn Engine>) -> Self {
        Closable(RwLock::new(Some(engine)))
    }

    /// Drops the engine (closing RocksDB); waits for accesses in progress.
    pub(crate) fn shut(&self) {
        drop(self.0.write().take());
    }

    fn with<T>(&self, f: impl FnOnce(&dyn Engine) -> Result<T>) -> Result<T> {
        match &*self.0.read() {
            Some(engine) => f(&**engine),
            None => Err(Error::Closed),
        }
    }
}

impl Engine for Closable {
    fn seek_ge(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.with(|e| e.seek_ge(key))
    }

    fn seek_le(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.with(|e| e.seek_le(key))
    }

    fn write_atomic(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        self.with(|e| e.write_atomic(pairs))
    }

    fn flush(&self) -> Result<()> {
        self.with(|e| e.flush())
    }

    fn get_exact(&self, key: &[u8]) -> Result<Option<bytes::Bytes>> {
        self.with(|e| e.get_exact(key))
    }

    fn seek_version(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.with(|e| e.seek_version(key))
    }

    fn is_durable(&self) -> bool {
        self.with(|e| Ok(e.is_durable())).unwrap_or(false)
    }

    fn collect_garbage(&self, horizon: Timestamp) -> Result<()> {
        self.with(|e| e.collect_garbage(horizon))
    }

    fn compact(&self) -> Result<()> {
        self.with(|e| e.compact())
    }

    fn clear_versions(&self) -> Result<()> {
        self.with(|e| e.clear_versions())
    }
}
