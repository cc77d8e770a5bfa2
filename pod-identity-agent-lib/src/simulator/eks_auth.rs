//! The EKS Auth side: `POST /clusters/{clusterName}/assume-role-for-pod-identity` (restJson1).
//!
//! Order of checks: signature (node credentials, service `eks-auth`), cluster name and body
//! shape (`InvalidParameterException`), injected failures, the cluster itself, the token
//! (structure, times, audience, pod binding), the association.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use pod_identity_core::eks_auth::{
    AssumeRoleForPodIdentityRequest, AssumeRoleForPodIdentityResponse, AssumedRoleUser,
    CHAINED_CREDENTIAL_LIFETIME_SECS, ERROR_TYPE_HEADER, EksCredentials, PodIdentityAssociation,
    REQUEST_ID_HEADER, SIGNING_NAME, Subject,
};
use pod_identity_core::time::format_rfc3339;
use pod_identity_core::{
    association::ClusterName, association::PodIdentity, eks_auth::EksAuthError,
    eks_auth::EksAuthErrorCode, eks_auth::Fault, token::ServiceAccountToken, token::TokenError,
};

use super::builder::request_id;
use super::credentials::{ACCESS_KEY_ALPHABET, random_secret, random_session_token};
use super::sigv4::{
    EXPIRED_SECURITY_TOKEN, INVALID_SECURITY_TOKEN, Rejection, SIGNATURE_MISMATCH, SigningSecret,
    Verifier, hex,
};
use super::state::{Failure, Inner, IssuedSession, digest};
use super::token::uuid;
use super::wire::{error_body, read_request_body, response_body};
use super::{EksAuthSimulator, random_string};

/// The request bodies the simulator reads; tokens are a few KiB.
pub(crate) const MAX_BODY: usize = 256 * 1024;
/// Role session names are at most 64 characters (STS).
const MAX_SESSION_NAME: usize = 64;
/// EKS caps chained (target role) sessions at 59 minutes (contracts §2).
const CHAINED_LIFETIME: Duration = Duration::from_secs(CHAINED_CREDENTIAL_LIFETIME_SECS);

pub(crate) async fn assume_role_for_pod_identity(
    State(sim): State<EksAuthSimulator>,
    cluster: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let request_id = request_id();
    match handle(&sim.inner, cluster, request).await {
        Ok(response) => {
            tracing::info!(
                request_id,
                namespace = response.subject.namespace,
                service_account = response.subject.service_account,
                assumed_role = response.assumed_role_user.arn,
                access_key_id = response.credentials.access_key_id,
                expiration = format_rfc3339(response.credentials.expiration),
                "EKS Auth simulator issued credentials"
            );
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                response_body(&response),
            )
                .into_response();
            insert_request_id(&mut response, &request_id);
            response
        }
        Err(error) => {
            tracing::info!(
                request_id,
                status = error.status(),
                code = error.code().as_str(),
                "EKS Auth simulator refused AssumeRoleForPodIdentity"
            );
            error_response(&error, &request_id)
        }
    }
}

/// One call, in the order EKS Auth checks: signature, request shape, (injected failure),
/// cluster, token, association.
async fn handle(
    inner: &Inner,
    cluster: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<AssumeRoleForPodIdentityResponse, EksAuthError> {
    // Subscribe before anything else, so a release (shutdown, cleared failures) that happens
    // after this request was counted also reaches it if it hangs.
    let mut release = inner.release();
    inner.count_request();
    let latency = inner.latency();
    if !latency.is_zero() {
        // A release (shutdown) cuts the delay short so graceful shutdown does not wait it out.
        tokio::select! {
            () = tokio::time::sleep(latency) => {}
            () = release.wait() => {}
        }
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        client_error(
            EksAuthErrorCode::InvalidRequest,
            400,
            "The request body is too large or was cut short.",
        )
    })?;

    let now = inner.clock.now();
    let verifier = Verifier {
        region: &inner.region,
        service: SIGNING_NAME,
        now,
    };
    verifier
        .verify(
            parts.method.as_str(),
            &parts.uri,
            &parts.headers,
            &body,
            |access_key_id| {
                if access_key_id != inner.node.access_key_id() {
                    return Err(Rejection::UnknownCredentials);
                }
                let secret = SigningSecret {
                    secret_access_key: inner.node.secret_access_key().clone(),
                    session_token: inner.node.session_token().cloned(),
                };
                Ok(((), secret))
            },
        )
        .map_err(rejection_error)?;

    let Ok(Path(cluster)) = cluster else {
        return Err(client_error(
            EksAuthErrorCode::InvalidParameter,
            400,
            "Invalid cluster name.",
        ));
    };
    let cluster_name: ClusterName = cluster.parse().map_err(|e| {
        client_error(
            EksAuthErrorCode::InvalidParameter,
            400,
            format!("Invalid cluster name: {e}"),
        )
    })?;
    let request = read_request_body(cluster_name, &body)?;
    inner.count_token(request.token.expose_secret());

    match inner.take_failure() {
        None => {}
        Some(Failure::Error(error)) => return Err(error),
        Some(Failure::Hang) => {
            release.wait().await;
            return Err(EksAuthError::new(
                EksAuthErrorCode::ServiceUnavailable,
                503,
                "The simulator released a hanging request.",
            ));
        }
    }
    issue(inner, &request, now)
}

