//! The EKS Auth `AssumeRoleForPodIdentity` operation: request, response and errors.
//!
//! Contract (EKS Auth API model 2023-11-26, restJson1, SigV4 signing name `eks-auth`):
//! - `POST /clusters/{clusterName}/assume-role-for-pod-identity`, `Content-Type: application/json`,
//!   body `{"token": ..., "eksNodeName"?, "instanceId"?, "zone"?}`.
//! - Host `eks-auth.{region}.api.aws`, FIPS `eks-auth-fips.{region}.api.aws`, China
//!   `eks-auth.{region}.api.amazonwebservices.com.cn` ([`endpoint_for_region`]).
//! - The response carries `subject`, `audience`, `podIdentityAssociation`, `assumedRoleUser`
//!   and `credentials`, whose `expiration` is JSON epoch seconds, possibly fractional (read
//!   exactly, to the nanosecond). The credentials are required; the other members are read as
//!   empty when absent, as the Rust SDK's error correction does.
//! - Errors: the code comes from the `X-Amzn-Errortype` header, else the body's `__type`, else
//!   its `code`, with any `namespace#` prefix and `:…` suffix stripped; the message from
//!   `message` (or `Message`); with neither, code and message are `UnknownError` (smithy-go).
//!   Nine modeled codes each have a status and a cache class:
//!
//! | code | HTTP | class | fault |
//! |---|---|---|---|
//! | AccessDeniedException | 400 | irrecoverable | client |
//! | ExpiredTokenException | 400 | irrecoverable | client |
//! | InvalidTokenException | 400 | irrecoverable | client |
//! | InvalidParameterException | 400 | recoverable | client |
//! | InvalidRequestException | 400 | recoverable | client |
//! | ResourceNotFoundException | 404 | irrecoverable | client |
//! | ThrottlingException | 429 | recoverable | client |
//! | InternalServerException | 500 | recoverable | server |
//! | ServiceUnavailableException | 503 | recoverable | server |
//! | any other | its status | recoverable | unknown |
//!
//! - The reference agent answers an EKS Auth error with the upstream status and the body
//!   `[<request-id>]: (<Code>): <message>, fault: <client|server|unknown>` ([`EksAuthError::agent_body`]).

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::arn::{Arn, dns_suffix, partition_for_region};
use crate::association::ClusterName;
use crate::container_credentials::ContainerCredentials;
use crate::secret::SecretString;
use crate::time::{MAX_RFC3339_EPOCH_SECS, MIN_RFC3339_EPOCH_SECS, parse_epoch_seconds, to_epoch};

/// SigV4 signing name.
pub const SIGNING_NAME: &str = "eks-auth";
/// API version.
pub const API_VERSION: &str = "2023-11-26";
/// The header that carries the error code.
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";
/// The header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";
/// Credential lifetime EKS Auth grants.
pub const CREDENTIAL_LIFETIME_SECS: u64 = 6 * 3600;
/// Credential lifetime when a target role is chained.
pub const CHAINED_CREDENTIAL_LIFETIME_SECS: u64 = 59 * 60;

/// The EKS Auth endpoint of a region, following the SDK's endpoint rules:
/// `https://eks-auth[-fips].{region}.{dual-stack DNS suffix of the region's partition}`.
///
/// ```
/// use pod_identity_core::eks_auth::endpoint_for_region;
///
/// assert_eq!(endpoint_for_region("us-west-2", false), "https://eks-auth.us-west-2.api.aws");
/// assert_eq!(endpoint_for_region("us-east-1", true), "https://eks-auth-fips.us-east-1.api.aws");
/// assert_eq!(
///     endpoint_for_region("cn-north-1", false),
///     "https://eks-auth.cn-north-1.api.amazonwebservices.com.cn"
/// );
/// ```
pub fn endpoint_for_region(region: &str, fips: bool) -> String {
    let host = if fips { "eks-auth-fips" } else { "eks-auth" };
    let suffix = dns_suffix(partition_for_region(region));
    format!("https://{host}.{region}.{suffix}")
}

/// The `AssumeRoleForPodIdentity` request. `Debug` redacts the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRoleForPodIdentityRequest {
    /// The cluster (path parameter).
    pub cluster_name: ClusterName,
    /// The pod's service-account token.
    pub token: SecretString,
    /// The node's name, when known.
    pub eks_node_name: Option<String>,
    /// The node's EC2 instance id, when known.
    pub instance_id: Option<String>,
    /// The node's availability-zone id (`use1-az1`), when known.
    pub zone: Option<String>,
}

