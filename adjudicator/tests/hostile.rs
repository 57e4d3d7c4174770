//! Hardening (defect 4): a client that lies. Each service method gets absurd and random
//! messages — timestamps at the ends of the range, keys sent to the wrong partition,
//! unknown partitions and coordinators, commits without votes, decisions below the vote —
//! and afterwards every partition still commits, with a commit τ near the present (no
//! floor dragged into the future), and nothing panicked.

use bytes::Bytes;
use journaldb_proto::pb::{commit_reply, prepare_reply, status_reply};
use journaldb_proto::status::ErrorKind;
use journaldb_proto::{Clock, Timestamp, TxnId, pb};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::service::{Cluster, commit, put, runtime, serve};

/// Keys of partition 0 and 1 of the two-partition test service ("k" and "a" hash to 0,
/// "b" and "k3" to 1).
const OF_0: &str = "k";
const OF_1: &str = "b";

/// Both partitions still commit fresh transactions, at a τ near the clock.
async fn still_commits(c: &mut Cluster, round: u128) {
    for (p, key) in [(0, OF_0), (1, OF_1)] {
        let start = c.clock.now().latest;
        let reply = c
            .client
            .commit(commit(p, 1_000_000 + round * 2 + u128::from(p), start, key))
            .await
            .unwrap_or_else(|s| panic!("partition {p} refused a valid commit: {s}"))
            .into_inner();
        let Some(commit_reply::Outcome::CommittedTs(ts)) = reply.outcome else {
            panic!("partition {p}: {reply:?}");
        };
        let lead = Timestamp::from_nanos(ts).saturating_duration_since(c.clock.now().latest);
        assert!(
            lead < std::time::Duration::from_secs(2),
            "partition {p} commits {lead:?} in the future: a floor was dragged ahead"
        );
    }
}

fn kind(s: &tonic::Status) -> Option<ErrorKind> {
    ErrorKind::of(s)
}

#[test]
fn absurd_fields_are_refused_with_nothing_changed() {
    runtime().block_on(async {
        let mut c = serve().await;
        let start = c.clock.now().latest;
        // A promise at the end of time is clamped to the present.
        let promised = c
            .client
            .promise(pb::PromiseRequest {
                partition: 0,
                ts: u64::MAX,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(promised.floor < u64::MAX / 2, "{promised:?}");
        // A key of partition 1 sent to partition 0, with and without a topology version.
        for version in [0, 7] {
            let wrong = pb::CommitRequest {
                topology_version: version,
                ..commit(0, 1, start, OF_1)
            };
            let err = c.client.commit(wrong).await.unwrap_err();
            assert!(
                matches!(
                    kind(&err),
                    Some(ErrorKind::InvalidArgument | ErrorKind::Unavailable)
                ),
                "{err}"
            );
        }
        // A vote naming a coordinator that does not exist.
        let vote = |txn: u128, coordinator: u32, partition: u32, key: &str| pb::PrepareRequest {
            partition,
            txn_id: Some(TxnId::new(txn).into()),
            start_ts: start.as_nanos(),
            keys: vec![Bytes::from(key.to_owned())],
            coordinator,
            coordinator_epoch: None,
            topology_version: 0,
        };
        let err = c.client.prepare(vote(2, 99, 0, OF_0)).await.unwrap_err();
        assert_eq!(kind(&err), Some(ErrorKind::InvalidArgument), "{err}");
        // A real vote on partition 1, then a decision far in the future and one below it.
        let reply = c
            .client
            .prepare(vote(3, 0, 1, OF_1))
            .await
            .unwrap()
            .into_inner();
        let Some(prepare_reply::Vote::VoteTs(vote_ts)) = reply.vote else {
            panic!("{reply:?}");
        };
        for absurd in [u64::MAX, vote_ts - 1] {
            let err = c
                .client
                .decide(pb::DecideRequest {
                    partition: 1,
                    txn_id: Some(TxnId::new(3).into()),
                    outcome: Some(pb::decide_request::Outcome::CommittedTs(absurd)),
                })
                .await
                .unwrap_err();
            assert_eq!(kind(&err), Some(ErrorKind::InvalidArgument), "{err}");
        }
        // A cross-partition commit whose coordinator never voted, or with no votes.
        let no_own_vote = pb::CommitPreparedRequest {
            partition: 0,
            txn_id: Some(TxnId::new(3).into()),
            start_ts: start.as_nanos(),
            votes: vec![vote_ts, vote_ts],
            mutations: vec![put(OF_0), put(OF_1)],
            participants: vec![0, 1],
            topology_version: 0,
        };
        let err = c
            .client
            .commit_prepared(no_own_vote.clone())
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(ErrorKind::InvalidArgument), "{err}");
        let no_votes = pb::CommitPreparedRequest {
            votes: vec![],
            participants: vec![],
            ..no_own_vote
        };
        let err = c.client.commit_prepared(no_votes).await.unwrap_err();
        assert_eq!(kind(&err), Some(ErrorKind::InvalidArgument), "{err}");
        // A status question from the end of time.
        let err = c
            .client
            .status(pb::StatusRequest {
                partition: 0,
                txn_id: Some(TxnId::new(4).into()),
                start_ts: u64::MAX,
            })
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(ErrorKind::Unavailable), "{err}");
        // The honest decision still applies; everything still commits near now.
        c.client
            .decide(pb::DecideRequest {
                partition: 1,
                txn_id: Some(TxnId::new(3).into()),
                outcome: Some(pb::decide_request::Outcome::Aborted(pb::Aborted {})),
            })
            .await
            .unwrap();
        still_commits(&mut c, 0).await;
    });
}

