//! The agent assembled from agent-lib, served on loopback, and one request to it as a pod's
//! SDK makes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pod_identity_agent_lib::kubernetes::jwks::RotationVerifier;
use pod_identity_agent_lib::{AgentBuilder, source::eks_auth::EksAuthSource};
use pod_identity_core::endpoint::CREDENTIALS_PATH;
use pod_identity_core::{association::ClusterName, secret::SecretString};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{BoxError, HOST};

/// The agent, served in the background.
pub(crate) struct Agent {
    pub(crate) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Agent {
    pub(crate) async fn start(
        cluster: ClusterName,
        source: EksAuthSource,
        verifier: RotationVerifier,
    ) -> Result<Self, BoxError> {
        let server = AgentBuilder::new(cluster, source)
            .rotation_validator(Arc::new(verifier))
            .bind_hosts([HOST])
            .server(move |server| {
                server
                    .port(0)
                    .probe_addr(None)
                    .metrics_addr(None)
                    .drain_timeout(Duration::from_secs(1))
            })
            .bind()
            .await?;
        let addr = *server
            .credential_addrs()
            .first()
            .ok_or("the agent bound no address")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, stop, task })
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// One credential request to the agent with `token`, as a pod's SDK makes it: the status and
/// the `AccessKeyId` answered.
pub(crate) async fn credentials_request(
    agent: SocketAddr,
    token: &SecretString,
) -> Result<(u16, String), BoxError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(agent).await?;
    let request = format!(
        "GET {CREDENTIALS_PATH} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {}\r\n\
         Connection: close\r\n\r\n",
        token.expose_secret()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or("the agent's answer has no status")?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let access_key_id = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json["AccessKeyId"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok((status, access_key_id))
}
