//! Hostile pods against the agent binary while well-behaved pods are served (run by
//! `scripts/reliability.sh hostile`; figures in RELIABILITY.md).
//!
//! ```text
//! cargo build --release -p pod-identity-agent -p pod-identity-examples --bin pod-identity-agent --bin hostile-load
//! target/release/hostile-load --seconds 30
//! ```
//!
//! On loopback only. The SigV4-verifying EKS Auth simulator runs in this process; the agent is
//! the real `pod-identity-agent` binary (next to this one) in a process of its own, so its
//! memory is its own, with its defaults except the addresses (`--bind-hosts 127.0.0.1` on a free
//! port). Every pod has an address of its own in 127.0.0.0/8, as pods have IPs of their own:
//!
//! - `--pods` well-behaved pods (127.0.1.x), each on a keep-alive connection, fetch every
//!   `--interval-ms` with their own token;
//! - an attacking pod (127.0.0.2) keeps `--stalled` connections open, each with pipelined
//!   requests it never reads (reconnecting those the agent closes, once a second), and floods
//!   `--flood-rate` requests a second on keep-alive connections;
//! - a forging pod (127.0.0.3) sends `--forged` unique unsigned tokens (EKS Auth refuses each
//!   one), spread over the run.
//!
//! Reported: the agent's peak RSS, the well-behaved pods' errors and latency percentiles, the
//! flood's answers and achieved rate, EKS Auth calls caused by the forged tokens against the
//! miss budget (10 at once, then 1/s), and how long after the attack stops the agent holds none
//! of the attacker's connections. Exits 1 if a well-behaved pod got an error.
//!
//! Bounds: `--seconds` at most 120, `--stalled` at most 8000, `--pods` at most 250; every loop
//! stops at the deadline and the agent is stopped at the end.

