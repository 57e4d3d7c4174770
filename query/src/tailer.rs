//! Feeding a storage node from a journal in process (embedded mode): every durable record,
//! in Lsn order, decoded and handed to the crossbar. The cluster does the same over gRPC.
//! It does not decide where to start: callers pass the node's resume position.

use journaldb_journal::Journal;
use journaldb_proto::{Lsn, PartitionId, pb};
use journaldb_storage::{Engine, StorageNode};
use prost::Message;

use crate::error::{Error, Result};

/// Feeds `journal`'s records from `from` into `node` as journal `partition` until the
/// journal is closed. A record that does not decode, or breaks an ordering invariant, stops
/// the feed with [`Error::Corruption`]: nothing after it is applied. A failed storage write
/// is retried until it succeeds (the watermark waits; nothing is skipped).
pub async fn tail_into<S: Engine>(
    journal: &Journal,
    partition: PartitionId,
    from: Lsn,
    node: &StorageNode<S>,
) -> Result<()> {
    let decode = |lsn: Lsn, payload: bytes::Bytes| {
        pb::Record::decode(payload)
            .map_err(|e| Error::Corruption(format!("{partition}, {lsn}: undecodable record: {e}")))
    };
    let mut tail = journal.tail(from)?;
    let mut records = Vec::new();
    while let Some((lsn, payload)) = tail.next().await? {
        // Everything already durable goes to storage in one write.
        records.push((lsn, decode(lsn, payload)?));
        while records.len() < MAX_INGEST {
            let Some((lsn, payload)) = tail.try_next()? else {
                break;
            };
            records.push((lsn, decode(lsn, payload)?));
        }
        let batch = records.iter().map(|(lsn, r)| (*lsn, r));
        node.ingest_retrying(partition, batch, journaldb_storage::follow::STORE_RETRY)
            .await?;
        records.clear();
    }
    Ok(())
}

/// Most records handed to storage in one write.
const MAX_INGEST: usize = 1024;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use journaldb_journal::JournalOptions;
    use journaldb_proto::{Mutation, Timestamp, TxnId};
    use journaldb_storage::MemoryEngine;

    use super::*;

    fn encode(record: pb::Record) -> Bytes {
        Bytes::from(record.encode_to_vec())
    }

    fn commit(ts: u64, key: &str) -> Bytes {
        encode(pb::Record::commit(
            TxnId::new(u128::from(ts)),
            Timestamp::from_nanos(ts),
            [Mutation::put(key.to_owned(), format!("v{ts}"))],
            &[],
        ))
    }

    fn heartbeat(ts: u64) -> Bytes {
        encode(pb::Record::heartbeat(Timestamp::from_nanos(ts)))
    }

    #[test]
    fn records_appended_to_the_journals_become_readable_at_their_timestamp() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (PartitionId::new(0), PartitionId::new(1));
        let open = |name: &str| {
            Arc::new(Journal::open(dir.path().join(name), JournalOptions::default()).unwrap())
        };
        let (ja, jb) = (open("a"), open("b"));
        let node = Arc::new(StorageNode::open(MemoryEngine::new(), &[a, b]).unwrap());
        let feeds: Vec<_> = [(ja.clone(), a), (jb.clone(), b)]
            .into_iter()
            .map(|(j, p)| {
                let node = node.clone();
                rt.spawn(async move { tail_into(&j, p, Lsn::FIRST, &node).await })
            })
            .collect();
        rt.block_on(async {
            ja.append(commit(10, "x")).await.unwrap();
            jb.append(commit(20, "y")).await.unwrap();
            ja.append(heartbeat(30)).await.unwrap();
            let never = std::future::pending();
            assert_eq!(
                node.get(b"x", Timestamp::from_nanos(20), never)
                    .await
                    .unwrap()
                    .as_deref(),
                Some(&b"v10"[..])
            );
            let never = std::future::pending();
            assert_eq!(
                node.get(b"y", Timestamp::from_nanos(20), never)
                    .await
                    .unwrap()
                    .as_deref(),
                Some(&b"v20"[..])
            );
        });
        ja.close().unwrap();
        jb.close().unwrap();
        for feed in feeds {
            rt.block_on(feed).unwrap().unwrap();
        }
    }

    #[test]
    fn an_undecodable_record_stops_the_feed_as_corruption() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let node = StorageNode::open(MemoryEngine::new(), &[PartitionId::new(0)]).unwrap();
        rt.block_on(journal.append(Bytes::from_static(&[0xFF, 0xFF, 0xFF])))
            .unwrap();
        let err = rt
            .block_on(tail_into(&journal, PartitionId::new(0), Lsn::FIRST, &node))
            .unwrap_err();
        assert!(matches!(err, Error::Corruption(_)), "{err}");
    }
}
