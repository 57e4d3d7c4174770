//! A storage replica that has applied nothing, in a replicated cluster whose journals may
//! have dropped their first records, starts from a copy of another storage replica's
//! versions (ARCHITECTURE §5 "Truncation", `journaldb_storage::copy`) before the node
//! serves.
//!
//! - **When**: a replacement node's first start (`--join`) always copies, when there is
//!   another storage replica; any other start copies when some journal no longer holds
//!   its first record — on this node's own replica, or on any node that answers — so a
//!   copy cut short (a crash, a failed flush) is done again at the next start, whatever
//!   the start is. A store that has applied something is kept, and one that keeps
//!   nothing durable (the memory engine) is rebuilt from the journals, which are never
//!   truncated while it is a replica.
//! - **From whom**: the other storage replicas the topology names, in turn, round after
//!   round, until one copy completes. A copy is refused if it is another cluster's, if its
//!   donor restarts during it, or if it is behind what the journals still hold (a donor
//!   the truncation stopped waiting for): the next donor is asked.
//! - With no other storage replica and truncated journals there is nothing to start
//!   from: the start fails with that reason (keep at least two storage replicas).

use std::collections::BTreeMap;
use std::time::Duration;

use journaldb::{Error, Result};
use journaldb_proto::pb::cluster_service_client::ClusterServiceClient;
use journaldb_proto::pb::storage_service_client::StorageServiceClient;
use journaldb_proto::{Lsn, MAX_MESSAGE_BYTES, PartitionId, pb};
use journaldb_storage::copy::copy_into;
use journaldb_storage::{Engine, VersionStore};

use crate::config::{NodeConfig, TlsFiles};
use crate::env::NodeEnv;
use crate::replicated::metadata::Connect;
use crate::replicated::roles::{Replicas, connector, fetch_metadata};

/// Pause between rounds over every other storage replica.
const COPY_RETRY: Duration = Duration::from_secs(1);
/// Deadline of one page of a copy.
const COPY_PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of a node's answer about its replicas.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Copies another storage replica's versions into `engine` if this start needs it (see
/// the module docs). `joined` is the topology a replacement node joined with.
pub(crate) async fn start_from_copy<E: Engine>(
    engine: &E,
    config: &NodeConfig,
    env: &NodeEnv,
    tls: Option<&TlsFiles>,
    replicas: Option<&Replicas>,
    joined: Option<&pb::Metadata>,
) -> Result<()> {
    if !config.is_replicated() || !engine.applied()?.is_empty() {
        return Ok(());
    }
    // A store that keeps nothing (the memory engine) is rebuilt from the journals at
    // every start, and they keep everything for it: it never reports a checkpoint.
    if joined.is_none() && !engine.is_durable() {
        return Ok(());
    }
    let metadata = match joined {
        Some(metadata) => metadata.clone(),
        None => match fetch_metadata(config, env, tls).await {
            Ok(metadata) => metadata,
            // Nobody answers: the feeds start from the journals; if those are truncated,
            // a feed fails and so does the node, which then starts (and asks) again.
            Err(_) => return Ok(()),
        },
    };
    let connect = connector(env, tls);
    let mut floors = journal_floors(&metadata, &config.node, &connect).await;
    for (p, journal) in replicas.map(Replicas::journals).unwrap_or_default() {
        let floor = floors.entry(p).or_insert(Lsn::FIRST);
        *floor = (*floor).max(journal.first_lsn());
    }
    let truncated = floors.values().any(|first| *first > Lsn::FIRST);
    if joined.is_none() && !truncated {
        return Ok(());
    }
    let donors: Vec<&pb::MetadataNode> = metadata
        .nodes
        .iter()
        .filter(|n| n.storage && n.name != config.node && !metadata.retired.contains(&n.name))
        .collect();
    if donors.is_empty() {
        return match truncated {
            true => Err(Error::Unavailable {
                reason: format!(
                    "{}: the journals no longer hold their first records and no other \
                     storage replica can be copied",
                    config.node
                ),
                retry_after: None,
            }),
            false => Ok(()),
        };
    }
    for round in 0u64.. {
        for donor in &donors {
            let Ok(channel) = connect(&donor.address) else {
                continue;
            };
            let client =
                StorageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
            let copied = copy_into(engine, config.cluster_id(), &floors, |request| {
                let mut client = client.clone();
                let mut request = tonic::Request::new(request);
                request.set_timeout(COPY_PAGE_TIMEOUT);
                async move {
                    client
                        .copy(request)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| journaldb_storage::Error::Io(s.message().to_owned()))
                }
            })
            .await;
            match copied {
                Ok(copied) => {
                    eprintln!(
                        "journaldb: {}: storage copied from {} ({} versions, watermark {})",
                        config.node, donor.name, copied.versions, copied.watermark
                    );
                    return Ok(());
                }
                // Positions written but not flushed: only a new start can tell what the
                // store holds.
                Err(e) if !engine.applied()?.is_empty() => {
                    return Err(Error::from(e));
                }
                // Said once, then every minute: a long partition keeps it waiting.
                Err(e) if round % 60 == 0 => eprintln!(
                    "journaldb: {}: cannot copy storage from {}: {e}",
                    config.node, donor.name
                ),
                Err(_) => {}
            }
        }
        tokio::time::sleep(COPY_RETRY).await;
    }
    unreachable!("the rounds end only with a copy or an error")
}

/// For each partition, the highest first Lsn any other node's replica of its journal
/// reports (`ClusterService.Replicas`): what the journals still hold, as far as the nodes
/// that answer know. Replicas only ever raise it.
async fn journal_floors(
    metadata: &pb::Metadata,
    me: &str,
    connect: &Connect,
) -> BTreeMap<PartitionId, Lsn> {
    let mut floors = BTreeMap::new();
    for node in metadata.nodes.iter().filter(|n| n.name != me) {
        let Ok(channel) = connect(&node.address) else {
            continue;
        };
        let mut request = tonic::Request::new(pb::ReplicasRequest {});
        request.set_timeout(ASK_TIMEOUT);
        let Ok(reply) = ClusterServiceClient::new(channel).replicas(request).await else {
            continue;
        };
        for replica in reply.into_inner().replicas.iter().filter(|r| r.group > 0) {
            let floor = floors
                .entry(PartitionId::new(replica.partition))
                .or_insert(Lsn::FIRST);
            *floor = (*floor).max(Lsn::new(replica.first_lsn));
        }
    }
    floors
}
