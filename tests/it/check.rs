//! `callback-sim check` against real loopback receivers: the library's `Sink` scripted with
//! `Reply`, or a small axum receiver where a `Sink` cannot misbehave the right way.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use callback_sim::{Dialect, Reply, Signature, Sink, SinkOptions, agora_verify};
use serde_json::Value;

use crate::helpers::{BIN, refused_url, sink};

/// Runs `callback-sim check ARGS --format json`; its exit code and the parsed result.
async fn check(args: &[&str]) -> (i32, Value) {
    let out = tokio::process::Command::new(BIN)
        .arg("check")
        .args(args)
        .args(["--format", "json"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

/// The grade of the check `name`.
fn grade<'a>(v: &'a Value, name: &str) -> &'a str {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {v}"))["result"]
        .as_str()
        .unwrap()
}

/// Every check's grade, as `name=grade` lines, for assertion messages.
fn grades(v: &Value) -> String {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}={} ({})", c["name"], c["result"], c["detail"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A receiver on 127.0.0.1:0 answering POST /cb with `answer(body)`.
async fn receiver<F>(answer: F) -> String
where
    F: Fn(Bytes) -> (StatusCode, String) + Clone + Send + Sync + 'static,
{
    let app = Router::new().route("/cb", post(move |body: Bytes| async move { answer(body) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/cb")
}

async fn tencent_sink(reply: Reply) -> Sink {
    let s = Sink::start(SinkOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        dialect: Dialect::Tencent,
        print: false,
        ..SinkOptions::default()
    })
    .await
    .unwrap();
    s.reply(reply);
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_receiver_passes_every_check_for_both_dialects() {
    let agora = sink(Reply::ok()).await;
    let (code, v) = check(&["--url", &agora.url("/cb")]).await;
    assert_eq!(code, 0, "{}", grades(&v));
    assert_eq!(v["summary"]["fail"], 0);
    assert_eq!(v["summary"]["warn"], 0, "{}", grades(&v));
    assert_eq!(v["summary"]["pass"], 9);
    assert_eq!(
        (v["dialect"].as_str(), v["kind"].as_str()),
        (Some("agora"), Some("post_send"))
    );
    let requests = v["requests"].as_u64().unwrap();
    assert!((50..=300).contains(&requests), "{requests} callbacks");
    assert_eq!(agora.received().len() as u64, requests);

    let tencent = tencent_sink(Reply::ok()).await;
    let (code, v) = check(&["--url", &tencent.url("/cb"), "--dialect", "tencent"]).await;
    assert_eq!(code, 0, "{}", grades(&v));
    assert_eq!(v["summary"]["pass"], 9, "{}", grades(&v));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_201_fails_status_and_everything_that_needs_a_200() {
    let s = sink(Reply::status(201)).await;
    let (code, v) = check(&["--url", &s.url("/cb")]).await;
    assert_eq!(code, 1);
    assert_eq!(grade(&v, "reachable"), "pass");
    assert_eq!(grade(&v, "status"), "fail");
    assert!(
        v["checks"][1]["detail"].as_str().unwrap().contains("HTTP 201"),
        "{}",
        grades(&v)
    );
    assert_eq!(grade(&v, "catalog"), "fail");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_answers_warn_then_fail_answer_time() {
    // A quarter of 400 ms is 100 ms: 150 ms warns.
    let s = sink(Reply::ok().after(Duration::from_millis(150))).await;
    let (code, v) = check(&["--url", &s.url("/cb"), "--timeout-ms", "400"]).await;
    assert_eq!(grade(&v, "answer_time"), "warn", "{}", grades(&v));
    assert_eq!(code, 0, "{}", grades(&v));

    // The pre-send budget is 200 ms.
    let s = sink(
        Reply::ok()
            .with_body(r#"{"valid": true}"#)
            .after(Duration::from_millis(300)),
    )
    .await;
    let (code, v) = check(&["--url", &s.url("/cb"), "--kind", "pre_send"]).await;
    assert_eq!(grade(&v, "answer_time"), "fail", "{}", grades(&v));
    assert!(
        v["checks"][2]["detail"].as_str().unwrap().contains("200 ms"),
        "{}",
        grades(&v)
    );
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_answers_warn_then_fail_answer_size() {
    let s = sink(Reply::ok().with_body(&"x".repeat(700))).await;
    let (code, v) = check(&["--url", &s.url("/cb")]).await;
    assert_eq!(grade(&v, "answer_size"), "warn", "{}", grades(&v));
    assert_eq!(code, 0);

    let s = sink(Reply::ok().with_body(&"x".repeat(1200))).await;
    let (code, v) = check(&["--url", &s.url("/cb")]).await;
    assert_eq!(grade(&v, "answer_size"), "fail", "{}", grades(&v));
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_failing_one_message_type_fails_catalog_naming_it() {
    let url = receiver(|body: Bytes| {
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        if v["payload"]["bodies"][0]["type"] == "img" {
            (StatusCode::INTERNAL_SERVER_ERROR, String::new())
        } else {
            (StatusCode::OK, String::new())
        }
    })
    .await;
    let (code, v) = check(&["--url", &url]).await;
    assert_eq!(code, 1);
    assert_eq!(grade(&v, "status"), "pass", "{}", grades(&v));
    assert_eq!(grade(&v, "catalog"), "fail", "{}", grades(&v));
    let detail = v["checks"][4]["detail"].as_str().unwrap();
    assert!(detail.contains("img/") && !detail.contains("txt/"), "{detail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signatures_warn_when_accepted_and_pass_when_refused() {
    // The library's Sink records a bad signature but answers 200.
    let lax = Sink::recording(Some("s3")).await.unwrap();
    let (code, v) = check(&["--url", &lax.url("/cb"), "--secret", "s3"]).await;
    assert_eq!(grade(&v, "bad_signature"), "warn", "{}", grades(&v));
    assert_eq!(code, 0);
    let bad = lax
        .received()
        .iter()
        .filter(|c| c.signature == Signature::Invalid)
        .count();
    assert_eq!(bad, 1, "one wrongly signed callback, the others signed right");

    let strict = receiver(|body: Bytes| match agora_verify(&body, "s3") {
        Signature::Valid => (StatusCode::OK, String::new()),
        _ => (StatusCode::UNAUTHORIZED, String::new()),
    })
    .await;
    let (code, v) = check(&["--url", &strict, "--secret", "s3"]).await;
    assert_eq!(grade(&v, "bad_signature"), "pass", "{}", grades(&v));
    assert_eq!(code, 0, "{}", grades(&v));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_refusing_a_retry_fails_duplicate() {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let url = receiver(move |body: Bytes| {
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let id = v["callId"].as_str().unwrap_or_default().to_string();
        if seen.lock().unwrap().insert(id) {
            (StatusCode::OK, String::new())
        } else {
            (StatusCode::CONFLICT, String::new())
        }
    })
    .await;
    let (code, v) = check(&["--url", &url]).await;
    assert_eq!(grade(&v, "duplicate"), "fail", "{}", grades(&v));
    assert_eq!(grade(&v, "catalog"), "pass", "{}", grades(&v));
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_takes_one_callback_at_a_time_fails_burst() {
    let busy = Arc::new(tokio::sync::Semaphore::new(2));
    let app = Router::new().route(
        "/cb",
        post(move || {
            let busy = busy.clone();
            async move {
                let Ok(_permit) = busy.try_acquire() else {
                    return StatusCode::SERVICE_UNAVAILABLE;
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (code, v) = check(&["--url", &url]).await;
    assert_eq!(grade(&v, "burst"), "fail", "{}", grades(&v));
    assert_eq!(grade(&v, "status"), "pass", "{}", grades(&v));
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_send_answers_are_read_as_the_provider_reads_them() {
    let good = sink(Reply::ok().with_body(r#"{"valid": true, "code": "ok"}"#)).await;
    let (code, v) = check(&["--url", &good.url("/cb"), "--kind", "pre_send"]).await;
    assert_eq!(grade(&v, "presend_answer"), "pass", "{}", grades(&v));
    assert_eq!(code, 0, "{}", grades(&v));

    for bad in ["{}", r#"{"valid": "yes"}"#, r#"{"valid": true, "payload": {"msg": 1}}"#] {
        let s = sink(Reply::ok().with_body(bad)).await;
        let (code, v) = check(&["--url", &s.url("/cb"), "--kind", "pre_send"]).await;
        assert_eq!(grade(&v, "presend_answer"), "fail", "{bad}: {}", grades(&v));
        assert_eq!(code, 1);
    }

    let s = sink(Reply::ok().with_body(r#"{"valid": true, "code": 7}"#)).await;
    let (_, v) = check(&["--url", &s.url("/cb"), "--kind", "pre_send"]).await;
    assert_eq!(grade(&v, "presend_answer"), "warn", "{}", grades(&v));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tencent_receiver_answering_non_json_fails_status() {
    let s = tencent_sink(Reply::ok().with_body("ok")).await;
    let (code, v) = check(&["--url", &s.url("/cb"), "--dialect", "tencent"]).await;
    assert_eq!(grade(&v, "status"), "fail", "{}", grades(&v));
    assert!(
        v["checks"][1]["detail"].as_str().unwrap().contains("ActionStatus"),
        "{}",
        grades(&v)
    );
    assert_eq!(code, 1);

    // A pre-send answer is read the same way.
    let (code, v) = check(&["--url", &s.url("/cb"), "--dialect", "tencent", "--kind", "pre_send"]).await;
    assert_eq!(grade(&v, "status"), "fail", "{}", grades(&v));
    assert_eq!(grade(&v, "presend_answer"), "fail", "{}", grades(&v));
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_url_fails_reachable_with_a_clear_message() {
    let url = refused_url();
    let out = tokio::process::Command::new(BIN)
        .args(["check", "--url", &url])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable") && err.contains("refused"), "{err}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("reachable") && table.contains("FAIL"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn junit_output_parses_with_one_testcase_per_check_and_a_failure_per_fail() {
    let s = sink(Reply::status(201)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("check.xml");
    let out = tokio::process::Command::new(BIN)
        .args(["check", "--url", &s.url("/cb"), "--format", "junit", "--output"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (_, v) = check(&["--url", &s.url("/cb")]).await;
    let fails = v["summary"]["fail"].as_u64().unwrap();
    let script = "import sys, xml.etree.ElementTree as ET\n\
                  r = ET.parse(sys.argv[1]).getroot()\n\
                  cases = r.findall('.//testcase')\n\
                  print(len(cases), len(r.findall('.//testcase/failure')), r.get('tests'), r.get('failures'))";
    let py = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3 runs");
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        format!("9 {fails} 9 {fails}"),
        "{}",
        std::fs::read_to_string(&path).unwrap()
    );
    assert!(fails >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_command_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["check"],
        vec!["check", "--url", "ftp://x/"],
        vec!["check", "--url", "http://127.0.0.1:1/", "--dialect", "slack"],
        vec!["check", "--url", "http://127.0.0.1:1/", "--format", "xml"],
        vec!["check", "--config", missing, "--app", "a"],
        vec![
            "check",
            "--url",
            "http://127.0.0.1:1/",
            "--output",
            "/nonexistent/dir/x.xml",
        ],
    ] {
        let out = tokio::process::Command::new(BIN).args(&args).output().await.unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rules_of_a_config_are_checked_with_their_settings() {
    let s = Sink::recording(Some("sec")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = format!(
        "[[apps]]\nid = \"shop\"\ntoken = \"t\"\n  [[apps.rules]]\n  name = \"sync\"\n  url = \"{}\"\n  secret = \"sec\"\n",
        s.url("/cb")
    );
    std::fs::write(&path, text).unwrap();
    let (code, v) = check(&["--config", path.to_str().unwrap(), "--app", "shop", "--rule", "sync"]).await;
    assert_eq!(code, 0, "{}", grades(&v));
    let received = s.received();
    assert!(
        received
            .iter()
            .all(|c| c.call_id().is_some_and(|id| id.starts_with("shop#")))
    );
    assert_eq!(
        received.iter().filter(|c| c.signature == Signature::Valid).count(),
        received.len() - 1
    );
    let out = tokio::process::Command::new(BIN)
        .args([
            "check",
            "--config",
            path.to_str().unwrap(),
            "--app",
            "shop",
            "--rule",
            "nope",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rule \"nope\""));
}

#[tokio::test]
async fn tencent_with_a_token_signs_every_url_and_sends_one_wrongly_signed() {
    let rx = Sink::start(SinkOptions {
        dialect: Dialect::Tencent,
        secret: Some("tok".into()),
        ..SinkOptions::default()
    })
    .await
    .unwrap();
    let (code, v) = check(&["--url", &rx.url("/cb"), "--dialect", "tencent", "--token", "tok"]).await;
    // The sink accepts what it finds wrongly signed: the check warns about it.
    assert_eq!(grade(&v, "bad_signature"), "warn", "{}", grades(&v));
    assert_eq!(code, 0, "{}", grades(&v));
    let s = rx.summary();
    assert_eq!(s.signature_bad, 1, "only the one sent wrongly signed: {s:?}");
    assert!(s.signature_ok > 20, "{s:?}");
}
