//! [`KubeClient`]: the few Kubernetes API calls the agent makes, configured as Kubernetes
//! clients are.
//!
//! # Configuration ([`ClientConfig::infer`])
//!
//! 1. `KUBECONFIG`, when set: the first file it lists (`:`-separated), its current context;
//! 2. else in the cluster, when `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` are set:
//!    `https://<host>:<port>`, the CA at
//!    `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt` and the pod's service-account token
//!    from `.../token`, re-read on every call (kubelet rotates it);
//! 3. else `$HOME/.kube/config`.
//!
//! From a kubeconfig: the cluster's `server` (`https://`, or `http://` for a local test server),
//! `certificate-authority(-data)` or `insecure-skip-tls-verify`, and the user's `token`,
//! `tokenFile` or `client-certificate(-data)` with `client-key(-data)`. Credential plugins
//! (`exec`, `auth-provider`) are not run: [`ConfigError::Unsupported`]. With a CA, only that CA
//! is trusted, as kubectl does.
//!
//! # Timeouts
//!
//! Every call has one: connects time out after [`DEFAULT_CONNECT_TIMEOUT`], a `GET` after
//! [`DEFAULT_REQUEST_TIMEOUT`] (including the body), and a watch after the server-side
//! `timeoutSeconds` it asks for plus [`WATCH_GRACE`].
//!
//! Why not kube-rs: the agent needs four read-only endpoints (`/version`, `/openid/v1/jwks`, and
//! listing and watching pods) and three fields of a pod. kube-rs with k8s-openapi would compile
//! every API type and a second HTTP and TLS stack (hyper-rustls, tower-http) next to reqwest,
//! which the agent already links, and decode whole pod objects where a partial one does. What
//! kube-rs would add beyond that (the watcher's re-list on 410, bookmarks, backoff) is in
//! [`super::liveness`], tested against a fake API server.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pod_identity_core::secret::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The in-cluster service-account directory.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default timeout of one `GET`, body included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than its `timeoutSeconds` a watch may run before the client ends it.
pub const WATCH_GRACE: Duration = Duration::from_secs(30);
/// The largest `GET` body read (a page of pods, a JWKS).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The largest watch event read.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// How the agent reaches and authenticates to the API server.
#[derive(Clone)]
pub struct ClientConfig {
    server: String,
    ca_pem: Option<Vec<u8>>,
    insecure_skip_tls_verify: bool,
    credentials: Credentials,
}

#[derive(Clone)]
enum Credentials {
    None,
    Token(SecretString),
    TokenFile(PathBuf),
    /// PEM certificate chain followed by the PEM private key.
    ClientCertificate(SecretString),
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = match &self.credentials {
            Credentials::None => "none",
            Credentials::Token(_) => "token",
            Credentials::TokenFile(_) => "token file",
            Credentials::ClientCertificate(_) => "client certificate",
        };
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("ca", &self.ca_pem.is_some())
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("credentials", &credentials)
            .finish()
    }
}

/// Why no client configuration could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither `KUBECONFIG`, the in-cluster environment nor `$HOME/.kube/config` is there.
    #[error("no Kubernetes configuration: not in a cluster and no kubeconfig")]
    NotFound,
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig is not valid.
    #[error("invalid kubeconfig: {0}")]
    Invalid(String),
    /// The kubeconfig needs something this client does not do.
    #[error("unsupported kubeconfig: {0}")]
    Unsupported(&'static str),
}

