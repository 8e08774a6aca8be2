//! Benchmark: fill the exception store with 100,000 failed callbacks (receiver refusing), then
//! replay them to a healthy `sink` — and, first, plain delivery to that sink as a reference.
//! Loopback only, bounded in time. Run with `bench/store_replay` (or `cargo bench --bench
//! store_replay`); `BENCH_N` changes the count.

use std::time::{Duration, Instant};

use callback_sim::FinalOutcome::{self, Delivered, Stored};
use callback_sim::{Config, EnqueueError, Message, Server, SimError, Sink, SinkOptions};

/// glibc's malloc serialises on arena locks under many threads; mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Every phase gives up after this long.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

async fn submit_all(server: &Server, app_id: &str, n: usize) {
    let deadline = Instant::now() + PHASE_LIMIT;
    for i in 0..n {
        loop {
            let msg = Message::text("bench_user", "peer", &format!("message {i}"));
            match server.submit(app_id, msg).await {
                Ok(_) => break,
                Err(SimError::Queue(EnqueueError::Full)) => {
                    assert!(Instant::now() < deadline, "queue stayed full");
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                Err(e) => panic!("submit failed: {e}"),
            }
        }
    }
}

/// Callbacks of `app`'s `rule` that ended with `outcome` so far.
fn final_count(server: &Server, app: &str, rule: &str, outcome: FinalOutcome) -> usize {
    let rules = server.rules(app).expect("bench app");
    let rule = rules.iter().find(|r| r.name == rule).expect("bench rule");
    rule.stats.final_outcome(outcome) as usize
}

/// Callbacks in the exception store, every app together.
fn stored(server: &Server) -> u64 {
    ["healthy", "refusing", "pair"]
        .iter()
        .flat_map(|app| server.buckets(app).expect("bench app"))
        .map(|b| b.size)
        .sum()
}

/// Prints a phase's line — `{label}: {n} {what} in S s = R/s{note}` — and answers its rate.
fn report(label: &str, n: u64, what: &str, started: Instant, note: &str) -> f64 {
    let secs = started.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    println!("{label}: {n} {what} in {secs:.2} s = {rate:.0}/s{note}");
    rate
}

/// Peak resident memory of this process, from /proc (Linux); NaN elsewhere.
fn peak_rss_mb() -> f64 {
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

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PHASE_LIMIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not finish within {PHASE_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = Sink::start(SinkOptions::default()).await.expect("sink");
    // A receiver that accepts and never answers within the bench (the agora timeout is 60 s).
    let hung = Sink::start(SinkOptions {
        delay: Duration::from_secs(3600),
        ..SinkOptions::default()
    })
    .await
    .expect("hung sink");
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = {data:?}
[delivery]
concurrency = 256
queue_capacity = 100000
[api]
rate_per_sec = 1000
[[apps]]
id = "healthy"
token = "t"
  [[apps.rules]]
  name = "sink"
  url = "http://{sink}/cb"
  secret = "s"
[[apps]]
id = "refusing"
token = "t"
bans = false
  [[apps.rules]]
  name = "refused"
  url = "http://127.0.0.1:{refused}/cb"
  secret = "s"
[[apps]]
id = "pair"
token = "t"
  [[apps.rules]]
  name = "healthy"
  url = "http://{sink}/pair"
  secret = "s"
  [[apps.rules]]
  name = "hung"
  url = "http://{hung}/hung"
  secret = "s"
"#,
        hung = hung.addr(),
        data = dir.path().join("data").display().to_string(),
        sink = sink.addr(),
    );
    let config = Config::parse(&text, "bench", dir.path()).expect("bench config");
    let server = Server::start(config).await.expect("server");

    println!("callback-sim store/replay benchmark: {n} callbacks, loopback, release build expected");

    // Reference: plain delivery to the sink.
    let t = Instant::now();
    submit_all(&server, "healthy", n).await;
    wait_until("delivery", || final_count(&server, "healthy", "sink", Delivered) >= n).await;
    let delivered_rate = report("deliver  ", n as u64, "callbacks to sink", t, "");

    // Store: every callback refused twice (attempt + immediate retry), then stored durably.
    let t = Instant::now();
    submit_all(&server, "refusing", n).await;
    wait_until("storing", || final_count(&server, "refusing", "refused", Stored) >= n).await;
    let stored_rate = report("store    ", n as u64, "callbacks refused and stored", t, "");
    assert_eq!(stored(&server) as usize, n);

    // Replay every bucket to the healthy sink over REST, as a user would.
    let http = reqwest::Client::new();
    let base = server.base_url();
    let info: serde_json::Value = http
        .get(format!("{base}/app-id/refusing/callbacks/storage/info"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let before = sink.summary().received;
    let t = Instant::now();
    let mut replayed = 0;
    for b in info["data"].as_array().unwrap() {
        let body = serde_json::json!({"date": b["date"], "retry": b["retry"], "targetUrl": format!("http://{}/replay", sink.addr())});
        let v: serde_json::Value = http
            .post(format!("{base}/app-id/refusing/callbacks/storage/retry"))
            .bearer_auth("t")
            .json(&body)
            .timeout(PHASE_LIMIT)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["data"], "success", "{v}");
        replayed += v["delivered"].as_u64().unwrap();
    }
    let replay_rate = report(
        "replay   ",
        replayed,
        "callbacks replayed to sink",
        t,
        " (the bar is >= 20000/s)",
    );
    assert_eq!(sink.summary().received - before, replayed);
    assert_eq!(stored(&server), 0);
    // Isolation: the same delivery while another rule of the same app hangs on every callback.
    // The hung rule's callbacks wait in its lane (they count as queued): keep them under the
    // queue's capacity.
    let n_iso = n.min(30_000);
    let t = Instant::now();
    submit_all(&server, "pair", n_iso).await;
    wait_until("delivery beside a hung rule", || {
        final_count(&server, "pair", "healthy", Delivered) >= n_iso
    })
    .await;
    let elapsed = t.elapsed().as_secs_f64();
    let ratio = n_iso as f64 / elapsed / delivered_rate;
    let note = format!(": {ratio:.2} of the rate alone (the bar is >= 0.90)");
    report(
        "isolation",
        n_iso as u64,
        "callbacks to sink beside a hung rule",
        t,
        &note,
    );

    println!("peak RSS : {:.1} MB", peak_rss_mb());
    server.shutdown().await;
    println!("stored: {stored_rate:.0}/s, replayed: {replay_rate:.0}/s, delivered: {delivered_rate:.0}/s");
}
