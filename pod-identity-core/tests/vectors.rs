//! The one runner for the reference vectors in `test-data/*.json` (contracts §2–§7).
//!
//! Each file names its upstream source; each case names what it checks, and a failure names
//! the case.

// Test helpers outside `#[test]` functions: a malformed vector file should panic loudly.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_core::association::{PodIdentity, SESSION_TAG_KEYS, external_id, session_tags};
use pod_identity_core::eks_auth::{
    AssumeRoleForPodIdentityRequest, AssumeRoleForPodIdentityResponse, EksAuthError,
    EksAuthErrorCode, ErrorClass, Fault, endpoint_for_region,
};
use pod_identity_core::endpoint::{EndpointError, FullUri, HostCheck, host_without_port};
use pod_identity_core::time::{format_rfc3339, from_epoch, parse_epoch_seconds, parse_rfc3339};
use pod_identity_core::token::TokenError;
use pod_identity_core::{
    agent_error::AgentError, arn::Arn, association::AssociationId, association::ClusterName,
    association::Namespace, association::ServiceAccountName,
    container_credentials::ContainerCredentials, container_credentials::ResponseError,
    secret::SecretString, token::ServiceAccountToken,
};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/test-data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A non-empty array of cases: an emptied data file must fail, not pass vacuously.
fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    let cases = v[key]
        .as_array()
        .unwrap_or_else(|| panic!("`{key}` is not an array"));
    assert!(!cases.is_empty(), "`{key}` has no cases");
    cases
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("{v} is not a string"))
}

fn opt_s(v: &Value) -> Option<&str> {
    v.as_str()
}

fn name(case: &Value) -> String {
    case.get("name")
        .map_or_else(|| case.to_string(), |n| n.to_string())
}

fn epoch(v: &Value) -> Option<SystemTime> {
    let pair = v.as_array()?;
    from_epoch(
        pair[0].as_i64().unwrap(),
        u32::try_from(pair[1].as_u64().unwrap()).unwrap(),
    )
}

fn credentials(v: &Value) -> ContainerCredentials {
    ContainerCredentials {
        access_key_id: s(&v["AccessKeyId"]).to_owned(),
        secret_access_key: SecretString::new(s(&v["SecretAccessKey"])),
        token: SecretString::new(s(&v["Token"])),
        account_id: opt_s(&v["AccountId"]).map(str::to_owned),
        expiration: epoch(&v["Expiration"]).unwrap(),
    }
}

#[test]
fn container_credentials() {
    let file = load("container-credentials.json");
    for case in arr(&file, "serialize") {
        let creds = credentials(&case["credentials"]);
        assert_eq!(creds.to_json(), s(&case["json"]), "{}", name(case));
        let mut buf = b"prefix".to_vec();
        creds.write_json(&mut buf);
        assert_eq!(&buf[6..], s(&case["json"]).as_bytes(), "{}", name(case));
    }
    for case in arr(&file, "parse") {
        let result = ContainerCredentials::from_json(s(&case["body"]).as_bytes());
        if let Some(want) = case.get("credentials") {
            assert_eq!(result, Ok(credentials(want)), "{}", name(case));
        } else if let Some(want) = case.get("service_error") {
            assert_eq!(
                result,
                Err(ResponseError::Service {
                    code: s(&want["code"]).to_owned(),
                    message: s(&want["message"]).to_owned()
                }),
                "{}",
                name(case)
            );
        } else {
            let want = s(&case["malformed"]);
            match result {
                Err(ResponseError::Malformed { reason }) => {
                    assert!(reason.contains(want), "{}: {reason}", name(case));
                }
                other => panic!("{}: expected Malformed, got {other:?}", name(case)),
            }
        }
    }
}

fn class(v: &Value) -> ErrorClass {
    match s(v) {
        "recoverable" => ErrorClass::Recoverable,
        "irrecoverable" => ErrorClass::Irrecoverable,
        other => panic!("class {other}"),
    }
}

