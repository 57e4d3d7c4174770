//! [`follow`]: feeding a storage node from a journal on another node, over the
//! `JournalService` `Tail` stream (ARCHITECTURE §6) — the cluster's counterpart of the
//! embedded in-process tailer.
//!
//! It continues from the node's own position ([`StorageNode::next_lsn`]), so a broken
//! stream, a restarted journal node or a restarted storage node resumes exactly where the
//! crossbar stopped: records are pushed once, in order. Transport failures, and a stream
//! that ends because the journal's node shut down, are retried after a pause, forever (the
//! node comes back); a record that does not decode or breaks a journal invariant stops the
//! feed with an error (applying past it would serve a wrong history).

use std::sync::Arc;
use std::time::Duration;

use journaldb_proto::pb::journal_service_client::JournalServiceClient;
use journaldb_proto::{Lsn, PartitionId, pb};
use prost::Message;
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::node::StorageNode;
use crate::store::Engine;

/// Follows `partition`'s journal through `client` into `node` until an invariant breaks
/// (or the task is dropped). Pauses `retry` before each reconnection.
pub async fn follow<S: Engine>(
    mut client: JournalServiceClient<Channel>,
    partition: PartitionId,
    node: Arc<StorageNode<S>>,
    retry: Duration,
) -> Result<()> {
    loop {
        let from = node.next_lsn(partition).ok_or_else(|| {
            Error::InvalidArgument(format!("{partition} is not merged by this node"))
        })?;
        let request = pb::TailRequest {
            partition: partition.get(),
            from_lsn: from.get(),
        };
        if let Ok(stream) = client.tail(request).await {
            let mut stream = stream.into_inner();
            // The journal closed (its node is shutting down) or the transport failed:
            // the loop ends and the feed reconnects; the node will be back.
            while let Ok(Some(reply)) = stream.message().await {
                apply(&node, partition, reply).await?;
            }
        }
        tokio::time::sleep(retry).await;
    }
}

async fn apply<S: Engine>(
    node: &StorageNode<S>,
    partition: PartitionId,
    reply: pb::TailReply,
) -> Result<()> {
    let first = Lsn::new(reply.first_lsn);
    let records = reply
        .records
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let lsn = first.add(i as u64);
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
    .await
}

/// Pause before a feed writes again records a failed store write left pending.
pub const STORE_RETRY: Duration = Duration::from_millis(10);
