//! `callback-sim sink`: a receiver for trying things out and for benchmarks.
//!
//! Every `POST` (any path) is a callback: the sink checks its signature when it knows the
//! secret, counts it and its duplicate `callId`s, and answers — 200 by default, or a fault:
//! a status for a fraction of requests (`fail_rate`) or all of them, a delay, a long body.
//! `GET /stats` answers the counters as JSON.
//!
//! With [`SinkTls`] it serves HTTPS, and with a client CA mutual TLS: a connection whose
//! handshake fails is dropped (and said so when printing) without stopping the sink.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::dialect::agora;
use crate::domain::Dialect;

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
    /// Fraction of callbacks answered with `status` (default 500) instead of 200.
    pub fail_rate: f64,
    /// The failure status; without `fail_rate`, every callback gets it.
    pub status: Option<u16>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Answer a body of this many characters.
    pub body_chars: usize,
    /// Print one line per callback to stdout.
    pub print: bool,
    /// Serve HTTPS (and mutual TLS) instead of plain HTTP.
    pub tls: Option<SinkTls>,
    /// Keep every callback received, for [`Sink::received`] and [`Sink::wait_for`] (tests;
    /// memory grows with the traffic).
    pub record: bool,
}

/// The sink's HTTPS files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkTls {
    /// The sink's certificate chain, its own certificate first.
    pub cert: PathBuf,
    /// The private key of that certificate.
    pub key: PathBuf,
    /// Mutual TLS: require a client certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

impl SinkTls {
    /// Reads and checks the files into the server's TLS settings.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, crate::tls::PemError> {
        crate::tls::server_config(&self.cert, &self.key, self.client_ca.as_deref()).map(Arc::new)
    }
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dialect: Dialect::Agora,
            secret: None,
            fail_rate: 0.0,
            status: None,
            delay: Duration::ZERO,
            body_chars: 0,
            print: false,
            tls: None,
            record: false,
        }
    }
}

/// The sink's counters.
#[derive(Debug, Default)]
struct SinkStats {
    received: AtomicU64,
    bytes: AtomicU64,
    signature_ok: AtomicU64,
    signature_bad: AtomicU64,
    unchecked: AtomicU64,
    unparsable: AtomicU64,
    query_bad: AtomicU64,
    duplicates: AtomicU64,
    answered_ok: AtomicU64,
    answered_fault: AtomicU64,
    /// Hashes of the ids seen lately (8 bytes each, not the ids: a long run must not cost
    /// much memory).
    seen: Mutex<SeenIds>,
}

/// Ids remembered for duplicates: at least the last `SEEN_WINDOW`, at most twice that.
const SEEN_WINDOW: usize = 1 << 18;

/// The hashes of the ids seen lately, in two generations made at full size: the set never
/// grows, because a growing set rehashes all it holds at once — a pause of many milliseconds
/// for every callback waiting behind it, which a receiver must not have. When the current
/// generation is full, it becomes the previous one and the oldest is forgotten.
#[derive(Debug)]
struct SeenIds {
    current: HashSet<u64>,
    previous: HashSet<u64>,
}

impl Default for SeenIds {
    fn default() -> Self {
        Self {
            current: HashSet::with_capacity(SEEN_WINDOW),
            previous: HashSet::new(),
        }
    }
}

impl SeenIds {
    /// Remembers `hash`; false when it was seen already.
    fn insert(&mut self, hash: u64) -> bool {
        if self.previous.contains(&hash) || !self.current.insert(hash) {
            return false;
        }
        if self.current.len() == SEEN_WINDOW {
            self.previous = std::mem::replace(&mut self.current, HashSet::with_capacity(SEEN_WINDOW));
        }
        true
    }
}

/// The sink's counters at one moment ([`Sink::summary`]), also the `GET /stats` answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SinkSummary {
    /// Callbacks received (every `POST`, whatever its path).
    pub received: u64,
    /// Body bytes received, all callbacks together.
    pub bytes: u64,
    /// Agora callbacks whose `security` matched.
    pub signature_ok: u64,
    /// Agora callbacks whose `security` did not match or was missing (secret known).
    pub signature_bad: u64,
    /// Callbacks not checked: no secret given, or tencent (unsigned).
    pub unchecked: u64,
    /// Bodies that are not JSON (objects).
    pub unparsable: u64,
    /// Tencent callbacks whose query string was missing a parameter or disagreed with the body.
    pub query_bad: u64,
    /// Callbacks seen before: the same agora `callId`, or the same tencent
    /// `CallbackCommand` + `MsgKey` (retries and replays show up here), among the last
    /// 262,144 to 524,288 ids (older ones are forgotten: the sink's memory stays bounded).
    pub duplicates: u64,
    /// Callbacks answered 200.
    pub answered_ok: u64,
    /// Callbacks answered with another status (injected faults).
    pub answered_fault: u64,
}

