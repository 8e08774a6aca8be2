//! Pre-send (moderation) callbacks, agora dialect (docs/behaviour.md §4.2).

use callback_sim::{Reply, RuleBuilder, Signature, Sim, Sink, agora_sign};
use serde_json::{Value, json};

use crate::helpers::*;

/// The pre-send rule `moderation` to `url`, signed with `pre_secret`.
fn pre_rule(url: &str) -> RuleBuilder {
    RuleBuilder::pre_send("moderation", url, "pre_secret")
}

/// An app with the pre-send rule (as `pre` makes it) answering `answer`, and a post-send rule
/// to a second sink.
async fn setup(answer: Reply, pre: impl FnOnce(RuleBuilder) -> RuleBuilder) -> (Sim, Sink, Sink) {
    let pre_sink = Sink::recording(Some("pre_secret")).await.unwrap();
    pre_sink.reply(answer);
    let post = sink(Reply::ok()).await;
    let sim = start_app(
        app1()
            .rule(pre(pre_rule(&pre_sink.url("/moderate"))))
            .rule(rule("sync", &post.url("/sync"))),
    )
    .await;
    (sim, pre_sink, post)
}

/// A verdict answer.
fn answer(body: &str) -> Reply {
    Reply::ok().with_body(body)
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
    let (sim, pre, post) = setup(answer(r#"{"valid": true, "code": "HX:10000"}"#), |r| r).await;
    let (s, a) = send(&sim, text(), true).await;
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
    assert_eq!(pre.received()[0].signature, Signature::Valid);
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
        arrived(&post, 1).await[0].json()["payload"]["bodies"][0]["msg"],
        "buy cheap watches"
    );
}

#[tokio::test]
async fn a_block_suppresses_post_send_and_tells_the_sender() {
    for (verdict, notify, code) in [
        (r#"{"valid": false, "code": "spam"}"#, true, Some("spam")),
        (r#"{"valid": false}"#, true, Some("custom logic denied")),
        (
            r#"{"valid": false, "code": ""}"#,
            true,
            Some("Message blocked by external logic"),
        ),
        (r#"{"valid": false, "code": "spam"}"#, false, None),
    ] {
        let (sim, _pre, post) = setup(answer(verdict), |r| r.notify_sender(notify)).await;
        let (s, a) = send(&sim, text(), true).await;
        assert_eq!(s, 200, "{a}");
        assert_eq!(a["data"]["accepted"], false, "{verdict}");
        assert_eq!(a["data"]["code"].as_str(), code, "{verdict}");
        assert_eq!(a["data"]["queued"], 0);
        assert_eq!(callbacks(&a).len(), 1, "only the pre-send callback: {a}");
        assert_eq!(pre_report(&a)["outcome"], "delivered");
        assert_eq!(count(&post), 0, "no post-send callback for a blocked message");
    }
}

#[tokio::test]
async fn no_usable_answer_applies_on_failure() {
    let cases = [
        (Reply::hang(), "timeout"),
        (Reply::status(500), "status"),
        (answer("OK"), "bad_response"),
        (answer(r#"{"valid": "yes"}"#), "bad_response"),
        (
            answer(&format!(r#"{{"valid": true, "code": "{}"}}"#, "x".repeat(1000))),
            "violation",
        ),
    ];
    for (reply, last) in cases {
        for (block, accepted) in [(false, true), (true, false)] {
            let policy = |r: RuleBuilder| {
                let r = r.timeout_ms(300).notify_sender(true);
                if block { r.block_on_failure() } else { r }
            };
            let (sim, _pre, post) = setup(reply.clone(), policy).await;
            let (_, a) = send(&sim, text(), true).await;
            let p = pre_report(&a);
            assert_eq!(
                (p["outcome"].as_str(), p["last_attempt"].as_str()),
                (Some("dropped"), Some(last)),
                "{reply:?}: {p}"
            );
            assert_eq!(a["data"]["accepted"], accepted, "{reply:?} with block = {block}");
            if accepted {
                assert_eq!(a["data"]["code"], Value::Null);
                arrived(&post, 1).await;
            } else {
                assert_eq!(a["data"]["code"], "custom internal error");
                assert_eq!(count(&post), 0);
            }
        }
    }
}

#[tokio::test]
async fn rest_messages_skip_pre_send() {
    let (sim, pre, post) = setup(answer(r#"{"valid": false}"#), |r| r).await;
    let mut msg = text();
    msg["source"] = json!("rest");
    let (_, a) = send(&sim, msg, true).await;
    assert_eq!(a["data"]["accepted"], true);
    assert!(callbacks(&a).iter().all(|c| c["kind"] == "post_send"));
    arrived(&post, 1).await;
    assert_eq!(count(&pre), 0);
}

#[tokio::test]
async fn an_answer_may_rewrite_a_text_message() {
    let rewrite = r#"{"valid": true, "payload": {"bodies": [{"type": "txt", "msg": "buy *** watches"}]}}"#;
    let (sim, _pre, post) = setup(answer(rewrite), |r| r).await;
    let (_, a) = send(&sim, text(), true).await;
    assert_eq!(pre_report(&a)["warnings"], json!([]));
    let body = arrived(&post, 1).await[0].json();
    assert_eq!(
        body["payload"],
        json!({"bodies": [{"type": "txt", "msg": "buy *** watches"}], "ext": {"lang": "en"}}),
        "ext kept from the original"
    );
}

#[tokio::test]
async fn a_payload_of_another_shape_is_ignored_and_reported() {
    let flat = r#"{"valid": true, "payload": {"msg": "flat text is not the shape"}}"#;
    let (sim, _pre, post) = setup(answer(flat), |r| r).await;
    let (_, a) = send(&sim, text(), true).await;
    let warnings = pre_report(&a)["warnings"].as_array().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{a}");
    assert!(
        warnings[0].as_str().unwrap().contains("moderation") && warnings[0].as_str().unwrap().contains("bodies"),
        "{warnings:?}"
    );
    assert_eq!(
        arrived(&post, 1).await[0].json()["payload"]["bodies"][0]["msg"],
        "buy cheap watches"
    );
    // A rewrite of a non-text message is ignored the same way.
    let (_, a) = send(
        &sim,
        json!({"from": "u1", "to": "u2", "type": "img", "body": {"url": "http://x/1.png"}}),
        true,
    )
    .await;
    assert_eq!(pre_report(&a)["warnings"].as_array().unwrap().len(), 1, "{a}");
}

#[tokio::test]
async fn a_stop_cuts_a_slow_pre_send_call_short_after_the_grace() {
    let (sim, pre, post) = setup(Reply::hang(), |r| r.timeout_ms(15_000)).await;
    let asking = tokio::spawn({
        let url = format!("{}/app-id/{APP}/messages?wait=true", sim.base_url());
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(TOKEN)
                .json(&text())
                .send()
                .await
                .expect("the message is answered");
            status_json(resp).await
        }
    });
    arrived(&pre, 1).await;
    let asked = std::time::Instant::now();
    sim.shutdown().await;
    let took = asked.elapsed();
    assert!(took < std::time::Duration::from_secs(8), "the stop took {took:?}");
    // The message was not accepted: the stop came before its callbacks could be queued.
    let (s, a) = asking.await.unwrap();
    assert_eq!((s.as_u16(), a["error"].as_str()), (503, Some("shutting_down")), "{a}");
    assert_eq!(count(&post), 0);
}
