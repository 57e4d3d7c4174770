//! The cluster side of the library: the [`Client`] with the embedded database's
//! transaction API ([`client`]) and how connections are opened ([`transport`]). A cluster
//! *node* — its configuration and its gRPC services — is the `journaldb-node` crate.

pub mod client;
pub mod options;
pub(crate) mod remote;
pub mod transport;

pub use client::Client;
pub use options::ClientOptions;
pub use transport::Connector;
