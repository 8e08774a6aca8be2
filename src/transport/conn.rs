//! A delivery worker's own keep-alive connections ([`Conn`]) and a rule's idle ones
//! ([`IdleConns`]): HTTP/1.1 written and read by the worker (`h1`), HTTP/2 over hyper's
//! connection API.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Instant;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::answer::{Rest, drain, read_answer};
use super::classify::classify;
use super::h1::{self, H1};
use super::{AttemptLimits, AttemptResult, Connector, POOL_IDLE, Target, request};

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
/// [`POOL_IDLE`] is closed when it is next looked at. [`watch`](Self::watch) notices the ones
/// the receiver closes while they are idle, and drops them.
#[derive(Default)]
pub struct IdleConns(std::sync::Mutex<Vec<Open>>);

/// How often [`IdleConns::watch`] looks at the idle connections it does not watch yet (the ones
/// checked in since): between two looks, a connection it watches wakes it when its receiver
/// closes it.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl IdleConns {
    /// Until `stop` is cancelled: drops each idle connection as soon as it has ended — the
    /// receiver closed it (an idle timeout), or it broke — and the ones unused for
    /// [`POOL_IDLE`], rather than when a callback next takes it (docs/behaviour.md §4). Idle
    /// connections are polled here, each registering this task's waker on its socket, so a close
    /// wakes it at once; the ones checked in since the last look are picked up within
    /// [`WATCH_EVERY`]. One task per rule, whatever the load: the workers never wake it.
    pub async fn watch(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            let sweep = std::future::poll_fn(|cx| {
                let mut idle = self.0.lock().expect("idle connections lock");
                idle.retain_mut(|open| open.poll_idle(cx) && open.last_used.elapsed() < POOL_IDLE);
                std::task::Poll::<()>::Pending
            });
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sweep => {}
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
        }
    }
}

impl fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().map_or(0, |idle| idle.len());
        f.debug_struct("IdleConns").field("idle", &n).finish()
    }
}

/// An open connection, and when its last answer ended.
pub struct Open {
    proto: Proto,
    last_used: Instant,
}

/// HTTP/1.1, or HTTP/2 when the receiver chose it by ALPN.
enum Proto {
    /// Written and read by the worker itself (boxed: its buffers and TLS state are large, and
    /// an idle connection moves in and out of its rule's list).
    H1(Box<H1>),
    /// hyper's: how to send on it, and the connection itself, which must be polled for
    /// anything to happen on it.
    H2 {
        sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
        driver: Pin<Box<dyn Future<Output = ()> + Send>>,
        /// The connection ended (closed by the receiver, or broken).
        ended: bool,
    },
}

/// The rest of an error answer, not read yet.
pub(super) enum Leftover {
    H1(h1::Framing),
    H2(hyper::body::Incoming),
}

/// What an exchange leaves of its connection.
enum After {
    Done,
    Broken,
    Unread(Leftover),
}

/// The rest of an error answer, not read yet, with its connection.
pub(super) type Unread = Option<(Open, Leftover)>;

/// Polls a connection until it has ended, and notes when it has.
fn poll_driver(driver: &mut Pin<Box<dyn Future<Output = ()> + Send>>, ended: &mut bool, cx: &mut Context<'_>) {
    if !*ended && driver.as_mut().poll(cx).is_ready() {
        *ended = true;
    }
}

/// Runs `fut` while driving an HTTP/2 connection.
async fn drive<T>(
    driver: &mut Pin<Box<dyn Future<Output = ()> + Send>>,
    ended: &mut bool,
    fut: impl Future<Output = T>,
) -> T {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        poll_driver(driver, ended, cx);
        fut.as_mut().poll(cx)
    })
    .await
}

impl Open {
    /// Whether the connection can take a request now (it is not closed, not busy).
    async fn ready(&mut self) -> bool {
        match &mut self.proto {
            Proto::H1(h1) => h1.alive().await,
            Proto::H2 { sender, driver, ended } => {
                let ready = std::future::poll_fn(|cx| {
                    poll_driver(driver, ended, cx);
                    sender.poll_ready(cx)
                })
                .await;
                ready.is_ok() && !*ended
            }
        }
    }

