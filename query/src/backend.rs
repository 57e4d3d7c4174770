//! [`Backend`]: what a [`Transaction`] runs against — the roles in this process
//! (embedded [`crate::Database`]) or a cluster over gRPC ([`crate::Client`]). The
//! transaction logic (read-your-writes in `transaction.rs`; the single- and cross-partition
//! commit protocols and outcome questions in `commit.rs`; `transact`'s retries) is written
//! once, on top of these calls (ARCHITECTURE §9: the protocol logic is not written twice).
//!
//! Errors come back already as the public [`Error`]: a call that may have written
//! something returns `CommitUnknown` (the transaction then re-asks by txn id or decides the
//! vote), everything else is definite.

use std::sync::Arc;

use bytes::Bytes;
use journaldb_adjudicator::{CommitRequest, PrepareRequest, TxnStatus};

use journaldb_proto::{Clock, Limits, Mutation, PartitionId, TimeInterval, Timestamp, TxnId};
use journaldb_storage::{ScanPage, ScanRange, VersionStore};

use crate::cluster::remote::Remote;
use crate::embedded::Inner;
use crate::error::{Error, Result};
use crate::retry::{RetryPolicy, RetryState};

/// The roles a transaction talks to.
#[derive(Clone)]
pub(crate) enum Backend {
    /// In this process.
    Embedded(Arc<Inner>),
    /// A cluster, over gRPC.
    Cluster(Arc<Remote>),
}

impl Backend {
    pub(crate) fn limits(&self) -> &Limits {
        match self {
            Backend::Embedded(db) => &db.options.limits,
            Backend::Cluster(c) => &c.limits,
        }
    }

    pub(crate) fn partitions(&self) -> u32 {
        match self {
            Backend::Embedded(db) => db.partitions,
            Backend::Cluster(c) => c.partitions(),
        }
    }

    pub(crate) fn now(&self) -> TimeInterval {
        match self {
            Backend::Embedded(db) => db.clock.now(),
            Backend::Cluster(c) => c.clock.now(),
        }
    }

    pub(crate) fn retry(&self) -> &RetryState {
        match self {
            Backend::Embedded(db) => &db.retry,
            Backend::Cluster(c) => &c.retry,
        }
    }

    /// The snapshot of a new transaction: every commit acknowledged before is visible.
    pub(crate) fn start_ts(&self) -> Timestamp {
        match self {
            Backend::Embedded(db) => db.start_ts(),
            Backend::Cluster(c) => c.start_ts(),
        }
    }

    /// A fresh transaction id.
    pub(crate) fn txn_id(&self) -> TxnId {
        self.retry().txn_id()
    }

    pub(crate) async fn get(&self, key: &[u8], at: Timestamp) -> Result<Option<Bytes>> {
        match self {
            Backend::Embedded(db) => {
                db.read_barrier(at).await?;
                Ok(db.node.read_at(at, |s| s.get(key, at))?)
            }
            Backend::Cluster(c) => c.get(key, at).await,
        }
    }

    pub(crate) async fn scan(
        &self,
        range: &ScanRange,
        at: Timestamp,
        limit: usize,
        reverse: bool,
    ) -> Result<ScanPage> {
        match self {
            Backend::Embedded(db) => {
                db.read_barrier(at).await?;
                Ok(db.node.read_at(at, |s| s.scan(range, at, limit, reverse))?)
            }
            Backend::Cluster(c) => c.scan(range, at, limit, reverse).await,
        }
    }

    pub(crate) async fn commit(&self, p: PartitionId, req: &CommitRequest) -> Result<Timestamp> {
        match self {
            Backend::Embedded(db) => db.commit_single(p, req).await,
            Backend::Cluster(c) => c.commit(p, req).await,
        }
    }

    /// A single-partition commit, re-sent with `retry: true` after `CommitUnknown`.
    pub(crate) async fn commit_retry(
        &self,
        p: PartitionId,
        req: &CommitRequest,
    ) -> Result<Timestamp> {
        let retry = CommitRequest {
            retry: true,
            ..req.clone()
        };
        self.commit(p, &retry).await
    }

