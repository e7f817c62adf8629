//! TMDB's alternative titles and translations as looser names of the tracker's shows
//! (issue 14): the daemon (in process) with the tmdb matcher against a fake TMDB serving our
//! own invented fixture, not the DEV set.
//!
//! - a Plex show titled by a translation has no candidate while the catalogue has only the
//!   tracker's names; once a TMDB key is stored, the background pass adds TMDB's names and the
//!   same kind of show becomes a conflict with the right tracker show as its first candidate,
//!   never a mapping;
//! - the names are cached in the store: a restart makes no TMDB request;
//! - the pass keeps to the plugin's rate limit;
//! - a rejected key (401) or a timeout costs only the names: shows still map by title.

mod support;

use std::time::{Duration, Instant};

#[path = "../plugins/tmdb/tests/support/fake_tmdb.rs"]
mod fake_tmdb;

use fake_tmdb::{FakeTmdb, Reply, Row};
use serde_json::{Value, json};
use support::inproc::InProc;
use support::plex::{FakePlex, FakeShow, TOKEN};
use support::tracker::FakeTracker;
use support::{daemon, eventually, multipart, sample_json, samples};

const WAIT: Duration = Duration::from_secs(30);
const KEY: &str = "fake-tmdb-key-0123456789";
const PASS_DONE: &str = "catalogue names: pass finished";

/// Invented series, with the names TMDB would list for them.
fn rows() -> Vec<Row> {
    vec![
        Row::new(9101, None, None)
            .named(&["Night Harbour", "Port de Nuit"], Some(2014))
            .alternative(&["Nachthafen"], &["Porto di Notte"]),
        Row::new(9102, None, None)
            .named(&["The Glass Orchard"], Some(2019))
            .alternative(&[], &["Le Verger de Verre"]),
        Row::new(9103, None, None).named(&["Plain Show"], Some(2001)),
    ]
}

fn tracker_shows() -> Vec<Value> {
    vec![
        json!({"id": "harbour", "title": "Night Harbour", "year": 2014, "tmdb_id": 9101}),
        json!({"id": "orchard", "title": "The Glass Orchard", "year": 2019, "tmdb_id": 9102}),
        json!({"id": "plain", "title": "Plain Show", "year": 2001, "tmdb_id": 9103}),
        // TMDB knows no such series (404, cached as nothing).
        json!({"id": "gone", "title": "Gone Show", "year": 2010, "tmdb_id": 9999}),
        json!({"id": "local", "title": "Local Show", "year": 2012}),
    ]
}

fn plex_show(rk: &str, title: &str, year: i32) -> FakeShow {
    FakeShow {
        rating_key: rk.into(),
        guid: format!("plex://show/{rk:0>24}"),
        title: title.into(),
        year,
        guids: vec![],
    }
}

/// A real scrobble capture, re-aimed at another show.
async fn scrobble(url: &str, rk: &str, title: &str) {
    let mut p = sample_json(support::NEW_AGENT_SCROBBLE);
    let m = &mut p["Metadata"];
    m["grandparentRatingKey"] = json!(rk);
    m["grandparentKey"] = json!(format!("/library/metadata/{rk}"));
    m["grandparentGuid"] = json!(format!("plex://show/{rk:0>24}"));
    m["grandparentTitle"] = json!(title);
    m["ratingKey"] = json!(format!("{rk}001"));
    m["guid"] = json!(format!("plex://episode/{rk}{:021}", 1));
    m["index"] = json!(1);
    m["parentIndex"] = json!(1);
    m["lastViewedAt"] = json!(1_700_000_000);
    let (ct, body) = multipart(&p, None);
    let status = reqwest::Client::new()
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("the daemon answers")
        .status();
    assert_eq!(status, 200);
}

/// The config (no polling; the scrobbles' shared user synced: `plex` lists it).
fn config(plex: &FakePlex, tracker: &FakeTracker, tmdb: &FakeTmdb, extra: &str) -> String {
    plex.list_shared_user();
    daemon::config_with_plex(
        &plex.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        &format!(
            "[[matchers]]\nkind = \"tmdb\"\napi_url = \"{}\"\n{extra}\n[[matchers]]\nkind = \"title\"\n[poll]\nenabled = false\n",
            tmdb.url
        ),
    )
}

fn tv_requests(tmdb: &FakeTmdb) -> Vec<fake_tmdb::Seen> {
    tmdb.requests()
        .into_iter()
        .filter(|s| s.path.starts_with("/3/tv/"))
        .collect()
}

