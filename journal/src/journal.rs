//! [`Journal`]: opening (with recovery), appending with group commit, truncating, closing.
//! The write path itself is in `writer.rs`, reading in `reader.rs`, and the state they
//! share with the handle in `shared.rs`.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use bytes::Bytes;
use journaldb_proto::Lsn;
use journaldb_sync::{Batcher, Closed, DurablePoint};
use parking_lot::{Mutex, RwLock};

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::format::{HeaderError, SegmentHeader, frame_record};
use crate::options::{Flusher, JournalOptions};
use crate::reader::{Reader, Tail};
use crate::segment::{self, Segment, Stop};
use crate::shared::{Counters, Shared};
use crate::writer::{Writer, create_segment};

/// What the journal has written since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalStats {
    /// Batches written, each with one write and one `fdatasync`.
    pub batches: u64,
    /// Records made durable.
    pub records: u64,
    /// Bytes written to segments (framing and padding included).
    pub bytes: u64,
}

/// A local, durable, append-only log of records, positioned by dense [`Lsn`]s.
///
/// Appends from many tasks are batched by one flusher thread into one write and one
/// `fdatasync` per batch (group commit); an append resolves only once its record is
/// durable, and appends resolve in Lsn order. After a failed write or fsync the journal
/// is poisoned. Dropping the journal closes it (waiting for queued appends).
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

/// An append that has its [`Lsn`] but may not be durable yet; see [`Journal::submit`].
#[derive(Debug)]
#[must_use = "an append is acknowledged only by awaiting `durable()`"]
pub struct Submitted<'a> {
    shared: &'a Shared,
    lsn: Lsn,
}

impl Submitted<'_> {
    /// The position the record will have.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Resolves once the record is durable. An error means the record's fate is unknown:
    /// it may or may not be in the journal after a restart.
    pub async fn durable(self) -> Result<Lsn> {
        match self.shared.durable.wait_durable(self.lsn.get()).await {
            Ok(()) => Ok(self.lsn),
            Err(_halted) => Err(self.shared.stopped_error()),
        }
    }
}

impl Journal {
    /// Opens (creating if allowed and needed) the journal in `dir` on the real disk.
    pub fn open(dir: impl AsRef<Path>, options: JournalOptions) -> Result<Journal> {
        Self::open_on(Arc::new(crate::disk::RealDisk), dir, options)
    }

