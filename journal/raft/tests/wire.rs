//! Three drivers in one process, each behind its own gRPC server on 127.0.0.1, talking
//! through `JournalService.Raft` ([`GrpcTransport`] → [`GrpcInbox`]): a leader is elected
//! and what it commits is read on every node — the wire carries raft-rs's messages intact.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use journaldb_journal::Flusher;
use journaldb_journal::disk::{CrashDisk, CrashDiskConfig};
use journaldb_journal::service::JournalServer;
use journaldb_proto::Lsn;
use journaldb_proto::pb::journal_service_client::JournalServiceClient;
use journaldb_proto::pb::journal_service_server::JournalServiceServer;
use journaldb_raft::raft::StateRole;
use journaldb_raft::raft::prelude::ConfState;
use journaldb_raft::{
    Driver, DriverConfig, GroupId, GrpcInbox, GrpcTransport, LogId, LogOptions, NodeId, RaftLog,
};
use tonic::transport::Channel;

const CLUSTER: u64 = 0x5eed;
const GROUP: GroupId = GroupId(1);

#[test]
fn three_drivers_over_grpc_elect_commit_and_replicate() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut listeners = BTreeMap::new();
        for node in 1..=3u64 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(node, listener);
        }
        let addrs: BTreeMap<NodeId, SocketAddr> = listeners
            .iter()
            .map(|(n, l)| (*n, l.local_addr().unwrap()))
            .collect();
        let addrs = Arc::new(addrs);
        let mut drivers = BTreeMap::new();
        for (node, listener) in listeners {
            let disk = CrashDisk::new(CrashDiskConfig::default());
            let id = LogId {
                cluster: CLUSTER,
                group: GROUP.0,
                replica: node,
            };
            let conf = ConfState::from((vec![1, 2, 3], vec![]));
            let writer =
                RaftLog::create(Arc::new(disk), "/raft/1", id, LogOptions::default(), conf)
                    .unwrap();
            let peers = addrs.clone();
            let connect = Arc::new(move |to: NodeId| {
                let addr = peers.get(&to)?;
                let channel = Channel::from_shared(format!("http://{addr}"))
                    .ok()?
                    .connect_lazy();
                Some(JournalServiceClient::new(channel))
            });
            let transport = Arc::new(GrpcTransport::new(CLUSTER, node, connect));
            let mut config = DriverConfig::new(node, 3);
            config.tick = Duration::from_millis(10);
            config.flusher = Flusher::Task;
            let driver = Driver::start(config, vec![writer], transport).unwrap();
            let inbox = GrpcInbox::new(CLUSTER, node, [GROUP], driver.inbox());
            let service = JournalServer::new([]).with_raft(Arc::new(inbox));
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(JournalServiceServer::new(service))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            drivers.insert(node, driver);
        }
        let journal = |node: NodeId| drivers[&node].journal(GROUP).unwrap().clone();
        let (leader, term) = 'elect: {
            for _ in 0..500 {
                for node in 1..=3 {
                    let status = journal(node).status();
                    if status.role == StateRole::Leader {
                        break 'elect (node, status.term);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("no leader over gRPC");
        };
        for i in 0..20u64 {
            let pending = journal(leader)
                .submit(term, Bytes::from(format!("record {i}")))
                .unwrap();
            assert_eq!(pending.committed().await, Ok(Lsn::new(i + 1)));
        }
        for node in 1..=3 {
            let journal = journal(node);
            journal.wait_readable(Lsn::new(20)).await.unwrap();
            let records = journal.read(Lsn::FIRST, 1 << 20).unwrap();
            let want: Vec<(Lsn, Bytes)> = (0..20u64)
                .map(|i| (Lsn::new(i + 1), Bytes::from(format!("record {i}"))))
                .collect();
            assert_eq!(records, want, "node {node}");
        }
        for (_, driver) in drivers {
            driver.stop().await;
        }
    });
}

/// What a peer's server took in: the `commit` field of each heartbeat, in arrival order,
/// and how many requests it refused alone. A heartbeat with commit [`REFUSED`] is refused
/// as a stranger's, which ends the stream it came on.
#[derive(Debug, Default)]
struct Recorder(parking_lot::Mutex<Vec<u64>>, std::sync::atomic::AtomicUsize);

const REFUSED: u64 = 0xdead;
/// A heartbeat with this commit is refused alone; the stream goes on.
const SKIPPED: u64 = 0xbeef;

