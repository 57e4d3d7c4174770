//! Integration tests of the `journaldb` command line: one-shot commands and the shell on an
//! embedded database, `serve` and `cluster start|stop|status` as separate processes, and a
//! node's death under a running cluster (one test binary per crate, see docs/BUILD.md).

mod cli;
mod failover;
mod replace_node;
mod replicated_failover;
mod serve;

/// A 2-worker multi-thread runtime with time and I/O, as the client expects.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
