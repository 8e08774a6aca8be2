//! Bans, the exception store and its REST API, graceful stop, and durability.

use std::time::{Duration, Instant};

use callback_sim::DateKey;
use serde_json::{Value, json};

use crate::helpers::*;

const SHRUNK_BAN: &str = "[ban]\nfailure_threshold = 6\nwindow_secs = 2\nbase_secs = 0.5\nmax_level = 3\n";

fn msg() -> Value {
    json!({"from": "a", "to": "b", "msg": "x"})
}

async fn wait_state(app: &TestApp, rule: &str, state: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = app.rule_status(rule).await;
        if r["state"] == state {
            return r;
        }
        assert!(Instant::now() < deadline, "rule {rule} never became {state}: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms_of(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn bans_start_at_the_threshold_store_banned_callbacks_and_escalate() {
    let bad = Receiver::start(Reply::Status(500)).await;
    let good = Receiver::ok().await;
    let rules = rule("broken", &bad.url("/"), "  chat_types = [\"chat\"]") + &rule("healthy", &good.url("/"), "");
    let app = spawn_app(SHRUNK_BAN, &agora_app("", &rules)).await;
    for level in [1u64, 2, 3, 3] {
        wait_state(&app, "broken", "active").await;
        // Two failed attempts per message: the third message reaches the threshold of six.
        for i in 0..3 {
            let before = app.rule_status("broken").await;
            assert_eq!(before["state"], "active", "banned too early, at message {i}: {before}");
            assert_eq!(before["failures_in_window"], 2 * i, "{before}");
            let (_, a) = app.send(msg(), true).await;
            let cbs = callbacks(&a);
            let broken = cbs.iter().find(|c| c["rule"] == "broken").unwrap();
            assert_eq!(
                (broken["outcome"].as_str(), broken["attempts"].as_u64()),
                (Some("stored"), Some(2)),
                "{broken}"
            );
            let healthy = cbs.iter().find(|c| c["rule"] == "healthy").unwrap();
            assert_eq!(
                (healthy["outcome"].as_str(), healthy["attempts"].as_u64()),
                (Some("delivered"), Some(1)),
                "{healthy}"
            );
        }
        let r = app.rule_status("broken").await;
        let seen = chrono::Utc::now().timestamp_millis();
        assert_eq!(r["state"], "banned", "{r}");
        assert_eq!(r["ban_level"], level, "{r}");
        let left = ms_of(&r["banned_until"]) - seen;
        assert!(
            left <= level as i64 * 500 && left > (level as i64 - 1) * 500 - 100,
            "ban of level {level} has {left} ms left: {r}"
        );
        // While banned: not attempted, stored as `banned`; the other rule is untouched.
        let hits = bad.count();
        let (_, a) = app.send(msg(), true).await;
        let broken = callbacks(&a).iter().find(|c| c["rule"] == "broken").unwrap().clone();
        assert_eq!(
            (
                broken["outcome"].as_str(),
                broken["last_attempt"].as_str(),
                broken["attempts"].as_u64()
            ),
            (Some("stored"), Some("banned"), Some(0)),
            "{broken}"
        );
        assert_eq!(bad.count(), hits, "a banned rule is not attempted");
        assert_eq!(app.rule_status("healthy").await["state"], "active");
    }
    // The banned callbacks are in the store with their reason.
    let info = app.info().await;
    let date = info[0]["date"].as_str().unwrap().to_string();
    let (_, items) = app
        .get(
            &format!("/app-id/app1/callbacks/storage/items?date={date}&limit=10000"),
            "tok1",
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
}

#[tokio::test]
async fn info_lists_buckets_with_date_size_and_retry() {
    let port = refused_port().await;
    let sections = "[store]\nutc_offset = \"+08:00\"\n";
    let app = spawn_app(
        sections,
        &agora_app("retries = 0", &rule("r", &format!("http://127.0.0.1:{port}/"), "")),
    )
    .await;
    assert_eq!(app.info().await, Vec::<Value>::new());
    let before = chrono::Utc::now().timestamp_millis() as u64;
    for _ in 0..5 {
        let (_, a) = app.send(msg(), true).await;
        assert_eq!(callbacks(&a)[0]["outcome"], "stored");
    }
    let after = chrono::Utc::now().timestamp_millis() as u64;
    let info = app.info().await;
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
    let (_, env) = app.get("/app-id/app1/callbacks/storage/info", "tok1").await;
    for k in ["path", "uri", "timestamp", "action", "application", "data", "duration"] {
        assert!(env.get(k).is_some(), "{k} missing: {env}");
    }
    assert_eq!(env["action"], "get");
}

/// Stores `n` callbacks (receiver refusing) and returns the bodies that were sent and the bucket.
async fn fill_store(app: &TestApp, n: usize) -> (Vec<Value>, String) {
    let mut sent = Vec::new();
    for i in 0..n {
        let (_, a) = app
            .send(json!({"from": "a", "to": "b", "msg": format!("m{i}")}), true)
            .await;
        assert_eq!(callbacks(&a)[0]["outcome"], "stored", "{a}");
        sent.push(callbacks(&a)[0]["callId"].clone());
    }
    let info = app.info().await;
    assert_eq!(
        info.len(),
        1,
        "one bucket expected (unless a 10-minute boundary was crossed): {info:?}"
    );
    (sent, info[0]["date"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn replay_to_a_healthy_target_sends_identical_bytes_and_drains_the_bucket() {
    let broken = Receiver::start(Reply::Status(503)).await;
    let healthy = Receiver::ok().await;
    let app = spawn_app("", &agora_app("retries = 0", &rule("r", &broken.url("/cb"), ""))).await;
    let (call_ids, date) = fill_store(&app, 20).await;
    let originals: std::collections::HashMap<String, axum::body::Bytes> = broken
        .received()
        .into_iter()
        .map(|r| (r.json()["callId"].as_str().unwrap().to_string(), r.body))
        .collect();
    let (s, v) = app
        .post(
            "/app-id/app1/callbacks/storage/retry",
            "tok1",
            json!({"date": date, "retry": 0, "targetUrl": healthy.url("/replay")}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"], "success");
    assert_eq!((v["delivered"].as_u64(), v["failed"].as_u64()), (Some(20), Some(0)));
    let got = healthy.wait_for(20).await;
    assert_eq!(got.len(), 20);
    for r in &got {
        assert_eq!(r.path, "/replay");
        let id = r.json()["callId"].as_str().unwrap().to_string();
        assert_eq!(originals[&id], r.body, "replays send the same bytes");
    }
    let ids: std::collections::HashSet<_> = got.iter().map(|r| r.json()["callId"].clone()).collect();
    assert_eq!(ids, call_ids.into_iter().collect());
    assert_eq!(
        app.info().await,
        Vec::<Value>::new(),
        "delivered callbacks leave the store"
    );
    // The bucket is gone now: replaying it again is a 400.
    let (s, v) = app
        .post("/app-id/app1/callbacks/storage/retry", "tok1", json!({"date": date}))
        .await;
    assert_eq!(s, 400, "{v}");
}

#[tokio::test]
async fn failed_replays_move_to_the_next_retry_and_rule_url_replays_obey_the_ban() {
    let broken = Receiver::start(Reply::Status(500)).await;
    let app = spawn_app(SHRUNK_BAN, &agora_app("", &rule("r", &broken.url("/cb"), ""))).await;
    let (_, date) = fill_store(&app, 2).await;
    let port = refused_port().await;
    let (s, v) = app
        .post(
            "/app-id/app1/callbacks/storage/retry",
            "tok1",
            json!({"date": date, "targetUrl": format!("http://127.0.0.1:{port}/")}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["data"].as_str(), v["delivered"].as_u64(), v["failed"].as_u64()),
        (Some("failure"), Some(0), Some(2))
    );
    let info = app.info().await;
    assert_eq!(info, vec![json!({"date": date, "size": 2, "retry": 1})]);
    // Replays to a targetUrl did not feed the ban (2 messages x 2 attempts = 4 < 6).
    let r = app.rule_status("r").await;
    assert_eq!(
        (r["state"].as_str(), r["failures_in_window"].as_u64()),
        (Some("active"), Some(4)),
        "{r}"
    );
    // A replay to the rule's own URL feeds it: 4 + 2 x 2 reaches the threshold.
    let (s, v) = app
        .post(
            "/app-id/app1/callbacks/storage/retry",
            "tok1",
            json!({"date": date, "retry": 1}),
        )
        .await;
    assert_eq!((s.as_u16(), v["failed"].as_u64()), (200, Some(2)), "{v}");
    assert_eq!(app.rule_status("r").await["state"], "banned");
    // ... and obeys it: nothing is attempted while banned.
    let hits = broken.count();
    let (_, v) = app
        .post(
            "/app-id/app1/callbacks/storage/retry",
            "tok1",
            json!({"date": date, "retry": 2}),
        )
        .await;
    assert_eq!(v["failed"], 2, "{v}");
    assert_eq!(broken.count(), hits);
    let (_, items) = app
        .get(
            &format!("/app-id/app1/callbacks/storage/items?date={date}&retry=3"),
            "tok1",
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
    let healthy = Receiver::ok().await;
    let hang = Receiver::start(Reply::Hang).await;
    let port = refused_port().await;
    let apps = agora_app(
        "retries = 0\ntimeout_secs = 1",
        &rule("r", &format!("http://127.0.0.1:{port}/"), ""),
    ) + "[[apps]]\nid = \"nostore\"\ntoken = \"tok2\"\nexception_store = false\nretries = 0\n"
        + &rule("r", &format!("http://127.0.0.1:{port}/"), "");
    let app = spawn_app("", &apps).await;
    let (_, date) = fill_store(&app, 3).await;
    let retry = "/app-id/app1/callbacks/storage/retry";
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
        let (s, v) = app.post(retry, "tok1", body.clone()).await;
        assert_eq!(s, 400, "{body} → {v}");
        assert!(v["error_description"].as_str().unwrap().contains(hint), "{body} → {v}");
    }
    let (s, _) = app.post(retry, "wrong", json!({"date": date})).await;
    assert_eq!(s, 401);
    let (s, _) = app
        .post("/app-id/ghost/callbacks/storage/retry", "tok1", json!({"date": date}))
        .await;
    assert_eq!(s, 404);
    // The store is off for this app: 403, after auth.
    for path in [
        "/app-id/nostore/callbacks/storage/info",
        "/app-id/nostore/callbacks/storage/items?date=202109091440",
    ] {
        let (s, v) = app.get(path, "tok2").await;
        assert_eq!(s, 403, "{v}");
        assert_eq!(app.get(path, "bad").await.0, 401);
    }
    let (s, _) = app
        .post("/app-id/nostore/callbacks/storage/retry", "tok2", json!({"date": date}))
        .await;
    assert_eq!(s, 403);
    let (_, a) = app.send_as("nostore", "tok2", msg(), true).await;
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
        let (s, v) = app
            .get(&format!("/app-id/app1/callbacks/storage/items{q}"), "tok1")
            .await;
        assert_eq!(s, 400, "{q} → {v}");
    }
    let (s, v) = app
        .get("/app-id/app1/callbacks/storage/items?date=202109091440", "tok1")
        .await;
    assert_eq!((s.as_u16(), v["data"].clone()), (200, json!([])));
    let (_, v) = app
        .get(
            &format!("/app-id/app1/callbacks/storage/items?date={date}&limit=2"),
            "tok1",
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
    let http = app.http.clone();
    let url = format!("{}{retry}", app.base);
    let first = tokio::spawn({
        let body = json!({"date": date, "targetUrl": hang.url("/")});
        async move {
            http.post(url)
                .bearer_auth("tok1")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    hang.wait_for(1).await;
    let (s, v) = app
        .post(retry, "tok1", json!({"date": date, "targetUrl": healthy.url("/")}))
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn graceful_stop_stores_what_was_queued_and_loses_nothing() {
    let rx = Receiver::start(Reply::Delay(Duration::from_millis(20), 200)).await;
    let sections = "[delivery]\nconcurrency = 4\nqueue_capacity = 10000\n";
    let mut app = spawn_app(sections, &agora_app("", &rule("r", &rx.url("/"), ""))).await;
    let mut accepted = 0;
    for _ in 0..300 {
        let (s, a) = app.send(msg(), false).await;
        assert_eq!(s, 200, "{a}");
        accepted += a["data"]["queued"].as_u64().unwrap();
    }
    let server = app.server.take().unwrap();
    server.shutdown().await;
    let stats = rule_stats(&server, "r");
    use callback_sim::{FinalOutcome, Outcome};
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
    assert_eq!(
        stored_total(&server),
        stored,
        "everything reported stored is in the store"
    );
}

#[tokio::test]
async fn ban_state_and_the_store_survive_a_restart() {
    let bad = Receiver::start(Reply::Status(500)).await;
    let sections = "[ban]\nfailure_threshold = 2\nwindow_secs = 60\nbase_secs = 60\n";
    let apps = agora_app("", &rule("r", &bad.url("/"), ""));
    let mut app = spawn_app(sections, &apps).await;
    app.send(msg(), true).await;
    let before = wait_state(&app, "r", "banned").await;
    let info = app.info().await;
    app.shutdown().await;
    let app = spawn_app_in(app.dir, sections, &apps).await;
    let after = app.rule_status("r").await;
    assert_eq!(
        (
            after["state"].clone(),
            after["ban_level"].clone(),
            after["banned_until"].clone()
        ),
        (
            before["state"].clone(),
            before["ban_level"].clone(),
            before["banned_until"].clone()
        )
    );
    assert_eq!(app.info().await, info);
}

#[tokio::test]
async fn retention_sweep_deletes_old_buckets() {
    let port = refused_port().await;
    let clock = std::sync::Arc::new(callback_sim::ManualClock::new(
        chrono::Utc::now().timestamp_millis() as u64
    ));
    let apps = agora_app("retries = 0", &rule("r", &format!("http://127.0.0.1:{port}/"), ""));
    let app = spawn_app_with_clock(
        tempfile::tempdir().unwrap(),
        "[store]\nretention_secs = 4\n",
        &apps,
        Some(clock.clone()),
    )
    .await;
    app.send(msg(), true).await;
    assert_eq!(app.info().await.len(), 1);
    // A bucket goes once its 10-minute window ended more than retention_secs ago.
    clock.advance(11 * 60 * 1000);
    let deadline = Instant::now() + WAIT;
    while !app.info().await.is_empty() {
        assert!(Instant::now() < deadline, "the sweep never purged the old bucket");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn kill_9_loses_nothing_reported_stored() {
    use std::process::{Command, Stdio};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = rt.block_on(refused_port());
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[api]\nrate_per_sec = 100000\nburst = 100000\n{}",
            agora_app("retries = 0", &rule("r", &format!("http://127.0.0.1:{port}/"), ""))
        ),
    )
    .unwrap();
    let start = || {
        let (child, line, _) = spawn_first_line(
            Command::new(env!("CARGO_BIN_EXE_callback-sim"))
                .args(["serve", "--config"])
                .arg(&path)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null()),
        );
        let base = line.strip_prefix("callback-sim listening on ").unwrap().to_string();
        (child, base)
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
                    .bearer_auth("tok1")
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
            .bearer_auth("tok1")
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
                .bearer_auth("tok1")
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
    let hung = Receiver::start(Reply::Hang).await;
    let ok = Receiver::ok().await;
    let rules = rule("hung", &hung.url("/"), "") + &rule("ok", &ok.url("/"), "");
    let mut app = spawn_app("[delivery]\nconcurrency = 2\n", &agora_app("timeout_secs = 30", &rules)).await;
    for _ in 0..3 {
        let (s, _) = app.send(msg(), false).await;
        assert_eq!(s, 200);
    }
    ok.wait_for(3).await;
    hung.wait_for(1).await;
    let server = app.server.take().unwrap();
    server.shutdown().await;
    let stats = rule_stats(&server, "hung");
    use callback_sim::{FinalOutcome, Outcome};
    assert_eq!(
        stats.final_outcome(FinalOutcome::Stored),
        3,
        "the one in flight and the two parked"
    );
    assert_eq!(stats.outcome(Outcome::Shutdown), 3);
    assert_eq!(stored_total(&server), 3);
    assert_eq!(server.queued(), 0);
}
