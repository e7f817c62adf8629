//! The live source (issue 13): the daemon (in process) keeps a connection to the fake Plex's
//! notification websocket (support/plex_ws.rs) and checks an item at once when a session
//! stops, so a finished episode reaches the tracker in seconds although `[poll] schedule` is
//! hourly. Also: reconnects after Plex drops the socket, one export for a live play and its
//! history row, a 401 on the upgrade is "token rejected" (and a new token reconnects at once),
//! `[live] enabled = false` opens no connection (and a reload switches it on), and the real
//! captures replayed over the socket are counted by type.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::inproc::InProc;
use support::plex::{FakePlex, FakeShow, HistoryFixture, TOKEN, WatchedEpisodeFixture};
use support::tracker::FakeTracker;
use support::{daemon, eventually, samples};

const WAIT: Duration = Duration::from_secs(20);
/// The bound: a finished episode at the tracker within 15 s.
const LIVE_BOUND: Duration = Duration::from_secs(15);

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

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// History row `n`: episode S01E`n` (ratingKey 60000+n) of the owner, viewed just now.
fn row(n: u32) -> HistoryFixture {
    HistoryFixture {
        history_key: format!("/status/sessions/history/{n}"),
        rating_key: Some(format!("{}", 60_000 + n)),
        show_rating_key: Some("56850".into()),
        grandparent_title: "Be Cool, Scooby-Doo!".into(),
        season: 1,
        episode: n,
        viewed_at: now(),
        account_id: 1,
    }
}

/// A `playing` notification in the shape of the Tautulli capture (newer PMS adds
/// `clientIdentifier`).
fn playing(session: &str, rating_key: &str, offset_ms: u64, state: &str) -> String {
    json!({"NotificationContainer": {"type": "playing", "size": 1,
        "PlaySessionStateNotification": [{
            "sessionKey": session, "clientIdentifier": "fakeplayer01", "guid": "",
            "ratingKey": rating_key, "url": "", "key": format!("/library/metadata/{rating_key}"),
            "viewOffset": offset_ms, "playQueueItemID": 82147, "state": state}]}})
    .to_string()
}

/// Watch episode `n` through the websocket: progress, then the stop at 95 % of 22 minutes,
/// with the history row Plex writes for it.
fn watch(plex: &FakePlex, n: u32) {
    let rk = format!("{}", 60_000 + n);
    let session = format!("{}", 30 + n);
    plex.ws.push(&playing(&session, &rk, 5_001, "playing"));
    plex.ws.push(&playing(&session, &rk, 1_250_000, "playing"));
    plex.push_history(row(n));
    plex.ws.push(&playing(&session, &rk, 1_254_000, "stopped"));
}

/// Quick reconnects for the tests.
const FAST: &str = "reconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n";

/// `poll` and `live` are the keys of the `[poll]` and `[live]` tables beyond the defaults.
async fn world(poll: &str, live: &str, token: &str) -> World {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![scooby()]).await;
    let tracker = FakeTracker::start(vec![
        json!({"id": "scooby", "title": "Be Cool, Scooby-Doo!", "year": 2015, "tvdb_id": 301376}),
    ])
    .await;
    // Hourly polls: only the live source can be quick.
    let extra = format!(
        "[poll]\nschedule = \"0 0 * * * *\"\nlibrary_scan = false\nretry_backoff = \"200ms\"\n{poll}\n[live]\n{live}"
    );
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), &extra);
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let out = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(token));
    assert!(out.status.success(), "{out:?}");
    let daemon = InProc::start(dir.path(), &cfg_text).await;
    World {
        _dir: dir,
        plex,
        tracker,
        daemon,
    }
}

