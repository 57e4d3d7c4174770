//! The on-disk format: segment headers, batch frames and record frames (ARCHITECTURE §5).
//!
//! ```text
//! segment  = header block ‖ batch*                       (every part block-aligned)
//! header   = magic[8] "JDBJRNL\0" ‖ version u32 ‖ block_size u32 ‖ first_lsn u64
//!            ‖ crc u32 (over the preceding 24 bytes) ‖ zero padding to block_size
//! batch    = magic u32 "JBAT" ‖ count u32 ‖ byte_len u32 ‖ crc u32 ‖ first_lsn u64
//!            ‖ record* (byte_len bytes) ‖ zero padding to the next block boundary
//!            crc = CRC-32 of count ‖ byte_len ‖ first_lsn ‖ records
//! record   = len u32 ‖ crc u32 (over len ‖ payload) ‖ payload
//! ```
//! All integers little-endian. Batches are padded to whole blocks so that a batch write
//! never rewrites a block holding an earlier, durable batch: a torn write can only damage
//! the batch being written. Parsing never panics on bad bytes; it reports why.

use bytes::{BufMut, Bytes, BytesMut};
use journaldb_proto::Lsn;

/// Identifies a journal segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"JDBJRNL\0";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header that carry data (the rest of its block is zero).
pub const SEGMENT_HEADER_BYTES: usize = 28;
/// Identifies a batch frame ("JBAT").
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"JBAT");
/// Bytes of a batch header.
pub const BATCH_HEADER_BYTES: usize = 24;
/// Bytes of a record frame header.
pub const RECORD_HEADER_BYTES: usize = 8;

/// Rounds `n` up to a multiple of `block` (a power of two).
pub fn align_up(n: u64, block: u64) -> u64 {
    debug_assert!(block.is_power_of_two());
    (n + block - 1) & !(block - 1)
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Alignment of everything in the segment.
    pub block_size: u32,
    /// Lsn of the segment's first record.
    pub first_lsn: Lsn,
}

/// Why a segment header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a journal segment header (wrong magic, bad checksum, or short).
    Invalid(String),
    /// A valid journal header of another format version.
    UnsupportedVersion(u32),
}

impl SegmentHeader {
    /// The header block: the encoded header followed by zeros up to `block_size`.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut block = Vec::with_capacity(self.block_size as usize);
        block.extend_from_slice(&SEGMENT_MAGIC);
        block.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        block.extend_from_slice(&self.block_size.to_le_bytes());
        block.extend_from_slice(&self.first_lsn.get().to_le_bytes());
        let crc = crc32fast::hash(&block);
        block.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(block.len(), SEGMENT_HEADER_BYTES);
        block.resize(self.block_size as usize, 0);
        block
    }

    /// Decodes a header from the first bytes of a segment.
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(HeaderError::Invalid(format!(
                "file is {} bytes, shorter than a segment header",
                bytes.len()
            )));
        }
        if bytes[..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Invalid(
                "not a journal segment (bad magic)".into(),
            ));
        }
        let version = le_u32(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let crc = le_u32(bytes, 24);
        if crc32fast::hash(&bytes[..24]) != crc {
            return Err(HeaderError::Invalid(
                "segment header checksum mismatch".into(),
            ));
        }
        let block_size = le_u32(bytes, 12);
        if !block_size.is_power_of_two() || !(512..=1 << 20).contains(&block_size) {
            return Err(HeaderError::Invalid(format!(
                "invalid block size {block_size}"
            )));
        }
        Ok(SegmentHeader {
            block_size,
            first_lsn: Lsn::new(le_u64(bytes, 16)),
        })
    }
}

/// Frames one record: `len ‖ crc ‖ payload`.
pub fn frame_record(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(RECORD_HEADER_BYTES + payload.len());
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    buf.put_slice(&len);
    buf.put_u32_le(crc.finalize());
    buf.put_slice(payload);
    buf.freeze()
}

/// Appends one batch (header, framed records, zero padding to `block_size`) to `out`.
/// `records` are frames from [`frame_record`].
pub fn encode_batch(out: &mut Vec<u8>, first_lsn: Lsn, records: &[Bytes], block_size: u64) {
    let start = out.len();
    let byte_len: usize = records.iter().map(Bytes::len).sum();
    let count = records.len() as u32;
    let byte_len = byte_len as u32;
    out.extend_from_slice(&BATCH_MAGIC.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&byte_len.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled below
    out.extend_from_slice(&first_lsn.get().to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&count.to_le_bytes());
    crc.update(&byte_len.to_le_bytes());
    crc.update(&first_lsn.get().to_le_bytes());
    for r in records {
        crc.update(r);
        out.extend_from_slice(r);
    }
    out[start + 12..start + 16].copy_from_slice(&crc.finalize().to_le_bytes());
    let end = start as u64 + align_up((out.len() - start) as u64, block_size);
    out.resize(end as usize, 0);
}

/// A batch header read from disk, not yet checked against its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Number of records.
    pub count: u32,
    /// Bytes of record frames after the header.
    pub byte_len: u32,
    /// The stored checksum.
    pub crc: u32,
    /// Lsn of the first record.
    pub first_lsn: Lsn,
}

