//! Kubernetes API blocks for EKS mode (feature `kubernetes`).
//!
//! - [`client`]: [`KubeClient`](client::KubeClient), a kube-rs client configured in the cluster
//!   or from `KUBECONFIG`, every call with a timeout;
//! - [`jwks`]: [`RotationVerifier`], local validation of a pod's rotated service-account token
//!   against the API server's keys (kept on disk for when the API server is unreachable), bound
//!   to the cached entry's issuer, namespace, service account and pod uid;
//! - [`version`]: [`VersionGate`](version::VersionGate), validation only on Kubernetes 1.34 and
//!   later;
//! - [`liveness`]: [`PodWatch`], the pods of this node from kube-rs's watcher, to drop the
//!   credentials of deleted and finished pods (failing open while it is not synced).
//!
//! The agent's service account needs `get`, `list` and `watch` on `pods` for the watch; the key
//! endpoint needs no extra RBAC.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use pod_identity_agent_lib::metrics::Metrics;
//! use pod_identity_agent_lib::kubernetes::client::{ClientConfig, KubeClient};
//! use pod_identity_agent_lib::kubernetes::jwks::RotationVerifier;
//! use pod_identity_agent_lib::kubernetes::liveness::{self, PodWatch};
//! use pod_identity_agent_lib::kubernetes::version::VersionGate;
//!
//! #[allow(clippy::disallowed_methods)] // the program's environment seam
//! let env = |key: &str| std::env::var(key).ok();
//! let client = KubeClient::new(ClientConfig::infer(&env)?)?;
//! let verifier = RotationVerifier::builder(client.clone())
//!     .version_gate(VersionGate::new(client.clone()))
//!     .build()
//!     .await;
//! let node = liveness::node_name(None, &env).ok_or("no NODE_NAME")?;
//! let metrics = Metrics::new();
//! let pods = PodWatch::builder(client, node)
//!     .metrics(metrics.clone())
//!     .on_pod_gone(|pod| println!("gone: {}", pod.uid))
//!     .start()?;
//! # drop((verifier, pods));
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod jwks;
pub mod liveness;
pub mod version;

use std::sync::Arc;

use jwks::{LocalValidation, RotationVerifier};
use liveness::{GoneReason, PodLiveness, PodWatch};
use pod_identity_core::token::ServiceAccountToken;

use crate::cache::{
    BoxFuture, PodIdentity, PodLivenessSource, PodState, RotationCheck, RotationValidator,
};

impl RotationValidator for RotationVerifier {
    fn validate<'a>(
        &'a self,
        token: &'a ServiceAccountToken,
        cached: &'a PodIdentity,
    ) -> BoxFuture<'a, RotationCheck> {
        Box::pin(async move {
            match self.validate_rotation(token, cached).await {
                LocalValidation::Success(_) => RotationCheck::Success,
                LocalValidation::Failure(error) => RotationCheck::Failure(error.to_string()),
                _ => RotationCheck::Skipped,
            }
        })
    }
}

impl PodLivenessSource for PodWatch {
    fn pod_state(&self, pod_uid: &str) -> PodState {
        match self.liveness(pod_uid) {
            PodLiveness::Alive => PodState::Alive,
            PodLiveness::Terminated => PodState::Terminated,
            PodLiveness::NotFound => PodState::NotFound,
            _ => PodState::Unknown,
        }
    }
}

/// The label of `pod_identity_liveness_evictions` for a pod reported gone.
pub fn gone_reason_label(reason: GoneReason) -> &'static str {
    match reason {
        GoneReason::Terminated => "terminated",
        _ => "deleted",
    }
}

/// A shared handle to a [`PodWatch`] for
/// [`CredentialCacheBuilder::pod_liveness`](crate::cache::CredentialCacheBuilder::pod_liveness).
pub fn pod_liveness(watch: PodWatch) -> Arc<dyn PodLivenessSource> {
    Arc::new(watch)
}
