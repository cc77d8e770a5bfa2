//! STS `AssumeRole` for a pod's association, signed with the node's credentials.
//!
//! One call, or two when the association names a target role (role chaining):
//!
//! | | first call (node → `roleArn`) | second call (`roleArn` → `targetRoleArn`) |
//! |---|---|---|
//! | session tags | the six EKS tags, all transitive, unless `disableSessionTags` | none sent: transitive tags carry over |
//! | external id | the association's, when there is no target role | the association's; else, with tags disabled, `region/account/cluster/namespace/service-account` (as EKS) |
//! | session policy | the association's, when there is no target role | the association's |
//! | duration | the configured lifetime (default 1 h) | min(lifetime, 1 h): STS caps chained sessions at 1 h; the first call then asks for 15 min |
//!
//! The session name is `eks-<cluster>-<pod>-<uuid>`, as EKS names its sessions, cut to STS's
//! 64 characters (characters STS does not accept become `-`).
//!
//! Errors keep the agent's EKS Auth vocabulary so the handler and the cache treat them alike:
//!
//! | STS code | agent code | status | cache |
//! |---|---|---|---|
//! | `AccessDenied` | `AccessDeniedException` | 400 | irrecoverable |
//! | `MalformedPolicyDocument`, `PackedPolicyTooLarge`, `ValidationError` | `InvalidParameterException` | 400 | recoverable |
//! | `Throttling` | `ThrottlingException` | 429 | recoverable |
//! | `InternalFailure`, other 5xx | `InternalServerException` / `ServiceUnavailableException` | 500 / 503 | recoverable |
//! | `ExpiredToken`, `InvalidClientTokenId`, `SignatureDoesNotMatch`, `RegionDisabledException` (the node's credentials or account, not the pod) | the STS code | 500 | recoverable |
//! | any other | the STS code | its status | recoverable |
//!
//! Timeouts and unreachable endpoints are [`SourceError::Timeout`] and
//! [`SourceError::Unavailable`] (500 `[]`).

use std::time::{Duration, SystemTime};

use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::RequestId;
use aws_sdk_sts::operation::assume_role::{AssumeRoleError, AssumeRoleOutput};
use aws_sdk_sts::types::Tag;
use pod_identity_core::association::{PodIdentity, external_id, session_tags};
use pod_identity_core::eks_auth::PodIdentityAssociation;
use pod_identity_core::{
    arn::Arn, association::Association, association::ClusterName,
    container_credentials::ContainerCredentials, eks_auth::EksAuthError,
    eks_auth::EksAuthErrorCode, eks_auth::Fault, secret::SecretString,
};

use crate::source::{IssuedCredentials, SourceError};

/// STS's limit on `RoleSessionName`.
pub const MAX_SESSION_NAME_LEN: usize = 64;
/// STS's limit on a chained role session.
pub const MAX_CHAINED_DURATION: Duration = Duration::from_secs(60 * 60);
/// STS's shortest session.
pub const MIN_DURATION: Duration = Duration::from_secs(15 * 60);
/// STS's longest session (the role's `MaxSessionDuration` may be lower; its default is 1 h).
pub const MAX_DURATION: Duration = Duration::from_secs(12 * 60 * 60);

/// Calls STS for associations.
#[derive(Clone, Debug)]
pub(crate) struct RoleAssumer {
    pub(crate) client: aws_sdk_sts::Client,
    pub(crate) duration: Duration,
    pub(crate) cluster_arn: Option<Arn>,
}

/// What the agent knows of the pod when it assumes a role for it.
#[derive(Debug)]
pub(crate) struct Pod<'a> {
    pub(crate) cluster_name: &'a ClusterName,
    pub(crate) verified: &'a super::VerifiedPod,
}

