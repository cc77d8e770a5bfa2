//! [`PodWatch`]: which pods on this node are alive, from kube's watcher (list, then watch) of the
//! API server, so credentials of deleted or finished pods are dropped at once instead of being
//! renewed.
//!
//! The pods are those with `spec.nodeName=<node>` (the node name from `--eks-node-name`, else
//! the `NODE_NAME` environment variable the chart sets from the downward API: see
//! [`node_name`]). [`kube::runtime::watcher()`] works as Kubernetes informers do:
//!
//! - a consistent list (pages of [`PAGE_SIZE`]), then a watch from the list's
//!   `resourceVersion` with bookmarks (`allowWatchBookmarks=true`), following each event's and
//!   bookmark's version;
//! - a watch that ends (the server's `timeoutSeconds`, default [`DEFAULT_WATCH_TIMEOUT`], or
//!   silence past it) is resumed from the last version; `410 Gone` (an expired version) re-lists,
//!   and pods missing from the new list are reported gone;
//! - any other error backs off (1 s doubling to 30 s, with up to 20 % jitter) and retries.
//!
//! A pod is reported gone ([`PodGone`], to the callback given to
//! [`PodWatchBuilder::on_pod_gone`]) when it is deleted or its phase becomes `Succeeded` or
//! `Failed`; a pod that is only terminating (`deletionTimestamp` set) is still alive: its
//! containers may need credentials to finish.
//!
//! **Fail open.** Until the first list is complete, and from an error until the watch delivers
//! again (an event, or a re-list), [`PodWatch::is_synced`] is false and [`PodWatch::liveness`]
//! answers [`PodLiveness::Unknown`]: callers then behave as without the watch (renew as usual).
//! An expired version is not an error: the re-list keeps the view current. The change is logged
//! at `warn` (broken) and `info` (synced), and the watch sets the gauge
//! `pod_identity_pod_watch_synced` of the [`Metrics`] given to [`PodWatchBuilder::metrics`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use super::client::{KubeClient, WATCH_GRACE};
use crate::error::ErrorChain;
use crate::metrics::Metrics;

/// How long the server keeps one watch open before the client resumes it.
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(290);
/// First wait after an error.
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait after repeated errors.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Pods per list page.
pub const PAGE_SIZE: u32 = 500;

/// The agent's node name: `flag` (`--eks-node-name`) when given, else `NODE_NAME` from `env`.
pub fn node_name(flag: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    flag.map(str::to_owned)
        .filter(|n| !n.is_empty())
        .or_else(|| env("NODE_NAME").filter(|n| !n.is_empty()))
}

/// What the watch knows about a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PodLiveness {
    /// On this node and not finished.
    Alive,
    /// Its phase is `Succeeded` or `Failed`.
    Terminated,
    /// Not among this node's pods: deleted, or (for a pod created moments ago) not seen yet.
    NotFound,
    /// The watch is not synced: no answer (fail open).
    Unknown,
}

impl PodLiveness {
    /// Whether the pod is known to be gone (terminated or not found while synced).
    pub fn is_gone(self) -> bool {
        matches!(self, Self::Terminated | Self::NotFound)
    }
}

/// Why a pod was reported gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GoneReason {
    /// A `DELETED` event, or missing from a re-list.
    Deleted,
    /// Its phase became `Succeeded` or `Failed`.
    Terminated,
}

/// A pod that is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodGone {
    /// The pod's uid (the `kubernetes.io.pod.uid` claim of its tokens).
    pub uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// Why it is gone.
    pub reason: GoneReason,
}

type GoneCallback = Arc<dyn Fn(PodGone) + Send + Sync>;

/// Why a [`PodWatch`] could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PodWatchError {
    /// The node name is not a Kubernetes node name (a DNS subdomain).
    #[error("{0:?} is not a Kubernetes node name")]
    NodeName(String),
    /// The watch's client could not be built.
    #[error("cannot build the pod watch's client: {0}")]
    Client(String),
}

