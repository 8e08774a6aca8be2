//! Post-send delivery: wire format, fan-out, filters, retry and outcome classes.

use std::time::Duration;

use callback_sim::agora_sign;
use serde_json::{Value, json};

use crate::helpers::*;

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn callback_is_signed_and_has_the_provider_fields() {
    let rx = Receiver::ok().await;
    let app = spawn_app("", &agora_app("", &rule("sync", &rx.url("/cb"), ""))).await;
    let (status, answer) = app
        .send(
            json!({"from": "u1", "to": "u2", "msg": "hello", "ext": {"k": "v"}}),
            true,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let got = rx.wait_for(1).await;
    let req = &got[0];
    assert_eq!(req.path, "/cb");
    assert_eq!(req.headers["content-type"], "application/json");
    assert!(req.headers["user-agent"].to_str().unwrap().starts_with("callback-sim/"));
    // Exact bytes: keys in the provider's order, no group_id for one-to-one chat.
    let text = std::str::from_utf8(&req.body).unwrap();
    let body: Value = req.json();
    let order: Vec<usize> = [
        "\"callId\"",
        "\"eventType\"",
        "\"timestamp\"",
        "\"chat_type\"",
        "\"from\"",
        "\"to\"",
        "\"msg_id\"",
        "\"payload\"",
        "\"securityVersion\"",
        "\"security\"",
    ]
    .iter()
    .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} missing in {text}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "field order: {text}");
    let mut k = keys(&body);
    k.sort();
    assert_eq!(
        k,
        [
            "callId",
            "chat_type",
            "eventType",
            "from",
            "msg_id",
            "payload",
            "security",
            "securityVersion",
            "timestamp",
            "to"
        ]
    );
    let call_id = body["callId"].as_str().unwrap();
    assert!(call_id.starts_with("app1#"));
    uuid_part(call_id);
    assert_eq!(body["eventType"], "chat");
    assert_eq!(body["chat_type"], "chat");
    assert_eq!(body["from"], "u1");
    assert_eq!(body["to"], "u2");
    assert_eq!(body["securityVersion"], "1.0.0");
    assert_eq!(
        body["payload"],
        json!({"bodies": [{"type": "txt", "msg": "hello"}], "ext": {"k": "v"}})
    );
    assert_eq!(body["msg_id"], answer["data"]["msg_id"]);
    let ts = body["timestamp"].as_u64().unwrap();
    assert!(ts.abs_diff(answer["timestamp"].as_u64().unwrap()) < 10_000);
    assert_eq!(body["security"], agora_sign(call_id, "sec_sync", ts));
    // The ?wait=true answer describes the same callback.
    let cbs = callbacks(&answer);
    assert_eq!(cbs.len(), 1);
    assert_eq!(cbs[0]["callId"], call_id);
    assert_eq!(cbs[0]["rule"], "sync");
    assert_eq!(cbs[0]["kind"], "post_send");
    assert_eq!(cbs[0]["eventType"], "chat");
    assert_eq!(cbs[0]["to"], "u2");
    assert_eq!(cbs[0]["outcome"], "delivered");
    assert_eq!(cbs[0]["last_attempt"], "delivered");
    assert_eq!(cbs[0]["attempts"], 1);
    assert_eq!(cbs[0]["status"], 200);
    assert_eq!(cbs[0]["warnings"], json!([]));
}

fn uuid_part(call_id: &str) {
    let (_, u) = call_id.split_once('#').unwrap();
    assert_eq!(u.len(), 36, "{call_id}");
    assert_eq!(u.matches('-').count(), 4, "{call_id}");
}

