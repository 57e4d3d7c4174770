//! [`LocalNetwork`]: drivers of several nodes in one process, connected by channels whose
//! links can be cut — for tests of what runs on top of the replicated journals, and for
//! running a whole replicated cluster inside one process. Deliveries wait a fixed delay
//! on tokio time (so paused-time tests and simulations stay deterministic) and keep a
//! trace of what was delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Envelope, Inbox, NodeId, Transport};

/// Channels between the drivers of one process.
#[derive(Debug)]
pub struct LocalNetwork {
    start: Instant,
    delay: Duration,
    inboxes: Mutex<BTreeMap<NodeId, Inbox>>,
    /// Links cut one way, `(from, to)`.
    cut: Mutex<BTreeSet<(NodeId, NodeId)>>,
    /// Nodes cut from every other.
    isolated: Mutex<BTreeSet<NodeId>>,
    trace: Mutex<Vec<String>>,
}

impl LocalNetwork {
    /// A network delivering after `delay`. Must be created within a tokio runtime.
    pub fn new(delay: Duration) -> Arc<LocalNetwork> {
        Arc::new(LocalNetwork {
            start: Instant::now(),
            delay,
            inboxes: Mutex::default(),
            cut: Mutex::default(),
            isolated: Mutex::default(),
            trace: Mutex::default(),
        })
    }

    /// The transport of node `from`.
    pub fn transport(self: &Arc<Self>, from: NodeId) -> Arc<dyn Transport> {
        Arc::new(Link {
            from,
            network: self.clone(),
        })
    }

    /// Delivers envelopes for `node` to `inbox` from now on.
    pub fn attach(&self, node: NodeId, inbox: Inbox) {
        self.inboxes.lock().insert(node, inbox);
    }

    /// Stops delivering to `node` (it crashed or stopped).
    pub fn detach(&self, node: NodeId) {
        self.inboxes.lock().remove(&node);
    }

    /// Cuts (or heals) every link between `node` and the others, both ways.
    pub fn isolate(&self, node: NodeId, on: bool) {
        let mut isolated = self.isolated.lock();
        if on {
            isolated.insert(node);
        } else {
            isolated.remove(&node);
        }
    }

    /// Cuts (or heals) the link from `from` to `to`, one way.
    pub fn cut(&self, from: NodeId, to: NodeId, on: bool) {
        let mut cut = self.cut.lock();
        if on {
            cut.insert((from, to));
        } else {
            cut.remove(&(from, to));
        }
    }

    /// Every delivery so far: time since the network started, sender, receiver, message
    /// type, term, index and entry count. Two runs of one seed must agree on it.
    pub fn trace(&self) -> Vec<String> {
        self.trace.lock().clone()
    }

    fn open(&self, from: NodeId, to: NodeId) -> bool {
        let isolated = self.isolated.lock();
        !isolated.contains(&from)
            && !isolated.contains(&to)
            && !self.cut.lock().contains(&(from, to))
    }
}

struct Link {
    from: NodeId,
    network: Arc<LocalNetwork>,
}

impl Transport for Link {
    fn send(&self, to: NodeId, envelopes: Vec<Envelope>) {
        if !self.network.open(self.from, to) {
            return;
        }
        let network = self.network.clone();
        let from = self.from;
        tokio::spawn(async move {
            tokio::time::sleep(network.delay).await;
            // Cut while in flight, or the receiver is gone: lost.
            if !network.open(from, to) {
                return;
            }
            let Some(inbox) = network.inboxes.lock().get(&to).cloned() else {
                return;
            };
            let elapsed = network.start.elapsed();
            network
                .trace
                .lock()
                .extend(envelopes.iter().map(|Envelope { message: m, .. }| {
                    format!(
                        "{elapsed:?} {from}→{to} {:?} term {} index {} entries {}",
                        m.get_msg_type(),
                        m.term,
                        m.index,
                        m.entries.len()
                    )
                }));
            inbox.deliver(envelopes);
        });
    }
}
