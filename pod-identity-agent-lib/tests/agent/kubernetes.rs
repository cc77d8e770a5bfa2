//! The Kubernetes blocks against a fake API server on loopback (`kubernetes/fake_api.rs`) that
//! speaks the real endpoints as kube-rs calls them: `/version`, `/openid/v1/jwks` (bearer token
//! required), and the pod list (`limit`, `continue`) and watch (`watch=true`,
//! `allowWatchBookmarks`, `timeoutSeconds`, `resourceVersion`) with bookmarks and, for an expired
//! version, a `410` `ERROR` event. Tokens are signed here with keys of `support::Signer`; the
//! credential cache with these blocks is in `kubernetes/with_cache.rs`.

mod fake_api;
mod with_cache;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_core::{secret::SecretString, token::ServiceAccountToken};
use serde_json::{Value, json};
use tempfile::TempDir;
use tracing::Level;

use self::fake_api::FakeApi;
use crate::support::{
    ApiError, ClaimError, ClientConfig, ConfigError, GateAnswer, GoneReason, KeysSource,
    KubeClient, KubernetesVersion, LocalValidation, Metrics, PodGone, PodIdentity, PodLiveness,
    PodWatch, RotationVerifier, RotationVerifyError, SharedTimeSource, SignatureError, Signer,
    TokioTimeSource, VersionGate, eventually, logs, within,
};

/// When the cached entry's token was issued: 2023-11-14T22:13:20Z.
const START: u64 = 1_700_000_000;
/// Wall-clock start of every test, two hours later (tokens rotated meanwhile are valid).
const NOW: u64 = START + 7200;
const ISSUER: &str = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE";
/// The agent's own service-account token, which the fake API server requires for the keys.
const AGENT_TOKEN: &str = "agent-sa-token-7f3a9c";
const NODE: &str = "node-1";
const WAIT: Duration = Duration::from_secs(10);

fn clock() -> SharedTimeSource {
    SharedTimeSource::new(TokioTimeSource::starting_at(
        UNIX_EPOCH + Duration::from_secs(NOW),
    ))
}

/// The cluster's current key (EC) and an RSA one, shared (RSA generation is slow in debug).
fn cluster_key() -> &'static Signer {
    static KEY: OnceLock<Signer> = OnceLock::new();
    KEY.get_or_init(|| Signer::ec("ES256", "Zb6e6ZtxKdoqdKSU0aW2Ql1N4Gq_XqfC6pO4BZ3SxAI"))
}

fn rsa_key() -> &'static Signer {
    static KEY: OnceLock<Signer> = OnceLock::new();
    KEY.get_or_init(|| Signer::rsa("rsa-key-1"))
}

/// The keys as the API server publishes them (each naming its `alg`).
fn jwks(signers: &[&Signer]) -> Value {
    json!({"keys": signers.iter().map(|s| s.named_jwk()).collect::<Vec<_>>()})
}

/// The claims of a projected token for pod `app-7d9f` (uid `pod-uid-1`) of `default/app`,
/// issued `issued` seconds after START.
fn claims(issued: u64) -> Value {
    json!({
        "aud": ["pods.eks.amazonaws.com"],
        "exp": START + issued + 86_400,
        "iat": START + issued,
        "nbf": START + issued,
        "iss": ISSUER,
        "sub": "system:serviceaccount:default:app",
        "jti": format!("jti-{issued}"),
        "kubernetes.io": {
            "namespace": "default",
            "node": {"name": NODE, "uid": "node-uid"},
            "pod": {"name": "app-7d9f", "uid": "pod-uid-1"},
            "serviceaccount": {"name": "app", "uid": "sa-uid"}
        }
    })
}

/// The identity of the token the cached credentials were issued for.
fn cached_identity() -> PodIdentity {
    PodIdentity::of(&cluster_key().token(&claims(0))).unwrap()
}

/// A rotation verifier over `client` keeping its disk copy of the keys at `cache`.
async fn verifier(client: KubeClient, cache: &Path) -> RotationVerifier {
    RotationVerifier::builder(client)
        .cache_path(Some(cache.to_owned()))
        .clock(clock())
        .build()
        .await
}

/// A fake API server of Kubernetes 1.34 publishing the cluster key, and a verifier over it
/// keeping its disk copy of the keys in the directory returned.
async fn api_and_verifier() -> (FakeApi, RotationVerifier, TempDir) {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(api.client(), &dir.path().join("jwks-cache.json")).await;
    (api, verifier, dir)
}

