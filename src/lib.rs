#![warn(missing_docs)]
//! callback-sim plays the sending side of an IM provider's callback (webhook) system —
//! Agora Chat / Shengwang-Easemob and Tencent Cloud IM — so that app backends can be tested
//! against real, signed callbacks with the provider's retry, timeout and failure behaviour.
//!
//! The crate, module by module:
//!
//! - [`config`] — `config.toml`: the file format and its validation into typed settings.
//! - [`domain`] — validated names (`AppId`, `RuleName`, `CallbackUrl`) and vocabularies (`Outcome`…).
//! - [`message`] — a message of the simulated IM world, parsed from its REST JSON.
//! - [`event`] — non-message events: user online/offline, group members joined.
//! - [`presend`] — pre-send (moderation) callbacks and their verdicts.
//! - [`dialect`] — provider wire formats: callback bodies and signatures.
//! - [`runtime`] — apps and rules as they run: HTTP clients, counters, rate limiters.
//! - [`ban`] — the failure window and escalating bans, pure over time.
//! - [`store`] — the sled exception store: buckets, durable writes, retention.
//! - [`replay`] — re-sending a stored bucket (storage/retry).
//! - [`clock`] — injected wall-clock time.
//! - [`sim`] — the core: a message in, signed callbacks queued ([`sim::Simulator::submit`]).
//! - [`dispatch`] — the bounded queue, workers, attempts, retries and outcomes.
//! - [`api`] — the REST API (SPEC §8).
//! - [`metrics`] — `GET /metrics` in Prometheus text.
//! - [`server`] — the simulator bound to a socket; graceful stop.
//! - [`sink`] — a receiver that verifies, counts and injects faults.
//! - [`generate`] — seeded realistic traffic at a fixed rate, with a live view and a report.
//! - [`tls`] — PEM files and rustls settings for HTTPS and mutual TLS, both ends.
//! - [`harness`] — [`harness::Sim`]: the simulator inside a test, in a few lines.
//! - [`demo`] — the narrated demo on the embedded default config.
//! - [`commands`] — the CLI commands; [`logging`] — tracing setup.

pub mod api;
pub mod ban;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dialect;
pub mod dispatch;
pub mod domain;
pub mod event;
pub mod generate;
pub mod harness;
pub mod message;
pub mod metrics;
pub mod presend;
pub mod replay;
pub mod runtime;
pub mod server;
pub mod sim;
pub mod sink;
pub mod store;
pub mod tls;

pub use config::Config;
pub use server::Server;
pub use sim::Simulator;
