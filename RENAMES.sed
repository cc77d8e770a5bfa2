# Public paths of pod-identity-agent-lib, each item under one path. GNU sed, extended regexps:
#   sed -E -i -f RENAMES.sed $(git ls-files "*.rs")
# 1. Items the crate root re-exported are only under their module: qualified paths, then the
#    names inside `use pod_identity_agent_lib::{...}` groups (one-line groups, then multi-line
#    ones; doc-test lines included).
# 2. The self-managed source: its `jwks` and `associations` submodules are private; their items
#    are under `self_managed::` only, and the JWK constants under `jwk::` only.
s/\bpod_identity_agent_lib::(CredentialCacheBuilder|CredentialCache)\b/pod_identity_agent_lib::cache::\1/g
s/\bpod_identity_agent_lib::(CredentialsRouter)\b/pod_identity_agent_lib::handler::\1/g
s/\bpod_identity_agent_lib::(Metrics)\b/pod_identity_agent_lib::metrics::\1/g
s/\bpod_identity_agent_lib::(Probe)\b/pod_identity_agent_lib::probe::\1/g
s/\bpod_identity_agent_lib::(BindError|BoundServer|ServerBuilder)\b/pod_identity_agent_lib::server::\1/g
s/\bpod_identity_agent_lib::(EksAuthSourceBuilder|EksAuthSource)\b/pod_identity_agent_lib::source::eks_auth::\1/g
s/\bpod_identity_agent_lib::(CredentialRequest|CredentialSource|IssuedCredentials|SharedCredentialSource|SourceError)\b/pod_identity_agent_lib::source::\1/g
s/\bpod_identity_agent_lib::(SharedWallClock|WallClock)\b/pod_identity_agent_lib::time::\1/g
s/\bpod_identity_agent_lib::(HostAllowList|RequestValidator)\b/pod_identity_agent_lib::validation::\1/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{.*\};/ s/([{ ])(CredentialCacheBuilder|CredentialCache)([,}])/\1cache::\2\3/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{.*\};/ s/([{ ])(CredentialsRouter)([,}])/\1handler::\2\3/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{.*\};/ s/([{ ])(Metrics)([,}])/\1metrics::\2\3/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{.*\};/ s/([{ ])(Probe)([,}])/\1probe::\2\3/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{.*\};/ s/([{ ])(BindError|BoundServer|ServerBuilder)([,}])/\1server::\2\3/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{.*\};/ s/([{ ])(EksAuthSourceBuilder|EksAuthSource)([,}])/\1source::eks_auth::\2\3/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{.*\};/ s/([{ ])(CredentialRequest|CredentialSource|IssuedCredentials|SharedCredentialSource|SourceError)([,}])/\1source::\2\3/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{.*\};/ s/([{ ])(SharedWallClock|WallClock)([,}])/\1time::\2\3/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{.*\};/ s/([{ ])(HostAllowList|RequestValidator)([,}])/\1validation::\2\3/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{$/,/^ *(\/\/[!\/] (# )?)?\};/ s/(^ *(\/\/[!\/] (# )?)? *| )(CredentialCacheBuilder|CredentialCache)(,|$)/\1cache::\4\5/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{$/,/^ *(\/\/[!\/] (# )?)?\};/ s/(^ *(\/\/[!\/] (# )?)? *| )(CredentialsRouter)(,|$)/\1handler::\4\5/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{$/,/^ *(\/\/[!\/] (# )?)?\};/ s/(^ *(\/\/[!\/] (# )?)? *| )(Metrics)(,|$)/\1metrics::\4\5/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{$/,/^ *(\/\/[!\/] (# )?)?\};/ s/(^ *(\/\/[!\/] (# )?)? *| )(Probe)(,|$)/\1probe::\4\5/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{$/,/^ *(\/\/[!\/] (# )?)?\};/ s/(^ *(\/\/[!\/] (# )?)? *| )(BindError|BoundServer|ServerBuilder)(,|$)/\1server::\4\5/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{$/,/^ *(\/\/[!\/] (# )?)?\};/ s/(^ *(\/\/[!\/] (# )?)? *| )(EksAuthSourceBuilder|EksAuthSource)(,|$)/\1source::eks_auth::\4\5/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{$/,/^ *(\/\/[!\/] (# )?)?\};/ s/(^ *(\/\/[!\/] (# )?)? *| )(CredentialRequest|CredentialSource|IssuedCredentials|SharedCredentialSource|SourceError)(,|$)/\1source::\4\5/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{$/,/^ *(\/\/[!\/] (# )?)?\};/ s/(^ *(\/\/[!\/] (# )?)? *| )(SharedWallClock|WallClock)(,|$)/\1time::\4\5/g
/^ *(\/\/[!\/] (# )?)?(pub )?use pod_identity_agent_lib::\{$/,/^ *(\/\/[!\/] (# )?)?\};/ s/(^ *(\/\/[!\/] (# )?)? *| )(HostAllowList|RequestValidator)(,|$)/\1validation::\4\5/g
s/\bself_managed::jwks::(SUPPORTED_ALGORITHMS|MAX_REPORTED_HEADER_CHARS)\b/jwk::\1/g
s/\bself_managed::(jwks|associations)::/self_managed::/g
