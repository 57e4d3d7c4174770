//! [`Remote`]: the cluster arm of the [`Backend`](crate::backend::Backend) — the gRPC calls
//! a transaction makes (ARCHITECTURE §3, §9): it asks any node for the topology, sends
//! commits to the adjudicator of each partition and reads to a storage replica, failing over
//! to the next replica when one is unreachable or lagging, and fetches a newer topology when
//! a node reports one.
//!
//! Network hygiene: every channel has a connect timeout, HTTP/2 keep-alive (also while
//! idle) and reconnects by itself; every request has a deadline. A commit whose reply is
//! lost is `CommitUnknown`, and `transact` re-asks the coordinator by txn id (commits are
//! idempotent by it). Real-time order: a transaction reads at `now().latest` of the
//! bounded-error clock and a commit is acknowledged only after commit wait
//! (`now().earliest > τc`). `https://` addresses use TLS, verified against
//! [`ClientOptions::tls_ca`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use journaldb_adjudicator::{CommitRequest, PrepareRequest, TxnStatus};
use journaldb_proto::pb::adjudicator_service_client::AdjudicatorServiceClient;
use journaldb_proto::pb::cluster_service_client::ClusterServiceClient;
use journaldb_proto::pb::storage_service_client::StorageServiceClient;
use journaldb_proto::pb::{self, commit_reply, prepare_reply};
use journaldb_proto::status::ErrorKind;
use journaldb_proto::{Clock, Limits, Mutation, PartitionId, SystemClock, Timestamp, TxnId};
use journaldb_storage::{ScanPage, ScanRange};
use rand::TryRngCore;
use tonic::transport::{Channel, Endpoint};

use super::options::ClientOptions;
use super::transport::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, lazy_channel};
use crate::error::{Error, Result};
use crate::retry::RetryState;

/// The cluster as a [`Backend`] sees it.
pub(crate) struct Remote {
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) retry: RetryState,
    options: ClientOptions,
    /// Where to fetch the topology from: the address connected to, then every node.
    seeds: parking_lot::Mutex<Vec<String>>,
    /// Replaced whole when a node reports a newer topology.
    routing: parking_lot::RwLock<Arc<Routing>>,
    /// The replica reads start at; moves on when one fails.
    preferred: AtomicUsize,
}

/// Who serves what, per one topology version.
struct Routing {
    version: u64,
    partitions: u32,
    /// Indexed by partition: the nodes that take its adjudicator's requests (one, or with
    /// replicated journals every replica: any forwards to the leader).
    adjudicators: Vec<Replicas>,
    storage: Vec<StorageServiceClient<Channel>>,
    /// Every node's address.
    nodes: Vec<String>,
}

/// The nodes taking one partition's adjudicator requests, and the one asked first: moved
/// to the leader a refusal names, or to the next replica when one fails.
struct Replicas {
    urls: Vec<String>,
    clients: Vec<AdjudicatorServiceClient<Channel>>,
    preferred: AtomicUsize,
}

