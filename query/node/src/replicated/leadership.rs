//! [`Leadership`]: keeps a partition's adjudicator on this node in step with the
//! leadership of its journal's Raft group. When this node becomes leader of a term it
//! takes the partition over ([`super::lead`]: `EpochStart`, replay) and serves it for that
//! term only; when the term ends, or this node stops leading, it serves nothing until it
//! leads again — and then starts over from the log. Requests meanwhile are told who leads
//! (ARCHITECTURE §5 rule 6: clients find the leader by redirect).

use std::sync::Arc;

use journaldb_adjudicator::{AdjudicatorConfig, Partition};
use journaldb_proto::{Clock, PartitionId, PlantedBug};
use journaldb_raft::raft::StateRole;
use journaldb_raft::{GroupStatus, NodeId, ReplicatedJournal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{LeadError, TermLog, lead};

/// Which keys a partition owns.
pub type Owns = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// What this node can do for a partition right now.
#[derive(Debug, Clone)]
pub enum Serving {
    /// It leads the journal's group and serves the partition in this term.
    Leader(Arc<Partition<TermLog>>),
    /// It does not serve the partition; `leader` is the node it believes leads (if any).
    Elsewhere {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// Taking over failed for a reason a new term cannot mend (the log cannot be replayed).
    Failed(String),
}

/// The task that follows one partition's leadership on this node.
#[derive(Debug)]
pub struct Leadership {
    serving: watch::Receiver<Serving>,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Follows `journal`'s leadership for partition `id` on node `node`.
    pub fn spawn(
        journal: ReplicatedJournal,
        node: NodeId,
        id: PartitionId,
        config: AdjudicatorConfig,
        owns: Owns,
        clock: Arc<dyn Clock>,
    ) -> Leadership {
        let (tx, serving) = watch::channel(Serving::Elsewhere { leader: None });
        let task = tokio::spawn(follow(journal, node, id, config, owns, clock, tx));
        Leadership { serving, task }
    }

    /// What this node can do for the partition now. A partition is handed out only while
    /// its term is still this node's.
    pub fn serving(&self) -> Serving {
        match &*self.serving.borrow() {
            Serving::Leader(partition) if !partition.journal().is_current() => {
                Serving::Elsewhere { leader: None }
            }
            serving => serving.clone(),
        }
    }

    /// Watches what this node can do for the partition.
    pub fn watch(&self) -> watch::Receiver<Serving> {
        self.serving.clone()
    }

    /// Stops following; the partition is no longer served here.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(
    journal: ReplicatedJournal,
    node: NodeId,
    id: PartitionId,
    config: AdjudicatorConfig,
    owns: Owns,
    clock: Arc<dyn Clock>,
    serving: watch::Sender<Serving>,
) {
    let mut status = journal.watch_status();
    // The last term a takeover was tried in: never twice in one term (a term whose
    // submissions closed stays closed; the next term starts over).
    let mut tried = None;
    // The planted `ProposeInLaterTerm`: the partition of an earlier term, carried into
    // the next term this node leads instead of a takeover from the log.
    let carry = config.planted_bug == Some(PlantedBug::ProposeInLaterTerm);
    let mut kept: Option<Arc<Partition<TermLog>>> = None;
    loop {
        let now = status.borrow_and_update().clone();
        if let Some(reason) = now.failed {
            serving.send_replace(Serving::Failed(reason));
            return;
        }
        let leads = now.role == StateRole::Leader;
        let served = match &*serving.borrow() {
            Serving::Leader(p) => Some(p.journal().term()),
            _ => None,
        };
        if leads && served != Some(now.term) && tried != Some(now.term) {
            tried = Some(now.term);
            if let Some(partition) = kept.as_ref().filter(|_| carry) {
                partition.journal().rebind(now.term);
                serving.send_replace(Serving::Leader(partition.clone()));
                continue;
            }
            // A new term of ours: nothing is served until its takeover is done.
            serving.send_replace(Serving::Elsewhere { leader: Some(node) });
            let owns = owns.clone();
            let taken = lead(
                &journal,
                now.term,
                node,
                id,
                config.clone(),
                move |key: &[u8]| owns(key),
                &*clock,
            )
            .await;
            match taken {
                Ok(partition) => {
                    let partition = Arc::new(partition);
                    if carry {
                        kept = Some(partition.clone());
                    }
                    serving.send_replace(Serving::Leader(partition));
                }
                // The term ended under the takeover (the status says what now), or it
                // cannot be served: if this node still leads it, it hands it over.
                Err(LeadError::Replication { .. }) => journal.step_down(now.term),
                Err(e) => {
                    serving.send_replace(Serving::Failed(e.to_string()));
                    refuse_to_lead(journal, status).await;
                    return;
                }
            }
            continue;
        }
        if !leads {
            serving.send_if_modified(|s| {
                let next = Serving::Elsewhere { leader: now.leader };
                let changed = !matches!(
                    (&*s, &next),
                    (Serving::Elsewhere { leader: a }, Serving::Elsewhere { leader: b }) if a == b
                );
                *s = next;
                changed
            });
        }
        if status.changed().await.is_err() {
            serving.send_replace(Serving::Failed("the driver stopped".into()));
            return;
        }
    }
}

/// A replica whose log cannot be replayed here stays a voter (its copy of the log still
/// counts towards commits) but never leads: every term it wins, it hands over at once —
/// else the partition would have a leader that serves nothing for as long as it lives.
async fn refuse_to_lead(journal: ReplicatedJournal, mut status: watch::Receiver<GroupStatus>) {
    loop {
        let now = status.borrow_and_update().clone();
        if now.role == StateRole::Leader {
            journal.step_down(now.term);
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}
