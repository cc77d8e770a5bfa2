//! JSON Web Keys and JWT signatures: the part of token verification that the self-managed
//! verifier and the Kubernetes rotation verifier share.
//!
//! [`KeySet::parse`] reads a JWKS document (`{"keys": [...]}`); keys that are not RSA or EC
//! signing keys, or are malformed, are skipped (and logged) so one odd key does not take the
//! others down. [`KeySet::verify_signature`] checks a token's signature with the key its `kid`
//! names:
//!
//! - `alg` must be `RS256`, `ES256`, `ES384` or `ES512` (what Kubernetes signs with);
//! - the key's type (and curve) must fit `alg`, and its own `alg` and `use`, when present, must
//!   be that `alg` and `sig` ([`AlgorithmPolicy::KeyMustName`] also refuses keys without `alg`);
//! - RSA keys of 2048 to 8192 bits.
//!
//! The cryptography is `aws-lc-rs`, the provider the SDK's HTTPS client already links.
//!
//! [`ClaimRules`] (the audience and the leeway of the `exp`/`nbf` window) and [`ClaimError`] are
//! the claim checks both verifiers make after the signature.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_core::endpoint::AUDIENCE;
use pod_identity_core::token::{KubernetesClaims, NameUid, ServiceAccountToken, TokenClaims};
use serde::Deserialize;

/// The signing algorithms accepted (those Kubernetes uses for service-account tokens).
pub const SUPPORTED_ALGORITHMS: [&str; 4] = ["RS256", "ES256", "ES384", "ES512"];

/// Most characters of a token header field (`kid`, `alg`) an error repeats: key ids are short
/// (EKS's are 40 hex digits), so a 16 KiB `kid` does not become a 16 KiB log line.
pub const MAX_REPORTED_HEADER_CHARS: usize = 64;

/// `field` cut to [`MAX_REPORTED_HEADER_CHARS`] characters.
fn reported(field: &str) -> String {
    field.chars().take(MAX_REPORTED_HEADER_CHARS).collect()
}

/// Why a verified token's claims were refused: its audience, its time window or its
/// `kubernetes.io` pod claims. Both verifiers (self-managed and rotation) refuse with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// `aud` lacks the required audience.
    #[error("token audience does not include {audience}")]
    Audience {
        /// The audience required.
        audience: String,
    },
    /// `exp` is missing.
    #[error("token has no expiry")]
    NoExpiry,
    /// `exp` has passed.
    #[error("token is expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not valid yet")]
    NotValidYet,
    /// A `kubernetes.io` claim is missing or inconsistent.
    #[error("token lacks Kubernetes pod claims: {0}")]
    PodClaims(&'static str),
}

/// Allowed clock skew for `exp` and `nbf` unless configured.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// What a verified token's audience and time window are checked against; both verifiers
/// (self-managed and rotation) hold one, configured through their builders' `claim_rules`.
///
/// ```
/// use std::time::Duration;
/// use pod_identity_agent_lib::jwk::ClaimRules;
///
/// let rules = ClaimRules::new().audience("sts.amazonaws.com").leeway(Duration::from_secs(5));
/// assert_eq!(rules.audience_required(), "sts.amazonaws.com");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRules {
    audience: String,
    leeway: Duration,
}

impl Default for ClaimRules {
    fn default() -> Self {
        Self {
            audience: AUDIENCE.to_owned(),
            leeway: DEFAULT_LEEWAY,
        }
    }
}

impl ClaimRules {
    /// The audience `pods.eks.amazonaws.com` and [`DEFAULT_LEEWAY`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The audience tokens must carry (default `pods.eks.amazonaws.com`).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// Allowed clock skew for `exp` and `nbf` (default 30 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The audience tokens must carry.
    pub fn audience_required(&self) -> &str {
        &self.audience
    }

    /// Checks the audience and the `exp`/`nbf` window at `now`, with the leeway of clock skew.
    /// A far-future `exp` (up to year 292 billion) plus the leeway does not overflow.
    pub fn check(&self, claims: &TokenClaims, now: SystemTime) -> Result<(), ClaimError> {
        if !claims.has_audience(&self.audience) {
            return Err(ClaimError::Audience {
                audience: self.audience.clone(),
            });
        }
        let exp = claims.expires_at().ok_or(ClaimError::NoExpiry)?;
        if exp
            .checked_add(self.leeway)
            .is_some_and(|latest| now >= latest)
        {
            return Err(ClaimError::Expired);
        }
        if let Some(nbf) = claims.not_before()
            && now
                .checked_add(self.leeway)
                .is_some_and(|latest| latest < nbf)
        {
            return Err(ClaimError::NotValidYet);
        }
        Ok(())
    }
}

