//! Rule bans (docs/behaviour.md §6): a sliding window of failures and the escalating ban.
//!
//! [`BanTracker`] is pure: every method takes the current time in Unix milliseconds, so unit
//! tests walk hours of escalation in microseconds. The dispatcher keeps one per rule behind a
//! mutex and persists [`BanRecord`]s so a ban and its history survive a restart.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::BanConfig;

/// A ban that just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanStart {
    /// The ban's level, 1 to `max_level`: bans of this rule started within `level_memory_secs`,
    /// this one included (docs/behaviour.md §6).
    pub level: u32,
    /// Unix time in milliseconds at which the ban started (the failure that triggered it).
    pub since_ms: u64,
    /// Unix time in milliseconds at which the ban ends: `since_ms + level * base_secs`.
    pub until_ms: u64,
}

/// What survives a restart: the current ban and the start times of recent bans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// Unix time in milliseconds at which the latest ban ends (or ended); 0 if never banned.
    pub banned_until_ms: u64,
    /// The level of the latest ban; 0 if never banned.
    pub level: u32,
    /// Start times of the bans within `level_memory` (oldest first).
    pub history_ms: Vec<u64>,
}

/// The live state, as the rules endpoint shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanView {
    /// Unix time in milliseconds at which the current ban ends; `None` when not banned.
    /// Shown as `banned_until` (RFC 3339) by `callbacks/rules`.
    pub banned_until_ms: Option<u64>,
    /// The level of the latest ban (kept after it ends); shown as `ban_level`.
    pub level: u32,
    /// Failed attempts within the last `window_secs` (0 while banned); shown as
    /// `failures_in_window`.
    pub failures_in_window: u32,
}

/// One rule's failure window and ban history.
#[derive(Debug, Clone)]
pub struct BanTracker {
    cfg: BanConfig,
    failures: VecDeque<u64>,
    record: BanRecord,
}

impl BanTracker {
    /// A tracker with an empty window and no ban history.
    pub fn new(cfg: BanConfig) -> Self {
        Self::restore(cfg, BanRecord::default())
    }

    /// Continues from a persisted record.
    pub fn restore(cfg: BanConfig, record: BanRecord) -> Self {
        Self {
            cfg,
            failures: VecDeque::new(),
            record,
        }
    }

    /// The `[ban]` settings this tracker applies.
    pub fn config(&self) -> &BanConfig {
        &self.cfg
    }

    /// The state to persist so that the ban survives a restart.
    pub fn record(&self) -> &BanRecord {
        &self.record
    }

    fn ms(d: std::time::Duration) -> u64 {
        d.as_millis() as u64
    }

    /// The end of the current ban, if `now` is inside one.
    pub fn banned_until(&self, now: u64) -> Option<u64> {
        (now < self.record.banned_until_ms).then_some(self.record.banned_until_ms)
    }

