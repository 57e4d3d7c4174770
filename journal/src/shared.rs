//! [`Shared`]: the state a journal's handle, its flusher ([`crate::writer`]) and its readers
//! ([`crate::reader`]) share — the batcher of pending appends, the durable point, the
//! segments — and the operations on it that more than one of them needs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use journaldb_proto::Lsn;
use journaldb_sync::{Batcher, DurablePoint};
use parking_lot::{Mutex, RwLock};

use crate::disk::{DirLock, Disk};
use crate::error::{Error, Result};
use crate::options::JournalOptions;
use crate::segment::{BatchLoc, Segment};

/// State shared by the journal handle, its flusher and its readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) disk: Arc<dyn Disk>,
    pub(crate) options: JournalOptions,
    /// Framed records waiting for the flusher; sequence numbers are Lsns.
    pub(crate) batcher: Batcher<Bytes>,
    /// Every Lsn below `durable.end()` is durable and indexed.
    pub(crate) durable: DurablePoint,
    /// Segments in Lsn order; the last is the one being written.
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    /// The I/O error that poisoned the journal, if one did.
    pub(crate) poison: Mutex<Option<String>>,
    /// Serialises prefix truncations (each deletes oldest-first, syncing after each).
    pub(crate) truncation: Mutex<()>,
    pub(crate) lock: Mutex<Option<DirLock>>,
    /// Counters for [`Journal::stats`].
    pub(crate) stats: Counters,
}

/// Running totals kept by the flusher.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl Shared {
    /// Poisons the journal: no append succeeds from now on.
    pub(crate) fn poison(&self, cause: &str) {
        self.poison.lock().get_or_insert_with(|| cause.to_owned());
        self.batcher.close();
    }

    /// Whether an I/O error has poisoned the journal.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poison.lock().is_some()
    }

    /// Called by the flusher as it exits: drops what can no longer be written and wakes
    /// every waiter, who then learns whether the journal closed or was poisoned.
    pub(crate) fn stop_flushing(&self) {
        self.batcher.close();
        while self.batcher.take_blocking(u64::MAX).is_some() {}
        self.durable.halt();
    }

    /// The error for an operation that found the journal no longer writing.
    pub(crate) fn stopped_error(&self) -> Error {
        match &*self.poison.lock() {
            Some(cause) => Error::Poisoned {
                cause: cause.clone(),
            },
            None => Error::Closed,
        }
    }

    /// The payloads of the durable batch holding `lsn`, with the Lsn of the first.
    pub(crate) fn read_batch_holding(&self, lsn: Lsn) -> Result<(Lsn, Vec<Bytes>)> {
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
            seg.build_index(end)?;
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
