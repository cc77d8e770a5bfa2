//! No secret in any output at `trace` verbosity: the `pod-identity-agent` binary (a child
//! process at `-v trace`), an in-process agent and the provider (a `TRACE` subscriber with the
//! binary's caps on the SDK's wire logs), their metrics, and the text and `Debug` of every
//! error they return.
//!
//! The secrets are the pods' service-account tokens (whole, and their claims and signature
//! segments), the node's secret key and session token, and every secret key and session token
//! EKS Auth (the simulator) issued. The paths exercised: success, cache hit, an unassociated
//! service account, an expired token, a token that is not a JWT, throttling, a wrongly signed
//! node request, the provider fetching through the agent and failing, shutdown.
#![allow(clippy::unwrap_used)] // A test crate: a panic is how a check fails.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use aws_sdk_sts::config::Credentials;
use pod_identity_agent_lib::simulator::{EksAuthSimulator, NodeCredentials, Times};
use pod_identity_agent_lib::{
    AgentBuilder, source::CredentialRequest, source::CredentialSource,
    source::eks_auth::EksAuthSource,
};
use pod_identity_core::{eks_auth::EksAuthErrorCode, token::ServiceAccountToken};
use pod_identity_provider::{Env, PodIdentityCredentialsProvider};

use support::{
    APP_ROLE, LOOPBACK, SERVER_ARGS, Serving, collect_lines, eventually, get, now, pod_token,
    simulator,
};

const AGENT: &str = env!("CARGO_BIN_EXE_pod-identity-agent");
const NODE_KEY: &str = "AKIDNODESECRETSTEST";
const NODE_SECRET: &str = "node-secret-access-key-0123456789abcdefXYZ";
const NODE_SESSION: &str = "node-session-token-IQoJb3JpZ2luX2VjEXAMPLE0123456789";

/// Every event of this process at TRACE, as JSON lines.
fn in_process_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    static INSTALL: Once = Once::new();
    struct Sink;
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            LOGS.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    INSTALL.call_once(|| {
        // Everything at TRACE except the SDK crates that print signed requests and bodies at
        // TRACE (the binary caps them the same way; see its `--verbosity`).
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "trace,aws_sigv4=debug,aws_smithy_runtime=debug",
            ))
            .with_writer(|| Sink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
    &LOGS
}

