//! The assembled agent over real loopback sockets, with wiremock playing EKS Auth over HTTP.

use std::io::Write as _;
use std::time::Duration;

use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::http::get;
use crate::support::{
    AgentBuilder, EKS_AUTH_PATH, NODE_SECRET, Serving, SignedForEksAuth, eks_auth_answering,
    eks_auth_source, eventually, logs, now, pod_token as token, success_body,
};

/// A 200 with credentials `access_key_id` living six hours.
fn success(access_key_id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(success_body(
        access_key_id,
        now() + Duration::from_secs(6 * 3600),
    ))
}

/// The agent on `hosts` with probes and metrics on 127.0.0.1, calling `eks` with up to
/// `attempts` attempts of `attempt_timeout` each.
async fn agent(
    eks: &MockServer,
    attempts: u32,
    attempt_timeout: Duration,
    hosts: &[&str],
) -> Serving {
    let source = eks_auth_source(eks.uri())
        .aws_client(|aws| aws.max_attempts(attempts).attempt_timeout(attempt_timeout))
        .build()
        .await
        .unwrap();
    let server = AgentBuilder::new("demo".parse().unwrap(), source)
        .bind_hosts(hosts.iter().copied())
        .server(move |server| {
            server
                .port(0)
                .probe_addr(Some("127.0.0.1:0".parse().unwrap()))
                .metrics_addr(Some("127.0.0.1:0".parse().unwrap()))
        })
        .bind()
        .await
        .unwrap();
    Serving::start(server)
}

