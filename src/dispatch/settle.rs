//! The end of a callback: its final outcome (docs/behaviour.md §5), the durable store write of
//! what was not delivered, the counters, the log line, and the report to whoever waits.

use serde::Serialize;

use super::policy::not_attempted;
use super::{Job, Shared};
use crate::domain::{EventType, FinalOutcome, Outcome, RuleKind, RuleName};
use crate::history::Entry;
use crate::store::StoredCallback;
use crate::transport::AttemptResult;

/// What happened to one callback (the `callbacks` list of a `?wait=true` answer,
/// docs/behaviour.md §8.3).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CallbackReport {
    /// The rule's name.
    pub rule: RuleName,
    /// `post_send` or `pre_send`.
    pub kind: RuleKind,
    /// `callId`.
    #[serde(rename = "callId")]
    pub call_id: String,
    /// `eventType`: `chat`, `chat_offline`, `user_status`, `group_member_joined`.
    #[serde(rename = "eventType")]
    pub event_type: EventType,
    /// The callback's recipient: the offline member for `chat_offline`, the user or group for events.
    pub to: String,
    /// The final outcome.
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

/// Queued callbacks stored per write when the simulator stops.
const SHUTDOWN_BATCH: usize = 4096;

impl Shared {
    /// Ends jobs that were never started as `shutdown`, stored in batches (one flush each).
    pub(super) async fn settle_not_attempted(&self, jobs: Vec<Job>) {
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
            for (job, _, _) in &chunk {
                self.dequeued(job);
            }
            self.settle(chunk).await;
        }
    }

    /// Ends jobs whose rule's lane was full as `overflow`: stored at once, not attempted
    /// (docs/behaviour.md §3).
    pub(super) async fn settle_overflow(&self, jobs: Vec<Job>) {
        let why = "not attempted: the rule's lane was full (delivery.rule_queue_capacity)";
        let done = jobs
            .into_iter()
            .map(|job| (job, not_attempted(Outcome::Overflow, why), 0))
            .collect();
        self.settle(done).await;
    }

    /// Decides each callback's final outcome — storing the undelivered ones in one durable
    /// write — then counts, logs and reports them.
    pub(super) async fn settle(&self, done: Vec<(Job, AttemptResult, u32)>) {
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
                url: job.rule.config.url.expose().to_string(),
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
        // A failed write is logged by the store (once a minute at most) and said in each
        // dropped callback's warnings (docs/behaviour.md §7).
        let failed = match to_store.is_empty() {
            true => None,
            false => self.store.put(to_store).await.err(),
        };
        if failed.is_none()
            && let Some(history) = self.history.get()
        {
            // The console's store view (docs/behaviour.md §12): one note per app.
            let mut told: Vec<&crate::domain::AppId> = Vec::new();
            for (job, last, _) in &done {
                let app = &job.rule.app;
                if !last.outcome.is_delivered() && job.rule.exception_store && !told.contains(&app) {
                    history.of(&job.rule).store_changed();
                    told.push(app);
                }
            }
        }
        for (job, last, attempts) in done {
            let outcome = final_outcome(&job, &last, failed.is_none());
            let warnings = match (&failed, job.rule.exception_store && outcome == FinalOutcome::Dropped) {
                (Some(e), true) => vec![format!("not stored, dropped: {e}")],
                _ => Vec::new(),
            };
            self.report_with(job, last, attempts, outcome, warnings);
        }
    }

    /// Counts, logs and reports one callback's end, and keeps it in the history.
    pub(super) fn report(&self, job: Job, last: AttemptResult, attempts: u32, outcome: FinalOutcome) {
        self.report_with(job, last, attempts, outcome, Vec::new());
    }

    /// [`report`](Self::report) with `warnings` for the report.
    fn report_with(
        &self,
        mut job: Job,
        last: AttemptResult,
        attempts: u32,
        outcome: FinalOutcome,
        warnings: Vec<String>,
    ) {
        let rule = &job.rule;
        if let Some(key) = job.pending {
            // Final: durable accept forgets it (docs/behaviour.md §7).
            self.store.pending().remove(key);
        }
        if matches!(last.outcome, Outcome::Shutdown | Outcome::Banned | Outcome::Overflow) {
            rule.stats.count_outcome(last.outcome);
        }
        rule.stats.count_final(outcome);
        let latency = job.accepted_at.elapsed();
        if let Some(observe) = self.observer.get() {
            observe(job.event_type, outcome, last.outcome, latency);
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
            latency_ms,
            detail = last.detail.as_deref(),
            "callback"
        );
        // The app's history, when it keeps callbacks (docs/behaviour.md §12).
        let keeper = self.history.get().map(|h| h.of(rule)).filter(|h| h.keeps());
        if let Some(done) = job.done.take() {
            let (call_id, to) = match keeper {
                Some(_) => (job.call_id.to_string(), job.to.to_string()),
                None => (
                    std::mem::take(&mut job.call_id).into(),
                    std::mem::take(&mut job.to).into(),
                ),
            };
            let _ = done.send(CallbackReport {
                rule: rule.config.name.clone(),
                kind: RuleKind::PostSend,
                call_id,
                event_type: job.event_type,
                to,
                outcome,
                last_attempt: last.outcome,
                attempts,
                status: last.status,
                warnings,
                latency_ms,
            });
        }
        if let Some(app) = keeper {
            let now = self.clock.now_ms();
            app.record(Entry {
                created_at_ms: now.saturating_sub(latency.as_millis() as u64),
                latency_ms,
                outcome,
                last_attempt: last.outcome,
                attempts: std::mem::take(&mut job.trail.attempts),
                sent_query: job.trail.sent_query.take(),
                rule: job.rule,
                call_id: job.call_id,
                event_type: job.event_type,
                to: job.to,
                body: job.body,
                query: job.query,
                target: None,
                resend: false,
            });
        }
    }
}

/// A callback's final outcome from its last attempt; `stored`: the store took it, if asked to.
pub(super) fn final_outcome(job: &Job, last: &AttemptResult, stored: bool) -> FinalOutcome {
    match last.outcome {
        Outcome::Delivered => FinalOutcome::Delivered,
        Outcome::Violation => FinalOutcome::Violation,
        _ if job.rule.exception_store && stored => FinalOutcome::Stored,
        _ => FinalOutcome::Dropped,
    }
}
