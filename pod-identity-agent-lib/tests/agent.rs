//! The assembled agent over real loopback sockets, with wiremock playing EKS Auth over HTTP.
#![cfg(feature = "eks-auth")]
#![allow(clippy::unwrap_used)] // A test crate: a panic is how a check fails.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_eksauth::config::Credentials;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_agent_lib::time::{SystemWallClock, WallClock};
use pod_identity_agent_lib::{AgentBuilder, server::BoundServer, source::eks_auth::EksAuthSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

const EKS_AUTH_PATH: &str = "/clusters/demo/assume-role-for-pod-identity";
const SECRET_ACCESS_KEY: &str = "integration-secret-access-key";

fn now_secs() -> u64 {
    SystemWallClock::new()
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An unsigned projected service-account token for `pod`, valid for a day.
fn token(pod: &str) -> String {
    let now = now_secs();
    let encode = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        encode(serde_json::json!({"alg": "RS256", "kid": "k"})),
        encode(serde_json::json!({
            "aud": ["pods.eks.amazonaws.com"],
            "exp": now + 86_400,
            "iat": now,
            "nbf": now,
            "sub": "system:serviceaccount:default:app",
            "kubernetes.io": {"namespace": "default", "pod": {"name": pod, "uid": format!("uid-{pod}")}}
        }))
    )
}

fn success_body(access_key_id: &str) -> serde_json::Value {
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
            "sessionToken": "integration-session-token",
            "secretAccessKey": SECRET_ACCESS_KEY,
            "accessKeyId": access_key_id,
            "expiration": now_secs() + 6 * 3600
        }
    })
}

/// SigV4 for service `eks-auth` with the node's (test) key.
struct SignedForEksAuth;

impl Match for SignedForEksAuth {
    fn matches(&self, request: &Request) -> bool {
        request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.starts_with("AWS4-HMAC-SHA256 Credential=AKIDNODE/")
                    && v.contains("/us-west-2/eks-auth/aws4_request")
            })
    }
}

async fn source(eks: &MockServer, attempts: u32, attempt_timeout: Duration) -> EksAuthSource {
    EksAuthSource::builder()
        .aws_client(|aws| {
            aws.region("us-west-2")
                .endpoint_url(eks.uri())
                .credentials_provider(Credentials::new(
                    "AKIDNODE",
                    "node-secret",
                    None,
                    None,
                    "test",
                ))
                .max_attempts(attempts)
                .attempt_timeout(attempt_timeout)
                // Generous: the machine may be busy; only the timeout test relies on timing out.
                .connect_timeout(Duration::from_secs(5))
        })
        .build()
        .await
        .unwrap()
}

struct Agent {
    credential_addrs: Vec<SocketAddr>,
    probe_addr: SocketAddr,
    metrics_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<()>,
}

impl Agent {
    async fn start(server: BoundServer) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let credential_addrs = server.credential_addrs().to_vec();
        let probe_addr = server.probe_addr().unwrap();
        let metrics_addr = server.metrics_addr().unwrap();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Self {
            credential_addrs,
            probe_addr,
            metrics_addr,
            stop: Some(stop),
            serving,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.serving)
            .await
            .expect("drained")
            .unwrap();
    }
}

fn agent(source: EksAuthSource, hosts: &[&str]) -> AgentBuilder<EksAuthSource> {
    AgentBuilder::new("demo".parse().unwrap(), source)
        .bind_hosts(hosts.iter().copied())
        .server(move |server| {
            server
                .port(0)
                .probe_addr(Some("127.0.0.1:0".parse().unwrap()))
                .metrics_addr(Some("127.0.0.1:0".parse().unwrap()))
        })
}

