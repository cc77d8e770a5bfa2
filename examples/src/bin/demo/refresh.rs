//! Step 4: the provider refreshes ahead of expiry while a caller loop reads credentials.

use std::time::Duration;

use aws_sdk_sts::config::Credentials;
use pod_identity_core::container_credentials::MIN_REMAINING;
use pod_identity_provider::{PodIdentityCredentialsProvider, RefreshWindows};

use crate::{BoxError, clock, human, micros};

/// Lifetimes whose first refresh is further away than this skip step 4.
const MAX_WATCHED_REFRESH: Duration = Duration::from_secs(60);
/// How often the caller loop of step 4 reads credentials.
pub(crate) const CALLER_INTERVAL: Duration = Duration::from_millis(20);

/// Refresh windows that make the provider's background refresh land during the demo and
/// fetch fresh credentials from the agent.
///
/// The provider never refreshes before half the lifetime has passed. At half-life, credentials
/// that live 30 s or less have 15 s or less left, which the agent no longer hands out: it has
/// renewed them or fetches new ones. Longer-lived credentials are still valid in the agent at
/// half-life until its own renewal (at half-life for lifetimes under 10 minutes), so the
/// provider waits a second past that.
pub(crate) fn refresh_windows(lifetime: Duration) -> RefreshWindows {
    let window = if lifetime <= 2 * MIN_REMAINING {
        lifetime
    } else {
        (lifetime / 2).saturating_sub(Duration::from_secs(1))
    };
    RefreshWindows::new()
        .short_lived(window)
        .medium_lived(window)
        .long_lived(window)
        .mandatory((lifetime / 8).min(Duration::from_secs(60)))
}

/// When the first refresh is due at the latest, if the demo should wait for it.
pub(crate) fn expected_refresh(lifetime: Duration) -> Option<Duration> {
    let latest = if lifetime <= 2 * MIN_REMAINING {
        lifetime / 2
    } else {
        lifetime * 3 / 4
    };
    (latest <= MAX_WATCHED_REFRESH).then_some(latest)
}

/// What the caller loop saw while the provider refreshed.
pub(crate) struct Watched {
    pub(crate) renewed: Credentials,
    /// How long before the old credentials' expiry the new ones were first read.
    ahead: Duration,
    latencies: Vec<Duration>,
    metrics: pod_identity_provider::Metrics,
}

/// Reads credentials every [`CALLER_INTERVAL`] until the provider has renewed them, timing
/// every call, and checks that no call waited for a fetch.
pub(crate) async fn watch_refresh(
    provider: &PodIdentityCredentialsProvider,
    first: &Credentials,
) -> Result<Watched, BoxError> {
    let expiry = first
        .expiry()
        .ok_or("the agent's credentials carry no expiry")?;
    let mut latencies = Vec::new();
    let renewed = loop {
        tokio::time::sleep(CALLER_INTERVAL).await;
        let called = clock::instant();
        let credentials = provider.credentials().await?;
        latencies.push(called.elapsed());
        if credentials.access_key_id() != first.access_key_id() {
            break credentials;
        }
        if clock::now() >= expiry {
            return Err("the credentials expired without a background refresh".into());
        }
    };
    let ahead = expiry.duration_since(clock::now()).unwrap_or_default();
    let metrics = provider.metrics();
    // Exactly one fetch happened on a caller's path: the first, when nothing was cached.
    let on_caller_path = metrics.fetches - metrics.refreshes;
    if on_caller_path != 1 || metrics.refreshes != 1 || metrics.stale_serves != 0 {
        return Err(format!("a caller waited for credentials: {metrics:?}").into());
    }
    Ok(Watched {
        renewed,
        ahead,
        latencies,
        metrics,
    })
}

impl Watched {
    pub(crate) fn print(&self, first: &Credentials, renewed: &Credentials) {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = |q: f64| {
            let i = ((sorted.len() - 1) as f64 * q).round() as usize;
            micros(sorted[i])
        };
        println!(
            "    {} -> {} in the background, {} before {} expired",
            first.access_key_id(),
            renewed.access_key_id(),
            human(self.ahead),
            first.access_key_id()
        );
        println!(
            "    {} credentials() calls meanwhile, all from the cache: median {}, p99 {}, max {}",
            sorted.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
        println!(
            "    no caller waited: provider counters fetches={} (1 while nothing was cached, then \
             {} background refresh), failures={}, stale serves={}",
            self.metrics.fetches,
            self.metrics.refreshes,
            self.metrics.failures,
            self.metrics.stale_serves
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_lands_where_the_agent_has_fresh_credentials() {
        // Short lifetimes: the refresh at half-life finds the agent's copy with ≤ 15 s left.
        let short = refresh_windows(Duration::from_secs(18));
        assert_eq!(
            short.advisory(Duration::from_secs(18)),
            Duration::from_secs(18)
        );
        assert_eq!(
            expected_refresh(Duration::from_secs(18)),
            Some(Duration::from_secs(9))
        );
        // Longer: the window opens a second after the agent's renewal at half-life.
        let long = refresh_windows(Duration::from_secs(60));
        assert_eq!(
            long.advisory(Duration::from_secs(60)),
            Duration::from_secs(29)
        );
        assert!(long.mandatory_window() < Duration::from_secs(60) - Duration::from_secs(29) / 2);
        assert_eq!(expected_refresh(Duration::from_secs(6 * 3600)), None);
    }
}
