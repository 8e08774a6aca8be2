//! Pre-send (moderation) callbacks, agora dialect (SPEC §4.2).

use callback_sim::agora_sign;
use serde_json::{Value, json};

use crate::helpers::*;

fn pre_rule(url: &str, extra: &str) -> String {
    format!(
        "  [[apps.rules]]\n  name = \"moderation\"\n  url = \"{url}\"\n  secret = \"pre_secret\"\n  kind = \"pre_send\"\n{extra}\n"
    )
}

/// An app with one pre-send rule answering `answer` and one post-send rule to `post`.
async fn setup(answer: Reply, pre_extra: &str) -> (TestApp, Receiver, Receiver) {
    let pre = Receiver::start(answer).await;
    let post = Receiver::ok().await;
    let rules = pre_rule(&pre.url("/moderate"), pre_extra) + &rule("sync", &post.url("/sync"), "");
    let app = spawn_app("", &agora_app("", &rules)).await;
    (app, pre, post)
}

fn text() -> Value {
    json!({"from": "u1", "to": "u2", "msg": "buy cheap watches", "ext": {"lang": "en"}})
}

fn pre_report(answer: &Value) -> Value {
    callbacks(answer)
        .iter()
        .find(|c| c["kind"] == "pre_send")
        .cloned()
        .unwrap_or_else(|| panic!("no pre_send callback in {answer}"))
}

#[tokio::test]
async fn a_valid_answer_lets_the_message_through() {
    let (app, pre, post) = setup(Reply::Body(200, r#"{"valid": true, "code": "HX:10000"}"#.into()), "").await;
    let (s, a) = app.send(text(), true).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        (a["data"]["accepted"].as_bool(), a["data"]["queued"].as_u64()),
        (Some(true), Some(1))
    );
    let p = pre_report(&a);
    assert_eq!(
        (
            p["outcome"].as_str(),
            p["last_attempt"].as_str(),
            p["attempts"].as_u64(),
            p["rule"].as_str()
        ),
        (Some("delivered"), Some("delivered"), Some(1), Some("moderation"))
    );
    // The pre-send request has the post-send shape, signed with the pre-send rule's secret.
    let req = pre.received()[0].json();
    assert_eq!(req["eventType"], "chat");
    assert_eq!(req["payload"]["bodies"][0]["msg"], "buy cheap watches");
    assert_eq!(
        req["security"],
        agora_sign(
            req["callId"].as_str().unwrap(),
            "pre_secret",
            req["timestamp"].as_u64().unwrap()
        )
    );
    assert_eq!(
        post.wait_for(1).await[0].json()["payload"]["bodies"][0]["msg"],
        "buy cheap watches"
    );
}

#[tokio::test]
async fn a_block_suppresses_post_send_and_tells_the_sender() {
    for (answer, notify, code) in [
        (r#"{"valid": false, "code": "spam"}"#, true, Some("spam")),
        (r#"{"valid": false}"#, true, Some("custom logic denied")),
        (
            r#"{"valid": false, "code": ""}"#,
            true,
            Some("Message blocked by external logic"),
        ),
        (r#"{"valid": false, "code": "spam"}"#, false, None),
    ] {
        let extra = if notify { "  notify_sender = true" } else { "" };
        let (app, _pre, post) = setup(Reply::Body(200, answer.into()), extra).await;
        let (s, a) = app.send(text(), true).await;
        assert_eq!(s, 200, "{a}");
        assert_eq!(a["data"]["accepted"], false, "{answer}");
        assert_eq!(a["data"]["code"].as_str(), code, "{answer}");
        assert_eq!(a["data"]["queued"], 0);
        assert_eq!(callbacks(&a).len(), 1, "only the pre-send callback: {a}");
        assert_eq!(pre_report(&a)["outcome"], "delivered");
        assert_eq!(post.count(), 0, "no post-send callback for a blocked message");
    }
}

#[tokio::test]
async fn no_usable_answer_applies_on_failure() {
    let cases = [
        (Reply::Hang, "timeout"),
        (Reply::Status(500), "status"),
        (Reply::Body(200, "OK".into()), "bad_response"),
        (Reply::Body(200, r#"{"valid": "yes"}"#.into()), "bad_response"),
        (
            Reply::Body(200, format!(r#"{{"valid": true, "code": "{}"}}"#, "x".repeat(1000))),
            "violation",
        ),
    ];
    for (reply, last) in cases {
        for (policy, accepted) in [("pass", true), ("block", false)] {
            let extra = format!("  timeout_ms = 300\n  on_failure = \"{policy}\"\n  notify_sender = true");
            let (app, _pre, post) = setup(reply.clone(), &extra).await;
            let (_, a) = app.send(text(), true).await;
            let p = pre_report(&a);
            assert_eq!(
                (p["outcome"].as_str(), p["last_attempt"].as_str()),
                (Some("dropped"), Some(last)),
                "{reply:?}: {p}"
            );
            assert_eq!(a["data"]["accepted"], accepted, "{reply:?} with {policy}");
            if accepted {
                assert_eq!(a["data"]["code"], Value::Null);
                post.wait_for(1).await;
            } else {
                assert_eq!(a["data"]["code"], "custom internal error");
                assert_eq!(post.count(), 0);
            }
        }
    }
}

#[tokio::test]
async fn rest_messages_skip_pre_send() {
    let (app, pre, post) = setup(Reply::Body(200, r#"{"valid": false}"#.into()), "").await;
    let mut msg = text();
    msg["source"] = json!("rest");
    let (_, a) = app.send(msg, true).await;
    assert_eq!(a["data"]["accepted"], true);
    assert!(callbacks(&a).iter().all(|c| c["kind"] == "post_send"));
    post.wait_for(1).await;
    assert_eq!(pre.count(), 0);
}

#[tokio::test]
async fn an_answer_may_rewrite_a_text_message() {
    let answer = r#"{"valid": true, "payload": {"bodies": [{"type": "txt", "msg": "buy *** watches"}]}}"#;
    let (app, _pre, post) = setup(Reply::Body(200, answer.into()), "").await;
    let (_, a) = app.send(text(), true).await;
    assert_eq!(pre_report(&a)["warnings"], json!([]));
    let body = post.wait_for(1).await[0].json();
    assert_eq!(
        body["payload"],
        json!({"bodies": [{"type": "txt", "msg": "buy *** watches"}], "ext": {"lang": "en"}}),
        "ext kept from the original"
    );
}

#[tokio::test]
async fn a_payload_of_another_shape_is_ignored_and_reported() {
    let answer = r#"{"valid": true, "payload": {"msg": "flat text is not the shape"}}"#;
    let (app, _pre, post) = setup(Reply::Body(200, answer.into()), "").await;
    let (_, a) = app.send(text(), true).await;
    let warnings = pre_report(&a)["warnings"].as_array().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{a}");
    assert!(
        warnings[0].as_str().unwrap().contains("moderation") && warnings[0].as_str().unwrap().contains("bodies"),
        "{warnings:?}"
    );
    assert_eq!(
        post.wait_for(1).await[0].json()["payload"]["bodies"][0]["msg"],
        "buy cheap watches"
    );
    // A rewrite of a non-text message is ignored the same way.
    let (_, a) = app
        .send(
            json!({"from": "u1", "to": "u2", "type": "img", "body": {"url": "http://x/1.png"}}),
            true,
        )
        .await;
    assert_eq!(pre_report(&a)["warnings"].as_array().unwrap().len(), 1, "{a}");
}
