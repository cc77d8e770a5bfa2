//! The cache's tests: hits, flights, renewal, eviction, hostile pods, on paused time.

use pod_identity_core::eks_auth::EksAuthError;
use sha2::{Digest, Sha256};

use super::*;
use crate::test_support::{FakeSource, day_token, request, settle, token, wall_clock};

const HOUR: Duration = Duration::from_secs(60 * 60);
const MINUTE: Duration = Duration::from_secs(60);

/// A fake source and a cache in front of it with the test settings.
fn cache_and_source() -> (FakeSource, CredentialCache<FakeSource>) {
    let source = FakeSource::new(wall_clock());
    let cache = builder(&source).build();
    (source, cache)
}

/// The same, counting in metrics of its own.
fn cache_with_metrics() -> (FakeSource, Metrics, CredentialCache<FakeSource>) {
    let source = FakeSource::new(wall_clock());
    let metrics = Metrics::new();
    let cache = builder(&source).metrics(metrics.clone()).build();
    (source, metrics, cache)
}

fn builder(source: &FakeSource) -> CredentialCacheBuilder<FakeSource> {
    CredentialCache::builder(source.clone())
        .clock(wall_clock())
        .retry_interval(MINUTE, Duration::ZERO)
}

fn eks_error(code: &str, status: u16) -> SourceError {
    SourceError::EksAuth(EksAuthError::from_http(
        status,
        Some(code),
        Some("req"),
        br#"{"message":"m"}"#,
    ))
}

async fn key_id(cache: &CredentialCache<FakeSource>, token: &str) -> String {
    cache
        .get(&request(token))
        .await
        .expect("credentials")
        .credentials()
        .access_key_id
        .clone()
}

/// Moves tokio's clock (and the wall clock) by `by`, letting due tasks run.
/// Caches credentials for pods `p0`, `p1`, … (`pods` of them).
async fn fill(cache: &CredentialCache<FakeSource>, pods: usize) {
    for pod in 0..pods {
        key_id(cache, &day_token(&format!("p{pod}"))).await;
    }
}

/// Caches `token`'s credentials and times their first renewal out (credentials of an hour
/// renew at 55 min).
async fn fail_first_renewal(source: &FakeSource, cache: &CredentialCache<FakeSource>, token: &str) {
    key_id(cache, token).await;
    source.fail_next(SourceError::Timeout);
    advance(55 * MINUTE).await;
    assert_eq!(source.calls(), 2);
}

async fn advance(by: Duration) {
    tokio::time::advance(by).await;
    settle().await;
}

#[tokio::test(start_paused = true)]
async fn a_second_request_is_a_hit() {
    let (source, metrics, cache) = cache_with_metrics();
    let token = day_token("p");
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
    assert_eq!(source.calls(), 1);
    assert_eq!(cache.len(), 1);
    let text = metrics.encode();
    assert!(
        text.contains("pod_identity_cache_state{state=\"miss\"} 1"),
        "{text}"
    );
    // `hit` counts successful renewals (the reference's meaning), not cached reads.
    assert!(!text.contains("state=\"hit\""), "{text}");
    assert!(text.contains("pod_identity_cache_size 1"), "{text}");
}

