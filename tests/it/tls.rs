//! HTTPS and mutual TLS end to end: certificates made here with rcgen, the library's sink
//! serving TLS as the receiver, and rules with `ca_file`, `client_cert` and `client_key`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use callback_sim::{
    AppBuilder, CallbackReport, Config, FinalOutcome, Outcome, Reply, RuleBuilder, Server, Sink, SinkOptions, SinkTls,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

use crate::helpers::*;

/// One certificate (or CA) and its key, as PEM files.
struct Pem {
    cert: PathBuf,
    key: PathBuf,
}

/// A test PKI in a temp dir: a server CA and the sink's certificate for 127.0.0.1/localhost;
/// a client CA and a client certificate; a third CA that signed neither, with a client
/// certificate of its own.
struct Pki {
    _dir: tempfile::TempDir,
    server_ca: Pem,
    server: Pem,
    /// Signed by the server CA, for another host name.
    wrong_name: Pem,
    client_ca: Pem,
    client: Pem,
    other_ca: Pem,
    other_client: Pem,
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params, KeyPair::generate().unwrap())
}

fn leaf(names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages.push(purpose);
    (params, KeyPair::generate().unwrap())
}

fn write_pem(dir: &Path, name: &str, cert: &str, key: &KeyPair) -> Pem {
    let pem = Pem {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&pem.cert, cert).unwrap();
    std::fs::write(&pem.key, key.serialize_pem()).unwrap();
    pem
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cas = Vec::new();
    for name in ["server-ca", "client-ca", "other-ca"] {
        let (params, key) = ca(name);
        let cert = params.self_signed(&key).unwrap();
        let pem = write_pem(d, name, &cert.pem(), &key);
        cas.push((pem, Issuer::new(params, key)));
    }
    let signed = |name: &str, names: &[&str], purpose, issuer: &Issuer<'static, KeyPair>| {
        let (params, key) = leaf(names, purpose);
        let cert = params.signed_by(&key, issuer).unwrap();
        write_pem(d, name, &cert.pem(), &key)
    };
    let server = signed(
        "server",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &cas[0].1,
    );
    let wrong_name = signed(
        "wrong-name",
        &["other.example"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &cas[0].1,
    );
    let client = signed(
        "client",
        &["callback-sim"],
        ExtendedKeyUsagePurpose::ClientAuth,
        &cas[1].1,
    );
    let other_client = signed(
        "other-client",
        &["callback-sim"],
        ExtendedKeyUsagePurpose::ClientAuth,
        &cas[2].1,
    );
    let mut cas = cas.into_iter().map(|(pem, _)| pem);
    Pki {
        server_ca: cas.next().unwrap(),
        client_ca: cas.next().unwrap(),
        other_ca: cas.next().unwrap(),
        server,
        wrong_name,
        client,
        other_client,
        _dir: dir,
    }
}

impl Pki {
    /// The sink serving HTTPS; with `mutual`, it requires a certificate from the client CA.
    async fn sink(&self, mutual: bool) -> Sink {
        self.sink_as(&self.server, mutual).await
    }

    async fn sink_as(&self, server: &Pem, mutual: bool) -> Sink {
        Sink::start(SinkOptions {
            tls: Some(SinkTls {
                cert: server.cert.clone(),
                key: server.key.clone(),
                client_ca: mutual.then(|| self.client_ca.cert.clone()),
            }),
            ..SinkOptions::default()
        })
        .await
        .expect("TLS sink starts")
    }
}

/// app1 with a small timeout and no retry: a TLS failure is final at once.
fn app() -> AppBuilder {
    app1().timeout_secs(2.0).retries(0)
}

/// A rule that trusts the server CA.
fn trusting(rule: RuleBuilder, pki: &Pki) -> RuleBuilder {
    rule.ca_file(&pki.server_ca.cert)
}

/// A rule that presents `client` as our certificate.
fn presenting(rule: RuleBuilder, client: &Pem) -> RuleBuilder {
    rule.client_cert(&client.cert, &client.key)
}

/// The final and the last attempt's outcome of rule `rule`'s callback.
fn outcome_of(cbs: &[CallbackReport], rule: &str) -> (FinalOutcome, Outcome) {
    let c = cbs
        .iter()
        .find(|c| c.rule.as_str() == rule)
        .unwrap_or_else(|| panic!("{rule} in {cbs:?}"));
    (c.outcome, c.last_attempt)
}

const DELIVERED: (FinalOutcome, Outcome) = (FinalOutcome::Delivered, Outcome::Delivered);
const TLS_FAILED: (FinalOutcome, Outcome) = (FinalOutcome::Stored, Outcome::Tls);

