//! Wall-clock time, injected so that bans, date keys and retention can be tested without
//! waiting. Bans and date keys must survive restarts, so this is Unix time, not `Instant`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of Unix time in milliseconds: what bans, date keys, callback `timestamp`s and the
/// retention sweep read. [`Server::start_with_clock`](crate::Server::start_with_clock) takes
/// one; [`ManualClock`] is the one tests use.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time, in Unix milliseconds.
    fn now_ms(&self) -> u64;
}

/// The clock everything shares.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to: bans end and store buckets age when the test says so.
///
/// ```
/// use std::sync::Arc;
/// use callback_sim::{AppBuilder, Config, ManualClock, Message, RuleBuilder, RuleStatus, Sim};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let clock = Arc::new(ManualClock::new(1_700_000_000_000));
/// // Nothing listens on port 9: two failures (the attempt and its retry) ban the rule for 60 s.
/// let config = Config::builder()
///     .ban(2, 30.0, 60.0, 5)
///     .app(AppBuilder::new("app", "tok").rule(RuleBuilder::post_send("sync", "http://127.0.0.1:9/cb", "s")))
///     .build()
///     .unwrap();
/// let sim = Sim::start_with_clock(config, clock.clone()).await.unwrap();
/// sim.send("app", Message::text("alice", "bob", "hi")).await.unwrap();
/// assert_eq!(sim.rules("app").unwrap()[0].state, RuleStatus::Banned);
/// clock.advance(60_000);
/// assert_eq!(sim.rules("app").unwrap()[0].state, RuleStatus::Active);
/// # });
/// ```
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock that reads `start_ms` (Unix milliseconds) until moved.
    pub fn new(start_ms: u64) -> Self {
        Self(AtomicU64::new(start_ms))
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `ms` (Unix milliseconds); it may go backwards.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Unix ms as RFC 3339 UTC with milliseconds, as logs and the REST API show times.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
