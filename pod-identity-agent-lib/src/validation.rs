//! Request validation, in the reference agent's order and with its texts.
//!
//! 1. The `Host` the client called, with port and brackets stripped, must be in the allow-list,
//!    else 403 `Access Denied. Called agent through invalid address, please use either
//!    [<allowed hosts>] address not <host>`. The reference allows only `169.254.170.23` and
//!    `fd00:ec2::23` whatever it binds; here the list defaults to the configured bind hosts.
//! 2. The `Authorization` header is the token itself (no `Bearer`): missing or empty is 400
//!    `Service account token cannot be empty`.
//! 3. The token must decode as a JWT with a known `alg` (400 `Service account token cannot be
//!    parsed: …`), and its `exp` and `nbf` must hold now (400 `Service account token failed basic
//!    claim validations: …`). The signature is not verified here; EKS Auth verifies it.
//!
//! Decoding and the texts come from `pod_identity_core` ([`ServiceAccountToken::decode`],
//! [`ServiceAccountToken::validate_time`], [`AgentError`]).
//!
//! A cache that already holds a token's answer checks step 3's times on the `exp` and `nbf`
//! it kept instead of decoding the token again: decoding is deterministic, so a token that
//! decoded once decodes the same, and only the time check can change.

use aws_smithy_async::time::SharedTimeSource;
use std::net::IpAddr;

use pod_identity_core::endpoint::host_without_port;
use pod_identity_core::{agent_error::AgentError, token::ServiceAccountToken};

/// The reference agent's bind hosts: `169.254.170.23` and `[fd00:ec2::23]`.
pub const DEFAULT_BIND_HOSTS: [&str; 2] = ["169.254.170.23", "[fd00:ec2::23]"];

/// The hosts clients may call the agent through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAllowList {
    hosts: Vec<String>,
}

impl HostAllowList {
    /// An allow-list of `hosts` (brackets and ports stripped, as in a `Host` header).
    pub fn new(hosts: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        Self {
            hosts: hosts
                .into_iter()
                .map(|h| host_without_port(h.as_ref()).to_owned())
                .collect(),
        }
    }

    /// The allow-list for an agent bound on `bind_hosts`: the hosts themselves, except that an
    /// unspecified address (`0.0.0.0`, `::`), which no client addresses, stands for the
    /// reference addresses.
    pub fn for_bind_hosts(bind_hosts: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let mut hosts = Vec::new();
        for host in bind_hosts {
            let host = host_without_port(host.as_ref());
            let unspecified = host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
            let expanded: Vec<&str> = if unspecified {
                DEFAULT_BIND_HOSTS
                    .iter()
                    .map(|h| host_without_port(h))
                    .collect()
            } else {
                vec![host]
            };
            for host in expanded {
                if !hosts.iter().any(|h: &String| h == host) {
                    hosts.push(host.to_owned());
                }
            }
        }
        Self { hosts }
    }

    /// The reference agent's fixed list: `169.254.170.23` and `fd00:ec2::23`.
    pub fn reference() -> Self {
        Self::new(DEFAULT_BIND_HOSTS)
    }

    /// The allowed hosts, as printed in the 403 body.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Checks the host of a `Host` header value.
    pub fn check(&self, host_header: &str) -> Result<(), AgentError> {
        let host = host_without_port(host_header);
        if self.hosts.iter().any(|allowed| same_host(allowed, host)) {
            Ok(())
        } else {
            Err(AgentError::InvalidHost {
                host: echoed(host).to_owned(),
                allowed: self.hosts.clone(),
            })
        }
    }
}

/// Most bytes of a refused `Host` the 403 body repeats (the longest DNS name), so that a large
/// `Host` does not buy a large answer.
pub const MAX_ECHOED_HOST_BYTES: usize = 255;

/// `host` cut to at most [`MAX_ECHOED_HOST_BYTES`], on a character boundary.
fn echoed(host: &str) -> &str {
    let mut end = host.len().min(MAX_ECHOED_HOST_BYTES);
    while !host.is_char_boundary(end) {
        end -= 1;
    }
    &host[..end]
}

/// Equal as IP addresses when both are (so `FD00:EC2::23` matches `fd00:ec2::23`), else as
/// case-insensitive names.
fn same_host(allowed: &str, host: &str) -> bool {
    match (allowed.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => allowed.eq_ignore_ascii_case(host),
    }
}

/// Validates credential requests: host first, then the token.
#[derive(Clone, Debug)]
pub struct RequestValidator {
    hosts: HostAllowList,
    clock: SharedTimeSource,
}

impl RequestValidator {
    /// A validator with `hosts` and the system clock.
    pub fn new(hosts: HostAllowList) -> Self {
        Self {
            hosts,
            clock: SharedTimeSource::default(),
        }
    }

