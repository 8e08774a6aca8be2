//! Reading an answer within its limits: the status, and at most `max_chars + 1` characters of a
//! 200 body (docs/behaviour.md §5: a receiver that streams gigabytes must not cost memory).

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::classify::classify;
use super::{AttemptLimits, AttemptResult};
use crate::domain::Outcome;

/// What is left of an answer once its outcome is known.
pub(super) enum Rest {
    /// Nothing: it was read to its end, and the connection can take another request.
    Done,
    /// The body of an error answer, not read.
    Unread(Incoming),
    /// Something the connection cannot be used again after (a body cut short, too long).
    Broken,
}

/// Reads an answer: its status, and at most `max_chars + 1` characters of a 200 body. Also
/// says what is left of it, which decides whether the connection can be used again.
pub(super) async fn read_answer(resp: Response<Incoming>, limits: AttemptLimits) -> (AttemptResult, Rest) {
    let status = resp.status().as_u16();
    if status != 200 {
        // The answer is known: the body is left to the caller (it may read it to keep the
        // connection, without waiting for it).
        let r = AttemptResult::new(Outcome::Status, Some(status), Some(format!("answered HTTP {status}")));
        return (r, Rest::Unread(resp.into_body()));
    }
    // Read at most max_chars + 1 characters: enough to tell a violation, never more.
    let mut body = resp.into_body();
    let mut chars = 0usize;
    let mut kept = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(chunk) = frame.into_data() else { continue };
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
                    return (r, Rest::Broken);
                }
            }
            None => break,
            Some(Err(e)) => {
                let (_, detail) = classify(&e, false);
                let r = AttemptResult::new(
                    Outcome::Connect,
                    Some(200),
                    Some(format!("response body broken: {detail}")),
                );
                return (r, Rest::Broken);
            }
        }
    }
    let mut r = AttemptResult::new(Outcome::Delivered, Some(200), None);
    r.body = limits.keep_body.then(|| Bytes::from(kept));
    (r, Rest::Done)
}

/// Longest wait for the rest of an error answer (see [`attempt_on`]): its outcome is known
/// already, so it is not waited for long.
pub(super) const DRAIN_WAIT: Duration = Duration::from_millis(20);

/// Reads `body` to its end, if it ends within `max_chars` characters' worth of bytes (4 each).
pub(super) async fn drain(mut body: Incoming, max_chars: usize) -> bool {
    let mut left = max_chars.saturating_mul(4);
    loop {
        match body.frame().await {
            None => return true,
            Some(Ok(frame)) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                if n > left {
                    return false;
                }
                left -= n;
            }
            Some(Err(_)) => return false,
        }
    }
}

/// Counts UTF-8 characters (bytes that are not continuation bytes) in `chunk`, stopping once
/// `room` characters are seen. Returns (bytes taken, characters counted).
pub(super) fn take_chars(chunk: &[u8], room: usize) -> (usize, usize) {
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
