//! Durable accept (docs/behaviour.md §7): the callbacks accepted and not yet finished, on disk,
//! so that a `kill -9` loses none of them.
//!
//! Ingestion hands each message's callbacks to [`Pending::insert`] and answers once the
//! returned [`Commit`] resolves; a callback that reaches its final outcome is forgotten with
//! [`Pending::remove`]. They live in `pending.log` beside the store's database, an append-only
//! log of checksummed frames (an insert with its record, or a removal), written by one
//! committer thread: everything that arrived meanwhile is one write and, when an insert waits
//! for it, one `fdatasync` (group commit: many requests, one sync; while requests arrive
//! together it waits [`COMMIT_DELAY`] to gather more). Removals are not synced on
//! their own: after a crash a finished callback may come back and be sent again, with the same
//! callId — at least once, never lost. The log is emptied when nothing is pending and rewritten
//! with only the live records when it grows past [`COMPACT_AT`] and four times those. At start,
//! [`load`] reads what was left; a frame cut short by the crash ends the log.
//!
//! Why a log and not a sled tree: a pending record lives for milliseconds, and sled's write
//! path (a tree insert and a removal, its log, its background threads) cost a quarter of the
//! ingestion rate; this costs one write and one sync per group (docs/decisions.md).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::StoreError;
use super::disk::Disk;
use crate::domain::{AppId, EventType};

/// Most inserts and removals the committer folds into one write.
const MAX_GROUP: usize = 65_536;
/// The record's format version (the first byte).
const VERSION: u8 = 1;
/// The log's file name, in the data directory.
pub(super) const LOG_FILE: &str = "pending.log";
/// A log this long is rewritten with only its live records (when those are under a quarter).
const COMPACT_AT: u64 = 64 * 1024 * 1024;
/// A log this long is emptied once nothing is pending.
const EMPTY_AT: u64 = 4 * 1024 * 1024;
/// A frame's head: the length of what follows the head, and its CRC-32.
const HEAD: usize = 8;
/// What follows the head before a record: the frame's kind and its key.
const KIND_KEY: usize = 1 + 8;
/// When the last group served more than one request (requests are arriving together), the
/// committer waits this long before taking the next group, so that one sync serves more of
/// them: each sync costs the machine far more than its wait (as PostgreSQL's `commit_delay`
/// with `commit_siblings`). A lone request never waits.
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(500);
/// Frame kinds.
const INSERT: u8 = 1;
const REMOVE: u8 = 2;

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
    /// Write and sync what came before, then stop.
    Close(oneshot::Sender<()>),
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
    tx: mpsc::Sender<Op>,
    /// The next key: above every key on disk at start.
    next: AtomicU64,
    /// Syncs done so far (one per group with an insert).
    flushes: Arc<AtomicU64>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pending op")
    }
}

impl Pending {
    /// Opens `dir`'s log (keeping what an earlier run left in it) and starts the committer
    /// thread; it stops, after writing and syncing what was sent, on [`close`](Self::close)
    /// or once every handle is dropped. Write failures are reported to `disk`'s health.
    pub(super) fn start(dir: &Path, disk: Arc<Disk>) -> Result<Self, StoreError> {
        let log = Log::open(&dir.join(LOG_FILE))?;
        let next = log.max_key.map_or(0, |k| k + 1);
        let (tx, rx) = mpsc::channel();
        let flushes = Arc::new(AtomicU64::new(0));
        let counted = flushes.clone();
        std::thread::Builder::new()
            .name("pending-log".into())
            .spawn(move || commit(log, rx, disk, &counted))
            .map_err(|e| StoreError::Io(format!("cannot start the pending log's thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Shared {
                tx,
                next: AtomicU64::new(next),
                flushes,
            }),
        })
    }

    /// Writes `callbacks` (in a group with whatever else arrives meanwhile); answers their keys,
    /// in order, and the commit to wait for before saying they were accepted.
    pub fn insert(&self, callbacks: Vec<PendingRef<'_>>) -> (Vec<u64>, Commit) {
        let n = callbacks.len() as u64;
        let first = self.inner.next.fetch_add(n, Ordering::Relaxed);
        let entries: Vec<(u64, Vec<u8>)> = callbacks.iter().zip(first..).map(|(c, k)| (k, c.encode())).collect();
        let keys = (first..first + n).collect();
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::SendError(Op::Insert { done, .. })) = self.inner.tx.send(Op::Insert { entries, done }) {
            let _ = done.send(Err(StoreError::Closed));
        }
        (keys, rx)
    }

    /// Forgets a callback that reached its final outcome (durable with the next sync).
    pub fn remove(&self, key: u64) {
        let _ = self.inner.tx.send(Op::Remove(key));
    }

    /// Syncs done so far: one per group of inserts, however many requests it served.
    pub fn flushes(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }

    /// Writes and syncs everything sent so far and stops the committer: later inserts fail
    /// with [`StoreError::Closed`].
    pub(super) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Op::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Reads every callback left in `dir`'s log, oldest first.
