//! `callback-sim generate`: realistic traffic at a fixed rate, through the same pipeline as
//! REST ingestion (in-process), or over REST against a running `serve` (`--server`).
//!
//! [`Traffic`] is the pure, seeded model of the simulated IM world: users, groups, chatrooms,
//! a mix of chat and message types with plausible bodies, offline recipients. [`run`] paces it
//! with `governor`, watches every callback's final outcome and latency, shows a live view, and
//! ends with a table (and `--report` JSON) of outcomes and latency percentiles.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::dispatch::EnqueueError;
use crate::domain::{ChatType, FinalOutcome, MessageType, Outcome, Platform, Source};
use crate::message::Message;
use crate::server::{Server, SimError};

/// How the traffic looks. Weights are relative (they need not sum to 100).
#[derive(Debug, Clone)]
pub struct Mix {
    /// Weights of `chat`, `groupchat`, `chatroom`.
    pub chat_types: [u32; 3],
    /// Weights of `txt`, `img`, `audio`, `video`, `file`, `loc`, `cmd`, `custom`.
    pub message_types: [u32; 8],
    /// Chance that a recipient (one-to-one peer, group member) is offline.
    pub offline_ratio: f64,
    /// Members per group.
    pub group_size: usize,
    /// Distinct users.
    pub users: usize,
    /// Chance that a message was sent through the REST API (`source = rest`).
    pub rest_ratio: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            chat_types: [60, 30, 10],
            message_types: [70, 10, 5, 3, 3, 3, 3, 3],
            offline_ratio: 0.2,
            group_size: 8,
            users: 1000,
            rest_ratio: 0.1,
        }
    }
}

/// Parses `chat=60,groupchat=30,chatroom=10`-style weights over a vocabulary.
pub fn parse_weights<const N: usize>(text: &str, names: [&str; N]) -> Result<[u32; N], String> {
    let mut w = [0u32; N];
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected name=weight"))?;
        let i = names
            .iter()
            .position(|n| *n == k.trim())
            .ok_or_else(|| format!("{k:?}: expected one of {}", names.join(", ")))?;
        w[i] = v
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the weight must be a whole number"))?;
    }
    if w.iter().all(|&x| x == 0) {
        return Err("at least one weight must be above 0".into());
    }
    Ok(w)
}

/// The seeded model of the simulated IM world.
pub struct Traffic {
    rng: StdRng,
    mix: Mix,
    n: u64,
}

/// Texts of generated `txt` messages: short, varied, some non-ASCII (not from the SPEC).
const PHRASES: &[&str] = &[
    "hello",
    "are you coming tonight?",
    "sent the report, have a look",
    "lol",
    "on my way",
    "meeting moved to 3pm",
    "can you review my PR?",
    "good morning!",
    "thanks a lot",
    "see you tomorrow",
    "where are we meeting?",
    "👍",
];
/// Actions of generated `cmd` messages (plausible, not from the SPEC).
const ACTIONS: &[&str] = &["typing", "read_ack", "recall", "delivered"];
/// Platforms of generated client messages: every SPEC §4.3 `OptPlatform` a client can have
/// (`RESTAPI` is for `source = rest`, `Unknown` for no platform).
const PLATFORMS: &[Platform] = &[
    Platform::Ios,
    Platform::Android,
    Platform::Web,
    Platform::Windows,
    Platform::Mac,
];

