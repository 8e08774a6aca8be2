//! Bans, the exception store and its REST API, graceful stop, and durability.

use std::sync::Arc;
use std::time::Duration;

use callback_sim::{
    CallbackReport, Clock, DateKey, FinalOutcome, ManualClock, Message, Outcome, Reply, RuleStatus, Server, Sim,
};
use serde_json::{Value, json};

use crate::helpers::*;

fn msg() -> Value {
    json!({"from": "a", "to": "b", "msg": "x"})
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis() as u64
}

/// The report of rule `rule` among a message's callbacks.
fn report<'a>(reports: &'a [CallbackReport], rule: &str) -> &'a CallbackReport {
    reports
        .iter()
        .find(|c| c.rule.as_str() == rule)
        .unwrap_or_else(|| panic!("no callback of {rule} in {reports:?}"))
}

/// A day: the default `ban.level_memory_secs`.
const LEVEL_MEMORY_MS: u64 = 86_400_000;

#[tokio::test]
async fn bans_start_at_the_threshold_store_banned_callbacks_and_escalate() {
    const BASE_MS: u64 = 10_000;
    let bad = sink(Reply::status(500)).await;
    let good = sink(Reply::ok()).await;
    // The clock starts a minute into a 10-minute bucket: the bans below (10 + 20 + 30 + 30 s)
    // all fit in it.
    let clock = Arc::new(ManualClock::new(now_ms() / 600_000 * 600_000 + 60_000));
    let config = config()
        .ban(6, 60.0, BASE_MS as f64 / 1000.0, 3)
        .app(
            app1()
                .rule(rule("broken", &bad.url("/")).chat_types(&["chat"]))
                .rule(rule("healthy", &good.url("/"))),
        )
        .build()
        .unwrap();
    let sim = Sim::start_with_clock(config, clock.clone()).await.unwrap();
    // Three messages of two failed attempts each: the third reaches the threshold of six.
    let fail_until_banned = || async {
        for i in 0..3 {
            let before = rule_state(&sim, "broken");
            assert_eq!(
                (before.state, before.failures_in_window),
                (RuleStatus::Active, 2 * i),
                "banned too early, at message {i}: {before:?}"
            );
            let reports = send_text(&sim, "b").await;
            let broken = report(&reports, "broken");
            assert_eq!(
                (broken.outcome, broken.attempts),
                (FinalOutcome::Stored, 2),
                "{broken:?}"
            );
            let healthy = report(&reports, "healthy");
            assert_eq!(
                (healthy.outcome, healthy.attempts),
                (FinalOutcome::Delivered, 1),
                "{healthy:?}"
            );
        }
        rule_state(&sim, "broken")
    };
    for level in [1u64, 2, 3, 3] {
        let r = fail_until_banned().await;
        assert_eq!((r.state, u64::from(r.ban_level)), (RuleStatus::Banned, level), "{r:?}");
        assert_eq!(
            r.banned_until_ms,
            Some(clock.now_ms() + level * BASE_MS),
            "a ban of level {level} lasts {level} x base_secs"
        );
        // While banned: not attempted, stored as `banned`; the other rule is untouched.
        let hits = count(&bad);
        let reports = send_text(&sim, "b").await;
        let broken = report(&reports, "broken");
        assert_eq!(
            (broken.outcome, broken.last_attempt, broken.attempts),
            (FinalOutcome::Stored, Outcome::Banned, 0),
            "{broken:?}"
        );
        assert_eq!(count(&bad), hits, "a banned rule is not attempted");
        assert_eq!(rule_state(&sim, "healthy").state, RuleStatus::Active);
        // A millisecond before its end the ban holds; at its end the rule is active again.
        clock.advance(level * BASE_MS - 1);
        assert_eq!(rule_state(&sim, "broken").state, RuleStatus::Banned);
        clock.advance(1);
        assert_eq!(rule_state(&sim, "broken").state, RuleStatus::Active);
    }
    // The banned callbacks are in the store with their reason.
    let info = info(&sim).await;
    assert_eq!(info.len(), 1, "{info:?}");
    let date = info[0]["date"].as_str().unwrap().to_string();
    let (_, items) = get(
        &sim,
        &format!("/app-id/app1/callbacks/storage/items?date={date}&limit=10000"),
        TOKEN,
    )
    .await;
    let outcomes: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "banned").count(), 4, "{items}");
    assert_eq!(outcomes.iter().filter(|o| **o == "status").count(), 12, "{items}");
    // Bans are remembered for level_memory_secs from their start: once the last one is that
    // old, the next ban is of level 1 again.
    clock.advance(LEVEL_MEMORY_MS);
    let r = fail_until_banned().await;
    assert_eq!((r.state, r.ban_level), (RuleStatus::Banned, 1), "{r:?}");
}

