//! The EKS Auth JSON only a simulator needs: request bodies read, response and error bodies
//! written (core has the other direction of each: what an agent writes and reads).

use pod_identity_core::eks_auth::{
    AssumeRoleForPodIdentityRequest, AssumeRoleForPodIdentityResponse,
};
use pod_identity_core::time::{format_epoch_seconds, to_epoch};
use pod_identity_core::{
    association::ClusterName, eks_auth::EksAuthError, eks_auth::EksAuthErrorCode, eks_auth::Fault,
    secret::SecretString,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Reads an `AssumeRoleForPodIdentity` request body. A missing or empty `token` or a body that
/// is not a JSON object is an `InvalidParameterException`.
///
/// ```
/// use pod_identity_agent_lib::simulator::read_request_body;
///
/// let request = read_request_body("demo".parse()?, br#"{"token":"jwt","zone":"use1-az1"}"#)?;
/// assert_eq!(request.zone.as_deref(), Some("use1-az1"));
/// assert!(read_request_body("demo".parse()?, b"{}").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_request_body(
    cluster_name: ClusterName,
    body: &[u8],
) -> Result<AssumeRoleForPodIdentityRequest, EksAuthError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        token: Option<String>,
        eks_node_name: Option<String>,
        instance_id: Option<String>,
        zone: Option<String>,
    }
    let invalid = |message: &str| {
        EksAuthError::new(EksAuthErrorCode::InvalidParameter, 400, message)
            .with_fault(Fault::Client)
    };
    let body: Body =
        serde_json::from_slice(body).map_err(|_| invalid("request body is not valid JSON"))?;
    let token = body
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("token is required"))?;
    let mut request = AssumeRoleForPodIdentityRequest::new(cluster_name, SecretString::new(token));
    request.eks_node_name = body.eks_node_name;
    request.instance_id = body.instance_id;
    request.zone = body.zone;
    Ok(request)
}

