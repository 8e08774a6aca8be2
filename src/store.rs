//! The exception store (SPEC §7): undelivered callbacks, durably, in sled under `data_dir`.
//!
//! Layout of the `callbacks` tree (all keys sort by app, then date, then retry, then order):
//!
//! - `i` app `\0` date(12 ASCII digits) retry(u32 BE) seq(u64 BE) → the item, as JSON;
//! - `b` app `\0` date retry → the bucket's item count (u64 BE).
//!
//! So `storage/info` reads the counts (kept in memory too, loaded once at open), and a replay or
//! listing streams one bucket with a prefix scan, never loading it whole. The `bans` tree holds
//! each rule's [`BanRecord`].
//!
//! Every change goes through one writer task that applies what has queued up as one sled batch
//! and flushes once (group commit): a write is reported done only after it is on disk, so after
//! a `kill -9` everything reported stored is there.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::FixedOffset;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ban::BanRecord;
use crate::domain::{AppId, DateKey, EventType, Outcome};

/// Most commands the writer folds into one batch and one flush.
const MAX_GROUP: usize = 4096;
/// sled's page cache (its default is 1 GiB): the store is written far more than it is read.
const CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// Queue of commands waiting for the writer.
const WRITER_QUEUE: usize = 65_536;

/// A store failure; the message says what to check.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The sled database could not be opened or created.
    #[error(
        "cannot open the exception store in {dir}: {reason} (check server.data_dir; is another callback-sim using it?)"
    )]
    Open {
        /// The store's directory (`server.data_dir`).
        dir: String,
        /// The underlying error, e.g. the lock held by another process.
        reason: String,
    },
    /// A read, write or flush failed; the REST API answers 503.
    #[error("exception store I/O failed: {0}")]
    Io(String),
    /// The store was closed (the simulator is stopping); nothing more is written.
    #[error("the exception store is closed")]
    Closed,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// One kept callback: everything needed to re-send the same bytes and explain why it was kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCallback {
    /// The app it belongs to.
    pub app: AppId,
    /// `callId`: the callback's stable id, the same as in its body.
    #[serde(rename = "callId")]
    pub call_id: String,
    /// The name of the rule that made it (`rule` in `storage/items`).
    pub rule: String,
    /// Where it was meant to go.
    pub url: String,
    /// `eventType`: `chat`, `chat_offline`, `user_status` or `group_member_joined`.
    #[serde(rename = "eventType")]
    pub event_type: EventType,
    /// The callback's `to`: the recipient, offline member, user or group it is about.
    pub to: String,
    /// The exact body bytes (always UTF-8 JSON).
    pub body: String,
    /// The query string (tencent), appended to the URL on replay.
    pub query: Option<String>,
    /// The last attempt's outcome (`banned`/`shutdown` when not attempted).
    pub outcome: Outcome,
    /// Attempts made by the delivery (or replay) that stored it; 0 for `banned`/`shutdown`.
    pub attempts: u32,
    /// The last HTTP status received, if any.
    pub status: Option<u16>,
    /// Unix time in milliseconds at which the callback was first stored; it picks the date
    /// key and is kept when a replay moves it. Shown as `stored_at` (RFC 3339) by
    /// `storage/items`.
    pub stored_at_ms: u64,
}

/// A bucket: one date key and one retry count of one app.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    /// The app whose callbacks it holds.
    pub app: AppId,
    /// The 10-minute window in which they were first stored.
    pub date: DateKey,
    /// How many replays of them have failed: 0 when first stored.
    pub retry: u32,
}

/// One line of `storage/info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BucketInfo {
    /// `date`: the bucket's `YYYYMMDDHHmm` key.
    pub date: DateKey,
    /// `size`: how many callbacks it holds (never 0 in `storage/info`).
    pub size: u64,
    /// `retry`: how many replays of them have failed.
    pub retry: u32,
}

/// The sled key of a stored item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemKey(sled::IVec);

