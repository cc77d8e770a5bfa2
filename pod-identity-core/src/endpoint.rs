//! Where credentials are served: constants and the allowed-host policy.
//!
//! Contract (the AWS SDKs' container-credentials clients; `aws-config` `ecs.rs`):
//! - `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is appended to `http://169.254.170.2` and wins over
//!   `AWS_CONTAINER_CREDENTIALS_FULL_URI`; the token comes from
//!   `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (re-read on every fetch), which wins over
//!   `AWS_CONTAINER_AUTHORIZATION_TOKEN`. This module only names them; reading them is the
//!   caller's business.
//! - A full URI must be `http` or `https`. `https` may name any host. Plain `http` must name an
//!   allowed address: loopback (`127.0.0.0/8`, `::1`), `169.254.170.2` (ECS), `169.254.170.23` or
//!   `fd00:ec2::23` (EKS Pod Identity agent). IPv4-mapped IPv6 addresses such as
//!   `[::ffff:127.0.0.1]` are rejected. A DNS name over plain `http` comes back as
//!   [`HostCheck::MustResolve`]: the caller resolves it and every address must pass
//!   [`is_allowed_ip`] ([`FullUri::check_resolved`]).
//! - The agent side compares the request's `Host` header, port and brackets stripped
//!   ([`host_without_port`]), against its bind hosts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Env var holding the full credentials URI.
pub const ENV_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
/// Env var holding a path appended to `http://169.254.170.2` (ECS); wins over [`ENV_FULL_URI`].
pub const ENV_RELATIVE_URI: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
/// Env var naming the file that holds the `Authorization` value; wins over [`ENV_AUTHORIZATION_TOKEN`].
pub const ENV_AUTHORIZATION_TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";
/// Env var holding the `Authorization` value itself.
pub const ENV_AUTHORIZATION_TOKEN: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";
/// The EKS Pod Identity agent's link-local IPv4 address.
pub const AGENT_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 23);
/// The EKS Pod Identity agent's IPv6 address (`fd00:ec2::23`).
pub const AGENT_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23);
/// The ECS container-credentials address, base of a relative URI.
pub const ECS_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
/// The agent's credentials port.
pub const AGENT_PORT: u16 = 80;
/// The agent's credentials path.
pub const CREDENTIALS_PATH: &str = "/v1/credentials";
/// Where the kubelet projects the pod's service-account token.
pub const TOKEN_FILE_PATH: &str =
    "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token";
/// The audience of the projected token.
pub const AUDIENCE: &str = "pods.eks.amazonaws.com";
/// The agent's health-probe port (bound on localhost).
pub const PROBE_PORT: u16 = 2703;
/// The agent's metrics port.
pub const METRICS_PORT: u16 = 2705;
/// The full URI EKS injects into pods on IPv4 clusters.
pub const AGENT_URI_IPV4: &str = "http://169.254.170.23/v1/credentials";
/// The full URI EKS injects into pods on IPv6 clusters.
pub const AGENT_URI_IPV6: &str = "http://[fd00:ec2::23]/v1/credentials";
/// The base a relative URI is appended to.
pub const ECS_BASE_URI: &str = "http://169.254.170.2";

/// Whether plain `http` may reach `ip`: loopback (`127.0.0.0/8`, `::1`), `169.254.170.2`,
/// `169.254.170.23` or `fd00:ec2::23`. IPv4-mapped IPv6 addresses are not allowed.
///
/// ```
/// use pod_identity_core::endpoint::is_allowed_ip;
///
/// assert!(is_allowed_ip("169.254.170.23".parse().unwrap()));
/// assert!(is_allowed_ip("127.1.2.3".parse().unwrap()));
/// assert!(!is_allowed_ip("::ffff:127.0.0.1".parse().unwrap()));
/// assert!(!is_allowed_ip("10.0.0.1".parse().unwrap()));
/// ```
pub fn is_allowed_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4 == ECS_IPV4 || v4 == AGENT_IPV4,
        IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST || v6 == AGENT_IPV6,
    }
}

/// The host of a `Host` header with the port and any brackets stripped, as the reference agent
/// does it (Go's `net.SplitHostPort`, then `[`…`]` removed): `169.254.170.23:80` →
/// `169.254.170.23`, `[fd00:ec2::23]:80` → `fd00:ec2::23`, `[fd00:ec2::23]` → `fd00:ec2::23`.
/// An authority Go cannot split (for example `fd00:ec2::23`) is kept as it is.
pub fn host_without_port(authority: &str) -> &str {
    let host = split_host_port(authority).unwrap_or(authority);
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner,
        None => host,
    }
}

