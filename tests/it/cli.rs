//! The binary as a user runs it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{BIN, http_get, http_post, refused_port, spawn_serve, stop_serve, wait_with_timeout};

#[test]
fn sign_prints_the_test_vector() {
    let out = Command::new(BIN)
        .args([
            "sign",
            "--call-id",
            "demo-app#e7b1c1d2-5a0f-4a34-9c1e-0f6b2f7a9a11",
            "--secret",
            "s3cr3t_Key",
            "--timestamp",
            "1600060847294",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "b799cb921c701a742c45c89296990cf7"
    );
}

#[test]
fn config_errors_name_file_and_key_and_exit_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let cases = [
        (
            "[[apps]]\nid = \"a\"\ntoken = \"t\"\n  [[apps.rules]]\n  name = \"r\"\n  url = \"http://h/\"\n  secret = \"s\"\n  colour = 1\n",
            "apps[0].rules[0]",
            "colour",
        ),
        (
            "[[apps]]\nid = \"a\"\ntoken = \"t\"\n  [[apps.rules]]\n  name = \"r-1\"\n  url = \"http://h/\"\n  secret = \"s\"\n",
            "apps[0].rules[0].name",
            "letters",
        ),
        (
            "[[apps]]\nid = \"a\"\ntoken = \"t\"\n  [[apps.rules]]\n  name = \"r\"\n  url = \"ws://h/\"\n  secret = \"s\"\n",
            "apps[0].rules[0].url",
            "http://",
        ),
        ("[delivery]\nconcurrency = -3\n", "delivery.concurrency", ""),
        ("[[apps]]\nid = \"a\"\n", "apps[0]", "token"),
    ];
    for (text, key, reason) in cases {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("bad.toml") && err.contains(key) && err.contains(reason),
            "{err:?} should name {key} / {reason}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    }
    let out = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.toml"));
}

#[test]
fn serve_prints_its_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n[[apps]]\nid = \"a\"\ntoken = \"t\"\n  [[apps.rules]]\n  name = \"r\"\n  url = \"http://127.0.0.1:9/\"\n  secret = \"s\"\n",
    )
    .unwrap();
    let (child, url) = spawn_serve(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .stderr(Stdio::null()),
    );
    assert!(!url.ends_with(":0"), "the real port is printed: {url}");
    let health = http_get(url.trim_start_matches("http://"), "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_with_timeout(child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sink_counts_signatures_and_duplicates_and_summarises_on_ctrl_c() {
    let mut child = Command::new(BIN)
        .args(["sink", "--listen", "127.0.0.1:0", "--secret", "s3cr3t_Key", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("sink listening on http://")
        .unwrap()
        .to_string();
    let good = r#"{"callId":"demo-app#e7b1c1d2-5a0f-4a34-9c1e-0f6b2f7a9a11","timestamp":1600060847294,"security":"b799cb921c701a742c45c89296990cf7"}"#;
    let bad = r#"{"callId":"x#1","timestamp":1,"security":"0000"}"#;
    for body in [good, good, bad] {
        let resp = http_post(&addr, "/cb", None, body);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    for l in out.lines() {
        rest += &l.unwrap();
    }
    assert_eq!(wait_with_timeout(child, Duration::from_secs(20)).code(), Some(0));
    assert!(rest.contains("received 3 callbacks"), "{rest}");
    assert!(rest.contains("signatures ok 2, bad 1"), "{rest}");
    assert!(rest.contains("duplicate callIds 1"), "{rest}");
}

#[test]
fn demo_runs_the_whole_story_and_exits_0() {
    let out = Command::new(BIN).arg("demo").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{text}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for milestone in [
        "1. Setup",
        "delivered",
        "is BANNED",
        "stored with outcome \"banned\"",
        "the ban is over",
        "storage/info",
        "data \"success\"",
        "buckets left: 0",
        "nothing lost",
        "curl",
    ] {
        assert!(
            text.contains(milestone),
            "{milestone:?} missing from the demo output:\n{text}"
        );
    }
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn logs_never_show_secrets_or_tokens_and_json_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let refused = refused_port();
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    // A receiver that answers 200 to every request, on its own thread.
    std::thread::spawn(move || {
        use std::io::Read;
        for stream in sink.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 65536];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[[apps]]\nid = \"a\"\ntoken = \"TOKEN_d41d8cd98f\"\n  [[apps.rules]]\n  name = \"ok\"\n  url = \"http://{sink_addr}/\"\n  secret = \"SECRET_0cc175b9c0\"\n  [[apps.rules]]\n  name = \"refused\"\n  url = \"http://127.0.0.1:{refused}/\"\n  secret = \"SECRET_92eb5ffee6\"\n"
        ),
    )
    .unwrap();
    let (child, base) = spawn_serve(
        Command::new(BIN)
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&path)
            .env("RUST_LOG", "debug")
            .stderr(Stdio::piped()),
    );
    let addr = base.trim_start_matches("http://");
    let body = r#"{"from":"u1","to":"u2","msg":"hi","offline":["u2"]}"#;
    for token in ["TOKEN_d41d8cd98f", "wrong_TOKEN_x"] {
        let resp = http_post(addr, "/app-id/a/messages?wait=true", Some(token), body);
        assert!(
            resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.1 401"),
            "{resp}"
        );
    }
    let logs = stop_serve(child);
    let json_lines: Vec<serde_json::Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        json_lines
            .iter()
            .any(|l| l["message"] == "callback" && l["outcome"] == "delivered"),
        "{logs}"
    );
    assert!(
        json_lines
            .iter()
            .any(|l| l["message"] == "callback" && l["outcome"] == "stored" && l["rule"] == "refused"),
        "{logs}"
    );
    for secret in [
        "TOKEN_d41d8cd98f",
        "wrong_TOKEN_x",
        "SECRET_0cc175b9c0",
        "SECRET_92eb5ffee6",
    ] {
        assert!(!logs.contains(secret), "{secret} appears in the log");
    }
}

