//! # journaldb: the user-facing database
//!
//! The public API of ARCHITECTURE §2–§3 and §8. Today: the embedded [`Database`]
//! (`Database::open(dir)`), interactive snapshot-isolation [`Transaction`]s (`get`, `scan`,
//! `put`, `delete`, `commit`, `rollback`) with read-your-writes, `transact` with backoff and
//! a retry budget, `snapshot_at` time travel, the typed [`Error`] with `is_retryable()` and
//! `maybe_committed()`, and the `journaldb` binary (`src/bin/journaldb.rs`).
//!
//! What it guarantees: strong snapshot isolation (a transaction that begins after a commit
//! was acknowledged sees it; write-write conflicts abort; read-only transactions never
//! abort), and an acknowledged commit survives a crash (`SyncMode::Fsync`).
//!
//! It is *not* the commit rule (`journaldb-adjudicator`), the log (`journaldb-journal`) or
//! the version store (`journaldb-storage`): it wires them together in process, with the
//! maintenance that keeps it bounded (checkpoints, garbage collection below the retention
//! window, journal truncation). Not yet here: the cluster `Client`.
//!
//! Start at [`Database`] (`database.rs`); the pieces it uses are [`partition`],
//! [`manifest`], [`tailer`] and [`retry`].

mod backend;
mod closable;
pub mod cluster;
mod database;
mod error;
mod maintenance;
pub mod manifest;
mod nosync;
pub mod partition;
pub mod retry;
mod store;
pub mod tailer;
mod transaction;

pub use cluster::{Client, ClientOptions};
pub use database::{CommitInfo, Database, JournalStats, Options, Stats, StorageEngine, SyncMode};
pub use error::{Error, Result};
pub use journaldb_journal::JournalOptions;
pub use journaldb_storage::{ScanPage, ScanRange};
pub use store::Store;
pub use transaction::Transaction;
