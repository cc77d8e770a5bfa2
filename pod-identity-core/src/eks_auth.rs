//! The EKS Auth `AssumeRoleForPodIdentity` operation: request, response and errors.
//!
//! Contract (EKS Auth API model 2023-11-26, restJson1, SigV4 signing name `eks-auth`):
//! - `POST /clusters/{clusterName}/assume-role-for-pod-identity`, `Content-Type: application/json`,
//!   body `{"token": ..., "eksNodeName"?, "instanceId"?, "zone"?}`.
//! - Host `eks-auth.{region}.api.aws`, FIPS `eks-auth-fips.{region}.api.aws`, China
//!   `eks-auth.{region}.api.amazonwebservices.com.cn` ([`endpoint_for_region`]).
//! - The response carries `subject`, `audience`, `podIdentityAssociation`, `assumedRoleUser`
//!   and `credentials`, whose `expiration` is JSON epoch seconds, possibly fractional (read
//!   exactly, to the nanosecond). The credentials are required; the other members are read as
//!   empty when absent, as the Rust SDK's error correction does.
//! - Errors: the code comes from the `X-Amzn-Errortype` header, else the body's `__type`, else
//!   its `code`, with any `namespace#` prefix and `:…` suffix stripped; the message from
//!   `message` (or `Message`); with neither, code and message are `UnknownError` (smithy-go).
//!   Nine modeled codes each have a status and a cache class:
//!
//! | code | HTTP | class | fault |
//! |---|---|---|---|
//! | AccessDeniedException | 400 | irrecoverable | client |
//! | ExpiredTokenException | 400 | irrecoverable | client |
//! | InvalidTokenException | 400 | irrecoverable | client |
//! | InvalidParameterException | 400 | recoverable | client |
//! | InvalidRequestException | 400 | recoverable | client |
//! | ResourceNotFoundException | 404 | irrecoverable | client |
//! | ThrottlingException | 429 | recoverable | client |
//! | InternalServerException | 500 | recoverable | server |
//! | ServiceUnavailableException | 503 | recoverable | server |
//! | any other | its status | recoverable | unknown |
//!
//! - The reference agent answers an EKS Auth error with the upstream status and the body
//!   `[<request-id>]: (<Code>): <message>, fault: <client|server|unknown>` ([`EksAuthError::agent_body`]).

mod error;
mod request;
mod response;

use crate::arn::{dns_suffix, partition_for_region};

pub use error::{EksAuthError, EksAuthErrorCode, ErrorClass, Fault, sanitize_error_code};
pub use request::AssumeRoleForPodIdentityRequest;
pub use response::{
    AssumeRoleForPodIdentityResponse, AssumedRoleUser, EksCredentials, PodIdentityAssociation,
    Subject,
};

/// SigV4 signing name.
pub const SIGNING_NAME: &str = "eks-auth";
/// API version.
pub const API_VERSION: &str = "2023-11-26";
/// The header that carries the error code.
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";
/// The header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";
/// Credential lifetime EKS Auth grants.
pub const CREDENTIAL_LIFETIME_SECS: u64 = 6 * 3600;
/// Credential lifetime when a target role is chained.
pub const CHAINED_CREDENTIAL_LIFETIME_SECS: u64 = 59 * 60;

/// The EKS Auth endpoint of a region, following the SDK's endpoint rules:
/// `https://eks-auth[-fips].{region}.{dual-stack DNS suffix of the region's partition}`.
///
/// ```
/// use pod_identity_core::eks_auth::endpoint_for_region;
///
/// assert_eq!(endpoint_for_region("us-west-2", false), "https://eks-auth.us-west-2.api.aws");
/// assert_eq!(endpoint_for_region("us-east-1", true), "https://eks-auth-fips.us-east-1.api.aws");
/// assert_eq!(
///     endpoint_for_region("cn-north-1", false),
///     "https://eks-auth.cn-north-1.api.amazonwebservices.com.cn"
/// );
/// ```
pub fn endpoint_for_region(region: &str, fips: bool) -> String {
    let host = if fips { "eks-auth-fips" } else { "eks-auth" };
    let suffix = dns_suffix(partition_for_region(region));
    format!("https://{host}.{region}.{suffix}")
}
