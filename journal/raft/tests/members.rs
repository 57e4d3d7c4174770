//! Membership changes on three drivers in virtual time: a dead voter replaced by a new node
//! that catches up — from the log, or from a snapshot past a truncated log — before it
//! votes, and then counts towards the majority; changes a group must not make are refused
//! with a reason; the replaced node, restarted under its old id, changes nothing.

use std::sync::Arc;
use std::time::Duration;

use journaldb_journal::disk::{CrashDisk, CrashDiskConfig};
use journaldb_proto::Lsn;
use journaldb_raft::raft::StateRole;
use journaldb_raft::raft::prelude::ConfState;
use journaldb_raft::{MemberChange, Members, NodeId, RaftLog, ReplicationError};

use crate::driver::{Cluster, SEED, dir, log_id, options, read_all, record, runtime};

const PATIENCE: Duration = Duration::from_secs(10);

impl Cluster {
    /// Starts `node` as a new replica: an empty log holding only the group's first
    /// configuration, in which it is not a member.
    fn join(&mut self, node: NodeId) {
        let disk = CrashDisk::new(CrashDiskConfig::default());
        let first = ConfState::from((vec![1, 2, 3], vec![]));
        drop(
            RaftLog::create(
                Arc::new(disk.clone()),
                dir(),
                log_id(node),
                options(),
                first,
            )
            .unwrap(),
        );
        self.disks.insert(node, disk);
        self.run(node, SEED);
    }

    /// Commits records `from..to` through `leader` in `term`.
    async fn commit(&self, leader: NodeId, term: u64, range: std::ops::Range<u64>) {
        for i in range {
            let pending = self.journal(leader).submit(term, record(i)).unwrap();
            pending.committed().await.unwrap();
        }
    }
}

fn members(voters: &[NodeId]) -> Members {
    Members {
        voters: voters.to_vec(),
        learners: Vec::new(),
        outgoing: Vec::new(),
    }
}

/// A follower dies for good (its disk is lost); node 4 joins with an empty log, is
/// replaced in, holds every record, and its vote then matters: with one more original
/// follower down, the group still commits. The dead node, back under its old id, is no
/// member and changes nothing.
#[test]
fn a_dead_voter_is_replaced_by_a_new_node_that_catches_up_before_it_votes() {
    runtime().block_on(async {
        let mut cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        cluster.commit(leader, term, 0..30).await;
        let mut followers = (1..=3).filter(|n| *n != leader);
        let (dead, other) = (followers.next().unwrap(), followers.next().unwrap());
        cluster.crash(dead).await;
        cluster.join(4);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            cluster.journal(4).status().role,
            StateRole::Follower,
            "not a member: it never campaigns"
        );

        let journal = cluster.journal(leader).clone();
        let now = journal.replace_voter(dead, 4, PATIENCE).await.unwrap();
        let mut voters = vec![leader, other, 4];
        voters.sort_unstable();
        assert_eq!(now, members(&voters));
        assert_eq!(cluster.journal(4).status().members, members(&voters));
        assert_eq!(
            journal.replace_voter(dead, 4, PATIENCE).await.unwrap(),
            members(&voters),
            "running it again finds it done"
        );

        cluster.commit(leader, term, 30..40).await;
        let want: Vec<_> = (0..40).map(|i| (Lsn::new(i + 1), record(i))).collect();
        assert_eq!(read_all(cluster.journal(4), Lsn::new(41)).await, want);

        // Node 4 votes: with `other` down too, {leader, 4} is the majority.
        cluster.crash(other).await;
        cluster.commit(leader, term, 40..45).await;

        // The dead node comes back under its old id, with the log it had.
        cluster.run(dead, SEED);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (now_leader, now_term) = cluster.leader(&[leader, 4]).await;
        assert_eq!(
            (now_leader, now_term),
            (leader, term),
            "it disturbed nobody"
        );
        cluster.commit(leader, term, 45..50).await;
        assert!(!cluster.journal(leader).status().members.contains(dead));
    });
}

/// The leader's log was truncated past what a new node needs: it gets a snapshot (with
/// the configuration at its index) and resumes after it.
#[test]
fn a_new_node_behind_a_truncated_log_catches_up_from_a_snapshot() {
    runtime().block_on(async {
        let mut cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        cluster.commit(leader, term, 0..40).await;
        let dead = (1..=3).find(|n| *n != leader).unwrap();
        cluster.crash(dead).await;
        for node in (1..=3).filter(|n| *n != dead) {
            let journal = cluster.journal(node);
            journal.wait_readable(Lsn::new(40)).await.unwrap();
            assert_eq!(journal.truncate_prefix(Lsn::new(31)).unwrap(), Lsn::new(31));
        }
        cluster.join(4);
        let journal = cluster.journal(leader).clone();
        journal.replace_voter(dead, 4, PATIENCE).await.unwrap();
        cluster.commit(leader, term, 40..45).await;
        let new = cluster.journal(4);
        new.wait_readable(Lsn::new(45)).await.unwrap();
        // The snapshot is at the truncation point: the new replica holds the whole window
        // a future leader replays.
        assert_eq!(new.first_lsn(), Lsn::new(31), "resumed after the snapshot");
        let want: Vec<_> = (30..45).map(|i| (Lsn::new(i + 1), record(i))).collect();
        assert_eq!(new.read(Lsn::new(31), 1 << 20).unwrap(), want);
        assert!(matches!(
            new.read(Lsn::new(30), 1024),
            Err(ReplicationError::Truncated { .. })
        ));
        assert!(new.status().members.voters.contains(&4));
    });
}

