//! Running journaldb as a cluster (issue 5, in progress): a node's configuration
//! ([`config`]) and a running node with its gRPC services ([`node`]). The client side — one
//! API for embedded and cluster — comes next.

pub mod config;
pub mod node;

pub use config::{ConfigError, NodeConfig, NodeEntry};
pub use node::ClusterNode;
