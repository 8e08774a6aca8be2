//! Contact (friend) requests, removals and block lists (docs/behaviour.md §11.3): agora's
//! `chat_type: "roster"` with `payload.operation`; tencent's `Sns.*` commands with a
//! `PairList`. Tencent asks `Sns.CallbackPrevFriendAdd` of `pre_send` rules before a request
//! (docs/behaviour.md §11.4).

use serde_json::{Map, Value, json};

use super::shape::{self, Message, jid};
use super::{AgoraDef, Before, Ctx, EventDef, TencentDef};
use crate::domain::EventType;
use crate::event::fields::{Default, Field, Kind, opt, req};

/// Tencent: a friend was added (a request sent, or answered).
pub const FRIEND_ADD: &str = "Sns.CallbackFriendAdd";
/// Tencent: a friend was deleted.
pub const FRIEND_DELETE: &str = "Sns.CallbackFriendDelete";
/// Tencent: a user was put on a block list.
pub const BLACKLIST_ADD: &str = "Sns.CallbackBlackListAdd";
/// Tencent: a user was taken off a block list.
pub const BLACKLIST_DELETE: &str = "Sns.CallbackBlackListDelete";
/// Tencent's before-command of a friend request.
pub const PREV_FRIEND_ADD: &str = "Sns.CallbackPrevFriendAdd";

const FROM: Field = req("from", Kind::Id, "who did it");
const TO: Field = req("to", Kind::Id, "the other user");
const REASON: Field = opt("reason", Kind::Text, Default::Str(""), "the request's message");
const FIELDS: &[Field] = &[FROM, TO, REASON];
const EXAMPLE: &str = r#"{"from": "alice", "to": "bob"}"#;

/// `roster_ver`: the version of the user's contact list after the change (40 hex digits).
fn roster_ver(c: &Ctx) -> String {
    format!("{:08X}{:016X}{:016X}", c.stamp.random, c.ms(), c.stamp.seq)
}

/// The agora roster envelope with `payload.operation` `operation`.
fn roster(c: &Ctx, operation: &str) -> Value {
    let payload = match operation {
        "add" => json!({ "reason": c.s("reason"), "operation": operation }),
        "ban" | "allow" => json!({ "operation": operation, "status": { "error_code": "ok" } }),
        _ => json!({ "roster_ver": roster_ver(c), "operation": operation }),
    };
    Message {
        event_type: Some("chat"),
        chat_type: "roster",
        group_id: None,
        from: &jid(c.appkey, c.s("from")),
        to: c.s("to"),
        extra: Vec::new(),
        payload,
    }
    .build(c)
}

fn pairs(c: &Ctx) -> Value {
    json!([{ "From_Account": c.s("from"), "To_Account": c.s("to") }])
}

fn friend_add(c: &Ctx, client_cmd: &str, initiator: &str) -> Value {
    shape::tencent(
        c,
        FRIEND_ADD,
        json!({
            "ClientCmd": client_cmd,
            "Admin_Account": "",
            "ForceFlag": 0,
            "PairList": [{ "From_Account": c.s("from"), "To_Account": c.s("to"), "Initiator_Account": initiator }],
        }),
    )
}

fn prev_friend_add(c: &Ctx) -> Value {
    shape::tencent(
        c,
        PREV_FRIEND_ADD,
        json!({
            "Requester_Account": c.s("from"),
            "From_Account": c.s("from"),
            "AddType": "Add_Type_Both",
            "ForceAddFlags": 0,
            "FriendItem": [{
                "To_Account": c.s("to"),
                "Remark": "",
                "GroupName": "",
                "AddSource": "AddSource_Type_Unknown",
                "AddWording": c.s("reason"),
            }],
        }),
    )
}

/// An allowing answer's `ResultItem` may still refuse the pair: a `ResultCode` other than 0
/// for the request's `to`.
fn apply_prev_friend_add(answer: &Value, fields: &mut Map<String, Value>) -> Result<(), String> {
    let to = fields.get("to").and_then(Value::as_str).unwrap_or_default();
    let items = answer.get("ResultItem").and_then(Value::as_array);
    for item in items.into_iter().flatten() {
        let code = item.get("ResultCode").and_then(Value::as_i64).unwrap_or(0);
        if item.get("To_Account").and_then(Value::as_str) == Some(to) && code != 0 {
            let info = item.get("ResultInfo").and_then(Value::as_str).unwrap_or_default();
            return Err(
                format!("the receiver refused the pair with {to:?}: ResultCode {code} {info}")
                    .trim_end()
                    .to_string(),
            );
        }
    }
    Ok(())
}

