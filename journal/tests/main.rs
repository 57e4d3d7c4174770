//! Integration tests of the journal (one test binary per crate, see docs/BUILD.md).

mod common;
mod crash;
mod lock;
mod poison;
mod recovery;
mod service;
mod tail;
