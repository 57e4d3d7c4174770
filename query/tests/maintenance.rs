//! Maintenance of a running database: garbage collection below the retention window
//! (`SnapshotTooOld` below it, unchanged answers above it), journal truncation once storage
//! has checkpointed, and restarts that resume from storage's stored positions because the
//! journals' start is gone.

use std::time::Duration;

use bytes::Bytes;
use journaldb::{Database, Error, JournalOptions, Options, StorageEngine};
use journaldb_proto::{Limits, Timestamp};

use crate::rt;

/// Short windows so a test sees several maintenance rounds.
fn options(storage: StorageEngine) -> Options {
    Options::default()
        .with_partitions(2)
        .with_seed(11)
        .with_storage(storage)
        .with_limits(Limits {
            max_txn_age: Duration::from_millis(100),
            ..Limits::default()
        })
        .with_retention(Duration::from_millis(200))
        .with_checkpoint_interval(Duration::from_millis(20))
        .with_journal(JournalOptions {
            segment_bytes: 16 * 1024,
            preallocate_bytes: 4096,
            ..JournalOptions::default()
        })
}

async fn put(db: &Database, key: &str, value: &str) -> Timestamp {
    let mut tx = db.begin();
    tx.put(key.to_owned(), value.to_owned()).unwrap();
    tx.commit().await.unwrap().commit_ts
}

async fn get_at(db: &Database, key: &str, at: Timestamp) -> Result<Option<Bytes>, Error> {
    db.snapshot_at(at)?.get(key).await
}

/// Polls `done` every 10 ms for up to 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn reads_below_the_horizon_fail_and_reads_above_it_are_unchanged(storage: StorageEngine) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = Database::open_with(dir.path(), options(storage))
            .await
            .unwrap();
        let t1 = put(&db, "k", "v1").await;
        let t2 = put(&db, "k", "v2").await;
        let old_reader = db.begin();
        assert_eq!(old_reader.get("other").await.unwrap(), None);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t3 = put(&db, "k", "v3").await;
        let old = old_reader.start_ts();
        eventually("the horizon passes the old reader", || {
            db.stats().gc_horizon > old
        })
        .await;
        let horizon = db.stats().gc_horizon;
        assert!(horizon <= db.stats().watermark);

        for t in [t1, t2] {
            assert!(matches!(db.snapshot_at(t), Err(Error::SnapshotTooOld)));
        }
        let err = old_reader.get("k").await.unwrap_err();
        assert!(matches!(err, Error::SnapshotTooOld), "{err}");
        assert!(err.is_retryable());

        // At the horizon: the newest version at or below it. Maintenance keeps raising the
        // horizon (every 20 ms here), so a read may find it has just moved past; then read
        // at the new one.
        let mut horizon = horizon;
        let at_horizon = loop {
            match get_at(&db, "k", horizon).await {
                Err(Error::SnapshotTooOld) if db.stats().gc_horizon > horizon => {
                    horizon = db.stats().gc_horizon;
                }
                other => break other.unwrap(),
            }
        };
        let expect = if horizon < t3 { "v2" } else { "v3" };
        assert_eq!(at_horizon.as_deref(), Some(expect.as_bytes()));
        assert_eq!(
            get_at(&db, "k", t3).await.unwrap().as_deref(),
            Some(&b"v3"[..])
        );
        let value = db.transact(async |tx| tx.get("k").await).await.unwrap();
        assert_eq!(value.as_deref(), Some(&b"v3"[..]));
        db.close().await.unwrap();
    });
}

#[test]
fn rocksdb_reads_below_the_horizon_fail_and_reads_above_it_are_unchanged() {
    reads_below_the_horizon_fail_and_reads_above_it_are_unchanged(StorageEngine::RocksDb);
}

#[test]
fn memory_reads_below_the_horizon_fail_and_reads_above_it_are_unchanged() {
    reads_below_the_horizon_fail_and_reads_above_it_are_unchanged(StorageEngine::Memory);
}

#[test]
fn journals_are_truncated_and_a_reopen_resumes_from_storage_positions() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let value = "x".repeat(400);
    rt.block_on(async {
        let db = Database::open_with(dir.path(), options(StorageEngine::RocksDb))
            .await
            .unwrap();
        let mut last = Vec::new();
        for round in 0..3 {
            for i in 0..100 {
                put(&db, &format!("key{i:03}"), &format!("{round}{value}")).await;
            }
            last = db.stats().journals;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(last.iter().all(|j| j.segments > 1), "{last:?}");
        // Idle, the newest checkpoint's watermark falls behind the window too.
        eventually("every journal has dropped its first segments", || {
            db.stats().journals.iter().all(|j| j.first_lsn.get() > 1)
        })
        .await;
        let stats = db.stats();
        db.close().await.unwrap();

        let db = Database::open_with(dir.path(), options(StorageEngine::RocksDb))
            .await
            .unwrap();
        for (before, after) in stats.journals.iter().zip(db.stats().journals) {
            assert!(after.first_lsn >= before.first_lsn, "{before:?} {after:?}");
        }
        for i in 0..100 {
            let got = db.begin().get(format!("key{i:03}")).await.unwrap();
            assert_eq!(
                got.as_deref(),
                Some(format!("2{value}").as_bytes()),
                "key{i:03}"
            );
        }
        db.close().await.unwrap();
    });
}

#[test]
fn the_memory_engine_never_truncates_its_journals() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = Database::open_with(dir.path(), options(StorageEngine::Memory))
            .await
            .unwrap();
        for i in 0..200 {
            put(&db, &format!("key{i:03}"), &"y".repeat(400)).await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        put(&db, "last", "z").await;
        let horizon = db.stats().gc_horizon;
        eventually("garbage collection runs", || {
            db.stats().gc_horizon > horizon
        })
        .await;
        assert!(
            db.stats().journals.iter().all(|j| j.first_lsn.get() == 1),
            "storage in memory is rebuilt from the journals: they must stay whole"
        );
        db.close().await.unwrap();
    });
}

#[test]
fn retention_shorter_than_the_longest_transaction_is_refused() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let err = rt
        .block_on(Database::open_with(
            dir.path(),
            options(StorageEngine::Memory).with_retention(Duration::from_millis(50)),
        ))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}
