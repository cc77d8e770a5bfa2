//! The wire contracts of EKS Pod Identity, as types.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use pod_identity_core::eks_auth::{EksAuthError, ErrorClass};
//! use pod_identity_core::endpoint::{FullUri, HostCheck};
//! use pod_identity_core::{ContainerCredentials, ServiceAccountToken};
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
//! ([`ServiceAccountToken::validate_time`]) and the environment's values
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

pub use agent_error::AgentError;
pub use arn::Arn;
pub use association::{
    Association, AssociationId, ClusterName, NameError, Namespace, PodIdentity, ServiceAccountName,
};
pub use container_credentials::{ContainerCredentials, ResponseError};
pub use eks_auth::{
    AssumeRoleForPodIdentityRequest, AssumeRoleForPodIdentityResponse, EksAuthError,
    EksAuthErrorCode, ErrorClass, Fault,
};
pub use endpoint::{EndpointError, FullUri, HostCheck};
pub use secret::SecretString;
pub use time::TimeParseError;
pub use token::{ServiceAccountToken, TokenClaims, TokenError, TokenHeader};
