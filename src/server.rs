//! [`Server`]: a running simulator — the dispatcher plus the REST API bound to a real socket —
//! and typed access to what it did: each callback's outcome, the exception store, replays and
//! rule states. `callback-sim serve` runs one; [`Sim`](crate::Sim) wraps one for tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::dispatch::{CallbackReport, EnqueueError};
use crate::domain::{CallbackUrl, DateKey, EventType, FinalOutcome, Outcome, RuleStatus};
use crate::event::Event;
use crate::message::{Message, MessageError};
use crate::replay::{ReplayError, ReplayOutcome};
use crate::runtime::{AppRuntime, RuleRuntime, StatsSnapshot};
use crate::sim::{BuildError, Simulator};
use crate::store::{Bucket, BucketInfo, StoreError, StoredCallback};

/// Why a [`Server`] (or a [`Sim`](crate::Sim)) could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A rule's `ca_file`, `client_cert` or `client_key` cannot be used: a config error that
    /// names the app, the rule, the key and the file (`serve` exits 2).
    #[error("{0}")]
    TlsFiles(String),
    /// The exception store under `server.data_dir` could not be opened (e.g. locked by another
    /// process).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `server.listen` could not be bound.
    #[error("cannot listen on {addr}: {source} (change server.listen, or use port 0 for a free port)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error, e.g. address in use.
        source: std::io::Error,
    },
}

impl StartError {
    fn build(e: BuildError) -> Self {
        match e {
            BuildError::Client(e) => StartError::TlsFiles(e.to_string()),
            BuildError::Store(e) => StartError::Store(e),
        }
    }
}

/// Why a [`Server`] or [`Sim`](crate::Sim) call failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The TOML given to [`Sim::from_toml`](crate::Sim::from_toml) is not a valid config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The simulator could not start (TLS files, store, bind).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The temporary data dir could not be created.
    #[error("cannot create a temp data dir: {0}")]
    TempDir(std::io::Error),
    /// The app id names no app of the config.
    #[error("no app {0:?} in the config")]
    UnknownApp(String),
    /// The app has no rule of that name.
    #[error("app {app:?} has no rule {rule:?}")]
    UnknownRule {
        /// The app id.
        app: String,
        /// The rule name asked for.
        rule: String,
    },
    /// The message could not be queued (queue full, or the simulator is stopping).
    #[error(transparent)]
    Queue(#[from] EnqueueError),
    /// A replay did not run (no such bucket, or one already running).
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The exception store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A message or event built in code breaks a rule the REST API enforces (the field and
    /// why, as a 400 would say).
    #[error("invalid message: {0}")]
    Message(#[from] MessageError),
    /// An argument is invalid, e.g. a replay target URL that is not `http(s)://`.
    #[error("{0}")]
    Invalid(String),
}

/// What a sent message (or event) became, every callback with its final outcome: the data of
/// a `?wait=true` answer.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The message id (empty for events).
    pub msg_id: String,
    /// The pre-send verdict.
    pub accepted: bool,
    /// What the sender is told when blocked (with `notify_sender`).
    pub code: Option<String>,
    /// Why nothing was queued when no post-send rule takes it; empty otherwise.
    pub warnings: Vec<String>,
    /// Pre-send callbacks first, then post-send ones: the `?wait=true` list.
    pub callbacks: Vec<CallbackReport>,
}

/// What the simulator answered when it took a message without waiting for its callbacks
/// ([`Server::submit`]): the data of an answer without `?wait=true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The message id.
    pub msg_id: String,
    /// The pre-send verdict.
    pub accepted: bool,
    /// What the sender is told when blocked (with `notify_sender`).
    pub code: Option<String>,
    /// Post-send callbacks queued.
    pub queued: usize,
    /// Why nothing was queued when no post-send rule takes the message; empty otherwise.
    pub warnings: Vec<String>,
}

