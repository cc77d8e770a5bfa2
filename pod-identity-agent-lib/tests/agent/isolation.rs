//! Isolation: no pod ever gets another pod's credentials. Tokens that differ in one byte, two
//! pods of one service account, a replayed token after its association was deleted, and
//! tokens evicted from a full cache, against the SigV4-verifying simulator over loopback.
//!
//! Every credential served is traced back to the simulator session it came from, whose token
//! digest must be that of the token presented.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::http::{access_key, credentials as http};
use crate::support::{
    AgentBuilder, CredentialCache, CredentialRequest, CredentialSource, EksAuthSimulator,
    EksAuthSource, IssuedCredentials, Metrics, Serving, SimulatorServer, SourceError,
    eks_auth_source, eventually, hex_digest, minted_token as token, serve_agent, serve_blocks,
    simulator,
};

async fn source(server: &SimulatorServer) -> EksAuthSource {
    eks_auth_source(server.endpoint_url())
        .aws_client(|aws| aws.max_attempts(1))
        .build()
        .await
        .unwrap()
}

/// The assembled agent around `source`.
async fn agent(source: EksAuthSource) -> Serving {
    serve_agent(AgentBuilder::new("demo".parse().unwrap(), source)).await
}

/// The credentials served for `token` were issued for exactly that token.
fn assert_issued_for(simulator: &EksAuthSimulator, body: &str, token: &str) -> String {
    let key = access_key(body);
    let session = simulator
        .session(&key)
        .unwrap_or_else(|| panic!("{key} was not issued by this simulator"));
    assert_eq!(
        session.token_digest,
        hex_digest(token),
        "credentials of another token"
    );
    let served: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        served["SecretAccessKey"].as_str().unwrap(),
        session.secret_access_key.expose_secret()
    );
    assert_eq!(
        served["Token"].as_str().unwrap(),
        session.session_token.expose_secret()
    );
    key
}

#[tokio::test]
async fn tokens_differing_in_one_byte_never_share_credentials() {
    let (simulator, server) = simulator(&["app"]).await;
    let agent = agent(source(&server).await).await;
    let addr = agent.addr();
    let original = token("app", "one-byte");
    let (status, body) = http(addr, &original).await;
    assert_eq!(status, 200, "{body}");
    let original_key = assert_issued_for(&simulator, &body, &original);

    // One character changed at positions spread over all three segments. Each variant is
    // refused (it no longer decodes) or gets credentials of its own, never the original's.
    let bytes = original.as_bytes();
    let mut keys = HashSet::from([original_key.clone()]);
    let mut served_variants = 0;
    for position in (0..bytes.len())
        .step_by(bytes.len() / 40 + 1)
        .chain([bytes.len() - 1])
    {
        if bytes[position] == b'.' {
            continue;
        }
        let mut variant = bytes.to_vec();
        variant[position] = if bytes[position] == b'A' { b'B' } else { b'A' };
        let variant = String::from_utf8(variant).unwrap();
        let (status, body) = http(addr, &variant).await;
        match status {
            200 => {
                let key = assert_issued_for(&simulator, &body, &variant);
                assert!(keys.insert(key), "a variant got credentials already served");
                served_variants += 1;
            }
            400 => assert!(!body.contains("ASIA"), "{body}"),
            other => panic!("position {position}: {other} {body}"),
        }
    }
    // Signature bytes are not checked by the agent or the simulator, so those variants got
    // their own credentials.
    assert!(served_variants >= 1);
    // The original is still served its own (cached) credentials.
    let (_, body) = http(addr, &original).await;
    assert_eq!(access_key(&body), original_key);
}

#[tokio::test]
async fn two_pods_of_one_service_account_keep_their_own_credentials_under_concurrency() {
    let (simulator, server) = simulator(&["app"]).await;
    let agent = agent(source(&server).await).await;
    let addr = agent.addr();
    let pods: Vec<(String, String)> = (0..4)
        .map(|i| {
            let pod = format!("twin-{i}");
            (pod.clone(), token("app", &pod))
        })
        .collect();
    let mut requests = tokio::task::JoinSet::new();
    for round in 0..25 {
        for (pod, token) in &pods {
            let (pod, token) = (pod.clone(), token.clone());
            requests.spawn(async move { (round, pod, token.clone(), http(addr, &token).await) });
        }
    }
    let mut per_pod: HashMap<String, HashSet<String>> = HashMap::new();
    while let Some(answer) = requests.join_next().await {
        let (_, pod, token, (status, body)) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        let key = assert_issued_for(&simulator, &body, &token);
        assert_eq!(simulator.session(&key).unwrap().pod_name, pod);
        per_pod.entry(pod).or_default().insert(key);
    }
    // One set of credentials per pod (single flight), different for every pod.
    assert!(per_pod.values().all(|keys| keys.len() == 1), "{per_pod:?}");
    let all: HashSet<_> = per_pod.values().flatten().collect();
    assert_eq!(all.len(), pods.len());
    assert_eq!(simulator.request_count(), pods.len() as u64);
}

