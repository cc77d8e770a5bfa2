//! The agent against the SigV4-verifying EKS Auth simulator, over loopback.

use pod_identity_core::token::ServiceAccountToken;

use crate::support::http::credentials as http;
use crate::support::{
    AgentBuilder, CredentialRequest, CredentialSource, EksAuthSimulator, EksAuthSourceBuilder,
    NODE_DETAILS, Serving, SharedCredentialsFile, SimulatorServer, eks_auth_source,
    minted_token as pod_token, simulator,
};

fn source(simulator: &EksAuthSimulator, server: &SimulatorServer) -> EksAuthSourceBuilder {
    eks_auth_source(server.endpoint_url()).aws_client(|aws| aws.region(simulator.region()))
}

#[tokio::test]
async fn node_details_are_signed_with_the_body() {
    let (simulator, server) = simulator(&["app"]).await;
    let source = NODE_DETAILS
        .sent_by(source(&simulator, &server))
        .build()
        .await
        .unwrap();
    let token = pod_token("app", "app-1");
    let request = CredentialRequest::new(
        "demo".parse().unwrap(),
        ServiceAccountToken::decode(&token).unwrap(),
    );
    // The simulator verifies the signature over the body the interceptor rewrote.
    let issued = source.credentials(&request).await.unwrap();
    assert!(issued.credentials().access_key_id.starts_with("ASIA"));
    assert_eq!(issued.account_id(), Some("111122223333"));
    assert_eq!(simulator.token_request_count(&token), 1);
}

#[tokio::test]
async fn the_agent_serves_simulator_credentials_with_one_call_per_token() {
    let (simulator, server) = simulator(&["app"]).await;
    let source = source(&simulator, &server).build().await.unwrap();
    let agent = AgentBuilder::new("demo".parse().unwrap(), source)
        .bind_hosts(["127.0.0.1"])
        .server(move |server| server.port(0).probe_addr(None).metrics_addr(None))
        .bind()
        .await
        .unwrap();
    let agent = Serving::start(agent);
    let addr = agent.addr();

    // Fifty pods' SDKs asking at once for one token: one EKS Auth call.
    let token = pod_token("app", "burst");
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let token = token.clone();
        requests.spawn(async move { http(addr, &token).await });
    }
    let mut bodies = Vec::new();
    while let Some(answer) = requests.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        bodies.push(body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "one set of credentials"
    );
    assert_eq!(simulator.token_request_count(&token), 1);
    let access_key_id = bodies[0].split('"').nth(3).unwrap().to_owned();
    assert!(simulator.session(&access_key_id).is_some());

    // A service account without an association: EKS Auth's 404, with its request id.
    let (status, body) = http(addr, &pod_token("other", "other-1")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("(ResourceNotFoundException)"), "{body}");
    assert!(body.ends_with(", fault: client\n"), "{body}");
    agent.shutdown().await;
}

/// `--rotate-credentials`: the node's keys are re-read from the shared credentials file when it
/// changes, and the next EKS Auth call is signed with them, without rebuilding the source.
#[tokio::test]
async fn a_rotated_credentials_file_signs_the_next_call_with_the_new_keys() {
    let (simulator, server) = simulator(&["app"]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    let write = |id: &str, secret: &str| {
        std::fs::write(
            &path,
            format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
        )
        .unwrap();
    };
    write("AKIDEXPIRED", "expired-secret");
    let source = source(&simulator, &server)
        .aws_client(|aws| {
            aws.credentials_provider_uncached(SharedCredentialsFile::builder(&path).build())
        })
        .build()
        .await
        .unwrap();
    let token = pod_token("app", "hybrid-1");
    let request = CredentialRequest::new(
        "demo".parse().unwrap(),
        ServiceAccountToken::decode(&token).unwrap(),
    );

    // The simulator knows only AKIDNODE: the old key is refused as unknown.
    let error = source.credentials(&request).await.unwrap_err();
    assert_eq!(error.code(), "UnrecognizedClientException", "{error}");

    // Rotated on disk: the next call is signed with the new key and verifies.
    write("AKIDNODE", "node-secret");
    let issued = source.credentials(&request).await.unwrap();
    assert!(issued.credentials().access_key_id.starts_with("ASIA"));
    assert_eq!(
        simulator.token_request_count(&token),
        1,
        "one call got past the signature"
    );

    // The secret is re-read with the key: a wrong one no longer verifies.
    write("AKIDNODE", "wrong-secret-of-a-new-length");
    let error = source.credentials(&request).await.unwrap_err();
    assert_eq!(error.code(), "InvalidSignatureException", "{error}");
}
