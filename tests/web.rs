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

    // The page, at phone width, on the Conflicts tab.
    driver
        .call(
            "POST",
            &driver.s("/url"),
            json!({"url": format!("http://{}/#conflicts", d.addr)}),
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
