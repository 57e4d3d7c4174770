//! # journaldb: the user-facing database (being built)
//!
//! This crate will hold the public API of ARCHITECTURE §2–§3 and §8: `Database::open(dir)`
//! for embedded use and `Client::connect(url)` for a cluster, behind one trait; interactive
//! snapshot-isolation transactions (`begin`, `get`, `scan`, `put`, `delete`, `commit`) with
//! read-your-writes; `transact` with backoff and a retry budget; time-travel reads; the
//! typed `Error` with `is_retryable()` and `maybe_committed()`; and the `journaldb` binary.
//!
//! Here today: the public [`Error`] with its classification, the [`retry`] policy
//! (`RetryPolicy`, `RetryBudget`) that `transact` will use, the in-process [`tailer`]
//! that feeds a storage node from a journal, key [`partition`]ing, and the data
//! directory's [`manifest`]. The database itself is built in
//! issue 4 ("Embedded transactional database") on `journaldb-journal`,
//! `journaldb-adjudicator` and `journaldb-storage`.

mod database;
mod error;
pub mod manifest;
pub mod partition;
pub mod retry;
pub mod tailer;

pub use database::{CommitInfo, Database, Options, StorageEngine, SyncMode, Transaction};
pub use error::{Error, Result};
pub use journaldb_storage::{ScanPage, ScanRange};
