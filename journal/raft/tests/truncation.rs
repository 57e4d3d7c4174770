//! Truncation of a replicated journal (ARCHITECTURE §5 "Truncation"): a leader proposes the
//! point as an entry of the log, after every record submitted before it; every replica
//! drops the same prefix when it applies that entry, so only once it is committed; a
//! replica that was away resumes from a snapshot at the truncation point; a deposed
//! leader's proposal, never committed, truncates nothing anywhere.

use std::time::Duration;

use bytes::Bytes;
use journaldb_proto::Lsn;
use journaldb_raft::{NodeId, ReplicationError};

use crate::driver::{Cluster, SEED, read_all, record, runtime};

/// Waits until `node`'s replica holds nothing before `first`.
async fn truncated_to(cluster: &Cluster, node: NodeId, first: Lsn) {
    for _ in 0..2000 {
        if cluster.journal(node).first_lsn() >= first {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "node {node} still holds records from {}, {first} was asked",
        cluster.journal(node).first_lsn()
    );
}

#[test]
fn a_committed_truncation_drops_the_same_prefix_everywhere_and_a_late_replica_gets_a_snapshot() {
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
        // Records 21..=50 queued and, at once, a truncation of everything before 51: the
        // truncation entry follows them in the log.
        let queued: Vec<_> = (20..50).map(|i| commit(&cluster, i)).collect();
        cluster
            .journal(leader)
            .propose_truncation(term, Lsn::new(51))
            .unwrap();
        for p in queued {
            p.committed().await.unwrap();
        }
        for i in 50..60 {
            commit(&cluster, i).committed().await.unwrap();
        }
        for node in (1..=3).filter(|n| *n != follower) {
            truncated_to(&cluster, node, Lsn::new(51)).await;
            let journal = cluster.journal(node);
            journal.wait_readable(Lsn::new(60)).await.unwrap();
            assert_eq!(journal.first_lsn(), Lsn::new(51), "node {node}");
            assert!(matches!(
                journal.read(Lsn::new(50), 1024),
                Err(ReplicationError::Truncated { .. })
            ));
            let kept = journal.read(Lsn::new(51), 1 << 20).unwrap();
            let want: Vec<(Lsn, Bytes)> = (50..60).map(|i| (Lsn::new(i + 1), record(i))).collect();
            assert_eq!(kept, want, "node {node} keeps what follows");
        }
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
    });
}

#[test]
fn only_the_leader_proposes_a_truncation_and_never_past_its_records() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        let follower = (1..=3).find(|n| *n != leader).unwrap();
        for i in 0..5 {
            let p = cluster.journal(leader).submit(term, record(i)).unwrap();
            p.committed().await.unwrap();
        }
        let refused = cluster
            .journal(follower)
            .propose_truncation(term, Lsn::new(3));
        assert!(
            matches!(refused, Err(ReplicationError::NotLeader { .. })),
            "{refused:?}"
        );
        let refused = cluster
            .journal(leader)
            .propose_truncation(term + 1, Lsn::new(3));
        assert!(
            matches!(refused, Err(ReplicationError::NotLeader { .. })),
            "{refused:?}"
        );
        // Lsn 6 is the next record's: truncating before it drops all five; 7 would drop
        // one that does not exist yet.
        let refused = cluster
            .journal(leader)
            .propose_truncation(term, Lsn::new(7));
        assert!(
            matches!(refused, Err(ReplicationError::Truncated { .. })),
            "{refused:?}"
        );
        cluster
            .journal(leader)
            .propose_truncation(term, Lsn::new(6))
            .unwrap();
        let p = cluster.journal(leader).submit(term, record(5)).unwrap();
        p.committed().await.unwrap();
        for node in 1..=3 {
            truncated_to(&cluster, node, Lsn::new(6)).await;
        }
    });
}

/// An isolated leader proposes a truncation; its entry never commits, the new leader's
/// entries replace it, and no replica — the old leader included — drops anything.
#[test]
fn a_deposed_leaders_truncation_drops_nothing_anywhere() {
    runtime().block_on(async {
        let cluster = Cluster::start();
        let (old, term) = cluster.leader(&[1, 2, 3]).await;
        for i in 0..10 {
            let p = cluster.journal(old).submit(term, record(i)).unwrap();
            p.committed().await.unwrap();
        }
        cluster.network.isolate(old, true);
        cluster
            .journal(old)
            .propose_truncation(term, Lsn::new(11))
            .unwrap();
        let stranded = cluster.journal(old).submit(term, record(99)).unwrap();
        assert!(matches!(
            stranded.committed().await,
            Err(ReplicationError::CommitUnknown { .. })
        ));
        let others: Vec<NodeId> = (1..=3).filter(|n| *n != old).collect();
        let (new, new_term) = cluster.leader(&others).await;
        for i in 10..20 {
            let p = cluster.journal(new).submit(new_term, record(i)).unwrap();
            p.committed().await.unwrap();
        }
        cluster.network.isolate(old, false);
        let want: Vec<(Lsn, Bytes)> = (0..20).map(|i| (Lsn::new(i + 1), record(i))).collect();
        for node in 1..=3 {
            assert_eq!(
                read_all(cluster.journal(node), Lsn::new(21)).await,
                want,
                "node {node}"
            );
            assert_eq!(cluster.journal(node).first_lsn(), Lsn::FIRST, "node {node}");
        }
    });
}
