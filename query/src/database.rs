//! [`Database`]: the embedded database — journals, adjudicators and a storage node wired
//! together in process (ARCHITECTURE §2–§4, §6), and [`Transaction`]s on top.
//!
//! Layout of a data directory: `MANIFEST` (partition count), `LOCK`, `journal-<p>/` per
//! partition, `storage/` (RocksDB, WAL off: the journals are the redo log).
//!
//! The commit path of a single-partition transaction: the partition's adjudicator decides
//! and the `Commit` record is queued on its journal under one lock (so journal order is τ
//! order); the lock is released; the append becomes durable (the commit point); commit
//! wait; acknowledge. Cross-partition: durable `Prepared` on each participant, one `Commit`
//! in the coordinator's journal, `Decided` on each participant (not waited for).
//! Reads at τs first make every journal promise τs (a heartbeat if needed), then wait for
//! the storage watermark, with a deadline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use journaldb_adjudicator::{
    Adjudicator, AdjudicatorConfig, CommitDecision, CommitRequest, PrepareDecision, PrepareRequest,
    ReplayMode, TxnStatus, Unavailable, Verdict,
};
use journaldb_journal::disk::{DirLock, Disk, RealDisk};
use journaldb_journal::{Journal, JournalOptions};
use journaldb_proto::{
    Clock, EmbeddedClock, Epoch, Limits, Lsn, Mutation, PartitionId, Timestamp, TxnId, pb,
};
use journaldb_storage::{
    Engine, MemoryEngine, RocksEngine, ScanPage, ScanRange, StorageNode, VersionStore,
};
use prost::Message;
use rand::{Rng, RngCore, SeedableRng, TryRngCore};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::partition::partition_of;
use crate::retry::{RetryBudget, RetryPolicy};

/// Whether commits wait for the journal's fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// A commit is acknowledged once its record is fsynced (default).
    #[default]
    Fsync,
    /// No fsync: an OS crash or power loss may lose acknowledged commits (a process crash
    /// does not). For tests and data that can be rebuilt.
    None,
}

/// Settings of an embedded database.
#[derive(Debug, Clone)]
pub struct Options {
    /// Partitions (adjudicators with a journal each). Fixed at creation: `None` means 4 for
    /// a new database and the stored count for an existing one.
    pub partitions: Option<u32>,
    /// Durability of commits.
    pub sync: SyncMode,
    /// Size and age limits.
    pub limits: Limits,
    /// How long a read waits for the storage watermark before `Unavailable`.
    pub read_timeout: Duration,
    /// How `transact` retries.
    pub retry: RetryPolicy,
    /// Seed of transaction ids and retry jitter; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Where the journals live: the real file system (default, `None`), or another
    /// [`Disk`] — the crash-testing disk in tests, the simulated disk in simulation.
    pub disk: Option<Arc<dyn Disk>>,
    /// The storage engine.
    pub storage: StorageEngine,
}

/// Which engine stores the versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageEngine {
    /// RocksDB in `<dir>/storage` (default).
    #[default]
    RocksDb,
    /// In memory, rebuilt from the journals at every open (tests, simulation).
    Memory,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            partitions: None,
            sync: SyncMode::Fsync,
            limits: Limits::default(),
            read_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            seed: None,
            disk: None,
            storage: StorageEngine::RocksDb,
        }
    }
}

/// What a successful commit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// τc; for a read-only transaction, its snapshot τs.
    pub commit_ts: Timestamp,
}

struct Partition {
    journal: Arc<Journal>,
    adj: AsyncMutex<Adjudicator>,
}

