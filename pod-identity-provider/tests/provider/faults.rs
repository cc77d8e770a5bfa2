//! The provider against a faulty agent: down at start, down after a first success, restarting,
//! hanging, answering garbage or 429s. Last good credentials are served until they expire,
//! errors say what happened, and the background task backs off and recovers by itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use pod_identity_provider::{Env, ErrorKind, PodIdentityCredentialsProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A port on loopback that nothing listens on (for now).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A wiremock agent on exactly `addr` (to restart an agent where the provider expects it).
async fn agent_at(addr: SocketAddr, answer: ResponseTemplate) -> MockServer {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let server = MockServer::builder().listener(listener).start().await;
    Mock::given(method("GET"))
        .and(path("/v1/credentials"))
        .respond_with(answer)
        .mount(&server)
        .await;
    server
}

fn provider_for(addr: SocketAddr, clock: &ManualClock) -> pod_identity_provider::Builder {
    PodIdentityCredentialsProvider::builder()
        .env(Env::from_vars([
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://{addr}/v1/credentials"),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", TOKEN.to_owned()),
        ]))
        .time_source(clock.clone())
        .sleep_impl(clock.clone())
        .connect_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_millis(500))
}

/// The provider's own error behind a `CredentialsError`.
fn provider_error(
    error: &aws_credential_types::provider::error::CredentialsError,
) -> &pod_identity_provider::Error {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<pod_identity_provider::Error>())
        .expect("the provider's error")
}

