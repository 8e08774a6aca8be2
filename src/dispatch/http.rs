//! One HTTP attempt and its classification into a SPEC §5 outcome.
//!
//! The client is hyper-util's pooled client over hyper, with rustls (ring) through
//! hyper-rustls: per attempt, one request built from parts prepared once (the rule's URI,
//! static headers, the body's shared bytes), nothing reparsed. It never follows redirects (a
//! 3xx is a `status` failure), uses no proxy, and resolves names through [`Resolver`], so a
//! name that does not resolve is told apart from a refused connection. The whole attempt —
//! connect, request, response head and the bounded read of the body — runs under the
//! policy's timeout.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::Either;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::alert::AlertAwareConnector;
use crate::config::TlsConfig;
use crate::domain::{CallbackUrl, Outcome};
use crate::tls;

/// `User-Agent` of every callback: the simulator names itself (SPEC §4).
pub const USER_AGENT: &str = concat!("callback-sim/", env!("CARGO_PKG_VERSION"));
/// How long an idle keep-alive connection to a receiver is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Connect timeout cap; the policy timeout bounds the whole attempt anyway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a rule reaches its receiver: TCP through our resolver, then TLS for `https://`.
/// A receiver's TLS alert is not lost to a failed write ([`AlertAware`](super::alert::AlertAware)).
type Connector = AlertAwareConnector<HttpsConnector<HttpConnector<Resolver>>>;

/// The callbacks' HTTP client: a keep-alive pool over our resolver, HTTPS through rustls, for
/// pre-send calls and replays; and the connector the delivery workers open their own
/// connections with ([`Conn`]). Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Client {
    pool: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    connector: Connector,
}

/// A client could not be built from a rule's TLS files.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct ClientError {
    /// The file or setting that could not be used.
    pub what: String,
    /// Why, and what to fix.
    pub reason: String,
}

/// Builds the HTTP client: keep-alive pool, no redirects, no proxies, our resolver, and the
/// rule's extra root and client certificate when it has them.
pub fn build_client(pool_per_host: usize, tls: &TlsConfig) -> Result<Client, ClientError> {
    let mut http = HttpConnector::new_with_resolver(Resolver);
    // https:// URIs go through it too: hyper-rustls does the TLS on top.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(tls)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let https = AlertAwareConnector(https);
    let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(pool_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https.clone());
    Ok(Client { pool, connector: https })
}

impl Client {
    /// A connection slot of this client's, for one delivery worker: empty until an attempt
    /// opens a connection or [`Conn::check_out`] takes an idle one.
    pub fn conn(&self) -> Conn {
        Conn {
            connector: self.connector.clone(),
            open: None,
        }
    }
}

/// A delivery worker's connection slot: the dispatcher's callbacks go through these rather
/// than the pool. A worker takes its rule's most recently used idle connection for a callback
/// ([`check_out`](Self::check_out)), drives it in its own task while it sends one request at
/// a time, and puts it back after an answer read to its end ([`check_in`](Self::check_in)).
/// A connection is opened when there is none idle, and opened again when the receiver closed
/// it or an attempt left it unusable (a timeout, an answer not read to its end).
pub struct Conn {
    connector: Connector,
    open: Option<Open>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("open", &self.open.is_some()).finish()
    }
}

/// A rule's idle keep-alive connections, the most recently used last: it is the one taken
/// next, so that a light load keeps reusing a few warm connections instead of spreading over
/// all the workers' (and outliving receivers' keep-alive limits). One unused for
/// [`POOL_IDLE`] is closed when it is next looked at.
#[derive(Default)]
pub struct IdleConns(std::sync::Mutex<Vec<Open>>);

impl fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().map_or(0, |idle| idle.len());
        f.debug_struct("IdleConns").field("idle", &n).finish()
    }
}

/// An open connection: how to send on it, and the connection itself, which must be polled
/// for anything to happen on it.
pub struct Open {
    sender: Sender,
    driver: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The connection ended (closed by the receiver, or broken).
    ended: bool,
    /// When its last answer ended.
    last_used: Instant,
}

