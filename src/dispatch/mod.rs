//! Delivery: the bounded queue, the bounded number in flight, and one callback's attempts.
//!
//! Ingestion puts [`Job`]s on their rules' lanes, all of a message's callbacks or none
//! ([`Dispatcher::enqueue`] answers [`EnqueueError::Full`] past `queue_capacity` and the API
//! says 429). Each lane is bounded too (`rule_queue_capacity`): a job whose lane is full is not
//! queued but stored at once as `overflow` (docs/behaviour.md §3), so that a hanging receiver
//! never fills the queue the other rules need. The dispatcher owns a lane per post-send rule,
//! and each rule has its share of `concurrency` as long-lived workers (docs/behaviour.md §6: a
//! broken receiver holds only its own rule's share); a worker takes the next job of its lane
//! and delivers it on its own keep-alive connection: attempts under the policy (`policy`: one
//! immediate retry by default), each classified as an outcome (docs/behaviour.md §5), then the
//! final outcome, counters, one log line and the report to whoever waits for it (`settle`).
//!
//! Attempts outside the lanes — replays and pre-send calls — go through an [`Attempter`]: they
//! are cut short by the same stop, and the stop waits for them.
//!
//! Stopping ([`Dispatcher::shutdown`]) stops the intake and the workers, finishes every queued
//! job as `shutdown`, lets deliveries, replays and pre-send calls in flight run for one grace
//! period and then cuts every attempt still running short as `shutdown` (docs/behaviour.md §9).

mod policy;
mod settle;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

pub use self::policy::{PolicyAttempt, Via, spawn_unban_log};
pub use self::settle::CallbackReport;
use self::settle::final_outcome;
use crate::clock::SharedClock;
use crate::config::DeliveryConfig;
use crate::domain::{EventType, FinalOutcome, Outcome};
use crate::history::{History, Trail};
use crate::runtime::RuleRuntime;
use crate::store::{Commit, PendingRef, Store};
use crate::transport::{self, AttemptResult, Target};

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
    /// Its attempts, for the history (docs/behaviour.md §12); filled only while it keeps
    /// callbacks.
    pub trail: Trail,
    /// Its key among the accepted callbacks on disk (durable accept): removed when it ends.
    pub pending: Option<u64>,
}

impl Job {
    /// What durable accept writes of it.
    fn pending_ref(&self) -> PendingRef<'_> {
        PendingRef {
            app: self.rule.app.as_str(),
            rule: self.rule.config.name.as_str(),
            url: self.rule.config.url.expose(),
            call_id: &self.call_id,
            event_type: self.event_type,
            to: &self.to,
            body: &self.body,
            query: self.query.as_deref(),
        }
    }
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
    /// `rule_queue_capacity`: the bound of each lane.
    lane_capacity: usize,
    /// `durable`: accepted callbacks are written to disk before the answer.
    durable: bool,
    /// Deliveries running now.
    in_flight: AtomicUsize,
    /// Calls of `enqueue` (and replays being started) under way: stopping waits for them, so
    /// that none adds a job after the lanes were emptied, nor starts a replay it does not wait for.
    enqueuing: AtomicUsize,
    rules: Vec<Arc<RuleRuntime>>,
    /// The post-send rules' lanes, by [`RuleRuntime::index`] (`None` for pre-send rules).
    lanes: Vec<Option<Lane>>,
    max_chars: usize,
    stop_intake: Signal,
    /// Cuts attempts in flight short (after the grace period of a stop). Each worker waits on
    /// a child of its own, so that no two workers share a waiter list.
    abort: CancellationToken,
    /// Stops the watchers of the lanes' idle connections (when the lanes close).
    idle_watch: CancellationToken,
    /// The delivery workers.
    tracker: TaskTracker,
    /// Replays and pre-send calls: attempts outside the lanes that a stop waits for.
    outside: TaskTracker,
    store: Store,
    clock: SharedClock,
    observer: std::sync::OnceLock<Observer>,
    /// Where finished callbacks are kept for the console (docs/behaviour.md §12).
    history: std::sync::OnceLock<Arc<History>>,
}

/// Called once per finished post-send callback with its event type, its final outcome, its
/// last attempt's outcome and the time from acceptance: how the generator watches the pipeline.
pub type Observer = Box<dyn Fn(EventType, FinalOutcome, Outcome, Duration) + Send + Sync>;

/// A rule's share of the dispatcher: the jobs waiting for one of its workers, and its idle
/// keep-alive connections.
#[derive(Debug)]
struct Lane {
    tx: async_channel::Sender<Job>,
    rx: async_channel::Receiver<Job>,
    /// Jobs accepted for this lane and not yet started: at most `rule_queue_capacity`.
    queued: AtomicUsize,
    idle: transport::IdleConns,
}

