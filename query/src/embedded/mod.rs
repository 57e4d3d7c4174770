//! The embedded database's internals: [`Inner`], every role of the database in this process
//! — the partitions (adjudicator + journal each), the storage node the journals feed, the
//! clock, the retry state — and what it does: the commit sequence up to the
//! acknowledgement (`visibility.rs`: commit wait, read barriers, snapshots) and
//! maintenance (`maintenance.rs`: checkpoints, GC, truncation, overdue votes). The public
//! handle is [`Database`](crate::Database); transactions reach `Inner` through the
//! in-process arm of [`Backend`](crate::backend::Backend).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use journaldb_adjudicator::{Partition, TxnStatus};
use journaldb_journal::disk::DirLock;
use journaldb_proto::{Clock, EmbeddedClock, PartitionId, Timestamp, TxnId};
use journaldb_storage::StorageNode;
use tokio::task::JoinHandle;

use crate::closable::Closable;
use crate::error::{Error, Result};
use crate::options::Options;
use crate::retry::RetryState;

pub(crate) mod maintenance;
mod visibility;

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) partitions: u32,
    pub(crate) options: Options,
    pub(crate) clock: EmbeddedClock,
    pub(crate) parts: Vec<Partition>,
    pub(crate) node: Arc<StorageNode<Closable>>,
    pub(crate) tailers: parking_lot::Mutex<Vec<JoinHandle<Result<()>>>>,
    pub(crate) maintenance: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// The first error of a maintenance round, reported by `close`.
    pub(crate) maintenance_error: parking_lot::Mutex<Option<Error>>,
    /// The newest acknowledged commit τ, in nanoseconds: a floor for new snapshots.
    pub(crate) acknowledged: AtomicU64,
    /// Retry policy, budget and the seeded RNG of transaction ids and jitter.
    pub(crate) retry: RetryState,
    /// Released by `close` (or when the last clone is dropped).
    pub(crate) lock: parking_lot::Mutex<Option<DirLock>>,
}

impl Inner {
    pub(crate) fn part(&self, p: PartitionId) -> &Partition {
        &self.parts[p.get() as usize]
    }

    /// Resolves votes left undecided by a crash: every coordinator is local, so ask it.
    pub(crate) async fn resolve_undecided(&self) -> Result<()> {
        for part in &self.parts {
            let undecided: Vec<(TxnId, PartitionId, Timestamp)> = {
                let adj = part.adjudicator();
                adj.undecided()
                    .map(|(id, v)| (id, v.coordinator, v.vote_ts))
                    .collect()
            };
            for (txn, coordinator, bound) in undecided {
                let now = self.clock.now();
                let coordinator = self.parts.get(coordinator.get() as usize).ok_or_else(|| {
                    Error::Corruption(format!(
                        "{txn}: a vote names {coordinator}, which does not exist"
                    ))
                })?;
                let outcome = match coordinator.status(now, txn, bound).await {
                    Ok(TxnStatus::Committed(ts)) => Some(ts),
                    Ok(TxnStatus::Aborted) => None,
                    // Nothing is in flight while opening, and the horizon is the floor:
                    // a vote below it is left to the background resolution.
                    Ok(TxnStatus::InFlight) => continue,
                    // Possibly committed and forgotten: committed at the floor, for the
                    // conflict window's sake (conservative: at worst a spurious conflict).
                    Ok(TxnStatus::TooOld(floor)) => Some(floor),
                    Err(refusal) => return Err(crate::error::refusal(refusal)),
                };
                part.decide_resolved(now, txn, outcome, true)
                    .await
                    .map_err(crate::error::refusal)?;
            }
        }
        Ok(())
    }
}
