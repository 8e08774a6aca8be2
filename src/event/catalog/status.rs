//! User status, keyword alerts and offline-push results (docs/behaviour.md §11.3).

use serde_json::{Value, json};

use super::shape::{HOST, jid};
use super::{AgoraDef, Ctx, EventDef, TencentDef};
use crate::domain::EventType;
use crate::event::fields::{Default, Kind, opt, req};

/// Tencent's `State.StateChange`.
pub const STATE_CHANGE: &str = "State.StateChange";

const PLATFORMS: &[&str] = &["iOS", "Android", "Web", "Windows", "Mac", "Unknown", "RESTAPI"];

/// Agora's `os` for a platform: `ios`, `android`, `win`, or `other`.
fn agora_os(platform: &str) -> &'static str {
    match platform {
        "iOS" => "ios",
        "Android" => "android",
        "Windows" => "win",
        _ => "other",
    }
}

fn user_status_agora(c: &Ctx) -> Value {
    let os = agora_os(c.s("platform"));
    let ip = c.s("client_ip");
    // The client's address and port, as the provider shows it.
    let port = 40_000 + c.stamp.random % 20_000;
    let ip = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    json!({
        "callId": c.call_id,
        "reason": c.s("reason"),
        "security": "",
        "os": os,
        "ip": ip,
        "host": HOST,
        "appkey": c.appkey,
        "user": format!("{}/{os}_{}", jid(c.appkey, c.s("user")), device_id(c)),
        "version": "4.11.0",
        "timestamp": c.ms(),
        "status": c.s("status"),
    })
}

fn user_status_tencent(c: &Ctx) -> Value {
    // A login that logs out another device is a Login whose KickedDevice names it (the
    // provider's page: KickedDevice comes only with Login/Register).
    let (action, reason) = match c.s("reason") {
        "login" | "replaced" => ("Login", "Register"),
        _ => ("Logout", "Unregister"),
    };
    let mut body = json!({
        "CallbackCommand": STATE_CHANGE,
        "EventTime": c.ms(),
        "Info": { "Action": action, "To_Account": c.s("user"), "Reason": reason },
    });
    if c.s("reason") == "replaced" {
        body["KickedDevice"] = json!([{ "Platform": c.s("platform") }]);
    }
    body
}

/// A device id shaped like the SDK's (a UUID), drawn from the event's numbers.
fn device_id(c: &Ctx) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        c.stamp.random,
        c.stamp.seq & 0xffff,
        c.stamp.random >> 20,
        c.stamp.seq >> 20 & 0xfff,
        c.ms()
    )
}

fn keyword_alert_agora(c: &Ctx) -> Value {
    let action = c.s("action");
    let status = match action {
        "through" => "pass",
        "replaced" => "replace",
        _ => "refuse",
    };
    let scope = match c.s("chat_type") {
        "groupchat" => "group",
        "chatroom" => "room",
        _ => "user",
    };
    json!({
        "callId": c.call_id,
        "eventType": "keyword_alert",
        "alertReason": action,
        "status": status,
        "sensitiveWords": c.v("words"),
        "contentOwner": jid(c.appkey, c.s("from")),
        "contentReceiver": jid(c.appkey, c.s("to")),
        "contentUri": format!("msync:{}", c.opt("msg_id").unwrap_or(&c.stamp.msg_id)),
        "contentType": "message",
        "chatType": format!("chat:{scope}:text"),
        "appkey": c.appkey,
        "host": HOST,
        "timestamp": c.ms(),
        "security": "",
    })
}

fn push_result_agora(c: &Ctx) -> Value {
    let status = c.s("status");
    let mut body = json!({
        "callId": c.call_id,
        "security": "",
        "appkey": c.appkey,
        "chat_type": "chat",
        "step": "push",
        "status": status,
        "target": c.s("to"),
        "msg_id": c.opt("msg_id").unwrap_or(&c.stamp.msg_id),
    });
    // A push that went out names its channel and device; one that never left (no device
    // bound) names neither, as the provider's examples.
    match status {
        "fail" => body["detail"] = "no push binding".into(),
        _ => {
            body["channel"] = c.s("channel").into();
            body["device_id"] = device_id(c).into();
            if status == "error" {
                body["detail"] = "push provider error".into();
            }
        }
    }
    body["timestamp"] = c.ms().into();
    body
}

