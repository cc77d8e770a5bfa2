//! The handler's tests, without sockets (`tower::ServiceExt::oneshot`).

use axum::body::Body;
use http_body_util::BodyExt;
use pod_identity_core::eks_auth::EksAuthError;
use tower::ServiceExt;

use super::*;
use crate::test_support::{
    FakeSource, SECRET_ACCESS_KEY, START_SECS, capture_logs, day_token, jwt, jwt_with_header,
    token, wall_clock,
};

const HOST: &str = "169.254.170.23";

/// A cache with caching off: every request reaches `source`.
fn uncached(source: FakeSource) -> CredentialCache<FakeSource> {
    uncached_counting(source, &Metrics::default())
}

/// [`uncached`], counting into `metrics` (as does a router in front of it).
fn uncached_counting(source: FakeSource, metrics: &Metrics) -> CredentialCache<FakeSource> {
    CredentialCache::builder(source)
        .max_entries(0)
        .clock(wall_clock())
        .metrics(metrics.clone())
        .build()
}

fn router(source: FakeSource) -> Router {
    CredentialsRouter::new("demo".parse().unwrap(), uncached(source)).into_router()
}

fn get(host: &str, authorization: Option<&str>) -> http::Request<Body> {
    let mut request = http::Request::get(CREDENTIALS_PATH).header(header::HOST, host);
    if let Some(token) = authorization {
        request = request.header(header::AUTHORIZATION, token);
    }
    request.body(Body::empty()).unwrap()
}

