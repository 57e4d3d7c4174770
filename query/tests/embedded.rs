//! The embedded database end to end: commits across partitions, isolation basics,
//! durability across reopen, limits, and `transact` under contention.

use std::sync::Arc;

use bytes::Bytes;
use journaldb::{Database, Error, Options};

fn options(partitions: u32) -> Options {
    Options {
        partitions: Some(partitions),
        seed: Some(7),
        ..Options::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn val(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn commits_across_partitions_survive_a_reopen() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = Database::open_with(dir.path(), options(4)).await.unwrap();
        let mut tx = db.begin();
        for i in 0..20 {
            tx.put(format!("key{i}"), format!("value{i}")).unwrap();
        }
        let info = tx.commit().await.unwrap();
        let tx = db.begin();
        assert!(
            tx.start_ts() > info.commit_ts,
            "a later transaction sees the commit"
        );
        for i in 0..20 {
            assert_eq!(
                tx.get(format!("key{i}")).await.unwrap(),
                val(&format!("value{i}"))
            );
        }
        db.close().await.unwrap();
    });
    drop(rt);
    let rt = self::rt();
    rt.block_on(async {
        let db = Database::open(dir.path()).await.unwrap();
        assert_eq!(db.partitions(), 4);
        let tx = db.begin();
        for i in 0..20 {
            assert_eq!(
                tx.get(format!("key{i}")).await.unwrap(),
                val(&format!("value{i}"))
            );
        }
        let err = Database::open_with(dir.path(), options(2))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        db.close().await.unwrap();
    });
}

#[test]
fn reads_see_own_writes_and_a_lost_update_is_prevented() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = Database::open_with(dir.path(), options(2)).await.unwrap();
        let mut setup = db.begin();
        setup.put("x", "0").unwrap();
        setup.commit().await.unwrap();

        let mut t1 = db.begin();
        let mut t2 = db.begin();
        assert_eq!(t1.get("x").await.unwrap(), val("0"));
        assert_eq!(t2.get("x").await.unwrap(), val("0"));
        t1.put("x", "1").unwrap();
        t2.put("x", "2").unwrap();
        assert_eq!(t1.get("x").await.unwrap(), val("1"), "read your writes");
        t2.delete("y").unwrap();
        assert_eq!(t2.get("y").await.unwrap(), None);
        t1.commit().await.unwrap();
        let err = t2.commit().await.unwrap_err();
        assert!(
            matches!(err, Error::Conflict { ref key } if key == "x"),
            "{err}"
        );
        assert!(err.is_retryable() && !err.maybe_committed());

        // A read-only transaction that started before never aborts and keeps its snapshot.
        let reader = db.begin();
        let mut writer = db.begin();
        writer.put("x", "3").unwrap();
        writer.commit().await.unwrap();
        assert_eq!(reader.get("x").await.unwrap(), val("1"));
        reader.commit().await.unwrap();
        db.close().await.unwrap();
    });
}

#[test]
fn write_skew_is_allowed_under_snapshot_isolation() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = Database::open_with(dir.path(), options(2)).await.unwrap();
        let mut t1 = db.begin();
        let mut t2 = db.begin();
        // Each reads both keys and writes a different one: no write-write conflict.
        for t in [&t1, &t2] {
            assert_eq!(t.get("a").await.unwrap(), None);
            assert_eq!(t.get("b").await.unwrap(), None);
        }
        t1.put("a", "1").unwrap();
        t2.put("b", "1").unwrap();
        t1.commit().await.unwrap();
        t2.commit().await.unwrap();
        db.close().await.unwrap();
    });
}

#[test]
fn transact_retries_conflicts_until_every_increment_lands() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let total = rt.block_on(async {
        let db = Database::open_with(dir.path(), options(2)).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        db.transact(async |tx| {
                            let n: u64 = match tx.get("counter").await? {
                                Some(v) => std::str::from_utf8(&v).unwrap().parse().unwrap(),
                                None => 0,
                            };
                            tx.put("counter", (n + 1).to_string())
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let value = db.begin().get("counter").await.unwrap();
        db.close().await.unwrap();
        value
    });
    assert_eq!(total, val("80"));
}

#[test]
fn bad_input_gets_a_typed_error_and_changes_nothing() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = Arc::new(Database::open_with(dir.path(), options(1)).await.unwrap());
        let mut tx = db.begin();
        let err = tx.put(vec![b'k'; 4097], "v").unwrap_err();
        assert!(matches!(err, Error::LimitExceeded(_)), "{err}");
        let err = tx.put("k", vec![0u8; (1 << 20) + 1]).unwrap_err();
        assert!(matches!(err, Error::LimitExceeded(_)), "{err}");
        tx.put("k", "ok").unwrap();
        tx.commit().await.unwrap();
        let locked = Database::open(dir.path()).await.unwrap_err();
        assert!(locked.to_string().contains("locked"), "{locked}");
        db.close().await.unwrap();
    });
}
