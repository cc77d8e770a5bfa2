//! Scenario 1: the provider's cache hit, ours against aws-config's container provider behind the
//! SDK's lazy identity cache, both fed by the same agent.

use std::cell::OnceCell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::Region;
use aws_config::ecs::EcsCredentialsProvider;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_smithy_runtime_api::client::identity::Identity;
use pod_identity_provider::{
    DefaultCredentialsChain, Env, PodIdentityCredentialsProvider, RefreshAheadCache,
};
use tokio::runtime::Runtime;

use crate::clock::stopwatch;
use crate::fixture::{BoxError, EcsEnvironment, LocalAgent, pod_token};
use crate::report::Row;
use crate::sdk::{CachedPath, ecs_provider};
use crate::stats::{human, per_second};

/// Everyone of the scenario, warm.
#[derive(Debug)]
pub struct Parties {
    /// The agent both sides fetch from.
    pub agent: LocalAgent,
    /// Our provider, called directly (`provide_credentials`).
    pub ours: PodIdentityCredentialsProvider,
    /// aws-config's `EcsCredentialsProvider` behind `IdentityCache::lazy()`.
    pub sdk_lazy: CachedPath,
    /// A real `aws-sdk-sts` client's identity path: `EcsCredentialsProvider`, default cache.
    pub client_sdk: CachedPath,
    /// A real `aws-sdk-sts` client's identity path, configured with the documented one-liner:
    /// `default_provider_chain()` (Pod Identity in aws-config's default order) behind
    /// `RefreshAheadCache`.
    pub client_ours: CachedPath,
}

impl Parties {
    /// Starts the agent on the port `EcsCredentialsProvider` expects, builds every side and
    /// warms each cache with one call.
    pub async fn start(env: &EcsEnvironment) -> Result<Self, BoxError> {
        let agent = LocalAgent::start(env.port, |b| b).await?;
        let token = pod_token(0);
        std::fs::write(&env.token_file, token.expose_secret())?;
        let ours = PodIdentityCredentialsProvider::builder()
            .full_uri(agent.full_uri())
            .token(token.clone())
            .env(Env::from_vars(Vec::<(String, String)>::new()))
            .build();
        let sdk_lazy = CachedPath::lazy(ecs_provider())?;
        let sdk_config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-west-2"))
            .credentials_provider(EcsCredentialsProvider::builder().build())
            .load()
            .await;
        let client_sdk = CachedPath::of_client(&sdk_config).await?;
        // The README's one-liner; the region is given so that resolving it never asks IMDS.
        let chain = DefaultCredentialsChain::builder()
            .region(Region::new("us-west-2"))
            .build()
            .await;
        let ours_config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-west-2"))
            .credentials_provider(chain)
            .identity_cache(RefreshAheadCache::new())
            .load()
            .await;
        let client_ours = CachedPath::of_client(&ours_config).await?;
        ours.provide_credentials().await?;
        sdk_lazy.resolve().await?;
        client_sdk.resolve().await?;
        client_ours.resolve().await?;
        Ok(Self {
            agent,
            ours,
            sdk_lazy,
            client_sdk,
            client_ours,
        })
    }
}

/// Settings of the measurement.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Calls per single-task sample (the best of 5 samples counts).
    pub calls: u64,
    /// Tasks of the contention run (on 2 worker threads).
    pub tasks: usize,
    /// Length of each contention run.
    pub duration: Duration,
}

impl Settings {
    /// The full run.
    pub const FULL: Self = Self {
        calls: 200_000,
        tasks: 128,
        duration: Duration::from_secs(3),
    };
    /// A smoke run.
    pub const QUICK: Self = Self {
        calls: 1_000,
        tasks: 128,
        duration: Duration::from_millis(100),
    };
}

/// Samples per side in a comparison.
const ROUNDS: u32 = 5;

/// Time per call on one task: the best of 5 samples of `calls` calls.
pub async fn per_call<F, Fut, T, E>(calls: u64, call: F) -> Result<Duration, E>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        best = best.min(sample(calls, &call).await?);
    }
    Ok(best)
}

