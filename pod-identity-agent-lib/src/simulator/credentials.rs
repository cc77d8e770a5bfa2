//! The node's credentials and the random credential material the simulator issues.

use pod_identity_core::secret::SecretString;

use super::random_string;
use super::token::random_bytes;

/// The credentials of the node: what the agent signs its EKS Auth calls with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCredentials {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: Option<SecretString>,
}

impl NodeCredentials {
    /// Long-term credentials (no session token).
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<SecretString>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// Fresh random long-term credentials (`AKIA…`).
    pub fn random() -> Self {
        Self::new(
            format!("AKIA{}", random_string(16, ACCESS_KEY_ALPHABET)),
            random_secret(),
        )
    }

    /// The same credentials with a session token, as an instance role's would have.
    pub fn with_session_token(mut self, session_token: impl Into<SecretString>) -> Self {
        self.session_token = Some(session_token.into());
        self
    }

    /// The access key id.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key.
    pub fn secret_access_key(&self) -> &SecretString {
        &self.secret_access_key
    }

    /// The session token, if any.
    pub fn session_token(&self) -> Option<&SecretString> {
        self.session_token.as_ref()
    }
}

pub(crate) const ACCESS_KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A 40-character secret access key.
pub(crate) fn random_secret() -> SecretString {
    SecretString::new(random_string(40, SECRET_ALPHABET))
}

/// A session token: opaque, base64, about as long as STS's.
pub(crate) fn random_session_token() -> SecretString {
    use base64::Engine as _;
    let mut bytes = b"IQoJb3JpZ2luX2Vj".to_vec();
    bytes.extend(random_bytes(420));
    SecretString::new(base64::engine::general_purpose::STANDARD.encode(bytes))
}
