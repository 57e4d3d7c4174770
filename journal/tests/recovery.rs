//! Recovery: clean reopen, torn tails, mid-log corruption, unknown versions, rollover and
//! prefix truncation.

use std::fs;

use journaldb_journal::disk::CrashDisk;
use journaldb_journal::{Error, Journal, JournalOptions, Lsn};

use crate::common::{append_sequentially, dir, open, payload, read_all, runtime, small_options};

fn segment_paths(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<_> = fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jseg"))
        .collect();
    segs.sort();
    segs
}

fn snapshot(path: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    segment_paths(path)
        .into_iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect()
}

#[test]
fn reopen_after_clean_shutdown_keeps_everything_and_continues_the_lsns() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let journal = Journal::open(tmp.path(), small_options()).unwrap();
    append_sequentially(&rt, &journal, 50, 100);
    journal.close().unwrap();
    drop(journal);

    let journal = Journal::open(tmp.path(), small_options()).unwrap();
    let records = read_all(&journal);
    assert_eq!(records.len(), 50);
    for (i, (lsn, p)) in records.iter().enumerate() {
        assert_eq!(*lsn, Lsn::new(i as u64 + 1));
        assert_eq!(*p, payload(i, 100));
    }
    let next = rt.block_on(journal.append(payload(50, 10))).unwrap();
    assert_eq!(next, Lsn::new(51));
    journal.verify().unwrap();
}

#[test]
fn an_invalid_final_batch_is_truncated() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let options = JournalOptions {
        block_size: 512,
        preallocate_bytes: 0,
        ..JournalOptions::default()
    };
    let journal = Journal::open(tmp.path(), options.clone()).unwrap();
    append_sequentially(&rt, &journal, 5, 100);
    drop(journal);
    // Each sequential append is one 512-byte batch after the 512-byte header block.
    let seg = &segment_paths(tmp.path())[0];
    let mut bytes = fs::read(seg).unwrap();
    assert_eq!(bytes.len(), 512 * 6);
    bytes[512 * 5 + 40] ^= 0xff;
    fs::write(seg, &bytes).unwrap();

    let journal = Journal::open(tmp.path(), options).unwrap();
    assert_eq!(
        read_all(&journal).len(),
        4,
        "only the damaged last batch is dropped"
    );
    assert_eq!(fs::metadata(seg).unwrap().len(), 512 * 5);
    assert_eq!(
        rt.block_on(journal.append(payload(9, 1))).unwrap(),
        Lsn::new(5)
    );
}

#[test]
fn corruption_in_the_middle_of_the_log_is_refused_and_nothing_is_deleted() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let options = JournalOptions {
        block_size: 512,
        ..JournalOptions::default()
    };
    let journal = Journal::open(tmp.path(), options.clone()).unwrap();
    append_sequentially(&rt, &journal, 10, 100);
    drop(journal);
    let seg = segment_paths(tmp.path())[0].clone();
    let mut bytes = fs::read(&seg).unwrap();
    let damaged_batch = 512 * 3; // the third record's batch
    bytes[damaged_batch + 60] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();
    let before = snapshot(tmp.path());

    let err = Journal::open(tmp.path(), options).unwrap_err();
    match &err {
        Error::Corruption {
            segment, offset, ..
        } => {
            assert_eq!(segment, &seg);
            assert_eq!(*offset, damaged_batch as u64);
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&seg.display().to_string()), "{message}");
    assert!(message.contains("offset 1536"), "{message}");
    assert!(!err.is_retryable());
    assert_eq!(
        snapshot(tmp.path()),
        before,
        "open must not change corrupt files"
    );
}

#[test]
fn damage_in_a_sealed_segment_is_reported_when_read() {
    let rt = runtime();
    let disk = CrashDisk::default();
    let journal = open(&disk, small_options()).unwrap();
    append_sequentially(&rt, &journal, 60, 300);
    assert!(journal.segment_count() > 2);
    drop(journal);
    let first_segment = disk
        .files()
        .into_iter()
        .find(|p| p.ends_with("00000000000000000001.jseg"))
        .unwrap();
    assert!(disk.flip_byte(&first_segment, 512 * 2 + 100, 0x10));

    let journal = open(&disk, small_options()).unwrap();
    let err = journal
        .read_from(Lsn::FIRST)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err();
    assert!(
        matches!(err, Error::Corruption { offset: 1024, .. }),
        "{err:?}"
    );
    assert!(matches!(journal.verify(), Err(Error::Corruption { .. })));
}

#[test]
fn an_unknown_format_version_is_refused() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let journal = Journal::open(tmp.path(), small_options()).unwrap();
    append_sequentially(&rt, &journal, 3, 10);
    drop(journal);
    let seg = &segment_paths(tmp.path())[0];
    let mut bytes = fs::read(seg).unwrap();
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    fs::write(seg, &bytes).unwrap();

    let err = Journal::open(tmp.path(), small_options()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 7,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("version 7"));
    assert_eq!(fs::read(seg).unwrap(), bytes, "nothing changed");
}

/// A closed journal deletes nothing: its directory may already be another process's.
#[test]
fn a_closed_journal_refuses_to_truncate() {
    let rt = runtime();
    let disk = CrashDisk::default();
    let journal = open(&disk, small_options()).unwrap();
    append_sequentially(&rt, &journal, 100, 300);
    let segments = journal.segment_count();
    journal.close().unwrap();
    assert!(matches!(
        journal.truncate_prefix(Lsn::new(90)),
        Err(Error::Closed)
    ));
    assert_eq!(journal.segment_count(), segments);
    let reopened = open(&disk, small_options()).unwrap();
    assert_eq!(reopened.first_lsn(), Lsn::FIRST, "nothing was deleted");
}

