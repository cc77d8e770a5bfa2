//! [`EksAuthSource`]: credentials from EKS Auth `AssumeRoleForPodIdentity` (feature `eks-auth`).
//!
//! The call is signed (SigV4, service `eks-auth`) with the node's own credentials from the
//! aws-config default chain, unless a provider or an `SdkConfig` is given (see
//! [`AwsClientSettings`]). Defaults follow the reference agent: 1 s per attempt, 500 ms to
//! connect, the SDK's standard retries (3 attempts), unless the SDK configuration sets others
//! (`AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`, the profile's `max_attempts`/`retry_mode`) or
//! [`AwsClientSettings::max_attempts`] does. The optional request fields `eksNodeName`,
//! `instanceId` and `zone` are set through the SDK's own request builder.
//! The endpoint is `https://eks-auth.{region}.api.aws` (FIPS and China variants via the SDK's
//! resolver) unless overridden, for example with a PrivateLink endpoint.
//!
//! Errors map to [`SourceError`]: an error response becomes core's [`EksAuthError`] (code from
//! the `X-Amzn-Errortype` header or the body's `__type`/`code`, status, request id, fault);
//! timeouts become [`SourceError::Timeout`], and connection failures and unreadable answers
//! [`SourceError::Unavailable`] — both answered 500 `[]`.

use std::time::{Duration, SystemTime};

use aws_sdk_eksauth::error::SdkError;
use aws_sdk_eksauth::operation::RequestId;
use aws_sdk_eksauth::operation::assume_role_for_pod_identity::{
    AssumeRoleForPodIdentityError, AssumeRoleForPodIdentityOutput,
};
use pod_identity_core::eks_auth::EksAuthError;
use pod_identity_core::eks_auth::PodIdentityAssociation;
use pod_identity_core::secret::SecretString;
use pod_identity_core::{arn::Arn, container_credentials::ContainerCredentials};

use crate::source::aws_client::ClientDefaults;
use crate::source::{
    AwsClientSettings, CredentialRequest, CredentialSource, IssuedCredentials, SourceError,
};

/// Default per-attempt timeout of an EKS Auth call (the reference's).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default connect timeout of an EKS Auth call (the reference's).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default attempts per call (the SDK's standard retry mode).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Issues credentials by calling EKS Auth `AssumeRoleForPodIdentity`.
#[derive(Clone, Debug)]
pub struct EksAuthSource {
    client: aws_sdk_eksauth::Client,
    node: NodeDetails,
}

/// The optional node fields of the request (`eksNodeName`, `instanceId`, `zone`).
#[derive(Clone, Debug, Default)]
struct NodeDetails {
    eks_node_name: Option<String>,
    instance_id: Option<String>,
    zone: Option<String>,
}

/// Why an [`EksAuthSource`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EksAuthSourceError {
    /// No region was given and none was found in the environment or profile.
    #[error("no AWS region configured for EKS Auth")]
    NoRegion,
}

impl EksAuthSource {
    /// A builder with the reference defaults.
    pub fn builder() -> EksAuthSourceBuilder {
        EksAuthSourceBuilder::default()
    }

    /// Calls `AssumeRoleForPodIdentity` for `request`.
    pub async fn assume_role_for_pod_identity(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, SourceError> {
        let output = self
            .client
            .assume_role_for_pod_identity()
            .cluster_name(request.cluster_name().as_str())
            .token(request.token().expose_secret())
            .set_eks_node_name(self.node.eks_node_name.clone())
            .set_instance_id(self.node.instance_id.clone())
            .set_zone(self.node.zone.clone())
            .send()
            .await
            .map_err(map_sdk_error)?;
        issued(output)
    }
}

impl CredentialSource for EksAuthSource {
    async fn credentials(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, SourceError> {
        self.assume_role_for_pod_identity(request).await
    }
}

/// Builds an [`EksAuthSource`].
#[derive(Debug, Default)]
pub struct EksAuthSourceBuilder {
    aws_client: AwsClientSettings,
    node: NodeDetails,
}

impl EksAuthSourceBuilder {
    /// The EKS Auth client's settings: region, endpoint, signing credentials, timeouts
    /// (default 1 s per attempt, 500 ms to connect) and attempts.
    pub fn aws_client(
        mut self,
        configure: impl FnOnce(AwsClientSettings) -> AwsClientSettings,
    ) -> Self {
        self.aws_client = configure(self.aws_client);
        self
    }

