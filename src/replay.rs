//! Replaying a bucket of the exception store (docs/behaviour.md §8.2): the same bytes, the
//! normal delivery policy, to `targetUrl` or the rule's own URL.
//!
//! The bucket is streamed from sled, `delivery.concurrency` callbacks at a time. A delivered
//! callback leaves the store; one that fails again moves to (`date`, `retry + 1`). Replays to
//! the rule's own URL obey and feed its ban; replays to a `targetUrl` do neither.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::dispatch::{Attempter, PolicyAttempt, Via};
use crate::domain::{CallbackUrl, DateKey};
use crate::metrics::Metrics;
use crate::runtime::AppRuntime;
use crate::store::{Bucket, ItemKey, Store, StoreError, StoredCallback};
use crate::transport::{Client, Target};

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

/// What a replay needs: the store, the dispatcher's attempts, the client of rules that left
/// the config, and how many callbacks may be in flight.
#[derive(Debug, Clone)]
pub struct Replayer {
    /// The exception store.
    pub store: Store,
    /// Policy-driven attempts, stopped with the dispatcher.
    pub attempter: Attempter,
    /// The client of replays whose rule left the config.
    pub default_client: Client,
    /// `delivery.concurrency`: callbacks replayed at once.
    pub concurrency: usize,
    /// Replay counters of `/metrics`.
    pub metrics: Arc<Metrics>,
}

impl Replayer {
    /// Replays bucket (`date`, `retry`) of `app`; returns when every callback has an outcome.
    /// Each callback is its own task (so replays use every core), at most `delivery.concurrency`
    /// at once, while the bucket is read lazily from the store.
    pub async fn replay(
        &self,
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
        let _lock = self
            .store
            .begin_replay(&bucket)
            .ok_or(ReplayError::Busy { date, retry })?;
        let store = &self.store;
        if store.bucket_size(&bucket) == 0 {
            return Err(ReplayError::NoSuchBucket { date, retry });
        }
        tracing::info!(app = %app.config.id, %date, retry, target = target.as_ref().map(|t| t.to_string()), "replay started");
        let permits = Arc::new(Semaphore::new(self.concurrency));
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
            let (this, app, target) = (self.clone(), app.clone(), target.clone());
            tasks.spawn(async move {
                let r = this.replay_one(&app, target.as_deref(), key, item, retry).await;
                drop(permit);
                r
            });
        }
        while let Some(done) = tasks.join_next().await {
            tally(done)?;
        }
        store.flush().await?;
        let result = if out.failed == 0 { "success" } else { "failure" };
        self.metrics
            .counter(
                "callback_sim_replays_total",
                &[("app", app.config.id.as_str()), ("result", result)],
            )
            .increment(1);
        self.metrics
            .counter(
                "callback_sim_replayed_callbacks_total",
                &[("app", app.config.id.as_str()), ("outcome", "delivered")],
            )
            .increment(out.delivered);
        self.metrics
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
        &self,
        app: &AppRuntime,
        target: Option<&CallbackUrl>,
        key: ItemKey,
        mut item: StoredCallback,
        retry: u32,
    ) -> Result<bool, StoreError> {
        let store = &self.store;
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
        let client = rule.map(|r| &r.client).unwrap_or(&self.default_client);
        let body = Bytes::from(std::mem::take(&mut item.body));
        let (last, attempts) = self
            .attempter
            .attempt_policy(PolicyAttempt {
                wire: &*app.wire,
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
}