/// After a failed directory sync the deletion may or may not last: the journal is
/// poisoned, deletes nothing more (a later deletion that lasts would leave a gap), and a
/// reopen recovers whatever the directory holds, contiguous.
#[test]
fn a_failed_directory_sync_during_truncation_poisons_the_journal() {
    let rt = runtime();
    let disk = CrashDisk::default();
    let journal = open(&disk, small_options()).unwrap();
    append_sequentially(&rt, &journal, 200, 300);
    disk.fail_next_syncs(1);
    assert!(matches!(
        journal.truncate_prefix(Lsn::new(150)),
        Err(Error::Io { .. })
    ));
    assert!(journal.is_poisoned());
    let segments = journal.segment_count();
    assert!(matches!(
        journal.truncate_prefix(Lsn::new(150)),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(journal.segment_count(), segments, "nothing more deleted");
    let _ = journal.close();
    drop(journal);
    let reopened = open(&disk, small_options()).unwrap();
    reopened.verify().unwrap();
    assert_eq!(reopened.durable_end(), Lsn::new(201));
}

#[test]
fn segments_roll_over_and_prefix_truncation_drops_whole_segments() {
    let rt = runtime();
    let disk = CrashDisk::default();
    let journal = open(&disk, small_options()).unwrap();
    append_sequentially(&rt, &journal, 200, 300);
    let segments = journal.segment_count();
    assert!(
        segments >= 10,
        "8 KiB segments of 512-byte batches: got {segments}"
    );
    assert_eq!(read_all(&journal).len(), 200);

    let first = journal.truncate_prefix(Lsn::new(100)).unwrap();
    assert!(first > Lsn::FIRST && first <= Lsn::new(100), "{first}");
    assert!(journal.segment_count() < segments);
    assert!(matches!(
        journal.read_from(Lsn::FIRST),
        Err(Error::Truncated { first: f, .. }) if f == first
    ));
    let kept = read_all(&journal);
    assert_eq!(kept.first().unwrap().0, first);
    assert_eq!(kept.last().unwrap().0, Lsn::new(200));
    // Truncating everything keeps the segment being written.
    journal.truncate_prefix(Lsn::new(10_000)).unwrap();
    assert_eq!(journal.segment_count(), 1);
    let first_after = journal.first_lsn();
    drop(journal);

    let journal = open(&disk, small_options()).unwrap();
    assert_eq!(journal.first_lsn(), first_after);
    assert_eq!(journal.durable_end(), Lsn::new(201));
    journal.verify().unwrap();
    assert_eq!(
        disk.files()
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "jseg"))
            .count(),
        1
    );
    assert!(disk.files().iter().all(|p| p.starts_with(dir())));
}

#[test]
fn oversized_records_and_bad_options_are_refused_without_writing() {
    let rt = runtime();
    let disk = CrashDisk::default();
    let options = JournalOptions {
        max_record_bytes: 100,
        ..small_options()
    };
    let journal = open(&disk, options).unwrap();
    let err = rt.block_on(journal.append(payload(0, 101))).unwrap_err();
    assert!(matches!(
        err,
        Error::RecordTooLarge {
            size: 101,
            limit: 100
        }
    ));
    assert_eq!(
        rt.block_on(journal.append(payload(0, 100))).unwrap(),
        Lsn::FIRST
    );
    drop(journal);

    for bad in [
        JournalOptions {
            block_size: 1000,
            ..JournalOptions::default()
        },
        JournalOptions {
            segment_bytes: 100,
            ..JournalOptions::default()
        },
        JournalOptions {
            max_batch_bytes: 0,
            ..JournalOptions::default()
        },
    ] {
        assert!(matches!(open(&disk, bad), Err(Error::InvalidOptions(_))));
    }
}

#[test]
fn a_file_in_place_of_the_directory_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, b"hello").unwrap();
    let err = Journal::open(&file, JournalOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"hello");
}

#[test]
fn a_task_flusher_appends_closes_and_releases_the_lock_on_one_thread() {
    let rt = runtime();
    let disk = CrashDisk::default();
    let options = JournalOptions {
        flusher: journaldb_journal::Flusher::Task,
        ..small_options()
    };
    rt.block_on(async {
        // Outside a runtime a task flusher cannot start: a typed error, not a panic.
        let journal = open(&disk, options.clone()).unwrap();
        let mut lsns = Vec::new();
        for i in 0..40 {
            lsns.push(journal.append(payload(i, 300)).await.unwrap());
        }
        assert_eq!(lsns.last(), Some(&Lsn::new(40)));
        // Queued appends still resolve after close; the lock frees once they are written.
        let pending = journal.submit(payload(40, 10)).await.unwrap();
        journal.close().unwrap();
        assert_eq!(pending.durable().await.unwrap(), Lsn::new(41));
        tokio::task::yield_now().await;
        let reopened = open(&disk, options.clone()).unwrap();
        assert_eq!(read_all(&reopened).len(), 41);
        reopened.close().unwrap();
    });
    drop(rt);
    assert!(matches!(
        open(&disk, options),
        Err(Error::InvalidOptions(_))
    ));
}
