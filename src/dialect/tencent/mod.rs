//! The tencent dialect — Tencent Cloud IM third-party callbacks (docs/behaviour.md §4.3,
//! §11.4): the `CallbackCommand` and the app's `SdkAppid` travel in the query string, bodies
//! are unsigned (an app with a token signs the URL: `Sign`, `RequestTime`; mutual TLS is the
//! other way a receiver authenticates them), and every answer is
//! `{"ActionStatus","ErrorCode","ErrorInfo"}`.
//!
//! - `body` — the message commands, the query string and the message bodies (events' bodies
//!   come from the catalog);
//! - `sign` — `Sign` and `RequestTime`, and their check for receivers.

mod body;
mod sign;

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

pub use self::body::{MsgIds, message_command, platform, query};
pub use self::sign::{MAX_SKEW_SECS, sign, signed_query, verify};

use super::{
    Checked, Defaults, Encoded, EventAnswer, MessageFacts, Prepared, Recipient, Rewrite, Signature, Verdict, Wire,
};
use crate::domain::{EventType, MessageType, Platform, RuleKind};
use crate::event::{Event, Stamp};

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

/// The sender code of a plain deny (`ErrorCode` 1): "blocked by the app's callback".
pub const DENIED_CODE: i64 = 20006;

/// The tencent wire format of one app.
#[derive(Debug, Clone, Default)]
pub struct Tencent {
    /// The app's `SdkAppid`, in every callback's query string.
    pub sdk_app_id: u64,
    /// The app's webhook token: when set, every URL is signed.
    pub token: Option<String>,
}

impl Tencent {
    /// The query string of an event's command: its client's address and platform when the
    /// event names them (`State.StateChange` spells iOS `IOS`), else `RESTAPI`.
    fn event_query(&self, event: &Event, command: &str) -> String {
        let f = event.fields();
        let ip = f.get("client_ip").and_then(Value::as_str).unwrap_or(DEFAULT_CLIENT_IP);
        let platform = match f.get("platform").and_then(Value::as_str) {
            Some("iOS") if command == crate::event::catalog::STATE_CHANGE => "IOS",
            Some(p) => p,
            None => Platform::RestApi.as_str(),
        };
        query(self.sdk_app_id, command, ip, platform)
    }
}

/// A body with `overrides` (or a rewrite) merged in.
fn merged(body: Vec<u8>, overrides: Option<&Map<String, Value>>) -> Vec<u8> {
    let Some(o) = overrides else { return body };
    let mut v: Value = serde_json::from_slice(&body).expect("a body we built parses");
    crate::event::merge(&mut v, o);
    serde_json::to_vec(&v).expect("a JSON value serializes")
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
            platform(msg.source, msg.platform).as_str(),
        );
        let body = body::message_body(cmd, msg, ids, facts.timestamp);
        // Tencent has no offline callback: one command per rule, the same bytes for all.
        Box::new(Shared {
            encoded: Encoded {
                body: Bytes::from(merged(body, msg.overrides.as_ref())),
                query: Some(q.into()),
            },
            recipients: vec![Recipient {
                event_type: EventType::Chat,
                to: msg.to.as_str(),
            }],
        })
    }

    fn event<'a>(&self, event: &'a Event, stamp: &'a Stamp) -> Box<dyn Prepared + 'a> {
        let Some((command, body)) = event.tencent_body(stamp) else {
            return Box::new(Shared {
                encoded: Encoded {
                    body: Bytes::new(),
                    query: None,
                },
                recipients: Vec::new(),
            });
        };
        Box::new(Shared {
            encoded: Encoded {
                body: Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes")),
                query: Some(self.event_query(event, &command).into()),
            },
            recipients: vec![Recipient {
                event_type: event.event_type(),
                to: event.subject(),
            }],
        })
    }

    fn event_before(&self, event: &Event, stamp: &Stamp) -> Option<Encoded> {
        let (command, body) = event.tencent_before(stamp)?;
        Some(Encoded {
            body: Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes")),
            query: Some(self.event_query(event, command).into()),
        })
    }

    fn event_answer(&self, body: &[u8]) -> Result<EventAnswer, String> {
        let a = parse_answer(body).ok_or("the answer is not a JSON object with an integer ErrorCode")?;
        let answer: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        Ok(EventAnswer {
            allow: a.error_code == 0,
            sender_text: a.error_info.filter(|i| !i.is_empty()),
            answer,
        })
    }

    fn sign_query<'q>(&self, query: Option<&'q str>, now_ms: u64) -> Option<Cow<'q, str>> {
        match (&self.token, query) {
            (Some(token), Some(q)) => Some(Cow::Owned(signed_query(q, token, now_ms))),
            (_, q) => q.map(Cow::Borrowed),
        }
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
        let info = a.error_info.clone().filter(|i| !i.is_empty());
        // docs/behaviour.md §11.4: 0 allows, 2 drops silently, 120001–130000 deny with that
        // code, anything else denies with 20006.
        let (allow, silent_drop, sender_code) = match a.error_code {
            0 => (true, false, None),
            2 => (true, true, None),
            c @ 120_001..=130_000 => (false, false, Some(c)),
            _ => (false, false, Some(DENIED_CODE)),
        };
        let rewrite = if allow && !silent_drop { rewrite_of(body) } else { None };
        Ok(Verdict {
            allow,
            silent_drop,
            sender_text: if allow { None } else { info },
            sender_code,
            rewrite,
            warnings: Vec::new(),
        })
    }

    fn pre_send_failure_text(&self) -> &'static str {
        INTERNAL_ERROR
    }

    fn check_received<'b>(&self, query: Option<&str>, body: &'b [u8], token: Option<&str>) -> Checked<'b> {
        let Ok(Value::Object(parsed)) = serde_json::from_slice::<Value>(body) else {
            return Checked {
                signature: Signature::Unparsable,
                dedupe_key: None,
            };
        };
        let command = parsed
            .get("CallbackCommand")
            .and_then(|c| c.as_str())
            .unwrap_or_default();
        // A retry or replay sends the same bytes: messages by their MsgKey, group messages by
        // their group and Random, anything else by the bytes themselves.
        let dedupe_key: Cow<'b, str> = match (parsed.get("MsgKey"), parsed.get("GroupId"), parsed.get("Random")) {
            (Some(Value::String(key)), _, _) => format!("{command}/{key}").into(),
            (_, Some(Value::String(group)), Some(random)) => format!("{command}/{group}/{random}").into(),
            // The body names its command: the bytes themselves are the key (the sink keeps
            // only their hash).
            _ => String::from_utf8_lossy(body),
        };
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
            && params
                .get("OptPlatform")
                .is_some_and(|p| p == "IOS" || Platform::parse(p).is_ok());
        let signature = match (ok, token) {
            (false, _) => Signature::QueryBad,
            (true, None) => Signature::QueryOk,
            (true, Some(token)) => verify(
                params.get("Sign").map(String::as_str),
                params.get("RequestTime").map(String::as_str),
                token,
                crate::clock::Clock::now_ms(&crate::clock::SystemClock),
            ),
        };
        Checked {
            signature,
            dedupe_key: Some(dedupe_key),
        }
    }

    fn receiver_answer(&self, ok: bool) -> &'static str {
        if ok { ANSWER_OK } else { ANSWER_FAIL }
    }

    fn resign(&self, edited: &[u8], _secret: &str) -> Result<Bytes, String> {
        // Bodies are unsigned (docs/behaviour.md §4.3): the body goes as edited, compact; the
        // query string stays the callback's (its URL signature, if any, is made at send).
        let body = Value::Object(super::edited_object(edited)?);
        Ok(Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes")))
    }
}