/// A rule's live state, as `GET …/callbacks/rules` shows it.
#[derive(Debug, Clone)]
pub struct RuleState {
    /// The rule's name.
    pub name: String,
    /// `active`, `banned` or `disabled`.
    pub state: RuleStatus,
    /// Unix time in milliseconds at which the current ban ends; `None` when not banned.
    pub banned_until_ms: Option<u64>,
    /// The level of the latest ban (0 if never banned), as `ban_level`.
    pub ban_level: u32,
    /// Failed attempts within the last `ban.window_secs` (0 while banned).
    pub failures_in_window: u32,
    /// Attempts per outcome and callbacks per final outcome.
    pub stats: StatsSnapshot,
}

/// The simulator serving its REST API on `server.listen`, with its exception store in
/// `server.data_dir`: what `callback-sim serve` runs.
///
/// Besides the REST API at [`base_url`](Self::base_url), it offers the same operations in
/// process: [`send`](Self::send) a message and get every callback's final outcome, read the
/// store's [`buckets`](Self::buckets) and [`items`](Self::items) ([`items_after`](Self::items_after)
/// for the next page), [`replay`](Self::replay) or [`delete`](Self::delete_bucket) a bucket,
/// see the [`rules`](Self::rules)' states and [`reset`](Self::reset_rule) a rule. Stop it with [`shutdown`](Self::shutdown);
/// dropping it stops it too, in the background.
///
/// ```
/// use callback_sim::{AppBuilder, Config, RuleBuilder, Server};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let config = Config::builder()
///     .data_dir(dir.path())
///     .app(AppBuilder::new("app1", "token").rule(RuleBuilder::post_send("sync", "http://127.0.0.1:9/cb", "secret")))
///     .build()
///     .unwrap();
/// let server = Server::start(config).await.unwrap();
/// println!("callback-sim listening on {}", server.base_url());
/// server.shutdown().await;
/// # });
/// ```
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    sim: Arc<Simulator>,
    http_stop: CancellationToken,
    http: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
    stopped: OnceCell<()>,
}

impl Server {
    /// Checks what [`start`](Self::start) checks beyond the config itself — that every
    /// rule's TLS files can be used — without opening the store or binding a port: what
    /// `callback-sim serve --check` runs after loading the config. The only error is
    /// [`StartError::TlsFiles`].
    pub fn check(config: &Config) -> Result<(), StartError> {
        crate::runtime::Apps::build(config, &crate::metrics::Metrics::default())
            .map(drop)
            .map_err(|e| StartError::TlsFiles(e.to_string()))
    }

