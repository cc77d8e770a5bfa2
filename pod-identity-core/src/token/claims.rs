//! The JOSE header and the claims, read as golang-jwt's `RegisteredClaims` plus the
//! `kubernetes.io` claim.

use std::time::SystemTime;

use serde_json::Value;

use super::TokenError;
use super::go_decode::Entries;
use crate::association::{Namespace, ServiceAccountName};
use crate::time::from_epoch;

/// The JOSE header fields the agent looks at.
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameUid {
    /// The object's name.
    pub name: String,
    /// The object's uid.
    pub uid: String,
}
impl TokenClaims {
    /// Namespace and service account from `sub` (`system:serviceaccount:<ns>:<name>`), when
    /// both are valid Kubernetes names.
    pub fn service_account(&self) -> Option<(Namespace, ServiceAccountName)> {
        let rest = self.sub.as_deref()?.strip_prefix(super::SUBJECT_PREFIX)?;
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

pub(super) fn header_from(entries: Entries) -> Result<TokenHeader, TokenError> {
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
    if !super::KNOWN_ALGORITHMS.contains(&alg.as_str()) {
        return Err(TokenError::Unverifiable {
            reason: "signing method (alg) is unavailable".to_owned(),
        });
    }
    Ok(TokenHeader { alg, kid, typ })
}

/// `json.Unmarshal` into golang-jwt's `RegisteredClaims`, plus `kubernetes.io`.
pub(super) fn claims_from(entries: Entries) -> Result<TokenClaims, String> {
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