impl Default for Lane {
    fn default() -> Self {
        let (tx, rx) = async_channel::unbounded();
        Self {
            tx,
            rx,
            queued: AtomicUsize::new(0),
            idle: transport::IdleConns::default(),
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
        self.shared.close_lanes();
    }
}

impl Dispatcher {
    /// Starts the workers on the current runtime, for these post-send rules: `concurrency`
    /// shared fairly among the rules (at least one each). `rule_count` is the number of rules
    /// of the simulator, both kinds ([`RuleRuntime::index`] is below it).
    pub fn start(
        delivery: &DeliveryConfig,
        rules: Vec<Arc<RuleRuntime>>,
        rule_count: usize,
        store: Store,
        clock: SharedClock,
    ) -> Self {
        let per_rule = (delivery.concurrency / rules.len().max(1)).max(1);
        let mut lanes: Vec<Option<Lane>> = std::iter::repeat_with(|| None).take(rule_count).collect();
        for rule in &rules {
            lanes[rule.index] = Some(Lane::default());
        }
        let shared = Arc::new(Shared {
            permits: (per_rule * rules.len() > delivery.concurrency).then(|| Semaphore::new(delivery.concurrency)),
            queued: AtomicUsize::new(0),
            capacity: delivery.queue_capacity,
            lane_capacity: delivery.rule_queue_capacity,
            durable: delivery.durable,
            in_flight: AtomicUsize::new(0),
            enqueuing: AtomicUsize::new(0),
            rules,
            lanes,
            max_chars: delivery.max_response_chars,
            stop_intake: Signal::default(),
            abort: CancellationToken::new(),
            idle_watch: CancellationToken::new(),
            tracker: TaskTracker::new(),
            outside: TaskTracker::new(),
            store,
            clock,
            observer: std::sync::OnceLock::new(),
            history: std::sync::OnceLock::new(),
        });
        for rule in &shared.rules {
            for _ in 0..per_rule {
                shared.tracker.spawn(work(shared.clone(), rule.clone()));
            }
            // Idle connections the receiver closes are dropped while idle (docs/behaviour.md §4).
            let (shared, rule) = (shared.clone(), rule.clone());
            tokio::spawn(async move {
                let stop = shared.idle_watch.clone();
                shared.lane(&rule).idle.watch(stop).await;
            });
        }
        Self { shared }
    }

    /// Queues all `jobs` or none of them. A job whose rule's lane is full is not queued: it
    /// ends at once as `overflow`, stored (docs/behaviour.md §3), and needs no room in the queue.
    /// With durable accept, the answer is the commit to wait for before saying the jobs were
    /// accepted: they are on disk once it resolves (docs/behaviour.md §7); delivery does not
    /// wait for it.
    pub fn enqueue(&self, jobs: Vec<Job>) -> Result<Option<Commit>, EnqueueError> {
        if jobs.is_empty() {
            return Ok(None);
        }
        let s = &self.shared;
        s.enqueuing.fetch_add(1, Ordering::SeqCst);
        let r = s.enqueue(jobs).map(|Queued { lost, overflow, commit }| {
            if !lost.is_empty() {
                // Cannot happen (lanes close only once no `enqueue` runs); if it did, the jobs
                // still end, as `shutdown`, rather than vanish.
                let shared = s.clone();
                s.outside.spawn(async move { shared.settle_not_attempted(lost).await });
            }
            if !overflow.is_empty() {
                // Tracked before `enqueuing` drops: a stop waits for the store write.
                let shared = s.clone();
                s.outside.spawn(async move { shared.settle_overflow(overflow).await });
            }
            commit
        });
        s.enqueuing.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// Queues again the callbacks a previous run accepted and did not finish (already on disk,
    /// with their keys), before any new traffic: they take their lanes whatever the bounds.
    pub fn requeue(&self, jobs: Vec<Job>) {
        let s = &self.shared;
        for job in jobs {
            s.queued.fetch_add(1, Ordering::AcqRel);
            let lane = s.lane(&job.rule);
            lane.queued.fetch_add(1, Ordering::AcqRel);
            // The lanes are open: the simulator is being built.
            let _ = lane.tx.try_send(job);
        }
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

    /// Policy-driven attempts for callbacks that do not go through a lane (replays), cut
    /// short by the same stop as the workers'.
    pub fn attempter(&self) -> Attempter {
        Attempter(self.shared.clone())
    }

    /// Installs the observer (once; later calls are ignored).
    pub fn observe(&self, observer: Observer) {
        let _ = self.shared.observer.set(observer);
    }

    /// Keeps every finished callback in `history` from now on (once; later calls are ignored).
    pub fn record_into(&self, history: Arc<History>) {
        let _ = self.shared.history.set(history);
    }

    /// The exception store.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Stops taking jobs, finishes the queued ones as `shutdown`, waits up to `grace` for the
    /// deliveries, replays and pre-send calls in flight and cuts their attempts short after
    /// it. Every job ends with a final outcome; every replay has made its store changes.
    pub async fn shutdown(&self, grace: Duration) {
        let s = &self.shared;
        s.stop_intake.fire();
        // An `enqueue` that saw the intake open finishes adding its jobs first (and a replay
        // that saw it open is tracked before the wait below).
        while s.enqueuing.load(Ordering::SeqCst) != 0 {
            tokio::task::yield_now().await;
        }
        // Idle workers wake up and leave; busy ones leave after their delivery.
        s.close_lanes();
        s.tracker.close();
        s.outside.close();
        let all_done = || async { tokio::join!(s.tracker.wait(), s.outside.wait()) };
        if tokio::time::timeout(grace, all_done()).await.is_err() {
            tracing::warn!(
                in_flight = self.in_flight(),
                replays_and_pre_send = s.outside.len(),
                "attempts still running after the grace period; stopping them as shutdown"
            );
            s.abort.cancel();
            all_done().await;
        }
        // An attempt that starts from now on (a pre-send call that passed its check just as
        // the stop began) ends at once.
        s.abort.cancel();
        // The jobs still waiting in the lanes end as `shutdown`.
        let left: Vec<Job> = s
            .lanes
            .iter()
            .flatten()
            .flat_map(|lane| std::iter::from_fn(|| lane.rx.try_recv().ok()))
            .collect();
        s.settle_not_attempted(left).await;
    }
}

/// Attempts `body` under a policy, outside the lanes: see [`Dispatcher::attempter`].
#[derive(Clone)]
pub struct Attempter(Arc<Shared>);

impl std::fmt::Debug for Attempter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attempter")
    }
}

impl Attempter {
    /// Attempts `body` under `policy`: up to `1 + retries` attempts, stopping at the first
    /// delivery. With `rule`, attempts are counted in its stats; with `obey_ban` too, a banned
    /// rule is not attempted and every failure feeds its ban window.
    pub async fn attempt_policy(&self, a: PolicyAttempt<'_>) -> (AttemptResult, u32) {
        self.0.attempt_policy(a, &self.0.abort).await
    }