impl AssumeRoleForPodIdentityRequest {
    /// A request with only the required members.
    pub fn new(cluster_name: ClusterName, token: SecretString) -> Self {
        Self {
            cluster_name,
            token,
            eks_node_name: None,
            instance_id: None,
            zone: None,
        }
    }

    /// `/clusters/{clusterName}/assume-role-for-pod-identity` (cluster names need no escaping).
    pub fn path(&self) -> String {
        format!(
            "/clusters/{}/assume-role-for-pod-identity",
            self.cluster_name
        )
    }

    /// The JSON body: members in alphabetical order, absent ones left out.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            eks_node_name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            instance_id: Option<&'a str>,
            token: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            zone: Option<&'a str>,
        }
        serde_json::to_vec(&Body {
            eks_node_name: self.eks_node_name.as_deref(),
            instance_id: self.instance_id.as_deref(),
            token: self.token.expose_secret(),
            zone: self.zone.as_deref(),
        })
        .unwrap_or_default()
    }
}

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

/// An EKS Auth error code: the nine modeled ones, or another.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EksAuthErrorCode {
    /// `AccessDeniedException` (400, irrecoverable).
    AccessDenied,
    /// `ExpiredTokenException` (400, irrecoverable).
    ExpiredToken,
    /// `InvalidTokenException` (400, irrecoverable).
    InvalidToken,
    /// `InvalidParameterException` (400, recoverable).
    InvalidParameter,
    /// `InvalidRequestException` (400, recoverable).
    InvalidRequest,
    /// `ResourceNotFoundException` (404, irrecoverable).
    ResourceNotFound,
    /// `ThrottlingException` (429, recoverable).
    Throttling,
    /// `InternalServerException` (500, recoverable).
    InternalServer,
    /// `ServiceUnavailableException` (503, recoverable).
    ServiceUnavailable,
    /// Any other code, sanitized (recoverable).
    Unknown(String),
}

/// What the agent's cache does with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Keep the cached credentials and retry later.
    Recoverable,
    /// Evict: retrying the same token cannot succeed.
    Irrecoverable,
}

/// Smithy's error fault, as the reference prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The caller's fault.
    Client,
    /// The service's fault.
    Server,
    /// Not modeled.
    Unknown,
}

impl Fault {
    /// `client`, `server` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Server => "server",
            Fault::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Strips a `namespace#` prefix and a `:…` suffix, as smithy's `sanitize_error_code` does.
pub fn sanitize_error_code(raw: &str) -> &str {
    let code = raw.split(':').next().unwrap_or(raw);
    match code.split_once('#') {
        Some((_, name)) => name,
        None => code,
    }
}

impl EksAuthErrorCode {
    /// The nine modeled codes.
    pub const MODELED: [EksAuthErrorCode; 9] = [
        EksAuthErrorCode::AccessDenied,
        EksAuthErrorCode::ExpiredToken,
        EksAuthErrorCode::InvalidToken,
        EksAuthErrorCode::InvalidParameter,
        EksAuthErrorCode::InvalidRequest,
        EksAuthErrorCode::ResourceNotFound,
        EksAuthErrorCode::Throttling,
        EksAuthErrorCode::InternalServer,
        EksAuthErrorCode::ServiceUnavailable,
    ];

    /// Reads a code, stripping any `namespace#` prefix and `:…` suffix.
    ///
    /// ```
    /// use pod_identity_core::eks_auth::EksAuthErrorCode;
    ///
    /// let code = EksAuthErrorCode::from_raw("com.amazonaws.eksauth#AccessDeniedException:http://x");
    /// assert_eq!(code, EksAuthErrorCode::AccessDenied);
    /// ```
    pub fn from_raw(raw: &str) -> Self {
        let code = sanitize_error_code(raw);
        Self::MODELED
            .into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or_else(|| EksAuthErrorCode::Unknown(code.to_owned()))
    }

