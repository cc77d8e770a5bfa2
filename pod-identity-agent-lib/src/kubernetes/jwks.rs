//! [`RotationVerifier`]: checks a pod's rotated service-account token locally, against the API
//! server's keys, so a pod keeps its cached credentials through kubelet's token rotation
//! without a call to EKS Auth.
//!
//! # The checks ([`RotationVerifier::verify`])
//!
//! 1. `alg` is `RS256`, `ES256`, `ES384` or `ES512`, and `kid` is present and looks like a
//!    Kubernetes key id (1 to 128 characters of the base64url alphabet): a malformed `kid` is
//!    refused before any key lookup, so it cannot cause a refresh;
//! 2. the key with that `kid` names an `alg` equal to the token's, and the signature verifies;
//! 3. `aud` contains the configured audience (default `pods.eks.amazonaws.com`);
//! 4. `exp` is present and not passed, `nbf` not in the future (leeway default 30 s): the
//!    [`ClaimRules`] of [`claim_rules`](RotationVerifierBuilder::claim_rules);
//! 5. the `kubernetes.io` claim names the namespace, the service account and the pod (name and
//!    uid).
//!
//! [`RotationVerifier::verify_rotation`] adds what the reference agent leaves out: the rotated
//! token must name the same issuer, namespace, service account and pod uid as the token the
//! cached credentials were issued for ([`PodIdentity`]). [`RotationVerifier::validate_rotation`]
//! also asks the [`VersionGate`] first and returns a [`LocalValidation`] whose
//! [`result`](LocalValidation::result) is the metric label: `success`, `failure` or `skipped`.
//! On anything but `success` the caller goes to EKS Auth as for a new token; a token that fails
//! here never gets the cached credentials.
//!
//! # The keys
//!
//! `GET /openid/v1/jwks` with the agent's own service-account token (Kubernetes binds
//! `system:service-account-issuer-discovery` to every service account by default):
//!
//! - at start; when the API server cannot be reached, the copy on disk is used;
//! - again when older than the key TTL (default 1 h), in the background, the current keys
//!   serving meanwhile;
//! - when a token names a `kid` the keys lack: at most one refresh per minimum interval
//!   (default 30 s), and concurrent callers wait for that one refresh instead of each starting
//!   their own or failing;
//! - a failed refresh keeps the last good keys: an unreachable API server does not stop
//!   validation.
//!
//! Every document fetched is written to disk (default [`DEFAULT_CACHE_PATH`], the reference's
//! path) as it was received, through a temporary file in the same directory renamed over the
//! old one, mode 0600, only when it changed.

use aws_smithy_async::time::SharedTimeSource;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use pod_identity_core::token::ServiceAccountToken;
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

use super::client::{ApiError, KubeClient};
use super::version::VersionGate;
use crate::cache::PodIdentity;
use crate::jwk::{
    AlgorithmPolicy, ClaimError, ClaimRules, KeySet, SUPPORTED_ALGORITHMS, SignatureError,
    bound_pod, kubernetes_claim,
};

/// The API server's key endpoint.
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// Where the keys are kept on disk unless configured (the reference agent's path).
pub const DEFAULT_CACHE_PATH: &str = "/var/lib/eks-pod-identity-agent/jwks-cache.json";
/// How long fetched keys are used before they are fetched again.
pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(60 * 60);
/// The least time between two refreshes caused by unknown `kid`s or old keys.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Why a token was not accepted locally.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The audience, the time window or the pod claims.
    #[error(transparent)]
    Claims(#[from] ClaimError),
    /// The `kid` is missing or not shaped like a Kubernetes key id.
    #[error("token has no usable key id")]
    KeyId,
    /// The signature, its algorithm or its key.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The token is valid but not for the cached entry's pod.
    #[error("rotated token names another {0} than the cached one")]
    Mismatch(&'static str),
    /// No keys could be fetched, and none are cached or on disk.
    #[error("no signing keys of the cluster: {0}")]
    KeysUnavailable(String),
}

/// What a verified token says about its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `iss`, when present.
    pub issuer: Option<String>,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's service account.
    pub service_account: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's uid.
    pub pod_uid: String,
}

/// The outcome of a local validation, with its metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalValidation {
    /// The rotated token is valid and belongs to the cached entry's pod.
    Success(VerifiedToken),
    /// It is not (or the keys could not be had): go to EKS Auth.
    Failure(VerifyError),
    /// Validation did not run (the version gate is closed): go to EKS Auth.
    Skipped,
}

