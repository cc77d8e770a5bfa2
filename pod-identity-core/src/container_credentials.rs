//! The container-credentials response: what the agent serves and the SDKs parse.
//!
//! Contract:
//! - **Serving** ([`ContainerCredentials::to_json`]) is byte-identical to the reference agent
//!   (Go `encoding/json` of its `EksCredentialsResponse`): compact, fields in the order
//!   `AccessKeyId, SecretAccessKey, Token, AccountId, Expiration`, empty strings left out
//!   (`omitempty`), `Expiration` in RFC 3339 UTC with `Z` and trailing fractional zeros trimmed,
//!   Go's string escaping (`<`, `>`, `&`, U+2028 and U+2029 as `\u…`), no trailing newline.
//!   Content type `application/json`.
//! - **Parsing** ([`ContainerCredentials::from_json`]) is as lenient as the Rust SDK
//!   (`aws-config` `json_credentials.rs`): keys match case-insensitively, `SessionToken` is
//!   accepted for `Token` and `ExpiresAt` for `Expiration`, non-string values are ignored, the
//!   last duplicate wins, `AccountId` is optional, and a `Code` other than `Success` makes the
//!   body an error `{Code, Message}` ([`ResponseError::Service`]). `Expiration` must be RFC 3339
//!   with an upper-case `Z` (no offset).
//! - **Errors** the agent answers instead ([`AgentError`]) are plain text
//!   (`text/plain; charset=utf-8`) ending in `\n` (except Go's own 431), each with its status
//!   (contracts §6).

use std::fmt;
use std::time::SystemTime;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::eks_auth::EksAuthError;
use crate::secret::SecretString;
use crate::time::{format_rfc3339, parse_rfc3339};
use crate::token::TokenError;

/// Content type of a credentials response.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Content type of the agent's error answers (Go's `http.Error`).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";

/// Credentials with this much or less left are neither served nor cached: the reference
/// agent's rule, so that a pod never receives credentials that expire before it can use them.
/// A source's fresh credentials this close to expiry are an error
/// ([`AgentError::ExpiringCredentials`], 500).
pub const MIN_REMAINING: std::time::Duration = std::time::Duration::from_secs(15);

/// Credentials as the agent serves them. `Debug` redacts the secret key and the session token.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use pod_identity_core::ContainerCredentials;
///
/// let creds = ContainerCredentials {
///     access_key_id: "ASIAEXAMPLE".into(),
///     secret_access_key: "secret".into(),
///     token: "session".into(),
///     account_id: Some("111122223333".into()),
///     expiration: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
/// };
/// let json = creds.to_json();
/// assert_eq!(
///     json,
///     r#"{"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"secret","Token":"session","AccountId":"111122223333","Expiration":"2023-11-14T22:13:20Z"}"#
/// );
/// assert_eq!(ContainerCredentials::from_json(json.as_bytes()).unwrap(), creds);
/// assert!(!format!("{creds:?}").contains("secret\""));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCredentials {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: SecretString,
    /// `Token` (the session token).
    pub token: SecretString,
    /// `AccountId`, the account of the assumed role.
    pub account_id: Option<String>,
    /// `Expiration`.
    pub expiration: SystemTime,
}

/// A credentials body that is not usable credentials. The text never contains a secret.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The body is the error form `{"Code": ..., "Message": ...}` with a `Code` other than `Success`.
    #[error("credentials endpoint returned error `{code}`: {message}")]
    Service {
        /// `Code`.
        code: String,
        /// `Message` (`no message` when absent).
        message: String,
    },
    /// The body is not a credentials document.
    #[error("invalid credentials response: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
}