    /// The code as EKS Auth writes it: `AccessDeniedException`, ...
    pub fn as_str(&self) -> &str {
        match self {
            EksAuthErrorCode::AccessDenied => "AccessDeniedException",
            EksAuthErrorCode::ExpiredToken => "ExpiredTokenException",
            EksAuthErrorCode::InvalidToken => "InvalidTokenException",
            EksAuthErrorCode::InvalidParameter => "InvalidParameterException",
            EksAuthErrorCode::InvalidRequest => "InvalidRequestException",
            EksAuthErrorCode::ResourceNotFound => "ResourceNotFoundException",
            EksAuthErrorCode::Throttling => "ThrottlingException",
            EksAuthErrorCode::InternalServer => "InternalServerException",
            EksAuthErrorCode::ServiceUnavailable => "ServiceUnavailableException",
            EksAuthErrorCode::Unknown(code) => code,
        }
    }

    /// The modeled HTTP status; 500 for an unknown code (use the response's own status).
    pub fn status(&self) -> u16 {
        match self {
            EksAuthErrorCode::AccessDenied
            | EksAuthErrorCode::ExpiredToken
            | EksAuthErrorCode::InvalidToken
            | EksAuthErrorCode::InvalidParameter
            | EksAuthErrorCode::InvalidRequest => 400,
            EksAuthErrorCode::ResourceNotFound => 404,
            EksAuthErrorCode::Throttling => 429,
            EksAuthErrorCode::InternalServer | EksAuthErrorCode::Unknown(_) => 500,
            EksAuthErrorCode::ServiceUnavailable => 503,
        }
    }

    /// What the agent's cache does with it (reference `IsIrrecoverableApiError`).
    pub fn class(&self) -> ErrorClass {
        match self {
            EksAuthErrorCode::AccessDenied
            | EksAuthErrorCode::ExpiredToken
            | EksAuthErrorCode::InvalidToken
            | EksAuthErrorCode::ResourceNotFound => ErrorClass::Irrecoverable,
            _ => ErrorClass::Recoverable,
        }
    }

    /// The modeled fault: server for the two 5xx codes, unknown for unmodeled codes.
    pub fn fault(&self) -> Fault {
        match self {
            EksAuthErrorCode::InternalServer | EksAuthErrorCode::ServiceUnavailable => {
                Fault::Server
            }
            EksAuthErrorCode::Unknown(_) => Fault::Unknown,
            _ => Fault::Client,
        }
    }

    /// Whether the SDK's standard retry strategy retries it (throttling and 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EksAuthErrorCode::Throttling
                | EksAuthErrorCode::InternalServer
                | EksAuthErrorCode::ServiceUnavailable
        )
    }
}

impl fmt::Display for EksAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer from EKS Auth.
///
/// ```
/// use pod_identity_core::eks_auth::{EksAuthError, EksAuthErrorCode, ErrorClass};
///
/// let err = EksAuthError::from_http(
///     400,
///     Some("AccessDeniedException:http://internal.amazon.com/coral/com.amazonaws.eksauth/"),
///     Some("0d2f1f8a-1111-2222-3333-444455556666"),
///     br#"{"message":"not allowed"}"#,
/// );
/// assert_eq!(err.code(), &EksAuthErrorCode::AccessDenied);
/// assert_eq!(err.class(), ErrorClass::Irrecoverable);
/// assert_eq!(
///     err.agent_body(),
///     "[0d2f1f8a-1111-2222-3333-444455556666]: (AccessDeniedException): not allowed, fault: client"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EKS Auth error {code} (HTTP {status}): {message}")]
pub struct EksAuthError {
    code: EksAuthErrorCode,
    status: u16,
    message: String,
    request_id: Option<String>,
    fault: Fault,
}

impl EksAuthError {
    /// An error with the code's modeled fault and no request id.
    pub fn new(code: EksAuthErrorCode, status: u16, message: impl Into<String>) -> Self {
        let fault = code.fault();
        Self {
            code,
            status,
            message: message.into(),
            request_id: None,
            fault,
        }
    }

