//! `callback-sim sink`: a receiver for trying things out, for benchmarks, and for tests.
//!
//! Every `POST` (any path) is a callback: the sink checks it as a receiver of its dialect
//! would (the provider's [`Wire::check_received`]), counts it and its repeated ids ([`stats`]), optionally records it, and
//! answers — 200 by default, as a test scripted ([`Reply`], [`script`]), or with the faults of
//! the command line: a status for a fraction of requests (`fail_rate`) or all of them, a
//! delay, a long body. `GET /stats` answers the counters as JSON. With [`SinkTls`] it serves
//! HTTPS and mutual TLS ([`tls`]).

mod script;
mod stats;
mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dialect::{self, Signature, Wire};
use crate::domain::Dialect;

pub use script::{Reply, StreamProgress};
pub use stats::SinkSummary;
pub use tls::SinkTls;

use script::{Answer, Faults, Script, StreamCounters};
use stats::SinkStats;

/// The longest `body_chars` answer made once and kept (64 KiB, the size of a streamed chunk):
/// longer ones are streamed, so that `--body-chars 99999999999` allocates nothing up front.
const INLINE_BODY_CHARS: usize = 64 * 1024;

/// How the sink behaves.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// `--listen`: the address to bind (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    /// `--dialect`: how callbacks are checked and answered (default `agora`); tencent gets
    /// `{"ActionStatus":"OK","ErrorCode":0,...}` answers and its query string checked.
    pub dialect: Dialect,
    /// Verify agora signatures with this secret.
    pub secret: Option<String>,
    /// Fraction (0–1) of callbacks answered with `status` (default 500) instead of 200.
    /// `None` with a `status` fails every callback; `Some(0.0)` fails none.
    pub fail_rate: Option<f64>,
    /// The failure status; without `fail_rate`, every callback gets it.
    pub status: Option<u16>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Answer a body of this many characters (`x`s). Bodies up to 64 KiB are made once;
    /// longer ones are streamed as the client reads them, so any size costs no memory.
    pub body_chars: usize,
    /// Print one line per callback to stdout.
    pub print: bool,
    /// Serve HTTPS (and mutual TLS) instead of plain HTTP.
    pub tls: Option<SinkTls>,
    /// Keep every callback received, for [`Sink::received`] and [`Sink::wait_for`] (tests;
    /// memory grows with the traffic).
    pub record: bool,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dialect: Dialect::Agora,
            secret: None,
            fail_rate: None,
            status: None,
            delay: Duration::ZERO,
            body_chars: 0,
            print: false,
            tls: None,
            record: false,
        }
    }
}

/// What the handler shares with the [`Sink`] that controls it.
#[derive(Debug)]
struct SinkState {
    opts: SinkOptions,
    /// The dialect's wire format: how callbacks are checked and answered.
    wire: Arc<dyn Wire>,
    stats: SinkStats,
    /// The `body_chars` answer body (empty when 0, or when it is streamed).
    body: Bytes,
    faults: Mutex<Faults>,
    script: Mutex<Script>,
    record: Option<Mutex<Vec<ReceivedCallback>>>,
    arrived: tokio::sync::Notify,
    streams: Arc<StreamCounters>,
    /// Cancelled when the sink stops: hanging replies end then.
    stopping: CancellationToken,
}

impl SinkState {
    /// The reply the command line's options give (no script applies).
    fn options_reply(&self) -> Reply {
        let (fault, status) = self.faults.lock().expect("faults lock").draw();
        let body = if self.opts.body_chars == 0 {
            self.wire.receiver_answer(!fault)
        } else {
            ""
        };
        Reply::answering(status, body, self.opts.delay)
    }

    /// The body (and its content type) of an answer whose reply has none: `body_chars`
    /// characters, or what a receiver of the dialect answers with this status.
    fn default_body(&self, status: StatusCode) -> (Body, &'static str) {
        if self.opts.body_chars > INLINE_BODY_CHARS {
            let body = script::stream_body(self.opts.body_chars as u64, self.streams.clone());
            (body, "text/plain")
        } else if self.body.is_empty() {
            let answer = self.wire.receiver_answer(status == StatusCode::OK).as_bytes();
            (Body::from(Bytes::from_static(answer)), content_type(answer))
        } else {
            (Body::from(self.body.clone()), "text/plain")
        }
    }
}

