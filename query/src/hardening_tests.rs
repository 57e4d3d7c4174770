//! Regression tests of the hardening issue's defects that need the crate's insides (the
//! backend, partitions): a client that dies, lies or loses a reply can neither wedge keys
//! nor get a transaction applied twice. Each names the defect it guards against.

use std::time::Duration;

use journaldb_adjudicator::{CommitRequest, PrepareRequest, TxnStatus};
use journaldb_proto::{Clock, Epoch, Mutation, PartitionId, TxnId};

use crate::Options;
use crate::StorageEngine;
use crate::backend::Backend;
use crate::database::Database;
use crate::error::Error;
use crate::partition::partition_of;
use crate::retry::RetryPolicy;
use crate::retry::RetryState;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn options(partitions: u32) -> Options {
    Options {
        partitions: Some(partitions),
        storage: StorageEngine::Memory,
        seed: Some(3),
        vote_timeout: Duration::from_millis(200),
        ..Options::default()
    }
}

/// A key of each of two partitions.
fn keys_of_two_partitions() -> (String, String) {
    let a = "a".to_owned();
    let p = partition_of(a.as_bytes(), 2);
    let b = (0..)
        .map(|i| format!("b{i}"))
        .find(|k| partition_of(k.as_bytes(), 2) != p)
        .unwrap();
    (a, b)
}

fn backend(db: &Database) -> Backend {
    db.backend()
}

/// Votes `txn_id` (snapshot `start`, coordinated by the owner of `a`) on the keys `a` and
/// `b` of two partitions, as a client's prepares would: the votes, by partition, in order.
async fn prepare_two(
    db: &Database,
    txn_id: TxnId,
    start: journaldb_proto::Timestamp,
    a: &str,
    b: &str,
) -> Vec<(PartitionId, journaldb_proto::Timestamp)> {
    let coordinator = partition_of(a.as_bytes(), 2);
    let mut votes = Vec::new();
    for key in [a, b] {
        let req = PrepareRequest {
            txn_id,
            start_ts: start,
            keys: vec![key.to_owned().into()],
            coordinator,
            coordinator_epoch: Epoch::default(),
        };
        let p = partition_of(key.as_bytes(), 2);
        votes.push((p, backend(db).prepare(p, &req).await.unwrap()));
    }
    votes.sort();
    votes
}

/// Defect 2: `Status` answered Aborted for a single-partition transaction whose commit
/// request was still on its way (delayed in backpressure or the network); the request
/// then committed anyway, and `transact`, told "aborted", had re-run the closure.
#[test]
fn an_abort_reported_by_status_binds_a_single_partition_commit() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_with(dir.path(), options(1)).await.unwrap();
        let mut tx = db.begin();
        tx.put("k", "late").unwrap();
        let (id, start) = (tx.txn_id(), tx.start_ts());
        let p = tx.coordinator().unwrap();
        // The client lost track of the commit and asked; the answer is Aborted...
        assert_eq!(
            backend(&db).status(p, id, start).await,
            Some(TxnStatus::Aborted)
        );
        // ...so the original request, arriving now, must not commit.
        let err = tx.commit().await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        let read = db.begin();
        assert_eq!(
            read.get("k").await.unwrap(),
            None,
            "applied after 'aborted'"
        );
        db.close().await.unwrap();
    });
}

/// Defect 2, the retry path: a retried single-partition commit (`retry: true`) that is
/// refused makes the refusal binding, so the original, still on its way, cannot commit
/// after `transact` re-ran the closure.
#[test]
fn a_refused_retry_binds_the_original_request() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_with(dir.path(), options(1)).await.unwrap();
        let start = db.begin().start_ts();
        // Another writer of "k" commits after our snapshot.
        let mut other = db.begin();
        other.put("k", "other").unwrap();
        other.commit().await.unwrap();
        let p = partition_of(b"k", 1);
        let req = CommitRequest {
            txn_id: TxnId::new(77),
            start_ts: start,
            mutations: vec![Mutation::put("k", "ours")],
            retry: false,
        };
        let retried = backend(&db).commit_retry(p, &req).await.unwrap_err();
        assert!(matches!(retried, Error::Conflict { .. }), "{retried}");
        // The original arrives after the retry's answer: refused, not committed.
        let original = backend(&db).commit(p, &req).await.unwrap_err();
        assert!(matches!(original, Error::Unavailable { .. }), "{original}");
        assert_eq!(
            backend(&db).status(p, TxnId::new(77), start).await,
            Some(TxnStatus::Aborted)
        );
        db.close().await.unwrap();
    });
}

