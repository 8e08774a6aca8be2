//! HTTP/1.1 on a delivery worker's own connection, written and read by the worker itself
//! (docs/behaviour.md §5): the request goes out in one write — head and body from one buffer
//! the connection keeps — and the answer is read into a buffer sized for answers and parsed
//! in place (`httparse`), its body framed by `Content-Length`, `chunked` or the end of the
//! connection. Nothing else runs per callback: no channel to a connection task, no header map.
//! HTTP/2 connections (chosen by ALPN) keep going through hyper (`conn`).
//!
//! The limits are the transport's: at most `max_chars + 1` characters of a 200 body are read,
//! a head of at most [`MAX_HEAD`] bytes; a connection is used again only after an answer read
//! to its end, when the receiver did not ask to close it and sent nothing more.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderValue;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::alert::closed_by_peer;
use super::answer::take_chars;
use super::classify::classify;
use super::{AttemptLimits, AttemptResult, Target, USER_AGENT};
use crate::domain::Outcome;

/// The connection as the connector made it (TCP, or TLS over TCP).
type Io = TokioIo<<super::Connector as tower_service::Service<http::Uri>>::Response>;

/// The longest response head read (as hyper's default buffer bound): a longer one is an
/// invalid answer.
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Most headers in an answer (as hyper).
const MAX_HEADERS: usize = 100;
/// The read buffer's first size: answers to callbacks are short.
const READ_BUF: usize = 4096;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;

/// One HTTP/1.1 connection and its buffers.
pub(super) struct H1 {
    io: Io,
    /// Bytes read: `buf[start..end]` not used yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The request being written (kept for its capacity).
    out: Vec<u8>,
    /// The connection can take another request.
    pub(super) reusable: bool,
}

/// How the rest of an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// This many bytes more.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Up to the end of the connection (the connection cannot be used again).
    Close,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

/// An answer's head.
struct Head {
    status: u16,
    /// `None`: no body.
    framing: Option<Framing>,
    /// The receiver lets the connection be used again.
    keep_alive: bool,
}

/// What is left of an answer once its outcome is known (see `answer::Rest`).
pub(super) enum Rest {
    Done,
    Unread(Framing),
    Broken,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn closed_early() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed before message completed",
    )
}

/// A failure of the exchange, classified (`connect`, `tls`, `timeout`).
fn failed(e: &io::Error) -> AttemptResult {
    let (outcome, detail) = classify(e, false);
    AttemptResult::new(outcome, None, Some(detail))
}

impl H1 {
    pub(super) fn new(io: Io) -> Self {
        Self {
            io,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            out: Vec::new(),
            reusable: true,
        }
    }

