//! The EKS Auth simulator and its STS target, driven by the real AWS SDK clients over loopback.

use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_eksauth::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_eksauth::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_async::time::StaticTimeSource;
use pod_identity_core::{eks_auth::EksAuthError, eks_auth::EksAuthErrorCode, secret::SecretString};

use crate::support::{
    EksAuthSimulator, EksAuthSimulatorBuilder, Failure, NodeCredentials, PodToken,
    SharedTimeSource, SimulatorServer, TimeSource, Times, eventually, logs, mint_token,
    parse_associations,
};

const CLUSTER: &str = "demo";
const NODE_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const NODE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const ASSOCIATIONS: &str = r#"[
    {"namespace": "default", "serviceAccount": "app", "roleArn": "arn:aws:iam::111122223333:role/app-role",
     "associationId": "a-abcdefghij0123456"},
    {"namespace": "batch", "serviceAccount": "worker", "roleArn": "arn:aws:iam::444455556666:role/worker",
     "disableSessionTags": true}
]"#;

/// The SDK signs with the system clock, so tokens and the simulator follow it too.
#[allow(clippy::disallowed_methods)]
fn now() -> SystemTime {
    SystemTime::now()
}

/// A simulator of cluster [`CLUSTER`] knowing the node key, without associations.
fn simulator_builder() -> EksAuthSimulatorBuilder {
    EksAuthSimulator::builder()
        .cluster_name(CLUSTER.parse().unwrap())
        .node_credentials(NodeCredentials::new(NODE_KEY, NODE_SECRET))
}

/// [`simulator_builder`] with the one association of `default/app` (role `app`).
fn app_simulator_builder() -> EksAuthSimulatorBuilder {
    simulator_builder().associate(
        "default".parse().unwrap(),
        "app".parse().unwrap(),
        "arn:aws:iam::111122223333:role/app".parse().unwrap(),
    )
}

fn simulator() -> EksAuthSimulator {
    let associations =
        parse_associations(ASSOCIATIONS.as_bytes(), &CLUSTER.parse().unwrap()).unwrap();
    simulator_builder()
        .region("us-west-2")
        .account_id("111122223333")
        .associations(associations)
        .build()
        .unwrap()
}

async fn start() -> (EksAuthSimulator, SimulatorServer) {
    let sim = simulator();
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (sim, server)
}

fn token_for(namespace: &str, service_account: &str, pod: &str) -> SecretString {
    mint_token(&PodToken::new(
        namespace.parse().unwrap(),
        service_account.parse().unwrap(),
        pod,
        now(),
    ))
}

fn eks_config(server: &SimulatorServer, secret: &str) -> aws_sdk_eksauth::config::Builder {
    aws_sdk_eksauth::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(Credentials::new(NODE_KEY, secret, None, None, "test"))
        .endpoint_url(server.endpoint_url())
        .retry_config(RetryConfig::disabled())
}

fn eks_client(server: &SimulatorServer, secret: &str) -> aws_sdk_eksauth::Client {
    aws_sdk_eksauth::Client::from_conf(eks_config(server, secret).build())
}

type EksResult = Result<
    aws_sdk_eksauth::operation::assume_role_for_pod_identity::AssumeRoleForPodIdentityOutput,
    SdkError<
        aws_sdk_eksauth::operation::assume_role_for_pod_identity::AssumeRoleForPodIdentityError,
    >,
>;

async fn assume(
    client: &aws_sdk_eksauth::Client,
    cluster: &str,
    token: &SecretString,
) -> EksResult {
    client
        .assume_role_for_pod_identity()
        .cluster_name(cluster)
        .token(token.expose_secret())
        .send()
        .await
}

/// [`assume`] in [`CLUSTER`] with a fresh token of pod `app-1` (service account `default/app`).
async fn assume_as_app(client: &aws_sdk_eksauth::Client) -> EksResult {
    assume(client, CLUSTER, &token_for("default", "app", "app-1")).await
}

