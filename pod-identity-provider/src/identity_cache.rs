//! [`RefreshAheadCache`]: a refresh-ahead, lock-free identity cache for any SDK client.

use std::cell::RefCell;
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::thread::LocalKey;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use aws_config::identity::IdentityCache;
use aws_credential_types::Credentials;
use aws_smithy_async::rt::sleep::{AsyncSleep, SharedAsyncSleep, TokioSleep};
use aws_smithy_async::time::{SharedTimeSource, TimeSource};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::identity::{
    Identity, IdentityCachePartition, IdentityFuture, ResolveCachedIdentity, ResolveIdentity,
    SharedIdentityResolver,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::cache::{
    BoxFuture, Copies, Expiring, Metrics, Refresh, RefreshCache, RefreshWindows, Settings, Stats,
};

/// Default time after which a partition nobody asked for stops refreshing: 30 minutes.
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(30 * 60);
/// Longest a resolver may take to load an identity: 30 seconds, so that
/// [`PodIdentityCredentialsProvider`](crate::PodIdentityCredentialsProvider)'s retries (up to
/// 3 attempts of 2 s connect + 5 s read, with their backoff) fit. The lazy cache's default is a
/// fixed 5 s in older SDK releases and derived from the client's retry settings in current ones.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime assumed for an identity without an expiry: 15 minutes (as the lazy cache).
pub const DEFAULT_IDENTITY_LIFETIME: Duration = Duration::from_secs(15 * 60);

type PartitionCache = RefreshCache<Identity, SharedError>;

/// Partitions kept in write-once slots; a client has one or two.
const SLOTS: usize = 4;

/// The partitions, in the order they were first asked for: the first [`SLOTS`] in write-once
/// slots a lookup reads with one atomic load each (no lock, no reference count written), any
/// further ones in a copy-on-write list.
#[derive(Debug, Default)]
struct Partitions {
    slots: [OnceLock<Slot>; SLOTS],
    more: ArcSwap<Vec<(IdentityCachePartition, Arc<PartitionCache>)>>,
}

/// A partition in a slot, with the resolver it was created for (the same one the background
/// loader holds), so that a hit can hand the caller's clone back at once.
#[derive(Debug)]
struct Slot {
    partition: IdentityCachePartition,
    cache: Arc<PartitionCache>,
    resolver: SharedIdentityResolver,
}

impl Partitions {
    /// The slot of partition `key`, if it has one: the hit path, borrowed.
    fn slot(&self, key: IdentityCachePartition) -> Option<&Slot> {
        self.slots
            .iter()
            .map_while(OnceLock::get)
            .find(|slot| slot.partition == key)
    }

    /// The cache of partition `key`, wherever it is.
    fn find(&self, key: IdentityCachePartition) -> Option<Arc<PartitionCache>> {
        if let Some(slot) = self.slot(key) {
            return Some(slot.cache.clone());
        }
        self.more
            .load()
            .iter()
            .find(|(partition, _)| *partition == key)
            .map(|(_, cache)| cache.clone())
    }

    /// The cache of partition `key`: the one already there, else `fresh` (a concurrent caller
    /// for the same partition gets the same one).
    fn insert(
        &self,
        key: IdentityCachePartition,
        fresh: &Arc<PartitionCache>,
        resolver: &SharedIdentityResolver,
    ) -> Arc<PartitionCache> {
        for slot in &self.slots {
            let slot = slot.get_or_init(|| Slot {
                partition: key,
                cache: fresh.clone(),
                resolver: resolver.clone(),
            });
            if slot.partition == key {
                return slot.cache.clone();
            }
        }
        let mut winner = fresh.clone();
        self.more.rcu(|more| {
            let mut more = Vec::clone(more);
            match more.iter().find(|(partition, _)| *partition == key) {
                Some((_, found)) => winner = found.clone(),
                None => {
                    winner = fresh.clone();
                    more.push((key, fresh.clone()));
                }
            }
            more
        });
        winner
    }
}

/// A refresh-ahead, lock-free identity cache for any SDK client.
///
/// The SDK puts an identity cache in front of every identity resolver; the default (the lazy
/// cache) takes a read lock per call and refreshes on the request path, failing the request if
/// that refresh fails. This cache has the provider's design instead, for any resolver:
///
/// - one refresh-ahead cache per [`IdentityCachePartition`] (each resolver has its own); the
///   first four partitions sit in write-once slots (a client has one or two, so a lookup is a
///   scan of a few words: no lock, no hashing, no reference count written), any further ones
///   in a copy-on-write list;
/// - a hit is a clock read, an atomic load and a clone of this thread's copy of the identity;
///   a background task per partition refreshes ahead of expiry with the [`RefreshWindows`];
///   failed refreshes keep serving the last good identity until it expires;
/// - a partition nobody asked for in `idle_after` (default 30 min) stops refreshing; the next
///   caller wakes it (and loads on the request path only if its identity expired meanwhile);
/// - each thread that reads a partition keeps its own copy of its identity (one per refresh):
///   an identity holding [`Credentials`] is rebuilt from its own deep copy of the credentials
///   as the SDK builds it (`Identity::from`), so threads hitting at once do not share
///   reference counts; other identities are cloned;
/// - identities without an expiry are treated as valid for 15 minutes, as in the lazy cache;
/// - a load (cold or background) that takes longer than `load_timeout` (default 30 s) fails;
/// - background refreshes call the resolver with the runtime components of the last cold load
///   and an empty `ConfigBag` (credentials providers do not read the bag).
///
/// Time and sleep come from the client's runtime components unless set on the builder.
///
/// ```no_run
/// use aws_config::BehaviorVersion;
/// use pod_identity_provider::{PodIdentityCredentialsProvider, RefreshAheadCache};
///
/// # async fn example() {
/// let config = aws_config::defaults(BehaviorVersion::latest())
///     .credentials_provider(PodIdentityCredentialsProvider::builder().build())
///     .identity_cache(RefreshAheadCache::new())
///     .load()
///     .await;
/// # let _ = config;
/// # }
/// ```
///
/// Cheap to clone; clones share partitions. Background tasks end when the last clone (and the
/// SDK clients holding it) are dropped.
#[derive(Clone, Debug)]
pub struct RefreshAheadCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    partitions: Partitions,
    windows: RefreshWindows,
    idle_after: Duration,
    load_timeout: Duration,
    time: Option<SharedTimeSource>,
    sleep: Option<SharedAsyncSleep>,
    stats: Arc<Stats>,
}