struct Inner {
    dir: PathBuf,
    partitions: u32,
    options: Options,
    clock: EmbeddedClock,
    parts: Vec<Partition>,
    node: Arc<StorageNode<Box<dyn Engine>>>,
    tailers: parking_lot::Mutex<Vec<JoinHandle<Result<()>>>>,
    rng: parking_lot::Mutex<ChaCha8Rng>,
    budget: RetryBudget,
    _lock: DirLock,
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

/// A disk whose fsyncs do nothing ([`SyncMode::None`]).
#[derive(Debug)]
struct NoSync(RealDisk);

impl Disk for NoSync {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.0.list_dir(dir)
    }
    fn create_new(
        &self,
        path: &Path,
    ) -> std::io::Result<Arc<dyn journaldb_journal::disk::DiskFile>> {
        Ok(Arc::new(NoSyncFile(self.0.create_new(path)?)))
    }
    fn open(&self, path: &Path) -> std::io::Result<Arc<dyn journaldb_journal::disk::DiskFile>> {
        Ok(Arc::new(NoSyncFile(self.0.open(path)?)))
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.0.remove_file(path)
    }
    fn sync_dir(&self, _dir: &Path) -> std::io::Result<()> {
        Ok(())
    }
    fn lock_dir(&self, dir: &Path) -> std::io::Result<DirLock> {
        self.0.lock_dir(dir)
    }
}

#[derive(Debug)]
struct NoSyncFile(Arc<dyn journaldb_journal::disk::DiskFile>);

impl journaldb_journal::disk::DiskFile for NoSyncFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
}

fn encode(record: &pb::Record) -> Bytes {
    Bytes::from(record.encode_to_vec())
}

