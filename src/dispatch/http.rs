//! One HTTP attempt and its classification into a SPEC §5 outcome.
//!
//! The shared client never follows redirects (a 3xx is a `status` failure) and resolves names
//! through [`Resolver`], so a name that does not resolve is told apart from a refused
//! connection. The whole attempt — connect, request, response head and the bounded read of the
//! body — runs under the policy's timeout.

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Client, Url};

use crate::config::TlsConfig;
use crate::domain::Outcome;

/// `User-Agent` of every callback: the simulator names itself (SPEC §4).
pub const USER_AGENT: &str = concat!("callback-sim/", env!("CARGO_PKG_VERSION"));
/// How long an idle keep-alive connection to a receiver is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Connect timeout cap; the policy timeout bounds the whole attempt anyway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client could not be built from a rule's TLS files.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct ClientError {
    pub what: String,
    pub reason: String,
}

/// Builds the HTTP client: keep-alive pool, no redirects, no proxies, our resolver, and the
/// rule's extra root and client certificate when it has them.
pub fn build_client(pool_per_host: usize, tls: &TlsConfig) -> Result<Client, ClientError> {
    let mut b = Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(pool_per_host)
        .dns_resolver(std::sync::Arc::new(Resolver));
    if let Some(ca) = &tls.ca_file {
        let pem = read(ca)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError {
            what: ca.display().to_string(),
            reason: format!("not a PEM certificate: {e}"),
        })?;
        if certs.is_empty() {
            return Err(ClientError {
                what: ca.display().to_string(),
                reason: "holds no PEM certificate".into(),
            });
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let mut pem = read(cert)?;
        pem.push(b'\n');
        pem.extend(read(key)?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| ClientError {
            what: format!("{} + {}", cert.display(), key.display()),
            reason: format!("not a PEM certificate and private key: {e}"),
        })?;
        b = b.identity(id);
    }
    b.build().map_err(|e| ClientError {
        what: "HTTP client".into(),
        reason: e.to_string(),
    })
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError {
        what: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// A name that did not resolve; found again in the error chain to classify `dns`.
#[derive(Debug)]
struct DnsError {
    host: String,
    reason: String,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dns lookup of {:?} failed: {}", self.host, self.reason)
    }
}

impl StdError for DnsError {}

/// The system resolver, with failures marked as [`DnsError`].
struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let fail = |reason: String| -> Box<dyn StdError + Send + Sync> {
                Box::new(DnsError {
                    host: host.clone(),
                    reason,
                })
            };
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| fail(e.to_string()))?
                .collect();
            if addrs.is_empty() {
                return Err(fail("no addresses".into()));
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct AttemptResult {
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
    pub timeout: Duration,
    /// A 200 body longer than this is a `violation` (SPEC §5); at most one more is read.
    pub max_chars: usize,
    /// Keep the (bounded) body for the caller to parse: tencent and pre-send answers.
    pub keep_body: bool,
}

/// POSTs `body` to `url` once and classifies what happened.
pub async fn attempt(client: &Client, url: &Url, body: Bytes, limits: AttemptLimits) -> AttemptResult {
    match tokio::time::timeout(limits.timeout, attempt_inner(client, url, body, limits)).await {
        Ok(r) => r,
        Err(_) => AttemptResult::new(
            Outcome::Timeout,
            None,
            Some(format!("no complete response within {:?}", limits.timeout)),
        ),
    }
}

async fn attempt_inner(client: &Client, url: &Url, body: Bytes, limits: AttemptLimits) -> AttemptResult {
    let sent = client
        .post(url.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(body)
        .send()
        .await;
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            let (outcome, detail) = classify(&e);
            return AttemptResult::new(outcome, None, Some(detail));
        }
    };
    let status = resp.status().as_u16();
    if status != 200 {
        return AttemptResult::new(Outcome::Status, Some(status), Some(format!("answered HTTP {status}")));
    }
    // Read at most max_chars + 1 characters: enough to tell a violation, never more.
    let mut chars = 0usize;
    let mut kept = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
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
                    return r;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let (_, detail) = classify(&e);
                return AttemptResult::new(
                    Outcome::Connect,
                    Some(200),
                    Some(format!("response body broken: {detail}")),
                );
            }
        }
    }
    let mut r = AttemptResult::new(Outcome::Delivered, Some(200), None);
    r.body = limits.keep_body.then(|| Bytes::from(kept));
    r
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

/// Maps a reqwest error to `dns`, `tls`, `timeout` or `connect`, with a one-line explanation.
fn classify(e: &reqwest::Error) -> (Outcome, String) {
    let mut parts = Vec::new();
    let mut outcome = if e.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::Connect
    };
    let mut cur: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(err) = cur {
        if err.downcast_ref::<DnsError>().is_some() {
            outcome = Outcome::Dns;
        }
        let text = err.to_string();
        let lower = text.to_ascii_lowercase();
        if outcome == Outcome::Connect
            && (lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake"))
        {
            outcome = Outcome::Tls;
        }
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    (outcome, parts.join(": "))
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
}
