//! The background tasks of a [`ClusterNode`](crate::ClusterNode): [`Tasks`], a set
//! aborted when dropped (a start that fails halfway leaves nothing running), and
//! [`Started`], every set a node starts, with how each ends at shutdown.

use tokio::task::JoinHandle;

/// Everything a node starts in the background.
#[derive(Default)]
pub(crate) struct Started {
    /// Each partition's vote resolution and heartbeat; they end when it steps down.
    pub(crate) partitions: Tasks,
    /// The maintenance loops: they end only when told to stop, or if one panicked.
    pub(crate) maintenance: Tasks,
    /// The storage replica's journal feeds: they end only if a journal breaks an invariant
    /// (the replica then cannot move past it).
    pub(crate) feeds: Tasks,
}

impl Started {
    /// Aborts every task and waits until each is gone (a start that failed halfway).
    pub(crate) async fn abort(self) {
        let Started {
            partitions,
            maintenance,
            feeds,
        } = self;
        partitions.abort().await;
        maintenance.abort().await;
        feeds.abort().await;
    }

    /// At shutdown, once the maintenance loops were told to stop: waits for them (a round
    /// in progress finishes: its flush runs off the runtime and cannot be cancelled) and
    /// aborts the rest, so nothing holds the storage engine or the journals any more.
    pub(crate) async fn finish(self) {
        let Started {
            partitions,
            maintenance,
            feeds,
        } = self;
        maintenance.join().await;
        partitions.abort().await;
        feeds.abort().await;
    }

    /// Whether a task that should run for as long as the node does has ended: a
    /// maintenance loop (it panicked) or a feed (a journal broke an invariant).
    pub(crate) fn any_failed(&self) -> bool {
        self.maintenance.any_finished() || self.feeds.any_finished()
    }
}

/// Background tasks, aborted when dropped (and by [`Tasks::abort`], which also waits).
#[derive(Default)]
pub(crate) struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    pub(crate) fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(task));
    }

    pub(crate) fn any_finished(&self) -> bool {
        self.0.iter().any(JoinHandle::is_finished)
    }

    /// Waits until every task has finished (one that panicked too).
    async fn join(mut self) {
        for t in std::mem::take(&mut self.0) {
            let _ = t.await;
        }
    }

    /// Aborts every task and waits until each is gone, so nothing it held (a storage
    /// engine, a journal) outlives it.
    async fn abort(self) {
        for t in &self.0 {
            t.abort();
        }
        self.join().await;
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
