//! The Kubernetes blocks against a fake API server on loopback (axum) that speaks the real
//! endpoints as kube-rs calls them: `/version`, `/openid/v1/jwks` (bearer token required), and
//! the pod list (`limit`, `continue`) and watch (`watch=true`, `allowWatchBookmarks`,
//! `timeoutSeconds`, `resourceVersion`) with bookmarks and, for an expired version, a `410`
//! `ERROR` event. Tokens are minted and signed here.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used)] // A test crate: a panic is how a check fails.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_agent_lib::cache::PodIdentity;
use pod_identity_agent_lib::jwk::SignatureError;
use pod_identity_agent_lib::kubernetes::{
    ApiError, ClientConfig, ConfigError, GoneReason, KeysSource, KubeClient, KubernetesVersion,
    LocalValidation, PodGone, PodLiveness, PodWatch, RotationVerifier, VerifyError, VersionGate,
};
use pod_identity_agent_lib::time::SharedWallClock;
use pod_identity_agent_lib::time::TokioWallClock;
use pod_identity_core::{secret::SecretString, token::ServiceAccountToken};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// When the cached entry's token was issued: 2023-11-14T22:13:20Z.
const START: u64 = 1_700_000_000;
/// Wall-clock start of every test, two hours later (tokens rotated meanwhile are valid).
const NOW: u64 = START + 7200;
const ISSUER: &str = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE";
/// The agent's own service-account token, which the fake API server requires for the keys.
const AGENT_TOKEN: &str = "agent-sa-token-7f3a9c";
const NODE: &str = "node-1";
const WAIT: Duration = Duration::from_secs(10);

fn clock() -> SharedWallClock {
    SharedWallClock::new(TokioWallClock::starting_at(
        UNIX_EPOCH + Duration::from_secs(NOW),
    ))
}

// ---------------------------------------------------------------------------------------------
// Keys and tokens.

enum KeyKind {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

struct Signer {
    kid: String,
    alg: &'static str,
    key: KeyKind,
}

impl Signer {
    fn ec(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            alg: "ES256",
            key: KeyKind::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            ),
        }
    }

    fn rsa(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            alg: "RS256",
            key: KeyKind::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap()),
        }
    }

    /// The public key as the API server publishes it (with `alg` and `use`).
    fn jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match &self.key {
            KeyKind::Rsa(key) => {
                let (n, e) = rsa_public_components(key.public_key().as_ref());
                json!({"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
                       "n": b64(n), "e": b64(e)})
            }
            KeyKind::Ec(key) => {
                let point = key.public_key().as_ref();
                json!({"kty": "EC", "kid": self.kid, "alg": "ES256", "use": "sig", "crv": "P-256",
                       "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
        }
    }

    fn sign_with_header(&self, header: &Value, claims: &Value) -> ServiceAccountToken {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match &self.key {
            KeyKind::Rsa(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    signed.as_bytes(),
                    &mut signature,
                )
                .unwrap();
                signature
            }
            KeyKind::Ec(key) => key.sign(&rng, signed.as_bytes()).unwrap().as_ref().to_vec(),
        };
        ServiceAccountToken::decode(&format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
            .unwrap()
    }

    fn sign(&self, claims: &Value) -> ServiceAccountToken {
        self.sign_with_header(&json!({"alg": self.alg, "kid": self.kid}), claims)
    }
}

/// `n` and `e` of a DER `RSAPublicKey` (a SEQUENCE of two INTEGERs).
fn rsa_public_components(der: &[u8]) -> (&[u8], &[u8]) {
    fn element(der: &[u8]) -> (&[u8], &[u8]) {
        let first = der[1];
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let count = usize::from(first & 0x7f);
            let len = der[2..2 + count]
                .iter()
                .fold(0usize, |len, b| (len << 8) | usize::from(*b));
            (len, 2 + count)
        };
        (&der[header..header + len], &der[header + len..])
    }
    let (sequence, _) = element(der);
    let (n, rest) = element(sequence);
    let (e, _) = element(rest);
    (n.strip_prefix(&[0]).unwrap_or(n), e)
}

/// The cluster's current key (EC) and an RSA one, shared (RSA generation is slow in debug).
fn cluster_key() -> &'static Signer {
    static KEY: OnceLock<Signer> = OnceLock::new();
    KEY.get_or_init(|| Signer::ec("Zb6e6ZtxKdoqdKSU0aW2Ql1N4Gq_XqfC6pO4BZ3SxAI"))
}

