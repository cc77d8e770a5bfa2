//! Building blocks of an EKS Pod Identity node credential server.
//!
//! A node agent answers pods' `GET /v1/credentials` (the token in `Authorization`) with
//! credentials from EKS Auth `AssumeRoleForPodIdentity`. This crate has the blocks of such an
//! agent, each usable alone, and [`AgentBuilder`] to compose them into a drop-in replacement
//! for the reference agent (aws/eks-pod-identity-agent):
//!
//! | block | what it does |
//! |---|---|
//! | [`CredentialSource`] | validated request → issued credentials or a classified error |
//! | [`EksAuthSource`] | the source over `aws-sdk-eksauth` (feature `eks-auth`) |
//! | [`validation`] | `Host` allow-list, then the token checks, in the reference's order |
//! | [`CredentialCache`] | SHA-256-keyed LRU, strict single flight, background renewal |
//! | [`handler`] | `/v1/credentials` as an axum `Router` with the reference answers |
//! | [`probe`], [`metrics`] | `/healthz`, `/readyz`, `/metrics` |
//! | [`server`] | listeners, header limits, read timeouts, graceful shutdown |
//! | `node_credentials` | the node's keys from a shared credentials file rotated on disk (hybrid nodes; features `eks-auth` or `self-managed`) |
//!
//! The blocks composed by hand, with a custom source standing in for EKS Auth, and one request
//! answered without a socket:
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! use axum::body::Body;
//! use pod_identity_agent_lib::{
//!     CredentialCache, CredentialRequest, CredentialSource, CredentialsRouter, HostAllowList,
//!     IssuedCredentials, Metrics, SourceError,
//! };
//! use pod_identity_core::{ContainerCredentials, SecretString};
//! use tower::ServiceExt;
//!
//! /// Hands every pod the same (fake) credentials.
//! struct Fixed;
//!
//! impl CredentialSource for Fixed {
//!     async fn credentials(
//!         &self,
//!         _request: &CredentialRequest,
//!     ) -> Result<IssuedCredentials, SourceError> {
//!         Ok(IssuedCredentials::new(ContainerCredentials {
//!             access_key_id: "ASIAEXAMPLE".into(),
//!             secret_access_key: SecretString::new("secret"),
//!             token: SecretString::new("session"),
//!             account_id: Some("123456789012".into()),
//!             expiration: SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000),
//!         }))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let metrics = Metrics::new();
//! let cache = CredentialCache::builder(Fixed).metrics(metrics.clone()).build();
//! let router = CredentialsRouter::new("demo".parse().unwrap(), cache)
//!     .allowed_hosts(HostAllowList::new(["127.0.0.1"]))
//!     .metrics(metrics.clone())
//!     .into_router();
//!
//! // A token expiring in 2096 (the agent decodes it; EKS Auth would verify it).
//! let token = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjQwMDAwMDAwMDB9.c2ln";
//! let request = http::Request::get("/v1/credentials")
//!     .header("host", "127.0.0.1:8080")
//!     .header("authorization", token)
//!     .body(Body::empty())
//!     .unwrap();
//! let response = router.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! assert!(metrics.encode().contains(r#"pod_identity_http_response{code="200"} 1"#));
//! # });
//! ```
//!
//! Serving it: [`ServerBuilder`] binds the router (and the probe and metrics servers), or
//! [`AgentBuilder`] does all of the above from one source:
//!
//! ```no_run
//! # use pod_identity_agent_lib::{CredentialRequest, CredentialSource, IssuedCredentials, SourceError};
//! # struct Fixed;
//! # impl CredentialSource for Fixed {
//! #     async fn credentials(&self, _: &CredentialRequest) -> Result<IssuedCredentials, SourceError> {
//! #         Err(SourceError::Timeout)
//! #     }
//! # }
//! use pod_identity_agent_lib::{AgentBuilder, server::shutdown_signal};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = AgentBuilder::new("demo".parse()?, Fixed)
//!     .bind_hosts(["127.0.0.1", "[::1]"])
//!     .port(8080)
//!     .bind()
//!     .await?;
//! server.serve(shutdown_signal()).await;
//! # Ok(())
//! # }
//! ```
//!
//! With the `eks-auth` feature (on by default) the source is EKS Auth:
//!
//! ```no_run
//! # #[cfg(feature = "eks-auth")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use pod_identity_agent_lib::{AgentBuilder, EksAuthSource, server::shutdown_signal};
//!
//! let source = EksAuthSource::builder().region("us-west-2").build().await?;
//! AgentBuilder::new("my-cluster".parse()?, source)
//!     .bind()
//!     .await?
//!     .serve(shutdown_signal())
//!     .await;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `eks-auth` (default): [`EksAuthSource`], over `aws-sdk-eksauth` and `aws-config`.
//! - `simulator`: a local EKS Auth simulator for tests and demos.
//! - `self-managed`: [`self_managed::SelfManagedSource`], for clusters outside EKS (local
//!   token verification, a file of associations, STS `AssumeRole`); see its guide.
//! - `kubernetes`: [`kubernetes`], the Kubernetes API blocks for EKS mode: an API client
//!   (in-cluster or `KUBECONFIG`), local verification of rotated service-account tokens against
//!   the API server's keys (with a version gate and an on-disk key copy), and a watch of the
//!   node's pods that reports deleted and terminated pods.
//! - `node-network` (Linux only): [`node_network`], the link-local link and addresses pods reach
//!   the agent on, set up over rtnetlink (the agent's `initialize`).
//!
//! # Hostile pods
//!
//! Every pod on a node can reach the agent, so each is treated as a possible attacker that the
//! agent must outlast while it keeps serving the others. The defaults, each a setting of
//! [`AgentBuilder`] and of the block that enforces it:
//!
//! | what a pod could try | what bounds it | where |
//! |---|---|---|
//! | hold connections open, stop reading responses | 1024 connections, 64 per client address, closed at once beyond; 30 s per request/response cycle, writing included | [`server`] |
//! | flood requests | 100 requests/s (burst 100) per client address, then 5000/s (burst 2500) overall: the flooding pod gets 429, the others do not | [`handler`] |
//! | a large `Host` for a large 403 | the 403 repeats at most 255 bytes of it | [`validation`] |
//! | forged tokens, each an upstream call | 10 upstream calls at once per client address, then 1/s; an irrecoverable answer repeated from memory for 5 s; 64 request-path calls at once overall; 30 s per call | [`cache`] |
//!
//! Worst-case memory with the defaults: about 40 MiB for connections (1024 × ~40 KiB of
//! buffers) plus about 10 MiB for a full cache (2000 entries of ~2 KiB plus the kept token)
//! and the refused-token memory (4096 × ~200 bytes), inside the chart's 128 MiB limit.
//!
//! # Logging
//!
//! Everything logs through `tracing` (install a JSON subscriber in the binary). Credential
//! requests log the client address, status and latency; no log line, error or `Debug` output
//! holds a token or a secret.
//!
//! The AWS SDK crates underneath are another matter: at `TRACE`, `aws-sigv4` logs the signed
//! request (with the node's session token) and `aws-smithy-runtime` logs EKS Auth requests and
//! responses with their bodies (pod tokens, secret keys, session tokens). A program embedding
//! [`EksAuthSource`] or the self-managed source must cap both, whatever verbosity it is asked
//! for, for example with the filter directives `aws_sigv4=debug,aws_smithy_runtime=debug` (the
//! `pod-identity-agent` binary does).

