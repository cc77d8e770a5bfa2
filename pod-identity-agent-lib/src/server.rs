//! The server: listeners, connection limits, probes, metrics and graceful shutdown.
//!
//! [`ServerBuilder::bind`] binds the credential router on each configured host at one port
//! (IPv4 and IPv6, brackets optional). A host that cannot be bound is logged and skipped, so a
//! node with IPv6 off still serves IPv4 (the reference crash-loops, aws/eks-pod-identity-agent#16);
//! binding fails only when no host can be bound. An IPv4 host (or a name) that cannot be bound
//! while others were fails `/readyz` with the reason logged, so the pod is not Ready while every
//! IPv4 pod on the node would be refused; an unbound IPv6 host stays tolerated. A wildcard host (`0.0.0.0`, `::`) would serve
//! credentials on every address of the node, so it is refused unless
//! [`allow_wildcard_bind`](ServerBuilder::allow_wildcard_bind) says otherwise. The probe server
//! (`/healthz`, `/readyz`) listens on `127.0.0.1:2703` and the metrics server (`/metrics` plus
//! the probes, as in the reference) on `0.0.0.0:2705` by default; either can be turned off.
//!
//! Every pod on the node can reach the credential port and the metrics port, so each connection
//! is bounded ([`ConnectionLimits`]):
//!
//! | bound | credential port | probe, metrics ports (each) |
//! |---|---|---|
//! | open connections | 1024 | 64 |
//! | open connections per client address | 64 | 16 |
//! | one request/response cycle, writing the response included | 30 s | 30 s |
//! | request head size | 16 KiB (431 beyond) | 16 KiB |
//! | time to send the request head, and idle time between requests | 10 s | 10 s |
//!
//! A connection beyond a cap is closed as soon as it is accepted (counted in
//! `pod_identity_connections_refused{listener, reason}`): nothing queues, and a refused connection costs
//! its socket for a moment. A connection from the listener's own address (the agent's probes,
//! or host-network clients) counts against its per-client cap but not the total, so pods that
//! fill the credential port cannot fail the agent's own probes. A cycle runs from the first
//! byte of a request until its response is flushed; a client that stops reading (pipelining
//! requests it never collects) is disconnected when the cycle passes the deadline, and its
//! buffers are freed. The reference closes such connections after 30 s too (Go's
//! `WriteTimeout`).
//!
//! Memory: a connection holds at most its read buffer (the head limit) and one buffered
//! response, about 40 KiB in the worst case, so the credential port's caps bound connections to
//! about 40 MiB, and the probe and metrics ports to about 5 MiB together.
//!
//! [`BoundServer::serve`] runs until the shutdown future completes (see [`shutdown_signal`] for
//! SIGTERM/SIGINT), then stops accepting, lets in-flight requests finish and closes idle
//! connections, and gives up on what is left after the drain timeout (25 s, inside the pod's
//! default 30 s grace period).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::Service;

use crate::handler::DEFAULT_MAX_HEADER_BYTES;
use crate::metrics::{Metrics, metrics_router};
use crate::probe::{DEFAULT_PROBE_DEADLINE, Probe, probe_router};
use crate::validation::DEFAULT_BIND_HOSTS;

mod connection;

pub use connection::{
    ConnectionLimits, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
    DEFAULT_REQUEST_TIMEOUT,
};
use connection::{Cycle, Gate, Tracked};

/// Default time a client has to send the complete request head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time in-flight requests get to finish after shutdown starts.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// Default probe address: localhost on the reference probe port.
pub const DEFAULT_PROBE_ADDR: SocketAddr = SocketAddr::new(
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    pod_identity_core::endpoint::PROBE_PORT,
);
/// Default metrics address: all interfaces on the reference metrics port.
pub const DEFAULT_METRICS_ADDR: SocketAddr = SocketAddr::new(
    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    pod_identity_core::endpoint::METRICS_PORT,
);

/// hyper's smallest allowed connection buffer.
const MIN_BUF_SIZE: usize = 8 * 1024;

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

/// Listeners bound and ready to serve.
pub struct BoundServer {
    servers: Vec<Listener>,
    credential_addrs: Vec<SocketAddr>,
    http: hyper::server::conn::http1::Builder,
    drain_timeout: Duration,
    metrics: Metrics,
}