/// A URL on loopback where nothing listens.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// A client of an API server that is down.
async fn down_client() -> KubeClient {
    KubeClient::new(ClientConfig::new(dead_url().await).token(SecretString::new(AGENT_TOKEN)))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Rotation validation.

#[tokio::test]
async fn a_rotated_token_of_the_same_pod_is_accepted() {
    let api = FakeApi::start("34+", jwks(&[cluster_key(), rsa_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(api.client(), &dir.path().join("jwks-cache.json")).await;
    assert_eq!(verifier.keys_source(), KeysSource::ApiServer);

    // kubelet's rotation: same pod, issuer, namespace, service account; new jti, iat, exp.
    let rotated = cluster_key().token(&claims(3600));
    let verified = verifier
        .verify_rotation(&rotated, &cached_identity())
        .await
        .unwrap();
    assert_eq!(verified.pod_uid, "pod-uid-1");
    assert_eq!(verified.pod_name, "app-7d9f");
    // RS256 keys work the same way.
    let rotated = rsa_key().token(&claims(7200));
    assert!(
        verifier
            .verify_rotation(&rotated, &cached_identity())
            .await
            .is_ok()
    );
    assert_eq!(
        api.api().jwks_requests,
        1,
        "one fetch at start, none per token"
    );
}

#[tokio::test]
async fn tokens_for_another_pod_service_account_namespace_or_issuer_are_refused() {
    let (_api, verifier, _dir) = api_and_verifier().await;
    let cached = cached_identity();
    let cases: [(&str, Value, &str); 4] = [
        ("/kubernetes.io/pod/uid", json!("pod-uid-2"), "pod uid"),
        (
            "/kubernetes.io/serviceaccount/name",
            json!("admin"),
            "service account",
        ),
        (
            "/kubernetes.io/namespace",
            json!("kube-system"),
            "namespace",
        ),
        (
            "/iss",
            json!("https://another-issuer.example.com"),
            "issuer",
        ),
    ];
    for (pointer, value, what) in cases {
        let mut claims = claims(3600);
        *claims.pointer_mut(pointer).unwrap() = value;
        let token = cluster_key().token(&claims);
        // Validly signed: verify alone accepts it; bound to the cached entry it is refused.
        assert!(verifier.verify(&token).await.is_ok(), "{what}");
        assert_eq!(
            verifier.verify_rotation(&token, &cached).await,
            Err(RotationVerifyError::Mismatch(what))
        );
        let outcome = verifier.validate_rotation(&token, &cached).await;
        assert_eq!(outcome.result(), "failure");
    }
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let (api, verifier, _dir) = api_and_verifier().await;
    let key = cluster_key();
    let cached = cached_identity();

    let mut wrong_audience = claims(1);
    wrong_audience["aud"] = json!(["sts.amazonaws.com"]);
    let mut expired = claims(1);
    expired["exp"] = json!(NOW - 120);
    let mut not_yet = claims(1);
    not_yet["nbf"] = json!(NOW + 600);
    let mut no_pod = claims(1);
    no_pod["kubernetes.io"]
        .as_object_mut()
        .unwrap()
        .remove("pod");
    let mut no_expiry = claims(1);
    no_expiry.as_object_mut().unwrap().remove("exp");
    let cases = [
        (key.token(&wrong_audience), "audience"),
        (key.token(&expired), "expired"),
        (key.token(&not_yet), "not valid yet"),
        (key.token(&no_pod), "pod claims"),
        (key.token(&no_expiry), "expiry"),
        // The key says ES256; a token claiming another algorithm does not use it.
        (
            key.token_with_header(&json!({"alg": "ES384", "kid": key.kid}), &claims(1)),
            "algorithm",
        ),
        (
            key.token_with_header(&json!({"alg": "none", "kid": key.kid}), &claims(1)),
            "unsupported",
        ),
        (
            key.token_with_header(&json!({"alg": "ES256", "kid": "../../etc"}), &claims(1)),
            "kid",
        ),
        (
            key.token_with_header(&json!({"alg": "ES256"}), &claims(1)),
            "no kid",
        ),
    ];
    for (token, what) in cases {
        let error = verifier.verify_rotation(&token, &cached).await.unwrap_err();
        let matched = match what {
            "audience" => matches!(
                error,
                RotationVerifyError::Claims(ClaimError::Audience { .. })
            ),
            "expired" => error == RotationVerifyError::Claims(ClaimError::Expired),
            "not valid yet" => error == RotationVerifyError::Claims(ClaimError::NotValidYet),
            "pod claims" => matches!(error, RotationVerifyError::Claims(ClaimError::PodClaims(_))),
            "expiry" => error == RotationVerifyError::Claims(ClaimError::NoExpiry),
            "algorithm" => matches!(
                error,
                RotationVerifyError::Signature(SignatureError::KeyMismatch { .. })
            ),
            "unsupported" => matches!(
                error,
                RotationVerifyError::Signature(SignatureError::UnsupportedAlgorithm { .. })
            ),
            _ => error == RotationVerifyError::KeyId,
        };
        assert!(matched, "{what}: {error:?}");
    }
    // A tampered signature.
    let good = key.token(&claims(1));
    let raw = good.expose_secret();
    let tampered = format!(
        "{}.{}",
        raw.rsplit_once('.').unwrap().0,
        URL_SAFE_NO_PAD.encode([7u8; 64])
    );
    let tampered = ServiceAccountToken::decode(&tampered).unwrap();
    assert_eq!(
        verifier.verify(&tampered).await,
        Err(RotationVerifyError::Signature(SignatureError::BadSignature))
    );
    assert_eq!(
        api.api().jwks_requests,
        1,
        "no refresh for a malformed kid or a known one"
    );
}

#[tokio::test]
async fn a_token_signed_by_an_unknown_key_is_refused_after_one_rate_limited_refresh() {
    let (api, verifier, _dir) = api_and_verifier().await;
    let stranger = Signer::ec("ES256", "attacker-key");
    let forged = stranger.token(&claims(3600));
    for _ in 0..5 {
        assert_eq!(
            verifier.verify_rotation(&forged, &cached_identity()).await,
            Err(RotationVerifyError::Signature(SignatureError::UnknownKey {
                kid: Some("attacker-key".into())
            }))
        );
    }
    assert_eq!(
        api.api().jwks_requests,
        2,
        "start, then one refresh per interval"
    );
}

#[tokio::test]
async fn concurrent_callers_with_a_new_key_share_one_refresh() {
    let (api, verifier, dir) = api_and_verifier().await;
    // The API server starts signing with a new key.
    let next = Signer::ec("ES256", "next-key");
    api.api().jwks = Some(jwks(&[cluster_key(), &next]));
    let token = next.token(&claims(3600));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let verifier = verifier.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            verifier.verify_rotation(&token, &cached_identity()).await
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(api.api().jwks_requests, 2, "one refresh for all 16 callers");
    let cached = std::fs::read(dir.path().join("jwks-cache.json")).unwrap();
    let cached: Value = serde_json::from_slice(&cached).unwrap();
    assert_eq!(
        cached["keys"].as_array().unwrap().len(),
        2,
        "the disk copy follows"
    );
}

#[tokio::test]
async fn old_keys_are_refreshed_in_the_background_and_kept_when_the_refresh_fails() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let verifier = RotationVerifier::builder(api.client())
        .cache_path(Some(dir.path().join("jwks-cache.json")))
        .key_ttl(Duration::ZERO)
        .min_refresh_interval(Duration::ZERO)
        .clock(clock())
        .build()
        .await;
    api.api().jwks = None;
    let token = cluster_key().token(&claims(3600));
    assert!(
        verifier
            .verify_rotation(&token, &cached_identity())
            .await
            .is_ok()
    );
    eventually(WAIT, "a background refresh", async || {
        api.api().jwks_requests >= 2
    })
    .await;
    // The refresh failed (503): the last keys still verify.
    assert!(
        verifier
            .verify_rotation(&token, &cached_identity())
            .await
            .is_ok()
    );
    assert_eq!(verifier.keys_source(), KeysSource::ApiServer);
}

#[tokio::test]
async fn with_the_api_server_down_at_start_the_disk_copy_is_used() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("keys").join("jwks-cache.json");
    drop(verifier(api.client(), &cache).await);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let verifier = verifier(down_client().await, &cache).await;
    assert_eq!(verifier.keys_source(), KeysSource::Disk);
    let rotated = cluster_key().token(&claims(3600));
    assert!(
        verifier
            .verify_rotation(&rotated, &cached_identity())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn without_a_disk_copy_validation_fails_and_the_caller_goes_to_eks_auth() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(down_client().await, &dir.path().join("jwks-cache.json")).await;
    assert_eq!(verifier.keys_source(), KeysSource::None);
    let rotated = cluster_key().token(&claims(3600));
    let outcome = verifier
        .validate_rotation(&rotated, &cached_identity())
        .await;
    assert!(
        matches!(
            &outcome,
            LocalValidation::Failure(RotationVerifyError::KeysUnavailable(_))
        ),
        "{outcome:?}"
    );
    assert_eq!(outcome.result(), "failure");
}

#[tokio::test]
async fn below_the_version_gate_validation_is_skipped_and_the_version_is_asked_once() {
    for (minor, expected) in [("33", "skipped"), ("34+", "success"), ("35", "success")] {
        let api = FakeApi::start(minor, jwks(&[cluster_key()])).await;
        let dir = tempfile::tempdir().unwrap();
        let verifier = RotationVerifier::builder(api.client())
            .version_gate(VersionGate::new(api.client()))
            .cache_path(Some(dir.path().join("jwks-cache.json")))
            .clock(clock())
            .build()
            .await;
        let rotated = cluster_key().token(&claims(3600));
        for _ in 0..3 {
            let outcome = verifier
                .validate_rotation(&rotated, &cached_identity())
                .await;
            assert_eq!(outcome.result(), expected, "1.{minor}");
        }
        assert_eq!(api.api().version_requests, 1, "the answer is cached");
    }
}

#[tokio::test]
async fn an_unreadable_version_skips_and_is_retried_later() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.api().version = None;
    let gate = VersionGate::new(api.client()).intervals(Duration::from_secs(3600), Duration::ZERO);
    assert!(!gate.answer().await.is_enabled());
    api.api().version = Some(json!({"major": "1", "minor": "34+"}));
    assert!(gate.answer().await.is_enabled());
    assert_eq!(api.api().version_requests, 2);
    // Known now: an unreachable API server keeps the answer.
    api.api().version = None;
    let gate = gate.intervals(Duration::ZERO, Duration::ZERO);
    assert_eq!(
        gate.answer().await,
        GateAnswer::Enabled(KubernetesVersion {
            major: 1,
            minor: 34
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Pod liveness.

/// A fake API server with pods `uid-a` and `uid-b` running, and a pod view of it (synced, its
/// watch open) that records the pods it reports gone.
async fn watched_pods() -> (FakeApi, PodWatch, Arc<Mutex<Vec<PodGone>>>) {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.add_pod("uid-a", "Running");
    api.add_pod("uid-b", "Running");
    let gone = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&gone);
    let pods = PodWatch::builder(api.client(), NODE)
        .on_pod_gone(move |pod| sink.lock().unwrap().push(pod))
        .start()
        .unwrap();
    within(WAIT, "the pod view to sync", pods.synced()).await;
    api.watching().await;
    (api, pods, gone)
}

#[tokio::test]
async fn a_pod_deleted_in_the_watch_is_reported_and_not_found_afterwards() {
    let (api, pods, gone) = watched_pods().await;
    assert_eq!(pods.liveness("uid-a"), PodLiveness::Alive);

    api.delete_pod("uid-a");
    eventually(WAIT, "uid-a to be reported", async || {
        !gone.lock().unwrap().is_empty()
    })
    .await;
    let reported = gone.lock().unwrap().clone();
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].uid, "uid-a");
    assert_eq!(reported[0].reason, GoneReason::Deleted);
    assert_eq!(reported[0].name, "pod-uid-a");
    assert_eq!(pods.liveness("uid-a"), PodLiveness::NotFound);
    assert!(pods.liveness("uid-a").is_gone());
    assert_eq!(pods.liveness("uid-b"), PodLiveness::Alive);

    // A pod that finishes is reported once, and stays known as terminated.
    api.add_pod("uid-b", "Succeeded");
    eventually(WAIT, "uid-b to be reported", async || {
        gone.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(gone.lock().unwrap()[1].reason, GoneReason::Terminated);
    assert_eq!(pods.liveness("uid-b"), PodLiveness::Terminated);
    api.add_pod("uid-b", "Succeeded");
    api.add_pod("uid-c", "Pending");
    eventually(WAIT, "uid-c to be seen", async || {
        pods.liveness("uid-c") == PodLiveness::Alive
    })
    .await;
    assert_eq!(gone.lock().unwrap().len(), 2, "no second report for uid-b");
}

#[tokio::test]
async fn until_synced_and_while_broken_liveness_is_unknown() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.add_pod("uid-a", "Running");
    api.api().pods_fail = true;
    let pods = PodWatch::builder(api.client(), NODE)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .start()
        .unwrap();
    eventually(WAIT, "the list to be retried", async || {
        api.api().lists >= 3
    })
    .await;
    assert!(!pods.is_synced());
    assert_eq!(pods.liveness("uid-a"), PodLiveness::Unknown);
    assert_eq!(pods.liveness("never-seen"), PodLiveness::Unknown);
    assert!(!pods.liveness("never-seen").is_gone(), "fail open");

    api.api().pods_fail = false;
    within(WAIT, "the pod view to sync", pods.synced()).await;
    assert_eq!(pods.liveness("uid-a"), PodLiveness::Alive);
    assert_eq!(pods.liveness("never-seen"), PodLiveness::NotFound);
}

#[tokio::test]
async fn an_expired_version_relists_and_reports_pods_deleted_meanwhile() {
    let (api, pods, gone) = watched_pods().await;
    api.delete_pod_unseen("uid-a");
    eventually(WAIT, "uid-a to be reported", async || {
        !gone.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(gone.lock().unwrap()[0].uid, "uid-a");
    assert_eq!(gone.lock().unwrap()[0].reason, GoneReason::Deleted);
    assert_eq!(api.api().lists, 2, "410 Gone re-lists");
    assert_eq!(pods.liveness("uid-a"), PodLiveness::NotFound);
    assert_eq!(pods.liveness("uid-b"), PodLiveness::Alive);
}

#[tokio::test]
async fn a_closed_watch_resumes_from_the_last_bookmark() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.add_pod("uid-a", "Running");
    let pods = PodWatch::builder(api.client(), NODE)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .start()
        .unwrap();
    within(WAIT, "the pod view to sync", pods.synced()).await;
    api.watching().await;
    assert_eq!(api.api().watches_from, ["101"]);
    // The body still delivers what was sent before the server ends it.
    api.bookmark(250);
    api.close_watches();
    eventually(WAIT, "the watch to resume", async || {
        api.api().watches_from.len() == 2
    })
    .await;
    assert_eq!(api.api().watches_from[1], "250");
    assert_eq!(api.api().lists, 1, "no re-list for a closed watch");
    assert!(pods.is_synced());
}

#[tokio::test]
async fn the_watch_itself_sets_the_synced_gauge() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.add_pod("uid-a", "Running");
    api.api().pods_fail = true;
    let metrics = Metrics::new();
    let gauge = |value: u8| {
        let series = format!("pod_identity_pod_watch_synced {value}");
        metrics.encode().lines().any(|line| line == series)
    };
    // No credential cache and no renewals here: only the watch moves the gauge.
    let pods = PodWatch::builder(api.client(), NODE)
        .metrics(metrics.clone())
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .start()
        .unwrap();
    eventually(WAIT, "the list to be retried", async || {
        api.api().lists >= 2
    })
    .await;
    assert!(gauge(0), "not synced before the first list");

    api.api().pods_fail = false;
    within(WAIT, "the pod view to sync", pods.synced()).await;
    assert!(gauge(1), "set on sync");
    api.watching().await;
    let lists = api.api().lists;

    // The watch breaks: the server ends it and refuses to resume it.
    api.api().pods_fail = true;
    api.close_watches();
    eventually(WAIT, "the gauge to be cleared", async || gauge(0)).await;
    assert!(!pods.is_synced());
    assert_eq!(pods.liveness("uid-a"), PodLiveness::Unknown, "fail open");

    // It resumes from its version; the next event shows the view is current again.
    api.api().pods_fail = false;
    api.watching().await;
    api.add_pod("uid-b", "Running");
    eventually(WAIT, "the gauge to be set again", async || gauge(1)).await;
    assert!(pods.is_synced());
    assert_eq!(pods.liveness("uid-b"), PodLiveness::Alive);
    assert_eq!(api.api().lists, lists, "resumed, not re-listed");
}

#[tokio::test]
async fn a_bad_node_name_is_refused() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    assert!(
        PodWatch::builder(api.client(), "node&watch=0")
            .start()
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// The client.

#[tokio::test]
async fn a_kubeconfig_with_a_plain_http_server_and_a_token_works() {
    let api = FakeApi::start("34+", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: test\n  context:\n    cluster: fake\n    user: agent\nusers:\n- name: agent\n  user:\n    token: {AGENT_TOKEN}\n",
            api.url
        ),
    )
    .unwrap();
    let kubeconfig = path.to_str().unwrap().to_owned();
    let env = move |key: &str| (key == "KUBECONFIG").then(|| kubeconfig.clone());
    let config = ClientConfig::infer(&env).unwrap();
    assert_eq!(config.server(), api.url);
    assert!(!format!("{config:?}").contains(AGENT_TOKEN));
    let client = KubeClient::new(config).unwrap();
    let keys: Value = client.get_json("/openid/v1/jwks").await.unwrap();
    assert_eq!(keys["keys"][0]["kid"], cluster_key().kid.as_str());
    assert!(!format!("{client:?}").contains(AGENT_TOKEN));
}

#[tokio::test]
async fn in_cluster_configuration_reads_the_service_account_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), AGENT_TOKEN).unwrap();
    // Not a certificate: the configuration reads it, the client refuses it.
    std::fs::write(dir.path().join("ca.crt"), "not a certificate").unwrap();
    let config = ClientConfig::in_cluster("fd00::1", "443", dir.path()).unwrap();
    assert_eq!(config.server(), "https://[fd00::1]:443");
    assert!(KubeClient::new(config).is_err());
    let env = |key: &str| match key {
        "KUBERNETES_SERVICE_HOST" => Some("10.100.0.1".to_owned()),
        "KUBERNETES_SERVICE_PORT" => Some("443".to_owned()),
        _ => None,
    };
    // The real service-account directory is absent here.
    assert!(matches!(
        ClientConfig::infer(&env),
        Err(ConfigError::Read { .. })
    ));
    assert!(matches!(
        ClientConfig::infer(&|_| None),
        Err(ConfigError::NotFound)
    ));
}

#[test]
fn credential_plugins_are_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        "current-context: eks\nclusters:\n- name: c\n  cluster:\n    server: https://example.invalid\ncontexts:\n- name: eks\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    exec:\n      command: aws\n",
    )
    .unwrap();
    assert!(matches!(
        ClientConfig::from_kubeconfig(&path, None),
        Err(ConfigError::Unsupported(_))
    ));
    assert!(matches!(
        ClientConfig::from_kubeconfig(&path, Some("missing")),
        Err(ConfigError::Invalid(_))
    ));
}

