//! One callback's attempts under its app's policy (docs/behaviour.md §4.1, §5, §6): up to
//! `1 + retries` attempts, the first delivery ends them; every failure of a rule that bans
//! feeds its window, and a banned rule is not attempted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::ban::{BanRecord, BanStart};
use crate::clock::{SharedClock, rfc3339};
use crate::config::DeliveryPolicy;
use crate::dialect::Wire;
use crate::domain::Outcome;
use crate::history::{AppHistory, AttemptLog};
use crate::runtime::{BanEnd, RuleRuntime};
use crate::transport::{self, AttemptLimits, AttemptResult, Target, attempt, attempt_on};

/// What an attempt goes through.
#[derive(Debug)]
pub enum Via<'a> {
    /// The client's keep-alive pool (pre-send calls, replays).
    Pool(&'a transport::Client),
    /// A delivery worker's own connection.
    Conn(&'a mut transport::Conn),
}

/// One policy-driven delivery: see [`Attempter::attempt_policy`](super::Attempter::attempt_policy).
pub struct PolicyAttempt<'a> {
    /// The provider: whether and how a 200 answer is checked.
    pub wire: &'a dyn Wire,
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
    /// Where each attempt is written down for the history (docs/behaviour.md §12), if anywhere;
    /// the answers of 200s are then kept too.
    pub trail: Option<&'a mut Vec<AttemptLog>>,
}

/// The result of a callback that was not attempted (`banned`, `shutdown`), saying why.
pub(super) fn not_attempted(outcome: Outcome, why: &str) -> AttemptResult {
    AttemptResult {
        outcome,
        status: None,
        body: None,
        detail: Some(why.into()),
    }
}

impl Shared {
    /// Attempts under the policy; returns the last attempt's result and how many were made.
    pub(super) async fn attempt_policy(
        &self,
        mut a: PolicyAttempt<'_>,
        abort: &CancellationToken,
    ) -> (AttemptResult, u32) {
        let ban_rule = a.rule.filter(|r| a.obey_ban && r.policy.bans);
        if let Some(r) = ban_rule
            && let Some(until) = r.banned_until(self.clock.now_ms())
        {
            let why = format!("not attempted: the rule is banned until {}", rfc3339(until));
            return (not_attempted(Outcome::Banned, &why), 0);
        }
        let checks = a.wire.reads_answers();
        let limits = AttemptLimits {
            timeout: a.policy.timeout,
            max_chars: self.max_chars,
            keep_body: checks || a.trail.is_some(),
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let started = Instant::now();
            let at_ms = if a.trail.is_some() { self.clock.now_ms() } else { 0 };
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
            let r = match r.outcome {
                Outcome::Delivered if checks => match a.wire.check_answer(r.body.as_deref().unwrap_or_default()) {
                    Ok(()) => r,
                    Err(why) => AttemptResult {
                        outcome: Outcome::BadResponse,
                        detail: Some(why),
                        ..r
                    },
                },
                _ => r,
            };
            let took = started.elapsed();
            if let Some(rule) = a.rule {
                rule.stats.count_outcome(r.outcome);
                rule.latency.record(took.as_secs_f64());
            }
            if let Some(trail) = a.trail.as_deref_mut() {
                trail.push(AttemptLog {
                    at_ms,
                    duration: took,
                    outcome: r.outcome,
                    status: r.status,
                    answer: r.body.clone(),
                    detail: r.detail.clone(),
                });
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

    /// Logs and persists a ban, tells the console, and logs its end when it comes.
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
        let history = self.history.get().map(|h| h.of(rule).clone());
        if let Some(h) = &history {
            h.rule_changed(&rule.config.name);
        }
        spawn_unban_log(rule, start, self.clock.clone(), history);
    }
}

/// Logs the end of `rule`'s ban `start` when it comes — unless a later ban replaced it or a
/// reset lifted it by then — and tells the console's watchers (`history`).
pub fn spawn_unban_log(rule: &RuleRuntime, start: BanStart, clock: SharedClock, history: Option<Arc<AppHistory>>) {
    let (app, name, end) = (rule.app.clone(), rule.config.name.clone(), rule.ban_end());
    tokio::spawn(async move {
        let wait = start.until_ms.saturating_sub(clock.now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if still_current(&end, &start) {
            tracing::warn!(app = %app, rule = %name, level = start.level, until = %rfc3339(start.until_ms), "rule unbanned");
            if let Some(h) = history {
                h.rule_changed(&name);
            }
        }
    });
}

/// Whether the ban `start` is the rule's current one (not replaced, not reset).
fn still_current(end: &BanEnd, start: &BanStart) -> bool {
    end.get() == start.until_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppBuilder, Config, RuleBuilder};
    use crate::runtime::Apps;

    #[test]
    fn a_ban_reset_or_replaced_is_not_logged_as_ended() {
        let config = Config::builder()
            .ban(1, 30.0, 60.0, 5)
            .app(AppBuilder::new("a", "t").rule(RuleBuilder::post_send("r", "http://127.0.0.1:9/", "s")))
            .build()
            .unwrap();
        let apps = Apps::build(&config, &Default::default()).unwrap();
        let rule = apps.rules().next().unwrap();
        let (first, _) = rule.record_failure(1_000).unwrap();
        assert!(still_current(&rule.ban_end(), &first));
        rule.reset_ban();
        assert!(!still_current(&rule.ban_end(), &first), "a reset lifted it");
        let (second, _) = rule.record_failure(2_000).unwrap();
        assert!(!still_current(&rule.ban_end(), &first), "a later ban replaced it");
        assert!(still_current(&rule.ban_end(), &second));
    }
}