pub(super) const EVENTS: &[EventDef] = &[
    EventDef {
        name: EventType::ContactAdded,
        summary: "A contact (friend) request was sent.",
        subject: "to",
        fields: FIELDS,
        example: r#"{"from": "alice", "to": "bob", "reason": "hi, it's Alice"}"#,
        agora: Some(AgoraDef {
            wire: "chat_type: roster, payload.operation: add",
            body: |c| roster(c, "add"),
            legacy: None,
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: FRIEND_ADD,
            body: |c| friend_add(c, "friend_add", c.s("from")),
            before: Some(Before {
                command: PREV_FRIEND_ADD,
                asks: |_| true,
                body: prev_friend_add,
                apply: apply_prev_friend_add,
            }),
        }),
    },
    EventDef {
        name: EventType::ContactAccepted,
        summary: "A contact request was accepted: from is who accepted, to who asked.",
        subject: "to",
        fields: FIELDS,
        example: EXAMPLE,
        agora: Some(AgoraDef {
            wire: "chat_type: roster, payload.operation: accept",
            body: |c| roster(c, "accept"),
            legacy: None,
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: FRIEND_ADD,
            body: |c| friend_add(c, "friend_response", c.s("to")),
            before: None,
        }),
    },
    EventDef {
        name: EventType::ContactDeclined,
        summary: "A contact request was declined: from is who declined, to who asked.",
        subject: "to",
        fields: FIELDS,
        example: EXAMPLE,
        agora: Some(AgoraDef {
            wire: "chat_type: roster, payload.operation: decline",
            body: |c| roster(c, "decline"),
            legacy: None,
            legacy_each: None,
        }),
        tencent: None,
    },
    EventDef {
        name: EventType::ContactRemoved,
        summary: "A contact was removed.",
        subject: "to",
        fields: FIELDS,
        example: EXAMPLE,
        agora: Some(AgoraDef {
            wire: "chat_type: roster, payload.operation: remove",
            body: |c| roster(c, "remove"),
            legacy: None,
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: FRIEND_DELETE,
            body: |c| shape::tencent(c, FRIEND_DELETE, json!({ "PairList": pairs(c) })),
            before: None,
        }),
    },
    EventDef {
        name: EventType::UserBlocked,
        summary: "A user put another on their block list.",
        subject: "to",
        fields: FIELDS,
        example: EXAMPLE,
        agora: Some(AgoraDef {
            wire: "chat_type: roster, payload.operation: ban",
            body: |c| roster(c, "ban"),
            legacy: None,
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: BLACKLIST_ADD,
            body: |c| shape::tencent(c, BLACKLIST_ADD, json!({ "PairList": pairs(c) })),
            before: None,
        }),
    },
    EventDef {
        name: EventType::UserUnblocked,
        summary: "A user took another off their block list.",
        subject: "to",
        fields: FIELDS,
        example: EXAMPLE,
        agora: Some(AgoraDef {
            wire: "chat_type: roster, payload.operation: allow",
            body: |c| roster(c, "allow"),
            legacy: None,
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: BLACKLIST_DELETE,
            body: |c| shape::tencent(c, BLACKLIST_DELETE, json!({ "PairList": pairs(c) })),
            before: None,
        }),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_pair_is_an_error_and_others_are_not() {
        let mut f = Map::new();
        f.insert("to".into(), "bob".into());
        let refused =
            json!({"ErrorCode": 0, "ResultItem": [{"To_Account": "bob", "ResultCode": 38001, "ResultInfo": "no"}]});
        let e = apply_prev_friend_add(&refused, &mut f).unwrap_err();
        assert!(e.contains("38001") && e.contains("bob"), "{e}");
        let other = json!({"ResultItem": [{"To_Account": "carol", "ResultCode": 38001}]});
        assert!(apply_prev_friend_add(&other, &mut f).is_ok());
        assert!(apply_prev_friend_add(&json!({"ErrorCode": 0}), &mut f).is_ok());
    }
}