pub mod cache;
pub mod handler;
pub mod metrics;
pub mod probe;
pub mod server;
pub mod source;
pub mod time;
pub mod validation;

mod error;

#[cfg(any(feature = "self-managed", feature = "kubernetes"))]
pub mod jwk;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
#[cfg(any(feature = "eks-auth", feature = "self-managed"))]
pub mod node_credentials;
#[cfg(feature = "node-network")]
pub mod node_network;
#[cfg(feature = "self-managed")]
pub mod self_managed;
#[cfg(feature = "simulator")]
pub mod simulator;

#[cfg(test)]
mod test_support;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pod_identity_core::ClusterName;
use server::ConnectionLimits;

pub use cache::{CredentialCache, CredentialCacheBuilder};
pub use handler::CredentialsRouter;
pub use metrics::Metrics;
pub use probe::Probe;
pub use server::{BindError, BoundServer, ServerBuilder};
#[cfg(feature = "eks-auth")]
pub use source::eks_auth::{EksAuthSource, EksAuthSourceBuilder};
pub use source::{
    CredentialRequest, CredentialSource, IssuedCredentials, SharedCredentialSource, SourceError,
};
pub use time::{SharedWallClock, WallClock};
pub use validation::{DEFAULT_BIND_HOSTS, HostAllowList, RequestValidator};

