//! A bounded load soak of the agent, with faults injected upstream (run by
//! `scripts/reliability.sh soak`; figures in RELIABILITY.md).
//!
//! ```text
//! cargo run --release -p pod-identity-examples --bin soak -- --seconds 60 --concurrency 256 \
//!     --tokens 10000 --cache-size 2000 --fault-percent 5
//! ```
//!
//! In one process, on 127.0.0.1 only: the SigV4-verifying EKS Auth simulator, an agent assembled
//! with `AgentBuilder` (real `EksAuthSource`, cache of `--cache-size`, request rate limit off so
//! the server, not the limiter, is measured), and `--concurrency` clients on keep-alive
//! connections. Half the requests cycle through `--tokens` distinct pod tokens (far more than
//! the cache holds: constant eviction and upstream calls); the other half read a hot set of 100
//! pods at random, which stay cached. About `--fault-percent` of upstream calls fail (throttling, 500,
//! 503), and every 10 s EKS Auth slows down for a second.
//!
//! Reported: requests served, answers by status (hot and cycling tokens apart), latency
//! percentiles, upstream calls, the cache size (at most `--cache-size`), and RSS at start, after
//! warm-up and at the end. The run fails (exit 1) if a hot token that had been served once gets
//! an error, or the cache grows past its bound.
//!
//! Bounds: `--seconds` at most 300, `--concurrency` at most 4096, `--tokens` at most 100,000;
//! every loop stops at the deadline.

use aws_smithy_async::time::{SystemTimeSource, TimeSource};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_sts::config::Credentials;
use clap::Parser;
use pod_identity_agent_lib::server::ConnectionLimits;
use pod_identity_agent_lib::simulator::{
    EksAuthSimulator, NodeCredentials, PodToken, Times, mint_token,
};
use pod_identity_agent_lib::{AgentBuilder, metrics::Metrics, source::eks_auth::EksAuthSource};
use pod_identity_core::eks_auth::EksAuthErrorCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A bounded load soak of the agent with upstream faults, on loopback.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// How long to run (at most 300).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Concurrent clients, each on its own keep-alive connection (at most 4096).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Distinct pod tokens cycled through (at most 100,000).
    #[arg(long, default_value_t = 10_000)]
    tokens: usize,
    /// The agent's cache size.
    #[arg(long, default_value_t = 2000)]
    cache_size: usize,
    /// Share of upstream calls answered with an error, in percent.
    #[arg(long, default_value_t = 5)]
    fault_percent: u64,
}

/// Pods read in the hot half of the requests; they fit the cache.
const HOT_PODS: usize = 100;
/// Time before "after warm-up" figures are taken.
const WARM_UP: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Tally {
    /// (hot, status) → count; status 0 is a transport error.
    answers: BTreeMap<(bool, u16), u64>,
    /// Errors for hot tokens that had been served before.
    hot_regressions: u64,
}

/// Latencies in fixed buckets, allocated once before the run so that measuring does not grow
/// the RSS being measured: 10 µs buckets up to 1 s, then 10 ms buckets up to 60 s.
struct Histogram {
    buckets: Vec<AtomicU64>,
}

