//! Scenario 3 in process: one cache-hit `GET /v1/credentials` through the agent's router
//! (validation, token decode, SHA-256 key, cache, JSON, metrics) against a bare tower service
//! returning the same bytes, and the cache lookup alone. No sockets: the over-the-wire numbers
//! come from the load harness (`--only serving`).

use aws_smithy_async::time::SharedTimeSource;
use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use criterion::Criterion;
use pod_identity_agent_lib::{AgentBuilder, cache::CredentialCache, source::CredentialRequest};
use pod_identity_benches::fixture::{cluster, pod_token};
use pod_identity_benches::upstream::CountingSource;
use pod_identity_core::token::ServiceAccountToken;
use tower::ServiceExt as _;

fn request(token: &str) -> http::Request<Body> {
    http::Request::get("/v1/credentials")
        .header("host", "127.0.0.1:80")
        .header("authorization", token)
        .body(Body::empty())
        .expect("a valid request")
}

async fn body_of(response: http::Response<Body>) -> Bytes {
    assert_eq!(response.status(), 200);
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let token = pod_token(0);
    let token = token.expose_secret();
    let source = CountingSource::new(SharedTimeSource::default(), Duration::ZERO);
    let router = AgentBuilder::new(cluster(), source.clone())
        .bind_hosts(["127.0.0.1"])
        .router(move |router| router.rate_limit(0, 0))
        .into_router();
    let body = runtime.block_on(async {
        body_of(
            router
                .clone()
                .oneshot(request(token))
                .await
                .expect("infallible"),
        )
        .await
    });
    let bare = tower::service_fn(move |_request: http::Request<Body>| {
        let body = body.clone();
        async move {
            let mut response = http::Response::new(Body::from(body));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok::<_, Infallible>(response)
        }
    });
    let cache = CredentialCache::new(source);
    let decoded = CredentialRequest::new(
        cluster(),
        ServiceAccountToken::decode(token).expect("a minted token decodes"),
    );
    runtime
        .block_on(cache.get(&decoded))
        .expect("the first call fills the cache");

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("agent_cache_hit");
    group.bench_function("ours/router", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = router
                    .clone()
                    .oneshot(request(token))
                    .await
                    .expect("infallible");
                black_box(body_of(response).await)
            })
        });
    });
    group.bench_function("bare/service", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = bare
                    .clone()
                    .oneshot(request(token))
                    .await
                    .expect("infallible");
                black_box(body_of(response).await)
            })
        });
    });
    group.bench_function("ours/cache_get", |b| {
        b.iter(|| runtime.block_on(async { black_box(cache.get(&decoded).await.expect("a hit")) }));
    });
    // The pieces of a hit, for the budget: decoding the token (every request), rendering the
    // cached credentials as JSON (every response).
    group.bench_function("ours/token_decode", |b| {
        b.iter(|| black_box(ServiceAccountToken::decode(black_box(token)).expect("decodes")));
    });
    let issued = runtime.block_on(cache.get(&decoded)).expect("a hit");
    group.bench_function("ours/credentials_json", |b| {
        b.iter(|| black_box(issued.credentials().to_json()));
    });
    group.finish();
    criterion.final_summary();
}
