//! [`VersionGate`]: local validation of rotated tokens only on Kubernetes 1.34 and later, as
//! the reference agent does, read from `GET /version` (kube's `Client::apiserver_version`, within
//! the client's request timeout).
//!
//! EKS reports minors such as `"34+"`; the leading digits count, and when `minor` has none the
//! `gitVersion` (`v1.34.2-eks-...`) is read instead. The answer is cached for
//! [`DEFAULT_ANSWER_TTL`] (a control-plane upgrade is seen within that time), a failed lookup
//! is retried after [`DEFAULT_RETRY_INTERVAL`] at the earliest and meanwhile answers
//! [`GateAnswer::Unknown`], which callers treat as "skip" (fall back to EKS Auth). Concurrent
//! callers share one lookup.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

use super::client::{ApiError, KubeClient};

/// The first Kubernetes version whose tokens are validated locally.
pub const MINIMUM_VERSION: KubernetesVersion = KubernetesVersion {
    major: 1,
    minor: 34,
};
/// How long a version read from the API server is believed.
pub const DEFAULT_ANSWER_TTL: Duration = Duration::from_secs(60 * 60);
/// The least time between two lookups after a failed one.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// A Kubernetes `major.minor` version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KubernetesVersion {
    /// The major version (1).
    pub major: u32,
    /// The minor version.
    pub minor: u32,
}

impl PartialOrd for KubernetesVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KubernetesVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor).cmp(&(other.major, other.minor))
    }
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A `/version` document with no usable version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no Kubernetes version in {0:?}")]
pub struct VersionParseError(String);

impl KubernetesVersion {
    /// Reads a `GET /version` document (`major`, `minor`, `gitVersion`).
    pub fn from_version_document(document: &[u8]) -> Result<Self, VersionParseError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Info {
            #[serde(default)]
            major: String,
            #[serde(default)]
            minor: String,
            #[serde(default)]
            git_version: String,
        }
        let info: Info = serde_json::from_slice(document)
            .map_err(|_| VersionParseError("a document that is not /version".to_owned()))?;
        Self::from_parts(&info.major, &info.minor, &info.git_version)
    }

    /// The version from `/version`'s `major`, `minor` (`"34+"` is 34) and, when those have no
    /// number, its `gitVersion`.
    pub fn from_parts(
        major: &str,
        minor: &str,
        git_version: &str,
    ) -> Result<Self, VersionParseError> {
        if let (Some(major), Some(minor)) = (leading_number(major), leading_number(minor)) {
            return Ok(Self { major, minor });
        }
        git_version.parse()
    }
}

impl FromStr for KubernetesVersion {
    type Err = VersionParseError;

    /// `1.34`, `v1.34.2`, `v1.34.2-eks-113cf36`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || VersionParseError(s.chars().take(64).collect());
        let mut parts = s.trim_start_matches('v').split('.');
        let major = parts.next().and_then(leading_number).ok_or_else(error)?;
        let minor = parts.next().and_then(leading_number).ok_or_else(error)?;
        Ok(Self { major, minor })
    }
}

/// The number at the start of `s` (`"34+"` is 34); `None` without one.
fn leading_number(s: &str) -> Option<u32> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// What the gate says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GateAnswer {
    /// The cluster runs this version, at least the minimum.
    Enabled(KubernetesVersion),
    /// The cluster runs this version, older than the minimum.
    Disabled(KubernetesVersion),
    /// The version could not be read (recently); treat as disabled.
    Unknown,
}

impl GateAnswer {
    /// Whether local validation may run.
    pub fn is_enabled(self) -> bool {
        matches!(self, Self::Enabled(_))
    }
}

/// Answers whether the cluster is new enough, from a cached `GET /version`.
#[derive(Debug)]
pub struct VersionGate {
    client: KubeClient,
    minimum: KubernetesVersion,
    answer_ttl: Duration,
    retry_interval: Duration,
    answer: AsyncMutex<Option<(GateAnswer, Instant)>>,
}

