//! Three nodes' [`Driver`]s in one runtime, in virtual time, over a channel transport whose
//! links can be cut, each with its log on a crash-testing disk: a leader commits and every
//! replica reads the same records; submissions outside the leader's term are refused; an
//! isolated leader answers `CommitUnknown` while the others elect a new one; a node that
//! crashed catches up from its disk and the new leader.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use journaldb_journal::Flusher;
use journaldb_journal::disk::{CrashDisk, CrashDiskConfig};
use journaldb_proto::{Lsn, PlantedBug};
use journaldb_raft::raft::StateRole;
use journaldb_raft::raft::prelude::ConfState;
use journaldb_raft::{
    Driver, DriverConfig, GroupId, LocalNetwork, LogId, LogOptions, NodeId, RaftLog,
    ReplicatedJournal, ReplicationError,
};

const GROUP: GroupId = GroupId(5);
pub(crate) const SEED: u64 = 7;

pub(crate) struct Cluster {
    pub(crate) network: Arc<LocalNetwork>,
    pub(crate) disks: BTreeMap<NodeId, CrashDisk>,
    pub(crate) drivers: BTreeMap<NodeId, Driver>,
    /// Each node's flush latency (none if absent).
    sync_latency: BTreeMap<NodeId, Duration>,
    /// A bug planted on every node.
    planted: Option<PlantedBug>,
}

pub(crate) fn dir() -> PathBuf {
    PathBuf::from("/journal/5")
}

pub(crate) fn log_id(node: NodeId) -> LogId {
    LogId {
        cluster: 1,
        group: GROUP.0,
        replica: node,
    }
}

pub(crate) fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 64 * 1024,
        block_size: 512,
        preallocate_bytes: 8192,
        cache_bytes: 16 * 1024,
    }
}

impl Cluster {
    pub(crate) fn start() -> Cluster {
        Cluster::start_with(SEED)
    }

    fn start_with(seed: u64) -> Cluster {
        Cluster::start_on(seed, BTreeMap::new(), None)
    }

    fn start_on(
        seed: u64,
        sync_latency: BTreeMap<NodeId, Duration>,
        planted: Option<PlantedBug>,
    ) -> Cluster {
        let mut cluster = Cluster {
            network: LocalNetwork::new(Duration::from_millis(1)),
            disks: BTreeMap::new(),
            drivers: BTreeMap::new(),
            sync_latency,
            planted,
        };
        for node in 1..=3 {
            let disk = CrashDisk::new(CrashDiskConfig::default());
            let conf = ConfState::from((vec![1, 2, 3], vec![]));
            let writer =
                RaftLog::create(Arc::new(disk.clone()), dir(), log_id(node), options(), conf)
                    .unwrap();
            drop(writer);
            cluster.disks.insert(node, disk);
            cluster.run(node, seed);
        }
        cluster
    }

    /// Starts node `node`'s driver on the log its disk holds.
    pub(crate) fn run(&mut self, node: NodeId, seed: u64) {
        let disk = self.disks[&node].clone();
        let writer = RaftLog::open(Arc::new(disk), dir(), log_id(node), options()).unwrap();
        let mut config = DriverConfig::new(node, seed);
        config.flusher = Flusher::Task;
        config.tick = Duration::from_millis(10);
        // Small enough for a test to fill: `room` waits past 32 KiB unacknowledged.
        config.group.max_uncommitted_bytes = 64 * 1024;
        config.group.max_message_bytes = 16 * 1024;
        config.sync_latency = self.sync_latency.get(&node).copied().unwrap_or_default();
        config.planted = self.planted;
        let transport = self.network.transport(node);
        let driver = Driver::start(config, vec![writer], transport).unwrap();
        self.network.attach(node, driver.inbox());
        self.drivers.insert(node, driver);
    }

    /// Power loss on `node`: its driver goes, its disk keeps only what was synced.
    pub(crate) async fn crash(&mut self, node: NodeId) {
        self.network.detach(node);
        let driver = self.drivers.remove(&node).unwrap();
        let crashed = self.disks[&node].crash(node);
        driver.stop().await;
        self.disks.insert(node, crashed);
    }

    pub(crate) fn journal(&self, node: NodeId) -> &ReplicatedJournal {
        self.drivers[&node].journal(GROUP).unwrap()
    }

