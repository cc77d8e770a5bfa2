//! The credential request never goes through a proxy, even when the environment names one.
//!
//! HTTP clients read `HTTP_PROXY` from the process environment, which a test cannot change
//! safely; so the check runs in a child process of this test binary started with it set.

use std::process::Command;

use crate::common::*;
use pod_identity_provider::{Env, PodIdentityCredentialsProvider};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer};

const CHILD_TEST: &str = "proxy::the_child_fetches_directly";

#[tokio::test]
async fn http_proxy_in_the_environment_is_not_used() {
    let clock = ManualClock::new();
    // A "proxy" that would answer every request it is sent with its own credentials.
    let proxy = MockServer::start().await;
    Mock::given(any())
        .respond_with(ok("AKIDPROXY", clock.now() + 6 * HOUR))
        .mount(&proxy)
        .await;
    let proxy_uri = proxy.uri();
    let child = tokio::task::spawn_blocking(move || {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", CHILD_TEST, "--ignored", "--nocapture"])
            .env("HTTP_PROXY", &proxy_uri)
            .env("http_proxy", &proxy_uri)
            .env("ALL_PROXY", &proxy_uri)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env_remove("REQUEST_METHOD")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let output = String::from_utf8_lossy(&child.stdout).into_owned()
        + &String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "child failed:\n{output}");
    assert!(output.contains("1 passed"), "the child test ran:\n{output}");
    assert_eq!(requests(&proxy).await, 0, "the proxy was used");
}

#[tokio::test]
#[ignore = "run by http_proxy_in_the_environment_is_not_used, in a child process"]
async fn the_child_fetches_directly() {
    let clock = ManualClock::new();
    let server = agent(ok("AKIDDIRECT", clock.now() + 6 * HOUR)).await;
    let provider = PodIdentityCredentialsProvider::builder()
        .env(Env::from_vars([(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            uri(&server),
        )]))
        .time_source(clock.clone())
        .sleep_impl(clock.clone())
        .build();
    let credentials = provider.credentials().await.unwrap();
    assert_eq!(credentials.access_key_id(), "AKIDDIRECT");
}