#[tokio::test]
async fn https_with_ca_file_is_delivered() {
    let pki = pki();
    let sink = pki.sink(false).await;
    let port = sink.addr().port();
    let sim = start_app(
        app()
            .rule(trusting(rule("by_name", &format!("https://localhost:{port}/cb")), &pki))
            .rule(trusting(rule("by_ip", &format!("https://127.0.0.1:{port}/cb")), &pki)),
    )
    .await;
    let cbs = send_text(&sim, "u2").await;
    assert_eq!(outcome_of(&cbs, "by_name"), DELIVERED);
    assert_eq!(outcome_of(&cbs, "by_ip"), DELIVERED);
    assert_eq!(sink.summary().received, 2);
    assert!(sink.base_url().starts_with("https://"));
}

#[tokio::test]
async fn https_to_an_unknown_or_wrong_ca_is_tls() {
    let pki = pki();
    let sink = pki.sink(false).await;
    let url = format!("https://127.0.0.1:{}/cb", sink.addr().port());
    let sim = start_app(
        app()
            .rule(rule("no_ca_file", &url))
            .rule(rule("wrong_ca_file", &url).ca_file(&pki.other_ca.cert)),
    )
    .await;
    let cbs = send_text(&sim, "u2").await;
    assert_eq!(outcome_of(&cbs, "no_ca_file"), TLS_FAILED);
    assert_eq!(outcome_of(&cbs, "wrong_ca_file"), TLS_FAILED);
    assert_eq!(sink.summary().received, 0);
}

#[tokio::test]
async fn mutual_tls_delivers_with_a_client_certificate_and_fails_without() {
    let pki = pki();
    let sink = pki.sink(true).await;
    let url = format!("https://localhost:{}/cb", sink.addr().port());
    let sim = start_app(
        app()
            .rule(presenting(trusting(rule("with_cert", &url), &pki), &pki.client))
            .rule(trusting(rule("without_cert", &url), &pki))
            .rule(presenting(
                trusting(rule("cert_of_another_ca", &url), &pki),
                &pki.other_client,
            )),
    )
    .await;
    let cbs = send_text(&sim, "u2").await;
    assert_eq!(outcome_of(&cbs, "with_cert"), DELIVERED);
    assert_eq!(outcome_of(&cbs, "without_cert"), TLS_FAILED);
    assert_eq!(outcome_of(&cbs, "cert_of_another_ca"), TLS_FAILED);
    assert_eq!(sink.summary().received, 1);
    // The failed handshakes did not stop the sink.
    let cbs = send_text(&sim, "u2").await;
    assert_eq!(outcome_of(&cbs, "with_cert"), DELIVERED);
    assert_eq!(sink.summary().received, 2);
}

/// The log line's detail says which side failed, as the provider's troubleshooting table
/// does: the receiver's certificate, or the receiver's verdict on ours. The log is the
/// binary's (`serve --log-format json`), read as a user would read it.
#[tokio::test]
async fn tls_failures_say_which_side_failed() {
    let pki = pki();
    let server_side = "the receiver's certificate was rejected";
    let our_side = "the receiver rejected our client certificate (mutual TLS)";
    let plain = pki.sink(false).await;
    let elsewhere = pki.sink_as(&pki.wrong_name, false).await;
    let mutual = pki.sink(true).await;
    let http = sink(Reply::ok()).await;
    let url = |sink: &Sink| format!("https://localhost:{}/cb", sink.addr().port());
    let ca = ("ca_file", pki.server_ca.cert.as_path());
    let rules = [
        toml_rule("no_ca_file", &url(&plain), &[]),
        toml_rule("other_ca", &url(&plain), &[("ca_file", &pki.other_ca.cert)]),
        toml_rule("wrong_name", &url(&elsewhere), &[ca]),
        toml_rule("no_client_cert", &url(&mutual), &[ca]),
        toml_rule(
            "other_client",
            &url(&mutual),
            &[&[ca][..], &client_keys(&pki.other_client)].concat(),
        ),
        toml_rule(
            "good_client",
            &url(&mutual),
            &[&[ca][..], &client_keys(&pki.client)].concat(),
        ),
        // https:// to a plain-HTTP receiver.
        toml_rule("plain_http", &http.url("/cb").replace("http://", "https://"), &[]),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
data_dir = "data"
[[apps]]
id = "app1"
token = "tok1"
timeout_secs = 2
retries = 0
max_rules = 8
{rules}"#
        ),
    )
    .unwrap();
    let (mut child, line, _stdout) = spawn_first_line(
        Command::new(BIN)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped()),
    );
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    let base = line
        .strip_prefix("callback-sim listening on ")
        .expect("the address line");
    let resp = reqwest::Client::new()
        .post(format!("{base}/app-id/app1/messages?wait=true"))
        .bearer_auth(TOKEN)
        .json(&json!({"from": "u1", "to": "u2", "msg": "hi"}))
        .send()
        .await
        .unwrap();
    let (status, answer) = status_json(resp).await;
    // Every callback was logged before the answer came.
    child.kill().unwrap();
    child.wait().unwrap();
    let log = log.join().unwrap();
    assert_eq!(status, 200, "{answer}");
    let outcome = |rule: &str| {
        let c = callbacks(&answer)
            .iter()
            .find(|c| c["rule"] == rule)
            .unwrap_or_else(|| panic!("{rule} in {answer}"));
        (c["outcome"].as_str().unwrap(), c["last_attempt"].as_str().unwrap())
    };
    assert_eq!(outcome("good_client"), ("delivered", "delivered"));
    let detail = |rule: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "callback" && v["rule"] == rule)
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no callback log line with a detail for {rule} in:\n{log}"))
    };
    for (rule, expected) in [
        ("no_ca_file", [server_side, "set ca_file"]),
        ("other_ca", [server_side, server_side]),
        ("wrong_name", [server_side, "not valid for name"]),
        ("no_client_cert", [our_side, "CertificateRequired"]),
        ("other_client", [our_side, our_side]),
        ("plain_http", ["serving HTTPS", "serving HTTPS"]),
    ] {
        let detail = detail(rule);
        assert_eq!(outcome(rule), ("stored", "tls"), "{rule}: {detail}");
        assert!(expected.iter().all(|e| detail.contains(e)), "{rule}: {detail}");
    }
}

