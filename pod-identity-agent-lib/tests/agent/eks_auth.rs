//! The EKS Auth source alone, with wiremock playing EKS Auth: the signed restJson1 call, its
//! answers and errors, retries and timeouts.

use std::time::{Duration, UNIX_EPOCH};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use pod_identity_core::eks_auth::{EksAuthError, EksAuthErrorCode, ErrorClass, Fault};
use pod_identity_core::token::ServiceAccountToken;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    CredentialRequest, CredentialSource, EKS_AUTH_PATH as PATH, EksAuthSource,
    EksAuthSourceBuilder, EksAuthSourceError, NODE_DETAILS, NODE_SECRET, SignedForEksAuth,
    SourceError, eks_auth_answering, eks_auth_source, pod_token, success_body,
};

/// The answer the tests expect: credentials `ASIAEXAMPLE` expiring at 1700021600.25.
fn answer_body() -> serde_json::Value {
    success_body(
        "ASIAEXAMPLE",
        UNIX_EPOCH + Duration::from_millis(1_700_021_600_250),
    )
}

/// A validated request for `token`.
fn request(token: &str) -> CredentialRequest {
    CredentialRequest::new(
        "demo".parse().unwrap(),
        ServiceAccountToken::decode(token).unwrap(),
    )
}

/// A 503 `ServiceUnavailableException`.
fn busy() -> ResponseTemplate {
    ResponseTemplate::new(503)
        .insert_header("x-amzn-errortype", "ServiceUnavailableException")
        .set_body_json(serde_json::json!({"message": "busy"}))
}

fn builder(server: &MockServer) -> EksAuthSourceBuilder {
    eks_auth_source(server.uri())
}

/// The error of one call, in one attempt, to a source pointed at `server`.
async fn single_attempt_error(server: &MockServer) -> SourceError {
    let source = builder(server)
        .aws_client(|aws| aws.max_attempts(1))
        .build()
        .await
        .unwrap();
    source
        .credentials(&request(&pod_token("p")))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn success_is_mapped_from_a_signed_restjson1_call() {
    let server = MockServer::start().await;
    let token = pod_token("p");
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(header("content-type", "application/json"))
        .and(SignedForEksAuth)
        .and(body_partial_json(serde_json::json!({"token": token})))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer_body()))
        .expect(1)
        .mount(&server)
        .await;
    let source = builder(&server).build().await.unwrap();
    let issued = source.credentials(&request(&token)).await.unwrap();
    let credentials = issued.credentials();
    assert_eq!(credentials.access_key_id, "ASIAEXAMPLE");
    assert_eq!(
        credentials.secret_access_key.expose_secret(),
        "secret-key-of-ASIAEXAMPLE"
    );
    assert_eq!(
        credentials.token.expose_secret(),
        "session-token-of-ASIAEXAMPLE"
    );
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
    let server = eks_auth_answering(ResponseTemplate::new(200).set_body_json(answer_body())).await;
    let source = builder(&server).build().await.unwrap();
    let issued = source.credentials(&request(&pod_token("p"))).await.unwrap();
    let answer = pod_identity_core::eks_auth::AssumeRoleForPodIdentityResponse::from_json(
        answer_body().to_string().as_bytes(),
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
    let token = pod_token("p");
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(SignedForEksAuth)
        .and(body_partial_json(NODE_DETAILS.request_body(&token)))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer_body()))
        .expect(1)
        .mount(&server)
        .await;
    let source = NODE_DETAILS
        .sent_by(builder(&server))
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
    let mut response = ResponseTemplate::new(status).insert_header("x-amzn-requestid", "req-42");
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
    match single_attempt_error(&eks_auth_answering(response).await).await {
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
    // The first call is busy; the mock mounted second answers the retry.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(busy())
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer_body()))
        .mount(&server)
        .await;
    let source = builder(&server).build().await.unwrap();
    source.credentials(&request(&pod_token("p"))).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

/// The SDK configuration's retries (where `AWS_MAX_ATTEMPTS` and `AWS_RETRY_MODE` land)
/// apply unless `max_attempts` is set.
#[tokio::test]
async fn the_sdk_configurations_retries_apply_unless_max_attempts_is_set() {
    let server = eks_auth_answering(busy()).await;
    let one_attempt = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .build();
    let source = builder(&server)
        .aws_client(|aws| aws.sdk_config(one_attempt.clone()))
        .build()
        .await
        .unwrap();
    let token = pod_token("p");
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
    let server = eks_auth_answering(
        ResponseTemplate::new(200)
            .set_body_json(answer_body())
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
        .credentials(&request(&pod_token("p")))
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
    let source = eks_auth_source(format!("http://{addr}"))
        .aws_client(|aws| aws.max_attempts(1))
        .build()
        .await
        .unwrap();
    let token = pod_token("p");
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
    let mut body = answer_body();
    body.as_object_mut().unwrap().remove("credentials");
    let server = eks_auth_answering(ResponseTemplate::new(200).set_body_json(body)).await;
    let error = single_attempt_error(&server).await;
    assert!(matches!(error, SourceError::Unavailable(_)), "{error:?}");
    assert!(!format!("{error:?}").contains("secret-key-of-ASIAEXAMPLE"));
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
    assert!(!debug.contains(NODE_SECRET), "{debug}");
}
