//! A tailing reader sees every record exactly once, in Lsn order, as it becomes durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use journaldb_journal::disk::CrashDisk;
use journaldb_journal::{Journal, Lsn};

use crate::common::{open, payload, small_options};

#[test]
fn a_tail_sees_every_record_exactly_once_in_order() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let disk = CrashDisk::default();
    let journal: Arc<Journal> = Arc::new(open(&disk, small_options()).unwrap());
    const APPENDERS: usize = 4;
    const EACH: usize = 200;

    let mut tail = journal.tail(Lsn::FIRST).unwrap();
    let tailer = rt.spawn(async move {
        let mut seen = Vec::new();
        while let Some(record) = tail.next().await.unwrap() {
            seen.push(record);
        }
        seen
    });
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|a| {
            let journal = journal.clone();
            rt.spawn(async move {
                let mut mine = Vec::new();
                for i in 0..EACH {
                    let p = payload(a * EACH + i, 20 + i % 300);
                    mine.push((journal.append(p.clone()).await.unwrap(), p));
                }
                mine
            })
        })
        .collect();
    let mut appended = BTreeMap::new();
    for a in appenders {
        appended.extend(rt.block_on(a).unwrap());
    }
    journal.close().unwrap();
    let seen = rt.block_on(tailer).unwrap();

    assert_eq!(seen.len(), APPENDERS * EACH);
    for (i, (lsn, p)) in seen.iter().enumerate() {
        assert_eq!(
            *lsn,
            Lsn::new(i as u64 + 1),
            "in order, no gaps, no repeats"
        );
        assert_eq!(appended.get(lsn), Some(p));
    }
    assert!(
        journal.segment_count() > 1,
        "the tail crossed segment boundaries"
    );
}

#[test]
fn a_tail_started_in_the_middle_resumes_there() {
    let rt = crate::common::runtime();
    let disk = CrashDisk::default();
    let journal = open(&disk, small_options()).unwrap();
    crate::common::append_sequentially(&rt, &journal, 30, 100);
    let mut tail = journal.tail(Lsn::new(17)).unwrap();
    rt.block_on(async {
        for expect in 17..=30 {
            let (lsn, p) = tail.next().await.unwrap().unwrap();
            assert_eq!(
                (lsn, p),
                (Lsn::new(expect), payload(expect as usize - 1, 100))
            );
        }
        let pending = journal.append(payload(30, 100));
        let (lsn, _) = tokio::join!(async { tail.next().await.unwrap().unwrap() }, pending).0;
        assert_eq!(lsn, Lsn::new(31));
    });
}
