//! [`Limits`]: every size and age limit of ARCHITECTURE §8, with DSQL-like defaults.
//!
//! Limits are checked where input enters (the transaction API, the RPC services) so that
//! bad input gets a clear [`LimitExceeded`] and changes nothing.

use std::fmt;
use std::time::Duration;

/// Largest gRPC message a node accepts and a client sends or receives: a transaction's
/// write set (≤ 10 MiB by default, [`Limits::max_txn_bytes`]) with room for its framing.
/// Both sides of the wire need it, so it lives here.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Configurable limits. `Limits::default()` gives the defaults of ARCHITECTURE §8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest key, in bytes (default 4 KiB).
    pub max_key_bytes: usize,
    /// Largest value, in bytes (default 1 MiB).
    pub max_value_bytes: usize,
    /// Largest transaction write set (keys + values), in bytes (default 10 MiB).
    pub max_txn_bytes: usize,
    /// Most mutations in one transaction (default 10,000).
    pub max_txn_mutations: usize,
    /// Oldest a transaction may be at commit, which is also the conflict window the
    /// adjudicator keeps (default 5 minutes).
    pub max_txn_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
            max_txn_bytes: 10 * 1024 * 1024,
            max_txn_mutations: 10_000,
            max_txn_age: Duration::from_secs(5 * 60),
        }
    }
}

/// Which limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// [`Limits::max_key_bytes`].
    KeyBytes,
    /// [`Limits::max_value_bytes`].
    ValueBytes,
    /// [`Limits::max_txn_bytes`].
    TxnBytes,
    /// [`Limits::max_txn_mutations`].
    TxnMutations,
    /// [`Limits::max_txn_age`], in milliseconds.
    TxnAgeMillis,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::KeyBytes => "key size (bytes)",
            LimitKind::ValueBytes => "value size (bytes)",
            LimitKind::TxnBytes => "transaction size (bytes)",
            LimitKind::TxnMutations => "mutations per transaction",
            LimitKind::TxnAgeMillis => "transaction age (ms)",
        })
    }
}

/// A limit was exceeded: what, the limit, and the actual amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} limit exceeded: {actual} > {limit}")]
pub struct LimitExceeded {
    /// The limit that was exceeded.
    pub what: LimitKind,
    /// The configured limit.
    pub limit: u64,
    /// The offending amount.
    pub actual: u64,
}

/// Bytes a journal record may add to a transaction's keys and values: per mutation, the
/// protobuf tags and length prefixes of its message, key, value and kind (≤ 24 bytes for
/// any key and value within these limits); per record, its kind, ids, timestamps and the
/// participant list (≤ 6 bytes a partition, at most one per mutation).
const RECORD_BYTES_PER_MUTATION: usize = 32;
const RECORD_BYTES_FIXED: usize = 256;

impl Limits {
    /// The largest journal record a transaction within these limits can need (its
    /// `Commit` record, which holds the whole write set). A journal whose record limit is
    /// below this would refuse valid commits, so a database or node refuses to open with
    /// such a pair of settings.
    pub fn max_record_bytes(&self) -> u64 {
        let per_mutation = RECORD_BYTES_PER_MUTATION.saturating_mul(self.max_txn_mutations);
        self.max_txn_bytes
            .saturating_add(per_mutation)
            .saturating_add(RECORD_BYTES_FIXED) as u64
    }

    /// Checks one limit: `Ok` if `actual ≤ limit`.
    pub fn check(what: LimitKind, limit: usize, actual: usize) -> Result<(), LimitExceeded> {
        if actual <= limit {
            Ok(())
        } else {
            Err(LimitExceeded {
                what,
                limit: limit as u64,
                actual: actual as u64,
            })
        }
    }

    /// Checks a key's size.
    pub fn check_key(&self, key: &[u8]) -> Result<(), LimitExceeded> {
        Self::check(LimitKind::KeyBytes, self.max_key_bytes, key.len())
    }

    /// Checks a value's size.
    pub fn check_value(&self, value: &[u8]) -> Result<(), LimitExceeded> {
        Self::check(LimitKind::ValueBytes, self.max_value_bytes, value.len())
    }

    /// Checks a whole write set: every key and value, the mutation count and the total
    /// bytes (keys plus values).
    pub fn check_write_set(&self, mutations: &[crate::Mutation]) -> Result<(), LimitExceeded> {
        Self::check(
            LimitKind::TxnMutations,
            self.max_txn_mutations,
            mutations.len(),
        )?;
        let mut bytes = 0;
        for m in mutations {
            self.check_key(&m.key)?;
            bytes += m.key.len();
            if let crate::MutationOp::Put(v) = &m.op {
                self.check_value(v)?;
                bytes += v.len();
            }
        }
        Self::check(LimitKind::TxnBytes, self.max_txn_bytes, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_those_of_the_architecture() {
        let l = Limits::default();
        assert_eq!(l.max_key_bytes, 4096);
        assert_eq!(l.max_value_bytes, 1 << 20);
        assert_eq!(l.max_txn_bytes, 10 << 20);
        assert_eq!(l.max_txn_mutations, 10_000);
        assert_eq!(l.max_txn_age, Duration::from_secs(300));
    }

    #[test]
    fn a_key_at_the_limit_passes_and_one_byte_more_fails() {
        let l = Limits::default();
        assert!(l.check_key(&vec![0; 4096]).is_ok());
        let err = l.check_key(&vec![0; 4097]).unwrap_err();
        assert_eq!((err.limit, err.actual), (4096, 4097));
        assert_eq!(err.what, LimitKind::KeyBytes);
        assert!(err.to_string().contains("key size"));
    }
}
