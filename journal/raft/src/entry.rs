//! [`EntryBatch`]: what one Raft entry of a journal carries — one group-commit batch of
//! records (the shared RAFT.md §8, "Entry = one group-commit batch"). The leader encodes the
//! batch it proposes; every replica stores `Entry.data` verbatim and decodes it to hand the
//! records to readers. raft-rs's own entries (a new leader's no-op, configuration changes)
//! carry no batch: callers skip entries whose data is empty.
//!
//! Layout, little-endian: `[version u8 = 1][first_lsn u64][count u32]` then `count` times
//! `[len u32][record bytes]`. Nothing may follow the last record. A replica trusts no
//! field: every length is checked against what is left before anything is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use journaldb_proto::Lsn;

/// The format version written.
const VERSION: u8 = 1;

/// Bytes before the first record.
const HEADER_BYTES: usize = 1 + 8 + 4;

/// Records of one journal batch and the Lsn of the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryBatch {
    /// Lsn of the first record; the next ones follow densely.
    pub first_lsn: Lsn,
    /// The records, each an encoded `pb::Record`.
    pub records: Vec<Bytes>,
}

/// Entry data that is not a batch this format wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// Shorter than its header says.
    #[error("entry data ends early: {needed} more bytes needed at offset {offset}")]
    Truncated {
        /// Where the missing bytes start.
        offset: usize,
        /// How many are missing at least.
        needed: usize,
    },
    /// Written by a format this build does not know.
    #[error("entry data has format version {0}, this build reads version {VERSION}")]
    UnknownVersion(u8),
    /// Bytes after the last record.
    #[error("{0} bytes follow the last record of the entry")]
    TrailingBytes(usize),
    /// A batch of no records, or one starting at Lsn 0 ("no record").
    #[error("entry data holds no records or starts at Lsn 0")]
    Empty,
    /// An entry context that is no [`EntryCommand`] this build knows.
    #[error("entry context of {len} bytes is no command this build knows (tag {tag})")]
    UnknownCommand {
        /// Its first byte.
        tag: u8,
        /// Its length.
        len: usize,
    },
}

/// What an entry asks of every replica that applies it, beside its records: carried in the
/// entry's context, which raft-rs replicates with it (a batch, a new leader's no-op and a
/// configuration change have an empty one). Only a leader proposes one, in its term; every
/// replica acts on it when it applies the entry, so it takes effect only once committed.
///
/// Layout: `[tag u8][version u8 = 1]` then, for tag 1 (truncation), `[before u64 LE]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryCommand {
    /// Drop the records before this Lsn from the front of the log (ARCHITECTURE §5
    /// "Truncation"; TiKV's `CompactLog`): whole entries only, never past what is applied
    /// and durably committed here.
    TruncateBefore(Lsn),
}

const TRUNCATE_TAG: u8 = 1;

impl EntryCommand {
    /// The entry context of this command.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            EntryCommand::TruncateBefore(lsn) => {
                let mut out = Vec::with_capacity(10);
                out.put_u8(TRUNCATE_TAG);
                out.put_u8(VERSION);
                out.put_u64_le(lsn.get());
                out
            }
        }
    }

    /// The command an entry context holds: `None` for an empty one. A replica trusts no
    /// byte of it: anything but a command this build wrote is refused.
    pub fn decode(context: &[u8]) -> Result<Option<EntryCommand>, EntryError> {
        let unknown = || EntryError::UnknownCommand {
            tag: context.first().copied().unwrap_or(0),
            len: context.len(),
        };
        match context {
            [] => Ok(None),
            [TRUNCATE_TAG, VERSION, lsn @ ..] => {
                let lsn = <[u8; 8]>::try_from(lsn).map_err(|_| unknown())?;
                Ok(Some(EntryCommand::TruncateBefore(Lsn::new(
                    u64::from_le_bytes(lsn),
                ))))
            }
            _ => Err(unknown()),
        }
    }
}

impl EntryBatch {
    /// The entry data of this batch.
    pub fn encode(&self) -> Bytes {
        let body: usize = self.records.iter().map(|r| 4 + r.len()).sum();
        let mut out = BytesMut::with_capacity(HEADER_BYTES + body);
        out.put_u8(VERSION);
        out.put_u64_le(self.first_lsn.get());
        out.put_u32_le(u32::try_from(self.records.len()).expect("a batch holds < 2³² records"));
        for record in &self.records {
            out.put_u32_le(u32::try_from(record.len()).expect("a record is < 4 GiB"));
            out.put_slice(record);
        }
        out.freeze()
    }

    /// The batch `data` holds; the records share its memory.
    pub fn decode(data: &Bytes) -> Result<EntryBatch, EntryError> {
        let (first_lsn, count) = Self::span(data)?;
        let mut rest = data.slice(HEADER_BYTES..);
        let records = (0..count)
            .map(|_| {
                let len = rest.get_u32_le() as usize;
                rest.split_to(len)
            })
            .collect();
        Ok(EntryBatch { first_lsn, records })
    }

