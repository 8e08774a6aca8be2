//! `config.toml` (SPEC §2): the raw file format, and its validation into typed settings.
//!
//! Parsing happens in two steps. `serde` reads the file into `raw` structs that reject unknown
//! keys; `validate` then turns them into [`Config`], checking every value and filling the
//! dialect-dependent defaults. Every error names the file, the key path and what to fix.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;

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
    pub server: ServerConfig,
    /// `[delivery]`: how many callbacks are in flight and queued.
    pub delivery: DeliveryConfig,
    /// `[ban]`: the failure window and ban escalation (SPEC §6).
    pub ban: BanConfig,
    /// `[store]`: retention and time zone of the exception store (SPEC §7).
    pub store: StoreConfig,
    /// `[api]`: the per-app REST rate limit.
    pub api: ApiConfig,
    /// `[[apps]]`: the tenants, in file order.
    pub apps: Vec<AppConfig>,
}

/// `[server]` (SPEC §2).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `server.listen`: the REST API's address (default `127.0.0.1:8080`); port 0 picks a free
    /// port, which [`Server::addr`](crate::server::Server::addr) reports.
    pub listen: SocketAddr,
    /// `server.data_dir`: the directory of the sled exception store (default `./data`),
    /// resolved against the config file's directory.
    pub data_dir: PathBuf,
    /// `server.max_body_bytes`: the largest REST request body in bytes (default 1 MiB);
    /// larger bodies get 413.
    pub max_body_bytes: usize,
}

/// `[delivery]` (SPEC §2).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// `delivery.concurrency`: callbacks in flight at once, all apps and rules together
    /// (default 512).
    pub concurrency: usize,
    /// `delivery.queue_capacity`: callbacks accepted but not yet attempted (default 100,000);
    /// beyond it, ingestion answers 429.
    pub queue_capacity: usize,
    /// `delivery.max_response_chars`: a 200 answer longer than this many characters is a
    /// `violation` (default 1,000; SPEC §5). Bodies are read only up to this plus one.
    pub max_response_chars: usize,
}

/// `[ban]` (SPEC §6), with durations as [`Duration`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanConfig {
    /// `ban.failure_threshold`: this many failures within `window` ban the rule (default 90).
    pub failure_threshold: u32,
    /// `ban.window_secs`: the sliding failure window (default 30 s).
    pub window: Duration,
    /// `ban.base_secs`: a ban lasts `level * base` (default 300 s).
    pub base: Duration,
    /// `ban.max_level`: the cap on the ban level (default 5).
    pub max_level: u32,
    /// `ban.level_memory_secs`: bans started within this span count toward the level
    /// (default 24 h).
    pub level_memory: Duration,
}

/// `[store]` (SPEC §7).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `store.retention_secs`: buckets whose date key is older than this are purged
    /// (default 3 days).
    pub retention: Duration,
    /// `store.utc_offset`: the time zone of the `YYYYMMDDHHmm` date keys (default `+00:00`).
    pub utc_offset: FixedOffset,
}

/// `[api]` (SPEC §2): the per-app REST rate limit; beyond it, 429.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `api.rate_per_sec`: sustained REST requests per app per second (default 100).
    pub rate_per_sec: u32,
    /// `api.burst`: the most requests an app may make in one burst before the rate applies
    /// (default 200).
    pub burst: u32,
}

/// One tenant.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// `apps[].id`: the `app_id` in REST paths and in agora `callId`s (`{app_id}#{uuid}`).
    pub id: AppId,
    /// `apps[].token`: the Bearer token of this app's REST API.
    pub token: Secret,
    /// `apps[].dialect`: the wire format of its callbacks (default `agora`).
    pub dialect: Dialect,
    /// `apps[].sdk_app_id`: tencent only, the `SdkAppid` query parameter
    /// (default 1400000000).
    pub sdk_app_id: u64,
    /// `apps[].exception_store`: `false` drops failed callbacks (final outcome `dropped`) and
    /// makes the storage API answer 403 (default `true`).
    pub exception_store: bool,
    /// `apps[].max_rules`: the most rules the app may have, both kinds together (default 4).
    pub max_rules: usize,
    /// `apps[].timeout_secs`, `retries` and `bans`, with the dialect's defaults filled in.
    pub policy: DeliveryPolicy,
    /// `[[apps.rules]]`, in file order.
    pub rules: Vec<RuleConfig>,
}

/// How post-send callbacks of an app are attempted (SPEC §2, defaults by dialect).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveryPolicy {
    /// `timeout_secs`: how long one attempt may take, up to the complete response
    /// (agora 60 s, tencent 2 s).
    pub timeout: Duration,
    /// `retries`: immediate retries after a failed attempt, so at most `1 + retries`
    /// attempts (agora 1, tencent 0).
    pub retries: u32,
    /// `bans`: whether failures feed the rule's ban window (agora `true`, tencent `false`).
    pub bans: bool,
}

