//! EKS Pod Identity end to end on one machine: simulator, agent, provider and the AWS SDK.
//!
//! ```text
//! cargo run -p pod-identity-examples --bin demo [-- --lifetime 30s --associations FILE --keep-running]
//! ```
//!
//! 1. Starts the EKS Auth simulator (agent-lib feature `simulator`) on loopback with one
//!    association and mints the pod's service-account token, signed with a cluster key made
//!    here, into a temporary token file.
//! 2. Starts a loopback Kubernetes API (`/version` 1.34, `/openid/v1/jwks` with that key) and an
//!    agent assembled from agent-lib: `EksAuthSource` pointed at the simulator, signing with the
//!    simulator's node credentials, and a `RotationVerifier` (feature `kubernetes`) for rotated
//!    tokens.
//! 3. Builds an aws-config `SdkConfig` with `PodIdentityCredentialsProvider` pointed at the agent
//!    (full URI and token file through the builder, not the environment) and makes a signed
//!    `aws-sdk-sts` `GetCallerIdentity` call to the simulator's STS target, which verifies the
//!    SigV4 signature and answers the assumed-role identity.
//! 4. Credentials live `--lifetime` (30 s; EKS Auth grants 6 h), so the provider refreshes them
//!    in the background within seconds. A caller loop keeps reading credentials meanwhile; the
//!    provider's counters show that no caller ever waited for a fetch, and a second signed call
//!    shows the renewed credentials verify.
//! 5. Makes EKS Auth fail every call, rotates the pod's token (same pod, new `jti`, `iat`,
//!    `exp`) and asks the agent with it: 200 with the cached credentials, no EKS Auth call.
//! 6. Prints the trace of every hop (access key ids only: no secret key, session token or
//!    service-account token) and exits 0, or non-zero when a check fails.
//!
//! Nothing talks to AWS. `RUST_LOG` changes which component events are traced.

mod agent;
mod associations;
mod cluster;
mod refresh;
mod trace;

use std::error::Error;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::identity::IdentityCache;
use aws_sdk_sts::config::{Credentials, Region};
use aws_sdk_sts::error::DisplayErrorContext;
use clap::Parser;
use pod_identity_agent_lib::kubernetes::{
    client::ClientConfig, client::KubeClient, jwks::RotationVerifier, version::VersionGate,
};
use pod_identity_agent_lib::server::shutdown_signal;
use pod_identity_agent_lib::simulator::Times;
use pod_identity_agent_lib::simulator::{EksAuthSimulator, NodeCredentials, PodToken, mint_token};
use pod_identity_agent_lib::source::eks_auth::EksAuthSource;
use pod_identity_core::container_credentials::MIN_REMAINING;
use pod_identity_core::endpoint::{
    CREDENTIALS_PATH, ENV_AUTHORIZATION_TOKEN_FILE, ENV_FULL_URI, TOKEN_FILE_PATH,
};
use pod_identity_core::{eks_auth::EksAuthErrorCode, secret::SecretString};
use pod_identity_provider::{Env, PodIdentityCredentialsProvider};

use crate::agent::{Agent, credentials_request};
use crate::associations::associations;
use crate::cluster::ClusterKeys;
use crate::refresh::{CALLER_INTERVAL, expected_refresh, refresh_windows, watch_refresh};
use crate::trace::install_trace;

type BoxError = Box<dyn Error + Send + Sync>;

/// The demo's loopback host.
const HOST: &str = "127.0.0.1";
/// The suffix of the pod's name (a Deployment's pod: `<service account>-<hash>-<id>`).
const POD_SUFFIX: &str = "7c9f5d8b6-x2k4q";

/// EKS Pod Identity end to end on loopback: EKS Auth simulator → agent → provider → AWS SDK.
///
/// Nothing talks to AWS. Every hop is real HTTP, every AWS call is SigV4-signed and verified.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
struct Cli {
    /// Associations to serve, as JSON in the EKS API's shape (a list, or the output of
    /// `aws eks list-pod-identity-associations`); the demo pod runs as the first one.
    /// Default: default/demo-app → arn:aws:iam::111122223333:role/demo-app.
    #[arg(long, value_name = "FILE")]
    associations: Option<PathBuf>,

    /// Lifetime of the credentials the simulator issues (EKS Auth: 6h). Short, so that the
    /// provider's background refresh happens during the demo. More than 15s: the agent never
    /// hands out credentials with 15 s or less left. Examples: 18s, 45s, 2m, 6h.
    #[arg(long, default_value = "30s", value_parser = parse_lifetime, value_name = "DURATION")]
    lifetime: Duration,

