//! Delivery: the bounded queue, the bounded number in flight, and one callback's attempts.
//!
//! Ingestion puts [`Job`]s on a queue of `queue_capacity` (all of a message's callbacks or
//! none: [`Dispatcher::enqueue`] answers [`EnqueueError::Full`] and the API says 429). One loop
//! takes a permit of `concurrency`, then a job, and spawns its delivery: attempts under the
//! policy (one immediate retry by default), each classified as a SPEC §5 outcome, then the
//! final outcome, counters, one log line and the report to whoever waits for it.
//!
//! Stopping ([`Dispatcher::shutdown`]) ends the loop, finishes every queued job as `shutdown`,
//! lets deliveries in flight run for a grace period and then cuts them short as `shutdown`.

pub mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{EventType, FinalOutcome, Outcome, RuleKind, RuleName};
use crate::runtime::RuleRuntime;
use http::{AttemptLimits, AttemptResult, attempt};

/// One callback waiting to be delivered.
#[derive(Debug)]
pub struct Job {
    pub rule: Arc<RuleRuntime>,
    pub call_id: Box<str>,
    pub event_type: EventType,
    /// The callback's recipient (`to`), for reports.
    pub to: Box<str>,
    /// The exact bytes to send, on every attempt and replay.
    pub body: Bytes,
    /// Whoever waits for this callback's final outcome (`?wait=true`, the library).
    pub done: Option<oneshot::Sender<CallbackReport>>,
    pub accepted_at: Instant,
}

/// What happened to one callback (SPEC §8.3 `?wait=true` list).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallbackReport {
    pub rule: RuleName,
    pub kind: RuleKind,
    #[serde(rename = "callId")]
    pub call_id: String,
    #[serde(rename = "eventType")]
    pub event_type: EventType,
    pub to: String,
    /// The final outcome (SPEC §5).
    pub outcome: FinalOutcome,
    /// The last attempt's outcome (`banned`/`shutdown` when not attempted).
    pub last_attempt: Outcome,
    pub attempts: u32,
    /// The last HTTP status, if a response arrived.
    pub status: Option<u16>,
    pub warnings: Vec<String>,
    /// From acceptance to the final outcome.
    pub latency_ms: f64,
}

/// Why callbacks could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    #[error("the delivery queue is full")]
    Full,
    #[error("the simulator is shutting down")]
    ShuttingDown,
}

struct Shared {
    permits: Arc<Semaphore>,
    max_chars: usize,
    stop_intake: CancellationToken,
    abort: CancellationToken,
    tracker: TaskTracker,
}

/// The queue and its workers.
pub struct Dispatcher {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("queued", &self.queued())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Dispatcher {
    /// Starts the dispatch loop on the current runtime.
    pub fn start(concurrency: usize, queue_capacity: usize, max_response_chars: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue_capacity);
        let shared = Arc::new(Shared {
            permits: Arc::new(Semaphore::new(concurrency)),
            max_chars: max_response_chars,
            stop_intake: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let worker = tokio::spawn(run(rx, shared.clone()));
        Self {
            tx,
            shared,
            worker: Mutex::new(Some(worker)),
        }
    }

    /// Queues all `jobs` or none of them.
    pub fn enqueue(&self, jobs: Vec<Job>) -> Result<(), EnqueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        if self.shared.stop_intake.is_cancelled() {
            return Err(EnqueueError::ShuttingDown);
        }
        match self.tx.try_reserve_many(jobs.len()) {
            Ok(permits) => {
                for (permit, job) in permits.zip(jobs) {
                    permit.send(job);
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => Err(EnqueueError::Full),
            Err(mpsc::error::TrySendError::Closed(())) => Err(EnqueueError::ShuttingDown),
        }
    }

    /// Callbacks accepted and not yet picked up.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Deliveries running now.
    pub fn in_flight(&self) -> usize {
        self.shared.tracker.len()
    }

    /// True once [`shutdown`](Self::shutdown) has begun.
    pub fn is_stopping(&self) -> bool {
        self.shared.stop_intake.is_cancelled()
    }

    /// Stops taking jobs, finishes the queued ones as `shutdown`, waits up to `grace` for the
    /// deliveries in flight and cuts the rest short. Every job ends with a final outcome.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.stop_intake.cancel();
        if let Some(worker) = self.worker.lock().await.take()
            && let Err(e) = worker.await
        {
            tracing::error!(error = %e, "dispatch loop failed");
        }
        self.shared.tracker.close();
        if tokio::time::timeout(grace, self.shared.tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = self.in_flight(),
                "deliveries still running after the grace period; stopping them as shutdown"
            );
            self.shared.abort.cancel();
            self.shared.tracker.wait().await;
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Job>, shared: Arc<Shared>) {
    loop {
        let permit = tokio::select! {
            biased;
            _ = shared.stop_intake.cancelled() => break,
            p = shared.permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let job = tokio::select! {
            biased;
            _ = shared.stop_intake.cancelled() => break,
            j = rx.recv() => j,
        };
        let Some(job) = job else { break };
        let s = shared.clone();
        shared.tracker.spawn(async move {
            s.deliver(job).await;
            drop(permit);
        });
    }
    // Nothing more can be queued once the receiver is closed; what is left ends as `shutdown`.
    rx.close();
    while let Some(job) = rx.recv().await {
        let last = AttemptResult {
            outcome: Outcome::Shutdown,
            status: None,
            body: None,
            detail: Some("not attempted: the simulator is stopping".into()),
        };
        shared.finish(job, last, 0).await;
    }
}

impl Shared {
    async fn deliver(&self, job: Job) {
        let rule = job.rule.clone();
        let url = rule.config.url.as_url();
        let limits = AttemptLimits {
            timeout: rule.policy.timeout,
            max_chars: self.max_chars,
            keep_body: false,
        };
        let mut attempts = 0;
        let last = loop {
            attempts += 1;
            let r = tokio::select! {
                biased;
                _ = self.abort.cancelled() => AttemptResult {
                    outcome: Outcome::Shutdown,
                    status: None,
                    body: None,
                    detail: Some("attempt cut short: the simulator is stopping".into()),
                },
                r = attempt(&rule.client, url, job.body.clone(), limits) => r,
            };
            if r.outcome == Outcome::Shutdown {
                break r;
            }
            rule.stats.count_outcome(r.outcome);
            if r.outcome.is_delivered() || attempts > rule.policy.retries {
                break r;
            }
            tracing::debug!(app = %rule.app, rule = %rule.config.name, call_id = %job.call_id,
                outcome = %r.outcome, "attempt failed, retrying at once");
        };
        self.finish(job, last, attempts).await;
    }

    /// Decides the final outcome, counts it, logs it and reports it.
    async fn finish(&self, job: Job, last: AttemptResult, attempts: u32) {
        let rule = &job.rule;
        if matches!(last.outcome, Outcome::Shutdown | Outcome::Banned) {
            rule.stats.count_outcome(last.outcome);
        }
        let outcome = match last.outcome {
            Outcome::Delivered => FinalOutcome::Delivered,
            Outcome::Violation => FinalOutcome::Violation,
            // The exception store arrives with the store issue; until then nothing is kept.
            _ => FinalOutcome::Dropped,
        };
        rule.stats.count_final(outcome);
        let latency_ms = (job.accepted_at.elapsed().as_secs_f64() * 1e6).round() / 1e3;
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
