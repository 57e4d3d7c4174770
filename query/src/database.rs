//! [`Database`]: the embedded database — journals, adjudicators and a storage node wired
//! together in process (ARCHITECTURE §2–§4, §6), and [`Transaction`]s on top.
//!
//! Layout of a data directory: `MANIFEST` (partition count), `LOCK`, `journal-<p>/` per
//! partition, `storage/` (RocksDB, WAL off: the journals are the redo log).
//!
//! The commit path of a single-partition transaction: the partition's adjudicator decides
//! and the `Commit` record is queued on its journal under one lock (so journal order is τ
//! order); the lock is released; the append becomes durable (the commit point) and storage
//! applies it; commit wait; acknowledge (`embedded/visibility.rs`: the commit is woken once, by
//! storage's watermark, which implies durability). Cross-partition: durable `Prepared` on
//! each participant, one `Commit` in the coordinator's journal, `Decided` on each
//! participant (not waited for).
//! Reads at τs first make every journal promise τs (a heartbeat if needed), then wait for
//! the storage watermark, with a deadline.
//!
//! Maintenance, every [`Options::checkpoint_interval`]: the adjudicators forget conflicts
//! older than the longest transaction; idle journals get a heartbeat so the watermark
//! moves; storage raises its garbage-collection horizon to
//! `min(now − retention, watermark)` and checkpoints (a RocksDB flush: data and applied
//! positions become durable together); and each journal drops the segments below the
//! newest checkpoint whose records are all older than the retention window (§5).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use journaldb_adjudicator::{AdjudicatorConfig, Partition, ReplayMode};
use journaldb_journal::Journal;
use journaldb_journal::disk::{DirLock, Disk, RealDisk};
use journaldb_proto::{Clock, EmbeddedClock, Lsn, PartitionId, Timestamp};
use journaldb_storage::follow::{self, LocalJournal};
use journaldb_storage::{Engine, StorageNode};
use rand::TryRngCore;

use crate::backend::Backend;
use crate::closable::Closable;
use crate::embedded::Inner;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::nosync::NoSync;
use crate::options::{Options, SyncMode};
use crate::partition::partition_of;
use crate::retry::RetryState;
use crate::transaction::Transaction;

/// A snapshot of the database's state, for operators (`journaldb stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// One entry per partition, in order.
    pub journals: Vec<JournalStats>,
    /// Storage holds every version ≤ this.
    pub watermark: Timestamp,
    /// Snapshots below this are gone.
    pub gc_horizon: Timestamp,
}

/// The state of one partition's journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
    /// The first record still held (earlier ones were truncated).
    pub first_lsn: Lsn,
    /// The position the next record gets.
    pub end_lsn: Lsn,
    /// Segment files.
    pub segments: usize,
    /// Since open: batches written (one write and one fdatasync each) and records in them
    /// — their ratio is how well group commit batches.
    pub batches: u64,
    /// Since open: records made durable.
    pub records: u64,
}

