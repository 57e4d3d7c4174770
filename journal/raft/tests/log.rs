//! [`RaftLog`] on a crash-testing disk: what a flush made durable comes back on open and
//! nothing else does; a replaced tail comes back replaced; compaction removes segments;
//! refusals of what raft-rs must never ask; and a crash property over random histories.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use journaldb_journal::disk::{CrashDisk, CrashDiskConfig, Disk};
use journaldb_proto::Lsn;
use journaldb_raft::raft::prelude::{ConfState, Entry, HardState, Snapshot};
use journaldb_raft::raft::{GetEntriesContext, Storage, StorageError};
use journaldb_raft::{EntryBatch, LogError, LogId, LogOptions, LogWriter, RaftLog};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ID: LogId = LogId {
    cluster: 1,
    group: 7,
    replica: 2,
};

fn dir() -> PathBuf {
    PathBuf::from("/db/raft/7")
}

fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 4096,
        block_size: 512,
        preallocate_bytes: 2048,
        cache_bytes: 1024,
    }
}

fn voters() -> ConfState {
    ConfState::from((vec![1, 2, 3], vec![]))
}

fn create(disk: &CrashDisk) -> LogWriter {
    RaftLog::create(Arc::new(disk.clone()), dir(), ID, small(), voters()).unwrap()
}

fn open(disk: &CrashDisk) -> Result<LogWriter, LogError> {
    RaftLog::open(Arc::new(disk.clone()) as Arc<dyn Disk>, dir(), ID, small())
}

/// Entry `index` of `term`: one record, so entry i holds Lsn i.
fn entry(index: u64, term: u64) -> Entry {
    let record =
        Bytes::from(format!("entry {index} of term {term} ").repeat(1 + index as usize % 7));
    let batch = EntryBatch {
        first_lsn: Lsn::new(index),
        records: vec![record],
    };
    Entry {
        index,
        term,
        data: batch.encode(),
        ..Entry::default()
    }
}

/// A metadata-only snapshot at `index`, as `Storage::snapshot` makes them.
fn snapshot_at(index: u64, term: u64) -> Snapshot {
    let mut snapshot = Snapshot {
        data: (index + 1).to_le_bytes().to_vec().into(),
        ..Snapshot::default()
    };
    let meta = snapshot.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(voters());
    snapshot
}

fn hs(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit,
        ..HardState::default()
    }
}

/// `(index, term, data)` of every entry in the log, read through `Storage`.
fn contents(log: &RaftLog) -> Vec<(u64, u64, Bytes)> {
    let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
    log.entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap()
        .into_iter()
        .map(|e| (e.index, e.term, e.data))
        .collect()
}

fn expected(entries: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64, Bytes)> {
    entries
        .into_iter()
        .map(|(i, t)| {
            let e = entry(i, t);
            (e.index, e.term, e.data)
        })
        .collect()
}

#[test]
fn a_new_log_holds_its_first_configuration_and_no_entries() {
    let disk = CrashDisk::new(CrashDiskConfig::default());
    drop(create(&disk));
    let writer = open(&disk).unwrap();
    let state = writer.log().initial_state().unwrap();
    assert_eq!(state.conf_state, voters());
    assert_eq!(state.hard_state, HardState::default());
    assert_eq!(
        (
            writer.log().first_index().unwrap(),
            writer.log().last_index().unwrap()
        ),
        (1, 0)
    );
    assert_eq!(writer.log().term(0).unwrap(), 0);
}

#[test]
fn open_refuses_no_log_a_second_create_and_another_replicas_log() {
    let disk = CrashDisk::new(CrashDiskConfig::default());
    assert!(matches!(open(&disk), Err(LogError::NoLog { .. })));
    drop(create(&disk));
    let again = RaftLog::create(Arc::new(disk.clone()), dir(), ID, small(), voters());
    assert!(matches!(again, Err(LogError::AlreadyExists { .. })));
    let other = LogId { replica: 3, ..ID };
    let wrong = RaftLog::open(Arc::new(disk.clone()), dir(), other, small());
    assert!(matches!(wrong, Err(LogError::WrongLog { .. })), "{wrong:?}");
    let held = open(&disk).unwrap();
    assert!(matches!(open(&disk), Err(LogError::Locked { .. })));
    drop(held);
}

