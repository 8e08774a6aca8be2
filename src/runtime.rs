//! The live form of the config: apps and rules with their wire format, HTTP clients, counters,
//! ban state and limiters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;

use crate::ban::{BanRecord, BanStart, BanTracker, BanView};
use crate::config::{AppConfig, Config, DeliveryPolicy, RuleConfig};
use crate::dialect::{self, Wire};
use crate::domain::{AppId, FinalOutcome, Outcome, RuleStatus};
use crate::transport::{Client, ClientError, build_client};

/// Per-rule counters, lock-free.
#[derive(Debug, Default)]
pub struct RuleStats {
    bans: AtomicU64,
    by_outcome: [AtomicU64; Outcome::ALL.len()],
    by_final: [AtomicU64; FinalOutcome::ALL.len()],
}

impl RuleStats {
    /// Counts one attempt (or one callback not attempted: `banned`, `shutdown`).
    pub fn count_outcome(&self, o: Outcome) {
        self.by_outcome[o.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one callback's final outcome.
    pub fn count_final(&self, o: FinalOutcome) {
        self.by_final[o.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a ban that started.
    pub fn count_ban(&self) {
        self.bans.fetch_add(1, Ordering::Relaxed);
    }

    /// Bans started since the simulator started.
    pub fn bans_started(&self) -> u64 {
        self.bans.load(Ordering::Relaxed)
    }

    /// Attempts (or callbacks not attempted) with this outcome so far.
    pub fn outcome(&self, o: Outcome) -> u64 {
        self.by_outcome[o.index()].load(Ordering::Relaxed)
    }

    /// Callbacks with this final outcome so far.
    pub fn final_outcome(&self, o: FinalOutcome) -> u64 {
        self.by_final[o.index()].load(Ordering::Relaxed)
    }

    /// A snapshot of every count.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            counts: std::array::from_fn(|i| self.by_outcome[i].load(Ordering::Relaxed)),
            finals: std::array::from_fn(|i| self.by_final[i].load(Ordering::Relaxed)),
        }
    }
}

/// A rule's counts as the rules endpoint shows them: `counts` per outcome and `final` per
/// final outcome, each as a JSON object keyed by the outcome's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    /// Attempts per outcome, in [`Outcome::ALL`] order; `banned` and `shutdown` count
    /// callbacks not attempted.
    #[serde(serialize_with = "by_name::outcomes")]
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    counts: [u64; Outcome::ALL.len()],
    /// Callbacks per final outcome, in [`FinalOutcome::ALL`] order.
    #[serde(rename = "final", serialize_with = "by_name::finals")]
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    finals: [u64; FinalOutcome::ALL.len()],
}

impl StatsSnapshot {
    /// Attempts that ended with `o` (callbacks not attempted, for `banned` and `shutdown`).
    pub fn outcome(&self, o: Outcome) -> u64 {
        self.counts[o.index()]
    }

    /// Callbacks whose final outcome is `o`.
    pub fn final_outcome(&self, o: FinalOutcome) -> u64 {
        self.finals[o.index()]
    }
}

/// Counts serialized as `{"name": n, ...}`, names in alphabetical order (as the API always
/// showed them).
mod by_name {
    use serde::Serializer;
    use serde::ser::SerializeMap;

    use crate::domain::{FinalOutcome, Outcome};

    fn map<S: Serializer>(s: S, mut pairs: Vec<(&'static str, u64)>) -> Result<S::Ok, S::Error> {
        pairs.sort_unstable();
        let mut m = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            m.serialize_entry(k, &v)?;
        }
        m.end()
    }

    pub(super) fn outcomes<S: Serializer>(c: &[u64; Outcome::ALL.len()], s: S) -> Result<S::Ok, S::Error> {
        map(
            s,
            Outcome::ALL.iter().map(|o| o.as_str()).zip(c.iter().copied()).collect(),
        )
    }

