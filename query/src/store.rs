//! [`Store`]: what the embedded [`crate::Database`] and the cluster [`crate::Client`] have
//! in common, so application code (and journaldb's own test suites) can be written once for
//! both. `transact` is an inherent method of each (its future type differs).

use journaldb_proto::Timestamp;

use crate::error::Result;
use crate::transaction::Transaction;

/// A journaldb database, embedded or a cluster.
pub trait Store: Send + Sync {
    /// Begins a transaction; it sees every commit acknowledged before.
    fn begin(&self) -> Transaction;
    /// A read-only view as of `ts`, within the retention window.
    fn snapshot_at(&self, ts: Timestamp) -> Result<Transaction>;
    /// How many partitions the key space has.
    fn partitions(&self) -> u32;
}

impl Store for crate::Database {
    fn begin(&self) -> Transaction {
        crate::Database::begin(self)
    }

    fn snapshot_at(&self, ts: Timestamp) -> Result<Transaction> {
        crate::Database::snapshot_at(self, ts)
    }

    fn partitions(&self) -> u32 {
        crate::Database::partitions(self)
    }
}

impl Store for crate::Client {
    fn begin(&self) -> Transaction {
        crate::Client::begin(self)
    }

    fn snapshot_at(&self, ts: Timestamp) -> Result<Transaction> {
        crate::Client::snapshot_at(self, ts)
    }

    fn partitions(&self) -> u32 {
        crate::Client::partitions(self)
    }
}
