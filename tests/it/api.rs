//! The ingestion route's envelope and error answers, in the order docs/behaviour.md §8 gives.

use callback_sim::{Config, Reply};
use serde_json::{Value, json};

use crate::helpers::*;

fn assert_error(status: reqwest::StatusCode, v: &Value, want: u16, field_hint: &str) {
    assert_eq!(status.as_u16(), want, "{v}");
    assert!(v["error"].is_string(), "{v}");
    let desc = v["error_description"].as_str().unwrap();
    assert!(desc.contains(field_hint), "{desc:?} should mention {field_hint:?}");
    assert!(v["timestamp"].is_u64() && v["duration"].is_u64(), "{v}");
}

#[tokio::test]
async fn the_success_envelope_is_the_providers() {
    let sink = sink(Reply::ok()).await;
    let sim = start_app(app1().rule(rule("r", &sink.url("/")))).await;
    let (status, v) = send(&sim, json!({"from": "a", "to": "b", "msg": "x"}), false).await;
    assert_eq!(status, 200);
    for k in ["path", "uri", "timestamp", "action", "application", "data", "duration"] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    assert_eq!(v["action"], "post");
    assert_eq!(v["application"], "app1");
    assert!(v["uri"].as_str().unwrap().ends_with("/app-id/app1/messages"), "{v}");
    let data = &v["data"];
    assert!(data["msg_id"].as_str().unwrap().chars().all(|c| c.is_ascii_digit()));
    assert_eq!(data["accepted"], true);
    assert_eq!(data["code"], Value::Null);
    assert_eq!(data["queued"], 1);
    assert!(
        data.get("callbacks").is_none(),
        "without wait the answer comes before outcomes"
    );
    arrived(&sink, 1).await;
}

#[tokio::test]
async fn auth_and_bad_requests() {
    let sink = sink(Reply::ok()).await;
    let sim = start_app(app1().rule(rule("r", &sink.url("/")))).await;
    let http = reqwest::Client::new();
    let msg = json!({"from": "a", "to": "b", "msg": "x"});
    let (s, v) = send_as(&sim, "nope", TOKEN, msg.clone(), false).await;
    assert_error(s, &v, 404, "nope");
    let (s, v) = send_as(&sim, APP, "wrong", msg.clone(), false).await;
    assert_error(s, &v, 401, "token");
    let resp = http
        .post(format!("{}/app-id/app1/messages", sim.base_url()))
        .json(&msg)
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(resp).await;
    assert_error(s, &v, 401, "Authorization");
    // Unknown app wins over a wrong token (docs/behaviour.md §8: the app is checked first).
    let (s, _) = send_as(&sim, "nope", "wrong", msg.clone(), false).await;
    assert_eq!(s, 404);

    for (body, field) in [
        (json!({"from": "a", "to": "b"}), "msg"),
        (
            json!({"from": "a", "to": "b", "msg": "x", "chat_type": "dm"}),
            "chat_type",
        ),
        (json!({"from": "a", "to": "b", "msg": "x", "type": "gif"}), "type"),
        (json!({"to": "b", "msg": "x"}), "from"),
        (json!({"from": "a", "to": "b", "msg": "x", "offline": "b"}), "offline"),
        (json!(["not", "an", "object"]), "JSON object"),
    ] {
        let (s, v) = send(&sim, body.clone(), false).await;
        assert_error(s, &v, 400, field);
    }
    let resp = http
        .post(format!("{}/app-id/app1/messages", sim.base_url()))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(resp).await;
    assert_error(s, &v, 400, "body");
    // `wait` is a boolean as the OpenAPI document says: only `true` or `false`.
    for bad in ["maybe", "", "1", "0"] {
        let resp = http
            .post(format!("{}/app-id/app1/messages?wait={bad}", sim.base_url()))
            .bearer_auth(TOKEN)
            .json(&msg)
            .send()
            .await
            .unwrap();
        let (s, v) = status_json(resp).await;
        assert_error(s, &v, 400, "wait");
    }
    assert_eq!(count(&sink), 0, "nothing refused was delivered");
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let sink = sink(Reply::ok()).await;
    let sim = start(
        config()
            .max_body_bytes(2048)
            .app(app1().rule(rule("r", &sink.url("/")))),
    )
    .await;
    let (s, v) = send(&sim, json!({"from": "a", "to": "b", "msg": "x".repeat(4096)}), false).await;
    assert_error(s, &v, 413, "2048");
}

