//! # journaldb-raft: consensus for the replicated journals
//!
//! Each journal of a cluster is one Raft group (ARCHITECTURE §5, "Replication"), run with
//! raft-rs (TiKV's Raft), never a consensus of our own. This crate is where journaldb meets
//! the library. So far it holds what every group is started with:
//!
//! - [`GroupConfig`]: the settings of §5 rule 5 (pre-vote and check-quorum on; message,
//!   in-flight, uncommitted and per-ready sizes bounded) checked and turned into a
//!   `raft::Config`.
//! - [`ElectionTiming`]: raft-rs draws each election timeout from the thread RNG, which
//!   would make a simulation's trace differ between runs of one seed. A one-value range
//!   (max = min + 1 ticks) makes that draw fixed; each voter gets a distinct value drawn
//!   from the seeded RNG (equal timeouts can split votes for ever in lock-step), and
//!   [`ElectionTiming::next_tick`] jitters the tick interval from the same RNG, so
//!   effective timeouts still vary per election while the trace is a function of the seed.
//!
//! - [`EntryBatch`]: the data of one Raft entry of a journal, one group-commit batch of
//!   records with the Lsn of the first, decoded without trusting a field.
//!
//! - [`RaftLog`] (module [`log`]): one replica's durable Raft log — entries, hard state,
//!   truncation point and configuration history in checksummed segment files written
//!   through the journal's `Disk` — and raft-rs's `Storage` over it. The driver stages a
//!   `Ready` into it (readable at once), and the flusher's [`LogWriter::flush`] makes
//!   everything staged durable with one write and one fsync, then reports the staging it
//!   covered, for `on_persist_ready`.
//!
//! The library's contract — the order of a `Ready`, the `Storage` errors that panic — is
//! the shared RAFT.md. `tests/group.rs` drives three voters by it over raft-rs's
//! `MemStorage`; `tests/durable_group.rs` drives them over `RaftLog`s on crash-testing
//! disks, asynchronously, with crashes, lost messages and snapshots; `tests/driver.rs`
//! and `tests/members.rs` run the [`Driver`] task of three nodes, with crashes, cut links
//! and membership changes (a dead voter replaced by a new node that catches up first).

mod config;
pub mod driver;
mod entry;
pub mod log;
mod timing;

pub use config::{ConfigError, GroupConfig};
pub use driver::{
    Driver, DriverConfig, Envelope, GroupId, GroupStatus, GrpcInbox, GrpcTransport, Inbox,
    LocalNetwork, MemberChange, Members, NodeId, Pending, ReplicatedJournal, ReplicationError,
    Transport,
};
pub use entry::{EntryBatch, EntryCommand, EntryError};
pub use log::{LogError, LogId, LogOptions, LogState, LogWriter, RaftLog};
pub use timing::ElectionTiming;

/// raft-rs itself, for the types a caller needs (`RawNode`, `Ready`, messages).
pub use raft;

/// A logger that drops everything: raft-rs logs through slog, and journaldb does not
/// print from a library.
pub fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}
