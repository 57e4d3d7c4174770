//! [`Resolver`]: how a node asks coordinators — on this node or another — about votes left
//! undecided past the vote timeout (a client that died, was cut off or lost its reply
//! between its prepares and its `Decide`, or a crash), and records the answers.

use std::sync::Arc;
use std::time::Duration;

use journaldb_adjudicator::{Partition, PartitionLog, TxnStatus};
use journaldb_journal::Journal;
use journaldb_proto::pb::adjudicator_service_client::AdjudicatorServiceClient;
use journaldb_proto::{Clock, PartitionId, Timestamp, TxnId, pb};
use tonic::transport::Channel;

use crate::config::NodeConfig;

/// Asks coordinators about votes left undecided.
pub(crate) struct Resolver<L: PartitionLog = Journal> {
    /// The partitions served here, asked in process.
    pub(crate) local: Vec<Arc<Partition<L>>>,
    pub(crate) config: NodeConfig,
    /// Per partition, (lazily connecting) channels to the nodes to ask, in order: its node,
    /// or with replicated journals its replicas (this node first if it is one; a replica
    /// forwards to its leader). Reused by every question, so a round does not pay a
    /// connection per vote.
    pub(crate) channels: Arc<Vec<Vec<Channel>>>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl<L: PartitionLog> Clone for Resolver<L> {
    fn clone(&self) -> Self {
        Resolver {
            local: self.local.clone(),
            config: self.config.clone(),
            channels: self.channels.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<L: PartitionLog> Resolver<L> {
    /// Asks `txn`'s coordinator once (`Status`, with the vote τ `bound` as the snapshot
    /// bound): `None` if it cannot be asked now. Asking decides an undecided transaction
    /// aborted for good.
    async fn ask(
        &self,
        coordinator: PartitionId,
        txn: TxnId,
        bound: Timestamp,
    ) -> Option<TxnStatus> {
        if coordinator.get() >= self.config.partitions {
            return None; // replayed votes were checked when cast; never panic on one
        }
        match self.local.iter().find(|p| p.id() == coordinator) {
            Some(p) => p.status(self.clock.now(), txn, bound).await.ok(),
            None => self.ask_remote(coordinator, txn, bound).await,
        }
    }

    async fn ask_remote(
        &self,
        coordinator: PartitionId,
        txn: TxnId,
        bound: Timestamp,
    ) -> Option<TxnStatus> {
        for channel in self.channels.get(coordinator.get() as usize)? {
            let asked = AdjudicatorServiceClient::new(channel.clone())
                .status(pb::StatusRequest {
                    partition: coordinator.get(),
                    txn_id: Some(txn.into()),
                    start_ts: bound.as_nanos(),
                })
                .await;
            // A replica without a leader, or one that is down: ask the next.
            if let Ok(reply) = asked {
                return TxnStatus::from_reply(reply.into_inner());
            }
        }
        None
    }

    /// Resolves `part`'s votes undecided past the vote timeout, every `every`, for as long
    /// as the node runs: a client that died, was cut off or lost its reply between its
    /// prepares and its `Decide` keeps the keys for at most the timeout plus one round.
    pub(crate) async fn run(self, part: Arc<Partition<L>>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if part.adjudicator().is_stepped_down() {
                return;
            }
            let now = self.clock.now();
            part.resolve_overdue(now, |c, txn, bound| self.ask(c, txn, bound))
                .await;
        }
    }
}
