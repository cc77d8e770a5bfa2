//! A drop-in replacement for the EKS Pod Identity Agent (aws/eks-pod-identity-agent).
//!
//! ```text
//! pod-identity-agent server --cluster-name demo --bind-hosts 127.0.0.1 --port 8080 \
//!     --probe-port 8081 --metrics-port 8082 --endpoint http://127.0.0.1:9000
//! ```
//!
//! The `server` subcommand takes the reference agent's flags with its defaults, plus `--region`,
//! the request rate limit and the cache's idle time. EKS Auth calls are signed with the node's
//! credentials from the standard chain (`AWS_*` environment variables, profile, IMDS, …), or,
//! with `--rotate-credentials`, from the shared credentials file, re-read when it changes and
//! at least every minute (hybrid nodes). Retries follow `AWS_MAX_ATTEMPTS` and `AWS_RETRY_MODE`
//! (3 attempts of the standard mode by default); `HTTPS_PROXY`/`NO_PROXY` apply to EKS Auth
//! (and STS); `AWS_CA_BUNDLE` names a PEM file of certificates trusted for them in addition to
//! the system's (isolated partitions, TLS-inspecting proxies).
//!
//! With a Kubernetes configuration (in the cluster: the pod's service-account token and CA;
//! else `KUBECONFIG`), `server` also validates pods' rotated tokens locally against the API
//! server's keys (kept at `--jwks-cache-path`) so a pod keeps its cached credentials across
//! token rotation without EKS Auth, and watches this node's pods (`--eks-node-name`, else
//! `NODE_NAME`) to drop the credentials of deleted and finished pods instead of renewing them.
//! `--rotation-validation=false` and `--pod-liveness=false` turn each off; without a
//! configuration the agent warns and runs without them.
//!
//! `-v/--verbosity` (logrus levels `panic`, `fatal`, `error`, `warn`/`warning`, `info`,
//! `debug`, `trace`, or a tracing filter directive) and `--log-format` go before or after the
//! subcommand. Logs are the reference's logrus JSON lines on stdout (see `logging.rs`).

mod logging;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pod_identity_agent_lib::node_credentials::SharedCredentialsFile;
use pod_identity_agent_lib::server::{ConnectionLimits, shutdown_signal};
use pod_identity_agent_lib::source::AwsClientSettings;
use pod_identity_agent_lib::{AgentBuilder, source::eks_auth::EksAuthSource};
use pod_identity_agent_lib::{cache, handler, server};
use pod_identity_core::association::ClusterName;

use logging::{LogFormat, parse_verbosity};

/// EKS Pod Identity node agent: exchanges pods' service-account tokens for AWS credentials.
#[derive(Debug, Parser)]
#[command(name = "pod-identity-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log level: panic, fatal, error, warn (warning), info, debug or trace (or a tracing filter
    /// directive). The AWS SDK's signing and wire logs stay at debug at most: at trace they
    /// print signed requests and bodies (tokens, session tokens, credentials).
    #[arg(short = 'v', long, global = true, default_value = "info", value_name = "LEVEL", value_parser = parse_verbosity)]
    verbosity: String,

    /// Log line shape: json (the reference's logrus JSON on stdout), tracing-json (tracing's
    /// nested JSON on stderr) or text (plain text on stderr).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "json",
        value_name = "FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up; boxing buys nothing
enum Command {
    /// Serve credentials on /v1/credentials, probes and metrics, until SIGTERM or SIGINT.
    ///
    /// Requests to the credential path are validated, exchanged with EKS Auth
    /// AssumeRoleForPodIdentity, cached per token and renewed in the background.
    Server(ServerArgs),

    /// Set up the node network: the link-local addresses pods reach the agent on.
    ///
    /// Creates a dummy link (pod-id-link0) carrying 169.254.170.23/32 and fd00:ec2::23/128, with
    /// a route to each, over netlink; or, with --existing-link, puts the addresses on a link that
    /// exists. Runs once per node boot in a privileged init container (needs CAP_NET_ADMIN);
    /// running it again changes nothing. IPv6 turned off on the node is a warning, not a failure.
    #[cfg(target_os = "linux")]
    Initialize(InitializeArgs),

    /// Serve credentials on a cluster outside EKS (self-managed, EKS Anywhere, kind, k3s).
    ///
    /// Tokens are verified locally against the cluster's JWKS (--jwks-file, --jwks-url, or the
    /// issuer's discovery document when neither is given), associations are read from
    /// --associations (JSON, reloaded when it changes) and roles are assumed with STS AssumeRole
    /// signed by the node's credentials. Takes every flag of `server`; there --endpoint and
    /// --fips apply to STS, and --eks-node-name, --instance-id and --zone have no effect. See
    /// the pod_identity_agent_lib::self_managed docs for the DaemonSet and the trust policy.
    SelfManaged(SelfManagedArgs),

    /// Print the version.
    Version,
}

#[derive(Debug, Args)]
struct SelfManagedArgs {
    #[command(flatten)]
    server: ServerArgs,

    /// The cluster's service-account issuer (the API server's --service-account-issuer);
    /// tokens must carry it as `iss`.
    #[arg(long, value_name = "URL")]
    issuer: String,

    /// URL of the cluster's JWKS (default: `jwks_uri` of the issuer's discovery document).
    #[arg(long, value_name = "URL", conflicts_with = "jwks_file")]
    jwks_url: Option<String>,

    /// File holding the cluster's JWKS (`kubectl get --raw /openid/v1/jwks`).
    #[arg(long, value_name = "FILE")]
    jwks_file: Option<std::path::PathBuf>,

    /// JSON file of Pod Identity associations (EKS API field names), reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    associations: std::path::PathBuf,

