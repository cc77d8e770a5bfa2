//! Hostile HTTP input to the agent, over real sockets (raw TCP where a client library would
//! refuse to send it): bad `Host`s, bad `Authorization`s, slow and idle clients, pipelining,
//! HTTP/1.0, other protocols, wrong paths and methods.
//!
//! Each case gets its documented answer (contracts §6, the `handler` and `server` module docs),
//! the source is never called for a request that fails validation, and the agent keeps serving
//! other clients: every test checks a good request during or after the hostile ones.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_core::{
    container_credentials::ContainerCredentials, eks_auth::EksAuthError, secret::SecretString,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::http::{self, Request, connect_from, parse};
use crate::support::{
    AgentBuilder, BindError, ConnectionLimits, CredentialRequest, CredentialSource, HostAllowList,
    IssuedCredentials, Metrics, Serving, SourceError, eventually, jwt, now_secs,
};

/// What clients must put in `Host`: the reference address.
const HOST: &str = "169.254.170.23";
const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(500);

fn good_token() -> String {
    jwt(
        &serde_json::json!({"alg": "RS256", "kid": "k"}),
        &serde_json::json!({"exp": now_secs() + 86_400, "nbf": now_secs() - 10, "sub": "system:serviceaccount:default:app"}),
    )
}

/// Hands out fixed credentials, like EKS Auth refuses unsigned (`alg: none`) tokens, and
/// counts its calls.
#[derive(Clone, Default)]
struct Source(Arc<AtomicUsize>);

impl CredentialSource for Source {
    async fn credentials(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, SourceError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        if request.token().header().alg == "none" {
            return Err(SourceError::EksAuth(EksAuthError::from_http(
                400,
                Some("InvalidTokenException"),
                Some("req-none"),
                br#"{"message":"The token is not signed."}"#,
            )));
        }
        Ok(IssuedCredentials::new(ContainerCredentials {
            access_key_id: "ASIAHOSTILE".into(),
            secret_access_key: SecretString::new("hostile-secret"),
            token: SecretString::new("hostile-session"),
            account_id: Some("111122223333".into()),
            expiration: SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000),
        }))
    }
}

