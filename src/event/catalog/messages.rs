//! Recalls, read receipts, edits and reactions (docs/behaviour.md §11.3). On the agora wire
//! they ride the message envelope with their own `chat_type`; tencent has recalls and read
//! receipts, as a C2C or a Group command by the chat type.

use serde_json::{Value, json};

use super::shape::{self, Message, tencent_group_type};
use super::{AgoraDef, Ctx, EventDef, TencentDef};
use crate::domain::EventType;
use crate::event::fields::{Default, Field, Kind, opt, req};

/// Tencent: a one-to-one message was recalled.
pub const C2C_RECALL: &str = "C2C.CallbackAfterMsgWithDraw";
/// Tencent: a group message was recalled.
pub const GROUP_RECALL: &str = "Group.CallbackAfterRecallMsg";
/// Tencent: a one-to-one conversation was read.
pub const C2C_READ: &str = "C2C.CallbackAfterMsgReport";
/// Tencent: group messages got read receipts.
pub const GROUP_READ: &str = "Group.CallbackAfterReadReceipt";

const CHAT_TYPE: Field = opt(
    "chat_type",
    Kind::Choice(&["chat", "groupchat", "chatroom"]),
    Default::Str("chat"),
    "chat (to is a user), groupchat or chatroom (to is the group)",
);
const MSG_SEQ: Field = opt(
    "msg_seq",
    Kind::Int,
    Default::AtSend("a new sequence number"),
    "tencent groups: the message's MsgSeq",
);
const MSG_KEY: Field = opt(
    "msg_key",
    Kind::Text,
    Default::AtSend("{MsgSeq}_{Random}_{seconds}"),
    "tencent C2C: the message's MsgKey",
);
const GROUP_TYPE: Field = opt(
    "group_type",
    Kind::Choice(&[
        "Public",
        "Private",
        "ChatRoom",
        "AVChatRoom",
        "Work",
        "Meeting",
        "Community",
    ]),
    Default::None,
    "tencent: the group's Type (Public, or ChatRoom for chatrooms)",
);

/// Whether the event happened in a group or chatroom.
fn in_group(c: &Ctx) -> bool {
    c.s("chat_type") != "chat"
}

/// `group_id` of the agora envelope: the `to` of a group event.
fn group_id<'a>(c: &Ctx<'a>) -> Option<&'a str> {
    in_group(c).then(|| c.s("to"))
}

/// `chat` or `groupchat`, as agora's wire says it.
fn wire_chat_type(c: &Ctx) -> &'static str {
    if in_group(c) { "groupchat" } else { "chat" }
}

fn msg_seq(c: &Ctx) -> u64 {
    c.u("msg_seq").unwrap_or(u64::from(c.stamp.seq))
}

fn msg_key(c: &Ctx) -> String {
    match c.opt("msg_key") {
        Some(k) => k.to_string(),
        None => format!("{}_{}_{}", c.stamp.seq, c.stamp.random, c.ms() / 1000),
    }
}

fn recalled_agora(c: &Ctx) -> Value {
    Message {
        event_type: Some("chat"),
        chat_type: "recall",
        group_id: group_id(c),
        from: c.s("from"),
        to: c.s("to"),
        extra: vec![("recall_id", c.v("msg_id"))],
        payload: json!({ "ext": {}, "ack_message_id": c.s("msg_id"), "bodies": [] }),
    }
    .build(c)
}

fn recalled_tencent(c: &Ctx) -> Value {
    if in_group(c) {
        shape::tencent(
            c,
            GROUP_RECALL,
            json!({
                "Operator_Account": c.s("from"),
                "Type": tencent_group_type(c),
                "GroupId": c.s("to"),
                "MsgSeqList": [{ "MsgSeq": msg_seq(c) }],
            }),
        )
    } else {
        shape::tencent(
            c,
            C2C_RECALL,
            json!({
                "From_Account": c.s("from"),
                "To_Account": c.s("to"),
                "MsgKey": msg_key(c),
                "UnreadMsgNum": 0,
            }),
        )
    }
}

