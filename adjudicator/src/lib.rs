//! # journaldb-adjudicator: the commit rule
//!
//! The adjudicator of ARCHITECTURE §4 as a sans-IO state machine: it decides optimistic
//! snapshot-isolation commits for one partition. A read-write transaction commits iff no
//! other transaction wrote one of its keys and committed in (τs, τc]. One critical section
//! ([`Adjudicator::commit`]) checks the conflict window, assigns τc (strictly increasing,
//! after the clock, the floor and the snapshot) and returns the `Commit` record whose
//! durable append is the commit point. Verdicts are values ([`Verdict`]), not errors.
//!
//! What it guarantees, given correct callers: SI never depends on clocks (a bad clock can
//! only delay or refuse commits, via the skew guard); the conflict window is pruned only
//! below a monotone horizon, and snapshots below it are refused (`TooOld`) rather than
//! checked against a forgotten past; retries by `TxnId` get the first outcome, or
//! `Unknown` when it was forgotten — never a second commit.
//!
//! It is *not* I/O: it appends nothing and reads no clock; the embedded database and the
//! services drive it. Not yet here: the cross-partition protocol (Prepare / `Prepared` /
//! Decide / `Decided`) and recovery by replaying the journal.
//!
//! Start at [`Adjudicator`] in `core.rs`; the window is in `window.rs`.

mod core;
mod window;

pub use crate::core::{
    Adjudicator, AdjudicatorConfig, CommitDecision, CommitRequest, PlantedBug, Unavailable, Verdict,
};
