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
//! Cross-partition transactions (`cross.rs`): participants vote with durable `Prepared`
//! records, the coordinator appends the whole transaction as one `Commit` in its own
//! journal, participants record `Decided`; an undecided coordinator asked for `Status`
//! decides abort for good (durably), and a participant whose vote stays undecided past the
//! vote timeout asks. An outcome once reported is final for every kind of commit request.
//!
//! The state machine is *not* I/O: it appends nothing and reads no clock. [`Partition`]
//! (`partition.rs`) is the one place that does the I/O around it — the critical section
//! with its journal append, durability, step-down — for the embedded database and the
//! gRPC service alike; [`service::AdjudicatorServer`] serves partitions over gRPC.
//! [`commit_wait`] is the wait between a commit's durability and its acknowledgement, for
//! the embedded database and the cluster client alike.
//! [`Adjudicator::replay`] rebuilds one from its journal (failover, or an embedded
//! reopen); undecided votes are resolved by the caller asking their coordinators. Not yet
//! here: resolving through journal recovery when a coordinator's journal must be sealed
//! (replication).
//!
//! Start at [`Adjudicator`] in `core/mod.rs` (its cross-partition half in `core/cross.rs`);
//! what it takes and returns is in `protocol.rs`, the window in `window.rs`.

mod commit_wait;
mod core;
mod log;
mod partition;
pub mod protocol;
mod replay;
pub mod service;
mod window;

pub use crate::commit_wait::commit_wait;
pub use crate::core::{Adjudicator, AdjudicatorConfig};
pub use crate::log::{PartitionLog, Submission, SubmitError};
pub use crate::partition::{Partition, RecoveryError, Refusal, replay_payloads};
pub use crate::protocol::{
    CommitDecision, CommitRequest, PrepareDecision, PrepareRequest, StatusDecision, TxnStatus,
    Unavailable, Verdict, Vote,
};
pub use crate::replay::{ReplayError, ReplayMode};
pub use journaldb_proto::PlantedBug;
