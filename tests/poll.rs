//! Tests of history polling and backfill: the daemon (in process, support/inproc.rs; the real
//! binary for the test that kills it) against a fake Plex that pages history like PMS does
//! (server-enforced page size, X-Plex-Container-* headers) and a contract-exact fake tracker.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use support::Driver;
use support::daemon::{self, Daemon};
use support::inproc::InProc;
use support::plex::{
    FakePlex, FakeShow, HistoryEntry, HistoryFixture, PlexFault, TOKEN, WatchedEpisodeFixture,
};
use support::tracker::FakeTracker;
use support::{eventually, multipart, sample_json, samples};

const WAIT: Duration = Duration::from_secs(25);
const MACHINE: &str = "fakeplexmachine0000000000000000000000000";
const LEGACY: &str = "webhook/episode_legacy-thetvdb_media.resume_owner-id1.json";
/// 2020-04-04T01:15:56Z, the legacy sample's lastViewedAt.
const VIEWED: i64 = 1_585_962_956;

struct World<D = InProc> {
    _dir: tempfile::TempDir,
    plex: FakePlex,
    tracker: FakeTracker,
    daemon: D,
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

fn row(n: u32, season: u32, episode: u32, viewed_at: i64, account: i64) -> HistoryFixture {
    HistoryFixture {
        history_key: format!("/status/sessions/history/{n}"),
        rating_key: Some(format!("{}", 60_000 + n)),
        show_rating_key: Some("56850".into()),
        grandparent_title: "Be Cool, Scooby-Doo!".into(),
        season,
        episode,
        viewed_at,
        account_id: account,
    }
}

/// The daemon in process.
async fn world(extra: &str) -> World {
    let (dir, plex, tracker, cfg_text) = setup(extra).await;
    let daemon = InProc::start(dir.path(), &cfg_text).await;
    started(dir, plex, tracker, daemon).await
}

/// The real binary, for the test that kills it.
async fn world_bin(extra: &str) -> World<Daemon> {
    let (dir, plex, tracker, cfg_text) = setup(extra).await;
    let daemon = Daemon::start(dir.path(), &cfg_text).await;
    started(dir, plex, tracker, daemon).await
}

/// The fakes and the config (with the Plex token set), before the daemon starts.
async fn setup(extra: &str) -> (tempfile::TempDir, FakePlex, FakeTracker, String) {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![scooby()]).await;
    plex.state
        .lock()
        .unwrap()
        .accounts
        .push((3972737, "Kids".into()));
    let tracker = FakeTracker::start(vec![
        json!({"id": "scooby", "title": "Be Cool, Scooby-Doo!", "year": 2015, "tvdb_id": 301376}),
    ])
    .await;
    // Polls run when a test asks (POST /api/poll), not on the clock.
    // The library scan is off unless a test turns it on.
    let scan = if extra.contains("library_scan") {
        ""
    } else {
        "library_scan = false\n"
    };
    let poll = format!(
        "[poll]\nschedule = \"0 0 0 1 1 *\"\ninitial_lookback = \"36500d\"\nretry_backoff = \"200ms\"\n{scan}{extra}"
    );
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), &poll);
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let out = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN));
    assert!(out.status.success());
    (dir, plex, tracker, cfg_text)
}

