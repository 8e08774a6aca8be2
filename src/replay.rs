//! Replaying a bucket of the exception store (docs/behaviour.md §8.2): the same bytes, the
//! normal delivery policy, to `targetUrl` or the rule's own URL.
//!
//! A replay is a task of its own, tracked by the dispatcher: it runs to its end whatever
//! happens to the client that asked for it, and a graceful stop waits for it (docs/behaviour.md
//! §7, §9). The bucket is streamed from sled, `delivery.concurrency` callbacks at a time. A
//! delivered callback leaves the store; one that fails again moves to (`date`, `retry + 1`).
//! Replays to the rule's own URL obey and feed its ban; replays to a `targetUrl` do neither.
//! Once the simulator stops, no further callback is taken from the bucket, and a callback
//! whose attempt the stop cut short stays where it was.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};

use crate::clock::{SharedClock, rfc3339};
use crate::dispatch::{Attempter, PolicyAttempt, Via};
use crate::domain::{CallbackUrl, DateKey, Outcome};
use crate::metrics::Metrics;
use crate::runtime::AppRuntime;
use crate::store::{Bucket, ItemKey, ReplayLock, Store, StoreError, StoredCallback};
use crate::transport::{Client, Target};

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct ReplayOutcome {
    /// Callbacks delivered (and removed from the store); `delivered` in the storage/retry answer.
    pub delivered: u64,
    /// Callbacks that failed again (and moved to `retry + 1`); `failed` in the answer.
    pub failed: u64,
    /// Callbacks left where they were because the simulator stopped during the replay: not
    /// sent, or their attempt cut short; `interrupted` in the answer.
    pub interrupted: u64,
    /// Why callbacks were not delivered when the counts alone do not say it — the rule was
    /// banned, the simulator stopped — and where they are now; `warnings` in the answer.
    pub warnings: Vec<String>,
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
    /// The simulator is stopping and starts no replay (503).
    #[error("the simulator is stopping and starts no replay")]
    ShuttingDown,
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
    /// Policy-driven attempts, and the replay tasks, stopped with the dispatcher.
    pub attempter: Attempter,
    /// The client of replays whose rule left the config.
    pub default_client: Client,
    /// `delivery.concurrency`: callbacks replayed at once.
    pub concurrency: usize,
    /// Replay counters of `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The time source of bans (when a banned rule's ban ends, for the answer).
    pub clock: SharedClock,
}

/// How one replayed callback ended.
enum Replayed {
    Delivered,
    /// Failed again: moved to the next retry count.
    Failed,
    /// Not sent because this rule is banned: moved to the next retry count.
    Banned(String),
    /// Cut short by a stop: left where it was.
    Interrupted,
}

/// The counts of a replay as its callbacks end.
#[derive(Default)]
struct Tally {
    out: ReplayOutcome,
    /// Callbacks not sent because their rule was banned, by rule.
    banned: BTreeMap<String, u64>,
    /// The first store failure; the replay still waits for every callback.
    store_error: Option<StoreError>,
}

impl Tally {
    fn add(&mut self, r: Result<Result<Replayed, StoreError>, JoinError>) {
        match r {
            Ok(Ok(Replayed::Delivered)) => self.out.delivered += 1,
            Ok(Ok(Replayed::Failed)) => self.out.failed += 1,
            Ok(Ok(Replayed::Banned(rule))) => {
                self.out.failed += 1;
                *self.banned.entry(rule).or_default() += 1;
            }
            Ok(Ok(Replayed::Interrupted)) => self.out.interrupted += 1,
            Ok(Err(e)) => {
                self.out.failed += 1;
                self.store_error.get_or_insert(e);
            }
            Err(e) => {
                tracing::error!(error = %e, "replay task failed");
                self.out.failed += 1;
            }
        }
    }
}

/// "1 callback was", "2 callbacks were".
fn callbacks_were(n: u64) -> String {
    if n == 1 {
        "1 callback was".to_string()
    } else {
        format!("{n} callbacks were")
    }
}

