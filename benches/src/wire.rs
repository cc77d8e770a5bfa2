//! Wire-format fixtures and the serde baseline: derived structs with the same fields, through
//! `serde_json`, converting times with core's helpers so both sides produce the same values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pod_identity_core::eks_auth::{
    AssumeRoleForPodIdentityResponse, AssumedRoleUser, EksCredentials, PodIdentityAssociation,
    Subject,
};
use pod_identity_core::time::{format_rfc3339, from_epoch_seconds_f64, parse_rfc3339};
use pod_identity_core::{container_credentials::ContainerCredentials, secret::SecretString};
use serde::{Deserialize, Serialize};

use crate::fixture::BoxError;

/// A session token of the size STS issues (about 600 characters of base64).
fn session_token() -> String {
    format!(
        "IQoJb3JpZ2luX2Vj{}",
        "EJr//////////wEaCXVzLXdlc3QtMiJHMEUCIQ".repeat(15)
    )
}

const EXPIRATION: Duration = Duration::from_secs(1_800_000_000);

/// The container-credentials answer the agent serves, real-size.
pub fn container_credentials() -> ContainerCredentials {
    ContainerCredentials {
        access_key_id: "ASIAQWERTYUIOPASDFGH".to_owned(),
        secret_access_key: SecretString::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        token: SecretString::new(session_token()),
        account_id: Some("111122223333".to_owned()),
        expiration: UNIX_EPOCH + EXPIRATION,
    }
}

/// The EKS Auth `AssumeRoleForPodIdentity` response, real-size.
pub fn eks_auth_response() -> AssumeRoleForPodIdentityResponse {
    AssumeRoleForPodIdentityResponse {
        subject: Subject {
            namespace: "default".to_owned(),
            service_account: "bench-app".to_owned(),
        },
        audience: "pods.eks.amazonaws.com".to_owned(),
        pod_identity_association: PodIdentityAssociation {
            association_arn:
                "arn:aws:eks:us-west-2:111122223333:podidentityassociation/bench/a-abcdefghij0123456"
                    .to_owned(),
            association_id: "a-abcdefghij0123456".to_owned(),
        },
        assumed_role_user: AssumedRoleUser {
            arn: "arn:aws:sts::111122223333:assumed-role/bench-app/eks-bench-bench-app-7c9f5d8b6-x2k4q-3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
                .to_owned(),
            assume_role_id: "AROAEXAMPLEROLEID1234:eks-bench-bench-app-7c9f5d8b6-x2k4q-3f1c2d4e".to_owned(),
        },
        credentials: EksCredentials {
            session_token: SecretString::new(session_token()),
            secret_access_key: SecretString::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            access_key_id: "ASIAQWERTYUIOPASDFGH".to_owned(),
            expiration: UNIX_EPOCH + EXPIRATION,
        },
    }
}

/// The container-credentials JSON as a serde-derived struct.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SerdeContainerCredentials {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: String,
    /// `Token`.
    pub token: String,
    /// `AccountId`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub account_id: Option<String>,
    /// `Expiration` (RFC 3339).
    pub expiration: String,
}

/// The same credentials from the serde struct (the time parsed by core, as ours does).
pub fn serde_parse_container_credentials(body: &[u8]) -> Result<ContainerCredentials, BoxError> {
    let wire: SerdeContainerCredentials = serde_json::from_slice(body)?;
    Ok(ContainerCredentials {
        access_key_id: wire.access_key_id,
        secret_access_key: SecretString::new(wire.secret_access_key),
        token: SecretString::new(wire.token),
        account_id: wire.account_id,
        expiration: parse_rfc3339(&wire.expiration)?,
    })
}

/// The credentials through the serde struct, into `out`.
pub fn serde_write_container_credentials(
    credentials: &ContainerCredentials,
    out: &mut Vec<u8>,
) -> Result<(), BoxError> {
    let wire = SerdeContainerCredentialsRef {
        access_key_id: &credentials.access_key_id,
        secret_access_key: credentials.secret_access_key.expose_secret(),
        token: credentials.token.expose_secret(),
        account_id: credentials.account_id.as_deref(),
        expiration: format_rfc3339(credentials.expiration),
    };
    serde_json::to_writer(out, &wire)?;
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SerdeContainerCredentialsRef<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
    expiration: String,
}

/// The EKS Auth response as serde-derived structs.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SerdeEksAuthResponse {
    /// `assumedRoleUser`.
    pub assumed_role_user: SerdeAssumedRoleUser,
    /// `audience`.
    pub audience: String,
    /// `credentials`.
    pub credentials: SerdeEksCredentials,
    /// `podIdentityAssociation`.
    pub pod_identity_association: SerdeAssociation,
    /// `subject`.
    pub subject: SerdeSubject,
}

