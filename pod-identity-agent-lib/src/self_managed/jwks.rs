//! [`TokenVerifier`]: checks a service-account token's signature and claims locally.
//!
//! The keys are the cluster's JSON Web Key Set, found through the issuer's OIDC discovery
//! document (`<issuer>/.well-known/openid-configuration`, then its `jwks_uri`), at a JWKS URL
//! (such as a public bucket that hosts it), or in a file (such as a ConfigMap holding
//! `kubectl get --raw /openid/v1/jwks`). They are cached; refreshed on a schedule (default
//! hourly; EKS rotates every 7 days and Kubernetes publishes the next key before it signs with
//! it) and when a token names a `kid` the cached set lacks, at most once per
//! [`DEFAULT_MIN_REFRESH_INTERVAL`] (counting every load, the first included) so forged `kid`s
//! cannot turn the agent into a load generator against the issuer. A failed refresh keeps the
//! last good keys.
//!
//! The keys are fetched without credentials: an issuer published for OIDC federation, or a
//! file. The API server's own `/openid/v1/jwks` needs the agent's service-account token and
//! the cluster CA, which this module does not send; copy its output into a ConfigMap instead.
//!
//! The checks, in order (each failure is a [`VerifyError`], answered 400):
//!
//! 1. `alg` is `RS256`, `ES256`, `ES384` or `ES512` (what Kubernetes signs with);
//! 2. a key with the token's `kid` whose type (and curve) fits `alg`, and whose own `alg` and
//!    `use`, when present, are that `alg` and `sig`; RSA keys of 2048 to 8192 bits;
//! 3. the signature over the first two segments;
//! 4. `iss` equals the configured issuer;
//! 5. `aud` contains the configured audience (default `pods.eks.amazonaws.com`);
//! 6. `exp` is present and not passed, `nbf` not in the future, both with a leeway (default
//!    30 s) for clock skew between the API server and the node (audience and leeway are the
//!    [`ClaimRules`] of [`claim_rules`](TokenVerifierBuilder::claim_rules));
//! 7. `sub` is `system:serviceaccount:<namespace>:<name>` and `kubernetes.io` names the same
//!    namespace and service account, and the pod (name and uid) the token is bound to.
//!
//! Claims are read by core's [`ServiceAccountToken`]; this module only adds the signature and
//! the checks above. The cryptography is `aws-lc-rs`, the provider the SDK's HTTPS client
//! already links, so verification adds no second crypto stack to the agent.

use aws_smithy_async::time::SharedTimeSource;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use pod_identity_core::{
    association::Namespace, association::ServiceAccountName, token::ServiceAccountToken,
};
use serde::Deserialize;
use tokio::sync::Mutex as AsyncMutex;

use crate::jwk::{
    AlgorithmPolicy, ClaimError, ClaimRules, KeySet, MAX_REPORTED_HEADER_CHARS,
    SUPPORTED_ALGORITHMS, SignatureError, bound_pod, kubernetes_claim,
};

/// How often the keys are re-read when nothing asks earlier.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// The least time between two refreshes caused by unknown `kid`s.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Timeout of one discovery or JWKS request.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest discovery document or JWKS read.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Where the cluster's keys are.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksLocation {
    /// The issuer's OIDC discovery document and its `jwks_uri`.
    Discovery,
    /// A JWKS document at this URL.
    Url(String),
    /// A JWKS document in this file.
    File(PathBuf),
}

/// Why a token was refused (answered 400), or why no keys could be read (answered 500).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The audience, the time window or the pod claims.
    #[error(transparent)]
    Claims(#[from] ClaimError),
    /// The signature, its algorithm or its key (an unknown `kid` after a refresh).
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// `iss` is not the configured issuer.
    #[error("token issuer is not trusted")]
    Issuer,
    /// The keys could not be fetched or read, and none are cached.
    #[error("cannot read the cluster's signing keys: {0}")]
    KeysUnavailable(String),
}

/// What a verified token says about its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPod {
    /// The pod's namespace.
    pub namespace: Namespace,
    /// The pod's service account.
    pub service_account: ServiceAccountName,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's uid.
    pub pod_uid: String,
}

/// Verifies service-account tokens against the cluster's keys; cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    rules: ClaimRules,
    location: JwksLocation,
    http: reqwest::Client,
    clock: SharedTimeSource,
    min_refresh_interval: Duration,
    keys: RwLock<Arc<KeySet>>,
    /// Serialises refreshes; holds when the last one started (tokio's clock).
    refresh: AsyncMutex<Option<tokio::time::Instant>>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.rules.audience_required())
            .field("location", &self.inner.location)
            .field("keys", &self.key_ids())
            .finish_non_exhaustive()
    }
}

