//! The `AssumeRoleForPodIdentity` response, read leniently, and the credentials the agent serves
//! from it.

use std::time::SystemTime;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::{EksAuthError, EksAuthErrorCode};
use crate::arn::Arn;
use crate::container_credentials::ContainerCredentials;
use crate::secret::SecretString;
use crate::time::{MAX_RFC3339_EPOCH_SECS, MIN_RFC3339_EPOCH_SECS, parse_epoch_seconds, to_epoch};

/// `subject` of the response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// `namespace`.
    pub namespace: String,
    /// `serviceAccount`.
    pub service_account: String,
}

/// `podIdentityAssociation` of the response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentityAssociation {
    /// `associationArn`.
    pub association_arn: String,
    /// `associationId`.
    pub association_id: String,
}

/// `assumedRoleUser` of the response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssumedRoleUser {
    /// `arn` (an STS assumed-role ARN).
    pub arn: String,
    /// `assumeRoleId`: `<roleId>:eks-<cluster>-<pod>-<uuid>`.
    pub assume_role_id: String,
}

/// `credentials` of the response. `Debug` redacts the secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EksCredentials {
    /// `sessionToken`.
    pub session_token: SecretString,
    /// `secretAccessKey`.
    pub secret_access_key: SecretString,
    /// `accessKeyId`.
    pub access_key_id: String,
    /// `expiration`.
    pub expiration: SystemTime,
}

/// The `AssumeRoleForPodIdentity` response. `Debug` redacts the secrets.
///
/// ```
/// use pod_identity_core::eks_auth::AssumeRoleForPodIdentityResponse;
///
/// let body = br#"{
///   "subject": {"namespace": "default", "serviceAccount": "app"},
///   "audience": "pods.eks.amazonaws.com",
///   "podIdentityAssociation": {"associationArn": "arn:aws:eks:us-west-2:111122223333:podidentityassociation/demo/a-abcdefghij0123456", "associationId": "a-abcdefghij0123456"},
///   "assumedRoleUser": {"arn": "arn:aws:sts::111122223333:assumed-role/app/eks-demo-app-1", "assumeRoleId": "AROAEXAMPLE:eks-demo-app-1"},
///   "credentials": {"sessionToken": "t", "secretAccessKey": "s", "accessKeyId": "ASIAEXAMPLE", "expiration": 1700000000.5}
/// }"#;
/// let response = AssumeRoleForPodIdentityResponse::from_json(body).unwrap();
/// assert_eq!(response.account_id(), Some("111122223333"));
/// let creds = response.to_container_credentials();
/// assert_eq!(creds.to_json().rsplit_once("\"Expiration\":").unwrap().1, "\"2023-11-14T22:13:20.5Z\"}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRoleForPodIdentityResponse {
    /// `subject`.
    pub subject: Subject,
    /// `audience`.
    pub audience: String,
    /// `podIdentityAssociation`.
    pub pod_identity_association: PodIdentityAssociation,
    /// `assumedRoleUser`.
    pub assumed_role_user: AssumedRoleUser,
    /// `credentials`.
    pub credentials: EksCredentials,
}

// Every member is optional and `null` reads as absent, as in the SDK's deserializer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    #[serde(default)]
    subject: Option<WireSubject>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    pod_identity_association: Option<WireAssociation>,
    #[serde(default)]
    assumed_role_user: Option<WireRoleUser>,
    #[serde(default, borrow)]
    credentials: Option<WireCredentials<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireSubject {
    namespace: Option<String>,
    service_account: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireAssociation {
    association_arn: Option<String>,
    association_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireRoleUser {
    arn: Option<String>,
    assume_role_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCredentials<'a> {
    #[serde(default)]
    session_token: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default, borrow)]
    expiration: Option<&'a RawValue>,
}

