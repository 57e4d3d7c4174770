//! [`Transaction`]: buffered writes, reads at the snapshot merged with them, and the two
//! commit paths (single-partition; cross-partition: prepare, one `Commit`, decide).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use journaldb_adjudicator::{CommitRequest, PrepareRequest, TxnStatus};
use journaldb_proto::{Epoch, LimitKind, Limits, Mutation, PartitionId, Timestamp, TxnId};
use journaldb_storage::{ScanPage, ScanRange};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::partition::partition_of;

/// What a successful commit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// τc; for a read-only transaction, its snapshot τs.
    pub commit_ts: Timestamp,
}

/// An interactive snapshot-isolation transaction. Reads see the snapshot at its start plus
/// its own writes; writes are buffered until [`Transaction::commit`].
pub struct Transaction {
    backend: Backend,
    txn_id: TxnId,
    start_ts: Timestamp,
    writes: BTreeMap<Bytes, Option<Bytes>>,
    write_bytes: usize,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("txn_id", &self.txn_id)
            .field("start_ts", &self.start_ts)
            .field("writes", &self.writes.len())
            .finish()
    }
}

impl Transaction {
    /// A new transaction of `backend` reading at `start_ts`, with a fresh id.
    pub(crate) fn at(backend: Backend, start_ts: Timestamp) -> Self {
        let txn_id = backend.txn_id();
        Transaction::new(backend, txn_id, start_ts)
    }

    pub(crate) fn new(backend: Backend, txn_id: TxnId, start_ts: Timestamp) -> Self {
        Transaction {
            backend,
            txn_id,
            start_ts,
            writes: BTreeMap::new(),
            write_bytes: 0,
        }
    }

    /// The snapshot this transaction reads at.
    pub fn start_ts(&self) -> Timestamp {
        self.start_ts
    }

    /// This transaction's id: its commit is idempotent by it, and its outcome can be asked
    /// by it after `CommitUnknown`.
    pub fn txn_id(&self) -> TxnId {
        self.txn_id
    }

    /// The partition whose adjudicator decides this transaction's commit (and keeps its
    /// outcome): the one owning its first written key. `None` for a read-only transaction.
    pub(crate) fn coordinator(&self) -> Option<PartitionId> {
        let first = self.writes.keys().next()?;
        Some(partition_of(first, self.backend.partitions()))
    }