/// Composes the blocks into an agent: source → cache → handler → server.
pub struct AgentBuilder<S> {
    source: S,
    settings: Settings,
}

#[derive(Clone, Debug)]
struct Settings {
    cluster_name: ClusterName,
    bind_hosts: Vec<String>,
    allowed_hosts: Option<HostAllowList>,
    port: u16,
    probe_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    max_entries: usize,
    max_retention: Duration,
    renewal_qps: u32,
    idle_timeout: Duration,
    rate: (u32, u32),
    client_rate: (u32, u32),
    client_miss_budget: (u32, u32),
    refused_ttl: Duration,
    clock: SharedWallClock,
    metrics: Metrics,
    max_header_bytes: usize,
    header_read_timeout: Duration,
    drain_timeout: Duration,
    connection_limits: ConnectionLimits,
    allow_wildcard_bind: bool,
    pods: PodBlocks,
}

/// Evicts every cached entry of the pod with the uid given, counting the eviction under the
/// reason given (`deleted`, `terminated`); returns how many went.
pub type PodEvictor = Arc<dyn Fn(&str, &'static str) -> usize + Send + Sync>;

/// The cache's optional pod blocks (see [`CredentialCacheBuilder`](cache::CredentialCacheBuilder)).
#[derive(Clone, Default)]
struct PodBlocks {
    rotation: Option<Arc<dyn cache::RotationValidator>>,
    liveness: Option<Arc<dyn cache::PodLivenessSource>>,
    evictor: Option<Arc<OnceLock<PodEvictor>>>,
}

impl fmt::Debug for PodBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodBlocks")
            .field("rotation", &self.rotation.is_some())
            .field("liveness", &self.liveness.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> fmt::Debug for AgentBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S: CredentialSource> AgentBuilder<S> {
    /// An agent for `cluster_name` issuing from `source`, with the reference defaults.
    pub fn new(cluster_name: ClusterName, source: S) -> Self {
        Self {
            source,
            settings: Settings {
                cluster_name,
                bind_hosts: DEFAULT_BIND_HOSTS.iter().map(|h| (*h).to_owned()).collect(),
                allowed_hosts: None,
                port: pod_identity_core::endpoint::AGENT_PORT,
                probe_addr: Some(server::DEFAULT_PROBE_ADDR),
                metrics_addr: Some(server::DEFAULT_METRICS_ADDR),
                max_entries: cache::DEFAULT_MAX_ENTRIES,
                max_retention: cache::DEFAULT_MAX_RETENTION,
                renewal_qps: cache::DEFAULT_RENEWAL_QPS,
                idle_timeout: cache::DEFAULT_IDLE_TIMEOUT,
                rate: (
                    handler::DEFAULT_REQUEST_RATE,
                    handler::DEFAULT_REQUEST_BURST,
                ),
                client_rate: (
                    handler::DEFAULT_CLIENT_REQUEST_RATE,
                    handler::DEFAULT_CLIENT_REQUEST_BURST,
                ),
                client_miss_budget: (
                    cache::DEFAULT_CLIENT_MISS_RATE,
                    cache::DEFAULT_CLIENT_MISS_BURST,
                ),
                refused_ttl: cache::DEFAULT_REFUSED_TTL,
                clock: SharedWallClock::default(),
                metrics: Metrics::new(),
                max_header_bytes: handler::DEFAULT_MAX_HEADER_BYTES,
                header_read_timeout: server::DEFAULT_HEADER_READ_TIMEOUT,
                drain_timeout: server::DEFAULT_DRAIN_TIMEOUT,
                connection_limits: ConnectionLimits::default(),
                allow_wildcard_bind: false,
                pods: PodBlocks::default(),
            },
        }
    }

    /// The hosts to bind; they are also the `Host` allow-list unless one is set (see
    /// [`HostAllowList::for_bind_hosts`]).
    pub fn bind_hosts(mut self, hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.settings.bind_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// A `Host` allow-list other than the bind hosts.
    pub fn allowed_hosts(mut self, hosts: HostAllowList) -> Self {
        self.settings.allowed_hosts = Some(hosts);
        self
    }

    /// The credential port (default 80).
    pub fn port(mut self, port: u16) -> Self {
        self.settings.port = port;
        self
    }

    /// The probe server's address (default `127.0.0.1:2703`); `None` turns it off.
    pub fn probe_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.settings.probe_addr = addr;
        self
    }

    /// The metrics server's address (default `0.0.0.0:2705`); `None` turns it off.
    pub fn metrics_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.settings.metrics_addr = addr;
        self
    }

    /// Largest number of cached credentials (default 2000; 0 turns caching off).
    pub fn max_cache_size(mut self, entries: usize) -> Self {
        self.settings.max_entries = entries;
        self
    }

    /// Longest time between renewals (default 3 h; zero turns caching off).
    pub fn max_retention(mut self, retention: Duration) -> Self {
        self.settings.max_retention = retention;
        self
    }

    /// Renewals per second at most (default 3).
    pub fn max_service_qps(mut self, qps: u32) -> Self {
        self.settings.renewal_qps = qps;
        self
    }

    /// An entry not read for this long is not renewed (default 7 h).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.settings.idle_timeout = idle;
        self
    }

    /// Requests per second and burst of all clients together (default 5000 and 2500; the
    /// reference's are 1000 and 500; a rate of
    /// 0 turns this limit off).
    pub fn rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.settings.rate = (per_second, burst);
        self
    }

    /// Requests per second and burst of one client address (default 100 and 100; a rate of 0
    /// turns this limit off).
    pub fn client_rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.settings.client_rate = (per_second, burst);
        self
    }

    /// Upstream calls one client address may start: `burst` at once, then `per_second`
    /// (default 10, then 1/s; a rate of 0 turns the budget off).
    pub fn client_miss_budget(mut self, per_second: u32, burst: u32) -> Self {
        self.settings.client_miss_budget = (per_second, burst);
        self
    }

    /// How long an irrecoverable answer for a token is repeated without an upstream call
    /// (default 5 s; zero turns this off).
    pub fn refused_ttl(mut self, ttl: Duration) -> Self {
        self.settings.refused_ttl = ttl;
        self
    }

    /// Connection caps and the request/response cycle deadline of the credential port
    /// (default [`ConnectionLimits::default`]).
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.settings.connection_limits = limits;
        self
    }

    /// Allows wildcard bind hosts (`0.0.0.0`, `::`), which serve credentials on every address
    /// of the node (default: refused).
    pub fn allow_wildcard_bind(mut self, allow: bool) -> Self {
        self.settings.allow_wildcard_bind = allow;
        self
    }

    /// The wall clock (tests use [`time::TokioWallClock`]).
    pub fn clock(mut self, clock: SharedWallClock) -> Self {
        self.settings.clock = clock;
        self
    }

    /// The metrics every block reports to.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.settings.metrics = metrics;
        self
    }

    /// The largest request head (default 16 KiB); larger gets 431.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_header_bytes = bytes;
        self
    }

    /// How long a client may take to send its request head (default 10 s).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.settings.header_read_timeout = timeout;
        self
    }

    /// How long shutdown waits for in-flight requests (default 25 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.settings.drain_timeout = timeout;
        self
    }

    /// Validates pods' rotated tokens locally (see
    /// [`CredentialCacheBuilder::rotation_validator`](cache::CredentialCacheBuilder::rotation_validator));
    /// with it, and caching on, a token without a pod uid claim gets 400 before any upstream
    /// call (the cache is keyed by pod, as the reference's 0.2 line).
    pub fn rotation_validator(mut self, validator: Arc<dyn cache::RotationValidator>) -> Self {
        self.settings.pods.rotation = Some(validator);
        self
    }

    /// No renewals for gone pods (see
    /// [`CredentialCacheBuilder::pod_liveness`](cache::CredentialCacheBuilder::pod_liveness)).
    pub fn pod_liveness(mut self, pods: Arc<dyn cache::PodLivenessSource>) -> Self {
        self.settings.pods.liveness = Some(pods);
        self
    }

    /// Filled, when the cache is built, with a [`PodEvictor`] for it: what a pod watch calls
    /// when a pod goes.
    pub fn pod_evictor(mut self, slot: Arc<OnceLock<PodEvictor>>) -> Self {
        self.settings.pods.evictor = Some(slot);
        self
    }

    /// The credentials router alone (source → cache → handler), to serve it yourself.
    pub fn into_router(self) -> axum::Router {
        self.settings.router(self.source)
    }

    /// Binds every listener (skipping hosts that cannot be bound).
    pub async fn bind(self) -> Result<BoundServer, BindError> {
        let settings = self.settings;
        ServerBuilder::new(settings.router(self.source))
            .bind_hosts(settings.bind_hosts)
            .port(settings.port)
            .probe_addr(settings.probe_addr)
            .metrics_addr(settings.metrics_addr)
            .metrics(settings.metrics)
            .max_header_bytes(settings.max_header_bytes)
            .header_read_timeout(settings.header_read_timeout)
            .drain_timeout(settings.drain_timeout)
            .connection_limits(settings.connection_limits)
            .allow_wildcard_bind(settings.allow_wildcard_bind)
            .bind()
            .await
    }
}

