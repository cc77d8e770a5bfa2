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
//! | over a request rate limit or the client's miss budget | 429 `Too Many Requests` |
//! | HTTP/1.1 without `Host`, or more than one `Host` | 400 `400 Bad Request: missing required Host header` / `…: too many Host headers` (Go's server's answers) |
//! | request head over the limit | 431 |
//! | any other path | 404 |
//!
//! Any method is accepted on `/v1/credentials`. Requests are rate limited
//! ([`RequestRateLimitLayer`]) first per client address, 100/s with bursts of 100 by default,
//! so that one flooding pod gets 429 while the others are served, then overall at 5000/s with
//! bursts of 2500 (the reference has only an overall limit, 1000/s with bursts of 500, which 100
//! pods fetching 10 times a second reach alone; `rate_limit(1000, 500)` restores it); a rate of
//! 0 turns either off. The `Host` answer of a
//! 403 repeats at most 255 bytes of the refused `Host`. Every credential response is counted in
//! `pod_identity_http_response{code}`, timed in the latency histogram, and logged with the
//! client address, never with the token; a 429 is logged at `debug` only (and counted in
//! `pod_identity_requests_limited`), so that a flood does not flood the logs.
//!
//! Logging follows the reference's levels: it logs every request at `info` (`handling new request
//! request from <client>`) and a cache hit at `trace`; here one `info` line per request, after
//! the answer (client, method, status, latency; its fields borrow, nothing is allocated for
//! them), and the served answer at `debug`. With no subscriber at `info` the line costs a
//! level check.
//!
//! The handler serves from a [`CredentialCache`] (one with caching off, `max_entries(0)`, calls
//! its source for every request). A cache hit is answered without decoding the token: after the
//! `Host` check, [`CredentialCache::cached`] looks the raw header bytes up by their digest and
//! checks the kept token's `exp`/`nbf`, and the response is the JSON rendered when the
//! credentials were issued. Statuses, bodies and the order of checks are those of a miss.

use aws_smithy_async::time::SharedTimeSource;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::any;
use pod_identity_core::endpoint::CREDENTIALS_PATH;
use pod_identity_core::{agent_error::AgentError, association::ClusterName};

use crate::cache::CredentialCache;
use crate::metrics::Metrics;
use crate::source::{CredentialRequest, CredentialSource, IssuedCredentials, SourceError};

use crate::validation::{HostAllowList, RequestValidator};

mod rate_limit;
mod response;

pub use rate_limit::{RequestRateLimit, RequestRateLimitLayer};
pub use response::{credentials_response, error_response};

/// Default request rate limit per second of all clients together: five times the reference's
/// 1000/s. With the per-client limit in front, this ceiling only caps the agent's work; at the
/// reference's number, 100 pods fetching 10 times a second would already be at it and be
/// answered 429 for another pod's traffic. `rate_limit(1000, 500)` restores the reference's.
pub const DEFAULT_REQUEST_RATE: u32 = 5000;
/// Default request burst of all clients together (half the rate, as the reference's).
pub const DEFAULT_REQUEST_BURST: u32 = 2500;
/// Default request rate limit per second of one client address.
pub const DEFAULT_CLIENT_REQUEST_RATE: u32 = 100;
/// Default request burst of one client address.
pub const DEFAULT_CLIENT_REQUEST_BURST: u32 = 100;
/// Default longest time one credential request may take (the reference's server timeout).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest request head (request line plus headers): the server's connection buffer
/// and the handler's 431 limit.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// Whether `token` names its pod's uid (the reasons are the missing claim).
fn pod_uid_present(
    token: &pod_identity_core::token::ServiceAccountToken,
) -> Result<(), AgentError> {
    let Some(kubernetes) = token.claims().kubernetes.as_ref() else {
        return Err(AgentError::NoPodUid {
            reason: "kubernetes.io claim not found",
        });
    };
    match kubernetes.pod.as_ref() {
        None => Err(AgentError::NoPodUid {
            reason: "kubernetes.io pod claim not found",
        }),
        Some(pod) if pod.uid.is_empty() => Err(AgentError::NoPodUid {
            reason: "kubernetes.io pod uid is empty",
        }),
        Some(_) => Ok(()),
    }
}

/// Builds the credentials router.
pub struct CredentialsRouter<S> {
    cache: CredentialCache<S>,
    cluster_name: ClusterName,
    hosts: HostAllowList,
    rate: (u32, u32),
    client_rate: (u32, u32),
    request_timeout: Duration,
    max_header_bytes: usize,
    require_pod_uid: bool,
}

impl<S> fmt::Debug for CredentialsRouter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsRouter")
            .field("cluster_name", &self.cluster_name)
            .field("hosts", &self.hosts)
            .field("rate", &self.rate)
            .field("client_rate", &self.client_rate)
            .field("request_timeout", &self.request_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .finish_non_exhaustive()
    }
}

impl<S: CredentialSource> CredentialsRouter<S> {
    /// A router for `cluster_name` serving from `cache`, with the reference defaults and the
    /// reference host allow-list. It reads the cache's clock (token time checks, remaining
    /// lifetimes) and counts responses and latency into the cache's metrics, so one agent has
    /// one clock and one set of metrics.
    pub fn new(cluster_name: ClusterName, cache: CredentialCache<S>) -> Self {
        Self {
            cache,
            cluster_name,
            hosts: HostAllowList::reference(),
            rate: (DEFAULT_REQUEST_RATE, DEFAULT_REQUEST_BURST),
            client_rate: (DEFAULT_CLIENT_REQUEST_RATE, DEFAULT_CLIENT_REQUEST_BURST),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            require_pod_uid: false,
        }
    }

