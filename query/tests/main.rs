//! Integration tests of the embedded database (one test binary per crate, see docs/BUILD.md).

mod bank;
mod cluster;
mod cluster_disk;
mod commit_unknown;
mod crash;
mod embedded;
mod isolation;
mod local_cluster;
mod maintenance;
mod replicated_cluster;
mod sigkill;
mod tls;

/// A 2-worker multi-thread runtime with time and I/O, as the database expects.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
