//! Where credentials come from.
//!
//! A [`CredentialSource`] turns a validated [`CredentialRequest`] (a decoded service-account
//! token and the cluster name) into [`IssuedCredentials`], or a [`SourceError`] classified the
//! way the cache acts on it. [`EksAuthSource`](crate::source::eks_auth::EksAuthSource) (feature `eks-auth`) calls
//! EKS Auth; [`CredentialCache`](crate::cache::CredentialCache) wraps any source and is one itself;
//! a vendor can bring their own (a local STS broker, a simulator, a fake in tests).

#[cfg(any(feature = "eks-auth", feature = "self-managed"))]
pub(crate) mod aws_client;
#[cfg(feature = "eks-auth")]
pub mod eks_auth;

#[cfg(any(feature = "eks-auth", feature = "self-managed"))]
pub use aws_client::AwsClientSettings;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use pod_identity_core::container_credentials::MIN_REMAINING;
use pod_identity_core::eks_auth::{AssumeRoleForPodIdentityResponse, PodIdentityAssociation};
use pod_identity_core::time::{MAX_RFC3339_EPOCH_SECS, MIN_RFC3339_EPOCH_SECS, to_epoch};
use pod_identity_core::{
    agent_error::AgentError, association::ClusterName, container_credentials::ContainerCredentials,
    eks_auth::EksAuthError, eks_auth::ErrorClass, secret::SecretString, token::ServiceAccountToken,
};

/// A validated request for credentials.
#[derive(Clone)]
pub struct CredentialRequest {
    cluster_name: ClusterName,
    token: ServiceAccountToken,
    client: Option<IpAddr>,
}

impl fmt::Debug for CredentialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialRequest")
            .field("cluster_name", &self.cluster_name)
            .field("token", &self.token)
            .field("client", &self.client)
            .finish()
    }
}

impl CredentialRequest {
    /// A request for the pod presenting `token` in `cluster_name`.
    pub fn new(cluster_name: ClusterName, token: ServiceAccountToken) -> Self {
        Self {
            cluster_name,
            token,
            client: None,
        }
    }

    /// Records the address of the client (the pod) that asked, which the cache holds to its
    /// miss budget.
    pub fn with_client(mut self, client: IpAddr) -> Self {
        self.client = Some(client.to_canonical());
        self
    }

    /// The address of the client that asked, when known.
    pub fn client(&self) -> Option<IpAddr> {
        self.client
    }

    /// The cluster the agent serves.
    pub fn cluster_name(&self) -> &ClusterName {
        &self.cluster_name
    }

    /// The pod's decoded (unverified) service-account token.
    pub fn token(&self) -> &ServiceAccountToken {
        &self.token
    }
}

/// Credentials issued for a pod.
///
/// Cloning is cheap and copies no secret: clones share one allocation (a cache hit hands out a
/// clone), and the secret key and session token are zeroized when the last clone is dropped.
/// The JSON the agent serves is rendered once, when the credentials are issued
/// ([`json_body`](Self::json_body)), and zeroized with them. It is also what is kept: the
/// structured form ([`credentials`](Self::credentials)) is read back from it on first use
/// (tests and diagnostics; serving never does), so a cached entry holds its secrets once, not
/// twice.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCredentials(Arc<Issued>);

#[derive(Clone)]
struct Issued {
    /// `credentials.to_json()`, rendered once (it holds the secrets, hence the type).
    json: SecretString,
    expiration: SystemTime,
    association: Option<PodIdentityAssociation>,
    /// The structured credentials: read back from `json` on first use, or kept from the start
    /// when they would not read back (an empty field, a time RFC 3339 cannot write).
    credentials: OnceLock<ContainerCredentials>,
}

impl PartialEq for Issued {
    fn eq(&self, other: &Self) -> bool {
        // The JSON determines the credentials (it reads back as them).
        self.json == other.json
            && self.expiration == other.expiration
            && self.association == other.association
    }
}

impl Eq for Issued {}

/// Lends the rendered JSON to a [`Bytes`] without copying it; the buffer lives (and is
/// zeroized) with the credentials.
struct JsonOwner(IssuedCredentials);

impl AsRef<[u8]> for JsonOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.0.json.expose_secret().as_bytes()
    }
}

impl fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("credentials", self.credentials())
            .field("association", &self.0.association)
            .finish()
    }
}

