//! Health, one source of truth (issue 12): `/api/status`'s `health` list and `plexsync status`
//! (its text and exit code) against the daemon in process (support/inproc.rs), a fake Plex and
//! a contract-exact fake tracker; a fixed Plex token and `POST /api/poll` poll at once even in
//! a 401 pause; webhook loss counts only plays viewed since the first start.

mod support;

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon;
use support::eventually;
use support::inproc::InProc;
use support::plex::{FakePlex, FakeShow, HistoryFixture, TOKEN};
use support::tracker::FakeTracker;

const TRACKER_KEY: &str = "tracker-key-for-health-1";
/// 2020-04-04T01:15:56Z: long before any first start.
const OLD: i64 = 1_585_962_956;

struct World {
    _dir: tempfile::TempDir,
    plex: FakePlex,
    tracker: FakeTracker,
    daemon: InProc,
}

fn scooby() -> FakeShow {
    FakeShow {
        rating_key: "56850".into(),
        guid: "com.plexapp.agents.thetvdb://301376?lang=en".into(),
        title: "Be Cool, Scooby-Doo!".into(),
        year: 2015,
        guids: vec![],
    }
}

fn row(n: u32, episode: u32, viewed_at: i64) -> HistoryFixture {
    HistoryFixture {
        history_key: format!("/status/sessions/history/{n}"),
        rating_key: Some(format!("{}", 60_000 + n)),
        show_rating_key: Some("56850".into()),
        grandparent_title: "Be Cool, Scooby-Doo!".into(),
        season: 1,
        episode,
        viewed_at,
        account_id: 1,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The fakes and a daemon. `plex_token`: the token stored (the fake accepts only [`TOKEN`]);
/// `retry`: `[poll] retry_backoff` (a 401 pauses 4× that at first).
async fn world(plex_token: &str, tracker_key: Option<&str>, retry: &str) -> World {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![scooby()]).await;
    let tracker = FakeTracker::start(vec![
        json!({"id": "scooby", "title": "Be Cool, Scooby-Doo!", "year": 2015, "tvdb_id": 301376}),
    ])
    .await;
    tracker.state.lock().unwrap().expected_key = Some(TRACKER_KEY.into());
    // Polls run when a test asks (POST /api/poll, a new token), not on the clock.
    let poll = format!(
        "[poll]\nschedule = \"0 0 0 1 1 *\"\ninitial_lookback = \"36500d\"\nretry_backoff = \"{retry}\"\nlibrary_scan = false\n"
    );
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), &poll);
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let out = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(plex_token));
    assert!(out.status.success(), "{}", text(&out.stderr));
    if let Some(k) = tracker_key {
        let out = daemon::cli(&cfg, &["secret", "set", "tracker-key"], Some(k));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let daemon = InProc::start(dir.path(), &cfg_text).await;
    World {
        _dir: dir,
        plex,
        tracker,
        daemon,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl World {
    /// Wait (bounded) until the status meets `ok`; that status.
    async fn until(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..500 {
            last = self.daemon.status().await;
            if ok(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        panic!("{what} did not happen: {last:#}\n{}", self.daemon.log());
    }

    fn status_cli(&self) -> Output {
        self.daemon.cli(&["status"], None)
    }
}

fn health(st: &Value) -> Vec<Value> {
    st["health"].as_array().cloned().unwrap_or_default()
}

fn item<'a>(st: &'a Value, component: &str) -> Option<&'a Value> {
    st["health"]
        .as_array()?
        .iter()
        .find(|h| h["component"] == component)
}

fn polls(st: &Value) -> u64 {
    st["polls"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_exits_0_without_null_and_a_stopped_daemon_exits_2() {
    let mut w = world(TOKEN, Some(TRACKER_KEY), "200ms").await;
    let st = w
        .until("a healthy daemon", |st| {
            polls(st) > 0 && st["catalogue_loaded_at"].is_number() && health(st).is_empty()
        })
        .await;
    assert_eq!(st["plex_server_name"], "Fake Plex", "{st}");
    assert!(st["first_started_at"].is_number(), "{st}");
    let out = w.status_cli();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(!stdout.contains("null"), "{stdout}");
    assert!(stdout.contains("all good"), "{stdout}");
    assert!(stdout.contains("\"Fake Plex\""), "{stdout}");
    assert!(stdout.contains("since first start"), "{stdout}");
    let out = w.daemon.cli(&["status", "--json"], None);
    assert_eq!(out.status.code(), Some(0));

    // Stopped: the CLI answers from the store, and that is an error.
    w.daemon.stop().await;
    let out = w.status_cli();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("not running"), "{stdout}");
    assert!(!stdout.contains("null"), "{stdout}");
    let out = w.daemon.cli(&["status", "--json"], None);
    assert_eq!(out.status.code(), Some(2));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["running"], false);
    let h = &st["health"][0];
    assert_eq!(
        (&h["component"], &h["severity"]),
        (&json!("daemon"), &json!("error"))
    );

    // A command that cannot run at all is 1, not 2.
    let out = daemon::cli(&w.daemon.dir.join("missing.toml"), &["status"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = w.daemon.cli(&["status", "--bogus"], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bad arguments: {}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_401_names_the_key_in_health_activity_and_status() {
    // No tracker key stored: the tracker answers the catalogue fetch with 401.
    let w = world(TOKEN, None, "200ms").await;
    let st = w
        .until("the tracker's 401 in health", |st| {
            item(st, "tracker").is_some_and(|h| h["severity"] == "error")
        })
        .await;
    let h = item(&st, "tracker").unwrap().clone();
    assert!(h["message"].as_str().unwrap().contains("401"), "{h}");
    assert!(
        h["hint"]
            .as_str()
            .unwrap()
            .contains("plexsync secret set tracker-key"),
        "{h}"
    );
    assert!(h["since"].as_i64().unwrap() <= now());
    assert_eq!(st["tracker_error_kind"], "unauthorized", "{st}");
    assert_eq!(st["health"][0]["severity"], "error", "worst first: {st}");
    // A later look: the condition keeps its start.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = w.daemon.status().await;
    assert_eq!(item(&again, "tracker").unwrap()["since"], h["since"]);

    let out = w.status_cli();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("ERROR") && stdout.contains("tracker"),
        "{stdout}"
    );
    assert!(
        stdout.contains("plexsync secret set tracker-key"),
        "{stdout}"
    );
    assert!(!stdout.contains("null"), "{stdout}");
}

/// Set up in the README's order (start, then store the secrets): the catalogue reads refused
/// before the key was stored have grown the back-off to tens of seconds, yet storing the key
/// fetches the catalogue at once and clears the 401 from health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storing_the_tracker_key_clears_its_401_at_once() {
    let w = world(TOKEN, None, "200ms").await;
    let requests = || w.tracker.state.lock().unwrap().requests;
    // Four refused catalogue reads: the next try is 8 to 16 s away (jittered back-off).
    eventually(
        "four refused catalogue reads",
        Duration::from_secs(60),
        || (requests() >= 4).then_some(()),
    )
    .await;
    let out = w
        .daemon
        .cli(&["secret", "set", "tracker-key"], Some(TRACKER_KEY));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let set_at = std::time::Instant::now();
    let st = w
        .until("the catalogue read with the new key", |st| {
            st["catalogue_shows"] == 1 && item(st, "tracker").is_none()
        })
        .await;
    assert_eq!(st["catalogue_shows"], 1);
    assert!(
        set_at.elapsed() < Duration::from_secs(5),
        "read {:?} after the key was stored, not at once",
        set_at.elapsed()
    );
}

/// Plex answers `/accounts` but its history keeps failing: the Plex item stays through the
/// retried polls, dated from the first failure, not from each poll's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plex_failure_after_the_accounts_keeps_its_start() {
    let w = world(TOKEN, Some(TRACKER_KEY), "200ms").await;
    w.plex
        .fail_next_on("/status/sessions/history", 500, 100_000);
    w.daemon.api("POST", "/api/poll").await;
    let st = w
        .until("the Plex failure in health", |st| {
            item(st, "plex").is_some()
        })
        .await;
    let since = item(&st, "plex").unwrap()["since"].as_i64().unwrap();
    // The poller retries on its back-off; wait for a failed poll that ended 2 s later.
    let mut last = Value::Null;
    for _ in 0..600 {
        last = w.daemon.status().await;
        if last["last_poll"]["finished_at"].as_i64() >= Some(since + 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last["last_poll"]["finished_at"].as_i64() >= Some(since + 2),
        "no later failed poll: {last:#}"
    );
    let plex = item(&last, "plex").expect("still failing");
    assert_eq!(plex["since"].as_i64(), Some(since), "{plex}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_refused_with_401_reads_as_what_to_do() {
    let w = world(TOKEN, Some(TRACKER_KEY), "200ms").await;
    w.until("the catalogue", |s| s["catalogue_shows"] == 1)
        .await;
    // The tracker's key changes under us: exports are refused with 401.
    w.tracker.state.lock().unwrap().expected_key = Some("another-key-entirely".into());
    w.plex.push_history(row(1, 1, now()));
    w.daemon.api("POST", "/api/poll").await;
    let st = w
        .until("the dead letter", |s| s["counts"]["dead_letters"] == 1)
        .await;
    let t = item(&st, "tracker").unwrap();
    assert_eq!(t["severity"], "error", "{st}");
    assert!(
        t["hint"]
            .as_str()
            .unwrap()
            .contains("plexsync secret set tracker-key")
    );
    let dead = item(&st, "exports").unwrap();
    assert_eq!(dead["severity"], "error", "{st}");
    assert!(
        dead["hint"]
            .as_str()
            .unwrap()
            .contains("plexsync outbox retry")
    );
    let act = w.daemon.activity().await;
    let failed: Vec<&Value> = act.iter().filter(|a| a["status"] == "failed").collect();
    assert!(!failed.is_empty(), "{act:#?}");
    for a in &failed {
        let e = a["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("the tracker refused the key (401)")
                && e.contains("plexsync secret set tracker-key")
                && !e.contains("{\"error\""),
            "{a}"
        );
    }
    let out = w.status_cli();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_plex_token_polls_at_once_and_clears_health() {
    // A wrong token and a long pause after a 401 (4 × 1 h, capped at an hour).
    let w = world("wrong-token-0000", Some(TRACKER_KEY), "1h").await;
    let st = w
        .until("the token's rejection", |st| {
            st["plex_token_rejected"] == true && item(st, "plex").is_some()
        })
        .await;
    let h = item(&st, "plex").unwrap();
    assert_eq!(h["severity"], "error");
    assert!(
        h["hint"]
            .as_str()
            .unwrap()
            .contains("plexsync secret set plex-token")
    );
    assert!(
        st["plex_last_ok_at"].is_null(),
        "/identity alone is not ok: {st}"
    );
    let out = w.status_cli();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        !stdout.contains("plex last ok"),
        "no success happened: {stdout}"
    );
    assert_eq!(stdout.matches("rejects the token").count(), 1, "{stdout}");

    // `POST /api/poll` inside the pause polls (and is refused again).
    // The rejection can show before the refused poll is counted: wait until the count
    // stands still (no poll runs inside the pause) before taking it.
    let mut before = polls(&st);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = polls(&w.daemon.status().await);
        if now == before {
            break;
        }
        before = now;
    }
    let accounts = w.plex.requests_to("/accounts").len();
    w.daemon.api("POST", "/api/poll").await;
    // Both: the poll is counted and it asked Plex (a count alone could be an older poll's).
    let st = w
        .until("a requested poll", |s| {
            polls(s) > before && w.plex.requests_to("/accounts").len() > accounts
        })
        .await;
    assert_eq!(st["plex_token_rejected"], true);

    // The right token: a poll happens within seconds and health clears.
    w.plex.push_history(row(1, 1, now()));
    let out = w.daemon.cli(&["secret", "set", "plex-token"], Some(TOKEN));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let st = w
        .until("a successful poll with the new token", |s| {
            s["last_poll"]["error"].is_null() && s["counts"]["journal"] == 1
        })
        .await;
    assert!(item(&st, "plex").is_none(), "{st}");
    assert_eq!(st["plex_token_rejected"], false);
    assert!(st["plex_last_ok_at"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_loss_counts_only_plays_viewed_since_the_first_start() {
    let w = world(TOKEN, Some(TRACKER_KEY), "200ms").await;
    let st = w.until("the first poll", |s| polls(s) > 0).await;
    let first = st["first_started_at"].as_i64().unwrap();
    assert!(first <= now());
    // History from before the install: journaled, not loss.
    w.plex.push_history(row(1, 1, OLD));
    w.plex.push_history(row(2, 2, OLD + 60));
    // A play after the first start that no webhook delivered: loss.
    w.plex.push_history(row(3, 3, first + 1));
    w.daemon.api("POST", "/api/poll").await;
    let st = w
        .until("three plays", |s| s["counts"]["journal"] == 3)
        .await;
    assert_eq!(st["counts"]["webhook_loss"], 1, "{st}");
    // A backfill never counts.
    w.plex.push_history(row(4, 4, OLD + 120));
    let r = plexsync::client::request(
        &w.daemon.socket(),
        "POST",
        "/api/backfill",
        Some(br#"{"since": "2019-01-01"}"#.to_vec()),
    )
    .await
    .unwrap();
    assert!(text(&r).contains("started"), "{}", text(&r));
    let st = w
        .until("the backfill", |s| s["counts"]["journal"] == 4)
        .await;
    assert_eq!(st["counts"]["webhook_loss"], 1, "{st}");
    // A restart keeps the first start.
    let mut w = w;
    w.daemon.restart().await;
    let st = w.daemon.status().await;
    assert_eq!(st["first_started_at"].as_i64(), Some(first));
    let out = w.status_cli();
    assert!(
        text(&out.stdout).contains("since first start"),
        "{}",
        text(&out.stdout)
    );
}