/// The error code and HTTP status the SDK surfaced.
fn code_and_status<E: ProvideErrorMetadata>(
    result: Result<impl std::fmt::Debug, SdkError<E>>,
) -> (String, u16) {
    let err = result.expect_err("the call should fail");
    let status = err
        .raw_response()
        .map(|r| r.status().as_u16())
        .unwrap_or_default();
    let code = err.code().unwrap_or_default().to_owned();
    (code, status)
}

/// The call failed with `code` and `status`.
#[track_caller]
fn assert_refused<E: ProvideErrorMetadata>(
    result: Result<impl std::fmt::Debug, SdkError<E>>,
    code: &str,
    status: u16,
) {
    assert_eq!(code_and_status(result), (code.to_owned(), status));
}

fn sts_client(server: &SimulatorServer, credentials: Credentials) -> aws_sdk_sts::Client {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-west-2"))
        .credentials_provider(credentials)
        .endpoint_url(server.endpoint_url())
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

#[tokio::test]
async fn the_sdk_gets_credentials_with_the_full_response_shape() {
    let (sim, server) = start().await;
    let token = token_for("default", "app", "app-7d9f");
    let before = now();

    let output = assume(&eks_client(&server, NODE_SECRET), CLUSTER, &token)
        .await
        .unwrap();

    let subject = output.subject().unwrap();
    assert_eq!(
        (subject.namespace(), subject.service_account()),
        ("default", "app")
    );
    assert_eq!(output.audience(), "pods.eks.amazonaws.com");
    let association = output.pod_identity_association().unwrap();
    assert_eq!(association.association_id(), "a-abcdefghij0123456");
    assert_eq!(
        association.association_arn(),
        "arn:aws:eks:us-west-2:111122223333:podidentityassociation/demo/a-abcdefghij0123456"
    );
    let user = output.assumed_role_user().unwrap();
    assert!(
        user.arn()
            .starts_with("arn:aws:sts::111122223333:assumed-role/app-role/eks-demo-app-7d9f-"),
        "{}",
        user.arn()
    );
    let session_name = user.arn().rsplit('/').next().unwrap();
    assert!(user.assume_role_id().starts_with("AROA"));
    assert!(user.assume_role_id().ends_with(&format!(":{session_name}")));
    let credentials = output.credentials().unwrap();
    assert!(credentials.access_key_id().starts_with("ASIA"));
    assert_eq!(credentials.access_key_id().len(), 20);
    assert_eq!(credentials.secret_access_key().len(), 40);
    assert!(!credentials.session_token().is_empty());

    // The simulator recorded the session it issued, with core's session tags.
    let sessions = sim.sessions();
    assert_eq!(sessions.len(), 1);
    let session = &sessions[0];
    assert_eq!(session.access_key_id, credentials.access_key_id());
    assert_eq!(
        session.secret_access_key.expose_secret(),
        credentials.secret_access_key()
    );
    assert_eq!(
        session.session_token.expose_secret(),
        credentials.session_token()
    );
    assert_eq!(session.assumed_role_arn, user.arn());
    assert_eq!(session.role_arn, "arn:aws:iam::111122223333:role/app-role");
    // Whole seconds may differ by one: the wire carries fractional epoch seconds.
    assert!((credentials.expiration().secs() - epoch_secs(session.expiration)).abs() <= 1);
    let lifetime = session
        .expiration
        .duration_since(session.issued_at)
        .unwrap();
    assert_eq!(lifetime, Duration::from_secs(6 * 3600));
    assert!(session.issued_at >= before - Duration::from_secs(1));
    let tags: Vec<(&str, &str)> = session
        .session_tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        tags[..5],
        [
            (
                "eks-cluster-arn",
                "arn:aws:eks:us-west-2:111122223333:cluster/demo"
            ),
            ("eks-cluster-name", "demo"),
            ("kubernetes-namespace", "default"),
            ("kubernetes-service-account", "app"),
            ("kubernetes-pod-name", "app-7d9f"),
        ]
    );
    assert_eq!(tags[5].0, "kubernetes-pod-uid");
    assert_eq!(sim.request_count(), 1);
    assert_eq!(sim.token_request_count(token.expose_secret()), 1);
    assert_eq!(sim.token_request_count("another.token.value"), 0);

    // Debug output of everything the simulator hands out stays free of secrets.
    let debug = format!("{sim:?} {sessions:?}");
    assert!(!debug.contains(credentials.secret_access_key()));
    assert!(!debug.contains(credentials.session_token()));
    assert!(!debug.contains(token.expose_secret()));
    assert!(!format!("{:?}", sim.node_credentials()).contains(NODE_SECRET));
    server.shutdown().await.unwrap();
}