#[test]
fn flushed_entries_and_state_come_back_and_staged_ones_do_not() {
    let disk = CrashDisk::new(CrashDiskConfig::default());
    let mut writer = create(&disk);
    let log = writer.log().clone();
    for from in (1..=30).step_by(5) {
        let n = log
            .stage(
                (from..from + 5).map(|i| entry(i, 1)).collect(),
                Some(hs(1, (from + 4).min(20))),
            )
            .unwrap();
        assert_eq!(writer.flush().unwrap(), Some(n));
        assert_eq!(log.persisted_number(), n);
    }
    log.set_applied(20, None).unwrap();
    // Staged, readable, never flushed.
    log.stage(vec![entry(31, 1)], Some(hs(1, 25))).unwrap();
    assert_eq!(log.last_index().unwrap(), 31);
    assert_eq!(contents(&log).len(), 31);
    drop(writer);
    let after = disk.crash(1);
    let writer = open(&after).unwrap();
    let log = writer.log();
    assert_eq!(contents(log), expected((1..=30).map(|i| (i, 1))));
    assert_eq!(log.initial_state().unwrap().hard_state, hs(1, 20));
    assert_eq!(
        log.state().applied,
        0,
        "applied is persisted with the next write"
    );
    // The cache holds 1 KiB: most of these were read back from the segments.
    assert!(disk.files().len() > 1, "rolled over: {:?}", disk.files());
}

/// A new commit index alone (raft-rs's `must_sync()` false) does not make a Ready wait:
/// `stage_commit` names the staging before it. It is still written with the next flush,
/// and readers see a commit only once it is durable.
#[test]
fn a_commit_index_alone_is_written_with_the_next_flush_and_read_only_then() {
    let disk = CrashDisk::new(CrashDiskConfig::default());
    let mut writer = create(&disk);
    let log = writer.log().clone();
    let entries = log
        .stage((1..=5).map(|i| entry(i, 1)).collect(), Some(hs(1, 2)))
        .unwrap();
    assert_eq!(writer.flush().unwrap(), Some(entries));
    assert_eq!(log.committed_lsn_end(), Lsn::new(3));

    let wait_for = log.stage_commit(hs(1, 4)).unwrap();
    assert_eq!(
        wait_for, entries,
        "a Ready carrying it waits for nothing new"
    );
    assert!(log.has_pending(), "the commit index is still to be written");
    assert_eq!(
        log.committed_lsn_end(),
        Lsn::new(3),
        "not read before it is durable"
    );
    assert!(writer.flush().unwrap().is_some_and(|n| n > entries));
    assert_eq!(log.committed_lsn_end(), Lsn::new(5));
    assert_eq!(log.durable_state().hard_state, hs(1, 4));

    // Only the commit index may change, and only within the log.
    for wrong in [
        hs(2, 4),
        hs(1, 3),
        hs(1, 6),
        HardState {
            vote: 2,
            ..hs(1, 5)
        },
    ] {
        assert!(log.stage_commit(wrong.clone()).is_err(), "{wrong:?} taken");
    }
    drop(writer);
    let after = disk.crash(1);
    let writer = open(&after).unwrap();
    assert_eq!(writer.log().initial_state().unwrap().hard_state, hs(1, 4));
}

#[test]
fn a_replaced_tail_comes_back_replaced() {
    let disk = CrashDisk::new(CrashDiskConfig::default());
    let mut writer = create(&disk);
    let log = writer.log().clone();
    log.stage((1..=10).map(|i| entry(i, 1)).collect(), Some(hs(1, 3)))
        .unwrap();
    writer.flush().unwrap();
    // A new leader of term 2 overwrote 6.. on a majority; this replica learns it.
    log.stage((6..=8).map(|i| entry(i, 2)).collect(), Some(hs(2, 4)))
        .unwrap();
    writer.flush().unwrap();
    let want = expected((1..=5).map(|i| (i, 1)).chain((6..=8).map(|i| (i, 2))));
    assert_eq!(contents(&log), want);
    drop(writer);
    let writer = open(&disk.crash(2)).unwrap();
    assert_eq!(contents(writer.log()), want);
    assert_eq!(writer.log().term(5).unwrap(), 1);
    assert_eq!(writer.log().term(8).unwrap(), 2);
    assert!(writer.log().term(9).is_err());
}