/// HTTP/1.1, or HTTP/2 when the receiver chose it by ALPN.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// Polls a connection until it has ended, and notes when it has.
fn poll_driver(driver: &mut Pin<Box<dyn Future<Output = ()> + Send>>, ended: &mut bool, cx: &mut Context<'_>) {
    if !*ended && driver.as_mut().poll(cx).is_ready() {
        *ended = true;
    }
}

impl Open {
    /// Runs `fut` while driving the connection.
    async fn drive<T>(&mut self, fut: impl Future<Output = T>) -> T {
        let mut fut = std::pin::pin!(fut);
        let (driver, ended) = (&mut self.driver, &mut self.ended);
        std::future::poll_fn(|cx| {
            poll_driver(driver, ended, cx);
            fut.as_mut().poll(cx)
        })
        .await
    }

    /// Whether the connection can take a request now (it is not closed, not busy).
    async fn ready(&mut self) -> bool {
        let Self {
            sender, driver, ended, ..
        } = self;
        let ready = std::future::poll_fn(|cx| {
            poll_driver(driver, ended, cx);
            match sender {
                Sender::H1(s) => s.poll_ready(cx),
                Sender::H2(s) => s.poll_ready(cx),
            }
        })
        .await;
        ready.is_ok() && !*ended
    }
}

impl Conn {
    /// Takes the most recently used of the rule's idle connections, unless it has been unused
    /// for [`POOL_IDLE`] (then it is closed, and all the older ones with it).
    pub fn check_out(&mut self, idle: &IdleConns) {
        if self.open.is_some() {
            return;
        }
        let mut idle = idle.0.lock().expect("idle connections lock");
        match idle.pop() {
            Some(open) if open.last_used.elapsed() < POOL_IDLE => self.open = Some(open),
            Some(_) => idle.clear(),
            None => {}
        }
    }

    /// Puts the connection the last attempt left back among the rule's idle ones, and closes
    /// the oldest of those if it has been unused for [`POOL_IDLE`].
    pub fn check_in(&mut self, idle: &IdleConns) {
        let Some(open) = self.open.take() else { return };
        let mut idle = idle.0.lock().expect("idle connections lock");
        idle.push(open);
        if idle
            .first()
            .is_some_and(|oldest| oldest.last_used.elapsed() >= POOL_IDLE)
        {
            idle.remove(0);
        }
    }

    /// Keeps a connection whose answer was read to its end.
    fn finish(&mut self, mut open: Open) {
        if !open.ended {
            open.last_used = Instant::now();
            self.open = Some(open);
        }
    }

    /// Sends `req` on the open connection, or on a new one, and reads the answer with
    /// [`read_answer`]. A reused connection that turns out closed before the request went out
    /// (the receiver closed it while idle) is replaced and the request sent again, as
    /// hyper-util's pool does: that is not an attempt that failed. The connection is kept
    /// for the next attempt only when this one read its answer to the end.
    async fn exchange(&mut self, to: Target<'_>, body: &Bytes, limits: AttemptLimits) -> (AttemptResult, Unread) {
        let mut reused = None;
        if let Some(mut open) = self.open.take()
            && open.ready().await
        {
            reused = Some(open);
        }
        loop {
            let fresh = reused.is_none();
            let mut open = match reused.take() {
                Some(open) => open,
                // Boxed: a connect is rare, and its large future would otherwise be part of
                // (and moved with) every attempt's.
                None => match Box::pin(Self::connect(self.connector.clone(), to.uri)).await {
                    Ok(open) => open,
                    Err(failed) => return (failed, None),
                },
            };
            let req = request(to, body.clone());
            let sent = match &mut open.sender {
                Sender::H1(s) => Either::Left(s.try_send_request(origin_form(req, to))),
                Sender::H2(s) => Either::Right(s.try_send_request(req)),
            };
            let resp = match open.drive(sent).await {
                Ok(resp) => resp,
                Err(mut e) => {
                    if !fresh && e.take_message().is_some() {
                        continue;
                    }
                    let (outcome, detail) = classify(e.error(), false);
                    return (AttemptResult::new(outcome, None, Some(detail)), None);
                }
            };
            let (result, rest) = open.drive(read_answer(resp, limits)).await;
            return match rest {
                Rest::Done => {
                    self.finish(open);
                    (result, None)
                }
                Rest::Broken => (result, None),
                Rest::Unread(body) => (result, Some((open, body))),
            };
        }
    }