    /// Opens the journal in `dir` on `disk`, recovering it:
    /// - takes the directory lock ([`Error::Locked`] if held);
    /// - checks every segment header ([`Error::UnsupportedVersion`] for other versions);
    /// - removes a last segment whose creation a crash interrupted (header invalid, no
    ///   batch in it);
    /// - scans the last segment: an invalid final batch (or the zeros written ahead of the
    ///   log) is truncated (a crash tore it); an
    ///   invalid batch followed by a valid one is [`Error::Corruption`] naming segment and
    ///   offset, and nothing is changed;
    /// - fsyncs the recovered tail (it may have survived only in the page cache).
    ///
    /// Sealed segments are checked when read (and by [`Journal::verify`]), so opening
    /// costs the same however long the journal is.
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: impl AsRef<Path>,
        options: JournalOptions,
    ) -> Result<Journal> {
        options.validate()?;
        let runtime = match options.flusher {
            Flusher::Thread => None,
            Flusher::Task => Some(tokio::runtime::Handle::try_current().map_err(|e| {
                Error::InvalidOptions(format!("a task flusher needs a tokio runtime: {e}"))
            })?),
        };
        let dir = dir.as_ref().to_path_buf();
        if options.create {
            disk.create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating directory {}", dir.display()), e))?;
        }
        let lock = disk.lock_dir(&dir).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => Error::Locked { dir: dir.clone() },
            _ => Error::io(format!("locking directory {}", dir.display()), e),
        })?;
        let mut segments = open_segments(&*disk, &dir)?;
        let (next_lsn, offset) = match segments.last() {
            Some(last) => {
                let scan = recover_tail(last)?;
                *last.index.write() = Some(scan.batches);
                (scan.next_lsn, scan.end_offset)
            }
            None => {
                let first = create_segment(&*disk, &dir, options.block_size, Lsn::FIRST)?;
                segments.push(first);
                (Lsn::FIRST, u64::from(options.block_size))
            }
        };
        // Recovery truncated the last segment to its last valid batch (or it is new).
        let zeroed_end = offset;
        let active = segments.last().cloned().expect("at least one segment");
        let shared = Shared {
            dir,
            disk,
            batcher: Batcher::new(next_lsn.get(), options.max_queued_bytes),
            durable: DurablePoint::new(next_lsn.get()),
            options,
            segments: RwLock::new(segments),
            poison: Mutex::new(None),
            truncation: Mutex::new(()),
            lock: Mutex::new(Some(lock)),
            stats: Counters::default(),
        };
        let shared = Arc::new(shared);
        let writer = Writer {
            shared: shared.clone(),
            active,
            offset,
            zeroed_end,
            next_lsn,
            buf: Vec::new(),
        };
        let flusher = match runtime {
            None => {
                let builder = std::thread::Builder::new().name("journal-flusher".into());
                #[allow(
                    clippy::disallowed_methods,
                    reason = "the journal's one flusher thread (ARCHITECTURE §5)"
                )]
                let thread = builder
                    .spawn(move || writer.run_blocking())
                    .map_err(|e| Error::io("starting the flusher thread", e))?;
                Some(thread)
            }
            Some(runtime) => {
                runtime.spawn(writer.run_task());
                None
            }
        };
        Ok(Journal {
            shared,
            flusher: Mutex::new(flusher),
        })
    }

    /// Appends `payload` and resolves with its [`Lsn`] once it is durable.
    ///
    /// Errors: [`Error::RecordTooLarge`] (nothing written), [`Error::Poisoned`] or
    /// [`Error::Closed`]. After `Poisoned` or `Closed` the record's fate is unknown.
    pub async fn append(&self, payload: Bytes) -> Result<Lsn> {
        self.submit(payload).await?.durable().await
    }

    /// Queues `payload` and resolves once it has an [`Lsn`] (waiting while the queue is
    /// full); await [`Submitted::durable`] for the acknowledgement. This lets a caller
    /// learn a record's position before it is durable, or pipeline appends.
    pub async fn submit(&self, payload: Bytes) -> Result<Submitted<'_>> {
        let (frame, frame_len) = self.frame(&payload)?;
        let pushed = self.shared.batcher.push(frame, frame_len).await;
        self.submitted(pushed)
    }

    /// The record's frame and its length, if the journal takes a record that large.
    fn frame(&self, payload: &[u8]) -> Result<(Bytes, u64)> {
        let limit = self.shared.options.max_record_bytes;
        let size = payload.len() as u64;
        if size > limit {
            return Err(Error::RecordTooLarge { size, limit });
        }
        let frame = frame_record(payload);
        let frame_len = frame.len() as u64;
        Ok((frame, frame_len))
    }

    /// The handle of a record the batcher queued, or why it did not.
    fn submitted(&self, pushed: std::result::Result<u64, Closed<Bytes>>) -> Result<Submitted<'_>> {
        match pushed {
            Ok(seq) => Ok(Submitted {
                shared: &self.shared,
                lsn: Lsn::new(seq),
            }),
            Err(_closed) => Err(self.shared.stopped_error()),
        }
    }

    /// Resolves once the queue is within its byte limit
    /// ([`crate::JournalOptions::max_queued_bytes`]), or the journal has stopped. With
    /// [`Journal::submit_now`], for a caller that must queue while holding a synchronous
    /// lock: wait for room first, then lock and submit.
    pub async fn room(&self) {
        self.shared.batcher.room(0).await;
    }

    /// Queues `payload` at once, even past the queue's byte limit ([`Journal::room`] is
    /// how a caller keeps to it), and returns its position; await
    /// [`Submitted::durable`] for the acknowledgement.
    pub fn submit_now(&self, payload: Bytes) -> Result<Submitted<'_>> {
        let (frame, frame_len) = self.frame(&payload)?;
        self.submitted(self.shared.batcher.push_now(frame, frame_len))
    }

    /// The Lsn of the first record still held (after prefix truncation).
    pub fn first_lsn(&self) -> Lsn {
        self.shared.segments.read()[0].first_lsn
    }

    /// The largest record this journal accepts, in bytes.
    pub fn max_record_bytes(&self) -> u64 {
        self.shared.options.max_record_bytes
    }

    /// The Lsn the next submitted record gets: every record below it has been handed out
    /// (queued, maybe not yet durable).
    pub fn submitted_end(&self) -> Lsn {
        Lsn::new(self.shared.batcher.next_seq())
    }

    /// Every record below this Lsn is durable; the next append gets at least this Lsn.
    pub fn durable_end(&self) -> Lsn {
        Lsn::new(self.shared.durable.end())
    }

    /// Resolves once every record below `end` is durable; an error if one of them never
    /// will be (the journal failed or closed first).
    pub async fn durable_through(&self, end: Lsn) -> Result<()> {
        let Some(last) = end.get().checked_sub(1).filter(|l| *l > 0) else {
            return Ok(());
        };
        match self.shared.durable.wait_durable(last).await {
            Ok(()) => Ok(()),
            Err(_halted) => Err(self.shared.stopped_error()),
        }
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shared.segments.read().len()
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Whether an I/O error has poisoned the journal.
    pub fn is_poisoned(&self) -> bool {
        self.shared.is_poisoned()
    }

    /// Totals since open: batches (= fsyncs), records and bytes written.
    pub fn stats(&self) -> JournalStats {
        let c = &self.shared.stats;
        JournalStats {
            batches: c.batches.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Drops whole segments all of whose records are below `lsn`; never the segment being
    /// written. Returns the new [`Journal::first_lsn`]. Each deletion is made durable before
    /// the next begins, so after a crash the remaining segments are still contiguous.
    ///
    /// A journal that stopped (closed or poisoned) drops nothing: its directory may already
    /// belong to the next process that opened it ([`Error::Closed`] or the poison). A failed
    /// directory sync poisons the journal: the deletion may or may not survive a crash, and
    /// a later one that does survive would leave a gap, so nothing more is deleted (or
    /// written) until a restart recovers the directory as it is. A file that cannot be
    /// removed is an error and nothing changes: the next call tries again.
    pub fn truncate_prefix(&self, lsn: Lsn) -> Result<Lsn> {
        let shared = &self.shared;
        // Held while a deletion runs; the flusher takes it before it releases the
        // directory lock, so no deletion outlives the journal's hold on the directory.
        let _one_at_a_time = shared.truncation.lock();
        if shared.lock.lock().is_none() || shared.is_poisoned() {
            return Err(shared.stopped_error());
        }
        loop {
            let oldest = {
                let segments = shared.segments.read();
                match segments.get(1) {
                    Some(next) if next.first_lsn <= lsn => segments[0].clone(),
                    _ => break,
                }
            };
            shared
                .disk
                .remove_file(&oldest.path)
                .map_err(|e| Error::io(format!("removing {}", oldest.path.display()), e))?;
            shared.segments.write().remove(0);
            if let Err(e) = shared.disk.sync_dir(&shared.dir) {
                shared.poison("a directory sync after removing a segment failed");
                return Err(Error::io(
                    format!("syncing directory {}", shared.dir.display()),
                    e,
                ));
            }
        }
        Ok(self.first_lsn())
    }

    /// Reads and checks every segment completely (checksums, Lsn density, nothing after
    /// the end of a sealed segment). Returns the number of records checked.
    pub fn verify(&self) -> Result<u64> {
        let segments = self.shared.segments.read().clone();
        let durable_end = self.durable_end();
        let mut records = 0;
        for (i, seg) in segments.iter().enumerate() {
            let end = segments.get(i + 1).map_or(durable_end, |s| s.first_lsn);
            seg.build_index(end)?;
            records += end.distance_from(seg.first_lsn);
        }
        Ok(records)
    }

    /// Closes the journal: refuses new appends, waits until every queued append is
    /// durable (or failed), stops the flusher and releases the directory lock. Tailing
    /// readers end. Returns [`Error::Poisoned`] if an I/O error had poisoned it.
    ///
    /// With [`Flusher::Task`] it does not wait: the flusher task writes what is queued
    /// and then releases the lock.
    pub fn close(&self) -> Result<()> {
        self.shared.batcher.close();
        if let Some(flusher) = self.flusher.lock().take() {
            // The flusher catches its own errors; a panic there is a bug worth surfacing.
            if let Err(panic) = flusher.join() {
                std::panic::resume_unwind(panic);
            }
        }
        match self.shared.stopped_error() {
            Error::Closed => Ok(()),
            poisoned => Err(poisoned),
        }
    }

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
        Ok(Reader::new(self.shared().clone(), from))
    }

    /// A tailing reader from `from`; see [`Tail`].
    pub fn tail(&self, from: Lsn) -> Result<Tail> {
        Ok(Tail::new(self.read_from(from)?))
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shared.batcher.close();
        if let Some(flusher) = self.flusher.lock().take() {
            let _ = flusher.join();
        }
    }
}

/// Lists and opens the segments of `dir` and checks their headers; removes a last segment
/// whose creation was torn by a crash.
fn open_segments(disk: &dyn Disk, dir: &Path) -> Result<Vec<Arc<Segment>>> {
    let names = disk
        .list_dir(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let mut found = Vec::new();
    for name in names {
        match segment::parse_file_name(&name) {
            None => continue,
            Some(Ok(first)) => found.push((first, dir.join(name))),
            Some(Err(())) => {
                return Err(Error::Corruption {
                    segment: dir.join(name),
                    offset: 0,
                    reason: "segment file name is not a 20-digit Lsn".into(),
                });
            }
        }
    }
    found.sort();
    let count = found.len();
    let mut segments = Vec::with_capacity(count);
    for (i, (first_lsn, path)) in found.into_iter().enumerate() {
        let io = |e| Error::io(format!("opening {}", path.display()), e);
        let file = disk.open(&path).map_err(io)?;
        let len = file.len().map_err(io)?;
        let mut head = vec![0u8; len.min(crate::format::SEGMENT_HEADER_BYTES as u64) as usize];
        file.read_exact_at(&mut head, 0).map_err(io)?;
        let corrupt = |reason: String| Error::Corruption {
            segment: path.clone(),
            offset: 0,
            reason,
        };
        let header = match SegmentHeader::decode(&head) {
            Ok(h) => h,
            Err(HeaderError::UnsupportedVersion(found)) => {
                return Err(Error::UnsupportedVersion {
                    segment: path,
                    found,
                    supported: crate::format::FORMAT_VERSION,
                });
            }
            Err(HeaderError::Invalid(reason)) => {
                if i + 1 == count && is_torn_creation(&*file, &path, len)? {
                    disk.remove_file(&path).map_err(io)?;
                    disk.sync_dir(dir)
                        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))?;
                    continue;
                }
                return Err(corrupt(reason));
            }
        };
        if header.first_lsn != first_lsn {
            return Err(corrupt(format!(
                "header says the segment starts at {}, its name says {first_lsn}",
                header.first_lsn
            )));
        }
        segments.push(Arc::new(Segment {
            first_lsn,
            path,
            file,
            block_size: u64::from(header.block_size),
            index: RwLock::new(None),
        }));
    }
    Ok(segments)
}

