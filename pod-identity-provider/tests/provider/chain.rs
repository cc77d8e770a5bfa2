//! The default chain: Pod Identity in the container position of aws-config's order, driven by
//! an injected environment (no process environment read or changed) and a wiremock agent.

use std::path::Path;

use crate::common::*;
use aws_config::Region;
use aws_credential_types::Credentials;
use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_async::time::SharedTimeSource;
use pod_identity_provider::{DefaultCredentialsChain, Env};
use wiremock::MockServer;

/// An environment without IMDS (nothing here may leave loopback), plus `vars`.
fn env(vars: &[(&str, &str)]) -> Env {
    let mut all = vec![("AWS_EC2_METADATA_DISABLED", "true")];
    all.extend_from_slice(vars);
    Env::from_vars(all.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

async fn resolve(env: Env) -> Result<Credentials, String> {
    DefaultCredentialsChain::builder()
        .region(Region::new("us-east-1"))
        .env(env)
        .build()
        .await
        .provide_credentials()
        .await
        .map_err(|e| chain(&e))
}

/// An agent answering with `AKIDPOD`, valid for six hours of real time.
async fn pod_agent() -> Agent {
    let expiry = SharedTimeSource::default().now() + 6 * HOUR;
    agent(ok("AKIDPOD", expiry)).await
}

fn pod_vars(server: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri(server)),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", TOKEN.to_owned()),
    ]
}

const ENV_KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "AKIDENV"),
    ("AWS_SECRET_ACCESS_KEY", "env-secret"),
];

fn write_profiles(dir: &Path) -> String {
    let path = dir.join("credentials");
    std::fs::write(
        &path,
        "[default]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n\n\
         [other]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = other-secret\n",
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn with(base: &[(&'static str, String)], more: &[(&'static str, &str)]) -> Env {
    let mut vars: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.extend_from_slice(more);
    env(&vars)
}

#[tokio::test]
async fn in_a_pod_resolves_through_pod_identity() {
    let server = pod_agent().await;
    let credentials = resolve(with(&pod_vars(&server), &[])).await.unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDPOD");
    assert_eq!(credentials.secret_access_key(), SECRET_KEY);
    assert_eq!(credentials.session_token(), Some(SESSION_TOKEN));
    assert_eq!(
        credentials.get_property::<Vec<AwsCredentialFeature>>(),
        Some(&vec![AwsCredentialFeature::CredentialsHttp])
    );
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test]
async fn the_ecs_relative_uri_is_the_container_position_too() {
    // A valid relative URI points off loopback (169.254.170.2); an invalid one is the Pod
    // Identity link's configuration error, which shows that link reads the variable.
    let error = resolve(env(&[(
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "not a path",
    )]))
    .await
    .unwrap_err();
    assert!(
        error.contains("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        "the Pod Identity link read the relative URI: {error}"
    );
}

#[tokio::test]
async fn outside_a_pod_environment_credentials() {
    let credentials = resolve(env(&[
        ("AWS_ACCESS_KEY_ID", "AKIDENV"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ("AWS_SESSION_TOKEN", "env-session"),
        ("AWS_ACCOUNT_ID", "210987654321"),
    ]))
    .await
    .unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDENV");
    assert_eq!(credentials.secret_access_key(), "env-secret");
    assert_eq!(credentials.session_token(), Some("env-session"));
    assert_eq!(
        credentials.account_id().map(|a| a.as_str()),
        Some("210987654321")
    );
    assert_eq!(
        credentials.get_property::<Vec<AwsCredentialFeature>>(),
        Some(&vec![AwsCredentialFeature::CredentialsEnvVars])
    );
}

#[tokio::test]
async fn outside_a_pod_a_profile_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_profiles(dir.path());
    let missing = dir.path().join("no-config").to_str().unwrap().to_owned();
    let credentials = resolve(env(&[
        ("AWS_SHARED_CREDENTIALS_FILE", file.as_str()),
        ("AWS_CONFIG_FILE", missing.as_str()),
    ]))
    .await
    .unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDPROFILE");

    let credentials = resolve(env(&[
        ("AWS_SHARED_CREDENTIALS_FILE", file.as_str()),
        ("AWS_CONFIG_FILE", missing.as_str()),
        ("AWS_PROFILE", "other"),
    ]))
    .await
    .unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDOTHER");
}

#[tokio::test]
async fn the_profile_files_default_to_the_injected_home() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    write_profiles(&home.path().join(".aws"));
    let credentials = resolve(env(&[("HOME", home.path().to_str().unwrap())]))
        .await
        .unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDPROFILE");
}

#[tokio::test]
async fn nothing_configured_is_not_loaded() {
    let home = tempfile::tempdir().unwrap();
    let error = DefaultCredentialsChain::builder()
        .region(Region::new("us-east-1"))
        .env(env(&[("HOME", home.path().to_str().unwrap())]))
        .build()
        .await
        .credentials()
        .await
        .unwrap_err();
    assert!(
        matches!(error, CredentialsError::CredentialsNotLoaded(_)),
        "{error:?}"
    );
}

/// Environment, profile, web identity, Pod Identity: each set-up link hides the ones after it.
#[tokio::test]
async fn precedence_is_environment_profile_web_identity_pod_identity() {
    let server = pod_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_profiles(dir.path());
    let missing_config = dir.path().join("no-config").to_str().unwrap().to_owned();
    let missing_token = dir.path().join("no-token").to_str().unwrap().to_owned();
    let pod = pod_vars(&server);
    let profile = [
        ("AWS_SHARED_CREDENTIALS_FILE", file.as_str()),
        ("AWS_CONFIG_FILE", missing_config.as_str()),
    ];
    let web_identity = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", missing_token.as_str()),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa"),
    ];
    let all: Vec<(&str, &str)> = [&ENV_KEYS[..], &profile[..], &web_identity[..]].concat();

    let credentials = resolve(with(&pod, &all)).await.unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDENV", "environment first");

    let credentials = resolve(with(&pod, &[&profile[..], &web_identity[..]].concat()))
        .await
        .unwrap();
    assert_eq!(
        credentials.access_key_id(),
        "AKIDPROFILE",
        "then the profile"
    );

    // The web identity link is configured (its token file is missing, so it fails and stops
    // the chain, as a configured-but-broken link does): it was asked before Pod Identity.
    let error = resolve(with(&pod, &web_identity)).await.unwrap_err();
    assert!(
        error.contains("No such file"),
        "then web identity, whose token file is missing: {error}"
    );
    assert_eq!(requests(&server).await, 0, "Pod Identity was not asked");

    let credentials = resolve(with(&pod, &[])).await.unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDPOD", "then Pod Identity");
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test]
async fn a_configured_pod_identity_link_replaces_the_default_one() {
    let clock = ManualClock::new();
    let server = agent(ok("AKIDPOD", clock.now() + 6 * HOUR)).await;
    let chain = DefaultCredentialsChain::builder()
        .region(Region::new("us-east-1"))
        .env(env(&[]))
        .pod_identity(provider(&server, &clock))
        .build()
        .await;
    assert_eq!(
        chain.credentials().await.unwrap().access_key_id(),
        "AKIDPOD"
    );
}
