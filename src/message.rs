//! A message sent in the simulated IM world (`docs/behaviour.md §3`): parsed once from its REST
//! JSON ([`MessageRequest`]) or built in code ([`Message::text`], [`Message::new`] and the
//! `with_*` setters). Both go through [`Message::check`], which holds every rule a message
//! obeys, so a message built in code is held to the same rules as one from REST.

use std::collections::HashSet;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::{ChatType, MessageType, Platform, Source};

/// Longest user or group id accepted (Easemob user ids are at most 64 characters;
/// generous for other systems' ids).
pub const MAX_ID_CHARS: usize = 256;
/// Most offline recipients one message may name: each becomes a callback per rule.
pub const MAX_OFFLINE: usize = 10_000;

/// A message, ready to fan out into callbacks once [`check`](Message::check)ed.
///
/// ```
/// use callback_sim::{ChatType, Message};
///
/// let m = Message::text("alice", "team", "standup in 5")
///     .with_chat_type(ChatType::GroupChat)
///     .with_offline(["carol"]);
/// assert!(m.check().is_ok());
/// assert_eq!(m.offline(), ["carol"]);
/// assert_eq!(Message::text("", "bob", "hi").check().unwrap_err().field, "from");
/// ```
#[derive(Debug, Clone)]
pub struct Message {
    /// The sender's user id (`from` on the wire; tencent `From_Account`).
    pub(crate) from: String,
    /// The recipient: a user id for `chat`, else the group or chatroom id (agora `to` and
    /// `group_id`; tencent `To_Account` or `GroupId`).
    pub(crate) to: String,
    /// One-to-one, group or chatroom; picks the wire `chat_type` and the tencent command.
    pub(crate) chat_type: ChatType,
    /// The body type (`type` in the request and in `payload.bodies[0]`).
    pub(crate) msg_type: MessageType,
    /// The body fields: `{"msg": ...}` for txt, the object given otherwise. A `type` among them
    /// equals `msg_type` ([`Message::check`]) and is not repeated in the agora body item.
    pub(crate) body: Map<String, Value>,
    /// Custom extension fields (`payload.ext`; tencent `CloudCustomData`), empty if none.
    pub(crate) ext: Map<String, Value>,
    /// `client` (pre-send rules apply) or `rest` (tencent `OptPlatform=RESTAPI`).
    pub(crate) source: Source,
    /// The sender's platform, if given (tencent `OptPlatform`).
    pub(crate) platform: Option<Platform>,
    /// The sender's address, if given (tencent `ClientIP`; a default is used when absent).
    pub(crate) client_ip: Option<IpAddr>,
    /// Recipients that are offline: each gets a `chat_offline` callback per post-send rule.
    /// Each is listed once, and the sender never ([`distinct_offline`]).
    pub(crate) offline: Vec<String>,
    /// Deep-merged into every post-send wire body before signing (docs/behaviour.md §11.1):
    /// the user's `overrides`, or a tencent before-command's `MsgBody`/`CloudCustomData`.
    pub(crate) overrides: Option<Map<String, Value>>,
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

/// The REST request body of `POST /app-id/{app_id}/messages` (`docs/behaviour.md §8.3`).
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
    /// `body`: the content object of a non-text message (e.g. `url`, `filename`), or a txt
    /// message's `{"msg": ...}`.
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
    /// `overrides`: a JSON object deep-merged into each post-send wire body before it is
    /// signed (objects merge key by key, `null` removes a key).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub overrides: Option<Map<String, Value>>,
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
    ///
    /// What only a request can get wrong (`msg` and `body` both or neither, `msg` on a non-text
    /// message, a `client_ip` that is no address) is checked here; everything else by
    /// [`Message::check`].
    pub fn into_message(self) -> Result<Message, MessageError> {
        let msg_type = self.msg_type.unwrap_or(MessageType::Txt);
        let body = match (msg_type, self.msg, self.body) {
            (MessageType::Txt, Some(_), Some(_)) => {
                return Err(bad("msg", "give the text either as `msg` or as `body.msg`, not both"));
            }
            (MessageType::Txt, Some(text), None) => text_body(text),
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
        let client_ip = match self.client_ip {
            None => None,
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| bad("client_ip", format!("must be an IPv4 or IPv6 address, got {ip:?}")))?,
            ),
        };
        let mut message = Message {
            from: self.from,
            to: self.to,
            chat_type: self.chat_type.unwrap_or(ChatType::Chat),
            msg_type,
            body,
            ext: self.ext.unwrap_or_default(),
            source: self.source.unwrap_or(Source::Client),
            platform: self.platform,
            client_ip,
            offline: self.offline.unwrap_or_default(),
            overrides: self.overrides,
        };
        message.check()?;
        distinct_offline(&message.from, &mut message.offline);
        Ok(message)
    }
}

