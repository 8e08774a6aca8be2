//! `callback-sim generate`: pacing, reproducibility, the report, and the runs a new user tries
//! (beside a `serve`, against a throttling `serve`, with a slow pre-send receiver).

use std::process::Command;
use std::time::Duration;

use callback_sim::{Config, Reply, Server};
use serde_json::Value;

use crate::helpers::*;

/// A post-send rule `name` to `url`, as TOML under `[[apps]]`.
fn rule_toml(name: &str, url: &str) -> String {
    format!("  [[apps.rules]]\n  name = \"{name}\"\n  url = \"{url}\"\n  secret = \"s\"\n")
}

/// Writes `gen.toml` in `dir`: app1 with `rules` (TOML), its store in `dir/data`.
fn config_with(dir: &std::path::Path, rules: &str) -> std::path::PathBuf {
    let path = dir.join("gen.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[[apps]]\nid = \"app1\"\ntoken = \"t\"\n{rules}"
        ),
    )
    .unwrap();
    path
}

/// Writes `gen.toml` in `dir`: app1 with one rule delivering to `url`.
fn config_file(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    config_with(dir, &rule_toml("r", url))
}

/// Runs `generate` for app1 of a config delivering to `url`, with `flags`, writing a report
/// in `dir`; returns the process output and the report.
async fn generate(dir: &std::path::Path, url: &str, flags: &[&str]) -> (std::process::Output, Value) {
    generate_with(dir, &rule_toml("r", url), flags).await
}

/// [`generate`] for app1 with these `rules` (TOML).
async fn generate_with(dir: &std::path::Path, rules: &str, flags: &[&str]) -> (std::process::Output, Value) {
    let cfg = config_with(dir, rules);
    let report = dir.join("r.json");
    let mut args = strings(&["generate", "--app", "app1", "--config"]);
    args.push(cfg.display().to_string());
    args.push("--report".into());
    args.push(report.display().to_string());
    args.extend(flags.iter().map(|s| s.to_string()));
    let out = run_bin(args).await;
    let report = std::fs::read_to_string(&report)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    (out, report)
}

