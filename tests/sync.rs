//! The full watched-state sync (issue 13): `POST/GET /api/sync` on the daemon (in process) and
//! `plexsync sync` (the real binary, handed over or run offline), against a fake Plex that
//! lists a library's shows and episodes like PMS (paged, `viewCount`/`lastViewedAt`) and the
//! contract-exact fake tracker.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::daemon;
use support::eventually;
use support::inproc::InProc;
use support::plex::{FakePlex, FakeShow, HistoryFixture, TOKEN, WatchedEpisodeFixture};
use support::tracker::FakeTracker;

const WAIT: Duration = Duration::from_secs(25);
/// 2020-04-04T01:15:56Z.
const VIEWED: i64 = 1_585_962_956;

struct World {
    dir: tempfile::TempDir,
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

fn ep(n: u32, show: &str, title: &str, viewed: Option<i64>) -> WatchedEpisodeFixture {
    let mut e = WatchedEpisodeFixture::new(
        &format!("{}{n:03}", show),
        show,
        title,
        1,
        n,
        viewed.unwrap_or(0),
    );
    if viewed.is_none() {
        e.view_count = 0;
        e.last_viewed_at = None;
    }
    e
}

/// Scooby: S01E01–E03 watched (no history rows), S01E04 unwatched; "Nobody Knows" (no ids,
/// no match): S01E01 watched.
fn library(plex: &FakePlex) {
    for n in 1..=3 {
        plex.push_watched(ep(
            n,
            "56850",
            "Be Cool, Scooby-Doo!",
            Some(VIEWED + n as i64 * 3600),
        ));
    }
    plex.push_watched(ep(4, "56850", "Be Cool, Scooby-Doo!", None));
    plex.push_watched(ep(1, "777", "Nobody Knows", Some(VIEWED)));
}

fn rfc3339(t: i64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(t as u64))
        .to_string()
}

async fn setup() -> (tempfile::TempDir, FakePlex, FakeTracker, String) {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![scooby()]).await;
    let tracker = FakeTracker::start(vec![
        json!({"id": "scooby", "title": "Be Cool, Scooby-Doo! (tracker)", "year": 2015, "tvdb_id": 301376}),
    ])
    .await;
    // Polls only when asked; no library scan (the sync is under test).
    let poll = "[poll]\nschedule = \"0 0 0 1 1 *\"\ninitial_lookback = \"36500d\"\nretry_backoff = \"200ms\"\nlibrary_scan = false\n";
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), poll);
    std::fs::write(dir.path().join("plexsync.toml"), &cfg_text).unwrap();
    let out = daemon::cli(
        &dir.path().join("plexsync.toml"),
        &["secret", "set", "plex-token"],
        Some(TOKEN),
    );
    assert!(out.status.success(), "{out:?}");
    (dir, plex, tracker, cfg_text)
}

async fn world() -> World {
    let (dir, plex, tracker, cfg_text) = setup().await;
    let daemon = InProc::start(dir.path(), &cfg_text).await;
    World {
        dir,
        plex,
        tracker,
        daemon,
    }
}

async fn post_sync(d: &InProc, body: Value) -> Result<Value, (u16, String)> {
    match plexsync::client::request(
        &d.socket(),
        "POST",
        "/api/sync",
        Some(serde_json::to_vec(&body).unwrap()),
    )
    .await
    {
        Ok(b) => Ok(serde_json::from_slice(&b).unwrap()),
        Err(plexsync::client::ClientError::Http { status, body }) => Err((status, body)),
        Err(e) => panic!("POST /api/sync: {e}"),
    }
}

/// Start a sync over the API and wait for its summary.
async fn sync(d: &InProc, body: Value) -> Value {
    let started = post_sync(d, body)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", d.log()));
    assert_eq!(started, json!({"started": true}));
    for _ in 0..1000 {
        let st = d.api("GET", "/api/sync").await;
        if st["running"] == false {
            assert!(st["error"].is_null(), "{st}\n{}", d.log());
            return st;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the sync did not finish:\n{}", d.log());
}

/// Wait until the daemon has nothing left to send: no play waits for resolution and the outbox
/// holds nothing (its batches, in flight or waiting, included). A finished sync's writes are
/// committed before its summary, so from then on anything it queued shows here until the
/// tracker has it: the tracker's requests can then be counted, rather than after a pause that
/// proves nothing about an export still on its way.
async fn nothing_left_to_send(d: &InProc) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = d.status().await;
        let c = &st["counts"];
        if c["pending_resolution"] == 0 && c["outbox_items"] == 0 && c["batches"] == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "exports still waiting: {st}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The real binary's CLI, off the test's runtime (the fakes answer from it meanwhile).
async fn cli(cfg: &std::path::Path, args: &[&str]) -> std::process::Output {
    let cfg = cfg.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        daemon::cli(&cfg, &args, None)
    })
    .await
    .unwrap()
}

