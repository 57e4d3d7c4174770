//! [`RaftLog`]: one replica's durable Raft log — its entries and hard state in segment
//! files, written through the journal's [`Disk`] (RAFT.md §2 and §8, ARCHITECTURE §5).
//!
//! It has two halves, so that the driver never waits on a disk:
//! - [`RaftLog`], a cheap clone shared with raft-rs as its `Storage`. The driver **stages**
//!   what a `Ready` asks to persist ([`RaftLog::stage`]); staged entries are readable at
//!   once, from memory (the "async ready" mode of RAFT.md §1), and each staging gets a
//!   number.
//! - [`LogWriter`], owned by the flusher, which takes everything staged so far and makes
//!   it durable with **one write and one fsync** ([`LogWriter::flush`]), then reports the
//!   highest number it covered, for `on_persist_ready`.
//!
//! Guarantees:
//! - A Ready's entries, the tail they replace and its hard state are durable together or
//!   not at all: they are one checksummed write, and a crash tears at most the last write.
//! - Reopening yields exactly the last durable state: [`last_index`](raft::Storage::last_index)
//!   counts only durable entries (raft-rs takes it as persisted). A torn final write is
//!   cut off; damage anywhere else is [`LogError::Corruption`], never skipped.
//! - Committed entries are never replaced, and the log is never compacted past the
//!   durable commit index or the applied index (restarting would panic raft-rs, RAFT.md §7).
//! - After a failed write or fsync the log is poisoned; it never retries an fsync.
//! - `open` of an empty directory is [`LogError::NoLog`]: a wiped replica cannot come
//!   back under its old Raft id (ARCHITECTURE §5 rule 3). Logs are made with `create`,
//!   which takes the group's first configuration explicitly (rule 8).
//!
//! Journal-replica snapshots are metadata only, taken at the truncation point (rule 3):
//! [`RaftLog::install_snapshot`] empties the log at the snapshot's index.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use journaldb_journal::disk::DiskFile;
use journaldb_proto::Lsn;
use parking_lot::{Mutex, RwLock};
use raft::StorageError;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};

mod error;
pub mod format;
mod open;
mod storage;
mod view;
mod writer;

pub use error::{LogError, LogResult};
pub use format::{LogId, LogState};
use view::{Loc, Slot, View};
pub use writer::LogWriter;

use format::Part;

/// File name suffix of log segments.
pub const SEGMENT_SUFFIX: &str = ".jrlog";

/// The file name of segment `seq`, zero-padded so names sort in log order.
fn file_name(seq: u64) -> String {
    format!("{seq:020}{SEGMENT_SUFFIX}")
}

/// Settings of a replica's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is sealed, and the next write starts a new one, once it reaches this size.
    pub segment_bytes: u64,
    /// Alignment of writes; at least the disk's sector size.
    pub block_size: u32,
    /// Zeros written ahead of the tail, so that most fsyncs change no file size.
    pub preallocate_bytes: u64,
    /// Bytes of recent durable entries kept in memory for `Storage::entries` (the leader
    /// reads its log for every append it sends). Entries not yet durable are always kept.
    pub cache_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 64 << 20,
            block_size: 4096,
            preallocate_bytes: 1 << 20,
            cache_bytes: 16 << 20,
        }
    }
}

impl LogOptions {
    fn check(&self) -> LogResult<()> {
        let block = self.block_size;
        if !block.is_power_of_two() || !(512..=1 << 20).contains(&block) {
            return Err(LogError::Refused(format!(
                "block_size {block} is not a power of two in 512..=1 MiB"
            )));
        }
        if self.segment_bytes < 2 * u64::from(block) {
            return Err(LogError::Refused(format!(
                "segment_bytes {} is under two blocks",
                self.segment_bytes
            )));
        }
        Ok(())
    }
}

/// A replica's log, as raft-rs and the driver see it. Clones share the log.
#[derive(Debug, Clone)]
pub struct RaftLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    id: LogId,
    dir: PathBuf,
    options: LogOptions,
    view: Mutex<View>,
    /// Open segments by sequence number, for reading entries that left the cache.
    segments: RwLock<BTreeMap<u64, Arc<SegmentFile>>>,
    poison: Mutex<Option<String>>,
}

/// An open segment file.
#[derive(Debug)]
struct SegmentFile {
    seq: u64,
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    /// The highest entry index ever written to it (0 if none): once the durable truncation
    /// point reaches it, nothing in it is needed.
    max_index: Mutex<u64>,
}

impl RaftLog {
    /// Whose log this is.
    pub fn id(&self) -> LogId {
        self.shared.id
    }

