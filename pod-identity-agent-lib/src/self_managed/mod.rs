//! Pod Identity beyond EKS (feature `self-managed`): [`SelfManagedSource`].
//!
//! EKS Pod Identity needs EKS Auth, which only knows EKS clusters. This source gives the same
//! agent, cache, handler and pod-side contract (the same env vars, token file and SDK
//! behaviour; applications change nothing) to any Kubernetes cluster: EKS Anywhere,
//! self-managed clusters on EC2, on-premises, kind or k3s on a laptop. Where EKS Auth verifies
//! the token, finds the association and assumes the role, the agent does it itself:
//!
//! 1. **Verify the token locally** ([`TokenVerifier`]): the signature against the cluster's
//!    JWKS, the issuer, the audience, `exp`/`nbf` with a small leeway, and the pod claims. A
//!    forged, re-signed, expired, wrong-issuer or wrong-audience token is refused with 400
//!    (`InvalidTokenException`, or `ExpiredTokenException`) and never reaches STS.
//! 2. **Resolve the association** from an [`AssociationStore`]; [`FileAssociationStore`] reads
//!    a JSON file (a ConfigMap) and reloads it when it changes, keeping the last good version
//!    on a bad edit. No association: 404 `ResourceNotFoundException`.
//! 3. **Assume the role** with STS `AssumeRole`, signed with the node's own credentials: the
//!    six EKS session tags (transitive) unless disabled, the external id and session policy,
//!    role chaining to a target role (see [`sts`] for the details and the error
//!    mapping).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use pod_identity_agent_lib::self_managed::{
//!     FileAssociationStore, JwksLocation, SelfManagedSource, TokenVerifier,
//! };
//! use pod_identity_agent_lib::{AgentBuilder, server::shutdown_signal};
//!
//! let verifier = TokenVerifier::builder("https://issuer.example.com")
//!     .jwks(JwksLocation::File("/etc/pod-identity/jwks.json".into()))
//!     .build()
//!     .await?;
//! let store = FileAssociationStore::open("/etc/pod-identity/associations.json").await?;
//! let source = SelfManagedSource::builder(verifier, store)
//!     .aws_client(|aws| aws.region("eu-west-1"))
//!     .build()
//!     .await?;
//! AgentBuilder::new("lab".parse()?, source)
//!     .bind()
//!     .await?
//!     .serve(shutdown_signal())
//!     .await;
//! # Ok(())
//! # }
//! ```
//!
//! # Running it on a self-managed cluster
//!
//! The binary's `self-managed` subcommand assembles exactly this:
//!
//! ```text
//! pod-identity-agent self-managed --cluster-name lab \
//!     --issuer https://issuer.example.com --jwks-file /etc/pod-identity/jwks.json \
//!     --associations /etc/pod-identity/associations.json --region eu-west-1
//! ```
//!
//! 1. **The issuer and its keys.** `--issuer` is the API server's `--service-account-issuer`
//!    (`kubectl get --raw /.well-known/openid-configuration`). Give the keys one of three ways:
//!    nothing (discovery: `<issuer>/.well-known/openid-configuration`, then `jwks_uri`; for
//!    issuers published publicly, as for IRSA on self-managed clusters), `--jwks-url`, or
//!    `--jwks-file` with the output of `kubectl get --raw /openid/v1/jwks` in a ConfigMap
//!    (update it when the API server's signing keys change; the file is re-read hourly and
//!    whenever a token names an unknown key).
//! 2. **Tokens for the pods.** The pods need what the EKS Pod Identity webhook gives them on
//!    EKS: a projected service-account token with audience `pods.eks.amazonaws.com` mounted at
//!    `/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token`, and
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials` plus
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` pointing at it (a mutating webhook or the pod
//!    spec). A different `--audience` works if the projected token carries it.
//! 3. **The DaemonSet.** `hostNetwork: true`, the associations and JWKS mounted from
//!    ConfigMaps, and the link-local address `169.254.170.23` (and `fd00:ec2::23` on IPv6)
//!    on the node, as the EKS add-on's init container sets it up; or bind another host with
//!    `--bind-hosts` and point the pods' `FULL_URI` at it (loopback, or https).
//! 4. **The node's credentials.** The agent signs `AssumeRole` with the default chain: the
//!    instance profile on EC2, IAM Roles Anywhere or a credentials file on-premises.
//! 5. **Each association's role trusts the node's role**, with tags allowed:
//!
//! ```json
//! {
//!   "Version": "2012-10-17",
//!   "Statement": [{
//!     "Effect": "Allow",
//!     "Principal": {"AWS": "arn:aws:iam::111122223333:role/node-role"},
//!     "Action": ["sts:AssumeRole", "sts:TagSession"]
//!   }]
//! }
//! ```
//!
//! A target role trusts the first role the same way (with an `sts:ExternalId` condition when
//! the association sets one, or disables tags: see [`sts`]).
//!
//! # What differs from EKS
//!
//! - **Trust.** On EKS the roles trust the service principal `pods.eks.amazonaws.com`; here
//!   they trust the node's role, so anything that holds the node's credentials can assume
//!   every associated role. Keep the node role's own permissions small, limit who can run
//!   `hostNetwork` pods, and condition the trust policy on the session tags where it helps.
//! - **Lifetime.** EKS issues 6 h credentials (59 min when chained). STS issues what the
//!   role's `MaxSessionDuration` allows, 1 h by default, so the default here is 1 h;
//!   raise [`SelfManagedSourceBuilder::session_duration`] after raising the role's maximum (up
//!   to 12 h). Chained sessions are capped at 1 h by STS.
//! - **`eks-cluster-arn` tag.** There is no EKS cluster; the tag holds the configured
//!   [`cluster_arn`](SelfManagedSourceBuilder::cluster_arn), else
//!   `arn:<partition>:eks:<region>:<role's account>:cluster/<name>`.
//! - **Session name.** `eks-<cluster>-<pod>-<uuid>` like EKS's, cut to 64 characters.
//! - **Associations** live in a file, not the EKS API; `associationArn`/`associationId` are
//!   optional and only reported when set.
//! - **Errors** speak the EKS Auth vocabulary (`[request-id]: (Code): message, fault: …`), so
//!   the cache's classes and the metrics are the same.

mod associations;
mod jwks;
pub mod sts;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use pod_identity_core::{arn::Arn, eks_auth::EksAuthError, eks_auth::EksAuthErrorCode};

pub use associations::{
    AssociationKey, AssociationStore, Associations, DEFAULT_POLL_INTERVAL, FileAssociationStore,
    StoreError,
};
pub use jwks::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_MIN_REFRESH_INTERVAL, DEFAULT_REFRESH_INTERVAL, JwksLocation,
    MAX_DOCUMENT_BYTES, TokenVerifier, TokenVerifierBuilder, VerifiedPod, VerifyError,
};

