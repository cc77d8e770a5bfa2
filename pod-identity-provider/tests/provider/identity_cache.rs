//! `RefreshAheadCache` driven directly through `ResolveCachedIdentity`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::identity::{
    Identity, IdentityFuture, ResolveCachedIdentity, ResolveIdentity, SharedIdentityResolver,
};
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::config_bag::ConfigBag;
use pod_identity_provider::RefreshAheadCache;

/// A resolver that counts its calls and vends `AKID<n>` valid for `lifetime`.
#[derive(Debug, Clone)]
struct Counting {
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    clock: ManualClock,
    lifetime: Duration,
    delay: Duration,
}

impl Counting {
    fn new(clock: &ManualClock, lifetime: Duration) -> Self {
        Self {
            calls: Arc::default(),
            failing: Arc::default(),
            clock: clock.clone(),
            lifetime,
            delay: Duration::ZERO,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ResolveIdentity for Counting {
    fn resolve_identity<'a>(
        &'a self,
        _: &'a RuntimeComponents,
        _: &'a ConfigBag,
    ) -> IdentityFuture<'a> {
        IdentityFuture::new(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err("resolver is down".into());
            }
            let expiry = self.clock.now() + self.lifetime;
            let credentials =
                Credentials::new(format!("AKID{n}"), "secret", None, Some(expiry), "test");
            Ok(Identity::new(credentials, Some(expiry)))
        })
    }
}

fn akid(identity: &Identity) -> String {
    identity
        .data::<Credentials>()
        .expect("credentials identity")
        .access_key_id()
        .to_owned()
}

