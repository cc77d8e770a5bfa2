//! The credential cache with the Kubernetes blocks: rotated tokens served after local validation,
//! and pod liveness (evictions, no renewals for gone pods), with a counting EKS Auth.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pod_identity_core::{
    container_credentials::ContainerCredentials, secret::SecretString, token::ServiceAccountToken,
};
use serde_json::{Value, json};

use super::fake_api::FakeApi;
use super::{NODE, NOW, WAIT, claims, clock, cluster_key, down_client, jwks, verifier};
use crate::support::{
    CredentialCache, CredentialRequest, CredentialSource, IssuedCredentials, KeysSource, Metrics,
    PodGone, PodWatch, RotationVerifier, Signer, SourceError, VersionGate, eventually,
    gone_reason_label, within,
};

/// EKS Auth: counts calls; answers 503-like unavailability while `down`.
#[derive(Clone, Default)]
struct EksAuth {
    calls: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    /// Calls by the token's pod uid.
    by_pod: Arc<Mutex<HashMap<String, usize>>>,
}

impl EksAuth {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls for the pod with uid `uid`.
    fn calls_for(&self, uid: &str) -> usize {
        self.by_pod.lock().unwrap().get(uid).copied().unwrap_or(0)
    }
}

impl CredentialSource for EksAuth {
    async fn credentials(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, SourceError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(pod) = request
            .token()
            .claims()
            .kubernetes
            .as_ref()
            .and_then(|k| k.pod.as_ref())
        {
            *self
                .by_pod
                .lock()
                .unwrap()
                .entry(pod.uid.clone())
                .or_default() += 1;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(SourceError::unavailable(std::io::Error::other(
                "EKS Auth is unreachable",
            )));
        }
        Ok(IssuedCredentials::new(ContainerCredentials {
            access_key_id: format!("ASIACALL{call}"),
            secret_access_key: SecretString::new("cached-secret"),
            token: SecretString::new("cached-session"),
            account_id: Some("111122223333".into()),
            expiration: UNIX_EPOCH + Duration::from_secs(NOW + 6 * 3600),
        }))
    }
}

fn request(token: &ServiceAccountToken) -> CredentialRequest {
    CredentialRequest::new("my-cluster".parse().unwrap(), token.clone())
}

fn raw(token: &ServiceAccountToken) -> String {
    token.secret().expose_secret().to_owned()
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn counted(metrics: &Metrics, series: &str) -> bool {
    metrics.encode().lines().any(|line| line == series)
}

fn with_claim(pointer: &str, value: Value) -> Value {
    let mut claims = claims(3600);
    *claims.pointer_mut(pointer).unwrap() = value;
    claims
}

/// A cache in front of a counting EKS Auth that validates rotations with `verifier`.
fn validating_cache(verifier: RotationVerifier) -> (CredentialCache<EksAuth>, EksAuth, Metrics) {
    let eks = EksAuth::default();
    let metrics = Metrics::new();
    let cache = CredentialCache::builder(eks.clone())
        .clock(clock())
        .metrics(metrics.clone())
        .rotation_validator(Arc::new(verifier))
        .build();
    (cache, eks, metrics)
}

/// [`validating_cache`] with `api`'s keys, behind its version gate if `gate`.
async fn cache_with_verifier(
    api: &FakeApi,
    dir: &Path,
    gate: bool,
) -> (CredentialCache<EksAuth>, EksAuth, Metrics) {
    let mut builder = RotationVerifier::builder(api.client())
        .cache_path(Some(dir.join("jwks-cache.json")))
        .clock(clock());
    if gate {
        builder = builder.version_gate(VersionGate::new(api.client()));
    }
    validating_cache(builder.build().await)
}

#[tokio::test]
async fn a_rotated_token_is_served_from_the_cache_while_eks_auth_is_down() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let (cache, eks, metrics) = cache_with_verifier(&api, dir.path(), false).await;
    let issued = fetch_first(&cache).await;
    assert_rotation_served(&cache, &eks, &metrics, &issued).await;
    // The entry now holds the rotated token, found without decoding; the old one is gone.
    assert_eq!(cache.len(), 1);
    let first = cluster_key().token(&claims(0));
    assert!(cache.cached(raw(&first).as_bytes(), now()).is_none());
    // A second rotation validates against the same identity.
    let again = cluster_key().token(&claims(5400));
    assert!(cache.get(&request(&again)).await.is_ok());
    assert_eq!(eks.calls(), 1);
}