/// Builds a [`TokenVerifier`].
#[derive(Debug)]
pub struct TokenVerifierBuilder {
    issuer: String,
    rules: ClaimRules,
    location: JwksLocation,
    clock: SharedTimeSource,
    refresh_interval: Duration,
    min_refresh_interval: Duration,
    fetch_timeout: Duration,
}

impl TokenVerifierBuilder {
    /// The audience and the clock skew allowed for `exp` and `nbf` (default
    /// `pods.eks.amazonaws.com`, 30 s).
    pub fn claim_rules(mut self, configure: impl FnOnce(ClaimRules) -> ClaimRules) -> Self {
        self.rules = configure(self.rules);
        self
    }

    /// Where the keys are (default: the issuer's discovery document).
    pub fn jwks(mut self, location: JwksLocation) -> Self {
        self.location = location;
        self
    }

    /// The wall clock for `exp` and `nbf`.
    pub fn clock(mut self, clock: SharedTimeSource) -> Self {
        self.clock = clock;
        self
    }

    /// How often the keys are re-read (default 1 h; zero turns scheduled refreshes off).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Least time between refreshes caused by unknown `kid`s (default 30 s).
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// Timeout of each discovery or JWKS request (default 5 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Reads the keys once (an error if they cannot be read) and starts the scheduled refresh.
    ///
    /// Must be called within a tokio runtime.
    pub async fn build(self) -> Result<TokenVerifier, VerifyError> {
        let http = reqwest::Client::builder()
            .timeout(self.fetch_timeout)
            .build()
            .map_err(|e| VerifyError::KeysUnavailable(e.to_string()))?;
        let inner = Arc::new(Inner {
            issuer: self.issuer,
            rules: self.rules,
            location: self.location,
            http,
            clock: self.clock,
            min_refresh_interval: self.min_refresh_interval,
            keys: RwLock::new(Arc::new(KeySet::default())),
            refresh: AsyncMutex::new(None),
        });
        let verifier = TokenVerifier { inner };
        verifier.refresh().await?;
        if !self.refresh_interval.is_zero() {
            tokio::spawn(scheduled_refresh(
                Arc::downgrade(&verifier.inner),
                self.refresh_interval,
            ));
        }
        Ok(verifier)
    }
}

/// Refreshes the keys every `interval` while the verifier lives.
async fn scheduled_refresh(inner: Weak<Inner>, interval: Duration) {
    super::every(inner, interval, |inner| async move {
        let verifier = TokenVerifier { inner };
        if let Err(error) = verifier.refresh().await {
            tracing::warn!(%error, "scheduled JWKS refresh failed; keeping the last keys");
        }
    })
    .await;
}

impl TokenVerifier {
    /// A builder for tokens issued by `issuer` (the cluster's `--service-account-issuer`).
    pub fn builder(issuer: impl Into<String>) -> TokenVerifierBuilder {
        TokenVerifierBuilder {
            issuer: issuer.into(),
            rules: ClaimRules::default(),
            location: JwksLocation::Discovery,
            clock: SharedTimeSource::default(),
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }

    /// The issuer tokens must name.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The `kid`s of the cached keys, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys().key_ids()
    }

    /// Verifies `token`'s signature and claims; on success, the pod it was issued to.
    pub async fn verify(&self, token: &ServiceAccountToken) -> Result<VerifiedPod, VerifyError> {
        let header = token.header();
        if !SUPPORTED_ALGORITHMS.contains(&header.alg.as_str()) {
            return Err(VerifyError::Signature(
                SignatureError::UnsupportedAlgorithm {
                    alg: header.alg.chars().take(MAX_REPORTED_HEADER_CHARS).collect(),
                },
            ));
        }
        let kid = header.kid.as_deref();
        if !self.keys().contains(kid) {
            self.refresh_for_unknown_kid().await?;
        }
        self.keys()
            .verify_signature(token, AlgorithmPolicy::KeyMayOmit)
            .map_err(VerifyError::from)?;
        self.check_claims(token)
    }

