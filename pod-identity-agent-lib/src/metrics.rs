//! Prometheus metrics and the `/metrics` endpoint.
//!
//! The reference agent's series keep their names, labels, types and meaning, so existing
//! dashboards and alerts keep working:
//!
//! | series | type | labels | counts |
//! |---|---|---|---|
//! | `pod_identity_http_response` | counter | `code` | credential responses by HTTP status |
//! | `pod_identity_cache_state` | counter | `state` | `hit`: background renewals that succeeded; `miss`: fetches on the request path (nothing usable cached); `evicted`: entries removed |
//! | `pod_identity_cache_errors` | counter | `type` = `Recoverable`/`NonRecoverable`, `code` | failed renewals |
//!
//! The `code` label takes the error code the upstream sent. So that a misbehaving upstream
//! cannot grow the series without bound, at most [`MAX_ERROR_CODES`] distinct codes get a series
//! of their own; codes after those, and codes that are not plain identifiers, count as `Other`.
//!
//! Added by this crate, under the same names in both formats:
//!
//! | series | type |
//! |---|---|
//! | `pod_identity_http_request_duration_seconds` | histogram of credential request latency |
//! | `pod_identity_cache_size` | gauge: entries in the credential cache |
//! | `pod_identity_connections_open` | gauge by `listener`: open connections |
//! | `pod_identity_connections_refused` | counter by `listener` (`credentials`, `probe`, `metrics`) and `reason` (`max_connections`, `max_connections_per_client`): connections closed at once at a cap |
//! | `pod_identity_requests_limited` | counter by `reason`: requests answered 429 by the per-client rate (`client_rate`), the overall rate (`rate`) or the per-client miss budget (`client_misses`) |
//! | `pod_identity_refused_tokens_served` | counter: requests answered from the short-lived cache of refused tokens, without an upstream call |
//! | `pod_identity_local_validation` | counter by `result` (`success`, `failure`, `skipped`): a pod's rotated token validated locally against its cached entry |
//! | `pod_identity_liveness_evictions` | counter by `reason` (`deleted`, `terminated`, `not_found`): entries evicted because their pod is gone |
//! | `pod_identity_pod_watch_synced` | gauge: 1 while the watch of this node's pods is synced, 0 while the cache fails open (renews as without it) |
//!
//! [`metrics_router`] also serves the standard process series of the Prometheus clients, read
//! from `/proc/self` on Linux (absent elsewhere): `process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`.
//!
//! # Formats and names
//!
//! A scrape gets the Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), the format the
//! reference serves, unless its `Accept` header asks for OpenMetrics
//! (`application/openmetrics-text`) and does not accept `text/plain` (or `*/*`) at all.
//! Prometheus's own scrapes list both, so Prometheus stores exactly the reference's series:
//!
//! | family | Prometheus text 0.0.4 sample | OpenMetrics sample |
//! |---|---|---|
//! | `pod_identity_http_response` (counter) | `pod_identity_http_response` | `pod_identity_http_response_total` |
//! | `pod_identity_cache_state` (counter) | `pod_identity_cache_state` | `pod_identity_cache_state_total` |
//! | `pod_identity_cache_errors` (counter) | `pod_identity_cache_errors` | `pod_identity_cache_errors_total` |
//! | `process_cpu_seconds` (counter) | `process_cpu_seconds_total` | `process_cpu_seconds_total` |
//! | this crate's counters, e.g. `pod_identity_requests_limited` | `pod_identity_requests_limited` | `pod_identity_requests_limited_total` |
//! | gauges and the histogram | unchanged | unchanged |
//!
//! OpenMetrics requires the `_total` suffix on counter samples, so only a scraper that insists on
//! OpenMetrics sees it on the reference's counters. [`Metrics::encode`] is the 0.0.4 text,
//! [`Metrics::encode_openmetrics`] the OpenMetrics text (neither includes the process series).
//!
//! [`Metrics`] is a cheap handle; clones share the same series.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The path the metrics are served on.
pub const METRICS_PATH: &str = "/metrics";

/// Most distinct `code` labels of `pod_identity_cache_errors`; later codes count as `Other`.
pub const MAX_ERROR_CODES: usize = 64;

