//! No secret in any log line, error or Debug output. Logs are captured at TRACE level while the
//! provider goes through its paths: retries, a cold fetch, a failed refresh, stale serving and an
//! agent that echoes the token back.

use std::io;
use std::sync::{Arc, Mutex};

use crate::common::*;
use pod_identity_provider::PodIdentityCredentialsProvider;
use wiremock::ResponseTemplate;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock poisoned")).into_owned()
    }
}

fn assert_no_secret(text: &str) {
    for secret in [TOKEN, SECRET_KEY, SESSION_TOKEN] {
        assert!(!text.contains(secret), "secret `{secret}` leaked:\n{text}");
    }
    for segment in TOKEN.split('.') {
        assert!(!text.contains(segment), "token segment leaked:\n{text}");
    }
}

#[tokio::test]
async fn no_secret_in_logs_errors_or_debug_output() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let clock = ManualClock::new();
    let t0 = clock.now();
    let echo = format!("Service account token cannot be parsed: {TOKEN}\n");
    let answer = Switch::new(ok("AKID1", t0 + 6 * HOUR));
    let server = agent(answer.clone()).await;
    let provider = provider(&server, &clock);

    // A cold fetch that is retried once: the agent echoes the token in a 500.
    answer.set(ResponseTemplate::new(500).set_body_string(echo.clone()));
    let error = provider.credentials().await.unwrap_err();
    let mut outputs = vec![format!("{error} {error:?} {}", chain(&error))];

    answer.set(ok("AKID1", t0 + 6 * HOUR));
    let credentials = provider.credentials().await.unwrap();
    outputs.push(format!("{credentials:?}"));

    // The refresh fails (the agent echoes the token again); the last good ones are served.
    answer.set(ResponseTemplate::new(400).set_body_string(echo.clone()));
    clock.settled().await;
    clock.advance(5 * HOUR + 31 * MINUTE);
    eventually("a failed refresh", || async {
        provider.metrics().failures >= 2
    })
    .await;
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID1"
    );

    // A Code/Message document that echoes the token after expiry.
    answer.set(ResponseTemplate::new(200).set_body_string(format!(
        r#"{{"Code":"InvalidToken","Message":"bad {TOKEN}"}}"#
    )));
    clock.settled().await;
    clock.advance(HOUR);
    let error = provider.credentials().await.unwrap_err();
    outputs.push(format!("{error} {error:?} {}", chain(&error)));

    outputs.push(format!("{provider:?}"));
    outputs.push(format!(
        "{:?}",
        PodIdentityCredentialsProvider::builder()
            .token(TOKEN)
            .full_uri("http://127.0.0.1/x")
    ));
    drop(provider);

    let logs = capture.text();
    // The paths above were logged...
    for expected in [
        "retrying",
        "fetching pod identity credentials failed",
        "refresh failed",
        "cached new credentials",
        "redacted",
    ] {
        assert!(
            logs.contains(expected),
            "missing `{expected}` in logs:\n{logs}"
        );
    }
    // ...and nothing secret was.
    assert_no_secret(&logs);
    for output in outputs {
        assert_no_secret(&output);
    }
}
