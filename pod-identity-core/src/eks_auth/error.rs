//! EKS Auth errors: the codes, their status, cache class and fault, and the error answer.

use std::fmt;

use serde::Deserialize;

/// An EKS Auth error code: the nine modeled ones, or another.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EksAuthErrorCode {
    /// `AccessDeniedException` (400, irrecoverable).
    AccessDenied,
    /// `ExpiredTokenException` (400, irrecoverable).
    ExpiredToken,
    /// `InvalidTokenException` (400, irrecoverable).
    InvalidToken,
    /// `InvalidParameterException` (400, recoverable).
    InvalidParameter,
    /// `InvalidRequestException` (400, recoverable).
    InvalidRequest,
    /// `ResourceNotFoundException` (404, irrecoverable).
    ResourceNotFound,
    /// `ThrottlingException` (429, recoverable).
    Throttling,
    /// `InternalServerException` (500, recoverable).
    InternalServer,
    /// `ServiceUnavailableException` (503, recoverable).
    ServiceUnavailable,
    /// Any other code, sanitized (recoverable).
    Unknown(String),
}

/// What the agent's cache does with an error. Exhaustive on purpose: the reference agent's
/// cache knows exactly these two outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Keep the cached credentials and retry later.
    Recoverable,
    /// Evict: retrying the same token cannot succeed.
    Irrecoverable,
}

/// Smithy's error fault, as the reference prints it. Exhaustive on purpose: smithy models
/// exactly these three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The caller's fault.
    Client,
    /// The service's fault.
    Server,
    /// Not modeled.
    Unknown,
}

impl Fault {
    /// `client`, `server` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Server => "server",
            Fault::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Strips a `namespace#` prefix and a `:…` suffix, as smithy's `sanitize_error_code` does.
pub fn sanitize_error_code(raw: &str) -> &str {
    let code = raw.split(':').next().unwrap_or(raw);
    match code.split_once('#') {
        Some((_, name)) => name,
        None => code,
    }
}

impl EksAuthErrorCode {
    /// The nine modeled codes.
    pub const MODELED: [EksAuthErrorCode; 9] = [
        EksAuthErrorCode::AccessDenied,
        EksAuthErrorCode::ExpiredToken,
        EksAuthErrorCode::InvalidToken,
        EksAuthErrorCode::InvalidParameter,
        EksAuthErrorCode::InvalidRequest,
        EksAuthErrorCode::ResourceNotFound,
        EksAuthErrorCode::Throttling,
        EksAuthErrorCode::InternalServer,
        EksAuthErrorCode::ServiceUnavailable,
    ];

    /// Reads a code, stripping any `namespace#` prefix and `:…` suffix.
    ///
    /// ```
    /// use pod_identity_core::eks_auth::EksAuthErrorCode;
    ///
    /// let code = EksAuthErrorCode::from_raw("com.amazonaws.eksauth#AccessDeniedException:http://x");
    /// assert_eq!(code, EksAuthErrorCode::AccessDenied);
    /// ```
    pub fn from_raw(raw: &str) -> Self {
        let code = sanitize_error_code(raw);
        Self::MODELED
            .into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or_else(|| EksAuthErrorCode::Unknown(code.to_owned()))
    }

    /// The code as EKS Auth writes it: `AccessDeniedException`, ...
    pub fn as_str(&self) -> &str {
        match self {
            EksAuthErrorCode::AccessDenied => "AccessDeniedException",
            EksAuthErrorCode::ExpiredToken => "ExpiredTokenException",
            EksAuthErrorCode::InvalidToken => "InvalidTokenException",
            EksAuthErrorCode::InvalidParameter => "InvalidParameterException",
            EksAuthErrorCode::InvalidRequest => "InvalidRequestException",
            EksAuthErrorCode::ResourceNotFound => "ResourceNotFoundException",
            EksAuthErrorCode::Throttling => "ThrottlingException",
            EksAuthErrorCode::InternalServer => "InternalServerException",
            EksAuthErrorCode::ServiceUnavailable => "ServiceUnavailableException",
            EksAuthErrorCode::Unknown(code) => code,
        }
    }

