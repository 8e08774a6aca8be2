//! [`Sim`]: the simulator embedded in a test, in a few lines.
//!
//! A `Sim` is the real server (REST API and dispatcher) on `127.0.0.1:0` with a fresh temp data
//! dir, plus typed access to what a test asserts on: each callback's outcome, the exception
//! store, replays and rule states. Pair it with a recording [`Sink`](crate::sink::Sink) as the
//! receiver.
//!
//! ```
//! use std::time::Duration;
//! use callback_sim::config::{AppBuilder, Config, RuleBuilder};
//! use callback_sim::domain::FinalOutcome;
//! use callback_sim::harness::Sim;
//! use callback_sim::message::Message;
//! use callback_sim::sink::{Reply, Sink};
//!
//! # tokio_test_run(async {
//! let sink = Sink::recording(Some("secret")).await.unwrap();
//! let config = Config::builder()
//!     .app(AppBuilder::new("app1", "token").rule(RuleBuilder::post_send("sync", &sink.url("/cb"), "secret")))
//!     .build()
//!     .unwrap();
//! let sim = Sim::start(config).await.unwrap();
//!
//! // Delivered, signature checked by the sink.
//! let sent = sim.send("app1", Message::text("alice", "bob", "hello")).await.unwrap();
//! assert_eq!(sent.callbacks[0].outcome, FinalOutcome::Delivered);
//! let got = sink.wait_for(1, Duration::from_secs(5)).await.unwrap();
//! assert_eq!(got[0].json()["payload"]["bodies"][0]["msg"], "hello");
//!
//! // The receiver fails: the callback is kept in the exception store.
//! sink.reply(Reply::status(503));
//! let sent = sim.send("app1", Message::text("alice", "bob", "again")).await.unwrap();
//! assert_eq!(sent.callbacks[0].outcome, FinalOutcome::Stored);
//! assert_eq!(sim.buckets("app1").unwrap()[0].size, 1);
//! sim.shutdown().await;
//! # });
//! # fn tokio_test_run(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Runtime::new().unwrap().block_on(f)
//! # }
//! ```

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::dispatch::{CallbackReport, EnqueueError};
use crate::domain::{CallbackUrl, DateKey};
use crate::event::Event;
use crate::message::Message;
use crate::replay::{ReplayError, ReplayOutcome, replay};
use crate::runtime::{AppRuntime, StatsSnapshot};
use crate::server::{Server, StartError};
use crate::sim::Simulator;
use crate::store::{Bucket, BucketInfo, StoreError, StoredCallback};

/// Why a [`Sim`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The TOML given to [`Sim::from_toml`] is not a valid config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server could not start (store, HTTP clients, bind).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The temporary data dir could not be created.
    #[error("cannot create a temp data dir: {0}")]
    TempDir(std::io::Error),
    /// The app id names no app of the config.
    #[error("no app {0:?} in the config")]
    UnknownApp(String),
    /// The message could not be queued (queue full, or the simulator is stopping).
    #[error(transparent)]
    Queue(#[from] EnqueueError),
    /// A replay did not run (no such bucket, or one already running).
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The exception store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An argument is invalid, e.g. a replay target URL that is not `http(s)://`.
    #[error("{0}")]
    Invalid(String),
}

/// What a sent message (or event) became, every callback with its final outcome.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The message id (empty for events).
    pub msg_id: String,
    /// The pre-send verdict.
    pub accepted: bool,
    /// What the sender is told when blocked (with `notify_sender`).
    pub code: Option<String>,
    /// Pre-send callbacks first, then post-send ones: the `?wait=true` list.
    pub callbacks: Vec<CallbackReport>,
}

/// A rule's live state, as `GET …/callbacks/rules` shows it.
#[derive(Debug, Clone)]
pub struct RuleState {
    /// The rule's name.
    pub name: String,
    /// `active`, `banned` or `disabled`.
    pub state: &'static str,
    /// Unix time in milliseconds at which the current ban ends; `None` when not banned.
    pub banned_until_ms: Option<u64>,
    /// The level of the latest ban (0 if never banned), as `ban_level`.
    pub ban_level: u32,
    /// Failed attempts within the last `ban.window_secs` (0 while banned).
    pub failures_in_window: u32,
    /// Attempts per outcome and callbacks per final outcome.
    pub stats: StatsSnapshot,
}

/// The simulator running inside a test. Stop it with [`Sim::shutdown`]; dropping it stops it
/// too (in the background) and removes its temp data dir.
#[derive(Debug)]
pub struct Sim {
    server: Option<Server>,
    sim: Arc<Simulator>,
    _dir: tempfile::TempDir,
}