use aws_smithy_async::time::{SystemTimeSource, TimeSource};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use pod_identity_agent_lib::simulator::{EksAuthSimulator, NodeCredentials, PodToken, mint_token};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Hostile pods against the agent binary, with well-behaved pods measured meanwhile.
#[derive(Debug, Parser)]
#[command(name = "hostile-load")]
struct Args {
    /// How long the attack lasts (at most 120).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Connections the attacking pod keeps open, stalled (at most 8000).
    #[arg(long, default_value_t = 4000)]
    stalled: usize,
    /// Requests a second the attacking pod floods with (10× the agent's overall limit).
    #[arg(long, default_value_t = 10_000)]
    flood_rate: u64,
    /// Unique forged tokens the forging pod sends over the run.
    #[arg(long, default_value_t = 1000)]
    forged: usize,
    /// Addresses the stalled connections come from: 1 is the attacking pod alone (held to its
    /// per-client cap); more (127.0.2.x, at most 200) stand for many attacking pods, to fill the
    /// agent's overall cap and measure its worst-case memory.
    #[arg(long, default_value_t = 1)]
    attackers: u8,
    /// Well-behaved pods (at most 250).
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// How often each well-behaved pod fetches, in milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
}

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The agent's gauge of open credential connections.
const OPEN: &str = "pod_identity_connections_open{listener=\"credentials\"}";
const FORGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Keep-alive connections the flood uses (opened before the stalled ones fill the attacker's
/// per-client cap).
const FLOOD_CONNECTIONS: usize = 8;
/// Requests pipelined per write on a flood or stalled connection.
const BATCH: usize = 50;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.seconds > 120 || args.stalled > 8000 || args.pods > 250 || args.pods == 0 {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("out of bounds: --seconds ≤ 120, --stalled ≤ 8000, 1 ≤ --pods ≤ 250");
        }
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("cannot start the runtime: {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("hostile-load failed: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Latencies of the well-behaved pods, in microseconds.
#[derive(Default)]
struct Samples {
    latencies: std::sync::Mutex<Vec<u64>>,
    errors: AtomicU64,
    served: AtomicU64,
}

#[allow(clippy::print_stdout)]
async fn run(args: Args) -> Result<bool, BoxError> {
    let simulator = EksAuthSimulator::builder()
        .cluster_name("hostile".parse()?)
        .node_credentials(NodeCredentials::new(
            "AKIDHOSTILENODE",
            "hostile-node-secret",
        ))
        .associate(
            "default".parse()?,
            "app".parse()?,
            "arn:aws:iam::111122223333:role/app".parse()?,
        )
        .build()?;
    let upstream = simulator.serve("127.0.0.1:0".parse()?).await?;
    let (port, probe_port, metrics_port) = (free_port()?, free_port()?, free_port()?);
    let agent_path = std::env::current_exe()?.with_file_name("pod-identity-agent");
    let mut agent = tokio::process::Command::new(&agent_path)
        .args([
            "server",
            "--cluster-name",
            "hostile",
            "--bind-hosts",
            "127.0.0.1",
        ])
        .args(["--port", &port.to_string()])
        .args(["--probe-port", &probe_port.to_string()])
        .args(["--metrics-address", "127.0.0.1"])
        .args(["--metrics-port", &metrics_port.to_string()])
        .args(["--endpoint", &upstream.endpoint_url()])
        .args(["--region", simulator.region()])
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", "AKIDHOSTILENODE")
        .env("AWS_SECRET_ACCESS_KEY", "hostile-node-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", agent_path.display()))?;
    let pid = agent.id().ok_or("the agent exited at once")?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let metrics_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, metrics_port));
    wait_ready(SocketAddr::from((Ipv4Addr::LOCALHOST, probe_port))).await?;
    let rss_idle = rss_kib(pid);

    // Well-behaved pods: a first fetch each (a miss), then the attack starts.
    let now = SystemTimeSource::new().now();
    let mut tokens = Vec::with_capacity(args.pods);
    for n in 0..args.pods {
        let spec = PodToken::new("default".parse()?, "app".parse()?, format!("app-{n}"), now);
        tokens.push(mint_token(&spec).expose_secret().to_owned());
    }
    let mut pods = Vec::new();
    for (n, token) in tokens.iter().enumerate() {
        let source = Ipv4Addr::new(127, 0, 1, u8::try_from(n + 1)?);
        let mut connection = BufReader::new(connect_from(source, addr, None).await?);
        let status = exchange(&mut connection, token).await?;
        if status != 200 {
            return Err(format!("pod {n}'s first fetch got {status}").into());
        }
        pods.push(connection);
    }
    simulator.reset_counts();

    // Pods stop at the end; the attackers when the attack stops.
    let stop = Arc::new(AtomicBool::new(false));
    let attack_stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Samples::default());
    let interval = Duration::from_millis(args.interval_ms);
    let mut tasks = tokio::task::JoinSet::new();
    for (mut connection, token) in pods.into_iter().zip(tokens.iter().cloned()) {
        let (stop, samples) = (stop.clone(), samples.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let started = Instant::now();
                match exchange(&mut connection, &token).await {
                    Ok(200) => {
                        let micros =
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                        samples.served.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut latencies) = samples.latencies.lock() {
                            latencies.push(micros);
                        }
                    }
                    _ => {
                        samples.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }

    // The attacking pod: flood connections first, then the stalled ones.
    let attacker_token = mint_token(&PodToken::new(
        "default".parse()?,
        "app".parse()?,
        "attacker",
        now,
    ))
    .expose_secret()
    .to_owned();
    let flood = Arc::new(FloodTally::default());
    let per_connection_rate = args.flood_rate.div_ceil(FLOOD_CONNECTIONS as u64).max(1);
    for _ in 0..FLOOD_CONNECTIONS {
        let stream = connect_from(ATTACKER, addr, None).await?;
        let (stop, flood, token) = (attack_stop.clone(), flood.clone(), attacker_token.clone());
        tasks.spawn(
            async move { flood_on(stream, &token, per_connection_rate, &stop, &flood).await },
        );
    }
    {
        let (stop, token, count) = (attack_stop.clone(), attacker_token.clone(), args.stalled);
        let sources: Vec<Ipv4Addr> = match args.attackers {
            0 | 1 => vec![ATTACKER],
            n => (1..=n.min(200))
                .map(|i| Ipv4Addr::new(127, 0, 2, i))
                .collect(),
        };
        tasks.spawn(async move { hold_stalled(addr, &sources, &token, count, &stop).await });
    }
    // The forging pod.
    let forged = Arc::new(FloodTally::default());
    {
        let (stop, forged, count) = (attack_stop.clone(), forged.clone(), args.forged);
        let pace = Duration::from_secs(args.seconds) / u32::try_from(args.forged.max(1))?;
        tasks.spawn(async move { forge(addr, count, pace, &stop, &forged).await });
    }

    // The attack runs; the agent's memory is sampled.
    let attack_started = Instant::now();
    let deadline = attack_started + Duration::from_secs(args.seconds);
    let mut rss_peak = rss_idle;
    let mut connections_peak = 0.0_f64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_peak = rss_peak.max(rss_kib(pid));
        if let Some(open) = metric(metrics_addr, OPEN).await {
            connections_peak = connections_peak.max(open);
        }
    }
    let attack = attack_started.elapsed();
    let flood_sent = flood.sent.load(Ordering::Relaxed);
    // The attack stops: no more requests or connections, but the stalled sockets stay open on
    // the attacker's side until the agent closes them. The well-behaved pods go on.
    attack_stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    // The attacker's connections the agent holds when the attack stops: all open ones but the
    // well-behaved pods' and the forging pod's.
    let held_at_stop = metric(metrics_addr, OPEN).await.unwrap_or(0.0) - args.pods as f64 - 1.0;
    let mut released = None;
    while stopped.elapsed() < Duration::from_secs(60) {
        rss_peak = rss_peak.max(rss_kib(pid));
        let open = metric(
            metrics_addr,
            "pod_identity_connections_open{listener=\"credentials\"}",
        )
        .await
        .unwrap_or(f64::MAX);
        // What remains is the well-behaved pods' keep-alive connections.
        if open <= args.pods as f64 {
            released = Some(stopped.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let hwm = hwm_kib(pid);
    let forged_upstream = simulator.request_count();
    let refused_connections = metric(
        metrics_addr,
        "pod_identity_connections_refused{listener=\"credentials\",reason=\"max_connections_per_client\"}",
    )
    .await
    .unwrap_or(0.0)
        + metric(
            metrics_addr,
            "pod_identity_connections_refused{listener=\"credentials\",reason=\"max_connections\"}",
        )
        .await
        .unwrap_or(0.0);
    let limited = metric(
        metrics_addr,
        "pod_identity_requests_limited{reason=\"client_misses\"}",
    )
    .await
    .unwrap_or(0.0);
    tasks.abort_all();
    let _ = agent.start_kill();
    let _ = agent.wait().await;
    upstream.shutdown().await?;

    let mut latencies = samples
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort_unstable();
    let quantile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index] as f64 / 1000.0
    };
    let errors = samples.errors.load(Ordering::Relaxed);
    let budget = 10 + attack.as_secs();
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    println!(
        "| agent peak RSS (VmHWM) | {:.1} MiB (idle {:.1} MiB, sampled peak {:.1} MiB) | < 64 MiB |",
        hwm as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        rss_peak as f64 / 1024.0
    );
    println!(
        "| well-behaved pods: answers, errors | {} served, {errors} errors | 0 errors |",
        samples.served.load(Ordering::Relaxed)
    );
    println!(
        "| well-behaved pods: latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms | p99 < 10 ms |",
        quantile(0.5),
        quantile(0.99),
        quantile(1.0)
    );
    println!(
        "| flood: sent, 200, 429 | {flood_sent} ({:.0}/s), {} OK, {} 429 | 429 for the flooding pod only |",
        flood_sent as f64 / attack.as_secs_f64(),
        flood.ok.load(Ordering::Relaxed),
        flood.limited.load(Ordering::Relaxed)
    );
    println!(
        "| connections: the agent's most open at once (all pods) / refused at a cap | {connections_peak:.0} / {refused_connections:.0} | the attacking pod ≤ 64, all ≤ 1024 |"
    );
    println!(
        "| forged tokens: sent, 400, 429 (miss budget; the agent counted {limited:.0}) | {}, {}, {} | |",
        forged.sent.load(Ordering::Relaxed),
        forged.ok.load(Ordering::Relaxed),
        forged.limited.load(Ordering::Relaxed)
    );
    println!(
        "| EKS Auth calls during the attack (all from forged tokens) | {forged_upstream} | ≤ miss budget {budget} (10 + 1/s × {} s) |",
        attack.as_secs()
    );
    match released {
        Some(after) => println!(
            "| attacker's connections ({held_at_stop:.0} held when it stopped) all closed after | {:.1} s | ≤ 30 s (request timeout) |",
            after.as_secs_f64()
        ),
        None => println!(
            "| attacker's connections all closed after the attack stopped | not within 60 s | ≤ 30 s |"
        ),
    }
    Ok(errors == 0)
}

#[derive(Default)]
struct FloodTally {
    sent: AtomicU64,
    ok: AtomicU64,
    limited: AtomicU64,
}

/// Floods `rate` requests a second on one keep-alive connection, in pipelined batches, and
/// counts the answers.
async fn flood_on(
    stream: TcpStream,
    token: &str,
    rate: u64,
    stop: &AtomicBool,
    tally: &FloodTally,
) {
    let request = format!(
        "GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\n\r\n"
    );
    let batch = request.repeat(BATCH);
    let (mut reader, mut writer) = stream.into_split();
    let pace = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut carry = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if writer.write_all(batch.as_bytes()).await.is_err() {
            return;
        }
        tally.sent.fetch_add(BATCH as u64, Ordering::Relaxed);
        let mut answered = 0;
        while answered < BATCH {
            let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buffer)).await
            else {
                return;
            };
            if n == 0 {
                return;
            }
            carry.extend_from_slice(&buffer[..n]);
            let (ok, limited, consumed) = count_statuses(&carry);
            tally.ok.fetch_add(ok, Ordering::Relaxed);
            tally.limited.fetch_add(limited, Ordering::Relaxed);
            answered += usize::try_from(ok + limited).unwrap_or(0);
            carry.drain(..consumed);
        }
    }
}

