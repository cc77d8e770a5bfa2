//! Rendering answers: credentials as core's byte-exact JSON, errors as the reference's texts.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pod_identity_core::agent_error::AgentError;

use crate::source::IssuedCredentials;

/// Renders an agent error as the reference does: its status, `text/plain` body (and, for the
/// requests Go's server refuses itself, `Connection: close`).
pub fn error_response(error: &AgentError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if matches!(error, AgentError::BadRequest { .. }) {
        let mut response = error_response_with(status, error);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    error_response_with(status, error)
}

fn error_response_with(status: StatusCode, error: &AgentError) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(error.content_type()),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        error.body(),
    )
        .into_response()
}

/// Renders issued credentials: 200 with core's byte-exact JSON (rendered once per issued
/// credentials, [`IssuedCredentials::json_body`]).
pub fn credentials_response(issued: &IssuedCredentials) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        issued.json_body(),
    )
        .into_response()
}