#[tokio::test]
async fn groups_and_chatrooms_carry_group_id_and_offline_fan_out() {
    let rx = Receiver::ok().await;
    let app = spawn_app("", &agora_app("", &rule("sync", &rx.url("/cb"), ""))).await;
    let (status, answer) = app
        .send(
            json!({"from": "u1", "to": "g1", "chat_type": "chatroom", "type": "img",
                     "body": {"url": "http://x/1.png", "filename": "1.png"}, "offline": ["u3", "u4"]}),
            true,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["queued"], 3);
    let got = rx.wait_for(3).await;
    let mut bodies: Vec<Value> = got.iter().map(Received::json).collect();
    bodies.sort_by_key(|b| b["to"].as_str().unwrap().to_string());
    let tos: Vec<_> = bodies
        .iter()
        .map(|b| (b["eventType"].as_str().unwrap(), b["to"].as_str().unwrap()))
        .collect();
    assert_eq!(tos, [("chat", "g1"), ("chat_offline", "u3"), ("chat_offline", "u4")]);
    for b in &bodies {
        assert_eq!(b["group_id"], "g1", "{b}");
        assert_eq!(b["chat_type"], "groupchat", "chatrooms are groupchat on the wire: {b}");
        assert_eq!(b["payload"]["bodies"][0]["type"], "img");
        assert_eq!(b["payload"]["bodies"][0]["filename"], "1.png");
    }
    let ids: std::collections::HashSet<_> = bodies
        .iter()
        .map(|b| b["callId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "each callback has its own callId");
    // One-to-one with an offline recipient: no group_id anywhere.
    app.send(json!({"from": "u1", "to": "u2", "msg": "hi", "offline": ["u2"]}), true)
        .await;
    let got = rx.wait_for(5).await;
    for r in &got[3..] {
        assert!(r.json().get("group_id").is_none(), "{}", r.json());
    }
}

#[tokio::test]
async fn rule_filters_decide_which_rules_get_a_message() {
    let rx = Receiver::ok().await;
    let rules = [
        rule("all", &rx.url("/all"), ""),
        rule(
            "groups_img",
            &rx.url("/groups_img"),
            "  chat_types = [\"groupchat\"]\n  message_types = [\"img\"]",
        ),
        rule(
            "offline_only",
            &rx.url("/offline_only"),
            "  event_types = [\"chat_offline\"]\n  include_rest = false",
        ),
        rule("off", &rx.url("/off"), "  enabled = false"),
    ]
    .concat();
    let app = spawn_app("", &agora_app("", &rules)).await;
    let cases = [
        (json!({"from": "a", "to": "b", "msg": "x"}), vec!["/all"]),
        (
            json!({"from": "a", "to": "b", "msg": "x", "offline": ["b"]}),
            vec!["/all", "/all", "/offline_only"],
        ),
        (
            json!({"from": "a", "to": "b", "msg": "x", "offline": ["b"], "source": "rest"}),
            vec!["/all", "/all"],
        ),
        (
            json!({"from": "a", "to": "g", "chat_type": "groupchat", "type": "img", "body": {"url": "u"}}),
            vec!["/all", "/groups_img"],
        ),
        (
            json!({"from": "a", "to": "g", "chat_type": "chatroom", "type": "img", "body": {"url": "u"}}),
            vec!["/all"],
        ),
        (
            json!({"from": "a", "to": "g", "chat_type": "groupchat", "type": "txt", "msg": "x"}),
            vec!["/all"],
        ),
    ];
    for (msg, want) in cases {
        let before = rx.count();
        let (status, answer) = app.send(msg.clone(), true).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["data"]["queued"], want.len(), "{msg} → {answer}");
        let got = rx.wait_for(before + want.len()).await;
        let mut paths: Vec<_> = got[before..].iter().map(|r| r.path.clone()).collect();
        paths.sort();
        assert_eq!(paths, want, "{msg}");
    }
}

#[tokio::test]
async fn a_failed_attempt_is_retried_once_at_once_with_the_same_bytes() {
    let rx = Receiver::start(Reply::Status(500)).await;
    let app = spawn_app("", &agora_app("", &rule("r", &rx.url("/cb"), ""))).await;
    let (_, answer) = app.send(json!({"from": "a", "to": "b", "msg": "x"}), true).await;
    let cb = &callbacks(&answer)[0];
    assert_eq!(cb["attempts"], 2);
    assert_eq!(cb["last_attempt"], "status");
    assert_eq!(cb["status"], 500);
    assert_eq!(cb["outcome"], "stored");
    let got = rx.received();
    assert_eq!(got.len(), 2, "exactly one retry");
    assert_eq!(got[0].body, got[1].body, "a retry sends the same bytes");
    assert!(
        got[1].at - got[0].at < Duration::from_millis(500),
        "the retry is immediate"
    );

    // A receiver that fails once then recovers: delivered on the second attempt.
    rx.script([Reply::Status(503)]);
    rx.set_default(Reply::Status(200));
    let (_, answer) = app.send(json!({"from": "a", "to": "b", "msg": "y"}), true).await;
    let cb = &callbacks(&answer)[0];
    assert_eq!(
        (cb["outcome"].as_str(), cb["attempts"].as_u64()),
        (Some("delivered"), Some(2))
    );
}

#[tokio::test]
async fn retries_follow_the_app_policy() {
    let rx = Receiver::start(Reply::Status(500)).await;
    let app = spawn_app("", &agora_app("retries = 3", &rule("r", &rx.url("/cb"), ""))).await;
    let (_, answer) = app.send(json!({"from": "a", "to": "b", "msg": "x"}), true).await;
    assert_eq!(callbacks(&answer)[0]["attempts"], 4);
    assert_eq!(rx.count(), 4);
}

async fn one_outcome(app: &TestApp) -> Value {
    let (status, answer) = app.send(json!({"from": "a", "to": "b", "msg": "x"}), true).await;
    assert_eq!(status, 200, "{answer}");
    callbacks(&answer)[0].clone()
}

#[tokio::test]
async fn refused_connection_is_connect() {
    let port = refused_port().await;
    let app = spawn_app(
        "",
        &agora_app("", &rule("r", &format!("http://127.0.0.1:{port}/cb"), "")),
    )
    .await;
    let cb = one_outcome(&app).await;
    assert_eq!(cb["last_attempt"], "connect", "{cb}");
    assert_eq!(cb["attempts"], 2);
    assert_eq!(cb["status"], Value::Null);
}

#[tokio::test]
async fn unresolvable_host_is_dns() {
    let app = spawn_app("", &agora_app("", &rule("r", "http://no-such-host.invalid/cb", ""))).await;
    let cb = one_outcome(&app).await;
    assert_eq!(cb["last_attempt"], "dns", "{cb}");
    assert_eq!(cb["attempts"], 2);
}

#[tokio::test]
async fn hanging_receiver_is_timeout() {
    let rx = Receiver::start(Reply::Hang).await;
    let app = spawn_app("", &agora_app("timeout_secs = 1", &rule("r", &rx.url("/cb"), ""))).await;
    let started = std::time::Instant::now();
    let cb = one_outcome(&app).await;
    assert_eq!(cb["last_attempt"], "timeout", "{cb}");
    assert_eq!(cb["attempts"], 2);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "two 1 s attempts took {took:?}"
    );
}

