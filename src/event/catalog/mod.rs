//! The event catalog (docs/behaviour.md §11): every event callback-sim sends besides messages,
//! each defined once — its REST fields and, for each provider that has it, how its wire body
//! is built. The events route, `GET /catalog`, `callback-sim catalog` and `trigger`,
//! `generate --event-mix`, the OpenAPI document and the rule filters all read [`all`].
//! Adding an event is adding one [`EventDef`] to one of the family modules (and its name to
//! [`EventType`]).
//!
//! - `status` — `user_status`, `keyword_alert`, `push_result`;
//! - `messages` — recalls, read receipts, edits, reactions;
//! - `contacts` — contact requests, removals, block lists;
//! - `groups` — group and chatroom operations;
//! - `shape` — the envelopes the definitions share (agora's message, `group_op_event` and
//!   legacy `muc` envelopes; tencent's after-command body).

mod contacts;
mod groups;
mod messages;
pub(crate) mod shape;
mod status;

use serde_json::{Map, Value};

pub use self::status::STATE_CHANGE;
use super::fields::Field;
use crate::domain::{Dialect, EventType};

/// One event of the catalog.
#[derive(Debug)]
pub struct EventDef {
    /// Its name: the REST `type`, the rule filter's word.
    pub name: EventType,
    /// One sentence for `GET /catalog`.
    pub summary: &'static str,
    /// The field that names whom a callback is about (the report's `to`).
    pub subject: &'static str,
    /// Its REST fields.
    pub fields: &'static [Field],
    /// The REST fields of the example `GET /catalog` shows (a JSON object).
    pub example: &'static str,
    /// Its agora callback, if the provider has one.
    pub agora: Option<AgoraDef>,
    /// Its tencent callback, if the provider has one.
    pub tencent: Option<TencentDef>,
}

/// How an event looks on the agora wire.
#[derive(Debug)]
pub struct AgoraDef {
    /// How a receiver tells it apart (`GET /catalog`'s `wire`).
    pub wire: &'static str,
    /// The whole body, `security` left empty for the dialect to sign.
    pub body: fn(&Ctx) -> Value,
    /// The older `chat_type: "muc"` shape, for apps with `group_events = "legacy"`.
    pub legacy: Option<fn(&Ctx) -> Value>,
    /// The list field whose every member gets its own legacy callback (the older shape names
    /// one member per callback).
    pub legacy_each: Option<&'static str>,
}

/// How an event looks on the tencent wire.
#[derive(Debug)]
pub struct TencentDef {
    /// The `CallbackCommand`s it is sent as (`GET /catalog`'s `command`: one, or two joined by
    /// " / " when the chat type decides).
    pub command: &'static str,
    /// The whole body, `CallbackCommand` first.
    pub body: fn(&Ctx) -> Value,
    /// The before-command tencent `pre_send` rules are asked first, if any.
    pub before: Option<Before>,
}

/// A tencent before-command asked about an event (docs/behaviour.md §11.4).
#[derive(Debug)]
pub struct Before {
    /// Its `CallbackCommand`.
    pub command: &'static str,
    /// Whether this event asks it (a join asks only when members were invited).
    pub asks: fn(&Map<String, Value>) -> bool,
    /// Its body, `CallbackCommand` first.
    pub body: fn(&Ctx) -> Value,
    /// Applies an allowing answer (`ErrorCode` 0) to the event's fields: leaves out refused
    /// pairs or members. `Err` says why nothing is left to deliver.
    pub apply: fn(&Value, &mut Map<String, Value>) -> Result<(), String>,
}

impl EventDef {
    /// Whether the provider of `dialect` has this callback.
    pub fn in_dialect(&self, dialect: Dialect) -> bool {
        match dialect {
            Dialect::Agora => self.agora.is_some(),
            Dialect::Tencent => self.tencent.is_some(),
        }
    }
}

/// What an event's wire body is built from.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The event's fields, defaults filled in.
    pub fields: &'a Map<String, Value>,
    /// The id, time and numbers drawn when it was received.
    pub stamp: &'a super::Stamp,
    /// The app's `appkey` (`{org}#{app}`).
    pub appkey: &'a str,
    /// The callback's `callId` (agora; empty for tencent).
    pub call_id: &'a str,
    /// The member this callback is about, when the event makes one callback per member.
    pub target: Option<&'a str>,
}

impl<'a> Ctx<'a> {
    /// A string field, or `""` when absent.
    pub fn s(&self, name: &str) -> &'a str {
        self.fields.get(name).and_then(Value::as_str).unwrap_or_default()
    }

    /// A string field, if given.
    pub fn opt(&self, name: &str) -> Option<&'a str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    /// A boolean field, `false` when absent.
    pub fn b(&self, name: &str) -> bool {
        self.fields.get(name).and_then(Value::as_bool).unwrap_or(false)
    }

    /// An integer field, if given.
    pub fn u(&self, name: &str) -> Option<u64> {
        self.fields.get(name).and_then(Value::as_u64)
    }

    /// A list field's ids (empty when absent).
    pub fn list(&self, name: &str) -> Vec<&'a str> {
        self.fields
            .get(name)
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// A field's value as given (`null` when absent).
    pub fn v(&self, name: &str) -> Value {
        self.fields.get(name).cloned().unwrap_or(Value::Null)
    }

    /// The event's time in Unix milliseconds.
    pub fn ms(&self) -> u64 {
        self.stamp.timestamp
    }
}

/// Every event of the catalog, in the order `GET /catalog` lists them.
pub fn all() -> impl Iterator<Item = &'static EventDef> {
    status::EVENTS
        .iter()
        .chain(messages::EVENTS)
        .chain(contacts::EVENTS)
        .chain(groups::EVENTS)
}

/// The definition of a catalog event; `None` for `chat` and `chat_offline` (messages).
pub fn get(name: EventType) -> Option<&'static EventDef> {
    all().find(|d| d.name == name)
}

/// Finds an event by its REST name; the error lists the names there are.
pub fn find(name: &str) -> Result<&'static EventDef, String> {
    all().find(|d| d.name.as_str() == name).ok_or_else(|| {
        format!(
            "unknown event type {name:?}; the catalog has: {}",
            names(None).join(", ")
        )
    })
}

/// The catalog's names, of one dialect or all.
pub fn names(dialect: Option<Dialect>) -> Vec<&'static str> {
    all()
        .filter(|d| dialect.is_none_or(|di| d.in_dialect(di)))
        .map(|d| d.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_but_messages_has_exactly_one_definition() {
        for t in EventType::ALL {
            let defs = all().filter(|d| d.name == *t).count();
            let message = matches!(t, EventType::Chat | EventType::ChatOffline);
            assert_eq!(defs, usize::from(!message), "{t}");
        }
        for d in all() {
            assert!(d.agora.is_some() || d.tencent.is_some(), "{} is in no dialect", d.name);
            assert!(d.fields.iter().any(|f| f.name == d.subject), "{}: subject", d.name);
            let example: Value = serde_json::from_str(d.example).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            assert!(example.is_object(), "{}", d.name);
        }
    }
}