#[test]
fn what_raft_must_never_ask_is_refused_and_changes_nothing() {
    let disk = CrashDisk::new(CrashDiskConfig::default());
    let mut writer = create(&disk);
    let log = writer.log().clone();
    log.stage((1..=5).map(|i| entry(i, 2)).collect(), Some(hs(2, 3)))
        .unwrap();
    writer.flush().unwrap();
    let refused = |r: Result<u64, LogError>| matches!(r, Err(LogError::Refused(_)));
    assert!(
        refused(log.stage(vec![entry(3, 3)], None)),
        "replacing a committed entry"
    );
    assert!(refused(log.stage(vec![entry(7, 2)], None)), "a gap");
    assert!(
        refused(log.stage(vec![entry(6, 1)], None)),
        "a term going down"
    );
    let mut gap = entry(6, 2);
    gap.data = EntryBatch {
        first_lsn: Lsn::new(7),
        records: vec![Bytes::from_static(b"skips Lsn 6")],
    }
    .encode();
    assert!(refused(log.stage(vec![gap], None)), "records not dense");
    let mut junk = entry(6, 2);
    junk.data = Bytes::from_static(b"not a batch");
    assert!(
        refused(log.stage(vec![junk], None)),
        "a normal entry that is no batch"
    );
    assert!(
        refused(log.stage(vec![entry(6, 2), entry(8, 2)], None)),
        "not consecutive"
    );
    assert!(
        refused(log.stage(vec![], Some(hs(2, 2)))),
        "commit going back"
    );
    assert!(
        refused(log.stage(vec![], Some(hs(2, 6)))),
        "commit past the last entry"
    );
    assert!(refused(log.compact(2)), "compacting past applied");
    log.set_applied(3, None).unwrap();
    assert!(log.set_applied(4, None).is_err(), "applied past commit");
    log.stage(vec![], Some(hs(2, 5))).unwrap();
    log.set_applied(5, None).unwrap();
    assert!(
        refused(log.compact(4)),
        "compacting past the durable commit (3)"
    );
    assert_eq!(contents(&log), expected((1..=5).map(|i| (i, 2))));
}

#[test]
fn compaction_removes_dead_segments_and_survives_reopen() {
    let disk = CrashDisk::new(CrashDiskConfig::default());
    let mut writer = create(&disk);
    let log = writer.log().clone();
    for i in 1..=60 {
        log.stage(vec![entry(i, 1)], Some(hs(1, i))).unwrap();
        writer.flush().unwrap();
    }
    let before = disk.files().len();
    log.set_applied(50, Some(ConfState::from((vec![1, 2, 3, 4], vec![]))))
        .unwrap();
    log.compact(45).unwrap();
    writer.flush().unwrap();
    assert!(disk.files().len() < before, "{before} → {:?}", disk.files());
    assert_eq!(log.first_index().unwrap(), 46);
    assert_eq!(log.state().first_lsn, Lsn::new(46));
    assert_eq!(
        (
            log.index_of_lsn(Lsn::new(45)),
            log.index_of_lsn(Lsn::new(46))
        ),
        (None, Some(46))
    );
    assert_eq!(
        (
            log.index_of_lsn(Lsn::new(60)),
            log.index_of_lsn(Lsn::new(61))
        ),
        (Some(60), None)
    );
    assert_eq!(
        (log.lsn_end(), log.committed_lsn_end()),
        (Lsn::new(61), Lsn::new(61))
    );
    assert_eq!(log.term(45).unwrap(), 1);
    let compacted = log.entries(44, 47, None, GetEntriesContext::empty(false));
    assert!(matches!(
        compacted,
        Err(journaldb_raft::raft::Error::Store(StorageError::Compacted))
    ));
    let snapshot = log.snapshot(45, 3).unwrap();
    assert_eq!(
        (snapshot.get_metadata().index, snapshot.get_metadata().term),
        (45, 1)
    );
    assert_eq!(
        snapshot.get_metadata().get_conf_state(),
        &voters(),
        "as of index 45"
    );
    assert_eq!(
        snapshot.data,
        snapshot_at(45, 1).data,
        "records resume at Lsn 46"
    );
    drop(writer);
    let writer = open(&disk.crash(3)).unwrap();
    let log = writer.log();
    assert_eq!(contents(log), expected((46..=60).map(|i| (i, 1))));
    assert_eq!(
        log.initial_state().unwrap().conf_state.voters,
        vec![1, 2, 3, 4]
    );
    assert_eq!(log.state().applied, 50);
}

#[test]
fn an_installed_snapshot_empties_the_log_at_its_index() {
    let disk = CrashDisk::new(CrashDiskConfig::default());
    let mut writer = create(&disk);
    let log = writer.log().clone();
    log.stage((1..=5).map(|i| entry(i, 1)).collect(), Some(hs(1, 2)))
        .unwrap();
    writer.flush().unwrap();
    log.install_snapshot(&snapshot_at(40, 3)).unwrap();
    log.stage(vec![entry(41, 3)], Some(hs(3, 41))).unwrap();
    writer.flush().unwrap();
    drop(writer);
    let writer = open(&disk.crash(4)).unwrap();
    let log = writer.log();
    assert_eq!((log.first_index().unwrap(), log.term(40).unwrap()), (41, 3));
    assert_eq!(contents(log), expected([(41, 3)]));
    assert_eq!(
        (log.state().first_lsn, log.lsn_end()),
        (Lsn::new(41), Lsn::new(42))
    );
    let mut garbled = snapshot_at(50, 3);
    garbled.data = Bytes::from_static(b"?");
    assert!(matches!(
        log.install_snapshot(&garbled),
        Err(LogError::Refused(_))
    ));
}

