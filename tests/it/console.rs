//! The console in a real browser (docs/behaviour.md §12): headless Chromium driven over
//! WebDriver (chromedriver's HTTP API, through reqwest). Without Chromium and chromedriver the
//! test says so and passes — unless `CONSOLE_BROWSER_REQUIRED` is set (`.ci/run` sets it), then
//! it fails. `CONSOLE_SCREENSHOT=PATH` also saves a screenshot of the console there (the
//! README's docs/console.png), and `CONSOLE_SCREENSHOT_NARROW=PATH` one in a narrow window.

use std::process::{Child, Command, Stdio};

use callback_sim::{Message, Reply, Signature, Sink};
use serde_json::{Value, json};

use crate::helpers::*;

const CHROMIUM: &[&str] = &[
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
];
const DRIVER: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];
/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver, started for one test and killed (by its id) when dropped.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session: ended (and the browser closed by its driver) when dropped, also when
/// a test fails half-way.
struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Driver,
}

impl Drop for Browser {
    fn drop(&mut self) {
        use std::io::{Read, Write};
        // Plain blocking HTTP, best effort: this may run while a failed test unwinds.
        let addr = self._driver.base.trim_start_matches("http://");
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(WAIT));
            let req = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = s.write_all(req.as_bytes());
            // The answer's head: the session is gone (the connection may stay open).
            let _ = s.read(&mut [0u8; 1024]);
        }
    }
}

