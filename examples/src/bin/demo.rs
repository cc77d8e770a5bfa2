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

use std::error::Error;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::identity::IdentityCache;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use aws_sdk_sts::config::{Credentials, Region};
use aws_sdk_sts::error::DisplayErrorContext;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use pod_identity_agent_lib::kubernetes::{ClientConfig, KubeClient, RotationVerifier, VersionGate};
use pod_identity_agent_lib::server::shutdown_signal;
use pod_identity_agent_lib::simulator::Times;
use pod_identity_agent_lib::simulator::{
    DEFAULT_CLUSTER_NAME, EksAuthSimulator, NodeCredentials, PodToken, load_associations,
    mint_token,
};
use pod_identity_agent_lib::{AgentBuilder, EksAuthSource};
use pod_identity_core::container_credentials::MIN_REMAINING;
use pod_identity_core::endpoint::{
    CREDENTIALS_PATH, ENV_AUTHORIZATION_TOKEN_FILE, ENV_FULL_URI, TOKEN_FILE_PATH,
};
use pod_identity_core::{Association, ClusterName, EksAuthErrorCode, SecretString};
use pod_identity_provider::{Env, PodIdentityCredentialsProvider, RefreshWindows};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

type BoxError = Box<dyn Error + Send + Sync>;

/// The demo's loopback host.
const HOST: &str = "127.0.0.1";
/// The role of the built-in association.
const DEMO_ROLE_ARN: &str = "arn:aws:iam::111122223333:role/demo-app";
/// The suffix of the pod's name (a Deployment's pod: `<service account>-<hash>-<id>`).
const POD_SUFFIX: &str = "7c9f5d8b6-x2k4q";
/// Lifetimes whose first refresh is further away than this skip step 4.
const MAX_WATCHED_REFRESH: Duration = Duration::from_secs(60);
/// How often the caller loop of step 4 reads credentials.
const CALLER_INTERVAL: Duration = Duration::from_millis(20);

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
    match run(cli, started).await {
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
        .sdk_config(node_config)
        .endpoint_url(&sim_url)
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

/// The associations to serve and their cluster: from `path`, or the built-in one.
fn associations(path: Option<&Path>) -> Result<(ClusterName, Vec<Association>), BoxError> {
    let default_cluster: ClusterName = DEFAULT_CLUSTER_NAME.parse()?;
    let Some(path) = path else {
        let builtin = serde_json_association(&default_cluster)?;
        return Ok((default_cluster, builtin));
    };
    let associations = load_associations(path, &default_cluster)?;
    let first = associations
        .first()
        .ok_or_else(|| format!("{} holds no association", path.display()))?;
    // Serve the cluster the file names (associations without one get the default).
    Ok((first.cluster_name.clone(), associations))
}

/// The built-in association, through the same parser as a file.
fn serde_json_association(cluster: &ClusterName) -> Result<Vec<Association>, BoxError> {
    let json = format!(
        r#"[{{"namespace":"default","serviceAccount":"demo-app","roleArn":"{DEMO_ROLE_ARN}"}}]"#
    );
    Ok(pod_identity_agent_lib::simulator::parse_associations(
        json.as_bytes(),
        cluster,
    )?)
}

/// Refresh windows that make the provider's background refresh land during the demo and
/// fetch fresh credentials from the agent.
///
/// The provider never refreshes before half the lifetime has passed. At half-life, credentials
/// that live 30 s or less have 15 s or less left, which the agent no longer hands out: it has
/// renewed them or fetches new ones. Longer-lived credentials are still valid in the agent at
/// half-life until its own renewal (at half-life for lifetimes under 10 minutes), so the
/// provider waits a second past that.
fn refresh_windows(lifetime: Duration) -> RefreshWindows {
    let window = if lifetime <= 2 * MIN_REMAINING {
        lifetime
    } else {
        (lifetime / 2).saturating_sub(Duration::from_secs(1))
    };
    RefreshWindows::new()
        .short_lived(window)
        .medium_lived(window)
        .long_lived(window)
        .mandatory((lifetime / 8).min(Duration::from_secs(60)))
}

/// When the first refresh is due at the latest, if the demo should wait for it.
fn expected_refresh(lifetime: Duration) -> Option<Duration> {
    let latest = if lifetime <= 2 * MIN_REMAINING {
        lifetime / 2
    } else {
        lifetime * 3 / 4
    };
    (latest <= MAX_WATCHED_REFRESH).then_some(latest)
}

/// What the caller loop saw while the provider refreshed.
struct Watched {
    renewed: Credentials,
    /// How long before the old credentials' expiry the new ones were first read.
    ahead: Duration,
    latencies: Vec<Duration>,
    metrics: pod_identity_provider::Metrics,
}

/// Reads credentials every [`CALLER_INTERVAL`] until the provider has renewed them, timing
/// every call, and checks that no call waited for a fetch.
async fn watch_refresh(
    provider: &PodIdentityCredentialsProvider,
    first: &Credentials,
) -> Result<Watched, BoxError> {
    let expiry = first
        .expiry()
        .ok_or("the agent's credentials carry no expiry")?;
    let mut latencies = Vec::new();
    let renewed = loop {
        tokio::time::sleep(CALLER_INTERVAL).await;
        let called = clock::instant();
        let credentials = provider.credentials().await?;
        latencies.push(called.elapsed());
        if credentials.access_key_id() != first.access_key_id() {
            break credentials;
        }
        if clock::now() >= expiry {
            return Err("the credentials expired without a background refresh".into());
        }
    };
    let ahead = expiry.duration_since(clock::now()).unwrap_or_default();
    let metrics = provider.metrics();
    // Exactly one fetch happened on a caller's path: the first, when nothing was cached.
    let on_caller_path = metrics.fetches - metrics.refreshes;
    if on_caller_path != 1 || metrics.refreshes != 1 || metrics.stale_serves != 0 {
        return Err(format!("a caller waited for credentials: {metrics:?}").into());
    }
    Ok(Watched {
        renewed,
        ahead,
        latencies,
        metrics,
    })
}

impl Watched {
    fn print(&self, first: &Credentials, renewed: &Credentials) {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = |q: f64| {
            let i = ((sorted.len() - 1) as f64 * q).round() as usize;
            micros(sorted[i])
        };
        println!(
            "    {} -> {} in the background, {} before {} expired",
            first.access_key_id(),
            renewed.access_key_id(),
            human(self.ahead),
            first.access_key_id()
        );
        println!(
            "    {} credentials() calls meanwhile, all from the cache: median {}, p99 {}, max {}",
            sorted.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
        println!(
            "    no caller waited: provider counters fetches={} (1 while nothing was cached, then \
             {} background refresh), failures={}, stale serves={}",
            self.metrics.fetches,
            self.metrics.refreshes,
            self.metrics.failures,
            self.metrics.stale_serves
        );
    }
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

/// The agent, served in the background.
struct Agent {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Agent {
    async fn start(
        cluster: ClusterName,
        source: EksAuthSource,
        verifier: RotationVerifier,
    ) -> Result<Self, BoxError> {
        let server = AgentBuilder::new(cluster, source)
            .rotation_validator(Arc::new(verifier))
            .bind_hosts([HOST])
            .port(0)
            .probe_addr(None)
            .metrics_addr(None)
            .drain_timeout(Duration::from_secs(1))
            .bind()
            .await?;
        let addr = *server
            .credential_addrs()
            .first()
            .ok_or("the agent bound no address")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The cluster's service-account signing key (ES256), and a loopback Kubernetes API server
/// answering `/version` and `/openid/v1/jwks` with it.
struct ClusterKeys {
    key: Arc<EcdsaKeyPair>,
}

impl ClusterKeys {
    const KID: &'static str = "demo-cluster-key-1";

    fn generate() -> Result<Self, BoxError> {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| "cannot generate the cluster's signing key")?;
        Ok(Self { key: Arc::new(key) })
    }

    /// `token` (a minted JWT) signed with this key: its claims under an ES256 header.
    fn sign(&self, token: &SecretString) -> Result<SecretString, BoxError> {
        let claims = token
            .expose_secret()
            .split('.')
            .nth(1)
            .ok_or("a minted token without claims")?;
        let header = serde_json::json!({"alg": "ES256", "kid": Self::KID}).to_string();
        let signed = format!("{}.{claims}", URL_SAFE_NO_PAD.encode(header));
        let signature = self
            .key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .map_err(|_| "cannot sign the pod's token")?;
        Ok(SecretString::new(format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )))
    }

    fn jwks(&self) -> String {
        // An uncompressed P-256 point: 0x04, x, y.
        let point = self.key.public_key().as_ref();
        let (x, y) = point
            .get(1..)
            .unwrap_or_default()
            .split_at(point.len().saturating_sub(1) / 2);
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": Self::KID,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
        .to_string()
    }

    async fn serve_api(&self) -> Result<SocketAddr, BoxError> {
        use axum::http::header::CONTENT_TYPE;
        let jwks = self.jwks();
        let router = axum::Router::new()
            .route(
                "/version",
                axum::routing::get(|| async {
                    (
                        [(CONTENT_TYPE, "application/json")],
                        r#"{"major":"1","minor":"34","gitVersion":"v1.34.0"}"#,
                    )
                }),
            )
            .route(
                "/openid/v1/jwks",
                axum::routing::get(
                    move || async move { ([(CONTENT_TYPE, "application/json")], jwks) },
                ),
            );
        let listener = tokio::net::TcpListener::bind(loopback(0)?).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(addr)
    }
}

/// One credential request to the agent with `token`, as a pod's SDK makes it: the status and
/// the `AccessKeyId` answered.
async fn credentials_request(
    agent: SocketAddr,
    token: &SecretString,
) -> Result<(u16, String), BoxError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(agent).await?;
    let request = format!(
        "GET {CREDENTIALS_PATH} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {}\r\n\
         Connection: close\r\n\r\n",
        token.expose_secret()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or("the agent's answer has no status")?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let access_key_id = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json["AccessKeyId"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok((status, access_key_id))
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

/// A duration such as `45s`, `6h`, `1h30m`, `500ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (examples: 18s, 45s, 2m, 1h30m, 6h)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(invalid()),
        };
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(invalid)?;
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let lifetime = parse_duration(text)?;
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

/// Prints the components' `tracing` events as a trace of hops, one line each.
fn install_trace(started: Instant) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,pod_identity_agent_lib=info,pod_identity_provider=info")
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(HopLayer { started })
        .try_init();
}

/// A `tracing` layer that prints each event as `<elapsed>  <hop>  <message> <fields>`.
struct HopLayer {
    started: Instant,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for HopLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *meta.level() {
            tracing::Level::ERROR => "ERROR ",
            tracing::Level::WARN => "WARN ",
            _ => "",
        };
        println!(
            "    {:>6.3}s  {:<9} {level}{}{}",
            self.started.elapsed().as_secs_f64(),
            hop(meta.target()),
            fields.message,
            fields.rest
        );
    }
}

/// Who speaks, by the event's module path.
fn hop(target: &str) -> &str {
    const HOPS: [(&str, &str); 4] = [
        ("pod_identity_agent_lib::simulator::eks_auth", "EKS Auth"),
        ("pod_identity_agent_lib::simulator::sts", "STS"),
        ("pod_identity_agent_lib", "agent"),
        ("pod_identity_provider", "provider"),
    ];
    HOPS.iter()
        .find(|(prefix, _)| target.starts_with(prefix))
        .map_or(target, |(_, hop)| hop)
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record(field.name(), value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.record(field.name(), &format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, name: &str, value: &str) {
        match name {
            "message" => self.message = value.to_owned(),
            // Noise in a trace read by a person.
            "request_id" => {}
            _ => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_people_write_them() {
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        for bad in ["", "45", "s", "4x", "-3s", "1.5s", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lifetimes_the_agent_would_refuse_are_refused() {
        assert!(parse_lifetime("15s").is_err());
        assert_eq!(parse_lifetime("16s"), Ok(Duration::from_secs(16)));
    }

    #[test]
    fn the_refresh_lands_where_the_agent_has_fresh_credentials() {
        // Short lifetimes: the refresh at half-life finds the agent's copy with ≤ 15 s left.
        let short = refresh_windows(Duration::from_secs(18));
        assert_eq!(
            short.advisory(Duration::from_secs(18)),
            Duration::from_secs(18)
        );
        assert_eq!(
            expected_refresh(Duration::from_secs(18)),
            Some(Duration::from_secs(9))
        );
        // Longer: the window opens a second after the agent's renewal at half-life.
        let long = refresh_windows(Duration::from_secs(60));
        assert_eq!(
            long.advisory(Duration::from_secs(60)),
            Duration::from_secs(29)
        );
        assert!(long.mandatory_window() < Duration::from_secs(60) - Duration::from_secs(29) / 2);
        assert_eq!(expected_refresh(Duration::from_secs(6 * 3600)), None);
    }

    #[test]
    fn durations_print_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(6 * 3600)), "6h");
        assert_eq!(human(Duration::from_secs(120)), "2m");
        assert_eq!(human(Duration::from_secs(18)), "18s");
        assert_eq!(human(Duration::from_millis(8_940)), "8.9s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn hops_are_named_by_component() {
        assert_eq!(
            hop("pod_identity_agent_lib::simulator::eks_auth"),
            "EKS Auth"
        );
        assert_eq!(hop("pod_identity_agent_lib::handler"), "agent");
        assert_eq!(hop("pod_identity_provider::cache"), "provider");
        assert_eq!(hop("aws_config"), "aws_config");
    }

    #[test]
    fn the_builtin_association_parses() {
        let (cluster, associations) = associations(None).unwrap();
        assert_eq!(cluster.as_str(), DEFAULT_CLUSTER_NAME);
        assert_eq!(associations[0].role_arn.to_string(), DEMO_ROLE_ARN);
    }
}
