//! The receiver conformance check (docs/behaviour.md §9, `callback-sim check`): signed
//! callbacks sent to one receiver, each check graded `pass`, `warn` or `fail`.
//!
//! It goes through the simulator's own machinery so that a check and a real delivery never
//! disagree: the dialect's [`Wire`] builds and signs the bodies, the transport's [`attempt`]
//! sends them under the same limits (timeout, `max_response_chars` 1,000), and an answer is
//! classified as a delivery classifies it ([`Wire::check_answer`] for post-send callbacks of a
//! dialect that reads them, [`Wire::pre_send_verdict`] for pre-send answers).
//!
//! Bounded: about a hundred callbacks (`MAX_CALLBACKS` at most), one at a time except the
//! burst; a sample that times out is cut short, so the run ends within the sum of its
//! timeouts. `report` renders the result (a table, JSON, JUnit XML).

pub mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::config::TlsConfig;
use crate::dialect::{self, MessageFacts, Wire};
use crate::domain::{AppId, CallbackUrl, ChatType, Dialect, MessageType, Outcome, RuleKind};
use crate::event::{Event, Stamp};
use crate::ids::Ids;
use crate::message::Message;
use crate::transport::{self, AttemptLimits, AttemptResult, Client, Target};

/// A 200 answer over this many characters is a `violation`, as in deliveries.
pub const MAX_ANSWER_CHARS: usize = 1000;
/// `answer_size` warns over this many characters.
pub const WARN_ANSWER_CHARS: usize = 500;
/// Callbacks sent at once by `burst`.
pub const BURST: usize = 50;
/// Callbacks of the timing sample (`status`, `answer_time`, `answer_size`, `presend_answer`).
pub const SAMPLE: usize = 20;
/// The most callbacks one run sends.
pub const MAX_CALLBACKS: usize = 150;

/// What is checked: one receiver, as a rule of the simulator would call it.
#[derive(Debug, Clone)]
pub struct CheckTarget {
    /// The receiver's URL.
    pub url: CallbackUrl,
    /// The provider whose callbacks it takes.
    pub dialect: Dialect,
    /// Post-send notifications or pre-send verdicts.
    pub kind: RuleKind,
    /// The agora signing secret (empty: callbacks are signed with an empty secret and
    /// `bad_signature` is not run).
    pub secret: String,
    /// The tencent callback token, if the receiver is given one.
    pub token: Option<String>,
    /// How long one answer may take: the provider's (agora 60 s, tencent 2 s, pre-send
    /// 200 ms / 2 s) unless the user or the rule says otherwise.
    pub timeout: Duration,
    /// The app id in agora `callId`s.
    pub app: AppId,
    /// Tencent `SdkAppid`.
    pub sdk_app_id: u64,
    /// The rule's HTTPS options.
    pub tls: TlsConfig,
}

impl CheckTarget {
    /// A target with the provider's timeout for `kind`.
    pub fn new(url: CallbackUrl, dialect: Dialect, kind: RuleKind) -> Self {
        let d = dialect::defaults(dialect);
        Self {
            url,
            dialect,
            kind,
            secret: String::new(),
            token: None,
            timeout: match kind {
                RuleKind::PreSend => d.pre_send_timeout,
                RuleKind::PostSend => d.timeout,
            },
            app: AppId::parse("check").expect("a valid app id"),
            sdk_app_id: 1_400_000_000,
            tls: TlsConfig::default(),
        }
    }
}

/// A check's grade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    /// Ready.
    Pass,
    /// Works, but close to a limit or lax.
    Warn,
    /// The provider would fail (and, agora post-send, ban) this receiver.
    Fail,
}

