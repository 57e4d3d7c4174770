//! [`AdjudicatorServer`]: the `AdjudicatorService` gRPC service (ARCHITECTURE §4, §9) over
//! this node's [`Partition`]s — the same calls the embedded database makes in process.
//!
//! Verdicts are replies (`committed_ts`, `conflict`, `snapshot_too_old`); everything else is
//! a status whose `journaldb-error` metadata names the kind: an unknown partition or a
//! malformed request is `InvalidArgument`, an oversized write set `LimitExceeded`, a step-down
//! or skew `Unavailable`, and a journal failure mid-append `CommitUnknown` (the client
//! re-asks with `Status`, by txn id — commits are idempotent by it). A request routed by
//! another topology version than the node's is refused `Unavailable` (stale map: refresh
//! the topology and retry); version 0 means "unversioned" (tools, tests).
//!
//! No field of a request is trusted: every key must belong to the partition it was sent to
//! (whatever the topology version), partition and coordinator ids must exist, τs, votes and
//! commit τs must lie within the skew guard, a `Decide`'s τc at or above the vote, a
//! `CommitPrepared` must carry one vote per participant (its own among them) and only keys
//! of those participants. A refused request changes nothing, and nothing reachable from a
//! request panics. `Promise` from outside the node is clamped to this node's clock, so no
//! caller can raise a floor past the present.

use std::collections::BTreeMap;
use std::sync::Arc;

use journaldb_journal::Journal;

use journaldb_proto::keyspace::partition_of;
use journaldb_proto::pb::adjudicator_service_server::AdjudicatorService;
use journaldb_proto::status::ErrorKind;
use journaldb_proto::{Clock, Epoch, Limits, Mutation, PartitionId, Timestamp, TxnId, pb};
use tonic::{Request, Response, Status};

use crate::log::PartitionLog;
use crate::partition::{Partition, Refusal};
use crate::protocol::{CommitDecision, CommitRequest, PrepareRequest, Verdict};
use journaldb_proto::PlantedBug;

/// Where the service finds the partition a request names: the partitions this node serves
/// now. A single-replica node serves a fixed set ([`BTreeMap`]); a replica of replicated
/// journals serves a partition only while it leads its group, and otherwise refuses with
/// a status saying where to go.
pub trait Partitions: Send + Sync + 'static {
    /// The journal the partitions append to.
    type Log: PartitionLog;

    /// The partition `id`, if this node serves it now; otherwise the status to answer
    /// with (nothing was done).
    fn serving(&self, id: PartitionId) -> Result<Arc<Partition<Self::Log>>, Status>;

    /// The partitions this node serves now, for introspection.
    fn ids(&self) -> Vec<PartitionId>;
}

impl<L: PartitionLog> Partitions for BTreeMap<PartitionId, Arc<Partition<L>>> {
    type Log = L;

    fn serving(&self, id: PartitionId) -> Result<Arc<Partition<L>>, Status> {
        self.get(&id).cloned().ok_or_else(|| {
            ErrorKind::InvalidArgument.status(format!("partition {id} is not served here"))
        })
    }

    fn ids(&self) -> Vec<PartitionId> {
        self.keys().copied().collect()
    }
}

/// The adjudicator role's gRPC service.
pub struct AdjudicatorServer<C, P = BTreeMap<PartitionId, Arc<Partition<Journal>>>> {
    partitions: P,
    /// Partitions in the whole key space (this node serves some of them).
    partition_count: u32,
    clock: C,
    limits: Limits,
    topology_version: u64,
}

impl<C, P: Partitions> std::fmt::Debug for AdjudicatorServer<C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdjudicatorServer")
            .field("partitions", &self.partitions.ids())
            .finish_non_exhaustive()
    }
}

impl<C: Clock, L: PartitionLog> AdjudicatorServer<C, BTreeMap<PartitionId, Arc<Partition<L>>>> {
    /// A service deciding for `partitions` of a key space of `partition_count` partitions
    /// (keys are routed by [`partition_of`]), reading time from `clock`.
    pub fn new(
        partitions: impl IntoIterator<Item = Arc<Partition<L>>>,
        partition_count: u32,
        clock: C,
        limits: Limits,
    ) -> Self {
        let partitions = partitions.into_iter().map(|p| (p.id(), p)).collect();
        AdjudicatorServer::routed(partitions, partition_count, clock, limits)
    }
}

