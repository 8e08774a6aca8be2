//! Sending the traffic: paced by `governor` at `--rate` (or as fast as the pipeline takes it),
//! until the [`Budget`] of `--count` / `--duration` is spent, into an in-process simulator or
//! over REST to a running `serve` (`--server`). Messages waiting for pre-send answers stay in
//! flight while the next ones go out ([`InFlight`]); a `--server`'s 429s are waited out
//! ([`Backoff`]). Every callback's outcome goes into the [`Tally`].

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

use super::report::{Tally, spawn_progress};
use super::traffic::{Item, Traffic, event_request_json};
use super::{GenerateError, GenerateOptions};
use crate::config::Config;
use crate::dispatch::EnqueueError;
use crate::domain::{EventType, FinalOutcome, Outcome};
use crate::message::MessageError;
use crate::server::{Receipt, Server, SimError, StartError};

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

/// The pacer of `--rate` (none for `--rate 0`). It starts with its burst spent but one: the
/// first message goes at once and the next ones an interval apart, as the rate says; the burst
/// only catches up late wake-ups, it never sends a short run's messages all at once.
fn limiter(rate: u32) -> Option<DefaultDirectRateLimiter> {
    let quota = quota(NonZeroU32::new(rate)?);
    let limiter = RateLimiter::direct(quota);
    if let Some(spent) = NonZeroU32::new(quota.burst_size().get() - 1) {
        let _ = limiter.check_n(spent);
    }
    Some(limiter)
}

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

/// A submit waiting for its pre-send answers, with the queue room it holds and, for an event,
/// its type.
type Pending = Pin<Box<dyn Future<Output = Submitted> + Send>>;

/// What a submit became: the queue room it held, its event type (`None`: a message), the
/// answer.
type Submitted = (usize, Option<EventType>, Result<Receipt, SimError>);

/// An item the model could not make valid (a bug of the model: the unit tests cover every
/// catalog event).
fn invalid_item(e: MessageError) -> GenerateError {
    GenerateError::Run(format!("the generator made an invalid event (a bug): {e}"))
}

/// The messages handed to the in-process simulator that still wait for their pre-send
/// answers. Each is polled once when submitted — a message no pre-send rule asks about is
/// queued right then, in order, so the same seed still gives the same callIds — and the rest
/// are driven while the pacing loop waits. At most `delivery.concurrency` wait at once: as
/// many pre-send calls as deliveries may be in flight, which bounds the sockets the same way.
struct InFlight {
    pending: FuturesUnordered<Pending>,
    max: usize,
    /// Queue room the pending messages will need.
    reserved: usize,
    queued: u64,
    refused: u64,
    tally: Arc<Tally>,
}

impl InFlight {
    fn new(max: usize, tally: Arc<Tally>) -> Self {
        Self {
            pending: FuturesUnordered::new(),
            max: max.max(1),
            reserved: 0,
            queued: 0,
            refused: 0,
            tally,
        }
    }

    /// Hands `item` (needing `room` in the queue) to the simulator.
    async fn submit(
        &mut self,
        sim: &Arc<Server>,
        app: &Arc<str>,
        item: Item,
        room: usize,
    ) -> Result<(), GenerateError> {
        // Settle what has its answers by now, then wait for room if all `max` still wait.
        while let Some(Some(done)) = self.pending.next().now_or_never() {
            self.settle(done)?;
        }
        while self.pending.len() >= self.max {
            if let Some(done) = self.pending.next().await {
                self.settle(done)?;
            }
        }
        let (sim, app) = (sim.clone(), app.clone());
        let mut fut: Pending = match item {
            Item::Message(msg) => Box::pin(async move { (room, None, sim.submit(&app, msg).await) }),
            Item::Event(event) => {
                let t = event.event_type();
                self.tally.event(t).sent.fetch_add(1, Ordering::Relaxed);
                Box::pin(async move { (room, Some(t), sim.submit_event(&app, event).await) })
            }
        };
        self.tally.sent_at(Instant::now());
        match futures_util::poll!(fut.as_mut()) {
            Poll::Ready((_, kind, done)) => self.settle((0, kind, done)),
            Poll::Pending => {
                self.reserved += room;
                self.pending.push(fut);
                Ok(())
            }
        }
    }

