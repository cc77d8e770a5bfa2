s/pod_identity_agent_lib::server::DEFAULT_MAX_HEADER_BYTES/pod_identity_agent_lib::handler::DEFAULT_MAX_HEADER_BYTES/g
s/\bserver::DEFAULT_MAX_HEADER_BYTES/handler::DEFAULT_MAX_HEADER_BYTES/g
s/pod_identity_agent_lib::cache::MIN_REMAINING/pod_identity_core::container_credentials::MIN_REMAINING/g
s/crate::cache::MIN_REMAINING/pod_identity_core::container_credentials::MIN_REMAINING/g
s/crate::ErrorChain/crate::error::ErrorChain/g
