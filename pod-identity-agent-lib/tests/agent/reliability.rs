//! The agent under upstream faults, over real loopback HTTP: EKS Auth (the SigV4-verifying
//! simulator, wiremock, or a raw TCP server that misbehaves) answers errors, hangs, resets,
//! garbage, expired or incomplete credentials, and flaps; the node's signing credentials
//! rotate; the agent shuts down with requests in flight.
//!
//! Every case checks the status of contracts §6, that cached credentials keep being served,
//! and that the upstream calls stay bounded (counted at the upstream).
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, future};
use aws_sdk_eksauth::config::Credentials;
use pod_identity_core::eks_auth::EksAuthErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::http::{access_key, credentials as http};
use crate::support::{
    AgentBuilder, CredentialCache, EksAuthSource, EksAuthSourceBuilder, Serving, SharedTimeSource,
    TimeSource, Times, Upstream, eks_auth_source, eks_error, eventually, hex_digest, minted_token,
    now, ok, serve_agent, serve_blocks, simulator, success_body,
};

/// A minted token for pod `pod` of `default/app`, valid for a day.
fn token(pod: &str) -> String {
    minted_token("app", pod)
}

/// An EKS Auth source for `endpoint`, signing with the node key.
fn source(endpoint: &str, attempts: u32, attempt_timeout: Duration) -> EksAuthSourceBuilder {
    eks_auth_source(endpoint)
        .aws_client(|aws| aws.max_attempts(attempts).attempt_timeout(attempt_timeout))
}

/// The assembled agent (reference defaults) around `source`.
async fn start_agent(source: EksAuthSource) -> Serving {
    serve_agent(AgentBuilder::new("demo".parse().unwrap(), source)).await
}

/// The assembled agent around an EKS Auth source for `endpoint`.
async fn agent_for(endpoint: &str, attempts: u32, attempt_timeout: Duration) -> Serving {
    start_agent(
        source(endpoint, attempts, attempt_timeout)
            .build()
            .await
            .unwrap(),
    )
    .await
}

/// A wall clock that can be moved ahead of the system clock (expirations only; schedules run
/// on tokio's clock).
#[derive(Clone, Debug, Default)]
struct AheadClock(Arc<AtomicU64>);