/// What a group must not do is refused, with the reason, and changes nothing.
#[test]
fn membership_changes_a_group_must_not_make_are_refused() {
    runtime().block_on(async {
        let mut cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        cluster.commit(leader, term, 0..5).await;
        let follower = (1..=3).find(|n| *n != leader).unwrap();
        let journal = cluster.journal(leader).clone();

        for change in [
            MemberChange::Remove(leader),
            MemberChange::AddLearner(leader),
        ] {
            let reason = refused(journal.change_members(&[change]).await);
            assert!(reason.contains("hand the leadership over"), "{reason}");
        }
        let reason = refused(journal.replace_voter(9, 4, PATIENCE).await);
        assert!(reason.contains("not a voter"), "{reason}");
        let reason = refused(journal.replace_voter(follower, leader, PATIENCE).await);
        assert!(reason.contains("already a voter"), "{reason}");
        assert!(matches!(
            cluster
                .journal(follower)
                .change_members(&[MemberChange::AddLearner(4)])
                .await,
            Err(ReplicationError::NotLeader { .. })
        ));
        assert_eq!(journal.status().members, members(&[1, 2, 3]));

        // A node that cannot catch up (it does not run) stays a learner; once replaced,
        // an old id is never taken back.
        let err = journal
            .replace_voter(follower, 4, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ReplicationError::CatchingUp { node: 4, .. }),
            "{err}"
        );
        assert!(err.is_retryable());
        assert_eq!(journal.status().members.learners, vec![4]);
        cluster.join(4);
        // The caller's record changed while node 4 caught up: no swap, 4 stays a learner.
        let unwanted = || Err("no longer wanted".to_owned());
        let reason = refused(
            journal
                .replace_voter_if(follower, 4, PATIENCE, unwanted)
                .await,
        );
        assert!(reason.contains("no longer wanted"), "{reason}");
        assert_eq!(journal.status().members.learners, vec![4]);
        assert!(journal.status().members.voters.contains(&follower));
        journal.replace_voter(follower, 4, PATIENCE).await.unwrap();
        let reason = refused(journal.replace_voter(4, follower, PATIENCE).await);
        assert!(reason.contains("was a member before"), "{reason}");
        cluster.commit(leader, term, 5..10).await;
    });
}

fn refused<T: std::fmt::Debug>(result: Result<T, ReplicationError>) -> String {
    match result {
        Err(ReplicationError::Membership { reason }) => reason,
        other => panic!("not refused: {other:?}"),
    }
}

/// The leader is cut off while it replaces a voter: its call fails (the leadership ended,
/// or it no longer leads), and running the replacement again on the next leader finishes
/// it from wherever the first stopped.
#[test]
fn a_replacement_cut_short_by_a_new_leader_is_finished_by_running_it_again() {
    runtime().block_on(async {
        let mut cluster = Cluster::start();
        let (leader, term) = cluster.leader(&[1, 2, 3]).await;
        cluster.commit(leader, term, 0..20).await;
        let mut followers = (1..=3).filter(|n| *n != leader);
        let (dead, other) = (followers.next().unwrap(), followers.next().unwrap());
        cluster.crash(dead).await;
        cluster.join(4);
        let journal = cluster.journal(leader).clone();
        let network = cluster.network.clone();
        let (first, ()) = tokio::join!(journal.replace_voter(dead, 4, PATIENCE), async {
            tokio::time::sleep(Duration::from_millis(3)).await;
            network.isolate(leader, true);
        });
        let err = first.expect_err("the leader was cut off mid-change");
        assert!(
            matches!(
                err,
                ReplicationError::Membership { .. }
                    | ReplicationError::NotLeader { .. }
                    | ReplicationError::CatchingUp { .. }
            ),
            "{err}"
        );
        // `other` and node 4 (a learner, or already a voter) go on: `other` leads once
        // it has a majority — with the old leader cut off, that takes node 4 as a voter,
        // or the old configuration's two live voters.
        network.isolate(leader, false);
        let (next, next_term) = cluster.leader(&[leader, other, 4]).await;
        let now = cluster
            .journal(next)
            .clone()
            .replace_voter(dead, 4, PATIENCE)
            .await
            .unwrap();
        let mut voters = vec![leader, other, 4];
        voters.sort_unstable();
        assert_eq!(now, members(&voters));
        cluster.commit(next, next_term, 20..25).await;
        let want: Vec<_> = (0..25).map(|i| (Lsn::new(i + 1), record(i))).collect();
        assert_eq!(read_all(cluster.journal(4), Lsn::new(26)).await, want);
    });
}
