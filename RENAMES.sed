s/pod_identity_core::container_credentials::AgentError/pod_identity_core::agent_error::AgentError/g
s/pod_identity_core::container_credentials::CONTENT_TYPE_TEXT/pod_identity_core::agent_error::CONTENT_TYPE_TEXT/g
s/pod_identity_core::token::unsigned_token/pod_identity_agent_lib::simulator::unsigned_token/g
s/AssumeRoleForPodIdentityRequest::from_json(/pod_identity_agent_lib::simulator::read_request_body(/g
# The crate root re-exports nothing: every core item is reached through its module.
s/pod_identity_core::Arn\b/pod_identity_core::arn::Arn/g
s/pod_identity_core::Association\b/pod_identity_core::association::Association/g
s/pod_identity_core::AssociationId\b/pod_identity_core::association::AssociationId/g
s/pod_identity_core::ClusterName\b/pod_identity_core::association::ClusterName/g
s/pod_identity_core::NameError\b/pod_identity_core::association::NameError/g
s/pod_identity_core::Namespace\b/pod_identity_core::association::Namespace/g
s/pod_identity_core::PodIdentity\b/pod_identity_core::association::PodIdentity/g
s/pod_identity_core::ServiceAccountName\b/pod_identity_core::association::ServiceAccountName/g
s/pod_identity_core::AgentError\b/pod_identity_core::agent_error::AgentError/g
s/pod_identity_core::ContainerCredentials\b/pod_identity_core::container_credentials::ContainerCredentials/g
s/pod_identity_core::ResponseError\b/pod_identity_core::container_credentials::ResponseError/g
s/pod_identity_core::AssumeRoleForPodIdentityRequest\b/pod_identity_core::eks_auth::AssumeRoleForPodIdentityRequest/g
s/pod_identity_core::AssumeRoleForPodIdentityResponse\b/pod_identity_core::eks_auth::AssumeRoleForPodIdentityResponse/g
s/pod_identity_core::EksAuthError\b/pod_identity_core::eks_auth::EksAuthError/g
s/pod_identity_core::EksAuthErrorCode\b/pod_identity_core::eks_auth::EksAuthErrorCode/g
s/pod_identity_core::ErrorClass\b/pod_identity_core::eks_auth::ErrorClass/g
s/pod_identity_core::Fault\b/pod_identity_core::eks_auth::Fault/g
s/pod_identity_core::EndpointError\b/pod_identity_core::endpoint::EndpointError/g
s/pod_identity_core::FullUri\b/pod_identity_core::endpoint::FullUri/g
s/pod_identity_core::HostCheck\b/pod_identity_core::endpoint::HostCheck/g
s/pod_identity_core::SecretString\b/pod_identity_core::secret::SecretString/g
s/pod_identity_core::TimeParseError\b/pod_identity_core::time::TimeParseError/g
s/pod_identity_core::ServiceAccountToken\b/pod_identity_core::token::ServiceAccountToken/g
s/pod_identity_core::TokenClaims\b/pod_identity_core::token::TokenClaims/g
s/pod_identity_core::TokenError\b/pod_identity_core::token::TokenError/g
s/pod_identity_core::TokenHeader\b/pod_identity_core::token::TokenHeader/g
/use pod_identity_core::{.*}/ s/\([{ ]\)Arn\b/\1arn::Arn/g
/use pod_identity_core::{.*}/ s/\([{ ]\)Association\b/\1association::Association/g
/use pod_identity_core::{.*}/ s/\([{ ]\)AssociationId\b/\1association::AssociationId/g
/use pod_identity_core::{.*}/ s/\([{ ]\)ClusterName\b/\1association::ClusterName/g
/use pod_identity_core::{.*}/ s/\([{ ]\)NameError\b/\1association::NameError/g
/use pod_identity_core::{.*}/ s/\([{ ]\)Namespace\b/\1association::Namespace/g
/use pod_identity_core::{.*}/ s/\([{ ]\)PodIdentity\b/\1association::PodIdentity/g
/use pod_identity_core::{.*}/ s/\([{ ]\)ServiceAccountName\b/\1association::ServiceAccountName/g
/use pod_identity_core::{.*}/ s/\([{ ]\)AgentError\b/\1agent_error::AgentError/g
/use pod_identity_core::{.*}/ s/\([{ ]\)ContainerCredentials\b/\1container_credentials::ContainerCredentials/g
/use pod_identity_core::{.*}/ s/\([{ ]\)ResponseError\b/\1container_credentials::ResponseError/g
/use pod_identity_core::{.*}/ s/\([{ ]\)AssumeRoleForPodIdentityRequest\b/\1eks_auth::AssumeRoleForPodIdentityRequest/g
/use pod_identity_core::{.*}/ s/\([{ ]\)AssumeRoleForPodIdentityResponse\b/\1eks_auth::AssumeRoleForPodIdentityResponse/g
/use pod_identity_core::{.*}/ s/\([{ ]\)EksAuthError\b/\1eks_auth::EksAuthError/g
/use pod_identity_core::{.*}/ s/\([{ ]\)EksAuthErrorCode\b/\1eks_auth::EksAuthErrorCode/g
/use pod_identity_core::{.*}/ s/\([{ ]\)ErrorClass\b/\1eks_auth::ErrorClass/g
/use pod_identity_core::{.*}/ s/\([{ ]\)Fault\b/\1eks_auth::Fault/g
/use pod_identity_core::{.*}/ s/\([{ ]\)EndpointError\b/\1endpoint::EndpointError/g
/use pod_identity_core::{.*}/ s/\([{ ]\)FullUri\b/\1endpoint::FullUri/g
/use pod_identity_core::{.*}/ s/\([{ ]\)HostCheck\b/\1endpoint::HostCheck/g
/use pod_identity_core::{.*}/ s/\([{ ]\)SecretString\b/\1secret::SecretString/g
/use pod_identity_core::{.*}/ s/\([{ ]\)TimeParseError\b/\1time::TimeParseError/g
/use pod_identity_core::{.*}/ s/\([{ ]\)ServiceAccountToken\b/\1token::ServiceAccountToken/g
/use pod_identity_core::{.*}/ s/\([{ ]\)TokenClaims\b/\1token::TokenClaims/g
/use pod_identity_core::{.*}/ s/\([{ ]\)TokenError\b/\1token::TokenError/g
/use pod_identity_core::{.*}/ s/\([{ ]\)TokenHeader\b/\1token::TokenHeader/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)Arn\b/\1arn::Arn/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)Association\b/\1association::Association/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)AssociationId\b/\1association::AssociationId/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)ClusterName\b/\1association::ClusterName/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)NameError\b/\1association::NameError/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)Namespace\b/\1association::Namespace/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)PodIdentity\b/\1association::PodIdentity/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)ServiceAccountName\b/\1association::ServiceAccountName/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)AgentError\b/\1agent_error::AgentError/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)ContainerCredentials\b/\1container_credentials::ContainerCredentials/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)ResponseError\b/\1container_credentials::ResponseError/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)AssumeRoleForPodIdentityRequest\b/\1eks_auth::AssumeRoleForPodIdentityRequest/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)AssumeRoleForPodIdentityResponse\b/\1eks_auth::AssumeRoleForPodIdentityResponse/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)EksAuthError\b/\1eks_auth::EksAuthError/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)EksAuthErrorCode\b/\1eks_auth::EksAuthErrorCode/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)ErrorClass\b/\1eks_auth::ErrorClass/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)Fault\b/\1eks_auth::Fault/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)EndpointError\b/\1endpoint::EndpointError/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)FullUri\b/\1endpoint::FullUri/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)HostCheck\b/\1endpoint::HostCheck/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)SecretString\b/\1secret::SecretString/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)TimeParseError\b/\1time::TimeParseError/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)ServiceAccountToken\b/\1token::ServiceAccountToken/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)TokenClaims\b/\1token::TokenClaims/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)TokenError\b/\1token::TokenError/g
/use pod_identity_core::{[^}]*$/,/};/ s/\(^[[:space:]]*\|[{ ]\)TokenHeader\b/\1token::TokenHeader/g