#[test]
fn damage_in_a_sealed_segment_is_corruption_not_a_torn_tail() {
    let disk = CrashDisk::new(CrashDiskConfig::default());
    let mut writer = create(&disk);
    let log = writer.log().clone();
    for i in 1..=40 {
        log.stage(vec![entry(i, 1)], Some(hs(1, i))).unwrap();
        writer.flush().unwrap();
    }
    drop(writer);
    let mut files = disk.files();
    files.sort();
    let first = files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "jrlog"))
        .unwrap();
    assert!(disk.flip_byte(first, 512 + 40, 0x10));
    assert!(
        matches!(open(&disk), Err(LogError::Corruption { .. })),
        "{:?}",
        open(&disk)
    );
}

/// The logical log after a flush: what a reopen must return.
#[derive(Debug, Clone, PartialEq)]
struct Image {
    /// `(index, term, data)`: the data holds the batch's first Lsn, so Lsns are compared.
    contents: Vec<(u64, u64, Bytes)>,
    hard_state: HardState,
    truncated: (u64, u64),
    first_lsn: Lsn,
    lsn_end: Lsn,
}

fn image(log: &RaftLog) -> Image {
    let state = log.state();
    Image {
        contents: contents(log),
        hard_state: state.hard_state,
        truncated: state.truncated,
        first_lsn: state.first_lsn,
        lsn_end: log.lsn_end(),
    }
}

/// Entries `from..from + n` of `term` continuing `log`'s records where entry `from - 1`
/// leaves them; each carries one or two records, or none (a no-op), so Lsns drift from
/// indexes and differ between a tail and its replacement.
fn entries_at(log: &RaftLog, rng: &mut ChaCha8Rng, from: u64, n: u64, term: u64) -> Vec<Entry> {
    let mut lsn = log.lsn_end_at(from - 1).expect("from follows the log");
    (from..from + n)
        .map(|index| {
            let records = rng.random_range(0..3u64);
            let data = if records == 0 {
                Bytes::new()
            } else {
                let batch = EntryBatch {
                    first_lsn: lsn,
                    records: (0..records)
                        .map(|r| Bytes::from(format!("{index}/{term}/{r}")))
                        .collect(),
                };
                lsn = batch.end();
                batch.encode()
            };
            Entry {
                index,
                term,
                data,
                ..Entry::default()
            }
        })
        .collect()
}

/// Random histories (appends, replaced tails, commits, compaction, snapshots) on a disk that
/// freezes at a random operation; after the crash the log must be exactly the image of the
/// last flush that returned, or of the one in flight. Replay one with
/// `RAFT_LOG_CRASH_SEED=<seed>`.
#[test]
fn crash_property() {
    let seeds: Vec<u64> = match std::env::var("RAFT_LOG_CRASH_SEED") {
        Ok(seed) => vec![seed.parse().expect("RAFT_LOG_CRASH_SEED is a u64")],
        Err(_) => (0..std::env::var("RAFT_LOG_CRASH_CASES")
            .map_or(300, |n| n.parse().expect("RAFT_LOG_CRASH_CASES is a u64")))
            .collect(),
    };
    for seed in seeds {
        if let Err(failure) = crash_case(seed) {
            panic!(
                "seed {seed}: {failure}\nreplay with\n  RAFT_LOG_CRASH_SEED={seed} cargo nextest \
                 run -p journaldb-raft crash_property"
            );
        }
    }
}