#[tokio::test]
async fn info_lists_buckets_with_date_size_and_retry() {
    let sim = start(
        config()
            .store(259_200.0, "+08:00")
            .app(app1().retries(0).rule(rule("r", &refused_url()))),
    )
    .await;
    assert_eq!(info(&sim).await, Vec::<Value>::new());
    let before = now_ms();
    for _ in 0..5 {
        assert_eq!(one_callback(&sim).await.outcome, FinalOutcome::Stored);
    }
    let after = now_ms();
    let info = info(&sim).await;
    let offset = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    let keys = [
        DateKey::from_ms(before, offset).to_string(),
        DateKey::from_ms(after, offset).to_string(),
    ];
    let total: u64 = info.iter().map(|b| b["size"].as_u64().unwrap()).sum();
    assert_eq!(total, 5, "{info:?}");
    for b in &info {
        assert!(
            keys.contains(&b["date"].as_str().unwrap().to_string()),
            "{b} not in {keys:?}"
        );
        assert_eq!(b["retry"], 0);
    }
    let (_, env) = get(&sim, "/app-id/app1/callbacks/storage/info", TOKEN).await;
    for k in ["path", "uri", "timestamp", "action", "application", "data", "duration"] {
        assert!(env.get(k).is_some(), "{k} missing: {env}");
    }
    assert_eq!(env["action"], "get");
}

/// Stores `n` callbacks (the receiver failing) and returns their callIds and the bucket.
async fn fill_store(sim: &Server, n: usize) -> (Vec<Value>, String) {
    let mut sent = Vec::new();
    for i in 0..n {
        let (_, a) = send(sim, json!({"from": "a", "to": "b", "msg": format!("m{i}")}), true).await;
        assert_eq!(callbacks(&a)[0]["outcome"], "stored", "{a}");
        sent.push(callbacks(&a)[0]["callId"].clone());
    }
    let info = info(sim).await;
    assert_eq!(
        info.len(),
        1,
        "one bucket expected (unless a 10-minute boundary was crossed): {info:?}"
    );
    (sent, info[0]["date"].as_str().unwrap().to_string())
}

const RETRY: &str = "/app-id/app1/callbacks/storage/retry";

