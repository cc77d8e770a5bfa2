//! Scenario 4: cold bursts and upstream load.
//!
//! (a) and (b) go over loopback HTTP to a real agent whose `EksAuthSource` calls the simulator
//! with 50 ms added latency. (c) drives the agent's `CredentialCache` for a simulated day on
//! tokio's paused clock with an in-process upstream that takes 50 ms (an HTTP upstream cannot
//! run on paused time: its timeouts would fire as the clock jumps).

use aws_smithy_async::time::SharedTimeSource;
use std::time::{Duration, SystemTime};

use pod_identity_agent_lib::time::TokioTimeSource;
use pod_identity_agent_lib::{cache::CredentialCache, source::CredentialRequest};
use pod_identity_core::secret::SecretString;
use pod_identity_core::token::ServiceAccountToken;

use crate::clock::{stopwatch, system_now};
use crate::fixture::{BoxError, LocalAgent, cluster, pod_token};
use crate::loadgen::{credentials_request, one_request};
use crate::report::{Row, verdict};
use crate::stats::human;
use crate::upstream::CountingSource;

/// The simulator's added latency.
pub const UPSTREAM_LATENCY: Duration = Duration::from_millis(50);

/// Settings of the scenario.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Concurrent requests of (a) and distinct tokens of (b).
    pub burst: usize,
    /// Pods of (c).
    pub pods: usize,
    /// Simulated time of (c).
    pub day: Duration,
    /// How often each pod reads its credentials in (c).
    pub read_every: Duration,
}

impl Settings {
    /// The full run.
    pub const FULL: Self = Self {
        burst: 1000,
        pods: 110,
        day: Duration::from_secs(24 * 60 * 60),
        read_every: Duration::from_secs(60),
    };
    /// A smoke run.
    pub const QUICK: Self = Self {
        burst: 20,
        pods: 5,
        day: Duration::from_secs(7 * 60 * 60),
        read_every: Duration::from_secs(300),
    };
}

/// A burst's outcome.
#[derive(Debug)]
pub struct Burst {
    /// Upstream (simulator) calls.
    pub upstream: u64,
    /// Time from the first request to the last answer.
    pub all_served: Duration,
    /// Answers other than 200.
    pub errors: usize,
}

/// `tokens.len()` concurrent requests, one per token, to a fresh agent.
pub async fn burst(tokens: &[SecretString]) -> Result<Burst, BoxError> {
    let agent = LocalAgent::start(0, |b| b).await?;
    agent.simulator.set_latency(UPSTREAM_LATENCY);
    let addr = agent.addr;
    let requests = tokens
        .iter()
        .map(|t| credentials_request(addr, t.expose_secret()))
        .collect::<Vec<_>>();
    let started = stopwatch();
    let calls = requests
        .into_iter()
        .map(|r| tokio::spawn(async move { one_request(addr, &r).await }))
        .collect::<Vec<_>>();
    let mut errors = 0;
    for call in calls {
        match call.await? {
            Ok((200, _)) => {}
            _ => errors += 1,
        }
    }
    let all_served = started.elapsed();
    let upstream = agent.simulator.request_count();
    agent.stop().await;
    Ok(Burst {
        upstream,
        all_served,
        errors,
    })
}

/// What a simulated day did.
#[derive(Debug)]
pub struct Day {
    /// Upstream calls in all.
    pub upstream: u64,
    /// Fewest and most calls of one pod.
    pub per_pod: (u64, u64),
    /// Renewal periods in the day (max retention 3 h).
    pub periods: u64,
    /// Reads after the first that had to wait for upstream.
    pub waited_reads: u64,
    /// Reads in all.
    pub reads: u64,
}