    /// Whether an idle connection can take a request: the receiver has neither closed it nor
    /// sent anything since its last answer. Costs no system call when nothing arrived (the
    /// last read, shorter than the buffer, left the socket known to be empty).
    pub(super) async fn alive(&mut self) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(self.poll_alive(cx))).await
    }

    /// [`alive`](Self::alive), registering `cx`'s waker on the socket: the receiver closing
    /// the connection (or sending anything) wakes it.
    pub(super) fn poll_alive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.reusable || self.start != self.end {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        let alive = matches!(Pin::new(&mut self.io).poll_read(cx, &mut rb), Poll::Pending);
        self.reusable = alive;
        alive
    }

    /// Sends the request and reads the answer: the status, and at most `max_chars + 1`
    /// characters of a 200 body, as `answer::read_answer` does for hyper's answers.
    pub(super) async fn exchange(
        &mut self,
        to: Target<'_>,
        body: &Bytes,
        limits: AttemptLimits,
    ) -> (AttemptResult, Rest) {
        self.reusable = false;
        let head = match self.send(to, body).await {
            Ok(()) => self.read_head().await,
            Err(e) => self.early_head(e).await,
        };
        let head = match head {
            Ok(h) => h,
            Err(e) => return (failed(&e), Rest::Broken),
        };
        let keep_alive = head.keep_alive;
        if head.status != 200 {
            let status = head.status;
            let r = AttemptResult::new(Outcome::Status, Some(status), Some(format!("answered HTTP {status}")));
            return match head.framing {
                None => self.end_answer(keep_alive, r),
                Some(f) => {
                    self.reusable = keep_alive;
                    (r, Rest::Unread(f))
                }
            };
        }
        let Some(mut framing) = head.framing else {
            let mut r = AttemptResult::new(Outcome::Delivered, Some(200), None);
            r.body = limits.keep_body.then(Bytes::new);
            return self.end_answer(keep_alive, r);
        };
        let mut chars = 0usize;
        let mut kept = Vec::new();
        let mut too_long = false;
        let read = self
            .body(&mut framing, |chunk| {
                let (taken, n) = take_chars(chunk, limits.max_chars + 1 - chars);
                chars += n;
                if limits.keep_body {
                    kept.extend_from_slice(&chunk[..taken]);
                }
                too_long = chars > limits.max_chars;
                !too_long
            })
            .await;
        if too_long {
            let mut r = AttemptResult::new(
                Outcome::Violation,
                Some(200),
                Some(format!("response body longer than {} characters", limits.max_chars)),
            );
            r.body = limits.keep_body.then(|| Bytes::from(kept));
            return (r, Rest::Broken);
        }
        if let Err(e) = read {
            let (_, detail) = classify(&e, false);
            let r = AttemptResult::new(
                Outcome::Connect,
                Some(200),
                Some(format!("response body broken: {detail}")),
            );
            return (r, Rest::Broken);
        }
        let mut r = AttemptResult::new(Outcome::Delivered, Some(200), None);
        r.body = limits.keep_body.then(|| Bytes::from(kept));
        let keep_alive = keep_alive && framing != Framing::Close;
        self.end_answer(keep_alive, r)
    }

    /// An answer read to its end: the connection is kept when the receiver allows it and sent
    /// nothing after it.
    fn end_answer(&mut self, keep_alive: bool, r: AttemptResult) -> (AttemptResult, Rest) {
        self.reusable = keep_alive && self.start == self.end;
        if self.reusable {
            self.empty();
            (r, Rest::Done)
        } else {
            (r, Rest::Broken)
        }
    }

    /// Reads the rest of an error answer, if it ends within `max_chars` characters' worth of
    /// bytes (4 each): true when it did and the connection can take another request.
    pub(super) async fn drain(&mut self, mut framing: Framing, max_chars: usize) -> bool {
        if !self.reusable {
            return false;
        }
        let mut left = max_chars.saturating_mul(4);
        let mut fits = true;
        let read = self
            .body(&mut framing, |chunk| {
                fits = chunk.len() <= left;
                left = left.saturating_sub(chunk.len());
                fits
            })
            .await;
        let done = read.is_ok() && fits;
        self.reusable = done && self.start == self.end;
        if self.reusable {
            self.empty();
        }
        self.reusable
    }

    /// Empties the read buffer between answers, back to its first size if a long head grew it
    /// (a kept connection holds no more than that while idle).
    fn empty(&mut self) {
        (self.start, self.end) = (0, 0);
        if self.buf.len() > READ_BUF {
            self.buf.truncate(READ_BUF);
            self.buf.shrink_to_fit();
        }
    }

    /// Writes the request: POST, JSON, our `User-Agent`, the URL's `Host` and credentials, the
    /// body's length — head and body in one write.
    async fn send(&mut self, to: Target<'_>, body: &Bytes) -> io::Result<()> {
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(to.uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\ncontent-type: application/json\r\nuser-agent: ");
        out.extend_from_slice(USER_AGENT.as_bytes());
        out.extend_from_slice(b"\r\naccept: */*\r\n");
        if let Some(auth) = to.authorization {
            header(out, "authorization", auth);
        }
        let host = match to.host {
            Some(h) => Some(h.clone()),
            None => crate::domain::http1_host(to.uri),
        };
        if let Some(host) = &host {
            header(out, "host", host);
        }
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa(body.len() as u64, &mut [0; 20]));
        out.extend_from_slice(b"\r\n\r\n");
        // A large body goes in a write of its own rather than being copied.
        let large = body.len() > 64 * 1024;
        if !large {
            out.extend_from_slice(body);
        }
        self.io.write_all(&self.out).await?;
        if large {
            self.io.write_all(body).await?;
        }
        self.io.flush().await
    }

    /// After the request's write failed with `e`: the head of an answer the receiver sent
    /// before it read the whole request and closed — a 413 for a body it will not take — which
    /// is the attempt's outcome (docs/behaviour.md §5), or else `e`. A 200 for a request not
    /// read to its end took nothing: not a delivery.
    async fn early_head(&mut self, e: io::Error) -> io::Result<Head> {
        if !closed_by_peer(&e) {
            return Err(e);
        }
        match self.read_head().await {
            Ok(mut h) if h.status != 200 => {
                h.keep_alive = false;
                Ok(h)
            }
            _ => Err(e),
        }
    }

    /// Reads into the buffer, after what is there; grows it up to [`MAX_HEAD`] when full.
    async fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_HEAD {
                return Err(invalid("message head is too large"));
            }
            let grown = (self.buf.len() * 2).min(MAX_HEAD);
            self.buf.resize(grown, 0);
        }
        match self.io.read(&mut self.buf[self.end..]).await? {
            0 => Err(closed_early()),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// Reads an answer's head, skipping informational (1xx) ones.
    async fn read_head(&mut self) -> io::Result<Head> {
        loop {
            let parsed = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete(len)) => Some((len, head_of(&resp)?)),
                    Ok(httparse::Status::Partial) => None,
                    Err(e) => return Err(invalid(format!("invalid HTTP answer: {e}"))),
                }
            };
            match parsed {
                None => self.fill().await?,
                Some((len, head)) => {
                    self.start += len;
                    if (100..200).contains(&head.status) && head.status != 101 {
                        continue;
                    }
                    return Ok(head);
                }
            }
        }
    }

    /// Reads a body framed by `framing`, handing each piece of data to `each` until it says
    /// stop (false) or the body ends. `framing` is left where the body stopped.
    async fn body(&mut self, framing: &mut Framing, mut each: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        loop {
            let avail = &self.buf[self.start..self.end];
            match framing {
                Framing::Length(0) => return Ok(()),
                Framing::Length(left) => {
                    if !avail.is_empty() {
                        let n = (*left).min(avail.len() as u64) as usize;
                        *left -= n as u64;
                        self.start += n;
                        if !each(&self.buf[self.start - n..self.start]) {
                            return Ok(());
                        }
                        continue;
                    }
                }
                Framing::Close => {
                    if !avail.is_empty() {
                        let n = avail.len();
                        self.start += n;
                        if !each(&self.buf[self.start - n..self.start]) {
                            return Ok(());
                        }
                        continue;
                    }
                    match self.fill().await {
                        Ok(()) => continue,
                        // The end of the connection is the end of the body.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
                Framing::Chunked(state) => match step(state, avail)? {
                    Step::More => {}
                    Step::Consumed(n) => {
                        self.start += n;
                        continue;
                    }
                    Step::Data(n) => {
                        self.start += n;
                        if !each(&self.buf[self.start - n..self.start]) {
                            return Ok(());
                        }
                        continue;
                    }
                    Step::End(n) => {
                        self.start += n;
                        return Ok(());
                    }
                },
            }
            self.fill().await?;
        }
    }
}

/// What one step of the chunked decoder did with the bytes available.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Needs more bytes.
    More,
    /// Used this many bytes of framing.
    Consumed(usize),
    /// This many bytes of data.
    Data(usize),
    /// The body ended after this many bytes.
    End(usize),
}