/// Defect 5: durability was recorded only by the request's own future; one dropped after
/// its record was queued left the outcome `InFlight` until it was pruned, after which
/// `Status` answered Aborted for a durable commit.
#[test]
fn a_commit_whose_request_was_dropped_is_reported_committed_once_durable() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_with(dir.path(), options(1)).await.unwrap();
        let p = partition_of(b"k", 1);
        let start = db.begin().start_ts();
        let req = CommitRequest {
            txn_id: TxnId::new(5),
            start_ts: start,
            mutations: vec![Mutation::put("k", "v")],
            retry: false,
        };
        let part = db.inner().part(p);
        let (commit_ts, queued) = part
            .commit_queued(db.inner().clock.now(), &req)
            .await
            .unwrap();
        let lsn = queued.expect("a record was queued").lsn();
        // The request's future is gone: nobody awaits durability or reports it.
        while part.journal().durable_end() <= lsn {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            backend(&db).status(p, TxnId::new(5), start).await,
            Some(TxnStatus::Committed(commit_ts))
        );
        db.close().await.unwrap();
    });
}

/// Defect 1: a vote left undecided — the client died (here: its commit future was dropped)
/// between its prepares and its `Decide` — kept its keys pending until a restart, and
/// every later writer got `Conflict`. Now the participant asks the coordinator after the
/// vote timeout (200 ms here) and the keys take writes again.
#[test]
fn keys_of_an_abandoned_cross_partition_commit_take_writes_after_the_vote_timeout() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_with(dir.path(), options(2)).await.unwrap();
        let (a, b) = keys_of_two_partitions();
        let start = db.begin().start_ts();
        let coordinator = partition_of(a.as_bytes(), 2);
        prepare_two(&db, TxnId::new(9), start, &a, &b).await;
        // The client is gone. A writer of `b` conflicts with the pending vote at first...
        let mut blocked = db.begin();
        blocked.put(b.clone(), "x").unwrap();
        let err = blocked.commit().await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        // ...and gets through once the participant has resolved the vote (Aborted: the
        // coordinator never saw a commit). Bounded by the timeout plus a maintenance tick;
        // the deadline here is far larger so that a slow machine cannot fail the test.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut tx = db.begin();
            tx.put(b.clone(), "x").unwrap();
            match tx.commit().await {
                Ok(_) => break,
                Err(Error::Conflict { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the vote was never resolved: {e}"),
            }
        }
        assert_eq!(
            backend(&db).status(coordinator, TxnId::new(9), start).await,
            Some(TxnStatus::Aborted)
        );
        db.close().await.unwrap();
    });
}

/// Defect 7: a commit learned through `Status` skipped the participants' decision (their
/// keys stayed pending) and commit wait.
#[test]
fn a_commit_learned_through_status_decides_the_participants() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            // No background resolution during the test: only the client may decide.
            vote_timeout: Duration::from_secs(3600),
            ..options(2)
        };
        let db = Database::open_with(dir.path(), options).await.unwrap();
        let (a, b) = keys_of_two_partitions();
        let mut tx = db.begin();
        tx.put(a.clone(), "1").unwrap();
        tx.put(b.clone(), "2").unwrap();
        let (id, start) = (tx.txn_id(), tx.start_ts());
        let coordinator = tx.coordinator().unwrap();
        let participants = [PartitionId::new(0), PartitionId::new(1)];
        // Votes and the commit happen; the reply is lost before any `Decide`.
        let votes = prepare_two(&db, id, start, &a, &b).await;
        let vote_ts: Vec<_> = votes.iter().map(|(_, v)| *v).collect();
        let mutations = vec![Mutation::put(a.clone(), "1"), Mutation::put(b.clone(), "2")];
        let commit_ts = backend(&db)
            .commit_prepared(coordinator, id, start, &vote_ts, &mutations, &participants)
            .await
            .unwrap();
        assert!(
            db.inner()
                .part(coordinator)
                .adjudicator()
                .is_pending(a.as_bytes()),
            "nobody decided yet"
        );
        let learned = crate::commit::Commit::new(&backend(&db), id, start)
            .ask_coordinator(coordinator, &participants)
            .await
            .unwrap();
        assert_eq!(learned, commit_ts);
        for p in participants {
            let adj = db.inner().part(p).adjudicator();
            assert!(
                !adj.is_pending(a.as_bytes()) && !adj.is_pending(b.as_bytes()),
                "{p} still holds the vote"
            );
        }
        db.close().await.unwrap();
    });
}

