//! The `/v1/credentials` handler, as an axum [`Router`].
//!
//! Answers (contracts §6; bodies and statuses rendered by core's [`AgentError`]):
//!
//! | case | answer |
//! |---|---|
//! | success | 200 `application/json`, core's byte-exact container-credentials JSON |
//! | `Host` not allowed | 403 `Access Denied. Called agent through invalid address, …` |
//! | `Authorization` missing or empty | 400 `Service account token cannot be empty` |
//! | token not a JWT, unknown `alg` | 400 `Service account token cannot be parsed: …` |
//! | token expired or not yet valid | 400 `Service account token failed basic claim validations: …` |
//! | EKS Auth error | its status, `[<request-id>]: (<Code>): <message>, fault: <fault>` |
//! | timeout, connection failure | 500 `[]` |
//! | credentials with ≤ 15 s left | 500 `fetched credentials are expired or will expire …` |
//! | over the request rate limit | 429 `Too Many Requests` |
//! | request head over the limit | 431 |
//! | any other path | 404 |
//!
//! Any method is accepted on `/v1/credentials`. Requests are rate limited at 1000/s with
//! bursts of 500 by default ([`RequestRateLimitLayer`]; 0 turns it off). Every credential
//! response is counted in `pod_identity_http_response{code}`, timed in the latency histogram,
//! and logged with the client address, never with the token.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use pod_identity_core::endpoint::CREDENTIALS_PATH;
use pod_identity_core::{AgentError, ClusterName};
use tower::{Layer, Service};

use crate::metrics::Metrics;
use crate::server::DEFAULT_MAX_HEADER_BYTES;
use crate::source::{CredentialRequest, CredentialSource, IssuedCredentials, SourceError};
use crate::time::{RateLimiter, SharedWallClock};
use crate::validation::{HostAllowList, RequestValidator};

/// Default request rate limit per second (the reference's).
pub const DEFAULT_REQUEST_RATE: u32 = 1000;
/// Default request burst (the reference's: half the rate).
pub const DEFAULT_REQUEST_BURST: u32 = 500;
/// Default longest time one credential request may take (the reference's server timeout).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Renders an agent error as the reference does: its status, `text/plain` body.
pub fn error_response(error: &AgentError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        error.body(),
    )
        .into_response()
}

/// Renders issued credentials: 200 with core's byte-exact JSON.
pub fn credentials_response(issued: &IssuedCredentials) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        issued.credentials().to_json(),
    )
        .into_response()
}

/// Builds the credentials router.
pub struct CredentialsRouter<S> {
    source: S,
    cluster_name: ClusterName,
    hosts: HostAllowList,
    rate: (u32, u32),
    clock: SharedWallClock,
    metrics: Metrics,
    request_timeout: Duration,
    max_header_bytes: usize,
}

impl<S> fmt::Debug for CredentialsRouter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsRouter")
            .field("cluster_name", &self.cluster_name)
            .field("hosts", &self.hosts)
            .field("rate", &self.rate)
            .field("request_timeout", &self.request_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .finish_non_exhaustive()
    }
}

impl<S: CredentialSource> CredentialsRouter<S> {
    /// A router for `cluster_name` issuing from `source`, with the reference defaults and the
    /// reference host allow-list.
    pub fn new(cluster_name: ClusterName, source: S) -> Self {
        Self {
            source,
            cluster_name,
            hosts: HostAllowList::reference(),
            rate: (DEFAULT_REQUEST_RATE, DEFAULT_REQUEST_BURST),
            clock: SharedWallClock::default(),
            metrics: Metrics::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }

    /// The hosts clients may call through (usually the bind hosts).
    pub fn allowed_hosts(mut self, hosts: HostAllowList) -> Self {
        self.hosts = hosts;
        self
    }

    /// Requests per second and burst; a rate of 0 turns limiting off.
    pub fn rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.rate = (per_second, burst);
        self
    }

    /// The wall clock for token time checks and remaining lifetimes.
    pub fn clock(mut self, clock: SharedWallClock) -> Self {
        self.clock = clock;
        self
    }

