//! What the tests share besides the public harness (`Sim`, `Sink`, `Reply`, the config
//! builder): one bounded wait ([`eventually`]), the app most tests use, and small REST calls
//! over reqwest for the tests about the REST API.

use std::future::Future;
use std::time::Duration;

use callback_sim::config::ConfigBuilder;
use callback_sim::{
    AppBuilder, CallbackReport, Config, Message, ReceivedCallback, Reply, RuleBuilder, RuleState, Server, Sim, Sink,
};
use reqwest::StatusCode;
use serde_json::Value;

/// Upper bound for every wait in the tests: long enough for a loaded CI machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// Calls `check` until it returns `Some` and returns that; panics naming `what` when
/// [`WAIT`] has passed. The one way tests wait for something without a channel to wait on.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited {WAIT:?} for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// The app most tests use: agora, id `app1`, REST token `tok1`.
pub const APP: &str = "app1";
/// `app1`'s REST token.
pub const TOKEN: &str = "tok1";

/// `app1` (agora), without rules yet.
pub fn app1() -> AppBuilder {
    AppBuilder::new(APP, TOKEN)
}

/// A post-send rule to `url`, signed with the secret `sec_{name}`.
pub fn rule(name: &str, url: &str) -> RuleBuilder {
    RuleBuilder::post_send(name, url, &format!("sec_{name}"))
}

/// The tests' starting point: the defaults, but the REST API's rate limit out of the way.
pub fn config() -> ConfigBuilder {
    Config::builder().api_rate(100_000, 100_000)
}

/// The simulator on `config`, on port 0 with a temp data dir.
pub async fn start(config: ConfigBuilder) -> Sim {
    let config = config.build().unwrap_or_else(|e| panic!("test config invalid: {e}"));
    Sim::start(config).await.expect("the simulator starts")
}

/// The simulator with just this app.
pub async fn start_app(app: AppBuilder) -> Sim {
    start(config().app(app)).await
}

/// A recording sink (agora, no secret) answering every callback with `reply`.
pub async fn sink(reply: Reply) -> Sink {
    let sink = Sink::recording(None).await.expect("the sink starts");
    sink.reply(reply);
    sink
}

/// Waits (bounded) until `sink` got at least `n` callbacks; returns them all.
pub async fn arrived(sink: &Sink, n: usize) -> Vec<ReceivedCallback> {
    sink.wait_for(n, WAIT).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Callbacks `sink` got so far.
pub fn count(sink: &Sink) -> usize {
    sink.received().len()
}

/// Sends a text message as app1 through the library; returns every callback's report.
pub async fn send_text(sim: &Server, to: &str) -> Vec<CallbackReport> {
    let sent = sim
        .send(APP, Message::text("u1", to, "m"))
        .await
        .expect("the message is accepted");
    sent.callbacks
}

/// The report of the one callback a text message from app1 makes.
pub async fn one_callback(sim: &Server) -> CallbackReport {
    let mut reports = send_text(sim, "u2").await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.remove(0)
}

/// The state of app1's rule `name`, from the library.
pub fn rule_state(sim: &Server, name: &str) -> RuleState {
    sim.rules(APP)
        .expect("app1")
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rule {name}"))
}

/// Callbacks in app1's exception store, every bucket together.
pub fn stored_total(sim: &Server) -> u64 {
    sim.buckets(APP).expect("app1").iter().map(|b| b.size).sum()
}

// REST calls, for the tests about the REST API (and the JSON it answers).

/// POSTs a message (JSON) as app1, `?wait=true` when `wait`; returns status and answer.
pub async fn send(sim: &Server, msg: Value, wait: bool) -> (StatusCode, Value) {
    send_as(sim, APP, TOKEN, msg, wait).await
}

/// POSTs a message (JSON) as `app` with `token`.
pub async fn send_as(sim: &Server, app: &str, token: &str, msg: Value, wait: bool) -> (StatusCode, Value) {
    let q = if wait { "?wait=true" } else { "" };
    post(sim, &format!("/app-id/{app}/messages{q}"), token, msg).await
}

/// GET `path` with a bearer token.
pub async fn get(sim: &Server, path: &str, token: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("the simulator answers");
    status_json(resp).await
}

/// POST `body` as JSON to `path` with a bearer token.
pub async fn post(sim: &Server, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", sim.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("the simulator answers");
    status_json(resp).await
}

/// app1's `storage/info` list.
pub async fn info(sim: &Server) -> Vec<Value> {
    let (s, v) = get(sim, "/app-id/app1/callbacks/storage/info", TOKEN).await;
    assert_eq!(s, 200, "{v}");
    v["data"].as_array().unwrap().clone()
}

/// The rule of that name in app1's `callbacks/rules` answer.
pub async fn rule_status(sim: &Server, name: &str) -> Value {
    let (s, v) = get(sim, "/app-id/app1/callbacks/rules", TOKEN).await;
    assert_eq!(s, 200, "{v}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {v}"))
        .clone()
}

/// The status and the JSON body of an answer.
pub async fn status_json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
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
pub fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A URL on a loopback port with nothing listening.
pub fn refused_url() -> String {
    format!("http://127.0.0.1:{}/", refused_port())
}

// The binary.

/// The `callback-sim` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_callback-sim");

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

/// Spawns `callback-sim serve` (`cmd`, stdout piped) and returns it with its base URL
/// `http://ADDR`, read from the line it prints once it listens.
pub fn spawn_serve(cmd: &mut std::process::Command) -> (std::process::Child, String) {
    let (child, line, _) = spawn_first_line(cmd);
    let base = line
        .strip_prefix("callback-sim listening on ")
        .unwrap_or_else(|| panic!("not the address line: {line:?}"))
        .to_string();
    (child, base)
}

/// Stops a `serve` with SIGTERM, checks that it exits 0 (bounded), and returns its stderr
/// (piped when it was spawned): its log.
pub fn stop_serve(mut child: std::process::Child) -> String {
    use std::io::Read;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut logs)
        .unwrap();
    assert_eq!(
        wait_with_timeout(child, Duration::from_secs(20)).code(),
        Some(0),
        "{logs}"
    );
    logs
}

/// One HTTP/1.1 exchange over a plain socket, for tests that run the binary without a
/// runtime: the whole answer as text.
pub fn raw_http(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `GET path` on `addr` (`host:port`), over a plain socket.
pub fn http_get(addr: &str, path: &str) -> String {
    raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// `POST path` of a JSON `body` on `addr` (`host:port`), with a Bearer `token` if given, over
/// a plain socket.
pub fn http_post(addr: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    raw_http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Waits (bounded) for the child to exit, on a thread of its own; kills it after `limit`.
pub fn wait_with_timeout(child: std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(limit) {
        Ok(status) => status.expect("the child's exit status"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("process {pid} did not exit within {limit:?}");
        }
    }
}
