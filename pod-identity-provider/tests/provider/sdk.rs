//! aws-config with this provider signs real SDK requests (STS `GetCallerIdentity` sent to a
//! wiremock endpoint), behind the SDK's lazy cache, `RefreshAheadCache` and no cache, and through
//! the default chain.

use crate::common::*;
use aws_config::identity::IdentityCache;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_runtime_api::client::identity::ResolveCachedIdentity;
use pod_identity_provider::{
    DefaultCredentialsChain, Env, PodIdentityCredentialsProvider, RefreshAheadCache,
};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const CALLER_IDENTITY: &str = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::123456789012:assumed-role/app-role/eks-cluster-pod</Arn>
    <UserId>AROAEXAMPLE:eks-cluster-pod</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;

async fn sts() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/xml")
                .set_body_string(CALLER_IDENTITY),
        )
        .mount(&server)
        .await;
    server
}

async fn call_sts(
    provider: PodIdentityCredentialsProvider,
    sts_server: &MockServer,
    clock: &ManualClock,
    cache: Option<impl ResolveCachedIdentity + 'static>,
    calls: usize,
) {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(sts_server.uri())
        .time_source(clock.clone())
        .credentials_provider(provider);
    if let Some(cache) = cache {
        loader = loader.identity_cache(cache);
    }
    let config = loader.load().await;
    let client = aws_sdk_sts::Client::new(&config);
    for _ in 0..calls {
        let output = client.get_caller_identity().send().await.unwrap();
        assert_eq!(output.account(), Some(ACCOUNT_ID));
    }
}

async fn assert_signed_with_vended_key(sts_server: &MockServer, calls: usize) {
    let requests = sts_server.received_requests().await.unwrap();
    assert_eq!(requests.len(), calls);
    for request in requests {
        let authorization = request
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 "),
            "{authorization}"
        );
        assert!(
            authorization.contains("Credential=AKIDPOD/")
                && authorization.contains("/us-east-1/sts/aws4_request"),
            "{authorization}"
        );
        let session = request
            .headers
            .get("x-amz-security-token")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(session, SESSION_TOKEN);
    }
}

#[tokio::test]
async fn signs_sts_get_caller_identity_with_the_vended_key() {
    let clock = ManualClock::new();
    let agent_server = agent(ok("AKIDPOD", clock.now() + 6 * HOUR)).await;
    let sts_server = sts().await;
    call_sts(
        provider(&agent_server, &clock),
        &sts_server,
        &clock,
        None::<RefreshAheadCache>,
        2,
    )
    .await;
    assert_signed_with_vended_key(&sts_server, 2).await;
    assert_eq!(requests(&agent_server).await, 1);
}

#[tokio::test]
async fn works_behind_refresh_ahead_cache() {
    let clock = ManualClock::new();
    let agent_server = agent(ok("AKIDPOD", clock.now() + 6 * HOUR)).await;
    let sts_server = sts().await;
    let cache = RefreshAheadCache::builder()
        .time_source(clock.clone())
        .sleep_impl(clock.clone())
        .build();
    call_sts(
        provider(&agent_server, &clock),
        &sts_server,
        &clock,
        Some(cache.clone()),
        3,
    )
    .await;
    assert_signed_with_vended_key(&sts_server, 3).await;
    assert_eq!(requests(&agent_server).await, 1);
    assert_eq!(
        cache.metrics().fetches,
        1,
        "one identity load for three requests"
    );
}

#[tokio::test]
async fn works_with_no_identity_cache() {
    let clock = ManualClock::new();
    let agent_server = agent(ok("AKIDPOD", clock.now() + 6 * HOUR)).await;
    let sts_server = sts().await;
    call_sts(
        provider(&agent_server, &clock),
        &sts_server,
        &clock,
        Some(IdentityCache::no_cache()),
        3,
    )
    .await;
    assert_signed_with_vended_key(&sts_server, 3).await;
    assert_eq!(
        requests(&agent_server).await,
        1,
        "the provider caches by itself"
    );
}

/// The documented one-liner: the default chain with Pod Identity (here from an injected
/// environment) behind `RefreshAheadCache`; the SDK signs with the key the agent vended.
#[tokio::test]
async fn the_default_chain_behind_refresh_ahead_cache_signs_with_the_vended_key() {
    let expiry = aws_smithy_async::time::SharedTimeSource::default().now() + 6 * HOUR;
    let agent_server = agent(ok("AKIDPOD", expiry)).await;
    let sts_server = sts().await;
    let chain = DefaultCredentialsChain::builder()
        .env(Env::from_vars([
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri(&agent_server)),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", TOKEN.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]))
        .build()
        .await;
    let cache = RefreshAheadCache::new();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(sts_server.uri())
        .credentials_provider(chain)
        .identity_cache(cache.clone())
        .load()
        .await;
    let client = aws_sdk_sts::Client::new(&config);
    for _ in 0..3 {
        let output = client.get_caller_identity().send().await.unwrap();
        assert_eq!(output.account(), Some(ACCOUNT_ID));
    }
    assert_signed_with_vended_key(&sts_server, 3).await;
    assert_eq!(requests(&agent_server).await, 1);
    assert_eq!(
        cache.metrics().fetches,
        1,
        "one identity load for three requests"
    );
    // The user agent's business metrics name the credential source: `z` is CREDENTIALS_HTTP.
    for request in sts_server.received_requests().await.unwrap() {
        let agent = request.headers["x-amz-user-agent"].to_str().unwrap();
        let metrics = agent
            .split(' ')
            .find_map(|part| part.strip_prefix("m/"))
            .unwrap_or_default();
        assert!(metrics.split(',').any(|m| m == "z"), "{agent}");
    }
}
