//! [`LogWriter`]: the one writer of a replica's log, owned by its flusher. A flush takes
//! everything staged so far and, in this order:
//!
//! 1. writes it as one block-aligned write at the end of the active segment (rolling over
//!    first if the segment is full: the new segment's header goes out with a first write
//!    holding the log's state, fsynced with its directory);
//! 2. `fdatasync`s the segment;
//! 3. records where each entry now lies, and the durable state;
//! 4. only then reports the staging numbers it covered as persisted (`on_persist_ready`
//!    and the persisted messages wait for that: ARCHITECTURE §5 rule 3);
//! 5. removes the segments the durable truncation point has left empty.
//!
//! On any I/O error it poisons the log: it never retries an fsync.

use std::path::Path;
use std::sync::Arc;

use journaldb_journal::disk::{DirLock, Disk};
use parking_lot::Mutex;

use super::format::{self, LogId, Part, SegmentHeader, WriteAt};
use super::{Loc, LogError, LogResult, RaftLog, SegmentFile, file_name};

/// The writer of a replica's log. Dropping it releases the directory.
#[derive(Debug)]
pub struct LogWriter {
    log: RaftLog,
    disk: Arc<dyn Disk>,
    _lock: DirLock,
    active: Arc<SegmentFile>,
    block: u64,
    /// End of the last write in the active segment.
    offset: u64,
    /// The segment's length: bytes past `offset` up to here are zeros written ahead.
    zeroed_end: u64,
    buf: Vec<u8>,
}

impl LogWriter {
    pub(super) fn new(
        log: RaftLog,
        disk: Arc<dyn Disk>,
        lock: DirLock,
        active: Arc<SegmentFile>,
        block: u64,
        offset: u64,
        zeroed_end: u64,
    ) -> LogWriter {
        LogWriter {
            log,
            disk,
            _lock: lock,
            active,
            block,
            offset,
            zeroed_end: zeroed_end.max(offset),
            buf: Vec::new(),
        }
    }

    /// The log this writer writes: clone it for raft-rs and the driver.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// Makes everything staged so far durable with one write and one fsync. Returns the
    /// highest staging number now persisted, or `None` if nothing was staged.
    pub fn flush(&mut self) -> LogResult<Option<u64>> {
        self.log.check_poison()?;
        let (pending, state) = {
            let mut view = self.log.shared.view.lock();
            if view.pending.is_empty() {
                return Ok(None);
            }
            (std::mem::take(&mut view.pending), view.state.clone())
        };
        let number = pending.last().map(|(n, _)| *n).expect("not empty");
        match self.write(&pending, state) {
            Ok(locs) => {
                self.settle(&pending, number, locs);
                self.remove_dead_segments()?;
                Ok(Some(number))
            }
            Err(e) => {
                self.log
                    .shared
                    .poison
                    .lock()
                    .get_or_insert_with(|| e.to_string());
                Err(e)
            }
        }
    }

