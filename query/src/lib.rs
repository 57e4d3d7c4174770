//! # journaldb: the user-facing database (not yet built)
//!
//! This crate will hold the public API of ARCHITECTURE §2–§3 and §8: `Database::open(dir)`
//! for embedded use and `Client::connect(url)` for a cluster, behind one trait; interactive
//! snapshot-isolation transactions (`begin`, `get`, `scan`, `put`, `delete`, `commit`) with
//! read-your-writes; `transact` with backoff and a retry budget; time-travel reads; the
//! typed `Error` with `is_retryable()` and `maybe_committed()`; and the `journaldb` binary.
//!
//! Today the building blocks exist in `journaldb-proto` (vocabulary, clocks, limits) and
//! `journaldb-journal` (the durable log). Built in issue 4 ("Embedded transactional database").
