//! Newtypes for the ordered quantities of journaldb.
//!
//! Each wraps an integer so that a timestamp can never be passed where a log position is
//! expected. Conversions to and from the wire representation are explicit.

use std::fmt;
use std::time::Duration;

use crate::pb;

/// A point in time: nanoseconds since the Unix epoch (ARCHITECTURE §2).
///
/// Commit timestamps (`commit_ts`, τc) and snapshot timestamps (`start_ts`, τs) are
/// `Timestamp`s. `u64` nanoseconds last until the year 2554.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The smallest timestamp; "before everything".
    pub const ZERO: Timestamp = Timestamp(0);
    /// The largest timestamp; "after everything".
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// A timestamp from nanoseconds since the Unix epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The next timestamp (one nanosecond later), saturating at [`Timestamp::MAX`].
    pub const fn next(self) -> Self {
        Timestamp(self.0.saturating_add(1))
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_nanos(d)))
    }

    /// `self - d`, saturating at [`Timestamp::ZERO`].
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_nanos(d)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "τ{}", self.0)
    }
}

/// A `Duration` in nanoseconds, saturating at `u64::MAX` (584 years).
pub fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A position in one journal. Positions are dense: the records of a journal have
/// consecutive `Lsn`s starting at [`Lsn::FIRST`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(u64);

impl Lsn {
    /// "No record": the position before the first record (e.g. `applied_lsn` of a new store).
    pub const ZERO: Lsn = Lsn(0);
    /// The position of a journal's first record.
    pub const FIRST: Lsn = Lsn(1);

    /// An `Lsn` from its integer value.
    pub const fn new(value: u64) -> Self {
        Lsn(value)
    }

    /// The integer value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The following position.
    pub const fn next(self) -> Self {
        Lsn(self.0 + 1)
    }

    /// The position `n` records later.
    pub const fn add(self, n: u64) -> Self {
        Lsn(self.0 + n)
    }

    /// Number of records from `earlier` (inclusive) to `self` (exclusive); 0 if `earlier` is later.
    pub const fn distance_from(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lsn {}", self.0)
    }
}

/// A journal writer epoch `(counter, node_id)`, totally ordered by counter, then node id
/// (ARCHITECTURE §5). Only the writer of the newest sealed epoch may append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch {
    /// Incremented by every new writer.
    pub counter: u64,
    /// The node that owns this epoch; breaks ties between concurrent candidates.
    pub node_id: u64,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}.{}", self.counter, self.node_id)
    }
}

impl From<Epoch> for pb::Epoch {
    fn from(e: Epoch) -> Self {
        pb::Epoch {
            counter: e.counter,
            node_id: e.node_id,
        }
    }
}

impl From<pb::Epoch> for Epoch {
    fn from(e: pb::Epoch) -> Self {
        Epoch {
            counter: e.counter,
            node_id: e.node_id,
        }
    }
}

/// A transaction id: 128 bits chosen by the client from its seeded RNG, unique per
/// transaction. Retries of a commit carry the same id, which makes commits idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TxnId(u128);

impl TxnId {
    /// A transaction id from its 128-bit value.
    pub const fn new(value: u128) -> Self {
        TxnId(value)
    }

    /// The 128-bit value.
    pub const fn get(self) -> u128 {
        self.0
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "txn {:032x}", self.0)
    }
}

impl From<TxnId> for pb::TxnId {
    fn from(id: TxnId) -> Self {
        pb::TxnId {
            hi: (id.0 >> 64) as u64,
            lo: id.0 as u64,
        }
    }
}

impl From<pb::TxnId> for TxnId {
    fn from(id: pb::TxnId) -> Self {
        TxnId((u128::from(id.hi) << 64) | u128::from(id.lo))
    }
}

/// A partition of the key space, owned by one adjudicator with one journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PartitionId(u32);

impl PartitionId {
    /// A partition id from its integer value.
    pub const fn new(value: u32) -> Self {
        PartitionId(value)
    }

    /// The integer value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_id_round_trips_through_the_wire() {
        let id = TxnId::new(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(TxnId::from(pb::TxnId::from(id)), id);
    }

    #[test]
    fn epochs_order_by_counter_then_node() {
        let a = Epoch {
            counter: 1,
            node_id: 9,
        };
        let b = Epoch {
            counter: 2,
            node_id: 0,
        };
        let c = Epoch {
            counter: 2,
            node_id: 1,
        };
        assert!(a < b && b < c);
        assert_eq!(Epoch::from(pb::Epoch::from(c)), c);
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        assert_eq!(Timestamp::MAX.next(), Timestamp::MAX);
        assert_eq!(
            Timestamp::ZERO.saturating_sub(Duration::from_secs(1)),
            Timestamp::ZERO
        );
        assert_eq!(
            Timestamp::from_nanos(5).saturating_add(Duration::from_nanos(7)),
            Timestamp::from_nanos(12)
        );
        assert_eq!(
            Timestamp::from_nanos(5).saturating_duration_since(Timestamp::from_nanos(9)),
            Duration::ZERO
        );
    }
}
