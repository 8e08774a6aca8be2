//! Events besides messages (`POST /app-id/{app_id}/events`, docs/behaviour.md §11): an
//! [`Event`] is a catalog entry ([`catalog::EventDef`]) with its fields checked and defaults
//! filled in, and the user's `overrides`. It goes to every enabled post-send rule whose
//! `event_types` allow it, with the delivery policy of messages. The dialect builds its wire
//! body from the catalog ([`Event::agora_body`], [`Event::tencent_body`]); overrides are merged
//! into that body before it is signed.

pub mod catalog;
pub mod fields;

use serde_json::{Map, Value};

use self::catalog::{Ctx, EventDef};
use self::fields::bad;
use crate::domain::{Dialect, EventType};
use crate::message::MessageError;

/// What is drawn once when an event (or message) is received: its own id, its time, a
/// sequence number and a random number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The event's own message id (agora `msg_id` of action events).
    pub msg_id: String,
    /// Unix ms at which the simulator received it.
    pub timestamp: u64,
    /// A per-process sequence number (tencent `MsgSeq`).
    pub seq: u32,
    /// A random number (tencent `Random`, device ids).
    pub random: u32,
}

/// An event, checked: every field valid, defaults filled in.
#[derive(Debug, Clone)]
pub struct Event {
    def: &'static EventDef,
    fields: Map<String, Value>,
    overrides: Option<Map<String, Value>>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.def.name == other.def.name && self.fields == other.fields && self.overrides == other.overrides
    }
}

impl Event {
    /// A catalog event from its fields (a JSON object), checked as the REST route checks
    /// them; `chat`/`chat_offline` (messages) are not events.
    ///
    /// ```
    /// use callback_sim::{Event, EventType};
    /// let e = Event::new(EventType::UserStatus, serde_json::json!({"user": "u1", "status": "online"})).unwrap();
    /// assert_eq!(e.subject(), "u1");
    /// ```
    pub fn new(name: EventType, fields: Value) -> Result<Self, MessageError> {
        let def = catalog::get(name).ok_or_else(|| {
            bad(
                "type",
                format!("{name} is a message, not an event: send it to POST /app-id/{{app_id}}/messages"),
            )
        })?;
        let Value::Object(fields) = fields else {
            return Err(bad("(body)", "must be a JSON object"));
        };
        Self::from_def(def, fields, None)
    }

    fn from_def(
        def: &'static EventDef,
        fields: Map<String, Value>,
        overrides: Option<Map<String, Value>>,
    ) -> Result<Self, MessageError> {
        let what = format!("a {} event", def.name);
        let fields = fields::complete(def.fields, fields, &what)?;
        Ok(Self { def, fields, overrides })
    }

    /// The same event with `overrides` deep-merged into its wire body before signing.
    pub fn with_overrides(mut self, overrides: Map<String, Value>) -> Self {
        self.overrides = Some(overrides);
        self
    }

    /// Its catalog name: what rules filter on.
    pub fn event_type(&self) -> EventType {
        self.def.name
    }

    /// Its catalog entry.
    pub(crate) fn def(&self) -> &'static EventDef {
        self.def
    }

    /// Its fields, defaults filled in.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// Its overrides, if any.
    pub fn overrides(&self) -> Option<&Map<String, Value>> {
        self.overrides.as_ref()
    }

    /// Whom its callbacks are about (the report's `to`): the user, the recipient, the group.
    pub fn subject(&self) -> &str {
        self.fields
            .get(self.def.subject)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn ctx<'a>(&'a self, stamp: &'a Stamp, appkey: &'a str, call_id: &'a str) -> Ctx<'a> {
        Ctx {
            fields: &self.fields,
            stamp,
            appkey,
            call_id,
            target: None,
        }
    }

    /// Whom each agora callback is about: one per member of the list the legacy shape names
    /// one at a time, else the event's subject alone.
    pub(crate) fn agora_targets(&self, legacy: bool) -> Vec<&str> {
        let each = self.def.agora.as_ref().and_then(|a| a.legacy_each).filter(|_| legacy);
        match each.and_then(|f| self.fields.get(f)).and_then(Value::as_array) {
            Some(list) => list.iter().filter_map(Value::as_str).collect(),
            None => vec![self.subject()],
        }
    }

    /// The agora body, overrides merged, `security` still to sign; `None` when agora has no
    /// such callback. `legacy` picks the older `muc` shape of group events where there is one.
    pub(crate) fn agora_body(
        &self,
        stamp: &Stamp,
        appkey: &str,
        call_id: &str,
        legacy: bool,
        target: Option<&str>,
    ) -> Option<Value> {
        let a = self.def.agora.as_ref()?;
        let build = if legacy { a.legacy.unwrap_or(a.body) } else { a.body };
        let mut ctx = self.ctx(stamp, appkey, call_id);
        ctx.target = target.filter(|_| legacy && a.legacy_each.is_some());
        let mut body = build(&ctx);
        if let Some(o) = &self.overrides {
            merge(&mut body, o);
        }
        Some(body)
    }

    /// The tencent command and body, overrides merged; `None` when tencent has no such
    /// callback. The command is the one the catalog chose, before overrides.
    pub(crate) fn tencent_body(&self, stamp: &Stamp) -> Option<(String, Value)> {
        let t = self.def.tencent.as_ref()?;
        let mut body = (t.body)(&self.ctx(stamp, "", ""));
        let command = body
            .get("CallbackCommand")
            .and_then(Value::as_str)
            .unwrap_or(t.command)
            .to_string();
        if let Some(o) = &self.overrides {
            merge(&mut body, o);
        }
        Some((command, body))
    }

    /// The tencent before-command `pre_send` rules are asked about this event, and its body;
    /// `None` when there is none.
    pub(crate) fn tencent_before(&self, stamp: &Stamp) -> Option<(&'static str, Value)> {
        let before = self.def.tencent.as_ref()?.before.as_ref()?;
        (before.asks)(&self.fields).then(|| (before.command, (before.body)(&self.ctx(stamp, "", ""))))
    }

    /// Applies an allowing before-command answer: refused pairs or members are left out.
    /// `Err` says why nothing is left to deliver.
    pub(crate) fn apply_before(&mut self, answer: &Value) -> Result<(), String> {
        match self.def.tencent.as_ref().and_then(|t| t.before.as_ref()) {
            Some(before) => (before.apply)(answer, &mut self.fields),
            None => Ok(()),
        }
    }
}

