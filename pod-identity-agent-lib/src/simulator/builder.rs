//! Configuring a simulator: cluster, region, account, node credentials, associations, lifetime.

use aws_smithy_async::time::SharedTimeSource;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use pod_identity_core::arn::partition_for_region;
use pod_identity_core::association::MAX_ASSOCIATIONS_PER_CLUSTER as MAX_ASSOCIATIONS;
use pod_identity_core::eks_auth::CREDENTIAL_LIFETIME_SECS;
use pod_identity_core::{
    arn::Arn, association::Association, association::ClusterName, association::Namespace,
    association::ServiceAccountName,
};

use super::credentials::{ACCESS_KEY_ALPHABET, NodeCredentials};
use super::state::{Inner, Registered};
use super::token::uuid;
use super::{EksAuthSimulator, random_string};

/// The credential lifetime EKS Auth grants: 6 hours.
pub const DEFAULT_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(CREDENTIAL_LIFETIME_SECS);
/// The cluster a simulator serves unless told otherwise.
pub const DEFAULT_CLUSTER_NAME: &str = "pod-identity-demo";
/// The region a simulator signs for unless told otherwise.
pub const DEFAULT_REGION: &str = "us-west-2";
/// How many issued sessions a simulator remembers unless told otherwise.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// The account a simulator's roles live in unless told otherwise (the documentation account).
pub const DEFAULT_ACCOUNT_ID: &str = "111122223333";

