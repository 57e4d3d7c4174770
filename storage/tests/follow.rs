//! The journal → storage feed from both sources. Remote: a storage node follows a journal
//! on another "node" over gRPC, applies what the journal holds, keeps up with new records,
//! and resumes exactly where it stopped when the journal's server goes away and comes back
//! on the same address. Local: journals in this process become readable at their τ, the
//! feed ends when its journal closes, and an undecodable record stops it as corruption.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use journaldb_journal::service::JournalServer;
use journaldb_journal::{Journal, JournalOptions};
use journaldb_proto::pb::journal_service_client::JournalServiceClient;
use journaldb_proto::pb::journal_service_server::JournalServiceServer;
use journaldb_proto::{Mutation, PartitionId, Timestamp, TxnId, pb};
use journaldb_storage::follow::{LocalJournal, RemoteJournal, feed};
use journaldb_storage::{Error, MemoryEngine, StorageNode};
use prost::Message;
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;

const P: PartitionId = PartitionId::new(0);

fn commit(t: u64) -> Bytes {
    let record = pb::Record::commit(
        TxnId::new(u128::from(t)),
        Timestamp::from_nanos(t),
        [Mutation::put(format!("k{t}"), format!("v{t}"))],
        &[],
    );
    Bytes::from(record.encode_to_vec())
}

/// A runtime of two worker threads, with timers and I/O.
fn two_threads() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A journal in `dir` holding the commits at τ 1 to 5.
async fn journal_of_five(dir: &std::path::Path) -> Arc<Journal> {
    let journal = Arc::new(Journal::open(dir, JournalOptions::default()).unwrap());
    for t in 1..=5 {
        journal.append(commit(t)).await.unwrap();
    }
    journal
}

/// An address on 127.0.0.1 nothing listens on (yet).
fn free_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

/// Serves `journal` on `addr` (reusing the address after a previous server there).
fn serve(journal: Arc<Journal>, addr: SocketAddr) -> JoinHandle<()> {
    serve_until(journal, addr, std::future::pending())
}

/// [`serve`] until `stop` completes, then shuts down gracefully (connections close once
/// their streams end), as a node does.
fn serve_until(
    journal: Arc<Journal>,
    addr: SocketAddr,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    serve_service(JournalServer::new([(P, journal)]), addr, stop)
}

/// Serves `service` on `addr` until `stop` completes.
fn serve_service(
    service: JournalServer,
    addr: SocketAddr,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(64).unwrap();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(JournalServiceServer::new(service))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop,
            )
            .await;
    })
}

async fn sees(node: &StorageNode<MemoryEngine>, t: u64) {
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    let got = node
        .get(
            format!("k{t}").as_bytes(),
            Timestamp::from_nanos(t),
            deadline,
        )
        .await
        .unwrap();
    assert_eq!(got, Some(Bytes::from(format!("v{t}"))), "record at {t}");
}

#[test]
fn a_storage_node_follows_a_remote_journal_across_server_restarts_and_shutdowns() {
    let rt = two_threads();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let journal = journal_of_five(dir.path()).await;
        let addr = free_addr();
        let server = serve(journal.clone(), addr);
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let node = Arc::new(StorageNode::open(MemoryEngine::new(), &[P]).unwrap());
        let source = RemoteJournal::new(
            JournalServiceClient::new(channel),
            P,
            Duration::from_millis(20),
        );
        let feed = tokio::spawn({
            let node = node.clone();
            async move { feed(&node, P, source).await }
        });
        sees(&node, 5).await;
        journal.append(commit(6)).await.unwrap();
        sees(&node, 6).await;

        // The journal's server goes away; records keep coming; it comes back.
        server.abort();
        let _ = server.await;
        for t in 7..=9 {
            journal.append(commit(t)).await.unwrap();
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = serve_until(journal.clone(), addr, async move {
            let _ = stopped.await;
        });
        sees(&node, 9).await;
        for t in 1..=9 {
            sees(&node, t).await;
        }
        // The journal's node shuts down cleanly (the stream ends) and restarts: the feed
        // reconnects rather than stopping for good.
        journal.close().unwrap();
        let _ = stop.send(());
        server.await.unwrap();
        drop(journal);
        let journal = Arc::new(Journal::open(dir.path(), JournalOptions::default()).unwrap());
        let server = serve(journal.clone(), addr);
        journal.append(commit(10)).await.unwrap();
        sees(&node, 10).await;
        assert!(!feed.is_finished(), "the feed keeps following");
        feed.abort();
        server.abort();
        journal.close().unwrap();
    });
}

