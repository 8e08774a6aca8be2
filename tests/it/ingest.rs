//! What ingestion makes of a message or event (docs/behaviour.md §3, §8.3): the warnings of
//! one that no rule takes, offline recipients counted once, and the repository's config.

use callback_sim::{Reply, Sim};
use serde_json::{Value, json};

use crate::helpers::*;

fn warnings(answer: &Value) -> Vec<String> {
    answer["data"]["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings list in {answer}"))
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_event_or_message_no_rule_takes_says_so() {
    let rx = sink(Reply::ok()).await;
    let sim = start_app(
        app1().rule(
            rule("chats", &rx.url("/"))
                .chat_types(&["groupchat"])
                .event_types(&["chat", "chat_offline"]),
        ),
    )
    .await;
    let (s, v) = post(
        &sim,
        "/app-id/app1/events",
        TOKEN,
        json!({"type": "user_status", "user": "u1", "status": "online"}),
    )
    .await;
    assert_eq!((s.as_u16(), &v["data"]["queued"]), (200, &json!(0)), "{v}");
    let w = warnings(&v);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("user_status") && w[0].contains("event_types"), "{w:?}");

    // A message the one rule's chat_types leave out.
    let (s, v) = send(&sim, json!({"from": "a", "to": "b", "msg": "x"}), true).await;
    assert_eq!((s.as_u16(), &v["data"]["queued"]), (200, &json!(0)), "{v}");
    let w = warnings(&v);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("chat_types"), "{w:?}");

    // Taken: no warnings.
    let (_, v) = send(
        &sim,
        json!({"from": "a", "to": "g", "chat_type": "groupchat", "msg": "x"}),
        false,
    )
    .await;
    assert_eq!(v["data"]["queued"], 1, "{v}");
    assert!(warnings(&v).is_empty(), "{v}");
    let (_, v) = post(
        &sim,
        "/app-id/app1/events?wait=true",
        TOKEN,
        json!({"type": "user_status", "user": "u1", "status": "offline"}),
    )
    .await;
    assert!(v["data"]["callbacks"].as_array().unwrap().is_empty(), "{v}");
    // The OpenAPI document has the list.
    let (_, doc) = get(&sim, "/openapi.json", "").await;
    for answer in ["EventAnswer", "MessageAnswer"] {
        let warnings = &doc["components"]["schemas"][answer]["properties"]["warnings"];
        assert_eq!(warnings["type"], "array", "{answer}: {warnings}");
    }
}

#[tokio::test]
async fn offline_recipients_are_counted_once_and_never_the_sender() {
    let rx = sink(Reply::ok()).await;
    let sim = start_app(app1().rule(rule("r", &rx.url("/")))).await;
    let (s, v) = send(
        &sim,
        json!({"from": "u1", "to": "g1", "chat_type": "groupchat", "msg": "x",
               "offline": ["a", "u1", "b", "a", "b"]}),
        true,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mut got: Vec<(String, String)> = callbacks(&v)
        .iter()
        .map(|c| {
            (
                c["eventType"].as_str().unwrap().into(),
                c["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    got.sort();
    let want = [("chat", "g1"), ("chat_offline", "a"), ("chat_offline", "b")];
    assert_eq!(got, want.map(|(e, t)| (e.to_string(), t.to_string())), "{v}");
    assert_eq!(v["data"]["queued"], 3);
}

#[tokio::test]
async fn the_repository_config_routes_events() {
    let rx = sink(Reply::ok()).await;
    let text = include_str!("../../config.toml").replace("http://127.0.0.1:9000/callback", &rx.url("/callback"));
    let sim = Sim::from_toml(&text)
        .await
        .expect("the repository's config.toml starts");
    let events = [
        json!({"type": "user_status", "user": "u1", "status": "online"}),
        json!({"type": "group_member_joined", "group_id": "g1", "members": ["a"]}),
    ];
    for event in events {
        let (s, v) = post(&sim, "/app-id/demo/events?wait=true", "demo-token", event).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["data"]["queued"], 1, "{v}");
        assert_eq!(callbacks(&v)[0]["outcome"], "delivered", "{v}");
    }
}
