//! Pod Identity associations outside EKS: the [`AssociationStore`] trait and a file-backed store.
//!
//! [`FileAssociationStore`] reads a JSON file of associations in the EKS API's shape (core's
//! [`Association`], camelCase field names), either a bare array or `{"associations": [...]}`:
//!
//! ```json
//! {"associations": [{
//!   "clusterName": "lab",
//!   "namespace": "default",
//!   "serviceAccount": "app",
//!   "roleArn": "arn:aws:iam::111122223333:role/app",
//!   "targetRoleArn": "arn:aws:iam::444455556666:role/app-data",
//!   "disableSessionTags": false,
//!   "externalId": "optional",
//!   "policy": "{\"Version\":\"2012-10-17\",\"Statement\":[...]}"
//! }]}
//! ```
//!
//! `clusterName` may be left out (a ConfigMap per cluster need not repeat it): such an entry
//! applies to whatever cluster the agent serves, and an entry naming the cluster wins over it.
//! EKS accepts a `policy` only with `disableSessionTags`; here both may be set, but the session
//! policy and the tags share STS's packed-size limit (`PackedPolicyTooLarge`, answered 400).
//! As in EKS, one (cluster, namespace, service account) has at most one association, and a
//! cluster at most 1000; a file that breaks either rule, or does not parse, is refused.
//! The file is re-read every poll interval (default 10 s, on tokio's clock) and swapped in when
//! its contents change; a refused edit is logged and the last good associations stay in force,
//! so a typo in a ConfigMap never takes every pod's credentials away.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use pod_identity_core::association::MAX_ASSOCIATIONS_PER_CLUSTER;
use pod_identity_core::{
    association::Association, association::ClusterName, association::Namespace,
    association::ServiceAccountName,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// How often [`FileAssociationStore`] re-reads its file by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// What an association is looked up by: a service account in a namespace of a cluster (EKS
/// allows one association for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssociationKey<'a> {
    /// The cluster the request is for.
    pub cluster: &'a ClusterName,
    /// The pod's namespace.
    pub namespace: &'a Namespace,
    /// The pod's service account.
    pub service_account: &'a ServiceAccountName,
}

/// Finds the association of a pod's service account.
pub trait AssociationStore: Send + Sync + 'static {
    /// The association for `key`, if there is one. An error means the store could not
    /// answer (the agent answers 500 and retries later).
    fn association(
        &self,
        key: AssociationKey<'_>,
    ) -> impl Future<Output = Result<Option<Arc<Association>>, StoreError>> + Send;
}

impl<S: AssociationStore> AssociationStore for Arc<S> {
    fn association(
        &self,
        key: AssociationKey<'_>,
    ) -> impl Future<Output = Result<Option<Arc<Association>>, StoreError>> + Send {
        (**self).association(key)
    }
}

/// Why associations could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be read.
    #[error("cannot read associations from {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The contents are not a valid set of associations.
    #[error("invalid associations in {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another store could not answer.
    #[error("association store unavailable: {0}")]
    Unavailable(String),
}

/// `None` for entries without `clusterName` (any cluster).
type Key = (Option<ClusterName>, Namespace, ServiceAccountName);

/// Stands in for a missing `clusterName` while parsing (replaced by the request's cluster).
const ANY_CLUSTER: &str = "any-cluster";

/// A validated set of associations, indexed by (cluster, namespace, service account).
#[derive(Clone, Debug, Default)]
pub struct Associations {
    by_key: HashMap<Key, Arc<Association>>,
}

impl Associations {
    /// Validates `list`: one association per (cluster, namespace, service account), at most
    /// 1000 per cluster.
    pub fn new(list: Vec<Association>) -> Result<Self, String> {
        Self::with_clusters(list.into_iter().map(|a| (true, a)))
    }

    /// As [`new`](Self::new); entries paired with `false` apply to any cluster.
    fn with_clusters(list: impl Iterator<Item = (bool, Association)>) -> Result<Self, String> {
        let mut by_key = HashMap::new();
        let mut per_cluster: HashMap<Option<ClusterName>, usize> = HashMap::new();
        for (named, association) in list {
            let cluster = named.then(|| association.cluster_name.clone());
            let count = per_cluster.entry(cluster.clone()).or_default();
            *count += 1;
            if *count > MAX_ASSOCIATIONS_PER_CLUSTER {
                return Err(format!(
                    "more than {MAX_ASSOCIATIONS_PER_CLUSTER} associations for cluster {}",
                    cluster.as_ref().map_or("(any)", ClusterName::as_str)
                ));
            }
            let key = (
                cluster,
                association.namespace.clone(),
                association.service_account.clone(),
            );
            if by_key.insert(key, Arc::new(association)).is_some() {
                return Err(
                    "two associations for one cluster, namespace and service account".to_owned(),
                );
            }
        }
        Ok(Self { by_key })
    }