impl Grade {
    /// `pass`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::Pass => "pass",
            Grade::Warn => "warn",
            Grade::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    /// The check: `reachable`, `status`, …
    pub name: &'static str,
    /// Its grade.
    pub result: Grade,
    /// One line: what was seen, and for a warn or fail what to change in the receiver.
    pub detail: String,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct CheckRun {
    /// What was checked.
    pub target: CheckTarget,
    /// The checks, in the order of docs/behaviour.md §9.
    pub checks: Vec<CheckResult>,
    /// Callbacks sent.
    pub requests: usize,
    /// How long it took.
    pub elapsed: Duration,
}

impl CheckRun {
    /// How many checks got `grade`.
    pub fn count(&self, grade: Grade) -> usize {
        self.checks.iter().filter(|c| c.result == grade).count()
    }
}

/// The checks could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckError(pub String);

/// One attempt and how long it took.
struct Answer {
    result: AttemptResult,
    elapsed: Duration,
}

struct Runner<'a> {
    target: &'a CheckTarget,
    wire: Arc<dyn Wire>,
    client: Client,
    ids: Ids,
    sent: usize,
    progress: &'a (dyn Fn(&str) + Sync),
}

/// Runs every check against `target`; `progress` is told the name of each check as it starts.
pub async fn run(target: &CheckTarget, progress: &(dyn Fn(&str) + Sync)) -> Result<CheckRun, CheckError> {
    let started = Instant::now();
    let client = transport::build_client(BURST + 4, &target.tls).map_err(|e| CheckError(e.to_string()))?;
    let now = now_ms();
    let mut r = Runner {
        target,
        wire: dialect::wire(
            target.dialect,
            dialect::WireSettings {
                sdk_app_id: target.sdk_app_id,
                appkey: format!("sim#{}", target.app.as_str()),
                token: target.token.clone(),
                ..Default::default()
            },
        ),
        client,
        ids: Ids::new(now),
        sent: 0,
        progress,
    };
    let checks = r.all().await;
    Ok(CheckRun {
        target: target.clone(),
        checks,
        requests: r.sent,
        elapsed: started.elapsed(),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn pass(name: &'static str, detail: impl Into<String>) -> CheckResult {
    grade(name, Grade::Pass, detail)
}

fn grade(name: &'static str, result: Grade, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name,
        result,
        detail: detail.into(),
    }
}

/// A short description of a failed answer.
fn what(r: &AttemptResult) -> String {
    match (r.outcome, &r.detail) {
        (Outcome::Status, _) => format!("HTTP {}", r.status.unwrap_or_default()),
        (o, Some(d)) => format!("{o}: {d}"),
        (o, None) => o.to_string(),
    }
}

impl Runner<'_> {
    async fn all(&mut self) -> Vec<CheckResult> {
        let mut checks = Vec::new();
        (self.progress)("reachable");
        let first = self.send(&text("probe"), None).await;
        if matches!(first.result.outcome, Outcome::Dns | Outcome::Connect | Outcome::Tls) {
            checks.push(grade(
                "reachable",
                Grade::Fail,
                format!(
                    "no answer from {}: {}; start the receiver (and wait until it listens) or fix the URL",
                    self.target.url,
                    what(&first.result)
                ),
            ));
            return checks;
        }
        checks.push(pass(
            "reachable",
            format!("answered in {} ms", first.elapsed.as_millis()),
        ));

        (self.progress)("status");
        let mut sample = vec![first];
        while sample.len() < SAMPLE && sample.iter().all(|a| a.result.outcome != Outcome::Timeout) {
            let a = self.send(&text(&format!("sample {}", sample.len())), None).await;
            sample.push(a);
        }
        checks.push(self.status(&sample));
        checks.push(self.answer_time(&sample));
        checks.push(self.answer_size(&sample));
        (self.progress)("catalog");
        checks.push(self.catalog().await);
        (self.progress)("duplicate");
        checks.push(self.duplicate().await);
        (self.progress)("burst");
        checks.push(self.burst().await);
        (self.progress)("bad_signature");
        checks.push(self.bad_signature().await);
        checks.push(self.presend_answer(&sample));
        checks
    }

    /// Sends one callback (the first the message makes) with a new callId, signed with the
    /// target's secret unless `secret` says otherwise; classified as a delivery would be.
    async fn send(&mut self, msg: &Message, secret: Option<&str>) -> Answer {
        let call_id = self.ids.call_id(&self.target.app);
        let (body, query) = self.encode_message(msg, &call_id, secret.unwrap_or(&self.target.secret));
        self.post(body, query.as_deref()).await
    }

    fn encode_message(&self, msg: &Message, call_id: &str, secret: &str) -> (Bytes, Option<Arc<str>>) {
        let msg_id = self.ids.msg_id();
        let facts = MessageFacts {
            msg,
            msg_id: &msg_id,
            timestamp: now_ms(),
            seq: self.ids.seq(),
            random: self.ids.random(),
        };
        let prepared = self.wire.message(facts, self.target.kind);
        let to = prepared.recipients()[0];
        let e = prepared.encode(to, call_id, secret);
        (e.body, e.query)
    }

    async fn post(&mut self, body: Bytes, query: Option<&str>) -> Answer {
        self.sent += 1;
        debug_assert!(self.sent <= MAX_CALLBACKS, "a check run stays bounded");
        // Signed as it is sent, as deliveries are (tencent with a token).
        let query = self.wire.sign_query(query, now_ms());
        post(&self.client, self.target, &*self.wire, body, query.as_deref()).await
    }

    fn status(&self, sample: &[Answer]) -> CheckResult {
        let bad: Vec<&Answer> = sample
            .iter()
            // Every failed delivery but a timeout (`answer_time` grades those): a non-200, an
            // unusable body, and a connection refused, reset or broken off mid-answer.
            .filter(|a| {
                !matches!(
                    a.result.outcome,
                    Outcome::Delivered | Outcome::Violation | Outcome::Timeout
                )
            })
            .collect();
        let Some(first) = bad.first() else {
            return pass("status", format!("{} answers, all 200", sample.len()));
        };
        let fix = match (self.target.dialect, first.result.outcome) {
            (Dialect::Tencent, Outcome::BadResponse) => {
                "answer 200 with a JSON body {\"ActionStatus\":\"OK\",\"ErrorCode\":0,\"ErrorInfo\":\"\"}"
            }
            (_, Outcome::BadResponse) => "answer 200 with the JSON body the provider reads",
            (_, Outcome::Status) => "answer exactly 200 (not 201/204, no redirect): anything else is a failed delivery",
            _ => {
                "keep the connection open until the answer is complete: a refused, reset or broken-off answer is a failed delivery"
            }
        };
        grade(
            "status",
            Grade::Fail,
            format!(
                "{} of {} answers were not usable ({}); {fix}",
                bad.len(),
                sample.len(),
                what(&first.result)
            ),
        )
    }

    fn answer_time(&self, sample: &[Answer]) -> CheckResult {
        let limit = self.target.timeout;
        let mut times: Vec<Duration> = sample.iter().map(|a| a.elapsed).collect();
        times.sort();
        let timed_out = sample.iter().any(|a| a.result.outcome == Outcome::Timeout);
        let p99 = times[(times.len() * 99).div_ceil(100).saturating_sub(1)];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        if timed_out || p99 > limit {
            grade(
                "answer_time",
                Grade::Fail,
                format!(
                    "p99 {:.0} ms is over the {:.0} ms timeout{}; answer first and do slow work after",
                    ms(p99),
                    ms(limit),
                    if timed_out { " (an answer timed out)" } else { "" }
                ),
            )
        } else if p99 > limit / 4 {
            grade(
                "answer_time",
                Grade::Warn,
                format!(
                    "p99 {:.0} ms is over a quarter of the {:.0} ms timeout; answer first and do slow work after",
                    ms(p99),
                    ms(limit)
                ),
            )
        } else {
            pass(
                "answer_time",
                format!("p99 {:.1} ms (timeout {:.0} ms)", ms(p99), ms(limit)),
            )
        }
    }

    fn answer_size(&self, sample: &[Answer]) -> CheckResult {
        if self.target.dialect != Dialect::Agora {
            return pass("answer_size", "not graded for tencent (its answers are read as JSON)");
        }
        let chars = |a: &Answer| {
            a.result
                .body
                .as_deref()
                .map_or(0, |b| String::from_utf8_lossy(b).chars().count())
        };
        let longest = sample.iter().map(chars).max().unwrap_or(0);
        if sample.iter().any(|a| a.result.outcome == Outcome::Violation) || longest > MAX_ANSWER_CHARS {
            grade(
                "answer_size",
                Grade::Fail,
                format!(
                    "an answer is over {MAX_ANSWER_CHARS} characters, which the provider counts as a failure; \
                     answer an empty or short body"
                ),
            )
        } else if longest > WARN_ANSWER_CHARS {
            grade(
                "answer_size",
                Grade::Warn,
                format!(
                    "the longest answer is {longest} characters, over {WARN_ANSWER_CHARS} (the limit is \
                     {MAX_ANSWER_CHARS}); answer an empty or short body"
                ),
            )
        } else {
            pass("answer_size", format!("the longest answer is {longest} characters"))
        }
    }

    async fn catalog(&mut self) -> CheckResult {
        let mut failed = Vec::new();
        let mut sent = 0;
        for &chat in ChatType::ALL {
            for &t in MessageType::ALL {
                let mut msg = Message::new("alice", "bob", t, body(t)).with_chat_type(chat);
                if chat != ChatType::Chat {
                    msg = msg.with_offline(["carol"]);
                }
                let msg_id = self.ids.msg_id();
                let facts = MessageFacts {
                    msg: &msg,
                    msg_id: &msg_id,
                    timestamp: now_ms(),
                    seq: self.ids.seq(),
                    random: self.ids.random(),
                };
                let encoded: Vec<_> = {
                    let prepared = self.wire.message(facts, self.target.kind);
                    prepared
                        .recipients()
                        .iter()
                        // A callId per callback, as the simulator gives each recipient's.
                        .map(|&to| {
                            let call_id = self.ids.call_id(&self.target.app);
                            (to.event_type, prepared.encode(to, &call_id, &self.target.secret))
                        })
                        .collect()
                };
                for (event_type, e) in encoded {
                    sent += 1;
                    let a = self.post(e.body, e.query.as_deref()).await;
                    if a.result.outcome != Outcome::Delivered {
                        failed.push(format!("{event_type} {t}/{chat}: {}", what(&a.result)));
                    }
                }
            }
        }
        if self.target.kind == RuleKind::PostSend {
            for event in events(self.target.dialect) {
                let e = {
                    let stamp = Stamp {
                        msg_id: self.ids.msg_id(),
                        timestamp: now_ms(),
                        seq: self.ids.seq(),
                        random: self.ids.random(),
                    };
                    let prepared = self.wire.event(&event, &stamp);
                    let to = prepared.recipients()[0];
                    let call_id = self.ids.call_id(&self.target.app);
                    prepared.encode(to, &call_id, &self.target.secret)
                };
                sent += 1;
                let a = self.post(e.body, e.query.as_deref()).await;
                if a.result.outcome != Outcome::Delivered {
                    failed.push(format!("{}: {}", event.event_type(), what(&a.result)));
                }
            }
        }
        if failed.is_empty() {
            pass(
                "catalog",
                format!(
                    "{sent} callbacks (every message type and chat type{}), all accepted",
                    if self.target.kind == RuleKind::PostSend {
                        ", and the events"
                    } else {
                        ""
                    }
                ),
            )
        } else {
            let shown = failed.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
            let more = if failed.len() > 5 {
                format!(" and {} more", failed.len() - 5)
            } else {
                String::new()
            };
            grade(
                "catalog",
                Grade::Fail,
                format!(
                    "{} of {sent} not accepted: {shown}{more}; answer 200 to every callback, even of a type you ignore",
                    failed.len()
                ),
            )
        }
    }

    async fn duplicate(&mut self) -> CheckResult {
        let call_id = self.ids.call_id(&self.target.app);
        let (body, query) = self.encode_message(&text("sent twice"), &call_id, &self.target.secret.clone());
        let first = self.post(body.clone(), query.as_deref()).await;
        let second = self.post(body, query.as_deref()).await;
        match (first.result.outcome, second.result.outcome) {
            (Outcome::Delivered, Outcome::Delivered) => pass(
                "duplicate",
                "a retry (same callId and signature) was answered 200 both times",
            ),
            (a, b) => grade(
                "duplicate",
                Grade::Fail,
                format!(
                    "a callback sent twice got {a} then {b} ({}); the provider retries: answer 200 to a repeat \
                     and ignore it by its callId",
                    what(if a != Outcome::Delivered {
                        &first.result
                    } else {
                        &second.result
                    })
                ),
            ),
        }
    }

    async fn burst(&mut self) -> CheckResult {
        let mut bodies = Vec::with_capacity(BURST);
        for i in 0..BURST {
            let call_id = self.ids.call_id(&self.target.app);
            bodies.push(self.encode_message(&text(&format!("burst {i}")), &call_id, &self.target.secret.clone()));
        }
        self.sent += BURST;
        debug_assert!(self.sent <= MAX_CALLBACKS, "a check run stays bounded");
        let (client, target, wire) = (&self.client, self.target, &*self.wire);
        let answers = futures_util::future::join_all(bodies.into_iter().map(|(body, query)| async move {
            let query = wire.sign_query(query.as_deref(), now_ms());
            post(client, target, wire, body, query.as_deref()).await
        }))
        .await;
        let failed: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.result.outcome != Outcome::Delivered)
            .collect();
        match failed.first() {
            None => pass("burst", format!("{BURST} concurrent callbacks, all accepted")),
            Some(a) => grade(
                "burst",
                Grade::Fail,
                format!(
                    "{} of {BURST} concurrent callbacks failed ({}); take callbacks concurrently (more workers, \
                     a bigger backlog)",
                    failed.len(),
                    what(&a.result)
                ),
            ),
        }
    }

    async fn bad_signature(&mut self) -> CheckResult {
        let a = match (self.target.dialect, &self.target.token) {
            (Dialect::Tencent, None) => return pass("bad_signature", "not run: no --token"),
            (Dialect::Tencent, Some(token)) => {
                // A URL signed with another token: Sign does not match SHA-256(token + RequestTime).
                let call_id = self.ids.call_id(&self.target.app);
                let (body, query) = self.encode_message(&text("wrongly signed"), &call_id, "");
                let wrong = crate::dialect::tencent::signed_query(
                    query.as_deref().unwrap_or_default(),
                    &format!("{token}-wrong"),
                    now_ms(),
                );
                self.sent += 1;
                post(&self.client, self.target, &*self.wire, body, Some(&wrong)).await
            }
            (Dialect::Agora, _) if self.target.secret.is_empty() => {
                return pass("bad_signature", "not run: no --secret");
            }
            (Dialect::Agora, _) => {
                let wrong = format!("{}-wrong", self.target.secret);
                self.send(&text("wrongly signed"), Some(&wrong)).await
            }
        };
        // Tencent reads an answer's ErrorCode: a refusal may be a 200 with ErrorCode ≠ 0.
        let refused_in_body = self.target.dialect == Dialect::Tencent
            && a.result.outcome == Outcome::Delivered
            && crate::dialect::tencent::parse_answer(a.result.body.as_deref().unwrap_or_default())
                .is_some_and(|answer| answer.error_code != 0);
        if a.result.outcome == Outcome::Delivered && !refused_in_body {
            let fix = match self.target.dialect {
                Dialect::Tencent => {
                    "a wrongly signed callback was accepted; verify Sign = SHA-256(token + RequestTime) and refuse a \
                     mismatch (and a RequestTime more than a minute old)"
                }
                Dialect::Agora => {
                    "a wrongly signed callback was answered 200; verify security = MD5(callId + secret + timestamp) \
                     and refuse a mismatch"
                }
            };
            grade("bad_signature", Grade::Warn, fix)
        } else {
            pass(
                "bad_signature",
                format!("a wrongly signed callback was refused ({})", what(&a.result)),
            )
        }
    }

    fn presend_answer(&self, sample: &[Answer]) -> CheckResult {
        if self.target.kind != RuleKind::PreSend {
            return pass("presend_answer", "not run: post_send");
        }
        let Some(a) = sample.iter().find(|a| a.result.status == Some(200)) else {
            return grade(
                "presend_answer",
                Grade::Fail,
                "no 200 answer to read (see status and answer_time)",
            );
        };
        let body = a.result.body.as_deref().unwrap_or_default();
        if self.target.dialect == Dialect::Agora
            && let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body)
            && o.get("valid").is_some_and(Value::is_boolean)
            && o.get("code").is_some_and(|c| !c.is_string() && !c.is_null())
        {
            return grade(
                "presend_answer",
                Grade::Warn,
                "`code` is not a string, which makes the provider ignore the answer; send code as a string",
            );
        }
        match self.wire.pre_send_verdict(body, MessageType::Txt, "check") {
            Err(why) => {
                let shape = match self.target.dialect {
                    Dialect::Agora => "{\"valid\": true|false, \"code\": \"…\"}",
                    Dialect::Tencent => "{\"ActionStatus\":\"OK\",\"ErrorCode\":0,\"ErrorInfo\":\"\"}",
                };
                grade("presend_answer", Grade::Fail, format!("{why}; answer {shape}"))
            }
            Ok(v) if !v.warnings.is_empty() => grade("presend_answer", Grade::Fail, v.warnings.join("; ")),
            Ok(v) => pass("presend_answer", format!("a usable verdict (allow: {})", v.allow)),
        }
    }
}