    async fn connect(mut connector: Connector, uri: &Uri) -> Result<Open, AttemptResult> {
        let failed = |e: &(dyn StdError + 'static)| {
            let (outcome, detail) = classify(e, true);
            AttemptResult::new(outcome, None, Some(detail))
        };
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| failed(&*e))?;
        let io = connector.call(uri.clone()).await.map_err(|e| failed(&*e))?;
        let (sender, driver): (Sender, Pin<Box<dyn Future<Output = ()> + Send>>) = if io.connected().is_negotiated_h2()
        {
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| failed(&e))?;
            (
                Sender::H2(sender),
                Box::pin(async move {
                    let _ = conn.await;
                }),
            )
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| failed(&e))?;
            (
                Sender::H1(sender),
                Box::pin(async move {
                    let _ = conn.await;
                }),
            )
        };
        Ok(Open {
            sender,
            driver,
            ended: false,
            last_used: Instant::now(),
        })
    }
}

/// The rustls settings of a client: the webpki roots plus the rule's `ca_file`, and its
/// `client_cert` + `client_key` for mutual TLS. ALPN is set by the connector (h2, http/1.1).
fn tls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(ca) = &tls.ca_file {
        // Checked here, file by file, so that a bad file is named at startup.
        let certs = tls::read_ca_certs(ca).map_err(named("ca_file"))?;
        let (_, ignored) = roots.add_parsable_certificates(certs);
        debug_assert_eq!(ignored, 0, "read_ca_certs checked every certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError {
            what: "HTTP client".into(),
            reason: format!("no usable TLS version: {e}"),
        })?
        .with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let (chain, key_der) = tls::read_identity(cert, key).map_err(|e| {
                let which = if e.path == *cert { "client_cert" } else { "client_key" };
                named(which)(e)
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| ClientError {
                what: format!("client_cert {} + client_key {}", cert.display(), key.display()),
                reason: format!("not usable as a client certificate: {e}"),
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A [`tls::PemError`] as a [`ClientError`] that names the config key too.
fn named(key: &'static str) -> impl Fn(tls::PemError) -> ClientError {
    move |e| ClientError {
        what: format!("{key} {}", e.path.display()),
        reason: e.reason,
    }
}

/// A name that did not resolve; found again in the error chain to classify `dns`.
#[derive(Debug)]
pub struct DnsError {
    host: String,
    reason: String,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dns lookup of {:?} failed: {}", self.host, self.reason)
    }
}

impl StdError for DnsError {}

/// The system resolver, with failures marked as [`DnsError`]. (The connector does not ask it
/// about IP literals.)
#[derive(Clone, Copy, Debug)]
pub struct Resolver;

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = DnsError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DnsError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DnsError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let fail = |reason: String| DnsError {
                host: host.clone(),
                reason,
            };
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| fail(e.to_string()))?
                .collect();
            if addrs.is_empty() {
                return Err(fail("no addresses".into()));
            }
            Ok(addrs.into_iter())
        })
    }
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    /// The SPEC §5 outcome.
    pub outcome: Outcome,
    /// The HTTP status, when a response head arrived.
    pub status: Option<u16>,
    /// The first `max_chars + 1` characters of a 200 body, when asked for.
    pub body: Option<Bytes>,
    /// A short human explanation for logs (never the request body).
    pub detail: Option<String>,
}