    /// Parses and validates a JSON document: an array of associations or
    /// `{"associations": [...]}`; entries without `clusterName` apply to any cluster.
    pub fn from_json(document: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Document {
            List(Vec<serde_json::Map<String, serde_json::Value>>),
            Wrapped {
                associations: Vec<serde_json::Map<String, serde_json::Value>>,
            },
        }
        let (Document::List(list) | Document::Wrapped { associations: list }) =
            serde_json::from_slice::<Document>(document).map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    "expected a list of associations or {\"associations\": [...]}".to_owned()
                }
                _ => e.to_string(),
            })?;
        let mut entries = Vec::with_capacity(list.len());
        for (index, mut entry) in list.into_iter().enumerate() {
            let named = entry.get("clusterName").is_some_and(|name| !name.is_null());
            if !named {
                entry.insert("clusterName".to_owned(), ANY_CLUSTER.into());
            }
            let association = serde_json::from_value::<Association>(entry.into())
                .map_err(|e| format!("association {index}: {e}"))?;
            entries.push((named, association));
        }
        Self::with_clusters(entries.into_iter())
    }

    /// The association for `key`, if any: one naming the cluster, else one for any cluster.
    pub fn find(&self, key: AssociationKey<'_>) -> Option<Arc<Association>> {
        let mut by = (
            Some(key.cluster.clone()),
            key.namespace.clone(),
            key.service_account.clone(),
        );
        if let Some(found) = self.by_key.get(&by) {
            return Some(Arc::clone(found));
        }
        by.0 = None;
        let mut found = Association::clone(self.by_key.get(&by)?);
        found.cluster_name = key.cluster.clone();
        Some(Arc::new(found))
    }

    /// How many associations there are.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

impl AssociationStore for Associations {
    async fn association(
        &self,
        key: AssociationKey<'_>,
    ) -> Result<Option<Arc<Association>>, StoreError> {
        Ok(self.find(key))
    }
}

/// Associations read from a JSON file and reloaded when it changes; cheap to clone.
#[derive(Clone)]
pub struct FileAssociationStore {
    inner: Arc<FileInner>,
}

struct FileInner {
    path: PathBuf,
    current: RwLock<Arc<Associations>>,
    digest: std::sync::Mutex<[u8; 32]>,
    /// Counts successful loads (the first is 1); tests and operators can wait on it.
    generation: watch::Sender<u64>,
    /// Counts refused edits.
    rejected: watch::Sender<u64>,
}

impl fmt::Debug for FileAssociationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileAssociationStore")
            .field("path", &self.inner.path)
            .field("associations", &self.current().len())
            .field("generation", &*self.inner.generation.borrow())
            .finish_non_exhaustive()
    }
}

impl FileAssociationStore {
    /// Reads `path` (an error if it is unreadable or invalid) and re-reads it every
    /// [`DEFAULT_POLL_INTERVAL`]. Must be called within a tokio runtime.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with_interval(path, DEFAULT_POLL_INTERVAL).await
    }

    /// As [`open`](Self::open), polling every `interval` (zero: never reload).
    pub async fn open_with_interval(
        path: impl Into<PathBuf>,
        interval: Duration,
    ) -> Result<Self, StoreError> {
        let path = path.into();
        let contents = read(&path).await?;
        let associations =
            Associations::from_json(&contents).map_err(|reason| StoreError::Invalid {
                path: path.clone(),
                reason,
            })?;
        tracing::info!(path = %path.display(), associations = associations.len(), "associations loaded");
        let store = Self {
            inner: Arc::new(FileInner {
                path,
                current: RwLock::new(Arc::new(associations)),
                digest: std::sync::Mutex::new(Sha256::digest(&contents).into()),
                generation: watch::Sender::new(1),
                rejected: watch::Sender::new(0),
            }),
        };
        if !interval.is_zero() {
            tokio::spawn(poll(Arc::downgrade(&store.inner), interval));
        }
        Ok(store)
    }

    /// The associations in force.
    pub fn current(&self) -> Arc<Associations> {
        match self.inner.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The number of successful loads so far; changes when an edit is taken.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// The number of refused edits so far.
    pub fn rejected(&self) -> watch::Receiver<u64> {
        self.inner.rejected.subscribe()
    }

    /// Re-reads the file now: takes it if it changed and is valid.
    pub async fn reload(&self) -> Result<(), StoreError> {
        self.inner.reload().await
    }
}

impl FileInner {
    async fn reload(&self) -> Result<(), StoreError> {
        let contents = read(&self.path).await?;
        let digest: [u8; 32] = Sha256::digest(&contents).into();
        let unchanged = self
            .digest
            .lock()
            .map(|last| *last == digest)
            .unwrap_or(false);
        if unchanged {
            return Ok(());
        }
        let result = Associations::from_json(&contents);
        if let Ok(mut last) = self.digest.lock() {
            // Remember refused contents too, so one bad edit is logged once.
            *last = digest;
        }
        match result {
            Ok(associations) => {
                tracing::info!(
                    path = %self.path.display(),
                    associations = associations.len(),
                    "associations reloaded"
                );
                let associations = Arc::new(associations);
                match self.current.write() {
                    Ok(mut slot) => *slot = associations,
                    Err(poisoned) => *poisoned.into_inner() = associations,
                }
                self.generation.send_modify(|g| *g += 1);
                Ok(())
            }
            Err(reason) => {
                self.rejected.send_modify(|r| *r += 1);
                Err(StoreError::Invalid {
                    path: self.path.clone(),
                    reason,
                })
            }
        }
    }
}

