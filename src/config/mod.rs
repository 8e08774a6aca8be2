//! `config.toml` (`docs/behaviour.md §2`): the typed, validated settings and how they are read.
//!
//! Reading happens in two steps. `serde` reads the file into the `raw` structs, which reject
//! unknown keys; the `validate` step then turns them into a [`Config`], checking every value
//! and filling in the defaults (those of `defaults`, some of which depend on the dialect).
//! [`ConfigBuilder`] fills the same raw structs in code and goes through the same validation.
//! Every error names the file, the key path and what to fix.
//!
//! A `Config` that exists is valid: it is made only by [`Config::load`], [`Config::parse`] and
//! [`ConfigBuilder::build`], and outside this crate its parts are read through accessors, never
//! written.
//!
//! This file is one thing, the typed settings: each part of the file as a struct, with its
//! documented fields and their read accessors; that is what makes it long.

mod builder;
pub(crate) mod defaults;
mod raw;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;

pub use builder::{AppBuilder, ConfigBuilder, RuleBuilder};

use crate::domain::{AppId, CallbackUrl, ChatType, Dialect, EventType, MessageType, OnFailure, RuleKind, RuleName};

/// A config problem: where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {key}: {reason}")]
pub struct ConfigError {
    /// The file, or the origin given to [`Config::parse`] (`"<built in code>"` for
    /// [`Config::builder`]).
    pub origin: String,
    /// Dotted key path, e.g. `apps[0].rules[1].url`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

/// A string that must never be printed: rule secrets and app tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret read from the config or given in code.
    pub fn new(s: &str) -> Self {
        Self(s.into())
    }

    /// The secret itself, for signing and comparing. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`: where the REST API listens and where the store lives.
    pub(crate) server: ServerConfig,
    /// `[delivery]`: how many callbacks are in flight and queued.
    pub(crate) delivery: DeliveryConfig,
    /// `[ban]`: the failure window and ban escalation (`docs/behaviour.md §6`).
    pub(crate) ban: BanConfig,
    /// `[store]`: retention and time zone of the exception store (`docs/behaviour.md §7`).
    pub(crate) store: StoreConfig,
    /// `[api]`: the per-app REST rate limit.
    pub(crate) api: ApiConfig,
    /// `[[apps]]`: the tenants, in file order.
    pub(crate) apps: Vec<AppConfig>,
}

impl Config {
    /// A builder for configs in code (tests need no TOML file); see [`ConfigBuilder`].
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            key: "(file)".into(),
            reason: format!("cannot read the config file: {e}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &origin, &base)
    }

    /// Parses config text. `origin` names it in errors; relative file paths in it
    /// (`data_dir`, `ca_file`, …) are resolved against `base_dir`.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError {
            origin: origin.into(),
            key: "(syntax)".into(),
            reason: one_line(&e.to_string()),
        })?;
        let file: raw::File = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError {
                origin: origin.into(),
                key: if key == "." { "(top level)".into() } else { key },
                reason: one_line(&e.into_inner().to_string()),
            }
        })?;
        validate::Validator { origin, base_dir }.config(file)
    }

    /// `[server]`.
    pub fn server(&self) -> &ServerConfig {
        &self.server
    }

    /// `[delivery]`.
    pub fn delivery(&self) -> &DeliveryConfig {
        &self.delivery
    }

    /// `[ban]`.
    pub fn ban(&self) -> &BanConfig {
        &self.ban
    }

    /// `[store]`.
    pub fn store(&self) -> &StoreConfig {
        &self.store
    }

    /// `[api]`.
    pub fn api(&self) -> &ApiConfig {
        &self.api
    }

    /// `[[apps]]`, in file order; there is at least one.
    pub fn apps(&self) -> &[AppConfig] {
        &self.apps
    }

    /// The app with this id, if there is one.
    pub fn app(&self, id: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.id.as_str() == id)
    }
}