fn read_agora(c: &Ctx) -> Value {
    let (extra, payload) = if in_group(c) {
        (
            vec![
                ("content_type", Value::from("chat:ack:read")),
                ("channel_channel", shape::muc_jid(c.appkey, c.s("to")).into()),
                ("channel_user", shape::jid(c.appkey, c.s("from")).into()),
                ("writed_channel", false.into()),
            ],
            json!({
                "ext": {},
                "ack_message_id": c.s("msg_id"),
                "msg_config": { "allow_group_ack": true },
                "type": "read_ack",
            }),
        )
    } else {
        (
            Vec::new(),
            json!({ "ext": {}, "ack_message_id": c.s("msg_id"), "bodies": [] }),
        )
    };
    Message {
        event_type: Some("chat"),
        chat_type: "read_ack",
        // The group read receipt names its group in `to` and `channel_channel` only.
        group_id: None,
        from: c.s("from"),
        to: c.s("to"),
        extra,
        payload,
    }
    .build(c)
}

fn read_tencent(c: &Ctx) -> Value {
    if in_group(c) {
        shape::tencent(
            c,
            GROUP_READ,
            json!({
                "GroupId": c.s("to"),
                "Type": tencent_group_type(c),
                "GroupMsgReceiptList": [{
                    "MsgSeq": msg_seq(c),
                    "ReadNum": 1,
                    "UnreadNum": 0,
                    "ReadReceiptMembers": [{ "Member_Account": c.s("from") }],
                }],
            }),
        )
    } else {
        shape::tencent(
            c,
            C2C_READ,
            json!({
                "Report_Account": c.s("from"),
                "Peer_Account": c.s("to"),
                "LastReadTime": c.ms() / 1000,
                "UnreadMsgNum": 0,
            }),
        )
    }
}

fn conversation_read_agora(c: &Ctx) -> Value {
    Message {
        event_type: Some("chat"),
        chat_type: "channel_ack",
        group_id: None,
        from: c.s("from"),
        to: c.s("to"),
        extra: Vec::new(),
        payload: json!({
            "ack_message_id": c.opt("msg_id").unwrap_or(&c.stamp.msg_id),
            "type": "channel_ack",
        }),
    }
    .build(c)
}

fn edited_agora(c: &Ctx) -> Value {
    let operator = c.opt("operator").unwrap_or(c.s("from"));
    Message {
        // The provider's example of an edit has no eventType.
        event_type: None,
        chat_type: "edit",
        group_id: group_id(c),
        from: c.s("from"),
        to: c.s("to"),
        extra: Vec::new(),
        payload: json!({
            "bodies": [{ "msg": c.s("msg"), "type": "txt" }],
            "edit_message_id": c.s("msg_id"),
            "from": c.s("from"),
            "meta": { "edit_msg": {
                "count": 1,
                "edit_time": c.ms(),
                "operator": operator,
                "send_time": c.u("send_time").unwrap_or(c.ms().saturating_sub(60_000)),
                "sender": c.s("from"),
            } },
            "to": c.s("to"),
            "type": "edit",
        }),
    }
    .build(c)
}

fn reaction_agora(c: &Ctx) -> Value {
    let from = c.s("from");
    let created = c.s("op") != "delete";
    let users: Vec<&str> = if created { vec![from] } else { Vec::new() };
    let channel_type = wire_chat_type(c);
    Message {
        event_type: Some("chat"),
        chat_type: "notify",
        group_id: group_id(c),
        from,
        to: c.s("to"),
        extra: Vec::new(),
        payload: json!({
            "data": [{
                "messageId": c.s("msg_id"),
                "from": from,
                "reactions": [{
                    "op": [{ "reactionType": c.s("op"), "operator": from }],
                    "reaction": c.s("reaction"),
                    "userList": users,
                    "count": users.len(),
                }],
                "to": c.s("to"),
                "channel_type": channel_type,
                "ts": c.ms(),
            }],
            "num": 1,
            "channel_type": channel_type,
            "type": "reaction",
        }),
    }
    .build(c)
}

