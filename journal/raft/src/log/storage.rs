//! raft-rs's `Storage` over a [`RaftLog`] (RAFT.md §2): what raft-rs reads — the state to
//! start from, entries (from the cache, or from the segments), terms, the log's bounds and
//! the metadata-only snapshot at the truncation point.

use std::sync::Arc;

use raft::prelude::{Entry, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::{Loc, RaftLog, SegmentFile, format};

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let view = self.shared.view.lock();
        Ok(RaftState::new(
            view.state.hard_state.clone(),
            view.state.conf_at(view.state.applied),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        // Collect under the lock what the cache holds and where the rest lies; read the
        // rest from disk after releasing it.
        type Wanted = (u64, u64, Result<Entry, (Loc, Option<Arc<SegmentFile>>)>);
        let wanted: Vec<Wanted> = {
            let view = self.shared.view.lock();
            let segments = self.shared.segments.read();
            if low < view.first_index() {
                return Err(raft::Error::Store(StorageError::Compacted));
            }
            if high > view.last_index() + 1 {
                return Err(raft::Error::Store(StorageError::Unavailable));
            }
            let mut size = 0u64;
            let mut wanted = Vec::new();
            for index in low..high {
                let slot = view.slot(index).expect("checked against first and last");
                let item = match (&slot.cached, slot.loc) {
                    (Some(entry), _) => Ok(entry.clone()),
                    (None, Some(loc)) => Err((loc, segments.get(&loc.seq).cloned())),
                    (None, None) => unreachable!("an entry not yet durable is always cached"),
                };
                size += match &item {
                    Ok(entry) => format::entry_len(entry) as u64,
                    Err((loc, _)) => u64::from(loc.len),
                };
                if !wanted.is_empty() && size > max_size {
                    break;
                }
                wanted.push((index, slot.term, item));
            }
            wanted
        };
        wanted
            .into_iter()
            .map(|(index, term, item)| match item {
                Ok(entry) => Ok(entry),
                Err((loc, segment)) => self.read_entry(index, loc, term, segment),
            })
            .collect()
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let view = self.shared.view.lock();
        if index < view.state.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        view.term(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.shared.view.lock().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.shared.view.lock().last_index())
    }

    /// The snapshot is metadata at the truncation point, so that a new replica receives
    /// the whole log window after it (ARCHITECTURE §5 rule 3). raft-rs refuses a snapshot
    /// whose configuration does not name its node: to a node that joined after the
    /// truncation point, the configuration names it as a learner already — learners do
    /// not vote, so the majorities are the ones in force there — and the entries that
    /// follow add it for real (adding a learner twice changes nothing).
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let view = self.shared.view.lock();
        let durable = &view.durable;
        let (index, term) = durable.truncated;
        let mut conf = durable.conf_at(index);
        let named = [
            &conf.voters,
            &conf.learners,
            &conf.voters_outgoing,
            &conf.learners_next,
        ]
        .iter()
        .any(|ids| ids.contains(&to));
        if !named {
            conf.learners.push(to);
        }
        let first_lsn = durable.first_lsn.get();
        if index == 0 || index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf);
        snapshot.data = first_lsn.to_le_bytes().to_vec().into();
        Ok(snapshot)
    }
}