fn fault(v: &Value) -> Fault {
    match s(v) {
        "client" => Fault::Client,
        "server" => Fault::Server,
        "unknown" => Fault::Unknown,
        other => panic!("fault {other}"),
    }
}

#[test]
fn eks_auth_error_codes() {
    let file = load("eks-auth.json");
    let mut modeled = 0;
    for case in arr(&file, "codes") {
        let code = EksAuthErrorCode::from_raw(s(&case["raw"]));
        let n = name(case);
        assert_eq!(code.as_str(), s(&case["code"]), "{n}");
        assert_eq!(
            u64::from(code.status()),
            case["status"].as_u64().unwrap(),
            "{n}"
        );
        assert_eq!(code.class(), class(&case["class"]), "{n}");
        assert_eq!(code.fault(), fault(&case["fault"]), "{n}");
        let is_modeled = !matches!(code, EksAuthErrorCode::Unknown(_));
        assert_eq!(is_modeled, case["modeled"].as_bool().unwrap(), "{n}");
        if is_modeled && !s(&case["raw"]).contains(['#', ':']) {
            modeled += 1;
        }
    }
    assert_eq!(modeled, 9, "every modeled code has a plain vector");
}

#[test]
fn eks_auth_http_errors_and_agent_bodies() {
    let file = load("eks-auth.json");
    for case in arr(&file, "http_errors") {
        let n = name(case);
        let status = u16::try_from(case["status"].as_u64().unwrap()).unwrap();
        let err = EksAuthError::from_http(
            status,
            opt_s(&case["header"]),
            opt_s(&case["request_id"]),
            s(&case["body"]).as_bytes(),
        );
        assert_eq!(err.code().as_str(), s(&case["code"]), "{n}");
        assert_eq!(err.message(), s(&case["message"]), "{n}");
        assert_eq!(err.class(), class(&case["class"]), "{n}");
        assert_eq!(err.request_id(), opt_s(&case["request_id"]), "{n}");
        let answer = AgentError::EksAuth(err);
        assert_eq!(
            u64::from(answer.status()),
            case["agent_status"].as_u64().unwrap(),
            "{n}"
        );
        assert_eq!(answer.body(), s(&case["agent_body"]), "{n}");
    }
}

#[test]
fn eks_auth_endpoints_requests_responses() {
    let file = load("eks-auth.json");
    for case in arr(&file, "endpoints") {
        let url = endpoint_for_region(s(&case["region"]), case["fips"].as_bool().unwrap());
        assert_eq!(url, s(&case["url"]), "{case}");
    }
    for case in arr(&file, "requests") {
        let cluster: ClusterName = s(&case["cluster"]).parse().unwrap();
        let mut req =
            AssumeRoleForPodIdentityRequest::new(cluster.clone(), s(&case["token"]).into());
        req.eks_node_name = opt_s(&case["eks_node_name"]).map(str::to_owned);
        req.instance_id = opt_s(&case["instance_id"]).map(str::to_owned);
        req.zone = opt_s(&case["zone"]).map(str::to_owned);
        assert_eq!(req.path(), s(&case["path"]));
        assert_eq!(String::from_utf8(req.to_json()).unwrap(), s(&case["body"]));
    }
    for case in arr(&file, "responses") {
        let n = name(case);
        let result = AssumeRoleForPodIdentityResponse::from_json(s(&case["body"]).as_bytes());
        if let Some(code) = case.get("error") {
            let err = result.expect_err(&n);
            assert_eq!(err.code().as_str(), s(code), "{n}");
            assert_eq!(err.class(), ErrorClass::Recoverable, "{n}");
            continue;
        }
        let response = result.unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(response.subject.namespace, s(&case["namespace"]), "{n}");
        assert_eq!(
            response.subject.service_account,
            s(&case["service_account"]),
            "{n}"
        );
        assert_eq!(response.audience, s(&case["audience"]), "{n}");
        assert_eq!(
            response.pod_identity_association.association_id,
            s(&case["association_id"]),
            "{n}"
        );
        assert_eq!(response.account_id(), opt_s(&case["account_id"]), "{n}");
        let served = response.to_container_credentials().to_json();
        assert_eq!(served, s(&case["container_credentials"]), "{n}");
    }
}

