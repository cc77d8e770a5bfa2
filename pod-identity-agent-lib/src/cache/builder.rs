//! Building a [`CredentialCache`].

use aws_smithy_async::time::SharedTimeSource;
use std::fmt;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use super::renewal::VIEW_NONE;
use super::{
    Config, CredentialCache, DEFAULT_CLIENT_MISS_BURST, DEFAULT_CLIENT_MISS_RATE,
    DEFAULT_FETCH_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONCURRENT_FETCHES,
    DEFAULT_MAX_ENTRIES, DEFAULT_MAX_RETENTION, DEFAULT_REFUSED_TTL, DEFAULT_RENEWAL_QPS,
    DEFAULT_RETRY_INTERVAL, PodLivenessSource, RotationValidator, Shared, State,
};
use crate::metrics::Metrics;
use crate::source::CredentialSource;
use crate::time::{ClientRateLimiter, RateLimiter};

/// Builds a [`CredentialCache`].
pub struct CredentialCacheBuilder<S> {
    source: S,
    config: Config,
    renewal_qps: u32,
    client_miss_budget: (u32, u32),
    max_concurrent_fetches: usize,
    clock: SharedTimeSource,
    metrics: Metrics,
    rotation: Option<Arc<dyn RotationValidator>>,
    pods: Option<Arc<dyn PodLivenessSource>>,
}

impl<S> fmt::Debug for CredentialCacheBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCacheBuilder")
            .field("config", &self.config)
            .field("renewal_qps", &self.renewal_qps)
            .field("client_miss_budget", &self.client_miss_budget)
            .field("max_concurrent_fetches", &self.max_concurrent_fetches)
            .finish_non_exhaustive()
    }
}

impl<S: CredentialSource> CredentialCacheBuilder<S> {
    /// The largest number of cached credentials (0 turns caching off).
    pub fn max_entries(mut self, entries: usize) -> Self {
        self.config.max_entries = entries;
        self
    }

    /// The longest time between renewals (zero turns caching off).
    pub fn max_retention(mut self, retention: Duration) -> Self {
        self.config.max_retention = retention;
        self
    }

    /// Renewals started per second at most (0 means no limit).
    pub fn renewal_qps(mut self, qps: u32) -> Self {
        self.renewal_qps = qps;
        self
    }

    /// An entry not read for this long is evicted instead of renewed.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.config.idle_timeout = idle;
        self
    }

    /// The wait before retrying a recoverable renewal failure, and the most random jitter
    /// added to it.
    pub fn retry_interval(mut self, interval: Duration, jitter: Duration) -> Self {
        self.config.retry_interval = interval;
        self.config.retry_jitter = jitter;
        self
    }

    /// How long an irrecoverable answer for a token is repeated without an upstream call
    /// (zero turns this off).
    pub fn refused_ttl(mut self, ttl: Duration) -> Self {
        self.config.refused_ttl = ttl;
        self
    }

    /// Upstream calls one client address may start: `burst` at once, then `per_second`; a
    /// rate of 0 turns the budget off. Requests without a client address are not held to it.
    pub fn client_miss_budget(mut self, per_second: u32, burst: u32) -> Self {
        self.client_miss_budget = (per_second, burst);
        self
    }

    /// Most request-path upstream calls at once (at least 1); more wait their turn.
    pub fn max_concurrent_fetches(mut self, fetches: usize) -> Self {
        self.max_concurrent_fetches = fetches.max(1);
        self
    }

    /// Longest upstream call, renewals included; a call cut off counts as a timeout.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.config.fetch_timeout = timeout;
        self
    }

    /// The wall clock for expirations.
    pub fn clock(mut self, clock: SharedTimeSource) -> Self {
        self.clock = clock;
        self
    }

    /// Where successful renewals (`hit`), fetches on the request path (`miss`), evictions,
    /// renewal errors and the size are counted.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Validates a pod's rotated token locally: on a miss for a token whose pod uid has a
    /// cached entry with more than 15 s left, the entry's credentials are served if `validator`
    /// accepts the token, and the entry takes the new token (later renewals use it).
    pub fn rotation_validator(mut self, validator: Arc<dyn RotationValidator>) -> Self {
        self.rotation = Some(validator);
        self
    }

    /// Asks `pods` before each renewal: no renewal (eviction) for a terminated pod, or for a
    /// pod not found whose entry is older than [`POD_NOT_FOUND_GRACE`](super::POD_NOT_FOUND_GRACE); an unknown answer
    /// renews (fails open).
    pub fn pod_liveness(mut self, pods: Arc<dyn PodLivenessSource>) -> Self {
        self.pods = Some(pods);
        self
    }

    /// Builds the cache. Its renewal task starts with the first cached entry.
    pub fn build(self) -> CredentialCache<S> {
        CredentialCache {
            shared: Arc::new(Shared {
                source: self.source,
                limiter: RateLimiter::new(self.renewal_qps, self.renewal_qps),
                miss_budget: ClientRateLimiter::new(
                    self.client_miss_budget.0,
                    self.client_miss_budget.1,
                ),
                fetches: Arc::new(Semaphore::new(self.max_concurrent_fetches)),
                config: self.config,
                clock: self.clock,
                metrics: self.metrics,
                rotation: self.rotation,
                pods: self.pods,
                pod_view: AtomicU8::new(VIEW_NONE),
                state: Mutex::new(State::default()),
                wake: Arc::new(Notify::new()),
                prehash: foldhash::quality::RandomState::default(),
            }),
        }
    }
}

impl<S: CredentialSource> CredentialCache<S> {
    /// A builder with the reference defaults.
    pub fn builder(source: S) -> CredentialCacheBuilder<S> {
        CredentialCacheBuilder {
            source,
            config: Config {
                max_entries: DEFAULT_MAX_ENTRIES,
                max_retention: DEFAULT_MAX_RETENTION,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                retry_interval: DEFAULT_RETRY_INTERVAL,
                retry_jitter: DEFAULT_RETRY_INTERVAL,
                refused_ttl: DEFAULT_REFUSED_TTL,
                fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            },
            renewal_qps: DEFAULT_RENEWAL_QPS,
            client_miss_budget: (DEFAULT_CLIENT_MISS_RATE, DEFAULT_CLIENT_MISS_BURST),
            max_concurrent_fetches: DEFAULT_MAX_CONCURRENT_FETCHES,
            clock: SharedTimeSource::default(),
            metrics: Metrics::default(),
            rotation: None,
            pods: None,
        }
    }

    /// A cache with the reference defaults.
    pub fn new(source: S) -> Self {
        Self::builder(source).build()
    }
}