impl DeliveryPolicy {
    /// SPEC §2 / seed 002: agora waits 60 s, retries once at once, bans.
    /// Tencent (seed 003): 2 s, no retry, no ban.
    pub fn default_for(dialect: Dialect) -> Self {
        match dialect {
            Dialect::Agora => Self {
                timeout: Duration::from_secs(60),
                retries: 1,
                bans: true,
            },
            Dialect::Tencent => Self {
                timeout: Duration::from_secs(2),
                retries: 0,
                bans: false,
            },
        }
    }
}

/// A set of vocabulary values where "empty" in the file means "all".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter(u32);

impl Filter {
    /// Every value allowed: what an empty or absent list in the file means.
    pub const ALL: Filter = Filter(u32::MAX);

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
    pub name: RuleName,
    /// `rules[].url`: where its callbacks are POSTed (unless a replay gives a `targetUrl`).
    pub url: CallbackUrl,
    /// `rules[].secret`: the agora signing secret (`security` = MD5 of callId + secret +
    /// timestamp).
    pub secret: Secret,
    /// `rules[].kind`: `post_send` or `pre_send`.
    pub kind: RuleKind,
    /// `rules[].enabled`: a disabled rule makes no callbacks and shows state `disabled`.
    pub enabled: bool,
    /// `rules[].chat_types`: the chat types it fires for (empty list = all).
    pub chat_types: Filter,
    /// `rules[].message_types`: the message types it fires for (empty list = all).
    pub message_types: Filter,
    /// `rules[].event_types`: post-send only, `chat` and/or `chat_offline` (empty list = all).
    pub event_types: Filter,
    /// `rules[].include_rest`: post-send only; `false` ignores messages whose `source` is `rest`.
    pub include_rest: bool,
    /// `rules[].timeout_ms`, `on_failure`, `notify_sender`: used by pre-send rules only.
    pub pre_send: PreSendConfig,
    /// `rules[].ca_file`, `client_cert`, `client_key`: HTTPS options.
    pub tls: TlsConfig,
}

impl RuleConfig {
    /// Whether `chat_types` lets a message of this chat type through.
    pub fn allows_chat_type(&self, t: ChatType) -> bool {
        self.chat_types.allows(t.index())
    }
    /// Whether `message_types` lets a message of this type through.
    pub fn allows_message_type(&self, t: MessageType) -> bool {
        self.message_types.allows(t.index())
    }
    /// Whether `event_types` lets a callback of this event type (`chat`, `chat_offline`) through.
    pub fn allows_event_type(&self, t: EventType) -> bool {
        self.event_types.allows(t.index())
    }
}

/// Pre-send settings (SPEC §4.2); defaults apply to post-send rules and are unused there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreSendConfig {
    /// `rules[].timeout_ms`: how long to wait for the verdict (agora 200 ms, tencent 2000 ms).
    pub timeout: Duration,
    /// `rules[].on_failure`: what a timeout, non-200 or malformed answer means: `pass`
    /// (default) or `block`.
    pub on_failure: OnFailure,
    /// `rules[].notify_sender`: whether a blocked message's sender is told the rule's `code`
    /// (the `code` field of the messages answer; default `false`).
    pub notify_sender: bool,
}

/// Per-rule HTTPS options; paths are resolved against the config file's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `ca_file`: an extra trusted root in PEM, for self-signed receivers.
    pub ca_file: Option<PathBuf>,
    /// `client_cert`: the simulator's PEM certificate chain for mutual TLS (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// `client_key`: the PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl TlsConfig {
    /// True when no option is set, so the rule can share the default HTTP client.
    pub(crate) fn is_default(&self) -> bool {
        *self == TlsConfig::default()
    }
}

// Defaults, documented in SPEC §2 and the commented config.toml.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DATA_DIR: &str = "./data";
/// 1 MiB: far above any message body, small enough to refuse abuse (SPEC §2).
const DEFAULT_MAX_BODY_BYTES: u64 = 1_048_576;
const DEFAULT_CONCURRENCY: u64 = 512;
const DEFAULT_QUEUE_CAPACITY: u64 = 100_000;
/// Seed 001: "响应内容不能超过 1,000 个字符长度".
const DEFAULT_MAX_RESPONSE_CHARS: u64 = 1000;
/// Seed 001: 90 failures within 30 s ban the rule.
const DEFAULT_FAILURE_THRESHOLD: u64 = 90;
const DEFAULT_WINDOW_SECS: f64 = 30.0;
/// Seed 001: ban length is level × 5 minutes.
const DEFAULT_BASE_SECS: f64 = 300.0;
/// Seed 001: the level is capped at 5 ...
const DEFAULT_MAX_LEVEL: u64 = 5;
/// ... counting the bans of the last 24 hours.
const DEFAULT_LEVEL_MEMORY_SECS: f64 = 86_400.0;
/// Seed 001: "异常存储过期时间默认 3 天".
const DEFAULT_RETENTION_SECS: f64 = 259_200.0;
const DEFAULT_RATE_PER_SEC: u64 = 100;
const DEFAULT_BURST: u64 = 200;
const DEFAULT_SDK_APP_ID: u64 = 1_400_000_000;
/// Seed 002: "默认情况下，发送前和发送后回调规则总计最多可以添加四个".
const DEFAULT_MAX_RULES: u64 = 4;
/// Seed 002: the pre-send wait defaults to 200 ms.
const DEFAULT_PRE_SEND_TIMEOUT_MS_AGORA: u64 = 200;
/// SPEC §4.3: a tencent before-command waits 2 s like every tencent callback.
const DEFAULT_PRE_SEND_TIMEOUT_MS_TENCENT: u64 = 2000;
/// Longest timeout anyone could mean: an hour.
const MAX_TIMEOUT_SECS: f64 = 3600.0;

