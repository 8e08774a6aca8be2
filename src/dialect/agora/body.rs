//! The agora bodies (docs/behaviour.md §4.1): fields in the provider's order, serialized once
//! per callback.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::message::Message;

/// `securityVersion` is always "1.0.0" (the provider's documentation: "currently 1.0.0").
pub const SECURITY_VERSION: &str = "1.0.0";

/// The `payload` of a message callback: `{"bodies": [{"type": ..., ...body}], "ext": {...}}`,
/// serialized once per message and shared by all its callbacks.
pub fn payload(msg: &Message) -> Box<RawValue> {
    #[derive(Serialize)]
    struct BodyItem<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(flatten)]
        fields: &'a Map<String, Value>,
    }
    #[derive(Serialize)]
    struct Payload<'a> {
        bodies: [BodyItem<'a>; 1],
        ext: &'a Map<String, Value>,
    }
    let mut fields = std::borrow::Cow::Borrowed(&msg.body);
    if fields.contains_key("type") {
        fields.to_mut().remove("type");
    }
    let payload = Payload {
        bodies: [BodyItem {
            kind: msg.msg_type.as_str(),
            fields: &fields,
        }],
        ext: &msg.ext,
    };
    serde_json::value::to_raw_value(&payload).expect("a payload always serializes")
}

/// `chat_type` on the agora wire: `chat`, or `groupchat` for groups and chatrooms alike.
pub fn wire_chat_type(chat_type: crate::domain::ChatType) -> &'static str {
    match chat_type {
        crate::domain::ChatType::Chat => "chat",
        _ => "groupchat",
    }
}

/// The JSON body of a post-send (and pre-send) callback, fields in the provider's order.
#[derive(Serialize)]
pub struct CallbackBody<'a> {
    /// `callId`: `{app_id}#{uuid}`, unique per callback, the same across retries and replays.
    #[serde(rename = "callId")]
    pub call_id: &'a str,
    /// `eventType`: `chat` or `chat_offline` ([`EventType`](crate::domain::EventType)).
    #[serde(rename = "eventType")]
    pub event_type: &'a str,
    /// `timestamp`: Unix time in milliseconds at which the simulator received the message.
    pub timestamp: u64,
    /// `chat_type` on the wire: `chat`, or `groupchat` for both groups and chatrooms.
    pub chat_type: &'a str,
    /// `group_id`: the message's `to`, for groups and chatrooms only (omitted for `chat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<&'a str>,
    /// `from`: the sender's user id.
    pub from: &'a str,
    /// `to`: the recipient (user or group); on `chat_offline`, the offline recipient.
    pub to: &'a str,
    /// `msg_id`: the message's id, shared by all its callbacks.
    pub msg_id: &'a str,
    /// `payload`: `{"bodies": [...], "ext": {...}}`, already serialized (possibly as rewritten
    /// by a pre-send rule).
    pub payload: &'a RawValue,
    /// `securityVersion`: always [`SECURITY_VERSION`].
    #[serde(rename = "securityVersion")]
    pub security_version: &'static str,
    /// `security`: [`sign`](super::sign) of `callId`, the rule's secret and `timestamp`.
    pub security: &'a str,
}

impl CallbackBody<'_> {
    /// Serializes the body; it cannot fail for these field types.
    pub fn to_bytes(&self) -> Vec<u8> {
        // One allocation: the payload plus room for the other fields (about 300 bytes).
        let mut out =
            Vec::with_capacity(self.payload.get().len() + 320 + self.call_id.len() + self.from.len() + self.to.len());
        serde_json::to_writer(&mut out, self).expect("a callback body always serializes");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_provider_field_order() {
        let payload = RawValue::from_string(r#"{"bodies":[{"type":"txt","msg":"hi"}],"ext":{}}"#.into()).unwrap();
        let body = CallbackBody {
            call_id: "demo#1",
            event_type: "chat",
            timestamp: 1,
            chat_type: "chat",
            group_id: None,
            from: "a",
            to: "b",
            msg_id: "9",
            payload: &payload,
            security_version: SECURITY_VERSION,
            security: "x",
        };
        let text = String::from_utf8(body.to_bytes()).unwrap();
        assert_eq!(
            text,
            r#"{"callId":"demo#1","eventType":"chat","timestamp":1,"chat_type":"chat","from":"a","to":"b","msg_id":"9","payload":{"bodies":[{"type":"txt","msg":"hi"}],"ext":{}},"securityVersion":"1.0.0","security":"x"}"#
        );
    }
}

#[cfg(test)]
mod payload_tests {
    use super::*;

    #[test]
    fn text_and_other_payloads() {
        let m = Message::text("u1", "u2", "hello");
        assert_eq!(
            payload(&m).get(),
            r#"{"bodies":[{"type":"txt","msg":"hello"}],"ext":{}}"#
        );
    }
}
