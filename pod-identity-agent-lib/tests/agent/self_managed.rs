//! The self-managed source end to end: keys generated here, a JWKS served by wiremock (or read
//! from a file), a wiremock STS that checks the `AssumeRole` form, the file association store
//! under paused time, and the agent's router in front of it all.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use pod_identity_core::{eks_auth::ErrorClass, token::ServiceAccountToken};
use serde_json::{Value, json};
use tower::ServiceExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{
    AgentBuilder, AssociationKey, AssociationStore, Associations, CredentialCache,
    CredentialRequest, CredentialSource, FileAssociationStore, JwksLocation, SelfManagedSource,
    SelfManagedSourceBuilder, SharedTimeSource, SignatureError, Signer, SourceError, TokenVerifier,
    TokioTimeSource, VerifyError, eventually, logs, within,
};

/// Wall-clock start of every test: 2023-11-14T22:13:20Z.
const START: u64 = 1_700_000_000;
const CLUSTER: &str = "lab";
const ROLE: &str = "arn:aws:iam::111122223333:role/app";
const TARGET_ROLE: &str = "arn:aws:iam::444455556666:role/app-data";
const POD_SECRET: &str = "pod-secret-access-key-from-sts";
const NODE_SECRET: &str = "node-secret-access-key";

fn clock() -> SharedTimeSource {
    SharedTimeSource::new(TokioTimeSource::starting_at(
        UNIX_EPOCH + Duration::from_secs(START),
    ))
}

// ---------------------------------------------------------------------------------------------
// Keys and tokens.

/// Keys shared by the tests (RSA generation is slow in debug builds).
fn keys() -> &'static [Signer; 4] {
    static KEYS: OnceLock<[Signer; 4]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            Signer::rsa("rsa-1"),
            Signer::ec("ES256", "ec-256"),
            Signer::ec("ES384", "ec-384"),
            Signer::ec("ES512", "ec-521"),
        ]
    })
}

fn rotated_rsa() -> &'static Signer {
    static KEY: OnceLock<Signer> = OnceLock::new();
    KEY.get_or_init(|| Signer::rsa("rsa-2"))
}

fn jwks(signers: &[&Signer]) -> Value {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()})
}

/// The claims of a day-long projected token for pod `app-7d9f` of `default/app`.
fn claims(issuer: &str) -> Value {
    json!({
        "aud": ["pods.eks.amazonaws.com"],
        "exp": START + 86_400,
        "iat": START,
        "nbf": START,
        "iss": issuer,
        "sub": "system:serviceaccount:default:app",
        "jti": "6c2b1e9a",
        "kubernetes.io": {
            "namespace": "default",
            "node": {"name": "node-1", "uid": "node-uid"},
            "pod": {"name": "app-7d9f", "uid": "pod-uid-1"},
            "serviceaccount": {"name": "app", "uid": "sa-uid"}
        }
    })
}

fn request(token: &str) -> CredentialRequest {
    CredentialRequest::new(
        CLUSTER.parse().unwrap(),
        ServiceAccountToken::decode(token).unwrap(),
    )
}

// ---------------------------------------------------------------------------------------------
// The issuer (discovery + JWKS) and STS on wiremock.

/// Serves `<issuer>/.well-known/openid-configuration` and `/keys`.
async fn issuer(keys: &Value) -> MockServer {
    let server = MockServer::start().await;
    mount_issuer(&server, keys).await;
    server
}

