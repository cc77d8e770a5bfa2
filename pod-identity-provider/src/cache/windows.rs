//! [`RefreshWindows`]: when the refresh-ahead cache refreshes.

use std::time::{Duration, SystemTime};

/// Shortest time between a fetch and the refresh it schedules.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// When to refresh ahead of expiry, by remaining lifetime at fetch time.
///
/// The defaults follow the cross-SDK refresh design (botocore, Java v2, Kotlin):
///
/// | remaining lifetime at fetch | advisory window (refresh this long before expiry) |
/// |---|---|
/// | ≤ 20 min | 5 min |
/// | 20–90 min | 15 min |
/// | ≥ 90 min | 60 min |
///
/// and a mandatory window of 60 s, in which callers are still answered at once with the cached
/// credentials, but every such answer counts as a stale serve and makes sure a refresh is under
/// way (a refresh task that went away is restarted). No caller waits while unexpired
/// credentials exist. The refresh is scheduled at a random point in the first half of the
/// advisory window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshWindows {
    short: Duration,
    medium: Duration,
    long: Duration,
    mandatory: Duration,
}

impl Default for RefreshWindows {
    fn default() -> Self {
        Self::new()
    }
}

impl RefreshWindows {
    /// The defaults: 5 min, 15 min, 60 min; mandatory 60 s.
    pub const fn new() -> Self {
        Self {
            short: Duration::from_secs(5 * 60),
            medium: Duration::from_secs(15 * 60),
            long: Duration::from_secs(60 * 60),
            mandatory: Duration::from_secs(60),
        }
    }

    /// Advisory window for credentials that live 20 minutes or less (default 5 min).
    pub const fn short_lived(mut self, window: Duration) -> Self {
        self.short = window;
        self
    }

    /// Advisory window for credentials that live between 20 and 90 minutes (default 15 min).
    pub const fn medium_lived(mut self, window: Duration) -> Self {
        self.medium = window;
        self
    }

    /// Advisory window for credentials that live 90 minutes or more (default 60 min).
    pub const fn long_lived(mut self, window: Duration) -> Self {
        self.long = window;
        self
    }

    /// The mandatory window before expiry (default 60 s): a hit inside it is a stale serve and
    /// makes sure a refresh is under way. Callers are answered at once, never kept waiting.
    pub const fn mandatory(mut self, window: Duration) -> Self {
        self.mandatory = window;
        self
    }

    /// The advisory window for credentials with `lifetime` left at fetch time.
    pub fn advisory(&self, lifetime: Duration) -> Duration {
        const TWENTY_MINUTES: Duration = Duration::from_secs(20 * 60);
        const NINETY_MINUTES: Duration = Duration::from_secs(90 * 60);
        if lifetime <= TWENTY_MINUTES {
            self.short
        } else if lifetime < NINETY_MINUTES {
            self.medium
        } else {
            self.long
        }
    }

    /// The mandatory window.
    pub fn mandatory_window(&self) -> Duration {
        self.mandatory
    }

    /// When to refresh a value fetched at `now` that expires at `expiry`. `jitter` in `[0, 1)`
    /// picks the point in the first half of the advisory window.
    pub(crate) fn refresh_at(
        &self,
        now: SystemTime,
        expiry: SystemTime,
        jitter: f64,
    ) -> SystemTime {
        let lifetime = expiry.duration_since(now).unwrap_or_default();
        let window = self.advisory(lifetime);
        let into_window = window.mul_f64(jitter.clamp(0.0, 1.0) * 0.5);
        let planned = expiry
            .checked_sub(window.saturating_sub(into_window))
            .unwrap_or(now);
        // Never refresh before half the lifetime has passed, nor sooner than a floor: a value
        // that lives shorter than its window would otherwise be refetched in a loop.
        planned
            .max(now + lifetime / 2)
            .max(now + MIN_REFRESH_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn advisory_windows_follow_the_cross_sdk_design() {
        let w = RefreshWindows::new();
        assert_eq!(w.advisory(15 * MIN), 5 * MIN);
        assert_eq!(w.advisory(20 * MIN), 5 * MIN);
        assert_eq!(w.advisory(21 * MIN), 15 * MIN);
        assert_eq!(w.advisory(89 * MIN), 15 * MIN);
        assert_eq!(w.advisory(90 * MIN), 60 * MIN);
        assert_eq!(w.advisory(360 * MIN), 60 * MIN);
    }

    #[test]
    fn refresh_lands_in_the_first_half_of_the_window() {
        let w = RefreshWindows::new();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let expiry = now + 360 * MIN;
        assert_eq!(w.refresh_at(now, expiry, 0.0), expiry - 60 * MIN);
        assert_eq!(w.refresh_at(now, expiry, 1.0), expiry - 30 * MIN);
        let mid = w.refresh_at(now, expiry, 0.5);
        assert!(mid > expiry - 60 * MIN && mid < expiry - 30 * MIN);
    }

    #[test]
    fn short_lifetimes_refresh_no_earlier_than_half_life() {
        let w = RefreshWindows::new();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            w.refresh_at(now, now + 3 * MIN, 0.0),
            now + 90 * Duration::from_secs(1)
        );
        assert_eq!(w.refresh_at(now, now, 0.0), now + MIN_REFRESH_INTERVAL);
        assert_eq!(
            w.refresh_at(now, now - MIN, 0.3),
            now + MIN_REFRESH_INTERVAL
        );
    }
}