/// One HTTP/1.1 exchange: (status, body).
async fn http(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = authorization {
        request.push_str(&format!("Authorization: {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Every log line of this test binary, as JSON (debug level and up).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    static INSTALL: Once = Once::new();
    #[derive(Clone)]
    struct Sink;
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            LOGS.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(|| Sink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
    &LOGS
}

#[tokio::test]
async fn serves_credentials_over_ipv4_and_ipv6_loopback_and_logs_no_secret() {
    let logs = logs();
    let eks = MockServer::start().await;
    let token = token("serves");
    Mock::given(method("POST"))
        .and(path(EKS_AUTH_PATH))
        .and(SignedForEksAuth)
        .and(body_partial_json(serde_json::json!({"token": token})))
        .respond_with(ResponseTemplate::new(200).set_body_json(success_body("ASIASERVES")))
        .expect(1)
        .mount(&eks)
        .await;
    let server = agent(
        source(&eks, 3, Duration::from_secs(10)).await,
        &["127.0.0.1", "[::1]"],
    )
    .bind()
    .await
    .unwrap();
    let agent = Agent::start(server).await;
    assert_eq!(agent.credential_addrs.len(), 2);
    assert!(agent.credential_addrs[1].is_ipv6());
    for &addr in &agent.credential_addrs {
        let (status, body) = http(addr, "/v1/credentials", Some(&token)).await;
        assert_eq!(status, 200, "{addr}: {body}");
        assert!(
            body.starts_with(&format!(
                r#"{{"AccessKeyId":"ASIASERVES","SecretAccessKey":"{SECRET_ACCESS_KEY}","Token":"integration-session-token","AccountId":"111122223333","Expiration":""#
            )),
            "{body}"
        );
    }
    // The second request was a cache hit: one EKS Auth call (checked by `expect(1)`).
    assert_eq!(http(agent.probe_addr, "/readyz", None).await.0, 200);
    assert_eq!(http(agent.probe_addr, "/healthz", None).await.0, 200);
    let (status, metrics) = http(agent.metrics_addr, "/metrics", None).await;
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

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("credential request"), "{logs}");
    assert!(logs.contains("\"client\":\"127.0.0.1:"), "{logs}");
    for secret in [
        token.as_str(),
        SECRET_ACCESS_KEY,
        "integration-session-token",
        "node-secret",
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
    let server = agent(
        source(&eks, 1, Duration::from_secs(10)).await,
        &["127.0.0.1"],
    )
    .bind()
    .await
    .unwrap();
    let agent = Agent::start(server).await;
    let addr = agent.credential_addrs[0];
    for (&(status, code, fault), token) in cases.iter().zip(&tokens) {
        assert_eq!(
            http(addr, "/v1/credentials", Some(token)).await,
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
    let eks = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(EKS_AUTH_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(success_body("ASIASLOW"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&eks)
        .await;
    let server = agent(
        source(&eks, 1, Duration::from_millis(200)).await,
        &["127.0.0.1"],
    )
    .bind()
    .await
    .unwrap();
    let agent = Agent::start(server).await;
    assert_eq!(
        http(
            agent.credential_addrs[0],
            "/v1/credentials",
            Some(&token("slow"))
        )
        .await,
        (500, "[]\n".to_owned())
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn an_unbindable_host_is_skipped() {
    let eks = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(EKS_AUTH_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(success_body("ASIASKIP")))
        .mount(&eks)
        .await;
    // 192.0.2.1 (TEST-NET-1) is not an address of this machine.
    let server = agent(
        source(&eks, 1, Duration::from_secs(10)).await,
        &["192.0.2.1", "127.0.0.1"],
    )
    .bind()
    .await
    .unwrap();
    let agent = Agent::start(server).await;
    assert_eq!(agent.credential_addrs.len(), 1);
    assert_eq!(
        http(
            agent.credential_addrs[0],
            "/v1/credentials",
            Some(&token("skip"))
        )
        .await
        .0,
        200
    );
    // The unbound host is IPv4: not Ready (pods on it would be refused), but alive.
    assert_eq!(http(agent.probe_addr, "/readyz", None).await.0, 500);
    assert_eq!(http(agent.probe_addr, "/healthz", None).await.0, 200);
    agent.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_a_request_in_flight() {
    let eks = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(EKS_AUTH_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(success_body("ASIADRAIN"))
                .set_delay(Duration::from_millis(500)),
        )
        .mount(&eks)
        .await;
    let server = agent(
        source(&eks, 1, Duration::from_secs(5)).await,
        &["127.0.0.1"],
    )
    .bind()
    .await
    .unwrap();
    let agent = Agent::start(server).await;
    let addr = agent.credential_addrs[0];
    let token = token("drain");
    let in_flight = tokio::spawn(async move { http(addr, "/v1/credentials", Some(&token)).await });
    // Wait until EKS Auth has the call, then shut down.
    while eks.received_requests().await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    agent.shutdown().await;
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ASIADRAIN"));
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
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
        .respond_with(ResponseTemplate::new(200).set_body_json(success_body("ASIAFROMSDK")))
        .mount(&eks)
        .await;
    let server = agent(
        source(&eks, 1, Duration::from_secs(10)).await,
        &["127.0.0.1"],
    )
    .bind()
    .await
    .unwrap();
    let agent = Agent::start(server).await;
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), token("sdk")).unwrap();
    let uri = format!("http://{}/v1/credentials", agent.credential_addrs[0]);

    let exe = std::env::current_exe().unwrap();
    let token_path = token_file.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([
                "--exact",
                "container_provider_child",
                "--ignored",
                "--nocapture",
            ])
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
