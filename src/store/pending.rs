//! Durable accept (docs/behaviour.md §7): the callbacks accepted and not yet finished, on disk,
//! so that a `kill -9` loses none of them.
//!
//! Ingestion hands each message's callbacks to [`Pending::insert`] and answers once the
//! returned [`Commit`] resolves; a callback that reaches its final outcome is forgotten with
//! [`Pending::remove`]. One committer task applies everything that arrived meanwhile as one
//! sled batch and, when an insert waits for it, flushes once (group commit): many requests,
//! one fsync. Removals are not flushed on their own (sled flushes in the background): after a
//! crash a finished callback may come back and be sent again, with the same callId — at least
//! once, never lost. At start, [`Pending::load`] reads what was left.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::StoreError;
use super::disk::Disk;
use crate::domain::{AppId, EventType};

/// Most inserts and removals the committer folds into one batch.
const MAX_GROUP: usize = 65_536;
/// The record's format version (the first byte).
const VERSION: u8 = 1;

/// An accepted callback, as kept until its final outcome: enough to queue it again.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCallback {
    /// The app.
    pub app: AppId,
    /// The rule's name.
    pub rule: String,
    /// The rule's URL as written (password included), for a callback whose rule has gone.
    pub url: String,
    /// `callId`.
    pub call_id: String,
    /// `eventType`.
    pub event_type: EventType,
    /// The callback's `to`.
    pub to: String,
    /// The exact body bytes.
    pub body: Vec<u8>,
    /// The query string (tencent).
    pub query: Option<String>,
}

/// Fields of a [`PendingCallback`] to encode, borrowed from a job.
#[derive(Debug, Clone, Copy)]
pub struct PendingRef<'a> {
    /// The app.
    pub app: &'a str,
    /// The rule's name.
    pub rule: &'a str,
    /// The rule's URL as written.
    pub url: &'a str,
    /// `callId`.
    pub call_id: &'a str,
    /// `eventType`.
    pub event_type: EventType,
    /// The callback's `to`.
    pub to: &'a str,
    /// The exact body bytes.
    pub body: &'a [u8],
    /// The query string (tencent).
    pub query: Option<&'a str>,
}

impl PendingRef<'_> {
    /// The record: a version byte, then each field as a 4-byte big-endian length and its bytes
    /// (the query with a presence byte first).
    fn encode(&self) -> Vec<u8> {
        let strs = [
            self.app.as_bytes(),
            self.rule.as_bytes(),
            self.url.as_bytes(),
            self.call_id.as_bytes(),
            self.event_type.as_str().as_bytes(),
            self.to.as_bytes(),
            self.body,
        ];
        let len = 2 + strs.iter().map(|s| 4 + s.len()).sum::<usize>() + self.query.map_or(0, |q| 4 + q.len());
        let mut out = Vec::with_capacity(len);
        out.push(VERSION);
        for s in strs {
            put(&mut out, s);
        }
        match self.query {
            Some(q) => {
                out.push(1);
                put(&mut out, q.as_bytes());
            }
            None => out.push(0),
        }
        out
    }
}

fn put(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// A record being read.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the record is cut short".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(n)
    }

    fn text(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a field is not UTF-8".to_string())
    }
}

/// Reads a record written by [`PendingRef::encode`].
fn decode(v: &[u8]) -> Result<PendingCallback, String> {
    let mut r = Reader(v);
    if r.take(1)? != [VERSION] {
        return Err("unknown record version".into());
    }
    Ok(PendingCallback {
        app: AppId::parse(&r.text()?).map_err(|e| e.to_string())?,
        rule: r.text()?,
        url: r.text()?,
        call_id: r.text()?,
        event_type: EventType::parse(&r.text()?).map_err(|e| e.0)?,
        to: r.text()?,
        body: r.bytes()?.to_vec(),
        query: match r.take(1)? {
            [1] => Some(r.text()?),
            _ => None,
        },
    })
}

enum Op {
    Insert {
        entries: Vec<(u64, Vec<u8>)>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Remove(u64),
}

/// A callback left on disk by an earlier run: its key, and the callback or why it cannot be read.
pub type Left = (u64, Result<PendingCallback, String>);

/// Resolves once a message's callbacks are on disk (or with why not).
pub type Commit = oneshot::Receiver<Result<(), StoreError>>;

/// The accepted callbacks on disk: see the module.
#[derive(Debug, Clone)]
pub struct Pending {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tx: mpsc::UnboundedSender<Op>,
    /// The next key: above every key on disk at start.
    next: AtomicU64,
    /// Flushes done so far (one per group with an insert).
    flushes: Arc<AtomicU64>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pending op")
    }
}

impl Pending {
    /// Starts the committer on the current runtime; it stops, after applying and flushing
    /// what was sent, when `closed` fires.
    pub(super) fn start(disk: Arc<Disk>, closed: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let next = disk
            .trees()
            .ok()
            .and_then(|t| t.pending.last().ok().flatten())
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(0, |k| u64::from_be_bytes(k) + 1);
        let (tx, rx) = mpsc::unbounded_channel();
        let flushes = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(commit(disk, rx, closed, flushes.clone()));
        let inner = Arc::new(Shared {
            tx,
            next: AtomicU64::new(next),
            flushes,
        });
        (Self { inner }, task)
    }

