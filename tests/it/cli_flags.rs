//! Command-line details: `sink` flags taken as written, `sign --help`, and logs that suit a
//! pipe (docs/behaviour.md §9).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::helpers::{BIN, http_post, refused_port, spawn_serve, stop_serve, wait_with_timeout};

/// A `callback-sim sink` process, killed if a test fails before [`stop`](Self::stop).
struct SinkProcess {
    child: Option<Child>,
    addr: String,
    /// Its stdout, kept open: it prints its summary there when stopped.
    _stdout: BufReader<ChildStdout>,
}

impl SinkProcess {
    /// Starts `callback-sim sink` with `args` on a free port; `Err` says what it printed
    /// instead of its address.
    fn start(args: &[&str]) -> Result<Self, String> {
        let mut child = Command::new(BIN)
            .args(["sink", "--listen", "127.0.0.1:0", "--quiet"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        match line.trim().strip_prefix("sink listening on http://") {
            Some(addr) => Ok(Self {
                child: Some(child),
                addr: addr.to_string(),
                _stdout: out,
            }),
            None => {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                let status = wait_with_timeout(child, Duration::from_secs(20));
                Err(format!("{status}: stdout {line:?}, stderr {err:?}"))
            }
        }
    }

    /// Ctrl-C, and the exit status 0.
    fn stop(mut self) {
        let child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert_eq!(wait_with_timeout(child, Duration::from_secs(20)).code(), Some(0));
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// POSTs a callback and returns the status line and the first `limit` bytes of the answer.
fn post_head(addr: &str, limit: usize) -> String {
    let body = r#"{"callId":"a#1","timestamp":1,"security":"x"}"#;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /cb HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = vec![0u8; limit];
    let mut got = 0;
    while got < limit {
        match s.read(&mut out[got..]).unwrap() {
            0 => break,
            n => got += n,
        }
    }
    String::from_utf8_lossy(&out[..got]).into_owned()
}

#[test]
fn sink_fail_rate_0_means_no_failures_even_with_a_status() {
    let sink = SinkProcess::start(&["--status", "503", "--fail-rate", "0"]).unwrap();
    for _ in 0..3 {
        let head = post_head(&sink.addr, 12);
        assert_eq!(head, "HTTP/1.1 200", "an explicit --fail-rate 0 fails nothing");
    }
    sink.stop();
    let sink = SinkProcess::start(&["--status", "503"]).unwrap();
    assert_eq!(
        post_head(&sink.addr, 12),
        "HTTP/1.1 503",
        "--status alone fails everything"
    );
    sink.stop();
}

#[test]
fn sink_body_chars_does_not_allocate_the_whole_body_up_front() {
    let sink = SinkProcess::start(&["--body-chars", "99999999999"]).unwrap_or_else(|e| panic!("{e}"));
    // The answer starts at once; the client reads a little and hangs up.
    let head = post_head(&sink.addr, 64 * 1024);
    assert!(head.starts_with("HTTP/1.1 200"), "{:?}", &head[..head.len().min(200)]);
    assert!(head.ends_with("xxxxxxxx"), "the body is streamed");
    sink.stop();
    // A small body is still answered whole.
    let sink = SinkProcess::start(&["--body-chars", "5"]).unwrap();
    let answer = post_head(&sink.addr, 4096);
    assert!(answer.ends_with("\r\n\r\nxxxxx"), "{answer}");
    sink.stop();
}

#[test]
fn sign_help_describes_every_flag() {
    let out = Command::new(BIN).args(["sign", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = help.lines().map(str::trim).collect();
    for flag in ["--call-id <CALL_ID>", "--secret <SECRET>", "--timestamp <TIMESTAMP>"] {
        let at = lines
            .iter()
            .position(|l| l.starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} missing:\n{help}"));
        // On the flag's line, or on the next one when clap puts descriptions below.
        let same_line = lines[at][flag.len()..].trim();
        let description = if same_line.is_empty() {
            lines.get(at + 1).copied().unwrap_or_default()
        } else {
            same_line
        };
        assert!(
            !description.is_empty() && !description.starts_with('-'),
            "{flag} has no description:\n{help}"
        );
    }
}

/// Runs `serve` with `args` on a config whose one rule is refused (so each message makes a
/// `callback` log line), sends one message, stops it, and returns its stderr.
fn serve_logs(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let refused = refused_port();
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[[apps]]\nid = \"a\"\ntoken = \"t\"\nretries = 0\n  [[apps.rules]]\n  name = \"r\"\n  url = \"http://127.0.0.1:{refused}/\"\n  secret = \"s\"\n  [[apps.rules]]\n  name = \"mod\"\n  kind = \"pre_send\"\n  url = \"http://127.0.0.1:{refused}/\"\n  secret = \"s\"\n"
        ),
    )
    .unwrap();
    let (child, base) = spawn_serve(
        Command::new(BIN)
            .arg("serve")
            .args(args)
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stderr(Stdio::piped()),
    );
    let answer = http_post(
        base.trim_start_matches("http://"),
        "/app-id/a/messages?wait=true",
        Some("t"),
        r#"{"from":"u1","to":"u2","msg":"hi"}"#,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stop_serve(child)
}

#[test]
fn text_logs_have_no_colours_when_not_on_a_terminal() {
    let logs = serve_logs(&[]);
    assert!(logs.contains("callback"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in a piped log: {logs:?}");
}

#[test]
fn json_logs_give_latency_as_a_number() {
    let logs = serve_logs(&["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["message"] == "callback")
        .collect();
    for kind in ["post_send", "pre_send"] {
        let line = lines
            .iter()
            .find(|l| (kind == "pre_send") == (l["kind"] == "pre_send"))
            .unwrap_or_else(|| panic!("no {kind} callback line in {logs}"));
        assert!(line["latency_ms"].is_number(), "{kind}: {line}");
    }
}