async fn mount_issuer(server: &MockServer, keys: &Value) {
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": server.uri(),
            "jwks_uri": format!("{}/keys", server.uri()),
            "response_types_supported": ["id_token"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"]
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/keys"))
        .respond_with(ResponseTemplate::new(200).set_body_json(keys))
        .mount(server)
        .await;
}

async fn jwks_fetches(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/keys")
        .count()
}

fn sts_success(access_key_id: &str, role: &str) -> ResponseTemplate {
    let expiration =
        pod_identity_core::time::format_rfc3339(UNIX_EPOCH + Duration::from_secs(START + 3600));
    let role_name = role.rsplit('/').next().unwrap();
    let account = role.split(':').nth(4).unwrap();
    let body = format!(
        r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser>
      <AssumedRoleId>AROAEXAMPLE:eks-lab-app-7d9f</AssumedRoleId>
      <Arn>arn:aws:sts::{account}:assumed-role/{role_name}/eks-lab-app-7d9f</Arn>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{access_key_id}</AccessKeyId>
      <SecretAccessKey>{POD_SECRET}</SecretAccessKey>
      <SessionToken>pod-session-token</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>req-ok</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#
    );
    ResponseTemplate::new(200).set_body_raw(body, "text/xml")
}

fn sts_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    let body = format!(
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>req-err</RequestId>
</ErrorResponse>"#
    );
    ResponseTemplate::new(status)
        .insert_header("x-amzn-requestid", "req-err")
        .set_body_raw(body, "text/xml")
}

/// A wiremock STS answering every `AssumeRole` with credentials `ASIAPOD`.
async fn sts() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sts_success("ASIAPOD", ROLE))
        .mount(&server)
        .await;
    server
}

/// The decoded form parameters of each `AssumeRole` STS received.
async fn sts_calls(server: &MockServer) -> Vec<(BTreeMap<String, String>, String)> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r: &Request| {
            let authorization = r
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (form(&r.body), authorization)
        })
        .collect()
}

fn form(body: &[u8]) -> BTreeMap<String, String> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    std::str::from_utf8(body)
        .unwrap()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn associations(entries: &[Value]) -> Associations {
    Associations::from_json(Value::from(entries.to_vec()).to_string().as_bytes()).unwrap()
}

fn association() -> Value {
    json!({"clusterName": CLUSTER, "namespace": "default", "serviceAccount": "app", "roleArn": ROLE})
}

async fn verifier(issuer: &MockServer) -> TokenVerifier {
    TokenVerifier::builder(issuer.uri())
        .clock(clock())
        .build()
        .await
        .unwrap()
}

/// A source calling `sts` in eu-west-1 with the node key, one attempt per call.
fn source_builder<A: AssociationStore>(
    verifier: TokenVerifier,
    store: A,
    sts: &MockServer,
) -> SelfManagedSourceBuilder<A> {
    SelfManagedSource::builder(verifier, store).aws_client(|aws| {
        aws.region("eu-west-1")
            .endpoint_url(sts.uri())
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                "AKIDNODE",
                NODE_SECRET,
                None,
                None,
                "test",
            ))
            .max_attempts(1)
    })
}

async fn source<A: AssociationStore>(
    verifier: TokenVerifier,
    store: A,
    sts: &MockServer,
) -> SelfManagedSource<A> {
    source_builder(verifier, store, sts).build().await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn valid_tokens_of_every_algorithm_get_credentials_with_tagged_sessions() {
    let signers: Vec<&Signer> = keys().iter().collect();
    let issuer = issuer(&jwks(&signers)).await;
    let sts = sts().await;
    let source = source(
        verifier(&issuer).await,
        associations(&[association()]),
        &sts,
    )
    .await;

    for signer in keys() {
        let token = signer.sign(&claims(&issuer.uri()));
        let issued = source
            .credentials(&request(&token))
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", signer.alg));
        assert_eq!(issued.credentials().access_key_id, "ASIAPOD");
        assert_eq!(
            issued.credentials().secret_access_key.expose_secret(),
            POD_SECRET
        );
        assert_eq!(issued.account_id(), Some("111122223333"));
        assert_eq!(
            issued.expiration(),
            UNIX_EPOCH + Duration::from_secs(START + 3600)
        );
    }

    let calls = sts_calls(&sts).await;
    assert_eq!(calls.len(), 4);
    let (params, authorization) = &calls[0];
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDNODE/")
            && authorization.contains("/eu-west-1/sts/aws4_request"),
        "{authorization}"
    );
    assert_eq!(params["Action"], "AssumeRole");
    assert_eq!(params["RoleArn"], ROLE);
    assert_eq!(params["DurationSeconds"], "3600");
    let session = &params["RoleSessionName"];
    assert!(session.starts_with("eks-lab-app-7d9f-"), "{session}");
    assert!(session.len() <= 64, "{session}");
    let expected_tags = [
        (
            "eks-cluster-arn",
            "arn:aws:eks:eu-west-1:111122223333:cluster/lab",
        ),
        ("eks-cluster-name", "lab"),
        ("kubernetes-namespace", "default"),
        ("kubernetes-service-account", "app"),
        ("kubernetes-pod-name", "app-7d9f"),
        ("kubernetes-pod-uid", "pod-uid-1"),
    ];
    for (i, (key, value)) in expected_tags.iter().enumerate() {
        let n = i + 1;
        assert_eq!(params[&format!("Tags.member.{n}.Key")], *key);
        assert_eq!(params[&format!("Tags.member.{n}.Value")], *value);
        assert_eq!(params[&format!("TransitiveTagKeys.member.{n}")], *key);
    }
    assert!(!params.contains_key("Tags.member.7.Key"));
    assert!(!params.contains_key("ExternalId"));
    assert!(!params.contains_key("Policy"));
    // Each call has its own session name.
    assert_ne!(calls[0].0["RoleSessionName"], calls[1].0["RoleSessionName"]);
}