    /// Waits until one of `among` leads, and returns it with its term.
    pub(crate) async fn leader(&self, among: &[NodeId]) -> (NodeId, u64) {
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

pub(crate) fn record(i: u64) -> Bytes {
    Bytes::from(format!("record {i}"))
}

pub(crate) async fn read_all(journal: &ReplicatedJournal, end: Lsn) -> Vec<(Lsn, Bytes)> {
    journal
        .wait_readable(end.get().checked_sub(1).map_or(Lsn::ZERO, Lsn::new))
        .await
        .unwrap();
    let mut out = Vec::new();
    while out
        .last()
        .is_none_or(|(lsn, _): &(Lsn, Bytes)| lsn.next() < end)
    {
        let from = out
            .last()
            .map_or(Lsn::FIRST, |(lsn, _): &(Lsn, Bytes)| lsn.next());
        let batch = journal.read(from, 1024).unwrap();
        assert!(!batch.is_empty(), "nothing readable at {from}");
        out.extend(batch);
    }
    out
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn a_leader_commits_and_every_replica_reads_the_same_records() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        let journal = cluster.journal(leader);
        let mut lsns = Vec::new();
        for round in 0..10 {
            let pending: Vec<_> = (0..10)
                .map(|i| journal.submit(term, record(round * 10 + i)).unwrap())
                .collect();
            for p in pending {
                lsns.push(p.committed().await.unwrap());
            }
        }
        assert_eq!(
            lsns,
            (1..=100).map(Lsn::new).collect::<Vec<_>>(),
            "dense, in order"
        );
        let expected: Vec<(Lsn, Bytes)> = (0..100).map(|i| (Lsn::new(i + 1), record(i))).collect();
        for node in 1..=3 {
            let got = read_all(cluster.journal(node), Lsn::new(101)).await;
            assert_eq!(got, expected, "node {node} reads what was committed");
        }
    });
}

#[test]
fn submissions_outside_the_leaders_term_are_refused() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        let follower = (1..=3).find(|n| *n != leader).unwrap();
        let refused = cluster.journal(follower).submit(term, record(0));
        assert!(
            matches!(refused, Err(ReplicationError::NotLeader { leader: Some(l), .. }) if l == leader),
            "{refused:?}"
        );
        for wrong in [term - 1, term + 1] {
            let refused = cluster.journal(leader).submit(wrong, record(0));
            assert!(matches!(refused, Err(ReplicationError::NotLeader { .. })), "{refused:?}");
        }
        let ok = cluster.journal(leader).submit(term, record(1)).unwrap();
        assert_eq!(ok.committed().await, Ok(Lsn::FIRST));
    });
}

#[test]
fn an_isolated_leader_answers_commit_unknown_while_the_others_go_on() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let (old, term) = cluster.leader(&[1, 2, 3]).await;
        let first = cluster.journal(old).submit(term, record(0)).unwrap();
        assert_eq!(first.committed().await, Ok(Lsn::FIRST));
        cluster.network.isolate(old, true);
        let stranded = cluster.journal(old).submit(term, record(1)).unwrap();
        let outcome = stranded.committed().await;
        assert!(
            matches!(outcome, Err(ReplicationError::CommitUnknown { .. })),
            "{outcome:?}"
        );
        assert_ne!(
            cluster.journal(old).status().role,
            StateRole::Leader,
            "check-quorum"
        );
        let others: Vec<NodeId> = (1..=3).filter(|n| *n != old).collect();
        let (new, new_term) = cluster.leader(&others).await;
        assert!(new_term > term);
        let next = cluster.journal(new).submit(new_term, record(2)).unwrap();
        // The stranded record never reached a majority: the new leader's records follow
        // the first one.
        assert_eq!(next.committed().await, Ok(Lsn::new(2)));
        cluster.network.isolate(old, false);
        let want = vec![(Lsn::new(1), record(0)), (Lsn::new(2), record(2))];
        assert_eq!(
            read_all(cluster.journal(old), Lsn::new(3)).await,
            want,
            "replaced tail"
        );
    });
}

#[test]
fn a_crashed_node_catches_up_from_its_disk_and_the_leader() {
    runtime().block_on(async {
        let mut cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        let follower = (1..=3).find(|n| *n != leader).unwrap();
        for i in 0..20 {
            let p = cluster.journal(leader).submit(term, record(i)).unwrap();
            p.committed().await.unwrap();
        }
        cluster.crash(follower).await;
        for i in 20..40 {
            let p = cluster.journal(leader).submit(term, record(i)).unwrap();
            p.committed().await.unwrap();
        }
        cluster.run(follower, SEED);
        let expected: Vec<(Lsn, Bytes)> = (0..40).map(|i| (Lsn::new(i + 1), record(i))).collect();
        assert_eq!(
            read_all(cluster.journal(follower), Lsn::new(41)).await,
            expected
        );
    });
}