impl Database {
    /// Opens (creating if needed) the database in `dir` with default options.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Database> {
        Self::open_with(dir, Options::default()).await
    }

    /// Opens (creating if needed) the database in `dir`. Must be called inside a tokio
    /// runtime: the storage feed runs as tasks on it.
    pub async fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Database> {
        let dir = dir.as_ref().to_path_buf();
        let disk: Arc<dyn Disk> = match (&options.disk, options.sync) {
            (Some(disk), _) => disk.clone(),
            (None, SyncMode::Fsync) => Arc::new(RealDisk),
            (None, SyncMode::None) => Arc::new(NoSync(RealDisk)),
        };
        disk.create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("creating {}: {e}", dir.display())))?;
        let lock = disk.lock_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => {
                Error::InvalidArgument(format!("{} is locked by another process", dir.display()))
            }
            _ => Error::Io(format!("locking {}: {e}", dir.display())),
        })?;
        let manifest = Manifest::load_or_create(&*disk, &dir, options.partitions, 4)?;
        let ids: Vec<PartitionId> = (0..manifest.partitions).map(PartitionId::new).collect();
        let engine: Box<dyn Engine> = match options.storage {
            StorageEngine::RocksDb => Box::new(RocksEngine::open(&dir.join("storage"))?),
            StorageEngine::Memory => Box::new(MemoryEngine::new()),
        };
        let node = Arc::new(StorageNode::open(engine, &ids)?);
        let resume = node.resume_positions()?;
        let checkpoint_ts = node.watermark();

        let mut parts = Vec::new();
        let mut floor = checkpoint_ts;
        for &p in &ids {
            let journal = Arc::new(Journal::open_on(
                disk.clone(),
                dir.join(format!("journal-{}", p.get())),
                JournalOptions::default(),
            )?);
            let from = resume.get(&p).copied().unwrap_or(Lsn::FIRST);
            let mut records = Vec::new();
            for item in journal.read_from(from)? {
                let (lsn, payload) = item?;
                records.push(pb::Record::decode(payload).map_err(|e| {
                    Error::Corruption(format!("{p}, {lsn}: undecodable record: {e}"))
                })?);
            }
            let n = manifest.partitions;
            let adj = Adjudicator::replay(
                p,
                AdjudicatorConfig::default(),
                records,
                |key| partition_of(key, n) == p,
                ReplayMode::Embedded { checkpoint_ts },
            )
            .map_err(|e| Error::Corruption(format!("{p}: {e}")))?;
            floor = floor.max(adj.floor());
            parts.push(Partition {
                journal,
                adj: AsyncMutex::new(adj),
            });
        }
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
            rng: parking_lot::Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            budget: RetryBudget::new(&options.retry),
            options,
            parts,
            _lock: lock,
        });
        inner.resolve_undecided().await?;
        for (&p, part) in ids.iter().zip(&inner.parts) {
            let (journal, node) = (part.journal.clone(), node.clone());
            let from = resume.get(&p).copied().unwrap_or(Lsn::FIRST);
            let feed =
                tokio::spawn(
                    async move { crate::tailer::tail_into(&journal, p, from, &node).await },
                );
            inner.tailers.lock().push(feed);
        }
        Ok(Database { inner })
    }

    /// Begins a transaction reading at now.
    pub fn begin(&self) -> Transaction {
        let start_ts = self.inner.clock.now().latest;
        self.inner.transaction(start_ts)
    }

    /// A read-only view as of `ts` (time travel). Reads below the retention horizon
    /// fail with `SnapshotTooOld` once garbage collection exists; today every version is kept.
    pub fn snapshot_at(&self, ts: Timestamp) -> Result<Transaction> {
        if ts > self.inner.clock.now().latest {
            return Err(Error::InvalidArgument(format!("{ts} is in the future")));
        }
        Ok(self.inner.transaction(ts))
    }

    /// Runs `f` in a transaction and commits it, re-running it on retryable errors
    /// (conflicts, too-old snapshots, unavailability) with full-jitter backoff, while
    /// the retry budget allows. Other errors — `CommitUnknown` among them — are returned.
    pub async fn transact<T>(
        &self,
        mut f: impl AsyncFnMut(&mut Transaction) -> Result<T>,
    ) -> Result<T> {
        let policy = &self.inner.options.retry;
        let mut attempt = 1;
        loop {
            let mut tx = self.begin();
            let outcome = match f(&mut tx).await {
                Ok(value) => tx.commit().await.map(|_| value),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(value) => {
                    self.inner.budget.on_success();
                    return Ok(value);
                }
                Err(e)
                    if e.is_retryable()
                        && attempt < policy.max_attempts
                        && self.inner.budget.try_take() =>
                {
                    let pause = policy.backoff(attempt, &mut *self.inner.rng.lock());
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The partition count.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    /// Closes the database: stops the journals (waiting for queued appends) and the storage
    /// feed, flushes storage, and releases the directory lock once every clone is dropped.
    pub async fn close(&self) -> Result<()> {
        let mut first_error = None;
        for part in &self.inner.parts {
            if let Err(e) = part.journal.close() {
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
        self.inner.node.store().flush()?;
        self.inner.node.close();
        first_error.map_or(Ok(()), Err)
    }
}

impl Inner {
    fn transaction(self: &Arc<Self>, start_ts: Timestamp) -> Transaction {
        let txn_id = {
            let mut rng = self.rng.lock();
            TxnId::new((u128::from(rng.next_u64()) << 64) | u128::from(rng.random::<u64>()))
        };
        Transaction {
            db: self.clone(),
            txn_id,
            start_ts,
            writes: BTreeMap::new(),
            write_bytes: 0,
        }
    }

    fn part(&self, p: PartitionId) -> &Partition {
        &self.parts[p.get() as usize]
    }

    /// Appends `record` to partition `p`'s journal while its adjudicator lock is held
    /// (the caller's critical section), then waits for durability without the lock.
    async fn append_and_wait(
        &self,
        p: PartitionId,
        adj: tokio::sync::MutexGuard<'_, Adjudicator>,
        record: &pb::Record,
    ) -> Result<()> {
        let mut adj = adj;
        let journal = &self.part(p).journal;
        let submitted = match journal.submit(encode(record)).await {
            Ok(s) => s,
            Err(_) => {
                adj.append_failed();
                return Err(Error::CommitUnknown);
            }
        };
        drop(adj);
        if submitted.durable().await.is_err() {
            self.part(p).adj.lock().await.append_failed();
            return Err(Error::CommitUnknown);
        }
        Ok(())
    }

    /// Waits until `now().earliest > ts` (commit wait; nanoseconds with the embedded clock).
    async fn commit_wait(&self, ts: Timestamp) {
        while self.clock.now().earliest <= ts {
            tokio::task::yield_now().await;
        }
    }

    /// Makes every journal promise `ts` and waits until storage has everything ≤ `ts`.
    async fn read_barrier(&self, ts: Timestamp) -> Result<()> {
        if self.node.watermark() < ts {
            for (i, part) in self.parts.iter().enumerate() {
                let mut adj = part.adj.lock().await;
                if let Some(record) = adj.promise(ts) {
                    let p = PartitionId::new(i as u32);
                    self.append_and_wait(p, adj, &record).await.map_err(|_| {
                        Error::Unavailable {
                            reason: format!("{p}: journal append failed"),
                            retry_after: None,
                        }
                    })?;
                }
            }
        }
        let deadline = tokio::time::sleep(self.options.read_timeout);
        Ok(self.node.wait_for(ts, deadline).await?)
    }

    /// Resolves votes left undecided by a crash: every coordinator is local, so ask it.
    async fn resolve_undecided(&self) -> Result<()> {
        for (i, part) in self.parts.iter().enumerate() {
            let undecided: Vec<(TxnId, PartitionId)> = {
                let adj = part.adj.lock().await;
                adj.undecided().map(|(id, v)| (id, v.coordinator)).collect()
            };
            for (txn, coordinator) in undecided {
                let status = self.part(coordinator).adj.lock().await.status(txn);
                let outcome = match status {
                    TxnStatus::Committed(ts) => Some(ts),
                    TxnStatus::Aborted => None,
                    TxnStatus::InFlight => unreachable!("nothing is in flight while opening"),
                };
                let mut adj = part.adj.lock().await;
                if let Some(record) = adj.decide(txn, outcome) {
                    self.append_and_wait(PartitionId::new(i as u32), adj, &record)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// An interactive snapshot-isolation transaction. Reads see the snapshot at its start plus
/// its own writes; writes are buffered until [`Transaction::commit`].
pub struct Transaction {
    db: Arc<Inner>,
    txn_id: TxnId,
    start_ts: Timestamp,
    writes: BTreeMap<Bytes, Option<Bytes>>,
    write_bytes: usize,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("txn_id", &self.txn_id)
            .field("start_ts", &self.start_ts)
            .field("writes", &self.writes.len())
            .finish()
    }
}

fn map_verdict(d: CommitDecision) -> Error {
    match d {
        CommitDecision::Verdict(Verdict::Conflict { key }) => Error::Conflict { key },
        CommitDecision::Verdict(Verdict::TooOld) => Error::SnapshotTooOld,
        CommitDecision::Unknown | CommitDecision::InFlight { .. } => Error::CommitUnknown,
        CommitDecision::Unavailable(Unavailable::SteppedDown) => Error::Unavailable {
            reason: "the partition's adjudicator stepped down after a journal failure; reopen the database".into(),
            retry_after: None,
        },
        CommitDecision::Unavailable(u) => Error::Unavailable {
            reason: format!("{u:?}"),
            retry_after: None,
        },
        CommitDecision::Invalid(m) => Error::InvalidArgument(m),
        CommitDecision::Verdict(Verdict::Committed { .. }) | CommitDecision::Append { .. } => {
            Error::InvalidArgument("unexpected commit decision".into())
        }
    }
}

impl Transaction {
    /// The snapshot this transaction reads at.
    pub fn start_ts(&self) -> Timestamp {
        self.start_ts
    }

    /// The value of `key`: this transaction's own write if any, else the snapshot's.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let key = key.as_ref();
        self.db.options.limits.check_key(key)?;
        if let Some(w) = self.writes.get(key) {
            return Ok(w.clone());
        }
        self.db.read_barrier(self.start_ts).await?;
        Ok(self.db.node.store().get(key, self.start_ts)?)
    }

    /// At most `limit` visible rows of `range` as of the snapshot, with this transaction's
    /// own writes merged in (its puts shown, its deletes hidden), ascending or descending,
    /// and the rest of the range to resume from when the page is full.
    pub async fn scan(&self, range: &ScanRange, limit: usize, reverse: bool) -> Result<ScanPage> {
        if limit == 0 {
            return Err(Error::InvalidArgument("scan limit must be positive".into()));
        }
        self.db.read_barrier(self.start_ts).await?;
        let store = self.db.node.store();
        let in_range = |k: &Bytes| {
            k[..] >= range.start[..] && range.end.as_ref().is_none_or(|e| k[..] < e[..])
        };
        // Own writes in the range, in scan order.
        let mut own: std::collections::VecDeque<(Bytes, Option<Bytes>)> = self
            .writes
            .iter()
            .filter(|(k, _)| in_range(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if reverse {
            own = own.into_iter().rev().collect();
        }
        // `a` comes before `b` in scan order.
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        let mut rows = Vec::new();
        let mut cursor = Some(range.clone());
        while rows.len() < limit {
            let (stored, resume) = match &cursor {
                Some(r) => {
                    let page = store.scan(r, self.start_ts, limit, reverse)?;
                    (page.rows, page.resume)
                }
                None => (Vec::new(), None),
            };
            // Own writes up to the last stored key are placed; past it, only once storage
            // is exhausted (there may be stored keys before them on the next page).
            let boundary = resume.as_ref().and(stored.last().map(|(k, _)| k.clone()));
            let mut stored = stored.into_iter().peekable();
            loop {
                let next_own = own
                    .front()
                    .filter(|(k, _)| boundary.as_ref().is_none_or(|b| !before(b, k)));
                let take_own = match (stored.peek(), next_own) {
                    (None, None) => break,
                    (Some(_), None) => false,
                    (None, Some(_)) => true,
                    (Some((sk, _)), Some((ok, _))) => !before(sk, ok),
                };
                let (key, value) = if take_own {
                    let (k, v) = own.pop_front().expect("peeked");
                    if stored.peek().is_some_and(|(sk, _)| *sk == k) {
                        stored.next(); // our write shadows the stored version
                    }
                    (k, v)
                } else {
                    let (k, v) = stored.next().expect("peeked");
                    (k, Some(v))
                };
                if let Some(value) = value {
                    rows.push((key, value));
                    if rows.len() == limit {
                        break;
                    }
                }
            }
            if rows.len() == limit {
                break;
            }
            cursor = resume;
            if cursor.is_none() && own.is_empty() {
                break;
            }
        }
        let resume = match rows.last() {
            Some((last, _)) if rows.len() == limit => {
                let rest = if reverse {
                    ScanRange {
                        start: range.start.clone(),
                        end: Some(last.clone()),
                    }
                } else {
                    let mut after = last.to_vec();
                    after.push(0);
                    ScanRange {
                        start: Bytes::from(after),
                        end: range.end.clone(),
                    }
                };
                // Nothing may remain; the caller learns that from an empty next page.
                Some(rest)
            }
            _ => None,
        };
        Ok(ScanPage { rows, resume })
    }

    /// Sets `key` to `value` when the transaction commits.
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        let (key, value) = (key.into(), value.into());
        self.db.options.limits.check_value(&value)?;
        self.write(key, Some(value))
    }

    /// Deletes `key` when the transaction commits.
    pub fn delete(&mut self, key: impl Into<Bytes>) -> Result<()> {
        self.write(key.into(), None)
    }

    fn write(&mut self, key: Bytes, value: Option<Bytes>) -> Result<()> {
        let limits = &self.db.options.limits;
        limits.check_key(&key)?;
        let added = key.len() + value.as_ref().map_or(0, Bytes::len);
        let replaced = self
            .writes
            .get(&key)
            .map_or(0, |v| key.len() + v.as_ref().map_or(0, Bytes::len));
        let bytes = self.write_bytes - replaced + added;
        Limits::check(
            journaldb_proto::LimitKind::TxnBytes,
            limits.max_txn_bytes,
            bytes,
        )?;
        let count = self.writes.len() + usize::from(!self.writes.contains_key(&key));
        Limits::check(
            journaldb_proto::LimitKind::TxnMutations,
            limits.max_txn_mutations,
            count,
        )?;
        self.write_bytes = bytes;
        self.writes.insert(key, value);
        Ok(())
    }

    /// Discards the transaction's writes.
    pub fn rollback(self) {}

    /// Commits. A read-only transaction commits locally and never aborts.
    pub async fn commit(self) -> Result<CommitInfo> {
        if self.writes.is_empty() {
            return Ok(CommitInfo {
                commit_ts: self.start_ts,
            });
        }
        let age = self
            .db
            .clock
            .now()
            .latest
            .saturating_duration_since(self.start_ts);
        if age > self.db.options.limits.max_txn_age {
            return Err(Error::SnapshotTooOld);
        }
        let n = self.db.partitions;
        let mut by_part: BTreeMap<PartitionId, Vec<Mutation>> = BTreeMap::new();
        for (k, v) in &self.writes {
            let m = match v {
                Some(v) => Mutation::put(k.clone(), v.clone()),
                None => Mutation::delete(k.clone()),
            };
            by_part.entry(partition_of(k, n)).or_default().push(m);
        }
        let commit_ts = if by_part.len() == 1 {
            self.commit_single(by_part).await?
        } else {
            self.commit_cross(by_part).await?
        };
        self.db.commit_wait(commit_ts).await;
        Ok(CommitInfo { commit_ts })
    }

    async fn commit_single(
        &self,
        by_part: BTreeMap<PartitionId, Vec<Mutation>>,
    ) -> Result<Timestamp> {
        let Some((p, mutations)) = by_part.into_iter().next() else {
            return Err(Error::InvalidArgument("nothing to commit".into()));
        };
        let req = CommitRequest {
            txn_id: self.txn_id,
            start_ts: self.start_ts,
            mutations,
            retry: false,
        };
        let db = &self.db;
        let mut adj = db.part(p).adj.lock().await;
        match adj.commit(db.clock.now(), &req) {
            CommitDecision::Append { commit_ts, record } => {
                db.append_and_wait(p, adj, &record).await?;
                db.part(p).adj.lock().await.appended(self.txn_id);
                Ok(commit_ts)
            }
            other => Err(map_verdict(other)),
        }
    }

    async fn commit_cross(
        &self,
        by_part: BTreeMap<PartitionId, Vec<Mutation>>,
    ) -> Result<Timestamp> {
        let db = &self.db;
        // The coordinator owns the first key.
        let coordinator = self
            .writes
            .keys()
            .next()
            .map(|k| partition_of(k, db.partitions))
            .ok_or_else(|| Error::InvalidArgument("nothing to commit".into()))?;
        let mut voted = Vec::new();
        let mut votes = Vec::new();
        for (&p, mutations) in &by_part {
            let req = PrepareRequest {
                txn_id: self.txn_id,
                start_ts: self.start_ts,
                keys: mutations.iter().map(|m| m.key.clone()).collect(),
                coordinator,
                coordinator_epoch: Epoch::default(),
            };
            let mut adj = db.part(p).adj.lock().await;
            match adj.prepare(db.clock.now(), &req) {
                PrepareDecision::Append { vote_ts, record } => {
                    voted.push(p);
                    if let Err(e) = db.append_and_wait(p, adj, &record).await {
                        self.abort(&voted).await;
                        return Err(e);
                    }
                    votes.push(vote_ts);
                }
                PrepareDecision::Voted { vote_ts } => votes.push(vote_ts),
                PrepareDecision::Refused(d) => {
                    drop(adj);
                    self.abort(&voted).await;
                    return Err(map_verdict(d));
                }
            }
        }
        let mutations: Vec<Mutation> = by_part.values().flatten().cloned().collect();
        let participants: Vec<PartitionId> = by_part.keys().copied().collect();
        let mut adj = db.part(coordinator).adj.lock().await;
        let decision = adj.commit_prepared(
            db.clock.now(),
            self.txn_id,
            self.start_ts,
            &votes,
            &mutations,
            &participants,
        );
        let commit_ts = match decision {
            CommitDecision::Append { commit_ts, record } => {
                db.append_and_wait(coordinator, adj, &record).await?;
                db.part(coordinator).adj.lock().await.appended(self.txn_id);
                commit_ts
            }
            other => {
                drop(adj);
                self.abort(&voted).await;
                return Err(map_verdict(other));
            }
        };
        // Decide: participants learn τc and append `Decided` off the client's path.
        for &p in &voted {
            let mut adj = db.part(p).adj.lock().await;
            if let Some(record) = adj.decide(self.txn_id, Some(commit_ts)) {
                let _queued = db.part(p).journal.submit(encode(&record)).await;
            }
        }
        Ok(commit_ts)
    }

    async fn abort(&self, voted: &[PartitionId]) {
        for &p in voted {
            let mut adj = self.db.part(p).adj.lock().await;
            if let Some(record) = adj.decide(self.txn_id, None) {
                let _queued = self.db.part(p).journal.submit(encode(&record)).await;
            }
        }
    }
}