impl RoleAssumer {
    pub(crate) async fn assume(
        &self,
        pod: &Pod<'_>,
        association: &Association,
    ) -> Result<IssuedCredentials, SourceError> {
        let session_name = session_name(pod.cluster_name, &pod.verified.pod_name, &uuid_v4());
        let cluster_arn = self.cluster_arn(pod.cluster_name, &association.role_arn)?;
        let identity = PodIdentity {
            cluster_arn: cluster_arn.clone(),
            cluster_name: pod.cluster_name.clone(),
            namespace: pod.verified.namespace.clone(),
            service_account: pod.verified.service_account.clone(),
            pod_name: pod.verified.pod_name.clone(),
            pod_uid: pod.verified.pod_uid.clone(),
        };
        let chained = association.target_role_arn.is_some();

        let mut first = self
            .client
            .assume_role()
            .role_arn(association.role_arn.as_str())
            .role_session_name(&session_name);
        if !association.disable_session_tags {
            for (key, value) in session_tags(&identity) {
                first = first.tags(tag(key, &value)?).transitive_tag_keys(key);
            }
        }
        if chained {
            first = first.duration_seconds(seconds(MIN_DURATION));
        } else {
            first = first.duration_seconds(seconds(self.duration));
            if let Some(id) = &association.external_id {
                first = first.external_id(id);
            }
            if let Some(policy) = &association.policy {
                first = first.policy(policy);
            }
        }
        let output = first.send().await.map_err(map_sdk_error)?;
        let Some(target) = &association.target_role_arn else {
            return issued(&output, association);
        };

        let hop = credentials_of(&output)?;
        let config = self
            .client
            .config()
            .to_builder()
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                hop.access_key_id,
                hop.secret_access_key.expose_secret(),
                Some(hop.token.expose_secret().to_owned()),
                Some(hop.expiration),
                "pod-identity-role-chain",
            ))
            .build();
        let client = aws_sdk_sts::Client::from_conf(config);
        let mut second = client
            .assume_role()
            .role_arn(target.as_str())
            .role_session_name(&session_name)
            .duration_seconds(seconds(self.duration.min(MAX_CHAINED_DURATION)));
        let external = association.external_id.clone().or_else(|| {
            association.disable_session_tags.then(|| {
                external_id(
                    cluster_arn.region(),
                    cluster_arn.account_id(),
                    pod.cluster_name,
                    &pod.verified.namespace,
                    &pod.verified.service_account,
                )
            })
        });
        if let Some(id) = external {
            second = second.external_id(id);
        }
        if let Some(policy) = &association.policy {
            second = second.policy(policy);
        }
        let output = second.send().await.map_err(map_sdk_error)?;
        issued(&output, association)
    }

    /// The configured cluster ARN, else `arn:<partition>:eks:<sts region>:<role's account>:cluster/<name>`.
    fn cluster_arn(&self, cluster: &ClusterName, role: &Arn) -> Result<Arn, SourceError> {
        if let Some(arn) = &self.cluster_arn {
            return Ok(arn.clone());
        }
        let region = self
            .client
            .config()
            .region()
            .map(ToString::to_string)
            .unwrap_or_default();
        Arn::new(
            role.partition(),
            "eks",
            &region,
            role.account_id(),
            &format!("cluster/{cluster}"),
        )
        .map_err(SourceError::unavailable)
    }
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

fn tag(key: &str, value: &str) -> Result<Tag, SourceError> {
    Tag::builder()
        .key(key)
        .value(value)
        .build()
        .map_err(SourceError::unavailable)
}

fn credentials_of(output: &AssumeRoleOutput) -> Result<ContainerCredentials, SourceError> {
    let credentials = output
        .credentials
        .as_ref()
        .ok_or_else(|| SourceError::unavailable(MissingField("Credentials")))?;
    if credentials.access_key_id.is_empty()
        || credentials.secret_access_key.is_empty()
        || credentials.session_token.is_empty()
    {
        return Err(SourceError::unavailable(MissingField("Credentials")));
    }
    let expiration = SystemTime::try_from(credentials.expiration)
        .map_err(|_| SourceError::unavailable(MissingField("Credentials.Expiration")))?;
    let account_id = output
        .assumed_role_user
        .as_ref()
        .and_then(|user| user.arn.parse::<Arn>().ok())
        .map(|arn| arn.account_id().to_owned());
    Ok(ContainerCredentials {
        access_key_id: credentials.access_key_id.clone(),
        secret_access_key: SecretString::new(credentials.secret_access_key.as_str()),
        token: SecretString::new(credentials.session_token.as_str()),
        account_id,
        expiration,
    })
}

fn issued(
    output: &AssumeRoleOutput,
    association: &Association,
) -> Result<IssuedCredentials, SourceError> {
    let issued = IssuedCredentials::new(credentials_of(output)?);
    Ok(
        match (&association.association_arn, &association.association_id) {
            (Some(arn), Some(id)) => issued.with_association(PodIdentityAssociation {
                association_arn: arn.to_string(),
                association_id: id.to_string(),
            }),
            _ => issued,
        },
    )
}

/// `eks-<cluster>-<pod>-<uuid>`, characters outside STS's `[\w+=,.@-]` replaced by `-`, cut to 64.
pub(crate) fn session_name(cluster: &ClusterName, pod: &str, uuid: &str) -> String {
    format!("eks-{cluster}-{pod}-{uuid}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(MAX_SESSION_NAME_LEN)
        .collect()
}

/// A random (version 4) UUID from the system's secure random source.
fn uuid_v4() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Only the session name's uniqueness depends on it; fall back to a weaker source.
        bytes = fastrand::u128(..).to_be_bytes();
    }
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