impl LocalValidation {
    /// `success`, `failure` or `skipped`.
    pub fn result(&self) -> &'static str {
        match self {
            Self::Success(_) => "success",
            Self::Failure(_) => "failure",
            Self::Skipped => "skipped",
        }
    }
}

/// Where the keys in use came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeysSource {
    /// The API server.
    ApiServer,
    /// The copy on disk (the API server was unreachable).
    Disk,
    /// Nowhere yet: every validation fails until a fetch succeeds.
    None,
}

/// Verifies rotated tokens against the API server's keys; cheap to clone.
#[derive(Clone)]
pub struct RotationVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    keys: RwLock<Arc<Keys>>,
    /// Serialises refreshes; holds when the last one started.
    refresh: AsyncMutex<Option<Instant>>,
}

struct Keys {
    set: KeySet,
    document: Vec<u8>,
    /// When fetched from the API server; `None` for keys from disk (due for a refresh).
    fetched: Option<Instant>,
    source: KeysSource,
    generation: u64,
}

impl fmt::Debug for RotationVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotationVerifier")
            .field("audience", &self.inner.settings.rules.audience_required())
            .field("keys", &self.key_ids())
            .field("source", &self.keys_source())
            .finish_non_exhaustive()
    }
}

/// Builds a [`RotationVerifier`].
#[derive(Debug)]
pub struct RotationVerifierBuilder {
    settings: Settings,
}

/// What a [`RotationVerifierBuilder`] configures, and the verifier keeps.
#[derive(Debug)]
struct Settings {
    client: KubeClient,
    gate: Option<VersionGate>,
    rules: ClaimRules,
    key_ttl: Duration,
    min_refresh_interval: Duration,
    cache_path: Option<PathBuf>,
    clock: SharedTimeSource,
}

impl RotationVerifierBuilder {
    /// Validation runs only when this gate is open (default: no gate).
    pub fn version_gate(mut self, gate: VersionGate) -> Self {
        self.settings.gate = Some(gate);
        self
    }

    /// The audience and the clock skew allowed for `exp` and `nbf` (default
    /// `pods.eks.amazonaws.com`, 30 s).
    pub fn claim_rules(mut self, configure: impl FnOnce(ClaimRules) -> ClaimRules) -> Self {
        self.settings.rules = configure(self.settings.rules);
        self
    }

    /// How long fetched keys are used before a background refresh (default 1 h).
    pub fn key_ttl(mut self, ttl: Duration) -> Self {
        self.settings.key_ttl = ttl;
        self
    }

    /// Least time between refreshes (default 30 s).
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.settings.min_refresh_interval = interval;
        self
    }

    /// Where the keys are kept on disk (default [`DEFAULT_CACHE_PATH`]); `None`: nowhere.
    pub fn cache_path(mut self, path: Option<PathBuf>) -> Self {
        self.settings.cache_path = path;
        self
    }

    /// The wall clock for `exp` and `nbf`.
    pub fn clock(mut self, clock: SharedTimeSource) -> Self {
        self.settings.clock = clock;
        self
    }

    /// Fetches the keys (else reads the disk copy; else starts without keys, logged) and
    /// returns the verifier. Must be called within a tokio runtime.
    pub async fn build(self) -> RotationVerifier {
        let verifier = RotationVerifier {
            inner: Arc::new(Inner {
                settings: self.settings,
                keys: RwLock::new(Arc::new(Keys {
                    set: KeySet::default(),
                    document: Vec::new(),
                    fetched: None,
                    source: KeysSource::None,
                    generation: 0,
                })),
                refresh: AsyncMutex::new(None),
            }),
        };
        // The start does not count against the refresh interval: a key published moments
        // before the agent started is fetched on first sight.
        let last = verifier.inner.refresh.lock().await;
        match verifier.fetch().await {
            Ok((set, document)) => verifier.store(set, document, KeysSource::ApiServer).await,
            Err(error) => {
                tracing::warn!(%error, "cannot fetch the cluster's signing keys; trying the disk copy");
                match verifier.read_disk_copy().await {
                    Ok(Some((set, document))) => {
                        tracing::info!(keys = ?set.key_ids(), "using the signing keys from the disk copy");
                        verifier.store(set, document, KeysSource::Disk).await;
                    }
                    Ok(None) => tracing::warn!(
                        "no signing keys: rotated tokens go to EKS Auth until the API server answers"
                    ),
                    Err(error) => tracing::warn!(
                        %error,
                        "the disk copy of the signing keys is unusable: rotated tokens go to EKS Auth until the API server answers"
                    ),
                }
            }
        }
        drop(last);
        verifier
    }
}

