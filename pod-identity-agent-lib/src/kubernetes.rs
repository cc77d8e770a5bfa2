//! Kubernetes API blocks for EKS mode (feature `kubernetes`).
//!
//! - [`client`]: [`KubeClient`], configured in the cluster or from `KUBECONFIG`, every call
//!   with a timeout;
//! - [`jwks`]: [`RotationVerifier`], local validation of a pod's rotated service-account token
//!   against the API server's keys (kept on disk for when the API server is unreachable), bound
//!   to the cached entry's issuer, namespace, service account and pod uid;
//! - [`version`]: [`VersionGate`], validation only on Kubernetes 1.34 and later;
//! - [`liveness`]: [`PodWatch`], the pods of this node, to drop the credentials of deleted and
//!   finished pods (failing open while it is not synced).
//!
//! The agent's service account needs `get`, `list` and `watch` on `pods` for the watch; the key
//! endpoint needs no extra RBAC.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use pod_identity_agent_lib::kubernetes::{
//!     ClientConfig, KubeClient, PodWatch, RotationVerifier, VersionGate, liveness,
//! };
//!
//! #[allow(clippy::disallowed_methods)] // the program's environment seam
//! let env = |key: &str| std::env::var(key).ok();
//! let client = KubeClient::new(ClientConfig::infer(&env)?)?;
//! let verifier = RotationVerifier::builder(client.clone())
//!     .version_gate(VersionGate::new(client.clone()))
//!     .build()
//!     .await;
//! let node = liveness::node_name(None, &env).ok_or("no NODE_NAME")?;
//! let pods = PodWatch::builder(client, node)
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

pub use client::{ApiError, ClientConfig, ConfigError, KubeClient};
pub use jwks::{
    Checks, KeysSource, LocalValidation, RotationVerifier, RotationVerifierBuilder, TokenIdentity,
    VerifiedToken, VerifyError, verify_token,
};
pub use liveness::{GoneReason, PodGone, PodLiveness, PodWatch, PodWatchBuilder};
pub use version::{GateAnswer, KubernetesVersion, VersionGate};
