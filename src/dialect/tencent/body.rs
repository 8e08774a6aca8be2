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

/// The query string of a callback (URL-encoded), to append to the rule URL; `Sign` and
/// `RequestTime` are added when it is sent ([`super::sign`]).
pub fn query(sdk_app_id: u64, command: &str, client_ip: &str, platform: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("SdkAppid", &sdk_app_id.to_string())
        .append_pair("CallbackCommand", command)
        .append_pair("contenttype", "json")
        .append_pair("ClientIP", client_ip)
        .append_pair("OptPlatform", platform);
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

/// `MsgContent` in the provider's element shapes (docs/behaviour.md §4.3), from the message
/// body's fields: `TIMTextElem {Text}`, `TIMLocationElem {Desc, Latitude, Longitude}`,
/// `TIMImageElem {UUID, ImageFormat, ImageInfoArray}`, `TIMSoundElem {Url, UUID, Size, Second,
/// Download_Flag}`, `TIMVideoFileElem {VideoUrl, …, ThumbUrl, …}`, `TIMFileElem {Url, UUID,
/// FileSize, FileName, Download_Flag}`, `TIMCustomElem {Data, Desc, Ext, Sound}`. A body whose
/// every field starts with a capital letter is taken to be in the provider's shape already and
/// passed through.
fn msg_content(msg: &Message) -> Value {
    let b = &msg.body;
    let native = b
        .keys()
        .filter(|k| k.as_str() != "type")
        .all(|k| k.starts_with(|c: char| c.is_ascii_uppercase()));
    if native && msg.msg_type != MessageType::Txt && b.keys().any(|k| k != "type") {
        return Value::Object(
            b.iter()
                .filter(|(k, _)| k.as_str() != "type")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Map<_, _>>(),
        );
    }
    let text = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let num = |k: &str| match b.get(k) {
        Some(Value::Number(n)) => Value::Number(n.clone()),
        Some(Value::String(s)) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::from(0), Value::Number),
        _ => Value::from(0),
    };
    let size = |k: &str| b.get("size").and_then(|s| s.get(k)).cloned().unwrap_or(Value::from(0));
    // The file's id: its secret (what the provider's download needs), else its name.
    let uuid = || {
        let s = text("secret");
        if s.is_empty() { text("filename") } else { s }
    };
    let extension = || {
        text("filename")
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default()
    };
    match msg.msg_type {
        MessageType::Txt => json!({ "Text": b.get("msg").cloned().unwrap_or(Value::String(String::new())) }),
        MessageType::Loc => json!({ "Desc": text("addr"), "Latitude": num("lat"), "Longitude": num("lng") }),
        MessageType::Img => {
            let format = match extension().as_str() {
                "jpg" | "jpeg" => 1,
                "gif" => 2,
                "png" => 3,
                "bmp" => 4,
                _ => 255,
            };
            // Original, large and thumbnail, as the provider lists them.
            let info: Vec<Value> = (1..=3)
                .map(|t| {
                    json!({ "Type": t, "Size": num("file_length"), "Width": size("width"), "Height": size("height"), "URL": text("url") })
                })
                .collect();
            json!({ "UUID": uuid(), "ImageFormat": format, "ImageInfoArray": info })
        }
        MessageType::Audio => json!({
            "Url": text("url"), "UUID": uuid(), "Size": num("file_length"), "Second": num("length"), "Download_Flag": 2,
        }),
        MessageType::Video => json!({
            "VideoUrl": text("url"), "VideoUUID": uuid(), "VideoSize": num("file_length"), "VideoSecond": num("length"),
            "VideoFormat": extension(), "VideoDownloadFlag": 2,
            "ThumbUrl": text("thumb"), "ThumbUUID": text("thumb_secret"), "ThumbSize": 0,
            "ThumbWidth": size("width"), "ThumbHeight": size("height"), "ThumbFormat": "jpg", "ThumbDownloadFlag": 2,
        }),
        MessageType::File => json!({
            "Url": text("url"), "UUID": uuid(), "FileSize": num("file_length"), "FileName": text("filename"), "Download_Flag": 2,
        }),
        // A command: its action is the data.
        MessageType::Cmd => json!({ "Data": text("action"), "Desc": "", "Ext": "", "Sound": "" }),
        // A custom message: its event is the description, its fields the data (a JSON string).
        MessageType::Custom => {
            let exts = b
                .get("v2:customExts")
                .or_else(|| b.get("customExts"))
                .cloned()
                .unwrap_or(json!({}));
            json!({ "Data": exts.to_string(), "Desc": text("customEvent"), "Ext": "", "Sound": "" })
        }
    }
}

