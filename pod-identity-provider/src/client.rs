//! The HTTP client that asks the agent for credentials, with retries.
//!
//! One fetch is up to `max_attempts` (default 3) `GET`s with `Authorization: <token>` and
//! `Accept: application/json`, never through a proxy and never following redirects. Connection
//! errors, timeouts, 5xx, 429 and unparseable 200 bodies are retried after an exponential backoff
//! with full jitter (base 100 ms, cap 2 s); a 429's `Retry-After` (seconds) is honoured up to
//! 5 s. Other 4xx answers and `{"Code": ..., "Message": ...}` documents are not retried. The
//! agent's plain-text error body appears in the error, truncated to 256 characters, control
//! characters replaced and the token redacted.

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_smithy_async::rt::sleep::{AsyncSleep, SharedAsyncSleep};
use pod_identity_core::container_credentials::{ContainerCredentials, ResponseError};
use pod_identity_core::secret::SecretString;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, RETRY_AFTER};
use tokio::sync::OnceCell;

use crate::cache::Stats;
use crate::config::{AgentConfig, Env, Overrides};
use crate::error::{Error, ErrorKind};

/// The name credentials from this provider carry.
pub(crate) const PROVIDER_NAME: &str = "PodIdentity";
/// First retry delay bound; doubled per attempt.
pub(crate) const RETRY_BASE: Duration = Duration::from_millis(100);
/// Largest retry delay drawn from the backoff.
pub(crate) const RETRY_CAP: Duration = Duration::from_secs(2);
/// Longest `Retry-After` honoured.
pub(crate) const RETRY_AFTER_CAP: Duration = Duration::from_secs(5);
/// Largest response body read.
const MAX_BODY_LEN: usize = 64 * 1024;
/// Longest agent error text kept in an error message.
const MAX_ERROR_TEXT: usize = 256;

/// HTTP settings from the builder.
#[derive(Clone, Debug)]
pub(crate) struct HttpSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) client: Option<reqwest::Client>,
}

/// A configuration that passed every check, with the HTTP client to use for it.
#[derive(Debug)]
struct Resolved {
    config: AgentConfig,
    http: reqwest::Client,
}

/// Fetches credentials from the agent.
pub(crate) struct AgentClient {
    overrides: Overrides,
    env: Env,
    settings: HttpSettings,
    sleep: SharedAsyncSleep,
    stats: Arc<Stats>,
    /// Filled on the first successful configuration; failures are not remembered.
    resolved: OnceCell<Resolved>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("env", &self.env)
            .field("settings", &self.settings)
            .field("resolved", &self.resolved.get())
            .finish_non_exhaustive()
    }
}

/// The outcome of one attempt that did not produce credentials.
struct Failed {
    error: Error,
    retry: bool,
    retry_after: Option<Duration>,
}

impl Failed {
    fn fatal(error: Error) -> Self {
        Self {
            error,
            retry: false,
            retry_after: None,
        }
    }

    fn retry(error: Error) -> Self {
        Self {
            error,
            retry: true,
            retry_after: None,
        }
    }
}