pub(super) fn load(dir: &Path) -> Result<Vec<Left>, StoreError> {
    let path = dir.join(LOG_FILE);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io(format!("cannot read {}: {e}", path.display()))),
    };
    let scan = scan(&data);
    let mut live: Vec<(u64, (u64, u32))> = scan.live.into_iter().collect();
    live.sort_unstable_by_key(|&(k, _)| k);
    Ok(live
        .into_iter()
        .map(|(k, (at, len))| (k, decode(record(&data[at as usize..][..len as usize]))))
        .collect())
}

/// The record of a whole insert frame.
fn record(frame: &[u8]) -> &[u8] {
    &frame[HEAD + KIND_KEY..]
}

/// The longest record a frame holds (its length is a u32).
const MAX_RECORD: usize = u32::MAX as usize - HEAD - KIND_KEY;

/// Appends one frame.
fn frame(out: &mut Vec<u8>, kind: u8, key: u64, record: &[u8]) {
    debug_assert!(record.len() <= MAX_RECORD);
    let len = KIND_KEY + record.len();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(&key.to_be_bytes());
    crc.update(record);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&key.to_be_bytes());
    out.extend_from_slice(record);
}

/// What a log holds.
#[derive(Debug, Default)]
struct Scan {
    /// The live inserts: key → where the whole frame starts, and its length.
    live: HashMap<u64, (u64, u32)>,
    /// The highest key seen, removed ones included.
    max_key: Option<u64>,
    /// The length of the whole frames; anything after them (a frame cut short by a crash, or
    /// damaged) is not read.
    good: u64,
}

