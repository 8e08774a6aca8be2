//! The console's REST routes over HTTP (docs/behaviour.md §12): the history of callbacks with
//! their attempts and exact requests, the live stream, and resending a callback, edited or not.

use callback_sim::{Reply, Sink, agora_sign};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// app1's `callbacks/history?{query}`.
async fn history(sim: &callback_sim::Server, query: &str) -> Vec<Value> {
    let (s, v) = get(sim, &format!("/app-id/app1/callbacks/history?{query}"), TOKEN).await;
    assert_eq!(s, 200, "{v}");
    v["data"].as_array().unwrap().clone()
}

/// `POST …/callbacks/resend` as app1.
async fn resend(sim: &callback_sim::Server, body: Value) -> (StatusCode, Value) {
    post(sim, "/app-id/app1/callbacks/resend", TOKEN, body).await
}

#[tokio::test]
async fn the_history_shows_each_callback_with_its_attempts_and_exact_request() {
    let good = sink(Reply::ok().with_body("thanks")).await;
    let bad = sink(Reply::status(503)).await;
    let url = bad.url("/x?k=1").replace("http://", "http://user:pa55@");
    let sim = start(
        config()
            .history_per_app(3)
            .app(app1().rule(rule("good", &good.url("/cb"))).rule(rule("bad", &url))),
    )
    .await;
    send_text(&sim, "u2").await;
    let got = arrived(&good, 1).await;
    let newest = history(&sim, "").await;
    assert_eq!(newest.len(), 2, "{newest:?}");
    let delivered = newest.iter().find(|e| e["rule"] == "good").unwrap();
    assert_eq!(delivered["outcome"], "delivered");
    assert_eq!(delivered["kind"], "post_send");
    assert_eq!(delivered["event"], "chat");
    assert_eq!(delivered["to"], "u2");
    assert_eq!(delivered["callId"], got[0].json()["callId"]);
    assert_eq!(
        delivered["request"]["body"].as_str().unwrap().as_bytes(),
        &got[0].body[..],
        "the exact bytes"
    );
    assert_eq!(delivered["request"]["method"], "POST");
    assert_eq!(delivered["request"]["url"], good.url("/cb"));
    let headers = &delivered["request"]["headers"];
    assert_eq!(headers["Content-Type"], "application/json");
    assert_eq!(headers["Content-Length"], got[0].body.len().to_string());
    assert_eq!(headers["User-Agent"], got[0].header("user-agent").unwrap());
    let attempts = delivered["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (&attempts[0]["outcome"], &attempts[0]["status"]),
        (&json!("delivered"), &json!(200))
    );
    assert_eq!(attempts[0]["answer"], "thanks");
    assert!(attempts[0]["duration_ms"].as_f64().unwrap() > 0.0);

    // The failing rule: both attempts (agora retries once), stored; its password stays masked.
    let failed = newest.iter().find(|e| e["rule"] == "bad").unwrap();
    assert_eq!(failed["outcome"], "stored");
    let attempts = failed["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{failed}");
    assert_eq!(
        (&attempts[1]["outcome"], &attempts[1]["status"]),
        (&json!("status"), &json!(503))
    );
    assert!(attempts[1]["detail"].as_str().unwrap().contains("503"));
    assert_eq!(
        failed["request"]["url"],
        bad.url("/x?k=1").replace("http://", "http://user:***@")
    );
    assert_eq!(failed["request"]["headers"]["Authorization"], "Basic ***");
    assert!(!failed.to_string().contains("pa55"), "{failed}");

    // Filters, paging, and the bound: the oldest go first.
    assert_eq!(history(&sim, "rule=bad").await.len(), 1);
    assert_eq!(history(&sim, "outcome=delivered&event=chat").await.len(), 1);
    assert_eq!(history(&sim, "event=user_status").await.len(), 0);
    send_text(&sim, "u3").await;
    let all = history(&sim, "").await;
    assert_eq!(all.len(), 3, "history_per_app = 3");
    assert_eq!(all[0]["to"], "u3", "newest first");
    let older = history(
        &sim,
        &format!(
            "limit=1&before={}",
            all[0]["callId"].as_str().unwrap().replace('#', "%23")
        ),
    )
    .await;
    assert_eq!(older.len(), 1);
    assert_eq!(older[0]["callId"], all[1]["callId"]);
    for (query, says) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("outcome=lost", "outcome"),
        ("event=nope", "event"),
        ("before=app1%23gone", "before"),
        ("colour=red", "colour"),
    ] {
        let (s, v) = get(&sim, &format!("/app-id/app1/callbacks/history?{query}"), TOKEN).await;
        assert_eq!(s, 400, "{query}: {v}");
        assert!(v["error_description"].as_str().unwrap().contains(says), "{query}: {v}");
    }
    let (s, _) = get(&sim, "/app-id/app1/callbacks/history", "wrong").await;
    assert_eq!(s, 401);
}

