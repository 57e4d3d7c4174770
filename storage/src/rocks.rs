//! [`RocksEngine`]: the RocksDB engine for embedded and cluster storage (ARCHITECTURE §6).
//!
//! The journal is the redo log, so RocksDB's WAL is off: a write batch reaches RocksDB's
//! memtable only, flushes are atomic, and after a crash the data and the applied positions
//! (written in the same batch, same column family) agree; replay from the journal from those
//! positions fills in the rest. Nothing here fsyncs.

use std::path::Path;

use rocksdb::{DB, Options, WriteBatch, WriteOptions};

use crate::store::{Engine, Error, Result};

/// A RocksDB database used as an ordered map.
pub struct RocksEngine {
    db: DB,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.db.path())
            .finish()
    }
}

fn io(e: rocksdb::Error) -> Error {
    Error::Io(e.into_string())
}

impl RocksEngine {
    /// Opens (creating if missing) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_atomic_flush(true);
        let db = DB::open(&options, path).map_err(io)?;
        Ok(RocksEngine { db })
    }

    fn seek(&self, key: &[u8], forward: bool) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut it = self.db.raw_iterator();
        if forward {
            it.seek(key);
        } else {
            it.seek_for_prev(key);
        }
        if it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                return Ok(None);
            };
            return Ok(Some((k.to_vec(), v.to_vec())));
        }
        it.status().map_err(io)?;
        Ok(None)
    }
}

impl Engine for RocksEngine {
    fn seek_ge(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.seek(key, true)
    }

    fn seek_le(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.seek(key, false)
    }

    /// Flushes memtables to SST files (a checkpoint: applied positions become durable).
    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(io)
    }

    fn write_atomic(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (k, v) in pairs {
            batch.put(k, v);
        }
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db.write_opt(batch, &options).map_err(io)
    }
}
