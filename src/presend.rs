//! Pre-send (moderation) callbacks (docs/behaviour.md §4.2; tencent before-commands, §4.3 and,
//! for events, §11.4).
//!
//! Every enabled, matching `pre_send` rule is asked at once, before delivery, with the body a
//! post-send callback would have. One attempt, the rule's `timeout_ms`, no retry, no ban, no
//! store. The verdicts combine: any block blocks. A graceful stop waits for the calls in flight
//! and cuts them short after its grace period, like every attempt (docs/behaviour.md §9); a call
//! cut short is an unusable answer (`shutdown`). The provider reads its answer
//! ([`Wire::pre_send_verdict`]); what an unusable answer means — the rule's `on_failure` — is
//! [`decide`], tested below.

use std::sync::Arc;

use crate::config::RuleConfig;
use crate::dialect::{Encoded, MessageFacts, Rewrite, Wire};
use crate::dispatch::{Attempter, CallbackReport};
use crate::domain::{EventType, FinalOutcome, MessageType, OnFailure, Outcome, RuleKind};
use crate::event::{Event, Stamp};
use crate::ids::Ids;
use crate::message::Message;
use crate::runtime::{AppRuntime, RuleRuntime};
use crate::transport::{AttemptLimits, AttemptResult, Target};

/// An answer over 1,000 characters (rewrite included) is not usable.
pub const MAX_ANSWER_CHARS: usize = 1000;

/// Does an enabled pre-send rule want this message?
pub fn matches(rule: &RuleConfig, msg: &Message) -> bool {
    rule.kind == RuleKind::PreSend
        && rule.enabled
        && rule.allows_chat_type(msg.chat_type)
        && rule.allows_message_type(msg.msg_type)
}

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The answer was usable (final outcome `delivered`, else `dropped`).
    pub usable: bool,
    /// The outcome of the attempt.
    pub outcome: Outcome,
    /// Whether this rule lets the message through: the provider's verdict, or the rule's
    /// `on_failure` when the answer was not usable.
    pub allow: bool,
    /// What the sender is told when blocked.
    pub sender_text: Option<String>,
    /// The sender's error code when blocked, where the provider has one.
    pub sender_code: Option<i64>,
    /// Allowed, but dropped silently (tencent `ErrorCode` 2).
    pub silent_drop: bool,
    /// A valid text rewrite from an allowing answer.
    pub rewrite: Option<Rewrite>,
    /// Sentences about the receiver's mistakes (e.g. an ignored `payload`); logged and shown
    /// as `warnings` in `?wait=true` answers.
    pub warnings: Vec<String>,
}

/// Reads an attempt's result under the rule's settings.
pub fn decide(wire: &dyn Wire, rule: &RuleConfig, msg_type: MessageType, result: &AttemptResult) -> Decision {
    let failed = |outcome: Outcome| Decision {
        usable: false,
        outcome,
        allow: rule.pre_send.on_failure == OnFailure::Pass,
        sender_text: Some(wire.pre_send_failure_text().to_string()),
        sender_code: None,
        silent_drop: false,
        rewrite: None,
        warnings: Vec::new(),
    };
    if result.outcome != Outcome::Delivered {
        return failed(result.outcome);
    }
    let body = result.body.as_deref().unwrap_or_default();
    match wire.pre_send_verdict(body, msg_type, rule.name.as_str()) {
        Err(_) => failed(Outcome::BadResponse),
        Ok(v) => Decision {
            usable: true,
            outcome: Outcome::Delivered,
            allow: v.allow,
            sender_text: v.sender_text,
            sender_code: v.sender_code,
            silent_drop: v.silent_drop,
            rewrite: v.rewrite,
            warnings: v.warnings,
        },
    }
}

/// The combined verdict of all pre-send rules.
#[derive(Debug)]
pub struct Verdict {
    /// No rule blocked: the message is delivered and its post-send callbacks made
    /// (`accepted` in the messages answer).
    pub accepted: bool,
    /// What the sender is told (only from a blocking rule with `notify_sender`).
    pub code: Option<String>,
    /// The sender's error code (only from a blocking rule with `notify_sender`).
    pub error_code: Option<i64>,
    /// Allowed, but a rule dropped it silently: no post-send callback.
    pub silent_drop: bool,
    /// Why an event was refused (a before-command's answer), for the answer's `warnings`.
    pub refusal: Option<String>,
    /// The content the post-send callbacks carry instead of the original, if a rule rewrote it
    /// (never set when the message is blocked).
    pub rewrite: Option<Rewrite>,
    /// One report per pre-send callback (`kind` `pre_send`), for the `?wait=true` answer.
    pub reports: Vec<CallbackReport>,
}

