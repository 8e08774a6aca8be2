//! Post-send delivery: wire format, fan-out, filters, retry and outcome classes.

use std::time::{Duration, Instant};

use callback_sim::{FinalOutcome, Message, Outcome, Reply, Signature, Sink, agora_sign};
use serde_json::{Value, json};

use crate::helpers::*;

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn callback_is_signed_and_has_the_provider_fields() {
    let sink = Sink::recording(Some("sec_sync")).await.unwrap();
    let sim = start_app(app1().rule(rule("sync", &sink.url("/cb")))).await;
    let (status, answer) = send(
        &sim,
        json!({"from": "u1", "to": "u2", "msg": "hello", "ext": {"k": "v"}}),
        true,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let got = arrived(&sink, 1).await;
    let req = &got[0];
    assert_eq!(req.path, "/cb");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert!(req.header("user-agent").unwrap().starts_with("callback-sim/"));
    assert_eq!(req.signature, Signature::Valid);
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
    let sink = sink(Reply::ok()).await;
    let sim = start_app(app1().rule(rule("sync", &sink.url("/cb")))).await;
    let (status, answer) = send(
        &sim,
        json!({"from": "u1", "to": "g1", "chat_type": "chatroom", "type": "img",
                 "body": {"url": "http://x/1.png", "filename": "1.png"}, "offline": ["u3", "u4"]}),
        true,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["queued"], 3);
    let got = arrived(&sink, 3).await;
    let mut bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
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
    send(
        &sim,
        json!({"from": "u1", "to": "u2", "msg": "hi", "offline": ["u2"]}),
        true,
    )
    .await;
    let got = arrived(&sink, 5).await;
    for r in &got[3..] {
        assert!(r.json().get("group_id").is_none(), "{}", r.json());
    }
}

#[tokio::test]
async fn rule_filters_decide_which_rules_get_a_message() {
    let sink = sink(Reply::ok()).await;
    let sim = start_app(
        app1()
            .rule(rule("all", &sink.url("/all")))
            .rule(
                rule("groups_img", &sink.url("/groups_img"))
                    .chat_types(&["groupchat"])
                    .message_types(&["img"]),
            )
            .rule(
                rule("offline_only", &sink.url("/offline_only"))
                    .event_types(&["chat_offline"])
                    .include_rest(false),
            )
            .rule(rule("off", &sink.url("/off")).enabled(false)),
    )
    .await;
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
        let before = count(&sink);
        let (status, answer) = send(&sim, msg.clone(), true).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["data"]["queued"], want.len(), "{msg} → {answer}");
        let got = arrived(&sink, before + want.len()).await;
        let mut paths: Vec<_> = got[before..].iter().map(|r| r.path.clone()).collect();
        paths.sort();
        assert_eq!(paths, want, "{msg}");
    }
}

#[tokio::test]
async fn a_failed_attempt_is_retried_once_at_once_with_the_same_bytes() {
    let sink = sink(Reply::status(500)).await;
    let sim = start_app(app1().rule(rule("r", &sink.url("/cb")))).await;
    let cb = one_callback(&sim).await;
    assert_eq!(
        (cb.outcome, cb.last_attempt, cb.attempts, cb.status),
        (FinalOutcome::Stored, Outcome::Status, 2, Some(500))
    );
    let got = sink.received();
    assert_eq!(got.len(), 2, "exactly one retry");
    assert_eq!(got[0].body, got[1].body, "a retry sends the same bytes");
    assert!(
        got[1].at - got[0].at < Duration::from_millis(500),
        "the retry is immediate"
    );

    // A receiver that fails once then recovers: delivered on the second attempt.
    sink.fail_next(1, 503);
    sink.reply(Reply::ok());
    let cb = one_callback(&sim).await;
    assert_eq!((cb.outcome, cb.attempts), (FinalOutcome::Delivered, 2));
}

#[tokio::test]
async fn retries_follow_the_app_policy() {
    let sink = sink(Reply::status(500)).await;
    let sim = start_app(app1().retries(3).rule(rule("r", &sink.url("/cb")))).await;
    assert_eq!(one_callback(&sim).await.attempts, 4);
    assert_eq!(count(&sink), 4);
}

#[tokio::test]
async fn refused_connection_is_connect() {
    let sim = start_app(app1().rule(rule("r", &refused_url()))).await;
    let cb = one_callback(&sim).await;
    assert_eq!(
        (cb.last_attempt, cb.attempts, cb.status),
        (Outcome::Connect, 2, None),
        "{cb:?}"
    );
}

#[tokio::test]
async fn unresolvable_host_is_dns() {
    let sim = start_app(app1().rule(rule("r", "http://no-such-host.invalid/cb"))).await;
    let cb = one_callback(&sim).await;
    assert_eq!((cb.last_attempt, cb.attempts), (Outcome::Dns, 2), "{cb:?}");
}

#[tokio::test]
async fn hanging_receiver_is_timeout() {
    let sink = sink(Reply::hang()).await;
    let sim = start_app(app1().timeout_secs(1.0).rule(rule("r", &sink.url("/cb")))).await;
    let started = Instant::now();
    let cb = one_callback(&sim).await;
    assert_eq!((cb.last_attempt, cb.attempts), (Outcome::Timeout, 2), "{cb:?}");
    assert_eq!(count(&sink), 2, "both attempts reached the receiver");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "two 1 s attempts took {took:?}"
    );
}