/// The file format. Every field optional so that validation can tell "absent" from "given".
mod raw {
    use serde::Deserialize;

    #[derive(Deserialize, Default, Clone)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub server: Option<Server>,
        pub delivery: Option<Delivery>,
        pub ban: Option<Ban>,
        pub store: Option<Store>,
        pub api: Option<Api>,
        pub apps: Option<Vec<App>>,
    }

    #[derive(Deserialize, Default, Clone)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        pub listen: Option<String>,
        pub data_dir: Option<String>,
        pub max_body_bytes: Option<u64>,
    }

    #[derive(Deserialize, Default, Clone)]
    #[serde(deny_unknown_fields)]
    pub struct Delivery {
        pub concurrency: Option<u64>,
        pub queue_capacity: Option<u64>,
        pub max_response_chars: Option<u64>,
    }

    #[derive(Deserialize, Default, Clone)]
    #[serde(deny_unknown_fields)]
    pub struct Ban {
        pub failure_threshold: Option<u64>,
        pub window_secs: Option<f64>,
        pub base_secs: Option<f64>,
        pub max_level: Option<u64>,
        pub level_memory_secs: Option<f64>,
    }

    #[derive(Deserialize, Default, Clone)]
    #[serde(deny_unknown_fields)]
    pub struct Store {
        pub retention_secs: Option<f64>,
        pub utc_offset: Option<String>,
    }

    #[derive(Deserialize, Default, Clone)]
    #[serde(deny_unknown_fields)]
    pub struct Api {
        pub rate_per_sec: Option<u64>,
        pub burst: Option<u64>,
    }

    #[derive(Deserialize, Clone)]
    #[serde(deny_unknown_fields)]
    pub struct App {
        pub id: String,
        pub token: String,
        pub dialect: Option<String>,
        pub sdk_app_id: Option<u64>,
        pub exception_store: Option<bool>,
        pub max_rules: Option<u64>,
        pub timeout_secs: Option<f64>,
        pub retries: Option<u64>,
        pub bans: Option<bool>,
        pub rules: Option<Vec<Rule>>,
    }

    #[derive(Deserialize, Clone)]
    #[serde(deny_unknown_fields)]
    pub struct Rule {
        pub name: String,
        pub url: String,
        pub secret: Option<String>,
        pub kind: Option<String>,
        pub enabled: Option<bool>,
        pub chat_types: Option<Vec<String>>,
        pub message_types: Option<Vec<String>>,
        pub event_types: Option<Vec<String>>,
        pub include_rest: Option<bool>,
        pub timeout_ms: Option<u64>,
        pub on_failure: Option<String>,
        pub notify_sender: Option<bool>,
        pub ca_file: Option<String>,
        pub client_cert: Option<String>,
        pub client_key: Option<String>,
    }
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
        Validator { origin, base_dir }.config(file)
    }
}

/// Builds a [`Config`] in code, with the same validation and defaults as the file.
///
/// ```
/// use callback_sim::{AppBuilder, Config, RuleBuilder};
///
/// let config = Config::builder()
///     .app(AppBuilder::new("app1", "token").rule(RuleBuilder::post_send("sync", "http://127.0.0.1:9000/cb", "secret")))
///     .build()
///     .unwrap();
/// assert_eq!(config.apps[0].rules[0].name.as_str(), "sync");
/// assert_eq!(config.server.listen.port(), 0, "the builder listens on a free port by default");
/// ```
#[derive(Clone)]
pub struct ConfigBuilder {
    file: raw::File,
    apps: Vec<raw::App>,
}

