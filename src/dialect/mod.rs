//! Provider wire formats: everything that differs between providers, behind one interface.
//!
//! A [`Wire`] is one app's provider: it builds each callback's bytes (body, query string,
//! signature), reads the receiver's answers (post-send acknowledgements, pre-send verdicts),
//! verifies what a receiver got (for `callback-sim sink`), and gives the provider's delivery
//! defaults. The rest of the crate calls it without asking which provider it is; adding a
//! provider is adding a module here and its line in [`wire`].
//!
//! - `agora` — Agora Chat / Shengwang-Easemob (docs/behaviour.md §4.1, §4.2): signed JSON.
//! - `tencent` — Tencent Cloud IM (docs/behaviour.md §4.3, §11.4): the command in the query
//!   string, `Sign`/`RequestTime` there when the app has a token, `{"ActionStatus",
//!   "ErrorCode","ErrorInfo"}` answers.
//!
//! Events' bodies come from the catalog (`event::catalog`); the dialect adds what it owns:
//! agora's signature, tencent's query string.

pub mod agora;
pub mod examples;
pub mod tencent;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::domain::{Dialect, EventType, MessageType, RuleKind};
use crate::event::{Event, Stamp};
use crate::message::Message;

/// What a provider needs from an app's settings.
#[derive(Debug, Clone, Default)]
pub struct WireSettings {
    /// Tencent: the `SdkAppid` in every query string.
    pub sdk_app_id: u64,
    /// Agora: the `appkey` (`{org}#{app}`) event bodies carry.
    pub appkey: String,
    /// Agora: group events in the older `chat_type: "muc"` shape (`group_events = "legacy"`).
    pub legacy_groups: bool,
    /// Tencent: the webhook token that signs every URL (`Sign`, `RequestTime`).
    pub token: Option<String>,
}

/// The provider of an app, with what the provider needs from the app's settings.
pub fn wire(dialect: Dialect, settings: WireSettings) -> Arc<dyn Wire> {
    match dialect {
        Dialect::Agora => Arc::new(agora::Agora {
            appkey: settings.appkey,
            legacy_groups: settings.legacy_groups,
        }),
        Dialect::Tencent => Arc::new(tencent::Tencent {
            sdk_app_id: settings.sdk_app_id,
            token: settings.token,
        }),
    }
}

/// The provider's delivery defaults (docs/behaviour.md §2): what an app gets when its config
/// does not say.
pub fn defaults(dialect: Dialect) -> Defaults {
    match dialect {
        Dialect::Agora => agora::DEFAULTS,
        Dialect::Tencent => tencent::DEFAULTS,
    }
}

/// A provider's delivery defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// How long one post-send attempt may take.
    pub timeout: Duration,
    /// Immediate retries after a failed post-send attempt.
    pub retries: u32,
    /// Whether failures ban the rule.
    pub bans: bool,
    /// How long a pre-send verdict is waited for.
    pub pre_send_timeout: Duration,
    /// Whether a rule needs a signing secret.
    pub signs: bool,
}

/// The bytes of one callback: its body, and the query string appended to the rule's URL.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The exact body, the same on every attempt and replay.
    pub body: Bytes,
    /// The query string, if the provider sends one.
    pub query: Option<Arc<str>>,
}

/// What every callback of one message says about it, whatever the provider.
#[derive(Debug, Clone, Copy)]
pub struct MessageFacts<'a> {
    /// The message as received (or as rewritten by a pre-send rule).
    pub msg: &'a Message,
    /// Its id, shared by all its callbacks (agora `msg_id`).
    pub msg_id: &'a str,
    /// Unix ms at which the simulator received it.
    pub timestamp: u64,
    /// A per-process sequence number, one per message (tencent `MsgSeq`).
    pub seq: u32,
    /// A random number drawn once per message (tencent `MsgRandom`).
    pub random: u32,
}

/// One callback of a prepared message or event: its event type and who it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient<'a> {
    /// `chat`, `chat_offline`, or the event's type: what rules filter on.
    pub event_type: EventType,
    /// The callback's `to`: the recipient, the offline member, the user or the group.
    pub to: &'a str,
}

