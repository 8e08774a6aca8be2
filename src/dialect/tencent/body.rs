//! The tencent commands, the query string appended to the rule URL, and the bodies
//! (docs/behaviour.md §4.3).

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::domain::{ChatType, MessageType, Platform, RuleKind, Source};
use crate::message::Message;

// `CallbackCommand` values, spelled as the provider does (docs/providers.md).
/// Before a one-to-one message is delivered: a `pre_send` rule, `chat`.
pub const C2C_BEFORE: &str = "C2C.CallbackBeforeSendMsg";
/// After a one-to-one message: a `post_send` rule, `chat`.
pub const C2C_AFTER: &str = "C2C.CallbackAfterSendMsg";
/// Before a group or chatroom message is delivered: a `pre_send` rule.
pub const GROUP_BEFORE: &str = "Group.CallbackBeforeSendMsg";
/// After a group or chatroom message: a `post_send` rule.
pub const GROUP_AFTER: &str = "Group.CallbackAfterSendMsg";
/// A user logged in or out: the `user_status` event.
pub const STATE_CHANGE: &str = "State.StateChange";
/// Members joined a group: the `group_member_joined` event.
pub const GROUP_MEMBER_JOIN: &str = "Group.CallbackAfterNewMemberJoin";

/// The command for a message callback: before/after by rule kind, C2C or Group by chat type.
pub fn message_command(kind: RuleKind, chat_type: ChatType) -> &'static str {
    match (kind, chat_type) {
        (RuleKind::PreSend, ChatType::Chat) => C2C_BEFORE,
        (RuleKind::PostSend, ChatType::Chat) => C2C_AFTER,
        (RuleKind::PreSend, _) => GROUP_BEFORE,
        (RuleKind::PostSend, _) => GROUP_AFTER,
    }
}

/// `OptPlatform`: `RESTAPI` for REST messages, else the message's platform, else `Unknown`.
pub fn platform(source: Source, platform: Option<Platform>) -> Platform {
    match (source, platform) {
        (Source::Rest, _) => Platform::RestApi,
        (_, Some(p)) => p,
        (_, None) => Platform::Unknown,
    }
}

/// The query string of a callback (URL-encoded), to append to the rule URL.
pub fn query(sdk_app_id: u64, command: &str, client_ip: &str, platform: Platform) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("SdkAppid", &sdk_app_id.to_string())
        .append_pair("CallbackCommand", command)
        .append_pair("contenttype", "json")
        .append_pair("ClientIP", client_ip)
        .append_pair("OptPlatform", platform.as_str());
    q.finish()
}

/// Sequence, random and time of one message, shared by all its tencent callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgIds {
    /// `MsgSeq`: a per-process counter, one number per message.
    pub seq: u32,
    /// `MsgRandom`: a random number drawn once per message.
    pub random: u32,
    /// `MsgTime`: Unix seconds at which the simulator received the message.
    pub time: u64,
}

impl MsgIds {
    /// `MsgKey` as Tencent builds it: `{MsgSeq}_{MsgRandom}_{MsgTime}`.
    pub fn key(&self) -> String {
        format!("{}_{}_{}", self.seq, self.random, self.time)
    }
}

/// The TIM element type of a message type.
pub fn element_type(t: MessageType) -> &'static str {
    match t {
        MessageType::Txt => "TIMTextElem",
        MessageType::Img => "TIMImageElem",
        MessageType::Audio => "TIMSoundElem",
        MessageType::Video => "TIMVideoFileElem",
        MessageType::File => "TIMFileElem",
        MessageType::Loc => "TIMLocationElem",
        MessageType::Cmd | MessageType::Custom => "TIMCustomElem",
    }
}

/// `MsgContent`: `{"Text"}` for text; `{"Desc","Latitude","Longitude"}` for a location given
/// as `addr`/`lat`/`lng`; otherwise the message body's own fields.
fn msg_content(msg: &Message) -> Value {
    let b = &msg.body;
    match msg.msg_type {
        MessageType::Txt => json!({ "Text": b.get("msg").cloned().unwrap_or(Value::String(String::new())) }),
        MessageType::Loc if b.contains_key("lat") || b.contains_key("lng") => json!({
            "Desc": b.get("addr").cloned().unwrap_or(Value::String(String::new())),
            "Latitude": b.get("lat").cloned().unwrap_or(Value::Null),
            "Longitude": b.get("lng").cloned().unwrap_or(Value::Null),
        }),
        _ => Value::Object(
            b.iter()
                .filter(|(k, _)| k.as_str() != "type")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Map<_, _>>(),
        ),
    }
}