/// A verified token's `kubernetes.io` claim, which both verifiers require.
pub(crate) fn kubernetes_claim(claims: &TokenClaims) -> Result<&KubernetesClaims, ClaimError> {
    claims
        .kubernetes
        .as_ref()
        .ok_or(ClaimError::PodClaims("no kubernetes.io claim"))
}

/// The pod the `kubernetes.io` claim binds the token to; both verifiers require its name and
/// uid.
pub(crate) fn bound_pod(kubernetes: &KubernetesClaims) -> Result<&NameUid, ClaimError> {
    kubernetes
        .pod
        .as_ref()
        .filter(|pod| !pod.name.is_empty() && !pod.uid.is_empty())
        .ok_or(ClaimError::PodClaims("no pod name and uid"))
}

/// Why a signature was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// `alg` is not one of [`SUPPORTED_ALGORITHMS`].
    #[error("token signing algorithm {alg:?} is not supported")]
    UnsupportedAlgorithm {
        /// The token's `alg`.
        alg: String,
    },
    /// No key in the set has the token's `kid`.
    #[error("token signing key {kid:?} is not one of the cluster's keys")]
    UnknownKey {
        /// The token's `kid` (a public key id, not a secret), cut to its first
        /// [`MAX_REPORTED_HEADER_CHARS`] characters: it comes from the client, and is logged.
        kid: Option<String>,
    },
    /// The key with the token's `kid` is not usable with its `alg`.
    #[error("token signing key does not fit algorithm {alg}")]
    KeyMismatch {
        /// The token's `alg`.
        alg: String,
    },
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
}

/// Whether a key must name its `alg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlgorithmPolicy {
    /// A key without `alg` is used with any algorithm its type fits.
    KeyMayOmit,
    /// The token's `alg` must equal the key's `alg` (the API server's JWKS always names it).
    KeyMustName,
}

/// A JWKS document that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("JWKS document: {0}")]
pub struct JwksParseError(String);

/// The usable keys of a JWKS, by `kid` (a key without one is matched by tokens without one).
#[derive(Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    without_kid: Option<Arc<Key>>,
}

impl KeySet {
    /// Parses a JWKS document, skipping unusable keys; an error only if it is not a JWKS at all.
    pub fn parse(document: &[u8]) -> Result<Self, JwksParseError> {
        let set: JwkSet =
            serde_json::from_slice(document).map_err(|e| JwksParseError(e.to_string()))?;
        let mut keys = KeySet::default();
        for value in set.keys {
            let jwk = match serde_json::from_value::<Jwk>(value) {
                Ok(jwk) => jwk,
                Err(error) => {
                    tracing::warn!(%error, "skipping a malformed JWK");
                    continue;
                }
            };
            let kid = jwk.kid.clone();
            let key = match key_from(jwk) {
                Ok(key) => Arc::new(key),
                Err(reason) => {
                    tracing::warn!(?kid, reason, "skipping an unusable JWK");
                    continue;
                }
            };
            match kid {
                Some(kid) => {
                    keys.by_kid.insert(kid, key);
                }
                None => keys.without_kid = Some(key),
            }
        }
        Ok(keys)
    }

    /// The `kid`s of the keys, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.by_kid.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Whether no key is usable.
    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.without_kid.is_none()
    }

    /// Whether a key matches `kid` (`None`: a token without a `kid`).
    pub fn contains(&self, kid: Option<&str>) -> bool {
        self.find(kid).is_some()
    }

    /// Checks `token`'s signature with the key its `kid` names. The claims are not checked.
    pub fn verify_signature(
        &self,
        token: &ServiceAccountToken,
        policy: AlgorithmPolicy,
    ) -> Result<(), SignatureError> {
        let header = token.header();
        let alg =
            Algorithm::parse(&header.alg).ok_or_else(|| SignatureError::UnsupportedAlgorithm {
                alg: reported(&header.alg),
            })?;
        let kid = header.kid.as_deref();
        let key = self.find(kid).ok_or_else(|| SignatureError::UnknownKey {
            kid: kid.map(reported),
        })?;
        key.verify(alg, token.expose_secret(), policy)
    }

    fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => self.without_kid.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algorithm {
    Rs256,
    Es256,
    Es384,
    Es512,
}