impl std::fmt::Display for SinkSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received {} callbacks: signatures ok {}, bad {}, unchecked {}, unparsable {}; bad query strings {}; duplicate callIds {}; answered 200 {}, faults {}",
            self.received,
            self.signature_ok,
            self.signature_bad,
            self.unchecked,
            self.unparsable,
            self.query_bad,
            self.duplicates,
            self.answered_ok,
            self.answered_fault
        )
    }
}

impl SinkStats {
    /// The counters now.
    fn summary(&self) -> SinkSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkSummary {
            received: g(&self.received),
            bytes: g(&self.bytes),
            signature_ok: g(&self.signature_ok),
            signature_bad: g(&self.signature_bad),
            unchecked: g(&self.unchecked),
            unparsable: g(&self.unparsable),
            query_bad: g(&self.query_bad),
            duplicates: g(&self.duplicates),
            answered_ok: g(&self.answered_ok),
            answered_fault: g(&self.answered_fault),
        }
    }
}

#[derive(Debug)]
struct SinkState {
    opts: SinkOptions,
    stats: Arc<SinkStats>,
    body: Bytes,
    faults: Mutex<(f64, Option<u16>)>,
    script: Mutex<Script>,
    record: Option<Mutex<Vec<ReceivedCallback>>>,
    arrived: tokio::sync::Notify,
}

/// A receiver on loopback: what `callback-sim sink` runs, and the receiver of tests.
///
/// It checks each callback's signature (with the secret), counts callbacks and duplicate
/// callIds ([`summary`](Self::summary)), and answers 200 — or as scripted: a status, a body, a
/// delay, per path or for the next few ([`Reply`]). A recording sink also keeps every callback
/// for [`received`](Self::received) and [`wait_for`](Self::wait_for).
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
/// assert_eq!(sink.summary().duplicates, 1, "the same callId twice");
/// # });
/// ```
#[derive(Debug)]
pub struct Sink {
    addr: SocketAddr,
    stats: Arc<SinkStats>,
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
        let stats = Arc::new(SinkStats::default());
        let state = Arc::new(SinkState {
            body: Bytes::from("x".repeat(opts.body_chars)),
            faults: Mutex::new((opts.fail_rate, opts.status)),
            script: Mutex::new(Script::default()),
            record: opts.record.then(|| Mutex::new(Vec::new())),
            arrived: tokio::sync::Notify::new(),
            opts,
            stats: stats.clone(),
        });
        let control = state.clone();
        let app = Router::new()
            .route("/stats", get(stats_handler))
            .fallback(post(receive))
            .with_state(state);
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = match tls {
            None => {
                let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown);
                tokio::spawn(async move { serve.await })
            }
            Some(config) => {
                let listener = TlsListener::new(listener, addr, config, control.opts.print);
                let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown);
                tokio::spawn(async move { serve.await })
            }
        };
        Ok(Self {
            addr,
            stats,
            state: control,
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

    /// Answers callbacks to `path` with `reply`.
    pub fn reply_on(&self, path: &str, reply: Reply) {
        self.state
            .script
            .lock()
            .expect("script lock")
            .per_path
            .insert(path.to_string(), reply);
    }

    /// Answers the next `n` callbacks (any path) with `status`, then as before.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut script = self.state.script.lock().expect("script lock");
        script.next.extend(std::iter::repeat_n(Reply::status(status), n));
    }

    /// Changes the injected faults from now on (see [`SinkOptions::fail_rate`] and `status`).
    pub fn set_faults(&self, fail_rate: f64, status: Option<u16>) {
        *self.state.faults.lock().expect("faults lock") = (fail_rate, status);
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
        self.stats.summary()
    }

    /// Stops serving and returns the final counters.
    pub async fn stop(self) -> SinkSummary {
        self.stop.cancel();
        let _ = self.task.await;
        self.stats.summary()
    }
}

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Completed handshakes waiting for the HTTP server to take them.
const READY_BACKLOG: usize = 128;