/// The cached entry's credentials, fetched for the first token of pod `pod-uid-1`.
async fn fetch_first(cache: &CredentialCache<EksAuth>) -> IssuedCredentials {
    cache
        .get(&request(&cluster_key().token(&claims(0))))
        .await
        .unwrap()
}

/// With EKS Auth down, a rotation of the first token is served `first` from the cache after
/// local validation (no upstream call), and the entry takes the rotated token.
async fn assert_rotation_served(
    cache: &CredentialCache<EksAuth>,
    eks: &EksAuth,
    metrics: &Metrics,
    first: &IssuedCredentials,
) {
    assert_eq!(eks.calls(), 1);
    eks.down.store(true, Ordering::SeqCst);
    // kubelet's rotation: same pod, issuer, namespace, service account; new jti, iat, exp.
    let rotated = cluster_key().token(&claims(3600));
    let served = cache.get(&request(&rotated)).await.unwrap();
    assert_eq!(
        served.credentials().access_key_id,
        first.credentials().access_key_id
    );
    assert_eq!(eks.calls(), 1, "served from the cache, no upstream call");
    assert!(counted(
        metrics,
        r#"pod_identity_local_validation{result="success"} 1"#
    ));
    assert!(matches!(
        cache.cached(raw(&rotated).as_bytes(), now()),
        Some(Ok(_))
    ));
}

fn pod_claims(pod: usize, issued: u64) -> Value {
    let mut claims = claims(issued);
    claims["kubernetes.io"]["pod"] =
        json!({"name": format!("app-{pod}"), "uid": format!("uid-{pod}")});
    claims
}

const PODS: usize = 20;

#[tokio::test]
async fn every_pod_is_served_across_a_rotation_during_an_eks_auth_outage() {
    let api = FakeApi::start("34+", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let (cache, eks, _) = cache_with_verifier(&api, dir.path(), true).await;
    for pod in 0..PODS {
        let token = cluster_key().token(&pod_claims(pod, 0));
        cache.get(&request(&token)).await.unwrap();
    }
    eks.down.store(true, Ordering::SeqCst);
    let mut served = 0;
    for pod in 0..PODS {
        let rotated = cluster_key().token(&pod_claims(pod, 3600));
        if cache.get(&request(&rotated)).await.is_ok() {
            served += 1;
        }
    }
    assert_eq!(served, PODS, "pods served across the rotation");
    assert_eq!(eks.calls(), PODS, "no EKS Auth call for the rotations");
}

#[tokio::test]
async fn pod_churn_renews_nothing_for_deleted_pods() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    for pod in 0..PODS {
        api.add_pod(&format!("uid-{pod}"), "Running");
    }
    let eks = EksAuth::default();
    let metrics = Metrics::new();
    let cache = evicting_cache(&api, &eks, &metrics).await;
    for pod in 0..PODS {
        let token = cluster_key().token(&pod_claims(pod, 0));
        cache.get(&request(&token)).await.unwrap();
    }
    // Live pods are renewed (every 50 ms here).
    eventually(WAIT, "renewals to run", async || eks.calls() >= 2 * PODS).await;
    // The fake keeps no history: events sent while no watch is open would be lost.
    api.watching().await;
    let (deleted, live) = (0..PODS / 2, PODS / 2..PODS);
    for pod in deleted.clone() {
        api.delete_pod(&format!("uid-{pod}"));
    }
    eventually(
        WAIT,
        "the deleted pods' entries to be evicted",
        async || cache.len() == PODS / 2,
    )
    .await;
    let calls = |pods: Range<usize>| -> Vec<usize> {
        pods.map(|pod| eks.calls_for(&format!("uid-{pod}")))
            .collect()
    };
    let (deleted_before, live_before) = (calls(deleted.clone()), calls(live.clone()));
    // Every live pod renewed twice more: by then the deleted pods' renewals were due too.
    eventually(
        WAIT,
        "every live pod to be renewed twice more",
        async || {
            calls(live.clone())
                .iter()
                .zip(&live_before)
                .all(|(now, before)| *now >= before + 2)
        },
    )
    .await;
    assert_eq!(
        calls(deleted.clone()),
        deleted_before,
        "renewals for deleted pods"
    );
    assert_eq!(cache.len(), PODS / 2);
    assert!(counted(
        &metrics,
        &format!(
            r#"pod_identity_liveness_evictions{{reason="deleted"}} {}"#,
            PODS / 2
        )
    ));
}