#[tokio::test]
async fn non_200_and_redirects_are_status() {
    let sink = sink(Reply::status(500)).await;
    let sim = start_app(app1().rule(rule("r", &sink.url("/cb")))).await;
    let cb = one_callback(&sim).await;
    assert_eq!((cb.last_attempt, cb.status), (Outcome::Status, Some(500)));

    sink.reply(Reply::redirect(&sink.url("/elsewhere")));
    let cb = one_callback(&sim).await;
    assert_eq!((cb.last_attempt, cb.status), (Outcome::Status, Some(302)));
    assert!(
        sink.received().iter().all(|r| r.path == "/cb"),
        "redirects are never followed"
    );

    for code in [201u16, 204] {
        sink.reply(Reply::status(code));
        let cb = one_callback(&sim).await;
        assert_eq!(
            (cb.last_attempt, cb.status),
            (Outcome::Status, Some(code)),
            "only 200 is success"
        );
    }
}

#[tokio::test]
async fn long_200_body_is_a_violation_delivered_and_not_retried() {
    let sink = sink(Reply::ok().with_body(&"x".repeat(2000))).await;
    let sim = start_app(app1().rule(rule("r", &sink.url("/cb")))).await;
    let cb = one_callback(&sim).await;
    assert_eq!(
        (cb.outcome, cb.last_attempt, cb.attempts),
        (FinalOutcome::Violation, Outcome::Violation, 1),
        "{cb:?}"
    );
    assert_eq!(count(&sink), 1);
    // Exactly at the limit is fine; characters, not bytes, are counted.
    sink.reply(Reply::ok().with_body(&"é".repeat(1000)));
    assert_eq!(one_callback(&sim).await.outcome, FinalOutcome::Delivered);
    sink.reply(Reply::ok().with_body(&"é".repeat(1001)));
    assert_eq!(one_callback(&sim).await.outcome, FinalOutcome::Violation);
}

#[tokio::test]
async fn a_50_mb_response_is_read_only_partially() {
    const TOTAL: u64 = 50 * 1024 * 1024;
    let sink = sink(Reply::stream(TOTAL)).await;
    let sim = start_app(app1().rule(rule("r", &sink.url("/cb")))).await;
    let cb = one_callback(&sim).await;
    assert_eq!(cb.outcome, FinalOutcome::Violation, "{cb:?}");
    // The simulator hung up after ~1 KB: the receiver's body is dropped long before the end.
    let produced = eventually("the streamed body to be dropped", || async {
        let progress = sink.streamed();
        (progress.ended == 1).then_some(progress.bytes)
    })
    .await;
    assert!(
        produced < TOTAL / 4,
        "streamed {produced} of {TOTAL} bytes before the hang-up"
    );
}

#[tokio::test]
async fn rule_status_counts_outcomes() {
    let ok = sink(Reply::ok()).await;
    let bad = sink(Reply::status(500)).await;
    let sim = start_app(
        app1()
            .rule(rule("good", &ok.url("/")))
            .rule(rule("broken", &bad.url("/"))),
    )
    .await;
    for _ in 0..3 {
        send(&sim, json!({"from": "a", "to": "b", "msg": "x"}), true).await;
    }
    let (status, v) = get(&sim, "/app-id/app1/callbacks/rules", TOKEN).await;
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
    let hung = sink(Reply::hang()).await;
    let healthy = sink(Reply::ok()).await;
    // Four deliveries in flight at once for everything, two per rule: without per-rule
    // fairness the hung rule's callbacks would take all four and the healthy rule would wait
    // out their timeouts.
    let sim = start(
        config().concurrency(4).app(
            app1()
                .timeout_secs(5.0)
                .rule(rule("hung", &hung.url("/")))
                .rule(rule("healthy", &healthy.url("/"))),
        ),
    )
    .await;
    let started = Instant::now();
    for _ in 0..10 {
        sim.submit(APP, Message::text("a", "b", "x")).await.unwrap();
    }
    arrived(&healthy, 10).await;
    let healthy_took = started.elapsed();
    // The hung rule's callbacks were attempted: its share of the concurrency is at the hung
    // receiver, the rest wait in its lane.
    arrived(&hung, 2).await;
    assert!(
        healthy_took < Duration::from_secs(4),
        "healthy callbacks took {healthy_took:?}"
    );
    let hung_rule = rule_state(&sim, "hung");
    assert_eq!(
        hung_rule.stats.final_outcome(FinalOutcome::Stored),
        0,
        "the hung rule's first attempts have not even timed out yet: {hung_rule:?}"
    );
    assert_eq!(
        count(&hung),
        2,
        "the hung rule holds its share of the concurrency and no more"
    );
    eventually("the healthy rule's 10 callbacks to be reported delivered", || async {
        (rule_state(&sim, "healthy").stats.final_outcome(FinalOutcome::Delivered) == 10).then_some(())
    })
    .await;
}

#[tokio::test]
async fn messages_and_events_built_in_code_get_the_rest_checks() {
    let sink = Sink::recording(Some("sec_sync")).await.unwrap();
    let sim = start_app(app1().rule(rule("sync", &sink.url("/cb")))).await;
    let err = sim.send(APP, Message::text("", "u2", "hi")).await.unwrap_err();
    assert!(
        matches!(&err, callback_sim::SimError::Message(e) if e.field == "from"),
        "{err}"
    );
    let long = "x".repeat(257);
    let err = sim.submit(APP, Message::text("u1", &long, "hi")).await.unwrap_err();
    assert!(err.to_string().contains("to"), "{err}");
    let offline = Message::text("u1", "u2", "hi").with_offline(vec!["ok".into(), String::new()]);
    let err = sim.send(APP, offline).await.unwrap_err();
    assert!(
        matches!(&err, callback_sim::SimError::Message(e) if e.field == "offline[1]"),
        "{err}"
    );
    // Nothing was sent for any of them; a valid one still goes through.
    assert_eq!(count(&sink), 0);
    let sent = sim.send(APP, Message::text("u1", "u2", "hi")).await.unwrap();
    assert_eq!(sent.callbacks[0].outcome, FinalOutcome::Delivered);
}
