//! Regression (hardening defect 9): a record the journal refused unwritten (over its
//! record limit) made the adjudicator step down as if the append might have happened, so
//! one oversized request stopped the partition. Now the decision is undone, the request is
//! refused as invalid, and the partition goes on deciding.

use std::sync::Arc;

use bytes::Bytes;
use journaldb_adjudicator::{
    Adjudicator, AdjudicatorConfig, CommitDecision, CommitRequest, Partition, PlantedBug,
    PrepareRequest, Refusal, TxnStatus,
};
use journaldb_journal::disk::{CrashDisk, CrashDiskConfig, Disk};
use journaldb_journal::{Flusher, Journal, JournalOptions};
use journaldb_proto::{
    Clock, EmbeddedClock, Epoch, ManualClock, Mutation, PartitionId, TimeInterval, Timestamp, TxnId,
};

use crate::service::runtime;

/// Partition 0, a fresh adjudicator over a journal opened in `dir` with `options`.
fn partition(dir: &std::path::Path, options: JournalOptions) -> Partition {
    let journal = Arc::new(Journal::open(dir, options).unwrap());
    let id = PartitionId::new(0);
    let adj = Adjudicator::new(id, AdjudicatorConfig::default(), Timestamp::ZERO);
    Partition::new(id, adj, journal)
}

#[test]
fn a_record_refused_unwritten_does_not_step_the_adjudicator_down() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            max_record_bytes: 1024,
            ..JournalOptions::default()
        };
        let part = partition(dir.path(), options);
        let clock = EmbeddedClock::new(Timestamp::ZERO);
        let request = |txn: u128, value: usize| CommitRequest {
            txn_id: TxnId::new(txn),
            start_ts: clock.now().latest,
            mutations: vec![Mutation::put("k", vec![b'v'; value])],
            retry: false,
        };
        let refused = part.commit(clock.now(), &request(1, 4096)).await;
        assert!(
            matches!(refused, Err(Refusal::Decision(CommitDecision::Invalid(_)))),
            "{refused:?}"
        );
        assert!(!part.adjudicator().is_stepped_down());
        // The refused transaction left no outcome behind: a question about it aborts it.
        let status = part
            .status(clock.now(), TxnId::new(1), clock.now().latest)
            .await;
        assert_eq!(status, Ok(TxnStatus::Aborted));
        // And the partition still commits.
        let committed = part.commit(clock.now(), &request(2, 16)).await.unwrap();
        let status = part
            .status(clock.now(), TxnId::new(2), clock.now().latest)
            .await;
        assert_eq!(status, Ok(TxnStatus::Committed(committed)));
    });
}

/// A round of vote resolution asks a coordinator that did not answer only once: its other
/// overdue votes wait for the next round, and the votes of coordinators that answer are
/// decided meanwhile. (Without the guard, each vote of an unreachable coordinator costs a
/// full request timeout, and one dead node holds up every other coordinator's votes.)
#[test]
fn a_coordinator_that_does_not_answer_is_asked_once_per_round() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let part = partition(dir.path(), JournalOptions::default());
        let t = |s: u64| TimeInterval::exact(Timestamp::from_nanos(s * 1_000_000_000));
        // Three votes coordinated by partition 1 (unreachable), then one by partition 2.
        for (txn, key, coordinator) in [(1, "a", 1), (2, "b", 1), (3, "c", 1), (4, "d", 2)] {
            let request = PrepareRequest {
                txn_id: TxnId::new(txn),
                start_ts: t(1).latest,
                keys: vec![Bytes::from_static(key.as_bytes())],
                coordinator: PartitionId::new(coordinator),
                coordinator_epoch: Epoch::default(),
            };
            part.prepare(t(2), &request).await.unwrap();
        }
        let asked = parking_lot::Mutex::new(Vec::new());
        let decided = part
            .resolve_overdue(t(60), |coordinator, txn, _bound| {
                asked.lock().push((coordinator.get(), txn));
                let answer = (coordinator.get() == 2).then_some(TxnStatus::Aborted);
                async move { answer }
            })
            .await;
        let asked = asked.into_inner();
        assert_eq!(
            asked.iter().filter(|(c, _)| *c == 1).count(),
            1,
            "asked {asked:?}"
        );
        assert!(asked.contains(&(2, TxnId::new(4))), "asked {asked:?}");
        assert_eq!(decided, 1);
        // The next round asks partition 1 again, about the first vote still open.
        let again = parking_lot::Mutex::new(Vec::new());
        part.resolve_overdue(t(61), |coordinator, txn, _bound| {
            again.lock().push((coordinator.get(), txn));
            async move { Some(TxnStatus::Aborted) }
        })
        .await;
        assert_eq!(
            again.into_inner().len(),
            3,
            "the three open votes are asked"
        );
    });
}

/// Hardening paired assertion: a caller that learned of a commit's durability another way
/// (embedded: storage applied it) skips awaiting the journal — and if its record is not in
/// fact below the journal's durable end, the partition stops (a crash in simulation)
/// instead of acknowledging a commit a crash could lose. Here the flusher is a task on a
/// one-thread runtime that has not run yet, so the record cannot be durable.
#[test]
#[should_panic(expected = "treated as durable")]
fn treating_a_queued_commit_as_durable_before_it_is_stops_the_partition() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            flusher: journaldb_journal::Flusher::Task,
            ..JournalOptions::default()
        };
        let part = partition(dir.path(), options);
        let clock = EmbeddedClock::new(Timestamp::ZERO);
        let request = CommitRequest {
            txn_id: TxnId::new(7),
            start_ts: clock.now().latest,
            mutations: vec![Mutation::put("k", "v")],
            retry: false,
        };
        let (_, queued) = part.commit_queued(clock.now(), &request).await.unwrap();
        let submitted = queued.expect("a new commit queues its record");
        let _ = part.finish_commit(request.txn_id, submitted, true).await;
    });
}