impl Algorithm {
    fn parse(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "ES384" => Some(Self::Es384),
            "ES512" => Some(Self::Es512),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
        }
    }
}

/// One usable public key.
#[derive(Debug)]
struct Key {
    alg: Option<String>,
    material: KeyMaterial,
}

#[derive(Debug)]
enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point, `0x04 || x || y`, on `curve`.
    Ec {
        curve: Algorithm,
        point: Vec<u8>,
    },
}

impl Key {
    fn verify(
        &self,
        alg: Algorithm,
        raw_token: &str,
        policy: AlgorithmPolicy,
    ) -> Result<(), SignatureError> {
        let mismatch = || SignatureError::KeyMismatch {
            alg: alg.as_str().to_owned(),
        };
        match (self.alg.as_deref(), policy) {
            (Some(key_alg), _) if key_alg != alg.as_str() => return Err(mismatch()),
            (None, AlgorithmPolicy::KeyMustName) => return Err(mismatch()),
            _ => {}
        }
        // A decoded token has three segments.
        let (signed, signature) = raw_token
            .rsplit_once('.')
            .ok_or(SignatureError::BadSignature)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| SignatureError::BadSignature)?;
        let verified = match (&self.material, alg) {
            (KeyMaterial::Rsa { n, e }, Algorithm::Rs256) => RsaPublicKeyComponents { n, e }
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    signed.as_bytes(),
                    &signature,
                ),
            (KeyMaterial::Ec { curve, point }, _) if *curve == alg => {
                let algorithm: &'static signature::EcdsaVerificationAlgorithm = match alg {
                    Algorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Algorithm::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
                    Algorithm::Es512 => &signature::ECDSA_P521_SHA512_FIXED,
                    Algorithm::Rs256 => return Err(mismatch()),
                };
                UnparsedPublicKey::new(algorithm, point).verify(signed.as_bytes(), &signature)
            }
            _ => return Err(mismatch()),
        };
        verified.map_err(|_| SignatureError::BadSignature)
    }
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