/// What is left of an answer once its outcome is known.
enum Rest {
    /// Nothing: it was read to its end, and the connection can take another request.
    Done,
    /// The body of an error answer, not read.
    Unread(Incoming),
    /// Something the connection cannot be used again after (a body cut short, too long).
    Broken,
}

impl AttemptResult {
    fn new(outcome: Outcome, status: Option<u16>, detail: Option<String>) -> Self {
        Self {
            outcome,
            status,
            body: None,
            detail,
        }
    }
}

/// What an attempt needs besides the client.
#[derive(Debug, Clone, Copy)]
pub struct AttemptLimits {
    /// The whole attempt (connect, request, bounded body read) must finish within this.
    pub timeout: Duration,
    /// A 200 body longer than this is a `violation` (SPEC §5); at most one more is read.
    pub max_chars: usize,
    /// Keep the (bounded) body for the caller to parse: tencent and pre-send answers.
    pub keep_body: bool,
}

/// Where an attempt goes: the request URI (query included) and the headers that come from
/// the URL, made once per rule.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The request URI, query included.
    pub uri: &'a Uri,
    /// Basic auth from a `user:password@` URL, if any.
    pub authorization: Option<&'a HeaderValue>,
    /// `Host` for HTTP/1; without it the client makes one per request.
    pub host: Option<&'a HeaderValue>,
}

impl<'a> Target<'a> {
    /// `url` as it is, or with another URI (the same URL with a query appended).
    pub fn new(url: &'a CallbackUrl, uri: Option<&'a Uri>) -> Self {
        Self {
            uri: uri.unwrap_or(url.as_uri()),
            authorization: url.authorization(),
            host: url.http1_host(),
        }
    }
}

impl<'a> From<&'a Uri> for Target<'a> {
    fn from(uri: &'a Uri) -> Self {
        Self {
            uri,
            authorization: None,
            host: None,
        }
    }
}

/// POSTs `body` to `to` once and classifies what happened.
pub async fn attempt<'a>(
    client: &Client,
    to: impl Into<Target<'a>>,
    body: Bytes,
    limits: AttemptLimits,
) -> AttemptResult {
    match tokio::time::timeout(limits.timeout, attempt_inner(client, to.into(), body, limits)).await {
        Ok(r) => r,
        Err(_) => AttemptResult::new(
            Outcome::Timeout,
            None,
            Some(format!("no complete response within {:?}", limits.timeout)),
        ),
    }
}

/// The request of one attempt: POST, JSON, our `User-Agent`, the URL's `Host` (else the
/// client's) and credentials.
fn request(to: Target<'_>, body: Bytes) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = to.uri.clone();
    let headers = req.headers_mut();
    headers.reserve(6);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    // What reqwest sent by default; kept so the wire does not change.
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    if let Some(auth) = to.authorization {
        headers.insert(AUTHORIZATION, auth.clone());
    }
    if let Some(host) = to.host {
        headers.insert(HOST, host.clone());
    }
    req
}

/// An HTTP/1 request on our own connection: the URI in origin form (path and query), and a
/// `Host` header (hyper-util's pool does both itself).
fn origin_form(mut req: Request<Full<Bytes>>, to: Target<'_>) -> Request<Full<Bytes>> {
    if to.host.is_none()
        && let Some(host) = crate::domain::http1_host(to.uri)
    {
        req.headers_mut().insert(HOST, host);
    }
    if let Some(pq) = to.uri.path_and_query() {
        *req.uri_mut() = Uri::from(pq.clone());
    }
    req
}

async fn attempt_inner(client: &Client, to: Target<'_>, body: Bytes, limits: AttemptLimits) -> AttemptResult {
    let resp = match client.pool.request(request(to, body)).await {
        Ok(r) => r,
        Err(e) => {
            let (outcome, detail) = classify(&e, e.is_connect());
            return AttemptResult::new(outcome, None, Some(detail));
        }
    };
    read_answer(resp, limits).await.0
}