/// POSTs one callback and classifies the answer as a delivery of the target's kind would.
async fn post(client: &Client, target: &CheckTarget, wire: &dyn Wire, body: Bytes, query: Option<&str>) -> Answer {
    let limits = AttemptLimits {
        timeout: target.timeout,
        max_chars: MAX_ANSWER_CHARS,
        keep_body: true,
    };
    let uri = query.map(|q| target.url.uri_with_query(Some(q)));
    let started = Instant::now();
    let mut result = transport::attempt(client, Target::new(&target.url, uri.as_ref()), body, limits).await;
    let elapsed = started.elapsed();
    // Tencent reads every answer, post-send and pre-send alike, and one without an integer
    // `ErrorCode` is a `bad_response` either way; agora reads only pre-send answers
    // (`presend_answer` grades them).
    if wire.reads_answers()
        && result.outcome == Outcome::Delivered
        && let Err(why) = wire.check_answer(result.body.as_deref().unwrap_or_default())
    {
        result.outcome = Outcome::BadResponse;
        result.detail = Some(why);
    }
    Answer { result, elapsed }
}

fn text(s: &str) -> Message {
    Message::text("alice", "bob", s)
}

/// A body of each message type, as a client would send it.
fn body(t: MessageType) -> Map<String, Value> {
    let v = match t {
        MessageType::Txt => json!({ "msg": "hello" }),
        MessageType::Img => {
            json!({ "url": "https://cdn.example.com/a.jpg", "filename": "a.jpg", "size": { "width": 640, "height": 480 } })
        }
        MessageType::Audio => json!({ "url": "https://cdn.example.com/a.amr", "filename": "a.amr", "length": 3 }),
        MessageType::Video => json!({ "url": "https://cdn.example.com/a.mp4", "filename": "a.mp4", "length": 10 }),
        MessageType::File => json!({ "url": "https://cdn.example.com/a.pdf", "filename": "a.pdf" }),
        MessageType::Loc => json!({ "lat": 39.9, "lng": 116.4, "addr": "Beijing" }),
        MessageType::Cmd => json!({ "action": "typing" }),
        MessageType::Custom => json!({ "customEvent": "gift", "customExts": { "count": 1 } }),
    };
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The events post-send rules get besides messages: the catalog's example of each event of
/// the dialect.
fn events(dialect: crate::domain::Dialect) -> Vec<Event> {
    crate::event::catalog::all()
        .filter(|d| d.in_dialect(dialect))
        .filter_map(|d| {
            let fields = serde_json::from_str(d.example).ok()?;
            Event::new(d.name, fields).ok()
        })
        .collect()
}
