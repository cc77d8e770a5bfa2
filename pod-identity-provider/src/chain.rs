//! [`DefaultCredentialsChain`]: aws-config's default credentials chain with Pod Identity in the
//! container-credentials position.

use std::fmt;
use std::path::PathBuf;

use aws_config::Region;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
#[allow(deprecated)]
// The alias is what aws-config's builder takes; its target is in aws-runtime.
use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
use aws_config::provider_config::ProviderConfig;
use aws_config::web_identity_token::{StaticConfiguration, WebIdentityTokenCredentialsProvider};
use aws_credential_types::Credentials;
use aws_credential_types::attributes::AccountId;
use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, future};
use aws_smithy_async::time::SharedTimeSource;

use crate::PodIdentityCredentialsProvider;
use crate::config::Env;

/// aws-config's default chain with Pod Identity in the container position, built from the
/// process environment (see [`DefaultCredentialsChain`] for the order).
///
/// ```no_run
/// use aws_config::BehaviorVersion;
/// use pod_identity_provider::RefreshAheadCache;
///
/// # async fn example() {
/// let config = aws_config::defaults(BehaviorVersion::latest())
///     .credentials_provider(pod_identity_provider::default_provider_chain().await)
///     .identity_cache(RefreshAheadCache::new())
///     .load()
///     .await;
/// # let _ = config;
/// # }
/// ```
pub async fn default_provider_chain() -> DefaultCredentialsChain {
    DefaultCredentialsChain::builder().build().await
}

/// aws-config's default credentials chain with [`PodIdentityCredentialsProvider`] in the
/// container-credentials position.
///
/// container-credentials position.
///
/// # Precedence
///
/// The first link that has credentials wins; a link that is not configured answers
/// `not_loaded` and the next one is asked, a link that is configured but broken stops the chain
/// with its error (as in aws-config):
///
/// 1. **Environment**: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (or `SECRET_ACCESS_KEY`),
///    `AWS_SESSION_TOKEN`, `AWS_ACCOUNT_ID`;
/// 2. **Profile**: the shared config and credentials files (`AWS_CONFIG_FILE`,
///    `AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/config` and `~/.aws/credentials`), profile
///    `AWS_PROFILE` or `default`, with everything aws-config's profile provider supports (static
///    keys, `role_arn`, SSO, `credential_process` where aws-config has the feature);
/// 3. **Web identity token**: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (IRSA);
/// 4. **Pod Identity**: [`PodIdentityCredentialsProvider`], which serves the whole container
///    position: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS) and
///    `AWS_CONTAINER_CREDENTIALS_FULL_URI` (EKS Pod Identity and other agents), with the same
///    host rules as aws-config's container provider (see [`Builder`](crate::Builder));
/// 5. **EC2 instance metadata** (IMDSv2), unless `AWS_EC2_METADATA_DISABLED=true`.
///
/// That is aws-config's `DefaultCredentialsChain` order with its container provider replaced.
/// Where Pod Identity is not configured (neither container variable is set), link 4 answers
/// `not_loaded` and the chain behaves as aws-config's default chain. The one difference: an
/// `https` container URI needs this crate's `rustls` feature (aws-config's container provider
/// accepts it with its default HTTP client).
///
/// Links 1–3 and 5 are aws-config's own providers, configured by a
/// [`ProviderConfig`] ([`DefaultCredentialsChainBuilder::configure`]); region, HTTP client, sleep and time for their
/// STS, SSO and IMDS calls come from it. As in aws-config, the region is resolved once when the
/// chain is built (environment, profile, then IMDS) unless [`DefaultCredentialsChainBuilder::region`] or
/// [`DefaultCredentialsChainBuilder::configure`] sets it.
///
/// # An injected environment
///
/// With [`DefaultCredentialsChainBuilder::env`] and a fixed [`Env`], every link reads that environment instead of the
/// process's: the environment link reads its variables there, the profile link takes
/// `AWS_PROFILE`, `AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE` and `HOME` from it (no
/// files without `HOME` or the two file variables), the web identity link is configured from it
/// (session name `AWS_ROLE_SESSION_NAME`, else `web-identity-token-<milliseconds>`), Pod
/// Identity reads it, and the IMDS link is left out when it sets
/// `AWS_EC2_METADATA_DISABLED=true`. What aws-config reads on its own still comes from the
/// process: the IMDS client's other settings, a profile's `credential_source = Environment`,
/// and the region chain (an injected environment without `AWS_REGION` or `AWS_DEFAULT_REGION`
/// leaves the region unset unless the builder sets it). Tests and embedders with settings of
/// their own need nothing more.
///
/// # Caching
///
/// The chain caches nothing itself except what Pod Identity caches; put it behind an identity
/// cache, best [`RefreshAheadCache`](crate::RefreshAheadCache), which answers SDK requests from
/// memory and refreshes ahead of expiry through the chain.
#[derive(Debug)]
pub struct DefaultCredentialsChain {
    chain: CredentialsProviderChain,
}