/// The response body as EKS Auth sends it: members in alphabetical order, `expiration` as exact
/// epoch seconds.
pub fn response_body(response: &AssumeRoleForPodIdentityResponse) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        assumed_role_user: RoleUser<'a>,
        audience: &'a str,
        credentials: Credentials<'a>,
        pod_identity_association: Association<'a>,
        subject: Subject<'a>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct RoleUser<'a> {
        arn: &'a str,
        assume_role_id: &'a str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Credentials<'a> {
        access_key_id: &'a str,
        expiration: Seconds,
        secret_access_key: &'a str,
        session_token: &'a str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Association<'a> {
        association_arn: &'a str,
        association_id: &'a str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Subject<'a> {
        namespace: &'a str,
        service_account: &'a str,
    }
    /// Whole seconds as an integer; a fraction as the exact decimal text, which an `f64` is not.
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Seconds {
        Whole(i64),
        Exact(Box<RawValue>),
    }
    let expiration = match to_epoch(response.credentials.expiration) {
        (secs, 0) => Seconds::Whole(secs),
        // The text is always a JSON number.
        _ => match RawValue::from_string(format_epoch_seconds(response.credentials.expiration)) {
            Ok(raw) => Seconds::Exact(raw),
            Err(_) => return Vec::new(),
        },
    };
    serde_json::to_vec(&Body {
        assumed_role_user: RoleUser {
            arn: &response.assumed_role_user.arn,
            assume_role_id: &response.assumed_role_user.assume_role_id,
        },
        audience: &response.audience,
        credentials: Credentials {
            access_key_id: &response.credentials.access_key_id,
            expiration,
            secret_access_key: response.credentials.secret_access_key.expose_secret(),
            session_token: response.credentials.session_token.expose_secret(),
        },
        pod_identity_association: Association {
            association_arn: &response.pod_identity_association.association_arn,
            association_id: &response.pod_identity_association.association_id,
        },
        subject: Subject {
            namespace: &response.subject.namespace,
            service_account: &response.subject.service_account,
        },
    })
    .unwrap_or_default()
}

/// The restJson1 error body: `{"__type":"<Code>","message":"..."}` (send the code in
/// `X-Amzn-Errortype` too).
pub fn error_body(error: &EksAuthError) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "__type")]
        type_: &'a str,
        message: &'a str,
    }
    serde_json::to_vec(&Body {
        type_: error.code().as_str(),
        message: error.message(),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use pod_identity_core::eks_auth::{
        AssumedRoleUser, EksCredentials, PodIdentityAssociation, Subject,
    };
    use pod_identity_core::time::from_epoch;
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    #[test]
    fn response_round_trip() {
        let response = AssumeRoleForPodIdentityResponse {
            subject: Subject { namespace: "default".into(), service_account: "app".into() },
            audience: "pods.eks.amazonaws.com".into(),
            pod_identity_association: PodIdentityAssociation {
                association_arn: "arn:aws:eks:us-west-2:111122223333:podidentityassociation/demo/a-abcdefghij0123456".into(),
                association_id: "a-abcdefghij0123456".into(),
            },
            assumed_role_user: AssumedRoleUser {
                arn: "arn:aws:sts::111122223333:assumed-role/app/eks-demo-app".into(),
                assume_role_id: "AROAEXAMPLE:eks-demo-app".into(),
            },
            credentials: EksCredentials {
                session_token: "tok\"en".into(),
                secret_access_key: "sec".into(),
                access_key_id: "ASIA".into(),
                expiration: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            },
        };
        let json = response_body(&response);
        assert_eq!(
            AssumeRoleForPodIdentityResponse::from_json(&json).unwrap(),
            response
        );
        assert!(!format!("{response:?}").contains("sec\""));
    }

    #[test]
    fn request_body() {
        let mut req = AssumeRoleForPodIdentityRequest::new("demo".parse().unwrap(), "jwt".into());
        req.zone = Some("use1-az1".into());
        let back = read_request_body(req.cluster_name.clone(), &req.to_json()).unwrap();
        assert_eq!(back, req);
        let err = read_request_body(req.cluster_name, b"{}").unwrap_err();
        assert_eq!(err.code(), &EksAuthErrorCode::InvalidParameter);
    }

    #[test]
    fn simulator_error_body_parses_back() {
        let err = EksAuthError::modeled(EksAuthErrorCode::ResourceNotFound, "no association")
            .with_request_id("r-1");
        let back = EksAuthError::from_http(err.status(), None, Some("r-1"), &error_body(&err));
        assert_eq!(back, err);
    }

    /// Core's reference vectors (`test-data/eks-auth.json`), read back through the simulator's
    /// side: each request body it reads, each response it writes.
    #[test]
    fn core_vectors_round_trip() {
        let file: Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../pod-identity-core/test-data/eks-auth.json"
        )))
        .unwrap();
        let requests = file["requests"].as_array().unwrap();
        assert!(!requests.is_empty());
        for case in requests {
            let s = |key: &str| case[key].as_str().map(str::to_owned);
            let cluster: ClusterName = s("cluster").unwrap().parse().unwrap();
            let mut req =
                AssumeRoleForPodIdentityRequest::new(cluster.clone(), s("token").unwrap().into());
            req.eks_node_name = s("eks_node_name");
            req.instance_id = s("instance_id");
            req.zone = s("zone");
            let back = read_request_body(cluster, s("body").unwrap().as_bytes());
            assert_eq!(back, Ok(req));
        }
        let responses = file["responses"].as_array().unwrap();
        assert!(!responses.is_empty());
        for case in responses {
            if case.get("error").is_some() {
                continue;
            }
            let body = case["body"].as_str().unwrap();
            let response = AssumeRoleForPodIdentityResponse::from_json(body.as_bytes()).unwrap();
            let again = AssumeRoleForPodIdentityResponse::from_json(&response_body(&response));
            assert_eq!(again, Ok(response), "{case}");
        }
    }

    fn rfc3339_time() -> impl Strategy<Value = SystemTime> {
        (-62_167_219_200_i64..=253_402_300_799, 0u32..1_000_000_000)
            .prop_map(|(s, n)| from_epoch(s, n).unwrap())
    }

    proptest! {
        #[test]
        fn request_reader_never_panics(body in any::<Vec<u8>>()) {
            let _ = read_request_body("demo".parse().unwrap(), &body);
        }

        #[test]
        fn eks_auth_response_round_trips(
            strings in proptest::collection::vec(any::<String>(), 9),
            access_key_id in any::<String>(),
            // Expirations past year 9999 are refused (no RFC 3339 form for the SDKs).
            expiration in rfc3339_time(),
        ) {
            let response = AssumeRoleForPodIdentityResponse {
                subject: Subject { namespace: strings[0].clone(), service_account: strings[1].clone() },
                audience: strings[2].clone(),
                pod_identity_association: PodIdentityAssociation {
                    association_arn: strings[3].clone(),
                    association_id: strings[4].clone(),
                },
                assumed_role_user: AssumedRoleUser { arn: strings[5].clone(), assume_role_id: strings[6].clone() },
                credentials: EksCredentials {
                    session_token: SecretString::new(strings[7].clone()),
                    secret_access_key: SecretString::new(strings[8].clone()),
                    access_key_id,
                    expiration,
                },
            };
            let json = response_body(&response);
            prop_assert_eq!(AssumeRoleForPodIdentityResponse::from_json(&json), Ok(response));
        }

        #[test]
        fn eks_auth_error_round_trips(code in "[A-Za-z]{1,30}", message in any::<String>(), status in 400u16..600, id in "[a-f0-9-]{1,36}") {
            let err = EksAuthError::new(EksAuthErrorCode::from_raw(&code), status, message).with_request_id(id.clone());
            let back = EksAuthError::from_http(status, None, Some(&id), &error_body(&err));
            // An empty message comes back as smithy's default.
            if err.message().is_empty() {
                prop_assert_eq!(back.message(), "UnknownError");
            } else {
                prop_assert_eq!(back, err);
            }
        }
    }
}