/// `assumedRoleUser`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SerdeAssumedRoleUser {
    /// `arn`.
    pub arn: String,
    /// `assumeRoleId`.
    pub assume_role_id: String,
}

/// `credentials`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SerdeEksCredentials {
    /// `accessKeyId`.
    pub access_key_id: String,
    /// `expiration`, epoch seconds.
    pub expiration: f64,
    /// `secretAccessKey`.
    pub secret_access_key: String,
    /// `sessionToken`.
    pub session_token: String,
}

/// `podIdentityAssociation`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SerdeAssociation {
    /// `associationArn`.
    pub association_arn: String,
    /// `associationId`.
    pub association_id: String,
}

/// `subject`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SerdeSubject {
    /// `namespace`.
    pub namespace: String,
    /// `serviceAccount`.
    pub service_account: String,
}

/// The same response from the serde structs.
pub fn serde_parse_eks_auth(body: &[u8]) -> Result<AssumeRoleForPodIdentityResponse, BoxError> {
    let wire: SerdeEksAuthResponse = serde_json::from_slice(body)?;
    let expiration =
        from_epoch_seconds_f64(wire.credentials.expiration).ok_or("expiration out of range")?;
    Ok(AssumeRoleForPodIdentityResponse {
        subject: Subject {
            namespace: wire.subject.namespace,
            service_account: wire.subject.service_account,
        },
        audience: wire.audience,
        pod_identity_association: PodIdentityAssociation {
            association_arn: wire.pod_identity_association.association_arn,
            association_id: wire.pod_identity_association.association_id,
        },
        assumed_role_user: AssumedRoleUser {
            arn: wire.assumed_role_user.arn,
            assume_role_id: wire.assumed_role_user.assume_role_id,
        },
        credentials: EksCredentials {
            session_token: SecretString::new(wire.credentials.session_token),
            secret_access_key: SecretString::new(wire.credentials.secret_access_key),
            access_key_id: wire.credentials.access_key_id,
            expiration,
        },
    })
}

impl From<&AssumeRoleForPodIdentityResponse> for SerdeEksAuthResponse {
    /// The baseline's input: the response as the derived structs hold it, built once outside
    /// the measured loop (a serde user holds its data in such structs; the simulator's writer
    /// borrows from core's response instead).
    fn from(response: &AssumeRoleForPodIdentityResponse) -> Self {
        let expiration = response
            .credentials
            .expiration
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let role_user = &response.assumed_role_user;
        let credentials = &response.credentials;
        let association = &response.pod_identity_association;
        Self {
            assumed_role_user: SerdeAssumedRoleUser {
                arn: role_user.arn.clone(),
                assume_role_id: role_user.assume_role_id.clone(),
            },
            audience: response.audience.clone(),
            credentials: SerdeEksCredentials {
                access_key_id: credentials.access_key_id.clone(),
                expiration,
                secret_access_key: credentials.secret_access_key.expose_secret().to_owned(),
                session_token: credentials.session_token.expose_secret().to_owned(),
            },
            pod_identity_association: SerdeAssociation {
                association_arn: association.association_arn.clone(),
                association_id: association.association_id.clone(),
            },
            subject: SerdeSubject {
                namespace: response.subject.namespace.clone(),
                service_account: response.subject.service_account.clone(),
            },
        }
    }
}

/// The response through the serde-derived structs.
pub fn serde_write_eks_auth(response: &SerdeEksAuthResponse) -> Result<Vec<u8>, BoxError> {
    Ok(serde_json::to_vec(response)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_read_what_the_other_writes() {
        let credentials = container_credentials();
        let mut out = Vec::new();
        serde_write_container_credentials(&credentials, &mut out).unwrap();
        assert_eq!(out, credentials.to_json().into_bytes());
        let parsed = serde_parse_container_credentials(credentials.to_json().as_bytes()).unwrap();
        assert_eq!(parsed, credentials);

        let response = eks_auth_response();
        let theirs =
            serde_parse_eks_auth(&pod_identity_agent_lib::simulator::response_body(&response))
                .unwrap();
        assert_eq!(theirs, response);
        let ours = AssumeRoleForPodIdentityResponse::from_json(
            &serde_write_eks_auth(&SerdeEksAuthResponse::from(&response)).unwrap(),
        )
        .unwrap();
        assert_eq!(ours, response);
    }
}
