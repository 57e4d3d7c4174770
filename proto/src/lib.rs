//! # journaldb-proto: the vocabulary every journaldb role shares
//!
//! This crate holds what crosses a boundary between roles, and nothing that decides anything:
//!
//! - [`pb`]: the protobuf messages generated from `proto/journaldb/v1/*.proto` — the journal
//!   records (`Commit`, `Prepared`, `Decided`, `Heartbeat`, `EpochStart`) and the gRPC
//!   services of a cluster (storage, journal, adjudicator, cluster topology), servers and
//!   clients. Wire types live here and only here.
//! - [`status`]: how a journaldb error kind travels in a gRPC status.
//! - [`ids`]: newtypes for ordered quantities — [`Timestamp`], [`Lsn`], [`Epoch`], [`TxnId`],
//!   [`PartitionId`]. A bare `u64` never means a timestamp or a position in an API.
//! - [`mutation`]: [`Mutation`], one write of a transaction, and its wire conversion.
//! - [`limits`]: [`Limits`], the size and age limits of ARCHITECTURE §8 with their defaults.
//! - [`lookup`]: [`LookupMap`], a hash map without iteration and with a fixed hash, for
//!   the hot point lookups of the commit and read paths.
//! - [`clock`]: the [`Clock`] trait with bounded-error [`TimeInterval`]s, the production
//!   [`SystemClock`], the zero-error [`EmbeddedClock`] of one-process databases, and the
//!   hand-driven [`ManualClock`] for tests (ARCHITECTURE §2).
//!
//! It is *not* a utility crate: it depends on no other journaldb crate, and protocol logic
//! (the commit rule, the journal format, storage) lives in the role crates.
//!
//! Start reading at [`clock`] for how time works, then `proto/journaldb/v1/records.proto`.

pub mod clock;
pub mod ids;
pub mod keyspace;
pub mod limits;
pub mod lookup;
pub mod mutation;
pub mod planted;
pub mod status;

/// Messages generated from the `.proto` files by prost (see `build.rs`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/journaldb.v1.rs"));
}

pub use clock::{Clock, EmbeddedClock, ManualClock, SystemClock, SystemClockConfig, TimeInterval};
pub use ids::{Epoch, Lsn, PartitionId, Timestamp, TxnId};
pub use limits::{LimitExceeded, LimitKind, Limits, MAX_MESSAGE_BYTES};
pub use lookup::LookupMap;
pub use mutation::{DecodeError, Mutation, MutationOp};
pub use planted::PlantedBug;
