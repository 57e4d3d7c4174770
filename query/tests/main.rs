//! Integration tests of the embedded database (one test binary per crate, see BUILD.md).

mod bank;
mod cli;
mod crash;
mod embedded;
mod isolation;