/// Runs the binary with `args`, off the async runtime.
async fn run_bin(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn pacing_holds_the_rate_and_the_report_has_its_fields() {
    let rx = sink(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, r) = generate(
        dir.path(),
        &rx.url("/cb"),
        &["--rate", "200", "--duration", "2", "--seed", "3"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 2 s at 200/s is 400 (plus a burst of 1 ms worth).
    let sent = r["messages"].as_u64().unwrap();
    assert!((370..=430).contains(&sent), "sent {sent} messages in 2 s at 200/s");
    for k in [
        "rate_achieved",
        "rate_asked",
        "outcomes",
        "latency_ms",
        "callbacks",
        "duration_secs",
        "peak_rss_mb",
        "seed",
    ] {
        assert!(r.get(k).is_some(), "{k} missing from the report: {r}");
    }
    for k in ["p50", "p90", "p99", "p99.9", "max"] {
        assert!(r["latency_ms"][k].as_f64().unwrap() > 0.0, "{k}: {r}");
    }
    let callbacks = r["callbacks"].as_u64().unwrap();
    assert_eq!(r["outcomes"]["delivered"].as_u64(), Some(callbacks), "{r}");
    assert!(callbacks >= sent, "offline recipients add callbacks");
    assert_eq!(count(&rx) as u64, callbacks);
    // Not a terminal: one summary line per second, then the table.
    assert!(stdout.contains("] sent "), "{stdout}");
    assert!(stdout.contains("latency ms") && stdout.contains("p99.9"), "{stdout}");
}

#[tokio::test]
async fn the_same_seed_gives_the_same_callbacks() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let rx = sink(Reply::ok()).await;
        let dir = tempfile::tempdir().unwrap();
        let flags = [
            "--rate",
            "0",
            "--count",
            "60",
            "--seed",
            "42",
            "--chat-types",
            "chat=1",
            "--offline-ratio",
            "0",
        ];
        let (out, _) = generate(dir.path(), &rx.url("/cb"), &flags).await;
        assert!(out.status.success());
        let mut got: Vec<(String, Value)> = rx
            .received()
            .iter()
            .map(|r| {
                let b = r.json();
                (b["callId"].as_str().unwrap().to_string(), json_without_times(b))
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        runs.push(got);
    }
    assert_eq!(runs[0].len(), 60);
    assert_eq!(runs[0], runs[1], "same seed: same callIds and the same messages");
}

/// The body without what depends on the clock.
fn json_without_times(mut b: Value) -> Value {
    for k in ["timestamp", "msg_id", "security"] {
        b.as_object_mut().unwrap().remove(k);
    }
    b
}

#[tokio::test]
async fn bad_flags_and_configs_are_refused_with_a_reason_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[[apps]]\nid = \"x\"\n").unwrap();
    let good = config_file(dir.path(), "http://127.0.0.1:9/cb");
    let (broken, good) = (broken.to_str().unwrap(), good.to_str().unwrap());
    // A run of one message, and the flag under test after it.
    let one = ["generate", "--app", "x", "--rate", "10", "--count", "1"];
    let with = |extra: &[&str]| strings(&[&one[..], extra].concat());
    let app1 = |extra: &[&str]| strings(&[&["generate", "--app", "app1", "--rate", "10"][..], extra].concat());
    for (args, hint) in [
        (strings(&one[..5]), "--count"),
        (strings(&[&one[..5], &["--count", "0"]].concat()), "--count"),
        (with(&["--offline-ratio", "2"]), "--offline-ratio"),
        (with(&["--chat-types", "dm=1"]), "--chat-types"),
        (with(&["--config", "/nonexistent.toml"]), "/nonexistent.toml"),
        (with(&["--token", "t"]), "--server"),
        (with(&["--connections", "3"]), "--server"),
        (
            with(&["--server", "http://127.0.0.1:9", "--data-dir", "d"]),
            "--data-dir",
        ),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(hint), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    for (args, hint) in [
        (app1(&["--count", "1", "--config", broken]), "token"),
        (with(&["--config", good]), "\"x\""),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(hint), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn in_process_runs_beside_a_serve_of_the_same_config() {
    let rx = sink(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &rx.url("/cb"));
    // What `serve --config gen.toml` holds: the store under the config's data_dir.
    let serve = Server::start(Config::load(&cfg).unwrap()).await.unwrap();
    let (out, r) = generate(
        dir.path(),
        &rx.url("/cb"),
        &["--rate", "0", "--count", "20", "--seed", "1"],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(r["messages"].as_u64(), Some(20), "{r}");
    serve.shutdown().await;
    // --data-dir keeps the run's store where asked.
    let kept = dir.path().join("kept");
    let (out, _) = generate(
        dir.path(),
        &rx.url("/cb"),
        &["--rate", "0", "--count", "5", "--data-dir", kept.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        kept.join("store.sled").is_dir(),
        "{:?}",
        std::fs::read_dir(&kept).map(|d| d.count())
    );
}

#[tokio::test]
async fn server_mode_backs_off_on_429_and_counts_them() {
    let rx = sink(Reply::ok()).await;
    // 20 requests a second, no burst: 30 messages from 4 connections meet many 429s.
    let sim = start(config().api_rate(20, 1).app(app1().rule(rule("r", &rx.url("/cb"))))).await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let out = run_bin(strings(&[
        "generate",
        "--app",
        APP,
        "--rate",
        "0",
        "--count",
        "30",
        "--seed",
        "5",
        "--server",
        &sim.base_url(),
        "--token",
        TOKEN,
        "--connections",
        "4",
        "--report",
        report.to_str().unwrap(),
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["messages"].as_u64(), Some(30), "{r}");
    assert!(r["throttled"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["outcomes"]["delivered"], r["callbacks"], "{r}");
    assert_eq!(count(&rx) as u64, r["callbacks"].as_u64().unwrap());
    assert!(stdout.contains("throttled"), "{stdout}");
}

#[tokio::test]
async fn a_slow_pre_send_receiver_does_not_cap_the_rate() {
    // Every message is asked (all from clients) and blocked after 100 ms.
    let pre = sink(
        Reply::ok()
            .with_body(r#"{"valid": false}"#)
            .after(Duration::from_millis(100)),
    )
    .await;
    let post = sink(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        "{}  [[apps.rules]]\n  name = \"mod\"\n  kind = \"pre_send\"\n  url = \"{}\"\n  secret = \"p\"\n  timeout_ms = 5000\n",
        rule_toml("r", &post.url("/cb")),
        pre.url("/pre")
    );
    let (out, r) = generate_with(
        dir.path(),
        &rules,
        &["--rate", "100", "--count", "40", "--seed", "2", "--rest-ratio", "0"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rate = r["rate_achieved"].as_f64().unwrap();
    assert!(rate > 80.0, "achieved {rate}/s of 100/s: {r}");
    assert_eq!(r["blocked"].as_u64(), Some(40), "{r}");
    assert_eq!(count(&pre), 40);
    assert_eq!(count(&post), 0);
    assert!(stdout.contains("blocked"), "{stdout}");
}

#[tokio::test]
async fn a_short_run_does_not_overstate_its_rate() {
    let rx = sink(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, r) = generate(dir.path(), &rx.url("/cb"), &["--rate", "10", "--count", "5"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rate = r["rate_achieved"].as_f64().unwrap();
    assert!(
        (5.0..=12.0).contains(&rate),
        "5 messages at 10/s achieved {rate}/s: {r}"
    );
}

#[tokio::test]
async fn a_random_seed_is_printed_so_the_run_can_be_repeated() {
    let rx = sink(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, r) = generate(dir.path(), &rx.url("/cb"), &["--rate", "0", "--count", "3"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seed = r["seed"].as_u64().unwrap();
    assert!(stdout.contains(&format!("--seed {seed}")), "{stdout}");
}

#[tokio::test]
async fn an_unwritable_report_is_refused_before_the_run() {
    let rx = sink(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &rx.url("/cb"));
    let bad = dir.path().join("no-such-dir").join("r.json");
    let out = run_bin(strings(&[
        "generate",
        "--app",
        "app1",
        "--rate",
        "0",
        "--count",
        "5",
        "--config",
        cfg.to_str().unwrap(),
        "--report",
        bad.to_str().unwrap(),
    ]))
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no-such-dir"), "{err}");
    assert_eq!(count(&rx), 0, "nothing is sent");
}

/// What kind of callback an agora body is: `chat` for messages, else the catalog event.
fn agora_kind(b: &Value) -> &'static str {
    match (b["chat_type"].as_str(), b["event"].as_str(), b["operation"].as_str()) {
        (Some("recall"), _, _) => "message_recalled",
        (_, Some("group_op_event"), Some("JOIN")) => "group_member_joined",
        (None, None, _) if b["status"].is_string() && b["reason"].is_string() => "user_status",
        (Some("chat" | "groupchat"), None, _) => "chat",
        _ => "other",
    }
}

#[tokio::test]
async fn an_event_mix_sends_catalog_events_and_reports_them_per_type() {
    let rx = sink(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, r) = generate(
        dir.path(),
        &rx.url("/cb"),
        &[
            "--rate",
            "0",
            "--count",
            "80",
            "--seed",
            "4",
            "--offline-ratio",
            "0",
            "--event-mix",
            "message=2,message_recalled=1,user_status=1,group_member_joined=1",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = r["events"]
        .as_object()
        .unwrap_or_else(|| panic!("no events section: {r}"));
    let names = ["group_member_joined", "message_recalled", "user_status"];
    assert_eq!(
        events.keys().collect::<Vec<_>>(),
        names.iter().collect::<Vec<_>>(),
        "by name: {r}"
    );
    // What the receiver got, by kind.
    let mut got = std::collections::BTreeMap::<&str, u64>::new();
    for cb in rx.received() {
        *got.entry(agora_kind(&cb.json())).or_default() += 1;
    }
    let mut total = r["messages"].as_u64().unwrap();
    for name in names {
        let e = &events[name];
        let sent = e["sent"].as_u64().unwrap();
        assert!(sent > 5, "{name}: {e}");
        total += sent;
        // One rule: one callback each, all delivered.
        for k in ["queued", "callbacks"] {
            assert_eq!(e[k].as_u64(), Some(sent), "{name} {k}: {e}");
        }
        assert_eq!(e["outcomes"]["delivered"].as_u64(), Some(sent), "{name}: {e}");
        assert_eq!(e["blocked"].as_u64(), Some(0), "{name}: {e}");
        assert_eq!(got.get(name).copied(), Some(sent), "{name}: the receiver got {got:?}");
    }
    assert_eq!(total, 80, "--count counts messages and events: {r}");
    assert_eq!(got.get("chat").copied(), r["messages"].as_u64(), "{got:?}");
    assert_eq!(got.get("other"), None, "{got:?}");
    // The totals hold every callback, events' too.
    assert_eq!(r["callbacks"].as_u64(), Some(80), "{r}");
    assert_eq!(count(&rx), 80);
    assert!(
        stdout.contains("message_recalled") && stdout.contains("events sent"),
        "{stdout}"
    );
}

#[tokio::test]
async fn server_mode_posts_the_events_of_the_mix() {
    let rx = sink(Reply::ok()).await;
    let sim = start(config().app(app1().rule(rule("r", &rx.url("/cb"))))).await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let out = run_bin(strings(&[
        "generate",
        "--app",
        APP,
        "--rate",
        "0",
        "--count",
        "30",
        "--seed",
        "8",
        "--offline-ratio",
        "0",
        "--event-mix",
        "message=1,message_recalled=1",
        "--server",
        &sim.base_url(),
        "--token",
        TOKEN,
        "--connections",
        "4",
        "--report",
        report.to_str().unwrap(),
    ]))
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let e = &r["events"]["message_recalled"];
    let sent = e["sent"].as_u64().unwrap();
    assert!(sent > 5, "{r}");
    assert_eq!(sent + r["messages"].as_u64().unwrap(), 30, "{r}");
    assert_eq!(e["outcomes"]["delivered"].as_u64(), Some(sent), "{r}");
    let recalls = rx
        .received()
        .iter()
        .filter(|cb| agora_kind(&cb.json()) == "message_recalled")
        .count() as u64;
    assert_eq!(recalls, sent);
    assert_eq!(count(&rx), 30);
}

#[tokio::test]
async fn an_event_the_dialect_lacks_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let tencent =
        "dialect = \"tencent\"\nsdk_app_id = 1400000000\n".to_string() + &rule_toml("r", "http://127.0.0.1:9/cb");
    let cfg = config_with(dir.path(), &tencent);
    let base = ["generate", "--app", "app1", "--rate", "0", "--count", "5"];
    let run = |extra: &[&str]| {
        let mut args = strings(&base);
        args.extend(strings(&["--config", cfg.to_str().unwrap()]));
        args.extend(strings(extra));
        Command::new(BIN).args(&args).output().unwrap()
    };
    let out = run(&["--event-mix", "message=5,reaction_changed=1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for part in [
        "--event-mix",
        "reaction_changed",
        "tencent dialect",
        "message, user_status",
        "message_read",
    ] {
        assert!(err.contains(part), "{part:?} missing: {err}");
    }
    for (mix, part) in [
        ("message=1,nap=2", "\"nap=2\""),
        ("chat=1", "message=WEIGHT"),
        ("user_status", "NAME=WEIGHT"),
    ] {
        let out = run(&["--event-mix", mix]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mix}: {err}");
        assert!(err.contains("--event-mix") && err.contains(part), "{mix}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // With --server, the server's answer says it.
    let sim = start(config().app(app1().tencent(1_400_000_000).rule(rule("r", &refused_url())))).await;
    let out = run_bin(strings(&[
        "generate",
        "--app",
        APP,
        "--rate",
        "0",
        "--count",
        "3",
        "--event-mix",
        "keyword_alert=1",
        "--server",
        &sim.base_url(),
        "--token",
        TOKEN,
    ]))
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("keyword_alert") && err.contains("tencent dialect"),
        "{err}"
    );
}

#[tokio::test]
async fn tencent_events_are_asked_their_before_commands_and_counted_blocked() {
    let tencent_sink = || async {
        callback_sim::Sink::start(callback_sim::SinkOptions {
            dialect: callback_sim::Dialect::Tencent,
            record: true,
            ..Default::default()
        })
        .await
        .unwrap()
    };
    // The pre-send receiver refuses everything it is asked.
    let (pre, post) = (tencent_sink().await, tencent_sink().await);
    pre.reply(Reply::ok().with_body(r#"{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"no"}"#));
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        "dialect = \"tencent\"\nsdk_app_id = 1400000000\n{}  [[apps.rules]]\n  name = \"before\"\n  kind = \"pre_send\"\n  url = \"{}\"\n",
        rule_toml("after", &post.url("/im")),
        pre.url("/im")
    );
    let (out, r) = generate_with(
        dir.path(),
        &rules,
        &[
            "--rate",
            "0",
            "--count",
            "40",
            "--seed",
            "6",
            "--rest-ratio",
            "0",
            "--event-mix",
            "message=1,group_created=1,user_status=1",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (created, status) = (&r["events"]["group_created"], &r["events"]["user_status"]);
    let (n_created, n_status) = (created["sent"].as_u64().unwrap(), status["sent"].as_u64().unwrap());
    assert!(n_created > 3 && n_status > 3, "{r}");
    // Every group creation was asked first and refused; statuses have no before-command.
    assert_eq!(created["blocked"].as_u64(), Some(n_created), "{r}");
    assert_eq!(created["callbacks"].as_u64(), Some(0), "{r}");
    assert_eq!(status["outcomes"]["delivered"].as_u64(), Some(n_status), "{r}");
    assert_eq!(r["blocked"], r["messages"], "every message is asked and refused: {r}");
    let commands = |rx: &callback_sim::Sink, command: &str| {
        rx.received()
            .iter()
            .filter(|cb| cb.json()["CallbackCommand"] == command)
            .count() as u64
    };
    assert_eq!(commands(&pre, "Group.CallbackBeforeCreateGroup"), n_created);
    assert_eq!(commands(&post, "State.StateChange"), n_status);
    assert_eq!(count(&post) as u64, n_status, "nothing else got through");
}
