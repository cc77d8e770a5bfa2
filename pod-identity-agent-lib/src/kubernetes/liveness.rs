//! [`PodWatch`]: which pods on this node are alive, from a list and watch of the API server, so
//! credentials of deleted or finished pods are dropped at once instead of being renewed.
//!
//! The pods are those with `spec.nodeName=<node>` (the node name from `--eks-node-name`, else
//! the `NODE_NAME` environment variable the chart sets from the downward API: see
//! [`node_name`]). The watch works as Kubernetes informers do:
//!
//! - list (pages of [`PAGE_SIZE`]), then watch from the list's `resourceVersion` with
//!   bookmarks (`allowWatchBookmarks=true`), following each event's and bookmark's version;
//! - a watch that ends (the server's `timeoutSeconds`, default [`DEFAULT_WATCH_TIMEOUT`]) is
//!   resumed from the last version; `410 Gone` (an expired version, as a status or an `ERROR`
//!   event) re-lists, and pods missing from the new list are reported gone;
//! - any other error backs off (1 s doubling to 30 s, with jitter) and retries.
//!
//! Only the pod's uid, name, namespace and `status.phase` are decoded. A pod is reported gone
//! ([`PodGone`], to the callback given to [`PodWatchBuilder::on_pod_gone`]) when it is deleted
//! or its phase becomes `Succeeded` or `Failed`; a pod that is only terminating
//! (`deletionTimestamp` set) is still alive: its containers may need credentials to finish.
//!
//! **Fail open.** Until the first list, and from an error until a watch is running again,
//! [`PodWatch::is_synced`] is false and [`PodWatch::liveness`] answers
//! [`PodLiveness::Unknown`]: callers then behave as without the watch (renew as usual). The
//! change is logged at `warn` (broken) and `info` (synced again).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::client::{ApiError, KubeClient};

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
}

/// Builds a [`PodWatch`].
pub struct PodWatchBuilder {
    client: KubeClient,
    node: String,
    on_gone: Option<GoneCallback>,
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

