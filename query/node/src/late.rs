//! [`LateRequests`]: the simulation's `late` fault, as a layer in front of a node's gRPC
//! services. While it is on, a request it picks is received whole, held for a while and
//! only then served, and its caller never gets an answer (its deadline passes first) — a
//! request delayed in the network past every timeout. The client gives up (on the commit
//! path the outcome is unknown), retries, asks `Status`, participants resolve the vote;
//! and then the original arrives and is served. Whatever it does then must agree with
//! every answer already given: that is what the fault tests (hardening defects 2 and 6).
//!
//! `None` in production; nothing here runs unless a [`NodeEnv`](crate::NodeEnv) carries one.
//!
//! Limits, as a test seam: it is meant for unary requests (every adjudicator method is
//! one) — a held request's body is read whole before the delay, so a streaming request
//! would be held until its stream ends; the late answer is dropped (its caller is gone);
//! the stream of the original request stays open until its caller's deadline resets it;
//! and the detached task may outlive the node's `shutdown`, then finds its services
//! closed (a `Closed` refusal, which is dropped like any answer).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};

/// Which requests to hold, and for how long: called with each request's path
/// (`/journaldb.v1.AdjudicatorService/Commit`); `Some(delay)` holds it.
pub type PickLate = dyn Fn(&str) -> Option<Duration> + Send + Sync;

/// The switch of the `late` fault: a node's server holds the requests `pick` chooses.
#[derive(Clone)]
pub struct LateRequests {
    pick: Arc<PickLate>,
}

impl LateRequests {
    /// Holds the requests `pick` chooses, each for the delay it returns.
    pub fn new(pick: impl Fn(&str) -> Option<Duration> + Send + Sync + 'static) -> Self {
        LateRequests {
            pick: Arc::new(pick),
        }
    }
}

impl fmt::Debug for LateRequests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LateRequests")
    }
}

impl<S> Layer<S> for LateRequests {
    type Service = Late<S>;

    fn layer(&self, inner: S) -> Late<S> {
        Late {
            inner,
            pick: self.pick.clone(),
        }
    }
}

/// The service [`LateRequests`] wraps around a node's routes.
#[derive(Clone)]
pub struct Late<S> {
    inner: S,
    pick: Arc<PickLate>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, R> Service<http::Request<Body>> for Late<S>
where
    S: Service<http::Request<Body>, Response = http::Response<R>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    R: 'static,
{
    type Response = http::Response<R>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<R>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(delay) = (self.pick)(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let inner = self.inner.clone();
        // Detached: the caller's deadline ends the request's own future, not this.
        tokio::spawn(async move {
            let (parts, body) = request.into_parts();
            // The request arrived whole; only its delivery to the service is late.
            let Ok(body) = body.collect().await else {
                return;
            };
            tokio::time::sleep(delay).await;
            let body = Body::new(Full::new(body.to_bytes()));
            let request = http::Request::from_parts(parts, body);
            let _ = inner.oneshot(request).await;
        });
        Box::pin(std::future::pending())
    }
}