/// The body of a message callback (before or after, C2C or Group).
pub fn message_body(command: &str, msg: &Message, ids: MsgIds) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Elem<'a> {
        msg_type: &'a str,
        msg_content: Value,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "CallbackCommand")]
        command: &'a str,
        #[serde(rename = "From_Account")]
        from: &'a str,
        #[serde(rename = "To_Account", skip_serializing_if = "Option::is_none")]
        to: Option<&'a str>,
        #[serde(rename = "GroupId", skip_serializing_if = "Option::is_none")]
        group_id: Option<&'a str>,
        #[serde(rename = "MsgSeq")]
        seq: u32,
        #[serde(rename = "MsgRandom")]
        random: u32,
        #[serde(rename = "MsgTime")]
        time: u64,
        #[serde(rename = "MsgKey")]
        key: String,
        #[serde(rename = "MsgBody")]
        body: [Elem<'a>; 1],
        #[serde(rename = "CloudCustomData", skip_serializing_if = "Option::is_none")]
        ext: Option<String>,
    }
    let group = msg.group_id();
    let body = Body {
        command,
        from: &msg.from,
        to: if group.is_none() { Some(&msg.to) } else { None },
        group_id: group,
        seq: ids.seq,
        random: ids.random,
        time: ids.time,
        key: ids.key(),
        body: [Elem {
            msg_type: element_type(msg.msg_type),
            msg_content: msg_content(msg),
        }],
        ext: (!msg.ext.is_empty()).then(|| Value::Object(msg.ext.clone()).to_string()),
    };
    serde_json::to_vec(&body).expect("a tencent body serializes")
}

/// `State.StateChange` (login / logout of a user).
pub fn state_change_body(user: &str, online: bool, event_time_ms: u64) -> Vec<u8> {
    let (action, reason) = if online {
        ("Login", "Register")
    } else {
        ("Logout", "Unregister")
    };
    serde_json::to_vec(&json!({
        "CallbackCommand": STATE_CHANGE,
        "EventTime": event_time_ms,
        "Info": { "Action": action, "To_Account": user, "Reason": reason },
    }))
    .expect("a tencent body serializes")
}

/// `Group.CallbackAfterNewMemberJoin`, as in the provider's example.
pub fn member_join_body(
    group_id: &str,
    group_type: &str,
    join_type: &str,
    operator: &str,
    members: &[String],
) -> Vec<u8> {
    let list: Vec<Value> = members.iter().map(|m| json!({ "Member_Account": m })).collect();
    serde_json::to_vec(&json!({
        "CallbackCommand": GROUP_MEMBER_JOIN,
        "GroupId": group_id,
        "Type": group_type,
        "JoinType": join_type,
        "Operator_Account": operator,
        "NewMemberList": list,
    }))
    .expect("a tencent body serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_by_kind_and_chat_type() {
        assert_eq!(
            message_command(RuleKind::PreSend, ChatType::Chat),
            "C2C.CallbackBeforeSendMsg"
        );
        assert_eq!(
            message_command(RuleKind::PostSend, ChatType::Chat),
            "C2C.CallbackAfterSendMsg"
        );
        assert_eq!(
            message_command(RuleKind::PreSend, ChatType::ChatRoom),
            "Group.CallbackBeforeSendMsg"
        );
        assert_eq!(
            message_command(RuleKind::PostSend, ChatType::GroupChat),
            "Group.CallbackAfterSendMsg"
        );
    }

    #[test]
    fn query_is_url_encoded() {
        let q = query(1400000000, C2C_AFTER, "10.0.0.1", Platform::Ios);
        assert_eq!(
            q,
            "SdkAppid=1400000000&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json&ClientIP=10.0.0.1&OptPlatform=iOS"
        );
        let q = query(1, C2C_AFTER, "::1", Platform::RestApi);
        assert!(q.ends_with("ClientIP=%3A%3A1&OptPlatform=RESTAPI"), "{q}");
        assert_eq!(platform(Source::Rest, Some(Platform::Web)), Platform::RestApi);
        assert_eq!(platform(Source::Client, None), Platform::Unknown);
    }

    #[test]
    fn c2c_text_body() {
        let msg = Message::text("jared", "Jonh", "red packet");
        let ids = MsgIds {
            seq: 48374,
            random: 2837546,
            time: 1557481126,
        };
        let v: Value = serde_json::from_slice(&message_body(C2C_AFTER, &msg, ids)).unwrap();
        assert_eq!(
            v,
            json!({"CallbackCommand": "C2C.CallbackAfterSendMsg", "From_Account": "jared", "To_Account": "Jonh",
                   "MsgSeq": 48374, "MsgRandom": 2837546, "MsgTime": 1557481126, "MsgKey": "48374_2837546_1557481126",
                   "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "red packet"}}]})
        );
    }
}
