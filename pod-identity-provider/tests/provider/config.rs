//! The configuration table: environment combinations and the host policy.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use pod_identity_provider::{Env, Error, ErrorKind, PodIdentityCredentialsProvider};
use wiremock::matchers::header;
use wiremock::{Mock, MockServer};

const FULL: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
const TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";
const TOKEN_VAR: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";

/// `test-data/configuration.json`.
#[derive(serde::Deserialize)]
struct Table {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    doc: String,
    env: BTreeMap<String, String>,
    #[serde(flatten)]
    expect: Expect,
    without_rustls: Option<Expect>,
}

#[derive(serde::Deserialize, Clone)]
struct Expect {
    outcome: String,
    message: Option<String>,
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

fn outcome(result: &Result<Credentials, CredentialsError>) -> &'static str {
    match result {
        Ok(_) => "credentials",
        Err(CredentialsError::CredentialsNotLoaded(_)) => "not_loaded",
        Err(CredentialsError::InvalidConfiguration(_)) => "invalid",
        Err(_) => "accepted",
    }
}

#[tokio::test]
async fn configuration_table() {
    let table: Table =
        serde_json::from_str(include_str!("../../test-data/configuration.json")).unwrap();
    let clock = ManualClock::new();
    let server = agent(ok("AKID", clock.now() + 6 * HOUR)).await;
    let port = server.address().port().to_string();
    assert!(!table.cases.is_empty(), "an emptied table must not pass");
    for case in table.cases {
        let expect = match (&case.without_rustls, cfg!(feature = "rustls")) {
            (Some(other), false) => other.clone(),
            _ => case.expect.clone(),
        };
        let vars: Vec<(&str, String)> = case
            .env
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    v.replace("{agent}", &uri(&server)).replace("{port}", &port),
                )
            })
            .collect();
        let result = provider_for(vars, &clock).credentials().await;
        let text = result.as_ref().err().map(|e| chain(e)).unwrap_or_default();
        assert_eq!(outcome(&result), expect.outcome, "{}: {text}", case.doc);
        if let Some(message) = &expect.message {
            assert!(text.contains(message.as_str()), "{}: {text}", case.doc);
        }
        for value in case.env.values().filter(|v| !v.is_empty()) {
            if value.contains("token") || value.contains("break") || value.contains('é') {
                assert!(
                    !text.contains(value.as_str()),
                    "{}: token in error: {text}",
                    case.doc
                );
            }
        }
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