impl ContainerCredentials {
    /// The reference agent's exact bytes (see the module docs).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(256 + self.token.len());
        self.write_json(&mut out);
        // Only valid UTF-8 is ever written: `&str` pieces and ASCII escapes.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the reference agent's exact bytes to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        let mut field = |out: &mut Vec<u8>, name: &str, value: &str| {
            // Go's `omitempty`.
            if value.is_empty() {
                return;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            write_go_json_string(out, value);
        };
        field(out, "AccessKeyId", &self.access_key_id);
        field(
            out,
            "SecretAccessKey",
            self.secret_access_key.expose_secret(),
        );
        field(out, "Token", self.token.expose_secret());
        field(
            out,
            "AccountId",
            self.account_id.as_deref().unwrap_or_default(),
        );
        // A struct in Go, so `omitempty` never drops it.
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"\"Expiration\":\"");
        out.extend_from_slice(format_rfc3339(self.expiration).as_bytes());
        out.extend_from_slice(b"\"}");
    }

    /// Parses a body as leniently as the Rust SDK (see the module docs).
    pub fn from_json(body: &[u8]) -> Result<ContainerCredentials, ResponseError> {
        let fields: LenientFields = serde_json::from_slice(body).map_err(|e| {
            // serde_json's "invalid type" texts quote the value; say only where it went wrong.
            let reason = match e.classify() {
                serde_json::error::Category::Data => "expected a JSON object".to_owned(),
                serde_json::error::Category::Eof => "unexpected end of JSON".to_owned(),
                _ => format!("invalid JSON at line {} column {}", e.line(), e.column()),
            };
            ResponseError::Malformed { reason }
        })?;
        match fields.code.as_deref() {
            None | Some("Success") => {}
            Some(_) => {
                return Err(ResponseError::Service {
                    code: fields.code.unwrap_or_default(),
                    message: fields.message.unwrap_or_else(|| "no message".to_owned()),
                });
            }
        }
        let missing = |name: &str| ResponseError::Malformed {
            reason: format!("expected field `{name}` in response but it was missing"),
        };
        let access_key_id = fields.access_key_id.ok_or_else(|| missing("AccessKeyId"))?;
        let secret_access_key = fields
            .secret_access_key
            .ok_or_else(|| missing("SecretAccessKey"))?;
        let token = fields.token.ok_or_else(|| missing("Token"))?;
        let expiration = fields.expiration.ok_or_else(|| missing("Expiration"))?;
        let expiration = parse_rfc3339(&expiration).map_err(|e| ResponseError::Malformed {
            reason: format!("invalid field `Expiration`: {e}"),
        })?;
        Ok(ContainerCredentials {
            access_key_id,
            secret_access_key,
            token,
            account_id: fields.account_id,
            expiration,
        })
    }
}

/// The string-valued fields the SDK looks at, in document order, last duplicate winning.
#[derive(Default)]
struct LenientFields {
    code: Option<String>,
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<SecretString>,
    token: Option<SecretString>,
    account_id: Option<String>,
    expiration: Option<String>,
}