    /// Audience the pods' tokens must carry.
    #[arg(long, default_value = pod_identity_core::endpoint::AUDIENCE)]
    audience: String,

    /// Lifetime of issued credentials, 15m to 12h and at most the role's MaxSessionDuration
    /// (chained roles: at most 1h).
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    session_duration: Duration,

    /// Value of the eks-cluster-arn session tag (default:
    /// `arn:PARTITION:eks:REGION:ROLE_ACCOUNT:cluster/CLUSTER_NAME`).
    #[arg(long, value_name = "ARN")]
    cluster_arn: Option<pod_identity_core::arn::Arn>,

    /// How often the associations file is checked for changes.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    associations_poll_interval: Duration,
}

#[cfg(target_os = "linux")]
#[derive(Debug, Args)]
struct InitializeArgs {
    /// Name of the dummy link to create.
    #[arg(long, value_name = "NAME", default_value = pod_identity_agent_lib::node_network::DEFAULT_LINK_NAME)]
    link_name: String,

    /// Put the addresses on this existing link (such as lo) instead of creating a dummy link;
    /// for kernels without the dummy link type.
    #[arg(long, value_name = "NAME", conflicts_with = "link_name")]
    existing_link: Option<String>,

    /// IPv4 address of the agent (added as a /32).
    #[arg(long, value_name = "ADDRESS", default_value = "169.254.170.23")]
    ipv4_address: Ipv4Addr,

    /// IPv6 address of the agent (added as a /128), with or without brackets.
    #[arg(long, value_name = "ADDRESS", default_value = "fd00:ec2::23", value_parser = parse_ipv6)]
    ipv6_address: std::net::Ipv6Addr,

    /// Set up IPv4 only.
    #[arg(long, conflicts_with = "ipv6_address")]
    no_ipv6: bool,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Name of the EKS cluster the agent runs on.
    #[arg(short = 'c', long, value_name = "NAME")]
    cluster_name: ClusterName,

    /// Listening port of the credential server.
    #[arg(short = 'p', long, default_value_t = 80)]
    port: u16,

    /// Port of the health and readiness probes (/healthz, /readyz), bound on localhost.
    #[arg(long, default_value_t = 2703)]
    probe_port: u16,

    /// Address of the metrics server (/metrics, plus the probes).
    #[arg(long, default_value = "0.0.0.0", value_parser = parse_ip)]
    metrics_address: IpAddr,

    /// Port of the metrics server.
    #[arg(long, default_value_t = 2705)]
    metrics_port: u16,

    /// Longest time before cached credentials are renewed (Go duration: 3h, 90m, 45s; 0
    /// disables the cache).
    #[arg(long, default_value = "3h", value_parser = parse_duration, value_name = "DURATION")]
    max_credential_retention_before_renewal: Duration,

    /// Largest number of cached credentials (0 disables the cache).
    #[arg(long, default_value_t = 2000)]
    max_cache_size: usize,

    /// Most EKS Auth calls per second for background renewals (0 means the default, 3, as in
    /// the reference).
    #[arg(long, default_value_t = 3)]
    max_service_qps: u32,

    /// Hosts to bind the credential server to; repeat the flag or separate with commas. IPv6
    /// with or without brackets. Hosts that cannot be bound are skipped unless none can.
    /// Requests must address one of them (the Host allow-list).
    #[arg(
        short = 'b',
        long,
        value_name = "HOST",
        value_delimiter = ',',
        default_values_t = ["169.254.170.23".to_owned(), "[fd00:ec2::23]".to_owned()]
    )]
    bind_hosts: Vec<String>,

    /// EKS Auth endpoint URL instead of the regional one (e.g. a PrivateLink endpoint).
    #[arg(long, value_name = "URL", default_value = "")]
    endpoint: String,

    /// AWS region of the cluster (default: from the environment, profile or IMDS).
    #[arg(long, value_name = "REGION")]
    region: Option<String>,

    /// Use the FIPS EKS Auth endpoint.
    #[arg(long)]
    fips: bool,

    /// Credential requests per second from all clients together before 429 Too Many Requests
    /// (0 turns this limit off). The reference's is 1000 (burst 500); each client is first held
    /// to --client-rate-limit.
    #[arg(long, default_value_t = handler::DEFAULT_REQUEST_RATE)]
    rate_limit: u32,

    /// Burst of credential requests allowed above the overall rate.
    #[arg(long, default_value_t = handler::DEFAULT_REQUEST_BURST)]
    rate_limit_burst: u32,

    #[command(flatten)]
    protection: ProtectionArgs,

    /// Cached credentials nobody requested for this long are evicted instead of renewed.
    #[arg(long, default_value = "7h", value_parser = parse_duration, value_name = "DURATION")]
    idle_timeout: Duration,

    /// Name of this node, sent to EKS Auth as eksNodeName.
    #[arg(long, value_name = "NAME")]
    eks_node_name: Option<String>,

    /// EC2 instance id of this node, sent to EKS Auth as instanceId.
    #[arg(long, value_name = "ID")]
    instance_id: Option<String>,

    /// Availability zone id of this node (such as use1-az1), sent to EKS Auth as zone.
    #[arg(long, value_name = "AZ_ID")]
    zone: Option<String>,

    /// Sign with the node's shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else
    /// ~/.aws/credentials; profile AWS_PROFILE, else default), re-read when it changes and at
    /// least every minute: hybrid nodes, whose credentials are rotated on disk. Takes an
    /// optional value, also as a separate word as the reference chart passes it
    /// (`--rotate-credentials true`); true/false as Go reads them (1, t, TRUE, 0, f, False, …).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool, value_name = "BOOL")]
    rotate_credentials: Option<bool>,

    /// Validate a pod's rotated service-account token locally against the API server's keys
    /// (Kubernetes 1.34 and later), so the pod keeps its cached credentials without an EKS Auth
    /// call; `--rotation-validation=false` turns it off. With it, a token without a pod uid
    /// claim gets 400. Needs a Kubernetes configuration (in-cluster or KUBECONFIG); without
    /// one the agent runs without it.
    #[arg(long, num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = parse_go_bool, value_name = "BOOL")]
    rotation_validation: bool,

    /// Watch this node's pods (node name from --eks-node-name, else NODE_NAME) and drop the
    /// cached credentials of deleted and finished pods instead of renewing them;
    /// `--pod-liveness=false` turns it off. Until the watch is synced, renewals go on as
    /// without it.
    #[arg(long, num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = parse_go_bool, value_name = "BOOL")]
    pod_liveness: bool,

    /// Where the API server's signing keys are kept for when it is unreachable.
    #[arg(long, value_name = "PATH", default_value = pod_identity_agent_lib::kubernetes::jwks::DEFAULT_CACHE_PATH)]
    jwks_cache_path: std::path::PathBuf,
}