#[tokio::test]
async fn rate_limit_gives_429() {
    let sink = sink(Reply::ok()).await;
    let sim = start(
        Config::builder()
            .api_rate(1, 2)
            .app(app1().rule(rule("r", &sink.url("/")))),
    )
    .await;
    let msg = json!({"from": "a", "to": "b", "msg": "x"});
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(send(&sim, msg.clone(), false).await.0.as_u16());
    }
    assert_eq!(&codes[..2], [200, 200]);
    assert!(codes[2..].contains(&429), "{codes:?}");
    let (s, v) = send(&sim, msg, false).await;
    assert_error(s, &v, 429, "requests per second");
}

#[tokio::test]
async fn a_full_queue_gives_429_for_all_of_a_message() {
    let sink = sink(Reply::hang()).await;
    let sim = start(
        config()
            .concurrency(1)
            .queue_capacity(2)
            .app(app1().rule(rule("r", &sink.url("/")))),
    )
    .await;
    // Four callbacks never fit in a queue of two: none is queued.
    let (s, v) = send(
        &sim,
        json!({"from": "a", "to": "g", "chat_type": "groupchat", "msg": "x", "offline": ["b", "c", "d"]}),
        false,
    )
    .await;
    assert_error(s, &v, 429, "queue");
    // One in flight, two queued, then the queue is full.
    let mut codes = Vec::new();
    for _ in 0..6 {
        let (s, _) = send(&sim, json!({"from": "a", "to": "b", "msg": "x"}), false).await;
        codes.push(s.as_u16());
        if s == 429 {
            break;
        }
        if codes.len() == 1 {
            arrived(&sink, 1).await;
        }
    }
    assert_eq!(codes, [200, 200, 200, 429]);
}