    /// Leave the simulator and the agent running until Ctrl-C, and print the environment a
    /// second process (your program, the AWS CLI) needs to use them.
    #[arg(long)]
    keep_running: bool,

    /// Write every secret of the run to FILE (one per line), so that a test can check that none
    /// of them was printed.
    #[arg(long, value_name = "FILE", hide = true)]
    secrets_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let started = clock::instant();
    install_trace(started);
    match Box::pin(run(cli, started)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut text = format!("demo failed: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                let _ = write!(text, ": {cause}");
                source = cause.source();
            }
            let _ = writeln!(std::io::stderr(), "{text}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, started: Instant) -> Result<(), BoxError> {
    println!("EKS Pod Identity, end to end on loopback (nothing talks to AWS)");

    // 1. The simulator and the pod's token.
    step(1, "EKS Auth simulator and the pod's service-account token");
    let (cluster, associations) = associations(cli.associations.as_deref())?;
    let association = associations[0].clone();
    let node = NodeCredentials::random();
    let simulator = EksAuthSimulator::builder()
        .cluster_name(cluster.clone())
        .node_credentials(node.clone())
        .associations(associations.iter().cloned())
        .credential_lifetime(cli.lifetime)
        .build()?;
    let sim_server = simulator.serve(loopback(0)?).await?;
    let sim_url = sim_server.endpoint_url();
    let pod_name = format!("{}-{POD_SUFFIX}", association.service_account);
    let cluster_keys = ClusterKeys::generate()?;
    // Issued a minute ago, so the rotated token's iat and exp differ.
    let pod_token = PodToken::new(
        association.namespace.clone(),
        association.service_account.clone(),
        pod_name.as_str(),
        clock::now() - Duration::from_secs(60),
    );
    let token = cluster_keys.sign(&mint_token(&pod_token))?;
    let token_dir = tempfile::tempdir()?;
    let token_file = token_dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, token.expose_secret())?;
    println!(
        "    EKS Auth + STS target   {sim_url}  (cluster {cluster}, region {}, account {})",
        simulator.region(),
        simulator.account_id()
    );
    for a in &associations {
        println!(
            "    association             {}/{} -> {}",
            a.namespace, a.service_account, a.role_arn
        );
    }
    println!(
        "    node credentials        {} (secret access key redacted)",
        node.access_key_id()
    );
    println!(
        "    credential lifetime     {} (EKS Auth: 6h)",
        human(cli.lifetime)
    );
    println!(
        "    pod {pod_name} runs as {}/{}: its token (a JWT, audience pods.eks.amazonaws.com, \
         valid 24h; contents redacted) is in {} (on EKS: {TOKEN_FILE_PATH})",
        association.namespace,
        association.service_account,
        token_file.display()
    );

    // 2. The agent.
    step(
        2,
        "agent (agent-lib: validation -> renewing cache -> EksAuthSource)",
    );
    let node_config = aws_config::defaults(BehaviorVersion::latest())
        // This machine's AWS variables (a FIPS or endpoint setting) are not for the simulator.
        .empty_test_environment()
        .region(Region::new(simulator.region().to_owned()))
        .credentials_provider(Credentials::new(
            node.access_key_id(),
            node.secret_access_key().expose_secret(),
            None,
            None,
            "demo-node",
        ))
        .load()
        .await;
    let source = EksAuthSource::builder()
        .aws_client(|aws| aws.sdk_config(node_config).endpoint_url(&sim_url))
        .build()
        .await?;
    let api = cluster_keys.serve_api().await?;
    let key_dir = tempfile::tempdir()?;
    let client = KubeClient::new(ClientConfig::new(format!("http://{api}")))?;
    let verifier = RotationVerifier::builder(client.clone())
        .version_gate(VersionGate::new(client))
        .cache_path(Some(key_dir.path().join("jwks-cache.json")))
        .build()
        .await;
    let agent = Agent::start(cluster.clone(), source, verifier).await?;
    let full_uri = format!("http://{}{CREDENTIALS_PATH}", agent.addr);
    println!(
        "    credentials endpoint    {full_uri} (on EKS: http://169.254.170.23/v1/credentials)"
    );
    println!(
        "    EKS Auth calls go to    {sim_url}, signed with {}",
        node.access_key_id()
    );
    println!(
        "    Kubernetes API          http://{api} (version 1.34, the cluster's signing keys): \
         rotated tokens are validated locally"
    );

    // 3. The provider, through aws-config, and a signed SDK call.
    let provider = PodIdentityCredentialsProvider::builder()
        .full_uri(&full_uri)
        .token_file(&token_file)
        // The builder's settings only: nothing from this process's environment.
        .env(Env::from_vars(Vec::<(String, String)>::new()))
        .refresh_windows(refresh_windows(cli.lifetime))
        .build();
    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .empty_test_environment()
        .region(Region::new(simulator.region().to_owned()))
        .credentials_provider(provider.clone())
        // The provider caches and refreshes ahead by itself.
        .identity_cache(IdentityCache::no_cache())
        .load()
        .await;
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&sdk_config)
            .endpoint_url(&sim_url)
            .build(),
    );
    step(
        3,
        "aws-sdk-sts GetCallerIdentity, credentials from PodIdentityCredentialsProvider",
    );
    println!("    hops: SDK -> provider -> agent -> EKS Auth; SDK -> STS target (SigV4)");
    let arn = caller_identity(&sts).await?;
    let first = provider.credentials().await?;
    let session = simulator
        .session(first.access_key_id())
        .ok_or("the provider holds credentials the simulator never issued")?;
    if arn != session.assumed_role_arn {
        return Err(format!(
            "the STS target answered {arn}, not the pod's role session {}",
            session.assumed_role_arn
        )
        .into());
    }
    println!("    caller identity         {arn}");
    println!(
        "    the STS target verified the signature made with {}, the key the simulator issued \
         for {}/{}",
        first.access_key_id(),
        session.namespace,
        session.service_account
    );

    // 4. Refresh ahead of expiry, with callers reading all along.
    let refresh = match expected_refresh(cli.lifetime) {
        Some(after) => {
            step(4, "refresh ahead of expiry, off the request path");
            println!(
                "    credentials live {}; the provider refreshes them in the background within {}, \
                 while a caller reads credentials every {} ms",
                human(cli.lifetime),
                human(after),
                CALLER_INTERVAL.as_millis()
            );
            println!(
                "    the agent never hands out credentials with {}s or less left: it renews \
                 them, or evicts and refetches them",
                MIN_REMAINING.as_secs()
            );
            let watched = watch_refresh(&provider, &first).await?;
            let renewed = &watched.renewed;
            let fresh = simulator
                .session(renewed.access_key_id())
                .ok_or("the renewed credentials were not issued by the simulator")?;
            if fresh.issued_at <= session.issued_at {
                return Err("the agent handed out old credentials on refresh".into());
            }
            let arn = caller_identity(&sts).await?;
            if arn != fresh.assumed_role_arn {
                return Err(format!("the STS target answered {arn} after the refresh").into());
            }
            watched.print(&first, renewed);
            println!(
                "    the agent handed out fresh credentials ({} was issued {} after {}), and a \
                 call signed with them verifies: {arn}",
                renewed.access_key_id(),
                human(
                    fresh
                        .issued_at
                        .duration_since(session.issued_at)
                        .unwrap_or_default()
                ),
                first.access_key_id()
            );
            true
        }
        None => {
            step(4, "refresh ahead of expiry: skipped");
            println!(
                "    with --lifetime {} the first refresh is not due for a long time; run with \
                 --lifetime 30s to watch it",
                human(cli.lifetime)
            );
            false
        }
    };

    // 5. kubelet rotates the pod's token while EKS Auth is down.
    step(5, "token rotation during an EKS Auth outage");
    let cached = provider.credentials().await?;
    simulator.fail(EksAuthErrorCode::ServiceUnavailable, Times::Always);
    let calls_before = simulator.request_count();
    let mut rotated = pod_token.clone();
    rotated.jti = format!("{}-rotated", pod_token.jti);
    rotated.issued_at = clock::now();
    let rotated = cluster_keys.sign(&mint_token(&rotated))?;
    let (status, access_key_id) = credentials_request(agent.addr, &rotated).await?;
    let outage_calls = simulator.request_count() - calls_before;
    simulator.clear_failures();
    if status != 200 || access_key_id != cached.access_key_id() || outage_calls != 0 {
        return Err(format!(
            "the rotated token got {status} {access_key_id} with {outage_calls} EKS Auth call(s)"
        )
        .into());
    }
    println!(
        "    EKS Auth answers ServiceUnavailable to every call; the pod presents a rotated token \
         (same pod uid, issuer, namespace and service account; new jti, iat, exp)"
    );
    println!(
        "    rotated token served from the cache: 200 {access_key_id}, {outage_calls} EKS Auth \
         calls; the agent checked its signature against the cluster's keys and kept it for \
         renewals"
    );

    // 6. Summary.
    let sts_calls = if refresh { 2 } else { 1 };
    step(6, "done");
    println!(
        "    {}, {} EKS Auth call(s), {sts_calls} signed STS call(s) verified; only access \
         key ids were shown (secret keys, session tokens and the pod token stay redacted)",
        human(started.elapsed()),
        simulator.request_count()
    );
    if let Some(path) = &cli.secrets_file {
        write_secrets(path, &simulator, &node, &token)?;
    }
    drop(sts);
    drop(sdk_config);
    drop(provider);

    if cli.keep_running {
        print_environment(&full_uri, &token_file, &sim_url, simulator.region());
        shutdown_signal().await;
        println!("\nstopping");
    }
    agent.stop().await;
    sim_server.shutdown().await?;
    Ok(())
}

