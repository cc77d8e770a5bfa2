//! Minting projected service-account tokens for tests and the demo.
//!
//! [`mint_token`] writes a JWT with the claim layout kubelet projects for an EKS Pod Identity
//! token (contracts §4): header `{"alg":"RS256","kid":…}`, claims `iss`, `sub`
//! (`system:serviceaccount:<namespace>:<name>`), `aud` (`["pods.eks.amazonaws.com"]`), `exp`,
//! `iat`, `nbf`, `jti` and `kubernetes.io` (namespace, service account, pod, node).
//!
//! **The signature segment is random bytes.** Neither the reference agent nor this crate's agent
//! nor the simulator verifies token signatures (the agent only decodes and checks times; real
//! EKS Auth verifies against the cluster's OIDC keys), so a minted token is accepted here and
//! would be refused by AWS.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_core::time::to_epoch;
use pod_identity_core::{
    association::Namespace, association::ServiceAccountName, secret::SecretString,
};

/// The projected token lifetime EKS asks kubelet for (`expirationSeconds: 86400`).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

/// What goes into a minted token. Start from [`PodToken::new`] and override fields as needed.
#[derive(Debug, Clone)]
pub struct PodToken {
    /// `iss`: the cluster's OIDC issuer.
    pub issuer: String,
    /// The pod's namespace (`sub` and `kubernetes.io.namespace`).
    pub namespace: Namespace,
    /// The pod's service account (`sub` and `kubernetes.io.serviceaccount.name`).
    pub service_account: ServiceAccountName,
    /// `kubernetes.io.serviceaccount.uid`.
    pub service_account_uid: String,
    /// `kubernetes.io.pod.name`.
    pub pod_name: String,
    /// `kubernetes.io.pod.uid`.
    pub pod_uid: String,
    /// `kubernetes.io.node.name`.
    pub node_name: String,
    /// `kubernetes.io.node.uid`.
    pub node_uid: String,
    /// `aud`, always written as an array.
    pub audience: Vec<String>,
    /// `iat` and `nbf`.
    pub issued_at: SystemTime,
    /// `exp` is `issued_at + lifetime`.
    pub lifetime: Duration,
    /// The header's `kid`.
    pub kid: String,
    /// `jti`.
    pub jti: String,
}

impl PodToken {
    /// A token for `pod_name` running as `namespace/service_account`, issued at `issued_at`, with
    /// the EKS audience, a 24 h lifetime, and made-up (but well-formed) issuer, uids and key id.
    pub fn new(
        namespace: Namespace,
        service_account: ServiceAccountName,
        pod_name: impl Into<String>,
        issued_at: SystemTime,
    ) -> Self {
        Self {
            issuer: "https://oidc.eks.us-west-2.amazonaws.com/id/5E1A5D1E5E1A5D1E5E1A5D1E5E1A5D1E"
                .to_owned(),
            namespace,
            service_account,
            service_account_uid: uuid(),
            pod_name: pod_name.into(),
            pod_uid: uuid(),
            node_name: "ip-192-168-0-10.us-west-2.compute.internal".to_owned(),
            node_uid: uuid(),
            audience: vec![pod_identity_core::endpoint::AUDIENCE.to_owned()],
            issued_at,
            lifetime: DEFAULT_TOKEN_LIFETIME,
            kid: URL_SAFE_NO_PAD.encode(random_bytes(32)),
            jti: uuid(),
        }
    }

    /// The same token with another lifetime.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// The same token with another pod uid.
    pub fn with_pod_uid(mut self, pod_uid: impl Into<String>) -> Self {
        self.pod_uid = pod_uid.into();
        self
    }

    /// The same token with another audience.
    pub fn with_audience(mut self, audience: Vec<String>) -> Self {
        self.audience = audience;
        self
    }
}

