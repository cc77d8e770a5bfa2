//! Interop over IPv4 and IPv6 loopback: the EKS Auth simulator, an agent assembled from
//! agent-lib, and three clients of the agent:
//!
//! - our `PodIdentityCredentialsProvider` through aws-config, signing an `aws-sdk-sts` call;
//! - aws-config's built-in `EcsCredentialsProvider` (in a child process: aws-config 1.8 reads
//!   the container variables from the process environment only, and this test process must not
//!   mutate its own);
//! - the Python SDK, botocore from `.venv` (`bash scripts/python-env.sh`), through its
//!   container provider, in a child process.
//!
//! Each checks that the credentials the simulator issued reached the client (access key ids)
//! and that a `GetCallerIdentity` signed with them verified (the STS target answered the
//! assumed-role ARN of exactly that session).

#![allow(clippy::unwrap_used)] // A test crate: a panic is how a check fails.

// The agent package's test support: the same simulator, tokens and in-process agent.
#[path = "../../agent/tests/support/mod.rs"]
mod support;

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_sts::config::{Credentials, ProvideCredentials, Region};
use pod_identity_agent_lib::simulator::{EksAuthSimulator, NodeCredentials, SimulatorServer};
use pod_identity_agent_lib::{AgentBuilder, source::eks_auth::EksAuthSource};
use pod_identity_provider::{Env, PodIdentityCredentialsProvider};
use tempfile::TempDir;

use support::{Serving, now, pod_token, simulator, skip_or_fail_in_ci};

const IPV4: &str = "127.0.0.1";
const IPV6: &str = "[::1]";
const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/interop";
/// Set in the environment of the child processes this file starts.
const CHILD_MARKER: &str = "POD_IDENTITY_INTEROP_CHILD";

/// Simulator and agent on one loopback host, with a pod's token in a file.
struct Stack {
    simulator: EksAuthSimulator,
    sim_server: SimulatorServer,
    sim_url: String,
    full_uri: String,
    token_file: PathBuf,
    dir: TempDir,
    agent: Serving,
}

impl Stack {
    async fn start(host: &str) -> Self {
        let ip: IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .unwrap();
        let node = NodeCredentials::random();
        let (simulator, sim_server) =
            simulator("interop", node.clone(), ROLE_ARN, SocketAddr::new(ip, 0)).await;
        let sim_url = sim_server.endpoint_url();

        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("eks-pod-identity-token");
        std::fs::write(&token_file, pod_token("app", "app-5d8f7c9b4-q7x2m", now())).unwrap();

        let node_config = aws_config::defaults(BehaviorVersion::latest())
            .empty_test_environment()
            .region(Region::new(simulator.region().to_owned()))
            .credentials_provider(Credentials::new(
                node.access_key_id(),
                node.secret_access_key().expose_secret(),
                None,
                None,
                "interop-node",
            ))
            .load()
            .await;
        let source = EksAuthSource::builder()
            .aws_client(|aws| aws.sdk_config(node_config).endpoint_url(&sim_url))
            .build()
            .await
            .unwrap();
        let agent = Serving::start(
            AgentBuilder::new(simulator.cluster_name().clone(), source)
                .bind_hosts([host])
                .server(move |server| server.drain_timeout(Duration::from_secs(1))),
        )
        .await;
        assert_eq!(agent.addr.ip(), ip);
        Self {
            full_uri: agent.full_uri(),
            simulator,
            sim_server,
            sim_url,
            token_file,
            dir,
            agent,
        }
    }

    /// What a pod's process needs, and nothing from this process's environment: no AWS
    /// credentials, profile or config file, no instance metadata.
    fn child_env(&self) -> Vec<(&'static str, OsString)> {
        let region = self.simulator.region();
        vec![
            (CHILD_MARKER, "1".into()),
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                self.full_uri.clone().into(),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                self.token_file.clone().into(),
            ),
            ("AWS_ENDPOINT_URL_STS", self.sim_url.clone().into()),
            ("AWS_REGION", region.into()),
            ("AWS_DEFAULT_REGION", region.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", self.dir.path().join("no-config").into()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("no-credentials").into(),
            ),
            ("HOME", self.dir.path().into()),
        ]
    }

    /// The client got the credentials the simulator issued, and a request signed with them
    /// verified as that session.
    fn assert_issued_and_verified(&self, access_key_id: &str, arn: &str) {
        let sessions = self.simulator.sessions();
        assert_eq!(sessions.len(), 1, "one pod, one EKS Auth session");
        let session = &sessions[0];
        assert!(access_key_id.starts_with("ASIA"), "{access_key_id}");
        assert_eq!(access_key_id, session.access_key_id);
        assert_eq!(arn, session.assumed_role_arn);
        assert!(arn.starts_with("arn:aws:sts::111122223333:assumed-role/interop/eks-interop-app-"));
    }

    async fn stop(self) {
        self.agent.stop().await;
        self.sim_server.shutdown().await.unwrap();
    }
}

