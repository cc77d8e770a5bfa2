//! Projected service-account tokens, decoded without verifying the signature.
//!
//! Contract: this is what the reference agent does (aws/eks-pod-identity-agent
//! `internal/validation/request.go` with golang-jwt v5.2.2 `ParseUnverified` into
//! `RegisteredClaims`, then `Validator.Validate`), with the same failure classes and texts:
//!
//! | check, in order | error | text after `Service account token ` |
//! |---|---|---|
//! | empty | [`TokenError::Empty`] | `cannot be empty` |
//! | larger than [`MAX_TOKEN_LEN`] (ours) | [`TokenError::TooLarge`] | `cannot be parsed: token is malformed: token is larger than 65536 bytes` |
//! | not three `.`-separated segments | [`TokenError::Malformed`] | `cannot be parsed: token is malformed: token contains an invalid number of segments` |
//! | header or claims not base64url / JSON | [`TokenError::Malformed`] | `cannot be parsed: token is malformed: could not base64 decode header: …` (`… JSON decode claim: …`) |
//! | `alg` missing or not a JWA name golang-jwt knows | [`TokenError::Unverifiable`] | `cannot be parsed: token is unverifiable: signing method (alg) is unspecified` (`… is unavailable`) |
//! | `exp` not after now / `nbf` after now ([`ServiceAccountToken::validate_time`]) | [`TokenError::Expired`], [`TokenError::NotValidYet`] | `failed basic claim validations: token is expired` |
//!
//! Decoding follows Go's rules: base64url without padding (CR and LF ignored), claims matched to
//! `iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti` case-insensitively with the last duplicate
//! winning, `aud` a string or an array of strings, numeric dates as JSON numbers or numeric
//! strings truncated to whole seconds, `null` meaning absent. The detail after `could not JSON
//! decode …:` imitates Go's `encoding/json` messages for the common cases. `kubernetes.io`
//! (namespace, service account, pod, node names and uids) is read leniently: a field of the
//! wrong shape is left out rather than rejected, since the reference ignores it.
//!
//! The decoder and its texts are hand-written on purpose: a JWT library would verify, reject or
//! word these cases differently, and the agent's 400 bodies must match golang-jwt's word for
//! word.
//!
//! The raw token is a [`SecretString`]: it never appears in `Debug`, `Display` or an error.

mod claims;
mod go_decode;

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::secret::SecretString;
use crate::time::to_epoch;

pub use claims::{KubernetesClaims, NameUid, TokenClaims, TokenHeader};

use claims::{claims_from, header_from};
use go_decode::{decode_segment, parse_object};

/// The largest token accepted, in bytes. Kubernetes tokens are a few KiB.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The `alg` values golang-jwt v5 registers; any other makes a token unverifiable.
pub const KNOWN_ALGORITHMS: [&str; 14] = [
    "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512", "none", "RS256", "RS384",
    "RS512", "PS256", "PS384", "PS512",
];

/// The `sub` prefix of a service-account token.
pub const SUBJECT_PREFIX: &str = "system:serviceaccount:";

/// A decoded, unverified projected service-account JWT. `Debug` never shows the raw token.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use pod_identity_core::token::{ServiceAccountToken, TokenError};
///
/// // {"alg":"RS256","kid":"k1"} . {"sub":"system:serviceaccount:default:app","exp":1700000000} . sig
/// let raw = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0\
///            .eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDphcHAiLCJleHAiOjE3MDAwMDAwMDB9.c2ln";
/// let token = ServiceAccountToken::decode(raw).unwrap();
/// assert_eq!(token.header().alg, "RS256");
/// let (ns, sa) = token.claims().service_account().unwrap();
/// assert_eq!((ns.as_str(), sa.as_str()), ("default", "app"));
/// assert!(token.validate_time(UNIX_EPOCH + Duration::from_secs(1_699_999_999)).is_ok());
/// let late = token.validate_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000)).unwrap_err();
/// assert_eq!(late, TokenError::Expired);
/// assert_eq!(late.to_string(), "Service account token failed basic claim validations: token is expired");
/// assert!(!format!("{token:?}").contains("c2ln"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccountToken {
    raw: SecretString,
    header: TokenHeader,
    claims: TokenClaims,
}

