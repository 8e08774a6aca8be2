//! The open sled database, and what happens when it fails (docs/behaviour.md §7).
//!
//! sled keeps the first I/O error it meets (a full disk, a failed write) and fails every later
//! operation with it: a database that failed once stays failed until it is opened again. So
//! after a failure the writer drops its trees ([`Disk::invalidate`]) and opens the database
//! again, backing off, until a write succeeds ([`Disk::reopen_if_due`]); meanwhile writes fail
//! at once and [`Health`] says the store is failing. Readers take the current trees
//! ([`Disk::trees`]) for as long as they need them: the old database is released once the last
//! of them lets go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::format::decode_bucket;
use super::{Bucket, StoreError};

/// sled's page cache (its default is 1 GiB): the store is written far more than it is read.
const CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// The first wait before opening a failed database again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two attempts to open a failed database again: opening reads the
/// whole log, so a disk that stays full is not read over and over.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// How long opening waits for a lock on the database to be released.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// A store failure is logged at `error` at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The database and its trees, replaced as a whole when the store opens it again.
#[derive(Debug)]
pub(super) struct Trees {
    pub(super) db: sled::Db,
    /// Stored callbacks and bucket counts.
    pub(super) items: sled::Tree,
    /// Rules' ban records.
    pub(super) bans: sled::Tree,
    /// What a probe writes while the store is failing.
    pub(super) health: sled::Tree,
}

impl Trees {
    /// Opens (or creates) the database at `path`. A database sled cannot make sense of is an
    /// error, even where sled would panic.
    ///
    /// sled releases the lock of a database this process closed from its own threads, a moment
    /// after the last handle is dropped: a lock held is waited for up to [`LOCK_WAIT`] before it
    /// is an error (another process holding it fails after that wait).
    pub(super) fn open(path: &Path) -> Result<Self, sled::Error> {
        let config = sled::Config::new().path(path).cache_capacity(CACHE_BYTES);
        let open = || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
                .map_err(|_| sled::Error::Unsupported("the database is corrupt (sled could not read it)".into()))?
        };
        let give_up = Instant::now() + LOCK_WAIT;
        let db = loop {
            match open() {
                // sled says so only in its message.
                Err(sled::Error::Io(e))
                    if e.to_string().starts_with("could not acquire lock") && Instant::now() < give_up =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        Ok(Self {
            items: db.open_tree("callbacks")?,
            bans: db.open_tree("bans")?,
            health: db.open_tree("health")?,
            db,
        })
    }

    /// Every bucket's item count, as saved.
    pub(super) fn counts(&self) -> Result<BTreeMap<Bucket, u64>, sled::Error> {
        let mut counts = BTreeMap::new();
        for entry in self.items.scan_prefix(b"b") {
            let (k, v) = entry?;
            if let (Some(bucket), Ok(n)) = (decode_bucket(&k), <[u8; 8]>::try_from(v.as_ref())) {
                counts.insert(bucket, u64::from_be_bytes(n));
            }
        }
        Ok(counts)
    }
}

/// The store's database, opened again after a failure.
#[derive(Debug)]
pub(super) struct Disk {
    /// `data_dir/store.sled`.
    path: PathBuf,
    /// `None` after a failure, until the database is open again.
    trees: RwLock<Option<Arc<Trees>>>,
    /// When to try opening it again, and how long to wait after that.
    retry: Mutex<(Instant, Duration)>,
    pub(super) health: Health,
}

impl Disk {
    pub(super) fn new(path: PathBuf, trees: Trees) -> Self {
        Self {
            path,
            trees: RwLock::new(Some(Arc::new(trees))),
            retry: Mutex::new((Instant::now(), FIRST_BACKOFF)),
            health: Health::default(),
        }
    }

    /// The open trees, or the reason there are none (the store failed and is not open again yet).
    pub(super) fn trees(&self) -> Result<Arc<Trees>, StoreError> {
        self.trees.read().expect("trees lock").clone().ok_or_else(|| {
            StoreError::Io(format!(
                "the exception store failed and is not open again yet ({})",
                self.health.last_error()
            ))
        })
    }

    /// Drops the database after a failure: it is opened again by the next
    /// [`reopen_if_due`](Self::reopen_if_due) after a backoff.
    pub(super) fn invalidate(&self) {
        let old = self.trees.write().expect("trees lock").take();
        if old.is_some() {
            let mut retry = self.retry.lock().expect("retry lock");
            *retry = (Instant::now() + retry.1, (retry.1 * 2).min(MAX_BACKOFF));
        }
    }