/// A random protobuf value of each request type, with fields drawn from both sane and
/// absurd ranges, so some requests are valid and take effect.
fn random_request(rng: &mut ChaCha8Rng, now: u64) -> Request {
    let ts = |rng: &mut ChaCha8Rng| match rng.random_range(0..5) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.random(),
        _ => now.saturating_add_signed(rng.random_range(-5_000_000_000..5_000_000_000)),
    };
    let txn = |rng: &mut ChaCha8Rng| {
        (!rng.random_bool(0.05)).then(|| pb::TxnId::from(TxnId::new(rng.random_range(0..16))))
    };
    let key = |rng: &mut ChaCha8Rng| -> Bytes {
        match rng.random_range(0..4) {
            0 => Bytes::new(),
            1 => Bytes::from(vec![0xAB; rng.random_range(0..6000)]),
            _ => Bytes::from(format!("k{}", rng.random_range(0..10))),
        }
    };
    let mutation = |rng: &mut ChaCha8Rng| pb::Mutation {
        key: key(rng),
        op: match rng.random_range(0..3) {
            0 => None,
            1 => Some(pb::mutation::Op::Delete(pb::Delete {})),
            _ => Some(pb::mutation::Op::Put(Bytes::from_static(b"v"))),
        },
    };
    let partition = |rng: &mut ChaCha8Rng| rng.random_range(0..4);
    match rng.random_range(0..6) {
        0 => Request::Commit(pb::CommitRequest {
            partition: partition(rng),
            txn_id: txn(rng),
            start_ts: ts(rng),
            mutations: (0..rng.random_range(0..4)).map(|_| mutation(rng)).collect(),
            retry: rng.random(),
            topology_version: rng.random_range(0..3),
        }),
        1 => Request::Prepare(pb::PrepareRequest {
            partition: partition(rng),
            txn_id: txn(rng),
            start_ts: ts(rng),
            keys: (0..rng.random_range(0..4)).map(|_| key(rng)).collect(),
            coordinator: partition(rng),
            coordinator_epoch: None,
            topology_version: rng.random_range(0..3),
        }),
        2 => Request::CommitPrepared(pb::CommitPreparedRequest {
            partition: partition(rng),
            txn_id: txn(rng),
            start_ts: ts(rng),
            votes: (0..rng.random_range(0..4)).map(|_| ts(rng)).collect(),
            mutations: (0..rng.random_range(0..4)).map(|_| mutation(rng)).collect(),
            participants: (0..rng.random_range(0..4))
                .map(|_| partition(rng))
                .collect(),
            topology_version: rng.random_range(0..3),
        }),
        3 => Request::Decide(pb::DecideRequest {
            partition: partition(rng),
            txn_id: txn(rng),
            outcome: match rng.random_range(0..3) {
                0 => None,
                1 => Some(pb::decide_request::Outcome::Aborted(pb::Aborted {})),
                _ => Some(pb::decide_request::Outcome::CommittedTs(ts(rng))),
            },
        }),
        4 => Request::Status(pb::StatusRequest {
            partition: partition(rng),
            txn_id: txn(rng),
            start_ts: ts(rng),
        }),
        _ => Request::Promise(pb::PromiseRequest {
            partition: partition(rng),
            ts: ts(rng),
        }),
    }
}

#[derive(Debug)]
enum Request {
    Commit(pb::CommitRequest),
    Prepare(pb::PrepareRequest),
    CommitPrepared(pb::CommitPreparedRequest),
    Decide(pb::DecideRequest),
    Status(pb::StatusRequest),
    Promise(pb::PromiseRequest),
}

#[test]
fn random_messages_to_every_method_leave_every_partition_committing() {
    runtime().block_on(async {
        let mut c = serve().await;
        for seed in 0..20u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..40 {
                let now = c.clock.now().latest.as_nanos();
                let request = random_request(&mut rng, now);
                let described = format!("seed {seed}: {request:?}");
                // Any answer will do — a reply or a typed refusal — but never a dead
                // connection or a panicked handler (tonic reports those without a kind).
                let refused = match request {
                    Request::Commit(r) => c.client.commit(r).await.err(),
                    Request::Prepare(r) => c.client.prepare(r).await.err(),
                    Request::CommitPrepared(r) => c.client.commit_prepared(r).await.err(),
                    Request::Decide(r) => c.client.decide(r).await.err(),
                    Request::Status(r) => c.client.status(r).await.map(|reply| {
                        let status = reply.into_inner().status;
                        assert!(
                            !matches!(status, Some(status_reply::Status::CommittedTs(ts)) if ts > now + 5_000_000_000),
                            "{described}: {status:?}"
                        );
                    }).err(),
                    Request::Promise(r) => c.client.promise(r).await.err(),
                };
                if let Some(status) = refused {
                    assert!(kind(&status).is_some(), "{described}: untyped {status:?}");
                }
            }
            still_commits(&mut c, u128::from(seed) + 1).await;
        }
    });
}
