//! Three voters whose logs are [`RaftLog`]s on crash-testing disks, driven in virtual time
//! by the asynchronous Ready contract of RAFT.md §1: stage the Ready, advance at once, and
//! report it persisted (`on_persist_ready`, then its held messages) only after the writer's
//! flush — which runs at its own random moments, as a flusher would. Messages are delayed,
//! reordered and dropped; replicas lose power between steps or at a random disk operation
//! of a flush (mid-write, mid-rollover, mid-removal: unsynced sectors torn), losing
//! whatever was not flushed, and reopen from their disks; leaders compact, so laggards get
//! snapshots.
//!
//! raft-rs panics when its storage breaks the contract (an acknowledged entry lost, a
//! commit index past the log), and the test checks what a journal needs on top: every
//! replica applies the same entry at each index, and every proposal its proposer saw
//! committed in its own term is applied by every replica in the end.
//! Seeds: `RAFT_GROUP_SEEDS` (default 100); replay one with `RAFT_GROUP_SEED=<seed>`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use journaldb_journal::disk::{CrashDisk, CrashDiskConfig};
use journaldb_raft::raft::prelude::{ConfState, Entry, EntryType, Message, MessageType};
use journaldb_raft::raft::{RawNode, SnapshotStatus, StateRole};
use journaldb_raft::{
    ElectionTiming, EntryBatch, GroupConfig, LogId, LogOptions, LogWriter, RaftLog, discard_logger,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const VOTERS: u64 = 3;

struct Replica {
    disk: CrashDisk,
    node: RawNode<RaftLog>,
    writer: LogWriter,
    timeout: usize,
    next_tick: Duration,
    /// Readies not yet durable.
    unpersisted: Vec<Unpersisted>,
    /// Proposals this replica made as leader: index → (term, data).
    proposed: BTreeMap<u64, (u64, Bytes)>,
}

/// A Ready staged but not yet durable.
struct Unpersisted {
    number: u64,
    /// The staging that must be durable first.
    staged: u64,
    /// Acks and votes, sent once it is.
    held: Vec<Message>,
    /// The index of a snapshot it installed: applied only once durable (raft-rs requires
    /// applied ≤ persisted).
    snapshot: Option<u64>,
}

struct Group {
    seed: u64,
    rng: ChaCha8Rng,
    timing: ElectionTiming,
    replicas: BTreeMap<u64, Replica>,
    /// Messages in flight, by delivery time and a sequence number.
    network: BTreeMap<(Duration, u64), Message>,
    sent: u64,
    now: Duration,
    /// index → (term, data): what the first replica to apply there applied.
    applied: BTreeMap<u64, (u64, Bytes)>,
    /// Every normal entry with data each replica applied, by replica.
    applied_by: BTreeMap<u64, BTreeMap<u64, (u64, Bytes)>>,
    /// Proposals their proposer saw committed in the proposing term.
    acked: BTreeMap<u64, (u64, Bytes)>,
    next_proposal: u64,
    /// What happened, to show the faults were reached: crashes, snapshots installed.
    crashes: u64,
    snapshots: u64,
}

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 16 * 1024,
        block_size: 512,
        preallocate_bytes: 4096,
        cache_bytes: 2048,
    }
}

