//! Test helpers: a scriptable loopback receiver and the simulator on port 0 with a temp dir.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use callback_sim::{Clock, Config, Server, StatsSnapshot};
use serde_json::Value;
use tokio::sync::Notify;

/// Upper bound for every wait in the tests: long enough for a loaded CI machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("callback body is JSON")
    }
}

/// How a receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    Body(u16, String),
    /// Never answer.
    Hang,
    /// 302 to this location.
    Redirect(String),
    /// Wait, then answer this status.
    Delay(Duration, u16),
    /// 200 with a streamed body of this many bytes (counted as they are produced).
    Stream(u64),
}

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    notify: Notify,
    streamed: Arc<AtomicU64>,
    /// Set (and notified) when a streamed body is dropped: finished, or the client hung up.
    stream_ended: Arc<(std::sync::atomic::AtomicBool, Notify)>,
}

/// Marks the end of a streamed body when the stream (and so this guard) is dropped.
struct StreamEnd(Arc<(std::sync::atomic::AtomicBool, Notify)>);

impl Drop for StreamEnd {
    fn drop(&mut self) {
        self.0.0.store(true, Ordering::SeqCst);
        self.0.1.notify_waiters();
    }
}

/// A real HTTP receiver on 127.0.0.1:0 that records every request.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Answers every request with `default`.
    pub async fn start(default: Reply) -> Self {
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            notify: Notify::new(),
            streamed: Arc::new(AtomicU64::new(0)),
            stream_ended: Arc::new((std::sync::atomic::AtomicBool::new(false), Notify::new())),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    pub async fn ok() -> Self {
        Self::start(Reply::Status(200)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The next requests get these replies, in order, before the default again.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// Bytes a `Reply::Stream` actually produced.
    pub fn streamed(&self) -> u64 {
        self.state.streamed.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until a streamed body was dropped by the server: the client hung up or
    /// the stream ended; returns the bytes produced by then.
    pub async fn wait_stream_end(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let notified = self.state.stream_ended.1.notified();
            if self.state.stream_ended.0.load(Ordering::SeqCst) {
                return self.streamed();
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                panic!(
                    "the streamed body was never dropped ({} bytes produced)",
                    self.streamed()
                );
            }
        }
    }

    /// Waits (bounded) until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        loop {
            let notified = self.state.notify.notified();
            if self.count() >= n {
                return self.received();
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                panic!("receiver got {} requests, expected {n}", self.count());
            }
        }
    }
}

async fn handle(State(s): State<Arc<ReceiverState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    s.received.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body,
        at: Instant::now(),
    });
    s.notify.notify_waiters();
    let reply = s
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| s.default.lock().unwrap().clone());
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::Body(code, text) => (StatusCode::from_u16(code).unwrap(), text).into_response(),
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Delay(d, code) => {
            tokio::time::sleep(d).await;
            StatusCode::from_u16(code).unwrap().into_response()
        }
        Reply::Redirect(to) => (StatusCode::FOUND, [("location", to)]).into_response(),
        Reply::Stream(total) => {
            let counter = s.streamed.clone();
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let end = StreamEnd(s.stream_ended.clone());
            let stream = futures_util::stream::unfold(0u64, move |sent| {
                let _end = &end;
                let chunk = chunk.clone();
                let counter = counter.clone();
                async move {
                    if sent >= total {
                        return None;
                    }
                    counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    // Yield so a reader that stopped reading is noticed between chunks.
                    tokio::task::yield_now().await;
                    Some((Ok::<_, std::io::Error>(chunk.clone()), sent + chunk.len() as u64))
                }
            });
            (StatusCode::OK, Body::from_stream(stream)).into_response()
        }
    }
}

/// A running simulator with its temp data dir.
pub struct TestApp {
    pub server: Option<Server>,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

/// The sections every test config starts with: port 0, a temp data dir, no rate limit to
/// speak of. `sections` may add or override whole sections (e.g. `[delivery]`).
pub fn config_text(dir: &Path, sections: &str, apps: &str) -> String {
    let mut text = String::new();
    if !sections.contains("[server]") {
        text += &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
            dir.join("data").display().to_string()
        );
    }
    if !sections.contains("[api]") {
        text += "[api]\nrate_per_sec = 100000\nburst = 100000\n";
    }
    format!("{text}{sections}\n{apps}")
}

