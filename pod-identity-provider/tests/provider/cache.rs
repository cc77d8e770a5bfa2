//! The refresh-ahead cache behind the provider, driven by a manual clock.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use pod_identity_provider::PodIdentityCredentialsProvider;
use wiremock::ResponseTemplate;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_inside_the_advisory_window_without_blocking_callers() {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let server = agent(Script::new([
        ok("AKID1", t0 + 6 * HOUR),
        ok("AKID2", t0 + 12 * HOUR),
    ]))
    .await;
    let provider = provider(&server, &clock);
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID1"
    );

    // 6 h credentials: the advisory window is 60 min, the refresh lands in its first half,
    // so between 5 h and 5 h 30 min after the fetch. Nothing happens before.
    for step in [HOUR, 3 * HOUR, 59 * MINUTE] {
        clock.settled().await;
        clock.advance(step);
        clock.settled().await;
        let served = ready_now(provider.credentials()).expect("a cache hit never waits");
        assert_eq!(served.unwrap().access_key_id(), "AKID1");
    }
    assert_eq!(
        requests(&server).await,
        1,
        "no refresh before the advisory window"
    );

    // Past the latest refresh point: the background task refreshes, callers keep being
    // answered at once, first with the old credentials, then with the new ones.
    clock.settled().await;
    clock.advance(31 * MINUTE);
    eventually("the background refresh", || async {
        let served = ready_now(provider.credentials()).expect("a cache hit never waits");
        served.unwrap().access_key_id() == "AKID2"
    })
    .await;
    assert_eq!(requests(&server).await, 2);
    let metrics = provider.metrics();
    assert_eq!(metrics.refreshes, 1);
    assert_eq!(metrics.fetches, 2);
    assert_eq!(metrics.failures, 0);
    // Returned with the real expiry.
    assert_eq!(
        provider.credentials().await.unwrap().expiry(),
        Some(t0 + 12 * HOUR)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_credentials_use_the_short_window() {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let server = agent(Script::new([
        ok("AKID1", t0 + 15 * MINUTE),
        ok("AKID2", t0 + 30 * MINUTE),
    ]))
    .await;
    let provider = provider(&server, &clock);
    provider.credentials().await.unwrap();
    // ≤ 20 min lifetime: 5 min window, refresh between 10 and 12.5 min. The clock stops at
    // least `INSTANT_BELOW` short of the earliest point: the task's next sleep is then a real one.
    clock.settled().await;
    clock.advance(10 * MINUTE - INSTANT_BELOW);
    clock.settled().await;
    assert_eq!(requests(&server).await, 1);
    clock.settled().await;
    clock.advance(2 * MINUTE + 30 * SECOND + INSTANT_BELOW);
    eventually("the refresh", || async { requests(&server).await == 2 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_last_good_credentials_through_an_agent_outage() {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let agent_answer = Switch::new(ok("AKID1", t0 + 6 * HOUR));
    let server = agent(agent_answer.clone()).await;
    let provider = provider(&server, &clock);
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID1"
    );

    // The agent goes down before the refresh is due.
    agent_answer.set(ResponseTemplate::new(503).set_body_string("down"));
    clock.settled().await;
    clock.advance(5 * HOUR + 31 * MINUTE);
    eventually("a failed refresh", || async {
        provider.metrics().failures >= 1
    })
    .await;
    let before = requests(&server).await;
    assert_eq!(before, 1 + 3, "one refresh = three attempts");
    let served = ready_now(provider.credentials()).expect("never waits while valid");
    assert_eq!(served.unwrap().access_key_id(), "AKID1");
    assert!(provider.metrics().stale_serves >= 1);

    // The failed refresh is retried with backoff (10 s doubling, equal jitter).
    clock.settled().await;
    clock.advance(11 * SECOND);
    eventually("a retried refresh", || async {
        requests(&server).await > before
    })
    .await;

    // Still down in the last minute: callers still get the last good credentials.
    clock.settled().await;
    clock.advance(6 * HOUR - (5 * HOUR + 31 * MINUTE + 11 * SECOND) - 30 * SECOND);
    let served = tokio::time::timeout(Duration::from_secs(30), provider.credentials())
        .await
        .expect("bounded by the expiry");
    assert_eq!(served.unwrap().access_key_id(), "AKID1");

    // After the real expiry nothing valid is left: the outage becomes visible.
    clock.settled().await;
    clock.advance(31 * SECOND);
    let error = provider.credentials().await.unwrap_err();
    assert!(chain(&error).contains("503"), "{}", chain(&error));

    // The agent recovers: the next call loads new credentials.
    agent_answer.set(ok("AKID2", clock.now() + 6 * HOUR));
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_callers_share_one_request() {
    let clock = ManualClock::new();
    let server =
        agent(ok("AKID", clock.now() + 6 * HOUR).set_delay(Duration::from_millis(300))).await;
    let provider = provider(&server, &clock);
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.credentials().await })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap().access_key_id(), "AKID");
    }
    assert_eq!(requests(&server).await, 1);
    assert_eq!(provider.metrics().fetches, 1);
}