    /// The log's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.shared.dir
    }

    /// The state as of everything staged.
    pub fn state(&self) -> LogState {
        self.shared.view.lock().state.clone()
    }

    /// The state as of everything durable.
    pub fn durable_state(&self) -> LogState {
        self.shared.view.lock().durable.clone()
    }

    /// The number of the last staging the writer has made durable.
    pub fn persisted_number(&self) -> u64 {
        self.shared.view.lock().persisted_number
    }

    /// The Lsn after the records of every entry staged: where a leader's next batch starts
    /// when it has proposed nothing since its last Ready.
    pub fn lsn_end(&self) -> Lsn {
        Lsn::new(self.shared.view.lock().lsn_end())
    }

    /// The Lsn after the records of the committed entries that are durable here: readers
    /// never get past it (ARCHITECTURE §5, "never hands out a record past it").
    pub fn committed_lsn_end(&self) -> Lsn {
        let view = self.shared.view.lock();
        let commit = view.durable.hard_state.commit;
        // A snapshot staged, not yet durable, moves the log past the durable commit: the
        // durable truncation point's Lsn is then what this replica holds for sure.
        Lsn::new(
            view.lsn_end_at(commit)
                .unwrap_or(view.durable.first_lsn.get()),
        )
    }

    /// The Lsn after the records of the entries up to `index`, if the log holds `index`
    /// (or it is the truncation point).
    pub fn lsn_end_at(&self, index: u64) -> Option<Lsn> {
        self.shared.view.lock().lsn_end_at(index).map(Lsn::new)
    }

    /// Where a leader's next batch starts: after the records of every entry of `raft_log`,
    /// including those it proposed that no Ready has handed out yet (raft-rs's unstable
    /// entries, which also override any staged tail they overlap).
    pub fn next_batch_lsn(raft_log: &raft::RaftLog<RaftLog>) -> Lsn {
        let unstable = raft_log.unstable_entries();
        let in_unstable = unstable.iter().rev().find_map(|e| {
            format::batch_span(e.get_entry_type(), &e.data)
                .ok()
                .flatten()
        });
        if let Some((first, count)) = in_unstable {
            return Lsn::new(first + count);
        }
        let before = unstable
            .first()
            .map_or(raft_log.last_index(), |e| e.index - 1);
        raft_log
            .store()
            .lsn_end_at(before)
            .expect("raft-rs's entries continue its storage's")
    }

    /// The index of the entry holding the record at `lsn`, if the log still holds it.
    pub fn index_of_lsn(&self, lsn: Lsn) -> Option<u64> {
        let view = self.shared.view.lock();
        if lsn < view.state.first_lsn || lsn.get() >= view.lsn_end() {
            return None;
        }
        let at = view.slots.partition_point(|s| s.lsn_end <= lsn.get());
        Some(view.first_index() + at as u64)
    }

    /// The index of the last entry staged.
    pub fn last_entry_index(&self) -> u64 {
        self.shared.view.lock().last_index()
    }

    /// Whether anything is staged and not yet taken by the writer.
    pub fn has_pending(&self) -> bool {
        !self.shared.view.lock().pending.is_empty()
    }

    /// Whether a failure has stopped the log.
    pub fn poisoned(&self) -> Option<String> {
        self.shared.poison.lock().clone()
    }

    fn check_poison(&self) -> LogResult<()> {
        match self.poisoned() {
            Some(reason) => Err(LogError::Poisoned { reason }),
            None => Ok(()),
        }
    }

    /// Stages what one `Ready` asks to persist: `entries` (consecutive; replacing the tail
    /// from the first one's index) and the hard state. Readable at once; durable when the
    /// writer's flush covering the returned number returns. Refuses entries that do not
    /// follow the log or would replace a committed entry (a bug upstream, not a fault).
    pub fn stage(&self, entries: Vec<Entry>, hard_state: Option<HardState>) -> LogResult<u64> {
        self.check_poison()?;
        let mut view = self.shared.view.lock();
        if entries.is_empty() && hard_state.is_none() {
            return Ok(view.awaited);
        }
        let mut last = view.last_index();
        if let Some(first) = entries.first() {
            check_entries(&view, &entries, first.index)?;
            last = first.index + entries.len() as u64 - 1;
        }
        if let Some(hs) = &hard_state {
            let old = &view.state.hard_state;
            if hs.commit < old.commit || hs.term < old.term || hs.commit > last {
                return Err(LogError::Refused(format!(
                    "hard state (term {}, commit {}) after (term {}, commit {}) with last \
                     entry {last}",
                    hs.term, hs.commit, old.term, old.commit
                )));
            }
        }
        let number = view.next_number + 1;
        if let Some(first) = entries.first() {
            let lsn_ends = lsn_ends(&view, &entries)?;
            view.cached_from = view.cached_from.min(first.index);
            let keep = (first.index - view.first_index()) as usize;

            for slot in view.slots.drain(keep..).collect::<Vec<_>>() {
                if let Some(entry) = slot.cached {
                    view.cached_bytes -= format::entry_len(&entry);
                }
            }
            for (entry, lsn_end) in entries.iter().zip(lsn_ends) {
                view.cached_bytes += format::entry_len(entry);
                view.slots.push_back(Slot {
                    term: entry.term,
                    lsn_end,
                    number,
                    loc: None,
                    cached: Some(entry.clone()),
                });
            }
            view.pending.push((number, Part::Entries(entries)));
        }
        if let Some(hs) = hard_state {
            view.state.hard_state = hs;
            let state = view.state.clone();
            view.pending.push((number, Part::State(state)));
        }
        view.next_number = number;
        view.awaited = number;
        Ok(number)
    }

    /// Stages a hard state that differs from the last one only in its commit index
    /// (raft-rs's `Ready::must_sync()` is false), to be written with whatever the writer
    /// flushes next, and returns the last staging *other than such* ones: the one a Ready
    /// carrying it must wait for (as an empty staging does). raft-rs permits this
    /// asynchronous write (a Ready's messages speak for entries and votes staged before,
    /// never for a commit index), so a new commit index no longer holds acks behind a
    /// flush of its own. Compaction stays under the durable commit index; readers go by
    /// what is applied, which raft-rs keeps within what is durable here. A crash may lose
    /// the commit index alone: it comes back lower, never past the entries or the applied
    /// index written with it.
    pub fn stage_commit(&self, hard_state: HardState) -> LogResult<u64> {
        self.check_poison()?;
        let mut view = self.shared.view.lock();
        let old = &view.state.hard_state;
        let last = view.last_index();
        if hard_state.term != old.term
            || hard_state.vote != old.vote
            || hard_state.commit < old.commit
            || hard_state.commit > last
        {
            return Err(LogError::Refused(format!(
                "a commit-only hard state (term {}, vote {}, commit {}) after (term {}, vote \
                 {}, commit {}) with last entry {last}",
                hard_state.term, hard_state.vote, hard_state.commit, old.term, old.vote, old.commit
            )));
        }
        view.state.hard_state = hard_state;
        let state = view.state.clone();
        view.stage_unawaited(Part::State(state));
        Ok(view.awaited)
    }

    /// Records that the application has applied up to `index`, and the configuration
    /// that took effect there if that entry changed it. Persisted with the next write.
    pub fn set_applied(&self, index: u64, conf: Option<ConfState>) -> LogResult<()> {
        let mut view = self.shared.view.lock();
        let state = &mut view.state;
        if index < state.applied || index > state.hard_state.commit {
            return Err(LogError::Refused(format!(
                "applied {index} outside {}..={} (applied..=commit)",
                state.applied, state.hard_state.commit
            )));
        }
        state.applied = index;
        if let Some(conf) = conf {
            state.confs.retain(|(at, _)| *at < index);
            state.confs.push((index, conf));
        }
        Ok(())
    }

    /// Drops the entries up to `to` from the front of the log, recording `(to, term)` as
    /// the truncation point. Only up to the applied index and the *durable* commit index
    /// (RAFT.md §2, "Compaction"). Segments holding nothing newer are removed once the
    /// new truncation point is durable.
    pub fn compact(&self, to: u64) -> LogResult<u64> {
        self.check_poison()?;
        let mut view = self.shared.view.lock();
        if to <= view.state.truncated.0 {
            return Ok(view.next_number);
        }
        let limit = view.state.applied.min(view.durable.hard_state.commit);
        if to > limit {
            return Err(LogError::Refused(format!(
                "compacting to {to}, past applied {} or durable commit {}",
                view.state.applied, view.durable.hard_state.commit
            )));
        }
        let term = view
            .term(to)
            .expect("to is in the log: above truncated, at most commit");
        let first_lsn = view.lsn_end_at(to).expect("as for its term");
        let drop = (to - view.state.truncated.0) as usize;
        for slot in view.slots.drain(..drop).collect::<Vec<_>>() {
            if let Some(entry) = slot.cached {
                view.cached_bytes -= format::entry_len(&entry);
            }
        }
        let state = &mut view.state;
        state.truncated = (to, term);
        state.first_lsn = Lsn::new(first_lsn);
        let keep_from = state
            .confs
            .iter()
            .rposition(|(at, _)| *at <= to)
            .unwrap_or(0);
        state.confs.drain(..keep_from);
        let state = state.clone();
        Ok(view.stage_part(Part::State(state)))
    }

    /// Installs a (metadata-only) snapshot, as [`raft::Storage::snapshot`] makes them:
    /// every entry goes, the log ends at the snapshot's index and term, which are committed
    /// and applied, with its configuration and the Lsn its data names.
    pub fn install_snapshot(&self, snapshot: &Snapshot) -> LogResult<u64> {
        self.check_poison()?;
        let meta = snapshot.get_metadata();
        let first_lsn = match <[u8; 8]>::try_from(&snapshot.data[..]) {
            // Lsns count records: anything near the top of the range is no Lsn a log reaches.
            Ok(bytes) if (1..=u64::MAX >> 1).contains(&u64::from_le_bytes(bytes)) => {
                u64::from_le_bytes(bytes)
            }
            _ => {
                return Err(LogError::Refused(format!(
                    "snapshot data of {} bytes is not a first Lsn",
                    snapshot.data.len()
                )));
            }
        };
        let mut view = self.shared.view.lock();
        if meta.index < view.state.hard_state.commit {
            return Err(LogError::Refused(format!(
                "snapshot at {} is below the commit index {}",
                meta.index, view.state.hard_state.commit
            )));
        }
        view.slots.clear();
        view.cached_bytes = 0;
        let number = view.stage_part(Part::Reset {
            index: meta.index,
            term: meta.term,
            first_lsn,
        });
        let state = &mut view.state;
        state.hard_state.commit = meta.index;
        state.hard_state.term = state.hard_state.term.max(meta.term);
        state.applied = meta.index;
        state.truncated = (meta.index, meta.term);
        state.first_lsn = Lsn::new(first_lsn);
        state.confs = vec![(meta.index, meta.get_conf_state().clone())];
        let state = state.clone();
        view.pending.push((number, Part::State(state)));
        Ok(number)
    }

    /// Reads an entry that has left the cache from its segment.
    /// The segment is taken while the entry is in the log, so a removal that follows a
    /// compaction cannot pull it away before the read (the open file stays readable).
    fn read_entry(
        &self,
        index: u64,
        loc: Loc,
        term: u64,
        segment: Option<Arc<SegmentFile>>,
    ) -> raft::Result<Entry> {
        let fail = |reason: String| {
            self.shared.poison.lock().get_or_insert(reason);
            raft::Error::Store(StorageError::Unavailable)
        };
        let Some(segment) = segment else {
            return Err(fail(format!("entry {index}: segment {} is gone", loc.seq)));
        };
        let mut buf = vec![0u8; loc.len as usize];
        if let Err(e) = segment.file.read_exact_at(&mut buf, loc.offset) {
            return Err(fail(format!("reading {}: {e}", segment.path.display())));
        }
        match format::decode_entry(&Bytes::from(buf)) {
            Ok(entry) if entry.index == index && entry.term == term => Ok(entry),
            Ok(entry) => Err(fail(format!(
                "{} offset {}: entry ({}, {}) where ({index}, {term}) belongs",
                segment.path.display(),
                loc.offset,
                entry.index,
                entry.term
            ))),
            Err(reason) => Err(fail(format!(
                "{} offset {}: {reason}",
                segment.path.display(),
                loc.offset
            ))),
        }
    }
}

