//! The flusher: the one writer of a journal. It takes batches from the batcher, writes
//! each as one block-aligned write followed by one `fdatasync`, indexes it, and only then
//! advances the durable point — in that order, which is the journal's commit path:
//!
//! 1. `write(batch)` at the end of the active segment (rolling over first if it is full:
//!    create, write header, fsync file, fsync directory), followed by zeros up to the next
//!    `preallocate_bytes` boundary when it extends the file;
//! 2. `fdatasync` the segment;
//! 3. record the batch in the segment index (readers find only durable batches);
//! 4. advance the durable point, which resolves the appends of the batch in Lsn order.
//!
//! On any I/O error it poisons the journal and stops: it never retries an fsync.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use journaldb_proto::Lsn;
use journaldb_sync::Batch;
use parking_lot::RwLock;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::format::{SegmentHeader, align_up, encode_batch};
use crate::segment::{self, BatchLoc, Segment};
use crate::shared::Shared;

/// The flusher's state: where the next batch goes.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) active: Arc<Segment>,
    /// End of the last batch in the active segment.
    pub(crate) offset: u64,
    /// The segment's length: bytes past `offset` up to here are zeros written ahead.
    pub(crate) zeroed_end: u64,
    pub(crate) next_lsn: Lsn,
    /// Reused write buffer.
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    /// Runs the flusher on the current thread until the journal closes or fails.
    pub(crate) fn run_blocking(mut self) {
        // However the loop ends — closed, poisoned, or a bug that panics — every waiter
        // must learn that nothing more will become durable.
        let _stop = StopOnExit(self.shared.clone());
        let max_batch = self.shared.options.max_batch_bytes;
        while let Some(batch) = self.shared.batcher.take_blocking(max_batch) {
            if let Err(e) = self.write(batch) {
                self.shared.poison(&e.to_string());
                break;
            }
        }
    }

    /// Runs the flusher as a task until the journal closes or fails.
    pub(crate) async fn run_task(mut self) {
        let _stop = StopOnExit(self.shared.clone());
        let max_batch = self.shared.options.max_batch_bytes;
        let shared = self.shared.clone();
        while let Some(batch) =
            std::future::poll_fn(|cx| shared.batcher.poll_take(cx, max_batch)).await
        {
            if let Err(e) = self.write(batch) {
                self.shared.poison(&e.to_string());
                break;
            }
        }
    }

    fn write(&mut self, batch: Batch<Bytes>) -> Result<()> {
        assert_eq!(
            batch.first_seq,
            self.next_lsn.get(),
            "batch out of Lsn order"
        );
        let has_batches = self.offset > self.active.block_size;
        if self.offset >= self.shared.options.segment_bytes && has_batches {
            self.roll_over()?;
        }
        let block = self.active.block_size;
        self.buf.clear();
        encode_batch(&mut self.buf, self.next_lsn, &batch.items, block);
        let batch_len = self.buf.len() as u64;
        // Zero ahead: when the batch would extend the file, extend it by whole
        // `preallocate_bytes` of zeros in the same write. Most fdatasyncs then overwrite
        // allocated blocks and flush no metadata (no size change, no block allocation).
        let prealloc = self.shared.options.preallocate_bytes;
        if self.offset + batch_len > self.zeroed_end && prealloc > 0 {
            // Never past the size at which the segment rolls over.
            let rollover = align_up(self.shared.options.segment_bytes, block);
            let end = (self.offset + batch_len)
                .next_multiple_of(prealloc)
                .min(rollover)
                .max(self.offset + batch_len);
            self.buf.resize((end - self.offset) as usize, 0);
        }
        let path = &self.active.path;
        self.active
            .file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        self.active
            .file
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
        let loc = BatchLoc {
            first_lsn: self.next_lsn,
            count: batch.items.len() as u32,
            offset: self.offset,
        };
        if let Some(index) = self.active.index.write().as_mut() {
            index.push(loc);
        }
        self.offset += batch_len;
        self.zeroed_end = self
            .zeroed_end
            .max(self.offset + (self.buf.len() as u64 - batch_len));
        let stats = &self.shared.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .records
            .fetch_add(u64::from(loc.count), Ordering::Relaxed);
        stats
            .bytes
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.next_lsn = loc.end_lsn();
        // Release large buffers after an oversized record rather than keep them forever.
        if self.buf.capacity() > 2 * self.shared.options.max_batch_bytes as usize {
            self.buf = Vec::new();
        }
        self.shared.durable.advance(self.next_lsn.get());
        Ok(())
    }

    fn roll_over(&mut self) -> Result<()> {
        let shared = &self.shared;
        let block_size = shared.options.block_size;
        let segment = create_segment(&*shared.disk, &shared.dir, block_size, self.next_lsn)?;
        shared.segments.write().push(segment.clone());
        self.offset = segment.block_size;
        self.zeroed_end = segment.block_size;
        self.active = segment;
        Ok(())
    }
}

/// Stops the journal when the flusher exits, poisoning it if the flusher panicked.
struct StopOnExit(Arc<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison("the journal flusher panicked");
        }
        self.0.stop_flushing();
        // Nothing more will be written: the directory may be opened again, once a prefix
        // truncation in progress has finished (later ones see the lock gone and refuse).
        let _no_truncation = self.0.truncation.lock();
        self.0.lock.lock().take();
    }
}

/// Creates, and makes durable, a new empty segment of `dir` starting at `first_lsn`:
/// create, write the header block, fsync the file, fsync the directory.
pub(crate) fn create_segment(
    disk: &dyn Disk,
    dir: &Path,
    block_size: u32,
    first_lsn: Lsn,
) -> Result<Arc<Segment>> {
    let path = dir.join(segment::file_name(first_lsn));
    let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
    let file = disk.create_new(&path).map_err(|e| io("creating", e))?;
    let header = SegmentHeader {
        block_size,
        first_lsn,
    };
    file.write_all_at(&header.encode_block(), 0)
        .map_err(|e| io("writing the header of", e))?;
    file.sync_data().map_err(|e| io("syncing", e))?;
    disk.sync_dir(dir)
        .map_err(|e| io("syncing the directory of", e))?;
    Ok(Arc::new(Segment {
        first_lsn,
        path,
        file,
        block_size: u64::from(block_size),
        index: RwLock::new(Some(Vec::new())),
    }))
}
