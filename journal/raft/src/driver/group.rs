//! One group on one node, as the driver runs it: its `RawNode`, the Ready contract of
//! RAFT.md §1 in asynchronous mode, proposals from the queue, and what applying committed
//! entries means for a journal (acknowledgements, the readable end).

use std::collections::BTreeMap;
use std::sync::Arc;

use journaldb_proto::Lsn;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType};
use raft::{Changer, RawNode, SnapshotStatus, StateRole};
use tokio::sync::Notify;

use crate::entry::{EntryBatch, EntryCommand};
use crate::log::{RaftLog, format};

use super::conf::{self, Members};
use super::handle::{Acks, GroupStatus, Shared};
use super::{GroupId, NodeId, ReplicationError};

/// A Ready staged but not yet durable.
#[derive(Debug)]
struct Unpersisted {
    number: u64,
    /// The staging that must be durable first.
    staged: u64,
    /// Acks and votes, sent only once it is (§5 rule 3).
    held: Vec<Message>,
    /// A snapshot it installed: applied only once durable (raft-rs: applied ≤ persisted).
    snapshot: Option<u64>,
}

/// A group run by the driver.
pub(super) struct Group {
    pub node: RawNode<RaftLog>,
    pub shared: Arc<Shared>,
    /// Wakes this group's flusher.
    pub flush: Arc<Notify>,
    unpersisted: Vec<Unpersisted>,
    /// Largest data of one proposed entry.
    max_entry_bytes: usize,
    /// The voter the last leadership transfer went to.
    last_transfer: Option<u64>,
    /// The planted [`journaldb_proto::PlantedBug::PersistBeforeFsync`]: as leader, report
    /// each Ready persisted as soon as it is staged.
    pub persist_before_fsync: bool,
    /// The truncation the last applied truncation entry asked for, until done.
    truncate_before: Option<Lsn>,
}

impl Group {
    pub fn new(
        node: RawNode<RaftLog>,
        shared: Arc<Shared>,
        flush: Arc<Notify>,
        max_entry_bytes: usize,
    ) -> Group {
        Group {
            node,
            shared,
            flush,
            unpersisted: Vec::new(),
            max_entry_bytes,
            last_transfer: None,
            persist_before_fsync: false,
            truncate_before: None,
        }
    }

    /// Wakes the flusher if anything staged is still to be written.
    pub fn flush_if_pending(&self) {
        if self.shared.log.has_pending() {
            self.flush.notify_one();
        }
    }

    pub fn failed(&self) -> bool {
        self.shared.status.borrow().failed.is_some()
    }

    /// Stops the group on this node: nothing more is stepped, proposed or acknowledged.
    pub fn fail(&mut self, reason: String) {
        self.shared.queue.lock().open = false;
        self.shared.acks.send_modify(|acks| acks.closed = true);
        self.shared.status.send_modify(|s| {
            s.failed.get_or_insert(reason);
        });
    }

    /// Proposes what the queue holds, as entries of at most `max_entry_bytes` (rule 2:
    /// only while this node leads the queue's term; a dropped proposal closes the term),
    /// then the truncation asked for, if any, in an entry after them.
    pub fn propose(&mut self) {
        self.step_down_if_asked();
        self.propose_change();
        let (term, records, first_lsn, truncate) = {
            let mut queue = self.shared.queue.lock();
            if queue.records.is_empty() && queue.truncate.is_none() {
                return;
            }
            let records = std::mem::take(&mut queue.records);
            let first = Lsn::new(queue.next_lsn.get() - records.len() as u64);
            (queue.term, records, first, queue.truncate.take())
        };
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader || raft.term != term {
            self.close_term(term);
            return;
        }
        if !records.is_empty() && !self.propose_records(term, records, first_lsn) {
            return;
        }
        if let Some(before) = truncate {
            // Not a record: raft-rs dropping it leaves the term's records dense, and the
            // caller asks again at its next round.
            let context = EntryCommand::TruncateBefore(before).encode();
            let _ = self.node.propose(context, vec![]);
        }
    }