/// Why a simulator could not be built or its associations not loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The account id is not 12 digits.
    #[error("account id must be 12 digits, got {0:?}")]
    InvalidAccountId(String),
    /// The region is empty or not a region name.
    #[error("invalid region {0:?}")]
    InvalidRegion(String),
    /// Two associations name the same namespace and service account.
    #[error("more than one association for service account {namespace}/{service_account}")]
    DuplicateAssociation {
        /// The namespace.
        namespace: String,
        /// The service account.
        service_account: String,
    },
    /// An association belongs to another cluster.
    #[error(
        "association for {namespace}/{service_account} belongs to cluster {cluster}, not {expected}"
    )]
    ForeignAssociation {
        /// The namespace.
        namespace: String,
        /// The service account.
        service_account: String,
        /// The association's cluster.
        cluster: String,
        /// The simulator's cluster.
        expected: String,
    },
    /// More associations than EKS allows per cluster.
    #[error("at most {MAX_ASSOCIATIONS} associations per cluster, got {0}")]
    TooManyAssociations(usize),
    /// The associations file could not be read.
    #[error("cannot read associations file {path}")]
    ReadAssociations {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The associations JSON is not a list of associations.
    #[error("invalid associations JSON")]
    ParseAssociations(#[source] serde_json::Error),
}

/// Builds an [`EksAuthSimulator`]. Every setting has a default; see the setters.
#[derive(Debug, Clone)]
pub struct EksAuthSimulatorBuilder {
    cluster_name: Option<ClusterName>,
    region: String,
    account_id: String,
    node_credentials: Option<NodeCredentials>,
    associations: Vec<Association>,
    /// From [`associate`](Self::associate); they take the cluster name at build time.
    simple: Vec<(Namespace, ServiceAccountName, Arn)>,
    lifetime: Duration,
    max_sessions: usize,
    clock: SharedTimeSource,
}

impl Default for EksAuthSimulatorBuilder {
    fn default() -> Self {
        Self {
            cluster_name: None,
            region: DEFAULT_REGION.to_owned(),
            account_id: DEFAULT_ACCOUNT_ID.to_owned(),
            node_credentials: None,
            associations: Vec::new(),
            simple: Vec::new(),
            lifetime: DEFAULT_CREDENTIAL_LIFETIME,
            max_sessions: DEFAULT_MAX_SESSIONS,
            clock: SharedTimeSource::default(),
        }
    }
}

impl EksAuthSimulatorBuilder {
    /// The cluster the simulator answers for (default [`DEFAULT_CLUSTER_NAME`]); other cluster
    /// names get `ResourceNotFoundException`.
    pub fn cluster_name(mut self, cluster_name: ClusterName) -> Self {
        self.cluster_name = Some(cluster_name);
        self
    }

    /// The region requests must be signed for (default [`DEFAULT_REGION`]).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// The account the cluster and its associations belong to (default [`DEFAULT_ACCOUNT_ID`]).
    /// Assumed-role ARNs take the account of their role's ARN, as STS does.
    pub fn account_id(mut self, account_id: impl Into<String>) -> Self {
        self.account_id = account_id.into();
        self
    }

    /// The only credentials EKS Auth requests may be signed with (default: random, read them
    /// back with [`EksAuthSimulator::node_credentials`]).
    pub fn node_credentials(mut self, credentials: NodeCredentials) -> Self {
        self.node_credentials = Some(credentials);
        self
    }

    /// Adds an association. Its cluster must be the simulator's; a missing association id or
    /// ARN is generated.
    pub fn association(mut self, association: Association) -> Self {
        self.associations.push(association);
        self
    }

    /// Adds an association of `namespace/service_account` with `role_arn` in the simulator's
    /// cluster, with session tags and generated ids.
    pub fn associate(
        mut self,
        namespace: Namespace,
        service_account: ServiceAccountName,
        role_arn: Arn,
    ) -> Self {
        self.simple.push((namespace, service_account, role_arn));
        self
    }

    /// Adds associations.
    pub fn associations(mut self, associations: impl IntoIterator<Item = Association>) -> Self {
        self.associations.extend(associations);
        self
    }

    /// How long issued credentials live (default 6 h, [`DEFAULT_CREDENTIAL_LIFETIME`]); it can be
    /// changed later with [`EksAuthSimulator::set_credential_lifetime`].
    pub fn credential_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// How many issued sessions to remember (default [`DEFAULT_MAX_SESSIONS`]); the oldest are
    /// forgotten first, and the STS target no longer knows their credentials. Keeps long
    /// benchmark runs from growing without bound.
    pub fn max_sessions(mut self, max_sessions: usize) -> Self {
        self.max_sessions = max_sessions;
        self
    }

    /// The wall clock for signature skew, token times and expirations (default: the system clock).
    pub fn clock(mut self, clock: SharedTimeSource) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the configuration and builds the simulator.
    pub fn build(mut self) -> Result<EksAuthSimulator, BuildError> {
        let cluster_name = match self.cluster_name {
            Some(name) => name,
            None => default_cluster_name(),
        };
        for (namespace, service_account, role_arn) in &self.simple {
            let association =
                simple_association(&cluster_name, namespace, service_account, role_arn)?;
            self.associations.push(association);
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BuildError::InvalidAccountId(self.account_id));
        }
        let region_ok = !self.region.is_empty()
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(BuildError::InvalidRegion(self.region));
        }
        if self.associations.len() > MAX_ASSOCIATIONS {
            return Err(BuildError::TooManyAssociations(self.associations.len()));
        }
        let partition = partition_for_region(&self.region);
        let cluster_arn: Arn = format!(
            "arn:{partition}:eks:{}:{}:cluster/{cluster_name}",
            self.region, self.account_id
        )
        .parse()
        .map_err(|_| BuildError::InvalidRegion(self.region.clone()))?;

        let mut associations = HashMap::with_capacity(self.associations.len());
        let mut role_ids: HashMap<String, String> = HashMap::new();
        for association in self.associations {
            let namespace = association.namespace.as_str().to_owned();
            let service_account = association.service_account.as_str().to_owned();
            if association.cluster_name != cluster_name {
                return Err(BuildError::ForeignAssociation {
                    namespace,
                    service_account,
                    cluster: association.cluster_name.to_string(),
                    expected: cluster_name.to_string(),
                });
            }
            let association_id = match &association.association_id {
                Some(id) => id.as_str().to_owned(),
                None => format!("a-{}", random_string(17, ASSOCIATION_ID_ALPHABET)),
            };
            let association_arn = match &association.association_arn {
                Some(arn) => arn.to_string(),
                None => format!(
                    "arn:{partition}:eks:{}:{}:podidentityassociation/{cluster_name}/{association_id}",
                    self.region, self.account_id
                ),
            };
            let role = association
                .target_role_arn
                .as_ref()
                .unwrap_or(&association.role_arn)
                .to_string();
            let role_id = role_ids
                .entry(role)
                .or_insert_with(|| format!("AROA{}", random_string(17, ACCESS_KEY_ALPHABET)))
                .clone();
            let key = (namespace, service_account);
            if associations.contains_key(&key) {
                let (namespace, service_account) = key;
                return Err(BuildError::DuplicateAssociation {
                    namespace,
                    service_account,
                });
            }
            associations.insert(
                key,
                Registered {
                    association,
                    association_id,
                    association_arn,
                    role_id,
                },
            );
        }

        Ok(EksAuthSimulator::from_inner(Inner::new(
            cluster_name,
            cluster_arn,
            self.region,
            self.account_id,
            self.node_credentials
                .unwrap_or_else(NodeCredentials::random),
            associations,
            self.lifetime,
            self.max_sessions,
            self.clock,
        )))
    }
}

