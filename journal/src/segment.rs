//! One segment file: naming, scanning its batches, and the in-memory index of where each
//! batch lies. Recovery decisions (truncate a torn tail, refuse corruption) are made by
//! the caller from what [`scan`] reports; this module never changes a file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use journaldb_proto::Lsn;
use parking_lot::RwLock;

use crate::disk::DiskFile;
use crate::error::{Error, Result};
use crate::format::{BATCH_HEADER_BYTES, BatchHeader, align_up};

/// File name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".jseg";

/// The file name of the segment whose first record is `first`: zero-padded so names sort
/// in Lsn order.
pub fn file_name(first: Lsn) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first.get())
}

/// The first Lsn encoded in a segment file name; `None` for other files.
pub fn parse_file_name(name: &str) -> Option<std::result::Result<Lsn, ()>> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    Some(match stem.parse::<u64>() {
        Ok(v) if stem.len() == 20 => Ok(Lsn::new(v)),
        _ => Err(()),
    })
}

/// Where one batch lies in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLoc {
    /// Lsn of its first record.
    pub first_lsn: Lsn,
    /// Number of records.
    pub count: u32,
    /// Byte offset of its header.
    pub offset: u64,
}

impl BatchLoc {
    /// The Lsn after its last record.
    pub fn end_lsn(&self) -> Lsn {
        self.first_lsn.add(u64::from(self.count))
    }
}

/// An open segment.
#[derive(Debug)]
pub struct Segment {
    /// Lsn of its first record (also in its header and file name).
    pub first_lsn: Lsn,
    /// Its path, for error messages and removal.
    pub path: PathBuf,
    /// The open file.
    pub file: Arc<dyn DiskFile>,
    /// Alignment of its batches.
    pub block_size: u64,
    /// Its batches; `None` for a sealed segment not read since open (indexed on first use).
    pub index: RwLock<Option<Vec<BatchLoc>>>,
}

impl Segment {
    /// Builds the index of a sealed segment on first use, checking that it holds exactly the
    /// records `self.first_lsn .. end` and nothing after them.
    pub(crate) fn build_index(&self, end: Lsn) -> Result<()> {
        if self.index.read().is_some() {
            return Ok(());
        }
        let scan = scan(&*self.file, &self.path, self.block_size, self.first_lsn)?;
        let corrupt = |offset, reason| Error::Corruption {
            segment: self.path.clone(),
            offset,
            reason,
        };
        match scan.stop {
            // A sealed segment ends with the zeros written ahead of its last batch.
            Some(Stop::Invalid { offset, .. })
                if scan.next_lsn == end && is_zero_from(&*self.file, &self.path, offset)? => {}
            Some(Stop::Invalid { offset, reason } | Stop::Misplaced { offset, reason }) => {
                return Err(corrupt(offset, reason));
            }
            None if scan.next_lsn != end => {
                return Err(corrupt(
                    scan.end_offset,
                    format!(
                        "sealed segment ends at {}, but the next segment starts at {end}",
                        scan.next_lsn
                    ),
                ));
            }
            None => {}
        }
        *self.index.write() = Some(scan.batches);
        Ok(())
    }

    /// Reads and checks the batch at `loc`, returning its record payloads.
    pub fn read_batch(&self, loc: BatchLoc) -> Result<Vec<Bytes>> {
        let corrupt = |reason: String| Error::Corruption {
            segment: self.path.clone(),
            offset: loc.offset,
            reason,
        };
        let (header, records) =
            read_batch_at(&*self.file, &self.path, loc.offset, None)?.map_err(corrupt)?;
        if header.first_lsn != loc.first_lsn || header.count != loc.count {
            return Err(corrupt(format!(
                "batch holds {} records from {}, expected {} from {}",
                header.count, header.first_lsn, loc.count, loc.first_lsn
            )));
        }
        Ok(records)
    }
}

