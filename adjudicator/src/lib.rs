//! # journaldb-adjudicator: the commit rule (not yet built)
//!
//! This crate will hold the adjudicator of ARCHITECTURE §4: a sans-IO state machine that
//! decides optimistic snapshot-isolation commits for the partitions it owns — one critical
//! section that assigns τ and enqueues the journal record, the conflict window
//! (`last_write`, `pending`, `floor`, `horizon`), the skew guard, commit wait, heartbeats
//! and promises, and the cross-partition protocol (Prepare / `Prepared` / one `Commit` in
//! the coordinator's journal / Decide / `Decided`). Verdicts are values
//! (`Committed{τ} | Conflict{key} | TooOld`), not errors.
//!
//! It will *not* do I/O: services and the embedded database drive it, appending the records
//! it asks for to a journal. Built in issue 4 ("Embedded transactional database").