/// Defect 8: ids came from the seed alone, so two clients with one seed (or one client
/// restarted) reused ids and read each other's outcomes.
#[test]
fn two_handles_with_one_seed_draw_different_transaction_ids() {
    let one = RetryState::new(RetryPolicy::default(), 1, None).unwrap();
    let two = RetryState::new(RetryPolicy::default(), 1, None).unwrap();
    let ids = |s: &RetryState| (0..4).map(|_| s.txn_id()).collect::<Vec<_>>();
    assert_ne!(ids(&one), ids(&two));
    // Simulation replays pass an explicit id seed.
    let replay = |seed| RetryState::new(RetryPolicy::default(), 1, Some(seed)).unwrap();
    assert_eq!(ids(&replay(9)), ids(&replay(9)));
}

/// Defect 9: with a journal record limit below what the transaction limits allow, valid
/// commits would be refused at the journal; such a pair of settings is refused at open.
#[test]
fn a_journal_record_limit_below_the_transaction_limits_is_refused_at_open() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let defaults = options(1);
        let options = Options {
            journal: journaldb_journal::JournalOptions {
                max_record_bytes: 1 << 20,
                ..defaults.journal.clone()
            },
            ..defaults
        };
        let err = Database::open_with(dir.path(), options).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    });
}

/// Review finding: an embedded reopen raised the window horizon to the floor and pruned
/// with it every replayed outcome, so a vote whose `Decided` was lost in a crash was asked
/// about, answered "too old", and its keys stayed pending for the life of the process.
#[test]
fn a_vote_undecided_at_reopen_is_resolved_from_the_replayed_commit() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let options = || Options {
            vote_timeout: Duration::from_secs(3600),
            ..self::options(2)
        };
        let (a, b) = keys_of_two_partitions();
        let coordinator = partition_of(a.as_bytes(), 2);
        let participant = partition_of(b.as_bytes(), 2);
        {
            let db = Database::open_with(dir.path(), options()).await.unwrap();
            let tx = db.begin();
            let (id, start) = (TxnId::new(41), tx.start_ts());
            let votes = prepare_two(&db, id, start, &a, &b).await;
            let vote_ts: Vec<_> = votes.iter().map(|(_, v)| *v).collect();
            let participants: Vec<_> = votes.iter().map(|(p, _)| *p).collect();
            let mutations = vec![Mutation::put(a.clone(), "1"), Mutation::put(b.clone(), "2")];
            let commit_ts = backend(&db)
                .commit_prepared(coordinator, id, start, &vote_ts, &mutations, &participants)
                .await
                .unwrap();
            // The coordinator's own vote is decided (its floor moves past τc); the process
            // stops before the other participant's `Decide`.
            let now = db.inner().clock.now();
            db.inner()
                .part(coordinator)
                .decide(now, id, Some(commit_ts), true)
                .await
                .unwrap();
            db.close().await.unwrap();
        }
        let db = Database::open_with(dir.path(), options()).await.unwrap();
        // The coordinator still knows the outcome: not "too old", whose resolution would
        // be a conservative guess.
        assert!(
            matches!(
                backend(&db)
                    .status(coordinator, TxnId::new(41), db.begin().start_ts())
                    .await,
                Some(TxnStatus::Committed(_))
            ),
            "the replayed outcome was pruned at reopen"
        );
        for p in [coordinator, participant] {
            let adj = db.inner().part(p).adjudicator();
            assert!(
                !adj.is_pending(a.as_bytes()) && !adj.is_pending(b.as_bytes()),
                "{p} still holds the vote after reopening"
            );
        }
        assert_eq!(
            db.begin().get(b.clone()).await.unwrap().as_deref(),
            Some(&b"2"[..])
        );
        let mut tx = db.begin();
        tx.put(b.clone(), "3").unwrap();
        tx.commit().await.unwrap();
        db.close().await.unwrap();
    });
}
