//! The journal gRPC service over TCP on 127.0.0.1: `Read` pages durable records within
//! its limits, `Tail` streams every durable record once and in order (including ones
//! appended after it started, across a batch boundary), and bad requests get typed
//! statuses.

use std::sync::Arc;

use bytes::Bytes;
use journaldb_journal::service::JournalServer;
use journaldb_journal::{Journal, JournalOptions, Lsn};
use journaldb_proto::PartitionId;
use journaldb_proto::pb;
use journaldb_proto::pb::journal_service_client::JournalServiceClient;
use journaldb_proto::pb::journal_service_server::JournalServiceServer;
use journaldb_proto::status::ErrorKind;
use tonic::transport::Channel;

async fn serve(journal: Arc<Journal>) -> JournalServiceClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = JournalServer::new([(PartitionId::new(0), journal)]);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(JournalServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    JournalServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn record(i: u64) -> Bytes {
    Bytes::from(format!("record {i}"))
}

#[test]
fn read_pages_and_tail_streams_every_durable_record_once() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let journal = Arc::new(Journal::open(dir.path(), JournalOptions::default()).unwrap());
        for i in 1..=10 {
            journal.append(record(i)).await.unwrap();
        }
        let mut client = serve(journal.clone()).await;
        let page = client
            .read(pb::ReadRequest {
                partition: 0,
                from_lsn: 4,
                max_records: 3,
                max_bytes: 0,
                cluster: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.first_lsn, 4);
        assert_eq!(page.records, vec![record(4), record(5), record(6)]);
        assert_eq!(page.durable_end, 11);
        let one = client
            .read(pb::ReadRequest {
                partition: 0,
                from_lsn: 1,
                max_records: 0,
                max_bytes: 1,
                cluster: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            one.records.len(),
            1,
            "a byte limit still returns one record"
        );

        let mut stream = client
            .tail(pb::TailRequest {
                partition: 0,
                from_lsn: 8,
                cluster: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let writer = {
            let journal = journal.clone();
            tokio::spawn(async move {
                for i in 11..=30 {
                    journal.append(record(i)).await.unwrap();
                }
            })
        };
        let mut next = 8;
        while next <= 30 {
            let reply = stream.message().await.unwrap().expect("the stream goes on");
            assert_eq!(
                reply.first_lsn, next,
                "in order, nothing skipped or repeated"
            );
            for r in reply.records {
                assert_eq!(r, record(next));
                next += 1;
            }
        }
        writer.await.unwrap();
        journal.close().unwrap();
        assert!(
            stream.message().await.unwrap().is_none(),
            "ends when the journal closes"
        );
    });
}

#[test]
fn bad_requests_get_typed_statuses() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let options = JournalOptions {
            segment_bytes: 16 * 1024,
            preallocate_bytes: 4096,
            ..JournalOptions::default()
        };
        let journal = Arc::new(Journal::open(dir.path(), options).unwrap());
        for i in 1..=200 {
            journal
                .append(Bytes::from(vec![i as u8; 500]))
                .await
                .unwrap();
        }
        journal.truncate_prefix(Lsn::new(150)).unwrap();
        let mut client = serve(journal.clone()).await;
        let read = |partition, from_lsn| pb::ReadRequest {
            partition,
            from_lsn,
            max_records: 1,
            max_bytes: 0,
            cluster: 0,
        };
        // A reader of another cluster is refused, by `Read` and by `Tail`, before anything
        // is read.
        let stranger = client
            .read(pb::ReadRequest {
                cluster: 0x5,
                ..read(0, 150)
            })
            .await
            .unwrap_err();
        assert_eq!(ErrorKind::of(&stranger), Some(ErrorKind::InvalidArgument));
        let stranger = client
            .tail(pb::TailRequest {
                partition: 0,
                from_lsn: 150,
                cluster: 0x5,
            })
            .await
            .unwrap_err();
        assert_eq!(ErrorKind::of(&stranger), Some(ErrorKind::InvalidArgument));
        assert_eq!(
            client
                .read(read(0, 150))
                .await
                .unwrap()
                .into_inner()
                .records
                .len(),
            1
        );
        let unknown = client.read(read(3, 1)).await.unwrap_err();
        assert_eq!(ErrorKind::of(&unknown), Some(ErrorKind::InvalidArgument));
        let truncated = client.read(read(0, 1)).await.unwrap_err();
        assert_eq!(ErrorKind::of(&truncated), Some(ErrorKind::InvalidArgument));
        assert!(
            truncated.message().contains("truncated"),
            "{}",
            truncated.message()
        );
        let append = client
            .append(pb::AppendRequest {
                partition: 0,
                epoch: None,
                expected_lsn: 201,
                records: vec![Bytes::from_static(b"x")],
            })
            .await
            .unwrap_err();
        assert_eq!(
            ErrorKind::of(&append),
            Some(ErrorKind::InvalidArgument),
            "a journal with a writer on its node refuses Append: {append}"
        );
        let first = journal.first_lsn().get();
        let ok = client.read(read(0, first)).await.unwrap().into_inner();
        assert_eq!(ok.first_lsn, first, "still serving");
    });
}

#[test]
fn append_writes_at_the_expected_position_for_a_remote_writer() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let journal = Arc::new(Journal::open(dir.path(), JournalOptions::default()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service =
            JournalServer::new([]).with_remote_writer(PartitionId::new(5), journal.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(JournalServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut client = JournalServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let append = |expected_lsn: u64, records: Vec<Bytes>| pb::AppendRequest {
            partition: 5,
            epoch: None,
            expected_lsn,
            records,
        };
        let reply = client
            .append(append(1, vec![record(1), record(2)]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((reply.first_lsn, reply.durable_end), (1, 3));
        // A retry of the same append (its reply was lost) is detected, not doubled.
        let retry = client
            .append(append(1, vec![record(1), record(2)]))
            .await
            .unwrap_err();
        assert_eq!(ErrorKind::of(&retry), Some(ErrorKind::InvalidArgument));
        assert!(retry.message().contains("the journal is at"), "{retry}");
        let reply = client
            .append(append(3, vec![record(3)]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.durable_end, 4);
        let too_big = client
            .append(append(4, vec![Bytes::from(vec![0u8; 17 << 20])]))
            .await
            .unwrap_err();
        assert!(too_big.code() != tonic::Code::Ok, "{too_big}");
        let read: Vec<Bytes> = journal
            .read_from(Lsn::FIRST)
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect();
        assert_eq!(read, vec![record(1), record(2), record(3)]);
    });
}