/// The body of a message callback (docs/behaviour.md §4.3, §11.4): C2C bodies carry
/// `MsgRandom` and `MsgKey` (after-commands also `SendMsgResult`, `ErrorInfo`,
/// `UnreadMsgNum`); group bodies carry `Random` and no `MsgKey`, with `Type` and
/// `Operator_Account` (and, before it is sent, no `MsgSeq` or `MsgTime`); after-commands and
/// the group before-command end with `EventTime`, which is `now_ms`.
pub fn message_body(command: &str, msg: &Message, ids: MsgIds, now_ms: u64) -> Vec<u8> {
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
        #[serde(rename = "GroupId", skip_serializing_if = "Option::is_none")]
        group_id: Option<&'a str>,
        #[serde(rename = "Type", skip_serializing_if = "Option::is_none")]
        group_type: Option<&'a str>,
        #[serde(rename = "From_Account")]
        from: &'a str,
        #[serde(rename = "To_Account", skip_serializing_if = "Option::is_none")]
        to: Option<&'a str>,
        #[serde(rename = "Operator_Account", skip_serializing_if = "Option::is_none")]
        operator: Option<&'a str>,
        #[serde(rename = "Random", skip_serializing_if = "Option::is_none")]
        group_random: Option<u32>,
        #[serde(rename = "MsgSeq", skip_serializing_if = "Option::is_none")]
        seq: Option<u32>,
        #[serde(rename = "MsgRandom", skip_serializing_if = "Option::is_none")]
        random: Option<u32>,
        #[serde(rename = "MsgTime", skip_serializing_if = "Option::is_none")]
        time: Option<u64>,
        #[serde(rename = "MsgKey", skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        #[serde(rename = "OnlineOnlyFlag")]
        online_only: u8,
        #[serde(rename = "SendMsgResult", skip_serializing_if = "Option::is_none")]
        send_result: Option<u8>,
        #[serde(rename = "ErrorInfo", skip_serializing_if = "Option::is_none")]
        error_info: Option<&'a str>,
        #[serde(rename = "UnreadMsgNum", skip_serializing_if = "Option::is_none")]
        unread: Option<u32>,
        #[serde(rename = "MsgBody")]
        body: [Elem<'a>; 1],
        #[serde(rename = "CloudCustomData")]
        ext: String,
        #[serde(rename = "EventTime", skip_serializing_if = "Option::is_none")]
        event_time: Option<u64>,
    }
    let group = msg.group_id();
    let after = command == C2C_AFTER || command == GROUP_AFTER;
    let c2c = group.is_none();
    // A group message has no sequence number or time before it is sent.
    let sequenced = c2c || after;
    let body = Body {
        command,
        group_id: group,
        group_type: group.map(|_| group_type(msg.chat_type)),
        from: &msg.from,
        to: c2c.then_some(msg.to.as_str()),
        operator: group.map(|_| msg.from.as_str()),
        group_random: (!c2c).then_some(ids.random),
        seq: sequenced.then_some(ids.seq),
        random: c2c.then_some(ids.random),
        time: sequenced.then_some(ids.time),
        key: c2c.then(|| ids.key()),
        online_only: 0,
        send_result: (c2c && after).then_some(0),
        error_info: (c2c && after).then_some("send msg succeed"),
        unread: (c2c && after).then_some(0),
        body: [Elem {
            msg_type: element_type(msg.msg_type),
            msg_content: msg_content(msg),
        }],
        ext: if msg.ext.is_empty() {
            String::new()
        } else {
            Value::Object(msg.ext.clone()).to_string()
        },
        // After-commands, and the group before-command (its page shows EventTime too).
        event_time: (after || !c2c).then_some(now_ms),
    };
    serde_json::to_vec(&body).expect("a tencent body serializes")
}

