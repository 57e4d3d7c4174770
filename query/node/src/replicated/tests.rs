//! Three nodes' drivers over a [`LocalNetwork`], in virtual time: the leader takes over a
//! partition with [`lead`] and commits; cut off, its partition commits nothing more; the
//! next leader replays the log, answers a retry with the first commit's τ, knows nothing of
//! the stranded transaction, and commits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use journaldb_adjudicator::{AdjudicatorConfig, CommitRequest, Partition, Refusal, TxnStatus};
use journaldb_journal::Flusher;
use journaldb_journal::disk::{CrashDisk, CrashDiskConfig};
use journaldb_proto::{Clock, ManualClock, Mutation, PartitionId, Timestamp, TxnId};
use journaldb_raft::raft::StateRole;
use journaldb_raft::raft::prelude::ConfState;
use journaldb_raft::{
    Driver, DriverConfig, GroupId, LocalNetwork, LogId, LogOptions, NodeId, RaftLog,
    ReplicatedJournal, ReplicationError,
};

use journaldb_storage::{MemoryEngine, StorageNode, follow};

use super::{LeadError, Leadership, Owns, ReplicaSource, Serving, TermLog, lead};

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

/// Node `node` takes the partition over as leader of `term` (every key the partition's).
async fn take_over(
    cluster: &Cluster,
    node: NodeId,
    term: u64,
    clock: &ManualClock,
) -> Result<Partition<TermLog>, LeadError> {
    let owns = |_: &[u8]| true;
    let config = AdjudicatorConfig::default();
    lead(
        cluster.journal(node),
        term,
        node,
        PARTITION,
        config,
        owns,
        clock,
    )
    .await
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
        let part = take_over(&cluster, old, term, &clock).await.unwrap();
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
        let part = take_over(&cluster, new, new_term, &clock).await.unwrap();
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
        let refused = take_over(&cluster, follower, term, &clock).await;
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
        let stale = take_over(&cluster, leader, term + 1, &clock).await;
        assert!(
            stale.as_ref().is_err_and(LeadError::is_retryable),
            "{stale:?}"
        );
    });
}

/// Waits until exactly one of `among` serves the partition, and returns it.
async fn serving_leader(
    leaderships: &BTreeMap<NodeId, Leadership>,
    among: &[NodeId],
) -> (NodeId, Arc<Partition<TermLog>>) {
    for _ in 0..2000 {
        let serving: Vec<_> = among
            .iter()
            .filter_map(|n| match leaderships[n].serving() {
                Serving::Leader(p) => Some((*n, p)),
                _ => None,
            })
            .collect();
        if let [(node, partition)] = &serving[..] {
            return (*node, partition.clone());
        }
        assert!(serving.len() <= 1, "two nodes serve the partition");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("nobody serves the partition");
}

#[test]
fn leadership_moves_the_partition_with_the_raft_leader() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(1_000_000_000)));
        let owns: Owns = Arc::new(|_: &[u8]| true);
        let leaderships: BTreeMap<NodeId, Leadership> = (1..=3)
            .map(|node| {
                let leadership = Leadership::spawn(
                    cluster.journal(node).clone(),
                    node,
                    PARTITION,
                    AdjudicatorConfig::default(),
                    owns.clone(),
                    clock.clone(),
                );
                (node, leadership)
            })
            .collect();
        let (old, part) = serving_leader(&leaderships, &[1, 2, 3]).await;
        clock.advance(Duration::from_millis(1));
        let first = part.commit(clock.now(), &request(1, &clock, false)).await.unwrap();
        for node in (1..=3).filter(|n| *n != old) {
            assert!(
                matches!(leaderships[&node].serving(), Serving::Elsewhere { leader: Some(l) } if l == old),
                "followers point at the leader"
            );
        }
        cluster.network.isolate(old, true);
        let others: Vec<NodeId> = (1..=3).filter(|n| *n != old).collect();
        let (new, part) = serving_leader(&leaderships, &others).await;
        assert_ne!(new, old);
        // The cut-off node stops serving once its term ends (check-quorum).
        for _ in 0..200 {
            if !matches!(leaderships[&old].serving(), Serving::Leader(_)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!matches!(leaderships[&old].serving(), Serving::Leader(_)));
        clock.advance(Duration::from_millis(1));
        let retried = part.commit(clock.now(), &request(1, &clock, true)).await;
        assert_eq!(retried, Ok(first));
        cluster.network.isolate(old, false);
        clock.advance(Duration::from_millis(1));
        part.commit(clock.now(), &request(2, &clock, false)).await.unwrap();
    });
}

