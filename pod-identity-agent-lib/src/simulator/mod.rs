//! A local EKS Auth simulator for tests, benchmarks and the demo (feature `simulator`).
//!
//! [`EksAuthSimulator`] is an HTTP server on loopback that behaves like EKS Auth for one cluster,
//! so the agent, the provider and the AWS SDKs can be exercised end to end without AWS:
//!
//! - **`POST /clusters/{clusterName}/assume-role-for-pod-identity`** (restJson1, contracts §2).
//!   Each request's **SigV4 signature is verified** with `aws-sigv4` against the node
//!   credentials the simulator was built with (service `eks-auth`, the simulator's region):
//!   no `Authorization` → 403 `MissingAuthenticationTokenException`; a malformed one or no
//!   `x-amz-date` → 403 `IncompleteSignatureException`; an unknown access key or session
//!   token → 403 `UnrecognizedClientException`; a wrong signature, scope, or an `x-amz-date`
//!   more than 5 minutes off → 403 `InvalidSignatureException`. Then the cluster name and body
//!   (malformed → 400 `InvalidParameterException`), any
//!   [injected failure](EksAuthSimulator::inject), the cluster (another one → 404
//!   `ResourceNotFoundException`), the token (core's decoder: not a JWT, no pod claim, no
//!   `pods.eks.amazonaws.com` audience or not yet valid → 400 `InvalidTokenException`; expired →
//!   400 `ExpiredTokenException`) and the association of its namespace and service account
//!   (none → 404 `ResourceNotFoundException`). Success issues fresh random credentials
//!   (`ASIA…`) for the configured lifetime (6 h by default; 59 min at most for an association
//!   with a target role), an assumed-role ARN
//!   `arn:aws:sts::<account>:assumed-role/<role>/eks-<cluster>-<pod>-<uuid>` (session name cut to
//!   64 characters), and records the session with the session tags core derives.
//!   Errors carry `x-amzn-errortype`, `x-amzn-requestid` and `{"__type","message"}`.
//! - **`POST /`** (and `GET /`): a minimal STS `GetCallerIdentity` that verifies signatures made
//!   with the credentials the simulator issued (service `sts`; the session token must match,
//!   expired credentials are refused), and answers the assumed-role identity. It works with the
//!   real `aws-sdk-sts` client (or the AWS CLI) given the server's `endpoint_url`.
//!
//! Tests steer it at run time: [`inject`](EksAuthSimulator::inject) any error code or a hang for
//! the next N requests or always, add [latency](EksAuthSimulator::set_latency), change the
//! [credential lifetime](EksAuthSimulator::set_credential_lifetime), and read back
//! [request counts](EksAuthSimulator::request_count) (total and per token) and the
//! [issued sessions](EksAuthSimulator::sessions). Each answer is logged at `info` (request id,
//! code or identity and access key id; never a secret key, session token or service-account
//! token), which makes a narrated trace for demos.
//!
//! [`mint_token`] writes service-account tokens with the real claim layout. **Nothing here
//! verifies token signatures** (minted tokens carry random signature bytes): the reference
//! agent does not verify them either, and real EKS Auth does, so minted tokens only work here.
//! Random values come from `fastrand`, not a cryptographic generator: this is a test double.
//! [`unsigned_token`] writes a JWT around a claims JSON of your own. The simulator's side of the
//! EKS Auth JSON is public too: [`read_request_body`], [`response_body`] and [`error_body`] (core
//! has the agent's side: the request it writes, the response and errors it reads).
//!
//! ```
//! use std::time::SystemTime;
//! use pod_identity_agent_lib::simulator::{
//!     EksAuthSimulator, NodeCredentials, PodToken, mint_token,
//! };
//! use aws_sdk_eksauth::config::{BehaviorVersion, Credentials, Region};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let simulator = EksAuthSimulator::builder()
//!     .cluster_name("demo".parse()?)
//!     .node_credentials(NodeCredentials::new("AKIDNODE", "node-secret"))
//!     .associate(
//!         "default".parse()?,
//!         "app".parse()?,
//!         "arn:aws:iam::111122223333:role/app".parse()?,
//!     )
//!     .build()?;
//! let server = simulator.serve("127.0.0.1:0".parse()?).await?;
//!
//! #[allow(clippy::disallowed_methods)] // a doc example may read the clock
//! let now = SystemTime::now();
//! let token = mint_token(&PodToken::new("default".parse()?, "app".parse()?, "app-1", now));
//!
//! let config = aws_sdk_eksauth::Config::builder()
//!     .behavior_version(BehaviorVersion::latest())
//!     .region(Region::new(simulator.region().to_owned()))
//!     .credentials_provider(Credentials::new("AKIDNODE", "node-secret", None, None, "node"))
//!     .endpoint_url(server.endpoint_url())
//!     .build();
//! let output = aws_sdk_eksauth::Client::from_conf(config)
//!     .assume_role_for_pod_identity()
//!     .cluster_name("demo")
//!     .token(token.expose_secret())
//!     .send()
//!     .await?;
//! let arn = output.assumed_role_user().map(|u| u.arn()).unwrap_or_default();
//! assert!(arn.starts_with("arn:aws:sts::111122223333:assumed-role/app/eks-demo-app-1-"));
//! assert_eq!(simulator.sessions().len(), 1);
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod builder;
mod credentials;
mod eks_auth;
mod server;
mod sigv4;
mod state;
mod sts;
mod token;
mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use pod_identity_core::{
    association::ClusterName, eks_auth::EksAuthError, eks_auth::EksAuthErrorCode,
};

