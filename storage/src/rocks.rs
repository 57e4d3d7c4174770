//! [`RocksEngine`]: the RocksDB engine for embedded and cluster storage (ARCHITECTURE §6).
//!
//! The journal is the redo log, so RocksDB's WAL is off: a write batch reaches RocksDB's
//! memtable only, flushes are atomic, and after a crash the data and the applied positions
//! (written in the same batch, same column family) agree; replay from the journal from those
//! positions fills in the rest. Nothing here fsyncs.
//!
//! Garbage collection runs as a compaction filter ([`crate::gc::GcPass`] per compaction
//! run, reading the horizon when the run starts). A run sees every version of a key only if
//! it is a full compaction with one subcompaction — the RocksDB default kept here — so only
//! then do tombstones at or below the horizon go.
//!
//! Point reads use a prefix bloom filter on the user-key part of version keys
//! ([`crate::encoding::version_prefix`]), so a read skips every file without a version of
//! its key, as a RocksDB `get` does with whole-key filters; scans seek in total order.
//!
//! Latest-version entries (prefix `0x02`) are not stored: a lookup of one is answered by
//! seeking the key's newest version, and writes of them are dropped. Storing them doubled
//! every commit's memtable inserts, flushes and compactions (two entries per write) to
//! save a seek on a [`crate::LatestCache`] miss — the cache in front answers the rest.
//! Storage format 2 ([`FORMAT`]); format 1 stored them, and its leftovers are ignored and
//! dropped by compactions.
//! Reads reuse iterators: creating a RocksDB iterator costs more than the seek it serves
//! (it references every memtable and file), while refreshing one whose files have not
//! changed only moves its sequence number. Idle iterators in the pool pin the files of
//! their version until refreshed; flushes and compactions empty the pool.

use std::ffi::CStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use journaldb_proto::Timestamp;
use parking_lot::Mutex;
use rocksdb::compaction_filter::{CompactionFilter, Decision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};
use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, CompactOptions, DB, DBRawIterator, LogLevel,
    Options, ReadOptions, SliceTransform, WriteBatch, WriteOptions,
};

use crate::encoding::{
    DATA_PREFIX, LATEST_PREFIX, is_latest_key, latest_of_version, newest_version_key,
};
use crate::error::{Error, Result};
use crate::gc::GcPass;
use crate::store::{Engine, meta_key};

/// The layout version of what a [`RocksEngine`] stores, kept under the meta key `format`:
/// 2 since latest-version entries are derived instead of stored. A database without the
/// key is format 1 (or new) and is marked 2 when opened; a newer one is refused.
pub const FORMAT: u8 = 2;

/// Idle iterators of the database that owns them: for point reads (prefix mode) and for
/// scans (total order).
struct IteratorPool<'db> {
    point: Mutex<Vec<DBRawIterator<'db>>>,
    ordered: Mutex<Vec<DBRawIterator<'db>>>,
}

/// Which kind of iterator a seek needs.
#[derive(Clone, Copy)]
enum Seek {
    /// Within one user key's versions, first at or after the target.
    Version,
    /// First at or after the target, in total order.
    Forward,
    /// Last at or before the target, in total order.
    Backward,
}

fn version_prefix(key: &[u8]) -> &[u8] {
    crate::encoding::version_prefix(key).unwrap_or(key)
}

fn is_version_key(key: &[u8]) -> bool {
    crate::encoding::version_prefix(key).is_some()
}

/// Most idle iterators kept.
const POOL_SIZE: usize = 64;

self_cell::self_cell!(
    /// The database and its pool of idle iterators (which borrow it).
    struct DbWithIterators {
        owner: DB,
        #[not_covariant]
        dependent: IteratorPool,
    }
);

/// A RocksDB database used as an ordered map.
pub struct RocksEngine {
    db: DbWithIterators,
    /// The horizon compactions collect below, in nanoseconds.
    horizon: Arc<AtomicU64>,
}