    /// Builds the simulator and binds `server.listen` (port 0 picks a free port).
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`start`](Self::start) with another clock, e.g. a [`ManualClock`](crate::ManualClock)
    /// to test bans and retention without waiting.
    pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let sim = Simulator::build_with(config, clock, None).map_err(StartError::build)?;
        Self::serve(Arc::new(sim)).await
    }

    /// [`start`](Self::start) with reproducible callIds: they come from a generator seeded
    /// with `seed`, so the same seed and the same messages give the same callIds (what
    /// `callback-sim generate --seed` does; snapshot tests can use it too).
    pub async fn start_seeded(config: Config, seed: u64) -> Result<Self, StartError> {
        let sim = Simulator::build_with(config, Arc::new(SystemClock), Some(seed)).map_err(StartError::build)?;
        Self::serve(Arc::new(sim)).await
    }

    async fn serve(sim: Arc<Simulator>) -> Result<Self, StartError> {
        let want = sim.config.server.listen;
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
            http: Mutex::new(Some(http)),
            stopped: OnceCell::new(),
        })
    }

    /// The address the API listens on (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`, for driving the REST API.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn app(&self, app: &str) -> Result<&Arc<AppRuntime>, SimError> {
        self.sim
            .apps
            .get(app)
            .ok_or_else(|| SimError::UnknownApp(app.to_string()))
    }

    /// Sends a message as app `app` and waits until every callback has its final outcome
    /// (`POST /app-id/{app}/messages?wait=true`).
    pub async fn send(&self, app: &str, msg: Message) -> Result<Sent, SimError> {
        let app = self.app(app)?;
        msg.check()?;
        let mut s = self.sim.submit(app, msg, true).await?;
        let (msg_id, accepted, code) = (std::mem::take(&mut s.msg_id), s.accepted, s.code.take());
        Ok(Sent {
            msg_id,
            accepted,
            code,
            warnings: std::mem::take(&mut s.warnings),
            callbacks: s.wait().await,
        })
    }

    /// Queues a message as app `app` without waiting for its callbacks
    /// (`POST /app-id/{app}/messages`): for traffic, where the outcomes are read from
    /// [`rules`](Self::rules) afterwards. Pre-send rules are still asked first. A full queue is
    /// [`SimError::Queue`]`(`[`EnqueueError::Full`]`)`: wait and try again.
    pub async fn submit(&self, app: &str, msg: Message) -> Result<Receipt, SimError> {
        let app = self.app(app)?;
        msg.check()?;
        let s = self.sim.submit(app, msg, false).await?;
        Ok(Receipt {
            msg_id: s.msg_id,
            accepted: s.accepted,
            code: s.code,
            queued: s.queued,
            warnings: s.warnings,
        })
    }

    /// Queues a catalog event as app `app` without waiting for its callbacks
    /// (`POST /app-id/{app}/events`): for traffic, as [`submit`](Self::submit) is for
    /// messages. A tencent before-command is still asked first; `accepted` is `false` when it
    /// refused the event. An event the app's dialect does not have queues nothing (see
    /// `warnings`).
    pub async fn submit_event(&self, app: &str, event: Event) -> Result<Receipt, SimError> {
        let app = self.app(app)?;
        let s = self.sim.submit_event(app, event, false).await?;
        Ok(Receipt {
            msg_id: s.msg_id,
            accepted: s.accepted,
            code: s.code,
            queued: s.queued,
            warnings: s.warnings,
        })
    }

    /// Sends a non-message event and waits for its callbacks' final outcomes
    /// (`POST /app-id/{app}/events?wait=true`).
    pub async fn send_event(&self, app: &str, event: Event) -> Result<Sent, SimError> {
        let app = self.app(app)?;
        let mut s = self.sim.submit_event(app, event, true).await?;
        Ok(Sent {
            msg_id: std::mem::take(&mut s.msg_id),
            accepted: s.accepted,
            code: s.code.take(),
            warnings: std::mem::take(&mut s.warnings),
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

    /// The items of bucket (`date`, `retry`) stored after the one whose callId is `after`, at
    /// most `limit` (`storage/items?after=`): the next page when `after` is the last callId of
    /// the previous one. A callId that is not in the bucket is [`SimError::Invalid`].
    pub fn items_after(
        &self,
        app: &str,
        date: DateKey,
        retry: u32,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredCallback>, SimError> {
        let app = self.app(app)?;
        let bucket = Bucket {
            app: app.config.id.clone(),
            date,
            retry,
        };
        self.sim
            .store()
            .page(&bucket, Some(after), limit)?
            .ok_or_else(|| SimError::Invalid(format!("no callback {after:?} in bucket date={date} retry={retry}")))
    }

    /// Deletes bucket (`date`, `retry`) for good (`DELETE …/callbacks/storage`); returns how
    /// many callbacks it held (0 for an empty or missing bucket). While the bucket is being
    /// replayed: [`SimError::Replay`]`(`[`ReplayError::Busy`]`)`.
    pub async fn delete_bucket(&self, app: &str, date: DateKey, retry: u32) -> Result<u64, SimError> {
        let app = self.app(app)?;
        let bucket = Bucket {
            app: app.config.id.clone(),
            date,
            retry,
        };
        let store = self.sim.store();
        let slot = store
            .begin_replay(&bucket)
            .ok_or(SimError::Replay(ReplayError::Busy { date, retry }))?;
        Ok(store.delete_bucket(&slot).await?)
    }

    /// Resets rule `rule` of `app` (`POST …/callbacks/rules/{rule}/reset`): lifts its ban,
    /// empties its failure window and forgets its ban history (its next ban is of level 1),
    /// the saved ban record included; returns its new state.
    pub async fn reset_rule(&self, app: &str, rule: &str) -> Result<RuleState, SimError> {
        let runtime = self.app(app)?;
        let r = runtime.rule(rule).ok_or_else(|| SimError::UnknownRule {
            app: app.to_string(),
            rule: rule.to_string(),
        })?;
        self.sim.reset_rule(r).await?;
        Ok(rule_state(r, self.sim.clock.now_ms()))
    }

    /// Replays bucket (`date`, `retry`) to `target` or the rules' own URLs (`storage/retry`),
    /// and returns when it is done. The replay runs to its end even if this future is dropped;
    /// a [`shutdown`](Self::shutdown) cuts it short (see [`ReplayOutcome::interrupted`]).
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
        Ok(self.sim.replayer.replay(app, date, retry, target).await?)
    }

    /// Each rule of the app with its live state (`callbacks/rules`). Still readable after
    /// [`shutdown`](Self::shutdown): where every accepted callback ended up.
    pub fn rules(&self, app: &str) -> Result<Vec<RuleState>, SimError> {
        let app = self.app(app)?;
        let now = self.sim.clock.now_ms();
        Ok(app.rules.iter().map(|r| rule_state(r, now)).collect())
    }

    /// Callbacks accepted and not yet attempted (`queued` in `GET /healthz`).
    pub fn queued(&self) -> usize {
        self.sim.dispatcher.queued()
    }

    /// Calls `watch` once for every post-send callback that ends, with its event type (`chat`,
    /// `chat_offline` or a catalog event), its final outcome, its last attempt's outcome and
    /// the time from acceptance to the end: how `callback-sim generate` keeps its counts and
    /// latencies. One watcher per server (later calls are ignored); it runs on the delivery
    /// path, so it must be quick.
    pub fn watch(&self, watch: impl Fn(EventType, FinalOutcome, Outcome, std::time::Duration) + Send + Sync + 'static) {
        self.sim.dispatcher.observe(Box::new(watch));
    }

    /// Graceful stop (docs/behaviour.md §9): new messages and replays get 503 while queued
    /// callbacks end as `shutdown` and attempts in flight — deliveries, replays, pre-send
    /// calls — get one grace period (at most 5 s); pending `?wait=true` requests and replays
    /// are answered and the store is flushed; then the HTTP server stops. Calling it again
    /// waits for the same stop.
    pub async fn shutdown(&self) {
        self.stopped
            .get_or_init(|| {
                let http = self.http.lock().expect("http task lock").take();
                stop(self.sim.clone(), self.http_stop.clone(), http)
            })
            .await;
    }
}

/// A rule's state at `now` (Unix ms).
fn rule_state(r: &RuleRuntime, now: u64) -> RuleState {
    let ban = r.ban_view(now);
    RuleState {
        name: r.config.name.to_string(),
        state: r.status(now),
        banned_until_ms: ban.banned_until_ms,
        ban_level: ban.level,
        failures_in_window: ban.failures_in_window,
        stats: r.stats.snapshot(),
    }
}

/// The stop itself: the simulator first (the API answers 503 meanwhile), then the HTTP server.
async fn stop(sim: Arc<Simulator>, http_stop: CancellationToken, http: Option<JoinHandle<std::io::Result<()>>>) {
    sim.shutdown().await;
    http_stop.cancel();
    if let Some(http) = http {
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
            Err(e) => tracing::error!(error = %e, "HTTP server task failed"),
        }
    }
}

impl Drop for Server {
    /// Not stopped yet: the same graceful stop, in the background (when inside a runtime).
    fn drop(&mut self) {
        if self.stopped.initialized() {
            return;
        }
        let http = self.http.get_mut().ok().and_then(Option::take);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(stop(self.sim.clone(), self.http_stop.clone(), http));
        }
    }
}
