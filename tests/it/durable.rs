//! Durable accept: what `serve` accepted is on disk before the answer, and a `kill -9` loses
//! none of it — after a restart every accepted callback is delivered (at least once, with its
//! callId).

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};

use callback_sim::{Reply, Sink};
use serde_json::Value;

use crate::helpers::*;

/// A `serve` config (durable accept is the file's default) with one agora rule to `url`.
fn write_config(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [delivery]\nconcurrency = 8\n\
             [api]\nrate_per_sec = 100000\nburst = 100000\n\
             [[apps]]\nid = \"app1\"\ntoken = \"tok1\"\ntimeout_secs = 120\n\
             [[apps.rules]]\nname = \"sync\"\nurl = \"{url}\"\nsecret = \"s\"\n"
        ),
    )
    .unwrap();
    path
}

/// `serve` on `config`, its log appended to `serve.log` beside it (a pipe nobody reads would
/// fill up and stop it).
fn serve(config: &std::path::Path) -> (Child, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("serve.log"))
        .unwrap();
    spawn_serve(Command::new(BIN).args(["serve", "--config"]).arg(config).stderr(log))
}

/// Stops `serve` with SIGTERM; it exits 0.
fn stop(child: Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(wait_with_timeout(child, WAIT).code(), Some(0));
}

async fn healthz(base: &str) -> Value {
    reqwest::get(format!("{base}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// msg_id → the callIds a sink got for it.
fn by_msg_id(sink: &Sink) -> HashMap<String, HashSet<String>> {
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for r in sink.received() {
        let b = r.json();
        out.entry(b["msg_id"].as_str().unwrap().to_string())
            .or_default()
            .insert(b["callId"].as_str().unwrap().to_string());
    }
    out
}

#[tokio::test]
async fn after_kill_9_every_accepted_callback_is_delivered() {
    const N: usize = 300;
    let hung = sink(Reply::hang()).await;
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve(&write_config(dir.path(), &hung.url("/cb")));

    // Hundreds of messages at once, answered once on disk (a few flushes serve them all).
    let client = reqwest::Client::new();
    let posts: Vec<_> = (0..N)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{base}/app-id/app1/messages"));
            tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"from": "a", "to": "b", "msg": format!("m{i}")}))
                    .send()
                    .await
                    .unwrap();
                status_json(resp).await
            })
        })
        .collect();
    let mut accepted = HashSet::new();
    for p in posts {
        let (status, answer) = p.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["data"]["warnings"], serde_json::json!([]), "{answer}");
        accepted.insert(answer["data"]["msg_id"].as_str().unwrap().to_string());
    }
    assert_eq!(accepted.len(), N);
    // Eight in flight at the hung receiver, the rest queued: then the process dies.
    arrived(&hung, 8).await;
    let h = healthz(&base).await;
    assert_eq!(
        h["queued"].as_u64().unwrap() + h["in_flight"].as_u64().unwrap(),
        N as u64,
        "{h}"
    );
    let in_flight = by_msg_id(&hung);
    let mut child = child;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Restarted toward a healthy receiver: every accepted message's callback arrives; the
    // ones that were in flight keep their callId.
    let healthy = sink(Reply::ok()).await;
    let config = write_config(dir.path(), &healthy.url("/cb"));
    let (child, base) = serve(&config);
    let got = eventually("every accepted callback to be delivered after the restart", || async {
        let got = by_msg_id(&healthy);
        accepted.iter().all(|m| got.contains_key(m)).then_some(got)
    })
    .await;
    for (msg_id, call_ids) in &in_flight {
        assert!(
            call_ids.is_subset(&got[msg_id]),
            "an interrupted callback is sent again with its callId: {call_ids:?} vs {:?}",
            got[msg_id]
        );
    }
    assert!(got.values().all(|ids| ids.len() == 1), "one callId per message");
    eventually("the restarted serve to finish", || async {
        let h = healthz(&base).await;
        (h["queued"] == 0 && h["in_flight"] == 0).then_some(())
    })
    .await;
    stop(child);

    // Finished means forgotten: a third start has nothing to send again.
    let (child, base) = serve(&config);
    let h = healthz(&base).await;
    assert_eq!((&h["queued"], &h["in_flight"]), (&0.into(), &0.into()), "{h}");
    stop(child);
}
