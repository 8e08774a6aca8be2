//! The tencent dialect — Tencent Cloud IM third-party callbacks (docs/behaviour.md §4.3): the
//! `CallbackCommand` and the app's `SdkAppid` travel in the query string, bodies are unsigned
//! (mutual TLS is how a receiver authenticates them), and every answer is
//! `{"ActionStatus","ErrorCode","ErrorInfo"}`.
//!
//! - `body` — the commands, the query string and the bodies.

mod body;

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

pub use self::body::{GROUP_MEMBER_JOIN, MsgIds, STATE_CHANGE, message_command, platform, query};
use super::{Checked, Defaults, Encoded, MessageFacts, Prepared, Recipient, Signature, Verdict, Wire};
use crate::domain::{MessageType, Platform, RuleKind};
use crate::event::Event;

/// The provider's defaults: every callback, before-commands included, waits at most 2 s and is
/// not retried; there are no bans and no signing secret (docs/providers.md).
pub const DEFAULTS: Defaults = Defaults {
    timeout: Duration::from_secs(2),
    retries: 0,
    bans: false,
    pre_send_timeout: Duration::from_millis(2000),
    signs: false,
};

/// `ClientIP` of a callback whose message or event names no address.
pub const DEFAULT_CLIENT_IP: &str = "127.0.0.1";

/// What the sender is told when a before-command with `on_failure = "block"` got no usable
/// answer (the same words as agora's, for want of a documented one: docs/decisions.md).
const INTERNAL_ERROR: &str = "custom internal error";

/// The success answer: `ErrorCode` 0 also allows a before-command's message.
pub const ANSWER_OK: &str = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#;
/// A refusal: `ErrorCode` 1 denies a before-command's message.
pub const ANSWER_FAIL: &str =
    r#"{"ActionStatus":"FAIL","ErrorCode":1,"ErrorInfo":"fault injected by callback-sim sink"}"#;

/// The tencent wire format of one app.
#[derive(Debug, Clone, Copy)]
pub struct Tencent {
    /// The app's `SdkAppid`, in every callback's query string.
    pub sdk_app_id: u64,
}

impl Wire for Tencent {
    fn message<'a>(&self, facts: MessageFacts<'a>, kind: RuleKind) -> Box<dyn Prepared + 'a> {
        let msg = facts.msg;
        let cmd = message_command(kind, msg.chat_type);
        let ids = MsgIds {
            seq: facts.seq,
            random: facts.random,
            time: facts.timestamp / 1000,
        };
        let ip = msg.client_ip.map(|ip| ip.to_string());
        let q = query(
            self.sdk_app_id,
            cmd,
            ip.as_deref().unwrap_or(DEFAULT_CLIENT_IP),
            platform(msg.source, msg.platform),
        );
        // Tencent has no offline callback: one command per rule, the same bytes for all.
        Box::new(Shared {
            encoded: Encoded {
                body: Bytes::from(body::message_body(cmd, msg, ids)),
                query: Some(q.into()),
            },
            recipients: [Recipient {
                event_type: crate::domain::EventType::Chat,
                to: msg.to.as_str(),
            }],
        })
    }

    fn event<'a>(&self, event: &'a Event, timestamp: u64) -> Box<dyn Prepared + 'a> {
        let (cmd, body, ip, platform) = match event {
            Event::UserStatus {
                user,
                online,
                platform,
                client_ip,
            } => (
                STATE_CHANGE,
                body::state_change_body(user, *online, timestamp),
                client_ip.map(|ip| ip.to_string()),
                platform.unwrap_or(Platform::Unknown),
            ),
            Event::GroupMemberJoined {
                group_id,
                members,
                operator,
                join_type,
                group_type,
            } => (
                GROUP_MEMBER_JOIN,
                body::member_join_body(group_id, group_type.as_str(), join_type.as_str(), operator, members),
                None,
                Platform::RestApi,
            ),
        };
        let q = query(
            self.sdk_app_id,
            cmd,
            ip.as_deref().unwrap_or(DEFAULT_CLIENT_IP),
            platform,
        );
        Box::new(Shared {
            encoded: Encoded {
                body: Bytes::from(body),
                query: Some(q.into()),
            },
            recipients: [Recipient {
                event_type: event.event_type(),
                to: event.subject(),
            }],
        })
    }

    fn reads_answers(&self) -> bool {
        true
    }

    fn check_answer(&self, body: &[u8]) -> Result<(), String> {
        parse_answer(body)
            .map(drop)
            .ok_or_else(|| "the answer is not a JSON object with an integer ErrorCode".into())
    }

    fn pre_send_verdict(&self, body: &[u8], _msg_type: MessageType, _rule: &str) -> Result<Verdict, String> {
        let a = parse_answer(body).ok_or("the answer is not a JSON object with an integer ErrorCode")?;
        Ok(Verdict {
            allow: a.error_code == 0,
            sender_text: a.error_info,
            rewrite: None,
            warnings: Vec::new(),
        })
    }

    fn pre_send_failure_text(&self) -> &'static str {
        INTERNAL_ERROR
    }

    fn check_received<'b>(&self, query: Option<&str>, body: &'b [u8], _secret: Option<&str>) -> Checked<'b> {
        let Ok(serde_json::Value::Object(body)) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Checked {
                signature: Signature::Unparsable,
                dedupe_key: None,
            };
        };
        // Tencent callbacks are unsigned: their query string is what a receiver can check.
        let command = body.get("CallbackCommand").and_then(|c| c.as_str()).unwrap_or_default();
        let dedupe_key = body
            .get("MsgKey")
            .and_then(|k| k.as_str())
            .map(|key| format!("{command}/{key}").into());
        let params: std::collections::HashMap<String, String> =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let ok = params
            .get("SdkAppid")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            && params.get("CallbackCommand").is_some_and(|c| c == command)
            && params.get("contenttype").is_some_and(|c| c == "json")
            && params
                .get("ClientIP")
                .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok())
            && params.get("OptPlatform").is_some_and(|p| Platform::parse(p).is_ok());
        Checked {
            signature: if ok { Signature::QueryOk } else { Signature::QueryBad },
            dedupe_key,
        }
    }

    fn receiver_answer(&self, ok: bool) -> &'static str {
        if ok { ANSWER_OK } else { ANSWER_FAIL }
    }

    fn resign(&self, edited: &[u8], _secret: &str) -> Result<Bytes, String> {
        // Unsigned (docs/behaviour.md §4.3): the body goes as edited, compact; the query string
        // stays the callback's.
        Ok(super::write_fields(&super::edited_fields(edited)?))
    }
}