/// The conflict of the Plex show titled `title`, once there is one.
async fn conflict_of(d: &InProc, title: &str) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        last = d.api("GET", "/api/conflicts").await;
        let found = last["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["plex"]["title"] == title);
        if let Some(c) = found {
            return c.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no conflict for {title}: {last}\n{}", d.log());
}

fn candidate_ids(conflict: &Value) -> Vec<String> {
    conflict["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["show_id"].as_str().map(str::to_string))
        .collect()
}

async fn passes_done(d: &InProc, n: usize) {
    eventually("the names pass", WAIT, || {
        let log = d.log();
        (log.matches(PASS_DONE).count() >= n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_translated_title_finds_its_show_as_a_candidate_once_tmdb_names_arrive() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![
        plex_show("61001", "Porto di Notte", 2014),
        plex_show("61002", "Le Verger de Verre", 2019),
        plex_show("61003", "Plain Show", 2001),
    ])
    .await;
    let tracker = FakeTracker::start(tracker_shows()).await;
    let tmdb = fake_tmdb::start(rows(), KEY, None).await;
    let text = config(&plex, &tracker, &tmdb, "rate_limit = \"2/1s\"");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let mut d = InProc::start(dir.path(), &text).await;
    support::accounts_read(&d).await;

    // No TMDB key yet: a translated title has no candidate, and TMDB is never asked.
    passes_done(&d, 1).await;
    scrobble(&d.webhook_url, "61001", "Porto di Notte").await;
    let before = conflict_of(&d, "Porto di Notte").await;
    assert!(candidate_ids(&before).is_empty(), "{before}");
    assert!(tv_requests(&tmdb).is_empty());

    // A key is stored (online): the matchers are rebuilt and asked for names again.
    let key_stored = Instant::now();
    let out = d.cli(&["secret", "set", "tmdb-key"], Some(KEY));
    assert!(out.status.success(), "{out:?}");
    eventually("TMDB names merged", WAIT, || {
        d.log()
            .lines()
            .any(|l| l.contains(PASS_DONE) && l.contains("shows_named=2"))
            .then_some(())
    })
    .await;
    let asked: Vec<String> = tv_requests(&tmdb)
        .iter()
        .map(|s| s.id().to_string())
        .collect();
    assert_eq!(asked, ["9101", "9102", "9103", "9999"]);

    // The conflict opened before the names arrived is asked again: its show is a candidate
    // now (still a conflict: a person decides).
    let deadline = Instant::now() + WAIT;
    let refreshed = loop {
        let c = conflict_of(&d, "Porto di Notte").await;
        if candidate_ids(&c).first().map(String::as_str) == Some("harbour") {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "never refreshed: {c}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refreshed["candidates"][0]["score"].as_f64().unwrap() < 0.9,
        "{refreshed}"
    );

    // The translated title now finds its show: a candidate, first, and no mapping.
    scrobble(&d.webhook_url, "61002", "Le Verger de Verre").await;
    let after = conflict_of(&d, "Le Verger de Verre").await;
    assert_eq!(
        candidate_ids(&after).first().map(String::as_str),
        Some("orchard"),
        "{after}"
    );
    let score = after["candidates"][0]["score"].as_f64().unwrap();
    assert!(score < 0.9, "a name from TMDB never maps: {after}");
    // A show's own title still maps as before.
    scrobble(&d.webhook_url, "61003", "Plain Show").await;
    eventually("Plain Show mapped", WAIT, || {
        tracker
            .watched()
            .keys()
            .any(|(show, _, _)| show == "plain")
            .then_some(())
    })
    .await;
    let mappings = d.api("GET", "/api/mappings?status=mapped").await;
    assert_eq!(mappings["total"], 1, "{mappings}");

    // The pass kept to the rate limit, 2 requests per second: request k cannot have come
    // before k / 2 seconds after the key was stored (lower bounds only, never flaky).
    for (k, s) in tv_requests(&tmdb).iter().enumerate() {
        let earliest = Duration::from_secs(1) * (k as u32 / 2);
        assert!(
            s.at - key_stored >= earliest,
            "request {k} came {:?} after the key was stored",
            s.at - key_stored
        );
    }

    // A restart: the names come from the store's cache, TMDB is not asked again.
    let done = d.log().matches(PASS_DONE).count();
    d.restart().await;
    eventually("the names pass after the restart", WAIT, || {
        d.log()
            .lines()
            .filter(|l| l.contains(PASS_DONE) && l.contains("shows_named=2"))
            .count()
            .gt(&1)
            .then_some(())
    })
    .await;
    assert!(d.log().matches(PASS_DONE).count() > done);
    assert_eq!(tv_requests(&tmdb).len(), 4, "cached names asked again");
    d.stop().await;
}

/// A rejected key, then a TMDB that never answers in time: the pass fails (logged), and the
/// daemon maps and syncs exactly as without names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_or_a_timeout_costs_only_the_names() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    for (case, tmdb) in [
        ("401", fake_tmdb::start(rows(), "another-key", None).await),
        (
            "timeout",
            fake_tmdb::start(
                rows(),
                KEY,
                Some(std::sync::Arc::new(|s: &fake_tmdb::Seen, _| {
                    s.path
                        .starts_with("/3/tv/")
                        .then(|| Reply::new(200, "{}").delay(Duration::from_secs(5)))
                })),
            )
            .await,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let plex = FakePlex::start(vec![plex_show("62001", "Night Harbour", 2014)]).await;
        let tracker = FakeTracker::start(tracker_shows()).await;
        let text = config(&plex, &tracker, &tmdb, "timeout = \"300ms\"");
        let cfg = dir.path().join("plexsync.toml");
        std::fs::write(&cfg, &text).unwrap();
        for (name, value) in [("plex-token", TOKEN), ("tmdb-key", KEY)] {
            assert!(
                daemon::cli(&cfg, &["secret", "set", name], Some(value))
                    .status
                    .success()
            );
        }
        let mut d = InProc::start(dir.path(), &text).await;
        support::accounts_read(&d).await;
        eventually("the failed names pass", WAIT, || {
            d.log()
                .lines()
                .any(|l| l.contains(PASS_DONE) && l.contains("failed=true"))
                .then_some(())
        })
        .await;
        assert!(!tv_requests(&tmdb).is_empty(), "{case}: TMDB was asked");
        assert!(
            d.log().contains("cannot get more names for the catalogue"),
            "{case}: {}",
            d.log()
        );
        assert!(!d.log().contains(KEY), "{case}: the key is never logged");
        scrobble(&d.webhook_url, "62001", "Night Harbour").await;
        eventually("Night Harbour synced", WAIT, || {
            tracker
                .watched()
                .keys()
                .any(|(show, _, _)| show == "harbour")
                .then_some(())
        })
        .await;
        let status = d.status().await;
        assert_eq!(status["catalogue_shows"], 5, "{case}: {status}");
        d.stop().await;
    }
}

/// `plexsync shows search --json` as the CLI prints it (run with the daemon up, it asks the
/// daemon over its socket; with none, it reads the store itself).
fn search(cfg: &std::path::Path, query: &str) -> Value {
    let out = daemon::cli(cfg, &["shows", "search", query, "--json"], None);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The names TMDB gave are kept in the store, so `plexsync shows search` answers the same
/// through the daemon and offline: a translated title finds its show both ways, without
/// the offline CLI asking TMDB anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shows_search_finds_an_alternative_title_online_and_offline_alike() {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![]).await;
    let tracker = FakeTracker::start(tracker_shows()).await;
    let tmdb = fake_tmdb::start(rows(), KEY, None).await;
    let text = config(&plex, &tracker, &tmdb, "rate_limit = \"100/1s\"");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    for (name, value) in [("plex-token", TOKEN), ("tmdb-key", KEY)] {
        let out = daemon::cli(&cfg, &["secret", "set", name], Some(value));
        assert!(out.status.success(), "{out:?}");
    }
    let mut d = InProc::start(dir.path(), &text).await;
    eventually("TMDB names merged", WAIT, || {
        d.log()
            .lines()
            .any(|l| l.contains(PASS_DONE) && l.contains("shows_named=2"))
            .then_some(())
    })
    .await;
    // Only one of TMDB's names matches: no title, alias or main title of the tracker's does.
    let online = search(&cfg, "Porto di Notte");
    assert_eq!(online["items"][0]["id"], "harbour", "{online}");
    let own_title = search(&cfg, "Plain Show");
    d.stop().await;

    let asked = tv_requests(&tmdb).len();
    let offline = search(&cfg, "Porto di Notte");
    assert_eq!(offline, online);
    assert_eq!(search(&cfg, "Plain Show"), own_title);
    assert_eq!(tv_requests(&tmdb).len(), asked, "offline asked TMDB");
}