impl IssuedCredentials {
    /// Credentials without association details, rendered into the served JSON (the
    /// structured form is dropped, and its secrets zeroized, once rendered).
    // Taken by value: the caller's copy of the secrets ends (zeroized) here.
    #[allow(clippy::needless_pass_by_value)]
    pub fn new(credentials: ContainerCredentials) -> Self {
        let json = SecretString::new(credentials.to_json());
        let expiration = credentials.expiration;
        let kept = OnceLock::new();
        if !reads_back(&credentials) {
            let _ = kept.set(credentials);
        }
        Self(Arc::new(Issued {
            json,
            expiration,
            association: None,
            credentials: kept,
        }))
    }

    /// Records the association the credentials were issued for.
    pub fn with_association(mut self, association: PodIdentityAssociation) -> Self {
        Arc::make_mut(&mut self.0).association = Some(association);
        self
    }

    /// What the agent serves (read back from the rendered JSON on first use).
    pub fn credentials(&self) -> &ContainerCredentials {
        self.0.credentials.get_or_init(|| {
            ContainerCredentials::from_json(self.0.json.expose_secret().as_bytes())
                // Unreachable: `new` keeps the credentials that would not read back.
                .unwrap_or_else(|_| ContainerCredentials {
                    access_key_id: String::new(),
                    secret_access_key: SecretString::default(),
                    token: SecretString::default(),
                    account_id: None,
                    expiration: self.0.expiration,
                })
        })
    }

    /// The served JSON (core's byte-exact [`ContainerCredentials::to_json`]), rendered when the
    /// credentials were issued: every response shares the one buffer.
    pub fn json_body(&self) -> Bytes {
        Bytes::from_owner(JsonOwner(self.clone()))
    }

    /// When the credentials expire.
    pub fn expiration(&self) -> SystemTime {
        self.0.expiration
    }

    /// The account of the assumed role, when known.
    pub fn account_id(&self) -> Option<&str> {
        self.credentials().account_id.as_deref()
    }

    /// The association the credentials were issued for, when known.
    pub fn association(&self) -> Option<&PodIdentityAssociation> {
        self.0.association.as_ref()
    }

    /// Time left until expiry at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expiration().duration_since(now).unwrap_or_default()
    }

    /// Milliseconds left until expiry at `now`, negative once expired.
    pub fn remaining_millis(&self, now: SystemTime) -> i64 {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        match self.expiration().duration_since(now) {
            Ok(left) => millis(left),
            Err(past) => -millis(past.duration()),
        }
    }

    /// These credentials if more than [`MIN_REMAINING`] is left at `now`, else
    /// [`SourceError::ExpiringCredentials`].
    pub(crate) fn servable(self, now: SystemTime) -> Result<Self, SourceError> {
        if self.remaining(now) > MIN_REMAINING {
            Ok(self)
        } else {
            Err(SourceError::ExpiringCredentials {
                remaining_millis: self.remaining_millis(now),
            })
        }
    }
}

/// Whether core's reader gives back `credentials` from what its writer writes: its round-trip
/// property holds for non-empty fields and times RFC 3339 can write. Checked on the fields, so
/// issuing never parses the JSON back.
fn reads_back(credentials: &ContainerCredentials) -> bool {
    let secs = to_epoch(credentials.expiration).0;
    !credentials.access_key_id.is_empty()
        && !credentials.secret_access_key.expose_secret().is_empty()
        && !credentials.token.expose_secret().is_empty()
        && credentials.account_id.as_deref() != Some("")
        && (MIN_RFC3339_EPOCH_SECS..=MAX_RFC3339_EPOCH_SECS).contains(&secs)
}

impl From<AssumeRoleForPodIdentityResponse> for IssuedCredentials {
    fn from(response: AssumeRoleForPodIdentityResponse) -> Self {
        let account_id = response.account_id().map(str::to_owned);
        let AssumeRoleForPodIdentityResponse {
            credentials,
            pod_identity_association,
            ..
        } = response;
        Self::new(ContainerCredentials {
            access_key_id: credentials.access_key_id,
            secret_access_key: credentials.secret_access_key,
            token: credentials.session_token,
            account_id,
            expiration: credentials.expiration,
        })
        .with_association(pod_identity_association)
    }
}