    /// Polls an idle connection (registering `cx`'s waker on it): false once it has ended.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.proto {
            Proto::H1(h1) => h1.poll_alive(cx),
            Proto::H2 { driver, ended, .. } => {
                poll_driver(driver, ended, cx);
                !*ended
            }
        }
    }

    /// The connection has ended or cannot take another request.
    fn ended(&self) -> bool {
        match &self.proto {
            Proto::H1(h1) => !h1.reusable,
            Proto::H2 { ended, .. } => *ended,
        }
    }

    /// Reads the rest of an error answer if it ends within `max_chars` characters' worth of
    /// bytes: true when it did (the connection can be used again).
    pub(super) async fn drain(&mut self, rest: Leftover, max_chars: usize) -> bool {
        match (&mut self.proto, rest) {
            (Proto::H1(h1), Leftover::H1(framing)) => h1.drain(framing, max_chars).await,
            (Proto::H2 { driver, ended, .. }, Leftover::H2(body)) => drive(driver, ended, drain(body, max_chars)).await,
            _ => false,
        }
    }
}

impl Conn {
    /// An empty slot that opens its connections with `connector`.
    pub(super) fn new(connector: Connector) -> Self {
        Self { connector, open: None }
    }

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
    pub(super) fn finish(&mut self, mut open: Open) {
        if !open.ended() {
            open.last_used = Instant::now();
            self.open = Some(open);
        }
    }

    /// Sends `req` on the open connection, or on a new one, and reads the answer with
    /// [`read_answer`]. A reused connection that turns out closed before the request went out
    /// (the receiver closed it while idle) is replaced and the request sent again, as
    /// hyper-util's pool does: that is not an attempt that failed. The connection is kept
    /// for the next attempt only when this one read its answer to the end.
    pub(super) async fn exchange(
        &mut self,
        to: Target<'_>,
        body: &Bytes,
        limits: AttemptLimits,
    ) -> (AttemptResult, Unread) {
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
            let (result, rest) = match &mut open.proto {
                // A reused connection the receiver closed while idle is told by `ready` above:
                // what fails from here on is this attempt's.
                Proto::H1(h1) => match h1.exchange(to, body, limits).await {
                    (result, h1::Rest::Done) => (result, After::Done),
                    (result, h1::Rest::Broken) => (result, After::Broken),
                    (result, h1::Rest::Unread(framing)) => (result, After::Unread(Leftover::H1(framing))),
                },
                Proto::H2 { sender, driver, ended } => {
                    let sent = sender.try_send_request(request(to, body.clone()));
                    match drive(driver, ended, sent).await {
                        Err(mut e) => {
                            if !fresh && e.take_message().is_some() {
                                continue;
                            }
                            let (outcome, detail) = classify(e.error(), false);
                            (AttemptResult::new(outcome, None, Some(detail)), After::Broken)
                        }
                        Ok(resp) => match drive(driver, ended, read_answer(resp, limits)).await {
                            (result, Rest::Done) => (result, After::Done),
                            (result, Rest::Broken) => (result, After::Broken),
                            (result, Rest::Unread(body)) => (result, After::Unread(Leftover::H2(body))),
                        },
                    }
                }
            };
            return match rest {
                After::Done => {
                    self.finish(open);
                    (result, None)
                }
                After::Broken => (result, None),
                After::Unread(left) => (result, Some((open, left))),
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
        let proto = if io.connected().is_negotiated_h2() {
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| failed(&e))?;
            Proto::H2 {
                sender,
                driver: Box::pin(async move {
                    let _ = conn.await;
                }),
                ended: false,
            }
        } else {
            Proto::H1(Box::new(H1::new(hyper_util::rt::TokioIo::new(io))))
        };
        Ok(Open {
            proto,
            last_used: Instant::now(),
        })
    }
}
