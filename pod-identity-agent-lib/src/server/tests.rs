//! The server's tests, over loopback.

use super::*;
use axum::Router;
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

/// A local server whose metrics hold one response.
async fn with_metrics() -> BoundServer {
    let metrics = Metrics::new();
    metrics.record_response(200);
    local(Router::new())
        .bind_hosts(["127.0.0.1"])
        .metrics(metrics)
        .bind()
        .await
        .unwrap()
}

/// A bound server serving in its own task until it is told to stop.
struct Serving {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    fn start(server: BoundServer) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    /// Starts the shutdown; the handle ends when `serve` returns.
    fn shut_down(self) -> tokio::task::JoinHandle<()> {
        self.stop.send(()).unwrap();
        self.task
    }

    async fn stop(self) {
        self.shut_down().await.unwrap();
    }
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
    let serving = Serving::start(server);
    for addr in addrs {
        assert!(
            get(addr, "/v1/credentials")
                .await
                .starts_with("HTTP/1.1 200")
        );
    }
    serving.stop().await;

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
    let serving = Serving::start(server);
    let answers = (get(probe, "/readyz").await, get(probe, "/healthz").await);
    serving.stop().await;
    answers
}

#[tokio::test]
async fn metrics_scrapes_over_http_get_the_format_their_accept_allows() {
    let server = with_metrics().await;
    let addr = server.metrics_addr().unwrap();
    let serving = Serving::start(server);
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
    serving.stop().await;
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
    let server = with_metrics().await;
    let probe = server.probe_addr().unwrap();
    let metrics_addr = server.metrics_addr().unwrap();
    let serving = Serving::start(server);
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
    serving.stop().await;
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
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
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
    let serving = Serving::start(server);
    let mut entered = entered;
    let request = tokio::spawn(get(addr, "/v1/credentials"));
    entered.recv().await.unwrap();
    let serving = serving.shut_down();
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
    let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(1);
    let router = Router::new().route(
        "/v1/credentials",
        any(move || {
            let entered_tx = entered_tx.clone();
            async move {
                entered_tx.send(()).await.unwrap();
                std::future::pending::<&'static str>().await
            }
        }),
    );
    let server = local(router)
        .bind_hosts(["127.0.0.1"])
        .drain_timeout(Duration::from_millis(500))
        .bind()
        .await
        .unwrap();
    let addr = server.credential_addrs()[0];
    let serving = Serving::start(server);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET /v1/credentials HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The request is in its handler, which never answers: only the drain timeout ends the wait.
    entered.recv().await.unwrap();
    let mut shutting_down = serving.shut_down();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut shutting_down)
            .await
            .is_err(),
        "serve returned before its drain timeout with a request in flight"
    );
    tokio::time::timeout(Duration::from_secs(10), shutting_down)
        .await
        .expect("serve returns after the drain timeout")
        .unwrap();
}
