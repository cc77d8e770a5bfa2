//! The miss path: a rotated token taking over its pod's entry, the single upstream call of a
//! flight, and calls with caching off.

use std::sync::Arc;

use pod_identity_core::container_credentials::MIN_REMAINING;
use pod_identity_core::eks_auth::ErrorClass;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{CredentialCache, Kept, Outcome, RotationCheck, Shared, TokenDigest};
use crate::source::{CredentialRequest, CredentialSource, IssuedCredentials, SourceError};

impl<S: CredentialSource> CredentialCache<S> {
    /// A rotated token taking over its pod's entry: `Some` when the token's pod uid has a
    /// servable entry (another token) and the validator accepts the token against the entry's
    /// identity; then the entry is re-keyed to this token, which it keeps for renewals.
    pub(super) async fn continue_rotation(
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

    pub(super) async fn pass_through(&self, request: &CredentialRequest) -> Outcome {
        let shared = self.shared.clone();
        let request = request.clone();
        // Spawned so that a client going away does not cancel the upstream call.
        let call = tokio::spawn(async move {
            let outcome = shared.fetch_bounded(&request).await;
            outcome.and_then(|issued| shared.check_remaining(issued))
        });
        call.await.unwrap_or_else(|_| Err(aborted()))
    }
}

impl<S: CredentialSource> Shared<S> {
    pub(super) fn check_remaining(&self, issued: IssuedCredentials) -> Outcome {
        issued.servable(self.clock.now())
    }

    /// One request-path upstream call: waits for a place among the concurrent fetches, and
    /// gives up (as a timeout) after the fetch timeout, waiting included.
    pub(super) async fn fetch_bounded(&self, request: &CredentialRequest) -> Outcome {
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
    pub(super) async fn renew_bounded(&self, request: &CredentialRequest) -> Outcome {
        tokio::time::timeout(self.config.fetch_timeout, self.source.credentials(request))
            .await
            .unwrap_or(Err(SourceError::Timeout))
    }
}

/// The single upstream call of a flight.
pub(super) async fn fetch<S: CredentialSource>(
    shared: Arc<Shared<S>>,
    key: TokenDigest,
    request: CredentialRequest,
    done: watch::Sender<Option<Outcome>>,
) {
    // Ends the flight even if the source panics, so the next request tries again.
    pub(super) struct EndFlight<'a, S: CredentialSource> {
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

pub(super) fn aborted() -> SourceError {
    SourceError::unavailable(Aborted)
}

/// The upstream call ended without an answer (its task panicked).
#[derive(Debug, thiserror::Error)]
#[error("the upstream call ended without an answer")]
pub(super) struct Aborted;
