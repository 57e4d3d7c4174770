//! # journaldb-sim: deterministic simulation of a journaldb cluster
//!
//! ARCHITECTURE §7: the whole cluster — clients, adjudicators, journals, storage replicas —
//! runs inside one [turmoil] simulation on one thread: the real role code and the real
//! gRPC stack over turmoil's simulated TCP, journals on turmoil's file system (a crash
//! loses unsynced writes), storage in memory (rebuilt from the journals after a restart),
//! a bounded-error [`clock::SimClock`] per host. Every random choice comes from the run's
//! seed, so a seed replays exactly.
//!
//! - [`cluster`]: [`cluster::SimCluster`], the library API — add a simulated cluster to
//!   your own `turmoil::Sim` and test your service's hosts against it (`sim/examples/`).
//! - [`faults`]: fault kinds (`partition`, `hold`, `latency`, `crash`, `torn`,
//!   `disk-error`, `clock`, `slow`, `clock-bound-violation`, `client-crash`,
//!   `storage-error`, `hostile`, `skew`, `late`) and their seeded schedules; `hostile.rs`
//!   is the rogue client host.
//! - [`workload`]: bank, list-append and register workloads with `setup / step / check`.
//! - [`schedules`]: named schedules aimed at the leaders of replicated journals
//!   (`leader-crash`, `figure-8`, `deposed-leader`, …).
//! - [`run`]: one seeded run — cluster, clients, fault driver, checks, trace.
//! - [`elle`]: the in-house checker of Elle list-append histories.
//! - [`net`], [`disk`], [`clock`]: turmoil's network, file system and time under the
//!   production code's `Connector`, `Disk` and `Clock`.
//!
//! The `journaldb-sim` binary runs seed ranges and replays one seed with its trace.

pub mod clock;
pub mod cluster;
pub mod disk;
mod driver;
pub mod elle;
pub mod faults;
mod hostile;
pub mod net;
mod operator;
pub mod recorder;
mod replicas;
pub mod run;
pub mod schedules;
pub mod workload;

pub use cluster::{Knobs, SimCluster};
pub use faults::{FaultKind, FaultSet};
pub use journaldb_proto::PlantedBug;
pub use run::{RunOptions, RunReport, run};
pub use schedules::Schedule;
pub use workload::WorkloadKind;
