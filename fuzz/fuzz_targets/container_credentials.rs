//! The container-credentials JSON the SDKs (and our provider) parse from the agent: never
//! panics, round-trips what it accepts, and never puts a secret in an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_identity_core::time::{format_rfc3339, parse_rfc3339};
use pod_identity_core::{
    container_credentials::ContainerCredentials, container_credentials::ResponseError,
    secret::SecretString,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(time) = parse_rfc3339(text) {
            // What we print, we read back to the same instant.
            assert_eq!(parse_rfc3339(&format_rfc3339(time)).ok(), Some(time));
        }
    }
    match ContainerCredentials::from_json(data) {
        Ok(credentials) => {
            let debug = format!("{credentials:?}");
            // What the other (public) fields print by themselves, to tell a secret that is also
            // part of, say, the access key id from one that leaked.
            let mut blank = credentials.clone();
            blank.secret_access_key = SecretString::default();
            blank.token = SecretString::default();
            let baseline = format!("{blank:?}");
            for secret in [
                credentials.secret_access_key.expose_secret(),
                credentials.token.expose_secret(),
            ] {
                if secret.len() >= 12 && !baseline.contains(secret) {
                    assert!(!debug.contains(secret), "Debug shows a secret");
                }
            }
            // The agent's rendering drops empty fields (Go's omitempty), so only complete
            // credentials must survive a round trip.
            let complete = !credentials.access_key_id.is_empty()
                && !credentials.secret_access_key.is_empty()
                && !credentials.token.is_empty()
                && credentials.account_id.as_deref() != Some("");
            if complete {
                let json = credentials.to_json();
                let again = ContainerCredentials::from_json(json.as_bytes())
                    .expect("the agent's own rendering parses");
                assert_eq!(again, credentials);
            }
        }
        Err(error) => {
            let text = format!("{error} {error:?}");
            // Secrets the input carries (any string value of a key that names one) must not
            // reach the error text.
            if let (ResponseError::Malformed { .. }, Ok(serde_json::Value::Object(map))) =
                (&error, serde_json::from_slice::<serde_json::Value>(data))
            {
                for (key, value) in &map {
                    let key = key.to_ascii_lowercase();
                    let secret_key =
                        key.contains("secret") || key == "token" || key == "sessiontoken";
                    if let (true, Some(value)) = (secret_key, value.as_str()) {
                        if value.len() >= 12 {
                            assert!(!text.contains(value), "an error shows a secret: {text}");
                        }
                    }
                }
            }
        }
    }
});