/// An embedded journaldb database. Cheap to clone; every clone is the same database.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("dir", &self.inner.dir)
            .field("partitions", &self.inner.partitions)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens (creating if needed) the database in `dir` with default options.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Database> {
        Self::open_with(dir, Options::default()).await
    }

    /// Opens (creating if needed) the database in `dir`. Must be called inside a tokio
    /// runtime: the storage feed runs as tasks on it. In phases: check the options, lock
    /// the directory, open storage, recover every partition from its journal after
    /// storage's checkpoint, resolve the votes a crash left undecided, then start the
    /// feeds and maintenance.
    pub async fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Database> {
        let dir = dir.as_ref().to_path_buf();
        check(&options)?;
        let disk: Arc<dyn Disk> = match (&options.disk, options.sync) {
            (Some(disk), _) => disk.clone(),
            (None, SyncMode::Fsync) => Arc::new(RealDisk),
            (None, SyncMode::None) => Arc::new(NoSync(RealDisk)),
        };
        let lock = lock(&*disk, &dir)?;
        let manifest = Manifest::load_or_create(&*disk, &dir, options.partitions, 1)?;
        let ids: Vec<PartitionId> = (0..manifest.partitions).map(PartitionId::new).collect();
        let engine = options.storage.open(&dir, options.latest_cache_bytes)?;
        let node = Arc::new(StorageNode::open(Closable::new(engine), &ids)?);
        let resume = node.resume_positions()?;
        let parts = recover(&disk, &dir, &options, &ids, &resume, node.watermark())?;
        let floor = parts
            .iter()
            .map(|p| p.adjudicator().floor())
            .fold(node.watermark(), Timestamp::max);
        let seed = match options.seed {
            Some(seed) => seed,
            None => rand::rngs::OsRng
                .try_next_u64()
                .map_err(|e| Error::Io(format!("reading OS entropy for the seed: {e}")))?,
        };
        let inner = Arc::new(Inner {
            dir,
            partitions: manifest.partitions,
            clock: EmbeddedClock::new(floor),
            node: node.clone(),
            tailers: parking_lot::Mutex::new(Vec::new()),
            maintenance: parking_lot::Mutex::new(None),
            maintenance_error: parking_lot::Mutex::new(None),
            // Anything in the journals may have been acknowledged before a crash.
            acknowledged: AtomicU64::new(floor.as_nanos()),
            retry: RetryState::new(options.retry.clone(), seed, options.txn_id_seed)?,
            options,
            parts,
            lock: parking_lot::Mutex::new(Some(lock)),
        });
        inner.resolve_undecided().await?;
        for (&p, part) in ids.iter().zip(&inner.parts) {
            // From the node's own position (its resume position at open) on.
            let (source, node) = (LocalJournal::new(part.journal().clone()), node.clone());
            let feed = tokio::spawn(async move { Ok(follow::feed(&node, p, source).await?) });
            inner.tailers.lock().push(feed);
        }
        let task = tokio::spawn(crate::embedded::maintenance::maintain(Arc::downgrade(
            &inner,
        )));
        *inner.maintenance.lock() = Some(task);
        Ok(Database { inner })
    }

    /// Begins a transaction reading at now.
    pub fn begin(&self) -> Transaction {
        Transaction::at(self.backend(), self.inner.start_ts())
    }

    /// A read-only view as of `ts` (time travel), for any `ts` within the retention window
    /// ([`Options::retention`]). Older snapshots fail with `SnapshotTooOld`: here if the
    /// garbage-collection horizon has already passed `ts`, else at the first read after it
    /// does.
    pub fn snapshot_at(&self, ts: Timestamp) -> Result<Transaction> {
        if ts > self.inner.clock.now().latest {
            return Err(Error::InvalidArgument(format!("{ts} is in the future")));
        }
        if ts < self.inner.node.gc_horizon() {
            return Err(Error::SnapshotTooOld);
        }
        Ok(Transaction::at(self.backend(), ts))
    }

    /// Runs a maintenance round now (see the module docs) and then compacts storage
    /// completely, so garbage below the horizon is gone from disk. RocksDB compacts on
    /// tokio's blocking pool (with the default [`Flusher`](journaldb_journal::Flusher)):
    /// the returned future waits for it, the runtime's workers do not.
    pub async fn compact(&self) -> Result<()> {
        self.inner.maintain_once().await?;
        let node = self.inner.node.clone();
        let flusher = self.inner.options.journal.flusher;
        Ok(flusher.run_blocking(move || node.store().compact()).await?)
    }

    /// Journal positions, watermark and garbage-collection horizon.
    pub fn stats(&self) -> Stats {
        Stats {
            journals: self
                .inner
                .parts
                .iter()
                .map(|p| JournalStats {
                    first_lsn: p.journal().first_lsn(),
                    end_lsn: p.journal().durable_end(),
                    segments: p.journal().segment_count(),
                    batches: p.journal().stats().batches,
                    records: p.journal().stats().records,
                })
                .collect(),
            watermark: self.inner.node.watermark(),
            gc_horizon: self.inner.node.gc_horizon(),
        }
    }

    /// Runs `f` in a transaction and commits it, re-running it on retryable errors
    /// (conflicts, too-old snapshots, unavailability) with full-jitter backoff, while
    /// the retry budget allows. After `CommitUnknown` it asks the coordinator for the
    /// transaction's outcome by its id: committed is success, aborted is re-run, and if the
    /// outcome cannot be learned (the journal failed mid-append) `CommitUnknown` is
    /// returned — never a second run of a transaction that may have committed. Other
    /// errors are returned.
    ///
    /// The returned future borrows nothing from `self`, so it can be spawned; in a spawned
    /// task, give the closure its own copies of what it uses (`async move |tx| …`): an async
    /// closure that borrows from its surroundings makes a future rustc cannot yet prove
    /// `Send`.
    pub fn transact<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + use<T, F>
    where
        F: AsyncFnMut(&mut Transaction) -> Result<T>,
    {
        // An owned handle, so the future borrows nothing from the caller (spawnable).
        crate::transaction::transact(self.backend(), f)
    }

    pub(crate) fn backend(&self) -> Backend {
        Backend::Embedded(self.inner.clone())
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The partition count.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    /// Closes the database: stops maintenance, the journals (waiting for queued appends)
    /// and the storage feed, flushes and closes storage, and releases the directory lock —
    /// the directory can be opened again at once, even while clones of this handle exist
    /// (they fail from then on). Closing twice is harmless.
    pub async fn close(&self) -> Result<()> {
        if self.inner.lock.lock().is_none() {
            return Ok(()); // closed before
        }
        let maintenance = self.inner.maintenance.lock().take();
        if let Some(task) = maintenance {
            task.abort();
            let _ = task.await; // cancelled, or finished; its errors are kept below
        }
        let mut first_error = self.inner.maintenance_error.lock().take();
        for part in &self.inner.parts {
            if let Err(e) = part.journal().close() {
                first_error.get_or_insert(Error::from(e));
            }
        }
        let tailers: Vec<_> = std::mem::take(&mut *self.inner.tailers.lock());
        for t in tailers {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(Error::Io(format!("storage feed failed: {e}")));
                }
            }
        }
        if let Err(e) = self.inner.node.store().flush() {
            first_error.get_or_insert(e.into());
        }
        self.inner.node.close();
        self.inner.node.store().shut();
        drop(self.inner.lock.lock().take());
        first_error.map_or(Ok(()), Err)
    }
}