/// Longest error code kept as a label; longer ones count as `Other`.
const MAX_ERROR_CODE_LEN: usize = 128;

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the Prometheus text format 0.0.4, the default.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

mod process;

/// A cache event (label `state` of `pod_identity_cache_state`), with the reference's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheState {
    /// A background renewal succeeded.
    Hit,
    /// Credentials were fetched on the request path (nothing usable was cached).
    Miss,
    /// Removed from the cache.
    Evicted,
}

impl CacheState {
    fn as_str(self) -> &'static str {
        match self {
            CacheState::Hit => "hit",
            CacheState::Miss => "miss",
            CacheState::Evicted => "evicted",
        }
    }
}

/// The agent's metrics.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http_response: Family<CodeLabel, Counter>,
    cache_state: Family<StateLabel, Counter>,
    cache_errors: Family<ErrorLabels, Counter>,
    /// The codes that have a `pod_identity_cache_errors` series of their own.
    error_codes: Mutex<HashSet<String>>,
    request_duration: Histogram,
    cache_size: Gauge,
    protection: Protection,
}

/// The series of the agent's protection against hostile clients.
#[derive(Clone, Default)]
struct Protection {
    connections_open: Family<ListenerLabel, Gauge>,
    connections_refused: Family<RefusedLabels, Counter>,
    requests_limited: Family<LimitedLabel, Counter>,
    refused_tokens_served: Counter,
    local_validation: Family<ResultLabel, Counter>,
    liveness_evictions: Family<ReasonLabel, Counter>,
    pod_watch_synced: Gauge,
}

impl Protection {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "pod_identity_connections_open",
            "Open connections",
            self.connections_open.clone(),
        );
        registry.register(
            "pod_identity_connections_refused",
            "Connections closed as soon as accepted, at a connection cap",
            self.connections_refused.clone(),
        );
        registry.register(
            "pod_identity_requests_limited",
            "Credential requests answered 429 by a rate limit or the per-client miss budget",
            self.requests_limited.clone(),
        );
        registry.register(
            "pod_identity_refused_tokens_served",
            "Credential requests answered from the cache of refused tokens",
            self.refused_tokens_served.clone(),
        );
        registry.register(
            "pod_identity_local_validation",
            "Rotated tokens validated locally against the cached entry of their pod, by result",
            self.local_validation.clone(),
        );
        registry.register(
            "pod_identity_liveness_evictions",
            "Cache entries evicted because their pod is gone, by reason",
            self.liveness_evictions.clone(),
        );
        registry.register(
            "pod_identity_pod_watch_synced",
            "1 while the watch of this node's pods is synced, 0 while the cache fails open",
            self.pod_watch_synced.clone(),
        );
    }
}

/// Why a credential request was answered 429 (label `reason` of
/// `pod_identity_requests_limited`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limited {
    /// The client's own request rate.
    ClientRate,
    /// The overall request rate.
    Rate,
    /// The client's budget of cache misses (upstream calls).
    ClientMisses,
}

impl Limited {
    fn as_str(self) -> &'static str {
        match self {
            Limited::ClientRate => "client_rate",
            Limited::Rate => "rate",
            Limited::ClientMisses => "client_misses",
        }
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, all at zero, registered in their own registry.
    pub fn new() -> Self {
        let http_response = Family::default();
        let cache_state = Family::default();
        let cache_errors = Family::default();
        // 0.5 ms to ~16 s: cache hits sit at the bottom, EKS Auth calls with retries at the top.
        let request_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let cache_size = Gauge::default();
        let protection = Protection::default();
        let mut registry = Registry::default();
        register_all(
            &mut registry,
            &http_response,
            &cache_state,
            &cache_errors,
            &request_duration,
            &cache_size,
        );
        protection.register(&mut registry);
        Self {
            inner: Arc::new(Inner {
                registry,
                http_response,
                cache_state,
                cache_errors,
                error_codes: Mutex::default(),
                request_duration,
                cache_size,
                protection,
            }),
        }
    }

