//! Tokens, upstream answers and upstreams used by several test files.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::{SystemTimeSource, TimeSource};

/// The node's signing key, as the simulator and the wiremock upstreams know it.
pub const NODE_KEY: &str = "AKIDNODE";
pub const NODE_SECRET: &str = "node-secret";

/// The system clock: tokens and SigV4 signatures in these tests follow it.
pub fn now() -> SystemTime {
    SystemTimeSource::new().now()
}

pub fn now_secs() -> i64 {
    i64::try_from(now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// An unsigned JWT (a fixed fake signature) with `header` and `claims`.
pub fn jwt(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// An unsigned projected service-account token of pod `pod` of `default/app`, valid for a day
/// from now.
pub fn pod_token(pod: &str) -> String {
    let now = now_secs();
    jwt(
        &serde_json::json!({"alg": "RS256", "kid": "k"}),
        &serde_json::json!({
            "aud": ["pods.eks.amazonaws.com"],
            "exp": now + 86_400,
            "iat": now,
            "nbf": now,
            "sub": "system:serviceaccount:default:app",
            "kubernetes.io": {"namespace": "default", "pod": {"name": pod, "uid": format!("uid-{pod}")}}
        }),
    )
}

/// The lowercase hex SHA-256 of `token`, as the simulator records it per session.
pub fn hex_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(feature = "eks-auth")]
pub use eks_auth::*;

#[cfg(feature = "eks-auth")]
mod eks_auth {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use aws_sdk_eksauth::config::Credentials;
    use wiremock::matchers::{method, path};
    use wiremock::{Match, Mock, MockServer, Request, Respond, ResponseTemplate};

    use super::{NODE_KEY, NODE_SECRET, now};
    use crate::support::{EksAuthSource, EksAuthSourceBuilder};

    /// The EKS Auth path of cluster `demo`.
    pub const EKS_AUTH_PATH: &str = "/clusters/demo/assume-role-for-pod-identity";

    /// An EKS Auth source for `endpoint` in us-west-2, signing with the node key; one attempt
    /// may take 10 s.
    pub fn eks_auth_source(endpoint: impl Into<String>) -> EksAuthSourceBuilder {
        EksAuthSource::builder().aws_client(|aws| {
            aws.region("us-west-2")
                .endpoint_url(endpoint)
                .credentials_provider(Credentials::new(NODE_KEY, NODE_SECRET, None, None, "node"))
                .attempt_timeout(Duration::from_secs(10))
                // Generous: the machine may be busy; only timeout tests rely on timing out.
                .connect_timeout(Duration::from_secs(5))
        })
    }

    /// A restJson1 `AssumeRoleForPodIdentity` answer with credentials `access_key_id`
    /// (secret `secret-key-of-<id>`, session token `session-token-of-<id>`) expiring at
    /// `expiration`.
    pub fn success_body(access_key_id: &str, expiration: SystemTime) -> serde_json::Value {
        serde_json::json!({
            "subject": {"namespace": "default", "serviceAccount": "app"},
            "audience": "pods.eks.amazonaws.com",
            "podIdentityAssociation": {
                "associationArn": "arn:aws:eks:us-west-2:111122223333:podidentityassociation/demo/a-abcdefghijklmnopq",
                "associationId": "a-abcdefghijklmnopq"
            },
            "assumedRoleUser": {
                "arn": "arn:aws:sts::111122223333:assumed-role/app/eks-demo-p-1234",
                "assumeRoleId": "AROAEXAMPLE:eks-demo-p-1234"
            },
            "credentials": {
                "sessionToken": format!("session-token-of-{access_key_id}"),
                "secretAccessKey": format!("secret-key-of-{access_key_id}"),
                "accessKeyId": access_key_id,
                "expiration": expiration.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
            }
        })
    }

    /// The node's name, instance id and zone a source may send to EKS Auth.
    pub const NODE_DETAILS: NodeDetails = NodeDetails {
        eks_node_name: "ip-10-0-0-1.us-west-2.compute.internal",
        instance_id: "i-0123456789abcdef0",
        zone: "usw2-az1",
    };

    /// See [`NODE_DETAILS`].
    pub struct NodeDetails {
        pub eks_node_name: &'static str,
        pub instance_id: &'static str,
        pub zone: &'static str,
    }

    impl NodeDetails {
        /// `source`, sending these details.
        pub fn sent_by(&self, source: EksAuthSourceBuilder) -> EksAuthSourceBuilder {
            source
                .eks_node_name(self.eks_node_name)
                .instance_id(self.instance_id)
                .zone(self.zone)
        }

        /// The details as they appear in the request body, beside `token`.
        pub fn request_body(&self, token: &str) -> serde_json::Value {
            serde_json::json!({
                "token": token,
                "eksNodeName": self.eks_node_name,
                "instanceId": self.instance_id,
                "zone": self.zone
            })
        }
    }

    /// A wiremock EKS Auth giving every call of cluster `demo` `answer` (mocks mounted on it
    /// later answer only when this one does not match).
    pub async fn eks_auth_answering(answer: ResponseTemplate) -> MockServer {
        let eks = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(EKS_AUTH_PATH))
            .respond_with(answer)
            .mount(&eks)
            .await;
        eks
    }

    /// Matches a request signed with SigV4 for service `eks-auth` in us-west-2 with the node
    /// key ([`NODE_KEY`]).
    pub struct SignedForEksAuth;

    impl Match for SignedForEksAuth {
        fn matches(&self, request: &Request) -> bool {
            request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.starts_with(&format!("AWS4-HMAC-SHA256 Credential={NODE_KEY}/"))
                        && v.contains("/us-west-2/eks-auth/aws4_request")
                })
        }
    }

    /// A 200 with credentials `access_key_id` living `lifetime` from now.
    pub fn ok(access_key_id: &str, lifetime: Duration) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(success_body(access_key_id, now() + lifetime))
    }

    /// An EKS Auth error answer: `code` in `x-amzn-errortype`, request id `req-1`.
    pub fn eks_error(status: u16, code: &str) -> ResponseTemplate {
        ResponseTemplate::new(status)
            .insert_header("x-amzn-errortype", code)
            .insert_header("x-amzn-requestid", "req-1")
            .set_body_json(serde_json::json!({"message": format!("{code} happened")}))
    }

    /// A wiremock EKS Auth whose answer the test switches, counting and timing the calls.
    #[derive(Clone)]
    pub struct Upstream {
        answer: Arc<Mutex<ResponseTemplate>>,
        calls: Arc<Mutex<Vec<tokio::time::Instant>>>,
    }

    impl Upstream {
        pub async fn start(initial: ResponseTemplate) -> (Self, MockServer) {
            let upstream = Self {
                answer: Arc::new(Mutex::new(initial)),
                calls: Arc::default(),
            };
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(upstream.clone())
                .mount(&server)
                .await;
            (upstream, server)
        }

        pub fn set(&self, answer: ResponseTemplate) {
            *self.answer.lock().unwrap() = answer;
        }

        pub fn calls(&self) -> usize {
            self.calls.lock().unwrap().len()
        }

        pub fn call_times(&self) -> Vec<tokio::time::Instant> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Respond for Upstream {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            self.calls.lock().unwrap().push(tokio::time::Instant::now());
            self.answer.lock().unwrap().clone()
        }
    }
}

