//! The tencent dialect (docs/behaviour.md §4.3) and the events route (§8.3).

use std::collections::HashMap;

use callback_sim::{
    AppBuilder, Dialect, ReceivedCallback, Reply, RuleBuilder, Signature, Sink, SinkOptions, agora_sign,
};
use serde_json::json;

use crate::helpers::*;

/// app1 as a tencent app.
fn tencent_app() -> AppBuilder {
    app1().tencent(1400000001)
}

/// A tencent post-send rule (unsigned).
fn tencent_rule(name: &str, url: &str) -> RuleBuilder {
    RuleBuilder::post_send(name, url, "")
}

/// A recording sink of the tencent dialect: it checks query strings and answers
/// `{"ActionStatus":"OK","ErrorCode":0,...}`.
async fn tencent_sink() -> Sink {
    Sink::start(SinkOptions {
        dialect: Dialect::Tencent,
        record: true,
        ..SinkOptions::default()
    })
    .await
    .unwrap()
}

fn params(r: &ReceivedCallback) -> HashMap<String, String> {
    form_urlencoded::parse(r.query.as_deref().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test]
async fn after_send_callbacks_carry_the_query_string_and_tencent_bodies() {
    let rx = tencent_sink().await;
    let sim = start_app(tencent_app().rule(tencent_rule("after", &format!("{}?token=abc", rx.url("/im"))))).await;
    let (s, a) = send(&sim, json!({"from": "jared", "to": "Jonh", "msg": "red packet", "client_ip": "10.1.2.3", "platform": "iOS", "offline": ["Jonh"]}), true).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(callbacks(&a).len(), 1, "tencent has no offline callback: {a}");
    assert_eq!(callbacks(&a)[0]["outcome"], "delivered");
    let got = arrived(&rx, 1).await;
    assert_eq!(
        got[0].signature,
        Signature::QueryOk,
        "the sink finds the query string right"
    );
    let p = params(&got[0]);
    assert_eq!(p["token"], "abc", "the rule's own query is kept");
    assert_eq!(p["SdkAppid"], "1400000001");
    assert_eq!(p["CallbackCommand"], "C2C.CallbackAfterSendMsg");
    assert_eq!(p["contenttype"], "json");
    assert_eq!(p["ClientIP"], "10.1.2.3");
    assert_eq!(p["OptPlatform"], "iOS");
    let body = got[0].json();
    assert_eq!(body["CallbackCommand"], "C2C.CallbackAfterSendMsg");
    assert_eq!(
        (body["From_Account"].as_str(), body["To_Account"].as_str()),
        (Some("jared"), Some("Jonh"))
    );
    assert_eq!(
        body["MsgBody"],
        json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": "red packet"}}])
    );
    for k in ["MsgTime", "MsgSeq", "MsgRandom"] {
        assert!(body[k].is_u64(), "{k}: {body}");
    }
    assert_eq!(
        body["MsgKey"],
        format!("{}_{}_{}", body["MsgSeq"], body["MsgRandom"], body["MsgTime"])
    );
    assert!(body.get("security").is_none(), "tencent callbacks are not signed");

    // A group message from the REST API: Group command, GroupId, RESTAPI platform, element types.
    send(&sim, json!({"from": "admin", "to": "@TGS#2J4SZEAEL", "chat_type": "groupchat", "type": "img", "body": {"UUID": "1", "ImageFormat": 1}, "source": "rest"}), true).await;
    let r = &arrived(&rx, 2).await[1];
    let (p, body) = (params(r), r.json());
    assert_eq!(
        (
            p["CallbackCommand"].as_str(),
            p["OptPlatform"].as_str(),
            p["ClientIP"].as_str()
        ),
        ("Group.CallbackAfterSendMsg", "RESTAPI", "127.0.0.1")
    );
    assert_eq!(body["GroupId"], "@TGS#2J4SZEAEL");
    assert!(body.get("To_Account").is_none());
    assert_eq!(body["MsgBody"][0]["MsgType"], "TIMImageElem");
    assert_eq!(body["MsgBody"][0]["MsgContent"]["UUID"], "1");
}

#[tokio::test]
async fn an_unparsable_answer_is_bad_response_with_no_retry() {
    let rx = tencent_sink().await;
    rx.reply(Reply::ok().with_body("<html>ok</html>"));
    let sim = start_app(tencent_app().rule(tencent_rule("after", &rx.url("/im")))).await;
    let (_, a) = send(&sim, json!({"from": "a", "to": "b", "msg": "x"}), true).await;
    let cb = &callbacks(&a)[0];
    assert_eq!(
        (
            cb["outcome"].as_str(),
            cb["last_attempt"].as_str(),
            cb["attempts"].as_u64()
        ),
        (Some("stored"), Some("bad_response"), Some(1)),
        "{cb}"
    );
    assert_eq!(count(&rx), 1, "tencent: no retry by default");
}

#[tokio::test]
async fn before_commands_allow_deny_and_time_out_open() {
    let pre = tencent_sink().await;
    pre.reply(Reply::ok().with_body(r#"{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"no links allowed"}"#));
    let post = tencent_sink().await;
    let sim = start_app(
        tencent_app()
            .rule(RuleBuilder::pre_send("before", &pre.url("/im"), "").notify_sender(true))
            .rule(tencent_rule("after", &post.url("/im"))),
    )
    .await;
    let (_, a) = send(
        &sim,
        json!({"from": "a", "to": "g", "chat_type": "groupchat", "msg": "http://spam"}),
        true,
    )
    .await;
    assert_eq!(
        (a["data"]["accepted"].as_bool(), a["data"]["code"].as_str()),
        (Some(false), Some("no links allowed")),
        "{a}"
    );
    assert_eq!(
        params(&pre.received()[0])["CallbackCommand"],
        "Group.CallbackBeforeSendMsg"
    );
    assert_eq!(
        pre.received()[0].json()["CallbackCommand"],
        "Group.CallbackBeforeSendMsg"
    );
    assert_eq!(count(&post), 0);

    // The tencent sink's own answer allows.
    pre.reply(Reply::ok());
    let (_, a) = send(&sim, json!({"from": "a", "to": "b", "msg": "hello"}), true).await;
    assert_eq!(a["data"]["accepted"], true);
    assert_eq!(
        params(&pre.received()[1])["CallbackCommand"],
        "C2C.CallbackBeforeSendMsg"
    );
    arrived(&post, 1).await;

    // No usable answer (here: garbage) allows the message, as if no callback were configured.
    pre.reply(Reply::ok().with_body("garbage"));
    let (_, a) = send(&sim, json!({"from": "a", "to": "b", "msg": "hello"}), true).await;
    assert_eq!(a["data"]["accepted"], true);
    let p = callbacks(&a).iter().find(|c| c["kind"] == "pre_send").unwrap().clone();
    assert_eq!(
        (p["outcome"].as_str(), p["last_attempt"].as_str()),
        (Some("dropped"), Some("bad_response"))
    );
    arrived(&post, 2).await;
}

#[tokio::test]
async fn tencent_events_use_their_commands() {
    let rx = tencent_sink().await;
    let sim = start_app(tencent_app().rule(tencent_rule("events", &rx.url("/im")))).await;
    let (s, a) = post(&sim, "/app-id/app1/events?wait=true", TOKEN, json!({"type": "user_status", "user": "u1", "status": "online", "platform": "Android", "client_ip": "10.0.0.9"})).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        (a["data"]["queued"].as_u64(), callbacks(&a)[0]["outcome"].as_str()),
        (Some(1), Some("delivered"))
    );
    let r = &arrived(&rx, 1).await[0];
    assert_eq!(
        (params(r)["CallbackCommand"].as_str(), params(r)["OptPlatform"].as_str()),
        ("State.StateChange", "Android")
    );
    let body = r.json();
    assert_eq!(
        body["Info"],
        json!({"Action": "Login", "To_Account": "u1", "Reason": "Register"})
    );
    let (s, _) = post(&sim, "/app-id/app1/events?wait=true", TOKEN, json!({"type": "group_member_joined", "group_id": "@TGS#2J4SZEAEL", "members": ["jared", "tommy"], "operator": "leckie"})).await;
    assert_eq!(s, 200);
    let mut body = arrived(&rx, 2).await[1].json();
    assert!(body["EventTime"].as_u64().is_some(), "{body}");
    body.as_object_mut().unwrap().remove("EventTime");
    assert_eq!(
        body,
        json!({"CallbackCommand": "Group.CallbackAfterNewMemberJoin", "GroupId": "@TGS#2J4SZEAEL", "Type": "Public", "JoinType": "Apply",
               "Operator_Account": "leckie", "NewMemberList": [{"Member_Account": "jared"}, {"Member_Account": "tommy"}]})
    );
}

#[tokio::test]
async fn agora_events_are_signed_and_filtered_by_event_types() {
    let all = Sink::recording(Some("sec_all")).await.unwrap();
    let chat_only = sink(Reply::ok()).await;
    let sim = start_app(
        app1()
            .rule(rule("all", &all.url("/")))
            .rule(rule("chat_only", &chat_only.url("/")).event_types(&["chat"])),
    )
    .await;
    let (s, a) = post(
        &sim,
        "/app-id/app1/events?wait=true",
        TOKEN,
        json!({"type": "user_status", "user": "u1", "status": "offline"}),
    )
    .await;
    assert_eq!((s.as_u16(), a["data"]["queued"].as_u64()), (200, Some(1)), "{a}");
    let got = arrived(&all, 1).await;
    assert_eq!(got[0].signature, Signature::Valid);
    let body = got[0].json();
    // The provider's user-status envelope: no eventType, the user's full name.
    assert_eq!(
        (
            body.get("eventType"),
            body["user"]
                .as_str()
                .map(|u| u.starts_with("sim#app1_u1@easemob.com/ios_")),
            body["status"].as_str(),
            body["reason"].as_str()
        ),
        (None, Some(true), Some("offline"), Some("logout"))
    );
    assert_eq!(
        body["security"],
        agora_sign(
            body["callId"].as_str().unwrap(),
            "sec_all",
            body["timestamp"].as_u64().unwrap()
        )
    );
    post(
        &sim,
        "/app-id/app1/events?wait=true",
        TOKEN,
        json!({"type": "group_member_joined", "group_id": "g1", "members": ["m1"]}),
    )
    .await;
    let got = arrived(&all, 2).await;
    assert_eq!(got[1].signature, Signature::Valid);
    let body = got[1].json();
    // The provider's group_op_event envelope.
    assert_eq!(
        (
            body["event"].as_str(),
            body["operation"].as_str(),
            body["id"].as_str(),
            body["payload"]["member"].clone()
        ),
        (Some("group_op_event"), Some("JOIN"), Some("g1"), json!(["m1"]))
    );
    assert_eq!(count(&chat_only), 0);
    let (s, v) = post(
        &sim,
        "/app-id/app1/events",
        TOKEN,
        json!({"type": "user_status", "user": "u1"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error_description"].as_str().unwrap().contains("status"), "{v}");
}
