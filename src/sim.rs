//! The simulator core: from a message or event to queued, signed callbacks (docs/behaviour.md
//! §3, §4).
//!
//! [`Simulator`] owns the apps and the dispatcher. [`Simulator::submit`] is the one way in for
//! REST ingestion, the generator and the library: it asks the pre-send rules, then has the
//! app's provider prepare the message once and encode each matching rule's callbacks (one
//! callId, one body, one signature each), and queues them all or none.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::ban::BanStart;
use crate::clock::{SharedClock, rfc3339};
use crate::config::{Config, RuleConfig};
use crate::dialect::{MessageFacts, Prepared};
use crate::dispatch::{Attempter, CallbackReport, Dispatcher, EnqueueError, Job, PolicyAttempt, Via, spawn_unban_log};
use crate::domain::CallbackUrl;
use crate::domain::{FinalOutcome, Outcome, RuleKind, Source};
use crate::event::{Event, Stamp};
use crate::history::{Entry, History};
use crate::ids::Ids;
use crate::message::Message;
use crate::metrics::{Metrics, RuleSample, Sample};
use crate::presend;
use crate::replay::Replayer;
use crate::runtime::{AppRuntime, Apps, RuleRuntime};
use crate::store::{Bucket, Store, StoreError, StoredCallback, spawn_sweeper};
use crate::transport::Target;
use bytes::Bytes;

/// How long in-flight attempts may run after a stop is asked (docs/behaviour.md §9: at most
/// 5 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the simulator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A rule's HTTP client could not be built (e.g. a bad `ca_file` or client certificate).
    #[error("{0}")]
    Client(#[from] crate::transport::ClientError),
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
    /// The error code the sender gets when blocked, where the provider has one (tencent).
    pub error_code: Option<i64>,
    /// Accepted, but a pre-send rule dropped it silently: no post-send callback was made
    /// (tencent `ErrorCode` 2).
    pub silently_dropped: bool,
    /// Post-send callbacks queued.
    pub queued: usize,
    /// Why nothing was queued for a message or event that no post-send rule takes (the
    /// `warnings` of the REST answer); empty otherwise.
    pub warnings: Vec<String>,
    /// The pre-send callbacks, already done.
    pub pre_send: Vec<CallbackReport>,
    /// One receiver per post-send callback, when the caller asked to wait.
    pub reports: Vec<oneshot::Receiver<CallbackReport>>,
}