fn scan(data: &[u8]) -> Scan {
    let mut s = Scan::default();
    let mut at = 0usize;
    while data.len() - at >= HEAD {
        let len = u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        if len < KIND_KEY || data.len() - at - HEAD < len {
            break;
        }
        let body = &data[at + HEAD..at + HEAD + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let key = u64::from_be_bytes(body[1..KIND_KEY].try_into().expect("8 bytes"));
        match body[0] {
            INSERT => {
                s.live.insert(key, (at as u64, (HEAD + len) as u32));
            }
            REMOVE => {
                s.live.remove(&key);
            }
            _ => break,
        }
        s.max_key = Some(s.max_key.map_or(key, |m| m.max(key)));
        at += HEAD + len;
    }
    s.good = at as u64;
    s
}

/// The open log, owned by the committer thread.
struct Log {
    path: PathBuf,
    file: File,
    /// The length of the whole frames written: the next frame goes there (over whatever a
    /// failed write left).
    len: u64,
    live: HashMap<u64, (u64, u32)>,
    /// The bytes of the live frames.
    live_bytes: u64,
    max_key: Option<u64>,
    /// The frames of the group being written.
    buf: Vec<u8>,
    /// A compaction that failed is not tried again before this.
    compact_after: Instant,
}

/// How often a failing log is probed while nothing is written.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Waits after a failed compaction before the next try (the disk may be full).
const COMPACT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(10);

/// Syncs the directory that holds `path`, so that its entry for `path` is on disk.
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

impl Log {
    /// Opens (or creates) the log and reads it; what follows its last whole frame is cut off.
    fn open(path: &Path) -> Result<Self, StoreError> {
        let failed = |e: io::Error| StoreError::Io(format!("cannot open {}: {e}", path.display()));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(failed)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(failed)?;
        let scan = scan(&data);
        if scan.good < data.len() as u64 {
            // A crash in the middle of a write leaves a frame cut short at the end (its request
            // was never answered); damage elsewhere would cut off more. Either way what is cut
            // off is kept aside, not lost.
            let aside = path.with_extension(format!(
                "log.cut-{}",
                crate::clock::Clock::now_ms(&crate::clock::SystemClock)
            ));
            std::fs::write(&aside, &data[scan.good as usize..]).map_err(failed)?;
            tracing::warn!(
                path = %path.display(),
                bytes = data.len() as u64 - scan.good,
                kept_in = %aside.display(),
                "the pending log ends with a frame cut short or damaged (a crash while writing it?); \
                 what follows the last whole frame is cut off and kept aside"
            );
            file.set_len(scan.good).map_err(failed)?;
            file.sync_all().map_err(failed)?;
        }
        // The log's own name is on disk before anything is answered from it.
        sync_dir(path).map_err(failed)?;
        let live_bytes = scan.live.values().map(|&(_, n)| u64::from(n)).sum();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len: scan.good,
            live: scan.live,
            live_bytes,
            max_key: scan.max_key,
            buf: Vec::new(),
            compact_after: Instant::now(),
        })
    }

    /// Writes a group's frames, synced when `sync`; the live records change only once the
    /// write succeeded. After a failed write the file is cut back to its whole frames.
    fn write(&mut self, group: &[Op], sync: bool) -> io::Result<()> {
        let r = self.write_frames(group, sync);
        if r.is_err() {
            let _ = self.file.set_len(self.len);
        }
        r
    }

    fn write_frames(&mut self, group: &[Op], sync: bool) -> io::Result<()> {
        self.buf.clear();
        let mut inserted = HashMap::new();
        for op in group {
            match op {
                Op::Insert { entries, .. } => {
                    for (k, v) in entries {
                        if v.len() > MAX_RECORD {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidInput,
                                format!("a callback of {} bytes is too large for the pending log", v.len()),
                            ));
                        }
                        let at = self.len + self.buf.len() as u64;
                        frame(&mut self.buf, INSERT, *k, v);
                        inserted.insert(*k, (at, (self.len + self.buf.len() as u64 - at) as u32));
                    }
                }
                // Only what is on disk (or going there now) needs its removal there.
                Op::Remove(k) if self.live.contains_key(k) || inserted.contains_key(k) => {
                    frame(&mut self.buf, REMOVE, *k, &[]);
                }
                Op::Remove(_) | Op::Close(_) => {}
            }
        }
        if !self.buf.is_empty() {
            self.file.seek(SeekFrom::Start(self.len))?;
            self.file.write_all(&self.buf)?;
        }
        if sync {
            self.file.sync_data()?;
        }
        self.len += self.buf.len() as u64;
        for (k, at) in inserted {
            self.live_bytes += u64::from(at.1);
            self.live.insert(k, at);
        }
        for op in group {
            if let Op::Remove(k) = op
                && let Some((_, n)) = self.live.remove(k)
            {
                self.live_bytes -= u64::from(n);
            }
        }
        if self.buf.capacity() > 1024 * 1024 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Whether a block can be written and synced where the next frame goes (then cut off again:
    /// zeros there would end a read of the log anyway).
    fn probe(&mut self) -> io::Result<()> {
        let r = (|| {
            self.file.seek(SeekFrom::Start(self.len))?;
            self.file.write_all(&[0; 4096])?;
            self.file.sync_data()
        })();
        let _ = self.file.set_len(self.len);
        r
    }

    /// Empties the log when nothing is pending, or keeps only the live records when it has
    /// grown long and mostly dead.
    fn compact_if_due(&mut self) -> io::Result<()> {
        if Instant::now() < self.compact_after {
            return Ok(());
        }
        let r = if self.live.is_empty() && self.len >= EMPTY_AT {
            self.file
                .set_len(0)
                .and_then(|()| self.file.sync_data())
                .map(|()| self.len = 0)
        } else if self.len >= COMPACT_AT.max(4 * self.live_bytes) {
            self.rewrite()
        } else {
            Ok(())
        };
        if r.is_err() {
            self.compact_after = Instant::now() + COMPACT_BACKOFF;
        }
        r
    }

    /// Writes the live frames, oldest first, to a new file that then replaces the log.
    fn rewrite(&mut self) -> io::Result<()> {
        let mut keys: Vec<u64> = self.live.keys().copied().collect();
        keys.sort_unstable();
        let mut data = Vec::with_capacity(self.live_bytes as usize);
        let mut moved = Vec::with_capacity(keys.len());
        for k in keys {
            let (at, n) = self.live[&k];
            let start = data.len() as u64;
            data.resize(data.len() + n as usize, 0);
            self.file.seek(SeekFrom::Start(at))?;
            self.file.read_exact(&mut data[start as usize..])?;
            moved.push((k, (start, n)));
        }
        let tmp = self.path.with_extension("log.new");
        let written = (|| {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.write_all(&data)?;
            file.sync_all()?;
            Ok::<_, io::Error>(file)
        })();
        let file = match written.and_then(|f| std::fs::rename(&tmp, &self.path).map(|()| f)) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // The new file is the log from the rename on, whether the directory sync below
        // succeeds or not (until it does, a power cut may bring the old one back: it holds
        // every live record too).
        self.file = file;
        self.len = data.len() as u64;
        self.live = moved.into_iter().collect();
        sync_dir(&self.path)
    }
}

