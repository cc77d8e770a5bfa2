//! The `AssumeRoleForPodIdentity` request: path and JSON body.

use serde::Serialize;

use crate::association::ClusterName;
use crate::secret::SecretString;

/// The `AssumeRoleForPodIdentity` request. `Debug` redacts the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRoleForPodIdentityRequest {
    /// The cluster (path parameter).
    pub cluster_name: ClusterName,
    /// The pod's service-account token.
    pub token: SecretString,
    /// The node's name, when known.
    pub eks_node_name: Option<String>,
    /// The node's EC2 instance id, when known.
    pub instance_id: Option<String>,
    /// The node's availability-zone id (`use1-az1`), when known.
    pub zone: Option<String>,
}

impl AssumeRoleForPodIdentityRequest {
    /// A request with only the required members.
    pub fn new(cluster_name: ClusterName, token: SecretString) -> Self {
        Self {
            cluster_name,
            token,
            eks_node_name: None,
            instance_id: None,
            zone: None,
        }
    }

    /// `/clusters/{clusterName}/assume-role-for-pod-identity` (cluster names need no escaping).
    pub fn path(&self) -> String {
        format!(
            "/clusters/{}/assume-role-for-pod-identity",
            self.cluster_name
        )
    }

    /// The JSON body: members in alphabetical order, absent ones left out.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            eks_node_name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            instance_id: Option<&'a str>,
            token: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            zone: Option<&'a str>,
        }
        serde_json::to_vec(&Body {
            eks_node_name: self.eks_node_name.as_deref(),
            instance_id: self.instance_id.as_deref(),
            token: self.token.expose_secret(),
            zone: self.zone.as_deref(),
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body() {
        let mut req = AssumeRoleForPodIdentityRequest::new("demo".parse().unwrap(), "jwt".into());
        req.zone = Some("use1-az1".into());
        assert_eq!(req.path(), "/clusters/demo/assume-role-for-pod-identity");
        assert_eq!(req.to_json(), br#"{"token":"jwt","zone":"use1-az1"}"#);
        assert!(!format!("{req:?}").contains("jwt"));
    }
}
