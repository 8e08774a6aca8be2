//! The ingestion route's envelope and error answers, in the SPEC §8 order.

use std::time::Duration;

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
    let rx = Receiver::ok().await;
    let app = spawn_app("", &agora_app("", &rule("r", &rx.url("/"), ""))).await;
    let (status, v) = app.send(json!({"from": "a", "to": "b", "msg": "x"}), false).await;
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
    rx.wait_for(1).await;
}

#[tokio::test]
async fn auth_and_bad_requests() {
    let rx = Receiver::ok().await;
    let app = spawn_app("", &agora_app("", &rule("r", &rx.url("/"), ""))).await;
    let msg = json!({"from": "a", "to": "b", "msg": "x"});
    let (s, v) = app.send_as("nope", "tok1", msg.clone(), false).await;
    assert_error(s, &v, 404, "nope");
    let (s, v) = app.send_as("app1", "wrong", msg.clone(), false).await;
    assert_error(s, &v, 401, "token");
    let resp = app
        .http
        .post(format!("{}/app-id/app1/messages", app.base))
        .json(&msg)
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(resp).await;
    assert_error(s, &v, 401, "Authorization");
    // Unknown app wins over a wrong token (SPEC §8 order).
    let (s, _) = app.send_as("nope", "wrong", msg.clone(), false).await;
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
        let (s, v) = app.send(body.clone(), false).await;
        assert_error(s, &v, 400, field);
    }
    let resp = app
        .http
        .post(format!("{}/app-id/app1/messages", app.base))
        .bearer_auth("tok1")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(resp).await;
    assert_error(s, &v, 400, "body");
    let resp = app
        .http
        .post(format!("{}/app-id/app1/messages?wait=maybe", app.base))
        .bearer_auth("tok1")
        .json(&msg)
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(resp).await;
    assert_error(s, &v, 400, "wait");
    assert_eq!(rx.count(), 0, "nothing refused was delivered");
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let rx = Receiver::ok().await;
    let app = spawn_app(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 2048\n",
        &agora_app("", &rule("r", &rx.url("/"), "")),
    )
    .await;
    let (s, v) = app
        .send(json!({"from": "a", "to": "b", "msg": "x".repeat(4096)}), false)
        .await;
    assert_error(s, &v, 413, "2048");
}

#[tokio::test]
async fn rate_limit_gives_429() {
    let rx = Receiver::ok().await;
    let app = spawn_app(
        "[api]\nrate_per_sec = 1\nburst = 2\n",
        &agora_app("", &rule("r", &rx.url("/"), "")),
    )
    .await;
    let msg = json!({"from": "a", "to": "b", "msg": "x"});
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(app.send(msg.clone(), false).await.0.as_u16());
    }
    assert_eq!(&codes[..2], [200, 200]);
    assert!(codes[2..].contains(&429), "{codes:?}");
    let (s, v) = app.send(msg, false).await;
    assert_error(s, &v, 429, "requests per second");
}

#[tokio::test]
async fn a_full_queue_gives_429_for_all_of_a_message() {
    let rx = Receiver::start(Reply::Hang).await;
    let sections = "[delivery]\nconcurrency = 1\nqueue_capacity = 2\n";
    let app = spawn_app(sections, &agora_app("", &rule("r", &rx.url("/"), ""))).await;
    // Four callbacks never fit in a queue of two: none is queued.
    let (s, v) = app
        .send(
            json!({"from": "a", "to": "g", "chat_type": "groupchat", "msg": "x", "offline": ["b", "c", "d"]}),
            false,
        )
        .await;
    assert_error(s, &v, 429, "queue");
    // One in flight, two queued, then the queue is full.
    let mut codes = Vec::new();
    for _ in 0..6 {
        let (s, _) = app.send(json!({"from": "a", "to": "b", "msg": "x"}), false).await;
        codes.push(s.as_u16());
        if s == 429 {
            break;
        }
        if codes.len() == 1 {
            rx.wait_for(1).await;
        }
    }
    assert_eq!(codes, [200, 200, 200, 429]);
}

#[tokio::test]
async fn graceful_stop_finishes_every_callback() {
    let rx = Receiver::start(Reply::Hang).await;
    let sections = "[delivery]\nconcurrency = 1\n";
    let mut app = spawn_app(
        sections,
        &agora_app("exception_store = false", &rule("r", &rx.url("/"), "")),
    )
    .await;
    let send = |app: &TestApp| {
        let http = app.http.clone();
        let url = format!("{}/app-id/app1/messages?wait=true", app.base);
        tokio::spawn(async move {
            status_json(
                http.post(url)
                    .bearer_auth("tok1")
                    .json(&json!({"from": "a", "to": "b", "msg": "x"}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        })
    };
    let in_flight = send(&app);
    rx.wait_for(1).await;
    let queued = send(&app);
    let base = app.base.clone();
    // Wait until the second message is queued behind the hung one.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let h: Value = reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h["queued"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "second message never queued: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop = tokio::spawn(async move { app.shutdown().await });
    // While stopping (the hung attempt holds the stop for its grace period), /healthz says so
    // and new messages get 503.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let resp = reqwest::get(format!("{base}/healthz")).await.unwrap();
        if resp.status() == 503 {
            let h: Value = resp.json().await.unwrap();
            assert_eq!(h["status"], "stopping", "{h}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the stop never began");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resp = reqwest::Client::new()
        .post(format!("{base}/app-id/app1/messages"))
        .bearer_auth("tok1")
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
    let app = spawn_app("", &agora_app("", &rule("r", "http://127.0.0.1:9/", ""))).await;
    let (s, v) = app.get("/nope", "tok1").await;
    assert_error(s, &v, 404, "route");
    let (s, v) = app.get("/app-id/app1/messages", "tok1").await;
    assert_error(s, &v, 405, "method");
    let (s, v) = app.get("/healthz", "").await;
    assert_eq!((s.as_u16(), v["status"].as_str()), (200, Some("ok")));
    let (s, v) = app.get("/app-id/app1/callbacks/rules?x=1", "tok1").await;
    assert_error(s, &v, 400, "x");
}

#[tokio::test]
async fn odd_path_and_query_parameters_get_4xx() {
    let app = spawn_app("", &agora_app("", &rule("r", "http://127.0.0.1:9/", ""))).await;
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
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .bearer_auth("tok1")
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
    let app = spawn_app("", &agora_app("", &rule("r", "http://127.0.0.1:9/", ""))).await;
    let (s, doc) = app.get("/openapi.json", "").await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/app-id/{app_id}/callbacks/storage/retry"]["post"].is_object());
}

#[tokio::test]
async fn metrics_show_callbacks_latency_queue_bans_store_and_replays() {
    let ok = Receiver::ok().await;
    let bad = Receiver::start(Reply::Status(500)).await;
    let rules = rule("good", &ok.url("/"), "") + &rule("broken", &bad.url("/"), "");
    let app = spawn_app(
        "[ban]\nfailure_threshold = 2\nwindow_secs = 60\nbase_secs = 60\n",
        &agora_app("", &rules),
    )
    .await;
    app.send(json!({"from": "a", "to": "b", "msg": "x"}), true).await;
    let date = app.info().await[0]["date"].as_str().unwrap().to_string();
    app.post(
        "/app-id/app1/callbacks/storage/retry",
        "tok1",
        json!({"date": date, "targetUrl": ok.url("/r")}),
    )
    .await;
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
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
