//! The metadata group (ARCHITECTURE §5, rule 8; issue 14): the cluster's topology — its
//! id, partition count, nodes and their addresses, which Raft groups each node holds a
//! replica of, each group's first voters, and the names retired by replacements — kept in
//! Raft group 0, so that nodes and clients read it from one replicated log instead of
//! configuration files that can disagree.
//!
//! The group's voters are the first replicas of partition 0 (fixed at bootstrap, changed
//! only by replacements). Its log holds [`pb::MetadataCommand`]s; every replica applies
//! them in log order to the same state ([`apply`], deterministic), and serves what it
//! applied. The first leader of a group with no topology proposes the **genesis** (the
//! bootstrap configuration; every bootstrapping node has the same); a later genesis is
//! ignored. A **replacement** (`old` → `new`, a new name and an empty data directory)
//! moves every group of `old` to `new` and retires `old`'s name for good (rule 3: a node
//! that lost its disk never comes back under its old Raft id). The Raft groups themselves
//! change afterwards, one by one, through `ReplicatedJournal::replace_voter` on each
//! group's leader; the topology lists replicas, never leaders.
//!
//! Where the design is not built yet: a node that holds no replica of group 0 and joined
//! after bootstrap reads the topology from its peers at start only; partitions never move
//! between existing nodes (a replacement is node for node); the configuration files of
//! the nodes are a mirror (`journaldb admin replace` rewrites a local cluster's), read
//! for this node's name, data directory and groups.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use journaldb::{Error, Result};
use journaldb_proto::{Lsn, pb};
use journaldb_raft::raft::StateRole;
use journaldb_raft::{GroupId, NodeId, ReplicatedJournal, ReplicationError};
use parking_lot::RwLock;
use prost::Message;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::config::NodeConfig;

/// The metadata group's Raft group id (partition `p`'s journal is group `p + 1`).
pub(crate) const METADATA: GroupId = GroupId(0);

/// Longest node name a replacement may give.
const MAX_NAME: usize = 64;
/// Longest address a replacement may give.
const MAX_ADDRESS: usize = 256;

/// The cluster's first topology, from a bootstrapping node's configuration: every node
/// with the groups the configuration gives it; group 0's voters are partition 0's.
pub(crate) fn genesis(config: &NodeConfig) -> pb::Metadata {
    let ids = |nodes: Vec<&crate::config::NodeEntry>| {
        let mut ids: Vec<NodeId> = nodes
            .iter()
            .map(|n| NodeConfig::raft_id_of(&n.name))
            .collect();
        ids.sort_unstable();
        ids
    };
    let metadata_voters: Vec<&str> = config.replicas(0).iter().map(|n| n.name.as_str()).collect();
    let mut origins = vec![pb::GroupOrigin {
        group: METADATA.0,
        voters: ids(config.replicas(0)),
    }];
    origins.extend((0..config.partitions).map(|p| pb::GroupOrigin {
        group: u64::from(p) + 1,
        voters: ids(config.replicas(p)),
    }));
    pb::Metadata {
        version: 1,
        cluster_id: config.cluster_id(),
        partitions: config.partitions,
        nodes: config
            .nodes
            .iter()
            .map(|n| pb::MetadataNode {
                name: n.name.clone(),
                address: n.url(),
                storage: n.storage,
                groups: metadata_voters
                    .contains(&n.name.as_str())
                    .then_some(METADATA.0)
                    .into_iter()
                    .chain(n.partitions.iter().map(|&p| u64::from(p) + 1))
                    .collect(),
            })
            .collect(),
        origins,
        retired: Vec::new(),
    }
}

