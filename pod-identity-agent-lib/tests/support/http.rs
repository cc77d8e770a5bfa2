//! An HTTP/1 client for loopback requests. Requests are bytes, so a test can send what client
//! libraries refuse to (no `Host`, two of them, non-UTF-8 values, pipelining, other protocols);
//! every answer is read to EOF within [`ANSWER_TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long an answer may take before the test fails.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP/1.1 request head built header by header.
#[derive(Clone, Debug)]
pub struct Request(Vec<u8>);

impl Request {
    /// `{method} {target} HTTP/1.1`, without headers yet.
    pub fn new(method: &str, target: &str) -> Self {
        Self(format!("{method} {target} HTTP/1.1\r\n").into_bytes())
    }

    /// `GET {target} HTTP/1.1`.
    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    /// `GET /v1/credentials HTTP/1.1`.
    pub fn credentials() -> Self {
        Self::get("/v1/credentials")
    }

    /// Adds `name: value`; the value may be any bytes.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value.as_ref());
        self.0.extend_from_slice(b"\r\n");
        self
    }

    pub fn host(self, host: impl AsRef<[u8]>) -> Self {
        self.header("Host", host)
    }

    pub fn authorization(self, token: impl AsRef<[u8]>) -> Self {
        self.header("Authorization", token)
    }

    /// `Connection: close`: the agent closes after its answer, which ends the read.
    pub fn close(self) -> Self {
        self.header("Connection", "close")
    }

    /// The request as sent: the head and its empty line.
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.0.clone();
        bytes.extend_from_slice(b"\r\n");
        bytes
    }
}

/// Sends `request` on a new connection and reads the answer to EOF.
pub async fn send(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.unwrap();
    send_on(stream, request).await
}

/// [`send`] from `source`, a loopback address standing for a pod's IP.
pub async fn send_from(source: [u8; 4], addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    send_on(connect_from(source, addr).await, request).await
}

async fn send_on(mut stream: TcpStream, request: &[u8]) -> Vec<u8> {
    let peer = stream.peer_addr().unwrap();
    // The server may answer and close before reading everything (431): a failed write is fine,
    // and so is a reset after the answer.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(ANSWER_TIMEOUT, stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "{peer} neither answered nor closed within {ANSWER_TIMEOUT:?}"
    );
    answer
}

/// A connection from `source` (a loopback address standing for a pod's IP).
pub async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// (status, body) of the first response in `answer`; status 0 when there is none.
pub fn parse(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer);
    if !text.starts_with("HTTP/1.") || text.len() < 12 {
        return (0, text.into_owned());
    }
    let status = text[9..12].parse().unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Sends `request` and parses the answer: (status, body).
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    parse(&send(addr, request).await)
}

/// `GET {path}` with `Host: {addr}` and an optional `Authorization`, which must be answered.
pub async fn get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut request = Request::get(path).host(addr.to_string());
    if let Some(token) = authorization {
        request = request.authorization(token);
    }
    let (status, body) = exchange(addr, &request.close().bytes()).await;
    assert_ne!(status, 0, "no HTTP answer from {addr}: {body}");
    (status, body)
}

/// `GET /v1/credentials` with `token`: (status, body).
pub async fn credentials(addr: SocketAddr, token: &str) -> (u16, String) {
    get(addr, "/v1/credentials", Some(token)).await
}

/// The `AccessKeyId` of a credentials body.
pub fn access_key(body: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not credentials ({e}): {body}"));
    value["AccessKeyId"].as_str().unwrap().to_owned()
}
