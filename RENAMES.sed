s/pod_identity_core::container_credentials::AgentError/pod_identity_core::agent_error::AgentError/g
s/pod_identity_core::container_credentials::CONTENT_TYPE_TEXT/pod_identity_core::agent_error::CONTENT_TYPE_TEXT/g
