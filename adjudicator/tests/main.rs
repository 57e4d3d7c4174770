//! Integration tests of the adjudicator (one test binary per crate, see docs/BUILD.md).

mod cross_oracle;
mod guards;
mod hostile;
mod partition;
mod replay;
mod service;
mod si_oracle;
