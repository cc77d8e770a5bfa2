//! The provider end to end against an agent assembled with the self-managed source: the pod's
//! token (signed by a key generated here, its JWKS in a file) goes through our
//! `PodIdentityCredentialsProvider` to the agent on loopback, which verifies it, finds the
//! association in a file and calls a wiremock STS; a forged token never gets there.

#![allow(clippy::unwrap_used)] // A test crate: a panic is how a check fails.

// The agent package's test support: the same simulator, tokens and in-process agent.
#[path = "../../agent/tests/support/mod.rs"]
mod support;

use aws_smithy_async::time::SharedTimeSource;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_agent_lib::AgentBuilder;
use pod_identity_agent_lib::self_managed::{
    FileAssociationStore, JwksLocation, SelfManagedSource, TokenVerifier,
};

use pod_identity_provider::{Env, PodIdentityCredentialsProvider};
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use support::{APP_ROLE, Serving};

const ISSUER: &str = "https://issuer.lab.example.com";

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn sign(key: &EcdsaKeyPair, kid: &str, claims: &serde_json::Value) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": kid}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

#[tokio::test]
async fn the_provider_gets_credentials_from_a_self_managed_agent() {
    // The one real-clock read: tokens and credentials are minted around it, and the provider
    // judges expiry by the same system clock.
    let now = SharedTimeSource::default().now();
    let dir = tempfile::tempdir().unwrap();

    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = key.public_key().as_ref();
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    }]});
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let associations_file = dir.path().join("associations.json");
    std::fs::write(
        &associations_file,
        json!({"associations": [
            {"namespace": "default", "serviceAccount": "app", "roleArn": APP_ROLE}
        ]})
        .to_string(),
    )
    .unwrap();

    let expiration = pod_identity_core::time::format_rfc3339(
        UNIX_EPOCH + Duration::from_secs(epoch_secs(now) + 3600),
    );
    let sts = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!(
                r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser>
      <AssumedRoleId>AROAEXAMPLE:eks-lab-app-1</AssumedRoleId>
      <Arn>arn:aws:sts::111122223333:assumed-role/app/eks-lab-app-1</Arn>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIASELFMANAGED</AccessKeyId>
      <SecretAccessKey>self-managed-secret</SecretAccessKey>
      <SessionToken>self-managed-session</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
  </AssumeRoleResult>
</AssumeRoleResponse>"#
            ),
            "text/xml",
        ))
        .mount(&sts)
        .await;

    let verifier = TokenVerifier::builder(ISSUER)
        .jwks(JwksLocation::File(jwks_file))
        .build()
        .await
        .unwrap();
    let store = FileAssociationStore::open(&associations_file)
        .await
        .unwrap();
    let source = SelfManagedSource::builder(verifier, store)
        .aws_client(|aws| {
            aws.region("eu-west-1")
                .endpoint_url(sts.uri())
                .credentials_provider(aws_sdk_sts::config::Credentials::new(
                    "AKIDNODE",
                    "node-secret",
                    None,
                    None,
                    "node",
                ))
        })
        .build()
        .await
        .unwrap();
    let agent = Serving::start(
        AgentBuilder::new("lab".parse().unwrap(), source)
            .bind_hosts(["127.0.0.1"])
            .server(move |server| server.drain_timeout(Duration::from_secs(1))),
    )
    .await;
    let full_uri = agent.full_uri();

    let iat = epoch_secs(now);
    let claims = json!({
        "aud": ["pods.eks.amazonaws.com"], "iss": ISSUER,
        "exp": iat + 86_400, "iat": iat, "nbf": iat,
        "sub": "system:serviceaccount:default:app",
        "kubernetes.io": {
            "namespace": "default",
            "pod": {"name": "app-1", "uid": "pod-uid"},
            "serviceaccount": {"name": "app", "uid": "sa-uid"}
        }
    });
    let token_file = dir.path().join("eks-pod-identity-token");
    let provider = |token: &str| {
        std::fs::write(&token_file, token).unwrap();
        PodIdentityCredentialsProvider::builder()
            .env(Env::from_vars(Vec::<(String, String)>::new()))
            .full_uri(&full_uri)
            .token_file(&token_file)
            .max_attempts(1)
            .build()
    };

    let credentials = provider(&sign(&key, "k1", &claims))
        .credentials()
        .await
        .unwrap();
    assert_eq!(credentials.access_key_id(), "ASIASELFMANAGED");
    assert_eq!(credentials.secret_access_key(), "self-managed-secret");
    assert_eq!(credentials.session_token(), Some("self-managed-session"));
    assert_eq!(
        credentials.account_id().map(|a| a.as_str()),
        Some("111122223333")
    );
    assert_eq!(
        credentials.expiry().map(epoch_secs),
        Some(epoch_secs(now) + 3600)
    );
    assert_eq!(sts.received_requests().await.unwrap().len(), 1);

    // A token signed by another key under the same kid: the provider gets an error and STS
    // sees nothing.
    let forger = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let error = provider(&sign(&forger, "k1", &claims))
        .credentials()
        .await
        .unwrap_err();
    let text = format!("{error:?}");
    assert!(text.contains("InvalidTokenException"), "{text}");
    assert_eq!(sts.received_requests().await.unwrap().len(), 1);

    agent.stop().await;
}
