//! The journal → storage feed (ARCHITECTURE §6), written once for both modes: every durable
//! record of a journal, in Lsn order, decoded and handed to the node's crossbar.
//!
//! [`feed`] always continues from the node's own position ([`StorageNode::next_lsn`]), so
//! whatever breaks — a stream, the journal's node, this node — it resumes exactly where the
//! crossbar stopped: records are pushed once, in order. A record that does not decode, or
//! breaks a journal invariant, stops the feed with an error (applying past it would serve
//! a wrong history). A storage write that fails is retried until it succeeds (the watermark
//! waits; nothing is skipped).
//!
//! Where the records come from is a [`Source`], the only part that differs by mode:
//! - [`LocalJournal`]: a journal in this process (the embedded database). Its feed ends
//!   when the journal is closed.
//! - [`RemoteJournal`]: `JournalService.Tail` on the journal's node, or on any voter of a
//!   replicated journal (a cluster). Transport failures, and a stream that ends because
//!   that node shut down or was cut off, are retried after a pause, forever, on the next
//!   voter if there are others (the node comes back).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use journaldb_journal::{Journal, Tail};
use journaldb_proto::pb::journal_service_client::JournalServiceClient;
use journaldb_proto::{Lsn, PartitionId, pb};
use prost::Message;
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::node::StorageNode;
use crate::store::Engine;

/// Consecutive durable records of one journal, the first at `first`.
#[derive(Debug, Default)]
pub struct Batch {
    /// Lsn of the first payload.
    pub first: Lsn,
    /// Encoded `pb::Record`s.
    pub payloads: Vec<Bytes>,
}

/// Where a feed reads a journal's durable records.
pub trait Source {
    /// The next records, the first at `from` (the node's next position); waits until there
    /// are some. `None` once the journal has ended for good. Errors stop the feed.
    fn next_batch(&mut self, from: Lsn) -> impl Future<Output = Result<Option<Batch>>> + Send;
}

