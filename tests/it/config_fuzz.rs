//! The config loader never panics, whatever it is fed: structured nonsense, arbitrary text,
//! arbitrary bytes.

use std::path::Path;

use callback_sim::Config;
use proptest::prelude::*;

const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "max_body_bytes",
    "concurrency",
    "queue_capacity",
    "max_response_chars",
    "failure_threshold",
    "window_secs",
    "base_secs",
    "max_level",
    "level_memory_secs",
    "retention_secs",
    "utc_offset",
    "rate_per_sec",
    "burst",
    "id",
    "token",
    "dialect",
    "sdk_app_id",
    "exception_store",
    "max_rules",
    "timeout_secs",
    "retries",
    "bans",
    "name",
    "url",
    "secret",
    "kind",
    "enabled",
    "chat_types",
    "message_types",
    "event_types",
    "include_rest",
    "timeout_ms",
    "on_failure",
    "notify_sender",
    "ca_file",
    "client_cert",
    "client_key",
    "bogus",
];
const SECTIONS: &[&str] = &[
    "[server]",
    "[delivery]",
    "[ban]",
    "[store]",
    "[api]",
    "[[apps]]",
    "  [[apps.rules]]",
    "[apps]",
    "[nope]",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[a-zA-Z0-9_:/.+\\-#é中 ]{0,40}".prop_map(|s| format!("{s:?}")),
        Just("true".to_string()),
        Just("[\"chat\", \"txt\", 1]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("\"+99:99\"".to_string()),
        Just("\"http://127.0.0.1:0/\"".to_string()),
        Just("1e400".to_string()),
        Just("-0".to_string()),
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(SECTIONS).prop_map(str::to_string),
        (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn structured_configs_never_panic(lines in prop::collection::vec(line(), 0..40)) {
        let text = lines.join("\n");
        let _ = Config::parse(&text, "fuzz.toml", Path::new("/nonexistent"));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = Config::parse(&text, "fuzz.toml", Path::new("/nonexistent"));
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = Config::parse(&String::from_utf8_lossy(&bytes), "fuzz.toml", Path::new("/nonexistent"));
    }
}