/// Lets the clock jump once the refresh task has gone back to sleep.
async fn advance(clock: &ManualClock, by: Duration) {
    clock.settled().await;
    clock.advance(by);
    clock.settled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_down_at_start_is_a_clear_error_and_the_next_call_recovers() {
    let clock = ManualClock::new();
    let addr = free_port();
    let provider = provider_for(addr, &clock).build();

    let error = provider.credentials().await.unwrap_err();
    let inner = provider_error(&error);
    assert_eq!(inner.kind(), ErrorKind::Transport);
    assert_eq!(inner.to_string(), "could not connect to the agent");
    assert!(
        chain(&error).contains("could not connect to the agent"),
        "{}",
        chain(&error)
    );
    let metrics = provider.metrics();
    assert_eq!(
        (metrics.fetches, metrics.failures, metrics.retries),
        (1, 1, 2)
    );

    // The agent comes up (a DaemonSet pod starting after the workload): the next call works,
    // the failure was not remembered.
    let _agent = agent_at(addr, ok("AKID1", clock.now() + 6 * HOUR)).await;
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_down_after_a_first_success_then_back_the_refresh_recovers_by_itself() {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let addr = free_port();
    let agent = agent_at(addr, ok("AKID1", t0 + 6 * HOUR)).await;
    let provider = provider_for(addr, &clock).build();
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID1"
    );

    // The agent goes away (restarting, node drain) before the refresh is due.
    drop(agent);
    advance(&clock, 5 * HOUR + 31 * MINUTE).await;
    eventually("the first failed refresh", || async {
        provider.metrics().failures == 1
    })
    .await;
    // Callers keep getting the last good credentials at once.
    let served = ready_now(provider.credentials()).expect("a hit never waits");
    assert_eq!(served.unwrap().access_key_id(), "AKID1");

    // Backoff: 10 s doubling (5–10 s, then 10–20 s, ...), never sooner than half the delay.
    advance(&clock, 4 * SECOND).await;
    assert_eq!(provider.metrics().failures, 1, "retried before 5 s");
    advance(&clock, 6 * SECOND).await;
    eventually("the second failed refresh", || async {
        provider.metrics().failures == 2
    })
    .await;
    advance(&clock, 9 * SECOND).await;
    assert_eq!(provider.metrics().failures, 2, "retried before 10 s");
    advance(&clock, 11 * SECOND).await;
    eventually("the third failed refresh", || async {
        provider.metrics().failures == 3
    })
    .await;
    let served = ready_now(provider.credentials()).expect("a hit never waits");
    assert_eq!(served.unwrap().access_key_id(), "AKID1");
    assert!(provider.metrics().stale_serves >= 1);

    // The agent is back on the same address. Nobody calls: the background task recovers.
    let _agent = agent_at(addr, ok("AKID2", clock.now() + 6 * HOUR)).await;
    advance(&clock, 40 * SECOND).await;
    eventually("the background refresh", || async {
        provider.metrics().refreshes == 1
    })
    .await;
    let served = ready_now(provider.credentials()).expect("a hit never waits");
    assert_eq!(served.unwrap().access_key_id(), "AKID2");
    assert_eq!(provider.metrics().failures, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_expiry_surfaces_then_a_restarted_agent_serves_again() {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let addr = free_port();
    let agent = agent_at(addr, ok("AKID1", t0 + HOUR)).await;
    let provider = provider_for(addr, &clock).build();
    provider.credentials().await.unwrap();
    drop(agent);

    // Served until the real expiry, not a second longer.
    advance(&clock, HOUR - 2 * MINUTE).await;
    let served = tokio::time::timeout(Duration::from_secs(30), provider.credentials())
        .await
        .unwrap();
    assert_eq!(served.unwrap().access_key_id(), "AKID1");
    // To the expiry: the refresh task then has nothing left to refresh and waits to be woken.
    clock.settled().await;
    clock.advance(2 * MINUTE);
    let error = provider.credentials().await.unwrap_err();
    assert_eq!(provider_error(&error).kind(), ErrorKind::Transport);

    // Restarted agent: served again on the next call.
    let _agent = agent_at(addr, ok("AKID2", clock.now() + 6 * HOUR)).await;
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID2"
    );
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Answers good credentials.
    Good,
    /// Reads the request and never answers.
    Hang,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Resets the connection after reading the request.
    Reset,
}

/// A raw TCP agent whose behaviour the test switches; counts connections.
#[derive(Clone)]
struct RawAgent {
    behaviour: Arc<Mutex<Behaviour>>,
    credentials: Arc<Mutex<String>>,
    connections: Arc<AtomicUsize>,
    addr: SocketAddr,
}

impl RawAgent {
    async fn start(credentials: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent = Self {
            behaviour: Arc::new(Mutex::new(Behaviour::Good)),
            credentials: Arc::new(Mutex::new(credentials)),
            connections: Arc::default(),
            addr: listener.local_addr().unwrap(),
        };
        let shared = agent.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                tokio::spawn(async move {
                    loop {
                        let mut buf = vec![0; 16 * 1024];
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let behaviour = *shared.behaviour.lock().unwrap();
                        match behaviour {
                            Behaviour::Good => {
                                let body = shared.credentials.lock().unwrap().clone();
                                let response = format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                if stream.write_all(response.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            Behaviour::Hang => {
                                tokio::time::sleep(Duration::from_secs(60)).await;
                                return;
                            }
                            Behaviour::Garbage => {
                                let _ = stream.write_all(b"\x00\x01garbage\r\n\r\n").await;
                                return;
                            }
                            Behaviour::Reset => {
                                let _ = stream.set_zero_linger();
                                return;
                            }
                        }
                    }
                });
            }
        });
        agent
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_garbage_and_resets_are_bounded_transport_errors_and_the_task_recovers() {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let agent = RawAgent::start(credentials_json("AKID1", t0 + 6 * HOUR)).await;
    let provider = provider_for(agent.addr, &clock).build();
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID1"
    );

    // A cold provider against each fault: 3 attempts, each bounded by the timeouts.
    for (behaviour, text) in [
        (Behaviour::Hang, "timed out talking to the agent"),
        (Behaviour::Garbage, "the request to the agent failed"),
        (Behaviour::Reset, "the request to the agent failed"),
    ] {
        agent.set(behaviour);
        let cold = provider_for(agent.addr, &clock).build();
        let before = agent.connections();
        let error = tokio::time::timeout(Duration::from_secs(20), cold.credentials())
            .await
            .expect("bounded by 3 × (connect + read timeout)")
            .unwrap_err();
        let inner = provider_error(&error);
        assert_eq!(inner.kind(), ErrorKind::Transport, "{behaviour:?}");
        assert_eq!(inner.to_string(), text, "{behaviour:?}");
        let attempts = agent.connections() - before;
        assert!((1..=3).contains(&attempts), "{behaviour:?}: {attempts}");
        assert_eq!(cold.metrics().retries, 2, "{behaviour:?}");
    }

    // The warm provider through a hanging agent: the refresh fails, callers are served.
    agent.set(Behaviour::Hang);
    advance(&clock, 5 * HOUR + 31 * MINUTE).await;
    eventually("a failed refresh", || async {
        provider.metrics().failures == 1
    })
    .await;
    let served = ready_now(provider.credentials()).expect("a hit never waits");
    assert_eq!(served.unwrap().access_key_id(), "AKID1");

    // The agent recovers: the next background attempt (within 10 s) refreshes.
    *agent.credentials.lock().unwrap() = credentials_json("AKID2", clock.now() + 6 * HOUR);
    agent.set(Behaviour::Good);
    advance(&clock, 10 * SECOND).await;
    eventually("the recovered refresh", || async {
        provider.metrics().refreshes == 1
    })
    .await;
    let served = ready_now(provider.credentials()).expect("a hit never waits");
    assert_eq!(served.unwrap().access_key_id(), "AKID2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bodies_and_429s_are_retried_then_reported_and_last_good_is_served() {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let answer = Switch::new(ok("AKID1", t0 + 6 * HOUR));
    let server = agent(answer.clone()).await;
    let warm = provider(&server, &clock);
    warm.credentials().await.unwrap();

    let cases = [
        (
            ResponseTemplate::new(200).set_body_string("<html>captive portal</html>"),
            ErrorKind::MalformedResponse,
            "the agent answered 200 OK with a body that is not credentials",
            3,
        ),
        (
            ResponseTemplate::new(200).set_body_string(r#"{"AccessKeyId":"AKID","#),
            ErrorKind::MalformedResponse,
            "the agent answered 200 OK with a body that is not credentials",
            3,
        ),
        (
            ResponseTemplate::new(429)
                .insert_header("retry-after", "2")
                .set_body_string("Too Many Requests\n"),
            ErrorKind::AgentStatus,
            "the agent answered 429 Too Many Requests: Too Many Requests",
            3,
        ),
        (
            ResponseTemplate::new(400).set_body_string(
                "Service account token failed basic claim validations: token is expired\n",
            ),
            ErrorKind::AgentStatus,
            "the agent answered 400 Bad Request: Service account token failed basic claim validations: token is expired",
            1,
        ),
        (
            ResponseTemplate::new(200).set_body_string(r#"{"Code":"AccessDenied","Message":"no"}"#),
            ErrorKind::AgentError,
            "the agent answered with error code `AccessDenied`: no",
            1,
        ),
    ];
    for (response, kind, text, attempts) in cases {
        answer.set(response);
        let cold = provider(&server, &clock);
        let before = requests(&server).await;
        let sleeps_before = clock.instant_sleeps().len();
        let error = cold.credentials().await.unwrap_err();
        let inner = provider_error(&error);
        assert_eq!((inner.kind(), inner.to_string().as_str()), (kind, text));
        assert_eq!(requests(&server).await - before, attempts, "{text}");
        if kind == ErrorKind::AgentStatus && inner.status() == Some(429) {
            // Retry-After honoured on each retry.
            let sleeps = &clock.instant_sleeps()[sleeps_before..];
            assert_eq!(sleeps.len(), 2, "{sleeps:?}");
            assert!(sleeps.iter().all(|s| *s >= 2 * SECOND), "{sleeps:?}");
        }
        // The warm provider is unaffected: a cache hit, no request.
        let served = ready_now(warm.credentials()).expect("a hit never waits");
        assert_eq!(served.unwrap().access_key_id(), "AKID1");
    }

    // 429s through the refresh: served last good, then recovered.
    answer.set(ResponseTemplate::new(429).set_body_string("Too Many Requests\n"));
    advance(&clock, 5 * HOUR + 31 * MINUTE).await;
    eventually("a throttled refresh", || async {
        warm.metrics().failures >= 1
    })
    .await;
    let served = ready_now(warm.credentials()).expect("a hit never waits");
    assert_eq!(served.unwrap().access_key_id(), "AKID1");
    answer.set(ok("AKID2", clock.now() + 6 * HOUR));
    advance(&clock, 10 * SECOND).await;
    eventually("the refresh after throttling", || async {
        warm.metrics().refreshes == 1
    })
    .await;
    assert_eq!(
        ready_now(warm.credentials())
            .unwrap()
            .unwrap()
            .access_key_id(),
        "AKID2"
    );
}
