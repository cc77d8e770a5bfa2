//! Support shared by the integration test binaries: an HTTP/1 client for loopback requests, log
//! capture, bounded waits, the rule for tests that need root, and the fixtures several files use
//! (tokens, upstream answers, the agent running on loopback).
//!
//! The agent library's items are imported here and re-exported, so a test file names them
//! through `crate::support` and a moved item is one edit in this file.
// Each test binary uses a part of this module; `pub` here means shared with the test files.
#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used)]

pub mod http;
pub mod logs;

mod agent;
pub use agent::*;
mod fixtures;
pub use fixtures::*;
#[cfg(any(feature = "self-managed", feature = "kubernetes"))]
mod signer;
#[cfg(any(feature = "self-managed", feature = "kubernetes"))]
pub use signer::Signer;

pub use aws_smithy_async::time::{SharedTimeSource, SystemTimeSource, TimeSource};
use std::fmt::Display;
use std::time::Duration;

pub use pod_identity_agent_lib::AgentBuilder;
pub use pod_identity_agent_lib::cache::CredentialCache;
#[cfg(feature = "kubernetes")]
pub use pod_identity_agent_lib::cache::PodIdentity;
pub use pod_identity_agent_lib::handler::CredentialsRouter;
#[cfg(any(feature = "self-managed", feature = "kubernetes"))]
pub use pod_identity_agent_lib::jwk::{ClaimError, SignatureError};
#[cfg(feature = "kubernetes")]
pub use pod_identity_agent_lib::kubernetes::{
    client::ApiError, client::ClientConfig, client::ConfigError, client::KubeClient,
    gone_reason_label, jwks::KeysSource, jwks::LocalValidation, jwks::RotationVerifier,
    jwks::VerifyError as RotationVerifyError, liveness::GoneReason, liveness::PodGone,
    liveness::PodLiveness, liveness::PodWatch, version::GateAnswer, version::KubernetesVersion,
    version::VersionGate,
};
pub use pod_identity_agent_lib::metrics::Metrics;
#[cfg(feature = "eks-auth")]
pub use pod_identity_agent_lib::node_credentials::SharedCredentialsFile;
#[cfg(all(target_os = "linux", feature = "node-network"))]
pub use pod_identity_agent_lib::node_network::{
    Change, DEFAULT_IPV4_ADDRESS, DEFAULT_IPV6_ADDRESS, Initialized, NodeNetwork, NodeNetworkError,
    Warning,
};
#[cfg(feature = "self-managed")]
pub use pod_identity_agent_lib::self_managed::{
    AssociationKey, AssociationStore, Associations, FileAssociationStore, JwksLocation,
    SelfManagedSource, SelfManagedSourceBuilder, TokenVerifier, VerifyError,
};
pub use pod_identity_agent_lib::server::{BindError, BoundServer, ConnectionLimits, ServerBuilder};
#[cfg(feature = "simulator")]
pub use pod_identity_agent_lib::simulator::{
    EksAuthSimulator, EksAuthSimulatorBuilder, Failure, NodeCredentials, PodToken, SimulatorServer,
    Times, mint_token, parse_associations,
};
#[cfg(feature = "eks-auth")]
pub use pod_identity_agent_lib::source::eks_auth::{
    EksAuthSource, EksAuthSourceBuilder, EksAuthSourceError,
};
pub use pod_identity_agent_lib::source::{
    CredentialRequest, CredentialSource, IssuedCredentials, SourceError,
};
pub use pod_identity_agent_lib::time::TokioTimeSource;
pub use pod_identity_agent_lib::validation::HostAllowList;

/// Waits until `condition` holds, looking every 10 ms (or every thousandth of `timeout`, when
/// longer); panics naming `what` after `timeout`.
///
/// Runs on tokio's clock: under paused time the timeout passes in virtual time, so a condition
/// that never comes fails the test instead of hanging it.
pub async fn eventually(timeout: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let interval = (timeout / 1000).max(Duration::from_millis(10));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(interval).await;
    }
}

/// Awaits `future` for at most `timeout` (on tokio's clock, as [`eventually`]); panics naming
/// `what` when it takes longer.
pub async fn within<F: Future>(timeout: Duration, what: &str, future: F) -> F::Output {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Whether this runs under CI, which marks itself with `CI`.
#[allow(clippy::disallowed_methods)] // Tests have no env seam; this is the one read.
pub fn running_in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Skips a test that cannot run here, printing `reason`; under CI, where every test must run,
/// fails it instead. Returns `None`, for `let Some(..) = .. else { return }`.
#[track_caller]
pub fn skip_or_fail_in_ci<T>(reason: impl Display) -> Option<T> {
    assert!(
        !running_in_ci(),
        "this test must run under CI, but cannot: {reason}"
    );
    println!("skipped: {reason}");
    None
}
