//! A drop-in replacement for the EKS Pod Identity Agent (aws/eks-pod-identity-agent).
//!
//! ```text
//! pod-identity-agent server --cluster-name demo --bind-hosts 127.0.0.1 --port 8080 \
//!     --probe-port 8081 --metrics-port 8082 --endpoint http://127.0.0.1:9000
//! ```
//!
//! The `server` subcommand takes the reference agent's flags with its defaults, plus `--region`,
//! the request rate limit and the cache's idle time. EKS Auth calls are signed with the node's
//! credentials from the standard chain (`AWS_*` environment variables, profile, IMDS, …).
//! Logs are JSON lines on stderr.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pod_identity_agent_lib::server::{ConnectionLimits, shutdown_signal};
use pod_identity_agent_lib::{AgentBuilder, EksAuthSource};
use pod_identity_agent_lib::{cache, handler, server};
use pod_identity_core::ClusterName;
use tracing_subscriber::EnvFilter;

/// EKS Pod Identity node agent: exchanges pods' service-account tokens for AWS credentials.
#[derive(Debug, Parser)]
#[command(name = "pod-identity-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    cluster_arn: Option<pod_identity_core::Arn>,

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

    /// Log level: trace, debug, info, warn or error (or a tracing filter directive).
    #[arg(short = 'v', long, default_value = "info", value_name = "LEVEL", value_parser = parse_verbosity)]
    verbosity: String,
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

    /// Most EKS Auth calls per second for background renewals.
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

    /// Credential requests per second before 429 Too Many Requests (0 turns limiting off).
    #[arg(long, default_value_t = 1000)]
    rate_limit: u32,

    /// Burst of credential requests allowed above the rate.
    #[arg(long, default_value_t = 500)]
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

    /// Accepted for compatibility with the reference agent (hybrid nodes); has no effect:
    /// credentials come from the standard chain, which reloads what it caches.
    #[arg(long)]
    rotate_credentials: bool,

    /// Log level: trace, debug, info, warn or error (or a tracing filter directive). The AWS
    /// SDK's signing and wire logs stay at debug at most: at trace they print signed requests
    /// and bodies (tokens, session tokens, credentials).
    #[arg(short = 'v', long, default_value = "info", value_name = "LEVEL", value_parser = parse_verbosity)]
    verbosity: String,
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

/// SDK crates whose `trace` events print secrets: aws-sigv4 (before 1.4) the canonical request
/// with `x-amz-security-token`, aws-smithy-runtime every request and response with its body.
const SECRET_LOGGING_CRATES: [&str; 2] = ["aws_sigv4", "aws_smithy_runtime"];

/// The filter for `--verbosity`, with [`SECRET_LOGGING_CRATES`] capped at `debug` whatever it
/// asks for.
fn log_filter(verbosity: &str) -> EnvFilter {
    let mut filter = EnvFilter::new(verbosity);
    for target in SECRET_LOGGING_CRATES {
        if let Ok(cap) = format!("{target}=debug").parse() {
            filter = filter.add_directive(cap);
        }
    }
    filter
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server(args).await,
        Command::SelfManaged(args) => self_managed(args).await,
        #[cfg(target_os = "linux")]
        Command::Initialize(args) => initialize(args).await,
    }
}

/// Sets up the node network with `pod_identity_agent_lib::node_network`.
#[cfg(target_os = "linux")]
async fn initialize(args: InitializeArgs) -> ExitCode {
    use pod_identity_agent_lib::node_network::NodeNetwork;

    tracing_subscriber::fmt()
        .json()
        .with_env_filter(log_filter(&args.verbosity))
        .with_writer(std::io::stderr)
        .init();
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
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(log_filter(&args.verbosity))
        .with_writer(std::io::stderr)
        .init();
    if args.rotate_credentials {
        tracing::warn!(
            "--rotate-credentials has no effect: the standard chain reloads credentials"
        );
    }

    let mut source = EksAuthSource::builder().fips(args.fips);
    if let Some(region) = &args.region {
        source = source.region(region);
    }
    if !args.endpoint.is_empty() {
        tracing::info!(endpoint = %args.endpoint, "overriding the EKS Auth endpoint");
        source = source.endpoint_url(&args.endpoint);
    }
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

    serve(&args, source).await
}

