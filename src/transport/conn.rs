//! A delivery worker's own keep-alive connections ([`Conn`]) and a rule's idle ones
//! ([`IdleConns`]), over hyper's connection API.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::Either;
use http::Uri;
use http_body_util::Full;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::answer::{Rest, Unread, read_answer};
use super::classify::classify;
use super::{AttemptLimits, AttemptResult, Connector, POOL_IDLE, Target, origin_form, request};

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
                idle.retain_mut(|open| {
                    poll_driver(&mut open.driver, &mut open.ended, cx);
                    !open.ended && open.last_used.elapsed() < POOL_IDLE
                });
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
    pub(super) async fn drive<T>(&mut self, fut: impl Future<Output = T>) -> T {
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