pub(super) const EVENTS: &[EventDef] = &[
    EventDef {
        name: EventType::UserStatus,
        summary: "A user logged in, logged out, or logged in on a device that logged out another (replaced).",
        subject: "user",
        fields: &[
            req("user", Kind::Id, "the user whose status changed"),
            req("status", Kind::Choice(&["online", "offline"]), "online or offline"),
            opt(
                "reason",
                Kind::Choice(&["login", "logout", "replaced"]),
                Default::From("login when online, logout when offline", |f| {
                    Value::from(if f.get("status").and_then(Value::as_str) == Some("online") {
                        "login"
                    } else {
                        "logout"
                    })
                }),
                "why: login, logout, or replaced (kicked by another device)",
            ),
            opt(
                "platform",
                Kind::Choice(PLATFORMS),
                Default::Str("iOS"),
                "the client's platform",
            ),
            opt("client_ip", Kind::Ip, Default::Str("127.0.0.1"), "the client's address"),
        ],
        example: r#"{"user": "alice", "status": "online"}"#,
        agora: Some(AgoraDef {
            wire: "no eventType or chat_type; reason (login/logout/replaced) and status (online/offline)",
            body: user_status_agora,
            legacy: None,
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: STATE_CHANGE,
            body: user_status_tencent,
            before: None,
        }),
    },
    EventDef {
        name: EventType::KeywordAlert,
        summary: "A message hit the keyword filter: let through, intercepted or replaced.",
        subject: "to",
        fields: &[
            req("from", Kind::Id, "the sender"),
            req("to", Kind::Id, "the recipient user or group"),
            req("words", Kind::Ids, "the sensitive words found"),
            opt(
                "action",
                Kind::Choice(&["through", "intercepted", "replaced"]),
                Default::Str("intercepted"),
                "what the filter did",
            ),
            opt(
                "chat_type",
                Kind::Choice(&["chat", "groupchat", "chatroom"]),
                Default::Str("chat"),
                "the conversation kind",
            ),
            opt(
                "msg_id",
                Kind::Id,
                Default::AtSend("a new message id"),
                "the message that hit the filter",
            ),
        ],
        example: r#"{"from": "alice", "to": "bob", "words": ["badword"]}"#,
        agora: Some(AgoraDef {
            wire: "eventType: keyword_alert",
            body: keyword_alert_agora,
            legacy: None,
            legacy_each: None,
        }),
        tencent: None,
    },
    EventDef {
        name: EventType::PushResult,
        summary: "The result of an offline push notification to a device.",
        subject: "to",
        fields: &[
            req("to", Kind::Id, "the user the push was for"),
            opt(
                "msg_id",
                Kind::Id,
                Default::AtSend("a new message id"),
                "the pushed message",
            ),
            opt(
                "status",
                Kind::Choice(&["success", "fail", "error"]),
                Default::Str("success"),
                "how the push went",
            ),
            opt(
                "channel",
                Kind::Text,
                Default::Str("APNS"),
                "the push channel (APNS, HUAWEI, XIAOMI…)",
            ),
        ],
        example: r#"{"to": "bob", "status": "fail"}"#,
        agora: Some(AgoraDef {
            wire: "step: push",
            body: push_result_agora,
            legacy: None,
            legacy_each: None,
        }),
        tencent: None,
    },
];

#[cfg(test)]
mod tests {
    #[test]
    fn agora_os_names() {
        assert_eq!(super::agora_os("iOS"), "ios");
        assert_eq!(super::agora_os("Web"), "other");
    }
}
