//! The agent's plain-text error answers: each knows its status, body and content type.
//!
//! Contract: the bodies are the reference agent's (Go's `http.Error`): plain text
//! (`text/plain; charset=utf-8`) ending in `\n`, except the 431 and the early 400 that Go's
//! server writes itself without one.

use std::fmt;

use crate::eks_auth::EksAuthError;
use crate::token::TokenError;

/// Content type of the agent's error answers (Go's `http.Error`).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";

/// The agent's plain-text error answers (contracts §6): each knows its status and body.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentError {
    /// The `Host` the request came in on is not a bind host. 403.
    InvalidHost {
        /// The host, port and brackets stripped.
        host: String,
        /// The allowed hosts, as the reference prints them.
        allowed: Vec<String>,
    },
    /// The token was refused. 400, body = the [`TokenError`]'s text.
    Token(TokenError),
    /// EKS Auth answered with an error. Its status; body = [`EksAuthError::agent_body`].
    EksAuth(EksAuthError),
    /// Timeout, connection failure or another error without a response. 500 `[]`.
    Upstream,
    /// The credentials fetched expire too soon. 500.
    ExpiringCredentials {
        /// Milliseconds the credentials had left when fetched (negative when already expired);
        /// printed as seconds with two decimals, as the reference's `%0.2f` does.
        remaining_millis: i64,
    },
    /// Over the rate limit. 429.
    TooManyRequests,
    /// Not `/v1/credentials`. 404.
    NotFound,
    /// Request headers over the limit. 431.
    HeadersTooLarge,
    /// A request Go's HTTP server refuses before any handler runs: an HTTP/1.1 request without
    /// a `Host` header (`missing required Host header`), or with more than one (`too many Host
    /// headers`). 400, body `400 Bad Request: <reason>` without a trailing newline, as Go's
    /// server writes it.
    BadRequest {
        /// What is wrong with the request.
        reason: &'static str,
    },
    /// The token has no pod uid claim while the agent keys its cache by pod (the reference's
    /// 0.2 line). 400, body `failed to get pod uid from service account token: <reason>`.
    NoPodUid {
        /// Which claim is missing.
        reason: &'static str,
    },
}

impl AgentError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AgentError::InvalidHost { .. } => 403,
            AgentError::Token(e) => e.status(),
            AgentError::EksAuth(e) => e.status(),
            AgentError::Upstream | AgentError::ExpiringCredentials { .. } => 500,
            AgentError::TooManyRequests => 429,
            AgentError::NotFound => 404,
            AgentError::HeadersTooLarge => 431,
            AgentError::BadRequest { .. } | AgentError::NoPodUid { .. } => 400,
        }
    }

    /// The response body: with Go's `http.Error` trailing newline, except the 431 that Go's
    /// server writes itself without one.
    pub fn body(&self) -> String {
        match self {
            AgentError::HeadersTooLarge | AgentError::BadRequest { .. } => self.to_string(),
            _ => format!("{self}\n"),
        }
    }

    /// The response content type.
    pub fn content_type(&self) -> &'static str {
        CONTENT_TYPE_TEXT
    }
}

impl fmt::Display for AgentError {
    /// The body without its trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::InvalidHost { host, allowed } => write!(
                f,
                "Access Denied. Called agent through invalid address, please use either [{}] address not {host}",
                allowed.join(" ")
            ),
            AgentError::Token(e) => write!(f, "{e}"),
            AgentError::EksAuth(e) => f.write_str(&e.agent_body()),
            AgentError::Upstream => f.write_str("[]"),
            AgentError::ExpiringCredentials { remaining_millis } => {
                let centis = (remaining_millis.unsigned_abs() + 5) / 10;
                let sign = if *remaining_millis < 0 && centis > 0 {
                    "-"
                } else {
                    ""
                };
                write!(
                    f,
                    "fetched credentials are expired or will expire within the next {sign}{}.{:02} seconds",
                    centis / 100,
                    centis % 100
                )
            }
            AgentError::TooManyRequests => f.write_str("Too Many Requests"),
            AgentError::NotFound => f.write_str("404 page not found"),
            AgentError::HeadersTooLarge => f.write_str("431 Request Header Fields Too Large"),
            AgentError::BadRequest { reason } => write!(f, "400 Bad Request: {reason}"),
            AgentError::NoPodUid { reason } => write!(
                f,
                "failed to get pod uid from service account token: {reason}"
            ),
        }
    }
}

impl std::error::Error for AgentError {}

impl From<TokenError> for AgentError {
    fn from(e: TokenError) -> Self {
        AgentError::Token(e)
    }
}

impl From<EksAuthError> for AgentError {
    fn from(e: EksAuthError) -> Self {
        AgentError::EksAuth(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_error_bodies() {
        let host = AgentError::InvalidHost {
            host: "10.0.0.1".into(),
            allowed: vec!["169.254.170.23".into(), "fd00:ec2::23".into()],
        };
        assert_eq!(host.status(), 403);
        assert_eq!(
            host.body(),
            "Access Denied. Called agent through invalid address, please use either [169.254.170.23 fd00:ec2::23] address not 10.0.0.1\n"
        );
        assert_eq!(
            AgentError::Token(TokenError::Empty).body(),
            "Service account token cannot be empty\n"
        );
        assert_eq!(AgentError::Token(TokenError::Empty).status(), 400);
        assert_eq!(
            (AgentError::Upstream.status(), AgentError::Upstream.body()),
            (500, "[]\n".into())
        );
        let expiring = AgentError::ExpiringCredentials {
            remaining_millis: 12_345,
        };
        assert_eq!(
            expiring.body(),
            "fetched credentials are expired or will expire within the next 12.35 seconds\n"
        );
        let expired = AgentError::ExpiringCredentials {
            remaining_millis: -1_500,
        };
        assert!(expired.body().contains("next -1.50 seconds"));
        assert_eq!(AgentError::TooManyRequests.body(), "Too Many Requests\n");
        assert_eq!(AgentError::TooManyRequests.status(), 429);
        assert_eq!(AgentError::NotFound.status(), 404);
        assert_eq!(AgentError::HeadersTooLarge.status(), 431);
        assert_eq!(AgentError::NotFound.content_type(), CONTENT_TYPE_TEXT);
    }
}