/// A TCP listener that hands axum only connections whose TLS handshake succeeded. Each
/// handshake runs in its own task, so a slow or failing client holds up no one else. When axum
/// drops the listener (at stop), the accepting task and the handshakes still running end too.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accepting: AbortOnDropHandle<()>,
}

impl TlsListener {
    fn new(tcp: TcpListener, local: SocketAddr, config: Arc<rustls::ServerConfig>, print: bool) -> Self {
        let (tx, ready) = mpsc::channel(READY_BACKLOG);
        let acceptor = TlsAcceptor::from(config);
        let accepting = tokio::spawn(async move {
            // Dropped with this task: aborts the handshakes in flight.
            let mut handshakes = JoinSet::new();
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = tcp.accept() => match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of file descriptors and the like: wait rather than spin.
                            tracing::warn!(error = %e, "sink: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
                };
                handshakes.spawn(handshake(acceptor.clone(), stream, peer, tx.clone(), print));
            }
        });
        Self {
            ready,
            local,
            _accepting: AbortOnDropHandle::new(accepting),
        }
    }
}

/// One TLS handshake: the connection goes to the HTTP server, or is dropped with a word why.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    print: bool,
) {
    let why = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let _ = ready.send((tls, peer)).await;
            return;
        }
        Ok(Err(e)) => handshake_error_text(&e),
        Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
    };
    if print {
        println!("<- TLS handshake from {peer} failed: {why}");
    }
    tracing::debug!(%peer, error = %why, "sink: TLS handshake failed");
}

/// A failed handshake from the sink's side, saying whose certificate was the problem.
fn handshake_error_text(e: &std::io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "the client sent no certificate (mutual TLS requires one)".into(),
        rustls::Error::InvalidCertificate(c) => format!("the client's certificate was rejected: {c}"),
        rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::CertificateExpired),
        ) => format!("the client rejected the sink's certificate: {alert:?}"),
        rustls::Error::AlertReceived(alert) => format!("the client ended the handshake: {alert:?}"),
        other => other.to_string(),
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task holds a sender until it is aborted with this listener.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn stats_handler(State(s): State<Arc<SinkState>>) -> Response {
    axum::Json(s.stats.summary()).into_response()
}

#[derive(Deserialize)]
struct AgoraHead<'a> {
    #[serde(rename = "callId", borrow)]
    call_id: Option<std::borrow::Cow<'a, str>>,
    timestamp: Option<u64>,
    #[serde(borrow)]
    security: Option<std::borrow::Cow<'a, str>>,
}

impl SinkStats {
    fn count(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a repeated id (a retry or a replay keeps its callId).
    fn seen(&self, id: &str) {
        let fresh = self
            .seen
            .lock()
            .map(|mut seen| {
                use std::hash::{BuildHasher, BuildHasherDefault};
                let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id);
                seen.insert(hash)
            })
            .unwrap_or(true);
        if !fresh {
            self.count(&self.duplicates);
        }
    }
}

/// Checks an agora callback: its signature when the secret is known.
fn check_agora(s: &SinkState, body: &[u8]) -> Signature {
    let st = &s.stats;
    let Ok(head) = serde_json::from_slice::<AgoraHead>(body) else {
        st.count(&st.unparsable);
        return Signature::Unparsable;
    };
    if let Some(id) = &head.call_id {
        st.seen(id);
    }
    let Some(secret) = &s.opts.secret else {
        st.count(&st.unchecked);
        return Signature::Unchecked;
    };
    let signature = head.check(secret);
    match signature {
        Signature::Valid => st.count(&st.signature_ok),
        _ => st.count(&st.signature_bad),
    }
    signature
}

impl AgoraHead<'_> {
    /// `security` against MD5(callId + secret + timestamp).
    fn check(&self, secret: &str) -> Signature {
        match self {
            AgoraHead {
                call_id: Some(id),
                timestamp: Some(ts),
                security: Some(sig),
            } if agora::sign(id, secret, *ts) == *sig => Signature::Valid,
            AgoraHead {
                call_id: Some(_),
                timestamp: Some(_),
                security: Some(_),
            } => Signature::Invalid,
            _ => Signature::Missing,
        }
    }
}

