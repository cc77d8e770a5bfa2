//! EKS Auth error answers: status, `x-amzn-errortype`, request id and body, in every
//! combination. Never panics; the code is always sanitized; the agent's body ends in the
//! fault.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_identity_agent_lib::simulator::error_body;
use pod_identity_core::eks_auth::sanitize_error_code;
use pod_identity_core::{eks_auth::EksAuthError, eks_auth::EksAuthErrorCode};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = u16::from_le_bytes([data[0], data[1]]);
    let flags = data[2];
    let rest = &data[3..];
    // Up to two NUL-separated header values, then the body.
    let mut parts = rest.splitn(3, |b| *b == 0);
    let first = parts.next().unwrap_or_default();
    let second = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let header = std::str::from_utf8(first).ok().filter(|_| flags & 1 != 0);
    let request_id = std::str::from_utf8(second).ok().filter(|_| flags & 2 != 0);
    let body = if flags & 4 != 0 { rest } else { body };

    let error = EksAuthError::from_http(status, header, request_id, body);
    // As smithy's `sanitize_error_code`: everything from the first `:` goes, then everything
    // up to the first `#`.
    let code = error.code().as_str().to_owned();
    assert!(!code.contains(':'), "suffix kept: {code}");
    let body_text = error.agent_body();
    assert!(
        body_text.ends_with(&format!("fault: {}", error.fault().as_str())),
        "{body_text}"
    );
    let _ = error.class();
    let _ = error_body(&error);
    let _ = format!("{error} {error:?}");
    if let Ok(raw) = std::str::from_utf8(rest) {
        let sanitized = sanitize_error_code(raw);
        let _ = EksAuthErrorCode::from_raw(raw).status();
        assert!(raw.contains(sanitized));
    }
});
