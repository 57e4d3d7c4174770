//! Membership changes (ARCHITECTURE §5, "Membership"): replacing a dead or wiped replica
//! with a new node, through raft-rs's configuration changes, never by editing a log.
//!
//! A new replica joins under a **new node id** (rule 3: a voter that lost its disk forgot
//! its votes, and under its old id could vote twice in one term). It starts from an empty
//! log that holds only the group's first configuration, in which it is not a member, so it
//! never campaigns; [`ReplicatedJournal::replace_voter`] then runs the change on the
//! leader:
//!
//! 1. the new node is added as a **learner**: the leader replicates the log to it (or a
//!    snapshot, if the log it needs was truncated), and it does not vote;
//! 2. once its log matches the leader's commit index, one **joint** change promotes it
//!    and removes the old voter (raft-rs's joint consensus: both majorities must agree
//!    until the leader leaves the joint configuration on its own, `auto_leave`);
//! 3. the call returns when the configuration without the old voter is applied here.
//!
//! Only one change is in flight at a time (raft-rs drops a second proposal while one is
//! unapplied); a change never touches the leader's own membership, a demotion included
//! (raft-rs leaves a leader outside its configuration leading, a path it marks untested:
//! hand the leadership over first), and a leader a configuration it applies no longer
//! counts as a voter closes its term and hands over; the joint change of a replacement is
//! proposed only if the old voter still is one at that instant (so two replacements of one
//! voter cannot both add a node); a change's caller waits for its entry only while the
//! term that proposed it lasts; and a driver that leads a joint configuration left behind
//! by an earlier leader proposes the leave itself.

use std::time::Duration;

use raft::StateRole;
use raft::prelude::ConfChangeV2;
use tokio::sync::oneshot;

use super::conf::{MemberChange, Members};
use super::handle::{ChangeRequest, ReplicatedJournal};
use super::{NodeId, ReplicationError};

/// How often the waits below look at the group again.
const POLL: Duration = Duration::from_millis(10);

impl ReplicatedJournal {
    /// Each member's log position as this node, the leader, knows it (`matched`: the last
    /// index known to be replicated there); empty unless this node leads.
    pub fn progress(&self) -> Vec<(NodeId, u64)> {
        self.shared.progress.lock().clone()
    }

    /// Proposes `changes` as one configuration change (joint if it changes more than one
    /// voter or learner set safely only so) on this node, which must lead, and waits until
    /// it is applied here. Returns the index of its entry.
    pub async fn change_members(&self, changes: &[MemberChange]) -> Result<u64, ReplicationError> {
        let status = self.status();
        if status.role != StateRole::Leader {
            return Err(ReplicationError::NotLeader {
                term: status.term,
                current: status.term,
                leader: status.leader,
            });
        }
        if changes.is_empty() {
            return Err(refused("no change asked for"));
        }
        self.change_members_if(changes, None).await
    }

    /// [`ReplicatedJournal::change_members`], proposed only if `voter` is still a voter at
    /// that instant.
    async fn change_members_if(
        &self,
        changes: &[MemberChange],
        voter: Option<NodeId>,
    ) -> Result<u64, ReplicationError> {
        let term = self.status().term;
        let mut change = ConfChangeV2::default();
        change.set_changes(
            changes
                .iter()
                .map(|c| c.single())
                .collect::<Vec<_>>()
                .into(),
        );
        let index = self.propose_change(change, voter).await?;
        self.applied_through(index, term).await?;
        Ok(index)
    }

    /// Replaces voter `old` (dead, or wiped) with `new`, a node that is not a member and
    /// has never been one (module docs), on this node, which must lead: `new` becomes a
    /// learner, catches up with the leader's commit index within `patience`, and is then
    /// promoted while `old` is removed, in one joint change. Re-running it after a failure
    /// continues where the last run stopped.
    pub async fn replace_voter(
        &self,
        old: NodeId,
        new: NodeId,
        patience: Duration,
    ) -> Result<Members, ReplicationError> {
        self.replace_voter_if(old, new, patience, || Ok(())).await
    }