impl Default for ConfigBuilder {
    /// Listens on `127.0.0.1:0`; everything else at the SPEC defaults.
    fn default() -> Self {
        let file = raw::File {
            server: Some(raw::Server {
                listen: Some("127.0.0.1:0".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        Self { file, apps: Vec::new() }
    }
}

impl ConfigBuilder {
    fn server(&mut self) -> &mut raw::Server {
        self.file.server.get_or_insert_with(Default::default)
    }

    fn delivery(&mut self) -> &mut raw::Delivery {
        self.file.delivery.get_or_insert_with(Default::default)
    }

    /// `server.listen` (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: &str) -> Self {
        self.server().listen = Some(addr.into());
        self
    }

    /// `server.data_dir`.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.server().data_dir = Some(dir.display().to_string());
        self
    }

    /// `delivery.concurrency`.
    pub fn concurrency(mut self, n: u64) -> Self {
        self.delivery().concurrency = Some(n);
        self
    }

    /// `delivery.queue_capacity`.
    pub fn queue_capacity(mut self, n: u64) -> Self {
        self.delivery().queue_capacity = Some(n);
        self
    }

    /// `delivery.max_response_chars`.
    pub fn max_response_chars(mut self, n: u64) -> Self {
        self.delivery().max_response_chars = Some(n);
        self
    }

    /// The `[ban]` settings: a ban after `threshold` failures within `window_secs`, lasting
    /// `level * base_secs`, the level capped at `max_level`.
    pub fn ban(mut self, threshold: u64, window_secs: f64, base_secs: f64, max_level: u64) -> Self {
        let b = self.file.ban.get_or_insert_with(Default::default);
        b.failure_threshold = Some(threshold);
        b.window_secs = Some(window_secs);
        b.base_secs = Some(base_secs);
        b.max_level = Some(max_level);
        self
    }

    /// `store.retention_secs` and `store.utc_offset` (e.g. `"+08:00"`).
    pub fn store(mut self, retention_secs: f64, utc_offset: &str) -> Self {
        let st = self.file.store.get_or_insert_with(Default::default);
        st.retention_secs = Some(retention_secs);
        st.utc_offset = Some(utc_offset.into());
        self
    }

    /// `api.rate_per_sec` and `api.burst`.
    pub fn api_rate(mut self, rate_per_sec: u64, burst: u64) -> Self {
        let a = self.file.api.get_or_insert_with(Default::default);
        a.rate_per_sec = Some(rate_per_sec);
        a.burst = Some(burst);
        self
    }

    /// Adds an app.
    pub fn app(mut self, app: AppBuilder) -> Self {
        self.apps.push(app.0);
        self
    }

    /// Validates everything, as [`Config::parse`] would.
    pub fn build(self) -> Result<Config, ConfigError> {
        let mut file = self.file;
        file.apps = Some(self.apps);
        Validator {
            origin: "<built in code>",
            base_dir: Path::new("."),
        }
        .config(file)
    }
}

/// One `[[apps]]` entry, built in code.
#[derive(Clone)]
pub struct AppBuilder(raw::App);

impl AppBuilder {
    /// An agora app with this id and REST token.
    pub fn new(id: &str, token: &str) -> Self {
        Self(raw::App {
            id: id.into(),
            token: token.into(),
            dialect: None,
            sdk_app_id: None,
            exception_store: None,
            max_rules: None,
            timeout_secs: None,
            retries: None,
            bans: None,
            rules: Some(Vec::new()),
        })
    }

    /// The tencent dialect, with its `SdkAppid`.
    pub fn tencent(mut self, sdk_app_id: u64) -> Self {
        self.0.dialect = Some("tencent".into());
        self.0.sdk_app_id = Some(sdk_app_id);
        self
    }

    /// `exception_store` (default true).
    pub fn exception_store(mut self, on: bool) -> Self {
        self.0.exception_store = Some(on);
        self
    }

    /// `max_rules` (default 4).
    pub fn max_rules(mut self, n: u64) -> Self {
        self.0.max_rules = Some(n);
        self
    }

    /// `timeout_secs` of post-send callbacks.
    pub fn timeout_secs(mut self, secs: f64) -> Self {
        self.0.timeout_secs = Some(secs);
        self
    }

    /// `retries` after the first attempt.
    pub fn retries(mut self, n: u64) -> Self {
        self.0.retries = Some(n);
        self
    }

    /// Whether failing rules get banned.
    pub fn bans(mut self, on: bool) -> Self {
        self.0.bans = Some(on);
        self
    }

    /// Adds a rule.
    pub fn rule(mut self, rule: RuleBuilder) -> Self {
        self.0.rules.get_or_insert_with(Vec::new).push(rule.0);
        self
    }
}

/// One `[[apps.rules]]` entry, built in code.
#[derive(Clone)]
pub struct RuleBuilder(raw::Rule);

// Builders hold tokens and secrets: their Debug output names what they build, nothing more.
impl fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigBuilder")
            .field("apps", &self.apps.iter().map(|a| &a.id).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppBuilder")
            .field("id", &self.0.id)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RuleBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleBuilder")
            .field("name", &self.0.name)
            .field("url", &self.0.url)
            .finish_non_exhaustive()
    }
}

impl RuleBuilder {
    fn new(name: &str, url: &str, secret: &str, kind: &str) -> Self {
        Self(raw::Rule {
            name: name.into(),
            url: url.into(),
            secret: (!secret.is_empty()).then(|| secret.into()),
            kind: Some(kind.into()),
            enabled: None,
            chat_types: None,
            message_types: None,
            event_types: None,
            include_rest: None,
            timeout_ms: None,
            on_failure: None,
            notify_sender: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
        })
    }

    /// A post-send rule (`secret` may be empty for tencent apps).
    pub fn post_send(name: &str, url: &str, secret: &str) -> Self {
        Self::new(name, url, secret, "post_send")
    }

    /// A pre-send (moderation) rule.
    pub fn pre_send(name: &str, url: &str, secret: &str) -> Self {
        Self::new(name, url, secret, "pre_send")
    }

    /// `enabled` (default true).
    pub fn enabled(mut self, on: bool) -> Self {
        self.0.enabled = Some(on);
        self
    }

    /// `chat_types` (empty = all).
    pub fn chat_types(mut self, types: &[&str]) -> Self {
        self.0.chat_types = Some(types.iter().map(|t| t.to_string()).collect());
        self
    }