fn components(clock: &ManualClock, cache: Option<&RefreshAheadCache>) -> RuntimeComponents {
    let builder = RuntimeComponentsBuilder::for_tests()
        .with_time_source(Some(clock.clone()))
        .with_sleep_impl(Some(clock.clone()));
    match cache {
        Some(cache) => builder.with_identity_cache(Some(cache.clone())),
        None => builder,
    }
    .build()
    .expect("test components are complete")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_separate_and_refresh_ahead() {
    let clock = ManualClock::new();
    let cache = RefreshAheadCache::new();
    let rc = components(&clock, None);
    let bag = ConfigBag::base();
    let first = Counting::new(&clock, HOUR);
    let second = Counting::new(&clock, 6 * HOUR);
    let r1 = SharedIdentityResolver::new(first.clone());
    let r2 = SharedIdentityResolver::new(second.clone());

    for _ in 0..3 {
        assert_eq!(
            akid(
                &cache
                    .resolve_cached_identity(r1.clone(), &rc, &bag)
                    .await
                    .unwrap()
            ),
            "AKID1"
        );
        assert_eq!(
            akid(
                &cache
                    .resolve_cached_identity(r2.clone(), &rc, &bag)
                    .await
                    .unwrap()
            ),
            "AKID1"
        );
    }
    assert_eq!((first.calls(), second.calls()), (1, 1));

    // 60 min lifetime: 15 min window, refresh between 45 and 52.5 min; only the first partition.
    clock.settled_tasks(2).await;
    clock.advance(44 * MINUTE);
    // Nobody asked for 44 minutes: both partitions idle, and park.
    clock.handled().await;
    assert_eq!(first.calls(), 1);
    clock.advance(9 * MINUTE);
    eventually("the background refresh", || async {
        let identity = ready_now(cache.resolve_cached_identity(r1.clone(), &rc, &bag))
            .expect("never waits while valid")
            .unwrap();
        akid(&identity) == "AKID2"
    })
    .await;
    assert_eq!(second.calls(), 1);
    assert_eq!(cache.metrics().refreshes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_callers_share_one_resolve() {
    let clock = ManualClock::new();
    let cache = RefreshAheadCache::new();
    let mut slow = Counting::new(&clock, HOUR);
    slow.delay = Duration::from_millis(200);
    let resolver = SharedIdentityResolver::new(slow.clone());
    let callers: Vec<_> = (0..200)
        .map(|_| {
            let (cache, resolver, clock) = (cache.clone(), resolver.clone(), clock.clone());
            tokio::spawn(async move {
                let rc = components(&clock, None);
                let bag = ConfigBag::base();
                akid(
                    &cache
                        .resolve_cached_identity(resolver, &rc, &bag)
                        .await
                        .unwrap(),
                )
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap(), "AKID1");
    }
    assert_eq!(slow.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_refresh_keeps_serving_until_expiry() {
    let clock = ManualClock::new();
    let cache = RefreshAheadCache::builder().idle_after(2 * HOUR).build();
    let rc = components(&clock, None);
    let bag = ConfigBag::base();
    let flaky = Counting::new(&clock, HOUR);
    let resolver = SharedIdentityResolver::new(flaky.clone());
    cache
        .resolve_cached_identity(resolver.clone(), &rc, &bag)
        .await
        .unwrap();

    flaky.failing.store(true, Ordering::SeqCst);
    clock.settled().await;
    clock.advance(53 * MINUTE);
    eventually("a failed refresh", || async {
        cache.metrics().failures >= 1
    })
    .await;
    let identity = ready_now(cache.resolve_cached_identity(resolver.clone(), &rc, &bag))
        .expect("never waits while valid")
        .unwrap();
    assert_eq!(akid(&identity), "AKID1");

    // The failed refresh's retry waits on the clock.
    clock.settled().await;
    clock.advance(8 * MINUTE);
    let error = cache
        .resolve_cached_identity(resolver.clone(), &rc, &bag)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("resolver is down"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_stops_refreshing_until_asked_again() {
    let clock = ManualClock::new();
    let cache = RefreshAheadCache::builder().idle_after(10 * MINUTE).build();
    let rc = components(&clock, None);
    let bag = ConfigBag::base();
    let resolver_state = Counting::new(&clock, HOUR);
    let resolver = SharedIdentityResolver::new(resolver_state.clone());
    cache
        .resolve_cached_identity(resolver.clone(), &rc, &bag)
        .await
        .unwrap();

    // Nobody asks for 53 minutes: the refresh point passes without a refresh.
    clock.settled().await;
    clock.advance(53 * MINUTE);
    clock.handled().await;
    assert_eq!(resolver_state.calls(), 1);

    // A caller gets the still-valid identity at once and wakes the refresh.
    let identity = ready_now(cache.resolve_cached_identity(resolver.clone(), &rc, &bag))
        .expect("never waits while valid")
        .unwrap();
    assert_eq!(akid(&identity), "AKID1");
    eventually("the woken refresh", || async {
        resolver_state.calls() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_cache_ends_its_tasks_even_when_components_hold_it() {
    let clock = ManualClock::new();
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let cache = RefreshAheadCache::new();
    // As in a real client: the runtime components hold the cache itself.
    let rc = components(&clock, Some(&cache));
    let bag = ConfigBag::base();
    for _ in 0..3 {
        let resolver = SharedIdentityResolver::new(Counting::new(&clock, HOUR));
        cache
            .resolve_cached_identity(resolver, &rc, &bag)
            .await
            .unwrap();
    }
    assert!(
        metrics.num_alive_tasks() >= baseline + 3,
        "one task per partition"
    );
    drop(rc);
    drop(cache);
    eventually("every partition task to end", || async {
        metrics.num_alive_tasks() == baseline
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_resolver_times_out() {
    let clock = ManualClock::new();
    let cache = RefreshAheadCache::builder().load_timeout(MINUTE).build();
    let mut hung = Counting::new(&clock, HOUR);
    hung.delay = Duration::from_secs(3600);
    let resolver = SharedIdentityResolver::new(hung);
    let load = {
        let (cache, clock) = (cache.clone(), clock.clone());
        tokio::spawn(async move {
            let rc = components(&clock, None);
            let bag = ConfigBag::base();
            cache
                .resolve_cached_identity(resolver, &rc, &bag)
                .await
                .map(|_| ())
        })
    };
    // The load waits on its timeout.
    clock.settled().await;
    clock.advance(MINUTE);
    let error = tokio::time::timeout(Duration::from_secs(10), load)
        .await
        .expect("the load timeout ends the load")
        .unwrap()
        .unwrap_err();
    assert!(error.to_string().contains("timed out"), "{error}");
}