/// Folds toml's multi-line error rendering into one readable line. toml quotes the broken
/// source line, which may hold a URL with a password: every URL in it is shown masked.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .flat_map(str::split_whitespace)
        .map(|word| match word.contains("://") {
            true => {
                let url = word.trim_matches(|c| matches!(c, '"' | '\'' | ',' | '[' | ']'));
                word.replace(url, &crate::domain::mask_password(url))
            }
            false => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `[server]` (`docs/behaviour.md §2`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `server.listen`: the REST API's address (default `127.0.0.1:8080`); port 0 picks a free
    /// port, which [`Server::addr`](crate::Server::addr) reports. The harness moves it to port 0.
    pub(crate) listen: SocketAddr,
    /// `server.data_dir`: the directory of the sled exception store (default `./data`),
    /// resolved against the config file's directory. The harness moves it to a temp dir.
    pub(crate) data_dir: PathBuf,
    /// `server.max_body_bytes`: the largest REST request body in bytes (default 1 MiB);
    /// larger bodies get 413.
    pub(crate) max_body_bytes: usize,
    /// `server.history_per_app`: callbacks kept in memory per app for the console and
    /// `callbacks/history` (default 2,000; 0 keeps none).
    pub(crate) history_per_app: usize,
}

impl ServerConfig {
    /// `server.listen`: the address the REST API binds (port 0: a free port, chosen at start).
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// `server.data_dir`: where the exception store lives, resolved against the config
    /// file's directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `server.max_body_bytes`: the largest REST request body accepted.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// `server.history_per_app`: callbacks kept in memory per app (0: none).
    pub fn history_per_app(&self) -> usize {
        self.history_per_app
    }
}

/// `[delivery]` (`docs/behaviour.md §2`).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// `delivery.concurrency`: callbacks in flight at once, all apps and rules together
    /// (default 512).
    pub(crate) concurrency: usize,
    /// `delivery.queue_capacity`: callbacks accepted but not yet attempted (default 100,000);
    /// beyond it, ingestion answers 429.
    pub(crate) queue_capacity: usize,
    /// `delivery.rule_queue_capacity`: callbacks of one rule accepted but not yet attempted
    /// (default 10,000); beyond it, the rule's new callbacks are stored at once as `overflow`
    /// (`docs/behaviour.md §3`).
    pub(crate) rule_queue_capacity: usize,
    /// `delivery.durable`: a message is answered only once its callbacks are on disk, and
    /// what was accepted and not finished is queued again at start (`docs/behaviour.md §7`).
    /// Default true in a file, false in code.
    pub(crate) durable: bool,
    /// `delivery.max_response_chars`: a 200 answer longer than this many characters is a
    /// `violation` (default 1,000; `docs/behaviour.md §5`). Bodies are read only up to this
    /// plus one.
    pub(crate) max_response_chars: usize,
}

impl DeliveryConfig {
    /// `delivery.concurrency`: callbacks in flight at once, all apps and rules together.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// `delivery.queue_capacity`: callbacks accepted but not yet attempted.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// `delivery.rule_queue_capacity`: callbacks of one rule accepted but not yet attempted.
    pub fn rule_queue_capacity(&self) -> usize {
        self.rule_queue_capacity
    }

    /// `delivery.durable`: whether accepted callbacks are on disk before the answer.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// `delivery.max_response_chars`: the longest 200 answer that is not a `violation`.
    pub fn max_response_chars(&self) -> usize {
        self.max_response_chars
    }
}

/// `[ban]` (`docs/behaviour.md §6`), with durations as [`Duration`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanConfig {
    /// `ban.failure_threshold`: this many failures within `window` ban the rule (default 90).
    pub(crate) failure_threshold: u32,
    /// `ban.window_secs`: the sliding failure window (default 30 s).
    pub(crate) window: Duration,
    /// `ban.base_secs`: a ban lasts `level * base` (default 300 s).
    pub(crate) base: Duration,
    /// `ban.max_level`: the cap on the ban level (default 5).
    pub(crate) max_level: u32,
    /// `ban.level_memory_secs`: bans started within this span count toward the level
    /// (default 24 h).
    pub(crate) level_memory: Duration,
}

