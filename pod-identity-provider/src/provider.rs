//! [`PodIdentityCredentialsProvider`]: the credentials provider.

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, future};

use crate::cache::{Copies, Expiring, Metrics, Refresh, RefreshCache};
use crate::client::AgentClient;
use crate::error::Error;

mod builder;

pub use builder::{
    Builder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_READ_TIMEOUT, MAX_TIMEOUT,
};

/// An aws-config credentials provider for EKS Pod Identity with a lock-free, refresh-ahead cache.
///
/// Build one with [`PodIdentityCredentialsProvider::builder`]; see the [crate docs](crate) for
/// the defaults.
///
/// Cloning is cheap and clones share one cache and one background refresh task, which ends
/// when the last clone is dropped.
///
/// [`credentials`](Self::credentials) answers from the cache while it holds unexpired
/// credentials (a clock read, an atomic load and a clone of this thread's copy of the
/// credentials: no lock, no I/O, no write to shared memory), even in the last 60 s before
/// expiry and while a refresh is in flight or failing; otherwise it joins or starts the one
/// fetch in flight. Through `ProvideCredentials` a hit is a ready future. Unconfigured →
/// `not_loaded`; configured but wrong → `invalid_configuration`; anything else →
/// `provider_error` (see [`Error`]).
///
/// In a chain: without Pod Identity configured it answers `not_loaded` and the chain moves on.
///
/// ```
/// use aws_config::environment::EnvironmentVariableCredentialsProvider;
/// use aws_config::meta::credentials::CredentialsProviderChain;
/// use pod_identity_provider::PodIdentityCredentialsProvider;
///
/// let chain = CredentialsProviderChain::first_try(
///     "PodIdentity",
///     PodIdentityCredentialsProvider::builder().build(),
/// )
/// .or_else("Environment", EnvironmentVariableCredentialsProvider::new());
/// # let _ = chain;
/// ```
#[derive(Clone, Debug)]
pub struct PodIdentityCredentialsProvider {
    cache: Arc<RefreshCache<Credentials, Error>>,
    client: Arc<AgentClient>,
}

impl Expiring for Credentials {
    fn expiry(&self) -> Option<SystemTime> {
        Credentials::expiry(self)
    }

    fn replicate(&self) -> Self {
        let mut copy = self.clone();
        // `expiry_mut` goes through `Arc::make_mut`: the shared inner value is copied, so the
        // copy has its own reference count; every field, property and the provider name stay.
        let _ = copy.expiry_mut();
        copy
    }

    fn copies() -> &'static LocalKey<RefCell<Copies<Self>>> {
        thread_local! {
            static COPIES: RefCell<Copies<Credentials>> = const { RefCell::new(Copies::new()) };
        }
        &COPIES
    }
}

/// The background loader: shares the client, never the cache.
struct ClientRefresh(Arc<AgentClient>);

impl Refresh<Credentials, Error> for ClientRefresh {
    fn refresh(&self) -> crate::cache::BoxFuture<'static, Result<Credentials, Error>> {
        let client = self.0.clone();
        Box::pin(async move { client.fetch().await })
    }
}

impl PodIdentityCredentialsProvider {
    /// A builder with every default (settings from the process environment).
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn from_parts(cache: RefreshCache<Credentials, Error>, client: AgentClient) -> Self {
        let client = Arc::new(client);
        cache.set_refresher(Box::new(ClientRefresh(client.clone())));
        Self {
            cache: Arc::new(cache),
            client,
        }
    }

    /// Credentials, from the cache when valid ones are held, otherwise fetched from the agent.
    ///
    /// Never waits while unexpired credentials are cached, not even for a refresh in flight.
    /// The credentials carry their real expiry and the account id.
    pub async fn credentials(&self) -> provider::Result {
        let client = &self.client;
        self.cache.get(|| client.fetch()).await.map_err(Into::into)
    }

    /// Counters since the provider was built (shared by all clones).
    pub fn metrics(&self) -> Metrics {
        self.cache.metrics()
    }
}

impl ProvideCredentials for PodIdentityCredentialsProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        // A warm hit answers with a ready future: `new` would box one on every call.
        match self.cache.try_hit() {
            Some(credentials) => future::ProvideCredentials::ready(Ok(credentials)),
            None => future::ProvideCredentials::new(self.credentials()),
        }
    }

    fn fallback_on_interrupt(&self) -> Option<Credentials> {
        self.cache.peek()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use aws_credential_types::attributes::AccountId;
    use aws_credential_types::credential_feature::AwsCredentialFeature;

    use super::*;

    /// Credentials as the provider returns them: account id and business metric included.
    pub(crate) fn credentials() -> Credentials {
        let mut credentials = Credentials::builder()
            .access_key_id("AKID")
            .secret_access_key("secret")
            .session_token("token")
            .expiry(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
            .account_id(AccountId::from("123456789012"))
            .provider_name("pod-identity")
            .build();
        credentials
            .get_property_mut_or_default::<Vec<AwsCredentialFeature>>()
            .push(AwsCredentialFeature::CredentialsHttp);
        credentials
    }

    #[test]
    fn a_replica_is_equal_but_has_its_own_reference_count() {
        let original = credentials();
        let replica = original.replicate();
        assert_eq!(replica, original);
        assert_eq!(replica.account_id(), original.account_id());
        assert_eq!(
            replica.get_property::<Vec<AwsCredentialFeature>>(),
            Some(&vec![AwsCredentialFeature::CredentialsHttp])
        );
        assert_eq!(format!("{replica:?}"), format!("{original:?}"));
        // The replica holds no reference to the original's inner value: were it a plain clone,
        // `expiry_mut` below would have to copy that value instead of writing in place.
        let mut original = original;
        let address = original.access_key_id().as_ptr();
        *original.expiry_mut() = None;
        assert_eq!(
            original.access_key_id().as_ptr(),
            address,
            "the original was not shared with the replica"
        );
    }
}