/// Asks every matching pre-send rule of `app`, at once, about the message `facts` describe;
/// `None` when there is none to ask. The calls go through `attempter`: a stop waits for them
/// and cuts them short.
pub async fn ask(app: &AppRuntime, facts: MessageFacts<'_>, ids: &Ids, attempter: &Attempter) -> Option<Verdict> {
    let rules: Vec<&Arc<RuleRuntime>> = app.rules.iter().filter(|r| matches(&r.config, facts.msg)).collect();
    if rules.is_empty() {
        return None;
    }
    let _running = attempter.track();
    let prepared = app.wire.message(facts, RuleKind::PreSend);
    let to = prepared.recipients()[0];
    let asks = rules.iter().map(|rule| async {
        let call_id = ids.call_id(&rule.app);
        let encoded = prepared.encode(to, &call_id, rule.config.secret.expose());
        let started = std::time::Instant::now();
        let result = call(rule, encoded, attempter).await;
        let decision = decide(&*rule.wire, &rule.config, facts.msg.msg_type, &result);
        let report = settle(
            rule,
            call_id,
            started,
            &result,
            &decision,
            EventType::Chat,
            &facts.msg.to,
        );
        (decision, report)
    });
    let decisions = futures_util::future::join_all(asks).await;
    let mut verdict = Verdict {
        accepted: true,
        code: None,
        error_code: None,
        silent_drop: false,
        refusal: None,
        rewrite: None,
        reports: Vec::with_capacity(decisions.len()),
    };
    for (rule, (decision, report)) in rules.iter().zip(decisions) {
        if !decision.allow {
            if verdict.accepted && rule.config.pre_send.notify_sender {
                verdict.code = decision.sender_text.clone();
                verdict.error_code = decision.sender_code;
            }
            verdict.accepted = false;
        } else if decision.silent_drop {
            verdict.silent_drop = true;
        } else if let Some(r) = decision.rewrite {
            verdict.rewrite = Some(r);
        }
        verdict.reports.push(report);
    }
    if !verdict.accepted || verdict.silent_drop {
        verdict.rewrite = None;
    }
    Some(verdict)
}

/// Does an enabled pre-send rule want to be asked about this event?
fn matches_event(rule: &RuleConfig, event: &Event) -> bool {
    rule.kind == RuleKind::PreSend && rule.enabled && rule.allows_event_type(event.event_type())
}

/// Asks the app's pre-send rules the provider's before-command about an event (tencent,
/// docs/behaviour.md §11.4), at once; `None` when the provider has none for it or no rule
/// takes it. An allowing answer may leave pairs or members out of the event; a refusing one
/// (or an answer that leaves nothing) stops it. Unusable answers follow each rule's
/// `on_failure`, as for messages.
pub async fn ask_event(
    app: &AppRuntime,
    event: &mut Event,
    stamp: &Stamp,
    ids: &Ids,
    attempter: &Attempter,
) -> Option<Verdict> {
    let encoded = app.wire.event_before(event, stamp)?;
    let rules: Vec<&Arc<RuleRuntime>> = app.rules.iter().filter(|r| matches_event(&r.config, event)).collect();
    if rules.is_empty() {
        return None;
    }
    let _running = attempter.track();
    let subject = event.subject().to_string();
    let kind = event.event_type();
    let asks = rules.iter().map(|rule| async {
        let call_id = ids.call_id(&rule.app);
        let started = std::time::Instant::now();
        let result = call(rule, encoded.clone(), attempter).await;
        let (decision, answer) = decide_event(&*rule.wire, &rule.config, &result);
        let report = settle(rule, call_id, started, &result, &decision, kind, &subject);
        (decision, answer, report)
    });
    let answers = futures_util::future::join_all(asks).await;
    let mut verdict = Verdict {
        accepted: true,
        code: None,
        error_code: None,
        silent_drop: false,
        refusal: None,
        rewrite: None,
        reports: Vec::with_capacity(answers.len()),
    };
    for (rule, (decision, answer, report)) in rules.iter().zip(answers) {
        verdict.reports.push(report);
        let refusal = if !decision.allow {
            Some(format!(
                "pre_send rule {:?} refused the {kind} event{}",
                rule.config.name.as_str(),
                decision
                    .sender_text
                    .as_deref()
                    .map(|t| format!(": {t}"))
                    .unwrap_or_default()
            ))
        } else {
            answer
                .and_then(|a| event.apply_before(&a).err())
                .map(|why| format!("pre_send rule {:?}: {why}", rule.config.name.as_str()))
        };
        if let Some(why) = refusal {
            if verdict.accepted && rule.config.pre_send.notify_sender {
                verdict.code = decision.sender_text.clone().or_else(|| Some(why.clone()));
            }
            verdict.accepted = false;
            verdict.refusal.get_or_insert(why);
        }
    }
    Some(verdict)
}