    /// `message_types` (empty = all).
    pub fn message_types(mut self, types: &[&str]) -> Self {
        self.0.message_types = Some(types.iter().map(|t| t.to_string()).collect());
        self
    }

    /// `event_types` (post-send rules; empty = all).
    pub fn event_types(mut self, types: &[&str]) -> Self {
        self.0.event_types = Some(types.iter().map(|t| t.to_string()).collect());
        self
    }

    /// `include_rest` (post-send rules; default true).
    pub fn include_rest(mut self, on: bool) -> Self {
        self.0.include_rest = Some(on);
        self
    }

    /// `timeout_ms` (pre-send rules).
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.0.timeout_ms = Some(ms);
        self
    }

    /// `on_failure = "block"` (pre-send rules; default pass).
    pub fn block_on_failure(mut self) -> Self {
        self.0.on_failure = Some("block".into());
        self
    }

    /// `notify_sender` (pre-send rules).
    pub fn notify_sender(mut self, on: bool) -> Self {
        self.0.notify_sender = Some(on);
        self
    }

    /// `ca_file`: an extra trusted root for an HTTPS receiver.
    pub fn ca_file(mut self, path: &Path) -> Self {
        self.0.ca_file = Some(path.display().to_string());
        self
    }

    /// `client_cert` and `client_key`: mutual TLS.
    pub fn client_cert(mut self, cert: &Path, key: &Path) -> Self {
        self.0.client_cert = Some(cert.display().to_string());
        self.0.client_key = Some(key.display().to_string());
        self
    }
}

/// Folds toml's multi-line error rendering into one readable line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

