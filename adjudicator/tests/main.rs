//! Integration tests of the adjudicator (one test binary per crate, see BUILD.md).

mod si_oracle;
