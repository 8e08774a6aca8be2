//! A message sent in the simulated IM world (SPEC §3), parsed once from its REST JSON.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::domain::{ChatType, MessageType, Platform, Source};

/// Longest user or group id accepted (Easemob user ids are at most 64 characters;
/// generous for other systems' ids).
pub const MAX_ID_CHARS: usize = 256;
/// Most offline recipients one message may name: each becomes a callback per rule.
pub const MAX_OFFLINE: usize = 10_000;

/// A validated message, ready to fan out into callbacks.
#[derive(Debug, Clone)]
pub struct Message {
    /// The sender's user id (`from` on the wire; tencent `From_Account`).
    pub from: String,
    /// The recipient: a user id for `chat`, else the group or chatroom id (agora `to` and
    /// `group_id`; tencent `To_Account` or `GroupId`).
    pub to: String,
    /// One-to-one, group or chatroom; picks the wire `chat_type` and the tencent command.
    pub chat_type: ChatType,
    /// The body type (`type` in the request and in `payload.bodies[0]`).
    pub msg_type: MessageType,
    /// The message body fields besides `type`: `{"msg": ...}` for txt, the object given otherwise.
    pub body: Map<String, Value>,
    /// Custom extension fields (`payload.ext`; tencent `CloudCustomData`), empty if none.
    pub ext: Map<String, Value>,
    /// `client` (pre-send rules apply) or `rest` (tencent `OptPlatform=RESTAPI`).
    pub source: Source,
    /// The sender's platform, if given (tencent `OptPlatform`).
    pub platform: Option<Platform>,
    /// The sender's address, if given (tencent `ClientIP`; a default is used when absent).
    pub client_ip: Option<IpAddr>,
    /// Recipients that are offline: each gets a `chat_offline` callback per post-send rule.
    pub offline: Vec<String>,
}

/// Why a message was refused; `field` names the JSON field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct MessageError {
    /// The JSON field at fault, e.g. `chat_type`, `offline[3]`, or `(body)` for the whole body.
    pub field: String,
    /// What is wrong with it, as a sentence fragment (the 400 answer's description).
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> MessageError {
    MessageError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The REST request body of `POST /app-id/{app_id}/messages` (SPEC §8.3).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// `from` (required): the sender, 1 to [`MAX_ID_CHARS`] characters.
    #[schema(min_length = 1, max_length = 256)]
    pub from: String,
    /// `to` (required): the recipient user, group or chatroom id.
    #[schema(min_length = 1, max_length = 256)]
    pub to: String,
    /// `chat_type`: `chat` (default), `groupchat` or `chatroom`.
    #[serde(default)]
    pub chat_type: Option<ChatType>,
    /// `type`: `txt` (default), `img`, `audio`, `video`, `file`, `loc`, `cmd` or `custom`.
    #[serde(rename = "type", default)]
    pub msg_type: Option<MessageType>,
    /// `msg`: the text of a `txt` message (or give it as `body.msg`, not both).
    #[serde(default)]
    pub msg: Option<String>,
    /// `body`: the content object of a non-text message (e.g. `url`, `filename`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub body: Option<Map<String, Value>>,
    /// `ext`: custom extension fields, passed through in `payload.ext`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub ext: Option<Map<String, Value>>,
    /// `source`: `client` (default) or `rest`.
    #[serde(default)]
    pub source: Option<Source>,
    /// `platform`: a [`Platform`] name such as `Android`.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// `client_ip`: an IPv4 or IPv6 address.
    #[serde(default)]
    pub client_ip: Option<String>,
    /// `offline`: up to [`MAX_OFFLINE`] offline recipients.
    #[serde(default)]
    pub offline: Option<Vec<String>>,
}

