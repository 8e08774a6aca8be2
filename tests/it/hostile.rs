//! Receivers that misbehave at the TCP level: every attempt still ends in one outcome, and no
//! worker hangs.

use std::time::{Duration, Instant};

use callback_sim::{AppBuilder, CallbackReport, FinalOutcome, Outcome, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::*;

/// A raw TCP receiver: for each connection, read the whole request, then run `behave`.
async fn raw_receiver<F, Fut>(behave: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    raw_receiver_after(request_complete, behave).await
}

/// A raw TCP receiver: for each connection, read until what it has read is `enough`, then run
/// `behave`.
async fn raw_receiver_after<F, Fut>(enough: fn(&[u8]) -> bool, behave: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    let behave = std::sync::Arc::new(behave);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let behave = behave.clone();
            tokio::spawn(async move {
                if read_until(&mut stream, enough).await {
                    behave(stream).await;
                }
            });
        }
    });
    url
}

/// Reads from `stream` until what it read is `enough`: false if the stream ended first.
async fn read_until(stream: &mut tokio::net::TcpStream, enough: fn(&[u8]) -> bool) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = Vec::new();
    while !enough(&seen) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A request head has been read.
fn head_complete(seen: &[u8]) -> bool {
    seen.windows(4).any(|w| w == b"\r\n\r\n")
}

fn request_complete(seen: &[u8]) -> bool {
    let Some(head_end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    seen.len() >= head_end + 4 + len
}

/// The report of one message's callback to `url`, with `app` (app1) as the policy.
async fn outcome_of(url: &str, app: AppBuilder) -> CallbackReport {
    let sim = start_app(app.rule(rule("r", url))).await;
    one_callback(&sim).await
}

#[tokio::test]
async fn closing_without_a_status_line_is_connect() {
    let url = raw_receiver(|s| async move { drop(s) }).await;
    let cb = outcome_of(&url, app1()).await;
    assert_eq!(
        (cb.last_attempt, cb.attempts, cb.outcome),
        (Outcome::Connect, 2, FinalOutcome::Stored),
        "{cb:?}"
    );
}

#[tokio::test]
async fn a_reset_in_the_middle_of_the_response_is_connect() {
    let url = raw_receiver(|mut s| async move {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc").await;
        let _ = s.set_zero_linger();
        drop(s);
    })
    .await;
    let cb = outcome_of(&url, app1()).await;
    assert_eq!((cb.last_attempt, cb.status), (Outcome::Connect, Some(200)), "{cb:?}");
}

#[tokio::test]
async fn a_receiver_trickling_a_byte_a_second_times_out() {
    let url = raw_receiver(|mut s| async move {
        for b in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let started = Instant::now();
    let cb = outcome_of(&url, app1().timeout_secs(1.0)).await;
    assert_eq!((cb.last_attempt, cb.attempts), (Outcome::Timeout, 2), "{cb:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "two 1 s attempts took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_invalid_utf8_body_is_not_interpreted_by_agora() {
    let url = raw_receiver(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\xff\xfe\xfd\xfc")
            .await;
    })
    .await;
    let cb = outcome_of(&url, app1()).await;
    assert_eq!(cb.outcome, FinalOutcome::Delivered, "{cb:?}");
}

#[tokio::test]
async fn a_ten_megabyte_answer_is_a_violation_read_only_in_part() {
    let sink = sink(Reply::stream(10 * 1024 * 1024)).await;
    let cb = outcome_of(&sink.url("/cb"), app1()).await;
    assert_eq!((cb.outcome, cb.attempts), (FinalOutcome::Violation, 1), "{cb:?}");
}

/// The delivery workers read HTTP/1.1 answers themselves: every framing a receiver may use is
/// read to its outcome, and what is not HTTP is `connect`.
#[tokio::test]
async fn answers_in_every_framing_are_read_to_their_outcome() {
    let cases: [(&'static [u8], FinalOutcome, Outcome); 9] = [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=1\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
            FinalOutcome::Delivered,
            Outcome::Delivered,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok, until the end of the connection",
            FinalOutcome::Delivered,
            Outcome::Delivered,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            FinalOutcome::Delivered,
            Outcome::Delivered,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            FinalOutcome::Delivered,
            Outcome::Delivered,
        ),
        (
            b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbusy\r\n0\r\n\r\n",
            FinalOutcome::Stored,
            Outcome::Status,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
            FinalOutcome::Stored,
            Outcome::Connect,
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", FinalOutcome::Stored, Outcome::Connect),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
            FinalOutcome::Delivered,
            Outcome::Delivered,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
            FinalOutcome::Stored,
            Outcome::Connect,
        ),
    ];
    for (answer, outcome, last) in cases {
        let url = raw_receiver(move |mut s| async move {
            let _ = s.write_all(answer).await;
            let _ = s.shutdown().await;
        })
        .await;
        let cb = outcome_of(&url, app1()).await;
        assert_eq!(
            (cb.outcome, cb.last_attempt),
            (outcome, last),
            "{}: {cb:?}",
            String::from_utf8_lossy(answer)
        );
    }
}

/// A chunked 200 answer longer than `max_response_chars` is a violation, read only in part.
#[tokio::test]
async fn a_long_chunked_answer_is_a_violation() {
    let url = raw_receiver(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        let chunk = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
        for _ in 0..1000 {
            if s.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let cb = outcome_of(&url, app1()).await;
    assert_eq!((cb.outcome, cb.attempts), (FinalOutcome::Violation, 1), "{cb:?}");
}

/// Answers with a 100 KB head are read, and the connection they came on serves the next
/// callbacks (its read buffer, grown for the head, goes back to its first size between them).
#[tokio::test]
async fn long_answer_heads_are_read_and_their_connection_kept() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let connections = Arc::new(AtomicUsize::new(0));
    let answer: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\n{}Content-Length: 2\r\n\r\nok",
            format!("X-Filler: {}\r\n", "0123456789".repeat(200)).repeat(50)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let counted = connections.clone();
    let url = raw_receiver(move |mut s| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            // The first request was read; answer it and each next one on this connection.
            while s.write_all(answer).await.is_ok() && read_until(&mut s, request_complete).await {}
        }
    })
    .await;
    let sim = start(config().concurrency(1).app(app1().rule(rule("r", &url)))).await;
    for _ in 0..3 {
        let cb = one_callback(&sim).await;
        assert_eq!(
            (cb.outcome, cb.last_attempt),
            (FinalOutcome::Delivered, Outcome::Delivered),
            "{cb:?}"
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1, "one connection for the three");
}

/// A receiver that answers 413 as soon as it has the request head and closes without reading
/// the body (as a server refusing a body too large does): the write of the body fails, and
/// the attempt's outcome is the answer it sent, not a broken connection.
#[tokio::test]
async fn an_answer_sent_before_the_body_was_read_is_the_outcome() {
    let url = raw_receiver_after(head_complete, |mut stream| async move {
        let _ = stream
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        // Dropped with the body unread: the kernel resets the connection.
    })
    .await;
    let sim = start_app(app1().retries(0).rule(rule("r", &url))).await;
    // Larger than what the loopback socket buffers take in: the body's write must fail.
    let big = "x".repeat(32 * 1024 * 1024);
    let sent = sim
        .send(APP, callback_sim::Message::text("u1", "u2", &big))
        .await
        .expect("accepted");
    let cb = &sent.callbacks[0];
    assert_eq!(
        (cb.outcome, cb.last_attempt, cb.status),
        (FinalOutcome::Stored, Outcome::Status, Some(413)),
        "{cb:?}"
    );
}