/// `pods` pods reading every `read_every` for `day`, on paused time.
pub fn day(settings: Settings) -> Result<Day, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    runtime.block_on(async move {
        let start = system_now();
        let clock = SharedTimeSource::new(TokioTimeSource::starting_at(start));
        let source = CountingSource::new(clock.clone(), UPSTREAM_LATENCY);
        let cache = CredentialCache::builder(source.clone())
            .clock(clock)
            .build();
        let mut pods = Vec::new();
        for pod in 0..settings.pods {
            // Tokens that outlive the day (kubelet would rotate them; a new token is a new entry).
            let token = mint_long_token(pod, start)?;
            let request = CredentialRequest::new(
                cluster(),
                ServiceAccountToken::decode(token.expose_secret())?,
            );
            let cache = cache.clone();
            pods.push(tokio::spawn(async move {
                let (mut reads, mut waited) = (0u64, 0u64);
                let end = tokio::time::Instant::now() + settings.day;
                let mut first = true;
                while tokio::time::Instant::now() < end {
                    let asked = tokio::time::Instant::now();
                    cache.get(&request).await.map_err(|e| e.to_string())?;
                    if !first && asked.elapsed() > Duration::ZERO {
                        waited += 1;
                    }
                    first = false;
                    reads += 1;
                    tokio::time::sleep(settings.read_every).await;
                }
                Ok::<_, String>((reads, waited))
            }));
        }
        let (mut reads, mut waited_reads) = (0, 0);
        for pod in pods {
            let (r, w) = pod.await??;
            reads += r;
            waited_reads += w;
        }
        let per_pod = source.calls_per_pod();
        let min = per_pod.values().copied().min().unwrap_or(0);
        let max = per_pod.values().copied().max().unwrap_or(0);
        let period = pod_identity_agent_lib::cache::DEFAULT_MAX_RETENTION;
        Ok(Day {
            upstream: source.calls(),
            per_pod: (min, max),
            periods: settings.day.as_secs().div_ceil(period.as_secs()),
            waited_reads,
            reads,
        })
    })
}

fn mint_long_token(pod: usize, issued_at: SystemTime) -> Result<SecretString, BoxError> {
    use pod_identity_agent_lib::simulator::{PodToken, mint_token};
    let spec = PodToken::new(
        crate::fixture::NAMESPACE.parse()?,
        crate::fixture::SERVICE_ACCOUNT.parse()?,
        format!("day-pod-{pod:03}"),
        issued_at,
    )
    .with_lifetime(Duration::from_secs(3 * 24 * 60 * 60));
    Ok(mint_token(&spec))
}

/// The whole scenario, as table rows.
pub fn run(settings: Settings) -> Result<Vec<Row>, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let one = pod_token(0);
    let same = vec![one; settings.burst];
    let distinct = (0..settings.burst).map(pod_token).collect::<Vec<_>>();
    let a = runtime.block_on(burst(&same))?;
    let b = runtime.block_on(burst(&distinct))?;
    drop(runtime);
    let c = day(settings)?;
    let s = "4 cold bursts, upstream load";
    let n = settings.burst;
    Ok(vec![
        Row::plain(
            s,
            &format!(
                "(a) {n} concurrent requests, one token: upstream calls; all served in (errors)"
            ),
            format!("{}; {} ({})", a.upstream, human(a.all_served), a.errors),
            "1; ≥ 50 ms (upstream latency)".to_owned(),
            format!("1 call {}", verdict(a.upstream == 1 && a.errors == 0)),
        ),
        Row::plain(
            s,
            &format!("(b) {n} distinct tokens at once: upstream calls; all served in (errors)"),
            format!("{}; {} ({})", b.upstream, human(b.all_served), b.errors),
            format!("{n}; ≥ 50 ms"),
            format!(
                "{n} calls {}",
                verdict(b.upstream == n as u64 && b.errors == 0)
            ),
        ),
        Row::plain(
            s,
            &format!(
                "(c) {} pods, {} h simulated, a read per pod every {} s: upstream calls (per pod min–max); reads that waited",
                settings.pods,
                settings.day.as_secs() / 3600,
                settings.read_every.as_secs()
            ),
            format!(
                "{} ({}–{}); {} of {}",
                c.upstream, c.per_pod.0, c.per_pod.1, c.waited_reads, c.reads
            ),
            format!(
                "{} ({} per pod: one per 3 h renewal period); 0",
                c.periods * settings.pods as u64,
                c.periods
            ),
            format!(
                "one per token per period {}",
                verdict(c.per_pod == (c.periods, c.periods) && c.waited_reads == 0)
            ),
        ),
    ])
}
