//! The HTTP side against a wiremock agent: request shape, retry matrix, timeouts, token file.

use std::time::Duration;

use crate::common::*;
use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::error::CredentialsError;
use pod_identity_provider::{Env, Error, ErrorKind, PodIdentityCredentialsProvider};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn kind(error: &CredentialsError) -> ErrorKind {
    std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<Error>())
        .map(Error::kind)
        .expect("the source is the provider's error")
}

#[tokio::test]
async fn sends_the_token_and_accept_header_and_returns_real_expiry_and_account() {
    let clock = ManualClock::new();
    let expiry = clock.now() + 6 * HOUR;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/credentials"))
        .and(header("authorization", TOKEN))
        .and(header("accept", "application/json"))
        .respond_with(ok("AKIDPOD", expiry))
        .expect(1)
        .mount(&server)
        .await;

    let credentials = provider(&server, &clock).credentials().await.unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDPOD");
    assert_eq!(credentials.secret_access_key(), SECRET_KEY);
    assert_eq!(credentials.session_token(), Some(SESSION_TOKEN));
    assert_eq!(credentials.expiry(), Some(expiry));
    assert_eq!(
        credentials.account_id().map(|a| a.as_str()),
        Some(ACCOUNT_ID)
    );
    assert_eq!(
        credentials.get_property::<Vec<AwsCredentialFeature>>(),
        Some(&vec![AwsCredentialFeature::CredentialsHttp]),
        "the SDK's business metric for HTTP credentials is recorded"
    );
}

/// One row of the retry matrix.
struct Case {
    name: &'static str,
    responses: Vec<ResponseTemplate>,
    succeeds: bool,
    requests: usize,
    error_contains: &'static [&'static str],
}

#[tokio::test]
async fn retry_matrix() {
    let clock = ManualClock::new();
    let expiry = clock.now() + 6 * HOUR;
    let cases = [
        Case {
            name: "503 then 200",
            responses: vec![status(503, "unavailable"), ok("AKID", expiry)],
            succeeds: true,
            requests: 2,
            error_contains: &[],
        },
        Case {
            name: "500 three times",
            responses: vec![status(500, "[]"), status(500, "[]"), status(500, "[]\n")],
            succeeds: false,
            requests: 3,
            error_contains: &["500", "[]"],
        },
        Case {
            name: "429 then 200",
            responses: vec![status(429, "Too Many Requests"), ok("AKID", expiry)],
            succeeds: true,
            requests: 2,
            error_contains: &[],
        },
        Case {
            name: "403 is not retried",
            responses: vec![
                status(403, "Access Denied. Called agent through invalid address\n"),
                ok("AKID", expiry),
            ],
            succeeds: false,
            requests: 1,
            error_contains: &["403", "Access Denied. Called agent through invalid address"],
        },
        Case {
            name: "malformed JSON then 200",
            responses: vec![
                ResponseTemplate::new(200).set_body_string("{not json"),
                ok("AKID", expiry),
            ],
            succeeds: true,
            requests: 2,
            error_contains: &[],
        },
        Case {
            name: "Code: Failure is an answer, not retried",
            responses: vec![
                ResponseTemplate::new(200)
                    .set_body_string(r#"{"Code":"Failure","Message":"association not found"}"#),
                ok("AKID", expiry),
            ],
            succeeds: false,
            requests: 1,
            error_contains: &["Failure", "association not found"],
        },
    ];
    for case in cases {
        let server = agent(Script::new(case.responses)).await;
        let result = provider(&server, &clock).credentials().await;
        assert_eq!(result.is_ok(), case.succeeds, "{}: {result:?}", case.name);
        assert_eq!(requests(&server).await, case.requests, "{}", case.name);
        if let Err(error) = result {
            let text = chain(&error);
            for needle in case.error_contains {
                assert!(text.contains(needle), "{}: {text}", case.name);
            }
            assert!(
                matches!(error, CredentialsError::ProviderError(_)),
                "{}",
                case.name
            );
        }
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let clock = ManualClock::new();
    let server = agent(Script::new([
        status(429, "Too Many Requests").insert_header("retry-after", "3"),
        ok("AKID", clock.now() + 6 * HOUR),
    ]))
    .await;
    provider(&server, &clock).credentials().await.unwrap();
    // The backoff alone is at most 100 ms on the first retry: the wait came from the agent.
    assert_eq!(clock.instant_sleeps(), vec![3 * SECOND]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_capped_at_five_seconds() {
    let clock = ManualClock::new();
    let server = agent(Script::new([
        status(429, "Too Many Requests").insert_header("retry-after", "3000"),
        ok("AKID", clock.now() + 6 * HOUR),
    ]))
    .await;
    let provider = provider(&server, &clock);
    let fetch = tokio::spawn(async move { provider.credentials().await });
    eventually("the first attempt", || async {
        requests(&server).await == 1
    })
    .await;
    // The retry waits on the clock; five seconds of (manual) time release it, 3000 would not.
    clock.settled().await;
    clock.advance(5 * SECOND);
    let credentials = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("the retry waited at most the cap")
        .unwrap();
    assert_eq!(credentials.unwrap().access_key_id(), "AKID");
}

#[tokio::test]
async fn read_timeout_applies_and_is_retried() {
    let clock = ManualClock::new();
    let server = agent(ok("AKID", clock.now() + 6 * HOUR).set_delay(Duration::from_secs(3))).await;
    let provider = builder(&server, &clock)
        .read_timeout(Duration::from_millis(200))
        .max_attempts(2)
        .build();
    let error = provider.credentials().await.unwrap_err();
    assert_eq!(kind(&error), ErrorKind::Transport);
    assert!(chain(&error).contains("timed out"), "{}", chain(&error));
    assert_eq!(requests(&server).await, 2);
    assert_eq!(provider.metrics().retries, 1);
}

#[tokio::test]
async fn timeouts_at_the_limit_of_duration_do_not_panic() {
    let clock = ManualClock::new();
    let server = agent(ok("AKID", clock.now() + 6 * HOUR)).await;
    let provider = builder(&server, &clock)
        .connect_timeout(Duration::MAX)
        .read_timeout(Duration::MAX)
        .build();
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID"
    );
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    let clock = ManualClock::new();
    // Bind and drop to get a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let provider = PodIdentityCredentialsProvider::builder()
        .full_uri(format!("http://127.0.0.1:{port}/v1/credentials"))
        .env(Env::from_vars::<_, &str, &str>([]))
        .time_source(clock.clone())
        .sleep_impl(clock.clone())
        .build();
    let error = provider.credentials().await.unwrap_err();
    assert_eq!(kind(&error), ErrorKind::Transport);
    assert_eq!(provider.metrics().retries, 2);
}

#[tokio::test]
async fn token_file_rotation_is_picked_up() {
    let clock = ManualClock::new();
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_path, "first-token\n").unwrap();

    let server = MockServer::start().await;
    Mock::given(header("authorization", "first-token"))
        .respond_with(ok("AKID1", clock.now() + 10 * MINUTE))
        .mount(&server)
        .await;
    Mock::given(header("authorization", "second-token"))
        .respond_with(ok("AKID2", clock.now() + 6 * HOUR))
        .mount(&server)
        .await;
    let provider = PodIdentityCredentialsProvider::builder()
        .env(Env::from_vars([
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri(&server)),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_path.display().to_string(),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                "env-token-loses".to_owned(),
            ),
        ]))
        .time_source(clock.clone())
        .sleep_impl(clock.clone())
        .build();
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID1"
    );

    // kubelet rotates the token; the next fetch (after expiry here) must send the new one.
    std::fs::write(&token_path, "  second-token \n").unwrap();
    clock.settled().await;
    clock.advance(11 * MINUTE);
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID2"
    );
    let sent: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.headers
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        sent.iter()
            .all(|t| t == "first-token" || t == "second-token"),
        "{sent:?}"
    );
    assert_eq!(sent.last().map(String::as_str), Some("second-token"));
}

