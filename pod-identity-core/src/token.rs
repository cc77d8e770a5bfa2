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

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use base64::Engine as _;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::association::{Namespace, ServiceAccountName};
use crate::secret::SecretString;
use crate::time::{from_epoch, to_epoch};

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

/// The JOSE header fields the agent looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenHeader {
    /// Signing algorithm (`RS256` on EKS).
    pub alg: String,
    /// Key id (base64url SHA-256 of the DER public key on Kubernetes).
    pub kid: Option<String>,
    /// Token type, when present.
    pub typ: Option<String>,
}

/// The claims of a projected service-account token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenClaims {
    /// Issuer (the cluster's OIDC issuer URL).
    pub iss: Option<String>,
    /// Subject: `system:serviceaccount:<namespace>:<name>`.
    pub sub: Option<String>,
    /// Audiences (a single string on the wire becomes one element).
    pub aud: Vec<String>,
    /// Expiry, epoch seconds.
    pub exp: Option<i64>,
    /// Not before, epoch seconds.
    pub nbf: Option<i64>,
    /// Issued at, epoch seconds.
    pub iat: Option<i64>,
    /// Token id (Kubernetes ≥ 1.30).
    pub jti: Option<String>,
    /// The `kubernetes.io` claim.
    pub kubernetes: Option<KubernetesClaims>,
}

/// The `kubernetes.io` claim of a projected token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubernetesClaims {
    /// The pod's namespace.
    pub namespace: Option<String>,
    /// The service account.
    pub service_account: Option<NameUid>,
    /// The pod the token is bound to.
    pub pod: Option<NameUid>,
    /// The node the pod runs on (Kubernetes ≥ 1.30).
    pub node: Option<NameUid>,
}

/// A Kubernetes object reference inside `kubernetes.io`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameUid {
    /// The object's name.
    pub name: String,
    /// The object's uid.
    pub uid: String,
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
        let (now_secs, _) = to_epoch(now);
        // exp and nbf are whole seconds, so comparing whole seconds is exact.
        let expired = self.claims.exp.is_some_and(|exp| now_secs >= exp);
        let not_yet = self.claims.nbf.is_some_and(|nbf| now_secs < nbf);
        match (expired, not_yet) {
            (false, false) => Ok(()),
            (true, false) => Err(TokenError::Expired),
            (false, true) => Err(TokenError::NotValidYet),
            (true, true) => Err(TokenError::ExpiredAndNotValidYet),
        }
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

impl TokenClaims {
    /// Namespace and service account from `sub` (`system:serviceaccount:<ns>:<name>`), when
    /// both are valid Kubernetes names.
    pub fn service_account(&self) -> Option<(Namespace, ServiceAccountName)> {
        let rest = self.sub.as_deref()?.strip_prefix(SUBJECT_PREFIX)?;
        let (namespace, name) = rest.split_once(':')?;
        Some((namespace.parse().ok()?, name.parse().ok()?))
    }

    /// `exp` as a time.
    pub fn expires_at(&self) -> Option<SystemTime> {
        from_epoch(self.exp?, 0)
    }

    /// `iat` as a time.
    pub fn issued_at(&self) -> Option<SystemTime> {
        from_epoch(self.iat?, 0)
    }

    /// `nbf` as a time.
    pub fn not_before(&self) -> Option<SystemTime> {
        from_epoch(self.nbf?, 0)
    }

    /// Whether `aud` contains `audience`.
    pub fn has_audience(&self, audience: &str) -> bool {
        self.aud.iter().any(|a| a == audience)
    }
}

/// Go's `base64.RawURLEncoding.DecodeString`: the error text is Go's.
fn decode_segment(segment: &[u8]) -> Result<Vec<u8>, String> {
    let corrupt = |at: usize| format!("illegal base64 data at input byte {at}");
    let mut clean = Vec::with_capacity(segment.len());
    for (i, &b) in segment.iter().enumerate() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => clean.push(b),
            b'\r' | b'\n' => {}
            _ => return Err(corrupt(i)),
        }
    }
    if clean.len() % 4 == 1 {
        return Err(corrupt(segment.len().saturating_sub(1)));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    engine.decode(&clean).map_err(|_| corrupt(0))
}