/// Checks a node name a request gives: 1 to 64 letters, digits, `-`, `_` or `.`.
pub(crate) fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "a node name has 1 to {MAX_NAME} characters, not {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "node name {name:?}: {c:?} is not a letter, digit, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// A request's address as the topology holds it: `http://host:port` (`https` kept), with
/// a host and a port, at most 256 characters.
pub(crate) fn normalize_address(address: &str) -> std::result::Result<String, String> {
    if address.is_empty() || address.len() > MAX_ADDRESS {
        return Err(format!(
            "an address has 1 to {MAX_ADDRESS} characters, not {}",
            address.len()
        ));
    }
    let url = match address.contains("://") {
        true => address.to_owned(),
        false => format!("http://{address}"),
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("address {address:?}: {e}"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let has_port = uri.port_u16().is_some_and(|p| p != 0);
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    if !scheme_ok || !has_port || !bare || uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "address {address:?}: give host:port (or http(s)://host:port), nothing more"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Whether `request` is still to be done on `metadata` (`Ok(true)`), is done already
/// (`Ok(false)`: the same replacement was applied), or cannot be (why). Deterministic: the
/// leader checks before proposing, every replica again when applying.
pub(crate) fn check_replace(
    metadata: &pb::Metadata,
    request: &pb::ReplaceNodeRequest,
) -> std::result::Result<bool, String> {
    let (old, new) = (request.old.as_str(), request.new.as_str());
    check_name(old)?;
    check_name(new)?;
    let address = normalize_address(&request.address)?;
    if address != request.address {
        return Err(format!("address {:?} is not normalized", request.address));
    }
    if old == new {
        return Err(format!(
            "a node is replaced by a node under a new name, not by {new} itself"
        ));
    }
    let retired = |name: &str| metadata.retired.iter().any(|r| r == name);
    if let Some(node) = metadata.nodes.iter().find(|n| n.name == new) {
        return match retired(old) && node.address == address {
            true => Ok(false),
            false => Err(format!("the cluster already has a node named {new}")),
        };
    }
    if retired(new) {
        return Err(format!(
            "{new} was replaced before: a name never comes back (its votes were lost)"
        ));
    }
    let new_id = NodeConfig::raft_id_of(new);
    if let Some(clash) = metadata
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .chain(metadata.retired.iter().map(String::as_str))
        .find(|n| NodeConfig::raft_id_of(n) == new_id)
    {
        return Err(format!(
            "{new} and {clash} have the same Raft id; choose another name"
        ));
    }
    if !metadata.nodes.iter().any(|n| n.name == old) {
        return Err(match retired(old) {
            true => format!("{old} was replaced already"),
            false => format!("the cluster has no node named {old}"),
        });
    }
    if let Some(other) = metadata
        .nodes
        .iter()
        .find(|n| n.address == address && n.name != old)
    {
        return Err(format!("{address} is {}'s address", other.name));
    }
    Ok(true)
}

/// Applies one committed record of the metadata group to `state`. A command that cannot
/// apply (a genesis after the first, a replacement its checks refuse) changes nothing:
/// every replica decides the same from the same log.
pub(crate) fn apply(state: &mut Option<pb::Metadata>, command: pb::MetadataCommand) {
    match command.command {
        Some(pb::metadata_command::Command::Genesis(genesis)) if state.is_none() => {
            *state = Some(genesis);
        }
        Some(pb::metadata_command::Command::Genesis(_)) => {}
        Some(pb::metadata_command::Command::Replace(request)) => {
            let Some(metadata) = state.as_mut() else {
                return;
            };
            if check_replace(metadata, &request) != Ok(true) {
                return;
            }
            let at = metadata
                .nodes
                .iter()
                .position(|n| n.name == request.old)
                .expect("checked: the old node is listed");
            let old = metadata.nodes.remove(at);
            metadata.nodes.insert(
                at,
                pb::MetadataNode {
                    name: request.new,
                    address: request.address,
                    storage: old.storage,
                    groups: old.groups,
                },
            );
            metadata.retired.push(old.name);
            metadata.version += 1;
        }
        None => {}
    }
}

/// The groups `metadata` gives node `name`, or `None` if it lists no such node.
pub(crate) fn groups_of<'a>(metadata: &'a pb::Metadata, name: &str) -> Option<&'a [u64]> {
    let node = metadata.nodes.iter().find(|n| n.name == name)?;
    Some(&node.groups)
}

/// The first voters of `group`.
pub(crate) fn origin(metadata: &pb::Metadata, group: GroupId) -> Option<Vec<NodeId>> {
    metadata
        .origins
        .iter()
        .find(|o| o.group == group.0)
        .map(|o| o.voters.clone())
}

/// Opens a (lazy) channel to a peer's address.
pub(crate) type Connect = Arc<dyn Fn(&str) -> Result<Channel> + Send + Sync>;

/// How a node reaches its peers, by Raft id: from the configuration at start, then from
/// every topology the metadata group applies (a replacement brings a new address).
#[derive(Clone)]
pub(crate) struct PeerBook {
    me: NodeId,
    peers: Arc<RwLock<BTreeMap<NodeId, (String, Channel)>>>,
    connect: Connect,
}

impl std::fmt::Debug for PeerBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerBook")
            .field("me", &self.me)
            .field("peers", &self.peers.read().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PeerBook {
    /// The peers named `(name, url)`, other than `me`; `connect` makes a lazy channel.
    pub(crate) fn new(
        me: NodeId,
        peers: impl IntoIterator<Item = (String, String)>,
        connect: Connect,
    ) -> Result<PeerBook> {
        let book = PeerBook {
            me,
            peers: Arc::default(),
            connect,
        };
        for (name, url) in peers {
            book.learn(&name, &url)?;
        }
        Ok(book)
    }

    /// Records (or updates) how to reach the node named `name`.
    fn learn(&self, name: &str, url: &str) -> Result<()> {
        let id = NodeConfig::raft_id_of(name);
        if id == self.me || self.url(id).as_deref() == Some(url) {
            return Ok(());
        }
        let channel = (self.connect)(url)?;
        self.peers.write().insert(id, (url.to_owned(), channel));
        Ok(())
    }

    /// Learns every node of `metadata`.
    fn learn_all(&self, metadata: &pb::Metadata) {
        for node in &metadata.nodes {
            // An address the metadata group holds was checked when proposed.
            if let Err(e) = self.learn(&node.name, &node.address) {
                eprintln!(
                    "journaldb: cannot reach {} at {}: {e}",
                    node.name, node.address
                );
            }
        }
    }

    /// The address of node `id`.
    pub(crate) fn url(&self, id: NodeId) -> Option<String> {
        self.peers.read().get(&id).map(|(url, _)| url.clone())
    }

    /// A channel to node `id`.
    pub(crate) fn channel(&self, id: NodeId) -> Option<Channel> {
        self.peers.read().get(&id).map(|(_, c)| c.clone())
    }
}

/// What this node applied of the metadata group.
#[derive(Debug, Clone, Default)]
pub(crate) struct Applied {
    /// Records below it are applied.
    pub(crate) end: Lsn,
    /// The topology, once a genesis is applied.
    pub(crate) metadata: Option<Arc<pb::Metadata>>,
    /// Why applying stopped (the group stopped here, or a record did not decode).
    pub(crate) stopped: Option<String>,
}

/// Why a command could not be recorded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProposeError {
    /// This node does not lead the metadata group; `leader` does, if known.
    #[error("this node does not lead the metadata group")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// The group did not take it.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// It was committed, but this replica stopped applying.
    #[error("the metadata group stopped applying here: {0}")]
    Stopped(String),
}

/// This node's replica of the metadata group: it applies every committed record, and
/// proposes the genesis when it leads a group that has none.
#[derive(Debug, Clone)]
pub(crate) struct MetadataGroup {
    journal: ReplicatedJournal,
    applied: watch::Receiver<Applied>,
    /// Its tasks, aborted when the last handle is dropped.
    _tasks: Arc<Tasks>,
}

#[derive(Debug)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl MetadataGroup {
    /// Runs this node's replica `journal` of the metadata group; `genesis` is what it
    /// proposes if it leads before any topology is applied; `peers` learns every address.
    pub(crate) fn spawn(
        journal: ReplicatedJournal,
        genesis: pb::Metadata,
        peers: PeerBook,
    ) -> MetadataGroup {
        let (tx, applied) = watch::channel(Applied {
            end: journal.first_lsn(),
            ..Applied::default()
        });
        let tasks = vec![
            tokio::spawn(apply_loop(journal.clone(), tx, peers)),
            tokio::spawn(propose_genesis(journal.clone(), applied.clone(), genesis)),
        ];
        MetadataGroup {
            journal,
            applied,
            _tasks: Arc::new(Tasks(tasks)),
        }
    }

    /// The topology applied here, if any yet.
    pub(crate) fn metadata(&self) -> Option<Arc<pb::Metadata>> {
        self.applied.borrow().metadata.clone()
    }

    /// This node's replica of the group.
    pub(crate) fn journal(&self) -> &ReplicatedJournal {
        &self.journal
    }

    /// Records `command` through this node, which must lead the group, and returns the
    /// topology once it is applied here.
    pub(crate) async fn propose(
        &self,
        command: pb::MetadataCommand,
    ) -> std::result::Result<Arc<pb::Metadata>, ProposeError> {
        let status = self.journal.status();
        if status.role != StateRole::Leader {
            return Err(ProposeError::NotLeader {
                leader: status.leader,
            });
        }
        let pending = self
            .journal
            .submit(status.term, Bytes::from(command.encode_to_vec()))?;
        let lsn = pending.committed().await?;
        let mut applied = self.applied.clone();
        let now = applied
            .wait_for(|a| a.end > lsn || a.stopped.is_some())
            .await
            .map_err(|_| ProposeError::Stopped("the node is stopping".into()))?;
        if let Some(why) = &now.stopped {
            return Err(ProposeError::Stopped(why.clone()));
        }
        now.metadata
            .clone()
            .ok_or_else(|| ProposeError::Stopped("no topology after a committed record".into()))
    }
}

