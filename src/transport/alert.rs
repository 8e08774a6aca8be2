//! Connections that report the receiver's TLS alert instead of the broken pipe it causes.
//!
//! With TLS 1.3 a receiver judges our client certificate after our side of the handshake is
//! done: it sends an alert and closes. If our next write comes first, it fails with a broken
//! pipe or a reset, and the alert that says why — still unread in the socket — is lost: the
//! attempt would be a plain `connect` failure. (HTTP/2 writes its preface at once, so it
//! loses that race often.) [`AlertAware`] reads what the receiver sent when a write fails
//! that way, and reports its TLS alert when there is one — to that write and to every read and
//! write after it: once rustls has reported the alert it reads as a plain end of stream, and
//! HTTP/2 (which may meet the end of stream before it handles the failed write) would otherwise
//! end the request with "broken pipe".

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBuf, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower_service::Service;

use super::classify::is_tls_failure;

/// A connector whose connections are [`AlertAware`].
#[derive(Clone, Debug)]
pub struct AlertAwareConnector<C>(pub C);

impl<C> Service<Uri> for AlertAwareConnector<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = AlertAware<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(AlertAware::new) })
    }
}

/// A connection whose failed writes report the receiver's TLS alert when one is waiting.
#[derive(Debug)]
pub struct AlertAware<T> {
    inner: T,
    /// A write failed with a broken pipe or a reset: what the receiver sent is being read.
    failed: Option<io::Error>,
    /// The TLS failure read after a failed write: every later read reports it.
    alert: Option<rustls::Error>,
    /// What the receiver sent, read while looking for an alert: the next reads get it (an
    /// answer sent before the receiver closed — a 413 — is still the answer).
    unread: Vec<u8>,
}

/// Bytes read at most, after a failed write, to reach the receiver's alert.
const READ_LIMIT: usize = 64 * 1024;

/// Whether a write failed because the receiver closed the connection (a broken pipe or a
/// reset): what it sent before it closed may say why.
pub(super) fn closed_by_peer(e: &io::Error) -> bool {
    use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted)
}

impl<T> AlertAware<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            failed: None,
            alert: None,
            unread: Vec::new(),
        }
    }
}

impl<T: Read + Unpin> AlertAware<T> {
    /// The outcome of a write that returned `r`, or that would have written `done` (its
    /// length, or nothing for a flush) had it not failed. A broken pipe or a reset is looked
    /// into: when the receiver sent a TLS alert before it closed, the write is reported done
    /// and the alert is what the next read reports (the socket is readable by then: the
    /// alert, the end of the stream or the reset is there to read). HTTP/2 ends a request
    /// with "broken pipe" when its connection fails on a write, whatever the write's error
    /// was; a failed read it reports to the request as it is.
    fn checked<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>, done: R) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(Err(e)) if closed_by_peer(&e) => {
                self.failed = Some(e);
                self.why(cx, done)
            }
            other => other,
        }
    }

    /// Reads what the receiver sent after a write failed: `done` when that holds a TLS
    /// failure (kept for the next read, which is woken), else the write's own error.
    fn why<R>(&mut self, cx: &mut Context<'_>, done: R) -> Poll<io::Result<R>> {
        while self.unread.len() < READ_LIMIT {
            let mut scratch = [MaybeUninit::<u8>::uninit(); 4096];
            let mut buf = ReadBuf::uninit(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, buf.unfilled()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) if is_tls_failure(&e) => {
                    self.failed = None;
                    self.alert = Some(match e.into_inner().map(|inner| inner.downcast::<rustls::Error>()) {
                        Some(Ok(tls)) => *tls,
                        // A TLS failure that is not rustls' own error: said by its text.
                        Some(Err(other)) => rustls::Error::General(other.to_string()),
                        None => rustls::Error::General("TLS failure".into()),
                    });
                    cx.waker().wake_by_ref();
                    return Poll::Ready(Ok(done));
                }
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => self.unread.extend_from_slice(buf.filled()),
                Poll::Ready(_) => break,
            }
        }
        Poll::Ready(Err(self.failed.take().expect("a failed write")))
    }

    /// A write on the connection, unless an earlier one failed: `done` once the receiver's
    /// alert is known (nothing more reaches it), the reading of what it sent while that goes on.
    fn write_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        done: R,
        write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if self.alert.is_some() {
            return Poll::Ready(Ok(done));
        }
        if self.failed.is_some() {
            return self.why(cx, done);
        }
        let r = write(Pin::new(&mut self.inner), cx);
        self.checked(cx, r, done)
    }
}