#[tokio::test]
async fn forged_and_wrong_tokens_are_refused_with_400_and_never_reach_sts() {
    let [rsa, es256, ..] = keys();
    let issuer = issuer(&jwks(&[rsa, es256])).await;
    let sts = sts().await;
    let verifier = TokenVerifier::builder(issuer.uri())
        .clock(clock())
        .min_refresh_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let source = source(verifier, associations(&[association()]), &sts).await;
    let good = claims(&issuer.uri());
    let with = |patch: Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let attacker = Signer::ec("ES256", "ec-256");
    let valid = rsa.sign(&good);
    let (signed, _) = valid.rsplit_once('.').unwrap();
    let tampered = {
        let header = signed.split('.').next().unwrap();
        let forged_claims = URL_SAFE_NO_PAD
            .encode(with(json!({"sub": "system:serviceaccount:kube-system:admin"})).to_string());
        let signature = valid.rsplit('.').next().unwrap();
        format!("{header}.{forged_claims}.{signature}")
    };

    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("re-signed by another key with a known kid", attacker.sign(&good), "InvalidTokenException", "Signature(BadSignature"),
        ("claims changed after signing", tampered, "InvalidTokenException", "Signature(BadSignature"),
        ("signature stripped", format!("{signed}."), "InvalidTokenException", "Signature(BadSignature"),
        ("alg none", rsa.sign_with_header(&json!({"alg": "none", "kid": "rsa-1"}), &good), "InvalidTokenException", "Signature(UnsupportedAlgorithm"),
        ("alg HS256 (key confusion)", rsa.sign_with_header(&json!({"alg": "HS256", "kid": "rsa-1"}), &good), "InvalidTokenException", "Signature(UnsupportedAlgorithm"),
        ("ES256 header on an RSA key", rsa.sign_with_header(&json!({"alg": "ES256", "kid": "rsa-1"}), &good), "InvalidTokenException", "Signature(KeyMismatch"),
        ("RS256 header on an EC key", es256.sign_with_header(&json!({"alg": "RS256", "kid": "ec-256"}), &good), "InvalidTokenException", "Signature(KeyMismatch"),
        ("unknown kid", Signer::ec("ES256", "who").sign(&good), "InvalidTokenException", "Signature(UnknownKey"),
        ("no kid", rsa.sign_with_header(&json!({"alg": "RS256"}), &good), "InvalidTokenException", "Signature(UnknownKey"),
        ("wrong issuer", rsa.sign(&with(json!({"iss": "https://evil.example.com"}))), "InvalidTokenException", "Issuer"),
        ("no issuer", rsa.sign(&with(json!({"iss": null}))), "InvalidTokenException", "Issuer"),
        ("wrong audience", rsa.sign(&with(json!({"aud": ["sts.amazonaws.com"]}))), "InvalidTokenException", "Claims(Audience"),
        ("no expiry", rsa.sign(&with(json!({"exp": null}))), "InvalidTokenException", "Claims(NoExpiry"),
        ("expired beyond the leeway", rsa.sign(&with(json!({"exp": START - 31}))), "ExpiredTokenException", "Claims(Expired"),
        ("not valid yet beyond the leeway", rsa.sign(&with(json!({"nbf": START + 120}))), "InvalidTokenException", "Claims(NotValidYet"),
        ("no kubernetes.io", rsa.sign(&with(json!({"kubernetes.io": null}))), "InvalidTokenException", "Claims(PodClaims"),
        ("no pod", rsa.sign(&with(json!({"kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "app", "uid": "u"}}}))), "InvalidTokenException", "Claims(PodClaims"),
        ("namespace differs from sub", rsa.sign(&with(json!({"sub": "system:serviceaccount:other:app"}))), "InvalidTokenException", "Claims(PodClaims"),
        ("not a service account", rsa.sign(&with(json!({"sub": "admin"}))), "InvalidTokenException", "Claims(PodClaims"),
    ];
    for (case, token, code, reason) in &cases {
        let decoded = ServiceAccountToken::decode(token).unwrap();
        let refused = source.verifier().verify(&decoded).await.unwrap_err();
        assert!(
            format!("{refused:?}").starts_with(reason),
            "{case}: {refused:?}"
        );
        let error = source.credentials(&request(token)).await.unwrap_err();
        let SourceError::EksAuth(error) = &error else {
            panic!("{case}: {error:?}");
        };
        assert_eq!(error.code().as_str(), *code, "{case}: {error:?}");
        assert_eq!(error.status(), 400, "{case}");
        assert_eq!(error.class(), ErrorClass::Irrecoverable, "{case}");
        let text = format!("{error} {error:?}");
        assert!(!text.contains(token.as_str()), "{case}: {text}");
    }
    assert!(
        sts_calls(&sts).await.is_empty(),
        "a refused token reached STS"
    );
    // Within the leeway is fine (and does reach STS).
    let skewed = rsa.sign(&with(json!({"nbf": START + 10, "exp": START - 10})));
    source.credentials(&request(&skewed)).await.unwrap();
    assert_eq!(sts_calls(&sts).await.len(), 1);
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_its_first_unknown_kid() {
    let [rsa, ..] = keys();
    let issuer = issuer(&jwks(&[rsa])).await;
    let verifier = TokenVerifier::builder(issuer.uri())
        .clock(clock())
        .min_refresh_interval(Duration::ZERO)
        .build()
        .await
        .unwrap();
    assert_eq!(verifier.key_ids(), ["rsa-1"]);
    let rotated = rotated_rsa().sign(&claims(&issuer.uri()));
    let token = ServiceAccountToken::decode(&rotated).unwrap();
    assert!(matches!(
        verifier.verify(&token).await,
        Err(VerifyError::Signature(SignatureError::UnknownKey { .. }))
    ));
    assert_eq!(jwks_fetches(&issuer).await, 2);

    // While the issuer is down an unknown kid is "try again" (500), not "forged" (400).
    issuer.reset().await;
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(
        matches!(error, VerifyError::KeysUnavailable(_)),
        "{error:?}"
    );
    assert_eq!(verifier.key_ids(), ["rsa-1"], "the cached keys stay");

    // The cluster publishes the new key next to the old one.
    issuer.reset().await;
    mount_issuer(&issuer, &jwks(&[rsa, rotated_rsa()])).await;
    let pod = verifier.verify(&token).await.unwrap();
    assert_eq!(pod.pod_name, "app-7d9f");
    assert_eq!(verifier.key_ids(), ["rsa-1", "rsa-2"]);
    // Known kids need no fetch.
    verifier.verify(&token).await.unwrap();
    assert_eq!(jwks_fetches(&issuer).await, 1, "one fetch since the reset");
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    let [rsa, ..] = keys();
    let issuer = issuer(&jwks(&[rsa])).await;
    let verifier = TokenVerifier::builder(issuer.uri())
        .clock(clock())
        .min_refresh_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    for n in 0..5 {
        let token = Signer::ec("ES256", &format!("junk-{n}")).sign(&claims(&issuer.uri()));
        let token = ServiceAccountToken::decode(&token).unwrap();
        assert!(verifier.verify(&token).await.is_err());
    }
    assert_eq!(jwks_fetches(&issuer).await, 1, "only the initial fetch");
}

#[tokio::test]
async fn keys_come_from_a_file_and_are_reread_on_schedule() {
    tokio::time::pause();
    let (logs, _capture) = logs::capture();
    let [rsa, es256, ..] = keys();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[rsa]).to_string()).unwrap();
    let issuer = "https://issuer.example.com";
    let verifier = TokenVerifier::builder(issuer)
        .jwks(JwksLocation::File(file.clone()))
        .clock(clock())
        .refresh_interval(Duration::from_secs(3600))
        .min_refresh_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let ec_token = ServiceAccountToken::decode(&es256.sign(&claims(issuer))).unwrap();
    let rsa_token = ServiceAccountToken::decode(&rsa.sign(&claims(issuer))).unwrap();
    verifier.verify(&rsa_token).await.unwrap();
    assert!(verifier.verify(&ec_token).await.is_err());

    std::fs::write(&file, jwks(&[es256]).to_string()).unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    // The schedule starts when the refresh task first runs, which may be after the advance:
    // the wait allows a second interval.
    eventually(
        Duration::from_secs(2 * 3600),
        "the scheduled re-read",
        async || verifier.key_ids() == ["ec-256"],
    )
    .await;
    verifier.verify(&ec_token).await.unwrap();
    // A broken file keeps the last good keys: checked once the scheduled re-read has failed.
    std::fs::write(&file, "{not json").unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    eventually(
        Duration::from_secs(2 * 3600),
        "the scheduled re-read of the broken file",
        async || logs.text().contains("scheduled JWKS refresh failed"),
    )
    .await;
    assert_eq!(verifier.key_ids(), ["ec-256"]);
    verifier.verify(&ec_token).await.unwrap();
}

#[tokio::test]
async fn a_missing_issuer_or_mismatched_discovery_fails_the_build() {
    let server = MockServer::start().await;
    let error = TokenVerifier::builder(server.uri())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(error, VerifyError::KeysUnavailable(_)),
        "{error:?}"
    );
    mount_issuer(&server, &jwks(&[&keys()[0]])).await;
    // The discovery document names `<uri>`, not `<uri>/`.
    let error = TokenVerifier::builder(format!("{}/", server.uri()))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(error, VerifyError::KeysUnavailable(_)),
        "{error:?}"
    );
    assert!(error.to_string().contains("another issuer"), "{error}");
    let error = TokenVerifier::builder(server.uri())
        .jwks(JwksLocation::Url(format!("{}/nothing", server.uri())))
        .build()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("404"), "{error}");
}

#[tokio::test]
async fn a_target_role_is_chained_with_the_eks_external_id_and_the_session_policy() {
    let [rsa, ..] = keys();
    let issuer = issuer(&jwks(&[rsa])).await;
    let sts = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sts_success("ASIAFIRST", ROLE))
        .up_to_n_times(1)
        .mount(&sts)
        .await;
    Mock::given(method("POST"))
        .respond_with(sts_success("ASIAPOD", TARGET_ROLE))
        .mount(&sts)
        .await;
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
    let mut entry = association();
    entry["targetRoleArn"] = json!(TARGET_ROLE);
    entry["disableSessionTags"] = json!(true);
    entry["policy"] = json!(policy);
    let source = source(verifier(&issuer).await, associations(&[entry]), &sts).await;

    let issued = source
        .credentials(&request(&rsa.sign(&claims(&issuer.uri()))))
        .await
        .unwrap();
    assert_eq!(issued.credentials().access_key_id, "ASIAPOD");
    assert_eq!(issued.account_id(), Some("444455556666"));

    let calls = sts_calls(&sts).await;
    assert_eq!(calls.len(), 2);
    let (first, first_auth) = &calls[0];
    assert_eq!(first["RoleArn"], ROLE);
    assert_eq!(first["DurationSeconds"], "900");
    assert!(
        !first
            .keys()
            .any(|k| k.starts_with("Tags.") || k.starts_with("Transitive"))
    );
    assert!(!first.contains_key("ExternalId") && !first.contains_key("Policy"));
    assert!(first_auth.contains("Credential=AKIDNODE/"));
    let (second, second_auth) = &calls[1];
    assert_eq!(second["RoleArn"], TARGET_ROLE);
    assert_eq!(second["DurationSeconds"], "3600");
    assert_eq!(
        second["ExternalId"],
        "eu-west-1/111122223333/lab/default/app"
    );
    assert_eq!(second["Policy"], policy);
    assert_eq!(second["RoleSessionName"], first["RoleSessionName"]);
    assert!(
        second_auth.contains("Credential=ASIAFIRST/"),
        "the target role is assumed with the first role's credentials: {second_auth}"
    );
}

