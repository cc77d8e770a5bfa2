//! Log output: the reference agent's logrus JSON lines (the default), or tracing's own shapes.
//!
//! `--log-format json` writes what logrus's `JSONFormatter` writes, one object per line on
//! stdout, keys sorted:
//!
//! ```text
//! {"client-addr":"10.0.0.7:51234","cluster-name":"demo","latency_us":412,"level":"info","method":"GET","msg":"credential request","status":200,"time":"2026-12-04T22:27:46Z"}
//! ```
//!
//! - `level`: `trace`, `debug`, `info`, `warning`, `error` (logrus's names);
//! - `msg`: the message; `time`: RFC 3339 in UTC, whole seconds (logrus's default format);
//! - every field of the event at the top level (numbers and booleans as JSON values, the rest
//!   as strings); `cluster-name`: the cluster name, on every line of `server` and
//!   `self-managed`; the client's address is `client-addr`: the reference's keys, so log queries
//!   on them keep working;
//! - a field named `level`, `msg` or `time` becomes `fields.level`, … (as logrus does).
//!
//! `--log-format tracing-json` keeps tracing-subscriber's nested JSON (`timestamp`, upper-case
//! `level`, `fields.message`, `target`) and `--log-format text` its plain text; both on stderr.

use aws_smithy_async::time::SharedTimeSource;
use std::io::Write;

use clap::ValueEnum;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The shape of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// The reference's flat logrus JSON on stdout.
    #[default]
    Json,
    /// tracing-subscriber's nested JSON on stderr.
    TracingJson,
    /// Plain text on stderr.
    Text,
}

/// SDK crates whose `trace` events print secrets: aws-sigv4 (before 1.4) the canonical request
/// with `x-amz-security-token`, aws-smithy-runtime every request and response with its body.
const SECRET_LOGGING_CRATES: [&str; 2] = ["aws_sigv4", "aws_smithy_runtime"];

/// The logrus level names, and the tracing level each stands for (tracing has no `fatal` or
/// `panic`: both keep errors only).
const LOGRUS_LEVELS: [(&str, &str); 8] = [
    ("panic", "error"),
    ("fatal", "error"),
    ("error", "error"),
    ("warn", "warn"),
    ("warning", "warn"),
    ("info", "info"),
    ("debug", "debug"),
    ("trace", "trace"),
];

/// A `--verbosity` value: a logrus level (any case) or a tracing filter directive.
pub(crate) fn parse_verbosity(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, level)) = LOGRUS_LEVELS.iter().find(|(name, _)| *name == lower) {
        return Ok((*level).to_owned());
    }
    EnvFilter::try_new(text)
        .map(|_| text.to_owned())
        .map_err(|error| format!("invalid log level {text:?}: {error}"))
}

/// The filter for `--verbosity`, with [`SECRET_LOGGING_CRATES`] capped at `debug` whatever it
/// asks for. The cap is added only when the filter enables `trace` somewhere: as a directive of
/// its own it would otherwise raise those crates to `debug` (at `info`, their debug lines).
pub(crate) fn log_filter(verbosity: &str) -> EnvFilter {
    let mut filter = EnvFilter::new(verbosity);
    let enables_trace = filter
        .max_level_hint()
        .is_none_or(|most| most >= tracing_subscriber::filter::LevelFilter::TRACE);
    if !enables_trace {
        return filter;
    }
    for target in SECRET_LOGGING_CRATES {
        if let Ok(cap) = format!("{target}=debug").parse() {
            filter = filter.add_directive(cap);
        }
    }
    filter
}

/// The key of the cluster name on every line (the reference's).
const CLUSTER_KEY: &str = "cluster-name";
/// The key the `client` field (a client's address) is written under (the reference's).
const CLIENT_KEY: &str = "client-addr";

/// Installs the global subscriber; `cluster` is added to every line of the `json` format.
pub(crate) fn init(format: LogFormat, verbosity: &str, cluster: Option<&str>) {
    let filter = log_filter(verbosity);
    match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(LogrusJson::new(
                cluster,
                SharedTimeSource::default(),
                std::io::stdout,
            ))
            .init(),
        LogFormat::TracingJson => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
}

/// A layer writing each event as one logrus JSON line.
pub(crate) struct LogrusJson<W> {
    cluster: Option<String>,
    clock: SharedTimeSource,
    writer: W,
}

impl<W> LogrusJson<W> {
    pub(crate) fn new(cluster: Option<&str>, clock: SharedTimeSource, writer: W) -> Self {
        Self {
            cluster: cluster.map(str::to_owned),
            clock,
            writer,
        }
    }

