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

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::Metrics;

mod builder;
mod connection;
mod listener;

pub use builder::{BindError, ServerBuilder};

pub use connection::{
    ConnectionLimits, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
    DEFAULT_REQUEST_TIMEOUT,
};
use listener::{Listener, Role, accept_loop};

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

/// Listeners bound and ready to serve.
pub struct BoundServer {
    servers: Vec<Listener>,
    credential_addrs: Vec<SocketAddr>,
    http: hyper::server::conn::http1::Builder,
    drain_timeout: Duration,
    metrics: Metrics,
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

#[cfg(test)]
mod tests;