/// A segment header is fsynced (with its directory) before any batch is written to it, so
/// a segment with an invalid header and no batch anywhere in it is one whose creation a
/// crash interrupted; it never held a record. Any batch in it means damage instead.
fn is_torn_creation(file: &dyn crate::disk::DiskFile, path: &Path, len: u64) -> Result<bool> {
    const MIN_BLOCK: u64 = 512;
    if len > 1 << 20 {
        return Ok(false);
    }
    Ok(segment::find_valid_batch(file, path, MIN_BLOCK, MIN_BLOCK)?.is_none())
}

/// Scans the last segment and repairs a torn tail; see [`Journal::open_on`].
fn recover_tail(last: &Segment) -> Result<segment::Scan> {
    let path = &last.path;
    let scan = segment::scan(&*last.file, path, last.block_size, last.first_lsn)?;
    let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
    match &scan.stop {
        None => {}
        Some(Stop::Misplaced { offset, reason }) => {
            return Err(Error::Corruption {
                segment: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            });
        }
        Some(Stop::Invalid { offset, reason }) => {
            let next = *offset + last.block_size;
            if let Some(valid) =
                segment::find_valid_batch(&*last.file, path, last.block_size, next)?
            {
                return Err(Error::Corruption {
                    segment: path.clone(),
                    offset: *offset,
                    reason: format!(
                        "{reason}, yet a valid batch follows at offset {valid}: \
                         this is damage in the middle of the log, not a torn write"
                    ),
                });
            }
            last.file
                .set_len(*offset)
                .map_err(|e| io("truncating the torn tail of", e))?;
        }
    }
    last.file
        .sync_data()
        .map_err(|e| io("syncing the recovered tail of", e))?;
    Ok(scan)
}
