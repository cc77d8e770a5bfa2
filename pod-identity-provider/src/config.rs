//! Where the provider finds the agent and the token (the rules are documented on
//! [`Builder`](crate::Builder)).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pod_identity_core::endpoint::{
    ENV_AUTHORIZATION_TOKEN, ENV_AUTHORIZATION_TOKEN_FILE, ENV_FULL_URI, ENV_RELATIVE_URI,
    EndpointError, FullUri, HostCheck,
};
use pod_identity_core::secret::SecretString;
use reqwest::header::HeaderValue;
use tokio::io::AsyncReadExt;

use crate::error::{Error, ErrorKind};

/// Largest token file accepted: 64 KiB. Projected tokens are a few KiB.
pub const MAX_TOKEN_FILE_LEN: usize = 64 * 1024;

/// The environment the provider reads its settings from.
///
/// Defaults to the process environment. Tests and embedders pass a fixed map instead, which
/// avoids mutating the process environment (unsafe since edition 2024). `Debug` prints
/// variable names only, never values.
///
/// ```
/// use pod_identity_provider::Env;
///
/// let env = Env::from_vars([("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials")]);
/// assert_eq!(
///     env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI").as_deref(),
///     Some("http://169.254.170.23/v1/credentials")
/// );
/// assert_eq!(env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"), None);
/// ```
#[derive(Clone, Default)]
pub struct Env(EnvSource);

#[derive(Clone, Default)]
enum EnvSource {
    #[default]
    Process,
    Fixed(Arc<HashMap<String, String>>),
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self(EnvSource::Process)
    }

    /// A fixed set of variables; everything else is unset.
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self(EnvSource::Fixed(Arc::new(map)))
    }

    /// The variable's value; `None` when unset or not valid UTF-8.
    pub fn get(&self, key: &str) -> Option<String> {
        match &self.0 {
            // The one place the process environment is read: this type is the seam.
            #[allow(clippy::disallowed_methods)]
            EnvSource::Process => std::env::var(key).ok(),
            EnvSource::Fixed(map) => map.get(key).cloned(),
        }
    }

    /// Whether this is the process environment.
    pub(crate) fn is_process(&self) -> bool {
        matches!(self.0, EnvSource::Process)
    }

    /// The variable's value when set and not empty.
    pub(crate) fn non_empty(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.trim().is_empty())
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            EnvSource::Process => f.write_str("Env::Process"),
            EnvSource::Fixed(map) => {
                let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
                keys.sort_unstable();
                f.debug_tuple("Env::Fixed").field(&keys).finish()
            }
        }
    }
}

/// What the builder set explicitly; the environment fills the rest.
#[derive(Clone, Default)]
pub(crate) struct Overrides {
    pub(crate) full_uri: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) token: Option<SecretString>,
}

/// Where the token comes from. `Debug` redacts a static token ([`SecretString`]).
#[derive(Clone, Debug)]
pub(crate) enum TokenSource {
    None,
    Static(SecretString),
    File(PathBuf),
}

/// A settings source named in error messages.
#[derive(Clone, Copy, Debug)]
enum Origin {
    Builder(&'static str),
    Var(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builder(setting) => write!(f, "the builder's `{setting}`"),
            Self::Var(name) => f.write_str(name),
        }
    }
}

/// The configuration after precedence and the host policy.
#[derive(Debug)]
pub(crate) struct AgentConfig {
    pub(crate) uri: FullUri,
    pub(crate) token: TokenSource,
    uri_origin: Origin,
}