struct Validator<'a> {
    origin: &'a str,
    base_dir: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.into(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn int(&self, key: &str, v: Option<u64>, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let v = v.unwrap_or(default);
        if v < min || v > max {
            return Err(self.err(key, format!("must be between {min} and {max}, got {v}")));
        }
        Ok(v)
    }

    fn secs(&self, key: &str, v: Option<f64>, default: f64, min: f64, max: f64) -> Result<Duration, ConfigError> {
        let v = v.unwrap_or(default);
        if !v.is_finite() || v < min || v > max {
            return Err(self.err(key, format!("must be between {min} and {max} seconds, got {v}")));
        }
        Ok(Duration::from_secs_f64(v))
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn config(&self, f: raw::File) -> Result<Config, ConfigError> {
        let s = f.server.unwrap_or_default();
        let listen_text = s.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
            self.err(
                "server.listen",
                format!("must be IP:PORT such as \"127.0.0.1:8080\" (port 0 picks a free port), got {listen_text:?}"),
            )
        })?;
        let data_dir = s.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR);
        if data_dir.trim().is_empty() {
            return Err(self.err("server.data_dir", "must not be empty"));
        }
        let server = ServerConfig {
            listen,
            data_dir: self.path(data_dir),
            max_body_bytes: self.int(
                "server.max_body_bytes",
                s.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES,
                1024,
                1 << 30,
            )? as usize,
        };

        let d = f.delivery.unwrap_or_default();
        let delivery = DeliveryConfig {
            concurrency: self.int("delivery.concurrency", d.concurrency, DEFAULT_CONCURRENCY, 1, 65_536)? as usize,
            queue_capacity: self.int(
                "delivery.queue_capacity",
                d.queue_capacity,
                DEFAULT_QUEUE_CAPACITY,
                1,
                100_000_000,
            )? as usize,
            max_response_chars: self.int(
                "delivery.max_response_chars",
                d.max_response_chars,
                DEFAULT_MAX_RESPONSE_CHARS,
                0,
                100_000_000,
            )? as usize,
        };

        let b = f.ban.unwrap_or_default();
        let ban = BanConfig {
            failure_threshold: self.int(
                "ban.failure_threshold",
                b.failure_threshold,
                DEFAULT_FAILURE_THRESHOLD,
                1,
                1_000_000,
            )? as u32,
            window: self.secs("ban.window_secs", b.window_secs, DEFAULT_WINDOW_SECS, 0.001, 86_400.0)?,
            base: self.secs("ban.base_secs", b.base_secs, DEFAULT_BASE_SECS, 0.001, 86_400.0)?,
            max_level: self.int("ban.max_level", b.max_level, DEFAULT_MAX_LEVEL, 1, 1000)? as u32,
            level_memory: self.secs(
                "ban.level_memory_secs",
                b.level_memory_secs,
                DEFAULT_LEVEL_MEMORY_SECS,
                0.001,
                31_536_000.0,
            )?,
        };

        let st = f.store.unwrap_or_default();
        let offset_text = st.utc_offset.as_deref().unwrap_or("+00:00");
        let store = StoreConfig {
            retention: self.secs(
                "store.retention_secs",
                st.retention_secs,
                DEFAULT_RETENTION_SECS,
                1.0,
                31_536_000.0,
            )?,
            utc_offset: parse_utc_offset(offset_text).ok_or_else(|| {
                self.err(
                    "store.utc_offset",
                    format!("must look like \"+08:00\" or \"-05:30\" (between -23:59 and +23:59), got {offset_text:?}"),
                )
            })?,
        };

        let a = f.api.unwrap_or_default();
        let api = ApiConfig {
            rate_per_sec: self.int("api.rate_per_sec", a.rate_per_sec, DEFAULT_RATE_PER_SEC, 1, 10_000_000)? as u32,
            burst: self.int("api.burst", a.burst, DEFAULT_BURST, 1, 10_000_000)? as u32,
        };

        let raw_apps = f.apps.unwrap_or_default();
        if raw_apps.is_empty() {
            return Err(self.err("apps", "at least one [[apps]] entry is required"));
        }
        let mut seen = HashSet::new();
        let mut apps = Vec::with_capacity(raw_apps.len());
        for (i, app) in raw_apps.into_iter().enumerate() {
            let app = self.app(&format!("apps[{i}]"), app)?;
            if !seen.insert(app.id.clone()) {
                return Err(self.err(
                    format!("apps[{i}].id"),
                    format!("app id {:?} is used twice; app ids must be unique", app.id.as_str()),
                ));
            }
            apps.push(app);
        }
        Ok(Config {
            server,
            delivery,
            ban,
            store,
            api,
            apps,
        })
    }

    fn app(&self, at: &str, a: raw::App) -> Result<AppConfig, ConfigError> {
        let id = AppId::parse(&a.id).map_err(|e| self.err(format!("{at}.id"), e.0))?;
        if a.token.is_empty() {
            return Err(self.err(
                format!("{at}.token"),
                "must not be empty: clients send it as `Authorization: Bearer <token>`",
            ));
        }
        if a.token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(self.err(
                format!("{at}.token"),
                "must not contain spaces or control characters (it travels in an HTTP header)",
            ));
        }
        let dialect = match &a.dialect {
            None => Dialect::Agora,
            Some(d) => Dialect::parse(d).map_err(|e| self.err(format!("{at}.dialect"), e.0))?,
        };
        let defaults = DeliveryPolicy::default_for(dialect);
        let policy = DeliveryPolicy {
            timeout: match a.timeout_secs {
                None => defaults.timeout,
                Some(_) => self.secs(
                    &format!("{at}.timeout_secs"),
                    a.timeout_secs,
                    0.0,
                    0.001,
                    MAX_TIMEOUT_SECS,
                )?,
            },
            retries: self.int(&format!("{at}.retries"), a.retries, u64::from(defaults.retries), 0, 10)? as u32,
            bans: a.bans.unwrap_or(defaults.bans),
        };
        let max_rules = self.int(&format!("{at}.max_rules"), a.max_rules, DEFAULT_MAX_RULES, 1, 1000)? as usize;
        let raw_rules = a.rules.unwrap_or_default();
        if raw_rules.len() > max_rules {
            return Err(self.err(
                format!("{at}.rules"),
                format!(
                    "app {:?} has {} rules but max_rules is {max_rules}; remove rules or raise {at}.max_rules",
                    id.as_str(),
                    raw_rules.len()
                ),
            ));
        }
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(raw_rules.len());
        for (j, r) in raw_rules.into_iter().enumerate() {
            let rat = format!("{at}.rules[{j}]");
            let rule = self.rule(&rat, dialect, r)?;
            if !names.insert(rule.name.clone()) {
                return Err(self.err(
                    format!("{rat}.name"),
                    format!(
                        "rule name {:?} is used twice in app {:?}; names must be unique within an app",
                        rule.name.as_str(),
                        id.as_str()
                    ),
                ));
            }
            rules.push(rule);
        }
        Ok(AppConfig {
            id,
            token: Secret::new(&a.token),
            dialect,
            sdk_app_id: a.sdk_app_id.unwrap_or(DEFAULT_SDK_APP_ID),
            exception_store: a.exception_store.unwrap_or(true),
            max_rules,
            policy,
            rules,
        })
    }

    fn rule(&self, at: &str, dialect: Dialect, r: raw::Rule) -> Result<RuleConfig, ConfigError> {
        let name = RuleName::parse(&r.name).map_err(|e| self.err(format!("{at}.name"), e.0))?;
        let url = CallbackUrl::parse(&r.url).map_err(|e| self.err(format!("{at}.url"), e.0))?;
        let kind = match &r.kind {
            None => RuleKind::PostSend,
            Some(k) => RuleKind::parse(k).map_err(|e| self.err(format!("{at}.kind"), e.0))?,
        };
        let secret = match (&r.secret, dialect) {
            (Some(s), _) if !s.is_empty() => Secret::new(s),
            (_, Dialect::Tencent) => Secret::new(""),
            (Some(_), Dialect::Agora) => {
                return Err(self.err(
                    format!("{at}.secret"),
                    "must not be empty: callbacks are signed with it",
                ));
            }
            (None, Dialect::Agora) => {
                return Err(self.err(
                    format!("{at}.secret"),
                    "is required for agora rules: callbacks are signed with MD5(callId + secret + timestamp)",
                ));
            }
        };
        let only = |given: bool, key: &str, wanted: RuleKind| -> Result<(), ConfigError> {
            if given && kind != wanted {
                return Err(self.err(
                    format!("{at}.{key}"),
                    format!("only applies to {wanted} rules, but this rule is {kind}; remove it"),
                ));
            }
            Ok(())
        };
        only(r.event_types.is_some(), "event_types", RuleKind::PostSend)?;
        only(r.include_rest.is_some(), "include_rest", RuleKind::PostSend)?;
        only(r.timeout_ms.is_some(), "timeout_ms", RuleKind::PreSend)?;
        only(r.on_failure.is_some(), "on_failure", RuleKind::PreSend)?;
        only(r.notify_sender.is_some(), "notify_sender", RuleKind::PreSend)?;

        let default_timeout_ms = match dialect {
            Dialect::Agora => DEFAULT_PRE_SEND_TIMEOUT_MS_AGORA,
            Dialect::Tencent => DEFAULT_PRE_SEND_TIMEOUT_MS_TENCENT,
        };
        let pre_send = PreSendConfig {
            timeout: Duration::from_millis(self.int(
                &format!("{at}.timeout_ms"),
                r.timeout_ms,
                default_timeout_ms,
                1,
                600_000,
            )?),
            on_failure: match &r.on_failure {
                None => OnFailure::Pass,
                Some(v) => OnFailure::parse(v).map_err(|e| self.err(format!("{at}.on_failure"), e.0))?,
            },
            notify_sender: r.notify_sender.unwrap_or(false),
        };

        let tls = TlsConfig {
            ca_file: self.existing_file(&format!("{at}.ca_file"), r.ca_file.as_deref())?,
            client_cert: self.existing_file(&format!("{at}.client_cert"), r.client_cert.as_deref())?,
            client_key: self.existing_file(&format!("{at}.client_key"), r.client_key.as_deref())?,
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            let missing = if tls.client_cert.is_some() {
                "client_key"
            } else {
                "client_cert"
            };
            return Err(self.err(
                format!("{at}.{missing}"),
                "client_cert and client_key go together: mutual TLS needs both the certificate and its key",
            ));
        }

        Ok(RuleConfig {
            name,
            url,
            secret,
            kind,
            enabled: r.enabled.unwrap_or(true),
            chat_types: self.filter(
                &format!("{at}.chat_types"),
                r.chat_types,
                ChatType::parse,
                ChatType::index,
            )?,
            message_types: self.filter(
                &format!("{at}.message_types"),
                r.message_types,
                MessageType::parse,
                MessageType::index,
            )?,
            event_types: self.filter(
                &format!("{at}.event_types"),
                r.event_types,
                EventType::parse,
                EventType::index,
            )?,
            include_rest: r.include_rest.unwrap_or(true),
            pre_send,
            tls,
        })
    }

    fn filter<T>(
        &self,
        at: &str,
        values: Option<Vec<String>>,
        parse: fn(&str) -> Result<T, crate::domain::DomainError>,
        index: fn(T) -> usize,
    ) -> Result<Filter, ConfigError> {
        let mut indices = Vec::new();
        for (k, v) in values.unwrap_or_default().iter().enumerate() {
            let t = parse(v).map_err(|e| self.err(format!("{at}[{k}]"), e.0))?;
            indices.push(index(t));
        }
        Ok(Filter::from_indices(indices))
    }

    fn existing_file(&self, at: &str, p: Option<&str>) -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = p else { return Ok(None) };
        let path = self.path(p);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(path)),
            Ok(_) => Err(self.err(at, format!("{} is not a file", path.display()))),
            Err(e) => Err(self.err(
                at,
                format!(
                    "cannot read {}: {e} (relative paths are resolved against the config file's directory)",
                    path.display()
                ),
            )),
        }
    }
}