impl ClientConfig {
    /// A configuration for `server` (such as `http://127.0.0.1:8080`) without credentials.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into().trim_end_matches('/').to_owned(),
            ca_pem: None,
            insecure_skip_tls_verify: false,
            credentials: Credentials::None,
        }
    }

    /// Sends this bearer token.
    pub fn token(mut self, token: SecretString) -> Self {
        self.credentials = Credentials::Token(token);
        self
    }

    /// Sends the bearer token in this file, re-read on every call.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials = Credentials::TokenFile(path.into());
        self
    }

    /// Trusts only this CA (PEM) for the server's certificate.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The configuration Kubernetes clients use (see the [module docs](self)). `env` reads an
    /// environment variable.
    pub fn infer(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        if let Some(list) = env("KUBECONFIG").filter(|v| !v.is_empty()) {
            let path = list
                .split(':')
                .find(|p| !p.is_empty() && Path::new(p).exists())
                .ok_or(ConfigError::NotFound)?;
            return Self::from_kubeconfig(path, None);
        }
        if let (Some(host), Some(port)) = (
            env("KUBERNETES_SERVICE_HOST"),
            env("KUBERNETES_SERVICE_PORT"),
        ) {
            return Self::in_cluster(&host, &port, Path::new(SERVICE_ACCOUNT_DIR));
        }
        if let Some(home) = env("HOME") {
            let path = Path::new(&home).join(".kube").join("config");
            if path.exists() {
                return Self::from_kubeconfig(path, None);
            }
        }
        Err(ConfigError::NotFound)
    }

    /// The in-cluster configuration: `https://<host>:<port>`, with the CA and the token from
    /// `service_account_dir` (normally [`SERVICE_ACCOUNT_DIR`]).
    pub fn in_cluster(
        host: &str,
        port: &str,
        service_account_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let ca_path = service_account_dir.join("ca.crt");
        let ca = std::fs::read(&ca_path).map_err(|source| ConfigError::Read {
            path: ca_path,
            source,
        })?;
        Ok(Self::new(format!("https://{host}:{port}"))
            .ca_pem(ca)
            .token_file(service_account_dir.join("token")))
    }

    /// A kubeconfig file's `context` (default: its `current-context`).
    pub fn from_kubeconfig(
        path: impl AsRef<Path>,
        context: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_kubeconfig_yaml(&text, context, base)
    }

    fn from_kubeconfig_yaml(
        text: &[u8],
        context: Option<&str>,
        base: &Path,
    ) -> Result<Self, ConfigError> {
        let config: Kubeconfig =
            serde_yaml_ng::from_slice(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let name = context
            .map(str::to_owned)
            .or(config.current_context)
            .ok_or_else(|| ConfigError::Invalid("no current-context".to_owned()))?;
        let context = config
            .contexts
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ConfigError::Invalid(format!("no context {name:?}")))?
            .context;
        let cluster = config
            .clusters
            .into_iter()
            .find(|c| c.name == context.cluster)
            .ok_or_else(|| ConfigError::Invalid(format!("no cluster {:?}", context.cluster)))?
            .cluster;
        let read = |file: &str| {
            let path = base.join(file);
            std::fs::read(&path).map_err(|source| ConfigError::Read { path, source })
        };
        let decode = |field: &str, data: &str| {
            STANDARD
                .decode(data.trim())
                .map_err(|_| ConfigError::Invalid(format!("{field} is not base64")))
        };
        let mut out = Self::new(cluster.server);
        out.insecure_skip_tls_verify = cluster.insecure_skip_tls_verify;
        out.ca_pem = match (
            cluster.certificate_authority_data,
            cluster.certificate_authority,
        ) {
            (Some(data), _) => Some(decode("certificate-authority-data", &data)?),
            (None, Some(file)) => Some(read(&file)?),
            (None, None) => None,
        };
        let user = match context.user {
            Some(name) => {
                config
                    .users
                    .into_iter()
                    .find(|u| u.name == name)
                    .ok_or_else(|| ConfigError::Invalid(format!("no user {name:?}")))?
                    .user
            }
            None => User::default(),
        };
        if user.exec.is_some() {
            return Err(ConfigError::Unsupported("exec credential plugins"));
        }
        if user.auth_provider.is_some() {
            return Err(ConfigError::Unsupported("auth-provider plugins"));
        }
        let certificate = match (user.client_certificate_data, user.client_certificate) {
            (Some(data), _) => Some(decode("client-certificate-data", &data)?),
            (None, Some(file)) => Some(read(&file)?),
            (None, None) => None,
        };
        let key = match (user.client_key_data, user.client_key) {
            (Some(data), _) => Some(decode("client-key-data", &data)?),
            (None, Some(file)) => Some(read(&file)?),
            (None, None) => None,
        };
        out.credentials = match (user.token, user.token_file, certificate, key) {
            (Some(token), _, _, _) => Credentials::Token(SecretString::new(token)),
            (None, Some(file), _, _) => Credentials::TokenFile(base.join(file)),
            (None, None, Some(mut certificate), Some(key)) => {
                certificate.push(b'\n');
                certificate.extend_from_slice(&key);
                let pem = String::from_utf8(certificate).map_err(|_| {
                    ConfigError::Invalid("client certificate or key is not PEM".to_owned())
                })?;
                Credentials::ClientCertificate(SecretString::new(pem))
            }
            (None, None, Some(_), None) | (None, None, None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "a client certificate needs its key, and a key its certificate".to_owned(),
                ));
            }
            (None, None, None, None) => Credentials::None,
        };
        Ok(out)
    }
}

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The server could not be reached, or the connection broke.
    #[error("Kubernetes API server unreachable: {0}")]
    Transport(String),
    /// The call took longer than its timeout.
    #[error("Kubernetes API call timed out")]
    Timeout,
    /// The server answered with an error status.
    #[error("Kubernetes API answered {code}")]
    Status {
        /// The HTTP status (410 for a watch's expired resource version).
        code: u16,
    },
    /// The answer is larger than this client reads.
    #[error("Kubernetes API answer larger than {0} bytes")]
    TooLarge(usize),
    /// The answer is not what the endpoint returns.
    #[error("unexpected Kubernetes API answer: {0}")]
    Decode(String),
    /// The bearer token file could not be read.
    #[error("cannot read the service-account token")]
    Credentials(#[source] std::io::Error),
}

