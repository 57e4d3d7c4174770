//! The bytes of a replicated journal's log on disk: segment headers, write frames and the
//! parts inside them (RAFT.md §8, "On disk").
//!
//! ```text
//! segment = header block ‖ write*                        (every write block-aligned)
//! header  = magic[8] "JDBRAFT\0" ‖ version u32 ‖ block_size u32 ‖ seq u64
//!           ‖ cluster u64 ‖ group u64 ‖ replica u64 ‖ crc u32 (over the preceding 48 bytes)
//!           ‖ zero padding to block_size
//! write   = magic u32 "JRWR" ‖ body_len u32 ‖ crc u32 ‖ 0u32
//!           crc = CRC-32 of seq ‖ offset (where the write lies) ‖ body_len ‖ body
//!           ‖ body ‖ zero padding to the next block boundary
//! body    = part+
//! part    = 1u8 ‖ count u32 ‖ entry*                     entries, consecutive indexes
//!         | 2u8 ‖ state                                  the hard state and log metadata
//!         | 3u8 ‖ index u64 ‖ term u64 ‖ first_lsn u64   a snapshot: the log is empty, at index
//! entry   = index u64 ‖ term u64 ‖ kind u8 ‖ data_len u32 ‖ context_len u32
//!           ‖ crc u32 (over the preceding 25 bytes ‖ data ‖ context) ‖ data ‖ context
//! state   = term u64 ‖ vote u64 ‖ commit u64 ‖ applied u64
//!           ‖ truncated_index u64 ‖ truncated_term u64 ‖ first_lsn u64
//!           ‖ count u32 ‖ (index u64 ‖ conf)*
//! conf    = voters ‖ learners ‖ voters_outgoing ‖ learners_next ‖ auto_leave u8
//!           where each list = count u32 ‖ id u64*
//! ```
//! All integers little-endian. One write is what one fsync makes durable: a crash tears at
//! most the last write, and a torn write is refused as a whole by its checksum, so the
//! entries and hard state of one Ready become durable together or not at all (a tail that
//! the write truncates comes back with it). Entries carry a checksum of their own so that
//! one can be read back alone. Decoding never panics and never allocates more than the
//! bytes it was given can hold.

use bytes::{Buf, Bytes};

use crate::entry::{EntryBatch, EntryError};
use journaldb_proto::Lsn;

use raft::prelude::{ConfState, Entry, EntryType, HardState};

/// Identifies a segment of a replicated journal's log.
pub const SEGMENT_MAGIC: [u8; 8] = *b"JDBRAFT\0";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header that carry data.
pub const SEGMENT_HEADER_BYTES: usize = 52;
/// Identifies a write frame ("JRWR").
pub const WRITE_MAGIC: u32 = u32::from_le_bytes(*b"JRWR");
/// Bytes of a write frame's header.
pub const WRITE_HEADER_BYTES: usize = 16;
/// Bytes of an entry's header.
pub const ENTRY_HEADER_BYTES: usize = 29;

const PART_ENTRIES: u8 = 1;
const PART_STATE: u8 = 2;
const PART_RESET: u8 = 3;

/// Whose log a segment is: a replica of one group of one cluster. A log opened under
/// another identity is refused, so a directory cannot be mistaken for another replica's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    /// The cluster.
    pub cluster: u64,
    /// The Raft group (a partition's journal, or the metadata group).
    pub group: u64,
    /// The Raft id of this replica in the group.
    pub replica: u64,
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Alignment of everything in the segment.
    pub block_size: u32,
    /// The segment's place in the log: one more than the previous segment's.
    pub seq: u64,
    /// Whose log it is.
    pub id: LogId,
}

/// Why a segment header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a log segment header (wrong magic, bad checksum, or short).
    Invalid(String),
    /// A valid header of another format version.
    UnsupportedVersion(u32),
}

