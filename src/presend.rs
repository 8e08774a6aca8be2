//! Pre-send (moderation) callbacks (SPEC §4.2, seed 002; tencent before-commands, §4.3).
//!
//! Every enabled, matching `pre_send` rule is asked at once, before delivery, with the body a
//! post-send callback would have. One attempt, the rule's `timeout_ms`, no retry, no ban, no
//! store. The verdicts combine: any block blocks. An agora answer may rewrite a text message.
//! The pure part — reading an answer into a [`Decision`] — is [`decide`], tested below.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::RuleConfig;
use crate::dialect::{agora, tencent};
use crate::dispatch::CallbackReport;
use crate::dispatch::http::{AttemptLimits, AttemptResult, Target, attempt};
use crate::domain::{ChatType, Dialect, EventType, FinalOutcome, MessageType, OnFailure, Outcome, RuleKind};
use crate::message::Message;
use crate::runtime::{AppRuntime, RuleRuntime};

/// SPEC §4.2: an answer over 1,000 characters (rewrite included) is not usable.
pub const MAX_ANSWER_CHARS: usize = 1000;
/// Issue 4 (pre-send): a rewritten payload is at most 1 KB, serialized.
pub const MAX_REWRITE_BYTES: usize = 1024;

/// What the sender is told (SPEC §4.2) when an agora rule blocks without a `code`.
pub const DENIED_NO_CODE: &str = "custom logic denied";
/// What the sender is told (SPEC §4.2) when an agora rule blocks with an empty `code`.
pub const DENIED_EMPTY_CODE: &str = "Message blocked by external logic";
/// What the sender is told (SPEC §4.2) when a rule with `on_failure = "block"` got a timeout,
/// a non-200 or a malformed answer.
pub const INTERNAL_ERROR: &str = "custom internal error";

/// Does an enabled pre-send rule want this message?
pub fn matches(rule: &RuleConfig, msg: &Message) -> bool {
    rule.kind == RuleKind::PreSend
        && rule.enabled
        && rule.allows_chat_type(msg.chat_type)
        && rule.allows_message_type(msg.msg_type)
}

/// A rewrite of a text message: the new text, and `ext` when the answer gave one.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    /// The new text: `payload.bodies[0].msg` of the answer.
    pub msg: String,
    /// The answer's `payload.ext`; `None` keeps the message's own `ext`.
    pub ext: Option<Map<String, Value>>,
}

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The answer was usable (final outcome `delivered`, else `dropped`).
    pub usable: bool,
    /// The outcome of the attempt as SPEC §5 names it.
    pub outcome: Outcome,
    /// Whether this rule lets the message through: agora `valid`, tencent `ErrorCode == 0`,
    /// or the rule's `on_failure` when the answer was not usable.
    pub allow: bool,
    /// What the sender is told when blocked.
    pub sender_text: Option<String>,
    /// A valid text rewrite from an allowing agora answer.
    pub rewrite: Option<Rewrite>,
    /// Sentences about the receiver's mistakes (e.g. an ignored `payload`); logged and shown
    /// as `warnings` in `?wait=true` answers.
    pub warnings: Vec<String>,
}

/// Reads an attempt's result under the rule's settings.
pub fn decide(dialect: Dialect, rule: &RuleConfig, msg_type: MessageType, result: &AttemptResult) -> Decision {
    let failed = |outcome: Outcome| Decision {
        usable: false,
        outcome,
        allow: rule.pre_send.on_failure == OnFailure::Pass,
        sender_text: Some(INTERNAL_ERROR.to_string()),
        rewrite: None,
        warnings: Vec::new(),
    };
    if result.outcome != Outcome::Delivered {
        return failed(result.outcome);
    }
    let body = result.body.as_deref().unwrap_or_default();
    match dialect {
        Dialect::Tencent => match tencent::parse_answer(body) {
            None => failed(Outcome::BadResponse),
            Some(a) => Decision {
                usable: true,
                outcome: Outcome::Delivered,
                allow: a.error_code == 0,
                sender_text: a.error_info,
                rewrite: None,
                warnings: Vec::new(),
            },
        },
        Dialect::Agora => {
            let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
                return failed(Outcome::BadResponse);
            };
            let Some(valid) = answer.get("valid").and_then(Value::as_bool) else {
                return failed(Outcome::BadResponse);
            };
            let code = match answer.get("code") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return failed(Outcome::BadResponse),
            };
            let mut d = Decision {
                usable: true,
                outcome: Outcome::Delivered,
                allow: valid,
                sender_text: None,
                rewrite: None,
                warnings: Vec::new(),
            };
            if !valid {
                d.sender_text = Some(match code.as_deref() {
                    None => DENIED_NO_CODE.to_string(),
                    Some("") => DENIED_EMPTY_CODE.to_string(),
                    Some(c) => c.to_string(),
                });
                return d;
            }
            if let Some(payload) = answer.get("payload").filter(|p| !p.is_null()) {
                match rewrite(msg_type, payload) {
                    Ok(r) => d.rewrite = Some(r),
                    Err(why) => d
                        .warnings
                        .push(format!("rule {}: the answer's payload was ignored: {why}", rule.name)),
                }
            }
            d
        }
    }
}

