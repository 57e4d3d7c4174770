//! [`NodeConfig`]: what `journaldb serve --config node.toml` reads — this node's name, its
//! data directory, and the cluster's static map: the nodes, their addresses, which
//! partitions (adjudicator + journal) each runs, and which are storage replicas.
//!
//! Every node of a cluster gets the same `[[nodes]]` list; `node = "…"` names itself in it.
//! Everything is checked before anything binds a port or touches the disk, and every
//! problem is reported at once.
//!
//! A partition listed on one node has a single-replica journal there. A partition listed
//! on several nodes (at most 7) has a **replicated journal**: a Raft group whose voters are
//! those nodes (ARCHITECTURE §5), its adjudicator on the group's leader. A cluster is one
//! or the other throughout, and in a replicated cluster every storage node is a replica of
//! every partition (it feeds from its own replicas). A node's Raft id is derived from its
//! name: a node whose disk was lost comes back under a new name, never its old one
//! (ARCHITECTURE §5 rule 3).
//!
//! ```toml
//! node = "n1"
//! data_dir = "./cluster/n1"
//! partitions = 2
//! # vote_timeout_ms = 3000   # how long an abandoned cross-partition vote holds its keys
//! # storage_cache_mib = 64    # memory for a storage replica's cache of newest versions
//! # max_txn_age_ms = 300000   # the longest a transaction may run
//! # retention_ms = 300000     # how far back snapshots read; journals keep at least this
//! # checkpoint_interval_ms = 10000  # how often storage checkpoints and journals truncate
//!
//! [[nodes]]
//! name = "n1"
//! listen = "127.0.0.1:7001"
//! partitions = [0]
//! storage = true
//!
//! [[nodes]]
//! name = "n2"
//! listen = "127.0.0.1:7002"
//! partitions = [1]
//! storage = true
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A node's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name in `nodes`.
    pub node: String,
    /// Where this node keeps its journals and storage (relative to the file's directory).
    pub data_dir: PathBuf,
    /// Partitions of the cluster (fixed at creation).
    pub partitions: u32,
    /// Version of the partition map; bumped whenever it changes.
    #[serde(default = "one")]
    pub topology_version: u64,
    /// The cluster's id, in every replicated log and Raft message: messages from another
    /// cluster are refused. Required (and not 0) when the journals are replicated
    /// (`journaldb cluster start` writes a random one); fixed for the cluster's life.
    #[serde(default)]
    pub cluster_id: Option<u64>,
    /// Every node of the cluster.
    pub nodes: Vec<NodeEntry>,
    /// TLS for every connection to and between nodes (rustls); absent: plain HTTP/2.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How long, in milliseconds, a participant's vote may stay undecided (its client died
    /// or lost the outcome mid-commit) before the participant asks the coordinator: the
    /// longest such a client can keep other writers of its keys out. Default 3000;
    /// between 10 and 300000.
    #[serde(default)]
    pub vote_timeout_ms: Option<u64>,
    /// Memory, in MiB, for a storage replica's cache of each key's newest version (keys,
    /// values and a per-entry overhead). Default 64; at most 1048576 (1 TiB); 0 caches
    /// nothing.
    #[serde(default)]
    pub storage_cache_mib: Option<u64>,
    /// The longest a transaction may run, in milliseconds: a commit whose snapshot is older
    /// is refused (`SnapshotTooOld`), and adjudicators remember conflicts this long.
    /// Default 300000; between 100 and 86400000.
    #[serde(default)]
    pub max_txn_age_ms: Option<u64>,
    /// How far back, in milliseconds, a snapshot can read (older versions are collected),
    /// and how long journal records are kept after every storage replica has checkpointed
    /// them. Default 300000; at least `max_txn_age_ms`, at most 30 days.
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// How often, in milliseconds, a storage replica checkpoints and collects garbage, and
    /// a journal drops what every replica's checkpoint older than the retention window
    /// holds. Default 10000; between 10 and 3600000.
    #[serde(default)]
    pub checkpoint_interval_ms: Option<u64>,
}

impl NodeConfig {
    /// A configuration with every optional setting at its default, topology version 1.
    pub fn new(
        node: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        partitions: u32,
        cluster_id: Option<u64>,
        nodes: Vec<NodeEntry>,
    ) -> NodeConfig {
        NodeConfig {
            node: node.into(),
            data_dir: data_dir.into(),
            partitions,
            topology_version: 1,
            cluster_id,
            nodes,
            tls: None,
            vote_timeout_ms: None,
            storage_cache_mib: None,
            max_txn_age_ms: None,
            retention_ms: None,
            checkpoint_interval_ms: None,
        }
    }
}

/// Most replicas a partition's journal may have.
pub const MAX_REPLICAS: usize = 7;

