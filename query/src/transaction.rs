//! [`Transaction`]: buffered writes, reads at the snapshot merged with them, and `commit`:
//! one call to the backend ([`Backend::commit_writes`], `commit.rs`, where the protocol
//! lives); [`transact`], the retry loop around a transaction.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use journaldb_proto::{LimitKind, Limits, Timestamp, TxnId};
use journaldb_storage::{ScanPage, ScanRange};

use crate::backend::Backend;
use crate::error::{Error, Result};

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
    #[cfg(test)]
    pub(crate) fn coordinator(&self) -> Option<journaldb_proto::PartitionId> {
        crate::commit::coordinator_of(&self.writes, self.backend.partitions())
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
        let commit_ts = self
            .backend
            .commit_writes(self.txn_id, self.start_ts, &self.writes, learn_outcome)
            .await?;
        Ok(CommitInfo { commit_ts })
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