/// The figures a summary gives, whoever ran it.
fn figures(st: &Value) -> Value {
    json!([
        st["sections_total"],
        st["sections_done"],
        st["shows_walked"],
        st["shows_total"],
        st["episodes_seen"],
        st["episodes_watched"],
        st["plays_new"],
        st["already_exported"],
        st["parked_in_conflicts"],
    ])
}

#[tokio::test]
async fn sync_brings_the_tracker_to_plexs_watched_state_with_plexs_dates_once() {
    let w = world().await;
    library(&w.plex);
    // Watched in the tracker, unwatched in Plex: stays watched (never unmark).
    w.tracker
        .state
        .lock()
        .unwrap()
        .watched
        .insert(("scooby".into(), 1, 4), "2019-01-01T00:00:00Z".into());
    assert_eq!(
        w.daemon.api("GET", "/api/sync").await,
        Value::Null,
        "null before the first"
    );
    let st = sync(&w.daemon, json!({})).await;
    assert_eq!(figures(&st), json!([1, 1, 2, 2, 5, 4, 4, 0, 1]), "{st}");
    eventually("3 episodes at the tracker", WAIT, || {
        (w.tracker.watched().len() == 4).then_some(())
    })
    .await;
    let watched = w.tracker.watched();
    for n in 1..=3u32 {
        assert_eq!(
            watched.get(&("scooby".to_string(), 1, n)),
            Some(&rfc3339(VIEWED + n as i64 * 3600)),
            "Plex's lastViewedAt is the watch date"
        );
    }
    assert_eq!(
        watched
            .get(&("scooby".to_string(), 1, 4))
            .map(String::as_str),
        Some("2019-01-01T00:00:00Z"),
        "an episode unwatched in Plex stays watched in the tracker"
    );
    // Nothing was sent about the unwatched episode, and nothing but watched POSTs at all.
    for p in w.tracker.posts() {
        let body: Value = serde_json::from_slice(&p.body).unwrap();
        for e in body["episodes"].as_array().unwrap() {
            assert_ne!(e["episode"], 4, "{body}");
        }
    }
    // The show without a match waits for a person.
    let status = w.daemon.status().await;
    assert_eq!(status["counts"]["conflicts"], 1, "{status}");

    // Plex's pages were asked with X-Plex-Container-* and the type filters.
    let shows = w.plex.requests_to("/library/sections/2/all");
    assert!(
        shows.iter().all(|r| r.query.contains("type=2")),
        "{shows:?}"
    );
    assert!(w.plex.count("/library/metadata/56850/allLeaves") >= 1);

    // A second run journals and sends nothing.
    let posts = w.tracker.posts().len();
    let journal = status["counts"]["journal"].clone();
    let again = sync(&w.daemon, json!({})).await;
    assert_eq!(
        figures(&again),
        json!([1, 1, 2, 2, 5, 4, 0, 4, 0]),
        "{again}"
    );
    assert_eq!(w.daemon.status().await["counts"]["journal"], journal);
    nothing_left_to_send(&w.daemon).await;
    assert_eq!(
        w.tracker.posts().len(),
        posts,
        "the second sync sent nothing"
    );
    // A summary row per sync. The second's is recorded after its status reads finished.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = w.daemon.activity().await;
        let summaries = rows
            .iter()
            .filter(|r| r["source"] == "library" && r["event"] == "sync")
            .count();
        if summaries == 2 {
            break;
        }
        assert!(
            summaries < 2 && tokio::time::Instant::now() < deadline,
            "a summary row per sync: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn dry_run_stores_nothing_lists_episodes_and_shows_that_need_a_person() {
    let w = world().await;
    library(&w.plex);
    // A dry run before the first catalogue is read lists every show as undecided ("the
    // resolver would retry"): it waits for the catalogue, as a person would see it loaded.
    let deadline = tokio::time::Instant::now() + WAIT;
    while w.daemon.status().await["catalogue_shows"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no catalogue:\n{}",
            w.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let before = w.daemon.status().await["counts"].clone();
    let st = sync(&w.daemon, json!({"dry_run": true})).await;
    assert_eq!(st["dry_run"], true);
    let would: Vec<String> = st["would_export"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            format!(
                "{} S{:02}E{:02} {}",
                w["show"].as_str().unwrap(),
                w["season"].as_u64().unwrap(),
                w["episode"].as_u64().unwrap(),
                w["tracker_title"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        would,
        (1..=3)
            .map(|n| format!("Be Cool, Scooby-Doo! S01E0{n} Be Cool, Scooby-Doo! (tracker)"))
            .collect::<Vec<_>>()
    );
    assert_eq!(st["would_need_a_person"], json!(["Nobody Knows"]));
    assert_eq!(
        w.daemon.status().await["counts"],
        before,
        "a dry run stores nothing"
    );
    assert!(w.tracker.posts().is_empty());
    // The CLI prints the same list.
    let out = cli(&w.dir.path().join("plexsync.toml"), &["sync", "--dry-run"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("Be Cool, Scooby-Doo! S01E02 → Be Cool, Scooby-Doo! (tracker)"),
        "{text}"
    );
    assert!(text.contains("Nobody Knows"), "{text}");
}

#[tokio::test]
async fn a_history_row_and_the_sync_of_the_same_viewing_are_one_export() {
    let w = world().await;
    w.plex
        .push_watched(ep(1, "56850", "Be Cool, Scooby-Doo!", Some(VIEWED)));
    w.plex.push_history(HistoryFixture {
        history_key: "/status/sessions/history/1".into(),
        rating_key: Some("56850001".into()),
        show_rating_key: Some("56850".into()),
        grandparent_title: "Be Cool, Scooby-Doo!".into(),
        season: 1,
        episode: 1,
        viewed_at: VIEWED,
        account_id: 1,
    });
    w.daemon.api("POST", "/api/poll").await;
    eventually("the history play at the tracker", WAIT, || {
        (w.tracker.watched().len() == 1).then_some(())
    })
    .await;
    let st = sync(&w.daemon, json!({})).await;
    assert_eq!(
        (st["plays_new"].clone(), st["already_exported"].clone()),
        (json!(0), json!(1)),
        "{st}"
    );
    nothing_left_to_send(&w.daemon).await;
    assert_eq!(w.tracker.posts().len(), 1, "one viewing, one export");
    assert_eq!(w.daemon.status().await["counts"]["journal"], 1);
    // The play's activity row says which sources saw it.
    let rows = w.daemon.activity().await;
    let row = rows
        .iter()
        .find(|r| r["play_id"] == 1 && r["status"] == "success" && r["source"] == "poll")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(row["sources"], json!(["poll", "library"]), "{row}");
}

#[tokio::test]
async fn one_sync_at_a_time_and_the_filters() {
    let w = world().await;
    library(&w.plex);
    w.plex.state.lock().unwrap().library_delay = Duration::from_millis(300);
    assert_eq!(
        post_sync(&w.daemon, json!({})).await,
        Ok(json!({"started": true}))
    );
    let (status, body) = post_sync(&w.daemon, json!({})).await.unwrap_err();
    assert_eq!((status, body.as_str()), (409, "a sync is running"));
    let running = w.daemon.api("GET", "/api/sync").await;
    assert_eq!(running["running"], true, "{running}");
    for _ in 0..400 {
        if w.daemon.api("GET", "/api/sync").await["running"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    w.plex.state.lock().unwrap().library_delay = Duration::ZERO;
    // One show by title (any case), then by ratingKey; an unknown one is an error.
    let one = sync(&w.daemon, json!({"show": "nobody knows"})).await;
    assert_eq!(
        (one["shows_walked"].clone(), one["episodes_watched"].clone()),
        (json!(1), json!(1)),
        "{one}"
    );
    let by_key = sync(&w.daemon, json!({"show": "56850", "section": "2"})).await;
    assert_eq!(
        (
            by_key["shows_walked"].clone(),
            by_key["episodes_seen"].clone()
        ),
        (json!(1), json!(4)),
        "{by_key}"
    );
    post_sync(&w.daemon, json!({"show": "No Such Show"}))
        .await
        .unwrap();
    let failed = loop {
        let st = w.daemon.api("GET", "/api/sync").await;
        if st["running"] == false {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        failed["error"].as_str().unwrap().contains("No Such Show"),
        "{failed}"
    );
    let out = cli(
        &w.dir.path().join("plexsync.toml"),
        &["sync", "--section", "99"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no TV section"),
        "{out:?}"
    );
}

#[tokio::test]
async fn online_and_offline_give_the_same_summary() {
    // Online: the CLI hands the job to the running daemon.
    let w = world().await;
    library(&w.plex);
    let out = cli(&w.dir.path().join("plexsync.toml"), &["sync", "--json"]).await;
    assert!(out.status.success(), "{out:?}\n{}", w.daemon.log());
    let online: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Offline: the same library, no daemon (it ran once, so the store exists).
    let (dir, plex, _tracker, cfg_text) = setup().await;
    library(&plex);
    let mut d = InProc::start(dir.path(), &cfg_text).await;
    d.stop().await;
    let cfg = dir.path().join("plexsync.toml");
    let out = cli(&cfg, &["sync", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let offline: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(figures(&online), figures(&offline), "{online}\n{offline}");
    assert_eq!(figures(&offline), json!([1, 1, 2, 2, 5, 4, 4, 0, 1]));
    assert!(plex.count("/library/metadata/56850/allLeaves") >= 1);
    // Offline, twice: nothing new the second time.
    let out = cli(&cfg, &["sync", "--json"]).await;
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            again["plays_new"].clone(),
            again["already_exported"].clone()
        ),
        (json!(0), json!(4)),
        "{again}"
    );
    // Human output: the summary lines.
    let out = cli(&cfg, &["sync"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "shows walked:",
        "episodes watched:",
        "new plays:",
        "already exported:",
        "parked in conflicts:",
    ] {
        assert!(text.contains(line), "{text}");
    }
    drop(w.dir);
}

#[tokio::test]
async fn a_show_deleted_between_the_listing_and_its_walk_is_skipped() {
    let w = world().await;
    library(&w.plex);
    // Plex lists Scooby, then has no episodes for it: deleted between the section listing
    // and its walk. The sync goes on with the other show.
    w.plex
        .fail_next_on("/library/metadata/56850/allLeaves", 404, 1);
    let st = sync(&w.daemon, json!({})).await;
    assert_eq!(
        (
            st["shows_walked"].clone(),
            st["shows_vanished"].clone(),
            st["plays_new"].clone()
        ),
        (json!(1), json!(1), json!(1)),
        "{st}"
    );
    assert!(w.plex.count("/library/metadata/777/allLeaves") >= 1);
    let status = w.daemon.status().await;
    assert_eq!(
        status["counts"]["journal"], 1,
        "Nobody Knows S01E01: {status}"
    );
    assert!(
        w.daemon.log().contains("vanished"),
        "the skipped show is logged:\n{}",
        w.daemon.log()
    );
}

/// Shows deleted in Plex while the sync walks the listing shift it by more than a page's
/// overlap, so the listing is read again from the start: the shows already walked are not
/// walked (nor counted) twice.
#[tokio::test]
async fn a_listing_read_again_after_shows_vanished_walks_each_show_once() {
    let (dir, plex, tracker, cfg_text) = setup().await;
    let cfg_text = cfg_text.replace("[poll]\n", "[poll]\npage_size = 5\n");
    std::fs::write(dir.path().join("plexsync.toml"), &cfg_text).unwrap();
    for n in 1..=12u32 {
        plex.push_watched(ep(
            1,
            &format!("{}", 9000 + n),
            &format!("Show {n:02}"),
            Some(VIEWED + n as i64 * 3600),
        ));
    }
    // The listings: one for the total, then the walk's first page (shows 1–5); then shows
    // 1–3 are deleted, and the second page's overlap shows none of what it should.
    plex.remove_shows_before(3, 3);
    let daemon = InProc::start(dir.path(), &cfg_text).await;
    let st = sync(&daemon, json!({})).await;
    assert_eq!(
        (
            st["shows_walked"].clone(),
            st["episodes_watched"].clone(),
            st["plays_new"].clone(),
            st["already_exported"].clone(),
        ),
        (json!(12), json!(12), json!(12), json!(0)),
        "{st}"
    );
    assert!(
        daemon.log().contains("reading it again from the start"),
        "the listing was read again:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.status().await["counts"]["journal"], 12);
    drop(tracker);
}