    /// Uses `clock` for the token's `exp` and `nbf` checks.
    pub fn with_clock(mut self, clock: SharedTimeSource) -> Self {
        self.clock = clock;
        self
    }

    /// The host allow-list.
    pub fn hosts(&self) -> &HostAllowList {
        &self.hosts
    }

    /// Validates a request's `Host` and `Authorization` header values.
    ///
    /// A missing `Host` is checked as the empty host (and so denied unless allowed).
    pub fn validate(
        &self,
        host: Option<&[u8]>,
        authorization: Option<&[u8]>,
    ) -> Result<ServiceAccountToken, AgentError> {
        self.check_host(host)?;
        self.validate_token(authorization)
    }

    /// Step 1 alone: checks a request's `Host` header value (missing is the empty host).
    pub fn check_host(&self, host: Option<&[u8]>) -> Result<(), AgentError> {
        let host = host.map(String::from_utf8_lossy).unwrap_or_default();
        self.hosts.check(&host)
    }

    /// Steps 2 and 3 alone: decodes the `Authorization` header value and checks its times.
    pub fn validate_token(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<ServiceAccountToken, AgentError> {
        // Decoded from the bytes: the reference's texts (byte offsets included), and a token
        // that is not UTF-8 is refused rather than forwarded (and cached) in a lossy form that
        // other bytes could map to as well.
        let token = ServiceAccountToken::decode_bytes(authorization.unwrap_or_default())
            .map_err(AgentError::Token)?;
        token
            .validate_time(self.clock.now())
            .map_err(AgentError::Token)?;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pod_identity_core::token::TokenError;

    use super::*;
    use crate::test_support::{day_token, wall_clock};

    #[test]
    fn the_allow_list_strips_brackets_and_ports_and_compares_addresses() {
        let list = HostAllowList::new(["[fd00:ec2::23]", "169.254.170.23", "localhost"]);
        assert_eq!(
            list.hosts(),
            ["fd00:ec2::23", "169.254.170.23", "localhost"]
        );
        for host in [
            "fd00:ec2::23",
            "[fd00:ec2::23]:80",
            "[fd00:ec2:0:0:0:0:0:23]",
            "169.254.170.23:8080",
            "LOCALHOST:80",
        ] {
            assert_eq!(list.check(host), Ok(()), "{host}");
        }
        for host in [
            "169.254.170.2",
            "[::ffff:169.254.170.23]",
            "",
            "evil.example",
        ] {
            assert!(
                matches!(list.check(host), Err(AgentError::InvalidHost { .. })),
                "{host}"
            );
        }
        assert_eq!(
            HostAllowList::reference().hosts(),
            ["169.254.170.23", "fd00:ec2::23"]
        );
    }

    #[test]
    fn unspecified_bind_hosts_allow_the_reference_addresses() {
        let list = HostAllowList::for_bind_hosts(["0.0.0.0", "127.0.0.1", "[::]"]);
        assert_eq!(
            list.hosts(),
            ["169.254.170.23", "fd00:ec2::23", "127.0.0.1"]
        );
        let list = HostAllowList::for_bind_hosts(["169.254.170.23", "[fd00:ec2::23]"]);
        assert_eq!(list, HostAllowList::reference());
    }

    #[tokio::test(start_paused = true)]
    async fn the_host_is_checked_before_the_token_and_time_comes_from_the_clock() {
        let validator = RequestValidator::new(HostAllowList::reference()).with_clock(wall_clock());
        assert!(matches!(
            validator.validate(Some(b"10.0.0.1"), None),
            Err(AgentError::InvalidHost { .. })
        ));
        assert_eq!(
            validator.validate(None, Some(b"x")).unwrap_err().status(),
            403,
            "a missing Host is not allowed"
        );
        assert_eq!(
            validator
                .validate(Some(b"169.254.170.23"), None)
                .unwrap_err(),
            AgentError::Token(TokenError::Empty)
        );
        let token = day_token("p");
        let decoded = validator
            .validate(Some(b"169.254.170.23"), Some(token.as_bytes()))
            .unwrap();
        assert_eq!(decoded.expose_secret(), token);
        // A day later (on the paused clock) the same token has expired.
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert_eq!(
            validator.validate(Some(b"169.254.170.23"), Some(token.as_bytes())),
            Err(AgentError::Token(TokenError::Expired))
        );
    }

    #[test]
    fn non_utf8_tokens_are_refused_as_unparseable() {
        let validator = RequestValidator::new(HostAllowList::reference());
        let error = validator
            .validate(
                Some(b"169.254.170.23"),
                Some(&[0xff, 0xfe, b'.', b'a', b'.', b'b']),
            )
            .unwrap_err();
        assert_eq!(error.status(), 400);
        assert!(
            error
                .body()
                .starts_with("Service account token cannot be parsed: "),
            "{}",
            error.body()
        );
    }
}
