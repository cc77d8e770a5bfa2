//! The configuration table: environment combinations and the host policy.
#![allow(clippy::unwrap_used)] // A test crate: a panic is how a check fails.

mod common;

use std::time::Duration;

use aws_config::meta::credentials::CredentialsProviderChain;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use common::*;
use pod_identity_provider::{Env, Error, ErrorKind, PodIdentityCredentialsProvider};
use wiremock::matchers::header;
use wiremock::{Mock, MockServer};

const FULL: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
const RELATIVE: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
const TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";
const TOKEN_VAR: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";

/// What a row expects from the first call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// `not_loaded`: a chain moves on.
    NotLoaded,
    /// `invalid_configuration` whose text contains this.
    Invalid(&'static str),
    /// The configuration is accepted; the request itself fails (nothing listens there).
    Accepted,
    /// Credentials from the mock agent.
    Credentials,
}

fn provider_for(vars: Vec<(&str, String)>, clock: &ManualClock) -> PodIdentityCredentialsProvider {
    PodIdentityCredentialsProvider::builder()
        .env(Env::from_vars(vars))
        .time_source(clock.clone())
        .sleep_impl(clock.clone())
        .connect_timeout(Duration::from_millis(200))
        .max_attempts(1)
        .build()
}

fn outcome(result: &Result<Credentials, CredentialsError>) -> (Outcome, String) {
    match result {
        Ok(_) => (Outcome::Credentials, String::new()),
        Err(error) => {
            let text = chain(error);
            let outcome = match error {
                CredentialsError::CredentialsNotLoaded(_) => Outcome::NotLoaded,
                CredentialsError::InvalidConfiguration(_) => Outcome::Invalid(""),
                _ => Outcome::Accepted,
            };
            (outcome, text)
        }
    }
}

#[tokio::test]
async fn configuration_table() {
    let clock = ManualClock::new();
    let server = agent(ok("AKID", clock.now() + 6 * HOUR)).await;
    let port = server.address().port();
    let https_outcome = if cfg!(feature = "rustls") {
        Outcome::Accepted
    } else {
        Outcome::Invalid("rustls")
    };
    let rows: Vec<(Vec<(&str, String)>, Outcome)> = vec![
        (vec![], Outcome::NotLoaded),
        (vec![(FULL, String::new())], Outcome::NotLoaded),
        (vec![(TOKEN_VAR, TOKEN.into())], Outcome::NotLoaded),
        (
            vec![(FULL, uri(&server)), (TOKEN_VAR, TOKEN.into())],
            Outcome::Credentials,
        ),
        (
            vec![(FULL, format!("http://localhost:{port}/v1/credentials"))],
            Outcome::Credentials,
        ),
        (
            vec![(FULL, "http://169.254.170.23/v1/credentials".into())],
            Outcome::Accepted,
        ),
        (
            vec![(FULL, "http://[fd00:ec2::23]/v1/credentials".into())],
            Outcome::Accepted,
        ),
        (
            vec![(FULL, "http://169.254.170.2/creds".into())],
            Outcome::Accepted,
        ),
        (
            vec![(RELATIVE, "/v2/credentials/abc".into())],
            Outcome::Accepted,
        ),
        (
            vec![
                (RELATIVE, "/v2/credentials".into()),
                (FULL, "http://10.0.0.1/".into()),
            ],
            Outcome::Accepted,
        ),
        (
            vec![(RELATIVE, "v2/credentials".into())],
            Outcome::Invalid(RELATIVE),
        ),
        (
            vec![(FULL, "http://[::ffff:127.0.0.1]/creds".into())],
            Outcome::Invalid(FULL),
        ),
        (
            vec![(FULL, "http://10.0.0.1/creds".into())],
            Outcome::Invalid("10.0.0.1"),
        ),
        (
            vec![(FULL, "http://169.254.169.254/creds".into())],
            Outcome::Invalid(FULL),
        ),
        (
            vec![(FULL, "http://[fd00:ec2::24]/creds".into())],
            Outcome::Invalid(FULL),
        ),
        (
            vec![(FULL, "ftp://127.0.0.1/creds".into())],
            Outcome::Invalid("scheme"),
        ),
        (vec![(FULL, "not a uri".into())], Outcome::Invalid(FULL)),
        (
            vec![(FULL, "https://creds.example.invalid/v1".into())],
            https_outcome,
        ),
        (
            vec![(FULL, uri(&server)), (TOKEN_VAR, "line\nbreak".into())],
            Outcome::Invalid(TOKEN_VAR),
        ),
    ];
    for (vars, expected) in rows {
        let shown = format!("{vars:?}");
        let result = provider_for(vars, &clock).credentials().await;
        let (got, text) = outcome(&result);
        match expected {
            Outcome::Invalid(needle) => {
                assert_eq!(got, Outcome::Invalid(""), "{shown}: {text}");
                assert!(text.contains(needle), "{shown}: {text}");
            }
            _ => assert_eq!(got, expected, "{shown}: {text}"),
        }
        assert!(
            !text.contains("line\nbreak") && !text.contains(TOKEN),
            "{shown}: {text}"
        );
    }
}

