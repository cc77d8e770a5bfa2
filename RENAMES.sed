s/pod_identity_core::container_credentials::AgentError/pod_identity_core::agent_error::AgentError/g
s/pod_identity_core::container_credentials::CONTENT_TYPE_TEXT/pod_identity_core::agent_error::CONTENT_TYPE_TEXT/g
s/pod_identity_core::token::unsigned_token/pod_identity_agent_lib::simulator::unsigned_token/g
s/AssumeRoleForPodIdentityRequest::from_json(/pod_identity_agent_lib::simulator::read_request_body(/g
