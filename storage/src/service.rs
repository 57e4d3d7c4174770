//! [`StorageServer`]: the `StorageService` gRPC service (ARCHITECTURE §6, §9) over a
//! [`StorageNode`] — `Get`, `Scan` with limit, reverse, continuation and pushed-down
//! keys-only / count-only, `Watermark`, `Checkpointed` (what the journals may drop) and
//! `Copy` (a new replica's start, [`crate::copy`]).
//!
//! A read waits for the watermark up to the server's read timeout (the client's gRPC
//! deadline may end it sooner) and then fails `Unavailable`; reads below the
//! garbage-collection horizon fail `SnapshotTooOld`. Bad requests (oversized keys, a zero or
//! oversized page, a range that ends before it starts) get `InvalidArgument` or
//! `LimitExceeded` and touch nothing. Error kinds travel as [`journaldb_proto::status`]
//! describes. It does not own transport setup (addresses, TLS, message sizes): the node
//! binary builds the tonic server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use journaldb_proto::pb::storage_service_server::StorageService;
use journaldb_proto::status::ErrorKind;
use journaldb_proto::{Clock, Limits, PlantedBug, Timestamp, pb};
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::node::StorageNode;
use crate::store::{Engine, ScanRange, VersionStore};

/// Most rows one `Scan` page may ask for.
pub const MAX_SCAN_LIMIT: u32 = 10_000;
/// Most key and value bytes one `Scan` page carries: a page stops early (with a
/// continuation) rather than exceed it, and always holds at least one row.
pub const MAX_SCAN_BYTES: usize = 4 << 20;

/// Settings of a [`StorageServer`].
#[derive(Debug, Clone)]
pub struct StorageServerConfig {
    /// How long a read waits for the watermark before `Unavailable`.
    pub read_timeout: Duration,
    /// Key size limit (ARCHITECTURE §8).
    pub limits: Limits,
    /// A bug planted on purpose (tests and simulation only): `IgnoreWatermark` answers
    /// reads from whatever has been applied, without waiting for the watermark;
    /// `ReleaseBeforeWrite` makes the node's crossbar forget a batch before the store has
    /// written it; `SkipVisibilityWait` answers reads without waiting until their versions
    /// lie in the past (see [`StorageServer::with_clock`]). Others do nothing here.
    #[doc(hidden)]
    pub planted_bug: Option<PlantedBug>,
}

impl Default for StorageServerConfig {
    fn default() -> Self {
        StorageServerConfig {
            read_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            planted_bug: None,
        }
    }
}

/// The storage role's gRPC service.
pub struct StorageServer<S> {
    node: Arc<StorageNode<S>>,
    config: StorageServerConfig,
    /// The replica's bounded-error clock, for the visibility wait; `None`: no wait.
    clock: Option<Arc<dyn Clock>>,
    /// The cluster it belongs to, named in `Copy` replies (0: none).
    cluster: u64,
}

impl<S> std::fmt::Debug for StorageServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S> StorageServer<S> {
    /// A service reading from `node`.
    pub fn new(node: Arc<StorageNode<S>>, config: StorageServerConfig) -> Self {
        StorageServer {
            node,
            config,
            clock: None,
            cluster: 0,
        }
    }

    /// Names `cluster` in `Copy` replies, so that a new replica of another cluster that
    /// reached this one at a stale address refuses the copy.
    pub fn with_cluster(mut self, cluster: u64) -> Self {
        self.cluster = cluster;
        self
    }

    /// Answers a read only once every version it may return lies in the past by `clock`
    /// (hardening defect 10, read-only real-time order): a commit becomes readable here
    /// as soon as it is durable, before its commit wait has passed, so without this a
    /// reader could see a commit while true time is still below its τ, finish, and a
    /// later reader with a slower clock (within the bound) read below it — the cycle
    /// W →wr R1 →rt R2 →rw W. Every version a read at `at` returns has τ ≤ min(`at`,
    /// watermark); the reply waits until `now().earliest` passes that (as Spanner's
    /// commit wait keeps versions invisible until then). It is usually in the past
    /// already: the wait is at most the clock's uncertainty, and only for reads of the
    /// freshest data.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
}

/// The status a storage error travels as.
pub fn to_status(e: Error) -> Status {
    let kind = match &e {
        Error::WatermarkTimeout { .. } | Error::Closed => ErrorKind::Unavailable,
        Error::SnapshotTooOld { .. } => ErrorKind::SnapshotTooOld,
        Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
        Error::Corruption(_) | Error::Crossbar(_) => ErrorKind::Corruption,
        Error::Io(_) | Error::Journal(_) => ErrorKind::Io,
    };
    kind.status(e.to_string())
}

impl<S: Engine> StorageServer<S> {
    fn check_key(&self, what: &str, key: &[u8]) -> Result<(), Status> {
        self.config
            .limits
            .check_key(key)
            .map_err(|e| ErrorKind::LimitExceeded.status(format!("{what}: {e}")))
    }

    fn deadline(&self) -> tokio::time::Sleep {
        tokio::time::sleep(self.config.read_timeout)
    }