#[tokio::test]
async fn replay_to_a_healthy_target_sends_identical_bytes_and_drains_the_bucket() {
    let broken = sink(Reply::status(503)).await;
    let healthy = sink(Reply::ok()).await;
    let sim = start_app(app1().retries(0).rule(rule("r", &broken.url("/cb")))).await;
    let (call_ids, date) = fill_store(&sim, 20).await;
    let originals: std::collections::HashMap<String, bytes::Bytes> = broken
        .received()
        .into_iter()
        .map(|r| (r.call_id().unwrap(), r.body))
        .collect();
    let (s, v) = post(
        &sim,
        RETRY,
        TOKEN,
        json!({"date": date, "retry": 0, "targetUrl": healthy.url("/replay")}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"], "success");
    assert_eq!((v["delivered"].as_u64(), v["failed"].as_u64()), (Some(20), Some(0)));
    let got = arrived(&healthy, 20).await;
    assert_eq!(got.len(), 20);
    for r in &got {
        assert_eq!(r.path, "/replay");
        assert_eq!(originals[&r.call_id().unwrap()], r.body, "replays send the same bytes");
    }
    let ids: std::collections::HashSet<_> = got.iter().map(|r| r.json()["callId"].clone()).collect();
    assert_eq!(ids, call_ids.into_iter().collect());
    assert_eq!(
        info(&sim).await,
        Vec::<Value>::new(),
        "delivered callbacks leave the store"
    );
    // The bucket is gone now: replaying it again is a 400.
    let (s, v) = post(&sim, RETRY, TOKEN, json!({"date": date})).await;
    assert_eq!(s, 400, "{v}");
}

#[tokio::test]
async fn failed_replays_move_to_the_next_retry_and_rule_url_replays_obey_the_ban() {
    let broken = sink(Reply::status(500)).await;
    let sim = start(
        config()
            .ban(6, 60.0, 60.0, 3)
            .app(app1().rule(rule("r", &broken.url("/cb")))),
    )
    .await;
    let (_, date) = fill_store(&sim, 2).await;
    let (s, v) = post(&sim, RETRY, TOKEN, json!({"date": date, "targetUrl": refused_url()})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["data"].as_str(), v["delivered"].as_u64(), v["failed"].as_u64()),
        (Some("failure"), Some(0), Some(2))
    );
    assert_eq!(info(&sim).await, vec![json!({"date": date, "size": 2, "retry": 1})]);
    // Replays to a targetUrl did not feed the ban (2 messages x 2 attempts = 4 < 6).
    let r = rule_status(&sim, "r").await;
    assert_eq!(
        (r["state"].as_str(), r["failures_in_window"].as_u64()),
        (Some("active"), Some(4)),
        "{r}"
    );
    // A replay to the rule's own URL feeds it: 4 + 2 x 2 reaches the threshold.
    let (s, v) = post(&sim, RETRY, TOKEN, json!({"date": date, "retry": 1})).await;
    assert_eq!((s.as_u16(), v["failed"].as_u64()), (200, Some(2)), "{v}");
    assert_eq!(rule_status(&sim, "r").await["state"], "banned");
    // ... and obeys it: nothing is attempted while banned.
    let hits = count(&broken);
    let (_, v) = post(&sim, RETRY, TOKEN, json!({"date": date, "retry": 2})).await;
    assert_eq!(v["failed"], 2, "{v}");
    assert_eq!(count(&broken), hits);
    // ... and the answer says why nothing was sent, and where the callbacks went.
    let why = v["warnings"][0].as_str().unwrap_or_else(|| panic!("no warning in {v}"));
    for part in [
        "rule r is banned until",
        "2 callbacks were not sent",
        "retry 3",
        "targetUrl",
    ] {
        assert!(why.contains(part), "{part:?} not in {why:?}");
    }
    let (_, items) = get(
        &sim,
        &format!("/app-id/app1/callbacks/storage/items?date={date}&retry=3"),
        TOKEN,
    )
    .await;
    let items = items["data"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        items.iter().all(|i| i["outcome"] == "banned" && i["attempts"] == 0),
        "{items:?}"
    );
}

#[tokio::test]
async fn storage_route_errors() {
    let healthy = sink(Reply::ok()).await;
    let hang = sink(Reply::hang()).await;
    let refused = refused_url();
    let sim = start(
        config()
            .app(app1().retries(0).timeout_secs(1.0).rule(rule("r", &refused)))
            .app(
                callback_sim::AppBuilder::new("nostore", "tok2")
                    .exception_store(false)
                    .retries(0)
                    .rule(rule("r", &refused)),
            ),
    )
    .await;
    let (_, date) = fill_store(&sim, 3).await;
    for (body, hint) in [
        (json!({"date": "202109091445"}), "10-minute"),
        (json!({"date": "2021-09-09"}), "10-minute"),
        (json!({"date": 202109091440u64}), "date"),
        (json!({"date": "202109091440"}), "does not exist"),
        (json!({"date": date, "retry": 7}), "does not exist"),
        (json!({"date": date, "retry": -1}), "retry"),
        (json!({"date": date, "targetUrl": "ftp://x/"}), "targetUrl"),
        (json!({"date": date, "colour": 1}), "colour"),
        (json!({"retry": 0}), "date"),
        (json!("202109091440"), "JSON object"),
    ] {
        let (s, v) = post(&sim, RETRY, TOKEN, body.clone()).await;
        assert_eq!(s, 400, "{body} → {v}");
        assert!(v["error_description"].as_str().unwrap().contains(hint), "{body} → {v}");
    }
    let (s, _) = post(&sim, RETRY, "wrong", json!({"date": date})).await;
    assert_eq!(s, 401);
    let (s, _) = post(
        &sim,
        "/app-id/ghost/callbacks/storage/retry",
        TOKEN,
        json!({"date": date}),
    )
    .await;
    assert_eq!(s, 404);
    // The store is off for this app: 403, after auth.
    for path in [
        "/app-id/nostore/callbacks/storage/info",
        "/app-id/nostore/callbacks/storage/items?date=202109091440",
    ] {
        let (s, v) = get(&sim, path, "tok2").await;
        assert_eq!(s, 403, "{v}");
        assert_eq!(get(&sim, path, "bad").await.0, 401);
    }
    let (s, _) = post(
        &sim,
        "/app-id/nostore/callbacks/storage/retry",
        "tok2",
        json!({"date": date}),
    )
    .await;
    assert_eq!(s, 403);
    let (_, a) = send_as(&sim, "nostore", "tok2", msg(), true).await;
    assert_eq!(callbacks(&a)[0]["outcome"], "dropped");
    // Items: malformed queries are 400, a missing bucket is an empty list.
    for q in [
        "",
        "?date=x",
        "?date=202109091440&retry=x",
        "?date=202109091440&limit=0",
        "?date=202109091440&limit=10001",
        "?date=202109091440&foo=1",
    ] {
        let (s, v) = get(&sim, &format!("/app-id/app1/callbacks/storage/items{q}"), TOKEN).await;
        assert_eq!(s, 400, "{q} → {v}");
    }
    let (s, v) = get(&sim, "/app-id/app1/callbacks/storage/items?date=202109091440", TOKEN).await;
    assert_eq!((s.as_u16(), v["data"].clone()), (200, json!([])));
    let (_, v) = get(
        &sim,
        &format!("/app-id/app1/callbacks/storage/items?date={date}&limit=2"),
        TOKEN,
    )
    .await;
    let items = v["data"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for k in ["callId", "rule", "url", "outcome", "attempts", "stored_at", "body"] {
        assert!(items[0].get(k).is_some(), "{k} missing: {}", items[0]);
    }
    assert_eq!(items[0]["outcome"], "connect");
    assert!(
        items[0]["body"]["callId"] == items[0]["callId"],
        "body is the stored JSON object"
    );
    // 409 while the same bucket is being replayed (to a receiver that hangs for the 1 s timeout).
    let first = tokio::spawn({
        let url = format!("{}{RETRY}", sim.base_url());
        let body = json!({"date": date, "targetUrl": hang.url("/")});
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    arrived(&hang, 1).await;
    let (s, v) = post(&sim, RETRY, TOKEN, json!({"date": date, "targetUrl": healthy.url("/")})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn graceful_stop_stores_what_was_queued_and_loses_nothing() {
    let sink = sink(Reply::ok().after(std::time::Duration::from_millis(20))).await;
    let sim = start(
        config()
            .concurrency(4)
            .queue_capacity(10_000)
            .app(app1().rule(rule("r", &sink.url("/")))),
    )
    .await;
    let mut accepted = 0;
    for _ in 0..300 {
        accepted += sim.submit(APP, Message::text("a", "b", "x")).await.unwrap().queued as u64;
    }
    sim.shutdown().await;
    let stats = rule_state(&sim, "r").stats;
    let delivered = stats.final_outcome(FinalOutcome::Delivered);
    let stored = stats.final_outcome(FinalOutcome::Stored);
    let dropped = stats.final_outcome(FinalOutcome::Dropped);
    assert_eq!(
        delivered + stored + dropped,
        accepted,
        "delivered {delivered} + stored {stored} + dropped {dropped}"
    );
    assert_eq!(dropped, 0);
    assert!(stored > 0, "the stop came while callbacks were queued");
    assert_eq!(stats.outcome(Outcome::Shutdown), stored);
    assert_eq!(stored_total(&sim), stored, "everything reported stored is in the store");
}

#[tokio::test]
async fn ban_state_and_the_store_survive_a_restart() {
    let bad = sink(Reply::status(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = || {
        config()
            .data_dir(&dir.path().join("data"))
            .ban(2, 60.0, 60.0, 5)
            .app(app1().rule(rule("r", &bad.url("/"))))
            .build()
            .unwrap()
    };
    let server = Server::start(settings()).await.unwrap();
    one_callback(&server).await;
    let before = eventually("rule r to be banned", || async {
        let r = rule_state(&server, "r");
        (r.state == RuleStatus::Banned).then_some(r)
    })
    .await;
    let stored = info(&server).await;
    server.shutdown().await;
    drop(server);
    let server = Server::start(settings()).await.unwrap();
    let after = rule_state(&server, "r");
    assert_eq!(
        (after.state, after.ban_level, after.banned_until_ms),
        (before.state, before.ban_level, before.banned_until_ms)
    );
    assert_eq!(info(&server).await, stored);
    server.shutdown().await;
}

#[tokio::test]
async fn retention_sweep_deletes_old_buckets() {
    let clock = Arc::new(ManualClock::new(now_ms()));
    let config = config()
        .store(4.0, "+00:00")
        .app(app1().retries(0).rule(rule("r", &refused_url())))
        .build()
        .unwrap();
    let sim = Sim::start_with_clock(config, clock.clone()).await.unwrap();
    one_callback(&sim).await;
    assert_eq!(info(&sim).await.len(), 1);
    // A bucket goes once its 10-minute window ended more than retention_secs ago.
    clock.advance(11 * 60 * 1000);
    eventually("the sweep to purge the old bucket", || async {
        info(&sim).await.is_empty().then_some(())
    })
    .await;
}

#[test]
fn kill_9_loses_nothing_reported_stored() {
    use std::process::{Command, Stdio};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let refused = refused_url();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
data_dir = "data"
[api]
rate_per_sec = 100000
burst = 100000
[[apps]]
id = "app1"
token = "tok1"
retries = 0
  [[apps.rules]]
  name = "r"
  url = "{refused}"
  secret = "s"
"#
        ),
    )
    .unwrap();
    let start = || {
        spawn_serve(
            Command::new(BIN)
                .args(["serve", "--config"])
                .arg(&path)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null()),
        )
    };
    let (mut child, base) = start();
    let http = reqwest::Client::new();
    let mut reported = std::collections::HashSet::new();
    rt.block_on(async {
        let sends = (0..200).map(|i| {
            let http = http.clone();
            let url = format!("{base}/app-id/app1/messages?wait=true");
            async move {
                let resp = http
                    .post(url)
                    .bearer_auth(TOKEN)
                    .json(&json!({"from": "a", "to": "b", "msg": format!("m{i}")}))
                    .send()
                    .await
                    .unwrap();
                status_json(resp).await
            }
        });
        for (s, a) in futures_util::future::join_all(sends).await {
            assert_eq!(s, 200, "{a}");
            let cb = &callbacks(&a)[0];
            assert_eq!(cb["outcome"], "stored");
            reported.insert(cb["callId"].as_str().unwrap().to_string());
        }
    });
    child.kill().unwrap(); // SIGKILL: no flush, no goodbye.
    child.wait().unwrap();
    let (mut child, base) = start();
    let found: std::collections::HashSet<String> = rt.block_on(async {
        let info: Value = http
            .get(format!("{base}/app-id/app1/callbacks/storage/info"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut found = std::collections::HashSet::new();
        for b in info["data"].as_array().unwrap() {
            let url = format!(
                "{base}/app-id/app1/callbacks/storage/items?date={}&retry={}&limit=10000",
                b["date"].as_str().unwrap(),
                b["retry"]
            );
            let items: Value = http
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            found.extend(
                items["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["callId"].as_str().unwrap().to_string()),
            );
        }
        found
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(reported.len(), 200);
    assert!(
        reported.is_subset(&found),
        "{} reported stored, {} found after kill -9",
        reported.len(),
        found.len()
    );
}

#[tokio::test]
async fn a_graceful_stop_also_stores_callbacks_waiting_in_a_rule_lane() {
    // Two rules share two deliveries in flight: one each. The hung rule's first callback is in
    // flight; its next two wait in its lane (parked), not in the queue.
    let hung = sink(Reply::hang()).await;
    let ok = sink(Reply::ok()).await;
    let sim = start(
        config().concurrency(2).app(
            app1()
                .timeout_secs(30.0)
                .rule(rule("hung", &hung.url("/")))
                .rule(rule("ok", &ok.url("/"))),
        ),
    )
    .await;
    for _ in 0..3 {
        sim.submit(APP, Message::text("a", "b", "x")).await.unwrap();
    }
    arrived(&ok, 3).await;
    arrived(&hung, 1).await;
    sim.shutdown().await;
    let stats = rule_state(&sim, "hung").stats;
    assert_eq!(
        stats.final_outcome(FinalOutcome::Stored),
        3,
        "the one in flight and the two parked"
    );
    assert_eq!(stats.outcome(Outcome::Shutdown), 3);
    assert_eq!(stored_total(&sim), 3);
    assert_eq!(sim.queued(), 0);
}

/// POSTs a replay of app1's bucket `date` (retry 0) to `target` with its own client, so that
/// the caller can run it in a task of its own; `timeout` bounds the client's wait.
async fn replay_over_rest(
    base: String,
    date: String,
    target: String,
    timeout: Duration,
) -> reqwest::Result<(u16, Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{base}{RETRY}"))
        .bearer_auth(TOKEN)
        .timeout(timeout)
        .json(&json!({"date": date, "retry": 0, "targetUrl": target}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

#[tokio::test]
async fn a_replay_runs_to_its_end_when_its_client_goes_away() {
    let broken = sink(Reply::status(503)).await;
    let slow = sink(Reply::ok().after(Duration::from_millis(1500))).await;
    let sim = start_app(app1().retries(0).rule(rule("r", &broken.url("/cb")))).await;
    let (_, date) = fill_store(&sim, 5).await;
    // The client gives up long before the receiver answers.
    let gone = replay_over_rest(sim.base_url(), date.clone(), slow.url("/"), Duration::from_millis(300)).await;
    assert!(gone.as_ref().is_err_and(|e| e.is_timeout()), "{gone:?}");
    arrived(&slow, 5).await;
    eventually("the replay to finish and empty the bucket", || async {
        (stored_total(&sim) == 0).then_some(())
    })
    .await;
    // Nothing is left to send twice.
    let (s, v) = post(&sim, RETRY, TOKEN, json!({"date": date})).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(count(&slow), 5);
}

#[tokio::test]
async fn a_stop_during_a_replay_takes_the_grace_at_most_and_keeps_what_was_cut() {
    let broken = sink(Reply::status(503)).await;
    // The first 5 replayed callbacks are answered at once, the other 15 after 20 s.
    let target = sink(Reply::ok().after(Duration::from_secs(20))).await;
    for _ in 0..5 {
        target.reply_next(Reply::ok());
    }
    let sim = start_app(app1().retries(0).timeout_secs(60.0).rule(rule("r", &broken.url("/cb")))).await;
    let (_, date) = fill_store(&sim, 20).await;
    let replay = tokio::spawn(replay_over_rest(
        sim.base_url(),
        date.clone(),
        target.url("/"),
        Duration::from_secs(60),
    ));
    arrived(&target, 20).await;
    eventually("the 5 answered at once to leave the store", || async {
        (stored_total(&sim) == 15).then_some(())
    })
    .await;
    let asked = std::time::Instant::now();
    sim.shutdown().await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(8), "the stop took {took:?}");
    let (s, v) = replay.await.unwrap().expect("the replay is answered");
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["data"].as_str(),
            v["delivered"].as_u64(),
            v["failed"].as_u64(),
            v["interrupted"].as_u64()
        ),
        (Some("failure"), Some(5), Some(0), Some(15)),
        "{v}"
    );
    assert!(v["warnings"][0].as_str().unwrap().contains("stopping"), "{v}");
    // The cut ones stay where they were; the delivered ones are gone.
    let key = DateKey::parse(&date).unwrap();
    assert_eq!(sim.items(APP, key, 0, 100).unwrap().len(), 15);
    assert_eq!(stored_total(&sim), 15);
    // A replay asked once the stop began is refused.
    let refused = sim.replay(APP, key, 0, None).await;
    assert!(
        matches!(
            refused,
            Err(callback_sim::SimError::Replay(callback_sim::ReplayError::ShuttingDown))
        ),
        "{refused:?}"
    );
}