#[test]
fn sign_computes_the_tencent_url_signature() {
    let out = Command::new(BIN)
        .args([
            "sign",
            "--dialect",
            "tencent",
            "--token",
            "s3cr3t_Token",
            "--request-time",
            "1700000000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "4654af236dd1ece3a00cea5df5e97008f0da6ab96aefe5515849989ce28a6b3e"
    );
    let out = Command::new(BIN)
        .args(["sign", "--dialect", "tencent", "--secret", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
}

#[test]
fn catalog_lists_each_dialects_events() {
    let out = Command::new(BIN)
        .args(["catalog", "--dialect", "tencent"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("message_recalled") && text.contains("Group.CallbackAfterRecallMsg"),
        "{text}"
    );
    assert!(!text.contains("reaction_changed"), "{text}");
    let out = Command::new(BIN).args(["catalog", "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["events"].as_array().unwrap().len(), 22);
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_sends_an_event_to_a_running_serve_and_waits_for_its_outcome() {
    let rx = callback_sim::Sink::recording(Some("s")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[[apps]]\nid = \"a\"\ntoken = \"t\"\n  [[apps.rules]]\n  name = \"r\"\n  url = \"{}\"\n  secret = \"s\"\n[[apps]]\nid = \"b\"\ntoken = \"tb\"\nretries = 0\n  [[apps.rules]]\n  name = \"down\"\n  url = \"http://127.0.0.1:{}/\"\n  secret = \"s\"\n",
            dir.path().join("data"),
            rx.url("/cb"),
            refused_port()
        ),
    )
    .unwrap();
    let (child, url) = spawn_serve(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .stderr(Stdio::piped()),
    );
    let trigger = |args: &[&str]| {
        Command::new(BIN)
            .arg("trigger")
            .args(args)
            .args(["--server", &url, "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    // The config's first app; the catalog's example, with a field set and an override.
    let out = trigger(&[
        "message_recalled",
        "--set",
        "to=carol",
        "--override",
        "payload.ext.k=1",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("delivered"));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["data"]["callbacks"][0]["outcome"], "delivered", "{answer}");
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(
        (body["to"].as_str(), body["payload"]["ext"]["k"].as_u64()),
        (Some("carol"), Some(1))
    );
    assert_eq!(got[0].signature, callback_sim::Signature::Valid);
    // A callback that is not delivered: exit 1.
    let out = trigger(&["group_created", "--app", "b", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stored"));
    // A name in no catalog: a usage error.
    let out = trigger(&["nap"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("message_recalled"));
    stop_serve(child);
}
