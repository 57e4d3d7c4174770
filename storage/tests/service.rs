//! The storage gRPC service over TCP on 127.0.0.1: answers match the node's, scans page
//! with continuations and push down keys-only and count-only, and every bad or impossible
//! request gets a typed status while the server stays up.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use journaldb_proto::pb::storage_service_client::StorageServiceClient;
use journaldb_proto::pb::storage_service_server::StorageServiceServer;
use journaldb_proto::status::ErrorKind;
use journaldb_proto::{Lsn, Mutation, PartitionId, Timestamp, TxnId, pb};
use journaldb_storage::service::{StorageServer, StorageServerConfig};
use journaldb_storage::{MemoryEngine, StorageNode};
use tonic::transport::Channel;

const P: PartitionId = PartitionId::new(0);

fn commit(t: u64, key: &str, value: &str) -> pb::Record {
    pb::Record::commit(
        TxnId::new(u128::from(t)),
        Timestamp::from_nanos(t),
        [Mutation::put(key.to_owned(), value.to_owned())],
        &[],
    )
}

/// A node holding user/0..user/9 at τ 10..19 (user/3 rewritten at 30), watermark 40,
/// served on a free port; returns a client.
async fn serve() -> (
    Arc<StorageNode<MemoryEngine>>,
    StorageServiceClient<Channel>,
) {
    let node = Arc::new(StorageNode::open(MemoryEngine::new(), &[P]).unwrap());
    let mut lsn = Lsn::FIRST;
    let mut push = |record: pb::Record| {
        node.ingest(P, lsn, &record).unwrap();
        lsn = lsn.next();
    };
    for i in 0..10u64 {
        push(commit(10 + i, &format!("user/{i}"), &format!("v{i}")));
    }
    push(commit(30, "user/3", "rewritten"));
    push(pb::Record::heartbeat(Timestamp::from_nanos(40)));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = StorageServerConfig {
        read_timeout: Duration::from_millis(100),
        ..StorageServerConfig::default()
    };
    let service = StorageServiceServer::new(StorageServer::new(node.clone(), config));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = StorageServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (node, client)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn everything() -> Option<pb::KeyRange> {
    Some(pb::KeyRange {
        start: Bytes::from_static(b"user/"),
        end: Some(Bytes::from_static(b"user0")),
    })
}

#[test]
fn reads_over_grpc_answer_as_of_their_timestamp() {
    runtime().block_on(async {
        let (_node, mut client) = serve().await;
        let get = |key: &str, at: u64| pb::GetRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            at,
        };
        let value = |r: pb::GetReply| r.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
        let reply = client.get(get("user/3", 25)).await.unwrap().into_inner();
        assert_eq!(value(reply).as_deref(), Some("v3"));
        let reply = client.get(get("user/3", 35)).await.unwrap().into_inner();
        assert_eq!(value(reply).as_deref(), Some("rewritten"));
        let reply = client.get(get("user/9", 15)).await.unwrap().into_inner();
        assert_eq!(value(reply), None, "written at 19");
        let marks = client
            .watermark(pb::WatermarkRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(marks.watermark, 40);
    });
}

#[test]
fn scans_page_with_continuations_and_push_down_projections() {
    runtime().block_on(async {
        let (_node, mut client) = serve().await;
        let scan = |range: Option<pb::KeyRange>, reverse: bool| pb::ScanRequest {
            range,
            at: 40,
            limit: 4,
            reverse,
            keys_only: false,
            count_only: false,
        };
        for reverse in [false, true] {
            let mut keys = Vec::new();
            let mut range = everything();
            while range.is_some() {
                let page = client
                    .scan(scan(range, reverse))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(page.count, page.rows.len() as u64);
                keys.extend(page.rows.into_iter().map(|kv| kv.key));
                range = page.resume;
            }
            let mut expected: Vec<Bytes> =
                (0..10).map(|i| Bytes::from(format!("user/{i}"))).collect();
            if reverse {
                expected.reverse();
            }
            assert_eq!(keys, expected, "reverse {reverse}");
        }
        let keys_only = client
            .scan(pb::ScanRequest {
                keys_only: true,
                ..scan(everything(), false)
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(keys_only.rows.len(), 4);
        assert!(keys_only.rows.iter().all(|kv| kv.value.is_empty()));
        let counted = client
            .scan(pb::ScanRequest {
                count_only: true,
                limit: 100,
                ..scan(everything(), false)
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((counted.count, counted.rows.len()), (10, 0));
        assert!(counted.resume.is_none());
    });
}

#[test]
fn bad_and_impossible_requests_get_typed_statuses_and_the_server_stays_up() {
    runtime().block_on(async {
        let (node, mut client) = serve().await;
        let kind = |r: Result<tonic::Response<pb::ScanReply>, tonic::Status>| {
            ErrorKind::of(&r.unwrap_err())
        };
        let scan = pb::ScanRequest {
            range: everything(),
            at: 40,
            limit: 0,
            reverse: false,
            keys_only: false,
            count_only: false,
        };
        assert_eq!(
            kind(client.scan(scan.clone()).await),
            Some(ErrorKind::InvalidArgument)
        );
        let backwards = pb::ScanRequest {
            range: Some(pb::KeyRange {
                start: Bytes::from_static(b"b"),
                end: Some(Bytes::from_static(b"a")),
            }),
            limit: 1,
            ..scan.clone()
        };
        assert_eq!(
            kind(client.scan(backwards).await),
            Some(ErrorKind::InvalidArgument)
        );
        assert_eq!(
            kind(
                client
                    .scan(pb::ScanRequest {
                        range: None,
                        ..scan.clone()
                    })
                    .await
            ),
            Some(ErrorKind::InvalidArgument)
        );
        let huge = client
            .get(pb::GetRequest {
                key: Bytes::from(vec![b'k'; 5000]),
                at: 40,
            })
            .await
            .unwrap_err();
        assert_eq!(ErrorKind::of(&huge), Some(ErrorKind::LimitExceeded));

        // Above the watermark: the read waits for the server's read timeout, then
        // Unavailable (retryable), not a wrong answer.
        let ahead = client
            .get(pb::GetRequest {
                key: Bytes::from_static(b"user/1"),
                at: 1_000,
            })
            .await
            .unwrap_err();
        assert_eq!(ErrorKind::of(&ahead), Some(ErrorKind::Unavailable));

        // Below the garbage-collection horizon: SnapshotTooOld.
        node.checkpoint(Timestamp::from_nanos(35)).unwrap();
        let old = client
            .get(pb::GetRequest {
                key: Bytes::from_static(b"user/3"),
                at: 20,
            })
            .await
            .unwrap_err();
        assert_eq!(ErrorKind::of(&old), Some(ErrorKind::SnapshotTooOld));

        // Still serving.
        let ok = client
            .get(pb::GetRequest {
                key: Bytes::from_static(b"user/3"),
                at: 40,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ok.value.as_deref(), Some(&b"rewritten"[..]));
    });
}

#[test]
fn a_scan_page_stops_at_its_byte_budget_and_resumes_after_it() {
    runtime().block_on(async {
        let (node, mut client) = serve().await;
        // Ten 1 MiB values after the fixture's history, at τ 50..59; watermark 60.
        let big = "x".repeat(1 << 20);
        let mut lsn = node.next_lsn(P).unwrap();
        for i in 0..10u64 {
            node.ingest(P, lsn, &commit(50 + i, &format!("big/{i}"), &big))
                .unwrap();
            lsn = lsn.next();
        }
        node.ingest(P, lsn, &pb::Record::heartbeat(Timestamp::from_nanos(60)))
            .unwrap();
        for reverse in [false, true] {
            let mut range = Some(pb::KeyRange {
                start: Bytes::from_static(b"big/"),
                end: Some(Bytes::from_static(b"big0")),
            });
            let (mut rows, mut pages) = (Vec::new(), 0);
            while range.is_some() {
                let page = client
                    .scan(pb::ScanRequest {
                        range,
                        at: 60,
                        limit: 10,
                        reverse,
                        keys_only: false,
                        count_only: false,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(page.rows.len() <= 4, "a page holds at most 4 MiB");
                rows.extend(page.rows.into_iter().map(|kv| kv.key));
                range = page.resume;
                pages += 1;
            }
            let mut expected: Vec<Bytes> =
                (0..10).map(|i| Bytes::from(format!("big/{i}"))).collect();
            if reverse {
                expected.reverse();
            }
            assert_eq!(rows, expected, "reverse {reverse}");
            assert!(pages >= 3, "{pages} pages");
        }
    });
}

/// Regression (hardening defect 10): a commit is readable at a replica as soon as it is
/// durable, before its commit wait has passed; a reply carrying it before true time passed
/// its τ let a later reader with a slower clock read below it (W →wr R1 →rt R2 →rw W). The
/// replica now answers only once its clock says every version it may return is past.
#[test]
fn a_read_of_versions_in_the_future_of_the_clock_waits_until_they_are_past() {
    use journaldb_proto::ManualClock;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let node = Arc::new(StorageNode::open(MemoryEngine::new(), &[P]).unwrap());
        node.ingest(P, Lsn::FIRST, &commit(1_000, "k", "fresh"))
            .unwrap();
        node.ingest(
            P,
            Lsn::new(2),
            &pb::Record::heartbeat(Timestamp::from_nanos(2_000)),
        )
        .unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(500)));
        let config = StorageServerConfig {
            read_timeout: Duration::from_secs(30),
            ..StorageServerConfig::default()
        };
        let server = StorageServer::new(node, config).with_clock(clock.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(StorageServiceServer::new(server))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut client = StorageServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let read = tokio::spawn(async move {
            client
                .get(pb::GetRequest {
                    key: Bytes::from_static(b"k"),
                    at: 1_500,
                })
                .await
                .map(|r| r.into_inner().value)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !read.is_finished(),
            "answered while τ 1500 is still in the future"
        );
        clock.set(Timestamp::from_nanos(1_501));
        let value = read.await.unwrap().unwrap();
        assert_eq!(value.as_deref(), Some(&b"fresh"[..]));
    });
}