/// Why a source issued no credentials.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// EKS Auth (or a source speaking its error model) answered with an error.
    #[error(transparent)]
    EksAuth(#[from] EksAuthError),
    /// The source did not answer in time.
    #[error("credential source timed out")]
    Timeout,
    /// The source could not be reached or its answer could not be read.
    #[error("credential source unavailable")]
    Unavailable(#[source] Arc<dyn StdError + Send + Sync>),
    /// The client asking has started more upstream calls lately than its budget allows (see
    /// the cache's `client_miss_budget`). 429.
    #[error("the client's budget of upstream calls is spent")]
    ClientMissBudget,
    /// The issued credentials expire too soon to hand out.
    #[error("fetched credentials are expired or will expire within {remaining_millis} ms")]
    ExpiringCredentials {
        /// Milliseconds they had left (negative when already expired).
        remaining_millis: i64,
    },
}

impl SourceError {
    /// An [`Unavailable`](Self::Unavailable) error from any error.
    pub fn unavailable(error: impl StdError + Send + Sync + 'static) -> Self {
        Self::Unavailable(Arc::new(error))
    }

    /// How the cache treats the error: irrecoverable errors evict, recoverable ones keep the
    /// last credentials while they last and retry.
    pub fn class(&self) -> ErrorClass {
        match self {
            SourceError::EksAuth(error) => error.class(),
            SourceError::Timeout
            | SourceError::Unavailable(_)
            | SourceError::ClientMissBudget
            | SourceError::ExpiringCredentials { .. } => ErrorClass::Recoverable,
        }
    }

    /// A short code for metrics and logs (the EKS Auth error code where there is one).
    pub fn code(&self) -> &str {
        match self {
            SourceError::EksAuth(error) => error.code().as_str(),
            SourceError::Timeout => "Timeout",
            SourceError::ClientMissBudget => "ClientMissBudget",
            SourceError::Unavailable(_) => "Unavailable",
            SourceError::ExpiringCredentials { .. } => "ExpiringCredentials",
        }
    }

    /// The agent's answer for this error (contracts §6): the upstream status and body for EKS
    /// Auth errors, 500 `[]` for timeouts and unreachable sources.
    pub fn to_agent_error(&self) -> AgentError {
        match self {
            SourceError::EksAuth(error) => AgentError::EksAuth(error.clone()),
            SourceError::Timeout | SourceError::Unavailable(_) => AgentError::Upstream,
            SourceError::ClientMissBudget => AgentError::TooManyRequests,
            SourceError::ExpiringCredentials { remaining_millis } => {
                AgentError::ExpiringCredentials {
                    remaining_millis: *remaining_millis,
                }
            }
        }
    }
}

/// Issues credentials for validated requests.
///
/// Implementations are cheap to share (`&self`), and their futures are `Send` so callers can
/// spawn them: the agent never cancels an upstream call because the client went away.
pub trait CredentialSource: Send + Sync + 'static {
    /// Issues credentials for `request`.
    fn credentials(
        &self,
        request: &CredentialRequest,
    ) -> impl Future<Output = Result<IssuedCredentials, SourceError>> + Send;
}

/// A type-erased, cheaply cloned [`CredentialSource`], for choosing a source at run time.
#[derive(Clone)]
pub struct SharedCredentialSource(Arc<dyn DynCredentialSource>);

impl fmt::Debug for SharedCredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedCredentialSource")
            .finish_non_exhaustive()
    }
}

impl SharedCredentialSource {
    /// Wraps `source`.
    pub fn new(source: impl CredentialSource) -> Self {
        Self(Arc::new(source))
    }
}

impl CredentialSource for SharedCredentialSource {
    async fn credentials(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, SourceError> {
        self.0.credentials_boxed(request).await
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe form of [`CredentialSource`].
trait DynCredentialSource: Send + Sync {
    fn credentials_boxed<'a>(
        &'a self,
        request: &'a CredentialRequest,
    ) -> BoxFuture<'a, Result<IssuedCredentials, SourceError>>;
}

impl<S: CredentialSource> DynCredentialSource for S {
    fn credentials_boxed<'a>(
        &'a self,
        request: &'a CredentialRequest,
    ) -> BoxFuture<'a, Result<IssuedCredentials, SourceError>> {
        Box::pin(self.credentials(request))
    }
}

