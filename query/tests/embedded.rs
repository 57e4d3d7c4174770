//! The embedded database end to end: commits across partitions, isolation basics,
//! durability across reopen, limits, and `transact` under contention.

use std::sync::Arc;

use bytes::Bytes;
use journaldb::{Database, Error, Options};

fn options(partitions: u32) -> Options {
    Options::default().with_partitions(partitions).with_seed(7)
}

use crate::rt;

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
            tx.start_ts() >= info.commit_ts,
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
        // Eight tasks on one key: far more contention than the default retry budget is
        // sized for (it stops retry storms by design), so this test grants a larger one.
        let retry = journaldb::retry::RetryPolicy::default()
            .with_max_attempts(1_000)
            .with_bucket_capacity(100_000.0);
        let db = Database::open_with(dir.path(), options(2).with_retry(retry))
            .await
            .unwrap();
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

#[test]
fn scans_merge_own_writes_and_page_in_both_directions() {
    use journaldb::ScanRange;
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = Database::open_with(dir.path(), options(3)).await.unwrap();
        let mut setup = db.begin();
        for k in ["a", "b", "c", "d", "e", "f", "g"] {
            setup.put(k, format!("{k}0")).unwrap();
        }
        setup.put("zz", "outside").unwrap();
        setup.commit().await.unwrap();

        let mut tx = db.begin();
        tx.delete("c").unwrap();
        tx.put("cc", "new").unwrap();
        tx.put("e", "e1").unwrap();
        tx.put("h", "h1").unwrap();
        let range = ScanRange {
            start: Bytes::from_static(b"a"),
            end: Some(Bytes::from_static(b"z")),
        };
        let expect = [
            "a=a0", "b=b0", "cc=new", "d=d0", "e=e1", "f=f0", "g=g0", "h=h1",
        ];
        for reverse in [false, true] {
            for limit in [1, 2, 3, 100] {
                let mut got = Vec::new();
                let mut next = Some(range.clone());
                while let Some(r) = next {
                    let page = tx.scan(&r, limit, reverse).await.unwrap();
                    assert!(page.rows.len() <= limit);
                    got.extend(page.rows.iter().map(|(k, v)| {
                        format!(
                            "{}={}",
                            String::from_utf8_lossy(k),
                            String::from_utf8_lossy(v)
                        )
                    }));
                    next = page.resume;
                }
                let mut want: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
                if reverse {
                    want.reverse();
                }
                assert_eq!(got, want, "reverse {reverse} limit {limit}");
            }
        }
        let prefix = tx.scan(&ScanRange::prefix(b"c"), 10, false).await.unwrap();
        assert_eq!(
            prefix.rows.len(),
            1,
            "c is deleted by this transaction, cc is new"
        );
        db.close().await.unwrap();
    });
}

#[test]
fn merged_scans_agree_with_a_model_on_random_data() {
    use std::collections::BTreeMap;

    use journaldb::ScanRange;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = Database::open_with(dir.path(), options(2)).await.unwrap();
        for seed in 0..40u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let key = |rng: &mut ChaCha8Rng| format!("s{seed:02}/k{}", rng.random_range(0..12));
            let mut model = BTreeMap::new();
            let mut setup = db.begin();
            for _ in 0..rng.random_range(0..10) {
                let k = key(&mut rng);
                setup.put(k.clone(), "stored").unwrap();
                model.insert(k, "stored".to_string());
            }
            setup.commit().await.unwrap();
            let mut tx = db.begin();
            for _ in 0..rng.random_range(0..8) {
                let k = key(&mut rng);
                if rng.random_bool(0.5) {
                    tx.delete(k.clone()).unwrap();
                    model.remove(&k);
                } else {
                    tx.put(k.clone(), "own").unwrap();
                    model.insert(k, "own".to_string());
                }
            }
            let reverse = rng.random_bool(0.5);
            let limit = rng.random_range(1..5);
            let mut got = Vec::new();
            let mut next = Some(ScanRange::prefix(format!("s{seed:02}/").as_bytes()));
            while let Some(r) = next {
                let page = tx.scan(&r, limit, reverse).await.unwrap();
                got.extend(page.rows.iter().map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                }));
                next = page.resume;
            }
            let mut want: Vec<(String, String)> = model.into_iter().collect();
            if reverse {
                want.reverse();
            }
            assert_eq!(got, want, "seed {seed} reverse {reverse} limit {limit}");
        }
        db.close().await.unwrap();
    });
}

#[test]
fn an_empty_retry_budget_returns_the_conflict_instead_of_retrying() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let retry = journaldb::retry::RetryPolicy::default().with_bucket_capacity(0.0);
        let db = Database::open_with(dir.path(), options(1).with_retry(retry))
            .await
            .unwrap();
        let mut attempts = 0;
        let err = db
            .transact(async |tx| {
                attempts += 1;
                tx.get("k").await?;
                // Another writer commits k after our snapshot: a conflict every time.
                let mut other = db.begin();
                other.put("k", "theirs")?;
                other.commit().await?;
                tx.put("k", "mine")
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        assert_eq!(attempts, 1, "no token, no retry");
        db.close().await.unwrap();
    });
}