#[tokio::test]
async fn token_file_wins_over_token() {
    let clock = ManualClock::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file").unwrap();
    let server = MockServer::start().await;
    Mock::given(header("authorization", "from-file"))
        .respond_with(ok("AKID", clock.now() + 6 * HOUR))
        .mount(&server)
        .await;
    let provider = provider_for(
        vec![
            (FULL, uri(&server)),
            (TOKEN_FILE, file.display().to_string()),
            (TOKEN_VAR, "from-env".into()),
        ],
        &clock,
    );
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID"
    );
}

#[tokio::test]
async fn token_file_problems_name_the_path() {
    let clock = ManualClock::new();
    let server = agent(ok("AKID", clock.now() + 6 * HOUR)).await;
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, " \n").unwrap();
    let huge = dir.path().join("huge-token");
    std::fs::write(&huge, vec![b'a'; 64 * 1024 + 1]).unwrap();
    let binary = dir.path().join("binary-token");
    std::fs::write(&binary, b"abc\x01def").unwrap();
    let missing = dir.path().join("missing-token");
    for (path, kind, words) in [
        (&missing, ErrorKind::TokenFile, "does not exist"),
        (&empty, ErrorKind::InvalidConfiguration, "empty"),
        (
            &huge,
            ErrorKind::InvalidConfiguration,
            "larger than 65536 bytes",
        ),
        (
            &binary,
            ErrorKind::InvalidConfiguration,
            "not allowed in an HTTP header",
        ),
    ] {
        let provider = provider_for(
            vec![
                (FULL, uri(&server)),
                (TOKEN_FILE, path.display().to_string()),
            ],
            &clock,
        );
        let error = provider.credentials().await.unwrap_err();
        let text = chain(&error);
        let source = std::error::Error::source(&error).and_then(|s| s.downcast_ref::<Error>());
        assert_eq!(source.map(Error::kind), Some(kind), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(words), "{text}");
    }
    assert_eq!(requests(&server).await, 0);

    // A token file that appears later is picked up: failures are not remembered.
    let provider = provider_for(
        vec![
            (FULL, uri(&server)),
            (TOKEN_FILE, missing.display().to_string()),
        ],
        &clock,
    );
    assert!(provider.credentials().await.is_err());
    std::fs::write(&missing, "late-token").unwrap();
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID"
    );
}

#[tokio::test]
async fn a_failed_resolution_is_retried_on_the_next_call() {
    let clock = ManualClock::new();
    let provider = provider_for(
        vec![(FULL, "http://pod-identity.invalid/creds".into())],
        &clock,
    );
    for _ in 0..2 {
        let error = provider.credentials().await.unwrap_err();
        let source = std::error::Error::source(&error).and_then(|s| s.downcast_ref::<Error>());
        assert_eq!(
            source.map(Error::kind),
            Some(ErrorKind::Resolve),
            "{}",
            chain(&error)
        );
    }
    assert_eq!(provider.metrics().fetches, 2);
}

#[tokio::test]
async fn builder_settings_win_over_the_environment() {
    let clock = ManualClock::new();
    let server = MockServer::start().await;
    Mock::given(header("authorization", "builder-token"))
        .respond_with(ok("AKID", clock.now() + 6 * HOUR))
        .mount(&server)
        .await;
    let provider = PodIdentityCredentialsProvider::builder()
        .full_uri(uri(&server))
        .token("builder-token")
        .env(Env::from_vars([
            (FULL, "http://10.0.0.1/"),
            (TOKEN_VAR, "env-token"),
        ]))
        .time_source(clock.clone())
        .sleep_impl(clock.clone())
        .build();
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID"
    );
}

#[tokio::test]
async fn an_unconfigured_provider_lets_a_chain_move_on() {
    let clock = ManualClock::new();
    let chain = CredentialsProviderChain::first_try("PodIdentity", provider_for(vec![], &clock))
        .or_else(
            "Static",
            Credentials::new("AKIDSTATIC", "secret", None, None, "test"),
        );
    let credentials = chain.provide_credentials().await.unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDSTATIC");

    // A configured but broken provider stops the chain.
    let chain = CredentialsProviderChain::first_try(
        "PodIdentity",
        provider_for(vec![(FULL, "http://10.0.0.1/creds".into())], &clock),
    )
    .or_else(
        "Static",
        Credentials::new("AKIDSTATIC", "secret", None, None, "test"),
    );
    assert!(chain.provide_credentials().await.is_err());
}