impl ApiError {
    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { code } => Some(*code),
            _ => None,
        }
    }

    fn from_reqwest(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            Self::Timeout
        } else {
            Self::Transport(ErrorText(error).to_string())
        }
    }
}

/// A reqwest error with its causes and without its URL (which may hold a query).
struct ErrorText<'a>(&'a reqwest::Error);

impl fmt::Display for ErrorText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::error::Error as _;
        if self.0.is_connect() {
            write!(f, "connection failed")?;
        } else if self.0.is_body() || self.0.is_decode() {
            write!(f, "reading the answer failed")?;
        } else {
            write!(f, "request failed")?;
        }
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Why a [`KubeClient`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the Kubernetes client: {0}")]
pub struct BuildError(String);

/// A read-only Kubernetes API client; cheap to clone.
#[derive(Clone)]
pub struct KubeClient {
    http: reqwest::Client,
    server: String,
    credentials: Credentials,
    request_timeout: Duration,
}

impl fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.server)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl KubeClient {
    /// A client with the default timeouts.
    pub fn new(config: ClientConfig) -> Result<Self, BuildError> {
        Self::with_timeouts(config, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A client whose connects time out after `connect` and `GET`s after `request`.
    pub fn with_timeouts(
        config: ClientConfig,
        connect: Duration,
        request: Duration,
    ) -> Result<Self, BuildError> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(connect)
            .user_agent(concat!("pod-identity-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|certificates| !certificates.is_empty())
                .ok_or_else(|| BuildError("the cluster CA is not a PEM certificate".to_owned()))?;
            http = http.tls_certs_only(certificates);
        }
        if config.insecure_skip_tls_verify {
            http = http.danger_accept_invalid_certs(true);
        }
        if let Credentials::ClientCertificate(pem) = &config.credentials {
            let identity =
                reqwest::Identity::from_pem(pem.expose_secret().as_bytes()).map_err(|_| {
                    BuildError("the client certificate or key is not usable".to_owned())
                })?;
            http = http.identity(identity);
        }
        let http = http
            .build()
            .map_err(|e| BuildError(ErrorText(&e).to_string()))?;
        Ok(Self {
            http,
            server: config.server,
            credentials: config.credentials,
            request_timeout: request,
        })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `GET path` (with its query), decoded from JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let body = self.get_bytes(path, MAX_BODY_BYTES).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string()))
    }