    /// One attempt through `client`'s pool (a pre-send call): `shutdown` when a stop cuts it
    /// short. Hold a [`track`](Self::track) token meanwhile, so that the stop waits for it.
    pub async fn attempt(
        &self,
        client: &transport::Client,
        to: Target<'_>,
        body: Bytes,
        limits: transport::AttemptLimits,
    ) -> AttemptResult {
        tokio::select! {
            biased;
            r = transport::attempt(client, to, body, limits) => r,
            _ = self.0.abort.cancelled() => {
                policy::not_attempted(Outcome::Shutdown, "attempt cut short: the simulator is stopping")
            }
        }
    }

    /// The time now, from the simulator's clock (signing a request's query).
    pub fn now_ms(&self) -> u64 {
        self.0.clock.now_ms()
    }

    /// While the token lives, a stop waits for its holder (up to the grace period, after
    /// which its attempts are cut short).
    pub fn track(&self) -> TaskTrackerToken {
        self.0.outside.token()
    }

    /// Runs `task` (a replay) on its own, to its end whatever happens to whoever awaits the
    /// handle; a stop waits for it. `None` once the simulator is stopping.
    pub fn spawn<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<T>> {
        let s = &self.0;
        s.enqueuing.fetch_add(1, Ordering::SeqCst);
        let handle = (!s.stop_intake.is_set()).then(|| s.outside.spawn(task));
        s.enqueuing.fetch_sub(1, Ordering::SeqCst);
        handle
    }

    /// True once the simulator is stopping: replays take no new callback from their bucket.
    pub fn is_stopping(&self) -> bool {
        self.0.stop_intake.is_set()
    }
}

impl Shared {
    /// The lane of a post-send rule.
    fn lane(&self, rule: &RuleRuntime) -> &Lane {
        self.lanes[rule.index].as_ref().expect("post-send rules have a lane")
    }

    /// Closes every lane: workers leave once theirs is empty, and no job can be added.
    fn close_lanes(&self) {
        for lane in self.lanes.iter().flatten() {
            lane.tx.close();
        }
        self.idle_watch.cancel();
    }