fn token_error(kind: &str) -> TokenError {
    let raw = match kind {
        "empty" => return TokenError::Empty,
        "expired" => return TokenError::Expired,
        "not_valid_yet" => return TokenError::NotValidYet,
        "segments" => "a.b".to_owned(),
        "alg_unspecified" => jwt("{}", "{}"),
        "alg_unavailable" => jwt(r#"{"alg":"XX1"}"#, "{}"),
        other => panic!("token error kind {other}"),
    };
    ServiceAccountToken::decode(&raw).unwrap_err()
}

#[test]
fn agent_error_bodies() {
    let file = load("agent-errors.json");
    for case in arr(&file, "cases") {
        let e = &case["error"];
        let error = if let Some(kind) = e.as_str() {
            match kind {
                "upstream" => AgentError::Upstream,
                "too_many_requests" => AgentError::TooManyRequests,
                "not_found" => AgentError::NotFound,
                "headers_too_large" => AgentError::HeadersTooLarge,
                other => panic!("agent error {other}"),
            }
        } else if let Some(h) = e.get("invalid_host") {
            AgentError::InvalidHost {
                host: s(&h["host"]).to_owned(),
                allowed: arr(h, "allowed").iter().map(|a| s(a).to_owned()).collect(),
            }
        } else if let Some(kind) = e.get("token") {
            AgentError::Token(token_error(s(kind)))
        } else if let Some(x) = e.get("eks_auth") {
            let code = EksAuthErrorCode::from_raw(s(&x["code"]));
            let status = u16::try_from(x["status"].as_u64().unwrap()).unwrap();
            AgentError::EksAuth(
                EksAuthError::new(code, status, s(&x["message"]))
                    .with_request_id(s(&x["request_id"])),
            )
        } else if let Some(ms) = e.get("expiring") {
            AgentError::ExpiringCredentials {
                remaining_millis: ms.as_i64().unwrap(),
            }
        } else {
            panic!("unknown case {case}");
        };
        let n = name(case);
        assert_eq!(
            u64::from(error.status()),
            case["status"].as_u64().unwrap(),
            "{n}"
        );
        assert_eq!(error.body(), s(&case["body"]), "{n}");
        assert_eq!(error.content_type(), "text/plain; charset=utf-8", "{n}");
    }
}

#[test]
fn host_policy() {
    let file = load("host-policy.json");
    for case in arr(&file, "full_uris") {
        let uri = s(&case["uri"]);
        let result = FullUri::parse(uri);
        match (s(&case["result"]), result) {
            ("allowed", Ok(u)) => assert_eq!(u.host_check(), HostCheck::Allowed, "{uri}"),
            ("must_resolve", Ok(u)) => assert_eq!(
                u.host_check(),
                HostCheck::MustResolve {
                    host: s(&case["host"]).to_owned(),
                    port: u16::try_from(case["port"].as_u64().unwrap()).unwrap()
                },
                "{uri}"
            ),
            ("disallowed", Err(EndpointError::DisallowedHost { .. }))
            | ("unsupported_scheme", Err(EndpointError::UnsupportedScheme { .. }))
            | ("invalid", Err(EndpointError::InvalidUri { .. } | EndpointError::MissingHost)) => {}
            (want, got) => panic!("{uri}: want {want}, got {got:?}"),
        }
    }
    for case in arr(&file, "relative_uris") {
        let got = FullUri::from_relative(s(&case["path"])).ok();
        assert_eq!(
            got.as_ref().map(FullUri::as_str),
            opt_s(&case["uri"]),
            "{case}"
        );
        if let Some(u) = got {
            assert_eq!(u.host_check(), HostCheck::Allowed);
        }
    }
    for case in arr(&file, "resolved") {
        let uri = FullUri::parse(s(&case["host_uri"])).unwrap();
        // An empty address list is a case of its own (nothing resolved).
        let addresses: Vec<IpAddr> = case["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| s(a).parse().unwrap())
            .collect();
        assert_eq!(
            uri.check_resolved(&addresses).is_ok(),
            case["allowed"].as_bool().unwrap(),
            "{case}"
        );
    }
    for case in arr(&file, "agent_host_header") {
        assert_eq!(
            host_without_port(s(&case["host"])),
            s(&case["stripped"]),
            "{case}"
        );
    }
}

fn jwt(header: &str, claims: &str) -> String {
    format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

fn name_uid(v: &Value) -> Option<(String, String)> {
    let pair = v.as_array()?;
    Some((s(&pair[0]).to_owned(), s(&pair[1]).to_owned()))
}

#[test]
fn tokens() {
    let file = load("tokens.json");
    for case in arr(&file, "cases") {
        let n = name(case);
        let raw = match case.get("raw") {
            Some(raw) => s(raw).to_owned(),
            None => jwt(s(&case["header"]), s(&case["claims"])),
        };
        let result = ServiceAccountToken::decode(&raw);
        if let Some(want) = case.get("error") {
            let err = result.expect_err(&n);
            assert_eq!(err.to_string(), s(want), "{n}");
            assert_eq!(
                AgentError::Token(err.clone()).body(),
                format!("{}\n", s(want)),
                "{n}"
            );
            assert_eq!(err.status(), 400);
            if raw.len() > 4 {
                assert!(
                    !err.to_string().contains(&raw),
                    "{n}: error repeats the token"
                );
            }
            continue;
        }
        let token = result.unwrap_or_else(|e| panic!("{n}: {e}"));
        assert!(
            !format!("{token:?}").contains("c2ln"),
            "{n}: Debug shows the signature"
        );
        let (h, c) = (token.header(), token.claims());
        assert_eq!(h.alg, s(&case["alg"]), "{n}");
        let check_str = |key: &str, got: Option<&str>| {
            if let Some(want) = case.get(key) {
                assert_eq!(got, opt_s(want), "{n}: {key}");
            }
        };
        check_str("kid", h.kid.as_deref());
        check_str("iss", c.iss.as_deref());
        check_str("sub", c.sub.as_deref());
        check_str("jti", c.jti.as_deref());
        let sa = c.service_account();
        check_str("namespace", sa.as_ref().map(|(ns, _)| ns.as_str()));
        check_str("service_account", sa.as_ref().map(|(_, sa)| sa.as_str()));
        for (key, got) in [("exp", c.exp), ("nbf", c.nbf), ("iat", c.iat)] {
            if let Some(want) = case.get(key) {
                assert_eq!(got, want.as_i64(), "{n}: {key}");
            }
        }
        if let Some(want) = case.get("aud") {
            let want: Vec<&str> = want.as_array().unwrap().iter().map(s).collect();
            assert_eq!(c.aud, want, "{n}");
        }
        if let Some(want) = case.get("kubernetes") {
            let k = c.kubernetes.as_ref().expect(&n);
            assert_eq!(k.namespace.as_deref(), opt_s(&want["namespace"]), "{n}");
            let got = |v: &Option<pod_identity_core::token::NameUid>| {
                v.as_ref().map(|x| (x.name.clone(), x.uid.clone()))
            };
            assert_eq!(
                got(&k.service_account),
                name_uid(&want["serviceaccount"]),
                "{n}"
            );
            assert_eq!(got(&k.pod), name_uid(&want["pod"]), "{n}");
            assert_eq!(got(&k.node), name_uid(&want["node"]), "{n}");
        }
        for check in case
            .get("time_checks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let now = from_epoch(check["now"].as_i64().unwrap(), 0).unwrap();
            let got = token.validate_time(now).err().map(|e| e.to_string());
            assert_eq!(
                got.as_deref(),
                opt_s(&check["error"]),
                "{n} at {}",
                check["now"]
            );
        }
    }
}

fn check_names<T: std::str::FromStr>(file: &Value, key: &str) {
    for valid in arr(&file[key], "valid") {
        assert!(
            s(valid).parse::<T>().is_ok(),
            "{key}: {valid} should be valid"
        );
    }
    for invalid in arr(&file[key], "invalid") {
        assert!(
            s(invalid).parse::<T>().is_err(),
            "{key}: {invalid} should be invalid"
        );
    }
}

#[test]
fn names_arns_tags() {
    let file = load("names.json");
    check_names::<ClusterName>(&file, "cluster_name");
    check_names::<Namespace>(&file, "namespace");
    check_names::<ServiceAccountName>(&file, "service_account_name");
    check_names::<AssociationId>(&file, "association_id");
    for case in arr(&file["arn"], "valid") {
        let arn: Arn = s(&case["arn"]).parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(arn.to_string(), s(&case["arn"]));
        assert_eq!(arn.partition(), s(&case["partition"]), "{case}");
        assert_eq!(arn.service(), s(&case["service"]), "{case}");
        assert_eq!(arn.region(), s(&case["region"]), "{case}");
        assert_eq!(arn.account_id(), s(&case["account_id"]), "{case}");
        assert_eq!(arn.resource(), s(&case["resource"]), "{case}");
        assert_eq!(arn.role_name(), opt_s(&case["role_name"]), "{case}");
        assert_eq!(arn.role_path(), opt_s(&case["role_path"]), "{case}");
    }
    for invalid in arr(&file["arn"], "invalid") {
        assert!(
            s(invalid).parse::<Arn>().is_err(),
            "{invalid} should be invalid"
        );
    }

    let tags = &file["session_tags"];
    let keys: Vec<&str> = arr(tags, "keys").iter().map(s).collect();
    assert_eq!(keys, SESSION_TAG_KEYS);
    let p = &tags["pod"];
    let pod = PodIdentity {
        cluster_arn: s(&p["cluster_arn"]).parse().unwrap(),
        cluster_name: s(&p["cluster_name"]).parse().unwrap(),
        namespace: s(&p["namespace"]).parse().unwrap(),
        service_account: s(&p["service_account"]).parse().unwrap(),
        pod_name: s(&p["pod_name"]).to_owned(),
        pod_uid: s(&p["pod_uid"]).to_owned(),
    };
    let want: Vec<(String, String)> = arr(tags, "tags")
        .iter()
        .map(|t| (s(&t[0]).to_owned(), s(&t[1]).to_owned()))
        .collect();
    let got: Vec<(String, String)> = session_tags(&pod)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(got, want);

    for case in arr(&file, "external_id") {
        let id = external_id(
            s(&case["region"]),
            s(&case["account_id"]),
            &s(&case["cluster"]).parse().unwrap(),
            &s(&case["namespace"]).parse().unwrap(),
            &s(&case["service_account"]).parse().unwrap(),
        );
        assert_eq!(id, s(&case["external_id"]));
    }
}

#[test]
fn timestamps() {
    let file = load("time.json");
    for case in arr(&file, "format") {
        let t = epoch(&case["epoch"]).unwrap();
        assert_eq!(format_rfc3339(t), s(&case["text"]), "{case}");
        assert_eq!(parse_rfc3339(s(&case["text"])), Ok(t), "{case}");
    }
    for case in arr(&file, "parse") {
        assert_eq!(
            parse_rfc3339(s(&case["text"])).ok(),
            epoch(&case["epoch"]),
            "{case}"
        );
    }
    for case in arr(&file, "epoch_seconds") {
        assert_eq!(
            parse_epoch_seconds(s(&case["text"])),
            epoch(&case["epoch"]),
            "{case}"
        );
    }
}
