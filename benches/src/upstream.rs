//! An in-process upstream for the agent's cache: counts calls per pod, answers after a set
//! latency on tokio's clock (so it runs on paused time), with real-size credentials.

use aws_smithy_async::time::SharedTimeSource;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pod_identity_agent_lib::{
    source::CredentialRequest, source::CredentialSource, source::IssuedCredentials,
    source::SourceError,
};
use pod_identity_core::eks_auth::PodIdentityAssociation;
use pod_identity_core::{container_credentials::ContainerCredentials, secret::SecretString};

/// The credential lifetime EKS Auth grants.
pub const LIFETIME: Duration = Duration::from_secs(6 * 60 * 60);

/// A counting stand-in for EKS Auth.
#[derive(Clone, Debug)]
pub struct CountingSource {
    clock: SharedTimeSource,
    latency: Duration,
    calls: Arc<AtomicU64>,
    per_pod: Option<Arc<Mutex<HashMap<String, u64>>>>,
}

impl CountingSource {
    /// A source answering after `latency` with credentials that live [`LIFETIME`] on `clock`.
    pub fn new(clock: SharedTimeSource, latency: Duration) -> Self {
        Self {
            clock,
            latency,
            calls: Arc::default(),
            per_pod: Some(Arc::default()),
        }
    }

    /// The same source without the per-pod counts (whose memory would count as the cache's).
    pub fn without_per_pod_counts(mut self) -> Self {
        self.per_pod = None;
        self
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls so far, per pod name (from the token's `kubernetes.io` claims).
    pub fn calls_per_pod(&self) -> HashMap<String, u64> {
        self.per_pod.as_ref().map_or_else(HashMap::new, |per_pod| {
            per_pod
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }
}

impl CredentialSource for CountingSource {
    async fn credentials(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, SourceError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(per_pod) = &self.per_pod {
            let pod = request
                .token()
                .claims()
                .kubernetes
                .as_ref()
                .and_then(|k| k.pod.as_ref())
                .map(|p| p.name.clone())
                .unwrap_or_default();
            *per_pod
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(pod)
                .or_default() += 1;
        }
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        Ok(IssuedCredentials::new(ContainerCredentials {
            access_key_id: format!("ASIACOUNTING{n:08}"),
            secret_access_key: SecretString::new(format!("{n:040}")),
            // The size of an STS session token (about 600 characters).
            token: SecretString::new(format!("IQoJb3JpZ2luX2Vj{n:0584}")),
            account_id: Some("111122223333".to_owned()),
            expiration: self.clock.now() + LIFETIME,
        })
        .with_association(PodIdentityAssociation {
            association_arn: format!(
                "arn:aws:eks:us-west-2:111122223333:podidentityassociation/bench/a-{n:017}"
            ),
            association_id: format!("a-{n:017}"),
        }))
    }
}
