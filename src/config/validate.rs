//! From the raw file to a [`Config`]: every value checked against its range, the
//! dialect-dependent defaults filled in, names and URLs parsed into domain types. An error
//! names the origin, the dotted key path and what to fix.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::FixedOffset;

use super::{
    ApiConfig, AppConfig, BanConfig, Config, ConfigError, DeliveryConfig, DeliveryPolicy, Filter, PreSendConfig,
    RuleConfig, Secret, ServerConfig, StoreConfig, TlsConfig, defaults, raw,
};
use crate::domain::{AppId, CallbackUrl, ChatType, Dialect, EventType, MessageType, OnFailure, RuleKind, RuleName};

/// The longest `timeout_secs` anyone could mean: an hour. A receiver slower than that is
/// down, and a longer timeout only holds a delivery slot.
const MAX_TIMEOUT_SECS: f64 = 3600.0;

/// Turns the raw file into a [`Config`]; `origin` and `base_dir` are those given to
/// [`Config::parse`].
pub(super) struct Validator<'a> {
    /// Names the file in errors.
    pub(super) origin: &'a str,
    /// What relative paths are resolved against.
    pub(super) base_dir: &'a Path,
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

    /// Checks every value of the file and fills in the defaults.
    pub(super) fn config(&self, f: raw::File) -> Result<Config, ConfigError> {
        let s = f.server.unwrap_or_default();
        let listen_text = s.listen.as_deref().unwrap_or(defaults::LISTEN);
        let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
            self.err(
                "server.listen",
                format!("must be IP:PORT such as \"127.0.0.1:8080\" (port 0 picks a free port), got {listen_text:?}"),
            )
        })?;
        let data_dir = s.data_dir.as_deref().unwrap_or(defaults::DATA_DIR);
        if data_dir.trim().is_empty() {
            return Err(self.err("server.data_dir", "must not be empty"));
        }
        let server = ServerConfig {
            listen,
            data_dir: self.path(data_dir),
            max_body_bytes: self.int(
                "server.max_body_bytes",
                s.max_body_bytes,
                defaults::MAX_BODY_BYTES,
                1024,
                1 << 30,
            )? as usize,
            history_per_app: self.int(
                "server.history_per_app",
                s.history_per_app,
                defaults::HISTORY_PER_APP,
                0,
                1_000_000,
            )? as usize,
        };

        let d = f.delivery.unwrap_or_default();
        let delivery = DeliveryConfig {
            concurrency: self.int("delivery.concurrency", d.concurrency, defaults::CONCURRENCY, 1, 65_536)? as usize,
            queue_capacity: self.int(
                "delivery.queue_capacity",
                d.queue_capacity,
                defaults::QUEUE_CAPACITY,
                1,
                100_000_000,
            )? as usize,
            rule_queue_capacity: self.int(
                "delivery.rule_queue_capacity",
                d.rule_queue_capacity,
                defaults::RULE_QUEUE_CAPACITY,
                1,
                100_000_000,
            )? as usize,
            max_response_chars: self.int(
                "delivery.max_response_chars",
                d.max_response_chars,
                defaults::MAX_RESPONSE_CHARS,
                0,
                100_000_000,
            )? as usize,
            durable: d.durable.unwrap_or(defaults::DURABLE),
        };

        let b = f.ban.unwrap_or_default();
        let ban = BanConfig {
            failure_threshold: self.int(
                "ban.failure_threshold",
                b.failure_threshold,
                defaults::FAILURE_THRESHOLD,
                1,
                1_000_000,
            )? as u32,
            window: self.secs("ban.window_secs", b.window_secs, defaults::WINDOW_SECS, 0.001, 86_400.0)?,
            base: self.secs("ban.base_secs", b.base_secs, defaults::BASE_SECS, 0.001, 86_400.0)?,
            max_level: self.int("ban.max_level", b.max_level, defaults::MAX_LEVEL, 1, 1000)? as u32,
            level_memory: self.secs(
                "ban.level_memory_secs",
                b.level_memory_secs,
                defaults::LEVEL_MEMORY_SECS,
                0.001,
                31_536_000.0,
            )?,
        };

        let st = f.store.unwrap_or_default();
        let offset_text = st.utc_offset.as_deref().unwrap_or(defaults::UTC_OFFSET);
        let store = StoreConfig {
            retention: self.secs(
                "store.retention_secs",
                st.retention_secs,
                defaults::RETENTION_SECS,
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
            rate_per_sec: self.int(
                "api.rate_per_sec",
                a.rate_per_sec,
                defaults::RATE_PER_SEC,
                1,
                10_000_000,
            )? as u32,
            burst: self.int("api.burst", a.burst, defaults::BURST, 1, 10_000_000)? as u32,
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
        // A header value a client can send and the server compare: visible ASCII only.
        if let Some(c) = a.token.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(self.err(
                format!("{at}.token"),
                format!(
                    "may only contain visible ASCII characters, no spaces (it travels in an HTTP header), found {c:?}"
                ),
            ));
        }
        let dialect = match &a.dialect {
            None => Dialect::Agora,
            Some(d) => Dialect::parse(d).map_err(|e| self.err(format!("{at}.dialect"), e.0))?,
        };
        if a.sdk_app_id.is_some() && dialect != Dialect::Tencent {
            return Err(self.err(
                format!("{at}.sdk_app_id"),
                format!("only applies to tencent apps, but this app is {dialect}; remove it"),
            ));
        }
        let appkey = match &a.appkey {
            None => format!("sim#{}", id.as_str()),
            Some(k) => {
                let ok = k
                    .split_once('#')
                    .is_some_and(|(org, app)| !org.is_empty() && !app.is_empty())
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || "#-_.".contains(c));
                if !ok {
                    return Err(self.err(
                        format!("{at}.appkey"),
                        format!("must be {{org}}#{{app}} (letters, digits, -, _ and . around one #), got {k:?}"),
                    ));
                }
                k.clone()
            }
        };
        let legacy_groups = match a.group_events.as_deref() {
            None | Some("new") => false,
            Some("legacy") => true,
            Some(other) => {
                return Err(self.err(
                    format!("{at}.group_events"),
                    format!("must be \"new\" (group_op_event) or \"legacy\" (chat_type muc), got {other:?}"),
                ));
            }
        };
        if a.group_events.is_some() && dialect != Dialect::Agora {
            return Err(self.err(
                format!("{at}.group_events"),
                format!("only applies to agora apps, but this app is {dialect}; remove it"),
            ));
        }
        let tencent_token = match &a.tencent_token {
            None => None,
            Some(_) if dialect != Dialect::Tencent => {
                return Err(self.err(
                    format!("{at}.tencent_token"),
                    format!("only applies to tencent apps, but this app is {dialect}; remove it"),
                ));
            }
            Some(t) if t.is_empty() || !t.chars().all(|c| c.is_ascii_graphic()) => {
                return Err(self.err(
                    format!("{at}.tencent_token"),
                    "must be 1 or more visible ASCII characters (the token of the provider's webhook authentication)",
                ));
            }
            Some(t) => Some(Secret::new(t)),
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
        let max_rules = self.int(&format!("{at}.max_rules"), a.max_rules, defaults::MAX_RULES, 1, 1000)? as usize;
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
            sdk_app_id: a.sdk_app_id.unwrap_or(defaults::SDK_APP_ID),
            appkey,
            legacy_groups,
            tencent_token,
            exception_store: a.exception_store.unwrap_or(defaults::EXCEPTION_STORE),
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
        let provider = crate::dialect::defaults(dialect);
        let secret = match (&r.secret, provider.signs) {
            (Some(s), _) if !s.is_empty() => Secret::new(s),
            (_, false) => Secret::new(""),
            (Some(_), true) => {
                return Err(self.err(
                    format!("{at}.secret"),
                    "must not be empty: callbacks are signed with it",
                ));
            }
            (None, true) => {
                return Err(self.err(
                    format!("{at}.secret"),
                    format!("is required for {dialect} rules: callbacks are signed with it"),
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

        let default_timeout_ms = provider.pre_send_timeout.as_millis() as u64;
        let pre_send = PreSendConfig {
            timeout: Duration::from_millis(self.int(
                &format!("{at}.timeout_ms"),
                r.timeout_ms,
                default_timeout_ms,
                1,
                600_000,
            )?),
            on_failure: match &r.on_failure {
                None => defaults::ON_FAILURE,
                Some(v) => OnFailure::parse(v).map_err(|e| self.err(format!("{at}.on_failure"), e.0))?,
            },
            notify_sender: r.notify_sender.unwrap_or(defaults::NOTIFY_SENDER),
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
            enabled: r.enabled.unwrap_or(defaults::ENABLED),
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
            include_rest: r.include_rest.unwrap_or(defaults::INCLUDE_REST),
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
            let i = index(t);
            if let Some(first) = indices.iter().position(|&seen| seen == i) {
                return Err(self.err(
                    format!("{at}[{k}]"),
                    format!("{v:?} is listed twice (also at [{first}]); list each name once"),
                ));
            }
            indices.push(i);
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
fn parse_utc_offset(s: &str) -> Option<FixedOffset> {
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
    use super::super::testing::{MINIMAL, err, parse};
    use super::*;

    #[test]
    fn a_minimal_config_gets_the_defaults() {
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
    fn keys_that_would_silently_do_nothing_are_refused() {
        // A token no client can send as it is written.
        for token in [r#""tök""#, r#""t\u00A0k""#, r#""t k""#, r#""t\tk""#] {
            let e = err(&MINIMAL.replace("token = \"t\"", &format!("token = {token}")));
            assert_eq!(e.key, "apps[0].token", "{token:?}");
            assert!(e.reason.contains("visible ASCII"), "{e}");
        }
        assert!(parse(&MINIMAL.replace("token = \"t\"", "token = \"Ab0-._~+/=!\"")).is_ok());
        // appkey, group_events and tencent_token are checked and belong to one dialect each.
        let e = err(&MINIMAL.replace("token = \"t\"", "token = \"t\"\nappkey = \"nohash\""));
        assert_eq!(e.key, "apps[0].appkey");
        let e = err(&MINIMAL.replace("token = \"t\"", "token = \"t\"\ngroup_events = \"old\""));
        assert_eq!(e.key, "apps[0].group_events");
        let e = err(&MINIMAL.replace("token = \"t\"", "token = \"t\"\ntencent_token = \"x\""));
        assert_eq!(e.key, "apps[0].tencent_token");
        // sdk_app_id is only read by tencent apps.
        let e = err(&MINIMAL.replace("token = \"t\"", "token = \"t\"\nsdk_app_id = 1400000001"));
        assert_eq!(e.key, "apps[0].sdk_app_id");
        assert!(e.reason.contains("tencent"), "{e}");
        let tencent = "token = \"t\"\ndialect = \"tencent\"\nsdk_app_id = 1400000001";
        assert_eq!(
            parse(&MINIMAL.replace("token = \"t\"", tencent)).unwrap().apps[0].sdk_app_id,
            1_400_000_001
        );
        // A name listed twice in a filter.
        for (list, key) in [
            (
                "chat_types = [\"chat\", \"groupchat\", \"chat\"]",
                "apps[0].rules[0].chat_types[2]",
            ),
            (
                "message_types = [\"img\", \"img\"]",
                "apps[0].rules[0].message_types[1]",
            ),
            (
                "event_types = [\"user_status\", \"chat\", \"user_status\"]",
                "apps[0].rules[0].event_types[2]",
            ),
        ] {
            let e = err(&MINIMAL.replace("secret = \"s\"", &format!("secret = \"s\"\n{list}")));
            assert_eq!(e.key, key, "{list}");
            assert!(e.reason.contains("twice"), "{e}");
        }
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
}
