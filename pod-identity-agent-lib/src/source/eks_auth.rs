//! [`EksAuthSource`]: credentials from EKS Auth `AssumeRoleForPodIdentity` (feature `eks-auth`).
//!
//! The call is signed (SigV4, service `eks-auth`) with the node's own credentials from the
//! aws-config default chain, unless a provider or an `SdkConfig` is given. Defaults follow the
//! reference agent: 1 s per attempt, 500 ms to connect, the SDK's standard retries (3 attempts).
//! The endpoint is `https://eks-auth.{region}.api.aws` (FIPS and China variants via the SDK's
//! resolver) unless overridden, for example with a PrivateLink endpoint.
//!
//! Errors map to [`SourceError`]: an error response becomes core's [`EksAuthError`] (code from
//! the `X-Amzn-Errortype` header or the body's `__type`/`code`, status, request id, fault);
//! timeouts become [`SourceError::Timeout`], and connection failures and unreadable answers
//! [`SourceError::Unavailable`] — both answered 500 `[]`.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_eksauth::config::retry::RetryConfig;
use aws_sdk_eksauth::config::timeout::TimeoutConfig;
use aws_sdk_eksauth::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_eksauth::config::{
    ConfigBag, Intercept, ProvideCredentials, Region, RuntimeComponents, SharedCredentialsProvider,
};
use aws_sdk_eksauth::error::SdkError;
use aws_sdk_eksauth::operation::RequestId;
use aws_sdk_eksauth::operation::assume_role_for_pod_identity::{
    AssumeRoleForPodIdentityError, AssumeRoleForPodIdentityOutput,
};
use aws_smithy_types::body::SdkBody;
use pod_identity_core::SecretString;
use pod_identity_core::eks_auth::{
    AssumeRoleForPodIdentityResponse, AssumedRoleUser, EksCredentials, PodIdentityAssociation,
    Subject,
};
use pod_identity_core::EksAuthError;

use crate::source::{CredentialRequest, CredentialSource, IssuedCredentials, SourceError};

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
}

/// The optional node fields of the request body.
#[derive(Clone, Debug, Default)]
struct NodeDetails {
    eks_node_name: Option<String>,
    instance_id: Option<String>,
    zone: Option<String>,
}

impl NodeDetails {
    fn is_empty(&self) -> bool {
        self.eks_node_name.is_none() && self.instance_id.is_none() && self.zone.is_none()
    }

    fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("eksNodeName", &self.eks_node_name),
            ("instanceId", &self.instance_id),
            ("zone", &self.zone),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
    }
}

/// Adds `eksNodeName`, `instanceId` and `zone` to the request body before signing.
///
/// The `aws-sdk-eksauth` this workspace can use (1.90, for its minimum Rust version) predates
/// these members of the model, so they are written into the serialized restJson1 body.
#[derive(Debug)]
struct NodeDetailsInterceptor(NodeDetails);