/// A receiver on loopback: what `callback-sim sink` runs, and the receiver of tests.
///
/// It checks each callback's signature (with the secret), counts callbacks and duplicate
/// callIds ([`summary`](Self::summary)), and answers 200 — or as scripted ([`Reply`]): a
/// status, a body, a delay, a redirect, a streamed body, or no answer at all, per path or for
/// the next few. A recording sink also keeps every callback, with its headers and arrival
/// time, for [`received`](Self::received) and [`wait_for`](Self::wait_for).
///
/// ```
/// use std::time::Duration;
/// use callback_sim::{Reply, Signature, Sink, agora_sign};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let sink = Sink::recording(Some("s3cret")).await.unwrap();
/// sink.reply_on("/down", Reply::status(503).after(Duration::from_millis(10)));
/// let http = reqwest::Client::new();
/// let security = agora_sign("app#1", "s3cret", 1600060847294);
/// let body = format!(r#"{{"callId":"app#1","timestamp":1600060847294,"security":"{security}"}}"#);
/// let up = http.post(sink.url("/up")).body(body.clone()).send().await.unwrap();
/// let down = http.post(sink.url("/down")).body(body).send().await.unwrap();
/// assert_eq!((up.status().as_u16(), down.status().as_u16()), (200, 503));
/// let got = sink.wait_for(2, Duration::from_secs(5)).await.unwrap();
/// assert_eq!(got[1].signature, Signature::Valid);
/// assert!(got[0].at <= got[1].at);
/// assert_eq!(sink.summary().duplicates, 1, "the same callId twice");
/// # });
/// ```
#[derive(Debug)]
pub struct Sink {
    addr: SocketAddr,
    state: Arc<SinkState>,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Sink {
    /// Binds and starts serving. Unusable TLS files are an `InvalidInput` error.
    pub async fn start(opts: SinkOptions) -> std::io::Result<Self> {
        let tls = match &opts.tls {
            Some(files) => Some(
                files
                    .server_config()
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            ),
            None => None,
        };
        let listener = TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let state = Arc::new(SinkState {
            // A receiver knows no app settings: the wire format only checks and answers here.
            wire: dialect::wire(opts.dialect, Default::default()),
            stats: SinkStats::default(),
            body: if opts.body_chars <= INLINE_BODY_CHARS {
                Bytes::from("x".repeat(opts.body_chars))
            } else {
                Bytes::new()
            },
            faults: Mutex::new(Faults {
                fail_rate: opts.fail_rate,
                status: opts.status,
            }),
            script: Mutex::new(Script::default()),
            record: opts.record.then(|| Mutex::new(Vec::new())),
            arrived: tokio::sync::Notify::new(),
            streams: Arc::default(),
            stopping: stop.clone(),
            opts,
        });
        let app = Router::new()
            .route("/stats", get(stats_handler))
            .fallback(post(receive))
            .with_state(state.clone());
        let shutdown = stop.clone().cancelled_owned();
        let task = match tls {
            None => {
                let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown);
                tokio::spawn(async move { serve.await })
            }
            Some(config) => {
                let listener = tls::TlsListener::new(listener, addr, config, state.opts.print);
                let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown);
                tokio::spawn(async move { serve.await })
            }
        };
        Ok(Self {
            addr,
            state,
            stop,
            task,
        })
    }

    /// A recording sink on `127.0.0.1:0` for tests: every callback is kept for
    /// [`received`](Self::received) / [`wait_for`](Self::wait_for), signatures checked with
    /// `secret` when given, answered 200 until scripted otherwise.
    pub async fn recording(secret: Option<&str>) -> std::io::Result<Self> {
        Self::start(SinkOptions {
            secret: secret.map(str::to_string),
            record: true,
            ..SinkOptions::default()
        })
        .await
    }

    /// `http://{addr}{path}` (or `https://` with TLS).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Every callback received so far (needs [`SinkOptions::record`]).
    pub fn received(&self) -> Vec<ReceivedCallback> {
        self.state
            .record
            .as_ref()
            .map(|r| r.lock().expect("record lock").clone())
            .unwrap_or_default()
    }

    /// Waits until at least `n` callbacks arrived (needs [`SinkOptions::record`]); returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<ReceivedCallback>, WaitTimeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.state.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(WaitTimeout {
                    got: self.received().len(),
                    wanted: n,
                    waited: timeout,
                });
            }
        }
    }

    /// Answers every callback with `reply` from now on (unless a path or "next" reply applies).
    pub fn reply(&self, reply: Reply) {
        self.state.script.lock().expect("script lock").default = Some(reply);
    }

    /// Answers callbacks to `path` with `reply` (unless a "next" reply applies).
    pub fn reply_on(&self, path: &str, reply: Reply) {
        self.state
            .script
            .lock()
            .expect("script lock")
            .per_path
            .insert(path.to_string(), reply);
    }

    /// Answers the next callback (any path) with `reply`, after the next replies already
    /// scripted; then as before.
    pub fn reply_next(&self, reply: Reply) {
        self.state.script.lock().expect("script lock").next.push_back(reply);
    }

    /// Answers the next `n` callbacks (any path) with `status`, then as before.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut script = self.state.script.lock().expect("script lock");
        script.next.extend(std::iter::repeat_n(Reply::status(status), n));
    }

    /// Changes the injected faults from now on (see [`SinkOptions::fail_rate`] and `status`).
    pub fn set_faults(&self, fail_rate: Option<f64>, status: Option<u16>) {
        *self.state.faults.lock().expect("faults lock") = Faults { fail_rate, status };
    }

    /// What the streamed answers ([`Reply::stream`], and `body_chars` bodies over 64 KiB)
    /// produced so far, and how many of them ended.
    pub fn streamed(&self) -> StreamProgress {
        self.state.streams.progress()
    }

    /// The address the sink listens on (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or, serving TLS, `https://ADDR`.
    pub fn base_url(&self) -> String {
        let scheme = if self.state.opts.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The counters now (also served at `GET /stats`).
    pub fn summary(&self) -> SinkSummary {
        self.state.stats.summary()
    }

    /// Stops serving (hanging replies answer 503) and returns the final counters.
    pub async fn stop(self) -> SinkSummary {
        self.stop.cancel();
        let _ = self.task.await;
        self.state.stats.summary()
    }
}