impl Replayer {
    /// Replays bucket (`date`, `retry`) of `app`; returns when every callback has an outcome.
    /// The replay is a task of its own: it runs to its end even if this future is dropped (a
    /// client that went away), and a stop waits for it. Each callback is a task too (so
    /// replays use every core), at most `delivery.concurrency` at once, while the bucket is
    /// read lazily from the store.
    pub async fn replay(
        &self,
        app: Arc<AppRuntime>,
        date: DateKey,
        retry: u32,
        target: Option<CallbackUrl>,
    ) -> Result<ReplayOutcome, ReplayError> {
        if self.attempter.is_stopping() {
            return Err(ReplayError::ShuttingDown);
        }
        let bucket = Bucket {
            app: app.config.id.clone(),
            date,
            retry,
        };
        let lock = self
            .store
            .begin_replay(&bucket)
            .ok_or(ReplayError::Busy { date, retry })?;
        if self.store.bucket_size(&bucket) == 0 {
            return Err(ReplayError::NoSuchBucket { date, retry });
        }
        let this = self.clone();
        let task = self
            .attempter
            .spawn(async move { this.run(app, bucket, target, lock).await })
            .ok_or(ReplayError::ShuttingDown)?;
        task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "replay task failed");
            Err(StoreError::Io(format!("the replay ended unexpectedly: {e}")).into())
        })
    }

    /// The replay itself, holding the bucket's replay slot until it ends.
    async fn run(
        self,
        app: Arc<AppRuntime>,
        bucket: Bucket,
        target: Option<CallbackUrl>,
        _lock: ReplayLock,
    ) -> Result<ReplayOutcome, ReplayError> {
        let (date, retry) = (bucket.date, bucket.retry);
        let store = &self.store;
        tracing::info!(app = %app.config.id, %date, retry, target = target.as_ref().map(|t| t.to_string()), "replay started");
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let target = target.map(Arc::new);
        let mut tasks = JoinSet::new();
        let mut tally = Tally::default();
        // What is left when a stop comes is counted, not read: the bucket held this many, and
        // only this replay takes items out of it.
        let size = store.bucket_size(&bucket);
        for (taken, entry) in (0u64..).zip(store.scan(&bucket)) {
            let permit = permits.clone().acquire_owned().await.expect("never closed");
            while let Some(done) = tasks.try_join_next() {
                tally.add(done);
            }
            if self.attempter.is_stopping() {
                // Not taken: the rest of the bucket stays where it is.
                tally.out.interrupted += size.saturating_sub(taken).max(1);
                break;
            }
            let (key, item) = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "replay: unreadable stored callback left in place");
                    tally.add(Ok(Ok(Replayed::Failed)));
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
            tally.add(done);
        }
        let flushed = store.flush().await;
        let Tally {
            mut out,
            banned,
            store_error,
        } = tally;
        let now = self.clock.now_ms();
        for (rule, n) in banned {
            let until = app.rule(&rule).and_then(|r| r.banned_until(now));
            let state = match until {
                Some(until) => format!("is banned until {}", rfc3339(until)),
                None => "was banned".to_string(),
            };
            out.warnings.push(format!(
                "rule {rule} {state}: {} not sent and moved to retry {}; replay them once the ban ends (GET callbacks/rules shows it), or to a targetUrl, which ignores bans",
                callbacks_were(n),
                retry + 1
            ));
        }
        if out.interrupted > 0 {
            out.warnings.push(format!(
                "the simulator is stopping: {} not replayed or cut short; they stay in bucket date={date} retry={retry}",
                callbacks_were(out.interrupted),
            ));
        }
        let result = if out.failed == 0 && out.interrupted == 0 {
            "success"
        } else {
            "failure"
        };
        let id = app.config.id.as_str();
        self.metrics
            .counter("callback_sim_replays_total", &[("app", id), ("result", result)])
            .increment(1);
        for (outcome, n) in [
            ("delivered", out.delivered),
            ("failed", out.failed),
            ("interrupted", out.interrupted),
        ] {
            self.metrics
                .counter(
                    "callback_sim_replayed_callbacks_total",
                    &[("app", id), ("outcome", outcome)],
                )
                .increment(n);
        }
        tracing::info!(app = %app.config.id, %date, retry, delivered = out.delivered, failed = out.failed,
            interrupted = out.interrupted, "replay finished");
        if let Some(e) = store_error.or(flushed.err()) {
            return Err(e.into());
        }
        Ok(out)
    }

    /// Re-sends one stored callback: delivered (and removed from the store), failed again
    /// (and moved to `retry + 1`), or cut short by a stop (and left where it was).
    async fn replay_one(
        &self,
        app: &AppRuntime,
        target: Option<&CallbackUrl>,
        key: ItemKey,
        mut item: StoredCallback,
        retry: u32,
    ) -> Result<Replayed, StoreError> {
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
                Err(_) => return Ok(Replayed::Failed),
            },
        };
        // Signed as it is sent (a tencent app with a token): a replay carries a fresh RequestTime.
        let query = app.wire.sign_query(item.query.as_deref(), self.clock.now_ms());
        let uri = base.uri_with_query(query.as_deref());
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
                trail: None,
            })
            .await;
        let delivered = last.outcome.is_delivered();
        tracing::info!(app = %app.config.id, rule = %item.rule, call_id = %item.call_id, replay = true,
        outcome = if delivered { "delivered" } else { "stored" }, last_attempt = %last.outcome, attempts,
        status = last.status, detail = last.detail.as_deref(), "callback");
        if delivered {
            store.delete(key).await?;
            return Ok(Replayed::Delivered);
        }
        if last.outcome == Outcome::Shutdown {
            // Not delivered, and not tried to the end either: it stays as it was.
            return Ok(Replayed::Interrupted);
        }
        let banned = last.outcome == Outcome::Banned;
        item.body = String::from_utf8(body.to_vec()).expect("stored bodies are UTF-8");
        item.outcome = last.outcome;
        item.attempts = attempts;
        item.status = last.status;
        let rule = banned.then(|| item.rule.clone());
        store.move_to_retry(key, item, retry + 1).await?;
        Ok(match rule {
            Some(rule) => Replayed::Banned(rule),
            None => Replayed::Failed,
        })
    }
}