    /// Waits for `wait` while driving the pending messages.
    async fn during<T>(&mut self, wait: impl Future<Output = T>) -> Result<T, GenerateError> {
        tokio::pin!(wait);
        loop {
            // The pending messages first: those with their answers are settled before the
            // wait ends.
            tokio::select! {
                biased;
                Some(done) = self.pending.next(), if !self.pending.is_empty() => self.settle(done)?,
                out = &mut wait => return Ok(out),
            }
        }
    }

    /// Waits until every pending message is settled.
    async fn drain(&mut self) -> Result<(), GenerateError> {
        while let Some(done) = self.pending.next().await {
            self.settle(done)?;
        }
        Ok(())
    }

    fn settle(&mut self, (room, kind, result): Submitted) -> Result<(), GenerateError> {
        self.reserved -= room;
        match result {
            Ok(r) if !r.accepted => {
                let blocked = kind.map_or(&self.tally.blocked, |t| &self.tally.event(t).blocked);
                blocked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                self.queued += r.queued as u64;
                if let Some(t) = kind {
                    self.tally.event(t).queued.fetch_add(r.queued as u64, Ordering::Relaxed);
                }
            }
            Err(SimError::Queue(EnqueueError::Full)) => self.refused += 1,
            Err(e) => return Err(GenerateError::Run(format!("the simulator stopped: {e}"))),
        }
        Ok(())
    }
}

