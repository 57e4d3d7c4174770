//! Reading the journal: [`Reader`] iterates durable records from a position; [`Tail`]
//! follows the journal, yielding each record once it is durable, exactly once, in order.
//!
//! Readers see only durable records: the flusher indexes a batch after its fsync and
//! before advancing the durable point, and readers stop at the durable point. Every batch
//! read is checked again (checksums, Lsns), so damage in a sealed segment surfaces here as
//! [`Error::Corruption`].

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use journaldb_proto::Lsn;

use crate::error::{Error, Result};
use crate::journal::{Journal, Shared};
use crate::segment::{self, BatchLoc, Segment, Stop};

/// Builds the index of a sealed segment on first use, checking that it holds exactly the
/// records `seg.first_lsn .. end` and nothing after them.
pub(crate) fn index_segment(seg: &Segment, end: Lsn) -> Result<()> {
    if seg.index.read().is_some() {
        return Ok(());
    }
    let scan = segment::scan(&*seg.file, &seg.path, seg.block_size, seg.first_lsn)?;
    let corrupt = |offset, reason| Error::Corruption {
        segment: seg.path.clone(),
        offset,
        reason,
    };
    match scan.stop {
        // A sealed segment ends with the zeros written ahead of its last batch.
        Some(Stop::Invalid { offset, .. })
            if scan.next_lsn == end && segment::is_zero_from(&*seg.file, &seg.path, offset)? => {}
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
    *seg.index.write() = Some(scan.batches);
    Ok(())
}

impl Shared {
    /// The payloads of the durable batch holding `lsn`, with the Lsn of the first.
    fn read_batch_holding(&self, lsn: Lsn) -> Result<(Lsn, Vec<Bytes>)> {
        let (seg, end) = {
            let segments = self.segments.read();
            let first = segments[0].first_lsn;
            if lsn < first {
                return Err(Error::Truncated {
                    requested: lsn,
                    first,
                });
            }
            let i = segments.partition_point(|s| s.first_lsn <= lsn) - 1;
            let end = segments.get(i + 1).map(|s| s.first_lsn);
            (segments[i].clone(), end)
        };
        if let Some(end) = end {
            index_segment(&seg, end)?;
        }
        let loc: BatchLoc = {
            let index = seg.index.read();
            let batches = index.as_deref().unwrap_or_default();
            let i = batches.partition_point(|b| b.first_lsn <= lsn);
            match i.checked_sub(1).map(|i| batches[i]) {
                Some(loc) if lsn < loc.end_lsn() => loc,
                _ => unreachable!(
                    "durable {lsn} is not in the index of {}",
                    seg.path.display()
                ),
            }
        };
        Ok((loc.first_lsn, seg.read_batch(loc)?))
    }
}

/// Iterates the durable records from a position, ending at the durable end (as it is
/// when the iterator gets there). Created by [`Journal::read_from`].
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    next: Lsn,
    buffered: VecDeque<(Lsn, Bytes)>,
}

impl Reader {
    /// The Lsn of the next record this reader yields.
    pub fn position(&self) -> Lsn {
        self.next
    }

    /// The next durable record, `Ok(None)` at the durable end.
    pub fn next_record(&mut self) -> Result<Option<(Lsn, Bytes)>> {
        if self.buffered.is_empty() {
            if self.next.get() >= self.shared.durable.end() {
                return Ok(None);
            }
            let (first, payloads) = self.shared.read_batch_holding(self.next)?;
            let skip = self.next.distance_from(first) as usize;
            self.buffered.extend(
                payloads
                    .into_iter()
                    .enumerate()
                    .skip(skip)
                    .map(|(i, p)| (first.add(i as u64), p)),
            );
        }
        let record = self.buffered.pop_front();
        if let Some((lsn, _)) = &record {
            debug_assert_eq!(*lsn, self.next, "Lsns are dense");
            self.next = lsn.next();
        }
        Ok(record)
    }
}

impl Iterator for Reader {
    type Item = Result<(Lsn, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Follows a journal from a position: yields every record once it is durable, exactly
/// once and in Lsn order, and ends (`Ok(None)`) when the journal is closed. Created by
/// [`Journal::tail`].
#[derive(Debug)]
pub struct Tail {
    reader: Reader,
}

impl Tail {
    /// The Lsn of the next record this tail yields.
    pub fn position(&self) -> Lsn {
        self.reader.position()
    }

    /// The next record if it is durable already; `Ok(None)` otherwise (never waits). For
    /// taking the rest of a batch after [`Tail::next`].
    pub fn try_next(&mut self) -> Result<Option<(Lsn, Bytes)>> {
        self.reader.next_record()
    }

    /// The next record, waiting until it is durable. `Ok(None)` once the journal closed
    /// and every durable record was yielded; [`Error::Poisoned`] if it failed.
    pub async fn next(&mut self) -> Result<Option<(Lsn, Bytes)>> {
        loop {
            if let Some(record) = self.reader.next_record()? {
                return Ok(Some(record));
            }
            let shared = self.reader.shared.clone();
            if shared
                .durable
                .wait_durable(self.reader.next.get())
                .await
                .is_err()
            {
                // Halted: drain what became durable before the halt, then report why.
                if let Some(record) = self.reader.next_record()? {
                    return Ok(Some(record));
                }
                return match shared.stopped_error() {
                    Error::Closed => Ok(None),
                    poisoned => Err(poisoned),
                };
            }
        }
    }
}

impl Journal {
    /// An iterator over the durable records from `from` (which may be the durable end,
    /// giving an empty iterator). [`Error::Truncated`] if `from` was truncated away.
    pub fn read_from(&self, from: Lsn) -> Result<Reader> {
        let first = self.first_lsn();
        if from < first {
            return Err(Error::Truncated {
                requested: from,
                first,
            });
        }
        Ok(Reader {
            shared: self.shared().clone(),
            next: from,
            buffered: VecDeque::new(),
        })
    }

    /// A tailing reader from `from`; see [`Tail`].
    pub fn tail(&self, from: Lsn) -> Result<Tail> {
        Ok(Tail {
            reader: self.read_from(from)?,
        })
    }
}
