//! The trace of hops: the components' `tracing` events, one line each.

use std::fmt::{self, Write as _};
use std::time::Instant;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Prints the components' `tracing` events as a trace of hops, one line each.
pub(crate) fn install_trace(started: Instant) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,pod_identity_agent_lib=info,pod_identity_provider=info")
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(HopLayer { started })
        .try_init();
}

/// A `tracing` layer that prints each event as `<elapsed>  <hop>  <message> <fields>`.
struct HopLayer {
    started: Instant,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for HopLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *meta.level() {
            tracing::Level::ERROR => "ERROR ",
            tracing::Level::WARN => "WARN ",
            _ => "",
        };
        println!(
            "    {:>6.3}s  {:<9} {level}{}{}",
            self.started.elapsed().as_secs_f64(),
            hop(meta.target()),
            fields.message,
            fields.rest
        );
    }
}

/// Who speaks, by the event's module path.
fn hop(target: &str) -> &str {
    const HOPS: [(&str, &str); 4] = [
        ("pod_identity_agent_lib::simulator::eks_auth", "EKS Auth"),
        ("pod_identity_agent_lib::simulator::sts", "STS"),
        ("pod_identity_agent_lib", "agent"),
        ("pod_identity_provider", "provider"),
    ];
    HOPS.iter()
        .find(|(prefix, _)| target.starts_with(prefix))
        .map_or(target, |(_, hop)| hop)
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record(field.name(), value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.record(field.name(), &format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, name: &str, value: &str) {
        match name {
            "message" => self.message = value.to_owned(),
            // Noise in a trace read by a person.
            "request_id" => {}
            _ => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_are_named_by_component() {
        assert_eq!(
            hop("pod_identity_agent_lib::simulator::eks_auth"),
            "EKS Auth"
        );
        assert_eq!(hop("pod_identity_agent_lib::handler"), "agent");
        assert_eq!(hop("pod_identity_provider::cache"), "provider");
        assert_eq!(hop("aws_config"), "aws_config");
    }
}
