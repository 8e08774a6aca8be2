//! `callback-sim generate`: pacing, reproducibility and the report.

use std::process::Command;

use callback_sim::Reply;
use serde_json::Value;

use crate::helpers::*;

fn config(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("gen.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[[apps]]\nid = \"app1\"\ntoken = \"t\"\n  [[apps.rules]]\n  name = \"r\"\n  url = \"{url}\"\n  secret = \"s\"\n"),
    )
    .unwrap();
    path
}

/// Runs `generate` for app1 of a config delivering to `url`, with `flags`, writing a report
/// in `dir`; returns the process output and the report.
async fn generate(dir: &std::path::Path, url: &str, flags: &[&str]) -> (std::process::Output, Value) {
    let cfg = config(dir, url);
    let report = dir.join("r.json");
    let mut args: Vec<String> = ["generate", "--app", "app1", "--config"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(cfg.display().to_string());
    args.push("--report".into());
    args.push(report.display().to_string());
    args.extend(flags.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let report = std::fs::read_to_string(&report)
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or(Value::Null);
        (out, report)
    })
    .await
    .unwrap()
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
async fn bad_flags_are_refused_with_a_reason() {
    // A run of one message, and the flag under test after it.
    let one = ["generate", "--app", "x", "--rate", "10", "--count", "1"];
    let with = |extra: &[&'static str]| [&one[..], extra].concat();
    for (args, hint) in [
        (one[..5].to_vec(), "--count"),
        (with(&["--offline-ratio", "2"]), "--offline-ratio"),
        (with(&["--chat-types", "dm=1"]), "--chat-types"),
        (with(&["--config", "/nonexistent.toml"]), "/nonexistent.toml"),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(hint), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
