//! When a journal fails on the commit path: a transaction that may have committed is
//! reported `CommitUnknown` and never re-run by `transact`; one that cannot have committed
//! (a participant's `Prepared` failed, so no `Commit` exists) is a retryable abort, and
//! stays invisible after reopening.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use journaldb::{Database, Error, Options, StorageEngine};
use journaldb_journal::disk::{CrashDisk, Disk};

use crate::rt;

fn options(disk: &CrashDisk) -> Options {
    Options::default()
        .with_partitions(2)
        .with_seed(5)
        .with_disk(Arc::new(disk.clone()) as Arc<dyn Disk>)
        .with_storage(StorageEngine::Memory)
        // No maintenance heartbeat may take the failing fsync.
        .with_checkpoint_interval(Duration::from_secs(3600))
}

/// Two keys owned by different partitions.
fn keys_in_two_partitions() -> (String, String) {
    let first = "a".to_owned();
    let p = journaldb::partition::partition_of(first.as_bytes(), 2);
    let second = (0..)
        .map(|i| format!("b{i}"))
        .find(|k| journaldb::partition::partition_of(k.as_bytes(), 2) != p)
        .unwrap();
    (first, second)
}

#[test]
fn transact_does_not_rerun_a_transaction_that_may_have_committed() {
    let rt = rt();
    let disk = CrashDisk::default();
    rt.block_on(async {
        let db = Database::open_with("/db", options(&disk)).await.unwrap();
        let runs = AtomicU32::new(0);
        let result = db
            .transact(async |tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.put("counter", "1")?;
                disk.fail_next_syncs(1); // the commit's fsync fails
                Ok(())
            })
            .await;
        let err = result.unwrap_err();
        assert!(matches!(err, Error::CommitUnknown), "{err}");
        assert!(err.maybe_committed() && !err.is_retryable());
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "re-ran a maybe-committed transaction"
        );
        let _ = db.close().await; // the journal is poisoned
    });
}

#[test]
fn a_failed_prepare_is_a_definite_retryable_abort() {
    let rt = rt();
    let disk = CrashDisk::default();
    let (a, b) = keys_in_two_partitions();
    rt.block_on(async {
        let db = Database::open_with("/db", options(&disk)).await.unwrap();
        let mut tx = db.begin();
        tx.put(a.clone(), "1").unwrap();
        tx.put(b.clone(), "1").unwrap();
        disk.fail_next_syncs(1); // the first participant's `Prepared`
        let err = tx.commit().await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert!(err.is_retryable() && !err.maybe_committed());
        let _ = db.close().await;
    });
    // Reopen as is, then after a power loss (which crashes the first disk: in order).
    for power_loss in [false, true] {
        let reopened = if power_loss {
            disk.crash(9)
        } else {
            disk.clone()
        };
        rt.block_on(async {
            let db = Database::open_with("/db", options(&reopened))
                .await
                .unwrap();
            let tx = db.begin();
            assert_eq!(tx.get(&a).await.unwrap(), None);
            assert_eq!(tx.get(&b).await.unwrap(), None);
            db.close().await.unwrap();
        });
    }
}