impl DefaultCredentialsChain {
    /// A builder: region, provider config, profile name, environment, Pod Identity settings.
    pub fn builder() -> DefaultCredentialsChainBuilder {
        DefaultCredentialsChainBuilder::default()
    }

    /// Credentials from the first link that has them.
    pub async fn credentials(&self) -> provider::Result {
        self.chain.provide_credentials().await
    }
}

impl ProvideCredentials for DefaultCredentialsChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        self.chain.provide_credentials()
    }

    fn fallback_on_interrupt(&self) -> Option<Credentials> {
        self.chain.fallback_on_interrupt()
    }
}

/// Builds a [`DefaultCredentialsChain`].
#[derive(Default)]
pub struct DefaultCredentialsChainBuilder {
    provider_config: Option<ProviderConfig>,
    region: Option<Region>,
    profile_name: Option<String>,
    env: Option<Env>,
    pod_identity: Option<PodIdentityCredentialsProvider>,
}

impl fmt::Debug for DefaultCredentialsChainBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultCredentialsChainBuilder")
            .field("region", &self.region)
            .field("profile_name", &self.profile_name)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl DefaultCredentialsChainBuilder {
    /// The configuration of aws-config's links (HTTP client, sleep, time, region, retries).
    /// Default: `ProviderConfig::default()` with the region resolved as aws-config does.
    pub fn configure(mut self, provider_config: ProviderConfig) -> Self {
        self.provider_config = Some(provider_config);
        self
    }

    /// The region for the STS and SSO calls of the profile and web identity links. Default:
    /// the provider config's, else resolved as aws-config does (environment, profile, IMDS),
    /// else from `AWS_REGION`/`AWS_DEFAULT_REGION` of an injected environment.
    pub fn region(mut self, region: Region) -> Self {
        self.region = Some(region);
        self
    }

    /// The profile to read. Default: `AWS_PROFILE`, else `default`.
    pub fn profile_name(mut self, name: impl Into<String>) -> Self {
        self.profile_name = Some(name.into());
        self
    }

    /// The environment every link reads. Default: the process environment. See the
    /// [chain docs](DefaultCredentialsChain#an-injected-environment).
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// The Pod Identity link, for settings of its own (timeouts, refresh windows, explicit
    /// URI). Default: [`PodIdentityCredentialsProvider::builder`] with this builder's
    /// environment.
    pub fn pod_identity(mut self, provider: PodIdentityCredentialsProvider) -> Self {
        self.pod_identity = Some(provider);
        self
    }

    /// Builds the chain. Resolves the region when nothing sets it; reads no credentials.
    pub async fn build(self) -> DefaultCredentialsChain {
        let env = self.env.unwrap_or_default();
        let injected = !env.is_process();
        let region = self.region.or_else(|| {
            injected
                .then(|| {
                    env.non_empty("AWS_REGION")
                        .or_else(|| env.non_empty("AWS_DEFAULT_REGION"))
                })
                .flatten()
                .map(|region| Region::new(region.trim().to_owned()))
        });
        let conf = match (self.provider_config, region) {
            (Some(conf), None) => conf,
            (Some(conf), Some(region)) => conf.with_region(Some(region)),
            (None, Some(region)) => ProviderConfig::default().with_region(Some(region)),
            (None, None) if injected => ProviderConfig::default(),
            (None, None) => ProviderConfig::default().load_default_region().await,
        };
        let pod_identity = self.pod_identity.unwrap_or_else(|| {
            PodIdentityCredentialsProvider::builder()
                .env(env.clone())
                .build()
        });

        let mut profile = ProfileFileCredentialsProvider::builder().configure(&conf);
        // An injected environment names the profile itself (else `default`): left unset, the
        // profile link would read `AWS_PROFILE` from the process.
        let profile_name = self.profile_name.or_else(|| {
            injected.then(|| {
                env.non_empty("AWS_PROFILE")
                    .unwrap_or_else(|| "default".to_owned())
            })
        });
        if let Some(name) = profile_name {
            profile = profile.profile_name(name.trim());
        }
        let chain = if injected {
            profile = profile.profile_files(profile_files(&env));
            let mut chain = CredentialsProviderChain::first_try(
                "Environment",
                EnvironmentCredentials(env.clone()),
            )
            .or_else("Profile", profile.build());
            if let Some(web_identity) = web_identity(&env, &conf) {
                chain = chain.or_else("WebIdentityToken", web_identity);
            }
            chain = chain.or_else("PodIdentity", pod_identity);
            let imds_disabled = env
                .non_empty("AWS_EC2_METADATA_DISABLED")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
            if !imds_disabled {
                chain = chain.or_else(
                    "Ec2InstanceMetadata",
                    ImdsCredentialsProvider::builder().configure(&conf).build(),
                );
            }
            chain
        } else {
            CredentialsProviderChain::first_try(
                "Environment",
                EnvironmentVariableCredentialsProvider::new(),
            )
            .or_else("Profile", profile.build())
            .or_else(
                "WebIdentityToken",
                WebIdentityTokenCredentialsProvider::builder()
                    .configure(&conf)
                    .build(),
            )
            .or_else("PodIdentity", pod_identity)
            .or_else(
                "Ec2InstanceMetadata",
                ImdsCredentialsProvider::builder().configure(&conf).build(),
            )
        };
        DefaultCredentialsChain { chain }
    }
}

