//! The exception store (docs/behaviour.md §7): undelivered callbacks, durably, in sled under
//! `data_dir`.
//!
//! Undelivered callbacks are kept by app, 10-minute date key and retry count (a [`Bucket`]);
//! `storage/info` reads the bucket counts (kept in memory too, loaded once at open), and a
//! replay or listing streams one bucket with a prefix scan, never loading it whole. The keys and
//! the versioned on-disk record are in `format.rs`; the `bans` tree holds each rule's
//! [`BanRecord`].
//!
//! Every change goes through one writer task (`writer.rs`) that applies what has queued up as
//! one sled batch and flushes once (group commit): a write is reported done only after it is on
//! disk, so after a `kill -9` everything reported stored is there.
//!
//! The store also owns the one-replay-per-bucket rule: [`Store::begin_replay`]; deleting a
//! bucket takes the same slot, so a bucket being replayed cannot be deleted.

mod disk;
mod format;
mod pending;
mod writer;

pub use pending::{Commit, Left, Pending, PendingRef};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::FixedOffset;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ban::BanRecord;
use crate::domain::{AppId, DateKey, EventType, Outcome};
use disk::{Disk, Trees};
use format::{ban_key, bucket_prefix, decode_item, item_has_call_id};
use writer::{Cmd, Op, Writer};
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
/// On disk it is a versioned record of its own (`format.rs`), not this type's serde form: its
/// fields can be renamed without breaking existing stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCallback {
    /// The app it belongs to.
    pub app: AppId,
    /// `callId`: the callback's stable id, the same as in its body.
    #[serde(rename = "callId")]
    pub call_id: String,
    /// The name of the rule that made it (`rule` in `storage/items`).
    pub rule: String,
    /// Where it was meant to go, as written: with its password, if any, so that a replay can
    /// send it even after its rule left the config. What shows it masks the password
    /// (`storage/items`; [`CallbackUrl`](crate::CallbackUrl) has the rule).
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

/// The store: reads are direct, writes go through the writer task.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The database, opened again after a failure, and whether the store is failing.
    disk: Arc<Disk>,
    counts: Arc<RwLock<BTreeMap<Bucket, u64>>>,
    writer: mpsc::Sender<Cmd>,
    writer_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The accepted callbacks on disk (durable accept), in `dir`.
    pending: Pending,
    dir: PathBuf,
    closed: CancellationToken,
    offset: FixedOffset,
    /// The buckets being replayed right now.
    replaying: Arc<Mutex<HashSet<Bucket>>>,
    /// Where the last pages of `storage/items` ended: a bucket and a callId, and its item's
    /// key. The next page starts there without reading the bucket up to it.
    cursors: Mutex<HashMap<(Bucket, String), ItemKey>>,
}

/// Most page ends remembered (all are forgotten when there are more).
const MAX_CURSORS: usize = 1024;

/// A bucket's replay slot, from [`Store::begin_replay`]; frees the bucket when dropped.
#[derive(Debug)]
pub struct ReplayLock {
    replaying: Arc<Mutex<HashSet<Bucket>>>,
    bucket: Bucket,
}

impl Drop for ReplayLock {
    fn drop(&mut self) {
        self.replaying.lock().expect("replay lock set").remove(&self.bucket);
    }
}

