//! The HTTP transport: one attempt of a callback and its classification into an outcome
//! (docs/behaviour.md §5).
//!
//! The client is hyper-util's pooled client over hyper, with rustls (ring) through
//! hyper-rustls: per attempt, one request built from parts prepared once (the rule's URI,
//! static headers, the body's shared bytes), nothing reparsed. It never follows redirects (a
//! 3xx is a `status` failure), uses no proxy, and resolves names through [`Resolver`], so a
//! name that does not resolve is told apart from a refused connection. The whole attempt —
//! connect, request, response head and the bounded read of the body — runs under the
//! policy's timeout.
//!
//! - [`attempt`] goes through the client's keep-alive pool (pre-send calls, replays);
//!   [`attempt_on`] through a delivery worker's own [`Conn`] (`conn`).
//! - `answer` reads an answer within its limits; `classify` names what went wrong;
//!   `resolve` is the resolver; `alert` keeps a receiver's TLS alert from being lost.

mod alert;
mod answer;
mod classify;
mod conn;
mod h1;
mod resolve;

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use self::alert::AlertAwareConnector;
use self::answer::{DRAIN_WAIT, read_answer};
use self::classify::classify;
pub use self::conn::{Conn, IdleConns};
pub use self::resolve::Resolver;
use crate::config::TlsConfig;
use crate::domain::{CallbackUrl, Outcome};
use crate::tls;

/// `User-Agent` of every callback: the simulator names itself (docs/behaviour.md §4).
pub const USER_AGENT: &str = concat!("callback-sim/", env!("CARGO_PKG_VERSION"));
/// How long an idle keep-alive connection to a receiver is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Connect timeout cap; the policy timeout bounds the whole attempt anyway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a rule reaches its receiver: TCP through our resolver, then TLS for `https://`.
/// A receiver's TLS alert is not lost to a failed write (`alert::AlertAware`).
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
        Conn::new(self.connector.clone())
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

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    /// The docs/behaviour.md §5 outcome.
    pub outcome: Outcome,
    /// The HTTP status, when a response head arrived.
    pub status: Option<u16>,
    /// The first `max_chars + 1` characters of a 200 body, when asked for.
    pub body: Option<Bytes>,
    /// A short human explanation for logs (never the request body).
    pub detail: Option<String>,
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
    /// A 200 body longer than this is a `violation` (docs/behaviour.md §5); at most one more is read.
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
            let drained = tokio::time::timeout_at(until, open.drain(rest, limits.max_chars)).await;
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