#[test]
fn local_journals_become_readable_at_their_timestamps_until_they_close() {
    let rt = two_threads();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (PartitionId::new(0), PartitionId::new(1));
    let open = |name: &str| {
        Arc::new(Journal::open(dir.path().join(name), JournalOptions::default()).unwrap())
    };
    let (ja, jb) = (open("a"), open("b"));
    let node = Arc::new(StorageNode::open(MemoryEngine::new(), &[a, b]).unwrap());
    let feeds: Vec<_> = [(ja.clone(), a), (jb.clone(), b)]
        .into_iter()
        .map(|(journal, p)| {
            let node = node.clone();
            rt.spawn(async move { feed(&node, p, LocalJournal::new(journal)).await })
        })
        .collect();
    rt.block_on(async {
        ja.append(commit(10)).await.unwrap();
        jb.append(commit(20)).await.unwrap();
        ja.append(commit(30)).await.unwrap();
        sees(&node, 10).await;
        sees(&node, 20).await;
    });
    ja.close().unwrap();
    jb.close().unwrap();
    for feed in feeds {
        rt.block_on(feed).unwrap().unwrap();
    }
}

#[test]
fn an_undecodable_local_record_stops_the_feed_as_corruption() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(dir.path(), JournalOptions::default()).unwrap());
    let node = StorageNode::open(MemoryEngine::new(), &[P]).unwrap();
    rt.block_on(journal.append(Bytes::from_static(&[0xFF, 0xFF, 0xFF])))
        .unwrap();
    let err = rt
        .block_on(feed(&node, P, LocalJournal::new(journal)))
        .unwrap_err();
    assert!(matches!(err, Error::Corruption(_)), "{err}");
}

/// A client of the journal server at `addr`.
fn client(addr: SocketAddr) -> JournalServiceClient<tonic::transport::Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy();
    JournalServiceClient::new(channel)
}

