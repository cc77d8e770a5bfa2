//! Prometheus metrics and the `/metrics` endpoint.
//!
//! The reference agent's series keep their names and labels, so existing dashboards and alerts
//! keep working:
//!
//! | series | labels | counts |
//! |---|---|---|
//! | `pod_identity_http_response` | `code` | credential responses by HTTP status |
//! | `pod_identity_cache_state` | `state` = `hit`, `miss`, `evicted` | cache lookups and evictions |
//! | `pod_identity_cache_errors` | `type` = `Recoverable`/`NonRecoverable`, `code` | failed renewals |
//!
//! The `code` label takes the error code the upstream sent. So that a misbehaving upstream
//! cannot grow the series without bound, at most [`MAX_ERROR_CODES`] distinct codes get a series
//! of their own; codes after those, and codes that are not plain identifiers, count as `Other`.
//!
//! The reference exposes them through the Prometheus Go client as plain series without a
//! `_total` suffix; to keep those exact series names they are exposed as OpenMetrics `unknown`
//! (untyped) metrics whose values only grow. Added by this crate:
//!
//! | series | type |
//! |---|---|
//! | `pod_identity_http_request_duration_seconds` | histogram of credential request latency |
//! | `pod_identity_cache_size` | gauge: entries in the credential cache |
//! | `pod_identity_connections_open` | gauge by `listener`: open connections |
//! | `pod_identity_connections_refused_total` | counter by `listener` (`credentials`, `probe`, `metrics`) and `reason` (`max_connections`, `max_connections_per_client`): connections closed at once at a cap |
//! | `pod_identity_requests_limited_total` | counter by `reason`: requests answered 429 by the per-client rate (`client_rate`), the overall rate (`rate`) or the per-client miss budget (`client_misses`) |
//! | `pod_identity_refused_tokens_served_total` | counter: requests answered from the short-lived cache of refused tokens, without an upstream call |
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
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
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

/// What a credential lookup found in the cache (label `state` of `pod_identity_cache_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheState {
    /// Served from the cache.
    Hit,
    /// Fetched from the source.
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
    http_response: Family<CodeLabel, MonotonicCounter>,
    cache_state: Family<StateLabel, MonotonicCounter>,
    cache_errors: Family<ErrorLabels, MonotonicCounter>,
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
    }
}

/// Why a credential request was answered 429 (label `reason` of
/// `pod_identity_requests_limited_total`).
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

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
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

    /// Counts one cache lookup outcome or eviction.
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

    /// Sets the number of entries in the credential cache.
    pub fn set_cache_size(&self, entries: usize) {
        self.inner
            .cache_size
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}

/// A router serving `GET /metrics` in the OpenMetrics text format.
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new().route(
        METRICS_PATH,
        get(move || {
            let metrics = metrics.clone();
            async move { render(&metrics) }
        }),
    )
}

fn render(metrics: &Metrics) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        metrics.encode(),
    )
        .into_response()
}

fn register_all(
    registry: &mut Registry,
    http_response: &Family<CodeLabel, MonotonicCounter>,
    cache_state: &Family<StateLabel, MonotonicCounter>,
    cache_errors: &Family<ErrorLabels, MonotonicCounter>,
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
struct ErrorLabels {
    r#type: &'static str,
    code: String,
}

/// A counter exposed as an untyped series without the `_total` suffix, the way the reference
/// agent's Go client exposes its counters.
#[derive(Clone, Debug, Default)]
struct MonotonicCounter(Counter);

impl MonotonicCounter {
    fn inc(&self) {
        self.0.inc();
    }
}

impl TypedMetric for MonotonicCounter {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for MonotonicCounter {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.encode_gauge(&self.0.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Unknown
    }
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

    #[test]
    fn reference_series_keep_their_names_and_labels() {
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

        let text = metrics.encode();
        for line in [
            "# TYPE pod_identity_http_response unknown",
            "pod_identity_http_response{code=\"200\"} 2",
            "pod_identity_http_response{code=\"403\"} 1",
            "pod_identity_cache_state{state=\"miss\"} 1",
            "pod_identity_cache_state{state=\"hit\"} 1",
            "pod_identity_cache_state{state=\"evicted\"} 1",
            "pod_identity_cache_errors{type=\"NonRecoverable\",code=\"AccessDeniedException\"} 1",
            "pod_identity_cache_errors{type=\"Recoverable\",code=\"ThrottlingException\"} 1",
            "# TYPE pod_identity_cache_size gauge",
            "pod_identity_cache_size 7",
            "# TYPE pod_identity_http_request_duration_seconds histogram",
            "pod_identity_http_request_duration_seconds_count 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // The reference's series keep their exact names (no `_total`).
        for name in [
            "pod_identity_http_response",
            "pod_identity_cache_state",
            "pod_identity_cache_errors",
        ] {
            assert!(!text.contains(&format!("{name}_total")), "{text}");
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
            text.contains("pod_identity_http_response{code=\"500\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics_text() {
        let metrics = Metrics::new();
        metrics.record_response(200);
        let response = metrics_router(metrics)
            .oneshot(http::Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            OPENMETRICS_CONTENT_TYPE
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("pod_identity_http_response{code=\"200\"} 1"));
    }
}