impl Store {
    /// Opens (or creates) the store under `dir` and starts its writer on the current runtime.
    pub fn open(dir: &Path, offset: FixedOffset) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            dir: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let path = dir.join("store.sled");
        let trees = Trees::open(&path).map_err(|e| open_err(e.to_string()))?;
        let counts = trees.counts().map_err(|e| open_err(e.to_string()))?;
        let counts = Arc::new(RwLock::new(counts));
        let disk = Arc::new(Disk::new(path, trees));
        let pending = Pending::start(dir, disk.clone()).map_err(|e| open_err(e.to_string()))?;
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let writer = Writer {
            offset,
            disk: disk.clone(),
            counts: counts.clone(),
        };
        let closed = CancellationToken::new();
        let writer_task = tokio::spawn(writer.run(rx, closed.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                disk,
                counts,
                writer: tx,
                writer_task: std::sync::Mutex::new(Some(writer_task)),
                pending,
                dir: dir.to_path_buf(),
                closed,
                offset,
                replaying: Arc::default(),
                cursors: Mutex::default(),
            }),
        })
    }

    /// The accepted callbacks on disk (durable accept, docs/behaviour.md §7).
    pub fn pending(&self) -> &Pending {
        &self.inner.pending
    }

    /// The accepted callbacks a previous run left unfinished, oldest first, each with its key
    /// (to [`Pending::remove`] it once finished) or why it could not be read.
    pub fn load_pending(&self) -> Result<Vec<Left>, StoreError> {
        pending::load(&self.inner.dir)
    }

    /// True from a failed write until the store writes again (docs/behaviour.md §7):
    /// `/healthz` answers 503.
    pub fn is_failing(&self) -> bool {
        self.inner.disk.health.is_failing()
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

    /// Forgets a rule's saved ban record (the rule was reset); returns once that is on disk.
    pub async fn clear_ban(&self, app: &AppId, rule: &str) -> Result<(), StoreError> {
        self.send(vec![Op::DeleteBan {
            key: ban_key(app, rule),
        }])
        .await
    }

    /// A rule's saved ban record, if any.
    pub fn load_ban(&self, app: &AppId, rule: &str) -> Option<BanRecord> {
        let v = self.inner.disk.trees().ok()?.bans.get(ban_key(app, rule)).ok()??;
        format::decode_ban(&v).ok()
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
        let (items, failed) = match self.inner.disk.trees() {
            Ok(t) => (Some(t.items.scan_prefix(prefix)), None),
            Err(e) => (None, Some(Err(e))),
        };
        failed.into_iter().chain(items.into_iter().flatten().map(|entry| {
            let (k, v) = entry?;
            Ok((ItemKey(k), decode_item(&v)?))
        }))
    }

    /// Streams a bucket's items after the one with key `after` (from the first without it),
    /// in the order they were stored: a page of `storage/items`.
    pub fn scan_after(
        &self,
        bucket: &Bucket,
        after: Option<&ItemKey>,
    ) -> impl Iterator<Item = Result<(ItemKey, StoredCallback), StoreError>> + Send + 'static {
        let prefix = bucket_prefix(b'i', bucket.app.as_str(), &bucket.date, bucket.retry);
        let start = match after {
            Some(key) => Bound::Excluded(key.0.clone()),
            None => Bound::Included(sled::IVec::from(prefix.as_slice())),
        };
        let (items, failed) = match self.inner.disk.trees() {
            Ok(t) => (Some(t.items.range::<sled::IVec, _>((start, Bound::Unbounded))), None),
            Err(e) => (None, Some(Err(e))),
        };
        let items = items
            .into_iter()
            .flatten()
            .take_while(move |entry| entry.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .map(|entry| {
                let (k, v) = entry?;
                Ok((ItemKey(k), decode_item(&v)?))
            });
        failed.into_iter().chain(items)
    }

    /// A page of `bucket` (`storage/items`): at most `limit` items, after the one whose callId
    /// is `after` when given. `None`: no callback `after` in the bucket. The page's last item
    /// is remembered, so that walking a bucket page by page reads it once.
    pub fn page(
        &self,
        bucket: &Bucket,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<StoredCallback>>, StoreError> {
        let from = match after {
            None => None,
            Some(call_id) => match self.find(bucket, call_id)? {
                Some(key) => Some(key),
                None => return Ok(None),
            },
        };
        let mut items = Vec::new();
        let mut last = None;
        for entry in self.scan_after(bucket, from.as_ref()).take(limit) {
            let (key, item) = entry?;
            last = Some(key);
            items.push(item);
        }
        if let (Some(key), Some(item)) = (last, items.last()) {
            let mut cursors = self.inner.cursors.lock().expect("cursors lock");
            if cursors.len() >= MAX_CURSORS {
                cursors.clear();
            }
            cursors.insert((bucket.clone(), item.call_id.clone()), key);
        }
        Ok(Some(items))
    }

    /// The key of the item `call_id` in `bucket`, if it is there: where a page ended, or else
    /// found by reading the bucket up to it.
    pub fn find(&self, bucket: &Bucket, call_id: &str) -> Result<Option<ItemKey>, StoreError> {
        let t = self.inner.disk.trees()?;
        let remembered = self
            .inner
            .cursors
            .lock()
            .expect("cursors lock")
            .get(&(bucket.clone(), call_id.to_string()))
            .cloned();
        if let Some(key) = remembered {
            // Still there and still that callback (not delivered or moved by a replay since)?
            match t.items.get(&key.0)? {
                Some(v) if item_has_call_id(&v, call_id)? => return Ok(Some(key)),
                _ => {
                    self.inner
                        .cursors
                        .lock()
                        .expect("cursors lock")
                        .remove(&(bucket.clone(), call_id.to_string()));
                }
            }
        }
        let prefix = bucket_prefix(b'i', bucket.app.as_str(), &bucket.date, bucket.retry);
        for entry in t.items.scan_prefix(prefix) {
            let (k, v) = entry?;
            if item_has_call_id(&v, call_id)? {
                return Ok(Some(ItemKey(k)));
            }
        }
        Ok(None)
    }

    /// Deletes every item of the bucket whose slot `slot` holds (so that no replay of it runs
    /// meanwhile); returns how many once that is on disk.
    pub async fn delete_bucket(&self, slot: &ReplayLock) -> Result<u64, StoreError> {
        let deleted = Arc::new(AtomicU64::new(0));
        self.send(vec![Op::DeleteBucket {
            bucket: slot.bucket.clone(),
            deleted: deleted.clone(),
        }])
        .await?;
        Ok(deleted.load(Ordering::Relaxed))
    }

    /// Takes `bucket`'s replay slot: `None` while another replay of it holds the slot. One
    /// replay per bucket at a time, so that no callback is sent twice by two replays.
    pub fn begin_replay(&self, bucket: &Bucket) -> Option<ReplayLock> {
        let replaying = &self.inner.replaying;
        let fresh = replaying.lock().expect("replay lock set").insert(bucket.clone());
        fresh.then(|| ReplayLock {
            replaying: replaying.clone(),
            bucket: bucket.clone(),
        })
    }

    /// Finishes what was sent, flushes, and stops the writer and the sweep. Later writes fail
    /// with [`StoreError::Closed`]; the files are released once every handle is dropped.
    pub async fn close(&self) {
        self.inner.closed.cancel();
        let writer = self.inner.writer_task.lock().expect("store task lock").take();
        if let Some(task) = writer {
            let _ = task.await;
        }
        self.inner.pending.close().await;
    }

    /// Waits until everything written so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.send(Vec::new()).await?;
        self.inner.disk.trees()?.db.flush_async().await?;
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(date: &str, retry: u32) -> Bucket {
        Bucket {
            app: AppId::parse("app1").unwrap(),
            date: DateKey::parse(date).unwrap(),
            retry,
        }
    }

    fn stored_at(ms: u64) -> StoredCallback {
        StoredCallback {
            app: AppId::parse("app1").unwrap(),
            call_id: format!("app1#{ms}"),
            rule: "sync".into(),
            url: "http://127.0.0.1:9/cb".into(),
            event_type: EventType::Chat,
            to: "bob".into(),
            body: "{}".into(),
            query: None,
            outcome: Outcome::Timeout,
            attempts: 2,
            status: None,
            stored_at_ms: ms,
        }
    }

    /// Stores `items` with the offset `written`, reopens the store with `read`, purges what
    /// ended before `cutoff` and returns the stored times left.
    async fn purge_after_offset_change(
        items: &[u64],
        written: FixedOffset,
        read: FixedOffset,
        cutoff: u64,
    ) -> Vec<u64> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), written).unwrap();
        store
            .put(items.iter().map(|&ms| stored_at(ms)).collect())
            .await
            .unwrap();
        store.close().await;
        drop(store);
        let store = Store::open(dir.path(), read).unwrap();
        store.purge_before(cutoff).await.unwrap();
        let app = AppId::parse("app1").unwrap();
        let mut left = Vec::new();
        for b in store.buckets(&app) {
            let items = store.scan(&bucket(b.date.as_str(), b.retry));
            left.extend(items.map(|e| e.unwrap().1.stored_at_ms));
        }
        left.sort();
        store.close().await;
        left
    }

    #[tokio::test]
    async fn retention_follows_the_stored_time_when_the_offset_changes() {
        const HOUR: u64 = 3600 * 1000;
        let now = 1_700_000_000_000;
        let (west5, east8) = (
            FixedOffset::west_opt(5 * 3600).unwrap(),
            FixedOffset::east_opt(8 * 3600).unwrap(),
        );
        // Retention of an hour. Written at -05:00 and read at +08:00, every key looks 13 h
        // older than it is: the callback stored now stays, the one stored 2 h ago goes.
        let left = purge_after_offset_change(&[now, now - 2 * HOUR], west5, east8, now - HOUR).await;
        assert_eq!(left, [now]);
        // The other way round keys look 13 h newer: a callback stored 5 h ago still goes.
        let left = purge_after_offset_change(&[now, now - 5 * HOUR], east8, west5, now - HOUR).await;
        assert_eq!(left, [now]);
        // Once its window has ended, the current one goes too.
        let left = purge_after_offset_change(&[now], west5, east8, now + 10 * 60 * 1000).await;
        assert!(left.is_empty(), "{left:?}");
        // Unchanged offset: as the keys say.
        let left = purge_after_offset_change(&[now, now - 2 * HOUR], east8, east8, now - HOUR).await;
        assert_eq!(left, [now]);
    }

    #[tokio::test]
    async fn pages_start_where_the_last_one_ended_and_a_stale_end_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), FixedOffset::east_opt(0).unwrap()).unwrap();
        let now = 1_700_000_000_000;
        store.put((0..25).map(|i| stored_at(now + i)).collect()).await.unwrap();
        let b = store.buckets(&AppId::parse("app1").unwrap())[0];
        let b = bucket(b.date.as_str(), b.retry);
        let ids = |page: Vec<StoredCallback>| page.into_iter().map(|c| c.stored_at_ms - now).collect::<Vec<_>>();
        let first = store.page(&b, None, 10).unwrap().unwrap();
        assert_eq!(ids(first), (0..10).collect::<Vec<_>>());
        let key = |call_id: &str| {
            store
                .inner
                .cursors
                .lock()
                .unwrap()
                .get(&(b.clone(), call_id.to_string()))
                .cloned()
        };
        let end = key(&format!("app1#{}", now + 9)).expect("the page's end is remembered");
        let second = store.page(&b, Some(&format!("app1#{}", now + 9)), 10).unwrap().unwrap();
        assert_eq!(ids(second), (10..20).collect::<Vec<_>>());
        // The bucket is emptied and the same callback stored again, under a new key: the
        // remembered end is checked, found gone, and the bucket read.
        let lock = store.begin_replay(&b).unwrap();
        assert_eq!(store.delete_bucket(&lock).await.unwrap(), 25);
        drop(lock);
        assert_eq!(store.page(&b, Some(&format!("app1#{}", now + 9)), 10).unwrap(), None);
        store.put(vec![stored_at(now + 9), stored_at(now + 30)]).await.unwrap();
        let again = store
            .find(&b, &format!("app1#{}", now + 9))
            .unwrap()
            .expect("found by reading");
        assert_ne!(again, end);
        let rest = store.page(&b, Some(&format!("app1#{}", now + 9)), 10).unwrap().unwrap();
        assert_eq!(ids(rest), [30]);
        store.close().await;
    }

    #[tokio::test]
    async fn one_replay_per_bucket_until_its_lock_drops() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), FixedOffset::east_opt(0).unwrap()).unwrap();
        let a = bucket("202109091440", 0);
        let lock = store.begin_replay(&a).expect("a free bucket");
        assert!(store.begin_replay(&a).is_none(), "the same bucket twice");
        let _other = store
            .begin_replay(&bucket("202109091440", 1))
            .expect("another retry count");
        drop(lock);
        assert!(store.begin_replay(&a).is_some(), "freed when the lock dropped");
        store.close().await;
    }

    /// A callback of `app` stored at 2021-09-09 14:4x UTC (bucket `202109091440`), or ten
    /// minutes later with `later`.
    fn stored(app: &str, call_id: &str, later: bool) -> StoredCallback {
        StoredCallback {
            app: AppId::parse(app).unwrap(),
            call_id: call_id.into(),
            rule: "sync".into(),
            url: "http://127.0.0.1:9/cb".into(),
            event_type: EventType::Chat,
            to: "bob".into(),
            body: format!(r#"{{"callId":"{call_id}"}}"#),
            query: None,
            outcome: Outcome::Status,
            attempts: 2,
            status: Some(503),
            stored_at_ms: 1_631_198_460_000 + if later { 600_000 } else { 0 },
        }
    }

    fn ids(items: impl Iterator<Item = Result<(ItemKey, StoredCallback), StoreError>>) -> Vec<String> {
        items.map(|e| e.unwrap().1.call_id).collect()
    }

    #[tokio::test]
    async fn a_bucket_pages_from_a_call_id_in_order_and_only_its_own_items() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), FixedOffset::east_opt(0).unwrap()).unwrap();
        let b = bucket("202109091440", 0);
        let mut items: Vec<StoredCallback> = (0..25).map(|i| stored("app1", &format!("c{i}"), false)).collect();
        // Neighbours in key order: the next date of the same app, and another app.
        items.push(stored("app1", "next-window", true));
        items.push(stored("app2", "other-app", false));
        store.put(items).await.unwrap();
        let all = ids(store.scan(&b));
        assert_eq!(all, (0..25).map(|i| format!("c{i}")).collect::<Vec<_>>());
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = ids(store.scan_after(&b, after.as_ref()).take(10));
            if page.is_empty() {
                break;
            }
            after = Some(
                store
                    .find(&b, page.last().unwrap())
                    .unwrap()
                    .expect("the last item is there"),
            );
            paged.extend(page);
        }
        assert_eq!(paged, all, "pages of 10 give every item once, in order");
        assert_eq!(store.find(&b, "c99").unwrap(), None);
        assert_eq!(store.find(&b, "next-window").unwrap(), None, "another bucket's item");
        store.close().await;
    }

    #[tokio::test]
    async fn deleting_a_bucket_needs_its_slot_and_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let b = bucket("202109091440", 0);
        {
            let store = Store::open(dir.path(), FixedOffset::east_opt(0).unwrap()).unwrap();
            let mut items: Vec<StoredCallback> = (0..5).map(|i| stored("app1", &format!("c{i}"), false)).collect();
            items.push(stored("app1", "next-window", true));
            store.put(items).await.unwrap();
            let slot = store.begin_replay(&b).unwrap();
            assert!(store.begin_replay(&b).is_none(), "no replay while it is deleted");
            assert_eq!(store.delete_bucket(&slot).await.unwrap(), 5);
            assert_eq!(store.delete_bucket(&slot).await.unwrap(), 0, "nothing left to delete");
            assert_eq!(store.bucket_size(&b), 0);
            assert_eq!(store.buckets(&b.app).len(), 1, "the other bucket stays");
            store.close().await;
        }
        let store = Store::open(dir.path(), FixedOffset::east_opt(0).unwrap()).unwrap();
        assert_eq!(store.scan(&b).count(), 0);
        assert_eq!(store.bucket_size(&b), 0);
        assert_eq!(ids(store.scan(&bucket("202109091450", 0))), ["next-window"]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_cleared_ban_record_is_gone_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let app = AppId::parse("app1").unwrap();
        let record = BanRecord {
            banned_until_ms: 5,
            level: 2,
            history_ms: vec![1, 2],
        };
        {
            let store = Store::open(dir.path(), FixedOffset::east_opt(0).unwrap()).unwrap();
            store.save_ban(&app, "sync", record.clone());
            store.save_ban(&app, "other", record.clone());
            store.flush().await.unwrap();
            assert_eq!(store.load_ban(&app, "sync"), Some(record.clone()));
            store.clear_ban(&app, "sync").await.unwrap();
            assert_eq!(store.load_ban(&app, "sync"), None);
            store.close().await;
        }
        let store = Store::open(dir.path(), FixedOffset::east_opt(0).unwrap()).unwrap();
        assert_eq!(store.load_ban(&app, "sync"), None);
        assert_eq!(store.load_ban(&app, "other"), Some(record));
        store.close().await;
    }

    #[tokio::test]
    async fn a_store_written_before_records_were_versioned_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let b = bucket("202311142210", 0);
        {
            // What the store wrote then: the item as plain JSON, and the bucket's count.
            let db = sled::open(dir.path().join("store.sled")).unwrap();
            let tree = db.open_tree("callbacks").unwrap();
            let mut key = bucket_prefix(b'i', "app1", &b.date, 0);
            key.extend_from_slice(&7u64.to_be_bytes());
            let legacy = r#"{"app":"app1","callId":"app1#6b1f","rule":"sync","url":"http://127.0.0.1:9/cb","eventType":"chat","to":"bob","body":"{\"msg\":\"hi\"}","query":null,"outcome":"timeout","attempts":2,"status":null,"stored_at_ms":1700000000000}"#;
            tree.insert(key, legacy.as_bytes()).unwrap();
            tree.insert(bucket_prefix(b'b', "app1", &b.date, 0), &1u64.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path(), FixedOffset::east_opt(0).unwrap()).unwrap();
        assert_eq!(store.bucket_size(&b), 1);
        let items: Vec<StoredCallback> = store.scan(&b).map(|e| e.unwrap().1).collect();
        assert_eq!(items.len(), 1);
        let item = &items[0];
        assert_eq!(
            (item.call_id.as_str(), item.body.as_str()),
            ("app1#6b1f", r#"{"msg":"hi"}"#)
        );
        assert_eq!((item.outcome, item.attempts, item.status), (Outcome::Timeout, 2, None));
        // Moved by a replay, it is written again in the current format and still reads the same.
        let (key, item) = store.scan(&b).next().unwrap().unwrap();
        store.move_to_retry(key, item.clone(), 1).await.unwrap();
        store.flush().await.unwrap();
        let moved: Vec<StoredCallback> = store.scan(&bucket("202311142210", 1)).map(|e| e.unwrap().1).collect();
        assert_eq!(moved, vec![item]);
        store.close().await;
    }
}