#[cfg(feature = "simulator")]
pub use simulator::*;

#[cfg(feature = "simulator")]
mod simulator {
    use super::{NODE_KEY, NODE_SECRET, now};
    use crate::support::{
        EksAuthSimulator, NodeCredentials, PodToken, SimulatorServer, mint_token,
    };

    /// A simulator of cluster `demo` knowing the node key, with each of `service_accounts` of
    /// namespace `default` associated with role `<service account>`, serving on 127.0.0.1.
    pub async fn simulator(service_accounts: &[&str]) -> (EksAuthSimulator, SimulatorServer) {
        let mut builder = EksAuthSimulator::builder()
            .cluster_name("demo".parse().unwrap())
            .node_credentials(NodeCredentials::new(NODE_KEY, NODE_SECRET));
        for service_account in service_accounts {
            builder = builder.associate(
                "default".parse().unwrap(),
                service_account.parse().unwrap(),
                format!("arn:aws:iam::111122223333:role/{service_account}")
                    .parse()
                    .unwrap(),
            );
        }
        let simulator = builder.build().unwrap();
        let server = simulator
            .serve("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        (simulator, server)
    }

    /// A token minted for pod `pod` of `default/<service_account>`, valid for a day from now.
    pub fn minted_token(service_account: &str, pod: &str) -> String {
        mint_token(&PodToken::new(
            "default".parse().unwrap(),
            service_account.parse().unwrap(),
            pod,
            now(),
        ))
        .expose_secret()
        .to_owned()
    }
}