async fn concurrent_requests_make_one_call(n: usize) {
    let (source, cache) = cache_and_source();
    let token = day_token("p");
    source.close();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..n {
        let cache = cache.clone();
        let request = request(&token);
        requests.spawn(async move { cache.get(&request).await });
    }
    settle().await;
    assert_eq!(source.calls(), 1);
    source.open();
    let mut answered = 0;
    while let Some(outcome) = requests.join_next().await {
        let issued = outcome.unwrap().unwrap();
        assert_eq!(issued.credentials().access_key_id, "ASIAFAKE1");
        answered += 1;
    }
    assert_eq!(answered, n);
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn sixteen_concurrent_requests_for_one_token_make_one_upstream_call() {
    concurrent_requests_make_one_call(16).await;
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_requests_for_one_token_make_one_upstream_call() {
    concurrent_requests_make_one_call(1000).await;
}

#[tokio::test(start_paused = true)]
async fn every_waiter_gets_the_error_of_the_single_call_and_the_next_request_retries() {
    let (source, cache) = cache_and_source();
    let token = day_token("p");
    source.close();
    source.fail_next(eks_error("AccessDeniedException", 403));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let cache = cache.clone();
        let request = request(&token);
        requests.spawn(async move { cache.get(&request).await });
    }
    settle().await;
    source.open();
    while let Some(outcome) = requests.join_next().await {
        let error = outcome.unwrap().unwrap_err();
        assert_eq!(error.code(), "AccessDeniedException");
    }
    assert_eq!(source.calls(), 1);
    assert!(cache.is_empty());
    // The irrecoverable answer is repeated for the refused-token time, without a call...
    let repeated = cache.get(&request(&token)).await.unwrap_err();
    assert_eq!(repeated.code(), "AccessDeniedException");
    assert_eq!(source.calls(), 1);
    // ...and then the next request calls again.
    advance(DEFAULT_REFUSED_TTL).await;
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE2");
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn recoverable_errors_are_not_remembered() {
    let (source, cache) = cache_and_source();
    let token = day_token("p");
    for (code, status) in [
        ("ThrottlingException", 429),
        ("InternalServerException", 500),
    ] {
        source.fail_next(eks_error(code, status));
        assert_eq!(cache.get(&request(&token)).await.unwrap_err().code(), code);
    }
    source.fail_next(SourceError::Timeout);
    assert!(cache.get(&request(&token)).await.is_err());
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE4");
    assert_eq!(source.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_refused_token_memory_is_per_token_and_can_be_turned_off() {
    let (source, cache) = cache_and_source();
    source.fail_always(Some(eks_error("InvalidTokenException", 400)));
    for pod in ["a", "b"] {
        for _ in 0..3 {
            assert!(cache.get(&request(&day_token(pod))).await.is_err());
        }
    }
    assert_eq!(source.calls(), 2, "one call per distinct token");

    let source = FakeSource::new(wall_clock());
    let cache = builder(&source).refused_ttl(Duration::ZERO).build();
    source.fail_always(Some(eks_error("InvalidTokenException", 400)));
    for _ in 0..3 {
        assert!(cache.get(&request(&day_token("a"))).await.is_err());
    }
    assert_eq!(source.calls(), 3);
}

fn from_client(token: &str, client: [u8; 4]) -> CredentialRequest {
    request(token).with_client(std::net::IpAddr::from(client))
}

#[tokio::test(start_paused = true)]
async fn unique_tokens_from_one_client_spend_its_miss_budget_and_not_the_others() {
    let (source, metrics, cache) = cache_with_metrics();
    let attacker = [10, 0, 0, 66];
    // Forged tokens: the upstream refuses each one.
    source.fail_always(Some(eks_error("InvalidTokenException", 400)));
    let mut limited = 0;
    for n in 0..100 {
        let outcome = cache
            .get(&from_client(&day_token(&format!("forged-{n}")), attacker))
            .await;
        if matches!(outcome, Err(SourceError::ClientMissBudget)) {
            limited += 1;
        }
    }
    assert_eq!(source.calls(), DEFAULT_CLIENT_MISS_BURST as usize);
    assert_eq!(limited, 100 - DEFAULT_CLIENT_MISS_BURST as usize);
    assert!(
        SourceError::ClientMissBudget.to_agent_error().status() == 429,
        "the client is told to slow down"
    );
    assert!(
        metrics
            .encode()
            .contains("pod_identity_requests_limited{reason=\"client_misses\"} 90"),
        "{}",
        metrics.encode()
    );
    // Another pod is not held to the attacker's budget.
    source.fail_always(None);
    assert!(
        cache
            .get(&from_client(&day_token("good"), [10, 0, 0, 7]))
            .await
            .is_ok()
    );
    // The attacker's budget refills at its rate.
    source.fail_always(Some(eks_error("InvalidTokenException", 400)));
    advance(Duration::from_secs(1)).await;
    let calls = source.calls();
    let _ = cache
        .get(&from_client(&day_token("forged-a"), attacker))
        .await;
    let second = cache
        .get(&from_client(&day_token("forged-b"), attacker))
        .await;
    assert_eq!(source.calls(), calls + 1);
    assert!(matches!(second, Err(SourceError::ClientMissBudget)));
}

#[tokio::test(start_paused = true)]
async fn hits_refused_tokens_and_calls_in_flight_cost_no_budget() {
    let source = FakeSource::new(wall_clock());
    let cache = builder(&source).client_miss_budget(1, 1).build();
    let client = [10, 0, 0, 1];
    let token = day_token("p");
    // A thousand concurrent requests for one token: one miss.
    source.close();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let cache = cache.clone();
        let request = from_client(&token, client);
        requests.spawn(async move { cache.get(&request).await });
    }
    settle().await;
    source.open();
    while let Some(outcome) = requests.join_next().await {
        assert!(outcome.unwrap().is_ok());
    }
    // Hits afterwards.
    for _ in 0..10 {
        assert!(cache.get(&from_client(&token, client)).await.is_ok());
    }
    assert_eq!(source.calls(), 1);
    // Budget spent: a new token is refused without a call.
    let other = cache.get(&from_client(&day_token("q"), client)).await;
    assert!(matches!(other, Err(SourceError::ClientMissBudget)));
    // Without a client address, nothing is held to a budget.
    assert!(cache.get(&request(&day_token("q"))).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_hung_upstream_call_is_cut_off_and_the_token_is_not_stuck() {
    let (source, cache) = cache_and_source();
    let token = day_token("p");
    source.close();
    let waiting = tokio::spawn({
        let cache = cache.clone();
        let request = request(&token);
        async move { cache.get(&request).await }
    });
    advance(DEFAULT_FETCH_TIMEOUT - Duration::from_millis(1)).await;
    assert!(!waiting.is_finished());
    advance(Duration::from_millis(1)).await;
    let outcome = waiting.await.unwrap();
    assert!(matches!(outcome, Err(SourceError::Timeout)), "{outcome:?}");
    source.open();
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE2");
}

#[tokio::test(start_paused = true)]
async fn request_path_calls_are_bounded_overall_and_the_rest_wait_their_turn() {
    let source = FakeSource::new(wall_clock());
    let cache = builder(&source).max_concurrent_fetches(2).build();
    source.close();
    let mut requests = tokio::task::JoinSet::new();
    for pod in 0..5 {
        let cache = cache.clone();
        let request = request(&day_token(&format!("p{pod}")));
        requests.spawn(async move { cache.get(&request).await });
    }
    settle().await;
    assert_eq!(source.calls(), 2, "two calls at once");
    source.open();
    while let Some(outcome) = requests.join_next().await {
        assert!(outcome.unwrap().is_ok());
    }
    assert_eq!(source.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn throttled_renewals_pause_every_renewal_and_back_off() {
    let source = FakeSource::new(wall_clock());
    // One renewal a second: without the pause, the three due together would start 1 s apart.
    let cache = builder(&source).renewal_qps(1).build();
    fill(&cache, 3).await;
    source.fail_always(Some(eks_error("ThrottlingException", 429)));
    advance(3 * HOUR).await;
    assert_eq!(source.calls(), 4, "the first renewal, throttled");
    advance(Duration::from_secs(1)).await;
    assert_eq!(source.calls(), 4, "paused for 2 s");
    advance(Duration::from_secs(1)).await;
    assert_eq!(source.calls(), 5, "the second renewal, throttled again");
    advance(Duration::from_secs(3)).await;
    assert_eq!(source.calls(), 5, "paused for 4 s now");
    advance(Duration::from_secs(1)).await;
    assert_eq!(source.calls(), 6);
    // A renewal that succeeds ends the backing off.
    source.fail_always(None);
    for _ in 0..600 {
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(cache.len(), 3, "every entry kept");
    let renewed = source.calls();
    assert_eq!(renewed, 9, "and renewed at its retry time");
    advance(3 * HOUR - 11 * MINUTE).await;
    assert_eq!(
        source.calls(),
        renewed,
        "nothing due before the next period"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_going_away_does_not_cancel_the_upstream_call() {
    let (source, cache) = cache_and_source();
    let token = day_token("p");
    source.close();
    let client = {
        let cache = cache.clone();
        let request = request(&token);
        tokio::spawn(async move { cache.get(&request).await })
    };
    settle().await;
    client.abort();
    assert!(client.await.unwrap_err().is_cancelled());
    source.open();
    settle().await;
    assert_eq!(cache.len(), 1);
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_least_recently_used_entry_goes_and_reads_count_as_use() {
    let source = FakeSource::new(wall_clock());
    let metrics = Metrics::new();
    let cache = builder(&source)
        .max_entries(2)
        .metrics(metrics.clone())
        .build();
    let (a, b, c) = (day_token("a"), day_token("b"), day_token("c"));
    key_id(&cache, &a).await;
    key_id(&cache, &b).await;
    // Reading `a` makes `b` the least recently used.
    key_id(&cache, &a).await;
    key_id(&cache, &c).await;
    assert_eq!(cache.len(), 2);
    assert_eq!(source.calls(), 3);
    key_id(&cache, &a).await;
    assert_eq!(source.calls(), 3, "a was kept");
    key_id(&cache, &b).await;
    assert_eq!(source.calls(), 4, "b was evicted");
    assert!(
        metrics
            .encode()
            .contains("pod_identity_cache_state{state=\"evicted\"} 2")
    );
}

#[tokio::test(start_paused = true)]
async fn renewal_happens_at_the_max_retention_for_long_lived_credentials() {
    let (source, metrics, cache) = cache_with_metrics();
    let token = day_token("p");
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
    advance(3 * HOUR - Duration::from_secs(1)).await;
    assert_eq!(source.calls(), 1);
    advance(Duration::from_secs(1)).await;
    assert_eq!(source.calls(), 2, "renewed at 3 h");
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE2");
    advance(3 * HOUR).await;
    assert_eq!(source.calls(), 3, "renewed again 3 h later");
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE3");
    let text = metrics.encode();
    assert!(
        text.contains("pod_identity_cache_state{state=\"hit\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("pod_identity_cache_state{state=\"miss\"} 1"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn renewal_happens_ahead_of_expiry_for_short_lived_credentials() {
    let source = FakeSource::new(wall_clock());
    // Chained-role credentials last 59 minutes: renewed 5 minutes before expiry.
    source.set_lifetime(59 * MINUTE);
    let cache = builder(&source).build();
    key_id(&cache, &day_token("p")).await;
    advance(54 * MINUTE - Duration::from_secs(1)).await;
    assert_eq!(source.calls(), 1);
    advance(Duration::from_secs(1)).await;
    assert_eq!(source.calls(), 2);

    // Very short lifetimes renew while the entry is still served (more than 15 s left):
    // 30 s credentials at 10 s, not at half-life when a request would find them stale.
    let brief = FakeSource::new(wall_clock());
    brief.set_lifetime(Duration::from_secs(30));
    let brief_cache = builder(&brief).build();
    key_id(&brief_cache, &day_token("r")).await;
    advance(Duration::from_secs(10) - Duration::from_millis(1)).await;
    assert_eq!(brief.calls(), 1);
    advance(Duration::from_millis(1)).await;
    assert_eq!(brief.calls(), 2, "renewed 20 s before expiry");
    assert_eq!(key_id(&brief_cache, &day_token("r")).await, "ASIAFAKE2");

    // Lifetimes under 10 minutes renew at half their life.
    let short = FakeSource::new(wall_clock());
    short.set_lifetime(2 * MINUTE);
    let short_cache = builder(&short).build();
    key_id(&short_cache, &day_token("q")).await;
    advance(MINUTE - Duration::from_secs(1)).await;
    assert_eq!(short.calls(), 1);
    advance(Duration::from_secs(1)).await;
    assert_eq!(short.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_recoverable_failure_keeps_serving_and_retries_until_15_seconds_before_expiry() {
    let source = FakeSource::new(wall_clock());
    source.set_lifetime(HOUR);
    let metrics = Metrics::new();
    let cache = builder(&source).metrics(metrics.clone()).build();
    let token = day_token("p");
    key_id(&cache, &token).await;
    source.fail_always(Some(eks_error("ThrottlingException", 429)));
    // Renewal due at 55 min fails; the old credentials are still served.
    advance(55 * MINUTE).await;
    assert_eq!(source.calls(), 2);
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
    // Retried a minute later (no jitter in this test), and again.
    advance(MINUTE).await;
    assert_eq!(source.calls(), 3);
    advance(MINUTE).await;
    assert_eq!(source.calls(), 4);
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
    // The last retry is at 15 s before expiry; when it fails the entry goes.
    advance(3 * MINUTE - Duration::from_secs(15)).await;
    assert_eq!(source.calls(), 5);
    assert!(cache.is_empty());
    let text = metrics.encode();
    assert!(
        text.contains(
            "pod_identity_cache_errors{type=\"Recoverable\",code=\"ThrottlingException\"} 4"
        ),
        "{text}"
    );
    // Recovered: the next request fetches anew.
    source.fail_always(None);
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE6");
}

#[tokio::test(start_paused = true)]
async fn a_retry_interval_longer_than_the_credentials_retries_at_the_last_moment() {
    let source = FakeSource::new(wall_clock());
    source.set_lifetime(HOUR);
    let cache = builder(&source)
        .retry_interval(Duration::MAX, Duration::from_secs(1))
        .build();
    let token = day_token("p");
    fail_first_renewal(&source, &cache, &token).await;
    advance(5 * MINUTE - Duration::from_secs(15)).await;
    assert_eq!(source.calls(), 3, "retried 15 s before expiry");
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE3");
}

#[test]
fn a_flight_whose_call_never_ran_does_not_block_its_token() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let (source, cache) = cache_and_source();
    let token = day_token("p");
    let first = runtime();
    let pending = request(&token);
    first.block_on(async {
        // Polled once: the flight is registered and its call spawned, but not run.
        tokio::select! {
            biased;
            _ = cache.get(&pending) => panic!("answered before the call ran"),
            () = std::future::ready(()) => {}
        }
    });
    // The runtime goes away with the call's task never polled.
    drop(first);
    assert_eq!(source.calls(), 0);
    runtime().block_on(async {
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
    });
}

#[tokio::test(start_paused = true)]
async fn a_recoverable_failure_then_success_renews() {
    let (source, cache) = cache_and_source();
    let token = day_token("p");
    key_id(&cache, &token).await;
    source.fail_next(SourceError::Timeout);
    advance(3 * HOUR).await;
    assert_eq!(source.calls(), 2);
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
    advance(MINUTE).await;
    assert_eq!(source.calls(), 3);
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE3");
}

#[tokio::test(start_paused = true)]
async fn retries_are_jittered_between_one_and_two_minutes() {
    let source = FakeSource::new(wall_clock());
    let cache = CredentialCache::builder(source.clone())
        .clock(wall_clock())
        .build();
    let token = day_token("p");
    key_id(&cache, &token).await;
    source.fail_always(Some(SourceError::Timeout));
    advance(3 * HOUR).await;
    assert_eq!(source.calls(), 2);
    advance(MINUTE - Duration::from_millis(1)).await;
    assert_eq!(source.calls(), 2, "not before a minute");
    advance(MINUTE + Duration::from_millis(1)).await;
    assert_eq!(source.calls(), 3, "within two minutes");
}

#[tokio::test(start_paused = true)]
async fn an_irrecoverable_failure_evicts() {
    for code in [
        ("AccessDeniedException", 403),
        ("ExpiredTokenException", 400),
        ("InvalidTokenException", 400),
        ("ResourceNotFoundException", 404),
    ] {
        let source = FakeSource::new(wall_clock());
        let metrics = Metrics::new();
        let cache = builder(&source).metrics(metrics.clone()).build();
        let token = day_token("p");
        key_id(&cache, &token).await;
        source.fail_next(eks_error(code.0, code.1));
        advance(3 * HOUR).await;
        assert_eq!(source.calls(), 2);
        assert!(cache.is_empty(), "{code:?}");
        advance(3 * HOUR).await;
        assert_eq!(source.calls(), 2, "no more renewals");
        let text = metrics.encode();
        assert!(
            text.contains(&format!(
                "pod_identity_cache_errors{{type=\"NonRecoverable\",code=\"{}\"}} 1",
                code.0
            )),
            "{text}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_not_renewed() {
    let (source, cache) = cache_and_source();
    // The token expires in 1 h; the credentials last 6 h and are due for renewal at 3 h.
    let token = token("p", HOUR);
    let kept = {
        key_id(&cache, &token).await;
        cache.kept_request(&request(&token)).unwrap()
    };
    advance(3 * HOUR).await;
    assert_eq!(source.calls(), 1, "no renewal with an expired token");
    assert!(cache.is_empty());
    assert!(kept.upgrade().is_none(), "the kept token was dropped");
}

#[tokio::test(start_paused = true)]
async fn an_entry_nobody_read_within_the_idle_time_is_not_renewed() {
    let source = FakeSource::new(wall_clock());
    let cache = builder(&source)
        .max_retention(30 * MINUTE)
        .idle_timeout(HOUR)
        .build();
    let token = day_token("p");
    key_id(&cache, &token).await;
    advance(30 * MINUTE).await;
    assert_eq!(source.calls(), 2, "read 30 min ago: renewed");
    advance(30 * MINUTE).await;
    assert_eq!(source.calls(), 2, "read 60 min ago: idle, evicted");
    assert!(cache.is_empty());

    // A pod that keeps reading keeps being renewed.
    let other = day_token("q");
    key_id(&cache, &other).await;
    for round in 0..6 {
        advance(30 * MINUTE).await;
        key_id(&cache, &other).await;
        assert_eq!(source.calls(), 4 + round);
    }
}

#[tokio::test(start_paused = true)]
async fn renewals_are_rate_limited() {
    let source = FakeSource::new(wall_clock());
    let cache = builder(&source).renewal_qps(2).build();
    fill(&cache, 10).await;
    assert_eq!(source.calls(), 10);
    advance(3 * HOUR).await;
    // A burst of 2, then one every half second.
    assert_eq!(source.calls(), 12);
    for expected in 13..=20 {
        advance(Duration::from_millis(499)).await;
        assert_eq!(source.calls(), expected - 1);
        advance(Duration::from_millis(1)).await;
        assert_eq!(source.calls(), expected);
    }
    advance(Duration::from_secs(10)).await;
    assert_eq!(source.calls(), 20);
}

#[tokio::test(start_paused = true)]
async fn eviction_drops_the_kept_token() {
    let source = FakeSource::new(wall_clock());
    let cache = builder(&source).max_entries(1).build();
    let a = day_token("a");
    key_id(&cache, &a).await;
    let kept = cache.kept_request(&request(&a)).unwrap();
    assert!(kept.upgrade().is_some());
    key_id(&cache, &day_token("b")).await;
    assert!(
        kept.upgrade().is_none(),
        "evicted: the token was dropped (and zeroized)"
    );
}

#[tokio::test(start_paused = true)]
async fn hits_by_raw_bytes_need_exact_bytes_and_survive_side_index_collisions() {
    let (_source, cache) = cache_and_source();
    let now = || wall_clock().now();
    let (a, b) = (day_token("a"), day_token("b"));
    key_id(&cache, &a).await;
    key_id(&cache, &b).await;
    let hit = |token: &str| {
        cache
            .cached(token.as_bytes(), now())
            .map(|answer| answer.unwrap().credentials().access_key_id.clone())
    };
    assert_eq!(hit(&a).as_deref(), Some("ASIAFAKE1"));
    assert_eq!(hit(&b).as_deref(), Some("ASIAFAKE2"));
    let mut near = a.clone().into_bytes();
    *near.last_mut().unwrap() ^= 1;
    assert!(cache.cached(&near, now()).is_none(), "one byte off: a miss");
    assert!(cache.cached(&a.as_bytes()[1..], now()).is_none());

    // A side-index collision: `b`'s hash made to point at `a`'s entry. `b` is still found
    // (by digest) and `a`'s entry is never served for it.
    let (a_key, b_key) = (TokenDigest::of(&request(&a)), TokenDigest::of(&request(&b)));
    {
        let mut state = cache.shared.lock();
        let b_hash = state.entries[&b_key].prehash;
        state.by_prehash.insert(b_hash, a_key);
    }
    assert_eq!(hit(&b).as_deref(), Some("ASIAFAKE2"));
    assert_eq!(hit(&a).as_deref(), Some("ASIAFAKE1"));
    // Evicting `b` leaves the index entry that is not its own.
    {
        let mut state = cache.shared.lock();
        let b_hash = state.entries[&b_key].prehash;
        state.remove(&b_key);
        assert!(state.by_prehash.get(&b_hash) == Some(&a_key));
        let a_hash = state.entries[&a_key].prehash;
        state.remove(&a_key);
        assert!(!state.by_prehash.contains_key(&a_hash));
    }
    assert!(hit(&a).is_none() && hit(&b).is_none());
}

#[tokio::test(start_paused = true)]
async fn keys_are_token_digests() {
    let token = day_token("p");
    let digest = TokenDigest::of(&request(&token));
    let expected: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    assert_eq!(digest.0, expected);
    assert_ne!(digest.0, TokenDigest::of(&request(&day_token("q"))).0);
}

#[tokio::test(start_paused = true)]
async fn fetched_credentials_about_to_expire_are_an_error_and_not_cached() {
    let source = FakeSource::new(wall_clock());
    source.set_lifetime(Duration::from_secs(15));
    let cache = builder(&source).build();
    let error = cache.get(&request(&day_token("p"))).await.unwrap_err();
    assert!(
        matches!(
            error,
            SourceError::ExpiringCredentials {
                remaining_millis: 15_000
            }
        ),
        "{error:?}"
    );
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn cached_credentials_are_not_served_in_their_last_15_seconds() {
    let source = FakeSource::new(wall_clock());
    source.set_lifetime(HOUR);
    // Renewal would be due at 55 min; make it fail so the entry ages.
    let cache = builder(&source)
        .retry_interval(HOUR, Duration::ZERO)
        .build();
    let token = day_token("p");
    fail_first_renewal(&source, &cache, &token).await;
    advance(5 * MINUTE - Duration::from_secs(16)).await;
    assert_eq!(
        key_id(&cache, &token).await,
        "ASIAFAKE1",
        "16 s left: served"
    );
    source.fail_next(SourceError::Timeout);
    advance(Duration::from_secs(1)).await;
    // The retry at 15 s before expiry failed and evicted; the request fetches anew.
    assert_eq!(key_id(&cache, &token).await, "ASIAFAKE4");
}

#[tokio::test(start_paused = true)]
async fn zero_size_or_retention_turns_caching_off() {
    for builder in [
        builder(&FakeSource::new(wall_clock())).max_entries(0),
        builder(&FakeSource::new(wall_clock())).max_retention(Duration::ZERO),
    ] {
        let cache = builder.build();
        assert!(!cache.is_enabled());
        let token = day_token("p");
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE2");
        assert!(cache.is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn the_renewal_task_ends_with_the_cache() {
    let (source, cache) = cache_and_source();
    key_id(&cache, &day_token("p")).await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    assert_eq!(tasks(), 1, "the renewal task runs");
    let weak = Arc::downgrade(&cache.shared);
    drop(cache);
    settle().await;
    assert!(weak.upgrade().is_none());
    assert_eq!(tasks(), 0, "the renewal task ended");
    advance(3 * HOUR).await;
    assert_eq!(source.calls(), 1);
}

#[test]
fn kept_times_validate_exactly_as_the_decoded_token() {
    use pod_identity_core::token::ServiceAccountToken;
    let unsigned_token =
        |claims: &str| crate::test_support::jwt(&serde_json::from_str(claims).unwrap());

    use super::entries::TokenTimes;
    let base = 1_700_000_000_i64;
    let claims = [
        r#"{}"#.to_owned(),
        format!(r#"{{"exp":{base}}}"#),
        format!(r#"{{"nbf":{base}}}"#),
        format!(r#"{{"exp":{base},"nbf":{}}}"#, base - 100),
        format!(r#"{{"exp":{},"nbf":{base}}}"#, base - 100),
        format!(r#"{{"exp":{base},"nbf":{base}}}"#),
    ];
    for claims in &claims {
        let token = ServiceAccountToken::decode(&unsigned_token(claims)).unwrap();
        let times = TokenTimes::of(&token);
        for offset in [-200_i64, -101, -100, -99, -1, 0, 1, 99, 100, 101] {
            for nanos in [0_u64, 999_999_999] {
                let secs = u64::try_from(base + offset).unwrap();
                let now = SystemTime::UNIX_EPOCH
                    + Duration::from_secs(secs)
                    + Duration::from_nanos(nanos);
                assert_eq!(
                    times.validate(now),
                    token.validate_time(now),
                    "{claims} at {offset}s {nanos}ns"
                );
            }
        }
    }
    // Each outcome is reached above (a table that never errs would prove nothing).
    let both = TokenTimes {
        exp: Some(base),
        nbf: Some(base + 10),
    };
    let at = |secs: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs());
    assert_eq!(
        both.validate(at(base + 1)),
        Err(TokenError::ExpiredAndNotValidYet)
    );
    assert_eq!(both.validate(at(base - 1)), Err(TokenError::NotValidYet));
}