impl AssumeRoleForPodIdentityResponse {
    /// Parses a 200 body. A body that cannot be used is an error with code
    /// `SerializationException`, status 500, fault unknown (recoverable: a retry may succeed).
    pub fn from_json(body: &[u8]) -> Result<Self, EksAuthError> {
        let bad = |message: String| {
            EksAuthError::new(
                EksAuthErrorCode::Unknown("SerializationException".to_owned()),
                500,
                message,
            )
        };
        let wire: WireResponse<'_> = serde_json::from_slice(body).map_err(|e| {
            bad(match e.classify() {
                serde_json::error::Category::Data => {
                    "response body does not have the AssumeRoleForPodIdentity shape".to_owned()
                }
                _ => format!(
                    "response body is not JSON (line {} column {})",
                    e.line(),
                    e.column()
                ),
            })
        })?;
        let creds = wire
            .credentials
            .ok_or_else(|| bad("response has no credentials".to_owned()))?;
        let missing = |name: &str| bad(format!("response credentials have no {name}"));
        let expiration = creds.expiration.ok_or_else(|| missing("expiration"))?;
        let expiration = parse_epoch_seconds(expiration.get())
            // Outside years 0000-9999 the agent could not write it in RFC 3339 for the SDKs
            // (Go's encoder refuses it too), so such a response is unusable.
            .filter(|t| (MIN_RFC3339_EPOCH_SECS..=MAX_RFC3339_EPOCH_SECS).contains(&to_epoch(*t).0))
            .ok_or_else(|| bad("response credentials have an invalid expiration".to_owned()))?;
        let subject = wire.subject.unwrap_or_default();
        let association = wire.pod_identity_association.unwrap_or_default();
        let role_user = wire.assumed_role_user.unwrap_or_default();
        Ok(Self {
            subject: Subject {
                namespace: subject.namespace.unwrap_or_default(),
                service_account: subject.service_account.unwrap_or_default(),
            },
            audience: wire.audience.unwrap_or_default(),
            pod_identity_association: PodIdentityAssociation {
                association_arn: association.association_arn.unwrap_or_default(),
                association_id: association.association_id.unwrap_or_default(),
            },
            assumed_role_user: AssumedRoleUser {
                arn: role_user.arn.unwrap_or_default(),
                assume_role_id: role_user.assume_role_id.unwrap_or_default(),
            },
            credentials: EksCredentials {
                session_token: SecretString::new(
                    creds.session_token.ok_or_else(|| missing("sessionToken"))?,
                ),
                secret_access_key: SecretString::new(
                    creds
                        .secret_access_key
                        .ok_or_else(|| missing("secretAccessKey"))?,
                ),
                access_key_id: creds.access_key_id.ok_or_else(|| missing("accessKeyId"))?,
                expiration,
            },
        })
    }

    /// The account id of `assumedRoleUser.arn`, when it is a valid ARN with one.
    pub fn account_id(&self) -> Option<&str> {
        // Slice the input rather than the parsed ARN so the result borrows from `self`.
        let arn = &self.assumed_role_user.arn;
        let parsed: Arn = arn.parse().ok()?;
        let account = parsed.account_id();
        if account.is_empty() {
            return None;
        }
        arn.split(':').nth(4)
    }

    /// What the agent serves for this response.
    pub fn to_container_credentials(&self) -> ContainerCredentials {
        ContainerCredentials {
            access_key_id: self.credentials.access_key_id.clone(),
            secret_access_key: self.credentials.secret_access_key.clone(),
            token: self.credentials.session_token.clone(),
            account_id: self.account_id().map(str::to_owned),
            expiration: self.credentials.expiration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eks_auth::ErrorClass;

    #[test]
    fn malformed_response_is_recoverable() {
        for body in [&b""[..], b"[]", b"{}", br#"{"credentials":{"accessKeyId":"a"}}"#,
            br#"{"credentials":{"accessKeyId":"a","secretAccessKey":"s","sessionToken":"t","expiration":"soon"}}"#] {
            let err = AssumeRoleForPodIdentityResponse::from_json(body).unwrap_err();
            assert_eq!(err.code().as_str(), "SerializationException");
            assert_eq!(err.class(), ErrorClass::Recoverable);
            assert!(!err.to_string().contains("\"s\""));
        }
    }

    #[test]
    fn an_expiration_outside_years_0000_to_9999_is_malformed() {
        // Found by fuzzing: milliseconds where seconds belong; the agent would serve an
        // `Expiration` no SDK parses.
        let body = |expiration: &str| {
            format!(
                r#"{{"credentials":{{"accessKeyId":"a","secretAccessKey":"s","sessionToken":"t","expiration":{expiration}}}}}"#
            )
        };
        let err = AssumeRoleForPodIdentityResponse::from_json(body("1700000000111").as_bytes())
            .unwrap_err();
        assert_eq!(err.code().as_str(), "SerializationException");
        let last =
            AssumeRoleForPodIdentityResponse::from_json(body("253402300799").as_bytes()).unwrap();
        assert_eq!(
            crate::time::format_rfc3339(last.credentials.expiration),
            "9999-12-31T23:59:59Z"
        );
        let err = AssumeRoleForPodIdentityResponse::from_json(body("-1699999998100").as_bytes())
            .unwrap_err();
        assert_eq!(err.code().as_str(), "SerializationException");
        let first =
            AssumeRoleForPodIdentityResponse::from_json(body("-62167219200").as_bytes()).unwrap();
        assert_eq!(
            crate::time::format_rfc3339(first.credentials.expiration),
            "0000-01-01T00:00:00Z"
        );
    }
}