/// Reads associations from a JSON file; see [`parse_associations`] for the format.
pub fn load_associations(
    path: &Path,
    cluster_name: &ClusterName,
) -> Result<Vec<Association>, BuildError> {
    let json = std::fs::read(path).map_err(|source| BuildError::ReadAssociations {
        path: path.display().to_string(),
        source,
    })?;
    parse_associations(&json, cluster_name)
}

/// Parses associations in the EKS API's JSON shape.
///
/// Accepts a list of association objects or the output of
/// `aws eks list-pod-identity-associations` / `describe-pod-identity-association` style wrappers
/// (`{"associations": [...]}`, `{"association": {...}}`). Names are the EKS API's camelCase ones;
/// only `namespace`, `serviceAccount` and `roleArn` are required, and a missing `clusterName`
/// means `cluster_name`.
///
/// ```
/// # use pod_identity_agent_lib::simulator::parse_associations;
/// let json = br#"[{"namespace": "default", "serviceAccount": "app",
///                  "roleArn": "arn:aws:iam::111122223333:role/app"}]"#;
/// let associations = parse_associations(json, &"demo".parse()?)?;
/// assert_eq!(associations[0].role_arn.to_string(), "arn:aws:iam::111122223333:role/app");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_associations(
    json: &[u8],
    cluster_name: &ClusterName,
) -> Result<Vec<Association>, BuildError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(BuildError::ParseAssociations)?;
    let mut items = match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut object) => {
            if let Some(serde_json::Value::Array(items)) = object.remove("associations") {
                items
            } else if let Some(one) = object.remove("association") {
                vec![one]
            } else {
                vec![serde_json::Value::Object(object)]
            }
        }
        other => vec![other],
    };
    for item in &mut items {
        if let serde_json::Value::Object(object) = item {
            object
                .entry("clusterName")
                .or_insert_with(|| cluster_name.as_str().into());
        }
    }
    items
        .into_iter()
        .map(|item| serde_json::from_value(item).map_err(BuildError::ParseAssociations))
        .collect()
}

/// An association with only the required fields, through the EKS JSON shape so that fields
/// core may add keep their defaults.
fn simple_association(
    cluster_name: &ClusterName,
    namespace: &Namespace,
    service_account: &ServiceAccountName,
    role_arn: &Arn,
) -> Result<Association, BuildError> {
    let json = serde_json::json!({
        "clusterName": cluster_name.as_str(),
        "namespace": namespace.as_str(),
        "serviceAccount": service_account.as_str(),
        "roleArn": role_arn.to_string(),
    });
    serde_json::from_value(json).map_err(BuildError::ParseAssociations)
}

const ASSOCIATION_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A request id in the UUID form AWS uses.
pub(crate) fn request_id() -> String {
    uuid()
}

