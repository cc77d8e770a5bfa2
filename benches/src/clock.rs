//! Clocks for the benchmarks: a stopwatch and a virtual wall clock that can jump and run fast.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aws_smithy_async::rt::sleep::{AsyncSleep, Sleep};
use aws_smithy_async::time::TimeSource;

/// The monotonic clock the benchmarks time with.
///
/// This is the benchmarks' seam for `Instant::now` (timing is what a benchmark does).
#[allow(clippy::disallowed_methods)]
pub fn stopwatch() -> Instant {
    Instant::now()
}

/// The operating system's wall clock (the one seam for `SystemTime::now` in the benchmarks).
#[allow(clippy::disallowed_methods)]
pub fn system_now() -> SystemTime {
    SystemTime::now()
}

/// Longest real sleep between two reads of a [`BenchClock`] while waiting on it, so a jump or a
/// change of speed is noticed quickly.
const POLL: Duration = Duration::from_millis(5);

/// A wall clock that runs at a chosen speed from a chosen point and can jump.
///
/// It is a time source (for aws-config and the provider), a sleep (waits follow the virtual
/// time) and the agent's [`TimeSource`], so every party of a scenario shares one timeline.
#[derive(Clone, Debug)]
pub struct BenchClock {
    anchor: Arc<RwLock<Anchor>>,
}

#[derive(Clone, Copy, Debug)]
struct Anchor {
    real: Instant,
    virtual_time: SystemTime,
    speed: f64,
}

impl BenchClock {
    /// A clock reading the system time now and running at real speed.
    pub fn starting_now() -> Self {
        Self {
            anchor: Arc::new(RwLock::new(Anchor {
                real: stopwatch(),
                virtual_time: system_now(),
                speed: 1.0,
            })),
        }
    }

    fn anchor(&self) -> Anchor {
        *self
            .anchor
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The virtual time now.
    pub fn now(&self) -> SystemTime {
        let anchor = self.anchor();
        anchor.virtual_time + anchor.real.elapsed().mul_f64(anchor.speed)
    }

    /// From now on the clock reads `at` and runs `speed` times faster than real time.
    pub fn set(&self, at: SystemTime, speed: f64) {
        let mut anchor = self
            .anchor
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *anchor = Anchor {
            real: stopwatch(),
            virtual_time: at,
            speed: speed.max(f64::MIN_POSITIVE),
        };
    }

    /// Waits until the virtual clock reads `deadline` or later.
    pub async fn sleep_until(&self, deadline: SystemTime) {
        loop {
            let anchor = self.anchor();
            let now = anchor.virtual_time + anchor.real.elapsed().mul_f64(anchor.speed);
            let Ok(left) = deadline.duration_since(now) else {
                return;
            };
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.div_f64(anchor.speed).min(POLL)).await;
        }
    }
}

impl TimeSource for BenchClock {
    fn now(&self) -> SystemTime {
        BenchClock::now(self)
    }
}

impl AsyncSleep for BenchClock {
    fn sleep(&self, duration: Duration) -> Sleep {
        let clock = self.clone();
        let deadline = clock.now() + duration;
        Sleep::new(async move { clock.sleep_until(deadline).await })
    }
}