    /// Where responses and latency are counted.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The longest a request may wait for the source before 500 `[]`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The largest total size of request headers (names and values) before 431.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// The router: `/v1/credentials` (any method) and 404 elsewhere.
    pub fn into_router(self) -> Router {
        let state = Arc::new(Handler {
            validator: RequestValidator::new(self.hosts).with_clock(self.clock.clone()),
            source: self.source,
            cluster_name: self.cluster_name,
            clock: self.clock,
            request_timeout: self.request_timeout,
            max_header_bytes: self.max_header_bytes,
        });
        Router::new()
            .route(CREDENTIALS_PATH, any(handle::<S>))
            .route_layer(RequestRateLimitLayer::new(self.rate.0, self.rate.1))
            .route_layer(middleware::from_fn_with_state(self.metrics, observe))
            .fallback(|| async { error_response(&AgentError::NotFound) })
            .with_state(state)
    }
}

struct Handler<S> {
    validator: RequestValidator,
    source: S,
    cluster_name: ClusterName,
    clock: SharedWallClock,
    request_timeout: Duration,
    max_header_bytes: usize,
}

impl<S: CredentialSource> Handler<S> {
    async fn credentials(&self, request: &Parts) -> Result<IssuedCredentials, AgentError> {
        let headers = &request.headers;
        if header_bytes(headers) > self.max_header_bytes {
            return Err(AgentError::HeadersTooLarge);
        }
        let host = headers
            .get(header::HOST)
            .map(HeaderValue::as_bytes)
            .or_else(|| request.uri.authority().map(|a| a.as_str().as_bytes()));
        let authorization = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
        let token = self.validator.validate(host, authorization)?;
        let request = CredentialRequest::new(self.cluster_name.clone(), token);
        let outcome = tokio::time::timeout(self.request_timeout, self.source.credentials(&request))
            .await
            .unwrap_or(Err(SourceError::Timeout))
            .and_then(|issued| {
                let remaining = issued.remaining(self.clock.now());
                if remaining > crate::cache::MIN_REMAINING {
                    Ok(issued)
                } else {
                    Err(SourceError::ExpiringCredentials {
                        remaining_millis: issued.remaining_millis(self.clock.now()),
                    })
                }
            });
        outcome.map_err(|error| {
            tracing::warn!(error = %error, code = error.code(), "fetching credentials failed");
            error.to_agent_error()
        })
    }
}

async fn handle<S: CredentialSource>(
    State(handler): State<Arc<Handler<S>>>,
    request: Request,
) -> Response {
    // The body is not read; only the head (which, unlike the body, is `Sync`) is kept.
    let (parts, _body) = request.into_parts();
    match handler.credentials(&parts).await {
        Ok(issued) => {
            tracing::debug!(
                association_id = issued.association().map(|a| a.association_id.as_str()),
                "serving credentials"
            );
            credentials_response(&issued)
        }
        Err(error) => error_response(&error),
    }
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// Counts, times and logs every credential response, with the client address.
async fn observe(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = tokio::time::Instant::now();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics.record_response(status);
    metrics.record_latency(elapsed);
    tracing::info!(
        client = client.map(tracing::field::display),
        %method,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "credential request"
    );
    response
}

/// A tower layer answering 429 `Too Many Requests` above a request rate (GCRA on tokio's
/// clock).
#[derive(Clone, Debug)]
pub struct RequestRateLimitLayer {
    limiter: Option<Arc<RateLimiter>>,
}

impl RequestRateLimitLayer {
    /// Allows `per_second` requests with bursts of `burst`; a rate of 0 turns limiting off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            limiter: RateLimiter::new(per_second, burst).map(Arc::new),
        }
    }
}

impl<S> Layer<S> for RequestRateLimitLayer {
    type Service = RequestRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestRateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// The service of [`RequestRateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RequestRateLimit<S> {
    inner: S,
    limiter: Option<Arc<RateLimiter>>,
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
        if let Some(limiter) = &self.limiter {
            if !limiter.check() {
                return Box::pin(std::future::ready(Ok(error_response(
                    &AgentError::TooManyRequests,
                ))));
            }
        }
        Box::pin(self.inner.call(request))
    }
}