fn log_id(id: u64) -> LogId {
    LogId {
        cluster: 1,
        group: 1,
        replica: id,
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/raft")
}

fn node(id: u64, timeout: usize, log: &RaftLog) -> RawNode<RaftLog> {
    let mut config = GroupConfig::default().raft_config(id, timeout).unwrap();
    config.applied = log.state().applied;
    RawNode::new(&config, log.clone(), &discard_logger()).unwrap()
}

impl Group {
    fn new(seed: u64) -> Group {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut timing = ElectionTiming::new(rng.random(), Duration::from_millis(10), 200);
        let timeouts = timing.timeouts(GroupConfig::default().election_ticks, VOTERS as usize);
        let conf = ConfState::from(((1..=VOTERS).collect::<Vec<_>>(), vec![]));
        let mut replicas = BTreeMap::new();
        for (id, timeout) in (1..=VOTERS).zip(timeouts) {
            let disk = CrashDisk::new(CrashDiskConfig::default());
            let writer = RaftLog::create(
                Arc::new(disk.clone()),
                dir(),
                log_id(id),
                options(),
                conf.clone(),
            )
            .unwrap();
            let replica = Replica {
                node: node(id, timeout, writer.log()),
                disk,
                writer,
                timeout,
                next_tick: timing.next_tick(),
                unpersisted: Vec::new(),
                proposed: BTreeMap::new(),
            };
            replicas.insert(id, replica);
        }
        Group {
            seed,
            rng,
            timing,
            replicas,
            network: BTreeMap::new(),
            sent: 0,
            now: Duration::ZERO,
            applied: BTreeMap::new(),
            applied_by: (1..=VOTERS).map(|id| (id, BTreeMap::new())).collect(),
            acked: BTreeMap::new(),
            next_proposal: 0,
            crashes: 0,
            snapshots: 0,
        }
    }

    fn send(&mut self, messages: Vec<Message>, faults: bool) {
        for message in messages {
            if faults && self.rng.random_bool(0.05) {
                continue;
            }
            let delay =
                Duration::from_millis(self.rng.random_range(1..if faults { 30 } else { 5 }));
            self.sent += 1;
            self.network.insert((self.now + delay, self.sent), message);
        }
    }

    /// One millisecond: ticks, deliveries, readies, and sometimes flushes and compactions;
    /// with `faults`, proposals and sometimes a crash.
    fn step(&mut self, faults: bool) {
        self.now += Duration::from_millis(1);
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for &id in &ids {
            let replica = self.replicas.get_mut(&id).unwrap();
            while replica.next_tick <= self.now {
                replica.node.tick();
                replica.next_tick += self.timing.next_tick();
            }
        }
        while let Some(entry) = self.network.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let message = entry.remove();
            if let Some(to) = self.replicas.get_mut(&message.to) {
                // A stale or foreign message is refused, never fatal.
                let _ = to.node.step(message);
            }
        }
        for &id in &ids {
            if faults && self.rng.random_bool(0.1) {
                self.propose(id);
            }
            self.handle_ready(id);
            if self.rng.random_bool(0.3) {
                self.flush(id);
            }
            if self.rng.random_bool(0.01) {
                self.compact(id);
            }
        }
        if faults && self.rng.random_bool(0.004) {
            let id = ids[self.rng.random_range(0..ids.len())];
            self.crash(id);
        }
        if faults && self.rng.random_bool(0.004) {
            // Power loss at a random disk operation of what comes next: mid-write,
            // mid-rollover, mid-removal; unsynced bytes torn by sector.
            let id = ids[self.rng.random_range(0..ids.len())];
            let disk = &self.replicas[&id].disk;
            disk.freeze_after(self.rng.random_range(0..6));
        }
    }

    fn propose(&mut self, id: u64) {
        let replica = self.replicas.get_mut(&id).unwrap();
        if replica.node.raft.state != StateRole::Leader {
            return;
        }
        let index = replica.node.raft.raft_log.last_index() + 1;
        let term = replica.node.raft.term;
        self.next_proposal += 1;
        let batch = EntryBatch {
            first_lsn: RaftLog::next_batch_lsn(&replica.node.raft.raft_log),
            records: (0..self.rng.random_range(1..4))
                .map(|r| Bytes::from(format!("proposal {} by {id}, {r}", self.next_proposal)))
                .collect(),
        };
        let data = batch.encode();
        if replica.node.propose(vec![], data.to_vec()).is_ok()
            && replica.node.raft.raft_log.last_index() == index
        {
            replica.proposed.insert(index, (term, data));
        }
    }

    /// The asynchronous Ready contract (RAFT.md §1).
    fn handle_ready(&mut self, id: u64) {
        let replica = self.replicas.get_mut(&id).unwrap();
        if !replica.node.has_ready() {
            return;
        }
        let mut ready = replica.node.ready();
        let log = replica.writer.log().clone();
        // 1. A leader sends while it persists.
        let messages = ready.take_messages();
        // 2. A snapshot replaces the log (metadata only: the journal's are).
        let mut snapshot = None;
        if !ready.snapshot().is_empty() {
            log.install_snapshot(ready.snapshot()).unwrap();
            snapshot = Some(ready.snapshot().get_metadata().index);
            self.snapshots += 1;
        }
        // 4. Stage entries and hard state: readable from memory at once.
        let staged = log
            .stage(ready.take_entries(), ready.hs().cloned())
            .unwrap_or_else(|e| panic!("seed {}: replica {id}: {e}", self.seed));
        // 3. Apply what is committed.
        let committed = ready.take_committed_entries();
        // 5. Hold the persisted messages until the flush covering this Ready.
        let held = ready.take_persisted_messages();
        replica.unpersisted.push(Unpersisted {
            number: ready.number(),
            staged,
            held,
            snapshot,
        });
        replica.node.advance_append_async(ready);
        report_snapshots(&mut replica.node, &messages);
        if let Some(last) = committed.last().map(|e| e.index) {
            log.set_applied(last, None).unwrap();
            replica.node.advance_apply_to(last);
        }
        self.send(messages, true);
        self.apply(id, committed);
    }

    fn apply(&mut self, id: u64, entries: Vec<Entry>) {
        let replica = &self.replicas[&id];
        for entry in entries {
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let got = (entry.term, entry.data.clone());
            let first = self
                .applied
                .entry(entry.index)
                .or_insert_with(|| got.clone());
            assert_eq!(
                *first, got,
                "seed {}: replica {id} applied a different entry at {}",
                self.seed, entry.index
            );
            if replica.proposed.get(&entry.index) == Some(&got) && replica.node.raft.term == got.0 {
                self.acked.insert(entry.index, got.clone());
            }
            self.applied_by
                .get_mut(&id)
                .unwrap()
                .insert(entry.index, got);
        }
    }

    /// The flusher: one write and fsync for everything staged, then the Readies it covers
    /// are persisted and their held messages sent.
    fn flush(&mut self, id: u64) {
        let replica = self.replicas.get_mut(&id).unwrap();
        let Ok(flushed) = replica.writer.flush() else {
            // The disk froze mid-flush: the power went at that operation.
            self.crash(id);
            return;
        };
        // With nothing staged, Readies that waited only on earlier writes are durable.
        if flushed.is_none() && replica.unpersisted.is_empty() {
            return;
        }
        let durable = replica.writer.log().persisted_number();
        let done = replica
            .unpersisted
            .iter()
            .take_while(|u| u.staged <= durable)
            .count();
        if done == 0 {
            return;
        }
        let mut messages = Vec::new();
        let mut last = 0;
        let mut snapshot = None;
        for ready in replica.unpersisted.drain(..done) {
            last = ready.number;
            messages.extend(ready.held);
            snapshot = ready.snapshot.or(snapshot);
        }
        replica.node.on_persist_ready(last);
        if let Some(index) = snapshot {
            replica.node.advance_apply_to(index);
        }
        self.send(messages, true);
    }

    fn compact(&mut self, id: u64) {
        let replica = &self.replicas[&id];
        let log = replica.writer.log();
        let durable = log.durable_state().hard_state.commit;
        let to = log.state().applied.min(durable).saturating_sub(5);
        log.compact(to).unwrap();
    }

    /// Power loss: what was not flushed is gone, sectors may tear; the replica reopens its
    /// log and starts again with a fresh `RawNode`, as after a restart.
    fn crash(&mut self, id: u64) {
        self.crashes += 1;
        let old = self.replicas.remove(&id).unwrap();
        let disk = old.disk.crash(self.rng.random());
        drop(old.writer);
        let writer = RaftLog::open(Arc::new(disk.clone()), dir(), log_id(id), options())
            .unwrap_or_else(|e| panic!("seed {}: replica {id} reopening: {e}", self.seed));
        let replica = Replica {
            node: node(id, old.timeout, writer.log()),
            disk,
            writer,
            timeout: old.timeout,
            next_tick: self.now + self.timing.next_tick(),
            unpersisted: Vec::new(),
            proposed: BTreeMap::new(),
        };
        self.replicas.insert(id, replica);
    }
}