#[tokio::test]
async fn tokens_that_fail_validation_never_get_the_cached_credentials() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let (cache, eks, metrics) = cache_with_verifier(&api, dir.path(), false).await;
    fetch_first(&cache).await;
    eks.down.store(true, Ordering::SeqCst);
    let unknown_key = Signer::ec("ES256", "unknown-key-1").token(&claims(3600));
    let other_sa = cluster_key().token(&with_claim(
        "/kubernetes.io/serviceaccount/name",
        json!("admin"),
    ));
    let other_namespace = cluster_key().token(&with_claim(
        "/kubernetes.io/namespace",
        json!("kube-system"),
    ));
    let other_pod = cluster_key().token(&with_claim("/kubernetes.io/pod/uid", json!("pod-uid-2")));
    for (i, token) in [unknown_key, other_sa, other_namespace, other_pod]
        .iter()
        .enumerate()
    {
        assert!(
            cache.get(&request(token)).await.is_err(),
            "case {i} got credentials"
        );
        assert_eq!(eks.calls(), 2 + i, "case {i} goes to EKS Auth");
    }
    // The other pod's uid has no entry: no validation for it.
    assert!(counted(
        &metrics,
        r#"pod_identity_local_validation{result="failure"} 3"#
    ));
    assert!(!counted(
        &metrics,
        r#"pod_identity_local_validation{result="success"} 1"#
    ));
}

#[tokio::test]
async fn below_the_version_gate_a_rotation_goes_to_eks_auth() {
    let api = FakeApi::start("33", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let (cache, eks, metrics) = cache_with_verifier(&api, dir.path(), true).await;
    fetch_first(&cache).await;
    eks.down.store(true, Ordering::SeqCst);
    let rotated = cluster_key().token(&claims(3600));
    assert!(cache.get(&request(&rotated)).await.is_err());
    assert_eq!(eks.calls(), 2);
    assert!(counted(
        &metrics,
        r#"pod_identity_local_validation{result="skipped"} 1"#
    ));
}

#[tokio::test]
async fn without_keys_a_rotation_goes_to_eks_auth() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(down_client().await, &dir.path().join("jwks-cache.json")).await;
    let (cache, eks, _) = validating_cache(verifier);
    let first = fetch_first(&cache).await;
    let rotated = cache
        .get(&request(&cluster_key().token(&claims(3600))))
        .await
        .unwrap();
    assert_eq!(eks.calls(), 2, "the rotation went to EKS Auth");
    assert_ne!(
        first.credentials().access_key_id,
        rotated.credentials().access_key_id
    );
}

#[tokio::test]
async fn with_the_api_server_down_at_start_a_rotation_is_served_with_the_disk_keys() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks-cache.json");
    // An earlier run of the agent left the disk copy.
    drop(verifier(api.client(), &keys).await);
    assert!(keys.exists());

    let verifier = verifier(down_client().await, &keys).await;
    assert_eq!(verifier.keys_source(), KeysSource::Disk);
    let (cache, eks, metrics) = validating_cache(verifier);
    let first = fetch_first(&cache).await;
    assert_rotation_served(&cache, &eks, &metrics, &first).await;
}

#[tokio::test]
async fn with_the_api_server_down_and_no_disk_copy_a_rotation_gets_the_eks_auth_error() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(down_client().await, &dir.path().join("jwks-cache.json")).await;
    assert_eq!(verifier.keys_source(), KeysSource::None);
    let (cache, eks, metrics) = validating_cache(verifier);
    fetch_first(&cache).await;

    eks.down.store(true, Ordering::SeqCst);
    let rotated = cluster_key().token(&claims(3600));
    let error = cache.get(&request(&rotated)).await.unwrap_err();
    assert_eq!(eks.calls(), 2, "the rotation went to EKS Auth");
    assert!(matches!(error, SourceError::Unavailable(_)), "{error:?}");
    let source = std::error::Error::source(&error).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("EKS Auth is unreachable"));
    assert!(counted(
        &metrics,
        r#"pod_identity_local_validation{result="failure"} 1"#
    ));
    // Never the cached credentials on the unverified token.
    assert!(!matches!(
        cache.cached(raw(&rotated).as_bytes(), now()),
        Some(Ok(_))
    ));
}

