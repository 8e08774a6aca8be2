//! The sink's HTTPS: [`SinkTls`] names the PEM files, [`TlsListener`] hands axum only the
//! connections whose handshake succeeded. With a client CA it is mutual TLS: a connection whose
//! handshake fails is dropped (and said so when printing) without stopping the sink.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::task::AbortOnDropHandle;

/// The sink's HTTPS files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkTls {
    /// The sink's certificate chain, its own certificate first.
    pub cert: PathBuf,
    /// The private key of that certificate.
    pub key: PathBuf,
    /// Mutual TLS: require a client certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

impl SinkTls {
    /// Reads and checks the files into the server's TLS settings.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, crate::tls::PemError> {
        crate::tls::server_config(&self.cert, &self.key, self.client_ca.as_deref()).map(Arc::new)
    }
}

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Completed handshakes waiting for the HTTP server to take them.
const READY_BACKLOG: usize = 128;

/// A TCP listener that hands axum only connections whose TLS handshake succeeded. Each
/// handshake runs in its own task, so a slow or failing client holds up no one else. When axum
/// drops the listener (at stop), the accepting task and the handshakes still running end too.
pub(super) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accepting: AbortOnDropHandle<()>,
}

impl TlsListener {
    pub(super) fn new(tcp: TcpListener, local: SocketAddr, config: Arc<rustls::ServerConfig>, print: bool) -> Self {
        let (tx, ready) = mpsc::channel(READY_BACKLOG);
        let acceptor = TlsAcceptor::from(config);
        let accepting = tokio::spawn(async move {
            // Dropped with this task: aborts the handshakes in flight.
            let mut handshakes = JoinSet::new();
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = tcp.accept() => match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of file descriptors and the like: wait rather than spin.
                            tracing::warn!(error = %e, "sink: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
                };
                handshakes.spawn(handshake(acceptor.clone(), stream, peer, tx.clone(), print));
            }
        });
        Self {
            ready,
            local,
            _accepting: AbortOnDropHandle::new(accepting),
        }
    }
}

/// One TLS handshake: the connection goes to the HTTP server, or is dropped with a word why.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    print: bool,
) {
    let why = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let _ = ready.send((tls, peer)).await;
            return;
        }
        Ok(Err(e)) => handshake_error_text(&e),
        Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
    };
    if print {
        println!("<- TLS handshake from {peer} failed: {why}");
    }
    tracing::debug!(%peer, error = %why, "sink: TLS handshake failed");
}

/// A failed handshake from the sink's side, saying whose certificate was the problem.
fn handshake_error_text(e: &std::io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "the client sent no certificate (mutual TLS requires one)".into(),
        rustls::Error::InvalidCertificate(c) => format!("the client's certificate was rejected: {c}"),
        rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::CertificateExpired),
        ) => format!("the client rejected the sink's certificate: {alert:?}"),
        rustls::Error::AlertReceived(alert) => format!("the client ended the handshake: {alert:?}"),
        other => other.to_string(),
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task holds a sender until it is aborted with this listener.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
