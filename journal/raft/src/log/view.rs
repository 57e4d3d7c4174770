//! [`View`]: a replica log's index in memory — each entry's term, record range and place
//! on disk (with a cached copy until it is durable and evicted), the state as of
//! everything staged and as of everything durable, and the staged parts the writer has not
//! taken yet. Reading and writing the files is the rest of [`super`]'s.

use std::collections::VecDeque;

use raft::prelude::Entry;

use super::format::{self, LogState, Part};

/// The log as of everything staged, and what of it is durable.
#[derive(Debug, Default)]
pub(super) struct View {
    /// The state as of everything staged.
    pub(super) state: LogState,
    /// The state as of everything durable.
    pub(super) durable: LogState,
    /// Entries `state.truncated.0 + 1 ..= last`, in order.
    pub(super) slots: VecDeque<Slot>,
    /// Bytes of entries held in `slots`' caches.
    pub(super) cached_bytes: usize,
    /// No entry below this index is cached: where eviction resumes.
    pub(super) cached_from: u64,
    /// Staged parts not yet taken by the writer, each with the number of its staging.
    pub(super) pending: Vec<(u64, Part)>,
    pub(super) next_number: u64,
    /// The last staging a Ready's messages may speak for: every one but a commit index
    /// alone ([`RaftLog::stage_commit`]).
    pub(super) awaited: u64,
    pub(super) persisted_number: u64,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) term: u64,
    /// The Lsn after this entry's records (the previous entry's, if it carries none).
    pub(super) lsn_end: u64,
    /// The staging that wrote this entry, so a write only locates its own entries.
    pub(super) number: u64,
    /// Where the entry lies on disk, once durable.
    pub(super) loc: Option<Loc>,
    /// The entry itself, while cached (always, until durable).
    pub(super) cached: Option<Entry>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Loc {
    pub(super) seq: u64,
    pub(super) offset: u64,
    pub(super) len: u32,
}

impl View {
    pub(super) fn first_index(&self) -> u64 {
        self.state.truncated.0 + 1
    }

    pub(super) fn last_index(&self) -> u64 {
        self.state.truncated.0 + self.slots.len() as u64
    }

    pub(super) fn slot(&self, index: u64) -> Option<&Slot> {
        let at = index.checked_sub(self.first_index())?;
        self.slots.get(usize::try_from(at).ok()?)
    }

    /// The Lsn after the records of the entries up to `index`.
    pub(super) fn lsn_end_at(&self, index: u64) -> Option<u64> {
        if index == self.state.truncated.0 {
            return Some(self.state.first_lsn.get());
        }
        self.slot(index).map(|s| s.lsn_end)
    }

    /// The Lsn after the last entry's records.
    pub(super) fn lsn_end(&self) -> u64 {
        self.slots
            .back()
            .map_or(self.state.first_lsn.get(), |s| s.lsn_end)
    }

    pub(super) fn term(&self, index: u64) -> Option<u64> {
        if index == self.state.truncated.0 {
            return Some(self.state.truncated.1);
        }
        self.slot(index).map(|s| s.term)
    }

    /// Drops cached copies of durable entries, oldest first, down to `budget` bytes.
    pub(super) fn evict(&mut self, budget: usize) {
        let first = self.first_index();
        self.cached_from = self.cached_from.max(first);
        let skip = (self.cached_from - first) as usize;
        for slot in self.slots.iter_mut().skip(skip) {
            if self.cached_bytes <= budget || slot.loc.is_none() {
                break;
            }
            if let Some(entry) = slot.cached.take() {
                self.cached_bytes -= format::entry_len(&entry);
            }
            self.cached_from += 1;
        }
    }

    pub(super) fn stage_part(&mut self, part: Part) -> u64 {
        let number = self.stage_unawaited(part);
        self.awaited = number;
        number
    }

    /// Stages `part` without making Readies wait for it (a commit index alone).
    pub(super) fn stage_unawaited(&mut self, part: Part) -> u64 {
        self.next_number += 1;
        self.pending.push((self.next_number, part));
        self.next_number
    }
}
