//! `GET /metrics`: Prometheus text, rendered by `metrics-exporter-prometheus`, from a
//! [`Sample`] of the simulator's counts (this module knows nothing of the simulator).
//!
//! Each simulator has its own recorder (no global state, so tests can run several). Counts
//! that already live in lock-free counters (per-rule outcomes, bans, queue depth, store size)
//! are copied into the recorder when `/metrics` is scraped; the attempt latency histogram is
//! recorded per attempt through a handle registered once per rule.

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::domain::{FinalOutcome, Outcome};

/// Attempt latency buckets, seconds: loopback receivers answer in well under a millisecond,
/// the agora timeout is 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const META: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The simulator's metrics registry.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        Self { recorder, handle }
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.to_string()))
            .collect::<Vec<_>>(),
    )
}

impl Metrics {
    /// A counter handle.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder.register_counter(&key(name, labels), &META)
    }

    /// A gauge handle.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &META)
    }

    /// A histogram handle.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.recorder.register_histogram(&key(name, labels), &META)
    }

    /// The Prometheus text, with the counts of `sample` brought up to date first.
    pub fn render(&self, sample: &Sample<'_>) -> String {
        let mut banned = 0u64;
        for r in &sample.rules {
            let (app, name) = (r.app, r.rule);
            for (o, n) in FinalOutcome::ALL.iter().zip(r.finals) {
                self.counter(
                    "callback_sim_callbacks_total",
                    &[("app", app), ("rule", name), ("outcome", o.as_str())],
                )
                .absolute(n);
            }
            for (o, n) in Outcome::ALL.iter().zip(r.outcomes) {
                self.counter(
                    "callback_sim_attempts_total",
                    &[("app", app), ("rule", name), ("outcome", o.as_str())],
                )
                .absolute(n);
            }
            banned += u64::from(r.banned);
            self.gauge("callback_sim_rule_banned", &[("app", app), ("rule", name)])
                .set(f64::from(u8::from(r.banned)));
            self.counter("callback_sim_bans_started_total", &[("app", app), ("rule", name)])
                .absolute(r.bans_started);
        }
        self.gauge("callback_sim_bans_active", &[]).set(banned as f64);
        self.gauge("callback_sim_queue_depth", &[]).set(sample.queued as f64);
        self.gauge("callback_sim_in_flight", &[]).set(sample.in_flight as f64);
        self.gauge("callback_sim_store_failing", &[])
            .set(f64::from(u8::from(sample.store_failing)));
        self.counter("callback_sim_durable_flushes_total", &[])
            .absolute(sample.durable_flushes);
        for (app, size) in &sample.store_items {
            self.gauge("callback_sim_store_items", &[("app", app)])
                .set(*size as f64);
        }
        self.handle.render()
    }
}

/// What `/metrics` shows, read from the simulator at scrape time.
#[derive(Debug)]
pub struct Sample<'a> {
    /// Every rule of every app.
    pub rules: Vec<RuleSample<'a>>,
    /// Callbacks accepted and not yet started.
    pub queued: usize,
    /// Deliveries running now.
    pub in_flight: usize,
    /// Stored callbacks per app.
    pub store_items: Vec<(&'a str, u64)>,
    /// The exception store's last write failed (it has not written since).
    pub store_failing: bool,
    /// Flushes of durable accept so far (each served every request that arrived meanwhile).
    pub durable_flushes: u64,
}

/// One rule's counts.
#[derive(Debug)]
pub struct RuleSample<'a> {
    /// The app's id.
    pub app: &'a str,
    /// The rule's name.
    pub rule: &'a str,
    /// Callbacks per final outcome, in [`FinalOutcome::ALL`] order.
    pub finals: [u64; FinalOutcome::ALL.len()],
    /// Attempts (and callbacks not attempted) per outcome, in [`Outcome::ALL`] order.
    pub outcomes: [u64; Outcome::ALL.len()],
    /// Whether it is banned now.
    pub banned: bool,
    /// Bans started since the simulator started.
    pub bans_started: u64,
}
