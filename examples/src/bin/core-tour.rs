//! A short tour of `pod-identity-core`: the wire contracts of EKS Pod Identity as types.
//!
//! Run it with `cargo run -p pod-identity-examples --bin core-tour`. It does no I/O beyond
//! printing, and prints no secret in clear.

use std::time::{Duration, UNIX_EPOCH};

use pod_identity_agent_lib::simulator::unsigned_token;
use pod_identity_core::eks_auth::{AssumeRoleForPodIdentityResponse, EksAuthError};
use pod_identity_core::endpoint::{FullUri, HostCheck};
use pod_identity_core::{agent_error::AgentError, token::ServiceAccountToken};

fn main() {
    println!("== 1. EKS Auth answers; the agent turns that into container credentials");
    let body = br#"{
        "subject": {"namespace": "default", "serviceAccount": "app"},
        "audience": "pods.eks.amazonaws.com",
        "podIdentityAssociation": {
            "associationArn": "arn:aws:eks:us-west-2:111122223333:podidentityassociation/demo/a-abcdefghij0123456",
            "associationId": "a-abcdefghij0123456"},
        "assumedRoleUser": {
            "arn": "arn:aws:sts::111122223333:assumed-role/app-role/eks-demo-app-7d9f-uuid",
            "assumeRoleId": "AROAEXAMPLE:eks-demo-app-7d9f-uuid"},
        "credentials": {"sessionToken": "IQoJb3JpZ2luX2VjEXAMPLE", "secretAccessKey": "wJalrXUtnFEMIEXAMPLE",
            "accessKeyId": "ASIAEXAMPLE", "expiration": 1700000000.123456789}
    }"#;
    match AssumeRoleForPodIdentityResponse::from_json(body) {
        Ok(response) => {
            let creds = response.to_container_credentials();
            println!("parsed (Debug redacts): {creds:?}");
            let json = creds.to_json();
            // The real body carries the secrets; show its shape with them masked.
            let masked = json
                .replace(creds.secret_access_key.expose_secret(), "<secret>")
                .replace(creds.token.expose_secret(), "<session-token>");
            println!("served to the SDK:      {masked}");
        }
        Err(e) => println!("unexpected: {e}"),
    }

    println!("\n== 2. An EKS Auth error, as the agent reports it");
    let err = EksAuthError::from_http(
        400,
        Some("AccessDeniedException:http://internal.amazon.com/coral/com.amazonaws.eksauth/"),
        Some("0d2f1f8a-1111-2222-3333-444455556666"),
        br#"{"message":"Role trust policy does not allow pods.eks.amazonaws.com"}"#,
    );
    println!(
        "code {} / class {:?} / fault {}",
        err.code(),
        err.class(),
        err.fault()
    );
    let answer = AgentError::EksAuth(err);
    print!("agent answers {}: {}", answer.status(), answer.body());

    println!("\n== 3. Which credential URIs an SDK may call");
    for uri in [
        "http://169.254.170.23/v1/credentials",
        "http://[fd00:ec2::23]/v1/credentials",
        "http://127.0.0.1:8080/creds",
        "http://[::ffff:127.0.0.1]/creds",
        "http://169.254.169.254/latest/meta-data",
        "http://agent.local/creds",
        "https://creds.example.com/v1",
        "ftp://169.254.170.23/",
    ] {
        let verdict = match FullUri::parse(uri).map(|u| u.host_check()) {
            Ok(HostCheck::Allowed) => "allowed".to_owned(),
            Ok(HostCheck::MustResolve { host, port }) => {
                format!("allowed if {host}:{port} resolves only to allowed addresses")
            }
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("refused: {e}"),
        };
        println!("{uri:42} {verdict}");
    }

    println!("\n== 4. A projected service-account token, decoded (not verified)");
    let raw = unsigned_token(
        r#"{"aud":["pods.eks.amazonaws.com"],"exp":1700086400,"iat":1700000000,"nbf":1700000000,
            "iss":"https://oidc.eks.us-west-2.amazonaws.com/id/EXAMPLE",
            "sub":"system:serviceaccount:default:app",
            "kubernetes.io":{"namespace":"default","pod":{"name":"app-7d9f","uid":"0b5e-pod"},
                             "serviceaccount":{"name":"app","uid":"9c1d-sa"}}}"#,
    );
    match ServiceAccountToken::decode(&raw) {
        Ok(token) => {
            println!("token (Debug redacts the raw JWT): {token:?}");
            if let Some((namespace, service_account)) = token.claims().service_account() {
                println!("pod identity: {namespace}/{service_account}");
            }
            for (label, secs) in [
                ("an hour in", 1_700_003_600),
                ("a day later", 1_700_086_400),
            ] {
                let now = UNIX_EPOCH + Duration::from_secs(secs);
                match token.validate_time(now) {
                    Ok(()) => println!("{label}: valid"),
                    Err(e) => print!("{label}: {}", AgentError::Token(e).body()),
                }
            }
        }
        Err(e) => println!("unexpected: {e}"),
    }
    for bad in ["", "not-a-jwt", "e30.e30.sig"] {
        if let Err(e) = ServiceAccountToken::decode(bad) {
            println!("{:14} -> 400 {e}", format!("{bad:?}"));
        }
    }
}
