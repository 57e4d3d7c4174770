//! [`Mutation`]: one write of a transaction, and its conversion to and from the wire.
//!
//! Decoding never panics: a record read from disk or the network that lacks a field is a
//! [`DecodeError`], a value the caller handles.

use bytes::Bytes;

use crate::pb;

/// One write of a transaction: put a value or delete the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    /// The key written.
    pub key: Bytes,
    /// What is written.
    pub op: MutationOp,
}

/// The operation of a [`Mutation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MutationOp {
    /// Set the key to this value.
    Put(Bytes),
    /// Remove the key (stored as a tombstone version).
    Delete,
}

impl Mutation {
    /// A put of `value` at `key`.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Mutation {
            key: key.into(),
            op: MutationOp::Put(value.into()),
        }
    }

    /// A delete of `key`.
    pub fn delete(key: impl Into<Bytes>) -> Self {
        Mutation {
            key: key.into(),
            op: MutationOp::Delete,
        }
    }

    /// Bytes this mutation counts against the transaction size limit (key + value).
    pub fn size(&self) -> usize {
        self.key.len()
            + match &self.op {
                MutationOp::Put(v) => v.len(),
                MutationOp::Delete => 0,
            }
    }
}

/// A wire message that cannot be turned into its domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A required field (a oneof or a sub-message) was absent.
    #[error("malformed {message}: missing field `{field}`")]
    MissingField {
        /// The message type.
        message: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// The bytes are not a valid protobuf encoding of the message.
    #[error("malformed protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

impl From<Mutation> for pb::Mutation {
    fn from(m: Mutation) -> Self {
        let op = match m.op {
            MutationOp::Put(v) => pb::mutation::Op::Put(v),
            MutationOp::Delete => pb::mutation::Op::Delete(pb::Delete {}),
        };
        pb::Mutation {
            key: m.key,
            op: Some(op),
        }
    }
}

impl TryFrom<pb::Mutation> for Mutation {
    type Error = DecodeError;

    fn try_from(m: pb::Mutation) -> Result<Self, DecodeError> {
        let op = match m.op {
            Some(pb::mutation::Op::Put(v)) => MutationOp::Put(v),
            Some(pb::mutation::Op::Delete(_)) => MutationOp::Delete,
            None => {
                return Err(DecodeError::MissingField {
                    message: "Mutation",
                    field: "op",
                });
            }
        };
        Ok(Mutation { key: m.key, op })
    }
}

impl pb::Record {
    /// A `Commit` record: `mutations` committed at `commit_ts` by `txn_id`, with the other
    /// `participants` of a cross-partition transaction (empty for a single partition).
    pub fn commit(
        txn_id: crate::TxnId,
        commit_ts: crate::Timestamp,
        mutations: impl IntoIterator<Item = Mutation>,
        participants: &[crate::PartitionId],
    ) -> Self {
        pb::Record {
            kind: Some(pb::record::Kind::Commit(pb::Commit {
                txn_id: Some(txn_id.into()),
                commit_ts: commit_ts.as_nanos(),
                mutations: mutations.into_iter().map(Into::into).collect(),
                participants: participants.iter().map(|p| p.get()).collect(),
            })),
        }
    }

    /// A participant's `Decided` record at `record_ts`: committed at `commit_ts`, or
    /// aborted (`None`).
    pub fn decided(
        txn_id: crate::TxnId,
        record_ts: crate::Timestamp,
        commit_ts: Option<crate::Timestamp>,
    ) -> Self {
        let outcome = match commit_ts {
            Some(ts) => pb::decided::Outcome::CommittedTs(ts.as_nanos()),
            None => pb::decided::Outcome::Aborted(pb::Aborted {}),
        };
        pb::Record {
            kind: Some(pb::record::Kind::Decided(pb::Decided {
                txn_id: Some(txn_id.into()),
                record_ts: record_ts.as_nanos(),
                outcome: Some(outcome),
                coordinator_abort: false,
                snapshot_bound: 0,
            })),
        }
    }

    /// A coordinator's durable abort of `txn_id` (whose τs is at most `snapshot_bound`), a
    /// `Decided` record at `record_ts` marked `coordinator_abort`.
    pub fn coordinator_abort(
        txn_id: crate::TxnId,
        record_ts: crate::Timestamp,
        snapshot_bound: crate::Timestamp,
    ) -> Self {
        let mut record = Self::decided(txn_id, record_ts, None);
        if let Some(pb::record::Kind::Decided(d)) = &mut record.kind {
            d.coordinator_abort = true;
            d.snapshot_bound = snapshot_bound.as_nanos();
        }
        record
    }

    /// A `Heartbeat` record at `ts`.
    pub fn heartbeat(ts: crate::Timestamp) -> Self {
        pb::Record {
            kind: Some(pb::record::Kind::Heartbeat(pb::Heartbeat {
                ts: ts.as_nanos(),
            })),
        }
    }

    /// The τ this record was assigned in its adjudicator's critical section, or `None`
    /// for records that carry none (`EpochStart`) or a malformed record without a kind.
    pub fn ts(&self) -> Option<crate::Timestamp> {
        use pb::record::Kind;
        let nanos = match self.kind.as_ref()? {
            Kind::Commit(c) => c.commit_ts,
            Kind::Prepared(p) => p.vote_ts,
            Kind::Decided(d) => d.record_ts,
            Kind::Heartbeat(h) => h.ts,
            Kind::EpochStart(_) => return None,
        };
        Some(crate::Timestamp::from_nanos(nanos))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn mutations_round_trip() {
        for m in [Mutation::put("k", "v"), Mutation::delete(&b"\x00\xff"[..])] {
            let wire = pb::Mutation::from(m.clone());
            let bytes = wire.encode_to_vec();
            let decoded = pb::Mutation::decode(&bytes[..]).unwrap();
            assert_eq!(Mutation::try_from(decoded).unwrap(), m);
        }
    }

    #[test]
    fn a_mutation_without_op_is_a_decode_error() {
        let wire = pb::Mutation {
            key: Bytes::from_static(b"k"),
            op: None,
        };
        assert!(matches!(
            Mutation::try_from(wire),
            Err(DecodeError::MissingField { field: "op", .. })
        ));
    }

    #[test]
    fn record_ts_reads_each_kind() {
        let hb = pb::Record {
            kind: Some(pb::record::Kind::Heartbeat(pb::Heartbeat { ts: 42 })),
        };
        assert_eq!(hb.ts(), Some(crate::Timestamp::from_nanos(42)));
        let start = pb::Record {
            kind: Some(pb::record::Kind::EpochStart(pb::EpochStart { epoch: None })),
        };
        assert_eq!(start.ts(), None);
        assert_eq!(pb::Record { kind: None }.ts(), None);
    }
}
