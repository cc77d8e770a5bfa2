//! The entries and their indexes: token digests, use order, renewal schedule, pods.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pod_identity_core::token::validate_times;
use pod_identity_core::{
    association::ClusterName, secret::SecretString, token::ServiceAccountToken, token::TokenError,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Outcome, PodIdentity, Refused};
use crate::source::{CredentialRequest, IssuedCredentials, SourceError};

/// SHA-256 of the raw token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct TokenDigest(pub(super) [u8; 32]);

impl TokenDigest {
    pub(super) fn of(request: &CredentialRequest) -> Self {
        Self::of_bytes(request.token().expose_secret().as_bytes())
    }

    /// The digest of raw `Authorization` bytes: a token decodes only from valid UTF-8, kept
    /// verbatim, so these are the bytes [`of`](Self::of) digests for the same header.
    pub(super) fn of_bytes(raw_token: &[u8]) -> Self {
        Self(Sha256::digest(raw_token).into())
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) entries: HashMap<TokenDigest, Entry>,
    /// Use order: the first is the least recently used.
    pub(super) recency: BTreeMap<u64, TokenDigest>,
    /// Renewal times.
    pub(super) schedule: BTreeMap<(Instant, u64), TokenDigest>,
    pub(super) flights: HashMap<TokenDigest, watch::Receiver<Option<Outcome>>>,
    /// Side index: the seeded 64-bit hash of an entry's kept token → its digest (on a
    /// collision, the latest entry; the others are found by digest).
    pub(super) by_prehash: HashMap<u64, TokenDigest>,
    /// Pod uid → the digest of the pod's latest entry (other entries of the pod are found by
    /// digest).
    pub(super) by_pod: HashMap<String, TokenDigest>,
    /// Tokens the upstream refused for good a moment ago.
    pub(super) refused: Refused,
    /// Renewals wait until then after a throttled renewal.
    pub(super) renewals_paused_until: Option<Instant>,
    /// The next pause after a throttled renewal.
    pub(super) throttle_pause: Duration,
    pub(super) counter: u64,
    pub(super) renewing_started: bool,
}

impl State {
    pub(super) fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    pub(super) fn touch(&mut self, key: TokenDigest) {
        let tick = self.next();
        if let Some(entry) = self.entries.get_mut(&key) {
            self.recency.remove(&entry.used);
            entry.used = tick;
            self.recency.insert(tick, key);
        }
    }

    pub(super) fn schedule(&mut self, key: TokenDigest, at: Instant) {
        let seq = self.next();
        if let Some(entry) = self.entries.get_mut(&key) {
            if let Some(old) = entry.renewal.replace((at, seq)) {
                self.schedule.remove(&old);
            }
            self.schedule.insert((at, seq), key);
        }
    }

    pub(super) fn remove(&mut self, key: &TokenDigest) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        if self.by_prehash.get(&entry.prehash) == Some(key) {
            self.by_prehash.remove(&entry.prehash);
        }
        if let Some(identity) = &entry.kept.identity
            && self.by_pod.get(&identity.pod_uid) == Some(key)
        {
            self.by_pod.remove(&identity.pod_uid);
        }
        self.recency.remove(&entry.used);
        if let Some(at) = entry.renewal {
            self.schedule.remove(&at);
        }
        Some(entry)
    }

    /// Moves the entry at `old` to `new`, keeping `kept` (a rotated token of the same pod) for
    /// renewals; its renewal stays due when it was, or is due now if one was running.
    pub(super) fn rekey(
        &mut self,
        old: TokenDigest,
        new: TokenDigest,
        kept: Kept,
        prehash: &foldhash::quality::RandomState,
    ) {
        let Some(mut entry) = self.remove(&old) else {
            return;
        };
        let at = entry.renewal.take().map_or_else(Instant::now, |(at, _)| at);
        entry.prehash = prehash.hash_one(kept.token_bytes());
        entry.kept = Arc::new(kept);
        self.by_prehash.insert(entry.prehash, new);
        if let Some(identity) = &entry.kept.identity {
            self.by_pod.insert(identity.pod_uid.clone(), new);
        }
        self.recency.insert(entry.used, new);
        self.entries.insert(new, entry);
        self.schedule(new, at);
    }
}

