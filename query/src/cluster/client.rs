//! [`Client`]: the same transaction API as the embedded [`crate::Database`], against a
//! cluster over gRPC. `Client::connect(url)` asks any node for the topology; every
//! transaction then runs over the cluster arm of the backend ([`super::remote`]), which
//! routes each call to the node that serves it. When a node refuses a request routed by a
//! stale topology, the client fetches the new one and `transact` retries under it.

use std::sync::Arc;

use journaldb_proto::Timestamp;

use super::options::ClientOptions;
use super::remote::Remote;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::transaction::Transaction;

/// A journaldb cluster, used like an embedded database. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    remote: Arc<Remote>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("partitions", &self.remote.partitions())
            .field("topology_version", &self.topology_version())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the cluster that the node at `url` (e.g. `http://127.0.0.1:7001`)
    /// belongs to.
    pub async fn connect(url: &str) -> Result<Client> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    /// [`Client::connect`] with options.
    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Client> {
        Ok(Client {
            remote: Arc::new(Remote::connect(url, options).await?),
        })
    }

    /// The version of the topology this client routes by (it follows newer ones as nodes
    /// report them).
    pub fn topology_version(&self) -> u64 {
        self.remote.topology_version()
    }

    fn backend(&self) -> Backend {
        Backend::Cluster(self.remote.clone())
    }

    /// Begins a transaction reading at now.
    pub fn begin(&self) -> Transaction {
        let backend = self.backend();
        Transaction::at(backend.clone(), backend.start_ts())
    }

    /// A read-only view as of `ts`, within the cluster's retention window.
    pub fn snapshot_at(&self, ts: Timestamp) -> Result<Transaction> {
        if ts > self.remote.clock.now().latest {
            return Err(Error::InvalidArgument(format!("{ts} is in the future")));
        }
        Ok(Transaction::at(self.backend(), ts))
    }

    /// Runs `f` in a transaction and commits it, exactly as
    /// [`crate::Database::transact`] does.
    pub fn transact<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + use<T, F>
    where
        F: AsyncFnMut(&mut Transaction) -> Result<T>,
    {
        crate::transaction::transact(self.backend(), f)
    }

    /// The partition count of the cluster.
    pub fn partitions(&self) -> u32 {
        self.remote.partitions()
    }
}
