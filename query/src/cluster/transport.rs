//! How nodes and clients open connections to each other. By default they use the
//! operating system's TCP stack; a [`Connector`] replaces it — the simulation passes one
//! that dials turmoil's simulated network (ARCHITECTURE §7), and a test could pass one that
//! injects faults. The listening side is the stream of accepted connections handed to
//! [`super::ClusterNode::start_with`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint, Uri};

/// HTTP/2 keep-alive ping interval, on every connection both ways (also while idle). A
/// connection whose peer vanished — a crashed host, a segment lost in a partition — is
/// noticed within interval + timeout and replaced, so requests and storage feeds recover
/// in seconds instead of waiting for TCP.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a keep-alive ping may go unanswered.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A byte stream a connector returns: anything readable and writable.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

type Connecting = Pin<Box<dyn Future<Output = io::Result<Box<dyn Io>>> + Send>>;

/// Opens a connection to a `host:port`. Cheap to clone.
#[derive(Clone)]
pub struct Connector(Arc<dyn Fn(String) -> Connecting + Send + Sync>);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

impl Connector {
    /// A connector from a function of the `host:port` to dial.
    pub fn new<F, Fut, S>(connect: F) -> Connector
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: Io,
    {
        Connector(Arc::new(move |authority| {
            let connecting = connect(authority);
            Box::pin(async move { Ok(Box::new(connecting.await?) as Box<dyn Io>) })
        }))
    }

    /// A lazily connecting channel to `endpoint` through this connector. The endpoint's
    /// timeouts and keep-alive apply as with TCP.
    pub fn channel(&self, endpoint: &Endpoint) -> Channel {
        let connect = self.0.clone();
        endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
            let connect = connect.clone();
            async move {
                let authority = uri.authority().map(|a| a.to_string()).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host:port"))
                })?;
                connect(authority).await.map(TokioIo::new)
            }
        }))
    }
}

/// A lazily connecting channel to `endpoint`: through `connector` if one is given, else
/// over TCP.
pub fn lazy_channel(endpoint: &Endpoint, connector: Option<&Connector>) -> Channel {
    match connector {
        Some(connector) => connector.channel(endpoint),
        None => endpoint.connect_lazy(),
    }
}