impl Traffic {
    /// A model that produces the same messages for the same `seed` and `mix`.
    pub fn new(seed: u64, mix: Mix) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            mix,
            n: 0,
        }
    }

    fn pick(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.rng.random_range(0..total.max(1));
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    fn user(&mut self) -> String {
        format!("user_{}", self.rng.random_range(0..self.mix.users.max(2)))
    }

    fn body(&mut self, t: MessageType) -> Map<String, Value> {
        let n = self.n;
        let v = match t {
            MessageType::Txt => json!({ "msg": format!("{} #{n}", PHRASES[self.rng.random_range(0..PHRASES.len())]) }),
            MessageType::Img => json!({
                "url": format!("https://cdn.example.com/img/{n}.jpg"), "filename": format!("IMG_{n}.jpg"),
                "secret": format!("{:08x}", self.rng.random::<u32>()),
                "size": { "width": self.rng.random_range(320..4000), "height": self.rng.random_range(240..3000) },
                "file_length": self.rng.random_range(20_000..5_000_000),
            }),
            MessageType::Audio => json!({
                "url": format!("https://cdn.example.com/audio/{n}.amr"), "filename": format!("{n}.amr"),
                "length": self.rng.random_range(1..60), "file_length": self.rng.random_range(2_000..200_000),
            }),
            MessageType::Video => json!({
                "url": format!("https://cdn.example.com/video/{n}.mp4"), "filename": format!("{n}.mp4"),
                "thumb": format!("https://cdn.example.com/video/{n}.jpg"),
                "length": self.rng.random_range(1..300), "file_length": self.rng.random_range(100_000..50_000_000),
            }),
            MessageType::File => json!({
                "url": format!("https://cdn.example.com/files/{n}"), "filename": format!("report-{n}.pdf"),
                "file_length": self.rng.random_range(1_000..10_000_000),
            }),
            MessageType::Loc => json!({
                "lat": 39.9 + self.rng.random_range(-1000..1000) as f64 / 10_000.0,
                "lng": 116.4 + self.rng.random_range(-1000..1000) as f64 / 10_000.0,
                "addr": "Chaoyang District, Beijing",
            }),
            MessageType::Cmd => json!({ "action": ACTIONS[self.rng.random_range(0..ACTIONS.len())] }),
            MessageType::Custom => json!({
                "customEvent": "gift", "customExts": { "gift_id": format!("g{}", self.rng.random_range(1..50)), "count": self.rng.random_range(1..10) },
            }),
        };
        match v {
            Value::Object(m) => m,
            _ => unreachable!("bodies are objects"),
        }
    }

    /// The next message.
    pub fn next_message(&mut self) -> Message {
        self.n += 1;
        let chat_type =
            [ChatType::Chat, ChatType::GroupChat, ChatType::ChatRoom][self.pick(&self.mix.chat_types.clone())];
        let msg_type = MessageType::ALL[self.pick(&self.mix.message_types.clone())];
        let from = self.user();
        let (to, offline) = match chat_type {
            ChatType::Chat => {
                let mut to = self.user();
                while to == from {
                    to = self.user();
                }
                let off = self.rng.random_bool(self.mix.offline_ratio);
                let offline = if off { vec![to.clone()] } else { Vec::new() };
                (to, offline)
            }
            ChatType::GroupChat => {
                let group = self
                    .rng
                    .random_range(0..(self.mix.users / self.mix.group_size.max(1)).max(1));
                let offline = (0..self.mix.group_size.saturating_sub(1))
                    .filter(|_| self.rng.random_bool(self.mix.offline_ratio))
                    .map(|i| format!("user_{}", (group * self.mix.group_size + i + 1) % self.mix.users.max(1)))
                    .filter(|m| *m != from)
                    .collect();
                (format!("group_{group}"), offline)
            }
            ChatType::ChatRoom => (format!("room_{}", self.rng.random_range(0..10)), Vec::new()),
        };
        let source = if self.rng.random_bool(self.mix.rest_ratio) {
            Source::Rest
        } else {
            Source::Client
        };
        let mut ext = Map::new();
        if self.rng.random_bool(0.2) {
            ext.insert(
                "trace_id".into(),
                Value::String(format!("{:016x}", self.rng.random::<u64>())),
            );
        }
        let platform = Some(PLATFORMS[self.rng.random_range(0..PLATFORMS.len())]);
        let client_ip = Some(std::net::IpAddr::from([
            10,
            self.rng.random_range(0..255),
            self.rng.random_range(0..255),
            self.rng.random_range(1..255),
        ]));
        Message {
            from,
            to,
            chat_type,
            msg_type,
            body: self.body(msg_type),
            ext,
            source,
            platform,
            client_ip,
            offline,
        }
    }
}

impl Message {
    /// The REST JSON of this message (for `--server` runs).
    pub(crate) fn to_request_json(&self) -> Value {
        let mut v = json!({
            "from": self.from, "to": self.to, "chat_type": self.chat_type, "type": self.msg_type,
            "ext": self.ext, "source": self.source, "offline": self.offline,
        });
        if self.msg_type == MessageType::Txt {
            v["msg"] = self.body.get("msg").cloned().unwrap_or_default();
        } else {
            v["body"] = Value::Object(self.body.clone());
        }
        if let Some(p) = self.platform {
            v["platform"] = json!(p);
        }
        if let Some(ip) = self.client_ip {
            v["client_ip"] = json!(ip.to_string());
        }
        v
    }
}