async fn poll(inner: Weak<FileInner>, interval: Duration) {
    super::every(inner, interval, |inner| async move {
        if let Err(error) = inner.reload().await {
            tracing::error!(%error, "keeping the last good associations");
        }
    })
    .await;
}

async fn read(path: &Path) -> Result<Vec<u8>, StoreError> {
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || std::fs::read(owned)).await;
    let error = |reason: String| StoreError::Read {
        path: path.to_owned(),
        reason,
    };
    read.map_err(|e| error(e.to_string()))?
        .map_err(|e| error(e.to_string()))
}

/// Answers from the associations of the last good read.
impl AssociationStore for FileAssociationStore {
    async fn association(
        &self,
        key: AssociationKey<'_>,
    ) -> Result<Option<Arc<Association>>, StoreError> {
        self.current().association(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ns: &str, sa: &str) -> serde_json::Value {
        serde_json::json!({
            "clusterName": "lab", "namespace": ns, "serviceAccount": sa,
            "roleArn": "arn:aws:iam::111122223333:role/app"
        })
    }

    #[test]
    fn both_shapes_parse() {
        let list = serde_json::json!([entry("default", "app")]).to_string();
        let wrapped = serde_json::json!({"associations": [entry("default", "app")]}).to_string();
        for doc in [list, wrapped] {
            let set = Associations::from_json(doc.as_bytes()).unwrap();
            let found = set
                .find(AssociationKey {
                    cluster: &"lab".parse().unwrap(),
                    namespace: &"default".parse().unwrap(),
                    service_account: &"app".parse().unwrap(),
                })
                .unwrap();
            assert_eq!(
                found.role_arn.as_str(),
                "arn:aws:iam::111122223333:role/app"
            );
            assert!(!found.disable_session_tags);
        }
    }

    #[test]
    fn duplicates_and_bad_fields_are_refused_with_a_reason() {
        let dup = serde_json::json!([entry("default", "app"), entry("default", "app")]);
        assert!(
            Associations::from_json(dup.to_string().as_bytes())
                .unwrap_err()
                .contains("two associations")
        );
        let bad = serde_json::json!({"associations": [entry("Not_A_Namespace", "app")]});
        let reason = Associations::from_json(bad.to_string().as_bytes()).unwrap_err();
        assert!(
            reason.contains("namespace") || reason.contains("line"),
            "{reason}"
        );
        let bad_arn = serde_json::json!([{
            "clusterName": "lab", "namespace": "default", "serviceAccount": "app", "roleArn": "nope"
        }]);
        assert!(Associations::from_json(bad_arn.to_string().as_bytes()).is_err());
        assert!(Associations::from_json(b"{").is_err());
    }

    #[test]
    fn entries_without_a_cluster_apply_to_any_and_named_ones_win() {
        let mut named = entry("default", "app");
        named["roleArn"] = "arn:aws:iam::111122223333:role/named".into();
        let mut any = entry("default", "app");
        any.as_object_mut().unwrap().remove("clusterName");
        let doc = serde_json::json!([named, any]).to_string();
        let set = Associations::from_json(doc.as_bytes()).unwrap();
        let find = |cluster: &str| {
            set.find(AssociationKey {
                cluster: &cluster.parse().unwrap(),
                namespace: &"default".parse().unwrap(),
                service_account: &"app".parse().unwrap(),
            })
            .unwrap()
        };
        assert_eq!(find("lab").role_arn.role_name(), Some("named"));
        let other = find("other");
        assert_eq!(other.role_arn.role_name(), Some("app"));
        assert_eq!(other.cluster_name.as_str(), "other");
        let dup = serde_json::json!([any, any]).to_string();
        assert!(Associations::from_json(dup.as_bytes()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_document_never_panics(document in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Associations::from_json(&document);
        }

        #[test]
        fn parsing_near_valid_entries_never_panics(
            ns in "[a-zA-Z0-9._-]{0,70}",
            sa in "[a-z0-9.-]{0,70}",
            role in "[a-z0-9:/-]{0,60}",
            cluster in proptest::option::of("[A-Za-z0-9_-]{0,20}"),
        ) {
            let mut entry = serde_json::json!({"namespace": ns, "serviceAccount": sa, "roleArn": role});
            if let Some(cluster) = cluster {
                entry["clusterName"] = cluster.into();
            }
            let _ = Associations::from_json(serde_json::json!([entry]).to_string().as_bytes());
        }
    }

    #[test]
    fn at_most_a_thousand_per_cluster() {
        let many: Vec<_> = (0..=MAX_ASSOCIATIONS_PER_CLUSTER)
            .map(|i| entry("default", &format!("sa-{i}")))
            .collect();
        let reason = Associations::from_json(serde_json::Value::from(many).to_string().as_bytes())
            .unwrap_err();
        assert!(reason.contains("1000"), "{reason}");
    }
}