    /// The visibility wait of [`StorageServer::with_clock`] for a read at `at`, bounded by
    /// the read timeout.
    async fn wait_until_past(&self, at: Timestamp) -> Result<(), Status> {
        let Some(clock) = &self.clock else {
            return Ok(());
        };
        if self.config.planted_bug == Some(PlantedBug::SkipVisibilityWait) {
            return Ok(());
        }
        let newest = at.min(self.node.watermark());
        let give_up = tokio::time::Instant::now() + self.config.read_timeout;
        loop {
            let now = clock.now().earliest;
            if now > newest {
                return Ok(());
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(ErrorKind::Unavailable.status(format!(
                    "the versions of a read at {at} are not yet in the past by this replica's \
                     clock ({now}); is its clock behind?"
                )));
            }
            let left = newest.saturating_duration_since(now);
            tokio::time::sleep(left.max(std::time::Duration::from_micros(50))).await;
        }
    }
}

#[tonic::async_trait]
impl<S: Engine + 'static> StorageService for StorageServer<S> {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetReply>, Status> {
        let req = request.into_inner();
        self.check_key("key", &req.key)?;
        let at = Timestamp::from_nanos(req.at);
        let value = if self.config.planted_bug == Some(PlantedBug::IgnoreWatermark) {
            self.node.read_at(at, |s| s.get(&req.key, at))
        } else {
            self.node.get(&req.key, at, self.deadline()).await
        }
        .map_err(to_status)?;
        self.wait_until_past(at).await?;
        Ok(Response::new(pb::GetReply { value }))
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanReply>, Status> {
        let req = request.into_inner();
        let range = req
            .range
            .ok_or_else(|| ErrorKind::InvalidArgument.status("scan without a range"))?;
        self.check_key("range start", &range.start)?;
        if let Some(end) = &range.end {
            self.check_key("range end", end)?;
            if end[..] < range.start[..] {
                return Err(ErrorKind::InvalidArgument.status("range ends before it starts"));
            }
        }
        if req.limit == 0 || req.limit > MAX_SCAN_LIMIT {
            return Err(ErrorKind::InvalidArgument.status(format!(
                "scan limit {} is not between 1 and {MAX_SCAN_LIMIT}",
                req.limit
            )));
        }
        let range = ScanRange {
            start: range.start,
            end: range.end,
        };
        let at = Timestamp::from_nanos(req.at);
        let (limit, reverse) = (req.limit as usize, req.reverse);
        let mut page = if self.config.planted_bug == Some(PlantedBug::IgnoreWatermark) {
            self.node
                .read_at(at, |s| s.scan(&range, at, limit, reverse))
        } else {
            self.node
                .scan(&range, at, limit, reverse, self.deadline())
                .await
        }
        .map_err(to_status)?;
        self.wait_until_past(at).await?;
        // Cap the page's bytes; the rest of the range starts at the first row left out.
        let mut bytes = 0;
        let cut = page.rows.iter().position(|(k, v)| {
            bytes += k.len() + if req.keys_only { 0 } else { v.len() };
            bytes > MAX_SCAN_BYTES
        });
        if let Some(i) = cut.map(|i| i.max(1)).filter(|&i| i < page.rows.len()) {
            let first_left_out = page.rows[i].0.clone();
            page.rows.truncate(i);
            page.resume = Some(if req.reverse {
                let mut end = first_left_out.to_vec();
                end.push(0); // just after it: `end` is exclusive
                ScanRange {
                    start: range.start.clone(),
                    end: Some(Bytes::from(end)),
                }
            } else {
                ScanRange {
                    start: first_left_out,
                    end: range.end.clone(),
                }
            });
        }
        let count = page.rows.len() as u64;
        let rows = if req.count_only {
            Vec::new()
        } else {
            page.rows
                .into_iter()
                .map(|(key, value)| pb::KeyValue {
                    key,
                    value: if req.keys_only { Bytes::new() } else { value },
                })
                .collect()
        };
        Ok(Response::new(pb::ScanReply {
            rows,
            count,
            resume: page.resume.map(|r| pb::KeyRange {
                start: r.start,
                end: r.end,
            }),
        }))
    }

    async fn watermark(
        &self,
        _request: Request<pb::WatermarkRequest>,
    ) -> Result<Response<pb::WatermarkReply>, Status> {
        Ok(Response::new(pb::WatermarkReply {
            watermark: self.node.watermark().as_nanos(),
            gc_horizon: self.node.gc_horizon().as_nanos(),
        }))
    }

    async fn checkpointed(
        &self,
        request: Request<pb::CheckpointedRequest>,
    ) -> Result<Response<pb::CheckpointedReply>, Status> {
        let before = Timestamp::from_nanos(request.into_inner().before);
        Ok(Response::new(crate::retention::checkpoint_reply(
            self.node.checkpoint_before(before).as_ref(),
        )))
    }

    async fn copy(
        &self,
        request: Request<pb::CopyRequest>,
    ) -> Result<Response<pb::CopyReply>, Status> {
        let request = request.into_inner();
        if request.max_bytes == 0 {
            return Err(ErrorKind::InvalidArgument.status("a copy page of zero bytes"));
        }
        let max_bytes = (request.max_bytes as usize).min(MAX_SCAN_BYTES);
        let node = self.node.clone();
        let mut reply = node
            .copy_page(&request.after, max_bytes)
            .map_err(to_status)?;
        reply.cluster = self.cluster;
        Ok(Response::new(reply))
    }
}