/// A feed names its cluster: a server of another cluster at a voter's address (a cluster
/// re-created on the same ports, holding a history of its own at the same positions)
/// refuses it, and the feed follows its own cluster's voter, never applying the
/// stranger's records.
#[test]
fn a_feed_never_applies_another_clusters_records() {
    let rt = two_threads();
    let (dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    rt.block_on(async {
        let journal = journal_of_five(dir.path()).await;
        let other = Arc::new(Journal::open(other_dir.path(), JournalOptions::default()).unwrap());
        for t in 1..=5 {
            let record = pb::Record::commit(
                TxnId::new(u128::from(t)),
                Timestamp::from_nanos(t),
                [Mutation::put(format!("k{t}"), "another cluster's")],
                &[],
            );
            other
                .append(Bytes::from(record.encode_to_vec()))
                .await
                .unwrap();
        }
        let (stranger, honest) = (free_addr(), free_addr());
        let stranger_server = serve_service(
            JournalServer::new([(P, other.clone())]).with_cluster(7),
            stranger,
            std::future::pending(),
        );
        let server = serve_service(
            JournalServer::new([(P, journal.clone())]).with_cluster(5),
            honest,
            std::future::pending(),
        );
        let node = Arc::new(StorageNode::open(MemoryEngine::new(), &[P]).unwrap());
        let source = RemoteJournal::from_any(
            vec![client(stranger), client(honest)],
            0,
            P,
            Duration::from_millis(20),
        )
        .of_cluster(5);
        let feed = tokio::spawn({
            let node = node.clone();
            async move { feed(&node, P, source).await }
        });
        for t in 1..=5 {
            sees(&node, t).await;
        }
        feed.abort();
        server.abort();
        stranger_server.abort();
        journal.close().unwrap();
        other.close().unwrap();
    });
}

/// A Tail server that answers every stream with one record at the wrong position (one
/// past where it was asked to start), as a broken or hostile node might — or, `Mute`,
/// opens every stream and sends nothing on it, as a voter whose commit index stopped
/// advancing while it still knows a leader does.
enum Liar {
    WrongPosition,
    Mute,
}

#[tonic::async_trait]
impl journaldb_proto::pb::journal_service_server::JournalService for Liar {
    async fn append(
        &self,
        _: tonic::Request<pb::AppendRequest>,
    ) -> Result<tonic::Response<pb::AppendReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("liar"))
    }

    async fn read(
        &self,
        _: tonic::Request<pb::ReadRequest>,
    ) -> Result<tonic::Response<pb::ReadReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("liar"))
    }

    type TailStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::TailReply, tonic::Status>> + Send>,
    >;

    async fn tail(
        &self,
        request: tonic::Request<pb::TailRequest>,
    ) -> Result<tonic::Response<Self::TailStream>, tonic::Status> {
        let from = request.into_inner().from_lsn;
        let stream: Self::TailStream = match self {
            Liar::WrongPosition => Box::pin(tokio_stream::once(Ok(pb::TailReply {
                first_lsn: from + 1,
                records: vec![commit(1_000 + from)],
            }))),
            Liar::Mute => Box::pin(tokio_stream::pending()),
        };
        Ok(tonic::Response::new(stream))
    }

    async fn raft(
        &self,
        _: tonic::Request<pb::RaftRequest>,
    ) -> Result<tonic::Response<pb::RaftReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("liar"))
    }

    async fn raft_stream(
        &self,
        _: tonic::Request<tonic::Streaming<pb::RaftRequest>>,
    ) -> Result<tonic::Response<pb::RaftReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("liar"))
    }
}

/// A feed over several servers of one journal (a replicated journal's voters) starts at
/// the one it is told, leaves one whose reply does not continue where the feed stands —
/// never applying it — and follows the next one.
#[test]
fn a_feed_over_several_servers_leaves_one_whose_records_do_not_continue_its_own() {
    a_feed_leaves(Liar::WrongPosition);
}

/// ... and leaves one whose stream stays open but brings nothing (ARCHITECTURE §5 rule 7:
/// storage moves to another voter when one's commit index stops advancing).
#[test]
fn a_feed_over_several_servers_leaves_one_whose_stream_brings_nothing() {
    a_feed_leaves(Liar::Mute);
}

fn a_feed_leaves(broken: Liar) {
    let rt = two_threads();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let journal = journal_of_five(dir.path()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let liar = listener.local_addr().unwrap();
        let liar_server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(JournalServiceServer::new(broken))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        let honest = free_addr();
        let server = serve(journal.clone(), honest);
        let node = Arc::new(StorageNode::open(MemoryEngine::new(), &[P]).unwrap());
        let servers = vec![client(liar), client(honest)];
        let source = RemoteJournal::from_any(servers, 0, P, Duration::from_millis(20))
            .stall_after(Duration::from_millis(300));
        let feed = tokio::spawn({
            let node = node.clone();
            async move { feed(&node, P, source).await }
        });
        for t in 1..=5 {
            sees(&node, t).await;
        }
        journal.append(commit(6)).await.unwrap();
        sees(&node, 6).await;
        assert_eq!(node.next_lsn(P), Some(journaldb_proto::Lsn::new(7)));
        assert!(!feed.is_finished(), "the feed keeps following");
        feed.abort();
        server.abort();
        liar_server.abort();
        journal.close().unwrap();
    });
}