fn rsa_key() -> &'static Signer {
    static KEY: OnceLock<Signer> = OnceLock::new();
    KEY.get_or_init(|| Signer::rsa("rsa-key-1"))
}

fn jwks(signers: &[&Signer]) -> Value {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()})
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
    PodIdentity::of(&cluster_key().sign(&claims(0))).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The fake API server.

#[derive(Default)]
struct Api {
    /// `/version`'s answer; `None` answers 503.
    version: Option<Value>,
    /// `/openid/v1/jwks`'s answer; `None` answers 503.
    jwks: Option<Value>,
    jwks_requests: usize,
    version_requests: usize,
    /// The pod list and watch answer 500 while set.
    pods_fail: bool,
    pods: BTreeMap<String, Value>,
    resource_version: u64,
    /// Watches from an older version answer 410 Gone.
    oldest_version: u64,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    lists: usize,
    /// The `resourceVersion` of each watch request.
    watches_from: Vec<String>,
}

#[derive(Clone)]
struct FakeApi {
    state: Arc<Mutex<Api>>,
    url: String,
}

impl FakeApi {
    async fn start(version: &str, keys: Value) -> Self {
        let state = Arc::new(Mutex::new(Api {
            version: Some(
                json!({"major": "1", "minor": version, "gitVersion": format!("v1.{version}")}),
            ),
            jwks: Some(keys),
            resource_version: 100,
            ..Api::default()
        }));
        let router = axum::Router::new()
            .route("/version", get(version_handler))
            .route("/openid/v1/jwks", get(jwks_handler))
            .route("/api/v1/pods", get(pods_handler))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { state, url }
    }