/// A message or event made ready for its callbacks: the work shared by all of them (a
/// serialized payload, a whole unsigned body) is done once.
pub trait Prepared: Send + Sync {
    /// The callbacks it makes for each rule that takes them, before the rules' filters.
    fn recipients(&self) -> &[Recipient<'_>];

    /// The bytes of one callback to `to`, with its `call_id`, signed with the rule's `secret`
    /// where the provider signs.
    fn encode(&self, to: Recipient<'_>, call_id: &str, secret: &str) -> Encoded;
}

/// A pre-send receiver's usable verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Whether the message may be delivered.
    pub allow: bool,
    /// Allowed, but dropped without a word: the sender is told it was sent, and no post-send
    /// callback is made (tencent `ErrorCode` 2).
    pub silent_drop: bool,
    /// What the sender is told when it is not (with `notify_sender`).
    pub sender_text: Option<String>,
    /// The error code the sender gets when it is not, where the provider has one (tencent
    /// 20006, or the answer's 120001–130000).
    pub sender_code: Option<i64>,
    /// A text rewrite the post-send callbacks carry instead of the original.
    pub rewrite: Option<Rewrite>,
    /// Sentences about the receiver's mistakes (e.g. a payload that was ignored).
    pub warnings: Vec<String>,
}

/// A rewrite of a message by a pre-send receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    /// The new text (agora: a text message's `msg`).
    pub msg: Option<String>,
    /// New extension fields; `None` keeps the message's own.
    pub ext: Option<Map<String, Value>>,
    /// Fields to merge into the post-send bodies (tencent: `MsgBody`, `CloudCustomData`).
    pub wire: Option<Map<String, Value>>,
}

/// A before-command's usable answer about an event (tencent, docs/behaviour.md §11.4).
#[derive(Debug, Clone, PartialEq)]
pub struct EventAnswer {
    /// `ErrorCode` 0: the event happens (maybe with pairs or members left out).
    pub allow: bool,
    /// What the sender is told when it does not.
    pub sender_text: Option<String>,
    /// The whole answer, for the catalog to read what it refuses.
    pub answer: Value,
}

/// What a receiver made of a callback's signature, as [`Sink`](crate::Sink) checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// `security` matches MD5(callId + secret + timestamp).
    Valid,
    /// It does not.
    Invalid,
    /// The receiver knows the secret but the body has no `callId`/`timestamp`/`security`.
    Missing,
    /// No secret given: nothing to check.
    Unchecked,
    /// The body is not JSON.
    Unparsable,
    /// Tencent (unsigned): the query string is right for the body.
    QueryOk,
    /// Tencent: a query parameter is missing or disagrees with the body.
    QueryBad,
    /// Tencent with a token: `RequestTime` is more than 60 s away from now.
    Stale,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signature::Valid => "ok",
            Signature::Invalid => "BAD",
            Signature::Missing => "MISSING",
            Signature::Unchecked => "unchecked",
            Signature::Unparsable => "unparsable",
            Signature::QueryOk => "query-ok",
            Signature::QueryBad => "query-BAD",
            Signature::Stale => "STALE",
        })
    }
}

/// What a receiver makes of one callback it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<'a> {
    /// The signature (or query string) verdict.
    pub signature: Signature,
    /// What marks the callback as a repeat (a retry or a replay sends it again): agora's
    /// `callId`, tencent's `CallbackCommand/MsgKey`; `None` when there is none.
    pub dedupe_key: Option<Cow<'a, str>>,
}