/// EKS Auth before and after an association is deleted: two simulators of one cluster, the
/// second without the association.
struct Switching {
    before: EksAuthSource,
    after: EksAuthSource,
    deleted: Arc<AtomicBool>,
}

impl CredentialSource for Switching {
    async fn credentials(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, SourceError> {
        if self.deleted.load(Ordering::SeqCst) {
            self.after.credentials(request).await
        } else {
            self.before.credentials(request).await
        }
    }
}

#[tokio::test]
async fn a_replayed_token_of_a_deleted_association_gets_nothing_once_renewal_sees_it() {
    let (before, before_server) = simulator(&["app", "other"]).await;
    let (after, after_server) = simulator(&["other"]).await;
    let deleted = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::new();
    // Renew every 300 ms so the deletion is seen within the test.
    let cache = CredentialCache::builder(Switching {
        before: source(&before_server).await,
        after: source(&after_server).await,
        deleted: deleted.clone(),
    })
    .max_retention(Duration::from_millis(300))
    .retry_interval(Duration::from_millis(300), Duration::from_millis(100))
    .renewal_qps(0)
    .client_miss_budget(0, 0)
    .metrics(metrics.clone())
    .build();
    let agent = serve_blocks(cache.clone()).await;
    let addr = agent.addr();

    let app = token("app", "deleted-pod");
    let other = token("other", "kept-pod");
    let (status, body) = http(addr, &app).await;
    assert_eq!(status, 200, "{body}");
    let app_key = assert_issued_for(&before, &body, &app);
    let (status, body) = http(addr, &other).await;
    assert_eq!(status, 200, "{body}");
    assert_issued_for(&before, &body, &other);

    deleted.store(true, Ordering::SeqCst);
    // Until the next renewal the credentials already issued are served (they stay valid at
    // AWS too); from then on the token gets EKS Auth's 404, never old or foreign credentials.
    eventually(
        Duration::from_secs(10),
        "the deletion to be seen",
        async || {
            let (status, body) = http(addr, &app).await;
            match status {
                200 => assert_eq!(access_key(&body), app_key),
                404 => assert!(body.contains("(ResourceNotFoundException)"), "{body}"),
                other => panic!("{other}: {body}"),
            }
            status == 404
        },
    )
    .await;
    for _ in 0..5 {
        let (status, body) = http(addr, &app).await;
        assert_eq!(status, 404, "{body}");
        assert!(!body.contains(&app_key));
    }
    assert!(
        metrics.encode().contains(
            "pod_identity_cache_errors{type=\"NonRecoverable\",code=\"ResourceNotFoundException\"}"
        ),
        "{}",
        metrics.encode()
    );
    // The other pod, still associated, is renewed from the new EKS Auth and served.
    let mut renewed = String::new();
    eventually(
        Duration::from_secs(10),
        "the other pod renewed from the new EKS Auth",
        async || {
            let (status, body) = http(addr, &other).await;
            assert_eq!(status, 200, "{body}");
            renewed = body;
            after.session(&access_key(&renewed)).is_some()
        },
    )
    .await;
    assert_issued_for(&after, &renewed, &other);
    assert_eq!(cache.len(), 1, "only the associated pod is cached");
}

#[tokio::test]
async fn a_full_cache_forgets_evicted_tokens_and_never_serves_their_credentials_again() {
    let (simulator, server) = simulator(&["app"]).await;
    let metrics = Metrics::new();
    let cache = CredentialCache::builder(source(&server).await)
        .max_entries(5)
        .client_miss_budget(0, 0)
        .metrics(metrics.clone())
        .build();
    let agent = serve_blocks(cache.clone()).await;
    let addr = agent.addr();
    let tokens: Vec<String> = (0..20)
        .map(|i| token("app", &format!("evict-{i}")))
        .collect();
    let mut first_keys = Vec::new();
    for token in &tokens {
        let (status, body) = http(addr, token).await;
        assert_eq!(status, 200, "{body}");
        first_keys.push(assert_issued_for(&simulator, &body, token));
        assert!(cache.len() <= 5);
    }
    assert_eq!(cache.len(), 5);
    assert!(
        metrics
            .encode()
            .contains("pod_identity_cache_state{state=\"evicted\"} 15")
    );
    // An evicted token is a miss: EKS Auth is asked again and new credentials are issued.
    let (_, body) = http(addr, &tokens[0]).await;
    let again = assert_issued_for(&simulator, &body, &tokens[0]);
    assert_ne!(again, first_keys[0]);
    assert_eq!(simulator.token_request_count(&tokens[0]), 2);
    // A token still cached is a hit.
    let (_, body) = http(addr, &tokens[19]).await;
    assert_eq!(access_key(&body), first_keys[19]);
    assert_eq!(simulator.token_request_count(&tokens[19]), 1);
}