async fn caller_identity(sts: &aws_sdk_sts::Client) -> Result<String, BoxError> {
    let output = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| format!("GetCallerIdentity failed: {}", DisplayErrorContext(&e)))?;
    Ok(output
        .arn()
        .ok_or("GetCallerIdentity answered without an ARN")?
        .to_owned())
}

fn print_environment(full_uri: &str, token_file: &Path, sim_url: &str, region: &str) {
    println!(
        "\nThe simulator and the agent keep running until Ctrl-C. In another shell, as the pod:\n"
    );
    println!("  export {ENV_FULL_URI}={full_uri}");
    println!(
        "  export {ENV_AUTHORIZATION_TOKEN_FILE}={}",
        token_file.display()
    );
    println!("  export AWS_ENDPOINT_URL_STS={sim_url}");
    println!("  export AWS_REGION={region} AWS_DEFAULT_REGION={region}");
    println!("  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE");
    println!("  aws sts get-caller-identity");
    println!();
}

/// Every secret of the run, for the redaction test.
fn write_secrets(
    path: &Path,
    simulator: &EksAuthSimulator,
    node: &NodeCredentials,
    token: &SecretString,
) -> Result<(), BoxError> {
    let mut secrets = vec![
        node.secret_access_key().expose_secret().to_owned(),
        token.expose_secret().to_owned(),
    ];
    for session in simulator.sessions() {
        secrets.push(session.secret_access_key.expose_secret().to_owned());
        secrets.push(session.session_token.expose_secret().to_owned());
    }
    std::fs::write(path, secrets.join("\n"))?;
    Ok(())
}

