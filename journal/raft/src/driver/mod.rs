//! The driver: one task per node that runs every Raft group the node holds a replica of
//! (RAFT.md §8, "Many groups"), and hands each group's journal to its users as a
//! [`ReplicatedJournal`].
//!
//! ```text
//!   transport ──envelopes──▶ inbox ─┐                       ┌─▶ transport (batched per node)
//!   ReplicatedJournal::submit ─wake─┤   driver task:        │
//!   jittered tick timer ────────────┼─▶ step / tick /  ─────┤
//!   flusher k: "durable to n" ──────┘   propose / Ready     └─▶ stage ▶ wake flusher k
//! ```
//!
//! The loop is `select! { biased; }` over, in order: stop, the tick timer (so a busy inbox
//! never starves heartbeats), persistence reports, the inbox, and submissions. After each
//! event it proposes what the queues hold and handles every group's Ready in group order.
//! A group's flusher runs [`LogWriter::flush`] where the node's [`Flusher`] setting puts
//! blocking work (tokio's blocking pool, or inline in simulation) and reports the highest
//! staging it made durable; records submitted while a flush runs form the next entry,
//! which is the group commit.
//!
//! Determinism: ticks come from tokio time, jittered from the seeded RNG; groups, nodes
//! and messages are visited in key order; raft-rs's election range is one value
//! ([`GroupConfig::raft_config`]). Same seed, same trace.
//!
//! Membership changes (module `members`) are proposed by the driver for a
//! [`ReplicatedJournal`] that asks, and applied with the entries that carry them. Not yet
//! here: a compaction policy (the log supports it; nothing calls it yet).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use journaldb_journal::Flusher;
use journaldb_proto::PlantedBug;
use parking_lot::Mutex;
use raft::RawNode;
use raft::Storage;
use raft::prelude::Message;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::log::{LogWriter, RaftLog};
use crate::{ElectionTiming, GroupConfig, discard_logger};

mod conf;
mod group;
mod handle;
mod local;
mod members;
mod wire;

pub use conf::{MemberChange, Members};
pub use handle::{GroupStatus, Pending, ReplicatedJournal, ReplicationError};
pub use local::LocalNetwork;
pub use wire::{Connect, GrpcInbox, GrpcTransport, MAX_ENVELOPES_PER_REQUEST, MAX_QUEUED_PER_PEER};

use group::Group;
use handle::{Acks, Queue, Shared};

/// A node of the cluster; also its Raft id in every group it belongs to.
pub type NodeId = u64;

/// A Raft group: a partition's journal, or the metadata group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u64);

/// A Raft message of one group.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The group.
    pub group: GroupId,
    /// The message (`to` is the destination node).
    pub message: Message,
}

/// Carries envelopes between nodes. Best effort: Raft tolerates loss, reordering and
/// duplication; `send` must never block the driver.
pub trait Transport: Send + Sync + 'static {
    /// Sends `envelopes`, all for node `to`.
    fn send(&self, to: NodeId, envelopes: Vec<Envelope>);
}

/// Settings of a node's driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// This node.
    pub node: NodeId,
    /// The settings every group runs with.
    pub group: GroupConfig,
    /// The nominal tick interval (heartbeats every `group.heartbeat_ticks` ticks).
    pub tick: Duration,
    /// Ticks are jittered by ± this share of `tick`, in per mille.
    pub jitter_per_mille: u32,
    /// The cluster's seed: every node draws the same distinct election timeouts for a
    /// group from it and takes its own; its tick jitter comes from it and the node id.
    pub seed: u64,
    /// Where each group's flusher does its blocking writes.
    pub flusher: Flusher,
    /// Envelope batches the inbox holds before it drops more.
    pub inbox_capacity: usize,
    /// How long each flush takes before it writes, in tokio time: zero in production,
    /// where the disk takes its own time. The simulation, whose disk is instant, sets it
    /// so that a crash can land between a Ready's staging and its fsync.
    pub sync_latency: Duration,
    /// A bug to plant on purpose ([`PlantedBug::AckInLaterTerm`],
    /// [`PlantedBug::PersistBeforeFsync`]), to show the checks catch it.
    pub planted: Option<PlantedBug>,
}

impl DriverConfig {
    /// Defaults for node `node` of a cluster with seed `seed`.
    pub fn new(node: NodeId, seed: u64) -> DriverConfig {
        DriverConfig {
            node,
            group: GroupConfig::default(),
            tick: Duration::from_millis(50),
            jitter_per_mille: 200,
            seed,
            flusher: Flusher::Thread,
            inbox_capacity: 1024,
            sync_latency: Duration::ZERO,
            planted: None,
        }
    }
}