fn crash_case(seed: u64) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let disk = CrashDisk::new(CrashDiskConfig::default());
    let mut writer = create(&disk);
    let log = writer.log().clone();
    disk.freeze_after(disk.mutating_ops() + rng.random_range(1..120));
    let mut acked = image(&log);
    let mut in_flight = None;
    let mut term = 1;
    for _ in 0..80 {
        let state = log.state();
        let (commit, last) = (state.hard_state.commit, log.last_index().unwrap());
        match rng.random_range(0..10) {
            0..=5 => {
                // Append, sometimes replacing an uncommitted tail under a newer term.
                let from = if rng.random_bool(0.3) && last > commit {
                    term += 1;
                    rng.random_range(commit + 1..=last)
                } else {
                    last + 1
                };
                let n = rng.random_range(1..4);
                let entries = entries_at(&log, &mut rng, from, n, term);
                let end = entries.last().unwrap().index;
                let commit = rng.random_range(commit..=end.min(commit + 3));
                log.stage(entries, Some(hs(term, commit)))
                    .map_err(|e| e.to_string())?;
            }
            6 => {
                let durable = log.durable_state().hard_state.commit;
                if durable > state.applied {
                    log.set_applied(durable, None).map_err(|e| e.to_string())?;
                    let to = rng.random_range(state.truncated.0..=durable);
                    log.compact(to).map_err(|e| e.to_string())?;
                }
            }
            7 if rng.random_bool(0.1) => {
                // A snapshot past the commit index, sometimes inside this replica's own
                // (divergent, uncommitted) tail.
                let index = rng.random_range(commit.max(1)..=last + 4);
                let first_lsn = log.lsn_end().get() + rng.random_range(0..5);
                let mut snapshot = snapshot_at(index, term);
                snapshot.data = first_lsn.to_le_bytes().to_vec().into();
                log.install_snapshot(&snapshot).map_err(|e| e.to_string())?;
            }
            _ => {
                in_flight = Some(image(&log));
                match writer.flush() {
                    Ok(_) => acked = in_flight.take().unwrap(),
                    Err(_) => break, // frozen: the power went
                }
            }
        }
    }
    drop(writer);
    let after = disk.crash(seed);
    let writer = open(&after).map_err(|e| format!("reopen: {e}"))?;
    let got = image(writer.log());
    if got != acked && Some(&got) != in_flight.as_ref() {
        return Err(format!(
            "recovered {got:?}\nacknowledged {acked:?}\nin flight {in_flight:?}"
        ));
    }
    Ok(())
}

/// Review finding: a valid log whose compaction point lies in a replaced tail, with a
/// no-op shifting Lsns, must reopen — entries are replayed as written before the
/// truncation point drops any.
#[test]
fn compaction_inside_a_replaced_tail_reopens_as_written() {
    let disk = CrashDisk::new(CrashDiskConfig::default());
    let mut writer = create(&disk);
    let log = writer.log().clone();
    log.stage((1..=10).map(|i| entry(i, 1)).collect(), Some(hs(1, 2)))
        .unwrap();
    writer.flush().unwrap();
    let mut noop = Entry {
        index: 3,
        term: 2,
        ..Entry::default()
    };
    log.stage(vec![noop.clone()], Some(hs(2, 3))).unwrap();
    writer.flush().unwrap();
    log.set_applied(3, None).unwrap();
    log.compact(3).unwrap();
    writer.flush().unwrap();
    assert_eq!((log.last_index().unwrap(), log.lsn_end()), (3, Lsn::new(3)));
    drop(writer);
    let disk = disk.crash(5);
    let writer = open(&disk).unwrap();
    let log = writer.log();
    assert_eq!(
        (log.first_index().unwrap(), log.last_index().unwrap()),
        (4, 3)
    );
    assert_eq!((log.term(3).unwrap(), log.lsn_end()), (2, Lsn::new(3)));
    // The replaced entries 4..=10 of term 1 stay gone, also after more entries.
    noop.index = 4;
    let mut writer = writer;
    writer.log().stage(vec![noop], Some(hs(2, 4))).unwrap();
    writer.flush().unwrap();
    drop(writer);
    let writer = open(&disk.crash(6)).unwrap();
    assert_eq!(writer.log().last_index().unwrap(), 4);
}

/// A crash at any disk operation of `create` leaves either no log (the creation was torn
/// and is cleaned up, so `create` works again) or the new, empty log: never corruption.
#[test]
fn a_crash_during_create_leaves_no_log_or_an_empty_one() {
    for ops in 0..12 {
        for seed in 0..8 {
            let disk = CrashDisk::new(CrashDiskConfig::default());
            disk.freeze_after(ops);
            let created = RaftLog::create(Arc::new(disk.clone()), dir(), ID, small(), voters());
            drop(created);
            let after = disk.crash(seed);
            match open(&after) {
                Ok(writer) => {
                    assert_eq!(writer.log().last_index().unwrap(), 0);
                    assert_eq!(writer.log().initial_state().unwrap().conf_state, voters());
                }
                Err(LogError::NoLog { .. }) => {
                    drop(create(&after));
                    open(&after).unwrap();
                }
                Err(e) => panic!("crash after {ops} operations, seed {seed}: {e}"),
            }
        }
    }
}