/// The committer: one write and at most one sync for everything that arrived meanwhile.
fn commit(mut log: Log, rx: mpsc::Receiver<Op>, disk: Arc<Disk>, flushes: &AtomicU64) {
    let mut group = Vec::new();
    let mut closing = Vec::new();
    let mut together = false;
    loop {
        let first = if disk.health.pending_is_failing() {
            // Failing: the disk is probed while nothing comes, so that `/healthz` recovers.
            match rx.recv_timeout(PROBE_EVERY) {
                Ok(op) => op,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if log.probe().is_ok() {
                        disk.health.pending_recovered();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(op) => op,
                Err(mpsc::RecvError) => break,
            }
        };
        if together {
            std::thread::sleep(COMMIT_DELAY);
        }
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        if group.iter().any(|op| matches!(op, Op::Close(_))) {
            // What was sent before the close is written with it; what comes after finds the
            // channel closed once this thread has ended.
            while let Ok(op) = rx.try_recv() {
                group.push(op);
            }
        }
        let waiting = group.iter().any(|op| matches!(op, Op::Insert { .. } | Op::Close(_)));
        together = group.iter().filter(|op| matches!(op, Op::Insert { .. })).count() > 1;
        let result = log
            .write(&group, waiting)
            .map_err(|e| StoreError::Io(format!("pending log {}: {e}", log.path.display())));
        match &result {
            Ok(()) => {
                flushes.fetch_add(u64::from(waiting), Ordering::Relaxed);
                disk.health.pending_recovered();
                // What is written stays written if compacting fails: only logged.
                if let Err(e) = log.compact_if_due() {
                    tracing::warn!(path = %log.path.display(), error = %e,
                        "could not compact the pending log; it grows until the next try");
                }
            }
            // `/healthz` says the store is failing until the log writes again.
            Err(e) => disk.health.pending_failed(e),
        }
        for op in group.drain(..) {
            match op {
                Op::Insert { done, .. } => {
                    let _ = done.send(result.clone());
                }
                Op::Close(done) => closing.push(done),
                Op::Remove(_) => {}
            }
        }
        if !closing.is_empty() {
            break;
        }
    }
    // The file and the database are let go of before the close is answered: the store can
    // be opened again at once.
    drop((log, disk));
    for done in closing {
        let _ = done.send(());
    }
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

    fn insert(key: u64, call_id: &str) -> (Op, oneshot::Receiver<Result<(), StoreError>>) {
        let (done, rx) = oneshot::channel();
        let entries = vec![(key, one(call_id).encode())];
        (Op::Insert { entries, done }, rx)
    }

    #[tokio::test]
    async fn requests_that_arrive_together_share_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), chrono::FixedOffset::east_opt(0).unwrap()).unwrap();
        let log = Log::open(&dir.path().join(LOG_FILE)).unwrap();
        // 200 requests and some removals before the committer runs: one write, one sync.
        let (tx, rx) = mpsc::channel();
        let mut commits = Vec::new();
        for k in 0..200 {
            let (op, done) = insert(k, &format!("app1#{k}"));
            tx.send(op).unwrap();
            commits.push(done);
        }
        for k in 0..150 {
            tx.send(Op::Remove(k)).unwrap();
        }
        let (close, closed) = oneshot::channel();
        tx.send(Op::Close(close)).unwrap();
        let flushes = AtomicU64::new(0);
        let disk = store.inner.disk.clone();
        std::thread::scope(|s| {
            s.spawn(|| commit(log, rx, disk, &flushes));
        });
        closed.await.unwrap();
        for c in commits {
            c.await.unwrap().unwrap();
        }
        assert_eq!(flushes.load(Ordering::Relaxed), 1, "one sync served every request");
        let left: Vec<u64> = load(dir.path()).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(left, (150..200).collect::<Vec<_>>());
        store.close().await;
    }

    #[tokio::test]
    async fn finished_ones_are_forgotten_and_new_keys_start_above_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let offset = chrono::FixedOffset::east_opt(0).unwrap();
        let store = Store::open(dir.path(), offset).unwrap();
        let ids: Vec<String> = (0..200).map(|i| format!("app1#{i}")).collect();
        let commits: Vec<(Vec<u64>, Commit)> = ids.iter().map(|id| store.pending().insert(vec![one(id)])).collect();
        let mut keys = Vec::new();
        for (k, c) in commits {
            c.await.unwrap().unwrap();
            keys.extend(k);
        }
        assert!(store.pending().flushes() <= 200, "{}", store.pending().flushes());
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
    fn a_frame_cut_short_or_damaged_ends_the_log_and_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut data = Vec::new();
        for k in 0..3 {
            frame(&mut data, INSERT, k, &one(&format!("app1#{k}")).encode());
        }
        frame(&mut data, REMOVE, 1, &[]);
        let whole = data.len();
        frame(&mut data, INSERT, 7, &one("app1#7").encode());
        // The last frame cut short, as a crash in the middle of its write leaves it.
        std::fs::write(&path, &data[..data.len() - 5]).unwrap();
        let left: Vec<(u64, String)> = load(dir.path())
            .unwrap()
            .into_iter()
            .map(|(k, p)| (k, p.unwrap().call_id))
            .collect();
        assert_eq!(left, [(0, "app1#0".to_string()), (2, "app1#2".to_string())]);
        let log = Log::open(&path).unwrap();
        assert_eq!(log.len, whole as u64, "the cut frame is cut off");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
        let aside: Vec<Vec<u8>> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("pending.log.cut-"))
            .map(|e| std::fs::read(e.path()).unwrap())
            .collect();
        assert_eq!(
            aside,
            [data[whole..data.len() - 5].to_vec()],
            "what was cut off is kept aside"
        );
        assert_eq!(log.max_key, Some(2));
        // A damaged byte in a frame ends the log there too.
        let mut damaged = data[..whole].to_vec();
        damaged[HEAD + 20] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_long_log_is_emptied_or_rewritten_with_its_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut log = Log::open(&path).unwrap();
        let body = vec![b'x'; 64 * 1024];
        let big = |call_id: &'static str| {
            PendingRef {
                body: &body,
                ..one(call_id)
            }
            .encode()
        };
        // 100 big records, then all removed: 6.4 MB of nothing live is emptied.
        let mut group: Vec<Op> = (0..100)
            .map(|k| Op::Insert {
                entries: vec![(k, big("app1#a"))],
                done: oneshot::channel().0,
            })
            .collect();
        log.write(&group, true).unwrap();
        group = (0..100).map(Op::Remove).collect();
        log.write(&group, false).unwrap();
        assert!(log.len > EMPTY_AT);
        log.compact_if_due().unwrap();
        assert_eq!((log.len, std::fs::metadata(&path).unwrap().len()), (0, 0));
        // 1,100 more, of which one stays live: past COMPACT_AT, only that one is kept.
        for batch in 0..11u64 {
            let group: Vec<Op> = (0..100)
                .map(|i| Op::Insert {
                    entries: vec![(1000 + batch * 100 + i, big("app1#b"))],
                    done: oneshot::channel().0,
                })
                .collect();
            log.write(&group, true).unwrap();
        }
        let removed: Vec<Op> = (1000..2100).filter(|&k| k != 1500).map(Op::Remove).collect();
        log.write(&removed, false).unwrap();
        assert!(log.len >= COMPACT_AT);
        log.compact_if_due().unwrap();
        assert!(log.len < 70 * 1024, "{}", log.len);
        let left = load(dir.path()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, 1500);
        assert_eq!(left[0].1.as_ref().unwrap().body, body);
        // Writing goes on after the rewrite, in the new file.
        let (op, _done) = insert(3000, "app1#c");
        log.write(&[op], true).unwrap();
        let keys: Vec<u64> = load(dir.path()).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [1500, 3000]);
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
