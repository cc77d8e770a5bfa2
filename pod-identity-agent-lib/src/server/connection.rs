//! What one connection may cost: how many are open (in all and per client address), and how
//! long one request/response cycle may take.
//!
//! The [`Gate`] is asked before a connection gets a task: beyond the caps the accepted socket is
//! closed at once, so a flood costs no more than its sockets and nothing queues. [`Tracked`]
//! wraps the socket and records when the connection is busy (from the first byte of a request,
//! or of a pipelined response, until the response is flushed); [`serve`](super) closes a
//! connection whose cycle outlives the request timeout, so a client that stops reading cannot
//! hold a connection and its buffers in the write path, where hyper runs no timer.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Default most open credential connections, from all clients together.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default most open credential connections from one client address (one pod).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 64;
/// Default longest request/response cycle on a connection, writing the response included (the
/// reference's server read and write timeouts).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Caps and deadlines for the connections of one server.
///
/// ```
/// use std::time::Duration;
/// use pod_identity_agent_lib::server::ConnectionLimits;
///
/// let limits = ConnectionLimits::default()
///     .max_connections(2048)
///     .max_connections_per_client(32)
///     .request_timeout(Duration::from_secs(20));
/// # let _ = limits;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub(super) max_connections: usize,
    pub(super) max_per_client: usize,
    pub(super) request_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// The credential listeners' defaults: 1024 connections, 64 per client, 30 s per cycle.
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl ConnectionLimits {
    /// The probe and metrics listeners' defaults: 64 connections, 16 per client, 30 s per
    /// cycle. They have their own counts, so a saturated credential port leaves them answering.
    pub fn auxiliary() -> Self {
        Self {
            max_connections: 64,
            max_per_client: 16,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Most open connections from all clients together (at least 1).
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// Most open connections from one client address (at least 1).
    pub fn max_connections_per_client(mut self, connections: usize) -> Self {
        self.max_per_client = connections.max(1);
        self
    }

    /// Longest time from the first byte of a request to its response being flushed; a
    /// connection past it is closed.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// Why an accepted connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server holds its most connections.
    Full,
    /// The client holds its most connections.
    ClientFull,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "max_connections",
            Refusal::ClientFull => "max_connections_per_client",
        }
    }
}

/// Counts a server's open connections, in all and per client address.
#[derive(Debug)]
pub(crate) struct Gate {
    limits: ConnectionLimits,
    open: Mutex<Open>,
    gauge: Gauge,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl Gate {
    /// A gate for `limits` that reports its open connections on `gauge`.
    pub(crate) fn new(limits: ConnectionLimits, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::default(),
            gauge,
        })
    }

    /// Admits a connection from `peer` to `local`, or says why not.
    ///
    /// A connection from the listener's own address (the agent's probes checking it, or a
    /// host-network client) is held to the per-client cap but not the total, so pods that fill
    /// the server cannot fail the agent's own probes.
    pub(crate) fn admit(
        self: &Arc<Self>,
        peer: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Result<Permit, Refusal> {
        let client = peer.ip().to_canonical();
        let own = local.is_some_and(|local| local.ip().to_canonical() == client);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if !own && open.total >= self.limits.max_connections {
            return Err(Refusal::Full);
        }
        let count = open.per_client.entry(client).or_insert(0);
        if *count >= self.limits.max_per_client {
            return Err(Refusal::ClientFull);
        }
        *count += 1;
        open.total += 1;
        self.gauge.inc();
        Ok(Permit {
            gate: self.clone(),
            client,
        })
    }

    /// Open connections in all.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<Gate>,
    client: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self
            .gate
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        self.gate.gauge.dec();
        if let Some(count) = open.per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.per_client.remove(&self.client);
            }
        }
    }
}

/// When a connection's current request/response cycle began, shared between the socket wrapper
/// and the task serving the connection.
#[derive(Debug)]
pub(crate) struct Cycle {
    origin: Instant,
    /// Nanoseconds after `origin` plus one when the cycle began; 0 while idle.
    busy_since: AtomicU64,
}

impl Cycle {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            busy_since: AtomicU64::new(0),
        })
    }

    fn begin(&self) {
        if self.busy_since.load(Ordering::Relaxed) == 0 {
            let since = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            self.busy_since.store(since + 1, Ordering::Relaxed);
        }
    }

    fn end(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// When the current cycle runs out, or `None` while idle (hyper's header read timeout then
    /// bounds the wait for the next request).
    pub(crate) fn deadline(&self, timeout: Duration) -> Option<Instant> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(self.origin + Duration::from_nanos(since - 1) + timeout),
        }
    }
}

/// A socket that records its connection's request/response cycles in a [`Cycle`].
#[derive(Debug)]
pub(crate) struct Tracked<T> {
    io: T,
    cycle: Arc<Cycle>,
}

impl<T> Tracked<T> {
    pub(crate) fn new(io: T, cycle: Arc<Cycle>) -> Self {
        Self { io, cycle }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.cycle.begin();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A response to a pipelined request begins a cycle without a read.
        self.cycle.begin();
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.cycle.begin();
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        // hyper flushes once its buffered response is written out: the cycle is over.
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.cycle.end();
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_gate_caps_all_connections_and_each_client() {
        let gate = Gate::new(
            ConnectionLimits::default()
                .max_connections(3)
                .max_connections_per_client(2),
            Gauge::default(),
        );
        let local = Some(addr("169.254.170.23:80"));
        let a1 = gate.admit(addr("10.0.0.1:1000"), local).unwrap();
        let _a2 = gate.admit(addr("10.0.0.1:1001"), local).unwrap();
        assert_eq!(
            gate.admit(addr("10.0.0.1:1002"), local).unwrap_err(),
            Refusal::ClientFull
        );
        let _b1 = gate.admit(addr("10.0.0.2:1000"), local).unwrap();
        assert_eq!(
            gate.admit(addr("10.0.0.3:1000"), local).unwrap_err(),
            Refusal::Full
        );
        // The agent's own address is held to the per-client cap only, and counts in the total.
        let own = gate.admit(addr("169.254.170.23:5000"), local).unwrap();
        drop(a1);
        assert_eq!(gate.open(), 3);
        assert_eq!(
            gate.admit(addr("10.0.0.3:1000"), local).unwrap_err(),
            Refusal::Full
        );
        drop(own);
        let _c1 = gate.admit(addr("10.0.0.3:1000"), local).unwrap();
        assert_eq!(gate.open(), 3);
    }

    #[test]
    fn ipv4_mapped_clients_count_as_their_ipv4_address() {
        let gate = Gate::new(
            ConnectionLimits::default().max_connections_per_client(1),
            Gauge::default(),
        );
        let _v4 = gate.admit(addr("10.0.0.1:1"), None).unwrap();
        assert_eq!(
            gate.admit(addr("[::ffff:10.0.0.1]:2"), None).unwrap_err(),
            Refusal::ClientFull
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_runs_from_the_first_byte_to_the_flush() {
        let cycle = Cycle::new();
        let timeout = Duration::from_secs(30);
        assert_eq!(cycle.deadline(timeout), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        cycle.begin();
        let deadline = cycle.deadline(timeout).unwrap();
        assert_eq!(deadline, Instant::now() + timeout);
        tokio::time::advance(Duration::from_secs(1)).await;
        cycle.begin();
        assert_eq!(
            cycle.deadline(timeout),
            Some(deadline),
            "a cycle keeps its start"
        );
        cycle.end();
        assert_eq!(cycle.deadline(timeout), None);
    }
}
