//! Support shared by the agent's and the examples' test binaries: the rule for tests that cannot
//! run here, the real clock and pod tokens minted against it, the EKS Auth simulator and the agent
//! serving in this process on loopback, one HTTP/1 `GET`, and the output of child processes.
// Each test binary uses a part of this module.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use aws_smithy_async::time::{SystemTimeSource, TimeSource};
use std::fmt::Display;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pod_identity_agent_lib::simulator::{
    EksAuthSimulator, NodeCredentials, PodToken, SimulatorServer, mint_token,
};
use pod_identity_agent_lib::{AgentBuilder, source::CredentialSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long an answer, a process or an agent's shutdown may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// 127.0.0.1, any port.
pub const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// The role associated with `default/app` in the simulators here.
pub const APP_ROLE: &str = "arn:aws:iam::111122223333:role/app";

/// `pod-identity-agent server` flags for cluster `demo` in us-west-2 on 127.0.0.1: credentials
/// and probes on free ports, metrics on 127.0.0.1 (its port is the caller's).
pub const SERVER_ARGS: [&str; 13] = [
    "server",
    "--cluster-name",
    "demo",
    "--bind-hosts",
    "127.0.0.1",
    "--port",
    "0",
    "--probe-port",
    "0",
    "--metrics-address",
    "127.0.0.1",
    "--region",
    "us-west-2",
];

/// Whether this runs under CI, which marks itself with `CI`.
#[allow(clippy::disallowed_methods)] // Tests have no env seam; this is the one read.
pub fn running_in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Skips a test (or a part of one) that cannot run here, printing `reason`; under CI, where
/// every test must run, fails it instead. Returns `None`, for `let Some(..) = .. else { return }`.
#[track_caller]
pub fn skip_or_fail_in_ci<T>(reason: impl Display) -> Option<T> {
    assert!(
        !running_in_ci(),
        "this test must run under CI, but cannot: {reason}"
    );
    println!("skipped: {reason}");
    None
}

/// The system clock: the agent, here or in another process, checks tokens against it.
pub fn now() -> SystemTime {
    SystemTimeSource::new().now()
}

/// A token the simulator signs for pod `pod` of `default/<service_account>`, issued at
/// `issued_at` (valid for a day).
pub fn pod_token(service_account: &str, pod: &str, issued_at: SystemTime) -> String {
    mint_token(&PodToken::new(
        "default".parse().unwrap(),
        service_account.parse().unwrap(),
        pod,
        issued_at,
    ))
    .expose_secret()
    .to_owned()
}

/// The simulator of cluster `cluster` knowing `node`, with `default/app` associated with
/// `role_arn`, serving on `addr`.
pub async fn simulator(
    cluster: &str,
    node: NodeCredentials,
    role_arn: &str,
    addr: SocketAddr,
) -> (EksAuthSimulator, SimulatorServer) {
    let simulator = EksAuthSimulator::builder()
        .cluster_name(cluster.parse().unwrap())
        .node_credentials(node)
        .associate(
            "default".parse().unwrap(),
            "app".parse().unwrap(),
            role_arn.parse().unwrap(),
        )
        .build()
        .unwrap();
    let server = simulator
        .serve(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot bind the simulator on {addr}: {e}"));
    (simulator, server)
}

/// The agent serving in this process until [`stop`](Self::stop)ped.
pub struct Serving {
    /// The first credentials address.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<()>,
}

impl Serving {
    /// Binds `builder` on port 0 without probe or metrics listeners and serves it on a task.
    pub async fn start<S: CredentialSource>(builder: AgentBuilder<S>) -> Self {
        let agent = builder
            .server(move |server| server.port(0).probe_addr(None).metrics_addr(None))
            .bind()
            .await
            .unwrap_or_else(|e| panic!("cannot bind the agent: {e}"));
        let addr = agent.credential_addrs()[0];
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(agent.serve(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop,
            serving,
        }
    }

    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` for this agent.
    pub fn full_uri(&self) -> String {
        format!("http://{}/v1/credentials", self.addr)
    }

    /// Stops accepting and waits (at most [`WAIT`]) for the requests in flight.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.serving)
            .await
            .expect("the agent stops within the wait")
            .unwrap();
    }
}

/// `GET {path}` with `Host: {addr}`, an optional `Authorization` and `Connection: close`, on a
/// new connection, answered within [`WAIT`]: (status, body).
pub async fn get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = authorization {
        request.push_str(&format!("Authorization: {token}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{addr} did not answer GET {path} within {WAIT:?}"));
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Appends each line of `stream` (a child's stdout or stderr) to `into`, on a thread of its own
/// that ends at the end of the stream (when the child has exited).
pub fn collect_lines(
    stream: impl Read + Send + 'static,
    into: &Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    let into = Arc::clone(into);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut into = into.lock().unwrap();
            into.push_str(&line);
            into.push('\n');
        }
    })
}

/// Looks every 10 ms until `found` gives a value, for at most [`WAIT`]; panics naming `what`
/// after that. `found` may panic itself (a child that exited will not log what is awaited).
pub async fn eventually<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