#[tokio::test]
async fn serves_credentials_over_ipv4_and_ipv6_loopback_and_logs_no_secret() {
    let (logs, _capture) = logs::capture();
    let eks = MockServer::start().await;
    let token = token("serves");
    Mock::given(method("POST"))
        .and(path(EKS_AUTH_PATH))
        .and(SignedForEksAuth)
        .and(body_partial_json(serde_json::json!({"token": token})))
        .respond_with(success("ASIASERVES"))
        .expect(1)
        .mount(&eks)
        .await;
    let agent = agent(&eks, 3, Duration::from_secs(10), &["127.0.0.1", "[::1]"]).await;
    assert_eq!(agent.credential_addrs.len(), 2);
    assert!(agent.credential_addrs[1].is_ipv6());
    for &addr in &agent.credential_addrs {
        let (status, body) = get(addr, "/v1/credentials", Some(&token)).await;
        assert_eq!(status, 200, "{addr}: {body}");
        assert!(
            body.starts_with(
                r#"{"AccessKeyId":"ASIASERVES","SecretAccessKey":"secret-key-of-ASIASERVES","Token":"session-token-of-ASIASERVES","AccountId":"111122223333","Expiration":""#
            ),
            "{body}"
        );
    }
    // The second request was a cache hit: one EKS Auth call (checked by `expect(1)`).
    assert_eq!(get(agent.probe_addr.unwrap(), "/readyz", None).await.0, 200);
    assert_eq!(
        get(agent.probe_addr.unwrap(), "/healthz", None).await.0,
        200
    );
    let (status, metrics) = get(agent.metrics_addr.unwrap(), "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("pod_identity_http_response{code=\"200\"} 2"),
        "{metrics}"
    );
    // One fetch on the request path; `hit` counts renewals only (none yet).
    assert!(
        metrics.contains("pod_identity_cache_state{state=\"miss\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("state=\"hit\""), "{metrics}");
    assert!(
        metrics.contains("# TYPE pod_identity_http_response counter"),
        "{metrics}"
    );
    assert!(metrics.contains("pod_identity_cache_size 1"), "{metrics}");
    agent.shutdown().await;

    let logs = logs.text();
    assert!(logs.contains("credential request"), "{logs}");
    assert!(logs.contains("\"client\":\"127.0.0.1:"), "{logs}");
    for secret in [
        token.as_str(),
        "secret-key-of-ASIASERVES",
        "session-token-of-ASIASERVES",
        NODE_SECRET,
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

#[tokio::test]
async fn each_eks_auth_error_keeps_its_status_and_reference_body() {
    let eks = MockServer::start().await;
    let cases = [
        (400, "AccessDeniedException", "client"),
        (400, "ExpiredTokenException", "client"),
        (400, "InvalidTokenException", "client"),
        (400, "InvalidParameterException", "client"),
        (400, "InvalidRequestException", "client"),
        (404, "ResourceNotFoundException", "client"),
        (429, "ThrottlingException", "client"),
        (500, "InternalServerException", "server"),
        (503, "ServiceUnavailableException", "server"),
    ];
    // Minted once: a token minted again in a later second would carry other times and match
    // no mock.
    let tokens = cases.map(|(_, code, _)| token(code));
    for (&(status, code, _), token) in cases.iter().zip(&tokens) {
        Mock::given(method("POST"))
            .and(path(EKS_AUTH_PATH))
            .and(body_partial_json(serde_json::json!({"token": token})))
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("x-amzn-errortype", code)
                    .insert_header("x-amzn-requestid", format!("req-{code}"))
                    .set_body_json(serde_json::json!({"message": format!("{code} happened")})),
            )
            .mount(&eks)
            .await;
    }
    let agent = agent(&eks, 1, Duration::from_secs(10), &["127.0.0.1"]).await;
    let addr = agent.addr();
    for (&(status, code, fault), token) in cases.iter().zip(&tokens) {
        assert_eq!(
            get(addr, "/v1/credentials", Some(token)).await,
            (
                status,
                format!("[req-{code}]: ({code}): {code} happened, fault: {fault}\n")
            ),
        );
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn an_upstream_timeout_is_500_empty_brackets() {
    let eks = eks_auth_answering(success("ASIASLOW").set_delay(Duration::from_secs(5))).await;
    let agent = agent(&eks, 1, Duration::from_millis(200), &["127.0.0.1"]).await;
    assert_eq!(agent.get(&token("slow")).await, (500, "[]\n".to_owned()));
    agent.shutdown().await;
}

#[tokio::test]
async fn an_unbindable_host_is_skipped() {
    let eks = eks_auth_answering(success("ASIASKIP")).await;
    // 192.0.2.1 (TEST-NET-1) is not an address of this machine.
    let agent = agent(
        &eks,
        1,
        Duration::from_secs(10),
        &["192.0.2.1", "127.0.0.1"],
    )
    .await;
    assert_eq!(agent.credential_addrs.len(), 1);
    assert_eq!(agent.get(&token("skip")).await.0, 200);
    // The unbound host is IPv4: not Ready (pods on it would be refused), but alive.
    assert_eq!(get(agent.probe_addr.unwrap(), "/readyz", None).await.0, 500);
    assert_eq!(
        get(agent.probe_addr.unwrap(), "/healthz", None).await.0,
        200
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_a_request_in_flight() {
    let eks = eks_auth_answering(success("ASIADRAIN").set_delay(Duration::from_millis(500))).await;
    let agent = agent(&eks, 1, Duration::from_secs(5), &["127.0.0.1"]).await;
    let addr = agent.addr();
    let token = token("drain");
    let in_flight = tokio::spawn(async move { get(addr, "/v1/credentials", Some(&token)).await });
    // Wait until EKS Auth has the call, then shut down.
    eventually(
        Duration::from_secs(10),
        "EKS Auth to receive the call",
        async || !eks.received_requests().await.unwrap().is_empty(),
    )
    .await;
    agent.shutdown().await;
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ASIADRAIN"));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

/// Run in a child process by `aws_configs_container_provider_fetches_from_the_agent`, with the
/// container-credential variables set (aws-config reads the process environment).
#[tokio::test]
#[ignore = "run by aws_configs_container_provider_fetches_from_the_agent in a child process"]
async fn container_provider_child() {
    use aws_config::ecs::EcsCredentialsProvider;
    use aws_sdk_eksauth::config::ProvideCredentials;

    let credentials = EcsCredentialsProvider::builder()
        .build()
        .provide_credentials()
        .await
        .expect("credentials from the agent");
    println!(
        "ACCESS_KEY_ID={} EXPIRES={}",
        credentials.access_key_id(),
        credentials.expiry().is_some()
    );
    let _ = std::io::stdout().flush();
}

#[tokio::test]
async fn aws_configs_container_provider_fetches_from_the_agent() {
    let eks = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(EKS_AUTH_PATH))
        .and(SignedForEksAuth)
        .respond_with(success("ASIAFROMSDK"))
        .mount(&eks)
        .await;
    let agent = agent(&eks, 1, Duration::from_secs(10), &["127.0.0.1"]).await;
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), token("sdk")).unwrap();
    let uri = format!("http://{}/v1/credentials", agent.addr());

    let exe = std::env::current_exe().unwrap();
    let token_path = token_file.path().to_owned();
    // The child's name as the test harness lists it: the module path without the crate's.
    let child = format!(
        "{}::container_provider_child",
        module_path!().split_once("::").unwrap().1
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args(["--exact", &child, "--ignored", "--nocapture"])
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_AUTHORIZATION_TOKEN")
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri)
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_path)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ACCESS_KEY_ID=ASIAFROMSDK EXPIRES=true"),
        "{stdout}"
    );
    agent.shutdown().await;
}
