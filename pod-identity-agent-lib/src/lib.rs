//! Building blocks of an EKS Pod Identity node credential server.
//!
//! A node agent answers pods' `GET /v1/credentials` (the token in `Authorization`) with
//! credentials from EKS Auth `AssumeRoleForPodIdentity`. This crate has the blocks of such an
//! agent, each usable alone, and [`AgentBuilder`] to compose them into a drop-in replacement
//! for the reference agent (aws/eks-pod-identity-agent):
//!
//! | block | what it does |
//! |---|---|
//! | [`source::CredentialSource`] | validated request → issued credentials or a classified error |
//! | [`source::eks_auth::EksAuthSource`] | the source over `aws-sdk-eksauth` (feature `eks-auth`) |
//! | [`validation`] | `Host` allow-list, then the token checks, in the reference's order |
//! | [`cache::CredentialCache`] | SHA-256-keyed LRU, strict single flight, background renewal |
//! | [`handler`] | `/v1/credentials` as an axum `Router` with the reference answers |
//! | [`probe`], [`metrics`] | `/healthz`, `/readyz`, `/metrics` |
//! | [`server`] | listeners, header limits, read timeouts, graceful shutdown |
//! | `node_credentials` | the node's keys from a shared credentials file rotated on disk (hybrid nodes; features `eks-auth` or `self-managed`) |
//!
//! # Public API
//!
//! Each item has one path: the module that defines it (the crate root holds only what it
//! defines).
//!
//! - crate root: [`AgentBuilder`], [`PodEvictor`].
//! - [`source`]: `CredentialSource`, `SharedCredentialSource`, `CredentialRequest`,
//!   `IssuedCredentials`, `SourceError`, `AwsClientSettings` (features `eks-auth` or
//!   `self-managed`); [`source::eks_auth`]: `EksAuthSource`, its builder, error and defaults.
//! - [`cache`]: `CredentialCache`, `CredentialCacheBuilder`, the pod blocks
//!   (`RotationValidator`, `PodLivenessSource`, `PodIdentity`) and the defaults.
//! - [`validation`]: `HostAllowList`, `RequestValidator`. [`handler`]: `CredentialsRouter`,
//!   the rate limit layer, the response renderers. [`server`]: `ServerBuilder`, `BoundServer`,
//!   `BindError`, `ConnectionLimits`, `shutdown_signal`. [`probe`]: `Probe`. [`metrics`]:
//!   `Metrics`. [`time`]: `TokioTimeSource` (wall clocks are the SDK's
//!   `aws_smithy_async::time::SharedTimeSource`).
//! - Behind features: `node_credentials`, `jwk`, `self_managed` (and its `sts`), `kubernetes`,
//!   `node_network`, `simulator`.
//!
//! The blocks composed by hand, with a custom source standing in for EKS Auth, and one request
//! answered without a socket:
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! use axum::body::Body;
//! use pod_identity_agent_lib::cache::CredentialCache;
//! use pod_identity_agent_lib::handler::CredentialsRouter;
//! use pod_identity_agent_lib::metrics::Metrics;
//! use pod_identity_agent_lib::source::{
//!     CredentialRequest, CredentialSource, IssuedCredentials, SourceError,
//! };
//! use pod_identity_agent_lib::validation::HostAllowList;
//! use pod_identity_core::{container_credentials::ContainerCredentials, secret::SecretString};
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
//! Serving it: [`server::ServerBuilder`] binds the router (and the probe and metrics servers), or
//! [`AgentBuilder`] does all of the above from one source:
//!
//! ```no_run
//! # use pod_identity_agent_lib::source::{
//! #     CredentialRequest, CredentialSource, IssuedCredentials, SourceError,
//! # };
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
//!     .server(|server| server.port(8080))
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
//! use pod_identity_agent_lib::AgentBuilder;
//! use pod_identity_agent_lib::server::shutdown_signal;
//! use pod_identity_agent_lib::source::eks_auth::EksAuthSource;
//!
//! let source = EksAuthSource::builder()
//!     .aws_client(|aws| aws.region("us-west-2"))
//!     .build()
//!     .await?;
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
//! - `eks-auth` (default): [`source::eks_auth::EksAuthSource`], over `aws-sdk-eksauth` and
//!   `aws-config`.
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
//! agent must outlast while it keeps serving the others. The defaults, each a setting of the
//! block that enforces it (through [`AgentBuilder::server`], [`AgentBuilder::router`] and
//! [`AgentBuilder::cache`] when the agent is assembled):
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
//! [`source::eks_auth::EksAuthSource`] or the self-managed source must cap both, whatever verbosity it is asked
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

