//! The simulator core: from a message to queued, signed callbacks (SPEC §3, §4.1).
//!
//! [`Simulator`] owns the apps and the dispatcher. [`Simulator::submit`] is the one way in for
//! REST ingestion, the generator and the library: it picks the matching rules, builds every
//! callback body once (one callId, one signature each) and queues them all or none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::ban::BanStart;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, RuleConfig};
use crate::dialect::agora;
use crate::dialect::tencent::{self, MsgIds};
use crate::dispatch::{CallbackReport, Dispatcher, EnqueueError, Job, rfc3339, spawn_unban_log};
use crate::domain::{Dialect, EventType, Platform, RuleKind, Source};
use crate::event::Event;
use crate::message::Message;
use crate::presend;
use crate::runtime::{AppRuntime, Apps, RuleRuntime};
use crate::store::{Store, StoreError, spawn_sweeper};

/// How long in-flight attempts may run after a stop is asked (SPEC §9: at most 5 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the simulator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A rule's HTTP client could not be built (e.g. a bad `ca_file` or client certificate).
    #[error("{0}")]
    Client(#[from] crate::dispatch::http::ClientError),
    /// The exception store under `data_dir` could not be opened (e.g. locked by another
    /// process).
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What a submitted message (or event) became.
#[derive(Debug)]
pub struct Submitted {
    /// The message id (empty for events).
    pub msg_id: String,
    /// The pre-send verdict.
    pub accepted: bool,
    /// What the sender is told when blocked (only with `notify_sender`).
    pub code: Option<String>,
    /// Post-send callbacks queued.
    pub queued: usize,
    /// The pre-send callbacks, already done.
    pub pre_send: Vec<CallbackReport>,
    /// One receiver per post-send callback, when the caller asked to wait.
    pub reports: Vec<oneshot::Receiver<CallbackReport>>,
}

impl Submitted {
    /// Waits for every callback's final outcome: pre-send ones first, then post-send ones in
    /// the order they were queued.
    pub async fn wait(self) -> Vec<CallbackReport> {
        let mut out = self.pre_send;
        out.reserve(self.reports.len());
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
    /// The validated configuration it was built from.
    pub config: Arc<Config>,
    /// The apps and rules as they run: clients, counters, bans, rate limiters.
    pub apps: Apps,
    /// The delivery queue and workers; also holds the exception store.
    pub dispatcher: Dispatcher,
    /// The time source of bans, date keys, `timestamp`s and retention.
    pub clock: SharedClock,
    /// `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    next_msg_id: AtomicU64,
    next_seq: AtomicU32,
    ids: IdSource,
}

/// Where callIds (and tencent `MsgRandom`s) come from: the thread RNG, or a seeded one so that
/// a generator run can be reproduced.
#[derive(Debug)]
enum IdSource {
    Random,
    Seeded(Box<std::sync::Mutex<rand::rngs::StdRng>>),
}

impl IdSource {
    fn uuid(&self) -> uuid::Uuid {
        match self {
            IdSource::Random => uuid::Uuid::new_v4(),
            IdSource::Seeded(rng) => {
                use rand::RngExt;
                let bytes: [u8; 16] = rng.lock().expect("id rng lock").random();
                uuid::Builder::from_random_bytes(bytes).into_uuid()
            }
        }
    }

    fn u32(&self) -> u32 {
        match self {
            IdSource::Random => rand::random(),
            IdSource::Seeded(rng) => {
                use rand::RngExt;
                rng.lock().expect("id rng lock").random()
            }
        }
    }
}

impl Simulator {
    /// Builds the runtime from a validated config: opens the store under `data_dir`, restores
    /// bans, starts the dispatcher and the retention sweep. Needs a Tokio runtime.
    pub fn build(config: Config) -> Result<Arc<Self>, BuildError> {
        Self::build_with_clock(config, Arc::new(SystemClock))
    }

    /// [`build`](Self::build) with another clock (tests).
    pub fn build_with_clock(config: Config, clock: SharedClock) -> Result<Arc<Self>, BuildError> {
        // Clients first: a bad TLS file must fail before the store is opened (and locked).
        let metrics = crate::metrics::Metrics::default();
        let apps = Apps::build(&config, &metrics)?;
        let store = Store::open(&config.server.data_dir, config.store.utc_offset)?;
        for rule in apps.rules() {
            if let Some(record) = store.load_ban(&rule.app, rule.config.name.as_str()) {
                rule.restore_ban(record);
            }
        }
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
            metrics,
            next_msg_id: AtomicU64::new(seed),
            next_seq: AtomicU32::new(1),
            ids: IdSource::Random,
        }))
    }

    /// The exception store.
    pub fn store(&self) -> &Store {
        self.dispatcher.store()
    }

    /// Makes callIds and tencent `MsgRandom`s reproducible from `seed` (the generator's
    /// `--seed`). Only before traffic starts; needs the only handle to the simulator.
    pub fn seed_ids(self: &mut Arc<Self>, seed: u64) -> bool {
        use rand::SeedableRng;
        match Arc::get_mut(self) {
            Some(sim) => {
                sim.ids = IdSource::Seeded(Box::new(std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))));
                true
            }
            None => false,
        }
    }

    /// A new `{app_id}#{uuid}` (SPEC §4.1): unique per callback, kept across retries and replays.
    pub(crate) fn new_call_id(&self, app: &crate::domain::AppId) -> String {
        let mut id = String::with_capacity(app.as_str().len() + 1 + uuid::fmt::Hyphenated::LENGTH);
        id.push_str(app.as_str());
        id.push('#');
        id.push_str(
            self.ids
                .uuid()
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        );
        id
    }

    /// The one way a message enters: pre-send rules are asked first (for `source = client`);
    /// if none blocks, the app's matching post-send rules get their callbacks, queued all or
    /// none. With `wait`, the answer carries a receiver per post-send callback.
    pub async fn submit(&self, app: &AppRuntime, mut msg: Message, wait: bool) -> Result<Submitted, EnqueueError> {
        if self.dispatcher.is_stopping() {
            return Err(EnqueueError::ShuttingDown);
        }
        let accepted_at = Instant::now();
        let timestamp = self.clock.now_ms();
        let msg_id = self.next_msg_id.fetch_add(1, Ordering::Relaxed).to_string();
        let ids = MsgIds {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            random: self.ids.u32(),
            time: timestamp / 1000,
        };
        let mut submitted = Submitted {
            msg_id,
            accepted: true,
            code: None,
            queued: 0,
            pre_send: Vec::new(),
            reports: Vec::new(),
        };
        if msg.source == Source::Client {
            let ctx = presend::Context {
                app,
                msg: &msg,
                timestamp,
                msg_id: &submitted.msg_id,
                ids,
                default_client_ip: DEFAULT_CLIENT_IP,
                sim: self,
            };
            if let Some(verdict) = presend::ask(&ctx).await {
                submitted.pre_send = verdict.reports;
                if !verdict.accepted {
                    submitted.accepted = false;
                    submitted.code = verdict.code;
                    return Ok(submitted);
                }
                if let Some(r) = verdict.rewrite {
                    msg.body.insert("msg".into(), serde_json::Value::String(r.msg));
                    if let Some(ext) = r.ext {
                        msg.ext = ext;
                    }
                }
            }
        }
        let mut jobs = Vec::new();
        let rules = app.rules.iter().filter(|r| post_send_matches(&r.config, &msg));
        match app.config.dialect {
            Dialect::Agora => {
                let payload = msg.agora_payload();
                for rule in rules {
                    let recipients = std::iter::once((EventType::Chat, msg.to.as_str()))
                        .chain(msg.offline.iter().map(|r| (EventType::ChatOffline, r.as_str())))
                        .filter(|(ev, _)| rule.config.allows_event_type(*ev));
                    for (event_type, to) in recipients {
                        let call_id = self.new_call_id(&rule.app);
                        let security = agora::sign(&call_id, rule.config.secret.expose(), timestamp);
                        let body = agora::CallbackBody {
                            call_id: &call_id,
                            event_type: event_type.as_str(),
                            timestamp,
                            chat_type: wire_chat_type(&msg),
                            group_id: msg.group_id(),
                            from: &msg.from,
                            to,
                            msg_id: &submitted.msg_id,
                            payload: &payload,
                            security_version: agora::SECURITY_VERSION,
                            security: &security,
                        }
                        .to_bytes();
                        jobs.push(job(rule, call_id, event_type, to, Bytes::from(body), None, accepted_at));
                    }
                }
            }
            Dialect::Tencent => {
                // Tencent has no offline callback: one after-command per rule, same bytes for all.
                let cmd = tencent::message_command(RuleKind::PostSend, msg.chat_type);
                let body = Bytes::from(tencent::message_body(cmd, &msg, ids));
                let ip = msg.client_ip.map(|ip| ip.to_string());
                let query: Arc<str> = tencent::query(
                    app.config.sdk_app_id,
                    cmd,
                    ip.as_deref().unwrap_or(DEFAULT_CLIENT_IP),
                    tencent::platform(msg.source, msg.platform),
                )
                .into();
                for rule in rules.filter(|r| r.config.allows_event_type(EventType::Chat)) {
                    jobs.push(job(
                        rule,
                        self.new_call_id(&rule.app),
                        EventType::Chat,
                        &msg.to,
                        body.clone(),
                        Some(query.clone()),
                        accepted_at,
                    ));
                }
            }
        }
        self.enqueue(jobs, wait, &mut submitted)?;
        Ok(submitted)
    }

    /// A non-message event: one callback per enabled post-send rule whose `event_types` allow it.
    pub async fn submit_event(&self, app: &AppRuntime, event: Event, wait: bool) -> Result<Submitted, EnqueueError> {
        if self.dispatcher.is_stopping() {
            return Err(EnqueueError::ShuttingDown);
        }
        let accepted_at = Instant::now();
        let timestamp = self.clock.now_ms();
        let event_type = event.event_type();
        let mut submitted = Submitted {
            msg_id: String::new(),
            accepted: true,
            code: None,
            queued: 0,
            pre_send: Vec::new(),
            reports: Vec::new(),
        };
        let rules = app.rules.iter().filter(|r| {
            r.config.kind == RuleKind::PostSend && r.config.enabled && r.config.allows_event_type(event_type)
        });
        let mut jobs = Vec::new();
        match app.config.dialect {
            Dialect::Agora => {
                for rule in rules {
                    let call_id = self.new_call_id(&rule.app);
                    let security = agora::sign(&call_id, rule.config.secret.expose(), timestamp);
                    let body = match &event {
                        Event::UserStatus {
                            user,
                            online,
                            platform,
                            client_ip,
                        } => serde_json::to_vec(&agora::UserStatusBody {
                            call_id: &call_id,
                            event_type: event_type.as_str(),
                            timestamp,
                            user,
                            status: if *online { "online" } else { "offline" },
                            reason: if *online { "login" } else { "logout" },
                            os: platform.map(|p| p.as_str()),
                            ip: client_ip.map(|ip| ip.to_string()),
                            security_version: agora::SECURITY_VERSION,
                            security: &security,
                        }),
                        Event::GroupMemberJoined {
                            group_id,
                            members,
                            operator,
                            join_type,
                            ..
                        } => serde_json::to_vec(&agora::MemberJoinedBody {
                            call_id: &call_id,
                            event_type: event_type.as_str(),
                            timestamp,
                            chat_type: "groupchat",
                            group_id,
                            from: operator,
                            members,
                            join_type,
                            security_version: agora::SECURITY_VERSION,
                            security: &security,
                        }),
                    }
                    .expect("an event body serializes");
                    jobs.push(job(
                        rule,
                        call_id,
                        event_type,
                        event.subject(),
                        Bytes::from(body),
                        None,
                        accepted_at,
                    ));
                }
            }
            Dialect::Tencent => {
                let (cmd, body, ip, platform) = match &event {
                    Event::UserStatus {
                        user,
                        online,
                        platform,
                        client_ip,
                    } => (
                        tencent::STATE_CHANGE,
                        tencent::state_change_body(user, *online, timestamp),
                        client_ip.map(|ip| ip.to_string()),
                        platform.unwrap_or(Platform::Unknown),
                    ),
                    Event::GroupMemberJoined {
                        group_id,
                        members,
                        operator,
                        join_type,
                        group_type,
                    } => (
                        tencent::GROUP_MEMBER_JOIN,
                        tencent::member_join_body(group_id, group_type, join_type, operator, members),
                        None,
                        Platform::RestApi,
                    ),
                };
                let body = Bytes::from(body);
                let query: Arc<str> = tencent::query(
                    app.config.sdk_app_id,
                    cmd,
                    ip.as_deref().unwrap_or(DEFAULT_CLIENT_IP),
                    platform,
                )
                .into();
                for rule in rules {
                    jobs.push(job(
                        rule,
                        self.new_call_id(&rule.app),
                        event_type,
                        event.subject(),
                        body.clone(),
                        Some(query.clone()),
                        accepted_at,
                    ));
                }
            }
        }
        self.enqueue(jobs, wait, &mut submitted)?;
        Ok(submitted)
    }

    fn enqueue(&self, mut jobs: Vec<Job>, wait: bool, submitted: &mut Submitted) -> Result<(), EnqueueError> {
        if wait {
            for job in &mut jobs {
                let (tx, rx) = oneshot::channel();
                job.done = Some(tx);
                submitted.reports.push(rx);
            }
        }
        submitted.queued = jobs.len();
        self.dispatcher.enqueue(jobs)
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
    body: Bytes,
    query: Option<Arc<str>>,
    accepted_at: Instant,
) -> Job {
    Job {
        rule: rule.clone(),
        call_id: call_id.into_boxed_str(),
        event_type,
        to: to.into(),
        body,
        query,
        done: None,
        accepted_at,
    }
}

/// `ClientIP` of tencent callbacks when the message names none.
pub const DEFAULT_CLIENT_IP: &str = "127.0.0.1";

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
