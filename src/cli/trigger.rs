//! `callback-sim trigger` and `callback-sim catalog` (docs/behaviour.md §11.2): send one
//! catalog event (or a message) to a running `serve`, filled from the catalog's example and
//! the user's `--set` and `--override`; print the catalog.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::Config;
use crate::dialect::examples;
use crate::domain::Dialect;
use crate::event::catalog;
use crate::event::fields::Kind;

/// What `trigger` was asked.
#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    /// A catalog event name (`callback-sim catalog` lists them), or `message`.
    pub event: String,
    /// The running `serve`'s base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The app (default: the config's first app).
    #[arg(long)]
    pub app: Option<String>,
    /// The app's REST token (default: the app's token in the config).
    #[arg(long)]
    pub token: Option<String>,
    /// The config to read the app and token from, when not given.
    #[arg(long, default_value = "config.toml")]
    pub config: PathBuf,
    /// A REST field: FIELD=VALUE (lists comma-separated, or as JSON arrays). Repeatable.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
    /// An override of the wire body: PATH=JSON, PATH dotted (payload.ext.k, Info.Reason);
    /// the value is JSON, or else a string; null removes the key. Repeatable.
    #[arg(long = "override", value_name = "PATH=JSON")]
    pub overrides: Vec<String>,
    /// Wait for every callback's final outcome; exit 1 if one is not delivered.
    #[arg(long)]
    pub wait: bool,
}

/// Why `trigger` could not send: a usage error (exit 2) or a failure (exit 1).
enum Failure {
    Usage(String),
    Failed(String),
}

/// `callback-sim trigger`.
pub async fn run(args: TriggerArgs) -> ExitCode {
    match trigger(args).await {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The app and token: the flags, else the config's (first) app.
fn credentials(args: &TriggerArgs) -> Result<(String, String, Option<Dialect>), Failure> {
    if let (Some(app), Some(token)) = (&args.app, &args.token) {
        return Ok((app.clone(), token.clone(), None));
    }
    let config = Config::load(&args.config).map_err(|e| {
        Failure::Usage(format!(
            "give --app and --token, or a config to read them from ({}: {e})",
            args.config.display()
        ))
    })?;
    let app = match &args.app {
        Some(id) => config
            .apps
            .iter()
            .find(|a| a.id().as_str() == id)
            .ok_or_else(|| Failure::Usage(format!("app {id:?} is not in {}", args.config.display())))?,
        None => config
            .apps
            .first()
            .ok_or_else(|| Failure::Usage(format!("{} has no app", args.config.display())))?,
    };
    let token = args.token.clone().unwrap_or_else(|| app.token().expose().to_string());
    Ok((app.id().as_str().to_string(), token, Some(app.dialect())))
}

/// The request body: the catalog example's fields (or a sample message), `--set` fields, and
/// `--override` paths under `overrides`.
fn request(args: &TriggerArgs, dialect: Option<Dialect>) -> Result<(&'static str, Value), Failure> {
    let mut body = Map::new();
    let route = if args.event == "message" {
        body.insert("from".into(), "alice".into());
        body.insert("to".into(), "bob".into());
        body.insert("msg".into(), "hello from callback-sim trigger".into());
        "messages"
    } else {
        let def = catalog::find(&args.event).map_err(Failure::Usage)?;
        if let Some(d) = dialect
            && !def.in_dialect(d)
        {
            return Err(Failure::Usage(format!(
                "{} is not an event of the {d} dialect; it has: message, {}",
                args.event,
                catalog::names(Some(d)).join(", ")
            )));
        }
        body.insert("type".into(), args.event.clone().into());
        if let Ok(Value::Object(example)) = serde_json::from_str(def.example) {
            body.extend(example);
        }
        "events"
    };
    for set in &args.set {
        let (field, value) = set
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("--set {set:?}: expected FIELD=VALUE")))?;
        body.insert(field.to_string(), field_value(&args.event, field, value));
    }
    let mut overrides = Value::Object(Map::new());
    for o in &args.overrides {
        let (path, value) = o
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("--override {o:?}: expected PATH=JSON")))?;
        if path.split('.').any(str::is_empty) {
            return Err(Failure::Usage(format!(
                "--override {o:?}: the path must be dotted names, like payload.ext.k"
            )));
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        let mut at = &mut overrides;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let map = match at {
                Value::Object(m) => m,
                _ => unreachable!("only objects are walked"),
            };
            if i + 1 == parts.len() {
                map.insert((*part).into(), value.clone());
                break;
            }
            let next = map.entry(*part).or_insert_with(|| Value::Object(Map::new()));
            if !next.is_object() {
                *next = Value::Object(Map::new());
            }
            at = next;
        }
    }
    if overrides.as_object().is_some_and(|o| !o.is_empty()) {
        body.insert("overrides".into(), overrides);
    }
    Ok((route, Value::Object(body)))
}

/// A `--set` value as the field's type wants it: lists split on commas (or a JSON array),
/// booleans and integers parsed, anything else a string.
fn field_value(event: &str, field: &str, value: &str) -> Value {
    let kind = catalog::find(event)
        .ok()
        .and_then(|d| d.fields.iter().find(|f| f.name == field))
        .map(|f| f.kind);
    match kind {
        Some(Kind::Ids) => serde_json::from_str::<Value>(value)
            .ok()
            .filter(Value::is_array)
            .unwrap_or_else(|| json!(value.split(',').map(str::trim).collect::<Vec<_>>())),
        Some(Kind::Bool | Kind::Int) => serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into())),
        _ if event == "message" && field == "offline" => json!(value.split(',').map(str::trim).collect::<Vec<_>>()),
        _ if event == "message" && matches!(field, "body" | "ext" | "overrides") => {
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()))
        }
        _ => Value::String(value.into()),
    }
}