use crate::jwk::ClaimError;
use crate::source::aws_client::ClientDefaults;
use crate::source::{
    AwsClientSettings, CredentialRequest, CredentialSource, IssuedCredentials, SourceError,
};

/// Default lifetime of issued credentials: 1 h, what a role allows unless raised.
pub const DEFAULT_SESSION_DURATION: Duration = Duration::from_secs(60 * 60);
/// Default per-attempt timeout of an STS call.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default connect timeout of an STS call.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default attempts per STS call (the SDK's standard retry mode).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Issues credentials for pods of a cluster outside EKS: local token verification, an
/// association store and STS `AssumeRole` (see the [module docs](self)).
pub struct SelfManagedSource<A> {
    verifier: TokenVerifier,
    store: A,
    roles: sts::RoleAssumer,
}

impl<A> fmt::Debug for SelfManagedSource<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfManagedSource")
            .field("verifier", &self.verifier)
            .field("session_duration", &self.roles.duration)
            .field("cluster_arn", &self.roles.cluster_arn)
            .finish_non_exhaustive()
    }
}

/// Why a [`SelfManagedSource`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelfManagedSourceError {
    /// No region was given and none was found in the environment or profile.
    #[error("no AWS region configured for STS")]
    NoRegion,
    /// The session duration is outside STS's 15 min to 12 h.
    #[error("session duration {0:?} is outside STS's 15 minutes to 12 hours")]
    SessionDuration(Duration),
}

impl<A: AssociationStore> SelfManagedSource<A> {
    /// A builder verifying with `verifier` and resolving associations from `store`.
    pub fn builder(verifier: TokenVerifier, store: A) -> SelfManagedSourceBuilder<A> {
        SelfManagedSourceBuilder {
            verifier,
            store,
            aws_client: AwsClientSettings::default(),
            session_duration: DEFAULT_SESSION_DURATION,
            cluster_arn: None,
        }
    }

    /// The token verifier.
    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// The association store.
    pub fn store(&self) -> &A {
        &self.store
    }
}