impl BanConfig {
    /// `ban.failure_threshold`: this many failures within [`window`](Self::window) ban the rule.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold
    }

    /// `ban.window_secs`: the sliding failure window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// `ban.base_secs`: a ban lasts its level times this.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// `ban.max_level`: the cap on the ban level.
    pub fn max_level(&self) -> u32 {
        self.max_level
    }

    /// `ban.level_memory_secs`: bans started within this span count toward the level.
    pub fn level_memory(&self) -> Duration {
        self.level_memory
    }
}

/// `[store]` (`docs/behaviour.md §7`).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `store.retention_secs`: buckets whose date key is older than this are purged
    /// (default 3 days).
    pub(crate) retention: Duration,
    /// `store.utc_offset`: the time zone of the `YYYYMMDDHHmm` date keys (default `+00:00`).
    pub(crate) utc_offset: FixedOffset,
}

impl StoreConfig {
    /// `store.retention_secs`: buckets whose date key is older than this are purged.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// `store.utc_offset`: the time zone of the date keys.
    pub fn utc_offset(&self) -> FixedOffset {
        self.utc_offset
    }
}

/// `[api]` (`docs/behaviour.md §2`): the per-app REST rate limit; beyond it, 429.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `api.rate_per_sec`: sustained REST requests per app per second (default 100).
    pub(crate) rate_per_sec: u32,
    /// `api.burst`: the most requests an app may make in one burst before the rate applies
    /// (default 200).
    pub(crate) burst: u32,
}

impl ApiConfig {
    /// `api.rate_per_sec`: sustained REST requests per app per second.
    pub fn rate_per_sec(&self) -> u32 {
        self.rate_per_sec
    }

    /// `api.burst`: the most requests an app may make at once before the rate applies.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// One tenant.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// `apps[].id`: the `app_id` in REST paths and in agora `callId`s (`{app_id}#{uuid}`).
    pub(crate) id: AppId,
    /// `apps[].token`: the Bearer token of this app's REST API.
    pub(crate) token: Secret,
    /// `apps[].dialect`: the wire format of its callbacks (default `agora`).
    pub(crate) dialect: Dialect,
    /// `apps[].sdk_app_id`: tencent only, the `SdkAppid` query parameter
    /// (default 1400000000).
    pub(crate) sdk_app_id: u64,
    /// `apps[].appkey`: the `{org}#{app}` agora event bodies carry (default `sim#{id}`).
    pub(crate) appkey: String,
    /// `apps[].group_events = "legacy"` (agora): group events in the older `muc` shape.
    pub(crate) legacy_groups: bool,
    /// `apps[].tencent_token` (tencent): signs every callback URL (`Sign`, `RequestTime`).
    pub(crate) tencent_token: Option<Secret>,
    /// `apps[].exception_store`: `false` drops failed callbacks (final outcome `dropped`) and
    /// makes the storage API answer 403 (default `true`).
    pub(crate) exception_store: bool,
    /// `apps[].max_rules`: the most rules the app may have, both kinds together (default 4).
    pub(crate) max_rules: usize,
    /// `apps[].timeout_secs`, `retries` and `bans`, with the dialect's defaults filled in.
    pub(crate) policy: DeliveryPolicy,
    /// `[[apps.rules]]`, in file order.
    pub(crate) rules: Vec<RuleConfig>,
}

impl AppConfig {
    /// `apps[].id`.
    pub fn id(&self) -> &AppId {
        &self.id
    }

    /// `apps[].token`: the Bearer token of this app's REST API.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// `apps[].dialect`: the wire format of its callbacks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// `apps[].sdk_app_id`: the tencent `SdkAppid` query parameter.
    pub fn sdk_app_id(&self) -> u64 {
        self.sdk_app_id
    }

