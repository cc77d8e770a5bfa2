//! The refresh-ahead cache shared by [`PodIdentityCredentialsProvider`] and [`RefreshAheadCache`].
//!
//! # Contract
//!
//! - The current value sits in an [`ArcSwapOption`], and each thread that reads it keeps its
//!   own copy of it (see [`local`]): a cache hit is a clock read, an atomic load of the
//!   cache's generation, a lookup in a thread-local list and a clone of that thread's copy
//!   (for [`Credentials`], an `Arc` clone and a copy of their property map, which holds the
//!   SDK's business metric; for an identity, `Arc` clones and a copy of its property map). It
//!   takes no lock and writes no shared memory: the copy's reference counts are its thread's
//!   own, the counters are bumped only off the fast path, and the idle clock of a
//!   [`RefreshAheadCache`] partition is stored at most once a second per thread. Every hit
//!   checks the clock against the copy's expiry, so nothing expired is served even when the
//!   refresh task does not run (a stalled runtime, a suspended machine).
//! - A background task, spawned on the first load, refreshes ahead of expiry. The point is chosen
//!   at fetch time from the remaining lifetime ([`RefreshWindows`]): the advisory window opens
//!   `window` before expiry and the refresh lands at a random point in the first half of that
//!   window, so a fleet does not refresh in lockstep.
//! - While an unexpired value exists, callers never wait and never fail, not even within the
//!   mandatory window (the last 60 s before expiry) and not even while a fetch is in flight: they
//!   are answered with the cached value at once. A failed refresh keeps serving the last good
//!   value until its real expiry and is retried in the background with bounded, jittered
//!   backoff (the retries come closer together as expiry nears, so several land in the last
//!   minute). Hits past the refresh point while refreshing fails, and every hit inside the
//!   mandatory window, count as stale serves.
//!
//!   Why no caller waits in the mandatory window, unlike the cross-SDK design's "blocking"
//!   window: those designs refresh on the request path, so near expiry a caller has to. Here the
//!   background task is already refreshing (and retrying); a caller that waited would gain
//!   nothing while the agent fails (the benchmark measured 72 of 1,000 callers waiting up to
//!   760 ms for retries that failed anyway) and, while it is healthy, only credentials that live
//!   longer than the still-valid ones it was handed. The credentials carry their real expiry, so
//!   anything that keeps them (the SDK's lazy cache) asks again before they run out.
//! - When nothing valid is cached, concurrent callers share one fetch (single flight); a failed
//!   flight hands its error to everyone who waited for it.
//! - The task holds only a `Weak` reference and ends when the cache is dropped.
//! - Every clock read goes through the injected [`SharedTimeSource`] and every wait through the
//!   injected [`SharedAsyncSleep`].
//!
//! [`PodIdentityCredentialsProvider`]: crate::PodIdentityCredentialsProvider
//! [`RefreshAheadCache`]: crate::RefreshAheadCache
//! [`Credentials`]: aws_credential_types::Credentials

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::LocalKey;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use aws_smithy_async::rt::sleep::SharedAsyncSleep;
use aws_smithy_async::time::SharedTimeSource;
use tokio::sync::{Mutex, Notify};

mod local;
mod metrics;
mod task;
mod windows;

pub(crate) use local::Copies;
use local::Generation;
pub use metrics::Metrics;
pub(crate) use metrics::Stats;
pub use windows::RefreshWindows;

/// A boxed, sendable future.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A value the cache can hold: it knows when it expires.
pub(crate) trait Expiring: Clone + Send + Sync + 'static {
    /// The real expiry, if the value has one.
    fn expiry(&self) -> Option<SystemTime>;

    /// An equal copy that shares no reference count with `self`, made for one thread's hits
    /// (see [`local`]). A plain clone when the value cannot be copied deeply.
    fn replicate(&self) -> Self {
        self.clone()
    }

    /// This thread's copies of values of this type (a `thread_local!` of the implementing
    /// type).
    fn copies() -> &'static LocalKey<RefCell<Copies<Self>>>;
}

/// Fetches a fresh value off the request path. Must not hold a strong reference to the cache.
pub(crate) trait Refresh<T, E>: Send + Sync + 'static {
    fn refresh(&self) -> BoxFuture<'static, Result<T, E>>;
}

