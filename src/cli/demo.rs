//! `callback-sim demo`: the main job on the embedded default, narrated.
//!
//! One process: two sinks on loopback (one healthy, one that starts failing), the simulator
//! built from the repo's `config.toml` (or the copy built into the binary) with its data in a
//! temp dir and short ban settings, traffic over the real REST API, a ban, the exception store
//! filling up, and a replay draining it. Everything it does, a user can do by hand with the
//! commands it prints at the end.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::{BanConfig, Config, Filter};
use crate::{CallbackUrl, EventType, RuleKind, RuleName, Sim, Sink, SinkOptions};

/// The repo's config.toml, for when the demo runs outside the repo.
const EMBEDDED_CONFIG: &str = include_str!("../../config.toml");
/// Ban settings made for the demo: a ban after 10 failures within 10 s, lasting 3 s per level.
fn demo_ban() -> BanConfig {
    BanConfig {
        failure_threshold: 10,
        window: Duration::from_secs(10),
        base: Duration::from_secs(3),
        max_level: 5,
        level_memory: Duration::from_secs(86_400),
    }
}
/// Messages in the first, healthy burst.
const BURST: usize = 40;
/// The whole demo gives up after this long.
const LIMIT: Duration = Duration::from_secs(60);

/// Why the demo could not run; printed as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DemoError(String);

fn fail(what: &str, e: impl std::fmt::Display) -> DemoError {
    DemoError(format!("{what}: {e}"))
}

/// Runs the demo; exit code 0 when every step did what it should, 1 when one did not, 2 when
/// the config (`./config.toml`) is invalid or cannot be used by the demo.
pub async fn run() -> ExitCode {
    let (config, source) = match load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid config: {e}");
            return ExitCode::from(2);
        }
    };
    match tokio::time::timeout(LIMIT, demo(config, source)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("demo failed: it did not finish within {LIMIT:?}");
            ExitCode::FAILURE
        }
    }
}

/// `./config.toml` if there is one, else the embedded copy; its first app's first rule must be
/// one the demo can use (it signs, so it needs a secret).
fn load_config() -> Result<(Config, &'static str), DemoError> {
    let local = Path::new("config.toml");
    let (c, source) = if local.is_file() {
        let c = Config::load(local).map_err(|e| DemoError(e.to_string()))?;
        (c, "./config.toml")
    } else {
        let c = Config::parse(EMBEDDED_CONFIG, "embedded config.toml", Path::new("."))
            .map_err(|e| DemoError(e.to_string()))?;
        (c, "the config.toml built into the binary")
    };
    let app = c
        .apps
        .first()
        .ok_or_else(|| DemoError(format!("{source}: the demo needs an [[apps]] entry")))?;
    let rule = app
        .rules
        .first()
        .ok_or_else(|| DemoError(format!("{source}: the demo needs a rule in the first app ({})", app.id)))?;
    if rule.secret.expose().is_empty() {
        return Err(DemoError(format!(
            "{source}: the demo signs callbacks: rule {} of app {} needs a secret",
            rule.name, app.id
        )));
    }
    Ok((c, source))
}

