//! Minimal hyper servers: the machine's ceiling for serving fixed bytes, and a stub agent
//! whose answers take a set time and can fail.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pod_identity_core::{container_credentials::ContainerCredentials, secret::SecretString};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::BenchClock;

/// A server that stops when dropped or [`stop`](Server::stop)ped.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stops accepting, closes every connection and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Serves `respond` on `addr` with hyper's HTTP/1.1 server (keep-alive on).
async fn serve<F, Fut>(addr: SocketAddr, respond: F) -> std::io::Result<Server>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.changed() => break,
            };
            let Ok((stream, _)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let respond = respond.clone();
            let mut stopped = stopped.clone();
            connections.spawn(async move {
                let service = service_fn(move |_request: http::Request<Incoming>| {
                    let respond = respond.clone();
                    async move { Ok::<_, Infallible>(respond().await) }
                });
                let connection = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
                    _ = stopped.changed() => {}
                }
            });
        }
        connections.shutdown().await;
    });
    Ok(Server { addr, stop, task })
}

/// The ceiling: a bare hyper server answering every request with `body` as
/// `application/json`, doing nothing else.
pub async fn fixed_bytes(addr: SocketAddr, body: Bytes) -> std::io::Result<Server> {
    serve(addr, move || {
        let body = body.clone();
        async move {
            let mut response = Response::new(Full::new(body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    })
    .await
}

/// A stand-in for an agent whose cache is off: every request takes `delay` and answers fresh
/// credentials that live `lifetime` on `clock`, or 500 `[]` while failing.
#[derive(Clone, Debug)]
pub struct StubAgent {
    state: Arc<StubState>,
}

#[derive(Debug)]
struct StubState {
    clock: BenchClock,
    delay: Duration,
    lifetime: Duration,
    failing: AtomicBool,
    requests: AtomicU64,
}

impl StubAgent {
    /// A stub on `clock`.
    pub fn new(clock: BenchClock, delay: Duration, lifetime: Duration) -> Self {
        Self {
            state: Arc::new(StubState {
                clock,
                delay,
                lifetime,
                failing: AtomicBool::new(false),
                requests: AtomicU64::new(0),
            }),
        }
    }

    /// Makes every answer from now on 500 `[]` (or credentials again).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Requests received.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Serves on `127.0.0.1:port` (0 picks one).
    pub async fn serve_on(&self, port: u16) -> std::io::Result<Server> {
        let state = self.state.clone();
        serve(([127, 0, 0, 1], port).into(), move || {
            let state = state.clone();
            async move { state.answer().await }
        })
        .await
    }
}

impl StubState {
    async fn answer(&self) -> Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if self.failing.load(Ordering::SeqCst) {
            let mut response = Response::new(Full::new(Bytes::from_static(b"[]")));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return response;
        }
        let n = self.requests.load(Ordering::SeqCst);
        let credentials = ContainerCredentials {
            access_key_id: format!("ASIASTUB{n:012}"),
            secret_access_key: SecretString::new("stub-secret-access-key-0000000000000000000"),
            token: SecretString::new("IQoJb3JpZ2luX2VjEXAMPLE".repeat(24)),
            account_id: Some("111122223333".to_owned()),
            expiration: self.clock.now() + self.lifetime,
        };
        let mut response = Response::new(Full::new(Bytes::from(credentials.to_json())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}