    fn keys(&self) -> Arc<KeySet> {
        match self.inner.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn check_claims(&self, token: &ServiceAccountToken) -> Result<VerifiedPod, VerifyError> {
        let claims = token.claims();
        if claims.iss.as_deref() != Some(self.inner.issuer.as_str()) {
            return Err(VerifyError::Issuer);
        }
        self.inner.rules.check(claims, self.inner.clock.now())?;
        let (namespace, service_account) =
            claims
                .service_account()
                .ok_or(VerifyError::Claims(ClaimError::PodClaims(
                    "sub is not a service account",
                )))?;
        let kubernetes = kubernetes_claim(claims)?;
        if kubernetes.namespace.as_deref() != Some(namespace.as_str()) {
            return Err(VerifyError::Claims(ClaimError::PodClaims(
                "namespace does not match sub",
            )));
        }
        if kubernetes
            .service_account
            .as_ref()
            .map(|sa| sa.name.as_str())
            != Some(service_account.as_str())
        {
            return Err(VerifyError::Claims(ClaimError::PodClaims(
                "service account does not match sub",
            )));
        }
        let pod = bound_pod(kubernetes)?;
        Ok(VerifiedPod {
            namespace,
            service_account,
            pod_name: pod.name.clone(),
            pod_uid: pod.uid.clone(),
        })
    }

    /// Refreshes for a `kid` not in the set, unless a refresh started within the minimum
    /// interval (then the caller sees the set that refresh produced). A failed refresh is
    /// [`VerifyError::KeysUnavailable`].
    async fn refresh_for_unknown_kid(&self) -> Result<(), VerifyError> {
        let mut last = self.inner.refresh.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.inner.min_refresh_interval) {
            return Ok(());
        }
        *last = Some(tokio::time::Instant::now());
        match self.load().await {
            Ok(keys) => {
                self.store(keys);
                Ok(())
            }
            // The key may be a real new one: answer "try again" (500), not "forged" (400). The
            // cached keys stay in use.
            Err(error) => {
                tracing::warn!(%error, "JWKS refresh for an unknown kid failed");
                Err(error)
            }
        }
    }

    /// Reads the keys now. On failure the cached keys stay in use and the error is returned.
    pub async fn refresh(&self) -> Result<(), VerifyError> {
        let mut last = self.inner.refresh.lock().await;
        *last = Some(tokio::time::Instant::now());
        match self.load().await {
            Ok(keys) => {
                self.store(keys);
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    fn store(&self, keys: KeySet) {
        tracing::debug!(keys = ?keys.key_ids(), "JWKS loaded");
        let keys = Arc::new(keys);
        match self.inner.keys.write() {
            Ok(mut slot) => *slot = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    async fn load(&self) -> Result<KeySet, VerifyError> {
        let document = match &self.inner.location {
            JwksLocation::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || std::fs::read(&path))
                    .await
                    .map_err(|e| VerifyError::KeysUnavailable(e.to_string()))?
                    .map_err(|e| VerifyError::KeysUnavailable(format!("JWKS file: {e}")))?
            }
            JwksLocation::Url(url) => self.fetch(url).await?,
            JwksLocation::Discovery => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.inner.issuer.trim_end_matches('/')
                );
                let discovery: Discovery = serde_json::from_slice(&self.fetch(&url).await?)
                    .map_err(|e| {
                        VerifyError::KeysUnavailable(format!("discovery document: {e}"))
                    })?;
                if discovery
                    .issuer
                    .as_deref()
                    .is_some_and(|issuer| issuer != self.inner.issuer)
                {
                    return Err(VerifyError::KeysUnavailable(
                        "the discovery document names another issuer".to_owned(),
                    ));
                }
                self.fetch(&discovery.jwks_uri).await?
            }
        };
        KeySet::parse(&document).map_err(|e| VerifyError::KeysUnavailable(e.to_string()))
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, VerifyError> {
        let unavailable =
            |e: reqwest::Error| VerifyError::KeysUnavailable(e.without_url().to_string());
        let mut response = self
            .inner
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(unavailable)?;
        if !response.status().is_success() {
            return Err(VerifyError::KeysUnavailable(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(VerifyError::KeysUnavailable(format!(
                    "{url} answered more than {MAX_DOCUMENT_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: Option<String>,
    jwks_uri: String,
}

/// Pod-uid continuity in self-managed mode: a rotated token takes over its pod's cached
/// credentials when it verifies here (signature, issuer, audience, times, pod claims) and
/// names the cached entry's issuer, namespace, service account and pod uid.
impl crate::cache::RotationValidator for TokenVerifier {
    fn validate<'a>(
        &'a self,
        token: &'a ServiceAccountToken,
        cached: &'a crate::cache::PodIdentity,
    ) -> crate::cache::BoxFuture<'a, crate::cache::RotationCheck> {
        use crate::cache::RotationCheck;
        Box::pin(async move {
            let pod = match self.verify(token).await {
                Ok(pod) => pod,
                Err(error) => return RotationCheck::Failure(error.to_string()),
            };
            let mismatch = if token.claims().iss != cached.issuer {
                Some("issuer")
            } else if pod.namespace.as_str() != cached.namespace {
                Some("namespace")
            } else if pod.service_account.as_str() != cached.service_account {
                Some("service account")
            } else if pod.pod_uid != cached.pod_uid {
                Some("pod uid")
            } else {
                None
            };
            match mismatch {
                Some(what) => RotationCheck::Failure(format!(
                    "rotated token names another {what} than the cached one"
                )),
                None => RotationCheck::Success,
            }
        })
    }
}