/// What `generate` was asked to do.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// `--config`: the config file (in-process mode builds the simulator from it).
    pub config: PathBuf,
    /// `--app`: the id of the app whose rules get the traffic.
    pub app: String,
    /// Messages per second; 0 = as fast as the pipeline takes them.
    pub rate: u32,
    /// `--duration`: stop sending after this long; with `count`, whichever comes first.
    pub duration: Option<Duration>,
    /// `--count`: stop after this many messages; with `duration`, whichever comes first.
    pub count: Option<u64>,
    /// `--seed`: the [`Traffic`] seed (random when not given); shown in the report.
    pub seed: u64,
    /// `--report`: where to write the [`Report`] as JSON.
    pub report: Option<PathBuf>,
    /// The traffic mix (`--chat-types`, `--message-types`, ... on the command line).
    pub mix: Mix,
    /// Drive a running `serve` over REST instead of in-process.
    pub server: Option<String>,
    /// `--token`: the app's Bearer token; required with `server`.
    pub token: Option<String>,
    /// REST requests in flight at once in `--server` mode.
    pub connections: usize,
}

/// Counters and the latency histogram, shared with the observer.
struct Tally {
    finals: [AtomicU64; FinalOutcome::ALL.len()],
    last: [AtomicU64; Outcome::ALL.len()],
    done: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
    /// When the first message went out, and when the last callback ended: the rates are
    /// measured over that span, not over the start (opening the store) and the stop.
    began: std::sync::OnceLock<Instant>,
    ended: std::sync::OnceLock<Instant>,
}

impl Tally {
    fn new() -> Self {
        Self {
            finals: Default::default(),
            last: Default::default(),
            done: AtomicU64::new(0),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")),
            began: std::sync::OnceLock::new(),
            ended: std::sync::OnceLock::new(),
        }
    }