#[derive(Debug, thiserror::Error)]
#[error("STS answered without `{0}`")]
struct MissingField(&'static str);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Opaque(String);

fn map_sdk_error(
    error: SdkError<AssumeRoleError, aws_sdk_sts::config::http::HttpResponse>,
) -> SourceError {
    match error {
        SdkError::ServiceError(context) => {
            let raw = context.raw();
            let status = raw.status().as_u16();
            let error = context.err();
            let request_id = error
                .request_id()
                .or_else(|| raw.headers().get("x-amzn-requestid"))
                .map(str::to_owned);
            let mapped = map_sts_error(
                status,
                error.code().unwrap_or("UnknownError"),
                error.message().unwrap_or_default(),
            );
            SourceError::EksAuth(match request_id {
                Some(id) => mapped.with_request_id(id),
                None => mapped,
            })
        }
        SdkError::TimeoutError(_) => SourceError::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => SourceError::Timeout,
        // Keep only the inner error: a response error's raw response may hold credentials.
        other => match other.into_source() {
            Ok(source) => SourceError::Unavailable(source.into()),
            Err(unconverted) => SourceError::unavailable(Opaque(unconverted.to_string())),
        },
    }
}

/// An STS error in the agent's EKS Auth vocabulary (see the module docs' table).
pub(crate) fn map_sts_error(status: u16, code: &str, message: &str) -> EksAuthError {
    let message = format!("STS AssumeRole failed ({code}): {message}");
    match code {
        "AccessDenied" => EksAuthError::modeled(EksAuthErrorCode::AccessDenied, message),
        "MalformedPolicyDocument" | "PackedPolicyTooLarge" | "ValidationError" => {
            EksAuthError::modeled(EksAuthErrorCode::InvalidParameter, message)
        }
        "Throttling" | "ThrottlingException" => {
            EksAuthError::modeled(EksAuthErrorCode::Throttling, message)
        }
        "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "RegionDisabledException" => {
            EksAuthError::new(EksAuthErrorCode::Unknown(code.to_owned()), 500, message)
                .with_fault(Fault::Server)
        }
        _ if status == 503 => EksAuthError::modeled(EksAuthErrorCode::ServiceUnavailable, message),
        _ if status >= 500 => EksAuthError::modeled(EksAuthErrorCode::InternalServer, message),
        _ => EksAuthError::new(EksAuthErrorCode::Unknown(code.to_owned()), status, message),
    }
}

#[cfg(test)]
mod tests {
    use pod_identity_core::eks_auth::ErrorClass;

    use super::*;

    #[test]
    fn session_names_fit_sts() {
        let cluster: ClusterName = "a-very-long-cluster-name-for-testing".parse().unwrap();
        let uuid = uuid_v4();
        let name = session_name(&cluster, "web-7d9f8b6c5d-x2x4z", &uuid);
        assert_eq!(name.len(), 64);
        assert!(name.starts_with("eks-a-very-long-cluster-name-for-testing-web-7d9f"));
        let short = session_name(&"lab".parse().unwrap(), "p", "u");
        assert_eq!(short, "eks-lab-p-u");
        assert_eq!(
            session_name(&"lab".parse().unwrap(), "a b/c", "u"),
            "eks-lab-a-b-c-u"
        );
    }

    #[test]
    fn uuids_are_version_4_and_differ() {
        let (a, b) = (uuid_v4(), uuid_v4());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]));
    }

    #[test]
    fn sts_errors_keep_the_agents_statuses_and_classes() {
        let cases = [
            (
                403,
                "AccessDenied",
                "AccessDeniedException",
                400,
                ErrorClass::Irrecoverable,
            ),
            (
                400,
                "MalformedPolicyDocument",
                "InvalidParameterException",
                400,
                ErrorClass::Recoverable,
            ),
            (
                400,
                "PackedPolicyTooLarge",
                "InvalidParameterException",
                400,
                ErrorClass::Recoverable,
            ),
            (
                400,
                "ValidationError",
                "InvalidParameterException",
                400,
                ErrorClass::Recoverable,
            ),
            (
                400,
                "Throttling",
                "ThrottlingException",
                429,
                ErrorClass::Recoverable,
            ),
            (
                400,
                "ExpiredToken",
                "ExpiredToken",
                500,
                ErrorClass::Recoverable,
            ),
            (
                403,
                "InvalidClientTokenId",
                "InvalidClientTokenId",
                500,
                ErrorClass::Recoverable,
            ),
            (
                403,
                "RegionDisabledException",
                "RegionDisabledException",
                500,
                ErrorClass::Recoverable,
            ),
            (
                500,
                "InternalFailure",
                "InternalServerException",
                500,
                ErrorClass::Recoverable,
            ),
            (
                503,
                "ServiceUnavailable",
                "ServiceUnavailableException",
                503,
                ErrorClass::Recoverable,
            ),
            (409, "Odd", "Odd", 409, ErrorClass::Recoverable),
        ];
        for (sts_status, sts_code, code, status, class) in cases {
            let error = map_sts_error(sts_status, sts_code, "why");
            assert_eq!(error.code().as_str(), code, "{sts_code}");
            assert_eq!(error.status(), status, "{sts_code}");
            assert_eq!(error.class(), class, "{sts_code}");
            assert_eq!(
                error.message(),
                format!("STS AssumeRole failed ({sts_code}): why")
            );
        }
    }
}
