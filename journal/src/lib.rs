//! # journaldb-journal: the log that is the database
//!
//! A local, single-node, append-only journal of records positioned by dense [`Lsn`]s,
//! which never loses an acknowledged record (ARCHITECTURE §5). Replication across nodes
//! builds on it in a later layer.
//!
//! What it guarantees:
//! - **Durability**: [`Journal::append`] resolves only after its record is on disk
//!   (written and `fdatasync`ed); appends resolve in Lsn order.
//! - **Group commit**: concurrent appends share one write and one fsync per batch.
//! - **Recovery**: reopening after a crash yields a prefix of what was written holding
//!   every acknowledged record; a torn final batch is truncated; an invalid batch followed
//!   by a valid one is [`Error::Corruption`] (segment and offset named), never skipped.
//! - **Fail-stop**: after a failed write or fsync the journal is poisoned ([`Error::Poisoned`]).
//! - **One process**: a directory lock refuses a second opener ([`Error::Locked`]).
//!
//! [`service::JournalServer`] serves journals to other nodes over gRPC (`Read`, `Tail`).
//!
//! It is *not* a record decoder (payloads are opaque bytes; `journaldb-proto` defines
//! them), and not replicated yet. Its one thread is the flusher.
//!
//! Start reading at [`Journal`] (`journal.rs`), then `writer.rs` for the commit path and
//! `format.rs` for the bytes on disk. [`disk::CrashDisk`] is the crash-testing disk.

pub mod disk;
mod error;
pub mod format;
mod journal;
mod options;
mod reader;
mod segment;
pub mod service;
mod shared;
mod writer;

pub use error::{Error, Result};
pub use journal::{Journal, JournalStats, Submitted};
pub use journaldb_proto::Lsn;
pub use options::{Flusher, JournalOptions};
pub use reader::{Reader, Tail};
