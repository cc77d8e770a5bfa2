//! Pod Identity associations, the Kubernetes and EKS names they are made of, and session tags.
//!
//! Contract (EKS API, Kubernetes validation):
//! - [`ClusterName`]: 1–100 characters, `^[0-9A-Za-z][A-Za-z0-9\-_]*$`.
//! - [`Namespace`]: a DNS-1123 label, at most 63 characters of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
//! - [`ServiceAccountName`]: a DNS-1123 subdomain, at most 253 characters of dot-separated labels.
//! - [`AssociationId`]: `a-` followed by 17 lower-case letters or digits.
//! - [`Association`] carries every field of the EKS API's `PodIdentityAssociation` and
//!   (de)serializes with its camelCase names; `createdAt`/`modifiedAt` are epoch seconds.
//! - EKS tags every role session with the six [`SESSION_TAG_KEYS`] ([`session_tags`]) unless the
//!   association disables them; with tags disabled and a target role set, the STS external id
//!   is `region/account-id/cluster-name/namespace/service-account-name` ([`external_id`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::arn::Arn;

/// A name that failed validation. The text shows at most the first 100 characters of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct NameError {
    kind: &'static str,
    value: String,
    reason: &'static str,
}

impl NameError {
    fn new(kind: &'static str, value: &str, reason: &'static str) -> Self {
        Self {
            kind,
            value: value.chars().take(100).collect(),
            reason,
        }
    }

    /// Which kind of name: `cluster name`, `namespace`, ...
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $validate:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $validate(s).map_err(|reason| NameError::new($kind, s, reason))?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                $validate(&s).map_err(|reason| NameError::new($kind, &s, reason))?;
                Ok(Self(s))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;

            fn try_from(s: &str) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// An EKS cluster name: 1–100 characters, `^[0-9A-Za-z][A-Za-z0-9\-_]*$`.
    ///
    /// ```
    /// use pod_identity_core::association::ClusterName;
    /// assert!("my-cluster_1".parse::<ClusterName>().is_ok());
    /// assert!("-bad".parse::<ClusterName>().is_err());
    /// ```
    ClusterName,
    "cluster name",
    validate_cluster_name
);
name_type!(
    /// A Kubernetes namespace: a DNS-1123 label (at most 63 characters).
    Namespace,
    "namespace",
    validate_dns1123_label
);
name_type!(
    /// A Kubernetes service-account name: a DNS-1123 subdomain (at most 253 characters).
    ServiceAccountName,
    "service account name",
    validate_dns1123_subdomain
);
name_type!(
    /// A Pod Identity association id: `a-` followed by 17 lower-case letters or digits.
    AssociationId,
    "association id",
    validate_association_id
);

fn validate_cluster_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 100 {
        return Err("must be 1 to 100 characters");
    }
    if !s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric) {
        return Err("must start with a letter or digit");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("may contain only letters, digits, `-` and `_`");
    }
    Ok(())
}

fn validate_dns1123_label(s: &str) -> Result<(), &'static str> {
    if s.len() > 63 {
        return Err("must be at most 63 characters");
    }
    check_label(s)
}

fn validate_dns1123_subdomain(s: &str) -> Result<(), &'static str> {
    if s.len() > 253 {
        return Err("must be at most 253 characters");
    }
    s.split('.').try_for_each(check_label)
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn check_label(label: &str) -> Result<(), &'static str> {
    let b = label.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() {
        return Err("must be non-empty lower-case DNS labels");
    }
    if !b.iter().all(|c| alnum(c) || *c == b'-') {
        return Err("may contain only lower-case letters, digits and `-`");
    }
    if !b.first().is_some_and(alnum) || !b.last().is_some_and(alnum) {
        return Err("must start and end with a lower-case letter or digit");
    }
    Ok(())
}

fn validate_association_id(s: &str) -> Result<(), &'static str> {
    let rest = s.strip_prefix("a-").ok_or("must start with `a-`")?;
    if rest.len() != 17
        || !rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err("must be `a-` followed by 17 lower-case letters or digits");
    }
    Ok(())
}