fn bucket_prefix(tag: u8, app: &str, date: &DateKey, retry: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + app.len() + 1 + 12 + 4 + 8);
    k.push(tag);
    k.extend_from_slice(app.as_bytes());
    k.push(0);
    k.extend_from_slice(date.as_bytes());
    k.extend_from_slice(&retry.to_be_bytes());
    k
}

fn decode_bucket(key: &[u8]) -> Option<Bucket> {
    let rest = &key[1..];
    let nul = rest.iter().position(|&b| b == 0)?;
    let app = AppId::parse(std::str::from_utf8(&rest[..nul]).ok()?).ok()?;
    let tail = &rest[nul + 1..];
    let date = DateKey::from_bytes(tail.get(..12)?)?;
    let retry = u32::from_be_bytes(tail.get(12..16)?.try_into().ok()?);
    Some(Bucket { app, date, retry })
}

enum Op {
    Put {
        item: StoredCallback,
        date: DateKey,
        retry: u32,
    },
    Delete(ItemKey),
    Move {
        from: ItemKey,
        item: StoredCallback,
        retry: u32,
    },
    SaveBan {
        key: Vec<u8>,
        record: BanRecord,
    },
    PurgeBefore(u64),
}

struct Cmd {
    ops: Vec<Op>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// The store: reads are direct, writes go through the writer task.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    items: sled::Tree,
    bans: sled::Tree,
    counts: Arc<RwLock<BTreeMap<Bucket, u64>>>,
    writer: mpsc::Sender<Cmd>,
    writer_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: CancellationToken,
    offset: FixedOffset,
}

