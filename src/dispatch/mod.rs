//! Delivery: the bounded queue, the bounded number in flight, and one callback's attempts.
//!
//! Ingestion puts [`Job`]s on their rules' lanes, all of a message's callbacks or none
//! ([`Dispatcher::enqueue`] answers [`EnqueueError::Full`] past `queue_capacity` and the API
//! says 429). Each rule has its share of `concurrency` as long-lived workers (SPEC §6: a
//! broken receiver holds only its own rule's share); a worker takes the next job of its lane
//! and delivers it on its own keep-alive connection: attempts under the policy (one immediate
//! retry by default), each classified as a SPEC §5 outcome, then the final outcome, counters,
//! one log line and the report to whoever waits for it.
//!
//! Stopping ([`Dispatcher::shutdown`]) stops the intake and the workers, finishes every queued
//! job as `shutdown`, lets deliveries in flight run for a grace period and then cuts them
//! short as `shutdown`.

mod alert;
pub mod http;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::http::{AttemptLimits, AttemptResult, Target, attempt, attempt_on};
use crate::ban::{BanRecord, BanStart};
use crate::clock::SharedClock;
use crate::config::{DeliveryConfig, DeliveryPolicy};
use crate::dialect::tencent;
use crate::domain::{AppId, EventType, FinalOutcome, Outcome, RuleKind, RuleName};
use crate::runtime::RuleRuntime;
use crate::store::{Store, StoredCallback};

/// One callback waiting to be delivered.
#[derive(Debug)]
pub struct Job {
    /// The rule it is for (its URL, client, policy, ban and counters).
    pub rule: Arc<RuleRuntime>,
    /// `{app_id}#{uuid}`: the same on every attempt and replay.
    pub call_id: Box<str>,
    /// `chat`, `chat_offline`, or an event type.
    pub event_type: EventType,
    /// The callback's recipient (`to`), for reports.
    pub to: Box<str>,
    /// The exact bytes to send, on every attempt and replay.
    pub body: Bytes,
    /// The query string appended to the rule URL (tencent).
    pub query: Option<Arc<str>>,
    /// Whoever waits for this callback's final outcome (`?wait=true`, the library).
    pub done: Option<oneshot::Sender<CallbackReport>>,
    /// When it was accepted: latency is measured from here.
    pub accepted_at: Instant,
}

/// What happened to one callback (SPEC §8.3 `?wait=true` list).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CallbackReport {
    /// The rule's name.
    pub rule: RuleName,
    /// `post_send` or `pre_send`.
    pub kind: RuleKind,
    #[serde(rename = "callId")]
    /// `callId`.
    pub call_id: String,
    #[serde(rename = "eventType")]
    /// `eventType`: `chat`, `chat_offline`, `user_status`, `group_member_joined`.
    pub event_type: EventType,
    /// The callback's recipient: the offline member for `chat_offline`, the user or group for events.
    pub to: String,
    /// The final outcome (SPEC §5).
    pub outcome: FinalOutcome,
    /// The last attempt's outcome (`banned`/`shutdown` when not attempted).
    pub last_attempt: Outcome,
    /// Attempts made (0 when `banned` or `shutdown` before any).
    pub attempts: u32,
    /// The last HTTP status, if a response arrived.
    pub status: Option<u16>,
    /// Sentences about receiver mistakes (a pre-send payload of the wrong shape).
    pub warnings: Vec<String>,
    /// From acceptance to the final outcome.
    pub latency_ms: f64,
}

/// Why callbacks could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    #[error("the delivery queue is full")]
    /// The queue has no room for all of the message's callbacks (the API answers 429).
    Full,
    #[error("the simulator is shutting down")]
    /// The simulator is stopping (the API answers 503).
    ShuttingDown,
}

struct Shared {
    /// `concurrency`, when the rules' shares add up to more (more rules than `concurrency`).
    permits: Option<Semaphore>,
    /// Callbacks accepted and not yet started (waiting in their rule's lane).
    queued: AtomicUsize,
    capacity: usize,
    /// Deliveries running now.
    in_flight: AtomicUsize,
    /// Calls of `enqueue` under way: stopping waits for them, so that none adds a job after
    /// the lanes were emptied.
    enqueuing: AtomicUsize,
    rules: Vec<Arc<RuleRuntime>>,
    max_chars: usize,
    stop_intake: Signal,
    /// Cuts attempts in flight short (after the grace period of a stop). Each worker waits on
    /// a child of its own, so that no two workers share a waiter list.
    abort: CancellationToken,
    tracker: TaskTracker,
    store: Store,
    clock: SharedClock,
    observer: std::sync::OnceLock<Observer>,
}