/// Parses a REST body that must be a JSON object into `T`; errors name the offending field.
pub fn parse_json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, MessageError> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(bad("(body)", "must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return bad("(body)", format!("is not valid JSON: {inner}"));
        }
        let reason = inner.to_string();
        let field = match (path.as_str(), missing_field(&reason)) {
            (".", Some(name)) => name.to_string(),
            (".", None) => "(body)".to_string(),
            _ => path,
        };
        bad(&field, reason)
    })
}

/// serde names a missing field only in its message: "missing field `from` at line 1 ...".
fn missing_field(reason: &str) -> Option<&str> {
    reason.strip_prefix("missing field `")?.split('`').next()
}

fn check_id(field: &str, v: &str) -> Result<(), MessageError> {
    if v.is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if v.chars().count() > MAX_ID_CHARS {
        return Err(bad(field, format!("must be at most {MAX_ID_CHARS} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(bad(field, "must not contain control characters"));
    }
    Ok(())
}

impl MessageRequest {
    /// Parses a JSON body; errors name the offending field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, MessageError> {
        parse_json_object(bytes)
    }

    /// Checks the request and builds the message. Defaults: `chat_type` chat, `type` txt,
    /// `source` client (a message from a client SDK, so pre-send rules apply).
    pub fn into_message(self) -> Result<Message, MessageError> {
        check_id("from", &self.from)?;
        check_id("to", &self.to)?;
        let chat_type = self.chat_type.unwrap_or(ChatType::Chat);
        let msg_type = self.msg_type.unwrap_or(MessageType::Txt);
        let body = match (msg_type, self.msg, self.body) {
            (MessageType::Txt, Some(_), Some(_)) => {
                return Err(bad("msg", "give the text either as `msg` or as `body.msg`, not both"));
            }
            (MessageType::Txt, Some(text), None) => {
                let mut m = Map::new();
                m.insert("msg".into(), Value::String(text));
                m
            }
            (MessageType::Txt, None, Some(body)) => {
                if !matches!(body.get("msg"), Some(Value::String(_))) {
                    return Err(bad("body.msg", "a txt message needs its text as a string"));
                }
                body
            }
            (MessageType::Txt, None, None) => {
                return Err(bad("msg", "a txt message needs `msg`, the text"));
            }
            (_, Some(_), _) => {
                return Err(bad(
                    "msg",
                    format!("`msg` is for txt messages; a {msg_type} message takes its content in `body`"),
                ));
            }
            (_, None, Some(body)) => body,
            (_, None, None) => {
                return Err(bad(
                    "body",
                    format!("a {msg_type} message needs `body`, an object with its content (e.g. url, filename)"),
                ));
            }
        };
        if let Some(t) = body.get("type")
            && t.as_str() != Some(msg_type.as_str())
        {
            return Err(bad(
                "body.type",
                format!("must be absent or equal to the message type {:?}", msg_type.as_str()),
            ));
        }
        let client_ip = match self.client_ip {
            None => None,
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| bad("client_ip", format!("must be an IPv4 or IPv6 address, got {ip:?}")))?,
            ),
        };
        let offline = self.offline.unwrap_or_default();
        if offline.len() > MAX_OFFLINE {
            return Err(bad(
                "offline",
                format!("at most {MAX_OFFLINE} recipients, got {}", offline.len()),
            ));
        }
        for (i, r) in offline.iter().enumerate() {
            check_id(&format!("offline[{i}]"), r)?;
        }
        Ok(Message {
            from: self.from,
            to: self.to,
            chat_type,
            msg_type,
            body,
            ext: self.ext.unwrap_or_default(),
            source: self.source.unwrap_or(Source::Client),
            platform: self.platform,
            client_ip,
            offline,
        })
    }
}

impl Message {
    /// A text message from `from` to `to`, for code that builds messages directly.
    pub fn text(from: &str, to: &str, text: &str) -> Self {
        let mut body = Map::new();
        body.insert("msg".into(), Value::String(text.into()));
        Message {
            from: from.into(),
            to: to.into(),
            chat_type: ChatType::Chat,
            msg_type: MessageType::Txt,
            body,
            ext: Map::new(),
            source: Source::Client,
            platform: None,
            client_ip: None,
            offline: Vec::new(),
        }
    }

