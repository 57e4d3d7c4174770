//! One conformance suite, run against every engine (TiKV `engine_traits_tests` style).

use bytes::Bytes;
use journaldb_proto::{Lsn, PartitionId, Timestamp};
use journaldb_storage::{Engine, ScanRange, Version, VersionStore, WriteBatch, encoding};

fn ts(n: u64) -> Timestamp {
    Timestamp::from_nanos(n)
}

fn put(key: &[u8], t: u64, value: &str) -> Version {
    Version {
        key: Bytes::copy_from_slice(key),
        ts: ts(t),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
    }
}

fn del(key: &[u8], t: u64) -> Version {
    Version {
        key: Bytes::copy_from_slice(key),
        ts: ts(t),
        value: None,
    }
}

fn write(s: &dyn VersionStore, versions: Vec<Version>) {
    s.write(WriteBatch {
        versions,
        applied: vec![],
        ..WriteBatch::default()
    })
    .unwrap();
}

fn get(s: &dyn VersionStore, key: &[u8], at: u64) -> Option<String> {
    s.get(key, ts(at))
        .unwrap()
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

fn keys(rows: &[(Bytes, Bytes)]) -> Vec<Vec<u8>> {
    rows.iter().map(|(k, _)| k.to_vec()).collect()
}

fn reads_see_the_newest_version_at_or_before_their_timestamp(s: &dyn VersionStore) {
    write(s, vec![put(b"k", 10, "v10"), put(b"k", 20, "v20")]);
    write(s, vec![del(b"k", 30), put(b"k", 40, "v40")]);
    assert_eq!(get(s, b"k", 9), None);
    assert_eq!(get(s, b"k", 10).as_deref(), Some("v10"));
    assert_eq!(get(s, b"k", 25).as_deref(), Some("v20"));
    assert_eq!(get(s, b"k", 30), None, "tombstone");
    assert_eq!(get(s, b"k", 35), None);
    assert_eq!(get(s, b"k", u64::MAX).as_deref(), Some("v40"));
    assert_eq!(get(s, b"other", 100), None);
}

const PREFIX_KEYS: [&[u8]; 7] = [b"", b"\x00", b"\x00\x00", b"a", b"a\x00", b"a\x00b", b"ab"];

fn keys_that_are_prefixes_of_each_other_stay_apart(s: &dyn VersionStore) {
    for (i, k) in PREFIX_KEYS.iter().enumerate() {
        write(s, vec![put(k, 10 + i as u64, &format!("v{i}"))]);
    }
    for (i, k) in PREFIX_KEYS.iter().enumerate() {
        assert_eq!(get(s, k, 100), Some(format!("v{i}")), "key {k:?}");
        assert_eq!(get(s, k, 9 + i as u64), None, "key {k:?} before its write");
    }
    let all = s
        .scan(&ScanRange::prefix(b""), ts(100), 100, false)
        .unwrap();
    assert_eq!(
        keys(&all.rows),
        PREFIX_KEYS.iter().map(|k| k.to_vec()).collect::<Vec<_>>()
    );
    let rev = s.scan(&ScanRange::prefix(b""), ts(100), 100, true).unwrap();
    let mut expect: Vec<_> = PREFIX_KEYS.iter().map(|k| k.to_vec()).collect();
    expect.reverse();
    assert_eq!(keys(&rev.rows), expect);
    let a = s
        .scan(&ScanRange::prefix(b"a"), ts(100), 100, false)
        .unwrap();
    assert_eq!(
        keys(&a.rows),
        vec![
            b"a".to_vec(),
            b"a\x00".to_vec(),
            b"a\x00b".to_vec(),
            b"ab".to_vec()
        ]
    );
}

fn scans_page_through_a_range_in_both_directions(s: &dyn VersionStore) {
    for i in 0..20u64 {
        let key = format!("key{i:02}");
        write(
            s,
            vec![
                put(key.as_bytes(), 10, "old"),
                put(key.as_bytes(), 20 + i, "new"),
            ],
        );
        if i % 3 == 0 {
            write(s, vec![del(key.as_bytes(), 50)]);
        }
    }
    let range = ScanRange {
        start: Bytes::from_static(b"key03"),
        end: Some(Bytes::from_static(b"key17")),
    };
    for reverse in [false, true] {
        for at in [15, 30, 60] {
            let full = s.scan(&range, ts(at), 1_000, reverse).unwrap();
            assert!(full.resume.is_none());
            for limit in [1, 2, 5] {
                let mut paged = Vec::new();
                let mut next = Some(range.clone());
                while let Some(r) = next {
                    let page = s.scan(&r, ts(at), limit, reverse).unwrap();
                    assert!(page.rows.len() <= limit);
                    paged.extend(page.rows);
                    next = page.resume;
                }
                assert_eq!(paged, full.rows, "reverse {reverse} at {at} limit {limit}");
            }
            let expected: Vec<Vec<u8>> = {
                let mut v: Vec<_> = (3..17u64)
                    // Every key has a version at 10; every third is deleted at 50.
                    .filter(|i| at < 50 || i % 3 != 0)
                    .map(|i| format!("key{i:02}").into_bytes())
                    .collect();
                if reverse {
                    v.reverse();
                }
                v
            };
            assert_eq!(keys(&full.rows), expected, "reverse {reverse} at {at}");
        }
    }
    assert!(
        s.scan(&range, ts(1), 0, false).is_err(),
        "limit 0 is invalid"
    );
}

fn applied_positions_are_written_with_the_data(s: &dyn VersionStore) {
    assert!(s.applied().unwrap().is_empty());
    assert_eq!(s.watermark().unwrap(), Timestamp::ZERO);
    s.write(WriteBatch {
        watermark: Some(ts(77)),
        ..WriteBatch::default()
    })
    .unwrap();
    assert_eq!(s.watermark().unwrap(), ts(77));
    assert!(
        s.applied().unwrap().is_empty(),
        "the watermark is not a journal position"
    );
    s.write(WriteBatch {
        versions: vec![put(b"x", 5, "v")],
        applied: vec![
            (PartitionId::new(0), Lsn::new(7)),
            (PartitionId::new(3), Lsn::new(2)),
        ],
        ..WriteBatch::default()
    })
    .unwrap();
    s.write(WriteBatch {
        versions: vec![],
        applied: vec![(PartitionId::new(0), Lsn::new(9))],
        ..WriteBatch::default()
    })
    .unwrap();
    let applied = s.applied().unwrap();
    assert_eq!(applied.len(), 2);
    assert_eq!(applied[&PartitionId::new(0)], Lsn::new(9));
    assert_eq!(applied[&PartitionId::new(3)], Lsn::new(2));
    assert_eq!(get(s, b"x", 5).as_deref(), Some("v"));
}

/// Every data entry (version) stored, as (user key, τ).
fn stored_versions(s: &impl Engine) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut cursor = vec![encoding::DATA_PREFIX];
    while let Some((k, _)) = s.seek_ge(&cursor).unwrap() {
        let Some((key, t)) = encoding::decode_version_key(&k) else {
            break;
        };
        out.push((key, t.as_nanos()));
        cursor = k;
        cursor.push(0);
    }
    out
}