/// Checks an agora callback's signature (SPEC §4.1), as a receiver should: `security` must be
/// the lowercase hex MD5 of `callId + secret + timestamp`. Answers [`Signature::Valid`],
/// [`Signature::Invalid`], [`Signature::Missing`] (a field is absent) or
/// [`Signature::Unparsable`] (not a JSON object).
///
/// ```
/// use callback_sim::{Signature, agora_sign, agora_verify};
///
/// let call_id = "demo#e7b1c1d2-5a0f-4a34-9c1e-0f6b2f7a9a11";
/// let security = agora_sign(call_id, "s3cret", 1600060847294);
/// let body = format!(r#"{{"callId":"{call_id}","timestamp":1600060847294,"security":"{security}"}}"#);
/// assert_eq!(agora_verify(body.as_bytes(), "s3cret"), Signature::Valid);
/// assert_eq!(agora_verify(body.as_bytes(), "other"), Signature::Invalid);
/// assert_eq!(agora_verify(b"{}", "s3cret"), Signature::Missing);
/// ```
pub fn agora_verify(body: &[u8], secret: &str) -> Signature {
    match serde_json::from_slice::<AgoraHead>(body) {
        Ok(head) => head.check(secret),
        Err(_) => Signature::Unparsable,
    }
}

/// Checks a tencent callback: the query string (SPEC §4.3) against its body.
fn check_tencent(s: &SinkState, query: Option<&str>, body: &[u8]) -> Signature {
    let st = &s.stats;
    let Ok(serde_json::Value::Object(body)) = serde_json::from_slice::<serde_json::Value>(body) else {
        st.count(&st.unparsable);
        return Signature::Unparsable;
    };
    // Tencent callbacks are unsigned: their signature is never checked, their query string is.
    st.count(&st.unchecked);
    let command = body.get("CallbackCommand").and_then(|c| c.as_str()).unwrap_or_default();
    if let Some(key) = body.get("MsgKey").and_then(|k| k.as_str()) {
        st.seen(&format!("{command}/{key}"));
    }
    let params: std::collections::HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let ok = params
        .get("SdkAppid")
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        && params.get("CallbackCommand").is_some_and(|c| c == command)
        && params.get("contenttype").is_some_and(|c| c == "json")
        && params
            .get("ClientIP")
            .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        && params
            .get("OptPlatform")
            .is_some_and(|p| crate::domain::Platform::parse(p).is_ok());
    if ok {
        Signature::QueryOk
    } else {
        st.count(&st.query_bad);
        Signature::QueryBad
    }
}