/// Refuses options that cannot work together.
fn check(options: &Options) -> Result<()> {
    if options.retention < options.limits.max_txn_age {
        return Err(Error::InvalidArgument(format!(
            "retention ({:?}) must be at least the longest transaction ({:?})",
            options.retention, options.limits.max_txn_age
        )));
    }
    if options.limits.max_record_bytes() > options.journal.max_record_bytes {
        return Err(Error::InvalidArgument(format!(
            "the journal's record limit ({} bytes) is below the largest commit record the \
             transaction limits allow ({} bytes): raise journal.max_record_bytes or lower \
             limits.max_txn_bytes / max_txn_mutations",
            options.journal.max_record_bytes,
            options.limits.max_record_bytes()
        )));
    }
    if options.checkpoint_interval.is_zero() {
        return Err(Error::InvalidArgument(
            "checkpoint interval must be positive".into(),
        ));
    }
    Ok(())
}

/// Creates `dir` if needed and locks it for this process.
fn lock(disk: &dyn Disk, dir: &Path) -> Result<DirLock> {
    disk.create_dir_all(dir)
        .map_err(|e| Error::Io(format!("creating {}: {e}", dir.display())))?;
    disk.lock_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => {
            Error::InvalidArgument(format!("{} is locked by another process", dir.display()))
        }
        _ => Error::Io(format!("locking {}: {e}", dir.display())),
    })
}

/// Every partition recovered from its journal, from where storage's checkpoint left it
/// (`resume`; `checkpoint_ts` is that checkpoint's watermark).
fn recover(
    disk: &Arc<dyn Disk>,
    dir: &Path,
    options: &Options,
    ids: &[PartitionId],
    resume: &std::collections::BTreeMap<PartitionId, Lsn>,
    checkpoint_ts: Timestamp,
) -> Result<Vec<Partition>> {
    let config = AdjudicatorConfig {
        max_txn_age: options.limits.max_txn_age,
        vote_timeout: options.vote_timeout,
        ..AdjudicatorConfig::default()
    };
    let n = ids.len() as u32;
    ids.iter()
        .map(|&p| {
            let journal = Arc::new(Journal::open_on(
                disk.clone(),
                dir.join(format!("journal-{}", p.get())),
                options.journal.clone(),
            )?);
            let from = resume.get(&p).copied().unwrap_or(Lsn::FIRST);
            Ok(Partition::recover(
                p,
                config.clone(),
                journal,
                from,
                |key| partition_of(key, n) == p,
                ReplayMode::Embedded { checkpoint_ts },
            )?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use journaldb_adjudicator::TxnStatus;
    use journaldb_proto::TxnId;
    use journaldb_storage::StorageEngine;

    use super::*;

    #[test]
    fn the_outcome_of_a_transaction_can_be_asked_by_its_id() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let options = Options {
                storage: StorageEngine::Memory,
                seed: Some(1),
                ..Options::default()
            };
            let db = Database::open_with(dir.path(), options).await.unwrap();
            let mut tx = db.begin();
            tx.put("k", "v").unwrap();
            let (id, coordinator, start) = (tx.txn_id(), tx.coordinator().unwrap(), tx.start_ts());
            let committed = tx.commit().await.unwrap().commit_ts;
            assert_eq!(
                db.backend().status(coordinator, id, start).await,
                Some(TxnStatus::Committed(committed))
            );
            let never = TxnId::new(12345);
            assert_eq!(
                db.backend().status(coordinator, never, start).await,
                Some(TxnStatus::Aborted)
            );
            db.close().await.unwrap();
        });
    }
}