/// The knobs of one cache.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) windows: RefreshWindows,
    pub(crate) time: SharedTimeSource,
    pub(crate) sleep: SharedAsyncSleep,
    /// Expiry assumed for a value without one.
    pub(crate) default_lifetime: Duration,
    /// Stop refreshing after this long without a caller.
    pub(crate) idle_after: Option<Duration>,
    /// A name for log events (`"pod-identity"` or a partition).
    pub(crate) name: &'static str,
}

struct Entry<T> {
    value: T,
    times: Times,
}

/// When a cached value stops being fresh.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Times {
    pub(crate) expiry: SystemTime,
    pub(crate) refresh_at: SystemTime,
    /// Start of the mandatory window.
    pub(crate) mandatory_from: SystemTime,
    /// The earlier of the two: until then a hit has nothing to do but answer.
    pub(crate) quiet_until: SystemTime,
}

/// The refresh-ahead cache engine.
pub(crate) struct RefreshCache<T, E> {
    current: ArcSwapOption<Entry<T>>,
    /// Bumped after every store to `current`: the key of the per-thread copies.
    generation: Arc<Generation>,
    /// The single-flight lock. It holds the error of the last completed flight if that flight
    /// failed, shared with those who waited for it.
    flight: Mutex<Option<E>>,
    /// Completed flights; a waiter that sees it move knows a flight ended while it queued.
    flights: AtomicU64,
    refresher: ArcSwapOption<Box<dyn Refresh<T, E>>>,
    wake: Arc<Notify>,
    task_started: AtomicBool,
    /// The background task is parked because nobody asked for a while.
    parked: AtomicBool,
    /// The last background refresh failed; hits are stale serves until one succeeds.
    refresh_failed: AtomicBool,
    /// Seconds since the epoch of the last call, for idle detection.
    last_access: AtomicU64,
    settings: Settings,
    stats: Arc<Stats>,
}

impl<T, E> fmt::Debug for RefreshCache<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("RefreshCache")
            .field("name", &self.settings.name)
            .field("expiry", &current.as_ref().map(|e| e.times.expiry))
            .field("refresh_at", &current.as_ref().map(|e| e.times.refresh_at))
            .field("windows", &self.settings.windows)
            .finish_non_exhaustive()
    }
}

impl<T, E> Drop for RefreshCache<T, E> {
    fn drop(&mut self) {
        // The background task holds only a Weak; wake it so it sees the cache is gone.
        self.wake.notify_one();
        self.generation.close();
    }
}

