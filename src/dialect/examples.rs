//! The catalog as a document (`GET /catalog`, `callback-sim catalog`; docs/behaviour.md
//! §11.2): each event's fields, and for each provider that has it, how a receiver tells it
//! apart and a complete example body, signed, exactly as the simulator sends it.

use serde_json::{Map, Value, json};

use super::{Recipient, WireSettings, wire};
use crate::domain::{AppId, Dialect};
use crate::event::catalog::{self, EventDef};
use crate::event::{Event, Stamp};
use crate::ids::Ids;

/// The app the examples are sent for: its id, `appkey`, `SdkAppid` and the rule's secret.
pub const EXAMPLE_APP: &str = "demo";
/// The `appkey` of the examples.
pub const EXAMPLE_APPKEY: &str = "sim#demo";
/// The signing secret of the examples (`security` can be checked with it).
pub const EXAMPLE_SECRET: &str = "s3cr3t_Key";
/// The `SdkAppid` of the tencent examples.
pub const EXAMPLE_SDK_APP_ID: u64 = 1_400_000_000;
/// The time of the examples: 2023-11-14T22:13:20Z.
pub const EXAMPLE_TIME_MS: u64 = 1_700_000_000_000;

/// The stamp of the examples: fixed, so that they read the same every time.
pub fn example_stamp() -> Stamp {
    Stamp {
        msg_id: "1700000000000000".into(),
        timestamp: EXAMPLE_TIME_MS,
        seq: 1,
        random: 2_837_546,
    }
}

/// The catalog's example event of `def`, from its example fields.
pub fn example_event(def: &'static EventDef) -> Event {
    let fields: Value = serde_json::from_str(def.example).expect("catalog examples are JSON (tested)");
    Event::new(def.name, fields).expect("catalog examples are valid (tested)")
}

/// One event's example callback in `dialect`: the body (and tencent's query string), as the
/// simulator would send it for the example app; `None` when the provider has no such
/// callback. `legacy` picks agora's older group shape.
pub fn example(def: &'static EventDef, dialect: Dialect, legacy: bool) -> Option<(Value, Option<String>)> {
    if !def.in_dialect(dialect) {
        return None;
    }
    let w = wire(
        dialect,
        WireSettings {
            sdk_app_id: EXAMPLE_SDK_APP_ID,
            appkey: EXAMPLE_APPKEY.into(),
            legacy_groups: legacy,
            token: None,
        },
    );
    let event = example_event(def);
    let stamp = example_stamp();
    let prepared = w.event(&event, &stamp);
    let to: Recipient<'_> = *prepared.recipients().first()?;
    let app = AppId::parse(EXAMPLE_APP).expect("a valid app id");
    let call_id = Ids::seeded(EXAMPLE_TIME_MS, 1).call_id(&app);
    let encoded = prepared.encode(to, &call_id, EXAMPLE_SECRET);
    let body = serde_json::from_slice(&encoded.body).expect("bodies are JSON");
    Some((body, encoded.query.map(|q| q.to_string())))
}

/// The catalog document: `{"events": [{"name", "summary", "fields", "dialects"}]}`, of every
/// event or of one dialect's.
pub fn document(only: Option<Dialect>) -> Value {
    let events: Vec<Value> = catalog::all()
        .filter(|d| only.is_none_or(|di| d.in_dialect(di)))
        .map(|d| {
            let mut fields = Map::new();
            for f in d.fields {
                let mut spec = json!({
                    "type": f.kind.json_type(),
                    "required": f.required,
                    "default": f.default.describe(),
                    "description": f.doc,
                });
                if let crate::event::fields::Kind::Choice(words) = f.kind {
                    spec["enum"] = json!(words);
                }
                fields.insert(f.name.into(), spec);
            }
            let mut dialects = Map::new();
            if let (Some(a), Some((body, _))) = (&d.agora, example(d, Dialect::Agora, false))
                && only.is_none_or(|di| di == Dialect::Agora)
            {
                let mut entry = json!({ "wire": a.wire, "example": body });
                if a.legacy.is_some()
                    && let Some((legacy, _)) = example(d, Dialect::Agora, true)
                {
                    entry["legacy_example"] = legacy;
                }
                dialects.insert("agora".into(), entry);
            }
            if let (Some(t), Some((body, query))) = (&d.tencent, example(d, Dialect::Tencent, false))
                && only.is_none_or(|di| di == Dialect::Tencent)
            {
                let mut entry = json!({ "command": t.command, "example": body, "query": query });
                if let Some(b) = &t.before {
                    entry["before_command"] = b.command.into();
                }
                dialects.insert("tencent".into(), entry);
            }
            // The REST body of the examples: `POST …/events` with it sends them.
            let mut request = json!({ "type": d.name.as_str() });
            if let (Value::Object(r), Ok(Value::Object(f))) = (&mut request, serde_json::from_str(d.example)) {
                r.extend(f);
            }
            json!({
                "name": d.name.as_str(),
                "summary": d.summary,
                "fields": fields,
                "example_request": request,
                "dialects": dialects,
            })
        })
        .collect();
    json!({ "events": events })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_builds_in_each_of_its_dialects() {
        for d in catalog::all() {
            for dialect in Dialect::ALL {
                let got = example(d, *dialect, false);
                assert_eq!(got.is_some(), d.in_dialect(*dialect), "{} {dialect}", d.name);
            }
        }
        let doc = document(Some(Dialect::Tencent));
        let names: Vec<&str> = doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"message_recalled") && !names.contains(&"reaction_changed"));
    }
}