impl AgentClient {
    pub(crate) fn new(
        overrides: Overrides,
        env: Env,
        settings: HttpSettings,
        sleep: SharedAsyncSleep,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            overrides,
            env,
            settings,
            sleep,
            stats,
            resolved: OnceCell::new(),
        }
    }

    async fn resolved(&self) -> Result<&Resolved, Error> {
        self.resolved
            .get_or_try_init(|| async {
                let config = AgentConfig::from_settings(&self.overrides, &self.env)?;
                let pinned = config.resolve().await?;
                let http = match &self.settings.client {
                    Some(client) => client.clone(),
                    None => self.build_http(pinned.as_ref())?,
                };
                tracing::debug!(uri = %config.uri, token = ?config.token, "pod identity provider configured");
                Ok(Resolved { config, http })
            })
            .await
    }

    fn build_http(
        &self,
        pinned: Option<&(String, Vec<std::net::SocketAddr>)>,
    ) -> Result<reqwest::Client, Error> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.settings.connect_timeout)
            .read_timeout(self.settings.read_timeout)
            .timeout(self.settings.connect_timeout + self.settings.read_timeout);
        if let Some((host, addrs)) = pinned {
            // Connect only to the addresses the policy checked.
            builder = builder.resolve_to_addrs(host, addrs);
        }
        builder.build().map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidConfiguration,
                "could not build the HTTP client",
                e,
            )
        })
    }

    /// One fetch: configuration, token, then up to `max_attempts` requests.
    pub(crate) async fn fetch(&self) -> Result<Credentials, Error> {
        let result = self.fetch_inner().await;
        if let Err(error) = &result {
            if error.kind() == ErrorKind::NotConfigured {
                tracing::debug!(%error, "pod identity provider not configured");
            } else {
                tracing::warn!(%error, kind = ?error.kind(), "fetching pod identity credentials failed");
            }
        }
        result
    }

    async fn fetch_inner(&self) -> Result<Credentials, Error> {
        let resolved = self.resolved().await?;
        let token = resolved.config.token.load().await?;
        let max_attempts = self.settings.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let failed = match self.attempt(resolved, token.as_ref()).await {
                Ok(credentials) => {
                    tracing::debug!(attempt, "fetched pod identity credentials");
                    return Ok(credentials);
                }
                Err(failed) => failed,
            };
            if !failed.retry || attempt >= max_attempts {
                return Err(failed.error);
            }
            let backoff = full_jitter(attempt);
            let delay = match failed.retry_after {
                Some(after) => backoff.max(after.min(RETRY_AFTER_CAP)),
                None => backoff,
            };
            Stats::bump(&self.stats.retries);
            tracing::info!(
                attempt,
                max_attempts,
                ?delay,
                error = %failed.error,
                "retrying pod identity credentials request"
            );
            self.sleep.sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        resolved: &Resolved,
        token: Option<&SecretString>,
    ) -> Result<Credentials, Failed> {
        let mut request = resolved
            .http
            .get(resolved.config.uri.url().clone())
            .header(ACCEPT, "application/json");
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
                Failed::fatal(Error::new(
                    ErrorKind::InvalidConfiguration,
                    "the authorization token contains bytes not allowed in an HTTP header",
                ))
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let mut response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_body(&mut response).await.map_err(transport_error)?;

        if status.is_success() {
            return match ContainerCredentials::from_json(&body) {
                Ok(credentials) => Ok(into_credentials(credentials)),
                Err(ResponseError::Service { code, message }) => Err(Failed::fatal(Error::new(
                    ErrorKind::AgentError,
                    format!(
                        "the agent answered with error code `{}`: {}",
                        sanitize(code.as_bytes(), token),
                        sanitize(message.as_bytes(), token)
                    ),
                ))),
                Err(error) => Err(Failed::retry(Error::with_source(
                    ErrorKind::MalformedResponse,
                    format!("the agent answered {status} with a body that is not credentials"),
                    error,
                ))),
            };
        }
        let text = sanitize(&body, token);
        let error = Error::agent_status(
            status.as_u16(),
            format!("the agent answered {status}: {text}"),
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            Err(Failed {
                error,
                retry: true,
                retry_after,
            })
        } else if status.is_server_error() {
            Err(Failed::retry(error))
        } else {
            Err(Failed::fatal(error))
        }
    }
}

fn transport_error(error: reqwest::Error) -> Failed {
    let what = if error.is_timeout() {
        "timed out talking to the agent"
    } else if error.is_connect() {
        "could not connect to the agent"
    } else {
        "the request to the agent failed"
    };
    Failed::retry(Error::with_source(ErrorKind::Transport, what, error))
}

async fn read_body(response: &mut reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_LEN - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY_LEN {
            break;
        }
    }
    Ok(body)
}

/// Full jitter: uniform in `[0, min(cap, base * 2^(attempt-1))]`.
fn full_jitter(attempt: u32) -> Duration {
    let ceiling = RETRY_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(RETRY_CAP);
    ceiling.mul_f64(fastrand::f64())
}

fn into_credentials(c: ContainerCredentials) -> Credentials {
    let mut builder = Credentials::builder()
        .access_key_id(c.access_key_id)
        .secret_access_key(c.secret_access_key.expose_secret())
        .session_token(c.token.expose_secret())
        .expiry(c.expiration)
        .provider_name(PROVIDER_NAME);
    if let Some(account_id) = c.account_id {
        builder = builder.account_id(account_id);
    }
    let mut credentials = builder.build();
    // The SDK reports the credential source in its user agent's business metrics; aws-config's
    // container provider records the same feature.
    credentials
        .get_property_mut_or_default::<Vec<AwsCredentialFeature>>()
        .push(AwsCredentialFeature::CredentialsHttp);
    credentials
}

/// Agent text made safe for an error message: the token (and each of its JWT segments)
/// redacted, control characters replaced, truncated.
pub(crate) fn sanitize(body: &[u8], token: Option<&SecretString>) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if let Some(token) = token {
        let token = token.expose_secret();
        if !token.is_empty() {
            text = text.replace(token, "** redacted **");
        }
        for segment in token.split('.').filter(|s| s.len() >= 8) {
            text = text.replace(segment, "** redacted **");
        }
    }
    let mut chars = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c });
    let mut out: String = chars.by_ref().take(MAX_ERROR_TEXT).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("(empty body)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_redacts_truncates_and_strips_controls() {
        let token = SecretString::new("aaaaaaaaaa.bbbbbbbbbb.cccccccccc");
        let body = b"bad token aaaaaaaaaa.bbbbbbbbbb.cccccccccc and bbbbbbbbbb\n\x1b[31m";
        let text = sanitize(body, Some(&token));
        assert!(!text.contains("aaaaaaaaaa"), "{text}");
        assert!(!text.contains("bbbbbbbbbb"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        let long = sanitize(&[b'x'; 1000], None);
        assert_eq!(long.chars().count(), MAX_ERROR_TEXT + 1);
        assert_eq!(sanitize(b"  ", None), "(empty body)");
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        for attempt in 1..10 {
            let ceiling = RETRY_BASE.saturating_mul(1 << (attempt - 1)).min(RETRY_CAP);
            assert!(full_jitter(attempt) <= ceiling);
        }
    }
}