fn epoch_secs(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

#[tokio::test]
async fn associations_without_session_tags_and_other_accounts() {
    let (sim, server) = start().await;
    let token = token_for("batch", "worker", "worker-1");
    let output = assume(&eks_client(&server, NODE_SECRET), CLUSTER, &token)
        .await
        .unwrap();
    let arn = output.assumed_role_user().unwrap().arn();
    assert!(
        arn.starts_with("arn:aws:sts::444455556666:assumed-role/worker/eks-demo-worker-1-"),
        "{arn}"
    );
    let association_id = output.pod_identity_association().unwrap().association_id();
    assert!(association_id.starts_with("a-") && association_id.len() == 19);
    assert!(sim.sessions()[0].session_tags.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_secret_is_an_invalid_signature() {
    let (sim, server) = start().await;
    let token = token_for("default", "app", "app-1");
    let result = assume(&eks_client(&server, "not-the-node-secret"), CLUSTER, &token).await;
    assert_refused(result, "InvalidSignatureException", 403);
    assert!(sim.sessions().is_empty());
    assert_eq!(sim.request_count(), 1);
    // A request that fails verification does not count toward its token.
    assert_eq!(sim.token_request_count(token.expose_secret()), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_access_key_is_an_unrecognized_client() {
    let (_sim, server) = start().await;
    let config = eks_config(&server, NODE_SECRET)
        .credentials_provider(Credentials::new(
            "AKIAOTHERKEY",
            NODE_SECRET,
            None,
            None,
            "test",
        ))
        .build();
    let result = assume_as_app(&aws_sdk_eksauth::Client::from_conf(config)).await;
    assert_refused(result, "UnrecognizedClientException", 403);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn node_credentials_with_a_session_token_need_that_token() {
    let sim = simulator_builder()
        .node_credentials(
            NodeCredentials::new(NODE_KEY, NODE_SECRET).with_session_token("node-session"),
        )
        .associations(
            parse_associations(ASSOCIATIONS.as_bytes(), &CLUSTER.parse().unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let token = token_for("default", "app", "app-1");
    let with = |session_token: Option<&str>| {
        let credentials = Credentials::new(
            NODE_KEY,
            NODE_SECRET,
            session_token.map(str::to_owned),
            None,
            "t",
        );
        aws_sdk_eksauth::Client::from_conf(
            eks_config(&server, NODE_SECRET)
                .credentials_provider(credentials)
                .build(),
        )
    };
    assert!(
        assume(&with(Some("node-session")), CLUSTER, &token)
            .await
            .is_ok()
    );
    assert_refused(
        assume(&with(Some("other-session")), CLUSTER, &token).await,
        "UnrecognizedClientException",
        403,
    );
    assert_refused(
        assume(&with(None), CLUSTER, &token).await,
        "UnrecognizedClientException",
        403,
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stale_signature_is_expired() {
    let (_sim, server) = start().await;
    let config = eks_config(&server, NODE_SECRET)
        .time_source(StaticTimeSource::new(now() - Duration::from_secs(10 * 60)))
        .build();
    let err = assume_as_app(&aws_sdk_eksauth::Client::from_conf(config))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidSignatureException"));
    assert!(
        err.message()
            .unwrap_or_default()
            .starts_with("Signature expired: "),
        "{err:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_and_incomplete_signatures_are_rejected() {
    let (sim, server) = start().await;
    let url = format!(
        "{}/clusters/{CLUSTER}/assume-role-for-pod-identity",
        server.endpoint_url()
    );
    let body = format!(
        "{{\"token\":\"{}\"}}",
        token_for("default", "app", "app-1").expose_secret()
    );
    let http = reqwest::Client::new();

    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );
    assert!(!response.headers()["x-amzn-requestid"].is_empty());
    let json: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(
        json.to_string()
            .contains("MissingAuthenticationTokenException"),
        "{json}"
    );
    assert_eq!(json["message"], "Missing Authentication Token");

    let response = http
        .post(&url)
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={NODE_KEY}/20240101/us-west-2/eks-auth/aws4_request"
            ),
        )
        .header("x-amz-date", "20240101T000000Z")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "IncompleteSignatureException"
    );
    assert!(sim.sessions().is_empty());
    assert_eq!(sim.request_count(), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_association_or_cluster_is_resource_not_found() {
    let (_sim, server) = start().await;
    let client = eks_client(&server, NODE_SECRET);
    let result = assume(
        &client,
        CLUSTER,
        &token_for("default", "nobody", "nobody-1"),
    )
    .await;
    assert_refused(result, "ResourceNotFoundException", 404);
    let result = assume(
        &client,
        "another-cluster",
        &token_for("default", "app", "app-1"),
    )
    .await;
    assert_refused(result, "ResourceNotFoundException", 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_token_is_expired_and_a_bad_one_invalid() {
    let (sim, server) = start().await;
    let client = eks_client(&server, NODE_SECRET);

    let two_days_ago = now() - Duration::from_secs(2 * 86_400);
    let expired = mint_token(&PodToken::new(
        "default".parse().unwrap(),
        "app".parse().unwrap(),
        "app-1",
        two_days_ago,
    ));
    assert_refused(
        assume(&client, CLUSTER, &expired).await,
        "ExpiredTokenException",
        400,
    );

    let wrong_audience = mint_token(
        &PodToken::new(
            "default".parse().unwrap(),
            "app".parse().unwrap(),
            "app-1",
            now(),
        )
        .with_audience(vec!["sts.amazonaws.com".to_owned()]),
    );
    for token in [
        SecretString::from("not-a-jwt"),
        SecretString::from("a.b.c"),
        wrong_audience,
    ] {
        assert_refused(
            assume(&client, CLUSTER, &token).await,
            "InvalidTokenException",
            400,
        );
    }
    assert!(sim.sessions().is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn injected_failures_come_back_with_their_code_and_status() {
    let (sim, server) = start().await;
    let client = eks_client(&server, NODE_SECRET);
    let token = token_for("default", "app", "app-1");
    for (code, status) in [
        (EksAuthErrorCode::AccessDenied, 400),
        (EksAuthErrorCode::ExpiredToken, 400),
        (EksAuthErrorCode::InvalidToken, 400),
        (EksAuthErrorCode::InvalidParameter, 400),
        (EksAuthErrorCode::InvalidRequest, 400),
        (EksAuthErrorCode::ResourceNotFound, 404),
        (EksAuthErrorCode::Throttling, 429),
        (EksAuthErrorCode::InternalServer, 500),
        (EksAuthErrorCode::ServiceUnavailable, 503),
    ] {
        let name = code.as_str().to_owned();
        sim.fail(code, Times::Next(1));
        assert_eq!(
            code_and_status(assume(&client, CLUSTER, &token).await),
            (name, status)
        );
        // Only the next request failed.
        assert!(assume(&client, CLUSTER, &token).await.is_ok());
    }

    // Any code and status, until cleared.
    sim.fail_with(
        EksAuthError::new(
            EksAuthErrorCode::from_raw("TeapotException"),
            418,
            "short and stout",
        ),
        Times::Always,
    );
    for _ in 0..2 {
        let err = assume(&client, CLUSTER, &token).await.unwrap_err();
        assert_eq!(err.code(), Some("TeapotException"));
        assert_eq!(err.message(), Some("short and stout"));
        assert_eq!(err.raw_response().unwrap().status().as_u16(), 418);
    }
    sim.clear_failures();
    assert!(assume(&client, CLUSTER, &token).await.is_ok());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_sdk_retries_injected_throttling_and_the_counts_show_it() {
    let (sim, server) = start().await;
    let retries = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5));
    let client = aws_sdk_eksauth::Client::from_conf(
        eks_config(&server, NODE_SECRET)
            .retry_config(retries)
            .build(),
    );
    let token = token_for("default", "app", "app-1");
    sim.fail(EksAuthErrorCode::Throttling, Times::Next(2));
    assert!(assume(&client, CLUSTER, &token).await.is_ok());
    assert_eq!(sim.request_count(), 3);
    // Every attempt carried the token, the failed ones too.
    assert_eq!(sim.token_request_count(token.expose_secret()), 3);
    assert_eq!(sim.sessions().len(), 1);
    sim.reset_counts();
    assert_eq!(sim.request_count(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_hang_or_latency_runs_into_the_client_timeout() {
    let (sim, server) = start().await;
    let timeouts = TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_millis(300))
        .build();
    let impatient = aws_sdk_eksauth::Client::from_conf(
        eks_config(&server, NODE_SECRET)
            .timeout_config(timeouts)
            .build(),
    );
    let patient = eks_client(&server, NODE_SECRET);
    let token = token_for("default", "app", "app-1");

    sim.inject(Failure::Hang, Times::Always);
    let err = assume(&impatient, CLUSTER, &token).await.unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    sim.clear_failures();
    assert!(assume(&patient, CLUSTER, &token).await.is_ok());

    sim.set_latency(Duration::from_secs(3600));
    let err = assume(&impatient, CLUSTER, &token).await.unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    sim.set_latency(Duration::ZERO);
    assert!(assume(&patient, CLUSTER, &token).await.is_ok());
    assert_eq!(sim.request_count(), 4);
    // Shutdown does not wait for the hour-long delay of the abandoned request.
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_releases_hanging_requests() {
    let (sim, server) = start().await;
    sim.inject(Failure::Hang, Times::Always);
    let client = eks_client(&server, NODE_SECRET);
    let token = token_for("default", "app", "app-1");
    let call = tokio::spawn(async move { assume(&client, CLUSTER, &token).await });
    eventually(
        Duration::from_secs(10),
        "the simulator to hold the call",
        async || sim.request_count() > 0,
    )
    .await;
    server.shutdown().await.unwrap();
    let result = call.await.unwrap();
    assert_refused(result, "ServiceUnavailableException", 503);
}

#[tokio::test]
async fn the_lifetime_can_change_at_run_time() {
    let (sim, server) = start().await;
    sim.set_credential_lifetime(Duration::from_secs(90));
    assert_eq!(sim.credential_lifetime(), Duration::from_secs(90));
    let token = token_for("default", "app", "app-1");
    assume(&eks_client(&server, NODE_SECRET), CLUSTER, &token)
        .await
        .unwrap();
    let session = &sim.sessions()[0];
    assert_eq!(
        session
            .expiration
            .duration_since(session.issued_at)
            .unwrap(),
        Duration::from_secs(90)
    );
    server.shutdown().await.unwrap();
}

async fn issued_credentials(server: &SimulatorServer) -> aws_sdk_eksauth::types::Credentials {
    let output = assume_as_app(&eks_client(server, NODE_SECRET))
        .await
        .unwrap();
    output.credentials().unwrap().clone()
}

#[tokio::test]
async fn the_sts_target_answers_the_assumed_role_identity() {
    let (sim, server) = start().await;
    let issued = issued_credentials(&server).await;
    let credentials = Credentials::new(
        issued.access_key_id(),
        issued.secret_access_key(),
        Some(issued.session_token().to_owned()),
        None,
        "issued",
    );
    let identity = sts_client(&server, credentials)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    let session = sim.session(issued.access_key_id()).unwrap();
    assert_eq!(identity.arn(), Some(session.assumed_role_arn.as_str()));
    assert_eq!(identity.user_id(), Some(session.assume_role_id.as_str()));
    assert_eq!(identity.account(), Some("111122223333"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_sts_target_rejects_what_the_simulator_did_not_issue() {
    let (sim, server) = start().await;
    let issued = issued_credentials(&server).await;
    let call = |akid: &str, secret: &str, token: Option<&str>| {
        let credentials = Credentials::new(akid, secret, token.map(str::to_owned), None, "t");
        let client = sts_client(&server, credentials);
        async move { client.get_caller_identity().send().await }
    };
    let (akid, secret, token) = (
        issued.access_key_id(),
        issued.secret_access_key(),
        issued.session_token(),
    );

    // Change the last character (to one it is not).
    let last = if secret.ends_with('x') { 'y' } else { 'x' };
    let tampered = format!("{}{last}", &secret[..secret.len() - 1]);
    assert_ne!(tampered, secret);
    assert_refused(
        call(akid, &tampered, Some(token)).await,
        "SignatureDoesNotMatch",
        403,
    );
    assert_refused(
        call(akid, secret, Some("another-token")).await,
        "InvalidClientTokenId",
        403,
    );
    assert_refused(call(akid, secret, None).await, "InvalidClientTokenId", 403);
    assert_refused(
        call("ASIAUNKNOWNKEY000000", secret, Some(token)).await,
        "InvalidClientTokenId",
        403,
    );
    // The node credentials are for EKS Auth, not an identity the target knows.
    assert_refused(
        call(NODE_KEY, NODE_SECRET, None).await,
        "InvalidClientTokenId",
        403,
    );

    // Credentials past their expiration.
    sim.set_credential_lifetime(Duration::ZERO);
    let expired = issued_credentials(&server).await;
    assert_refused(
        call(
            expired.access_key_id(),
            expired.secret_access_key(),
            Some(expired.session_token()),
        )
        .await,
        "ExpiredToken",
        403,
    );
    server.shutdown().await.unwrap();
}

/// Signs a raw STS request with issued credentials, as the SDK would.
fn signed_sts_request(
    server: &SimulatorServer,
    credentials: &aws_sdk_eksauth::types::Credentials,
    body: &str,
) -> reqwest::RequestBuilder {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let host = server.local_addr().to_string();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let identity = Credentials::new(
        credentials.access_key_id(),
        credentials.secret_access_key(),
        Some(credentials.session_token().to_owned()),
        None,
        "issued",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-west-2")
        .name("sts")
        .time(now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        "/",
        headers.into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = reqwest::Client::new()
        .post(format!("{}/", server.endpoint_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    request
}

/// An STS error answer: `status`, and `code` in the XML body.
async fn assert_sts_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    let xml = response.text().await.unwrap();
    assert!(xml.contains(&format!("<Code>{code}</Code>")), "{xml}");
}

#[tokio::test]
async fn the_sts_target_answers_only_get_caller_identity() {
    let (sim, server) = start().await;
    let issued = issued_credentials(&server).await;

    let response = signed_sts_request(
        &server,
        &issued,
        "Action=GetCallerIdentity&Version=2011-06-15",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/xml");
    let xml = response.text().await.unwrap();
    let session = sim.session(issued.access_key_id()).unwrap();
    assert!(xml.starts_with(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    ));
    assert!(
        xml.contains(&format!("<Arn>{}</Arn>", session.assumed_role_arn)),
        "{xml}"
    );

    let response = signed_sts_request(
        &server,
        &issued,
        "Action=GetSessionToken&Version=2011-06-15",
    )
    .send()
    .await
    .unwrap();
    assert_sts_error(response, 400, "InvalidAction").await;

    // The body is signed: changing it after signing breaks the signature.
    let response = signed_sts_request(
        &server,
        &issued,
        "Action=GetCallerIdentity&Version=2011-06-15",
    )
    .body("Action=GetCallerIdentity&Version=2011-06-16")
    .send()
    .await
    .unwrap();
    assert_sts_error(response, 403, "SignatureDoesNotMatch").await;

    // No signature at all.
    let response = reqwest::Client::new()
        .post(format!("{}/", server.endpoint_url()))
        .body("Action=GetCallerIdentity&Version=2011-06-15")
        .send()
        .await
        .unwrap();
    assert_sts_error(response, 403, "MissingAuthenticationToken").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_simulator_serves_on_ipv6_loopback() {
    let sim = simulator();
    let server = sim.serve("[::1]:0".parse().unwrap()).await.unwrap();
    assert!(server.endpoint_url().starts_with("http://[::1]:"));
    let output = assume_as_app(&eks_client(&server, NODE_SECRET))
        .await
        .unwrap();
    assert!(output.credentials().is_some());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_paths_are_unknown_operations() {
    let (_sim, server) = start().await;
    let response = reqwest::Client::new()
        .get(format!("{}/clusters/demo/other", server.endpoint_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "UnknownOperationException"
    );
    server.shutdown().await.unwrap();
}

/// Log lines written during a test.
#[tokio::test]
async fn logs_narrate_each_hop_without_a_secret() {
    let (logs, _capture) = logs::capture();

    let (_sim, server) = start().await;
    let token = token_for("default", "app", "app-1");
    let issued = assume(&eks_client(&server, NODE_SECRET), CLUSTER, &token)
        .await
        .unwrap()
        .credentials()
        .unwrap()
        .clone();
    assert!(
        assume(&eks_client(&server, "wrong-secret"), CLUSTER, &token)
            .await
            .is_err()
    );
    let credentials = Credentials::new(
        issued.access_key_id(),
        issued.secret_access_key(),
        Some(issued.session_token().to_owned()),
        None,
        "issued",
    );
    sts_client(&server, credentials)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    server.shutdown().await.unwrap();

    let text = logs.text();
    assert!(
        text.contains("EKS Auth simulator issued credentials"),
        "{text}"
    );
    assert!(text.contains(issued.access_key_id()), "{text}");
    assert!(text.contains("InvalidSignatureException"), "{text}");
    assert!(text.contains("STS target verified the signature"), "{text}");
    for secret in [
        NODE_SECRET,
        issued.secret_access_key(),
        issued.session_token(),
        token.expose_secret(),
    ] {
        assert!(!text.contains(secret), "a secret reached the logs");
    }
}

/// One hand-driven clock for the simulator and the SDK clients.
#[derive(Debug, Clone)]
struct ManualClock(std::sync::Arc<std::sync::Mutex<SystemTime>>);

impl ManualClock {
    fn starting_now() -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(now())))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }

    fn time(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

impl TimeSource for ManualClock {
    fn now(&self) -> SystemTime {
        self.time()
    }
}

#[tokio::test]
async fn time_comes_from_the_injected_clock() {
    let clock = ManualClock::starting_now();
    let sim = app_simulator_builder()
        .clock(SharedTimeSource::new(clock.clone()))
        .build()
        .unwrap();
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let eks = aws_sdk_eksauth::Client::from_conf(
        eks_config(&server, NODE_SECRET)
            .time_source(clock.clone())
            .build(),
    );
    let token = mint_token(&PodToken::new(
        "default".parse().unwrap(),
        "app".parse().unwrap(),
        "app-1",
        clock.time(),
    ));

    let issued = assume(&eks, CLUSTER, &token).await.unwrap();
    let issued = issued.credentials().unwrap();
    let session = sim.session(issued.access_key_id()).unwrap();
    assert_eq!(session.issued_at, clock.time());
    assert_eq!(
        session.expiration,
        clock.time() + Duration::from_secs(6 * 3600)
    );

    let sts = |clock: &ManualClock| {
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-west-2"))
            .credentials_provider(Credentials::new(
                issued.access_key_id(),
                issued.secret_access_key(),
                Some(issued.session_token().to_owned()),
                None,
                "issued",
            ))
            .endpoint_url(server.endpoint_url())
            .retry_config(RetryConfig::disabled())
            .time_source(clock.clone())
            .build();
        aws_sdk_sts::Client::from_conf(config)
    };
    assert!(sts(&clock).get_caller_identity().send().await.is_ok());

    // Six hours on, for both sides: the credentials have expired.
    clock.advance(Duration::from_secs(6 * 3600));
    assert_refused(
        sts(&clock).get_caller_identity().send().await,
        "ExpiredToken",
        403,
    );

    // A day on, the token has expired too.
    clock.advance(Duration::from_secs(18 * 3600));
    let err = assume(&eks, CLUSTER, &token).await.unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_expired_token_exception()),
        "{err:?}"
    );

    // A client whose clock stayed behind by a day signs stale requests.
    let behind = aws_sdk_eksauth::Client::from_conf(
        eks_config(&server, NODE_SECRET)
            .time_source(StaticTimeSource::new(
                clock.time() - Duration::from_secs(86_400),
            ))
            .build(),
    );
    let err = assume(&behind, CLUSTER, &token).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidSignatureException"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_target_role_is_assumed_for_at_most_59_minutes() {
    let associations = parse_associations(
        br#"[{"namespace": "ci", "serviceAccount": "runner",
              "roleArn": "arn:aws:iam::111122223333:role/hop",
              "targetRoleArn": "arn:aws:iam::777788889999:role/deploy"}]"#,
        &CLUSTER.parse().unwrap(),
    )
    .unwrap();
    let sim = simulator_builder()
        .associations(associations)
        .build()
        .unwrap();
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let output = assume(
        &eks_client(&server, NODE_SECRET),
        CLUSTER,
        &token_for("ci", "runner", "runner-1"),
    )
    .await
    .unwrap();
    let arn = output.assumed_role_user().unwrap().arn();
    assert!(
        arn.starts_with("arn:aws:sts::777788889999:assumed-role/deploy/eks-demo-runner-1-"),
        "{arn}"
    );
    let session = &sim.sessions()[0];
    assert_eq!(session.role_arn, "arn:aws:iam::777788889999:role/deploy");
    assert_eq!(
        session
            .expiration
            .duration_since(session.issued_at)
            .unwrap(),
        Duration::from_secs(59 * 60)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn only_the_newest_sessions_are_remembered() {
    let sim = app_simulator_builder().max_sessions(2).build().unwrap();
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut issued = Vec::new();
    for _ in 0..3 {
        issued.push(issued_credentials(&server).await);
    }
    let remembered: Vec<String> = sim
        .sessions()
        .into_iter()
        .map(|s| s.access_key_id)
        .collect();
    assert_eq!(
        remembered,
        [issued[1].access_key_id(), issued[2].access_key_id()]
    );
    let forgotten = &issued[0];
    let credentials = Credentials::new(
        forgotten.access_key_id(),
        forgotten.secret_access_key(),
        Some(forgotten.session_token().to_owned()),
        None,
        "issued",
    );
    assert_refused(
        sts_client(&server, credentials)
            .get_caller_identity()
            .send()
            .await,
        "InvalidClientTokenId",
        403,
    );
    server.shutdown().await.unwrap();
}
