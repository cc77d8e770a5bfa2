//! The background refresh task: when it refreshes, how it retries, and how it ends.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use aws_smithy_async::rt::sleep::{AsyncSleep, SharedAsyncSleep};
use tokio::sync::Notify;

use super::{Expiring, RefreshCache, Stats};

/// First delay after a failed background refresh.
pub(super) const BACKGROUND_RETRY_BASE: Duration = Duration::from_secs(10);
/// Longest delay between background refresh attempts.
pub(super) const BACKGROUND_RETRY_CAP: Duration = Duration::from_secs(300);
/// Longest single sleep of the refresh task. It then re-reads the wall clock, so a suspended
/// machine or a stepped clock cannot make it oversleep a refresh by more than this.
const MAX_SLEEP: Duration = Duration::from_secs(5 * 60);
/// Shortest delay between background refresh attempts, even just before expiry.
const BACKGROUND_RETRY_FLOOR: Duration = Duration::from_secs(1);

/// What the background task does next.
pub(super) enum Plan {
    /// Nothing to refresh (empty, expired or idle): wait to be woken.
    Park,
    /// Refresh at this time.
    At(SystemTime),
}

impl<T, E> RefreshCache<T, E>
where
    T: Expiring,
    E: Clone + fmt::Display + Send + Sync + 'static,
{
    pub(super) fn ensure_task(self: &Arc<Self>) {
        if self.task_started.load(Ordering::Relaxed)
            || self.task_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let weak = Arc::downgrade(self);
                let wake = self.wake.clone();
                let sleep = self.settings.sleep.clone();
                handle.spawn(run_refresh_task(TaskAlive(weak), wake, sleep));
            }
            Err(_) => {
                // No runtime to refresh on: values are then reloaded on expiry by callers.
                self.task_started.store(false, Ordering::Release);
                tracing::debug!(
                    cache = self.settings.name,
                    "no tokio runtime; background refresh disabled"
                );
            }
        }
    }

    pub(super) fn plan(&self, now: SystemTime, retry_at: Option<SystemTime>) -> Plan {
        let Some(entry) = self.current.load_full() else {
            return Plan::Park;
        };
        if now >= entry.times.expiry || !self.has_refresher() {
            return Plan::Park;
        }
        if self.is_idle(now) {
            self.parked.store(true, Ordering::SeqCst);
            // Check again: a caller may have come between the first check and parking, and
            // seen `parked` still false.
            if self.is_idle(now) {
                tracing::debug!(
                    cache = self.settings.name,
                    "nobody asked for a while; refresh paused"
                );
                return Plan::Park;
            }
            self.parked.store(false, Ordering::SeqCst);
        }
        match retry_at {
            Some(at) if now >= entry.times.refresh_at => Plan::At(at),
            _ => Plan::At(entry.times.refresh_at),
        }
    }

    /// One background refresh: shares the flight lock with cold callers.
    pub(super) async fn refresh_once(&self) -> Result<(), E> {
        let Some(refresher) = self.refresher.load_full() else {
            return Ok(());
        };
        let mut last_error = self.flight.lock().await;
        let now = self.now();
        if let Some(entry) = self.current.load_full()
            && now < entry.times.refresh_at
        {
            // Someone refreshed while we queued.
            return Ok(());
        }
        Stats::bump(&self.stats.fetches);
        tracing::debug!(
            cache = self.settings.name,
            "refreshing credentials ahead of expiry"
        );
        let result = refresher.refresh().await;
        self.flights.fetch_add(1, Ordering::Release);
        match result {
            Ok(value) => {
                *last_error = None;
                Stats::bump(&self.stats.refreshes);
                self.store(&value);
                tracing::info!(
                    cache = self.settings.name,
                    "refreshed credentials ahead of expiry"
                );
                Ok(())
            }
            Err(error) => {
                Stats::bump(&self.stats.failures);
                self.refresh_failed.store(true, Ordering::Relaxed);
                *last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    /// When to try again after `failures` consecutive failed refreshes.
    pub(super) fn retry_after(&self, now: SystemTime, failures: u32) -> Option<SystemTime> {
        let entry = self.current.load_full()?;
        let remaining = entry.times.expiry.duration_since(now).ok()?;
        let exp = BACKGROUND_RETRY_BASE
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(BACKGROUND_RETRY_CAP);
        // Equal jitter: never less than half the delay, so an outage is not hammered.
        let delay = exp / 2 + (exp / 2).mul_f64(fastrand::f64());
        // Keep trying before the value expires: at least a few attempts in what is left.
        let delay = delay.min((remaining / 2).max(BACKGROUND_RETRY_FLOOR));
        Some(now + delay)
    }
}

/// The task's handle on the cache; when the task ends (or its runtime drops it), the cache
/// learns that it needs a new one.
struct TaskAlive<T, E>(Weak<RefreshCache<T, E>>);

impl<T, E> Drop for TaskAlive<T, E> {
    fn drop(&mut self) {
        if let Some(cache) = self.0.upgrade() {
            cache.task_started.store(false, Ordering::Release);
        }
    }
}

async fn run_refresh_task<T, E>(alive: TaskAlive<T, E>, wake: Arc<Notify>, sleep: SharedAsyncSleep)
where
    T: Expiring,
    E: Clone + fmt::Display + Send + Sync + 'static,
{
    let cache = &alive.0;
    let mut failures: u32 = 0;
    let mut retry_at: Option<SystemTime> = None;
    loop {
        let (plan, now) = {
            let Some(cache) = cache.upgrade() else {
                break;
            };
            let now = cache.now();
            (cache.plan(now, retry_at), now)
        };
        let notified = wake.notified();
        match plan {
            Plan::Park => {
                notified.await;
                continue;
            }
            Plan::At(at) => {
                let delay = at.duration_since(now).unwrap_or_default().min(MAX_SLEEP);
                if !delay.is_zero() {
                    tokio::select! {
                        _ = sleep.sleep(delay) => {}
                        _ = notified => continue,
                    }
                }
            }
        }
        let Some(cache) = cache.upgrade() else {
            break;
        };
        let now = cache.now();
        match cache.plan(now, retry_at) {
            Plan::At(at) if now >= at => {}
            _ => continue,
        }
        match cache.refresh_once().await {
            Ok(()) => {
                failures = 0;
                retry_at = None;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                retry_at = cache.retry_after(cache.now(), failures);
                let expires_in = cache
                    .current
                    .load()
                    .as_ref()
                    .and_then(|e| e.times.expiry.duration_since(now).ok());
                tracing::warn!(
                    cache = cache.settings.name,
                    %error,
                    failures,
                    ?expires_in,
                    retry_in = ?retry_at.and_then(|at| at.duration_since(now).ok()),
                    "refresh failed; serving cached credentials until they expire"
                );
            }
        }
    }
    tracing::debug!("refresh task finished: the cache was dropped");
}