/// POSTs `body` to `to` once on the worker's own connection `conn` and classifies what
/// happened. The connection is kept for the next attempt only when this one read its answer
/// to the end in time.
pub async fn attempt_on(conn: &mut Conn, to: Target<'_>, body: &Bytes, limits: AttemptLimits) -> AttemptResult {
    let deadline = tokio::time::Instant::now() + limits.timeout;
    match tokio::time::timeout_at(deadline, conn.exchange(to, body, limits)).await {
        Ok((result, None)) => result,
        Ok((result, Some((mut open, rest)))) => {
            // The rest of an error answer, when it is short and comes at once (and within the
            // attempt's time): the connection is kept rather than opened again for the next
            // attempt — a failing receiver would otherwise get a new connection per attempt.
            // The outcome is known already and stays what it is.
            let until = deadline.min(tokio::time::Instant::now() + DRAIN_WAIT);
            let drained = tokio::time::timeout_at(until, open.drive(drain(rest, limits.max_chars))).await;
            if drained == Ok(true) {
                conn.finish(open);
            }
            result
        }
        Err(_) => AttemptResult::new(
            Outcome::Timeout,
            None,
            Some(format!("no complete response within {:?}", limits.timeout)),
        ),
    }
}

/// The body of an error answer, not read yet, with its connection.
type Unread = Option<(Open, Incoming)>;

/// Reads an answer: its status, and at most `max_chars + 1` characters of a 200 body. Also
/// says what is left of it, which decides whether the connection can be used again.
async fn read_answer(resp: Response<Incoming>, limits: AttemptLimits) -> (AttemptResult, Rest) {
    let status = resp.status().as_u16();
    if status != 200 {
        // The answer is known: the body is left to the caller (it may read it to keep the
        // connection, without waiting for it).
        let r = AttemptResult::new(Outcome::Status, Some(status), Some(format!("answered HTTP {status}")));
        return (r, Rest::Unread(resp.into_body()));
    }
    // Read at most max_chars + 1 characters: enough to tell a violation, never more.
    let mut body = resp.into_body();
    let mut chars = 0usize;
    let mut kept = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(chunk) = frame.into_data() else { continue };
                let room = limits.max_chars + 1 - chars;
                let (taken, n) = take_chars(&chunk, room);
                chars += n;
                if limits.keep_body {
                    kept.extend_from_slice(&chunk[..taken]);
                }
                if chars > limits.max_chars {
                    let mut r = AttemptResult::new(
                        Outcome::Violation,
                        Some(200),
                        Some(format!("response body longer than {} characters", limits.max_chars)),
                    );
                    r.body = limits.keep_body.then(|| Bytes::from(kept));
                    return (r, Rest::Broken);
                }
            }
            None => break,
            Some(Err(e)) => {
                let (_, detail) = classify(&e, false);
                let r = AttemptResult::new(
                    Outcome::Connect,
                    Some(200),
                    Some(format!("response body broken: {detail}")),
                );
                return (r, Rest::Broken);
            }
        }
    }
    let mut r = AttemptResult::new(Outcome::Delivered, Some(200), None);
    r.body = limits.keep_body.then(|| Bytes::from(kept));
    (r, Rest::Done)
}

/// Longest wait for the rest of an error answer (see [`attempt_on`]): its outcome is known
/// already, so it is not waited for long.
const DRAIN_WAIT: Duration = Duration::from_millis(20);

/// Reads `body` to its end, if it ends within `max_chars` characters' worth of bytes (4 each).
async fn drain(mut body: Incoming, max_chars: usize) -> bool {
    let mut left = max_chars.saturating_mul(4);
    loop {
        match body.frame().await {
            None => return true,
            Some(Ok(frame)) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                if n > left {
                    return false;
                }
                left -= n;
            }
            Some(Err(_)) => return false,
        }
    }
}