impl VersionGate {
    /// A gate at [`MINIMUM_VERSION`] with the default intervals.
    pub fn new(client: KubeClient) -> Self {
        Self {
            client,
            minimum: MINIMUM_VERSION,
            answer_ttl: DEFAULT_ANSWER_TTL,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            answer: AsyncMutex::new(None),
        }
    }

    /// Another minimum version.
    pub fn minimum(mut self, minimum: KubernetesVersion) -> Self {
        self.minimum = minimum;
        self
    }

    /// How long a version read is believed (default 1 h) and how soon a failed lookup is
    /// retried (default 30 s).
    pub fn intervals(mut self, answer_ttl: Duration, retry_interval: Duration) -> Self {
        self.answer_ttl = answer_ttl;
        self.retry_interval = retry_interval;
        self
    }

    /// The gate's answer, looked up when the cached one is too old.
    pub async fn answer(&self) -> GateAnswer {
        let mut cached = self.answer.lock().await;
        if let Some((answer, at)) = *cached {
            let ttl = match answer {
                GateAnswer::Unknown => self.retry_interval,
                _ => self.answer_ttl,
            };
            if at.elapsed() < ttl {
                return answer;
            }
        }
        let answer = match self.lookup().await {
            Ok(version) if version >= self.minimum => GateAnswer::Enabled(version),
            Ok(version) => {
                tracing::info!(
                    %version, minimum = %self.minimum,
                    "Kubernetes is older than the minimum for local token validation; skipping it"
                );
                GateAnswer::Disabled(version)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the Kubernetes version; skipping local token validation");
                // A version read before stays good while the API server is away.
                match *cached {
                    Some((previous @ (GateAnswer::Enabled(_) | GateAnswer::Disabled(_)), _)) => {
                        previous
                    }
                    _ => GateAnswer::Unknown,
                }
            }
        };
        *cached = Some((answer, Instant::now()));
        answer
    }

    async fn lookup(&self) -> Result<KubernetesVersion, ApiError> {
        let info = self
            .client
            .call(self.client.kube().apiserver_version())
            .await?;
        KubernetesVersion::from_parts(&info.major, &info.minor, &info.git_version)
            .map_err(|e| ApiError::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eks_and_upstream_versions_parse() {
        let cases: [(&str, Option<(u32, u32)>); 6] = [
            (
                r#"{"major":"1","minor":"34+","gitVersion":"v1.34.2-eks-113cf36"}"#,
                Some((1, 34)),
            ),
            (
                r#"{"major":"1","minor":"33","gitVersion":"v1.33.0"}"#,
                Some((1, 33)),
            ),
            (
                r#"{"major":"","minor":"","gitVersion":"v1.35.0-rc.1"}"#,
                Some((1, 35)),
            ),
            (r#"{"gitVersion":"v1.30.1+k3s1"}"#, Some((1, 30))),
            (r#"{"major":"1"}"#, None),
            ("[]", None),
        ];
        for (document, expected) in cases {
            let parsed = KubernetesVersion::from_version_document(document.as_bytes()).ok();
            assert_eq!(parsed.map(|v| (v.major, v.minor)), expected, "{document}");
        }
    }

    #[test]
    fn versions_order_by_major_then_minor() {
        let v = |s: &str| s.parse::<KubernetesVersion>().unwrap();
        assert!(v("1.34") >= MINIMUM_VERSION);
        assert!(v("1.33") < MINIMUM_VERSION);
        assert!(v("v1.100.0") > MINIMUM_VERSION);
        assert!(v("2.0") > MINIMUM_VERSION);
    }

    proptest::proptest! {
        #[test]
        fn any_version_document_never_panics(document in proptest::collection::vec(proptest::num::u8::ANY, 0..256), text in ".{0,40}") {
            let _ = KubernetesVersion::from_version_document(&document);
            let _ = text.parse::<KubernetesVersion>();
        }
    }
}