pub(super) const EVENTS: &[EventDef] = &[
    EventDef {
        name: EventType::MessageRecalled,
        summary: "A sent message was recalled (withdrawn) by its sender.",
        subject: "to",
        fields: &[
            req("from", Kind::Id, "who recalled it (the sender)"),
            req("to", Kind::Id, "the recipient user or group"),
            CHAT_TYPE,
            req("msg_id", Kind::Id, "the recalled message's id"),
            MSG_SEQ,
            MSG_KEY,
            GROUP_TYPE,
        ],
        example: r#"{"from": "alice", "to": "bob", "msg_id": "1234567890"}"#,
        agora: Some(AgoraDef {
            wire: "chat_type: recall (recall_id, payload.ack_message_id)",
            body: recalled_agora,
            legacy: None,
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: "C2C.CallbackAfterMsgWithDraw / Group.CallbackAfterRecallMsg",
            body: recalled_tencent,
            before: None,
        }),
    },
    EventDef {
        name: EventType::MessageRead,
        summary: "A message was read: a read receipt from its reader.",
        subject: "to",
        fields: &[
            req("from", Kind::Id, "the reader"),
            req("to", Kind::Id, "the message's sender, or the group"),
            CHAT_TYPE,
            req("msg_id", Kind::Id, "the message read"),
            MSG_SEQ,
            GROUP_TYPE,
        ],
        example: r#"{"from": "bob", "to": "alice", "msg_id": "1234567890"}"#,
        agora: Some(AgoraDef {
            wire: "chat_type: read_ack (groups: content_type chat:ack:read)",
            body: read_agora,
            legacy: None,
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: "C2C.CallbackAfterMsgReport / Group.CallbackAfterReadReceipt",
            body: read_tencent,
            before: None,
        }),
    },
    EventDef {
        name: EventType::ConversationRead,
        summary: "A whole one-to-one conversation was marked read.",
        subject: "to",
        fields: &[
            req("from", Kind::Id, "the reader"),
            req("to", Kind::Id, "the other user of the conversation"),
            opt(
                "msg_id",
                Kind::Id,
                Default::AtSend("a new message id"),
                "the last message read",
            ),
        ],
        example: r#"{"from": "bob", "to": "alice"}"#,
        agora: Some(AgoraDef {
            wire: "chat_type: channel_ack",
            body: conversation_read_agora,
            legacy: None,
            legacy_each: None,
        }),
        tencent: None,
    },
    EventDef {
        name: EventType::MessageEdited,
        summary: "A sent text message was edited.",
        subject: "to",
        fields: &[
            req("from", Kind::Id, "the message's sender"),
            req("to", Kind::Id, "the recipient user or group"),
            CHAT_TYPE,
            req("msg_id", Kind::Id, "the edited message's id"),
            req("msg", Kind::Text, "the new text"),
            opt(
                "operator",
                Kind::Id,
                Default::None,
                "who edited it (default: the sender)",
            ),
            opt(
                "send_time",
                Kind::Int,
                Default::None,
                "when the message was first sent, Unix ms",
            ),
        ],
        example: r#"{"from": "alice", "to": "bob", "msg_id": "1234567890", "msg": "hello again"}"#,
        agora: Some(AgoraDef {
            wire: "chat_type: edit (no eventType)",
            body: edited_agora,
            legacy: None,
            legacy_each: None,
        }),
        tencent: None,
    },
    EventDef {
        name: EventType::ReactionChanged,
        summary: "A reaction was added to or removed from a message.",
        subject: "to",
        fields: &[
            req("from", Kind::Id, "who reacted"),
            req("to", Kind::Id, "the recipient user or group of the message"),
            CHAT_TYPE,
            req("msg_id", Kind::Id, "the message reacted to"),
            req("reaction", Kind::Text, "the reaction (an emoji or its name)"),
            opt(
                "op",
                Kind::Choice(&["create", "delete"]),
                Default::Str("create"),
                "added or removed",
            ),
        ],
        example: r#"{"from": "bob", "to": "alice", "msg_id": "1234567890", "reaction": "thumbs_up"}"#,
        agora: Some(AgoraDef {
            wire: "chat_type: notify, payload.type: reaction",
            body: reaction_agora,
            legacy: None,
            legacy_each: None,
        }),
        tencent: None,
    },
];