/// One step of the chunked decoder over `avail`.
fn step(state: &mut Chunk, avail: &[u8]) -> io::Result<Step> {
    let line = |avail: &[u8]| -> io::Result<Option<usize>> {
        match avail.windows(2).position(|w| w == b"\r\n") {
            Some(at) => Ok(Some(at)),
            None if avail.len() > MAX_LINE => Err(invalid("invalid chunked body: a line too long")),
            None => Ok(None),
        }
    };
    match *state {
        Chunk::Size => {
            let Some(at) = line(avail)? else { return Ok(Step::More) };
            let text = &avail[..at];
            let digits = text.split(|&c| c == b';').next().unwrap_or_default().trim_ascii();
            let size = std::str::from_utf8(digits)
                .ok()
                .filter(|d| !d.is_empty() && d.len() <= 16 && d.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|d| u64::from_str_radix(d, 16).ok())
                .ok_or_else(|| invalid("invalid chunked body: a bad chunk size"))?;
            *state = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
            Ok(Step::Consumed(at + 2))
        }
        Chunk::Data(left) => {
            if avail.is_empty() {
                return Ok(Step::More);
            }
            let n = left.min(avail.len() as u64) as usize;
            *state = if left == n as u64 {
                Chunk::DataEnd
            } else {
                Chunk::Data(left - n as u64)
            };
            Ok(Step::Data(n))
        }
        Chunk::DataEnd => {
            if avail.len() < 2 {
                return Ok(Step::More);
            }
            if &avail[..2] != b"\r\n" {
                return Err(invalid("invalid chunked body: no CRLF after a chunk"));
            }
            *state = Chunk::Size;
            Ok(Step::Consumed(2))
        }
        Chunk::Trailers => {
            let Some(at) = line(avail)? else { return Ok(Step::More) };
            if at == 0 {
                return Ok(Step::End(2));
            }
            Ok(Step::Consumed(at + 2))
        }
    }
}