/// Why a token was refused. `Display` is the reference agent's 400 body (without the newline).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token (missing or empty `Authorization`).
    #[error("Service account token cannot be empty")]
    Empty,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error(
        "Service account token cannot be parsed: token is malformed: token is larger than {max} bytes",
        max = MAX_TOKEN_LEN
    )]
    TooLarge {
        /// The length received.
        len: usize,
    },
    /// Not a JWT: segments, base64 or JSON. `reason` is golang-jwt's text after
    /// `token is malformed: `.
    #[error("Service account token cannot be parsed: token is malformed: {reason}")]
    Malformed {
        /// What is wrong (never contains the token).
        reason: String,
    },
    /// `alg` missing or unknown. `reason` is golang-jwt's text after `token is unverifiable: `.
    #[error("Service account token cannot be parsed: token is unverifiable: {reason}")]
    Unverifiable {
        /// What is wrong.
        reason: String,
    },
    /// `exp` is not after the time of the check.
    #[error("Service account token failed basic claim validations: token is expired")]
    Expired,
    /// `nbf` is after the time of the check.
    #[error("Service account token failed basic claim validations: token is not valid yet")]
    NotValidYet,
    /// Both of the above (golang-jwt joins them).
    #[error(
        "Service account token failed basic claim validations: token is expired, token is not valid yet"
    )]
    ExpiredAndNotValidYet,
}

impl TokenError {
    /// The agent's HTTP status for this error: always 400.
    pub fn status(&self) -> u16 {
        400
    }

    fn malformed(reason: impl Into<String>) -> Self {
        TokenError::Malformed {
            reason: reason.into(),
        }
    }
}

impl ServiceAccountToken {
    /// Decodes `raw` without verifying its signature (see the module docs for the checks).
    pub fn decode(raw: &str) -> Result<Self, TokenError> {
        Self::decode_bytes(raw.as_bytes())
    }

    /// Decodes a raw `Authorization` header value, which HTTP allows to hold non-UTF-8 bytes.
    /// The checks and texts are those of [`decode`](Self::decode); a token that passes them
    /// but is not UTF-8 (only possible in the signature, which the reference never decodes) is
    /// [`TokenError::Malformed`] with reason `token is not valid UTF-8`.
    pub fn decode_bytes(raw: &[u8]) -> Result<Self, TokenError> {
        if raw.is_empty() {
            return Err(TokenError::Empty);
        }
        if raw.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge { len: raw.len() });
        }
        let mut parts = raw.split(|b| *b == b'.');
        let (Some(header_b64), Some(claims_b64), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::malformed(
                "token contains an invalid number of segments",
            ));
        };

        let header_bytes = decode_segment(header_b64)
            .map_err(|e| TokenError::malformed(format!("could not base64 decode header: {e}")))?;
        let header_object = parse_object(&header_bytes, "map[string]interface {}")
            .map_err(|e| TokenError::malformed(format!("could not JSON decode header: {e}")))?;

        let claims_bytes = decode_segment(claims_b64)
            .map_err(|e| TokenError::malformed(format!("could not base64 decode claim: {e}")))?;
        let claims_object = parse_object(&claims_bytes, "jwt.RegisteredClaims")
            .map_err(|e| TokenError::malformed(format!("could not JSON decode claim: {e}")))?;
        let claims = claims_from(claims_object.unwrap_or_default())
            .map_err(|e| TokenError::malformed(format!("could not JSON decode claim: {e}")))?;

        let header = header_from(header_object.unwrap_or_default())?;
        Ok(ServiceAccountToken {
            raw: SecretString::new(
                std::str::from_utf8(raw)
                    .map_err(|_| TokenError::malformed("token is not valid UTF-8"))?,
            ),
            header,
            claims,
        })
    }

    /// The JOSE header.
    pub fn header(&self) -> &TokenHeader {
        &self.header
    }

    /// The claims.
    pub fn claims(&self) -> &TokenClaims {
        &self.claims
    }

    /// The raw token, for the one place it leaves the process.
    pub fn expose_secret(&self) -> &str {
        self.raw.expose_secret()
    }

    /// The raw token as a secret.
    pub fn secret(&self) -> &SecretString {
        &self.raw
    }

    /// The reference agent's claim check at `now`: `now` must be strictly before `exp` and not
    /// before `nbf`; absent claims pass. `iat`, `aud`, `iss` and `sub` are not checked.
    pub fn validate_time(&self, now: SystemTime) -> Result<(), TokenError> {
        validate_times(self.claims.exp, self.claims.nbf, now)
    }
}