/// Builds a [`PodWatch`].
pub struct PodWatchBuilder {
    client: KubeClient,
    node: String,
    on_gone: Option<GoneCallback>,
    metrics: Option<Metrics>,
    watch_timeout: Duration,
    backoff: (Duration, Duration),
}

impl fmt::Debug for PodWatchBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodWatchBuilder")
            .field("node", &self.node)
            .field("watch_timeout", &self.watch_timeout)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl PodWatchBuilder {
    /// Called (from the watch task; keep it short) for each pod that is gone.
    pub fn on_pod_gone(mut self, callback: impl Fn(PodGone) + Send + Sync + 'static) -> Self {
        self.on_gone = Some(Arc::new(callback));
        self
    }

    /// The watch sets `pod_identity_pod_watch_synced` here: 1 when synced, 0 from the start and
    /// while broken.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The server-side timeout of one watch (default 290 s, at least 1 s).
    pub fn watch_timeout(mut self, timeout: Duration) -> Self {
        self.watch_timeout = timeout;
        self
    }

    /// First and longest wait after errors (default 1 s and 30 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max.max(min));
        self
    }

    /// Starts the watch task (within a tokio runtime); it stops when the last [`PodWatch`]
    /// clone is dropped.
    pub fn start(self) -> Result<PodWatch, PodWatchError> {
        if !is_node_name(&self.node) {
            return Err(PodWatchError::NodeName(
                self.node.chars().take(256).collect(),
            ));
        }
        let timeout_seconds = u32::try_from(self.watch_timeout.as_secs())
            .unwrap_or(u32::MAX)
            .max(1);
        let client = self
            .client
            .long_call_client(Duration::from_secs(u64::from(timeout_seconds)) + WATCH_GRACE)
            .map_err(|e| PodWatchError::Client(e.to_string()))?;
        let config = watcher::Config::default()
            .fields(&format!("spec.nodeName={}", self.node))
            .timeout(timeout_seconds)
            .page_size(PAGE_SIZE);
        let (synced_tx, synced_rx) = watch::channel(false);
        let state = Arc::new(State {
            pods: RwLock::new(HashMap::new()),
            synced: synced_rx,
        });
        if let Some(metrics) = &self.metrics {
            metrics.set_pod_watch_synced(false);
        }
        let view = View {
            state: Arc::clone(&state),
            synced: synced_tx,
            on_gone: self.on_gone,
            metrics: self.metrics,
            relist: None,
        };
        let events = watcher::watcher(kube::Api::<Pod>::all(client), config)
            .backoff(Jittered::new(self.backoff));
        let handle = tokio::spawn(view.run(events));
        Ok(PodWatch {
            state,
            _task: Arc::new(AbortOnDrop(handle)),
        })
    }
}

/// The live view of this node's pods; cheap to clone.
#[derive(Clone)]
pub struct PodWatch {
    state: Arc<State>,
    _task: Arc<AbortOnDrop>,
}

impl fmt::Debug for PodWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodWatch")
            .field("synced", &self.is_synced())
            .finish_non_exhaustive()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct State {
    /// By uid.
    pods: RwLock<HashMap<String, PodRecord>>,
    synced: watch::Receiver<bool>,
}

#[derive(Clone, Debug)]
struct PodRecord {
    namespace: String,
    name: String,
    terminated: bool,
}

impl PodWatch {
    /// A builder watching the pods of `node` through `client`.
    pub fn builder(client: KubeClient, node: impl Into<String>) -> PodWatchBuilder {
        PodWatchBuilder {
            client,
            node: node.into(),
            on_gone: None,
            metrics: None,
            watch_timeout: DEFAULT_WATCH_TIMEOUT,
            backoff: (DEFAULT_MIN_BACKOFF, DEFAULT_MAX_BACKOFF),
        }
    }

    /// Whether the view is current (listed, and the watch running or resuming cleanly).
    pub fn is_synced(&self) -> bool {
        *self.state.synced.borrow()
    }