    fn record(&self, fin: FinalOutcome, last: Outcome, latency: Duration) {
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

/// The `--report` JSON (SPEC §9: `rate_achieved`, `outcomes`, `latency_ms`).
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
    /// Final outcomes (SPEC §5).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Last-attempt outcomes: why callbacks were stored or dropped.
    pub last_attempts: BTreeMap<&'static str, u64>,
    /// `latency_ms`: ingest-to-final-outcome latency in milliseconds, keyed `p50`, `p90`,
    /// `p99`, `p99.9` and `max`.
    pub latency_ms: BTreeMap<&'static str, f64>,
    /// `peak_rss_mb`: this process's peak resident memory in MiB (see [`peak_rss_mb`]); NaN off Linux.
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

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GenerateError(pub String);

/// Runs the generator; prints the live view and the final table; returns the report.
pub async fn run(opts: GenerateOptions) -> Result<Report, GenerateError> {
    if opts.count.is_none() && opts.duration.is_none() {
        return Err(GenerateError(
            "give --count N or --duration S (or both: whichever comes first)".into(),
        ));
    }
    let tally = Arc::new(Tally::new());
    let started = Instant::now();
    let (sent, mode) = match &opts.server {
        // On a worker thread of the runtime, like the deliveries it starts: waking them from
        // there takes no trip through the scheduler's global queue.
        None => {
            let (opts, tally) = (opts.clone(), tally.clone());
            let sent = tokio::spawn(async move { run_in_process(&opts, tally).await })
                .await
                .map_err(|e| GenerateError(format!("the generator failed: {e}")))??;
            (sent, "in-process")
        }
        Some(server) => (run_rest(&opts, server, tally.clone()).await?, "rest"),
    };
    let began = tally.began.get().copied().unwrap_or(started);
    let ended = tally.ended.get().copied().unwrap_or_else(Instant::now);
    let elapsed = ended.duration_since(began).as_secs_f64().max(1e-6);
    let done = tally.done.load(Ordering::Relaxed);
    let report = Report {
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
    };
    print_table(&report);
    if let Some(path) = &opts.report {
        let text = serde_json::to_string_pretty(&report).expect("a report serializes");
        std::fs::write(path, text + "\n")
            .map_err(|e| GenerateError(format!("cannot write the report to {}: {e}", path.display())))?;
        println!("report written to {}", path.display());
    }
    Ok(report)
}

fn print_table(r: &Report) {
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

/// `rate` per second, with a burst of 1 ms worth: steady pacing, not a second's worth of
/// messages at once. (governor waits on a timer thread of its own, finer than tokio's 1 ms:
/// messages go out evenly spread, which is what the latency at a given rate should measure.)
/// At low rates the burst is a few messages, so that a late wake-up on a busy machine is
/// caught up rather than lost.
fn quota(rate: NonZeroU32) -> Quota {
    let burst = (rate.get() / 1000).max(LOW_RATE_BURST).min(rate.get());
    Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// The smallest burst (see [`quota`]).
const LOW_RATE_BURST: u32 = 5;

/// Stops at `count` messages or after `duration`, whichever comes first.
struct Budget {
    count: Option<u64>,
    until: Option<Instant>,
}

impl Budget {
    fn more(&self, sent: u64) -> bool {
        self.count.is_none_or(|c| sent < c) && self.until.is_none_or(|u| Instant::now() < u)
    }
}

/// The live view: an indicatif bar on a terminal, else one line per second.
fn spawn_progress(tally: Arc<Tally>, sent: Arc<AtomicU64>, total: Option<u64>) -> tokio::task::JoinHandle<()> {
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

async fn run_in_process(opts: &GenerateOptions, tally: Arc<Tally>) -> Result<u64, GenerateError> {
    let mut config = Config::load(&opts.config).map_err(|e| GenerateError(format!("invalid config: {e}")))?;
    let app = config
        .apps
        .iter()
        .find(|a| a.id.as_str() == opts.app)
        .ok_or_else(|| GenerateError(format!("no app {:?} in {}", opts.app, opts.config.display())))?;
    let (rules, policy) = (app.rules.len(), app.policy);
    // The simulator's REST API listens too, on a free loopback port: never in the way of a
    // `serve` of the same config.
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let (backlog, capacity) = (config.delivery.concurrency * 4, config.delivery.queue_capacity);
    let sim = Server::start_seeded(config, opts.seed)
        .await
        .map_err(|e| GenerateError(e.to_string()))?;
    let observer = tally.clone();
    sim.watch(move |f, l, d| observer.record(f, l, d));
    let limiter = NonZeroU32::new(opts.rate).map(|r| RateLimiter::direct(quota(r)));
    let mut refused = 0u64;
    let budget = Budget {
        count: opts.count,
        until: opts.duration.map(|d| Instant::now() + d),
    };
    let mut traffic = Traffic::new(opts.seed, opts.mix.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress(tally.clone(), sent.clone(), opts.count);
    let mut queued = 0u64;
    let mut n = 0u64;
    tally.began.get_or_init(Instant::now);
    while budget.more(n) {
        match &limiter {
            Some(l) => l.until_ready().await,
            None => {
                while sim.queued() > backlog {
                    tokio::time::sleep(Duration::from_micros(50)).await;
                }
            }
        }
        let msg = traffic.next_message();
        // Wait for room for all its callbacks (at most one per rule and recipient), so the
        // message is submitted once and never refused for a full queue.
        let room = (rules * (1 + msg.offline.len())).min(capacity);
        while sim.queued() + room > capacity {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        match sim.submit(&opts.app, msg).await {
            Ok(s) => queued += s.queued as u64,
            Err(SimError::Queue(EnqueueError::Full)) => refused += 1,
            Err(e) => return Err(GenerateError(format!("the simulator stopped: {e}"))),
        }
        n += 1;
        sent.store(n, Ordering::Relaxed);
    }
    // Wait for every callback's final outcome, within what the policy allows.
    let limit = policy.timeout * (policy.retries + 1) + Duration::from_secs(10);
    let deadline = Instant::now() + limit;
    while tally.done.load(Ordering::Relaxed) < queued && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tally.ended.get_or_init(Instant::now);
    progress.abort();
    sim.shutdown().await;
    if refused > 0 {
        println!("{refused} messages were refused: the queue was full (raise delivery.queue_capacity)");
    }
    Ok(n)
}

async fn run_rest(opts: &GenerateOptions, server: &str, tally: Arc<Tally>) -> Result<u64, GenerateError> {
    let token = opts
        .token
        .clone()
        .ok_or_else(|| GenerateError("--server needs --token".into()))?;
    let url = format!(
        "{}/app-id/{}/messages?wait=true",
        server.trim_end_matches('/'),
        opts.app
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| GenerateError(e.to_string()))?;
    let limiter = NonZeroU32::new(opts.rate).map(|r| Arc::new(RateLimiter::direct(quota(r))));
    let until = opts.duration.map(|d| Instant::now() + d);
    let traffic = Arc::new(Mutex::new(Traffic::new(opts.seed, opts.mix.clone())));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(None::<String>));
    let progress = spawn_progress(tally.clone(), sent.clone(), opts.count);
    let mut workers = tokio::task::JoinSet::new();
    tally.began.get_or_init(Instant::now);
    for _ in 0..opts.connections.max(1) {
        let (http, url, token, limiter, traffic, sent, tally, errors) = (
            http.clone(),
            url.clone(),
            token.clone(),
            limiter.clone(),
            traffic.clone(),
            sent.clone(),
            tally.clone(),
            errors.clone(),
        );
        let count = opts.count;
        workers.spawn(async move {
            loop {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                if count.is_some_and(|c| n >= c)
                    || until.is_some_and(|u| Instant::now() >= u)
                    || errors.lock().map(|e| e.is_some()).unwrap_or(true)
                {
                    sent.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                if let Some(l) = &limiter {
                    l.until_ready().await;
                }
                let body = traffic.lock().expect("traffic lock").next_message().to_request_json();
                let resp = http.post(&url).bearer_auth(&token).json(&body).send().await;
                let answer: Result<Value, String> = match resp {
                    Ok(r) if r.status().is_success() => r.json().await.map_err(|e| e.to_string()),
                    Ok(r) => Err(format!(
                        "{} answered {}: {}",
                        url,
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Err(format!("{url}: {e}")),
                };
                match answer {
                    Ok(v) => {
                        for cb in v["data"]["callbacks"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|c| c["kind"] == "post_send")
                        {
                            let fin = cb["outcome"]
                                .as_str()
                                .and_then(|s| FinalOutcome::parse(s).ok())
                                .unwrap_or(FinalOutcome::Dropped);
                            let last = cb["last_attempt"]
                                .as_str()
                                .and_then(|s| Outcome::parse(s).ok())
                                .unwrap_or(Outcome::Connect);
                            let ms = cb["latency_ms"].as_f64().unwrap_or(0.0);
                            tally.record(fin, last, Duration::from_secs_f64(ms / 1000.0));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut slot) = errors.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    tally.ended.get_or_init(Instant::now);
    progress.abort();
    if let Some(e) = errors.lock().ok().and_then(|mut e| e.take()) {
        return Err(GenerateError(e));
    }
    Ok(sent.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_traffic() {
        let a: Vec<Value> = {
            let mut t = Traffic::new(7, Mix::default());
            (0..200).map(|_| t.next_message().to_request_json()).collect()
        };
        let b: Vec<Value> = {
            let mut t = Traffic::new(7, Mix::default());
            (0..200).map(|_| t.next_message().to_request_json()).collect()
        };
        let c: Vec<Value> = {
            let mut t = Traffic::new(8, Mix::default());
            (0..200).map(|_| t.next_message().to_request_json()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_mix_follows_the_weights() {
        let mut t = Traffic::new(1, Mix::default());
        let msgs: Vec<Message> = (0..10_000).map(|_| t.next_message()).collect();
        let share = |f: &dyn Fn(&Message) -> bool| msgs.iter().filter(|m| f(m)).count() as f64 / msgs.len() as f64;
        assert!((share(&|m| m.chat_type == ChatType::Chat) - 0.6).abs() < 0.03);
        assert!((share(&|m| m.chat_type == ChatType::ChatRoom) - 0.1).abs() < 0.02);
        assert!((share(&|m| m.msg_type == MessageType::Txt) - 0.7).abs() < 0.03);
        for t in MessageType::ALL {
            assert!(msgs.iter().any(|m| m.msg_type == *t), "{t} never generated");
        }
        let chats_offline = share(&|m| m.chat_type == ChatType::Chat && !m.offline.is_empty()) / 0.6;
        assert!((chats_offline - 0.2).abs() < 0.03, "{chats_offline}");
        assert!(
            msgs.iter()
                .any(|m| m.chat_type == ChatType::GroupChat && m.offline.len() > 1)
        );
        // Every generated message is one the REST API accepts.
        for m in msgs.iter().take(500) {
            let req = crate::message::MessageRequest::from_json(m.to_request_json().to_string().as_bytes()).unwrap();
            req.into_message().unwrap();
        }
    }

    #[test]
    fn weights_parse_with_clear_errors() {
        assert_eq!(
            parse_weights("chat=1, chatroom=3", ["chat", "groupchat", "chatroom"]),
            Ok([1, 0, 3])
        );
        assert!(
            parse_weights("dm=1", ["chat", "groupchat", "chatroom"])
                .unwrap_err()
                .contains("expected one of")
        );
        assert!(parse_weights("chat=0", ["chat", "groupchat", "chatroom"]).is_err());
        assert!(parse_weights("chat", ["chat", "groupchat", "chatroom"]).is_err());
    }
}
