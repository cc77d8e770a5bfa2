//! The cluster: its service-account signing key and a loopback Kubernetes API server.

use std::net::SocketAddr;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_core::secret::SecretString;

use crate::{BoxError, loopback};

/// The cluster's service-account signing key (ES256), and a loopback Kubernetes API server
/// answering `/version` and `/openid/v1/jwks` with it.
pub(crate) struct ClusterKeys {
    key: Arc<EcdsaKeyPair>,
}

impl ClusterKeys {
    const KID: &'static str = "demo-cluster-key-1";

    pub(crate) fn generate() -> Result<Self, BoxError> {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| "cannot generate the cluster's signing key")?;
        Ok(Self { key: Arc::new(key) })
    }

    /// `token` (a minted JWT) signed with this key: its claims under an ES256 header.
    pub(crate) fn sign(&self, token: &SecretString) -> Result<SecretString, BoxError> {
        let claims = token
            .expose_secret()
            .split('.')
            .nth(1)
            .ok_or("a minted token without claims")?;
        let header = serde_json::json!({"alg": "ES256", "kid": Self::KID}).to_string();
        let signed = format!("{}.{claims}", URL_SAFE_NO_PAD.encode(header));
        let signature = self
            .key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .map_err(|_| "cannot sign the pod's token")?;
        Ok(SecretString::new(format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )))
    }

    fn jwks(&self) -> String {
        // An uncompressed P-256 point: 0x04, x, y.
        let point = self.key.public_key().as_ref();
        let (x, y) = point
            .get(1..)
            .unwrap_or_default()
            .split_at(point.len().saturating_sub(1) / 2);
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": Self::KID,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
        .to_string()
    }

    pub(crate) async fn serve_api(&self) -> Result<SocketAddr, BoxError> {
        use axum::http::header::CONTENT_TYPE;
        let jwks = self.jwks();
        let router = axum::Router::new()
            .route(
                "/version",
                axum::routing::get(|| async {
                    (
                        [(CONTENT_TYPE, "application/json")],
                        r#"{"major":"1","minor":"34","gitVersion":"v1.34.0"}"#,
                    )
                }),
            )
            .route(
                "/openid/v1/jwks",
                axum::routing::get(
                    move || async move { ([(CONTENT_TYPE, "application/json")], jwks) },
                ),
            );
        let listener = tokio::net::TcpListener::bind(loopback(0)?).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(addr)
    }
}