/// Feeds `partition`'s journal from `source` into `node` until the source ends or an
/// invariant breaks (or the future is dropped).
pub async fn feed<S: Engine>(
    node: &StorageNode<S>,
    partition: PartitionId,
    mut source: impl Source,
) -> Result<()> {
    loop {
        let from = node.next_lsn(partition).ok_or_else(|| {
            Error::InvalidArgument(format!("{partition} is not merged by this node"))
        })?;
        let Some(batch) = source.next_batch(from).await? else {
            return Ok(());
        };
        let records = batch
            .payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let lsn = batch.first.add(i as u64);
                pb::Record::decode(payload).map(|r| (lsn, r)).map_err(|e| {
                    Error::Corruption(format!("{partition}, {lsn}: undecodable record: {e}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        node.ingest_retrying(
            partition,
            records.iter().map(|(lsn, r)| (*lsn, r)),
            STORE_RETRY,
        )
        .await?;
    }
}

/// Pause before a feed writes again records a failed store write left pending.
pub const STORE_RETRY: Duration = Duration::from_millis(10);

/// Most records a [`LocalJournal`] hands over at once (one storage write).
const MAX_LOCAL_BATCH: usize = 1024;

/// A journal in this process: every durable record, as soon as it is durable.
pub struct LocalJournal {
    journal: Arc<Journal>,
    tail: Option<Tail>,
}

impl LocalJournal {
    /// The durable records of `journal`.
    pub fn new(journal: Arc<Journal>) -> Self {
        LocalJournal {
            journal,
            tail: None,
        }
    }
}

impl Source for LocalJournal {
    async fn next_batch(&mut self, from: Lsn) -> Result<Option<Batch>> {
        let journal_error = Error::Journal;
        let tail = match &mut self.tail {
            Some(tail) => tail,
            None => self
                .tail
                .insert(self.journal.tail(from).map_err(journal_error)?),
        };
        let Some((first, payload)) = tail.next().await.map_err(journal_error)? else {
            return Ok(None); // closed
        };
        // The tail hands out what follows the last batch, which the node took whole.
        assert_eq!(first, from, "a local feed resumes where the node stopped");
        // Everything already durable goes to storage in one write.
        let mut payloads = vec![payload];
        while payloads.len() < MAX_LOCAL_BATCH {
            match tail.try_next().map_err(journal_error)? {
                Some((_, payload)) => payloads.push(payload),
                None => break,
            }
        }
        Ok(Some(Batch { first, payloads }))
    }
}

/// `partition`'s journal on another node, through `JournalService.Tail`; reconnects after
/// `retry` whenever the stream breaks, ends, or stalls. A replicated journal is tailed from any of
/// its voters ([`RemoteJournal::from_any`]), one at a time: each serves only committed
/// records, the same at every voter, so the feed moves to the next one whenever its
/// stream breaks, ends or stalls — a voter's stream ends when it is cut off from its group
/// (ARCHITECTURE §5 rule 7).
pub struct RemoteJournal {
    /// Where the journal is served: one node, or each voter of a replicated journal.
    replicas: Vec<JournalServiceClient<Channel>>,
    /// Which of them is (or will be) tailed.
    current: usize,
    partition: PartitionId,
    retry: Duration,
    /// How long a stream may bring nothing before its server is left for the next one.
    stall: Duration,
    /// The cluster named in requests (0: none).
    cluster: u64,
    stream: Option<tonic::Streaming<pb::TailReply>>,
}

/// [`RemoteJournal::stall_after`]'s default.
pub const DEFAULT_STALL: Duration = Duration::from_secs(5);

impl RemoteJournal {
    /// The journal of `partition` served through `client`.
    pub fn new(
        client: JournalServiceClient<Channel>,
        partition: PartitionId,
        retry: Duration,
    ) -> Self {
        Self::from_any(vec![client], 0, partition, retry)
    }

    /// The replicated journal of `partition`, served by each of `replicas` (its voters);
    /// tailed from `replicas[first]` first (spread the feeds of many journals over their
    /// voters), then from the next one whenever a stream breaks, ends or stalls.
    ///
    /// # Panics
    /// If `replicas` is empty.
    pub fn from_any(
        replicas: Vec<JournalServiceClient<Channel>>,
        first: usize,
        partition: PartitionId,
        retry: Duration,
    ) -> Self {
        assert!(!replicas.is_empty(), "a journal is served somewhere");
        RemoteJournal {
            current: first % replicas.len(),
            replicas,
            partition,
            retry,
            stall: DEFAULT_STALL,
            cluster: 0,
            stream: None,
        }
    }

    /// Leaves a server whose stream brings nothing for `stall` (default [`DEFAULT_STALL`]):
    /// a voter that still knows a leader but whose commit index stopped advancing (its
    /// replies to the leader lost, its disk hung), or a connection gone silent. Give it a
    /// few of the journal's heartbeat intervals: a journal with a leader is never idle
    /// longer than one (ARCHITECTURE §5 rule 7).
    pub fn stall_after(mut self, stall: Duration) -> Self {
        self.stall = stall;
        self
    }

    /// Names `cluster` in every request, so that a server of another cluster at a voter's
    /// address refuses instead of handing out its own history.
    pub fn of_cluster(mut self, cluster: u64) -> Self {
        self.cluster = cluster;
        self
    }

    /// Gives up on the current replica: the next one is asked after a pause.
    async fn move_on(&mut self) {
        self.stream = None;
        self.current = (self.current + 1) % self.replicas.len();
        tokio::time::sleep(self.retry).await;
    }
}

impl Source for RemoteJournal {
    async fn next_batch(&mut self, from: Lsn) -> Result<Option<Batch>> {
        loop {
            if let Some(stream) = &mut self.stream {
                // The journal closed (its node is shutting down), the voter was cut off
                // from its group, or the transport failed: reconnect (the node will be
                // back), to the next voter if there are others.
                // A reply that does not continue where the feed stands is a broken
                // server's, and a stream that brings nothing for `stall` a stalled one:
                // either is left like a broken stream, its records never applied.
                match tokio::time::timeout(self.stall, stream.message()).await {
                    Ok(Ok(Some(reply))) if reply.first_lsn == from.get() => {
                        return Ok(Some(Batch {
                            first: from,
                            payloads: reply.records,
                        }));
                    }
                    _ => self.move_on().await,
                }
            }
            let request = pb::TailRequest {
                partition: self.partition.get(),
                from_lsn: from.get(),
                cluster: self.cluster,
            };
            let opened = self.replicas[self.current].tail(request);
            match tokio::time::timeout(self.stall, opened).await {
                Ok(Ok(stream)) => self.stream = Some(stream.into_inner()),
                _ => self.move_on().await,
            }
        }
    }
}