    /// Writes `callbacks` (in a group with whatever else arrives meanwhile); answers their keys,
    /// in order, and the commit to wait for before saying they were accepted.
    pub fn insert(&self, callbacks: Vec<PendingRef<'_>>) -> (Vec<u64>, Commit) {
        let n = callbacks.len() as u64;
        let first = self.inner.next.fetch_add(n, Ordering::Relaxed);
        let entries: Vec<(u64, Vec<u8>)> = callbacks.iter().zip(first..).map(|(c, k)| (k, c.encode())).collect();
        let keys = (first..first + n).collect();
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Op::Insert { done, .. })) = self.inner.tx.send(Op::Insert { entries, done }) {
            let _ = done.send(Err(StoreError::Closed));
        }
        (keys, rx)
    }

    /// Forgets a callback that reached its final outcome (durable with the next flush).
    pub fn remove(&self, key: u64) {
        let _ = self.inner.tx.send(Op::Remove(key));
    }

    /// Flushes done so far: one per group of inserts, however many requests it served.
    pub fn flushes(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }
}

/// Reads every callback left on disk, oldest first.
pub(super) fn load(disk: &Disk) -> Result<Vec<Left>, StoreError> {
    let t = disk.trees()?;
    let mut out = Vec::new();
    for entry in t.pending.iter() {
        let (k, v) = entry?;
        let key = <[u8; 8]>::try_from(k.as_ref()).map_or(u64::MAX, u64::from_be_bytes);
        out.push((key, decode(&v)));
    }
    Ok(out)
}

/// The committer: one batch and at most one flush for everything that arrived meanwhile.
async fn commit(
    disk: Arc<Disk>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    closed: CancellationToken,
    flushes: Arc<AtomicU64>,
) {
    let mut group = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            op = rx.recv() => op,
            _ = closed.cancelled() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let waiting = group.iter().any(|op| matches!(op, Op::Insert { .. }));
        let result = apply(&disk, &mut group, waiting).await;
        flushes.fetch_add(u64::from(waiting), Ordering::Relaxed);
        if let Err(e) = &result {
            disk.health.failed(e);
            disk.invalidate();
        }
        for op in group.drain(..) {
            if let Op::Insert { done, .. } = op {
                let _ = done.send(result.clone());
            }
        }
    }
    if let Ok(t) = disk.trees() {
        let _ = t.db.flush_async().await;
    }
}

async fn apply(disk: &Disk, group: &mut [Op], flush: bool) -> Result<(), StoreError> {
    let t = disk.trees()?;
    let mut batch = sled::Batch::default();
    for op in group.iter_mut() {
        match op {
            Op::Insert { entries, .. } => {
                for (k, v) in entries.drain(..) {
                    batch.insert(&k.to_be_bytes(), v);
                }
            }
            Op::Remove(k) => batch.remove(&k.to_be_bytes()),
        }
    }
    t.pending.apply_batch(batch)?;
    if flush {
        t.db.flush_async().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn one(call_id: &str) -> PendingRef<'_> {
        PendingRef {
            app: "app1",
            rule: "sync",
            url: "http://127.0.0.1:9/cb",
            call_id,
            event_type: EventType::Chat,
            to: "bob",
            body: b"{}",
            query: None,
        }
    }

    #[tokio::test]
    async fn requests_that_arrive_together_share_one_flush_and_finished_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let offset = chrono::FixedOffset::east_opt(0).unwrap();
        let store = Store::open(dir.path(), offset).unwrap();
        let ids: Vec<String> = (0..200).map(|i| format!("app1#{i}")).collect();
        // 200 requests before the committer runs: one batch, one flush.
        let commits: Vec<(Vec<u64>, Commit)> = ids.iter().map(|id| store.pending().insert(vec![one(id)])).collect();
        let mut keys = Vec::new();
        for (k, c) in commits {
            c.await.unwrap().unwrap();
            keys.extend(k);
        }
        assert_eq!(store.pending().flushes(), 1, "one flush served every request");
        for k in &keys[..150] {
            store.pending().remove(*k);
        }
        store.close().await;
        drop(store);
        let store = Store::open(dir.path(), offset).unwrap();
        let left: Vec<String> = store
            .load_pending()
            .unwrap()
            .into_iter()
            .map(|(_, p)| p.unwrap().call_id)
            .collect();
        assert_eq!(left, ids[150..], "the unfinished ones, in the order accepted");
        // New keys start above the ones on disk.
        let (k, c) = store.pending().insert(vec![one("app1#new")]);
        c.await.unwrap().unwrap();
        assert!(k[0] > keys[199], "{k:?}");
        store.close().await;
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let r = PendingRef {
            app: "app1",
            rule: "sync",
            url: "http://u:p@127.0.0.1:9/cb",
            call_id: "app1#x",
            event_type: EventType::ChatOffline,
            to: "bob",
            body: b"{\"k\":1}",
            query: Some("a=1&b=2"),
        };
        let back = decode(&r.encode()).unwrap();
        assert_eq!(
            (
                back.app.as_str(),
                back.rule.as_str(),
                back.url.as_str(),
                back.call_id.as_str()
            ),
            ("app1", "sync", r.url, "app1#x")
        );
        assert_eq!((back.event_type, back.to.as_str()), (EventType::ChatOffline, "bob"));
        assert_eq!((back.body.as_slice(), back.query.as_deref()), (r.body, r.query));
        let none = decode(&PendingRef { query: None, ..r }.encode()).unwrap();
        assert_eq!(none.query, None);
        assert!(decode(&r.encode()[..10]).is_err(), "cut short");
        assert!(decode(&[9]).is_err(), "another version");
    }
}
