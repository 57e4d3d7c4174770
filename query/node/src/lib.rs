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
mod tasks;
mod topology;

pub use config::{ConfigError, NodeConfig, NodeEntry, TlsConfig, TlsFiles};
pub use late::LateRequests;
pub use node::{ClusterNode, NodeEnv};

#[allow(missing_docs, clippy::all)]
pub mod probe {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static SUM: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    static N: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    static MAX: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    pub struct Timer(pub usize, pub std::time::Instant);
    impl Drop for Timer { fn drop(&mut self) { record(self.0, self.1.elapsed()) } }
    pub fn record(i: usize, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        SUM[i].fetch_add(us, Relaxed); N[i].fetch_add(1, Relaxed); MAX[i].fetch_max(us, Relaxed);
    }
    pub fn dump() -> String {
        (0..4).map(|i| { let n = N[i].swap(0, Relaxed); let s = SUM[i].swap(0, Relaxed); let m = MAX[i].swap(0, Relaxed);
            format!("[{i}] n={n} avg={}us max={m}us ", if n>0 {s/n} else {0}) }).collect()
    }
    pub fn spawn() { std::thread::spawn(|| loop { std::thread::sleep(std::time::Duration::from_secs(2)); eprintln!("probe {} raft {}", dump(), journaldb_raft::probe::dump()); }); }
}
