//! The delivery workers' keep-alive connections: kept and reused, and replaced without a
//! failed attempt when the receiver closes them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use callback_sim::{CallbackReport, FinalOutcome, Outcome, Reply, Server};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::helpers::*;

/// How the receiver treats a connection after answering.
#[derive(Clone, Copy)]
enum Close {
    /// Keep it open.
    Never,
    /// Answer with `Connection: close`.
    Announced,
    /// Close it silently, a while after the first answer (an idle timeout).
    Idle(Duration),
}

/// A receiver that counts the connections it accepts and the requests it answers.
struct Counting {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Connections the receiver closed.
    closed: Arc<AtomicUsize>,
}

impl Counting {
    async fn start(close: Close) -> Self {
        Self::answering(close, 200).await
    }

    async fn answering(close: Close, status: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (c, r, done) = (conns.clone(), requests.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                let answered = Arc::new(tokio::sync::Notify::new());
                let answered2 = answered.clone();
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let r = r.clone();
                    let answered = answered2.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        r.fetch_add(1, Ordering::SeqCst);
                        answered.notify_one();
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"an error page, or ok")));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        if matches!(close, Close::Announced) {
                            resp.headers_mut().insert("connection", "close".parse().unwrap());
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let done = done.clone();
                tokio::spawn(async move {
                    match close {
                        Close::Idle(after) => {
                            tokio::pin!(conn);
                            tokio::select! {
                                _ = conn.as_mut() => {}
                                _ = async { answered.notified().await; tokio::time::sleep(after).await } => {}
                            }
                        }
                        _ => {
                            let _ = conn.await;
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            conns,
            requests,
            closed,
        }
    }

    /// Waits (bounded) until the receiver has closed `n` connections and our side has them:
    /// no connection of ours to the receiver is established any more (the kernel took the
    /// FIN: CLOSE_WAIT); then lets the runtime poll its sockets once, so that the simulator
    /// sees it too.
    async fn wait_closed(&self, n: usize) {
        eventually("the receiver's close to reach our side", || async {
            (self.closed.load(Ordering::SeqCst) >= n && !established_to(self.addr.port())).then_some(())
        })
        .await;
        tokio::task::yield_now().await;
    }

    fn url(&self) -> String {
        format!("http://{}/cb", self.addr)
    }
}

/// Whether a TCP connection to `port` on this machine is established (Linux /proc/net/tcp:
/// the remote address's port, and state 01).
fn established_to(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    let port = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() > 3 && cols[2].ends_with(&port) && cols[3] == "01"
    })
}

/// Whether a connection of ours to `port` is in CLOSE_WAIT: the receiver closed it and we have
/// not closed our end yet (Linux /proc/net/tcp: state 08).
fn close_wait_to(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    let port = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() > 3 && cols[2].ends_with(&port) && cols[3] == "08"
    })
}

/// The report of one text message to `u{i}`, whose one callback goes to rule `a`.
async fn send_one(sim: &Server, i: usize) -> CallbackReport {
    let mut reports = send_text(sim, &format!("u{i}")).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.remove(0)
}

/// app1 with one rule `a` to `url`, `concurrency` deliveries in flight at most.
async fn sim_to(url: &str, concurrency: u64) -> callback_sim::Sim {
    start(config().concurrency(concurrency).app(app1().rule(rule("a", url)))).await
}

#[tokio::test]
async fn connections_are_kept_alive_and_reused() {
    let rx = Counting::start(Close::Never).await;
    let sim = sim_to(&rx.url(), 4).await;
    let sends = (0..40).map(|i| send_one(&sim, i));
    for cb in futures_util::future::join_all(sends).await {
        assert_eq!((cb.outcome, cb.attempts), (FinalOutcome::Delivered, 1), "{cb:?}");
    }
    assert_eq!(rx.requests.load(Ordering::SeqCst), 40);
    // At most the rule's share of `concurrency`, each used again and again.
    let conns = rx.conns.load(Ordering::SeqCst);
    assert!((1..=4).contains(&conns), "{conns} connections for 40 callbacks");
}

#[tokio::test]
async fn a_receiver_closing_each_connection_costs_no_failed_attempt() {
    let rx = Counting::start(Close::Announced).await;
    let sim = start_app(app1().rule(rule("a", &rx.url()))).await;
    for i in 0..10 {
        let cb = send_one(&sim, i).await;
        assert_eq!((cb.outcome, cb.attempts), (FinalOutcome::Delivered, 1), "{cb:?}");
    }
    assert_eq!(rx.conns.load(Ordering::SeqCst), 10);
    let state = rule_state(&sim, "a");
    assert_eq!(state.stats.outcome(Outcome::Connect), 0, "{state:?}");
}

#[tokio::test]
async fn a_connection_the_receiver_closed_while_idle_is_replaced() {
    let rx = Counting::start(Close::Idle(Duration::from_millis(50))).await;
    // One worker: the second callback must go out on the connection the first one opened.
    let sim = sim_to(&rx.url(), 1).await;
    for i in 0..4 {
        let cb = send_one(&sim, i).await;
        assert_eq!((cb.outcome, cb.attempts), (FinalOutcome::Delivered, 1), "{cb:?}");
        rx.wait_closed(i + 1).await;
    }
    assert_eq!(rx.requests.load(Ordering::SeqCst), 4);
    assert_eq!(
        rx.conns.load(Ordering::SeqCst),
        4,
        "one connection per callback, each closed while idle"
    );
}

