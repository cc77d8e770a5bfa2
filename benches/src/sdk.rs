//! The SDK's identity path, driven as the orchestrator drives it.
//!
//! The orchestrator resolves an identity with
//! `runtime_components.identity_cache().resolve_cached_identity(resolver, &runtime_components, cfg)`
//! (aws-smithy-runtime 1.10, `client/orchestrator/auth.rs`). [`CachedPath`] makes exactly that
//! call, either with runtime components built here or with those of a real SDK client
//! ([`CachedPath::of_client`]).

use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_async::time::SharedTimeSource;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::auth::AuthSchemeId;
use aws_smithy_runtime_api::client::identity::{
    Identity, IdentityFuture, ResolveCachedIdentity, SharedIdentityCache, SharedIdentityResolver,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::{
    GetIdentityResolver, RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::config_bag::ConfigBag;

/// The SigV4 auth scheme, whose identity resolver holds the credentials provider.
const SIGV4: AuthSchemeId = AuthSchemeId::new("sigv4");

/// aws-config's built-in container provider, configured from the process environment.
pub fn ecs_provider() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(EcsCredentialsProvider::builder().build())
}

/// An identity cache, a resolver and runtime components: one SDK identity resolution per call.
#[derive(Debug)]
pub struct CachedPath {
    cache: SharedIdentityCache,
    resolver: SharedIdentityResolver,
    components: RuntimeComponents,
    time: SharedTimeSource,
    bag: ConfigBag,
}

impl CachedPath {
    /// `cache` in front of `provider`, with the given time source and sleep, as a client would
    /// configure them.
    pub fn new(
        cache: SharedIdentityCache,
        provider: SharedCredentialsProvider,
        time: SharedTimeSource,
        sleep: SharedAsyncSleep,
    ) -> Result<Self, BoxError> {
        let resolver = SharedIdentityResolver::new(provider);
        let components = RuntimeComponentsBuilder::for_tests()
            .with_identity_cache(Some(cache.clone()))
            .with_identity_resolver(SIGV4, resolver.clone())
            .with_time_source(Some(time))
            .with_sleep_impl(Some(sleep))
            .build()?;
        Ok(Self {
            cache,
            resolver,
            time: components.time_source().unwrap_or_default(),
            components,
            bag: ConfigBag::base(),
        })
    }

    /// The SDK's default: `IdentityCache::lazy()` in front of `provider`, system clock, tokio
    /// sleep.
    pub fn lazy(provider: SharedCredentialsProvider) -> Result<Self, BoxError> {
        Self::new(
            IdentityCache::lazy().build(),
            provider,
            SharedTimeSource::default(),
            SharedAsyncSleep::new(TokioSleep::new()),
        )
    }

    /// The identity cache and SigV4 resolver of a real `aws-sdk-sts` client built from `config`:
    /// the runtime components the orchestrator passes to the cache, captured by an interceptor.
    pub async fn of_client(config: &SdkConfig) -> Result<Self, BoxError> {
        let captured = Capture::default();
        let sts_config = aws_sdk_sts::config::Builder::from(config)
            // Never reached: the interceptor stops the call before it is signed.
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(RetryConfig::disabled())
            .interceptor(captured.clone())
            .build();
        let client = aws_sdk_sts::Client::from_conf(sts_config);
        let _expected_error = client.get_caller_identity().send().await;
        let components = captured
            .0
            .lock()
            .map_err(|_| "capture lock poisoned")?
            .take()
            .ok_or("the client never reached signing")?;
        let resolver = GetIdentityResolver::identity_resolver(&components, SIGV4)
            .ok_or("the client has no SigV4 identity resolver")?;
        Ok(Self {
            cache: components.identity_cache(),
            resolver,
            time: components.time_source().unwrap_or_default(),
            components,
            bag: ConfigBag::base(),
        })
    }

    /// The clock of these runtime components (the system clock unless a test set one).
    pub fn time_source(&self) -> &SharedTimeSource {
        &self.time
    }

    /// What any identity cache's hit on this path costs at the least, done without a cache: the
    /// orchestrator's clone of the resolver (one reference count shared by every caller), one
    /// read of the client's clock (a cache must not serve an expired identity), and `identity`
    /// handed out in the ready [`IdentityFuture`] that `resolve_cached_identity` returns. The
    /// caller passes a clone of a kept identity (the orchestrator takes an owned one), of one
    /// private to the calling thread for the floor under contention.
    pub async fn floor(&self, identity: Identity) -> Result<Identity, BoxError> {
        drop(std::hint::black_box(self.resolver.clone()));
        std::hint::black_box(self.time.now());
        IdentityFuture::ready(Ok(identity)).await
    }

    /// One identity resolution, as the orchestrator makes it.
    pub async fn resolve(&self) -> Result<Identity, BoxError> {
        self.cache
            .resolve_cached_identity(self.resolver.clone(), &self.components, &self.bag)
            .await
    }
}

/// Keeps the runtime components of the call it sees, then stops the call.
#[derive(Clone, Debug, Default)]
struct Capture(Arc<Mutex<Option<RuntimeComponents>>>);

impl Intercept for Capture {
    fn name(&self) -> &'static str {
        "CaptureRuntimeComponents"
    }

    fn read_before_signing(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(runtime_components.clone());
        }
        Err("runtime components captured; the call stops here".into())
    }
}
