//! The provider's error type.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use aws_credential_types::provider::error::CredentialsError;

/// What went wrong, for callers that act on it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No credentials URI is configured.
    NotConfigured,
    /// A setting is present but wrong (bad URI, disallowed host, bad token bytes, token file
    /// empty or too large, https without the `rustls` feature).
    InvalidConfiguration,
    /// The token file could not be read.
    TokenFile,
    /// The credentials URI's host name could not be resolved.
    Resolve,
    /// Connecting to or talking with the agent failed (including timeouts).
    Transport,
    /// The agent answered with an error status.
    AgentStatus,
    /// The agent answered 200 with a body that is not credentials.
    MalformedResponse,
    /// The agent answered 200 with an error document (`{"Code": ..., "Message": ...}`).
    AgentError,
}

/// Why loading credentials failed. Cheap to clone (callers waiting on the same fetch share it).
///
/// Callers of [`ProvideCredentials`](aws_credential_types::provider::ProvideCredentials) see a
/// [`CredentialsError`]: `not_loaded` when the provider is not configured (so a chain moves on),
/// `invalid_configuration` when it is configured but wrong, `provider_error` otherwise. This
/// [`Error`] is its `source()`, and can be downcast to read the [`ErrorKind`]. No message
/// ever contains the authorization token or a secret key.
#[derive(Clone)]
pub struct Error(Arc<Inner>);

struct Inner {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self(Arc::new(Inner {
            kind,
            message: message.into(),
            status: None,
            source: None,
        }))
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        Self(Arc::new(Inner {
            kind,
            message: message.into(),
            status: None,
            source: Some(source.into()),
        }))
    }

    pub(crate) fn agent_status(status: u16, message: impl Into<String>) -> Self {
        Self(Arc::new(Inner {
            kind: ErrorKind::AgentStatus,
            message: message.into(),
            status: Some(status),
            source: None,
        }))
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The agent's HTTP status, for [`ErrorKind::AgentStatus`].
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.0.kind)
            .field("message", &self.0.message)
            .field("status", &self.0.status)
            .field("source", &self.0.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

impl From<Error> for CredentialsError {
    fn from(error: Error) -> Self {
        match error.kind() {
            ErrorKind::NotConfigured => CredentialsError::not_loaded(error),
            ErrorKind::InvalidConfiguration => CredentialsError::invalid_configuration(error),
            _ => CredentialsError::provider_error(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_credentials_errors() {
        let not_loaded = CredentialsError::from(Error::new(ErrorKind::NotConfigured, "x"));
        assert!(matches!(
            not_loaded,
            CredentialsError::CredentialsNotLoaded(_)
        ));
        let invalid = CredentialsError::from(Error::new(ErrorKind::InvalidConfiguration, "x"));
        assert!(matches!(invalid, CredentialsError::InvalidConfiguration(_)));
        let other = CredentialsError::from(Error::agent_status(403, "x"));
        assert!(matches!(other, CredentialsError::ProviderError(_)));
    }
}
