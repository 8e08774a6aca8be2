#![warn(missing_docs)]
// Every type a public signature shows is re-exported: the surface below is the whole of it.
#![warn(unnameable_types)]
//! callback-sim plays the sending side of an IM provider's callback (webhook) system —
//! Agora Chat / Shengwang-Easemob and Tencent Cloud IM — so that app backends can be tested
//! against real, signed callbacks with the provider's retry, timeout, ban and exception-store
//! behaviour. The `callback-sim` binary is [`cli::main`]; everything it does goes through the
//! types below.
//!
//! # In a Rust test
//!
//! Start a receiver and the simulator on port 0, send a message, assert on what happened:
//!
//! ```
//! use std::time::Duration;
//! use callback_sim::{AppBuilder, Config, FinalOutcome, Message, Reply, RuleBuilder, Sim, Sink};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let sink = Sink::recording(Some("s3cret")).await.unwrap();
//! let config = Config::builder()
//!     .app(AppBuilder::new("app", "token").rule(RuleBuilder::post_send("sync", &sink.url("/cb"), "s3cret")))
//!     .build()
//!     .unwrap();
//! let sim = Sim::start(config).await.unwrap();
//! let sent = sim.send("app", Message::text("alice", "bob", "hi")).await.unwrap();
//! assert_eq!(sent.callbacks[0].outcome, FinalOutcome::Delivered);
//! assert_eq!(sink.wait_for(1, Duration::from_secs(5)).await.unwrap().len(), 1);
//!
//! sink.reply(Reply::status(500));
//! let sent = sim.send("app", Message::text("alice", "bob", "again")).await.unwrap();
//! assert_eq!(sent.callbacks[0].outcome, FinalOutcome::Stored);
//! let bucket = &sim.buckets("app").unwrap()[0];
//! assert_eq!(sim.items("app", bucket.date, 0, 10).unwrap()[0].attempts, 2);
//! # });
//! ```
//!
//! # The public API
//!
//! - **Configuration** — [`Config`]: parsed from TOML ([`Config::load`], [`Config::parse`]) or
//!   built in code ([`Config::builder`], [`AppBuilder`], [`RuleBuilder`]); every problem is a
//!   [`ConfigError`] naming the key. The [`config`] module holds the typed settings it is made of.
//! - **The simulator** — [`Server`]: the REST API and the dispatcher on `server.listen`, what
//!   `callback-sim serve` runs; [`Sim`]: a `Server` on `127.0.0.1:0` with a temp data dir, for
//!   tests. Both [`send`](Server::send) a [`Message`] (or [`send_event`](Server::send_event)
//!   an [`Event`]) and answer a [`Sent`] with a [`CallbackReport`] per callback, list the
//!   store's [`BucketInfo`]s and [`StoredCallback`]s, [`replay`](Server::replay) or
//!   [`delete`](Server::delete_bucket) a bucket ([`ReplayOutcome`]), show each rule's
//!   [`RuleState`] and [`reset`](Server::reset_rule) it, and stop gracefully on
//!   [`shutdown`](Server::shutdown) or drop. Errors: [`StartError`], [`SimError`];
//!   [`Message::check`] says what is wrong with a message ([`MessageError`]).
//! - **Time** — [`Clock`] and [`ManualClock`]: start a simulator with
//!   [`Server::start_with_clock`] to move bans and retention forward without waiting.
//! - **The receiver** — [`Sink`]: verifies signatures, counts callbacks and duplicates, answers
//!   as scripted ([`Reply`]), records what it got ([`ReceivedCallback`], [`Sink::wait_for`]),
//!   serves HTTPS and mutual TLS ([`SinkTls`]): what `callback-sim sink` runs.
//! - **Signatures** — [`agora_sign`] and [`agora_verify`], for receivers of agora callbacks;
//!   [`tencent_sign`] for receivers of signed tencent URLs.
//! - **Vocabulary** (docs/behaviour.md §1, §5) — [`Outcome`], [`FinalOutcome`], [`EventType`],
//!   [`RuleKind`], [`Dialect`], [`ChatType`], [`MessageType`], [`Source`], [`Platform`],
//!   [`OnFailure`], [`JoinType`], [`GroupType`], and the validated names [`AppId`], [`RuleName`], [`CallbackUrl`],
//!   [`DateKey`].
//! - **The command line** — [`cli::main`].
//!
//! # Inside (private modules, for contributors)
//!
//! The modules form layers, each using only the ones below it (`tests/modules.rs` checks it;
//! docs/architecture.md draws it), from the top:
//!
//! - `cli` (commands, demo, logging); `generate` (the traffic generator) and `harness` ([`Sim`]);
//! - `server` ([`Server`]) over `api` (the REST API, docs/behaviour.md §8);
//! - `sim` (a message in, signed callbacks queued: the core), over `presend` (moderation
//!   callbacks) and `replay` (re-sending a bucket);
//! - `dispatch` (lanes, workers, attempts under the policy, outcomes, settling);
//! - `runtime` (apps and rules as they run) and `sink` (the test receiver);
//! - `dialect` (each provider's wire format, behind one interface) and `store` (the sled
//!   exception store);
//! - `transport` (one HTTP attempt and its classification), `ban` (the failure window, pure
//!   over time), `message` and `event` (what enters);
//! - `config`, `ids` (callIds and message ids), `metrics` (Prometheus text from a sample);
//! - `domain` (validated names and vocabularies), `clock`, `tls` (PEM files and rustls
//!   settings).

mod api;
mod ban;
mod check;
pub mod cli;
mod clock;
pub mod config;
mod dialect;
mod dispatch;
mod domain;
mod event;
mod generate;
mod harness;
mod history;
mod ids;
mod message;
mod metrics;
mod presend;
mod replay;
mod runtime;
mod server;
mod sim;
mod sink;
mod store;
mod tls;
mod transport;

pub use clock::{Clock, ManualClock};
pub use config::{AppBuilder, Config, ConfigError, RuleBuilder};

pub use dialect::Signature;
pub use dialect::agora::{sign as agora_sign, verify as agora_verify};
pub use dialect::tencent::{MAX_SKEW_SECS as TENCENT_MAX_SKEW_SECS, sign as tencent_sign};
pub use dispatch::{CallbackReport, EnqueueError};
pub use domain::{
    AppId, CallbackUrl, ChatType, DateKey, Dialect, DomainError, EventType, FinalOutcome, GroupType, JoinType,
    MessageType, OnFailure, Outcome, Platform, RuleKind, RuleName, RuleStatus, Source,
};
pub use event::Event;
pub use harness::Sim;
pub use message::{Message, MessageError};
pub use replay::{ReplayError, ReplayOutcome};
pub use runtime::StatsSnapshot;
pub use server::{Receipt, RuleState, Sent, Server, SimError, StartError};
pub use sink::{ReceivedCallback, Reply, Sink, SinkOptions, SinkSummary, SinkTls, StreamProgress, WaitTimeout};
pub use store::{BucketInfo, StoreError, StoredCallback};