impl Store {
    /// Opens (or creates) the store under `dir` and starts its writer on the current runtime.
    pub fn open(dir: &Path, offset: FixedOffset) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            dir: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let db = sled::Config::new()
            .path(dir.join("store.sled"))
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| open_err(e.to_string()))?;
        let items = db.open_tree("callbacks").map_err(|e| open_err(e.to_string()))?;
        let bans = db.open_tree("bans").map_err(|e| open_err(e.to_string()))?;
        let mut counts = BTreeMap::new();
        for entry in items.scan_prefix(b"b") {
            let (k, v) = entry.map_err(|e| open_err(e.to_string()))?;
            if let (Some(bucket), Ok(n)) = (decode_bucket(&k), <[u8; 8]>::try_from(v.as_ref())) {
                counts.insert(bucket, u64::from_be_bytes(n));
            }
        }
        let counts = Arc::new(RwLock::new(counts));
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let writer = Writer {
            offset,
            db: db.clone(),
            items: items.clone(),
            bans: bans.clone(),
            counts: counts.clone(),
        };
        let closed = CancellationToken::new();
        let writer_task = tokio::spawn(writer.run(rx, closed.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                items,
                bans,
                counts,
                writer: tx,
                writer_task: std::sync::Mutex::new(Some(writer_task)),
                closed,
                offset,
            }),
        })
    }

    /// The date key of an instant, in the store's offset.
    pub fn date_key(&self, ms: u64) -> DateKey {
        DateKey::from_ms(ms, self.inner.offset)
    }

    async fn send(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Cmd { ops, done: Some(tx) })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores callbacks for the first time (bucket of their app and `stored_at_ms`, retry 0).
    /// Returns once they are on disk.
    pub async fn put(&self, items: Vec<StoredCallback>) -> Result<(), StoreError> {
        let ops = items
            .into_iter()
            .map(|item| Op::Put {
                date: self.date_key(item.stored_at_ms),
                retry: 0,
                item,
            })
            .collect();
        self.send(ops).await
    }

    /// Queues a change without waiting for the disk; [`flush`](Self::flush) waits for all of
    /// them. Replays use this: a delete or move lost in a crash only leaves the item where it
    /// was (at-least-once), never loses it, since a move is one atomic batch.
    async fn send_later(&self, op: Op) -> Result<(), StoreError> {
        self.inner
            .writer
            .send(Cmd {
                ops: vec![op],
                done: None,
            })
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Removes a delivered item (durable after the next [`flush`](Self::flush)).
    pub async fn delete(&self, key: ItemKey) -> Result<(), StoreError> {
        self.send_later(Op::Delete(key)).await
    }

    /// Moves an item that failed again to the bucket with `retry`, same date key (durable
    /// after the next [`flush`](Self::flush)).
    pub async fn move_to_retry(&self, key: ItemKey, item: StoredCallback, retry: u32) -> Result<(), StoreError> {
        self.send_later(Op::Move { from: key, item, retry }).await
    }

    /// Deletes every bucket whose 10-minute window ended at or before `cutoff_ms`.
    pub async fn purge_before(&self, cutoff_ms: u64) -> Result<(), StoreError> {
        self.send(vec![Op::PurgeBefore(cutoff_ms)]).await
    }

    /// Persists a rule's ban record (without waiting for the disk).
    pub fn save_ban(&self, app: &AppId, rule: &str, record: BanRecord) {
        let cmd = Cmd {
            ops: vec![Op::SaveBan {
                key: ban_key(app, rule),
                record,
            }],
            done: None,
        };
        if self.inner.writer.try_send(cmd).is_err() {
            tracing::warn!(app = %app, rule, "could not queue the ban record for saving");
        }
    }

    /// A rule's saved ban record, if any.
    pub fn load_ban(&self, app: &AppId, rule: &str) -> Option<BanRecord> {
        let v = self.inner.bans.get(ban_key(app, rule)).ok()??;
        serde_json::from_slice(&v).ok()
    }

    /// Every non-empty bucket of `app`, oldest first.
    pub fn buckets(&self, app: &AppId) -> Vec<BucketInfo> {
        let counts = self.inner.counts.read().expect("counts lock");
        counts
            .iter()
            .filter(|(b, n)| b.app == *app && **n > 0)
            .map(|(b, n)| BucketInfo {
                date: b.date,
                size: *n,
                retry: b.retry,
            })
            .collect()
    }

    /// Items in a bucket (0 if it does not exist).
    pub fn bucket_size(&self, bucket: &Bucket) -> u64 {
        self.inner
            .counts
            .read()
            .expect("counts lock")
            .get(bucket)
            .copied()
            .unwrap_or(0)
    }

    /// Streams a bucket's items in the order they were stored.
    pub fn scan(
        &self,
        bucket: &Bucket,
    ) -> impl Iterator<Item = Result<(ItemKey, StoredCallback), StoreError>> + Send + 'static {
        let prefix = bucket_prefix(b'i', bucket.app.as_str(), &bucket.date, bucket.retry);
        self.inner.items.scan_prefix(prefix).map(|entry| {
            let (k, v) = entry?;
            let item = serde_json::from_slice(&v).map_err(|e| StoreError::Io(format!("undecodable item: {e}")))?;
            Ok((ItemKey(k), item))
        })
    }

    /// Finishes what was sent, flushes, and stops the writer and the sweep. Later writes fail
    /// with [`StoreError::Closed`]; the files are released once every handle is dropped.
    pub async fn close(&self) {
        self.inner.closed.cancel();
        let task = self.inner.writer_task.lock().expect("writer task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Waits until everything written so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.send(Vec::new()).await?;
        self.inner.db.flush_async().await?;
        Ok(())
    }
}

fn ban_key(app: &AppId, rule: &str) -> Vec<u8> {
    let mut k = app.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(rule.as_bytes());
    k
}

/// Starts the retention sweep: every `interval`, buckets older than `retention` go.
pub fn spawn_sweeper(store: Store, retention: Duration, interval: Duration, clock: crate::clock::SharedClock) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let closed = store.inner.closed.clone();
        loop {
            tokio::select! {
                _ = closed.cancelled() => return,
                _ = tick.tick() => {}
            }
            let cutoff = clock.now_ms().saturating_sub(retention.as_millis() as u64);
            if let Err(e) = store.purge_before(cutoff).await {
                if matches!(e, StoreError::Closed) {
                    return;
                }
                tracing::error!(error = %e, "retention sweep failed");
            }
        }
    });
}

/// The length of a date-key window (SPEC §7).
const WINDOW_MS: u64 = 10 * 60 * 1000;