impl AgentConfig {
    /// Applies the precedence above. DNS names are not resolved here; see [`Self::resolve`].
    pub(crate) fn from_settings(overrides: &Overrides, env: &Env) -> Result<Self, Error> {
        let (raw, origin) = if let Some(uri) = &overrides.full_uri {
            (uri.clone(), Origin::Builder("full_uri"))
        } else if let Some(relative) = env.non_empty(ENV_RELATIVE_URI) {
            (relative, Origin::Var(ENV_RELATIVE_URI))
        } else if let Some(full) = env.non_empty(ENV_FULL_URI) {
            (full, Origin::Var(ENV_FULL_URI))
        } else {
            return Err(Error::new(
                ErrorKind::NotConfigured,
                format!("neither {ENV_FULL_URI} nor {ENV_RELATIVE_URI} is set"),
            ));
        };
        let parsed = match origin {
            Origin::Var(ENV_RELATIVE_URI) => FullUri::from_relative(raw.trim()),
            _ => FullUri::parse(raw.trim()),
        };
        let uri = parsed.map_err(|e| invalid_uri(origin, &e))?;
        if uri.url().scheme() == "https" && !cfg!(feature = "rustls") {
            return Err(Error::new(
                ErrorKind::InvalidConfiguration,
                format!(
                    "{origin}: https credentials URIs need the `rustls` feature of pod-identity-provider"
                ),
            ));
        }

        let token = if let Some(path) = &overrides.token_file {
            TokenSource::File(path.clone())
        } else if let Some(token) = &overrides.token {
            TokenSource::Static(check_static_token(token, Origin::Builder("token"))?)
        } else if let Some(path) = env.non_empty(ENV_AUTHORIZATION_TOKEN_FILE) {
            TokenSource::File(PathBuf::from(path.trim()))
        } else if let Some(token) = env.non_empty(ENV_AUTHORIZATION_TOKEN) {
            let token = SecretString::new(token);
            TokenSource::Static(check_static_token(
                &token,
                Origin::Var(ENV_AUTHORIZATION_TOKEN),
            )?)
        } else {
            TokenSource::None
        };
        Ok(Self {
            uri,
            token,
            uri_origin: origin,
        })
    }

    /// For a host name over plain http: resolves it and checks every address. Returns the
    /// addresses to pin the connection to (`None` when there is nothing to resolve).
    pub(crate) async fn resolve(&self) -> Result<Option<(String, Vec<SocketAddr>)>, Error> {
        let HostCheck::MustResolve { host, port } = self.uri.host_check() else {
            return Ok(None);
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Resolve,
                    format!("{}: could not resolve host `{host}`", self.uri_origin),
                    e,
                )
            })?
            .collect();
        let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        self.uri
            .check_resolved(&ips)
            .map_err(|e| invalid_uri(self.uri_origin, &e))?;
        Ok(Some((host, addrs)))
    }
}

/// Names the setting and the reason. The reason is in the text (log lines print only the text),
/// so the [`EndpointError`] is not also the source: the chain would say it twice.
fn invalid_uri(origin: Origin, error: &EndpointError) -> Error {
    Error::new(
        ErrorKind::InvalidConfiguration,
        format!("{origin}: {error}"),
    )
}

/// Trims the token and checks it can travel in an HTTP header. The error names where the token
/// came from, never the token.
fn check_static_token(token: &SecretString, origin: Origin) -> Result<SecretString, Error> {
    checked_token(
        token.expose_secret(),
        format_args!("{origin}: the authorization token"),
    )
}

/// The trimmed token, or an error that says `{subject} is empty` or `{subject} contains bytes
/// not allowed ...`. `subject` names the token's origin, never the token.
fn checked_token(raw: &str, subject: fmt::Arguments<'_>) -> Result<SecretString, Error> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidConfiguration,
            format!("{subject} is empty"),
        ));
    }
    if !is_header_safe(trimmed) {
        return Err(Error::new(
            ErrorKind::InvalidConfiguration,
            format!(
                "{subject} contains bytes not allowed in an HTTP header \
                 (control characters or non-ASCII)"
            ),
        ));
    }
    Ok(SecretString::new(trimmed))
}

/// Tokens are JWTs: visible ASCII only. (`HeaderValue` alone would let non-ASCII bytes through.)
fn is_header_safe(token: &str) -> bool {
    token.is_ascii() && HeaderValue::from_str(token).is_ok()
}

impl TokenSource {
    /// The token for one fetch: the file is read again every time.
    pub(crate) async fn load(&self) -> Result<Option<SecretString>, Error> {
        match self {
            Self::None => Ok(None),
            Self::Static(token) => Ok(Some(token.clone())),
            Self::File(path) => read_token_file(path).await.map(Some),
        }
    }
}