    /// Proposes `records`, the first at `first_lsn`, in `term`, which this node leads;
    /// `false` if the term had to close instead.
    fn propose_records(&mut self, term: u64, records: Vec<bytes::Bytes>, first_lsn: Lsn) -> bool {
        let expected = RaftLog::next_batch_lsn(&self.node.raft.raft_log);
        if expected != first_lsn {
            self.fail(format!(
                "queued records start at {first_lsn}, but the log's records end at {expected}"
            ));
            return false;
        }
        let mut lsn = first_lsn;
        for chunk in chunks(records, self.max_entry_bytes) {
            let count = chunk.len() as u64;
            let data = EntryBatch {
                first_lsn: lsn,
                records: chunk,
            }
            .encode();
            let last = self.node.raft.raft_log.last_index();
            let proposed = self.node.propose(vec![], data.to_vec()).is_ok();
            if !proposed || self.node.raft.raft_log.last_index() != last + 1 {
                // raft-rs dropped it (a transfer pending, the uncommitted limit): the term's
                // records can no longer be dense, so the term takes no more (§5 rule 2).
                self.close_term(term);
                return false;
            }
            lsn = lsn.add(count);
        }
        true
    }

    /// Proposes the membership change a [`ReplicatedJournal`](super::ReplicatedJournal)
    /// asked for, if any, and answers with its entry's index. Checked with raft-rs's own
    /// `Changer` first, so that a change raft-rs would turn into an empty entry (or
    /// refuse when applying it) is refused with its reason instead.
    fn propose_change(&mut self) {
        let Some(request) = self.shared.change.lock().take() else {
            return;
        };
        let result = self.try_propose_change(request.change, request.voter);
        let _ = request.reply.send(result);
    }

    fn try_propose_change(
        &mut self,
        change: ConfChangeV2,
        voter: Option<NodeId>,
    ) -> Result<u64, ReplicationError> {
        let raft = &self.node.raft;
        let refused = |reason: String| ReplicationError::Membership { reason };
        if raft.state != StateRole::Leader {
            return Err(ReplicationError::NotLeader {
                term: raft.term,
                current: raft.term,
                leader: (raft.leader_id != 0).then_some(raft.leader_id),
            });
        }
        if raft.has_pending_conf() {
            return Err(refused(format!(
                "the change at {} is not applied yet",
                raft.pending_conf_index
            )));
        }
        // Checked here, where no other change can be proposed in between: a change meant
        // to replace a voter that another change already removed would only add one.
        let members = self.shared.status.borrow().members.clone();
        if let Some(voter) = voter.filter(|v| !members.voters.contains(v)) {
            return Err(refused(format!(
                "node {voter} is no longer a voter: {members:?}"
            )));
        }
        if change.changes.iter().any(|c| c.node_id == raft.id) {
            return Err(refused(format!(
                "node {} leads: hand the leadership over before changing its membership",
                raft.id
            )));
        }
        let mut changer = Changer::new(raft.prs());
        let checked = if change.leave_joint() {
            changer.leave_joint()
        } else if let Some(auto_leave) = change.enter_joint() {
            changer.enter_joint(auto_leave, &change.changes)
        } else {
            changer.simple(&change.changes)
        };
        if let Err(e) = checked {
            return Err(refused(e.to_string()));
        }
        let next = raft.raft_log.last_index() + 1;
        if let Err(e) = self.node.propose_conf_change(vec![], change) {
            return Err(refused(format!("raft-rs dropped it: {e}")));
        }
        if self.node.raft.pending_conf_index != next {
            return Err(refused("raft-rs ignored it".into()));
        }
        Ok(next)
    }

    /// raft-rs's leader leaves a joint configuration by itself once it has applied it (a
    /// new leader too, once it applied its log; raft-rs notes a case it may miss, a leader
    /// stepping down before applying the joint entry): a leader still inside one with
    /// nothing pending proposes the leave here.
    pub fn leave_joint_if_left_behind(&mut self) {
        let raft = &self.node.raft;
        // raft-rs counts a new leader's whole log as a pending change until it is applied.
        if raft.state == StateRole::Leader
            && !raft.has_pending_conf()
            && self.shared.status.borrow().members.joint()
        {
            let _ = self.try_propose_change(ConfChangeV2::default(), None);
        }
    }

