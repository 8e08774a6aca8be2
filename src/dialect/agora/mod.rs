//! The agora dialect — Agora Chat / Shengwang-Easemob (docs/behaviour.md §4.1, §4.2): signed
//! JSON bodies with `callId`, `eventType`, `timestamp` and `security`; the answer to a
//! post-send callback is not interpreted; a pre-send answer is `{"valid", "code", "payload"}`.
//!
//! - `body` — the bodies, fields in the provider's order;
//! - `sign` — the MD5 signature, and its check for receivers;
//! - `verdict` — reading a pre-send answer.

mod body;
mod sign;
mod verdict;

use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;

pub use self::body::SECURITY_VERSION;
pub use self::sign::{sign, sign_value, verify};
pub use self::verdict::INTERNAL_ERROR;
use super::{Checked, Defaults, Encoded, MessageFacts, Prepared, Recipient, Signature, Verdict, Wire};
use crate::domain::{EventType, MessageType, RuleKind};
use crate::event::{Event, Stamp};

/// The provider's defaults: a post-send attempt waits up to 60 s, a failed one is retried
/// once at once, failures ban the rule; a pre-send verdict is waited for 200 ms; rules sign
/// with their secret (docs/providers.md).
pub const DEFAULTS: Defaults = Defaults {
    timeout: Duration::from_secs(60),
    retries: 1,
    bans: true,
    pre_send_timeout: Duration::from_millis(200),
    signs: true,
};

/// The agora wire format of one app.
#[derive(Debug, Clone, Default)]
pub struct Agora {
    /// The app's `appkey`, in event bodies.
    pub appkey: String,
    /// Group events in the older `chat_type: "muc"` shape.
    pub legacy_groups: bool,
}

impl Wire for Agora {
    fn message<'a>(&self, facts: MessageFacts<'a>, kind: RuleKind) -> Box<dyn Prepared + 'a> {
        let msg = facts.msg;
        let mut recipients = Vec::with_capacity(1 + msg.offline.len());
        recipients.push(Recipient {
            event_type: EventType::Chat,
            to: msg.to.as_str(),
        });
        // A pre-send rule is asked once, about the message itself.
        if kind == RuleKind::PostSend {
            recipients.extend(msg.offline.iter().map(|r| Recipient {
                event_type: EventType::ChatOffline,
                to: r.as_str(),
            }));
        }
        Box::new(PreparedMessage {
            facts,
            payload: body::payload(msg),
            recipients,
        })
    }

    fn event<'a>(&self, event: &'a Event, stamp: &'a Stamp) -> Box<dyn Prepared + 'a> {
        let recipients = if event.def().agora.is_some() {
            event
                .agora_targets(self.legacy_groups)
                .into_iter()
                .map(|to| Recipient {
                    event_type: event.event_type(),
                    to,
                })
                .collect()
        } else {
            Vec::new()
        };
        Box::new(PreparedEvent {
            event,
            stamp,
            wire: self.clone(),
            recipients,
        })
    }

    fn reads_answers(&self) -> bool {
        false
    }

    fn check_answer(&self, _body: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn pre_send_verdict(&self, body: &[u8], msg_type: MessageType, rule: &str) -> Result<Verdict, String> {
        verdict::read(body, msg_type, rule)
    }

    fn pre_send_failure_text(&self) -> &'static str {
        INTERNAL_ERROR
    }

    fn check_received<'b>(&self, _query: Option<&str>, body: &'b [u8], secret: Option<&str>) -> Checked<'b> {
        let Ok(head) = serde_json::from_slice::<sign::Head>(body) else {
            return Checked {
                signature: Signature::Unparsable,
                dedupe_key: None,
            };
        };
        Checked {
            signature: secret.map_or(Signature::Unchecked, |s| head.check(s)),
            dedupe_key: head.call_id,
        }
    }

    fn receiver_answer(&self, _ok: bool) -> &'static str {
        ""
    }

    fn resign(&self, edited: &[u8], secret: &str) -> Result<Bytes, String> {
        let mut fields = super::edited_object(edited)?;
        if !fields.get("callId").is_some_and(serde_json::Value::is_string) {
            return Err("the body needs a string `callId`: the signature is made of it".into());
        }
        if !fields.get("timestamp").is_some_and(serde_json::Value::is_u64) {
            return Err("the body needs a whole-number `timestamp` (Unix ms): the signature is made of it".into());
        }
        if !fields.contains_key("security") && !fields.contains_key("securityVersion") {
            fields.insert("securityVersion".into(), SECURITY_VERSION.into());
        }
        let mut body = serde_json::Value::Object(fields);
        sign_value(&mut body, secret, false);
        Ok(Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes")))
    }
}

/// A message: its payload serialized once; one body per callback, signed for its rule.
struct PreparedMessage<'a> {
    facts: MessageFacts<'a>,
    payload: Box<RawValue>,
    recipients: Vec<Recipient<'a>>,
}

