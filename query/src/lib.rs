//! # journaldb: the user-facing database
//!
//! The public API of ARCHITECTURE §2–§3 and §8: the embedded [`Database`]
//! (`Database::open(dir)`) and the cluster [`Client`] (`Client::connect(url)`), both
//! [`Store`]s, with interactive snapshot-isolation [`Transaction`]s (`get`, `scan`, `put`,
//! `delete`, `commit`, `rollback`) with read-your-writes, `transact` with backoff and a
//! retry budget, `snapshot_at` time travel, the typed [`Error`] with `is_retryable()` and
//! `maybe_committed()`.
//!
//! What it guarantees: strong snapshot isolation (a transaction that begins after a commit
//! was acknowledged sees it; write-write conflicts abort; read-only transactions never
//! abort), and an acknowledged commit survives a crash (`SyncMode::Fsync`).
//!
//! It is *not* the commit rule (`journaldb-adjudicator`), the log (`journaldb-journal`) or
//! the version store (`journaldb-storage`): it wires them together in process, with the
//! maintenance that keeps it bounded (checkpoints, garbage collection below the retention
//! window, journal truncation), or drives them over gRPC; the transaction logic is written
//! once, over a backend (`backend.rs`: in process or cluster). Nor is it a cluster node
//! (`journaldb-node`) or the command line (`journaldb-cli`, the `journaldb` binary): an
//! application that embeds this crate compiles no server, configuration-file or CLI code.
//!
//! Start at [`Database`] (`database.rs`) and [`Transaction`] (`transaction.rs`, with
//! `transact`). A transaction runs over a `Backend` (`backend.rs`) whose two arms are
//! peers with the same verbs: the roles in this process (`embedded/`: the database's
//! internals, its visibility waits and maintenance) and a cluster over gRPC
//! (`cluster/remote.rs`, behind [`Client`]). Below them: [`Options`], [`Error`] (with the
//! classification of the adjudicator's refusals), [`retry`], [`partition`] and
//! [`manifest`]. The journal → storage feed is storage's (`journaldb_storage::follow`),
//! shared with the cluster. No file imports a file that imports it back (`.ci/layers.rs` checks).

/// Builder methods for an options struct (`#[non_exhaustive]`, so built from `default()`
/// and these): `setter => field: Type` sets the field; `setter => field: Some(Type)` sets
/// an optional one.
macro_rules! setters {
    ($ty:ident { $($setter:ident => $field:ident: $($some:ident)? ($t:ty)),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets [`", stringify!($ty), "::", stringify!($field), "`].")]
                #[must_use]
                pub fn $setter(mut self, value: $t) -> Self {
                    self.$field = $($some)?(value);
                    self
                }
            )*
        }
    };
}

mod backend;
mod closable;
pub mod cluster;
mod commit;
mod database;
mod embedded;
mod error;
#[cfg(test)]
mod hardening_tests;
pub mod manifest;
mod nosync;
mod options;
pub mod partition;
pub mod retry;
mod store;
mod transaction;

pub use cluster::{Client, ClientOptions};
pub use database::{Database, JournalStats, Stats};
pub use error::{Error, Result};
pub use journaldb_journal::JournalOptions;
pub use journaldb_storage::{ScanPage, ScanRange, StorageEngine};
pub use options::{Options, SyncMode};
pub use store::Store;
pub use transaction::{CommitInfo, Transaction};