    /// A leader whose term takes no records hands the leadership to the voter whose log
    /// is furthest along (raft-rs aborts a transfer that does not finish within an
    /// election timeout; this asks again at the next turn).
    fn step_down_if_asked(&mut self) {
        let term = {
            let queue = self.shared.queue.lock();
            if !queue.step_down {
                return;
            }
            queue.term
        };
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader || raft.term != term || raft.lead_transferee.is_some() {
            return;
        }
        let me = raft.id;
        // Voters (of the incoming configuration: not learners, not voters on their way
        // out) heard from lately, furthest along first; after an aborted transfer the next
        // one is asked, so a dead voter is not asked for ever.
        let voters = self.shared.status.borrow().members.voters.clone();
        let mut candidates: Vec<(u64, u64)> = raft
            .prs()
            .iter()
            .filter(|(id, progress)| **id != me && progress.recent_active && voters.contains(id))
            .map(|(id, progress)| (progress.matched, *id))
            .collect();
        candidates.sort_by_key(|(matched, id)| (std::cmp::Reverse(*matched), *id));
        if candidates.is_empty() {
            return;
        }
        let at = candidates
            .iter()
            .position(|(_, id)| Some(*id) == self.last_transfer)
            .map_or(0, |i| (i + 1) % candidates.len());
        let target = candidates[at].1;
        self.last_transfer = Some(target);
        self.node.transfer_leader(target);
    }

    fn close_term(&mut self, term: u64) {
        let mut queue = self.shared.queue.lock();
        if queue.term == term {
            queue.open = false;
            queue.step_down = true;
            queue.records.clear();
            queue.truncate = None;
            queue.release(None);
        }
        drop(queue);
        self.shared.room.notify_waiters();
        self.shared.acks.send_if_modified(|acks| {
            let close = acks.term == term && !acks.closed;
            acks.closed |= close;
            close
        });
    }

    /// Handles one Ready, if there is one: returns the messages to send now.
    pub fn handle_ready(&mut self) -> Result<Vec<Message>, String> {
        if !self.node.has_ready() {
            return Ok(Vec::new());
        }
        let mut ready = self.node.ready();
        let log = self.shared.log.clone();
        // 1. A leader sends while it persists.
        let mut out = ready.take_messages();
        // 2. A snapshot replaces the log.
        let mut snapshot = None;
        if !ready.snapshot().is_empty() {
            log.install_snapshot(ready.snapshot())
                .map_err(|e| format!("installing a snapshot: {e}"))?;
            snapshot = Some(ready.snapshot().get_metadata().index);
        }
        // 4. Stage entries and hard state (readable at once), before applying, so that the
        //    applied index never passes the staged commit index.
        //    A new commit index alone (`must_sync()` false) is written with the next
        //    flush, and this Ready does not wait for it.
        let hard_state = ready.hs().cloned();
        let staged = match hard_state {
            Some(hs) if !ready.must_sync() => log.stage_commit(hs),
            hs => log.stage(ready.take_entries(), hs),
        }
        .map_err(|e| format!("staging a Ready: {e}"))?;
        // 3. Apply what is committed.
        let committed = ready.take_committed_entries();
        // 5. Persisted messages wait for the flush.
        let number = ready.number();
        self.unpersisted.push(Unpersisted {
            number,
            staged,
            held: ready.take_persisted_messages(),
            snapshot,
        });
        self.node.advance_append_async(ready);
        if self.persist_before_fsync && self.node.raft.state == StateRole::Leader {
            // The planted bug: the leader's own copy counts towards the majority before
            // it is on disk (§5 rule 3 broken).
            self.node.on_persist_ready(number);
        }

        // A journal's snapshot is metadata only: its message is all there is to send, so
        // once handed to the transport it is reported finished. Had it been lost, the
        // follower rejects the next append and the leader, finding the entries compacted,
        // sends a snapshot again; unreported, the leader would wait for ever (RAFT.md §6).
        for to in out
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            .map(|m| m.to)
            .collect::<Vec<_>>()
        {
            self.node.report_snapshot(to, SnapshotStatus::Finish);
        }
        // A new term opens (or an old one closes) before anything of it is applied.
        self.publish();
        self.apply(committed)?;
        let persisted = log.persisted_number();
        if staged > persisted {
            self.flush.notify_one();
        } else {
            // Nothing it waits for is left to write: this Ready is as durable as what
            // came before. A new commit index alone waits for the next write, or tick.
            out.extend(self.persisted(persisted));
        }
        Ok(out)
    }