/// The Lsn after each entry's records, checking that every journal batch is well formed
/// and starts where the log's records before it end (the log alone determines Lsns).
fn lsn_ends(view: &View, entries: &[Entry]) -> LogResult<Vec<u64>> {
    let mut end = view
        .lsn_end_at(entries[0].index - 1)
        .expect("checked: the entries follow the log");
    entries
        .iter()
        .map(|entry| {
            let span = format::batch_span(entry.get_entry_type(), &entry.data)
                .map_err(|e| LogError::Refused(format!("entry {}: {e}", entry.index)))?;
            if let Some((first, count)) = span {
                if first != end {
                    return Err(LogError::Refused(format!(
                        "entry {}: records from Lsn {first}, but the log's end at Lsn {end}",
                        entry.index
                    )));
                }
                end = end.checked_add(count).ok_or_else(|| {
                    LogError::Refused(format!("entry {}: Lsns past the largest", entry.index))
                })?;
            }
            Ok(end)
        })
        .collect()
}

/// Checks that `entries` are consecutive, follow the log and replace nothing committed.
fn check_entries(view: &View, entries: &[Entry], first: u64) -> LogResult<()> {
    let consecutive = entries
        .iter()
        .zip(first..)
        .all(|(e, i)| e.index == i && e.term > 0);
    if !consecutive {
        return Err(LogError::Refused("entries are not consecutive".into()));
    }
    if entries.windows(2).any(|w| w[1].term < w[0].term) {
        return Err(LogError::Refused("entry terms go down".into()));
    }
    let committed = view.state.hard_state.commit.max(view.state.truncated.0);
    if first <= committed || first > view.last_index() + 1 {
        return Err(LogError::Refused(format!(
            "entries from {first} do not fit the log: committed up to {committed}, last {}",
            view.last_index()
        )));
    }
    let prev_term = view.term(first - 1).unwrap_or(0);
    if entries[0].term < prev_term {
        return Err(LogError::Refused(format!(
            "entry {first} has term {}, below the term {prev_term} before it",
            entries[0].term
        )));
    }
    Ok(())
}
