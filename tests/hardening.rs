//! Hardening against hostile input and careless deployments (issue 10, observations 6, 9 and
//! 10b), against the real binary: a show title cannot forge a log line or put terminal escapes
//! on stderr; a Plex that redirects gets no token sent elsewhere and the error names the
//! target; a store file left open to group/others is made private at start-up, with a warning.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::plex::TOKEN;
use support::{FakeServer, Seen, eventually, multipart, respond};

const WAIT: Duration = Duration::from_secs(20);

/// A forged log line (in the layout of the daemon's own lines) and terminal escapes: clear the
/// screen, colour, set the window title, ring the bell.
const FORGED: &str = "\n2026-01-01T00:00:00Z INFO forged";
const ESCAPES: &str = "\u{1b}[2J\u{1b}[31m\u{1b}]0;pwned\u{7}";

/// A `media.scrobble` of an episode in the shape Plex posts (legacy TVDB agent, the owner's
/// account), whose show and episode titles carry `FORGED` and `ESCAPES`.
fn hostile_scrobble() -> Value {
    let show = format!("Innocent Show{FORGED}{ESCAPES}");
    json!({
        "event": "media.scrobble",
        "user": true,
        "owner": true,
        "Account": {
            "id": 1,
            "thumb": "https://plex.tv/users/0123456789abcdef/avatar?c=1700000000",
            "title": format!("owner{ESCAPES}")
        },
        "Server": {
            "title": "nas",
            "uuid": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
        },
        "Player": {
            "local": true,
            "publicAddress": "192.0.2.10",
            "title": "Living Room TV",
            "uuid": "a1b2c3d4e5f60718-com-plexapp-android"
        },
        "Metadata": {
            "librarySectionType": "show",
            "ratingKey": "77102",
            "key": "/library/metadata/77102",
            "parentRatingKey": "77101",
            "grandparentRatingKey": "77100",
            "guid": "com.plexapp.agents.thetvdb://999001/1/2?lang=en",
            "parentGuid": "com.plexapp.agents.thetvdb://999001/1?lang=en",
            "grandparentGuid": "com.plexapp.agents.thetvdb://999001?lang=en",
            "type": "episode",
            "title": format!("Pilot{FORGED} again{ESCAPES}"),
            "grandparentTitle": show,
            "parentTitle": "Season 1",
            "index": 2,
            "parentIndex": 1,
            "lastViewedAt": 1_767_225_600,
            "year": 2024,
            "addedAt": 1_767_000_000,
            "updatedAt": 1_767_000_000
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_show_title_cannot_forge_a_log_line_or_reach_the_terminal() {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let cfg = daemon::config(
        "http://127.0.0.1:9",
        &support::dead_url(),
        "[poll]\nenabled = false\n",
    );
    let d = Daemon::start(dir.path(), &cfg).await;
    let (ct, body) = multipart(&hostile_scrobble(), None);
    let r = reqwest::Client::new()
        .post(&d.webhook_url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    // The play is journaled and logged with its show title.
    let log = eventually("the journaled play in the log", WAIT, || {
        let log = d.log();
        log.contains("webhook play journaled").then_some(log)
    })
    .await;
    assert!(
        !log.contains('\u{1b}') && !log.contains('\u{7}'),
        "raw terminal escapes on stderr:\n{log:?}"
    );
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00Z"),
            "a forged line:\n{log}"
        );
        assert!(
            !line.contains("INFO forged") || line.contains("\\n2026-01-01T00:00:00Z INFO forged"),
            "the forged text stands on a line of its own:\n{line}"
        );
    }
    // Still readable: the escaped title is there, on the daemon's own line.
    let journaled = log
        .lines()
        .find(|l| l.contains("webhook play journaled"))
        .unwrap();
    assert!(
        journaled.contains(r"show=Innocent Show\n2026-01-01T00:00:00Z INFO forged\u{1b}[2J"),
        "{journaled}"
    );
}

/// A fake server that records every request and answers with `answer`.
async fn recording(
    answer: impl Fn(&Seen) -> hyper::Response<http_body_util::Full<bytes::Bytes>>
    + Send
    + Sync
    + 'static,
) -> (Arc<FakeServer>, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (log, answer) = (seen.clone(), Arc::new(answer));
    let server = FakeServer::start(Arc::new(move |s: Seen| {
        let (log, answer) = (log.clone(), answer.clone());
        Box::pin(async move {
            let r = answer(&s);
            log.lock().unwrap().push(s);
            r
        })
    }))
    .await;
    (server, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plex_redirect_is_not_followed_and_status_names_its_target() {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    // Where the redirect points: another loopback server that would answer like a PMS.
    let (elsewhere, elsewhere_seen) = recording(|_| {
        respond(
            200,
            "text/xml;charset=utf-8",
            r#"<MediaContainer size="0" claimed="1" machineIdentifier="ab" version="1.40.0"/>"#,
        )
    })
    .await;
    let target = format!("{}/moved", elsewhere.url());
    let location = format!("{target}/identity?X-Plex-Token=from-the-redirect");
    let (plex, plex_seen) = recording(move |_| {
        let mut r = respond(302, "text/html", "<html>moved</html>");
        r.headers_mut()
            .insert("location", location.parse().expect("a valid header value"));
        r
    })
    .await;
    let cfg_text = daemon::config(&plex.url(), &support::dead_url(), "");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let out = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN));
    assert!(out.status.success());
    let d = Daemon::start(dir.path(), &cfg_text).await;
    // The start-up poll asks /identity first.
    let mut st = Value::Null;
    for _ in 0..400 {
        st = d.status().await;
        if st["plex_error"]
            .as_str()
            .is_some_and(|e| e.contains("redirect"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = st["plex_error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains(&format!("{target}/identity")) && err.contains("[plex] url"),
        "status names the redirect target: {st}"
    );
    assert!(
        !err.contains("from-the-redirect"),
        "no query in the error: {err}"
    );
    assert!(
        plex_seen
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.header("x-plex-token") == Some(TOKEN)),
        "the configured server gets the token"
    );
    assert!(!plex_seen.lock().unwrap().is_empty());
    assert!(
        elsewhere_seen.lock().unwrap().is_empty(),
        "the redirect target never received a request: {:?}",
        elsewhere_seen.lock().unwrap()
    );
    let log = d.log();
    assert!(!log.contains(TOKEN), "the token is not logged");
    assert!(!st.to_string().contains(TOKEN));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_open_to_others_is_made_private_at_start() {
    use std::os::unix::fs::PermissionsExt;
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let cfg_text = daemon::config(
        "http://127.0.0.1:9",
        &support::dead_url(),
        "[poll]\nenabled = false\n",
    );
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    let store = dir.path().join("plexsync.redb");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o600, "created private");
    assert_eq!(
        mode(&dir.path().join("plexsync.key")),
        0o600,
        "created private"
    );
    assert_eq!(d.stop(), Some(0));

    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A command without a daemon works on such a store (and, opening it to serve the admin
    // call, makes it private as the daemon would).
    let out = d.cli(&["status"], None);
    assert!(
        matches!(out.status.code(), Some(0 | 2)), // 2: health has an error (not running)
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&store), 0o600);

    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.restart().await;
    assert_eq!(mode(&store), 0o600, "tightened at start-up");
    let log = d.log();
    let warning = log
        .lines()
        .find(|l| l.contains("made it private"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        warning.contains("WARN")
            && warning.contains(&store.display().to_string())
            && warning.contains("old_mode=644")
            && warning.contains("new_mode=600"),
        "{warning}"
    );
}