/// Bounds on what one pod can make the agent do (every pod on the node can reach it).
#[derive(Debug, Args)]
struct ProtectionArgs {
    /// Most open connections to the credential port, from all clients together; more are
    /// closed as soon as accepted.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    max_connections: usize,

    /// Most open connections to the credential port from one client address (one pod).
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS_PER_CLIENT, value_name = "N")]
    max_connections_per_client: usize,

    /// Longest request/response cycle on a connection, writing the response included (Go
    /// duration); a client that stops reading is disconnected after it.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    request_timeout: Duration,

    /// Credential requests per second from one client address before 429 (0 turns this limit
    /// off); --rate-limit stays the overall ceiling.
    #[arg(long, default_value_t = handler::DEFAULT_CLIENT_REQUEST_RATE, value_name = "N")]
    client_rate_limit: u32,

    /// Burst of credential requests one client address may send above its rate.
    #[arg(long, default_value_t = handler::DEFAULT_CLIENT_REQUEST_BURST, value_name = "N")]
    client_rate_limit_burst: u32,

    /// Upstream calls per second one client address may start once its burst is spent (0 turns
    /// the budget off). Cache hits and requests joining a call in flight cost nothing.
    #[arg(long, default_value_t = cache::DEFAULT_CLIENT_MISS_RATE, value_name = "N")]
    client_miss_rate: u32,

    /// Upstream calls one client address may start at once.
    #[arg(long, default_value_t = cache::DEFAULT_CLIENT_MISS_BURST, value_name = "N")]
    client_miss_burst: u32,

    /// How long an irrecoverable EKS Auth answer for a token (invalid, expired, access denied,
    /// no association) is repeated without calling EKS Auth again (Go duration; 0 turns it off).
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    refused_token_ttl: Duration,

    /// Allow wildcard bind hosts (0.0.0.0, ::), which serve credentials on every address of
    /// the node, not only the link-local agent addresses.
    #[arg(long)]
    allow_wildcard_bind: bool,
}

impl ServerArgs {
    fn rotate_credentials(&self) -> bool {
        self.rotate_credentials.unwrap_or(false)
    }

    /// `--max-service-qps`, with 0 read as the default as the reference reads it.
    fn renewal_qps(&self) -> u32 {
        if self.max_service_qps == 0 {
            3
        } else {
            self.max_service_qps
        }
    }

    /// The AWS client settings of the flags (`--region`, `--endpoint`, `--fips`,
    /// `--rotate-credentials`) and of `AWS_CA_BUNDLE`, for the client of `service`.
    async fn aws_client(&self, service: &str) -> Result<AwsClientSettings, String> {
        let mut settings = AwsClientSettings::new().fips(self.fips);
        if let Some(config) = ca_bundle_sdk_config(self.region.as_deref()).await? {
            settings = settings.sdk_config(config);
        }
        if let Some(file) = self.node_credentials() {
            settings = settings.credentials_provider_uncached(file);
        }
        if let Some(region) = &self.region {
            settings = settings.region(region);
        }
        if !self.endpoint.is_empty() {
            tracing::info!(endpoint = %self.endpoint, "overriding the {service} endpoint");
            settings = settings.endpoint_url(&self.endpoint);
        }
        Ok(settings)
    }

