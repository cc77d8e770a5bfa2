//! Property tests: no parser panics on any input, and what we write we read back.

// Strategy helpers live outside `#[test]` functions.
#![allow(clippy::unwrap_used)]

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_core::association::Association;
use pod_identity_core::eks_auth::{
    AssumeRoleForPodIdentityResponse, EksAuthError, EksAuthErrorCode,
};
use pod_identity_core::endpoint::{FullUri, host_without_port};
use pod_identity_core::time::{
    format_epoch_seconds, format_rfc3339, from_epoch, from_epoch_seconds_f64, parse_epoch_seconds,
    parse_rfc3339,
};
use pod_identity_core::{
    arn::Arn, association::AssociationId, association::ClusterName, association::Namespace,
    association::ServiceAccountName, container_credentials::ContainerCredentials,
    secret::SecretString, token::ServiceAccountToken,
};
use proptest::prelude::*;

/// Seconds of 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
const MIN_RFC3339: i64 = -62_167_219_200;
const MAX_RFC3339: i64 = 253_402_300_799;

fn rfc3339_time() -> impl Strategy<Value = SystemTime> {
    (MIN_RFC3339..=MAX_RFC3339, 0u32..1_000_000_000).prop_map(|(s, n)| from_epoch(s, n).unwrap())
}

fn any_time() -> impl Strategy<Value = SystemTime> {
    // The whole range a SystemTime holds on 64-bit Unix, minus a margin.
    (-(1i64 << 62)..(1i64 << 62), 0u32..1_000_000_000)
        .prop_filter_map("representable", |(s, n)| from_epoch(s, n))
}

fn non_empty() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("non-empty", |s| !s.is_empty())
}