    /// The flusher made everything staged up to `number` durable: the Readies it covers are
    /// persisted, and their held messages go out.
    pub fn persisted(&mut self, number: u64) -> Vec<Message> {
        // The durable commit index may have caught up with an applied truncation.
        if let Err(reason) = self.compact_if_asked() {
            self.fail(reason);
            return Vec::new();
        }
        let done = self
            .unpersisted
            .iter()
            .take_while(|u| u.staged <= number)
            .count();
        if done == 0 {
            return Vec::new();
        }
        let mut messages = Vec::new();
        let mut last = 0;
        let mut snapshot = None;
        for ready in self.unpersisted.drain(..done) {
            last = ready.number;
            messages.extend(ready.held);
            snapshot = ready.snapshot.or(snapshot);
        }
        self.node.on_persist_ready(last);
        if let Some(index) = snapshot {
            self.node.advance_apply_to(index);
            let state = self.shared.log.state();
            let members = Members::of(&state.conf_at(index));
            self.shared.status.send_modify(|s| {
                s.applied = s.applied.max(index);
                s.commit = s.commit.max(index);
                s.readable = s.readable.max(state.first_lsn);
                s.members = members;
            });
        }
        messages
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        let leading = (self.node.raft.state == StateRole::Leader).then_some(self.node.raft.term);
        let mut readable = None;
        let mut acked = None;
        let mut members = None;
        for entry in &entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    let span = format::batch_span(entry.get_entry_type(), &entry.data)
                        .map_err(|e| format!("entry {}: {e}", entry.index))?;
                    if let Some(EntryCommand::TruncateBefore(before)) =
                        EntryCommand::decode(&entry.context)
                            .map_err(|e| format!("entry {}: {e}", entry.index))?
                    {
                        self.truncate_before = self.truncate_before.max(Some(before));
                    }
                    if let Some((first, count)) = span {
                        let end = Lsn::new(first + count);
                        readable = Some(end);
                        // Rule 1: acknowledged only if committed in the term this node
                        // leads, which is the term that proposed it.
                        if leading == Some(entry.term) {
                            acked = Some(end);
                        }
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    if let Some(conf) = self.apply_conf_change(entry)? {
                        let now = Members::of(&conf);
                        if leading.is_some() && !now.voters.contains(&self.node.raft.id) {
                            // A leader the configuration no longer counts as a voter (an
                            // election won inside a joint configuration it then left):
                            // its term takes nothing more, and it hands over (raft-rs
                            // would keep it leading).
                            self.shared.queue.lock().step_down = true;
                            if let Some(term) = leading {
                                self.close_term(term);
                            }
                        }
                        members = Some(now);
                    }
                }
            }
        }
        self.shared
            .log
            .set_applied(last, None)
            .map_err(|e| format!("applying up to {last}: {e}"))?;
        self.node.advance_apply_to(last);
        let commit = self.node.raft.raft_log.committed;
        self.shared.status.send_modify(|s| {
            s.applied = last;
            s.commit = commit;
            if let Some(end) = readable {
                s.readable = end;
            }
            if let Some(members) = members {
                s.members = members;
            }
        });
        if let (Some(end), Some(term)) = (acked, leading) {
            let released = {
                let mut queue = self.shared.queue.lock();
                queue.term == term && queue.release(Some(end))
            };
            if released {
                self.shared.room.notify_waiters();
            }
            self.shared.acks.send_if_modified(|acks| {
                let moved = acks.term == term && acks.end < end;
                if moved {
                    acks.end = end;
                }
                moved
            });
        }
        Ok(())
    }

    /// Drops the prefix an applied truncation entry asked for, as far as what is durably
    /// committed here allows yet (the rest after a later flush). Run when a flush is
    /// reported ([`Group::persisted`]), which every Ready that applies entries is followed
    /// by.
    fn compact_if_asked(&mut self) -> Result<(), String> {
        let Some(before) = self.truncate_before else {
            return Ok(());
        };
        let done = self
            .shared
            .compact_before(before)
            .map_err(|e| format!("truncating before {before}: {e}"))?;
        if done {
            self.truncate_before = None;
        }
        Ok(())
    }

    /// Applies a configuration-change entry: the configuration it makes, which the log
    /// records as taking effect at its index; `None` if raft-rs rejects the change (every
    /// replica rejects it alike: the check depends only on the log). Its data comes from
    /// the leader; data that does not decode stops the group here.
    fn apply_conf_change(&mut self, entry: &Entry) -> Result<Option<ConfState>, String> {
        let change = if entry.get_entry_type() == EntryType::EntryConfChange {
            ConfChange::parse_from_bytes(&entry.data).map(|v1| {
                let mut v2 = ConfChangeV2::default();
                v2.mut_changes()
                    .push(conf::single(v1.node_id, v1.get_change_type()));
                v2
            })
        } else {
            ConfChangeV2::parse_from_bytes(&entry.data)
        }
        .map_err(|e| format!("entry {}: configuration change: {e}", entry.index))?;
        let Ok(conf) = self.node.apply_conf_change(&change) else {
            return Ok(None);
        };
        self.shared
            .log
            .set_applied(entry.index, Some(conf.clone()))
            .map_err(|e| format!("applying the change at {}: {e}", entry.index))?;
        Ok(Some(conf))
    }

    /// Each member's `matched` index as this node, leading, knows it (for
    /// [`ReplicatedJournal::progress`](super::ReplicatedJournal::progress)); empty otherwise.
    pub fn publish_progress(&self) {
        let raft = &self.node.raft;
        let progress: Vec<(NodeId, u64)> = if raft.state == StateRole::Leader {
            let mut p: Vec<_> = raft
                .prs()
                .iter()
                .map(|(id, pr)| (*id, pr.matched))
                .collect();
            p.sort_unstable();
            p
        } else {
            Vec::new()
        };
        let mut slot = self.shared.progress.lock();
        if *slot != progress {
            *slot = progress;
        }
    }

    /// Publishes a change of role, term or leader, and opens or closes the term's queue:
    /// any term change discards what the previous term left (rule 2).
    pub fn publish(&mut self) {
        let raft = &self.node.raft;
        let (role, term) = (raft.state, raft.term);
        let leader = (raft.leader_id != 0).then_some(raft.leader_id);
        let changed = {
            let status = self.shared.status.borrow();
            (status.role, status.term, status.leader) != (role, term, leader)
        };
        if !changed {
            return;
        }
        let was = self.shared.acks.borrow().term;
        if role == StateRole::Leader && was != term {
            let next_lsn = RaftLog::next_batch_lsn(&raft.raft_log);
            *self.shared.queue.lock() = super::handle::Queue::new(term, true, next_lsn);
            self.shared.room.notify_waiters();
            self.shared.acks.send_replace(Acks {
                term,
                end: next_lsn,
                closed: false,
            });
        } else if role != StateRole::Leader || was != term {
            let mut queue = self.shared.queue.lock();
            queue.open = false;
            queue.records.clear();
            queue.truncate = None;
            queue.release(None);
            drop(queue);
            self.shared.room.notify_waiters();
            self.shared.acks.send_if_modified(|acks| {
                let close = !acks.closed;
                acks.closed = true;
                close
            });
        }
        self.shared.status.send_modify(|s| {
            s.role = role;
            s.term = term;
            s.leader = leader;
        });
    }
}

