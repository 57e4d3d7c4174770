//! Maintenance of an embedded database (see [`crate::Database`]'s module docs): every
//! checkpoint interval, or after `checkpoint_bytes` of journal growth, the adjudicators
//! forget old conflicts, idle journals promise the current time, storage checkpoints and
//! collects garbage below the retention horizon, and the journals drop what every
//! checkpoint older than the retention window covers. At every tick (≤ 100 ms), votes left
//! undecided past the vote timeout — a `commit()` future dropped between its prepares and
//! its decision — are resolved by asking their (local) coordinators.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Weak;
use std::time::Duration;

use journaldb_proto::{Clock, Lsn, PartitionId};
use journaldb_storage::{Checkpoint, Engine};

use super::Inner;
use crate::error::Result;

/// The maintenance loop: a round every checkpoint interval, or sooner once the journals
/// grew by the checkpoint bytes, while the database is open.
pub(crate) async fn maintain(inner: Weak<Inner>, mut history: VecDeque<Checkpoint>) {
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
        if let Err(e) = inner.maintain_once(&mut history).await {
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

    /// One maintenance round (see the module docs). `history` holds the checkpoints not yet
    /// old enough to truncate to, oldest first.
    pub(crate) async fn maintain_once(&self, history: &mut VecDeque<Checkpoint>) -> Result<()> {
        let now = self.clock.now();
        for part in &self.parts {
            part.adjudicator().advance_horizon(now);
        }
        // The watermark moves only as every journal does: an idle one gets a heartbeat.
        self.promise_all(now.earliest)?;
        let cutoff = now.earliest.saturating_sub(self.options.retention);
        let checkpoint = self.node.checkpoint(cutoff)?;
        if !self.node.store().is_durable() {
            return Ok(()); // the journals are the only copy: keep them whole
        }
        history.push_back(checkpoint);
        // Every record below a checkpoint's positions has τ ≤ its watermark.
        while history.get(1).is_some_and(|next| next.watermark < cutoff) {
            history.pop_front();
        }
        let Some(old) = history.front().filter(|c| c.watermark < cutoff) else {
            return Ok(());
        };
        let applied: &BTreeMap<PartitionId, Lsn> = &old.applied;
        for (p, lsn) in applied {
            self.part(*p).journal().truncate_prefix(lsn.next())?;
        }
        Ok(())
    }
}
