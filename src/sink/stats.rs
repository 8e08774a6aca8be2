//! The sink's counters: callbacks, bytes, signature verdicts, answers, and the duplicate ids
//! found within a bounded window ([`SeenIds`]). [`SinkSummary`] is their value at one moment,
//! also the `GET /stats` answer and the line `callback-sim sink` prints when it stops.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::dialect::Signature;

/// The sink's counters.
#[derive(Debug, Default)]
pub(super) struct SinkStats {
    received: AtomicU64,
    bytes: AtomicU64,
    signature_ok: AtomicU64,
    signature_bad: AtomicU64,
    signature_stale: AtomicU64,
    unchecked: AtomicU64,
    unparsable: AtomicU64,
    query_bad: AtomicU64,
    duplicates: AtomicU64,
    answered_ok: AtomicU64,
    answered_fault: AtomicU64,
    /// Hashes of the ids seen lately (8 bytes each, not the ids: a long run must not cost
    /// much memory).
    seen: Mutex<SeenIds>,
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl SinkStats {
    /// Counts a callback of `bytes` body bytes.
    pub(super) fn received(&self, bytes: usize) {
        count(&self.received);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts what the check made of a callback.
    pub(super) fn verdict(&self, signature: Signature) {
        match signature {
            Signature::Valid => count(&self.signature_ok),
            Signature::Invalid | Signature::Missing => count(&self.signature_bad),
            Signature::Stale => count(&self.signature_stale),
            Signature::Unchecked | Signature::QueryOk => count(&self.unchecked),
            Signature::QueryBad => {
                count(&self.unchecked);
                count(&self.query_bad);
            }
            Signature::Unparsable => count(&self.unparsable),
        }
    }

    /// Counts an answer sent with `status`.
    pub(super) fn answered(&self, status: u16) {
        if status == 200 {
            count(&self.answered_ok);
        } else {
            count(&self.answered_fault);
        }
    }

    /// Counts a repeated id (a retry or a replay keeps its id).
    pub(super) fn seen(&self, id: &str) {
        let fresh = self
            .seen
            .lock()
            .map(|mut seen| {
                let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id);
                seen.insert(hash)
            })
            .unwrap_or(true);
        if !fresh {
            count(&self.duplicates);
        }
    }

    /// The counters now.
    pub(super) fn summary(&self) -> SinkSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkSummary {
            received: g(&self.received),
            bytes: g(&self.bytes),
            signature_ok: g(&self.signature_ok),
            signature_bad: g(&self.signature_bad),
            signature_stale: g(&self.signature_stale),
            unchecked: g(&self.unchecked),
            unparsable: g(&self.unparsable),
            query_bad: g(&self.query_bad),
            duplicates: g(&self.duplicates),
            answered_ok: g(&self.answered_ok),
            answered_fault: g(&self.answered_fault),
        }
    }
}

/// Ids remembered for duplicates: at least the last `SEEN_WINDOW`, at most twice that.
const SEEN_WINDOW: usize = 1 << 18;

/// The hashes of the ids seen lately, in two generations made at full size: the set never
/// grows, because a growing set rehashes all it holds at once — a pause of many milliseconds
/// for every callback waiting behind it, which a receiver must not have. When the current
/// generation is full, it becomes the previous one and the oldest is forgotten.
#[derive(Debug)]
struct SeenIds {
    current: HashSet<u64>,
    previous: HashSet<u64>,
}

impl Default for SeenIds {
    fn default() -> Self {
        Self {
            current: HashSet::with_capacity(SEEN_WINDOW),
            previous: HashSet::new(),
        }
    }
}

impl SeenIds {
    /// Remembers `hash`; false when it was seen already.
    fn insert(&mut self, hash: u64) -> bool {
        if self.previous.contains(&hash) || !self.current.insert(hash) {
            return false;
        }
        if self.current.len() == SEEN_WINDOW {
            self.previous = std::mem::replace(&mut self.current, HashSet::with_capacity(SEEN_WINDOW));
        }
        true
    }
}

/// The sink's counters at one moment ([`Sink::summary`](super::Sink::summary)), also the
/// `GET /stats` answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SinkSummary {
    /// Callbacks received (every `POST`, whatever its path).
    pub received: u64,
    /// Body bytes received, all callbacks together.
    pub bytes: u64,
    /// Callbacks whose signature matched: agora `security`, or tencent `Sign` (token known).
    pub signature_ok: u64,
    /// Callbacks whose signature did not match or was missing (secret or token known).
    pub signature_bad: u64,
    /// Tencent callbacks correctly signed but with a `RequestTime` more than 60 s from the
    /// sink's clock.
    #[serde(default)]
    pub signature_stale: u64,
    /// Callbacks not checked: no secret or token given.
    pub unchecked: u64,
    /// Bodies that are not JSON (objects).
    pub unparsable: u64,
    /// Tencent callbacks whose query string was missing a parameter or disagreed with the body.
    pub query_bad: u64,
    /// Callbacks seen before: the same agora `callId`, or the same tencent
    /// `CallbackCommand` + `MsgKey` (group messages: `GroupId` + `Random`; other commands:
    /// the same bytes) — retries and replays show up here —, among the last
    /// 262,144 to 524,288 ids (older ones are forgotten: the sink's memory stays bounded).
    pub duplicates: u64,
    /// Callbacks answered 200.
    pub answered_ok: u64,
    /// Callbacks answered with another status (injected faults).
    pub answered_fault: u64,
}

impl std::fmt::Display for SinkSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received {} callbacks: signatures ok {}, bad {}, unchecked {}, unparsable {}; bad query strings {}; duplicate callIds {}; answered 200 {}, faults {}",
            self.received,
            self.signature_ok,
            self.signature_bad,
            self.unchecked,
            self.unparsable,
            self.query_bad,
            self.duplicates,
            self.answered_ok,
            self.answered_fault
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_across_a_generation_change_and_the_set_never_grows() {
        let mut seen = SeenIds::default();
        let capacity = seen.current.capacity();
        assert!(seen.insert(1));
        assert!(!seen.insert(1));
        for h in 2..=SEEN_WINDOW as u64 {
            assert!(seen.insert(h));
        }
        // The generation changed: 1 is in the previous one and still a duplicate.
        assert_eq!(seen.current.len(), 0);
        assert!(!seen.insert(1));
        assert!(seen.insert(SEEN_WINDOW as u64 + 1));
        assert_eq!(seen.current.capacity(), capacity, "made at full size");
        // One more generation: the oldest ids are forgotten.
        for h in SEEN_WINDOW as u64 + 2..=2 * SEEN_WINDOW as u64 {
            assert!(seen.insert(h));
        }
        assert!(seen.insert(1));
    }

    #[test]
    fn each_verdict_lands_in_its_counter() {
        let stats = SinkStats::default();
        for s in [
            Signature::Valid,
            Signature::Invalid,
            Signature::Missing,
            Signature::Unchecked,
            Signature::Unparsable,
            Signature::QueryOk,
            Signature::QueryBad,
        ] {
            stats.verdict(s);
        }
        let s = stats.summary();
        assert_eq!(
            (s.signature_ok, s.signature_bad, s.unchecked, s.unparsable, s.query_bad),
            (1, 2, 3, 1, 1)
        );
    }
}