/// Checks a rewrite: a text message, `{"bodies": [{"type": "txt", "msg": "..."}], "ext": {...}}`.
fn rewrite(msg_type: MessageType, payload: &Value) -> Result<Rewrite, String> {
    const SHAPE: &str = r#"expected {"bodies": [{"type": "txt", "msg": "..."}], "ext": {...}} (ext optional)"#;
    if msg_type != MessageType::Txt {
        return Err(format!(
            "only a text message may be rewritten, and this one is {msg_type}"
        ));
    }
    let size = payload.to_string().len();
    if size > MAX_REWRITE_BYTES {
        return Err(format!("it is {size} bytes, over the {MAX_REWRITE_BYTES}-byte limit"));
    }
    let Value::Object(p) = payload else {
        return Err(format!("it is not an object; {SHAPE}"));
    };
    if let Some(k) = p.keys().find(|k| *k != "bodies" && *k != "ext") {
        return Err(format!("unexpected key {k:?}; {SHAPE}"));
    }
    let ext = match p.get("ext") {
        None => None,
        Some(Value::Object(e)) => Some(e.clone()),
        Some(_) => return Err(format!("ext is not an object; {SHAPE}")),
    };
    let bodies = p
        .get("bodies")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("bodies is missing or not a list; {SHAPE}"))?;
    let [Value::Object(b)] = bodies.as_slice() else {
        return Err(format!(
            "bodies must hold exactly one body, it holds {}; {SHAPE}",
            bodies.len()
        ));
    };
    if b.get("type").and_then(Value::as_str) != Some("txt") {
        return Err(format!("the body's type must be \"txt\"; {SHAPE}"));
    }
    if let Some(k) = b.keys().find(|k| *k != "type" && *k != "msg") {
        return Err(format!("unexpected key {k:?} in the body; {SHAPE}"));
    }
    let msg = b
        .get("msg")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the body's msg is missing or not a string; {SHAPE}"))?;
    Ok(Rewrite {
        msg: msg.to_string(),
        ext,
    })
}

/// The combined verdict of all pre-send rules.
#[derive(Debug)]
pub struct Verdict {
    /// No rule blocked: the message is delivered and its post-send callbacks made
    /// (`accepted` in the messages answer).
    pub accepted: bool,
    /// What the sender is told (only from a blocking rule with `notify_sender`).
    pub code: Option<String>,
    /// The content the post-send callbacks carry instead of the original, if a rule rewrote it
    /// (never set when the message is blocked).
    pub rewrite: Option<Rewrite>,
    /// One report per pre-send callback (`kind` `pre_send`), for the `?wait=true` answer.
    pub reports: Vec<CallbackReport>,
}

/// What a pre-send callback needs to know about the message's identity.
pub struct Context<'a> {
    /// The app the message was sent in; its rules are the ones asked.
    pub app: &'a AppRuntime,
    /// The message as received.
    pub msg: &'a Message,
    /// Unix time in milliseconds at which the message was received (agora `timestamp`).
    pub timestamp: u64,
    /// The message's `msg_id`, shared with its post-send callbacks.
    pub msg_id: &'a str,
    /// Tencent `MsgSeq`, `MsgRandom`, `MsgTime`, shared with its post-send callbacks.
    pub ids: tencent::MsgIds,
    /// The tencent `ClientIP` when the message names none.
    pub default_client_ip: &'a str,
    /// The simulator, for new `callId`s.
    pub sim: &'a crate::sim::Simulator,
}