impl Sim {
    /// Starts `config` on `127.0.0.1:0` with a fresh temp data dir (whatever the config says
    /// for `server.listen` and `server.data_dir`).
    pub async fn start(mut config: Config) -> Result<Self, SimError> {
        let dir = tempfile::tempdir().map_err(SimError::TempDir)?;
        config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.data_dir = dir.path().join("data");
        let server = Server::start(config).await?;
        let sim = server.simulator().clone();
        Ok(Self {
            server: Some(server),
            sim,
            _dir: dir,
        })
    }

    /// Parses TOML text (as `config.toml` would be) and starts it like [`Sim::start`].
    pub async fn from_toml(text: &str) -> Result<Self, SimError> {
        let config = Config::parse(text, "<toml text>", std::path::Path::new("."))?;
        Self::start(config).await
    }

    /// `http://127.0.0.1:PORT`, for driving the REST API.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The address of the REST API.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().map(Server::addr).expect("running until shut down")
    }

    /// The simulator itself, for what this API does not cover.
    pub fn simulator(&self) -> &Arc<Simulator> {
        &self.sim
    }

    fn app(&self, app: &str) -> Result<&Arc<AppRuntime>, SimError> {
        self.sim
            .apps
            .get(app)
            .ok_or_else(|| SimError::UnknownApp(app.to_string()))
    }

    /// Sends a message as app `app` and waits until every callback has its final outcome.
    pub async fn send(&self, app: &str, msg: Message) -> Result<Sent, SimError> {
        let app = self.app(app)?;
        let mut s = self.sim.submit(app, msg, true).await?;
        let (msg_id, accepted, code) = (std::mem::take(&mut s.msg_id), s.accepted, s.code.take());
        Ok(Sent {
            msg_id,
            accepted,
            code,
            callbacks: s.wait().await,
        })
    }

    /// Sends a non-message event and waits for its callbacks' final outcomes.
    pub async fn send_event(&self, app: &str, event: Event) -> Result<Sent, SimError> {
        let app = self.app(app)?;
        let s = self.sim.submit_event(app, event, true).await?;
        Ok(Sent {
            msg_id: String::new(),
            accepted: true,
            code: None,
            callbacks: s.wait().await,
        })
    }

    /// The app's non-empty store buckets, oldest first (`storage/info`).
    pub fn buckets(&self, app: &str) -> Result<Vec<BucketInfo>, SimError> {
        let app = self.app(app)?;
        Ok(self.sim.store().buckets(&app.config.id))
    }

    /// What bucket (`date`, `retry`) holds (`storage/items`), at most `limit` items.
    pub fn items(&self, app: &str, date: DateKey, retry: u32, limit: usize) -> Result<Vec<StoredCallback>, SimError> {
        let app = self.app(app)?;
        let bucket = Bucket {
            app: app.config.id.clone(),
            date,
            retry,
        };
        Ok(self
            .sim
            .store()
            .scan(&bucket)
            .take(limit)
            .map(|r| r.map(|(_, item)| item))
            .collect::<Result<_, _>>()?)
    }

    /// Replays bucket (`date`, `retry`) to `target` or the rules' own URLs (`storage/retry`).
    pub async fn replay(
        &self,
        app: &str,
        date: DateKey,
        retry: u32,
        target: Option<&str>,
    ) -> Result<ReplayOutcome, SimError> {
        let app = self.app(app)?.clone();
        let target = target
            .map(CallbackUrl::parse)
            .transpose()
            .map_err(|e| SimError::Invalid(format!("target URL {e}")))?;
        Ok(replay(self.sim.clone(), app, date, retry, target).await?)
    }

    /// Each rule of the app with its live state (`callbacks/rules`).
    pub fn rules(&self, app: &str) -> Result<Vec<RuleState>, SimError> {
        let app = self.app(app)?;
        let now = self.sim.clock.now_ms();
        Ok(app
            .rules
            .iter()
            .map(|r| {
                let ban = r.ban_view(now);
                RuleState {
                    name: r.config.name.to_string(),
                    state: match (r.config.enabled, ban.banned_until_ms) {
                        (false, _) => "disabled",
                        (true, Some(_)) => "banned",
                        (true, None) => "active",
                    },
                    banned_until_ms: ban.banned_until_ms,
                    ban_level: ban.level,
                    failures_in_window: ban.failures_in_window,
                    stats: r.stats.snapshot(),
                }
            })
            .collect())
    }

    /// Graceful stop: queued callbacks are stored as `shutdown`, attempts in flight get their
    /// grace period, the store is flushed.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(server) = self.server.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(server.shutdown());
        }
    }
}
