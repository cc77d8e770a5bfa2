//! Service-account token decoding (the agent's `Authorization` header): never panics, keeps the
//! raw bytes exactly, and never shows the raw token in `Debug` or error text.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use pod_identity_core::token::ServiceAccountToken;

fuzz_target!(|data: &[u8]| {
    let decoded = ServiceAccountToken::decode_bytes(data);
    // Long enough, and shaped like a token (three segments), that a chance substring of the
    // output (such as the fixed English of an error) is not a false alarm.
    let distinctive = data.len() >= 24 && data.iter().filter(|b| **b == b'.').count() >= 2;
    let raw = String::from_utf8_lossy(data);
    match decoded {
        Ok(token) => {
            assert_eq!(token.expose_secret().as_bytes(), data);
            let debug = format!("{token:?}");
            if distinctive {
                assert!(!debug.contains(raw.as_ref()), "Debug shows the raw token");
            }
            for secs in [0, 1_700_000_000, i64::MAX as u64 / 2, u64::MAX / 4] {
                if let Some(now) = UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
                    let _ = token.validate_time(now);
                }
            }
            let _ = token.validate_time(SystemTime::UNIX_EPOCH);
            let claims = token.claims();
            let _ = claims.service_account();
            let _ = claims.expires_at();
            let _ = claims.issued_at();
            let _ = claims.not_before();
            let _ = claims.has_audience("pods.eks.amazonaws.com");
        }
        Err(error) => {
            assert_eq!(error.status(), 400);
            if distinctive {
                let text = format!("{error} {error:?}");
                assert!(
                    !text.contains(raw.as_ref()),
                    "error text shows the raw token"
                );
            }
        }
    }
});