/// The status, framing and keep-alive of a parsed head (RFC 9112 §6.3).
fn head_of(resp: &httparse::Response<'_, '_>) -> io::Result<Head> {
    let status = resp.code.unwrap_or_default();
    let http10 = resp.version == Some(0);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let (mut close, mut keep) = (false, false);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // A list of equal values (`5, 5`) is one value, as hyper reads it (RFC 9110 §8.6).
            for v in h.value.split(|&c| c == b',') {
                let n = std::str::from_utf8(v)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| invalid("invalid HTTP answer: a bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(invalid("invalid HTTP answer: content-lengths that differ"));
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&c| c == b',').next().unwrap_or_default().trim_ascii();
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&c| c == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        None
    } else {
        match (chunked, length) {
            (Some(true), _) => Some(Framing::Chunked(Chunk::Size)),
            (Some(false), _) | (None, None) => Some(Framing::Close),
            (None, Some(0)) => None,
            (None, Some(n)) => Some(Framing::Length(n)),
        }
    };
    // Both framings in one answer is how requests get smuggled (RFC 9112 §6.3): chunked is
    // read, and the connection is not trusted with another callback.
    let both = chunked.is_some() && length.is_some();
    let keep_alive = !close && !both && (!http10 || keep) && framing != Some(Framing::Close) && status != 101;
    Ok(Head {
        status,
        framing,
        keep_alive,
    })
}

fn header(out: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, without allocating.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> io::Result<Head> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp.parse(text.as_bytes()).unwrap().is_complete());
        head_of(&resp)
    }

    #[test]
    fn framing_and_keep_alive_follow_the_head() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (200, Some(Framing::Length(5)), true)
        );
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (None, true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
        assert_eq!(h.framing, Some(Framing::Chunked(Chunk::Size)));
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Some(Framing::Close), false));
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n").unwrap();
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (None, true));
        assert!(head("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_err());
        assert!(head("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n").is_err());
        assert!(head("HTTP/1.1 200 OK\r\nContent-Length: 1,\r\n\r\n").is_err());
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(h.framing, Some(Framing::Length(5)), "equal values are one");
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.keep_alive), (Some(Framing::Chunked(Chunk::Size)), false));
    }

    #[test]
    fn the_chunked_decoder_steps_through_sizes_data_and_trailers() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
        let (mut state, mut at, mut data) = (Chunk::Size, 0, Vec::new());
        loop {
            match step(&mut state, &body[at..]).unwrap() {
                Step::Consumed(n) => at += n,
                Step::Data(n) => {
                    data.extend_from_slice(&body[at..at + n]);
                    at += n;
                }
                Step::End(n) => {
                    at += n;
                    break;
                }
                Step::More => panic!("the whole body is there"),
            }
        }
        assert_eq!((data.as_slice(), at), (&b"hello"[..], body.len()));
        assert!(matches!(step(&mut Chunk::Size, b"5"), Ok(Step::More)));
        assert!(step(&mut Chunk::Size, b"zz\r\n").is_err());
        assert!(step(&mut Chunk::Size, b"+5\r\n").is_err());
        assert!(step(&mut Chunk::DataEnd, b"xx").is_err());
    }

    #[test]
    fn itoa_writes_decimal() {
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(18446744073709551615, &mut [0; 20]), b"18446744073709551615");
    }
}