impl Settings {
    fn router<S: CredentialSource>(&self, source: S) -> axum::Router {
        let cache = CredentialCache::builder(source)
            .max_entries(self.max_entries)
            .max_retention(self.max_retention)
            .renewal_qps(self.renewal_qps)
            .idle_timeout(self.idle_timeout)
            .client_miss_budget(self.client_miss_budget.0, self.client_miss_budget.1)
            .refused_ttl(self.refused_ttl)
            .clock(self.clock.clone())
            .metrics(self.metrics.clone());
        let cache = match &self.pods.rotation {
            Some(validator) => cache.rotation_validator(Arc::clone(validator)),
            None => cache,
        };
        let cache = match &self.pods.liveness {
            Some(pods) => cache.pod_liveness(Arc::clone(pods)),
            None => cache,
        };
        let cache = cache.build();
        if let Some(slot) = &self.pods.evictor {
            let evicting = cache.clone();
            let evictor: PodEvictor =
                Arc::new(move |uid: &str, reason: &'static str| evicting.evict_pod(uid, reason));
            if slot.set(evictor).is_err() {
                tracing::warn!("a pod evictor was already set; the new cache's is not used");
            }
        }
        let require_pod_uid = self.pods.rotation.is_some() && cache.is_enabled();
        let hosts = self
            .allowed_hosts
            .clone()
            .unwrap_or_else(|| HostAllowList::for_bind_hosts(&self.bind_hosts));
        CredentialsRouter::new(self.cluster_name.clone(), cache)
            .allowed_hosts(hosts)
            .rate_limit(self.rate.0, self.rate.1)
            .client_rate_limit(self.client_rate.0, self.client_rate.1)
            .clock(self.clock.clone())
            .metrics(self.metrics.clone())
            .max_header_bytes(self.max_header_bytes)
            .require_pod_uid(require_pod_uid)
            .into_router()
    }
}