impl<S: CredentialSource> CredentialSource for Arc<S> {
    fn credentials(
        &self,
        request: &CredentialRequest,
    ) -> impl Future<Output = Result<IssuedCredentials, SourceError>> + Send {
        (**self).credentials(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{FakeSource, day_token, request, wall_clock};

    #[tokio::test(start_paused = true)]
    async fn a_shared_source_forwards_to_the_wrapped_one() {
        let fake = FakeSource::new(wall_clock());
        let shared = SharedCredentialSource::new(fake.clone());
        let cloned = shared.clone();
        let issued = cloned.credentials(&request(&day_token("p"))).await.unwrap();
        assert_eq!(issued.credentials().access_key_id, "ASIAFAKE1");
        fake.fail_next(SourceError::Timeout);
        assert!(matches!(
            shared.credentials(&request(&day_token("p"))).await,
            Err(SourceError::Timeout)
        ));
        assert_eq!(fake.calls(), 2);
    }

    #[test]
    fn errors_classify_and_render_as_the_reference() {
        assert_eq!(SourceError::Timeout.class(), ErrorClass::Recoverable);
        assert_eq!(SourceError::Timeout.to_agent_error().body(), "[]\n");
        let expiring = SourceError::ExpiringCredentials {
            remaining_millis: 14_999,
        };
        assert_eq!(expiring.to_agent_error().status(), 500);
        assert_eq!(
            expiring.to_agent_error().body(),
            "fetched credentials are expired or will expire within the next 15.00 seconds\n"
        );
        let denied = SourceError::EksAuth(EksAuthError::from_http(
            403,
            Some("AccessDeniedException"),
            None,
            b"{}",
        ));
        assert_eq!(denied.class(), ErrorClass::Irrecoverable);
        assert_eq!(denied.code(), "AccessDeniedException");
    }

    #[test]
    fn clones_share_the_credentials_instead_of_copying_the_secrets() {
        let issued = IssuedCredentials::new(crate::test_support::credentials(
            1,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        ));
        let hit = issued.clone();
        assert!(std::ptr::eq(issued.credentials(), hit.credentials()));
        assert_eq!(issued, hit);
    }

    #[test]
    fn the_json_is_rendered_once_and_shared_by_every_body() {
        let issued = IssuedCredentials::new(crate::test_support::credentials(
            1,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        ));
        let copy = issued.clone();
        let (first, second) = (issued.json_body(), copy.json_body());
        assert_eq!(&first[..], issued.credentials().to_json().as_bytes());
        assert_eq!(first.as_ptr(), second.as_ptr(), "one buffer, not copies");
        // The body keeps the credentials (and their buffer) alive on its own.
        drop(issued);
        assert_eq!(first, second);
    }

    #[test]
    fn the_structured_credentials_read_back_from_the_json_exactly() {
        let expiration = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let mut odd = crate::test_support::credentials(7, expiration);
        odd.access_key_id = "ASIA<&>\u{2028}\"é\\".into();
        odd.token = SecretString::new("tok\n\u{1F600}\u{0}");
        for credentials in [
            crate::test_support::credentials(1, expiration),
            odd.clone(),
            ContainerCredentials {
                account_id: None,
                ..odd
            },
        ] {
            let issued = IssuedCredentials::new(credentials.clone());
            assert!(
                issued.0.credentials.get().is_none(),
                "only the JSON is kept: {credentials:?}"
            );
            assert_eq!(issued.expiration(), credentials.expiration);
            assert_eq!(issued.credentials(), &credentials);
            assert_eq!(issued.account_id(), credentials.account_id.as_deref());
            assert_eq!(&issued.json_body()[..], credentials.to_json().as_bytes());
        }
    }

    #[test]
    fn credentials_that_would_not_read_back_are_kept_as_given() {
        let expiration = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let full = crate::test_support::credentials(1, expiration);
        for odd in [
            ContainerCredentials {
                access_key_id: String::new(),
                ..full.clone()
            },
            ContainerCredentials {
                account_id: Some(String::new()),
                ..full.clone()
            },
            ContainerCredentials {
                token: SecretString::default(),
                ..full
            },
        ] {
            let issued = IssuedCredentials::new(odd.clone());
            assert_eq!(issued.credentials(), &odd);
            assert_eq!(&issued.json_body()[..], odd.to_json().as_bytes());
        }
    }

    #[test]
    fn remaining_time_is_signed_in_millis() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let issued = IssuedCredentials::new(crate::test_support::credentials(
            1,
            now + Duration::from_millis(1_500),
        ));
        assert_eq!(issued.remaining_millis(now), 1_500);
        assert_eq!(issued.remaining(now), Duration::from_millis(1_500));
        let later = now + Duration::from_secs(3);
        assert_eq!(issued.remaining_millis(later), -1_500);
        assert_eq!(issued.remaining(later), Duration::ZERO);
    }
}