struct Api {
    http: reqwest::Client,
    base: String,
    app: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, DemoError> {
        let url = format!("{}/app-id/{}{path}", self.base, self.app);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| fail(&url, e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| fail(&url, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| fail(&url, e))?;
        if !status.is_success() {
            return Err(DemoError(format!("{url} answered {status}: {text}")));
        }
        Ok(v)
    }

    async fn send(&self, msg: Value) -> Result<Value, DemoError> {
        self.call(reqwest::Method::POST, "/messages?wait=true", Some(msg)).await
    }
}

/// A plausible message: one-to-one, group with offline members, or chatroom; several types.
fn message(i: usize) -> Value {
    match i % 4 {
        0 => json!({"from": "alice", "to": "bob", "type": "txt", "msg": format!("hello #{i}")}),
        1 => json!({"from": "bob", "to": "team-42", "chat_type": "groupchat", "type": "txt",
                    "msg": format!("standup in 5 (#{i})"), "offline": ["carol"]}),
        2 => json!({"from": "carol", "to": "alice", "type": "img",
                    "body": {"url": "https://example.com/cat.jpg", "filename": "cat.jpg", "size": {"width": 640, "height": 480}}}),
        _ => json!({"from": "dave", "to": "lobby", "chat_type": "chatroom", "type": "loc",
                    "body": {"lat": 39.9042, "lng": 116.4074, "addr": "Beijing"}}),
    }
}

fn count(callbacks: &[Value], rule: &str, outcome: &str) -> usize {
    callbacks
        .iter()
        .filter(|c| c["rule"] == rule && c["outcome"] == outcome)
        .count()
}

async fn demo(mut config: Config, source: &str) -> Result<(), DemoError> {
    let started = Instant::now();
    println!("callback-sim demo: an IM provider's callbacks, retries, bans and exception store, on loopback\n");

    let secret = config
        .apps
        .first()
        .and_then(|a| a.rules.first())
        .map(|r| r.secret.expose().to_string())
        .filter(|s| !s.is_empty());
    let sink_opts = SinkOptions {
        secret,
        ..SinkOptions::default()
    };
    let healthy = Sink::start(sink_opts.clone())
        .await
        .map_err(|e| fail("healthy sink", e))?;
    let flaky = Sink::start(sink_opts).await.map_err(|e| fail("flaky sink", e))?;

    // The repo's config, pointed at the demo's sinks; the Sim puts it on port 0 with its data
    // in a temp dir.
    config.ban = demo_ban();
    let app = config
        .apps
        .first_mut()
        .ok_or_else(|| DemoError("the config has no [[apps]]".into()))?;
    let mut first = app
        .rules
        .first()
        .cloned()
        .ok_or_else(|| DemoError(format!("app {} has no rules", app.id)))?;
    first.enabled = true;
    first.kind = RuleKind::PostSend;
    first.url = CallbackUrl::parse(&format!("http://{}/callback", healthy.addr())).expect("a loopback URL");
    let mut second = first.clone();
    second.name = RuleName::parse("crm_sync").expect("a valid name");
    second.url = CallbackUrl::parse(&format!("http://{}/crm", flaky.addr())).expect("a loopback URL");
    second.event_types = Filter::only([EventType::Chat.index()]);
    app.rules = vec![first.clone(), second.clone()];
    app.policy.timeout = Duration::from_secs(2);
    app.exception_store = true;
    for s in [&first, &second] {
        if s.secret.expose().is_empty() {
            return Err(DemoError(format!("rule {} has no secret", s.name)));
        }
    }
    let (app_id, token) = (app.id.to_string(), app.token.expose().to_string());
    let server = Sim::start(config).await.map_err(|e| fail("simulator", e))?;
    let api = Api {
        http: reqwest::Client::new(),
        base: server.base_url(),
        app: app_id.clone(),
        token,
    };

    println!("1. Setup (from {source})");
    println!("   simulator REST API   {}", server.base_url());
    println!(
        "   app {app_id:?}, rule {:<10} → healthy sink {}",
        first.name.as_str(),
        first.url
    );
    println!(
        "   app {app_id:?}, rule {:<10} → flaky sink   {}",
        second.name.as_str(),
        second.url
    );
    println!("   bans shortened for the demo: 10 failures within 10 s ban a rule for level x 3 s\n");

    println!(
        "2. A burst of {BURST} messages (one-to-one, groups with an offline member, chatrooms; text, image, location)"
    );
    let mut all = Vec::new();
    for i in 0..BURST {
        let v = api.send(message(i)).await?;
        all.extend(v["data"]["callbacks"].as_array().cloned().unwrap_or_default());
    }
    let delivered = all.iter().filter(|c| c["outcome"] == "delivered").count();
    println!(
        "   {} callbacks, {delivered} delivered (each signed: security = md5(callId + secret + timestamp))",
        all.len()
    );
    let example = all.iter().find(|c| c["eventType"] == "chat_offline").unwrap_or(&all[0]);
    println!(
        "   e.g. callId {} eventType {} to {} → {} after {} attempt(s)\n",
        example["callId"].as_str().unwrap_or("?"),
        example["eventType"].as_str().unwrap_or("?"),
        example["to"].as_str().unwrap_or("?"),
        example["outcome"].as_str().unwrap_or("?"),
        example["attempts"]
    );
    if delivered != all.len() {
        return Err(DemoError(format!(
            "only {delivered} of {} callbacks were delivered to healthy sinks",
            all.len()
        )));
    }

    println!("3. The flaky receiver starts answering 503");
    flaky.set_faults(Some(1.0), Some(503));
    let mut failed_msgs = 0;
    let rules = loop {
        let v = api.send(message(0)).await?;
        let cbs = v["data"]["callbacks"].as_array().cloned().unwrap_or_default();
        failed_msgs += 1;
        if failed_msgs == 1 {
            let c = cbs
                .iter()
                .find(|c| c["rule"] == "crm_sync")
                .cloned()
                .unwrap_or_default();
            println!(
                "   a callback to crm_sync: attempts {} (retried at once), last status {}, outcome {:?}: kept in the exception store",
                c["attempts"],
                c["status"],
                c["outcome"].as_str().unwrap_or("?")
            );
        }
        let rules = api.call(reqwest::Method::GET, "/callbacks/rules", None).await?;
        let crm = rules["data"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "crm_sync").cloned())
            .unwrap_or_default();
        if crm["state"] == "banned" {
            break crm;
        }
        if failed_msgs > 20 {
            return Err(DemoError(format!("crm_sync was never banned: {crm}")));
        }
    };
    println!(
        "   after {failed_msgs} messages ({} failed attempts) crm_sync is BANNED: level {}, until {}",
        failed_msgs * 2,
        rules["ban_level"],
        rules["banned_until"].as_str().unwrap_or("?")
    );
    let mut banned = 0;
    for i in 0..5 {
        let v = api.send(message(i)).await?;
        let cbs = v["data"]["callbacks"].as_array().cloned().unwrap_or_default();
        banned += cbs
            .iter()
            .filter(|c| c["rule"] == "crm_sync" && c["last_attempt"] == "banned")
            .count();
        if count(&cbs, first.name.as_str(), "delivered") == 0 {
            return Err(DemoError(
                "the healthy rule stopped delivering while the other was banned".into(),
            ));
        }
    }
    println!(
        "   while banned, crm_sync's callbacks are not attempted: {banned} stored with outcome \"banned\"; chat_sync keeps delivering"
    );
    let until = chrono::DateTime::parse_from_rfc3339(rules["banned_until"].as_str().unwrap_or_default())
        .map_err(|e| fail("banned_until", e))?;
    let wait = (until.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    let rules = api.call(reqwest::Method::GET, "/callbacks/rules", None).await?;
    let crm = rules["data"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "crm_sync").cloned())
        .unwrap_or_default();
    println!(
        "   {:.1} s later the ban is over: crm_sync is {} again, its failure window empty ({} failures)\n",
        wait as f64 / 1000.0,
        crm["state"].as_str().unwrap_or("?"),
        crm["failures_in_window"]
    );