impl<C: Clock, P: Partitions> AdjudicatorServer<C, P> {
    /// A service deciding for whichever partitions `partitions` serves at each request.
    pub fn routed(partitions: P, partition_count: u32, clock: C, limits: Limits) -> Self {
        AdjudicatorServer {
            partitions,
            partition_count: partition_count.max(1),
            clock,
            limits,
            topology_version: 0,
        }
    }

    /// Refuses requests routed by another topology version than `version`.
    pub fn with_topology_version(mut self, version: u64) -> Self {
        self.topology_version = version;
        self
    }

    fn check_topology(&self, version: u64) -> Result<(), Status> {
        if version != 0 && self.topology_version != 0 && version != self.topology_version {
            let mut status = ErrorKind::Unavailable.status(format!(
                "stale partition map: the request was routed by topology version {version}, \
                 this node serves version {}; refresh the topology and retry",
                self.topology_version
            ));
            status.metadata_mut().insert(
                journaldb_proto::status::TOPOLOGY_VERSION,
                self.topology_version.into(),
            );
            return Err(status);
        }
        Ok(())
    }

    fn partition(&self, id: u32) -> Result<Arc<Partition<P::Log>>, Status> {
        let id = self.known_partition(id)?;
        self.partitions.serving(id)
    }

    /// A partition id of this key space (served here or not).
    fn known_partition(&self, id: u32) -> Result<PartitionId, Status> {
        if id >= self.partition_count {
            return Err(ErrorKind::InvalidArgument.status(format!(
                "partition {id} does not exist: the key space has {} partitions",
                self.partition_count
            )));
        }
        Ok(PartitionId::new(id))
    }

    /// Refuses a key that `partition` does not own: keys are routed by content, whatever
    /// topology version the request names.
    fn check_owned<'k>(
        &self,
        partition: PartitionId,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<(), Status> {
        for key in keys {
            let owner = partition_of(key, self.partition_count);
            if owner != partition {
                return Err(ErrorKind::InvalidArgument
                    .status(format!("a key of {owner} was sent to {partition}")));
            }
        }
        Ok(())
    }

    fn mutations(&self, wire: Vec<pb::Mutation>) -> Result<Vec<Mutation>, Status> {
        let mutations = wire
            .into_iter()
            .map(Mutation::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ErrorKind::InvalidArgument.status(format!("mutation: {e}")))?;
        if mutations.is_empty() {
            return Err(ErrorKind::InvalidArgument.status("no mutations"));
        }
        self.limits
            .check_write_set(&mutations)
            .map_err(|e| ErrorKind::LimitExceeded.status(e.to_string()))?;
        Ok(mutations)
    }
}

fn txn_id(wire: Option<pb::TxnId>) -> Result<TxnId, Status> {
    wire.map(TxnId::from)
        .ok_or_else(|| ErrorKind::InvalidArgument.status("missing txn_id"))
}

/// `status` (a refusal to serve) as the answer to a retried commit: `CommitUnknown`, with
/// the same message and metadata (the leader to ask, if the refusal named one). An invalid
/// request stays invalid.
fn outcome_unknown(status: Status) -> Status {
    if ErrorKind::of(&status) == Some(ErrorKind::InvalidArgument) {
        return status;
    }
    let mut unknown = ErrorKind::CommitUnknown.status(format!(
        "the outcome of the first attempt is unknown here: {}",
        status.message()
    ));
    for key in [
        journaldb_proto::status::LEADER,
        journaldb_proto::status::TOPOLOGY_VERSION,
    ] {
        if let Some(value) = status.metadata().get(key) {
            unknown.metadata_mut().insert(key, value.clone());
        }
    }
    unknown
}

