//! # journaldb-node: a node of a journaldb cluster
//!
//! What `journaldb serve --config node.toml` runs (ARCHITECTURE §3, §9): a node's
//! configuration ([`config`]: its name, data directory and the cluster's static map), the
//! node itself ([`node`]: the journals and adjudicators of its partitions, a storage
//! replica fed over `Tail`, the topology service and health, on one gRPC listener), its
//! maintenance (checkpoints, garbage collection, journal truncation), the resolution of
//! votes left undecided (`resolver.rs`), its background tasks (`tasks.rs`), the
//! simulation's seam for requests served past their deadline ([`late`]), and, in a cluster
//! whose journals are replicated, a partition's adjudicator on the leader of its journal's
//! Raft group ([`replicated`]).
//!
//! It is a layer above the library (`journaldb`: `Database`, `Client`, errors) and below
//! the command line (`journaldb-cli`): an application that embeds the library compiles
//! none of this, and the simulation (`journaldb-sim`) runs these nodes as they run in
//! production, with only their [`NodeEnv`] replaced.

pub mod config;
mod env;
pub mod late;
mod maintenance;
pub mod node;
pub mod replicated;
mod resolver;
mod start;
mod storage_copy;
mod tasks;
mod topology;

pub use config::{ConfigError, NodeConfig, NodeEntry, TlsConfig, TlsFiles};
pub use late::LateRequests;
pub use node::{ClusterNode, NodeEnv};
