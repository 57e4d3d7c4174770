//! # journaldb-sync: the journal's concurrency primitives, loom-checked
//!
//! Two small primitives carry every hand-off between the journal's appenders, its one
//! flusher, and its readers:
//!
//! - [`Batcher`]: appenders push records and get dense sequence numbers in push order; the
//!   flusher takes everything queued as one batch (group commit). The queue is bounded in
//!   bytes: a full queue makes appenders wait (backpressure), it never grows without limit.
//! - [`DurablePoint`]: the durable end of the log. The flusher advances it after each fsync;
//!   appenders and tailing readers wait for it to pass their position. It can be halted
//!   (after an I/O error or at close): waiters then learn that it will never advance.
//!
//! Both work from async code (they are plain futures woken through `std::task::Waker`, with
//! no runtime dependency) and from a dedicated flusher thread (a `Condvar`).
//!
//! This crate has **no dependencies** on purpose: under `--cfg loom` its whole graph must
//! build, and tokio/tonic do not. It uses raw `u64` sequence numbers; the journal wraps them
//! in `Lsn`. It is *not* the journal: it knows nothing of files, framing or fsync.
//!
//! Loom tests live in `tests/loom.rs`:
//! `RUSTFLAGS="--cfg loom" cargo test -p journaldb-sync --test loom --release`.

mod batcher;
mod durable;
mod prim;

pub use batcher::{Batch, Batcher, Closed, Push, Room, TryPushError};
pub use durable::{DurablePoint, Halted, WaitDurable};