/// Drives an in-process simulator built from `--config`, with its own store (`--data-dir`, or
/// a temp dir); returns the messages and events sent. An event of `--event-mix` that the app's
/// dialect does not have is a usage error.
pub(super) async fn run_in_process(opts: &GenerateOptions, tally: Arc<Tally>) -> Result<u64, GenerateError> {
    let mut config = Config::load(&opts.config).map_err(|e| GenerateError::Usage(format!("invalid config: {e}")))?;
    let app = config
        .apps
        .iter()
        .find(|a| a.id.as_str() == opts.app)
        .ok_or_else(|| GenerateError::Usage(format!("no app {:?} in {}", opts.app, opts.config.display())))?;
    opts.mix
        .events
        .check_dialect(app.dialect())
        .map_err(|e| GenerateError::Usage(format!("--event-mix (app {:?}): {e}", opts.app)))?;
    let (rules, policy) = (app.rules.len(), app.policy);
    // The simulator's REST API listens on a free loopback port and its store lives in a dir of
    // its own: never in the way of a `serve` of the same config.
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let temp = match &opts.data_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("callback-sim-generate-")
                .tempdir()
                .map_err(|e| GenerateError::Run(format!("cannot create a temp data dir: {e}")))?,
        ),
    };
    config.server.data_dir = match (&opts.data_dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => PathBuf::new(),
    };
    // Durable accept only when asked (docs/behaviour.md §9): a load test measures delivery.
    config.delivery.durable = opts.durable;
    let (backlog, capacity) = (config.delivery.concurrency * 4, config.delivery.queue_capacity);
    let in_flight_max = config.delivery.concurrency;
    let sim = Server::start_seeded(config, opts.seed).await.map_err(|e| match e {
        StartError::TlsFiles(e) => GenerateError::Usage(format!("invalid config: {e}")),
        e => GenerateError::Run(e.to_string()),
    })?;
    let sim = Arc::new(sim);
    let observer = tally.clone();
    sim.watch(move |t, f, l, d| observer.record(t, f, l, d));
    let limiter = limiter(opts.rate);
    let budget = Budget {
        count: opts.count,
        until: opts.duration.map(|d| Instant::now() + d),
    };
    let mut traffic = Traffic::new(opts.seed, opts.mix.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress(tally.clone(), sent.clone(), opts.count);
    let app: Arc<str> = opts.app.as_str().into();
    let mut flight = InFlight::new(in_flight_max, tally.clone());
    let mut n = 0u64;
    let run = async {
        while budget.more(n) {
            match &limiter {
                Some(l) => flight.during(l.until_ready()).await?,
                None => {
                    while sim.queued() + flight.reserved > backlog {
                        flight.during(tokio::time::sleep(Duration::from_micros(50))).await?;
                    }
                }
            }
            let item = traffic.next_item().map_err(invalid_item)?;
            // Wait for room for all its callbacks (at most one per rule and recipient; an
            // event has one recipient), those of the items still waiting for pre-send
            // included, so the item is submitted once and never refused for a full queue.
            let recipients = match &item {
                Item::Message(msg) => 1 + msg.offline.len(),
                Item::Event(_) => 1,
            };
            let room = (rules * recipients).min(capacity);
            while sim.queued() + flight.reserved + room > capacity {
                flight.during(tokio::time::sleep(Duration::from_micros(100))).await?;
            }
            flight.submit(&sim, &app, item, room).await?;
            n += 1;
            sent.store(n, Ordering::Relaxed);
        }
        flight.drain().await
    };
    let result = run.await;
    if result.is_ok() {
        // Wait for every callback's final outcome, within what the policy allows.
        let limit = policy.timeout * (policy.retries + 1) + Duration::from_secs(10);
        let deadline = Instant::now() + limit;
        while tally.done.load(Ordering::Relaxed) < flight.queued && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    tally.ended.get_or_init(Instant::now);
    progress.abort();
    sim.shutdown().await;
    result?;
    if flight.refused > 0 {
        println!(
            "{} messages or events were refused: the queue was full (raise delivery.queue_capacity)",
            flight.refused
        );
    }
    let stored = tally.stored();
    if temp.is_some() && stored > 0 {
        println!("{stored} callbacks were stored in a temp data dir, now removed (--data-dir DIR keeps them)");
    }
    Ok(n)
}

/// The first wait after a 429 without `Retry-After`; each further one doubles it.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// The longest wait after a 429 without `Retry-After`: a throttled run resumes within 2 s of
/// the server taking requests again.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The longest `Retry-After` obeyed: a wild value must not freeze the run.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// How long to wait after the `attempt`-th 429 in a row (from 0) for one message: the
/// server's `Retry-After` when it gives one in seconds (between [`BACKOFF_FIRST`] and
/// [`RETRY_AFTER_MAX`]), else
/// [`BACKOFF_FIRST`] doubled per attempt up to [`BACKOFF_MAX`], less up to half at random so
/// that the connections do not come back all at once.
fn backoff(headers: &HeaderMap, attempt: u32, jitter: f64) -> Duration {
    if let Some(s) = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
    {
        // `Retry-After: 0` still waits a little: a retry at once would only be refused again.
        return s.clamp(BACKOFF_FIRST, RETRY_AFTER_MAX);
    }
    let full = BACKOFF_FIRST.saturating_mul(1 << attempt.min(16)).min(BACKOFF_MAX);
    full.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

/// What one message or event sent over REST became.
enum Posted {
    /// The server's answer (`data`).
    Answer(Value),
    /// `--duration` ran out while it was being throttled: not sent.
    OutOfTime,
}

/// Posts one message or event, waiting out 429s (each counted in `tally.throttled`) until it
/// is taken or `until` has passed. A 400 for an event is a usage error: the server's app does
/// not have that event (its dialect), as the answer says.
async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
    until: Option<Instant>,
    tally: &Tally,
) -> Result<Posted, GenerateError> {
    let run = |e: String| GenerateError::Run(format!("{url}: {e}"));
    for attempt in 0u32.. {
        let at = Instant::now();
        let resp = http
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| run(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            let v: Value = resp.json().await.map_err(|e| run(e.to_string()))?;
            tally.sent_at(at);
            return Ok(Posted::Answer(v));
        }
        if status != reqwest::StatusCode::TOO_MANY_REQUESTS {
            let text = resp.text().await.unwrap_or_default();
            let event = body
                .get("type")
                .and_then(Value::as_str)
                .filter(|_| url.contains("/events"));
            return Err(match event {
                Some(name) if status == reqwest::StatusCode::BAD_REQUEST => {
                    let why = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["error_description"].as_str().map(String::from))
                        .unwrap_or(text);
                    GenerateError::Usage(format!("--event-mix: the server refused a {name} event: {why}"))
                }
                _ => run(format!("answered {status}: {text}")),
            });
        }
        tally.throttled.fetch_add(1, Ordering::Relaxed);
        let wait = backoff(resp.headers(), attempt, rand::random());
        if until.is_some_and(|u| Instant::now() + wait >= u) {
            return Ok(Posted::OutOfTime);
        }
        tokio::time::sleep(wait).await;
    }
    unreachable!("the attempts never run out")
}

