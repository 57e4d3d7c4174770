//! The adjudicator gRPC service over TCP on 127.0.0.1, two partitions with real journals:
//! single-partition commits (idempotent by txn id, conflicts as replies), the
//! cross-partition protocol (prepare, one commit, decide, status), durable promises, and
//! typed statuses for bad requests while the server stays up.

use std::sync::Arc;

use bytes::Bytes;
use journaldb_adjudicator::service::AdjudicatorServer;
use journaldb_adjudicator::{Adjudicator, AdjudicatorConfig, Partition};
use journaldb_journal::{Journal, JournalOptions, Lsn};
use journaldb_proto::pb::adjudicator_service_client::AdjudicatorServiceClient;
use journaldb_proto::pb::adjudicator_service_server::AdjudicatorServiceServer;
use journaldb_proto::pb::{commit_reply, prepare_reply, status_reply};
use journaldb_proto::status::ErrorKind;
use journaldb_proto::{EmbeddedClock, Limits, Mutation, PartitionId, Timestamp, TxnId, pb};
use prost::Message;
use tonic::transport::Channel;

pub(crate) struct Cluster {
    pub(crate) client: AdjudicatorServiceClient<Channel>,
    pub(crate) journals: Vec<Arc<Journal>>,
    pub(crate) clock: Arc<EmbeddedClock>,
    _dir: tempfile::TempDir,
}

pub(crate) async fn serve() -> Cluster {
    serve_at_version(0).await
}