/// A JSON object's entries in document order (`None` for `null`), or Go's error text.
type Entries = Vec<(String, Value)>;

fn parse_object(bytes: &[u8], go_type: &str) -> Result<Option<Entries>, String> {
    // Go's decoder replaces invalid UTF-8 with U+FFFD instead of failing.
    let text = String::from_utf8_lossy(bytes);
    match serde_json::from_str::<TopLevel>(&text) {
        Ok(TopLevel::Object(entries)) => Ok(Some(entries)),
        Ok(TopLevel::Null) => Ok(None),
        Ok(TopLevel::Other(kind)) => Err(format!(
            "json: cannot unmarshal {kind} into Go value of type {go_type}"
        )),
        Err(e) => Err(go_json_syntax_error(&text, &e)),
    }
}

enum TopLevel {
    Object(Entries),
    Null,
    Other(&'static str),
}

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    entries.push((k, v));
                }
                Ok(TopLevel::Object(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TopLevel::Other("array"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("bool"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("number"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("string"))
            }
        }
        deserializer.deserialize_any(TopVisitor)
    }
}

/// An approximation of Go's `encoding/json` syntax error text for serde_json's error.
fn go_json_syntax_error(text: &str, err: &serde_json::Error) -> String {
    if err.is_eof() || text.trim().is_empty() {
        return "unexpected end of JSON input".to_owned();
    }
    let message = err.to_string();
    let offending = offending_char(text, err.line(), err.column());
    let context = [
        ("expected value", "looking for beginning of value"),
        ("trailing characters", "after top-level value"),
        (
            "key must be a string",
            "looking for beginning of object key string",
        ),
        ("expected `:`", "after object key"),
        ("expected `,` or `}`", "after object key:value pair"),
        ("expected `,` or `]`", "after array element"),
        ("expected ident", "in literal"),
        ("invalid escape", "in string escape code"),
        ("control character", "in string literal"),
        ("invalid number", "in numeric literal"),
    ]
    .iter()
    .find(|(serde_text, _)| message.starts_with(serde_text))
    .map(|(_, go_text)| *go_text);
    // A trailing comma: Go expects an object key before `}` and a value before `]`.
    let context = context.or(match (message.starts_with("trailing comma"), offending) {
        (true, Some('}')) => Some("looking for beginning of object key string"),
        (true, _) => Some("looking for beginning of value"),
        _ => None,
    });
    match (offending, context) {
        (Some(c), Some(context)) => format!("invalid character {} {context}", go_quote_char(c)),
        _ => match message.split(" at line ").next() {
            Some(m) => m.to_owned(),
            None => message,
        },
    }
}

/// The character at serde_json's 1-based line and column (a byte column).
fn offending_char(text: &str, line: usize, column: usize) -> Option<char> {
    let line_text = text.split('\n').nth(line.checked_sub(1)?)?;
    let at = column.checked_sub(1)?;
    line_text.get(at..).and_then(|s| s.chars().next())
}

/// Go's `quoteChar`.
fn go_quote_char(c: char) -> String {
    match c {
        '\'' => r"'\''".to_owned(),
        '"' => "'\"'".to_owned(),
        c => {
            let quoted = format!("{:?}", c.to_string());
            let inner = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or(&quoted);
            format!("'{inner}'")
        }
    }
}

fn header_from(entries: Entries) -> Result<TokenHeader, TokenError> {
    let mut alg = None;
    let mut kid = None;
    let mut typ = None;
    // A map: exact keys, last duplicate wins.
    for (key, value) in entries {
        match key.as_str() {
            "alg" => alg = Some(value),
            "kid" => kid = value.as_str().map(str::to_owned),
            "typ" => typ = value.as_str().map(str::to_owned),
            _ => {}
        }
    }
    let Some(Value::String(alg)) = alg else {
        return Err(TokenError::Unverifiable {
            reason: "signing method (alg) is unspecified".to_owned(),
        });
    };
    if !KNOWN_ALGORITHMS.contains(&alg.as_str()) {
        return Err(TokenError::Unverifiable {
            reason: "signing method (alg) is unavailable".to_owned(),
        });
    }
    Ok(TokenHeader { alg, kid, typ })
}