fn step(n: u32, title: &str) {
    println!("\n[{n}] {title}");
}

fn loopback(port: u16) -> Result<SocketAddr, BoxError> {
    Ok(SocketAddr::new(HOST.parse()?, port))
}

/// `1.5s`, `250ms`, `6h`, as a person writes them.
fn human(d: Duration) -> String {
    let whole = d.subsec_millis() == 0;
    let secs = d.as_secs();
    if whole && secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if whole && secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else if whole && secs >= 1 {
        format!("{secs}s")
    } else if secs >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// A lifetime such as `45s`, `6h`, `1h30m` (humantime's syntax), longer than the agent's
/// [`MIN_REMAINING`].
fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let lifetime = humantime::parse_duration(text).map_err(|error| {
        format!("invalid duration {text:?}: {error} (examples: 18s, 45s, 2m, 1h30m, 6h)")
    })?;
    if lifetime <= MIN_REMAINING {
        return Err(format!(
            "{text} is too short: the agent never hands out credentials with {}s or less left",
            MIN_REMAINING.as_secs()
        ));
    }
    Ok(lifetime)
}

/// The demo's one clock seam: it measures and prints real time, and mints tokens for now.
mod clock {
    use std::time::{Instant, SystemTime};

    #[allow(clippy::disallowed_methods)] // the demo reports wall-clock time
    pub(crate) fn now() -> SystemTime {
        SystemTime::now()
    }

    #[allow(clippy::disallowed_methods)] // the demo measures real latencies
    pub(crate) fn instant() -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_as_people_write_them() {
        assert_eq!(parse_lifetime("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_lifetime("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_lifetime("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_lifetime("20000ms"), Ok(Duration::from_secs(20)));
        for bad in ["", "45", "s", "4x", "-3s", "99999999999999999999h"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lifetimes_the_agent_would_refuse_are_refused() {
        assert!(parse_lifetime("15s").is_err());
        assert_eq!(parse_lifetime("16s"), Ok(Duration::from_secs(16)));
    }

    #[test]
    fn durations_print_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(6 * 3600)), "6h");
        assert_eq!(human(Duration::from_secs(120)), "2m");
        assert_eq!(human(Duration::from_secs(18)), "18s");
        assert_eq!(human(Duration::from_millis(8_940)), "8.9s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }
}