fn garbage_below_the_horizon_goes_and_reads_at_or_above_it_do_not_change<S>(s: &S)
where
    S: VersionStore + Engine,
{
    write(
        s,
        vec![
            put(b"a", 10, "a10"),
            put(b"a\0", 10, "z10"),
            put(b"b", 5, "b5"),
        ],
    );
    write(
        s,
        vec![put(b"a", 20, "a20"), del(b"a\0", 20), del(b"b", 15)],
    );
    write(
        s,
        vec![
            put(b"a", 30, "a30"),
            put(b"a\0", 35, "z35"),
            put(b"c", 40, "c40"),
        ],
    );
    s.write(WriteBatch {
        applied: vec![(PartitionId::new(0), Lsn::new(3))],
        watermark: Some(ts(40)),
        ..WriteBatch::default()
    })
    .unwrap();
    let horizon = 25;
    let everything = ScanRange {
        start: Bytes::new(),
        end: None,
    };
    let answers = |s: &S| {
        (horizon..=41)
            .map(|t| {
                let gets: Vec<_> = [&b"a"[..], b"a\0", b"b", b"c"]
                    .iter()
                    .map(|k| get(s, k, t))
                    .collect();
                let forward = s.scan(&everything, ts(t), 100, false).unwrap().rows;
                let backward = s.scan(&everything, ts(t), 2, true).unwrap();
                (gets, forward, backward)
            })
            .collect::<Vec<_>>()
    };
    let before = answers(s);
    s.collect_garbage(ts(horizon)).unwrap();
    s.flush().unwrap();
    s.compact().unwrap();
    assert_eq!(answers(s), before, "reads at or above the horizon changed");
    assert_eq!(
        stored_versions(s),
        vec![
            (b"a".to_vec(), 30),
            (b"a".to_vec(), 20),
            (b"a\0".to_vec(), 35),
            (b"c".to_vec(), 40)
        ],
        "each key keeps its versions above the horizon and its newest at or below it, \
         unless that is a tombstone"
    );
    assert_eq!(s.applied().unwrap()[&PartitionId::new(0)], Lsn::new(3));
    assert_eq!(s.watermark().unwrap(), ts(40));
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[test] fn $case() { super::$case(&crate::memory().store); })*
        }
        mod rocksdb {
            $(#[test] fn $case() { super::$case(&crate::rocks().store); })*
        }
        mod cached_rocksdb {
            $(#[test] fn $case() { super::$case(&crate::cached_rocks(64 * 200).store); })*
        }
    };
}