/// The status of a refusal that is not a verdict.
fn refusal_status(r: Refusal) -> Status {
    match r {
        Refusal::AppendFailed => ErrorKind::CommitUnknown
            .status("the journal failed while appending; the outcome is unknown until recovery"),
        Refusal::Decision(CommitDecision::Unavailable(u)) => {
            ErrorKind::Unavailable.status(format!("{u:?}"))
        }
        Refusal::Decision(CommitDecision::Unknown | CommitDecision::InFlight { .. }) => {
            ErrorKind::CommitUnknown.status("the outcome of this transaction is not known here")
        }
        Refusal::Decision(CommitDecision::Invalid(m)) => ErrorKind::InvalidArgument.status(m),
        Refusal::Decision(other) => {
            ErrorKind::InvalidArgument.status(format!("unexpected decision {other:?}"))
        }
    }
}

/// A commit outcome as a reply: verdicts are values; the rest are statuses.
fn commit_reply(result: Result<Timestamp, Refusal>) -> Result<Response<pb::CommitReply>, Status> {
    use pb::commit_reply::Outcome;
    let outcome = match result {
        Ok(ts) => Outcome::CommittedTs(ts.as_nanos()),
        Err(Refusal::Decision(CommitDecision::Verdict(Verdict::Conflict { key }))) => {
            Outcome::Conflict(pb::Conflict { key })
        }
        Err(Refusal::Decision(CommitDecision::Verdict(Verdict::TooOld))) => {
            Outcome::SnapshotTooOld(pb::Aborted {})
        }
        Err(r) => return Err(refusal_status(r)),
    };
    Ok(Response::new(pb::CommitReply {
        outcome: Some(outcome),
    }))
}