impl RotationVerifier {
    /// A builder fetching keys through `client`.
    pub fn builder(client: KubeClient) -> RotationVerifierBuilder {
        RotationVerifierBuilder {
            settings: Settings {
                client,
                gate: None,
                rules: ClaimRules::default(),
                key_ttl: DEFAULT_KEY_TTL,
                min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
                cache_path: Some(PathBuf::from(DEFAULT_CACHE_PATH)),
                clock: SharedTimeSource::default(),
            },
        }
    }

    /// The `kid`s of the keys in use, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys().set.key_ids()
    }

    /// Where the keys in use came from.
    pub fn keys_source(&self) -> KeysSource {
        self.keys().source
    }

    /// Asks the version gate (if any), then [`verify_rotation`](Self::verify_rotation).
    pub async fn validate_rotation(
        &self,
        token: &ServiceAccountToken,
        cached: &PodIdentity,
    ) -> LocalValidation {
        if let Some(gate) = &self.inner.settings.gate
            && !gate.answer().await.is_enabled()
        {
            return LocalValidation::Skipped;
        }
        match self.verify_rotation(token, cached).await {
            Ok(verified) => LocalValidation::Success(verified),
            Err(error) => LocalValidation::Failure(error),
        }
    }

    /// [`verify`](Self::verify), then the token must name `cached`'s issuer, namespace, service
    /// account and pod uid.
    pub async fn verify_rotation(
        &self,
        token: &ServiceAccountToken,
        cached: &PodIdentity,
    ) -> Result<VerifiedToken, VerifyError> {
        let verified = self.verify(token).await?;
        if verified.issuer.is_none() || verified.issuer != cached.issuer {
            return Err(VerifyError::Mismatch("issuer"));
        }
        if verified.namespace != cached.namespace {
            return Err(VerifyError::Mismatch("namespace"));
        }
        if verified.service_account != cached.service_account {
            return Err(VerifyError::Mismatch("service account"));
        }
        if verified.pod_uid != cached.pod_uid {
            return Err(VerifyError::Mismatch("pod uid"));
        }
        Ok(verified)
    }

    /// Checks `token`'s signature and claims (see the [module docs](self)).
    pub async fn verify(&self, token: &ServiceAccountToken) -> Result<VerifiedToken, VerifyError> {
        let kid = checked_key_id(token)?;
        let mut keys = self.keys();
        if !keys.set.contains(Some(kid)) {
            self.refresh_after(keys.generation).await;
            keys = self.keys();
            if keys.source == KeysSource::None {
                return Err(VerifyError::KeysUnavailable(
                    "the API server has not answered and there is no disk copy".to_owned(),
                ));
            }
        } else if keys
            .fetched
            .is_none_or(|at| at.elapsed() >= self.inner.settings.key_ttl)
        {
            self.refresh_in_background();
        }
        let settings = &self.inner.settings;
        verify_token(&keys.set, token, &settings.rules, settings.clock.now())
    }

    fn keys(&self) -> Arc<Keys> {
        match self.inner.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Refreshes unless another caller did since `generation` was seen, or a refresh started
    /// within the minimum interval; concurrent callers queue on the lock and so share one.
    async fn refresh_after(&self, generation: u64) {
        let mut last = self.inner.refresh.lock().await;
        if self.keys().generation != generation {
            return;
        }
        if last.is_some_and(|at| at.elapsed() < self.inner.settings.min_refresh_interval) {
            return;
        }
        *last = Some(Instant::now());
        self.refresh_locked().await;
    }

    /// Refreshes old keys without making the caller wait; skipped when a refresh is running or
    /// started within the minimum interval.
    fn refresh_in_background(&self) {
        let verifier = self.clone();
        tokio::spawn(async move {
            let Ok(mut last) = verifier.inner.refresh.try_lock() else {
                return;
            };
            if last.is_some_and(|at| at.elapsed() < verifier.inner.settings.min_refresh_interval) {
                return;
            }
            *last = Some(Instant::now());
            verifier.refresh_locked().await;
        });
    }

    async fn refresh_locked(&self) {
        match self.fetch().await {
            Ok((set, document)) => self.store(set, document, KeysSource::ApiServer).await,
            Err(error) => {
                tracing::warn!(%error, "refreshing the cluster's signing keys failed; keeping the last keys");
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Vec<u8>), ApiError> {
        let document = self
            .inner
            .settings
            .client
            .get_bytes(JWKS_PATH, MAX_JWKS_BYTES)
            .await?;
        let set = KeySet::parse(&document).map_err(|e| ApiError::Decode(e.to_string()))?;
        if set.is_empty() {
            return Err(ApiError::Decode("a JWKS without usable keys".to_owned()));
        }
        Ok((set, document))
    }

    async fn store(&self, set: KeySet, document: Vec<u8>, source: KeysSource) {
        let previous = self.keys();
        let changed = previous.document != document;
        if changed {
            tracing::info!(keys = ?set.key_ids(), ?source, "cluster signing keys loaded");
        }
        let keys = Arc::new(Keys {
            set,
            document,
            fetched: (source == KeysSource::ApiServer).then(Instant::now),
            source,
            generation: previous.generation + 1,
        });
        match self.inner.keys.write() {
            Ok(mut slot) => *slot = Arc::clone(&keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&keys),
        }
        if changed
            && source == KeysSource::ApiServer
            && let Some(path) = self.inner.settings.cache_path.clone()
        {
            let document = keys.document.clone();
            let written =
                tokio::task::spawn_blocking(move || write_atomically(&path, &document)).await;
            let error = match written {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error.to_string(),
                Err(error) => error.to_string(),
            };
            tracing::warn!(error, "cannot write the disk copy of the signing keys");
        }
    }

    async fn read_disk_copy(&self) -> Result<Option<(KeySet, Vec<u8>)>, String> {
        let Some(path) = self.inner.settings.cache_path.clone() else {
            return Ok(None);
        };
        let read = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| e.to_string())?;
        let document = match read {
            Ok(document) => document,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        let set = KeySet::parse(&document).map_err(|e| e.to_string())?;
        if set.is_empty() {
            return Err("no usable keys".to_owned());
        }
        Ok(Some((set, document)))
    }
}

/// The checks of [`RotationVerifier::verify`] against a given key set and wall-clock time,
/// without fetching keys.
pub fn verify_token(
    keys: &KeySet,
    token: &ServiceAccountToken,
    rules: &ClaimRules,
    now: SystemTime,
) -> Result<VerifiedToken, VerifyError> {
    checked_key_id(token)?;
    keys.verify_signature(token, AlgorithmPolicy::KeyMustName)?;
    let claims = token.claims();
    rules.check(claims, now)?;
    let kubernetes = kubernetes_claim(claims)?;
    let namespace = kubernetes
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(VerifyError::Claims(ClaimError::PodClaims("no namespace")))?;
    let service_account = kubernetes
        .service_account
        .as_ref()
        .map(|sa| sa.name.clone())
        .filter(|n| !n.is_empty())
        .ok_or(VerifyError::Claims(ClaimError::PodClaims(
            "no service account",
        )))?;
    let pod = bound_pod(kubernetes)?;
    Ok(VerifiedToken {
        issuer: claims.iss.clone(),
        namespace,
        service_account,
        pod_name: pod.name.clone(),
        pod_uid: pod.uid.clone(),
    })
}

/// The token's `kid`, once its `alg` is supported and the `kid` is well formed.
fn checked_key_id(token: &ServiceAccountToken) -> Result<&str, VerifyError> {
    let header = token.header();
    if !SUPPORTED_ALGORITHMS.contains(&header.alg.as_str()) {
        return Err(SignatureError::UnsupportedAlgorithm {
            alg: header.alg.clone(),
        }
        .into());
    }
    header
        .kid
        .as_deref()
        .filter(|kid| is_key_id(kid))
        .ok_or(VerifyError::KeyId)
}

/// A Kubernetes key id: base64url of a key digest (43 characters for SHA-256); 1 to 128
/// characters of the base64url alphabet are accepted.
fn is_key_id(kid: &str) -> bool {
    (1..=128).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Writes `bytes` to `path` through a temporary file in the same directory (mode 0600) renamed
/// over it, so a reader sees the old file or the new one, never a part.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let directory = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the key cache path names no file"))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(".tmp");
    let temporary = directory.join(temporary_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let mut file = options.open(&temporary)?;
        // A leftover temporary file keeps its old mode through `truncate`.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_base64url_of_bounded_length() {
        assert!(is_key_id("Zb6e6ZtxKdoqdKSU0aW2Ql1N4Gq_XqfC6pO4BZ3SxAI"));
        assert!(is_key_id("rsa-1"));
        for kid in ["", "a b", "../etc", "k\"", &"a".repeat(129)] {
            assert!(!is_key_id(kid), "{kid}");
        }
    }

    #[test]
    fn the_disk_copy_is_replaced_whole_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("jwks-cache.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [std::ffi::OsString::from("jwks-cache.json")]);
    }
}