/// Time per call on one task of two calls compared: 5 samples of `calls` calls each, taken in
/// turn (ours, theirs, ours, ...) so that both sides see the same load; the best of each.
pub async fn per_call_paired<A, FutA, B, FutB, T, U, E>(
    calls: u64,
    ours: A,
    theirs: B,
) -> Result<(Duration, Duration), E>
where
    A: Fn() -> FutA,
    FutA: Future<Output = Result<T, E>>,
    B: Fn() -> FutB,
    FutB: Future<Output = Result<U, E>>,
{
    let (mut best_ours, mut best_theirs) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        best_ours = best_ours.min(sample(calls, &ours).await?);
        best_theirs = best_theirs.min(sample(calls, &theirs).await?);
    }
    Ok((best_ours, best_theirs))
}

async fn sample<F, Fut, T, E>(calls: u64, call: &F) -> Result<Duration, E>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = stopwatch();
    for _ in 0..calls {
        std::hint::black_box(call().await?);
    }
    Ok(started.elapsed() / u32::try_from(calls).unwrap_or(u32::MAX))
}

/// Calls per second of `A` and `B` from `tasks` tasks: [`throughput`] runs of `duration / 3`
/// taken in turn, three of each; the best of each.
pub fn throughput_paired<A: Hit, B: Hit>(
    runtime: &Runtime,
    tasks: usize,
    duration: Duration,
    parties: &Arc<Parties>,
) -> Result<(f64, f64), BoxError> {
    let (mut best_a, mut best_b) = (0f64, 0f64);
    for _ in 0..3 {
        best_a = best_a.max(throughput::<A>(runtime, tasks, duration / 3, parties)?);
        best_b = best_b.max(throughput::<B>(runtime, tasks, duration / 3, parties)?);
    }
    Ok((best_a, best_b))
}