/// Counts UTF-8 characters (bytes that are not continuation bytes) in `chunk`, stopping once
/// `room` characters are seen. Returns (bytes taken, characters counted).
fn take_chars(chunk: &[u8], room: usize) -> (usize, usize) {
    let mut n = 0;
    for (i, b) in chunk.iter().enumerate() {
        if b & 0xC0 != 0x80 {
            if n == room {
                return (i, n);
            }
            n += 1;
        }
    }
    (chunk.len(), n)
}

/// Maps a client error to `dns`, `tls`, `timeout` or `connect`, with a one-line explanation.
/// `connecting`: the error came from the connect step (TCP, then the TLS handshake).
fn classify(e: &(dyn StdError + 'static), connecting: bool) -> (Outcome, String) {
    let chain = || error_chain(e);
    if let Some(tls) = chain().find_map(tls_failure) {
        // A connect error is one of the handshake; anything later came after our side of the
        // handshake was done — with TLS 1.3, after we sent our client certificate.
        let phase = if connecting {
            Phase::Handshake
        } else {
            Phase::AfterHandshake
        };
        return (Outcome::Tls, tls_detail(&tls, phase));
    }
    let timed_out = |err: &(dyn StdError + 'static)| {
        err.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || err.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
    };
    let outcome = if chain().any(|err| err.downcast_ref::<DnsError>().is_some()) {
        Outcome::Dns
    } else if chain().any(timed_out) {
        Outcome::Timeout
    } else {
        Outcome::Connect
    };
    let mut parts: Vec<String> = Vec::new();
    for err in chain().skip(1) {
        let text = err.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    (outcome, parts.join(": "))
}

/// An error and its sources, outermost first.
fn error_chain<'a>(e: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&err| err.source())
}

/// Whether `e` says that TLS failed (an alert, a certificate, a handshake cut short).
pub(super) fn is_tls_failure(e: &std::io::Error) -> bool {
    tls_failure(e).is_some()
}

/// What went wrong in TLS, as found in an error chain.
#[derive(Debug, Clone, PartialEq)]
enum TlsFailure {
    /// rustls said so: our verdict on the receiver's certificate, or an alert it sent us.
    Rustls(rustls::Error),
    /// The receiver closed the connection in the middle of the handshake.
    ClosedInHandshake,
}

/// Where the connection was when TLS failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// During the handshake (the client's connect step).
    Handshake,
    /// After our side of the handshake completed: the first read of the answer failed.
    AfterHandshake,
}

/// The TLS failure in one link of an error chain. tokio-rustls wraps a [`rustls::Error`] in an
/// [`std::io::Error`] (and hyper-rustls wraps that in another), whose `source()` skips the
/// wrapped error: the chain alone never shows it, so each `io::Error` is opened with `get_ref`.
fn tls_failure(err: &(dyn StdError + 'static)) -> Option<TlsFailure> {
    let mut cur = err;
    loop {
        if let Some(e) = cur.downcast_ref::<rustls::Error>() {
            return Some(TlsFailure::Rustls(e.clone()));
        }
        let io = cur.downcast_ref::<std::io::Error>()?;
        if let Some(alert) = flattened_alert(io) {
            return Some(TlsFailure::Rustls(rustls::Error::AlertReceived(alert)));
        }
        // tokio-rustls' own error for an EOF before the handshake completed.
        if io.kind() == std::io::ErrorKind::UnexpectedEof && io.to_string() == "tls handshake eof" {
            return Some(TlsFailure::ClosedInHandshake);
        }
        cur = io.get_ref()?;
    }
}

/// The text rustls gives [`rustls::Error::AlertReceived`].
const ALERT_TEXT: &str = "received fatal alert: ";

/// HTTP/2 keeps an I/O error only as its kind and text (h2 clones its errors), so an alert that
/// ends an h2 connection — a receiver rejecting our client certificate after a TLS 1.3
/// handshake, typically — arrives as rustls' text alone. This reads the alert back from it.
fn flattened_alert(io: &std::io::Error) -> Option<rustls::AlertDescription> {
    if io.kind() != std::io::ErrorKind::InvalidData || io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) {
        return None;
    }
    let text = io.to_string();
    let name = text.strip_prefix(ALERT_TEXT)?;
    (0..=u8::MAX)
        .map(rustls::AlertDescription::from)
        .find(|alert| format!("{alert:?}") == name)
}

