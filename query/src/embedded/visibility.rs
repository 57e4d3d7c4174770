//! What a commit waits for before it is acknowledged, and where a new snapshot reads
//! (ARCHITECTURE §3, §6; docs/EMBEDDING.md "Snapshots at the watermark"): commit wait on
//! the clock, then storage's watermark at τc, so that the next snapshot — taken at the
//! watermark, floored by the newest acknowledged τ — sees every acknowledged commit and
//! its reads wait for nothing. Also the embedded single-partition commit, which learns of
//! its durability from that same watermark.

use std::sync::atomic::Ordering;
use std::time::Duration;

use journaldb_adjudicator::CommitRequest;
use journaldb_proto::{Clock, PartitionId, Timestamp};

use super::Inner;
use crate::error::Result;

impl Inner {
    /// What happens between a commit's durability and its acknowledgement: commit wait
    /// (`now().earliest > ts`; nanoseconds with the embedded clock), then — best effort,
    /// bounded by the read timeout — until storage's watermark reaches `ts`, so that the
    /// next [`Inner::start_ts`] (usually the watermark) needs no wait to see it. Then `ts`
    /// becomes a lower bound for every later start timestamp: real-time order holds even if
    /// storage lags.
    pub(crate) async fn acknowledge(&self, ts: Timestamp) {
        journaldb_adjudicator::commit_wait(&self.clock, ts).await;
        self.wait_applied(ts).await;
        self.acknowledged.fetch_max(ts.as_nanos(), Ordering::AcqRel);
    }

    /// Waits, bounded by the read timeout, until storage's watermark reaches `ts` (every
    /// journal promising `ts` first); gives up at once if a journal fails, as storage then
    /// cannot pass it. Whether storage has everything ≤ `ts`.
    async fn wait_applied(&self, ts: Timestamp) -> bool {
        if self.node.watermark() >= ts {
            return true;
        }
        if self.promise_all(ts).is_err() {
            return false;
        }
        // In slices, to notice a failed journal.
        let slice = Duration::from_millis(10);
        let slices = self.options.read_timeout.as_millis() / slice.as_millis();
        for _ in 0..slices {
            let waited = self.node.wait_for(ts, tokio::time::sleep(slice)).await;
            let lagging = matches!(
                waited,
                Err(journaldb_storage::Error::WatermarkTimeout { .. })
            );
            if !lagging || self.parts.iter().any(|p| p.journal().is_poisoned()) {
                break;
            }
        }
        self.node.watermark() >= ts
    }

    /// A single-partition commit, woken once: when storage has applied it. Storage
    /// applies only durable records and counts a promise only once it has applied
    /// everything handed out before it, so a watermark at `ts` means the `Commit` record
    /// is durable; only if storage cannot get there (a failed journal, or storage lagging
    /// past the read timeout) is durability awaited on its own.
    pub(crate) async fn commit_single(
        &self,
        p: PartitionId,
        req: &CommitRequest,
    ) -> Result<Timestamp> {
        let part = self.part(p);
        let refusal = crate::error::refusal;
        let (ts, queued) = part
            .commit_queued(self.clock.now(), req)
            .await
            .map_err(refusal)?;
        if let Some(submitted) = queued {
            let applied = self.wait_applied(ts).await;
            part.finish_commit(req.txn_id, submitted, applied)
                .await
                .map_err(refusal)?;
        }
        Ok(ts)
    }

    /// The snapshot of a new transaction: every commit acknowledged so far is at or below
    /// it. Storage's watermark when it is that recent (reads then wait for nothing), else
    /// the newest acknowledged τ; `now` if either is older than half the longest
    /// transaction (an idle database), so the snapshot cannot become too old while read.
    pub(crate) fn start_ts(&self) -> Timestamp {
        let acknowledged = Timestamp::from_nanos(self.acknowledged.load(Ordering::Acquire));
        let ts = self.node.watermark().max(acknowledged);
        let now = self.clock.now().latest;
        if now.saturating_duration_since(ts) > self.options.limits.max_txn_age / 2 {
            return now;
        }
        ts
    }

    /// Makes every journal promise `ts` to storage: no record with τ ≤ `ts` beyond those
    /// already handed out. In memory — a heartbeat without a write or fsync: the storage
    /// node is in this process, and after a crash every new τ lies above everything
    /// storage was promised (the clock restarts above the stored watermark).
    pub(crate) fn promise_all(&self, ts: Timestamp) -> Result<()> {
        for part in &self.parts {
            if let Some(through) = part.promise(ts) {
                self.node.promise(part.id(), through, ts)?;
            }
        }
        Ok(())
    }

    /// Makes every journal promise `ts` and waits until storage has everything ≤ `ts`.
    pub(crate) async fn read_barrier(&self, ts: Timestamp) -> Result<()> {
        if self.node.watermark() >= ts {
            return Ok(()); // the usual case: snapshots are taken at the watermark
        }
        self.promise_all(ts)?;
        let deadline = tokio::time::sleep(self.options.read_timeout);
        Ok(self.node.wait_for(ts, deadline).await?)
    }
}