    /// Registers these series in another registry too (a vendor's own), sharing their values.
    pub fn register(&self, registry: &mut Registry) {
        let i = &self.inner;
        register_all(
            registry,
            &i.http_response,
            &i.cache_state,
            &i.cache_errors,
            &i.request_duration,
            &i.cache_size,
        );
        i.protection.register(registry);
    }

    /// The metrics in the Prometheus text format 0.0.4, as the reference serves them: counters
    /// without the `_total` suffix OpenMetrics adds.
    pub fn encode(&self) -> String {
        openmetrics_to_prometheus(&self.encode_openmetrics())
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// Counts one credential response with `status`.
    pub fn record_response(&self, status: u16) {
        self.inner
            .http_response
            .get_or_create(&CodeLabel { code: status })
            .inc();
    }

    /// Records how long one credential request took.
    pub fn record_latency(&self, elapsed: Duration) {
        self.inner.request_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts one cache event: a successful renewal, a fetch on the request path, an eviction.
    pub fn record_cache_state(&self, state: CacheState) {
        self.inner
            .cache_state
            .get_or_create(&StateLabel {
                state: state.as_str(),
            })
            .inc();
    }

    /// Counts one failed renewal; `recoverable` picks the `type` label.
    pub fn record_cache_error(&self, recoverable: bool, code: &str) {
        let kind = if recoverable {
            "Recoverable"
        } else {
            "NonRecoverable"
        };
        let code = self.error_code_label(code);
        self.inner
            .cache_errors
            .get_or_create(&ErrorLabels { r#type: kind, code })
            .inc();
    }

    /// `code` if it may have a series of its own, else `Other`.
    fn error_code_label(&self, code: &str) -> String {
        const OTHER: &str = "Other";
        let plain = !code.is_empty()
            && code.len() <= MAX_ERROR_CODE_LEN
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !plain {
            return OTHER.to_owned();
        }
        let mut seen = self
            .inner
            .error_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.contains(code) || seen.len() < MAX_ERROR_CODES {
            seen.insert(code.to_owned());
            code.to_owned()
        } else {
            OTHER.to_owned()
        }
    }

    /// The gauge of `listener`'s open connections.
    pub(crate) fn connections_open(&self, listener: &'static str) -> Gauge {
        self.inner
            .protection
            .connections_open
            .get_or_create(&ListenerLabel { listener })
            .clone()
    }

    /// Counts one connection closed at once at a cap of `listener`.
    pub(crate) fn record_connection_refused(&self, listener: &'static str, reason: &'static str) {
        self.inner
            .protection
            .connections_refused
            .get_or_create(&RefusedLabels { listener, reason })
            .inc();
    }

    /// Counts one request answered 429 for `reason`.
    pub fn record_limited(&self, reason: Limited) {
        self.inner
            .protection
            .requests_limited
            .get_or_create(&LimitedLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts one request answered from the cache of refused tokens.
    pub fn record_refused_token_served(&self) {
        self.inner.protection.refused_tokens_served.inc();
    }

    /// Counts one local validation of a rotated token (`result`: `success`, `failure`,
    /// `skipped`).
    pub fn record_local_validation(&self, result: &'static str) {
        self.inner
            .protection
            .local_validation
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts one entry evicted because its pod is gone (`reason`: `deleted`, `terminated`,
    /// `not_found`).
    pub fn record_liveness_eviction(&self, reason: &'static str) {
        self.inner
            .protection
            .liveness_evictions
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Sets whether the watch of this node's pods is synced.
    pub fn set_pod_watch_synced(&self, synced: bool) {
        self.inner
            .protection
            .pod_watch_synced
            .set(i64::from(synced));
    }

    /// Sets the number of entries in the credential cache.
    pub fn set_cache_size(&self, entries: usize) {
        self.inner
            .cache_size
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}

/// A router serving `GET /metrics`, with the process series: Prometheus text 0.0.4, or
/// OpenMetrics for a scraper that accepts only that (see the [module docs](self)).
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new().route(
        METRICS_PATH,
        get(move |headers: http::HeaderMap| {
            let metrics = metrics.clone();
            async move { render(&metrics, &headers) }
        }),
    )
}

fn render(metrics: &Metrics, headers: &http::HeaderMap) -> Response {
    let process = process::ProcessStats::read();
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let (content_type, body) = if wants_openmetrics_only(&accept) {
        let mut body = metrics.encode_openmetrics();
        if let Some(stats) = process {
            let eof = body.rfind("# EOF").unwrap_or(body.len());
            body.insert_str(eof, &stats.encode(process::Format::OpenMetrics));
        }
        (OPENMETRICS_CONTENT_TYPE, body)
    } else {
        let mut body = metrics.encode();
        if let Some(stats) = process {
            body.push_str(&stats.encode(process::Format::Prometheus));
        }
        (PROMETHEUS_CONTENT_TYPE, body)
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Whether an `Accept` header asks for OpenMetrics and refuses the Prometheus text format
/// (lists neither `text/plain` nor `*/*`, or gives them `q=0`).
fn wants_openmetrics_only(accept: &str) -> bool {
    let mut openmetrics = false;
    let mut text = false;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            continue;
        }
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = true,
            "text/plain" | "text/*" | "*/*" => text = true,
            _ => {}
        }
    }
    openmetrics && !text
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter samples lose the `_total`
/// suffix, `# UNIT` and `# EOF` lines go.
fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counter: Option<String> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            counter = rest
                .strip_suffix(" counter")
                .map(|family| format!("{family}_total"));
        } else if let Some(sample) = counter.as_deref()
            && let Some(rest) = line.strip_prefix(sample)
            && (rest.starts_with('{') || rest.starts_with(' '))
        {
            out.push_str(&sample[..sample.len() - "_total".len()]);
            out.push_str(rest);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn register_all(
    registry: &mut Registry,
    http_response: &Family<CodeLabel, Counter>,
    cache_state: &Family<StateLabel, Counter>,
    cache_errors: &Family<ErrorLabels, Counter>,
    request_duration: &Histogram,
    cache_size: &Gauge,
) {
    registry.register(
        "pod_identity_http_response",
        "Pod Identity http response code",
        http_response.clone(),
    );
    registry.register(
        "pod_identity_cache_state",
        "The state of credential in cache",
        cache_state.clone(),
    );
    registry.register(
        "pod_identity_cache_errors",
        "Removing credentials from cache, got non recoverable error",
        cache_errors.clone(),
    );
    registry.register_with_unit(
        "pod_identity_http_request_duration",
        "Latency of credential requests",
        Unit::Seconds,
        request_duration.clone(),
    );
    registry.register(
        "pod_identity_cache_size",
        "Entries in the credential cache",
        cache_size.clone(),
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitedLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    r#type: &'static str,
    code: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[test]
    fn error_codes_cannot_grow_the_series_without_bound() {
        let metrics = Metrics::new();
        for i in 0..MAX_ERROR_CODES + 10 {
            metrics.record_cache_error(true, &format!("Code{i}"));
        }
        metrics.record_cache_error(true, "Code0");
        metrics.record_cache_error(true, "bad code\n{}");
        let text = metrics.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("pod_identity_cache_errors{"))
            .count();
        assert_eq!(series, MAX_ERROR_CODES + 1, "{text}");
        assert!(text.contains("code=\"Code0\"} 2"), "{text}");
        assert!(
            text.contains("pod_identity_cache_errors{type=\"Recoverable\",code=\"Other\"} 11"),
            "{text}"
        );
    }

    fn recorded() -> Metrics {
        let metrics = Metrics::new();
        metrics.record_response(200);
        metrics.record_response(200);
        metrics.record_response(403);
        metrics.record_cache_state(CacheState::Miss);
        metrics.record_cache_state(CacheState::Hit);
        metrics.record_cache_state(CacheState::Evicted);
        metrics.record_cache_error(false, "AccessDeniedException");
        metrics.record_cache_error(true, "ThrottlingException");
        metrics.set_cache_size(7);
        metrics.record_latency(Duration::from_millis(3));
        metrics
    }

    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                text.lines().any(|l| l == *line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn prometheus_text_has_the_reference_series_names_and_types() {
        let text = recorded().encode();
        assert_lines(
            &text,
            &[
                "# TYPE pod_identity_http_response counter",
                "pod_identity_http_response{code=\"200\"} 2",
                "pod_identity_http_response{code=\"403\"} 1",
                "# TYPE pod_identity_cache_state counter",
                "pod_identity_cache_state{state=\"miss\"} 1",
                "pod_identity_cache_state{state=\"hit\"} 1",
                "pod_identity_cache_state{state=\"evicted\"} 1",
                "# TYPE pod_identity_cache_errors counter",
                "pod_identity_cache_errors{type=\"NonRecoverable\",code=\"AccessDeniedException\"} 1",
                "pod_identity_cache_errors{type=\"Recoverable\",code=\"ThrottlingException\"} 1",
                "# TYPE pod_identity_cache_size gauge",
                "pod_identity_cache_size 7",
                "# TYPE pod_identity_http_request_duration_seconds histogram",
                "pod_identity_http_request_duration_seconds_count 1",
            ],
        );
        assert!(!text.contains("_total"), "{text}");
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_text_has_counters_with_the_required_suffix() {
        let text = recorded().encode_openmetrics();
        assert_lines(
            &text,
            &[
                "# TYPE pod_identity_http_response counter",
                "pod_identity_http_response_total{code=\"200\"} 2",
                "# TYPE pod_identity_cache_state counter",
                "pod_identity_cache_state_total{state=\"hit\"} 1",
                "# TYPE pod_identity_cache_errors counter",
                "pod_identity_cache_errors_total{type=\"Recoverable\",code=\"ThrottlingException\"} 1",
                "# TYPE pod_identity_cache_size gauge",
                "pod_identity_cache_size 7",
                "# TYPE pod_identity_http_request_duration_seconds histogram",
                "# EOF",
            ],
        );
    }

    #[test]
    fn accept_headers_pick_the_format() {
        for (accept, openmetrics) in [
            ("", false),
            ("text/plain", false),
            ("*/*", false),
            ("application/openmetrics-text", true),
            ("application/openmetrics-text; version=1.0.0", true),
            (
                "application/openmetrics-text;version=1.0.0,text/plain;q=0",
                true,
            ),
            // Prometheus's default scrape: both listed, so the reference's format.
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                false,
            ),
            ("application/json", false),
        ] {
            assert_eq!(wants_openmetrics_only(accept), openmetrics, "{accept}");
        }
    }

    #[test]
    fn a_vendor_registry_shares_the_values() {
        let metrics = Metrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.record_response(500);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("pod_identity_http_response_total{code=\"500\"} 1"),
            "{text}"
        );
    }

    async fn scrape(metrics: &Metrics, accept: Option<&str>) -> (String, String) {
        let mut request = http::Request::get("/metrics");
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let response = metrics_router(metrics.clone())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn scrapes_get_prometheus_text_unless_they_insist_on_openmetrics() {
        let metrics = recorded();
        for accept in [None, Some("text/plain"), Some("*/*")] {
            let (content_type, body) = scrape(&metrics, accept).await;
            assert_eq!(content_type, PROMETHEUS_CONTENT_TYPE, "{accept:?}");
            assert_lines(
                &body,
                &[
                    "# TYPE pod_identity_http_response counter",
                    "pod_identity_http_response{code=\"200\"} 2",
                    "# TYPE pod_identity_cache_state counter",
                ],
            );
            #[cfg(target_os = "linux")]
            assert_lines(
                &body,
                &[
                    "# TYPE process_cpu_seconds_total counter",
                    "# TYPE process_resident_memory_bytes gauge",
                    "# TYPE process_open_fds gauge",
                    "# TYPE process_max_fds gauge",
                    "# TYPE process_start_time_seconds gauge",
                    "# TYPE process_virtual_memory_bytes gauge",
                ],
            );
        }

        let (content_type, body) = scrape(
            &metrics,
            Some("application/openmetrics-text; version=1.0.0"),
        )
        .await;
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert_lines(
            &body,
            &[
                "# TYPE pod_identity_http_response counter",
                "pod_identity_http_response_total{code=\"200\"} 2",
            ],
        );
        #[cfg(target_os = "linux")]
        assert_lines(&body, &["# TYPE process_cpu_seconds counter"]);
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