    /// An error with the code's modeled status.
    pub fn modeled(code: EksAuthErrorCode, message: impl Into<String>) -> Self {
        let status = code.status();
        Self::new(code, status, message)
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the fault.
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// From an HTTP error response: the code from `X-Amzn-Errortype`, else the body's `__type`,
    /// else its `code`; the message from `message`/`Message`; `UnknownError` for what is missing.
    pub fn from_http(
        status: u16,
        error_type_header: Option<&str>,
        request_id: Option<&str>,
        body: &[u8],
    ) -> Self {
        #[derive(Deserialize, Default)]
        struct ErrorBody {
            #[serde(rename = "__type")]
            type_: Option<serde_json::Value>,
            code: Option<serde_json::Value>,
            message: Option<serde_json::Value>,
            #[serde(rename = "Message")]
            message_upper: Option<serde_json::Value>,
        }
        let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let text = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let raw_code = error_type_header
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .or_else(|| text(&parsed.type_))
            .or_else(|| text(&parsed.code))
            .unwrap_or_else(|| "UnknownError".to_owned());
        let message = text(&parsed.message)
            .or_else(|| text(&parsed.message_upper))
            .unwrap_or_else(|| "UnknownError".to_owned());
        let mut err = Self::new(EksAuthErrorCode::from_raw(&raw_code), status, message);
        if let Some(id) = request_id {
            err.request_id = Some(id.to_owned());
        }
        err
    }

    /// The code.
    pub fn code(&self) -> &EksAuthErrorCode {
        &self.code
    }

    /// The HTTP status it came with (the agent answers with it).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request id, when known.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The fault.
    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// The cache class of the code.
    pub fn class(&self) -> ErrorClass {
        self.code.class()
    }

    /// The reference agent's body (without the trailing newline):
    /// `[<request-id>]: (<Code>): <message>, fault: <client|server|unknown>`.
    pub fn agent_body(&self) -> String {
        format!(
            "[{}]: ({}): {}, fault: {}",
            self.request_id.as_deref().unwrap_or_default(),
            self.code,
            self.message,
            self.fault
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modeled_codes() {
        let table = [
            ("AccessDeniedException", 400, ErrorClass::Irrecoverable),
            ("ExpiredTokenException", 400, ErrorClass::Irrecoverable),
            ("InvalidTokenException", 400, ErrorClass::Irrecoverable),
            ("InvalidParameterException", 400, ErrorClass::Recoverable),
            ("InvalidRequestException", 400, ErrorClass::Recoverable),
            ("ResourceNotFoundException", 404, ErrorClass::Irrecoverable),
            ("ThrottlingException", 429, ErrorClass::Recoverable),
            ("InternalServerException", 500, ErrorClass::Recoverable),
            ("ServiceUnavailableException", 503, ErrorClass::Recoverable),
        ];
        for (name, status, class) in table {
            let code = EksAuthErrorCode::from_raw(name);
            assert!(!matches!(code, EksAuthErrorCode::Unknown(_)), "{name}");
            assert_eq!(
                (code.as_str(), code.status(), code.class()),
                (name, status, class)
            );
        }
        let other = EksAuthErrorCode::from_raw("ns#SomethingNew:http://x");
        assert_eq!(other, EksAuthErrorCode::Unknown("SomethingNew".into()));
        assert_eq!(
            (other.class(), other.fault()),
            (ErrorClass::Recoverable, Fault::Unknown)
        );
    }

    #[test]
    fn code_sources_in_order() {
        let body =
            br#"{"__type":"a#ThrottlingException","code":"InternalServerException","message":"m"}"#;
        let from = |h| EksAuthError::from_http(429, h, None, body).code().clone();
        assert_eq!(
            from(Some("ExpiredTokenException")),
            EksAuthErrorCode::ExpiredToken
        );
        assert_eq!(from(None), EksAuthErrorCode::Throttling);
        assert_eq!(from(Some("")), EksAuthErrorCode::Throttling);
        let only_code =
            EksAuthError::from_http(500, None, None, br#"{"code":"InternalServerException:x"}"#);
        assert_eq!(only_code.code(), &EksAuthErrorCode::InternalServer);
        assert_eq!(only_code.message(), "UnknownError");
        let nothing = EksAuthError::from_http(502, None, None, b"<html>bad gateway</html>");
        assert_eq!(nothing.code().as_str(), "UnknownError");
        assert_eq!(
            nothing.agent_body(),
            "[]: (UnknownError): UnknownError, fault: unknown"
        );
        assert_eq!(nothing.status(), 502);
    }

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

    #[test]
    fn request_body() {
        let mut req = AssumeRoleForPodIdentityRequest::new("demo".parse().unwrap(), "jwt".into());
        req.zone = Some("use1-az1".into());
        assert_eq!(req.path(), "/clusters/demo/assume-role-for-pod-identity");
        assert_eq!(req.to_json(), br#"{"token":"jwt","zone":"use1-az1"}"#);
        assert!(!format!("{req:?}").contains("jwt"));
    }
}