#[tonic::async_trait]
impl<C: Clock + Send + Sync + 'static, P: Partitions> AdjudicatorService
    for AdjudicatorServer<C, P>
{
    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitReply>, Status> {
        let req = request.into_inner();
        // A retry's original may already have been applied under the map it was routed
        // by: answer it whatever the version (keys are checked against the owner anyway).
        if !req.retry {
            self.check_topology(req.topology_version)?;
        }
        let part = match self.partition(req.partition) {
            Ok(part) => part,
            // Not served here now (another replica leads, or none does yet): for a retry
            // that says nothing of the original, which a leader may have applied — it is
            // `CommitUnknown`, never the `Unavailable` a client may take as "not
            // committed" and re-run the transaction on.
            Err(status) if req.retry => return Err(outcome_unknown(status)),
            Err(status) => return Err(status),
        };
        let mutations = self.mutations(req.mutations)?;
        self.check_owned(part.id(), mutations.iter().map(|m| &m.key[..]))?;
        let req = CommitRequest {
            txn_id: txn_id(req.txn_id)?,
            start_ts: Timestamp::from_nanos(req.start_ts),
            mutations,
            retry: req.retry,
        };
        commit_reply(part.commit(self.clock.now(), &req).await)
    }

    async fn prepare(
        &self,
        request: Request<pb::PrepareRequest>,
    ) -> Result<Response<pb::PrepareReply>, Status> {
        use pb::prepare_reply::Vote;
        let req = request.into_inner();
        self.check_topology(req.topology_version)?;
        let part = self.partition(req.partition)?;
        for key in &req.keys {
            self.limits
                .check_key(key)
                .map_err(|e| ErrorKind::LimitExceeded.status(e.to_string()))?;
        }
        if req.keys.len() > self.limits.max_txn_mutations {
            return Err(ErrorKind::LimitExceeded.status(format!(
                "{} keys in one prepare; at most {}",
                req.keys.len(),
                self.limits.max_txn_mutations
            )));
        }
        self.check_owned(part.id(), req.keys.iter().map(|k| &k[..]))?;
        let prepare = PrepareRequest {
            txn_id: txn_id(req.txn_id)?,
            start_ts: Timestamp::from_nanos(req.start_ts),
            keys: req.keys,
            coordinator: self.known_partition(req.coordinator)?,
            coordinator_epoch: req.coordinator_epoch.map(Epoch::from).unwrap_or_default(),
        };
        let vote = match part.prepare(self.clock.now(), &prepare).await {
            Ok(ts) => Vote::VoteTs(ts.as_nanos()),
            Err(Refusal::Decision(CommitDecision::Verdict(Verdict::Conflict { key }))) => {
                Vote::Conflict(pb::Conflict { key })
            }
            Err(Refusal::Decision(CommitDecision::Verdict(Verdict::TooOld))) => {
                Vote::SnapshotTooOld(pb::Aborted {})
            }
            Err(r) => return Err(refusal_status(r)),
        };
        Ok(Response::new(pb::PrepareReply { vote: Some(vote) }))
    }

    async fn commit_prepared(
        &self,
        request: Request<pb::CommitPreparedRequest>,
    ) -> Result<Response<pb::CommitReply>, Status> {
        let req = request.into_inner();
        self.check_topology(req.topology_version)?;
        let part = self.partition(req.partition)?;
        let votes: Vec<Timestamp> = req
            .votes
            .iter()
            .map(|&v| Timestamp::from_nanos(v))
            .collect();
        let participants = req
            .participants
            .iter()
            .map(|&p| self.known_partition(p))
            .collect::<Result<Vec<_>, _>>()?;
        if votes.len() != participants.len() || participants.len() < 2 {
            return Err(ErrorKind::InvalidArgument.status(format!(
                "{} votes for {} participants; a cross-partition commit has one vote for \
                 each of at least two",
                votes.len(),
                participants.len()
            )));
        }
        if participants.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ErrorKind::InvalidArgument
                .status("participants must be listed once each, in ascending order"));
        }
        let mutations = self.mutations(req.mutations)?;
        for m in &mutations {
            let owner = partition_of(&m.key, self.partition_count);
            if participants.binary_search(&owner).is_err() {
                return Err(ErrorKind::InvalidArgument
                    .status(format!("a key of {owner}, which is not a participant")));
            }
        }
        let result = part
            .commit_prepared(
                self.clock.now(),
                txn_id(req.txn_id)?,
                Timestamp::from_nanos(req.start_ts),
                &votes,
                &mutations,
                &participants,
            )
            .await;
        commit_reply(result)
    }

    async fn decide(
        &self,
        request: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::DecideReply>, Status> {
        use pb::decide_request::Outcome;
        let req = request.into_inner();
        let part = self.partition(req.partition)?;
        let outcome = match req.outcome {
            Some(Outcome::CommittedTs(ts)) => Some(Timestamp::from_nanos(ts)),
            Some(Outcome::Aborted(_)) => None,
            None => return Err(ErrorKind::InvalidArgument.status("missing outcome")),
        };
        part.decide(self.clock.now(), txn_id(req.txn_id)?, outcome, true)
            .await
            .map_err(refusal_status)?;
        Ok(Response::new(pb::DecideReply {}))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let req = request.into_inner();
        let part = self.partition(req.partition)?;
        let status = part
            .status(
                self.clock.now(),
                txn_id(req.txn_id)?,
                Timestamp::from_nanos(req.start_ts),
            )
            .await
            .map_err(refusal_status)?;
        Ok(Response::new(status.into_reply()))
    }

    async fn promise(
        &self,
        request: Request<pb::PromiseRequest>,
    ) -> Result<Response<pb::PromiseReply>, Status> {
        let req = request.into_inner();
        let part = self.partition(req.partition)?;
        // Never past this node's present: a promise from outside must not drag the floor
        // (and every later τc, and its commit wait) into the future. A caller that needs
        // more asks again later.
        let trust = part.adjudicator().config().planted_bug == Some(PlantedBug::TrustPromises);
        let asked = Timestamp::from_nanos(req.ts);
        let ts = if trust {
            // The planted bug trusts the promise as far as a century ahead, which stalls
            // the partition (what the liveness check must see), but stops short of the
            // last timestamp, past which no record could be appended at all.
            asked.min(Timestamp::from_nanos(u64::MAX / 2))
        } else {
            asked.min(self.clock.now().latest)
        };
        let floor = part
            .promise_durable(ts)
            .await
            .map_err(|_| ErrorKind::Unavailable.status("the journal failed; stepped down"))?;
        Ok(Response::new(pb::PromiseReply {
            floor: floor.as_nanos(),
        }))
    }
}