    /// The node's credentials provider when `--rotate-credentials` is on.
    fn node_credentials(&self) -> Option<SharedCredentialsFile> {
        if !self.rotate_credentials() {
            return None;
        }
        let file = SharedCredentialsFile::from_env().build();
        tracing::info!(
            path = %file.path().display(),
            profile = file.profile(),
            "Credentials rotation enabled. Creds will be fetched and rotated from shared credentials file"
        );
        Some(file)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let cluster = match &cli.command {
        Command::Server(args) => Some(args.cluster_name.as_str()),
        Command::SelfManaged(args) => Some(args.server.cluster_name.as_str()),
        _ => None,
    };
    if !matches!(cli.command, Command::Version) {
        logging::init(cli.log_format, &cli.verbosity, cluster);
    }
    match cli.command {
        Command::Server(args) => server(args).await,
        Command::SelfManaged(args) => self_managed(args).await,
        #[cfg(target_os = "linux")]
        Command::Initialize(args) => initialize(args).await,
        Command::Version => {
            println!("pod-identity-agent version {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

/// Sets up the node network with `pod_identity_agent_lib::node_network`.
#[cfg(target_os = "linux")]
async fn initialize(args: InitializeArgs) -> ExitCode {
    use pod_identity_agent_lib::node_network::NodeNetwork;

    let plan = match args.existing_link {
        Some(link) => NodeNetwork::new().existing_link(link),
        None => NodeNetwork::new().link_name(args.link_name),
    }
    .ipv4_address(args.ipv4_address)
    .ipv6_address((!args.no_ipv6).then_some(args.ipv6_address));
    match plan.initialize().await {
        Ok(done) => {
            tracing::info!(
                link = %done.link_name,
                changes = done.changes.len(),
                warnings = done.warnings.len(),
                "node network ready"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            let cause = std::error::Error::source(&error).map(ToString::to_string);
            tracing::error!(error = %error, cause, "cannot set up the node network");
            ExitCode::FAILURE
        }
    }
}

/// An IPv6 address, with or without brackets.
#[cfg(target_os = "linux")]
fn parse_ipv6(text: &str) -> Result<std::net::Ipv6Addr, String> {
    match parse_ip(text)? {
        IpAddr::V6(address) => Ok(address),
        IpAddr::V4(_) => Err(format!("{text:?} is not an IPv6 address")),
    }
}

async fn server(args: ServerArgs) -> ExitCode {
    let aws_client = match args.aws_client("EKS Auth").await {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!(error = %error, "cannot use AWS_CA_BUNDLE");
            return ExitCode::FAILURE;
        }
    };
    let mut source = EksAuthSource::builder().aws_client(|_| aws_client);
    if let Some(name) = &args.eks_node_name {
        source = source.eks_node_name(name);
    }
    if let Some(id) = &args.instance_id {
        source = source.instance_id(id);
    }
    if let Some(zone) = &args.zone {
        source = source.zone(zone);
    }
    let source = match source.build().await {
        Ok(source) => source,
        Err(error) => {
            tracing::error!(error = %error, "cannot configure EKS Auth");
            return ExitCode::FAILURE;
        }
    };

    serve(&args, source, Blocks::Kubernetes).await
}

/// Runs the agent with `pod_identity_agent_lib::self_managed::SelfManagedSource`.
async fn self_managed(args: SelfManagedArgs) -> ExitCode {
    use pod_identity_agent_lib::self_managed::{
        FileAssociationStore, JwksLocation, SelfManagedSource, TokenVerifier,
    };

    let server = &args.server;
    if server.eks_node_name.is_some() || server.instance_id.is_some() || server.zone.is_some() {
        tracing::warn!("--eks-node-name, --instance-id and --zone have no effect without EKS Auth");
    }
    let location = match (&args.jwks_url, &args.jwks_file) {
        (Some(url), _) => JwksLocation::Url(url.clone()),
        (None, Some(file)) => JwksLocation::File(file.clone()),
        (None, None) => JwksLocation::Discovery,
    };
    let verifier = match TokenVerifier::builder(&args.issuer)
        .claim_rules(|rules| rules.audience(&args.audience))
        .jwks(location)
        .build()
        .await
    {
        Ok(verifier) => verifier,
        Err(error) => {
            tracing::error!(error = %error, "cannot read the cluster's signing keys");
            return ExitCode::FAILURE;
        }
    };
    let store = match FileAssociationStore::open_with_interval(
        &args.associations,
        args.associations_poll_interval,
    )
    .await
    {
        Ok(store) => store,
        Err(error) => {
            tracing::error!(error = %error, "cannot read the associations");
            return ExitCode::FAILURE;
        }
    };
    let continuity = Blocks::Verifier(Arc::new(verifier.clone()));
    let aws_client = match server.aws_client("STS").await {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!(error = %error, "cannot use AWS_CA_BUNDLE");
            return ExitCode::FAILURE;
        }
    };
    let mut source = SelfManagedSource::builder(verifier, store)
        .session_duration(args.session_duration)
        .aws_client(|_| aws_client);
    if let Some(arn) = &args.cluster_arn {
        source = source.cluster_arn(arn.clone());
    }
    match source.build().await {
        Ok(source) => serve(server, source, continuity).await,
        Err(error) => {
            tracing::error!(error = %error, "cannot configure STS");
            ExitCode::FAILURE
        }
    }
}

/// With `AWS_CA_BUNDLE` set, aws-config's defaults with an HTTPS client that also trusts the
/// certificates of that PEM file (the SDK's default client otherwise: rustls over aws-lc, the
/// system's roots, proxies from `HTTP(S)_PROXY`/`NO_PROXY`). aws-config does not read the
/// variable itself.
async fn ca_bundle_sdk_config(
    region: Option<&str>,
) -> Result<Option<aws_config::SdkConfig>, String> {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};

    // The binary's environment seam: read once at start-up.
    #[allow(clippy::disallowed_methods)]
    let Some(path) = std::env::var_os("AWS_CA_BUNDLE").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = std::path::PathBuf::from(path);
    let pem = tokio::fs::read(&path)
        .await
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let certificates =
        trusted_certificates(&pem).map_err(|error| format!("{}: {error}", path.display()))?;
    tracing::info!(path = %path.display(), certificates, "trusting the certificates of AWS_CA_BUNDLE");
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::default().with_pem_certificate(pem))
        .build()
        .map_err(|error| error.to_string())?;
    let client = aws_smithy_http_client::Builder::new().build_with_connector_fn(
        move |settings, components| {
            let mut connector = aws_smithy_http_client::Connector::builder()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(context.clone());
            connector.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                connector.set_sleep_impl(components.sleep_impl());
            }
            connector.set_proxy_config(Some(ProxyConfig::from_env()));
            connector.build()
        },
    );
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(client);
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    Ok(Some(loader.load().await))
}

/// How many certificates a PEM bundle holds, each checked as a trust anchor the way the HTTPS
/// client will take it (it panics on one it cannot parse).
fn trusted_certificates(pem: &[u8]) -> Result<usize, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate = certificate.map_err(|error| format!("not a PEM bundle: {error}"))?;
        roots
            .add(certificate)
            .map_err(|error| format!("not a usable certificate: {error}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in the bundle".to_owned());
    }
    Ok(roots.len())
}

