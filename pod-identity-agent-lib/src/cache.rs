//! The renewing credential cache.
//!
//! [`CredentialCache`] wraps a [`CredentialSource`] and is one itself. Contract:
//!
//! - **Keys** are the SHA-256 digest of the token; the raw token is never an index key. Each
//!   entry keeps what renewal needs: the decoded token (its raw text zeroized when the entry is
//!   evicted) and the cluster name.
//! - **Hits without decoding**: [`CredentialCache::cached`] answers for the raw `Authorization`
//!   bytes by their digest, checking the kept token's `exp`/`nbf` (core's
//!   [`ServiceAccountToken::validate_time`](pod_identity_core::ServiceAccountToken::validate_time)),
//!   so the handler decodes a token only on a miss. To spare hits the SHA-256 of a 1 KiB token too,
//!   a side index maps a randomly seeded 64-bit hash (foldhash) of each kept token to its
//!   digest; a candidate found there counts only if the kept token equals the request's bytes
//!   exactly (compared in constant time), which implies equal digests. Anything else (no
//!   candidate, a hash collision) falls back to the digest.
//! - **Bounded**: at most `max_entries` entries (2000); when full, the least recently *used*
//!   entry goes, where reads count as use (the reference's LRU ignores reads).
//! - **Strict single flight**: concurrent requests for one token make exactly one upstream call
//!   and all get its result, error included. The call runs in its own task, so a client that
//!   disconnects does not cancel it (aws/eks-pod-identity-agent#50), and the result is cached
//!   for the next request.
//! - **Renewal in the background**, ahead of expiry: after `min(max_retention, lifetime − lead)`
//!   where the lead is 5 minutes or half the lifetime if shorter (max retention 3 h), started
//!   at most `renewal_qps` per second (3). A recoverable failure keeps serving the current
//!   credentials while more than 15 s remain and retries after 60–120 s (jitter), or at 15 s
//!   before expiry if that comes first, evicting when that last retry fails; an irrecoverable
//!   failure evicts. No renewal for a token that has expired or for an entry
//!   nobody read within `idle_timeout` (7 h, longer than any credential lifetime, so a live pod
//!   always reads in time): those entries are evicted instead (the reference renews for gone
//!   pods until EKS Auth throttles it, #89, #171, #92).
//! - **Never stale**: credentials with 15 s or less left are not served; fetched ones are an
//!   error ([`SourceError::ExpiringCredentials`]).
//! - **Upstream protection** against hostile pods (every pod on the node can send any token):
//!   - an irrecoverable answer for a token (forged, expired, no association, access denied) is
//!     kept for `refused_ttl` (5 s) by token digest, at most 4096 tokens, and repeats are
//!     answered from it without an upstream call (`pod_identity_refused_tokens_served`);
//!   - each client address (the pod's IP, from [`CredentialRequest::client`]) has a budget of
//!     misses, upstream calls it starts: 10 at once, then 1 per second (`client_miss_budget`);
//!     beyond it the request gets 429 (`pod_identity_requests_limited{reason="client_misses"}`).
//!     Joining a call already in flight and hits cost nothing, so a pod's first request and its
//!     token rotations are far inside it, while unique forged tokens cannot turn into more than
//!     `burst + rate × seconds` upstream calls. Host-network pods share the node's address and
//!     its budget;
//!   - at most `max_concurrent_fetches` (64) request-path calls run at once; more wait their
//!     turn, within the handler's request timeout;
//!   - every upstream call, renewals included, is cut off after `fetch_timeout` (30 s) as a
//!     timeout, so a hung source cannot hold a token's flight forever;
//!   - a renewal answered `ThrottlingException` pauses all renewals, 2 s at first, doubling up
//!     to 2 minutes, until a renewal succeeds.
//! - **Pods** (optional, [`CredentialCacheBuilder::rotation_validator`] and
//!   [`CredentialCacheBuilder::pod_liveness`]; the `kubernetes` feature implements both traits):
//!   - each entry keeps its token's identity (issuer, namespace, service account, pod uid) and
//!     a pod-uid index finds the pod's latest entry. On a miss for a token whose pod uid has an
//!     entry with more than 15 s left, the token is validated locally against that entry's
//!     identity (outside the lock); on success the entry's credentials are served, and the
//!     entry is re-keyed to the new token, which later renewals use; otherwise the request goes
//!     upstream as any miss. A token that fails never gets the cached credentials. Results
//!     count in `pod_identity_local_validation{result}`;
//!   - before each renewal the pod view is asked: a terminated pod, or a pod not found whose
//!     entry is older than [`POD_NOT_FOUND_GRACE`] (60 s), is evicted instead of renewed; an
//!     unknown answer (the view not synced) renews as without a view, with a warning when that
//!     starts, and `pod_identity_pod_watch_synced` 0 (the gauge follows the view's answers at
//!     renewals). [`CredentialCache::evict_pod`] evicts a pod's
//!     entries at once (what a watch calls when a pod goes). Both count in
//!     `pod_identity_liveness_evictions{reason}`.
//! - `max_entries` 0 or `max_retention` 0 turns caching off (as in the reference): every request
//!   calls the source, still in its own task, with the time limit and the concurrency bound but
//!   no refused-token memory or miss budget.
//!
//! Time comes from tokio's clock (schedules) and the injected [`WallClock`](crate::time::WallClock)
//! (expirations), so tests run on paused time.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use pod_identity_core::container_credentials::MIN_REMAINING;
use pod_identity_core::{EksAuthErrorCode, ErrorClass, TokenError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use crate::metrics::{CacheState, Limited, Metrics};
use crate::source::{CredentialRequest, CredentialSource, IssuedCredentials, SourceError};
use crate::time::{ClientRateLimiter, RateLimiter, SharedWallClock};

/// Default largest number of cached credentials (the reference's).
pub const DEFAULT_MAX_ENTRIES: usize = 2000;
/// Default longest time between renewals (the reference's).
pub const DEFAULT_MAX_RETENTION: Duration = Duration::from_secs(3 * 60 * 60);
/// Default renewals started per second (the reference's `--max-service-qps`).
pub const DEFAULT_RENEWAL_QPS: u32 = 3;
/// Default time after its last read when an entry is no longer renewed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(7 * 60 * 60);
/// Default wait before retrying a recoverable renewal failure (plus up to as much jitter).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// How long before expiry a renewal is due at the latest (or half the lifetime if shorter).
const RENEWAL_LEAD: Duration = Duration::from_secs(5 * 60);
/// How long before the entry stops being served a renewal is due at the latest.
const RENEWAL_MARGIN: Duration = Duration::from_secs(5);
/// Default upstream calls a client address may start at once (the miss budget's burst).
pub const DEFAULT_CLIENT_MISS_BURST: u32 = 10;
/// Default upstream calls per second a client address may start once its burst is spent.
pub const DEFAULT_CLIENT_MISS_RATE: u32 = 1;
/// Default most request-path upstream calls at once.
pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 64;
/// Default longest upstream call.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// First pause of renewals after a throttled renewal.
const THROTTLE_PAUSE: Duration = Duration::from_secs(2);
/// Longest pause of renewals after throttled renewals.
const MAX_THROTTLE_PAUSE: Duration = Duration::from_secs(120);

/// A token whose pod the view does not know is renewed anyway while its entry is younger than
/// this (the pod may be too new to be seen).
pub const POD_NOT_FOUND_GRACE: Duration = Duration::from_secs(60);

/// The pod view has not been asked yet.
const VIEW_NONE: u8 = 0;
/// The pod view answered.
const VIEW_SYNCED: u8 = 1;
/// The pod view did not know (not synced).
const VIEW_UNKNOWN: u8 = 2;

mod pods;
mod refused;

pub use pods::{
    BoxFuture, PodIdentity, PodLivenessSource, PodState, RotationCheck, RotationValidator,
};
use refused::Refused;
pub use refused::{DEFAULT_REFUSED_TTL, MAX_REFUSED};

type Outcome = Result<IssuedCredentials, SourceError>;

/// A renewing, single-flight cache in front of a [`CredentialSource`].
pub struct CredentialCache<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for CredentialCache<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for CredentialCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("config", &self.shared.config)
            .field("entries", &self.shared.lock().entries.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`CredentialCache`].
pub struct CredentialCacheBuilder<S> {
    source: S,
    config: Config,
    renewal_qps: u32,
    client_miss_budget: (u32, u32),
    max_concurrent_fetches: usize,
    clock: SharedWallClock,
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

#[derive(Clone, Debug)]
struct Config {
    max_entries: usize,
    max_retention: Duration,
    idle_timeout: Duration,
    retry_interval: Duration,
    retry_jitter: Duration,
    refused_ttl: Duration,
    fetch_timeout: Duration,
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
    pub fn clock(mut self, clock: SharedWallClock) -> Self {
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
    /// pod not found whose entry is older than [`POD_NOT_FOUND_GRACE`]; an unknown answer
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
            clock: SharedWallClock::default(),
            metrics: Metrics::default(),
            rotation: None,
            pods: None,
        }
    }

    /// A cache with the reference defaults.
    pub fn new(source: S) -> Self {
        Self::builder(source).build()
    }

    /// Whether the cache caches (`max_entries` and `max_retention` both non-zero).
    pub fn is_enabled(&self) -> bool {
        let config = &self.shared.config;
        config.max_entries > 0 && !config.max_retention.is_zero()
    }

    /// Number of cached credentials.
    pub fn len(&self) -> usize {
        self.shared.lock().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached credentials for the raw token bytes `raw_token`, looked up by their digest
    /// without decoding them: `None` when nothing servable is cached (then decode and
    /// [`get`](Self::get)), `Some(Err(_))` when the kept token's `exp`/`nbf` fail at `now` (the
    /// error [`ServiceAccountToken::validate_time`] gives; the entry is left as it is), else a
    /// hit, counted and used as by `get`.
    pub fn cached(
        &self,
        raw_token: &[u8],
        now: SystemTime,
    ) -> Option<Result<IssuedCredentials, TokenError>> {
        if !self.is_enabled() {
            return None;
        }
        let shared = &self.shared;
        let prehash = shared.prehash.hash_one(raw_token);
        let mut state = shared.lock();
        let key = match state.by_prehash.get(&prehash) {
            Some(key)
                if state
                    .entries
                    .get(key)
                    .is_some_and(|entry| entry.kept.is(raw_token)) =>
            {
                *key
            }
            _ => {
                drop(state);
                let key = TokenDigest::of_bytes(raw_token);
                state = shared.lock();
                key
            }
        };
        let entry = state.entries.get(&key)?;
        if let Err(error) = entry.kept.request.token().validate_time(now) {
            return Some(Err(error));
        }
        // A stale entry is left to `get`, which evicts it and fetches.
        let issued = shared.hit(&mut state, &key)?;
        drop(state);
        Some(Ok(issued))
    }

    /// Cached credentials for `request`, or one upstream call shared by every concurrent
    /// request for the same token.
    pub async fn get(&self, request: &CredentialRequest) -> Result<IssuedCredentials, SourceError> {
        if !self.is_enabled() {
            return self.pass_through(request).await;
        }
        let shared = &self.shared;
        let key = TokenDigest::of(request);
        if let Some(issued) = self.continue_rotation(request, &key).await {
            return Ok(issued);
        }
        let mut flight = {
            let mut state = shared.lock();
            match shared.lookup(&mut state, &key) {
                Lookup::Hit(issued) => return Ok(issued),
                Lookup::InFlight(flight) => flight,
                Lookup::Refused(error) => {
                    shared.metrics.record_refused_token_served();
                    return Err(error);
                }
                Lookup::Miss => {
                    if let (Some(budget), Some(client)) = (&shared.miss_budget, request.client())
                        && !budget.check(client)
                    {
                        shared.metrics.record_limited(Limited::ClientMisses);
                        return Err(SourceError::ClientMissBudget);
                    }
                    shared.metrics.record_cache_state(CacheState::Miss);
                    let (done, flight) = watch::channel(None);
                    state.flights.insert(key, flight.clone());
                    tokio::spawn(fetch(shared.clone(), key, request.clone(), done));
                    flight
                }
            }
        };
        match flight.wait_for(Option::is_some).await {
            Ok(outcome) => (*outcome).clone().unwrap_or_else(|| Err(aborted())),
            Err(_) => Err(aborted()),
        }
    }

    /// Evicts every entry of the pod with this uid at once (its pod is gone; `reason` labels
    /// `pod_identity_liveness_evictions`); returns how many went.
    pub fn evict_pod(&self, pod_uid: &str, reason: &'static str) -> usize {
        let shared = &self.shared;
        let mut state = shared.lock();
        let keys: Vec<TokenDigest> = state
            .entries
            .iter()
            .filter(|(_, entry)| {
                entry
                    .kept
                    .identity
                    .as_ref()
                    .is_some_and(|identity| identity.pod_uid == pod_uid)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in &keys {
            shared.evict(&mut state, key, Eviction::PodGone);
            shared.metrics.record_liveness_eviction(reason);
        }
        keys.len()
    }

    /// A rotated token taking over its pod's entry: `Some` when the token's pod uid has a
    /// servable entry (another token) and the validator accepts the token against the entry's
    /// identity; then the entry is re-keyed to this token, which it keeps for renewals.
    async fn continue_rotation(
        &self,
        request: &CredentialRequest,
        key: &TokenDigest,
    ) -> Option<IssuedCredentials> {
        let shared = &self.shared;
        let validator = shared.rotation.as_ref()?;
        let uid = request
            .token()
            .claims()
            .kubernetes
            .as_ref()?
            .pod
            .as_ref()?
            .uid
            .clone();
        let (old_key, cached, generation) = {
            let state = shared.lock();
            if state.entries.contains_key(key) || state.flights.contains_key(key) {
                return None;
            }
            let old_key = *state.by_pod.get(&uid)?;
            let entry = state.entries.get(&old_key)?;
            if entry.issued.remaining(shared.clock.now()) <= MIN_REMAINING {
                return None;
            }
            (old_key, entry.kept.identity.clone()?, entry.generation)
        };
        let check = validator.validate(request.token(), &cached).await;
        shared.metrics.record_local_validation(check.result());
        if let RotationCheck::Failure(reason) = &check {
            tracing::info!(
                reason = reason.as_str(),
                namespace = cached.namespace.as_str(),
                service_account = cached.service_account.as_str(),
                "a rotated token failed local validation; asking the upstream"
            );
        }
        if check != RotationCheck::Success {
            return None;
        }
        let mut state = shared.lock();
        if !state.entries.contains_key(key) {
            if state
                .entries
                .get(&old_key)
                .is_none_or(|entry| entry.generation != generation)
            {
                return None;
            }
            state.rekey(old_key, *key, Kept::of(request), &shared.prehash);
        }
        shared.hit(&mut state, key)
    }

    async fn pass_through(&self, request: &CredentialRequest) -> Outcome {
        let shared = self.shared.clone();
        let request = request.clone();
        // Spawned so that a client going away does not cancel the upstream call.
        let call = tokio::spawn(async move {
            let outcome = shared.fetch_bounded(&request).await;
            outcome.and_then(|issued| shared.check_remaining(issued))
        });
        call.await.unwrap_or_else(|_| Err(aborted()))
    }

    /// A weak handle to the token kept for renewing `request`'s entry (tests check eviction
    /// drops it).
    #[cfg(test)]
    fn kept_request(&self, request: &CredentialRequest) -> Option<Weak<Kept>> {
        let state = self.shared.lock();
        state
            .entries
            .get(&TokenDigest::of(request))
            .map(|e| Arc::downgrade(&e.kept))
    }
}

impl<S: CredentialSource> CredentialSource for CredentialCache<S> {
    fn credentials(
        &self,
        request: &CredentialRequest,
    ) -> impl Future<Output = Result<IssuedCredentials, SourceError>> + Send {
        self.get(request)
    }
}

fn aborted() -> SourceError {
    SourceError::unavailable(Aborted)
}

/// The upstream call ended without an answer (its task panicked).
#[derive(Debug, thiserror::Error)]
#[error("the upstream call ended without an answer")]
struct Aborted;

/// SHA-256 of the raw token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(request: &CredentialRequest) -> Self {
        Self::of_bytes(request.token().expose_secret().as_bytes())
    }

    /// The digest of raw `Authorization` bytes: a token decodes only from valid UTF-8, kept
    /// verbatim, so these are the bytes [`of`](Self::of) digests for the same header.
    fn of_bytes(raw_token: &[u8]) -> Self {
        Self(Sha256::digest(raw_token).into())
    }
}

struct Shared<S> {
    source: S,
    config: Config,
    clock: SharedWallClock,
    metrics: Metrics,
    rotation: Option<Arc<dyn RotationValidator>>,
    pods: Option<Arc<dyn PodLivenessSource>>,
    /// What the pod view answered last: `VIEW_NONE`, `VIEW_SYNCED` or `VIEW_UNKNOWN`.
    pod_view: AtomicU8,
    limiter: Option<RateLimiter>,
    /// Upstream calls each client address may start.
    miss_budget: Option<ClientRateLimiter>,
    /// Request-path upstream calls running at once.
    fetches: Arc<Semaphore>,
    state: Mutex<State>,
    wake: Arc<Notify>,
    /// Seeds the side index's hash of kept tokens.
    prehash: foldhash::quality::RandomState,
}

impl<S> Drop for Shared<S> {
    fn drop(&mut self) {
        // Lets the renewal task see the cache is gone and end.
        self.wake.notify_one();
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<TokenDigest, Entry>,
    /// Use order: the first is the least recently used.
    recency: BTreeMap<u64, TokenDigest>,
    /// Renewal times.
    schedule: BTreeMap<(Instant, u64), TokenDigest>,
    flights: HashMap<TokenDigest, watch::Receiver<Option<Outcome>>>,
    /// Side index: the seeded 64-bit hash of an entry's kept token → its digest (on a
    /// collision, the latest entry; the others are found by digest).
    by_prehash: HashMap<u64, TokenDigest>,
    /// Pod uid → the digest of the pod's latest entry (other entries of the pod are found by
    /// digest).
    by_pod: HashMap<String, TokenDigest>,
    /// Tokens the upstream refused for good a moment ago.
    refused: Refused,
    /// Renewals wait until then after a throttled renewal.
    renewals_paused_until: Option<Instant>,
    /// The next pause after a throttled renewal.
    throttle_pause: Duration,
    counter: u64,
    renewing_started: bool,
}

impl State {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn touch(&mut self, key: TokenDigest) {
        let tick = self.next();
        if let Some(entry) = self.entries.get_mut(&key) {
            self.recency.remove(&entry.used);
            entry.used = tick;
            self.recency.insert(tick, key);
        }
    }

    fn schedule(&mut self, key: TokenDigest, at: Instant) {
        let seq = self.next();
        if let Some(entry) = self.entries.get_mut(&key) {
            if let Some(old) = entry.renewal.replace((at, seq)) {
                self.schedule.remove(&old);
            }
            self.schedule.insert((at, seq), key);
        }
    }

    fn remove(&mut self, key: &TokenDigest) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        if self.by_prehash.get(&entry.prehash) == Some(key) {
            self.by_prehash.remove(&entry.prehash);
        }
        if let Some(identity) = &entry.kept.identity
            && self.by_pod.get(&identity.pod_uid) == Some(key)
        {
            self.by_pod.remove(&identity.pod_uid);
        }
        self.recency.remove(&entry.used);
        if let Some(at) = entry.renewal {
            self.schedule.remove(&at);
        }
        Some(entry)
    }

    /// Moves the entry at `old` to `new`, keeping `kept` (a rotated token of the same pod) for
    /// renewals; its renewal stays due when it was, or is due now if one was running.
    fn rekey(
        &mut self,
        old: TokenDigest,
        new: TokenDigest,
        kept: Kept,
        prehash: &foldhash::quality::RandomState,
    ) {
        let Some(mut entry) = self.remove(&old) else {
            return;
        };
        let at = entry.renewal.take().map_or_else(Instant::now, |(at, _)| at);
        entry.prehash = prehash.hash_one(kept.token_bytes());
        entry.kept = Arc::new(kept);
        self.by_prehash.insert(entry.prehash, new);
        if let Some(identity) = &entry.kept.identity {
            self.by_pod.insert(identity.pod_uid.clone(), new);
        }
        self.recency.insert(entry.used, new);
        self.entries.insert(new, entry);
        self.schedule(new, at);
    }
}

struct Entry {
    /// Kept to renew; dropping the last handle zeroizes the token.
    kept: Arc<Kept>,
    /// The kept token's hash in `by_prehash`.
    prehash: u64,
    issued: IssuedCredentials,
    generation: u64,
    last_read: Instant,
    /// When the entry was first cached (a rotation keeps it).
    created: Instant,
    used: u64,
    renewal: Option<(Instant, u64)>,
}

/// What renewal needs of a request: the decoded token (its raw text zeroized when the last
/// handle goes) and the cluster name, without the client address.
struct Kept {
    request: CredentialRequest,
    /// Who the token names, when it has the `kubernetes.io` claims.
    identity: Option<PodIdentity>,
}

impl Kept {
    fn of(request: &CredentialRequest) -> Self {
        Self {
            request: CredentialRequest::new(
                request.cluster_name().clone(),
                request.token().clone(),
            ),
            identity: PodIdentity::of(request.token()),
        }
    }

    /// The kept token's raw bytes.
    fn token_bytes(&self) -> &[u8] {
        self.request.token().expose_secret().as_bytes()
    }

    /// Whether the kept token is exactly `raw_token` (in constant time for equal lengths).
    fn is(&self, raw_token: &[u8]) -> bool {
        bool::from(self.token_bytes().ct_eq(raw_token))
    }
}

enum Lookup {
    Hit(IssuedCredentials),
    InFlight(watch::Receiver<Option<Outcome>>),
    /// The upstream refused this token for good a moment ago.
    Refused(SourceError),
    Miss,
}

/// A renewal taken off the schedule.
struct Renewal {
    key: TokenDigest,
    generation: u64,
    kept: Arc<Kept>,
}

#[derive(Clone, Copy, Debug)]
enum Eviction {
    Stale,
    Capacity,
    Irrecoverable,
    TokenExpired,
    Idle,
    /// The pod is gone (reported by the pod view).
    PodGone,
    /// The pod has finished.
    PodTerminated,
    /// The pod is not on this node any more.
    PodNotFound,
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: CredentialSource> Shared<S> {
    /// The entry's credentials if servable (more than [`MIN_REMAINING`] left), marked used.
    fn hit(&self, state: &mut State, key: &TokenDigest) -> Option<IssuedCredentials> {
        let entry = state.entries.get_mut(key)?;
        if entry.issued.remaining(self.clock.now()) <= MIN_REMAINING {
            return None;
        }
        entry.last_read = Instant::now();
        let issued = entry.issued.clone();
        state.touch(*key);
        Some(issued)
    }

    fn lookup(&self, state: &mut State, key: &TokenDigest) -> Lookup {
        if let Some(issued) = self.hit(state, key) {
            return Lookup::Hit(issued);
        }
        if state.entries.contains_key(key) {
            self.evict(state, key, Eviction::Stale);
        }
        match state.flights.get(key) {
            // A flight whose sender is gone never ran (its runtime shut down first): fetch anew
            // rather than answer every later request for the token with its abort.
            Some(flight) if flight.has_changed().is_ok() => Lookup::InFlight(flight.clone()),
            _ => match state.refused.get(key, Instant::now()) {
                Some(error) => Lookup::Refused(error),
                None => Lookup::Miss,
            },
        }
    }

    fn check_remaining(&self, issued: IssuedCredentials) -> Outcome {
        issued.servable(self.clock.now())
    }

    /// One request-path upstream call: waits for a place among the concurrent fetches, and
    /// gives up (as a timeout) after the fetch timeout, waiting included.
    async fn fetch_bounded(&self, request: &CredentialRequest) -> Outcome {
        let call = async {
            // The semaphore is never closed.
            let _place = self.fetches.acquire().await;
            self.source.credentials(request).await
        };
        tokio::time::timeout(self.config.fetch_timeout, call)
            .await
            .unwrap_or(Err(SourceError::Timeout))
    }

    /// One renewal's upstream call, given up (as a timeout) after the fetch timeout.
    async fn renew_bounded(&self, request: &CredentialRequest) -> Outcome {
        tokio::time::timeout(self.config.fetch_timeout, self.source.credentials(request))
            .await
            .unwrap_or(Err(SourceError::Timeout))
    }

    /// When fresh credentials are renewed: ahead of expiry, at most `max_retention` from now.
    ///
    /// The renewal is due while the entry is still served (more than [`MIN_REMAINING`] left, plus
    /// a margin), so a request never finds it stale and starts a second upstream call beside the
    /// renewal. Credentials that are servable only briefly renew at half their servable time.
    fn renewal_delay(&self, issued: &IssuedCredentials) -> Duration {
        let lifetime = issued.remaining(self.clock.now());
        let servable = lifetime.saturating_sub(MIN_REMAINING);
        let lead = RENEWAL_LEAD
            .min(lifetime / 2)
            .max(MIN_REMAINING + RENEWAL_MARGIN);
        let delay = lifetime.saturating_sub(lead).max(servable / 2);
        self.config.max_retention.min(delay)
    }

    fn evict(&self, state: &mut State, key: &TokenDigest, why: Eviction) {
        if let Some(entry) = state.remove(key) {
            self.metrics.record_cache_state(CacheState::Evicted);
            self.metrics.set_cache_size(state.entries.len());
            tracing::info!(
                reason = ?why,
                association_id = entry.issued.association().map(|a| a.association_id.as_str()),
                "evicted credentials from the cache"
            );
        }
    }

    fn insert(
        self: &Arc<Self>,
        state: &mut State,
        key: TokenDigest,
        kept: Kept,
        issued: IssuedCredentials,
    ) {
        self.evict(state, &key, Eviction::Stale);
        while state.entries.len() >= self.config.max_entries {
            let Some((_, &oldest)) = state.recency.first_key_value() else {
                break;
            };
            self.evict(state, &oldest, Eviction::Capacity);
        }
        let renew_at = Instant::now() + self.renewal_delay(&issued);
        let generation = state.next();
        let used = state.next();
        let prehash = self.prehash.hash_one(kept.token_bytes());
        state.by_prehash.insert(prehash, key);
        if let Some(identity) = &kept.identity {
            state.by_pod.insert(identity.pod_uid.clone(), key);
        }
        state.entries.insert(
            key,
            Entry {
                kept: Arc::new(kept),
                prehash,
                issued,
                generation,
                last_read: Instant::now(),
                created: Instant::now(),
                used,
                renewal: None,
            },
        );
        state.recency.insert(used, key);
        state.schedule(key, renew_at);
        self.metrics.set_cache_size(state.entries.len());
        if !state.renewing_started {
            state.renewing_started = true;
            tokio::spawn(renew_due(Arc::downgrade(self), self.wake.clone()));
        }
        self.wake.notify_one();
    }

    /// Takes the first due renewal off the schedule: evicts it if its token expired or nobody
    /// read it lately, else returns it to renew.
    fn take_due(&self) -> Option<Result<Renewal, Instant>> {
        let mut state = self.lock();
        let (&(at, seq), &key) = state.schedule.first_key_value()?;
        let now = Instant::now();
        if at > now {
            return Some(Err(at));
        }
        if let Some(until) = state.renewals_paused_until
            && until > now
        {
            return Some(Err(until));
        }
        state.schedule.remove(&(at, seq));
        let Some(entry) = state.entries.get_mut(&key) else {
            return Some(Err(now));
        };
        entry.renewal = None;
        let why = if entry
            .kept
            .request
            .token()
            .validate_time(self.clock.now())
            .is_err()
        {
            Some(Eviction::TokenExpired)
        } else if now.saturating_duration_since(entry.last_read) >= self.config.idle_timeout {
            Some(Eviction::Idle)
        } else {
            self.pod_gone(entry, now)
        };
        let renewal = Renewal {
            key,
            generation: entry.generation,
            kept: entry.kept.clone(),
        };
        if let Some(why) = why {
            self.evict(&mut state, &key, why);
            return Some(Err(now));
        }
        Some(Ok(renewal))
    }

    /// Whether the entry's pod is gone, as the pod view says (none: renew).
    fn pod_gone(&self, entry: &Entry, now: Instant) -> Option<Eviction> {
        let pods = self.pods.as_ref()?;
        let identity = entry.kept.identity.as_ref()?;
        let state = pods.pod_state(&identity.pod_uid);
        let synced = state != PodState::Unknown;
        self.metrics.set_pod_watch_synced(synced);
        // Logged when it changes, not at every renewal.
        let was = self.pod_view.swap(
            if synced { VIEW_SYNCED } else { VIEW_UNKNOWN },
            Ordering::Relaxed,
        );
        if synced && was == VIEW_UNKNOWN {
            tracing::info!("the pod view is synced; no renewals for gone pods");
        } else if !synced && was != VIEW_UNKNOWN {
            tracing::warn!("the pod view is not synced; renewing without knowing whether pods run");
        }
        match state {
            PodState::Terminated => {
                self.metrics.record_liveness_eviction("terminated");
                Some(Eviction::PodTerminated)
            }
            PodState::NotFound
                if now.saturating_duration_since(entry.created) >= POD_NOT_FOUND_GRACE =>
            {
                self.metrics.record_liveness_eviction("not_found");
                Some(Eviction::PodNotFound)
            }
            _ => None,
        }
    }

    /// Puts a renewal back on the schedule, at the end of the pause, if renewals are paused.
    fn defer_if_paused(&self, renewal: &Renewal) -> bool {
        let mut state = self.lock();
        let Some(until) = state
            .renewals_paused_until
            .filter(|until| *until > Instant::now())
        else {
            return false;
        };
        if state
            .entries
            .get(&renewal.key)
            .is_some_and(|entry| entry.generation == renewal.generation)
        {
            state.schedule(renewal.key, until);
        }
        true
    }

    fn finish_renewal(&self, renewal: &Renewal, outcome: Outcome) {
        let mut state = self.lock();
        match &outcome {
            Ok(_) => state.throttle_pause = THROTTLE_PAUSE,
            Err(error) if is_throttling(error) => {
                let pause = state.throttle_pause.max(THROTTLE_PAUSE);
                state.renewals_paused_until = Some(Instant::now() + pause);
                state.throttle_pause = (pause * 2).min(MAX_THROTTLE_PAUSE);
                tracing::warn!(pause = ?pause, "the upstream throttles renewals; pausing them");
            }
            Err(_) => {}
        }
        let Some(entry) = state.entries.get_mut(&renewal.key) else {
            return;
        };
        if entry.generation != renewal.generation {
            return;
        }
        match outcome {
            Ok(issued) => {
                // The reference's `hit`: a renewal that succeeded, not a cached read.
                self.metrics.record_cache_state(CacheState::Hit);
                let at = Instant::now() + self.renewal_delay(&issued);
                entry.issued = issued;
                state.schedule(renewal.key, at);
            }
            Err(error) => {
                let recoverable = error.class() == ErrorClass::Recoverable;
                self.metrics.record_cache_error(recoverable, error.code());
                let remaining = entry.issued.remaining(self.clock.now());
                tracing::warn!(
                    error = %crate::error::ErrorChain(&error),
                    recoverable,
                    association_id = entry.issued.association().map(|a| a.association_id.as_str()),
                    "renewing credentials failed"
                );
                if !recoverable {
                    self.evict(&mut state, &renewal.key, Eviction::Irrecoverable);
                } else if remaining <= MIN_REMAINING {
                    self.evict(&mut state, &renewal.key, Eviction::Stale);
                } else {
                    let jitter_ms = fastrand::u64(
                        0..=self
                            .config
                            .retry_jitter
                            .as_millis()
                            .try_into()
                            .unwrap_or(u64::MAX),
                    );
                    let retry = self
                        .config
                        .retry_interval
                        .saturating_add(Duration::from_millis(jitter_ms));
                    let stale_in = remaining - MIN_REMAINING;
                    state.schedule(renewal.key, Instant::now() + retry.min(stale_in));
                }
            }
        }
        self.wake.notify_one();
    }
}

/// Whether the upstream answered that it throttles us.
fn is_throttling(error: &SourceError) -> bool {
    matches!(error, SourceError::EksAuth(error) if *error.code() == EksAuthErrorCode::Throttling)
}

/// The single upstream call of a flight.
async fn fetch<S: CredentialSource>(
    shared: Arc<Shared<S>>,
    key: TokenDigest,
    request: CredentialRequest,
    done: watch::Sender<Option<Outcome>>,
) {
    // Ends the flight even if the source panics, so the next request tries again.
    struct EndFlight<'a, S: CredentialSource> {
        shared: &'a Shared<S>,
        key: TokenDigest,
        armed: bool,
    }
    impl<S: CredentialSource> Drop for EndFlight<'_, S> {
        fn drop(&mut self) {
            if self.armed {
                self.shared.lock().flights.remove(&self.key);
            }
        }
    }
    let mut end_flight = EndFlight {
        shared: &shared,
        key,
        armed: true,
    };
    let outcome = shared.fetch_bounded(&request).await;
    let outcome = outcome.and_then(|issued| shared.check_remaining(issued));
    {
        let mut state = shared.lock();
        state.flights.remove(&key);
        end_flight.armed = false;
        match &outcome {
            Ok(issued) => {
                state.refused.remove(&key);
                shared.insert(&mut state, key, Kept::of(&request), issued.clone());
            }
            Err(error @ SourceError::EksAuth(_))
                if error.class() == ErrorClass::Irrecoverable
                    && !shared.config.refused_ttl.is_zero() =>
            {
                let now = Instant::now();
                state
                    .refused
                    .insert(key, error.clone(), now, now + shared.config.refused_ttl);
            }
            Err(_) => {}
        }
    }
    let _ = done.send(Some(outcome));
}

/// The renewal task: starts due renewals, rate-limited, until the cache is dropped.
async fn renew_due<S: CredentialSource>(cache: Weak<Shared<S>>, wake: Arc<Notify>) {
    loop {
        let due = match cache.upgrade() {
            Some(shared) => shared.take_due(),
            None => return,
        };
        match due {
            Some(Ok(renewal)) => {
                let Some(shared) = cache.upgrade() else {
                    return;
                };
                if let Some(limiter) = &shared.limiter {
                    limiter.until_ready().await;
                }
                // A throttled answer may have paused renewals while this one waited its turn.
                if shared.defer_if_paused(&renewal) {
                    continue;
                }
                tokio::spawn(async move {
                    let outcome = shared.renew_bounded(&renewal.kept.request).await;
                    let outcome = outcome.and_then(|issued| shared.check_remaining(issued));
                    shared.finish_renewal(&renewal, outcome);
                });
            }
            Some(Err(at)) if at <= Instant::now() => {}
            Some(Err(at)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use pod_identity_core::EksAuthError;

    use super::*;
    use crate::test_support::{FakeSource, day_token, request, settle, token, wall_clock};

    const HOUR: Duration = Duration::from_secs(60 * 60);
    const MINUTE: Duration = Duration::from_secs(60);

    fn builder(source: &FakeSource) -> CredentialCacheBuilder<FakeSource> {
        CredentialCache::builder(source.clone())
            .clock(wall_clock())
            .retry_interval(MINUTE, Duration::ZERO)
    }

    fn eks_error(code: &str, status: u16) -> SourceError {
        SourceError::EksAuth(EksAuthError::from_http(
            status,
            Some(code),
            Some("req"),
            br#"{"message":"m"}"#,
        ))
    }

    async fn key_id(cache: &CredentialCache<FakeSource>, token: &str) -> String {
        cache
            .get(&request(token))
            .await
            .expect("credentials")
            .credentials()
            .access_key_id
            .clone()
    }

    /// Moves tokio's clock (and the wall clock) by `by`, letting due tasks run.
    async fn advance(by: Duration) {
        tokio::time::advance(by).await;
        settle().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_request_is_a_hit() {
        let source = FakeSource::new(wall_clock());
        let metrics = Metrics::new();
        let cache = builder(&source).metrics(metrics.clone()).build();
        let token = day_token("p");
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
        assert_eq!(source.calls(), 1);
        assert_eq!(cache.len(), 1);
        let text = metrics.encode();
        assert!(
            text.contains("pod_identity_cache_state{state=\"miss\"} 1"),
            "{text}"
        );
        // `hit` counts successful renewals (the reference's meaning), not cached reads.
        assert!(!text.contains("state=\"hit\""), "{text}");
        assert!(text.contains("pod_identity_cache_size 1"), "{text}");
    }

    async fn concurrent_requests_make_one_call(n: usize) {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).build();
        let token = day_token("p");
        source.close();
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..n {
            let cache = cache.clone();
            let request = request(&token);
            requests.spawn(async move { cache.get(&request).await });
        }
        settle().await;
        assert_eq!(source.calls(), 1);
        source.open();
        let mut answered = 0;
        while let Some(outcome) = requests.join_next().await {
            let issued = outcome.unwrap().unwrap();
            assert_eq!(issued.credentials().access_key_id, "ASIAFAKE1");
            answered += 1;
        }
        assert_eq!(answered, n);
        assert_eq!(source.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sixteen_concurrent_requests_for_one_token_make_one_upstream_call() {
        concurrent_requests_make_one_call(16).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_concurrent_requests_for_one_token_make_one_upstream_call() {
        concurrent_requests_make_one_call(1000).await;
    }

    #[tokio::test(start_paused = true)]
    async fn every_waiter_gets_the_error_of_the_single_call_and_the_next_request_retries() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).build();
        let token = day_token("p");
        source.close();
        source.fail_next(eks_error("AccessDeniedException", 403));
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let cache = cache.clone();
            let request = request(&token);
            requests.spawn(async move { cache.get(&request).await });
        }
        settle().await;
        source.open();
        while let Some(outcome) = requests.join_next().await {
            let error = outcome.unwrap().unwrap_err();
            assert_eq!(error.code(), "AccessDeniedException");
        }
        assert_eq!(source.calls(), 1);
        assert!(cache.is_empty());
        // The irrecoverable answer is repeated for the refused-token time, without a call...
        let repeated = cache.get(&request(&token)).await.unwrap_err();
        assert_eq!(repeated.code(), "AccessDeniedException");
        assert_eq!(source.calls(), 1);
        // ...and then the next request calls again.
        advance(DEFAULT_REFUSED_TTL).await;
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE2");
        assert_eq!(source.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn recoverable_errors_are_not_remembered() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).build();
        let token = day_token("p");
        for (code, status) in [
            ("ThrottlingException", 429),
            ("InternalServerException", 500),
        ] {
            source.fail_next(eks_error(code, status));
            assert_eq!(cache.get(&request(&token)).await.unwrap_err().code(), code);
        }
        source.fail_next(SourceError::Timeout);
        assert!(cache.get(&request(&token)).await.is_err());
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE4");
        assert_eq!(source.calls(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_refused_token_memory_is_per_token_and_can_be_turned_off() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).build();
        source.fail_always(Some(eks_error("InvalidTokenException", 400)));
        for pod in ["a", "b"] {
            for _ in 0..3 {
                assert!(cache.get(&request(&day_token(pod))).await.is_err());
            }
        }
        assert_eq!(source.calls(), 2, "one call per distinct token");

        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).refused_ttl(Duration::ZERO).build();
        source.fail_always(Some(eks_error("InvalidTokenException", 400)));
        for _ in 0..3 {
            assert!(cache.get(&request(&day_token("a"))).await.is_err());
        }
        assert_eq!(source.calls(), 3);
    }

    fn from_client(token: &str, client: [u8; 4]) -> CredentialRequest {
        request(token).with_client(std::net::IpAddr::from(client))
    }

    #[tokio::test(start_paused = true)]
    async fn unique_tokens_from_one_client_spend_its_miss_budget_and_not_the_others() {
        let source = FakeSource::new(wall_clock());
        let metrics = Metrics::new();
        let cache = builder(&source).metrics(metrics.clone()).build();
        let attacker = [10, 0, 0, 66];
        // Forged tokens: the upstream refuses each one.
        source.fail_always(Some(eks_error("InvalidTokenException", 400)));
        let mut limited = 0;
        for n in 0..100 {
            let outcome = cache
                .get(&from_client(&day_token(&format!("forged-{n}")), attacker))
                .await;
            if matches!(outcome, Err(SourceError::ClientMissBudget)) {
                limited += 1;
            }
        }
        assert_eq!(source.calls(), DEFAULT_CLIENT_MISS_BURST as usize);
        assert_eq!(limited, 100 - DEFAULT_CLIENT_MISS_BURST as usize);
        assert!(
            SourceError::ClientMissBudget.to_agent_error().status() == 429,
            "the client is told to slow down"
        );
        assert!(
            metrics
                .encode()
                .contains("pod_identity_requests_limited{reason=\"client_misses\"} 90"),
            "{}",
            metrics.encode()
        );
        // Another pod is not held to the attacker's budget.
        source.fail_always(None);
        assert!(
            cache
                .get(&from_client(&day_token("good"), [10, 0, 0, 7]))
                .await
                .is_ok()
        );
        // The attacker's budget refills at its rate.
        source.fail_always(Some(eks_error("InvalidTokenException", 400)));
        advance(Duration::from_secs(1)).await;
        let calls = source.calls();
        let _ = cache
            .get(&from_client(&day_token("forged-a"), attacker))
            .await;
        let second = cache
            .get(&from_client(&day_token("forged-b"), attacker))
            .await;
        assert_eq!(source.calls(), calls + 1);
        assert!(matches!(second, Err(SourceError::ClientMissBudget)));
    }

    #[tokio::test(start_paused = true)]
    async fn hits_refused_tokens_and_calls_in_flight_cost_no_budget() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).client_miss_budget(1, 1).build();
        let client = [10, 0, 0, 1];
        let token = day_token("p");
        // A thousand concurrent requests for one token: one miss.
        source.close();
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let cache = cache.clone();
            let request = from_client(&token, client);
            requests.spawn(async move { cache.get(&request).await });
        }
        settle().await;
        source.open();
        while let Some(outcome) = requests.join_next().await {
            assert!(outcome.unwrap().is_ok());
        }
        // Hits afterwards.
        for _ in 0..10 {
            assert!(cache.get(&from_client(&token, client)).await.is_ok());
        }
        assert_eq!(source.calls(), 1);
        // Budget spent: a new token is refused without a call.
        let other = cache.get(&from_client(&day_token("q"), client)).await;
        assert!(matches!(other, Err(SourceError::ClientMissBudget)));
        // Without a client address, nothing is held to a budget.
        assert!(cache.get(&request(&day_token("q"))).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_upstream_call_is_cut_off_and_the_token_is_not_stuck() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).build();
        let token = day_token("p");
        source.close();
        let waiting = tokio::spawn({
            let cache = cache.clone();
            let request = request(&token);
            async move { cache.get(&request).await }
        });
        advance(DEFAULT_FETCH_TIMEOUT - Duration::from_millis(1)).await;
        assert!(!waiting.is_finished());
        advance(Duration::from_millis(1)).await;
        let outcome = waiting.await.unwrap();
        assert!(matches!(outcome, Err(SourceError::Timeout)), "{outcome:?}");
        source.open();
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE2");
    }

    #[tokio::test(start_paused = true)]
    async fn request_path_calls_are_bounded_overall_and_the_rest_wait_their_turn() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).max_concurrent_fetches(2).build();
        source.close();
        let mut requests = tokio::task::JoinSet::new();
        for pod in 0..5 {
            let cache = cache.clone();
            let request = request(&day_token(&format!("p{pod}")));
            requests.spawn(async move { cache.get(&request).await });
        }
        settle().await;
        assert_eq!(source.calls(), 2, "two calls at once");
        source.open();
        while let Some(outcome) = requests.join_next().await {
            assert!(outcome.unwrap().is_ok());
        }
        assert_eq!(source.calls(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_renewals_pause_every_renewal_and_back_off() {
        let source = FakeSource::new(wall_clock());
        // One renewal a second: without the pause, the three due together would start 1 s apart.
        let cache = builder(&source).renewal_qps(1).build();
        for pod in 0..3 {
            key_id(&cache, &day_token(&format!("p{pod}"))).await;
        }
        source.fail_always(Some(eks_error("ThrottlingException", 429)));
        advance(3 * HOUR).await;
        assert_eq!(source.calls(), 4, "the first renewal, throttled");
        advance(Duration::from_secs(1)).await;
        assert_eq!(source.calls(), 4, "paused for 2 s");
        advance(Duration::from_secs(1)).await;
        assert_eq!(source.calls(), 5, "the second renewal, throttled again");
        advance(Duration::from_secs(3)).await;
        assert_eq!(source.calls(), 5, "paused for 4 s now");
        advance(Duration::from_secs(1)).await;
        assert_eq!(source.calls(), 6);
        // A renewal that succeeds ends the backing off.
        source.fail_always(None);
        for _ in 0..600 {
            advance(Duration::from_secs(1)).await;
        }
        assert_eq!(cache.len(), 3, "every entry kept");
        let renewed = source.calls();
        assert_eq!(renewed, 9, "and renewed at its retry time");
        advance(3 * HOUR - 11 * MINUTE).await;
        assert_eq!(
            source.calls(),
            renewed,
            "nothing due before the next period"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_going_away_does_not_cancel_the_upstream_call() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).build();
        let token = day_token("p");
        source.close();
        let client = {
            let cache = cache.clone();
            let request = request(&token);
            tokio::spawn(async move { cache.get(&request).await })
        };
        settle().await;
        client.abort();
        assert!(client.await.unwrap_err().is_cancelled());
        source.open();
        settle().await;
        assert_eq!(cache.len(), 1);
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
        assert_eq!(source.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_entry_goes_and_reads_count_as_use() {
        let source = FakeSource::new(wall_clock());
        let metrics = Metrics::new();
        let cache = builder(&source)
            .max_entries(2)
            .metrics(metrics.clone())
            .build();
        let (a, b, c) = (day_token("a"), day_token("b"), day_token("c"));
        key_id(&cache, &a).await;
        key_id(&cache, &b).await;
        // Reading `a` makes `b` the least recently used.
        key_id(&cache, &a).await;
        key_id(&cache, &c).await;
        assert_eq!(cache.len(), 2);
        assert_eq!(source.calls(), 3);
        key_id(&cache, &a).await;
        assert_eq!(source.calls(), 3, "a was kept");
        key_id(&cache, &b).await;
        assert_eq!(source.calls(), 4, "b was evicted");
        assert!(
            metrics
                .encode()
                .contains("pod_identity_cache_state{state=\"evicted\"} 2")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_happens_at_the_max_retention_for_long_lived_credentials() {
        let source = FakeSource::new(wall_clock());
        let metrics = Metrics::new();
        let cache = builder(&source).metrics(metrics.clone()).build();
        let token = day_token("p");
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
        advance(3 * HOUR - Duration::from_secs(1)).await;
        assert_eq!(source.calls(), 1);
        advance(Duration::from_secs(1)).await;
        assert_eq!(source.calls(), 2, "renewed at 3 h");
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE2");
        advance(3 * HOUR).await;
        assert_eq!(source.calls(), 3, "renewed again 3 h later");
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE3");
        let text = metrics.encode();
        assert!(
            text.contains("pod_identity_cache_state{state=\"hit\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("pod_identity_cache_state{state=\"miss\"} 1"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_happens_ahead_of_expiry_for_short_lived_credentials() {
        let source = FakeSource::new(wall_clock());
        // Chained-role credentials last 59 minutes: renewed 5 minutes before expiry.
        source.set_lifetime(59 * MINUTE);
        let cache = builder(&source).build();
        key_id(&cache, &day_token("p")).await;
        advance(54 * MINUTE - Duration::from_secs(1)).await;
        assert_eq!(source.calls(), 1);
        advance(Duration::from_secs(1)).await;
        assert_eq!(source.calls(), 2);

        // Very short lifetimes renew while the entry is still served (more than 15 s left):
        // 30 s credentials at 10 s, not at half-life when a request would find them stale.
        let brief = FakeSource::new(wall_clock());
        brief.set_lifetime(Duration::from_secs(30));
        let brief_cache = builder(&brief).build();
        key_id(&brief_cache, &day_token("r")).await;
        advance(Duration::from_secs(10) - Duration::from_millis(1)).await;
        assert_eq!(brief.calls(), 1);
        advance(Duration::from_millis(1)).await;
        assert_eq!(brief.calls(), 2, "renewed 20 s before expiry");
        assert_eq!(key_id(&brief_cache, &day_token("r")).await, "ASIAFAKE2");

        // Lifetimes under 10 minutes renew at half their life.
        let short = FakeSource::new(wall_clock());
        short.set_lifetime(2 * MINUTE);
        let short_cache = builder(&short).build();
        key_id(&short_cache, &day_token("q")).await;
        advance(MINUTE - Duration::from_secs(1)).await;
        assert_eq!(short.calls(), 1);
        advance(Duration::from_secs(1)).await;
        assert_eq!(short.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recoverable_failure_keeps_serving_and_retries_until_15_seconds_before_expiry() {
        let source = FakeSource::new(wall_clock());
        source.set_lifetime(HOUR);
        let metrics = Metrics::new();
        let cache = builder(&source).metrics(metrics.clone()).build();
        let token = day_token("p");
        key_id(&cache, &token).await;
        source.fail_always(Some(eks_error("ThrottlingException", 429)));
        // Renewal due at 55 min fails; the old credentials are still served.
        advance(55 * MINUTE).await;
        assert_eq!(source.calls(), 2);
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
        // Retried a minute later (no jitter in this test), and again.
        advance(MINUTE).await;
        assert_eq!(source.calls(), 3);
        advance(MINUTE).await;
        assert_eq!(source.calls(), 4);
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
        // The last retry is at 15 s before expiry; when it fails the entry goes.
        advance(3 * MINUTE - Duration::from_secs(15)).await;
        assert_eq!(source.calls(), 5);
        assert!(cache.is_empty());
        let text = metrics.encode();
        assert!(
            text.contains(
                "pod_identity_cache_errors{type=\"Recoverable\",code=\"ThrottlingException\"} 4"
            ),
            "{text}"
        );
        // Recovered: the next request fetches anew.
        source.fail_always(None);
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE6");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_interval_longer_than_the_credentials_retries_at_the_last_moment() {
        let source = FakeSource::new(wall_clock());
        source.set_lifetime(HOUR);
        let cache = builder(&source)
            .retry_interval(Duration::MAX, Duration::from_secs(1))
            .build();
        let token = day_token("p");
        key_id(&cache, &token).await;
        source.fail_next(SourceError::Timeout);
        advance(55 * MINUTE).await;
        assert_eq!(source.calls(), 2);
        advance(5 * MINUTE - Duration::from_secs(15)).await;
        assert_eq!(source.calls(), 3, "retried 15 s before expiry");
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE3");
    }

    #[test]
    fn a_flight_whose_call_never_ran_does_not_block_its_token() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).build();
        let token = day_token("p");
        let first = runtime();
        let pending = request(&token);
        first.block_on(async {
            // Polled once: the flight is registered and its call spawned, but not run.
            tokio::select! {
                biased;
                _ = cache.get(&pending) => panic!("answered before the call ran"),
                () = std::future::ready(()) => {}
            }
        });
        // The runtime goes away with the call's task never polled.
        drop(first);
        assert_eq!(source.calls(), 0);
        runtime().block_on(async {
            assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_recoverable_failure_then_success_renews() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).build();
        let token = day_token("p");
        key_id(&cache, &token).await;
        source.fail_next(SourceError::Timeout);
        advance(3 * HOUR).await;
        assert_eq!(source.calls(), 2);
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
        advance(MINUTE).await;
        assert_eq!(source.calls(), 3);
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE3");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_jittered_between_one_and_two_minutes() {
        let source = FakeSource::new(wall_clock());
        let cache = CredentialCache::builder(source.clone())
            .clock(wall_clock())
            .build();
        let token = day_token("p");
        key_id(&cache, &token).await;
        source.fail_always(Some(SourceError::Timeout));
        advance(3 * HOUR).await;
        assert_eq!(source.calls(), 2);
        advance(MINUTE - Duration::from_millis(1)).await;
        assert_eq!(source.calls(), 2, "not before a minute");
        advance(MINUTE + Duration::from_millis(1)).await;
        assert_eq!(source.calls(), 3, "within two minutes");
    }

    #[tokio::test(start_paused = true)]
    async fn an_irrecoverable_failure_evicts() {
        for code in [
            ("AccessDeniedException", 403),
            ("ExpiredTokenException", 400),
            ("InvalidTokenException", 400),
            ("ResourceNotFoundException", 404),
        ] {
            let source = FakeSource::new(wall_clock());
            let metrics = Metrics::new();
            let cache = builder(&source).metrics(metrics.clone()).build();
            let token = day_token("p");
            key_id(&cache, &token).await;
            source.fail_next(eks_error(code.0, code.1));
            advance(3 * HOUR).await;
            assert_eq!(source.calls(), 2);
            assert!(cache.is_empty(), "{code:?}");
            advance(3 * HOUR).await;
            assert_eq!(source.calls(), 2, "no more renewals");
            let text = metrics.encode();
            assert!(
                text.contains(&format!(
                    "pod_identity_cache_errors{{type=\"NonRecoverable\",code=\"{}\"}} 1",
                    code.0
                )),
                "{text}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_is_not_renewed() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).build();
        // The token expires in 1 h; the credentials last 6 h and are due for renewal at 3 h.
        let token = token("p", HOUR);
        let kept = {
            key_id(&cache, &token).await;
            cache.kept_request(&request(&token)).unwrap()
        };
        advance(3 * HOUR).await;
        assert_eq!(source.calls(), 1, "no renewal with an expired token");
        assert!(cache.is_empty());
        assert!(kept.upgrade().is_none(), "the kept token was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_nobody_read_within_the_idle_time_is_not_renewed() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source)
            .max_retention(30 * MINUTE)
            .idle_timeout(HOUR)
            .build();
        let token = day_token("p");
        key_id(&cache, &token).await;
        advance(30 * MINUTE).await;
        assert_eq!(source.calls(), 2, "read 30 min ago: renewed");
        advance(30 * MINUTE).await;
        assert_eq!(source.calls(), 2, "read 60 min ago: idle, evicted");
        assert!(cache.is_empty());

        // A pod that keeps reading keeps being renewed.
        let other = day_token("q");
        key_id(&cache, &other).await;
        for round in 0..6 {
            advance(30 * MINUTE).await;
            key_id(&cache, &other).await;
            assert_eq!(source.calls(), 4 + round);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_are_rate_limited() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).renewal_qps(2).build();
        for pod in 0..10 {
            key_id(&cache, &day_token(&format!("p{pod}"))).await;
        }
        assert_eq!(source.calls(), 10);
        advance(3 * HOUR).await;
        // A burst of 2, then one every half second.
        assert_eq!(source.calls(), 12);
        for expected in 13..=20 {
            advance(Duration::from_millis(499)).await;
            assert_eq!(source.calls(), expected - 1);
            advance(Duration::from_millis(1)).await;
            assert_eq!(source.calls(), expected);
        }
        advance(Duration::from_secs(10)).await;
        assert_eq!(source.calls(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_drops_the_kept_token() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).max_entries(1).build();
        let a = day_token("a");
        key_id(&cache, &a).await;
        let kept = cache.kept_request(&request(&a)).unwrap();
        assert!(kept.upgrade().is_some());
        key_id(&cache, &day_token("b")).await;
        assert!(
            kept.upgrade().is_none(),
            "evicted: the token was dropped (and zeroized)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hits_by_raw_bytes_need_exact_bytes_and_survive_side_index_collisions() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).build();
        let now = || wall_clock().now();
        let (a, b) = (day_token("a"), day_token("b"));
        key_id(&cache, &a).await;
        key_id(&cache, &b).await;
        let hit = |token: &str| {
            cache
                .cached(token.as_bytes(), now())
                .map(|answer| answer.unwrap().credentials().access_key_id.clone())
        };
        assert_eq!(hit(&a).as_deref(), Some("ASIAFAKE1"));
        assert_eq!(hit(&b).as_deref(), Some("ASIAFAKE2"));
        let mut near = a.clone().into_bytes();
        *near.last_mut().unwrap() ^= 1;
        assert!(cache.cached(&near, now()).is_none(), "one byte off: a miss");
        assert!(cache.cached(&a.as_bytes()[1..], now()).is_none());

        // A side-index collision: `b`'s hash made to point at `a`'s entry. `b` is still found
        // (by digest) and `a`'s entry is never served for it.
        let (a_key, b_key) = (TokenDigest::of(&request(&a)), TokenDigest::of(&request(&b)));
        {
            let mut state = cache.shared.lock();
            let b_hash = state.entries[&b_key].prehash;
            state.by_prehash.insert(b_hash, a_key);
        }
        assert_eq!(hit(&b).as_deref(), Some("ASIAFAKE2"));
        assert_eq!(hit(&a).as_deref(), Some("ASIAFAKE1"));
        // Evicting `b` leaves the index entry that is not its own.
        {
            let mut state = cache.shared.lock();
            let b_hash = state.entries[&b_key].prehash;
            state.remove(&b_key);
            assert!(state.by_prehash.get(&b_hash) == Some(&a_key));
            let a_hash = state.entries[&a_key].prehash;
            state.remove(&a_key);
            assert!(!state.by_prehash.contains_key(&a_hash));
        }
        assert!(hit(&a).is_none() && hit(&b).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_token_digests() {
        let token = day_token("p");
        let digest = TokenDigest::of(&request(&token));
        let expected: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        assert_eq!(digest.0, expected);
        assert_ne!(digest.0, TokenDigest::of(&request(&day_token("q"))).0);
    }

    #[tokio::test(start_paused = true)]
    async fn fetched_credentials_about_to_expire_are_an_error_and_not_cached() {
        let source = FakeSource::new(wall_clock());
        source.set_lifetime(Duration::from_secs(15));
        let cache = builder(&source).build();
        let error = cache.get(&request(&day_token("p"))).await.unwrap_err();
        assert!(
            matches!(
                error,
                SourceError::ExpiringCredentials {
                    remaining_millis: 15_000
                }
            ),
            "{error:?}"
        );
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn cached_credentials_are_not_served_in_their_last_15_seconds() {
        let source = FakeSource::new(wall_clock());
        source.set_lifetime(HOUR);
        // Renewal would be due at 55 min; make it fail so the entry ages.
        let cache = builder(&source)
            .retry_interval(HOUR, Duration::ZERO)
            .build();
        let token = day_token("p");
        key_id(&cache, &token).await;
        source.fail_next(SourceError::Timeout);
        advance(55 * MINUTE).await;
        assert_eq!(source.calls(), 2);
        advance(5 * MINUTE - Duration::from_secs(16)).await;
        assert_eq!(
            key_id(&cache, &token).await,
            "ASIAFAKE1",
            "16 s left: served"
        );
        source.fail_next(SourceError::Timeout);
        advance(Duration::from_secs(1)).await;
        // The retry at 15 s before expiry failed and evicted; the request fetches anew.
        assert_eq!(key_id(&cache, &token).await, "ASIAFAKE4");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_size_or_retention_turns_caching_off() {
        for builder in [
            builder(&FakeSource::new(wall_clock())).max_entries(0),
            builder(&FakeSource::new(wall_clock())).max_retention(Duration::ZERO),
        ] {
            let cache = builder.build();
            assert!(!cache.is_enabled());
            let token = day_token("p");
            assert_eq!(key_id(&cache, &token).await, "ASIAFAKE1");
            assert_eq!(key_id(&cache, &token).await, "ASIAFAKE2");
            assert!(cache.is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_renewal_task_ends_with_the_cache() {
        let source = FakeSource::new(wall_clock());
        let cache = builder(&source).build();
        key_id(&cache, &day_token("p")).await;
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        assert_eq!(tasks(), 1, "the renewal task runs");
        let weak = Arc::downgrade(&cache.shared);
        drop(cache);
        settle().await;
        assert!(weak.upgrade().is_none());
        assert_eq!(tasks(), 0, "the renewal task ended");
        advance(3 * HOUR).await;
        assert_eq!(source.calls(), 1);
    }
}
