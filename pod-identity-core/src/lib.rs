//! The wire contracts of EKS Pod Identity, as types.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use pod_identity_core::eks_auth::{EksAuthError, ErrorClass};
//! use pod_identity_core::endpoint::{FullUri, HostCheck};
//! use pod_identity_core::{container_credentials::ContainerCredentials, token::ServiceAccountToken};
//!
//! // What the node agent serves to the SDK, byte for byte.
//! let creds = ContainerCredentials {
//!     access_key_id: "ASIAEXAMPLE".into(),
//!     secret_access_key: "wJalrXUtnFEMI".into(),
//!     token: "IQoJb3JpZ2lu".into(),
//!     account_id: Some("111122223333".into()),
//!     expiration: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
//! };
//! assert!(creds.to_json().ends_with(r#""Expiration":"2023-11-14T22:13:20Z"}"#));
//! assert!(!format!("{creds:?}").contains("wJalrXUtnFEMI"));
//!
//! // Which full URIs the SDK may call over plain http.
//! let uri = FullUri::parse("http://169.254.170.23/v1/credentials").unwrap();
//! assert_eq!(uri.host_check(), HostCheck::Allowed);
//! assert!(FullUri::parse("http://169.254.169.254/latest").is_err());
//!
//! // EKS Auth errors: code, status, cache class, and the agent's error body.
//! let err = EksAuthError::from_http(404, Some("ResourceNotFoundException"), Some("req-1"),
//!     br#"{"message":"no association"}"#);
//! assert_eq!(err.class(), ErrorClass::Irrecoverable);
//! assert_eq!(err.agent_body(), "[req-1]: (ResourceNotFoundException): no association, fault: client");
//!
//! // Tokens are decoded (not verified) with the reference agent's checks and messages.
//! let err = ServiceAccountToken::decode("not-a-jwt").unwrap_err();
//! assert_eq!(err.to_string(),
//!     "Service account token cannot be parsed: token is malformed: token contains an invalid number of segments");
//! ```
//!
//! The crate is pure: no I/O, no clock, no environment, no async runtime. Callers pass the time
//! ([`token::ServiceAccountToken::validate_time`]) and the environment's values
//! ([`endpoint::FullUri::parse`]). Every parser takes untrusted input and never panics.
//!
//! | module | contract |
//! |---|---|
//! | [`container_credentials`] | the agent → SDK JSON |
//! | [`agent_error`] | the agent's plain-text error answers |
//! | [`eks_auth`] | `AssumeRoleForPodIdentity` request, response, error codes |
//! | [`association`] | associations, Kubernetes/EKS names, session tags, external id |
//! | [`arn`] | partition-aware ARNs |
//! | [`token`] | projected service-account JWTs, decoded without verification |
//! | [`endpoint`] | env var names, addresses, ports, the allowed-host policy |
//! | [`secret`] | the redacting, zeroizing string for tokens and keys |
//! | [`time`] | RFC 3339 and epoch-seconds on the wire |
//!
//! Every public item has one path, in its module; the crate root re-exports nothing.
//!
//! | module | types | functions and constants |
//! |---|---|---|
//! | [`container_credentials`] | `ContainerCredentials`, `ResponseError` | `CONTENT_TYPE_JSON` |
//! | [`agent_error`] | `AgentError` | `CONTENT_TYPE_TEXT` |
//! | [`eks_auth`] | `AssumeRoleForPodIdentityRequest`, `AssumeRoleForPodIdentityResponse` (`Subject`, `PodIdentityAssociation`, `AssumedRoleUser`, `EksCredentials`), `EksAuthError`, `EksAuthErrorCode`, `ErrorClass`, `Fault` | `endpoint_for_region`, `sanitize_error_code`, `SIGNING_NAME`, `API_VERSION`, `ERROR_TYPE_HEADER`, `REQUEST_ID_HEADER`, `CREDENTIAL_LIFETIME_SECS`, `CHAINED_CREDENTIAL_LIFETIME_SECS` |
//! | [`association`] | `Association`, `AssociationId`, `ClusterName`, `Namespace`, `ServiceAccountName`, `PodIdentity`, `NameError` | `session_tags`, `external_id`, `SESSION_TAG_KEYS`, `TAG_*`, `MAX_ASSOCIATIONS_PER_CLUSTER`, `MAX_ASSOCIATION_TAGS` |
//! | [`arn`] | `Arn`, `ArnError` | `partition_for_region`, `dns_suffix`, `MAX_ARN_LEN` |
//! | [`token`] | `ServiceAccountToken`, `TokenHeader`, `TokenClaims`, `KubernetesClaims`, `NameUid`, `TokenError` | `MAX_TOKEN_LEN`, `KNOWN_ALGORITHMS`, `SUBJECT_PREFIX` |
//! | [`endpoint`] | `FullUri`, `HostCheck`, `EndpointError` | `is_allowed_ip`, `host_without_port`, the `ENV_*` names, addresses, ports and paths |
//! | [`secret`] | `SecretString` | `REDACTED` |
//! | [`time`] | `TimeParseError` | `format_rfc3339`, `parse_rfc3339`, `parse_epoch_seconds`, `format_epoch_seconds`, `from_epoch_seconds_f64`, `to_epoch`, `from_epoch`, `MIN_RFC3339_EPOCH_SECS`, `MAX_RFC3339_EPOCH_SECS` |
//!
//! Modules depend on each other one way (`tests/module_deps.rs` checks it): `time`, `secret`,
//! `arn` and `endpoint` depend on no other module; `association` on `arn` and `time`; `token` on
//! `association`; `container_credentials` on `secret` and `time`; `eks_auth` on
//! `container_credentials`; `agent_error` on `eks_auth` and `token`.
//!
//! This crate has no cargo features.

pub mod agent_error;
pub mod arn;
pub mod association;
pub mod container_credentials;
pub mod eks_auth;
pub mod endpoint;
mod go_json;
pub mod secret;
pub mod time;
pub mod token;
