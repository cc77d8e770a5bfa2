//! The associations the simulator serves: from a file, or the built-in one.

use std::path::Path;

use pod_identity_agent_lib::simulator::{DEFAULT_CLUSTER_NAME, load_associations};
use pod_identity_core::{association::Association, association::ClusterName};

use crate::BoxError;

/// The role of the built-in association.
pub(crate) const DEMO_ROLE_ARN: &str = "arn:aws:iam::111122223333:role/demo-app";

/// The associations to serve and their cluster: from `path`, or the built-in one.
pub(crate) fn associations(
    path: Option<&Path>,
) -> Result<(ClusterName, Vec<Association>), BoxError> {
    let default_cluster: ClusterName = DEFAULT_CLUSTER_NAME.parse()?;
    let Some(path) = path else {
        let builtin = serde_json_association(&default_cluster)?;
        return Ok((default_cluster, builtin));
    };
    let associations = load_associations(path, &default_cluster)?;
    let first = associations
        .first()
        .ok_or_else(|| format!("{} holds no association", path.display()))?;
    // Serve the cluster the file names (associations without one get the default).
    Ok((first.cluster_name.clone(), associations))
}

/// The built-in association, through the same parser as a file.
pub(crate) fn serde_json_association(cluster: &ClusterName) -> Result<Vec<Association>, BoxError> {
    let json = format!(
        r#"[{{"namespace":"default","serviceAccount":"demo-app","roleArn":"{DEMO_ROLE_ARN}"}}]"#
    );
    Ok(pod_identity_agent_lib::simulator::parse_associations(
        json.as_bytes(),
        cluster,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_association_parses() {
        let (cluster, associations) = associations(None).unwrap();
        assert_eq!(cluster.as_str(), DEFAULT_CLUSTER_NAME);
        assert_eq!(associations[0].role_arn.to_string(), DEMO_ROLE_ARN);
    }
}
