//! The node's credentials from a shared credentials file that is rotated on disk (features
//! `eks-auth` or `self-managed`).
//!
//! On EKS hybrid nodes the node's credentials live in the AWS shared credentials file and are
//! replaced there before they expire (by the `nodeadm` credential process). aws-config's
//! profile provider reads the file once, so an agent using it keeps signing with the first keys.
//! [`SharedCredentialsFile`] re-reads the file whenever its modification time or size changed
//! and at least every [`DEFAULT_RELOAD_INTERVAL`] (one minute, the reference's
//! `--rotate-credentials` interval), and keeps the parsed keys in between.
//!
//! - **File**: `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`
//!   ([`SharedCredentialsFile::from_env`]); **profile**: `AWS_PROFILE`, else `default`.
//! - **Keys**: `aws_access_key_id`, `aws_secret_access_key`, and `aws_session_token` (or the
//!   older `aws_security_token`) if present. Other settings of the profile (`role_arn`,
//!   `credential_process`, …) are not followed.
//! - **Failures**: a file that cannot be read, or a profile without both keys, is an error
//!   (naming the file and the profile, never a key); once keys were loaded, such a failure logs
//!   a warning and the last keys stay in use until a later read succeeds, so a file caught
//!   half-written does not fail a call.
//!
//! Give it to the source with `credentials_provider_uncached`: it caches itself, and the SDK's
//! identity cache in front would hold the old keys up to their stated expiry (the reload
//! interval) after the file changed.
//!
//! ```no_run
//! # #[cfg(feature = "eks-auth")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use pod_identity_agent_lib::source::eks_auth::EksAuthSource;
//! use pod_identity_agent_lib::node_credentials::SharedCredentialsFile;
//!
//! let source = EksAuthSource::builder()
//!     .aws_client(|aws| {
//!         aws.region("us-west-2")
//!             .credentials_provider_uncached(SharedCredentialsFile::from_env().build())
//!     })
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```

use aws_smithy_async::time::SharedTimeSource;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The longest time keys read from the file are used without reading it again.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";

const PROVIDER_NAME: &str = "SharedCredentialsFile";

/// Credentials from a profile of a shared credentials file, re-read when the file changes.
#[derive(Clone)]
pub struct SharedCredentialsFile {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    profile: String,
    reload_interval: Duration,
    clock: SharedTimeSource,
    loaded: Mutex<Option<Loaded>>,
}

struct Loaded {
    credentials: Credentials,
    stamp: FileStamp,
    at: Instant,
}

/// What tells a changed file apart: its modification time and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl fmt::Debug for SharedCredentialsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedCredentialsFile")
            .field("path", &self.inner.path)
            .field("profile", &self.inner.profile)
            .field("reload_interval", &self.inner.reload_interval)
            .finish_non_exhaustive()
    }
}

impl SharedCredentialsFile {
    /// A builder for the file at `path`, profile `default`.
    pub fn builder(path: impl Into<PathBuf>) -> SharedCredentialsFileBuilder {
        SharedCredentialsFileBuilder {
            path: path.into(),
            profile: DEFAULT_PROFILE.to_owned(),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            clock: SharedTimeSource::default(),
        }
    }

    /// A builder for the file and profile the process environment names (see the
    /// [module docs](self)).
    pub fn from_env() -> SharedCredentialsFileBuilder {
        // The environment seam of this provider: read once, at start-up.
        #[allow(clippy::disallowed_methods)]
        let read = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Self::from_vars(read)
    }

    /// A builder for the file and profile `env` names (`AWS_SHARED_CREDENTIALS_FILE`,
    /// `HOME`, `AWS_PROFILE`).
    pub fn from_vars(
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> SharedCredentialsFileBuilder {
        let path = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                env("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(".aws")
                    .join("credentials")
            });
        let mut builder = Self::builder(path);
        if let Some(profile) = env("AWS_PROFILE").and_then(|p| p.into_string().ok()) {
            builder = builder.profile(profile);
        }
        builder
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The profile read.
    pub fn profile(&self) -> &str {
        &self.inner.profile
    }

    /// The profile's keys: the kept ones while the file is unchanged and the reload interval
    /// has not passed, else read again.
    pub async fn credentials(&self) -> provider::Result {
        let inner = &self.inner;
        let mut loaded = inner.loaded.lock().await;
        let stamp = tokio::fs::metadata(&inner.path)
            .await
            .ok()
            .map(|meta| FileStamp {
                modified: meta.modified().ok(),
                len: meta.len(),
            });
        if let Some(kept) = loaded.as_ref()
            && stamp == Some(kept.stamp)
            && kept.at.elapsed() < inner.reload_interval
        {
            return Ok(kept.credentials.clone());
        }
        match self.read(stamp).await {
            Ok((credentials, stamp)) => {
                if loaded.is_some() {
                    tracing::info!(
                        path = %inner.path.display(),
                        profile = %inner.profile,
                        access_key_id = credentials.access_key_id(),
                        "reloaded the node's credentials"
                    );
                }
                *loaded = Some(Loaded {
                    credentials: credentials.clone(),
                    stamp,
                    at: Instant::now(),
                });
                Ok(credentials)
            }
            Err(error) => match loaded.as_ref() {
                Some(kept) => {
                    tracing::warn!(
                        error = %crate::error::ErrorChain(&error),
                        "cannot reload the node's credentials; using the last ones read"
                    );
                    Ok(kept.credentials.clone())
                }
                None => Err(error),
            },
        }
    }

    async fn read(
        &self,
        stamp: Option<FileStamp>,
    ) -> Result<(Credentials, FileStamp), CredentialsError> {
        let inner = &self.inner;
        let failed = |what: &str| {
            CredentialsError::provider_error(format!(
                "{what} ({}, profile {})",
                inner.path.display(),
                inner.profile
            ))
        };
        let stamp = stamp.ok_or_else(|| failed("cannot read the shared credentials file"))?;
        let text = tokio::fs::read_to_string(&inner.path)
            .await
            .map_err(|_| failed("cannot read the shared credentials file"))?;
        let keys = profile_keys(&text, &inner.profile)
            .ok_or_else(|| failed("no access key id and secret access key in the profile"))?;
        // Stated so that a caching caller asks again within the reload interval.
        let expiry = inner.clock.now() + inner.reload_interval;
        let credentials = Credentials::new(
            keys.access_key_id,
            keys.secret_access_key,
            keys.session_token,
            Some(expiry),
            PROVIDER_NAME,
        );
        Ok((credentials, stamp))
    }
}

impl ProvideCredentials for SharedCredentialsFile {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.credentials())
    }
}

/// Builds a [`SharedCredentialsFile`].
pub struct SharedCredentialsFileBuilder {
    path: PathBuf,
    profile: String,
    reload_interval: Duration,
    clock: SharedTimeSource,
}

impl fmt::Debug for SharedCredentialsFileBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedCredentialsFileBuilder")
            .field("path", &self.path)
            .field("profile", &self.profile)
            .field("reload_interval", &self.reload_interval)
            .finish_non_exhaustive()
    }
}

impl SharedCredentialsFileBuilder {
    /// The profile to read (default `default`).
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = profile.into();
        self
    }

    /// The longest time between reads (default one minute), measured on tokio's clock.
    pub fn reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// The wall clock the stated expiry is computed from.
    pub fn clock(mut self, clock: SharedTimeSource) -> Self {
        self.clock = clock;
        self
    }

    /// The provider; the file is first read on the first call.
    pub fn build(self) -> SharedCredentialsFile {
        SharedCredentialsFile {
            inner: Arc::new(Inner {
                path: self.path,
                profile: self.profile,
                reload_interval: self.reload_interval,
                clock: self.clock,
                loaded: Mutex::new(None),
            }),
        }
    }
}

struct ProfileKeys {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// The keys of `profile` in a shared credentials file (INI: `[profile]` sections, `key = value`
/// lines, `#` and `;` comments; keys compared case-insensitively). A profile that appears twice
/// is merged, later values winning, as the SDKs do.
fn profile_keys(text: &str, profile: &str) -> Option<ProfileKeys> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            in_profile = section
                .split_once(']')
                .is_some_and(|(name, _)| name.trim() == profile);
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = (!value.is_empty()).then(|| value.to_owned());
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            "aws_security_token" if token.is_none() => token = value,
            _ => {}
        }
    }
    Some(ProfileKeys {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use proptest::prelude::*;

    use super::*;

    const FILE: &str = "# written by nodeadm\n\
        [other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other-secret\n\n\
        [default]\n\
        aws_access_key_id=ASIAFIRST\n\
        AWS_Secret_Access_Key = first-secret  \n\
        ; a comment\n\
        aws_session_token = first-token\n";

    #[test]
    fn the_profile_is_parsed() {
        let keys = profile_keys(FILE, "default").unwrap();
        assert_eq!(keys.access_key_id, "ASIAFIRST");
        assert_eq!(keys.secret_access_key, "first-secret");
        assert_eq!(keys.session_token.as_deref(), Some("first-token"));
        let other = profile_keys(FILE, "other").unwrap();
        assert_eq!(other.access_key_id, "AKIAOTHER");
        assert_eq!(other.session_token, None);
        assert!(profile_keys(FILE, "missing").is_none());
        assert!(profile_keys("[default]\naws_access_key_id = A\n", "default").is_none());
        assert!(
            profile_keys(
                "[default]\naws_access_key_id = A\naws_secret_access_key =\n",
                "default"
            )
            .is_none()
        );
    }

    #[test]
    fn the_environment_names_the_file_and_profile() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let file = SharedCredentialsFile::from_vars(env(&[("HOME", "/root")])).build();
        assert_eq!(file.path(), Path::new("/root/.aws/credentials"));
        assert_eq!(file.profile(), "default");
        let file = SharedCredentialsFile::from_vars(env(&[
            ("HOME", "/root"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/etc/aws/credentials"),
            ("AWS_PROFILE", "hybrid"),
        ]))
        .build();
        assert_eq!(file.path(), Path::new("/etc/aws/credentials"));
        assert_eq!(file.profile(), "hybrid");
    }

    fn write(path: &Path, id: &str, secret: &str) {
        std::fs::write(
            path,
            format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
        )
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_file_is_read_again_and_an_unchanged_one_every_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        write(&path, "ASIAFIRST", "first-secret");
        let file = SharedCredentialsFile::builder(&path).build();
        assert_eq!(
            file.credentials().await.unwrap().access_key_id(),
            "ASIAFIRST"
        );

        // A different size is a change, seen on the next call.
        write(&path, "ASIASECOND0", "second-secret");
        assert_eq!(
            file.credentials().await.unwrap().access_key_id(),
            "ASIASECOND0"
        );

        // Same size and (on a coarse clock) the same mtime: only the interval finds it.
        write(&path, "ASIASECOND1", "second-secret");
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let kept = file.inner.loaded.lock().await.as_ref().unwrap().stamp;
        if kept.modified == Some(modified) {
            assert_eq!(
                file.credentials().await.unwrap().access_key_id(),
                "ASIASECOND0"
            );
        }
        tokio::time::advance(DEFAULT_RELOAD_INTERVAL).await;
        assert_eq!(
            file.credentials().await.unwrap().access_key_id(),
            "ASIASECOND1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_file_keeps_the_last_keys_and_errors_name_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let file = SharedCredentialsFile::builder(&path).build();
        let error = file.credentials().await.unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(
            text.contains("cannot read the shared credentials file"),
            "{text}"
        );

        write(&path, "ASIAFIRST", "first-secret");
        let credentials = file.credentials().await.unwrap();
        assert_eq!(credentials.secret_access_key(), "first-secret");
        assert!(!format!("{credentials:?} {file:?}").contains("first-secret"));

        std::fs::write(&path, "[default]\naws_access_key_id = ASIAHALF").unwrap();
        assert_eq!(
            file.credentials().await.unwrap().access_key_id(),
            "ASIAFIRST"
        );

        let fresh = SharedCredentialsFile::builder(&path).build();
        let error = fresh.credentials().await.unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(
            text.contains("profile default") && !text.contains("ASIAHALF"),
            "{text}"
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC*", profile in "[a-z]{0,8}") {
            let _ = profile_keys(&text, &profile);
        }
    }
}
