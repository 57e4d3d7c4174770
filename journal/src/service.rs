//! [`JournalServer`]: the `JournalService` gRPC service (ARCHITECTURE §5, §9) over this
//! node's journals: `Read` (a bounded page of durable records from a position) and `Tail`
//! (a stream of every durable record from a position, once, in order) — what storage
//! replicas on other nodes follow.
//!
//! `Append` writes records for a writer on another node, at an expected position (so a
//! retried append is detected, never doubled). Only journals registered as remotely
//! written accept it: a journal whose writer is the adjudicator on this node refuses it
//! (`InvalidArgument`), since records that bypass the adjudicator would break its τ order.
//! `Raft` and `RaftStream` carry the Raft messages of replicated journals between nodes
//! (one request, or a long-lived stream of them in order); the journal crate knows
//! nothing of Raft, so it hands each request to the [`RaftInbox`] the node
//! registered ([`JournalServer::with_raft`]), and answers `Unimplemented` without one.
//! Likewise `Read` and `Tail` of a journal this node holds a Raft replica of go to the
//! node's [`ReplicaRecords`] ([`JournalServer::with_replicas`]): only committed records,
//! what a storage node that holds no replica of its own tails (ARCHITECTURE §5 rule 7).

use std::collections::BTreeMap;
use std::sync::Arc;

use journaldb_proto::pb::journal_service_server::JournalService;
use journaldb_proto::status::ErrorKind;
use journaldb_proto::{Lsn, PartitionId, pb};
use tokio::sync::mpsc;
use tonic::{Code, Request, Response, Status};

use crate::error::Error;
use crate::journal::Journal;

/// Most records one `Read` page or `Tail` message carries.
pub const MAX_RECORDS_PER_REPLY: u32 = 4096;
/// Most payload bytes one `Read` page or `Tail` message carries (at least one record is
/// always sent, however large).
pub const MAX_BYTES_PER_REPLY: u64 = 4 << 20;

/// Where a node takes Raft messages from other nodes: checks the request (cluster,
/// destination, each message's group and sender) and hands the messages to its groups.
pub trait RaftInbox: Send + Sync + std::fmt::Debug + 'static {
    /// Takes one request; refuses it (with why) if any field is wrong for this node.
    fn deliver(&self, request: pb::RaftRequest) -> Result<(), RaftRefusal>;
}

/// Why Raft messages were refused, which decides what becomes of the stream they came on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftRefusal {
    /// Not for this node at all (another cluster's, or another node's): the stream ends.
    #[error("{0}")]
    Stranger(String),
    /// This request only (a group not run here, a message no peer sends): the stream's
    /// other requests still count, since one sender batches every group's messages and
    /// a group can be on its way to or from a node during a membership change.
    #[error("{0}")]
    Request(String),
}

/// This node's Raft replicas of journals, as `Read` and `Tail` serve them: committed
/// records only, in Lsn order, each once.
pub trait ReplicaRecords: Send + Sync + std::fmt::Debug + 'static {
    /// Whether this node holds a replica of `partition`'s journal.
    fn holds(&self, partition: PartitionId) -> bool;

    /// One page of the committed records from `from` readable here now (none if there
    /// are none yet), at most `max_records` and about `max_bytes` of them (at least one).
    fn read(
        &self,
        partition: PartitionId,
        from: Lsn,
        max_records: u32,
        max_bytes: u64,
    ) -> Result<pb::ReadReply, Status>;

    /// Every committed record from `from` on, as they become readable here. The stream
    /// ends with an error once this replica cannot be relied on to keep up — it knows
    /// of no leader, or its group stopped here — so that the reader asks another.
    fn tail(
        &self,
        partition: PartitionId,
        from: Lsn,
    ) -> Result<mpsc::Receiver<Result<pb::TailReply, Status>>, Status>;
}

/// The journal role's gRPC service.
#[derive(Debug)]
pub struct JournalServer {
    journals: BTreeMap<PartitionId, Arc<Journal>>,
    /// This node's Raft replicas of journals, if it holds any.
    replicas: Option<Arc<dyn ReplicaRecords>>,
    /// Journals written through `Append` (their writer is elsewhere).
    remote_writers: BTreeMap<PartitionId, tokio::sync::Mutex<()>>,
    /// This node's replicated journals, if it runs any.
    raft: Option<Arc<dyn RaftInbox>>,
    /// Turns true when the node stops: `RaftStream`s end then (they never end on their
    /// own, and would hold a graceful shutdown for its whole grace period).
    closing: Option<tokio::sync::watch::Receiver<bool>>,
    /// This node's cluster id (0: none), which a `Read` or `Tail` that names a cluster
    /// must name.
    cluster: u64,
}

impl JournalServer {
    /// A service for `journals`, each written by a writer on this node (`Append` refused).
    pub fn new(journals: impl IntoIterator<Item = (PartitionId, Arc<Journal>)>) -> Self {
        JournalServer {
            journals: journals.into_iter().collect(),
            remote_writers: BTreeMap::new(),
            replicas: None,
            raft: None,
            closing: None,
            cluster: 0,
        }
    }