    pub(super) fn finals<S: Serializer>(c: &[u64; FinalOutcome::ALL.len()], s: S) -> Result<S::Ok, S::Error> {
        map(
            s,
            FinalOutcome::ALL
                .iter()
                .map(|o| o.as_str())
                .zip(c.iter().copied())
                .collect(),
        )
    }
}

/// A rule as the dispatcher uses it.
#[derive(Debug)]
pub struct RuleRuntime {
    /// Its number among all the rules of the simulator, from 0: indexes per-rule tables (the
    /// dispatcher's lanes).
    pub index: usize,
    /// The app it belongs to.
    pub app: AppId,
    /// The app's wire format.
    pub wire: Arc<dyn Wire>,
    /// The rule as configured.
    pub config: RuleConfig,
    /// The app's delivery policy (timeout, retries, bans).
    pub policy: DeliveryPolicy,
    /// Whether undelivered callbacks are stored (else dropped).
    pub exception_store: bool,
    /// The HTTP client: shared, or its own when the rule has TLS files.
    pub client: Client,
    /// Counts per outcome and final outcome.
    pub stats: RuleStats,
    /// Attempt durations, seconds (`/metrics`).
    pub latency: metrics::Histogram,
    ban: std::sync::Mutex<BanTracker>,
    /// The end of the current ban (Unix ms; 0 when none), readable without the lock on every
    /// delivery, and by the timer that logs the ban's end.
    banned_until: BanEnd,
}

/// The end of a rule's current ban, shared with the timer that logs it: a ban replaced by a
/// later one, or lifted by a reset, is not logged as ended.
#[derive(Debug, Clone, Default)]
pub struct BanEnd(Arc<AtomicU64>);

impl BanEnd {
    /// Unix ms at which the current ban ends; 0 when there is none.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, until_ms: u64) {
        self.0.store(until_ms, Ordering::Release);
    }
}

impl RuleRuntime {
    /// The end of the ban `now` is in, if any.
    pub fn banned_until(&self, now_ms: u64) -> Option<u64> {
        let until = self.banned_until.get();
        (now_ms < until).then_some(until)
    }

    /// The end of its current ban, as a handle that follows later bans and resets.
    pub fn ban_end(&self) -> BanEnd {
        self.banned_until.clone()
    }

    /// Counts a failed attempt; returns the ban it starts and the record to persist.
    pub fn record_failure(&self, now_ms: u64) -> Option<(BanStart, BanRecord)> {
        let mut tracker = self.ban.lock().expect("ban lock");
        let start = tracker.record_failure(now_ms)?;
        self.banned_until.set(start.until_ms);
        Some((start, tracker.record().clone()))
    }

    /// Continues from a ban record saved before a restart.
    pub fn restore_ban(&self, record: BanRecord) {
        let mut tracker = self.ban.lock().expect("ban lock");
        self.banned_until.set(record.banned_until_ms);
        *tracker = BanTracker::restore(tracker.config().clone(), record);
    }

    /// Lifts the ban and forgets the failure window and the ban history (the next ban is of
    /// level 1). The caller persists the now empty record.
    pub fn reset_ban(&self) {
        let mut tracker = self.ban.lock().expect("ban lock");
        tracker.reset();
        self.banned_until.set(0);
    }

    /// Its ban record as it stands (what the store keeps).
    pub fn ban_record(&self) -> BanRecord {
        self.ban.lock().expect("ban lock").record().clone()
    }

    /// `disabled`, `banned` or `active` at `now_ms`.
    pub fn status(&self, now_ms: u64) -> RuleStatus {
        match (self.config.enabled, self.banned_until(now_ms)) {
            (false, _) => RuleStatus::Disabled,
            (true, Some(_)) => RuleStatus::Banned,
            (true, None) => RuleStatus::Active,
        }
    }

    /// Ban state at `now_ms`: until when, level, failures in the window.
    pub fn ban_view(&self, now_ms: u64) -> BanView {
        self.ban.lock().expect("ban lock").view(now_ms)
    }
}

/// An app as the API and dispatcher use it.
pub struct AppRuntime {
    /// The app as configured.
    pub config: AppConfig,
    /// Its provider's wire format.
    pub wire: Arc<dyn Wire>,
    /// Its rules, in config order.
    pub rules: Vec<Arc<RuleRuntime>>,
    /// REST requests per second for this app (docs/behaviour.md §2 `[api]`).
    pub limiter: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for AppRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppRuntime")
            .field("id", &self.config.id)
            .field("rules", &self.rules)
            .finish()
    }
}