    /// After a failure, once the backoff has passed, opens the database again; answers its
    /// bucket counts (to replace the ones in memory) when it did. The old database must have
    /// been released by every reader first (sled locks the directory): until then this fails
    /// and is tried again later.
    pub(super) fn reopen_if_due(&self) -> Option<BTreeMap<Bucket, u64>> {
        if self.trees.read().expect("trees lock").is_some() {
            return None;
        }
        {
            let mut retry = self.retry.lock().expect("retry lock");
            if Instant::now() < retry.0 {
                return None;
            }
            *retry = (Instant::now() + retry.1, (retry.1 * 2).min(MAX_BACKOFF));
        }
        let opened = Trees::open(&self.path).and_then(|t| t.counts().map(|c| (t, c)));
        match opened {
            Ok((trees, counts)) => {
                tracing::info!(path = %self.path.display(), "exception store opened again after a failure");
                *self.trees.write().expect("trees lock") = Some(Arc::new(trees));
                Some(counts)
            }
            Err(e) => {
                self.health.failed(&StoreError::from(e));
                None
            }
        }
    }

    /// A write succeeded: the backoff starts small again.
    pub(super) fn succeeded(&self) {
        if self.health.recovered() {
            *self.retry.lock().expect("retry lock") = (Instant::now(), FIRST_BACKOFF);
        }
    }
}

/// Whether the store's last write failed, and the rate-limited error log.
#[derive(Debug, Default)]
pub(super) struct Health {
    failing: AtomicBool,
    /// Durable accept's log failed its last write (store/pending.rs): cleared by its next.
    pending_failing: AtomicBool,
    /// Failures not logged since the last `error` line.
    unlogged: AtomicU64,
    log: Mutex<HealthLog>,
}

#[derive(Debug, Default)]
struct HealthLog {
    logged_at: Option<Instant>,
    last_error: String,
}

impl Health {
    /// True from a failed write until the next one that succeeds.
    pub(super) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire) || self.pending_failing.load(Ordering::Acquire)
    }

    /// The last failure's message.
    pub(super) fn last_error(&self) -> String {
        self.log.lock().expect("health lock").last_error.clone()
    }

    /// A write (or an attempt to open the database again) failed: logged at `error` once a
    /// minute at most, with the number of failures since the last line.
    pub(super) fn failed(&self, e: &StoreError) {
        self.failing.store(true, Ordering::Release);
        self.log_failure(
            e,
            "exception store write failed: callbacks that needed it are dropped; retrying (logged once a minute at most)",
        );
    }

    /// Durable accept's log could not write (or sync) a group: failing until it can again.
    pub(super) fn pending_failed(&self, e: &StoreError) {
        self.pending_failing.store(true, Ordering::Release);
        self.log_failure(
            e,
            "durable accept's log write failed: the requests are answered with a warning that their callbacks \
             are not on disk (they are still delivered); retrying with the next request (logged once a minute at most)",
        );
    }

    /// Whether durable accept's log failed its last write.
    pub(super) fn pending_is_failing(&self) -> bool {
        self.pending_failing.load(Ordering::Acquire)
    }

    /// Durable accept's log wrote a group.
    pub(super) fn pending_recovered(&self) {
        if self.pending_failing.swap(false, Ordering::AcqRel) {
            tracing::warn!("durable accept's log writes succeed again");
        }
    }

    /// Logs a failure at `error`, once a minute at most, with the number not logged since.
    fn log_failure(&self, e: &StoreError, what: &'static str) {
        let mut log = self.log.lock().expect("health lock");
        log.last_error = e.to_string();
        let due = log.logged_at.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            log.logged_at = Some(Instant::now());
            let more = self.unlogged.swap(0, Ordering::AcqRel);
            tracing::error!(error = %e, failures_not_logged = more, "{what}");
        } else {
            self.unlogged.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A write succeeded; true if the store was failing until now (logged).
    fn recovered(&self) -> bool {
        let was = self.failing.swap(false, Ordering::AcqRel);
        if was {
            let mut log = self.log.lock().expect("health lock");
            tracing::warn!(previous_error = %log.last_error, "exception store writes succeed again");
            log.logged_at = None;
            self.unlogged.store(0, Ordering::Release);
        }
        was
    }
}
