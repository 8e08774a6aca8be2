//! The neutral receiver of `bench/throughput` (docs/behaviour.md §10): a minimal HTTP/1.1
//! server written for the benchmark, so that the senders measured against it (wrk, oha,
//! callback-sim) are the bottleneck rather than the receiver. One thread (a tokio
//! current-thread loop), keep-alive, and per request the same fixed answer
//! `HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n`. Nothing is parsed beyond the head's
//! `Content-Length` framing: the body is skipped unread, so its size costs nothing but the
//! copy out of the socket. Pipelined requests read together are answered with one write.
//!
//! `GET /stats` answers `{"received":N,"bytes":B}` (requests and body bytes so far, the stats
//! requests left out): the script sizes the other senders' body from it.
//!
//! Usage: `neutral [--listen 127.0.0.1:0]`; prints `neutral listening on ADDR` once bound.
//! Loopback only: any other address is refused.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
/// Room for a read; a head must fit in it.
const BUF: usize = 64 * 1024;

static RECEIVED: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => match v.parse::<SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => listen = addr,
                _ => usage(&format!("--listen wants a loopback address, got {v:?}")),
            },
            // `cargo bench` passes `--bench`: nothing to do then but to say how to run it.
            ("--bench", _) => {
                println!("neutral: a receiver for bench/throughput; run it with --listen 127.0.0.1:PORT");
                return;
            }
            _ => usage(&format!("unknown argument {a:?}")),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("neutral: cannot listen on {listen}: {e}");
                std::process::exit(1);
            }
        };
        let addr = listener.local_addr().expect("a bound address");
        println!("neutral listening on {addr}");
        let _ = std::io::stdout().flush();
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve(s));
                }
                Err(e) => eprintln!("neutral: accept: {e}"),
            }
        }
    });
}

fn usage(why: &str) -> ! {
    eprintln!("neutral: {why}\nusage: neutral [--listen 127.0.0.1:PORT]");
    std::process::exit(2);
}

/// One connection: reads what comes, answers every complete request in it with one write,
/// until the peer closes or sends something that is not a request with a `Content-Length`.
async fn serve(mut s: TcpStream) {
    let mut buf = vec![0u8; BUF];
    let (mut start, mut end) = (0usize, 0usize);
    // Body bytes of the current request still to skip.
    let mut skip = 0usize;
    let mut out = Vec::with_capacity(OK.len() * 16);
    loop {
        match s.read(&mut buf[end..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => end += n,
        }
        loop {
            if skip > 0 {
                let n = skip.min(end - start);
                skip -= n;
                start += n;
                if skip > 0 {
                    break;
                }
                out.extend_from_slice(OK);
            }
            match head(&buf[start..end]) {
                Head::Partial => break,
                Head::Bad => return,
                Head::Stats(len) => {
                    start += len;
                    let body = format!(
                        "{{\"received\":{},\"bytes\":{}}}",
                        RECEIVED.load(Ordering::Relaxed),
                        BYTES.load(Ordering::Relaxed)
                    );
                    out.extend_from_slice(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                }
                Head::Request { len, body } => {
                    RECEIVED.fetch_add(1, Ordering::Relaxed);
                    BYTES.fetch_add(body as u64, Ordering::Relaxed);
                    start += len;
                    if body == 0 {
                        out.extend_from_slice(OK);
                    } else {
                        skip = body;
                    }
                }
            }
        }
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        // Keep what is left of a head at the front of the buffer.
        if start == end {
            (start, end) = (0, 0);
        } else if end == buf.len() {
            if start == 0 {
                return; // a head larger than the buffer
            }
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
    }
}

/// A request head at the start of the bytes read.
#[derive(Debug, PartialEq)]
enum Head {
    /// Not all of it yet.
    Partial,
    /// Not a request this receiver serves (no `Content-Length` on a POST, chunked, garbage).
    Bad,
    /// `GET /stats`, `len` bytes of head.
    Stats(usize),
    /// A request: `len` bytes of head, then `body` bytes of body.
    Request { len: usize, body: usize },
}

fn head(b: &[u8]) -> Head {
    let Some(at) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Head::Partial;
    };
    let len = at + 4;
    let text = &b[..at];
    if text.starts_with(b"GET /stats ") {
        return Head::Stats(len);
    }
    let mut body = None;
    for line in text.split(|&c| c == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return Head::Bad;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(n) => body = Some(n),
                None => return Head::Bad,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Head::Bad;
        }
    }
    match body {
        Some(body) => Head::Request { len, body },
        None if text.starts_with(b"GET ") => Head::Request { len, body: 0 },
        None => Head::Bad,
    }
}
