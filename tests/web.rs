//! The web page in a real browser: the daemon holds a conflict, headless Chromium (driven
//! through ChromeDriver's W3C WebDriver API) opens the page, picks the right candidate and
//! confirms — and the fake tracker receives the held plays. Needs Debian's `chromium` and
//! `chromium-driver` (.ci/run installs them); without them the test skips with a notice,
//! except in CI, where it fails.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::plex::TOKEN;
use support::{eventually, samples};

const WAIT: Duration = Duration::from_secs(30);
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Option<Driver> {
        let (chromium, driver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !std::path::Path::new(chromium).exists() || !std::path::Path::new(driver).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must install chromium and chromium-driver"
            );
            eprintln!("NOTICE: chromium/chromedriver not installed; skipping the browser test");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut d = Driver {
            child,
            base,
            session: String::new(),
            http,
        };
        eventually("chromedriver ready", WAIT, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })
        .await;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=390,844"
            ]}
        }}});
        let v = d.call("POST", "/session", caps).await;
        d.session = v["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_string();
        Some(d)
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{}", self.base, path);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                "POST",
                &self.s("/element"),
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_string)
    }

    async fn wait_for(&self, css: &str) -> String {
        for _ in 0..300 {
            if let Some(e) = self.find(css).await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let src = self.call("GET", &self.s("/source"), Value::Null).await;
        panic!(
            "no element {css} on the page:\n{}",
            src.as_str().unwrap_or("")
        );
    }

    async fn click(&self, element: &str) {
        self.call(
            "POST",
            &self.s(&format!("/element/{element}/click")),
            json!({}),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let e = self.wait_for(css).await;
        self.call("GET", &self.s(&format!("/element/{e}/text")), Value::Null)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// A hostile page on another origin: fires every simple (preflight-free) request a page can
/// send with the user's cookies at the daemon's state-changing endpoints, and a form post.
async fn evil_page(daemon: &str, conflict_id: &str) -> std::sync::Arc<support::FakeServer> {
    let html = format!(
        r#"<!doctype html><html><body><iframe name="sink"></iframe>
<form id="f" method="POST" target="sink" enctype="text/plain" action="http://{daemon}/api/conflicts/{conflict_id}/resolve">
<input name='{{"action":"ignore","x":"' value='"}}'></form>
<script>
const t = "http://{daemon}";
const o = (body) => ({{ method: "POST", mode: "no-cors", credentials: "include", headers: {{ "Content-Type": "text/plain" }}, body }});
Promise.allSettled([
  fetch(t + "/api/poll", o("{{}}")),
  fetch(t + "/api/backfill", o(JSON.stringify({{ since: "2020-01-01" }}))),
  fetch(t + "/api/outbox/retry", o("{{}}")),
  fetch(t + "/api/conflicts/{conflict_id}/resolve", o(JSON.stringify({{ action: "ignore" }}))),
]).then(() => {{
  document.getElementById("f").submit();
  setTimeout(() => {{ const p = document.createElement("p"); p.id = "done"; document.body.append(p); }}, 500);
}});
</script></body></html>"#
    );
    support::FakeServer::start(std::sync::Arc::new(move |_seen| {
        let html = html.clone();
        Box::pin(async move { support::respond(200, "text/html", html) })
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_a_conflict_in_the_browser_delivers_the_held_plays() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let Some(driver) = Driver::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_plex, tracker, cfg_text) = support::office_conflict(dir.path()).await;
    let out = daemon::cli(
        &dir.path().join("plexsync.toml"),
        &["secret", "set", "plex-token"],
        Some(TOKEN),
    );
    assert!(out.status.success());
    let d = Daemon::start(dir.path(), &cfg_text).await;
    assert_eq!(
        support::post_sample(&d.webhook_url, support::NEW_AGENT_SCROBBLE).await,
        200
    );
    let mut conflicts = Value::Null;
    for _ in 0..200 {
        conflicts = d.api("GET", "/api/conflicts").await;
        if conflicts["total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        conflicts["total"],
        1,
        "a conflict holds the play: {conflicts}\n{}",
        d.log()
    );
    assert!(tracker.watched().is_empty());

    // Without a session the page asks to log in and shows nothing.
    driver
        .call(
            "POST",
            &driver.s("/url"),
            json!({"url": format!("http://{}/", d.addr)}),
        )
        .await;
    let login_form = driver.wait_for("form#auth:not([hidden])").await;
    assert!(!login_form.is_empty());
    assert!(
        driver.text("#msg").await.contains("Log in"),
        "the page says why it shows nothing"
    );

    // The link `plexsync web-url` prints logs the browser in (the token is in the fragment).
    let link = d.cli(&["web-url"], None);
    assert!(link.status.success());
    let link = String::from_utf8_lossy(&link.stdout).trim().to_string();
    assert!(link.contains("/#token="), "{link}");
    driver
        .call("POST", &driver.s("/url"), json!({"url": link}))
        .await;
    driver.wait_for("#logout:not([hidden])").await;
    let shown = driver.call("GET", &driver.s("/url"), Value::Null).await;
    assert!(
        !shown.as_str().unwrap_or("").contains("token="),
        "the token is dropped from the address bar: {shown}"
    );

    // A page of another origin (same host, another port: a *same-site* page, to which
    // SameSite=Strict cookies are still sent) tries every state change it can make
    // without a preflight. The daemon refuses them all.
    let conflict_id = conflicts["items"][0]["id"].as_str().unwrap().to_string();
    let evil = evil_page(&d.addr, &conflict_id).await;
    let refused_before = d.log().matches("admin request refused").count();
    driver
        .call("POST", &driver.s("/url"), json!({"url": evil.url()}))
        .await;
    driver.wait_for("#done").await;
    eventually("the daemon refused the forged requests", WAIT, || {
        (d.log().matches("admin request refused").count() >= refused_before + 5).then_some(())
    })
    .await;
    assert_eq!(d.api("GET", "/api/conflicts").await["total"], 1);
    assert_eq!(d.status().await["polls"], 0, "no poll ran");
    // The browser did send the session cookie (a same-site page): the refusals are the
    // CSRF rules', not a missing credential.
    assert!(
        d.log().contains("a request from another site's page"),
        "{}",
        d.log()
    );
    assert!(tracker.watched().is_empty());

    // The page, at phone width, on the Conflicts tab (logged in by the link).
    driver
        .call(
            "POST",
            &driver.s("/url"),
            json!({"url": format!("http://{}/index.html#conflicts", d.addr)}),
        )
        .await;
    let card = driver.text("article[data-conflict-id]").await;
    if let Ok(path) = std::env::var("PLEXSYNC_SCREENSHOT_B64") {
        let shot = driver
            .call("GET", &driver.s("/screenshot"), Value::Null)
            .await;
        std::fs::write(format!("{path}.before"), shot.as_str().unwrap_or("")).unwrap();
    }
    assert!(
        card.contains("The Office") && card.contains("1 play(s) waiting"),
        "{card}"
    );
    let radio = driver
        .wait_for("article[data-conflict-id] input[value=\"office-us\"]")
        .await;
    driver.click(&radio).await;
    let confirm = driver
        .wait_for("article[data-conflict-id] button.confirm")
        .await;
    driver.click(&confirm).await;
    let text = {
        let mut t = String::new();
        for _ in 0..100 {
            t = driver.text("#msg").await;
            if t.contains("Resolved") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        t
    };
    assert!(
        text.contains("Resolved: 1 play(s) released, 1 episode(s) queued"),
        "{text}"
    );

    // The tracker receives the held play on the show the person chose.
    eventually("the held play reaches the tracker", WAIT, || {
        tracker
            .watched()
            .contains_key(&("office-us".to_string(), 1, 1))
            .then_some(())
    })
    .await;
    assert_eq!(d.api("GET", "/api/conflicts").await["total"], 0);
    // The choice is a manual mapping future plays reuse.
    let maps = d.api("GET", "/api/mappings?filter=all").await;
    let m = &maps["items"][0];
    assert_eq!(m["tracker"]["id"], "office-us");
    assert_eq!(m["manual"], true);
    // A picture for people reviewing the change.
    let shot = driver
        .call("GET", &driver.s("/screenshot"), Value::Null)
        .await;
    assert!(shot.as_str().is_some_and(|s| s.len() > 1000));
    if let Ok(path) = std::env::var("PLEXSYNC_SCREENSHOT_B64") {
        std::fs::write(path, shot.as_str().unwrap_or("")).unwrap();
    }
    driver.call("DELETE", &driver.s(""), Value::Null).await;
}