#[tokio::test]
async fn an_explicit_external_id_and_policy_go_on_the_single_call() {
    let [rsa, ..] = keys();
    let issuer = issuer(&jwks(&[rsa])).await;
    let sts = sts().await;
    let mut entry = association();
    entry["externalId"] = json!("tenant-42");
    entry["policy"] = json!("{\"Version\":\"2012-10-17\",\"Statement\":[]}");
    let source = source_builder(verifier(&issuer).await, associations(&[entry]), &sts)
        .session_duration(Duration::from_secs(2 * 3600))
        .cluster_arn(
            "arn:aws:eks:eu-west-1:999988887777:cluster/lab"
                .parse()
                .unwrap(),
        )
        .build()
        .await
        .unwrap();
    source
        .credentials(&request(&rsa.sign(&claims(&issuer.uri()))))
        .await
        .unwrap();
    let calls = sts_calls(&sts).await;
    let (params, _) = &calls[0];
    assert_eq!(params["ExternalId"], "tenant-42");
    assert_eq!(
        params["Policy"],
        "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    );
    assert_eq!(params["DurationSeconds"], "7200");
    assert_eq!(
        params["Tags.member.1.Value"],
        "arn:aws:eks:eu-west-1:999988887777:cluster/lab"
    );
}

#[tokio::test]
async fn no_association_is_404_without_an_sts_call() {
    let [rsa, ..] = keys();
    let issuer = issuer(&jwks(&[rsa])).await;
    let sts = sts().await;
    let mut other = association();
    other["serviceAccount"] = json!("other");
    let source = source(verifier(&issuer).await, associations(&[other]), &sts).await;
    let error = source
        .credentials(&request(&rsa.sign(&claims(&issuer.uri()))))
        .await
        .unwrap_err();
    let agent = error.to_agent_error();
    assert_eq!(agent.status(), 404, "{error:?}");
    assert_eq!(error.code(), "ResourceNotFoundException");
    assert_eq!(error.class(), ErrorClass::Irrecoverable);
    assert!(sts_calls(&sts).await.is_empty());
}

#[tokio::test]
async fn sts_errors_keep_the_agents_statuses() {
    let [rsa, ..] = keys();
    let issuer = issuer(&jwks(&[rsa])).await;
    let token = rsa.sign(&claims(&issuer.uri()));
    for (sts_status, sts_code, status, code, class) in [
        (
            403,
            "AccessDenied",
            400,
            "AccessDeniedException",
            ErrorClass::Irrecoverable,
        ),
        (
            400,
            "Throttling",
            429,
            "ThrottlingException",
            ErrorClass::Recoverable,
        ),
        (
            400,
            "ValidationError",
            400,
            "InvalidParameterException",
            ErrorClass::Recoverable,
        ),
        (
            400,
            "ExpiredToken",
            500,
            "ExpiredToken",
            ErrorClass::Recoverable,
        ),
        (
            403,
            "RegionDisabledException",
            500,
            "RegionDisabledException",
            ErrorClass::Recoverable,
        ),
        (
            500,
            "InternalFailure",
            500,
            "InternalServerException",
            ErrorClass::Recoverable,
        ),
    ] {
        let sts = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(sts_error(sts_status, sts_code, "it failed"))
            .mount(&sts)
            .await;
        let source = source(
            verifier(&issuer).await,
            associations(&[association()]),
            &sts,
        )
        .await;
        let error = source.credentials(&request(&token)).await.unwrap_err();
        let agent = error.to_agent_error();
        assert_eq!(agent.status(), status, "{sts_code}: {error:?}");
        assert_eq!(error.code(), code, "{sts_code}");
        assert_eq!(error.class(), class, "{sts_code}");
        let body = agent.body();
        assert!(
            body.starts_with(&format!(
                "[req-err]: ({code}): STS AssumeRole failed ({sts_code}): it failed"
            )),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_association_file_hot_reloads_and_survives_a_bad_edit() {
    tokio::time::pause();
    let (logs, _capture) = logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("associations.json");
    std::fs::write(&file, json!({"associations": [association()]}).to_string()).unwrap();
    let store = FileAssociationStore::open_with_interval(&file, Duration::from_secs(10))
        .await
        .unwrap();
    let (cluster, ns, sa) = (
        CLUSTER.parse().unwrap(),
        "default".parse().unwrap(),
        "app".parse().unwrap(),
    );
    let key = AssociationKey {
        cluster: &cluster,
        namespace: &ns,
        service_account: &sa,
    };
    let role =
        |store: &FileAssociationStore| store.current().find(key).map(|a| a.role_arn.to_string());
    assert_eq!(role(&store).as_deref(), Some(ROLE));

    // A valid edit is taken at the next poll.
    let mut generation = store.generation();
    let mut edited = association();
    edited["roleArn"] = json!(TARGET_ROLE);
    std::fs::write(&file, json!([edited]).to_string()).unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    within(
        Duration::from_secs(60),
        "the valid edit",
        generation.changed(),
    )
    .await
    .unwrap();
    assert_eq!(*generation.borrow_and_update(), 2);
    assert_eq!(role(&store).as_deref(), Some(TARGET_ROLE));
    assert_eq!(
        store
            .association(key)
            .await
            .unwrap()
            .unwrap()
            .role_arn
            .as_str(),
        TARGET_ROLE
    );

    // A bad edit is refused and logged; the last good associations stay.
    let mut rejected = store.rejected();
    std::fs::write(&file, r#"{"associations": [{"clusterName": "lab"}]}"#).unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    within(
        Duration::from_secs(60),
        "the bad edit refused",
        rejected.changed(),
    )
    .await
    .unwrap();
    assert_eq!(role(&store).as_deref(), Some(TARGET_ROLE));
    assert!(
        logs.text().contains("keeping the last good associations"),
        "{}",
        logs.text()
    );
    // Logged once, not at every poll: a re-read of the unchanged bad file takes nothing.
    for _ in 0..6 {
        store.reload().await.unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    assert_eq!(*rejected.borrow(), 1);

    // Fixing the file brings it back. The polls of the bad file ran before this one, so the
    // counts below include them.
    std::fs::write(&file, json!([association()]).to_string()).unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    within(
        Duration::from_secs(60),
        "the fixed file",
        generation.changed(),
    )
    .await
    .unwrap();
    assert_eq!(role(&store).as_deref(), Some(ROLE));
    assert_eq!(*rejected.borrow(), 1);
    assert_eq!(
        logs.text()
            .matches("keeping the last good associations")
            .count(),
        1
    );

    // A file that does not parse at start is an error.
    std::fs::write(&file, "nope").unwrap();
    assert!(FileAssociationStore::open(&file).await.is_err());
}

#[tokio::test]
async fn the_agent_serves_self_managed_credentials_and_refuses_forgeries() {
    let (logs, _capture) = logs::capture();
    let [rsa, ..] = keys();
    let issuer = issuer(&jwks(&[rsa])).await;
    let sts = sts().await;
    let source = source(
        verifier(&issuer).await,
        associations(&[association()]),
        &sts,
    )
    .await;
    let router = AgentBuilder::new(CLUSTER.parse().unwrap(), source)
        .clock(clock())
        .into_router();
    let get = |token: &str| {
        http::Request::get("/v1/credentials")
            .header("host", "169.254.170.23")
            .header("authorization", token)
            .body(Body::empty())
            .unwrap()
    };
    let send = |request| {
        let router = router.clone();
        async move {
            let response: axum::response::Response = router.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };

    let token = rsa.sign(&claims(&issuer.uri()));
    let (status, body) = send(get(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        format!(
            r#"{{"AccessKeyId":"ASIAPOD","SecretAccessKey":"{POD_SECRET}","Token":"pod-session-token","AccountId":"111122223333","Expiration":"2023-11-14T23:13:20Z"}}"#
        )
    );
    // Cached: the second request makes no STS call.
    assert_eq!(send(get(&token)).await.0, 200);
    assert_eq!(sts_calls(&sts).await.len(), 1);

    let forged = Signer::ec("ES256", "rsa-1").sign(&claims(&issuer.uri()));
    let (status, body) = send(get(&forged)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        "[]: (InvalidTokenException): token signing key does not fit algorithm ES256, fault: client\n"
    );
    assert_eq!(sts_calls(&sts).await.len(), 1, "the forgery reached STS");

    let text = logs.text();
    for secret in [
        token.as_str(),
        forged.as_str(),
        POD_SECRET,
        NODE_SECRET,
        "pod-session-token",
    ] {
        assert!(!text.contains(secret), "a secret in the logs: {text}");
    }
    assert!(text.contains("refused a service-account token"), "{text}");
}

#[tokio::test]
async fn a_rotated_token_of_the_same_pod_is_served_from_its_entry_after_local_verification() {
    let issuer = issuer(&jwks(&[&keys()[1]])).await;
    let sts = sts().await;
    let verifier = verifier(&issuer).await;
    let source = source(verifier.clone(), associations(&[association()]), &sts).await;
    let cache = CredentialCache::builder(source)
        .clock(clock())
        .rotation_validator(Arc::new(verifier))
        .build();
    let first = keys()[1].sign(&claims(&issuer.uri()));
    cache.get(&request(&first)).await.unwrap();
    assert_eq!(sts_calls(&sts).await.len(), 1);

    // kubelet's rotation: new jti and times, same pod.
    let mut rotated = claims(&issuer.uri());
    rotated["jti"] = json!("7d3c2f0b");
    rotated["iat"] = json!(START + 60);
    rotated["exp"] = json!(START + 86_460);
    let rotated = keys()[1].sign(&rotated);
    let served = cache.get(&request(&rotated)).await.unwrap();
    assert_eq!(served.credentials().access_key_id, "ASIAPOD");
    assert_eq!(
        sts_calls(&sts).await.len(),
        1,
        "no STS call for the rotation"
    );

    // Another service account of the same pod uid is not served from the entry: its own
    // path (here: no association, 404 without STS).
    let mut other = claims(&issuer.uri());
    other["jti"] = json!("0a1b2c3d");
    other["kubernetes.io"]["serviceaccount"]["name"] = json!("admin");
    other["sub"] = json!("system:serviceaccount:default:admin");
    let other = keys()[1].sign(&other);
    assert!(cache.get(&request(&other)).await.is_err());
    // A token by a key the issuer does not publish is refused as well.
    let mut forged = claims(&issuer.uri());
    forged["jti"] = json!("feedbeef");
    let forged = rotated_rsa().sign(&forged);
    assert!(cache.get(&request(&forged)).await.is_err());
    assert_eq!(sts_calls(&sts).await.len(), 1);
}