/// Parses `+HH:MM` / `-HH:MM` (also `Z` and `+HHMM`).
pub(crate) fn parse_utc_offset(s: &str) -> Option<FixedOffset> {
    if s == "Z" || s == "z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    if !rest.is_ascii() {
        return None;
    }
    let (h, m) = match rest.len() {
        5 if rest.as_bytes()[2] == b':' => (&rest[..2], &rest[3..]),
        4 => (&rest[..2], &rest[2..]),
        _ => return None,
    };
    if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 23 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[apps]]
id = "demo"
token = "t"
  [[apps.rules]]
  name = "r1"
  url = "http://127.0.0.1:9000/cb"
  secret = "s"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("."))
    }

    fn err(text: &str) -> ConfigError {
        parse(text).expect_err("config should be rejected")
    }

    #[test]
    fn minimal_config_gets_the_spec_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.delivery.concurrency, 512);
        assert_eq!(c.delivery.queue_capacity, 100_000);
        assert_eq!(c.delivery.max_response_chars, 1000);
        assert_eq!(c.ban.failure_threshold, 90);
        assert_eq!(c.ban.window, Duration::from_secs(30));
        assert_eq!(c.ban.base, Duration::from_secs(300));
        assert_eq!(c.ban.max_level, 5);
        assert_eq!(c.store.retention, Duration::from_secs(259_200));
        assert_eq!(c.api.rate_per_sec, 100);
        let app = &c.apps[0];
        assert_eq!(app.dialect, Dialect::Agora);
        assert_eq!(
            app.policy,
            DeliveryPolicy {
                timeout: Duration::from_secs(60),
                retries: 1,
                bans: true
            }
        );
        assert_eq!(app.max_rules, 4);
        assert!(app.exception_store);
        let r = &app.rules[0];
        assert_eq!(r.kind, RuleKind::PostSend);
        assert!(r.enabled && r.include_rest);
        assert!(r.allows_chat_type(ChatType::ChatRoom));
        assert_eq!(r.pre_send.timeout, Duration::from_millis(200));
    }

    #[test]
    fn tencent_apps_get_tencent_defaults() {
        let text = MINIMAL.replace("token = \"t\"", "token = \"t\"\ndialect = \"tencent\"");
        let app = &parse(&text).unwrap().apps[0];
        assert_eq!(
            app.policy,
            DeliveryPolicy {
                timeout: Duration::from_secs(2),
                retries: 0,
                bans: false
            }
        );
        assert_eq!(app.rules[0].pre_send.timeout, Duration::from_millis(2000));
    }

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
    fn bad_values_name_key_and_fix() {
        let e = err(&MINIMAL.replace("name = \"r1\"", "name = \"bad-name\""));
        assert_eq!(e.key, "apps[0].rules[0].name");
        let e = err(&MINIMAL.replace("http://127.0.0.1:9000/cb", "ftp://x/"));
        assert_eq!(e.key, "apps[0].rules[0].url");
        assert!(e.reason.contains("http:// or https://"));
        let e = err(&format!("[delivery]\nconcurrency = 0\n{MINIMAL}"));
        assert_eq!(e.key, "delivery.concurrency");
        let e = err(&format!("[store]\nutc_offset = \"+25:00\"\n{MINIMAL}"));
        assert_eq!(e.key, "store.utc_offset");
        let e = err(&format!("[server]\nlisten = \"localhost\"\n{MINIMAL}"));
        assert_eq!(e.key, "server.listen");
        let e = err(&MINIMAL.replace("secret = \"s\"", "secret = \"s\"\nchat_types = [\"private\"]"));
        assert_eq!(e.key, "apps[0].rules[0].chat_types[0]");
        let e = err(&MINIMAL.replace("secret = \"s\"", "secret = \"s\"\ntimeout_ms = 5"));
        assert!(e.reason.contains("pre_send"), "{e}");
        let e = err(&MINIMAL.replace("secret = \"s\"", ""));
        assert_eq!(e.key, "apps[0].rules[0].secret");
        let e = err(&MINIMAL.replace("secret = \"s\"", "secret = \"s\"\nca_file = \"/nonexistent/ca.pem\""));
        assert_eq!(e.key, "apps[0].rules[0].ca_file");
    }

    #[test]
    fn type_errors_name_the_key() {
        let e = err(&format!("[delivery]\nconcurrency = \"many\"\n{MINIMAL}"));
        assert_eq!(e.key, "delivery.concurrency", "{e}");
        let e = err(&format!("[ban]\nmax_level = -1\n{MINIMAL}"));
        assert_eq!(e.key, "ban.max_level", "{e}");
    }

    #[test]
    fn uniqueness_and_limits() {
        let two = format!(
            "{MINIMAL}{}",
            MINIMAL.replace("[[apps]]\nid = \"demo\"\ntoken = \"t\"\n", "")
        );
        let e = err(&two);
        assert_eq!(e.key, "apps[0].rules[1].name");
        assert!(e.reason.contains("twice"));
        let many: String = (0..5)
            .map(|i| format!("  [[apps.rules]]\n  name = \"r{i}\"\n  url = \"http://h/\"\n  secret = \"s\"\n"))
            .collect();
        let e = err(&format!("[[apps]]\nid = \"a\"\ntoken = \"t\"\n{many}"));
        assert_eq!(e.key, "apps[0].rules");
        assert!(e.reason.contains("max_rules"));
        let e = err(&format!("{MINIMAL}{MINIMAL}"));
        assert_eq!(e.key, "apps[1].id");
        assert_eq!(err("").key, "apps");
        assert_eq!(err("[[apps]]\nid = \"x\"\n").key, "apps[0]");
    }

    #[test]
    fn syntax_errors_are_one_line() {
        let e = err("[server\nlisten = 1");
        assert_eq!(e.key, "(syntax)");
        assert!(!e.reason.contains('\n'));
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("+08:00").unwrap().local_minus_utc(), 8 * 3600);
        assert_eq!(
            parse_utc_offset("-05:30").unwrap().local_minus_utc(),
            -(5 * 3600 + 1800)
        );
        assert_eq!(parse_utc_offset("+0000").unwrap().local_minus_utc(), 0);
        assert!(parse_utc_offset("08:00").is_none());
        assert!(parse_utc_offset("+8").is_none());
        assert!(parse_utc_offset("+é0:00").is_none());
        assert!(parse_utc_offset("+0é0").is_none());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let c = parse(MINIMAL).unwrap();
        let dump = format!("{c:?}");
        assert!(!dump.contains("secret: Secret(\"s\")"));
        assert!(dump.contains("Secret(***)"));
    }
}