/// The status of a group that has not run yet.
pub(super) fn initial_status(log: &RaftLog) -> GroupStatus {
    let state = log.state();
    GroupStatus {
        role: StateRole::Follower,
        term: state.hard_state.term,
        leader: None,
        applied: state.applied,
        readable: log.lsn_end_at(state.applied).unwrap_or(state.first_lsn),
        failed: None,
        members: Members::of(&state.conf_at(state.applied)),
        commit: state.hard_state.commit,
    }
}

/// Splits `records` into runs of at most `max_bytes` (each at least one record).
fn chunks(records: Vec<bytes::Bytes>, max_bytes: usize) -> Vec<Vec<bytes::Bytes>> {
    let mut out: Vec<Vec<bytes::Bytes>> = Vec::new();
    let mut size = 0;
    for record in records {
        match out.last_mut() {
            Some(chunk) if size + record.len() + 4 <= max_bytes => {
                size += record.len() + 4;
                chunk.push(record);
            }
            _ => {
                size = record.len() + 4;
                out.push(vec![record]);
            }
        }
    }
    out
}

/// Messages grouped by destination node, in node order.
pub(super) fn by_destination(
    group: GroupId,
    messages: Vec<Message>,
    out: &mut BTreeMap<NodeId, Vec<super::Envelope>>,
) {
    for message in messages {
        out.entry(message.to)
            .or_default()
            .push(super::Envelope { group, message });
    }
}
