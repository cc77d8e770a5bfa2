//! Scenario 1: a warm provider's cache hit on one task — ours against aws-config's built-in
//! `EcsCredentialsProvider` behind `IdentityCache::lazy()`, resolved as the orchestrator does
//! (`resolve_cached_identity`), both fed by the same agent; and the same through a real
//! `aws-sdk-sts` client's identity path, configured with the one-liner (`default_provider_chain()`
//! behind `RefreshAheadCache`) against the SDK's default lazy cache.
//!
//! The 2-thread × 128-task contention numbers come from the load harness (`--only provider`).

use std::hint::black_box;

use aws_credential_types::provider::ProvideCredentials as _;
use criterion::Criterion;
use pod_identity_benches::clock::stopwatch;
use pod_identity_benches::fixture::ecs_environment;
use pod_identity_benches::scenario::provider::Parties;

fn main() {
    // aws-config's container provider reads only the process environment: this may run the
    // bench again as a child with it set, and exit with the child's status.
    let env = ecs_environment();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let p = runtime
        .block_on(Parties::start(&env))
        .expect("the agent, the simulator and every provider start and warm up");

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("provider_cache_hit");
    group.bench_function("ours/provider", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = stopwatch();
                for _ in 0..iters {
                    black_box(p.ours.provide_credentials().await.expect("a cache hit"));
                }
                started.elapsed()
            })
        });
    });
    // Diagnostic: the provider's cached value read synchronously (no future, no allocation),
    // what a hit could cost if `provide_credentials` answered hits with a ready future.
    group.bench_function("ours/peek (diagnostic)", |b| {
        b.iter(|| black_box(p.ours.fallback_on_interrupt().expect("cached credentials")));
    });
    group.bench_function("sdk/ecs+lazy", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = stopwatch();
                for _ in 0..iters {
                    black_box(p.sdk_lazy.resolve().await.expect("a cache hit"));
                }
                started.elapsed()
            })
        });
    });
    group.bench_function("client/one-liner+refresh_ahead", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = stopwatch();
                for _ in 0..iters {
                    black_box(p.client_ours.resolve().await.expect("a cache hit"));
                }
                started.elapsed()
            })
        });
    });
    group.bench_function("client/ecs+lazy", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = stopwatch();
                for _ in 0..iters {
                    black_box(p.client_sdk.resolve().await.expect("a cache hit"));
                }
                started.elapsed()
            })
        });
    });
    // Diagnostics: the two things a real client's hit cannot skip. The orchestrator takes an
    // owned `Identity` (a clone of the cached one, with its account-id and business-metric
    // properties in a map that the clone copies into a fresh allocation), and the cache reads
    // the client's clock to never serve an expired identity.
    let identity = runtime
        .block_on(p.client_ours.resolve())
        .expect("a cache hit");
    group.bench_function("floor/identity clone+drop (diagnostic)", |b| {
        b.iter(|| black_box(identity.clone()));
    });
    let clock = p.client_ours.time_source().clone();
    group.bench_function("floor/clock read (diagnostic)", |b| {
        b.iter(|| black_box(clock.now()));
    });
    group.bench_function("floor/all three (diagnostic)", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = stopwatch();
                for _ in 0..iters {
                    black_box(p.client_ours.floor(identity.clone()).await.expect("ready"));
                }
                started.elapsed()
            })
        });
    });
    group.finish();
    criterion.final_summary();
    drop(p);
}
