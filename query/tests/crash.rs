//! Crash tests on the crash-testing disk: concurrent transactions whose two keys usually
//! lie in different partitions, a power loss at a random disk operation (sector tearing,
//! lost unsynced directory entries), reopen — repeatedly. After every reopen, every
//! acknowledged commit is visible and no transaction is ever partly visible.
//! Cases: `DB_CRASH_CASES` (default 40).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use journaldb::{Database, Options, StorageEngine};
use journaldb_journal::disk::{CrashDisk, Disk};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Default)]
struct History {
    attempted: BTreeSet<u64>,
    acked: BTreeSet<u64>,
}

async fn open(disk: &CrashDisk, seed: u64) -> Database {
    let options = Options::default()
        .with_partitions(3)
        .with_seed(seed)
        .with_disk(Arc::new(disk.clone()) as Arc<dyn Disk>)
        .with_storage(StorageEngine::Memory);
    Database::open_with("/db", options)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: reopen after a crash failed: {e}"))
}

async fn check(db: &Database, h: &History, seed: u64) {
    let tx = db.begin();
    for id in &h.attempted {
        let a = tx.get(format!("t{id}/a")).await.unwrap();
        let b = tx.get(format!("t{id}/b")).await.unwrap();
        assert_eq!(
            a.is_some(),
            b.is_some(),
            "seed {seed}: transaction {id} is partly visible"
        );
        if h.acked.contains(id) {
            assert!(
                a.is_some(),
                "seed {seed}: acknowledged transaction {id} was lost"
            );
        }
    }
}

fn run(seed: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut disk = CrashDisk::default();
    let history = Arc::new(Mutex::new(History::default()));
    let mut next_id = 0u64;
    for _round in 0..rng.random_range(1..=3) {
        let db = rt.block_on(open(&disk, seed));
        rt.block_on(check(&db, &history.lock().unwrap(), seed));
        disk.freeze_after(rng.random_range(5..150));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (db, history) = (db.clone(), history.clone());
            let ids: Vec<u64> = (next_id..next_id + 8).collect();
            next_id += 8;
            tasks.push(rt.spawn(async move {
                for id in ids {
                    history.lock().unwrap().attempted.insert(id);
                    let mut tx = db.begin();
                    tx.put(format!("t{id}/a"), id.to_string()).unwrap();
                    tx.put(format!("t{id}/b"), id.to_string()).unwrap();
                    match tx.commit().await {
                        Ok(_) => {
                            history.lock().unwrap().acked.insert(id);
                        }
                        Err(_) => return, // the disk died: the outcome is unknown
                    }
                }
            }));
        }
        for t in tasks {
            rt.block_on(t).unwrap();
        }
        let _ = rt.block_on(db.close()); // fails once the disk froze; that is the point
        drop(db);
        disk = disk.crash(rng.random());
    }
    let db = rt.block_on(open(&disk, seed));
    rt.block_on(check(&db, &history.lock().unwrap(), seed));
    let _ = rt.block_on(db.close());
}

#[test]
fn acknowledged_commits_survive_crashes_and_no_transaction_is_partly_visible() {
    let cases = std::env::var("DB_CRASH_CASES")
        .map(|c| c.parse().unwrap())
        .unwrap_or(40);
    for seed in 0..cases {
        run(seed);
    }
}