/// Runs one seed; returns (acknowledged entries, crashes, snapshots).
/// A journal's snapshot is metadata only, so its message is all there is to send: once
/// sent, it is reported finished. Had it been lost, the follower rejects the next append
/// and the leader, finding the entries compacted, sends a snapshot again; unreported, the
/// leader would wait for ever (RAFT.md §6).
fn report_snapshots(node: &mut RawNode<RaftLog>, sent: &[Message]) {
    for m in sent
        .iter()
        .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
    {
        node.report_snapshot(m.to, SnapshotStatus::Finish);
    }
}

fn run(seed: u64) -> (usize, u64, u64) {
    let mut group = Group::new(seed);
    for _ in 0..3000 {
        group.step(true);
    }
    // Heal: no faults, until every replica has applied everything acknowledged.
    for _ in 0..3000 {
        group.step(false);
    }
    assert!(
        !group.acked.is_empty(),
        "seed {seed}: nothing was committed"
    );
    for (id, applied) in &group.applied_by {
        let highest = applied.keys().next_back().copied().unwrap_or(0);
        for (index, entry) in &group.acked {
            // A replica that got a snapshot past an index never applied it; the entry is
            // still in the logs of the others, and the agreement check covers what it did.
            if *index <= highest && !applied.contains_key(index) {
                let log = group.replicas[id].writer.log();
                assert!(
                    *index <= log.state().truncated.0,
                    "seed {seed}: replica {id} skipped acknowledged entry {index} {entry:?}"
                );
            }
        }
        let last_acked = group.acked.keys().next_back().copied().unwrap();
        let commit = group.replicas[id].node.raft.raft_log.committed;
        if commit < last_acked {
            for (rid, r) in &group.replicas {
                let raft = &r.node.raft;
                eprintln!(
                    "replica {rid}: {:?} term {} leader {} commit {} last {} persisted {} unpersisted {} log first {} durable {:?}",
                    raft.state,
                    raft.term,
                    raft.leader_id,
                    raft.raft_log.committed,
                    raft.raft_log.last_index(),
                    raft.raft_log.persisted,
                    r.unpersisted.len(),
                    r.writer.log().state().truncated.0,
                    r.writer.log().durable_state().hard_state
                );
            }
        }
        assert!(
            commit >= last_acked,
            "seed {seed}: replica {id} committed {commit}, below acknowledged {last_acked}"
        );
    }
    (group.acked.len(), group.crashes, group.snapshots)
}

#[test]
fn replicas_on_crashing_disks_agree_and_lose_no_acknowledged_entry() {
    let seeds: Vec<u64> = match std::env::var("RAFT_GROUP_SEED") {
        Ok(seed) => vec![seed.parse().expect("RAFT_GROUP_SEED is a u64")],
        Err(_) => {
            let n: u64 = std::env::var("RAFT_GROUP_SEEDS")
                .map(|n| n.parse().expect("RAFT_GROUP_SEEDS is a u64"))
                .unwrap_or(100);
            (0..n).collect()
        }
    };
    let mut totals = (0, 0, 0);
    for seed in seeds {
        let outcome = std::panic::catch_unwind(|| run(seed));
        match outcome {
            Ok((acked, crashes, snapshots)) => {
                totals = (totals.0 + acked, totals.1 + crashes, totals.2 + snapshots);
            }
            Err(panic) => {
                eprintln!(
                    "seed {seed} failed; replay with\n  RAFT_GROUP_SEED={seed} cargo nextest run \
                 -p journaldb-raft replicas_on_crashing_disks"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!("acknowledged entries, crashes, snapshots: {totals:?}");
    assert!(
        totals.1 > 0 && totals.2 > 0,
        "the faults were reached: {totals:?}"
    );
}