/// Mints a JWT with the real projected-token layout and a random (unverifiable) signature.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use pod_identity_agent_lib::simulator::{PodToken, mint_token};
/// use pod_identity_core::token::ServiceAccountToken;
///
/// let issued_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let spec = PodToken::new("default".parse()?, "app".parse()?, "app-7d9f", issued_at);
/// let token = mint_token(&spec);
/// let decoded = ServiceAccountToken::decode(token.expose_secret())?;
/// assert_eq!(decoded.claims().sub.as_deref(), Some("system:serviceaccount:default:app"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn mint_token(spec: &PodToken) -> SecretString {
    let (iat, _) = to_epoch(spec.issued_at);
    let (exp, _) = to_epoch(spec.issued_at + spec.lifetime);
    let header = serde_json::json!({ "alg": "RS256", "kid": spec.kid });
    let claims = serde_json::json!({
        "aud": spec.audience,
        "exp": exp,
        "iat": iat,
        "iss": spec.issuer,
        "jti": spec.jti,
        "kubernetes.io": {
            "namespace": spec.namespace.as_str(),
            "node": { "name": spec.node_name, "uid": spec.node_uid },
            "pod": { "name": spec.pod_name, "uid": spec.pod_uid },
            "serviceaccount": { "name": spec.service_account.as_str(), "uid": spec.service_account_uid },
        },
        "nbf": iat,
        "sub": format!("system:serviceaccount:{}:{}", spec.namespace, spec.service_account),
    });
    // An RS256 signature over a 2048-bit key is 256 bytes.
    let signature = random_bytes(256);
    SecretString::new(format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// A JWT with header `{"alg":"RS256","kid":"test"}`, the given claims JSON and a placeholder
/// signature (nothing here verifies signatures).
///
/// ```
/// use pod_identity_agent_lib::simulator::unsigned_token;
/// use pod_identity_core::token::ServiceAccountToken;
///
/// let raw = unsigned_token(r#"{"sub":"system:serviceaccount:default:app","exp":4102444800}"#);
/// let token = ServiceAccountToken::decode(&raw).unwrap();
/// assert_eq!(token.claims().exp, Some(4_102_444_800));
/// ```
pub fn unsigned_token(claims_json: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"test"}"#),
        URL_SAFE_NO_PAD.encode(claims_json),
        URL_SAFE_NO_PAD.encode("not-a-signature")
    )
}

pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    std::iter::repeat_with(|| fastrand::u8(..))
        .take(n)
        .collect()
}

/// A random RFC 4122 version 4 UUID, lower-case.
pub(crate) fn uuid() -> String {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pod_identity_core::token::ServiceAccountToken;

    fn spec() -> PodToken {
        PodToken::new(
            "payments".parse().unwrap(),
            "api".parse().unwrap(),
            "api-5c8d",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    #[test]
    fn core_decodes_the_minted_claims() {
        let spec = spec().with_pod_uid("pod-uid-1");
        let token = ServiceAccountToken::decode(mint_token(&spec).expose_secret()).unwrap();
        assert_eq!(token.header().alg, "RS256");
        assert_eq!(token.header().kid.as_deref(), Some(spec.kid.as_str()));
        let claims = token.claims();
        assert_eq!(claims.aud, vec!["pods.eks.amazonaws.com".to_owned()]);
        assert_eq!(claims.iat, Some(1_700_000_000));
        assert_eq!(claims.nbf, Some(1_700_000_000));
        assert_eq!(claims.exp, Some(1_700_086_400));
        assert_eq!(claims.jti.as_deref(), Some(spec.jti.as_str()));
        let (ns, sa) = claims.service_account().unwrap();
        assert_eq!((ns.as_str(), sa.as_str()), ("payments", "api"));
        let k8s = claims.kubernetes.as_ref().unwrap();
        assert_eq!(k8s.namespace.as_deref(), Some("payments"));
        let pod = k8s.pod.as_ref().unwrap();
        assert_eq!(
            (pod.name.as_str(), pod.uid.as_str()),
            ("api-5c8d", "pod-uid-1")
        );
        assert_eq!(k8s.node.as_ref().unwrap().name, spec.node_name);
        assert_eq!(k8s.service_account.as_ref().unwrap().name, "api");
    }

    #[test]
    fn the_lifetime_sets_exp_and_time_validation_follows_it() {
        let spec = spec().with_lifetime(Duration::from_secs(60));
        let token = ServiceAccountToken::decode(mint_token(&spec).expose_secret()).unwrap();
        assert_eq!(token.claims().exp, Some(1_700_000_060));
        assert!(
            token
                .validate_time(spec.issued_at + Duration::from_secs(59))
                .is_ok()
        );
        assert!(
            token
                .validate_time(spec.issued_at + Duration::from_secs(60))
                .is_err()
        );
    }

    #[test]
    fn uuids_are_version_4() {
        let id = uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid(), id);
    }
}
