//! The store's single writer: every change goes through it; it applies what has queued up as
//! one sled batch and flushes once (group commit), and only then reports the changes done.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::FixedOffset;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::disk::{Disk, Trees};
use super::format::{bucket_prefix, decode_bucket, decode_stored_at, encode_ban, encode_item};
use super::{Bucket, ItemKey, StoreError, StoredCallback};
use crate::ban::BanRecord;
use crate::domain::DateKey;

/// Most commands the writer folds into one batch and one flush.
const MAX_GROUP: usize = 4096;

/// How often a failing store is probed (and opened again, after its backoff) while nothing
/// is written: it recovers by itself.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The length of a date-key window (docs/behaviour.md §7).
const WINDOW_MS: u64 = 10 * 60 * 1000;

/// How far apart two readings of one date key can be when `store.utc_offset` changed between
/// writing and reading it: offsets lie within ±23:59, so less than 48 hours.
const MAX_OFFSET_SHIFT_MS: u64 = 48 * 3600 * 1000;

/// One change to the store.
pub(super) enum Op {
    /// Stores a new item in the bucket of its app, `date` and `retry`.
    Put {
        item: StoredCallback,
        date: DateKey,
        retry: u32,
    },
    /// Removes an item.
    Delete(ItemKey),
    /// Moves an item, changed, to the bucket with `retry` (same app and date).
    Move {
        from: ItemKey,
        item: StoredCallback,
        retry: u32,
    },
    /// Saves a rule's ban record.
    SaveBan { key: Vec<u8>, record: BanRecord },
    /// Removes a rule's ban record (the rule was reset).
    DeleteBan { key: Vec<u8> },
    /// Removes every item of a bucket already on disk; `deleted` is set to how many.
    DeleteBucket { bucket: Bucket, deleted: Arc<AtomicU64> },
    /// Removes every bucket whose window ended at or before this Unix ms.
    PurgeBefore(u64),
}