/// Reads, bounds, trims and checks a token file.
pub(crate) async fn read_token_file(path: &Path) -> Result<SecretString, Error> {
    let shown = path.display();
    let file = tokio::fs::File::open(path).await.map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist"
        } else {
            "could not be opened"
        };
        Error::with_source(
            ErrorKind::TokenFile,
            format!("token file `{shown}` {what}"),
            e,
        )
    })?;
    let mut bytes = Vec::with_capacity(4096);
    // Read one byte past the bound to tell "exactly 64 KiB" from "more".
    file.take(MAX_TOKEN_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::TokenFile,
                format!("token file `{shown}` could not be read"),
                e,
            )
        })?;
    if bytes.len() > MAX_TOKEN_FILE_LEN {
        return Err(Error::new(
            ErrorKind::InvalidConfiguration,
            format!("token file `{shown}` is larger than {MAX_TOKEN_FILE_LEN} bytes"),
        ));
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => SecretString::new(text),
        Err(_) => {
            return Err(Error::new(
                ErrorKind::InvalidConfiguration,
                format!("token file `{shown}` is not valid UTF-8"),
            ));
        }
    };
    checked_token(text.expose_secret(), format_args!("token file `{shown}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<AgentConfig, Error> {
        AgentConfig::from_settings(&Overrides::default(), &Env::from_vars(vars.iter().copied()))
    }

    #[test]
    fn relative_uri_wins_over_full_uri() {
        let c = config(&[
            (ENV_FULL_URI, "http://127.0.0.1/x"),
            (ENV_RELATIVE_URI, "/v2/creds"),
        ])
        .unwrap();
        assert_eq!(c.uri.as_str(), "http://169.254.170.2/v2/creds");
    }

    #[test]
    fn builder_uri_wins_over_env() {
        let overrides = Overrides {
            full_uri: Some("http://127.0.0.1:1234/creds".into()),
            ..Overrides::default()
        };
        let env = Env::from_vars([(ENV_RELATIVE_URI, "/v2/creds")]);
        let c = AgentConfig::from_settings(&overrides, &env).unwrap();
        assert_eq!(c.uri.as_str(), "http://127.0.0.1:1234/creds");
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let e = config(&[(ENV_FULL_URI, " "), (ENV_RELATIVE_URI, "")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotConfigured);
    }

    #[test]
    fn token_file_wins_over_token() {
        let c = config(&[
            (ENV_FULL_URI, "http://127.0.0.1/x"),
            (ENV_AUTHORIZATION_TOKEN_FILE, "/tmp/token"),
            (ENV_AUTHORIZATION_TOKEN, "abc"),
        ])
        .unwrap();
        assert!(matches!(c.token, TokenSource::File(ref p) if p == Path::new("/tmp/token")));
    }

    #[test]
    fn bad_token_bytes_name_the_variable_not_the_token() {
        let e = config(&[
            (ENV_FULL_URI, "http://127.0.0.1/x"),
            (ENV_AUTHORIZATION_TOKEN, "secret\u{7}value"),
        ])
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfiguration);
        let text = e.to_string();
        assert!(text.contains(ENV_AUTHORIZATION_TOKEN), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn a_refused_uri_names_the_variable_and_the_reason_once() {
        let e = config(&[(ENV_FULL_URI, "http://10.0.0.1/creds")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfiguration);
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(next) = source {
            chain = format!("{chain}: {next}");
            source = next.source();
        }
        assert!(chain.starts_with(ENV_FULL_URI), "{chain}");
        assert_eq!(chain.matches("is not allowed").count(), 1, "{chain}");
    }

    #[test]
    fn env_debug_shows_names_only() {
        let env = Env::from_vars([(ENV_AUTHORIZATION_TOKEN, "very-secret")]);
        let shown = format!("{env:?}");
        assert!(shown.contains(ENV_AUTHORIZATION_TOKEN));
        assert!(!shown.contains("very-secret"));
    }
}