async fn started<D: Driver>(
    dir: tempfile::TempDir,
    plex: FakePlex,
    tracker: FakeTracker,
    daemon: D,
) -> World<D> {
    // Let the start-up poll finish, so tests script faults for their own polls.
    for _ in 0..250 {
        if daemon.status().await["polls"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    World {
        _dir: dir,
        plex,
        tracker,
        daemon,
    }
}

impl<D: Driver> World<D> {
    /// Wait until the daemon's status meets `ok` (bounded; no fixed sleep before asserting).
    async fn status_until(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..500 {
            let st = self.daemon.status().await;
            if ok(&st) {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        panic!("{what} did not happen:\n{}", self.daemon.log());
    }

    /// Ask for a poll and wait until one has finished after the request.
    async fn poll(&self) -> Value {
        let before = self.daemon.status().await["polls"].as_u64().unwrap_or(0);
        self.daemon.api("POST", "/api/poll").await;
        for _ in 0..300 {
            let st = self.daemon.status().await;
            if st["polls"].as_u64().unwrap_or(0) > before {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        panic!("poll did not finish:\n{}", self.daemon.log());
    }

    async fn wait_watched(&self, n: usize) {
        eventually(
            &format!("{n} watched episodes at the tracker"),
            WAIT,
            || (self.tracker.watched().len() >= n).then_some(()),
        )
        .await;
    }

    async fn webhook(&self, payload: &Value) -> u16 {
        let (ct, body) = multipart(payload, None);
        let r = reqwest::Client::new()
            .post(self.daemon.webhook_url())
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }
}

/// Every episode is in at most one applied export.
fn assert_exported_once(t: &FakeTracker) {
    let mut seen: HashMap<(u64, u64), String> = HashMap::new();
    for p in t.posts() {
        let key = p.header("idempotency-key").unwrap().to_string();
        let body: Value = serde_json::from_slice(&p.body).unwrap();
        for e in body["episodes"].as_array().unwrap() {
            let ep = (
                e["season"].as_u64().unwrap(),
                e["episode"].as_u64().unwrap(),
            );
            if let Some(k) = seen.insert(ep, key.clone()) {
                assert_eq!(k, key, "episode {ep:?} was sent in two different batches");
            }
        }
    }
}

#[tokio::test]
async fn history_is_read_page_by_page_and_exported_once() {
    let w = world("").await;
    for i in 0..120u32 {
        w.plex
            .push_history(row(i, 1 + i / 40, 1 + i % 40, VIEWED + i as i64 * 60, 1));
    }
    let st = w.poll().await;
    assert!(st["last_poll"]["error"].is_null(), "{st}");
    assert_eq!(st["last_poll"]["rows_read"], 120);
    assert_eq!(st["last_poll"]["plays_new"], 120);
    let hist: Vec<_> = w
        .plex
        .state
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.path == "/status/sessions/history/all")
        .cloned()
        .collect();
    assert!(hist.len() >= 3, "three pages of 50: {}", hist.len());
    assert!(
        hist.iter()
            .all(|r| r.header("x-plex-container-size").is_some()
                && r.header("x-plex-container-start").is_some())
    );
    assert!(
        hist[0].query.contains("sort=viewedAt%3Aasc")
            || hist[0].query.contains("sort=viewedAt:asc"),
        "{}",
        hist[0].query
    );
    assert!(hist[0].query.contains("accountID=1"));
    w.wait_watched(120).await;

    // The next poll re-reads the overlap window: nothing new, nothing exported twice.
    let posts = w.tracker.posts().len();
    let st = w.poll().await;
    assert_eq!(st["last_poll"]["plays_new"], 0, "{st}");
    let second: Vec<_> = w
        .plex
        .state
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.path == "/status/sessions/history/all")
        .skip(hist.len())
        .cloned()
        .collect();
    let since: i64 = second[0]
        .query
        .split('&')
        .find_map(|p| {
            p.split_once("%3E=")
                .or_else(|| p.split_once(">="))
                .map(|(_, v)| v.parse().unwrap())
        })
        .unwrap();
    assert_eq!(
        since,
        VIEWED + 119 * 60 - 600,
        "cursor minus the 10-minute overlap"
    );
    // Status shows the cursor the poll started from.
    let cursors = st["cursors"].as_array().unwrap();
    assert_eq!(cursors.len(), 1, "{st}");
    assert_eq!(cursors[0]["viewed_at"], VIEWED + 119 * 60, "{st}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.tracker.posts().len(), posts);
    assert_exported_once(&w.tracker);
    assert_eq!(w.daemon.status().await["counts"]["journal"], 120);
}

#[tokio::test]
async fn a_webhook_and_the_history_row_of_the_same_viewing_are_one_play() {
    if samples().is_none() {
        return;
    }
    let w = world("").await;
    // The owner, as an old server reports it in webhooks (id 1) and as a current one does
    // (the plex.tv id); history always says accountID 1.
    let mut old = sample_json(LEGACY);
    old["event"] = json!("media.scrobble");
    old["Server"]["uuid"] = json!(MACHINE);
    let mut new = old.clone();
    new["Account"]["id"] = json!(639131);
    new["Metadata"]["index"] = json!(15);
    new["Metadata"]["lastViewedAt"] = json!(VIEWED + 3600);
    // Let the daemon learn the server's accounts first (a poll with no history).
    w.poll().await;
    assert_eq!(w.webhook(&old).await, 200);
    assert_eq!(w.webhook(&new).await, 200);
    w.plex.push_history(row(1, 1, 14, VIEWED + 20, 1));
    w.plex.push_history(row(2, 1, 15, VIEWED + 3600 + 40, 1));
    // A play only history knows (viewed before the first start: see below).
    w.plex.push_history(row(3, 1, 16, VIEWED + 7200, 1));
    let st = w.poll().await;
    assert_eq!(st["last_poll"]["duplicates"], 2, "{st}");
    assert_eq!(st["last_poll"]["plays_new"], 1);
    assert_eq!(st["counts"]["journal"], 3);
    // Viewed in 2020, before the daemon's first start: not a webhook loss (issue 12;
    // tests/health.rs counts one viewed since).
    assert_eq!(st["counts"]["webhook_loss"], 0);
    w.wait_watched(3).await;
    assert_exported_once(&w.tracker);
    let act = w.daemon.activity().await;
    let dups: Vec<_> = act.iter().filter(|a| a["status"] == "duplicate").collect();
    assert_eq!(dups.len(), 2, "{act:#?}");
    assert!(
        dups.iter()
            .all(|a| a["action"].as_str().unwrap().contains("webhook, poll")),
        "{dups:#?}"
    );
    // A shared user's webhook is not synced by default (the owner is).
    let mut kid = old.clone();
    kid["Account"] = json!({"id": 19267583, "title": "Kids"});
    kid["Metadata"]["index"] = json!(20);
    assert_eq!(w.webhook(&kid).await, 200);
    // The newest webhook row: an export's row (written once the tracker's answer is recorded,
    // after the tracker has the episodes) may come after it.
    let act = w.daemon.activity().await;
    let row = act
        .iter()
        .find(|a| a["source"] == "webhook")
        .expect("a webhook row");
    assert!(
        row["action"]
            .as_str()
            .unwrap()
            .contains("account Kids is not synced"),
        "{row:?}"
    );
}

/// The episodes the fake tracker has marked watched, as (season, episode).
fn watched_eps(t: &FakeTracker) -> HashSet<(u32, u32)> {
    t.watched().keys().map(|k| (k.1, k.2)).collect()
}

#[tokio::test]
async fn a_history_row_dated_in_the_future_does_not_stop_polling() {
    let w = world("").await;
    let now = plexsync::model::now_secs();
    // Plex's clock ran a month fast, then was set right.
    w.plex.push_history(row(1, 1, 1, now + 30 * 86_400, 1));
    let st = w.poll().await;
    assert!(st["last_poll"]["error"].is_null(), "{st}");
    assert_eq!(
        st["last_poll"]["plays_new"], 1,
        "the future row is journaled: {st}"
    );
    let cursor = st["cursors"][0]["viewed_at"].as_i64().unwrap();
    assert!(
        cursor <= plexsync::model::now_secs() + 300,
        "the cursor stops at now + 5 min: {st}"
    );
    assert!(
        w.daemon.log().contains("in the future"),
        "warned:\n{}",
        w.daemon.log()
    );
    // A viewing at the right time after it is still read.
    w.plex.push_history(row(2, 1, 2, now, 1));
    let st = w.poll().await;
    assert_eq!(st["last_poll"]["plays_new"], 1, "{st}");
    w.wait_watched(2).await;
    assert_eq!(watched_eps(&w.tracker), HashSet::from([(1, 1), (1, 2)]));
}

#[tokio::test]
async fn a_library_episode_dated_in_the_future_does_not_stop_the_scan() {
    let w = world("library_scan = true\n").await;
    let now = plexsync::model::now_secs();
    let ep = |n: u32, at: i64| {
        WatchedEpisodeFixture::new(
            &format!("{}", 70_000 + n),
            "56850",
            "Be Cool, Scooby-Doo!",
            1,
            n,
            at,
        )
    };
    // 2100-01-01, a nonsense lastViewedAt.
    w.plex.push_watched(ep(1, 4_102_444_800));
    let st = w.poll().await;
    assert!(st["last_poll"]["error"].is_null(), "{st}");
    assert_eq!(st["last_poll"]["plays_new"], 1, "{st}");
    w.plex.push_watched(ep(2, now));
    let st = w.poll().await;
    assert_eq!(st["last_poll"]["plays_new"], 1, "{st}");
    w.wait_watched(2).await;
    assert_eq!(watched_eps(&w.tracker), HashSet::from([(1, 1), (1, 2)]));
}

/// A row the client must skip (no `viewedAt`); the fake serves such rows first.
fn unusable(n: u64) -> HistoryEntry {
    HistoryEntry::episode(n, "56850", "Be Cool, Scooby-Doo!", 9, n as u32, VIEWED, 1)
        .without_viewed_at()
}

#[tokio::test]
async fn a_page_of_unusable_rows_is_read_past() {
    let w = world("").await;
    // The fake serves 50 a page: page one holds only rows without viewedAt.
    for n in 0..50 {
        w.plex.push_history(unusable(1000 + n));
    }
    w.plex.push_history(row(1, 1, 1, VIEWED, 1));
    let st = w.poll().await;
    assert!(st["last_poll"]["error"].is_null(), "{st}");
    assert_eq!(st["last_poll"]["plays_new"], 1, "the row after them: {st}");
    assert_eq!(st["last_poll"]["rows_read"], 51, "{st}");
    assert_eq!(st["last_poll"]["skipped"], 50, "{st}");
    w.wait_watched(1).await;
}

#[tokio::test]
async fn unusable_rows_at_a_page_start_are_no_paging_error() {
    let w = world("").await;
    for n in 0..30 {
        w.plex.push_history(unusable(1000 + n));
    }
    for i in 0..40u32 {
        w.plex
            .push_history(row(i, 1, 1 + i, VIEWED + i as i64 * 60, 1));
    }
    let st = w.poll().await;
    assert!(st["last_poll"]["error"].is_null(), "{st}");
    assert_eq!(st["last_poll"]["plays_new"], 40, "{st}");
    assert_eq!(st["counts"]["journal"], 40, "{st}");
    w.wait_watched(40).await;
}

/// History row `i`'s (season, episode): 25 episodes a season.
fn hourly_ep(i: u32) -> (u32, u32) {
    (1 + i / 25, 1 + i % 25)
}

/// History rows an hour apart (far beyond the 10-minute `[poll] overlap`, so a row a walk
/// skips is never read again by a later poll), one episode each.
fn hourly_rows(w: &World, n: u32) {
    for i in 0..n {
        let (season, episode) = hourly_ep(i);
        w.plex
            .push_history(row(i, season, episode, VIEWED + i as i64 * 3600, 1));
    }
}

/// Poll with `removed` of the oldest rows deleted from Plex after the first page was served.
async fn poll_while_rows_vanish(w: &World, rows: u32, removed: usize) -> Value {
    hourly_rows(w, rows);
    w.plex.remove_history_after(1, removed);
    let st = w.poll().await;
    assert!(st["last_poll"]["error"].is_null(), "{st}");
    assert!(
        w.plex.state.lock().unwrap().history_removal.is_none(),
        "the rows were removed mid-walk"
    );
    st
}

#[tokio::test]
async fn history_rows_deleted_during_a_walk_hide_no_later_row() {
    // Pages of 20 (each next page asks for the last 5 rows again): the first page reads rows
    // 0..20, then a person deletes rows 0..3. The list shifts by three; a walk by offset alone
    // would read on from row 23 and its cursor would pass rows 20, 21 and 22, hours older
    // than cursor - overlap: lost for good.
    let w = world("page_size = 20\n").await;
    let st = poll_while_rows_vanish(&w, 60, 3).await;
    assert_eq!(st["counts"]["journal"], 60, "every row read: {st}");
    assert_eq!(st["last_poll"]["plays_new"], 60, "{st}");
    assert_eq!(
        st["last_poll"]["rows_read"], 60,
        "the overlap is not counted twice: {st}"
    );
    assert_eq!(st["cursors"][0]["viewed_at"], VIEWED + 59 * 3600, "{st}");
    w.wait_watched(60).await;
    assert_eq!(
        watched_eps(&w.tracker),
        (0..60).map(hourly_ep).collect::<HashSet<_>>()
    );
    // The next poll finds nothing new and exports nothing twice.
    let st = w.poll().await;
    assert_eq!(st["last_poll"]["plays_new"], 0, "{st}");
    assert_exported_once(&w.tracker);
}

#[tokio::test]
async fn more_history_rows_deleted_than_the_overlap_hide_no_later_row() {
    // Twelve rows vanish after the first page: more than the overlap (1 row on pages of 5)
    // can show. Rows 5..12 were never read and are gone; every row from 12 on must arrive.
    let w = world("page_size = 5\n").await;
    let st = poll_while_rows_vanish(&w, 30, 12).await;
    assert_eq!(st["counts"]["journal"], 5 + 18, "{st}");
    assert_eq!(st["last_poll"]["plays_new"], 5 + 18, "{st}");
    assert!(
        w.daemon.log().contains("reading it again from the start"),
        "warned:\n{}",
        w.daemon.log()
    );
    w.wait_watched(23).await;
    let want: HashSet<_> = (0..5).chain(12..30).map(hourly_ep).collect();
    assert_eq!(watched_eps(&w.tracker), want);
    assert_exported_once(&w.tracker);
}

#[tokio::test]
async fn plex_faults_hold_the_cursor_and_cause_no_retry_storm() {
    let w = world("").await;
    w.plex.push_history(row(1, 1, 1, VIEWED, 1));
    // 401: "Plex token rejected", polling pauses.
    w.plex.fault(PlexFault::Status(401), 1);
    let st = w.poll().await;
    assert!(
        st["last_poll"]["error"]
            .as_str()
            .unwrap()
            .contains("Plex token rejected"),
        "{st}"
    );
    assert_eq!(st["plex_token_rejected"], true);
    assert_eq!(st["counts"]["journal"], 0);
    // Ticks during the pause are skipped, but a person asking (POST /api/poll) beats the
    // pause: it polls at once, and works (issue 12).
    let st = w.poll().await;
    assert!(st["last_poll"]["error"].is_null(), "{st}");
    assert_eq!(st["plex_token_rejected"], false);
    assert_eq!(st["counts"]["journal"], 1);

    // A 5xx: the run fails with the cursor where it was; the retry after the backoff
    // (200 ms here) recovers the row on its own.
    w.plex.push_history(row(2, 1, 2, VIEWED + 60, 1));
    w.plex.fault(PlexFault::Status(500), 1);
    let st = w.poll().await;
    assert!(
        st["last_poll"]["error"]
            .as_str()
            .unwrap()
            .contains("Plex unreachable or failing"),
        "{st}"
    );
    assert_eq!(st["counts"]["journal"], 1);
    // The retry journals the row before its report replaces the 500's: wait for both (and so
    // for the retry to be over before the next poll is asked for).
    w.status_until("the retry after the 500 recovered the row", |st| {
        st["counts"]["journal"] == 2 && st["last_poll"]["error"].is_null()
    })
    .await;

    // Malformed XML on the history page: the run fails naming the endpoint, nothing stored.
    w.plex.push_history(row(3, 1, 3, VIEWED + 120, 1));
    w.plex.state.lock().unwrap().malformed_history = 1;
    let st = w.poll().await;
    let err = st["last_poll"]["error"].as_str().unwrap_or("").to_string();
    assert!(
        err.contains("/status/sessions/history/all"),
        "names the endpoint: {st}"
    );
    assert_eq!(
        st["counts"]["journal"], 2,
        "nothing stored from the broken page"
    );
    let requests = w.plex.state.lock().unwrap().requests.len();
    // The retry after the backoff recovers on its own, without being asked.
    let st = w
        .status_until("the automatic retry", |st| {
            st["last_poll"]["error"].is_null() && st["counts"]["journal"] == 3
        })
        .await;
    assert_eq!(
        st["counts"]["journal"], 3,
        "recovered: the row behind the cursor was not lost"
    );
    // One retry after the failure: a handful of requests, not a storm.
    assert!(w.plex.state.lock().unwrap().requests.len() - requests <= 12);
    w.wait_watched(2).await;
}

// Multi-threaded: the CLI calls block the test thread while the fakes keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_through_the_daemon_then_offline_and_dry_run() {
    let mut w = world("").await;
    for i in 0..30u32 {
        w.plex.push_history(row(i, 2, 1 + i, VIEWED + i as i64, 1));
    }
    let out = w.daemon.cli(&["backfill", "--since", "2000-01-01"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("rows read:    30") && text.contains("plays new:    30"),
        "{text}"
    );
    assert!(text.contains("matched:      30"), "{text}");
    w.wait_watched(30).await;
    let out = w.daemon.cli(&["backfill", "--since", "2000-01-01"], None);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("plays new:    0"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Offline: the daemon is stopped; the CLI runs the pipeline itself.
    assert_eq!(w.daemon.stop().await, Some(0));
    for i in 30..40u32 {
        w.plex.push_history(row(i, 3, i - 29, VIEWED + i as i64, 1));
    }
    let out = w
        .daemon
        .cli(&["backfill", "--since", "2000-01-01", "--dry-run"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("would export"))
            .count(),
        10,
        "{text}"
    );
    assert!(text.contains("nothing was stored"));
    let out = w.daemon.cli(&["backfill", "--since", "2000-01-01"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("plays new:    10"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = w.daemon.cli(&["backfill", "--since", "yesterday"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));
    // The outbox is delivered when the daemon is back.
    w.daemon.restart().await;
    w.wait_watched(40).await;
    assert_exported_once(&w.tracker);
}

// Multi-threaded: the CLI calls block the test thread while the fakes keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_backfill_fails_like_the_real_one_on_a_server_that_ignores_paging() {
    let w = world("").await;
    for i in 0..60u32 {
        w.plex
            .push_history(row(i, 1 + i / 30, 1 + i % 30, VIEWED + i as i64, 1));
    }
    w.plex.state.lock().unwrap().ignore_container_start = true;
    for args in [
        &["backfill", "--since", "2000-01-01"][..],
        &["backfill", "--since", "2000-01-01", "--dry-run"][..],
    ] {
        let out = w.daemon.cli(args, None);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{args:?}:\n{stdout}\n{stderr}");
        assert!(
            stderr.contains("ignored X-Plex-Container-Start"),
            "{args:?}:\n{stdout}\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_backfill_loses_nothing_and_exports_nothing_twice() {
    let mut w = world_bin("").await;
    for i in 0..200u32 {
        w.plex
            .push_history(row(i, 1 + i / 50, 1 + i % 50, VIEWED + i as i64 * 10, 1));
    }
    w.plex.state.lock().unwrap().history_delay = Duration::from_millis(300);
    let body = json!({"since": "2000-01-01"}).to_string();
    plexsync::client::request(
        &w.daemon.socket(),
        "POST",
        "/api/backfill",
        Some(body.clone().into_bytes()),
    )
    .await
    .unwrap();
    // Kill it after the first page or two.
    eventually("a page", WAIT, || {
        (w.plex.count("/status/sessions/history/all") >= 2).then_some(())
    })
    .await;
    w.daemon.kill();
    let partial = w.tracker.watched().len();
    assert!(partial < 200);
    w.plex.state.lock().unwrap().history_delay = Duration::ZERO;
    w.daemon.restart().await;
    plexsync::client::request(
        &w.daemon.socket(),
        "POST",
        "/api/backfill",
        Some(body.into_bytes()),
    )
    .await
    .unwrap();
    w.wait_watched(200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exported_once(&w.tracker);
    let eps: HashSet<_> = w.tracker.watched().keys().cloned().collect();
    assert_eq!(eps.len(), 200);
    assert_eq!(w.daemon.status().await["counts"]["journal"], 200);
}

/// A show only the `[[matchers]] guid` plugin can place (a TVDB id), or none (a plex:// guid).
fn show(rating_key: &str, guid: &str, title: &str, year: i32) -> FakeShow {
    FakeShow {
        rating_key: rating_key.into(),
        guid: guid.into(),
        title: title.into(),
        year,
        guids: vec![],
    }
}

/// The `backfill --json` answer of the CLI (online or offline), which must succeed.
fn backfill_json(d: &InProc, extra: &[&str]) -> Value {
    let mut args = vec!["backfill", "--since", "2000-01-01", "--json"];
    args.extend_from_slice(extra);
    let out = d.cli(&args, None);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

// Multi-threaded: the CLI calls block the test thread while the fakes keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_backfill_lists_exactly_what_the_real_one_exports() {
    let (dir, plex, tracker, cfg_text) = setup("").await;
    let meadow = show(
        "91003",
        "com.plexapp.agents.thetvdb://990003?lang=en",
        "Quiet Meadow",
        2016,
    );
    let lantern = show(
        "91004",
        "plex://show/f1x700000000000000000004",
        "Lantern Street",
        2010,
    );
    let copper = show(
        "91005",
        "plex://show/f1x700000000000000000005",
        "Copper Valley",
        2014,
    );
    {
        let mut st = plex.state.lock().unwrap();
        for s in [&meadow, &lantern, &copper] {
            st.shows.insert(s.rating_key.clone(), s.clone());
        }
    }
    tracker
        .state
        .lock()
        .unwrap()
        .shows
        .push(json!({"id": "meadow", "title": "Quiet Meadow", "year": 2016, "tvdb_id": 990003}));
    let daemon = InProc::start(dir.path(), &cfg_text).await;
    let w = started(dir, plex, tracker, daemon).await;
    let episode = |id: u64, s: &FakeShow, ep: u32| {
        HistoryEntry::episode(id, &s.rating_key, &s.title, 1, ep, VIEWED + id as i64, 1)
    };
    // Scooby and Quiet Meadow map; Lantern Street (no ids, no candidate) waits for a person.
    w.plex.push_history(row(1, 1, 1, VIEWED, 1));
    w.plex.push_history(episode(2, &meadow, 1));
    w.plex.push_history(episode(3, &lantern, 1));
    w.poll().await;
    w.wait_watched(2).await;
    w.status_until("the Lantern Street conflict", |st| {
        st["counts"]["conflicts"] == 1
    })
    .await;
    // A person ignores Lantern Street and switches Quiet Meadow's sync off.
    for args in [
        &["conflicts", "resolve", "91004", "--ignore"][..],
        &["mappings", "set", "91003", "--disable"][..],
    ] {
        let out = w.daemon.cli(args, None);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let before: HashSet<_> = w.tracker.watched().keys().cloned().collect();

    // More history of each, and a show whose Plex lookup fails during the dry run.
    w.plex.push_history(row(4, 1, 2, VIEWED + 4, 1));
    w.plex.push_history(row(5, 1, 3, VIEWED + 5, 1));
    w.plex.push_history(episode(6, &meadow, 2));
    w.plex.push_history(episode(7, &lantern, 2));
    w.plex.push_history(episode(8, &copper, 1));
    w.plex.fail_next_on("/library/metadata/91005", 500, 50);
    let dry = backfill_json(&w.daemon, &["--dry-run"]);
    let would: HashSet<(String, u32, u32)> = dry["would_export"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["show_id"].as_str().unwrap().to_string(),
                e["season"].as_u64().unwrap() as u32,
                e["episode"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    let scooby_new: HashSet<(String, u32, u32)> =
        [("scooby".to_string(), 1, 2), ("scooby".to_string(), 1, 3)].into();
    assert_eq!(
        would, scooby_new,
        "neither the ignored show nor the one with sync off: {dry}"
    );
    assert_eq!(
        dry["unmatched_shows"],
        json!([]),
        "a failed lookup is no 'no match': {dry}"
    );
    assert_eq!(dry["undecided_shows"], json!(["Copper Valley"]), "{dry}");
    let text = w
        .daemon
        .cli(&["backfill", "--since", "2000-01-01", "--dry-run"], None);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Copper Valley") && !text.contains("no match      Copper Valley"),
        "{text}"
    );
    w.plex.state.lock().unwrap().path_faults.clear();

    // The real run exports exactly the dry run's list.
    let real = backfill_json(&w.daemon, &[]);
    assert_eq!(real["plays_new"], 5, "{real}");
    w.wait_watched(before.len() + would.len()).await;
    w.status_until("every play decided and sent", |st| {
        st["counts"]["pending_resolution"] == 0 && st["counts"]["outbox_items"] == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exported: HashSet<(String, u32, u32)> = w
        .tracker
        .watched()
        .into_keys()
        .filter(|k| !before.contains(k))
        .collect();
    assert_eq!(exported, would, "{}", w.daemon.log());
}

#[test]
fn an_offline_backfill_without_a_store_refuses_like_sync_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(
        &cfg,
        daemon::config(&support::dead_url(), &support::dead_url(), ""),
    )
    .unwrap();
    let sync = daemon::cli(&cfg, &["sync"], None);
    let sync_err = String::from_utf8_lossy(&sync.stderr).into_owned();
    assert!(!sync.status.success(), "{sync_err}");
    assert!(sync_err.contains("start the daemon once"), "{sync_err}");
    for args in [
        &["backfill", "--since", "2000-01-01"][..],
        &["backfill", "--since", "2000-01-01", "--dry-run"][..],
    ] {
        let out = daemon::cli(&cfg, args, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert_eq!(err, sync_err, "{args:?}");
        for f in ["plexsync.redb", "plexsync.key"] {
            assert!(!dir.path().join(f).exists(), "{args:?} created {f}");
        }
    }
}

// Multi-threaded: the CLI calls block the test thread while the fakes keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_names_the_accounts_plex_does_not_know() {
    let (dir, plex, tracker, cfg_text) = setup("").await;
    // A typo: Plex lists fixture-kid.
    let cfg_text = cfg_text.replace("[plex]\n", "[plex]\naccounts = [1, \"fixture-kidd\"]\n");
    std::fs::write(dir.path().join("plexsync.toml"), &cfg_text).unwrap();
    plex.set_accounts(&[(0, ""), (1, "icco"), (2, "fixture-kid")]);
    let daemon = InProc::start(dir.path(), &cfg_text).await;
    let mut w = started(dir, plex, tracker, daemon).await;
    w.plex.push_history(row(1, 1, 1, VIEWED, 1));
    let check = |w: &World, how: &str| {
        for dry in [&["--dry-run"][..], &[][..]] {
            let st = backfill_json(&w.daemon, dry);
            assert_eq!(
                st["unknown_accounts"],
                json!(["fixture-kidd"]),
                "{how} {dry:?}: {st}"
            );
            let mut args = vec!["backfill", "--since", "2000-01-01"];
            args.extend_from_slice(dry);
            let out = w.daemon.cli(&args, None);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("fixture-kidd"),
                "{how} {dry:?}: {text}"
            );
        }
    };
    check(&w, "online");
    assert!(
        w.daemon
            .log()
            .contains("backfill: [plex] accounts names an account the server does not have"),
        "{}",
        w.daemon.log()
    );
    assert_eq!(w.daemon.stop().await, Some(0));
    check(&w, "offline");
}

/// Rows deleted twice during a backfill, each time beyond a page's overlap: the walk reads on
/// past the second gap (no cursor to hold), and the backfill says rows may have been missed
/// and to run it again, in its output, its JSON and its activity row; the run again reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_that_meets_a_second_gap_says_to_run_it_again() {
    let w = world("page_size = 5\n").await;
    w.poll().await;
    hourly_rows(&w, 30);
    // After the first page: 6 rows go (more than the 1-row overlap), and the next page finds
    // the gap and the walk starts over; after its first page again, 6 more go.
    w.plex.remove_history_after(1, 6);
    w.plex.remove_history_again_after(2, 6);
    let out =
        tokio::task::block_in_place(|| w.daemon.cli(&["backfill", "--since", "2000-01-01"], None));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("rows may have been missed: run the backfill again"),
        "{text}"
    );
    assert!(w.plex.state.lock().unwrap().history_removal.is_none());
    // The CLI returns once the backfill's summary says it is over (`running: false`); its
    // activity row is recorded after that.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let act = w.daemon.activity().await;
        if act.iter().any(|a| a["event"] == "backfill") {
            assert!(
                act.iter().any(|a| a["event"] == "backfill"
                    && a["action"]
                        .as_str()
                        .is_some_and(|s| s.contains("run the backfill again"))),
                "{act:#?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backfill row: {act:#?}"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Nothing changes under the second run: it says nothing of the kind.
    let st = backfill_json(&w.daemon, &[]);
    assert!(st.get("rows_may_be_missed").is_none(), "{st}");
    assert_eq!(st["rows_read"], 18, "{st}");
}
