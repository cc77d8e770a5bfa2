//! What a simulator remembers: its configuration, the sessions it issued, its counters and the
//! failures it was told to inject.

use aws_smithy_async::time::SharedTimeSource;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use pod_identity_core::{
    arn::Arn, association::Association, association::ClusterName, eks_auth::EksAuthError,
    eks_auth::EksAuthErrorCode, secret::SecretString,
};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::credentials::NodeCredentials;

/// One association as the simulator serves it, with its generated ids.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) association: Association,
    pub(crate) association_id: String,
    pub(crate) association_arn: String,
    /// The unique id of the role the sessions assume (`AROA…`).
    pub(crate) role_id: String,
}

/// A session the simulator issued credentials for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuedSession {
    /// The access key id (`ASIA…`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// The session token.
    pub session_token: SecretString,
    /// When the simulator issued the credentials.
    pub issued_at: SystemTime,
    /// When the credentials expire.
    pub expiration: SystemTime,
    /// The role the session assumed (the association's target role when it has one).
    pub role_arn: String,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session name>`.
    pub assumed_role_arn: String,
    /// `<role id>:<session name>`.
    pub assume_role_id: String,
    /// `eks-<cluster>-<pod>-<uuid>`, cut to 64 characters.
    pub session_name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's service account.
    pub service_account: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's uid.
    pub pod_uid: String,
    /// The association's id.
    pub association_id: String,
    /// The association's ARN.
    pub association_arn: String,
    /// The session tags EKS would attach (core's derivation); empty when the association
    /// disables them.
    pub session_tags: Vec<(String, String)>,
    /// SHA-256 of the service-account token, hex (never the token itself).
    pub token_digest: String,
}

/// An error or a hang the simulator injects instead of answering.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// Answer with this error (status, `x-amzn-errortype` and body from it).
    Error(EksAuthError),
    /// Never answer: the request stays open until the client gives up, the failures are cleared,
    /// or the server shuts down (then it gets `ServiceUnavailableException`).
    Hang,
}

impl Failure {
    /// The error `code` with its modeled status (500 for codes EKS Auth does not model).
    pub fn error(code: EksAuthErrorCode) -> Self {
        let message = format!("Injected by the simulator: {}", code.as_str());
        Self::Error(EksAuthError::modeled(code, message))
    }
}

/// How many requests an injected [`Failure`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Times {
    /// The next `n` well-formed, correctly signed EKS Auth requests.
    Next(u32),
    /// Every request until
    /// [`EksAuthSimulator::clear_failures`](super::EksAuthSimulator::clear_failures).
    Always,
}

/// The shared state behind an [`EksAuthSimulator`](super::EksAuthSimulator).
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) cluster_name: ClusterName,
    pub(crate) cluster_arn: Arn,
    pub(crate) region: String,
    pub(crate) account_id: String,
    pub(crate) node: NodeCredentials,
    /// Keyed by (namespace, service account).
    pub(crate) associations: HashMap<(String, String), Registered>,
    pub(crate) clock: SharedTimeSource,
    lifetime: Mutex<Duration>,
    latency: Mutex<Duration>,
    failure: Mutex<Option<(Failure, Times)>>,
    /// Issued sessions, the newest `max_sessions` of them.
    sessions: Mutex<Sessions>,
    counters: Mutex<Counters>,
    /// Bumped to release hanging requests.
    release: watch::Sender<u64>,
}

/// Issued sessions by access key id, oldest first in `order`.
#[derive(Debug)]
struct Sessions {
    by_key: HashMap<String, IssuedSession>,
    order: VecDeque<String>,
    max: usize,
}

#[derive(Debug, Default)]
struct Counters {
    requests: u64,
    by_token: HashMap<[u8; 32], u64>,
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cluster_name: ClusterName,
        cluster_arn: Arn,
        region: String,
        account_id: String,
        node: NodeCredentials,
        associations: HashMap<(String, String), Registered>,
        lifetime: Duration,
        max_sessions: usize,
        clock: SharedTimeSource,
    ) -> Self {
        Self {
            cluster_name,
            cluster_arn,
            region,
            account_id,
            node,
            associations,
            clock,
            lifetime: Mutex::new(lifetime),
            latency: Mutex::new(Duration::ZERO),
            failure: Mutex::new(None),
            sessions: Mutex::new(Sessions {
                by_key: HashMap::new(),
                order: VecDeque::new(),
                max: max_sessions,
            }),
            counters: Mutex::new(Counters::default()),
            release: watch::Sender::new(0),
        }
    }

    pub(crate) fn lifetime(&self) -> Duration {
        *lock(&self.lifetime)
    }

    pub(crate) fn set_lifetime(&self, lifetime: Duration) {
        *lock(&self.lifetime) = lifetime;
    }

    pub(crate) fn latency(&self) -> Duration {
        *lock(&self.latency)
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    pub(crate) fn inject(&self, failure: Failure, times: Times) {
        *lock(&self.failure) = match times {
            Times::Next(0) => None,
            times => Some((failure, times)),
        };
    }

    pub(crate) fn clear_failures(&self) {
        *lock(&self.failure) = None;
        self.release_hung();
    }

    /// The failure for this request, if one is injected; counts it down.
    pub(crate) fn take_failure(&self) -> Option<Failure> {
        let mut slot = lock(&self.failure);
        let (failure, times) = slot.as_mut()?;
        let failure = failure.clone();
        if let Times::Next(n) = times {
            *n -= 1;
            if *n == 0 {
                *slot = None;
            }
        }
        Some(failure)
    }

    /// A handle that resolves once hanging requests are released after this call.
    pub(crate) fn release(&self) -> Release {
        let rx = self.release.subscribe();
        let start = *rx.borrow();
        Release { rx, start }
    }

    pub(crate) fn release_hung(&self) {
        self.release
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    pub(crate) fn count_request(&self) {
        lock(&self.counters).requests += 1;
    }

    pub(crate) fn count_token(&self, token: &str) {
        *lock(&self.counters)
            .by_token
            .entry(digest(token))
            .or_default() += 1;
    }

    pub(crate) fn requests(&self) -> u64 {
        lock(&self.counters).requests
    }

    pub(crate) fn token_requests(&self, token: &str) -> u64 {
        lock(&self.counters)
            .by_token
            .get(&digest(token))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn reset_counts(&self) {
        *lock(&self.counters) = Counters::default();
    }

    pub(crate) fn record(&self, session: IssuedSession) {
        let mut sessions = lock(&self.sessions);
        sessions.order.push_back(session.access_key_id.clone());
        sessions
            .by_key
            .insert(session.access_key_id.clone(), session);
        while sessions.order.len() > sessions.max {
            if let Some(oldest) = sessions.order.pop_front() {
                sessions.by_key.remove(&oldest);
            }
        }
    }

    pub(crate) fn session(&self, access_key_id: &str) -> Option<IssuedSession> {
        lock(&self.sessions).by_key.get(access_key_id).cloned()
    }

    pub(crate) fn sessions(&self) -> Vec<IssuedSession> {
        let sessions = lock(&self.sessions);
        sessions
            .order
            .iter()
            .filter_map(|key| sessions.by_key.get(key).cloned())
            .collect()
    }
}

/// Waits for hanging requests to be released (cleared failures, server shutdown).
#[derive(Debug)]
pub(crate) struct Release {
    rx: watch::Receiver<u64>,
    start: u64,
}

impl Release {
    /// Resolves once a release happened after this handle was made (at once if one did).
    pub(crate) async fn wait(&mut self) {
        let start = self.start;
        // An error means the sender is gone, which releases too.
        let _ = self.rx.wait_for(|generation| *generation != start).await;
    }
}

/// SHA-256 of a token: how counters and sessions refer to tokens without holding them.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Locks a mutex; the data stays consistent even if a holder panicked (every critical section is
/// a single assignment or lookup), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
