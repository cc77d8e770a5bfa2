//! [`KubeClient`]: the Kubernetes API client of the blocks, a [`kube::Client`] configured as
//! Kubernetes clients are.
//!
//! # Configuration ([`ClientConfig::infer`])
//!
//! 1. `KUBECONFIG`, when set: the files it lists (`:`-separated; missing ones skipped) merged as
//!    kubectl merges them, its current context;
//! 2. else in the cluster, when `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` are set:
//!    `https://<host>:<port>`, the CA at
//!    `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt` (re-read about every minute, for CA
//!    rotation) and the pod's service-account token from `.../token` (re-read about every
//!    minute: kubelet rotates it);
//! 3. else `$HOME/.kube/config`.
//!
//! A kubeconfig is read by kube's own parser: the cluster's `server` (`https://`, or `http://`
//! for a local test server), `certificate-authority(-data)` or `insecure-skip-tls-verify`,
//! `tls-server-name`, and the user's `token`, `tokenFile` or `client-certificate(-data)` with
//! `client-key(-data)`. Credential plugins (`exec`, `auth-provider`) are not run and a
//! `proxy-url` is not followed: [`ConfigError::Unsupported`]. With a CA, only that CA is
//! trusted, as kubectl does. Nothing else is read from the environment (no `HTTPS_PROXY`).
//!
//! # Timeouts
//!
//! Every call has one. Connects time out after [`DEFAULT_CONNECT_TIMEOUT`]; a `GET`
//! ([`KubeClient::get_bytes`], [`KubeClient::get_json`], the version) after
//! [`DEFAULT_REQUEST_TIMEOUT`], its body included. The pod watch's list and watch requests run
//! on a second client whose reads time out after the watch's server-side `timeoutSeconds` plus
//! [`WATCH_GRACE`]; the watcher also ends a watch that stays silent past `timeoutSeconds` + 5 s.
//!
//! # Why kube-rs
//!
//! It is the Rust ecosystem's standard Kubernetes client, and it configures itself as `kubectl`
//! and client-go do (in-cluster token and CA reloading, kubeconfig merging, client
//! certificates), which a hand-written client has to chase. Its watcher implements the
//! informer protocol (paged lists, resource versions, bookmarks, re-list on `410 Gone`, idle
//! detection) that [`super::liveness`] builds on. The price is compile time (k8s-openapi's types
//! and a hyper/tower stack beside reqwest): the crate's `kubernetes` feature is off by default,
//! so embedders who do not enable it do not build any of it.

use crate::error::ErrorChain;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Limited};
use kube::config::Kubeconfig;
use pod_identity_core::secret::SecretString;
use serde::de::DeserializeOwned;

