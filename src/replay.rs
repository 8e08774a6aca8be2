//! Replaying a bucket of the exception store (SPEC §8.2): the same bytes, the normal
//! delivery policy, to `targetUrl` or the rule's own URL.
//!
//! The bucket is streamed from sled, `delivery.concurrency` callbacks at a time. A delivered
//! callback leaves the store; one that fails again moves to (`date`, `retry + 1`). Replays to
//! the rule's own URL obey and feed its ban; replays to a `targetUrl` do neither.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::dispatch::http::Target;
use crate::dispatch::{AnswerCheck, PolicyAttempt, Via};
use crate::domain::{CallbackUrl, DateKey};
use crate::runtime::AppRuntime;
use crate::sim::Simulator;
use crate::store::{Bucket, ItemKey, StoreError, StoredCallback};

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct ReplayOutcome {
    /// Callbacks delivered (and removed from the store); `delivered` in the storage/retry answer.
    pub delivered: u64,
    /// Callbacks that failed again (and moved to `retry + 1`); `failed` in the answer.
    pub failed: u64,
}

/// Why a replay did not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The bucket holds nothing (400).
    #[error("bucket date={date} retry={retry} is empty or does not exist; GET storage/info lists the buckets")]
    NoSuchBucket {
        /// The bucket's 10-minute date key.
        date: DateKey,
        /// The bucket's retry count.
        retry: u32,
    },
    /// A replay of the same bucket is running (409).
    #[error("bucket date={date} retry={retry} is already being replayed")]
    Busy {
        /// The bucket's 10-minute date key.
        date: DateKey,
        /// The bucket's retry count.
        retry: u32,
    },
    /// The store failed to read or write.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Replays bucket (`date`, `retry`) of `app`; returns when every callback has an outcome.
/// Each callback is its own task (so replays use every core), at most `delivery.concurrency`
/// at once, while the bucket is read lazily from the store.
pub async fn replay(
    sim: Arc<Simulator>,
    app: Arc<AppRuntime>,
    date: DateKey,
    retry: u32,
    target: Option<CallbackUrl>,
) -> Result<ReplayOutcome, ReplayError> {
    let bucket = Bucket {
        app: app.config.id.clone(),
        date,
        retry,
    };
    let _lock = sim
        .store()
        .begin_replay(&bucket)
        .ok_or(ReplayError::Busy { date, retry })?;
    let store = sim.store().clone();
    if store.bucket_size(&bucket) == 0 {
        return Err(ReplayError::NoSuchBucket { date, retry });
    }
    tracing::info!(app = %app.config.id, %date, retry, target = target.as_ref().map(|t| t.to_string()), "replay started");
    let permits = Arc::new(Semaphore::new(sim.config.delivery.concurrency));
    let target = target.map(Arc::new);
    let mut tasks = JoinSet::new();
    let mut out = ReplayOutcome::default();
    let mut tally = |r: Result<Result<bool, StoreError>, tokio::task::JoinError>| -> Result<(), ReplayError> {
        match r {
            Ok(Ok(true)) => out.delivered += 1,
            Ok(Ok(false)) => out.failed += 1,
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => {
                tracing::error!(error = %e, "replay task failed");
                out.failed += 1;
            }
        }
        Ok(())
    };
    for entry in store.scan(&bucket) {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        while let Some(done) = tasks.try_join_next() {
            tally(done)?;
        }
        let (key, item) = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "replay: unreadable stored callback left in place");
                tally(Ok(Ok(false)))?;
                continue;
            }
        };
        let (sim, app, target) = (sim.clone(), app.clone(), target.clone());
        tasks.spawn(async move {
            let r = replay_one(&sim, &app, target.as_deref(), key, item, retry).await;
            drop(permit);
            r
        });
    }
    while let Some(done) = tasks.join_next().await {
        tally(done)?;
    }
    store.flush().await?;
    let result = if out.failed == 0 { "success" } else { "failure" };
    sim.metrics
        .counter(
            "callback_sim_replays_total",
            &[("app", app.config.id.as_str()), ("result", result)],
        )
        .increment(1);
    sim.metrics
        .counter(
            "callback_sim_replayed_callbacks_total",
            &[("app", app.config.id.as_str()), ("outcome", "delivered")],
        )
        .increment(out.delivered);
    sim.metrics
        .counter(
            "callback_sim_replayed_callbacks_total",
            &[("app", app.config.id.as_str()), ("outcome", "failed")],
        )
        .increment(out.failed);
    tracing::info!(app = %app.config.id, %date, retry, delivered = out.delivered, failed = out.failed, "replay finished");
    Ok(out)
}

/// Re-sends one stored callback; true when delivered (and removed from the store).
async fn replay_one(
    sim: &Simulator,
    app: &AppRuntime,
    target: Option<&CallbackUrl>,
    key: ItemKey,
    mut item: StoredCallback,
    retry: u32,
) -> Result<bool, StoreError> {
    let store = sim.store();
    let rule = app.rule(&item.rule);
    let stored_url;
    let (base, obey_ban) = match (target, rule) {
        (Some(t), _) => (t, false),
        (None, Some(r)) => (&r.config.url, true),
        (None, None) => match CallbackUrl::parse(&item.url) {
            Ok(u) => {
                stored_url = u;
                (&stored_url, false)
            }
            Err(_) => return Ok(false),
        },
    };
    let uri = base.uri_with_query(item.query.as_deref());
    let client = rule.map(|r| &r.client).unwrap_or(&sim.apps.default_client);
    let body = Bytes::from(std::mem::take(&mut item.body));
    let (last, attempts) = sim
        .dispatcher
        .attempt_policy(PolicyAttempt {
            check: AnswerCheck::for_dialect(app.config.dialect),
            via: Via::Pool(client),
            to: Target::new(base, Some(&uri)),
            body: &body,
            policy: app.config.policy,
            rule: rule.map(|r| r.as_ref()),
            obey_ban,
        })
        .await;
    let delivered = last.outcome.is_delivered();
    tracing::info!(app = %app.config.id, rule = %item.rule, call_id = %item.call_id, replay = true,
        outcome = if delivered { "delivered" } else { "stored" }, last_attempt = %last.outcome, attempts,
        status = last.status, detail = last.detail.as_deref(), "callback");
    if delivered {
        store.delete(key).await?;
    } else {
        item.body = String::from_utf8(body.to_vec()).expect("stored bodies are UTF-8");
        item.outcome = last.outcome;
        item.attempts = attempts;
        item.status = last.status;
        store.move_to_retry(key, item, retry + 1).await?;
    }
    Ok(delivered)
}