    /// Waits until the view is synced.
    pub async fn synced(&self) {
        let mut synced = self.state.synced.clone();
        // The sender lives as long as the task; if it is gone, so is any hope of a sync.
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// Whether the pod with this uid is alive ([`PodLiveness::Unknown`] while not synced).
    pub fn liveness(&self, uid: &str) -> PodLiveness {
        if !self.is_synced() {
            return PodLiveness::Unknown;
        }
        let pods = match self.state.pods.read() {
            Ok(pods) => pods,
            Err(poisoned) => poisoned.into_inner(),
        };
        match pods.get(uid) {
            Some(record) if record.terminated => PodLiveness::Terminated,
            Some(_) => PodLiveness::Alive,
            None => PodLiveness::NotFound,
        }
    }

    /// How many pods of this node are known (alive or terminated).
    pub fn pod_count(&self) -> usize {
        match self.state.pods.read() {
            Ok(pods) => pods.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }
}

/// Backoff after watcher errors: `min` doubling to `max`, each wait with up to 20 % jitter;
/// back to `min` after any success.
struct Jittered {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Jittered {
    fn new((min, max): (Duration, Duration)) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }
}

impl Iterator for Jittered {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(wait + wait.mul_f64(fastrand::f64() * 0.2))
    }
}

impl Backoff for Jittered {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The watch task's side of the view.
struct View {
    state: Arc<State>,
    synced: watch::Sender<bool>,
    on_gone: Option<GoneCallback>,
    metrics: Option<Metrics>,
    /// The pods of a re-list in progress (between `Init` and `InitDone`).
    relist: Option<HashMap<String, PodRecord>>,
}

impl View {
    async fn run(
        mut self,
        events: impl futures_util::Stream<Item = Result<Event<Pod>, watcher::Error>>,
    ) {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.apply_event(event),
                Err(error) if expired(&error) => {
                    tracing::debug!("pod watch version expired; listing again");
                }
                Err(error) => self.broken(&ErrorChain(&error).to_string()),
            }
        }
        self.broken("the pod watch ended");
    }