fn key_from(jwk: Jwk) -> Result<Key, &'static str> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err("not a signing key");
    }
    let decode = |field: Option<String>| -> Result<Vec<u8>, &'static str> {
        URL_SAFE_NO_PAD
            .decode(field.ok_or("missing key parameter")?.trim_end_matches('='))
            .map_err(|_| "key parameter is not base64url")
    };
    let material = match jwk.kty.as_str() {
        "RSA" => {
            // aws-lc wants the big-endian integers without leading zeros.
            let strip = |bytes: Vec<u8>| {
                let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
                bytes[start..].to_vec()
            };
            let n = strip(decode(jwk.n)?);
            let e = strip(decode(jwk.e)?);
            if n.is_empty() || e.is_empty() {
                return Err("empty RSA parameter");
            }
            KeyMaterial::Rsa { n, e }
        }
        "EC" => {
            let (curve, size) = match jwk.crv.as_deref() {
                Some("P-256") => (Algorithm::Es256, 32),
                Some("P-384") => (Algorithm::Es384, 48),
                Some("P-521") => (Algorithm::Es512, 66),
                _ => return Err("unsupported curve"),
            };
            let (x, y) = (decode(jwk.x)?, decode(jwk.y)?);
            if x.len() != size || y.len() != size {
                return Err("EC coordinate of the wrong length");
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            KeyMaterial::Ec { curve, point }
        }
        _ => return Err("unsupported key type"),
    };
    Ok(Key {
        alg: jwk.alg,
        material,
    })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn odd_keys_are_skipped_and_good_ones_kept() {
        let document = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "short", "crv": "P-256", "x": "AQ", "y": "AQ"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "good", "n": "AAEC", "e": "AQAB"},
            {"kid": 7}
        ]});
        let keys = KeySet::parse(document.to_string().as_bytes()).unwrap();
        assert_eq!(keys.key_ids(), ["good"]);
        let Some(key) = keys.find(Some("good")) else {
            panic!("no key")
        };
        // Leading zeros are stripped.
        assert!(matches!(&key.material, KeyMaterial::Rsa { n, .. } if n == &[1, 2]));
    }

    #[test]
    fn an_unknown_kid_from_the_client_is_reported_cut_short() {
        let encode = |value: serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
        let claims = encode(serde_json::json!({"exp": 4_000_000_000_i64}));
        let header = encode(serde_json::json!({"alg": "RS256", "kid": "k".repeat(16 * 1024)}));
        let token = ServiceAccountToken::decode(&format!("{header}.{claims}.c2ln")).unwrap();
        let error = KeySet::default()
            .verify_signature(&token, AlgorithmPolicy::KeyMayOmit)
            .unwrap_err();
        assert_eq!(
            error,
            SignatureError::UnknownKey {
                kid: Some("k".repeat(MAX_REPORTED_HEADER_CHARS)),
            }
        );
        assert!(error.to_string().len() < 200, "{error}");
    }

    #[test]
    fn claim_rules_check_the_configured_audience_and_the_window_with_the_leeway() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        let mut claims = TokenClaims::default();
        claims.aud = vec!["sts.amazonaws.com".to_owned()];
        claims.exp = Some(1_000);
        claims.nbf = Some(100);
        let rules = ClaimRules::new();
        assert_eq!(
            rules.check(&claims, at(500)),
            Err(ClaimError::Audience {
                audience: "pods.eks.amazonaws.com".to_owned()
            })
        );
        let rules = rules.audience("sts.amazonaws.com");
        assert_eq!(rules.check(&claims, at(500)), Ok(()));
        // The default leeway is 30 s on either side.
        assert_eq!(rules.check(&claims, at(1_029)), Ok(()));
        assert_eq!(rules.check(&claims, at(1_030)), Err(ClaimError::Expired));
        assert_eq!(rules.check(&claims, at(70)), Ok(()));
        assert_eq!(rules.check(&claims, at(69)), Err(ClaimError::NotValidYet));
        let strict = rules.clone().leeway(Duration::ZERO);
        assert_eq!(strict.check(&claims, at(1_000)), Err(ClaimError::Expired));
        assert_eq!(strict.check(&claims, at(99)), Err(ClaimError::NotValidYet));
        // Neither a far-future `exp` nor the largest leeway overflows.
        claims.exp = Some(i64::MAX);
        let lenient = rules.leeway(Duration::MAX);
        assert_eq!(lenient.check(&claims, at(500)), Ok(()));
        claims.exp = None;
        assert_eq!(lenient.check(&claims, at(500)), Err(ClaimError::NoExpiry));
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(KeySet::parse(b"{\"nokeys\":[]}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
    }

    #[test]
    fn a_key_without_alg_is_refused_when_the_policy_requires_one() {
        let document =
            serde_json::json!({"keys": [{"kty": "RSA", "kid": "k", "n": "AAEC", "e": "AQAB"}]});
        let keys = KeySet::parse(document.to_string().as_bytes()).unwrap();
        let key = keys.find(Some("k")).unwrap();
        assert_eq!(
            key.verify(
                Algorithm::Rs256,
                "e30.e30.c2ln",
                AlgorithmPolicy::KeyMustName
            ),
            Err(SignatureError::KeyMismatch {
                alg: "RS256".into()
            })
        );
        assert_eq!(
            key.verify(
                Algorithm::Rs256,
                "e30.e30.c2ln",
                AlgorithmPolicy::KeyMayOmit
            ),
            Err(SignatureError::BadSignature)
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_document_never_panics(document in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = KeySet::parse(&document);
        }

        #[test]
        fn any_jwk_fields_and_signature_never_panic(
            kty in "(RSA|EC|oct|)",
            crv in "(P-256|P-384|P-521|x)",
            a in "[A-Za-z0-9_=-]{0,120}",
            b in "[A-Za-z0-9_=-]{0,120}",
            signature in "[A-Za-z0-9_=.-]{0,200}",
        ) {
            let document = serde_json::json!({"keys": [
                {"kty": kty, "kid": "k", "crv": crv, "n": a, "e": b, "x": a, "y": b}
            ]});
            if let Ok(keys) = KeySet::parse(document.to_string().as_bytes())
                && let Some(key) = keys.find(Some("k"))
            {
                for alg in SUPPORTED_ALGORITHMS {
                    let alg = Algorithm::parse(alg).expect("a supported algorithm");
                    let token = format!("e30.e30.{signature}");
                    proptest::prop_assert!(key.verify(alg, &token, AlgorithmPolicy::KeyMayOmit).is_err());
                }
            }
        }
    }

    #[test]
    fn only_kubernetes_algorithms_are_supported() {
        for alg in SUPPORTED_ALGORITHMS {
            assert_eq!(Algorithm::parse(alg).map(Algorithm::as_str), Some(alg));
        }
        for alg in ["none", "HS256", "RS384", "PS256", "EdDSA", "rs256"] {
            assert_eq!(Algorithm::parse(alg), None, "{alg}");
        }
    }
}
