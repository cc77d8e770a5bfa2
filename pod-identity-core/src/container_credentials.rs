//! The container-credentials response: what the agent serves and the SDKs parse.
//!
//! Contract:
//! - **Serving** ([`ContainerCredentials::to_json`]) is byte-identical to the reference agent
//!   (Go `encoding/json` of its `EksCredentialsResponse`): compact, fields in the order
//!   `AccessKeyId, SecretAccessKey, Token, AccountId, Expiration`, empty strings left out
//!   (`omitempty`), `Expiration` in RFC 3339 UTC with `Z` and trailing fractional zeros trimmed,
//!   Go's string escaping (`<`, `>`, `&`, U+2028 and U+2029 as `\u…`), no trailing newline.
//!   Content type `application/json`. It is serde_json with a formatter that adds Go's extra
//!   escapes; only the timestamp is formatted by hand ([`crate::time::format_rfc3339`]).
//! - **Parsing** ([`ContainerCredentials::from_json`]) is as lenient as the Rust SDK
//!   (`aws-config` `json_credentials.rs`): keys match case-insensitively, `SessionToken` is
//!   accepted for `Token` and `ExpiresAt` for `Expiration`, non-string values are ignored, the
//!   last duplicate wins, `AccountId` is optional, and a `Code` other than `Success` makes the
//!   body an error `{Code, Message}` ([`ResponseError::Service`]). `Expiration` must be RFC 3339
//!   with an upper-case `Z` (no offset).
//!
//! The plain-text errors the agent answers instead are `AgentError`s (module `agent_error`).

use std::fmt;
use std::time::SystemTime;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

use crate::go_json;
use crate::secret::SecretString;
use crate::time::{GoRfc3339, parse_rfc3339};

/// Content type of a credentials response.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Credentials with this much or less left are neither served nor cached: the reference
/// agent's rule, so that a pod never receives credentials that expire before it can use them.
/// A source's fresh credentials this close to expiry are an error
/// ([`AgentError::ExpiringCredentials`](crate::agent_error::AgentError::ExpiringCredentials), 500).
pub const MIN_REMAINING: std::time::Duration = std::time::Duration::from_secs(15);

/// Credentials as the agent serves them. `Debug` redacts the secret key and the session token.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use pod_identity_core::container_credentials::ContainerCredentials;
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
        go_json::write(
            out,
            &WireCredentials {
                access_key_id: &self.access_key_id,
                secret_access_key: self.secret_access_key.expose_secret(),
                token: self.token.expose_secret(),
                account_id: self.account_id.as_deref().unwrap_or_default(),
                expiration: GoRfc3339(self.expiration),
            },
        );
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

/// The served document: Go's `EksCredentialsResponse`, whose strings are `omitempty` and whose
/// `Expiration` is a `time.Time` (never omitted).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireCredentials<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    access_key_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    secret_access_key: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    token: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    account_id: &'a str,
    #[serde(serialize_with = "serialize_display")]
    expiration: GoRfc3339,
}

fn serialize_display<S: Serializer>(value: &GoRfc3339, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
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
                while let Some(key) = map.next_key::<Field>()? {
                    let StringOrOther(Some(value)) = map.next_value::<StringOrOther>()? else {
                        continue;
                    };
                    match key {
                        Field::Code => fields.code = Some(value),
                        Field::AccessKeyId => fields.access_key_id = Some(value),
                        Field::SecretAccessKey => {
                            fields.secret_access_key = Some(SecretString::new(value));
                        }
                        Field::Token => fields.token = Some(SecretString::new(value)),
                        Field::AccountId => fields.account_id = Some(value),
                        Field::Expiration => fields.expiration = Some(value),
                        Field::Message => fields.message = Some(value),
                        Field::Other => {}
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// A key the SDK looks at, matched case-insensitively without allocating.
enum Field {
    Code,
    Message,
    AccessKeyId,
    SecretAccessKey,
    Token,
    AccountId,
    Expiration,
    Other,
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Field, E> {
                let is = |name: &str| key.eq_ignore_ascii_case(name);
                Ok(if is("Code") {
                    Field::Code
                } else if is("AccessKeyId") {
                    Field::AccessKeyId
                } else if is("SecretAccessKey") {
                    Field::SecretAccessKey
                } else if is("Token") || is("SessionToken") {
                    Field::Token
                } else if is("AccountId") {
                    Field::AccountId
                } else if is("Expiration") || is("ExpiresAt") {
                    Field::Expiration
                } else if is("Message") {
                    Field::Message
                } else {
                    Field::Other
                })
            }
        }
        deserializer.deserialize_str(FieldVisitor)
    }
}

/// A string value, or `None` for any other JSON value. Other values are read as
/// `serde_json::Value` would read them (numbers range-checked, nested values walked), so the
/// same bodies are refused, without building them.
struct StringOrOther(Option<String>);

impl<'de> serde::Deserialize<'de> for StringOrOther {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = StringOrOther;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringOrOther, E> {
                Ok(StringOrOther(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<StringOrOther, E> {
                Ok(StringOrOther(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringOrOther, A::Error> {
                while seq.next_element::<StringOrOther>()?.is_some() {}
                Ok(StringOrOther(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringOrOther, A::Error> {
                while map.next_entry::<IgnoredAny, StringOrOther>()?.is_some() {}
                Ok(StringOrOther(None))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
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
}