impl Default for RefreshAheadCache {
    fn default() -> Self {
        Self::new()
    }
}

impl RefreshAheadCache {
    /// A cache with every default.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for the windows, idle time, clock and sleep.
    pub fn builder() -> RefreshAheadCacheBuilder {
        RefreshAheadCacheBuilder::default()
    }

    /// Counters summed over partitions.
    pub fn metrics(&self) -> Metrics {
        self.inner.stats.snapshot()
    }

    fn partition(
        &self,
        resolver: &SharedIdentityResolver,
        components: &RuntimeComponents,
    ) -> Arc<PartitionCache> {
        let key = resolver.cache_partition();
        if let Some(found) = self.inner.partitions.find(key) {
            return found;
        }
        let time = self
            .inner
            .time
            .clone()
            .or_else(|| components.time_source())
            .unwrap_or_default();
        let sleep = self
            .inner
            .sleep
            .clone()
            .or_else(|| components.sleep_impl())
            .unwrap_or_else(|| SharedAsyncSleep::new(TokioSleep::new()));
        let fresh = Arc::new(RefreshCache::new(
            Settings {
                windows: self.inner.windows,
                time,
                sleep,
                default_lifetime: DEFAULT_IDENTITY_LIFETIME,
                idle_after: Some(self.inner.idle_after),
                name: "identity-cache",
            },
            self.inner.stats.clone(),
        ));
        self.inner.partitions.insert(key, &fresh, resolver)
    }
}