/// Every node's storage, fed from its own replica, applies what the leader committed —
/// including a node that was cut off while it happened.
#[test]
fn storage_on_every_replica_applies_what_was_committed() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let clock = ManualClock::new(Timestamp::from_nanos(1_000_000_000));
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        let lagging = (1..=3).find(|n| *n != leader).unwrap();
        let part = take_over(&cluster, leader, term, &clock).await.unwrap();
        let mut storages = Vec::new();
        for node in 1..=3 {
            let storage = Arc::new(StorageNode::open(MemoryEngine::new(), &[PARTITION]).unwrap());
            let source = ReplicaSource::new(cluster.journal(node).clone());
            let fed = storage.clone();
            tokio::spawn(async move { follow::feed(&fed, PARTITION, source).await });
            storages.push(storage);
        }
        cluster.network.isolate(lagging, true);
        let mut committed = Vec::new();
        for txn in 1..=5 {
            clock.advance(Duration::from_millis(1));
            let at = part
                .commit(clock.now(), &request(txn, &clock, false))
                .await
                .unwrap();
            committed.push((txn, at));
        }
        cluster.network.isolate(lagging, false);
        // A heartbeat past the last commit lets the storage watermarks pass it.
        clock.advance(Duration::from_millis(1));
        let promised = clock.now().latest;
        part.promise_durable(promised).await.unwrap();
        for storage in &storages {
            for (txn, at) in &committed {
                let deadline = tokio::time::sleep(Duration::from_secs(30));
                let got = storage
                    .get(format!("key {txn}").as_bytes(), *at, deadline)
                    .await
                    .unwrap();
                assert_eq!(got.as_deref(), Some(&b"value"[..]), "txn {txn} at {at:?}");
            }
        }
    });
}

/// A promise that needs no record of its own stands on the records queued before it: it
/// is answered only once they are committed. Here the record never commits (its leader is
/// cut off), so neither does the promise (§5 rule 1: promises too).
#[test]
fn a_promise_waits_for_the_records_its_floor_stands_on() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let clock = ManualClock::new(Timestamp::from_nanos(1_000_000_000));
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        let part = take_over(&cluster, leader, term, &clock).await.unwrap();
        let below = clock.now().latest;
        clock.advance(Duration::from_millis(1));
        cluster.network.isolate(leader, true);
        let stranded = request(1, &clock, false);
        let (committed, promised) = tokio::join!(part.commit(clock.now(), &stranded), async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            part.promise_durable(below).await
        });
        assert_eq!(committed, Err(Refusal::AppendFailed));
        assert_eq!(
            promised,
            Err(Refusal::AppendFailed),
            "no promise on a lost record"
        );
    });
}

/// A voter's `Tail` hands out the committed records, in order, and keeps an idle stream
/// open while it has a leader; cut off from its group, it ends the stream, so that a
/// storage node tailing it moves to another voter (ARCHITECTURE §5 rule 7).
#[test]
fn a_voters_tail_serves_what_is_committed_and_ends_once_the_voter_is_cut_off() {
    use journaldb_journal::service::ReplicaRecords;
    use journaldb_proto::Lsn;
    use journaldb_proto::status::ErrorKind;

    use super::records::{LEADERLESS_CHECK, Records};

    runtime().block_on(async {
        let cluster = Cluster::start();
        let clock = ManualClock::new(Timestamp::from_nanos(1_000_000_000));
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        let voter = (1..=3).find(|n| *n != leader).unwrap();
        let part = take_over(&cluster, leader, term, &clock).await.unwrap();
        for txn in 1..=3 {
            clock.advance(Duration::from_millis(1));
            part.commit(clock.now(), &request(txn, &clock, false))
                .await
                .unwrap();
        }
        let (_closing, closed) = tokio::sync::watch::channel(false);
        let journal = cluster.journal(voter).clone();
        let journals = [(PARTITION, journal.clone())];
        let records = Records::new(voter, journals, closed, LEADERLESS_CHECK);
        let mut tail = records.tail(PARTITION, Lsn::FIRST).unwrap();
        // The EpochStart and the three commits, once the voter has applied them.
        let mut got = Vec::new();
        while got.len() < 4 {
            let reply = tail.recv().await.unwrap().unwrap();
            assert_eq!(reply.first_lsn, 1 + got.len() as u64, "in order, each once");
            got.extend(reply.records);
        }
        assert!(Lsn::new(got.len() as u64) < journal.status().readable);
        let page = records.read(PARTITION, Lsn::FIRST, 100, 1 << 20).unwrap();
        assert_eq!(page.records, got);

        // Idle with a leader: the stream stays.
        let idle = tokio::time::timeout(10 * LEADERLESS_CHECK, tail.recv()).await;
        assert!(idle.is_err(), "an idle stream ended: {idle:?}");

        // Cut off: the voter loses its leader, and the stream ends.
        cluster.network.isolate(voter, true);
        let ended = tokio::time::timeout(Duration::from_secs(60), tail.recv())
            .await
            .expect("the stream of a cut-off voter ends");
        let status = ended.unwrap().unwrap_err();
        assert_eq!(
            ErrorKind::of(&status),
            Some(ErrorKind::Unavailable),
            "{status:?}"
        );
        assert!(tail.recv().await.is_none(), "nothing after the end");
    });
}
