//! `JournalService.Read` and `Tail` over this node's Raft replicas of the partitions'
//! journals ([`Records`]): what a storage node that holds no replica of a journal follows
//! (ARCHITECTURE §5 rule 7). Only committed records are handed out — up to this replica's
//! readable end, committed and durable here, whoever leads — so any voter serves the same
//! history, and a reader may move between voters freely.
//!
//! A `Tail` stream ends with `Unavailable` once its replica is idle and knows of no
//! leader, or is no longer a member of its group: a voter cut off from its group stops
//! advancing, and the reader must ask another one. (raft-rs forgets the leader when a
//! follower's election timeout passes without word from it, and when a leader's
//! check-quorum finds no majority.) A voter that has a leader catches up by itself, so
//! its stream stays.

use std::collections::BTreeMap;
use std::time::Duration;

use journaldb_journal::service::{MAX_RECORDS_PER_REPLY, ReplicaRecords};
use journaldb_proto::status::ErrorKind;
use journaldb_proto::{Lsn, PartitionId, pb};
use journaldb_raft::{NodeId, ReplicatedJournal, ReplicationError};
use tokio::sync::{mpsc, watch};
use tonic::Status;

/// How long a `Tail` stream waits with nothing to send before it checks that its replica
/// still knows a leader.
pub(crate) const LEADERLESS_CHECK: Duration = Duration::from_secs(1);

/// This node's replicas of the partitions' journals, as [`ReplicaRecords`].
#[derive(Debug)]
pub(crate) struct Records {
    /// This node.
    me: NodeId,
    journals: BTreeMap<PartitionId, ReplicatedJournal>,
    /// Turns true when the node stops: the streams end then.
    closing: watch::Receiver<bool>,
    /// How long a stream stays idle before its replica's leader is checked.
    check: Duration,
}

impl Records {
    /// Serves `journals`, this node's (`me`) replicas, until `closing` turns true.
    pub(crate) fn new(
        me: NodeId,
        journals: impl IntoIterator<Item = (PartitionId, ReplicatedJournal)>,
        closing: watch::Receiver<bool>,
        check: Duration,
    ) -> Records {
        Records {
            me,
            journals: journals.into_iter().collect(),
            closing,
            check,
        }
    }

    fn journal(&self, partition: PartitionId) -> Result<&ReplicatedJournal, Status> {
        self.journals.get(&partition).ok_or_else(|| {
            ErrorKind::InvalidArgument.status(format!("journal {partition} is not served here"))
        })
    }
}

/// The status a replica's error travels as: a truncated position is the reader's to fix
/// (it asks another voter, or is rebuilt); a stopped group is this node's.
fn to_status(e: ReplicationError) -> Status {
    match e {
        ReplicationError::Truncated { .. } => ErrorKind::InvalidArgument.status(e.to_string()),
        e => ErrorKind::Unavailable.status(e.to_string()),
    }
}

/// The committed records from `from` readable here now: at most `max_records`, about
/// `max_bytes` (at least one if any).
fn page(
    journal: &ReplicatedJournal,
    from: Lsn,
    max_records: u32,
    max_bytes: u64,
) -> Result<Vec<bytes::Bytes>, ReplicationError> {
    let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let mut records = journal.read(from, max_bytes)?;
    records.truncate(max_records as usize);
    Ok(records.into_iter().map(|(_, payload)| payload).collect())
}

impl ReplicaRecords for Records {
    fn holds(&self, partition: PartitionId) -> bool {
        self.journals.contains_key(&partition)
    }

    fn read(
        &self,
        partition: PartitionId,
        from: Lsn,
        max_records: u32,
        max_bytes: u64,
    ) -> Result<pb::ReadReply, Status> {
        let journal = self.journal(partition)?;
        let records = page(journal, from, max_records, max_bytes).map_err(to_status)?;
        // Taken after the page: what is readable only grows, so it covers every record
        // sent.
        let readable = journal.status().readable;
        Ok(pb::ReadReply {
            first_lsn: from.get(),
            records,
            durable_end: readable.get(),
        })
    }

    fn tail(
        &self,
        partition: PartitionId,
        from: Lsn,
    ) -> Result<mpsc::Receiver<Result<pb::TailReply, Status>>, Status> {
        let journal = self.journal(partition)?.clone();
        let (tx, rx) = mpsc::channel(4);
        let (closing, check) = (self.closing.clone(), self.check);
        tokio::spawn(tail(self.me, journal, from, tx, closing, check));
        Ok(rx)
    }
}

/// Sends `journal`'s committed records from `from` on `tx` until the reader goes away,
/// the node stops, or the replica cannot be relied on (see the module docs).
async fn tail(
    me: NodeId,
    journal: ReplicatedJournal,
    mut from: Lsn,
    tx: mpsc::Sender<Result<pb::TailReply, Status>>,
    mut closing: watch::Receiver<bool>,
    check: Duration,
) {
    loop {
        let waited = tokio::select! {
            biased;
            _ = closing.wait_for(|closed| *closed) => return,
            () = tx.closed() => return,
            waited = tokio::time::timeout(check, journal.wait_readable(from)) => waited,
        };
        let outcome = match waited {
            Err(_idle) => {
                let status = journal.status();
                let members = &status.members;
                let member = [&members.voters, &members.learners, &members.outgoing]
                    .iter()
                    .any(|ids| ids.contains(&me));
                match (status.leader, member) {
                    (Some(_), true) => continue,
                    (None, _) => Err(ErrorKind::Unavailable.status(format!(
                        "this node's replica of {:?} knows of no leader: ask another voter",
                        journal.group()
                    ))),
                    (Some(_), false) => Err(ErrorKind::Unavailable.status(format!(
                        "this node is no longer a member of {:?}: ask a voter",
                        journal.group()
                    ))),
                }
            }
            Ok(Err(e)) => Err(to_status(e)),
            Ok(Ok(_)) => match page(&journal, from, MAX_RECORDS_PER_REPLY, MAX_BYTES_PER_TAIL) {
                Ok(records) if records.is_empty() => Err(ErrorKind::Unavailable.status(format!(
                    "record {from} of {:?} is readable here but could not be read",
                    journal.group()
                ))),
                Ok(records) => Ok(pb::TailReply {
                    first_lsn: from.get(),
                    records,
                }),
                Err(e) => Err(to_status(e)),
            },
        };
        let failed = outcome.is_err();
        if let Ok(reply) = &outcome {
            from = Lsn::new(from.get() + reply.records.len() as u64);
        }
        if tx.send(outcome).await.is_err() || failed {
            return;
        }
    }
}

/// Most record bytes one `Tail` message carries (at least one record).
const MAX_BYTES_PER_TAIL: u64 = journaldb_journal::service::MAX_BYTES_PER_REPLY;
