//! journaldb-raft's integration tests, one binary (docs/BUILD.md).

mod driver;
mod durable_group;
mod group;
mod log;
mod members;
mod truncation;
mod wire;