/// Elects, commits 30 records and loses a leader; returns the delivery trace.
fn traced_run(seed: u64) -> Vec<String> {
    runtime().block_on(async {
        let cluster = Cluster::start_with(seed);
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        for i in 0..30 {
            let p = cluster.journal(leader).submit(term, record(i)).unwrap();
            p.committed().await.unwrap();
        }
        cluster.network.isolate(leader, true);
        let others: Vec<NodeId> = (1..=3).filter(|n| *n != leader).collect();
        cluster.leader(&others).await;
        cluster.network.trace()
    })
}

#[test]
fn the_trace_is_a_function_of_the_seed() {
    let runs: Vec<Vec<String>> = [11, 11, 12].into_iter().map(traced_run).collect();
    assert!(runs[0].len() > 100, "{} deliveries", runs[0].len());
    if let Some(at) =
        (0..runs[0].len().max(runs[1].len())).find(|&i| runs[0].get(i) != runs[1].get(i))
    {
        panic!(
            "same seed, different traces from delivery {at}: {:?} vs {:?}",
            runs[0].get(at),
            runs[1].get(at)
        );
    }
    assert_ne!(runs[0], runs[2], "another seed, another trace");
}

#[test]
fn room_waits_while_too_much_is_unacknowledged() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        let journal = cluster.journal(leader);
        for follower in (1..=3).filter(|n| *n != leader) {
            cluster.network.cut(leader, follower, true);
        }
        let mut pending = Vec::new();
        for i in 0..40 {
            journal.room(term).await;
            pending.push(
                journal
                    .submit(term, Bytes::from(vec![i as u8; 1024]))
                    .unwrap(),
            );
            if pending.len() == 32 {
                break;
            }
        }
        let waited = tokio::time::timeout(Duration::from_millis(50), journal.room(term)).await;
        assert!(waited.is_err(), "32 KiB unacknowledged: no room");
        for follower in (1..=3).filter(|n| *n != leader) {
            cluster.network.cut(leader, follower, false);
        }
        tokio::time::timeout(Duration::from_secs(5), journal.room(term))
            .await
            .expect("room once acknowledged");
        for p in pending {
            p.committed().await.unwrap();
        }
    });
}

#[test]
fn a_leader_asked_to_step_down_hands_the_term_over() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        cluster.journal(leader).step_down(term);
        let refused = cluster.journal(leader).submit(term, record(0));
        assert!(
            matches!(refused, Err(ReplicationError::NotLeader { .. })),
            "{refused:?}"
        );
        let others: Vec<NodeId> = (1..=3).filter(|n| *n != leader).collect();
        let (next, next_term) = cluster.leader(&others).await;
        assert!(next_term > term, "node {next} leads a later term");
        let p = cluster.journal(next).submit(next_term, record(1)).unwrap();
        assert_eq!(p.committed().await, Ok(Lsn::FIRST));
    });
}