/// A durable promise that needs no record of its own stands on the records queued before
/// it: it is answered only once they are durable. Here the fsync of the queued commit
/// fails, so the promise fails too rather than promise on a record a restart would lose.
#[test]
fn a_promise_is_not_answered_on_a_record_that_never_became_durable() {
    current_thread().block_on(async {
        let (part, disk, clock) = on_crash_disk(0, None);
        let below = clock.now().latest;
        clock.advance(std::time::Duration::from_millis(1));
        disk.fail_next_syncs(1);
        let request = CommitRequest {
            txn_id: TxnId::new(1),
            start_ts: clock.now().latest,
            mutations: vec![Mutation::put("k", "v")],
            retry: false,
        };
        let (committed, promised) = tokio::join!(
            part.commit(clock.now(), &request),
            part.promise_durable(below)
        );
        assert_eq!(committed, Err(Refusal::AppendFailed));
        assert_eq!(
            promised,
            Err(Refusal::AppendFailed),
            "no promise on a lost record"
        );
    });
}

/// A retried `Prepare` is answered with the vote only once the `Prepared` record of the
/// first one is durable (ARCHITECTURE §5 rule 1): here that record's fsync fails, so the
/// retry fails too — answered from memory (the planted `VoteFromMemory`), it hands out a
/// vote no restart (and no new leader) knows of, and the coordinator could commit on it.
#[test]
fn a_retried_prepare_is_not_answered_before_its_vote_is_durable() {
    let (first, retried) = prepare_twice_on_a_failing_sync(None);
    assert_eq!(first, Err(Refusal::AppendFailed));
    assert_eq!(
        retried,
        Err(Refusal::AppendFailed),
        "no vote answered on a record that never became durable"
    );
    let (first, retried) = prepare_twice_on_a_failing_sync(Some(PlantedBug::VoteFromMemory));
    assert_eq!(first, Err(Refusal::AppendFailed));
    assert!(retried.is_ok(), "the planted bug answers from memory");
}

/// The same `Prepare` twice at once on partition 1, whose journal's next fsync fails.
fn prepare_twice_on_a_failing_sync(
    planted: Option<PlantedBug>,
) -> (Result<Timestamp, Refusal>, Result<Timestamp, Refusal>) {
    current_thread().block_on(async {
        let (part, disk, clock) = on_crash_disk(1, planted);
        disk.fail_next_syncs(1);
        let request = PrepareRequest {
            txn_id: TxnId::new(9),
            start_ts: clock.now().latest,
            keys: vec![Bytes::from_static(b"k")],
            coordinator: PartitionId::new(0),
            coordinator_epoch: Epoch::default(),
        };
        tokio::join!(
            part.prepare(clock.now(), &request),
            part.prepare(clock.now(), &request)
        )
    })
}

/// A repeated `Decide` is answered only once the `Decided` record of the first one is
/// durable (ARCHITECTURE §5 rule 1): here that record's fsync fails, so the repeat fails
/// too. Answered at once from memory, it would stop its sender's retries while the
/// decision could still be lost (after a failover the vote would hold its keys pending
/// until the vote timeout).
#[test]
fn a_repeated_decide_is_not_answered_before_the_decision_is_durable() {
    current_thread().block_on(async {
        let (part, disk, clock) = on_crash_disk(1, None);
        let txn_id = TxnId::new(9);
        let request = PrepareRequest {
            txn_id,
            start_ts: clock.now().latest,
            keys: vec![Bytes::from_static(b"k")],
            coordinator: PartitionId::new(0),
            coordinator_epoch: Epoch::default(),
        };
        let vote = part.prepare(clock.now(), &request).await.unwrap();
        disk.fail_next_syncs(1);
        let (first, repeated) = tokio::join!(
            part.decide(clock.now(), txn_id, Some(vote), true),
            part.decide(clock.now(), txn_id, Some(vote), true)
        );
        assert_eq!(first, Err(Refusal::AppendFailed));
        assert_eq!(
            repeated,
            Err(Refusal::AppendFailed),
            "no decision answered on a record that never became durable"
        );
    });
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Partition `id`, with `planted` planted, over a journal on a crash-testing disk whose
/// syncs a test can make fail, and a clock at 1 s. Within a runtime: the journal's flusher
/// is a task.
fn on_crash_disk(id: u32, planted: Option<PlantedBug>) -> (Partition, CrashDisk, ManualClock) {
    let disk = CrashDisk::new(CrashDiskConfig::default());
    let options = JournalOptions {
        flusher: Flusher::Task,
        ..JournalOptions::default()
    };
    let journal = Journal::open_on(
        Arc::new(disk.clone()) as Arc<dyn Disk>,
        "/db/journal",
        options,
    )
    .unwrap();
    let id = PartitionId::new(id);
    let config = AdjudicatorConfig {
        planted_bug: planted,
        ..AdjudicatorConfig::default()
    };
    let adj = Adjudicator::new(id, config, Timestamp::ZERO);
    let part = Partition::new(id, adj, Arc::new(journal));
    (
        part,
        disk,
        ManualClock::new(Timestamp::from_nanos(1_000_000_000)),
    )
}