/// Reads a before-command's answer about an event: the decision, and the answer itself when
/// it allows (for the catalog to read what it leaves out).
fn decide_event(wire: &dyn Wire, rule: &RuleConfig, result: &AttemptResult) -> (Decision, Option<serde_json::Value>) {
    let failed = |outcome: Outcome| Decision {
        usable: false,
        outcome,
        allow: rule.pre_send.on_failure == OnFailure::Pass,
        sender_text: Some(wire.pre_send_failure_text().to_string()),
        sender_code: None,
        silent_drop: false,
        rewrite: None,
        warnings: Vec::new(),
    };
    if result.outcome != Outcome::Delivered {
        return (failed(result.outcome), None);
    }
    match wire.event_answer(result.body.as_deref().unwrap_or_default()) {
        Err(_) => (failed(Outcome::BadResponse), None),
        Ok(a) => (
            Decision {
                usable: true,
                outcome: Outcome::Delivered,
                allow: a.allow,
                sender_text: a.sender_text,
                sender_code: None,
                silent_drop: false,
                rewrite: None,
                warnings: Vec::new(),
            },
            a.allow.then_some(a.answer),
        ),
    }
}

/// One pre-send attempt: the rule's `timeout_ms`, the answer kept (up to the answer limit).
async fn call(rule: &RuleRuntime, encoded: Encoded, attempter: &Attempter) -> AttemptResult {
    let limits = AttemptLimits {
        timeout: rule.config.pre_send.timeout,
        max_chars: MAX_ANSWER_CHARS,
        keep_body: true,
    };
    let url = &rule.config.url;
    let query = rule.wire.sign_query(encoded.query.as_deref(), attempter.now_ms());
    let uri = query.as_deref().map(|q| url.uri_with_query(Some(q)));
    attempter
        .attempt(&rule.client, Target::new(url, uri.as_ref()), encoded.body, limits)
        .await
}

/// Counts, logs and reports one pre-send callback.
fn settle(
    rule: &RuleRuntime,
    call_id: String,
    started: std::time::Instant,
    result: &AttemptResult,
    decision: &Decision,
    event_type: EventType,
    to: &str,
) -> CallbackReport {
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
        latency_ms,
        detail = result.detail.as_deref(),
        "callback"
    );
    CallbackReport {
        rule: rule.config.name.clone(),
        kind: RuleKind::PreSend,
        call_id,
        event_type,
        to: to.into(),
        outcome,
        last_attempt: decision.outcome,
        attempts: 1,
        status: result.status,
        warnings: decision.warnings.clone(),
        latency_ms,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;

    use super::*;
    use crate::config::Config;
    use crate::dialect::agora::{Agora, INTERNAL_ERROR};
    use crate::dialect::tencent::Tencent;

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

    #[test]
    fn usable_answers_are_the_providers_verdict() {
        let d = decide(
            &Agora::default(),
            &rule(""),
            MessageType::Txt,
            &answered(r#"{"valid": false, "code": "spam"}"#),
        );
        assert_eq!(
            (d.usable, d.allow, d.sender_text.as_deref()),
            (true, false, Some("spam"))
        );
        let tencent = Tencent::default();
        let d = decide(
            &tencent,
            &rule(""),
            MessageType::Txt,
            &answered(r#"{"ActionStatus":"FAIL","ErrorCode":1,"ErrorInfo":"no links"}"#),
        );
        assert_eq!(
            (d.allow, d.sender_text.as_deref(), d.sender_code),
            (false, Some("no links"), Some(20006))
        );
    }

    #[test]
    fn unusable_answers_follow_on_failure() {
        for body in [r#"{"code": "x"}"#, "not json", r#"{"valid": false, "code": 7}"#] {
            let d = decide(&Agora::default(), &rule(""), MessageType::Txt, &answered(body));
            assert!(!d.usable && d.allow, "{body}: pass by default");
            assert_eq!(d.outcome, Outcome::BadResponse);
            let d = decide(
                &Agora::default(),
                &rule("on_failure = \"block\""),
                MessageType::Txt,
                &answered(body),
            );
            assert_eq!(
                (d.allow, d.sender_text.as_deref()),
                (false, Some(INTERNAL_ERROR)),
                "{body}"
            );
        }
        let d = decide(&Tencent::default(), &rule(""), MessageType::Txt, &answered("<html>"));
        assert_eq!((d.allow, d.outcome), (true, Outcome::BadResponse));
        let timeout = AttemptResult {
            outcome: Outcome::Timeout,
            status: None,
            body: None,
            detail: None,
        };
        let d = decide(
            &Agora::default(),
            &rule("on_failure = \"block\""),
            MessageType::Txt,
            &timeout,
        );
        assert_eq!(
            (d.allow, d.outcome, d.sender_text.as_deref()),
            (false, Outcome::Timeout, Some(INTERNAL_ERROR))
        );
    }
}