    println!("4. The exception store (GET /app-id/{app_id}/callbacks/storage/info)");
    let info = api.call(reqwest::Method::GET, "/callbacks/storage/info", None).await?;
    let buckets = info["data"].as_array().cloned().unwrap_or_default();
    let mut stored = 0;
    for b in &buckets {
        println!(
            "   bucket date {} retry {}: {} callbacks",
            b["date"].as_str().unwrap_or("?"),
            b["retry"],
            b["size"]
        );
        stored += b["size"].as_u64().unwrap_or(0);
    }
    let date = buckets
        .first()
        .and_then(|b| b["date"].as_str())
        .ok_or_else(|| DemoError("the store is empty".into()))?
        .to_string();
    let items = api
        .call(
            reqwest::Method::GET,
            &format!("/callbacks/storage/items?date={date}&limit=3"),
            None,
        )
        .await?;
    for it in items["data"].as_array().into_iter().flatten() {
        println!(
            "     {} kept because: {} (attempts {})",
            it["callId"].as_str().unwrap_or("?"),
            it["outcome"].as_str().unwrap_or("?"),
            it["attempts"]
        );
    }
    println!();

    println!("5. Replay to the healthy sink (POST /app-id/{app_id}/callbacks/storage/retry with targetUrl)");
    let target = format!("http://{}/replayed", healthy.addr());
    let before = healthy.summary().received;
    let mut replayed = 0;
    for b in &buckets {
        let v = api
            .call(
                reqwest::Method::POST,
                "/callbacks/storage/retry",
                Some(json!({"date": b["date"], "retry": b["retry"], "targetUrl": target})),
            )
            .await?;
        println!(
            "   bucket {} retry {}: data {:?}, delivered {}, failed {}",
            b["date"].as_str().unwrap_or("?"),
            b["retry"],
            v["data"].as_str().unwrap_or("?"),
            v["delivered"],
            v["failed"]
        );
        replayed += v["delivered"].as_u64().unwrap_or(0);
    }
    let after = api.call(reqwest::Method::GET, "/callbacks/storage/info", None).await?;
    let left = after["data"].as_array().map(Vec::len).unwrap_or(0);
    println!(
        "   the healthy sink got {} replayed callbacks (same bytes: same callId, timestamp, security); buckets left: {left}\n",
        healthy.summary().received - before
    );
    if replayed != stored || left != 0 {
        return Err(DemoError(format!(
            "replayed {replayed} of {stored} stored callbacks, {left} buckets left"
        )));
    }

    server.shutdown().await;
    let h = healthy.stop().await;
    let f = flaky.stop().await;
    println!("Summary ({:.1} s)", started.elapsed().as_secs_f64());
    println!("   healthy sink: {h}");
    println!("   flaky sink:   {f}");
    println!("   (the flaky sink's duplicate callIds are the immediate retries: a retry keeps its callId)");
    println!("   nothing lost: every callback was delivered, or stored and then replayed.\n");
    println!("Do it by hand (three terminals):");
    println!("   cargo run --release -- sink --listen 127.0.0.1:9000 --secret change-me");
    println!("   cargo run --release -- serve --config config.toml");
    println!("   curl -s -X POST 'http://127.0.0.1:8080/app-id/demo/messages?wait=true' \\");
    println!("        -H 'Authorization: Bearer demo-token' -H 'Content-Type: application/json' \\");
    println!("        -d '{{\"from\":\"alice\",\"to\":\"bob\",\"msg\":\"hello\"}}'");
    println!(
        "   curl -s http://127.0.0.1:8080/app-id/demo/callbacks/storage/info -H 'Authorization: Bearer demo-token'"
    );
    println!(
        "   curl -s -X POST http://127.0.0.1:8080/app-id/demo/callbacks/storage/retry -H 'Authorization: Bearer demo-token' \\"
    );
    println!(
        "        -H 'Content-Type: application/json' -d '{{\"date\":\"<date from info>\",\"retry\":0,\"targetUrl\":\"http://127.0.0.1:9000/replayed\"}}'"
    );
    Ok(())
}