/// An allowing answer's `MsgBody` and `CloudCustomData`: what the post-send callbacks carry
/// instead of the message's own.
fn rewrite_of(body: &[u8]) -> Option<Rewrite> {
    let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let mut wire = Map::new();
    for key in ["MsgBody", "CloudCustomData"] {
        if let Some(v) = answer.get(key).filter(|v| !v.is_null()) {
            wire.insert(key.into(), v.clone());
        }
    }
    (!wire.is_empty()).then_some(Rewrite {
        msg: None,
        ext: None,
        wire: Some(wire),
    })
}

/// A message or event whose callbacks all carry the same bytes.
struct Shared<'a> {
    encoded: Encoded,
    recipients: Vec<Recipient<'a>>,
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
        let w = Tencent {
            sdk_app_id: 1,
            token: None,
        };
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
        let w = Tencent {
            sdk_app_id: 1,
            token: None,
        };
        assert!(w.check_answer(ANSWER_OK.as_bytes()).is_ok());
        assert!(w.check_answer(b"<html>").is_err());
        let v = w
            .pre_send_verdict(ANSWER_FAIL.as_bytes(), MessageType::Txt, "r")
            .unwrap();
        assert!(!v.allow && v.sender_text.as_deref() == Some("fault injected by callback-sim sink"));
        assert_eq!(v.sender_code, Some(DENIED_CODE));
        let silent = w
            .pre_send_verdict(br#"{"ErrorCode":2}"#, MessageType::Txt, "r")
            .unwrap();
        assert!(silent.allow && silent.silent_drop && silent.rewrite.is_none());
        let custom = w
            .pre_send_verdict(br#"{"ErrorCode":120005,"ErrorInfo":"nope"}"#, MessageType::Txt, "r")
            .unwrap();
        assert_eq!(
            (custom.allow, custom.sender_code, custom.sender_text.as_deref()),
            (false, Some(120005), Some("nope"))
        );
        let out_of_range = w
            .pre_send_verdict(br#"{"ErrorCode":130001}"#, MessageType::Txt, "r")
            .unwrap();
        assert_eq!(out_of_range.sender_code, Some(DENIED_CODE));
        let rewrite = w
            .pre_send_verdict(
                br#"{"ErrorCode":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"***"}}],"CloudCustomData":"x"}"#,
                MessageType::Txt,
                "r",
            )
            .unwrap();
        let wire = rewrite.rewrite.unwrap().wire.unwrap();
        assert_eq!(wire["MsgBody"][0]["MsgContent"]["Text"], "***");
        assert_eq!(wire["CloudCustomData"], "x");
        assert!(
            w.pre_send_verdict(ANSWER_OK.as_bytes(), MessageType::Txt, "r")
                .unwrap()
                .allow
        );
    }
}
