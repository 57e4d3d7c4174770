//! # journaldb-sim: deterministic simulation (not yet built)
//!
//! This crate will hold ARCHITECTURE §7: the whole cluster (clients, adjudicators, journal
//! replicas, storage) inside one turmoil simulation on one thread, with seeded faults
//! (partitions, crashes, torn writes, disk errors, clock skew), workloads with checkers
//! (bank, list-append with an Elle-format history, register), the `journaldb-sim` binary,
//! and a library API for users to test their own services against a simulated cluster.
//!
//! It is the only crate that depends on turmoil. Built in issue 6 ("Deterministic
//! simulation harness"); the determinism rules it relies on are already enforced by
//! `clippy.toml` in every crate.