#[tokio::test]
async fn a_connection_the_receiver_closes_while_idle_is_dropped_without_waiting_for_a_callback() {
    let rx = Counting::start(Close::Idle(Duration::from_millis(50))).await;
    let sim = sim_to(&rx.url(), 1).await;
    let cb = send_one(&sim, 0).await;
    assert_eq!(cb.outcome, FinalOutcome::Delivered, "{cb:?}");
    eventually("the receiver to close the idle connection", || async {
        (rx.closed.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    // No further callback: the simulator notices the close by itself and closes its end.
    let port = rx.addr.port();
    eventually("our end of the closed connection to be closed too", || async {
        (!close_wait_to(port) && !established_to(port)).then_some(())
    })
    .await;
    assert_eq!(rx.requests.load(Ordering::SeqCst), 1);
    drop(sim);
}

#[tokio::test]
async fn a_receiver_answering_errors_keeps_its_connection() {
    let rx = Counting::answering(Close::Never, 500).await;
    let sim = sim_to(&rx.url(), 1).await;
    for i in 0..5 {
        let cb = send_one(&sim, i).await;
        assert_eq!(
            (cb.outcome, cb.last_attempt, cb.attempts),
            (FinalOutcome::Stored, Outcome::Status, 2),
            "{cb:?}"
        );
    }
    assert_eq!(rx.requests.load(Ordering::SeqCst), 10);
    assert_eq!(
        rx.conns.load(Ordering::SeqCst),
        1,
        "the short error answers were read, the connection kept"
    );
}

#[tokio::test]
async fn an_error_answer_whose_body_never_comes_is_not_waited_for() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            // The head of an error answer, and never its body.
            let _ = stream
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 100\r\n\r\n")
                .await;
            held.push(stream);
        }
    });
    let url = format!("http://{addr}/cb");
    let sim = start_app(app1().timeout_secs(4.0).rule(rule("a", &url))).await;
    let cb = send_one(&sim, 0).await;
    assert_eq!(
        (cb.outcome, cb.last_attempt, cb.status),
        (FinalOutcome::Stored, Outcome::Status, Some(500)),
        "{cb:?}"
    );
    // Two attempts, each waiting at most DRAIN_WAIT (100 ms) for the body, not the timeout.
    assert!(cb.latency_ms < 2000.0, "{cb:?}");
    assert_eq!(conns.load(Ordering::SeqCst), 2, "the connection was not kept");
}

/// With more rules than `concurrency`, the bound holds all the same: one callback in flight
/// at a time here, the second rule's waiting for the first's to end.
#[tokio::test]
async fn more_rules_than_concurrency_stay_within_it() {
    let a = sink(Reply::ok().after(Duration::from_millis(300))).await;
    let b = sink(Reply::ok().after(Duration::from_millis(300))).await;
    let sim = start(
        config()
            .concurrency(1)
            .app(app1().rule(rule("a", &a.url("/a"))).rule(rule("b", &b.url("/b")))),
    )
    .await;
    let reports = send_text(&sim, "u2").await;
    assert!(
        reports.iter().all(|c| c.outcome == FinalOutcome::Delivered),
        "{reports:?}"
    );
    let (ta, tb) = (a.received()[0].at, b.received()[0].at);
    let gap = if ta < tb { tb - ta } else { ta - tb };
    assert!(
        gap >= Duration::from_millis(250),
        "both in flight at once: {gap:?} apart"
    );
}

/// One callback after another uses one warm connection, however many workers the rule has:
/// the most recently used idle connection is taken first.
#[tokio::test]
async fn callbacks_one_after_another_share_one_connection() {
    let rx = Counting::start(Close::Never).await;
    let sim = sim_to(&rx.url(), 64).await;
    for i in 0..30 {
        let cb = send_one(&sim, i).await;
        assert_eq!(cb.outcome, FinalOutcome::Delivered, "{cb:?}");
    }
    assert_eq!(rx.conns.load(Ordering::SeqCst), 1);
}

/// An error answer whose head comes just before the attempt's deadline is still `status`
/// (the wait for the rest of its body never turns it into a timeout). The head is written
/// 15 ms before the deadline; a run where it went out later than that (a slow machine) proves
/// nothing and is made again.
#[tokio::test]
async fn an_error_answer_at_the_deadline_stays_status() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let w = written.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            tokio::time::sleep(Duration::from_millis(985)).await;
            let _ = stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 100\r\n\r\n")
                .await;
            *w.lock().unwrap() = Some(std::time::Instant::now());
            held.push(stream);
        }
    });
    let url = format!("http://{addr}/cb");
    let sim = start_app(app1().timeout_secs(1.0).retries(0).rule(rule("a", &url))).await;
    for i in 0..5 {
        let sent_at = std::time::Instant::now();
        let cb = send_one(&sim, i).await;
        let wrote_at = written.lock().unwrap().take().expect("the receiver answered");
        // The attempt started after `sent_at`: its deadline is later than `sent_at` + 1 s.
        if wrote_at < sent_at + Duration::from_secs(1) {
            assert_eq!((cb.last_attempt, cb.status), (Outcome::Status, Some(503)), "{cb:?}");
            return;
        }
    }
    panic!("the machine was too slow: the answer never went out before the deadline");
}