/// The profile files an injected environment points at: the override variables (a leading `~`
/// expanded with its `HOME`), else the defaults under its `HOME`. As in aws-config, a missing
/// file counts as empty; here it is looked for when the chain is built.
#[allow(deprecated)] // See the import.
fn profile_files(env: &Env) -> ProfileFiles {
    let home = env.non_empty("HOME").map(|home| PathBuf::from(home.trim()));
    let mut files = ProfileFiles::builder();
    for (kind, variable, default) in [
        (ProfileFileKind::Config, "AWS_CONFIG_FILE", "config"),
        (
            ProfileFileKind::Credentials,
            "AWS_SHARED_CREDENTIALS_FILE",
            "credentials",
        ),
    ] {
        let path = match env.non_empty(variable) {
            Some(path) => {
                let path = PathBuf::from(path.trim());
                match (path.strip_prefix("~"), &home) {
                    (Ok(rest), Some(home)) => Some(home.join(rest)),
                    _ => Some(path),
                }
            }
            None => home.as_ref().map(|home| home.join(".aws").join(default)),
        };
        files = match path {
            Some(path) if path.is_file() => files.with_file(kind, path),
            // aws-config's builder needs a file of each kind; an explicit path that does not
            // exist would be an error there, not the empty file of the default chain.
            _ => files.with_contents(kind, ""),
        };
    }
    files.build()
}

/// The web identity link of an injected environment, when it is configured there.
fn web_identity(env: &Env, conf: &ProviderConfig) -> Option<WebIdentityTokenCredentialsProvider> {
    let token_file = env.non_empty("AWS_WEB_IDENTITY_TOKEN_FILE")?;
    let role_arn = env.non_empty("AWS_ROLE_ARN")?;
    let session_name = env.non_empty("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| {
        let millis = SharedTimeSource::default()
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        format!("web-identity-token-{millis}")
    });
    Some(
        WebIdentityTokenCredentialsProvider::builder()
            .configure(conf)
            .static_configuration(StaticConfiguration {
                web_identity_token_file: PathBuf::from(token_file.trim()),
                role_arn: role_arn.trim().to_owned(),
                session_name: session_name.trim().to_owned(),
            })
            .build(),
    )
}

/// aws-config's environment credentials provider, reading an injected environment (aws-config's
/// own reads only the process's).
#[derive(Debug)]
struct EnvironmentCredentials(Env);

impl EnvironmentCredentials {
    fn credentials(&self) -> provider::Result {
        let env = &self.0;
        let access_key = env
            .non_empty("AWS_ACCESS_KEY_ID")
            .ok_or_else(|| CredentialsError::not_loaded("environment variable not set"))?;
        let secret_key = env
            .non_empty("AWS_SECRET_ACCESS_KEY")
            .or_else(|| env.non_empty("SECRET_ACCESS_KEY"))
            .ok_or_else(|| CredentialsError::not_loaded("environment variable not set"))?;
        let mut builder = Credentials::builder()
            .access_key_id(access_key)
            .secret_access_key(secret_key)
            .provider_name("EnvironmentVariable");
        builder.set_session_token(
            env.non_empty("AWS_SESSION_TOKEN")
                .map(|t| t.trim().to_owned()),
        );
        builder.set_account_id(
            env.non_empty("AWS_ACCOUNT_ID")
                .map(|id| AccountId::from(id.trim())),
        );
        let mut credentials = builder.build();
        credentials
            .get_property_mut_or_default::<Vec<AwsCredentialFeature>>()
            .push(AwsCredentialFeature::CredentialsEnvVars);
        Ok(credentials)
    }
}

impl ProvideCredentials for EnvironmentCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(self.credentials())
    }
}
