//! What a run measured: the [`Tally`] of outcomes and latencies the observer fills, the live
//! view, and at the end the table and the `--report` JSON ([`Report`]), with the peak RSS.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{GenerateError, GenerateOptions};
use crate::domain::{EventType, FinalOutcome, Outcome};

/// What the events of one type became (`--event-mix`).
#[derive(Default)]
pub(super) struct EventTally {
    /// Events handed to the simulator (over REST: accepted by the server).
    pub(super) sent: AtomicU64,
    /// Post-send callbacks they queued.
    pub(super) queued: AtomicU64,
    /// Events a tencent before-command refused (docs/behaviour.md §9): no callbacks.
    pub(super) blocked: AtomicU64,
    finals: [AtomicU64; FinalOutcome::ALL.len()],
}

/// Whether callbacks of `t` are a message's rather than an event's.
fn is_message(t: EventType) -> bool {
    matches!(t, EventType::Chat | EventType::ChatOffline)
}

/// Counters and the latency histogram, shared with the observer.
pub(super) struct Tally {
    /// Per event type, by [`EventType::index`] (the message types stay at 0).
    events: [EventTally; EventType::ALL.len()],
    finals: [AtomicU64; FinalOutcome::ALL.len()],
    last: [AtomicU64; Outcome::ALL.len()],
    pub(super) done: AtomicU64,
    /// Messages a pre-send rule blocked (docs/behaviour.md §4.2): they make no post-send
    /// callbacks.
    pub(super) blocked: AtomicU64,
    /// 429 answers of a `--server` (each one waited out and retried).
    pub(super) throttled: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
    /// The instant the send times below count from.
    origin: Instant,
    /// When the first and the last message went out, in µs since `origin` (`u64::MAX` and 0
    /// until one has): the achieved rate is measured between them.
    first_sent_us: AtomicU64,
    last_sent_us: AtomicU64,
    /// When the last callback ended: the callback rate is measured from the first message sent
    /// to then, not over the start (opening the store) and the stop.
    pub(super) ended: std::sync::OnceLock<Instant>,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            events: std::array::from_fn(|_| EventTally::default()),
            finals: Default::default(),
            last: Default::default(),
            done: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")),
            origin: Instant::now(),
            first_sent_us: AtomicU64::new(u64::MAX),
            last_sent_us: AtomicU64::new(0),
            ended: std::sync::OnceLock::new(),
        }
    }

    /// Notes that a message went out at `at` (in-process: handed to the simulator; over REST:
    /// the request that was accepted).
    pub(super) fn sent_at(&self, at: Instant) {
        let us = at.saturating_duration_since(self.origin).as_micros() as u64;
        self.first_sent_us.fetch_min(us, Ordering::Relaxed);
        self.last_sent_us.fetch_max(us, Ordering::Relaxed);
    }

    /// When the first and the last message went out, if any did.
    fn send_span(&self) -> Option<(Instant, Instant)> {
        let first = self.first_sent_us.load(Ordering::Relaxed);
        let last = self.last_sent_us.load(Ordering::Relaxed);
        (first != u64::MAX).then(|| {
            (
                self.origin + Duration::from_micros(first),
                self.origin + Duration::from_micros(last.max(first)),
            )
        })
    }

    /// The counters of events of type `t`.
    pub(super) fn event(&self, t: EventType) -> &EventTally {
        &self.events[t.index()]
    }

    /// Events sent, all types together.
    pub(super) fn events_sent(&self) -> u64 {
        self.events.iter().map(|e| e.sent.load(Ordering::Relaxed)).sum()
    }

    /// Counts a callback of type `t` that ended as `fin` (its last attempt `last`), `latency`
    /// after it was accepted: in the totals, and per event type for events.
    pub(super) fn record(&self, t: EventType, fin: FinalOutcome, last: Outcome, latency: Duration) {
        if !is_message(t) {
            self.events[t.index()].finals[fin.index()].fetch_add(1, Ordering::Relaxed);
        }
        self.finals[fin.index()].fetch_add(1, Ordering::Relaxed);
        self.last[last.index()].fetch_add(1, Ordering::Relaxed);
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        if let Ok(mut h) = self.latency_us.lock() {
            let _ = h.record(us);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Callbacks whose final outcome was `stored`.
    pub(super) fn stored(&self) -> u64 {
        self.finals[FinalOutcome::Stored.index()].load(Ordering::Relaxed)
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
    /// `rate_asked`: messages (and events) per second asked for (0 = as fast as possible).
    pub rate_asked: u32,
    /// `rate_achieved`: messages and events per second between the first one sent and the
    /// last (`n − 1` intervals over `sending_secs`; a run of one: 1 over `duration_secs`).
    pub rate_achieved: f64,
    /// `messages`: messages sent (events are counted in `events`).
    pub messages: u64,
    /// `sending_secs`: from the first message or event sent to the last, in seconds.
    pub sending_secs: f64,
    /// `blocked`: messages a pre-send rule blocked (docs/behaviour.md §4.2); they make no
    /// post-send callbacks.
    pub blocked: u64,
    /// `throttled`: 429 answers of the `--server` (rate limit or full queue), each waited out
    /// and the message sent again; 0 in-process.
    pub throttled: u64,
    /// `callbacks`: callbacks that reached their final outcome (of messages and events).
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
    /// `events`: each event type of `--event-mix`, by name (empty with messages only). Their
    /// callbacks are also in `callbacks`, `outcomes` and `latency_ms`.
    pub events: BTreeMap<&'static str, EventCounts>,
}

/// What the events of one type became, in the [`Report`].
#[derive(Debug, Serialize)]
pub struct EventCounts {
    /// `sent`: events sent.
    pub sent: u64,
    /// `queued`: post-send callbacks they queued (one per rule that takes them).
    pub queued: u64,
    /// `blocked`: events a tencent before-command refused (no callbacks).
    pub blocked: u64,
    /// `callbacks`: their callbacks that reached a final outcome.
    pub callbacks: u64,
    /// `outcomes`: those callbacks by final outcome (docs/behaviour.md §5).
    pub outcomes: BTreeMap<&'static str, u64>,
}

impl EventCounts {
    fn new(tally: &EventTally) -> Self {
        let outcomes: BTreeMap<&'static str, u64> = FinalOutcome::ALL
            .iter()
            .map(|o| (o.as_str(), tally.finals[o.index()].load(Ordering::Relaxed)))
            .collect();
        Self {
            sent: tally.sent.load(Ordering::Relaxed),
            queued: tally.queued.load(Ordering::Relaxed),
            blocked: tally.blocked.load(Ordering::Relaxed),
            callbacks: outcomes.values().sum(),
            outcomes,
        }
    }
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
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} sent  {msg}",
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
            let mut line = format!(
                "delivered {} violation {} stored {} dropped {} | {rate:.0} sent/s | p99 {:.2} ms",
                f(FinalOutcome::Delivered),
                f(FinalOutcome::Violation),
                f(FinalOutcome::Stored),
                f(FinalOutcome::Dropped),
                tally.percentile_ms(0.99)
            );
            let events = tally.events_sent();
            if events > 0 {
                line.push_str(&format!(" | events {events}"));
            }
            for (what, n) in [("blocked", &tally.blocked), ("throttled", &tally.throttled)] {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    line.push_str(&format!(" | {what} {n}"));
                }
            }
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
    /// The report of a run that sent `sent` messages and events, from what `tally` saw.
    pub(super) fn new(opts: &GenerateOptions, mode: &'static str, sent: u64, tally: &Tally, started: Instant) -> Self {
        let ended = tally.ended.get().copied().unwrap_or_else(Instant::now);
        let (first, last) = tally.send_span().unwrap_or((started, started));
        let elapsed = ended.saturating_duration_since(first).as_secs_f64().max(1e-6);
        let sending = last.duration_since(first).as_secs_f64();
        // n messages make n − 1 intervals: counting n over them would overstate a short run.
        let rate_achieved = if sent >= 2 && sending > 0.0 {
            (sent - 1) as f64 / sending
        } else {
            sent as f64 / elapsed
        };
        let done = tally.done.load(Ordering::Relaxed);
        Report {
            app: opts.app.clone(),
            mode,
            seed: opts.seed,
            rate_asked: opts.rate,
            rate_achieved,
            messages: sent.saturating_sub(tally.events_sent()),
            sending_secs: sending,
            blocked: tally.blocked.load(Ordering::Relaxed),
            throttled: tally.throttled.load(Ordering::Relaxed),
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
            events: opts
                .mix
                .events
                .events()
                .iter()
                .map(|(t, _)| (t.as_str(), EventCounts::new(tally.event(*t))))
                .collect(),
        }
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
        let events: u64 = r.events.values().map(|e| e.sent).sum();
        if r.events.is_empty() {
            println!(
                "messages   {} sent over {:.2} s: {:.0}/s achieved, {asked} asked",
                r.messages, r.sending_secs, r.rate_achieved
            );
        } else {
            println!(
                "messages   {} and {events} events sent over {:.2} s: {:.0}/s achieved, {asked} asked",
                r.messages, r.sending_secs, r.rate_achieved
            );
        }
        if r.blocked > 0 {
            println!("blocked    {} (by pre-send)", r.blocked);
        }
        if r.mode == "rest" {
            println!("throttled  {} (429 answers, waited out and sent again)", r.throttled);
        }
        println!(
            "callbacks  {} in {:.2} s ({:.0}/s)",
            r.callbacks, r.duration_secs, r.callbacks_per_sec
        );
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
        if !r.events.is_empty() {
            let w = r.events.keys().map(|k| k.len()).max().unwrap_or(0);
            print!(
                "{:<w$} {:>6} {:>7} {:>7}",
                "event",
                "sent",
                "queued",
                "blocked",
                w = w + 2
            );
            for o in FinalOutcome::ALL {
                print!(" {:>9}", o.as_str());
            }
            println!();
            for (name, e) in &r.events {
                print!("  {name:<w$} {:>6} {:>7} {:>7}", e.sent, e.queued, e.blocked);
                for o in FinalOutcome::ALL {
                    print!(" {:>9}", e.outcomes.get(o.as_str()).copied().unwrap_or(0));
                }
                println!();
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

/// The `--report` file, opened before the run so that a path that cannot be written is
/// refused before anything is sent.
pub(super) struct ReportFile {
    path: PathBuf,
    file: File,
    /// Whether opening it created it (then a failed run removes it again).
    created: bool,
}

impl ReportFile {
    /// Opens `path` for writing without truncating it (an existing report stays as it is until
    /// this run has one to write).
    pub(super) fn open(path: &Path) -> Result<Self, GenerateError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| GenerateError::Usage(format!("cannot write the report to {}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            created: !existed,
        })
    }

    /// Writes `report` as pretty JSON, replacing what the file held.
    pub(super) fn write(mut self, report: &Report) -> Result<(), GenerateError> {
        let text = serde_json::to_string_pretty(report).expect("a report serializes") + "\n";
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all(text.as_bytes()))
            .map_err(|e| GenerateError::Run(format!("cannot write the report to {}: {e}", self.path.display())))?;
        println!("report written to {}", self.path.display());
        Ok(())
    }

    /// The run failed: leave no empty report behind.
    pub(super) fn abandon(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
