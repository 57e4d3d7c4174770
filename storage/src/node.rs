//! [`StorageNode`]: a version store fed by the crossbar, with reads that wait for the
//! watermark (ARCHITECTURE §6).
//!
//! Tailers (one per journal) call [`StorageNode::ingest`] with each record in Lsn order;
//! released batches are written with their applied positions and the new watermark, so a
//! restart resumes from [`StorageNode::resume_positions`], not from the journals' start.
//! A read at τ waits until the watermark reaches τ, or its deadline passes
//! ([`Error::WatermarkTimeout`], retryable) — it never returns an incomplete answer.
//! It does not own tailing (transport differs between embedded and cluster) or GC.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use bytes::Bytes;
use journaldb_proto::{Lsn, PartitionId, Timestamp, pb};
use journaldb_sync::DurablePoint;
use parking_lot::Mutex;

use crate::crossbar::Crossbar;
use crate::store::{Error, Result, ScanPage, ScanRange, VersionStore};

/// A version store kept up to date from the journals.
pub struct StorageNode<S> {
    store: S,
    crossbar: Mutex<Crossbar>,
    /// `end() − 1` is the watermark in nanoseconds: "durable" here means "complete".
    watermark: DurablePoint,
}

impl<S> std::fmt::Debug for StorageNode<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageNode")
            .field("watermark_end", &self.watermark.end())
            .finish_non_exhaustive()
    }
}

impl<S: VersionStore> StorageNode<S> {
    /// A node over `store` for `journals`, resuming from the positions and watermark
    /// stored in it.
    pub fn open(store: S, journals: &[PartitionId]) -> Result<Self> {
        let applied = store.applied()?;
        let watermark = store.watermark()?;
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
        })
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

    /// Every version with τ ≤ this is stored.
    pub fn watermark(&self) -> Timestamp {
        Timestamp::from_nanos(self.watermark.end().saturating_sub(1))
    }

    /// Feeds the next record of `journal`; writes what the watermark releases.
    pub fn ingest(&self, journal: PartitionId, lsn: Lsn, record: &pb::Record) -> Result<()> {
        let mut crossbar = self.crossbar.lock();
        crossbar.push(journal, lsn, record)?;
        if let Some(batch) = crossbar.drain() {
            let watermark = batch.watermark.unwrap_or(Timestamp::ZERO);
            // Written under the crossbar lock: batches reach the store in order.
            self.store.write(batch)?;
            let end = watermark.as_nanos().saturating_add(1);
            if end > self.watermark.end() {
                self.watermark.advance(end);
            }
        }
        Ok(())
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

    /// `key` as of `at`, once the watermark reaches `at`.
    pub async fn get(
        &self,
        key: &[u8],
        at: Timestamp,
        deadline: impl Future<Output = ()>,
    ) -> Result<Option<Bytes>> {
        self.wait_for(at, deadline).await?;
        self.store.get(key, at)
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
        self.wait_for(at, deadline).await?;
        self.store.scan(range, at, limit, reverse)
    }

    /// Stops serving: waiting reads fail with [`Error::Closed`].
    pub fn close(&self) {
        self.watermark.halt();
    }

    /// The store, for checkpoints and inspection.
    pub fn store(&self) -> &S {
        &self.store
    }
}