/// Why a scan stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The bytes at `offset` are not a valid batch: what a torn write leaves, or damage.
    Invalid {
        /// Where the invalid batch starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A checksum-valid batch that does not continue the log (wrong Lsn, no records):
    /// no crash produces this.
    Misplaced {
        /// Where the batch starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// What [`scan`] found.
#[derive(Debug)]
pub struct Scan {
    /// The valid batches from the start, in order.
    pub batches: Vec<BatchLoc>,
    /// Offset just past the last valid batch.
    pub end_offset: u64,
    /// Lsn after the last valid record.
    pub next_lsn: Lsn,
    /// Why the scan stopped early, if it did.
    pub stop: Option<Stop>,
}

/// Reads every batch of a segment from its first block on, checking checksums and Lsn
/// density, until the end of the file or the first batch that is not valid.
pub fn scan(file: &dyn DiskFile, path: &Path, block_size: u64, first_lsn: Lsn) -> Result<Scan> {
    let len = file_len(file, path)?;
    let mut scan = Scan {
        batches: Vec::new(),
        end_offset: block_size,
        next_lsn: first_lsn,
        stop: None,
    };
    while scan.end_offset < len {
        let offset = scan.end_offset;
        let batch = match read_batch_at(file, path, offset, Some(len))? {
            Ok((batch, _)) => batch,
            Err(reason) => {
                scan.stop = Some(Stop::Invalid { offset, reason });
                break;
            }
        };
        if batch.first_lsn != scan.next_lsn || batch.count == 0 {
            scan.stop = Some(Stop::Misplaced {
                offset,
                reason: format!(
                    "valid batch of {} records from {}, but the log continues at {}",
                    batch.count, batch.first_lsn, scan.next_lsn
                ),
            });
            break;
        }
        scan.batches.push(BatchLoc {
            first_lsn: batch.first_lsn,
            count: batch.count,
            offset,
        });
        scan.next_lsn = batch.first_lsn.add(u64::from(batch.count));
        scan.end_offset = offset + batch.disk_len(block_size);
    }
    Ok(scan)
}

/// The offset of the first checksum-valid batch at a `block_size`-aligned offset in
/// `from..`, if any. After an invalid batch, finding one means the damage is not a torn
/// tail but corruption in the middle of the log.
pub fn find_valid_batch(
    file: &dyn DiskFile,
    path: &Path,
    block_size: u64,
    from: u64,
) -> Result<Option<u64>> {
    let len = file_len(file, path)?;
    let mut offset = align_up(from, block_size);
    while offset < len {
        if read_batch_at(file, path, offset, Some(len))?.is_ok() {
            return Ok(Some(offset));
        }
        offset += block_size;
    }
    Ok(None)
}

/// Whether every byte of the file from `offset` on is zero.
pub fn is_zero_from(file: &dyn DiskFile, path: &Path, offset: u64) -> Result<bool> {
    const CHUNK: u64 = 64 * 1024;
    let len = file_len(file, path)?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut at = offset;
    while at < len {
        let n = CHUNK.min(len - at) as usize;
        file.read_exact_at(&mut buf[..n], at)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

fn file_len(file: &dyn DiskFile, path: &Path) -> Result<u64> {
    file.len()
        .map_err(|e| Error::io(format!("reading the length of {}", path.display()), e))
}

/// Reads and checks the batch at `offset`: `Ok(Err(reason))` if it is not a valid batch.
/// With `len` (the file length) a batch cut short by the end of the file is invalid;
/// without it, reading past the end is an I/O error.
fn read_batch_at(
    file: &dyn DiskFile,
    path: &Path,
    offset: u64,
    len: Option<u64>,
) -> Result<std::result::Result<(BatchHeader, Vec<Bytes>), String>> {
    let io = |e| Error::io(format!("reading {}", path.display()), e);
    let len = len.unwrap_or(u64::MAX);
    if offset + BATCH_HEADER_BYTES as u64 > len {
        return Ok(Err("file ends inside a batch header".into()));
    }
    let mut head = [0u8; BATCH_HEADER_BYTES];
    file.read_exact_at(&mut head, offset).map_err(io)?;
    let Some(header) = BatchHeader::decode(&head) else {
        return Ok(Err("no batch header".into()));
    };
    let body_end = offset + BATCH_HEADER_BYTES as u64 + u64::from(header.byte_len);
    if body_end > len {
        return Ok(Err("file ends inside the batch".into()));
    }
    let mut body = vec![0u8; header.byte_len as usize];
    file.read_exact_at(&mut body, offset + BATCH_HEADER_BYTES as u64)
        .map_err(io)?;
    Ok(header
        .decode_body(&Bytes::from(body))
        .map(|records| (header, records)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_lsn_order_and_parse_back() {
        assert_eq!(file_name(Lsn::new(42)), "00000000000000000042.jseg");
        assert!(file_name(Lsn::new(9)) < file_name(Lsn::new(10)));
        assert_eq!(
            parse_file_name(&file_name(Lsn::new(7))),
            Some(Ok(Lsn::new(7)))
        );
        assert_eq!(parse_file_name("LOCK"), None);
        assert_eq!(parse_file_name("12.jseg"), Some(Err(())));
    }
}