/// Counts `HTTP/1.1 200` and `HTTP/1.1 429` status lines in `bytes`; how many bytes were read
/// past (the rest may hold a status line cut in two).
fn count_statuses(bytes: &[u8]) -> (u64, u64, usize) {
    const LINE: &[u8] = b"HTTP/1.1 ";
    let (mut ok, mut limited, mut at) = (0, 0, 0);
    while let Some(found) = bytes[at..]
        .windows(LINE.len() + 3)
        .position(|w| w.starts_with(LINE))
    {
        let status = &bytes[at + found + LINE.len()..at + found + LINE.len() + 3];
        match status {
            b"200" => ok += 1,
            b"429" => limited += 1,
            _ => {}
        }
        at += found + LINE.len() + 3;
    }
    (
        ok,
        limited,
        at.max(bytes.len().saturating_sub(LINE.len() + 2)),
    )
}

/// Keeps `count` connections open, each with pipelined requests it never reads (as much as the
/// socket takes, up to 256 KiB); once a second, replaces at most 500 of those the agent closed.
async fn hold_stalled(
    addr: SocketAddr,
    sources: &[Ipv4Addr],
    token: &str,
    count: usize,
    stop: &AtomicBool,
) {
    let request = format!(
        "GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\n\r\n"
    );
    let pipelined = request.repeat((256 * 1024) / request.len());
    let mut held: Vec<TcpStream> = Vec::with_capacity(count);
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        held.retain(is_open);
        let mut opened = 0;
        while held.len() < count && (first || opened < 500) && !stop.load(Ordering::Relaxed) {
            let source = sources[held.len() % sources.len()];
            let Ok(stream) = connect_from(source, addr, Some(4096)).await else {
                break;
            };
            // As much as the socket takes now, without waiting.
            let mut written = 0;
            while written < pipelined.len() {
                match stream.try_write(&pipelined.as_bytes()[written..]) {
                    Ok(n) if n > 0 => written += n,
                    _ => break,
                }
            }
            held.push(stream);
            opened += 1;
        }
        first = false;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The attack stops, but the sockets stay open on this side until the task ends.
    std::future::pending::<()>().await;
}