async fn stats_handler(State(s): State<Arc<SinkState>>) -> Response {
    axum::Json(s.stats.summary()).into_response()
}

/// One callback: checked, counted, recorded, answered.
async fn receive(State(s): State<Arc<SinkState>>, request: Request) -> Response {
    let at = Instant::now();
    // The head's parts are taken, not copied: this is the benchmarks' receiver.
    let (mut parts, body) = request.into_parts();
    let uri = std::mem::take(&mut parts.uri);
    let headers = std::mem::take(&mut parts.headers);
    let body = match Bytes::from_request(Request::from_parts(parts, body), &s).await {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let st = &s.stats;
    st.received(body.len());
    let verdict = s.wire.check_received(uri.query(), &body, s.opts.secret.as_deref());
    let signature = verdict.signature;
    st.verdict(signature);
    if let Some(id) = &verdict.dedupe_key {
        st.seen(id);
    }
    // A scripted reply (tests) wins over the options' fault injection (CLI).
    let scripted = s.script.lock().expect("script lock").next(uri.path());
    let reply = scripted.unwrap_or_else(|| s.options_reply());
    let status = reply
        .answered()
        .map(|code| StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    if let Some(status) = status {
        st.answered(status.as_u16());
    }
    if s.opts.print {
        let answer = status.map_or_else(|| "none".to_string(), |s| s.as_u16().to_string());
        println!(
            "<- POST {uri} signature={signature} answer={answer} {}",
            String::from_utf8_lossy(&body)
        );
    }
    if let Some(log) = &s.record {
        log.lock().expect("record lock").push(ReceivedCallback {
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers,
            body: body.clone(),
            signature,
            answered: status.map_or(0, |s| s.as_u16()),
            at,
        });
        s.arrived.notify_waiters();
    }
    if !reply.delay().is_zero() {
        tokio::time::sleep(reply.delay()).await;
    }
    let status = status.unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    match reply.into_answer() {
        Answer::Body(answer) if answer.is_empty() => {
            let (body, ctype) = s.default_body(status);
            (status, [(header::CONTENT_TYPE, ctype)], body).into_response()
        }
        Answer::Body(answer) => (status, [(header::CONTENT_TYPE, content_type(&answer))], answer).into_response(),
        Answer::Redirect(location) => (status, [(header::LOCATION, location)]).into_response(),
        Answer::Stream(bytes) => (
            status,
            [(header::CONTENT_TYPE, "text/plain")],
            script::stream_body(bytes, s.streams.clone()),
        )
            .into_response(),
        Answer::Hang => {
            s.stopping.cancelled().await;
            status.into_response()
        }
    }
}

/// JSON for a body that looks like an object, else plain text.
fn content_type(body: &[u8]) -> &'static str {
    if body.first() == Some(&b'{') {
        "application/json"
    } else {
        "text/plain"
    }
}

/// One callback the sink received (recorded when [`SinkOptions::record`] is on).
#[derive(Debug, Clone)]
pub struct ReceivedCallback {
    /// The request path, e.g. `/cb` (rule URLs may differ only by path).
    pub path: String,
    /// The raw query string, if any (tencent: `SdkAppid=…&CallbackCommand=…`).
    pub query: Option<String>,
    /// The request headers.
    pub headers: HeaderMap,
    /// The exact body bytes.
    pub body: Bytes,
    /// The signature check, already done.
    pub signature: Signature,
    /// The status the sink answered (or will, after a delay); 0 for [`Reply::hang`].
    pub answered: u16,
    /// When the request arrived (its head and body read).
    pub at: Instant,
}

impl ReceivedCallback {
    /// The body as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// The agora `callId`, if any.
    pub fn call_id(&self) -> Option<String> {
        self.json().get("callId").and_then(|v| v.as_str()).map(str::to_string)
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A wait for callbacks ran out of time.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the sink received {got} callbacks within {waited:?}, expected {wanted}")]
pub struct WaitTimeout {
    /// Callbacks received when the time ran out.
    pub got: usize,
    /// Callbacks waited for.
    pub wanted: usize,
    /// How long it waited.
    pub waited: Duration,
}