struct Agent {
    serving: Serving,
    calls: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl Agent {
    /// The agent on 127.0.0.1 with the reference `Host` allow-list, a short header read
    /// timeout and no overall request rate limit (so the tests measure the server, not the
    /// limiter); the protections against hostile clients keep their defaults.
    async fn start() -> Self {
        Self::start_with(|agent| agent).await
    }

    /// [`start`](Self::start), with the builder adjusted by `adjust`.
    async fn start_with(adjust: impl FnOnce(AgentBuilder<Source>) -> AgentBuilder<Source>) -> Self {
        let source = Source::default();
        let calls = source.0.clone();
        let metrics = Metrics::new();
        let agent = AgentBuilder::new("demo".parse().unwrap(), source)
            .bind_hosts(["127.0.0.1"])
            .router(move |router| {
                router
                    .allowed_hosts(HostAllowList::reference())
                    .rate_limit(0, 0)
            })
            .server(move |server| {
                server
                    .port(0)
                    .probe_addr(None)
                    .metrics_addr(None)
                    .header_read_timeout(HEADER_READ_TIMEOUT)
            })
            .metrics(metrics.clone());
        let server = adjust(agent).bind().await.unwrap();
        Self {
            serving: Serving::start(server),
            calls,
            metrics,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    /// The value of a series in the agent's metrics (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        self.metrics
            .encode()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits (bounded) until the metric `series` reads `value`.
    async fn metric_becomes(&self, series: &str, value: f64, within: Duration) {
        eventually(within, &format!("{series} to read {value}"), async || {
            self.metric(series) == value
        })
        .await;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// A well-behaved pod's request: must always work.
    async fn assert_serves(&self) {
        let (status, body) = self
            .exchange(&request(Some(HOST), Some(&good_token())))
            .await;
        assert_eq!(status, 200, "a good request failed: {body}");
        assert!(body.contains("ASIAHOSTILE"), "{body}");
    }

    /// Sends raw bytes on a new connection and reads the answer to EOF (bounded).
    async fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        http::send(self.addr(), bytes).await
    }

    /// Sends one request and parses status and body.
    async fn exchange(&self, request: &[u8]) -> (u16, String) {
        http::exchange(self.addr(), request).await
    }

    async fn shutdown(self) {
        self.serving.shutdown().await;
    }
}

/// A `GET /v1/credentials` with optional `Host` and `Authorization`, closing the connection.
fn request(host: Option<&str>, authorization: Option<&str>) -> Vec<u8> {
    let mut request = Request::credentials();
    if let Some(host) = host {
        request = request.host(host);
    }
    if let Some(token) = authorization {
        request = request.authorization(token);
    }
    request.close().bytes()
}

/// `{method} {target}` with the agent's `Host` and `token`, keeping the connection open.
fn to(method: &str, target: &str, token: impl AsRef<[u8]>) -> Request {
    Request::new(method, target).host(HOST).authorization(token)
}

/// A pod's `GET /v1/credentials` with `token`, keeping the connection open.
fn pod(token: impl AsRef<[u8]>) -> Request {
    to("GET", "/v1/credentials", token)
}

fn denied(host: &str) -> String {
    format!(
        "Access Denied. Called agent through invalid address, please use either \
         [169.254.170.23 fd00:ec2::23] address not {host}\n"
    )
}

#[tokio::test]
async fn only_the_agent_addresses_pass_the_host_check() {
    let agent = Agent::start().await;
    let token = good_token();
    let denied_hosts: [(Option<&str>, &str); 13] = [
        (Some(""), ""),
        (Some("10.0.0.1"), "10.0.0.1"),
        (Some("127.0.0.1"), "127.0.0.1"),
        (Some("localhost"), "localhost"),
        // DNS rebinding: a name the attacker points at 169.254.170.23.
        (Some("rebind.attacker.example"), "rebind.attacker.example"),
        (
            Some("rebind.attacker.example:80"),
            "rebind.attacker.example",
        ),
        (Some("169.254.170.23.evil"), "169.254.170.23.evil"),
        (Some("169.254.170.23.evil:80"), "169.254.170.23.evil"),
        (Some("169.254.170.23.nip.io"), "169.254.170.23.nip.io"),
        // Other spellings of the address that resolvers accept but are not the address.
        (Some("169.254.170.023"), "169.254.170.023"),
        (Some("0xa9.0xfe.0xaa.0x17"), "0xa9.0xfe.0xaa.0x17"),
        (Some("2852039191"), "2852039191"),
        (Some("[::ffff:169.254.170.23]"), "::ffff:169.254.170.23"),
    ];
    for (host, shown) in denied_hosts {
        let (status, body) = agent.exchange(&request(host, Some(&token))).await;
        assert_eq!((status, body), (403, denied(shown)), "Host {host:?}");
    }
    // The host is checked first: a bad host with a bad token is still 403.
    let (status, _) = agent.exchange(&request(Some("evil"), None)).await;
    assert_eq!(status, 403);
    // No Host, or two, is what Go's server refuses before any handler: 400.
    let (status, body) = agent.exchange(&request(None, Some(&token))).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "400 Bad Request: missing required Host header")
    );
    let (status, body) = agent
        .exchange(
            &Request::credentials()
                .host(HOST)
                .host(HOST)
                .authorization(&token)
                .close()
                .bytes(),
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (400, "400 Bad Request: too many Host headers")
    );
    // HTTP/1.0 needs no Host: without one it is an empty, refused host.
    let (status, body) = agent
        .exchange(
            format!("GET /v1/credentials HTTP/1.0\r\nAuthorization: {token}\r\n\r\n").as_bytes(),
        )
        .await;
    assert_eq!((status, body), (403, denied("")));
    // A large Host does not buy a large answer: the 403 repeats at most 255 bytes of it.
    let long = "h".repeat(12 * 1024);
    let (status, body) = agent.exchange(&request(Some(&long), Some(&token))).await;
    assert_eq!((status, body), (403, denied(&long[..255])));
    assert_eq!(agent.calls(), 0, "no denied request reached the source");

    for host in [
        HOST,
        "169.254.170.23:80",
        "169.254.170.23:8080",
        "[fd00:ec2::23]",
        "[fd00:ec2::23]:80",
        "[FD00:EC2:0:0:0:0:0:23]:80",
    ] {
        let (status, body) = agent.exchange(&request(Some(host), Some(&token))).await;
        assert_eq!(status, 200, "Host {host}: {body}");
    }
    // An absolute-form request line does not override a bad Host header.
    let (status, _) = agent
        .exchange(
            format!(
                "GET http://169.254.170.23/v1/credentials HTTP/1.1\r\nHost: evil\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(status, 403);
    agent.assert_serves().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn bad_authorization_headers_get_400_and_never_reach_the_source() {
    let agent = Agent::start().await;
    let now = now_secs();
    let day = serde_json::json!({"exp": now + 86_400});
    let parse_error = "Service account token cannot be parsed: ";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "missing",
            String::new(),
            "Service account token cannot be empty\n",
        ),
        (
            "not a JWT",
            "hello".into(),
            "Service account token cannot be parsed: token is malformed: token contains an invalid number of segments\n",
        ),
        (
            "four segments",
            "a.b.c.d".into(),
            "Service account token cannot be parsed: token is malformed: token contains an invalid number of segments\n",
        ),
        (
            "Bearer prefix",
            format!("Bearer {}", good_token()),
            "Service account token cannot be parsed: token is malformed: could not base64 decode header: illegal base64 data at input byte 6\n",
        ),
        ("bearer JSON", "eyJ.eyJ.sig".into(), parse_error),
        (
            "header not JSON",
            format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode("not json")),
            parse_error,
        ),
        (
            "claims an array",
            format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
                URL_SAFE_NO_PAD.encode("[1,2]")
            ),
            parse_error,
        ),
        (
            "no alg",
            jwt(&serde_json::json!({"kid": "k"}), &day),
            "Service account token cannot be parsed: token is unverifiable: signing method (alg) is unspecified\n",
        ),
        (
            "unknown alg",
            jwt(&serde_json::json!({"alg": "XS999"}), &day),
            "Service account token cannot be parsed: token is unverifiable: signing method (alg) is unavailable\n",
        ),
        (
            "alg not a string",
            jwt(&serde_json::json!({"alg": 256}), &day),
            "Service account token cannot be parsed: token is unverifiable: signing method (alg) is unspecified\n",
        ),
        (
            "expired",
            jwt(
                &serde_json::json!({"alg": "RS256"}),
                &serde_json::json!({"exp": now - 1}),
            ),
            "Service account token failed basic claim validations: token is expired\n",
        ),
        (
            "not yet valid",
            jwt(
                &serde_json::json!({"alg": "RS256"}),
                &serde_json::json!({"exp": now + 3600, "nbf": now + 600}),
            ),
            "Service account token failed basic claim validations: token is not valid yet\n",
        ),
        (
            "exp not a number",
            jwt(
                &serde_json::json!({"alg": "RS256"}),
                &serde_json::json!({"exp": "tomorrow"}),
            ),
            parse_error,
        ),
    ];
    for (what, token, expected) in &cases {
        let authorization = (what != &"missing").then_some(token.as_str());
        let (status, body) = agent.exchange(&request(Some(HOST), authorization)).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body.starts_with(expected), "{what}: {body}");
    }
    // An empty value (`Authorization:` with nothing after it).
    let (status, body) = agent
        .exchange(
            &Request::credentials()
                .host(HOST)
                .header("Authorization", "")
                .close()
                .bytes(),
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (400, "Service account token cannot be empty\n")
    );
    // Bytes that are not UTF-8 (HTTP allows obs-text in header values).
    let non_utf8 = pod([0xff, 0xfe, b'.', 0xc3, b'.', 0x80]).close();
    let (status, body) = agent.exchange(&non_utf8.bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with(parse_error), "{body}");
    // A well-formed token whose signature segment is not UTF-8 (found by fuzzing): refused,
    // not forwarded in a lossy form that other bytes map to as well.
    let mut bad_signature = good_token().rsplit_once('.').unwrap().0.as_bytes().to_vec();
    bad_signature.extend_from_slice(&[b'.', b'c', 0xde]);
    let (status, body) = agent.exchange(&pod(bad_signature).close().bytes()).await;
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            "Service account token cannot be parsed: token is malformed: token is not valid UTF-8\n"
        )
    );
    assert_eq!(agent.calls(), 0, "no invalid token reached the source");

    // `alg: none` is a registered algorithm: like the reference, the agent does not verify
    // signatures and passes it to EKS Auth, which refuses it (here the source plays that part).
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(day.to_string())
    );
    let (status, body) = agent.exchange(&request(Some(HOST), Some(&unsigned))).await;
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            "[req-none]: (InvalidTokenException): The token is not signed., fault: client\n"
        )
    );
    assert_eq!(agent.calls(), 1);
    agent.assert_serves().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn oversized_heads_get_431_up_to_a_mebibyte_and_the_server_carries_on() {
    let agent = Agent::start().await;
    for size in [17 * 1024, 64 * 1024 + 1, 1024 * 1024] {
        let token = "a".repeat(size);
        let answer = agent.raw(&request(Some(HOST), Some(&token))).await;
        let (status, _) = parse(&answer);
        assert_eq!(status, 431, "{size} bytes");
    }
    // Many small headers adding up to more than the limit.
    let mut many = b"GET /v1/credentials HTTP/1.1\r\nHost: 169.254.170.23\r\n".to_vec();
    for i in 0..2000 {
        many.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "b".repeat(16)).as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let (status, _) = parse(&agent.raw(&many).await);
    assert!(matches!(status, 431 | 400), "{status}");
    // A realistic token (a few KiB) still fits.
    let mut claims = serde_json::json!({"exp": now_secs() + 3600});
    claims["padding"] = "p".repeat(6 * 1024).into();
    let big = jwt(&serde_json::json!({"alg": "RS256"}), &claims);
    let (status, _) = agent.exchange(&request(Some(HOST), Some(&big))).await;
    assert_eq!(status, 200);
    assert_eq!(agent.calls(), 1);
    agent.assert_serves().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn slowloris_clients_are_cut_off_and_do_not_stop_others() {
    let agent = Agent::start().await;
    // Fifty clients trickle a request head, one byte every 50 ms.
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let addr = agent.addr();
        slow.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let head = b"GET /v1/credentials HTTP/1.1\r\nHost: 169.254.170.23\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut sent = 0;
            for byte in head {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // The server closed: reading gives EOF (or a 408) at once.
                let mut buf = [0u8; 64];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
                {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
                    return sent;
                }
            }
            sent
        });
    }
    // Other pods are served while the slow clients hold their connections.
    for _ in 0..5 {
        agent.assert_serves().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Some(sent) = slow.join_next().await {
        let sent = sent.unwrap();
        // Cut off after about the header read timeout (500 ms ≈ 10 bytes), long before the
        // ~120-byte head was complete.
        assert!(
            sent < 100,
            "a slow client sent {sent} bytes before being cut off"
        );
    }
    agent.assert_serves().await;
    agent.shutdown().await;
}