/// Validates the token and the association, and issues a session.
fn issue(
    inner: &Inner,
    request: &AssumeRoleForPodIdentityRequest,
    now: SystemTime,
) -> Result<AssumeRoleForPodIdentityResponse, EksAuthError> {
    if request.cluster_name != inner.cluster_name {
        return Err(client_error(
            EksAuthErrorCode::ResourceNotFound,
            404,
            format!("No cluster found for name: {}.", request.cluster_name),
        ));
    }

    let invalid_token =
        |message: String| client_error(EksAuthErrorCode::InvalidToken, 400, message);
    let token = ServiceAccountToken::decode(request.token.expose_secret())
        .map_err(|e| invalid_token(e.to_string()))?;
    token.validate_time(now).map_err(|e| match e {
        TokenError::Expired | TokenError::ExpiredAndNotValidYet => client_error(
            EksAuthErrorCode::ExpiredToken,
            400,
            "The service account token has expired.".to_owned(),
        ),
        other => invalid_token(other.to_string()),
    })?;
    let claims = token.claims();
    if !claims.has_audience(pod_identity_core::endpoint::AUDIENCE) {
        return Err(invalid_token(format!(
            "The token's audience does not include {}.",
            pod_identity_core::endpoint::AUDIENCE
        )));
    }
    let (namespace, service_account) = claims.service_account().ok_or_else(|| {
        invalid_token("The token's subject is not a Kubernetes service account.".to_owned())
    })?;
    let pod = claims
        .kubernetes
        .as_ref()
        .and_then(|k| k.pod.as_ref())
        .ok_or_else(|| invalid_token("The token is not bound to a pod.".to_owned()))?;

    let key = (
        namespace.as_str().to_owned(),
        service_account.as_str().to_owned(),
    );
    let registered = inner.associations.get(&key).ok_or_else(|| {
        client_error(
            EksAuthErrorCode::ResourceNotFound,
            404,
            format!(
                "No Pod Identity Association found for service account {namespace}/{service_account} in cluster {}.",
                inner.cluster_name
            ),
        )
    })?;

    let association = &registered.association;
    let role = association
        .target_role_arn
        .as_ref()
        .unwrap_or(&association.role_arn);
    let mut lifetime = inner.lifetime();
    if association.target_role_arn.is_some() {
        lifetime = lifetime.min(CHAINED_LIFETIME);
    }
    let role_name = role.role_name().unwrap_or(role.resource());
    let session_name = session_name(inner.cluster_name.as_str(), &pod.name);
    let assumed_role_arn = format!(
        "arn:{}:sts::{}:assumed-role/{role_name}/{session_name}",
        role.partition(),
        role.account_id()
    );
    let assume_role_id = format!("{}:{session_name}", registered.role_id);
    let session_tags = if association.disable_session_tags {
        Vec::new()
    } else {
        PodIdentity {
            cluster_arn: inner.cluster_arn.clone(),
            cluster_name: inner.cluster_name.clone(),
            namespace: namespace.clone(),
            service_account: service_account.clone(),
            pod_name: pod.name.clone(),
            pod_uid: pod.uid.clone(),
        }
        .session_tags()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };

    let access_key_id = format!("ASIA{}", random_string(16, ACCESS_KEY_ALPHABET));
    let secret_access_key = random_secret();
    let session_token = random_session_token();
    let expiration = now + lifetime;
    inner.record(IssuedSession {
        access_key_id: access_key_id.clone(),
        secret_access_key: secret_access_key.clone(),
        session_token: session_token.clone(),
        issued_at: now,
        expiration,
        role_arn: role.to_string(),
        assumed_role_arn: assumed_role_arn.clone(),
        assume_role_id: assume_role_id.clone(),
        session_name,
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod_name: pod.name.clone(),
        pod_uid: pod.uid.clone(),
        association_id: registered.association_id.clone(),
        association_arn: registered.association_arn.clone(),
        session_tags,
        token_digest: hex(&digest(request.token.expose_secret())),
    });

    Ok(AssumeRoleForPodIdentityResponse {
        subject: Subject {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        },
        audience: pod_identity_core::endpoint::AUDIENCE.to_owned(),
        pod_identity_association: PodIdentityAssociation {
            association_arn: registered.association_arn.clone(),
            association_id: registered.association_id.clone(),
        },
        assumed_role_user: AssumedRoleUser {
            arn: assumed_role_arn,
            assume_role_id,
        },
        credentials: EksCredentials {
            session_token,
            secret_access_key,
            access_key_id,
            expiration,
        },
    })
}