/// Runs the agent with `pod_identity_agent_lib::self_managed::SelfManagedSource`.
async fn self_managed(args: SelfManagedArgs) -> ExitCode {
    use pod_identity_agent_lib::self_managed::{
        FileAssociationStore, JwksLocation, SelfManagedSource, TokenVerifier,
    };

    let server = &args.server;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(log_filter(&server.verbosity))
        .with_writer(std::io::stderr)
        .init();
    if server.eks_node_name.is_some() || server.instance_id.is_some() || server.zone.is_some() {
        tracing::warn!("--eks-node-name, --instance-id and --zone have no effect without EKS Auth");
    }
    let location = match (&args.jwks_url, &args.jwks_file) {
        (Some(url), _) => JwksLocation::Url(url.clone()),
        (None, Some(file)) => JwksLocation::File(file.clone()),
        (None, None) => JwksLocation::Discovery,
    };
    let verifier = match TokenVerifier::builder(&args.issuer)
        .audience(&args.audience)
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
    let mut source = SelfManagedSource::builder(verifier, store)
        .session_duration(args.session_duration)
        .fips(server.fips);
    if let Some(region) = &server.region {
        source = source.region(region);
    }
    if !server.endpoint.is_empty() {
        tracing::info!(endpoint = %server.endpoint, "overriding the STS endpoint");
        source = source.endpoint_url(&server.endpoint);
    }
    if let Some(arn) = &args.cluster_arn {
        source = source.cluster_arn(arn.clone());
    }
    match source.build().await {
        Ok(source) => serve(server, source).await,
        Err(error) => {
            tracing::error!(error = %error, "cannot configure STS");
            ExitCode::FAILURE
        }
    }
}

/// Assembles the agent around `source` with the server flags and serves until a signal.
async fn serve<S: pod_identity_agent_lib::CredentialSource>(
    args: &ServerArgs,
    source: S,
) -> ExitCode {
    let agent = AgentBuilder::new(args.cluster_name.clone(), source)
        .bind_hosts(args.bind_hosts.clone())
        .port(args.port)
        .probe_addr(Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            args.probe_port,
        )))
        .metrics_addr(Some(SocketAddr::new(
            args.metrics_address,
            args.metrics_port,
        )))
        .max_cache_size(args.max_cache_size)
        .max_retention(args.max_credential_retention_before_renewal)
        .max_service_qps(args.max_service_qps)
        .idle_timeout(args.idle_timeout)
        .rate_limit(args.rate_limit, args.rate_limit_burst);
    let protection = &args.protection;
    let agent = agent
        .connection_limits(
            ConnectionLimits::default()
                .max_connections(protection.max_connections)
                .max_connections_per_client(protection.max_connections_per_client)
                .request_timeout(protection.request_timeout),
        )
        .client_rate_limit(
            protection.client_rate_limit,
            protection.client_rate_limit_burst,
        )
        .client_miss_budget(protection.client_miss_rate, protection.client_miss_burst)
        .refused_ttl(protection.refused_token_ttl)
        .allow_wildcard_bind(protection.allow_wildcard_bind);
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

/// A level or tracing filter directive.
fn parse_verbosity(text: &str) -> Result<String, String> {
    EnvFilter::try_new(text)
        .map(|_| text.to_owned())
        .map_err(|error| format!("invalid log level {text:?}: {error}"))
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
        assert_eq!(args.verbosity, "info");
        assert_eq!(args.region, None);
        assert_eq!((args.rate_limit, args.rate_limit_burst), (1000, 500));
        assert!(!args.fips && !args.rotate_credentials);
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
            "-v",
            "debug",
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
        assert!(args.fips && args.rotate_credentials);
        assert_eq!((args.rate_limit, args.rate_limit_burst), (0, 1));
        assert_eq!(args.idle_timeout, Duration::from_secs(5400));
        assert_eq!(args.eks_node_name.as_deref(), Some("node-1"));
        assert_eq!(args.instance_id.as_deref(), Some("i-0123"));
        assert_eq!(args.zone.as_deref(), Some("euw1-az1"));
        assert_eq!(args.verbosity, "debug");
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
        let help = Cli::command()
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
            "--verbosity",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
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
