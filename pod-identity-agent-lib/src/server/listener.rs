//! One listener's accept loop, its connections (gate, cycle deadline) and its drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::Service;

use super::connection::{self, Cycle, Gate, Tracked};
use crate::metrics::Metrics;

/// One bound listener and what its connections get.
pub(super) struct Listener {
    pub(super) role: Role,
    pub(super) listener: TcpListener,
    pub(super) router: Router,
    pub(super) gate: Arc<Gate>,
    pub(super) request_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Credentials,
    Probe,
    Metrics,
}

impl Role {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Role::Credentials => "credentials",
            Role::Probe => "probe",
            Role::Metrics => "metrics",
        }
    }
}

pub(super) async fn accept_loop(
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
pub(super) async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// An admitted connection: its place is held until it is dropped.
pub(super) struct Connection {
    pub(super) stream: tokio::net::TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) request_timeout: Duration,
    pub(super) _permit: connection::Permit,
}

pub(super) async fn serve_connection(
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
