//! Three voters over raft-rs's `MemStorage`, driven in virtual time by the `Ready` contract
//! of the shared RAFT.md §1 (send, apply, persist, then the persisted messages, then
//! advance), with election timing from [`ElectionTiming`]: a leader is elected, the trace is
//! a function of the seed, seeds differ, and every replica applies the same entries.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use journaldb_raft::raft::prelude::{ConfState, Entry, Message};
use journaldb_raft::raft::storage::MemStorage;
use journaldb_raft::raft::{RawNode, StateRole};
use journaldb_raft::{ElectionTiming, GroupConfig, discard_logger};

const VOTERS: u64 = 3;

struct Replica {
    node: RawNode<MemStorage>,
    next_tick: Duration,
    /// `(index, term, data)` of every applied entry that carries data.
    applied: Vec<(u64, u64, Vec<u8>)>,
}

struct Group {
    replicas: BTreeMap<u64, Replica>,
    timing: ElectionTiming,
    in_flight: VecDeque<Message>,
    now: Duration,
    /// What happened, in order: the trace two runs of a seed must agree on.
    trace: Vec<String>,
}

impl Group {
    fn new(seed: u64) -> Group {
        let config = GroupConfig::default();
        let mut timing = ElectionTiming::new(seed, Duration::from_millis(10), 200);
        let timeouts = timing.timeouts(config.election_ticks, VOTERS as usize);
        let replicas = (1..=VOTERS)
            .zip(timeouts)
            .map(|(id, timeout)| {
                let raft_config = config.raft_config(id, timeout).unwrap();
                let storage = MemStorage::new_with_conf_state(ConfState::from((
                    (1..=VOTERS).collect::<Vec<_>>(),
                    vec![],
                )));
                let node = RawNode::new(&raft_config, storage, &discard_logger()).unwrap();
                let first_tick = timing.next_tick();
                (
                    id,
                    Replica {
                        node,
                        next_tick: first_tick,
                        applied: Vec::new(),
                    },
                )
            })
            .collect();
        Group {
            replicas,
            timing,
            in_flight: VecDeque::new(),
            now: Duration::ZERO,
            trace: Vec::new(),
        }
    }

    /// One millisecond of virtual time: due ticks, then messages and readies until quiet.
    fn step(&mut self) {
        self.now += Duration::from_millis(1);
        for replica in self.replicas.values_mut() {
            while replica.next_tick <= self.now {
                replica.node.tick();
                replica.next_tick += self.timing.next_tick();
            }
        }
        loop {
            let ids: Vec<u64> = self.replicas.keys().copied().collect();
            for id in ids {
                self.handle_ready(id);
            }
            let Some(message) = self.in_flight.pop_front() else {
                break;
            };
            self.trace.push(format!(
                "{:?} {}→{} {:?} term {} index {} entries {}",
                self.now,
                message.from,
                message.to,
                message.get_msg_type(),
                message.term,
                message.index,
                message.entries.len()
            ));
            if let Some(to) = self.replicas.get_mut(&message.to) {
                to.node.step(message).unwrap();
            }
        }
    }

    /// The Ready contract, synchronous mode (RAFT.md §1).
    fn handle_ready(&mut self, id: u64) {
        let replica = self.replicas.get_mut(&id).unwrap();
        if !replica.node.has_ready() {
            return;
        }
        let mut ready = replica.node.ready();
        // 1. A leader sends while it persists.
        self.in_flight.extend(ready.take_messages());
        // 2. No snapshots in this group.
        assert!(ready.snapshot().data.is_empty());
        // 3. Committed entries may be applied before this Ready's own write.
        apply(&mut replica.applied, ready.take_committed_entries());
        // 4. Persist entries and hard state.
        let store = replica.node.mut_store().clone();
        store.wl().append(ready.entries()).unwrap();
        if let Some(hs) = ready.hs() {
            store.wl().set_hardstate(hs.clone());
        }
        // 5. Acks and votes only once that is durable (here: at once).
        self.in_flight.extend(ready.take_persisted_messages());
        // 6. Advance.
        let mut light = replica.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().commit = commit;
        }
        self.in_flight.extend(light.take_messages());
        apply(&mut replica.applied, light.take_committed_entries());
        replica.node.advance_apply();
    }

    fn leaders(&self) -> Vec<(u64, u64)> {
        self.replicas
            .iter()
            .filter(|(_, r)| r.node.raft.state == StateRole::Leader)
            .map(|(id, r)| (*id, r.node.raft.term))
            .collect()
    }

    /// Runs until a leader is elected (at most `limit` of virtual time).
    fn elect(&mut self, limit: Duration) -> u64 {
        while self.now < limit {
            self.step();
            if let [(leader, _)] = self.leaders()[..] {
                return leader;
            }
        }
        panic!("no leader after {limit:?}: {:?}", self.leaders());
    }
}

fn apply(applied: &mut Vec<(u64, u64, Vec<u8>)>, entries: Vec<Entry>) {
    applied.extend(
        entries
            .into_iter()
            .filter(|e| !e.data.is_empty())
            .map(|e| (e.index, e.term, e.data.to_vec())),
    );
}

#[test]
fn a_leader_is_elected_and_the_trace_is_a_function_of_the_seed() {
    let mut leaders = BTreeSet::new();
    for seed in 0..20 {
        let run = |seed| {
            let mut group = Group::new(seed);
            let leader = group.elect(Duration::from_secs(2));
            for _ in 0..200 {
                group.step();
            }
            (leader, group.leaders(), group.trace)
        };
        let (leader, after, trace) = run(seed);
        let (again, after_again, trace_again) = run(seed);
        assert_eq!(
            (leader, &after, &trace),
            (again, &after_again, &trace_again),
            "seed {seed}: same seed, same trace"
        );
        assert_eq!(after.len(), 1, "seed {seed}: one leader, still: {after:?}");
        leaders.insert(leader);
    }
    assert!(
        leaders.len() > 1,
        "seeds elect different voters: {leaders:?}"
    );
}

#[test]
fn every_replica_applies_the_same_entries_in_the_same_order() {
    let mut group = Group::new(42);
    let leader = group.elect(Duration::from_secs(2));
    for n in 0u32..50 {
        let replica = group.replicas.get_mut(&leader).unwrap();
        replica
            .node
            .propose(vec![], n.to_le_bytes().to_vec())
            .unwrap();
        group.step();
    }
    for _ in 0..100 {
        group.step();
    }
    let applied: Vec<_> = group.replicas.values().map(|r| r.applied.clone()).collect();
    assert_eq!(applied[0].len(), 50, "every proposal committed and applied");
    assert!(applied.iter().all(|a| *a == applied[0]), "replicas agree");
    let data: Vec<u32> = applied[0]
        .iter()
        .map(|(_, _, d)| u32::from_le_bytes(d[..4].try_into().unwrap()))
        .collect();
    assert_eq!(data, (0..50).collect::<Vec<_>>(), "in proposal order");
}