/// The in-cluster service-account directory.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default timeout of one `GET`, body included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than its `timeoutSeconds` a list or watch read may wait for data.
pub const WATCH_GRACE: Duration = Duration::from_secs(30);
/// The largest `GET` body read (a JWKS, a version document).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How the agent reaches and authenticates to the API server.
#[derive(Clone)]
pub struct ClientConfig {
    server: String,
    /// PEM bundle to trust, decoded when the client is built.
    ca_pem: Option<Vec<u8>>,
    /// Everything else: credentials, TLS settings of a kubeconfig. Its `cluster_url` is set
    /// from `server` when the client is built.
    kube: kube::Config,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = &self.kube.auth_info;
        let credentials = if auth.token.is_some() {
            "token"
        } else if auth.token_file.is_some() {
            "token file"
        } else if auth.client_certificate.is_some() || auth.client_certificate_data.is_some() {
            "client certificate"
        } else {
            "none"
        };
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field(
                "ca",
                &(self.ca_pem.is_some() || self.kube.root_cert.is_some()),
            )
            .field("insecure_skip_tls_verify", &self.kube.accept_invalid_certs)
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
            kube: kube::Config::new(http::Uri::default()),
        }
    }

    /// Sends this bearer token.
    // Taken by value as builders take secrets; kube keeps its own copy (a `secrecy` string).
    #[allow(clippy::needless_pass_by_value)]
    pub fn token(mut self, token: SecretString) -> Self {
        self.kube.auth_info.token = Some(token.expose_secret().into());
        self.kube.auth_info.token_file = None;
        self
    }

    /// Sends the bearer token in this file, re-read about every minute.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.kube.auth_info.token_file = Some(path.into().to_string_lossy().into_owned());
        self.kube.auth_info.token = None;
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
            let mut merged: Option<Kubeconfig> = None;
            for path in list
                .split(':')
                .filter(|p| !p.is_empty() && Path::new(p).exists())
            {
                let next = read_kubeconfig(Path::new(path))?;
                merged = Some(match merged {
                    Some(first) => first.merge(next).map_err(|e| invalid(&e))?,
                    None => next,
                });
            }
            return Self::from_document(merged.ok_or(ConfigError::NotFound)?, None);
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
    /// `service_account_dir` (normally [`SERVICE_ACCOUNT_DIR`]), both re-read as they rotate.
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
            path: ca_path.clone(),
            source,
        })?;
        let mut config = Self::new(format!("https://{host}:{port}"))
            .ca_pem(ca)
            .token_file(service_account_dir.join("token"));
        config.kube.root_cert_file = Some(ca_path);
        Ok(config)
    }

    /// A kubeconfig file's `context` (default: its `current-context`).
    pub fn from_kubeconfig(
        path: impl AsRef<Path>,
        context: Option<&str>,
    ) -> Result<Self, ConfigError> {
        Self::from_document(read_kubeconfig(path.as_ref())?, context)
    }

    fn from_document(mut document: Kubeconfig, context: Option<&str>) -> Result<Self, ConfigError> {
        let name = context
            .map(str::to_owned)
            .or_else(|| document.current_context.clone())
            .ok_or_else(|| ConfigError::Invalid("no current-context".to_owned()))?;
        let selected = document
            .contexts
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.context.as_ref())
            .ok_or_else(|| ConfigError::Invalid(format!("no context {name:?}")))?;
        let user = selected.user.as_ref().and_then(|user| {
            document
                .auth_infos
                .iter()
                .find(|u| &u.name == user)
                .and_then(|u| u.auth_info.as_ref())
        });
        if user.is_some_and(|u| u.exec.is_some()) {
            return Err(ConfigError::Unsupported("exec credential plugins"));
        }
        if user.is_some_and(|u| u.auth_provider.is_some()) {
            return Err(ConfigError::Unsupported("auth-provider plugins"));
        }
        let cluster = document
            .clusters
            .iter()
            .find(|c| c.name == selected.cluster)
            .and_then(|c| c.cluster.as_ref());
        if cluster.is_some_and(|c| c.proxy_url.as_deref().is_some_and(|p| !p.is_empty())) {
            return Err(ConfigError::Unsupported("proxy-url"));
        }
        document.current_context = Some(name);
        let mut kube = kube::Config::try_from(document).map_err(|e| invalid(&e))?;
        // Only what the kubeconfig says: not `HTTPS_PROXY` from the process environment.
        kube.proxy_url = None;
        let server = kube.cluster_url.to_string();
        Ok(Self {
            server: server.trim_end_matches('/').to_owned(),
            ca_pem: None,
            kube,
        })
    }

    /// The kube configuration with these timeouts.
    fn to_kube(&self, connect: Duration, read: Duration) -> Result<kube::Config, BuildError> {
        let mut config = self.kube.clone();
        config.cluster_url = self
            .server
            .parse()
            .map_err(|_| BuildError("the API server URL is not a URL".to_owned()))?;
        if let Some(pem) = &self.ca_pem {
            let certificates = rustls_pki_types::pem::PemObject::pem_slice_iter(pem)
                .map(|c: Result<rustls_pki_types::CertificateDer<'_>, _>| c.map(|c| c.to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .ok()
                .filter(|certificates| !certificates.is_empty())
                .ok_or_else(|| BuildError("the cluster CA is not a PEM certificate".to_owned()))?;
            config.root_cert = Some(certificates);
        }
        config.connect_timeout = Some(connect);
        config.read_timeout = Some(read);
        config.write_timeout = Some(read);
        // A pooled connection's idle time does not count against the next answer.
        config.reset_reader_on_write = true;
        // The callers have their own retry policies (the version gate, the key refresh
        // interval, the watcher's backoff).
        config.default_retry = false;
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!(
                "pod-identity-agent/",
                env!("CARGO_PKG_VERSION")
            )),
        ));
        Ok(config)
    }
}

fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, ConfigError> {
    Kubeconfig::read_from(path).map_err(|error| match error {
        kube::config::KubeconfigError::ReadConfig(source, path) => {
            ConfigError::Read { path, source }
        }
        other => invalid(&other),
    })
}

fn invalid(error: &kube::config::KubeconfigError) -> ConfigError {
    ConfigError::Invalid(error.to_string())
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
    /// The bearer token or client certificate could not be used.
    #[error("cannot use the Kubernetes credentials")]
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

    pub(crate) fn from_kube(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => Self::Status { code: status.code },
            kube::Error::SerdeError(error) => Self::Decode(error.to_string()),
            kube::Error::FromUtf8(error) => Self::Decode(error.to_string()),
            kube::Error::Auth(error) => Self::Credentials(std::io::Error::other(error.to_string())),
            other if timed_out(&other) => Self::Timeout,
            other => Self::Transport(ErrorChain(&other).to_string()),
        }
    }
}

/// Whether an I/O timeout (connect or read) is among the error's causes.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Why a [`KubeClient`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the Kubernetes client: {0}")]
pub struct BuildError(String);

impl BuildError {
    fn from_kube(error: &kube::Error) -> Self {
        Self(ErrorChain(error).to_string())
    }
}

/// A read-only Kubernetes API client over [`kube::Client`]; cheap to clone.
#[derive(Clone)]
pub struct KubeClient {
    client: kube::Client,
    config: ClientConfig,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.config.server)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl KubeClient {
    /// A client with the default timeouts. Must be called within a tokio runtime.
    pub fn new(config: ClientConfig) -> Result<Self, BuildError> {
        Self::with_timeouts(config, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A client whose connects time out after `connect` and `GET`s after `request`. Must be
    /// called within a tokio runtime.
    pub fn with_timeouts(
        config: ClientConfig,
        connect: Duration,
        request: Duration,
    ) -> Result<Self, BuildError> {
        let client = kube::Client::try_from(config.to_kube(connect, request)?)
            .map_err(|e| BuildError::from_kube(&e))?;
        Ok(Self {
            client,
            config,
            connect_timeout: connect,
            request_timeout: request,
        })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.config.server
    }

    /// The underlying client, for the `GET`s (each wrapped in [`call`](Self::call)).
    pub(crate) fn kube(&self) -> &kube::Client {
        &self.client
    }

    /// A client for long calls (lists and watches): reads time out after `read`.
    pub(crate) fn long_call_client(&self, read: Duration) -> Result<kube::Client, BuildError> {
        kube::Client::try_from(self.config.to_kube(self.connect_timeout, read)?)
            .map_err(|e| BuildError::from_kube(&e))
    }

    /// Runs one call of the underlying client within the request timeout.
    pub(crate) async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ApiError> {
        tokio::time::timeout(self.request_timeout, call)
            .await
            .map_err(|_| ApiError::Timeout)?
            .map_err(ApiError::from_kube)
    }

    /// `GET path` (with its query), decoded from JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let body = self.get_bytes(path, MAX_BODY_BYTES).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string()))
    }

    /// `GET path`, the body of at most `limit` bytes, within the request timeout.
    pub async fn get_bytes(&self, path: &str, limit: usize) -> Result<Vec<u8>, ApiError> {
        let request = http::Request::get(path)
            .header(http::header::ACCEPT, "application/json")
            .body(kube::client::Body::from(Vec::new()))
            .map_err(|e| ApiError::Decode(format!("not a request path: {e}")))?;
        let get = async {
            let response = self
                .client
                .send(request)
                .await
                .map_err(ApiError::from_kube)?;
            let status = response.status();
            if !status.is_success() {
                return Err(ApiError::Status {
                    code: status.as_u16(),
                });
            }
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        ApiError::TooLarge(limit)
                    } else if timed_out(&*error) {
                        ApiError::Timeout
                    } else {
                        ApiError::Transport(format!(
                            "reading the answer failed: {}",
                            ErrorChain(&*error)
                        ))
                    }
                })?;
            Ok(body.to_bytes().to_vec())
        };
        tokio::time::timeout(self.request_timeout, get)
            .await
            .map_err(|_| ApiError::Timeout)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "current-context: c\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\nclusters:\n- name: k\n  cluster:\n{cluster}users:\n- name: u\n  user:\n{user}"
        )
    }

    fn parse(text: &str) -> Result<ClientConfig, ConfigError> {
        let document = Kubeconfig::from_yaml(text).map_err(|e| invalid(&e))?;
        ClientConfig::from_document(document, None)
    }

    #[test]
    fn kubeconfig_fields_are_read() {
        let text = kubeconfig(
            "    server: https://10.0.0.1:6443/\n    insecure-skip-tls-verify: true\n",
            "    tokenFile: /etc/kube/secrets/token\n",
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.server(), "https://10.0.0.1:6443");
        assert!(config.kube.accept_invalid_certs);
        assert_eq!(
            config.kube.auth_info.token_file.as_deref(),
            Some("/etc/kube/secrets/token")
        );
        assert!(format!("{config:?}").contains("token file"));
    }

    #[test]
    fn paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let text = kubeconfig(
            "    server: https://10.0.0.1\n",
            "    tokenFile: secrets/token\n",
        );
        std::fs::write(&path, text).unwrap();
        let config = ClientConfig::from_kubeconfig(&path, None).unwrap();
        assert_eq!(
            config.kube.auth_info.token_file.map(PathBuf::from),
            Some(dir.path().join("secrets/token"))
        );
    }

    #[test]
    fn bad_data_and_proxies_are_refused() {
        let cluster = "    server: https://10.0.0.1\n";
        let text = kubeconfig(
            "    server: https://10.0.0.1\n    certificate-authority-data: '***'\n",
            "    token: t\n",
        );
        assert!(matches!(parse(&text), Err(ConfigError::Invalid(_))));
        let text = kubeconfig(
            "    server: https://10.0.0.1\n    proxy-url: http://proxy:3128\n",
            "    token: t\n",
        );
        assert!(matches!(parse(&text), Err(ConfigError::Unsupported(_))));
        let text = kubeconfig(cluster, "    auth-provider:\n      name: gcp\n");
        assert!(matches!(parse(&text), Err(ConfigError::Unsupported(_))));
        assert!(parse("[not, a, config").is_err());
        assert!(matches!(
            parse("current-context: x\n"),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let config =
            ClientConfig::new("http://127.0.0.1:1").token(SecretString::new("s3cr3t-token"));
        assert!(!format!("{config:?}").contains("s3cr3t-token"));
    }

    #[tokio::test]
    async fn a_bad_ca_or_url_is_refused_when_the_client_is_built() {
        let config = ClientConfig::new("https://10.0.0.1").ca_pem("not a certificate");
        assert!(KubeClient::new(config).is_err());
        assert!(KubeClient::new(ClientConfig::new("not a url at all")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_kubeconfig_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