impl BatchHeader {
    /// Decodes a batch header; `None` if the bytes are short or lack the batch magic.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < BATCH_HEADER_BYTES || le_u32(bytes, 0) != BATCH_MAGIC {
            return None;
        }
        Some(BatchHeader {
            count: le_u32(bytes, 4),
            byte_len: le_u32(bytes, 8),
            crc: le_u32(bytes, 12),
            first_lsn: Lsn::new(le_u64(bytes, 16)),
        })
    }

    /// Bytes the whole batch occupies on disk, padding included.
    pub fn disk_len(&self, block_size: u64) -> u64 {
        align_up(
            BATCH_HEADER_BYTES as u64 + u64::from(self.byte_len),
            block_size,
        )
    }

    /// Checks `body` (the `byte_len` bytes after the header) against the checksum and
    /// splits it into record payloads.
    pub fn decode_body(&self, body: &Bytes) -> Result<Vec<Bytes>, String> {
        if body.len() != self.byte_len as usize {
            return Err(format!(
                "batch body is {} bytes, expected {}",
                body.len(),
                self.byte_len
            ));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.count.to_le_bytes());
        crc.update(&self.byte_len.to_le_bytes());
        crc.update(&self.first_lsn.get().to_le_bytes());
        crc.update(body);
        if crc.finalize() != self.crc {
            return Err("batch checksum mismatch".into());
        }
        let mut records = Vec::with_capacity(self.count as usize);
        let mut at = 0usize;
        for i in 0..self.count {
            let Some(header) = body.get(at..at + RECORD_HEADER_BYTES) else {
                return Err(format!("record {i} of the batch runs past its end"));
            };
            let len = le_u32(header, 0) as usize;
            let stored = le_u32(header, 4);
            let Some(payload) = body.get(at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + len)
            else {
                return Err(format!("record {i} of the batch runs past its end"));
            };
            let mut crc = crc32fast::Hasher::new();
            crc.update(&header[..4]);
            crc.update(payload);
            if crc.finalize() != stored {
                return Err(format!("record {i} checksum mismatch"));
            }
            let start = at + RECORD_HEADER_BYTES;
            records.push(body.slice(start..start + len));
            at = start + len;
        }
        if at != body.len() {
            return Err(format!(
                "{} stray bytes after the batch's records",
                body.len() - at
            ));
        }
        Ok(records)
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_and_is_block_aligned() {
        let records = [
            frame_record(b"one"),
            frame_record(b""),
            frame_record(&[7; 600]),
        ];
        let mut out = vec![];
        encode_batch(&mut out, Lsn::new(41), &records, 512);
        assert_eq!(out.len(), 1024);
        let header = BatchHeader::decode(&out).unwrap();
        assert_eq!((header.count, header.first_lsn), (3, Lsn::new(41)));
        assert_eq!(header.disk_len(512), 1024);
        let body = Bytes::copy_from_slice(
            &out[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + header.byte_len as usize],
        );
        let payloads = header.decode_body(&body).unwrap();
        assert_eq!(payloads, vec![&b"one"[..], &b""[..], &[7; 600][..]]);
    }

    #[test]
    fn any_flipped_bit_in_a_batch_is_detected() {
        let mut out = vec![];
        encode_batch(&mut out, Lsn::new(1), &[frame_record(b"payload")], 512);
        let used = BATCH_HEADER_BYTES + RECORD_HEADER_BYTES + 7;
        for bit in 0..used * 8 {
            let mut damaged = out.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let ok = BatchHeader::decode(&damaged).is_some_and(|h| {
                let end = BATCH_HEADER_BYTES + h.byte_len as usize;
                damaged.len() >= end
                    && h.decode_body(&Bytes::copy_from_slice(&damaged[BATCH_HEADER_BYTES..end]))
                        .is_ok()
            });
            assert!(!ok, "flipping bit {bit} went unnoticed");
        }
    }

    #[test]
    fn segment_headers_check_magic_version_and_crc() {
        let h = SegmentHeader {
            block_size: 4096,
            first_lsn: Lsn::new(9),
        };
        let block = h.encode_block();
        assert_eq!(block.len(), 4096);
        assert_eq!(SegmentHeader::decode(&block), Ok(h));
        let mut v2 = block.clone();
        v2[8] = 2;
        assert_eq!(
            SegmentHeader::decode(&v2),
            Err(HeaderError::UnsupportedVersion(2))
        );
        let mut bad = block.clone();
        bad[20] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&bad),
            Err(HeaderError::Invalid(_))
        ));
        assert!(matches!(
            SegmentHeader::decode(&[0; 4096]),
            Err(HeaderError::Invalid(_))
        ));
    }
}
