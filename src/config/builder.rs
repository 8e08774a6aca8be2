//! Configs built in code: [`ConfigBuilder`], [`AppBuilder`] and [`RuleBuilder`] fill the
//! same raw structs as the file and go through the same validation, so a built config has the
//! same defaults and the same errors (with origin `<built in code>`).

use std::fmt;
use std::path::Path;

use super::validate::Validator;
use super::{Config, ConfigError, defaults, raw};

/// Builds a [`Config`] in code, with the same validation and defaults as the file.
///
/// ```
/// use callback_sim::{AppBuilder, Config, RuleBuilder};
///
/// let config = Config::builder()
///     .app(AppBuilder::new("app1", "token").rule(RuleBuilder::post_send("sync", "http://127.0.0.1:9000/cb", "secret")))
///     .build()
///     .unwrap();
/// assert_eq!(config.apps()[0].rules()[0].name().as_str(), "sync");
/// assert_eq!(config.server().listen().port(), 0, "the builder listens on a free port by default");
/// ```
#[derive(Clone)]
pub struct ConfigBuilder {
    file: raw::File,
    apps: Vec<raw::App>,
}

impl Default for ConfigBuilder {
    /// Listens on `127.0.0.1:0` and does without durable accept; everything else at the
    /// defaults of the file.
    fn default() -> Self {
        let file = raw::File {
            server: Some(raw::Server {
                listen: Some(defaults::BUILDER_LISTEN.into()),
                ..Default::default()
            }),
            delivery: Some(raw::Delivery {
                durable: Some(defaults::BUILDER_DURABLE),
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

    /// `server.max_body_bytes`: larger REST request bodies get 413.
    pub fn max_body_bytes(mut self, n: u64) -> Self {
        self.server().max_body_bytes = Some(n);
        self
    }

    /// `server.history_per_app`: callbacks kept in memory per app (0: none).
    pub fn history_per_app(mut self, n: u64) -> Self {
        self.server().history_per_app = Some(n);
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

    /// `delivery.rule_queue_capacity`: one rule's share of the queue.
    pub fn rule_queue_capacity(mut self, n: u64) -> Self {
        self.delivery().rule_queue_capacity = Some(n);
        self
    }

    /// `delivery.durable` (default false in code, true in a file): answer a message only once
    /// its callbacks are on disk.
    pub fn durable(mut self, on: bool) -> Self {
        self.delivery().durable = Some(on);
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

    /// `ban.level_memory_secs`: bans started within this span count toward a new ban's level.
    pub fn ban_level_memory(mut self, secs: f64) -> Self {
        self.file.ban.get_or_insert_with(Default::default).level_memory_secs = Some(secs);
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
            appkey: None,
            group_events: None,
            tencent_token: None,
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

    /// `appkey` (agora: `{org}#{app}`, default `sim#{id}`).
    pub fn appkey(mut self, appkey: &str) -> Self {
        self.0.appkey = Some(appkey.into());
        self
    }

    /// `group_events` (agora: `new`, the default, or `legacy`).
    pub fn group_events(mut self, shape: &str) -> Self {
        self.0.group_events = Some(shape.into());
        self
    }

    /// `tencent_token`: signs every URL with `Sign` and `RequestTime`.
    pub fn tencent_token(mut self, token: &str) -> Self {
        self.0.tencent_token = Some(token.into());
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
            .field("url", &crate::domain::mask_password(&self.0.url))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn one_rule() -> AppBuilder {
        AppBuilder::new("app1", "token").rule(RuleBuilder::post_send("sync", "http://127.0.0.1:9000/cb", "s"))
    }

    #[test]
    fn built_configs_are_validated_like_files() {
        let e = Config::builder().concurrency(0).app(one_rule()).build().unwrap_err();
        assert_eq!(e.origin, "<built in code>");
        assert_eq!(e.key, "delivery.concurrency");
        let e = Config::builder()
            .app(
                AppBuilder::new("app1", "token").rule(RuleBuilder::pre_send("m", "http://h/", "s").include_rest(false)),
            )
            .build()
            .unwrap_err();
        assert_eq!(e.key, "apps[0].rules[0].include_rest");
        assert_eq!(Config::builder().build().unwrap_err().key, "apps");
    }

    #[test]
    fn built_configs_get_the_defaults() {
        let c = Config::builder()
            .app(one_rule().tencent(1_400_000_001))
            .build()
            .unwrap();
        let app = &c.apps()[0];
        assert_eq!(app.sdk_app_id(), 1_400_000_001);
        assert_eq!(app.policy().retries(), 0);
        assert_eq!(c.delivery().concurrency(), 512);
    }

    #[test]
    fn builders_do_not_debug_print_secrets() {
        let dump = format!("{:?}", Config::builder().app(one_rule()));
        assert!(dump.contains("app1") && !dump.contains("token"), "{dump}");
    }
}
