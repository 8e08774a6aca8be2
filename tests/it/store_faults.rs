//! The store can fail: a full disk drops callbacks (saying why), `/healthz` says so, and the
//! simulator recovers by itself once writes succeed; a `data_dir` that cannot be opened stops
//! `serve` at start, naming the path and the cause.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use callback_sim::{FinalOutcome, Message, Outcome, Reply, Server};

use crate::helpers::*;

/// A tmpfs of `size` mounted on a fresh temp dir, unmounted when dropped. `None`, with the
/// reason printed, where mounting is not allowed (not root, or no mount in a container):
/// the test that needs it is then skipped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(test: &str, options: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                eprintln!("SKIPPED {test}: cannot mount a tmpfs here ({why}); it needs root and mount(8)");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: whatever still holds a file in it lets go later.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes zeroes into `path` until the file system is full; answers how many bytes.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}

async fn health(server: &Server) -> (u16, serde_json::Value) {
    let resp = reqwest::get(format!("{}/healthz", server.base_url())).await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_full_disk_drops_callbacks_with_the_reason_and_the_store_recovers_by_itself() {
    let Some(fs) = Tmpfs::mount("store_faults::a_full_disk…", "size=16m") else {
        return;
    };
    let failing = sink(Reply::status(503)).await;
    let config = config()
        .data_dir(&fs.path().join("data"))
        .durable(true)
        .app(app1().retries(0).bans(false).rule(rule("r", &failing.url("/"))))
        .build()
        .unwrap();
    let server = Server::start(config).await.expect("starts on the tmpfs");
    let first = one_callback(&server).await;
    assert_eq!(first.outcome, FinalOutcome::Stored, "{first:?}");
    assert_eq!(health(&server).await.0, 200);

    // The disk fills up: the next failed callbacks cannot be stored.
    let filler = fs.path().join("filler");
    assert!(fill(&filler) > 0, "the filler wrote something");
    let mut dropped = None;
    for _ in 0..50 {
        let r = one_callback(&server).await;
        if r.outcome == FinalOutcome::Dropped {
            dropped = Some(r);
            break;
        }
    }
    let r = dropped.expect("a callback dropped once the disk is full");
    assert_eq!(r.last_attempt, Outcome::Status, "last_attempt unchanged: {r:?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("No space left on device")),
        "the reason is in the warnings: {r:?}"
    );
    let (code, h) = health(&server).await;
    assert_eq!(
        (code, &h["store"], &h["status"]),
        (503, &"failing".into(), &"degraded".into()),
        "{h}"
    );
    // Still serving: messages are accepted and attempted; once durable accept's log needs a
    // block the disk has not got, the answer says they are not on disk; the rules answer.
    let mut unwritten = None;
    for _ in 0..100 {
        let sent = server
            .send(APP, Message::text("u1", "u2", "m"))
            .await
            .expect("accepted");
        assert_eq!(sent.callbacks[0].outcome, FinalOutcome::Dropped, "{sent:?}");
        if sent.warnings.iter().any(|w| w.contains("could not be written to disk")) {
            unwritten = Some(sent);
            break;
        }
    }
    let sent = unwritten.expect("an answer saying its callbacks are not on disk");
    assert!(
        sent.warnings.iter().any(|w| w.contains("No space left on device")),
        "{:?}",
        sent.warnings
    );
    assert!(server.rules(APP).is_ok());

    // Room again: the store recovers without a restart, and without a write to tell it.
    std::fs::remove_file(&filler).unwrap();
    eventually("/healthz to answer 200 again", || async {
        let (code, h) = health(&server).await;
        (code == 200 && h["store"] == "ok").then_some(())
    })
    .await;
    let sent = server
        .send(APP, Message::text("u1", "u2", "m"))
        .await
        .expect("accepted");
    assert!(sent.warnings.is_empty(), "{:?}", sent.warnings);
    let stored = &sent.callbacks[0];
    assert_eq!(stored.outcome, FinalOutcome::Stored, "{stored:?}");
    assert!(stored.warnings.is_empty(), "{stored:?}");
    assert!(stored_total(&server) >= 2, "what was stored before is still there");
    server.shutdown().await;
}

/// Runs `serve` on a config whose `data_dir` is `data_dir`; answers its exit code and stderr.
fn serve_fails(data_dir: &Path) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[[apps]]\nid = \"a\"\ntoken = \"t\"\n",
            data_dir.display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_names(stderr: &str, path: &Path, cause: &str) {
    assert!(stderr.contains("cannot open the exception store"), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "the path: {stderr}");
    assert!(stderr.contains(cause), "the cause ({cause}): {stderr}");
}

#[test]
fn a_data_dir_that_cannot_be_opened_stops_serve_at_start_naming_the_path_and_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    // Not a directory.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (code, err) = serve_fails(&file);
    assert_eq!(code, Some(1), "{err}");
    assert_names(&err, &file, "File exists");

    // Corrupt: sled cannot read its own files.
    let corrupt = tmp.path().join("corrupt");
    std::fs::create_dir_all(corrupt.join("store.sled")).unwrap();
    std::fs::write(corrupt.join("store.sled/conf"), [0xde, 0xad, 0xbe, 0xef].repeat(25)).unwrap();
    let (code, err) = serve_fails(&corrupt);
    assert_eq!(code, Some(1), "{err}");
    assert_names(&err, &corrupt, "sled");

    // Locked by another process.
    let locked: PathBuf = tmp.path().join("locked");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[[apps]]\nid = \"a\"\ntoken = \"t\"\n",
            locked.display().to_string()
        ),
    )
    .unwrap();
    let (first, _) = spawn_serve(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::piped()),
    );
    let (code, err) = serve_fails(&locked);
    stop_serve(first);
    assert_eq!(code, Some(1), "{err}");
    assert_names(&err, &locked, "lock");

    // Not writable: a read-only file system (root may write anywhere else).
    if let Some(ro) = Tmpfs::mount("store_faults::…not writable", "size=1m,ro") {
        let (code, err) = serve_fails(&ro.path().join("data"));
        assert_eq!(code, Some(1), "{err}");
        assert_names(&err, &ro.path().join("data"), "Read-only file system");
    }
}
