//! The request rate limits: per client address, then overall.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::response::Response;
use pod_identity_core::agent_error::AgentError;
use tower::{Layer, Service};

use super::error_response;
use crate::metrics::{Limited, Metrics};
use crate::time::{ClientRateLimiter, RateLimiter};

/// A tower layer answering 429 `Too Many Requests` above a request rate (GCRA on tokio's
/// clock): first the client's own rate, keyed by its address (`ConnectInfo<SocketAddr>`;
/// requests without one skip it), then the overall rate. A client over its own rate draws
/// nothing from the overall one, so it cannot starve the others.
#[derive(Clone, Debug)]
pub struct RequestRateLimitLayer {
    limiter: Option<Arc<RateLimiter>>,
    client: Option<Arc<ClientRateLimiter>>,
    metrics: Option<Metrics>,
}

impl RequestRateLimitLayer {
    /// Allows `per_second` requests with bursts of `burst` from all clients together; a rate of
    /// 0 turns that limit off. No per-client limit until [`per_client`](Self::per_client).
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            limiter: RateLimiter::new(per_second, burst).map(Arc::new),
            client: None,
            metrics: None,
        }
    }

    /// Allows each client address `per_second` requests with bursts of `burst`; a rate of 0
    /// turns the per-client limit off.
    pub fn per_client(mut self, per_second: u32, burst: u32) -> Self {
        self.client = ClientRateLimiter::new(per_second, burst).map(Arc::new);
        self
    }

    /// Counts the requests each limit answers in `pod_identity_requests_limited`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl<S> Layer<S> for RequestRateLimitLayer {
    type Service = RequestRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestRateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RequestRateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RequestRateLimit<S> {
    inner: S,
    layer: RequestRateLimitLayer,
}

impl<S> RequestRateLimit<S> {
    /// Which limit, if any, refuses a request from `client` now.
    fn limited(&self, client: Option<IpAddr>) -> Option<Limited> {
        if let (Some(limiter), Some(client)) = (&self.layer.client, client)
            && !limiter.check(client)
        {
            return Some(Limited::ClientRate);
        }
        if let Some(limiter) = &self.layer.limiter
            && !limiter.check()
        {
            return Some(Limited::Rate);
        }
        None
    }
}

impl<S, B> Service<http::Request<B>> for RequestRateLimit<S>
where
    S: Service<http::Request<B>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if let Some(limited) = self.limited(client) {
            if let Some(metrics) = &self.layer.metrics {
                metrics.record_limited(limited);
            }
            return Box::pin(std::future::ready(Ok(error_response(
                &AgentError::TooManyRequests,
            ))));
        }
        Box::pin(self.inner.call(request))
    }
}