/// Tencent's group `Type` of a message's conversation: `ChatRoom` for chatrooms, else
/// `Public`.
pub fn group_type(chat_type: ChatType) -> &'static str {
    match chat_type {
        ChatType::ChatRoom => "ChatRoom",
        _ => "Public",
    }
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
        let q = query(1400000000, C2C_AFTER, "10.0.0.1", Platform::Ios.as_str());
        assert_eq!(
            q,
            "SdkAppid=1400000000&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json&ClientIP=10.0.0.1&OptPlatform=iOS"
        );
        let q = query(1, C2C_AFTER, "::1", Platform::RestApi.as_str());
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
        let body = String::from_utf8(message_body(C2C_AFTER, &msg, ids, 1557481126000)).unwrap();
        assert_eq!(
            body,
            r#"{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"jared","To_Account":"Jonh","MsgSeq":48374,"MsgRandom":2837546,"MsgTime":1557481126,"MsgKey":"48374_2837546_1557481126","OnlineOnlyFlag":0,"SendMsgResult":0,"ErrorInfo":"send msg succeed","UnreadMsgNum":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"red packet"}}],"CloudCustomData":"","EventTime":1557481126000}"#
        );
    }

    #[test]
    fn message_types_become_the_providers_elements() {
        let content = |t: MessageType, body: Value| {
            let Value::Object(b) = body else { unreachable!() };
            msg_content(&Message::new("a", "b", t, b))
        };
        assert_eq!(
            content(
                MessageType::Custom,
                json!({"customEvent": "gift", "customExts": {"n": 1}})
            ),
            json!({"Data": "{\"n\":1}", "Desc": "gift", "Ext": "", "Sound": ""})
        );
        assert_eq!(
            content(MessageType::Cmd, json!({"action": "typing"})),
            json!({"Data": "typing", "Desc": "", "Ext": "", "Sound": ""})
        );
        assert_eq!(
            content(
                MessageType::Loc,
                json!({"lat": "39.9", "lng": 116.4, "addr": "Beijing"})
            ),
            json!({"Desc": "Beijing", "Latitude": 39.9, "Longitude": 116.4})
        );
        let img = content(
            MessageType::Img,
            json!({"url": "https://x/a.png", "filename": "a.png", "size": {"width": 640, "height": 480}, "file_length": 9}),
        );
        assert_eq!(
            (img["UUID"].as_str(), img["ImageFormat"].as_u64()),
            (Some("a.png"), Some(3))
        );
        assert_eq!(
            img["ImageInfoArray"][0],
            json!({"Type": 1, "Size": 9, "Width": 640, "Height": 480, "URL": "https://x/a.png"})
        );
        let file = content(
            MessageType::File,
            json!({"url": "u", "filename": "r.pdf", "secret": "s"}),
        );
        assert_eq!(
            file,
            json!({"Url": "u", "UUID": "s", "FileSize": 0, "FileName": "r.pdf", "Download_Flag": 2})
        );
        // A body already in the provider's shape is passed through.
        assert_eq!(
            content(MessageType::Img, json!({"UUID": "1", "ImageFormat": 1})),
            json!({"UUID": "1", "ImageFormat": 1})
        );
    }

    #[test]
    fn group_bodies_carry_random_and_no_msg_key() {
        let msg = Message::text("jared", "@TGS#2J4SZEAEL", "hi").with_chat_type(ChatType::GroupChat);
        let ids = MsgIds {
            seq: 7,
            random: 9,
            time: 1,
        };
        let body = String::from_utf8(message_body(GROUP_AFTER, &msg, ids, 1000)).unwrap();
        assert_eq!(
            body,
            r#"{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":"@TGS#2J4SZEAEL","Type":"Public","From_Account":"jared","Operator_Account":"jared","Random":9,"MsgSeq":7,"MsgTime":1,"OnlineOnlyFlag":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}],"CloudCustomData":"","EventTime":1000}"#
        );
        let before = String::from_utf8(message_body(GROUP_BEFORE, &msg, ids, 1000)).unwrap();
        assert_eq!(
            before,
            r#"{"CallbackCommand":"Group.CallbackBeforeSendMsg","GroupId":"@TGS#2J4SZEAEL","Type":"Public","From_Account":"jared","Operator_Account":"jared","Random":9,"OnlineOnlyFlag":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}],"CloudCustomData":"","EventTime":1000}"#
        );
    }
}