async fn send(router: &Router, request: http::Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn answer(router: &Router, host: &str, authorization: Option<&str>) -> (u16, String) {
    let (status, _, body) = send(router, get(host, authorization)).await;
    (status.as_u16(), body)
}

#[tokio::test(start_paused = true)]
async fn success_is_the_byte_exact_container_credentials_json() {
    let source = FakeSource::new(wall_clock());
    let router = router(source.clone());
    let (status, headers, body) = send(&router, get(HOST, Some(&day_token("p")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    // START + 6 h = 2023-11-15T04:13:20Z.
    assert_eq!(
        body,
        format!(
            r#"{{"AccessKeyId":"ASIAFAKE1","SecretAccessKey":"{SECRET_ACCESS_KEY}","Token":"session-token-1","AccountId":"111122223333","Expiration":"2023-11-15T04:13:20Z"}}"#
        )
    );
    assert_eq!(source.calls(), 1);
}

fn cached_router(cache: &CredentialCache<FakeSource>) -> Router {
    CredentialsRouter::new("demo".parse().unwrap(), cache.clone())
        .rate_limit(0, 0)
        .into_router()
}

fn cache_of(source: &FakeSource, metrics: &Metrics) -> CredentialCache<FakeSource> {
    CredentialCache::builder(source.clone())
        .clock(wall_clock())
        .metrics(metrics.clone())
        .build()
}

#[tokio::test(start_paused = true)]
async fn with_pod_uids_required_a_token_without_one_gets_400_before_any_upstream_call() {
    let source = FakeSource::new(wall_clock());
    let router = CredentialsRouter::new("demo".parse().unwrap(), uncached(source.clone()))
        .rate_limit(0, 0)
        .require_pod_uid(true)
        .into_router();
    let mut claims: serde_json::Value = serde_json::json!({
        "aud": ["pods.eks.amazonaws.com"],
        "exp": START_SECS + 3600,
        "iat": START_SECS,
        "iss": "https://oidc.eks.us-west-2.amazonaws.com/id/EXAMPLE",
        "sub": "system:serviceaccount:default:app",
        "kubernetes.io": {
            "namespace": "default",
            "serviceaccount": {"name": "app", "uid": "sa-uid"}
        }
    });
    let no_pod = jwt(&claims);
    assert_eq!(
        answer(&router, HOST, Some(&no_pod)).await,
        (
            400,
            "failed to get pod uid from service account token: kubernetes.io pod claim not found\n"
                .into()
        )
    );
    claims["kubernetes.io"] = serde_json::Value::Null;
    let no_kubernetes = jwt(&claims);
    assert_eq!(answer(&router, HOST, Some(&no_kubernetes)).await.0, 400);
    assert_eq!(source.calls(), 0);
    assert_eq!(answer(&router, HOST, Some(&day_token("p"))).await.0, 200);
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hit_is_served_from_the_entry_with_the_same_bytes_and_checks() {
    let source = FakeSource::new(wall_clock());
    let metrics = Metrics::new();
    let cache = cache_of(&source, &metrics);
    let router = cached_router(&cache);
    let token = day_token("p");
    let first = send(&router, get(HOST, Some(&token))).await;
    let second = send(&router, get(HOST, Some(&token))).await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first, second, "status, headers and body");
    assert_eq!(source.calls(), 1, "the second was served from the cache");
    let text = metrics.encode();
    assert!(
        text.contains("pod_identity_cache_state{state=\"miss\"} 1"),
        "{text}"
    );
    // The host is still checked first, and an empty token still has its own answer.
    assert_eq!(answer(&router, "10.0.0.1", Some(&token)).await.0, 403);
    assert_eq!(
        answer(&router, HOST, Some("")).await,
        (400, "Service account token cannot be empty\n".into())
    );
    assert_eq!(
        answer(&router, HOST, None).await,
        (400, "Service account token cannot be empty\n".into())
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_with_a_cached_entry_gets_the_reference_400() {
    let source = FakeSource::new(wall_clock());
    let metrics = Metrics::new();
    let cache = cache_of(&source, &metrics);
    let router = cached_router(&cache);
    // The token expires in an hour; the credentials last 6 h and renew at 3 h.
    let token = token("p", Duration::from_secs(3600));
    assert_eq!(answer(&router, HOST, Some(&token)).await.0, 200);
    tokio::time::advance(Duration::from_secs(3599)).await;
    assert_eq!(answer(&router, HOST, Some(&token)).await.0, 200, "a hit");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(cache.len(), 1, "the entry is still cached");
    assert_eq!(
        answer(&router, HOST, Some(&token)).await,
        (
            400,
            "Service account token failed basic claim validations: token is expired\n".into()
        )
    );
    assert_eq!(source.calls(), 1);
    let text = metrics.encode();
    // No renewal (the reference's `hit`) and no second fetch (`miss`) for the refused one.
    assert!(!text.contains("state=\"hit\""), "{text}");
    assert!(
        text.contains("pod_identity_cache_state{state=\"miss\"} 1"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_not_yet_valid_token_with_a_cached_entry_gets_the_reference_400() {
    let source = FakeSource::new(wall_clock());
    let metrics = Metrics::new();
    let cache = cache_of(&source, &metrics);
    let router = cached_router(&cache);
    // Valid from a minute from now: the handler would refuse it, so it is cached directly.
    let later = jwt(&serde_json::json!({
        "exp": START_SECS + 86_400,
        "nbf": START_SECS + 60,
    }));
    cache
        .get(&crate::test_support::request(&later))
        .await
        .unwrap();
    assert_eq!(
        answer(&router, HOST, Some(&later)).await,
        (
            400,
            "Service account token failed basic claim validations: token is not valid yet\n".into()
        )
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(answer(&router, HOST, Some(&later)).await.0, 200);
    assert_eq!(source.calls(), 1, "served from the entry once valid");
}

#[tokio::test(start_paused = true)]
async fn a_token_one_byte_different_is_never_another_tokens_hit() {
    let source = FakeSource::new(wall_clock());
    let metrics = Metrics::new();
    let cache = cache_of(&source, &metrics);
    let router = cached_router(&cache);
    let token = day_token("p");
    let (_, _, body) = send(&router, get(HOST, Some(&token))).await;
    assert!(body.contains("ASIAFAKE1"), "{body}");
    // Same header and claims, one byte of the signature changed: a miss, its own entry.
    let mut other = token.clone().into_bytes();
    let last = other.len() - 1;
    other[last] ^= 1;
    let other = String::from_utf8(other).unwrap();
    let (status, _, body) = send(&router, get(HOST, Some(&other))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("ASIAFAKE2"), "{body}");
    assert_eq!((source.calls(), cache.len()), (2, 2));
    // One byte off in the header: not a JWT, refused as before, whatever is cached.
    let broken = format!("!{}", &token[1..]);
    let (status, body) = answer(&router, HOST, Some(&broken)).await;
    assert_eq!(status, 400);
    assert!(
        body.starts_with("Service account token cannot be parsed: "),
        "{body}"
    );
    // A prefix of a cached token is not it either.
    let prefix = &token[..token.len() - 1];
    assert!(answer(&router, HOST, Some(prefix)).await.0 == 200);
    assert_eq!(source.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn every_method_is_accepted_on_the_credentials_path() {
    let router = router(FakeSource::new(wall_clock()));
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"] {
        let request = http::Request::builder()
            .method(method)
            .uri(CREDENTIALS_PATH)
            .header(header::HOST, HOST)
            .header(header::AUTHORIZATION, day_token("p"))
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = send(&router, request).await;
        assert_eq!(status, StatusCode::OK, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn host_check_follows_the_reference_texts_and_strips_ports_and_brackets() {
    let router = router(FakeSource::new(wall_clock()));
    let token = day_token("p");
    for host in [
        "169.254.170.23",
        "169.254.170.23:80",
        "fd00:ec2::23",
        "[fd00:ec2::23]",
        "[fd00:ec2::23]:80",
        "[FD00:EC2::23]:80",
    ] {
        assert_eq!(answer(&router, host, Some(&token)).await.0, 200, "{host}");
    }
    assert_eq!(
        answer(&router, "10.0.0.1:80", Some(&token)).await,
        (
            403,
            "Access Denied. Called agent through invalid address, please use either \
             [169.254.170.23 fd00:ec2::23] address not 10.0.0.1\n"
                .into()
        )
    );
    // The host is checked before the token.
    assert_eq!(answer(&router, "localhost", None).await.0, 403);
}

#[tokio::test(start_paused = true)]
async fn the_allow_list_follows_the_configured_hosts() {
    let router = CredentialsRouter::new(
        "demo".parse().unwrap(),
        uncached(FakeSource::new(wall_clock())),
    )
    .allowed_hosts(HostAllowList::new(["127.0.0.1", "[::1]"]))
    .into_router();
    let token = day_token("p");
    assert_eq!(answer(&router, "127.0.0.1:8080", Some(&token)).await.0, 200);
    assert_eq!(answer(&router, "[::1]:8080", Some(&token)).await.0, 200);
    assert_eq!(
        answer(&router, HOST, Some(&token)).await,
        (
            403,
            "Access Denied. Called agent through invalid address, please use either \
             [127.0.0.1 ::1] address not 169.254.170.23\n"
                .into()
        )
    );
}

#[tokio::test(start_paused = true)]
async fn token_errors_use_the_reference_texts_in_the_reference_order() {
    let router = router(FakeSource::new(wall_clock()));
    let cases: [(Option<String>, &str); 7] = [
        (None, "Service account token cannot be empty\n"),
        (
            Some(String::new()),
            "Service account token cannot be empty\n",
        ),
        (
            Some("not-a-jwt".into()),
            "Service account token cannot be parsed: token is malformed: token contains an invalid number of segments\n",
        ),
        (
            Some("a.b.c.d".into()),
            "Service account token cannot be parsed: token is malformed: token contains an invalid number of segments\n",
        ),
        (
            Some(token("p", Duration::ZERO)),
            "Service account token failed basic claim validations: token is expired\n",
        ),
        (
            Some(jwt(
                &serde_json::json!({"nbf": START_SECS + 60, "exp": START_SECS + 3600}),
            )),
            "Service account token failed basic claim validations: token is not valid yet\n",
        ),
        (Some(jwt(&serde_json::json!({"exp": START_SECS + 1}))), ""),
    ];
    for (token, expected) in cases {
        let (status, body) = answer(&router, HOST, token.as_deref()).await;
        if expected.is_empty() {
            // Valid for one more second: accepted.
            assert_eq!(status, 200);
        } else {
            assert_eq!((status, body.as_str()), (400, expected), "{token:?}");
        }
    }
    for header in [
        serde_json::json!({"alg": "XS999"}),
        serde_json::json!({"kid": "k"}),
    ] {
        let unverifiable = jwt_with_header(&header, &serde_json::json!({"exp": START_SECS + 3600}));
        let (status, body) = answer(&router, HOST, Some(&unverifiable)).await;
        assert_eq!(status, 400);
        assert!(
            body.starts_with("Service account token cannot be parsed: token is unverifiable: "),
            "{body}"
        );
    }
    let bad_base64 = "e30.!!!.c2ln";
    let (status, body) = answer(&router, HOST, Some(bad_base64)).await;
    assert_eq!(status, 400);
    assert!(
        body.starts_with("Service account token cannot be parsed: token is malformed: "),
        "{body}"
    );
}

#[tokio::test(start_paused = true)]
async fn eks_auth_errors_keep_their_status_and_reference_body() {
    let source = FakeSource::new(wall_clock());
    let router = router(source.clone());
    let cases = [
        (
            403,
            "AccessDeniedException",
            "[req-1]: (AccessDeniedException): denied, fault: client\n",
        ),
        (
            404,
            "ResourceNotFoundException",
            "[req-1]: (ResourceNotFoundException): denied, fault: client\n",
        ),
        (
            429,
            "ThrottlingException",
            "[req-1]: (ThrottlingException): denied, fault: client\n",
        ),
        (
            500,
            "InternalServerException",
            "[req-1]: (InternalServerException): denied, fault: server\n",
        ),
        (
            503,
            "ServiceUnavailableException",
            "[req-1]: (ServiceUnavailableException): denied, fault: server\n",
        ),
    ];
    for (status, code, expected) in cases {
        source.fail_next(SourceError::EksAuth(EksAuthError::from_http(
            status,
            Some(code),
            Some("req-1"),
            br#"{"message":"denied"}"#,
        )));
        // A fresh token per case, so no cached credentials answer instead.
        let token = day_token(code);
        assert_eq!(
            answer(&router, HOST, Some(&token)).await,
            (status, expected.to_owned()),
            "{code}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_unreachable_sources_are_500_empty_brackets() {
    let source = FakeSource::new(wall_clock());
    let router = router(source.clone());
    source.fail_next(SourceError::Timeout);
    assert_eq!(
        answer(&router, HOST, Some(&day_token("a"))).await,
        (500, "[]\n".into())
    );
    source.fail_next(SourceError::unavailable(std::io::Error::from(
        std::io::ErrorKind::ConnectionRefused,
    )));
    assert_eq!(
        answer(&router, HOST, Some(&day_token("b"))).await,
        (500, "[]\n".into())
    );
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_source_is_logged_with_its_cause() {
    let (logs, _guard) = capture_logs();
    let source = FakeSource::new(wall_clock());
    let router = router(source.clone());
    source.fail_next(SourceError::unavailable(std::io::Error::other(
        "dns error: no such host",
    )));
    assert_eq!(answer(&router, HOST, Some(&day_token("a"))).await.0, 500);
    let logs = logs.text();
    assert!(
        logs.contains("credential source unavailable: dns error: no such host"),
        "{logs}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_source_slower_than_the_request_timeout_is_500_empty_brackets() {
    let source = FakeSource::new(wall_clock());
    source.close();
    let router = CredentialsRouter::new("demo".parse().unwrap(), uncached(source))
        .request_timeout(Duration::from_secs(30))
        .into_router();
    assert_eq!(
        answer(&router, HOST, Some(&day_token("a"))).await,
        (500, "[]\n".into())
    );
}

#[tokio::test(start_paused = true)]
async fn credentials_with_15_seconds_or_less_left_are_500() {
    let source = FakeSource::new(wall_clock());
    source.set_lifetime(Duration::from_millis(12_345));
    let router = router(source.clone());
    assert_eq!(
        answer(&router, HOST, Some(&day_token("a"))).await,
        (
            500,
            "fetched credentials are expired or will expire within the next 12.35 seconds\n".into()
        )
    );
    source.set_lifetime(Duration::from_secs(16));
    assert_eq!(answer(&router, HOST, Some(&day_token("b"))).await.0, 200);
}

#[tokio::test(start_paused = true)]
async fn over_the_rate_limit_is_429_until_tokens_refill() {
    let router = CredentialsRouter::new(
        "demo".parse().unwrap(),
        uncached(FakeSource::new(wall_clock())),
    )
    .rate_limit(10, 5)
    .into_router();
    let token = day_token("p");
    for _ in 0..5 {
        assert_eq!(answer(&router, HOST, Some(&token)).await.0, 200);
    }
    assert_eq!(
        answer(&router, HOST, Some(&token)).await,
        (429, "Too Many Requests\n".into())
    );
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(answer(&router, HOST, Some(&token)).await.0, 200);
    assert_eq!(answer(&router, HOST, Some(&token)).await.0, 429);
}

#[tokio::test(start_paused = true)]
async fn the_overall_rate_limit_allows_a_burst_of_2500_and_zero_turns_it_off() {
    let token = day_token("p");
    let limited = router(FakeSource::new(wall_clock()));
    let mut ok = 0;
    for _ in 0..3000 {
        if answer(&limited, HOST, Some(&token)).await.0 == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 2500);

    let unlimited = CredentialsRouter::new(
        "demo".parse().unwrap(),
        uncached(FakeSource::new(wall_clock())),
    )
    .rate_limit(0, 0)
    .into_router();
    for _ in 0..2000 {
        assert_eq!(answer(&unlimited, HOST, Some(&token)).await.0, 200);
    }
}

#[tokio::test(start_paused = true)]
async fn oversized_headers_are_431_and_other_paths_404() {
    let router = CredentialsRouter::new(
        "demo".parse().unwrap(),
        uncached(FakeSource::new(wall_clock())),
    )
    .max_header_bytes(1024)
    .into_router();
    let big = "a".repeat(2048);
    assert_eq!(
        answer(&router, HOST, Some(&big)).await,
        (431, AgentError::HeadersTooLarge.body())
    );
    for path in ["/", "/v1/credential", "/v1/credentials/x", "/healthz"] {
        let request = http::Request::get(path)
            .header(header::HOST, HOST)
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = send(&router, request).await;
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (404, "404 page not found\n"),
            "{path}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn responses_are_counted_and_logged_with_the_client_address_but_no_secret() {
    let (logs, _guard) = capture_logs();
    let metrics = Metrics::new();
    let source = FakeSource::new(wall_clock());
    let router = CredentialsRouter::new(
        "demo".parse().unwrap(),
        uncached_counting(source.clone(), &metrics),
    )
    .into_router();
    let token = day_token("p");
    let mut request = get(HOST, Some(&token));
    request
        .extensions_mut()
        .insert(ConnectInfo::<SocketAddr>("10.1.2.3:4567".parse().unwrap()));
    assert_eq!(send(&router, request).await.0, StatusCode::OK);
    source.fail_next(SourceError::EksAuth(EksAuthError::from_http(
        400,
        Some("InvalidTokenException"),
        Some("req-9"),
        br#"{"message":"bad token"}"#,
    )));
    let other = day_token("q");
    assert_eq!(answer(&router, HOST, Some(&other)).await.0, 400);
    assert_eq!(answer(&router, "10.0.0.1", Some(&other)).await.0, 403);

    let text = metrics.encode();
    assert!(
        text.contains("pod_identity_http_response{code=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pod_identity_http_response{code=\"400\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pod_identity_http_response{code=\"403\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pod_identity_http_request_duration_seconds_count 3"),
        "{text}"
    );

    let logs = logs.text();
    assert!(logs.contains("10.1.2.3:4567"), "{logs}");
    assert!(logs.contains("InvalidTokenException"), "{logs}");
    for secret in [
        token.as_str(),
        other.as_str(),
        SECRET_ACCESS_KEY,
        "session-token-1",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs: {logs}");
    }
    // The token payload (between the dots) is not logged in pieces either.
    let payload = token.split('.').nth(1).unwrap();
    assert!(!logs.contains(payload));
}
