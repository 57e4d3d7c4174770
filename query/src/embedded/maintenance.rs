//! Maintenance of an embedded database (see [`crate::Database`]'s module docs): every
//! checkpoint interval, or after `checkpoint_bytes` of journal growth, the adjudicators
//! forget old conflicts, idle journals promise the current time, storage checkpoints and
//! collects garbage below the retention horizon, and the journals drop what every
//! checkpoint older than the retention window covers. At every tick (≤ 100 ms), votes left
//! undecided past the vote timeout — a `commit()` future dropped between its prepares and
//! its decision — are resolved by asking their (local) coordinators.

use std::sync::Weak;
use std::time::Duration;

use journaldb_proto::Clock;
use journaldb_storage::retention;

use super::Inner;
use crate::error::Result;

/// The maintenance loop: a round every checkpoint interval, or sooner once the journals
/// grew by the checkpoint bytes, while the database is open.
pub(crate) async fn maintain(inner: Weak<Inner>) {
    let Some((interval, bytes)) = inner
        .upgrade()
        .map(|i| (i.options.checkpoint_interval, i.options.checkpoint_bytes))
    else {
        return;
    };
    let tick = interval.min(Duration::from_millis(100));
    let mut since_last_round = Duration::ZERO;
    let mut written_at_last_round = 0;
    loop {
        tokio::time::sleep(tick).await;
        since_last_round += tick;
        let Some(inner) = inner.upgrade() else { return };
        inner.resolve_overdue().await;
        let written: u64 = inner.parts.iter().map(|p| p.journal().stats().bytes).sum();
        let due =
            since_last_round >= interval || written.saturating_sub(written_at_last_round) >= bytes;
        if !due {
            continue;
        }
        since_last_round = Duration::ZERO;
        written_at_last_round = written;
        if let Err(e) = inner.maintain_once().await {
            inner.maintenance_error.lock().get_or_insert(e);
        }
    }
}

impl Inner {
    /// Resolves every vote undecided past the vote timeout by asking its coordinator,
    /// which is in this process (asking aborts, durably, what it has not committed).
    pub(crate) async fn resolve_overdue(&self) {
        let now = self.clock.now();
        for part in &self.parts {
            part.resolve_overdue(now, |coordinator, txn, bound| async move {
                let coordinator = self.parts.get(coordinator.get() as usize)?;
                coordinator.status(now, txn, bound).await.ok()
            })
            .await;
        }
    }

    /// One maintenance round (see the module docs): the rules are storage's
    /// ([`StorageNode::maintain`](journaldb_storage::StorageNode::maintain),
    /// [`retention`](journaldb_storage::retention)) and the adjudicators'
    /// (`keep_journal_from`); a cluster's nodes call the same ones.
    pub(crate) async fn maintain_once(&self) -> Result<()> {
        let now = self.clock.now();
        for part in &self.parts {
            part.adjudicator().advance_horizon(now);
        }
        // The watermark moves only as every journal does: an idle one gets a heartbeat.
        self.promise_all(now.earliest)?;
        let cutoff = now.earliest.saturating_sub(self.options.retention);
        // The flush and the segment removals block: off the runtime's workers.
        let blocking = self.options.journal.flusher;
        let node = self.node.clone();
        blocking.run_blocking(move || node.maintain(cutoff)).await?;
        let Some(checkpoint) = self.node.checkpoint_before(cutoff) else {
            return Ok(()); // nothing old enough, or the journals are the only copy
        };
        for part in &self.parts {
            let keep_from = part.adjudicator().keep_journal_from(cutoff);
            let end = part.journal().durable_end();
            if let Some(first) = retention::first_to_keep([&checkpoint], part.id(), keep_from, end)
            {
                let journal = part.journal().clone();
                blocking
                    .run_blocking(move || journal.truncate_prefix(first))
                    .await?;
            }
        }
        Ok(())
    }
}