impl<T, E> RefreshCache<T, E>
where
    T: Expiring,
    E: Clone + fmt::Display + Send + Sync + 'static,
{
    pub(crate) fn new(settings: Settings, stats: Arc<Stats>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            generation: Arc::default(),
            flight: Mutex::new(None),
            flights: AtomicU64::new(0),
            refresher: ArcSwapOption::empty(),
            wake: Arc::new(Notify::new()),
            task_started: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            refresh_failed: AtomicBool::new(false),
            last_access: AtomicU64::new(0),
            settings,
            stats,
        }
    }

    /// Sets the loader the background task uses.
    pub(crate) fn set_refresher(&self, refresher: Box<dyn Refresh<T, E>>) {
        self.refresher.store(Some(Arc::new(refresher)));
    }

    /// The counters this cache (and its loader) update.
    pub(crate) fn metrics(&self) -> Metrics {
        self.stats.snapshot()
    }

    pub(crate) fn has_refresher(&self) -> bool {
        self.refresher.load().is_some()
    }

    fn now(&self) -> SystemTime {
        self.settings.time.now()
    }

    /// The injected sleep.
    pub(crate) fn sleep(&self) -> &SharedAsyncSleep {
        &self.settings.sleep
    }

    /// The cached value if it has not expired, without waiting or fetching.
    pub(crate) fn peek(&self) -> Option<T> {
        let now = self.now();
        let current = self.current.load();
        current
            .as_ref()
            .filter(|e| now < e.times.expiry)
            .map(|e| e.value.clone())
    }

    /// Whether nobody has asked for `idle_after`.
    pub(crate) fn is_idle(&self, now: SystemTime) -> bool {
        let Some(idle_after) = self.settings.idle_after else {
            return false;
        };
        let last = UNIX_EPOCH + Duration::from_secs(self.last_access.load(Ordering::SeqCst));
        now.duration_since(last).unwrap_or_default() > idle_after
    }

    /// Records a call at `now` for idle detection; returns when this thread needs to record
    /// again (the next second: at most one store per second keeps the hit path free of
    /// contended writes).
    fn record_access(&self, now: SystemTime, expiry: SystemTime) -> SystemTime {
        if self.settings.idle_after.is_none() {
            return expiry;
        }
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if self.last_access.load(Ordering::Relaxed) < secs {
            self.last_access.store(secs, Ordering::SeqCst);
        }
        UNIX_EPOCH + Duration::from_secs(secs.saturating_add(1))
    }

    /// Wakes the refresh task if it stopped for lack of callers.
    fn wake_if_parked(&self) {
        // SeqCst pairs with `plan`: either it sees this access, or this call sees it parked.
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Returns a valid value, loading one through `cold` when nothing valid is cached.
    pub(crate) async fn get<F, Fut>(self: &Arc<Self>, cold: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let now = self.now();
        let hit = self.lookup(now);
        // After the read, so a woken refresh never races the value this call returns.
        self.wake_if_parked();
        match hit {
            Some(value) => Ok(value),
            None => self.cold(cold).await,
        }
    }

    /// The cache-hit path on its own, for callers that can answer without a future: a clock
    /// read, an atomic load and a clone of this thread's copy; it never waits. `None` when nothing
    /// valid is cached and [`get`](Self::get) would have to fetch.
    pub(crate) fn try_hit(self: &Arc<Self>) -> Option<T> {
        let value = self.lookup(self.now());
        // After the read, so a woken refresh never races the value this call returns.
        self.wake_if_parked();
        value
    }

    /// The valid value for a call at `now`, without waiting or locking: a clone of this
    /// thread's copy of the current generation (made on its first hit after a store), else of
    /// the shared value (a thread that reads too many caches). Records the access.
    fn lookup(self: &Arc<Self>, now: SystemTime) -> Option<T> {
        let generation = self.generation.current();
        if let Some(served) = self.lookup_local(now, generation) {
            return served;
        }
        self.lookup_shared(now, generation)
    }

    #[inline]
    fn lookup_local(self: &Arc<Self>, now: SystemTime, generation: u64) -> Option<Option<T>> {
        local::read(&self.generation, generation, |copy| {
            let served = self.serve(now, &copy.times, &copy.value);
            if now >= copy.record_due.get() {
                copy.record_due
                    .set(self.record_access(now, copy.times.expiry));
            }
            served
        })
    }

    #[cold]
    fn lookup_shared(self: &Arc<Self>, now: SystemTime, generation: u64) -> Option<T> {
        let current = self.current.load();
        let Some(entry) = current.as_deref().filter(|e| now < e.times.expiry) else {
            self.record_access(now, now);
            return None;
        };
        local::keep(&self.generation, generation, entry.times, &entry.value);
        if let Some(served) = self.lookup_local(now, generation) {
            return served;
        }
        self.record_access(now, now);
        self.serve(now, &entry.times, &entry.value)
    }

    /// `value` for a call at `now` if it has not expired; past its refresh point, also the
    /// bookkeeping of an overdue hit.
    #[inline]
    fn serve(self: &Arc<Self>, now: SystemTime, times: &Times, value: &T) -> Option<T> {
        if now >= times.quiet_until {
            if now >= times.expiry {
                return None;
            }
            self.overdue_hit(now, times);
        }
        Some(value.clone())
    }

    /// Nothing valid is cached: one flight loads, everyone else waits for it.
    async fn cold<F, Fut>(self: &Arc<Self>, cold: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.ensure_task();
        let seen = self.flights.load(Ordering::Acquire);
        let mut last_error = self.flight.lock().await;
        let now = self.now();
        if let Some(entry) = self.current.load_full()
            && now < entry.times.expiry
        {
            return Ok(entry.value.clone());
        }
        if self.flights.load(Ordering::Acquire) != seen
            && let Some(error) = &*last_error
        {
            return Err(error.clone());
        }
        Stats::bump(&self.stats.fetches);
        tracing::debug!(
            cache = self.settings.name,
            "no valid credentials cached; fetching"
        );
        let result = cold().await;
        self.flights.fetch_add(1, Ordering::Release);
        match &result {
            Ok(value) => {
                *last_error = None;
                self.store(value);
            }
            Err(error) => {
                Stats::bump(&self.stats.failures);
                // Debug only: the loader logs its own failures at the level they deserve (an
                // unconfigured provider in a chain is not worth a warning on every call).
                tracing::debug!(cache = self.settings.name, %error, "loading credentials failed");
                *last_error = Some(error.clone());
            }
        }
        result
    }

    fn store(&self, value: &T) {
        let now = self.now();
        let expiry = value
            .expiry()
            .unwrap_or(now + self.settings.default_lifetime);
        let refresh_at = self
            .settings
            .windows
            .refresh_at(now, expiry, fastrand::f64());
        tracing::debug!(
            cache = self.settings.name,
            valid_for = ?expiry.duration_since(now).unwrap_or_default(),
            refresh_in = ?refresh_at.duration_since(now).unwrap_or_default(),
            "cached new credentials"
        );
        let mandatory_from = expiry
            .checked_sub(self.settings.windows.mandatory_window())
            .unwrap_or(expiry);
        self.current.store(Some(Arc::new(Entry {
            value: value.clone(),
            times: Times {
                expiry,
                refresh_at,
                mandatory_from,
                quiet_until: refresh_at.min(mandatory_from),
            },
        })));
        self.generation.bump();
        self.refresh_failed.store(false, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// A hit past the refresh point or inside the mandatory window: count a stale serve if
    /// refreshing fails or expiry is near, and restart the refresh task if it is gone (for
    /// example, its runtime shut down). It never waits: the refresh (and its retries) run in
    /// the background.
    #[cold]
    fn overdue_hit(self: &Arc<Self>, now: SystemTime, times: &Times) {
        if now >= times.mandatory_from {
            Stats::bump(&self.stats.stale_serves);
            tracing::debug!(
                cache = self.settings.name,
                expires_in = ?times.expiry.duration_since(now).unwrap_or_default(),
                refresh_failed = self.refresh_failed.load(Ordering::Relaxed),
                "serving cached credentials inside the mandatory window"
            );
        } else if self.refresh_failed.load(Ordering::Relaxed) {
            Stats::bump(&self.stats.stale_serves);
            tracing::trace!(
                cache = self.settings.name,
                "serving cached credentials while refresh is failing"
            );
        }
        self.ensure_task();
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};

    use aws_smithy_async::rt::sleep::TokioSleep;
    use aws_smithy_async::time::{StaticTimeSource, TimeSource};

    use super::task::{BACKGROUND_RETRY_BASE, BACKGROUND_RETRY_CAP};
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    /// A value with an expiry and a payload whose address tells copies apart.
    #[derive(Clone, Debug, PartialEq)]
    struct Value(SystemTime, Arc<u32>);

    impl Value {
        fn new(expiry: SystemTime) -> Self {
            Self(expiry, Arc::new(0))
        }
    }

    impl Expiring for Value {
        fn expiry(&self) -> Option<SystemTime> {
            Some(self.0)
        }

        fn replicate(&self) -> Self {
            Self(self.0, Arc::new(*self.1))
        }

        fn copies() -> &'static LocalKey<RefCell<Copies<Self>>> {
            thread_local! {
                static COPIES: RefCell<Copies<Value>> = const { RefCell::new(Copies::new()) };
            }
            &COPIES
        }
    }

    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// A wall clock moved by hand.
    #[derive(Clone, Debug)]
    struct Clock(Arc<std::sync::Mutex<SystemTime>>);

    impl Clock {
        fn at(now: SystemTime) -> Self {
            Self(Arc::new(std::sync::Mutex::new(now)))
        }

        fn set(&self, now: SystemTime) {
            *self.0.lock().unwrap() = now;
        }
    }

    impl TimeSource for Clock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    fn cache_at(now: SystemTime) -> Arc<RefreshCache<Value, String>> {
        cache_on(SharedTimeSource::new(StaticTimeSource::new(now)))
    }

    fn cache_on(time: SharedTimeSource) -> Arc<RefreshCache<Value, String>> {
        Arc::new(RefreshCache::new(
            Settings {
                windows: RefreshWindows::new(),
                time,
                sleep: SharedAsyncSleep::new(TokioSleep::new()),
                default_lifetime: Duration::from_secs(900),
                idle_after: None,
                name: "test",
            },
            Arc::default(),
        ))
    }

    fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
        let mut future = std::pin::pin!(future);
        future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_hit_takes_no_lock_even_while_a_fetch_is_in_flight() {
        let cache = cache_at(start());
        cache.store(&Value::new(start() + 360 * MIN));
        let _in_flight = cache.flight.try_lock().expect("nobody holds it yet");
        let hit = poll_once(cache.get(|| async { Err::<Value, _>("must not load".to_owned()) }));
        assert_eq!(hit, Poll::Ready(Ok(Value::new(start() + 360 * MIN))));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_expired_value_is_not_served_while_the_refresh_task_is_stalled() {
        let clock = Clock::at(start());
        let cache = cache_on(SharedTimeSource::new(clock.clone()));
        let expiry = start() + 10 * MIN;
        let loaded = cache
            .get(|| async move { Ok::<_, String>(Value::new(expiry)) })
            .await;
        assert_eq!(loaded.map(|v| v.0), Ok(expiry));
        assert!(
            cache.task_started.load(Ordering::Relaxed),
            "a refresh task was spawned"
        );
        // From here on nothing yields: the refresh task (on this thread's runtime) never runs.
        assert_eq!(
            cache.try_hit().map(|v| v.0),
            Some(expiry),
            "this thread's copy"
        );
        clock.set(expiry - 30 * Duration::from_secs(1));
        assert_eq!(
            cache.try_hit().map(|v| v.0),
            Some(expiry),
            "inside the mandatory window: still served"
        );
        assert_eq!(cache.metrics().stale_serves, 1);
        clock.set(expiry);
        assert_eq!(cache.try_hit(), None, "expired: never served");
        assert_eq!(cache.peek(), None);
        clock.set(expiry + 6 * 60 * MIN);
        assert_eq!(
            cache.try_hit(),
            None,
            "long after expiry (a suspended machine)"
        );
    }

    #[test]
    fn each_thread_hits_its_own_copy() {
        let cache = cache_at(start());
        cache.store(&Value::new(start() + 360 * MIN));
        let shared = cache.peek().expect("cached").1;
        let here = cache.try_hit().expect("a hit").1;
        assert!(Arc::ptr_eq(&cache.try_hit().expect("a hit").1, &here));
        assert!(!Arc::ptr_eq(&here, &shared), "a copy, not the shared value");
        let there = std::thread::scope(|s| {
            s.spawn(|| {
                let first = cache.try_hit().expect("a hit").1;
                let second = cache.try_hit().expect("a hit").1;
                assert!(Arc::ptr_eq(&first, &second));
                first
            })
            .join()
            .unwrap()
        });
        assert!(!Arc::ptr_eq(&here, &there), "each thread has its own copy");
    }

    #[test]
    fn a_store_replaces_the_copies() {
        let clock = Clock::at(start());
        let cache = cache_on(SharedTimeSource::new(clock.clone()));
        cache.store(&Value::new(start() + 360 * MIN));
        assert_eq!(cache.try_hit().map(|v| v.0), Some(start() + 360 * MIN));
        cache.store(&Value::new(start() + 720 * MIN));
        assert_eq!(cache.try_hit().map(|v| v.0), Some(start() + 720 * MIN));
        // The new copy carries the new entry's times: past the old expiry it is still served.
        clock.set(start() + 400 * MIN);
        assert_eq!(cache.try_hit().map(|v| v.0), Some(start() + 720 * MIN));
    }

    #[test]
    fn copies_of_a_dropped_cache_are_released() {
        let cache = cache_at(start());
        cache.store(&Value::new(start() + 360 * MIN));
        let copy = Arc::downgrade(&cache.try_hit().expect("a hit").1);
        assert!(copy.upgrade().is_some(), "this thread keeps its copy");
        drop(cache);
        let other = cache_at(start());
        other.store(&Value::new(start() + 360 * MIN));
        let _ = other.try_hit();
        assert!(
            copy.upgrade().is_none(),
            "released at the thread's next miss"
        );
    }

    #[test]
    fn background_retries_are_bounded_and_come_before_expiry() {
        let cache = cache_at(start());
        cache.store(&Value::new(start() + 60 * MIN));
        for failures in 1..20 {
            let at = cache.retry_after(start(), failures).expect("still valid");
            let delay = at.duration_since(start()).unwrap();
            assert!(delay >= BACKGROUND_RETRY_BASE / 2, "{failures}: {delay:?}");
            assert!(delay <= BACKGROUND_RETRY_CAP, "{failures}: {delay:?}");
        }
        // Near expiry the delay shrinks so a few attempts still fit.
        let at = cache
            .retry_after(start() + 59 * MIN, 10)
            .expect("still valid");
        assert!(at.duration_since(start() + 59 * MIN).unwrap() <= 30 * Duration::from_secs(1));
        assert_eq!(
            cache.retry_after(start() + 61 * MIN, 1),
            None,
            "expired: nothing to retry"
        );
    }
}