impl Intercept for NodeDetailsInterceptor {
    fn name(&self) -> &'static str {
        "NodeDetailsInterceptor"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let Some(body) = request.body().bytes() else {
            return Ok(());
        };
        let mut document: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(body)?;
        for (name, value) in self.0.fields() {
            document.insert(name.to_owned(), value.into());
        }
        let body = serde_json::to_vec(&document)?;
        request
            .headers_mut()
            .insert("content-length", body.len().to_string());
        *request.body_mut() = SdkBody::from(body);
        Ok(())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
            .send()
            .await
            .map_err(map_sdk_error)?;
        let response = convert(output)?;
        Ok(IssuedCredentials::from(response))
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
#[derive(Default)]
pub struct EksAuthSourceBuilder {
    sdk_config: Option<SdkConfig>,
    region: Option<String>,
    endpoint_url: Option<String>,
    fips: bool,
    credentials_provider: Option<SharedCredentialsProvider>,
    attempt_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    max_attempts: Option<u32>,
    node: NodeDetails,
}

impl fmt::Debug for EksAuthSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credentials provider is left out: it may hold static keys.
        f.debug_struct("EksAuthSourceBuilder")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("fips", &self.fips)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl EksAuthSourceBuilder {
    /// Starts from this SDK configuration instead of loading aws-config's defaults.
    pub fn sdk_config(mut self, config: SdkConfig) -> Self {
        self.sdk_config = Some(config);
        self
    }

    /// The region of the cluster (else the environment's or profile's).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// An endpoint URL instead of the regional one (e.g. PrivateLink, or a local simulator).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Uses the FIPS endpoint (`eks-auth-fips.{region}.api.aws`).
    pub fn fips(mut self, fips: bool) -> Self {
        self.fips = fips;
        self
    }

    /// Signs with these credentials instead of the default chain's.
    pub fn credentials_provider(mut self, provider: impl ProvideCredentials + 'static) -> Self {
        self.credentials_provider = Some(SharedCredentialsProvider::new(provider));
        self
    }

    /// The timeout of each attempt (default 1 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The connect timeout (default 500 ms).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Attempts per call with the SDK's standard retry mode (default 3; 1 turns retries off).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
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
        let sdk_config = match self.sdk_config {
            Some(config) => config,
            None => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = &self.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                loader.load().await
            }
        };
        let timeouts = TimeoutConfig::builder()
            .operation_attempt_timeout(self.attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT))
            .connect_timeout(self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
            .build();
        let retries = RetryConfig::standard()
            .with_max_attempts(self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS));
        let mut config = aws_sdk_eksauth::config::Builder::from(&sdk_config)
            .timeout_config(timeouts)
            .retry_config(retries);
        if let Some(region) = self.region {
            config = config.region(Region::new(region));
        }
        if let Some(url) = self.endpoint_url {
            config = config.endpoint_url(url);
        }
        if self.fips {
            config = config.use_fips(true);
        }
        if let Some(provider) = self.credentials_provider {
            config.set_credentials_provider(Some(provider));
        }
        if !self.node.is_empty() {
            config = config.interceptor(NodeDetailsInterceptor(self.node));
        }
        let config = config.build();
        if config.region().is_none() {
            return Err(EksAuthSourceError::NoRegion);
        }
        Ok(EksAuthSource {
            client: aws_sdk_eksauth::Client::from_conf(config),
        })
    }
}

fn map_sdk_error(
    error: SdkError<AssumeRoleForPodIdentityError, aws_sdk_eksauth::config::http::HttpResponse>,
) -> SourceError {
    match error {
        SdkError::ServiceError(context) => {
            let raw = context.raw();
            let header = |name: &str| raw.headers().get(name);
            let request_id = context
                .err()
                .request_id()
                .or_else(|| header("x-amzn-requestid"));
            SourceError::EksAuth(EksAuthError::from_http(
                raw.status().as_u16(),
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
#[error("EKS Auth answered without `{0}`")]
struct MissingField(&'static str);

fn convert(output: AssumeRoleForPodIdentityOutput) -> Result<AssumeRoleForPodIdentityResponse, SourceError> {
    let missing = |field| SourceError::unavailable(MissingField(field));
    let subject = output.subject.ok_or_else(|| missing("subject"))?;
    let association = output
        .pod_identity_association
        .ok_or_else(|| missing("podIdentityAssociation"))?;
    let user = output
        .assumed_role_user
        .ok_or_else(|| missing("assumedRoleUser"))?;
    let credentials = output.credentials.ok_or_else(|| missing("credentials"))?;
    let expiration = SystemTime::try_from(credentials.expiration)
        .map_err(|_| missing("credentials.expiration"))?;
    Ok(AssumeRoleForPodIdentityResponse {
        subject: Subject {
            namespace: subject.namespace,
            service_account: subject.service_account,
        },
        audience: output.audience,
        pod_identity_association: PodIdentityAssociation {
            association_arn: association.association_arn,
            association_id: association.association_id,
        },
        assumed_role_user: AssumedRoleUser {
            arn: user.arn,
            assume_role_id: user.assume_role_id,
        },
        credentials: EksCredentials {
            session_token: SecretString::new(credentials.session_token),
            secret_access_key: SecretString::new(credentials.secret_access_key),
            access_key_id: credentials.access_key_id,
            expiration,
        },
    })
}