fn liveness_cache(watch: PodWatch, eks: &EksAuth, metrics: &Metrics) -> CredentialCache<EksAuth> {
    CredentialCache::builder(eks.clone())
        .clock(clock())
        .metrics(metrics.clone())
        .max_retention(Duration::from_millis(50))
        .renewal_qps(0)
        .pod_liveness(Arc::new(watch))
        .build()
}

/// A [`liveness_cache`] that `api`'s pod watch (synced, its watch open) tells of each gone pod
/// at once.
async fn evicting_cache(
    api: &FakeApi,
    eks: &EksAuth,
    metrics: &Metrics,
) -> CredentialCache<EksAuth> {
    let slot: Arc<OnceLock<CredentialCache<EksAuth>>> = Arc::default();
    let evictor = Arc::clone(&slot);
    let watch = PodWatch::builder(api.client(), NODE)
        .on_pod_gone(move |pod: PodGone| {
            if let Some(cache) = evictor.get() {
                cache.evict_pod(&pod.uid, gone_reason_label(pod.reason));
            }
        })
        .start()
        .unwrap();
    within(WAIT, "the pod view to sync", watch.synced()).await;
    api.watching().await;
    let cache = liveness_cache(watch, eks, metrics);
    assert!(slot.set(cache.clone()).is_ok());
    cache
}

#[tokio::test]
async fn a_pod_deleted_in_the_watch_is_evicted_at_once() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.add_pod("pod-uid-1", "Running");
    // A pod that stays: its renewals show when the deleted pod's would have been due.
    api.add_pod("pod-uid-2", "Running");
    let eks = EksAuth::default();
    let metrics = Metrics::new();
    let cache = evicting_cache(&api, &eks, &metrics).await;
    for claims in [
        claims(0),
        with_claim("/kubernetes.io/pod/uid", json!("pod-uid-2")),
    ] {
        cache
            .get(&request(&cluster_key().token(&claims)))
            .await
            .unwrap();
    }
    assert_eq!(cache.len(), 2);

    // Renewal would keep a young entry of a pod not found (the grace): only the watch's report
    // evicts it.
    api.delete_pod("pod-uid-1");
    eventually(WAIT, "the entry to be evicted", async || cache.len() == 1).await;
    assert!(counted(
        &metrics,
        r#"pod_identity_liveness_evictions{reason="deleted"} 1"#
    ));
    let (deleted, kept) = (eks.calls_for("pod-uid-1"), eks.calls_for("pod-uid-2"));
    eventually(WAIT, "the other pod to be renewed twice", async || {
        eks.calls_for("pod-uid-2") >= kept + 2
    })
    .await;
    assert_eq!(eks.calls_for("pod-uid-1"), deleted, "no renewal afterwards");
}

#[tokio::test]
async fn a_terminated_pod_is_not_renewed() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.add_pod("pod-uid-1", "Succeeded");
    let watch = PodWatch::builder(api.client(), NODE).start().unwrap();
    within(WAIT, "the pod view to sync", watch.synced()).await;
    let eks = EksAuth::default();
    let metrics = Metrics::new();
    let cache = liveness_cache(watch, &eks, &metrics);
    fetch_first(&cache).await;
    eventually(WAIT, "the entry to be evicted at its renewal", async || {
        cache.is_empty()
    })
    .await;
    assert_eq!(eks.calls(), 1, "no renewal");
    assert!(counted(
        &metrics,
        r#"pod_identity_liveness_evictions{reason="terminated"} 1"#
    ));
    assert!(counted(&metrics, "pod_identity_pod_watch_synced 1"));
}

#[tokio::test]
async fn while_the_watch_is_not_synced_renewals_continue() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.api().pods_fail = true;
    let watch = PodWatch::builder(api.client(), NODE)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .start()
        .unwrap();
    let eks = EksAuth::default();
    let metrics = Metrics::new();
    let cache = liveness_cache(watch, &eks, &metrics);
    fetch_first(&cache).await;
    eventually(WAIT, "renewals to continue", async || eks.calls() >= 3).await;
    assert_eq!(cache.len(), 1);
    assert!(counted(&metrics, "pod_identity_pod_watch_synced 0"));
}