impl Submitted {
    fn new(msg_id: String) -> Self {
        Self {
            msg_id,
            accepted: true,
            code: None,
            error_code: None,
            silently_dropped: false,
            queued: 0,
            warnings: Vec::new(),
            pre_send: Vec::new(),
            reports: Vec::new(),
        }
    }

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

/// Why a callback could not be sent again (`callbacks/resend`).
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    /// No callback of that callId in the history or the store.
    #[error("no callback {0:?} in the history (the last server.history_per_app callbacks) or the exception store")]
    NotFound(String),
    /// Its rule is no longer in the config: nothing to sign it with.
    #[error("callback {call_id:?} was for rule {rule:?}, which the config no longer has")]
    RuleGone {
        /// The callback.
        call_id: String,
        /// Its rule's name.
        rule: String,
    },
    /// The edited body cannot be sent: why.
    #[error("field `body`: {0}")]
    Body(String),
    /// The simulator is stopping.
    #[error("the simulator is shutting down")]
    ShuttingDown,
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Apps, rules, the dispatcher and the exception store.
#[derive(Debug)]
pub struct Simulator {
    /// The validated configuration it was built from.
    pub config: Arc<Config>,
    /// The apps and rules as they run: wire formats, clients, counters, bans, rate limiters.
    pub apps: Apps,
    /// The delivery queue and workers; also holds the exception store.
    pub dispatcher: Dispatcher,
    /// Re-sends buckets of the exception store.
    pub replayer: Replayer,
    /// The time source of bans, date keys, `timestamp`s and retention.
    pub clock: SharedClock,
    /// `GET /metrics`.
    pub metrics: Arc<Metrics>,
    ids: Ids,
    /// Pre-send calls go through it: a stop waits for them and cuts them short.
    attempter: Attempter,
    /// The recent callbacks of each app and the console's live notes (docs/behaviour.md §12).
    pub history: Arc<History>,
}

impl Simulator {
    /// Builds the runtime from a validated config: opens the store under `data_dir`, restores
    /// bans, starts the dispatcher and the retention sweep. Needs a Tokio runtime. `clock` is
    /// what bans, date keys and timestamps read; with `seed`, callIds come from a generator
    /// seeded with it (reproducible runs).
    pub fn build_with(config: Config, clock: SharedClock, seed: Option<u64>) -> Result<Self, BuildError> {
        // Clients first: a bad TLS file must fail before the store is opened (and locked).
        let metrics = Arc::new(Metrics::default());
        let apps = Apps::build(&config, &metrics)?;
        let store = Store::open(&config.server.data_dir, config.store.utc_offset)?;
        let history = Arc::new(History::new(&apps, config.server.history_per_app));
        let now = clock.now_ms();
        for rule in apps.rules() {
            if let Some(record) = store.load_ban(&rule.app, rule.config.name.as_str()) {
                rule.restore_ban(record);
            }
            if let Some(until) = rule.banned_until(now) {
                let view = rule.ban_view(now);
                tracing::warn!(app = %rule.app, rule = %rule.config.name, level = view.level,
                    until = %rfc3339(until), "rule still banned from before the restart");
                let start = BanStart {
                    level: view.level,
                    since_ms: now,
                    until_ms: until,
                };
                spawn_unban_log(rule, start, clock.clone(), Some(history.of(rule).clone()));
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
        let dispatcher = Dispatcher::start(
            &config.delivery,
            post_send,
            apps.rule_count(),
            store.clone(),
            clock.clone(),
        );
        dispatcher.record_into(history.clone());
        // Before any new traffic: what a previous run accepted and did not finish.
        resume(&apps, &dispatcher, &store, clock.now_ms())?;
        let attempter = dispatcher.attempter();
        let replayer = Replayer {
            store,
            attempter: attempter.clone(),
            clock: clock.clone(),
            default_client: apps.default_client.clone(),
            concurrency: config.delivery.concurrency,
            metrics: metrics.clone(),
        };
        let ids = match seed {
            Some(seed) => Ids::seeded(now, seed),
            None => Ids::new(now),
        };
        Ok(Self {
            config: Arc::new(config),
            apps,
            dispatcher,
            replayer,
            clock,
            metrics,
            ids,
            attempter,
            history,
        })
    }

    /// The exception store.
    pub fn store(&self) -> &Store {
        self.dispatcher.store()
    }

    /// Resets a rule (docs/behaviour.md §6): lifts its ban, empties its failure window and
    /// forgets its ban history, so that its next ban is of level 1; the saved ban record goes
    /// too, durably, before this returns.
    pub async fn reset_rule(&self, rule: &RuleRuntime) -> Result<(), StoreError> {
        rule.reset_ban();
        self.store().clear_ban(&rule.app, rule.config.name.as_str()).await?;
        // A ban that started between the reset and the clearing was saved before the clearing
        // removed it: save it again, so that it survives a restart like any ban.
        let record = rule.ban_record();
        if record.level > 0 || !record.history_ms.is_empty() {
            self.store().save_ban(&rule.app, rule.config.name.as_str(), record);
        }
        tracing::warn!(app = %rule.app, rule = %rule.config.name, "rule reset: ban lifted, failure window and ban history cleared");
        self.history.of(rule).rule_changed(&rule.config.name);
        Ok(())
    }

    /// Sends callback `call_id` of `app` once more (docs/behaviour.md §12): found in the
    /// history, else in the exception store; with `edited`, that body signed again by the
    /// app's provider; to `target` or the rule's URL (which obeys and feeds its ban), with the
    /// app's policy. Not stored when it fails; kept in the history as a resend.
    pub async fn resend(
        &self,
        app: &AppRuntime,
        call_id: &str,
        edited: Option<&[u8]>,
        target: Option<CallbackUrl>,
    ) -> Result<CallbackReport, ResendError> {
        let history = self
            .history
            .app(app.config.id.as_str())
            .expect("every app has a history");
        let (rule, event_type, to, body, query) = match history.find(call_id) {
            Some(e) => (
                e.rule.clone(),
                e.event_type,
                e.to.clone(),
                e.body.clone(),
                e.query.clone(),
            ),
            None => {
                let item = self
                    .stored(app, call_id)?
                    .ok_or_else(|| ResendError::NotFound(call_id.into()))?;
                let rule = app.rule(&item.rule).cloned().ok_or_else(|| ResendError::RuleGone {
                    call_id: call_id.into(),
                    rule: item.rule.clone(),
                })?;
                let query = item.query.map(Arc::from);
                (rule, item.event_type, item.to.into(), Bytes::from(item.body), query)
            }
        };
        let body = match edited {
            None => body,
            Some(e) => rule
                .wire
                .resign(e, rule.config.secret.expose())
                .map_err(ResendError::Body)?,
        };
        if self.attempter.is_stopping() {
            return Err(ResendError::ShuttingDown);
        }
        let _running = self.attempter.track();
        let started = Instant::now();
        let base = target.as_ref().unwrap_or(&rule.config.url);
        // Signed now, as every send is (tencent with a token: a fresh RequestTime).
        let sent = rule.wire.sign_query(query.as_deref(), self.clock.now_ms());
        let uri = base.uri_with_query(sent.as_deref());
        let sent_query = match &sent {
            Some(std::borrow::Cow::Owned(signed)) => Some(Arc::<str>::from(signed.as_str())),
            _ => None,
        };
        drop(sent);
        let mut trail = Vec::new();
        let (last, attempts) = self
            .attempter
            .attempt_policy(PolicyAttempt {
                wire: &*rule.wire,
                via: Via::Pool(&rule.client),
                to: Target::new(base, Some(&uri)),
                body: &body,
                policy: rule.policy,
                rule: Some(&rule),
                obey_ban: target.is_none(),
                trail: history.keeps().then_some(&mut trail),
            })
            .await;
        let outcome = match last.outcome {
            Outcome::Delivered => FinalOutcome::Delivered,
            Outcome::Violation => FinalOutcome::Violation,
            _ => FinalOutcome::Dropped,
        };
        let latency = started.elapsed();
        let latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3;
        tracing::info!(app = %rule.app, rule = %rule.config.name, call_id, resend = true, edited = edited.is_some(),
            outcome = %outcome, last_attempt = %last.outcome, attempts, status = last.status,
            detail = last.detail.as_deref(), "callback");
        let report = CallbackReport {
            rule: rule.config.name.clone(),
            kind: RuleKind::PostSend,
            call_id: call_id.to_string(),
            event_type,
            to: to.to_string(),
            outcome,
            last_attempt: last.outcome,
            attempts,
            status: last.status,
            warnings: Vec::new(),
            latency_ms,
        };
        history.record(Entry {
            rule,
            call_id: call_id.into(),
            event_type,
            to,
            outcome,
            last_attempt: last.outcome,
            created_at_ms: self.clock.now_ms().saturating_sub(latency.as_millis() as u64),
            latency_ms,
            attempts: trail,
            body,
            query,
            sent_query,
            target: target.map(Box::new),
            resend: true,
        });
        Ok(report)
    }

    /// Callback `call_id` of `app` in the exception store, if it is there.
    fn stored(&self, app: &AppRuntime, call_id: &str) -> Result<Option<StoredCallback>, StoreError> {
        for b in self.store().buckets(&app.config.id) {
            let bucket = Bucket {
                app: app.config.id.clone(),
                date: b.date,
                retry: b.retry,
            };
            for entry in self.store().scan(&bucket) {
                let (_, item) = entry?;
                if item.call_id == call_id {
                    return Ok(Some(item));
                }
            }
        }
        Ok(None)
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
        let mut submitted = Submitted::new(self.ids.msg_id());
        let (seq, random) = (self.ids.seq(), self.ids.random());
        if msg.source == Source::Client {
            let facts = MessageFacts {
                msg: &msg,
                msg_id: &submitted.msg_id,
                timestamp,
                seq,
                random,
            };
            if let Some(verdict) = presend::ask(app, facts, &self.ids, &self.attempter).await {
                submitted.pre_send = verdict.reports;
                if !verdict.accepted {
                    submitted.accepted = false;
                    submitted.code = verdict.code;
                    submitted.error_code = verdict.error_code;
                    return Ok(submitted);
                }
                if verdict.silent_drop {
                    submitted.silently_dropped = true;
                    return Ok(submitted);
                }
                if let Some(r) = verdict.rewrite {
                    if let Some(text) = r.msg {
                        msg.body.insert("msg".into(), serde_json::Value::String(text));
                    }
                    if let Some(ext) = r.ext {
                        msg.ext = ext;
                    }
                    if let Some(wire) = r.wire {
                        let overrides = msg.overrides.get_or_insert_with(Default::default);
                        overrides.extend(wire);
                    }
                }
            }
        }
        let facts = MessageFacts {
            msg: &msg,
            msg_id: &submitted.msg_id,
            timestamp,
            seq,
            random,
        };
        let prepared = app.wire.message(facts, RuleKind::PostSend);
        let rules = app.rules.iter().filter(|r| post_send_matches(&r.config, &msg));
        let jobs = self.jobs(&*prepared, rules, accepted_at);
        drop(prepared);
        if jobs.is_empty() {
            submitted.warnings.push(format!(
                "no post_send rule of app {:?} takes this message (chat_type {}, type {}, source {}): nothing was \
                 queued; see the enabled rules' chat_types, message_types, event_types (chat) and include_rest",
                app.config.id.as_str(),
                msg.chat_type,
                msg.msg_type,
                msg.source
            ));
        }
        self.enqueue(jobs, wait, &mut submitted).await?;
        Ok(submitted)
    }

    /// A catalog event (docs/behaviour.md §11): the provider's before-command, if it has one
    /// for this event, is asked of the app's pre-send rules first; then one callback per
    /// enabled post-send rule whose `event_types` allow it.
    pub async fn submit_event(
        &self,
        app: &AppRuntime,
        mut event: Event,
        wait: bool,
    ) -> Result<Submitted, EnqueueError> {
        if self.dispatcher.is_stopping() {
            return Err(EnqueueError::ShuttingDown);
        }
        let accepted_at = Instant::now();
        let stamp = Stamp {
            msg_id: self.ids.msg_id(),
            timestamp: self.clock.now_ms(),
            seq: self.ids.seq(),
            random: self.ids.random(),
        };
        let mut submitted = Submitted::new(stamp.msg_id.clone());
        let dialect = app.config.dialect();
        if !event.def().in_dialect(dialect) {
            submitted.warnings.push(format!(
                "the {dialect} dialect has no {} callback: nothing was queued",
                event.event_type()
            ));
            return Ok(submitted);
        }
        if let Some(verdict) = presend::ask_event(app, &mut event, &stamp, &self.ids, &self.attempter).await {
            submitted.pre_send = verdict.reports;
            if !verdict.accepted {
                submitted.accepted = false;
                submitted.code = verdict.code;
                submitted.warnings.extend(verdict.refusal);
                return Ok(submitted);
            }
        }
        let prepared = app.wire.event(&event, &stamp);
        let rules = app
            .rules
            .iter()
            .filter(|r| r.config.kind == RuleKind::PostSend && r.config.enabled);
        let jobs = self.jobs(&*prepared, rules, accepted_at);
        drop(prepared);
        if jobs.is_empty() {
            submitted.warnings.push(format!(
                "no post_send rule of app {app:?} takes {kind} events: nothing was queued; add \"{kind}\" to a \
                 rule's event_types (an empty list takes every event), or enable the rule",
                app = app.config.id.as_str(),
                kind = event.event_type()
            ));
        }
        self.enqueue(jobs, wait, &mut submitted).await?;
        Ok(submitted)
    }

    /// One job per rule and recipient whose event type the rule takes: a new callId each,
    /// the bytes encoded by the provider.
    fn jobs<'r>(
        &self,
        prepared: &dyn Prepared,
        rules: impl Iterator<Item = &'r Arc<RuleRuntime>>,
        accepted_at: Instant,
    ) -> Vec<Job> {
        let mut jobs = Vec::new();
        for rule in rules {
            for &to in prepared.recipients() {
                if !rule.config.allows_event_type(to.event_type) {
                    continue;
                }
                let call_id = self.ids.call_id(&rule.app);
                let encoded = prepared.encode(to, &call_id, rule.config.secret.expose());
                jobs.push(Job {
                    rule: rule.clone(),
                    call_id: call_id.into_boxed_str(),
                    event_type: to.event_type,
                    to: to.to.into(),
                    body: encoded.body,
                    query: encoded.query,
                    done: None,
                    accepted_at,
                    trail: Default::default(),
                    pending: None,
                });
            }
        }
        jobs
    }

    /// Queues the jobs; with durable accept, returns once they are on disk (docs/behaviour.md
    /// §7). A write that failed does not take back what was queued: the answer says it in its
    /// `warnings`.
    async fn enqueue(&self, mut jobs: Vec<Job>, wait: bool, submitted: &mut Submitted) -> Result<(), EnqueueError> {
        if wait {
            for job in &mut jobs {
                let (tx, rx) = oneshot::channel();
                job.done = Some(tx);
                submitted.reports.push(rx);
            }
        }
        submitted.queued = jobs.len();
        if let Some(commit) = self.dispatcher.enqueue(jobs)? {
            let written = commit.await.unwrap_or(Err(StoreError::Closed));
            if let Err(e) = written {
                submitted.warnings.push(format!(
                    "the callbacks were accepted and are being delivered, but they could not be written to disk \
                     ({e}): a crash before they finish would lose them"
                ));
            }
        }
        Ok(())
    }

    /// The Prometheus text of `GET /metrics`, with every count as it is now.
    pub fn render_metrics(&self) -> String {
        let now = self.clock.now_ms();
        let sample = Sample {
            rules: self
                .apps
                .rules()
                .map(|rule| RuleSample {
                    app: rule.app.as_str(),
                    rule: rule.config.name.as_str(),
                    finals: std::array::from_fn(|i| rule.stats.final_outcome(FinalOutcome::ALL[i])),
                    outcomes: std::array::from_fn(|i| rule.stats.outcome(Outcome::ALL[i])),
                    banned: rule.banned_until(now).is_some(),
                    bans_started: rule.stats.bans_started(),
                })
                .collect(),
            queued: self.dispatcher.queued(),
            in_flight: self.dispatcher.in_flight(),
            store_items: self
                .apps
                .iter()
                .map(|app| {
                    let size = self.store().buckets(&app.config.id).iter().map(|b| b.size).sum();
                    (app.config.id.as_str(), size)
                })
                .collect(),
            store_failing: self.store().is_failing(),
            durable_flushes: self.store().pending().flushes(),
        };
        self.metrics.render(&sample)
    }

    /// Stops the dispatcher — queued callbacks are stored as `shutdown`; deliveries, replays
    /// and pre-send calls in flight get [`SHUTDOWN_GRACE`] together — and then, once every
    /// replay has made its store changes, flushes and closes the store.
    pub async fn shutdown(&self) {
        // Live streams end, so that the HTTP server's own stop does not wait for them.
        self.history.close();
        self.dispatcher.shutdown(SHUTDOWN_GRACE).await;
        if let Err(e) = self.store().flush().await {
            tracing::error!(error = %e, "final flush of the exception store failed");
        }
        self.store().close().await;
    }
}

/// Queues again the callbacks a previous run accepted and did not finish (durable accept,
/// docs/behaviour.md §7), whatever `delivery.durable` says now. One whose rule has left the
/// config (or is no longer post-send) is stored as `shutdown`, not attempted, or dropped with
/// its app's store off; one that cannot be read is dropped. Each is logged.
fn resume(apps: &Apps, dispatcher: &Dispatcher, store: &Store, now_ms: u64) -> Result<(), StoreError> {
    let left = store.load_pending()?;
    if left.is_empty() {
        return Ok(());
    }
    let accepted_at = Instant::now();
    let (mut jobs, mut orphans, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for (key, record) in left {
        let p = match record {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(key, error = %e, "an accepted callback left by the last run cannot be read; it is dropped");
                gone.push(key);
                continue;
            }
        };
        let app = apps.get(p.app.as_str());
        let rule = app.and_then(|a| {
            a.rules
                .iter()
                .find(|r| r.config.name.as_str() == p.rule && r.config.kind == RuleKind::PostSend)
        });
        match (app, rule) {
            (_, Some(rule)) => jobs.push(Job {
                rule: rule.clone(),
                call_id: p.call_id.into(),
                event_type: p.event_type,
                to: p.to.into(),
                body: p.body.into(),
                query: p.query.map(Into::into),
                done: None,
                accepted_at,
                trail: Default::default(),
                pending: Some(key),
            }),
            (Some(a), None) if a.config.exception_store => orphans.push((
                key,
                StoredCallback {
                    app: p.app,
                    call_id: p.call_id,
                    rule: p.rule,
                    url: p.url,
                    event_type: p.event_type,
                    to: p.to,
                    body: String::from_utf8_lossy(&p.body).into_owned(),
                    query: p.query,
                    outcome: Outcome::Shutdown,
                    attempts: 0,
                    status: None,
                    stored_at_ms: now_ms,
                },
            )),
            _ => {
                tracing::warn!(app = %p.app, rule = %p.rule, call_id = %p.call_id,
                    "an accepted callback left by the last run is for a rule (or app) no longer configured, without a store; it is dropped");
                gone.push(key);
            }
        }
    }
    tracing::warn!(
        queued = jobs.len(),
        stored = orphans.len(),
        dropped = gone.len(),
        "callbacks accepted by the last run and not finished (it did not stop gracefully): queued again before new traffic"
    );
    dispatcher.requeue(jobs);
    for key in gone {
        store.pending().remove(key);
    }
    if !orphans.is_empty() {
        let store = store.clone();
        tokio::spawn(async move {
            let (keys, items): (Vec<u64>, Vec<StoredCallback>) = orphans.into_iter().unzip();
            match store.put(items).await {
                Ok(()) => keys.into_iter().for_each(|k| store.pending().remove(k)),
                Err(e) => {
                    tracing::error!(error = %e, "could not store the callbacks left by the last run whose rule has gone; they stay pending")
                }
            }
        });
    }
    Ok(())
}

/// Does an enabled post-send rule want this message (docs/behaviour.md §3 step 2)?
pub fn post_send_matches(rule: &RuleConfig, msg: &Message) -> bool {
    rule.kind == RuleKind::PostSend
        && rule.enabled
        && rule.allows_chat_type(msg.chat_type)
        && rule.allows_message_type(msg.msg_type)
        && (rule.include_rest || msg.source != Source::Rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::domain::{AppId, EventType};
    use crate::store::{Bucket, PendingRef};
    use crate::{AppBuilder, RuleBuilder, Sink};

    /// Waits (at most 20 s) for `check` to hold.
    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "waited 20 s for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn what_a_crash_left_pending_is_queued_again_and_an_orphan_is_stored() {
        let sink = Sink::recording(None).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = Config::builder()
            .data_dir(dir.path())
            .app(AppBuilder::new("app1", "t").rule(RuleBuilder::post_send("sync", &sink.url("/cb"), "s")))
            .build()
            .unwrap();
        let offset = config.store.utc_offset;
        {
            // What a killed run left: one callback of a rule still configured, one of a rule
            // that has left the config.
            let store = Store::open(dir.path(), offset).unwrap();
            let left = |rule, call_id| PendingRef {
                app: "app1",
                rule,
                url: "http://127.0.0.1:9/gone",
                call_id,
                event_type: EventType::Chat,
                to: "bob",
                body: b"{\"k\":1}",
                query: None,
            };
            let (_, commit) = store
                .pending()
                .insert(vec![left("sync", "app1#a"), left("gone", "app1#b")]);
            commit.await.unwrap().unwrap();
            store.close().await;
        }
        let sim = Simulator::build_with(config, Arc::new(SystemClock), None).unwrap();
        let got = sink.wait_for(1, Duration::from_secs(20)).await.unwrap();
        assert_eq!((got[0].path.as_str(), &got[0].body[..]), ("/cb", &b"{\"k\":1}"[..]));
        let app = AppId::parse("app1").unwrap();
        until("the orphan to be stored", || !sim.store().buckets(&app).is_empty()).await;
        let b = &sim.store().buckets(&app)[0];
        let bucket = Bucket {
            app: app.clone(),
            date: b.date,
            retry: b.retry,
        };
        let items: Vec<StoredCallback> = sim.store().scan(&bucket).map(|e| e.unwrap().1).collect();
        assert_eq!(items.len(), 1);
        assert_eq!(
            (
                items[0].call_id.as_str(),
                items[0].rule.as_str(),
                items[0].outcome,
                items[0].attempts
            ),
            ("app1#b", "gone", Outcome::Shutdown, 0)
        );
        until("the delivered one to be reported", || {
            sim.apps
                .rules()
                .next()
                .unwrap()
                .stats
                .final_outcome(FinalOutcome::Delivered)
                == 1
        })
        .await;
        sim.shutdown().await;
        drop(sim);
        let store = Store::open(dir.path(), offset).unwrap();
        assert!(
            store.load_pending().unwrap().is_empty(),
            "both are finished: nothing left"
        );
        store.close().await;
    }
}