/// Whether the agent still holds `stream` open. It reads at most one byte: the answers the
/// agent wrote are otherwise left unread, as a stalled client leaves them.
fn is_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    match stream.try_read(&mut probe) {
        Ok(0) => false,
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// Sends `count` unique forged tokens, one every `pace`, on a keep-alive connection.
async fn forge(
    addr: SocketAddr,
    count: usize,
    pace: Duration,
    stop: &AtomicBool,
    tally: &FloodTally,
) {
    let mut connection = None;
    let mut tick = tokio::time::interval(pace);
    for n in 0..count {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        tick.tick().await;
        if connection.is_none() {
            match connect_from(FORGER, addr, None).await {
                Ok(stream) => connection = Some(BufReader::new(stream)),
                Err(_) => continue,
            }
        }
        let Some(stream) = connection.as_mut() else {
            continue;
        };
        tally.sent.fetch_add(1, Ordering::Relaxed);
        match exchange(stream, &forged_token(n)).await {
            Ok(400) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(429) => {
                tally.limited.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => connection = None,
        }
    }
}

/// An unsigned token for the forging pod that decodes but that EKS Auth refuses (no audience).
fn forged_token(n: usize) -> String {
    let now = SystemTimeSource::new()
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"forged"}"#);
    let claims = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"exp":{},"jti":"forged-{n}","sub":"system:serviceaccount:default:app"}}"#,
        now + 3600
    ));
    format!("{header}.{claims}.Zm9yZ2Vk")
}

/// A connection from `source`, with a small receive buffer when asked.
async fn connect_from(
    source: Ipv4Addr,
    addr: SocketAddr,
    receive_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(addr).await
}

/// One request on a keep-alive connection; its status.
async fn exchange(connection: &mut BufReader<TcpStream>, token: &str) -> std::io::Result<u16> {
    let request = format!(
        "GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\n\r\n"
    );
    connection.get_mut().write_all(request.as_bytes()).await?;
    let mut line = String::new();
    if connection.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut length = 0usize;
    loop {
        line.clear();
        connection.read_line(&mut line).await?;
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value
                .trim()
                .parse()
                .map_err(|_| std::io::ErrorKind::InvalidData)?;
        }
    }
    let mut body = vec![0; length];
    connection.read_exact(&mut body).await?;
    Ok(status)
}

/// Waits (at most 30 s) until the agent's readiness probe answers 200.
async fn wait_ready(probe: SocketAddr) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(probe).await {
            let _ = stream
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            if answer.starts_with(b"HTTP/1.1 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the agent did not become ready within 30 s".into())
}

/// The value of `series` on the agent's metrics endpoint.
async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    Some(
        answer
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0),
    )
}

/// A free port on 127.0.0.1.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}