const FINE_BUCKETS: u64 = 100_000;
const FINE_US: u64 = 10;
const COARSE_US: u64 = 10_000;
const COARSE_BUCKETS: u64 = 6_000;

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: (0..FINE_BUCKETS + COARSE_BUCKETS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn record(&self, micros: u64) {
        let index = if micros < FINE_BUCKETS * FINE_US {
            micros / FINE_US
        } else {
            (FINE_BUCKETS + (micros - FINE_BUCKETS * FINE_US) / COARSE_US)
                .min(FINE_BUCKETS + COARSE_BUCKETS - 1)
        };
        self.buckets[index as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The upper bound of the bucket holding the `p` quantile, in milliseconds.
    fn quantile_ms(&self, p: f64) -> f64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((total as f64 * p).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let index = index as u64;
                let upper_us = if index < FINE_BUCKETS {
                    (index + 1) * FINE_US
                } else {
                    FINE_BUCKETS * FINE_US + (index - FINE_BUCKETS + 1) * COARSE_US
                };
                return upper_us as f64 / 1000.0;
            }
        }
        0.0
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            println!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            println!("soak failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let seconds = args.seconds.clamp(1, 300);
    let concurrency = args.concurrency.clamp(1, 4096);
    let token_count = args.tokens.clamp(1, 100_000);
    let fault_percent = args.fault_percent.min(100);

    let node = NodeCredentials::random();
    let simulator = EksAuthSimulator::builder()
        .cluster_name("soak".parse()?)
        .node_credentials(node.clone())
        .associate(
            "default".parse()?,
            "app".parse()?,
            "arn:aws:iam::111122223333:role/app".parse()?,
        )
        .max_sessions(5_000)
        .build()?;
    let sim_server = simulator.serve("127.0.0.1:0".parse()?).await?;
    let source = EksAuthSource::builder()
        .aws_client(|aws| {
            aws.region(simulator.region())
                .endpoint_url(sim_server.endpoint_url())
                .credentials_provider(Credentials::new(
                    node.access_key_id(),
                    node.secret_access_key().expose_secret(),
                    None,
                    None,
                    "soak-node",
                ))
        })
        .build()
        .await?;
    let metrics = Metrics::new();
    let agent = AgentBuilder::new("soak".parse()?, source)
        .bind_hosts(["127.0.0.1"])
        // One loopback address stands for every pod: no per-client bounds.
        .server(|server| {
            server
                .port(0)
                .probe_addr(None)
                .metrics_addr(None)
                .connection_limits(
                    ConnectionLimits::default().max_connections_per_client(usize::MAX),
                )
        })
        .cache(|cache| cache.max_entries(args.cache_size).client_miss_budget(0, 0))
        .router(|router| router.rate_limit(0, 0).client_rate_limit(0, 0))
        .metrics(metrics.clone())
        .bind()
        .await?;
    let addr = agent.credential_addrs()[0];
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(agent.serve(async {
        let _ = agent_stopped.await;
    }));

    let now = SystemTimeSource::new().now();
    let mint = |pod: String| -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        Ok(
            mint_token(&PodToken::new("default".parse()?, "app".parse()?, pod, now))
                .expose_secret()
                .to_owned(),
        )
    };
    let hot: Arc<Vec<String>> = Arc::new(
        (0..HOT_PODS)
            .map(|i| mint(format!("hot-{i}")))
            .collect::<Result<_, _>>()?,
    );
    let cycling: Arc<Vec<String>> = Arc::new(
        (0..token_count)
            .map(|i| mint(format!("pod-{i}")))
            .collect::<Result<_, _>>()?,
    );
    let hot_served: Arc<Vec<AtomicBool>> =
        Arc::new((0..HOT_PODS).map(|_| AtomicBool::new(false)).collect());

    let histogram = Arc::new(Histogram::new());
    let rss_start = rss_kib();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    println!(
        "soak: {seconds} s, {concurrency} clients, {token_count} cycling tokens + {HOT_PODS} hot, \
         cache {}, {fault_percent}% upstream faults, agent {addr}, RSS at start {rss_start} KiB",
        args.cache_size
    );

    // Faults: keep about `fault_percent` of upstream calls failing; a slow second every 10 s.
    let faults = {
        let simulator = simulator.clone();
        tokio::spawn(async move {
            let codes = [
                EksAuthErrorCode::Throttling,
                EksAuthErrorCode::InternalServer,
                EksAuthErrorCode::ServiceUnavailable,
            ];
            let mut seen = simulator.request_count();
            let mut owed = 0u64;
            let mut tick = 0u64;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tick += 1;
                let count = simulator.request_count();
                owed += (count - seen) * fault_percent;
                seen = count;
                let failures = owed / 100;
                owed %= 100;
                if failures > 0 {
                    let code = codes[(tick % 3) as usize].clone();
                    simulator.fail(
                        code,
                        Times::Next(u32::try_from(failures).unwrap_or(u32::MAX)),
                    );
                }
                let slow = tick % 100 < 10;
                simulator.set_latency(if slow {
                    Duration::from_millis(50)
                } else {
                    Duration::ZERO
                });
            }
            simulator.clear_failures();
            simulator.set_latency(Duration::ZERO);
        })
    };

    // Samples of RSS and cache size.
    let largest_cache = Arc::new(AtomicUsize::new(0));
    let rss_after_warm_up = Arc::new(AtomicU64::new(0));
    let sampler = {
        let metrics = metrics.clone();
        let largest_cache = largest_cache.clone();
        let rss_after_warm_up = rss_after_warm_up.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(500)).await;
                largest_cache.fetch_max(cache_size(&metrics.encode()), Ordering::Relaxed);
                let elapsed = started.elapsed();
                if elapsed >= WARM_UP && rss_after_warm_up.load(Ordering::Relaxed) == 0 {
                    rss_after_warm_up.store(rss_kib(), Ordering::Relaxed);
                }
                if samples
                    .last()
                    .is_none_or(|(at, _)| elapsed - *at >= Duration::from_secs(10))
                {
                    samples.push((elapsed, rss_kib()));
                }
            }
            samples
        })
    };

    let next_cycling = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..concurrency {
        let (hot, cycling, hot_served, next_cycling, histogram) = (
            hot.clone(),
            cycling.clone(),
            hot_served.clone(),
            next_cycling.clone(),
            histogram.clone(),
        );
        clients.spawn(async move {
            let mut tally = Tally::default();
            let mut connection: Option<BufReader<TcpStream>> = None;
            let mut round = client;
            // Hot tokens are drawn at random (xorshift, seeded per client): a fixed walk would
            // move all clients in lockstep and leave part of the hot set unread for seconds.
            let mut seed = (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            while Instant::now() < deadline {
                round += 1;
                let hot_index = (round % 2 == 0).then(|| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % HOT_PODS as u64) as usize
                });
                let token = match hot_index {
                    Some(i) => &hot[i],
                    None => &cycling[next_cycling.fetch_add(1, Ordering::Relaxed) % cycling.len()],
                };
                let began = Instant::now();
                let status = match exchange(&mut connection, addr, token).await {
                    Ok(status) => status,
                    Err(_) => {
                        connection = None;
                        0
                    }
                };
                histogram.record(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX));
                *tally
                    .answers
                    .entry((hot_index.is_some(), status))
                    .or_default() += 1;
                if let Some(i) = hot_index {
                    if status == 200 {
                        hot_served[i].store(true, Ordering::Relaxed);
                    } else if hot_served[i].load(Ordering::Relaxed) {
                        tally.hot_regressions += 1;
                    }
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = clients.join_next().await {
        let tally = tally?;
        for (key, count) in tally.answers {
            *total.answers.entry(key).or_default() += count;
        }
        total.hot_regressions += tally.hot_regressions;
    }
    let elapsed = started.elapsed();
    faults.await?;
    let samples = sampler.await?;
    let rss_end = rss_kib();
    let final_cache = cache_size(&metrics.encode());
    largest_cache.fetch_max(final_cache, Ordering::Relaxed);
    let _ = stop_agent.send(());
    serving.await?;
    let upstream = simulator.request_count();
    let hot_upstream: u64 = hot.iter().map(|t| simulator.token_request_count(t)).sum();
    sim_server.shutdown().await?;

    // The report.
    let served: u64 = total.answers.values().sum();
    println!(
        "requests answered      {served} in {:.1} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        served as f64 / elapsed.as_secs_f64()
    );
    for ((hot, status), count) in &total.answers {
        let kind = if *hot { "hot" } else { "cycling" };
        let status = if *status == 0 {
            "transport error".to_owned()
        } else {
            status.to_string()
        };
        println!("  {kind:<8} {status:<16} {count}");
    }
    println!(
        "latency ms             p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        histogram.quantile_ms(0.50),
        histogram.quantile_ms(0.90),
        histogram.quantile_ms(0.99),
        histogram.quantile_ms(0.999),
        histogram.quantile_ms(1.0)
    );
    println!(
        "upstream calls         {upstream} ({:.2} per request); for the {HOT_PODS} hot tokens {hot_upstream}",
        upstream as f64 / served.max(1) as f64
    );
    println!(
        "cache size             largest {} (bound {}), at the end {final_cache}",
        largest_cache.load(Ordering::Relaxed),
        args.cache_size
    );
    println!(
        "RSS KiB                start {rss_start}, after {} s warm-up {}, end {rss_end}",
        WARM_UP.as_secs(),
        rss_after_warm_up.load(Ordering::Relaxed)
    );
    let samples: Vec<String> = samples
        .iter()
        .map(|(at, kib)| format!("{}s:{kib}", at.as_secs()))
        .collect();
    println!("RSS samples            {}", samples.join(" "));
    println!("hot-token regressions  {}", total.hot_regressions);

    let mut ok = true;
    if total.hot_regressions > 0 {
        println!("FAIL: cached (hot) tokens got errors after being served");
        ok = false;
    }
    if largest_cache.load(Ordering::Relaxed) > args.cache_size {
        println!("FAIL: the cache grew past its bound");
        ok = false;
    }
    Ok(ok)
}

/// One request on the client's keep-alive connection (opened on demand): the status.
async fn exchange(
    connection: &mut Option<BufReader<TcpStream>>,
    addr: SocketAddr,
    token: &str,
) -> std::io::Result<u16> {
    if connection.is_none() {
        *connection = Some(BufReader::new(TcpStream::connect(addr).await?));
    }
    let Some(stream) = connection.as_mut() else {
        return Err(std::io::ErrorKind::NotConnected.into());
    };
    let request =
        format!("GET /v1/credentials HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\n\r\n");
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let status: u16 = line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut length = 0usize;
    let mut close = false;
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value
                .trim()
                .parse()
                .map_err(|_| std::io::ErrorKind::InvalidData)?;
        } else if lower == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    if close {
        *connection = None;
    }
    Ok(status)
}

/// `pod_identity_cache_size` from the metrics text.
fn cache_size(metrics: &str) -> usize {
    metrics
        .lines()
        .find(|l| l.starts_with("pod_identity_cache_size "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as usize)
}

/// This process's resident set size (Linux), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
