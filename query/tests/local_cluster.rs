//! A cluster on 127.0.0.1 inside the test process: N nodes, partitions spread round-robin,
//! the first `replicas` nodes storage replicas, and a client connected through the last
//! node (so topology is learned, not configured).

use journaldb::Client;
use journaldb_node::{ClusterNode, NodeConfig, NodeEntry};

/// A running local cluster.
pub struct LocalCluster {
    /// The nodes, in order.
    pub nodes: Vec<ClusterNode>,
    /// A client of it.
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts `nodes` nodes holding `partitions` partitions, `replicas` of them storage
    /// replicas.
    pub async fn start(nodes: usize, partitions: u32, replicas: usize) -> LocalCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        for _ in 0..nodes {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let entries: Vec<NodeEntry> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| NodeEntry {
                name: format!("n{i}"),
                listen: l.local_addr().unwrap().to_string(),
                address: None,
                partitions: (0..partitions)
                    .filter(|p| *p as usize % nodes == i)
                    .collect(),
                storage: i < replicas,
            })
            .collect();
        let mut running = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let config = NodeConfig::new(
                format!("n{i}"),
                dir.path().join(format!("n{i}")),
                partitions,
                None,
                entries.clone(),
            );
            running.push(ClusterNode::start(config, listener).await.unwrap());
        }
        let url = format!("http://{}", running.last().unwrap().addr());
        let client = Client::connect(&url).await.unwrap();
        LocalCluster {
            nodes: running,
            client,
            _dir: dir,
        }
    }

    /// Shuts every node down.
    pub async fn stop(self) {
        for node in self.nodes {
            node.shutdown().await.unwrap();
        }
    }
}
