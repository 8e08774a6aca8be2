//! The console's memory (docs/behaviour.md §12): per app, the most recent callbacks with their
//! attempts and the exact request, in a ring of `server.history_per_app` entries (the oldest
//! go first), and the notes a live stream follows — a callback at its final outcome, a rule
//! whose state changed, a bucket that changed.
//!
//! Recording is on the delivery path, so it is cheap: an entry takes the callback's own body
//! bytes (shared, not copied), its rule (an `Arc`) and its attempts; the ring is one short
//! lock per callback; a note is broadcast only while someone watches. What an entry shows —
//! the URL with its query, the headers — is made when it is read.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::ser::SerializeMap;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::clock::rfc3339;
use crate::domain::{AppId, CallbackUrl, EventType, FinalOutcome, Outcome, RuleKind, RuleName};
use crate::runtime::{Apps, RuleRuntime};

/// How many characters of an answer an attempt shows (docs/behaviour.md §12).
pub const ANSWER_CHARS: usize = 1_000;
/// Notes a watcher may fall behind by before it is told it missed some.
const NOTES: usize = 1_024;

/// One attempt of a callback, as the history keeps it.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    /// When it started, Unix ms.
    pub at_ms: u64,
    /// How long it took.
    pub duration: Duration,
    /// Its outcome.
    pub outcome: Outcome,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// The answer's body as read (a 200's, within the answer limit).
    pub answer: Option<Bytes>,
    /// Why it failed, in words.
    pub detail: Option<String>,
}

/// What a delivery writes down for the history while it runs (docs/behaviour.md §12).
#[derive(Debug, Default)]
pub struct Trail {
    /// Each attempt, in order.
    pub attempts: Vec<AttemptLog>,
    /// The query string as sent, when the provider signed it at send time (tencent with a
    /// token); otherwise the callback's own.
    pub sent_query: Option<Arc<str>>,
}

/// One callback in the history.
#[derive(Debug)]
pub struct Entry {
    /// Its rule: name, kind, URL (shown masked).
    pub rule: Arc<RuleRuntime>,
    /// `callId`.
    pub call_id: Box<str>,
    /// `chat`, `chat_offline` or an event type.
    pub event_type: EventType,
    /// The callback's `to`.
    pub to: Box<str>,
    /// Its final outcome.
    pub outcome: FinalOutcome,
    /// The last attempt's outcome (`banned`, `shutdown` when it was not attempted).
    pub last_attempt: Outcome,
    /// When it was accepted, Unix ms.
    pub created_at_ms: u64,
    /// Acceptance to final outcome.
    pub latency_ms: f64,
    /// Every attempt, in order (none when it was not attempted: banned, stopping).
    pub attempts: Vec<AttemptLog>,
    /// The exact bytes sent.
    pub body: Bytes,
    /// The query string appended to the URL (tencent), as the store keeps it: unsigned.
    pub query: Option<Arc<str>>,
    /// The query string as sent, when it was signed at send time.
    pub sent_query: Option<Arc<str>>,
    /// A resend's URL when it was not the rule's.
    pub target: Option<Box<CallbackUrl>>,
    /// Sent again from the console (`callbacks/resend`), not by a delivery.
    pub resend: bool,
}

impl Entry {
    /// Where it went (the rule's URL, or a resend's target).
    pub fn url(&self) -> &CallbackUrl {
        self.target.as_deref().unwrap_or(&self.rule.config.url)
    }

    /// The URL of the request as shown: the password masked, the query string appended.
    pub fn shown_url(&self) -> String {
        let base = self.url().to_string();
        match self
            .sent_query
            .as_deref()
            .or(self.query.as_deref())
            .filter(|q| !q.is_empty())
        {
            None => base,
            Some(q) if base.contains('?') => format!("{base}&{q}"),
            Some(q) => format!("{base}?{q}"),
        }
    }