struct GcFilterFactory {
    horizon: Arc<AtomicU64>,
}

struct GcFilter(GcPass);

impl CompactionFilterFactory for GcFilterFactory {
    type Filter = GcFilter;

    fn create(&mut self, context: CompactionFilterContext) -> GcFilter {
        let horizon = Timestamp::from_nanos(self.horizon.load(Ordering::Acquire));
        GcFilter(GcPass::new(horizon, context.is_full_compaction))
    }

    fn name(&self) -> &CStr {
        c"journaldb-gc"
    }
}

impl CompactionFilter for GcFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> Decision {
        if !is_latest_key(key) && self.0.keep(key, value) {
            Decision::Keep
        } else {
            Decision::Remove
        }
    }

    fn name(&self) -> &CStr {
        c"journaldb-gc"
    }
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.db.borrow_owner().path())
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
        // Open SST files when first read rather than all at open, without reading their
        // stats: the open then costs the same for any data size.
        options.set_max_open_files(4096);
        options.set_skip_stats_update_on_db_open(true);
        // One subcompaction per run (the default, stated because GC relies on it).
        options.set_max_subcompactions(1);
        // The journal is the redo log, so storage must never throttle the replay that
        // follows a crash: with RocksDB's defaults a write-heavy history left 20 L0 files
        // and the reopen's replay crawled at the 16 MiB/s "stalling writes" rate. Flushes
        // and compactions get their own threads, and L0 may grow further before writes
        // slow (reads stay cheap: bloom filters skip most L0 files).
        options.set_max_background_jobs(4);
        options.set_level_zero_slowdown_writes_trigger(48);
        options.set_level_zero_stop_writes_trigger(72);
        // Bounded files beside the data: every checkpoint flushes, and at RocksDB's default
        // info level each flush logged ~2.5 KiB, which made the `LOG` file the one thing
        // a steadily updated cluster's disk grew by (tests/cluster_disk.rs). Warnings
        // and errors only, rotated; the manifest is rewritten once it reaches 64 MiB.
        options.set_log_level(LogLevel::Warn);
        options.set_max_log_file_size(8 << 20);
        options.set_keep_log_file_num(2);
        options.set_max_manifest_file_size(64 << 20);
        // One writer (the storage node's crossbar): skip the concurrent-insert machinery.
        options.set_allow_concurrent_memtable_write(false);
        options.set_enable_write_thread_adaptive_yield(false);
        let horizon = Arc::new(AtomicU64::new(0));
        options.set_compaction_filter_factory(GcFilterFactory {
            horizon: horizon.clone(),
        });
        options.set_prefix_extractor(SliceTransform::create(
            "journaldb-version-prefix",
            version_prefix,
            Some(is_version_key),
        ));
        options.set_memtable_prefix_bloom_ratio(0.1);
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        // Only prefixes: every read of data seeks a key's versions.
        table.set_whole_key_filtering(false);
        options.set_block_based_table_factory(&table);
        let db = DB::open(&options, path).map_err(io)?;
        check_format(&db, path)?;
        let db = DbWithIterators::new(db, |_| IteratorPool {
            point: Mutex::new(Vec::new()),
            ordered: Mutex::new(Vec::new()),
        });
        Ok(RocksEngine { db, horizon })
    }

    fn seek(&self, key: &[u8], how: Seek) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.db.with_dependent(|db, pool| {
            let idle = match how {
                Seek::Version => &pool.point,
                Seek::Forward | Seek::Backward => &pool.ordered,
            };
            let pooled = idle.lock().pop();
            let mut it = match pooled {
                // A refreshed iterator sees everything written so far, as a new one would.
                Some(mut it) => {
                    it.refresh().map_err(io)?;
                    it
                }
                None => {
                    let mut read = ReadOptions::default();
                    match how {
                        Seek::Version => read.set_prefix_same_as_start(true),
                        Seek::Forward | Seek::Backward => read.set_total_order_seek(true),
                    }
                    db.raw_iterator_opt(read)
                }
            };
            match how {
                Seek::Version | Seek::Forward => it.seek(key),
                Seek::Backward => it.seek_for_prev(key),
            }
            let found = match (it.valid(), it.key(), it.value()) {
                (true, Some(k), Some(v)) => Some((k.to_vec(), v.to_vec())),
                _ => None,
            };
            it.status().map_err(io)?;
            let mut idle = idle.lock();
            if idle.len() < POOL_SIZE {
                idle.push(it);
            }
            Ok(found)
        })
    }

    /// Drops the idle iterators, releasing the files they pin.
    fn empty_pool(&self) {
        self.db.with_dependent(|_, pool| {
            pool.point.lock().clear();
            pool.ordered.lock().clear();
        });
    }
}