    fn api(&self) -> std::sync::MutexGuard<'_, Api> {
        self.state.lock().unwrap()
    }

    fn client(&self) -> KubeClient {
        KubeClient::new(ClientConfig::new(&self.url).token(SecretString::new(AGENT_TOKEN))).unwrap()
    }

    fn add_pod(&self, uid: &str, phase: &str) {
        let mut api = self.api();
        api.resource_version += 1;
        let pod = pod(uid, phase, api.resource_version);
        let kind = if api.pods.insert(uid.to_owned(), pod.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        api.send(kind, &pod);
    }

    fn delete_pod(&self, uid: &str) {
        let mut api = self.api();
        api.resource_version += 1;
        if let Some(mut pod) = api.pods.remove(uid) {
            pod["metadata"]["resourceVersion"] = json!(api.resource_version.to_string());
            api.send("DELETED", &pod);
        }
    }

    /// Deletes a pod while no watch is open and compacts history past it, so a resumed watch
    /// gets 410 and only a re-list can tell.
    fn delete_pod_unseen(&self, uid: &str) {
        let mut api = self.api();
        api.watchers.clear();
        api.resource_version += 1;
        api.pods.remove(uid);
        api.oldest_version = api.resource_version;
    }

    fn bookmark(&self, version: u64) {
        let mut api = self.api();
        api.resource_version = api.resource_version.max(version);
        let object = json!({"kind": "Pod", "apiVersion": "v1",
                            "metadata": {"resourceVersion": version.to_string()}});
        api.send("BOOKMARK", &object);
    }

    fn close_watches(&self) {
        self.api().watchers.clear();
    }

    /// Waits until a watch is open (events sent before then would be lost).
    async fn watching(&self) {
        tokio::time::timeout(WAIT, async {
            while self.api().watchers.iter().all(|w| w.is_closed()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("no watch opened");
    }
}

impl Api {
    fn send(&mut self, kind: &str, object: &Value) {
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": object})));
        self.watchers.retain(|w| w.send(line.clone()).is_ok());
    }
}

fn pod(uid: &str, phase: &str, version: u64) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"uid": uid, "name": format!("pod-{uid}"), "namespace": "default",
                     "resourceVersion": version.to_string(),
                     "labels": {"app": "x"}, "annotations": {"a": "b"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": phase, "podIP": "10.0.0.1"}
    })
}

type Shared = Arc<Mutex<Api>>;

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn version_handler(State(api): State<Shared>) -> Response {
    let mut api = api.lock().unwrap();
    api.version_requests += 1;
    match &api.version {
        Some(version) => json_response(StatusCode::OK, version),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn jwks_handler(State(api): State<Shared>, headers: HeaderMap) -> Response {
    let mut api = api.lock().unwrap();
    api.jwks_requests += 1;
    let authorized = headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {AGENT_TOKEN}").as_bytes());
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match &api.jwks {
        Some(keys) => json_response(StatusCode::OK, keys),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn pods_handler(State(api): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let params: BTreeMap<&str, &str> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    assert_eq!(
        params.get("fieldSelector"),
        Some(&"spec.nodeName%3Dnode-1"),
        "{query}"
    );
    let mut api = api.lock().unwrap();
    if matches!(params.get("watch"), Some(&("1" | "true"))) {
        assert_eq!(params.get("allowWatchBookmarks"), Some(&"true"));
        assert!(params.contains_key("timeoutSeconds"));
        let from = params.get("resourceVersion").copied().unwrap_or_default();
        api.watches_from.push(from.to_owned());
        if api.pods_fail {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        if from.parse::<u64>().is_ok_and(|v| v < api.oldest_version) {
            // As the API server does: the watch starts, its one event is the 410, and it ends.
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "reason": "Expired", "code": 410,
                                "message": format!("too old resource version: {from}")});
            let line = format!("{}\n", json!({"type": "ERROR", "object": status}));
            return ([("content-type", "application/json")], line).into_response();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        api.watchers.push(tx);
        return Response::new(Body::new(ChannelBody(rx)));
    }
    // A list: a consistent read (no resourceVersion), in pages.
    assert!(params.contains_key("limit"), "{query}");
    assert!(!params.contains_key("resourceVersion"), "{query}");
    api.lists += 1;
    if api.pods_fail {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let list = json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": api.resource_version.to_string()},
        "items": api.pods.values().collect::<Vec<_>>()
    });
    json_response(StatusCode::OK, &list)
}

/// A streaming response body fed by the test (a watch).
struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

async fn verifier(api: &FakeApi, cache: &std::path::Path) -> RotationVerifier {
    RotationVerifier::builder(api.client())
        .cache_path(Some(cache.to_owned()))
        .clock(clock())
        .build()
        .await
}

/// A URL on loopback where nothing listens.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

// ---------------------------------------------------------------------------------------------
// Rotation validation.

#[tokio::test]
async fn a_rotated_token_of_the_same_pod_is_accepted() {
    let api = FakeApi::start("34+", jwks(&[cluster_key(), rsa_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(&api, &dir.path().join("jwks-cache.json")).await;
    assert_eq!(verifier.keys_source(), KeysSource::ApiServer);

    // kubelet's rotation: same pod, issuer, namespace, service account; new jti, iat, exp.
    let rotated = cluster_key().sign(&claims(3600));
    let verified = verifier
        .verify_rotation(&rotated, &cached_identity())
        .await
        .unwrap();
    assert_eq!(verified.pod_uid, "pod-uid-1");
    assert_eq!(verified.pod_name, "app-7d9f");
    // RS256 keys work the same way.
    let rotated = rsa_key().sign(&claims(7200));
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
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(&api, &dir.path().join("jwks-cache.json")).await;
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
        let token = cluster_key().sign(&claims);
        // Validly signed: verify alone accepts it; bound to the cached entry it is refused.
        assert!(verifier.verify(&token).await.is_ok(), "{what}");
        assert_eq!(
            verifier.verify_rotation(&token, &cached).await,
            Err(VerifyError::Mismatch(what))
        );
        let outcome = verifier.validate_rotation(&token, &cached).await;
        assert_eq!(outcome.result(), "failure");
    }
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(&api, &dir.path().join("jwks-cache.json")).await;
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
        (key.sign(&wrong_audience), "audience"),
        (key.sign(&expired), "expired"),
        (key.sign(&not_yet), "not valid yet"),
        (key.sign(&no_pod), "pod claims"),
        (key.sign(&no_expiry), "expiry"),
        // The key says ES256; a token claiming another algorithm does not use it.
        (
            key.sign_with_header(&json!({"alg": "ES384", "kid": key.kid}), &claims(1)),
            "algorithm",
        ),
        (
            key.sign_with_header(&json!({"alg": "none", "kid": key.kid}), &claims(1)),
            "unsupported",
        ),
        (
            key.sign_with_header(&json!({"alg": "ES256", "kid": "../../etc"}), &claims(1)),
            "kid",
        ),
        (
            key.sign_with_header(&json!({"alg": "ES256"}), &claims(1)),
            "no kid",
        ),
    ];
    for (token, what) in cases {
        let error = verifier.verify_rotation(&token, &cached).await.unwrap_err();
        let matched = match what {
            "audience" => matches!(error, VerifyError::Audience { .. }),
            "expired" => error == VerifyError::Expired,
            "not valid yet" => error == VerifyError::NotValidYet,
            "pod claims" => matches!(error, VerifyError::PodClaims(_)),
            "expiry" => error == VerifyError::NoExpiry,
            "algorithm" => matches!(
                error,
                VerifyError::Signature(SignatureError::KeyMismatch { .. })
            ),
            "unsupported" => matches!(
                error,
                VerifyError::Signature(SignatureError::UnsupportedAlgorithm { .. })
            ),
            _ => error == VerifyError::KeyId,
        };
        assert!(matched, "{what}: {error:?}");
    }
    // A tampered signature.
    let good = key.sign(&claims(1));
    let raw = good.expose_secret();
    let tampered = format!(
        "{}.{}",
        raw.rsplit_once('.').unwrap().0,
        URL_SAFE_NO_PAD.encode([7u8; 64])
    );
    let tampered = ServiceAccountToken::decode(&tampered).unwrap();
    assert_eq!(
        verifier.verify(&tampered).await,
        Err(VerifyError::Signature(SignatureError::BadSignature))
    );
    assert_eq!(
        api.api().jwks_requests,
        1,
        "no refresh for a malformed kid or a known one"
    );
}

#[tokio::test]
async fn a_token_signed_by_an_unknown_key_is_refused_after_one_rate_limited_refresh() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(&api, &dir.path().join("jwks-cache.json")).await;
    let stranger = Signer::ec("attacker-key");
    let forged = stranger.sign(&claims(3600));
    for _ in 0..5 {
        assert_eq!(
            verifier.verify_rotation(&forged, &cached_identity()).await,
            Err(VerifyError::Signature(SignatureError::UnknownKey {
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
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(&api, &dir.path().join("jwks-cache.json")).await;
    // The API server starts signing with a new key.
    let next = Signer::ec("next-key");
    api.api().jwks = Some(jwks(&[cluster_key(), &next]));
    let token = next.sign(&claims(3600));
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
    let token = cluster_key().sign(&claims(3600));
    assert!(
        verifier
            .verify_rotation(&token, &cached_identity())
            .await
            .is_ok()
    );
    tokio::time::timeout(WAIT, async {
        while api.api().jwks_requests < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("no background refresh");
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
    drop(verifier(&api, &cache).await);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let down =
        KubeClient::new(ClientConfig::new(dead_url().await).token(SecretString::new(AGENT_TOKEN)))
            .unwrap();
    let verifier = RotationVerifier::builder(down)
        .cache_path(Some(cache))
        .clock(clock())
        .build()
        .await;
    assert_eq!(verifier.keys_source(), KeysSource::Disk);
    let rotated = cluster_key().sign(&claims(3600));
    assert!(
        verifier
            .verify_rotation(&rotated, &cached_identity())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn without_a_disk_copy_validation_fails_and_the_caller_goes_to_eks_auth() {
    let down =
        KubeClient::new(ClientConfig::new(dead_url().await).token(SecretString::new(AGENT_TOKEN)))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let verifier = RotationVerifier::builder(down)
        .cache_path(Some(dir.path().join("jwks-cache.json")))
        .clock(clock())
        .build()
        .await;
    assert_eq!(verifier.keys_source(), KeysSource::None);
    let rotated = cluster_key().sign(&claims(3600));
    let outcome = verifier
        .validate_rotation(&rotated, &cached_identity())
        .await;
    assert!(
        matches!(
            &outcome,
            LocalValidation::Failure(VerifyError::KeysUnavailable(_))
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
        let rotated = cluster_key().sign(&claims(3600));
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
        pod_identity_agent_lib::kubernetes::GateAnswer::Enabled(KubernetesVersion {
            major: 1,
            minor: 34
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Pod liveness.

fn recorder() -> (
    Arc<Mutex<Vec<PodGone>>>,
    impl Fn(PodGone) + Send + Sync + 'static,
) {
    let gone = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&gone);
    (gone, move |pod| sink.lock().unwrap().push(pod))
}

async fn until(what: &str, check: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

#[tokio::test]
async fn a_pod_deleted_in_the_watch_is_reported_and_not_found_afterwards() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.add_pod("uid-a", "Running");
    api.add_pod("uid-b", "Running");
    let (gone, callback) = recorder();
    let pods = PodWatch::builder(api.client(), NODE)
        .on_pod_gone(callback)
        .start()
        .unwrap();
    tokio::time::timeout(WAIT, pods.synced()).await.unwrap();
    api.watching().await;
    assert_eq!(pods.liveness("uid-a"), PodLiveness::Alive);

    api.delete_pod("uid-a");
    until("uid-a is reported", || !gone.lock().unwrap().is_empty()).await;
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
    until("uid-b is reported", || gone.lock().unwrap().len() == 2).await;
    assert_eq!(gone.lock().unwrap()[1].reason, GoneReason::Terminated);
    assert_eq!(pods.liveness("uid-b"), PodLiveness::Terminated);
    api.add_pod("uid-b", "Succeeded");
    api.add_pod("uid-c", "Pending");
    until("uid-c is seen", || {
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
    until("the list is retried", || api.api().lists >= 3).await;
    assert!(!pods.is_synced());
    assert_eq!(pods.liveness("uid-a"), PodLiveness::Unknown);
    assert_eq!(pods.liveness("never-seen"), PodLiveness::Unknown);
    assert!(!pods.liveness("never-seen").is_gone(), "fail open");

    api.api().pods_fail = false;
    tokio::time::timeout(WAIT, pods.synced()).await.unwrap();
    assert_eq!(pods.liveness("uid-a"), PodLiveness::Alive);
    assert_eq!(pods.liveness("never-seen"), PodLiveness::NotFound);
}

#[tokio::test]
async fn an_expired_version_relists_and_reports_pods_deleted_meanwhile() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.add_pod("uid-a", "Running");
    api.add_pod("uid-b", "Running");
    let (gone, callback) = recorder();
    let pods = PodWatch::builder(api.client(), NODE)
        .on_pod_gone(callback)
        .start()
        .unwrap();
    tokio::time::timeout(WAIT, pods.synced()).await.unwrap();
    api.watching().await;
    api.delete_pod_unseen("uid-a");
    until("uid-a is reported", || !gone.lock().unwrap().is_empty()).await;
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
    tokio::time::timeout(WAIT, pods.synced()).await.unwrap();
    api.watching().await;
    assert_eq!(api.api().watches_from, ["101"]);
    // The body still delivers what was sent before the server ends it.
    api.bookmark(250);
    api.close_watches();
    until("the watch resumes", || api.api().watches_from.len() == 2).await;
    assert_eq!(api.api().watches_from[1], "250");
    assert_eq!(api.api().lists, 1, "no re-list for a closed watch");
    assert!(pods.is_synced());
}

#[tokio::test]
async fn the_watch_itself_sets_the_synced_gauge() {
    let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
    api.add_pod("uid-a", "Running");
    api.api().pods_fail = true;
    let metrics = pod_identity_agent_lib::metrics::Metrics::new();
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
    until("the list is retried", || api.api().lists >= 2).await;
    assert!(gauge(0), "not synced before the first list");

    api.api().pods_fail = false;
    tokio::time::timeout(WAIT, pods.synced()).await.unwrap();
    assert!(gauge(1), "set on sync");
    api.watching().await;
    let lists = api.api().lists;

    // The watch breaks: the server ends it and refuses to resume it.
    api.api().pods_fail = true;
    api.close_watches();
    until("the gauge is cleared", || gauge(0)).await;
    assert!(!pods.is_synced());
    assert_eq!(pods.liveness("uid-a"), PodLiveness::Unknown, "fail open");

    // It resumes from its version; the next event shows the view is current again.
    api.api().pods_fail = false;
    api.watching().await;
    api.add_pod("uid-b", "Running");
    until("the gauge is set again", || gauge(1)).await;
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
    let error = tokio::time::timeout(WAIT, client.get_bytes("/version", 1024))
        .await
        .expect("the client's own timeout fires first")
        .unwrap_err();
    assert!(matches!(error, ApiError::Timeout), "{error:?}");
    assert!(!format!("{error} {error:?}").contains(AGENT_TOKEN));
    held.abort();
}

// ---------------------------------------------------------------------------------------------
// Secrets.

#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn tokens_never_appear_in_logs_errors_or_debug_output() {
    let logs = CapturedLogs::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish(),
    );
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
    let pod_token = cluster_key().sign(&claims(3600));
    let outcome = verifier
        .validate_rotation(&pod_token, &cached_identity())
        .await;
    assert_eq!(outcome.result(), "failure");
    let pods = PodWatch::builder(client.clone(), NODE)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .start()
        .unwrap();
    until("the list is retried", || api.api().lists >= 2).await;

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("401"), "the refusal is logged: {logs}");
    let shown = format!("{logs} {outcome:?} {verifier:?} {client:?} {pods:?}");
    for secret in [wrong, pod_token.expose_secret()] {
        assert!(!shown.contains(secret), "a token is shown");
    }
    let signature = pod_token.expose_secret().rsplit('.').next().unwrap();
    assert!(!shown.contains(signature), "a token's signature is shown");
}

// ---------------------------------------------------------------------------------------------
// The credential cache with the blocks.

mod with_cache {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::SystemTime;

    use pod_identity_agent_lib::cache::CredentialCache;
    use pod_identity_agent_lib::metrics::Metrics;
    use pod_identity_agent_lib::source::{
        CredentialRequest, CredentialSource, IssuedCredentials, SourceError,
    };
    use pod_identity_core::container_credentials::ContainerCredentials;

    use super::*;

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

    async fn cache_with_verifier(
        api: &FakeApi,
        dir: &std::path::Path,
        gate: bool,
    ) -> (CredentialCache<EksAuth>, EksAuth, Metrics) {
        let mut builder = RotationVerifier::builder(api.client())
            .cache_path(Some(dir.join("jwks-cache.json")))
            .clock(clock());
        if gate {
            builder = builder.version_gate(VersionGate::new(api.client()));
        }
        let verifier = builder.build().await;
        let eks = EksAuth::default();
        let metrics = Metrics::new();
        let cache = CredentialCache::builder(eks.clone())
            .clock(clock())
            .metrics(metrics.clone())
            .rotation_validator(Arc::new(verifier))
            .build();
        (cache, eks, metrics)
    }

    #[tokio::test]
    async fn a_rotated_token_is_served_from_the_cache_while_eks_auth_is_down() {
        let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
        let dir = tempfile::tempdir().unwrap();
        let (cache, eks, metrics) = cache_with_verifier(&api, dir.path(), false).await;
        let first = cluster_key().sign(&claims(0));
        let issued = cache.get(&request(&first)).await.unwrap();
        assert_eq!(eks.calls(), 1);

        eks.down.store(true, Ordering::SeqCst);
        // kubelet's rotation: same pod, issuer, namespace, service account; new jti, iat, exp.
        let rotated = cluster_key().sign(&claims(3600));
        let served = cache.get(&request(&rotated)).await.unwrap();
        assert_eq!(
            served.credentials().access_key_id,
            issued.credentials().access_key_id
        );
        assert_eq!(eks.calls(), 1, "no upstream call");
        assert!(counted(
            &metrics,
            r#"pod_identity_local_validation{result="success"} 1"#
        ));
        // The entry now holds the rotated token, found without decoding; the old one is gone.
        assert_eq!(cache.len(), 1);
        assert!(matches!(
            cache.cached(raw(&rotated).as_bytes(), now()),
            Some(Ok(_))
        ));
        assert!(cache.cached(raw(&first).as_bytes(), now()).is_none());
        // A second rotation validates against the same identity.
        let again = cluster_key().sign(&claims(5400));
        assert!(cache.get(&request(&again)).await.is_ok());
        assert_eq!(eks.calls(), 1);
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
            let token = cluster_key().sign(&pod_claims(pod, 0));
            cache.get(&request(&token)).await.unwrap();
        }
        eks.down.store(true, Ordering::SeqCst);
        let mut served = 0;
        for pod in 0..PODS {
            let rotated = cluster_key().sign(&pod_claims(pod, 3600));
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
        let slot: Arc<OnceLock<CredentialCache<EksAuth>>> = Arc::new(OnceLock::new());
        let evictor = Arc::clone(&slot);
        let watch = PodWatch::builder(api.client(), NODE)
            .on_pod_gone(move |pod: PodGone| {
                if let Some(cache) = evictor.get() {
                    cache.evict_pod(
                        &pod.uid,
                        pod_identity_agent_lib::kubernetes::gone_reason_label(pod.reason),
                    );
                }
            })
            .start()
            .unwrap();
        tokio::time::timeout(WAIT, watch.synced()).await.unwrap();
        api.watching().await;
        let eks = EksAuth::default();
        let metrics = Metrics::new();
        let cache = liveness_cache(watch, &eks, &metrics);
        assert!(slot.set(cache.clone()).is_ok());
        for pod in 0..PODS {
            let token = cluster_key().sign(&pod_claims(pod, 0));
            cache.get(&request(&token)).await.unwrap();
        }
        // Live pods are renewed (every 50 ms here).
        until("renewals run", || eks.calls() >= 2 * PODS).await;
        // The fake keeps no history: events sent while no watch is open would be lost.
        api.watching().await;
        for pod in 0..PODS / 2 {
            api.delete_pod(&format!("uid-{pod}"));
        }
        until("the deleted pods' entries are evicted", || {
            cache.len() == PODS / 2
        })
        .await;
        let deleted = |calls: &HashMap<String, usize>| -> usize {
            (0..PODS / 2)
                .map(|pod| calls.get(&format!("uid-{pod}")).copied().unwrap_or(0))
                .sum()
        };
        let live = |calls: &HashMap<String, usize>| -> usize {
            (PODS / 2..PODS)
                .map(|pod| calls.get(&format!("uid-{pod}")).copied().unwrap_or(0))
                .sum()
        };
        let before = eks.by_pod.lock().unwrap().clone();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = eks.by_pod.lock().unwrap().clone();
        assert_eq!(
            deleted(&after),
            deleted(&before),
            "renewals for deleted pods"
        );
        assert!(live(&after) > live(&before), "live pods are still renewed");
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
        cache
            .get(&request(&cluster_key().sign(&claims(0))))
            .await
            .unwrap();
        eks.down.store(true, Ordering::SeqCst);
        let unknown_key = Signer::ec("unknown-key-1").sign(&claims(3600));
        let other_sa = cluster_key().sign(&with_claim(
            "/kubernetes.io/serviceaccount/name",
            json!("admin"),
        ));
        let other_namespace = cluster_key().sign(&with_claim(
            "/kubernetes.io/namespace",
            json!("kube-system"),
        ));
        let other_pod =
            cluster_key().sign(&with_claim("/kubernetes.io/pod/uid", json!("pod-uid-2")));
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
        cache
            .get(&request(&cluster_key().sign(&claims(0))))
            .await
            .unwrap();
        eks.down.store(true, Ordering::SeqCst);
        let rotated = cluster_key().sign(&claims(3600));
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
        let client = KubeClient::new(ClientConfig::new(dead_url().await)).unwrap();
        let verifier = RotationVerifier::builder(client)
            .cache_path(Some(dir.path().join("jwks-cache.json")))
            .clock(clock())
            .build()
            .await;
        let eks = EksAuth::default();
        let cache = CredentialCache::builder(eks.clone())
            .clock(clock())
            .rotation_validator(Arc::new(verifier))
            .build();
        let first = cache
            .get(&request(&cluster_key().sign(&claims(0))))
            .await
            .unwrap();
        let rotated = cache
            .get(&request(&cluster_key().sign(&claims(3600))))
            .await
            .unwrap();
        assert_eq!(eks.calls(), 2, "the rotation went to EKS Auth");
        assert_ne!(
            first.credentials().access_key_id,
            rotated.credentials().access_key_id
        );
    }

    fn cache_with(
        verifier: RotationVerifier,
        eks: &EksAuth,
        metrics: &Metrics,
    ) -> CredentialCache<EksAuth> {
        CredentialCache::builder(eks.clone())
            .clock(clock())
            .metrics(metrics.clone())
            .rotation_validator(Arc::new(verifier))
            .build()
    }

    async fn down_client() -> KubeClient {
        KubeClient::new(ClientConfig::new(dead_url().await).token(SecretString::new(AGENT_TOKEN)))
            .unwrap()
    }

    #[tokio::test]
    async fn with_the_api_server_down_at_start_a_rotation_is_served_with_the_disk_keys() {
        let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("jwks-cache.json");
        // An earlier run of the agent left the disk copy.
        drop(verifier(&api, &keys).await);
        assert!(keys.exists());

        let verifier = RotationVerifier::builder(down_client().await)
            .cache_path(Some(keys))
            .clock(clock())
            .build()
            .await;
        assert_eq!(verifier.keys_source(), KeysSource::Disk);
        let eks = EksAuth::default();
        let metrics = Metrics::new();
        let cache = cache_with(verifier, &eks, &metrics);
        let first = cache
            .get(&request(&cluster_key().sign(&claims(0))))
            .await
            .unwrap();
        assert_eq!(eks.calls(), 1);

        eks.down.store(true, Ordering::SeqCst);
        let rotated = cluster_key().sign(&claims(3600));
        let served = cache.get(&request(&rotated)).await.unwrap();
        assert_eq!(
            served.credentials().access_key_id,
            first.credentials().access_key_id
        );
        assert_eq!(eks.calls(), 1, "served from the cache, no upstream call");
        assert!(counted(
            &metrics,
            r#"pod_identity_local_validation{result="success"} 1"#
        ));
        assert!(matches!(
            cache.cached(raw(&rotated).as_bytes(), now()),
            Some(Ok(_))
        ));
    }

    #[tokio::test]
    async fn with_the_api_server_down_and_no_disk_copy_a_rotation_gets_the_eks_auth_error() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = RotationVerifier::builder(down_client().await)
            .cache_path(Some(dir.path().join("jwks-cache.json")))
            .clock(clock())
            .build()
            .await;
        assert_eq!(verifier.keys_source(), KeysSource::None);
        let eks = EksAuth::default();
        let metrics = Metrics::new();
        let cache = cache_with(verifier, &eks, &metrics);
        cache
            .get(&request(&cluster_key().sign(&claims(0))))
            .await
            .unwrap();

        eks.down.store(true, Ordering::SeqCst);
        let rotated = cluster_key().sign(&claims(3600));
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

    fn liveness_cache(
        watch: PodWatch,
        eks: &EksAuth,
        metrics: &Metrics,
    ) -> CredentialCache<EksAuth> {
        CredentialCache::builder(eks.clone())
            .clock(clock())
            .metrics(metrics.clone())
            .max_retention(Duration::from_millis(50))
            .renewal_qps(0)
            .pod_liveness(Arc::new(watch))
            .build()
    }

    #[tokio::test]
    async fn a_pod_deleted_in_the_watch_is_evicted_at_once() {
        let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
        api.add_pod("pod-uid-1", "Running");
        let slot: Arc<OnceLock<CredentialCache<EksAuth>>> = Arc::new(OnceLock::new());
        let evictor = Arc::clone(&slot);
        let watch = PodWatch::builder(api.client(), NODE)
            .on_pod_gone(move |pod: PodGone| {
                if let Some(cache) = evictor.get() {
                    cache.evict_pod(
                        &pod.uid,
                        pod_identity_agent_lib::kubernetes::gone_reason_label(pod.reason),
                    );
                }
            })
            .start()
            .unwrap();
        tokio::time::timeout(WAIT, watch.synced()).await.unwrap();
        api.watching().await;
        let eks = EksAuth::default();
        let metrics = Metrics::new();
        let cache = CredentialCache::builder(eks.clone())
            .clock(clock())
            .metrics(metrics.clone())
            .pod_liveness(Arc::new(watch))
            .build();
        assert!(slot.set(cache.clone()).is_ok());
        cache
            .get(&request(&cluster_key().sign(&claims(0))))
            .await
            .unwrap();
        assert_eq!(cache.len(), 1);

        api.delete_pod("pod-uid-1");
        until("the entry is evicted", || cache.is_empty()).await;
        assert!(counted(
            &metrics,
            r#"pod_identity_liveness_evictions{reason="deleted"} 1"#
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(eks.calls(), 1, "no renewal afterwards");
    }

    #[tokio::test]
    async fn a_terminated_pod_is_not_renewed() {
        let api = FakeApi::start("34", jwks(&[cluster_key()])).await;
        api.add_pod("pod-uid-1", "Succeeded");
        let watch = PodWatch::builder(api.client(), NODE).start().unwrap();
        tokio::time::timeout(WAIT, watch.synced()).await.unwrap();
        let eks = EksAuth::default();
        let metrics = Metrics::new();
        let cache = liveness_cache(watch, &eks, &metrics);
        cache
            .get(&request(&cluster_key().sign(&claims(0))))
            .await
            .unwrap();
        until("the entry is evicted at its renewal", || cache.is_empty()).await;
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
        cache
            .get(&request(&cluster_key().sign(&claims(0))))
            .await
            .unwrap();
        until("renewals continue", || eks.calls() >= 3).await;
        assert_eq!(cache.len(), 1);
        assert!(counted(&metrics, "pod_identity_pod_watch_synced 0"));
    }
}