/// `json.Unmarshal` into golang-jwt's `RegisteredClaims`, plus `kubernetes.io`.
fn claims_from(entries: Entries) -> Result<TokenClaims, String> {
    let mut claims = TokenClaims::default();
    // Go keeps decoding after a type mismatch and reports the first one at the end, but a
    // custom unmarshaler's error (numeric dates, audiences) stops it at once.
    let mut first_type_error: Option<String> = None;
    let mut type_error = |field: &str, go_type: &str, value: &Value| {
        if first_type_error.is_none() {
            first_type_error = Some(format!(
                "json: cannot unmarshal {} into Go struct field RegisteredClaims.{field} of type {go_type}",
                json_kind(value)
            ));
        }
    };
    for (key, value) in entries {
        if key == "kubernetes.io" {
            claims.kubernetes = kubernetes_claims(&value);
            continue;
        }
        let Some(field) = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]
            .into_iter()
            .find(|f| f.eq_ignore_ascii_case(&key))
        else {
            continue;
        };
        match field {
            "iss" | "sub" | "jti" => {
                let slot = match field {
                    "iss" => &mut claims.iss,
                    "sub" => &mut claims.sub,
                    _ => &mut claims.jti,
                };
                match value {
                    Value::Null => {}
                    Value::String(s) => *slot = Some(s),
                    other => type_error(field, "string", &other),
                }
            }
            "aud" => match value {
                Value::Null => claims.aud = Vec::new(),
                Value::String(s) => claims.aud = vec![s],
                Value::Array(items) => {
                    claims.aud = items
                        .into_iter()
                        .map(|v| match v {
                            Value::String(s) => Ok(s),
                            _ => Err("invalid type for claim".to_owned()),
                        })
                        .collect::<Result<_, _>>()?;
                }
                _ => return Err("invalid type for claim".to_owned()),
            },
            _ => {
                let slot = match field {
                    "exp" => &mut claims.exp,
                    "nbf" => &mut claims.nbf,
                    _ => &mut claims.iat,
                };
                *slot = numeric_date(&value)?;
            }
        }
    }
    match first_type_error {
        Some(e) => Err(e),
        None => Ok(claims),
    }
}

/// golang-jwt's `NumericDate.UnmarshalJSON`, truncated to whole seconds.
fn numeric_date(value: &Value) -> Result<Option<i64>, String> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.to_string(),
        // Go decodes a string holding a valid JSON number into json.Number.
        Value::String(s) if is_json_number(s) => s.clone(),
        Value::String(s) => {
            return Err(format!(
                "could not parse NumericData: json: invalid number literal, trying to unmarshal {:?} into Number",
                format!("{s:?}")
            ));
        }
        other => {
            return Err(format!(
                "could not parse NumericData: json: cannot unmarshal {} into Go value of type json.Number",
                json_kind(other)
            ));
        }
    };
    let f: f64 = text.parse().map_err(|_| {
        format!(
            "could not convert json number value to float: strconv.ParseFloat: parsing {text:?}: invalid syntax"
        )
    })?;
    if !f.is_finite() {
        return Err(format!(
            "could not convert json number value to float: strconv.ParseFloat: parsing {text:?}: value out of range"
        ));
    }
    // math.Modf then int64(): out-of-range conversions give i64::MIN on amd64, and
    // Truncate(time.Second) floors the result.
    let whole = f.floor();
    if (-9.223_372_036_854_775e18..9.223_372_036_854_775e18).contains(&whole) {
        #[allow(clippy::cast_possible_truncation)]
        Ok(Some(whole as i64))
    } else {
        Ok(Some(i64::MIN))
    }
}

/// JSON number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn kubernetes_claims(value: &Value) -> Option<KubernetesClaims> {
    let object = value.as_object()?;
    let name_uid = |key: &str| {
        let o = object.get(key)?.as_object()?;
        Some(NameUid {
            name: o.get("name")?.as_str()?.to_owned(),
            uid: o
                .get("uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
    };
    Some(KubernetesClaims {
        namespace: object
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_owned),
        service_account: name_uid("serviceaccount"),
        pod: name_uid("pod"),
        node: name_uid("node"),
    })
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