pub(super) struct Entry {
    /// Kept to renew; dropping the last handle zeroizes the token.
    pub(super) kept: Arc<Kept>,
    /// The kept token's hash in `by_prehash`.
    pub(super) prehash: u64,
    pub(super) issued: IssuedCredentials,
    pub(super) generation: u64,
    pub(super) last_read: Instant,
    /// When the entry was first cached (a rotation keeps it).
    pub(super) created: Instant,
    pub(super) used: u64,
    pub(super) renewal: Option<(Instant, u64)>,
}

/// What renewal needs of a request: the raw token (decoded again to renew; renewals are rare,
/// and the decoded claims would double the entry), and the claims the time check reads.
pub(super) struct Kept {
    pub(super) cluster_name: ClusterName,
    pub(super) token: SecretString,
    pub(super) times: TokenTimes,
    /// Who the token names, when it has the `kubernetes.io` claims.
    pub(super) identity: Option<PodIdentity>,
}

impl Kept {
    pub(super) fn of(request: &CredentialRequest) -> Self {
        Self {
            cluster_name: request.cluster_name().clone(),
            token: request.token().secret().clone(),
            times: TokenTimes::of(request.token()),
            identity: PodIdentity::of(request.token()),
        }
    }

    /// The kept token's raw bytes.
    pub(super) fn token_bytes(&self) -> &[u8] {
        self.token.expose_secret().as_bytes()
    }

    /// Whether the kept token is exactly `raw_token` (in constant time for equal lengths).
    ///
    /// This is on every cache hit. Every byte is compared, 8 at a time, with no early exit, and
    /// the difference is read through `subtle`'s barrier once: `subtle`'s slice comparison puts a
    /// barrier on each byte, which on a 1 KB token costs more than the rest of the hit.
    pub(super) fn is(&self, raw_token: &[u8]) -> bool {
        let kept = self.token_bytes();
        if kept.len() != raw_token.len() {
            return false;
        }
        let (kept_words, kept_rest) = kept.as_chunks::<8>();
        let (raw_words, raw_rest) = raw_token.as_chunks::<8>();
        let mut difference = 0_u64;
        for (a, b) in kept_words.iter().zip(raw_words) {
            difference |= u64::from_ne_bytes(*a) ^ u64::from_ne_bytes(*b);
        }
        for (a, b) in kept_rest.iter().zip(raw_rest) {
            difference |= u64::from(a ^ b);
        }
        difference.ct_eq(&0).into()
    }

    /// The request to renew with. Decoding is deterministic, so a token that decoded when it
    /// was cached decodes now.
    pub(super) fn request(&self) -> Result<CredentialRequest, TokenError> {
        let token = ServiceAccountToken::decode(self.token.expose_secret())?;
        Ok(CredentialRequest::new(self.cluster_name.clone(), token))
    }
}

/// The token claims the reference checks on every request, `exp` and `nbf` (epoch seconds),
/// kept apart from the token: an entry checks them on a hit without decoding the token again
/// (decoding is deterministic, so only the time check can change), and without keeping the
/// decoded claims, which would double the entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TokenTimes {
    pub(super) exp: Option<i64>,
    pub(super) nbf: Option<i64>,
}

impl TokenTimes {
    pub(super) fn of(token: &ServiceAccountToken) -> Self {
        Self {
            exp: token.claims().exp,
            nbf: token.claims().nbf,
        }
    }

    /// Core's token time rule on the kept claims (`token::validate_times`, the rule
    /// [`ServiceAccountToken::validate_time`] applies), so the same errors and 400 texts.
    pub(super) fn validate(&self, now: SystemTime) -> Result<(), TokenError> {
        validate_times(self.exp, self.nbf, now)
    }
}

pub(super) enum Lookup {
    Hit(IssuedCredentials),
    InFlight(watch::Receiver<Option<Outcome>>),
    /// The upstream refused this token for good a moment ago.
    Refused(SourceError),
    Miss,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Eviction {
    Stale,
    Capacity,
    Irrecoverable,
    TokenExpired,
    Idle,
    /// The kept token no longer decodes (cannot happen: decoding is deterministic).
    Undecodable,
    /// The pod is gone (reported by the pod view).
    PodGone,
    /// The pod has finished.
    PodTerminated,
    /// The pod is not on this node any more.
    PodNotFound,
}
