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
