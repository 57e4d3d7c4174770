//! How a node with replicated journals serves `AdjudicatorService` (ARCHITECTURE §5 rules 6
//! and 8): [`Leaders`], the partitions whose group this node leads, each served in its
//! term; and [`Forwarding`], which serves a request here when its partition is led here,
//! forwards it once to the replica that leads it otherwise, and relays the reply with the
//! leader's address so the client asks there next. Who leads is [`Leadership`]'s to
//! track, not this module's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use journaldb_adjudicator::Partition;
use journaldb_adjudicator::service::{AdjudicatorServer, Partitions};
use journaldb_proto::pb::adjudicator_service_client::AdjudicatorServiceClient;
use journaldb_proto::pb::adjudicator_service_server::AdjudicatorService;
use journaldb_proto::status::{ErrorKind, FORWARDED, LEADER};
use journaldb_proto::{Clock, MAX_MESSAGE_BYTES, PartitionId, pb};
use journaldb_raft::NodeId;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::metadata::PeerBook;
use super::{Leadership, Serving, TermLog};

/// How long a request forwarded to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of a peer's adjudicator service.
fn adjudicator_client(channel: Channel) -> AdjudicatorServiceClient<Channel> {
    AdjudicatorServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Which partitions this node serves now: those whose group it leads, each in its term.
#[derive(Debug, Clone)]
pub(crate) struct Leaders {
    pub(crate) me: NodeId,
    pub(crate) leaderships: Arc<BTreeMap<PartitionId, Leadership>>,
    /// How this node reaches the others.
    pub(crate) peers: PeerBook,
}

impl Leaders {
    /// The other replica to forward a request for `partition` to, and its address: its
    /// leader, if this node knows one and it is not this node.
    fn leader_elsewhere(
        &self,
        partition: u32,
    ) -> Option<(AdjudicatorServiceClient<Channel>, String)> {
        let leadership = self.leaderships.get(&PartitionId::new(partition))?;
        match leadership.serving() {
            Serving::Elsewhere {
                leader: Some(leader),
            } if leader != self.me => Some((
                adjudicator_client(self.peers.channel(leader)?),
                self.peers.url(leader)?,
            )),
            _ => None,
        }
    }
}

impl Partitions for Leaders {
    type Log = TermLog;

    fn serving(&self, id: PartitionId) -> std::result::Result<Arc<Partition<TermLog>>, Status> {
        let Some(leadership) = self.leaderships.get(&id) else {
            return Err(
                ErrorKind::InvalidArgument.status(format!("this node holds no replica of {id}"))
            );
        };
        match leadership.serving() {
            Serving::Leader(partition) => Ok(partition),
            Serving::Elsewhere { leader } => {
                let url = leader
                    .filter(|l| *l != self.me)
                    .and_then(|l| self.peers.url(l));
                let mut status = match &url {
                    Some(url) => ErrorKind::Unavailable
                        .status(format!("{id} is led by {url}, not by this replica")),
                    None if leader == Some(self.me) => ErrorKind::Unavailable
                        .status(format!("{id}: this replica is taking over; retry")),
                    None => ErrorKind::Unavailable
                        .status(format!("{id} has no leader this replica knows of; retry")),
                };
                if let Some(value) = url.and_then(|u| u.parse().ok()) {
                    status.metadata_mut().insert(LEADER, value);
                }
                Err(status)
            }
            Serving::Failed(reason) => Err(ErrorKind::Unavailable
                .status(format!("{id}: this replica cannot serve it: {reason}"))),
        }
    }

    fn ids(&self) -> Vec<PartitionId> {
        self.leaderships
            .iter()
            .filter(|(_, l)| matches!(l.serving(), Serving::Leader(_)))
            .map(|(&p, _)| p)
            .collect()
    }
}

/// The `AdjudicatorService` of a node with replicated journals (see the module docs).
#[derive(Debug)]
pub(crate) struct Forwarding {
    pub(crate) local: AdjudicatorServer<Arc<dyn Clock>, Leaders>,
    pub(crate) leaders: Leaders,
}

/// `request` as forwarded: marked, so it is not forwarded again, with its own deadline
/// (`timeout`).
pub(crate) fn forwarded_within<T>(request: Request<T>, timeout: Duration) -> Request<T> {
    let mut next = Request::new(request.into_inner());
    next.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    next.set_timeout(timeout);
    next
}

/// An adjudicator request as forwarded to its partition's leader.
fn forwarded<T>(request: Request<T>) -> Request<T> {
    forwarded_within(request, FORWARD_TIMEOUT)
}

impl Forwarding {
    /// The leader to forward a request for `partition` to, unless it was forwarded already.
    fn forward<T>(&self, request: &Request<T>, partition: u32) -> Option<Leader> {
        if request.metadata().contains_key(FORWARDED) {
            return None;
        }
        let (client, url) = self.leaders.leader_elsewhere(partition)?;
        Some(Leader { client, url })
    }
}

/// The leader a request is forwarded to.
struct Leader {
    client: AdjudicatorServiceClient<Channel>,
    url: String,
}

impl Leader {
    /// The leader's reply, relayed; a successful one names the leader (`journaldb-leader`),
    /// so the client sends the partition's next requests there directly.
    fn relay<T>(&self, reply: Reply<T>) -> Reply<T> {
        reply.map(|mut response| {
            if let Ok(value) = self.url.parse() {
                response.metadata_mut().insert(LEADER, value);
            }
            response
        })
    }
}

type Reply<T> = std::result::Result<Response<T>, Status>;

// A forwarded request's reply is relayed as it came, a status too: one without a journaldb
// kind (the leader did not answer in time, the connection broke) is, on the commit path,
// `CommitUnknown` to the client, which asks again by transaction id.
#[tonic::async_trait]
impl AdjudicatorService for Forwarding {
    async fn commit(&self, request: Request<pb::CommitRequest>) -> Reply<pb::CommitReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.commit(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.commit(request).await,
        }
    }

    async fn prepare(&self, request: Request<pb::PrepareRequest>) -> Reply<pb::PrepareReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.prepare(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.prepare(request).await,
        }
    }

    async fn commit_prepared(
        &self,
        request: Request<pb::CommitPreparedRequest>,
    ) -> Reply<pb::CommitReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.commit_prepared(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.commit_prepared(request).await,
        }
    }

    async fn decide(&self, request: Request<pb::DecideRequest>) -> Reply<pb::DecideReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.decide(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.decide(request).await,
        }
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Reply<pb::StatusReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.status(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.status(request).await,
        }
    }

    async fn promise(&self, request: Request<pb::PromiseRequest>) -> Reply<pb::PromiseReply> {
        match self.forward(&request, request.get_ref().partition) {
            Some(mut leader) => {
                let reply = leader.client.promise(forwarded(request)).await;
                leader.relay(reply)
            }
            None => self.local.promise(request).await,
        }
    }
}
