//! How the sink answers: a [`Reply`] scripted by a test (the next few, per path, a default),
//! else the fault injection of the command line (`--fail-rate`, `--status`). A reply may also
//! hang, redirect, or stream a long body whose progress the sink counts ([`StreamProgress`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};

/// How the sink answers one callback (for tests that script it).
///
/// ```
/// use std::time::Duration;
/// use callback_sim::Reply;
///
/// let slow_failure = Reply::status(503).after(Duration::from_millis(50));
/// let verdict = Reply::ok().with_body(r#"{"valid": false, "code": "spam"}"#);
/// let moved = Reply::redirect("http://127.0.0.1:9/elsewhere");
/// let endless = Reply::stream(50 * 1024 * 1024);
/// let silent = Reply::hang();
/// # let _ = (slow_failure, verdict, moved, endless, silent);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    status: u16,
    answer: Answer,
    delay: Duration,
}

/// What follows the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// This body; empty means the sink's default (tencent: its OK or FAIL answer).
    Body(Bytes),
    /// A `Location` header (and no body).
    Redirect(String),
    /// A body of this many bytes, produced chunk by chunk as the client reads it.
    Stream(u64),
    /// Nothing, ever (until the sink stops).
    Hang,
}

impl Reply {
    /// 200 with the default body.
    pub fn ok() -> Self {
        Self::status(200)
    }

    /// This status with the default body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            answer: Answer::Body(Bytes::new()),
            delay: Duration::ZERO,
        }
    }

    /// 302 to `location`: the simulator never follows it (a `status` outcome).
    pub fn redirect(location: &str) -> Self {
        Self {
            answer: Answer::Redirect(location.to_string()),
            ..Self::status(302)
        }
    }

    /// 200 with a body of `bytes` bytes (`x`s), produced 64 KiB at a time as the client reads
    /// it: a receiver that answers too much. [`Sink::streamed`](super::Sink::streamed) tells
    /// how much was produced and whether the client hung up.
    pub fn stream(bytes: u64) -> Self {
        Self {
            answer: Answer::Stream(bytes),
            ..Self::ok()
        }
    }

    /// Never answers (until the sink stops, when it answers 503): the request is recorded, the
    /// connection stays open, and the simulator's attempt times out.
    pub fn hang() -> Self {
        Self {
            answer: Answer::Hang,
            ..Self::status(0)
        }
    }

    /// With this answer body.
    pub fn with_body(mut self, body: &str) -> Self {
        self.answer = Answer::Body(Bytes::copy_from_slice(body.as_bytes()));
        self
    }

    /// After this delay.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The reply of the command line's options: `status` with `body` after `delay`.
    pub(super) fn answering(status: u16, body: &'static str, delay: Duration) -> Self {
        Self {
            status,
            answer: Answer::Body(Bytes::from_static(body.as_bytes())),
            delay,
        }
    }

    /// The status answered; `None` for a reply that never answers.
    pub(super) fn answered(&self) -> Option<u16> {
        (self.answer != Answer::Hang).then_some(self.status)
    }

    pub(super) fn delay(&self) -> Duration {
        self.delay
    }

    pub(super) fn into_answer(self) -> Answer {
        self.answer
    }
}

/// The scripted replies: the next N, per path, and a default.
#[derive(Debug, Default)]
pub(super) struct Script {
    pub(super) next: VecDeque<Reply>,
    pub(super) per_path: HashMap<String, Reply>,
    pub(super) default: Option<Reply>,
}

impl Script {
    /// The reply for a callback to `path`, if one is scripted.
    pub(super) fn next(&mut self, path: &str) -> Option<Reply> {
        self.next
            .pop_front()
            .or_else(|| self.per_path.get(path).cloned())
            .or_else(|| self.default.clone())
    }
}

/// The command line's fault injection: `fail_rate` of the callbacks get `status` (default
/// 500); a status without a rate fails them all, and a rate of 0, given or not, fails none.
#[derive(Debug, Clone, Copy)]
pub(super) struct Faults {
    pub(super) fail_rate: Option<f64>,
    pub(super) status: Option<u16>,
}

impl Faults {
    /// Draws whether this callback gets a fault, and the status it gets.
    pub(super) fn draw(&self) -> (bool, u16) {
        let fault = match (self.status, self.fail_rate) {
            (Some(_), None) => true,
            (_, Some(r)) if r > 0.0 => rand::random::<f64>() < r,
            _ => false,
        };
        let status = if fault { self.status.unwrap_or(500) } else { 200 };
        (fault, status)
    }
}

/// What [`Reply::stream`] answers produced, all together: the bytes, and the streams that
/// ended (sent to the end, or dropped when the client hung up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamProgress {
    /// Body bytes produced so far.
    pub bytes: u64,
    /// Streamed bodies the sink has let go of: finished, or abandoned by the client.
    pub ended: u64,
}

/// The counters behind [`StreamProgress`].
#[derive(Debug, Default)]
pub(super) struct StreamCounters {
    bytes: AtomicU64,
    ended: AtomicU64,
}

impl StreamCounters {
    pub(super) fn progress(&self) -> StreamProgress {
        StreamProgress {
            bytes: self.bytes.load(Ordering::SeqCst),
            ended: self.ended.load(Ordering::SeqCst),
        }
    }
}

/// Counts a streamed body's end when the body (and so this guard) is dropped.
struct StreamEnd(Arc<StreamCounters>);

impl Drop for StreamEnd {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// Size of each chunk of a streamed body.
const CHUNK: usize = 64 * 1024;

/// A body of `total` bytes, counted in `counters` as it is produced.
pub(super) fn stream_body(total: u64, counters: Arc<StreamCounters>) -> Body {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let end = StreamEnd(counters);
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let counters = end.0.clone();
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = (total - sent).min(CHUNK as u64);
            counters.bytes.fetch_add(n, Ordering::SeqCst);
            // Yield so that a client that stopped reading is noticed between chunks.
            tokio::task::yield_now().await;
            Some((Ok::<_, std::io::Error>(chunk.slice(..n as usize)), sent + n))
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_replies_come_before_the_path_and_the_default() {
        let mut script = Script::default();
        assert_eq!(script.next("/a"), None);
        script.default = Some(Reply::status(500));
        script.per_path.insert("/a".into(), Reply::status(503));
        script.next.push_back(Reply::hang());
        assert_eq!(script.next("/a"), Some(Reply::hang()));
        assert_eq!(script.next("/a"), Some(Reply::status(503)));
        assert_eq!(script.next("/b"), Some(Reply::status(500)));
    }

    #[test]
    fn faults_follow_the_options() {
        let draw = |fail_rate, status| Faults { fail_rate, status }.draw();
        assert_eq!(draw(None, None), (false, 200));
        assert_eq!(draw(Some(0.0), None), (false, 200));
        assert_eq!(
            draw(None, Some(503)),
            (true, 503),
            "a status alone fails every callback"
        );
        assert_eq!(draw(Some(0.0), Some(503)), (false, 200), "an explicit 0 fails none");
        assert_eq!(draw(Some(1.0), None), (true, 500));
        assert_eq!(draw(Some(1.0), Some(429)), (true, 429));
    }

    #[test]
    fn only_a_hang_answers_nothing() {
        assert_eq!(Reply::hang().answered(), None);
        assert_eq!(Reply::redirect("http://x/").answered(), Some(302));
        assert_eq!(Reply::stream(10).answered(), Some(200));
    }
}