/// The host part of Go's `net.SplitHostPort`, or `None` where Go returns an error.
fn split_host_port(hostport: &str) -> Option<&str> {
    let last_colon = hostport.rfind(':')?;
    let (host, no_open_from, no_close_from) = if hostport.starts_with('[') {
        let end = hostport.find(']')?;
        if end + 1 != last_colon {
            return None;
        }
        (hostport.get(1..end)?, 1, end + 1)
    } else {
        let host = hostport.get(..last_colon)?;
        if host.contains(':') {
            return None;
        }
        (host, 0, 0)
    };
    if hostport.get(no_open_from..)?.contains('[') || hostport.get(no_close_from..)?.contains(']') {
        return None;
    }
    Some(host)
}

/// A parsed full credentials URI that passed the allowed-host policy (see the module docs).
///
/// ```
/// use pod_identity_core::endpoint::{FullUri, HostCheck};
///
/// let uri = FullUri::parse("http://[fd00:ec2::23]/v1/credentials").unwrap();
/// assert_eq!(uri.host_check(), HostCheck::Allowed);
/// assert!(FullUri::parse("http://10.0.0.1/creds").is_err());
/// assert!(matches!(
///     FullUri::parse("http://localhost:8080/creds").unwrap().host_check(),
///     HostCheck::MustResolve { .. }
/// ));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullUri {
    url: Url,
    check: HostCheck,
}

/// What the policy says about a [`FullUri`]'s host.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCheck {
    /// `https`, or an allowed IP address.
    Allowed,
    /// A DNS name over plain `http`: every address it resolves to must pass [`is_allowed_ip`].
    MustResolve {
        /// The DNS name.
        host: String,
        /// The port (80 when the URI has none).
        port: u16,
    },
}

/// Why a credentials URI was refused. The text names the URI's host, never a token.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The text is not a URI.
    #[error("invalid credentials URI: {reason}")]
    InvalidUri {
        /// What the URI parser said.
        reason: String,
    },
    /// The scheme is neither `http` nor `https`.
    #[error("unsupported scheme `{scheme}` in credentials URI (only http and https)")]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
    },
    /// The URI names no host.
    #[error("credentials URI has no host")]
    MissingHost,
    /// Plain `http` to an address outside the allowed set.
    #[error(
        "credentials URI host `{host}` is not allowed over plain http \
         (loopback, 169.254.170.2, 169.254.170.23 or fd00:ec2::23, or use https)"
    )]
    DisallowedHost {
        /// The host (for a DNS name: the name, with the offending address in `address`).
        host: String,
        /// The resolved address that failed the policy, when the host is a DNS name.
        address: Option<IpAddr>,
    },
    /// A relative URI that does not start with `/`.
    #[error("relative credentials URI must start with `/`")]
    InvalidRelativeUri,
}

impl FullUri {
    /// Parses and policy-checks a full URI (`http`/`https` only).
    pub fn parse(s: &str) -> Result<FullUri, EndpointError> {
        let url = Url::parse(s).map_err(|e| EndpointError::InvalidUri {
            reason: e.to_string(),
        })?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(EndpointError::UnsupportedScheme {
                    scheme: other.to_owned(),
                });
            }
        };
        let check = match url.host() {
            None => return Err(EndpointError::MissingHost),
            Some(Host::Domain("")) => return Err(EndpointError::MissingHost),
            Some(_) if https => HostCheck::Allowed,
            Some(Host::Ipv4(v4)) => ip_check(IpAddr::V4(v4))?,
            Some(Host::Ipv6(v6)) => ip_check(IpAddr::V6(v6))?,
            Some(Host::Domain(name)) => HostCheck::MustResolve {
                host: name.to_owned(),
                port: url.port_or_known_default().unwrap_or(AGENT_PORT),
            },
        };
        Ok(FullUri { url, check })
    }

    /// `http://169.254.170.2` + `path` (ECS relative URI); `path` must start with `/`.
    pub fn from_relative(path: &str) -> Result<FullUri, EndpointError> {
        if !path.starts_with('/') {
            return Err(EndpointError::InvalidRelativeUri);
        }
        Self::parse(&format!("{ECS_BASE_URI}{path}"))
    }

    /// The URI as text (normalized by the URL parser).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// What the policy says about the host.
    pub fn host_check(&self) -> HostCheck {
        self.check.clone()
    }

    /// For a [`HostCheck::MustResolve`] host: checks the addresses it resolved to. Every one
    /// must be allowed, and there must be at least one.
    pub fn check_resolved(&self, addresses: &[IpAddr]) -> Result<(), EndpointError> {
        let HostCheck::MustResolve { host, .. } = &self.check else {
            return Ok(());
        };
        let disallowed = |address: Option<IpAddr>| EndpointError::DisallowedHost {
            host: host.clone(),
            address,
        };
        if addresses.is_empty() {
            return Err(disallowed(None));
        }
        match addresses.iter().find(|ip| !is_allowed_ip(**ip)) {
            Some(bad) => Err(disallowed(Some(*bad))),
            None => Ok(()),
        }
    }
}