impl AppRuntime {
    /// The rule of that name, if the config still has it.
    pub fn rule(&self, name: &str) -> Option<&Arc<RuleRuntime>> {
        self.rules.iter().find(|r| r.config.name.as_str() == name)
    }
}

/// Every app, by id, and the client shared by rules without TLS options.
#[derive(Debug)]
pub struct Apps {
    apps: HashMap<AppId, Arc<AppRuntime>>,
    /// The client of rules without TLS files (and of replays whose rule left the config).
    pub default_client: Client,
}

impl Apps {
    /// Builds clients, counters and limiters. Rules without TLS options share one client
    /// (one keep-alive pool); a rule with its own root or client certificate gets its own.
    pub fn build(config: &Config, metrics: &crate::metrics::Metrics) -> Result<Self, ClientError> {
        let pool = config.delivery.concurrency;
        let shared = build_client(pool, &Default::default())?;
        let quota = Quota::per_second(nonzero(config.api.rate_per_sec)).allow_burst(nonzero(config.api.burst));
        let mut apps = HashMap::new();
        let mut index = 0;
        for app in &config.apps {
            let wire = dialect::wire(
                app.dialect,
                dialect::WireSettings {
                    sdk_app_id: app.sdk_app_id,
                    appkey: app.appkey.clone(),
                    legacy_groups: app.legacy_groups,
                    token: app.tencent_token.as_ref().map(|t| t.expose().to_string()),
                },
            );
            let mut rules = Vec::with_capacity(app.rules.len());
            for rule in &app.rules {
                let client = if rule.tls.is_default() {
                    shared.clone()
                } else {
                    build_client(pool, &rule.tls).map_err(|e| ClientError {
                        what: format!("app {:?} rule {:?}: {}", app.id.as_str(), rule.name.as_str(), e.what),
                        reason: e.reason,
                    })?
                };
                rules.push(Arc::new(RuleRuntime {
                    index,
                    banned_until: BanEnd::default(),
                    ban: std::sync::Mutex::new(BanTracker::new(config.ban.clone())),
                    app: app.id.clone(),
                    wire: wire.clone(),
                    config: rule.clone(),
                    policy: app.policy,
                    exception_store: app.exception_store,
                    client,
                    stats: RuleStats::default(),
                    latency: metrics.histogram(
                        "callback_sim_attempt_duration_seconds",
                        &[("app", app.id.as_str()), ("rule", rule.name.as_str())],
                    ),
                }));
                index += 1;
            }
            let rt = AppRuntime {
                config: app.clone(),
                wire,
                rules,
                limiter: RateLimiter::direct(quota),
            };
            apps.insert(app.id.clone(), Arc::new(rt));
        }
        Ok(Apps {
            apps,
            default_client: shared,
        })
    }

    /// The app with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<AppRuntime>> {
        self.apps.get(id)
    }

    /// Every app.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<AppRuntime>> {
        self.apps.values()
    }

    /// How many rules there are, all apps together (one more than the largest
    /// [`RuleRuntime::index`]).
    pub fn rule_count(&self) -> usize {
        self.iter().map(|a| a.rules.len()).sum()
    }

    /// Every rule of every app.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<RuleRuntime>> {
        self.iter().flat_map(|a| a.rules.iter())
    }
}

fn nonzero(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n.max(1)).expect("max(1) is non-zero")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_typed_and_serialize_by_name() {
        let stats = RuleStats::default();
        stats.count_outcome(Outcome::Timeout);
        stats.count_outcome(Outcome::Timeout);
        stats.count_final(FinalOutcome::Stored);
        let snap = stats.snapshot();
        assert_eq!((snap.outcome(Outcome::Timeout), snap.outcome(Outcome::Dns)), (2, 0));
        assert_eq!(snap.final_outcome(FinalOutcome::Stored), 1);
        let json = serde_json::to_string(&snap).unwrap();
        assert!(
            json.starts_with(r#"{"counts":{"bad_response":0,"banned":0,"connect":0,"delivered":0,"dns":0,"#),
            "{json}"
        );
        assert!(
            json.contains(r#""timeout":2"#)
                && json.ends_with(r#""final":{"delivered":0,"dropped":0,"stored":1,"violation":0}}"#),
            "{json}"
        );
    }
}