/// Why a driver could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A group's settings or configuration are unusable.
    #[error("{group:?}: {reason}")]
    Group {
        /// The group.
        group: GroupId,
        /// What is wrong.
        reason: String,
    },
}

/// Where other nodes' envelopes enter this node's driver.
#[derive(Debug, Clone)]
pub struct Inbox(mpsc::Sender<Vec<Envelope>>);

impl Inbox {
    /// Hands `envelopes` to the driver; dropped if it is full or stopped (Raft resends).
    pub fn deliver(&self, envelopes: Vec<Envelope>) {
        let _ = self.0.try_send(envelopes);
    }
}

/// A running driver. Dropping it stops the task without waiting; [`Driver::stop`] waits.
#[derive(Debug)]
pub struct Driver {
    journals: BTreeMap<GroupId, ReplicatedJournal>,
    inbox: Inbox,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Driver {
    /// Starts driving the groups whose logs `logs` writes (opened or created by the
    /// caller; the log's group id is the group's), sending through `transport`. Must be
    /// called within a tokio runtime.
    pub fn start(
        config: DriverConfig,
        logs: Vec<LogWriter>,
        transport: Arc<dyn Transport>,
    ) -> Result<Driver, DriverError> {
        let (stop, stop_rx) = watch::channel(false);
        let (inbox, inbox_rx) = mpsc::channel(config.inbox_capacity.max(1));
        let (persisted, persisted_rx) = mpsc::unbounded_channel();
        let wake = Arc::new(Notify::new());
        let mut groups = BTreeMap::new();
        let mut journals = BTreeMap::new();
        let mut flushers = Vec::new();
        for writer in logs {
            let log = writer.log().clone();
            let id = GroupId(log.id().group);
            let node = raft_node(&config, id, &log)?;
            let flush = Arc::new(Notify::new());
            let shared = Arc::new(Shared {
                group: id,
                log: log.clone(),
                queue: Mutex::new(Queue::new(0, false, log.lsn_end())),
                acks: watch::Sender::new(Acks {
                    term: 0,
                    end: log.lsn_end(),
                    closed: true,
                }),
                status: watch::Sender::new(group::initial_status(&log)),
                wake: wake.clone(),
                flush: flush.clone(),
                room: Notify::new(),
                max_unacked_bytes: (config.group.max_uncommitted_bytes / 2) as usize,
                // Room for the batch and message framing around one record.
                max_record_bytes: (config.group.max_message_bytes as usize / 2)
                    .saturating_sub(1024)
                    .max(1),
                ack_in_any_term: config.planted == Some(PlantedBug::AckInLaterTerm),
                change: Mutex::new(None),
                progress: Mutex::new(Vec::new()),
            });
            flushers.push(flush_loop(
                id,
                writer,
                (config.flusher, config.sync_latency),
                flush.clone(),
                persisted.clone(),
                stop_rx.clone(),
            ));
            let max_entry = config.group.max_message_bytes as usize / 2;
            let mut group = Group::new(node, shared.clone(), flush, max_entry);
            group.persist_before_fsync = config.planted == Some(PlantedBug::PersistBeforeFsync);
            groups.insert(id, group);
            journals.insert(id, ReplicatedJournal { shared });
        }
        let timing = ElectionTiming::new(
            config.seed ^ config.node.rotate_left(32),
            config.tick,
            config.jitter_per_mille,
        );
        let task = Task {
            node: config.node,
            groups,
            transport,
            inbox: inbox_rx,
            persisted: persisted_rx,
            wake,
            stop: stop_rx,
            timing,
        };
        let mut tasks: Vec<JoinHandle<()>> = flushers.into_iter().map(tokio::spawn).collect();
        tasks.push(tokio::spawn(task.run()));
        Ok(Driver {
            journals,
            inbox: Inbox(inbox),
            stop,
            tasks,
        })
    }

    /// The journal of `group` on this node.
    pub fn journal(&self, group: GroupId) -> Option<&ReplicatedJournal> {
        self.journals.get(&group)
    }

    /// Where the transport delivers envelopes for this node.
    pub fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }

