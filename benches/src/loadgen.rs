//! A closed-loop HTTP/1.1 load generator over raw TCP: each connection sends one request, reads
//! the whole response, and sends the next (keep-alive, no pipelining).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::clock::stopwatch;
use crate::stats::Latencies;

/// `GET /v1/credentials` as a pod's SDK sends it.
pub fn credentials_request(addr: SocketAddr, token: &str) -> Arc<[u8]> {
    format!(
        "GET /v1/credentials HTTP/1.1\r\nhost: {addr}\r\nauthorization: {token}\r\n\
         user-agent: pod-identity-bench\r\naccept: */*\r\n\r\n"
    )
    .into_bytes()
    .into()
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Run {
    /// Latency of every completed request.
    pub latencies: Latencies,
    /// Responses other than 200.
    pub errors: u64,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Run {
    /// Completed requests per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Runs `connections` closed loops against `addr` for `duration`.
pub async fn closed_loop(
    addr: SocketAddr,
    request: Arc<[u8]>,
    connections: usize,
    duration: Duration,
) -> io::Result<Run> {
    // Connect everyone first, so the measured window has the full concurrency.
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let started = stopwatch();
    let deadline = started + duration;
    let loops = streams
        .into_iter()
        .map(|stream| tokio::spawn(connection(stream, request.clone(), deadline)))
        .collect::<Vec<_>>();
    let mut run = Run::default();
    for task in loops {
        let (latencies, errors) = task.await.map_err(io::Error::other)??;
        run.latencies.extend(latencies);
        run.errors += errors;
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

async fn connection(
    mut stream: TcpStream,
    request: Arc<[u8]>,
    deadline: Instant,
) -> io::Result<(Latencies, u64)> {
    let mut latencies = Latencies::default();
    let mut errors = 0;
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        let sent = stopwatch();
        if sent >= deadline {
            break;
        }
        stream.write_all(&request).await?;
        let status = read_response(&mut stream, &mut buf).await?;
        latencies.push(sent.elapsed());
        if status != 200 {
            errors += 1;
        }
    }
    Ok((latencies, errors))
}

/// One request on a fresh connection; the status and how long it took.
pub async fn one_request(addr: SocketAddr, request: &[u8]) -> io::Result<(u16, Duration)> {
    let sent = stopwatch();
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    let mut buf = Vec::with_capacity(4 * 1024);
    let status = read_response(&mut stream, &mut buf).await?;
    Ok((status, sent.elapsed()))
}

/// Reads one response (head and `content-length` body) and returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<u16> {
    buf.clear();
    let head_end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end + 4;
        }
        read_more(stream, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(io::Error::other)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("no status line"))?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        read_more(stream, buf).await?;
    }
    Ok(status)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection; the status and the body.
pub async fn fetch(addr: SocketAddr, request: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut buf = Vec::with_capacity(4 * 1024);
    let status = read_response(&mut stream, &mut buf).await?;
    let head_end = find(&buf, b"\r\n\r\n").map_or(buf.len(), |end| end + 4);
    Ok((status, buf.split_off(head_end)))
}
