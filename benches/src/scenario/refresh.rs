//! Scenario 2: callers across a refresh, with the agent answering in 200 ms, then failing.
//!
//! Both sides run in the same run on one virtual clock ([`BenchClock`]) and one stub agent (an
//! agent with its cache off: every fetch takes 200 ms and returns fresh 6 h credentials, or
//! 500 `[]` once failing). After both caches are warm, the clock jumps to 61 minutes before
//! expiry and runs fast through the hour (phase A, where refresh-ahead designs refresh), then
//! runs at real speed through the last 16 seconds (phase B, where the SDK's lazy cache
//! refreshes: 5–10 s before expiry). Half the callers fall in each phase, evenly spread; each
//! scheduled caller calls both sides at the same moment.

use std::sync::Arc;
use std::time::Duration;

use aws_config::identity::IdentityCache;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_async::time::SharedTimeSource;
use pod_identity_provider::{Env, PodIdentityCredentialsProvider};

use crate::clock::{BenchClock, stopwatch};
use crate::fixture::{BoxError, EcsEnvironment};
use crate::report::{Row, verdict};
use crate::sdk::{CachedPath, ecs_provider};
use crate::stats::{Latencies, human};
use crate::stub::StubAgent;

/// How long the stub agent takes to answer.
pub const AGENT_DELAY: Duration = Duration::from_millis(200);
/// The credentials' lifetime.
const LIFETIME: Duration = Duration::from_secs(6 * 60 * 60);
/// A caller waited if its call took longer than this.
pub const WAITED: Duration = Duration::from_millis(1);

/// Settings of the scenario.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Callers in all (half per phase).
    pub callers: usize,
    /// Real length of phase A.
    pub phase_a: Duration,
    /// Speed of the clock in phase B (1 = real time: 16 s).
    pub phase_b_speed: f64,
}

impl Settings {
    /// The full run.
    pub const FULL: Self = Self {
        callers: 1000,
        phase_a: Duration::from_secs(3),
        phase_b_speed: 1.0,
    };
    /// A smoke run.
    pub const QUICK: Self = Self {
        callers: 40,
        phase_a: Duration::from_millis(300),
        phase_b_speed: 16.0,
    };
}

/// What the callers of one side saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Call latencies.
    pub latencies: Latencies,
    /// Calls that failed.
    pub errors: usize,
}

/// Ours and the SDK path, one run.
#[derive(Debug)]
pub struct Outcome {
    /// Our provider.
    pub ours: Seen,
    /// `EcsCredentialsProvider` + lazy cache.
    pub sdk: Seen,
    /// Requests the stub agent received after warm-up.
    pub agent_requests: u64,
}

/// One run; `failing` makes the agent fail right after warm-up.
pub async fn run_once(
    env: &EcsEnvironment,
    settings: Settings,
    failing: bool,
) -> Result<Outcome, BoxError> {
    let clock = BenchClock::starting_now();
    let stub = StubAgent::new(clock.clone(), AGENT_DELAY, LIFETIME);
    let server = stub.serve_on(env.port).await?;
    std::fs::write(&env.token_file, "bench-token")?;
    let ours = PodIdentityCredentialsProvider::builder()
        .full_uri(&env.full_uri)
        .token("bench-token")
        .env(Env::from_vars(Vec::<(String, String)>::new()))
        .time_source(clock.clone())
        .sleep_impl(clock.clone())
        .build();
    let sdk = Arc::new(CachedPath::new(
        IdentityCache::lazy().build(),
        ecs_provider(),
        SharedTimeSource::new(clock.clone()),
        // The lazy cache only sleeps for its load timeout: real time.
        SharedAsyncSleep::new(TokioSleep::new()),
    )?);

    let (warm_ours, warm_sdk) = tokio::join!(ours.provide_credentials(), sdk.resolve());
    let expiry = warm_ours?
        .expiry()
        .ok_or("no expiry")?
        .min(warm_sdk?.expiration().ok_or("no expiry")?);
    stub.set_failing(failing);
    let warm_requests = stub.requests();

    let per_phase = settings.callers / 2;
    let phase_a_span = Duration::from_secs(61 * 60) - Duration::from_secs(16);
    let phase_b_span = Duration::from_secs(15);
    let phase_b_real = phase_b_span.div_f64(settings.phase_b_speed);
    let speed_a = phase_a_span.as_secs_f64() / settings.phase_a.as_secs_f64();

    let mut calls = Vec::new();
    let start = stopwatch();
    clock.set(expiry - Duration::from_secs(61 * 60), speed_a);
    for (phase, real, from) in [
        (0, settings.phase_a, start),
        (1, phase_b_real, start + settings.phase_a),
    ] {
        if phase == 1 {
            tokio::time::sleep_until(tokio::time::Instant::from_std(from)).await;
            clock.set(expiry - Duration::from_secs(16), settings.phase_b_speed);
        }
        for i in 0..per_phase {
            let at =
                tokio::time::Instant::from_std(from + real.mul_f64(i as f64 / per_phase as f64));
            // Both sides at the same moment, each on its own task.
            let ours = ours.clone();
            let ours_call = tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let t = stopwatch();
                let ok = ours.provide_credentials().await.is_ok();
                (t.elapsed(), ok)
            });
            let sdk = sdk.clone();
            let sdk_call = tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let t = stopwatch();
                let ok = sdk.resolve().await.is_ok();
                (t.elapsed(), ok)
            });
            calls.push((ours_call, sdk_call));
        }
    }
    let mut outcome = Outcome {
        ours: Seen::default(),
        sdk: Seen::default(),
        agent_requests: 0,
    };
    for (ours_call, sdk_call) in calls {
        let (latency, ok) = ours_call.await?;
        outcome.ours.latencies.push(latency);
        outcome.ours.errors += usize::from(!ok);
        let (latency, ok) = sdk_call.await?;
        outcome.sdk.latencies.push(latency);
        outcome.sdk.errors += usize::from(!ok);
    }
    outcome.agent_requests = stub.requests() - warm_requests;
    server.stop().await;
    Ok(outcome)
}

/// Both runs, as table rows.
pub fn run(env: &EcsEnvironment, settings: Settings) -> Result<Vec<Row>, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let healthy = runtime.block_on(run_once(env, settings, false))?;
    let failing = runtime.block_on(run_once(env, settings, true))?;
    let s = "2 across a refresh";
    let n = settings.callers;
    let mut rows = Vec::new();
    for (label, mut o) in [
        ("agent answering in 200 ms", healthy),
        ("agent failing (500)", failing),
    ] {
        let (ow, sw) = (
            o.ours.latencies.above(WAITED),
            o.sdk.latencies.above(WAITED),
        );
        rows.push(Row::plain(
            s,
            &format!("{label}: callers of {n} that waited > 1 ms (worst wait)"),
            format!("{ow} ({})", human(o.ours.latencies.quantile(1.0))),
            format!("{sw} ({})", human(o.sdk.latencies.quantile(1.0))),
            format!("0 {}", verdict(ow == 0)),
        ));
        rows.push(Row::plain(
            s,
            &format!("{label}: callers of {n} that got an error"),
            o.ours.errors.to_string(),
            o.sdk.errors.to_string(),
            format!("0 {}", verdict(o.ours.errors == 0)),
        ));
    }
    Ok(rows)
}
