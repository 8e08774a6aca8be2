//! Receivers that misbehave at the TCP level: every attempt still ends in one outcome, and no
//! worker hangs.

use std::time::{Duration, Instant};

use callback_sim::{AppBuilder, CallbackReport, FinalOutcome, Outcome, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::*;

/// A raw TCP receiver: for each connection, read the request head, then run `behave`.
async fn raw_receiver<F, Fut>(behave: F) -> String
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
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                // Read until the end of the body (the request is small: one read or a few).
                while !request_complete(&seen) {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                behave(stream).await;
            });
        }
    });
    url
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