impl Prepared for PreparedMessage<'_> {
    fn recipients(&self) -> &[Recipient<'_>] {
        &self.recipients
    }

    fn encode(&self, to: Recipient<'_>, call_id: &str, secret: &str) -> Encoded {
        let f = &self.facts;
        let security = sign(call_id, secret, f.timestamp);
        let body = body::CallbackBody {
            call_id,
            event_type: to.event_type.as_str(),
            timestamp: f.timestamp,
            chat_type: body::wire_chat_type(f.msg.chat_type),
            group_id: f.msg.group_id(),
            from: &f.msg.from,
            to: to.to,
            msg_id: f.msg_id,
            payload: &self.payload,
            security_version: SECURITY_VERSION,
            security: &security,
        }
        .to_bytes();
        let body = match &f.msg.overrides {
            None => body,
            // The slow path, only for messages with overrides: merge, then sign what is sent.
            Some(o) => {
                let mut v: serde_json::Value = serde_json::from_slice(&body).expect("a body we built parses");
                crate::event::merge(&mut v, o);
                sign_value(&mut v, secret, o.contains_key("security"));
                serde_json::to_vec(&v).expect("a JSON value serializes")
            }
        };
        Encoded {
            body: Bytes::from(body),
            query: None,
        }
    }
}

/// An event: its catalog body, overrides merged, signed per callback.
struct PreparedEvent<'a> {
    event: &'a Event,
    stamp: &'a Stamp,
    wire: Agora,
    recipients: Vec<Recipient<'a>>,
}

impl Prepared for PreparedEvent<'_> {
    fn recipients(&self) -> &[Recipient<'_>] {
        &self.recipients
    }

    fn encode(&self, to: Recipient<'_>, call_id: &str, secret: &str) -> Encoded {
        let w = &self.wire;
        let mut body = self
            .event
            .agora_body(self.stamp, &w.appkey, call_id, w.legacy_groups, Some(to.to))
            .unwrap_or_default();
        let overridden = self.event.overrides().is_some_and(|o| o.contains_key("security"));
        sign_value(&mut body, secret, overridden);
        Encoded {
            body: Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes")),
            query: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Wire;

    #[test]
    fn an_edited_body_is_signed_again_from_its_own_call_id_and_timestamp() {
        let edited = r#"{
            "callId": "a#2", "eventType": "chat", "timestamp": 7,
            "payload": {"bodies": [{"type": "txt", "msg": "edited"}], "ext": {}},
            "securityVersion": "1.0.0", "security": "stale"
        }"#;
        let body = Agora::default().resign(edited.as_bytes(), "s").unwrap();
        let expected = format!(
            r#"{{"callId":"a#2","eventType":"chat","timestamp":7,"payload":{{"bodies":[{{"type":"txt","msg":"edited"}}],"ext":{{}}}},"securityVersion":"1.0.0","security":"{}"}}"#,
            sign("a#2", "s", 7)
        );
        assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
        assert_eq!(
            Agora::default().check_received(None, &body, Some("s")).signature,
            Signature::Valid
        );
        let unsigned = Agora::default()
            .resign(br#"{"callId":"a#3","timestamp":9}"#, "s")
            .unwrap();
        assert!(std::str::from_utf8(&unsigned).unwrap().ends_with(&format!(
            r#""securityVersion":"1.0.0","security":"{}"}}"#,
            sign("a#3", "s", 9)
        )));
        for (bad, says) in [
            (r#"{"timestamp":1}"#, "callId"),
            (r#"{"callId":"x","timestamp":"1"}"#, "timestamp"),
            ("[]", "JSON object"),
        ] {
            let e = Agora::default().resign(bad.as_bytes(), "s").unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn receivers_check_the_signature_and_dedupe_by_call_id() {
        let security = sign("a#1", "s", 5);
        let body = format!(r#"{{"callId":"a#1","timestamp":5,"security":"{security}"}}"#);
        let c = Agora::default().check_received(None, body.as_bytes(), Some("s"));
        assert_eq!(c.signature, Signature::Valid);
        assert_eq!(c.dedupe_key.as_deref(), Some("a#1"));
        assert_eq!(
            Agora::default()
                .check_received(None, body.as_bytes(), Some("x"))
                .signature,
            Signature::Invalid
        );
        assert_eq!(
            Agora::default().check_received(None, body.as_bytes(), None).signature,
            Signature::Unchecked
        );
        assert_eq!(
            Agora::default().check_received(None, b"[", None).signature,
            Signature::Unparsable
        );
    }

    #[test]
    fn a_message_makes_a_chat_callback_and_one_per_offline_recipient_after_sending() {
        let mut msg = crate::message::Message::text("a", "b", "hi");
        msg.offline = vec!["c".into(), "d".into()];
        let facts = MessageFacts {
            msg: &msg,
            msg_id: "1",
            timestamp: 7,
            seq: 1,
            random: 2,
        };
        let post = Agora::default().message(facts, RuleKind::PostSend);
        let kinds: Vec<_> = post.recipients().iter().map(|r| (r.event_type, r.to)).collect();
        assert_eq!(
            kinds,
            [
                (EventType::Chat, "b"),
                (EventType::ChatOffline, "c"),
                (EventType::ChatOffline, "d")
            ]
        );
        assert_eq!(Agora::default().message(facts, RuleKind::PreSend).recipients().len(), 1);
        let enc = post.encode(post.recipients()[1], "app#x", "s");
        let v: serde_json::Value = serde_json::from_slice(&enc.body).unwrap();
        assert_eq!(
            (v["eventType"].as_str(), v["to"].as_str()),
            (Some("chat_offline"), Some("c"))
        );
        assert_eq!(v["security"], sign("app#x", "s", 7));
        assert!(enc.query.is_none());
    }
}