/// Changes to apply together; `done` hears when they are on disk (or why not).
pub(super) struct Cmd {
    pub(super) ops: Vec<Op>,
    pub(super) done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// The writer task's state: the database it writes and the bucket counts it keeps up to date.
pub(super) struct Writer {
    pub(super) offset: FixedOffset,
    pub(super) disk: Arc<Disk>,
    pub(super) counts: Arc<RwLock<BTreeMap<Bucket, u64>>>,
}

impl Writer {
    /// Applies commands until the store closes, then flushes. While the store is failing it
    /// is probed every [`PROBE_EVERY`], so that it recovers without waiting for a write.
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Cmd>, closed: CancellationToken) {
        let mut group = Vec::new();
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                biased;
                c = rx.recv() => c,
                _ = closed.cancelled() => {
                    // Take what was sent before the close, then stop.
                    rx.close();
                    rx.recv().await
                }
                _ = probe.tick(), if self.disk.health.is_failing() => {
                    self.probe().await;
                    continue;
                }
            };
            let Some(first) = first else { break };
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(c) => group.push(c),
                    Err(_) => break,
                }
            }
            self.reopen_if_due();
            let result = self.apply(&mut group).await;
            match &result {
                Ok(()) => self.disk.succeeded(),
                Err(e) => self.failed(e),
            }
            for cmd in group.drain(..) {
                if let Some(done) = cmd.done {
                    let _ = done.send(result.clone());
                }
            }
        }
        if let Ok(t) = self.disk.trees() {
            let _ = t.db.flush_async().await;
        }
    }

    /// A write failed: logged (rate-limited), and the database dropped, to be opened again.
    fn failed(&self, e: &StoreError) {
        self.disk.health.failed(e);
        self.disk.invalidate();
    }

    /// Opens the database again after a failure (once its backoff has passed), with the
    /// bucket counts as they are on disk.
    fn reopen_if_due(&self) {
        if let Some(counts) = self.disk.reopen_if_due() {
            *self.counts.write().expect("counts lock") = counts;
        }
    }

    /// While failing: can the store write again?
    async fn probe(&self) {
        self.reopen_if_due();
        let Ok(t) = self.disk.trees() else { return };
        let written = async {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.health.insert(b"probe", &now.as_nanos().to_be_bytes())?;
            t.db.flush_async().await?;
            Ok::<_, sled::Error>(())
        };
        match written.await {
            Ok(()) => self.disk.succeeded(),
            Err(e) => {
                drop(t);
                self.failed(&e.into());
            }
        }
    }

    async fn apply(&self, group: &mut [Cmd]) -> Result<(), StoreError> {
        let t = self.disk.trees()?;
        let t = &*t;
        let mut batch = sled::Batch::default();
        let mut delta: BTreeMap<Bucket, i64> = BTreeMap::new();
        let mut removed: HashSet<sled::IVec> = HashSet::new();
        let mut bans = sled::Batch::default();
        let mut any_ban = false;
        let purges: Vec<u64> = group
            .iter()
            .flat_map(|c| c.ops.iter())
            .filter_map(|op| if let Op::PurgeBefore(c) = op { Some(*c) } else { None })
            .collect();
        for cmd in group.iter_mut() {
            for op in cmd.ops.drain(..) {
                match op {
                    Op::Put { item, date, retry } => {
                        let bucket = Bucket {
                            app: item.app.clone(),
                            date,
                            retry,
                        };
                        self.put(t, &mut batch, &bucket, &item)?;
                        *delta.entry(bucket).or_default() += 1;
                    }
                    Op::Delete(key) => {
                        if let Some(b) = self.remove(t, &mut batch, &mut removed, key)? {
                            *delta.entry(b).or_default() -= 1;
                        }
                    }
                    Op::Move { from, item, retry } => {
                        if let Some(old) = self.remove(t, &mut batch, &mut removed, from)? {
                            *delta.entry(old.clone()).or_default() -= 1;
                            let bucket = Bucket { retry, ..old };
                            self.put(t, &mut batch, &bucket, &item)?;
                            *delta.entry(bucket).or_default() += 1;
                        }
                    }
                    Op::SaveBan { key, record } => {
                        bans.insert(key, encode_ban(&record));
                        any_ban = true;
                    }
                    Op::DeleteBan { key } => {
                        bans.remove(key);
                        any_ban = true;
                    }
                    Op::DeleteBucket { bucket, deleted } => {
                        let n = self.remove_bucket(t, &mut batch, &mut removed, &bucket)?;
                        tracing::info!(app = %bucket.app, date = %bucket.date, retry = bucket.retry, items = n, "bucket deleted");
                        *delta.entry(bucket).or_default() -= n as i64;
                        deleted.store(n, Ordering::Relaxed);
                    }
                    Op::PurgeBefore(_) => {}
                }
            }
        }
        if let Some(cutoff) = purges.into_iter().max() {
            self.purge(t, &mut batch, &mut removed, &mut delta, cutoff)?;
        }
        let mut new_counts = Vec::new();
        {
            let counts = self.counts.read().expect("counts lock");
            for (bucket, d) in &delta {
                let n = (*counts.get(bucket).unwrap_or(&0) as i64 + d).max(0) as u64;
                let key = bucket_prefix(b'b', bucket.app.as_str(), &bucket.date, bucket.retry);
                if n == 0 {
                    batch.remove(key);
                } else {
                    batch.insert(key, &n.to_be_bytes());
                }
                new_counts.push((bucket.clone(), n));
            }
        }
        t.items.apply_batch(batch)?;
        if any_ban {
            t.bans.apply_batch(bans)?;
        }
        t.db.flush_async().await?;
        let mut counts = self.counts.write().expect("counts lock");
        for (bucket, n) in new_counts {
            if n == 0 {
                counts.remove(&bucket);
            } else {
                counts.insert(bucket, n);
            }
        }
        Ok(())
    }

    fn put(
        &self,
        t: &Trees,
        batch: &mut sled::Batch,
        bucket: &Bucket,
        item: &StoredCallback,
    ) -> Result<(), StoreError> {
        let mut key = bucket_prefix(b'i', bucket.app.as_str(), &bucket.date, bucket.retry);
        key.extend_from_slice(&t.db.generate_id()?.to_be_bytes());
        batch.insert(key, encode_item(item));
        Ok(())
    }

    /// Removes an item if it exists (and was not removed earlier in this group).
    fn remove(
        &self,
        t: &Trees,
        batch: &mut sled::Batch,
        removed: &mut HashSet<sled::IVec>,
        key: ItemKey,
    ) -> Result<Option<Bucket>, StoreError> {
        if removed.contains(&key.0) || !t.items.contains_key(&key.0)? {
            return Ok(None);
        }
        let bucket = decode_bucket(&key.0);
        batch.remove(key.0.clone());
        removed.insert(key.0);
        Ok(bucket)
    }

    /// Removes every item whose 10-minute window ended at or before `cutoff` (docs/behaviour.md
    /// §7). The window is the one its stored time falls in: a date key read with another
    /// `store.utc_offset` than it was written with names another window (hours earlier or
    /// later), so the key only picks the buckets to look at, and their stored times decide.
    fn purge(
        &self,
        t: &Trees,
        batch: &mut sled::Batch,
        removed: &mut HashSet<sled::IVec>,
        delta: &mut BTreeMap<Bucket, i64>,
        cutoff: u64,
    ) -> Result<(), StoreError> {
        let candidates: Vec<Bucket> = {
            let counts = self.counts.read().expect("counts lock");
            counts
                .keys()
                .filter(|b| self.window_end(&b.date) <= cutoff.saturating_add(MAX_OFFSET_SHIFT_MS))
                .cloned()
                .collect()
        };
        for bucket in candidates {
            let prefix = bucket_prefix(b'i', bucket.app.as_str(), &bucket.date, bucket.retry);
            let Some(first) = t.items.scan_prefix(&prefix).next().transpose()? else {
                continue;
            };
            let key_due = self.window_end(&bucket.date) <= cutoff;
            // Per item only when the bucket was written with another offset than today's.
            let per_item = match decode_stored_at(&first.1) {
                Ok(at) if DateKey::from_ms(at, self.offset) == bucket.date => false,
                // Items of a bucket were first stored within one 10-minute window: when the
                // first is that much newer than the cutoff, none is due.
                Ok(at) if at >= cutoff.saturating_add(WINDOW_MS) => continue,
                Ok(_) => true,
                // Unreadable: the key decides, as it always did.
                Err(_) => false,
            };
            if !per_item && !key_due {
                continue;
            }
            let mut n = 0i64;
            for entry in t.items.scan_prefix(&prefix) {
                let (k, v) = entry?;
                let due = !per_item
                    || decode_stored_at(&v).map_or(key_due, |at| {
                        self.window_end(&DateKey::from_ms(at, self.offset)) <= cutoff
                    });
                if due && removed.insert(k.clone()) {
                    batch.remove(k);
                    n += 1;
                }
            }
            if n > 0 {
                tracing::info!(app = %bucket.app, date = %bucket.date, retry = bucket.retry, items = n, "retention: purged");
                *delta.entry(bucket).or_default() -= n;
            }
        }
        Ok(())
    }

    /// Removes every item of `bucket` on disk (not removed earlier in this group); returns
    /// how many.
    fn remove_bucket(
        &self,
        t: &Trees,
        batch: &mut sled::Batch,
        removed: &mut HashSet<sled::IVec>,
        bucket: &Bucket,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for entry in t
            .items
            .scan_prefix(bucket_prefix(b'i', bucket.app.as_str(), &bucket.date, bucket.retry))
        {
            let (k, _) = entry?;
            if removed.insert(k.clone()) {
                batch.remove(k);
                n += 1;
            }
        }
        Ok(n)
    }

    /// When the 10-minute window of `date` ends, read in the store's offset.
    fn window_end(&self, date: &DateKey) -> u64 {
        date.start_ms(self.offset) + WINDOW_MS
    }
}