    /// The node's name, sent as `eksNodeName`.
    pub fn eks_node_name(mut self, name: impl Into<String>) -> Self {
        self.node.eks_node_name = Some(name.into());
        self
    }

    /// The node's EC2 instance id, sent as `instanceId`.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.node.instance_id = Some(id.into());
        self
    }

    /// The node's availability zone id (such as `use1-az1`), sent as `zone`.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.node.zone = Some(zone.into());
        self
    }

    /// Loads aws-config's defaults (unless an `SdkConfig` was given) and builds the source.
    pub async fn build(self) -> Result<EksAuthSource, EksAuthSourceError> {
        let defaults = ClientDefaults::new(
            DEFAULT_ATTEMPT_TIMEOUT,
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_MAX_ATTEMPTS,
        );
        let Some(config) = self.aws_client.load(defaults).await else {
            return Err(EksAuthSourceError::NoRegion);
        };
        Ok(EksAuthSource {
            client: aws_sdk_eksauth::Client::new(&config),
            node: self.node,
        })
    }
}

fn map_sdk_error(
    error: SdkError<AssumeRoleForPodIdentityError, aws_sdk_eksauth::config::http::HttpResponse>,
) -> SourceError {
    match error {
        SdkError::ServiceError(context) => {
            let raw = context.raw();
            let status = raw.status().as_u16();
            // The SDK reports a success body it cannot read as a service error with the
            // response's (2xx) status; passed on, the pod would get a 200 with an error text.
            // Only error statuses are EKS Auth's errors; anything else is an unreadable answer.
            if !(400..=599).contains(&status) {
                return SourceError::unavailable(UnreadableAnswer(status));
            }
            let header = |name: &str| raw.headers().get(name);
            let request_id = context
                .err()
                .request_id()
                .or_else(|| header("x-amzn-requestid"));
            SourceError::EksAuth(EksAuthError::from_http(
                status,
                header("x-amzn-errortype"),
                request_id,
                raw.body().bytes().unwrap_or_default(),
            ))
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

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Opaque(String);

#[derive(Debug, thiserror::Error)]
#[error("EKS Auth answered {0} with a body that is not a response")]
struct UnreadableAnswer(u16);

#[derive(Debug, thiserror::Error)]
#[error("EKS Auth answered without `{0}`")]
struct MissingField(&'static str);

/// The issued credentials in an EKS Auth answer, rendered straight into what the agent
/// serves (the SDK's strings move in; nothing is copied or parsed back).
fn issued(output: AssumeRoleForPodIdentityOutput) -> Result<IssuedCredentials, SourceError> {
    let missing = |field| SourceError::unavailable(MissingField(field));
    if output.subject.is_none() {
        return Err(missing("subject"));
    }
    let association = output
        .pod_identity_association
        .ok_or_else(|| missing("podIdentityAssociation"))?;
    let user = output
        .assumed_role_user
        .ok_or_else(|| missing("assumedRoleUser"))?;
    let credentials = output.credentials.ok_or_else(|| missing("credentials"))?;
    // The SDK fills missing required members with empty defaults; empty keys are unusable.
    if credentials.access_key_id.is_empty()
        || credentials.secret_access_key.is_empty()
        || credentials.session_token.is_empty()
    {
        return Err(missing("credentials"));
    }
    // A missing `expiration` reaches here as the SDK's default (the epoch); one past year 9999
    // could not be written for the pod's SDK.
    let expiration = SystemTime::try_from(credentials.expiration)
        .ok()
        .filter(|t| {
            let secs = pod_identity_core::time::to_epoch(*t).0;
            secs > 0 && secs <= pod_identity_core::time::MAX_RFC3339_EPOCH_SECS
        })
        .ok_or_else(|| missing("credentials.expiration"))?;
    // The account of the assumed role, as core reads it from an EKS Auth response.
    let account_id = user
        .arn
        .parse::<Arn>()
        .ok()
        .map(|arn| arn.account_id().to_owned())
        .filter(|account| !account.is_empty());
    let served = ContainerCredentials {
        access_key_id: credentials.access_key_id,
        secret_access_key: SecretString::new(credentials.secret_access_key),
        token: SecretString::new(credentials.session_token),
        account_id,
        expiration,
    };
    Ok(
        IssuedCredentials::new(served).with_association(PodIdentityAssociation {
            association_arn: association.association_arn,
            association_id: association.association_id,
        }),
    )
}
