//! Binding: [`ServerBuilder`] and the hosts it binds.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;

use super::connection::{ConnectionLimits, Gate};
use super::listener::{Listener, Role};
use super::{
    BoundServer, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_METRICS_ADDR,
    DEFAULT_PROBE_ADDR,
};
use crate::handler::DEFAULT_MAX_HEADER_BYTES;
use crate::metrics::{Metrics, metrics_router};
use crate::probe::{DEFAULT_PROBE_DEADLINE, Probe, probe_router};
use crate::validation::DEFAULT_BIND_HOSTS;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// No bind hosts were configured.
    #[error("no bind hosts configured")]
    NoHosts,
    /// A bind host is a wildcard address, which would serve credentials on every address of
    /// the node.
    #[error(
        "bind host {host} is a wildcard address: credentials would be served on every address of the node (allow it explicitly to do so)"
    )]
    WildcardHost {
        /// The host as configured.
        host: String,
    },
    /// Not one of the bind hosts could be bound.
    #[error("none of the bind hosts could be bound on port {port}")]
    NoListener {
        /// The credential port.
        port: u16,
        /// The last failure.
        #[source]
        source: io::Error,
    },
    /// The probe or metrics server could not be bound.
    #[error("could not bind the {what} server on {addr}")]
    Auxiliary {
        /// `probe` or `metrics`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

/// Assembles the agent's servers.
pub struct ServerBuilder {
    credentials: Router,
    bind_hosts: Vec<String>,
    port: u16,
    probe_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    metrics: Metrics,
    max_header_bytes: usize,
    header_read_timeout: Duration,
    drain_timeout: Duration,
    probe_deadline: Duration,
    limits: ConnectionLimits,
    auxiliary_limits: ConnectionLimits,
    allow_wildcard_bind: bool,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("bind_hosts", &self.bind_hosts)
            .field("port", &self.port)
            .field("probe_addr", &self.probe_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("limits", &self.limits)
            .field("auxiliary_limits", &self.auxiliary_limits)
            .field("allow_wildcard_bind", &self.allow_wildcard_bind)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// A server for `credentials` (usually [`crate::handler::CredentialsRouter`]'s router),
    /// with the reference defaults: bind hosts `169.254.170.23` and `[fd00:ec2::23]` on port 80,
    /// probes on `127.0.0.1:2703`, metrics on `0.0.0.0:2705`.
    pub fn new(credentials: Router) -> Self {
        Self {
            credentials,
            bind_hosts: DEFAULT_BIND_HOSTS.iter().map(|h| (*h).to_owned()).collect(),
            port: pod_identity_core::endpoint::AGENT_PORT,
            probe_addr: Some(DEFAULT_PROBE_ADDR),
            metrics_addr: Some(DEFAULT_METRICS_ADDR),
            metrics: Metrics::new(),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            probe_deadline: DEFAULT_PROBE_DEADLINE,
            limits: ConnectionLimits::default(),
            auxiliary_limits: ConnectionLimits::auxiliary(),
            allow_wildcard_bind: false,
        }
    }

    /// The hosts to bind (IP addresses, IPv6 with or without brackets, or names to resolve).
    pub fn bind_hosts(mut self, hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.bind_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// The credential port (0 picks a free port per host, for tests).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The probe server's address; `None` turns it off.
    pub fn probe_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.probe_addr = addr;
        self
    }

    /// The metrics server's address; `None` turns it off.
    pub fn metrics_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.metrics_addr = addr;
        self
    }

    /// The metrics the metrics server exposes (share them with the router and cache).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The largest request head accepted (at least 8 KiB); larger heads get 431.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// How long a client may take to send the request head.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long in-flight requests get after shutdown starts.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Caps and the cycle deadline for the credential listeners (all of them together).
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Caps and the cycle deadline for the probe and the metrics listener (each its own).
    pub fn auxiliary_connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.auxiliary_limits = limits;
        self
    }

    /// Allows wildcard bind hosts (`0.0.0.0`, `::`), which serve credentials on every address
    /// of the node, not only the link-local agent addresses (default: refused).
    pub fn allow_wildcard_bind(mut self, allow: bool) -> Self {
        self.allow_wildcard_bind = allow;
        self
    }

    /// The shared deadline of one probe.
    pub fn probe_deadline(mut self, deadline: Duration) -> Self {
        self.probe_deadline = deadline;
        self
    }

    /// Binds every listener. Hosts that cannot be bound are logged and skipped.
    pub async fn bind(self) -> Result<BoundServer, BindError> {
        if self.bind_hosts.is_empty() {
            return Err(BindError::NoHosts);
        }
        if !self.allow_wildcard_bind
            && let Some(host) = self.bind_hosts.iter().find(|host| is_wildcard(host))
        {
            return Err(BindError::WildcardHost { host: host.clone() });
        }
        let mut listeners = Vec::new();
        let mut last_error = None;
        let mut unbound_required = Vec::new();
        for host in &self.bind_hosts {
            match bind_host(host, self.port).await {
                Ok(bound) => listeners.extend(bound),
                Err(error) => {
                    tracing::warn!(host = %host, port = self.port, error = %error, "skipping a bind host that cannot be bound");
                    if !is_ipv6_literal(host) {
                        unbound_required.push(format!("{host}: {error}"));
                    }
                    last_error = Some(error);
                }
            }
        }
        if listeners.is_empty() {
            return Err(BindError::NoListener {
                port: self.port,
                source: last_error
                    .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses")),
            });
        }
        let credential_addrs = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect::<Vec<_>>();
        for addr in &credential_addrs {
            tracing::info!(addr = %addr, "serving credentials");
        }
        let mut probe = Probe::with_deadline(credential_addrs.iter().copied(), self.probe_deadline);
        // Nodes without IPv6 are common (the reference's #16), so only an unbound IPv4 host (or
        // name) holds readiness back: every IPv4 pod on the node would be refused.
        if !unbound_required.is_empty() {
            let reason = format!(
                "credential host(s) not bound: {}",
                unbound_required.join("; ")
            );
            tracing::error!(reason = %reason, "the readiness probe fails until the agent restarts");
            probe = probe.not_ready_because(reason);
        }

        let credentials_gate = Gate::new(
            self.limits,
            self.metrics.connections_open(Role::Credentials.as_str()),
        );
        let mut servers = listeners
            .into_iter()
            .map(|listener| Listener {
                role: Role::Credentials,
                listener,
                router: self.credentials.clone(),
                gate: credentials_gate.clone(),
                request_timeout: self.limits.request_timeout,
            })
            .collect::<Vec<_>>();
        let auxiliary = |role: Role, listener, router| Listener {
            role,
            listener,
            router,
            gate: Gate::new(
                self.auxiliary_limits,
                self.metrics.connections_open(role.as_str()),
            ),
            request_timeout: self.auxiliary_limits.request_timeout,
        };
        if let Some(addr) = self.probe_addr {
            let listener = bind_auxiliary("probe", addr).await?;
            servers.push(auxiliary(
                Role::Probe,
                listener,
                probe_router(probe.clone()),
            ));
        }
        if let Some(addr) = self.metrics_addr {
            let listener = bind_auxiliary("metrics", addr).await?;
            let router = metrics_router(self.metrics.clone()).merge(probe_router(probe.clone()));
            servers.push(auxiliary(Role::Metrics, listener, router));
        }

        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_header_bytes.max(MIN_BUF_SIZE))
            .keep_alive(true);
        Ok(BoundServer {
            servers,
            credential_addrs,
            http,
            drain_timeout: self.drain_timeout,
            metrics: self.metrics,
        })
    }
}

/// Binds the probe or metrics server, which unlike a credential host is not skipped.
async fn bind_auxiliary(what: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError::Auxiliary { what, addr, source })?;
    tracing::info!(addr = %addr, "serving {what}");
    Ok(listener)
}

/// Whether `host` is an IPv6 address, with or without brackets.
fn is_ipv6_literal(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<std::net::Ipv6Addr>().is_ok()
}

async fn bind_host(host: &str, port: u16) -> io::Result<Vec<TcpListener>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addrs = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port)).await?.collect(),
    };
    let mut listeners = Vec::new();
    for addr in addrs {
        listeners.push(TcpListener::bind(addr).await?);
    }
    Ok(listeners)
}

/// Whether `host` is a wildcard address (`0.0.0.0`, `::`, brackets optional).
fn is_wildcard(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// hyper's smallest allowed connection buffer.
const MIN_BUF_SIZE: usize = 8 * 1024;