/// Keeps each offline recipient once, in the order first given, and drops the sender, who is
/// never offline to itself: one `chat_offline` callback per offline recipient, as the
/// provider sends them (docs/behaviour.md §3).
fn distinct_offline(from: &str, offline: &mut Vec<String>) {
    if offline.is_empty() {
        return;
    }
    let mut seen = HashSet::with_capacity(offline.len());
    offline.retain(|r| r != from && seen.insert(r.clone()));
}

/// `{"msg": text}`: the body of a text message.
fn text_body(text: String) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("msg".into(), Value::String(text));
    body
}

impl Message {
    /// A one-to-one text message from `from` to `to`, sent by a client SDK: the same as the
    /// REST body `{"from", "to", "msg": text}`.
    pub fn text(from: &str, to: &str, text: &str) -> Self {
        Self::new(from, to, MessageType::Txt, text_body(text.into()))
    }

    /// A one-to-one message of any type from a client SDK, with its `body` fields (for `txt`,
    /// `{"msg": "…"}`; otherwise e.g. `url`, `filename`): the REST body
    /// `{"from", "to", "type", "body"}`. [`check`](Self::check) says whether it is valid.
    pub fn new(from: &str, to: &str, msg_type: MessageType, body: Map<String, Value>) -> Self {
        Message {
            from: from.into(),
            to: to.into(),
            chat_type: ChatType::Chat,
            msg_type,
            body,
            ext: Map::new(),
            source: Source::Client,
            platform: None,
            client_ip: None,
            offline: Vec::new(),
            overrides: None,
        }
    }

    /// `overrides`: deep-merged into each post-send wire body before signing
    /// (docs/behaviour.md §11.1).
    pub fn with_overrides(mut self, overrides: Map<String, Value>) -> Self {
        self.overrides = Some(overrides);
        self
    }

    /// `chat_type`: sent to a user (`chat`, the default), a group or a chatroom, whose id is
    /// then `to`.
    pub fn with_chat_type(mut self, chat_type: ChatType) -> Self {
        self.chat_type = chat_type;
        self
    }

    /// `ext`: custom extension fields, passed through in the callbacks (agora `payload.ext`,
    /// tencent `CloudCustomData`).
    pub fn with_ext(mut self, ext: Map<String, Value>) -> Self {
        self.ext = ext;
        self
    }

    /// `source`: sent by a client SDK (the default; pre-send rules are asked) or through the
    /// provider's REST API.
    pub fn with_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// `platform`: the sender's platform (tencent `OptPlatform`).
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// `client_ip`: the sender's address (tencent `ClientIP`).
    pub fn with_client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// `offline`: recipients that are offline, each of which gets a `chat_offline` callback
    /// per post-send rule (at most [`MAX_OFFLINE`]). A recipient listed twice counts once, and
    /// the sender is left out: it is not offline to itself.
    pub fn with_offline<I>(mut self, recipients: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.offline = recipients.into_iter().map(Into::into).collect();
        distinct_offline(&self.from, &mut self.offline);
        self
    }

    /// Every rule a message obeys, whether it came from REST or was built in code: `from`,
    /// `to` and each `offline` recipient are 1 to [`MAX_ID_CHARS`] characters without control
    /// characters; a `txt` message has its text as a string `msg` in its body; a `type` in the
    /// body equals the message type; at most [`MAX_OFFLINE`] offline recipients. The error
    /// names the field as the REST body would.
    pub fn check(&self) -> Result<(), MessageError> {
        check_id("from", &self.from)?;
        check_id("to", &self.to)?;
        if self.msg_type == MessageType::Txt && !matches!(self.body.get("msg"), Some(Value::String(_))) {
            return Err(bad("body.msg", "a txt message needs its text as a string"));
        }
        if let Some(t) = self.body.get("type")
            && t.as_str() != Some(self.msg_type.as_str())
        {
            return Err(bad(
                "body.type",
                format!(
                    "must be absent or equal to the message type {:?}",
                    self.msg_type.as_str()
                ),
            ));
        }
        if self.offline.len() > MAX_OFFLINE {
            return Err(bad(
                "offline",
                format!("at most {MAX_OFFLINE} recipients, got {}", self.offline.len()),
            ));
        }
        for (i, r) in self.offline.iter().enumerate() {
            check_id(&format!("offline[{i}]"), r)?;
        }
        Ok(())
    }

    /// The sender's user id (`from` on the wire; tencent `From_Account`).
    pub fn from(&self) -> &str {
        &self.from
    }

    /// The recipient: a user id for `chat`, else the group or chatroom id.
    pub fn to(&self) -> &str {
        &self.to
    }