/// One provider's wire format. See the module documentation.
pub trait Wire: Send + Sync + fmt::Debug {
    /// A message's callbacks for rules of `kind`: agora makes a `chat` callback and one
    /// `chat_offline` per offline recipient; tencent one before- or after-command.
    fn message<'a>(&self, facts: MessageFacts<'a>, kind: RuleKind) -> Box<dyn Prepared + 'a>;

    /// An event's post-send callbacks, from its catalog entry (docs/behaviour.md §11).
    fn event<'a>(&self, event: &'a Event, stamp: &'a Stamp) -> Box<dyn Prepared + 'a>;

    /// The before-command `pre_send` rules are asked about an event, if the provider has one
    /// (tencent, docs/behaviour.md §11.4).
    fn event_before(&self, _event: &Event, _stamp: &Stamp) -> Option<Encoded> {
        None
    }

    /// Reads a before-command's answer about an event; `Err` says why it is not usable.
    fn event_answer(&self, _body: &[u8]) -> Result<EventAnswer, String> {
        Err("this provider asks nothing about events".into())
    }

    /// The query string of one request, as sent now (`now_ms`): tencent apps with a token sign
    /// every URL here, so that retries and replays carry a fresh `RequestTime`.
    fn sign_query<'q>(&self, query: Option<&'q str>, _now_ms: u64) -> Option<Cow<'q, str>> {
        query.map(Cow::Borrowed)
    }

    /// Whether a post-send callback's 200 answer must be read and checked
    /// ([`check_answer`](Self::check_answer)); agora does not interpret it.
    fn reads_answers(&self) -> bool;

    /// Checks a post-send 200 answer; `Err` says why it is a `bad_response`.
    fn check_answer(&self, body: &[u8]) -> Result<(), String>;

    /// Reads a pre-send answer (status 200, at most the answer limit); `Err` says why it is
    /// not usable (`bad_response`). `rule` names the rule in warnings.
    fn pre_send_verdict(&self, body: &[u8], msg_type: MessageType, rule: &str) -> Result<Verdict, String>;

    /// What the sender is told when a pre-send rule with `on_failure = "block"` got no usable
    /// answer.
    fn pre_send_failure_text(&self) -> &'static str;

    /// What a receiver of callbacks checks: the signature (when it knows the `secret`), or the
    /// query string against the body.
    fn check_received<'b>(&self, query: Option<&str>, body: &'b [u8], secret: Option<&str>) -> Checked<'b>;

    /// The body a well-behaved receiver answers with: accepting (`ok`), or refusing (agora
    /// reads nothing in a post-send answer: empty; tencent reads `ActionStatus`/`ErrorCode`).
    fn receiver_answer(&self, ok: bool) -> &'static str;

    /// A callback body a person edited (the console's resend, docs/behaviour.md §12), made
    /// ready to send: a JSON object, written compactly with its fields in the order given, and
    /// signed again with the rule's `secret` where the provider signs. `Err` says what is
    /// wrong with it.
    fn resign(&self, edited: &[u8], secret: &str) -> Result<Bytes, String>;
}

/// An edited body (docs/behaviour.md §12): a JSON object, its fields in the order given.
pub(crate) fn edited_object(edited: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(edited) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err("the body is not a JSON object".into()),
        Err(e) => Err(format!("the body is not a JSON object: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edited_bodies_keep_their_field_order_and_lose_only_whitespace() {
        let edited = "{\n  \"z\": 1,\n  \"a\": {\"y\": [1, 2], \"b\": \"x y\\\" z\"},\n  \"m\": null\n}\n";
        let fields = edited_object(edited.as_bytes()).unwrap();
        let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        assert_eq!(
            serde_json::to_vec(&fields).unwrap(),
            br#"{"z":1,"a":{"y":[1,2],"b":"x y\" z"},"m":null}"#
        );
        for bad in ["[1]", "{\"a\":", "{} x", "\"s\"", ""] {
            assert!(edited_object(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_dialect_answers_its_own_body() {
        let (agora, tencent) = (
            wire(Dialect::Agora, WireSettings::default()),
            wire(Dialect::Tencent, WireSettings::default()),
        );
        assert_eq!((agora.receiver_answer(true), agora.receiver_answer(false)), ("", ""));
        assert!(tencent.receiver_answer(true).contains(r#""ErrorCode":0"#));
        assert!(tencent.receiver_answer(false).contains(r#""ErrorCode":1"#));
        assert_eq!(defaults(Dialect::Agora).timeout, Duration::from_secs(60));
        assert_eq!(defaults(Dialect::Tencent).retries, 0);
    }
}
