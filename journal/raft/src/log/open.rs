//! Creating a replica's log, and recovering it on open: list and check the segments, scan
//! their writes, cut off a torn final write, refuse damage anywhere else, then replay the
//! parts in order to rebuild the index of entries and the last durable state.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use journaldb_journal::disk::{Disk, DiskFile};
use journaldb_proto::Lsn;
use parking_lot::{Mutex, RwLock};
use raft::prelude::ConfState;

use super::format::{
    self, EntrySpan, FORMAT_VERSION, HeaderError, LogId, LogState, Part, ReadPart, SegmentHeader,
    WRITE_HEADER_BYTES, WriteAt, WriteHeader,
};
use super::writer::{LogWriter, create_segment};
use super::{
    Loc, LogError, LogOptions, LogResult, RaftLog, SEGMENT_SUFFIX, SegmentFile, Shared, Slot, View,
};

impl RaftLog {
    /// Creates the log of a new replica in `dir`, with the group's first configuration.
    /// Refuses a directory that already holds a log.
    pub fn create(
        disk: Arc<dyn Disk>,
        dir: impl Into<PathBuf>,
        id: LogId,
        options: LogOptions,
        conf: ConfState,
    ) -> LogResult<LogWriter> {
        options.check()?;
        let dir = dir.into();
        let lock = lock(&*disk, &dir)?;
        if !list_segments(&*disk, &dir)?.is_empty() {
            return Err(LogError::AlreadyExists { dir });
        }
        let state = LogState {
            first_lsn: Lsn::FIRST,
            confs: vec![(0, conf)],
            ..LogState::default()
        };
        let first_write = [Part::State(state.clone())];
        let (segment, end) = create_segment(&*disk, &dir, id, options.block_size, 1, &first_write)?;
        let view = View {
            state: state.clone(),
            durable: state,
            ..View::default()
        };
        let log = RaftLog::from_parts(id, dir, options, view, vec![segment.clone()]);
        Ok(LogWriter::new(
            log,
            disk,
            lock,
            segment,
            options.block_size.into(),
            end,
            end,
        ))
    }

    /// Opens the log of a replica in `dir`, recovering what the last run left.
    /// [`LogError::NoLog`] if there is none.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: impl Into<PathBuf>,
        id: LogId,
        options: LogOptions,
    ) -> LogResult<LogWriter> {
        options.check()?;
        let dir = dir.into();
        let lock = lock(&*disk, &dir)?;
        let segments = open_segments(&*disk, &dir, id)?;
        let Some(last) = segments.last() else {
            return Err(LogError::NoLog { dir });
        };
        let mut writes = Vec::new();
        let count = segments.len();
        let mut tail = (0, 0);
        for (i, (segment, block)) in segments.iter().enumerate() {
            let scan = scan(&*segment.file, &segment.path, *block, segment.seq)?;
            let is_last = i + 1 == count;
            let end = settle(segment, *block, &scan, is_last)?;
            if is_last {
                tail = end;
            }
            writes.extend(
                scan.writes
                    .into_iter()
                    .map(|(offset, parts)| (segment, offset, parts)),
            );
        }
        let view = replay(&dir, &writes)?;
        let (active, block) = last.clone();
        let files = segments.into_iter().map(|(s, _)| s).collect();
        let log = RaftLog::from_parts(id, dir, options, view, files);
        Ok(LogWriter::new(
            log, disk, lock, active, block, tail.0, tail.1,
        ))
    }

    fn from_parts(
        id: LogId,
        dir: PathBuf,
        options: LogOptions,
        view: View,
        segments: Vec<Arc<SegmentFile>>,
    ) -> RaftLog {
        RaftLog {
            shared: Arc::new(Shared {
                id,
                dir,
                options,
                view: Mutex::new(view),
                segments: RwLock::new(segments.into_iter().map(|s| (s.seq, s)).collect()),
                poison: Mutex::new(None),
            }),
        }
    }
}

fn lock(disk: &dyn Disk, dir: &Path) -> LogResult<journaldb_journal::disk::DirLock> {
    disk.create_dir_all(dir)
        .map_err(|e| LogError::io(format!("creating {}", dir.display()), e))?;
    disk.lock_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => LogError::Locked {
            dir: dir.to_owned(),
        },
        _ => LogError::io(format!("locking {}", dir.display()), e),
    })
}