pub async fn spawn_app(sections: &str, apps: &str) -> TestApp {
    spawn_app_in(tempfile::tempdir().unwrap(), sections, apps).await
}

/// The same, on an existing directory (to restart on the same data).
pub async fn spawn_app_in(dir: tempfile::TempDir, sections: &str, apps: &str) -> TestApp {
    spawn_app_with_clock(dir, sections, apps, None).await
}

/// The same, with an injected clock (the system clock when `None`).
pub async fn spawn_app_with_clock(
    dir: tempfile::TempDir,
    sections: &str,
    apps: &str,
    clock: Option<Arc<dyn Clock>>,
) -> TestApp {
    let text = config_text(dir.path(), sections, apps);
    let config =
        Config::parse(&text, "test.toml", dir.path()).unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
    let server = match clock {
        Some(clock) => Server::start_with_clock(config, clock).await,
        None => Server::start(config).await,
    }
    .expect("server starts");
    let base = server.base_url();
    TestApp {
        server: Some(server),
        base,
        http: reqwest::Client::new(),
        dir,
    }
}

/// One agora app "app1" (token "tok1") with the given rules text.
pub fn agora_app(extra: &str, rules: &str) -> String {
    format!("[[apps]]\nid = \"app1\"\ntoken = \"tok1\"\n{extra}\n{rules}")
}

/// A post-send rule to `url`, with extra lines.
pub fn rule(name: &str, url: &str, extra: &str) -> String {
    format!("  [[apps.rules]]\n  name = \"{name}\"\n  url = \"{url}\"\n  secret = \"sec_{name}\"\n{extra}\n")
}

impl TestApp {
    /// POSTs a message as app1 and returns status and JSON body.
    pub async fn send(&self, msg: Value, wait: bool) -> (StatusCode, Value) {
        self.send_as("app1", "tok1", msg, wait).await
    }

    pub async fn send_as(&self, app: &str, token: &str, msg: Value, wait: bool) -> (StatusCode, Value) {
        let q = if wait { "?wait=true" } else { "" };
        let resp = self
            .http
            .post(format!("{}/app-id/{app}/messages{q}", self.base))
            .bearer_auth(token)
            .json(&msg)
            .send()
            .await
            .expect("simulator answers");
        status_json(resp).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        status_json(resp).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        status_json(resp).await
    }

    /// `storage/info` of app1.
    pub async fn info(&self) -> Vec<Value> {
        let (s, v) = self.get("/app-id/app1/callbacks/storage/info", "tok1").await;
        assert_eq!(s, 200, "{v}");
        v["data"].as_array().unwrap().clone()
    }

    /// The rule of that name in app1's `callbacks/rules`.
    pub async fn rule_status(&self, name: &str) -> Value {
        let (s, v) = self.get("/app-id/app1/callbacks/rules", "tok1").await;
        assert_eq!(s, 200, "{v}");
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    }

    /// Stops the server gracefully and drops it (its store is released: a restart on the same
    /// dir may follow).
    pub async fn shutdown(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// Counters of app1's rule `rule`, from the server's typed API (also after a stop).
pub fn rule_stats(server: &Server, rule: &str) -> StatsSnapshot {
    let rules = server.rules("app1").expect("app1");
    rules
        .into_iter()
        .find(|r| r.name == rule)
        .unwrap_or_else(|| panic!("no rule {rule}"))
        .stats
}

/// Callbacks in app1's exception store, every bucket together.
pub fn stored_total(server: &Server) -> u64 {
    server.buckets("app1").expect("app1").iter().map(|b| b.size).sum()
}

pub async fn status_json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, v)
}

/// The `?wait=true` callbacks list.
pub fn callbacks(answer: &Value) -> &Vec<Value> {
    answer["data"]["callbacks"]
        .as_array()
        .unwrap_or_else(|| panic!("no callbacks in {answer}"))
}

/// A loopback port with nothing listening.
pub async fn refused_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

/// Spawns the binary with stdout piped and reads its first line (the address it listens on);
/// returns the child, that line (trimmed) and the rest of stdout.
pub fn spawn_first_line(
    cmd: &mut std::process::Command,
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("a first line");
    (child, line.trim().to_string(), out)
}