    /// Counts a failed attempt at `now`. Returns the ban it triggers, if any. Failures during
    /// a ban are not counted: the window starts empty when the ban ends.
    pub fn record_failure(&mut self, now: u64) -> Option<BanStart> {
        if self.banned_until(now).is_some() {
            return None;
        }
        let window = Self::ms(self.cfg.window);
        while self.failures.front().is_some_and(|&t| t + window <= now) {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        if (self.failures.len() as u64) < u64::from(self.cfg.failure_threshold) {
            return None;
        }
        self.failures.clear();
        let memory = Self::ms(self.cfg.level_memory);
        self.record.history_ms.retain(|&t| t + memory > now);
        self.record.history_ms.push(now);
        let level = (self.record.history_ms.len() as u32).min(self.cfg.max_level);
        let until = now + u64::from(level) * Self::ms(self.cfg.base);
        self.record.level = level;
        self.record.banned_until_ms = until;
        Some(BanStart {
            level,
            since_ms: now,
            until_ms: until,
        })
    }

    /// Forgets everything: lifts the current ban, empties the failure window and the ban
    /// history, so that the next ban is of level 1 (docs/behaviour.md §6, resetting a rule).
    pub fn reset(&mut self) {
        self.failures.clear();
        self.record = BanRecord::default();
    }

    /// The live state at `now` (Unix milliseconds), for the rules endpoint.
    pub fn view(&self, now: u64) -> BanView {
        let window = Self::ms(self.cfg.window);
        let in_window = if self.banned_until(now).is_some() {
            0
        } else {
            self.failures.iter().filter(|&&t| t + window > now).count() as u32
        };
        BanView {
            banned_until_ms: self.banned_until(now),
            level: self.record.level,
            failures_in_window: in_window,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SEC: u64 = 1000;
    const MIN: u64 = 60 * SEC;

    fn defaults() -> BanConfig {
        BanConfig {
            failure_threshold: 90,
            window: Duration::from_secs(30),
            base: Duration::from_secs(300),
            max_level: 5,
            level_memory: Duration::from_secs(86_400),
        }
    }

    /// Fails `n` times, 10 ms apart, starting at `t`; returns the ban if one started.
    fn fail(b: &mut BanTracker, t: u64, n: u32) -> Option<BanStart> {
        (0..n).filter_map(|i| b.record_failure(t + u64::from(i) * 10)).last()
    }

    #[test]
    fn ninety_failures_in_thirty_seconds_ban_for_five_minutes() {
        let mut b = BanTracker::new(defaults());
        assert_eq!(fail(&mut b, 0, 89), None);
        assert_eq!(b.view(890).failures_in_window, 89);
        let ban = b.record_failure(1000).expect("the 90th failure bans");
        assert_eq!(
            ban,
            BanStart {
                level: 1,
                since_ms: 1000,
                until_ms: 1000 + 5 * MIN
            }
        );
        assert_eq!(b.banned_until(1000 + 5 * MIN - 1), Some(1000 + 5 * MIN));
        assert_eq!(b.banned_until(1000 + 5 * MIN), None);
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let mut b = BanTracker::new(defaults());
        assert_eq!(fail(&mut b, 0, 89), None);
        // 30 s after the first failures they have left the window.
        assert_eq!(fail(&mut b, 31 * SEC, 89), None);
        assert_eq!(b.view(31 * SEC + 890).failures_in_window, 89);
    }

    #[test]
    fn escalation_walks_5_10_15_20_25_25_minutes() {
        let mut b = BanTracker::new(defaults());
        let mut t = 0;
        let mut lengths = Vec::new();
        for _ in 0..7 {
            let ban = fail(&mut b, t, 90).expect("ban");
            lengths.push((ban.until_ms - ban.since_ms) / MIN);
            // Failures during the ban are ignored...
            assert_eq!(fail(&mut b, ban.since_ms + SEC, 200), None);
            // ... and the window starts empty after it.
            t = ban.until_ms;
            assert_eq!(b.view(t).failures_in_window, 0);
        }
        assert_eq!(lengths, [5, 10, 15, 20, 25, 25, 25]);
    }

    #[test]
    fn the_level_forgets_bans_older_than_24_hours() {
        let mut b = BanTracker::new(defaults());
        let first = fail(&mut b, 0, 90).unwrap();
        let second = fail(&mut b, first.until_ms, 90).unwrap();
        assert_eq!(second.level, 2);
        // 24 h after the first ban, only the second one is remembered: level 2 again.
        let t = 24 * 60 * MIN + 1;
        assert_eq!(fail(&mut b, t, 90).unwrap().level, 2);
        // Long after all of them: back to level 1.
        let t = t + 48 * 60 * MIN;
        assert_eq!(fail(&mut b, t, 90).unwrap().level, 1);
    }

    #[test]
    fn the_level_is_capped() {
        let cfg = BanConfig {
            max_level: 3,
            failure_threshold: 2,
            ..defaults()
        };
        let mut b = BanTracker::new(cfg);
        let mut t = 0;
        let mut levels = Vec::new();
        for _ in 0..6 {
            let ban = fail(&mut b, t, 2).unwrap();
            levels.push(ban.level);
            t = ban.until_ms;
        }
        assert_eq!(levels, [1, 2, 3, 3, 3, 3]);
        assert_eq!(b.record().history_ms.len(), 6, "history keeps counting past the cap");
    }

    #[test]
    fn a_reset_lifts_the_ban_and_forgets_window_and_history() {
        let mut b = BanTracker::new(defaults());
        let first = fail(&mut b, 0, 90).unwrap();
        let second = fail(&mut b, first.until_ms, 90).unwrap();
        assert_eq!(second.level, 2);
        let t = second.since_ms + SEC;
        b.reset();
        assert_eq!(
            b.view(t),
            BanView {
                banned_until_ms: None,
                level: 0,
                failures_in_window: 0
            }
        );
        assert_eq!(b.record(), &BanRecord::default());
        // Failures from before the reset no longer count toward the next ban ...
        assert_eq!(fail(&mut b, t, 89), None);
        assert_eq!(b.view(t + 890).failures_in_window, 89);
        // ... and the next ban starts again at level 1.
        assert_eq!(b.record_failure(t + 1000).unwrap().level, 1);
        let mut partial = BanTracker::new(defaults());
        assert_eq!(fail(&mut partial, 0, 50), None);
        partial.reset();
        assert_eq!(fail(&mut partial, 1000, 89), None, "the window was emptied");
    }

    #[test]
    fn a_restored_record_keeps_ban_and_history() {
        let mut b = BanTracker::new(defaults());
        let ban = fail(&mut b, 0, 90).unwrap();
        let saved = b.record().clone();
        let mut again = BanTracker::restore(defaults(), saved);
        assert_eq!(again.banned_until(10 * SEC), Some(ban.until_ms));
        assert_eq!(fail(&mut again, ban.until_ms, 90).unwrap().level, 2);
    }
}