    /// Queues `jobs` on their lanes; answers the ones a lane did not take, and the ones whose
    /// lane was full (overflow).
    fn enqueue(&self, jobs: Vec<Job>) -> Result<Queued, EnqueueError> {
        if self.stop_intake.is_set() {
            return Err(EnqueueError::ShuttingDown);
        }
        // Room in each job's lane first: what does not fit there needs no room in the queue.
        let (mut fit, mut overflow) = (Vec::with_capacity(jobs.len()), Vec::new());
        for job in jobs {
            let lane = &self.lane(&job.rule).queued;
            let cap = self.lane_capacity;
            match lane.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| (q < cap).then_some(q + 1)) {
                Ok(_) => fit.push(job),
                Err(_) => overflow.push(job),
            }
        }
        let n = fit.len();
        let cap = self.capacity;
        if n > 0
            && self
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| (q + n <= cap).then_some(q + n))
                .is_err()
        {
            for job in &fit {
                self.lane(&job.rule).queued.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(EnqueueError::Full);
        }
        // Accepted: on disk (in a group with the other requests' callbacks) before the answer,
        // overflowed ones included, until each reaches its final outcome.
        let commit = self.durable.then(|| {
            let refs: Vec<PendingRef<'_>> = fit.iter().chain(&overflow).map(Job::pending_ref).collect();
            let (keys, commit) = self.store.pending().insert(refs);
            for (job, key) in fit.iter_mut().chain(overflow.iter_mut()).zip(keys) {
                job.pending = Some(key);
            }
            commit
        });
        let mut lost = Vec::new();
        for job in fit {
            // Unbounded, and closed only once no `enqueue` runs.
            if let Err(e) = self.lane(&job.rule).tx.try_send(job) {
                lost.push(e.into_inner());
            }
        }
        Ok(Queued { lost, overflow, commit })
    }

    /// A job leaves the queue (started, or ended without an attempt).
    fn dequeued(&self, job: &Job) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.lane(&job.rule).queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`Shared::enqueue`] did with a message's jobs besides queueing them.
struct Queued {
    /// Jobs a closed lane did not take (cannot happen).
    lost: Vec<Job>,
    /// Jobs whose lane was full: they end as `overflow`.
    overflow: Vec<Job>,
    /// With durable accept: resolves once every job is on disk.
    commit: Option<Commit>,
}

/// One of a rule's workers: takes the next job of the rule's lane and delivers it on the
/// rule's most recently used idle connection (or a new one), until the simulator stops.
async fn work(shared: Arc<Shared>, rule: Arc<RuleRuntime>) {
    let lane = shared.lane(&rule).rx.clone();
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
        shared.dequeued(&job);
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

impl Shared {
    /// Delivers `job` on one of its rule's idle connections (or a new one), which goes back
    /// among them before the outcome is reported: whoever hears of it and sends the next
    /// callback finds the connection idle again.
    async fn deliver(&self, mut job: Job, conn: &mut transport::Conn, abort: &CancellationToken) {
        let rule = &job.rule;
        let keeps = self.history.get().is_some_and(|h| h.of(rule).keeps());
        if keeps {
            job.trail.attempts.reserve_exact(1 + rule.policy.retries as usize);
        }
        let url = &rule.config.url;
        // A tencent callback's URI, query included (signed now, for an app with a token), is
        // built once for all its attempts.
        let query = rule.wire.sign_query(job.query.as_deref(), self.clock.now_ms());
        if keeps && let Some(std::borrow::Cow::Owned(signed)) = &query {
            job.trail.sent_query = Some(signed.as_str().into());
        }
        let with_query = query.as_deref().map(|q| url.uri_with_query(Some(q)));
        let idle = &self.lane(rule).idle;
        conn.check_out(idle);
        let (last, attempts) = self
            .attempt_policy(
                PolicyAttempt {
                    wire: &*rule.wire,
                    via: Via::Conn(conn),
                    to: Target::new(url, with_query.as_ref()),
                    body: &job.body,
                    policy: rule.policy,
                    rule: Some(rule),
                    obey_ban: true,
                    trail: keeps.then_some(&mut job.trail.attempts),
                },
                abort,
            )
            .await;
        conn.check_in(idle);
        if last.outcome.is_delivered() || !rule.exception_store {
            // Nothing to store: no batch to build.
            let outcome = final_outcome(&job, &last, false);
            self.report(job, last, attempts, outcome);
        } else {
            self.settle(vec![(job, last, attempts)]).await;
        }
    }
}

#[cfg(test)]
mod size_tests {
    /// Prints the sizes of the futures every delivery moves around (run with --nocapture).
    #[test]
    fn delivery_futures_stay_small() {
        fn size<F: std::future::Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let client = crate::transport::build_client(1, &Default::default()).unwrap();
        let mut conn = client.conn();
        let uri: http::Uri = "http://127.0.0.1:1/".parse().unwrap();
        let limits = crate::transport::AttemptLimits {
            timeout: std::time::Duration::from_secs(1),
            max_chars: 10,
            keep_body: false,
        };
        let body = bytes::Bytes::new();
        let f = crate::transport::attempt_on(&mut conn, (&uri).into(), &body, limits);
        let n = size(&f);
        drop(f);
        eprintln!("attempt_on: {n} bytes");
        assert!(n < 2048, "attempt_on's future is {n} bytes");
    }
}