    /// `apps[].appkey`: the `{org}#{app}` of agora event bodies.
    pub fn appkey(&self) -> &str {
        &self.appkey
    }

    /// `apps[].group_events = "legacy"`: agora group events in the older `muc` shape.
    pub fn legacy_groups(&self) -> bool {
        self.legacy_groups
    }

    /// `apps[].tencent_token`: the token that signs tencent callback URLs.
    pub fn tencent_token(&self) -> Option<&Secret> {
        self.tencent_token.as_ref()
    }

    /// `apps[].exception_store`: whether failed callbacks are kept for replay.
    pub fn exception_store(&self) -> bool {
        self.exception_store
    }

    /// `apps[].max_rules`: the most rules the app may have.
    pub fn max_rules(&self) -> usize {
        self.max_rules
    }

    /// How its post-send callbacks are attempted: `timeout_secs`, `retries`, `bans`.
    pub fn policy(&self) -> DeliveryPolicy {
        self.policy
    }

    /// `[[apps.rules]]`, in file order.
    pub fn rules(&self) -> &[RuleConfig] {
        &self.rules
    }

    /// The rule with this name, if there is one.
    pub fn rule(&self, name: &str) -> Option<&RuleConfig> {
        self.rules.iter().find(|r| r.name.as_str() == name)
    }
}

/// How post-send callbacks of an app are attempted (`docs/behaviour.md §2`, defaults by
/// dialect).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveryPolicy {
    /// `timeout_secs`: how long one attempt may take, up to the complete response
    /// (agora 60 s, tencent 2 s).
    pub(crate) timeout: Duration,
    /// `retries`: immediate retries after a failed attempt, so at most `1 + retries`
    /// attempts (agora 1, tencent 0).
    pub(crate) retries: u32,
    /// `bans`: whether failures feed the rule's ban window (agora `true`, tencent `false`).
    pub(crate) bans: bool,
}

impl DeliveryPolicy {
    /// The provider's policy: agora waits 60 s, retries once at once and bans; tencent waits
    /// 2 s, never retries and never bans.
    pub fn default_for(dialect: Dialect) -> Self {
        let d = crate::dialect::defaults(dialect);
        Self {
            timeout: d.timeout,
            retries: d.retries,
            bans: d.bans,
        }
    }

    /// `timeout_secs`: how long one attempt may take, up to the complete response.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `retries`: immediate retries after a failed attempt.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// `bans`: whether failures feed the rule's ban window.
    pub fn bans(&self) -> bool {
        self.bans
    }
}

/// A set of vocabulary values where "empty" in the file means "all".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Filter(u32);

impl Filter {
    /// Every value allowed: what an empty or absent list in the file means.
    pub(crate) const ALL: Filter = Filter(u32::MAX);

    fn from_indices(indices: impl IntoIterator<Item = usize>) -> Self {
        let mask = indices.into_iter().fold(0u32, |m, i| m | (1 << i));
        if mask == 0 { Self::ALL } else { Filter(mask) }
    }

    /// Only these values (by vocabulary index); none given means all.
    pub(crate) fn only(indices: impl IntoIterator<Item = usize>) -> Self {
        Self::from_indices(indices)
    }

    /// Whether the value with this vocabulary index (e.g. `ChatType::index`) passes.
    pub(crate) fn allows(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }
}