impl<'de> serde::Deserialize<'de> for LenientFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = LenientFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LenientFields, A::Error> {
                let mut fields = LenientFields::default();
                while let Some(key) = map.next_key::<String>()? {
                    let Value::String(value) = map.next_value::<Value>()? else {
                        continue;
                    };
                    let is = |name: &str| key.eq_ignore_ascii_case(name);
                    if is("Code") {
                        fields.code = Some(value);
                    } else if is("AccessKeyId") {
                        fields.access_key_id = Some(value);
                    } else if is("SecretAccessKey") {
                        fields.secret_access_key = Some(SecretString::new(value));
                    } else if is("Token") || is("SessionToken") {
                        fields.token = Some(SecretString::new(value));
                    } else if is("AccountId") {
                        fields.account_id = Some(value);
                    } else if is("Expiration") || is("ExpiresAt") {
                        fields.expiration = Some(value);
                    } else if is("Message") {
                        fields.message = Some(value);
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// Writes `s` as a JSON string the way Go's `encoding/json` does (HTML-safe escaping).
pub(crate) fn write_go_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c if c < ' ' || c == '<' || c == '>' || c == '&' => {
                let b = c as u32;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize & 0xf]);
                out.push(HEX[b as usize & 0xf]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// The agent's plain-text error answers (contracts §6): each knows its status and body.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentError {
    /// The `Host` the request came in on is not a bind host. 403.
    InvalidHost {
        /// The host, port and brackets stripped.
        host: String,
        /// The allowed hosts, as the reference prints them.
        allowed: Vec<String>,
    },
    /// The token was refused. 400, body = the [`TokenError`]'s text.
    Token(TokenError),
    /// EKS Auth answered with an error. Its status; body = [`EksAuthError::agent_body`].
    EksAuth(EksAuthError),
    /// Timeout, connection failure or another error without a response. 500 `[]`.
    Upstream,
    /// The credentials fetched expire too soon. 500.
    ExpiringCredentials {
        /// Milliseconds the credentials had left when fetched (negative when already expired);
        /// printed as seconds with two decimals, as the reference's `%0.2f` does.
        remaining_millis: i64,
    },
    /// Over the rate limit. 429.
    TooManyRequests,
    /// Not `/v1/credentials`. 404.
    NotFound,
    /// Request headers over the limit. 431.
    HeadersTooLarge,
    /// A request Go's HTTP server refuses before any handler runs: an HTTP/1.1 request without
    /// a `Host` header (`missing required Host header`), or with more than one (`too many Host
    /// headers`). 400, body `400 Bad Request: <reason>` without a trailing newline, as Go's
    /// server writes it.
    BadRequest {
        /// What is wrong with the request.
        reason: &'static str,
    },
    /// The token has no pod uid claim while the agent keys its cache by pod (the reference's
    /// 0.2 line). 400, body `failed to get pod uid from service account token: <reason>`.
    NoPodUid {
        /// Which claim is missing.
        reason: &'static str,
    },
}

impl AgentError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AgentError::InvalidHost { .. } => 403,
            AgentError::Token(e) => e.status(),
            AgentError::EksAuth(e) => e.status(),
            AgentError::Upstream | AgentError::ExpiringCredentials { .. } => 500,
            AgentError::TooManyRequests => 429,
            AgentError::NotFound => 404,
            AgentError::HeadersTooLarge => 431,
            AgentError::BadRequest { .. } | AgentError::NoPodUid { .. } => 400,
        }
    }

    /// The response body: with Go's `http.Error` trailing newline, except the 431 that Go's
    /// server writes itself without one.
    pub fn body(&self) -> String {
        match self {
            AgentError::HeadersTooLarge | AgentError::BadRequest { .. } => self.to_string(),
            _ => format!("{self}\n"),
        }
    }

    /// The response content type.
    pub fn content_type(&self) -> &'static str {
        CONTENT_TYPE_TEXT
    }
}

impl fmt::Display for AgentError {
    /// The body without its trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::InvalidHost { host, allowed } => write!(
                f,
                "Access Denied. Called agent through invalid address, please use either [{}] address not {host}",
                allowed.join(" ")
            ),
            AgentError::Token(e) => write!(f, "{e}"),
            AgentError::EksAuth(e) => f.write_str(&e.agent_body()),
            AgentError::Upstream => f.write_str("[]"),
            AgentError::ExpiringCredentials { remaining_millis } => {
                let centis = (remaining_millis.unsigned_abs() + 5) / 10;
                let sign = if *remaining_millis < 0 && centis > 0 {
                    "-"
                } else {
                    ""
                };
                write!(
                    f,
                    "fetched credentials are expired or will expire within the next {sign}{}.{:02} seconds",
                    centis / 100,
                    centis % 100
                )
            }
            AgentError::TooManyRequests => f.write_str("Too Many Requests"),
            AgentError::NotFound => f.write_str("404 page not found"),
            AgentError::HeadersTooLarge => f.write_str("431 Request Header Fields Too Large"),
            AgentError::BadRequest { reason } => write!(f, "400 Bad Request: {reason}"),
            AgentError::NoPodUid { reason } => write!(
                f,
                "failed to get pod uid from service account token: {reason}"
            ),
        }
    }
}

impl std::error::Error for AgentError {}

impl From<TokenError> for AgentError {
    fn from(e: TokenError) -> Self {
        AgentError::Token(e)
    }
}