/// One throughput row: a call on the parties, made by a task through its own handle.
///
/// [`throughput`] clones the `Arc<Parties>` once per task when it spawns it, so a call touches
/// nothing shared but the code under test (no harness reference count written per call).
pub trait Hit {
    /// One call; the result is passed through [`std::hint::black_box`] and dropped.
    fn hit(parties: &Parties) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Our provider: `provide_credentials()`.
#[derive(Debug)]
pub struct Ours;

impl Hit for Ours {
    async fn hit(parties: &Parties) -> Result<(), BoxError> {
        std::hint::black_box(parties.ours.provide_credentials().await?);
        Ok(())
    }
}

/// `EcsCredentialsProvider` behind `IdentityCache::lazy()`.
#[derive(Debug)]
pub struct SdkLazy;

impl Hit for SdkLazy {
    async fn hit(parties: &Parties) -> Result<(), BoxError> {
        std::hint::black_box(parties.sdk_lazy.resolve().await?);
        Ok(())
    }
}

/// A real client's identity path: the default chain with Pod Identity behind `RefreshAheadCache`.
#[derive(Debug)]
pub struct ClientOurs;

impl Hit for ClientOurs {
    async fn hit(parties: &Parties) -> Result<(), BoxError> {
        std::hint::black_box(parties.client_ours.resolve().await?);
        Ok(())
    }
}

/// A real client's identity path: `EcsCredentialsProvider`, default lazy cache.
#[derive(Debug)]
pub struct ClientSdk;

impl Hit for ClientSdk {
    async fn hit(parties: &Parties) -> Result<(), BoxError> {
        std::hint::black_box(parties.client_sdk.resolve().await?);
        Ok(())
    }
}

/// Diagnostic: our cached value read synchronously (`fallback_on_interrupt`), in a ready future.
#[derive(Debug)]
pub struct Peek;

impl Hit for Peek {
    fn hit(parties: &Parties) -> impl Future<Output = Result<(), BoxError>> + Send {
        std::future::ready(match parties.ours.fallback_on_interrupt() {
            Some(credentials) => {
                std::hint::black_box(credentials);
                Ok(())
            }
            None => Err("nothing cached".into()),
        })
    }
}

/// Diagnostic: a synchronous read of a per-thread copy of our cached credentials.
#[derive(Debug)]
pub struct PerThreadCopy;

impl Hit for PerThreadCopy {
    fn hit(parties: &Parties) -> impl Future<Output = Result<(), BoxError>> + Send {
        std::future::ready(match per_thread_copy(&parties.ours) {
            Ok(credentials) => {
                std::hint::black_box(credentials);
                Ok(())
            }
            Err(error) => Err(error.into()),
        })
    }
}

/// Diagnostic: the least any identity cache's hit costs on a real client's path
/// ([`CachedPath::floor`]), with an identity private to the calling thread.
#[derive(Debug)]
pub struct Floor;

impl Hit for Floor {
    async fn hit(parties: &Parties) -> Result<(), BoxError> {
        thread_local! {
            static IDENTITY: OnceCell<Identity> = const { OnceCell::new() };
        }
        let kept = IDENTITY.with(|kept| kept.get().cloned());
        match kept {
            Some(identity) => {
                std::hint::black_box(parties.client_ours.floor(identity).await?);
            }
            None => {
                // Our cache's copy for this thread: a ready future, so still on this thread.
                let identity = parties.client_ours.resolve().await?;
                IDENTITY.with(|kept| kept.get_or_init(|| identity).clone());
            }
        }
        Ok(())
    }
}

/// Calls per second of `H` from `tasks` tasks on `runtime` (2 workers) for `duration`. Each task
/// owns its clone of `parties` (made once, when it is spawned) and yields every 16 calls so that
/// all of them take turns.
pub fn throughput<H: Hit>(
    runtime: &Runtime,
    tasks: usize,
    duration: Duration,
    parties: &Arc<Parties>,
) -> Result<f64, BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let started = stopwatch();
    let handles = (0..tasks)
        .map(|_| {
            let (parties, stop, total) = (Arc::clone(parties), stop.clone(), total.clone());
            runtime.spawn(async move {
                let parties: &Parties = &parties;
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..16 {
                        H::hit(parties).await?;
                    }
                    done += 16;
                    tokio::task::yield_now().await;
                }
                total.fetch_add(done, Ordering::Relaxed);
                Ok::<(), BoxError>(())
            })
        })
        .collect::<Vec<_>>();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut first_error = None;
    for handle in handles {
        match runtime.block_on(handle) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(join) => {
                first_error.get_or_insert(join.into());
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    Ok(total.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// The provider's credentials from a copy private to this thread (a deep copy: its own
/// reference count), made on first use.
fn per_thread_copy(
    provider: &PodIdentityCredentialsProvider,
) -> Result<aws_credential_types::Credentials, &'static str> {
    thread_local! {
        static COPY: OnceCell<aws_credential_types::Credentials> = const { OnceCell::new() };
    }
    COPY.with(|copy| {
        if let Some(credentials) = copy.get() {
            return Ok(credentials.clone());
        }
        let shared = provider.fallback_on_interrupt().ok_or("nothing cached")?;
        let own = aws_credential_types::Credentials::new(
            shared.access_key_id(),
            shared.secret_access_key(),
            shared.session_token().map(str::to_owned),
            shared.expiry(),
            "per-thread-copy",
        );
        Ok(copy.get_or_init(|| own).clone())
    })
}

/// Runs the scenario on a fresh 2-worker runtime and returns its rows.
pub fn run(env: &EcsEnvironment, settings: Settings) -> Result<Vec<Row>, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let parties = Arc::new(runtime.block_on(Parties::start(env))?);
    let p = parties.clone();
    let (ours, sdk) = runtime.block_on(per_call_paired(
        settings.calls,
        || async { p.ours.provide_credentials().await.map_err(BoxError::from) },
        || p.sdk_lazy.resolve(),
    ))?;
    let (client_ours, client_sdk) = runtime.block_on(per_call_paired(
        settings.calls,
        || p.client_ours.resolve(),
        || p.client_sdk.resolve(),
    ))?;

    let (tasks, duration) = (settings.tasks, settings.duration);
    let (ours_rate, sdk_rate) =
        throughput_paired::<Ours, SdkLazy>(&runtime, tasks, duration, &parties)?;
    let (client_ours_rate, client_sdk_rate) =
        throughput_paired::<ClientOurs, ClientSdk>(&runtime, tasks, duration, &parties)?;
    // Diagnostics: what a read of the shared cached value costs (`fallback_on_interrupt`: no
    // future, no per-thread copy), and a synchronous read of a per-thread copy under contention
    // (no shared reference count).
    let peek = runtime.block_on(per_call(settings.calls, || {
        let credentials = p.ours.fallback_on_interrupt().ok_or("nothing cached");
        std::future::ready(credentials)
    }))?;
    let peek_rate = throughput::<Peek>(&runtime, tasks, duration, &parties)?;
    let local_rate = throughput::<PerThreadCopy>(&runtime, tasks, duration, &parties)?;
    // The floor of a real client's hit, whatever the cache: with the SDK path beside it, the
    // highest ratio any cache could reach.
    let identity = runtime.block_on(p.client_ours.resolve())?;
    let (floor, floor_sdk) = runtime.block_on(per_call_paired(
        settings.calls,
        || p.client_ours.floor(identity.clone()),
        || p.client_sdk.resolve(),
    ))?;
    let (floor_rate, floor_sdk_rate) =
        throughput_paired::<Floor, ClientSdk>(&runtime, tasks, duration, &parties)?;
    drop(identity);
    drop(parties);

    let s = "1 provider cache hit";
    let ratio =
        |ours: Duration, theirs: Duration| theirs.as_secs_f64() / ours.as_secs_f64().max(1e-12);
    Ok(vec![
        Row::compared(
            s,
            "time per call, 1 task: our provider vs `EcsCredentialsProvider` + `IdentityCache::lazy()` (`resolve_cached_identity`)",
            human(ours),
            human(sdk),
            ratio(ours, sdk),
            Some(5.0),
        ),
        Row::compared(
            s,
            &format!("calls/s, 2 threads × {tasks} tasks: same two"),
            per_second(ours_rate),
            per_second(sdk_rate),
            ours_rate / sdk_rate,
            Some(10.0),
        ),
        Row::compared(
            s,
            "time per call, 1 task, a real `aws-sdk-sts` client's identity path: the one-liner (`default_provider_chain()` + `RefreshAheadCache`) vs ECS + default lazy cache",
            human(client_ours),
            human(client_sdk),
            ratio(client_ours, client_sdk),
            Some(3.0),
        ),
        Row::compared(
            s,
            &format!("calls/s, 2 threads × {tasks} tasks, real client's identity path: same two"),
            per_second(client_ours_rate),
            per_second(client_sdk_rate),
            client_ours_rate / client_sdk_rate,
            Some(5.0),
        ),
        Row::compared(
            s,
            "diagnostic: time per call, 1 task, our cached value read synchronously (`fallback_on_interrupt`: no future) vs the SDK path",
            human(peek),
            human(sdk),
            ratio(peek, sdk),
            None,
        ),
        Row::compared(
            s,
            &format!(
                "diagnostic: calls/s, 2 threads × {tasks} tasks, synchronous read of the shared value vs the SDK path"
            ),
            per_second(peek_rate),
            per_second(sdk_rate),
            peek_rate / sdk_rate,
            None,
        ),
        Row::compared(
            s,
            &format!(
                "diagnostic: calls/s, 2 threads × {tasks} tasks, synchronous read of a per-thread copy vs the SDK path"
            ),
            per_second(local_rate),
            per_second(sdk_rate),
            local_rate / sdk_rate,
            None,
        ),
        Row::compared(
            s,
            "diagnostic: time per call, 1 task, the least any cache's hit costs on a real client's path (the orchestrator's resolver clone, a clock read, a clone of the identity) vs ECS + default lazy cache: the highest ratio any cache can reach",
            human(floor),
            human(floor_sdk),
            ratio(floor, floor_sdk),
            None,
        ),
        Row::compared(
            s,
            &format!(
                "diagnostic: calls/s, 2 threads × {tasks} tasks, the same least cost (an identity private to each thread) vs ECS + default lazy cache"
            ),
            per_second(floor_rate),
            per_second(floor_sdk_rate),
            floor_rate / floor_sdk_rate,
            None,
        ),
    ])
}
