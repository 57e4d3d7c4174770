//! The storage node: reads wait for the watermark (or time out, retryably), and a restart
//! resumes from the stored positions rather than the journals' start.

use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use journaldb_proto::{Lsn, Mutation, PartitionId, Timestamp, TxnId, pb};
use journaldb_storage::{Engine, Error, MemoryEngine, RocksEngine, StorageNode};

const A: PartitionId = PartitionId::new(0);
const B: PartitionId = PartitionId::new(1);

fn ts(n: u64) -> Timestamp {
    Timestamp::from_nanos(n)
}

fn commit(t: u64, key: &str) -> pb::Record {
    pb::Record::commit(
        TxnId::new(u128::from(t)),
        Timestamp::from_nanos(t),
        [Mutation::put(key.to_owned(), format!("v{t}"))],
        &[],
    )
}

fn heartbeat(t: u64) -> pb::Record {
    pb::Record::heartbeat(Timestamp::from_nanos(t))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn a_read_waits_until_every_journal_has_passed_its_timestamp() {
    let rt = runtime();
    let node = Arc::new(StorageNode::open(MemoryEngine::new(), &[A, B]).unwrap());
    node.ingest(A, Lsn::new(1), &commit(10, "k")).unwrap();
    let reader = {
        let node = node.clone();
        rt.spawn(async move { node.get(b"k", ts(10), pending()).await })
    };
    rt.block_on(tokio::task::yield_now());
    assert!(!reader.is_finished(), "journal B has not passed τ10 yet");
    node.ingest(B, Lsn::new(1), &heartbeat(11)).unwrap();
    let value = rt.block_on(reader).unwrap().unwrap();
    assert_eq!(value.as_deref(), Some(&b"v10"[..]));
    assert_eq!(node.watermark(), ts(10));
}

#[test]
fn a_read_past_the_watermark_times_out_retryably_and_close_ends_waits() {
    let rt = runtime();
    let node = StorageNode::open(MemoryEngine::new(), &[A]).unwrap();
    node.ingest(A, Lsn::new(1), &heartbeat(5)).unwrap();
    let err = rt
        .block_on(async {
            let deadline = tokio::time::sleep(Duration::from_millis(50));
            node.get(b"k", ts(6), deadline).await
        })
        .unwrap_err();
    assert!(matches!(err, Error::WatermarkTimeout { watermark, .. } if watermark == ts(5)));
    assert!(err.is_retryable());
    // At or below the watermark the read is immediate, even with an expired deadline.
    assert_eq!(
        rt.block_on(node.get(b"k", ts(5), std::future::ready(())))
            .unwrap(),
        None
    );
    node.close();
    assert!(matches!(
        rt.block_on(node.get(b"k", ts(6), pending())),
        Err(Error::Closed)
    ));
    // A feed still running when the node closes (a node shutting down closes its storage
    // before its feeds stop) is told so, and nothing moves.
    assert!(matches!(
        node.ingest(A, Lsn::new(2), &heartbeat(9)),
        Err(Error::Closed)
    ));
    assert_eq!(node.watermark(), ts(5));
}

#[test]
fn a_restarted_node_resumes_from_its_stored_positions() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    {
        let node = StorageNode::open(RocksEngine::open(dir.path()).unwrap(), &[A, B]).unwrap();
        assert_eq!(node.resume_positions().unwrap()[&A], Lsn::FIRST);
        for (i, t) in [10, 20, 30].into_iter().enumerate() {
            node.ingest(A, Lsn::new(i as u64 + 1), &commit(t, "a"))
                .unwrap();
        }
        node.ingest(B, Lsn::new(1), &heartbeat(25)).unwrap();
        node.store().flush().unwrap();
    }
    let node = StorageNode::open(RocksEngine::open(dir.path()).unwrap(), &[A, B]).unwrap();
    let resume = node.resume_positions().unwrap();
    // Watermark min(30, 25) = 25: A's τ10 and τ20 and B's τ25 were applied; A's τ30 not.
    assert_eq!((resume[&A], resume[&B]), (Lsn::new(3), Lsn::new(2)));
    assert_eq!(node.watermark(), ts(25));
    let v = rt
        .block_on(node.get(b"a", ts(20), std::future::ready(())))
        .unwrap();
    assert_eq!(v.as_deref(), Some(&b"v20"[..]));
    // Replaying from the resume positions continues the history.
    node.ingest(A, Lsn::new(3), &commit(30, "a")).unwrap();
    node.ingest(B, Lsn::new(2), &heartbeat(31)).unwrap();
    let v = rt.block_on(node.get(b"a", ts(30), pending())).unwrap();
    assert_eq!(v.as_deref(), Some(&b"v30"[..]));
    // A record out of order is refused, not applied.
    assert!(matches!(
        node.ingest(A, Lsn::new(9), &heartbeat(40)),
        Err(Error::Crossbar(_))
    ));
}