    fn apply_event(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(pod) => {
                if let (Some(listed), Some((uid, record))) = (self.relist.as_mut(), record(&pod)) {
                    listed.insert(uid, record);
                }
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let gone = self.replace(listed);
                self.set_synced(true);
                self.report(gone);
            }
            Event::Apply(ref pod) | Event::Delete(ref pod) => {
                let deleted = matches!(event, Event::Delete(_));
                // The watch delivers again: what was missed meanwhile has been replayed.
                self.set_synced(true);
                if let Some((uid, record)) = record(pod) {
                    let gone = self.update(uid, record, deleted);
                    self.report(gone.into_iter().collect());
                }
            }
        }
    }

    fn set_synced(&self, synced: bool) {
        let changed = self.synced.send_if_modified(|current| {
            let changed = *current != synced;
            *current = synced;
            changed
        });
        if let Some(metrics) = &self.metrics {
            metrics.set_pod_watch_synced(synced);
        }
        if changed && synced {
            tracing::info!(
                pods = self.pod_count(),
                "pod watch synced: evicting credentials of deleted pods"
            );
        }
    }

    fn broken(&self, error: &str) {
        if *self.synced.borrow() {
            tracing::warn!(
                error,
                "pod watch broken: failing open (credentials are renewed as without the watch)"
            );
        } else {
            tracing::warn!(error, "pod watch not synced: failing open");
        }
        self.set_synced(false);
    }

    fn pod_count(&self) -> usize {
        match self.state.pods.read() {
            Ok(pods) => pods.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    fn pods(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, PodRecord>> {
        match self.state.pods.write() {
            Ok(pods) => pods,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn report(&self, gone: Vec<PodGone>) {
        let Some(callback) = &self.on_gone else {
            return;
        };
        for pod in gone {
            tracing::debug!(uid = %pod.uid, namespace = %pod.namespace, name = %pod.name, reason = ?pod.reason, "pod gone");
            callback(pod);
        }
    }

    /// Replaces the view with a complete list; returns the pods gone since the last view.
    fn replace(&self, listed: HashMap<String, PodRecord>) -> Vec<PodGone> {
        let mut gone = Vec::new();
        let mut pods = self.pods();
        for (uid, old) in pods.iter() {
            match listed.get(uid) {
                None => gone.push(gone_pod(uid, old, GoneReason::Deleted)),
                Some(new) if new.terminated && !old.terminated => {
                    gone.push(gone_pod(uid, new, GoneReason::Terminated));
                }
                Some(_) => {}
            }
        }
        for (uid, new) in &listed {
            if new.terminated && !pods.contains_key(uid) {
                gone.push(gone_pod(uid, new, GoneReason::Terminated));
            }
        }
        *pods = listed;
        gone
    }

    fn update(&self, uid: String, record: PodRecord, deleted: bool) -> Option<PodGone> {
        let mut pods = self.pods();
        if deleted {
            let old = pods.remove(&uid);
            return Some(gone_pod(
                &uid,
                old.as_ref().unwrap_or(&record),
                GoneReason::Deleted,
            ));
        }
        let was_terminated = pods.get(&uid).is_some_and(|old| old.terminated);
        let gone = (record.terminated && !was_terminated)
            .then(|| gone_pod(&uid, &record, GoneReason::Terminated));
        pods.insert(uid, record);
        gone
    }
}

/// Whether the watcher reports an expired resource version (it re-lists next).
fn expired(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// A pod's uid and what the view keeps of it; `None` without a uid.
fn record(pod: &Pod) -> Option<(String, PodRecord)> {
    let uid = pod.metadata.uid.clone().filter(|u| !u.is_empty())?;
    let terminated = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    Some((
        uid,
        PodRecord {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            terminated,
        },
    ))
}

fn gone_pod(uid: &str, record: &PodRecord, reason: GoneReason) -> PodGone {
    PodGone {
        uid: uid.to_owned(),
        namespace: record.namespace.clone(),
        name: record.name.clone(),
        reason,
    }
}

/// A node name is a DNS subdomain: lowercase alphanumerics, `-` and `.`, at most 253.
fn is_node_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_node_name_from_the_environment() {
        let env = |key: &str| (key == "NODE_NAME").then(|| "from-env".to_owned());
        assert_eq!(
            node_name(Some("from-flag"), &env).as_deref(),
            Some("from-flag")
        );
        assert_eq!(node_name(None, &env).as_deref(), Some("from-env"));
        assert_eq!(node_name(Some(""), &env).as_deref(), Some("from-env"));
        assert_eq!(node_name(None, &|_| None), None);
    }

    #[test]
    fn node_names_are_dns_subdomains() {
        assert!(is_node_name("ip-10-0-1-23.eu-west-1.compute.internal"));
        for name in ["", "Node", "a&b=c", "a b", &"a".repeat(254)] {
            assert!(!is_node_name(name), "{name}");
        }
    }

    #[test]
    fn backoff_doubles_to_its_maximum_with_jitter_and_resets() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(30));
        let mut backoff = Jittered::new((min, max));
        let waits: Vec<Duration> = backoff.by_ref().take(7).collect();
        for (wait, base) in waits.iter().zip([1, 2, 4, 8, 16, 30, 30]) {
            let base = Duration::from_secs(base);
            assert!(
                *wait >= base && *wait <= base.mul_f64(1.2),
                "{wait:?} for {base:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next().unwrap() <= min.mul_f64(1.2));
    }

    #[test]
    fn finished_phases_are_terminated() {
        for (phase, terminated) in [
            ("Running", false),
            ("Pending", false),
            ("Succeeded", true),
            ("Failed", true),
        ] {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"uid": "u", "name": "p", "namespace": "n"},
                "status": {"phase": phase}
            }))
            .unwrap();
            assert_eq!(record(&pod).unwrap().1.terminated, terminated, "{phase}");
        }
    }
}