    /// The request's headers as an HTTP/1.1 request carries them; a password of the URL shows
    /// as `Basic ***`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let url = self.url();
        let mut h = Vec::with_capacity(6);
        if let Some(host) = crate::domain::http1_host(url.as_uri()) {
            h.push(("Host", host.to_str().unwrap_or_default().to_string()));
        }
        h.push(("Content-Type", "application/json".into()));
        h.push(("User-Agent", crate::transport::USER_AGENT.into()));
        h.push(("Accept", "*/*".into()));
        if url.authorization().is_some() {
            h.push(("Authorization", "Basic ***".into()));
        }
        h.push(("Content-Length", self.body.len().to_string()));
        h
    }

    /// The entry as `callbacks/history` and the stream show it.
    pub fn view(&self) -> EntryView<'_> {
        EntryView {
            call_id: &self.call_id,
            rule: &self.rule.config.name,
            kind: self.rule.config.kind,
            event: self.event_type,
            to: &self.to,
            outcome: self.outcome,
            last_attempt: self.last_attempt,
            created_at: rfc3339(self.created_at_ms),
            latency_ms: self.latency_ms,
            resend: self.resend,
            attempts: self
                .attempts
                .iter()
                .map(|a| AttemptView {
                    at: rfc3339(a.at_ms),
                    duration_ms: (a.duration.as_secs_f64() * 1e6).round() / 1e3,
                    outcome: a.outcome,
                    status: a.status,
                    answer: a
                        .answer
                        .as_deref()
                        .map(|b| String::from_utf8_lossy(b).chars().take(ANSWER_CHARS).collect()),
                    detail: a.detail.as_deref(),
                })
                .collect(),
            request: RequestView {
                method: "POST",
                url: self.shown_url(),
                headers: Headers(self.headers()),
                body: String::from_utf8_lossy(&self.body),
            },
        }
    }
}

/// One callback of `callbacks/history` (docs/behaviour.md §12).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntryView<'a> {
    /// `callId`.
    #[serde(rename = "callId")]
    call_id: &'a str,
    /// The rule's name.
    #[schema(value_type = String)]
    rule: &'a RuleName,
    /// `post_send` (pre-send calls are not kept).
    kind: RuleKind,
    /// `eventType` (agora) or the event behind the tencent command: `chat`, `chat_offline`, …
    event: EventType,
    /// The callback's recipient.
    to: &'a str,
    /// The final outcome (`delivered`, `violation`, `stored`, `dropped`).
    outcome: FinalOutcome,
    /// The last attempt's outcome (`banned` or `shutdown` when it was not attempted).
    last_attempt: Outcome,
    /// When it was accepted, RFC 3339.
    created_at: String,
    /// Acceptance to final outcome, ms.
    latency_ms: f64,
    /// Sent again with `callbacks/resend`.
    resend: bool,
    /// Each attempt, in order.
    attempts: Vec<AttemptView<'a>>,
    /// The exact request.
    request: RequestView<'a>,
}

/// One attempt of a callback.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView<'a> {
    /// When it started, RFC 3339.
    at: String,
    /// How long it took, ms.
    duration_ms: f64,
    /// Its outcome (docs/behaviour.md §5).
    outcome: Outcome,
    /// The HTTP status, if an answer came.
    status: Option<u16>,
    /// The first 1,000 characters of a 200 answer (other answers are not read).
    answer: Option<String>,
    /// Why it failed, in words.
    detail: Option<&'a str>,
}

/// The request of a callback, as sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequestView<'a> {
    /// Always `POST`.
    method: &'static str,
    /// The URL with its query string; a password shows as `***`.
    url: String,
    /// The headers, in the order sent.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    headers: Headers,
    /// The exact body bytes, as a string.
    #[schema(value_type = String)]
    body: std::borrow::Cow<'a, str>,
}