impl SegmentHeader {
    /// The header block: the encoded header followed by zeros up to `block_size`.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut block = Vec::with_capacity(self.block_size as usize);
        block.extend_from_slice(&SEGMENT_MAGIC);
        block.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        block.extend_from_slice(&self.block_size.to_le_bytes());
        for v in [self.seq, self.id.cluster, self.id.group, self.id.replica] {
            block.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&block);
        block.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(block.len(), SEGMENT_HEADER_BYTES);
        block.resize(self.block_size as usize, 0);
        block
    }

    /// Decodes a header from the first bytes of a segment.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let Some(head) = bytes.get(..SEGMENT_HEADER_BYTES) else {
            return Err(HeaderError::Invalid(format!(
                "file is {} bytes, shorter than a segment header",
                bytes.len()
            )));
        };
        if head[..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Invalid(
                "not a replicated log segment (bad magic)".into(),
            ));
        }
        let mut cur = &head[8..];
        let version = cur.get_u32_le();
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        if crc32fast::hash(&head[..48])
            != u32::from_le_bytes([head[48], head[49], head[50], head[51]])
        {
            return Err(HeaderError::Invalid(
                "segment header checksum mismatch".into(),
            ));
        }
        let block_size = cur.get_u32_le();
        if !block_size.is_power_of_two() || !(512..=1 << 20).contains(&block_size) {
            return Err(HeaderError::Invalid(format!(
                "invalid block size {block_size}"
            )));
        }
        Ok(SegmentHeader {
            block_size,
            seq: cur.get_u64_le(),
            id: LogId {
                cluster: cur.get_u64_le(),
                group: cur.get_u64_le(),
                replica: cur.get_u64_le(),
            },
        })
    }
}

/// What the log remembers beside its entries: Raft's hard state, how far the application
/// has applied, where the log was truncated, and the configurations the log has been
/// through (`confs`, by the index at which each took effect; the first is the one in force
/// at the truncation point). Written in the same write as the entries it goes with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogState {
    /// Raft's term, vote and commit index.
    pub hard_state: HardState,
    /// The highest index the application has applied (≤ commit).
    pub applied: u64,
    /// The last index removed from the front of the log, and its term.
    pub truncated: (u64, u64),
    /// The Lsn of the first record after the truncation point: where the records of the
    /// entries the log still holds start counting.
    pub first_lsn: Lsn,
    /// `(index, configuration)` in increasing index order; never empty once bootstrapped.
    pub confs: Vec<(u64, ConfState)>,
}

impl LogState {
    /// The configuration in force at `index`: the last one that took effect at or before it.
    pub fn conf_at(&self, index: u64) -> ConfState {
        self.confs
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .or(self.confs.first())
            .map(|(_, conf)| conf.clone())
            .unwrap_or_default()
    }
}

/// One part of a write, as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Entries with consecutive indexes; if the first is at or below the log's last index,
    /// it replaces the tail from there.
    Entries(Vec<Entry>),
    /// The log's state from here on.
    State(LogState),
    /// A snapshot was installed: every entry is gone and the log ends at `(index, term)`.
    Reset {
        /// The snapshot's index.
        index: u64,
        /// The snapshot's term.
        term: u64,
        /// The Lsn of the first record after it.
        first_lsn: u64,
    },
}

/// One part of a write, as read back: entries are located, not copied.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadPart {
    /// Entries with consecutive indexes.
    Entries(Vec<EntrySpan>),
    /// The log's state from here on.
    State(LogState),
    /// A snapshot was installed.
    Reset {
        /// The snapshot's index.
        index: u64,
        /// The snapshot's term.
        term: u64,
        /// The Lsn of the first record after it.
        first_lsn: u64,
    },
}

/// Where an entry lies inside a write's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntrySpan {
    /// Its index.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// Offset of its header from the start of the body.
    pub offset: u32,
    /// Its encoded length, header included.
    pub len: u32,
    /// The first Lsn and the number of its records, if it carries a journal batch.
    pub records: Option<(u64, u64)>,
}