impl<A: AssociationStore> CredentialSource for SelfManagedSource<A> {
    async fn credentials(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, SourceError> {
        let pod = self
            .verifier
            .verify(request.token())
            .await
            .map_err(|error| {
                tracing::info!(%error, "refused a service-account token");
                refused(error)
            })?;
        let cluster = request.cluster_name();
        let association = self
            .store
            .association(AssociationKey {
                cluster,
                namespace: &pod.namespace,
                service_account: &pod.service_account,
            })
            .await
            .map_err(SourceError::unavailable)?
            .ok_or_else(|| {
                SourceError::EksAuth(EksAuthError::modeled(
                    EksAuthErrorCode::ResourceNotFound,
                    format!(
                        "no Pod Identity association for service account {} in namespace {} of cluster {cluster}",
                        pod.service_account, pod.namespace
                    ),
                ))
            })?;
        let pod = sts::Pod {
            cluster_name: cluster,
            verified: &pod,
        };
        self.roles.assume(&pod, &association).await
    }
}

/// Runs `tick` every `interval` (the first after one interval) while `inner` lives.
async fn every<T, F, Fut>(inner: Weak<T>, interval: Duration, tick: F)
where
    F: Fn(Arc<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    // An interval too long to add to now is one that never comes.
    let Some(first) = tokio::time::Instant::now().checked_add(interval) else {
        return;
    };
    let mut ticks = tokio::time::interval_at(first, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        tick(inner).await;
    }
}

/// The agent's answer for a refused token: 400 with EKS Auth's codes; 500 when no keys could
/// be read at all.
fn refused(error: VerifyError) -> SourceError {
    match error {
        VerifyError::KeysUnavailable(_) => SourceError::unavailable(error),
        VerifyError::Claims(ClaimError::Expired) => SourceError::EksAuth(EksAuthError::modeled(
            EksAuthErrorCode::ExpiredToken,
            error.to_string(),
        )),
        other => SourceError::EksAuth(EksAuthError::modeled(
            EksAuthErrorCode::InvalidToken,
            other.to_string(),
        )),
    }
}

/// Builds a [`SelfManagedSource`].
pub struct SelfManagedSourceBuilder<A> {
    verifier: TokenVerifier,
    store: A,
    aws_client: AwsClientSettings,
    session_duration: Duration,
    cluster_arn: Option<Arn>,
}

impl<A> fmt::Debug for SelfManagedSourceBuilder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfManagedSourceBuilder")
            .field("verifier", &self.verifier)
            .field("aws_client", &self.aws_client)
            .field("session_duration", &self.session_duration)
            .field("cluster_arn", &self.cluster_arn)
            .finish_non_exhaustive()
    }
}

impl<A: AssociationStore> SelfManagedSourceBuilder<A> {
    /// The STS client's settings: region, endpoint (a VPC endpoint, a test server), FIPS
    /// (`sts-fips.{region}.amazonaws.com`), signing credentials, timeouts (default 3 s per
    /// attempt, 1 s to connect) and attempts.
    pub fn aws_client(mut self, sts: impl FnOnce(AwsClientSettings) -> AwsClientSettings) -> Self {
        self.aws_client = sts(self.aws_client);
        self
    }

    /// Lifetime of issued credentials (default 1 h; 15 min to 12 h, and at most the role's
    /// `MaxSessionDuration`; chained roles get at most 1 h).
    pub fn session_duration(mut self, duration: Duration) -> Self {
        self.session_duration = duration;
        self
    }

    /// The `eks-cluster-arn` session tag's value (default
    /// `arn:<partition>:eks:<region>:<role's account>:cluster/<name>`).
    pub fn cluster_arn(mut self, arn: Arn) -> Self {
        self.cluster_arn = Some(arn);
        self
    }

    /// Loads aws-config's defaults (unless an `SdkConfig` was given) and builds the source.
    pub async fn build(self) -> Result<SelfManagedSource<A>, SelfManagedSourceError> {
        if !(sts::MIN_DURATION..=sts::MAX_DURATION).contains(&self.session_duration) {
            return Err(SelfManagedSourceError::SessionDuration(
                self.session_duration,
            ));
        }
        let defaults = ClientDefaults::new(
            DEFAULT_ATTEMPT_TIMEOUT,
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_MAX_ATTEMPTS,
        );
        let config = self.aws_client.load(defaults).await;
        let config = config.ok_or(SelfManagedSourceError::NoRegion)?;
        Ok(SelfManagedSource {
            verifier: self.verifier,
            store: self.store,
            roles: sts::RoleAssumer {
                client: aws_sdk_sts::Client::new(&config),
                duration: self.session_duration,
                cluster_arn: self.cluster_arn,
            },
        })
    }
}