    /// Steps 1 and 2: the write and its fsync. Returns each written entry's location.
    fn write(&mut self, pending: &[(u64, Part)], state: format::LogState) -> LogResult<Vec<Loc>> {
        let options = self.log.shared.options;
        let mut parts: Vec<&Part> = pending.iter().map(|(_, p)| p).collect();
        let head_state = Part::State(state);
        if self.offset >= options.segment_bytes && self.offset > self.block {
            // The new segment opens with the log's state, so that whatever prefix of
            // segments is later removed, the rest still holds it.
            parts.push(&head_state);
            let seq = self.active.seq + 1;
            let id = self.log.shared.id;
            let (segment, end) = create_segment(
                &*self.disk,
                &self.log.shared.dir,
                id,
                options.block_size,
                seq,
                &[],
            )?;
            self.log
                .shared
                .segments
                .write()
                .insert(seq, segment.clone());
            self.active = segment;
            self.block = u64::from(options.block_size);
            self.offset = end;
            self.zeroed_end = end;
        }
        self.buf.clear();
        let at = WriteAt {
            seq: self.active.seq,
            offset: self.offset,
        };
        let spans = format::encode_write(&mut self.buf, &parts, self.block, at);
        let len = self.buf.len() as u64;
        // Zero ahead (as the journal does): extend the file by whole `preallocate_bytes`
        // of zeros in the same write, so most fsyncs change no file size.
        let prealloc = options.preallocate_bytes;
        if self.offset + len > self.zeroed_end && prealloc > 0 {
            let rollover = format::align_up(options.segment_bytes, self.block);
            let end = (self.offset + len)
                .next_multiple_of(prealloc)
                .min(rollover)
                .max(self.offset + len);
            self.buf.resize((end - self.offset) as usize, 0);
        }
        let path = &self.active.path;
        self.active
            .file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| LogError::io(format!("writing {}", path.display()), e))?;
        self.active
            .file
            .sync_data()
            .map_err(|e| LogError::io(format!("syncing {}", path.display()), e))?;
        let locs = spans
            .into_iter()
            .map(|(at, len)| Loc {
                seq: self.active.seq,
                offset: self.offset + at,
                len,
            })
            .collect();
        self.zeroed_end = self.zeroed_end.max(self.offset + self.buf.len() as u64);
        self.offset += len;
        if self.buf.capacity() > 4 * options.cache_bytes.max(1 << 20) {
            self.buf = Vec::new();
        }
        Ok(locs)
    }

    /// Steps 3 and 4: entries located (only those still in the log as their own staging
    /// put them there), the durable state and the persisted number advanced.
    fn settle(&self, pending: &[(u64, Part)], number: u64, locs: Vec<Loc>) {
        let mut view = self.log.shared.view.lock();
        let mut locs = locs.into_iter();
        let mut max_index = 0;
        for (staged, part) in pending {
            match part {
                Part::Entries(entries) => {
                    for entry in entries {
                        let loc = locs.next().expect("one location per entry");
                        max_index = max_index.max(entry.index);
                        let first = view.first_index();
                        if let Some(slot) = entry
                            .index
                            .checked_sub(first)
                            .and_then(|at| view.slots.get_mut(at as usize))
                            && slot.number == *staged
                            && slot.term == entry.term
                        {
                            slot.loc = Some(loc);
                        }
                    }
                }
                Part::State(state) => view.durable = state.clone(),
                Part::Reset { .. } => {}
            }
        }
        view.persisted_number = number;
        let budget = self.log.shared.options.cache_bytes;
        view.evict(budget);
        let mut max = self.active.max_index.lock();
        *max = (*max).max(max_index);
    }

    /// Step 5: removes, oldest first, the sealed segments whose every entry is at or below
    /// the durable truncation point. A removal that fails poisons the log: a later one
    /// that lasted would leave a gap in the segments.
    fn remove_dead_segments(&self) -> LogResult<()> {
        let floor = self.log.shared.view.lock().durable.truncated.0;
        let dead: Vec<Arc<SegmentFile>> = self
            .log
            .shared
            .segments
            .read()
            .values()
            .take_while(|s| s.seq < self.active.seq && *s.max_index.lock() <= floor)
            .cloned()
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        let dir = &self.log.shared.dir;
        // One removal made durable at a time, oldest first: a file system that does not
        // keep directory operations in order could otherwise keep a later removal and lose
        // an earlier one, leaving a gap in the segments.
        let result = dead.iter().try_for_each(|segment| {
            self.disk
                .remove_file(&segment.path)
                .map_err(|e| LogError::io(format!("removing {}", segment.path.display()), e))?;
            self.disk
                .sync_dir(dir)
                .map_err(|e| LogError::io(format!("syncing {}", dir.display()), e))
        });
        if let Err(e) = &result {
            self.log
                .shared
                .poison
                .lock()
                .get_or_insert_with(|| e.to_string());
        }
        let mut segments = self.log.shared.segments.write();
        for segment in &dead {
            segments.remove(&segment.seq);
        }
        result
    }
}

/// Creates, and makes durable, segment `seq` of `dir`: its header block alone (create,
/// write, fsync the file, fsync the directory), then `first_write` if it has parts (write,
/// fsync). Whatever a crash leaves of this is either a header with no write or a torn
/// header with none — a torn creation, removed on open — never a write behind a torn
/// header, which would look like damage. Returns the segment and the offset after what
/// was written.
pub(super) fn create_segment(
    disk: &dyn Disk,
    dir: &Path,
    id: LogId,
    block_size: u32,
    seq: u64,
    first_write: &[Part],
) -> LogResult<(Arc<SegmentFile>, u64)> {
    let path = dir.join(file_name(seq));
    let io = |what: &str, e| LogError::io(format!("{what} {}", path.display()), e);
    let file = disk.create_new(&path).map_err(|e| io("creating", e))?;
    let header = SegmentHeader {
        block_size,
        seq,
        id,
    };
    let block = header.encode_block();
    file.write_all_at(&block, 0)
        .map_err(|e| io("writing the header of", e))?;
    file.sync_data().map_err(|e| io("syncing", e))?;
    disk.sync_dir(dir)
        .map_err(|e| io("syncing the directory of", e))?;
    let mut end = block.len() as u64;
    if !first_write.is_empty() {
        let parts: Vec<&Part> = first_write.iter().collect();
        let mut bytes = Vec::new();
        format::encode_write(
            &mut bytes,
            &parts,
            u64::from(block_size),
            WriteAt { seq, offset: end },
        );
        file.write_all_at(&bytes, end)
            .map_err(|e| io("writing the first write of", e))?;
        file.sync_data().map_err(|e| io("syncing", e))?;
        end += bytes.len() as u64;
    }
    Ok((
        Arc::new(SegmentFile {
            seq,
            path,
            file,
            max_index: Mutex::new(0),
        }),
        end,
    ))
}
