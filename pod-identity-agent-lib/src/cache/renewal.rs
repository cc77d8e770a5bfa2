//! Renewal in the background: when entries renew, the renewal task, failures and throttling.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use pod_identity_core::container_credentials::MIN_REMAINING;
use pod_identity_core::{eks_auth::EksAuthErrorCode, eks_auth::ErrorClass};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Entry, Eviction, Kept, Outcome, POD_NOT_FOUND_GRACE, PodState, Shared, TokenDigest};
use crate::metrics::CacheState;
use crate::source::{CredentialSource, IssuedCredentials, SourceError};

/// How long before expiry a renewal is due at the latest (or half the lifetime if shorter).
pub(super) const RENEWAL_LEAD: Duration = Duration::from_secs(5 * 60);
/// How long before the entry stops being served a renewal is due at the latest.
pub(super) const RENEWAL_MARGIN: Duration = Duration::from_secs(5);
/// First pause of renewals after a throttled renewal.
pub(super) const THROTTLE_PAUSE: Duration = Duration::from_secs(2);
/// Longest pause of renewals after throttled renewals.
pub(super) const MAX_THROTTLE_PAUSE: Duration = Duration::from_secs(120);
/// The pod view has not been asked yet.
pub(super) const VIEW_NONE: u8 = 0;
/// The pod view answered.
pub(super) const VIEW_SYNCED: u8 = 1;
/// The pod view did not know (not synced).
pub(super) const VIEW_UNKNOWN: u8 = 2;

/// A renewal taken off the schedule.
pub(super) struct Renewal {
    pub(super) key: TokenDigest,
    pub(super) generation: u64,
    pub(super) kept: Arc<Kept>,
}

impl<S: CredentialSource> Shared<S> {
    /// When fresh credentials are renewed: ahead of expiry, at most `max_retention` from now.
    ///
    /// The renewal is due while the entry is still served (more than [`MIN_REMAINING`] left, plus
    /// a margin), so a request never finds it stale and starts a second upstream call beside the
    /// renewal. Credentials that are servable only briefly renew at half their servable time.
    pub(super) fn renewal_delay(&self, issued: &IssuedCredentials) -> Duration {
        let lifetime = issued.remaining(self.clock.now());
        let servable = lifetime.saturating_sub(MIN_REMAINING);
        let lead = RENEWAL_LEAD
            .min(lifetime / 2)
            .max(MIN_REMAINING + RENEWAL_MARGIN);
        let delay = lifetime.saturating_sub(lead).max(servable / 2);
        self.config.max_retention.min(delay)
    }

    /// Takes the first due renewal off the schedule: evicts it if its token expired or nobody
    /// read it lately, else returns it to renew.
    pub(super) fn take_due(&self) -> Option<Result<Renewal, Instant>> {
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
        let why = if entry.kept.times.validate(self.clock.now()).is_err() {
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
    pub(super) fn pod_gone(&self, entry: &Entry, now: Instant) -> Option<Eviction> {
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
    pub(super) fn defer_if_paused(&self, renewal: &Renewal) -> bool {
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

    /// Evicts a renewal's entry whose kept token no longer decodes.
    pub(super) fn abandon_renewal(&self, renewal: &Renewal) {
        let mut state = self.lock();
        if state
            .entries
            .get(&renewal.key)
            .is_some_and(|entry| entry.generation == renewal.generation)
        {
            self.evict(&mut state, &renewal.key, Eviction::Undecodable);
        }
        self.wake.notify_one();
    }

    pub(super) fn finish_renewal(&self, renewal: &Renewal, outcome: Outcome) {
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
pub(super) fn is_throttling(error: &SourceError) -> bool {
    matches!(error, SourceError::EksAuth(error) if *error.code() == EksAuthErrorCode::Throttling)
}

/// The renewal task: starts due renewals, rate-limited, until the cache is dropped.
pub(super) async fn renew_due<S: CredentialSource>(cache: Weak<Shared<S>>, wake: Arc<Notify>) {
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
                    let Ok(request) = renewal.kept.request() else {
                        shared.abandon_renewal(&renewal);
                        return;
                    };
                    let outcome = shared.renew_bounded(&request).await;
                    drop(request);
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