    /// The value of `key`: this transaction's own write if any, else the snapshot's.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let key = key.as_ref();
        self.backend.limits().check_key(key)?;
        if let Some(w) = self.writes.get(key) {
            return Ok(w.clone());
        }
        self.backend.get(key, self.start_ts).await
    }

    /// At most `limit` visible rows of `range` as of the snapshot, with this transaction's
    /// own writes merged in (its puts shown, its deletes hidden), ascending or descending,
    /// and the rest of the range to resume from when the page is full.
    pub async fn scan(&self, range: &ScanRange, limit: usize, reverse: bool) -> Result<ScanPage> {
        if limit == 0 {
            return Err(Error::InvalidArgument("scan limit must be positive".into()));
        }
        let in_range = |k: &Bytes| {
            k[..] >= range.start[..] && range.end.as_ref().is_none_or(|e| k[..] < e[..])
        };
        // Own writes in the range, in scan order.
        let mut own: VecDeque<(Bytes, Option<Bytes>)> = self
            .writes
            .iter()
            .filter(|(k, _)| in_range(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if reverse {
            own = own.into_iter().rev().collect();
        }
        // `a` comes before `b` in scan order.
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        let mut rows = Vec::new();
        let mut cursor = Some(range.clone());
        while rows.len() < limit {
            let (stored, resume) = match &cursor {
                Some(r) => {
                    let page = self.backend.scan(r, self.start_ts, limit, reverse).await?;
                    (page.rows, page.resume)
                }
                None => (Vec::new(), None),
            };
            // Own writes up to the last stored key are placed; past it, only once storage
            // is exhausted (there may be stored keys before them on the next page).
            let boundary = resume.as_ref().and(stored.last().map(|(k, _)| k.clone()));
            let mut stored = stored.into_iter().peekable();
            loop {
                let next_own = own
                    .front()
                    .filter(|(k, _)| boundary.as_ref().is_none_or(|b| !before(b, k)));
                let take_own = match (stored.peek(), next_own) {
                    (None, None) => break,
                    (Some(_), None) => false,
                    (None, Some(_)) => true,
                    (Some((sk, _)), Some((ok, _))) => !before(sk, ok),
                };
                let (key, value) = if take_own {
                    let (k, v) = own.pop_front().expect("peeked");
                    if stored.peek().is_some_and(|(sk, _)| *sk == k) {
                        stored.next(); // our write shadows the stored version
                    }
                    (k, v)
                } else {
                    let (k, v) = stored.next().expect("peeked");
                    (k, Some(v))
                };
                if let Some(value) = value {
                    rows.push((key, value));
                    if rows.len() == limit {
                        break;
                    }
                }
            }
            if rows.len() == limit {
                break;
            }
            cursor = resume;
            if cursor.is_none() && own.is_empty() {
                break;
            }
        }
        let resume = match rows.last() {
            Some((last, _)) if rows.len() == limit => {
                let rest = if reverse {
                    ScanRange {
                        start: range.start.clone(),
                        end: Some(last.clone()),
                    }
                } else {
                    let mut after = last.to_vec();
                    after.push(0);
                    ScanRange {
                        start: Bytes::from(after),
                        end: range.end.clone(),
                    }
                };
                // Nothing may remain; the caller learns that from an empty next page.
                Some(rest)
            }
            _ => None,
        };
        Ok(ScanPage { rows, resume })
    }

    /// Sets `key` to `value` when the transaction commits.
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        let (key, value) = (key.into(), value.into());
        self.backend.limits().check_value(&value)?;
        self.write(key, Some(value))
    }

    /// Deletes `key` when the transaction commits.
    pub fn delete(&mut self, key: impl Into<Bytes>) -> Result<()> {
        self.write(key.into(), None)
    }

    fn write(&mut self, key: Bytes, value: Option<Bytes>) -> Result<()> {
        let limits = self.backend.limits();
        limits.check_key(&key)?;
        let added = key.len() + value.as_ref().map_or(0, Bytes::len);
        let replaced = self
            .writes
            .get(&key)
            .map_or(0, |v| key.len() + v.as_ref().map_or(0, Bytes::len));
        let bytes = self.write_bytes - replaced + added;
        Limits::check(LimitKind::TxnBytes, limits.max_txn_bytes, bytes)?;
        let count = self.writes.len() + usize::from(!self.writes.contains_key(&key));
        Limits::check(LimitKind::TxnMutations, limits.max_txn_mutations, count)?;
        self.write_bytes = bytes;
        self.writes.insert(key, value);
        Ok(())
    }

    /// Discards the transaction's writes.
    pub fn rollback(self) {}

    /// Commits. A read-only transaction commits locally and never aborts.
    ///
    /// `CommitUnknown` means the commit may or may not have happened (a reply was lost, a
    /// journal failed mid-append); `transact` then learns the outcome by the transaction's
    /// id instead of returning it.
    pub async fn commit(self) -> Result<CommitInfo> {
        self.commit_with(false).await
    }

    /// [`Transaction::commit`], learning the outcome after `CommitUnknown` (what
    /// `transact` does): a single-partition commit is re-sent with `retry: true` (its first
    /// outcome, or a fresh decision made binding against the original still on its way),
    /// a cross-partition coordinator is asked `Status` (which aborts, durably, what it has
    /// not committed), and the participants are told. Committed is acknowledged after commit
    /// wait like any commit; an abort learned this way is a retryable error; if nothing can
    /// be learned, `CommitUnknown`.
    pub(crate) async fn commit_learning_outcome(self) -> Result<CommitInfo> {
        self.commit_with(true).await
    }

    async fn commit_with(self, learn_outcome: bool) -> Result<CommitInfo> {
        if self.writes.is_empty() {
            return Ok(CommitInfo {
                commit_ts: self.start_ts,
            });
        }
        let age = self
            .backend
            .now()
            .latest
            .saturating_duration_since(self.start_ts);
        if age > self.backend.limits().max_txn_age {
            return Err(Error::SnapshotTooOld);
        }
        let n = self.backend.partitions();
        let mut by_part: BTreeMap<PartitionId, Vec<Mutation>> = BTreeMap::new();
        for (k, v) in &self.writes {
            let m = match v {
                Some(v) => Mutation::put(k.clone(), v.clone()),
                None => Mutation::delete(k.clone()),
            };
            by_part.entry(partition_of(k, n)).or_default().push(m);
        }
        let committed = if by_part.len() == 1 {
            let (p, req) = self.single_request(by_part)?;
            match self.backend.commit(p, &req).await {
                Err(Error::CommitUnknown) if learn_outcome => self.retry_single(p, &req).await,
                other => other,
            }
        } else {
            // Routing is fixed once: the outcome is asked of the partition that was asked
            // to commit, whatever a later topology says.
            let participants: Vec<PartitionId> = by_part.keys().copied().collect();
            let coordinator = self
                .coordinator()
                .ok_or_else(|| Error::InvalidArgument("nothing to commit".into()))?;
            // Both ways acknowledge the commit themselves: the participants' `Decide`s run
            // during commit wait.
            let commit_ts = match self.commit_cross(coordinator, by_part).await {
                Err(Error::CommitUnknown) if learn_outcome => {
                    self.ask_coordinator(coordinator, &participants).await
                }
                other => other,
            }?;
            return Ok(CommitInfo { commit_ts });
        };
        let commit_ts = committed?;
        self.backend.acknowledge(commit_ts).await;
        Ok(CommitInfo { commit_ts })
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
    /// [`Transaction::decide_and_acknowledge`]. Returns once acknowledged.
    async fn commit_cross(
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

/// `transact` for both backends: runs `f` in a transaction and commits it, re-running it on
/// retryable errors with full-jitter backoff while the retry budget allows; after
/// `CommitUnknown`, learns the outcome by txn id (re-sending a single-partition commit,
/// asking a cross-partition coordinator) and never re-runs a transaction that may have
/// committed: every abort it re-runs after is binding at the adjudicator.
pub(crate) async fn transact<T>(
    backend: Backend,
    mut f: impl AsyncFnMut(&mut Transaction) -> Result<T>,
) -> Result<T> {
    let mut attempt = 1;
    let mut fresh = false;
    loop {
        // After a conflict, the retry reads at `now`, which includes the conflicting
        // write (it committed at or below our old τc < now): reads then wait for it to
        // be applied instead of conflicting with it again.
        let start_ts = if fresh {
            backend.now().latest
        } else {
            backend.start_ts()
        };
        let mut tx = Transaction::at(backend.clone(), start_ts);
        let outcome = match f(&mut tx).await {
            // After `CommitUnknown` the commit learns the outcome by txn id: the closure is
            // re-run only for a definite, binding abort.
            Ok(value) => tx.commit_learning_outcome().await.map(|_| value),
            Err(e) => Err(e),
        };
        let retry = backend.retry();
        match outcome {
            Ok(value) => {
                retry.budget.on_success();
                return Ok(value);
            }
            Err(e)
                if e.is_retryable()
                    && attempt < retry.policy.max_attempts
                    && retry.budget.try_take() =>
            {
                fresh = matches!(e, Error::Conflict { .. } | Error::SnapshotTooOld);
                let pause = retry.policy.backoff(attempt, &mut *retry.rng.lock());
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
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