/// Reads server-sent events from a streaming answer until `want` says it has one.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(sim: &callback_sim::Server) -> Self {
        let resp = reqwest::Client::new()
            .get(format!("{}/app-id/app1/callbacks/stream", sim.base_url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut events = Events {
            resp,
            buf: String::new(),
        };
        events.next_named("ready").await;
        events
    }

    /// The next event: its name and JSON data.
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.to_string();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                return (name, serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("an event within the wait")
                .unwrap()
                .expect("the stream stays open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn next_named(&mut self, name: &str) -> Value {
        loop {
            let (n, data) = self.next().await;
            if n == name {
                return data;
            }
        }
    }
}

#[tokio::test]
async fn the_stream_tells_callbacks_rule_changes_and_bucket_changes_as_they_happen() {
    let bad = sink(Reply::status(500)).await;
    let sim = start(
        config()
            .ban(2, 60.0, 60.0, 5)
            .app(app1().rule(rule("flaky", &bad.url("/")))),
    )
    .await;
    let (s, _) = get(&sim, "/app-id/app1/callbacks/stream", "wrong").await;
    assert_eq!(s, 401, "a wrong token gets no stream");
    let mut events = Events::open(&sim).await;
    // Two failed attempts ban the rule; the callback is stored.
    send_text(&sim, "u2").await;
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 3 {
        let (name, data) = events.next().await;
        seen.insert(name, data);
    }
    assert_eq!(seen["callback"]["outcome"], "stored");
    assert_eq!(seen["callback"]["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(
        (&seen["rule"]["name"], &seen["rule"]["state"]),
        (&json!("flaky"), &json!("banned"))
    );
    assert_eq!(seen["store"]["buckets"][0]["size"], 1);
    // A reset is a rule change too.
    let (s, _) = post(&sim, "/app-id/app1/callbacks/rules/flaky/reset", TOKEN, json!(null)).await;
    assert_eq!(s, 200);
    let rule = events.next_named("rule").await;
    assert_eq!(rule["state"], "active");
    // The stream ends when the simulator stops.
    sim.shutdown().await;
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match events.resp.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ends with the simulator");
}

#[tokio::test]
async fn a_resend_with_an_edited_body_is_signed_again_and_kept_in_the_history() {
    let receiver = Sink::recording(Some("sec_sync")).await.unwrap();
    let other = Sink::recording(Some("sec_sync")).await.unwrap();
    let sim = start_app(app1().rule(rule("sync", &receiver.url("/cb")))).await;
    let report = one_callback(&sim).await;
    let original = arrived(&receiver, 1).await.remove(0);

    // As it was: the very same bytes.
    let (s, v) = resend(&sim, json!({"callId": report.call_id})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["data"]["outcome"], &v["data"]["attempts"]),
        (&json!("delivered"), &json!(1))
    );
    let again = arrived(&receiver, 2).await.remove(1);
    assert_eq!(again.body, original.body);

    // Edited (text from a text area, pretty-printed, a new timestamp): compact, in the same
    // field order, signed from its own callId and timestamp — to another URL.
    let sent = std::str::from_utf8(&original.body).unwrap();
    let timestamp = original.json()["timestamp"].to_string();
    let text = sent
        .replace(r#""msg":"m""#, r#""msg":"edited text""#)
        .replace(&format!(r#""timestamp":{timestamp}"#), r#""timestamp":1700000000000"#)
        .replace(',', ",\n  ");
    assert_ne!(text, sent);
    let (s, v) = resend(
        &sim,
        json!({"callId": report.call_id, "body": text, "targetUrl": other.url("/elsewhere")}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let got = arrived(&other, 1).await.remove(0);
    assert_eq!(got.signature, callback_sim::Signature::Valid, "{:?}", got.json());
    let v = got.json();
    assert_eq!(v["payload"]["bodies"][0]["msg"], "edited text");
    assert_eq!(
        v["security"],
        agora_sign(&report.call_id, "sec_sync", 1_700_000_000_000)
    );
    let order = |b: &[u8]| {
        let s = std::str::from_utf8(b).unwrap().to_string();
        [
            "callId",
            "eventType",
            "timestamp",
            "from",
            "to",
            "msg_id",
            "payload",
            "security",
        ]
        .map(|k| s.find(&format!("\"{k}\"")).unwrap())
    };
    let (was, now) = (order(&original.body), order(&got.body));
    assert!(now.windows(2).all(|w| w[0] < w[1]), "field order kept: {now:?}");
    assert!(was.windows(2).all(|w| w[0] < w[1]));
    assert!(!std::str::from_utf8(&got.body).unwrap().contains('\n'), "compact");

    // Both resends are in the history, newest first, with their target.
    let listed = history(&sim, "").await;
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["resend"], true);
    assert_eq!(listed[0]["request"]["url"], other.url("/elsewhere"));
    assert_eq!(listed[0]["request"]["body"].as_str().unwrap().as_bytes(), &got.body[..]);
    assert_eq!(listed[2]["resend"], false);

    // Errors name what is wrong.
    for (body, status, says) in [
        (json!({"callId": "app1#nope"}), 404, "app1#nope"),
        (
            json!({"callId": report.call_id, "body": "{\"callId\": 1}"}),
            400,
            "callId",
        ),
        (json!({"callId": report.call_id, "body": "[1]"}), 400, "JSON object"),
        (
            json!({"callId": report.call_id, "targetUrl": "ftp://x/"}),
            400,
            "targetUrl",
        ),
        (json!({"callId": report.call_id, "colour": 1}), 400, "colour"),
        (json!({}), 400, "callId"),
    ] {
        let (s, v) = resend(&sim, body.clone()).await;
        assert_eq!(s.as_u16(), status, "{body}: {v}");
        assert!(v["error_description"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    assert_eq!(count(&receiver) + count(&other), 3, "no error sent anything");
}

#[tokio::test]
async fn a_stored_callback_outside_the_history_can_be_resent_and_a_tencent_one_keeps_its_query() {
    let receiver = sink(Reply::ok()).await;
    let down = refused_url();
    let sim = start(
        config()
            .history_per_app(0)
            .app(app1().tencent(1400000001).rule(rule("im", &down))),
    )
    .await;
    let report = one_callback(&sim).await;
    assert_eq!(report.outcome, callback_sim::FinalOutcome::Stored);
    assert!(history(&sim, "").await.is_empty(), "history_per_app = 0 keeps none");
    let (s, v) = resend(
        &sim,
        json!({"callId": report.call_id, "body": {"CallbackCommand": "C2C.CallbackAfterSendMsg", "From_Account": "edited"}, "targetUrl": receiver.url("/t")}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let got = arrived(&receiver, 1).await.remove(0);
    assert_eq!(
        &got.body[..],
        br#"{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"edited"}"#
    );
    assert!(
        got.query.unwrap().contains("CallbackCommand=C2C.CallbackAfterSendMsg"),
        "the query is kept"
    );
}

#[tokio::test]
async fn a_tencent_url_signed_at_send_shows_as_sent_and_a_resend_signs_it_afresh() {
    let receiver = sink(Reply::ok().with_body(r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#)).await;
    let sim = start_app(
        app1()
            .tencent(1400000001)
            .tencent_token("tok_x")
            .rule(rule("im", &receiver.url("/t"))),
    )
    .await;
    one_callback(&sim).await;
    let got = arrived(&receiver, 1).await.remove(0);
    let query = got.query.clone().unwrap();
    assert!(query.contains("Sign=") && query.contains("RequestTime="), "{query}");
    let listed = history(&sim, "").await;
    assert_eq!(
        listed[0]["request"]["url"],
        format!("{}?{query}", receiver.url("/t")),
        "the URL as sent"
    );
    let call_id = listed[0]["callId"].as_str().unwrap().to_string();
    let (s, v) = resend(&sim, json!({ "callId": call_id })).await;
    assert_eq!(s, 200, "{v}");
    let again = arrived(&receiver, 2).await.remove(1);
    let q = again.query.unwrap();
    assert!(
        q.contains("Sign=") && q.contains("CallbackCommand=C2C.CallbackAfterSendMsg"),
        "{q}"
    );
    assert_eq!(again.body, got.body);
}