/// Called once per finished post-send callback with its final outcome, its last attempt's
/// outcome and the time from acceptance: how the generator watches the pipeline.
pub type Observer = Box<dyn Fn(FinalOutcome, Outcome, Duration) + Send + Sync>;

/// A rule's share of the dispatcher: the jobs waiting for one of its workers, and its idle
/// keep-alive connections.
#[derive(Debug)]
pub struct Lane {
    tx: async_channel::Sender<Job>,
    rx: async_channel::Receiver<Job>,
    idle: http::IdleConns,
}

impl Default for Lane {
    fn default() -> Self {
        let (tx, rx) = async_channel::unbounded();
        Self {
            tx,
            rx,
            idle: http::IdleConns::default(),
        }
    }
}

/// The lanes and their workers.
pub struct Dispatcher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("queued", &self.queued())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Without a [`shutdown`](Dispatcher::shutdown): the lanes close, so that the workers end
/// once they have delivered what is queued.
impl Drop for Dispatcher {
    fn drop(&mut self) {
        for rule in &self.shared.rules {
            rule.lane.tx.close();
        }
    }
}

impl Dispatcher {
    /// Starts the workers on the current runtime, for these rules: `concurrency` shared
    /// fairly among the rules (at least one each).
    pub fn start(delivery: &DeliveryConfig, rules: Vec<Arc<RuleRuntime>>, store: Store, clock: SharedClock) -> Self {
        let per_rule = (delivery.concurrency / rules.len().max(1)).max(1);
        let shared = Arc::new(Shared {
            permits: (per_rule * rules.len() > delivery.concurrency).then(|| Semaphore::new(delivery.concurrency)),
            queued: AtomicUsize::new(0),
            capacity: delivery.queue_capacity,
            in_flight: AtomicUsize::new(0),
            enqueuing: AtomicUsize::new(0),
            rules,
            max_chars: delivery.max_response_chars,
            stop_intake: Signal::default(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            store,
            clock,
            observer: std::sync::OnceLock::new(),
        });
        for rule in &shared.rules {
            for _ in 0..per_rule {
                shared.tracker.spawn(work(shared.clone(), rule.clone()));
            }
        }
        Self { shared }
    }

    /// Queues all `jobs` or none of them.
    pub fn enqueue(&self, jobs: Vec<Job>) -> Result<(), EnqueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let s = &self.shared;
        s.enqueuing.fetch_add(1, Ordering::SeqCst);
        let r = s.enqueue(jobs);
        s.enqueuing.fetch_sub(1, Ordering::SeqCst);
        let lost = r?;
        if !lost.is_empty() {
            // Cannot happen (lanes close only once no `enqueue` runs); if it did, the jobs
            // still end, as `shutdown`, rather than vanish.
            let shared = s.clone();
            tokio::spawn(async move { shared.settle_not_attempted(lost).await });
        }
        Ok(())
    }

    /// Callbacks accepted and not yet started.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Deliveries running now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// True once [`shutdown`](Self::shutdown) has begun.
    pub fn is_stopping(&self) -> bool {
        self.shared.stop_intake.is_set()
    }

    /// Attempts `body` at `url` under `policy`: up to `1 + retries` attempts, stopping at the
    /// first delivery. With `rule`, attempts are counted in its stats; with `obey_ban` too,
    /// a banned rule is not attempted and every failure feeds its ban window.
    pub async fn attempt_policy(&self, a: PolicyAttempt<'_>) -> (AttemptResult, u32) {
        self.shared.attempt_policy(a, &self.shared.abort).await
    }

    /// Installs the observer (once; later calls are ignored).
    pub fn observe(&self, observer: Observer) {
        let _ = self.shared.observer.set(observer);
    }

    /// The exception store.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Stops taking jobs, finishes the queued ones as `shutdown`, waits up to `grace` for the
    /// deliveries in flight and cuts the rest short. Every job ends with a final outcome.
    pub async fn shutdown(&self, grace: Duration) {
        let s = &self.shared;
        s.stop_intake.fire();
        // An `enqueue` that saw the intake open finishes adding its jobs first.
        while s.enqueuing.load(Ordering::SeqCst) != 0 {
            tokio::task::yield_now().await;
        }
        // Idle workers wake up and leave; busy ones leave after their delivery.
        for rule in &s.rules {
            rule.lane.tx.close();
        }
        s.tracker.close();
        if tokio::time::timeout(grace, s.tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = self.in_flight(),
                "deliveries still running after the grace period; stopping them as shutdown"
            );
            s.abort.cancel();
            s.tracker.wait().await;
        }
        // The jobs still waiting in the lanes end as `shutdown`.
        let left: Vec<Job> = s
            .rules
            .iter()
            .flat_map(|r| std::iter::from_fn(|| r.lane.rx.try_recv().ok()))
            .collect();
        s.settle_not_attempted(left).await;
    }
}