/// One callback rule.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// `rules[].name`: unique within the app; the `rule` field of callback reports and
    /// stored items.
    pub(crate) name: RuleName,
    /// `rules[].url`: where its callbacks are POSTed (unless a replay gives a `targetUrl`).
    pub(crate) url: CallbackUrl,
    /// `rules[].secret`: the agora signing secret (`security` = MD5 of callId + secret +
    /// timestamp); empty for tencent rules, which are not signed.
    pub(crate) secret: Secret,
    /// `rules[].kind`: `post_send` or `pre_send`.
    pub(crate) kind: RuleKind,
    /// `rules[].enabled`: a disabled rule makes no callbacks and shows state `disabled`.
    pub(crate) enabled: bool,
    /// `rules[].chat_types`: the chat types it fires for (empty list = all).
    pub(crate) chat_types: Filter,
    /// `rules[].message_types`: the message types it fires for (empty list = all).
    pub(crate) message_types: Filter,
    /// `rules[].event_types`: post-send only, the event types it fires for (empty list = all).
    pub(crate) event_types: Filter,
    /// `rules[].include_rest`: post-send only; `false` ignores messages whose `source` is `rest`.
    pub(crate) include_rest: bool,
    /// `rules[].timeout_ms`, `on_failure`, `notify_sender`: used by pre-send rules only.
    pub(crate) pre_send: PreSendConfig,
    /// `rules[].ca_file`, `client_cert`, `client_key`: HTTPS options.
    pub(crate) tls: TlsConfig,
}

impl RuleConfig {
    /// `rules[].name`: unique within the app.
    pub fn name(&self) -> &RuleName {
        &self.name
    }

    /// `rules[].url`: where its callbacks are POSTed.
    pub fn url(&self) -> &CallbackUrl {
        &self.url
    }

    /// `rules[].secret`: the agora signing secret (empty for tencent rules).
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// `rules[].kind`: post-send or pre-send.
    pub fn kind(&self) -> RuleKind {
        self.kind
    }

    /// `rules[].enabled`: a disabled rule makes no callbacks.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `rules[].include_rest`: whether messages sent through the provider's REST API
    /// (`source = rest`) make callbacks (post-send rules).
    pub fn include_rest(&self) -> bool {
        self.include_rest
    }

    /// `rules[].timeout_ms`, `on_failure` and `notify_sender` (pre-send rules).
    pub fn pre_send(&self) -> &PreSendConfig {
        &self.pre_send
    }

    /// `rules[].ca_file`, `client_cert` and `client_key`.
    pub fn tls(&self) -> &TlsConfig {
        &self.tls
    }

    /// Whether `chat_types` lets a message of this chat type through.
    pub fn allows_chat_type(&self, t: ChatType) -> bool {
        self.chat_types.allows(t.index())
    }

    /// Whether `message_types` lets a message of this type through.
    pub fn allows_message_type(&self, t: MessageType) -> bool {
        self.message_types.allows(t.index())
    }

    /// Whether `event_types` lets a callback of this event type through.
    pub fn allows_event_type(&self, t: EventType) -> bool {
        self.event_types.allows(t.index())
    }
}

/// Pre-send settings (`docs/behaviour.md §4.2`); post-send rules carry the defaults and do not
/// use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreSendConfig {
    /// `rules[].timeout_ms`: how long to wait for the verdict (agora 200 ms, tencent 2000 ms).
    pub(crate) timeout: Duration,
    /// `rules[].on_failure`: what a timeout, non-200 or malformed answer means: `pass`
    /// (default) or `block`.
    pub(crate) on_failure: OnFailure,
    /// `rules[].notify_sender`: whether a blocked message's sender is told the rule's `code`
    /// (the `code` field of the messages answer; default `false`).
    pub(crate) notify_sender: bool,
}

impl PreSendConfig {
    /// `rules[].timeout_ms`: how long to wait for the verdict.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `rules[].on_failure`: what a callback without a usable answer means.
    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    /// `rules[].notify_sender`: whether a blocked message's sender is told the rule's `code`.
    pub fn notify_sender(&self) -> bool {
        self.notify_sender
    }
}

