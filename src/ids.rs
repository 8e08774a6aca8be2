//! Where the simulator's identifiers come from: `callId`s (`{app_id}#{uuid}`, unique per
//! callback and kept across retries and replays: docs/behaviour.md §4.1), message ids
//! (numeric and increasing, like the provider's), per-message sequence numbers and random
//! numbers (tencent `MsgSeq`, `MsgRandom`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rand::{RngExt, SeedableRng};

use crate::domain::AppId;

/// The identifiers of one simulator: random, or reproducible from a seed (`generate --seed`).
#[derive(Debug)]
pub struct Ids {
    next_msg_id: AtomicU64,
    next_seq: AtomicU32,
    rng: Option<Mutex<rand::rngs::StdRng>>,
}

impl Ids {
    /// Random ids; message ids start from `now_ms` (so that they increase across restarts).
    pub fn new(now_ms: u64) -> Self {
        Self {
            next_msg_id: AtomicU64::new(now_ms.saturating_mul(1000)),
            next_seq: AtomicU32::new(1),
            rng: None,
        }
    }

    /// Ids drawn from a generator seeded with `seed`: the same seed and the same messages give
    /// the same callIds.
    pub fn seeded(now_ms: u64, seed: u64) -> Self {
        Self {
            rng: Some(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))),
            ..Self::new(now_ms)
        }
    }

    /// A new `{app_id}#{uuid}`.
    pub fn call_id(&self, app: &AppId) -> String {
        let uuid = match &self.rng {
            None => uuid::Uuid::new_v4(),
            Some(rng) => {
                let bytes: [u8; 16] = rng.lock().expect("id rng lock").random();
                uuid::Builder::from_random_bytes(bytes).into_uuid()
            }
        };
        let mut id = String::with_capacity(app.as_str().len() + 1 + uuid::fmt::Hyphenated::LENGTH);
        id.push_str(app.as_str());
        id.push('#');
        id.push_str(uuid.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
        id
    }

    /// The next message id.
    pub fn msg_id(&self) -> String {
        self.next_msg_id.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// The next message sequence number.
    pub fn seq(&self) -> u32 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A random number (from the seeded generator when there is one).
    pub fn random(&self) -> u32 {
        match &self.rng {
            None => rand::random(),
            Some(rng) => rng.lock().expect("id rng lock").random(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_repeat_and_call_ids_name_the_app() {
        let app = AppId::parse("a").unwrap();
        let (x, y) = (Ids::seeded(0, 7), Ids::seeded(0, 7));
        assert_eq!(x.call_id(&app), y.call_id(&app));
        assert_eq!(x.random(), y.random());
        let id = Ids::new(1).call_id(&app);
        assert!(id.starts_with("a#") && id.len() == 2 + 36, "{id}");
        let ids = Ids::new(1);
        assert_eq!((ids.msg_id(), ids.msg_id()), ("1000".to_string(), "1001".to_string()));
    }
}
