//! [`Builder`] for [`PodIdentityCredentialsProvider`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_async::rt::sleep::{AsyncSleep, SharedAsyncSleep, TokioSleep};
use aws_smithy_async::time::{SharedTimeSource, TimeSource};
use pod_identity_core::secret::SecretString;

use super::PodIdentityCredentialsProvider;
use crate::cache::{RefreshCache, RefreshWindows, Settings, Stats};
use crate::client::{AgentClient, HttpSettings};
use crate::config::{Env, Overrides};

/// Default connect timeout: 2 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default read timeout: 5 s.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default attempts per fetch: 3.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Longest connect or read timeout used; longer ones are clamped to it, because the HTTP stack
/// panics on deadlines past what its clock can represent (`Duration::MAX`).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Expiry assumed for credentials the agent sends without one (it always sends one).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Builds a [`PodIdentityCredentialsProvider`]. [`build`](Builder::build) cannot fail:
/// configuration problems surface on the first call, as in aws-config.
///
/// `Debug` never shows the token.
///
/// # Precedence
///
/// The URI, first match wins:
///
/// 1. [`Builder::full_uri`];
/// 2. `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, appended to `http://169.254.170.2` (ECS; the
///    Rust SDK and botocore prefer it over the full URI, and so do we);
/// 3. `AWS_CONTAINER_CREDENTIALS_FULL_URI` (what EKS Pod Identity sets).
///
/// None of them → the provider is not configured (`CredentialsError::not_loaded`, so a chain
/// moves on). Empty variables count as unset.
///
/// The token, first match wins: [`Builder::token_file`],
/// [`Builder::token`], then (only when the builder sets
/// neither) `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, then `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
/// No token → the request carries no `Authorization` header, as in the SDKs.
///
/// # Allowed hosts
///
/// Plain `http` may only reach loopback (`127.0.0.0/8`, `::1`), `169.254.170.2`,
/// `169.254.170.23` and `fd00:ec2::23`; IPv4-mapped IPv6 addresses are refused. A host name is
/// resolved and every address must be allowed; the request then goes to those addresses only.
/// `https` may reach any host and needs the `rustls` feature. A failed resolution is not
/// remembered: the next call tries again. Once a configuration passes (variables read, host
/// resolved and checked), it is kept for the life of the provider.
///
/// # Token file
///
/// Re-read on every fetch, so kubelet's rotation is picked up; surrounding whitespace is
/// trimmed. A missing, unreadable, empty or oversized (more than 64 KiB) file is an error that
/// names the path.
#[derive(Default)]
pub struct Builder {
    overrides: Overrides,
    env: Option<Env>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    max_attempts: Option<u32>,
    windows: Option<RefreshWindows>,
    time_source: Option<SharedTimeSource>,
    sleep: Option<SharedAsyncSleep>,
    http_client: Option<reqwest::Client>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("full_uri", &self.overrides.full_uri)
            .field("token_file", &self.overrides.token_file)
            .field("token", &self.overrides.token)
            .field("env", &self.env)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("windows", &self.windows)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// The agent's URI. Default: from the environment (see [`Builder`]).
    pub fn full_uri(mut self, uri: impl Into<String>) -> Self {
        self.overrides.full_uri = Some(uri.into());
        self
    }

    /// A file holding the authorization token, re-read on every fetch. Wins over
    /// [`token`](Self::token). Default: `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.overrides.token_file = Some(path.into());
        self
    }

    /// A fixed authorization token. Default: `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    pub fn token(mut self, token: impl Into<SecretString>) -> Self {
        self.overrides.token = Some(token.into());
        self
    }

    /// Where environment variables are read. Default: the process environment.
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// Connect timeout per attempt. Default: 2 s; at most [`MAX_TIMEOUT`] (one day).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Read timeout per attempt. Default: 5 s; at most [`MAX_TIMEOUT`] (one day). An attempt never takes longer than the connect
    /// timeout plus the read timeout.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// Attempts per fetch, at least 1. Default: 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// When to refresh ahead of expiry. Default: [`RefreshWindows::new`].
    pub fn refresh_windows(mut self, windows: RefreshWindows) -> Self {
        self.windows = Some(windows);
        self
    }

    /// The wall clock. Default: the system clock.
    pub fn time_source(mut self, time_source: impl TimeSource + 'static) -> Self {
        self.time_source = Some(SharedTimeSource::new(time_source));
        self
    }

    /// How the provider waits (refresh schedule, backoff). Default: tokio's timer.
    pub fn sleep_impl(mut self, sleep: impl AsyncSleep + 'static) -> Self {
        self.sleep = Some(SharedAsyncSleep::new(sleep));
        self
    }

    /// The HTTP client, for tests. Default: a client built from the timeouts above, without
    /// proxies or redirects, pinned to the checked addresses. A client given here is used as
    /// it is: its timeouts, proxy and redirect settings are the caller's.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Builds the provider. Cannot fail; nothing is read or fetched until the first call.
    pub fn build(self) -> PodIdentityCredentialsProvider {
        let stats = Arc::new(Stats::default());
        let sleep = self
            .sleep
            .unwrap_or_else(|| SharedAsyncSleep::new(TokioSleep::new()));
        let time = self.time_source.unwrap_or_default();
        let settings = Settings {
            windows: self.windows.unwrap_or_default(),
            time,
            sleep: sleep.clone(),
            default_lifetime: DEFAULT_LIFETIME,
            idle_after: None,
            name: "pod-identity",
        };
        let http = HttpSettings {
            connect_timeout: self
                .connect_timeout
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
                .min(MAX_TIMEOUT),
            read_timeout: self
                .read_timeout
                .unwrap_or(DEFAULT_READ_TIMEOUT)
                .min(MAX_TIMEOUT),
            max_attempts: self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            client: self.http_client,
        };
        let client = AgentClient::new(
            self.overrides,
            self.env.unwrap_or_default(),
            http,
            sleep,
            stats.clone(),
        );
        let cache = RefreshCache::new(settings, stats);
        PodIdentityCredentialsProvider::from_parts(cache, client)
    }
}