    /// The `group_id` on the wire: the message's `to` for groups and chatrooms.
    pub(crate) fn group_id(&self) -> Option<&str> {
        match self.chat_type {
            ChatType::Chat => None,
            ChatType::GroupChat | ChatType::ChatRoom => Some(&self.to),
        }
    }

    /// The agora `payload`: `{"bodies": [{"type": ..., ...body}], "ext": {...}}`, serialized once
    /// per message and shared by all its callbacks.
    pub(crate) fn agora_payload(&self) -> Box<RawValue> {
        #[derive(serde::Serialize)]
        struct BodyItem<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(flatten)]
            fields: &'a Map<String, Value>,
        }
        #[derive(serde::Serialize)]
        struct Payload<'a> {
            bodies: [BodyItem<'a>; 1],
            ext: &'a Map<String, Value>,
        }
        let mut fields = std::borrow::Cow::Borrowed(&self.body);
        if fields.contains_key("type") {
            fields.to_mut().remove("type");
        }
        let payload = Payload {
            bodies: [BodyItem {
                kind: self.msg_type.as_str(),
                fields: &fields,
            }],
            ext: &self.ext,
        };
        serde_json::value::to_raw_value(&payload).expect("a payload always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Message, MessageError> {
        MessageRequest::from_json(json.as_bytes())?.into_message()
    }

    #[test]
    fn text_message_defaults() {
        let m = parse(r#"{"from":"u1","to":"u2","msg":"hello"}"#).unwrap();
        assert_eq!(m.chat_type, ChatType::Chat);
        assert_eq!(m.source, Source::Client);
        assert_eq!(
            m.agora_payload().get(),
            r#"{"bodies":[{"type":"txt","msg":"hello"}],"ext":{}}"#
        );
        assert_eq!(m.group_id(), None);
    }

    #[test]
    fn other_types_take_a_body_and_keep_ext() {
        let m = parse(r#"{"from":"u1","to":"g1","chat_type":"groupchat","type":"img","body":{"url":"http://x/1.png","filename":"1.png"},"ext":{"k":1}}"#).unwrap();
        assert_eq!(m.group_id(), Some("g1"));
        assert_eq!(
            m.agora_payload().get(),
            r#"{"bodies":[{"type":"img","filename":"1.png","url":"http://x/1.png"}],"ext":{"k":1}}"#
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(parse(r#"{"from":"u1","to":"u2"}"#).unwrap_err().field, "msg");
        assert_eq!(
            parse(r#"{"from":"u1","to":"u2","type":"img"}"#).unwrap_err().field,
            "body"
        );
        assert_eq!(parse(r#"{"from":"","to":"u2","msg":"x"}"#).unwrap_err().field, "from");
        assert_eq!(
            parse(r#"{"from":"u1","to":"u2","msg":"x","chat_type":"dm"}"#)
                .unwrap_err()
                .field,
            "chat_type"
        );
        assert_eq!(
            parse(r#"{"from":"u1","to":"u2","msg":"x","offline":["a",""]}"#)
                .unwrap_err()
                .field,
            "offline[1]"
        );
        assert_eq!(
            parse(r#"{"from":"u1","to":"u2","msg":"x","client_ip":"nope"}"#)
                .unwrap_err()
                .field,
            "client_ip"
        );
        assert_eq!(
            parse(r#"{"from":"u1","to":"u2","msg":"x","colour":1}"#)
                .unwrap_err()
                .field,
            "colour"
        );
        assert_eq!(parse(r#"{"to":"u2","msg":"x"}"#).unwrap_err().field, "from");
        assert_eq!(parse(r#"[1]"#).unwrap_err().field, "(body)");
        assert_eq!(parse(r#"{"from":"u1","to":"u2","msg":7}"#).unwrap_err().field, "msg");
    }
}