#[tokio::test]
async fn errors_never_contain_the_token() {
    let clock = ManualClock::new();
    // An agent that echoes the token it was sent, in a 400 and in a Code/Message document.
    for response in [
        status(
            400,
            &format!("Service account token cannot be parsed: {TOKEN}\n"),
        ),
        ResponseTemplate::new(200).set_body_string(format!(
            r#"{{"Code":"InvalidToken","Message":"bad token {TOKEN}"}}"#
        )),
    ] {
        let server = agent(response).await;
        let error = provider(&server, &clock).credentials().await.unwrap_err();
        let text = format!("{} {error:?}", chain(&error));
        assert!(!text.contains(TOKEN), "{text}");
        for segment in TOKEN.split('.') {
            assert!(!text.contains(segment), "{text}");
        }
        assert!(text.contains("redacted"), "{text}");
    }
}

#[tokio::test]
async fn connect_timeout_applies() {
    // A listener that never accepts, with its tiny backlog filled: further SYNs are dropped,
    // so a connect hangs until the client's connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    let clock = ManualClock::new();
    let provider = PodIdentityCredentialsProvider::builder()
        .full_uri(format!("http://{address}/v1/credentials"))
        .env(Env::from_vars::<_, &str, &str>([]))
        .time_source(clock.clone())
        .sleep_impl(clock.clone())
        .connect_timeout(Duration::from_millis(200))
        .read_timeout(Duration::from_secs(30))
        .max_attempts(1)
        .build();
    let error = tokio::time::timeout(Duration::from_secs(10), provider.credentials())
        .await
        .expect("the connect timeout ends the attempt long before the read timeout")
        .unwrap_err();
    assert_eq!(kind(&error), ErrorKind::Transport);
    assert!(chain(&error).contains("timed out"), "{}", chain(&error));
    drop((listener, fillers));
}