    /// Stops the driver and its flushers, waiting for a flush in progress to end. Pending
    /// submissions resolve `CommitUnknown`.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The `RawNode` of `group` on this node, its election timeout drawn from the cluster's
/// seed by its place among the group's members (a node joining the group — not yet a
/// member of the configuration its log holds — counts itself in).
fn raft_node(
    config: &DriverConfig,
    group: GroupId,
    log: &RaftLog,
) -> Result<RawNode<RaftLog>, DriverError> {
    let fail = |reason: String| DriverError::Group { group, reason };
    let state = log.initial_state().map_err(|e| fail(e.to_string()))?;
    let conf = &state.conf_state;
    if conf.voters.is_empty() {
        return Err(fail("the log's configuration has no voters".into()));
    }
    let mut members: Vec<NodeId> = conf
        .voters
        .iter()
        .chain(&conf.voters_outgoing)
        .chain(&conf.learners)
        .chain(&conf.learners_next)
        .copied()
        .chain([config.node])
        .collect();
    members.sort_unstable();
    members.dedup();
    let position = members
        .iter()
        .position(|v| *v == config.node)
        .expect("the node is counted in");
    let base = config.group.election_ticks;
    if members.len() > base {
        return Err(fail(format!(
            "{} members need more than {base} distinct election timeouts",
            members.len()
        )));
    }
    let mut timing = ElectionTiming::new(
        config.seed ^ group.0.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        config.tick,
        config.jitter_per_mille,
    );
    let mut timeouts = timing.timeouts(base, members.len());
    // Spread the leaders: the group's preferred voter (the group id, modulo the voters,
    // picks it) gets the shortest timeout, so groups on the same nodes tend to elect
    // different first leaders. Drawn at random, a node led two partitions of three and
    // another none about three times in four, and on two cores the busiest node set the
    // cluster's pace (docs/BENCHMARKS.md). Nothing moves a leader back after a failover.
    let mut voters = conf.voters.clone();
    voters.sort_unstable();
    let preferred = voters[(group.0 % voters.len() as u64) as usize];
    if let (Some(at), Some(shortest)) = (
        members.iter().position(|m| *m == preferred),
        (0..timeouts.len()).min_by_key(|&i| timeouts[i]),
    ) {
        timeouts.swap(at, shortest);
    }
    let timeout = timeouts[position];
    let mut raft_config = config
        .group
        .raft_config(config.node, timeout)
        .map_err(|e| fail(e.to_string()))?;
    raft_config.applied = log.state().applied;
    RawNode::new(&raft_config, log.clone(), &discard_logger()).map_err(|e| fail(e.to_string()))
}

/// A group's flusher: waits to be woken, makes everything staged durable (after
/// `latency`, the simulated disk's), reports it.
async fn flush_loop(
    group: GroupId,
    mut writer: LogWriter,
    (flusher, latency): (Flusher, Duration),
    wake: Arc<Notify>,
    done: mpsc::UnboundedSender<(GroupId, Result<u64, String>)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = wake.notified() => {}
        }
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }

        let (back, result) = flusher
            .run_blocking(move || {
                let result = writer.flush();
                (writer, result)
            })
            .await;
        writer = back;
        match result {
            Ok(Some(number)) => {
                if done.send((group, Ok(number))).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = done.send((group, Err(e.to_string())));
                return;
            }
        }
    }
}

/// Whether `message` is one Raft peers send each other, with a term: the only kinds the
/// driver steps from outside. A proposal from a peer would bypass the term rules of the
/// journal's submissions (§5 rule 2); elections, quorum checks and transfers are this
/// node's own to start.
pub(crate) fn is_peer_message(message: &Message) -> bool {
    use raft::prelude::MessageType::*;
    message.term != 0
        && matches!(
            message.get_msg_type(),
            MsgAppend
                | MsgAppendResponse
                | MsgRequestVote
                | MsgRequestVoteResponse
                | MsgRequestPreVote
                | MsgRequestPreVoteResponse
                | MsgHeartbeat
                | MsgHeartbeatResponse
                | MsgSnapshot
                | MsgTimeoutNow
        )
}

/// Runs `f` on `group`. raft-rs answers a storage error it cannot handle (a failed disk
/// read of an entry) with a panic (RAFT.md §2); that stops this group on this node, not the
/// node's other groups.
fn guarded<T>(group: &mut Group, what: &str, f: impl FnOnce(&mut Group) -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(group))) {
        Ok(out) => Some(out),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            group.fail(format!("raft-rs panicked while {what}: {message}"));
            None
        }
    }
}

/// Most flush reports, and most inbox batches, one round of the driver takes in beside
/// the event that woke it.
const MAX_TAKEN_PER_ROUND: usize = 64;