/// Deep-merges `patch` into `target` (docs/behaviour.md §11.1): objects merge key by key, any
/// other value replaces, `null` removes the key. Keys keep their place; new keys go last.
pub fn merge(target: &mut Value, patch: &Map<String, Value>) {
    let Value::Object(t) = target else {
        *target = Value::Object(Map::new());
        return merge(target, patch);
    };
    for (k, v) in patch {
        match v {
            Value::Null => {
                t.shift_remove(k);
            }
            Value::Object(p) if t.get(k).is_some_and(Value::is_object) => {
                merge(t.get_mut(k).expect("checked above"), p);
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Reads the REST body of `POST …/events` (docs/behaviour.md §11.1): `{"type": name,
/// ...fields, "overrides": {...}}`, for an app of `dialect`. Every error names the field, the
/// event and the dialect.
pub fn parse_request(bytes: &[u8], dialect: Dialect) -> Result<Event, MessageError> {
    let mut body: Map<String, Value> = crate::message::parse_json_object(bytes)?;
    let name = match body.remove("type") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(bad(
                "type",
                format!(
                    "must be a catalog event name (a string), got {}",
                    fields::json_kind(&other)
                ),
            ));
        }
        None => {
            return Err(bad(
                "type",
                format!(
                    "is required: the event's catalog name; the {dialect} dialect has: {}",
                    catalog::names(Some(dialect)).join(", ")
                ),
            ));
        }
    };
    let def = catalog::find(&name).map_err(|e| bad("type", e))?;
    if !def.in_dialect(dialect) {
        return Err(bad(
            "type",
            format!(
                "{name} is not an event of the {dialect} dialect (its provider has no such callback); the {dialect} \
                 dialect has: {}",
                catalog::names(Some(dialect)).join(", ")
            ),
        ));
    }
    let overrides = match body.remove("overrides") {
        None => None,
        Some(Value::Object(o)) => Some(o),
        Some(other) => {
            return Err(bad(
                "overrides",
                format!(
                    "must be a JSON object to merge into the {name} wire body, got {} ({dialect} dialect)",
                    fields::json_kind(&other)
                ),
            ));
        }
    };
    Event::from_def(def, body, overrides).map_err(|e| MessageError {
        reason: format!("{} ({name} event, {dialect} dialect)", e.reason),
        field: e.field,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value, dialect: Dialect) -> Result<Event, MessageError> {
        parse_request(v.to_string().as_bytes(), dialect)
    }

    #[test]
    fn requests_parse_with_defaults() {
        let e = parse(
            json!({"type": "user_status", "user": "u1", "status": "offline"}),
            Dialect::Agora,
        )
        .unwrap();
        assert_eq!(e.event_type(), EventType::UserStatus);
        assert_eq!(e.fields()["reason"], "logout");
        assert_eq!(e.subject(), "u1");
        let e = parse(
            json!({"type": "group_member_joined", "group_id": "g", "members": ["a", "b"]}),
            Dialect::Tencent,
        )
        .unwrap();
        assert_eq!((e.subject(), e.fields()["operator"].as_str()), ("g", Some("a")));
    }

    #[test]
    fn errors_name_the_field_the_event_and_the_dialect() {
        let e = parse(json!({"type": "nap"}), Dialect::Agora).unwrap_err();
        assert!(e.field == "type" && e.reason.contains("message_recalled"), "{e}");
        let e = parse(json!({"type": "reaction_changed", "from": "a"}), Dialect::Tencent).unwrap_err();
        assert!(
            e.field == "type" && e.reason.contains("tencent") && e.reason.contains("message_read"),
            "{e}"
        );
        let e = parse(json!({"type": "message_read", "from": "a", "to": "b"}), Dialect::Agora).unwrap_err();
        assert_eq!(e.field, "msg_id");
        assert!(e.reason.contains("message_read event, agora dialect"), "{e}");
        let e = parse(
            json!({"type": "message_read", "from": 1, "to": "b", "msg_id": "m"}),
            Dialect::Agora,
        )
        .unwrap_err();
        assert!(e.field == "from" && e.reason.contains("string"), "{e}");
        let e = parse(
            json!({"type": "user_status", "user": "u", "status": "online", "overrides": [1]}),
            Dialect::Agora,
        )
        .unwrap_err();
        assert_eq!(e.field, "overrides");
        assert_eq!(parse(json!({"user": "u"}), Dialect::Agora).unwrap_err().field, "type");
        assert_eq!(Event::new(EventType::Chat, json!({})).unwrap_err().field, "type");
    }

    #[test]
    fn overrides_merge_deeply_and_null_removes() {
        let mut body = json!({"a": 1, "p": {"x": 1, "y": 2}, "z": 3});
        let patch = json!({"p": {"y": null, "w": [1]}, "a": "one", "z": null, "n": {"k": true}});
        merge(&mut body, patch.as_object().unwrap());
        assert_eq!(body.to_string(), r#"{"a":"one","p":{"x":1,"w":[1]},"n":{"k":true}}"#);
    }
}
