//! The renewing credential cache.
//!
//! [`CredentialCache`] wraps a [`CredentialSource`] and is one itself. Contract:
//!
//! - **Keys** are the SHA-256 digest of the token; the raw token is never an index key. Each
//!   entry keeps only what renewal needs: the raw token (zeroized when the entry is evicted),
//!   its `exp` and `nbf`, and the cluster name; renewal decodes the token again.
//! - **Hits without decoding**: [`CredentialCache::cached`] answers for the raw `Authorization`
//!   bytes by their digest, checking the token's times on the kept `exp`/`nbf` (the rule of
//!   [`ServiceAccountToken::validate_time`](pod_identity_core::token::ServiceAccountToken::validate_time)),
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
//! Time comes from tokio's clock (schedules) and the injected `SharedTimeSource`
//! (expirations), so tests run on paused time.

use aws_smithy_async::time::SharedTimeSource;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use pod_identity_core::container_credentials::MIN_REMAINING;
use pod_identity_core::token::TokenError;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use crate::metrics::{CacheState, Limited, Metrics};
use crate::source::{CredentialRequest, CredentialSource, IssuedCredentials, SourceError};
use crate::time::{ClientRateLimiter, RateLimiter};

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
/// Default upstream calls a client address may start at once (the miss budget's burst).
pub const DEFAULT_CLIENT_MISS_BURST: u32 = 10;
/// Default upstream calls per second a client address may start once its burst is spent.
pub const DEFAULT_CLIENT_MISS_RATE: u32 = 1;
/// Default most request-path upstream calls at once.
pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 64;
/// Default longest upstream call.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// A token whose pod the view does not know is renewed anyway while its entry is younger than
/// this (the pod may be too new to be seen).
pub const POD_NOT_FOUND_GRACE: Duration = Duration::from_secs(60);

mod builder;
mod entries;
mod miss;
mod pods;
mod refused;
mod renewal;

pub use builder::CredentialCacheBuilder;
use entries::{Entry, Eviction, Kept, Lookup, State, TokenDigest};
use miss::{aborted, fetch};
pub use pods::{
    BoxFuture, PodIdentity, PodLivenessSource, PodState, RotationCheck, RotationValidator,
};
use refused::Refused;
pub use refused::{DEFAULT_REFUSED_TTL, MAX_REFUSED};
use renewal::renew_due;

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

impl<S: CredentialSource> CredentialCache<S> {
    /// The wall clock the cache was built with (the router in front of it reads it too).
    pub(crate) fn clock(&self) -> &SharedTimeSource {
        &self.shared.clock
    }

    /// Where the cache counts (the router in front of it counts there too).
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
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
    /// error [`validate_time`] gives; the entry is left as it is), else a hit, counted and used
    /// as by `get`.
    ///
    /// [`validate_time`]: pod_identity_core::token::ServiceAccountToken::validate_time
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
        if let Err(error) = entry.kept.times.validate(now) {
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

    /// A weak handle to the token kept for renewing `request`'s entry (tests check eviction
    /// drops it).
    #[cfg(test)]
    fn kept_request(&self, request: &CredentialRequest) -> Option<std::sync::Weak<Kept>> {
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

struct Shared<S> {
    source: S,
    config: Config,
    clock: SharedTimeSource,
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
}

#[cfg(test)]
mod tests;
