//! Liveness and readiness probes.
//!
//! `GET /healthz` and `GET /readyz` (any method, as in the reference) check every credential
//! listener by sending it `GET /` over loopback TCP and expecting the 404 an idle agent answers
//! there. All listeners are checked concurrently within one shared deadline (10 s by default):
//!
//! | outcome | status |
//! |---|---|
//! | every listener answered 404 | 200 |
//! | the deadline passed first | 408 |
//! | a listener failed or answered something else | 500 `Internal Server Error occurred` |
//!
//! A probe may also carry a standing reason not to be ready ([`Probe::not_ready_because`]): the
//! server sets one when a configured IPv4 host could not be bound while others were, so that
//! pods on the node are not sent to an agent that refuses them. Then `/readyz` answers 500 (and
//! logs the reason) whatever the listeners say; `/healthz` is unaffected.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The liveness probe path.
pub const HEALTHZ_PATH: &str = "/healthz";
/// The readiness probe path.
pub const READYZ_PATH: &str = "/readyz";
/// The reference's probe deadline, shared by all listeners.
pub const DEFAULT_PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// A self-check of credential listeners.
#[derive(Clone)]
pub struct Probe {
    inner: Arc<ProbeInner>,
}

struct ProbeInner {
    targets: Vec<SocketAddr>,
    deadline: Duration,
    not_ready: Option<String>,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("targets", &self.inner.targets)
            .field("deadline", &self.inner.deadline)
            .field("not_ready", &self.inner.not_ready)
            .finish()
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The shared deadline passed before every listener answered.
    #[error("probe deadline of {0:?} passed")]
    Deadline(Duration),
    /// A listener could not be reached.
    #[error("listener {addr} unreachable")]
    Unreachable {
        /// The listener.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange with a listener failed.
    #[error("listener {addr} failed the HTTP exchange")]
    Http {
        /// The listener.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: hyper::Error,
    },
    /// A listener check ended without a result.
    #[error("a listener check ended without a result")]
    Aborted,
    /// A listener answered with an unexpected status.
    #[error("listener {addr} answered {status}, expected 404")]
    UnexpectedStatus {
        /// The listener.
        addr: SocketAddr,
        /// What it answered.
        status: u16,
    },
}

impl Probe {
    /// A probe of `targets` with the reference deadline of 10 s.
    pub fn new(targets: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self::with_deadline(targets, DEFAULT_PROBE_DEADLINE)
    }

    /// A probe of `targets` with its own deadline.
    pub fn with_deadline(
        targets: impl IntoIterator<Item = SocketAddr>,
        deadline: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(ProbeInner {
                targets: targets.into_iter().map(reachable).collect(),
                deadline,
                not_ready: None,
            }),
        }
    }

    /// This probe, with `/readyz` failing for `reason` whatever the listeners answer.
    pub fn not_ready_because(self, reason: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(ProbeInner {
                targets: self.inner.targets.clone(),
                deadline: self.inner.deadline,
                not_ready: Some(reason.into()),
            }),
        }
    }

    /// Why `/readyz` fails whatever the listeners answer, if it does.
    pub fn not_ready_reason(&self) -> Option<&str> {
        self.inner.not_ready.as_deref()
    }

    /// The readiness answer: [`respond`](Self::respond), or 500 while a
    /// [standing reason](Self::not_ready_because) holds.
    pub async fn respond_ready(&self) -> Response {
        if let Some(reason) = &self.inner.not_ready {
            tracing::warn!(reason = %reason, "not ready");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error occurred",
            )
                .into_response();
        }
        self.respond().await
    }

    /// The listeners this probe checks.
    pub fn targets(&self) -> &[SocketAddr] {
        &self.inner.targets
    }

    /// Checks every listener within the deadline.
    pub async fn check(&self) -> Result<(), ProbeError> {
        let deadline = self.inner.deadline;
        let mut checks = JoinSet::new();
        for &addr in &self.inner.targets {
            checks.spawn(check_listener(addr));
        }
        let all = async {
            while let Some(joined) = checks.join_next().await {
                // A check task ends without a result only by panicking or by its runtime
                // shutting down: a failure of the probe, not of the probe server.
                joined.map_err(|_| ProbeError::Aborted)??;
            }
            Ok(())
        };
        tokio::time::timeout(deadline, all)
            .await
            .map_err(|_| ProbeError::Deadline(deadline))?
    }

    /// The probe's HTTP answer.
    pub async fn respond(&self) -> Response {
        match self.check().await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(ProbeError::Deadline(deadline)) => {
                tracing::warn!(?deadline, "probe deadline passed");
                StatusCode::REQUEST_TIMEOUT.into_response()
            }
            Err(error) => {
                tracing::warn!(error = %crate::error::ErrorChain(&error), "probe failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error occurred",
                )
                    .into_response()
            }
        }
    }
}