use aws_smithy_async::time::SharedTimeSource;
use std::fmt;
use std::sync::{Arc, OnceLock};

use pod_identity_core::association::ClusterName;

use cache::{CredentialCache, CredentialCacheBuilder};
use handler::CredentialsRouter;
use metrics::Metrics;
use server::{BindError, BoundServer, ServerBuilder};
use source::CredentialSource;

use validation::{DEFAULT_BIND_HOSTS, HostAllowList};

/// Composes the blocks into an agent: source → cache → handler → server.
///
/// Each block keeps its own builder and its own names: [`cache`](Self::cache) configures the
/// [`CredentialCacheBuilder`], [`router`](Self::router) the [`CredentialsRouter`] and
/// [`server`](Self::server) the [`ServerBuilder`], each with the reference defaults. The agent
/// itself holds only what ties the blocks together: the bind hosts (the server's listeners and
/// the router's `Host` allow-list unless one is set), one clock and one set of metrics for every
/// block, local validation of rotated tokens (the cache's validator and the router's pod uid
/// requirement) and the pod evictor.
///
/// ```no_run
/// # use pod_identity_agent_lib::source::{
/// #     CredentialRequest, CredentialSource, IssuedCredentials, SourceError,
/// # };
/// # struct Fixed;
/// # impl CredentialSource for Fixed {
/// #     async fn credentials(&self, _: &CredentialRequest) -> Result<IssuedCredentials, SourceError> {
/// #         Err(SourceError::Timeout)
/// #     }
/// # }
/// use std::time::Duration;
///
/// use pod_identity_agent_lib::AgentBuilder;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let server = AgentBuilder::new("demo".parse()?, Fixed)
///     .bind_hosts(["127.0.0.1"])
///     .cache(|cache| cache.max_entries(500).renewal_qps(10))
///     .router(|router| router.rate_limit(1000, 500))
///     .server(|server| server.port(8080).drain_timeout(Duration::from_secs(5)))
///     .bind()
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct AgentBuilder<S> {
    cluster_name: ClusterName,
    bind_hosts: Vec<String>,
    clock: SharedTimeSource,
    metrics: Metrics,
    cache: CredentialCacheBuilder<S>,
    router: Configure<CredentialsRouter<S>>,
    server: Configure<ServerBuilder>,
    rotation: Option<Arc<dyn cache::RotationValidator>>,
    pod_evictor: Option<Arc<OnceLock<PodEvictor>>>,
}

/// The configuration of a block built later, as the closures given so far.
type Configure<B> = Box<dyn FnOnce(B) -> B + Send>;

