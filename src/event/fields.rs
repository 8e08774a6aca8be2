//! The REST fields of a catalog event (docs/behaviour.md §11.1): their types, whether they are
//! required, their defaults, and how a request's JSON is checked against them. The error of a
//! bad field names it, as the 400 answer shows it.

use serde_json::{Map, Value};

use crate::message::{MAX_ID_CHARS, MessageError};

/// Most ids one list field (`members`, `admins`) may hold.
pub const MAX_LIST: usize = 10_000;
/// Most characters of a free-text field (`reason`, `description`, `msg`…).
pub const MAX_TEXT_CHARS: usize = 4096;

/// A field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A user, group or message id: 1 to 256 characters, no control characters.
    Id,
    /// A list of 1 to [`MAX_LIST`] ids.
    Ids,
    /// Free text, at most [`MAX_TEXT_CHARS`] characters.
    Text,
    /// `true` or `false`.
    Bool,
    /// A non-negative integer (Unix milliseconds, counts).
    Int,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// An IPv4 or IPv6 address.
    Ip,
}

impl Kind {
    /// The JSON type, as `GET /catalog` names it.
    pub fn json_type(self) -> &'static str {
        match self {
            Kind::Id | Kind::Text | Kind::Choice(_) | Kind::Ip => "string",
            Kind::Ids => "array",
            Kind::Bool => "boolean",
            Kind::Int => "integer",
        }
    }
}