/// The soft limit on open files of this process.
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

#[tokio::test]
async fn thousands_of_idle_connections_are_bounded_in_time_and_do_not_stop_others() {
    let agent = Agent::start().await;
    // Each connection costs two descriptors here (client and server side); stay well inside
    // the limit, and at 2000 where the limit allows.
    let count = 2000.min(open_files_limit().saturating_sub(256) / 2);
    assert!(
        count >= 200,
        "open files limit too low: {}",
        open_files_limit()
    );
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        idle.push(connect_from(ATTACKER, agent.addr()).await);
    }
    // At most the per-client cap of them is held; the rest were closed at once.
    assert!(agent.metric("pod_identity_connections_open{listener=\"credentials\"}") <= 64.0);
    // Served while all of them are open.
    agent.assert_serves().await;
    // Idle connections that never send a request head are closed after the header read
    // timeout: they cannot hold descriptors forever.
    let mut closed = 0;
    for stream in &mut idle {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                closed += 1;
            }
            Err(_) => {}
        }
    }
    assert_eq!(closed, count, "idle connections left open");
    agent.assert_serves().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn a_keep_alive_connection_left_idle_after_a_request_is_closed() {
    let agent = Agent::start().await;
    let mut stream = TcpStream::connect(agent.addr()).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /v1/credentials HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {}\r\n\r\n",
                good_token()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Then nothing: the agent must not keep the descriptor forever.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle keep-alive connection stays open");
    agent.assert_serves().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let agent = Agent::start().await;
    let token = good_token();
    let mut pipelined = Vec::new();
    for i in 0..50 {
        let request = match i % 3 {
            0 => pod(&token),
            1 => Request::get("/elsewhere").host(HOST),
            _ => pod("nope"),
        };
        pipelined.extend_from_slice(&request.bytes());
    }
    pipelined.extend_from_slice(&pod(&token).close().bytes());
    let answer = String::from_utf8(agent.raw(&pipelined).await).unwrap();
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect();
    let expected: Vec<&str> = (0..50)
        .map(|i| ["200", "404", "400"][i % 3])
        .chain(["200"])
        .collect();
    assert_eq!(statuses, expected);
    // Eighteen good requests for one token: one source call, the rest from the cache.
    assert_eq!(agent.calls(), 1);
    agent.assert_serves().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn http_1_0_and_other_protocols() {
    let agent = Agent::start().await;
    let token = good_token();
    // HTTP/1.0 with a Host is served, and the connection closes after the answer.
    let (status, body) = agent
        .exchange(
            format!(
                "GET /v1/credentials HTTP/1.0\r\nHost: {HOST}\r\nAuthorization: {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // HTTP/1.0 without a Host cannot name the agent's address.
    let (status, _) = agent
        .exchange(
            format!("GET /v1/credentials HTTP/1.0\r\nAuthorization: {token}\r\n\r\n").as_bytes(),
        )
        .await;
    assert_eq!(status, 403);

    // Not HTTP/1: a 400 or a closed connection, never a credential.
    for (what, bytes) in [
        ("HTTP/0.9", b"GET /v1/credentials\r\n\r\n".to_vec()),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
        (
            "TLS ClientHello",
            vec![
                0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
            ],
        ),
        ("binary", (0u8..=255).collect()),
        (
            "HTTP/3.0",
            b"GET /v1/credentials HTTP/3.0\r\nHost: 169.254.170.23\r\n\r\n".to_vec(),
        ),
        (
            "bare LF",
            format!("GET /v1/credentials HTTP/1.1\nHost: {HOST}\nAuthorization: {token}\n\n")
                .into_bytes(),
        ),
    ] {
        let answer = agent.raw(&bytes).await;
        let (status, text) = parse(&answer);
        assert!(
            status == 0 && answer.is_empty()
                || (400..500).contains(&status)
                || status == 200 && what == "bare LF",
            "{what}: {status} {text}"
        );
        assert!(!text.contains("ASIAHOSTILE") || what == "bare LF", "{what}");
    }
    agent.assert_serves().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn wrong_paths_get_404_and_every_method_is_accepted_on_the_credentials_path() {
    let agent = Agent::start().await;
    let token = good_token();
    for path in [
        "/",
        "/v1",
        "/v1/credentials/",
        "/V1/CREDENTIALS",
        "//v1/credentials",
        "/v1/credentials/../credentials",
        "/v1/credentials%00",
        "/v2/credentials",
        "/latest/meta-data/iam/security-credentials/",
        "/metrics",
        "/healthz",
        "*",
    ] {
        let (status, body) = agent
            .exchange(&to("GET", path, &token).close().bytes())
            .await;
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
        assert!(!body.contains("ASIAHOSTILE"), "{path}");
    }
    assert_eq!(agent.calls(), 0);
    // A query string does not change the path.
    let (status, _) = agent
        .exchange(
            &to("GET", "/v1/credentials?role=admin", &token)
                .close()
                .bytes(),
        )
        .await;
    assert_eq!(status, 200);
    // Any method, as in the reference (HEAD answers without a body).
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"] {
        let request = to(method, "/v1/credentials", &token).header("Content-Length", "0");
        let (status, body) = agent.exchange(&request.close().bytes()).await;
        assert_eq!(status, 200, "{method}: {body}");
    }
    let (status, body) = agent
        .exchange(&to("HEAD", "/v1/credentials", &token).close().bytes())
        .await;
    assert_eq!((status, body.as_str()), (200, ""));
    // A request announcing a 100 MiB body is answered without the agent reading the body.
    let mut announced = to("POST", "/v1/credentials", &token)
        .header("Content-Length", "104857600")
        .close()
        .bytes();
    announced.extend_from_slice(b"partial");
    let (status, _) = agent.exchange(&announced).await;
    assert_eq!(status, 200);
    agent.assert_serves().await;
    agent.shutdown().await;
}

/// A pod attacking the agent, and well-behaved pods, each with an address of its own.
const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const POD_A: [u8; 4] = [127, 0, 0, 3];
const POD_B: [u8; 4] = [127, 0, 0, 4];

/// One request from `source` on a new connection: (status, body).
async fn exchange_from(source: [u8; 4], addr: SocketAddr, request: &[u8]) -> (u16, String) {
    parse(&http::send_from(source, addr, request).await)
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_within_the_request_timeout() {
    let timeout = Duration::from_secs(1);
    let agent = Agent::start_with(|agent| {
        agent
            .server(move |server| {
                server.connection_limits(ConnectionLimits::default().request_timeout(timeout))
            })
            .router(move |router| router.client_rate_limit(0, 0))
    })
    .await;
    let open = "pod_identity_connections_open{listener=\"credentials\"}";
    // A small receive buffer, pipelined requests, and never a read: the agent's answers pile
    // up until its writes block.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::from((ATTACKER, 0))).unwrap();
    let mut stream = socket.connect(agent.addr()).await.unwrap();
    let batch = pod(good_token()).bytes().repeat(64);
    let started = tokio::time::Instant::now();
    let mut written = 0usize;
    // Write until the agent stops reading (its writes are blocked), bounded in time.
    while started.elapsed() < Duration::from_secs(5) {
        match tokio::time::timeout(Duration::from_millis(200), stream.write_all(&batch)).await {
            Ok(Ok(())) => written += 64,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    assert!(written >= 64, "the agent took no requests");
    assert_eq!(agent.metric(open), 1.0, "the stalled connection is open");
    // Another pod is served meanwhile.
    let (status, body) = exchange_from(
        POD_A,
        agent.addr(),
        &request(Some(HOST), Some(&good_token())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The stalled connection is closed once its cycle passes the deadline (plus scheduling
    // slack), and its place freed.
    agent
        .metric_becomes(open, 0.0, timeout + Duration::from_secs(5))
        .await;
    assert!(started.elapsed() >= timeout, "closed before its deadline");
    agent.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_caps_are_closed_at_once_and_others_still_served() {
    let agent = Agent::start_with(|agent| {
        agent.server(move |server| {
            server
                .header_read_timeout(Duration::from_secs(30))
                .connection_limits(
                    ConnectionLimits::default()
                        .max_connections(6)
                        .max_connections_per_client(3),
                )
        })
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(ATTACKER, agent.addr()).await);
    }
    // The client's fourth is closed as soon as it is accepted.
    let mut fourth = connect_from(ATTACKER, agent.addr()).await;
    assert!(closed_within(&mut fourth, Duration::from_secs(5)).await);
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(connect_from(POD_A, agent.addr()).await);
    }
    // The server is full: a third pod's connection is closed at once.
    let mut full = connect_from(POD_B, agent.addr()).await;
    assert!(closed_within(&mut full, Duration::from_secs(5)).await);
    assert_eq!(
        agent.metric(
            "pod_identity_connections_refused{listener=\"credentials\",reason=\"max_connections_per_client\"}"
        ),
        1.0
    );
    assert_eq!(
        agent.metric(
            "pod_identity_connections_refused{listener=\"credentials\",reason=\"max_connections\"}"
        ),
        1.0
    );
    // The agent's own address (its probes) is still served while full.
    agent.assert_serves().await;
    // Below the cap again, the third pod is served.
    drop(others);
    agent
        .metric_becomes(
            "pod_identity_connections_open{listener=\"credentials\"}",
            3.0,
            Duration::from_secs(5),
        )
        .await;
    let (status, body) = exchange_from(
        POD_B,
        agent.addr(),
        &request(Some(HOST), Some(&good_token())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    drop(held);
    agent.shutdown().await;
}

#[tokio::test]
async fn a_flooding_client_gets_429_while_another_is_served() {
    let agent = Agent::start_with(|agent| {
        agent.router(move |router| router.client_rate_limit(10, 10).rate_limit(1000, 500))
    })
    .await;
    let token = good_token();
    // Fifty pipelined requests on one connection, faster than 10/s.
    let mut flood = pod(&token).bytes().repeat(49);
    flood.extend_from_slice(&request(Some(HOST), Some(&token)));
    let mut stream = connect_from(ATTACKER, agent.addr()).await;
    stream.write_all(&flood).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let ok = text.matches("HTTP/1.1 200").count();
    let limited = text.matches("HTTP/1.1 429").count();
    assert_eq!(ok + limited, 50, "{text}");
    assert!(
        (10..=12).contains(&ok),
        "the burst, and what refilled: {ok}"
    );
    // The flood drew nothing from the other pods' share.
    for pod in [POD_A, POD_B] {
        let (status, body) =
            exchange_from(pod, agent.addr(), &request(Some(HOST), Some(&token))).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        agent.metric("pod_identity_requests_limited{reason=\"client_rate\"}"),
        limited as f64
    );
    agent.shutdown().await;
}

/// An unsigned token (`alg: none`) the source refuses as EKS Auth would, unique per `n`.
fn forged_token(n: usize) -> String {
    jwt(
        &serde_json::json!({"alg": "none"}),
        &serde_json::json!({"exp": now_secs() + 86_400, "jti": n.to_string(), "sub": "system:serviceaccount:default:app"}),
    )
}

#[tokio::test]
async fn one_forged_token_sent_again_and_again_makes_one_upstream_call() {
    let agent = Agent::start().await;
    let token = forged_token(0);
    for _ in 0..20 {
        let (status, body) =
            exchange_from(ATTACKER, agent.addr(), &request(Some(HOST), Some(&token))).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("InvalidTokenException"), "{body}");
    }
    assert_eq!(agent.calls(), 1, "the refusal is repeated from memory");
    assert_eq!(agent.metric("pod_identity_refused_tokens_served"), 19.0);
    agent.shutdown().await;
}

#[tokio::test]
async fn unique_forged_tokens_are_held_to_the_clients_miss_budget() {
    let agent =
        Agent::start_with(|agent| agent.cache(|cache| cache.client_miss_budget(1, 5))).await;
    let mut statuses = Vec::new();
    for n in 0..50 {
        let (status, _) = exchange_from(
            ATTACKER,
            agent.addr(),
            &request(Some(HOST), Some(&forged_token(n))),
        )
        .await;
        statuses.push(status);
    }
    let upstream = agent.calls();
    // The burst, plus what refilled at 1/s while the requests ran.
    assert!((5..=7).contains(&upstream), "{upstream} upstream calls");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), upstream);
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        50 - upstream
    );
    // Another pod's first request is not held to the attacker's budget.
    let (status, body) = exchange_from(
        POD_A,
        agent.addr(),
        &request(Some(HOST), Some(&good_token())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    agent.shutdown().await;
}

#[tokio::test]
async fn wildcard_bind_hosts_are_refused_unless_allowed() {
    for host in ["0.0.0.0", "::", "[::]"] {
        let refused = AgentBuilder::new("demo".parse().unwrap(), Source::default())
            .bind_hosts([host])
            .server(move |server| server.port(0).probe_addr(None).metrics_addr(None))
            .bind()
            .await;
        assert!(
            matches!(&refused, Err(BindError::WildcardHost { host: h }) if h == host),
            "{refused:?}"
        );
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("every address of the node"), "{message}");
    }
    let allowed = AgentBuilder::new("demo".parse().unwrap(), Source::default())
        .bind_hosts(["0.0.0.0"])
        .server(move |server| {
            server
                .port(0)
                .probe_addr(None)
                .metrics_addr(None)
                .allow_wildcard_bind(true)
        })
        .bind()
        .await
        .unwrap();
    assert!(allowed.credential_addrs()[0].ip().is_unspecified());
}
