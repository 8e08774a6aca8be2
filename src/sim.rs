//! The simulator core: from a message to queued, signed callbacks (SPEC §3, §4.1).
//!
//! [`Simulator`] owns the apps and the dispatcher. [`Simulator::submit`] is the one way in for
//! REST ingestion, the generator and the library: it picks the matching rules, builds every
//! callback body once (one callId, one signature each) and queues them all or none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::ban::BanStart;
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::config::{Config, RuleConfig};
use crate::dialect::agora;
use crate::dispatch::{CallbackReport, Dispatcher, EnqueueError, Job, rfc3339, spawn_unban_log};
use crate::domain::{EventType, RuleKind, Source};
use crate::message::Message;
use crate::replay::ReplayGuards;
use crate::runtime::{AppRuntime, Apps, RuleRuntime};
use crate::store::{Store, StoreError, spawn_sweeper};

/// How long in-flight attempts may run after a stop is asked (SPEC §9: at most 5 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the simulator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Client(#[from] crate::dispatch::http::ClientError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What a submitted message became.
#[derive(Debug)]
pub struct Submitted {
    pub msg_id: String,
    /// The pre-send verdict (always true until pre-send rules exist).
    pub accepted: bool,
    /// What the sender is told when blocked.
    pub code: Option<String>,
    /// Post-send callbacks queued.
    pub queued: usize,
    /// One receiver per callback, when the caller asked to wait.
    pub reports: Vec<oneshot::Receiver<CallbackReport>>,
}

impl Submitted {
    /// Waits for every callback's final outcome, in the order they were queued.
    pub async fn wait(self) -> Vec<CallbackReport> {
        let mut out = Vec::with_capacity(self.reports.len());
        for rx in self.reports {
            // The dispatcher reports every job it was given, shutdown included.
            if let Ok(r) = rx.await {
                out.push(r);
            }
        }
        out
    }
}

/// Apps, rules, the dispatcher and the exception store.
#[derive(Debug)]
pub struct Simulator {
    pub config: Arc<Config>,
    pub apps: Apps,
    pub dispatcher: Dispatcher,
    pub clock: SharedClock,
    pub(crate) replays: ReplayGuards,
    next_msg_id: AtomicU64,
}

impl Simulator {
    /// Builds the runtime from a validated config: opens the store under `data_dir`, restores
    /// bans, starts the dispatcher and the retention sweep. Needs a Tokio runtime.
    pub fn build(config: Config) -> Result<Arc<Self>, BuildError> {
        Self::build_with_clock(config, Arc::new(SystemClock))
    }

    /// [`build`](Self::build) with another clock (tests).
    pub fn build_with_clock(config: Config, clock: SharedClock) -> Result<Arc<Self>, BuildError> {
        let store = Store::open(&config.server.data_dir, config.store.utc_offset)?;
        let apps = Apps::build(&config, |app, rule| store.load_ban(app, rule))?;
        let now = clock.now_ms();
        for app in apps.iter() {
            for rule in &app.rules {
                if let Some(until) = rule.banned_until(now) {
                    let view = rule.ban_view(now);
                    tracing::warn!(app = %rule.app, rule = %rule.config.name, level = view.level,
                        until = %rfc3339(until), "rule still banned from before the restart");
                    let start = BanStart {
                        level: view.level,
                        since_ms: now,
                        until_ms: until,
                    };
                    spawn_unban_log(rule.app.clone(), rule.config.name.clone(), start, clock.clone());
                }
            }
        }
        let retention = config.store.retention;
        let sweep_every = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
        spawn_sweeper(store.clone(), retention, sweep_every, clock.clone());
        let post_send = apps
            .rules()
            .filter(|r| r.config.kind == RuleKind::PostSend)
            .cloned()
            .collect();
        let dispatcher = Dispatcher::start(&config.delivery, post_send, store, clock.clone());
        // Message ids look like the provider's (numeric, increasing): start from the clock.
        let seed = now.saturating_mul(1000);
        Ok(Arc::new(Self {
            config: Arc::new(config),
            apps,
            dispatcher,
            clock,
            replays: ReplayGuards::default(),
            next_msg_id: AtomicU64::new(seed),
        }))
    }

