//! Everything the sink knows about the providers' wire formats, in one place: how a callback
//! of each dialect is checked (the agora signature, the tencent query string), which id marks
//! a repeated callback, and what body a receiver of each dialect answers. The rest of the sink
//! calls [`check`] and [`answer_body`] and never looks at a dialect itself.

use std::borrow::Cow;

use serde::Deserialize;

use crate::dialect::agora;
use crate::domain::{Dialect, Platform};

/// What the sink made of a callback's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// `security` matches MD5(callId + secret + timestamp).
    Valid,
    /// It does not.
    Invalid,
    /// The sink knows the secret but the body has no `callId`/`timestamp`/`security`.
    Missing,
    /// No secret given, or a tencent callback (unsigned): nothing to check.
    Unchecked,
    /// The body is not JSON.
    Unparsable,
    /// Tencent: the query string is right for the body.
    QueryOk,
    /// Tencent: a query parameter is missing or disagrees with the body.
    QueryBad,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signature::Valid => "ok",
            Signature::Invalid => "BAD",
            Signature::Missing => "MISSING",
            Signature::Unchecked => "unchecked",
            Signature::Unparsable => "unparsable",
            Signature::QueryOk => "query-ok",
            Signature::QueryBad => "query-BAD",
        })
    }
}

/// One callback checked: the verdict, and the id that marks it as a repeat (a retry or a
/// replay sends the same id again).
#[derive(Debug)]
pub(super) struct Verdict<'a> {
    pub(super) signature: Signature,
    /// Agora: the `callId`; tencent: `CallbackCommand/MsgKey`; `None` when there is none.
    pub(super) id: Option<Cow<'a, str>>,
}

/// Checks a callback of `dialect`: agora's signature when `secret` is known, tencent's query
/// string against its body.
pub(super) fn check<'a>(dialect: Dialect, secret: Option<&str>, query: Option<&str>, body: &'a [u8]) -> Verdict<'a> {
    match dialect {
        Dialect::Agora => check_agora(secret, body),
        Dialect::Tencent => check_tencent(query, body),
    }
}

/// The tencent success answer (docs/behaviour.md §4.3): `ErrorCode` 0 also allows a
/// before-command.
const TENCENT_OK: &str = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#;
/// The tencent answer to an injected fault (docs/behaviour.md §4.3): `ErrorCode` 1 denies a
/// before-command.
const TENCENT_FAIL: &str = r#"{"ActionStatus":"FAIL","ErrorCode":1,"ErrorInfo":"fault injected by callback-sim sink"}"#;

/// The body a receiver of `dialect` answers, for a success or for an injected `fault`: agora
/// reads nothing in a post-send answer (empty); tencent reads `ActionStatus`/`ErrorCode`.
pub(super) fn answer_body(dialect: Dialect, fault: bool) -> &'static str {
    match (dialect, fault) {
        (Dialect::Agora, _) => "",
        (Dialect::Tencent, false) => TENCENT_OK,
        (Dialect::Tencent, true) => TENCENT_FAIL,
    }
}

/// The agora fields the sink reads; the rest of the body is not parsed.
#[derive(Deserialize)]
struct AgoraHead<'a> {
    #[serde(rename = "callId", borrow)]
    call_id: Option<Cow<'a, str>>,
    timestamp: Option<u64>,
    #[serde(borrow)]
    security: Option<Cow<'a, str>>,
}

impl AgoraHead<'_> {
    /// `security` against MD5(callId + secret + timestamp).
    fn check(&self, secret: &str) -> Signature {
        match self {
            AgoraHead {
                call_id: Some(id),
                timestamp: Some(ts),
                security: Some(sig),
            } if agora::sign(id, secret, *ts) == *sig => Signature::Valid,
            AgoraHead {
                call_id: Some(_),
                timestamp: Some(_),
                security: Some(_),
            } => Signature::Invalid,
            _ => Signature::Missing,
        }
    }
}

/// An agora callback: its signature when the secret is known; its `callId`.
fn check_agora<'a>(secret: Option<&str>, body: &'a [u8]) -> Verdict<'a> {
    let Ok(head) = serde_json::from_slice::<AgoraHead>(body) else {
        return Verdict {
            signature: Signature::Unparsable,
            id: None,
        };
    };
    let signature = match secret {
        Some(secret) => head.check(secret),
        None => Signature::Unchecked,
    };
    Verdict {
        signature,
        id: head.call_id,
    }
}