    /// `GET path`, the body of at most `limit` bytes.
    pub async fn get_bytes(&self, path: &str, limit: usize) -> Result<Vec<u8>, ApiError> {
        let request = self.request(path).await?.timeout(self.request_timeout);
        let mut response = request
            .send()
            .await
            .map_err(|e| ApiError::from_reqwest(&e))?;
        if !response.status().is_success() {
            return Err(ApiError::Status {
                code: response.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ApiError::from_reqwest(&e))?
        {
            if body.len() + chunk.len() > limit {
                return Err(ApiError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Starts a watch (`path` with `watch=1` and `timeoutSeconds=<server_timeout>` in its
    /// query); the client ends it [`WATCH_GRACE`] after `server_timeout` at the latest.
    pub async fn watch(
        &self,
        path: &str,
        server_timeout: Duration,
    ) -> Result<WatchEvents, ApiError> {
        let request = self
            .request(path)
            .await?
            .timeout(server_timeout + WATCH_GRACE);
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::from_reqwest(&e))?;
        if !response.status().is_success() {
            return Err(ApiError::Status {
                code: response.status().as_u16(),
            });
        }
        Ok(WatchEvents {
            response,
            buffer: Vec::new(),
        })
    }

    async fn request(&self, path: &str) -> Result<reqwest::RequestBuilder, ApiError> {
        let request = self
            .http
            .get(format!("{}{path}", self.server))
            .header(http::header::ACCEPT, "application/json");
        let token = match &self.credentials {
            Credentials::Token(token) => token.clone(),
            Credentials::TokenFile(path) => {
                let path = path.clone();
                let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
                    .await
                    .map_err(|e| ApiError::Credentials(std::io::Error::other(e.to_string())))?
                    .map_err(ApiError::Credentials)?;
                SecretString::new(text.trim())
            }
            Credentials::None | Credentials::ClientCertificate(_) => return Ok(request),
        };
        let mut value = http::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| {
            ApiError::Credentials(std::io::Error::other(
                "the service-account token is not a header value",
            ))
        })?;
        value.set_sensitive(true);
        Ok(request.header(http::header::AUTHORIZATION, value))
    }
}

/// The lines of a watch: one JSON event each.
#[derive(Debug)]
pub struct WatchEvents {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl WatchEvents {
    /// The next event's JSON; `None` when the server ended the watch.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, ApiError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let rest = self.buffer.split_off(end + 1);
                let mut line = std::mem::replace(&mut self.buffer, rest);
                line.truncate(end);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            match self
                .response
                .chunk()
                .await
                .map_err(|e| ApiError::from_reqwest(&e))?
            {
                Some(chunk) => {
                    if self.buffer.len() + chunk.len() > MAX_EVENT_BYTES {
                        return Err(ApiError::TooLarge(MAX_EVENT_BYTES));
                    }
                    self.buffer.extend_from_slice(&chunk);
                }
                None if self.buffer.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                None => return Ok(Some(std::mem::take(&mut self.buffer))),
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Context {
    cluster: String,
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    exec: Option<serde_yaml_ng::Value>,
    auth_provider: Option<serde_yaml_ng::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "current-context: c\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\nclusters:\n- name: k\n  cluster:\n{cluster}users:\n- name: u\n  user:\n{user}"
        )
    }

    #[test]
    fn kubeconfig_fields_are_read_and_paths_are_relative_to_the_file() {
        let ca = STANDARD.encode("-----BEGIN CERTIFICATE-----\n");
        let text = kubeconfig(
            &format!("    server: https://10.0.0.1:6443/\n    certificate-authority-data: {ca}\n"),
            "    tokenFile: secrets/token\n",
        );
        let config =
            ClientConfig::from_kubeconfig_yaml(text.as_bytes(), None, Path::new("/etc/kube"))
                .unwrap();
        assert_eq!(config.server(), "https://10.0.0.1:6443");
        assert_eq!(
            config.ca_pem.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----\n"[..])
        );
        assert!(
            matches!(&config.credentials, Credentials::TokenFile(p) if p == Path::new("/etc/kube/secrets/token"))
        );
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_data_must_be_base64() {
        let cluster = "    server: https://10.0.0.1\n";
        let text = kubeconfig(cluster, "    client-certificate-data: AAAA\n");
        assert!(matches!(
            ClientConfig::from_kubeconfig_yaml(text.as_bytes(), None, Path::new(".")),
            Err(ConfigError::Invalid(_))
        ));
        let text = kubeconfig(cluster, "    token: '%%%'\n    client-key-data: '***'\n");
        assert!(matches!(
            ClientConfig::from_kubeconfig_yaml(text.as_bytes(), None, Path::new(".")),
            Err(ConfigError::Invalid(_))
        ));
        assert!(
            ClientConfig::from_kubeconfig_yaml(b"[not, a, config", None, Path::new(".")).is_err()
        );
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let config =
            ClientConfig::new("http://127.0.0.1:1").token(SecretString::new("s3cr3t-token"));
        assert!(!format!("{config:?}").contains("s3cr3t-token"));
    }

    proptest::proptest! {
        #[test]
        fn any_kubeconfig_never_panics(text in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = ClientConfig::from_kubeconfig_yaml(&text, None, Path::new("."));
        }
    }
}