/// The agent binary as a child process, its stderr collected line by line.
struct AgentProcess {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl AgentProcess {
    fn start(endpoint: &str, metrics_port: u16) -> Self {
        let metrics_port = metrics_port.to_string();
        let mut child = Command::new(AGENT)
            .args(SERVER_ARGS)
            .args([
                "--metrics-port",
                &metrics_port,
                "--endpoint",
                endpoint,
                "-v",
                "trace",
            ])
            .env_clear()
            .env("AWS_ACCESS_KEY_ID", NODE_KEY)
            .env("AWS_SECRET_ACCESS_KEY", NODE_SECRET)
            .env("AWS_SESSION_TOKEN", NODE_SESSION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent/config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::default();
        let readers = vec![
            collect_lines(child.stdout.take().unwrap(), &output),
            collect_lines(child.stderr.take().unwrap(), &output),
        ];
        Self {
            child,
            output,
            readers,
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The address logged in the first line containing `message`.
    async fn logged_addr(&self, message: &str) -> SocketAddr {
        eventually(&format!("the agent to log {message:?}"), || {
            let output = self.output();
            if let Ok(Some(status)) = self.child_status() {
                panic!("the agent exited with {status}:\n{output}");
            }
            let line = output.lines().find(|l| l.contains(message))?;
            let addr = line
                .split("\"addr\":\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no addr in {line}"));
            Some(addr.parse().unwrap())
        })
        .await
    }

    fn child_status(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        // `try_wait` needs `&mut`; the status is only looked at, never reaped twice.
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // State `Z` (zombie) or a missing entry means it exited.
        let exited = stat.is_empty() || stat.split(' ').nth(2) == Some("Z");
        Ok(exited.then(std::process::ExitStatus::default))
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    async fn terminate(mut self) -> String {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = eventually("the agent to stop on SIGTERM", || {
            self.child.try_wait().unwrap()
        })
        .await;
        assert!(status.success(), "{status}:\n{}", self.output());
        // The pipes close with the process: the readers have every line once they end.
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        self.output()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every secret the scenario produced, and the texts that must not contain any.
struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    fn new() -> Self {
        Self {
            values: vec![NODE_SECRET.to_owned(), NODE_SESSION.to_owned()],
        }
    }

    /// A token, and its claims and signature segments (the header names only the key).
    fn token(&mut self, token: &str) {
        self.values.push(token.to_owned());
        for segment in token.split('.').skip(1) {
            if segment.len() >= 16 {
                self.values.push(segment.to_owned());
            }
        }
    }

    fn issued_by(&mut self, simulator: &EksAuthSimulator) {
        for session in simulator.sessions() {
            self.values
                .push(session.secret_access_key.expose_secret().to_owned());
            self.values
                .push(session.session_token.expose_secret().to_owned());
        }
    }

    fn assert_absent(&self, what: &str, text: &str) {
        for secret in &self.values {
            if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
                let shown: String = line
                    .replace(secret.as_str(), "<SECRET>")
                    .chars()
                    .take(600)
                    .collect();
                panic!(
                    "a secret ({} characters, starting {:?}) reached {what}, in: {shown}",
                    secret.len(),
                    &secret[..6]
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_output_of_the_binary_agent_or_provider_at_trace() {
    let logs = in_process_logs();
    let (simulator, server) = simulator(
        "demo",
        NodeCredentials::new(NODE_KEY, NODE_SECRET).with_session_token(NODE_SESSION),
        APP_ROLE,
        LOOPBACK,
    )
    .await;
    let mut secrets = Secrets::new();
    let mut texts: Vec<(&str, String)> = Vec::new();

    // --- The agent binary at `-v trace`.
    // The binary logs the configured metrics address, so give it a port that was just free.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let process = AgentProcess::start(&server.endpoint_url(), metrics_port);
    let addr = process.logged_addr("serving credentials").await;
    let metrics_addr = process.logged_addr("serving metrics").await;

    let good = pod_token("app", "secrets-good", now());
    secrets.token(&good);
    let (status, body) = get(addr, "/v1/credentials", Some(&good)).await;
    assert_eq!(status, 200, "{body}\n{}", process.output());
    let (status, _) = get(addr, "/v1/credentials", Some(&good)).await;
    assert_eq!(status, 200, "cache hit");

    let unassociated = pod_token("nobody", "secrets-nobody", now());
    secrets.token(&unassociated);
    let (status, body) = get(addr, "/v1/credentials", Some(&unassociated)).await;
    assert_eq!(status, 404, "{body}");
    texts.push(("a 404 body", body));

    let expired = pod_token(
        "app",
        "secrets-expired",
        now() - Duration::from_secs(3 * 86_400),
    );
    secrets.token(&expired);
    let (status, body) = get(addr, "/v1/credentials", Some(&expired)).await;
    assert_eq!(status, 400, "{body}");
    texts.push(("a 400 body", body));

    let not_a_jwt = "secret-looking-opaque-value-that-is-no-jwt-0123456789";
    secrets.values.push(not_a_jwt.to_owned());
    let (status, body) = get(addr, "/v1/credentials", Some(not_a_jwt)).await;
    assert_eq!(status, 400, "{body}");
    texts.push(("a 400 body", body));

    simulator.fail(EksAuthErrorCode::Throttling, Times::Always);
    let throttled = pod_token("app", "secrets-throttled", now());
    secrets.token(&throttled);
    let (status, body) = get(addr, "/v1/credentials", Some(&throttled)).await;
    assert_eq!(status, 429, "{body}");
    texts.push(("a 429 body", body));
    simulator.clear_failures();

    // --- The provider (in process) fetching through the binary.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let provided = pod_token("app", "secrets-provider", now());
    secrets.token(&provided);
    std::fs::write(&token_file, &provided).unwrap();
    let provider = PodIdentityCredentialsProvider::builder()
        .env(Env::from_vars(Vec::<(String, String)>::new()))
        .full_uri(format!("http://{addr}/v1/credentials"))
        .token_file(&token_file)
        .build();
    let credentials = provider.credentials().await.unwrap();
    texts.push((
        "the provider's credentials Debug",
        format!("{credentials:?}"),
    ));
    texts.push(("the provider's Debug", format!("{provider:?}")));
    // The agent refuses the token: the provider's error, text and Debug.
    std::fs::write(&token_file, not_a_jwt).unwrap();
    let failing = PodIdentityCredentialsProvider::builder()
        .env(Env::from_vars(Vec::<(String, String)>::new()))
        .full_uri(format!("http://{addr}/v1/credentials"))
        .token_file(&token_file)
        .max_attempts(1)
        .build();
    let error = failing.credentials().await.unwrap_err();
    texts.push(("a provider error", format!("{error} {error:?}")));

    let (status, metrics) = get(metrics_addr, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("pod_identity_http_response"), "{metrics}");
    texts.push(("the binary's metrics", metrics));

    // --- An in-process agent over the same simulator, and a wrongly signed source.
    let source = EksAuthSource::builder()
        .aws_client(|aws| {
            aws.region("us-west-2")
                .endpoint_url(server.endpoint_url())
                .credentials_provider(Credentials::new(
                    NODE_KEY,
                    NODE_SECRET,
                    Some(NODE_SESSION.to_owned()),
                    None,
                    "node",
                ))
        })
        .build()
        .await
        .unwrap();
    let metrics = pod_identity_agent_lib::metrics::Metrics::new();
    let agent = Serving::start(
        AgentBuilder::new("demo".parse().unwrap(), source.clone())
            .bind_hosts(["127.0.0.1"])
            .metrics(metrics.clone()),
    )
    .await;
    let in_process = agent.addr;
    let local = pod_token("app", "secrets-in-process", now());
    secrets.token(&local);
    assert_eq!(
        get(in_process, "/v1/credentials", Some(&local)).await.0,
        200
    );
    assert_eq!(
        get(in_process, "/v1/credentials", Some(&unassociated))
            .await
            .0,
        404
    );
    texts.push(("the in-process metrics", metrics.encode()));

    let wrong_node = EksAuthSource::builder()
        .aws_client(|aws| {
            aws.region("us-west-2")
                .endpoint_url(server.endpoint_url())
                .credentials_provider(Credentials::new(
                    NODE_KEY,
                    "a-wrong-node-secret-key-0123456789",
                    None,
                    None,
                    "node",
                ))
                .max_attempts(1)
        })
        .build()
        .await
        .unwrap();
    secrets
        .values
        .push("a-wrong-node-secret-key-0123456789".to_owned());
    let request = CredentialRequest::new(
        "demo".parse().unwrap(),
        ServiceAccountToken::decode(&local).unwrap(),
    );
    let error = wrong_node.credentials(&request).await.unwrap_err();
    assert!(
        matches!(
            error.code(),
            "InvalidSignatureException" | "UnrecognizedClientException"
        ),
        "{error:?}"
    );
    texts.push(("a source error", format!("{error} {error:?}")));
    texts.push(("a request's Debug", format!("{request:?}")));
    texts.push(("a source's Debug", format!("{source:?}")));
    let issued = source.credentials(&request).await.unwrap();
    texts.push(("issued credentials' Debug", format!("{issued:?}")));

    agent.stop().await;
    let binary_output = process.terminate().await;

    // --- Nothing secret anywhere.
    secrets.issued_by(&simulator);
    assert!(simulator.sessions().len() >= 4);
    // The binary really logged at trace (its dependencies included) and said what happened.
    assert!(
        binary_output.contains("\"level\":\"trace\""),
        "{binary_output}"
    );
    for expected in [
        "credential request",
        "fetching credentials failed",
        "ThrottlingException",
    ] {
        assert!(binary_output.contains(expected), "missing {expected:?}");
    }
    assert!(!binary_output.contains("panicked"), "{binary_output}");
    secrets.assert_absent("the agent binary's output at -v trace", &binary_output);
    let in_process_output = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(in_process_output.contains("\"level\":\"TRACE\""));
    assert!(!in_process_output.contains("panicked"));
    secrets.assert_absent("the in-process logs at TRACE", &in_process_output);
    for (what, text) in &texts {
        secrets.assert_absent(what, text);
    }
}
