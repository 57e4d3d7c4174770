//! What the harness sees of the running nodes' replicated journals ([`Registry`]): each
//! node's replicas, put there when its `ClusterNode` has started and taken away when its
//! host restarts — so schedules can find a partition's leader — and the end-of-run audit
//! of issue 14's invariant "all replicas agree on every committed entry": each node, in
//! its own host (its file system is its own), hashes every record its replicas hold up to
//! what is committed there, and the checker compares them Lsn by Lsn.

use std::collections::BTreeMap;
use std::sync::Arc;

use journaldb_proto::{Lsn, PartitionId};
use journaldb_raft::ReplicatedJournal;
use parking_lot::Mutex;

/// The running nodes' replicas and their audit reports. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    /// Each running node's replicas, by node name.
    replicas: BTreeMap<String, Vec<(PartitionId, ReplicatedJournal)>>,
    /// The checker asked every node for an audit.
    audit: bool,
    /// Audits, by node name.
    reports: BTreeMap<String, Vec<ReplicaAudit>>,
}

/// What one replica holds, as its node reported it.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaAudit {
    partition: PartitionId,
    /// The Lsn of the first hash.
    first: Lsn,
    /// CRC-32 of each committed record from `first` on.
    hashes: Vec<u32>,
    /// Why its group stopped on the node, if it did.
    failed: Option<String>,
}

impl Registry {
    /// Node `node`'s process started its replicas.
    pub(crate) fn started(&self, node: &str, replicas: Vec<(PartitionId, ReplicatedJournal)>) {
        self.0.lock().replicas.insert(node.to_owned(), replicas);
    }

    /// Node `node`'s host (re)starts: the last process's replicas are gone with it.
    pub(crate) fn forget(&self, node: &str) {
        self.0.lock().replicas.remove(node);
    }

    /// Node `node`'s replica of partition `p`, if its process runs one.
    pub(crate) fn replica(&self, node: &str, p: PartitionId) -> Option<ReplicatedJournal> {
        let state = self.0.lock();
        let (_, journal) = state.replicas.get(node)?.iter().find(|(q, _)| *q == p)?;
        Some(journal.clone())
    }

    /// Asks every running node to report what its replicas hold.
    pub(crate) fn request_audit(&self) {
        self.0.lock().audit = true;
    }

    /// Called by node `node`'s process, in its host, now and then: reports its replicas
    /// once an audit is asked for (again if asked again after a restart).
    pub(crate) fn report_if_asked(&self, node: &str) {
        let replicas = {
            let state = self.0.lock();
            if !state.audit || state.reports.contains_key(node) {
                return;
            }
            state.replicas.get(node).cloned().unwrap_or_default()
        };
        let audits = replicas.iter().map(|(p, j)| audit(*p, j)).collect();
        self.0.lock().reports.insert(node.to_owned(), audits);
    }

    /// Whether `node` reported since the audit was asked for.
    pub(crate) fn reported(&self, node: &str) -> bool {
        self.0.lock().reports.contains_key(node)
    }

    /// The disagreements between the reports: two replicas of a partition holding
    /// different records at one Lsn, or a group stopped by a broken invariant.
    pub(crate) fn disagreements(&self) -> Vec<String> {
        let state = self.0.lock();
        let mut by_partition: BTreeMap<PartitionId, Vec<(&String, &ReplicaAudit)>> =
            BTreeMap::new();
        for (node, audits) in &state.reports {
            for a in audits {
                by_partition.entry(a.partition).or_default().push((node, a));
            }
        }
        let mut out = Vec::new();
        for (p, replicas) in by_partition {
            for (node, a) in &replicas {
                // A log failed by a disk fault is the node's to recover; any other stop —
                // raft-rs panicking, the log refusing what the driver staged or applied, an
                // entry that does not decode — means an invariant broke.
                if let Some(why) = a.failed.as_ref().filter(|w| !is_disk_failure(w)) {
                    out.push(format!("replicas: {node}'s replica of {p} stopped: {why}"));
                }
            }
            for (i, (x, a)) in replicas.iter().enumerate() {
                for (y, b) in &replicas[i + 1..] {
                    if let Some(lsn) = first_difference(a, b) {
                        out.push(format!(
                            "replicas: {x} and {y} hold different committed records of {p} \
                             at {lsn}"
                        ));
                    }
                }
            }
        }
        out
    }
}

/// Whether a group stopped because its disk failed (or its node stopped), not because an
/// invariant broke.
fn is_disk_failure(why: &str) -> bool {
    [
        "I/O error",
        "poisoned",
        "the log failed",
        "the driver stopped",
    ]
    .iter()
    .any(|marker| why.contains(marker))
}

/// What `journal` holds, committed, on this node.
fn audit(partition: PartitionId, journal: &ReplicatedJournal) -> ReplicaAudit {
    let status = journal.status();
    let first = journal.first_lsn();
    let mut hashes = Vec::new();
    let mut failed = status.failed.clone();
    let mut from = first;
    while from < status.readable && failed.is_none() {
        match journal.read(from, 4 << 20) {
            Ok(records) if !records.is_empty() => {
                for (lsn, record) in records {
                    if lsn >= status.readable {
                        break;
                    }
                    hashes.push(crc32fast::hash(&record));
                    from = lsn.next();
                }
            }
            Ok(_) => break,
            Err(e) => failed = Some(e.to_string()),
        }
    }
    ReplicaAudit {
        partition,
        first,
        hashes,
        failed,
    }
}

/// The first Lsn both hold with different records.
fn first_difference(a: &ReplicaAudit, b: &ReplicaAudit) -> Option<Lsn> {
    let from = a.first.max(b.first).get();
    let end = (a.first.get() + a.hashes.len() as u64).min(b.first.get() + b.hashes.len() as u64);
    (from..end).map(Lsn::new).find(|lsn| {
        let at = |x: &ReplicaAudit| x.hashes[(lsn.get() - x.first.get()) as usize];
        at(a) != at(b)
    })
}
