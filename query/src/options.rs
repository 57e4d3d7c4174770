//! [`Options`]: the settings of an embedded [`Database`](crate::Database), and
//! [`SyncMode`]. Their own module: the database handle and its internals
//! (`embedded/`) both read them.

use std::sync::Arc;
use std::time::Duration;

use journaldb_journal::JournalOptions;
use journaldb_journal::disk::Disk;
use journaldb_proto::Limits;
use journaldb_storage::{DEFAULT_LATEST_CACHE_BYTES, StorageEngine};

use crate::retry::RetryPolicy;

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

/// Settings of an embedded database: `Options::default()` and the `with_…` setters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Partitions (adjudicators with a journal each). Fixed at creation: `None` means 1 for
    /// a new database and the stored count for an existing one. On one disk one journal
    /// is fastest — its group commit batches every concurrent commit into one fsync, where
    /// N journals pay N fsyncs (docs/BENCHMARKS.md); more partitions spread adjudication
    /// and exercise the cross-partition protocol a cluster uses.
    pub partitions: Option<u32>,
    /// Durability of commits.
    pub sync: SyncMode,
    /// Size and age limits.
    pub limits: Limits,
    /// How long a read waits for the storage watermark before `Unavailable`.
    pub read_timeout: Duration,
    /// How `transact` retries.
    pub retry: RetryPolicy,
    /// Seed of retry jitter; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Seed of transaction ids, for simulation and tests that must replay. `None` (the
    /// default, and the only safe choice in production) draws them from the OS, so no two
    /// handles — in one process or after a restart — ever reuse an id and read another
    /// transaction's outcome.
    pub txn_id_seed: Option<u64>,
    /// How long a cross-partition vote may stay undecided (its transaction's client gone
    /// or its future dropped mid-commit) before the participant asks the coordinator and
    /// records the answer, freeing the keys. Default 3 s.
    pub vote_timeout: Duration,
    /// Where the journals live: the real file system (default, `None`), or another
    /// [`Disk`] — the crash-testing disk in tests, the simulated disk in simulation.
    pub disk: Option<Arc<dyn Disk>>,
    /// The storage engine.
    pub storage: StorageEngine,
    /// Memory for the RocksDB engine's cache of each key's newest version, in bytes
    /// (keys, values and a per-entry overhead). Default 64 MiB.
    pub latest_cache_bytes: usize,
    /// How far back `snapshot_at` can read (and how long journal records are kept after
    /// storage has them). At least `limits.max_txn_age`; default 5 minutes.
    pub retention: Duration,
    /// How often storage checkpoints, collects garbage and lets the journals truncate.
    /// Default 10 s.
    pub checkpoint_interval: Duration,
    /// A checkpoint also happens once the journals have grown by this many bytes since the
    /// last one, which bounds what a reopen after a crash replays. Default 16 MiB.
    pub checkpoint_bytes: u64,
    /// Settings of every partition's journal (segment size, batching, record limit).
    pub journal: JournalOptions,
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
            txn_id_seed: None,
            vote_timeout: Duration::from_secs(3),
            disk: None,
            storage: StorageEngine::RocksDb,
            latest_cache_bytes: DEFAULT_LATEST_CACHE_BYTES,
            retention: Duration::from_secs(5 * 60),
            checkpoint_interval: Duration::from_secs(10),
            checkpoint_bytes: 16 << 20,
            // 16 MiB segments: a reopen scans the last one whole, so this bounds it.
            journal: JournalOptions {
                segment_bytes: 16 << 20,
                ..JournalOptions::default()
            },
        }
    }
}

setters!(Options {
    with_partitions => partitions: Some(u32),
    with_sync => sync: (SyncMode),
    with_limits => limits: (Limits),
    with_read_timeout => read_timeout: (Duration),
    with_retry => retry: (RetryPolicy),
    with_seed => seed: Some(u64),
    with_txn_id_seed => txn_id_seed: Some(u64),
    with_vote_timeout => vote_timeout: (Duration),
    with_disk => disk: Some(Arc<dyn Disk>),
    with_storage => storage: (StorageEngine),
    with_latest_cache_bytes => latest_cache_bytes: (usize),
    with_retention => retention: (Duration),
    with_checkpoint_interval => checkpoint_interval: (Duration),
    with_checkpoint_bytes => checkpoint_bytes: (u64),
    with_journal => journal: (JournalOptions),
});