    /// One-to-one, group or chatroom.
    pub fn chat_type(&self) -> ChatType {
        self.chat_type
    }

    /// The body type.
    pub fn msg_type(&self) -> MessageType {
        self.msg_type
    }

    /// The body fields: `{"msg": ...}` for txt, the object given otherwise.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    /// Custom extension fields, empty if none.
    pub fn ext(&self) -> &Map<String, Value> {
        &self.ext
    }

    /// Sent by a client SDK or through the provider's REST API.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The sender's platform, if given.
    pub fn platform(&self) -> Option<Platform> {
        self.platform
    }

    /// The sender's address, if given.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// The offline recipients.
    pub fn offline(&self) -> &[String] {
        &self.offline
    }

    /// The `group_id` on the wire: the message's `to` for groups and chatrooms.
    pub(crate) fn group_id(&self) -> Option<&str> {
        match self.chat_type {
            ChatType::Chat => None,
            ChatType::GroupChat | ChatType::ChatRoom => Some(&self.to),
        }
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
        assert_eq!(m.body["msg"], "hello");
        assert_eq!(m.group_id(), None);
    }

    #[test]
    fn other_types_take_a_body_and_keep_ext() {
        let m = parse(r#"{"from":"u1","to":"g1","chat_type":"groupchat","type":"img","body":{"url":"http://x/1.png","filename":"1.png"},"ext":{"k":1}}"#).unwrap();
        assert_eq!(m.group_id(), Some("g1"));
        assert_eq!(
            (m.msg_type, m.body.len(), &m.ext["k"]),
            (MessageType::Img, 2, &Value::from(1))
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
        assert_eq!(
            parse(r#"{"from":"u1","to":"u2","body":{"msg":7}}"#).unwrap_err().field,
            "body.msg"
        );
        assert_eq!(
            parse(r#"{"from":"u1","to":"u2","type":"img","body":{"type":"txt"}}"#)
                .unwrap_err()
                .field,
            "body.type"
        );
    }

    #[test]
    fn offline_recipients_count_once_and_never_include_the_sender() {
        let m =
            parse(r#"{"from":"u1","to":"g1","chat_type":"groupchat","msg":"x","offline":["a","u1","b","a","b","c"]}"#)
                .unwrap();
        assert_eq!(m.offline(), ["a", "b", "c"]);
        let m = Message::text("u1", "u2", "x").with_offline(["u2", "u1", "u2"]);
        assert_eq!(m.offline(), ["u2"]);
        // Ids are checked as given, so an error names the index the client sent.
        let e = parse(r#"{"from":"u1","to":"u2","msg":"x","offline":["a","a",""]}"#).unwrap_err();
        assert_eq!(e.field, "offline[2]");
    }

    #[test]
    fn messages_built_in_code_are_checked_like_rest_ones() {
        let ok = Message::text("alice", "bob", "hi");
        assert!(ok.check().is_ok());
        let field = |m: Message| m.check().unwrap_err().field;
        assert_eq!(field(Message::text("alice", "", "hi")), "to");
        assert_eq!(field(Message::text(&"a".repeat(MAX_ID_CHARS + 1), "bob", "hi")), "from");
        assert_eq!(field(Message::text("al\nice", "bob", "hi")), "from");
        assert_eq!(
            field(Message::new("alice", "bob", MessageType::Txt, Map::new())),
            "body.msg"
        );
        let mut body = Map::new();
        body.insert("type".into(), Value::String("txt".into()));
        assert_eq!(field(Message::new("alice", "bob", MessageType::Img, body)), "body.type");
        assert_eq!(field(ok.clone().with_offline(["carol", ""])), "offline[1]");
        let too_many = (0..=MAX_OFFLINE).map(|i| format!("u{i}"));
        assert_eq!(field(ok.clone().with_offline(too_many)), "offline");
        let full = ok
            .with_chat_type(ChatType::ChatRoom)
            .with_source(Source::Rest)
            .with_platform(Platform::Ios)
            .with_client_ip([10, 0, 0, 1].into())
            .with_ext(Map::from_iter([("k".to_string(), Value::from(1))]));
        assert!(full.check().is_ok());
        assert_eq!(full.group_id(), Some("bob"));
        assert_eq!(
            (full.from(), full.to(), full.chat_type(), full.msg_type(), full.source()),
            ("alice", "bob", ChatType::ChatRoom, MessageType::Txt, Source::Rest)
        );
        assert_eq!(full.platform(), Some(Platform::Ios));
        assert_eq!(full.client_ip(), Some([10, 0, 0, 1].into()));
        assert_eq!(full.body()["msg"], "hi");
        assert_eq!(full.ext()["k"], 1);
        assert!(full.offline().is_empty());
    }
}