/// The browser and its driver, or why the test cannot run.
async fn browser() -> Result<Browser, String> {
    let chromium = CHROMIUM.iter().find(|p| std::path::Path::new(p).exists());
    let driver = DRIVER.iter().find(|p| std::path::Path::new(p).exists());
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        return Err("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)".into());
    };
    let port = refused_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {driver}: {e}"))?;
    let driver = Driver {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let status = format!("{}/status", driver.base);
    eventually("chromedriver to answer", || {
        let http = http.clone();
        let status = status.clone();
        async move {
            let v: Value = http.get(&status).send().await.ok()?.json().await.ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r)
        }
    })
    .await;
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": chromium,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,900", "--no-first-run", "--disable-extensions"]}}}});
    let v: Value = http
        .post(format!("{}/session", driver.base))
        .json(&caps)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let session = v["value"]["sessionId"]
        .as_str()
        .ok_or_else(|| format!("no browser session: {v}"))?
        .to_string();
    Ok(Browser {
        http,
        session,
        _driver: driver,
    })
}

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    async fn try_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let url = format!("{}/session/{}{path}", self._driver.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        match v["value"].get("error") {
            Some(_) => Err(v["value"].clone()),
            None => Ok(v["value"].clone()),
        }
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and answers what it returns.
    async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    async fn find(&self, css: &str) -> Result<String, Value> {
        let v = self
            .try_call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(v[ELEMENT].as_str().unwrap().to_string())
    }

    /// Clicks `css`, again when the page redrew it between finding and clicking (a stale
    /// element) or something was briefly over it; fails after the wait with the last error.
    async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let clicked = match self.find(css).await {
                Ok(id) => {
                    self.try_call(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({})))
                        .await
                }
                Err(e) => Err(e),
            };
            match clicked {
                Ok(_) => return,
                Err(e) if tokio::time::Instant::now() > deadline => panic!("cannot click {css}: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }

    /// Types `text` into `css`, again if the page redrew it meanwhile (a stale element).
    async fn type_into(&self, css: &str, text: &str) {
        eventually(&format!("to type into {css}"), || async {
            let id = self.find(css).await.ok()?;
            let (clear, value) = (format!("/element/{id}/clear"), format!("/element/{id}/value"));
            self.try_call(reqwest::Method::POST, &clear, Some(json!({})))
                .await
                .ok()?;
            self.try_call(reqwest::Method::POST, &value, Some(json!({ "text": text })))
                .await
                .ok()?;
            let typed = self
                .js("return document.querySelector(arguments[0]).value;", json!([css]))
                .await;
            (typed == text).then_some(())
        })
        .await
    }

    /// The visible text of the first element matching `css` ("" when there is none).
    async fn text(&self, css: &str) -> String {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                json!([css]),
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits (bounded) until the text of `css` contains `want`; answers that text.
    async fn wait_text(&self, css: &str, want: &str) -> String {
        eventually(&format!("{css} to show {want:?}"), || async {
            let t = self.text(css).await;
            t.contains(want).then_some(t)
        })
        .await
    }

    /// Waits (bounded) until `css` is shown (or hidden).
    async fn wait_shown(&self, css: &str, shown: bool) {
        let script = "const e = document.querySelector(arguments[0]); return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0;";
        eventually(
            &format!("{css} to be {}", if shown { "shown" } else { "hidden" }),
            || async { (self.js(script, json!([css])).await.as_bool() == Some(shown)).then_some(()) },
        )
        .await
    }

    async fn window(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    async fn screenshot(&self, path: &str) {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

#[tokio::test]
async fn the_console_signs_in_by_fragment_shows_callbacks_live_resends_resets_and_replays() {
    let browser = match browser().await {
        Ok(b) => b,
        Err(why) if std::env::var_os("CONSOLE_BROWSER_REQUIRED").is_none() => {
            eprintln!("SKIPPED the console's browser test: {why}");
            return;
        }
        Err(why) => panic!("CONSOLE_BROWSER_REQUIRED is set, but: {why}"),
    };
    let good = Sink::recording(Some("sec_sync")).await.unwrap();
    let bad = sink(Reply::status(500)).await;
    // One message: the flaky rule fails twice (agora retries once) and is banned for 60 s.
    let sim = start(
        config().ban(2, 60.0, 60.0, 5).app(
            app1()
                .rule(rule("sync", &good.url("/cb")))
                .rule(rule("flaky", &bad.url("/hook"))),
        ),
    )
    .await;
    let base = sim.base_url();

    // Signed in by the fragment, which leaves the address bar at once.
    browser.goto(&format!("{base}/console#app={APP}&token={TOKEN}")).await;
    browser.wait_shown("#console", true).await;
    browser.wait_text("#live", "live").await;
    let href = browser.js("return location.href;", json!([])).await;
    assert_eq!(href, format!("{base}/console"), "the token left the URL");

    // A callback appears live.
    let sent = sim.send(APP, Message::text("u1", "u2", "m")).await.unwrap();
    let sync = sent
        .callbacks
        .iter()
        .find(|c| c.rule.as_str() == "sync")
        .unwrap()
        .clone();
    let row = format!("#feed tr[data-call-id=\"{}\"]", sync.call_id);
    browser.wait_shown(&row, true).await;
    assert!(browser.text(&row).await.contains("delivered"));

    // Its detail: the attempt and the exact request; copy as curl.
    browser.click(&row).await;
    browser.wait_shown("#detail", true).await;
    assert_eq!(browser.text("#detail-callid").await, sync.call_id);
    assert_eq!(browser.text("#detail-url").await, good.url("/cb"));
    assert!(browser.text("#detail-attempts").await.contains("delivered"));
    let received = arrived(&good, 1).await.remove(0);
    let raw = browser
        .js(
            "return document.getElementById('detail-body-raw').textContent;",
            json!([]),
        )
        .await;
    assert_eq!(raw.as_str().unwrap().as_bytes(), &received.body[..], "the exact body");
    browser.click("#copy-curl").await;
    let curl = browser.wait_text("#curl-text", "--data-binary").await;
    assert!(curl.contains(&good.url("/cb")), "{curl}");

    // Resend it edited: the receiver gets it signed again.
    let edited = browser
        .js(
            "const t = document.getElementById('resend-body'); t.value = t.value.replace('\"msg\": \"m\"', '\"msg\": \"edited in the browser\"'); return t.value;",
            json!([]),
        )
        .await;
    assert!(edited.as_str().unwrap().contains("edited in the browser"), "{edited}");
    browser.click("#resend-send").await;
    browser.wait_text("#resend-result", "delivered").await;
    let again = arrived(&good, 2).await.remove(1);
    assert_eq!(again.signature, Signature::Valid, "{:?}", again.json());
    assert_eq!(again.json()["payload"]["bodies"][0]["msg"], "edited in the browser");
    assert_eq!(again.json()["callId"], sync.call_id.as_str());

    if let Some(path) = std::env::var_os("CONSOLE_SCREENSHOT") {
        // A fuller feed for the picture, the detail of a delivered callback open.
        for to in ["u3", "u4", "g7"] {
            sim.send(APP, Message::text("u1", to, "hello")).await.unwrap();
        }
        browser.wait_text("#feed-count", "shown").await;
        eventually("the feed to fill", || async {
            let n = browser
                .js("return document.querySelectorAll('#feed tbody tr').length;", json!([]))
                .await;
            (n.as_u64() >= Some(8)).then_some(())
        })
        .await;
        // The detail of the newest delivered callback, from its top.
        browser.click("#feed tbody tr:nth-child(2)").await;
        browser.wait_shown("#detail", true).await;
        browser.screenshot(path.to_str().unwrap()).await;
    }
    browser.click("#detail-close").await;
    browser.wait_shown("#detail", false).await;

    // The flaky rule is banned (with a countdown); a reset makes it active again.
    browser.click(".tab[data-tab=rules]").await;
    let flaky = "#rules tr[data-rule=flaky]";
    browser.wait_text(&format!("{flaky} .state"), "banned").await;
    let left = browser.text(&format!("{flaky} .countdown")).await;
    assert!(left.ends_with(" s"), "a countdown: {left:?}");
    browser.click(&format!("{flaky} button.reset")).await;
    browser.wait_text(&format!("{flaky} .state"), "active").await;
    assert_eq!(rule_state(&sim, "flaky").ban_level, 0);

    // The store holds the flaky rule's callback: replay the bucket to a typed URL; it empties.
    browser.click(".tab[data-tab=store]").await;
    browser.wait_shown("#buckets tbody tr", true).await;
    let stored = stored_total(&sim);
    assert!(stored >= 1);
    // Its items, and one of them in the detail.
    browser.click("#buckets tbody tr button.items").await;
    browser.wait_shown("#items tbody tr", true).await;
    let listed = browser
        .js("return document.querySelectorAll('#items tbody tr').length;", json!([]))
        .await;
    assert_eq!(listed.as_u64(), Some(stored));
    browser.click("#items tbody tr").await;
    browser.wait_shown("#detail", true).await;
    assert!(
        browser.text("#detail-summary").await.contains("banned")
            || browser.text("#detail-summary").await.contains("status")
    );
    browser.click("#detail-close").await;
    browser.wait_shown("#detail", false).await;
    browser
        .type_into("#buckets tbody tr input.target", &good.url("/replayed"))
        .await;
    browser.click("#buckets tbody tr button.replay").await;
    let result = browser
        .wait_text("#store-result", &format!("delivered {stored},"))
        .await;
    assert!(result.contains("success"), "{result}");
    browser.wait_shown("#store-empty", true).await;
    assert_eq!(stored_total(&sim), 0);
    let replayed = good.received().iter().filter(|c| c.path == "/replayed").count();
    assert_eq!(replayed as u64, stored);

    // The send form: a message, and an event of the catalog (GET /catalog), its fields built
    // from the catalog and pre-filled with its example request.
    browser.click(".tab[data-tab=trigger]").await;
    browser.click("#trigger-form button[type=submit]").await;
    browser
        .wait_text("#trigger-result", "sync (post_send) chat → delivered")
        .await;
    eventually("the catalog's events in the form", || async {
        let n = browser
            .js(
                "return document.querySelectorAll('#trigger-kind option[value=user_status]').length;",
                json!([]),
            )
            .await;
        (n.as_u64() == Some(1)).then_some(())
    })
    .await;
    browser
        .js(
            "const s = document.getElementById('trigger-kind'); s.value = 'user_status'; s.dispatchEvent(new Event('change'));",
            json!([]),
        )
        .await;
    browser.wait_shown("#event-fields input[data-field=user]", true).await;
    let status = browser
        .js(
            "return document.querySelector('#event-fields [data-field=status]').value;",
            json!([]),
        )
        .await;
    assert_eq!(status, "online", "pre-filled from the catalog's example request");
    let client_ip = browser
        .js(
            "return document.querySelector('#event-fields [data-field=client_ip]').value;",
            json!([]),
        )
        .await;
    assert_eq!(client_ip, "127.0.0.1", "a plain default is a value");
    let reason = browser
        .js(
            "return document.querySelector('#event-fields [data-field=reason]').value;",
            json!([]),
        )
        .await;
    assert_eq!(reason, "", "a default in parentheses describes, it is not sent");
    browser.type_into("#event-fields input[data-field=user]", "u9").await;
    let before = good.received().len();
    browser.click("#trigger-form button[type=submit]").await;
    browser
        .wait_text("#trigger-result", "sync (post_send) user_status → delivered")
        .await;
    let got = arrived(&good, before + 1).await.remove(before);
    let body = String::from_utf8_lossy(&got.body).to_string();
    assert!(body.contains("u9") && body.contains(r#""status":"online""#), "{body}");

    // Readable in a narrow window: nothing wider than the window but the tables' own scroll.
    browser.window(420, 900).await;
    browser.click(".tab[data-tab=feed]").await;
    browser.click(&row).await;
    browser.wait_shown("#detail", true).await;
    let overflow = browser
        .js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            json!([]),
        )
        .await;
    assert!(
        overflow.as_i64() <= Some(1),
        "the page scrolls sideways by {overflow} px"
    );
    if let Some(path) = std::env::var_os("CONSOLE_SCREENSHOT_NARROW") {
        browser.screenshot(path.to_str().unwrap()).await;
    }
    browser.window(1400, 900).await;

    // A wrong token: the sign-in again, and no data on the page.
    browser.goto("about:blank").await;
    browser.goto(&format!("{base}/console#app={APP}&token=wrong")).await;
    browser.wait_shown("#signin-error", true).await;
    assert!(browser.text("#signin-error").await.contains("Wrong app id or token"));
    browser.wait_shown("#console", false).await;
    let rows = browser
        .js(
            "return document.querySelectorAll('#feed tbody tr, #rules tbody tr, #buckets tbody tr').length;",
            json!([]),
        )
        .await;
    assert_eq!(rows, 0);
    drop(browser);
}

#[tokio::test]
async fn the_pages_need_no_token_and_root_redirects_to_the_console() {
    let sim = start_app(app1()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = client.get(sim.base_url()).send().await.unwrap();
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(root.headers()["location"], "/console");
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let resp = client.get(format!("{}{path}", sim.base_url())).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers()["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let policy = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        // Nothing is loaded from another host (the policy above forbids it too).
        let text = resp.text().await.unwrap();
        let attrs: &[&str] = if kind == "text/javascript" {
            &["fetch("]
        } else {
            &["src=\"", "href=\"", "url("]
        };
        for attr in attrs {
            for (i, _) in text.match_indices(attr) {
                let target = &text[i + attr.len()..];
                let target = target.trim_start_matches('"');
                assert!(
                    target.starts_with('/') || target.starts_with("data:"),
                    "{path}: {}",
                    &target[..target.len().min(40)]
                );
            }
        }
        assert!(!text.contains("@import"), "{path}");
    }
}

#[test]
fn serve_prints_a_link_that_signs_the_console_in_and_logs_no_token() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[[apps]]\nid = \"a1\"\ntoken = \"T0K&EN#x\"\n[[apps]]\nid = \"a2\"\ntoken = \"t2\"\n",
    )
    .unwrap();
    let (child, first, mut out) = spawn_first_line(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "debug")
            .stderr(Stdio::piped()),
    );
    let base = first.strip_prefix("callback-sim listening on ").unwrap().to_string();
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        lines.push(line.trim().to_string());
    }
    assert_eq!(
        lines,
        [
            format!("console: {base}/console#app=a1&token=T0K%26EN%23x"),
            format!("console: {base}/console#app=a2&token=t2"),
        ]
    );
    let logs = stop_serve(child);
    assert!(!logs.contains("T0K"), "the token is in the log: {logs}");
}