/// A router answering `/healthz` and `/readyz` with `probe`.
pub fn probe_router(probe: Probe) -> Router {
    let healthz = probe.clone();
    Router::new()
        .route(
            HEALTHZ_PATH,
            any(move || {
                let probe = healthz.clone();
                async move { probe.respond().await }
            }),
        )
        .route(
            READYZ_PATH,
            any(move || {
                let probe = probe.clone();
                async move { probe.respond_ready().await }
            }),
        )
}

/// A listener on the unspecified address is checked over loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

async fn check_listener(addr: SocketAddr) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Unreachable { addr, source })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProbeError::Http { addr, source })?;
    let connection = tokio::spawn(connection);
    let request = Request::get("/")
        .header(http::header::HOST, addr.to_string())
        .body(Body::empty())
        .expect("a GET of / with a socket-address host is a valid request");
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| ProbeError::Http { addr, source });
    connection.abort();
    let status = response?.status();
    if status == StatusCode::NOT_FOUND {
        Ok(())
    } else {
        Err(ProbeError::UnexpectedStatus {
            addr,
            status: status.as_u16(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tower::ServiceExt;

    async fn serve(router: Router) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    async fn probe_status(probe: Probe, path: &str) -> StatusCode {
        probe_router(probe)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn all_listeners_answering_404_is_healthy() {
        let a = serve(Router::new()).await;
        let b = serve(Router::new()).await;
        let probe = Probe::new([a, b]);
        assert_eq!(
            probe_status(probe.clone(), HEALTHZ_PATH).await,
            StatusCode::OK
        );
        assert_eq!(probe_status(probe, READYZ_PATH).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_listener_answering_otherwise_is_500() {
        let good = serve(Router::new()).await;
        let bad = serve(Router::new().route("/", any(|| async { "hello" }))).await;
        let probe = Probe::new([good, bad]);
        assert_eq!(
            probe_status(probe.clone(), READYZ_PATH).await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert!(matches!(
            probe.check().await,
            Err(ProbeError::UnexpectedStatus { status: 200, .. })
        ));
    }

    #[tokio::test]
    async fn an_unreachable_listener_is_500() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let probe = Probe::new([addr]);
        assert_eq!(
            probe_status(probe, HEALTHZ_PATH).await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_is_408_after_the_shared_deadline() {
        // Accepts connections but never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                held.push(stream);
            }
        });
        let good = serve(Router::new()).await;
        let probe = Probe::with_deadline([good, addr], Duration::from_millis(200));
        assert_eq!(
            probe_status(probe, READYZ_PATH).await,
            StatusCode::REQUEST_TIMEOUT
        );
    }

    #[tokio::test]
    async fn a_check_cut_off_by_the_deadline_closes_its_connection() {
        use tokio::io::AsyncReadExt;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let probe = Probe::with_deadline([addr], Duration::from_millis(200));
        let (status, accepted) = tokio::join!(probe_status(probe, HEALTHZ_PATH), listener.accept());
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        // The probe's request arrives, then the probe hangs up (a hang guard, not a timing check).
        let mut stream = accepted.unwrap().0;
        let mut seen = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut seen));
        assert!(read.await.is_ok(), "the probe left its connection open");
        assert!(seen.starts_with(b"GET / HTTP/1.1"));
    }

    #[test]
    fn unspecified_listeners_are_checked_over_loopback() {
        let probe = Probe::new([
            "0.0.0.0:80".parse().unwrap(),
            "[::]:81".parse().unwrap(),
            "169.254.170.23:80".parse().unwrap(),
        ]);
        assert_eq!(
            probe.targets(),
            &[
                "127.0.0.1:80".parse::<SocketAddr>().unwrap(),
                "[::1]:81".parse().unwrap(),
                "169.254.170.23:80".parse().unwrap(),
            ]
        );
    }
}