/// Per-rule HTTPS options; paths are resolved against the config file's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `ca_file`: an extra trusted root in PEM, for self-signed receivers.
    pub(crate) ca_file: Option<PathBuf>,
    /// `client_cert`: the simulator's PEM certificate chain for mutual TLS (with `client_key`).
    pub(crate) client_cert: Option<PathBuf>,
    /// `client_key`: the PEM private key of `client_cert`.
    pub(crate) client_key: Option<PathBuf>,
}

impl TlsConfig {
    /// `ca_file`: an extra trusted root in PEM.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// `client_cert`: the simulator's certificate chain for mutual TLS.
    pub fn client_cert(&self) -> Option<&Path> {
        self.client_cert.as_deref()
    }

    /// `client_key`: the private key of [`client_cert`](Self::client_cert).
    pub fn client_key(&self) -> Option<&Path> {
        self.client_key.as_deref()
    }

    /// True when no option is set, so the rule can share the default HTTP client.
    pub(crate) fn is_default(&self) -> bool {
        *self == TlsConfig::default()
    }
}

/// What the unit tests of this module and its children share.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use super::{Config, ConfigError};

    /// One app with one post-send rule; everything else at the defaults.
    pub(crate) const MINIMAL: &str = r#"
[[apps]]
id = "demo"
token = "t"
  [[apps.rules]]
  name = "r1"
  url = "http://127.0.0.1:9000/cb"
  secret = "s"
"#;

    /// Parses `text` as a file `test.toml` in the current directory.
    pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("."))
    }

    /// The error `text` is rejected with.
    pub(crate) fn err(text: &str) -> ConfigError {
        parse(text).expect_err("config should be rejected")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{MINIMAL, err, parse};

    #[test]
    fn unknown_keys_name_their_path() {
        let e = err(&MINIMAL.replace("secret = \"s\"", "secret = \"s\"\nsecrte = \"x\""));
        assert_eq!(e.origin, "test.toml");
        assert!(e.key.starts_with("apps[0].rules[0]"), "{e}");
        assert!(e.reason.contains("secrte"), "{e}");
        let e = err(&format!("[server]\nlisten_on = \"x\"\n{MINIMAL}"));
        assert!(e.to_string().contains("listen_on"), "{e}");
    }

    #[test]
    fn type_errors_name_the_key() {
        let e = err(&format!("[delivery]\nconcurrency = \"many\"\n{MINIMAL}"));
        assert_eq!(e.key, "delivery.concurrency", "{e}");
        let e = err(&format!("[ban]\nmax_level = -1\n{MINIMAL}"));
        assert_eq!(e.key, "ban.max_level", "{e}");
    }

    #[test]
    fn syntax_errors_are_one_line() {
        let e = err("[server\nlisten = 1");
        assert_eq!(e.key, "(syntax)");
        assert!(!e.reason.contains('\n'));
    }

    #[test]
    fn a_syntax_error_does_not_show_a_password_it_quotes() {
        let e = err("[[apps]]\nid = \"a\"\n[[apps.rules]]\nurl = \"http://alice:Secret_pw9@h/cb\" x\n");
        assert_eq!(e.key, "(syntax)");
        assert!(e.reason.contains("alice:***@h"), "{e}");
        assert!(!e.reason.contains("Secret_pw9"), "{e}");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let c = parse(MINIMAL).unwrap();
        let dump = format!("{c:?}");
        assert!(!dump.contains("secret: Secret(\"s\")"));
        assert!(dump.contains("Secret(***)"));
    }

    #[test]
    fn accessors_read_the_validated_values() {
        let c = parse(MINIMAL).unwrap();
        let app = c.app("demo").expect("the app");
        assert_eq!(app.id().as_str(), "demo");
        assert_eq!(app.token().expose(), "t");
        let rule = app.rule("r1").expect("the rule");
        assert_eq!(rule.url().to_string(), "http://127.0.0.1:9000/cb");
        assert_eq!(rule.secret().expose(), "s");
        assert!(rule.tls().ca_file().is_none());
        assert!(c.app("nope").is_none() && app.rule("nope").is_none());
    }
}