impl Shared {
    /// Queues `jobs` on their lanes; answers the ones a lane did not take.
    fn enqueue(&self, jobs: Vec<Job>) -> Result<Vec<Job>, EnqueueError> {
        if self.stop_intake.is_set() {
            return Err(EnqueueError::ShuttingDown);
        }
        let n = jobs.len();
        let cap = self.capacity;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| (q + n <= cap).then_some(q + n))
            .map_err(|_| EnqueueError::Full)?;
        let mut lost = Vec::new();
        for job in jobs {
            let rule = job.rule.clone();
            // Unbounded, and closed only once no `enqueue` runs.
            if let Err(e) = rule.lane.tx.try_send(job) {
                lost.push(e.into_inner());
            }
        }
        Ok(lost)
    }
}

/// One of a rule's workers: takes the next job of the rule's lane and delivers it on the
/// rule's most recently used idle connection (or a new one), until the simulator stops.
async fn work(shared: Arc<Shared>, rule: Arc<RuleRuntime>) {
    let lane = rule.lane.rx.clone();
    let mut conn = rule.client.conn();
    let abort = shared.abort.child_token();
    loop {
        // Without waiting when there is work: only an empty lane costs a wake-up.
        let job = match lane.try_recv() {
            Ok(job) => job,
            Err(async_channel::TryRecvError::Closed) => break,
            Err(async_channel::TryRecvError::Empty) => match lane.recv().await {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        // (Only with more rules than `concurrency`: otherwise the rules' workers fit.)
        let _permit = match &shared.permits {
            Some(p) => Some(p.acquire().await.expect("the semaphore is never closed")),
            None => None,
        };
        if shared.stop_intake.is_set() {
            // Taken after the intake closed: not started, like the ones left in the lane.
            shared.settle_not_attempted(vec![job]).await;
            break;
        }
        shared.queued.fetch_sub(1, Ordering::AcqRel);
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        shared.deliver(job, &mut conn, &abort).await;
        shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A one-way flag (stop taking jobs). Sequentially consistent: `enqueue` reads it after
/// announcing itself, `shutdown` reads the announcements after setting it; neither may miss
/// the other.
#[derive(Debug, Default)]
struct Signal(AtomicBool);

impl Signal {
    fn fire(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Queued callbacks stored per write when the simulator stops.
const SHUTDOWN_BATCH: usize = 4096;

impl Shared {
    /// Ends jobs that were never started as `shutdown`, stored in batches (one flush each).
    async fn settle_not_attempted(&self, jobs: Vec<Job>) {
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let chunk: Vec<_> = jobs
                .by_ref()
                .take(SHUTDOWN_BATCH)
                .map(|job| {
                    (
                        job,
                        not_attempted(Outcome::Shutdown, "not attempted: the simulator is stopping"),
                        0,
                    )
                })
                .collect();
            self.queued.fetch_sub(chunk.len(), Ordering::AcqRel);
            self.settle(chunk).await;
        }
    }
}

fn not_attempted(outcome: Outcome, why: &str) -> AttemptResult {
    AttemptResult {
        outcome,
        status: None,
        body: None,
        detail: Some(why.into()),
    }
}

/// What a 200 answer must be to count as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerCheck {
    /// Anything (agora post-send: "the response body is not interpreted").
    None,
    /// A tencent `{"ActionStatus","ErrorCode","ErrorInfo"}` object; else `bad_response`.
    Tencent,
}

impl AnswerCheck {
    /// The check a dialect's post-send answers get.
    pub fn for_dialect(d: crate::domain::Dialect) -> Self {
        match d {
            crate::domain::Dialect::Agora => AnswerCheck::None,
            crate::domain::Dialect::Tencent => AnswerCheck::Tencent,
        }
    }
}

/// What an attempt goes through.
#[derive(Debug)]
pub enum Via<'a> {
    /// The client's keep-alive pool (pre-send calls, replays).
    Pool(&'a http::Client),
    /// A delivery worker's own connection.
    Conn(&'a mut http::Conn),
}

/// One policy-driven delivery: see [`Dispatcher::attempt_policy`].
pub struct PolicyAttempt<'a> {
    /// What a 200 answer must be.
    pub check: AnswerCheck,
    /// The client (the rule's, for its TLS settings), or a worker's connection of it.
    pub via: Via<'a>,
    /// Where: the URI with its query, and the headers that come from the URL.
    pub to: Target<'a>,
    /// The exact bytes, the same on every attempt.
    pub body: &'a Bytes,
    /// Timeout and retries.
    pub policy: DeliveryPolicy,
    /// The rule, to count attempts in its stats (none when it left the config).
    pub rule: Option<&'a RuleRuntime>,
    /// Skip a banned rule and feed its failure window (false for replays to a `targetUrl`).
    pub obey_ban: bool,
}

impl Shared {
    /// Delivers `job` on one of its rule's idle connections (or a new one), which goes back
    /// among them before the outcome is reported: whoever hears of it and sends the next
    /// callback finds the connection idle again.
    async fn deliver(&self, job: Job, conn: &mut http::Conn, abort: &CancellationToken) {
        let rule = &job.rule;
        let url = &rule.config.url;
        // A tencent callback's URI, query included, is built once for all its attempts.
        let with_query = job.query.as_deref().map(|q| url.uri_with_query(Some(q)));
        conn.check_out(&rule.lane.idle);
        let (last, attempts) = self
            .attempt_policy(
                PolicyAttempt {
                    check: AnswerCheck::for_dialect(rule.dialect),
                    via: Via::Conn(conn),
                    to: Target::new(url, with_query.as_ref()),
                    body: &job.body,
                    policy: rule.policy,
                    rule: Some(rule),
                    obey_ban: true,
                },
                abort,
            )
            .await;
        conn.check_in(&rule.lane.idle);
        if last.outcome.is_delivered() || !rule.exception_store {
            // Nothing to store: no batch to build.
            let outcome = final_outcome(&job, &last, false);
            self.report(job, last, attempts, outcome);
        } else {
            self.settle(vec![(job, last, attempts)]).await;
        }
    }

    async fn attempt_policy(&self, mut a: PolicyAttempt<'_>, abort: &CancellationToken) -> (AttemptResult, u32) {
        let ban_rule = a.rule.filter(|r| a.obey_ban && r.policy.bans);
        if let Some(r) = ban_rule
            && let Some(until) = r.banned_until(self.clock.now_ms())
        {
            let why = format!("not attempted: the rule is banned until {}", rfc3339(until));
            return (not_attempted(Outcome::Banned, &why), 0);
        }
        let limits = AttemptLimits {
            timeout: a.policy.timeout,
            max_chars: self.max_chars,
            keep_body: a.check != AnswerCheck::None,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let started = Instant::now();
            // The attempt is polled first: the stop signal is only looked at while it waits.
            let r = tokio::select! {
                biased;
                r = async {
                    match &mut a.via {
                        // Boxed: the pool's future is large, and only replays and pre-send use it.
                        Via::Pool(client) => Box::pin(attempt(client, a.to, a.body.clone(), limits)).await,
                        Via::Conn(conn) => attempt_on(conn, a.to, a.body, limits).await,
                    }
                } => r,
                _ = abort.cancelled() => {
                    return (not_attempted(Outcome::Shutdown, "attempt cut short: the simulator is stopping"), attempts);
                }
            };
            let r = match (a.check, r.outcome) {
                (AnswerCheck::Tencent, Outcome::Delivered)
                    if tencent::parse_answer(r.body.as_deref().unwrap_or_default()).is_none() =>
                {
                    AttemptResult {
                        outcome: Outcome::BadResponse,
                        detail: Some("the answer is not a JSON object with an integer ErrorCode".into()),
                        ..r
                    }
                }
                _ => r,
            };
            if let Some(rule) = a.rule {
                rule.stats.count_outcome(r.outcome);
                rule.latency.record(started.elapsed().as_secs_f64());
            }
            if r.outcome.is_failure()
                && let Some(rule) = ban_rule
                && let Some((start, record)) = rule.record_failure(self.clock.now_ms())
            {
                self.on_ban(rule, start, record);
            }
            if r.outcome.is_delivered() || attempts > a.policy.retries {
                return (r, attempts);
            }
            if ban_rule.is_some_and(|rule| rule.banned_until(self.clock.now_ms()).is_some()) {
                return (r, attempts);
            }
            if let Some(rule) = a.rule {
                tracing::debug!(app = %rule.app, rule = %rule.config.name, outcome = %r.outcome, "attempt failed, retrying at once");
            }
        }
    }

    /// Logs and persists a ban, and logs its end when it comes.
    fn on_ban(&self, rule: &RuleRuntime, start: BanStart, record: BanRecord) {
        rule.stats.count_ban();
        tracing::warn!(
            app = %rule.app,
            rule = %rule.config.name,
            level = start.level,
            until = %rfc3339(start.until_ms),
            "rule banned: too many failures"
        );
        self.store.save_ban(&rule.app, rule.config.name.as_str(), record);
        spawn_unban_log(rule.app.clone(), rule.config.name.clone(), start, self.clock.clone());
    }

    /// Decides each callback's final outcome — storing the undelivered ones in one durable
    /// write — then counts, logs and reports them.
    async fn settle(&self, done: Vec<(Job, AttemptResult, u32)>) {
        if done.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let to_store: Vec<StoredCallback> = done
            .iter()
            .filter(|(job, last, _)| !last.outcome.is_delivered() && job.rule.exception_store)
            .map(|(job, last, attempts)| StoredCallback {
                app: job.rule.app.clone(),
                call_id: job.call_id.to_string(),
                rule: job.rule.config.name.to_string(),
                url: job.rule.config.url.to_string(),
                event_type: job.event_type,
                to: job.to.to_string(),
                body: String::from_utf8_lossy(&job.body).into_owned(),
                query: job.query.as_deref().map(str::to_string),
                outcome: last.outcome,
                attempts: *attempts,
                status: last.status,
                stored_at_ms: now,
            })
            .collect();
        let stored = if to_store.is_empty() {
            true
        } else {
            match self.store.put(to_store).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "could not store undelivered callbacks; they are dropped");
                    false
                }
            }
        };
        for (job, last, attempts) in done {
            let outcome = final_outcome(&job, &last, stored);
            self.report(job, last, attempts, outcome);
        }
    }

    fn report(&self, job: Job, last: AttemptResult, attempts: u32, outcome: FinalOutcome) {
        let rule = &job.rule;
        if matches!(last.outcome, Outcome::Shutdown | Outcome::Banned) {
            rule.stats.count_outcome(last.outcome);
        }
        rule.stats.count_final(outcome);
        let latency = job.accepted_at.elapsed();
        if let Some(observe) = self.observer.get() {
            observe(outcome, last.outcome, latency);
        }
        let latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3;
        tracing::info!(
            app = %rule.app,
            rule = %rule.config.name,
            call_id = %job.call_id,
            event_type = %job.event_type,
            outcome = %outcome,
            last_attempt = %last.outcome,
            attempts,
            status = last.status,
            latency_ms = format_args!("{latency_ms:.2}"),
            detail = last.detail.as_deref(),
            "callback"
        );
        if let Some(done) = job.done {
            let _ = done.send(CallbackReport {
                rule: rule.config.name.clone(),
                kind: RuleKind::PostSend,
                call_id: job.call_id.into(),
                event_type: job.event_type,
                to: job.to.into(),
                outcome,
                last_attempt: last.outcome,
                attempts,
                status: last.status,
                warnings: Vec::new(),
                latency_ms,
            });
        }
    }
}

/// A callback's final outcome from its last attempt; `stored`: the store took it, if asked to.
fn final_outcome(job: &Job, last: &AttemptResult, stored: bool) -> FinalOutcome {
    match last.outcome {
        Outcome::Delivered => FinalOutcome::Delivered,
        Outcome::Violation => FinalOutcome::Violation,
        _ if job.rule.exception_store && stored => FinalOutcome::Stored,
        _ => FinalOutcome::Dropped,
    }
}

/// Logs the end of a ban when it comes (unless a later ban replaced it).
pub fn spawn_unban_log(app: AppId, rule: RuleName, start: BanStart, clock: SharedClock) {
    tokio::spawn(async move {
        let wait = start.until_ms.saturating_sub(clock.now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        tracing::warn!(app = %app, rule = %rule, level = start.level, until = %rfc3339(start.until_ms), "rule unbanned");
    });
}

/// Unix ms as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod size_tests {
    /// Prints the sizes of the futures every delivery moves around (run with --nocapture).
    #[test]
    fn delivery_futures_stay_small() {
        fn size<F: std::future::Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let client = super::http::build_client(1, &Default::default()).unwrap();
        let mut conn = client.conn();
        let uri: http::Uri = "http://127.0.0.1:1/".parse().unwrap();
        let limits = super::AttemptLimits {
            timeout: std::time::Duration::from_secs(1),
            max_chars: 10,
            keep_body: false,
        };
        let body = bytes::Bytes::new();
        let f = super::http::attempt_on(&mut conn, (&uri).into(), &body, limits);
        let n = size(&f);
        drop(f);
        eprintln!("attempt_on: {n} bytes");
        assert!(n < 2048, "attempt_on's future is {n} bytes");
    }
}
