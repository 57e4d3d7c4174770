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
use crate::shared::Shared;

/// Iterates the durable records from a position, ending at the durable end (as it is
/// when the iterator gets there). Created by [`Journal::read_from`].
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    next: Lsn,
    buffered: VecDeque<(Lsn, Bytes)>,
}

impl Reader {
    /// A reader of `shared` from `from` (checked by the caller to be readable).
    pub(crate) fn new(shared: Arc<Shared>, from: Lsn) -> Self {
        Reader {
            shared,
            next: from,
            buffered: VecDeque::new(),
        }
    }

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
    /// A tailing reader that continues `reader`.
    pub(crate) fn new(reader: Reader) -> Self {
        Tail { reader }
    }

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