    /// The exception store.
    pub fn store(&self) -> &Store {
        self.dispatcher.store()
    }

    /// Turns `msg` into callbacks for the app's matching post-send rules and queues them.
    /// With `wait`, the answer carries a receiver per callback.
    pub async fn submit(&self, app: &AppRuntime, msg: Message, wait: bool) -> Result<Submitted, EnqueueError> {
        if self.dispatcher.is_stopping() {
            return Err(EnqueueError::ShuttingDown);
        }
        let accepted_at = Instant::now();
        let timestamp = self.clock.now_ms();
        let msg_id = self.next_msg_id.fetch_add(1, Ordering::Relaxed).to_string();
        let payload = msg.agora_payload();
        let mut jobs = Vec::new();
        let mut reports = Vec::new();
        for rule in app.rules.iter().filter(|r| post_send_matches(&r.config, &msg)) {
            let recipients = std::iter::once((EventType::Chat, msg.to.as_str()))
                .chain(msg.offline.iter().map(|r| (EventType::ChatOffline, r.as_str())))
                .filter(|(ev, _)| rule.config.allows_event_type(*ev));
            for (event_type, to) in recipients {
                let call_id = format!("{}#{}", rule.app, uuid::Uuid::new_v4());
                let security = agora::sign(&call_id, rule.config.secret.expose(), timestamp);
                let body = agora::CallbackBody {
                    call_id: &call_id,
                    event_type: event_type.as_str(),
                    timestamp,
                    chat_type: wire_chat_type(&msg),
                    group_id: msg.group_id(),
                    from: &msg.from,
                    to,
                    msg_id: &msg_id,
                    payload: &payload,
                    security_version: agora::SECURITY_VERSION,
                    security: &security,
                }
                .to_bytes();
                let done = wait.then(|| {
                    let (tx, rx) = oneshot::channel();
                    reports.push(rx);
                    tx
                });
                jobs.push(job(rule, call_id, event_type, to, body, done, accepted_at));
            }
        }
        let queued = jobs.len();
        self.dispatcher.enqueue(jobs)?;
        Ok(Submitted {
            msg_id,
            accepted: true,
            code: None,
            queued,
            reports,
        })
    }

    /// Stops the dispatcher — queued callbacks are stored as `shutdown`, in-flight ones get
    /// [`SHUTDOWN_GRACE`] — and flushes the store.
    pub async fn shutdown(&self) {
        self.dispatcher.shutdown(SHUTDOWN_GRACE).await;
        if let Err(e) = self.store().flush().await {
            tracing::error!(error = %e, "final flush of the exception store failed");
        }
        self.store().close().await;
    }
}

fn job(
    rule: &Arc<RuleRuntime>,
    call_id: String,
    event_type: EventType,
    to: &str,
    body: Vec<u8>,
    done: Option<oneshot::Sender<CallbackReport>>,
    accepted_at: Instant,
) -> Job {
    Job {
        rule: rule.clone(),
        call_id: call_id.into_boxed_str(),
        event_type,
        to: to.into(),
        body: Bytes::from(body),
        done,
        accepted_at,
    }
}

/// The agora wire sends chatrooms as `groupchat` (seed 001).
fn wire_chat_type(msg: &Message) -> &'static str {
    match msg.chat_type {
        crate::domain::ChatType::Chat => "chat",
        _ => "groupchat",
    }
}

/// Does an enabled post-send rule want this message (SPEC §3 step 2)?
pub fn post_send_matches(rule: &RuleConfig, msg: &Message) -> bool {
    rule.kind == RuleKind::PostSend
        && rule.enabled
        && rule.allows_chat_type(msg.chat_type)
        && rule.allows_message_type(msg.msg_type)
        && (rule.include_rest || msg.source != Source::Rest)
}

/// Unix time in milliseconds, from the system clock.
pub fn now_ms() -> u64 {
    SystemClock.now_ms()
}