#[tokio::test]
async fn non_200_and_redirects_are_status() {
    let rx = Receiver::start(Reply::Status(500)).await;
    let app = spawn_app("", &agora_app("", &rule("r", &rx.url("/cb"), ""))).await;
    let cb = one_outcome(&app).await;
    assert_eq!(
        (cb["last_attempt"].as_str(), cb["status"].as_u64()),
        (Some("status"), Some(500))
    );

    rx.set_default(Reply::Redirect(rx.url("/elsewhere")));
    let cb = one_outcome(&app).await;
    assert_eq!(
        (cb["last_attempt"].as_str(), cb["status"].as_u64()),
        (Some("status"), Some(302))
    );
    assert!(
        rx.received().iter().all(|r| r.path == "/cb"),
        "redirects are never followed"
    );

    for code in [201u16, 204] {
        rx.set_default(Reply::Status(code));
        let cb = one_outcome(&app).await;
        assert_eq!(
            (cb["last_attempt"].as_str(), cb["status"].as_u64()),
            (Some("status"), Some(u64::from(code))),
            "only 200 is success"
        );
    }
}

#[tokio::test]
async fn long_200_body_is_a_violation_delivered_and_not_retried() {
    let rx = Receiver::start(Reply::Body(200, "x".repeat(2000))).await;
    let app = spawn_app("", &agora_app("", &rule("r", &rx.url("/cb"), ""))).await;
    let cb = one_outcome(&app).await;
    assert_eq!(cb["outcome"], "violation", "{cb}");
    assert_eq!(cb["last_attempt"], "violation");
    assert_eq!(cb["attempts"], 1);
    assert_eq!(rx.count(), 1);
    // Exactly at the limit is fine; characters, not bytes, are counted.
    rx.set_default(Reply::Body(200, "é".repeat(1000)));
    assert_eq!(one_outcome(&app).await["outcome"], "delivered");
    rx.set_default(Reply::Body(200, "é".repeat(1001)));
    assert_eq!(one_outcome(&app).await["outcome"], "violation");
}