fn json_object_of_strings() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("AccessKeyId".to_owned()),
        Just("secretaccesskey".to_owned()),
        Just("Token".to_owned()),
        Just("SessionToken".to_owned()),
        Just("Expiration".to_owned()),
        Just("expiresAt".to_owned()),
        Just("Code".to_owned()),
        Just("Message".to_owned()),
        Just("AccountId".to_owned()),
        any::<String>(),
    ];
    let value = prop_oneof![
        any::<String>().prop_map(serde_json::Value::String),
        Just(serde_json::Value::String("2023-11-14T22:13:20Z".to_owned())),
        any::<i64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ];
    proptest::collection::vec((key, value), 0..10).prop_map(|entries| {
        let mut out = String::from("{");
        for (i, (k, v)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::Value::String(k.clone()).to_string());
            out.push(':');
            out.push_str(&v.to_string());
        }
        out.push('}');
        out.into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn time_parsers_never_panic(s in any::<String>(), near in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?[Zz+]?", f in any::<f64>()) {
        let _ = parse_rfc3339(&s);
        let _ = parse_rfc3339(&near);
        let _ = parse_epoch_seconds(&s);
        let _ = from_epoch_seconds_f64(f);
    }

    #[test]
    fn epoch_seconds_parser_never_panics(s in "-?[0-9]{0,25}(\\.[0-9]{0,15})?([eE][+-]?[0-9]{0,25})?") {
        let _ = parse_epoch_seconds(&s);
    }

    #[test]
    fn rfc3339_round_trips(t in rfc3339_time()) {
        let text = format_rfc3339(t);
        prop_assert_eq!(parse_rfc3339(&text), Ok(t), "{}", text);
        prop_assert!(!text.ends_with("0Z") || !text.contains('.'), "trailing zero in {}", text);
    }

    #[test]
    fn epoch_seconds_round_trip(t in any_time()) {
        prop_assert_eq!(parse_epoch_seconds(&format_epoch_seconds(t)), Some(t));
    }

    #[test]
    fn credentials_parser_never_panics(body in any::<Vec<u8>>(), object in json_object_of_strings()) {
        let _ = ContainerCredentials::from_json(&body);
        let _ = ContainerCredentials::from_json(&object);
    }

    #[test]
    fn credentials_round_trip(
        access_key_id in non_empty(),
        secret in non_empty(),
        token in non_empty(),
        account_id in proptest::option::of(non_empty()),
        expiration in rfc3339_time(),
    ) {
        let creds = ContainerCredentials {
            access_key_id,
            secret_access_key: SecretString::new(secret),
            token: SecretString::new(token),
            account_id,
            expiration,
        };
        let json = creds.to_json();
        prop_assert_eq!(ContainerCredentials::from_json(json.as_bytes()), Ok(creds));
        // Go-compatible escaping is still plain JSON.
        prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
    }

    #[test]
    fn credentials_debug_redacts(access_key_id in "[A-Z0-9]{16,20}", secret in any::<String>(), token in any::<String>()) {
        let creds = ContainerCredentials {
            access_key_id,
            secret_access_key: SecretString::new(format!("SECRET:{secret}")),
            token: SecretString::new(format!("TOKEN:{token}")),
            account_id: None,
            expiration: SystemTime::UNIX_EPOCH,
        };
        let debug = format!("{creds:?}");
        prop_assert!(!debug.contains("SECRET:") && !debug.contains("TOKEN:"), "{}", debug);
    }

    #[test]
    fn eks_auth_parsers_never_panic(
        body in any::<Vec<u8>>(),
        status in any::<u16>(),
        header in proptest::option::of(any::<String>()),
        request_id in proptest::option::of(any::<String>()),
        raw_code in any::<String>(),
    ) {
        let _ = AssumeRoleForPodIdentityResponse::from_json(&body);
        let err = EksAuthError::from_http(status, header.as_deref(), request_id.as_deref(), &body);
        let _ = err.agent_body();
        let _ = EksAuthErrorCode::from_raw(&raw_code);
    }

    #[test]
    fn token_decoder_never_panics(raw in any::<String>(), bytes in any::<Vec<u8>>(), segments in proptest::collection::vec(any::<Vec<u8>>(), 3), now in any_time()) {
        let _ = ServiceAccountToken::decode(&raw);
        let _ = ServiceAccountToken::decode_bytes(&bytes);
        let b64: Vec<String> = segments.iter().map(|s| URL_SAFE_NO_PAD.encode(s)).collect();
        if let Ok(token) = ServiceAccountToken::decode(&b64.join(".")) {
            let _ = token.validate_time(now);
            let _ = token.claims().service_account();
        }
    }

    #[test]
    fn token_decoder_never_panics_on_json(claims in json_object_of_strings(), alg in prop_oneof![Just("RS256".to_owned()), any::<String>()], now in any_time()) {
        let header = serde_json::json!({ "alg": alg }).to_string();
        let raw = format!("{}.{}.c2lnbmF0dXJlLXNlY3JldA", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(&claims));
        match ServiceAccountToken::decode(&raw) {
            Ok(token) => {
                let _ = token.validate_time(now);
                let debug = format!("{token:?}");
                prop_assert!(!debug.contains("c2lnbmF0dXJlLXNlY3JldA"));
            }
            Err(e) => prop_assert!(!e.to_string().contains("c2lnbmF0dXJlLXNlY3JldA")),
        }
    }

    #[test]
    fn token_claims_round_trip(
        ns in "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?",
        sa in "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?",
        exp in any::<i32>(),
        nbf in any::<i32>(),
        aud in proptest::collection::vec("[ -~]{0,20}", 0..4),
        now in any::<i32>(),
    ) {
        let claims = serde_json::json!({
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "exp": exp, "nbf": nbf, "aud": aud,
        });
        let raw = format!("{}.{}.sig", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let token = ServiceAccountToken::decode(&raw).unwrap();
        let c = token.claims();
        prop_assert_eq!((c.exp, c.nbf), (Some(i64::from(exp)), Some(i64::from(nbf))));
        prop_assert_eq!(&c.aud, &aud);
        let (got_ns, got_sa) = c.service_account().unwrap();
        prop_assert_eq!((got_ns.as_str(), got_sa.as_str()), (ns.as_str(), sa.as_str()));
        let result = token.validate_time(from_epoch(i64::from(now), 0).unwrap());
        prop_assert_eq!(result.is_ok(), now < exp && now >= nbf);
    }

    #[test]
    fn endpoint_and_name_parsers_never_panic(s in any::<String>(), uri in "(https?|ftp)://[a-z0-9.:\\[\\]@%-]{0,40}(/[ -~]{0,20})?") {
        let _ = FullUri::parse(&s);
        let _ = FullUri::parse(&uri).map(|u| u.host_check());
        let _ = FullUri::from_relative(&s);
        let _ = host_without_port(&s);
        let _ = s.parse::<Arn>().map(|a| (a.role_name().map(str::len), a.role_path().map(str::len), a.eks_cluster_name().map(str::len)));
        let _ = s.parse::<ClusterName>();
        let _ = s.parse::<Namespace>();
        let _ = s.parse::<ServiceAccountName>();
        let _ = s.parse::<AssociationId>();
        let _ = serde_json::from_str::<Association>(&s);
    }

    #[test]
    fn arn_like_inputs_never_panic(s in "arn:[a-z-]{0,12}:[a-z]{0,5}:[a-z0-9-]{0,12}:[0-9a-z]{0,13}:[ -~]{0,30}") {
        if let Ok(arn) = s.parse::<Arn>() {
            prop_assert_eq!(arn.to_string(), s);
            let _ = (arn.role_name(), arn.role_path(), arn.eks_cluster_name());
        }
    }
}
