//! Secrets as a type.
//!
//! Contract: a [`SecretString`] holds a token, a secret access key or a session token. Its memory
//! is zeroed when it is dropped, and its `Debug` and `Display` print `** redacted **`, so a secret
//! cannot reach a log line or an error message by accident. The only way to the value is the
//! explicitly named [`SecretString::expose_secret`].

use std::fmt;

use zeroize::Zeroizing;

/// The text `Debug` and `Display` print in place of a secret.
pub const REDACTED: &str = "** redacted **";

/// A zeroize-on-drop string whose `Debug` and `Display` print `** redacted **`.
///
/// ```
/// use pod_identity_core::secret::SecretString;
///
/// let secret = SecretString::new("wJalrXUtnFEMI/K7MDENG");
/// assert_eq!(format!("{secret:?}"), "** redacted **");
/// assert_eq!(secret.to_string(), "** redacted **");
/// assert_eq!(secret.expose_secret(), "wJalrXUtnFEMI/K7MDENG");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret value. Call this only where the value leaves the process (a header, a body).
    pub fn expose_secret(&self) -> &str {
        self.0.as_str()
    }

    /// Length of the secret in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// Hashes the value, consistent with `Eq`, so a secret can key a map (the agent caches by token).
impl std::hash::Hash for SecretString {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.expose_secret().hash(state);
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let secret = SecretString::from("hunter2");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(
            format!("{:?}", Some(secret.clone())),
            format!("Some({REDACTED})")
        );
        assert!(!format!("{secret:#?}").contains("hunter2"));
    }

    #[test]
    fn exposes_and_measures() {
        let secret = SecretString::from(String::from("abc"));
        assert_eq!(secret.expose_secret(), "abc");
        assert_eq!(secret.len(), 3);
        assert!(!secret.is_empty());
        assert!(SecretString::default().is_empty());
        assert_eq!(secret, SecretString::new("abc"));
        assert_ne!(secret, SecretString::new("abd"));
        let mut set = std::collections::HashSet::new();
        assert!(set.insert(secret));
        assert!(!set.insert(SecretString::new("abc")));
    }
}