impl Engine for RocksEngine {
    fn seek_ge(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.seek(key, Seek::Forward)
    }

    fn seek_le(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.seek(key, Seek::Backward)
    }

    fn get_exact(&self, key: &[u8]) -> Result<Option<Bytes>> {
        if let Some(newest) = newest_version_key(key) {
            let found = self.seek_version(&newest)?;
            return Ok(found.and_then(|(k, v)| latest_of_version(&k, &v).map(Bytes::from)));
        }
        Ok(self
            .db
            .borrow_owner()
            .get_pinned(key)
            .map_err(io)?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    fn seek_version(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if !is_version_key(key) {
            return Err(Error::InvalidArgument(format!(
                "{key:02x?} is not a version key"
            )));
        }
        // prefix_same_as_start: the iterator ends where the key's versions do.
        self.seek(key, Seek::Version)
    }

    /// Flushes memtables to SST files (a checkpoint: applied positions become durable).
    fn flush(&self) -> Result<()> {
        self.db.borrow_owner().flush().map_err(io)?;
        self.empty_pool();
        Ok(())
    }

    fn is_durable(&self) -> bool {
        true
    }

    /// Publishes the horizon to compactions that start from now on.
    fn collect_garbage(&self, horizon: Timestamp) -> Result<()> {
        self.horizon.fetch_max(horizon.as_nanos(), Ordering::AcqRel);
        Ok(())
    }

    /// A manual compaction of the whole key space down to the bottommost level.
    fn compact(&self) -> Result<()> {
        let mut options = CompactOptions::default();
        options.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        self.db
            .borrow_owner()
            .compact_range_opt(None::<&[u8]>, None::<&[u8]>, &options);
        self.empty_pool();
        Ok(())
    }

    fn clear_versions(&self) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range([DATA_PREFIX], [LATEST_PREFIX + 1]);
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db
            .borrow_owner()
            .write_opt(batch, &options)
            .map_err(io)?;
        self.empty_pool();
        Ok(())
    }

    fn write_atomic(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (k, v) in pairs {
            if !is_latest_key(&k) {
                batch.put(k, v);
            }
        }
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db
            .borrow_owner()
            .write_opt(batch, &options)
            .map_err(io)
    }
}

/// Checks (and, for a database of an older format or a new one, records) [`FORMAT`].
fn check_format(db: &DB, path: &Path) -> Result<()> {
    let key = meta_key(b"format");
    match db.get_pinned(&key).map_err(io)?.as_deref() {
        Some([version]) if *version == FORMAT => Ok(()),
        Some([version]) if *version > FORMAT => Err(Error::Corruption(format!(
            "{} has storage format {version}, written by a newer build; this build reads \
             formats up to {FORMAT}",
            path.display()
        ))),
        Some([_]) | None => {
            // Durable with the next flush (the WAL is off); until then a reopen does this
            // again.
            let mut options = WriteOptions::default();
            options.disable_wal(true);
            db.put_opt(&key, [FORMAT], &options).map_err(io)
        }
        Some(other) => Err(Error::Corruption(format!(
            "{}: malformed storage format marker {other:02x?}",
            path.display()
        ))),
    }
}