/// Assembles the agent around `source` with the server flags and serves until a signal.
/// The binary's environment seam for what the libraries read at start-up.
fn env_var(key: &str) -> Option<String> {
    #[allow(clippy::disallowed_methods)]
    std::env::var(key).ok()
}

/// Adds the Kubernetes blocks the flags ask for to `agent`; without a Kubernetes configuration
/// (or a node name, for the pod watch) the agent runs without them, as before.
async fn kubernetes_blocks<S: pod_identity_agent_lib::source::CredentialSource>(
    args: &ServerArgs,
    mut agent: AgentBuilder<S>,
) -> AgentBuilder<S> {
    use pod_identity_agent_lib::PodEvictor;
    use pod_identity_agent_lib::kubernetes::{
        client::ClientConfig, client::KubeClient, gone_reason_label, jwks::RotationVerifier,
        liveness, liveness::PodWatch, version::VersionGate,
    };

    if !args.rotation_validation && !args.pod_liveness {
        return agent;
    }
    let client = match ClientConfig::infer(&env_var)
        .map_err(|error| error.to_string())
        .and_then(|config| KubeClient::new(config).map_err(|error| error.to_string()))
    {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(
                error = %error,
                "no Kubernetes API client; running without rotation validation and pod liveness"
            );
            return agent;
        }
    };
    if args.rotation_validation {
        let verifier = RotationVerifier::builder(client.clone())
            .version_gate(VersionGate::new(client.clone()))
            .cache_path(Some(args.jwks_cache_path.clone()))
            .build()
            .await;
        tracing::info!(keys = ?verifier.keys_source(), "rotated tokens are validated locally");
        agent = agent.rotation_validator(Arc::new(verifier));
    }
    if args.pod_liveness {
        let Some(node) = liveness::node_name(args.eks_node_name.as_deref(), &env_var) else {
            tracing::warn!(
                "no node name (--eks-node-name or NODE_NAME); running without pod liveness"
            );
            return agent;
        };
        let slot: Arc<OnceLock<PodEvictor>> = Arc::new(OnceLock::new());
        let evictor = Arc::clone(&slot);
        // The watch keeps `pod_identity_pod_watch_synced` current in the agent's metrics.
        let metrics = pod_identity_agent_lib::metrics::Metrics::new();
        agent = agent.metrics(metrics.clone());
        let watch = PodWatch::builder(client, node.clone())
            .metrics(metrics)
            .on_pod_gone(move |pod| {
                if let Some(evict) = evictor.get() {
                    evict(&pod.uid, gone_reason_label(pod.reason));
                }
            })
            .start();
        match watch {
            Ok(watch) => {
                tracing::info!(node = %node, "watching this node's pods");
                agent = agent
                    .cache(|cache| cache.pod_liveness(Arc::new(watch)))
                    .pod_evictor(slot);
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot watch this node's pods; running without pod liveness");
            }
        }
    }
    agent
}

/// What the cache learns about pods.
enum Blocks {
    /// The Kubernetes API blocks the flags ask for (EKS mode).
    Kubernetes,
    /// Rotated tokens validated by this verifier (self-managed mode, which verifies every token
    /// locally anyway), unless `--rotation-validation=false`.
    Verifier(Arc<dyn cache::RotationValidator>),
}

async fn serve<S: pod_identity_agent_lib::source::CredentialSource>(
    args: &ServerArgs,
    source: S,
    blocks: Blocks,
) -> ExitCode {
    let protection = &args.protection;
    let port = args.port;
    let probe_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.probe_port);
    let metrics_addr = SocketAddr::new(args.metrics_address, args.metrics_port);
    let limits = ConnectionLimits::default()
        .max_connections(protection.max_connections)
        .max_connections_per_client(protection.max_connections_per_client)
        .request_timeout(protection.request_timeout);
    let allow_wildcard_bind = protection.allow_wildcard_bind;
    let rate = (args.rate_limit, args.rate_limit_burst);
    let client_rate = (
        protection.client_rate_limit,
        protection.client_rate_limit_burst,
    );
    let agent = AgentBuilder::new(args.cluster_name.clone(), source)
        .bind_hosts(args.bind_hosts.clone())
        .cache(|cache| {
            cache
                .max_entries(args.max_cache_size)
                .max_retention(args.max_credential_retention_before_renewal)
                .renewal_qps(args.renewal_qps())
                .idle_timeout(args.idle_timeout)
                .client_miss_budget(protection.client_miss_rate, protection.client_miss_burst)
                .refused_ttl(protection.refused_token_ttl)
        })
        .router(move |router| {
            router
                .rate_limit(rate.0, rate.1)
                .client_rate_limit(client_rate.0, client_rate.1)
        })
        .server(move |server| {
            server
                .port(port)
                .probe_addr(Some(probe_addr))
                .metrics_addr(Some(metrics_addr))
                .connection_limits(limits)
                .allow_wildcard_bind(allow_wildcard_bind)
        });
    let agent = match blocks {
        Blocks::Kubernetes => kubernetes_blocks(args, agent).await,
        Blocks::Verifier(verifier) if args.rotation_validation => {
            agent.rotation_validator(verifier)
        }
        Blocks::Verifier(_) => agent,
    };
    tracing::info!(
        cluster = %args.cluster_name,
        version = env!("CARGO_PKG_VERSION"),
        "starting the pod identity agent"
    );
    match agent.bind().await {
        Ok(server) => {
            server.serve(shutdown_signal()).await;
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(error = %error, source = ?std::error::Error::source(&error), "cannot start the server");
            ExitCode::FAILURE
        }
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it.
fn parse_go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean (true or false)")),
    }
}