    /// Refuses a `Read` or `Tail` that names a cluster other than `cluster`: a reader of
    /// another cluster (one re-created on the same addresses, say) must not take this
    /// journal's records for its own.
    pub fn with_cluster(mut self, cluster: u64) -> Self {
        self.cluster = cluster;
        self
    }

    /// Refuses a request from a reader of another cluster.
    fn check_cluster(&self, asked: u64) -> Result<(), Status> {
        match asked == 0 || asked == self.cluster {
            true => Ok(()),
            false => Err(ErrorKind::InvalidArgument.status(format!(
                "this journal is cluster {:#x}'s, not {asked:#x}'s",
                self.cluster
            ))),
        }
    }

    /// Also takes Raft messages for this node's replicated journals, through `inbox`.
    pub fn with_raft(mut self, inbox: Arc<dyn RaftInbox>) -> Self {
        self.raft = Some(inbox);
        self
    }

    /// Also serves `Read` and `Tail` of the journals this node holds Raft replicas of.
    pub fn with_replicas(mut self, replicas: Arc<dyn ReplicaRecords>) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// The replicas, if this node holds one of `partition`'s journal (and no journal of
    /// its own for it).
    fn replica_of(&self, partition: u32) -> Option<&Arc<dyn ReplicaRecords>> {
        let id = PartitionId::new(partition);
        if self.journals.contains_key(&id) {
            return None;
        }
        self.replicas.as_ref().filter(|r| r.holds(id))
    }

    /// Ends every `RaftStream` once `closing` turns true (the node is stopping).
    pub fn with_closing(mut self, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        self.closing = Some(closing);
        self
    }

    /// Also serves `journal`, written by a remote writer through `Append`.
    pub fn with_remote_writer(mut self, partition: PartitionId, journal: Arc<Journal>) -> Self {
        self.journals.insert(partition, journal);
        self.remote_writers
            .insert(partition, tokio::sync::Mutex::new(()));
        self
    }

    fn journal(&self, partition: u32) -> Result<&Arc<Journal>, Status> {
        self.journals
            .get(&PartitionId::new(partition))
            .ok_or_else(|| {
                ErrorKind::InvalidArgument.status(format!("journal {partition} is not served here"))
            })
    }
}

/// The status a journal error travels as.
pub fn to_status(e: Error) -> Status {
    let kind = match &e {
        Error::Poisoned { .. } | Error::Closed | Error::Locked { .. } => ErrorKind::Unavailable,
        Error::Corruption { .. } | Error::UnsupportedVersion { .. } => ErrorKind::Corruption,
        Error::Truncated { .. } | Error::RecordTooLarge { .. } | Error::InvalidOptions(_) => {
            ErrorKind::InvalidArgument
        }
        Error::Io { .. } => ErrorKind::Io,
    };
    kind.status(e.to_string())
}

fn unimplemented(what: &str) -> Status {
    let mut status = Status::new(
        Code::Unimplemented,
        format!("{what} serves journal replication, which this node does not run yet"),
    );
    status.metadata_mut().insert(
        journaldb_proto::status::ERROR_KIND,
        tonic::metadata::MetadataValue::from_static(ErrorKind::Unavailable.name()),
    );
    status
}

/// Takes durable records from `reader` up to the page limits; `first` is the first one's
/// Lsn. Never waits.
fn page(
    reader: &mut crate::reader::Reader,
    max_records: u32,
    max_bytes: u64,
) -> Result<(Lsn, Vec<bytes::Bytes>), Error> {
    let first = crate::reader::Reader::position(reader);
    let mut records = Vec::new();
    let mut bytes = 0u64;
    while records.len() < max_records as usize && (records.is_empty() || bytes < max_bytes) {
        let Some((_, payload)) = reader.next_record()? else {
            break;
        };
        bytes += payload.len() as u64;
        records.push(payload);
    }
    Ok((first, records))
}