    /// [`ReplicatedJournal::replace_voter`], whose joint change is proposed only if
    /// `wanted` still says so once `new` has caught up (the caller's own record of the
    /// replacement may have changed during the wait); its refusal is the error's reason.
    pub async fn replace_voter_if(
        &self,
        old: NodeId,
        new: NodeId,
        patience: Duration,
        wanted: impl Fn() -> Result<(), String>,
    ) -> Result<Members, ReplicationError> {
        let members = self.status().members;
        if members.joint() {
            // An earlier change stopped half way: leave the joint configuration first.
            self.leave_joint().await?;
        }
        let members = self.status().members;
        if old == new {
            return Err(refused(format!("node {old} cannot replace itself")));
        }
        let done = !members.contains(old) && members.voters.contains(&new);
        if done {
            return Ok(members);
        }
        if !members.voters.contains(&old) {
            return Err(refused(format!("node {old} is not a voter: {members:?}")));
        }
        if members.voters.contains(&new) {
            return Err(refused(format!(
                "node {new} is already a voter: {members:?}"
            )));
        }
        if !members.learners.contains(&new) {
            if self
                .shared
                .log
                .state()
                .confs
                .iter()
                .any(|(_, c)| Members::of(c).contains(new))
            {
                return Err(refused(format!(
                    "node {new} was a member before: a replica joins under a new id"
                )));
            }
            self.change_members(&[MemberChange::AddLearner(new)])
                .await?;
        }
        self.caught_up(new, patience).await?;
        wanted().map_err(refused)?;
        let swap = [MemberChange::AddVoter(new), MemberChange::Remove(old)];
        self.change_members_if(&swap, Some(old)).await?;
        // raft-rs's leader leaves the joint configuration by itself once it applied it.
        self.leave_joint().await?;
        Ok(self.status().members)
    }

    /// Waits until the configuration applied here is not joint, proposing the leave if
    /// this node leads and nobody has.
    async fn leave_joint(&self) -> Result<(), ReplicationError> {
        let mut asked = false;
        loop {
            let status = self.status();
            if let Some(reason) = status.failed {
                return Err(self.stopped(reason));
            }
            if !status.members.joint() {
                return Ok(());
            }
            if status.role != StateRole::Leader {
                return Err(ReplicationError::NotLeader {
                    term: status.term,
                    current: status.term,
                    leader: status.leader,
                });
            }
            if !asked {
                // An empty change with the automatic transition is raft-rs's "leave".
                asked = true;
                match self.propose_change(ConfChangeV2::default(), None).await {
                    Ok(index) => self.applied_through(index, status.term).await?,
                    // The leader's own leave is already in the log.
                    Err(ReplicationError::Membership { .. }) => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `node`'s log holds everything committed when the wait began, as this
    /// node (the leader) sees it.
    async fn caught_up(&self, node: NodeId, patience: Duration) -> Result<(), ReplicationError> {
        let target = self.status().commit;
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let matched = self
                .progress()
                .iter()
                .find(|(id, _)| *id == node)
                .map_or(0, |(_, m)| *m);
            if matched >= target {
                return Ok(());
            }
            let status = self.status();
            if status.role != StateRole::Leader {
                return Err(ReplicationError::NotLeader {
                    term: status.term,
                    current: status.term,
                    leader: status.leader,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReplicationError::CatchingUp {
                    node,
                    matched,
                    target,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Hands `change` to the driver; the index of its entry once proposed.
    async fn propose_change(
        &self,
        change: ConfChangeV2,
        voter: Option<NodeId>,
    ) -> Result<u64, ReplicationError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut slot = self.shared.change.lock();
            if slot.is_some() {
                return Err(refused("another membership change is being proposed"));
            }
            *slot = Some(ChangeRequest {
                change,
                voter,
                reply,
            });
        }
        self.shared.wake.notify_one();
        answer
            .await
            .unwrap_or_else(|_| Err(self.stopped("the driver stopped".into())))
    }

    /// Waits until the entry at `index`, proposed in `term`, is applied here while this
    /// node still leads `term` (after a change of term another leader's entry may stand
    /// at that index, and a deposed leader would wait for as long as it is cut off).
    async fn applied_through(&self, index: u64, term: u64) -> Result<(), ReplicationError> {
        let mut status = self.watch_status();
        loop {
            {
                let now = status.borrow_and_update();
                if let Some(reason) = &now.failed {
                    return Err(self.stopped(reason.clone()));
                }
                if now.term != term || now.role != StateRole::Leader {
                    return Err(refused(format!(
                        "the leadership of term {term} ended while the change was in flight \
                         (now term {}, leader {:?}): look at the members and run it again",
                        now.term, now.leader
                    )));
                }
                if now.applied >= index {
                    return Ok(());
                }
            }
            if status.changed().await.is_err() {
                return Err(self.stopped("the driver stopped".into()));
            }
        }
    }
}

fn refused(reason: impl Into<String>) -> ReplicationError {
    ReplicationError::Membership {
        reason: reason.into(),
    }
}