    /// The server-side timeout of one watch (default 290 s).
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
        let (synced_tx, synced_rx) = watch::channel(false);
        let state = Arc::new(State {
            pods: RwLock::new(HashMap::new()),
            synced: synced_rx,
        });
        let task = Watcher {
            client: self.client,
            selector: format!("spec.nodeName={}", self.node),
            state: Arc::clone(&state),
            synced: synced_tx,
            on_gone: self.on_gone,
            watch_timeout: self.watch_timeout,
            backoff: self.backoff,
        };
        let handle = tokio::spawn(task.run());
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
    /// By uid: whether the pod has terminated.
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

struct Watcher {
    client: KubeClient,
    selector: String,
    state: Arc<State>,
    synced: watch::Sender<bool>,
    on_gone: Option<GoneCallback>,
    watch_timeout: Duration,
    backoff: (Duration, Duration),
}

/// Why a watch stopped.
enum WatchEnd {
    /// The server closed it; resume from the last version.
    Closed,
    /// The version expired: re-list.
    Gone,
    /// Something failed: back off.
    Failed(String),
}

impl Watcher {
    async fn run(self) {
        let mut version: Option<String> = None;
        let mut backoff = self.backoff.0;
        loop {
            let from = match version.take() {
                Some(version) => version,
                None => match self.list().await {
                    Ok(version) => {
                        self.set_synced(true);
                        backoff = self.backoff.0;
                        version
                    }
                    Err(error) => {
                        self.broken(&format!("listing pods failed: {error}"));
                        backoff = self.wait(backoff).await;
                        continue;
                    }
                },
            };
            let mut current = from;
            let started = tokio::time::Instant::now();
            match self.watch(&mut current).await {
                WatchEnd::Closed => {
                    // A server (or proxy) that ends every watch at once is not resumed in a
                    // tight loop.
                    if started.elapsed() < self.backoff.0 {
                        tokio::time::sleep(self.backoff.0).await;
                    }
                    backoff = self.backoff.0;
                    version = Some(current);
                }
                WatchEnd::Gone => {
                    tracing::debug!("pod watch version expired; listing again");
                }
                WatchEnd::Failed(error) => {
                    self.broken(&error);
                    backoff = self.wait(backoff).await;
                    version = Some(current);
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

    /// Sleeps `backoff` (with up to 20% jitter) and returns the next one.
    async fn wait(&self, backoff: Duration) -> Duration {
        let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
        tokio::time::sleep(backoff + jitter).await;
        (backoff * 2).min(self.backoff.1)
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

    /// Lists every page and replaces the view; returns the list's version.
    async fn list(&self) -> Result<String, ApiError> {
        let mut listed = HashMap::new();
        let mut next: Option<String> = None;
        let version = loop {
            let mut path = format!(
                "/api/v1/pods?fieldSelector={}&limit={PAGE_SIZE}",
                encode(&self.selector)
            );
            if let Some(token) = &next {
                path.push_str("&continue=");
                path.push_str(&encode(token));
            }
            let page: PodList = self.client.get_json(&path).await?;
            for pod in page.items {
                if let Some((uid, record)) = pod.into_record() {
                    listed.insert(uid, record);
                }
            }
            match page.metadata.continue_token.filter(|t| !t.is_empty()) {
                Some(token) => next = Some(token),
                None => {
                    break page.metadata.resource_version.ok_or_else(|| {
                        ApiError::Decode("a pod list without resourceVersion".to_owned())
                    })?;
                }
            }
        };
        let mut gone = Vec::new();
        {
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
        }
        self.report(gone);
        Ok(version)
    }

    /// Watches from `version`, advancing it with each event and bookmark.
    async fn watch(&self, version: &mut String) -> WatchEnd {
        let path = format!(
            "/api/v1/pods?fieldSelector={}&watch=1&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={}",
            encode(&self.selector),
            encode(version),
            self.watch_timeout.as_secs().max(1)
        );
        let mut events = match self.client.watch(&path, self.watch_timeout).await {
            Ok(events) => events,
            Err(error) if error.status() == Some(410) => return WatchEnd::Gone,
            Err(error) => {
                return WatchEnd::Failed(format!("starting the pod watch failed: {error}"));
            }
        };
        // Resuming from a known version replays what was missed: the view is current again.
        self.set_synced(true);
        loop {
            let line = match events.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => return WatchEnd::Closed,
                Err(error) => return WatchEnd::Failed(format!("the pod watch failed: {error}")),
            };
            let event: WatchEvent = match serde_json::from_slice(&line) {
                Ok(event) => event,
                Err(error) => {
                    return WatchEnd::Failed(format!("unreadable pod watch event: {error}"));
                }
            };
            match event.kind.as_str() {
                "ERROR" => {
                    let status: Status = serde_json::from_value(event.object).unwrap_or_default();
                    if status.code == Some(410) {
                        return WatchEnd::Gone;
                    }
                    return WatchEnd::Failed(format!(
                        "the pod watch answered an error (code {:?})",
                        status.code
                    ));
                }
                "BOOKMARK" => {
                    if let Ok(bookmark) = serde_json::from_value::<PodObject>(event.object)
                        && let Some(v) = bookmark.metadata.resource_version
                    {
                        *version = v;
                    }
                }
                kind @ ("ADDED" | "MODIFIED" | "DELETED") => {
                    let pod: PodObject = match serde_json::from_value(event.object) {
                        Ok(pod) => pod,
                        Err(error) => {
                            return WatchEnd::Failed(format!(
                                "unreadable pod in the watch: {error}"
                            ));
                        }
                    };
                    if let Some(v) = pod.metadata.resource_version.clone() {
                        *version = v;
                    }
                    let deleted = kind == "DELETED";
                    let Some((uid, record)) = pod.into_record() else {
                        continue;
                    };
                    let gone = self.apply(uid, record, deleted);
                    self.report(gone.into_iter().collect());
                }
                _ => {}
            }
        }
    }

    fn apply(&self, uid: String, record: PodRecord, deleted: bool) -> Option<PodGone> {
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

/// Percent-encodes a query value (everything but the unreserved characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct PodList {
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<PodObject>,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    object: serde_json::Value,
}

#[derive(Default, Deserialize)]
struct Status {
    code: Option<u16>,
}

#[derive(Deserialize)]
struct PodObject {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    status: Option<PodStatus>,
}

#[derive(Default, Deserialize)]
struct ObjectMeta {
    uid: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

#[derive(Deserialize)]
struct PodStatus {
    phase: Option<String>,
}

impl PodObject {
    fn into_record(self) -> Option<(String, PodRecord)> {
        let uid = self.metadata.uid.filter(|u| !u.is_empty())?;
        let terminated = self
            .status
            .and_then(|s| s.phase)
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
        Some((
            uid,
            PodRecord {
                namespace: self.metadata.namespace.unwrap_or_default(),
                name: self.metadata.name.unwrap_or_default(),
                terminated,
            },
        ))
    }
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
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("spec.nodeName=n-1"), "spec.nodeName%3Dn-1");
        assert_eq!(encode("eyJ2+/="), "eyJ2%2B%2F%3D");
    }

    #[test]
    fn finished_phases_are_terminated() {
        for (phase, terminated) in [
            ("Running", false),
            ("Pending", false),
            ("Succeeded", true),
            ("Failed", true),
        ] {
            let pod: PodObject = serde_json::from_value(serde_json::json!({
                "metadata": {"uid": "u", "name": "p", "namespace": "n"},
                "status": {"phase": phase}
            }))
            .unwrap();
            assert_eq!(
                pod.into_record().unwrap().1.terminated,
                terminated,
                "{phase}"
            );
        }
    }
}