/// A test that awaited many tasks may end with its task's cooperative budget spent; dropping the
/// agent then must not spin (see [`Agent`]).
#[test]
fn the_agent_is_dropped_after_its_test_spent_the_task_budget() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let server = agent(ok("AKID", ManualClock::new().now() + HOUR)).await;
            // A fresh budget (128 units), then all of it.
            tokio::task::yield_now().await;
            for _ in 0..128 {
                tokio::task::consume_budget().await;
            }
            drop(server);
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the agent was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_callers_share_a_failure_too() {
    let clock = ManualClock::new();
    let server = agent(
        ResponseTemplate::new(403)
            .set_body_string("no")
            .set_delay(Duration::from_millis(300)),
    )
    .await;
    let provider = provider(&server, &clock);
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.credentials().await })
        })
        .collect();
    for caller in callers {
        assert!(caller.await.unwrap().is_err());
    }
    assert_eq!(requests(&server).await, 1);
    // A later call tries again rather than remembering the failure.
    assert!(provider.credentials().await.is_err());
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_clone_ends_the_refresh_task() {
    let clock = ManualClock::new();
    let server = agent(ok("AKID", clock.now() + 6 * HOUR)).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    let provider = provider(&server, &clock);
    let clone = provider.clone();
    provider.credentials().await.unwrap();
    assert!(
        metrics.num_alive_tasks() > baseline,
        "the refresh task runs"
    );

    drop(provider);
    clock.settled().await;
    assert!(
        metrics.num_alive_tasks() > baseline,
        "a clone keeps it alive"
    );
    assert!(ready_now(clone.credentials()).is_some());

    drop(clone);
    eventually("the refresh task to end", || async {
        metrics.num_alive_tasks() == baseline
    })
    .await;
    // And nothing refreshes any more: no task is left to do it.
    clock.advance(6 * HOUR);
    assert!(!clock.has_sleeper(), "nothing waits on the clock");
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_mandatory_window_a_caller_is_answered_at_once_while_the_refresh_is_in_flight() {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let agent_answer = Switch::new(ok("AKID1", t0 + 10 * MINUTE));
    let server = agent(agent_answer.clone()).await;
    let provider = Arc::new(provider(&server, &clock));
    provider.credentials().await.unwrap();

    // A slow agent: the refresh is in flight when we enter the last minute.
    agent_answer.set(ok("AKID2", t0 + 2 * HOUR).set_delay(Duration::from_millis(500)));
    clock.settled().await;
    clock.advance(9 * MINUTE + 30 * SECOND);
    eventually("the refresh to start", || async {
        requests(&server).await == 2
    })
    .await;
    // The old credentials are valid for 30 s more: no waiting for the refresh in flight.
    let served = ready_now(provider.credentials()).expect("never waits while valid");
    assert_eq!(served.unwrap().access_key_id(), "AKID1");
    assert!(provider.metrics().stale_serves >= 1, "counted as stale");
    eventually("the refreshed credentials", || async {
        let served = ready_now(provider.credentials()).expect("never waits while valid");
        served.unwrap().access_key_id() == "AKID2"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_agent_never_makes_a_caller_wait() {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let agent_answer = Switch::new(ok("AKID1", t0 + 10 * MINUTE));
    let server = agent(agent_answer.clone()).await;
    let provider = provider(&server, &clock);
    provider.credentials().await.unwrap();

    // The agent fails, slowly: every attempt of a refresh is in flight for 200 ms.
    agent_answer.set(status(500, "down").set_delay(Duration::from_millis(200)));
    clock.settled().await;
    // Past the refresh point and inside the mandatory window (30 s left).
    clock.advance(9 * MINUTE + 30 * SECOND);
    let calls_during_a_flight = std::cell::Cell::new(0);
    for failures_seen in 0u64..3 {
        // Call continuously while the background refresh (3 attempts) runs and fails; the
        // first one with no failure seen yet, the later ones after failures.
        let flight_seen = std::cell::Cell::new(false);
        eventually(&format!("refresh {failures_seen} to fail"), || async {
            let failures = provider.metrics().failures;
            let in_flight = requests(&server).await as u64 > 1 + 3 * failures_seen;
            let served = ready_now(provider.credentials()).expect("a failing agent never blocks");
            assert_eq!(served.unwrap().access_key_id(), "AKID1");
            if failures > failures_seen {
                return true;
            }
            if in_flight {
                flight_seen.set(true);
                calls_during_a_flight.set(calls_during_a_flight.get() + 1);
            }
            false
        })
        .await;
        let flight_seen = flight_seen.get();
        assert!(
            flight_seen,
            "refresh {failures_seen} was never seen in flight"
        );
        eventually("the failed refresh", || async {
            provider.metrics().failures == failures_seen + 1
        })
        .await;
        // The background retry comes after 5–10 s (capped by half the time left).
        clock.settled().await;
        clock.advance(10 * SECOND);
    }
    let calls_during_a_flight = calls_during_a_flight.get();
    assert!(calls_during_a_flight > 0);
    assert!(provider.metrics().stale_serves >= calls_during_a_flight);
    assert_eq!(provider.metrics().refreshes, 0);
}

/// A provider (agent answering AKID1, then AKID2) whose first use ran on a short-lived runtime,
/// as in a test harness or a CLI's helper runtime: its refresh task went away with it.
async fn first_used_on_a_runtime_that_is_gone(
    clock: &ManualClock,
) -> (Agent, PodIdentityCredentialsProvider) {
    let t0 = clock.now();
    let server = agent(Script::new([
        ok("AKID1", t0 + 6 * HOUR),
        ok("AKID2", t0 + 12 * HOUR),
    ]))
    .await;
    let provider = provider(&server, clock);
    let first = provider.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(first.credentials()).unwrap();
    })
    .join()
    .unwrap();
    (server, provider)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_task_restarts_when_its_runtime_went_away() {
    let clock = ManualClock::new();
    let (_server, provider) = first_used_on_a_runtime_that_is_gone(&clock).await;

    // The runtime and its refresh task are gone: nothing runs while the clock moves.
    clock.advance(5 * HOUR + 31 * MINUTE);
    // The hit past the refresh point starts a new task on this runtime, which refreshes.
    let served = ready_now(provider.credentials()).expect("a hit never waits");
    assert_eq!(served.unwrap().access_key_id(), "AKID1");
    eventually("the refresh on the new runtime", || async {
        provider.credentials().await.unwrap().access_key_id() == "AKID2"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_the_mandatory_window_restarts_a_refresh_task_that_went_away() {
    let clock = ManualClock::new();
    let (_server, provider) = first_used_on_a_runtime_that_is_gone(&clock).await;

    // The first call after the runtime is gone comes in the last minute before expiry: it is
    // answered (old or new credentials) and a refresh follows.
    clock.advance(6 * HOUR - 30 * SECOND);
    provider.credentials().await.unwrap();
    eventually("the refresh on the new runtime", || async {
        provider.credentials().await.unwrap().access_key_id() == "AKID2"
    })
    .await;
}

#[tokio::test]
async fn a_warm_hit_through_the_sdk_trait_is_a_ready_future() {
    use aws_credential_types::provider::ProvideCredentials;

    let clock = ManualClock::new();
    let server = agent(ok("AKID", clock.now() + 6 * HOUR)).await;
    let provider = provider(&server, &clock);
    // Cold: the trait has to hand out a (boxed) future that fetches.
    let cold = provider.provide_credentials();
    assert!(format!("{cold:?}").contains("Later"), "{cold:?}");
    cold.await.unwrap();
    // Warm: an already-completed future, no box.
    let warm = provider.provide_credentials();
    let shown = format!("{warm:?}");
    assert!(shown.contains("Now {"), "{shown}");
    assert_eq!(warm.await.unwrap().access_key_id(), "AKID");
}