impl journaldb_journal::service::RaftInbox for Recorder {
    fn deliver(
        &self,
        request: journaldb_proto::pb::RaftRequest,
    ) -> Result<(), journaldb_journal::service::RaftRefusal> {
        use journaldb_journal::service::RaftRefusal;
        use protobuf::Message as _;
        let mut got = Vec::new();
        for envelope in &request.envelopes {
            let message = Message::parse_from_bytes(&envelope.message)
                .map_err(|e| RaftRefusal::Request(e.to_string()))?;
            if message.commit == REFUSED {
                return Err(RaftRefusal::Stranger("a stranger".into()));
            }
            if message.commit == SKIPPED {
                self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Err(RaftRefusal::Request("this one only".into()));
            }
            got.push(message.commit);
        }
        self.0.lock().extend(got);
        Ok(())
    }
}

use journaldb_raft::raft::prelude::{Message, MessageType};
use journaldb_raft::{Envelope, Transport};

fn heartbeat(commit: u64) -> Envelope {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgHeartbeat);
    message.from = 1;
    message.to = 2;
    message.term = 1;
    message.commit = commit;
    Envelope {
        group: GROUP,
        message,
    }
}

/// Serves a [`Recorder`] on `listener`.
async fn serve(listener: tokio::net::TcpListener, recorder: Arc<Recorder>) {
    let service = JournalServer::new([]).with_raft(recorder);
    tonic::transport::Server::builder()
        .add_service(JournalServiceServer::new(service))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
        .unwrap();
}

/// Waits until the recorder holds `n` messages, and returns them.
async fn received(recorder: &Recorder, n: usize) -> Vec<u64> {
    for _ in 0..500 {
        if recorder.0.lock().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    recorder.0.lock().clone()
}

/// The transport keeps a peer's messages in the order sent (a follower refuses an append
/// that overtakes the one before it), and a stream that ends — refused by the peer, or
/// its connection lost when the peer restarts — is replaced at the next send, so nothing
/// after it is lost.
#[test]
fn the_transport_keeps_order_and_replaces_a_stream_that_ends() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The first server runs on a runtime of its own, so that it can die whole: with its
    // connections, as a killed process's would.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = Arc::new(Recorder::default());
    server.spawn({
        let recorder = recorder.clone();
        async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve(listener, recorder).await;
        }
    });
    rt.block_on(async {
        let connect = Arc::new(move |_: NodeId| {
            let channel = Channel::from_shared(format!("http://{addr}"))
                .ok()?
                .connect_lazy();
            Some(JournalServiceClient::new(channel))
        });
        let transport = GrpcTransport::new(CLUSTER, 1, connect);

        // 1. Many small batches, sent without a pause, arrive all and in order.
        for i in 0..500 {
            transport.send(2, vec![heartbeat(i)]);
        }
        let want: Vec<u64> = (0..500).collect();
        assert_eq!(received(&recorder, 500).await, want);

        // 2. A request refused for itself leaves the stream, and what it holds, alone.
        //    (Batches queued together travel as one request, which would be refused
        //    whole: the next batches are sent once the refused one has been taken.)
        transport.send(2, vec![heartbeat(SKIPPED)]);
        for _ in 0..500 {
            if recorder.1.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(recorder.1.load(std::sync::atomic::Ordering::SeqCst), 1);
        for i in 500..520 {
            transport.send(2, vec![heartbeat(i)]);
        }
        let want: Vec<u64> = (0..520).collect();
        assert_eq!(received(&recorder, 520).await, want);

        // 3. A stranger's request ends its stream; what is sent after it still arrives.
        transport.send(2, vec![heartbeat(REFUSED)]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 520..530 {
            transport.send(2, vec![heartbeat(i)]);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = received(&recorder, 525).await;
        assert!(
            got.ends_with(&[525, 526, 527, 528, 529]),
            "nothing arrived after the refusal: {:?}",
            &got[520..]
        );

        // 4. The peer restarts on the same address: the old connection is gone, and the
        //    transport reaches the new server.
        server.shutdown_background();
        // Its listener closes as its tasks are dropped, in the background.
        let mut listener = None;
        for _ in 0..200 {
            if let Ok(bound) = tokio::net::TcpListener::bind(addr).await {
                listener = Some(bound);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let listener = listener.expect("the old server's address is free again");
        let restarted = Arc::new(Recorder::default());
        tokio::spawn(serve(listener, restarted.clone()));
        let mut got = Vec::new();
        for i in 1000..1100 {
            transport.send(2, vec![heartbeat(i)]);
            tokio::time::sleep(Duration::from_millis(20)).await;
            got = restarted.0.lock().clone();
            if got.len() >= 5 {
                break;
            }
        }
        assert!(got.len() >= 5, "the restarted peer got {got:?}");
        assert!(got.is_sorted(), "out of order after the restart: {got:?}");
    });
}