async fn trigger(args: TriggerArgs) -> Result<ExitCode, Failure> {
    let (app, token, dialect) = credentials(&args)?;
    let (route, body) = request(&args, dialect)?;
    let base = args.server.trim_end_matches('/');
    let url = format!(
        "{base}/app-id/{app}/{route}{}",
        if args.wait { "?wait=true" } else { "" }
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| Failure::Failed(format!("cannot build an HTTP client: {e}")))?;
    let answer = client
        .post(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .map_err(|e| Failure::Failed(format!("cannot reach {base}: {e}")))?;
    let status = answer.status();
    let text = answer
        .text()
        .await
        .map_err(|e| Failure::Failed(format!("reading the answer of {url}: {e}")))?;
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
    if !status.is_success() {
        let why = json["error_description"].as_str().unwrap_or("see the answer above");
        return Err(Failure::Failed(format!("{url} answered {status}: {why}")));
    }
    // Refused by a pre-send rule, or taken by no rule: nothing reaches a receiver.
    let data = &json["data"];
    if data["accepted"].as_bool() == Some(false) {
        eprintln!("not accepted: a pre-send rule refused it (see warnings and code above)");
        return Ok(ExitCode::from(1));
    }
    if data["queued"].as_u64() == Some(0) && data["silently_dropped"].as_bool() != Some(true) {
        eprintln!("nothing was queued: no post_send rule takes it (see warnings above)");
        return Ok(ExitCode::from(1));
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut all_delivered = true;
    for cb in json["data"]["callbacks"].as_array().into_iter().flatten() {
        let outcome = cb["outcome"].as_str().unwrap_or("?");
        eprintln!(
            "{} {} {} → {outcome} (last attempt {}, {} attempt(s))",
            cb["rule"].as_str().unwrap_or("?"),
            cb["event_type"].as_str().unwrap_or("?"),
            cb["call_id"].as_str().unwrap_or("?"),
            cb["last_attempt"].as_str().unwrap_or("?"),
            cb["attempts"]
        );
        if outcome != "delivered" {
            all_delivered = false;
        }
    }
    Ok(if all_delivered {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `callback-sim catalog`: every event with its fields and each provider's wire, as text or
/// as the `GET /catalog` JSON.
pub fn catalog_command(dialect: Option<Dialect>, json: bool) -> ExitCode {
    let doc = examples::document(dialect);
    if json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    for e in doc["events"].as_array().into_iter().flatten() {
        println!(
            "{}  {}",
            e["name"].as_str().unwrap_or_default(),
            e["summary"].as_str().unwrap_or_default()
        );
        for (name, f) in e["fields"].as_object().into_iter().flatten() {
            let default = match &f["default"] {
                Value::Null => String::new(),
                d => format!(
                    " (default {})",
                    d.as_str().map(str::to_string).unwrap_or_else(|| d.to_string())
                ),
            };
            println!(
                "    {}{name}: {}{default} — {}",
                if f["required"] == true { "*" } else { " " },
                f["type"].as_str().unwrap_or_default(),
                f["description"].as_str().unwrap_or_default()
            );
        }
        if let Some(a) = e["dialects"].get("agora") {
            println!("    agora:   {}", a["wire"].as_str().unwrap_or_default());
        }
        if let Some(t) = e["dialects"].get("tencent") {
            let before = t["before_command"]
                .as_str()
                .map(|b| format!(" (asks {b} first)"))
                .unwrap_or_default();
            println!("    tencent: {}{before}", t["command"].as_str().unwrap_or_default());
        }
        println!();
    }
    println!(
        "* required. `callback-sim catalog --json` prints each example body; `callback-sim trigger NAME` sends one."
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(event: &str, set: &[&str], overrides: &[&str]) -> TriggerArgs {
        TriggerArgs {
            event: event.into(),
            server: "http://127.0.0.1:1".into(),
            app: Some("a".into()),
            token: Some("t".into()),
            config: PathBuf::from("none.toml"),
            set: set.iter().map(|s| s.to_string()).collect(),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            wait: false,
        }
    }

    #[test]
    fn requests_start_from_the_example_and_take_sets_and_overrides() {
        let a = args(
            "group_member_joined",
            &["members=dave,erin", "chatroom=true"],
            &["payload.ext.k=1", "member_count=null", "Info.Reason=\"x\""],
        );
        let Ok((route, body)) = request(&a, Some(Dialect::Agora)) else {
            panic!()
        };
        assert_eq!(route, "events");
        assert_eq!(body["group_id"], "group1");
        assert_eq!(body["members"], json!(["dave", "erin"]));
        assert_eq!(body["chatroom"], true);
        assert_eq!(
            body["overrides"],
            json!({"payload": {"ext": {"k": 1}}, "member_count": null, "Info": {"Reason": "x"}})
        );
        let Ok((route, body)) = request(&args("message", &["msg=hi"], &[]), None) else {
            panic!()
        };
        assert_eq!((route, body["msg"].as_str()), ("messages", Some("hi")));
        assert!(matches!(request(&args("nap", &[], &[]), None), Err(Failure::Usage(_))));
        assert!(matches!(
            request(&args("reaction_changed", &[], &[]), Some(Dialect::Tencent)),
            Err(Failure::Usage(e)) if e.contains("tencent")
        ));
        assert!(matches!(
            request(&args("message", &["oops"], &[]), None),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            request(&args("message", &[], &["a..b=1"]), None),
            Err(Failure::Usage(_))
        ));
    }
}