impl ResolveCachedIdentity for RefreshAheadCache {
    fn resolve_cached_identity<'a>(
        &'a self,
        resolver: SharedIdentityResolver,
        runtime_components: &'a RuntimeComponents,
        config_bag: &'a ConfigBag,
    ) -> IdentityFuture<'a> {
        let key = resolver.cache_partition();
        // A warm hit answers with a ready future (`new` would box one on every call), and
        // borrows its partition from the map: cloning the partition's `Arc` would write one
        // reference count shared by every thread on every hit.
        let resolver = match self.inner.partitions.slot(key) {
            Some(slot) => {
                // The caller cloned the resolver for this call: every thread writes its one
                // reference count. Dropping the clone at once, while that count's cache line
                // is still this core's, saves taking it back from another core later; the
                // slot holds an equal resolver for a miss.
                drop(resolver);
                if let Some(identity) = slot.cache.try_hit() {
                    return IdentityFuture::ready(Ok(identity));
                }
                slot.resolver.clone()
            }
            None => {
                let hit = self
                    .inner
                    .partitions
                    .find(key)
                    .and_then(|partition| partition.try_hit());
                if let Some(identity) = hit {
                    return IdentityFuture::ready(Ok(identity));
                }
                resolver
            }
        };
        let partition = self.partition(&resolver, runtime_components);
        let load_timeout = self.inner.load_timeout;
        IdentityFuture::new(async move {
            let cache = partition.clone();
            partition
                .get(|| async move {
                    // Keep the background loader current with the latest components.
                    match background_components(runtime_components) {
                        Some(components) => cache.set_refresher(Box::new(ResolverRefresh {
                            resolver: resolver.clone(),
                            components,
                            sleep: cache.sleep().clone(),
                            load_timeout,
                        })),
                        None => tracing::debug!(
                            "could not copy the runtime components; refreshing on the request path"
                        ),
                    }
                    bounded(
                        resolver.resolve_identity(runtime_components, config_bag),
                        cache.sleep(),
                        load_timeout,
                    )
                    .await
                })
                .await
                .map_err(BoxError::from)
        })
    }
}

impl Expiring for Identity {
    fn expiry(&self) -> Option<SystemTime> {
        self.expiration()
    }

    fn replicate(&self) -> Self {
        // A clone shares the data's, the debug closure's and every property's reference count.
        // An identity of credentials is rebuilt from a deep copy of them, the way the SDK's
        // credentials resolver builds it, which gives it counts of its own.
        match self.data::<Credentials>() {
            Some(credentials) => Identity::from(credentials.replicate()),
            None => self.clone(),
        }
    }

    fn copies() -> &'static LocalKey<RefCell<Copies<Self>>> {
        thread_local! {
            static COPIES: RefCell<Copies<Identity>> = const { RefCell::new(Copies::new()) };
        }
        &COPIES
    }
}

/// The components with this cache swapped for none: the background loader must not hold the
/// cache that holds it (a reference cycle would keep both alive forever).
fn background_components(components: &RuntimeComponents) -> Option<RuntimeComponents> {
    components
        .to_builder()
        .with_identity_cache(Some(IdentityCache::no_cache()))
        .build()
        .ok()
}

struct ResolverRefresh {
    resolver: SharedIdentityResolver,
    components: RuntimeComponents,
    sleep: SharedAsyncSleep,
    load_timeout: Duration,
}

/// Runs a resolver future for at most `timeout`: a hung resolver must not hold the load (and
/// everyone waiting for it) forever.
async fn bounded(
    load: IdentityFuture<'_>,
    sleep: &SharedAsyncSleep,
    timeout: Duration,
) -> Result<Identity, SharedError> {
    tokio::select! {
        result = load => result.map_err(SharedError::from),
        _ = sleep.sleep(timeout) => Err(SharedError::from(BoxError::from(format!(
            "identity resolver timed out after {timeout:?}"
        )))),
    }
}

impl Refresh<Identity, SharedError> for ResolverRefresh {
    fn refresh(&self) -> BoxFuture<'static, Result<Identity, SharedError>> {
        let resolver = self.resolver.clone();
        let components = self.components.clone();
        let (sleep, load_timeout) = (self.sleep.clone(), self.load_timeout);
        Box::pin(async move {
            let bag = ConfigBag::base();
            bounded(
                resolver.resolve_identity(&components, &bag),
                &sleep,
                load_timeout,
            )
            .await
        })
    }
}

