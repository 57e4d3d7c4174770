//! # journaldb-bench: benchmarks that print numbers
//!
//! Speed targets are checked here, never in tests. Each command measures journaldb and a
//! baseline on the same machine in the same run, so results are read as ratios.
//! `journaldb-bench journal` measures the durable journal against raw `fdatasync`;
//! `journaldb-bench embedded` the embedded database against RocksDB's
//! `OptimisticTransactionDB`; `journaldb-bench cluster` the cluster client on a local
//! 3-node cluster, single-replica and replicated, and (`--etcd`) a 3-member etcd.
//!
//! Build with optimized workspace crates (dependencies are always optimized):
//! `CARGO_PROFILE_DEV_OPT_LEVEL=3 cargo run -p journaldb-bench -- journal`.

#![allow(
    clippy::disallowed_methods,
    reason = "benchmarks measure wall-clock time and run their own threads"
)]

mod cluster;
mod embedded;
mod etcd;
mod journal;
mod load;
mod report;

use clap::{Parser, Subcommand};

/// The allocator of the `journaldb` binary, so that the node processes run as it runs them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// journaldb benchmarks.
#[derive(Parser, Debug)]
#[command(name = "journaldb-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Durable appends/s and append latency of the journal against raw fdatasync.
    Journal(journal::Args),
    /// Transactions, point reads and reopen time of the embedded database against
    /// RocksDB's OptimisticTransactionDB (sync = true).
    Embedded(embedded::Args),
    /// Commits/s and latency of one-key updates through the cluster client, on a local
    /// 3-node cluster.
    Cluster(cluster::Args),
    /// One node of `cluster`'s cluster, as its own process (runs until stdin closes).
    #[command(hide = true)]
    ClusterNode(cluster::NodeArgs),
    /// The child process of `embedded`'s reopen measurement (writes until killed).
    #[command(hide = true)]
    EmbeddedHistory(embedded::HistoryArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Journal(args) => journal::run(args),
        Command::Embedded(args) => embedded::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::EmbeddedHistory(args) => embedded::history(args),
        Command::ClusterNode(args) => cluster::node(args),
    }
}