/// A Pod Identity association as the EKS API describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Association {
    /// The cluster the association belongs to.
    pub cluster_name: ClusterName,
    /// The pod's namespace.
    pub namespace: Namespace,
    /// The pod's service account.
    pub service_account: ServiceAccountName,
    /// The role EKS assumes for the pod.
    pub role_arn: Arn,
    /// The association's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association_arn: Option<Arn>,
    /// The association's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association_id: Option<AssociationId>,
    /// Resource tags on the association (at most 50).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// When it was created.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "epoch_seconds_opt"
    )]
    pub created_at: Option<SystemTime>,
    /// When it was last modified.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "epoch_seconds_opt"
    )]
    pub modified_at: Option<SystemTime>,
    /// The owner, when another service (an add-on) created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_arn: Option<Arn>,
    /// Whether EKS leaves out the session tags.
    #[serde(default)]
    pub disable_session_tags: bool,
    /// A role assumed with the first role's credentials (role chaining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_role_arn: Option<Arn>,
    /// The external id EKS passes when assuming the target role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// A session policy (requires session tags disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// The maximum number of associations in one cluster.
pub const MAX_ASSOCIATIONS_PER_CLUSTER: usize = 1000;
/// The maximum number of resource tags on one association.
pub const MAX_ASSOCIATION_TAGS: usize = 50;

/// Session tag: the cluster's ARN.
pub const TAG_CLUSTER_ARN: &str = "eks-cluster-arn";
/// Session tag: the cluster's name.
pub const TAG_CLUSTER_NAME: &str = "eks-cluster-name";
/// Session tag: the pod's namespace.
pub const TAG_NAMESPACE: &str = "kubernetes-namespace";
/// Session tag: the pod's service account.
pub const TAG_SERVICE_ACCOUNT: &str = "kubernetes-service-account";
/// Session tag: the pod's name.
pub const TAG_POD_NAME: &str = "kubernetes-pod-name";
/// Session tag: the pod's uid.
pub const TAG_POD_UID: &str = "kubernetes-pod-uid";
/// The six session tags EKS adds (transitively) to a pod's role session, in this order.
pub const SESSION_TAG_KEYS: [&str; 6] = [
    TAG_CLUSTER_ARN,
    TAG_CLUSTER_NAME,
    TAG_NAMESPACE,
    TAG_SERVICE_ACCOUNT,
    TAG_POD_NAME,
    TAG_POD_UID,
];

/// Who a pod is, as far as its session tags are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    /// The cluster's ARN.
    pub cluster_arn: Arn,
    /// The cluster's name.
    pub cluster_name: ClusterName,
    /// The pod's namespace.
    pub namespace: Namespace,
    /// The pod's service account.
    pub service_account: ServiceAccountName,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's uid.
    pub pod_uid: String,
}

impl PodIdentity {
    /// The pod's session tags; see [`session_tags`].
    pub fn session_tags(&self) -> Vec<(&'static str, String)> {
        session_tags(self)
    }
}

/// The session tags EKS adds for `pod`, ordered as [`SESSION_TAG_KEYS`].
///
/// ```
/// use pod_identity_core::association::{session_tags, PodIdentity, SESSION_TAG_KEYS};
///
/// let pod = PodIdentity {
///     cluster_arn: "arn:aws:eks:us-west-2:111122223333:cluster/demo".parse().unwrap(),
///     cluster_name: "demo".parse().unwrap(),
///     namespace: "default".parse().unwrap(),
///     service_account: "app".parse().unwrap(),
///     pod_name: "app-7d9f".into(),
///     pod_uid: "2d7f2a8c-0000-4000-8000-000000000000".into(),
/// };
/// let tags = session_tags(&pod);
/// assert_eq!(tags.iter().map(|(k, _)| *k).collect::<Vec<_>>(), SESSION_TAG_KEYS);
/// assert_eq!(tags[1].1, "demo");
/// ```
pub fn session_tags(pod: &PodIdentity) -> Vec<(&'static str, String)> {
    vec![
        (TAG_CLUSTER_ARN, pod.cluster_arn.to_string()),
        (TAG_CLUSTER_NAME, pod.cluster_name.to_string()),
        (TAG_NAMESPACE, pod.namespace.to_string()),
        (TAG_SERVICE_ACCOUNT, pod.service_account.to_string()),
        (TAG_POD_NAME, pod.pod_name.clone()),
        (TAG_POD_UID, pod.pod_uid.clone()),
    ]
}