    /// The modeled HTTP status; 500 for an unknown code (use the response's own status).
    pub fn status(&self) -> u16 {
        match self {
            EksAuthErrorCode::AccessDenied
            | EksAuthErrorCode::ExpiredToken
            | EksAuthErrorCode::InvalidToken
            | EksAuthErrorCode::InvalidParameter
            | EksAuthErrorCode::InvalidRequest => 400,
            EksAuthErrorCode::ResourceNotFound => 404,
            EksAuthErrorCode::Throttling => 429,
            EksAuthErrorCode::InternalServer | EksAuthErrorCode::Unknown(_) => 500,
            EksAuthErrorCode::ServiceUnavailable => 503,
        }
    }

    /// What the agent's cache does with it (reference `IsIrrecoverableApiError`).
    pub fn class(&self) -> ErrorClass {
        match self {
            EksAuthErrorCode::AccessDenied
            | EksAuthErrorCode::ExpiredToken
            | EksAuthErrorCode::InvalidToken
            | EksAuthErrorCode::ResourceNotFound => ErrorClass::Irrecoverable,
            _ => ErrorClass::Recoverable,
        }
    }

    /// The modeled fault: server for the two 5xx codes, unknown for unmodeled codes.
    pub fn fault(&self) -> Fault {
        match self {
            EksAuthErrorCode::InternalServer | EksAuthErrorCode::ServiceUnavailable => {
                Fault::Server
            }
            EksAuthErrorCode::Unknown(_) => Fault::Unknown,
            _ => Fault::Client,
        }
    }

    /// Whether the SDK's standard retry strategy retries it (throttling and 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EksAuthErrorCode::Throttling
                | EksAuthErrorCode::InternalServer
                | EksAuthErrorCode::ServiceUnavailable
        )
    }
}

impl fmt::Display for EksAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer from EKS Auth.
///
/// ```
/// use pod_identity_core::eks_auth::{EksAuthError, EksAuthErrorCode, ErrorClass};
///
/// let err = EksAuthError::from_http(
///     400,
///     Some("AccessDeniedException:http://internal.amazon.com/coral/com.amazonaws.eksauth/"),
///     Some("0d2f1f8a-1111-2222-3333-444455556666"),
///     br#"{"message":"not allowed"}"#,
/// );
/// assert_eq!(err.code(), &EksAuthErrorCode::AccessDenied);
/// assert_eq!(err.class(), ErrorClass::Irrecoverable);
/// assert_eq!(
///     err.agent_body(),
///     "[0d2f1f8a-1111-2222-3333-444455556666]: (AccessDeniedException): not allowed, fault: client"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EKS Auth error {code} (HTTP {status}): {message}")]
pub struct EksAuthError {
    code: EksAuthErrorCode,
    status: u16,
    message: String,
    request_id: Option<String>,
    fault: Fault,
}

impl EksAuthError {
    /// An error with the code's modeled fault and no request id.
    pub fn new(code: EksAuthErrorCode, status: u16, message: impl Into<String>) -> Self {
        let fault = code.fault();
        Self {
            code,
            status,
            message: message.into(),
            request_id: None,
            fault,
        }
    }