/// The segment files of `dir`, by sequence number.
fn list_segments(disk: &dyn Disk, dir: &Path) -> LogResult<Vec<(u64, PathBuf)>> {
    let names = disk
        .list_dir(dir)
        .map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
    let mut found = Vec::new();
    for name in names {
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(seq) if stem.len() == 20 && seq > 0 => found.push((seq, dir.join(name))),
            _ => {
                return Err(LogError::Corruption {
                    segment: dir.join(name),
                    offset: 0,
                    reason: "segment file name is not a 20-digit sequence number".into(),
                });
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Opens and checks every segment: identity, version, consecutive sequence numbers. A last
/// segment whose creation a crash tore (no valid header, or no valid write: the first
/// write goes in with the header) is removed.
fn open_segments(
    disk: &dyn Disk,
    dir: &Path,
    id: LogId,
) -> LogResult<Vec<(Arc<SegmentFile>, u64)>> {
    let found = list_segments(disk, dir)?;
    let count = found.len();
    let mut segments: Vec<(Arc<SegmentFile>, u64)> = Vec::with_capacity(count);
    for (i, (seq, path)) in found.into_iter().enumerate() {
        let io = |e| LogError::io(format!("opening {}", path.display()), e);
        let file = disk.open(&path).map_err(io)?;
        let len = file.len().map_err(io)?;
        let mut head = vec![0u8; len.min(format::SEGMENT_HEADER_BYTES as u64) as usize];
        file.read_exact_at(&mut head, 0).map_err(io)?;
        let corrupt = |reason: String| LogError::Corruption {
            segment: path.clone(),
            offset: 0,
            reason,
        };
        let is_last = i + 1 == count;
        let header = match SegmentHeader::decode(&head) {
            Ok(h) => Some(h),
            Err(HeaderError::UnsupportedVersion(found)) => {
                return Err(LogError::UnsupportedVersion {
                    segment: path,
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            Err(HeaderError::Invalid(_))
                if is_last && is_torn_creation(&*file, &path, len, seq)? =>
            {
                None
            }
            Err(HeaderError::Invalid(reason)) => return Err(corrupt(reason)),
        };
        let torn = match header {
            None => true,
            // A first write that did not survive: nothing of this segment was ever durable.
            Some(h) => {
                is_last
                    && scan(&*file, &path, u64::from(h.block_size), seq)?
                        .writes
                        .is_empty()
            }
        };
        if torn {
            disk.remove_file(&path).map_err(io)?;
            disk.sync_dir(dir)
                .map_err(|e| LogError::io(format!("syncing {}", dir.display()), e))?;
            continue;
        }
        let header = header.expect("not torn");
        if header.id != id {
            return Err(LogError::WrongLog {
                segment: path,
                expected: id,
                found: header.id,
            });
        }
        if header.seq != seq {
            return Err(corrupt(format!(
                "header says segment {}, its name {seq}",
                header.seq
            )));
        }
        if let Some((prev, _)) = segments.last()
            && seq != prev.seq + 1
        {
            return Err(corrupt(format!(
                "segment {seq} follows segment {}",
                prev.seq
            )));
        }
        segments.push((
            Arc::new(SegmentFile {
                seq,
                path,
                file,
                max_index: Mutex::new(0),
            }),
            u64::from(header.block_size),
        ));
    }
    Ok(segments)
}

/// A header is written with the segment's first write and both are fsynced, with the
/// directory, before any later write: a segment with an invalid header and no valid write
/// anywhere is one whose creation a crash interrupted. Any valid write means damage.
fn is_torn_creation(file: &dyn DiskFile, path: &Path, len: u64, seq: u64) -> LogResult<bool> {
    const MIN_BLOCK: u64 = 512;
    if len > 1 << 20 {
        return Ok(false);
    }
    Ok(find_valid_write(file, path, MIN_BLOCK, MIN_BLOCK, seq)?.is_none())
}

/// What [`scan`] found in one segment.
struct Scan {
    /// `(offset, parts)` of each valid write, in order.
    writes: Vec<(u64, Vec<ReadPart>)>,
    /// Offset just past the last valid write.
    end: u64,
    /// Where and why the scan stopped before the end of the file.
    stop: Option<(u64, String)>,
    /// The file's length.
    len: u64,
}

fn scan(file: &dyn DiskFile, path: &Path, block: u64, seq: u64) -> LogResult<Scan> {
    let len = file
        .len()
        .map_err(|e| LogError::io(format!("reading the length of {}", path.display()), e))?;
    let mut scan = Scan {
        writes: Vec::new(),
        end: block,
        stop: None,
        len,
    };
    while scan.end < len {
        match read_write_at(
            file,
            path,
            WriteAt {
                seq,
                offset: scan.end,
            },
            len,
        )? {
            Ok((header, parts)) => {
                scan.writes.push((scan.end, parts));
                scan.end += header.disk_len(block);
            }
            Err(reason) => {
                scan.stop = Some((scan.end, reason));
                break;
            }
        }
    }
    Ok(scan)
}

/// Decides what a segment's scan means: its end is clean (end of file, or only the zeros
/// written ahead), a torn final write (cut off, last segment only), or damage. Returns the
/// segment's `(end of writes, zeroed end)` for the writer.
fn settle(segment: &SegmentFile, block: u64, scan: &Scan, is_last: bool) -> LogResult<(u64, u64)> {
    let path = &segment.path;
    let Some((offset, reason)) = &scan.stop else {
        return Ok((scan.end, scan.len));
    };
    if is_zero_from(&*segment.file, path, *offset)? {
        return Ok((scan.end, scan.len));
    }
    let corrupt = |reason: String| LogError::Corruption {
        segment: path.clone(),
        offset: *offset,
        reason,
    };
    if let Some(valid) = find_valid_write(&*segment.file, path, block, offset + block, segment.seq)?
    {
        return Err(corrupt(format!(
            "{reason}, yet a valid write follows at offset {valid}: damage in the middle \
             of the log, not a torn write"
        )));
    }
    if !is_last {
        return Err(corrupt(format!("{reason}, in a sealed segment")));
    }
    let io = |what: &str, e| LogError::io(format!("{what} {}", path.display()), e);
    segment
        .file
        .set_len(*offset)
        .map_err(|e| io("truncating the torn tail of", e))?;
    segment
        .file
        .sync_data()
        .map_err(|e| io("syncing the recovered tail of", e))?;
    Ok((scan.end, *offset))
}

/// Rebuilds the log from its writes, oldest first, in two steps. First every entry is
/// replayed as it was written, whatever the final truncation point: an entry at or below
/// the last one replaces the tail from there (the Ready that wrote it truncated the log in
/// the same write), and a reset (snapshot) empties the log. Only then are the entries at
/// or below the last durable truncation point dropped, and what remains checked: indexes
/// consecutive from the truncation point, terms never going down, records dense from the
/// truncation point's first Lsn, the commit index within the log.
fn replay(dir: &Path, writes: &[(&Arc<SegmentFile>, u64, Vec<ReadPart>)]) -> LogResult<View> {
    let corrupt = |segment: &Path, offset: u64, reason: String| LogError::Corruption {
        segment: segment.to_owned(),
        offset,
        reason,
    };
    let state = writes
        .iter()
        .flat_map(|(_, _, parts)| parts)
        .filter_map(|part| match part {
            ReadPart::State(state) => Some(state),
            _ => None,
        })
        .next_back()
        .cloned()
        .ok_or_else(|| corrupt(dir, 0, "the log holds no state".into()))?;
    // index → (segment, offset of its write, span), as written.
    let mut entries: BTreeMap<u64, (&Arc<SegmentFile>, u64, EntrySpan)> = BTreeMap::new();
    for (segment, offset, parts) in writes {
        for part in parts {
            match part {
                ReadPart::Entries(spans) => {
                    let first = spans[0].index;
                    entries.split_off(&first);
                    entries.extend(spans.iter().map(|s| (s.index, (*segment, *offset, *s))));
                }
                ReadPart::Reset { .. } => entries.clear(),
                ReadPart::State(_) => {}
            }
        }
    }
    let (floor, floor_term) = state.truncated;
    let live = entries.split_off(&(floor + 1));
    let mut slots = VecDeque::with_capacity(live.len());
    let mut lsn_end = state.first_lsn.get();
    let mut term = floor_term;
    for (expected, (index, (segment, offset, span))) in (floor + 1..).zip(live) {
        let fail = |reason: String| Err(corrupt(&segment.path, offset, reason));
        if index != expected {
            return fail(format!("entry {index} where entry {expected} belongs"));
        }
        if span.term < term {
            return fail(format!(
                "entry {index} has term {}, after term {term}",
                span.term
            ));
        }
        term = span.term;
        if let Some((first, count)) = span.records {
            if first != lsn_end {
                return fail(format!(
                    "entry {index} holds records from Lsn {first}, but the log's records end \
                     at Lsn {lsn_end}"
                ));
            }
            let Some(end) = first.checked_add(count) else {
                return fail(format!("entry {index}: Lsns past the largest"));
            };
            lsn_end = end;
        }
        slots.push_back(Slot {
            term: span.term,
            lsn_end,
            number: 0,
            loc: Some(Loc {
                seq: segment.seq,
                offset: offset + WRITE_HEADER_BYTES as u64 + u64::from(span.offset),
                len: span.len,
            }),
            cached: None,
        });
        // Only entries still in the log keep a segment: the others are dead, and whatever
        // killed them (a replacement, a reset, compaction) is in this segment or a later one.
        let mut max = segment.max_index.lock();
        *max = (*max).max(index);
    }
    let last = floor + slots.len() as u64;
    if state.hard_state.commit > last {
        return Err(corrupt(
            dir,
            0,
            format!(
                "commit index {} past the last entry {last}",
                state.hard_state.commit
            ),
        ));
    }
    Ok(View {
        durable: state.clone(),
        state,
        slots,
        cached_from: last + 1,
        ..View::default()
    })
}

/// Reads and checks the write at `offset`: `Ok(Err(reason))` if it is not a valid write.
fn read_write_at(
    file: &dyn DiskFile,
    path: &Path,
    at: WriteAt,
    len: u64,
) -> LogResult<Result<(WriteHeader, Vec<ReadPart>), String>> {
    let offset = at.offset;
    let io = |e| LogError::io(format!("reading {}", path.display()), e);
    if offset + WRITE_HEADER_BYTES as u64 > len {
        return Ok(Err("file ends inside a write header".into()));
    }
    let mut head = [0u8; WRITE_HEADER_BYTES];
    file.read_exact_at(&mut head, offset).map_err(io)?;
    let Some(header) = WriteHeader::decode(&head) else {
        return Ok(Err("no write header".into()));
    };
    let body_end = offset + WRITE_HEADER_BYTES as u64 + u64::from(header.body_len);
    if body_end > len {
        return Ok(Err("file ends inside the write".into()));
    }
    let mut body = vec![0u8; header.body_len as usize];
    file.read_exact_at(&mut body, offset + WRITE_HEADER_BYTES as u64)
        .map_err(io)?;
    Ok(header.decode_body(&body, at).map(|parts| (header, parts)))
}

/// The offset of the first valid write at a `block`-aligned offset in `from..`, if any.
fn find_valid_write(
    file: &dyn DiskFile,
    path: &Path,
    block: u64,
    from: u64,
    seq: u64,
) -> LogResult<Option<u64>> {
    let len = file
        .len()
        .map_err(|e| LogError::io(format!("reading the length of {}", path.display()), e))?;
    let mut offset = format::align_up(from, block);
    while offset < len {
        if read_write_at(file, path, WriteAt { seq, offset }, len)?.is_ok() {
            return Ok(Some(offset));
        }
        offset += block;
    }
    Ok(None)
}

/// Whether every byte of the file from `offset` on is zero.
fn is_zero_from(file: &dyn DiskFile, path: &Path, offset: u64) -> LogResult<bool> {
    const CHUNK: u64 = 64 * 1024;
    let len = file
        .len()
        .map_err(|e| LogError::io(format!("reading the length of {}", path.display()), e))?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut at = offset;
    while at < len {
        let n = CHUNK.min(len - at) as usize;
        file.read_exact_at(&mut buf[..n], at)
            .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}