impl<T: Read + Unpin> Read for AlertAware<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        if let Some(alert) = &self.alert {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, alert.clone())));
        }
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Read + Write + Unpin> Write for AlertAware<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write_with(cx, buf.len(), |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.write_with(cx, len, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_with(cx, (), |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for AlertAware<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes fail with `write`; reads give `reads` in turn (`None`: not readable yet).
    struct Scripted {
        write: io::ErrorKind,
        reads: Vec<Option<io::Result<&'static [u8]>>>,
    }

    impl Read for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            mut buf: ReadBufCursor<'_>,
        ) -> Poll<io::Result<()>> {
            match self.reads.remove(0) {
                None => Poll::Pending,
                Some(Ok(bytes)) => {
                    buf.put_slice(bytes);
                    Poll::Ready(Ok(()))
                }
                Some(Err(e)) => Poll::Ready(Err(e)),
            }
        }
    }

    impl Write for Scripted {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(self.write.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn write(io: &mut AlertAware<Scripted>) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(io).poll_write(&mut cx, b"request")
    }

    fn alert() -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        )
    }

    #[test]
    fn a_broken_pipe_reports_the_alert_read_after_it() {
        let mut io = AlertAware::new(Scripted {
            write: io::ErrorKind::BrokenPipe,
            // Not readable yet, then some bytes, then the alert.
            reads: vec![None, Some(Ok(b"data")), Some(Err(alert()))],
        });
        assert!(write(&mut io).is_pending(), "waits for what the receiver sent");
        // The write is done (nothing reaches the receiver any more) and the alert is what
        // every read reports from now on: HTTP/2 passes a read's error on to the request, but
        // ends the request with "broken pipe" when its connection fails on a write.
        assert!(matches!(write(&mut io), Poll::Ready(Ok(7))));
        let read = |io: &mut AlertAware<Scripted>| {
            let mut scratch = [MaybeUninit::<u8>::uninit(); 16];
            let mut buf = ReadBuf::uninit(&mut scratch);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            Pin::new(io).poll_read(&mut cx, buf.unfilled())
        };
        for _ in 0..2 {
            let Poll::Ready(Err(e)) = read(&mut io) else {
                panic!("an error")
            };
            assert!(is_tls_failure(&e), "{e}");
        }
        assert!(matches!(write(&mut io), Poll::Ready(Ok(7))), "later writes go nowhere");
    }

    #[test]
    fn an_answer_read_while_looking_for_an_alert_is_still_read() {
        // A receiver answered 413 and closed before taking the whole request.
        let answer: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n";
        let mut io = AlertAware::new(Scripted {
            write: io::ErrorKind::ConnectionReset,
            reads: vec![Some(Ok(answer)), Some(Ok(&b""[..]))],
        });
        let Poll::Ready(Err(e)) = write(&mut io) else {
            panic!("an error")
        };
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let mut got = Vec::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while got.len() < answer.len() {
            let mut scratch = [MaybeUninit::<u8>::uninit(); 16];
            let mut buf = ReadBuf::uninit(&mut scratch);
            let Poll::Ready(Ok(())) = Pin::new(&mut io).poll_read(&mut cx, buf.unfilled()) else {
                panic!("the answer")
            };
            got.extend_from_slice(buf.filled());
        }
        assert_eq!(got, answer);
    }

    #[test]
    fn without_an_alert_the_write_error_stays() {
        for (kind, reads) in [
            (io::ErrorKind::ConnectionReset, vec![Some(Ok(&b""[..]))]),
            (
                io::ErrorKind::BrokenPipe,
                vec![Some(Err(io::ErrorKind::ConnectionReset.into()))],
            ),
        ] {
            let mut io = AlertAware::new(Scripted { write: kind, reads });
            let Poll::Ready(Err(e)) = write(&mut io) else {
                panic!("an error")
            };
            assert_eq!(e.kind(), kind);
        }
        // Other write errors are not looked into.
        let mut io = AlertAware::new(Scripted {
            write: io::ErrorKind::TimedOut,
            reads: vec![],
        });
        let Poll::Ready(Err(e)) = write(&mut io) else {
            panic!("an error")
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