#[tonic::async_trait]
impl JournalService for JournalServer {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendReply>, Status> {
        let req = request.into_inner();
        let journal = self.journal(req.partition)?;
        let Some(writer) = self.remote_writers.get(&PartitionId::new(req.partition)) else {
            return Err(ErrorKind::InvalidArgument.status(format!(
                "journal {} is written by its adjudicator on this node; Append is refused",
                req.partition
            )));
        };
        if req.records.is_empty() {
            return Err(ErrorKind::InvalidArgument.status("nothing to append"));
        }
        let limit = journal.max_record_bytes();
        if let Some(r) = req.records.iter().find(|r| r.len() as u64 > limit) {
            return Err(ErrorKind::LimitExceeded.status(format!(
                "a record of {} bytes is over the journal's limit of {limit}; nothing appended",
                r.len()
            )));
        }
        // One append at a time: the position check and the queueing must not interleave.
        let _one_writer = writer.lock().await;
        let end = journal.submitted_end();
        if req.expected_lsn != end.get() {
            return Err(ErrorKind::InvalidArgument.status(format!(
                "expected to append at {}, the journal is at {end}",
                Lsn::new(req.expected_lsn)
            )));
        }
        let mut last = None;
        for record in req.records {
            last = Some(journal.submit(record).await.map_err(to_status)?);
        }
        let last = last.expect("checked: not empty");
        let last_lsn = last.durable().await.map_err(to_status)?;
        Ok(Response::new(pb::AppendReply {
            first_lsn: end.get(),
            durable_end: last_lsn.next().get(),
        }))
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadReply>, Status> {
        let req = request.into_inner();
        self.check_cluster(req.cluster)?;
        let max_records = match req.max_records {
            0 => MAX_RECORDS_PER_REPLY,
            n => n.min(MAX_RECORDS_PER_REPLY),
        };
        let max_bytes = match req.max_bytes {
            0 => MAX_BYTES_PER_REPLY,
            n => n.min(MAX_BYTES_PER_REPLY),
        };
        if let Some(replicas) = self.replica_of(req.partition) {
            let (partition, from) = (PartitionId::new(req.partition), Lsn::new(req.from_lsn));
            return replicas
                .read(partition, from, max_records, max_bytes)
                .map(Response::new);
        }
        let journal = self.journal(req.partition)?;
        let mut reader = journal
            .read_from(Lsn::new(req.from_lsn))
            .map_err(to_status)?;
        let (first, records) = page(&mut reader, max_records, max_bytes).map_err(to_status)?;
        Ok(Response::new(pb::ReadReply {
            first_lsn: first.get(),
            records,
            durable_end: journal.durable_end().get(),
        }))
    }

    type TailStream = tokio_stream::wrappers::ReceiverStream<Result<pb::TailReply, Status>>;

    async fn tail(
        &self,
        request: Request<pb::TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let req = request.into_inner();
        self.check_cluster(req.cluster)?;
        if let Some(replicas) = self.replica_of(req.partition) {
            let (partition, from) = (PartitionId::new(req.partition), Lsn::new(req.from_lsn));
            let rx = replicas.tail(partition, from)?;
            return Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
                rx,
            )));
        }
        let journal = self.journal(req.partition)?.clone();
        let mut tail = journal.tail(Lsn::new(req.from_lsn)).map_err(to_status)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                // Wait for one record, then send it with everything else already durable.
                let first = match tail.next().await {
                    Ok(Some(record)) => record,
                    Ok(None) => return, // the journal closed: the stream ends
                    Err(e) => {
                        let _ = tx.send(Err(to_status(e))).await;
                        return;
                    }
                };
                let (first_lsn, mut records) = (first.0, vec![first.1]);
                let mut bytes = records[0].len() as u64;
                while records.len() < MAX_RECORDS_PER_REPLY as usize && bytes < MAX_BYTES_PER_REPLY
                {
                    match tail.try_next() {
                        Ok(Some((_, payload))) => {
                            bytes += payload.len() as u64;
                            records.push(payload);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Err(to_status(e))).await;
                            return;
                        }
                    }
                }
                let reply = pb::TailReply {
                    first_lsn: first_lsn.get(),
                    records,
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn raft(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let Some(inbox) = &self.raft else {
            return Err(unimplemented("Raft"));
        };
        inbox
            .deliver(request.into_inner())
            .map_err(|refusal| ErrorKind::InvalidArgument.status(refusal.to_string()))?;
        Ok(Response::new(pb::RaftReply {}))
    }

    async fn raft_stream(
        &self,
        request: Request<tonic::Streaming<pb::RaftRequest>>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let Some(inbox) = &self.raft else {
            return Err(unimplemented("RaftStream"));
        };
        // One request at a time, in the order sent: what the stream is for. A request that
        // cannot be decoded, or comes from a stranger, ends the stream; one refused for
        // itself is dropped alone. This node stopping ends it too.
        let mut stream = request.into_inner();
        let mut closing = self.closing.clone();
        let closed = async move {
            if let Some(closing) = &mut closing
                && closing.wait_for(|closed| *closed).await.is_ok()
            {
                return;
            }
            // No switch, or it was dropped without being thrown: never.
            std::future::pending::<()>().await
        };
        tokio::pin!(closed);
        loop {
            let request = tokio::select! {
                biased;
                () = &mut closed => break,
                request = stream.message() => request?,
            };
            let Some(request) = request else { break };
            match inbox.deliver(request) {
                Ok(()) | Err(RaftRefusal::Request(_)) => {}
                Err(RaftRefusal::Stranger(reason)) => {
                    return Err(ErrorKind::InvalidArgument.status(reason));
                }
            }
        }
        Ok(Response::new(pb::RaftReply {}))
    }
}
