//! # journaldb-sim: deterministic simulation (being built)
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
//!
//! Built so far: [`elle`], the in-house checker of list-append histories in Elle's format
//! (dependency graph with real-time edges; G0, G1a, G1b, G1c, G-single,
//! G-single-realtime, lost update), tested on hand-written histories.

pub mod elle;