/// The token time rule on bare claims (epoch seconds), for holders that keep only a token's
/// `exp` and `nbf`: `now` must be strictly before `exp` and not before `nbf`; absent claims pass.
/// [`ServiceAccountToken::validate_time`] is this rule on a decoded token.
///
/// ```
/// use std::time::{Duration, SystemTime};
///
/// use pod_identity_core::token::{TokenError, validate_times};
///
/// let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
/// assert_eq!(validate_times(Some(100), None, at(99)), Ok(()));
/// assert_eq!(validate_times(Some(100), None, at(100)), Err(TokenError::Expired));
/// assert_eq!(validate_times(None, Some(100), at(99)), Err(TokenError::NotValidYet));
/// ```
pub fn validate_times(
    exp: Option<i64>,
    nbf: Option<i64>,
    now: SystemTime,
) -> Result<(), TokenError> {
    let (now_secs, _) = to_epoch(now);
    // exp and nbf are whole seconds, so comparing whole seconds is exact.
    let expired = exp.is_some_and(|exp| now_secs >= exp);
    let not_yet = nbf.is_some_and(|nbf| now_secs < nbf);
    match (expired, not_yet) {
        (false, false) => Ok(()),
        (true, false) => Err(TokenError::Expired),
        (false, true) => Err(TokenError::NotValidYet),
        (true, true) => Err(TokenError::ExpiredAndNotValidYet),
    }
}

impl FromStr for ServiceAccountToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::decode(s)
    }
}

