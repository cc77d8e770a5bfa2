//! A fake Kubernetes API server on loopback (axum): `/version`, `/openid/v1/jwks` (the agent's
//! bearer token required) and the pod list and watch of node [`NODE`], as kube-rs calls them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pod_identity_core::secret::SecretString;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{AGENT_TOKEN, NODE, WAIT};
use crate::support::{ClientConfig, KubeClient, eventually};

#[derive(Default)]
pub(super) struct Api {
    /// `/version`'s answer; `None` answers 503.
    pub(super) version: Option<Value>,
    /// `/openid/v1/jwks`'s answer; `None` answers 503.
    pub(super) jwks: Option<Value>,
    pub(super) jwks_requests: usize,
    pub(super) version_requests: usize,
    /// The pod list and watch answer 500 while set.
    pub(super) pods_fail: bool,
    pub(super) pods: BTreeMap<String, Value>,
    pub(super) resource_version: u64,
    /// Watches from an older version answer 410 Gone.
    pub(super) oldest_version: u64,
    pub(super) watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    pub(super) lists: usize,
    /// The `resourceVersion` of each watch request.
    pub(super) watches_from: Vec<String>,
}

#[derive(Clone)]
pub(super) struct FakeApi {
    state: Arc<Mutex<Api>>,
    pub(super) url: String,
}

impl FakeApi {
    pub(super) async fn start(version: &str, keys: Value) -> Self {
        let state = Arc::new(Mutex::new(Api {
            version: Some(
                json!({"major": "1", "minor": version, "gitVersion": format!("v1.{version}")}),
            ),
            jwks: Some(keys),
            resource_version: 100,
            ..Api::default()
        }));
        let router = axum::Router::new()
            .route("/version", get(version_handler))
            .route("/openid/v1/jwks", get(jwks_handler))
            .route("/api/v1/pods", get(pods_handler))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { state, url }
    }

    pub(super) fn api(&self) -> std::sync::MutexGuard<'_, Api> {
        self.state.lock().unwrap()
    }

    pub(super) fn client(&self) -> KubeClient {
        KubeClient::new(ClientConfig::new(&self.url).token(SecretString::new(AGENT_TOKEN))).unwrap()
    }

    pub(super) fn add_pod(&self, uid: &str, phase: &str) {
        let mut api = self.api();
        api.resource_version += 1;
        let pod = pod(uid, phase, api.resource_version);
        let kind = if api.pods.insert(uid.to_owned(), pod.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        api.send(kind, &pod);
    }

    pub(super) fn delete_pod(&self, uid: &str) {
        let mut api = self.api();
        api.resource_version += 1;
        if let Some(mut pod) = api.pods.remove(uid) {
            pod["metadata"]["resourceVersion"] = json!(api.resource_version.to_string());
            api.send("DELETED", &pod);
        }
    }

    /// Deletes a pod while no watch is open and compacts history past it, so a resumed watch
    /// gets 410 and only a re-list can tell.
    pub(super) fn delete_pod_unseen(&self, uid: &str) {
        let mut api = self.api();
        api.watchers.clear();
        api.resource_version += 1;
        api.pods.remove(uid);
        api.oldest_version = api.resource_version;
    }

    pub(super) fn bookmark(&self, version: u64) {
        let mut api = self.api();
        api.resource_version = api.resource_version.max(version);
        let object = json!({"kind": "Pod", "apiVersion": "v1",
                            "metadata": {"resourceVersion": version.to_string()}});
        api.send("BOOKMARK", &object);
    }

    pub(super) fn close_watches(&self) {
        self.api().watchers.clear();
    }

    /// Waits until a watch is open (events sent before then would be lost).
    pub(super) async fn watching(&self) {
        eventually(WAIT, "a watch to open", async || {
            self.api().watchers.iter().any(|w| !w.is_closed())
        })
        .await;
    }
}

impl Api {
    fn send(&mut self, kind: &str, object: &Value) {
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": object})));
        self.watchers.retain(|w| w.send(line.clone()).is_ok());
    }
}

fn pod(uid: &str, phase: &str, version: u64) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"uid": uid, "name": format!("pod-{uid}"), "namespace": "default",
                     "resourceVersion": version.to_string(),
                     "labels": {"app": "x"}, "annotations": {"a": "b"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": phase, "podIP": "10.0.0.1"}
    })
}

type Shared = Arc<Mutex<Api>>;

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn version_handler(State(api): State<Shared>) -> Response {
    let mut api = api.lock().unwrap();
    api.version_requests += 1;
    match &api.version {
        Some(version) => json_response(StatusCode::OK, version),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn jwks_handler(State(api): State<Shared>, headers: HeaderMap) -> Response {
    let mut api = api.lock().unwrap();
    api.jwks_requests += 1;
    let authorized = headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {AGENT_TOKEN}").as_bytes());
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match &api.jwks {
        Some(keys) => json_response(StatusCode::OK, keys),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn pods_handler(State(api): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let params: BTreeMap<&str, &str> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    assert_eq!(
        params.get("fieldSelector"),
        Some(&"spec.nodeName%3Dnode-1"),
        "{query}"
    );
    let mut api = api.lock().unwrap();
    if matches!(params.get("watch"), Some(&("1" | "true"))) {
        assert_eq!(params.get("allowWatchBookmarks"), Some(&"true"));
        assert!(params.contains_key("timeoutSeconds"));
        let from = params.get("resourceVersion").copied().unwrap_or_default();
        api.watches_from.push(from.to_owned());
        if api.pods_fail {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        if from.parse::<u64>().is_ok_and(|v| v < api.oldest_version) {
            // As the API server does: the watch starts, its one event is the 410, and it ends.
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "reason": "Expired", "code": 410,
                                "message": format!("too old resource version: {from}")});
            let line = format!("{}\n", json!({"type": "ERROR", "object": status}));
            return ([("content-type", "application/json")], line).into_response();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        api.watchers.push(tx);
        return Response::new(Body::new(ChannelBody(rx)));
    }
    // A list: a consistent read (no resourceVersion), in pages.
    assert!(params.contains_key("limit"), "{query}");
    assert!(!params.contains_key("resourceVersion"), "{query}");
    api.lists += 1;
    if api.pods_fail {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let list = json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": api.resource_version.to_string()},
        "items": api.pods.values().collect::<Vec<_>>()
    });
    json_response(StatusCode::OK, &list)
}

/// A streaming response body fed by the test (a watch).
struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}