/// An IP address, IPv6 with or without brackets.
fn parse_ip(text: &str) -> Result<IpAddr, String> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse()
        .map_err(|_| format!("{text:?} is not an IP address"))
}

/// The longest Go duration, `math.MaxInt64` nanoseconds, in seconds.
const GO_MAX_DURATION_SECS: f64 = 9_223_372_036.854_775;

/// A Go duration (`time.ParseDuration`): an optionally signed sequence of decimal numbers with
/// units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, such as `3h`, `1h30m`, `1.5s`; or `0`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (examples: 3h, 90m, 1h30m, 45s, 0)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    // Go's limit (int64 nanoseconds, about 292 years). Without it, an interval such as
    // 3000000000000000h parsed and then overflowed `Instant::now() + interval` (a panic).
    if total > GO_MAX_DURATION_SECS {
        return Err(invalid());
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn server_args(args: &[&str]) -> ServerArgs {
        let cli = Cli::try_parse_from(["pod-identity-agent", "server"].iter().chain(args))
            .unwrap_or_else(|e| panic!("{e}"));
        let Command::Server(args) = cli.command else {
            panic!("not the server subcommand")
        };
        args
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_reference_agents() {
        let args = server_args(&["--cluster-name", "demo"]);
        assert_eq!(args.cluster_name.as_str(), "demo");
        assert_eq!(args.port, 80);
        assert_eq!(args.probe_port, 2703);
        assert_eq!(args.metrics_address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(args.metrics_port, 2705);
        assert_eq!(
            args.max_credential_retention_before_renewal,
            Duration::from_secs(3 * 3600)
        );
        assert_eq!(args.max_cache_size, 2000);
        assert_eq!(args.max_service_qps, 3);
        assert_eq!(args.bind_hosts, ["169.254.170.23", "[fd00:ec2::23]"]);
        assert_eq!(args.endpoint, "");
        assert_eq!(args.region, None);
        assert_eq!((args.rate_limit, args.rate_limit_burst), (5000, 2500));
        assert!(!args.fips && !args.rotate_credentials());
        let cli = Cli::try_parse_from(["pod-identity-agent", "server", "-c", "demo"]).unwrap();
        assert_eq!(cli.verbosity, "info");
        assert_eq!(cli.log_format, LogFormat::Json);
    }

    #[test]
    fn the_cluster_name_is_required_and_validated() {
        assert!(Cli::try_parse_from(["pod-identity-agent", "server"]).is_err());
        assert!(Cli::try_parse_from(["pod-identity-agent", "server", "-c", "-bad-name"]).is_err());
        assert_eq!(server_args(&["-c", "demo"]).cluster_name.as_str(), "demo");
    }

    #[test]
    fn bind_hosts_are_repeatable_and_comma_separated() {
        let args = server_args(&[
            "-c",
            "demo",
            "--bind-hosts",
            "127.0.0.1,[::1]",
            "-b",
            "fd00:ec2::23",
            "--bind-hosts=169.254.170.23",
        ]);
        assert_eq!(
            args.bind_hosts,
            ["127.0.0.1", "[::1]", "fd00:ec2::23", "169.254.170.23"]
        );
    }

    #[test]
    fn the_issue_example_parses() {
        let args = server_args(&[
            "--cluster-name",
            "demo",
            "--bind-hosts",
            "127.0.0.1",
            "--port",
            "8080",
            "--probe-port",
            "8081",
            "--metrics-port",
            "8082",
            "--endpoint",
            "http://127.0.0.1:9000",
        ]);
        assert_eq!(args.bind_hosts, ["127.0.0.1"]);
        assert_eq!(
            (args.port, args.probe_port, args.metrics_port),
            (8080, 8081, 8082)
        );
        assert_eq!(args.endpoint, "http://127.0.0.1:9000");
    }

    #[test]
    fn every_flag_parses() {
        let args = server_args(&[
            "-c",
            "demo",
            "-p",
            "81",
            "--metrics-address",
            "[::]",
            "--max-credential-retention-before-renewal",
            "1h30m",
            "--max-cache-size",
            "0",
            "--max-service-qps",
            "10",
            "--region",
            "eu-west-1",
            "--fips",
            "--rate-limit",
            "0",
            "--rate-limit-burst",
            "1",
            "--idle-timeout",
            "90m",
            "--eks-node-name",
            "node-1",
            "--instance-id",
            "i-0123",
            "--zone",
            "euw1-az1",
            "--rotate-credentials",
        ]);
        assert_eq!(args.port, 81);
        assert_eq!(args.metrics_address, "::".parse::<IpAddr>().unwrap());
        assert_eq!(
            args.max_credential_retention_before_renewal,
            Duration::from_secs(5400)
        );
        assert_eq!(args.max_cache_size, 0);
        assert_eq!(args.max_service_qps, 10);
        assert_eq!(args.region.as_deref(), Some("eu-west-1"));
        assert!(args.fips && args.rotate_credentials());
        assert_eq!((args.rate_limit, args.rate_limit_burst), (0, 1));
        assert_eq!(args.idle_timeout, Duration::from_secs(5400));
        assert_eq!(args.eks_node_name.as_deref(), Some("node-1"));
        assert_eq!(args.instance_id.as_deref(), Some("i-0123"));
        assert_eq!(args.zone.as_deref(), Some("euw1-az1"));
    }

    /// What each command line parses to: (rotate credentials, verbosity, log format, renewal
    /// qps), or `None` for a refused line.
    type Parsed = Option<(bool, &'static str, LogFormat, u32)>;

    #[test]
    fn command_lines_including_the_reference_charts_parse_as_the_reference_reads_them() {
        // The reference chart's cloud DaemonSet (metrics on), verbatim.
        let cloud = [
            "server",
            "--port",
            "80",
            "--cluster-name",
            "EKS_CLUSTER_NAME",
            "--probe-port",
            "2703",
            "--metrics-port",
            "2705",
            "-v",
            "trace",
        ];
        // Its hybrid and hybrid-bottlerocket DaemonSets: `--rotate-credentials true`, two words.
        let hybrid = [&cloud[..], &["--rotate-credentials", "true"]].concat();
        let table: &[(&[&str], Parsed)] = &[
            (&cloud, Some((false, "trace", LogFormat::Json, 3))),
            (&hybrid, Some((true, "trace", LogFormat::Json, 3))),
            (
                &["server", "-c", "demo", "--rotate-credentials"],
                Some((true, "info", LogFormat::Json, 3)),
            ),
            (
                &["server", "-c", "demo", "--rotate-credentials=true"],
                Some((true, "info", LogFormat::Json, 3)),
            ),
            (
                &["server", "-c", "demo", "--rotate-credentials=false"],
                Some((false, "info", LogFormat::Json, 3)),
            ),
            (
                &[
                    "server",
                    "-c",
                    "demo",
                    "--rotate-credentials",
                    "TRUE",
                    "-p",
                    "81",
                ],
                Some((true, "info", LogFormat::Json, 3)),
            ),
            (
                &["server", "--rotate-credentials", "-c", "demo"],
                Some((true, "info", LogFormat::Json, 3)),
            ),
            (
                &["server", "-c", "demo", "--rotate-credentials", "yes"],
                None,
            ),
            // -v before or after the subcommand, with the logrus levels.
            (
                &["-v", "debug", "server", "-c", "demo"],
                Some((false, "debug", LogFormat::Json, 3)),
            ),
            (
                &["--verbosity=panic", "server", "-c", "demo"],
                Some((false, "error", LogFormat::Json, 3)),
            ),
            (
                &["server", "-c", "demo", "-v", "fatal"],
                Some((false, "error", LogFormat::Json, 3)),
            ),
            (
                &["server", "-c", "demo", "--verbosity", "warning"],
                Some((false, "warn", LogFormat::Json, 3)),
            ),
            (&["server", "-c", "demo", "-v", "lou[d"], None),
            (
                &["server", "-c", "demo", "--log-format", "tracing-json"],
                Some((false, "info", LogFormat::TracingJson, 3)),
            ),
            (
                &["--log-format=text", "server", "-c", "demo"],
                Some((false, "info", LogFormat::Text, 3)),
            ),
            (&["server", "-c", "demo", "--log-format", "xml"], None),
            // --max-service-qps 0 is the default rate, 3, as the reference reads it.
            (
                &["server", "-c", "demo", "--max-service-qps", "0"],
                Some((false, "info", LogFormat::Json, 3)),
            ),
            (
                &["server", "-c", "demo", "--max-service-qps", "10"],
                Some((false, "info", LogFormat::Json, 10)),
            ),
        ];
        for (line, expected) in table {
            let parsed =
                Cli::try_parse_from(std::iter::once(&"pod-identity-agent").chain(line.iter()))
                    .ok()
                    .map(|cli| {
                        let Command::Server(args) = &cli.command else {
                            panic!("{line:?}: not server");
                        };
                        let verbosity: &'static str = cli.verbosity.clone().leak();
                        (
                            args.rotate_credentials(),
                            verbosity,
                            cli.log_format,
                            args.renewal_qps(),
                        )
                    });
            assert_eq!(&parsed, expected, "{line:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_reference_charts_init_container_parses() {
        let cli = Cli::try_parse_from(["pod-identity-agent", "initialize", "-v", "trace"]).unwrap();
        assert!(matches!(cli.command, Command::Initialize(_)));
        assert_eq!(cli.verbosity, "trace");
    }

    #[test]
    fn ca_bundles_are_checked_before_the_client_sees_them() {
        let ca = include_bytes!("../tests/test-data/tls/ca.pem");
        assert_eq!(trusted_certificates(ca), Ok(1));
        let mut two = ca.to_vec();
        two.extend_from_slice(include_bytes!("../tests/test-data/tls/server.pem"));
        assert_eq!(trusted_certificates(&two), Ok(2));
        for bad in [
            &b""[..],
            b"not pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        ] {
            assert!(trusted_certificates(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn version_is_a_subcommand_and_a_flag() {
        let cli = Cli::try_parse_from(["pod-identity-agent", "version"]).unwrap();
        assert!(matches!(cli.command, Command::Version));
        let flag = Cli::try_parse_from(["pod-identity-agent", "--version"]).unwrap_err();
        assert_eq!(flag.kind(), clap::error::ErrorKind::DisplayVersion);
    }

    #[cfg(target_os = "linux")]
    fn initialize_args(args: &[&str]) -> InitializeArgs {
        let cli = Cli::try_parse_from(["pod-identity-agent", "initialize"].iter().chain(args))
            .unwrap_or_else(|e| panic!("{e}"));
        let Command::Initialize(args) = cli.command else {
            panic!("not the initialize subcommand")
        };
        args
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn initialize_defaults_and_flags() {
        let args = initialize_args(&[]);
        assert_eq!(args.link_name, "pod-id-link0");
        assert_eq!(args.existing_link, None);
        assert_eq!(args.ipv4_address.to_string(), "169.254.170.23");
        assert_eq!(args.ipv6_address.to_string(), "fd00:ec2::23");
        assert!(!args.no_ipv6);

        let args = initialize_args(&[
            "--existing-link",
            "lo",
            "--ipv4-address",
            "169.254.170.99",
            "--ipv6-address",
            "[fd00:ec2::99]",
        ]);
        assert_eq!(args.existing_link.as_deref(), Some("lo"));
        assert_eq!(args.ipv6_address.to_string(), "fd00:ec2::99");
        assert!(initialize_args(&["--no-ipv6"]).no_ipv6);

        let parse = |args: &[&str]| {
            Cli::try_parse_from(["pod-identity-agent", "initialize"].iter().chain(args))
        };
        assert!(parse(&["--existing-link", "lo", "--link-name", "x"]).is_err());
        assert!(parse(&["--no-ipv6", "--ipv6-address", "fd00::1"]).is_err());
        assert!(parse(&["--ipv6-address", "169.254.170.23"]).is_err());
    }

    #[test]
    fn go_durations_parse() {
        for (text, secs) in [
            ("0", 0.0),
            ("3h", 10800.0),
            ("1h30m", 5400.0),
            ("90m", 5400.0),
            ("45s", 45.0),
            ("1.5s", 1.5),
            ("500ms", 0.5),
            ("0s", 0.0),
            ("+2m", 120.0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs_f64(secs)),
                "{text}"
            );
        }
        assert_eq!(
            parse_duration("2562047h"),
            Ok(Duration::from_secs(2_562_047 * 3600))
        );
        // Past Go's ~292 years (and past what `Instant + Duration` can hold).
        for bad in [
            "",
            "3",
            "h",
            "3x",
            "-1h",
            "1h-",
            ".",
            "2562048h",
            "5124095576030431h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_verbosity_is_refused() {
        assert!(
            Cli::try_parse_from(["pod-identity-agent", "server", "-c", "demo", "-v", "lou[d"])
                .is_err()
        );
    }

    #[test]
    fn help_documents_every_flag() {
        let mut command = Cli::command();
        // Propagates the global flags (--verbosity, --log-format) to the subcommands.
        command.build();
        let help = command
            .find_subcommand_mut("server")
            .unwrap()
            .render_long_help()
            .to_string();
        for flag in [
            "--cluster-name",
            "--port",
            "--probe-port",
            "--metrics-address",
            "--metrics-port",
            "--max-credential-retention-before-renewal",
            "--max-cache-size",
            "--max-service-qps",
            "--bind-hosts",
            "--endpoint",
            "--region",
            "--rate-limit",
            "--rate-limit-burst",
            "--idle-timeout",
            "--rotate-credentials",
            "--verbosity",
            "--log-format",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
    }

    #[test]
    fn the_kubernetes_blocks_are_on_by_default_and_each_can_be_turned_off() {
        let parse = |extra: &[&str]| {
            let cli = Cli::try_parse_from(
                ["pod-identity-agent", "server", "-c", "lab"]
                    .iter()
                    .chain(extra),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let Command::Server(args) = cli.command else {
                panic!("not server");
            };
            args
        };
        let args = parse(&[]);
        assert!(args.rotation_validation && args.pod_liveness);
        assert_eq!(
            args.jwks_cache_path,
            std::path::Path::new("/var/lib/eks-pod-identity-agent/jwks-cache.json")
        );
        let args = parse(&["--rotation-validation=false", "--pod-liveness", "false"]);
        assert!(!args.rotation_validation && !args.pod_liveness);
        let args = parse(&[
            "--pod-liveness=false",
            "--jwks-cache-path",
            "/tmp/keys.json",
        ]);
        assert!(args.rotation_validation && !args.pod_liveness);
        assert_eq!(args.jwks_cache_path, std::path::Path::new("/tmp/keys.json"));
    }

    #[test]
    fn self_managed_takes_the_server_flags_and_its_own() {
        let base = [
            "pod-identity-agent",
            "self-managed",
            "-c",
            "lab",
            "--issuer",
            "https://issuer.example.com",
            "--associations",
            "/etc/pod-identity/associations.json",
        ];
        let parse = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        let cli = parse(&[
            "--jwks-file",
            "/etc/pod-identity/jwks.json",
            "--bind-hosts",
            "127.0.0.1",
            "--port",
            "8080",
            "--session-duration",
            "2h",
            "--cluster-arn",
            "arn:aws:eks:eu-west-1:111122223333:cluster/lab",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let Command::SelfManaged(args) = cli.command else {
            panic!("not self-managed");
        };
        assert_eq!(args.server.cluster_name.as_str(), "lab");
        assert_eq!(
            (args.server.port, args.server.bind_hosts.as_slice()),
            (8080, &["127.0.0.1".to_owned()][..])
        );
        assert_eq!(args.issuer, "https://issuer.example.com");
        assert_eq!(args.audience, "pods.eks.amazonaws.com");
        assert_eq!(args.session_duration, Duration::from_secs(7200));
        assert_eq!(args.associations_poll_interval, Duration::from_secs(10));
        assert!(args.jwks_url.is_none() && args.jwks_file.is_some());
        assert!(args.cluster_arn.is_some());
        // One key location at most; the issuer and the associations are required.
        assert!(parse(&["--jwks-file", "a", "--jwks-url", "http://b"]).is_err());
        assert!(Cli::try_parse_from(&base[..6]).is_err());
        assert!(parse(&["--cluster-arn", "not-an-arn"]).is_err());
    }
}