/// A server that refuses requests routed by another topology version than `version`.
async fn serve_at_version(version: u64) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut partitions = Vec::new();
    let mut journals = Vec::new();
    for p in 0..2 {
        let id = PartitionId::new(p);
        let journal = Arc::new(
            Journal::open(
                dir.path().join(format!("journal-{p}")),
                JournalOptions::default(),
            )
            .unwrap(),
        );
        let adj = Adjudicator::new(id, AdjudicatorConfig::default(), Timestamp::ZERO);
        partitions.push(Arc::new(Partition::new(id, adj, journal.clone())));
        journals.push(journal);
    }
    let clock = Arc::new(EmbeddedClock::new(Timestamp::ZERO));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = AdjudicatorServer::new(partitions, 2, clock.clone(), Limits::default())
        .with_topology_version(version);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AdjudicatorServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = AdjudicatorServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Cluster {
        client,
        journals,
        clock,
        _dir: dir,
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn put(key: &str) -> pb::Mutation {
    Mutation::put(key.to_owned(), "v".to_owned()).into()
}

pub(crate) fn commit(
    partition: u32,
    txn: u128,
    start_ts: Timestamp,
    key: &str,
) -> pb::CommitRequest {
    pb::CommitRequest {
        partition,
        txn_id: Some(TxnId::new(txn).into()),
        start_ts: start_ts.as_nanos(),
        mutations: vec![put(key)],
        retry: false,
        topology_version: 0,
    }
}

fn records(journal: &Journal) -> Vec<pb::Record> {
    journal
        .read_from(Lsn::FIRST)
        .unwrap()
        .map(|r| pb::Record::decode(r.unwrap().1).unwrap())
        .collect()
}

use journaldb_proto::Clock;

#[test]
fn commits_are_idempotent_and_conflicts_are_replies() {
    runtime().block_on(async {
        let mut c = serve().await;
        let start = c.clock.now().latest;
        let first = c
            .client
            .commit(commit(0, 1, start, "k"))
            .await
            .unwrap()
            .into_inner();
        let Some(commit_reply::Outcome::CommittedTs(ts)) = first.outcome else {
            panic!("{first:?}");
        };
        let retry = pb::CommitRequest {
            retry: true,
            ..commit(0, 1, start, "k")
        };
        let again = c.client.commit(retry).await.unwrap().into_inner();
        assert_eq!(again.outcome, Some(commit_reply::Outcome::CommittedTs(ts)));
        // A concurrent writer of "k" (same snapshot) conflicts.
        let other = c
            .client
            .commit(commit(0, 2, start, "k"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            other.outcome,
            Some(commit_reply::Outcome::Conflict(pb::Conflict {
                key: Bytes::from_static(b"k")
            }))
        );
        let commits = records(&c.journals[0])
            .into_iter()
            .filter(|r| matches!(r.kind, Some(pb::record::Kind::Commit(_))))
            .count();
        assert_eq!(commits, 1, "the retry appended nothing");
    });
}

#[test]
fn the_cross_partition_protocol_runs_over_grpc() {
    runtime().block_on(async {
        let mut c = serve().await;
        let start = c.clock.now().latest;
        let txn = Some(pb::TxnId::from(TxnId::new(7)));
        let mut votes = Vec::new();
        for (p, key) in [(0, "a"), (1, "b")] {
            let reply = c
                .client
                .prepare(pb::PrepareRequest {
                    partition: p,
                    txn_id: txn,
                    start_ts: start.as_nanos(),
                    keys: vec![Bytes::from(key)],
                    coordinator: 0,
                    coordinator_epoch: None,
                    topology_version: 0,
                })
                .await
                .unwrap()
                .into_inner();
            let Some(prepare_reply::Vote::VoteTs(v)) = reply.vote else {
                panic!("{reply:?}");
            };
            votes.push(v);
        }
        let committed = c
            .client
            .commit_prepared(pb::CommitPreparedRequest {
                partition: 0,
                txn_id: txn,
                start_ts: start.as_nanos(),
                votes,
                mutations: vec![put("a"), put("b")],
                participants: vec![0, 1],
                topology_version: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let Some(commit_reply::Outcome::CommittedTs(ts)) = committed.outcome else {
            panic!("{committed:?}");
        };
        for p in [0, 1] {
            c.client
                .decide(pb::DecideRequest {
                    partition: p,
                    txn_id: txn,
                    outcome: Some(pb::decide_request::Outcome::CommittedTs(ts)),
                })
                .await
                .unwrap();
        }
        let status = c
            .client
            .status(pb::StatusRequest {
                partition: 0,
                txn_id: txn,
                start_ts: start.as_nanos(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.status, Some(status_reply::Status::CommittedTs(ts)));
        // A transaction the coordinator never saw is aborted for good by the question.
        let unknown = c
            .client
            .status(pb::StatusRequest {
                partition: 0,
                txn_id: Some(TxnId::new(99).into()),
                start_ts: start.as_nanos(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            unknown.status,
            Some(status_reply::Status::Aborted(pb::Aborted {}))
        );
        // Below the horizon it may have been forgotten: unknown, never "aborted".
        let ancient = c
            .client
            .status(pb::StatusRequest {
                partition: 0,
                txn_id: Some(TxnId::new(98).into()),
                start_ts: 1,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            matches!(ancient.status, Some(status_reply::Status::TooOld(floor)) if floor > 0),
            "{ancient:?}"
        );
        let kinds = |j: &Journal| -> Vec<&'static str> {
            records(j)
                .iter()
                .map(|r| match r.kind {
                    Some(pb::record::Kind::Prepared(_)) => "prepared",
                    Some(pb::record::Kind::Commit(_)) => "commit",
                    Some(pb::record::Kind::Decided(_)) => "decided",
                    _ => "other",
                })
                .collect()
        };
        // The last: the coordinator's durable abort of transaction 99.
        assert_eq!(
            kinds(&c.journals[0]),
            ["prepared", "commit", "decided", "decided"]
        );
        assert_eq!(kinds(&c.journals[1]), ["prepared", "decided"]);
    });
}

#[test]
fn a_promise_is_a_durable_heartbeat_when_the_floor_moves() {
    runtime().block_on(async {
        let mut c = serve().await;
        let ts = c.clock.now().latest;
        let reply = c
            .client
            .promise(pb::PromiseRequest {
                partition: 1,
                ts: ts.as_nanos(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(reply.floor >= ts.as_nanos());
        let heartbeats = records(&c.journals[1]);
        assert!(
            matches!(heartbeats.as_slice(), [pb::Record { kind: Some(pb::record::Kind::Heartbeat(h)) }] if h.ts == ts.as_nanos()),
            "{heartbeats:?}"
        );
        // Already promised: nothing more is appended.
        c.client
            .promise(pb::PromiseRequest {
                partition: 1,
                ts: ts.as_nanos(),
            })
            .await
            .unwrap();
        assert_eq!(records(&c.journals[1]).len(), 1);
    });
}

#[test]
fn bad_requests_get_typed_statuses_and_the_server_stays_up() {
    runtime().block_on(async {
        let mut c = serve().await;
        let start = c.clock.now().latest;
        let kind = |s: tonic::Status| ErrorKind::of(&s);
        let unknown_partition = c.client.commit(commit(9, 1, start, "k")).await.unwrap_err();
        assert_eq!(kind(unknown_partition), Some(ErrorKind::InvalidArgument));
        let no_txn = pb::CommitRequest {
            txn_id: None,
            ..commit(0, 1, start, "k")
        };
        assert_eq!(
            kind(c.client.commit(no_txn).await.unwrap_err()),
            Some(ErrorKind::InvalidArgument)
        );
        let empty = pb::CommitRequest {
            mutations: vec![],
            ..commit(0, 1, start, "k")
        };
        assert_eq!(
            kind(c.client.commit(empty).await.unwrap_err()),
            Some(ErrorKind::InvalidArgument)
        );
        let malformed = pb::CommitRequest {
            mutations: vec![pb::Mutation {
                key: Bytes::from_static(b"k"),
                op: None,
            }],
            ..commit(0, 1, start, "k")
        };
        assert_eq!(
            kind(c.client.commit(malformed).await.unwrap_err()),
            Some(ErrorKind::InvalidArgument)
        );
        let huge = commit(0, 1, start, &"k".repeat(5000));
        assert_eq!(
            kind(c.client.commit(huge).await.unwrap_err()),
            Some(ErrorKind::LimitExceeded)
        );
        let mismatched = pb::CommitPreparedRequest {
            partition: 0,
            txn_id: Some(TxnId::new(3).into()),
            start_ts: start.as_nanos(),
            votes: vec![1],
            mutations: vec![put("a")],
            participants: vec![0, 1],
            topology_version: 0,
        };
        assert_eq!(
            kind(c.client.commit_prepared(mismatched).await.unwrap_err()),
            Some(ErrorKind::InvalidArgument)
        );
        // Still deciding.
        let ok = c
            .client
            .commit(commit(1, 5, start, "fine"))
            .await
            .unwrap()
            .into_inner();
        assert!(matches!(
            ok.outcome,
            Some(commit_reply::Outcome::CommittedTs(_))
        ));
    });
}

/// A retry is answered whatever topology version routed it: its original may have been
/// applied here under the map the client has since replaced, and refusing the retry as
/// stale would leave the client without the outcome (a first attempt is still refused).
#[test]
fn a_retry_routed_by_a_stale_topology_still_learns_its_outcome() {
    runtime().block_on(async {
        let mut c = serve_at_version(3).await;
        let start = c.clock.now().latest;
        let original = pb::CommitRequest {
            topology_version: 3,
            ..commit(0, 1, start, "k")
        };
        let first = c
            .client
            .commit(original.clone())
            .await
            .unwrap()
            .into_inner();
        let Some(commit_reply::Outcome::CommittedTs(committed)) = first.outcome else {
            panic!("{first:?}");
        };
        let stale = pb::CommitRequest {
            topology_version: 2,
            ..original
        };
        let refused = c.client.commit(stale.clone()).await.unwrap_err();
        assert_eq!(
            ErrorKind::of(&refused),
            Some(ErrorKind::Unavailable),
            "{refused:?}"
        );
        let retry = pb::CommitRequest {
            retry: true,
            ..stale
        };
        let again = c.client.commit(retry).await.unwrap().into_inner();
        assert_eq!(
            again.outcome,
            Some(commit_reply::Outcome::CommittedTs(committed)),
            "{again:?}"
        );
    });
}

/// A replica that serves no partition now: another node leads them.
struct LedElsewhere;

impl journaldb_adjudicator::service::Partitions for LedElsewhere {
    type Log = Journal;

    fn serving(&self, id: PartitionId) -> Result<Arc<Partition<Journal>>, tonic::Status> {
        let mut status = ErrorKind::Unavailable.status(format!("{id} is led by another node"));
        status.metadata_mut().insert(
            journaldb_proto::status::LEADER,
            "http://leader:7001".parse().unwrap(),
        );
        Err(status)
    }

    fn ids(&self) -> Vec<PartitionId> {
        Vec::new()
    }
}

/// A first attempt refused by a replica that does not lead was not applied (`Unavailable`:
/// the client may run the transaction again). A retry refused so says nothing of the first
/// attempt, which the leader may have applied: it must be `CommitUnknown`, or the client
/// runs the transaction again and it is applied twice.
#[test]
fn a_retry_refused_by_a_replica_that_does_not_lead_is_commit_unknown() {
    use journaldb_proto::pb::adjudicator_service_server::AdjudicatorService as _;
    runtime().block_on(async {
        let clock = Arc::new(EmbeddedClock::new(Timestamp::ZERO));
        let server = AdjudicatorServer::routed(LedElsewhere, 2, clock.clone(), Limits::default());
        let first = commit(0, 1, clock.now().latest, "k");
        let refused = server
            .commit(tonic::Request::new(first.clone()))
            .await
            .unwrap_err();
        assert_eq!(ErrorKind::of(&refused), Some(ErrorKind::Unavailable));
        let retry = pb::CommitRequest {
            retry: true,
            ..first
        };
        let unknown = server.commit(tonic::Request::new(retry)).await.unwrap_err();
        assert_eq!(
            ErrorKind::of(&unknown),
            Some(ErrorKind::CommitUnknown),
            "{unknown:?}"
        );
        assert_eq!(
            unknown
                .metadata()
                .get(journaldb_proto::status::LEADER)
                .unwrap(),
            "http://leader:7001",
            "the refusal still names the leader"
        );
    });
}
