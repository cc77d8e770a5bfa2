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

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use aws_config::retry::RetryConfig;
    use aws_config::{BehaviorVersion, SdkConfig};
    use aws_sdk_eksauth::config::Credentials;
    use pod_identity_core::{eks_auth::EksAuthErrorCode, eks_auth::ErrorClass, eks_auth::Fault};
    use wiremock::matchers::{body_partial_json, header, method, path};
    use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

    use super::*;
    use crate::test_support::{day_token, request};

    const PATH: &str = "/clusters/demo/assume-role-for-pod-identity";

    /// A SigV4 `Authorization` header for service `eks-auth` signed by the test key.
    struct SignedForEksAuth;

    impl Match for SignedForEksAuth {
        fn matches(&self, request: &Request) -> bool {
            request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
                        && v.contains("/us-west-2/eks-auth/aws4_request")
                })
        }
    }

    fn success_body() -> serde_json::Value {
        serde_json::json!({
            "subject": {"namespace": "default", "serviceAccount": "app"},
            "audience": "pods.eks.amazonaws.com",
            "podIdentityAssociation": {
                "associationArn": "arn:aws:eks:us-west-2:111122223333:podidentityassociation/demo/a-abcdefghijklmnopq",
                "associationId": "a-abcdefghijklmnopq"
            },
            "assumedRoleUser": {
                "arn": "arn:aws:sts::111122223333:assumed-role/app-role/eks-demo-p-1234",
                "assumeRoleId": "AROAEXAMPLE:eks-demo-p-1234"
            },
            "credentials": {
                "sessionToken": "session-token",
                "secretAccessKey": "secret-access-key",
                "accessKeyId": "ASIAEXAMPLE",
                "expiration": 1_700_021_600.25
            }
        })
    }

    /// A 503 `ServiceUnavailableException`.
    fn busy() -> ResponseTemplate {
        ResponseTemplate::new(503)
            .insert_header("x-amzn-errortype", "ServiceUnavailableException")
            .set_body_json(serde_json::json!({"message": "busy"}))
    }

    fn settings(endpoint: String) -> AwsClientSettings {
        AwsClientSettings::new()
            .region("us-west-2")
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new(
                "AKIDTEST",
                "test-secret",
                None,
                None,
                "test",
            ))
    }

    fn builder(server: &MockServer) -> EksAuthSourceBuilder {
        EksAuthSource::builder().aws_client(|_| settings(server.uri()))
    }

    /// Mounts `response` for every EKS Auth call on `server`; mocks mounted earlier answer
    /// first while they last.
    async fn answer(server: &MockServer, response: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path(PATH))
            .respond_with(response)
            .mount(server)
            .await;
    }

    /// A server answering every EKS Auth call with `response`.
    async fn answering(response: ResponseTemplate) -> MockServer {
        let server = MockServer::start().await;
        answer(&server, response).await;
        server
    }

    /// The error of one call, in one attempt, to a source pointed at `server`.
    async fn single_attempt_error(server: &MockServer) -> SourceError {
        let source = builder(server)
            .aws_client(|aws| aws.max_attempts(1))
            .build()
            .await
            .unwrap();
        source
            .credentials(&request(&day_token("p")))
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn success_is_mapped_from_a_signed_restjson1_call() {
        let server = MockServer::start().await;
        let token = day_token("p");
        Mock::given(method("POST"))
            .and(path(PATH))
            .and(header("content-type", "application/json"))
            .and(SignedForEksAuth)
            .and(body_partial_json(serde_json::json!({"token": token})))
            .respond_with(ResponseTemplate::new(200).set_body_json(success_body()))
            .expect(1)
            .mount(&server)
            .await;
        let source = builder(&server).build().await.unwrap();
        let issued = source.credentials(&request(&token)).await.unwrap();
        let credentials = issued.credentials();
        assert_eq!(credentials.access_key_id, "ASIAEXAMPLE");
        assert_eq!(
            credentials.secret_access_key.expose_secret(),
            "secret-access-key"
        );
        assert_eq!(credentials.token.expose_secret(), "session-token");
        assert_eq!(issued.account_id(), Some("111122223333"));
        assert_eq!(
            issued.expiration(),
            UNIX_EPOCH + Duration::from_millis(1_700_021_600_250)
        );
        assert_eq!(
            issued.association().unwrap().association_id,
            "a-abcdefghijklmnopq"
        );
        // No node details unless configured.
        let received = &server.received_requests().await.unwrap()[0];
        let body: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    }

    #[tokio::test]
    async fn the_served_json_is_cores_rendering_of_the_answer() {
        let server = answering(ResponseTemplate::new(200).set_body_json(success_body())).await;
        let source = builder(&server).build().await.unwrap();
        let issued = source.credentials(&request(&day_token("p"))).await.unwrap();
        let answer = pod_identity_core::eks_auth::AssumeRoleForPodIdentityResponse::from_json(
            success_body().to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&issued.json_body()).unwrap(),
            answer.to_container_credentials().to_json()
        );
    }

    #[tokio::test]
    async fn node_details_are_sent_when_configured() {
        let server = MockServer::start().await;
        let token = day_token("p");
        Mock::given(method("POST"))
            .and(path(PATH))
            .and(SignedForEksAuth)
            .and(body_partial_json(serde_json::json!({
                "token": token,
                "eksNodeName": "ip-10-0-0-1.us-west-2.compute.internal",
                "instanceId": "i-0123456789abcdef0",
                "zone": "usw2-az1"
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(success_body()))
            .expect(1)
            .mount(&server)
            .await;
        let source = builder(&server)
            .eks_node_name("ip-10-0-0-1.us-west-2.compute.internal")
            .instance_id("i-0123456789abcdef0")
            .zone("usw2-az1")
            .build()
            .await
            .unwrap();
        source.credentials(&request(&token)).await.unwrap();
        let received = &server.received_requests().await.unwrap()[0];
        assert_eq!(
            received.headers["content-length"].to_str().unwrap(),
            received.body.len().to_string()
        );
    }

    #[derive(Clone, Copy, Debug)]
    enum Via {
        Header,
        Type,
        Code,
    }

    async fn error_for(status: u16, code: &str, via: Via) -> EksAuthError {
        let mut response =
            ResponseTemplate::new(status).insert_header("x-amzn-requestid", "req-42");
        response = match via {
            Via::Header => response
                .insert_header(
                    "x-amzn-errortype",
                    format!("{code}:http://internal.amazon.com/"),
                )
                .set_body_json(serde_json::json!({"message": "it failed"})),
            Via::Type => response.set_body_json(serde_json::json!({
                "__type": format!("com.amazonaws.eksauth#{code}"),
                "message": "it failed"
            })),
            Via::Code => {
                response.set_body_json(serde_json::json!({"code": code, "message": "it failed"}))
            }
        };
        match single_attempt_error(&answering(response).await).await {
            SourceError::EksAuth(error) => error,
            other => panic!("{status} {code} {via:?}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn each_error_code_keeps_its_status_class_request_id_and_fault_from_every_source() {
        let cases = [
            (
                400,
                "AccessDeniedException",
                ErrorClass::Irrecoverable,
                Fault::Client,
            ),
            (
                400,
                "ExpiredTokenException",
                ErrorClass::Irrecoverable,
                Fault::Client,
            ),
            (
                400,
                "InvalidTokenException",
                ErrorClass::Irrecoverable,
                Fault::Client,
            ),
            (
                400,
                "InvalidParameterException",
                ErrorClass::Recoverable,
                Fault::Client,
            ),
            (
                400,
                "InvalidRequestException",
                ErrorClass::Recoverable,
                Fault::Client,
            ),
            (
                404,
                "ResourceNotFoundException",
                ErrorClass::Irrecoverable,
                Fault::Client,
            ),
            (
                429,
                "ThrottlingException",
                ErrorClass::Recoverable,
                Fault::Client,
            ),
            (
                500,
                "InternalServerException",
                ErrorClass::Recoverable,
                Fault::Server,
            ),
            (
                503,
                "ServiceUnavailableException",
                ErrorClass::Recoverable,
                Fault::Server,
            ),
            (
                418,
                "TeapotException",
                ErrorClass::Recoverable,
                Fault::Unknown,
            ),
        ];
        for (status, code, class, fault) in cases {
            for via in [Via::Header, Via::Type, Via::Code] {
                let error = error_for(status, code, via).await;
                assert_eq!(error.code().as_str(), code, "{via:?}");
                assert_eq!(error.status(), status, "{code} {via:?}");
                assert_eq!(error.class(), class, "{code} {via:?}");
                assert_eq!(error.fault(), fault, "{code} {via:?}");
                assert_eq!(error.request_id(), Some("req-42"), "{code} {via:?}");
                assert_eq!(error.message(), "it failed");
                let agent = SourceError::EksAuth(error).to_agent_error();
                assert_eq!(agent.status(), status);
                assert_eq!(
                    agent.body(),
                    format!("[req-42]: ({code}): it failed, fault: {}\n", fault.as_str())
                );
            }
        }
        assert_eq!(
            error_for(404, "ResourceNotFoundException", Via::Header)
                .await
                .code(),
            &EksAuthErrorCode::ResourceNotFound
        );
    }

    #[tokio::test]
    async fn server_errors_are_retried_by_the_standard_retry_mode() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(PATH))
            .respond_with(busy())
            .up_to_n_times(1)
            .mount(&server)
            .await;
        answer(
            &server,
            ResponseTemplate::new(200).set_body_json(success_body()),
        )
        .await;
        let source = builder(&server).build().await.unwrap();
        source.credentials(&request(&day_token("p"))).await.unwrap();
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }

    /// The SDK configuration's retries (where `AWS_MAX_ATTEMPTS` and `AWS_RETRY_MODE` land)
    /// apply unless `max_attempts` is set.
    #[tokio::test]
    async fn the_sdk_configurations_retries_apply_unless_max_attempts_is_set() {
        let server = answering(busy()).await;
        let one_attempt = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .build();
        let source = builder(&server)
            .aws_client(|aws| aws.sdk_config(one_attempt.clone()))
            .build()
            .await
            .unwrap();
        let token = day_token("p");
        source.credentials(&request(&token)).await.unwrap_err();
        assert_eq!(server.received_requests().await.unwrap().len(), 1);

        let source = builder(&server)
            .aws_client(|aws| aws.sdk_config(one_attempt).max_attempts(2))
            .build()
            .await
            .unwrap();
        source.credentials(&request(&token)).await.unwrap_err();
        assert_eq!(server.received_requests().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_slow_answer_is_a_timeout_and_answered_500_empty_brackets() {
        let server = answering(
            ResponseTemplate::new(200)
                .set_body_json(success_body())
                .set_delay(Duration::from_secs(5)),
        )
        .await;
        let source = builder(&server)
            .aws_client(|aws| {
                aws.attempt_timeout(Duration::from_millis(200))
                    .max_attempts(1)
            })
            .build()
            .await
            .unwrap();
        let error = source
            .credentials(&request(&day_token("p")))
            .await
            .unwrap_err();
        assert!(matches!(error, SourceError::Timeout), "{error:?}");
        assert_eq!(error.to_agent_error().body(), "[]\n");
        assert_eq!(error.class(), ErrorClass::Recoverable);
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_unavailable_and_answered_500_empty_brackets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let source = EksAuthSource::builder()
            .aws_client(|_| settings(format!("http://{addr}")).max_attempts(1))
            .build()
            .await
            .unwrap();
        let token = day_token("p");
        let error = source.credentials(&request(&token)).await.unwrap_err();
        assert!(
            matches!(error, SourceError::Unavailable(_) | SourceError::Timeout),
            "{error:?}"
        );
        assert_eq!(error.to_agent_error().status(), 500);
        assert_eq!(error.to_agent_error().body(), "[]\n");
        let debug = format!("{error:?} {error}");
        assert!(!debug.contains(&token));
    }

    #[tokio::test]
    async fn a_malformed_success_body_is_unavailable() {
        let mut body = success_body();
        body.as_object_mut().unwrap().remove("credentials");
        let server = answering(ResponseTemplate::new(200).set_body_json(body)).await;
        let error = single_attempt_error(&server).await;
        assert!(matches!(error, SourceError::Unavailable(_)), "{error:?}");
        assert!(!format!("{error:?}").contains("secret-access-key"));
    }

    #[tokio::test]
    async fn a_region_is_required() {
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        let error = EksAuthSource::builder()
            .aws_client(|aws| aws.sdk_config(config))
            .build()
            .await
            .unwrap_err();
        assert!(matches!(error, EksAuthSourceError::NoRegion));
    }

    #[tokio::test]
    async fn the_builder_debug_does_not_show_the_signing_credentials() {
        let server = MockServer::start().await;
        let debug = format!("{:?}", builder(&server));
        assert!(!debug.contains("test-secret"), "{debug}");
    }
}