/// Asks every matching pre-send rule, at once; `None` when there is none to ask.
pub async fn ask(ctx: &Context<'_>) -> Option<Verdict> {
    let rules: Vec<&Arc<RuleRuntime>> = ctx.app.rules.iter().filter(|r| matches(&r.config, ctx.msg)).collect();
    if rules.is_empty() {
        return None;
    }
    let asks = rules.iter().map(|rule| ask_one(ctx, rule));
    let decisions = futures_util::future::join_all(asks).await;
    let mut verdict = Verdict {
        accepted: true,
        code: None,
        rewrite: None,
        reports: Vec::with_capacity(decisions.len()),
    };
    for (rule, (decision, report)) in rules.iter().zip(decisions) {
        if !decision.allow {
            if verdict.accepted && rule.config.pre_send.notify_sender {
                verdict.code = decision.sender_text.clone();
            }
            verdict.accepted = false;
        } else if let Some(r) = decision.rewrite {
            verdict.rewrite = Some(r);
        }
        verdict.reports.push(report);
    }
    if !verdict.accepted {
        verdict.rewrite = None;
    }
    Some(verdict)
}

async fn ask_one(ctx: &Context<'_>, rule: &RuleRuntime) -> (Decision, CallbackReport) {
    let started = std::time::Instant::now();
    let msg = ctx.msg;
    let call_id = ctx.sim.new_call_id(&rule.app);
    let (body, url) = match rule.dialect {
        Dialect::Agora => {
            let payload = msg.agora_payload();
            let security = agora::sign(&call_id, rule.config.secret.expose(), ctx.timestamp);
            let body = agora::CallbackBody {
                call_id: &call_id,
                event_type: EventType::Chat.as_str(),
                timestamp: ctx.timestamp,
                chat_type: if msg.chat_type == ChatType::Chat {
                    "chat"
                } else {
                    "groupchat"
                },
                group_id: msg.group_id(),
                from: &msg.from,
                to: &msg.to,
                msg_id: ctx.msg_id,
                payload: &payload,
                security_version: agora::SECURITY_VERSION,
                security: &security,
            }
            .to_bytes();
            (body, None)
        }
        Dialect::Tencent => {
            let cmd = tencent::message_command(RuleKind::PreSend, msg.chat_type);
            let ip = msg.client_ip.map(|ip| ip.to_string());
            let q = tencent::query(
                ctx.app.config.sdk_app_id,
                cmd,
                ip.as_deref().unwrap_or(ctx.default_client_ip),
                tencent::platform(msg.source, msg.platform),
            );
            (
                tencent::message_body(cmd, msg, ctx.ids),
                Some(rule.config.url.uri_with_query(Some(&q))),
            )
        }
    };
    let limits = AttemptLimits {
        timeout: rule.config.pre_send.timeout,
        max_chars: MAX_ANSWER_CHARS,
        keep_body: true,
    };
    let to = Target::new(&rule.config.url, url.as_ref());
    let result = attempt(&rule.client, to, Bytes::from(body), limits).await;
    let decision = decide(rule.dialect, &rule.config, msg.msg_type, &result);
    rule.stats.count_outcome(decision.outcome);
    let outcome = if decision.usable {
        FinalOutcome::Delivered
    } else {
        FinalOutcome::Dropped
    };
    rule.stats.count_final(outcome);
    for w in &decision.warnings {
        tracing::warn!(app = %rule.app, rule = %rule.config.name, call_id = %call_id, "{w}");
    }
    let latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    tracing::info!(
        app = %rule.app,
        rule = %rule.config.name,
        call_id = %call_id,
        kind = "pre_send",
        outcome = %outcome,
        last_attempt = %decision.outcome,
        allow = decision.allow,
        attempts = 1,
        status = result.status,
        latency_ms = format_args!("{latency_ms:.2}"),
        detail = result.detail.as_deref(),
        "callback"
    );
    let report = CallbackReport {
        rule: rule.config.name.clone(),
        kind: RuleKind::PreSend,
        call_id,
        event_type: EventType::Chat,
        to: msg.to.clone(),
        outcome,
        last_attempt: decision.outcome,
        attempts: 1,
        status: result.status,
        warnings: decision.warnings.clone(),
        latency_ms,
    };
    (decision, report)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn rule(extra: &str) -> RuleConfig {
        let text = format!(
            "[[apps]]\nid = \"a\"\ntoken = \"t\"\n[[apps.rules]]\nname = \"mod\"\nurl = \"http://h/\"\nsecret = \"s\"\nkind = \"pre_send\"\n{extra}\n"
        );
        Config::parse(&text, "t", Path::new(".")).unwrap().apps[0].rules[0].clone()
    }

    fn answered(body: &str) -> AttemptResult {
        AttemptResult {
            outcome: Outcome::Delivered,
            status: Some(200),
            body: Some(Bytes::from(body.to_string())),
            detail: None,
        }
    }

    fn agora(rule: &RuleConfig, body: &str) -> Decision {
        decide(Dialect::Agora, rule, MessageType::Txt, &answered(body))
    }

    #[test]
    fn valid_answers_allow_or_block_with_the_sender_text() {
        let r = rule("");
        let d = agora(&r, r#"{"valid": true, "code": "HX:10000"}"#);
        assert!(d.allow && d.usable && d.rewrite.is_none());
        let d = agora(&r, r#"{"valid": false, "code": "spam"}"#);
        assert_eq!((d.allow, d.sender_text.as_deref()), (false, Some("spam")));
        assert_eq!(
            agora(&r, r#"{"valid": false}"#).sender_text.as_deref(),
            Some(DENIED_NO_CODE)
        );
        assert_eq!(
            agora(&r, r#"{"valid": false, "code": ""}"#).sender_text.as_deref(),
            Some(DENIED_EMPTY_CODE)
        );
    }

    #[test]
    fn unusable_answers_follow_on_failure() {
        for body in [
            r#"{"code": "x"}"#,
            r#"{"valid": "true"}"#,
            "not json",
            r#"{"valid": false, "code": 7}"#,
        ] {
            let d = agora(&rule(""), body);
            assert!(!d.usable && d.allow, "{body}: pass by default");
            assert_eq!(d.outcome, Outcome::BadResponse);
            let d = agora(&rule("on_failure = \"block\""), body);
            assert_eq!(
                (d.allow, d.sender_text.as_deref()),
                (false, Some(INTERNAL_ERROR)),
                "{body}"
            );
        }
        let timeout = AttemptResult {
            outcome: Outcome::Timeout,
            status: None,
            body: None,
            detail: None,
        };
        let d = decide(
            Dialect::Agora,
            &rule("on_failure = \"block\""),
            MessageType::Txt,
            &timeout,
        );
        assert_eq!(
            (d.allow, d.outcome, d.sender_text.as_deref()),
            (false, Outcome::Timeout, Some(INTERNAL_ERROR))
        );
    }

    #[test]
    fn text_rewrites_are_checked() {
        let r = rule("");
        let d = agora(
            &r,
            r#"{"valid": true, "payload": {"bodies": [{"type": "txt", "msg": "***"}]}}"#,
        );
        assert_eq!(
            d.rewrite,
            Some(Rewrite {
                msg: "***".into(),
                ext: None
            })
        );
        let d = agora(
            &r,
            r#"{"valid": true, "payload": {"bodies": [{"type": "txt", "msg": "ok"}], "ext": {"k": 1}}}"#,
        );
        assert_eq!(d.rewrite.unwrap().ext.unwrap()["k"], 1);
        for bad in [
            r#"{"valid": true, "payload": {"bodies": [{"type": "img", "url": "x"}]}}"#,
            r#"{"valid": true, "payload": {"bodies": []}}"#,
            r#"{"valid": true, "payload": {"msg": "flat"}}"#,
            r#"{"valid": true, "payload": "text"}"#,
            r#"{"valid": true, "payload": {"bodies": [{"type": "txt", "msg": 5}]}}"#,
        ] {
            let d = agora(&r, bad);
            assert!(d.allow && d.rewrite.is_none(), "{bad}");
            assert_eq!(d.warnings.len(), 1, "{bad}");
            assert!(d.warnings[0].contains("rule mod"), "{:?}", d.warnings);
        }
        let d = decide(
            Dialect::Agora,
            &r,
            MessageType::Img,
            &answered(r#"{"valid": true, "payload": {"bodies": [{"type": "txt", "msg": "x"}]}}"#),
        );
        assert!(d.rewrite.is_none() && d.warnings[0].contains("only a text message"));
    }

    #[test]
    fn tencent_answers() {
        let r = rule("");
        let d = decide(
            Dialect::Tencent,
            &r,
            MessageType::Txt,
            &answered(r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#),
        );
        assert!(d.allow && d.usable);
        let d = decide(
            Dialect::Tencent,
            &r,
            MessageType::Txt,
            &answered(r#"{"ActionStatus":"FAIL","ErrorCode":1,"ErrorInfo":"no links"}"#),
        );
        assert_eq!((d.allow, d.sender_text.as_deref()), (false, Some("no links")));
        let d = decide(Dialect::Tencent, &r, MessageType::Txt, &answered("<html>"));
        assert_eq!((d.allow, d.outcome), (true, Outcome::BadResponse));
    }
}
