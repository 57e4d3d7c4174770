//! [`StorageNode`]: a version store fed by the crossbar, with reads that wait for the
//! watermark (ARCHITECTURE §6).
//!
//! Tailers (one per journal) call [`StorageNode::ingest`] with each record in Lsn order;
//! released batches are written with their applied positions and the new watermark, so a
//! restart resumes from [`StorageNode::resume_positions`], not from the journals' start.
//! A read at τ waits until the watermark reaches τ, or its deadline passes
//! ([`Error::WatermarkTimeout`], retryable) — it never returns an incomplete answer.
//! Reads below the garbage-collection horizon fail with [`Error::SnapshotTooOld`]; the
//! horizon is checked before and after each read, so a read that overlapped a raise of the
//! horizon (and so maybe a compaction below it) is refused rather than answered wrongly.
//! [`StorageNode::checkpoint`] raises the horizon, makes the store durable and lets the engine
//! collect garbage; [`StorageNode::maintain`] does so at a retention cutoff and remembers
//! the durable checkpoints journals may truncate to ([`crate::retention`]). It does not own
//! tailing (transport differs between embedded and cluster) or deciding when to checkpoint.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use bytes::Bytes;
use journaldb_proto::{Lsn, PartitionId, Timestamp, pb};
use journaldb_sync::DurablePoint;
use parking_lot::Mutex;

use crate::crossbar::Crossbar;
use crate::encoding::DATA_PREFIX;
use crate::error::{Error, Result};
use crate::retention::{Checkpoint, CheckpointHistory};
use crate::store::{Engine, ScanPage, ScanRange, VersionStore};

/// A version store kept up to date from the journals.
pub struct StorageNode<S> {
    store: S,
    crossbar: Mutex<Crossbar>,
    /// `end() − 1` is the watermark in nanoseconds: "durable" here means "complete".
    watermark: DurablePoint,
    /// Reads below this (nanoseconds) are refused; only raised.
    gc_horizon: AtomicU64,
    /// Durable checkpoints, for journal truncation (empty for a store that is not durable).
    history: Mutex<CheckpointHistory>,
    /// Held through a whole maintenance round (checkpoint, then record), so rounds that
    /// race (the maintenance loop and `Database::compact`) record in watermark order.
    maintaining: Mutex<()>,
    /// The planted bug of [`StorageNode::plant_release_before_write`].
    release_before_write: bool,
}

impl<S> std::fmt::Debug for StorageNode<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageNode")
            .field("watermark_end", &self.watermark.end())
            .finish_non_exhaustive()
    }
}

impl<S: Engine> StorageNode<S> {
    /// A node over `store` for `journals`, resuming from the positions and watermark
    /// stored in it.
    pub fn open(store: S, journals: &[PartitionId]) -> Result<Self> {
        let applied = store.applied()?;
        let watermark = store.watermark()?;
        let gc_horizon = store.gc_horizon()?;
        store.collect_garbage(gc_horizon)?;
        // What is on disk at open is a checkpoint (the engine writes no log of its own).
        let opened_at = store.is_durable().then(|| Checkpoint {
            applied: applied.clone(),
            watermark,
            gc_horizon,
        });
        let crossbar = Crossbar::new(
            journals
                .iter()
                .map(|j| (*j, applied.get(j).copied().unwrap_or(Lsn::ZERO))),
            watermark,
        );
        Ok(StorageNode {
            store,
            crossbar: Mutex::new(crossbar),
            watermark: DurablePoint::new(watermark.as_nanos().saturating_add(1)),
            gc_horizon: AtomicU64::new(gc_horizon.as_nanos()),
            history: Mutex::new(CheckpointHistory::new(opened_at)),
            maintaining: Mutex::new(()),
            release_before_write: false,
        })
    }

    /// Plants a bug for the simulation's checkers: batches are forgotten before the store
    /// writes them (hardening defect 3). Never call outside tests and simulation.
    #[doc(hidden)]
    pub fn plant_release_before_write(mut self) -> Self {
        self.release_before_write = true;
        self
    }

    /// The Lsn each journal must be read from next.
    pub fn resume_positions(&self) -> Result<BTreeMap<PartitionId, Lsn>> {
        let crossbar = self.crossbar.lock();
        let applied = self.store.applied()?;
        Ok(crossbar
            .journals()
            .map(|j| (j, applied.get(&j).copied().unwrap_or(Lsn::ZERO).next()))
            .collect())
    }

    /// The Lsn `journal`'s feed must push next (after records pushed but not yet applied);
    /// `None` for a journal this node does not merge.
    pub fn next_lsn(&self, journal: PartitionId) -> Option<Lsn> {
        self.crossbar.lock().next_lsn(journal)
    }

    /// Every version with τ ≤ this is stored.
    pub fn watermark(&self) -> Timestamp {
        Timestamp::from_nanos(self.watermark.end().saturating_sub(1))
    }

    /// Feeds the next record of `journal`; writes what the watermark releases.
    pub fn ingest(&self, journal: PartitionId, lsn: Lsn, record: &pb::Record) -> Result<()> {
        self.ingest_many(journal, [(lsn, record)])
    }

