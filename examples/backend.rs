//! An integration test of an imaginary app backend, driven by callback-sim as a library.
//!
//! The backend is a tiny axum receiver: it verifies each callback's signature and stores the
//! chat messages it is told about. The test shows the three things a backend team checks:
//! normal delivery, the backend failing (the callback lands in the exception store), and a
//! replay fixing it. `cargo test --example backend` runs it (so does `cargo test`);
//! `cargo run --example backend` runs the same story and prints it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use callback_sim::{AppBuilder, Config, FinalOutcome, Message, RuleBuilder, RuleStatus, Signature, Sim, agora_verify};
use serde_json::Value;

const SECRET: &str = "backend-secret";

/// The imaginary backend: what it stored, and whether its database is "down".
#[derive(Default)]
struct Backend {
    messages: Mutex<Vec<String>>,
    down: Mutex<bool>,
}

async fn callback(State(b): State<Arc<Backend>>, body: String) -> StatusCode {
    match agora_verify(body.as_bytes(), SECRET) {
        Signature::Valid => {}
        Signature::Invalid => return StatusCode::UNAUTHORIZED,
        _ => return StatusCode::BAD_REQUEST,
    }
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if *b.down.lock().unwrap() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Some(text) = v["payload"]["bodies"][0]["msg"].as_str() {
        b.messages.lock().unwrap().push(text.to_string());
    }
    StatusCode::OK
}

async fn start_backend() -> (Arc<Backend>, String) {
    let backend = Arc::new(Backend::default());
    let app = Router::new()
        .route("/im/callback", post(callback))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/im/callback", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (backend, url)
}

async fn story() {
    let (backend, url) = start_backend().await;
    let config = Config::builder()
        .app(
            AppBuilder::new("my_app", "token")
                .timeout_secs(2.0)
                .rule(RuleBuilder::post_send("sync", &url, SECRET)),
        )
        .build()
        .unwrap();
    let sim = Sim::start(config).await.unwrap();

    // 1. Normal delivery: the backend verifies the signature and stores the message.
    let sent = sim
        .send("my_app", Message::text("alice", "bob", "hello"))
        .await
        .unwrap();
    assert_eq!(sent.callbacks[0].outcome, FinalOutcome::Delivered);
    assert_eq!(*backend.messages.lock().unwrap(), ["hello"]);
    println!(
        "1. delivered: the backend stored {:?}",
        backend.messages.lock().unwrap()
    );

    // 2. The backend's database is down: retried once at once, then kept in the store.
    *backend.down.lock().unwrap() = true;
    let sent = sim
        .send("my_app", Message::text("alice", "bob", "are you there?"))
        .await
        .unwrap();
    let cb = &sent.callbacks[0];
    assert_eq!(
        (cb.outcome, cb.attempts, cb.status),
        (FinalOutcome::Stored, 2, Some(503))
    );
    let buckets = sim.buckets("my_app").unwrap();
    assert_eq!(buckets.len(), 1);
    assert_eq!(buckets[0].size, 1);
    println!(
        "2. backend down: {} after {} attempts, bucket {} holds {}",
        cb.outcome, cb.attempts, buckets[0].date, buckets[0].size
    );

    // 3. The backend is back: a replay of the bucket delivers the same callback.
    *backend.down.lock().unwrap() = false;
    let outcome = sim.replay("my_app", buckets[0].date, 0, None).await.unwrap();
    assert_eq!((outcome.delivered, outcome.failed), (1, 0));
    assert!(sim.buckets("my_app").unwrap().is_empty());
    assert_eq!(*backend.messages.lock().unwrap(), ["hello", "are you there?"]);
    println!(
        "3. replayed: delivered {}, the backend now has {:?}",
        outcome.delivered,
        backend.messages.lock().unwrap()
    );
    assert_eq!(sim.rules("my_app").unwrap()[0].state, RuleStatus::Active);
    tokio::time::timeout(Duration::from_secs(10), sim.shutdown())
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    story().await;
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_backend_survives_an_outage_with_a_replay() {
        super::story().await;
    }
}
