//! The concurrent bank test: 4 partitions, 16 accounts, 64 tasks moving money at random
//! while read-only audits at random times check the total. Audits must always see the same
//! total and never abort; the run must have had both conflicts and cross-partition commits.
//! It runs unchanged on an embedded database and on a local 3-node cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use journaldb::partition::partition_of;
use journaldb::{Database, Error, Options, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ACCOUNTS: u64 = 16;
const INITIAL: i64 = 100;
const TASKS: u64 = 64;
const TRANSFERS_PER_TASK: u64 = 15;

fn account(i: u64) -> String {
    format!("account/{i:02}")
}

#[test]
fn transfers_keep_the_total_and_audits_never_abort() {
    let dir = tempfile::tempdir().unwrap();
    crate::rt().block_on(async {
        let options = Options::default().with_partitions(4).with_seed(42);
        let db = Database::open_with(dir.path(), options).await.unwrap();
        bank(db.clone()).await;
        db.close().await.unwrap();
    });
}

#[test]
fn transfers_keep_the_total_and_audits_never_abort_on_a_cluster() {
    crate::rt().block_on(async {
        let cluster = crate::local_cluster::LocalCluster::start(3, 4, 2).await;
        bank(cluster.client.clone()).await;
        cluster.stop().await;
    });
}

async fn bank<S: Store + Clone + 'static>(db: S) {
    let conflicts = Arc::new(AtomicU64::new(0));
    let cross = Arc::new(AtomicU64::new(0));
    let audits = Arc::new(AtomicU64::new(0));
    let partitions = db.partitions();
    {
        let mut setup = db.begin();
        for i in 0..ACCOUNTS {
            setup.put(account(i), INITIAL.to_string()).unwrap();
        }
        setup.commit().await.unwrap();

        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (db, conflicts, cross, audits) =
                (db.clone(), conflicts.clone(), cross.clone(), audits.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(t);
                for _ in 0..TRANSFERS_PER_TASK {
                    if rng.random_bool(0.2) {
                        audit(&db).await;
                        audits.fetch_add(1, Ordering::Relaxed);
                    }
                    let from = rng.random_range(0..ACCOUNTS);
                    let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
                    let amount = rng.random_range(1..20);
                    loop {
                        match transfer(&db, from, to, amount).await {
                            Ok(()) => break,
                            Err(Error::Conflict { .. }) => {
                                conflicts.fetch_add(1, Ordering::Relaxed);
                                tokio::task::yield_now().await;
                            }
                            Err(e) => panic!("transfer failed: {e}"),
                        }
                    }
                    if partition_of(account(from).as_bytes(), partitions)
                        != partition_of(account(to).as_bytes(), partitions)
                    {
                        cross.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        audit(&db).await;
    }
    assert!(
        conflicts.load(Ordering::Relaxed) > 0,
        "the workload must contend"
    );
    assert!(
        cross.load(Ordering::Relaxed) > 0,
        "some transfers must span partitions"
    );
    assert!(audits.load(Ordering::Relaxed) > 0);
}

async fn transfer(db: &impl Store, from: u64, to: u64, amount: i64) -> Result<(), Error> {
    let mut tx = db.begin();
    let balance = |v: Option<bytes::Bytes>| -> i64 {
        std::str::from_utf8(&v.expect("accounts exist"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let a = balance(tx.get(account(from)).await?);
    let b = balance(tx.get(account(to)).await?);
    tx.put(account(from), (a - amount).to_string())?;
    tx.put(account(to), (b + amount).to_string())?;
    tx.commit().await.map(|_| ())
}

/// A read-only transaction: it must see the initial total and commit without error.
async fn audit(db: &impl Store) {
    let tx = db.begin();
    let range = journaldb::ScanRange::prefix(b"account/");
    let rows = tx
        .scan(&range, 100, false)
        .await
        .expect("audits never fail")
        .rows;
    assert_eq!(rows.len() as u64, ACCOUNTS);
    let total: i64 = rows
        .iter()
        .map(|(_, v)| std::str::from_utf8(v).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(
        total,
        INITIAL * ACCOUNTS as i64,
        "an audit saw money appear or vanish"
    );
    tx.commit()
        .await
        .expect("read-only transactions never abort");
}