/// Rounds `n` up to a multiple of `block` (a power of two).
pub fn align_up(n: u64, block: u64) -> u64 {
    debug_assert!(block.is_power_of_two());
    (n + block - 1) & !(block - 1)
}

/// Bytes `entry` takes when encoded.
pub fn entry_len(entry: &Entry) -> usize {
    ENTRY_HEADER_BYTES + entry.data.len() + entry.context.len()
}

/// Where a write lies: its segment and offset, which its checksum covers too, so that
/// bytes that imitate a write (inside a record, or a stale copy) check only where they
/// were written as a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteAt {
    /// The segment's sequence number.
    pub seq: u64,
    /// The write's offset in it.
    pub offset: u64,
}

fn write_crc(at: WriteAt, body_len: u32, body: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&at.seq.to_le_bytes());
    crc.update(&at.offset.to_le_bytes());
    crc.update(&body_len.to_le_bytes());
    crc.update(body);
    crc.finalize()
}

/// Appends one write frame holding `parts`, to lie at `at`, to `out`, padded with zeros to
/// `block_size`. Returns, for each entry, its offset from the start of the frame and its
/// length.
pub fn encode_write(
    out: &mut Vec<u8>,
    parts: &[&Part],
    block_size: u64,
    at: WriteAt,
) -> Vec<(u64, u32)> {
    let start = out.len();
    out.extend_from_slice(&WRITE_MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 12]); // body_len, crc, reserved: filled below
    let mut spans = Vec::new();
    for part in parts {
        match part {
            Part::Entries(entries) => {
                out.push(PART_ENTRIES);
                out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for entry in entries {
                    let at = out.len();
                    encode_entry(out, entry);
                    spans.push(((at - start) as u64, (out.len() - at) as u32));
                }
            }
            Part::State(state) => {
                out.push(PART_STATE);
                encode_state(out, state);
            }
            Part::Reset {
                index,
                term,
                first_lsn,
            } => {
                out.push(PART_RESET);
                for v in [index, term, first_lsn] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    let body_len = (out.len() - start - WRITE_HEADER_BYTES) as u32;
    let crc = write_crc(at, body_len, &out[start + WRITE_HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&body_len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    let end = start as u64 + align_up((out.len() - start) as u64, block_size);
    out.resize(end as usize, 0);
    spans
}

fn encode_entry(out: &mut Vec<u8>, entry: &Entry) {
    let at = out.len();
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.push(entry.entry_type as u8);
    out.extend_from_slice(&(entry.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(entry.context.len() as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[at..]);
    crc.update(&entry.data);
    crc.update(&entry.context);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&entry.data);
    out.extend_from_slice(&entry.context);
}

fn encode_state(out: &mut Vec<u8>, state: &LogState) {
    let hs = &state.hard_state;
    for v in [
        hs.term,
        hs.vote,
        hs.commit,
        state.applied,
        state.truncated.0,
        state.truncated.1,
        state.first_lsn.get(),
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(state.confs.len() as u32).to_le_bytes());
    for (index, conf) in &state.confs {
        out.extend_from_slice(&index.to_le_bytes());
        for ids in [
            &conf.voters,
            &conf.learners,
            &conf.voters_outgoing,
            &conf.learners_next,
        ] {
            out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for id in ids {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out.push(u8::from(conf.auto_leave));
    }
}

/// A write frame's header, not yet checked against its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteHeader {
    /// Bytes of body after the header.
    pub body_len: u32,
    /// The stored checksum.
    pub crc: u32,
}

impl WriteHeader {
    /// Decodes a write header; `None` if the bytes are short or lack the magic.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut cur = bytes.get(..WRITE_HEADER_BYTES)?;
        if cur.get_u32_le() != WRITE_MAGIC {
            return None;
        }
        let body_len = cur.get_u32_le();
        let crc = cur.get_u32_le();
        (cur.get_u32_le() == 0).then_some(WriteHeader { body_len, crc })
    }

    /// Bytes the whole write occupies on disk, padding included.
    pub fn disk_len(&self, block_size: u64) -> u64 {
        align_up(
            WRITE_HEADER_BYTES as u64 + u64::from(self.body_len),
            block_size,
        )
    }

    /// Checks `body`, read at `at`, against the checksum and splits it into parts.
    pub fn decode_body(&self, body: &[u8], at: WriteAt) -> Result<Vec<ReadPart>, String> {
        if body.len() != self.body_len as usize {
            return Err(format!(
                "write body is {} bytes, expected {}",
                body.len(),
                self.body_len
            ));
        }
        if write_crc(at, self.body_len, body) != self.crc {
            return Err("write checksum mismatch".into());
        }
        decode_parts(body)
    }
}

/// A cursor over a body that refuses, rather than panics on, reads past its end.
struct Cursor<'a> {
    whole: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> usize {
        self.whole.len() - self.rest.len()
    }

    fn need(&self, n: usize, what: &str) -> Result<(), String> {
        if self.rest.len() < n {
            return Err(format!("{what} runs past the end of the write"));
        }
        Ok(())
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        self.need(1, what)?;
        Ok(self.rest.get_u8())
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.need(4, what)?;
        Ok(self.rest.get_u32_le())
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.need(8, what)?;
        Ok(self.rest.get_u64_le())
    }

    /// A count of items each at least `min_item` bytes long, refused if the rest cannot
    /// hold that many (so nothing is allocated for a count the bytes do not back).
    fn count(&mut self, min_item: usize, what: &str) -> Result<usize, String> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item) > self.rest.len() {
            return Err(format!("{what} {n} exceeds what the write holds"));
        }
        Ok(n)
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        self.need(n, what)?;
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }
}

fn decode_parts(body: &[u8]) -> Result<Vec<ReadPart>, String> {
    let mut cur = Cursor {
        whole: body,
        rest: body,
    };
    let mut parts = Vec::new();
    while !cur.rest.is_empty() {
        let part = match cur.u8("part tag")? {
            PART_ENTRIES => {
                let n = cur.count(ENTRY_HEADER_BYTES, "entry count")?;
                if n == 0 {
                    return Err("an entries part with no entries".into());
                }
                let mut spans = Vec::with_capacity(n);
                for _ in 0..n {
                    let offset = cur.offset();
                    let header = cur.skip(ENTRY_HEADER_BYTES, "entry header")?;
                    let (index, term, kind, data_len, context_len) = entry_header(header)?;
                    let data = cur.skip(data_len, "entry data")?;
                    cur.skip(context_len, "entry context")?;
                    let records =
                        batch_span(kind, data).map_err(|e| format!("entry {index}: {e}"))?;
                    if let Some(prev) = spans.last().map(|s: &EntrySpan| s.index)
                        && prev.checked_add(1) != Some(index)
                    {
                        return Err(format!("entry {index} follows entry {prev}"));
                    }
                    spans.push(EntrySpan {
                        index,
                        term,
                        offset: offset as u32,
                        len: (cur.offset() - offset) as u32,
                        records,
                    });
                }
                ReadPart::Entries(spans)
            }
            PART_STATE => ReadPart::State(decode_state(&mut cur)?),
            PART_RESET => ReadPart::Reset {
                index: cur.u64("snapshot index")?,
                term: cur.u64("snapshot term")?,
                first_lsn: cur.u64("snapshot Lsn")?,
            },
            tag => return Err(format!("unknown part tag {tag}")),
        };
        parts.push(part);
    }
    if parts.is_empty() {
        return Err("a write with no parts".into());
    }
    Ok(parts)
}

/// The first Lsn and record count of an entry's journal batch: a normal entry with data
/// carries one (raft-rs's own no-op entries carry none, nor do configuration changes).
pub fn batch_span(kind: EntryType, data: &[u8]) -> Result<Option<(u64, u64)>, EntryError> {
    if kind != EntryType::EntryNormal || data.is_empty() {
        return Ok(None);
    }
    let (first, count) = EntryBatch::span(data)?;
    Ok(Some((first.get(), count)))
}

/// `(index, term, kind, data_len, context_len)` of an entry header, the kind checked.
fn entry_header(header: &[u8]) -> Result<(u64, u64, EntryType, usize, usize), String> {
    let mut h = header;
    let index = h.get_u64_le();
    let term = h.get_u64_le();
    let kind = match h.get_u8() {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        k => return Err(format!("entry {index}: unknown entry kind {k}")),
    };
    let data_len = h.get_u32_le() as usize;
    let context_len = h.get_u32_le() as usize;
    if index == 0 || term == 0 {
        return Err(format!("entry at index {index} with term {term}"));
    }
    Ok((index, term, kind, data_len, context_len))
}

/// Decodes one entry from exactly its bytes (as located by an [`EntrySpan`]), checking its
/// own checksum.
pub fn decode_entry(bytes: &Bytes) -> Result<Entry, String> {
    let Some(header) = bytes.get(..ENTRY_HEADER_BYTES) else {
        return Err("entry shorter than its header".into());
    };
    let (index, term, kind, data_len, context_len) = entry_header(header)?;
    if bytes.len() != ENTRY_HEADER_BYTES + data_len + context_len {
        return Err(format!(
            "entry {index} is {} bytes, its header says {}",
            bytes.len(),
            ENTRY_HEADER_BYTES + data_len + context_len
        ));
    }
    let stored = u32::from_le_bytes([header[25], header[26], header[27], header[28]]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[..25]);
    crc.update(&bytes[ENTRY_HEADER_BYTES..]);
    if crc.finalize() != stored {
        return Err(format!("entry {index}: checksum mismatch"));
    }
    let data_at = ENTRY_HEADER_BYTES;
    Ok(Entry {
        index,
        term,
        entry_type: kind,
        data: bytes.slice(data_at..data_at + data_len),
        context: bytes.slice(data_at + data_len..),
        ..Entry::default()
    })
}

fn decode_state(cur: &mut Cursor<'_>) -> Result<LogState, String> {
    let hard_state = HardState {
        term: cur.u64("state")?,
        vote: cur.u64("state")?,
        commit: cur.u64("state")?,
        ..HardState::default()
    };
    let applied = cur.u64("state")?;
    let truncated = (cur.u64("state")?, cur.u64("state")?);
    let first_lsn = Lsn::new(cur.u64("state")?);
    let n = cur.count(8 + 4 * 4 + 1, "configuration count")?;
    let mut confs = Vec::with_capacity(n);
    for _ in 0..n {
        let index = cur.u64("configuration")?;
        if confs.last().is_some_and(|(prev, _)| *prev >= index) {
            return Err(format!("configurations out of order at index {index}"));
        }
        let mut lists: [Vec<u64>; 4] = Default::default();
        for list in &mut lists {
            let ids = cur.count(8, "configuration size")?;
            *list = (0..ids)
                .map(|_| cur.u64("configuration"))
                .collect::<Result<_, _>>()?;
        }
        let auto_leave = match cur.u8("configuration")? {
            0 => false,
            1 => true,
            v => return Err(format!("auto_leave is {v}")),
        };
        let [voters, learners, voters_outgoing, learners_next] = lists;
        let conf = ConfState {
            voters,
            learners,
            voters_outgoing,
            learners_next,
            auto_leave,
            ..ConfState::default()
        };
        confs.push((index, conf));
    }
    if first_lsn == Lsn::ZERO {
        return Err("a state whose first Lsn is 0".into());
    }
    if truncated.0 > applied || applied > hard_state.commit {
        return Err(format!(
            "state out of order: truncated {}, applied {applied}, commit {}",
            truncated.0, hard_state.commit
        ));
    }
    Ok(LogState {
        hard_state,
        applied,
        truncated,
        first_lsn,
        confs,
    })
}

#[cfg(test)]
mod tests;
