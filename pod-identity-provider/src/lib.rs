//! An [aws-config] credentials provider for EKS Pod Identity, with a lock-free, refresh-ahead
//! cache.
//!
//! ```no_run
//! use aws_config::BehaviorVersion;
//! use pod_identity_provider::RefreshAheadCache;
//!
//! # async fn example() {
//! let config = aws_config::defaults(BehaviorVersion::latest())
//!     .credentials_provider(pod_identity_provider::default_provider_chain().await)
//!     .identity_cache(RefreshAheadCache::new())
//!     .load()
//!     .await;
//! # let _ = config;
//! # }
//! ```
//!
//! [`default_provider_chain`] keeps aws-config's default credentials chain (environment,
//! profile, web identity token, then Pod Identity in the container-credentials position, then
//! IMDS), so the same binary gets credentials on a laptop, in CI, with IRSA and in a pod; where
//! the pod has no Pod Identity it is exactly aws-config's chain ([`DefaultCredentialsChain`] has
//! the order and why). [`RefreshAheadCache`] replaces the SDK's lazy identity cache: requests are answered
//! from memory without a lock and credentials are refreshed in the background before they
//! expire, so no request waits for a refresh (and it works for any credentials provider).
//!
//! To compose your own chain, use [`PodIdentityCredentialsProvider`] itself: when the pod has
//! no Pod Identity association it answers `CredentialsError::not_loaded`, so a
//! `CredentialsProviderChain` moves on. It caches by itself, so it also works behind
//! `IdentityCache::no_cache()`.
//!
//! A cold load (the first, or one after the credentials expired) is bounded by the identity
//! cache's load timeout: [`RefreshAheadCache`] allows 30 s, enough for the provider's three
//! attempts. The SDK's lazy cache has its own default, which depends on the release: older
//! aws-smithy-runtime releases use a fixed 5 s, which can cut the provider's retries short when
//! the agent is slow; current ones (1.16, the locked set here) derive it from the client's retry
//! and timeout settings, about 21.6 s with the defaults (3 attempts, 3.1 s connect timeout).
//! `IdentityCache::lazy().load_timeout(..)` sets it explicitly.
//!
//! # What it does, and the defaults
//!
//! | setting | default |
//! |---|---|
//! | agent URI | `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on `http://169.254.170.2`), else `AWS_CONTAINER_CREDENTIALS_FULL_URI` |
//! | token | `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (re-read every fetch, trimmed, ≤ 64 KiB), else `AWS_CONTAINER_AUTHORIZATION_TOKEN` |
//! | allowed hosts over `http` | loopback, `169.254.170.2`, `169.254.170.23`, `fd00:ec2::23`; host names must resolve only to those; `https` anywhere (feature `rustls`) |
//! | proxy, redirects | never (a redirect is an error) |
//! | connect / read timeout | 2 s / 5 s per attempt (at most one day each) |
//! | attempts per fetch | 3, exponential backoff with full jitter (100 ms base, 2 s cap) |
//! | retried | connection errors, timeouts, 5xx, 429 (`Retry-After` in seconds honoured up to 5 s), unparseable 200 |
//! | not retried | other 4xx, a `{"Code": ..., "Message": ...}` error document |
//! | advisory refresh window | remaining lifetime at fetch ≤ 20 min → 5 min; 20–90 min → 15 min; ≥ 90 min → 60 min; the refresh lands at a random point in the first half of the window |
//! | mandatory window | 60 s before expiry: callers are still answered at once with the cached credentials (a stale serve) and a refresh is made sure to be under way; no caller ever waits while unexpired credentials exist, not even for a fetch in flight |
//! | failed background refresh | keep serving the last good credentials until they expire; retry after 10 s doubling to 5 min, equal jitter, always a few attempts before expiry |
//! | agent error text in errors | at most 256 characters, control characters replaced, token redacted |
//! | time source / sleep | system clock / tokio timer |
//! | environment | the process environment ([`Env`]) |
//! | [`RefreshAheadCache`] | the same windows and background retries; a partition nobody asked for in 30 min stops refreshing; a load times out after 30 s; an identity without an expiry lives 15 min; time and sleep from the SDK client |
//!
//! Configuration is read on first use and the outcome is remembered only when it succeeds: a
//! missing variable or a failed DNS resolution is tried again on the next call. See
//! [`Builder`] for the precedence rules.
//!
//! # Caching
//!
//! Credentials sit in an `ArcSwap`, and each thread keeps its own copy of them: a cache hit
//! takes no lock, makes no I/O and writes no shared memory. (Cloning the credentials
//! allocates: they carry the SDK's `CredentialsHttp` business metric as a property, as
//! aws-config's container provider's do, and `Credentials::clone` copies its property map.) A
//! background task, holding only a weak reference, refreshes them ahead of expiry; callers never
//! wait while unexpired credentials exist. Without valid credentials, concurrent callers share
//! one fetch. Credentials are returned with their real expiry, their `AccountId` and the
//! `CredentialsHttp` business metric (reported in the SDK's user agent). The task
//! ends when the last clone of the provider is dropped. See [`RefreshWindows`] for when it
//! refreshes.
//!
//! # Observability
//!
//! `tracing` events (targets under `pod_identity_provider`) for fetches, refreshes (info),
//! retries (info), failures (warn) and stale serving; none carries a token or a secret key. [`PodIdentityCredentialsProvider::metrics`]
//! and [`RefreshAheadCache::metrics`] return counters.
//!
//! # Versions
//!
//! Built and tested against the locked SDK release set and, in CI, against the newest
//! releases of every dependency (`scripts/newest-deps.sh`, a scratch copy of the workspace with
//! its lock updated). Both run on the current stable toolchain: the declared `rust-version`
//! (1.90) is what the locked set resolves for, not a toolchain CI builds with, and the newest
//! SDK releases may need a newer compiler than 1.90.
//!
//! # Public API
//!
//! Every item is at the crate root:
//!
//! | item | what it is |
//! |---|---|
//! | [`default_provider_chain`], [`DefaultCredentialsChain`], [`DefaultCredentialsChainBuilder`] | aws-config's default credentials chain with Pod Identity in the container position |
//! | [`PodIdentityCredentialsProvider`], [`Builder`] | the Pod Identity credentials provider and its builder |
//! | [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_READ_TIMEOUT`], [`DEFAULT_MAX_ATTEMPTS`], [`MAX_TIMEOUT`], [`MAX_TOKEN_FILE_LEN`] | the provider's defaults and limits |
//! | [`RefreshAheadCache`], [`RefreshAheadCacheBuilder`] | the refresh-ahead identity cache for any SDK client |
//! | [`DEFAULT_IDLE_AFTER`], [`DEFAULT_LOAD_TIMEOUT`], [`DEFAULT_IDENTITY_LIFETIME`] | the identity cache's defaults |
//! | [`RefreshWindows`] | when both caches refresh ahead of expiry |
//! | [`Metrics`] | counters of both caches |
//! | [`Env`] | the environment settings are read from (the process's, or a fixed map) |
//! | [`Error`], [`ErrorKind`] | why loading credentials failed |
//!
//! # Features
//!
//! - `rustls`: allow `https://` credentials URIs (off by default; the agent speaks plain HTTP).
//!
//! [aws-config]: https://docs.rs/aws-config

mod cache;
mod chain;
mod client;
mod config;
mod error;
mod identity_cache;
mod provider;

pub use cache::{Metrics, RefreshWindows};
pub use chain::{DefaultCredentialsChain, DefaultCredentialsChainBuilder, default_provider_chain};
pub use config::{Env, MAX_TOKEN_FILE_LEN};
pub use error::{Error, ErrorKind};
pub use identity_cache::{
    DEFAULT_IDENTITY_LIFETIME, DEFAULT_IDLE_AFTER, DEFAULT_LOAD_TIMEOUT, RefreshAheadCache,
    RefreshAheadCacheBuilder,
};
pub use provider::{
    Builder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_READ_TIMEOUT, MAX_TIMEOUT,
    PodIdentityCredentialsProvider,
};