/// The log line's explanation of a TLS failure. It says which side failed, as the provider's
/// troubleshooting table does (seed 003): the receiver's certificate is invalid ("HTTPS
/// certificate configuration error"), or the receiver did not accept ours ("HTTPS mutual
/// authentication configuration error").
fn tls_detail(failure: &TlsFailure, phase: Phase) -> String {
    use rustls::AlertDescription as A;
    const OURS: &str = "TLS: the receiver rejected our client certificate (mutual TLS)";
    let e = match failure {
        TlsFailure::ClosedInHandshake => {
            return "TLS: the receiver closed the connection during the handshake \
                    (if it requires mutual TLS, check client_cert and client_key)"
                .into();
        }
        TlsFailure::Rustls(e) => e,
    };
    match e {
        rustls::Error::InvalidCertificate(cert) => {
            format!(
                "TLS: the receiver's certificate was rejected: {}",
                certificate_reason(cert)
            )
        }
        rustls::Error::NoCertificatesPresented => "TLS: the receiver's certificate was rejected: it sent none".into(),
        rustls::Error::AlertReceived(A::CertificateRequired) => {
            format!("{OURS}: CertificateRequired: it requires one (set client_cert and client_key)")
        }
        rustls::Error::AlertReceived(
            alert @ (A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied),
        ) => format!("{OURS}: {alert:?} (check that client_cert is signed by a CA the receiver trusts)"),
        // With TLS 1.3 the server checks our certificate after we consider the handshake done:
        // an alert that comes then is its verdict on our certificate.
        rustls::Error::AlertReceived(alert) if phase == Phase::AfterHandshake => format!("{OURS}: {alert:?}"),
        rustls::Error::AlertReceived(A::HandshakeFailure) => "TLS: the receiver refused the handshake \
             (HandshakeFailure): no TLS version or cipher suite in common, or it requires a client \
             certificate (mutual TLS: set client_cert and client_key)"
            .into(),
        rustls::Error::AlertReceived(alert) => format!("TLS: the receiver ended the handshake: {alert:?}"),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("TLS: handshake failed: {e} (is the receiver serving HTTPS on this port?)")
        }
        other => format!("TLS: handshake failed: {other}"),
    }
}

