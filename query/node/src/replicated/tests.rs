//! Three nodes' drivers over a [`LocalNetwork`], in virtual time: the leader takes over a
//! partition with [`lead`] and commits; cut off, its partition commits nothing more; the
//! next leader replays the log, answers a retry with the first commit's τ, knows nothing of
//! the stranded transaction, and commits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use journaldb_adjudicator::{AdjudicatorConfig, CommitRequest, Refusal, TxnStatus};
use journaldb_journal::Flusher;
use journaldb_journal::disk::{CrashDisk, CrashDiskConfig};
use journaldb_proto::{Clock, ManualClock, Mutation, PartitionId, Timestamp, TxnId};
use journaldb_raft::raft::StateRole;
use journaldb_raft::raft::prelude::ConfState;
use journaldb_raft::{
    Driver, DriverConfig, GroupId, LocalNetwork, LogId, LogOptions, NodeId, RaftLog,
    ReplicatedJournal, ReplicationError,
};

use super::{LeadError, lead};

const PARTITION: PartitionId = PartitionId::new(0);
const GROUP: GroupId = GroupId(1);

struct Cluster {
    network: Arc<LocalNetwork>,
    drivers: BTreeMap<NodeId, Driver>,
}

impl Cluster {
    fn start() -> Cluster {
        let network = LocalNetwork::new(Duration::from_millis(1));
        let mut drivers = BTreeMap::new();
        for node in 1..=3 {
            let disk = CrashDisk::new(CrashDiskConfig::default());
            let id = LogId {
                cluster: 1,
                group: GROUP.0,
                replica: node,
            };
            let conf = ConfState::from((vec![1, 2, 3], vec![]));
            let writer = RaftLog::create(
                Arc::new(disk),
                "/journal/0",
                id,
                LogOptions::default(),
                conf,
            )
            .unwrap();
            let mut config = DriverConfig::new(node, 21);
            config.flusher = Flusher::Task;
            config.tick = Duration::from_millis(10);
            let driver = Driver::start(config, vec![writer], network.transport(node)).unwrap();
            network.attach(node, driver.inbox());
            drivers.insert(node, driver);
        }
        Cluster { network, drivers }
    }

    fn journal(&self, node: NodeId) -> &ReplicatedJournal {
        self.drivers[&node].journal(GROUP).unwrap()
    }

    async fn leader(&self, among: &[NodeId]) -> (NodeId, u64) {
        for _ in 0..2000 {
            for &node in among {
                let status = self.journal(node).status();
                if status.role == StateRole::Leader {
                    return (node, status.term);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no leader among {among:?}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn request(txn: u128, clock: &ManualClock, retry: bool) -> CommitRequest {
    CommitRequest {
        txn_id: TxnId::new(txn),
        start_ts: clock.now().latest,
        mutations: vec![Mutation::put(format!("key {txn}"), "value")],
        retry,
    }
}

#[test]
fn a_new_leader_replays_the_log_and_only_it_serves_its_term() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let clock = ManualClock::new(Timestamp::from_nanos(1_000_000_000));
        let (old, term) = cluster.leader(&[1, 2, 3]).await;
        let owns = |_: &[u8]| true;
        let config = AdjudicatorConfig::default();
        let part = lead(
            cluster.journal(old),
            term,
            old,
            PARTITION,
            config.clone(),
            owns,
            &clock,
        )
        .await
        .unwrap();
        let first = request(1, &clock, false);
        clock.advance(Duration::from_millis(1));
        let committed_at = part.commit(clock.now(), &first).await.unwrap();

        cluster.network.isolate(old, true);
        let stranded = request(2, &clock, false);
        clock.advance(Duration::from_millis(1));
        let outcome = part.commit(clock.now(), &stranded).await;
        assert_eq!(
            outcome,
            Err(Refusal::AppendFailed),
            "no acknowledgement without a quorum"
        );
        assert!(part.adjudicator().is_stepped_down());

        let others: Vec<NodeId> = (1..=3).filter(|n| *n != old).collect();
        let (new, new_term) = cluster.leader(&others).await;
        assert!(new_term > term);
        clock.advance(Duration::from_millis(1));
        let part = lead(
            cluster.journal(new),
            new_term,
            new,
            PARTITION,
            config,
            owns,
            &clock,
        )
        .await
        .unwrap();
        clock.advance(Duration::from_millis(1));
        let retried = part.commit(clock.now(), &request(1, &clock, true)).await;
        assert_eq!(
            retried,
            Ok(committed_at),
            "the retry finds the replayed commit"
        );
        let status = part
            .status(clock.now(), TxnId::new(2), clock.now().latest)
            .await;
        assert_eq!(
            status,
            Ok(TxnStatus::Aborted),
            "the stranded commit never happened"
        );
        let third = request(3, &clock, false);
        clock.advance(Duration::from_millis(1));
        let at = part.commit(clock.now(), &third).await.unwrap();
        assert!(at > committed_at);
    });
}

#[test]
fn only_the_leader_of_a_term_can_take_a_partition_over() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let clock = ManualClock::new(Timestamp::from_nanos(1_000_000_000));
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        let follower = (1..=3).find(|n| *n != leader).unwrap();
        let owns = |_: &[u8]| true;
        let refused = lead(
            cluster.journal(follower),
            term,
            follower,
            PARTITION,
            AdjudicatorConfig::default(),
            owns,
            &clock,
        )
        .await;
        assert!(
            matches!(
                refused,
                Err(LeadError::Replication {
                    error: ReplicationError::NotLeader { .. },
                    ..
                })
            ),
            "{refused:?}"
        );
        let stale = lead(
            cluster.journal(leader),
            term + 1,
            leader,
            PARTITION,
            AdjudicatorConfig::default(),
            owns,
            &clock,
        )
        .await;
        assert!(
            stale.as_ref().is_err_and(LeadError::is_retryable),
            "{stale:?}"
        );
    });
}
