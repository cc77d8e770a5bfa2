//! The clock seam.
//!
//! Two clocks drive the agent. Scheduling (renewal times, idle times, rate limits, timeouts) uses
//! tokio's monotonic clock, so tests pause and advance it with `tokio::time::pause()` and
//! `tokio::time::advance()`. Credential expirations and token `exp`/`nbf` claims are wall-clock
//! times, read through the SDK's own clock vocabulary (`aws_smithy_async::time`): a
//! `SharedTimeSource`, the system clock (`SystemTimeSource`, the default) in production and
//! [`TokioTimeSource`] in tests, which moves exactly as far as tokio's (paused) clock does. The
//! provider and the SDK clients take the same type, so one clock can drive all of them.

use std::fmt;
use std::time::SystemTime;

use aws_smithy_async::time::TimeSource;

/// A wall clock that starts at a fixed time and advances with tokio's clock.
///
/// Under `tokio::time::pause()` it moves only when tokio's time moves, so expirations and
/// renewal schedules stay consistent with each other in tests. Wrap it in a
/// `aws_smithy_async::time::SharedTimeSource` to hand it to the blocks.
#[derive(Clone, Debug)]
pub struct TokioTimeSource {
    start: SystemTime,
    started: tokio::time::Instant,
}

impl TokioTimeSource {
    /// A clock that reads `start` now and moves forward with tokio's clock.
    pub fn starting_at(start: SystemTime) -> Self {
        Self {
            start,
            started: tokio::time::Instant::now(),
        }
    }
}

impl TimeSource for TokioTimeSource {
    fn now(&self) -> SystemTime {
        self.start + self.started.elapsed()
    }
}

/// A governor clock over tokio's clock, so rate limits follow paused time in tests.
#[derive(Clone, Debug)]
pub(crate) struct TokioRateClock {
    origin: tokio::time::Instant,
}

impl TokioRateClock {
    pub(crate) fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl governor::clock::Clock for TokioRateClock {
    type Instant = governor::nanos::Nanos;

    fn now(&self) -> Self::Instant {
        governor::nanos::Nanos::from(self.origin.elapsed())
    }
}

/// A direct (unkeyed) GCRA rate limiter on tokio's clock.
pub(crate) struct RateLimiter {
    limiter: governor::RateLimiter<
        governor::state::NotKeyed,
        governor::state::InMemoryState,
        TokioRateClock,
        governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
    >,
    clock: TokioRateClock,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter allowing `per_second` with bursts of `burst` (at least 1); `None` when
    /// `per_second` is 0, which turns limiting off.
    pub(crate) fn new(per_second: u32, burst: u32) -> Option<Self> {
        let per_second = std::num::NonZeroU32::new(per_second)?;
        let burst = std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = governor::Quota::per_second(per_second).allow_burst(burst);
        let clock = TokioRateClock::new();
        Some(Self {
            limiter: governor::RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
        })
    }

    /// Admits one cell now, or says no.
    pub(crate) fn check(&self) -> bool {
        self.limiter.check().is_ok()
    }

    /// Waits on tokio's clock until one more cell is admitted.
    pub(crate) async fn until_ready(&self) {
        use governor::clock::Clock;
        while let Err(not_until) = self.limiter.check() {
            tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
        }
    }
}

/// A GCRA rate limiter keyed by client address, on tokio's clock.
///
/// Each address gets its own bucket. Buckets that have refilled are forgotten every
/// [`FORGET_EVERY`] checks, so the state is bounded by the clients seen lately.
pub(crate) struct ClientRateLimiter {
    limiter: governor::RateLimiter<
        std::net::IpAddr,
        governor::state::keyed::HashMapStateStore<std::net::IpAddr>,
        TokioRateClock,
        governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
    >,
    checks: std::sync::atomic::AtomicU32,
}

/// How many checks pass between two sweeps of refilled buckets.
const FORGET_EVERY: u32 = 4096;

impl fmt::Debug for ClientRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRateLimiter")
            .field("clients", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

impl ClientRateLimiter {
    /// A limiter allowing each address `per_second` with bursts of `burst` (at least 1); `None`
    /// when `per_second` is 0, which turns limiting off.
    pub(crate) fn new(per_second: u32, burst: u32) -> Option<Self> {
        let per_second = std::num::NonZeroU32::new(per_second)?;
        let burst = std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = governor::Quota::per_second(per_second).allow_burst(burst);
        Some(Self {
            limiter: governor::RateLimiter::hashmap_with_clock(quota, TokioRateClock::new()),
            checks: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Admits one cell for `client` now, or says no.
    pub(crate) fn check(&self, client: std::net::IpAddr) -> bool {
        let checks = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if checks % FORGET_EVERY == FORGET_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client.to_canonical()).is_ok()
    }
}
