//! What the cache asks about pods, without depending on a Kubernetes client: whether a pod's
//! rotated token may take over its cached credentials ([`RotationValidator`]), and whether the
//! pod still runs ([`PodLivenessSource`]). The `kubernetes` feature implements both.

use std::future::Future;
use std::pin::Pin;

use pod_identity_core::token::ServiceAccountToken;

/// A boxed future, `Send`, borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who a cached entry's token was issued to: what a rotated token must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    /// `iss`, when present.
    pub issuer: Option<String>,
    /// The namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: String,
    /// The pod's uid (the `kubernetes.io.pod.uid` claim).
    pub pod_uid: String,
}

impl PodIdentity {
    /// The identity in `token`'s claims (not verified here); `None` when a `kubernetes.io`
    /// claim is missing or empty.
    pub fn of(token: &ServiceAccountToken) -> Option<Self> {
        let claims = token.claims();
        let kubernetes = claims.kubernetes.as_ref()?;
        Some(Self {
            issuer: claims.iss.clone(),
            namespace: kubernetes.namespace.clone().filter(|n| !n.is_empty())?,
            service_account: kubernetes
                .service_account
                .as_ref()
                .map(|sa| sa.name.clone())
                .filter(|n| !n.is_empty())?,
            pod_uid: kubernetes
                .pod
                .as_ref()
                .map(|pod| pod.uid.clone())
                .filter(|uid| !uid.is_empty())?,
        })
    }
}

/// The answer of a [`RotationValidator`], with its metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationCheck {
    /// The token is valid and names the cached entry's issuer, namespace, service account and
    /// pod uid: it may take over the entry.
    Success,
    /// It is not (the reason, without the token): the request goes to the upstream.
    Failure(String),
    /// Validation did not run: the request goes to the upstream.
    Skipped,
}

impl RotationCheck {
    /// `success`, `failure` or `skipped` (label `result` of
    /// `pod_identity_local_validation`).
    pub fn result(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure(_) => "failure",
            Self::Skipped => "skipped",
        }
    }
}

/// Validates a pod's rotated token locally against the identity of the token its cached
/// credentials were issued for.
pub trait RotationValidator: Send + Sync + 'static {
    /// Whether `token` may take over the entry issued to `cached`.
    fn validate<'a>(
        &'a self,
        token: &'a ServiceAccountToken,
        cached: &'a PodIdentity,
    ) -> BoxFuture<'a, RotationCheck>;
}

/// What is known about a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PodState {
    /// Running on this node.
    Alive,
    /// Finished (`Succeeded` or `Failed`).
    Terminated,
    /// Not among this node's pods (deleted, or created too recently to be seen).
    NotFound,
    /// No answer (the view is not synced): the cache renews as without a view.
    Unknown,
}

/// Whether pods still run, by uid.
pub trait PodLivenessSource: Send + Sync + 'static {
    /// The state of the pod with this uid.
    fn pod_state(&self, pod_uid: &str) -> PodState;
}
