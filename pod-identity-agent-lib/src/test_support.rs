//! Test fixtures shared by the unit tests: tokens, credentials, a scriptable source, log capture.
//!
//! The integration tests cannot reach this module (it exists under `cfg(test)` only); theirs is
//! `tests/support`, with the same log capture and the loopback pieces (HTTP client, running
//! agent, upstreams) that unit tests do not need.

use aws_smithy_async::time::SharedTimeSource;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_core::eks_auth::PodIdentityAssociation;
use pod_identity_core::{
    container_credentials::ContainerCredentials, secret::SecretString, token::ServiceAccountToken,
};
use tokio::sync::watch;

use crate::source::{CredentialRequest, CredentialSource, IssuedCredentials, SourceError};
use crate::time::TokioTimeSource;

/// Wall-clock start of every test: 2023-11-14T22:13:20Z.
pub(crate) const START_SECS: u64 = 1_700_000_000;

/// The secret access key every fake credential carries (asserted absent from logs).
pub(crate) const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI-fake-secret-access-key";

/// A wall clock at [`START_SECS`] that moves with tokio's (paused) clock.
pub(crate) fn wall_clock() -> SharedTimeSource {
    SharedTimeSource::new(TokioTimeSource::starting_at(
        UNIX_EPOCH + Duration::from_secs(START_SECS),
    ))
}

/// An unsigned JWT with `claims`.
pub(crate) fn jwt(claims: &serde_json::Value) -> String {
    jwt_with_header(
        &serde_json::json!({"alg": "RS256", "kid": "test-key"}),
        claims,
    )
}

/// An unsigned JWT with `header` and `claims`.
pub(crate) fn jwt_with_header(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let encode = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.c2lnbmF0dXJl", encode(header), encode(claims))
}

/// A projected service-account token for pod `pod`, valid from [`START_SECS`] for `valid_for`.
pub(crate) fn token(pod: &str, valid_for: Duration) -> String {
    let iat = START_SECS;
    let exp = START_SECS + valid_for.as_secs();
    jwt(&serde_json::json!({
        "aud": ["pods.eks.amazonaws.com"],
        "exp": exp,
        "iat": iat,
        "nbf": iat,
        "iss": "https://oidc.eks.us-west-2.amazonaws.com/id/EXAMPLE",
        "sub": "system:serviceaccount:default:app",
        "jti": format!("jti-{pod}"),
        "kubernetes.io": {
            "namespace": "default",
            "pod": {"name": pod, "uid": format!("uid-{pod}")},
            "serviceaccount": {"name": "app", "uid": "sa-uid"}
        }
    }))
}

/// A day-long token for `pod`.
pub(crate) fn day_token(pod: &str) -> String {
    token(pod, Duration::from_secs(24 * 60 * 60))
}

/// A validated request for `token`.
pub(crate) fn request(token: &str) -> CredentialRequest {
    CredentialRequest::new(
        "demo".parse().expect("a valid cluster name"),
        ServiceAccountToken::decode(token).expect("a decodable token"),
    )
}

/// Credentials numbered `n`, expiring at `expiration`.
pub(crate) fn credentials(n: usize, expiration: SystemTime) -> ContainerCredentials {
    ContainerCredentials {
        access_key_id: format!("ASIAFAKE{n}"),
        secret_access_key: SecretString::new(SECRET_ACCESS_KEY),
        token: SecretString::new(format!("session-token-{n}")),
        account_id: Some("111122223333".into()),
        expiration,
    }
}

/// A scriptable source: numbered credentials with a fixed lifetime, optional failures, and a
/// gate that holds calls until opened.
#[derive(Clone)]
pub(crate) struct FakeSource {
    inner: Arc<FakeInner>,
}

struct FakeInner {
    calls: AtomicUsize,
    clock: SharedTimeSource,
    lifetime: Mutex<Duration>,
    failures: Mutex<VecDeque<SourceError>>,
    failing: Mutex<Option<SourceError>>,
    gate: watch::Sender<bool>,
}

impl FakeSource {
    pub(crate) fn new(clock: SharedTimeSource) -> Self {
        Self {
            inner: Arc::new(FakeInner {
                calls: AtomicUsize::new(0),
                clock,
                lifetime: Mutex::new(Duration::from_secs(6 * 60 * 60)),
                failures: Mutex::default(),
                failing: Mutex::default(),
                gate: watch::Sender::new(true),
            }),
        }
    }

    /// Upstream calls so far.
    pub(crate) fn calls(&self) -> usize {
        self.inner.calls.load(Ordering::SeqCst)
    }

    /// The lifetime of credentials issued from now on.
    pub(crate) fn set_lifetime(&self, lifetime: Duration) {
        *self.inner.lifetime.lock().unwrap() = lifetime;
    }

    /// The next call fails with `error`.
    pub(crate) fn fail_next(&self, error: SourceError) {
        self.inner.failures.lock().unwrap().push_back(error);
    }

    /// Every call fails with `error` (or succeeds again with `None`).
    pub(crate) fn fail_always(&self, error: Option<SourceError>) {
        *self.inner.failing.lock().unwrap() = error;
    }

    /// Holds calls until [`open`](Self::open).
    pub(crate) fn close(&self) {
        self.inner.gate.send_replace(false);
    }

    /// Lets held calls finish.
    pub(crate) fn open(&self) {
        self.inner.gate.send_replace(true);
    }
}

impl CredentialSource for FakeSource {
    async fn credentials(
        &self,
        _request: &CredentialRequest,
    ) -> Result<IssuedCredentials, SourceError> {
        let inner = &self.inner;
        let n = inner.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut gate = inner.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
        if let Some(error) = inner.failures.lock().unwrap().pop_front() {
            return Err(error);
        }
        if let Some(error) = inner.failing.lock().unwrap().clone() {
            return Err(error);
        }
        let lifetime = *inner.lifetime.lock().unwrap();
        Ok(
            IssuedCredentials::new(credentials(n, inner.clock.now() + lifetime)).with_association(
                PodIdentityAssociation {
                    association_arn: "arn:aws:eks:us-west-2:111122223333:podidentityassociation/demo/a-abcdefghijklmnopq".into(),
                    association_id: "a-abcdefghijklmnopq".into(),
                },
            ),
        )
    }
}

/// Lets every ready task run (on the current-thread test runtime) without moving time.
pub(crate) async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Captured JSON log lines.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

thread_local! {
    static CAPTURE: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

/// Writes into the capture of the current thread, if any.
struct ThreadCapture;

impl io::Write for ThreadCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(logs) = &*capture.borrow() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Stops capturing when dropped.
pub(crate) struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

/// Captures every log line of this thread (the current-thread test runtime) as JSON.
///
/// One global subscriber serves every test: per-thread scoped subscribers race with tracing's
/// global callsite-interest cache when tests run in parallel, and lose events.
pub(crate) fn capture_logs() -> (Logs, CaptureGuard) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| ThreadCapture)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    let logs = Logs::default();
    CAPTURE.with(|capture| *capture.borrow_mut() = Some(logs.clone()));
    (logs, CaptureGuard)
}
