//! The commit protocol (ARCHITECTURE §4, docs/COMMIT_PATH.md), written once over the
//! backend's verbs for both arms: [`Backend::commit_writes`] is the one call a
//! [`Transaction`](crate::Transaction) makes to commit. Single-partition: one `Commit`.
//! Cross-partition: a `Prepare` on every participant at once, one `Commit` at the
//! coordinator, then the participants' `Decide`s during commit wait. After `CommitUnknown`
//! (when asked to, as `transact` does) it learns the outcome by txn id instead of
//! returning it. It returns once the commit is acknowledged: durable, and commit wait
//! passed.

use std::collections::BTreeMap;

use bytes::Bytes;
use journaldb_adjudicator::{CommitRequest, PrepareRequest, TxnStatus};
use journaldb_proto::{Epoch, Mutation, PartitionId, Timestamp, TxnId};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::partition::partition_of;

impl Backend {
    /// Commits `writes` (key → value, `None` deletes) of transaction `txn_id` reading at
    /// `start_ts`: the whole sequence, commit wait included. With `learn_outcome`, a
    /// `CommitUnknown` is resolved by txn id first: a single-partition commit is re-sent
    /// with `retry: true` (its first outcome, or a fresh decision made binding against the
    /// original still on its way), a cross-partition coordinator is asked `Status` (which
    /// aborts, durably, what it has not committed) and the participants are told; an abort
    /// learned this way is a retryable error; if nothing can be learned, `CommitUnknown`.
    pub(crate) async fn commit_writes(
        &self,
        txn_id: TxnId,
        start_ts: Timestamp,
        writes: &BTreeMap<Bytes, Option<Bytes>>,
        learn_outcome: bool,
    ) -> Result<Timestamp> {
        Commit::new(self, txn_id, start_ts)
            .run(writes, learn_outcome)
            .await
    }
}

/// The partition whose adjudicator decides a commit of `writes` (and keeps its outcome):
/// the one owning the first written key. `None` if nothing is written.
pub(crate) fn coordinator_of(
    writes: &BTreeMap<Bytes, Option<Bytes>>,
    partitions: u32,
) -> Option<PartitionId> {
    let first = writes.keys().next()?;
    Some(partition_of(first, partitions))
}

/// One transaction's commit in progress.
pub(crate) struct Commit<'a> {
    backend: &'a Backend,
    txn_id: TxnId,
    start_ts: Timestamp,
}

impl<'a> Commit<'a> {
    pub(crate) fn new(backend: &'a Backend, txn_id: TxnId, start_ts: Timestamp) -> Self {
        Commit {
            backend,
            txn_id,
            start_ts,
        }
    }

    async fn run(
        &self,
        writes: &BTreeMap<Bytes, Option<Bytes>>,
        learn_outcome: bool,
    ) -> Result<Timestamp> {
        let age = self
            .backend
            .now()
            .latest
            .saturating_duration_since(self.start_ts);
        if age > self.backend.limits().max_txn_age {
            return Err(Error::SnapshotTooOld);
        }
        let n = self.backend.partitions();
        let coordinator = coordinator_of(writes, n)
            .ok_or_else(|| Error::InvalidArgument("nothing to commit".into()))?;
        let mut by_part: BTreeMap<PartitionId, Vec<Mutation>> = BTreeMap::new();
        for (k, v) in writes {
            let m = match v {
                Some(v) => Mutation::put(k.clone(), v.clone()),
                None => Mutation::delete(k.clone()),
            };
            by_part.entry(partition_of(k, n)).or_default().push(m);
        }
        if by_part.len() == 1 {
            let (p, req) = self.single_request(by_part)?;
            let commit_ts = match self.backend.commit(p, &req).await {
                Err(Error::CommitUnknown) if learn_outcome => self.retry_single(p, &req).await,
                other => other,
            }?;
            self.backend.acknowledge(commit_ts).await;
            return Ok(commit_ts);
        }
        // Routing is fixed once: the outcome is asked of the partition that was asked to
        // commit, whatever a later topology says. Both ways acknowledge the commit
        // themselves: the participants' `Decide`s run during commit wait.
        let participants: Vec<PartitionId> = by_part.keys().copied().collect();
        match self.cross(coordinator, by_part).await {
            Err(Error::CommitUnknown) if learn_outcome => {
                self.ask_coordinator(coordinator, &participants).await
            }
            other => other,
        }
    }

    /// The end of a cross-partition commit at `commit_ts`: the participants are told
    /// (each appends `Decided`) while commit wait runs, and the commit is acknowledged once
    /// both are done — a `Decide`'s round trip and fsync overlap commit wait instead of
    /// adding to it, and a client's next transaction finds no key of this one pending.
    async fn decide_and_acknowledge(&self, voted: &[PartitionId], commit_ts: Timestamp) {
        tokio::join!(
            self.decide(voted, Some(commit_ts)),
            self.backend.acknowledge(commit_ts)
        );
    }

    fn single_request(
        &self,
        by_part: BTreeMap<PartitionId, Vec<Mutation>>,
    ) -> Result<(PartitionId, CommitRequest)> {
        let Some((p, mutations)) = by_part.into_iter().next() else {
            return Err(Error::InvalidArgument("nothing to commit".into()));
        };
        let req = CommitRequest {
            txn_id: self.txn_id,
            start_ts: self.start_ts,
            mutations,
            retry: false,
        };
        Ok((p, req))
    }