    /// An error with the code's modeled status.
    pub fn modeled(code: EksAuthErrorCode, message: impl Into<String>) -> Self {
        let status = code.status();
        Self::new(code, status, message)
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the fault.
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// From an HTTP error response: the code from `X-Amzn-Errortype`, else the body's `__type`,
    /// else its `code`; the message from `message`/`Message`; `UnknownError` for what is missing.
    pub fn from_http(
        status: u16,
        error_type_header: Option<&str>,
        request_id: Option<&str>,
        body: &[u8],
    ) -> Self {
        #[derive(Deserialize, Default)]
        struct ErrorBody {
            #[serde(rename = "__type")]
            type_: Option<serde_json::Value>,
            code: Option<serde_json::Value>,
            message: Option<serde_json::Value>,
            #[serde(rename = "Message")]
            message_upper: Option<serde_json::Value>,
        }
        let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let text = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let raw_code = error_type_header
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .or_else(|| text(&parsed.type_))
            .or_else(|| text(&parsed.code))
            .unwrap_or_else(|| "UnknownError".to_owned());
        let message = text(&parsed.message)
            .or_else(|| text(&parsed.message_upper))
            .unwrap_or_else(|| "UnknownError".to_owned());
        let mut err = Self::new(EksAuthErrorCode::from_raw(&raw_code), status, message);
        if let Some(id) = request_id {
            err.request_id = Some(id.to_owned());
        }
        err
    }

    /// The code.
    pub fn code(&self) -> &EksAuthErrorCode {
        &self.code
    }

    /// The HTTP status it came with (the agent answers with it).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request id, when known.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The fault.
    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// The cache class of the code.
    pub fn class(&self) -> ErrorClass {
        self.code.class()
    }

    /// The reference agent's body (without the trailing newline):
    /// `[<request-id>]: (<Code>): <message>, fault: <client|server|unknown>`.
    pub fn agent_body(&self) -> String {
        format!(
            "[{}]: ({}): {}, fault: {}",
            self.request_id.as_deref().unwrap_or_default(),
            self.code,
            self.message,
            self.fault
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modeled_codes() {
        let table = [
            ("AccessDeniedException", 400, ErrorClass::Irrecoverable),
            ("ExpiredTokenException", 400, ErrorClass::Irrecoverable),
            ("InvalidTokenException", 400, ErrorClass::Irrecoverable),
            ("InvalidParameterException", 400, ErrorClass::Recoverable),
            ("InvalidRequestException", 400, ErrorClass::Recoverable),
            ("ResourceNotFoundException", 404, ErrorClass::Irrecoverable),
            ("ThrottlingException", 429, ErrorClass::Recoverable),
            ("InternalServerException", 500, ErrorClass::Recoverable),
            ("ServiceUnavailableException", 503, ErrorClass::Recoverable),
        ];
        for (name, status, class) in table {
            let code = EksAuthErrorCode::from_raw(name);
            assert!(!matches!(code, EksAuthErrorCode::Unknown(_)), "{name}");
            assert_eq!(
                (code.as_str(), code.status(), code.class()),
                (name, status, class)
            );
        }
        let other = EksAuthErrorCode::from_raw("ns#SomethingNew:http://x");
        assert_eq!(other, EksAuthErrorCode::Unknown("SomethingNew".into()));
        assert_eq!(
            (other.class(), other.fault()),
            (ErrorClass::Recoverable, Fault::Unknown)
        );
    }

    #[test]
    fn code_sources_in_order() {
        let body =
            br#"{"__type":"a#ThrottlingException","code":"InternalServerException","message":"m"}"#;
        let from = |h| EksAuthError::from_http(429, h, None, body).code().clone();
        assert_eq!(
            from(Some("ExpiredTokenException")),
            EksAuthErrorCode::ExpiredToken
        );
        assert_eq!(from(None), EksAuthErrorCode::Throttling);
        assert_eq!(from(Some("")), EksAuthErrorCode::Throttling);
        let only_code =
            EksAuthError::from_http(500, None, None, br#"{"code":"InternalServerException:x"}"#);
        assert_eq!(only_code.code(), &EksAuthErrorCode::InternalServer);
        assert_eq!(only_code.message(), "UnknownError");
        let nothing = EksAuthError::from_http(502, None, None, b"<html>bad gateway</html>");
        assert_eq!(nothing.code().as_str(), "UnknownError");
        assert_eq!(
            nothing.agent_body(),
            "[]: (UnknownError): UnknownError, fault: unknown"
        );
        assert_eq!(nothing.status(), 502);
    }
}