/// A peer's message of a kind only a node gives itself — here a proposal, which would put
/// a record in the journal outside the leader's term rules — is dropped, not stepped.
#[test]
fn a_proposal_from_outside_is_never_stepped() {
    use journaldb_raft::Envelope;
    use journaldb_raft::raft::prelude::{Entry, Message, MessageType};
    runtime().block_on(async {
        let cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        let forged = journaldb_raft::EntryBatch {
            first_lsn: Lsn::FIRST,
            records: vec![record(666)],
        };
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.to = leader;
        message.from = (1..=3).find(|n| *n != leader).unwrap();
        message.term = term;
        message.entries = vec![Entry {
            data: forged.encode(),
            ..Entry::default()
        }]
        .into();
        cluster.drivers[&leader].inbox().deliver(vec![Envelope {
            group: GROUP,
            message,
        }]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let journal = cluster.journal(leader);
        assert!(journal.status().failed.is_none());
        let p = journal.submit(term, record(1)).unwrap();
        assert_eq!(
            p.committed().await,
            Ok(Lsn::FIRST),
            "no forged record took Lsn 1"
        );
        let read = journal.read(Lsn::FIRST, 1024).unwrap();
        assert_eq!(read, vec![(Lsn::FIRST, record(1))]);
    });
}

/// The leader's log is compacted past what a crashed follower holds; restarted, the
/// follower gets a (metadata-only) snapshot, resumes after it and replicates what follows;
/// what lies before it is gone from that replica, and says so.
#[test]
fn a_follower_behind_a_compacted_log_resumes_from_a_snapshot() {
    runtime().block_on(async {
        let mut cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        let follower = (1..=3).find(|n| *n != leader).unwrap();
        let commit =
            |cluster: &Cluster, i: u64| cluster.journal(leader).submit(term, record(i)).unwrap();
        for i in 0..20 {
            commit(&cluster, i).committed().await.unwrap();
        }
        cluster.crash(follower).await;
        for i in 20..60 {
            commit(&cluster, i).committed().await.unwrap();
        }
        for node in (1..=3).filter(|n| *n != follower) {
            let journal = cluster.journal(node);
            journal.wait_readable(Lsn::new(60)).await.unwrap();
            let kept = journal.truncate_prefix(Lsn::new(51)).unwrap();
            assert_eq!(kept, Lsn::new(51), "node {node}");
            assert!(matches!(
                journal.read(Lsn::new(50), 1024),
                Err(ReplicationError::Truncated { .. })
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        cluster.run(follower, SEED);
        for i in 60..70 {
            commit(&cluster, i).committed().await.unwrap();
        }
        let journal = cluster.journal(follower);
        journal.wait_readable(Lsn::new(70)).await.unwrap();
        assert_eq!(
            journal.first_lsn(),
            Lsn::new(51),
            "resumed after the snapshot"
        );
        let got = journal.read(Lsn::new(51), 1 << 20).unwrap();
        let want: Vec<(Lsn, Bytes)> = (50..70).map(|i| (Lsn::new(i + 1), record(i))).collect();
        assert_eq!(got, want);
        assert!(matches!(
            journal.read(Lsn::new(30), 1024),
            Err(ReplicationError::Truncated { .. })
        ));
    });
}

/// What [`a_leaders_own_write_counts_only_once_it_is_on_disk`] saw: whether record 1 was
/// acknowledged before its leader lost power, and the journal's first two records after
/// (as the next leader commits them).
fn crash_a_slow_leader(planted: Option<PlantedBug>) -> (bool, Vec<(Lsn, Bytes)>) {
    runtime().block_on(async {
        // Node 1's disk takes 50 ms to flush, the others' none.
        let slow = BTreeMap::from([(1, Duration::from_millis(50))]);
        let mut cluster = Cluster::start_on(SEED, slow, planted);
        let (mut leader, mut term) = cluster.leader(&[1, 2, 3]).await;
        let first = cluster.journal(leader).submit(term, record(0)).unwrap();
        assert_eq!(first.committed().await, Ok(Lsn::FIRST));
        for _ in 0..10 {
            if leader == 1 {
                break;
            }
            // Once every log is alike, a handover goes to the lowest other id.
            tokio::time::sleep(Duration::from_millis(200)).await;
            cluster.journal(leader).step_down(term);
            tokio::time::sleep(Duration::from_millis(100)).await;
            (leader, term) = cluster.leader(&[1, 2, 3]).await;
        }
        assert_eq!(leader, 1);
        // Every flush done: node 1's next one starts with record 1.
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Record 1 reaches node 2 only, which syncs it at once; node 1 has it staged.
        cluster.network.cut(1, 3, true);
        let pending = cluster.journal(1).submit(term, record(1)).unwrap();
        let acknowledged = tokio::time::timeout(Duration::from_millis(20), pending.committed())
            .await
            .is_ok_and(|r| r.is_ok());
        // Node 1 loses power before its flush; node 2 is cut off; nodes 1 and 3, whose
        // logs end at record 0, elect a leader that writes record 2.
        cluster.crash(1).await;
        cluster.network.cut(1, 3, false);
        cluster.network.isolate(2, true);
        cluster.run(1, SEED);
        let (next, next_term) = cluster.leader(&[1, 3]).await;
        let p = cluster.journal(next).submit(next_term, record(2)).unwrap();
        p.committed().await.unwrap();
        (
            acknowledged,
            read_all(cluster.journal(next), Lsn::new(3)).await,
        )
    })
}

/// ARCHITECTURE §5 rule 3: a leader's own copy of an entry counts towards the majority
/// only once it is fsynced. With its flush slow and one follower fast, the entry is not
/// acknowledged before the leader's disk has it, so the leader's power loss cannot lose
/// an acknowledged record; with the planted `PersistBeforeFsync` it is acknowledged on
/// the fast follower's copy alone, and lost when that follower is outvoted.
#[test]
fn a_leaders_own_write_counts_only_once_it_is_on_disk() {
    let (acknowledged, log) = crash_a_slow_leader(None);
    assert!(!acknowledged, "acknowledged before the leader's fsync");
    assert_eq!(log[1], (Lsn::new(2), record(2)));

    let (acknowledged, log) = crash_a_slow_leader(Some(PlantedBug::PersistBeforeFsync));
    assert!(acknowledged, "the planted bug counts the unsynced copy");
    assert_eq!(
        log[1],
        (Lsn::new(2), record(2)),
        "the acknowledged record 1 is lost"
    );
}