    /// After `CommitUnknown` on a single-partition commit: re-sends it with `retry: true`
    /// until an answer other than `CommitUnknown` comes back, or the attempts run out. Every
    /// answer to a retry is binding: its first outcome if the original arrived, or a
    /// decision the adjudicator keeps against the original if it is still on its way.
    async fn retry_single(&self, p: PartitionId, req: &CommitRequest) -> Result<Timestamp> {
        let policy = self.backend.policy().clone();
        for attempt in 0..policy.outcome_attempts {
            tokio::time::sleep(policy.outcome_pause(attempt)).await;
            match self.backend.commit_retry(p, req).await {
                // Binding answers: the first outcome, a refusal the adjudicator made
                // binding (a conflict after a durable abort), or its abort mark.
                Ok(commit_ts) => return Ok(commit_ts),
                Err(e @ (Error::Conflict { .. } | Error::Unavailable { .. })) => return Err(e),
                // Anything else (unknown, a transport failure, a refusal that says nothing
                // about the original still on its way): the outcome stays unknown.
                Err(_) => continue,
            }
        }
        Err(Error::CommitUnknown)
    }

    /// After `CommitUnknown` on a cross-partition commit: asks the coordinator's `Status`
    /// until it is decided (asking aborts it, durably, if it has not committed), then
    /// tells every participant the outcome.
    pub(crate) async fn ask_coordinator(
        &self,
        coordinator: PartitionId,
        participants: &[PartitionId],
    ) -> Result<Timestamp> {
        let policy = self.backend.policy().clone();
        for attempt in 0..policy.outcome_attempts {
            match self
                .backend
                .status(coordinator, self.txn_id, self.start_ts)
                .await
            {
                Some(TxnStatus::Committed(commit_ts)) => {
                    self.decide_and_acknowledge(participants, commit_ts).await;
                    return Ok(commit_ts);
                }
                Some(TxnStatus::Aborted) => {
                    self.decide(participants, None).await;
                    return Err(Error::Unavailable {
                        reason: format!("{} did not commit", self.txn_id),
                        retry_after: None,
                    });
                }
                // May have committed and been forgotten: never re-run it.
                Some(TxnStatus::TooOld(_)) => return Err(Error::CommitUnknown),
                Some(TxnStatus::InFlight) | None => {
                    tokio::time::sleep(policy.outcome_pause(attempt)).await;
                }
            }
        }
        Err(Error::CommitUnknown)
    }

    /// Prepares on every participant at once, then the coordinator's `Commit`, then
    /// [`Commit::decide_and_acknowledge`]. Returns once acknowledged.
    async fn cross(
        &self,
        coordinator: PartitionId,
        by_part: BTreeMap<PartitionId, Vec<Mutation>>,
    ) -> Result<Timestamp> {
        let prepares = by_part.iter().map(|(&p, mutations)| {
            let req = PrepareRequest {
                txn_id: self.txn_id,
                start_ts: self.start_ts,
                keys: mutations.iter().map(|m| m.key.clone()).collect(),
                coordinator,
                coordinator_epoch: Epoch::default(),
            };
            async move { (p, self.backend.prepare(p, &req).await) }
        });
        let mut voted = Vec::new();
        let mut votes = Vec::new();
        let mut refused = None;
        for (p, answer) in join_all(prepares.collect()).await {
            match answer {
                Ok(vote_ts) => {
                    voted.push(p);
                    votes.push(vote_ts);
                }
                // The vote may be in the journal: decide it. No `Commit` can exist without
                // every vote, so this is a definite abort.
                Err(e) if e.maybe_committed() => {
                    voted.push(p);
                    refused.get_or_insert(Error::Unavailable {
                        reason: format!(
                            "{p}: the vote's outcome is unknown; nothing was committed"
                        ),
                        retry_after: None,
                    });
                }
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        if let Some(e) = refused {
            self.abort(&voted).await;
            return Err(e);
        }
        let mutations: Vec<Mutation> = by_part.values().flatten().cloned().collect();
        let participants: Vec<PartitionId> = by_part.keys().copied().collect();
        let committed = self
            .backend
            .commit_prepared(
                coordinator,
                self.txn_id,
                self.start_ts,
                &votes,
                &mutations,
                &participants,
            )
            .await;
        let commit_ts = match committed {
            Ok(commit_ts) => commit_ts,
            // The `Commit` may be durable: the outcome is unknown, decide nothing.
            Err(e) if e.maybe_committed() => return Err(e),
            Err(e) => {
                self.abort(&voted).await;
                return Err(e);
            }
        };
        // The commit is durable already (docs/COMMIT_PATH.md, paths 2 and 4).
        self.decide_and_acknowledge(&voted, commit_ts).await;
        Ok(commit_ts)
    }

    async fn abort(&self, voted: &[PartitionId]) {
        self.decide(voted, None).await;
    }

    /// Tells every participant that voted the outcome (τc, or `None` for abort),
    /// concurrently, with a few retries; a participant that still does not hear resolves
    /// its vote itself after the vote timeout, by asking the coordinator.
    async fn decide(&self, voted: &[PartitionId], outcome: Option<Timestamp>) {
        self.backend.decide_all(voted, self.txn_id, outcome).await;
    }
}

/// Runs `futures` concurrently on the calling task (no spawn: dropping the caller drops
/// them); their outputs, in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut running: Vec<_> = futures.into_iter().map(Box::pin).map(Some).collect();
    let mut outputs: Vec<Option<F::Output>> = running.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in running.iter_mut().zip(outputs.iter_mut()) {
            let Some(future) = slot else { continue };
            match future.as_mut().poll(cx) {
                std::task::Poll::Ready(out) => {
                    *output = Some(out);
                    *slot = None;
                }
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|out| out.expect("every future finished"))
        .collect()
}