impl AheadClock {
    fn set_ahead(&self, by: Duration) {
        self.0.store(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl TimeSource for AheadClock {
    fn now(&self) -> SystemTime {
        now() + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

// ---------------------------------------------------------------------------------------------
// EKS Auth errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_eks_auth_error_gets_its_status_and_retries_stay_within_three_attempts() {
    let (simulator, server) = simulator(&["app"]).await;
    let agent = agent_for(&server.endpoint_url(), 3, Duration::from_secs(10)).await;
    for code in EksAuthErrorCode::MODELED {
        simulator.fail(code.clone(), Times::Always);
        simulator.reset_counts();
        let (status, body) = agent.get(&token(code.as_str())).await;
        assert_eq!(status, code.status(), "{code}: {body}");
        assert!(
            body.contains(&format!("]: ({code}): Injected by the simulator")),
            "{body}"
        );
        assert!(
            body.ends_with(&format!(", fault: {}\n", code.fault().as_str())),
            "{body}"
        );
        // The SDK's standard mode retries throttling and 5xx (3 attempts), nothing else.
        let expected = if code.is_retryable() { 3 } else { 1 };
        assert_eq!(simulator.request_count(), expected, "{code}");
    }
    // A status EKS Auth does not model, without any error code: its status, `UnknownError`.
    simulator.fail_with(
        pod_identity_core::eks_auth::EksAuthError::new(
            EksAuthErrorCode::from_raw("TeapotException"),
            418,
            "short and stout",
        ),
        Times::Always,
    );
    let (status, body) = agent.get(&token("teapot")).await;
    assert_eq!(status, 418, "{body}");
    assert!(
        body.contains("(TeapotException): short and stout"),
        "{body}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_and_answered_429_when_it_persists() {
    let (upstream, eks) = Upstream::start(eks_error(429, "ThrottlingException")).await;
    let agent = agent_for(&eks.uri(), 3, Duration::from_secs(10)).await;
    let (status, body) = agent.get(&token("throttled")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            429,
            "[req-1]: (ThrottlingException): ThrottlingException happened, fault: client\n"
        )
    );
    assert_eq!(upstream.calls(), 3);
    // Throttling that clears within the SDK's attempts is invisible to the pod.
    let flaky = Arc::new(AtomicUsize::new(0));
    let (flaky_calls, flaky_eks) = {
        #[derive(Clone)]
        struct ThrottleOnce(Arc<AtomicUsize>);
        impl Respond for ThrottleOnce {
            fn respond(&self, _: &Request) -> ResponseTemplate {
                if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                    eks_error(429, "ThrottlingException")
                } else {
                    ok("ASIAAFTERTHROTTLE", Duration::from_secs(3600))
                }
            }
        }
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::method("POST"))
            .respond_with(ThrottleOnce(flaky.clone()))
            .mount(&server)
            .await;
        (flaky, server)
    };
    let second = agent_for(&flaky_eks.uri(), 3, Duration::from_secs(10)).await;
    let (status, body) = second.get(&token("throttled-once")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(access_key(&body), "ASIAAFTERTHROTTLE");
    assert_eq!(flaky_calls.load(Ordering::SeqCst), 2);
    agent.shutdown().await;
    second.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Transport faults: a raw TCP upstream
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Reads the request and never answers.
    Hang,
    /// Reads the request, then resets the connection (RST).
    Reset,
    /// Reads the request, then closes without a byte.
    Close,
    /// Answers something that is not HTTP.
    Garbage,
    /// Announces a 500-byte JSON body, sends 12 bytes, closes.
    Truncated,
}

/// A TCP server playing EKS Auth badly; counts the connections it accepted.
async fn misbehaving_upstream(how: Misbehaviour) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Read the request head (and whatever of the body came with it).
                let mut buf = vec![0; 64 * 1024];
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
                match how {
                    Misbehaviour::Hang => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Misbehaviour::Reset => {
                        let _ = stream.set_zero_linger();
                    }
                    Misbehaviour::Close => {}
                    Misbehaviour::Garbage => {
                        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
                    }
                    Misbehaviour::Truncated => {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"subject\":{",
                            )
                            .await;
                    }
                }
                drop(stream);
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn timeouts_resets_and_garbage_are_500_empty_brackets_after_at_most_three_attempts() {
    for how in [
        Misbehaviour::Hang,
        Misbehaviour::Reset,
        Misbehaviour::Close,
        Misbehaviour::Garbage,
        Misbehaviour::Truncated,
    ] {
        let (addr, accepted) = misbehaving_upstream(how).await;
        let agent = agent_for(&format!("http://{addr}"), 3, Duration::from_millis(300)).await;
        let (status, body) = agent.get(&token("transport")).await;
        assert_eq!((status, body.as_str()), (500, "[]\n"), "{how:?}");
        let connections = accepted.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&connections),
            "{how:?}: {connections} connections"
        );
        agent.shutdown().await;
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_500_empty_brackets() {
    // A port that was just free: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let agent = agent_for(&format!("http://{addr}"), 3, Duration::from_millis(300)).await;
    assert_eq!(agent.get(&token("refused")).await, (500, "[]\n".to_owned()));
    agent.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Bad 200s
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unusable_success_bodies_are_500_and_never_cached_incomplete_ones_are_served() {
    let full = success_body("ASIABAD", now() + Duration::from_secs(3600));
    let without = |pointer: &[&str]| {
        let mut body = full.clone();
        let (last, path) = pointer.split_last().unwrap();
        let mut node = &mut body;
        for key in path {
            node = &mut node[*key];
        }
        node.as_object_mut().unwrap().remove(*last);
        ResponseTemplate::new(200).set_body_json(body)
    };
    let cases: Vec<(&str, ResponseTemplate)> = vec![
        (
            "invalid JSON",
            ResponseTemplate::new(200).set_body_string("{not json"),
        ),
        (
            "truncated JSON",
            ResponseTemplate::new(200).set_body_string(&full.to_string()[..60]),
        ),
        (
            "empty object",
            ResponseTemplate::new(200).set_body_string("{}"),
        ),
        ("empty body", ResponseTemplate::new(200)),
        ("no credentials", without(&["credentials"])),
        ("no access key id", without(&["credentials", "accessKeyId"])),
        (
            "no secret key",
            without(&["credentials", "secretAccessKey"]),
        ),
        (
            "no session token",
            without(&["credentials", "sessionToken"]),
        ),
        ("no expiration", without(&["credentials", "expiration"])),
        (
            "expiration as text",
            ResponseTemplate::new(200).set_body_json({
                let mut body = full.clone();
                body["credentials"]["expiration"] = "tomorrow".into();
                body
            }),
        ),
    ];
    let (upstream, eks) = Upstream::start(ResponseTemplate::new(500)).await;
    let agent = agent_for(&eks.uri(), 1, Duration::from_secs(10)).await;
    for (what, answer) in cases {
        upstream.set(answer);
        let token = token(what);
        let before = upstream.calls();
        let (status, body) = agent.get(&token).await;
        assert_eq!((status, body.as_str()), (500, "[]\n"), "{what}");
        // Not cached: the next request asks again (and gets good credentials once EKS Auth
        // answers properly).
        upstream.set(ok("ASIAGOOD", Duration::from_secs(3600)));
        let (status, body) = agent.get(&token).await;
        assert_eq!(status, 200, "{what}: {body}");
        assert_eq!(access_key(&body), "ASIAGOOD");
        assert_eq!(upstream.calls(), before + 2, "{what}");
    }

    // Missing informational members do not make the credentials unusable: served (as the
    // reference's Go SDK does), without `AccountId` when the assumed role is unknown.
    for (what, answer, account) in [
        ("no subject", without(&["subject"]), true),
        ("no association", without(&["podIdentityAssociation"]), true),
        ("no assumed role user", without(&["assumedRoleUser"]), false),
    ] {
        upstream.set(answer);
        let (status, body) = agent.get(&token(what)).await;
        assert_eq!(status, 200, "{what}: {body}");
        assert_eq!(access_key(&body), "ASIABAD");
        assert_eq!(
            body.contains("\"AccountId\":\"111122223333\""),
            account,
            "{what}: {body}"
        );
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn expired_or_expiring_credentials_are_500_with_the_reference_text_and_not_cached() {
    let (upstream, eks) = Upstream::start(ResponseTemplate::new(500)).await;
    let agent = agent_for(&eks.uri(), 1, Duration::from_secs(10)).await;
    let expired = now() - Duration::from_secs(600);
    upstream.set(ResponseTemplate::new(200).set_body_json(success_body("ASIAOLD", expired)));
    let token = token("expiring");
    let (status, body) = agent.get(&token).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.starts_with("fetched credentials are expired or will expire within the next -60"),
        "{body}"
    );
    assert!(body.ends_with(" seconds\n"), "{body}");

    // 10 s left is inside the 15 s minimum as well.
    upstream.set(ok("ASIASOON", Duration::from_secs(10)));
    let (status, body) = agent.get(&token).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.starts_with("fetched credentials are expired or will expire within the next "));
    assert_eq!(upstream.calls(), 2, "not cached: asked again");

    upstream.set(ok("ASIAFRESH", Duration::from_secs(3600)));
    let (status, body) = agent.get(&token).await;
    assert_eq!((status, access_key(&body)), (200, "ASIAFRESH".to_owned()));
    agent.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Serving through an outage
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cached_credentials_are_served_through_an_outage_until_15_seconds_before_expiry() {
    let (upstream, eks) = Upstream::start(ok("ASIACACHED", Duration::from_secs(3600))).await;
    let clock = AheadClock::default();
    let agent = serve_agent(
        AgentBuilder::new(
            "demo".parse().unwrap(),
            source(&eks.uri(), 3, Duration::from_secs(10))
                .build()
                .await
                .unwrap(),
        )
        .clock(SharedTimeSource::new(clock.clone())),
    )
    .await;
    let token = token("outage");
    assert_eq!(access_key(&agent.get(&token).await.1), "ASIACACHED");

    // EKS Auth goes down.
    upstream.set(eks_error(500, "InternalServerException"));
    for ahead in [0, 30 * 60, 59 * 60, 3600 - 20] {
        clock.set_ahead(Duration::from_secs(ahead));
        let (status, body) = agent.get(&token).await;
        assert_eq!(status, 200, "{ahead} s ahead: {body}");
        assert_eq!(access_key(&body), "ASIACACHED");
    }
    assert_eq!(
        upstream.calls(),
        1,
        "served from the cache: no upstream call"
    );

    // 14 s left: no longer served; the agent asks EKS Auth (3 attempts) and passes its error on.
    clock.set_ahead(Duration::from_secs(3600 - 14));
    let (status, body) = agent.get(&token).await;
    assert_eq!(
        (status, body.as_str()),
        (
            500,
            "[req-1]: (InternalServerException): InternalServerException happened, fault: server\n"
        )
    );
    assert_eq!(upstream.calls(), 1 + 3);

    // EKS Auth recovers: fresh credentials.
    upstream.set(ok("ASIARECOVERED", Duration::from_secs(7200)));
    assert_eq!(access_key(&agent.get(&token).await.1), "ASIARECOVERED");
    agent.shutdown().await;
}

#[tokio::test]
async fn failed_renewals_back_off_with_jitter_while_the_old_credentials_are_served() {
    const INTERVAL: Duration = Duration::from_millis(200);
    let (upstream, eks) = Upstream::start(ok("ASIAFIRST", Duration::from_secs(3600))).await;
    let cache = CredentialCache::builder(
        source(&eks.uri(), 1, Duration::from_secs(10))
            .build()
            .await
            .unwrap(),
    )
    .max_retention(INTERVAL)
    .retry_interval(INTERVAL, INTERVAL)
    .renewal_qps(0)
    .build();
    let agent = serve_blocks(cache).await;
    let token = token("renewing");
    assert_eq!(access_key(&agent.get(&token).await.1), "ASIAFIRST");

    upstream.set(eks_error(503, "ServiceUnavailableException"));
    let started = tokio::time::Instant::now();
    eventually(Duration::from_secs(20), "six failed renewals", async || {
        upstream.calls() >= 7
    })
    .await;
    // Pods never notice: the last good credentials keep being served.
    for _ in 0..5 {
        let (status, body) = agent.get(&token).await;
        assert_eq!((status, access_key(&body)), (200, "ASIAFIRST".to_owned()));
    }
    let elapsed = started.elapsed();
    let times = upstream.call_times();
    // The retries (calls after the first failed renewal) are spaced by the interval plus a
    // random jitter of up to the interval.
    let gaps: Vec<Duration> = times[2..]
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .collect();
    assert!(
        gaps.iter().all(|gap| *gap >= INTERVAL),
        "a retry came sooner than the interval: {gaps:?}"
    );
    let spread = *gaps.iter().max().unwrap() - *gaps.iter().min().unwrap();
    assert!(spread > Duration::from_millis(1), "no jitter: {gaps:?}");
    // Bounded: never more than one renewal per interval (and the first fetch and renewal).
    let bound = 2 + (elapsed.as_millis() / INTERVAL.as_millis()) as usize + 1;
    assert!(
        upstream.calls() <= bound,
        "{} calls in {elapsed:?}",
        upstream.calls()
    );

    // Recovery: the next renewal succeeds and the new credentials are served.
    upstream.set(ok("ASIARENEWED", Duration::from_secs(3600)));
    eventually(
        Duration::from_secs(10),
        "the renewal to recover by itself",
        async || access_key(&agent.get(&token).await.1) == "ASIARENEWED",
    )
    .await;
    agent.shutdown().await;
}

#[tokio::test]
async fn concurrent_requests_during_an_outage_share_calls_no_retry_storm() {
    let (simulator, server) = simulator(&["app"]).await;
    let agent = agent_for(&server.endpoint_url(), 3, Duration::from_secs(10)).await;
    simulator.fail(EksAuthErrorCode::ServiceUnavailable, Times::Always);
    simulator.set_latency(Duration::from_millis(200));
    let tokens: Vec<String> = (0..10).map(|i| token(&format!("storm-{i}"))).collect();
    let mut requests = tokio::task::JoinSet::new();
    for round in 0..30 {
        for token in &tokens {
            let token = token.clone();
            let addr = agent.addr();
            requests.spawn(async move { (round, http(addr, &token).await) });
        }
    }
    let mut answered = 0;
    while let Some(answer) = requests.join_next().await {
        let (_, (status, body)) = answer.unwrap();
        assert_eq!(status, 503, "{body}");
        answered += 1;
    }
    assert_eq!(answered, 300);
    // 300 requests, 10 tokens: each flight makes at most 3 attempts, and a token has a new
    // flight only after the previous one ended, so the requests that arrived during one flight
    // share it. Far below one call per request.
    let calls = simulator.request_count();
    assert!(calls <= 300 / 2, "{calls} upstream calls for 300 requests");
    for token in &tokens {
        assert!(simulator.token_request_count(token) >= 1);
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn a_flapping_upstream_never_mixes_up_credentials() {
    let (simulator, server) = simulator(&["app"]).await;
    let agent = agent_for(&server.endpoint_url(), 1, Duration::from_secs(10)).await;
    let tokens: Vec<String> = (0..20).map(|i| token(&format!("flap-{i}"))).collect();
    let mut served: Vec<Option<String>> = vec![None; tokens.len()];
    for round in 0..4 {
        for (i, token) in tokens.iter().enumerate() {
            // Every other upstream answer fails.
            if (round + i) % 2 == 0 {
                simulator.fail(EksAuthErrorCode::ServiceUnavailable, Times::Next(1));
            } else {
                simulator.clear_failures();
            }
            let (status, body) = agent.get(token).await;
            match (&served[i], status) {
                // Once served, always served the same credentials (from the cache).
                (Some(key), _) => {
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(&access_key(&body), key);
                }
                (None, 200) => {
                    let key = access_key(&body);
                    let session = simulator.session(&key).expect("issued by the simulator");
                    assert_eq!(
                        session.token_digest,
                        hex_digest(token),
                        "another pod's credentials"
                    );
                    assert_eq!(session.pod_name, format!("flap-{i}"));
                    served[i] = Some(key);
                }
                (None, 503) => assert!(body.contains("(ServiceUnavailableException)"), "{body}"),
                (None, other) => panic!("unexpected {other}: {body}"),
            }
        }
    }
    assert!(served.iter().all(Option::is_some));
    let keys: std::collections::HashSet<_> = served.iter().flatten().collect();
    assert_eq!(keys.len(), tokens.len(), "each pod its own credentials");
    agent.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Node credentials rotating
// ---------------------------------------------------------------------------------------------

/// Node credentials that the test rotates; each lives 5 s, inside the SDK identity cache's
/// 10 s buffer, so every signature reads the current key (as after a real rotation).
#[derive(Debug, Clone)]
struct RotatingNodeCredentials(Arc<Mutex<&'static str>>);

impl ProvideCredentials for RotatingNodeCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let key = *self.0.lock().unwrap();
        future::ProvideCredentials::ready(Ok(Credentials::new(
            key,
            format!("secret-of-{key}"),
            None,
            Some(now() + Duration::from_secs(5)),
            "rotating",
        )))
    }
}

/// EKS Auth accepting only signatures by the keys in `accepted`; counts signatures per key.
#[derive(Clone)]
struct KeyCheckingUpstream {
    accepted: Arc<Mutex<Vec<&'static str>>>,
    signed_by: Arc<Mutex<Vec<String>>>,
}

impl Respond for KeyCheckingUpstream {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let authorization = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let key = authorization
            .split("Credential=")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        self.signed_by.lock().unwrap().push(key.clone());
        if self.accepted.lock().unwrap().iter().any(|k| *k == key) {
            ok(&format!("ASIA{key}"), Duration::from_secs(3600))
        } else {
            eks_error(403, "ExpiredTokenException")
        }
    }
}

#[tokio::test]
async fn rotated_node_credentials_are_used_from_the_next_call_on() {
    let node = RotatingNodeCredentials(Arc::new(Mutex::new("AKIDOLD")));
    let upstream = KeyCheckingUpstream {
        accepted: Arc::new(Mutex::new(vec!["AKIDOLD"])),
        signed_by: Arc::default(),
    };
    let eks = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(upstream.clone())
        .mount(&eks)
        .await;
    let source = source(&eks.uri(), 1, Duration::from_secs(10))
        .aws_client(|aws| aws.credentials_provider(node.clone()))
        .build()
        .await
        .unwrap();
    let agent = start_agent(source).await;
    let before: Vec<String> = (0..5).map(|i| token(&format!("before-{i}"))).collect();
    for token in &before {
        let (status, body) = agent.get(token).await;
        assert_eq!((status, access_key(&body)), (200, "ASIAAKIDOLD".to_owned()));
    }

    // Rotation: the new key is issued (both valid for a moment), then the old one is revoked.
    upstream.accepted.lock().unwrap().push("AKIDNEW");
    *node.0.lock().unwrap() = "AKIDNEW";
    let signed_before_rotation = upstream.signed_by.lock().unwrap().len();
    upstream
        .accepted
        .lock()
        .unwrap()
        .retain(|k| *k == "AKIDNEW");

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..20 {
        let addr = agent.addr();
        let token = token(&format!("after-{i}"));
        requests.spawn(async move { http(addr, &token).await });
    }
    while let Some(answer) = requests.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!((status, access_key(&body)), (200, "ASIAAKIDNEW".to_owned()));
    }
    let signed = upstream.signed_by.lock().unwrap().clone();
    assert!(
        signed[signed_before_rotation..]
            .iter()
            .all(|k| k == "AKIDNEW"),
        "{signed:?}"
    );
    // Credentials issued before the rotation are still served from the cache.
    for token in &before {
        assert_eq!(access_key(&agent.get(token).await.1), "ASIAAKIDOLD");
    }
    assert_eq!(signed.len(), 25);
    agent.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_with_requests_in_flight_loses_none() {
    let (simulator, server) = simulator(&["app"]).await;
    simulator.set_latency(Duration::from_millis(500));
    let agent = agent_for(&server.endpoint_url(), 1, Duration::from_secs(10)).await;
    // A keep-alive connection that sits idle through the shutdown.
    let mut idle = TcpStream::connect(agent.addr()).await.unwrap();
    idle.write_all(format!("GET /nowhere HTTP/1.1\r\nHost: {}\r\n\r\n", agent.addr()).as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 404");

    let tokens: Vec<String> = (0..40).map(|i| token(&format!("drain-{i}"))).collect();
    let mut requests = tokio::task::JoinSet::new();
    for token in tokens.clone() {
        let addr = agent.addr();
        requests.spawn(async move {
            let answer = http(addr, &token).await;
            (token, answer)
        });
    }
    // Every request has reached EKS Auth: all are in flight.
    eventually(
        Duration::from_secs(20),
        "40 requests in flight",
        async || simulator.request_count() >= 40,
    )
    .await;
    let addr = agent.addr();
    agent.shutdown().await;
    let mut served = 0;
    while let Some(answer) = requests.join_next().await {
        let (token, (status, body)) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        let session = simulator.session(&access_key(&body)).unwrap();
        assert_eq!(session.token_digest, hex_digest(&token));
        served += 1;
    }
    assert_eq!(served, 40);
    // The idle connection was closed, and nothing accepts any more.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "idle keep-alive connection left open");
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}