/// The rule keys that present `client` as our certificate.
fn client_keys(client: &Pem) -> [(&'static str, &Path); 2] {
    [("client_cert", &client.cert), ("client_key", &client.key)]
}

/// One `[[apps.rules]]` table for a config file, with `keys` naming files.
fn toml_rule(name: &str, url: &str, keys: &[(&str, &Path)]) -> String {
    let mut text = format!("  [[apps.rules]]\n  name = \"{name}\"\n  url = \"{url}\"\n  secret = \"sec_{name}\"\n");
    for (key, path) in keys {
        text += &format!("  {key} = {:?}\n", path.display().to_string());
    }
    text
}

/// Starts the simulator with app1 and `rule`, and returns its startup error.
async fn startup_error(rule: RuleBuilder) -> String {
    // A fresh data dir each time: a failed start leaves its store open until the process ends.
    let tmp = tempfile::tempdir().unwrap();
    let config = Config::builder()
        .data_dir(&tmp.path().join("data"))
        .app(app1().rule(rule.clone()))
        .build()
        .expect("config itself is valid");
    match Server::start(config).await {
        Ok(_) => panic!("started with bad TLS files: {rule:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn bad_pem_files_stop_the_simulator_at_startup_naming_the_file() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let url = "https://127.0.0.1:9/cb";

    let e = startup_error(rule("r", url).ca_file(&junk)).await;
    assert!(
        e.contains("rule \"r\"") && e.contains("ca_file") && e.contains("junk.pem") && e.contains("no certificate"),
        "{e}"
    );
    // A key given as the certificate, and a certificate given as the key.
    let e = startup_error(rule("r", url).client_cert(&pki.client.key, &pki.client.cert)).await;
    assert!(
        e.contains("client_cert") && e.contains("client.key") && e.contains("no certificate"),
        "{e}"
    );
    // A key that belongs to another certificate.
    let e = startup_error(rule("r", url).client_cert(&pki.client.cert, &pki.other_client.key)).await;
    assert!(
        e.contains("client_key") && e.contains("other-client.key") && e.contains("not the private key"),
        "{e}"
    );
}

#[test]
fn sink_cli_serves_https_and_rejects_bad_files_with_exit_2() {
    let pki = pki();
    let mut child = Command::new(BIN)
        .args(["sink", "--listen", "127.0.0.1:0", "--quiet", "--tls-cert"])
        .arg(&pki.server.cert)
        .arg("--tls-key")
        .arg(&pki.server.key)
        .arg("--client-ca")
        .arg(&pki.client_ca.cert)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.starts_with("sink listening on https://127.0.0.1:"), "{line:?}");

    let bad = [
        (
            ["--tls-cert", "--tls-key"],
            [&pki.server.key, &pki.server.key],
            "server.key",
        ),
        (
            ["--tls-cert", "--tls-key"],
            [&pki.server.cert, &pki.client.key],
            "client.key",
        ),
        (
            ["--tls-cert", "--client-ca"],
            [&pki.server.cert, &pki.server.key],
            "server.key",
        ),
    ];
    for (flags, paths, named) in bad {
        let mut args = vec!["sink".into(), "--listen".into(), "127.0.0.1:0".into()];
        for (flag, path) in flags.iter().zip(paths) {
            args.push(flag.to_string());
            args.push(path.display().to_string());
        }
        if !flags.contains(&"--tls-key") {
            args.push("--tls-key".into());
            args.push(pki.server.key.display().to_string());
        }
        let out = Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    }
    // --client-ca alone is a usage error.
    let out = Command::new(BIN)
        .args(["sink", "--listen", "127.0.0.1:0", "--client-ca"])
        .arg(&pki.client_ca.cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_with_an_unusable_tls_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[[apps]]\nid = \"a\"\ntoken = \"t\"\n  [[apps.rules]]\n  name = \"r\"\n  url = \"https://127.0.0.1:9/\"\n  secret = \"s\"\n  ca_file = \"ca.pem\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("c.toml") && err.contains("ca_file") && err.contains("ca.pem") && err.contains("no certificate"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
}
