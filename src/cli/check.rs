//! `callback-sim serve --check` and `callback-sim config check` (docs/behaviour.md §9): the
//! config validated as `serve` validates it — TLS files included — and what it would run,
//! printed; no port is opened and the store is not touched.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{Config, RuleConfig};
use crate::{CallbackUrl, RuleKind, Server};

/// Checks the config at `path`: exit 0 and a description on stdout, or 2 and the error.
pub fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid config: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = Server::check(&config) {
        eprintln!("error: invalid config: {}: {e}", path.display());
        return ExitCode::from(2);
    }
    print!("{}", describe(path, &config));
    ExitCode::SUCCESS
}

/// What `serve` would run with `config`, for people.
fn describe(path: &Path, config: &Config) -> String {
    let mut out = String::new();
    let (server, store, ban, delivery) = (config.server(), config.store(), config.ban(), config.delivery());
    let _ = writeln!(out, "{}: valid; `serve` would run:", path.display());
    let listen = server.listen();
    let free = if listen.port() == 0 {
        " (port 0: a free port, printed at start)"
    } else {
        ""
    };
    let _ = writeln!(out, "  REST API  http://{listen}{free}");
    let _ = writeln!(
        out,
        "  console   http://{listen}/console (history of {} callbacks per app)",
        server.history_per_app()
    );
    let _ = writeln!(
        out,
        "  store     {} (retention {}, date keys at {})",
        server.data_dir().join("store.sled").display(),
        secs(store.retention()),
        store.utc_offset()
    );
    let _ = writeln!(
        out,
        "  delivery  {} in flight, queue of {} ({} per rule), durable accept {}",
        delivery.concurrency(),
        delivery.queue_capacity(),
        delivery.rule_queue_capacity(),
        if delivery.durable() { "on" } else { "off" }
    );
    let _ = writeln!(
        out,
        "  bans      {} failures within {}; {} per level, up to level {}",
        ban.failure_threshold(),
        secs(ban.window()),
        secs(ban.base()),
        ban.max_level()
    );
    for app in config.apps() {
        let policy = app.policy();
        let _ = writeln!(
            out,
            "  app {}: {}, exception store {}, timeout {}, retries {}, bans {}, {} of at most {} rules",
            app.id(),
            app.dialect(),
            on_off(app.exception_store()),
            secs(policy.timeout()),
            policy.retries(),
            on_off(policy.bans()),
            app.rules().len(),
            app.max_rules()
        );
        for rule in app.rules() {
            let _ = writeln!(out, "    rule {}", rule_line(rule));
        }
    }
    out
}

/// `name kind URL`, then what is special about the rule.
fn rule_line(rule: &RuleConfig) -> String {
    let mut line = format!("{} {} {}", rule.name(), rule.kind(), shown(rule.url()));
    let mut notes = Vec::new();
    if !rule.enabled() {
        notes.push("disabled".to_string());
    }
    if rule.kind() == RuleKind::PreSend {
        let p = rule.pre_send();
        notes.push(format!("timeout {} ms", p.timeout().as_millis()));
        notes.push(format!("on_failure {}", p.on_failure()));
    }
    let tls = rule.tls();
    for (key, file) in [
        ("ca_file", tls.ca_file()),
        ("client_cert", tls.client_cert()),
        ("client_key", tls.client_key()),
    ] {
        if let Some(f) = file {
            notes.push(format!("{key} {}", f.display()));
        }
    }
    if !notes.is_empty() {
        let _ = write!(line, " ({})", notes.join(", "));
    }
    line
}

/// A URL as shown to people: a password in it is masked.
fn shown(url: &CallbackUrl) -> String {
    let text = url.to_string();
    match reqwest::Url::parse(&text) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => text,
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_names_apps_rules_store_and_address_and_masks_passwords() {
        let text = r#"
            [server]
            listen = "127.0.0.1:0"
            data_dir = "state"
            [[apps]]
            id = "shop"
            token = "t"
              [[apps.rules]]
              name = "orders"
              url = "http://alice:hunter2@127.0.0.1:9000/cb"
              secret = "s"
              [[apps.rules]]
              name = "moderate"
              url = "http://127.0.0.1:9001/mod"
              secret = "s"
              kind = "pre_send"
              enabled = false
            [[apps]]
            id = "tc"
            token = "t"
            dialect = "tencent"
              [[apps.rules]]
              name = "after"
              url = "https://example.com/im"
        "#;
        let config = Config::parse(text, "c.toml", Path::new("/etc/sim")).unwrap();
        let d = describe(Path::new("/etc/sim/c.toml"), &config);
        for want in [
            "/etc/sim/c.toml: valid; `serve` would run:",
            "REST API  http://127.0.0.1:0 (port 0",
            "console   http://127.0.0.1:0/console (history of 2000 callbacks per app)",
            "store     /etc/sim/state/store.sled",
            "app shop: agora, exception store on, timeout 60 s, retries 1, bans on, 2 of at most",
            "rule orders post_send http://alice:***@127.0.0.1:9000/cb",
            "rule moderate pre_send http://127.0.0.1:9001/mod (disabled, timeout 200 ms, on_failure pass)",
            "app tc: tencent, exception store on, timeout 2 s, retries 0, bans off",
            "rule after post_send https://example.com/im",
        ] {
            assert!(d.contains(want), "{want:?} missing from:\n{d}");
        }
        assert!(!d.contains("hunter2"), "{d}");
    }
}
