//! The agent (or its blocks) serving on 127.0.0.1 for a test.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::http;
use super::{
    AgentBuilder, BoundServer, ConnectionLimits, CredentialCache, CredentialSource,
    CredentialsRouter, HostAllowList, ServerBuilder, SharedTimeSource,
};

/// A bound server serving until [`shutdown`](Self::shutdown) (or until dropped, which stops it
/// too).
pub struct Serving {
    pub credential_addrs: Vec<SocketAddr>,
    pub probe_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<()>,
}

impl Serving {
    /// Serves `server` on a task of the test's runtime.
    pub fn start(server: BoundServer) -> Self {
        let credential_addrs = server.credential_addrs().to_vec();
        let probe_addr = server.probe_addr();
        let metrics_addr = server.metrics_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Self {
            credential_addrs,
            probe_addr,
            metrics_addr,
            stop: Some(stop),
            serving,
        }
    }

    /// The first credentials address.
    pub fn addr(&self) -> SocketAddr {
        self.credential_addrs[0]
    }

    /// `GET /v1/credentials` with `token`: (status, body).
    pub async fn get(&self, token: &str) -> (u16, String) {
        http::credentials(self.addr(), token).await
    }

    /// Stops accepting and waits for the requests in flight (at most 30 s).
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.serving)
            .await
            .expect("the agent drains within 30 s")
            .unwrap();
    }
}

/// The assembled agent on 127.0.0.1 without probes or metrics listeners.
///
/// Every client here comes from 127.0.0.1, standing for many pods at once: the per-client
/// bounds (tested in `hostile.rs`) are lifted.
pub async fn serve_agent<S: CredentialSource>(builder: AgentBuilder<S>) -> Serving {
    let server = builder
        .bind_hosts(["127.0.0.1"])
        .server(|server| {
            server
                .port(0)
                .probe_addr(None)
                .metrics_addr(None)
                .connection_limits(
                    ConnectionLimits::default().max_connections_per_client(usize::MAX),
                )
        })
        .router(|router| router.client_rate_limit(0, 0))
        .cache(|cache| cache.client_miss_budget(0, 0))
        .bind()
        .await
        .unwrap();
    Serving::start(server)
}

/// The blocks composed by hand around `cache` (with settings the agent builder does not
/// expose), on 127.0.0.1 with the per-client bounds lifted.
pub async fn serve_blocks<S: CredentialSource>(cache: CredentialCache<S>) -> Serving {
    let router = CredentialsRouter::new("demo".parse().unwrap(), cache)
        .allowed_hosts(HostAllowList::new(["127.0.0.1"]))
        .client_rate_limit(0, 0)
        .into_router();
    let server = ServerBuilder::new(router)
        .bind_hosts(["127.0.0.1"])
        .port(0)
        .probe_addr(None)
        .metrics_addr(None)
        .connection_limits(ConnectionLimits::default().max_connections_per_client(usize::MAX))
        .bind()
        .await
        .unwrap();
    Serving::start(server)
}