/// Regression (hardening defect 3): the crossbar advanced its state before the store's
/// write succeeded, so a failed write lost its batch, the next batch moved the watermark
/// past the lost records (stale reads, acknowledged data missing), and a restart failed on
/// timestamp order.
#[test]
fn a_failed_storage_write_loses_nothing_and_holds_the_watermark() {
    use journaldb_storage::{Faulty, WriteFaults};
    let rt = runtime();
    let faults = WriteFaults::default();
    let node = Arc::new(
        StorageNode::open(Faulty::new(MemoryEngine::new(), faults.clone()), &[A]).unwrap(),
    );
    node.ingest(A, Lsn::new(1), &commit(10, "x")).unwrap();
    assert_eq!(node.watermark(), ts(10));
    faults.set_failing(true);
    let err = node.ingest(A, Lsn::new(2), &commit(20, "y")).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err}");
    assert_eq!(node.watermark(), ts(10), "nothing past the stored data");
    assert_eq!(node.next_lsn(A), Some(Lsn::new(3)), "the record was taken");
    // The store recovers; the next record's batch carries the one that failed.
    faults.set_failing(false);
    node.ingest(A, Lsn::new(3), &commit(30, "z")).unwrap();
    assert_eq!(node.watermark(), ts(30));
    for (key, at, want) in [("y", 20, "v20"), ("z", 30, "v30"), ("x", 30, "v10")] {
        let got = rt
            .block_on(node.get(key.as_bytes(), ts(at), pending()))
            .unwrap();
        assert_eq!(got.as_deref(), Some(want.as_bytes()), "{key} at {at}");
    }
    // A feed retries by itself: the write fails twice, then the store heals.
    faults.set_failing(true);
    let feed = {
        let node = node.clone();
        rt.spawn(async move {
            let record = commit(40, "w");
            node.ingest_retrying(A, [(Lsn::new(4), &record)], Duration::from_millis(1))
                .await
        })
    };
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(5)).await });
    assert!(!feed.is_finished(), "still retrying while the store fails");
    assert_eq!(node.watermark(), ts(30));
    faults.set_failing(false);
    rt.block_on(feed).unwrap().unwrap();
    assert_eq!(node.watermark(), ts(40));
    let got = rt.block_on(node.get(b"w", ts(40), pending())).unwrap();
    assert_eq!(got.as_deref(), Some(&b"v40"[..]));
}

/// Maintenance rounds at once (the maintenance loop and `Database::compact`) while the
/// watermark moves: each records its checkpoint in watermark order, never tripping the
/// history's "moves only forward" assertion.
#[test]
fn racing_maintenance_rounds_record_checkpoints_in_order() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let node = StorageNode::open(RocksEngine::open(dir.path()).unwrap(), &[A]).unwrap();
    let running = AtomicUsize::new(4);
    /// Counts a maintainer out even if it panics, so the writer stops.
    struct Done<'a>(&'a AtomicUsize);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Release);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut t = 0;
            while running.load(Ordering::Acquire) > 0 {
                t += 1;
                node.ingest(A, Lsn::new(t), &heartbeat(t)).unwrap();
            }
        });
        for _ in 0..4 {
            s.spawn(|| {
                let _done = Done(&running);
                for _ in 0..200 {
                    node.maintain(node.watermark()).unwrap();
                }
            });
        }
    });
    let last = node.maintain(ts(u64::MAX)).unwrap();
    assert_eq!(node.checkpoint_before(ts(u64::MAX)), Some(last));
}