#[allow(clippy::disallowed_methods)] // the child test asks whether it runs as a child
fn env_is_set(name: &str) -> bool {
    std::env::var_os(name).is_some()
}

/// The value of `KEY=value` a child printed (the test harness may print before it on the line).
fn printed<'a>(stdout: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    stdout
        .lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, value)| value))
        .unwrap_or_else(|| panic!("the child printed no {key}:\n{stdout}"))
}

async fn run_child(mut command: Command) -> String {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "child failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

// (a) Our provider through aws-config.

async fn our_provider_through_aws_config(host: &str) {
    let stack = Stack::start(host).await;
    let provider = PodIdentityCredentialsProvider::builder()
        .full_uri(&stack.full_uri)
        .token_file(&stack.token_file)
        .env(Env::from_vars(Vec::<(String, String)>::new()))
        .build();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .empty_test_environment()
        .region(Region::new(stack.simulator.region().to_owned()))
        .credentials_provider(provider.clone())
        .load()
        .await;
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&config)
            .endpoint_url(&stack.sim_url)
            .build(),
    );
    let identity = sts.get_caller_identity().send().await.unwrap();
    let credentials = provider.credentials().await.unwrap();
    stack.assert_issued_and_verified(credentials.access_key_id(), identity.arn().unwrap());
    assert_eq!(identity.account(), Some("111122223333"));
    stack.stop().await;
}

#[tokio::test]
async fn our_provider_through_aws_config_over_ipv4() {
    our_provider_through_aws_config(IPV4).await;
}

#[tokio::test]
async fn our_provider_through_aws_config_over_ipv6() {
    our_provider_through_aws_config(IPV6).await;
}

// (b) aws-config's EcsCredentialsProvider, in a child process.

async fn aws_configs_ecs_provider(host: &str) {
    let stack = Stack::start(host).await;
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "ecs_provider_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .envs(stack.child_env());
    let stdout = run_child(child).await;
    stack.assert_issued_and_verified(printed(&stdout, "ACCESS_KEY_ID"), printed(&stdout, "ARN"));
    stack.stop().await;
}

#[tokio::test]
async fn aws_configs_ecs_provider_over_ipv4() {
    aws_configs_ecs_provider(IPV4).await;
}

#[tokio::test]
async fn aws_configs_ecs_provider_over_ipv6() {
    aws_configs_ecs_provider(IPV6).await;
}

/// The child of `aws_configs_ecs_provider_*`: resolves credentials with aws-config's container
/// provider from the environment it was given, and signs a `GetCallerIdentity` with them
/// (region and STS endpoint from the environment too).
#[tokio::test]
#[ignore = "run by aws_configs_ecs_provider_over_* in a child process"]
async fn ecs_provider_child() {
    if !env_is_set(CHILD_MARKER) {
        println!("nothing to do: this test runs as a child of aws_configs_ecs_provider_over_*");
        return;
    }
    let ecs = aws_config::ecs::EcsCredentialsProvider::builder().build();
    let credentials = ecs
        .provide_credentials()
        .await
        .expect("credentials from the agent");
    let config = aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(ecs)
        .load()
        .await;
    let identity = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity");
    println!("ACCESS_KEY_ID={}", credentials.access_key_id());
    println!("ARN={}", identity.arn().unwrap_or_default());
}

// (c) botocore, through its container provider.

/// `.venv/bin/python`, or `None` (with the reason printed) outside CI when it is missing.
fn python() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    skip_or_fail_in_ci(format_args!(
        "{} is missing (`bash scripts/python-env.sh` creates it)",
        python.display()
    ))
}

const BOTOCORE_SCRIPT: &str = r#"
import botocore.session

session = botocore.session.get_session()
credentials = session.get_credentials()
print("METHOD=" + credentials.method)
print("ACCESS_KEY_ID=" + credentials.get_frozen_credentials().access_key)
identity = session.create_client("sts").get_caller_identity()
print("ARN=" + identity["Arn"])
"#;

async fn botocores_container_provider(host: &str) {
    let Some(python) = python() else {
        return;
    };
    let stack = Stack::start(host).await;
    let mut child = Command::new(python);
    child
        .args(["-c", BOTOCORE_SCRIPT])
        .env_clear()
        .envs(stack.child_env());
    let stdout = run_child(child).await;
    assert_eq!(printed(&stdout, "METHOD"), "container-role");
    stack.assert_issued_and_verified(printed(&stdout, "ACCESS_KEY_ID"), printed(&stdout, "ARN"));
    stack.stop().await;
}

#[tokio::test]
async fn botocores_container_provider_over_ipv4() {
    botocores_container_provider(IPV4).await;
}

#[tokio::test]
async fn botocores_container_provider_over_ipv6() {
    botocores_container_provider(IPV6).await;
}
