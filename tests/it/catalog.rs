//! The event catalog (docs/behaviour.md §11): every event reaches a loopback receiver in each
//! dialect that has it, signed; each example body is pinned by a golden file; overrides; the
//! legacy group shape; tencent before-commands and answers; bad input; the commands.

use std::collections::HashMap;

use callback_sim::{AppBuilder, Dialect, ReceivedCallback, Reply, RuleBuilder, Signature, Sink, SinkOptions};
use serde_json::{Value, json};

use crate::helpers::*;

/// The secret of `rule("all", …)`.
const SECRET: &str = "sec_all";
const TENCENT_TOKEN: &str = "tok_tencent";

fn params(r: &ReceivedCallback) -> HashMap<String, String> {
    form_urlencoded::parse(r.query.as_deref().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// A recording tencent sink that checks `Sign` with `token`.
async fn tencent_sink(token: Option<&str>) -> Sink {
    Sink::start(SinkOptions {
        dialect: Dialect::Tencent,
        secret: token.map(str::to_string),
        record: true,
        ..SinkOptions::default()
    })
    .await
    .unwrap()
}

/// The catalog's events, from `GET /catalog`.
async fn catalog(sim: &callback_sim::Sim) -> Vec<Value> {
    let (s, doc) = get(sim, "/catalog", "").await;
    assert_eq!(s, 200, "{doc}");
    doc["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_event_reaches_a_receiver_signed_in_each_dialect() {
    let agora_rx = Sink::recording(Some(SECRET)).await.unwrap();
    let tencent_rx = tencent_sink(Some(TENCENT_TOKEN)).await;
    let sim = start(
        config().app(app1().rule(rule("all", &agora_rx.url("/a")))).app(
            AppBuilder::new("tc", "tok_tc")
                .tencent(1400000001)
                .tencent_token(TENCENT_TOKEN)
                .rule(RuleBuilder::post_send("all", &tencent_rx.url("/t"), "")),
        ),
    )
    .await;
    let events = catalog(&sim).await;
    assert_eq!(events.len(), 22, "the catalog of docs/behaviour.md §11.3");
    let (mut agora_n, mut tencent_n) = (0, 0);
    for e in &events {
        let name = e["name"].as_str().unwrap();
        let request = e["example_request"].clone();
        for (dialect, app, token, n) in [
            ("agora", APP, TOKEN, &mut agora_n),
            ("tencent", "tc", "tok_tc", &mut tencent_n),
        ] {
            let has = e["dialects"].get(dialect).is_some();
            let (s, a) = post(&sim, &format!("/app-id/{app}/events?wait=true"), token, request.clone()).await;
            if !has {
                assert_eq!(s, 400, "{name} is not {dialect}: {a}");
                let why = a["error_description"].as_str().unwrap();
                assert!(why.contains(name) && why.contains(dialect), "{why}");
                continue;
            }
            assert_eq!(s, 200, "{name} {dialect}: {a}");
            assert_eq!(callbacks(&a)[0]["outcome"], "delivered", "{name} {dialect}: {a}");
            assert_eq!(callbacks(&a)[0]["eventType"], name, "{a}");
            *n += 1;
        }
    }
    assert_eq!((agora_n, tencent_n), (22, 14), "events per dialect");
    for r in arrived(&agora_rx, agora_n).await {
        assert_eq!(r.signature, Signature::Valid, "{}", String::from_utf8_lossy(&r.body));
    }
    for r in arrived(&tencent_rx, tencent_n).await {
        assert_eq!(
            r.signature,
            Signature::Valid,
            "{:?} {}",
            r.query,
            String::from_utf8_lossy(&r.body)
        );
        let p = params(&r);
        assert_eq!(p["CallbackCommand"], r.json()["CallbackCommand"]);
        assert!(r.json()["EventTime"].as_u64().is_some() || r.json()["CallbackCommand"] == "State.StateChange");
    }
    // The sink counts a wrong token as bad.
    let wrong = tencent_sink(Some("another")).await;
    let sim2 = start_app(
        AppBuilder::new(APP, TOKEN)
            .tencent(1400000001)
            .tencent_token(TENCENT_TOKEN)
            .rule(RuleBuilder::post_send("r", &wrong.url("/"), "")),
    )
    .await;
    post(
        &sim2,
        "/app-id/app1/events?wait=true",
        TOKEN,
        json!({"type": "user_status", "user": "u", "status": "online"}),
    )
    .await;
    assert_eq!(arrived(&wrong, 1).await[0].signature, Signature::Invalid);
    assert_eq!(wrong.summary().signature_bad, 1);
}

/// Each example body of `GET /catalog`, byte for byte, against tests/golden/catalog/:
/// `{event}.{dialect}.json` (agora's legacy group shape `{event}.agora-legacy.json`; tencent's
/// file starts with its query string). `UPDATE_GOLDEN=1` rewrites them.
#[tokio::test]
async fn example_bodies_match_the_golden_files() {
    let sim = start_app(app1()).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/catalog");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for e in catalog(&sim).await {
        let name = e["name"].as_str().unwrap();
        let d = &e["dialects"];
        let mut files = Vec::new();
        if let Some(a) = d.get("agora") {
            files.push((format!("{name}.agora.json"), format!("{}\n", a["example"])));
            if let Some(l) = a.get("legacy_example") {
                files.push((format!("{name}.agora-legacy.json"), format!("{l}\n")));
            }
        }
        if let Some(t) = d.get("tencent") {
            files.push((
                format!("{name}.tencent.json"),
                format!("?{}\n{}\n", t["query"].as_str().unwrap(), t["example"]),
            ));
        }
        for (file, got) in files {
            checked += 1;
            let path = dir.join(&file);
            if update {
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(want) if want == got => {}
                Ok(want) => wrong.push(format!("{file}:\n  want {want}  got  {got}")),
                Err(e) => wrong.push(format!("{file}: {e}")),
            }
        }
    }
    assert_eq!(
        checked,
        22 + 14 + 8,
        "one golden file per event per dialect, and per legacy group shape"
    );
    assert!(
        wrong.is_empty(),
        "bodies differ from the golden files (UPDATE_GOLDEN=1 rewrites them):\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn overrides_merge_into_the_body_before_signing() {
    let rx = Sink::recording(Some(SECRET)).await.unwrap();
    let sim = start_app(app1().rule(rule("all", &rx.url("/")))).await;
    let (s, a) = post(
        &sim,
        "/app-id/app1/events?wait=true",
        TOKEN,
        json!({"type": "message_recalled", "from": "a", "to": "b", "msg_id": "42",
               "overrides": {"payload": {"ext": {"k": 1}, "bodies": null}, "host": null, "timestamp": 5, "odd": [1]}}),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    let r = &arrived(&rx, 1).await[0];
    assert_eq!(
        r.signature,
        Signature::Valid,
        "signed after the merge, with the new timestamp"
    );
    let b = r.json();
    assert_eq!(b["payload"], json!({"ext": {"k": 1}, "ack_message_id": "42"}));
    assert_eq!(
        (b.get("host"), b["timestamp"].as_u64(), b["odd"].clone()),
        (None, Some(5), json!([1]))
    );
    // An override of the signature itself is sent as it is.
    post(
        &sim,
        "/app-id/app1/events?wait=true",
        TOKEN,
        json!({"type": "contact_removed", "from": "a", "to": "b", "overrides": {"security": "forged"}}),
    )
    .await;
    let r = &arrived(&rx, 2).await[1];
    assert_eq!(
        (r.json()["security"].as_str(), r.signature),
        (Some("forged"), Signature::Invalid)
    );
    // Messages take overrides too.
    let (_, a) = send(
        &sim,
        json!({"from": "a", "to": "b", "msg": "hi", "overrides": {"payload": {"ext": {"x": true}}}}),
        true,
    )
    .await;
    assert_eq!(callbacks(&a)[0]["outcome"], "delivered");
    let r = &arrived(&rx, 3).await[2];
    assert_eq!(
        (r.json()["payload"]["ext"]["x"].as_bool(), r.signature),
        (Some(true), Signature::Valid)
    );
    // An override is bounded like any body.
    let big = "x".repeat(2_000_000);
    let (s, v) = post(
        &sim,
        "/app-id/app1/events",
        TOKEN,
        json!({"type": "contact_removed", "from": "a", "to": "b", "overrides": {"k": big}}),
    )
    .await;
    assert_eq!(s, 413, "{v}");
}

#[tokio::test]
async fn legacy_group_events_use_the_muc_shape() {
    let rx = Sink::recording(Some(SECRET)).await.unwrap();
    let sim = start_app(app1().group_events("legacy").rule(rule("all", &rx.url("/")))).await;
    post(
        &sim,
        "/app-id/app1/events?wait=true",
        TOKEN,
        json!({"type": "group_member_left", "group_id": "g1", "members": ["m"], "leave_type": "kicked"}),
    )
    .await;
    let r = &arrived(&rx, 1).await[0];
    let b = r.json();
    assert_eq!(r.signature, Signature::Valid);
    assert_eq!(
        (
            b["chat_type"].as_str(),
            b["payload"]["operation"].as_str(),
            b["group_id"].as_str()
        ),
        (Some("muc"), Some("kick"), Some("g1"))
    );
}

#[tokio::test]
async fn bad_events_are_400s_naming_the_field_the_event_and_the_dialect() {
    let sim = start_app(app1()).await;
    for (body, field, words) in [
        (json!({"type": "nap"}), "type", vec!["nap", "message_recalled"]),
        (
            json!({"type": "message_read", "from": "a", "to": "b"}),
            "msg_id",
            vec!["message_read", "agora"],
        ),
        (
            json!({"type": "message_read", "from": ["a"], "to": "b", "msg_id": "m"}),
            "from",
            vec!["string", "agora"],
        ),
        (
            json!({"type": "group_members_muted", "group_id": "g", "members": ["m"], "until": "soon"}),
            "until",
            vec!["integer"],
        ),
        (
            json!({"type": "user_status", "user": "u", "status": "online", "mood": "good"}),
            "mood",
            vec!["user_status"],
        ),
    ] {
        let (s, v) = post(&sim, "/app-id/app1/events", TOKEN, body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        let d = v["error_description"].as_str().unwrap();
        assert!(d.contains(field), "{body}: {d}");
        for w in words {
            assert!(d.contains(w), "{body}: {w} in {d}");
        }
    }
    // A config naming an event in no catalog fails at load, with the key path.
    let e = config()
        .app(app1().rule(rule("r", "http://127.0.0.1:9/").event_types(&["message_recalled", "nap"])))
        .build()
        .unwrap_err();
    assert!(
        e.to_string().contains("event_types") && e.to_string().contains("nap"),
        "{e}"
    );
}

/// A tencent app with a post-send rule and a pre-send rule, the pre-send receiver scripted.
async fn tencent_with_before() -> (callback_sim::Sim, Sink, Sink) {
    let post_rx = tencent_sink(None).await;
    let pre_rx = tencent_sink(None).await;
    let sim = start_app(
        AppBuilder::new(APP, TOKEN)
            .tencent(1400000001)
            .rule(RuleBuilder::post_send("after", &post_rx.url("/after"), ""))
            .rule(RuleBuilder::pre_send("before", &pre_rx.url("/before"), "").notify_sender(true)),
    )
    .await;
    (sim, post_rx, pre_rx)
}

#[tokio::test]
async fn tencent_before_commands_change_what_is_delivered() {
    let (sim, post_rx, pre_rx) = tencent_with_before().await;
    // A friend request whose pair the receiver refuses: no post-send callback.
    pre_rx.reply_next(Reply::ok().with_body(
        r#"{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"To_Account":"bob","ResultCode":38001,"ResultInfo":"no strangers"}]}"#,
    ));
    let (s, a) = post(
        &sim,
        "/app-id/app1/events?wait=true",
        TOKEN,
        json!({"type": "contact_added", "from": "alice", "to": "bob"}),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        (a["data"]["accepted"].as_bool(), a["data"]["queued"].as_u64()),
        (Some(false), Some(0)),
        "{a}"
    );
    assert!(a["data"]["warnings"][0].as_str().unwrap().contains("38001"), "{a}");
    let asked = &pre_rx.received()[0];
    assert_eq!(params(asked)["CallbackCommand"], "Sns.CallbackPrevFriendAdd");
    assert_eq!(asked.json()["FriendItem"][0]["To_Account"], "bob");
    // An invitation with a refused member: the join names only the others.
    pre_rx.reply_next(
        Reply::ok().with_body(r#"{"ActionStatus":"OK","ErrorCode":0,"RefusedMembers_Account":["mallory"]}"#),
    );
    let (_, a) = post(&sim, "/app-id/app1/events?wait=true", TOKEN, json!({"type": "group_member_joined", "group_id": "g", "members": ["dave", "mallory"], "operator": "alice", "join_type": "invited"})).await;
    assert_eq!(a["data"]["queued"], 1, "{a}");
    assert_eq!(
        params(&pre_rx.received()[1])["CallbackCommand"],
        "Group.CallbackBeforeInviteJoinGroup"
    );
    let joined = &arrived(&post_rx, 1).await[0];
    assert_eq!(joined.json()["NewMemberList"], json!([{"Member_Account": "dave"}]));
    // A join by application asks nothing.
    post(
        &sim,
        "/app-id/app1/events?wait=true",
        TOKEN,
        json!({"type": "group_member_joined", "group_id": "g", "members": ["erin"]}),
    )
    .await;
    assert_eq!(pre_rx.received().len(), 2);
    arrived(&post_rx, 2).await;
    // A creation the receiver refuses.
    pre_rx.reply_next(Reply::ok().with_body(r#"{"ActionStatus":"FAIL","ErrorCode":1,"ErrorInfo":"no more groups"}"#));
    let (_, a) = post(
        &sim,
        "/app-id/app1/events?wait=true",
        TOKEN,
        json!({"type": "group_created", "group_id": "g2", "owner": "alice"}),
    )
    .await;
    assert_eq!(
        (a["data"]["accepted"].as_bool(), a["data"]["code"].as_str()),
        (Some(false), Some("no more groups")),
        "{a}"
    );
    assert_eq!(
        params(&pre_rx.received()[2])["CallbackCommand"],
        "Group.CallbackBeforeCreateGroup"
    );
    // A before-command that times out or answers garbage allows, as for messages.
    pre_rx.reply_next(Reply::ok().with_body("garbage"));
    let (_, a) = post(
        &sim,
        "/app-id/app1/events?wait=true",
        TOKEN,
        json!({"type": "group_created", "group_id": "g3", "owner": "alice"}),
    )
    .await;
    assert_eq!(
        (a["data"]["accepted"].as_bool(), a["data"]["queued"].as_u64()),
        (Some(true), Some(1)),
        "{a}"
    );
    assert_eq!(
        arrived(&post_rx, 3).await[2].json()["CallbackCommand"],
        "Group.CallbackAfterCreateGroup"
    );
}

#[tokio::test]
async fn tencent_message_answers_drop_deny_with_codes_and_rewrite() {
    let (sim, post_rx, pre_rx) = tencent_with_before().await;
    // ErrorCode 2: the sender is told it was sent; nothing reaches the post-send rule.
    pre_rx.reply_next(Reply::ok().with_body(r#"{"ActionStatus":"OK","ErrorCode":2,"ErrorInfo":""}"#));
    let (_, a) = send(&sim, json!({"from": "a", "to": "b", "msg": "spam"}), true).await;
    assert_eq!(
        (
            a["data"]["accepted"].as_bool(),
            a["data"]["silently_dropped"].as_bool(),
            a["data"]["queued"].as_u64()
        ),
        (Some(true), Some(true), Some(0)),
        "{a}"
    );
    // 120001–130000: denied with that code.
    pre_rx.reply_next(Reply::ok().with_body(r#"{"ActionStatus":"FAIL","ErrorCode":120005,"ErrorInfo":"muted"}"#));
    let (_, a) = send(&sim, json!({"from": "a", "to": "b", "msg": "hi"}), true).await;
    assert_eq!(
        (
            a["data"]["accepted"].as_bool(),
            a["data"]["error_code"].as_i64(),
            a["data"]["code"].as_str()
        ),
        (Some(false), Some(120005), Some("muted")),
        "{a}"
    );
    // 1: denied with 20006.
    pre_rx.reply_next(Reply::ok().with_body(r#"{"ActionStatus":"FAIL","ErrorCode":1,"ErrorInfo":"no"}"#));
    let (_, a) = send(&sim, json!({"from": "a", "to": "b", "msg": "hi"}), true).await;
    assert_eq!(a["data"]["error_code"], 20006, "{a}");
    // MsgBody and CloudCustomData rewrite what is delivered.
    pre_rx.reply_next(Reply::ok().with_body(
        r#"{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"***"}}],"CloudCustomData":"checked"}"#,
    ));
    let (_, a) = send(&sim, json!({"from": "a", "to": "b", "msg": "bad word"}), true).await;
    assert_eq!(a["data"]["queued"], 1, "{a}");
    let b = arrived(&post_rx, 1).await[0].json();
    assert_eq!(
        (
            b["MsgBody"][0]["MsgContent"]["Text"].as_str(),
            b["CloudCustomData"].as_str()
        ),
        (Some("***"), Some("checked"))
    );
}

#[tokio::test]
async fn tencent_urls_are_signed_at_every_send() {
    let rx = tencent_sink(Some(TENCENT_TOKEN)).await;
    let sim = start_app(
        AppBuilder::new(APP, TOKEN)
            .tencent(1400000001)
            .tencent_token(TENCENT_TOKEN)
            .rule(RuleBuilder::post_send("r", &rx.url("/"), "")),
    )
    .await;
    send(
        &sim,
        json!({"from": "a", "to": "g", "chat_type": "groupchat", "msg": "hi"}),
        true,
    )
    .await;
    let r = &arrived(&rx, 1).await[0];
    assert_eq!(r.signature, Signature::Valid);
    let p = params(r);
    let t: u64 = p["RequestTime"].parse().unwrap();
    assert_eq!(p["Sign"], callback_sim::tencent_sign(TENCENT_TOKEN, t));
    let b = r.json();
    assert!(
        b.get("MsgKey").is_none() && b["Random"].as_u64().is_some(),
        "group bodies carry Random: {b}"
    );
}