#[tokio::test]
async fn every_call_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let client = KubeClient::with_timeouts(
        ClientConfig::new(url).token(SecretString::new(AGENT_TOKEN)),
        Duration::from_millis(200),
        Duration::from_millis(200),
    )
    .unwrap();
    let error = within(
        WAIT,
        "the client's own timeout",
        client.get_bytes("/version", 1024),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ApiError::Timeout), "{error:?}");
    assert!(!format!("{error} {error:?}").contains(AGENT_TOKEN));
    held.abort();
}

// ---------------------------------------------------------------------------------------------
// Secrets.

#[tokio::test]
async fn tokens_never_appear_in_logs_errors_or_debug_output() {
    let (logs, _capture) = logs::capture_from(Level::TRACE);
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.api().pods_fail = true;
    // The API server refuses this token (401), and the list fails: everything is logged.
    let wrong = "wrong-agent-token-5d1e0b";
    let client =
        KubeClient::new(ClientConfig::new(&api.url).token(SecretString::new(wrong))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let verifier = RotationVerifier::builder(client.clone())
        .cache_path(Some(dir.path().join("jwks-cache.json")))
        .clock(clock())
        .build()
        .await;
    let pod_token = cluster_key().token(&claims(3600));
    let outcome = verifier
        .validate_rotation(&pod_token, &cached_identity())
        .await;
    assert_eq!(outcome.result(), "failure");
    let pods = PodWatch::builder(client.clone(), NODE)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .start()
        .unwrap();
    eventually(WAIT, "the list to be retried", async || {
        api.api().lists >= 2
    })
    .await;

    let logs = logs.text();
    assert!(logs.contains("401"), "the refusal is logged: {logs}");
    let shown = format!("{logs} {outcome:?} {verifier:?} {client:?} {pods:?}");
    for secret in [wrong, pod_token.expose_secret()] {
        assert!(!shown.contains(secret), "a token is shown");
    }
    let signature = pod_token.expose_secret().rsplit('.').next().unwrap();
    assert!(!shown.contains(signature), "a token's signature is shown");
}