    /// Checks that `data` is a well-formed batch without copying or allocating, and returns
    /// its first Lsn and record count.
    pub fn span(data: &[u8]) -> Result<(Lsn, u64), EntryError> {
        let truncated = |rest: &[u8], n: usize| EntryError::Truncated {
            offset: data.len() - rest.len(),
            needed: n - rest.len(),
        };
        let mut rest = data;
        if rest.len() < HEADER_BYTES {
            return Err(truncated(rest, HEADER_BYTES));
        }
        let version = rest.get_u8();
        if version != VERSION {
            return Err(EntryError::UnknownVersion(version));
        }
        let first_lsn = Lsn::new(rest.get_u64_le());
        let count = rest.get_u32_le();
        if count == 0 || first_lsn == Lsn::ZERO {
            return Err(EntryError::Empty);
        }
        for _ in 0..count {
            if rest.len() < 4 {
                return Err(truncated(rest, 4));
            }
            let len = rest.get_u32_le() as usize;
            if rest.len() < len {
                return Err(truncated(rest, len));
            }
            rest.advance(len);
        }
        if !rest.is_empty() {
            return Err(EntryError::TrailingBytes(rest.len()));
        }
        Ok((first_lsn, u64::from(count)))
    }

    /// The Lsn after the last record: the next batch's first.
    pub fn end(&self) -> Lsn {
        self.first_lsn.add(self.records.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn batch(rng: &mut ChaCha8Rng) -> EntryBatch {
        let count = rng.random_range(1..20);
        EntryBatch {
            first_lsn: Lsn::new(rng.random_range(1..1_000_000)),
            records: (0..count)
                .map(|_| {
                    let len = rng.random_range(0..300);
                    Bytes::from((0..len).map(|_| rng.random::<u8>()).collect::<Vec<_>>())
                })
                .collect(),
        }
    }

    #[test]
    fn batches_survive_encoding() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..500 {
            let b = batch(&mut rng);
            let decoded = EntryBatch::decode(&b.encode()).unwrap();
            assert_eq!(decoded, b);
            assert_eq!(decoded.end(), b.first_lsn.add(b.records.len() as u64));
        }
    }

    #[test]
    fn every_cut_and_every_addition_is_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..50 {
            let data = batch(&mut rng).encode();
            assert_eq!(
                EntryBatch::span(&data).unwrap().1,
                EntryBatch::decode(&data).unwrap().records.len() as u64
            );
            for cut in 0..data.len() {
                let short = data.slice(..cut);
                assert!(EntryBatch::span(&short).is_err());
                assert!(
                    matches!(
                        EntryBatch::decode(&short),
                        Err(EntryError::Truncated { .. } | EntryError::TrailingBytes(_))
                    ),
                    "a cut at {cut} of {} bytes was accepted",
                    data.len()
                );
            }
            let mut longer = BytesMut::from(&data[..]);
            longer.put_u8(0);
            assert_eq!(
                EntryBatch::decode(&longer.freeze()),
                Err(EntryError::TrailingBytes(1))
            );
        }
    }

    #[test]
    fn commands_survive_encoding_and_nothing_else_is_one() {
        for lsn in [1, 2, 77, u64::MAX] {
            let command = EntryCommand::TruncateBefore(Lsn::new(lsn));
            let context = command.encode();
            assert_eq!(EntryCommand::decode(&context), Ok(Some(command)));
            for cut in 1..context.len() {
                assert!(EntryCommand::decode(&context[..cut]).is_err());
            }
            let mut longer = context.clone();
            longer.push(0);
            assert!(EntryCommand::decode(&longer).is_err());
            let mut other = context.clone();
            other[1] = 2;
            assert!(EntryCommand::decode(&other).is_err());
            other[0] = 9;
            assert!(EntryCommand::decode(&other).is_err());
        }
        assert_eq!(EntryCommand::decode(&[]), Ok(None));
    }

    #[test]
    fn absurd_headers_are_refused_without_allocating() {
        let header = |version: u8, lsn: u64, count: u32| {
            let mut h = BytesMut::new();
            h.put_u8(version);
            h.put_u64_le(lsn);
            h.put_u32_le(count);
            h.freeze()
        };
        assert_eq!(
            EntryBatch::decode(&header(9, 1, 1)),
            Err(EntryError::UnknownVersion(9))
        );
        assert_eq!(EntryBatch::decode(&header(1, 1, 0)), Err(EntryError::Empty));
        assert_eq!(EntryBatch::decode(&header(1, 0, 1)), Err(EntryError::Empty));
        assert!(matches!(
            EntryBatch::decode(&header(1, 1, u32::MAX)),
            Err(EntryError::Truncated { offset: 13, .. })
        ));
        assert!(matches!(
            EntryBatch::decode(&Bytes::new()),
            Err(EntryError::Truncated { offset: 0, .. })
        ));
    }
}