#[tokio::test]
async fn a_50_mb_response_is_read_only_partially() {
    const TOTAL: u64 = 50 * 1024 * 1024;
    let rx = Receiver::start(Reply::Stream(TOTAL)).await;
    let app = spawn_app("", &agora_app("", &rule("r", &rx.url("/cb"), ""))).await;
    let cb = one_outcome(&app).await;
    assert_eq!(cb["outcome"], "violation", "{cb}");
    // The simulator hung up after ~1 KB: the receiver's body is dropped long before the end.
    let produced = rx.wait_stream_end().await;
    assert!(
        produced < TOTAL / 4,
        "streamed {produced} of {TOTAL} bytes before the hang-up"
    );
}

#[tokio::test]
async fn rule_status_counts_outcomes() {
    let ok = Receiver::ok().await;
    let bad = Receiver::start(Reply::Status(500)).await;
    let rules = rule("good", &ok.url("/"), "") + &rule("broken", &bad.url("/"), "");
    let app = spawn_app("", &agora_app("", &rules)).await;
    for _ in 0..3 {
        app.send(json!({"from": "a", "to": "b", "msg": "x"}), true).await;
    }
    let (status, v) = app.get("/app-id/app1/callbacks/rules", "tok1").await;
    assert_eq!(status, 200, "{v}");
    let rules = v["data"].as_array().unwrap();
    let good = rules.iter().find(|r| r["name"] == "good").unwrap();
    let broken = rules.iter().find(|r| r["name"] == "broken").unwrap();
    assert_eq!(good["state"], "active");
    assert_eq!(good["counts"]["delivered"], 3);
    assert_eq!(good["final"]["delivered"], 3);
    assert_eq!(broken["counts"]["status"], 6, "two attempts each");
    assert_eq!(broken["final"]["stored"], 3);
    assert!(good.get("secret").is_none(), "secrets are never shown");
}

#[tokio::test]
async fn a_hung_receiver_does_not_hold_up_another_rule() {
    let hung = Receiver::start(Reply::Hang).await;
    let healthy = Receiver::ok().await;
    let rules = rule("hung", &hung.url("/"), "") + &rule("healthy", &healthy.url("/"), "");
    // Four deliveries in flight at once for everything: without per-rule fairness the hung
    // rule's callbacks would take all four and the healthy rule would wait out their timeouts.
    let app = spawn_app("[delivery]\nconcurrency = 4\n", &agora_app("timeout_secs = 5", &rules)).await;
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let (s, _) = app.send(json!({"from": "a", "to": "b", "msg": "x"}), false).await;
        assert_eq!(s, 200);
    }
    healthy.wait_for(10).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "healthy callbacks took {:?}",
        started.elapsed()
    );
    let hung_rule = app.rule_status("hung").await;
    assert_eq!(
        hung_rule["final"]["stored"], 0,
        "the hung rule's first attempts have not even timed out yet: {hung_rule}"
    );
    assert!(
        hung.count() <= 2,
        "the hung rule holds at most its share of the concurrency: {}",
        hung.count()
    );
}