impl fmt::Debug for ServiceAccountToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountToken")
            .field("raw", &self.raw)
            .field("header", &self.header)
            .field("claims", &self.claims)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn jwt(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    fn decode_err(header: &str, claims: &str) -> String {
        ServiceAccountToken::decode(&jwt(header, claims))
            .unwrap_err()
            .to_string()
    }

    const H: &str = r#"{"alg":"RS256","kid":"abc"}"#;

    #[test]
    fn full_kubernetes_token() {
        let claims = r#"{"aud":["pods.eks.amazonaws.com"],"exp":1700086400,"iat":1700000000,
            "iss":"https://oidc.eks.us-west-2.amazonaws.com/id/EXAMPLE","jti":"j-1",
            "kubernetes.io":{"namespace":"default","node":{"name":"ip-10-0-0-1","uid":"n-uid"},
              "pod":{"name":"app-1","uid":"p-uid"},"serviceaccount":{"name":"app","uid":"s-uid"}},
            "nbf":1700000000,"sub":"system:serviceaccount:default:app"}"#;
        let token = ServiceAccountToken::decode(&jwt(H, claims)).unwrap();
        assert_eq!(token.header().kid.as_deref(), Some("abc"));
        let c = token.claims();
        assert_eq!(c.aud, ["pods.eks.amazonaws.com"]);
        assert!(c.has_audience("pods.eks.amazonaws.com"));
        assert_eq!(
            (c.exp, c.iat, c.nbf),
            (
                Some(1_700_086_400),
                Some(1_700_000_000),
                Some(1_700_000_000)
            )
        );
        assert_eq!(c.jti.as_deref(), Some("j-1"));
        let k = c.kubernetes.as_ref().unwrap();
        assert_eq!(k.namespace.as_deref(), Some("default"));
        assert_eq!(k.pod.as_ref().unwrap().uid, "p-uid");
        assert_eq!(k.node.as_ref().unwrap().name, "ip-10-0-0-1");
        assert_eq!(k.service_account.as_ref().unwrap().name, "app");
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(
            token.validate_time(at(1_699_999_999)),
            Err(TokenError::NotValidYet)
        );
        assert_eq!(token.validate_time(at(1_700_000_000)), Ok(()));
        assert_eq!(
            token.validate_time(at(1_700_086_399) + Duration::from_millis(999)),
            Ok(())
        );
        assert_eq!(
            token.validate_time(at(1_700_086_400)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn reference_texts() {
        let seg = |raw: &str| ServiceAccountToken::decode(raw).unwrap_err().to_string();
        let segments = "Service account token cannot be parsed: token is malformed: token contains an invalid number of segments";
        assert_eq!(seg("abc"), segments);
        assert_eq!(seg("a.b"), segments);
        assert_eq!(seg("a.b.c.d"), segments);
        assert_eq!(seg(""), "Service account token cannot be empty");
        assert_eq!(
            seg("a*.b.c"),
            "Service account token cannot be parsed: token is malformed: could not base64 decode header: illegal base64 data at input byte 1"
        );
        assert_eq!(
            seg("eyJ=.b.c"),
            "Service account token cannot be parsed: token is malformed: could not base64 decode header: illegal base64 data at input byte 3"
        );
        assert_eq!(
            decode_err("{", "{}"),
            "Service account token cannot be parsed: token is malformed: could not JSON decode header: unexpected end of JSON input"
        );
        assert_eq!(
            decode_err("x", "{}"),
            "Service account token cannot be parsed: token is malformed: could not JSON decode header: invalid character 'x' looking for beginning of value"
        );
        assert_eq!(
            decode_err(r#"{"alg":"RS256",}"#, "{}"),
            "Service account token cannot be parsed: token is malformed: could not JSON decode header: invalid character '}' looking for beginning of object key string"
        );
        assert_eq!(
            decode_err(H, r#"{"aud":["a",]}"#),
            "Service account token cannot be parsed: token is malformed: could not JSON decode claim: invalid character ']' looking for beginning of value"
        );
        assert_eq!(
            decode_err(r#"{"alg" "RS256"}"#, "{}"),
            "Service account token cannot be parsed: token is malformed: could not JSON decode header: invalid character '\"' after object key"
        );
        assert_eq!(
            decode_err(H, "{} x"),
            "Service account token cannot be parsed: token is malformed: could not JSON decode claim: invalid character 'x' after top-level value"
        );
        assert_eq!(
            decode_err("[]", "{}"),
            "Service account token cannot be parsed: token is malformed: could not JSON decode header: json: cannot unmarshal array into Go value of type map[string]interface {}"
        );
        assert_eq!(
            decode_err(r#"{}"#, "{}"),
            "Service account token cannot be parsed: token is unverifiable: signing method (alg) is unspecified"
        );
        assert_eq!(
            decode_err(r#"{"alg":"RS999"}"#, "{}"),
            "Service account token cannot be parsed: token is unverifiable: signing method (alg) is unavailable"
        );
        assert_eq!(
            decode_err(H, r#"{"iss":1}"#),
            "Service account token cannot be parsed: token is malformed: could not JSON decode claim: json: cannot unmarshal number into Go struct field RegisteredClaims.iss of type string"
        );
        assert_eq!(
            decode_err(H, r#"{"aud":5}"#),
            "Service account token cannot be parsed: token is malformed: could not JSON decode claim: invalid type for claim"
        );
        assert_eq!(
            decode_err(H, r#"{"exp":true}"#),
            "Service account token cannot be parsed: token is malformed: could not JSON decode claim: could not parse NumericData: json: cannot unmarshal bool into Go value of type json.Number"
        );
    }

    #[test]
    fn claims_are_decoded_before_alg_is_checked() {
        // golang-jwt decodes the claims before it looks at `alg`.
        let err = ServiceAccountToken::decode(&jwt("{}", "[")).unwrap_err();
        assert!(matches!(err, TokenError::Malformed { .. }), "{err}");
    }

    #[test]
    fn go_decoding_quirks() {
        let ok = |claims: &str| {
            ServiceAccountToken::decode(&jwt(H, claims))
                .unwrap()
                .claims()
                .clone()
        };
        assert_eq!(ok(r#"{"exp":"1700000000"}"#).exp, Some(1_700_000_000));
        assert_eq!(ok(r#"{"exp":1700000000.9}"#).exp, Some(1_700_000_000));
        assert_eq!(ok(r#"{"exp":-0.5}"#).exp, Some(-1));
        assert_eq!(ok(r#"{"exp":1e300}"#).exp, Some(i64::MIN));
        assert_eq!(ok(r#"{"exp":null}"#).exp, None);
        assert_eq!(ok(r#"{"EXP":5,"exp":6}"#).exp, Some(6));
        assert_eq!(ok(r#"{"exp":6,"Exp":null}"#).exp, None);
        assert_eq!(ok(r#"{"Sub":"x"}"#).sub.as_deref(), Some("x"));
        assert_eq!(ok(r#"{"aud":"a"}"#).aud, ["a"]);
        assert_eq!(ok(r#"{"aud":["a","b"]}"#).aud, ["a", "b"]);
        assert!(ok(r#"{"aud":null}"#).aud.is_empty());
        assert_eq!(ok("null"), TokenClaims::default());
        assert!(ok(r#"{"kubernetes.io":5}"#).kubernetes.is_none());
        let alg_none = ServiceAccountToken::decode(&jwt(r#"{"alg":"none"}"#, "{}")).unwrap();
        assert_eq!(alg_none.header().alg, "none");
        // A null header is a nil map in Go: `alg` is then unspecified.
        assert!(matches!(
            ServiceAccountToken::decode(&jwt("null", "{}")),
            Err(TokenError::Unverifiable { .. })
        ));
    }

    #[test]
    fn both_time_failures_are_joined() {
        let token = ServiceAccountToken::decode(&jwt(H, r#"{"exp":10,"nbf":20}"#)).unwrap();
        let err = token
            .validate_time(UNIX_EPOCH + Duration::from_secs(15))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Service account token failed basic claim validations: token is expired, token is not valid yet"
        );
    }

    #[test]
    fn non_utf8_header_values() {
        let err = ServiceAccountToken::decode_bytes(b"e3\xff.e30.c2ln").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Service account token cannot be parsed: token is malformed: could not base64 decode header: illegal base64 data at input byte 2"
        );
        let mut raw = jwt(H, "{}").into_bytes();
        raw.push(0xff);
        let err = ServiceAccountToken::decode_bytes(&raw).unwrap_err();
        assert_eq!(
            err,
            TokenError::Malformed {
                reason: "token is not valid UTF-8".into()
            }
        );
    }

    #[test]
    fn size_bound() {
        let big = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            ServiceAccountToken::decode(&big),
            Err(TokenError::TooLarge {
                len: MAX_TOKEN_LEN + 1
            })
        );
    }

    #[test]
    fn raw_token_never_printed() {
        let raw = jwt(H, r#"{"sub":"system:serviceaccount:a:b"}"#);
        let token: ServiceAccountToken = raw.parse().unwrap();
        assert!(!format!("{token:?}").contains("c2lnbmF0dXJl"));
        assert!(!format!("{token:?}").contains(&raw));
    }

    #[test]
    fn subject_parsing() {
        let claims = |sub: &str| TokenClaims {
            sub: Some(sub.into()),
            ..TokenClaims::default()
        };
        assert!(
            claims("system:serviceaccount:default:app")
                .service_account()
                .is_some()
        );
        assert!(
            claims("system:serviceaccount:default")
                .service_account()
                .is_none()
        );
        assert!(
            claims("system:serviceaccount:Default:app")
                .service_account()
                .is_none()
        );
        assert!(
            claims("system:serviceaccount:a:b:c")
                .service_account()
                .is_none()
        );
        assert!(claims("user:default:app").service_account().is_none());
    }
}
