//! Local verification of rotated tokens (agent-lib feature `kubernetes`): a JWKS document (the
//! API server's `/openid/v1/jwks`) and a token (a pod's `Authorization` header) from the same
//! input, split at the first newline. Parsing and verifying never panic, and neither errors nor
//! `Debug` output show the raw token.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use pod_identity_agent_lib::cache::PodIdentity;
use pod_identity_agent_lib::jwk::{ClaimRules, KeySet};
use pod_identity_agent_lib::kubernetes::{jwks::verify_token, version::KubernetesVersion};
use pod_identity_core::token::ServiceAccountToken;

fuzz_target!(|data: &[u8]| {
    let (document, token) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &data[..0]),
    };
    let _ = KubernetesVersion::from_version_document(document);
    let Ok(keys) = KeySet::parse(document) else {
        return;
    };
    let _ = keys.key_ids();
    let Ok(token) = ServiceAccountToken::decode_bytes(token) else {
        return;
    };
    let _ = PodIdentity::of(&token);
    let raw = token.expose_secret();
    // Long enough that a chance substring of fixed error text is not a false alarm.
    let distinctive = raw.len() >= 24;
    for secs in [0, 1_700_000_000, u64::MAX / 4] {
        let Some(now) = UNIX_EPOCH.checked_add(Duration::from_secs(secs)) else {
            continue;
        };
        for leeway in [Duration::ZERO, Duration::from_secs(30), Duration::MAX] {
            let rules = ClaimRules::new().leeway(leeway);
            let outcome = verify_token(&keys, &token, &rules, now);
            if distinctive {
                let text = match &outcome {
                    Ok(verified) => format!("{verified:?}"),
                    Err(error) => format!("{error} {error:?}"),
                };
                assert!(!text.contains(raw), "the outcome shows the raw token");
            }
        }
    }
});