/// The driver task's state.
struct Task {
    node: NodeId,
    groups: BTreeMap<GroupId, Group>,
    transport: Arc<dyn Transport>,
    inbox: mpsc::Receiver<Vec<Envelope>>,
    persisted: mpsc::UnboundedReceiver<(GroupId, Result<u64, String>)>,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
    timing: ElectionTiming,
}

impl Task {
    async fn run(mut self) {
        let mut next_tick = Instant::now() + self.timing.next_tick();
        loop {
            let mut outbox = BTreeMap::new();
            tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                () = tokio::time::sleep_until(next_tick) => {
                    // Ticks missed while the task was held up are not made up in a burst:
                    // that would run check-quorum twice with no responses read between
                    // (RAFT.md §8: `Delay`, not `Burst`).
                    next_tick = next_tick.max(Instant::now()) + self.timing.next_tick();
                    for group in self.groups.values_mut().filter(|g| !g.failed()) {
                        guarded(group, "ticking", |g| g.node.tick());
                        // Once a tick, not after every event: read only by admin tools and
                        // membership changes, or rarely needed.
                        guarded(group, "leaving a joint configuration", Group::leave_joint_if_left_behind);
                        group.publish_progress();
                        // A commit index staged alone rides with the next write; an idle
                        // group writes it here, so compaction is not held back for long.
                        group.flush_if_pending();
                    }
                }
                Some((id, result)) = self.persisted.recv() => self.on_persisted(id, result, &mut outbox),
                Some(envelopes) = self.inbox.recv() => self.deliver(envelopes),
                () = self.wake.notified() => {}
            }
            self.take_waiting(&mut outbox);
            for group in self.groups.values_mut().filter(|g| !g.failed()) {
                guarded(group, "proposing", Group::propose);
            }
            self.handle_readies(&mut outbox);
            for (to, envelopes) in outbox {
                self.transport.send(to, envelopes);
            }
        }
        for group in self.groups.values_mut() {
            group.fail("the driver stopped".into());
        }
    }

    /// Takes in what else already waits — flushes finished, peers' messages — so that one
    /// round of Readies answers all of it: under load, fewer and larger writes and
    /// messages. Bounded, so the tick is never held up for long.
    fn take_waiting(&mut self, outbox: &mut BTreeMap<NodeId, Vec<Envelope>>) {
        for _ in 0..MAX_TAKEN_PER_ROUND {
            match self.persisted.try_recv() {
                Ok((id, result)) => self.on_persisted(id, result, outbox),
                Err(_) => break,
            }
        }
        for _ in 0..MAX_TAKEN_PER_ROUND {
            match self.inbox.try_recv() {
                Ok(envelopes) => self.deliver(envelopes),
                Err(_) => break,
            }
        }
    }

    fn deliver(&mut self, envelopes: Vec<Envelope>) {
        for Envelope { group, message } in envelopes {
            if message.to != self.node || !is_peer_message(&message) {
                // Not for this node, or a kind only a node gives itself (a proposal, an
                // election or quorum check, a transfer): a stranger's or a forged message.
                continue;
            }
            if let Some(group) = self.groups.get_mut(&group).filter(|g| !g.failed()) {
                // A stale or unknown peer's message is refused by raft-rs, never fatal.
                guarded(group, "stepping a message", |g| {
                    let _ = g.node.step(message);
                });
            }
        }
    }

    fn on_persisted(
        &mut self,
        id: GroupId,
        result: Result<u64, String>,
        outbox: &mut BTreeMap<NodeId, Vec<Envelope>>,
    ) {
        let Some(group) = self.groups.get_mut(&id).filter(|g| !g.failed()) else {
            return;
        };
        match result {
            Ok(number) => {
                if let Some(messages) = guarded(group, "persisting", |g| g.persisted(number)) {
                    group::by_destination(id, messages, outbox);
                }
            }
            Err(reason) => group.fail(format!("the log failed: {reason}")),
        }
    }

    fn handle_readies(&mut self, outbox: &mut BTreeMap<NodeId, Vec<Envelope>>) {
        for (id, group) in self.groups.iter_mut() {
            // A Ready handled without a write can make the next one ready at once.
            for _ in 0..8 {
                if group.failed() || !group.node.has_ready() {
                    break;
                }
                match guarded(group, "handling a Ready", Group::handle_ready) {
                    Some(Ok(messages)) => group::by_destination(*id, messages, outbox),
                    Some(Err(reason)) => group.fail(reason),
                    None => {}
                }
            }
            if !group.failed() && group.node.has_ready() {
                self.wake.notify_one(); // come back for the rest after the others
            }
        }
    }
}