/// Evicts every cached entry of the pod with the uid given, counting the eviction under the
/// reason given (`deleted`, `terminated`); returns how many went.
pub type PodEvictor = Arc<dyn Fn(&str, &'static str) -> usize + Send + Sync>;

impl<S> fmt::Debug for AgentBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("cluster_name", &self.cluster_name)
            .field("bind_hosts", &self.bind_hosts)
            .field("cache", &self.cache)
            .field("rotation", &self.rotation.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: CredentialSource> AgentBuilder<S> {
    /// An agent for `cluster_name` issuing from `source`, with the reference defaults.
    pub fn new(cluster_name: ClusterName, source: S) -> Self {
        Self {
            cluster_name,
            bind_hosts: DEFAULT_BIND_HOSTS.iter().map(|h| (*h).to_owned()).collect(),
            clock: SharedTimeSource::default(),
            metrics: Metrics::new(),
            cache: CredentialCache::builder(source),
            router: Box::new(|router| router),
            server: Box::new(|server| server),
            rotation: None,
            pod_evictor: None,
        }
    }

    /// The hosts to bind; they are also the `Host` allow-list unless the router is given one
    /// (see [`HostAllowList::for_bind_hosts`]).
    pub fn bind_hosts(mut self, hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.bind_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// The metrics every block reports to.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Configures the cache (entries, retention, renewal rate, idle time, the per-client
    /// upstream budget, refused tokens, pod liveness, …).
    pub fn cache(
        mut self,
        configure: impl FnOnce(CredentialCacheBuilder<S>) -> CredentialCacheBuilder<S>,
    ) -> Self {
        self.cache = configure(self.cache);
        self
    }

    /// Configures the credentials router (the `Host` allow-list, request rate limits, the
    /// header size it answers 431 above, …).
    pub fn router(
        mut self,
        configure: impl FnOnce(CredentialsRouter<S>) -> CredentialsRouter<S> + Send + 'static,
    ) -> Self {
        let earlier = self.router;
        self.router = Box::new(move |router| configure(earlier(router)));
        self
    }

    /// Configures the server (port, probe and metrics addresses, connection limits, header
    /// limits and timeouts, drain, …).
    pub fn server(
        mut self,
        configure: impl FnOnce(ServerBuilder) -> ServerBuilder + Send + 'static,
    ) -> Self {
        let earlier = self.server;
        self.server = Box::new(move |server| configure(earlier(server)));
        self
    }

    /// Validates pods' rotated tokens locally (see
    /// [`CredentialCacheBuilder::rotation_validator`]); with it, and caching on, a token
    /// without a pod uid claim gets 400 before any upstream call (the cache is keyed by pod, as
    /// the reference's 0.2 line).
    pub fn rotation_validator(mut self, validator: Arc<dyn cache::RotationValidator>) -> Self {
        self.rotation = Some(validator);
        self
    }

    /// Filled, when the cache is built, with a [`PodEvictor`] for it: what a pod watch calls
    /// when a pod goes.
    pub fn pod_evictor(mut self, slot: Arc<OnceLock<PodEvictor>>) -> Self {
        self.pod_evictor = Some(slot);
        self
    }

    /// The wall clock of every block (tests use [`time::TokioTimeSource`]).
    pub fn clock(mut self, clock: SharedTimeSource) -> Self {
        self.clock = clock;
        self
    }

    /// The credentials router alone (source → cache → handler), to serve it yourself.
    pub fn into_router(self) -> axum::Router {
        self.assemble().0
    }

    /// Binds every listener (skipping hosts that cannot be bound).
    pub async fn bind(self) -> Result<BoundServer, BindError> {
        let (router, server) = self.assemble();
        server(router).bind().await
    }

    /// The credentials router, and the server configuration waiting for it.
    fn assemble(self) -> (axum::Router, impl FnOnce(axum::Router) -> ServerBuilder) {
        let mut cache = self.cache.clock(self.clock).metrics(self.metrics.clone());
        if let Some(validator) = &self.rotation {
            cache = cache.rotation_validator(Arc::clone(validator));
        }
        let cache = cache.build();
        if let Some(slot) = &self.pod_evictor {
            let evicting = cache.clone();
            let evictor: PodEvictor =
                Arc::new(move |uid: &str, reason: &'static str| evicting.evict_pod(uid, reason));
            if slot.set(evictor).is_err() {
                tracing::warn!("a pod evictor was already set; the new cache's is not used");
            }
        }
        let require_pod_uid = self.rotation.is_some() && cache.is_enabled();
        let router = CredentialsRouter::new(self.cluster_name, cache)
            .allowed_hosts(HostAllowList::for_bind_hosts(&self.bind_hosts))
            .require_pod_uid(require_pod_uid);
        let router = (self.router)(router).into_router();
        let (bind_hosts, metrics, configure) = (self.bind_hosts, self.metrics, self.server);
        (router, move |router| {
            configure(ServerBuilder::new(router).bind_hosts(bind_hosts)).metrics(metrics)
        })
    }
}
