//! [`Sim`]: the simulator embedded in a test, in a few lines.
//!
//! A `Sim` is the real [`Server`] (REST API and dispatcher) on `127.0.0.1:0` with a fresh temp
//! data dir, with the server's typed access to what a test asserts on: each callback's outcome,
//! the exception store, replays and rule states. Pair it with a recording [`Sink`](crate::Sink)
//! as the receiver.

use std::ops::Deref;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::server::{Server, SimError};

/// The simulator running inside a test: a [`Server`] on `127.0.0.1:0` that owns a temp data
/// dir. Every [`Server`] method works on it ([`send`](Server::send),
/// [`buckets`](Server::buckets), [`replay`](Server::replay), [`rules`](Server::rules),
/// [`base_url`](Server::base_url), [`shutdown`](Server::shutdown)…). Dropping it stops the
/// simulator in the background and then removes the dir.
///
/// ```
/// use std::time::Duration;
/// use callback_sim::{AppBuilder, Config, FinalOutcome, Message, Reply, RuleBuilder, Signature, Sim, Sink};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let sink = Sink::recording(Some("secret")).await.unwrap();
/// let config = Config::builder()
///     .app(AppBuilder::new("app1", "token").rule(RuleBuilder::post_send("sync", &sink.url("/cb"), "secret")))
///     .build()
///     .unwrap();
/// let sim = Sim::start(config).await.unwrap();
///
/// // Delivered, signature checked by the sink.
/// let sent = sim.send("app1", Message::text("alice", "bob", "hello")).await.unwrap();
/// assert_eq!(sent.callbacks[0].outcome, FinalOutcome::Delivered);
/// let got = sink.wait_for(1, Duration::from_secs(5)).await.unwrap();
/// assert_eq!(got[0].signature, Signature::Valid);
/// assert_eq!(got[0].json()["payload"]["bodies"][0]["msg"], "hello");
///
/// // The receiver fails: the callback is kept in the exception store.
/// sink.reply(Reply::status(503));
/// let sent = sim.send("app1", Message::text("alice", "bob", "again")).await.unwrap();
/// assert_eq!(sent.callbacks[0].outcome, FinalOutcome::Stored);
/// assert_eq!(sim.buckets("app1").unwrap()[0].size, 1);
/// sim.shutdown().await;
/// # });
/// ```
#[derive(Debug)]
pub struct Sim {
    server: Option<Server>,
    dir: Option<tempfile::TempDir>,
}

impl Sim {
    /// Starts `config` on `127.0.0.1:0` with a fresh temp data dir (whatever the config says
    /// for `server.listen` and `server.data_dir`).
    pub async fn start(config: Config) -> Result<Self, SimError> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`start`](Self::start) with another clock, e.g. a [`ManualClock`](crate::ManualClock)
    /// to test bans and retention without waiting.
    pub async fn start_with_clock(mut config: Config, clock: Arc<dyn Clock>) -> Result<Self, SimError> {
        let dir = tempfile::tempdir().map_err(SimError::TempDir)?;
        config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.data_dir = dir.path().join("data");
        let server = Server::start_with_clock(config, clock).await?;
        Ok(Self {
            server: Some(server),
            dir: Some(dir),
        })
    }

    /// Parses TOML text (as `config.toml` would be, relative paths from the current dir) and
    /// starts it like [`Sim::start`].
    ///
    /// ```
    /// use callback_sim::{FinalOutcome, Message, Sim, Sink};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let sink = Sink::recording(None).await.unwrap();
    /// let sim = Sim::from_toml(&format!(
    ///     r#"
    ///     [[apps]]
    ///     id = "app1"
    ///     token = "token"
    ///       [[apps.rules]]
    ///       name = "sync"
    ///       url = "{}"
    ///       secret = "secret"
    ///     "#,
    ///     sink.url("/cb")
    /// ))
    /// .await
    /// .unwrap();
    /// let sent = sim.send("app1", Message::text("alice", "bob", "hello")).await.unwrap();
    /// assert_eq!(sent.callbacks[0].outcome, FinalOutcome::Delivered);
    /// # });
    /// ```
    pub async fn from_toml(text: &str) -> Result<Self, SimError> {
        let config = Config::parse(text, "<toml text>", std::path::Path::new("."))?;
        Self::start(config).await
    }
}

impl Deref for Sim {
    type Target = Server;

    fn deref(&self) -> &Server {
        self.server.as_ref().expect("a Sim has its server until dropped")
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let (server, dir) = (self.server.take(), self.dir.take());
        // The dir goes once the store in it is closed.
        if let (Some(server), Ok(rt)) = (server, tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                server.shutdown().await;
                drop(dir);
            });
        }
    }
}