impl From<EksAuthError> for AgentError {
    fn from(e: EksAuthError) -> Self {
        AgentError::EksAuth(e)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn creds() -> ContainerCredentials {
        ContainerCredentials {
            access_key_id: "AKID".into(),
            secret_access_key: "SECRET".into(),
            token: "TOKEN".into(),
            account_id: Some("111122223333".into()),
            expiration: UNIX_EPOCH + Duration::new(827_912_723, 123_456_789),
        }
    }

    #[test]
    fn serializes_like_go() {
        assert_eq!(
            creds().to_json(),
            r#"{"AccessKeyId":"AKID","SecretAccessKey":"SECRET","Token":"TOKEN","AccountId":"111122223333","Expiration":"1996-03-27T07:45:23.123456789Z"}"#
        );
        let no_account = ContainerCredentials {
            account_id: None,
            ..creds()
        };
        assert!(!no_account.to_json().contains("AccountId"));
        let empty_account = ContainerCredentials {
            account_id: Some(String::new()),
            ..creds()
        };
        assert_eq!(empty_account.to_json(), no_account.to_json());
        let escaped = ContainerCredentials {
            token: "a<b>&\"\\\n\u{1}\u{2028}é".into(),
            ..creds()
        };
        assert!(
            escaped
                .to_json()
                .contains(r#""Token":"a\u003cb\u003e\u0026\"\\\n\u0001\u2028é""#)
        );
    }

    #[test]
    fn parses_leniently() {
        let body = br#"{"code":"Success","accesskeyid":"AKID","SECRETACCESSKEY":"SECRET",
            "SessionToken":"TOKEN","ExpiresAt":"1996-03-27T07:45:23.123456789Z","AccountID":"111122223333",
            "Extra":{"nested":[1,2]},"Token":5}"#;
        assert_eq!(ContainerCredentials::from_json(body).unwrap(), creds());
    }

    #[test]
    fn error_form() {
        let body = br#"{"Code":"AccessDenied","Message":"nope"}"#;
        assert_eq!(
            ContainerCredentials::from_json(body),
            Err(ResponseError::Service {
                code: "AccessDenied".into(),
                message: "nope".into()
            })
        );
        assert_eq!(
            ContainerCredentials::from_json(br#"{"Code":"success"}"#),
            Err(ResponseError::Service {
                code: "success".into(),
                message: "no message".into()
            })
        );
    }

    #[test]
    fn malformed_never_echoes_secrets() {
        for body in [
            &br#""SECRET""#[..],
            br#"["SECRET"]"#,
            br#"{"SecretAccessKey":"SECRET""#,
            b"SECRET",
        ] {
            let err = ContainerCredentials::from_json(body).unwrap_err();
            assert!(!err.to_string().contains("SECRET"), "{err}");
        }
        let missing = ContainerCredentials::from_json(
            br#"{"AccessKeyId":"a","SecretAccessKey":"SECRET","Token":"t"}"#,
        );
        assert_eq!(
            missing.unwrap_err().to_string(),
            "invalid credentials response: expected field `Expiration` in response but it was missing"
        );
    }

    #[test]
    fn agent_error_bodies() {
        let host = AgentError::InvalidHost {
            host: "10.0.0.1".into(),
            allowed: vec!["169.254.170.23".into(), "fd00:ec2::23".into()],
        };
        assert_eq!(host.status(), 403);
        assert_eq!(
            host.body(),
            "Access Denied. Called agent through invalid address, please use either [169.254.170.23 fd00:ec2::23] address not 10.0.0.1\n"
        );
        assert_eq!(
            AgentError::Token(TokenError::Empty).body(),
            "Service account token cannot be empty\n"
        );
        assert_eq!(AgentError::Token(TokenError::Empty).status(), 400);
        assert_eq!(
            (AgentError::Upstream.status(), AgentError::Upstream.body()),
            (500, "[]\n".into())
        );
        let expiring = AgentError::ExpiringCredentials {
            remaining_millis: 12_345,
        };
        assert_eq!(
            expiring.body(),
            "fetched credentials are expired or will expire within the next 12.35 seconds\n"
        );
        let expired = AgentError::ExpiringCredentials {
            remaining_millis: -1_500,
        };
        assert!(expired.body().contains("next -1.50 seconds"));
        assert_eq!(AgentError::TooManyRequests.body(), "Too Many Requests\n");
        assert_eq!(AgentError::TooManyRequests.status(), 429);
        assert_eq!(AgentError::NotFound.status(), 404);
        assert_eq!(AgentError::HeadersTooLarge.status(), 431);
        assert_eq!(AgentError::NotFound.content_type(), CONTENT_TYPE_TEXT);
    }
}