#[tokio::test]
async fn graceful_stop_finishes_every_callback() {
    let sink = sink(Reply::hang()).await;
    let sim = start(
        config()
            .concurrency(1)
            .app(app1().exception_store(false).rule(rule("r", &sink.url("/")))),
    )
    .await;
    let base = sim.base_url();
    let send_waiting = || {
        let url = format!("{base}/app-id/app1/messages?wait=true");
        tokio::spawn(async move {
            status_json(
                reqwest::Client::new()
                    .post(url)
                    .bearer_auth(TOKEN)
                    .json(&json!({"from": "a", "to": "b", "msg": "x"}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        })
    };
    let in_flight = send_waiting();
    arrived(&sink, 1).await;
    let queued = send_waiting();
    eventually("the second message to queue behind the hung one", || async {
        (sim.queued() == 1).then_some(())
    })
    .await;
    let stop = tokio::spawn(async move { sim.shutdown().await });
    // While stopping (the hung attempt holds the stop for its grace period), /healthz says so
    // and new messages get 503.
    let health = eventually("/healthz to answer 503", || async {
        let resp = reqwest::get(format!("{base}/healthz")).await.unwrap();
        if resp.status() == 503 {
            Some(resp.json::<Value>().await.unwrap())
        } else {
            None
        }
    })
    .await;
    assert_eq!(health["status"], "stopping", "{health}");
    let resp = reqwest::Client::new()
        .post(format!("{base}/app-id/app1/messages"))
        .bearer_auth(TOKEN)
        .json(&json!({"from": "a", "to": "b", "msg": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);

    let (_, q) = queued.await.unwrap();
    let cb = &callbacks(&q)[0];
    assert_eq!(
        (
            cb["outcome"].as_str(),
            cb["last_attempt"].as_str(),
            cb["attempts"].as_u64()
        ),
        (Some("dropped"), Some("shutdown"), Some(0)),
        "{cb}"
    );
    let (_, f) = in_flight.await.unwrap();
    let cb = &callbacks(&f)[0];
    assert_eq!(
        (
            cb["outcome"].as_str(),
            cb["last_attempt"].as_str(),
            cb["attempts"].as_u64()
        ),
        (Some("dropped"), Some("shutdown"), Some(1)),
        "{cb}"
    );
    stop.await.unwrap();
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let sim = start_app(app1().rule(rule("r", "http://127.0.0.1:9/"))).await;
    let (s, v) = get(&sim, "/nope", TOKEN).await;
    assert_error(s, &v, 404, "route");
    let (s, v) = get(&sim, "/app-id/app1/messages", TOKEN).await;
    assert_error(s, &v, 405, "method");
    let (s, v) = get(&sim, "/healthz", "").await;
    assert_eq!((s.as_u16(), v["status"].as_str()), (200, Some("ok")));
    let (s, v) = get(&sim, "/app-id/app1/callbacks/rules?x=1", TOKEN).await;
    assert_error(s, &v, 400, "x");
}

#[tokio::test]
async fn odd_path_and_query_parameters_get_4xx() {
    let sim = start_app(app1().rule(rule("r", "http://127.0.0.1:9/"))).await;
    let long = "a".repeat(10_000);
    for path in [
        "/app-id/%E4%B8%AD%E6%96%87/callbacks/rules".to_string(),
        "/app-id/../callbacks/rules".to_string(),
        "/app-id/app1/../app1/callbacks/rules?x=..".to_string(),
        format!("/app-id/{long}/callbacks/rules"),
        "/app-id/%FF%FE/callbacks/rules".to_string(),
        "/app-id/app1/callbacks/storage/items?date=%E4%B8%AD".to_string(),
        format!("/app-id/app1/callbacks/storage/items?date={long}"),
        "/app-id/app1/callbacks/storage/items?date=202109091440&limit=%00".to_string(),
        "/app-id/app1/callbacks/storage/items?date=202109091440&retry=99999999999999999999".to_string(),
    ] {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", sim.base_url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!((400..500).contains(&status), "{path} → {status}");
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(body["error"].is_string(), "{path}: error JSON expected, got {body}");
    }
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let sim = start_app(app1().rule(rule("r", "http://127.0.0.1:9/"))).await;
    let (s, doc) = get(&sim, "/openapi.json", "").await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/app-id/{app_id}/callbacks/storage/retry"]["post"].is_object());
}

#[tokio::test]
async fn metrics_show_callbacks_latency_queue_bans_store_and_replays() {
    let ok = sink(Reply::ok()).await;
    let bad = sink(Reply::status(500)).await;
    let sim = start(
        config().ban(2, 60.0, 60.0, 5).app(
            app1()
                .rule(rule("good", &ok.url("/")))
                .rule(rule("broken", &bad.url("/"))),
        ),
    )
    .await;
    send(&sim, json!({"from": "a", "to": "b", "msg": "x"}), true).await;
    let date = info(&sim).await[0]["date"].as_str().unwrap().to_string();
    post(
        &sim,
        "/app-id/app1/callbacks/storage/retry",
        TOKEN,
        json!({"date": date, "targetUrl": ok.url("/r")}),
    )
    .await;
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", sim.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"callback_sim_callbacks_total{app="app1",rule="good",outcome="delivered"} 1"#,
        r#"callback_sim_callbacks_total{app="app1",rule="broken",outcome="stored"} 1"#,
        r#"callback_sim_attempts_total{app="app1",rule="broken",outcome="status"} 2"#,
        "callback_sim_attempt_duration_seconds_bucket{",
        "callback_sim_queue_depth 0",
        "callback_sim_in_flight",
        "callback_sim_bans_active 1",
        r#"callback_sim_bans_started_total{app="app1",rule="broken"} 1"#,
        r#"callback_sim_store_items{app="app1"} 0"#,
        r#"callback_sim_replays_total{app="app1",result="success"} 1"#,
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}