    pub(crate) async fn prepare(&self, p: PartitionId, req: &PrepareRequest) -> Result<Timestamp> {
        match self {
            Backend::Embedded(db) => db
                .part(p)
                .prepare(db.clock.now(), req)
                .await
                .map_err(crate::error::refusal),
            Backend::Cluster(c) => c.prepare(p, req).await,
        }
    }

    pub(crate) async fn commit_prepared(
        &self,
        p: PartitionId,
        txn_id: TxnId,
        start_ts: Timestamp,
        votes: &[Timestamp],
        mutations: &[Mutation],
        participants: &[PartitionId],
    ) -> Result<Timestamp> {
        match self {
            Backend::Embedded(db) => db
                .part(p)
                .commit_prepared(
                    db.clock.now(),
                    txn_id,
                    start_ts,
                    votes,
                    mutations,
                    participants,
                )
                .await
                .map_err(crate::error::refusal),
            Backend::Cluster(c) => {
                c.commit_prepared(p, txn_id, start_ts, votes, mutations, participants)
                    .await
            }
        }
    }

    /// Tells participant `p` the outcome (embedded: queued, not awaited).
    async fn decide(
        &self,
        p: PartitionId,
        txn_id: TxnId,
        outcome: Option<Timestamp>,
    ) -> Result<()> {
        match self {
            Backend::Embedded(db) => db
                .part(p)
                .decide(db.clock.now(), txn_id, outcome, false)
                .await
                .map_err(crate::error::refusal),
            Backend::Cluster(c) => c.decide(p, txn_id, outcome).await,
        }
    }

    /// Tells every participant in `participants` the outcome of `txn_id`, concurrently.
    /// Returns once each has answered its first `Decide` (as the commit path always has);
    /// a `Decide` that failed (an unreachable node, a timeout) is retried a few times in the
    /// background, off the caller's path. Best effort beyond that: a participant that never
    /// hears resolves its vote itself after the vote timeout, by asking the coordinator.
    pub(crate) async fn decide_all(
        &self,
        participants: &[PartitionId],
        txn_id: TxnId,
        outcome: Option<Timestamp>,
    ) {
        let mut first_answers = Vec::new();
        for &p in participants {
            let backend = self.clone();
            let (answered, first_answer) = tokio::sync::oneshot::channel::<()>();
            first_answers.push(first_answer);
            tokio::spawn(async move {
                let mut answered = Some(answered);
                for attempt in 0..DECIDE_ATTEMPTS {
                    let result = backend.decide(p, txn_id, outcome).await;
                    if let Some(answered) = answered.take() {
                        let _ = answered.send(());
                    }
                    match result {
                        Ok(()) => return,
                        // A refusal for cause will not change by asking again.
                        Err(
                            Error::InvalidArgument(_)
                            | Error::LimitExceeded(_)
                            | Error::Corruption(_),
                        ) => return,
                        Err(_) => {
                            let pause = backend.retry().policy.outcome_pause(attempt);
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
            });
        }
        for first_answer in first_answers {
            let _ = first_answer.await;
        }
    }

    /// Between a commit's durability and its acknowledgement (commit wait, visibility).
    pub(crate) async fn acknowledge(&self, ts: Timestamp) {
        match self {
            Backend::Embedded(db) => db.acknowledge(ts).await,
            Backend::Cluster(c) => c.acknowledge(ts).await,
        }
    }

    /// The coordinator's answer about `txn_id`, whose snapshot is `start_ts`: `None` if it
    /// cannot be asked now. Asking aborts an undecided transaction for good.
    pub(crate) async fn status(
        &self,
        coordinator: PartitionId,
        txn_id: TxnId,
        start_ts: Timestamp,
    ) -> Option<TxnStatus> {
        match self {
            Backend::Embedded(db) => db
                .part(coordinator)
                .status(db.clock.now(), txn_id, start_ts)
                .await
                .ok(),
            Backend::Cluster(c) => c.status(coordinator, txn_id, start_ts).await,
        }
    }

    /// The policy of outcome questions.
    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.retry().policy
    }
}

/// Most attempts at delivering one `Decide`.
const DECIDE_ATTEMPTS: u32 = 3;