/// What a missing optional field becomes.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    /// Nothing: the wire body leaves out what it would say.
    None,
    /// A fixed string.
    Str(&'static str),
    /// A fixed boolean.
    Bool(bool),
    /// Computed from the other fields (after theirs are filled in); the text says how, for
    /// `GET /catalog`.
    From(&'static str, fn(&Map<String, Value>) -> Value),
    /// Made when the event is sent (a fresh id, the time); the text says what.
    AtSend(&'static str),
}

impl Default {
    /// The default as `GET /catalog` shows it: the value, or a sentence, or `null`.
    pub fn describe(&self) -> Value {
        match *self {
            Default::None => Value::Null,
            Default::Str(s) => Value::String(s.into()),
            Default::Bool(b) => Value::Bool(b),
            Default::From(text, _) | Default::AtSend(text) => Value::String(format!("({text})")),
        }
    }
}

/// One REST field of an event.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The JSON name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether a request must give it.
    pub required: bool,
    /// What it is when missing (optional fields only).
    pub default: Default,
    /// One line for `GET /catalog` and `callback-sim catalog`.
    pub doc: &'static str,
}

/// A required field.
pub const fn req(name: &'static str, kind: Kind, doc: &'static str) -> Field {
    Field {
        name,
        kind,
        required: true,
        default: Default::None,
        doc,
    }
}

/// An optional field with its default.
pub const fn opt(name: &'static str, kind: Kind, default: Default, doc: &'static str) -> Field {
    Field {
        name,
        kind,
        required: false,
        default,
        doc,
    }
}

pub(crate) fn bad(field: &str, reason: impl Into<String>) -> MessageError {
    MessageError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_id(v: &Value) -> Result<(), String> {
    let Some(s) = v.as_str() else {
        return Err(format!("must be a string, got {}", json_kind(v)));
    };
    if s.is_empty() || s.chars().count() > MAX_ID_CHARS || s.chars().any(char::is_control) {
        return Err(format!(
            "must be 1 to {MAX_ID_CHARS} characters without control characters"
        ));
    }
    Ok(())
}

/// The JSON kind of a value, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Field {
    /// Checks a given value; `Err` names the field (or the list item) and says what is wrong.
    pub fn check(&self, v: &Value) -> Result<(), MessageError> {
        let name = self.name;
        let r = match self.kind {
            Kind::Id => check_id(v),
            Kind::Ids => match v.as_array() {
                None => Err(format!("must be an array of ids, got {}", json_kind(v))),
                Some(list) if list.is_empty() || list.len() > MAX_LIST => {
                    Err(format!("must list 1 to {MAX_LIST} ids, got {}", list.len()))
                }
                Some(list) => {
                    for (i, item) in list.iter().enumerate() {
                        check_id(item).map_err(|r| bad(&format!("{name}[{i}]"), r))?;
                    }
                    Ok(())
                }
            },
            Kind::Text => match v.as_str() {
                None => Err(format!("must be a string, got {}", json_kind(v))),
                Some(s) if s.chars().count() > MAX_TEXT_CHARS => {
                    Err(format!("must be at most {MAX_TEXT_CHARS} characters"))
                }
                Some(_) => Ok(()),
            },
            Kind::Bool => match v {
                Value::Bool(_) => Ok(()),
                _ => Err(format!("must be true or false, got {}", json_kind(v))),
            },
            Kind::Int => match v.as_u64() {
                Some(_) => Ok(()),
                None => Err(format!("must be a non-negative integer, got {v}")),
            },
            Kind::Choice(words) => match v.as_str() {
                Some(s) if words.contains(&s) => Ok(()),
                Some(s) => Err(format!("must be one of {}, got {s:?}", words.join(", "))),
                None => Err(format!("must be one of {}, got {}", words.join(", "), json_kind(v))),
            },
            Kind::Ip => match v.as_str().map(str::parse::<std::net::IpAddr>) {
                Some(Ok(_)) => Ok(()),
                _ => Err(format!("must be an IPv4 or IPv6 address, got {v}")),
            },
        };
        r.map_err(|reason| bad(name, reason))
    }
}

/// Checks `given` against `fields` and fills in the defaults: unknown fields, missing required
/// ones and wrong types are errors naming the field; `what` ("a message_read event") ends
/// the sentences.
pub fn complete(
    fields: &[Field],
    mut given: Map<String, Value>,
    what: &str,
) -> Result<Map<String, Value>, MessageError> {
    if let Some(unknown) = given.keys().find(|k| !fields.iter().any(|f| f.name == k.as_str())) {
        let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
        return Err(bad(
            unknown,
            format!("is not a field of {what}; its fields are: {}", names.join(", ")),
        ));
    }
    let mut out = Map::with_capacity(fields.len());
    for f in fields {
        match given.remove(f.name) {
            None if !f.required => {}
            // A field is its type or absent: `null` is neither (leave it out for its default).
            Some(Value::Null) if !f.required => {
                return Err(bad(
                    f.name,
                    format!(
                        "must be a {}, got null (leave the field out to get its default)",
                        f.kind.json_type()
                    ),
                ));
            }
            Some(Value::Null) | None => {
                return Err(bad(
                    f.name,
                    format!("is required for {what} ({} {})", f.kind.json_type(), f.doc),
                ));
            }
            Some(v) => {
                f.check(&v)?;
                out.insert(f.name.into(), v);
            }
        }
    }
    for f in fields {
        if out.contains_key(f.name) {
            continue;
        }
        let v = match f.default {
            Default::None | Default::AtSend(_) => continue,
            Default::Str(s) => Value::String(s.into()),
            Default::Bool(b) => Value::Bool(b),
            Default::From(_, derive) => derive(&out),
        };
        if !v.is_null() {
            out.insert(f.name.into(), v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FIELDS: &[Field] = &[
        req("from", Kind::Id, "who"),
        req("members", Kind::Ids, "who joined"),
        opt("op", Kind::Choice(&["add", "remove"]), Default::Str("add"), "what"),
        opt(
            "operator",
            Kind::Id,
            Default::From("the first member", |f| f["members"][0].clone()),
            "by whom",
        ),
        opt("until", Kind::Int, Default::None, "when"),
    ];

    fn run(v: Value) -> Result<Map<String, Value>, MessageError> {
        complete(FIELDS, v.as_object().unwrap().clone(), "a test event")
    }

    #[test]
    fn defaults_fill_in_and_errors_name_the_field() {
        let f = run(json!({"from": "a", "members": ["b", "c"]})).unwrap();
        assert_eq!(
            Value::Object(f),
            json!({"from": "a", "members": ["b", "c"], "op": "add", "operator": "b"})
        );
        assert_eq!(run(json!({"members": ["b"]})).unwrap_err().field, "from");
        assert_eq!(run(json!({"from": 5, "members": ["b"]})).unwrap_err().field, "from");
        assert_eq!(run(json!({"from": "a", "members": []})).unwrap_err().field, "members");
        assert_eq!(
            run(json!({"from": "a", "members": ["b", ""]})).unwrap_err().field,
            "members[1]"
        );
        let e = run(json!({"from": "a", "members": ["b"], "op": "ADD"})).unwrap_err();
        assert!(e.field == "op" && e.reason.contains("add, remove"), "{e}");
        assert_eq!(
            run(json!({"from": "a", "members": ["b"], "until": -1}))
                .unwrap_err()
                .field,
            "until"
        );
        let e = run(json!({"from": "a", "members": ["b"], "colour": 1})).unwrap_err();
        assert!(e.field == "colour" && e.reason.contains("a test event"), "{e}");
        assert_eq!(
            run(json!({"from": "a", "members": ["b"], "until": null}))
                .unwrap_err()
                .field,
            "until"
        );
    }
}