    /// Feeds the next records of `journal`, in Lsn order, then writes what the watermark
    /// releases in one batch (one engine write however many records). If that write fails
    /// ([`Error::Io`]) the records are still taken — the feed continues after them — and
    /// are written by the next successful release; the watermark waits for them.
    pub fn ingest_many<'a>(
        &self,
        journal: PartitionId,
        records: impl IntoIterator<Item = (Lsn, &'a pb::Record)>,
    ) -> Result<()> {
        let mut crossbar = self.crossbar.lock();
        let mut pushed = Ok(());
        for (lsn, record) in records {
            pushed = crossbar.push(journal, lsn, record);
            if pushed.is_err() {
                break;
            }
        }
        // Records before a bad one are applied; the error stops the feed after them. A
        // broken invariant is reported before a failed write: a feed retries the latter.
        let released = self.release(&mut crossbar);
        pushed?;
        released
    }

    /// [`StorageNode::ingest_many`] for a feed: if the store fails to write
    /// ([`Error::Io`]), the records are kept and the write is retried every `pause` until
    /// it succeeds — a feed never skips a record, and never gives up on a store that may
    /// recover. Other errors (a broken journal invariant, a closed node) are returned.
    pub async fn ingest_retrying<'a>(
        &self,
        journal: PartitionId,
        records: impl IntoIterator<Item = (Lsn, &'a pb::Record)>,
        pause: std::time::Duration,
    ) -> Result<()> {
        let mut outcome = self.ingest_many(journal, records);
        while let Err(Error::Io(_)) = outcome {
            tokio::time::sleep(pause).await;
            outcome = self.retry_release();
        }
        outcome
    }

    /// An in-memory promise of `journal`'s writer in this process (see [`Crossbar::promise`]):
    /// no record with τ ≤ `ts` after Lsn `through`.
    pub fn promise(&self, journal: PartitionId, through: Lsn, ts: Timestamp) -> Result<()> {
        let mut crossbar = self.crossbar.lock();
        crossbar.promise(journal, through, ts)?;
        self.release(&mut crossbar)
    }

    /// Writes what the watermark releases. Called under the crossbar lock, so batches reach
    /// the store in order. If the store fails, the crossbar keeps the records and the
    /// watermark stays where it was: the next call (a later record, a promise, or
    /// [`StorageNode::retry_release`]) writes them again — nothing is skipped.
    fn release(&self, crossbar: &mut Crossbar) -> Result<()> {
        // Closed (under this same lock): nothing more is stored or published.
        if self.watermark.is_halted() {
            return Err(Error::Closed);
        }
        let Some((batch, release)) = crossbar.batch() else {
            return Ok(());
        };
        let watermark = batch.watermark.unwrap_or(Timestamp::ZERO);
        if self.release_before_write {
            crossbar.released(release);
            self.store.write(batch)?;
        } else {
            self.store.write(batch)?;
            crossbar.released(release);
        }
        let end = watermark.as_nanos().saturating_add(1);
        // The batch's watermark never falls behind the one published: the crossbar releases
        // in τ order and only after a write succeeded.
        assert!(
            end >= self.watermark.end(),
            "storage watermark would move back from {} to {watermark}",
            self.watermark()
        );
        if end > self.watermark.end() {
            self.watermark.advance(end);
        }
        Ok(())
    }

    /// Writes the records a failed store write left pending (see [`StorageNode::ingest`]):
    /// what a feed calls, after a pause, when ingesting failed with [`Error::Io`].
    pub fn retry_release(&self) -> Result<()> {
        let mut crossbar = self.crossbar.lock();
        self.release(&mut crossbar)
    }