/// `eks-<cluster>-<pod>-<uuid>`, cut to the 64 characters STS allows.
fn session_name(cluster: &str, pod: &str) -> String {
    let mut name = format!("eks-{cluster}-{pod}-{}", uuid());
    if name.len() > MAX_SESSION_NAME {
        // Every part is ASCII (cluster names and DNS labels), so any byte index is a boundary.
        let mut end = MAX_SESSION_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// How EKS Auth reports a signature it did not accept.
fn rejection_error(rejection: Rejection) -> EksAuthError {
    let (code, message) = match rejection {
        Rejection::Missing => (
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".to_owned(),
        ),
        Rejection::Incomplete(message) => ("IncompleteSignatureException", message),
        Rejection::UnknownCredentials => (
            "UnrecognizedClientException",
            INVALID_SECURITY_TOKEN.to_owned(),
        ),
        Rejection::ExpiredCredentials => {
            ("ExpiredTokenException", EXPIRED_SECURITY_TOKEN.to_owned())
        }
        Rejection::Mismatch => ("InvalidSignatureException", SIGNATURE_MISMATCH.to_owned()),
        Rejection::Scope(message) | Rejection::Stale(message) => {
            ("InvalidSignatureException", message)
        }
    };
    client_error(EksAuthErrorCode::from_raw(code), 403, message)
}

fn client_error(code: EksAuthErrorCode, status: u16, message: impl Into<String>) -> EksAuthError {
    EksAuthError::new(code, status, message).with_fault(Fault::Client)
}

/// A restJson1 error: status, `x-amzn-errortype`, `x-amzn-requestid`, `{"__type", "message"}`.
pub(crate) fn error_response(error: &EksAuthError, request_id: &str) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(error_body(error)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(code) = HeaderValue::from_str(error.code().as_str()) {
        headers.insert(ERROR_TYPE_HEADER, code);
    }
    insert_request_id(&mut response, request_id);
    response
}

fn insert_request_id(response: &mut Response, request_id: &str) {
    if let Ok(id) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_cut_to_64_characters() {
        let short = session_name("demo", "app");
        assert!(short.starts_with("eks-demo-app-"));
        assert_eq!(short.len(), "eks-demo-app-".len() + 36);

        let long = session_name(
            "a-rather-long-cluster-name",
            "a-rather-long-pod-name-7d9f8b6c5d-x2x9q",
        );
        assert_eq!(long.len(), 64);
        assert!(
            long.starts_with("eks-a-rather-long-cluster-name-a-rather-long-pod-name-7d9f8b6c5d")
        );
    }

    #[test]
    fn rejections_map_to_aws_codes_with_403() {
        for (rejection, code) in [
            (Rejection::Missing, "MissingAuthenticationTokenException"),
            (
                Rejection::Incomplete("x".into()),
                "IncompleteSignatureException",
            ),
            (Rejection::UnknownCredentials, "UnrecognizedClientException"),
            (Rejection::Mismatch, "InvalidSignatureException"),
            (
                Rejection::Stale("Signature expired".into()),
                "InvalidSignatureException",
            ),
            (Rejection::Scope("x".into()), "InvalidSignatureException"),
        ] {
            let error = rejection_error(rejection);
            assert_eq!(error.code().as_str(), code);
            assert_eq!(error.status(), 403);
        }
    }
}