/// Checks an agora callback's signature (docs/behaviour.md §4.1), as a receiver should:
/// `security` must be the lowercase hex MD5 of `callId + secret + timestamp`. Answers
/// [`Signature::Valid`], [`Signature::Invalid`], [`Signature::Missing`] (a field is absent) or
/// [`Signature::Unparsable`] (not a JSON object).
///
/// ```
/// use callback_sim::{Signature, agora_sign, agora_verify};
///
/// let call_id = "demo#e7b1c1d2-5a0f-4a34-9c1e-0f6b2f7a9a11";
/// let security = agora_sign(call_id, "s3cret", 1600060847294);
/// let body = format!(r#"{{"callId":"{call_id}","timestamp":1600060847294,"security":"{security}"}}"#);
/// assert_eq!(agora_verify(body.as_bytes(), "s3cret"), Signature::Valid);
/// assert_eq!(agora_verify(body.as_bytes(), "other"), Signature::Invalid);
/// assert_eq!(agora_verify(b"{}", "s3cret"), Signature::Missing);
/// ```
pub fn agora_verify(body: &[u8], secret: &str) -> Signature {
    match serde_json::from_slice::<AgoraHead>(body) {
        Ok(head) => head.check(secret),
        Err(_) => Signature::Unparsable,
    }
}

/// A tencent callback (unsigned): its query string (docs/behaviour.md §4.3) against its body;
/// its `CallbackCommand/MsgKey`.
fn check_tencent<'a>(query: Option<&str>, body: &[u8]) -> Verdict<'a> {
    let Ok(serde_json::Value::Object(body)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Verdict {
            signature: Signature::Unparsable,
            id: None,
        };
    };
    let command = body.get("CallbackCommand").and_then(|c| c.as_str()).unwrap_or_default();
    let id = body
        .get("MsgKey")
        .and_then(|k| k.as_str())
        .map(|key| Cow::Owned(format!("{command}/{key}")));
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
    Verdict {
        signature: if ok { Signature::QueryOk } else { Signature::QueryBad },
        id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agora_without_a_secret_is_unchecked_but_keeps_its_id() {
        let v = check(Dialect::Agora, None, None, br#"{"callId":"a#1"}"#);
        assert_eq!((v.signature, v.id.as_deref()), (Signature::Unchecked, Some("a#1")));
        let v = check(Dialect::Agora, Some("s"), None, br#"{"callId":"a#1"}"#);
        assert_eq!(v.signature, Signature::Missing);
        let v = check(Dialect::Agora, Some("s"), None, b"not json");
        assert_eq!((v.signature, v.id), (Signature::Unparsable, None));
    }

    #[test]
    fn tencent_query_strings_are_checked_against_the_body() {
        let body = br#"{"CallbackCommand":"C2C.CallbackAfterSendMsg","MsgKey":"1_2_3"}"#;
        let good = "SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json&ClientIP=10.0.0.1&OptPlatform=iOS";
        let v = check(Dialect::Tencent, None, Some(good), body);
        assert_eq!(
            (v.signature, v.id.as_deref()),
            (Signature::QueryOk, Some("C2C.CallbackAfterSendMsg/1_2_3"))
        );
        let other_command = good.replace("C2C.CallbackAfterSendMsg", "Group.CallbackAfterSendMsg");
        for query in [None, Some(other_command.as_str()), Some(&good[..good.len() - 4])] {
            assert_eq!(
                check(Dialect::Tencent, None, query, body).signature,
                Signature::QueryBad,
                "{query:?}"
            );
        }
        assert_eq!(
            check(Dialect::Tencent, None, Some(good), b"[]").signature,
            Signature::Unparsable
        );
    }

    #[test]
    fn each_dialect_answers_its_own_body() {
        assert_eq!(answer_body(Dialect::Agora, false), "");
        assert_eq!(answer_body(Dialect::Agora, true), "");
        assert!(answer_body(Dialect::Tencent, false).contains(r#""ErrorCode":0"#));
        assert!(answer_body(Dialect::Tencent, true).contains(r#""ErrorCode":1"#));
    }
}
