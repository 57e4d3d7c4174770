//! # journaldb-storage: MVCC storage fed by the journals (not yet built)
//!
//! This crate will hold ARCHITECTURE §6: the `VersionStore` trait with an in-memory engine
//! (simulation, tests) and a RocksDB engine (WAL off — the journal is the redo log),
//! order-preserving version keys, the crossbar that merges every journal in τ order, the
//! watermark that reads at τ wait for, garbage collection, and `get`/`scan` "as of" τ.
//!
//! It will *not* decide commits (that is the adjudicator) and never imports the
//! adjudicator. It is the only crate besides the benchmarks that links RocksDB (behind the
//! default `rocksdb` feature). Built in issue 4 ("Embedded transactional database").