/// FNV-1a, 64 bits: stable across builds and platforms (ids derived from names).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Default of [`NodeConfig::max_txn_age_ms`] and [`NodeConfig::retention_ms`].
const DEFAULT_RETENTION_MS: u64 = 300_000;
/// Default of [`NodeConfig::checkpoint_interval_ms`].
const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 10_000;

/// TLS files, PEM, relative to the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The certificate authority that signed every node's certificate: how nodes verify
    /// each other.
    pub ca: PathBuf,
}

/// The TLS material, read.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: Vec<u8>,
    /// Private key (PEM).
    pub key: Vec<u8>,
    /// CA certificate (PEM).
    pub ca: Vec<u8>,
}

fn one() -> u64 {
    1
}

/// One node of the cluster map.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Unique name.
    pub name: String,
    /// Address to bind, e.g. `127.0.0.1:7001`.
    pub listen: String,
    /// How clients and peers reach it; default `http://<listen>`.
    #[serde(default)]
    pub address: Option<String>,
    /// Partitions whose adjudicator and journal it runs.
    #[serde(default)]
    pub partitions: Vec<u32>,
    /// Whether it is a storage replica (of the whole key space).
    #[serde(default)]
    pub storage: bool,
}

impl NodeEntry {
    /// The URL peers and clients use.
    pub fn url(&self) -> String {
        self.address
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

/// A configuration that cannot be used: every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration {path}:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub problems: Vec<String>,
}

impl NodeConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let err = |problems: Vec<String>| ConfigError {
            path: path.display().to_string(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(vec![e.to_string()]))?;
        let mut config: NodeConfig =
            toml::from_str(&text).map_err(|e| err(vec![e.to_string().trim().to_owned()]))?;
        config.check().map_err(err)?;
        // Relative paths are relative to the configuration file.
        if let Some(base) = path.parent() {
            let resolve = |p: &mut PathBuf| {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            };
            resolve(&mut config.data_dir);
            if let Some(tls) = &mut config.tls {
                resolve(&mut tls.cert);
                resolve(&mut tls.key);
                resolve(&mut tls.ca);
            }
        }
        if config.tls.is_some() {
            config.tls_files().map_err(|e| err(vec![e]))?;
        }
        Ok(config)
    }

