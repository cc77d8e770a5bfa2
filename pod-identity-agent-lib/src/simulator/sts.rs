//! The signed-request target: a minimal STS `GetCallerIdentity` (query protocol).
//!
//! `POST /` (or `GET /`) with the form body `Action=GetCallerIdentity&Version=2011-06-15` (or
//! the same in the query string), signed for service `sts` in the simulator's region with
//! credentials the simulator issued. It answers the assumed-role identity they belong to:
//!
//! ```xml
//! <GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
//!   <GetCallerIdentityResult>
//!     <Arn>arn:aws:sts::111122223333:assumed-role/app/eks-demo-app-…</Arn>
//!     <UserId>AROA…:eks-demo-app-…</UserId>
//!     <Account>111122223333</Account>
//!   </GetCallerIdentityResult>
//!   <ResponseMetadata><RequestId>…</RequestId></ResponseMetadata>
//! </GetCallerIdentityResponse>
//! ```
//!
//! Errors use STS's `ErrorResponse` document: unknown access key or a session token that does
//! not belong to it → 403 `InvalidClientTokenId`; expired credentials → 403 `ExpiredToken`;
//! wrong signature, scope or a stale `x-amz-date` → 403 `SignatureDoesNotMatch`; no signature →
//! 403 `MissingAuthenticationToken`; a malformed one → 400 `IncompleteSignature`; another action
//! → 400 `InvalidAction`.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use super::EksAuthSimulator;
use super::builder::request_id;
use super::eks_auth::MAX_BODY;
use super::sigv4::{
    EXPIRED_SECURITY_TOKEN, INVALID_SECURITY_TOKEN, Rejection, SIGNATURE_MISMATCH, SigningSecret,
    Verifier,
};
use super::state::IssuedSession;

/// STS's signing name.
const SIGNING_NAME: &str = "sts";
const API_VERSION: &str = "2011-06-15";
const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

pub(crate) async fn handle(State(sim): State<EksAuthSimulator>, request: Request) -> Response {
    let inner = &sim.inner;
    let request_id = request_id();
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "Request body too large.",
            &request_id,
        );
    };

    let now = inner.clock.now();
    let verifier = Verifier {
        region: &inner.region,
        service: SIGNING_NAME,
        now,
    };
    let session = verifier.verify(
        parts.method.as_str(),
        &parts.uri,
        &parts.headers,
        &body,
        |access_key_id| {
            let session = inner
                .session(access_key_id)
                .ok_or(Rejection::UnknownCredentials)?;
            if session.expiration <= now {
                return Err(Rejection::ExpiredCredentials);
            }
            let secret = SigningSecret {
                secret_access_key: session.secret_access_key.clone(),
                session_token: Some(session.session_token.clone()),
            };
            Ok((session, secret))
        },
    );
    let session = match session {
        Ok(session) => session,
        Err(rejection) => {
            let response = rejection_response(&rejection, &request_id);
            tracing::info!(
                request_id,
                status = response.status().as_u16(),
                "STS target refused a request"
            );
            return response;
        }
    };

    let query = parts.uri.query().unwrap_or_default().as_bytes();
    let params: Vec<(Cow<'_, str>, Cow<'_, str>)> = url::form_urlencoded::parse(query)
        .chain(url::form_urlencoded::parse(&body))
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    };
    match (param("Action"), param("Version")) {
        (Some("GetCallerIdentity"), Some(API_VERSION)) => {}
        (action, version) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                &format!(
                    "Could not find operation {} for version {}",
                    action.unwrap_or("NO_ACTION"),
                    version.unwrap_or("NO_VERSION_SPECIFIED")
                ),
                &request_id,
            );
        }
    }
    tracing::info!(
        request_id,
        access_key_id = session.access_key_id,
        arn = session.assumed_role_arn,
        "STS target verified the signature; answering GetCallerIdentity"
    );
    caller_identity(&session, &request_id)
}

fn caller_identity(session: &IssuedSession, request_id: &str) -> Response {
    // `arn:<partition>:sts::<account>:assumed-role/...`: the account is the fifth field.
    let account = session
        .assumed_role_arn
        .split(':')
        .nth(4)
        .unwrap_or_default();
    let body = format!(
        "<GetCallerIdentityResponse xmlns=\"{XMLNS}\">\n  <GetCallerIdentityResult>\n    <Arn>{}</Arn>\n    <UserId>{}</UserId>\n    <Account>{}</Account>\n  </GetCallerIdentityResult>\n  <ResponseMetadata>\n    <RequestId>{}</RequestId>\n  </ResponseMetadata>\n</GetCallerIdentityResponse>\n",
        escape(&session.assumed_role_arn),
        escape(&session.assume_role_id),
        escape(account),
        escape(request_id),
    );
    xml(StatusCode::OK, body, request_id)
}

fn rejection_response(rejection: &Rejection, request_id: &str) -> Response {
    let (status, code, message): (_, _, Cow<'_, str>) = match rejection {
        Rejection::Missing => (
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token".into(),
        ),
        Rejection::Incomplete(message) => (
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            message.into(),
        ),
        Rejection::UnknownCredentials => (
            StatusCode::FORBIDDEN,
            "InvalidClientTokenId",
            INVALID_SECURITY_TOKEN.into(),
        ),
        Rejection::ExpiredCredentials => (
            StatusCode::FORBIDDEN,
            "ExpiredToken",
            EXPIRED_SECURITY_TOKEN.into(),
        ),
        Rejection::Mismatch => (
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            SIGNATURE_MISMATCH.into(),
        ),
        Rejection::Scope(message) | Rejection::Stale(message) => (
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            message.into(),
        ),
    };
    error(status, code, &message, request_id)
}

fn error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let body = format!(
        "<ErrorResponse xmlns=\"{XMLNS}\">\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{}</RequestId>\n</ErrorResponse>\n",
        escape(code),
        escape(message),
        escape(request_id),
    );
    xml(status, body, request_id)
}

fn xml(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['<', '>', '&', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
