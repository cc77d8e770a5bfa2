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

use std::fmt;
use std::net::{IpAddr, SocketAddr};
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

use crate::cache::CredentialCache;
use crate::metrics::{Limited, Metrics};
use crate::source::{CredentialRequest, CredentialSource, IssuedCredentials, SourceError};
use crate::time::{ClientRateLimiter, RateLimiter, SharedWallClock};
use crate::validation::{HostAllowList, RequestValidator};

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

/// Renders an agent error as the reference does: its status, `text/plain` body (and, for the
/// requests Go's server refuses itself, `Connection: close`).
pub fn error_response(error: &AgentError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if matches!(error, AgentError::BadRequest { .. }) {
        let mut response = error_response_with(status, error);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    error_response_with(status, error)
}

fn error_response_with(status: StatusCode, error: &AgentError) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(error.content_type()),
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

/// Renders issued credentials: 200 with core's byte-exact JSON (rendered once per issued
/// credentials, [`IssuedCredentials::json_body`]).
pub fn credentials_response(issued: &IssuedCredentials) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        issued.json_body(),
    )
        .into_response()
}

/// Whether `token` names its pod's uid (the reasons are the missing claim).
fn pod_uid_present(token: &pod_identity_core::ServiceAccountToken) -> Result<(), AgentError> {
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
    clock: SharedWallClock,
    metrics: Metrics,
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
    /// reference host allow-list.
    pub fn new(cluster_name: ClusterName, cache: CredentialCache<S>) -> Self {
        Self {
            cache,
            cluster_name,
            hosts: HostAllowList::reference(),
            rate: (DEFAULT_REQUEST_RATE, DEFAULT_REQUEST_BURST),
            client_rate: (DEFAULT_CLIENT_REQUEST_RATE, DEFAULT_CLIENT_REQUEST_BURST),
            clock: SharedWallClock::default(),
            metrics: Metrics::default(),
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

    /// Whether a token must carry the `kubernetes.io` pod uid claim (on when the cache keys
    /// rotated tokens by pod): a token without it gets 400 `failed to get pod uid from service
    /// account token: <reason>` before any upstream call.
    pub fn require_pod_uid(mut self, require: bool) -> Self {
        self.require_pod_uid = require;
        self
    }

    /// The router: `/v1/credentials` (any method) and 404 elsewhere.
    pub fn into_router(self) -> Router {
        let state = Arc::new(Handler {
            validator: RequestValidator::new(self.hosts).with_clock(self.clock.clone()),
            cache: self.cache,
            cluster_name: self.cluster_name,
            clock: self.clock,
            request_timeout: self.request_timeout,
            max_header_bytes: self.max_header_bytes,
            require_pod_uid: self.require_pod_uid,
        });
        Router::new()
            .route(CREDENTIALS_PATH, any(handle::<S>))
            .route_layer(
                RequestRateLimitLayer::new(self.rate.0, self.rate.1)
                    .per_client(self.client_rate.0, self.client_rate.1)
                    .metrics(self.metrics.clone()),
            )
            .route_layer(middleware::from_fn_with_state(self.metrics, observe))
            .fallback(|| async { error_response(&AgentError::NotFound) })
            .with_state(state)
    }
}

struct Handler<S> {
    validator: RequestValidator,
    cache: CredentialCache<S>,
    cluster_name: ClusterName,
    clock: SharedWallClock,
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use pod_identity_core::EksAuthError;
    use tower::ServiceExt;

    use super::*;
    use crate::test_support::{
        FakeSource, SECRET_ACCESS_KEY, START_SECS, capture_logs, day_token, jwt, jwt_with_header,
        token, wall_clock,
    };

    const HOST: &str = "169.254.170.23";

    /// A cache with caching off: every request reaches `source`.
    fn uncached(source: FakeSource) -> CredentialCache<FakeSource> {
        CredentialCache::builder(source)
            .max_entries(0)
            .clock(wall_clock())
            .build()
    }

    fn router(source: FakeSource) -> Router {
        CredentialsRouter::new("demo".parse().unwrap(), uncached(source))
            .clock(wall_clock())
            .into_router()
    }

    fn get(host: &str, authorization: Option<&str>) -> http::Request<Body> {
        let mut request = http::Request::get(CREDENTIALS_PATH).header(header::HOST, host);
        if let Some(token) = authorization {
            request = request.header(header::AUTHORIZATION, token);
        }
        request.body(Body::empty()).unwrap()
    }

    async fn send(
        router: &Router,
        request: http::Request<Body>,
    ) -> (StatusCode, HeaderMap, String) {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn answer(router: &Router, host: &str, authorization: Option<&str>) -> (u16, String) {
        let (status, _, body) = send(router, get(host, authorization)).await;
        (status.as_u16(), body)
    }

    #[tokio::test(start_paused = true)]
    async fn success_is_the_byte_exact_container_credentials_json() {
        let source = FakeSource::new(wall_clock());
        let router = router(source.clone());
        let (status, headers, body) = send(&router, get(HOST, Some(&day_token("p")))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        // START + 6 h = 2023-11-15T04:13:20Z.
        assert_eq!(
            body,
            format!(
                r#"{{"AccessKeyId":"ASIAFAKE1","SecretAccessKey":"{SECRET_ACCESS_KEY}","Token":"session-token-1","AccountId":"111122223333","Expiration":"2023-11-15T04:13:20Z"}}"#
            )
        );
        assert_eq!(source.calls(), 1);
    }

    fn cached_router(cache: &CredentialCache<FakeSource>, metrics: &Metrics) -> Router {
        CredentialsRouter::new("demo".parse().unwrap(), cache.clone())
            .clock(wall_clock())
            .metrics(metrics.clone())
            .rate_limit(0, 0)
            .into_router()
    }

    fn cache_of(source: &FakeSource, metrics: &Metrics) -> CredentialCache<FakeSource> {
        CredentialCache::builder(source.clone())
            .clock(wall_clock())
            .metrics(metrics.clone())
            .build()
    }

    #[tokio::test(start_paused = true)]
    async fn with_pod_uids_required_a_token_without_one_gets_400_before_any_upstream_call() {
        let source = FakeSource::new(wall_clock());
        let router = CredentialsRouter::new("demo".parse().unwrap(), uncached(source.clone()))
            .clock(wall_clock())
            .rate_limit(0, 0)
            .require_pod_uid(true)
            .into_router();
        let mut claims: serde_json::Value = serde_json::json!({
            "aud": ["pods.eks.amazonaws.com"],
            "exp": START_SECS + 3600,
            "iat": START_SECS,
            "iss": "https://oidc.eks.us-west-2.amazonaws.com/id/EXAMPLE",
            "sub": "system:serviceaccount:default:app",
            "kubernetes.io": {
                "namespace": "default",
                "serviceaccount": {"name": "app", "uid": "sa-uid"}
            }
        });
        let no_pod = jwt(&claims);
        assert_eq!(
            answer(&router, HOST, Some(&no_pod)).await,
            (
                400,
                "failed to get pod uid from service account token: kubernetes.io pod claim not found\n"
                    .into()
            )
        );
        claims["kubernetes.io"] = serde_json::Value::Null;
        let no_kubernetes = jwt(&claims);
        assert_eq!(answer(&router, HOST, Some(&no_kubernetes)).await.0, 400);
        assert_eq!(source.calls(), 0);
        assert_eq!(answer(&router, HOST, Some(&day_token("p"))).await.0, 200);
        assert_eq!(source.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hit_is_served_from_the_entry_with_the_same_bytes_and_checks() {
        let source = FakeSource::new(wall_clock());
        let metrics = Metrics::new();
        let cache = cache_of(&source, &metrics);
        let router = cached_router(&cache, &metrics);
        let token = day_token("p");
        let first = send(&router, get(HOST, Some(&token))).await;
        let second = send(&router, get(HOST, Some(&token))).await;
        assert_eq!(first.0, StatusCode::OK);
        assert_eq!(first, second, "status, headers and body");
        assert_eq!(source.calls(), 1, "the second was served from the cache");
        let text = metrics.encode();
        assert!(
            text.contains("pod_identity_cache_state{state=\"miss\"} 1"),
            "{text}"
        );
        // The host is still checked first, and an empty token still has its own answer.
        assert_eq!(answer(&router, "10.0.0.1", Some(&token)).await.0, 403);
        assert_eq!(
            answer(&router, HOST, Some("")).await,
            (400, "Service account token cannot be empty\n".into())
        );
        assert_eq!(
            answer(&router, HOST, None).await,
            (400, "Service account token cannot be empty\n".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_with_a_cached_entry_gets_the_reference_400() {
        let source = FakeSource::new(wall_clock());
        let metrics = Metrics::new();
        let cache = cache_of(&source, &metrics);
        let router = cached_router(&cache, &metrics);
        // The token expires in an hour; the credentials last 6 h and renew at 3 h.
        let token = token("p", Duration::from_secs(3600));
        assert_eq!(answer(&router, HOST, Some(&token)).await.0, 200);
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert_eq!(answer(&router, HOST, Some(&token)).await.0, 200, "a hit");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.len(), 1, "the entry is still cached");
        assert_eq!(
            answer(&router, HOST, Some(&token)).await,
            (
                400,
                "Service account token failed basic claim validations: token is expired\n".into()
            )
        );
        assert_eq!(source.calls(), 1);
        let text = metrics.encode();
        // No renewal (the reference's `hit`) and no second fetch (`miss`) for the refused one.
        assert!(!text.contains("state=\"hit\""), "{text}");
        assert!(
            text.contains("pod_identity_cache_state{state=\"miss\"} 1"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_not_yet_valid_token_with_a_cached_entry_gets_the_reference_400() {
        let source = FakeSource::new(wall_clock());
        let metrics = Metrics::new();
        let cache = cache_of(&source, &metrics);
        let router = cached_router(&cache, &metrics);
        // Valid from a minute from now: the handler would refuse it, so it is cached directly.
        let later = jwt(&serde_json::json!({
            "exp": START_SECS + 86_400,
            "nbf": START_SECS + 60,
        }));
        cache
            .get(&crate::test_support::request(&later))
            .await
            .unwrap();
        assert_eq!(
            answer(&router, HOST, Some(&later)).await,
            (
                400,
                "Service account token failed basic claim validations: token is not valid yet\n"
                    .into()
            )
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(answer(&router, HOST, Some(&later)).await.0, 200);
        assert_eq!(source.calls(), 1, "served from the entry once valid");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_one_byte_different_is_never_another_tokens_hit() {
        let source = FakeSource::new(wall_clock());
        let metrics = Metrics::new();
        let cache = cache_of(&source, &metrics);
        let router = cached_router(&cache, &metrics);
        let token = day_token("p");
        let (_, _, body) = send(&router, get(HOST, Some(&token))).await;
        assert!(body.contains("ASIAFAKE1"), "{body}");
        // Same header and claims, one byte of the signature changed: a miss, its own entry.
        let mut other = token.clone().into_bytes();
        let last = other.len() - 1;
        other[last] ^= 1;
        let other = String::from_utf8(other).unwrap();
        let (status, _, body) = send(&router, get(HOST, Some(&other))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("ASIAFAKE2"), "{body}");
        assert_eq!((source.calls(), cache.len()), (2, 2));
        // One byte off in the header: not a JWT, refused as before, whatever is cached.
        let broken = format!("!{}", &token[1..]);
        let (status, body) = answer(&router, HOST, Some(&broken)).await;
        assert_eq!(status, 400);
        assert!(
            body.starts_with("Service account token cannot be parsed: "),
            "{body}"
        );
        // A prefix of a cached token is not it either.
        let prefix = &token[..token.len() - 1];
        assert!(answer(&router, HOST, Some(prefix)).await.0 == 200);
        assert_eq!(source.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn every_method_is_accepted_on_the_credentials_path() {
        let router = router(FakeSource::new(wall_clock()));
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"] {
            let request = http::Request::builder()
                .method(method)
                .uri(CREDENTIALS_PATH)
                .header(header::HOST, HOST)
                .header(header::AUTHORIZATION, day_token("p"))
                .body(Body::empty())
                .unwrap();
            let (status, _, _) = send(&router, request).await;
            assert_eq!(status, StatusCode::OK, "{method}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn host_check_follows_the_reference_texts_and_strips_ports_and_brackets() {
        let router = router(FakeSource::new(wall_clock()));
        let token = day_token("p");
        for host in [
            "169.254.170.23",
            "169.254.170.23:80",
            "fd00:ec2::23",
            "[fd00:ec2::23]",
            "[fd00:ec2::23]:80",
            "[FD00:EC2::23]:80",
        ] {
            assert_eq!(answer(&router, host, Some(&token)).await.0, 200, "{host}");
        }
        assert_eq!(
            answer(&router, "10.0.0.1:80", Some(&token)).await,
            (
                403,
                "Access Denied. Called agent through invalid address, please use either \
                 [169.254.170.23 fd00:ec2::23] address not 10.0.0.1\n"
                    .into()
            )
        );
        // The host is checked before the token.
        assert_eq!(answer(&router, "localhost", None).await.0, 403);
    }

    #[tokio::test(start_paused = true)]
    async fn the_allow_list_follows_the_configured_hosts() {
        let router = CredentialsRouter::new(
            "demo".parse().unwrap(),
            uncached(FakeSource::new(wall_clock())),
        )
        .clock(wall_clock())
        .allowed_hosts(HostAllowList::new(["127.0.0.1", "[::1]"]))
        .into_router();
        let token = day_token("p");
        assert_eq!(answer(&router, "127.0.0.1:8080", Some(&token)).await.0, 200);
        assert_eq!(answer(&router, "[::1]:8080", Some(&token)).await.0, 200);
        assert_eq!(
            answer(&router, HOST, Some(&token)).await,
            (
                403,
                "Access Denied. Called agent through invalid address, please use either \
                 [127.0.0.1 ::1] address not 169.254.170.23\n"
                    .into()
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn token_errors_use_the_reference_texts_in_the_reference_order() {
        let router = router(FakeSource::new(wall_clock()));
        let cases: [(Option<String>, &str); 7] = [
            (None, "Service account token cannot be empty\n"),
            (
                Some(String::new()),
                "Service account token cannot be empty\n",
            ),
            (
                Some("not-a-jwt".into()),
                "Service account token cannot be parsed: token is malformed: token contains an invalid number of segments\n",
            ),
            (
                Some("a.b.c.d".into()),
                "Service account token cannot be parsed: token is malformed: token contains an invalid number of segments\n",
            ),
            (
                Some(token("p", Duration::ZERO)),
                "Service account token failed basic claim validations: token is expired\n",
            ),
            (
                Some(jwt(
                    &serde_json::json!({"nbf": START_SECS + 60, "exp": START_SECS + 3600}),
                )),
                "Service account token failed basic claim validations: token is not valid yet\n",
            ),
            (Some(jwt(&serde_json::json!({"exp": START_SECS + 1}))), ""),
        ];
        for (token, expected) in cases {
            let (status, body) = answer(&router, HOST, token.as_deref()).await;
            if expected.is_empty() {
                // Valid for one more second: accepted.
                assert_eq!(status, 200);
            } else {
                assert_eq!((status, body.as_str()), (400, expected), "{token:?}");
            }
        }
        for header in [
            serde_json::json!({"alg": "XS999"}),
            serde_json::json!({"kid": "k"}),
        ] {
            let unverifiable =
                jwt_with_header(&header, &serde_json::json!({"exp": START_SECS + 3600}));
            let (status, body) = answer(&router, HOST, Some(&unverifiable)).await;
            assert_eq!(status, 400);
            assert!(
                body.starts_with("Service account token cannot be parsed: token is unverifiable: "),
                "{body}"
            );
        }
        let bad_base64 = "e30.!!!.c2ln";
        let (status, body) = answer(&router, HOST, Some(bad_base64)).await;
        assert_eq!(status, 400);
        assert!(
            body.starts_with("Service account token cannot be parsed: token is malformed: "),
            "{body}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn eks_auth_errors_keep_their_status_and_reference_body() {
        let source = FakeSource::new(wall_clock());
        let router = router(source.clone());
        let cases = [
            (
                403,
                "AccessDeniedException",
                "[req-1]: (AccessDeniedException): denied, fault: client\n",
            ),
            (
                404,
                "ResourceNotFoundException",
                "[req-1]: (ResourceNotFoundException): denied, fault: client\n",
            ),
            (
                429,
                "ThrottlingException",
                "[req-1]: (ThrottlingException): denied, fault: client\n",
            ),
            (
                500,
                "InternalServerException",
                "[req-1]: (InternalServerException): denied, fault: server\n",
            ),
            (
                503,
                "ServiceUnavailableException",
                "[req-1]: (ServiceUnavailableException): denied, fault: server\n",
            ),
        ];
        for (status, code, expected) in cases {
            source.fail_next(SourceError::EksAuth(EksAuthError::from_http(
                status,
                Some(code),
                Some("req-1"),
                br#"{"message":"denied"}"#,
            )));
            // A fresh token per case, so no cached credentials answer instead.
            let token = day_token(code);
            assert_eq!(
                answer(&router, HOST, Some(&token)).await,
                (status, expected.to_owned()),
                "{code}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_and_unreachable_sources_are_500_empty_brackets() {
        let source = FakeSource::new(wall_clock());
        let router = router(source.clone());
        source.fail_next(SourceError::Timeout);
        assert_eq!(
            answer(&router, HOST, Some(&day_token("a"))).await,
            (500, "[]\n".into())
        );
        source.fail_next(SourceError::unavailable(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(
            answer(&router, HOST, Some(&day_token("b"))).await,
            (500, "[]\n".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_source_is_logged_with_its_cause() {
        let (logs, _guard) = capture_logs();
        let source = FakeSource::new(wall_clock());
        let router = router(source.clone());
        source.fail_next(SourceError::unavailable(std::io::Error::other(
            "dns error: no such host",
        )));
        assert_eq!(answer(&router, HOST, Some(&day_token("a"))).await.0, 500);
        let logs = logs.text();
        assert!(
            logs.contains("credential source unavailable: dns error: no such host"),
            "{logs}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_slower_than_the_request_timeout_is_500_empty_brackets() {
        let source = FakeSource::new(wall_clock());
        source.close();
        let router = CredentialsRouter::new("demo".parse().unwrap(), uncached(source))
            .clock(wall_clock())
            .request_timeout(Duration::from_secs(30))
            .into_router();
        assert_eq!(
            answer(&router, HOST, Some(&day_token("a"))).await,
            (500, "[]\n".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_with_15_seconds_or_less_left_are_500() {
        let source = FakeSource::new(wall_clock());
        source.set_lifetime(Duration::from_millis(12_345));
        let router = router(source.clone());
        assert_eq!(
            answer(&router, HOST, Some(&day_token("a"))).await,
            (
                500,
                "fetched credentials are expired or will expire within the next 12.35 seconds\n"
                    .into()
            )
        );
        source.set_lifetime(Duration::from_secs(16));
        assert_eq!(answer(&router, HOST, Some(&day_token("b"))).await.0, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_rate_limit_is_429_until_tokens_refill() {
        let router = CredentialsRouter::new(
            "demo".parse().unwrap(),
            uncached(FakeSource::new(wall_clock())),
        )
        .clock(wall_clock())
        .rate_limit(10, 5)
        .into_router();
        let token = day_token("p");
        for _ in 0..5 {
            assert_eq!(answer(&router, HOST, Some(&token)).await.0, 200);
        }
        assert_eq!(
            answer(&router, HOST, Some(&token)).await,
            (429, "Too Many Requests\n".into())
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(answer(&router, HOST, Some(&token)).await.0, 200);
        assert_eq!(answer(&router, HOST, Some(&token)).await.0, 429);
    }

    #[tokio::test(start_paused = true)]
    async fn the_overall_rate_limit_allows_a_burst_of_2500_and_zero_turns_it_off() {
        let token = day_token("p");
        let limited = router(FakeSource::new(wall_clock()));
        let mut ok = 0;
        for _ in 0..3000 {
            if answer(&limited, HOST, Some(&token)).await.0 == 200 {
                ok += 1;
            }
        }
        assert_eq!(ok, 2500);

        let unlimited = CredentialsRouter::new(
            "demo".parse().unwrap(),
            uncached(FakeSource::new(wall_clock())),
        )
        .clock(wall_clock())
        .rate_limit(0, 0)
        .into_router();
        for _ in 0..2000 {
            assert_eq!(answer(&unlimited, HOST, Some(&token)).await.0, 200);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_headers_are_431_and_other_paths_404() {
        let router = CredentialsRouter::new(
            "demo".parse().unwrap(),
            uncached(FakeSource::new(wall_clock())),
        )
        .clock(wall_clock())
        .max_header_bytes(1024)
        .into_router();
        let big = "a".repeat(2048);
        assert_eq!(
            answer(&router, HOST, Some(&big)).await,
            (431, AgentError::HeadersTooLarge.body())
        );
        for path in ["/", "/v1/credential", "/v1/credentials/x", "/healthz"] {
            let request = http::Request::get(path)
                .header(header::HOST, HOST)
                .body(Body::empty())
                .unwrap();
            let (status, _, body) = send(&router, request).await;
            assert_eq!(
                (status.as_u16(), body.as_str()),
                (404, "404 page not found\n"),
                "{path}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn responses_are_counted_and_logged_with_the_client_address_but_no_secret() {
        let (logs, _guard) = capture_logs();
        let metrics = Metrics::new();
        let source = FakeSource::new(wall_clock());
        let router = CredentialsRouter::new("demo".parse().unwrap(), uncached(source.clone()))
            .clock(wall_clock())
            .metrics(metrics.clone())
            .into_router();
        let token = day_token("p");
        let mut request = get(HOST, Some(&token));
        request
            .extensions_mut()
            .insert(ConnectInfo::<SocketAddr>("10.1.2.3:4567".parse().unwrap()));
        assert_eq!(send(&router, request).await.0, StatusCode::OK);
        source.fail_next(SourceError::EksAuth(EksAuthError::from_http(
            400,
            Some("InvalidTokenException"),
            Some("req-9"),
            br#"{"message":"bad token"}"#,
        )));
        let other = day_token("q");
        assert_eq!(answer(&router, HOST, Some(&other)).await.0, 400);
        assert_eq!(answer(&router, "10.0.0.1", Some(&other)).await.0, 403);

        let text = metrics.encode();
        assert!(
            text.contains("pod_identity_http_response{code=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pod_identity_http_response{code=\"400\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pod_identity_http_response{code=\"403\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pod_identity_http_request_duration_seconds_count 3"),
            "{text}"
        );

        let logs = logs.text();
        assert!(logs.contains("10.1.2.3:4567"), "{logs}");
        assert!(logs.contains("InvalidTokenException"), "{logs}");
        for secret in [
            token.as_str(),
            other.as_str(),
            SECRET_ACCESS_KEY,
            "session-token-1",
        ] {
            assert!(!logs.contains(secret), "a secret reached the logs: {logs}");
        }
        // The token payload (between the dots) is not logged in pieces either.
        let payload = token.split('.').nth(1).unwrap();
        assert!(!logs.contains(payload));
    }
}