/// The STS external id EKS uses for a target role when session tags are disabled:
/// `region/account-id/cluster-name/namespace/service-account-name`.
///
/// ```
/// use pod_identity_core::association::external_id;
///
/// let id = external_id(
///     "us-west-2",
///     "111122223333",
///     &"demo".parse().unwrap(),
///     &"default".parse().unwrap(),
///     &"app".parse().unwrap(),
/// );
/// assert_eq!(id, "us-west-2/111122223333/demo/default/app");
/// ```
pub fn external_id(
    region: &str,
    account_id: &str,
    cluster: &ClusterName,
    namespace: &Namespace,
    service_account: &ServiceAccountName,
) -> String {
    format!("{region}/{account_id}/{cluster}/{namespace}/{service_account}")
}

/// `Option<SystemTime>` as JSON epoch seconds (fractional allowed).
mod epoch_seconds_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::time::{from_epoch_seconds_f64, to_epoch};

    #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`.
    pub(super) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => {
                let (secs, nanos) = to_epoch(*t);
                if nanos == 0 {
                    serializer.serialize_i64(secs)
                } else {
                    #[allow(clippy::cast_precision_loss)]
                    let value = secs as f64 + f64::from(nanos) / 1e9;
                    serializer.serialize_f64(value)
                }
            }
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        match Option::<f64>::deserialize(deserializer)? {
            None => Ok(None),
            Some(secs) => from_epoch_seconds_f64(secs)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("timestamp out of range")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn cluster_names() {
        let hundred = "a".repeat(100);
        for ok in ["a", "0", "my-cluster", "My_Cluster-1", hundred.as_str()] {
            assert!(ok.parse::<ClusterName>().is_ok(), "{ok}");
        }
        let long = "a".repeat(101);
        for bad in ["", "-a", "_a", "a.b", "a b", "ä", long.as_str()] {
            assert!(bad.parse::<ClusterName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaces_and_service_accounts() {
        let max_label = "a".repeat(63);
        assert!(max_label.parse::<Namespace>().is_ok());
        assert!(format!("{max_label}a").parse::<Namespace>().is_err());
        for bad in ["", "A", "a.b", "-a", "a-", "a_b"] {
            assert!(bad.parse::<Namespace>().is_err(), "{bad}");
        }
        for ok in ["a", "my-app", "a.b.c", "0-0"] {
            assert!(ok.parse::<ServiceAccountName>().is_ok(), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "A", "a_b", "a.-b"] {
            assert!(bad.parse::<ServiceAccountName>().is_err(), "{bad}");
        }
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(long.parse::<ServiceAccountName>().is_err());
        assert!(long[..253].parse::<ServiceAccountName>().is_ok());
    }

    #[test]
    fn association_ids() {
        assert!("a-abcdefghij0123456".parse::<AssociationId>().is_ok());
        for bad in [
            "a-abcdefghij012345",
            "a-abcdefghij01234567",
            "b-abcdefghij0123456",
            "a-ABCDEFGHIJ0123456",
        ] {
            assert!(bad.parse::<AssociationId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn name_error_text() {
        let err = "Bad_NS".parse::<Namespace>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid namespace \"Bad_NS\": may contain only lower-case letters, digits and `-`"
        );
    }

    #[test]
    fn association_json_uses_eks_names() {
        let json = r#"{
            "clusterName": "demo", "namespace": "default", "serviceAccount": "app",
            "roleArn": "arn:aws:iam::111122223333:role/app",
            "associationArn": "arn:aws:eks:us-west-2:111122223333:podidentityassociation/demo/a-abcdefghij0123456",
            "associationId": "a-abcdefghij0123456",
            "tags": {"team": "x"}, "createdAt": 1700000000.5, "modifiedAt": 1700000001,
            "ownerArn": "arn:aws:eks:us-west-2:111122223333:addon/demo/x/y",
            "disableSessionTags": true,
            "targetRoleArn": "arn:aws:iam::444455556666:role/target",
            "externalId": "us-west-2/111122223333/demo/default/app",
            "policy": "{}"
        }"#;
        let a: Association = serde_json::from_str(json).unwrap();
        assert_eq!(
            a.created_at,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500))
        );
        assert!(a.disable_session_tags);
        let again: Association = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, again);
        let bad = json.replace("\"default\"", "\"Default\"");
        assert!(serde_json::from_str::<Association>(&bad).is_err());
    }
}
