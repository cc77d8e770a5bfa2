//! The parties of a scenario: the EKS Auth simulator, a real agent on loopback, pod tokens, and
//! the environment aws-config's `EcsCredentialsProvider` reads.

use std::error::Error;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use aws_credential_types::Credentials;
use pod_identity_agent_lib::server::ConnectionLimits;
use pod_identity_agent_lib::simulator::{
    EksAuthSimulator, NodeCredentials, PodToken, SimulatorServer, mint_token,
};
use pod_identity_agent_lib::{AgentBuilder, source::eks_auth::EksAuthSource};
use pod_identity_core::endpoint::{
    CREDENTIALS_PATH, ENV_AUTHORIZATION_TOKEN, ENV_AUTHORIZATION_TOKEN_FILE, ENV_FULL_URI,
    ENV_RELATIVE_URI,
};
use pod_identity_core::{association::ClusterName, secret::SecretString};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::clock::system_now;

/// Errors of the benchmark fixtures.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The cluster every scenario runs in.
pub const CLUSTER: &str = "bench";
/// The namespace and service account of the benchmark pods.
pub const NAMESPACE: &str = "default";
/// The service account of the benchmark pods.
pub const SERVICE_ACCOUNT: &str = "bench-app";
/// The role of the benchmark association.
pub const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/bench-app";

/// Where aws-config's `EcsCredentialsProvider` finds the agent: it reads only the process
/// environment (aws-config 1.8 has no public override), so the benchmark process runs itself
/// again with these set.
#[derive(Clone, Debug)]
pub struct EcsEnvironment {
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub full_uri: String,
    /// The agent's port in that URI.
    pub port: u16,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`: write the pod token here before the first call.
    pub token_file: PathBuf,
}

/// This process's container-credentials environment. When it is not set, runs this program
/// again with it set (a free loopback port, a token file) and exits with the child's status.
pub fn ecs_environment() -> EcsEnvironment {
    // The seam for the environment: aws-config's provider reads the process environment, so the
    // benchmarks set it up through it.
    #[allow(clippy::disallowed_methods)]
    let (uri, file) = (
        std::env::var(ENV_FULL_URI).ok(),
        std::env::var(ENV_AUTHORIZATION_TOKEN_FILE).ok(),
    );
    if let (Some(full_uri), Some(file)) = (uri, file)
        && let Some(port) = port_of(&full_uri)
    {
        return EcsEnvironment {
            full_uri,
            port,
            token_file: PathBuf::from(file),
        };
    }
    let code = rerun_with_environment().unwrap_or_else(|error| {
        let _ = writeln_stderr(&format!("cannot run the benchmark process again: {error}"));
        1
    });
    std::process::exit(code);
}

fn port_of(uri: &str) -> Option<u16> {
    let rest = uri.strip_prefix("http://127.0.0.1:")?;
    rest.split('/').next()?.parse().ok()
}

fn rerun_with_environment() -> Result<i32, BoxError> {
    let port = free_port()?;
    let token_file = std::env::temp_dir().join(format!(
        "pod-identity-bench-{}-{port}.token",
        std::process::id()
    ));
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(
            ENV_FULL_URI,
            format!("http://127.0.0.1:{port}{CREDENTIALS_PATH}"),
        )
        .env(ENV_AUTHORIZATION_TOKEN_FILE, &token_file)
        .env_remove(ENV_RELATIVE_URI)
        .env_remove(ENV_AUTHORIZATION_TOKEN)
        .status()?;
    let _ = std::fs::remove_file(&token_file);
    Ok(status.code().unwrap_or(1))
}

fn writeln_stderr(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stderr(), "{text}")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The benchmark cluster's name.
pub fn cluster() -> ClusterName {
    CLUSTER
        .parse()
        .unwrap_or_else(|_| unreachable!("{CLUSTER} is a cluster name"))
}

/// A simulator for the benchmark cluster with one association (`default/bench-app`).
pub fn simulator() -> Result<EksAuthSimulator, BoxError> {
    Ok(EksAuthSimulator::builder()
        .cluster_name(cluster())
        .node_credentials(NodeCredentials::random())
        .associate(
            NAMESPACE.parse()?,
            SERVICE_ACCOUNT.parse()?,
            ROLE_ARN.parse()?,
        )
        .build()?)
}

/// A pod's service-account token (about 1.2 KiB, the real claim layout), valid for a day.
pub fn pod_token(pod: usize) -> SecretString {
    let namespace = NAMESPACE
        .parse()
        .unwrap_or_else(|_| unreachable!("{NAMESPACE} is a namespace"));
    let service_account = SERVICE_ACCOUNT
        .parse()
        .unwrap_or_else(|_| unreachable!("{SERVICE_ACCOUNT} is a service account name"));
    mint_token(&PodToken::new(
        namespace,
        service_account,
        format!("{SERVICE_ACCOUNT}-7c9f5d8b6-{pod:05}"),
        system_now(),
    ))
}

/// A real agent (agent-lib's `AgentBuilder` over `EksAuthSource`) on loopback, in front of the
/// simulator. Request rate limiting is off; probes and metrics servers are off.
#[derive(Debug)]
pub struct LocalAgent {
    /// The simulator the agent calls.
    pub simulator: EksAuthSimulator,
    simulator_server: Option<SimulatorServer>,
    /// The agent's credentials address.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl LocalAgent {
    /// Starts the simulator and an agent on `127.0.0.1:port` (0 picks one); `configure` may
    /// change the agent's settings (the rate limit is already off).
    pub async fn start(
        port: u16,
        configure: impl FnOnce(AgentBuilder<EksAuthSource>) -> AgentBuilder<EksAuthSource>,
    ) -> Result<Self, BoxError> {
        let simulator = simulator()?;
        let simulator_server = simulator.serve("127.0.0.1:0".parse()?).await?;
        let node = simulator.node_credentials();
        let source = EksAuthSource::builder()
            .aws_client(|aws| {
                aws.region(simulator.region())
                    .endpoint_url(simulator_server.endpoint_url())
                    .credentials_provider(Credentials::new(
                        node.access_key_id(),
                        node.secret_access_key().expose_secret(),
                        None,
                        None,
                        "bench-node",
                    ))
                    // Cold bursts queue a thousand calls on one machine: no attempt may time out.
                    .attempt_timeout(Duration::from_secs(30))
            })
            .build()
            .await?;
        let builder = AgentBuilder::new(cluster(), source)
            .bind_hosts(["127.0.0.1"])
            // One loopback address stands for every pod: the per-client bounds are raised out
            // of reach (their checks still run on every request and connection).
            .server(move |server| {
                server
                    .port(port)
                    .probe_addr(None)
                    .metrics_addr(None)
                    .connection_limits(
                        ConnectionLimits::default()
                            .max_connections(usize::MAX)
                            .max_connections_per_client(usize::MAX),
                    )
                    .drain_timeout(Duration::from_secs(1))
            })
            .router(|router| {
                router
                    .rate_limit(0, 0)
                    .client_rate_limit(u32::MAX, u32::MAX)
            })
            .cache(|cache| cache.client_miss_budget(u32::MAX, u32::MAX));
        let server = configure(builder).bind().await?;
        let addr = *server
            .credential_addrs()
            .first()
            .ok_or("the agent bound no address")?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            simulator,
            simulator_server: Some(simulator_server),
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:<port>/v1/credentials`.
    pub fn full_uri(&self) -> String {
        format!("http://{}{CREDENTIALS_PATH}", self.addr)
    }

    /// Stops the agent and the simulator.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(server) = self.simulator_server.take() {
            let _ = server.shutdown().await;
        }
    }
}