conformance!(
    reads_see_the_newest_version_at_or_before_their_timestamp,
    keys_that_are_prefixes_of_each_other_stay_apart,
    scans_page_through_a_range_in_both_directions,
    applied_positions_are_written_with_the_data,
    garbage_below_the_horizon_goes_and_reads_at_or_above_it_do_not_change,
);

#[test]
fn rocksdb_reopens_with_its_data_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = journaldb_storage::RocksEngine::open(dir.path()).unwrap();
        s.write(WriteBatch {
            versions: vec![put(b"k", 1, "v")],
            applied: vec![(PartitionId::new(1), Lsn::new(42))],
            ..WriteBatch::default()
        })
        .unwrap();
        s.flush().unwrap();
    }
    let s = journaldb_storage::RocksEngine::open(dir.path()).unwrap();
    assert_eq!(get(&s, b"k", 1).as_deref(), Some("v"));
    assert_eq!(s.applied().unwrap()[&PartitionId::new(1)], Lsn::new(42));
}

#[test]
fn rocksdb_derives_latest_entries_and_drops_those_a_format_1_database_stored() {
    use encoding::{encode_latest, encode_value, latest_key, version_key};
    let dir = tempfile::tempdir().unwrap();
    {
        // Format 1: latest entries stored (this one stale on purpose), no format marker.
        let db = ::rocksdb::DB::open_default(dir.path()).unwrap();
        db.put(version_key(b"k", ts(5)), encode_value(Some(b"new")))
            .unwrap();
        db.put(latest_key(b"k"), encode_latest(ts(1), Some(b"stale")))
            .unwrap();
    }
    let s = journaldb_storage::RocksEngine::open(dir.path()).unwrap();
    assert_eq!(get(&s, b"k", 9).as_deref(), Some("new"));
    assert_eq!(get(&s, b"k", 4), None);
    let derived = s.get_exact(&latest_key(b"k")).unwrap();
    assert_eq!(
        derived.as_deref(),
        Some(&encode_latest(ts(5), Some(b"new"))[..])
    );
    write(&s, vec![put(b"k", 7, "newer")]);
    assert_eq!(get(&s, b"k", 9).as_deref(), Some("newer"));
    s.compact().unwrap();
    let leftover = s.seek_ge(&latest_key(b"k")).unwrap();
    assert_eq!(leftover, None, "compaction drops stored latest entries");
    assert_eq!(get(&s, b"k", 9).as_deref(), Some("newer"));
}

#[test]
fn rocksdb_refuses_a_newer_storage_format() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = ::rocksdb::DB::open_default(dir.path()).unwrap();
        db.put(b"\x00format", [journaldb_storage::ROCKSDB_FORMAT + 1])
            .unwrap();
    }
    let err = journaldb_storage::RocksEngine::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("newer build"), "{err}");
    drop(journaldb_storage::RocksEngine::open(tempfile::tempdir().unwrap().path()).unwrap());
}
