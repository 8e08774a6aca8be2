//! The `config.toml` file format as serde reads it: every key optional, so that validation
//! can tell "absent" (take the default) from "given" (check it), and unknown keys rejected.
//! [`ConfigBuilder`](super::ConfigBuilder) fills the same structs, so code and file go through
//! one validation.

use serde::Deserialize;

/// The whole file.
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

/// `[server]`.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<String>,
    pub data_dir: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub history_per_app: Option<u64>,
}

/// `[delivery]`.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    pub concurrency: Option<u64>,
    pub queue_capacity: Option<u64>,
    pub rule_queue_capacity: Option<u64>,
    pub max_response_chars: Option<u64>,
    pub durable: Option<bool>,
}

/// `[ban]`.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    pub failure_threshold: Option<u64>,
    pub window_secs: Option<f64>,
    pub base_secs: Option<f64>,
    pub max_level: Option<u64>,
    pub level_memory_secs: Option<f64>,
}

/// `[store]`.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Store {
    pub retention_secs: Option<f64>,
    pub utc_offset: Option<String>,
}

/// `[api]`.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub rate_per_sec: Option<u64>,
    pub burst: Option<u64>,
}

/// One `[[apps]]` entry: `id` and `token` are required.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub id: String,
    pub token: String,
    pub dialect: Option<String>,
    pub sdk_app_id: Option<u64>,
    pub appkey: Option<String>,
    pub group_events: Option<String>,
    pub tencent_token: Option<String>,
    pub exception_store: Option<bool>,
    pub max_rules: Option<u64>,
    pub timeout_secs: Option<f64>,
    pub retries: Option<u64>,
    pub bans: Option<bool>,
    pub rules: Option<Vec<Rule>>,
}

/// One `[[apps.rules]]` entry: `name` and `url` are required.
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