async fn receive(State(s): State<Arc<SinkState>>, uri: Uri, body: Bytes) -> Response {
    let st = &s.stats;
    st.received.fetch_add(1, Ordering::Relaxed);
    st.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let signature = match s.opts.dialect {
        Dialect::Agora => check_agora(&s, &body),
        Dialect::Tencent => check_tencent(&s, uri.query(), &body),
    };
    // A scripted reply (tests) wins over the options' fault injection (CLI).
    let reply = s
        .script
        .lock()
        .expect("script lock")
        .next(uri.path())
        .unwrap_or_else(|| {
            let (fail_rate, fail_status) = *s.faults.lock().expect("faults lock");
            let fault = match (fail_status, fail_rate) {
                (Some(_), r) if r <= 0.0 => true,
                (_, r) if r > 0.0 => rand::random::<f64>() < r,
                _ => false,
            };
            let status = if fault { fail_status.unwrap_or(500) } else { 200 };
            let body = match (s.opts.dialect, s.opts.body_chars, fault) {
                (Dialect::Tencent, 0, false) => TENCENT_OK.to_string(),
                (Dialect::Tencent, 0, true) => TENCENT_FAIL.to_string(),
                _ => String::new(),
            };
            Reply {
                status,
                body,
                delay: s.opts.delay,
            }
        });
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::OK {
        st.answered_ok.fetch_add(1, Ordering::Relaxed);
    } else {
        st.answered_fault.fetch_add(1, Ordering::Relaxed);
    }
    if s.opts.print {
        println!(
            "<- POST {uri} signature={signature} answer={} {}",
            status.as_u16(),
            String::from_utf8_lossy(&body)
        );
    }
    if let Some(log) = &s.record {
        log.lock().expect("record lock").push(ReceivedCallback {
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            body: body.clone(),
            signature,
            answered: status.as_u16(),
        });
        s.arrived.notify_waiters();
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let answer = if reply.body.is_empty() {
        s.body.clone()
    } else {
        Bytes::from(reply.body)
    };
    let ctype = if answer.first() == Some(&b'{') {
        "application/json"
    } else {
        "text/plain"
    };
    (status, [(axum::http::header::CONTENT_TYPE, ctype)], answer).into_response()
}

/// The tencent success answer (SPEC §4.3): `ErrorCode` 0 also allows a before-command.
const TENCENT_OK: &str = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#;
/// The tencent answer to an injected fault (SPEC §4.3): `ErrorCode` 1 denies a before-command.
const TENCENT_FAIL: &str = r#"{"ActionStatus":"FAIL","ErrorCode":1,"ErrorInfo":"fault injected by callback-sim sink"}"#;

/// How the sink answers one callback (for tests that script it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status to answer; anything but 200 is a failure to the simulator.
    pub status: u16,
    /// The answer body; empty means the sink's default (tencent: the OK answer).
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    /// 200 with the default body.
    pub fn ok() -> Self {
        Self::status(200)
    }

    /// This status with the default body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    /// With this answer body.
    pub fn with_body(mut self, body: &str) -> Self {
        self.body = body.to_string();
        self
    }

    /// After this delay.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// The scripted replies: the next N, per path, and a default.
#[derive(Debug, Default)]
struct Script {
    next: std::collections::VecDeque<Reply>,
    per_path: std::collections::HashMap<String, Reply>,
    default: Option<Reply>,
}

impl Script {
    fn next(&mut self, path: &str) -> Option<Reply> {
        self.next
            .pop_front()
            .or_else(|| self.per_path.get(path).cloned())
            .or_else(|| self.default.clone())
    }
}

/// What the sink made of a callback's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// `security` matches MD5(callId + secret + timestamp).
    Valid,
    /// It does not.
    Invalid,
    /// The sink knows the secret but the body has no `callId`/`timestamp`/`security`.
    Missing,
    /// No secret given, or a tencent callback (unsigned): nothing to check.
    Unchecked,
    /// The body is not JSON.
    Unparsable,
    /// Tencent: the query string is right for the body.
    QueryOk,
    /// Tencent: a query parameter is missing or disagrees with the body.
    QueryBad,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signature::Valid => "ok",
            Signature::Invalid => "BAD",
            Signature::Missing => "MISSING",
            Signature::Unchecked => "unchecked",
            Signature::Unparsable => "unparsable",
            Signature::QueryOk => "query-ok",
            Signature::QueryBad => "query-BAD",
        })
    }
}

/// One callback the sink received (recorded when [`SinkOptions::record`] is on).
#[derive(Debug, Clone)]
pub struct ReceivedCallback {
    /// The request path, e.g. `/cb` (rule URLs may differ only by path).
    pub path: String,
    /// The raw query string, if any (tencent: `SdkAppid=…&CallbackCommand=…`).
    pub query: Option<String>,
    /// The exact body bytes.
    pub body: Bytes,
    /// The signature check, already done.
    pub signature: Signature,
    /// The status the sink answered.
    pub answered: u16,
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

#[cfg(test)]
mod seen_tests {
    use super::*;

    #[test]
    fn duplicates_are_found_across_a_generation_change_and_the_set_never_grows() {
        let mut seen = SeenIds::default();
        let capacity = seen.current.capacity();
        assert!(seen.insert(1));
        assert!(!seen.insert(1));
        for h in 2..=SEEN_WINDOW as u64 {
            assert!(seen.insert(h));
        }
        // The generation changed: 1 is in the previous one and still a duplicate.
        assert_eq!(seen.current.len(), 0);
        assert!(!seen.insert(1));
        assert!(seen.insert(SEEN_WINDOW as u64 + 1));
        assert_eq!(seen.current.capacity(), capacity, "made at full size");
        // One more generation: the oldest ids are forgotten.
        for h in SEEN_WINDOW as u64 + 2..=2 * SEEN_WINDOW as u64 {
            assert!(seen.insert(h));
        }
        assert!(seen.insert(1));
    }
}
