//! Serving a simulator on a socket.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::state::Inner;

/// A running simulator server. Dropping it shuts the server down in the background;
/// [`shutdown`](SimulatorServer::shutdown) does so and waits.
#[derive(Debug)]
pub struct SimulatorServer {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl SimulatorServer {
    pub(crate) async fn start(
        addr: SocketAddr,
        router: axum::Router,
        inner: Arc<Inner>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // A dropped sender means the handle is gone: shut down as well.
                    let _ = signal.await;
                    // Hanging requests would keep graceful shutdown waiting forever.
                    inner.release_hung();
                })
                .await
        });
        Ok(Self {
            local_addr,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<address>`: what to give an SDK client as `endpoint_url` (IPv6 in brackets).
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting connections, releases hanging requests, lets in-flight ones finish and
    /// waits for the server to stop.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}
