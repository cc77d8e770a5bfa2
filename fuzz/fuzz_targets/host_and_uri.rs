//! The agent's `Host` check and request validation, and the provider's credentials-URI policy:
//! never panic, and nothing but the allowed addresses ever passes.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use pod_identity_agent_lib::{validation::HostAllowList, validation::RequestValidator};
use pod_identity_core::endpoint::{
    AGENT_IPV4, AGENT_IPV6, FullUri, HostCheck, host_without_port, is_allowed_ip,
};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (host_bytes, rest) = data.split_at(split);
    let authorization = rest.get(1..).unwrap_or_default();

    if let Ok(host) = std::str::from_utf8(host_bytes) {
        let stripped = host_without_port(host);
        assert!(host.contains(stripped));
        // The reference allow-list admits the two agent addresses and nothing else: no name,
        // no `169.254.170.23.evil`, no other spelling that is not the same address.
        if HostAllowList::reference().check(host).is_ok() {
            let ip: IpAddr = stripped
                .parse()
                .unwrap_or_else(|_| panic!("a non-address host passed: {host:?}"));
            assert!(
                ip == IpAddr::V4(AGENT_IPV4) || ip == IpAddr::V6(AGENT_IPV6),
                "{host:?}"
            );
        }

        if let Ok(uri) = FullUri::parse(host) {
            let url = uri.url();
            assert!(matches!(url.scheme(), "http" | "https"));
            if url.scheme() == "http" && uri.host_check() == HostCheck::Allowed {
                let ip = match url.host() {
                    Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
                    Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
                    other => panic!("plain http allowed for a non-address host {other:?}"),
                };
                assert!(is_allowed_ip(ip), "plain http allowed for {ip}");
            }
        }
        let _ = FullUri::from_relative(host);
    }

    // The full validation of a request head, with bytes as they arrive.
    let validator = RequestValidator::new(HostAllowList::reference());
    match validator.validate(Some(host_bytes), Some(authorization)) {
        Ok(token) => assert_eq!(token.expose_secret().as_bytes(), authorization),
        Err(error) => {
            let _ = (error.status(), error.body());
        }
    }
});
