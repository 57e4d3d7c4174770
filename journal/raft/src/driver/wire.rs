//! Raft messages over the wire: [`GrpcTransport`] sends a node's envelopes to its peers on
//! `JournalService.RaftStream`, and [`GrpcInbox`] takes them in on the other side
//! (ARCHITECTURE §5: messages travel as {group, to node, bytes}, batched per node).
//!
//! The receiving side trusts no field: a request for another cluster or node, a message
//! whose sender or destination differs from the request's, a group this node does not
//! run, bytes that are not a Raft message, or more envelopes than any sender batches are
//! refused as a whole and reach no group.
//!
//! Sending is best effort and never blocks the driver, and keeps each peer's messages in
//! the order the driver sent them: one task per peer writes them to one long-lived
//! `JournalService.RaftStream`, without waiting for a reply to each. Concurrent unary
//! requests would reach the peer's driver in whatever order its server's tasks ran, and a
//! follower refuses an append that arrives before the one it follows, which sends the
//! leader back to probing one message at a time (measured: a third of the appends refused
//! at 256 clients); one request at a time in order waits a round trip per request, which
//! under load held a leader to a few hundred requests a second (docs/BENCHMARKS.md).
//! A peer's queue is bounded; batches beyond it are dropped (Raft sends again). A stream
//! is replaced only once its call has ended (the peer ended it, or HTTP/2 keep-alive
//! found its connection dead), so two streams never carry one peer's messages at once;
//! a request the stream does not take within [`REQUEST_TIMEOUT`] is dropped instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use journaldb_journal::service::{RaftInbox, RaftRefusal};
use journaldb_proto::pb;
use journaldb_proto::pb::journal_service_client::JournalServiceClient;
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::prelude::Message;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::{Envelope, GroupId, Inbox, NodeId, Transport};

/// Most envelopes one request may carry.
pub const MAX_ENVELOPES_PER_REQUEST: usize = 4096;
/// Most message bytes one request carries (a request holds at least one message): under
/// tonic's default 4 MiB decoding limit, with room for the framing.
pub const MAX_BYTES_PER_REQUEST: usize = 3 << 20;
/// How long the pump waits for a peer's stream to take a request before dropping it.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The driver's batches queued for one peer (while its stream is full) before more are
/// dropped.
pub const MAX_QUEUED_PER_PEER: usize = 1024;

/// Finds the client of a peer node (its address, and the connector: TCP, or turmoil's in
/// simulation); `None` if the node is unknown.
pub type Connect = dyn Fn(NodeId) -> Option<JournalServiceClient<Channel>> + Send + Sync;

/// Sends envelopes to peers on `JournalService.RaftStream`.
pub struct GrpcTransport {
    cluster: u64,
    node: NodeId,
    connect: Arc<Connect>,
    /// Each peer's queue and the task that drains it (aborted with the transport).
    peers: Mutex<BTreeMap<NodeId, Peer>>,
}