/// A resolver error shared by every caller that waited for the same load.
#[derive(Clone)]
struct SharedError(Arc<dyn StdError + Send + Sync + 'static>);

impl From<BoxError> for SharedError {
    fn from(error: BoxError) -> Self {
        Self(Arc::from(error))
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl StdError for SharedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Builds a [`RefreshAheadCache`].
#[derive(Debug, Default)]
pub struct RefreshAheadCacheBuilder {
    windows: Option<RefreshWindows>,
    idle_after: Option<Duration>,
    load_timeout: Option<Duration>,
    time: Option<SharedTimeSource>,
    sleep: Option<SharedAsyncSleep>,
}

impl RefreshAheadCacheBuilder {
    /// When to refresh ahead of expiry. Default: [`RefreshWindows::new`].
    pub fn refresh_windows(mut self, windows: RefreshWindows) -> Self {
        self.windows = Some(windows);
        self
    }

    /// A partition nobody asked for in this long stops refreshing. Default: 30 minutes.
    pub fn idle_after(mut self, idle_after: Duration) -> Self {
        self.idle_after = Some(idle_after);
        self
    }

    /// Longest a resolver may take to load an identity. Default: 30 seconds.
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = Some(timeout);
        self
    }

    /// The wall clock. Default: the client's time source, else the system clock.
    pub fn time_source(mut self, time_source: impl TimeSource + 'static) -> Self {
        self.time = Some(SharedTimeSource::new(time_source));
        self
    }

    /// How the cache waits. Default: the client's sleep, else tokio's timer.
    pub fn sleep_impl(mut self, sleep: impl AsyncSleep + 'static) -> Self {
        self.sleep = Some(SharedAsyncSleep::new(sleep));
        self
    }

    /// Builds the cache.
    pub fn build(self) -> RefreshAheadCache {
        RefreshAheadCache {
            inner: Arc::new(Inner {
                partitions: Partitions::default(),
                windows: self.windows.unwrap_or_default(),
                idle_after: self.idle_after.unwrap_or(DEFAULT_IDLE_AFTER),
                load_timeout: self.load_timeout.unwrap_or(DEFAULT_LOAD_TIMEOUT),
                time: self.time,
                sleep: self.sleep,
                stats: Arc::new(Stats::default()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_credential_types::attributes::AccountId;
    use aws_credential_types::credential_feature::AwsCredentialFeature;

    use super::*;

    #[test]
    fn an_identity_replica_is_built_as_the_sdk_builds_it_and_shares_no_data() {
        let original = Identity::from(crate::provider::tests::credentials());
        let replica = original.replicate();

        assert_eq!(replica.expiration(), original.expiration());
        assert_eq!(
            replica.data::<Credentials>(),
            original.data::<Credentials>()
        );
        assert_eq!(
            replica.property::<AccountId>().map(AccountId::as_str),
            Some("123456789012")
        );
        // Features travel as a frozen layer: the replica carries the same ones.
        let features = |identity: &Identity| {
            identity
                .property::<aws_smithy_types::config_bag::FrozenLayer>()
                .map(|layer| {
                    layer
                        .load::<AwsCredentialFeature>()
                        .cloned()
                        .collect::<Vec<_>>()
                })
        };
        assert_eq!(features(&replica), features(&original));
        assert!(
            features(&replica)
                .unwrap_or_default()
                .contains(&AwsCredentialFeature::CredentialsHttp)
        );
        let address = |identity: &Identity| {
            identity
                .data::<Credentials>()
                .map(|c| c.access_key_id().as_ptr())
        };
        assert_ne!(
            address(&replica),
            address(&original),
            "the replica holds its own copy of the credentials"
        );
    }

    #[test]
    fn other_identities_are_cloned() {
        let original = Identity::new("a token", None);
        let replica = original.replicate();
        assert_eq!(replica.data::<&str>(), Some(&"a token"));
    }
}