impl World {
    async fn status_until(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let st = self.daemon.status().await;
            if ok(&st) {
                return st;
            }
            if Instant::now() > deadline {
                panic!("{what} did not happen: {st:#}\n{}", self.daemon.log());
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }

    /// Connected (the daemon says so and the fake holds the socket) after the start-up poll.
    async fn connected(&self) -> Value {
        let st = self
            .status_until("start-up poll and live connection", |st| {
                st["polls"].as_u64().unwrap_or(0) > 0 && st["live"]["connected"] == true
            })
            .await;
        eventually("the fake holds a socket", WAIT, || {
            (self.plex.ws.open() > 0).then_some(())
        })
        .await;
        st
    }

    async fn poll(&self) -> Value {
        let before = self.daemon.status().await["polls"].as_u64().unwrap_or(0);
        self.daemon.api("POST", "/api/poll").await;
        self.status_until("a poll after the request", |st| {
            st["polls"].as_u64().unwrap_or(0) > before
        })
        .await
    }

    async fn wait_watched(&self, n: usize, within: Duration) {
        eventually(
            &format!("{n} watched episode(s) at the tracker"),
            within,
            || (self.tracker.watched().len() >= n).then_some(()),
        )
        .await;
    }

    async fn metrics(&self) -> String {
        let token = self.daemon.admin_token().await;
        reqwest::Client::new()
            .get(format!("http://{}/metrics", self.daemon.addr))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_episode_is_exported_within_seconds_and_once_with_its_history_row() {
    let w = world("", FAST, TOKEN).await;
    let st = w.connected().await;
    assert!(st["live"]["enabled"] == true, "{st:#}");
    assert!(st["live"]["connected_since"].as_i64().is_some(), "{st:#}");
    // The token went in the header, never in the URL.
    let up = w.plex.ws.requests();
    assert!(!up.is_empty());
    for r in &up {
        assert_eq!(r.header("x-plex-token"), Some(TOKEN));
        assert!(!r.query.contains(TOKEN), "token in the URL: {}", r.query);
    }
    assert!(!w.daemon.log().contains(TOKEN), "token in the log");

    let t0 = Instant::now();
    watch(&w.plex, 1);
    w.wait_watched(1, LIVE_BOUND).await;
    eprintln!("live play at the tracker after {:?}", t0.elapsed());
    assert_eq!(w.tracker.posts().len(), 1);

    // Journaled with source `live`, through the activity log like every source.
    let act = w.daemon.activity().await;
    assert!(
        act.iter()
            .any(|a| a["source"] == "live" && a["episode"] == 1 && a["status"] == "success"),
        "{act:#?}"
    );
    let st = w.daemon.status().await;
    assert!(st["live"]["last_message_at"].as_i64().is_some(), "{st:#}");
    let m = w.metrics().await;
    assert!(
        metric(&m, "plexsync_live_messages_total{type=\"playing\"}") >= 3,
        "{m}"
    );
    assert_eq!(metric(&m, "plexsync_live_connected"), 1, "{m}");
    assert_eq!(
        metric(&m, "plexsync_plays_total{source=\"live\"}"),
        1,
        "{m}"
    );

    // The next poll reads the same history row: no new play, no second export.
    let st = w.poll().await;
    assert!(st["last_poll"]["error"].is_null(), "{st:#}");
    assert_eq!(st["last_poll"]["plays_new"], 0, "{st:#}");
    // And a repeated stop notification (a player resending) checks nothing twice.
    w.plex
        .ws
        .push(&playing("31", "60001", 1_254_000, "stopped"));
    let st = w.poll().await;
    assert_eq!(st["counts"]["journal"], 1, "{st:#}");
    w.status_until("the outbox drained", |st| st["counts"]["outbox_items"] == 0)
        .await;
    assert_eq!(w.tracker.posts().len(), 1, "one viewing, one export");
    assert_eq!(w.tracker.watched().len(), 1);
}

/// Stops of items that are not episodes (here the show itself, four sessions at once: every
/// check slot) are decided from their metadata at once, so a finished episode right after
/// them is still checked and exported within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_of_other_items_do_not_crowd_out_an_episode() {
    let w = world("", FAST, TOKEN).await;
    w.connected().await;
    for session in ["81", "82", "83", "84"] {
        w.plex
            .ws
            .push(&playing(session, "56850", 600_000, "stopped"));
    }
    // All four were decided well within the ~15 s a history read takes: their checks held
    // their slots only for the item's metadata, and once it is cached a stop of the same
    // item is not even queued.
    let t0 = Instant::now();
    loop {
        let m = w.metrics().await;
        if metric(&m, "plexsync_live_messages_total{type=\"playing\"}") >= 4
            && metric(&m, "plexsync_live_checks_total") >= 1
            && metric(&m, "plexsync_live_checks_in_flight") == 0
        {
            break;
        }
        assert!(
            t0.elapsed() < LIVE_BOUND / 3,
            "the stops still hold their check slots:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch(&w.plex, 1);
    w.wait_watched(1, LIVE_BOUND).await;
}

/// On a busy server the history since a stop holds many other items' rows: the check asks
/// for the stopped item's rows only (`metadataItemID`), so its row is found on the first page
/// however many rows came before it. (Before, the check walked every item's rows and gave up
/// silently after 20 pages: here, 25 pages of one row.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_on_a_busy_server_reads_only_the_items_history() {
    let w = world("page_size = 1\n", FAST, TOKEN).await;
    w.connected().await;
    for n in 100..125 {
        w.plex.push_history(row(n));
    }
    watch(&w.plex, 1);
    w.wait_watched(1, LIVE_BOUND).await;
    // The live check reads every account's rows; the poller's reads name an account.
    let reads: Vec<_> = w
        .plex
        .requests_to("/status/sessions/history/all")
        .into_iter()
        .filter(|r| !r.query.contains("accountID="))
        .collect();
    assert!(!reads.is_empty());
    for r in &reads {
        assert!(
            r.query.contains("metadataItemID=60001"),
            "a live check read every item's history: {}",
            r.query
        );
    }
    // One page answered it (a retry may read it again before the row lands).
    assert!(reads.len() <= 3, "{} history reads", reads.len());
    let st = w.daemon.status().await;
    assert_eq!(st["counts"]["journal"], 1, "{st:#}");
}

/// A stop short of `watched_threshold` of the episode's duration (from its metadata) is not a
/// viewing: nothing is checked or journaled for it, while a full viewing right after it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_short_of_the_threshold_is_not_a_play() {
    let w = world("", FAST, TOKEN).await;
    w.connected().await;
    // Episode 2's metadata gives its duration (1,681,271 ms); a history row for it exists, so
    // a check would journal it.
    let mut e = WatchedEpisodeFixture::new("60002", "56850", "Be Cool, Scooby-Doo!", 1, 2, now());
    e.view_count = 0;
    e.last_viewed_at = None;
    w.plex.push_watched(e);
    w.plex.push_history(row(2));
    w.plex.ws.push(&playing("52", "60002", 500_000, "stopped"));
    eventually("episode 2's duration read", WAIT, || {
        (w.plex.count("/library/metadata/60002") >= 1).then_some(())
    })
    .await;
    // A full viewing of episode 1 after it goes all the way to the tracker; by then episode 2's
    // stop was long decided.
    watch(&w.plex, 1);
    w.wait_watched(1, LIVE_BOUND).await;
    let st = w.daemon.status().await;
    assert_eq!(st["counts"]["journal"], 1, "{st:#}");
    assert!(
        !w.tracker
            .watched()
            .contains_key(&("scooby".to_string(), 1, 2)),
        "a 30 % stop was exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_websocket_reconnects_and_live_plays_flow_again() {
    let w = world("", FAST, TOKEN).await;
    w.connected().await;
    watch(&w.plex, 1);
    w.wait_watched(1, LIVE_BOUND).await;

    // Plex restarts: every socket closes without a close frame.
    w.plex.ws.drop_all();
    let st = w
        .status_until("reconnected", |st| {
            st["live"]["reconnects"].as_u64().unwrap_or(0) >= 1 && st["live"]["connected"] == true
        })
        .await;
    assert!(w.plex.ws.accepted() >= 2, "{st:#}");
    eventually("the fake holds the new socket", WAIT, || {
        (w.plex.ws.open() > 0).then_some(())
    })
    .await;
    let t0 = Instant::now();
    watch(&w.plex, 2);
    w.wait_watched(2, LIVE_BOUND).await;
    eprintln!(
        "live play after a reconnect at the tracker after {:?}",
        t0.elapsed()
    );
    let m = w.metrics().await;
    assert!(metric(&m, "plexsync_live_reconnects_total") >= 1, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_on_the_upgrade_is_token_rejected_and_a_new_token_connects_at_once() {
    // No polls: only the live source can notice the token. A long backoff: only the new
    // token's wake-up can reconnect within the test's wait.
    let w = world(
        "enabled = false\n",
        "reconnect_min = \"1m\"\nreconnect_max = \"5m\"\n",
        "not-the-token",
    )
    .await;
    // The account list's read (at start) may note the rejection first: wait for the
    // upgrade's own error too.
    let st = w
        .status_until("token rejected by the upgrade", |st| {
            st["plex_token_rejected"] == true
                && st["live"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("401"))
        })
        .await;
    assert_eq!(st["live"]["connected"], false, "{st:#}");
    assert!(
        st["live"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("401")),
        "{st:#}"
    );
    assert_eq!(w.plex.ws.accepted(), 0);
    assert!(!w.plex.ws.requests().is_empty());
    assert_eq!(w.plex.count("/status/sessions/history"), 0, "polls are off");
    assert!(
        !w.daemon.log().contains("not-the-token"),
        "token in the log"
    );
    let health = st["health"].to_string();
    assert!(health.to_lowercase().contains("token"), "{health}");

    // A stored new token: the live source connects at once, not after its minute of backoff.
    let t0 = Instant::now();
    let out = w.daemon.cli(&["secret", "set", "plex-token"], Some(TOKEN));
    assert!(out.status.success(), "{out:?}");
    // The live source says it is connected before it clears the rejection: wait for both.
    w.status_until(
        "connected with the new token, the rejection cleared",
        |st| st["live"]["connected"] == true && st["plex_token_rejected"] == false,
    )
    .await;
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_opens_no_connection_until_a_reload_enables_it() {
    let w = world("", &format!("{FAST}enabled = false\n"), TOKEN).await;
    let st = w
        .status_until("start-up poll", |st| st["polls"].as_u64().unwrap_or(0) > 0)
        .await;
    assert_eq!(st["live"]["enabled"], false, "{st:#}");
    // Another full poll round later, still nothing asked the websocket.
    w.poll().await;
    assert_eq!(w.plex.ws.requests().len(), 0);
    assert_eq!(w.plex.ws.accepted(), 0);
    let out = w.daemon.cli(&["status"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("live:") && text.contains("off"), "{text}");

    // A reload with [live] enabled connects.
    let cfg = w._dir.path().join("plexsync.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("enabled = false\n", "enabled = true\n");
    std::fs::write(&cfg, text).unwrap();
    w.daemon.reload();
    w.status_until("connected after the reload", |st| {
        st["live"]["connected"] == true && st["live"]["enabled"] == true
    })
    .await;
    assert_eq!(w.plex.ws.accepted(), 1);
    let out = w.daemon.cli(&["status"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("connected since"), "{text}");
}

/// The real captures (../shared/plex-samples/websocket, read in place) sent over the socket:
/// counted by type, nothing breaks, the connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_captures_replayed_over_the_socket_are_counted_by_type() {
    let Some(dir) = samples() else { return };
    let w = world("", FAST, TOKEN).await;
    w.connected().await;
    let lines =
        std::fs::read_to_string(dir.join("websocket/notifications_tautulli-issue-logs.jsonl"))
            .unwrap();
    let mut sent = 0;
    for l in lines.lines().filter(|l| !l.trim().is_empty()) {
        assert_eq!(w.plex.ws.push(l), 1);
        sent += 1;
    }
    // The PlexTraktSync sequence holds bare containers: wrapped as PMS sends them.
    let seq: Value = serde_json::from_str(
        &std::fs::read_to_string(
            dir.join("websocket/activity-sequence_library.refresh.items_plextraktsync.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for c in seq.as_array().unwrap() {
        w.plex
            .ws
            .push(&json!({"NotificationContainer": c}).to_string());
        sent += 1;
    }
    let total = |m: &str| -> u64 {
        ["playing", "timeline", "activity", "other"]
            .iter()
            .map(|t| metric(m, &format!("plexsync_live_messages_total{{type=\"{t}\"}}")))
            .sum()
    };
    let deadline = Instant::now() + WAIT;
    let m = loop {
        let m = w.metrics().await;
        if total(&m) >= sent {
            break m;
        }
        assert!(Instant::now() < deadline, "not all counted: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        metric(&m, "plexsync_live_messages_total{type=\"playing\"}"),
        4
    );
    assert_eq!(
        metric(&m, "plexsync_live_messages_total{type=\"timeline\"}"),
        2
    );
    assert_eq!(
        metric(&m, "plexsync_live_messages_total{type=\"activity\"}"),
        4 + 5
    );
    assert_eq!(
        metric(&m, "plexsync_live_messages_total{type=\"other\"}"),
        1
    );
    let st = w.daemon.status().await;
    assert_eq!(st["live"]["connected"], true, "{st:#}");
    assert_eq!(st["live"]["reconnects"], 0, "{st:#}");
    // Nothing in them is a play of this library.
    assert_eq!(st["counts"]["journal"], 0, "{st:#}");
}

/// Episode `n`'s metadata (type episode, 1,681,271 ms long), not yet viewed: a check reads
/// its duration from it.
fn episode_meta(plex: &FakePlex, n: u32) {
    let mut e = WatchedEpisodeFixture::new(
        &format!("{}", 60_000 + n),
        "56850",
        "Be Cool, Scooby-Doo!",
        1,
        n,
        now(),
    );
    e.view_count = 0;
    e.last_viewed_at = None;
    plex.push_watched(e);
}

/// The fixture episodes' duration (ms), and a view offset at `pct` % of it.
const EPISODE_MS: u64 = 1_681_271;
fn at(pct: u64) -> u64 {
    EPISODE_MS * pct / 100
}

/// How often a wait reads /metrics: a wait can last ~15 s, and the admin API's rate limit
/// (600 a minute) would answer a 50 ms loop 429 part way.
const METRICS_EVERY: Duration = Duration::from_millis(250);

impl World {
    /// Connected, for a world without polls (no start-up poll to wait for).
    async fn live_connected(&self) {
        self.status_until("live connection", |st| st["live"]["connected"] == true)
            .await;
        eventually("the fake holds a socket", WAIT, || {
            (self.plex.ws.open() > 0).then_some(())
        })
        .await;
    }

    /// Until exactly `n` checks are running.
    async fn checks_running(&self, n: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = self.metrics().await;
            if metric(&m, "plexsync_live_checks_in_flight") == n {
                return;
            }
            assert!(Instant::now() < deadline, "not {n} checks running:\n{m}");
            tokio::time::sleep(METRICS_EVERY).await;
        }
    }

    /// Until at least `n` checks started and none is running.
    async fn checks_done(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = self.metrics().await;
            if metric(&m, "plexsync_live_checks_total") >= n
                && metric(&m, "plexsync_live_checks_in_flight") == 0
            {
                return;
            }
            assert!(Instant::now() < deadline, "checks still running:\n{m}");
            tokio::time::sleep(METRICS_EVERY).await;
        }
    }
}

/// With `watched_threshold = 0.8` a pause at 85 % is checked before Plex counted the view (no
/// history row yet). That check must not hide the real stop of the same session minutes
/// later: the stop at 100 %, once the row exists, is checked and exported within the live
/// bound. (Before, the pause's check remembered the session at once, and every later
/// notification of it was skipped for 10 minutes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_past_the_threshold_without_a_row_does_not_hide_the_stop() {
    let w = world("", &format!("{FAST}watched_threshold = 0.8\n"), TOKEN).await;
    w.connected().await;
    episode_meta(&w.plex, 1);
    w.plex.ws.push(&playing("41", "60001", at(85), "paused"));
    // The pause's check read the duration, found it past 0.8, asked the history until it
    // gave up, and ended.
    w.checks_done(1).await;
    assert!(
        w.plex
            .requests_to("/status/sessions/history/all")
            .iter()
            .any(|r| r.query.contains("metadataItemID=60001")),
        "the pause's check read no history"
    );
    assert_eq!(w.daemon.status().await["counts"]["journal"], 0);

    // Plex counts the view at the stop.
    let t0 = Instant::now();
    w.plex.push_history(row(1));
    w.plex
        .ws
        .push(&playing("41", "60001", EPISODE_MS, "stopped"));
    w.wait_watched(1, LIVE_BOUND).await;
    eprintln!(
        "stop after a rowless pause at the tracker after {:?}",
        t0.elapsed()
    );
}

/// How long a check that finds no history row holds its slot: the retries of
/// `HISTORY_RETRIES` in src/sources/live.rs (0 + 0.5 + 1 + 2 + 4 + 8 s) and their six reads.
const SLOT_HELD: Duration = Duration::from_secs(16);

/// With polls off, a stop that arrives while all four check slots are busy (four pauses past
/// the threshold whose rows Plex has not written, each asking the history for ~15 s) waits
/// for a slot instead of being dropped: it is exported once the first slot frees, i.e.
/// within the time a slot is held plus the live bound. (Before, it was dropped with a debug
/// line, and nothing else would ever cover it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_every_check_slot_is_busy_waits_for_a_slot() {
    let w = world("enabled = false\n", FAST, TOKEN).await;
    w.live_connected().await;
    for n in 11..=14 {
        episode_meta(&w.plex, n);
        w.plex.ws.push(&playing(
            &format!("{}", 70 + n),
            &format!("{}", 60_000 + n),
            at(95),
            "paused",
        ));
    }
    // Every slot is held by a check that keeps asking the history.
    w.checks_running(4).await;
    let t0 = Instant::now();
    w.plex.push_history(row(1));
    w.plex.ws.push(&playing("31", "60001", at(95), "stopped"));
    w.wait_watched(1, SLOT_HELD + LIVE_BOUND).await;
    eprintln!(
        "a stop queued behind four checks at the tracker after {:?}",
        t0.elapsed()
    );
    // The paused items were checked in full and journaled nothing; the stop was checked.
    w.checks_done(5).await;
    let st = w.daemon.status().await;
    assert_eq!(st["counts"]["journal"], 1, "{st:#}");
    // Polls are off: every history read was a live check's, of one item.
    for r in w.plex.requests_to("/status/sessions/history/all") {
        assert!(r.query.contains("metadataItemID="), "{}", r.query);
    }
}

/// A player that moves on to the next item on the same session without a `stopped` (or
/// vanishes) still has its finished episode exported: a `playing` notification past the
/// threshold is a trigger (once per session and item), and the next item on the session ends
/// the previous one. (Before, only `stopped`/`paused` triggered a check: never here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playing_past_the_threshold_then_the_next_item_exports_without_a_stop() {
    let w = world("", FAST, TOKEN).await;
    w.connected().await;
    episode_meta(&w.plex, 1);
    w.plex.push_history(row(1));
    let t0 = Instant::now();
    w.plex.ws.push(&playing("7", "60001", at(95), "playing"));
    w.plex.ws.push(&playing("7", "60002", 5_001, "playing"));
    w.wait_watched(1, LIVE_BOUND).await;
    eprintln!(
        "a play without a stop at the tracker after {:?}",
        t0.elapsed()
    );
    // The item change ended episode 1 again, after its playing check found the row: still
    // one play, one export.
    w.checks_done(2).await;
    w.status_until("the outbox drained", |st| st["counts"]["outbox_items"] == 0)
        .await;
    let st = w.daemon.status().await;
    assert_eq!(st["counts"]["journal"], 1, "{st:#}");
    assert_eq!(w.tracker.posts().len(), 1);
}

/// The next item on a session ends the previous one on its own: an item whose length Plex
/// does not give is not read while it plays (no history read per start), but when the
/// session moves on to another item without a stop, the previous item is checked like a stop
/// at its last offset and exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_item_on_a_session_ends_the_previous_one() {
    let w = world("", FAST, TOKEN).await;
    w.connected().await;
    // No metadata for episode 1: its duration is unknown.
    w.plex.push_history(row(1));
    w.plex.ws.push(&playing("8", "60001", 1_250_000, "playing"));
    // Its check decided without reading the history.
    w.checks_done(1).await;
    assert!(
        !w.plex
            .requests_to("/status/sessions/history/all")
            .iter()
            .any(|r| r.query.contains("metadataItemID=")),
        "a playing session of unknown length read the history"
    );
    let t0 = Instant::now();
    w.plex.ws.push(&playing("8", "60002", 5_001, "playing"));
    w.wait_watched(1, LIVE_BOUND).await;
    eprintln!("the previous item at the tracker after {:?}", t0.elapsed());
}

/// `[plex] url` moved to another server, whose session and rating keys name other items: what
/// the live source checked on the first server is forgotten, so the same keys there are
/// checked again (here rating key 60001 is S01E05 on the second server) and not skipped as
/// done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_plex_server_gets_its_own_checks() {
    let w = world("", FAST, TOKEN).await;
    w.connected().await;
    watch(&w.plex, 1);
    w.wait_watched(1, LIVE_BOUND).await;

    let other = FakePlex::start(vec![scooby()]).await;
    other.state.lock().unwrap().machine_identifier =
        "otherplexmachine000000000000000000000000".into();
    let cfg = w._dir.path().join("plexsync.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&w.plex.url(), &other.url());
    std::fs::write(&cfg, text).unwrap();
    w.daemon.reload();
    eventually("connected to the other server", WAIT, || {
        (other.ws.open() > 0).then_some(())
    })
    .await;
    w.status_until("connected after the reload", |st| {
        st["live"]["connected"] == true
    })
    .await;
    // Whatever the reload's own poll read is done before the play (its row is not there yet).
    w.poll().await;

    // The same session and rating key as on the first server, another episode here.
    other.ws.push(&playing("31", "60001", 1_250_000, "playing"));
    let mut r = row(5);
    r.rating_key = Some("60001".into());
    other.push_history(r);
    other.ws.push(&playing("31", "60001", 1_254_000, "stopped"));
    w.wait_watched(2, LIVE_BOUND).await;
    assert_eq!(w.tracker.watched().len(), 2);
}