/// One bound listener and what its connections get.
struct Listener {
    role: Role,
    listener: TcpListener,
    router: Router,
    gate: Arc<Gate>,
    request_timeout: Duration,
}

impl fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundServer")
            .field("credential_addrs", &self.credential_addrs)
            .field("probe_addr", &self.probe_addr())
            .field("metrics_addr", &self.metrics_addr())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Credentials,
    Probe,
    Metrics,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Credentials => "credentials",
            Role::Probe => "probe",
            Role::Metrics => "metrics",
        }
    }
}

impl BoundServer {
    /// The addresses serving credentials.
    pub fn credential_addrs(&self) -> &[SocketAddr] {
        &self.credential_addrs
    }

    /// The probe server's address, if on.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Role::Probe)
    }

    /// The metrics server's address, if on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Role::Metrics)
    }

    fn addr_of(&self, role: Role) -> Option<SocketAddr> {
        self.servers
            .iter()
            .find(|server| server.role == role)
            .and_then(|server| server.listener.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains within the drain timeout.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for server in self.servers {
            tasks.spawn(accept_loop(
                server,
                self.http.clone(),
                self.metrics.clone(),
                stopped.clone(),
                self.drain_timeout,
            ));
        }
        shutdown.await;
        tracing::info!(drain_timeout = ?self.drain_timeout, "shutting down; draining connections");
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
        tracing::info!("server stopped");
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
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

async fn accept_loop(
    server: Listener,
    http: hyper::server::conn::http1::Builder,
    metrics: Metrics,
    mut stopped: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let Listener {
        role,
        listener,
        router,
        gate,
        request_timeout,
    } = server;
    let local = listener.local_addr().ok();
    // The tasks, to reap finished ones and end those left after the drain timeout; the drain
    // itself is hyper-util's (each connection finishes its request in flight, then closes).
    let mut connections = JoinSet::new();
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            () = stopping(&mut stopped) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match gate.admit(peer, local) {
                    Ok(permit) => {
                        connections.spawn(serve_connection(
                            Connection { stream, peer, request_timeout, _permit: permit },
                            router.clone(),
                            http.clone(),
                            graceful.watcher(),
                        ));
                    }
                    Err(refusal) => {
                        // Closed at once: a flood costs its sockets and nothing else. Logged at
                        // debug only, so that a flood does not flood the logs; counted.
                        drop(stream);
                        metrics.record_connection_refused(role.as_str(), refusal.as_str());
                        tracing::debug!(
                            listener = role.as_str(),
                            client = %peer,
                            reason = refusal.as_str(),
                            "connection refused"
                        );
                    }
                },
                Err(error) => {
                    // Usually EMFILE; back off briefly instead of spinning.
                    tracing::warn!(listener = role.as_str(), error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(drain_timeout, graceful.shutdown()).await;
    if drained.is_ok() {
        // Every connection has ended; their tasks are finishing.
        while connections.join_next().await.is_some() {}
    } else {
        tracing::warn!(
            listener = role.as_str(),
            open = connections.len(),
            "drain timeout passed; closing connections"
        );
        connections.shutdown().await;
    }
}

/// Completes once shutdown has started (or the server is gone).
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// An admitted connection: its place is held until it is dropped.
struct Connection {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    request_timeout: Duration,
    _permit: connection::Permit,
}

async fn serve_connection(
    connection: Connection,
    router: Router,
    http: hyper::server::conn::http1::Builder,
    watcher: Watcher,
) {
    let Connection {
        stream,
        peer,
        request_timeout,
        _permit,
    } = connection;
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move {
            let response: Result<_, Infallible> = router.call(request).await;
            response
        }
    });
    let cycle = Cycle::new();
    let io = TokioIo::new(Tracked::new(stream, cycle.clone()));
    // Once shutdown starts, the connection finishes the request in flight and closes.
    let connection = watcher.watch(http.serve_connection(io, service));
    tokio::pin!(connection);
    let result = loop {
        // Re-read on every turn: the cycle moves as requests come and responses go, inside
        // polls of the connection this loop does not see; while idle, look again a timeout
        // later (a cycle that began meanwhile then has its deadline ahead).
        let deadline = cycle
            .deadline(request_timeout)
            .unwrap_or_else(|| tokio::time::Instant::now() + request_timeout);
        tokio::select! {
            result = connection.as_mut() => break result,
            () = tokio::time::sleep_until(deadline) => {
                if cycle.deadline(request_timeout).is_some_and(|d| d <= tokio::time::Instant::now()) {
                    tracing::debug!(client = %peer, timeout = ?request_timeout, "request/response cycle passed its deadline; closing the connection");
                    return;
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(client = %peer, error = %error, "connection ended with an error");
    }
}

/// Whether `host` is a wildcard address (`0.0.0.0`, `::`, brackets optional).
fn is_wildcard(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::any;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn hello() -> Router {
        Router::new().route("/v1/credentials", any(|| async { "ok" }))
    }

    fn local(router: Router) -> ServerBuilder {
        ServerBuilder::new(router)
            .port(0)
            .probe_addr(Some("127.0.0.1:0".parse().unwrap()))
            .metrics_addr(Some("127.0.0.1:0".parse().unwrap()))
    }

    async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        raw_request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
    }

    #[tokio::test]
    async fn binds_ipv4_and_ipv6_loopback_with_and_without_brackets() {
        let server = local(hello())
            .bind_hosts(["127.0.0.1", "[::1]"])
            .bind()
            .await
            .unwrap();
        let addrs = server.credential_addrs().to_vec();
        assert_eq!(addrs.len(), 2);
        assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        for addr in addrs {
            assert!(
                get(addr, "/v1/credentials")
                    .await
                    .starts_with("HTTP/1.1 200")
            );
        }
        stop.send(()).unwrap();
        serving.await.unwrap();

        let unbracketed = local(hello()).bind_hosts(["::1"]).bind().await.unwrap();
        assert!(unbracketed.credential_addrs()[0].is_ipv6());
    }

    #[tokio::test]
    async fn an_unbindable_host_is_skipped_unless_none_can_be_bound() {
        // 192.0.2.1 (TEST-NET-1) is not an address of this machine.
        let server = local(hello())
            .bind_hosts(["192.0.2.1", "127.0.0.1"])
            .bind()
            .await
            .unwrap();
        assert_eq!(server.credential_addrs().len(), 1);
        assert!(server.credential_addrs()[0].ip().is_loopback());

        let none = local(hello()).bind_hosts(["192.0.2.1"]).bind().await;
        assert!(
            matches!(none, Err(BindError::NoListener { .. })),
            "{none:?}"
        );
        let empty = local(hello()).bind_hosts(Vec::<String>::new()).bind().await;
        assert!(matches!(empty, Err(BindError::NoHosts)));
    }

    async fn readyz_and_healthz(hosts: &[&str]) -> (String, String) {
        let server = local(Router::new())
            .bind_hosts(hosts.iter().copied())
            .bind()
            .await
            .unwrap();
        let probe = server.probe_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        let answers = (get(probe, "/readyz").await, get(probe, "/healthz").await);
        stop.send(()).unwrap();
        serving.await.unwrap();
        answers
    }

    #[tokio::test]
    async fn metrics_scrapes_over_http_get_the_format_their_accept_allows() {
        let metrics = Metrics::new();
        metrics.record_response(200);
        let server = local(Router::new())
            .bind_hosts(["127.0.0.1"])
            .metrics(metrics)
            .bind()
            .await
            .unwrap();
        let addr = server.metrics_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        let scrape = |accept: &'static str| async move {
            let request = format!(
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
            );
            raw_request(addr, request.as_bytes()).await
        };
        // Prometheus's own scrape Accept lists both: the reference's text format.
        let text = scrape(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .await;
        assert!(
            text.contains("content-type: text/plain; version=0.0.4"),
            "{text}"
        );
        assert!(
            text.contains("\n# TYPE pod_identity_http_response counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\npod_identity_http_response{code=\"200\"} 1\n"),
            "{text}"
        );
        let text = scrape("application/openmetrics-text; version=1.0.0").await;
        assert!(
            text.contains("content-type: application/openmetrics-text"),
            "{text}"
        );
        assert!(
            text.contains("\n# TYPE pod_identity_http_response counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\npod_identity_http_response_total{code=\"200\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        stop.send(()).unwrap();
        serving.await.unwrap();
    }

    #[tokio::test]
    async fn an_unbound_ipv4_host_fails_readiness_and_an_unbound_ipv6_host_does_not() {
        // 192.0.2.1 and 2001:db8::1 (documentation ranges) are not addresses of this machine.
        let (ready, healthy) = readyz_and_healthz(&["192.0.2.1", "127.0.0.1"]).await;
        assert!(ready.starts_with("HTTP/1.1 500"), "{ready}");
        assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");

        let (ready, _) = readyz_and_healthz(&["[2001:db8::1]", "127.0.0.1"]).await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        let (ready, _) = readyz_and_healthz(&["127.0.0.1"]).await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    }

    #[tokio::test]
    async fn probes_check_the_bound_listeners_and_metrics_serve_probes_too() {
        let metrics = Metrics::new();
        metrics.record_response(200);
        let server = local(Router::new())
            .bind_hosts(["127.0.0.1"])
            .metrics(metrics)
            .bind()
            .await
            .unwrap();
        let probe = server.probe_addr().unwrap();
        let metrics_addr = server.metrics_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        assert!(get(probe, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(probe, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(
            get(metrics_addr, "/readyz")
                .await
                .starts_with("HTTP/1.1 200")
        );
        let text = get(metrics_addr, "/metrics").await;
        assert!(
            text.contains("pod_identity_http_response{code=\"200\"} 1"),
            "{text}"
        );
        stop.send(()).unwrap();
        serving.await.unwrap();
    }

    #[tokio::test]
    async fn oversized_headers_get_431() {
        let server = local(hello())
            .bind_hosts(["127.0.0.1"])
            .bind()
            .await
            .unwrap();
        let addr = server.credential_addrs()[0];
        tokio::spawn(server.serve(std::future::pending()));
        let big = "a".repeat(64 * 1024);
        let response = raw_request(
            addr,
            format!("GET /v1/credentials HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {big}\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 431"), "{response}");
        // A normal few-KiB token still fits.
        let token = "a".repeat(4 * 1024);
        let response = raw_request(
            addr,
            format!(
                "GET /v1/credentials HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    #[tokio::test]
    async fn slow_clients_are_disconnected_after_the_header_read_timeout() {
        let server = local(hello())
            .bind_hosts(["127.0.0.1"])
            .header_read_timeout(Duration::from_millis(100))
            .bind()
            .await
            .unwrap();
        let addr = server.credential_addrs()[0];
        tokio::spawn(server.serve(std::future::pending()));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /v1/credentials HTTP/1.1\r\n")
            .await
            .unwrap();
        // The server closes the connection (answering 408 or nothing) instead of waiting forever.
        let mut out = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "connection still open");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn shutdown_lets_an_in_flight_request_finish() {
        let (entered_tx, entered) = tokio::sync::mpsc::channel::<()>(1);
        let (release, released) = watch::channel(false);
        let router = Router::new().route(
            "/v1/credentials",
            any(move || {
                let entered_tx = entered_tx.clone();
                let mut released = released.clone();
                async move {
                    entered_tx.send(()).await.unwrap();
                    released.wait_for(|r| *r).await.unwrap();
                    "finished"
                }
            }),
        );
        let server = local(router)
            .bind_hosts(["127.0.0.1"])
            .bind()
            .await
            .unwrap();
        let addr = server.credential_addrs()[0];
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        let mut entered = entered;
        let request = tokio::spawn(get(addr, "/v1/credentials"));
        entered.recv().await.unwrap();
        stop.send(()).unwrap();
        // New connections are refused once shutdown has started.
        let mut refused = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "listener still accepting after shutdown");
        release.send(true).unwrap();
        let response = request.await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("finished"), "{response}");
        serving.await.unwrap();
    }

    #[tokio::test]
    async fn the_drain_gives_up_after_its_timeout() {
        let router =
            Router::new().route("/v1/credentials", any(std::future::pending::<&'static str>));
        let server = local(router)
            .bind_hosts(["127.0.0.1"])
            .drain_timeout(Duration::from_millis(100))
            .bind()
            .await
            .unwrap();
        let addr = server.credential_addrs()[0];
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET /v1/credentials HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("serve returns after the drain timeout")
            .unwrap();
    }
}
