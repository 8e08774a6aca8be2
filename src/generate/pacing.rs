//! Sending the traffic: paced by `governor` at `--rate` (or as fast as the pipeline takes it),
//! until the [`Budget`] of `--count` / `--duration` is spent, into an in-process simulator or
//! over REST to a running `serve` (`--server`). Every callback's outcome goes into the
//! [`Tally`].

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};
use serde_json::Value;

use super::report::{Tally, spawn_progress};
use super::traffic::Traffic;
use super::{GenerateError, GenerateOptions};
use crate::config::Config;
use crate::dispatch::EnqueueError;
use crate::domain::{FinalOutcome, Outcome};
use crate::server::{Server, SimError};

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

/// Drives an in-process simulator built from `--config`; returns the messages sent.
pub(super) async fn run_in_process(opts: &GenerateOptions, tally: Arc<Tally>) -> Result<u64, GenerateError> {
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

/// Drives a running `serve` over REST, `--connections` requests at once, each with
/// `?wait=true`; returns the messages sent.
pub(super) async fn run_rest(opts: &GenerateOptions, server: &str, tally: Arc<Tally>) -> Result<u64, GenerateError> {
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
