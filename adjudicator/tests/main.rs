//! Integration tests of the adjudicator (one test binary per crate, see BUILD.md).

mod cross_oracle;
mod replay;
mod si_oracle;