    fn line(&self, event: &Event<'_>) -> Vec<u8> {
        let mut fields = FieldVisitor::default();
        event.record(&mut fields);
        let mut object = Map::new();
        if let Some(cluster) = &self.cluster {
            object.insert(CLUSTER_KEY.to_owned(), Value::from(cluster.as_str()));
        }
        for (name, value) in fields.fields {
            let name = match name.as_str() {
                "level" | "msg" | "time" => format!("fields.{name}"),
                "client" => CLIENT_KEY.to_owned(),
                _ => name,
            };
            object.insert(name, value);
        }
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        object.insert("level".to_owned(), Value::from(level));
        object.insert(
            "msg".to_owned(),
            Value::from(fields.message.unwrap_or_default()),
        );
        object.insert("time".to_owned(), Value::from(self.time()));
        let mut line = serde_json::to_vec(&Value::Object(object)).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Now, as logrus's default `time.RFC3339` prints it in UTC: whole seconds, `Z`.
    fn time(&self) -> String {
        let now = self.clock.now();
        let whole = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| std::time::UNIX_EPOCH + std::time::Duration::from_secs(since.as_secs()))
            .unwrap_or(now);
        pod_identity_core::time::format_rfc3339(whole)
    }
}

impl<S, W> Layer<S> for LogrusJson<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // A log line that cannot be written has nowhere else to go.
        let _ = self.writer.make_writer().write_all(&self.line(event));
    }
}

/// An event's fields: the message apart, the rest by name.
#[derive(Default)]
struct FieldVisitor {
    message: Option<String>,
    fields: Vec<(String, Value)>,
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(text) => text,
                other => other.to_string(),
            });
        } else {
            self.fields.push((field.name().to_owned(), value));
        }
    }
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    use aws_smithy_async::time::TimeSource;

    #[derive(Debug)]
    struct FixedClock(SystemTime);

    impl TimeSource for FixedClock {
        fn now(&self) -> SystemTime {
            self.0
        }
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(cluster: Option<&str>, verbosity: &str, log: impl FnOnce()) -> Vec<Value> {
        let lines = Lines::default();
        let clock = SharedTimeSource::new(FixedClock(
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
        ));
        let sink = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(log_filter(verbosity))
            .with(LogrusJson::new(cluster, clock, move || sink.clone()));
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn lines_have_the_reference_shape() {
        let lines = capture(Some("demo"), "info", || {
            tracing::info!(
                client = "10.0.0.7:51234",
                method = "GET",
                status = 200u16,
                latency_us = 412u64,
                "credential request"
            );
            let error = std::io::Error::other("connection refused");
            tracing::warn!(error = %error, recoverable = true, "renewing credentials failed");
            tracing::error!(time = "a field named time", "cannot start the server");
            tracing::debug!("not at info");
        });
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(
            lines[0],
            serde_json::json!({
                "level": "info",
                "msg": "credential request",
                "time": "2023-11-14T22:13:20Z",
                "cluster-name": "demo",
                "client-addr": "10.0.0.7:51234",
                "method": "GET",
                "status": 200,
                "latency_us": 412,
            })
        );
        assert_eq!(lines[1]["level"], "warning");
        assert_eq!(lines[1]["error"], "connection refused");
        assert_eq!(lines[1]["recoverable"], true);
        assert_eq!(lines[2]["level"], "error");
        assert_eq!(lines[2]["fields.time"], "a field named time");
        assert_eq!(lines[2]["time"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn keys_are_sorted_and_the_cluster_is_optional() {
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::registry().with(LogrusJson::new(
            None,
            SharedTimeSource::new(FixedClock(UNIX_EPOCH)),
            move || sink.clone(),
        ));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(zone = "x", "node network ready");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "{\"level\":\"info\",\"msg\":\"node network ready\",\"time\":\"1970-01-01T00:00:00Z\",\"zone\":\"x\"}\n"
        );
    }

    #[test]
    fn the_sdk_crates_are_capped_at_debug_and_never_raised() {
        let log = || {
            tracing::debug!(target: "aws_sigv4", "sdk debug");
            tracing::trace!(target: "aws_sigv4", "sdk trace");
            tracing::trace!(target: "aws_smithy_runtime", "wire trace");
            tracing::info!("agent info");
        };
        let messages = |verbosity| {
            capture(None, verbosity, log)
                .iter()
                .map(|line| line["msg"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        };
        // At info they stay at info: no debug line of theirs.
        assert_eq!(messages("info"), ["agent info"]);
        // At trace they are held to debug.
        assert_eq!(messages("trace"), ["sdk debug", "agent info"]);
    }

    #[test]
    fn verbosity_takes_the_logrus_levels_and_directives() {
        for (given, level) in [
            ("panic", "error"),
            ("FATAL", "error"),
            ("error", "error"),
            ("warn", "warn"),
            ("warning", "warn"),
            ("Info", "info"),
            ("debug", "debug"),
            ("trace", "trace"),
            (
                "info,pod_identity_agent_lib=debug",
                "info,pod_identity_agent_lib=debug",
            ),
        ] {
            assert_eq!(parse_verbosity(given).as_deref(), Ok(level), "{given}");
        }
        assert!(parse_verbosity("lou[d").is_err());
        let lines = capture(None, &parse_verbosity("warning").unwrap(), || {
            tracing::info!("dropped");
            tracing::warn!("kept");
        });
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["msg"], "kept");
    }
}