/// Why we did not accept the receiver's certificate, with what to do about it.
fn certificate_reason(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => "it is not signed by a trusted CA (for a self-signed or private-CA receiver, \
             set ca_file to the CA that signed it)"
            .into(),
        C::BadSignature => "its signature does not verify (is ca_file the CA that signed it?)".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            format!("{e} (the URL's host must be one of the certificate's names)")
        }
        C::Expired | C::ExpiredContext { .. } => format!("it has expired: {e}"),
        C::NotValidYet | C::NotValidYetContext { .. } => format!("it is not valid yet: {e}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_chars_counts_characters_not_bytes() {
        assert_eq!(take_chars(b"abc", 10), (3, 3));
        assert_eq!(take_chars(b"abc", 2), (2, 2));
        let s = "é中a".as_bytes();
        assert_eq!(take_chars(s, 10), (s.len(), 3));
        assert_eq!(take_chars(s, 1), (2, 1));
        assert_eq!(take_chars(s, 0), (0, 0));
    }

    use rustls::AlertDescription as A;

    const THEIRS: &str = "TLS: the receiver's certificate was rejected";
    const OURS: &str = "TLS: the receiver rejected our client certificate (mutual TLS)";

    fn detail(e: rustls::Error, phase: Phase) -> String {
        tls_detail(&TlsFailure::Rustls(e), phase)
    }

    #[test]
    fn a_certificate_we_reject_is_the_receivers_side() {
        let d = detail(rustls::CertificateError::UnknownIssuer.into(), Phase::Handshake);
        assert!(d.starts_with(THEIRS) && d.contains("set ca_file"), "{d}");
        for e in [
            rustls::CertificateError::Expired,
            rustls::CertificateError::NotValidForName,
            rustls::CertificateError::BadSignature,
            rustls::CertificateError::BadEncoding,
        ] {
            let d = detail(e.into(), Phase::Handshake);
            assert!(d.starts_with(THEIRS), "{d}");
        }
        let d = detail(rustls::Error::NoCertificatesPresented, Phase::Handshake);
        assert!(d.starts_with(THEIRS), "{d}");
    }

    #[test]
    fn an_alert_about_a_certificate_is_our_side() {
        let d = detail(
            rustls::Error::AlertReceived(A::CertificateRequired),
            Phase::AfterHandshake,
        );
        assert!(
            d.starts_with(OURS) && d.contains("CertificateRequired") && d.contains("set client_cert"),
            "{d}"
        );
        for alert in [A::BadCertificate, A::UnknownCA, A::CertificateExpired, A::AccessDenied] {
            for phase in [Phase::Handshake, Phase::AfterHandshake] {
                let d = detail(rustls::Error::AlertReceived(alert), phase);
                assert!(d.starts_with(OURS) && d.contains(&format!("{alert:?}")), "{d}");
            }
        }
    }

    #[test]
    fn other_alerts_are_ours_only_after_the_handshake() {
        // TLS 1.3: the server judges our certificate after our side of the handshake is done.
        let d = detail(rustls::Error::AlertReceived(A::DecryptError), Phase::AfterHandshake);
        assert!(d.starts_with(OURS), "{d}");
        let d = detail(rustls::Error::AlertReceived(A::ProtocolVersion), Phase::Handshake);
        assert!(
            d.contains("ended the handshake: ProtocolVersion") && !d.contains(OURS),
            "{d}"
        );
        let d = detail(rustls::Error::AlertReceived(A::HandshakeFailure), Phase::Handshake);
        assert!(d.contains("HandshakeFailure") && d.contains("client_cert"), "{d}");
        let d = tls_detail(&TlsFailure::ClosedInHandshake, Phase::Handshake);
        assert!(d.contains("closed the connection during the handshake"), "{d}");
    }

    #[test]
    fn rustls_errors_are_found_inside_io_errors() {
        use std::io::{Error, ErrorKind};
        let alert = rustls::Error::AlertReceived(A::UnknownCA);
        // tokio-rustls' wrapping, and hyper-rustls' around it.
        let once = Error::new(ErrorKind::InvalidData, alert.clone());
        assert_eq!(tls_failure(&once), Some(TlsFailure::Rustls(alert.clone())));
        let twice = Error::other(Error::new(ErrorKind::InvalidData, alert.clone()));
        assert_eq!(tls_failure(&twice), Some(TlsFailure::Rustls(alert.clone())));
        // h2 keeps only kind and text.
        let flat = Error::new(ErrorKind::InvalidData, once.to_string());
        assert_eq!(tls_failure(&flat), Some(TlsFailure::Rustls(alert)));
        let flat = Error::new(ErrorKind::InvalidData, format!("{ALERT_TEXT}{:?}", A::Unknown(200)));
        assert_eq!(
            tls_failure(&flat),
            Some(TlsFailure::Rustls(rustls::Error::AlertReceived(A::Unknown(200))))
        );
        let eof = Error::new(ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(tls_failure(&eof), Some(TlsFailure::ClosedInHandshake));
        for other in [
            Error::from(ErrorKind::ConnectionReset),
            Error::new(ErrorKind::InvalidData, "received fatal alert: NoSuchAlert"),
            Error::new(ErrorKind::UnexpectedEof, "eof"),
        ] {
            assert_eq!(tls_failure(&other), None, "{other}");
        }
        assert_eq!(
            tls_failure(&DnsError {
                host: "h".into(),
                reason: "r".into()
            }),
            None
        );
    }
}
