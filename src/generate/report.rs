//! What a run measured: the [`Tally`] of outcomes and latencies the observer fills, the live
//! view, and at the end the table and the `--report` JSON ([`Report`]), with the peak RSS.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{GenerateError, GenerateOptions};
use crate::domain::{FinalOutcome, Outcome};

/// Counters and the latency histogram, shared with the observer.
pub(super) struct Tally {
    finals: [AtomicU64; FinalOutcome::ALL.len()],
    last: [AtomicU64; Outcome::ALL.len()],
    pub(super) done: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
    /// When the first message went out, and when the last callback ended: the rates are
    /// measured over that span, not over the start (opening the store) and the stop.
    pub(super) began: std::sync::OnceLock<Instant>,
    pub(super) ended: std::sync::OnceLock<Instant>,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            finals: Default::default(),
            last: Default::default(),
            done: AtomicU64::new(0),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")),
            began: std::sync::OnceLock::new(),
            ended: std::sync::OnceLock::new(),
        }
    }

    pub(super) fn record(&self, fin: FinalOutcome, last: Outcome, latency: Duration) {
        self.finals[fin.index()].fetch_add(1, Ordering::Relaxed);
        self.last[last.index()].fetch_add(1, Ordering::Relaxed);
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        if let Ok(mut h) = self.latency_us.lock() {
            let _ = h.record(us);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        let h = self.latency_us.lock().expect("histogram lock");
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    }
}

/// The `--report` JSON (docs/behaviour.md §9: `rate_achieved`, `outcomes`, `latency_ms`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// `app`: the app id the traffic went to.
    pub app: String,
    /// `mode`: `in-process` or `rest` (with `--server`).
    pub mode: &'static str,
    /// `seed`: the seed used, to reproduce the run.
    pub seed: u64,
    /// `rate_asked`: messages per second asked for (0 = as fast as possible).
    pub rate_asked: u32,
    /// `rate_achieved`: messages sent per second of the run.
    pub rate_achieved: f64,
    /// `messages`: messages sent.
    pub messages: u64,
    /// `callbacks`: callbacks that reached their final outcome.
    pub callbacks: u64,
    /// `callbacks_per_sec`: `callbacks` per second of the run.
    pub callbacks_per_sec: f64,
    /// `duration_secs`: the traffic's length, in seconds: from the first message sent to the last
    /// callback's final outcome (starting the simulator and stopping it are not counted).
    pub duration_secs: f64,
    /// Final outcomes (docs/behaviour.md §5).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Last-attempt outcomes: why callbacks were stored or dropped.
    pub last_attempts: BTreeMap<&'static str, u64>,
    /// `latency_ms`: ingest-to-final-outcome latency in milliseconds, keyed `p50`, `p90`,
    /// `p99`, `p99.9` and `max`.
    pub latency_ms: BTreeMap<&'static str, f64>,
    /// `peak_rss_mb`: this process's peak resident memory in MiB (see [`peak_rss_mb`]); NaN off
    /// Linux.
    pub peak_rss_mb: f64,
}

/// Peak resident memory of this process, from /proc (Linux); NaN elsewhere.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The live view: an indicatif bar on a terminal, else one line per second.
pub(super) fn spawn_progress(
    tally: Arc<Tally>,
    sent: Arc<AtomicU64>,
    total: Option<u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tty = std::io::stdout().is_terminal();
        let bar = if tty {
            let b = match total {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::new_spinner(),
            };
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} messages  {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            Some(b)
        } else {
            None
        };
        let started = Instant::now();
        let mut last = (Instant::now(), 0u64);
        let mut tick = tokio::time::interval(if tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        });
        tick.tick().await;
        loop {
            tick.tick().await;
            let n = sent.load(Ordering::Relaxed);
            let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), n);
            let f = |o: FinalOutcome| tally.finals[o.index()].load(Ordering::Relaxed);
            let line = format!(
                "delivered {} violation {} stored {} dropped {} | {rate:.0} msg/s | p99 {:.2} ms",
                f(FinalOutcome::Delivered),
                f(FinalOutcome::Violation),
                f(FinalOutcome::Stored),
                f(FinalOutcome::Dropped),
                tally.percentile_ms(0.99)
            );
            match &bar {
                Some(b) => {
                    b.set_position(n);
                    b.set_message(line);
                }
                None => println!("[{:>5.1}s] sent {n} | {line}", started.elapsed().as_secs_f64()),
            }
        }
    })
}

impl Report {
    /// The report of a run that sent `sent` messages, from what `tally` saw.
    pub(super) fn new(opts: &GenerateOptions, mode: &'static str, sent: u64, tally: &Tally, started: Instant) -> Self {
        let began = tally.began.get().copied().unwrap_or(started);
        let ended = tally.ended.get().copied().unwrap_or_else(Instant::now);
        let elapsed = ended.duration_since(began).as_secs_f64().max(1e-6);
        let done = tally.done.load(Ordering::Relaxed);
        Report {
            app: opts.app.clone(),
            mode,
            seed: opts.seed,
            rate_asked: opts.rate,
            rate_achieved: sent as f64 / elapsed,
            messages: sent,
            callbacks: done,
            callbacks_per_sec: done as f64 / elapsed,
            duration_secs: elapsed,
            outcomes: FinalOutcome::ALL
                .iter()
                .map(|o| (o.as_str(), tally.finals[o.index()].load(Ordering::Relaxed)))
                .collect(),
            last_attempts: Outcome::ALL
                .iter()
                .map(|o| (o.as_str(), tally.last[o.index()].load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            latency_ms: [
                ("p50", 0.5),
                ("p90", 0.9),
                ("p99", 0.99),
                ("p99.9", 0.999),
                ("max", 1.0),
            ]
            .into_iter()
            .map(|(k, q)| (k, tally.percentile_ms(q)))
            .collect(),
            peak_rss_mb: peak_rss_mb(),
        }
    }

    /// Writes the report as pretty JSON to `path`.
    pub(super) fn write(&self, path: &Path) -> Result<(), GenerateError> {
        let text = serde_json::to_string_pretty(self).expect("a report serializes");
        std::fs::write(path, text + "\n")
            .map_err(|e| GenerateError(format!("cannot write the report to {}: {e}", path.display())))
    }

    /// Prints the final table.
    pub(super) fn print_table(&self) {
        let r = self;
        let asked = if r.rate_asked == 0 {
            "unbounded".to_string()
        } else {
            format!("{}/s", r.rate_asked)
        };
        println!();
        println!(
            "messages   {} in {:.2} s: {:.0}/s achieved, {asked} asked",
            r.messages, r.duration_secs, r.rate_achieved
        );
        println!("callbacks  {} ({:.0}/s)", r.callbacks, r.callbacks_per_sec);
        println!("outcome        count");
        for (k, v) in &r.outcomes {
            println!("  {k:<12} {v}");
        }
        if r.last_attempts.keys().any(|k| *k != "delivered") {
            println!("last attempt   count");
            for (k, v) in r.last_attempts.iter().filter(|(k, _)| **k != "delivered") {
                println!("  {k:<12} {v}");
            }
        }
        let l = &r.latency_ms;
        println!(
            "latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l["p50"], l["p90"], l["p99"], l["p99.9"], l["max"]
        );
        println!("peak RSS     {:.1} MB", r.peak_rss_mb);
    }
}