impl std::str::FromStr for FullUri {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl std::fmt::Display for FullUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn ip_check(ip: IpAddr) -> Result<HostCheck, EndpointError> {
    if is_allowed_ip(ip) {
        Ok(HostCheck::Allowed)
    } else {
        Err(EndpointError::DisallowedHost {
            host: ip.to_string(),
            address: Some(ip),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_agree() {
        assert_eq!(AGENT_IPV6.to_string(), "fd00:ec2::23");
        assert_eq!(
            AGENT_URI_IPV4,
            format!("http://{AGENT_IPV4}{CREDENTIALS_PATH}")
        );
        assert_eq!(
            AGENT_URI_IPV6,
            format!("http://[{AGENT_IPV6}]{CREDENTIALS_PATH}")
        );
    }

    #[test]
    fn allowed_ips() {
        for ok in [
            "127.0.0.1",
            "127.255.255.254",
            "::1",
            "169.254.170.2",
            "169.254.170.23",
            "fd00:ec2::23",
        ] {
            assert!(is_allowed_ip(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "169.254.169.254",
            "10.0.0.1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.170.23",
            "fd00:ec2::24",
        ] {
            assert!(!is_allowed_ip(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn host_header_stripping_matches_go() {
        for (input, want) in [
            ("169.254.170.23", "169.254.170.23"),
            ("169.254.170.23:80", "169.254.170.23"),
            ("169.254.170.23:", "169.254.170.23"),
            ("[fd00:ec2::23]:80", "fd00:ec2::23"),
            ("[fd00:ec2::23]", "fd00:ec2::23"),
            ("fd00:ec2::23", "fd00:ec2::23"),
            ("localhost:2703", "localhost"),
            ("[::1]:x:y", "[::1]:x:y"),
            ("[]", ""),
            ("[", "["),
            ("", ""),
            ("a[b:80", "a[b:80"),
        ] {
            assert_eq!(host_without_port(input), want, "{input:?}");
        }
    }

    #[test]
    fn relative_uri() {
        let uri = FullUri::from_relative("/v2/credentials/abc").unwrap();
        assert_eq!(uri.as_str(), "http://169.254.170.2/v2/credentials/abc");
        assert_eq!(uri.host_check(), HostCheck::Allowed);
        assert_eq!(
            FullUri::from_relative("v2"),
            Err(EndpointError::InvalidRelativeUri)
        );
        assert_eq!(
            FullUri::from_relative(""),
            Err(EndpointError::InvalidRelativeUri)
        );
    }

    #[test]
    fn resolved_addresses() {
        let uri = FullUri::parse("http://agent.local:8080/creds").unwrap();
        assert_eq!(
            uri.host_check(),
            HostCheck::MustResolve {
                host: "agent.local".into(),
                port: 8080
            }
        );
        assert!(uri.check_resolved(&["127.0.0.1".parse().unwrap()]).is_ok());
        assert!(uri.check_resolved(&[]).is_err());
        let err = uri
            .check_resolved(&["127.0.0.1".parse().unwrap(), "10.1.1.1".parse().unwrap()])
            .unwrap_err();
        assert!(err.to_string().contains("agent.local"));
        let https = FullUri::parse("https://example.com/creds").unwrap();
        assert!(https.check_resolved(&[]).is_ok());
    }
}
