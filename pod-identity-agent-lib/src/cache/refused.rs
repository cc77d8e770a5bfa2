//! The short-lived memory of tokens the upstream refused for good.
//!
//! EKS Auth answers a forged, expired or unassociated token with an irrecoverable error
//! (`InvalidTokenException`, `ExpiredTokenException`, `AccessDeniedException`,
//! `ResourceNotFoundException`). Asking again within seconds gets the same answer, so the cache
//! keeps it for a short time, by token digest, and answers repeats without an upstream call.
//! The store is bounded: at most [`MAX_REFUSED`] tokens, the oldest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::TokenDigest;
use crate::source::SourceError;

/// Default time a refused token's answer is kept.
pub const DEFAULT_REFUSED_TTL: Duration = Duration::from_secs(5);

/// Most refused tokens remembered at once.
pub const MAX_REFUSED: usize = 4096;

/// Refused tokens and their answers, each until its time is up.
#[derive(Default)]
pub(super) struct Refused {
    answers: HashMap<TokenDigest, (SourceError, Instant)>,
    /// Insertion order, which is expiry order (one time to live for all).
    order: VecDeque<(Instant, TokenDigest)>,
}

impl Refused {
    /// The kept answer for `key`, if its time is not up.
    pub(super) fn get(&self, key: &TokenDigest, now: Instant) -> Option<SourceError> {
        self.answers
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(error, _)| error.clone())
    }

    /// Keeps `error` for `key` until `until`, forgetting expired and (when full) the oldest
    /// answers.
    pub(super) fn insert(
        &mut self,
        key: TokenDigest,
        error: SourceError,
        now: Instant,
        until: Instant,
    ) {
        while let Some(&(expires, oldest)) = self.order.front() {
            if expires > now && self.answers.len() < MAX_REFUSED {
                break;
            }
            self.order.pop_front();
            if self
                .answers
                .get(&oldest)
                .is_some_and(|(_, u)| *u == expires)
            {
                self.answers.remove(&oldest);
            }
        }
        self.answers.insert(key, (error, until));
        self.order.push_back((until, key));
    }

    /// Forgets `key` (it was issued credentials after all).
    pub(super) fn remove(&mut self, key: &TokenDigest) {
        self.answers.remove(key);
    }

    /// Number of remembered answers (expired ones included until swept).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.answers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> TokenDigest {
        TokenDigest::of_bytes(&n.to_be_bytes())
    }

    #[tokio::test(start_paused = true)]
    async fn answers_last_their_time_and_the_store_stays_bounded() {
        let mut refused = Refused::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(5);
        refused.insert(key(0), SourceError::Timeout, now, now + ttl);
        assert!(refused.get(&key(0), now).is_some());
        assert!(refused.get(&key(0), now + ttl).is_none());
        for n in 1..=(MAX_REFUSED as u32 + 10) {
            refused.insert(key(n), SourceError::Timeout, now, now + ttl);
        }
        assert_eq!(refused.len(), MAX_REFUSED);
        assert!(refused.get(&key(0), now).is_none(), "the oldest went first");
        // Expired answers are swept as new ones arrive.
        let later = now + ttl;
        refused.insert(key(0), SourceError::Timeout, later, later + ttl);
        assert_eq!(refused.len(), 1);
    }
}