/// Drives a running `serve` over REST, `--connections` requests at once, each with
/// `?wait=true`; returns the messages and events sent. A 429 is waited out and the item sent
/// again.
pub(super) async fn run_rest(opts: &GenerateOptions, server: &str, tally: Arc<Tally>) -> Result<u64, GenerateError> {
    let token = opts
        .token
        .clone()
        .ok_or_else(|| GenerateError::Usage("--server needs --token".into()))?;
    let base = format!("{}/app-id/{}", server.trim_end_matches('/'), opts.app);
    let urls: Arc<(String, String)> =
        Arc::new((format!("{base}/messages?wait=true"), format!("{base}/events?wait=true")));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| GenerateError::Run(e.to_string()))?;
    let limiter = limiter(opts.rate).map(Arc::new);
    let until = opts.duration.map(|d| Instant::now() + d);
    let traffic = Arc::new(Mutex::new(Traffic::new(opts.seed, opts.mix.clone())));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(None::<GenerateError>));
    let progress = spawn_progress(tally.clone(), sent.clone(), opts.count);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..opts.connections.max(1) {
        let (http, urls, token, limiter, traffic, sent, tally, errors) = (
            http.clone(),
            urls.clone(),
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
                let item = traffic.lock().expect("traffic lock").next_item().map_err(invalid_item);
                let (url, body, kind) = match item {
                    Ok(Item::Message(msg)) => (&urls.0, msg.to_request_json(), None),
                    Ok(Item::Event(event)) => (&urls.1, event_request_json(&event), Some(event.event_type())),
                    Err(e) => {
                        sent.fetch_sub(1, Ordering::Relaxed);
                        if let Ok(mut slot) = errors.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                };
                match post(&http, url, &token, &body, until, &tally).await {
                    Ok(Posted::Answer(v)) => {
                        let data = &v["data"];
                        if let Some(t) = kind {
                            let e = tally.event(t);
                            e.sent.fetch_add(1, Ordering::Relaxed);
                            e.queued
                                .fetch_add(data["queued"].as_u64().unwrap_or(0), Ordering::Relaxed);
                        }
                        if data["accepted"] == false {
                            let blocked = kind.map_or(&tally.blocked, |t| &tally.event(t).blocked);
                            blocked.fetch_add(1, Ordering::Relaxed);
                        }
                        for cb in data["callbacks"]
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
                            let t = kind.unwrap_or(EventType::Chat);
                            tally.record(t, fin, last, Duration::from_secs_f64(ms / 1000.0));
                        }
                    }
                    Ok(Posted::OutOfTime) => {
                        sent.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        sent.fetch_sub(1, Ordering::Relaxed);
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
        return Err(e);
    }
    Ok(sent.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound_and_obeys_retry_after() {
        let none = HeaderMap::new();
        let waits: Vec<_> = (0..8).map(|a| backoff(&none, a, 0.0)).collect();
        assert_eq!(waits[0], BACKOFF_FIRST);
        assert_eq!(waits[1], BACKOFF_FIRST * 2);
        assert_eq!(waits[7], BACKOFF_MAX);
        assert_eq!(backoff(&none, 40, 0.0), BACKOFF_MAX);
        assert_eq!(backoff(&none, 0, 1.0), BACKOFF_FIRST / 2, "jitter takes at most half");
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(backoff(&h, 0, 0.5), Duration::from_secs(3));
        h.insert(RETRY_AFTER, "0.25".parse().unwrap());
        assert_eq!(backoff(&h, 5, 0.5), Duration::from_millis(250));
        h.insert(RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(backoff(&h, 0, 0.0), RETRY_AFTER_MAX);
        h.insert(RETRY_AFTER, "0".parse().unwrap());
        assert_eq!(backoff(&h, 0, 0.0), BACKOFF_FIRST, "never a retry at once");
        // An HTTP date (or anything else) falls back to the backoff.
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(backoff(&h, 1, 0.0), BACKOFF_FIRST * 2);
    }

    #[test]
    fn the_pacer_starts_with_one_message_not_a_burst() {
        let l = limiter(10).unwrap();
        assert!(l.check().is_ok(), "the first message goes at once");
        assert!(l.check().is_err(), "the next one waits its interval");
        assert!(limiter(0).is_none());
    }
}