/// A message or event whose callbacks all carry the same bytes.
struct Shared<'a> {
    encoded: Encoded,
    recipients: [Recipient<'a>; 1],
}

impl Prepared for Shared<'_> {
    fn recipients(&self) -> &[Recipient<'_>] {
        &self.recipients
    }

    fn encode(&self, _to: Recipient<'_>, _call_id: &str, _secret: &str) -> Encoded {
        self.encoded.clone()
    }
}

/// A parsed tencent answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Answer {
    /// `ActionStatus`: `OK` or `FAIL`, if present; informative only.
    #[serde(rename = "ActionStatus", default)]
    pub action_status: Option<String>,
    /// `ErrorCode`: 0 allows a before-command's message, anything else denies it.
    #[serde(rename = "ErrorCode")]
    pub error_code: i64,
    /// `ErrorInfo`: on a deny, the text the sender is told (with `notify_sender`).
    #[serde(rename = "ErrorInfo", default)]
    pub error_info: Option<String>,
}

/// Parses an answer: a JSON object with an integer `ErrorCode` (`ActionStatus` and
/// `ErrorInfo`, when present, strings). Anything else is `None` (`bad_response`).
pub fn parse_answer(body: &[u8]) -> Option<Answer> {
    serde_json::from_slice(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_or_not() {
        assert_eq!(
            parse_answer(br#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#)
                .unwrap()
                .error_code,
            0
        );
        assert_eq!(parse_answer(br#"{"ErrorCode":1}"#).unwrap().error_code, 1);
        assert!(parse_answer(b"OK").is_none());
        assert!(parse_answer(br#"{"ActionStatus":"OK"}"#).is_none());
        assert!(parse_answer(br#"{"ErrorCode":"0"}"#).is_none());
        assert!(parse_answer(br#"{"ErrorCode":0,"ErrorInfo":5}"#).is_none());
    }

    #[test]
    fn receivers_check_the_query_string_and_dedupe_by_msg_key() {
        let w = Tencent { sdk_app_id: 1 };
        let body = br#"{"CallbackCommand":"C2C.CallbackAfterSendMsg","MsgKey":"1_2_3"}"#;
        let good =
            "SdkAppid=1&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json&ClientIP=127.0.0.1&OptPlatform=iOS";
        let c = w.check_received(Some(good), body, None);
        assert_eq!(c.signature, Signature::QueryOk);
        assert_eq!(c.dedupe_key.as_deref(), Some("C2C.CallbackAfterSendMsg/1_2_3"));
        let other_command = good.replace("C2C.CallbackAfterSendMsg", "Group.CallbackAfterSendMsg");
        for query in [None, Some(other_command.as_str()), Some(&good[..good.len() - 4])] {
            assert_eq!(
                w.check_received(query, body, None).signature,
                Signature::QueryBad,
                "{query:?}"
            );
        }
        assert_eq!(
            w.check_received(Some(good), b"[]", None).signature,
            Signature::Unparsable
        );
    }

    #[test]
    fn answers_and_verdicts() {
        let w = Tencent { sdk_app_id: 1 };
        assert!(w.check_answer(ANSWER_OK.as_bytes()).is_ok());
        assert!(w.check_answer(b"<html>").is_err());
        let v = w
            .pre_send_verdict(ANSWER_FAIL.as_bytes(), MessageType::Txt, "r")
            .unwrap();
        assert!(!v.allow && v.sender_text.as_deref() == Some("fault injected by callback-sim sink"));
        assert!(
            w.pre_send_verdict(ANSWER_OK.as_bytes(), MessageType::Txt, "r")
                .unwrap()
                .allow
        );
    }
}
