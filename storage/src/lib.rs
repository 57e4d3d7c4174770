//! # journaldb-storage: MVCC storage read "as of" a timestamp
//!
//! ARCHITECTURE §6. A [`VersionStore`] keeps versions `(key, τ) → value | tombstone` and
//! answers `get` and `scan(range, limit, reverse)` as of any τ, with a continuation so a scan
//! resumes past its limit. Versions and the applied journal positions are written in one
//! atomic batch, so a restart resumes from the stored positions.
//!
//! Two engines, one MVCC implementation: [`MemoryEngine`] (simulation, tests) and
//! [`RocksEngine`] (embedded and cluster; RocksDB WAL off — the journal is the redo log),
//! which the database wraps in a [`LatestCache`] of keys' newest versions.
//! The byte layout is in [`encoding`]. It is *not* the commit rule (the adjudicator decides;
//! this crate never imports it) and only this crate links RocksDB.
//!
//! [`Crossbar`] merges the records of every journal and releases what lies at or below the
//! watermark as atomic batches; [`StorageNode`] writes them and serves reads that wait for
//! the watermark with a deadline, resuming after a restart from the stored positions.
//! [`service::StorageServer`] serves a node over gRPC (`StorageService`); [`follow::feed`]
//! feeds one from a journal, in this process or on another node.
//! Garbage collection ([`gc`]) keeps what reads at or above the horizon need; the node
//! refuses reads below it; [`retention`] says how far each journal may be truncated, and
//! [`copy`] starts a new replica from another's versions once they have been.

mod cache;
mod choice;
pub mod copy;
mod crossbar;
pub mod encoding;
mod error;
mod faulty;
pub mod follow;
pub mod gc;
mod memory;
mod node;
pub mod retention;
#[cfg(feature = "rocksdb")]
mod rocks;
pub mod service;
mod store;

pub use cache::{DEFAULT_LATEST_CACHE_BYTES, LatestCache};
pub use choice::StorageEngine;
pub use crossbar::{Crossbar, Release};
pub use error::{CrossbarError, Error, Result};
pub use faulty::{Faulty, WriteFaults};
pub use memory::MemoryEngine;
pub use node::StorageNode;
pub use retention::Checkpoint;
#[cfg(feature = "rocksdb")]
pub use rocks::{FORMAT as ROCKSDB_FORMAT, RocksEngine};
pub use store::{Engine, ScanPage, ScanRange, Version, VersionStore, WriteBatch};