struct Peer {
    queue: mpsc::Sender<Vec<Envelope>>,
    pump: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        // A stopped node sends nothing more, even what its queues still hold.
        for peer in self.peers.get_mut().values() {
            peer.pump.abort();
        }
    }
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl GrpcTransport {
    /// The transport of node `node` of cluster `cluster`, reaching peers through `connect`.
    pub fn new(cluster: u64, node: NodeId, connect: Arc<Connect>) -> GrpcTransport {
        GrpcTransport {
            cluster,
            node,
            connect,
            peers: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Transport for GrpcTransport {
    fn send(&self, to: NodeId, envelopes: Vec<Envelope>) {
        let mut peers = self.peers.lock();
        // A pump only ends with the transport; should one have ended anyway, it is replaced
        // rather than the peer cut off for good.
        if peers.get(&to).is_none_or(|peer| peer.queue.is_closed()) {
            let Some(client) = (self.connect)(to) else {
                return;
            };
            let (queue, batches) = mpsc::channel(MAX_QUEUED_PER_PEER);
            let header = Header {
                cluster: self.cluster,
                from: self.node,
                to,
            };
            let pump = tokio::spawn(pump(header, client, batches));
            peers.insert(to, Peer { queue, pump });
        }
        // Full: the peer is slow or gone; dropped, Raft sends again.
        let _ = peers[&to].queue.try_send(envelopes);
    }
}

/// Who a peer's requests are from and to.
#[derive(Debug, Clone, Copy)]
struct Header {
    cluster: u64,
    from: NodeId,
    to: NodeId,
}

/// A peer's sending task: each batch, with every batch queued behind it, goes as
/// requests on one long-lived `RaftStream` in the order queued. Aborted when the
/// transport is dropped.
async fn pump(
    header: Header,
    client: JournalServiceClient<Channel>,
    mut batches: mpsc::Receiver<Vec<Envelope>>,
) {
    let mut stream: Option<Stream> = None;
    while let Some(mut envelopes) = batches.recv().await {
        while envelopes.len() < MAX_ENVELOPES_PER_REQUEST
            && let Ok(more) = batches.try_recv()
        {
            envelopes.extend(more);
        }
        for request in requests(header, &envelopes) {
            let open = match stream.take() {
                Some(open) if !open.call.is_finished() => open,
                // None yet, or its call ended (the peer ended the stream, or its
                // connection was lost): the peer reads nothing more from it, so a new
                // one cannot be overtaken by it. What it still held is lost, and Raft
                // sends again what matters.
                _ => Stream::open(&client),
            };
            let sent = tokio::time::timeout(REQUEST_TIMEOUT, open.requests.send(request)).await;
            // A peer that takes nothing for a while costs this request (dropped), never
            // the stream: a second stream while the first lives could deliver before
            // what the first still holds. A stream ends only with its call, and a
            // connection gone silent is closed by its HTTP/2 keep-alive.
            if !matches!(sent, Ok(Err(_))) {
                stream = Some(open);
            }
        }
    }
}

/// Requests a peer's open stream holds before the pump waits for it to take them.
const STREAM_QUEUE: usize = 64;

/// An open `RaftStream` to a peer: the call runs in its own task, reading `requests`.
struct Stream {
    requests: mpsc::Sender<pb::RaftRequest>,
    call: tokio::task::JoinHandle<()>,
}

impl Stream {
    fn open(client: &JournalServiceClient<Channel>) -> Stream {
        let (requests, queued) = mpsc::channel(STREAM_QUEUE);
        let mut client = client.clone();
        let call = tokio::spawn(async move {
            // How it ended does not matter: the pump opens another when it next sends.
            let _ = client
                .raft_stream(tokio_stream::wrappers::ReceiverStream::new(queued))
                .await;
        });
        Stream { requests, call }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.call.abort();
    }
}

/// `envelopes` as requests, split by count and by bytes: a request the receiver cannot
/// decode would lose every group's messages in it.
fn requests(header: Header, envelopes: &[Envelope]) -> Vec<pb::RaftRequest> {
    let mut requests: Vec<pb::RaftRequest> = Vec::new();
    let mut bytes = 0;
    for envelope in envelopes {
        let message = encode(&envelope.message);
        let full = requests.last().is_none_or(|r| {
            r.envelopes.len() >= MAX_ENVELOPES_PER_REQUEST
                || bytes + message.len() > MAX_BYTES_PER_REQUEST
        });
        if full {
            bytes = 0;
            requests.push(pb::RaftRequest {
                cluster: header.cluster,
                from_node: header.from,
                to_node: header.to,
                envelopes: Vec::new(),
            });
        }
        bytes += message.len();
        let request = requests.last_mut().expect("pushed above");
        request.envelopes.push(pb::RaftEnvelope {
            group: envelope.group.0,
            message,
        });
    }
    requests
}

fn encode(message: &Message) -> Bytes {
    Bytes::from(
        message
            .write_to_bytes()
            .expect("a raft-rs message always encodes"),
    )
}

/// Takes `JournalService.Raft` and `RaftStream` requests for node `node` of cluster `cluster` into its
/// driver's inbox.
#[derive(Debug)]
pub struct GrpcInbox {
    cluster: u64,
    node: NodeId,
    groups: BTreeSet<GroupId>,
    inbox: Inbox,
}

impl GrpcInbox {
    /// The inbox of `node`, running `groups`, delivering to `inbox`.
    pub fn new(
        cluster: u64,
        node: NodeId,
        groups: impl IntoIterator<Item = GroupId>,
        inbox: Inbox,
    ) -> GrpcInbox {
        GrpcInbox {
            cluster,
            node,
            groups: groups.into_iter().collect(),
            inbox,
        }
    }

    /// The envelopes of `request` for groups run here, each checked; the first thing wrong
    /// refuses them all.
    pub fn check(&self, request: pb::RaftRequest) -> Result<Vec<Envelope>, RaftRefusal> {
        if request.cluster != self.cluster {
            return Err(RaftRefusal::Stranger(format!(
                "Raft messages for cluster {:#x} reached cluster {:#x}",
                request.cluster, self.cluster
            )));
        }
        if request.to_node != self.node || request.from_node == self.node {
            return Err(RaftRefusal::Stranger(format!(
                "Raft messages from node {} to node {} reached node {}",
                request.from_node, request.to_node, self.node
            )));
        }
        if request.envelopes.len() > MAX_ENVELOPES_PER_REQUEST {
            return Err(RaftRefusal::Request(format!(
                "{} envelopes in one request, over {MAX_ENVELOPES_PER_REQUEST}",
                request.envelopes.len()
            )));
        }
        // A group not run here is skipped alone: one sender batches every group's messages,
        // and a group can be on its way to or from this node in a membership change; its
        // messages must not starve the others'. Nothing but them is refused as a request.
        let sent = request.envelopes.len();
        let ours: Vec<pb::RaftEnvelope> = request
            .envelopes
            .into_iter()
            .filter(|envelope| self.groups.contains(&GroupId(envelope.group)))
            .collect();
        if ours.is_empty() && sent > 0 {
            return Err(RaftRefusal::Request(format!(
                "none of the {sent} messages is for a group run on node {}",
                self.node
            )));
        }
        ours.into_iter()
            .map(|envelope| {
                let group = GroupId(envelope.group);
                let message = Message::parse_from_carllerche_bytes(&envelope.message)
                    .map_err(|e| format!("{group:?}: not a Raft message: {e}"))?;
                if !super::is_peer_message(&message) {
                    return Err(format!(
                        "{group:?}: a {:?} of term {} is not a message between peers",
                        message.get_msg_type(),
                        message.term
                    ));
                }
                if message.to != request.to_node || message.from != request.from_node {
                    return Err(format!(
                        "{group:?}: a message from {} to {} in a request from {} to {}",
                        message.from, message.to, request.from_node, request.to_node
                    ));
                }
                Ok(Envelope { group, message })
            })
            .collect::<Result<_, String>>()
            .map_err(RaftRefusal::Request)
    }
}

impl RaftInbox for GrpcInbox {
    fn deliver(&self, request: pb::RaftRequest) -> Result<(), RaftRefusal> {
        let envelopes = self.check(request)?;
        self.inbox.deliver(envelopes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::MessageType;

    fn inbox() -> (GrpcInbox, tokio::sync::mpsc::Receiver<Vec<Envelope>>) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        (GrpcInbox::new(9, 2, [GroupId(5)], Inbox(tx)), rx)
    }

    fn request(message: &Message) -> pb::RaftRequest {
        pb::RaftRequest {
            cluster: 9,
            from_node: 1,
            to_node: 2,
            envelopes: vec![pb::RaftEnvelope {
                group: 5,
                message: encode(message),
            }],
        }
    }

    fn heartbeat(from: u64, to: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = from;
        m.to = to;
        m.term = 3;
        m
    }

    #[test]
    fn a_well_formed_request_is_delivered_intact() {
        let (inbox, mut rx) = inbox();
        inbox.deliver(request(&heartbeat(1, 2))).unwrap();
        let got = rx.try_recv().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].group, got[0].message.clone()),
            (GroupId(5), heartbeat(1, 2))
        );
    }

    #[test]
    fn a_group_not_run_here_is_skipped_alone_and_a_stranger_is_told_apart() {
        let (inbox, mut rx) = inbox();
        let mut request = request(&heartbeat(1, 2));
        let mut elsewhere = request.envelopes[0].clone();
        elsewhere.group = 6;
        request.envelopes.insert(0, elsewhere);
        inbox.deliver(request.clone()).unwrap();
        let got = rx.try_recv().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].group, GroupId(5));

        request.cluster = 8;
        assert!(matches!(
            inbox.deliver(request),
            Err(RaftRefusal::Stranger(_))
        ));
    }

    #[test]
    fn every_wrong_field_refuses_the_whole_request() {
        let (inbox, mut rx) = inbox();
        let good = request(&heartbeat(1, 2));
        let mut cases = Vec::new();
        cases.push(pb::RaftRequest {
            cluster: 8,
            ..good.clone()
        });
        cases.push(pb::RaftRequest {
            to_node: 3,
            ..good.clone()
        });
        cases.push(pb::RaftRequest {
            from_node: 2,
            ..good.clone()
        });
        let mut unknown_group = good.clone();
        unknown_group.envelopes[0].group = 6;
        cases.push(unknown_group);
        let mut garbage = good.clone();
        garbage.envelopes[0].message = Bytes::from_static(&[0xff, 0xff, 0xff]);
        cases.push(garbage);
        cases.push(request(&heartbeat(3, 2))); // forged sender
        for local in [
            MessageType::MsgPropose,
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgTransferLeader,
            MessageType::MsgCheckQuorum,
            MessageType::MsgReadIndex,
        ] {
            let mut m = heartbeat(1, 2);
            m.set_msg_type(local);
            cases.push(request(&m)); // a message only a node gives itself
        }
        let mut termless = heartbeat(1, 2);
        termless.term = 0;
        cases.push(request(&termless));
        cases.push(request(&heartbeat(1, 3))); // another destination
        let mut flood = good.clone();
        flood.envelopes = vec![good.envelopes[0].clone(); MAX_ENVELOPES_PER_REQUEST + 1];
        cases.push(flood);
        let mut mixed = good.clone();
        mixed.envelopes.push(pb::RaftEnvelope {
            group: 5,
            message: Bytes::from_static(b"\x08"),
        });
        cases.push(mixed);
        for (i, case) in cases.into_iter().enumerate() {
            assert!(inbox.deliver(case).is_err(), "case {i} accepted");
        }
        assert!(rx.try_recv().is_err(), "nothing reached the driver");
    }
}
