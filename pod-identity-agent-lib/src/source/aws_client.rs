//! [`AwsClientSettings`]: the AWS client settings of the sources that call AWS
//! ([`EksAuthSource`](crate::source::eks_auth::EksAuthSource) and
//! [`SelfManagedSource`](crate::self_managed::SelfManagedSource)), and the one place they become
//! an `SdkConfig`.

use std::fmt;
use std::time::Duration;

use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_types::origin::Origin;

/// How a source's AWS client is configured: where its `SdkConfig` comes from, the region and
/// endpoint, the signing credentials, timeouts and retries.
///
/// Without [`sdk_config`](Self::sdk_config) the source loads aws-config's defaults (the
/// environment, the profile, IMDS) with `BehaviorVersion::latest()`; an `SdkConfig` given
/// keeps its own behavior version (one without gets `BehaviorVersion::latest()`). The settings
/// here override the `SdkConfig`'s. Timeouts and attempts left unset are the source's defaults
/// (EKS Auth: 1 s per attempt, 500 ms to connect; STS: 3 s and 1 s); attempts left unset follow
/// the `SdkConfig`'s retry settings (`AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`, the profile's
/// `max_attempts`/`retry_mode`), the standard mode with 3 attempts when nothing sets them.
#[derive(Clone, Default)]
pub struct AwsClientSettings {
    sdk_config: Option<SdkConfig>,
    region: Option<String>,
    endpoint_url: Option<String>,
    fips: bool,
    credentials_provider: Option<SharedCredentialsProvider>,
    uncached_credentials: bool,
    attempt_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    max_attempts: Option<u32>,
}

impl fmt::Debug for AwsClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credentials provider is left out: it may hold static keys.
        f.debug_struct("AwsClientSettings")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("fips", &self.fips)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// A source's defaults for what [`AwsClientSettings`] leaves unset.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientDefaults {
    attempt_timeout: Duration,
    connect_timeout: Duration,
    max_attempts: u32,
}

impl ClientDefaults {
    pub(crate) fn new(
        attempt_timeout: Duration,
        connect_timeout: Duration,
        max_attempts: u32,
    ) -> Self {
        Self {
            attempt_timeout,
            connect_timeout,
            max_attempts,
        }
    }
}

impl AwsClientSettings {
    /// Nothing set: aws-config's defaults and the source's timeouts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from this SDK configuration instead of loading aws-config's defaults.
    pub fn sdk_config(mut self, config: SdkConfig) -> Self {
        self.sdk_config = Some(config);
        self
    }

    /// The region (else the `SdkConfig`'s, or the environment's or profile's).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// An endpoint URL instead of the regional one (PrivateLink or a VPC endpoint, a local
    /// simulator, a test server).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Uses the service's FIPS endpoint.
    pub fn fips(mut self, fips: bool) -> Self {
        self.fips = fips;
        self
    }

    /// Signs with these credentials instead of the default chain's.
    pub fn credentials_provider(mut self, provider: impl ProvideCredentials + 'static) -> Self {
        self.credentials_provider = Some(SharedCredentialsProvider::new(provider));
        self.uncached_credentials = false;
        self
    }

    /// Signs with these credentials, asking `provider` on every call (no SDK identity cache in
    /// front): for a provider that caches itself and must be heard at once when its keys
    /// change, such as [`SharedCredentialsFile`](crate::node_credentials::SharedCredentialsFile).
    pub fn credentials_provider_uncached(
        mut self,
        provider: impl ProvideCredentials + 'static,
    ) -> Self {
        self.credentials_provider = Some(SharedCredentialsProvider::new(provider));
        self.uncached_credentials = true;
        self
    }

    /// The timeout of each attempt (default: the source's).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The connect timeout (default: the source's).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Attempts per call with the SDK's standard retry mode (at least 1; 1 turns retries off).
    /// Default: the `SdkConfig`'s retry settings.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// The `SdkConfig` a source builds its client from, or `None` when no region is set
    /// anywhere.
    pub(crate) async fn load(self, defaults: ClientDefaults) -> Option<SdkConfig> {
        let base = match self.sdk_config {
            Some(config) => config,
            None => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = &self.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                loader.load().await
            }
        };
        let retries = match self.max_attempts {
            Some(attempts) => RetryConfig::standard().with_max_attempts(attempts),
            None => base.retry_config().cloned().unwrap_or_else(|| {
                RetryConfig::standard().with_max_attempts(defaults.max_attempts)
            }),
        };
        let mut config = base
            .to_builder()
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(
                        self.attempt_timeout.unwrap_or(defaults.attempt_timeout),
                    )
                    .connect_timeout(self.connect_timeout.unwrap_or(defaults.connect_timeout))
                    .build(),
            )
            .retry_config(retries);
        if base.behavior_version().is_none() {
            config.set_behavior_version(Some(BehaviorVersion::latest()));
        }
        if let Some(region) = self.region {
            config = config.region(Region::new(region));
        }
        if let Some(url) = self.endpoint_url {
            // Set in code: it wins over the service's own `AWS_ENDPOINT_URL_*` variable.
            config = config.endpoint_url(url);
            config.insert_origin("endpoint_url", Origin::shared_config());
        }
        if self.fips {
            config = config.use_fips(true);
        }
        if let Some(provider) = self.credentials_provider {
            config = config.credentials_provider(provider);
            if self.uncached_credentials {
                config = config.identity_cache(IdentityCache::no_cache());
            }
        }
        let config = config.build();
        config.region().is_some().then_some(config)
    }
}
