//! [`ClientOptions`]: the settings of a [`Client`](super::Client).

use std::sync::Arc;
use std::time::Duration;

use journaldb_proto::{Clock, Limits};

use super::transport::Connector;
use crate::retry::RetryPolicy;

/// Settings of a [`Client`]: `ClientOptions::default()` and the `with_…` setters.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Deadline of every request (reads wait up to this for a replica's watermark).
    pub request_timeout: Duration,
    /// Deadline for opening a connection.
    pub connect_timeout: Duration,
    /// Limits checked before anything is sent.
    pub limits: Limits,
    /// How `transact` retries.
    pub retry: RetryPolicy,
    /// Seed of retry jitter; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Seed of transaction ids, for simulation only. `None` (the default, and the only safe
    /// choice in production) draws them from the OS, so two clients — or one restarted —
    /// never reuse an id and read another transaction's outcome.
    pub txn_id_seed: Option<u64>,
    /// The CA certificate (PEM) that signed the nodes' certificates, for a cluster that
    /// uses TLS (`https://` addresses).
    pub tls_ca: Option<Vec<u8>>,
    /// How connections are opened; `None` is TCP. The simulation dials its network here.
    pub connector: Option<Connector>,
    /// The bounded-error clock that timestamps snapshots and times commit wait; `None` is
    /// the host's [`SystemClock`].
    pub clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("limits", &self.limits)
            .field("retry", &self.retry)
            .field("seed", &self.seed)
            .field("txn_id_seed", &self.txn_id_seed)
            .field("tls", &self.tls_ca.is_some())
            .field("connector", &self.connector)
            .field("clock", &self.clock.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            seed: None,
            txn_id_seed: None,
            tls_ca: None,
            connector: None,
            clock: None,
        }
    }
}

setters!(ClientOptions {
    with_request_timeout => request_timeout: (Duration),
    with_connect_timeout => connect_timeout: (Duration),
    with_limits => limits: (Limits),
    with_retry => retry: (RetryPolicy),
    with_seed => seed: Some(u64),
    with_txn_id_seed => txn_id_seed: Some(u64),
    with_tls_ca => tls_ca: Some(Vec<u8>),
    with_connector => connector: Some(Connector),
    with_clock => clock: Some(Arc<dyn Clock>),
});