    /// Waits until the watermark reaches `at`, or `deadline` completes first.
    pub async fn wait_for(&self, at: Timestamp, deadline: impl Future<Output = ()>) -> Result<()> {
        let mut wait = pin!(self.watermark.wait_durable(at.as_nanos()));
        let mut deadline = pin!(deadline);
        std::future::poll_fn(|cx| {
            // Biased: a watermark that is already there wins over an expired deadline.
            if let Poll::Ready(done) = wait.as_mut().poll(cx) {
                return Poll::Ready(done.map_err(|_| Error::Closed));
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Error::WatermarkTimeout {
                    at,
                    watermark: self.watermark(),
                }));
            }
            Poll::Pending
        })
        .await
    }

    /// Reads below this fail with [`Error::SnapshotTooOld`].
    pub fn gc_horizon(&self) -> Timestamp {
        Timestamp::from_nanos(self.gc_horizon.load(Ordering::Acquire))
    }

    /// One page of a copy of this replica's versions, for a new replica ([`crate::copy`]):
    /// the versions after `after`, as stored, about `max_bytes` of them (at least one),
    /// and the applied positions and watermark, read together under the crossbar's lock
    /// before them: the pages from then on hold at least every version the first page's
    /// positions cover that is not below the horizon each page names.
    pub fn copy_page(&self, after: &[u8], max_bytes: usize) -> Result<pb::CopyReply> {
        let mut reply = pb::CopyReply::default();
        {
            let _released = self.crossbar.lock();
            reply.watermark = self.store.watermark()?.as_nanos();
            reply.applied = self
                .store
                .applied()?
                .into_iter()
                .map(|(p, lsn)| pb::JournalPosition {
                    partition: p.get(),
                    lsn: lsn.get(),
                })
                .collect();
        }
        let mut from = if after.is_empty() {
            vec![DATA_PREFIX]
        } else {
            let mut next = after.to_vec();
            next.push(0);
            next
        };
        let mut bytes = 0;
        loop {
            match self.store.seek_ge(&from)? {
                Some((key, value)) if key.first() == Some(&DATA_PREFIX) => {
                    let size = key.len() + value.len();
                    if !reply.versions.is_empty() && bytes + size > max_bytes {
                        break;
                    }
                    bytes += size;
                    from.clone_from(&key);
                    from.push(0);
                    reply.versions.push(pb::CopyVersion {
                        key: Bytes::from(key),
                        value: Bytes::from(value),
                    });
                }
                _ => {
                    reply.done = true;
                    break;
                }
            }
        }
        reply.gc_horizon = self.gc_horizon().as_nanos();
        Ok(reply)
    }

    fn check_horizon(&self, at: Timestamp) -> Result<()> {
        let horizon = self.gc_horizon();
        if at < horizon {
            return Err(Error::SnapshotTooOld { at, horizon });
        }
        Ok(())
    }

    /// Runs `read` (a read of the store as of `at`, after the caller waited for the
    /// watermark) unless the horizon is, or rises during it, above `at`.
    pub fn read_at<T>(&self, at: Timestamp, read: impl FnOnce(&S) -> Result<T>) -> Result<T> {
        self.check_horizon(at)?;
        let out = read(&self.store)?;
        self.check_horizon(at)?;
        Ok(out)
    }

    /// A checkpoint: raises the garbage-collection horizon to `horizon` (clamped to the
    /// watermark; never lowered), makes it and everything stored so far durable, and only
    /// then lets the engine collect below it. Returns what is now durable. Blocks while the
    /// engine flushes.
    pub fn checkpoint(&self, horizon: Timestamp) -> Result<Checkpoint> {
        let (applied, watermark) = {
            let _writes = self.crossbar.lock();
            (self.store.applied()?, self.store.watermark()?)
        };
        let horizon = horizon.min(watermark).max(self.gc_horizon());
        // Refuse new reads below it first; reads in progress re-check when they finish.
        self.gc_horizon
            .fetch_max(horizon.as_nanos(), Ordering::AcqRel);
        self.store.write_gc_horizon(horizon)?;
        self.store.flush()?;
        self.store.collect_garbage(horizon)?;
        Ok(Checkpoint {
            applied,
            watermark,
            gc_horizon: horizon,
        })
    }

    /// A maintenance round (§6 GC, §5 truncation): a [checkpoint](StorageNode::checkpoint)
    /// with the garbage-collection horizon raised to the retention `cutoff` (`now −
    /// retention`), remembered for [`StorageNode::checkpoint_before`] if the store is
    /// durable. Blocks while the engine flushes.
    pub fn maintain(&self, cutoff: Timestamp) -> Result<Checkpoint> {
        let _one_round_at_a_time = self.maintaining.lock();
        let checkpoint = self.checkpoint(cutoff)?;
        if self.store.is_durable() {
            self.history.lock().record(checkpoint.clone(), cutoff);
        }
        Ok(checkpoint)
    }

    /// The newest durable checkpoint whose records are all older than `before` (see
    /// [`crate::retention`]): journals may drop their records up to its positions, as far
    /// as this node is concerned. `None` if there is none, or the store is not durable.
    pub fn checkpoint_before(&self, before: Timestamp) -> Option<Checkpoint> {
        self.history.lock().before(before).cloned()
    }

    /// `key` as of `at`, once the watermark reaches `at`.
    pub async fn get(
        &self,
        key: &[u8],
        at: Timestamp,
        deadline: impl Future<Output = ()>,
    ) -> Result<Option<Bytes>> {
        self.check_horizon(at)?;
        self.wait_for(at, deadline).await?;
        self.read_at(at, |s| s.get(key, at))
    }

    /// A scan page as of `at`, once the watermark reaches `at`.
    pub async fn scan(
        &self,
        range: &ScanRange,
        at: Timestamp,
        limit: usize,
        reverse: bool,
        deadline: impl Future<Output = ()>,
    ) -> Result<ScanPage> {
        self.check_horizon(at)?;
        self.wait_for(at, deadline).await?;
        self.read_at(at, |s| s.scan(range, at, limit, reverse))
    }

    /// Stops serving: waiting reads fail with [`Error::Closed`], and so does every later
    /// ingest (a feed still running stops there).
    pub fn close(&self) {
        let _ordered = self.crossbar.lock();
        self.watermark.halt();
    }

    /// The store, for checkpoints and inspection.
    pub fn store(&self) -> &S {
        &self.store
    }
}
