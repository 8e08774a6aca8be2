//! A running simulator: the dispatcher plus the REST API bound to a real socket.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::sim::{BuildError, Simulator};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The simulator could not be built (store, HTTP clients).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// `server.listen` could not be bound.
    #[error("cannot listen on {addr}: {source} (change server.listen, or use port 0 for a free port)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error, e.g. address in use.
        source: std::io::Error,
    },
}

/// The simulator serving its REST API. Stop it with [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    sim: Arc<Simulator>,
    http_stop: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Builds the simulator and binds `server.listen` (port 0 picks a free port).
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`start`](Self::start) with another clock (tests of bans and retention).
    pub async fn start_with_clock(config: Config, clock: SharedClock) -> Result<Self, StartError> {
        let want = config.server.listen;
        let sim = Simulator::build_with_clock(config, clock)?;
        let listener = TcpListener::bind(want)
            .await
            .map_err(|source| StartError::Bind { addr: want, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: want, source })?;
        let http_stop = CancellationToken::new();
        let serve =
            axum::serve(listener, api::router(sim.clone())).with_graceful_shutdown(http_stop.clone().cancelled_owned());
        let http = tokio::spawn(async move { serve.await });
        Ok(Self {
            addr,
            sim,
            http_stop,
            http,
        })
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulator behind the API, to submit messages or read state in-process.
    pub fn simulator(&self) -> &Arc<Simulator> {
        &self.sim
    }

    /// Graceful stop (SPEC §9): new messages get 503 while queued callbacks end as `shutdown`
    /// and attempts in flight get their grace period; pending `?wait=true` requests are
    /// answered; then the HTTP server stops.
    pub async fn shutdown(self) {
        self.sim.shutdown().await;
        self.http_stop.cancel();
        match self.http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
            Err(e) => tracing::error!(error = %e, "HTTP server task failed"),
        }
    }
}
