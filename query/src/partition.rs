//! Embedded and cluster partitioning (ARCHITECTURE §4): which partition owns a key. The
//! function is defined in [`journaldb_proto::keyspace`], where the adjudicator's service
//! also finds it to refuse keys it does not own; re-exported here for the library's users.

pub use journaldb_proto::keyspace::{key_hash, partition_of};