fn default_cluster_name() -> ClusterName {
    DEFAULT_CLUSTER_NAME
        .parse()
        .expect("DEFAULT_CLUSTER_NAME is a valid cluster name (tested)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterName {
        "demo".parse().unwrap()
    }

    #[test]
    fn the_default_cluster_name_is_valid() {
        assert_eq!(default_cluster_name().as_str(), DEFAULT_CLUSTER_NAME);
    }

    #[test]
    fn associations_parse_from_a_list_and_from_the_cli_wrappers() {
        let one = r#"{"namespace":"default","serviceAccount":"app","roleArn":"arn:aws:iam::111122223333:role/app"}"#;
        for json in [
            format!("[{one}]"),
            format!("{{\"associations\":[{one}]}}"),
            format!("{{\"association\":{one}}}"),
            one.to_owned(),
        ] {
            let parsed = parse_associations(json.as_bytes(), &cluster()).unwrap();
            assert_eq!(parsed.len(), 1, "{json}");
            assert_eq!(parsed[0].cluster_name, cluster());
            assert_eq!(parsed[0].namespace.as_str(), "default");
            assert_eq!(parsed[0].service_account.as_str(), "app");
        }
    }

    #[test]
    fn invalid_associations_are_refused() {
        for json in [
            r#"[{"namespace":"Not_A_Label","serviceAccount":"app","roleArn":"arn:aws:iam::111122223333:role/app"}]"#,
            r#"[{"namespace":"default","serviceAccount":"app","roleArn":"not-an-arn"}]"#,
            r#"[{"namespace":"default","roleArn":"arn:aws:iam::111122223333:role/app"}]"#,
            "not json",
        ] {
            assert!(
                matches!(
                    parse_associations(json.as_bytes(), &cluster()),
                    Err(BuildError::ParseAssociations(_))
                ),
                "{json}"
            );
        }
    }

    #[test]
    fn associations_load_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("associations.json");
        std::fs::write(
            &path,
            r#"[{"namespace":"default","serviceAccount":"app","roleArn":"arn:aws:iam::111122223333:role/app"}]"#,
        )
        .unwrap();
        assert_eq!(load_associations(&path, &cluster()).unwrap().len(), 1);
        assert!(matches!(
            load_associations(&dir.path().join("missing.json"), &cluster()),
            Err(BuildError::ReadAssociations { .. })
        ));
    }

    #[test]
    fn the_builder_refuses_bad_settings() {
        let association = parse_associations(
            br#"[{"namespace":"default","serviceAccount":"app","roleArn":"arn:aws:iam::111122223333:role/app"}]"#,
            &cluster(),
        )
        .unwrap()
        .remove(0);
        let builder = EksAuthSimulator::builder().cluster_name(cluster());
        assert!(matches!(
            builder.clone().account_id("1234").build(),
            Err(BuildError::InvalidAccountId(_))
        ));
        assert!(matches!(
            builder.clone().region("").build(),
            Err(BuildError::InvalidRegion(_))
        ));
        assert!(matches!(
            builder
                .clone()
                .association(association.clone())
                .association(association.clone())
                .build(),
            Err(BuildError::DuplicateAssociation { .. })
        ));
        assert!(matches!(
            EksAuthSimulator::builder()
                .association(association.clone())
                .build(),
            Err(BuildError::ForeignAssociation { .. })
        ));
        assert!(builder.association(association).build().is_ok());
    }

    #[test]
    fn associate_takes_the_cluster_of_the_simulator() {
        let sim = EksAuthSimulator::builder()
            .associate(
                "default".parse().unwrap(),
                "app".parse().unwrap(),
                "arn:aws:iam::111122223333:role/app".parse().unwrap(),
            )
            .cluster_name(cluster())
            .build()
            .unwrap();
        let registered = &sim.inner.associations[&("default".to_owned(), "app".to_owned())];
        assert_eq!(registered.association.cluster_name, cluster());
        assert!(!registered.association.disable_session_tags);
        assert!(registered.association_id.starts_with("a-"));
        assert_eq!(
            registered.association_arn,
            format!(
                "arn:aws:eks:us-west-2:111122223333:podidentityassociation/demo/{}",
                registered.association_id
            )
        );
    }

    #[test]
    fn random_credentials_look_like_aws_ones() {
        let node = NodeCredentials::random();
        assert!(node.access_key_id().starts_with("AKIA"));
        assert_eq!(node.access_key_id().len(), 20);
        assert_eq!(node.secret_access_key().len(), 40);
        assert!(!format!("{node:?}").contains(node.secret_access_key().expose_secret()));
        assert_ne!(NodeCredentials::random(), node);
    }
}
