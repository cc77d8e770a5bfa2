//! [`Metrics`]: the counters of a cache, and the atomics behind them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters readable while the cache runs. Cheap to read; a snapshot, not a live view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Loads started (cold loads and background refreshes), each possibly several HTTP attempts.
    pub fetches: u64,
    /// Background refreshes that succeeded.
    pub refreshes: u64,
    /// Loads that failed (after their retries).
    pub failures: u64,
    /// Calls answered with cached credentials past their refresh point while refreshing them
    /// was failing, or inside the mandatory window (the last 60 s before expiry by default).
    pub stale_serves: u64,
    /// HTTP attempts retried inside a load (provider only).
    pub retries: u64,
}

/// The shared atomic counters behind [`Metrics`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) fetches: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) stale_serves: AtomicU64,
    pub(crate) retries: AtomicU64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Metrics {
        Metrics {
            fetches: self.fetches.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            stale_serves: self.stale_serves.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}