    /// The TLS files, read; `None` without TLS.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, String> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("tls {what} {}: {e}", p.display()))
        };
        Ok(Some(TlsFiles {
            cert: read("cert", &tls.cert)?,
            key: read("key", &tls.key)?,
            ca: read("ca", &tls.ca)?,
        }))
    }

    /// Bytes of a storage replica's newest-version cache (`storage_cache_mib`).
    pub fn latest_cache_bytes(&self) -> usize {
        match self.storage_cache_mib {
            Some(mib) => usize::try_from(mib << 20).unwrap_or(usize::MAX),
            None => journaldb_storage::DEFAULT_LATEST_CACHE_BYTES,
        }
    }

    /// The longest a transaction may run (`max_txn_age_ms`).
    pub fn max_txn_age(&self) -> Duration {
        Duration::from_millis(self.max_txn_age_ms.unwrap_or(DEFAULT_RETENTION_MS))
    }

    /// How far back snapshots read and journals are kept (`retention_ms`).
    pub fn retention(&self) -> Duration {
        Duration::from_millis(self.retention_ms.unwrap_or(DEFAULT_RETENTION_MS))
    }

    /// How often storage checkpoints and journals truncate (`checkpoint_interval_ms`).
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(
            self.checkpoint_interval_ms
                .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL_MS),
        )
    }

    /// Every problem with this configuration (empty: usable).
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let ranges = [
            ("max_txn_age_ms", self.max_txn_age_ms, 100..=86_400_000),
            ("retention_ms", self.retention_ms, 100..=30 * 86_400_000),
            (
                "checkpoint_interval_ms",
                self.checkpoint_interval_ms,
                10..=3_600_000,
            ),
        ];
        for (name, value, range) in ranges {
            if let Some(ms) = value.filter(|ms| !range.contains(ms)) {
                problems.push(format!(
                    "{name} = {ms} is not between {} and {}",
                    range.start(),
                    range.end()
                ));
            }
        }
        if self.retention() < self.max_txn_age() {
            problems.push(format!(
                "retention_ms = {} is shorter than max_txn_age_ms = {}: a transaction could \
                 read below what is kept",
                self.retention().as_millis(),
                self.max_txn_age().as_millis()
            ));
        }
        if self.partitions == 0 {
            problems.push("partitions must be at least 1".to_owned());
        }
        if let Some(ms) = self
            .vote_timeout_ms
            .filter(|ms| !(10..=300_000).contains(ms))
        {
            problems.push(format!(
                "vote_timeout_ms = {ms} is not between 10 and 300000"
            ));
        }
        if let Some(mib) = self.storage_cache_mib.filter(|mib| *mib > 1 << 20) {
            problems.push(format!(
                "storage_cache_mib = {mib} is more than 1048576 (1 TiB)"
            ));
        }
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        let mut owners = vec![Vec::new(); self.partitions as usize];
        for n in &self.nodes {
            if !names.insert(n.name.as_str()) {
                problems.push(format!("node {:?} is listed twice", n.name));
            } else if !ids.insert(Self::raft_id_of(&n.name)) {
                problems.push(format!(
                    "node {:?}: its Raft id collides with another node's; rename it",
                    n.name
                ));
            }
            if n.listen.parse::<SocketAddr>().is_err() {
                problems.push(format!(
                    "node {:?}: listen {:?} is not an address like 127.0.0.1:7001",
                    n.name, n.listen
                ));
            }
            match (&n.address, self.tls.is_some()) {
                (Some(a), false) if !a.starts_with("http://") => problems.push(format!(
                    "node {:?}: address {a:?} is not an http:// URL",
                    n.name
                )),
                (Some(a), true) if !a.starts_with("https://") => problems.push(format!(
                    "node {:?}: with TLS, address {a:?} must be an https:// URL",
                    n.name
                )),
                (None, true) => problems.push(format!(
                    "node {:?}: with TLS, give its address (https://NAME:PORT, the name its \
                     certificate holds)",
                    n.name
                )),
                _ => {}
            }
            for &p in &n.partitions {
                match owners.get_mut(p as usize) {
                    Some(o) => o.push(n.name.as_str()),
                    None => problems.push(format!(
                        "node {:?}: partition {p} does not exist (partitions = {})",
                        n.name, self.partitions
                    )),
                }
            }
        }
        for (p, o) in owners.iter().enumerate() {
            let mut sorted = o.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != o.len() {
                problems.push(format!("partition {p} is listed twice on one node"));
            }
            match o.len() {
                0 => problems.push(format!("partition {p} has no node")),
                n if n > MAX_REPLICAS => problems.push(format!(
                    "partition {p} has {n} replicas; at most {MAX_REPLICAS}"
                )),
                _ => {}
            }
        }
        let replicated = owners.iter().filter(|o| o.len() > 1).count();
        if replicated > 0 && replicated < owners.len() {
            problems.push(format!(
                "{replicated} of {} partitions are replicated: a cluster's journals are all \
                 replicated (each partition on several nodes) or none is",
                owners.len()
            ));
        }
        if replicated > 0 {
            match self.cluster_id {
                None => problems.push(
                    "the journals are replicated: give the cluster's id (cluster_id = a \
                     random number below 2^63, the same on every node, fixed for the \
                     cluster's life)"
                        .to_owned(),
                ),
                Some(0) => problems.push("cluster_id must not be 0".to_owned()),
                Some(_) => {}
            }
        }
        if !self.nodes.iter().any(|n| n.storage) {
            problems.push("no node is a storage replica".to_owned());
        }
        if !names.contains(self.node.as_str()) {
            problems.push(format!(
                "node {:?} (this node) is not in [[nodes]]",
                self.node
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// This node's entry.
    pub fn me(&self) -> &NodeEntry {
        self.nodes
            .iter()
            .find(|n| n.name == self.node)
            .expect("checked: this node is listed")
    }

    /// The node running partition `p` (with replicated journals, its first replica).
    pub fn owner(&self, p: u32) -> &NodeEntry {
        self.nodes
            .iter()
            .find(|n| n.partitions.contains(&p))
            .expect("checked: every partition has a node")
    }

    /// The nodes holding a replica of partition `p`'s journal, in `[[nodes]]` order.
    pub fn replicas(&self, p: u32) -> Vec<&NodeEntry> {
        self.nodes
            .iter()
            .filter(|n| n.partitions.contains(&p))
            .collect()
    }

    /// Whether the partitions' journals are replicated (each on several nodes).
    pub fn is_replicated(&self) -> bool {
        self.partitions > 0 && self.replicas(0).len() > 1
    }

    /// The Raft id of the node named `name`: derived from the name (never 0, raft-rs's
    /// "no node").
    pub fn raft_id_of(name: &str) -> u64 {
        fnv1a(&[b"journaldb-node", name.as_bytes()]).max(1)
    }

    /// The node whose Raft id is `id`.
    pub fn node_by_raft_id(&self, id: u64) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| Self::raft_id_of(&n.name) == id)
    }

    /// The cluster id (`cluster_id`; checked to be set when the journals are replicated,
    /// 0 for a single-replica cluster, which has no Raft group).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
