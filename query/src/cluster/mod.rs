//! Running journaldb as a cluster (issue 5, in progress): a node's configuration
//! ([`config`]), a running node with its gRPC services ([`node`]), and the [`Client`]
//! with the embedded database's transaction API ([`client`]).

pub mod client;
pub mod config;
pub mod late;
pub mod node;
pub mod transport;

pub use client::{Client, ClientOptions};
pub use config::{ConfigError, NodeConfig, NodeEntry, TlsConfig};
pub use late::LateRequests;
pub use node::{ClusterNode, NodeEnv};
pub use transport::Connector;