    /// The hosts clients may call through (usually the bind hosts).
    pub fn allowed_hosts(mut self, hosts: HostAllowList) -> Self {
        self.hosts = hosts;
        self
    }

    /// Requests per second and burst of all clients together; a rate of 0 turns this limit
    /// off.
    pub fn rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.rate = (per_second, burst);
        self
    }

    /// Requests per second and burst of one client address; a rate of 0 turns this limit off.
    pub fn client_rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.client_rate = (per_second, burst);
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

    /// Whether a token must carry the `kubernetes.io` pod uid claim (on when the cache keys
    /// rotated tokens by pod): a token without it gets 400 `failed to get pod uid from service
    /// account token: <reason>` before any upstream call.
    pub fn require_pod_uid(mut self, require: bool) -> Self {
        self.require_pod_uid = require;
        self
    }

    /// The router: `/v1/credentials` (any method) and 404 elsewhere.
    pub fn into_router(self) -> Router {
        let clock = self.cache.clock().clone();
        let metrics = self.cache.metrics().clone();
        let state = Arc::new(Handler {
            validator: RequestValidator::new(self.hosts).with_clock(clock.clone()),
            cache: self.cache,
            cluster_name: self.cluster_name,
            clock,
            request_timeout: self.request_timeout,
            max_header_bytes: self.max_header_bytes,
            require_pod_uid: self.require_pod_uid,
        });
        Router::new()
            .route(CREDENTIALS_PATH, any(handle::<S>))
            .route_layer(
                RequestRateLimitLayer::new(self.rate.0, self.rate.1)
                    .per_client(self.client_rate.0, self.client_rate.1)
                    .metrics(metrics.clone()),
            )
            .route_layer(middleware::from_fn_with_state(metrics, observe))
            .fallback(|| async { error_response(&AgentError::NotFound) })
            .with_state(state)
    }
}

struct Handler<S> {
    validator: RequestValidator,
    cache: CredentialCache<S>,
    cluster_name: ClusterName,
    clock: SharedTimeSource,
    request_timeout: Duration,
    max_header_bytes: usize,
    require_pod_uid: bool,
}

impl<S: CredentialSource> Handler<S> {
    async fn credentials(&self, request: &Parts) -> Result<IssuedCredentials, AgentError> {
        let headers = &request.headers;
        if header_bytes(headers) > self.max_header_bytes {
            return Err(AgentError::HeadersTooLarge);
        }
        let mut hosts = headers.get_all(header::HOST).iter();
        let host_header = hosts.next();
        if hosts.next().is_some() {
            return Err(AgentError::BadRequest {
                reason: "too many Host headers",
            });
        }
        if host_header.is_none() && request.version == http::Version::HTTP_11 {
            return Err(AgentError::BadRequest {
                reason: "missing required Host header",
            });
        }
        let host = host_header
            .map(HeaderValue::as_bytes)
            .or_else(|| request.uri.authority().map(|a| a.as_str().as_bytes()));
        let authorization = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        self.validator.check_host(host)?;
        // A cached answer for exactly these bytes skips decoding (they decoded when cached, and
        // decode the same): the cache checks the kept token's times and answers from its entry. Missing or empty tokens take the normal path to their 400.
        if let Some(raw) = authorization.filter(|raw| !raw.is_empty())
            && let Some(answer) = self.cache.cached(raw, self.clock.now())
        {
            return answer.map_err(AgentError::Token);
        }
        let token = self.validator.validate_token(authorization)?;
        if self.require_pod_uid {
            pod_uid_present(&token)?;
        }
        let client = request
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let mut request = CredentialRequest::new(self.cluster_name.clone(), token);
        if let Some(client) = client {
            request = request.with_client(client);
        }
        // The cache hands out only credentials with more than 15 s left (it checks once, on
        // the hit or when they are issued).
        let outcome = tokio::time::timeout(self.request_timeout, self.cache.get(&request))
            .await
            .unwrap_or(Err(SourceError::Timeout));
        Self::answer(outcome)
    }

    /// Logs a failed outcome and renders it as the agent's error.
    fn answer(
        outcome: Result<IssuedCredentials, SourceError>,
    ) -> Result<IssuedCredentials, AgentError> {
        outcome.map_err(|error| {
            if matches!(error, SourceError::ClientMissBudget) {
                // Logged at debug only, so that a flood does not flood the logs; counted.
                tracing::debug!("client's budget of upstream calls spent; answering 429");
                return error.to_agent_error();
            }
            let request_id = match &error {
                SourceError::EksAuth(error) => error.request_id(),
                _ => None,
            };
            tracing::warn!(
                error = %crate::error::ErrorChain(&error),
                code = error.code(),
                request_id,
                "fetching credentials failed"
            );
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
    let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let client = client.map(tracing::field::display);
    if status == StatusCode::TOO_MANY_REQUESTS {
        // A flooding client is answered 429 at its request rate: one line each at `info` would
        // let it flood the logs too.
        tracing::debug!(client, %method, status, latency_us, "credential request");
    } else {
        tracing::info!(client, %method, status, latency_us, "credential request");
    }
    response
}

#[cfg(test)]
mod tests;
