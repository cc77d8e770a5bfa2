//! The EKS Auth simulator on its own, for an agent running in another process or a container.
//!
//! ```text
//! eks-auth-simulator --state-dir DIR [--listen 127.0.0.1:0] [--cluster-name my-cluster]
//!     [--namespace default] [--service-account app] [--role-arn ARN] [--lifetime 6h]
//! ```
//!
//! Starts the simulator (agent-lib feature `simulator`: EKS Auth `AssumeRoleForPodIdentity`
//! and an STS target, both checking SigV4) with fresh random node credentials and one
//! association, mints a service-account token for a pod of that association, and writes into
//! `DIR` (each file mode 0600):
//!
//! - `token`: the pod's token (what `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` points at);
//! - `credentials`: the node credentials as a shared credentials file (profile `default`);
//! - `node.env`: the same as `AWS_ACCESS_KEY_ID=…` lines (for `podman run --env-file`);
//! - `endpoint`: the simulator's URL, written last: once it exists, the rest are in place.
//!
//! Then it serves until SIGTERM or Ctrl-C. It prints one line per issued credential with the
//! access key id only (never a secret key, session token or token), so a caller can check that
//! credentials it received came from here. `deploy/image-check.sh` runs the agent image against
//! it. Nothing talks to AWS.

use std::error::Error;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use pod_identity_agent_lib::server::shutdown_signal;
use pod_identity_agent_lib::simulator::{
    DEFAULT_CREDENTIAL_LIFETIME, EksAuthSimulator, NodeCredentials, PodToken, mint_token,
};
use pod_identity_core::{
    arn::Arn, association::ClusterName, association::Namespace, association::ServiceAccountName,
};

type BoxError = Box<dyn Error + Send + Sync>;

/// The EKS Auth simulator on loopback, with its node credentials and a pod token in files.
#[derive(Debug, Parser)]
#[command(name = "eks-auth-simulator", version)]
struct Cli {
    /// Directory for `token`, `credentials`, `node.env` and `endpoint` (created if missing).
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,

    /// Address to listen on (port 0: any free port; the URL goes to `endpoint`).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// The cluster the association and the agent's requests name.
    #[arg(long, default_value = "my-cluster")]
    cluster_name: ClusterName,

    /// Namespace of the association and of the pod the token is for.
    #[arg(long, default_value = "default")]
    namespace: Namespace,

    /// Service account of the association and of the pod the token is for.
    #[arg(long, default_value = "app")]
    service_account: ServiceAccountName,

    /// Role of the association.
    #[arg(long, default_value = "arn:aws:iam::111122223333:role/app")]
    role_arn: Arn,

    /// Lifetime of issued credentials, in seconds (EKS Auth: 21600).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_CREDENTIAL_LIFETIME.as_secs())]
    lifetime: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter("warn,pod_identity_agent_lib::simulator=info")
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "eks-auth-simulator: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    let node = NodeCredentials::random();
    let simulator = EksAuthSimulator::builder()
        .cluster_name(cli.cluster_name.clone())
        .node_credentials(node.clone())
        .associate(
            cli.namespace.clone(),
            cli.service_account.clone(),
            cli.role_arn,
        )
        .credential_lifetime(Duration::from_secs(cli.lifetime))
        .build()?;
    let server = simulator.serve(cli.listen).await?;
    let pod_name = format!("{}-7c9f5d8b6-x2k4q", cli.service_account);
    let token = mint_token(&PodToken::new(
        cli.namespace,
        cli.service_account,
        pod_name.as_str(),
        now(),
    ));

    let dir = &cli.state_dir;
    std::fs::create_dir_all(dir)?;
    let secret = node.secret_access_key().expose_secret();
    write_private(&dir.join("token"), token.expose_secret())?;
    write_private(
        &dir.join("credentials"),
        &format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
            node.access_key_id()
        ),
    )?;
    write_private(
        &dir.join("node.env"),
        &format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={secret}\n",
            node.access_key_id()
        ),
    )?;
    let endpoint = server.endpoint_url();
    write_private(&dir.join("endpoint"), &format!("{endpoint}\n"))?;
    println!(
        "EKS Auth simulator on {endpoint}: cluster {}, region {}, node key {} (secret in {})",
        simulator.cluster_name(),
        simulator.region(),
        node.access_key_id(),
        dir.join("credentials").display()
    );

    shutdown_signal().await;
    server.shutdown().await?;
    Ok(())
}

/// Writes `contents` to `path` with mode 0600 (through a temporary file renamed into place).
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[allow(clippy::disallowed_methods)] // the token is checked by another process on the real clock
fn now() -> SystemTime {
    SystemTime::now()
}
