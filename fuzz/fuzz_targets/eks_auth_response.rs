//! EKS Auth `AssumeRoleForPodIdentity` bodies (responses the agent reads, requests the
//! simulator reads): never panic, and what is accepted round-trips and renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_identity_agent_lib::simulator::{read_request_body, response_body};
use pod_identity_core::eks_auth::AssumeRoleForPodIdentityResponse;
use pod_identity_core::{
    association::ClusterName, container_credentials::ContainerCredentials, secret::SecretString,
};

fuzz_target!(|data: &[u8]| {
    match AssumeRoleForPodIdentityResponse::from_json(data) {
        Ok(response) => {
            let json = response_body(&response);
            let again = AssumeRoleForPodIdentityResponse::from_json(&json)
                .expect("our own rendering parses");
            assert!(again == response, "the response does not round-trip");
            let _ = response.account_id();
            let container = response.to_container_credentials();
            let rendered = container.to_json();
            if !container.access_key_id.is_empty()
                && !container.secret_access_key.is_empty()
                && !container.token.is_empty()
                && container.account_id.as_deref() != Some("")
            {
                ContainerCredentials::from_json(rendered.as_bytes())
                    .expect("the agent's answer parses");
            }
            // What the public fields print by themselves, to tell a secret that is also part
            // of, say, an ARN from one that leaked.
            let mut blank = response.clone();
            blank.credentials.secret_access_key = SecretString::default();
            blank.credentials.session_token = SecretString::default();
            let baseline = format!("{blank:?}");
            let debug = format!("{response:?}");
            for secret in [
                response.credentials.secret_access_key.expose_secret(),
                response.credentials.session_token.expose_secret(),
            ] {
                if secret.len() >= 12 && !baseline.contains(secret) {
                    assert!(!debug.contains(secret), "Debug shows a secret");
                }
            }
        }
        Err(error) => {
            // A body that is not a response is a recoverable server-side problem.
            assert_eq!(error.status(), 500);
            let _ = error.agent_body();
        }
    }
    let cluster: ClusterName = "demo".parse().expect("a valid cluster name");
    if let Ok(request) = read_request_body(cluster, data) {
        let again = read_request_body(
            "demo".parse().expect("a valid cluster name"),
            &request.to_json(),
        )
        .expect("our own request parses");
        assert_eq!(again.token, request.token);
        let _ = request.path();
    }
});