pub use builder::{
    BuildError, DEFAULT_ACCOUNT_ID, DEFAULT_CLUSTER_NAME, DEFAULT_CREDENTIAL_LIFETIME,
    DEFAULT_MAX_SESSIONS, DEFAULT_REGION, EksAuthSimulatorBuilder, load_associations,
    parse_associations,
};
pub use credentials::NodeCredentials;
pub use server::SimulatorServer;
pub use state::{Failure, IssuedSession, Times};
pub use token::{DEFAULT_TOKEN_LIFETIME, PodToken, mint_token, unsigned_token};
pub use wire::{error_body, read_request_body, response_body};

use state::Inner;

/// A local EKS Auth for one cluster, with a matching STS `GetCallerIdentity` target.
///
/// Cheap to clone; clones share state (associations, issued sessions, counters, failures).
/// See the [module docs](self) for what it checks and answers.
#[derive(Clone)]
pub struct EksAuthSimulator {
    inner: Arc<Inner>,
}

impl fmt::Debug for EksAuthSimulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EksAuthSimulator")
            .field("cluster_name", &self.inner.cluster_name)
            .field("region", &self.inner.region)
            .field("account_id", &self.inner.account_id)
            .field("associations", &self.inner.associations.len())
            .finish_non_exhaustive()
    }
}

impl EksAuthSimulator {
    /// A builder with defaults for everything (see [`EksAuthSimulatorBuilder`]).
    pub fn builder() -> EksAuthSimulatorBuilder {
        EksAuthSimulatorBuilder::default()
    }

    fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Both endpoints as one router: EKS Auth at
    /// `/clusters/{clusterName}/assume-role-for-pod-identity`, STS at `/`. Anything else is
    /// 404 `UnknownOperationException`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/clusters/{cluster_name}/assume-role-for-pod-identity",
                post(eks_auth::assume_role_for_pod_identity),
            )
            .route("/", post(sts::handle).get(sts::handle))
            .fallback(unknown_operation)
            .with_state(self.clone())
    }

    /// Serves [`router`](Self::router) on `addr` (port 0 picks a free port) until the returned
    /// server is shut down or dropped.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SimulatorServer> {
        SimulatorServer::start(addr, self.router(), self.inner.clone()).await
    }

    /// The cluster this simulator answers for.
    pub fn cluster_name(&self) -> &ClusterName {
        &self.inner.cluster_name
    }

    /// The region requests must be signed for.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The account of the cluster and its associations.
    pub fn account_id(&self) -> &str {
        &self.inner.account_id
    }

    /// `arn:aws:eks:<region>:<account>:cluster/<cluster>`, as in the session tags.
    pub fn cluster_arn(&self) -> String {
        self.inner.cluster_arn.to_string()
    }

    /// The node credentials EKS Auth requests must be signed with.
    pub fn node_credentials(&self) -> &NodeCredentials {
        &self.inner.node
    }

    /// The lifetime of credentials issued from now on.
    pub fn credential_lifetime(&self) -> Duration {
        self.inner.lifetime()
    }

    /// Changes the lifetime of credentials issued from now on.
    pub fn set_credential_lifetime(&self, lifetime: Duration) {
        self.inner.set_lifetime(lifetime);
    }

    /// Delays every EKS Auth request by `latency` before anything else (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        self.inner.set_latency(latency);
    }

    /// Makes well-formed, correctly signed EKS Auth requests fail with `failure`, `times` over;
    /// replaces any failure injected before.
    pub fn inject(&self, failure: Failure, times: Times) {
        self.inner.inject(failure, times);
    }

    /// Shorthand for [`inject`](Self::inject) of [`Failure::error`]: the code with its modeled
    /// status.
    pub fn fail(&self, code: EksAuthErrorCode, times: Times) {
        self.inject(Failure::error(code), times);
    }

    /// Shorthand for [`inject`](Self::inject) of a custom error (any code and status).
    pub fn fail_with(&self, error: EksAuthError, times: Times) {
        self.inject(Failure::Error(error), times);
    }

    /// Removes the injected failure and releases hanging requests
    /// (they get 503 `ServiceUnavailableException`).
    pub fn clear_failures(&self) {
        self.inner.clear_failures();
    }

    /// EKS Auth requests received, whatever their outcome.
    pub fn request_count(&self) -> u64 {
        self.inner.requests()
    }

    /// EKS Auth requests that carried this service-account token (counted by its SHA-256) in a
    /// well-formed, correctly signed request, whether or not a failure was injected.
    pub fn token_request_count(&self, token: &str) -> u64 {
        self.inner.token_requests(token)
    }

    /// Sets the request counters back to zero.
    pub fn reset_counts(&self) {
        self.inner.reset_counts();
    }

    /// The sessions issued so far (the newest
    /// [`max_sessions`](EksAuthSimulatorBuilder::max_sessions)), oldest first.
    pub fn sessions(&self) -> Vec<IssuedSession> {
        self.inner.sessions()
    }

    /// The session an access key id belongs to.
    pub fn session(&self, access_key_id: &str) -> Option<IssuedSession> {
        self.inner.session(access_key_id)
    }
}

async fn unknown_operation() -> axum::response::Response {
    let error = EksAuthError::new(
        EksAuthErrorCode::from_raw("UnknownOperationException"),
        404,
        "Unknown operation",
    );
    eks_auth::error_response(&error, &builder::request_id())
}

/// `len` characters drawn from `alphabet`.
pub(crate) fn random_string(len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| char::from(alphabet[fastrand::usize(..alphabet.len())]))
        .collect()
}
