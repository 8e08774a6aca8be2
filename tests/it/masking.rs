//! Passwords in URLs (`http://user:password@host/`): shown as `***` wherever a URL is shown —
//! `callbacks/rules`, `storage/items`, error answers, logs — and sent only, as
//! `Authorization: Basic` (docs/behaviour.md §4, §8).

use std::process::{Command, Stdio};

use callback_sim::{Reply, Server};
use serde_json::json;

use crate::helpers::*;

/// A rule URL's password, a `targetUrl`'s, and a stored one's: none of them may be shown.
const PASSWORDS: [&str; 3] = ["RulePW_9f2", "TargetPW", "StoredPW"];

fn assert_masked(what: &str, text: &str) {
    for pw in PASSWORDS {
        assert!(!text.contains(pw), "{what} shows the password {pw}: {text}");
    }
}

#[tokio::test]
async fn rules_items_and_errors_show_urls_with_the_password_masked() {
    let port = refused_port();
    let url = format!("http://alice:RulePW_9f2@127.0.0.1:{port}/cb");
    let sim = start_app(app1().retries(0).rule(rule("r", &url))).await;
    one_callback(&sim).await;

    let (s, rules) = get(&sim, "/app-id/app1/callbacks/rules", TOKEN).await;
    assert_eq!(s, 200, "{rules}");
    assert_eq!(rules["data"][0]["url"], format!("http://alice:***@127.0.0.1:{port}/cb"));
    assert_masked("callbacks/rules", &rules.to_string());

    let date = info(&sim).await[0]["date"].as_str().unwrap().to_string();
    let (s, items) = get(
        &sim,
        &format!("/app-id/app1/callbacks/storage/items?date={date}"),
        TOKEN,
    )
    .await;
    assert_eq!(s, 200, "{items}");
    assert_eq!(items["data"][0]["url"], format!("http://alice:***@127.0.0.1:{port}/cb"));
    assert_masked("storage/items", &items.to_string());

    // A targetUrl that is refused names the field, not the password.
    let (s, v) = post(
        &sim,
        "/app-id/app1/callbacks/storage/retry",
        TOKEN,
        json!({"date": date, "targetUrl": "http://bob:TargetPW@127.0.0.1:9/x#frag"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let desc = v["error_description"].as_str().unwrap();
    assert!(desc.contains("targetUrl") && desc.contains("bob:***@"), "{desc}");
    assert_masked("the 400 answer", &v.to_string());

    // The password is sent, as the Authorization header, to a target given to a replay.
    let rx = sink(Reply::ok()).await;
    let target = format!("http://bob:TargetPW@{}/t", rx.addr());
    let (s, v) = post(
        &sim,
        "/app-id/app1/callbacks/storage/retry",
        TOKEN,
        json!({"date": date, "targetUrl": target}),
    )
    .await;
    assert_eq!((s.as_u16(), &v["delivered"]), (200, &json!(1)), "{v}");
    let got = arrived(&rx, 1).await;
    assert_eq!(got[0].header("authorization"), Some("Basic Ym9iOlRhcmdldFBX"));
    assert_eq!(got[0].path, "/t");
}

#[tokio::test]
async fn the_store_keeps_the_real_url_so_a_rule_that_left_the_config_still_replays() {
    let rx = sink(Reply::status(503)).await;
    let dir = tempfile::tempdir().unwrap();
    let with_rule = |name: &str, url: &str| {
        config()
            .data_dir(&dir.path().join("data"))
            .app(app1().retries(0).bans(false).rule(rule(name, url)))
            .build()
            .unwrap()
    };
    let url = format!("http://carol:StoredPW@{}/kept", rx.addr());
    let server = Server::start(with_rule("gone", &url)).await.unwrap();
    one_callback(&server).await;
    server.shutdown().await;
    drop(server);

    // Restarted without that rule: the stored item replays to the URL it was meant for,
    // password included (sent, never shown).
    let server = Server::start(with_rule("other", &refused_url())).await.unwrap();
    let date = info(&server).await[0]["date"].as_str().unwrap().to_string();
    let (s, items) = get(
        &server,
        &format!("/app-id/app1/callbacks/storage/items?date={date}"),
        TOKEN,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(items["data"][0]["url"], format!("http://carol:***@{}/kept", rx.addr()));
    rx.reply(Reply::ok());
    let (s, v) = post(
        &server,
        "/app-id/app1/callbacks/storage/retry",
        TOKEN,
        json!({"date": date}),
    )
    .await;
    assert_eq!((s.as_u16(), &v["delivered"]), (200, &json!(1)), "{v}");
    let got = arrived(&rx, 2).await;
    assert_eq!(got[1].path, "/kept");
    assert_eq!(got[1].header("authorization"), Some("Basic Y2Fyb2w6U3RvcmVkUFc="));
    server.shutdown().await;
}

#[test]
fn logs_and_config_errors_never_show_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let refused = refused_port();
    // A config error about a URL with a password.
    std::fs::write(
        &path,
        "[[apps]]\nid = \"a\"\ntoken = \"t\"\n  [[apps.rules]]\n  name = \"r\"\n  url = \"http://alice:RulePW_9f2@h/#x\"\n  secret = \"s\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("apps[0].rules[0].url") && err.contains("alice:***@"),
        "{err}"
    );
    assert_masked("the config error", &err);

    // The log of a run whose rule URL and replay target have passwords.
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[[apps]]\nid = \"a\"\ntoken = \"t\"\nretries = 0\n  [[apps.rules]]\n  name = \"r\"\n  url = \"http://alice:RulePW_9f2@127.0.0.1:{refused}/\"\n  secret = \"s\"\n"
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
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let v: serde_json::Value = http
            .post(format!("{base}/app-id/a/messages?wait=true"))
            .bearer_auth("t")
            .json(&json!({"from": "u1", "to": "u2", "msg": "hi"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["data"]["callbacks"][0]["outcome"], "stored", "{v}");
        let buckets: serde_json::Value = http
            .get(format!("{base}/app-id/a/callbacks/storage/info"))
            .bearer_auth("t")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let date = buckets["data"][0]["date"].as_str().unwrap().to_string();
        let target = format!("http://bob:TargetPW@127.0.0.1:{refused}/t");
        let v: serde_json::Value = http
            .post(format!("{base}/app-id/a/callbacks/storage/retry"))
            .bearer_auth("t")
            .json(&json!({"date": date, "targetUrl": target}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["failed"], 1, "{v}");
    });
    let logs = stop_serve(child);
    assert!(
        logs.contains("replay started") && logs.contains("bob:***@"),
        "the replay's target is logged, masked: {logs}"
    );
    assert_masked("the log", &logs);
}