impl Replicas {
    fn preferred(&self) -> (usize, AdjudicatorServiceClient<Channel>) {
        let i = self.preferred.load(Ordering::Relaxed) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// The replica named as the leader in `metadata`, if it is one of these.
    fn named_leader(&self, metadata: &tonic::metadata::MetadataMap) -> Option<usize> {
        let url = metadata
            .get(journaldb_proto::status::LEADER)?
            .to_str()
            .ok()?;
        self.urls.iter().position(|u| u == url)
    }

    /// After replica `asked` refused or failed with `status`: ask the leader it named
    /// next, or, if it is unreachable or has no leader to name, the next replica.
    fn redirect(&self, asked: usize, status: &tonic::Status) {
        if self.clients.len() < 2 {
            return;
        }
        let named = self.named_leader(status.metadata());
        let next = match (named, ErrorKind::of(status)) {
            (Some(leader), _) => leader,
            (None, None | Some(ErrorKind::Unavailable)) => (asked + 1) % self.clients.len(),
            (None, Some(_)) => return,
        };
        // Only if no other request moved it meanwhile.
        let _ = self
            .preferred
            .compare_exchange(asked, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Fetches the topology from the node at `url` and opens (lazy) channels for it.
async fn routing(url: &str, options: &ClientOptions) -> Result<Routing> {
    let topology = ClusterServiceClient::new(channel(url, options)?)
        .get_topology(pb::GetTopologyRequest {})
        .await
        .map_err(|s| from_status(s, false))?
        .into_inner();
    let mut placements = topology.placements;
    placements.sort_by_key(|p| p.partition);
    if placements.len() != topology.partitions as usize
        || placements
            .iter()
            .enumerate()
            .any(|(i, p)| p.partition as usize != i)
    {
        return Err(Error::Corruption(format!(
            "{url}: the topology does not place every one of {} partitions once",
            topology.partitions
        )));
    }
    if topology.storage.is_empty() {
        return Err(Error::Corruption(format!(
            "{url}: the topology has no storage replica"
        )));
    }
    let max = journaldb_proto::MAX_MESSAGE_BYTES;
    let adjudicators = placements
        .iter()
        .map(|p| {
            let mut urls = p.replicas.clone();
            // The node named first goes first (the one answering, if it is a replica).
            urls.retain(|u| *u != p.adjudicator);
            urls.insert(0, p.adjudicator.clone());
            let clients = urls
                .iter()
                .map(|url| {
                    channel(url, options).map(|c| {
                        AdjudicatorServiceClient::new(c)
                            .max_decoding_message_size(max)
                            .max_encoding_message_size(max)
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Replicas {
                urls,
                clients,
                preferred: AtomicUsize::new(0),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let storage = topology
        .storage
        .iter()
        .map(|s| {
            channel(&s.address, options).map(|c| {
                StorageServiceClient::new(c)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut nodes: Vec<String> = adjudicators
        .iter()
        .flat_map(|r| r.urls.iter().cloned())
        .chain(topology.storage.iter().map(|s| s.address.clone()))
        .collect();
    nodes.sort();
    nodes.dedup();
    Ok(Routing {
        version: topology.version,
        partitions: topology.partitions,
        adjudicators,
        storage,
        nodes,
    })
}

fn channel(url: &str, options: &ClientOptions) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::InvalidArgument(format!("{url}: {e}")))?
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let ca = options.tls_ca.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{url} uses TLS: give the cluster's CA certificate (ClientOptions::tls_ca, --ca)"
            ))
        })?;
        endpoint = endpoint
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            )
            .map_err(|e| Error::InvalidArgument(format!("TLS for {url}: {e}")))?;
    }
    Ok(lazy_channel(&endpoint, options.connector.as_ref()))
}

/// The error a status becomes. On the commit path a status without a journaldb kind (the
/// connection broke, the deadline passed) means the request may have been applied.
fn from_status(status: tonic::Status, commit_path: bool) -> Error {
    let message = status.message().to_owned();
    match ErrorKind::of(&status) {
        Some(ErrorKind::Conflict) => Error::Conflict { key: Bytes::new() },
        Some(ErrorKind::SnapshotTooOld) => Error::SnapshotTooOld,
        Some(ErrorKind::CommitUnknown) => Error::CommitUnknown,
        Some(ErrorKind::Unavailable) => Error::Unavailable {
            reason: message,
            retry_after: None,
        },
        Some(ErrorKind::Timeout) => Error::Timeout,
        Some(ErrorKind::LimitExceeded | ErrorKind::InvalidArgument) => {
            Error::InvalidArgument(message)
        }
        Some(ErrorKind::Corruption) => Error::Corruption(message),
        Some(ErrorKind::Io) => Error::Io(message),
        None if commit_path => Error::CommitUnknown,
        None if status.code() == tonic::Code::DeadlineExceeded => Error::Timeout,
        None => Error::Unavailable {
            reason: format!("{}: {message}", status.code()),
            retry_after: None,
        },
    }
}

fn missing(what: &str) -> Error {
    Error::Corruption(format!("the server's reply has no {what}"))
}

impl Remote {
    /// Fetches the topology from the node at `url` and sets up the client side.
    pub(crate) async fn connect(url: &str, options: ClientOptions) -> Result<Remote> {
        let routing = routing(url, &options).await?;
        let seed = match options.seed {
            Some(seed) => seed,
            None => rand::rngs::OsRng
                .try_next_u64()
                .map_err(|e| Error::Io(format!("reading OS entropy for the seed: {e}")))?,
        };
        let mut seeds = vec![url.to_owned()];
        seeds.extend(routing.nodes.iter().cloned());
        Ok(Remote {
            limits: options.limits.clone(),
            clock: options
                .clock
                .clone()
                .unwrap_or_else(|| Arc::new(SystemClock::new())),
            retry: RetryState::new(options.retry.clone(), seed, options.txn_id_seed)?,
            options,
            seeds: parking_lot::Mutex::new(seeds),
            routing: parking_lot::RwLock::new(Arc::new(routing)),
            preferred: AtomicUsize::new(0),
        })
    }

    /// The topology version requests are routed by.
    pub(crate) fn topology_version(&self) -> u64 {
        self.routing().version
    }

    pub(crate) fn start_ts(&self) -> Timestamp {
        self.clock.now().latest
    }

    fn routing(&self) -> Arc<Routing> {
        self.routing.read().clone()
    }

    pub(crate) fn partitions(&self) -> u32 {
        self.routing().partitions
    }

    /// The node to send partition `p`'s adjudicator requests to now, the topology version
    /// it was routed by, and how to report what went wrong with it ([`Asked::failed`]).
    fn adjudicator(&self, p: PartitionId) -> Result<(AdjudicatorServiceClient<Channel>, Asked)> {
        let routing = self.routing();
        let replicas = routing
            .adjudicators
            .get(p.get() as usize)
            .ok_or_else(|| Error::InvalidArgument(format!("{p} is not in the topology")))?;
        let (index, client) = replicas.preferred();
        let version = routing.version;
        Ok((
            client,
            Asked {
                routing,
                partition: p.get() as usize,
                index,
                version,
            },
        ))
    }

    /// After an error on the commit path: moves to the leader a replica named (or the next
    /// replica); if the node said our topology is stale, fetches the new one (the
    /// transaction is then retried under it, as the error is `Unavailable`); otherwise the
    /// usual mapping.
    async fn commit_error(&self, asked: &Asked, status: tonic::Status) -> Error {
        asked.failed(&status);

        let newer = status
            .metadata()
            .get(journaldb_proto::status::TOPOLOGY_VERSION)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .filter(|v| *v > self.routing().version);
        if newer.is_some() {
            self.refresh().await;
        }
        from_status(status, true)
    }

    /// Fetches the topology from the first seed that answers, and routes by it if newer.
    async fn refresh(&self) {
        let seeds = self.seeds.lock().clone();
        for url in seeds {
            let Ok(fresh) = routing(&url, &self.options).await else {
                continue;
            };
            // The partition count is fixed for a cluster's life: a topology with another
            // one comes from a misconfigured node (or another cluster) and would route keys
            // to adjudicators without their history. Keep the current one.
            if fresh.partitions != self.routing().partitions {
                continue;
            }
            if fresh.version > self.routing().version {
                let mut seeds = self.seeds.lock();
                for node in &fresh.nodes {
                    if !seeds.contains(node) {
                        seeds.push(node.clone());
                    }
                }
                *self.routing.write() = Arc::new(fresh);
            }
            return;
        }
    }

    /// Runs a read on each storage replica in turn, from the preferred one, until one
    /// answers; a replica that fails with a retryable error (unreachable, lagging) is
    /// skipped and the next one becomes preferred.
    async fn read<T, F, Fut>(&self, read: F) -> Result<T>
    where
        F: Fn(StorageServiceClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let storage = self.routing().storage.clone();
        let n = storage.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        let mut last = None;
        for i in 0..n {
            let r = (first + i) % n;
            match read(storage[r].clone()).await {
                Ok(value) => {
                    self.preferred.store(r, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(status) => {
                    let e = from_status(status, false);
                    if !e.is_retryable() && !matches!(e, Error::Timeout) {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| missing("storage replica")))
    }

    pub(crate) async fn get(&self, key: &[u8], at: Timestamp) -> Result<Option<Bytes>> {
        let key = Bytes::copy_from_slice(key);
        self.read(|mut s| {
            let req = pb::GetRequest {
                key: key.clone(),
                at: at.as_nanos(),
            };
            async move { s.get(req).await.map(|r| r.into_inner().value) }
        })
        .await
    }

    pub(crate) async fn scan(
        &self,
        range: &ScanRange,
        at: Timestamp,
        limit: usize,
        reverse: bool,
    ) -> Result<ScanPage> {
        let limit = u32::try_from(limit.min(journaldb_storage::service::MAX_SCAN_LIMIT as usize))
            .unwrap_or(journaldb_storage::service::MAX_SCAN_LIMIT);
        let reply = self
            .read(|mut s| {
                let req = pb::ScanRequest {
                    range: Some(pb::KeyRange {
                        start: range.start.clone(),
                        end: range.end.clone(),
                    }),
                    at: at.as_nanos(),
                    limit,
                    reverse,
                    keys_only: false,
                    count_only: false,
                };
                async move { s.scan(req).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(ScanPage {
            rows: reply
                .rows
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect(),
            resume: reply.resume.map(|r| ScanRange {
                start: r.start,
                end: r.end,
            }),
        })
    }

    pub(crate) async fn commit(&self, p: PartitionId, req: &CommitRequest) -> Result<Timestamp> {
        let (mut adjudicator, asked) = self.adjudicator(p)?;
        let request = pb::CommitRequest {
            partition: p.get(),
            txn_id: Some(req.txn_id.into()),
            start_ts: req.start_ts.as_nanos(),
            mutations: req.mutations.iter().cloned().map(Into::into).collect(),
            retry: req.retry,
            topology_version: asked.version,
        };
        match adjudicator.commit(request).await {
            Ok(reply) => {
                asked.answered(&reply);
                commit_outcome(reply.into_inner())
            }
            Err(status) => Err(self.commit_error(&asked, status).await),
        }
    }

    pub(crate) async fn prepare(&self, p: PartitionId, req: &PrepareRequest) -> Result<Timestamp> {
        let (mut adjudicator, asked) = self.adjudicator(p)?;
        let request = pb::PrepareRequest {
            partition: p.get(),
            txn_id: Some(req.txn_id.into()),
            start_ts: req.start_ts.as_nanos(),
            keys: req.keys.clone(),
            coordinator: req.coordinator.get(),
            coordinator_epoch: Some(req.coordinator_epoch.into()),
            topology_version: asked.version,
        };
        let reply = match adjudicator.prepare(request).await {
            Ok(reply) => {
                asked.answered(&reply);
                reply.into_inner()
            }
            Err(status) => return Err(self.commit_error(&asked, status).await),
        };
        match reply.vote {
            Some(prepare_reply::Vote::VoteTs(ts)) => Ok(Timestamp::from_nanos(ts)),
            Some(prepare_reply::Vote::Conflict(c)) => Err(Error::Conflict { key: c.key }),
            Some(prepare_reply::Vote::SnapshotTooOld(_)) => Err(Error::SnapshotTooOld),
            None => Err(missing("vote")),
        }
    }

    pub(crate) async fn commit_prepared(
        &self,
        p: PartitionId,
        txn_id: TxnId,
        start_ts: Timestamp,
        votes: &[Timestamp],
        mutations: &[Mutation],
        participants: &[PartitionId],
    ) -> Result<Timestamp> {
        let (mut adjudicator, asked) = self.adjudicator(p)?;
        let request = pb::CommitPreparedRequest {
            partition: p.get(),
            txn_id: Some(txn_id.into()),
            start_ts: start_ts.as_nanos(),
            votes: votes.iter().map(|v| v.as_nanos()).collect(),
            mutations: mutations.iter().cloned().map(Into::into).collect(),
            participants: participants.iter().map(|p| p.get()).collect(),
            topology_version: asked.version,
        };
        match adjudicator.commit_prepared(request).await {
            Ok(reply) => {
                asked.answered(&reply);
                commit_outcome(reply.into_inner())
            }
            Err(status) => Err(self.commit_error(&asked, status).await),
        }
    }

    pub(crate) async fn decide(
        &self,
        p: PartitionId,
        txn_id: TxnId,
        outcome: Option<Timestamp>,
    ) -> Result<()> {
        let outcome = match outcome {
            Some(ts) => pb::decide_request::Outcome::CommittedTs(ts.as_nanos()),
            None => pb::decide_request::Outcome::Aborted(pb::Aborted {}),
        };
        let (mut adjudicator, asked) = self.adjudicator(p)?;
        let request = pb::DecideRequest {
            partition: p.get(),
            txn_id: Some(txn_id.into()),
            outcome: Some(outcome),
        };
        match adjudicator.decide(request).await {
            Ok(_) => Ok(()),
            Err(status) => {
                asked.failed(&status);
                Err(from_status(status, false))
            }
        }
    }

    /// The coordinator's answer about `txn_id` (snapshot `start_ts`); `None` if it cannot
    /// be asked now.
    pub(crate) async fn status(
        &self,
        p: PartitionId,
        txn_id: TxnId,
        start_ts: Timestamp,
    ) -> Option<TxnStatus> {
        let (mut adjudicator, asked) = self.adjudicator(p).ok()?;
        let request = pb::StatusRequest {
            partition: p.get(),
            txn_id: Some(txn_id.into()),
            start_ts: start_ts.as_nanos(),
        };
        match adjudicator.status(request).await {
            Ok(reply) => TxnStatus::from_reply(reply.into_inner()),
            Err(status) => {
                asked.failed(&status);
                None
            }
        }
    }

    /// Commit wait: until `now().earliest > ts`, so a transaction anywhere that begins
    /// after the acknowledgement reads at a later τ.
    pub(crate) async fn acknowledge(&self, ts: Timestamp) {
        journaldb_adjudicator::commit_wait(&*self.clock, ts).await;
    }
}

/// Which replica a request went to, so that a failure moves the partition's next
/// requests on ([`Replicas::redirect`]).
struct Asked {
    routing: Arc<Routing>,
    partition: usize,
    index: usize,
    /// The topology version the request was routed by.
    version: u64,
}

impl Asked {
    fn failed(&self, status: &tonic::Status) {
        self.routing.adjudicators[self.partition].redirect(self.index, status);
    }

    /// After a reply: a replica that forwarded the request names the leader that served
    /// it; the partition's next requests go there directly.
    fn answered<T>(&self, reply: &tonic::Response<T>) {
        let replicas = &self.routing.adjudicators[self.partition];
        if let Some(leader) = replicas.named_leader(reply.metadata()) {
            let _ = replicas.preferred.compare_exchange(
                self.index,
                leader,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

fn commit_outcome(reply: pb::CommitReply) -> Result<Timestamp> {
    match reply.outcome {
        Some(commit_reply::Outcome::CommittedTs(ts)) => Ok(Timestamp::from_nanos(ts)),
        Some(commit_reply::Outcome::Conflict(c)) => Err(Error::Conflict { key: c.key }),
        Some(commit_reply::Outcome::SnapshotTooOld(_)) => Err(Error::SnapshotTooOld),
        None => Err(missing("outcome")),
    }
}
