//! Every default of `config.toml`, each with the reason for its value. Where a provider
//! documents the behaviour, the value is the provider's; where none does, it is this project's
//! choice. `docs/behaviour.md §2` lists them as a commented file.

use crate::domain::OnFailure;

// [server]

/// `server.listen`: loopback, so that a simulator started without thinking about it is not
/// reachable from the network; 8080 is the usual port of a local HTTP service.
pub(crate) const LISTEN: &str = "127.0.0.1:8080";
/// `server.listen` of a config built in code: port 0 picks a free port, so that tests running
/// side by side never collide.
pub(crate) const BUILDER_LISTEN: &str = "127.0.0.1:0";
/// `server.data_dir`: beside the config file (relative paths are resolved against its
/// directory), where a user looks for it.
pub(crate) const DATA_DIR: &str = "./data";
/// `server.max_body_bytes`, 1 MiB: far above any message or event body, small enough to refuse
/// a client that streams without end.
pub(crate) const MAX_BODY_BYTES: u64 = 1_048_576;
/// `server.history_per_app`: the callbacks the console and `callbacks/history` show per app;
/// about 1.8 MB per app at the benchmark's body size (docs/behaviour.md §12).
pub(crate) const HISTORY_PER_APP: u64 = 2_000;

// [delivery]

/// `delivery.concurrency`: enough callbacks in flight to keep a few slow receivers from
/// starving the others, few enough for the open sockets of one process.
pub(crate) const CONCURRENCY: u64 = 512;
/// `delivery.queue_capacity`: a burst of 100,000 callbacks waits in memory (the simulator stays
/// under 200 MB with the queue full) before ingestion answers 429 and the sender backs off.
pub(crate) const QUEUE_CAPACITY: u64 = 100_000;
/// `delivery.rule_queue_capacity`: one rule's share of the queue. A receiver that hangs fills
/// only its own lane, a tenth of the default queue, and its further callbacks go straight to the
/// store (`overflow`) instead of taking room the other rules need.
pub(crate) const RULE_QUEUE_CAPACITY: u64 = 10_000;
/// `delivery.durable` in a config file: `serve` answers a message only once its callbacks are
/// on disk, so that a `kill -9` loses nothing it accepted. A config built in code
/// ([`BUILDER_DURABLE`]) and `generate` do without.
pub(crate) const DURABLE: bool = true;
/// `delivery.durable` of a config built in code: a test's simulator lives in a temp dir that a
/// crash removes anyway, and an fsync per request would only slow the suite down.
pub(crate) const BUILDER_DURABLE: bool = false;
/// `delivery.max_response_chars`: Agora and Easemob require the answer to a post-send
/// callback to be at most 1,000 characters; a longer one counts as a failure toward the ban.
pub(crate) const MAX_RESPONSE_CHARS: u64 = 1000;

// [ban]: Easemob and Agora ban a rule after 90 failures within 30 s, for 5 minutes times the
// number of bans within 24 hours, that number capped at 5 (5, 10, 15, 20, 25, 25, … minutes).

/// `ban.failure_threshold`: the provider bans after 90 failures ...
pub(crate) const FAILURE_THRESHOLD: u64 = 90;
/// `ban.window_secs`: ... within 30 seconds.
pub(crate) const WINDOW_SECS: f64 = 30.0;
/// `ban.base_secs`: a ban lasts its level times 5 minutes.
pub(crate) const BASE_SECS: f64 = 300.0;
/// `ban.max_level`: the level is capped at 5, so no ban lasts longer than 25 minutes ...
pub(crate) const MAX_LEVEL: u64 = 5;
/// `ban.level_memory_secs`: ... and counts the bans of the last 24 hours.
pub(crate) const LEVEL_MEMORY_SECS: f64 = 86_400.0;

// [store]

/// `store.retention_secs`: Easemob keeps failed callbacks in its exception store for 3 days
/// by default.
pub(crate) const RETENTION_SECS: f64 = 259_200.0;
/// `store.utc_offset`: UTC, the one zone that means the same on every machine; a user who wants
/// the date keys of a provider's servers sets their zone here (e.g. `+08:00`).
pub(crate) const UTC_OFFSET: &str = "+00:00";

// [api]

/// `api.rate_per_sec`: this project's choice (the limit is on the simulator's own REST API):
/// ample for tests driven by hand or by script, low enough that a runaway client is answered
/// 429 instead of flooding the queue; load tests raise it or use `generate`.
pub(crate) const RATE_PER_SEC: u64 = 100;
/// `api.burst`: two seconds' worth of the default rate at once, so that a test firing a batch
/// is not throttled at its start.
pub(crate) const BURST: u64 = 200;

// [[apps]]

/// `apps[].sdk_app_id`: a number shaped like a Tencent `SdkAppid` (ten digits starting 14),
/// for the receiver that checks the `SdkAppid` query parameter, as Tencent tells it to, before
/// the user has set the real one.
pub(crate) const SDK_APP_ID: u64 = 1_400_000_000;
/// `apps[].exception_store`: on, so that a failed callback can be inspected and replayed, as
/// Agora and Easemob offer it.
pub(crate) const EXCEPTION_STORE: bool = true;
/// `apps[].max_rules`: Agora allows four pre-send and post-send rules together by default.
pub(crate) const MAX_RULES: u64 = 4;

// The delivery policy (`timeout_secs`, `retries`, `bans`) and the pre-send `timeout_ms`
// default to the provider's: `dialect::defaults`.

// [[apps.rules]]

/// `rules[].enabled`: a rule in the file is meant to run.
pub(crate) const ENABLED: bool = true;
/// `rules[].include_rest`: Easemob's post-send callbacks cover messages sent through its REST
/// API as well as the SDK's; a rule can opt out.
pub(crate) const INCLUDE_REST: bool = true;
/// `rules[].on_failure`: Agora's default failure policy lets the message through, and Tencent
/// sends the message normally when a before-send callback times out.
pub(crate) const ON_FAILURE: OnFailure = OnFailure::Pass;
/// `rules[].notify_sender`: Agora does not tell the sender of a blocked message by default.
pub(crate) const NOTIFY_SENDER: bool = false;