/// Headers as a JSON object, in order.
#[derive(Debug)]
struct Headers(Vec<(&'static str, String)>);

impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// What a live stream hears.
#[derive(Debug, Clone)]
pub enum Note {
    /// A callback reached its final outcome.
    Callback(Arc<Entry>),
    /// A rule's state changed (a ban started or ended, a reset).
    Rule(RuleName),
    /// A bucket of the store changed.
    Store,
}

/// Which entries a listing wants.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Only this rule's.
    pub rule: Option<String>,
    /// Only this event type.
    pub event: Option<EventType>,
    /// Only this final outcome.
    pub outcome: Option<FinalOutcome>,
}

impl Filter {
    fn matches(&self, e: &Entry) -> bool {
        self.rule.as_deref().is_none_or(|r| e.rule.config.name.as_str() == r)
            && self.event.is_none_or(|t| e.event_type == t)
            && self.outcome.is_none_or(|o| e.outcome == o)
    }
}

/// One app's history and its watchers.
#[derive(Debug)]
pub struct AppHistory {
    cap: usize,
    ring: Mutex<VecDeque<Arc<Entry>>>,
    notes: broadcast::Sender<Note>,
    watchers: Arc<AtomicUsize>,
}

/// A live stream's subscription: its notes, and its place among the watchers.
#[derive(Debug)]
pub struct Watch {
    /// The notes, from the moment of subscribing.
    pub notes: broadcast::Receiver<Note>,
    watchers: Arc<AtomicUsize>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppHistory {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            ring: Mutex::new(VecDeque::with_capacity(cap.min(4096))),
            notes: broadcast::channel(NOTES).0,
            watchers: Arc::default(),
        }
    }

    /// Whether callbacks are kept (`server.history_per_app` above 0).
    pub fn keeps(&self) -> bool {
        self.cap > 0
    }

    /// Keeps `entry` (dropping the oldest beyond the bound) and tells the watchers.
    pub fn record(&self, entry: Entry) {
        if self.cap == 0 {
            return;
        }
        let entry = Arc::new(entry);
        let old = {
            let mut ring = self.ring.lock().expect("history lock");
            let old = if ring.len() >= self.cap { ring.pop_front() } else { None };
            ring.push_back(entry.clone());
            old
        };
        // The oldest entry (and its body, if nothing else holds it) is freed outside the lock.
        drop(old);
        self.note(|| Note::Callback(entry));
    }

    /// Tells the watchers that a rule's state changed.
    pub fn rule_changed(&self, rule: &RuleName) {
        self.note(|| Note::Rule(rule.clone()));
    }

    /// Tells the watchers that a bucket changed.
    pub fn store_changed(&self) {
        self.note(|| Note::Store);
    }

    fn note(&self, note: impl FnOnce() -> Note) {
        if self.watchers.load(Ordering::Relaxed) > 0 {
            let _ = self.notes.send(note());
        }
    }

    /// Follows the notes from now on.
    pub fn watch(&self) -> Watch {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watch {
            notes: self.notes.subscribe(),
            watchers: self.watchers.clone(),
        }
    }

    /// Up to `limit` entries that match `filter`, newest first, older than the newest entry
    /// with `callId` `before` when given. `None` when `before` is not in the history.
    pub fn list(&self, filter: &Filter, limit: usize, before: Option<&str>) -> Option<Vec<Arc<Entry>>> {
        let ring = self.ring.lock().expect("history lock");
        let mut newest_first = ring.iter().rev();
        if let Some(b) = before {
            newest_first.by_ref().find(|e| &*e.call_id == b)?;
        }
        Some(
            newest_first
                .filter(|e| filter.matches(e))
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// The newest entry of `call_id`.
    pub fn find(&self, call_id: &str) -> Option<Arc<Entry>> {
        let ring = self.ring.lock().expect("history lock");
        ring.iter().rev().find(|e| &*e.call_id == call_id).cloned()
    }

    /// Entries kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.ring.lock().expect("history lock").len()
    }
}

/// Every app's history.
#[derive(Debug)]
pub struct History {
    by_app: HashMap<AppId, Arc<AppHistory>>,
    /// By [`RuleRuntime::index`]: the history of the rule's app, without hashing its id.
    by_rule: Vec<Arc<AppHistory>>,
    closed: CancellationToken,
}

impl History {
    /// A history of `per_app` callbacks for each app.
    pub fn new(apps: &Apps, per_app: usize) -> Self {
        let by_app: HashMap<AppId, Arc<AppHistory>> = apps
            .iter()
            .map(|a| (a.config.id.clone(), Arc::new(AppHistory::new(per_app))))
            .collect();
        let mut by_rule: Vec<Option<Arc<AppHistory>>> = vec![None; apps.rule_count()];
        for rule in apps.rules() {
            by_rule[rule.index] = Some(by_app[&rule.app].clone());
        }
        Self {
            by_rule: by_rule.into_iter().map(|h| h.expect("every rule has an app")).collect(),
            by_app,
            closed: CancellationToken::new(),
        }
    }

    /// The history of app `id`.
    pub fn app(&self, id: &str) -> Option<&Arc<AppHistory>> {
        self.by_app.get(id)
    }

    /// The history of `rule`'s app.
    pub fn of(&self, rule: &RuleRuntime) -> &Arc<AppHistory> {
        &self.by_rule[rule.index]
    }

    /// Ends every live stream (the simulator stops).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Resolves once the history is closed.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.closed.clone().cancelled_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppBuilder, Config, RuleBuilder};

    fn apps() -> Apps {
        let config = Config::builder()
            .app(
                AppBuilder::new("a", "t")
                    .rule(RuleBuilder::post_send("r1", "http://u:pw@127.0.0.1:9/cb?x=1", "s"))
                    .rule(RuleBuilder::post_send("r2", "https://example.com/cb", "s")),
            )
            .build()
            .unwrap();
        Apps::build(&config, &Default::default()).unwrap()
    }

    pub(crate) fn entry(rule: &Arc<RuleRuntime>, n: usize, body: Bytes) -> Entry {
        Entry {
            rule: rule.clone(),
            call_id: format!("a#{n:036}").into(),
            event_type: EventType::Chat,
            to: "u2".into(),
            outcome: FinalOutcome::Delivered,
            last_attempt: Outcome::Delivered,
            created_at_ms: 1_700_000_000_000,
            latency_ms: 1.5,
            attempts: vec![AttemptLog {
                at_ms: 1_700_000_000_000,
                duration: Duration::from_micros(1500),
                outcome: Outcome::Delivered,
                status: Some(200),
                answer: Some(Bytes::new()),
                detail: None,
            }],
            body,
            query: None,
            sent_query: None,
            target: None,
            resend: false,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_lists_them_newest_first() {
        let apps = apps();
        let h = History::new(&apps, 3);
        let r1 = apps.rules().next().unwrap().clone();
        let r2 = apps.rules().nth(1).unwrap().clone();
        let app = h.app("a").unwrap();
        for n in 0..5 {
            let rule = if n % 2 == 0 { &r1 } else { &r2 };
            app.record(entry(rule, n, Bytes::from_static(b"{}")));
        }
        assert_eq!(app.len(), 3);
        let ids = |v: Vec<Arc<Entry>>| {
            v.iter()
                .map(|e| e.call_id[2..].trim_start_matches('0').to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(app.list(&Filter::default(), 10, None).unwrap()), ["4", "3", "2"]);
        let only_r1 = Filter {
            rule: Some("r1".into()),
            ..Default::default()
        };
        assert_eq!(ids(app.list(&only_r1, 10, None).unwrap()), ["4", "2"]);
        let before3 = format!("a#{:036}", 3);
        assert_eq!(ids(app.list(&Filter::default(), 1, Some(&before3)).unwrap()), ["2"]);
        assert!(app.list(&Filter::default(), 1, Some("a#gone")).is_none());
        assert!(app.find(&before3).is_some());
        assert!(h.app("b").is_none());
        assert!(Arc::ptr_eq(h.of(&r2), app));
    }

    #[test]
    fn an_entry_shows_its_request_with_the_password_masked() {
        let apps = apps();
        let rule = apps.rules().next().unwrap().clone();
        let mut e = entry(&rule, 1, Bytes::from_static(br#"{"k":1}"#));
        e.query = Some("SdkAppid=1&CallbackCommand=C2C".into());
        let v = serde_json::to_value(e.view()).unwrap();
        assert_eq!(
            v["request"]["url"],
            "http://u:***@127.0.0.1:9/cb?x=1&SdkAppid=1&CallbackCommand=C2C"
        );
        assert_eq!(v["request"]["headers"]["Authorization"], "Basic ***");
        assert_eq!(v["request"]["headers"]["Host"], "127.0.0.1:9");
        assert_eq!(v["request"]["headers"]["Content-Length"], "7");
        assert_eq!(v["request"]["body"], r#"{"k":1}"#);
        assert_eq!(v["attempts"][0]["duration_ms"], 1.5);
        assert_eq!(v["callId"], format!("a#{:036}", 1));
        assert!(!v.to_string().contains("pw"), "{v}");
    }

    /// Counts the bytes this thread holds on the heap, to measure what the history costs.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        pub struct Counting;

        thread_local! {
            pub static HELD: Cell<isize> = const { Cell::new(0) };
        }

        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                let _ = HELD.try_with(|h| h.set(h.get() + l.size() as isize));
                unsafe { System.alloc(l) }
            }
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                let _ = HELD.try_with(|h| h.set(h.get() - l.size() as isize));
                unsafe { System.dealloc(p, l) }
            }
        }

        #[global_allocator]
        static COUNTING: Counting = Counting;

        pub fn held() -> isize {
            HELD.with(Cell::get)
        }
    }

    /// The figure of docs/behaviour.md §12: a full history of the default size, with bodies
    /// of the benchmark's size built as deliveries build them (run with --nocapture to see it).
    #[test]
    fn a_full_history_of_the_default_size_stays_under_two_megabytes_per_app() {
        use crate::dialect::agora::Agora;
        use crate::dialect::{MessageFacts, Wire};
        let apps = apps();
        let rule = apps.rules().next().unwrap().clone();
        let h = History::new(&apps, crate::config::defaults::HISTORY_PER_APP as usize);
        let app = h.app("a").unwrap().clone();
        let mut msg = crate::message::Message::text("user_123", "user_456", "a plausible chat message");
        msg.ext.insert("k".into(), serde_json::json!("v"));
        let before = counting::held();
        let mut body_len = 0;
        for n in 0..(2 * HISTORY_DEFAULT) {
            let facts = MessageFacts {
                msg: &msg,
                msg_id: "1796178798788000",
                timestamp: 1_796_178_803_969,
                seq: 1,
                random: 2,
            };
            let prepared = Agora::default().message(facts, RuleKind::PostSend);
            let call_id = format!("demoapp#{:08x}-a947-421d-878b-2f055f445d08", n);
            let body = prepared.encode(prepared.recipients()[0], &call_id, "secret").body;
            drop(prepared);
            body_len = body.len();
            let mut e = entry(&rule, n, body);
            e.call_id = call_id.into();
            let mut trail = Vec::new();
            trail.reserve_exact(2);
            trail.push(e.attempts.pop().unwrap());
            e.attempts = trail;
            app.record(e);
        }
        let held = counting::held() - before;
        eprintln!(
            "history of {HISTORY_DEFAULT} callbacks with {body_len}-byte bodies: {held} bytes ({} per callback)",
            held / HISTORY_DEFAULT as isize
        );
        assert!((320..=360).contains(&body_len), "the benchmark's body size: {body_len}");
        assert!(held < 2_000_000, "{held} bytes");
    }

    const HISTORY_DEFAULT: usize = crate::config::defaults::HISTORY_PER_APP as usize;

    #[tokio::test]
    async fn watchers_hear_notes_and_nobody_pays_for_them_when_none_watch() {
        let apps = apps();
        let h = History::new(&apps, 2);
        let app = h.app("a").unwrap();
        let rule = apps.rules().next().unwrap().clone();
        app.record(entry(&rule, 1, Bytes::new()));
        assert_eq!(app.notes.len(), 0, "no watcher: nothing broadcast");
        let mut w = app.watch();
        app.record(entry(&rule, 2, Bytes::new()));
        app.rule_changed(&rule.config.name);
        app.store_changed();
        assert!(matches!(w.notes.recv().await.unwrap(), Note::Callback(e) if e.call_id.ends_with('2')));
        assert!(matches!(w.notes.recv().await.unwrap(), Note::Rule(r) if r.as_str() == "r1"));
        assert!(matches!(w.notes.recv().await.unwrap(), Note::Store));
        drop(w);
        assert_eq!(app.watchers.load(Ordering::Relaxed), 0);
    }
}