struct Writer {
    offset: FixedOffset,
    db: sled::Db,
    items: sled::Tree,
    bans: sled::Tree,
    counts: Arc<RwLock<BTreeMap<Bucket, u64>>>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Cmd>, closed: CancellationToken) {
        let mut group = Vec::new();
        loop {
            let first = tokio::select! {
                biased;
                c = rx.recv() => c,
                _ = closed.cancelled() => {
                    // Take what was sent before the close, then stop.
                    rx.close();
                    rx.recv().await
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
            let result = self.apply(&mut group).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, commands = group.len(), "exception store write failed");
            }
            for cmd in group.drain(..) {
                if let Some(done) = cmd.done {
                    let _ = done.send(result.clone());
                }
            }
        }
        let _ = self.db.flush_async().await;
    }

    async fn apply(&self, group: &mut [Cmd]) -> Result<(), StoreError> {
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
                        self.put(&mut batch, &bucket, &item)?;
                        *delta.entry(bucket).or_default() += 1;
                    }
                    Op::Delete(key) => {
                        if let Some(b) = self.remove(&mut batch, &mut removed, key)? {
                            *delta.entry(b).or_default() -= 1;
                        }
                    }
                    Op::Move { from, item, retry } => {
                        if let Some(old) = self.remove(&mut batch, &mut removed, from)? {
                            *delta.entry(old.clone()).or_default() -= 1;
                            let bucket = Bucket { retry, ..old };
                            self.put(&mut batch, &bucket, &item)?;
                            *delta.entry(bucket).or_default() += 1;
                        }
                    }
                    Op::SaveBan { key, record } => {
                        let v = serde_json::to_vec(&record).expect("a ban record serializes");
                        bans.insert(key, v);
                        any_ban = true;
                    }
                    Op::PurgeBefore(_) => {}
                }
            }
        }
        if let Some(cutoff) = purges.into_iter().max() {
            self.purge(&mut batch, &mut removed, &mut delta, cutoff)?;
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
        self.items.apply_batch(batch)?;
        if any_ban {
            self.bans.apply_batch(bans)?;
        }
        self.db.flush_async().await?;
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

    fn put(&self, batch: &mut sled::Batch, bucket: &Bucket, item: &StoredCallback) -> Result<(), StoreError> {
        let mut key = bucket_prefix(b'i', bucket.app.as_str(), &bucket.date, bucket.retry);
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        let v = serde_json::to_vec(item).expect("a stored callback serializes");
        batch.insert(key, v);
        Ok(())
    }

    /// Removes an item if it exists (and was not removed earlier in this group).
    fn remove(
        &self,
        batch: &mut sled::Batch,
        removed: &mut HashSet<sled::IVec>,
        key: ItemKey,
    ) -> Result<Option<Bucket>, StoreError> {
        if removed.contains(&key.0) || !self.items.contains_key(&key.0)? {
            return Ok(None);
        }
        let bucket = decode_bucket(&key.0);
        batch.remove(key.0.clone());
        removed.insert(key.0);
        Ok(bucket)
    }

    fn purge(
        &self,
        batch: &mut sled::Batch,
        removed: &mut HashSet<sled::IVec>,
        delta: &mut BTreeMap<Bucket, i64>,
        cutoff: u64,
    ) -> Result<(), StoreError> {
        let old: Vec<Bucket> = {
            let counts = self.counts.read().expect("counts lock");
            counts
                .keys()
                .filter(|b| self.window_end(b) <= cutoff)
                .cloned()
                .collect()
        };
        for bucket in old {
            let mut n = 0i64;
            for entry in self
                .items
                .scan_prefix(bucket_prefix(b'i', bucket.app.as_str(), &bucket.date, bucket.retry))
            {
                let (k, _) = entry?;
                if removed.insert(k.clone()) {
                    batch.remove(k);
                    n += 1;
                }
            }
            tracing::info!(app = %bucket.app, date = %bucket.date, retry = bucket.retry, items = n, "retention: bucket purged");
            *delta.entry(bucket).or_default() -= n;
        }
        Ok(())
    }

    fn window_end(&self, b: &Bucket) -> u64 {
        b.date.start_ms(self.offset) + WINDOW_MS
    }
}