/// Applies the group's committed records in order, publishing each topology.
async fn apply_loop(journal: ReplicatedJournal, tx: watch::Sender<Applied>, peers: PeerBook) {
    let mut state: Option<pb::Metadata> = None;
    let mut from = journal.first_lsn();
    let stop = |tx: &watch::Sender<Applied>, why: String| {
        tx.send_modify(|a| a.stopped = Some(why));
    };
    loop {
        if let Err(e) = journal.wait_readable(from).await {
            return stop(&tx, e.to_string());
        }
        let records = match journal.read(from, 1 << 20) {
            Ok(records) => records,
            Err(e) => return stop(&tx, e.to_string()),
        };
        for (lsn, bytes) in records {
            let command = match pb::MetadataCommand::decode(bytes) {
                Ok(command) => command,
                Err(e) => return stop(&tx, format!("record {lsn} does not decode: {e}")),
            };
            apply(&mut state, command);
            from = lsn.next();
        }
        if let Some(metadata) = &state {
            peers.learn_all(metadata);
        }
        let metadata = state.clone().map(Arc::new);
        tx.send_modify(|a| {
            a.end = from;
            a.metadata = metadata;
        });
    }
}

/// While this node leads a term of the group and no topology is applied, proposes the
/// genesis (once per term).
async fn propose_genesis(
    journal: ReplicatedJournal,
    applied: watch::Receiver<Applied>,
    genesis: pb::Metadata,
) {
    let command = pb::MetadataCommand {
        command: Some(pb::metadata_command::Command::Genesis(genesis)),
    };
    let mut status = journal.watch_status();
    let mut proposed_in = None;
    loop {
        let now = status.borrow_and_update().clone();
        if now.failed.is_some() || applied.borrow().stopped.is_some() {
            return;
        }
        let none = applied.borrow().metadata.is_none();
        if none && now.role == StateRole::Leader && proposed_in != Some(now.term) {
            proposed_in = Some(now.term);
            if let Ok(pending) = journal.submit(now.term, Bytes::from(command.encode_to_vec())) {
                // Committed or not, the apply loop decides what it changes.
                let _ = pending.committed().await;
            }
        }
        if applied.borrow().metadata.is_some() || status.changed().await.is_err() {
            return;
        }
    }
}

/// Reads the topology from `urls`, for a node joining the cluster (it holds no replica of
/// the metadata group yet): the newest any of them has applied (one may lag).
pub(crate) async fn fetch(urls: &[String], connect: &Connect) -> Result<pb::Metadata> {
    use journaldb_proto::pb::cluster_service_client::ClusterServiceClient;
    let mut why = Vec::new();
    let mut newest: Option<pb::Metadata> = None;
    for url in urls {
        let mut client = ClusterServiceClient::new(connect(url)?);
        let mut request = tonic::Request::new(pb::GetMetadataRequest {});
        request.set_timeout(std::time::Duration::from_secs(5));
        match client.get_metadata(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if newest.as_ref().is_none_or(|n| n.version < reply.version) {
                    newest = Some(reply);
                }
            }
            Err(status) => why.push(format!("{url}: {}", status.message())),
        }
    }
    newest.ok_or_else(|| Error::Unavailable {
        reason: format!("no node gave the cluster's topology: {}", why.join("; ")),
        retry_after: None,
    })
}

#[cfg(test)]
mod tests;
