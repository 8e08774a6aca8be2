//! The envelopes catalog events share (docs/behaviour.md §11.3): agora's message envelope,
//! its `group_op_event` and legacy `muc` envelopes, and tencent's after-command body. Each
//! leaves agora's `security` empty: the dialect signs the body once overrides are merged.

use serde_json::{Map, Value, json};

use super::Ctx;

/// `host` of agora bodies: the name of the provider's server that sent it.
pub const HOST: &str = "msync@callback-sim";
/// `operator` of agora group operations done by the app admin (REST or console).
pub const AGORA_ADMIN: &str = "@ppAdmin";
/// `Operator_Account` of tencent group operations done by the app admin.
pub const TENCENT_ADMIN: &str = "admin";

/// A user's full name on the agora wire: `{appkey}_{user}@easemob.com`.
pub fn jid(appkey: &str, user: &str) -> String {
    format!("{appkey}_{user}@easemob.com")
}

/// A group's full name on the agora wire: `{appkey}_{group}@conference.easemob.com`.
pub fn muc_jid(appkey: &str, group: &str) -> String {
    format!("{appkey}_{group}@conference.easemob.com")
}

/// The agora message envelope of an action event (a recall, a read receipt, a roster
/// change…): `callId`, `eventType` (when given), `timestamp`, `chat_type`, `group_id` (for
/// groups), `from`, `to`, the event's own fields, `msg_id` (the event's own id), `payload`,
/// `securityVersion`, `security`, `appkey`, `host`.
pub struct Message<'a> {
    /// `eventType`: `chat`, or `None` where the provider's example has none.
    pub event_type: Option<&'a str>,
    /// `chat_type`: the discriminator (`recall`, `read_ack`, `roster`…).
    pub chat_type: &'a str,
    /// `group_id`, for events in a group or chatroom.
    pub group_id: Option<&'a str>,
    /// `from`.
    pub from: &'a str,
    /// `to`.
    pub to: &'a str,
    /// Fields between `to` and `msg_id`.
    pub extra: Vec<(&'a str, Value)>,
    /// `payload`.
    pub payload: Value,
}

impl Message<'_> {
    /// The body.
    pub fn build(self, c: &Ctx) -> Value {
        let mut m = Map::new();
        m.insert("callId".into(), c.call_id.into());
        if let Some(t) = self.event_type {
            m.insert("eventType".into(), t.into());
        }
        m.insert("timestamp".into(), c.ms().into());
        m.insert("chat_type".into(), self.chat_type.into());
        if let Some(g) = self.group_id {
            m.insert("group_id".into(), g.into());
        }
        m.insert("from".into(), self.from.into());
        m.insert("to".into(), self.to.into());
        for (k, v) in self.extra {
            m.insert(k.into(), v);
        }
        m.insert("msg_id".into(), c.stamp.msg_id.as_str().into());
        m.insert("payload".into(), self.payload);
        m.insert("securityVersion".into(), "1.0.0".into());
        m.insert("security".into(), "".into());
        m.insert("appkey".into(), c.appkey.into());
        m.insert("host".into(), HOST.into());
        Value::Object(m)
    }
}

/// `GROUP` or `CHATROOM`, from the event's `chatroom` field.
pub fn group_kind(c: &Ctx) -> &'static str {
    if c.b("chatroom") { "CHATROOM" } else { "GROUP" }
}

/// The agora operator of a group operation: the `operator` field, else the app admin.
pub fn agora_operator<'a>(c: &Ctx<'a>) -> &'a str {
    c.opt("operator").unwrap_or(AGORA_ADMIN)
}

/// The tencent operator of a group operation: the `operator` field, else the app admin.
pub fn tencent_operator<'a>(c: &Ctx<'a>) -> &'a str {
    c.opt("operator").unwrap_or(TENCENT_ADMIN)
}

/// The agora `group_op_event` envelope (2024 and later): `callId`, `security`, `payload` (when
/// the operation has one), `appkey`, `id`, `type`, `event`, `operation`, `operator`,
/// `timestamp`, then `extra` (a join's `member_count`).
pub fn group_op(c: &Ctx, operation: &str, payload: Option<Value>, extra: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    m.insert("callId".into(), c.call_id.into());
    m.insert("security".into(), "".into());
    if let Some(p) = payload {
        m.insert("payload".into(), p);
    }
    m.insert("appkey".into(), c.appkey.into());
    m.insert("id".into(), c.s("group_id").into());
    m.insert("type".into(), group_kind(c).into());
    m.insert("event".into(), "group_op_event".into());
    m.insert("operation".into(), operation.into());
    m.insert("operator".into(), agora_operator(c).into());
    m.insert("timestamp".into(), c.ms().into());
    for (k, v) in extra {
        m.insert(k.into(), v);
    }
    Value::Object(m)
}

/// The legacy agora group envelope (`chat_type: "muc"`, for apps with `group_events =
/// "legacy"`): `payload` carries `muc_id`, `reason`, `is_chatroom`, `operation` and `status`.
/// `from` is whoever the operation is by, as a full name, and `to` whom it is about: the
/// group for members joining or leaving (`from` the member), the target user of a kick, an
/// admin or mute change or a new owner, else the operator.
pub fn muc(c: &Ctx, operation: &str, from_user: &str, to: &str) -> Value {
    let mut payload = Map::new();
    payload.insert("muc_id".into(), muc_jid(c.appkey, c.s("group_id")).into());
    payload.insert("reason".into(), "".into());
    payload.insert("is_chatroom".into(), c.b("chatroom").into());
    payload.insert("operation".into(), operation.into());
    payload.insert("status".into(), json!({"description": "", "error_code": "ok"}));
    Message {
        event_type: Some("chat"),
        chat_type: "muc",
        group_id: Some(c.s("group_id")),
        from: &jid(c.appkey, from_user),
        to,
        extra: Vec::new(),
        payload: Value::Object(payload),
    }
    .build(c)
}

/// The operator of a legacy group event: the `operator` field, else `admin`.
pub fn muc_operator<'a>(c: &Ctx<'a>) -> &'a str {
    c.opt("operator").unwrap_or("admin")
}

/// The member a legacy callback is about: its target (one callback per member), else the
/// first of `list`.
pub fn muc_target<'a>(c: &Ctx<'a>, list: &str) -> &'a str {
    c.target
        .unwrap_or_else(|| c.list(list).first().copied().unwrap_or_default())
}

/// A tencent event body: `CallbackCommand`, the command's fields, then `EventTime` (Unix
/// milliseconds, a number: docs/decisions.md) — after-commands, and the before-commands whose
/// pages show it.
pub fn tencent(c: &Ctx, command: &str, fields: Value) -> Value {
    let mut m = Map::new();
    m.insert("CallbackCommand".into(), command.into());
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    m.insert("EventTime".into(), c.ms().into());
    Value::Object(m)
}

/// `[{"Member_Account": id}, …]`.
pub fn member_list(ids: &[&str]) -> Value {
    Value::Array(ids.iter().map(|m| json!({ "Member_Account": m })).collect())
}

/// Tencent's group `Type`: the `group_type` field, else `ChatRoom` for chatrooms and `Public`.
pub fn tencent_group_type<'a>(c: &Ctx<'a>) -> &'a str {
    c.opt("group_type")
        .unwrap_or(if c.b("chatroom") { "ChatRoom" } else { "Public" })
}
