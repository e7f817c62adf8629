//! A person's decisions, undone without losing a play (issue 12): conflict cards carry the
//! facts from Plex's metadata, short ids, several conflicts ignored at once, plays of an
//! ignored show held (from before and after the ignore) and all sent when the show is mapped
//! later — online and offline — and the tracker's catalogue searched the same both ways.
//! The daemon runs in process (support/inproc.rs); the CLI is the real binary.

mod support;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use support::inproc::InProc;
use support::plex::{FakePlex, FakeShow, TOKEN};
use support::tracker::FakeTracker;
use support::{daemon, eventually, multipart, sample_json, samples};
use unicode_width::UnicodeWidthStr;

const WAIT: Duration = Duration::from_secs(20);

async fn run(config: PathBuf, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        daemon::cli(&config, &refs, None)
    })
    .await
    .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_out(o: &Output) -> Value {
    let s = ok(o);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A real scrobble capture, re-aimed at another show and episode.
async fn scrobble(url: &str, rk: &str, title: &str, episode: u32, viewed_at: i64) {
    let mut p = sample_json(support::NEW_AGENT_SCROBBLE);
    let m = &mut p["Metadata"];
    m["grandparentRatingKey"] = json!(rk);
    m["grandparentKey"] = json!(format!("/library/metadata/{rk}"));
    m["grandparentGuid"] = json!(format!("plex://show/{rk:0>24}"));
    m["grandparentTitle"] = json!(title);
    m["ratingKey"] = json!(format!("{rk}{episode:03}"));
    m["guid"] = json!(format!("plex://episode/{rk}{episode:021}"));
    m["index"] = json!(episode);
    m["parentIndex"] = json!(1);
    m["lastViewedAt"] = json!(viewed_at);
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

fn by_title<'a>(items: &'a Value, title: &str) -> &'a Value {
    items["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["plex"]["title"] == title)
        .unwrap_or_else(|| panic!("no {title} in {items}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_plays_are_held_and_sent_when_mapped_later_online_and_offline() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let _plex = FakePlex::start(vec![
        FakeShow {
            rating_key: "40275".into(),
            guid: format!("plex://show/{:0>24}", "40275"),
            title: "The Office".into(),
            year: 2003,
            // An id the tracker's shows do not carry: no id matcher can decide it.
            guids: vec!["tvdb://73244".into()],
        },
        FakeShow {
            rating_key: "50001".into(),
            guid: format!("plex://show/{:0>24}", "50001"),
            title: "Lucky Man".into(),
            year: 2016,
            guids: vec![],
        },
    ])
    .await;
    let tracker = FakeTracker::start(vec![
        json!({"id": "office-uk", "title": "The Office", "year": 2001, "tmdb_id": 2996}),
        json!({"id": "office-us", "title": "The Office", "year": 2005, "tmdb_id": 2316, "imdb_id": "tt0386676"}),
        json!({"id": "luckyman", "title": "Lucky Man (UK)", "year": 2016}),
        json!({"id": "lucky7", "title": "Lucky Seven", "year": 2003}),
    ])
    .await;
    _plex.list_shared_user();
    let text = daemon::config_with_plex(
        &_plex.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        "[[matchers]]\nkind = \"title\"\n[poll]\nenabled = false\n",
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let mut d = InProc::start(dir.path(), &text).await;
    support::accounts_read(&d).await;
    // The Office's webhook names it 范马刃牙 (the capture's title); Plex's metadata knows
    // its year, library and ids.
    scrobble(&d.webhook_url, "40275", "范马刃牙", 1, 1_700_000_000).await;
    scrobble(&d.webhook_url, "50001", "Lucky Man", 1, 1_700_000_100).await;
    let mut listed = Value::Null;
    for _ in 0..400 {
        listed = json_out(&run(cfg.clone(), &["conflicts", "list", "--json"]).await);
        if listed["total"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["total"], 2, "{listed}\n{}", d.log());

    // The card has the facts: year and library from Plex, ids parsed from its guids, when
    // the held play was viewed, and each candidate's title, year and ids.
    let office = by_title(&listed, "范马刃牙");
    let office_id = office["id"].as_str().unwrap().to_string();
    assert!(office_id.len() <= 12, "short id: {office_id}");
    assert_eq!(office["plex"]["year"], 2003, "{office}");
    assert_eq!(office["plex"]["library"], "TV Shows", "{office}");
    assert_eq!(office["plex"]["tvdb_id"], 73244, "{office}");
    assert_eq!(office["first_play_at"], 1_700_000_000, "{office}");
    assert_eq!(office["last_play_at"], 1_700_000_000, "{office}");
    let us = office["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["show_id"] == "office-us")
        .unwrap_or_else(|| panic!("{office}"));
    assert_eq!(us["title"], "The Office");
    assert_eq!(us["year"], 2005);
    assert_eq!(us["tmdb_id"], 2316);
    let lucky_id = by_title(&listed, "Lucky Man")["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(lucky_id.len() <= 12);

    // Wide characters keep the columns: every row of the table is as wide as its header.
    let table = ok(&run(cfg.clone(), &["mappings", "list"]).await);
    let rows: Vec<&str> = table.lines().filter(|l| !l.contains("row(s)")).collect();
    assert!(rows.len() >= 3, "{table}");
    assert!(
        table.contains("范马刃牙 (2003)"),
        "no doubled or missing year: {table}"
    );
    let widths: Vec<usize> = rows.iter().map(|l| l.width()).collect();
    assert!(
        widths.iter().all(|w| *w == widths[0]),
        "{widths:?}\n{table}"
    );

    // Ignore both at once: by id and by title (any case, with its year).
    let said = ok(&run(
        cfg.clone(),
        &[
            "conflicts",
            "resolve",
            &office_id,
            "lucky man (2016)",
            // The Office again, by its title: decided once, not an error.
            "范马刃牙",
            "--ignore",
        ],
    )
    .await);
    assert!(said.contains("1 play(s) released"), "{said}");
    assert_eq!(d.api("GET", "/api/conflicts").await["total"], 0);
    // Plays after the ignore are journaled and held as well.
    scrobble(&d.webhook_url, "40275", "范马刃牙", 2, 1_700_000_200).await;
    scrobble(&d.webhook_url, "50001", "Lucky Man", 2, 1_700_000_300).await;
    let mut ignored = Value::Null;
    for _ in 0..400 {
        ignored = json_out(&run(cfg.clone(), &["mappings", "list", "--ignored", "--json"]).await);
        let held = |t| by_title(&ignored, t)["held_plays"].clone();
        if ignored["total"] == 2 && held("范马刃牙") == 2 && held("Lucky Man") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        by_title(&ignored, "Lucky Man")["held_plays"],
        2,
        "{ignored}"
    );
    assert_eq!(by_title(&ignored, "范马刃牙")["held_plays"], 2, "{ignored}");
    assert_eq!(by_title(&ignored, "Lucky Man")["sync_enabled"], false);
    assert!(tracker.watched().is_empty(), "nothing sent while ignored");

    // The catalogue search a person picks the show with.
    let search_on = json_out(&run(cfg.clone(), &["shows", "search", "lucky", "--json"]).await);
    assert_eq!(search_on["items"][0]["id"], "luckyman", "{search_on}");
    let office_on = json_out(
        &run(
            cfg.clone(),
            &["shows", "search", "the office", "--year", "2005", "--json"],
        )
        .await,
    );
    assert_eq!(office_on["items"][0]["id"], "office-us", "{office_on}");
    let o = run(cfg.clone(), &["shows", "search", " ", "--json"]).await;
    assert!(!o.status.success(), "an empty search is refused");

    // Map Lucky Man while the daemon runs, by the title `mappings list` shows: every held
    // play (before and after the ignore) reaches the tracker, and sync is on.
    let said = ok(&run(
        cfg.clone(),
        &["mappings", "set", "Lucky Man", "--show", "luckyman"],
    )
    .await);
    assert!(
        said.contains("sync on") && said.contains("2 held play(s) released, 2 episode(s) queued"),
        "{said}"
    );
    eventually("Lucky Man's held plays reach the tracker", WAIT, || {
        let w = tracker.watched();
        (w.contains_key(&("luckyman".to_string(), 1, 1))
            && w.contains_key(&("luckyman".to_string(), 1, 2)))
        .then_some(())
    })
    .await;
    let m = by_title(
        &d.api("GET", "/api/mappings?status=mapped").await,
        "Lucky Man",
    )
    .clone();
    assert_eq!(m["sync_enabled"], true, "{m}");
    assert_eq!(m["id"], lucky_id.as_str());

    // With the daemon stopped: the same search answer, and mapping The Office offline by
    // its short id releases its held plays, which go out once the daemon runs again.
    assert_eq!(d.stop().await, Some(0));
    let search_off = json_out(&run(cfg.clone(), &["shows", "search", "lucky", "--json"]).await);
    assert_eq!(search_off, search_on);
    let said = ok(&run(
        cfg.clone(),
        &[
            "mappings",
            "set",
            &office_id,
            "--show",
            "office-us",
            "--json",
        ],
    )
    .await);
    let v: Value = serde_json::from_str(&said).unwrap();
    assert_eq!(v["plays_released"], 2, "{v}");
    assert_eq!(v["episodes_queued"], 2, "{v}");
    assert_eq!(v["sync_enabled"], true, "{v}");
    d.restart().await;
    eventually("The Office's held plays reach the tracker", WAIT, || {
        let w = tracker.watched();
        (w.contains_key(&("office-us".to_string(), 1, 1))
            && w.contains_key(&("office-us".to_string(), 1, 2)))
        .then_some(())
    })
    .await;
    // Nothing was sent twice, and a backfill has nothing left to export.
    assert_eq!(tracker.watched().len(), 4, "{:?}", tracker.watched());
    let all = d.api("GET", "/api/mappings?status=ignored").await;
    assert_eq!(all["total"], 0, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_switched_off_and_on_again_sends_what_was_watched_meanwhile() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![FakeShow {
        rating_key: "50001".into(),
        guid: format!("plex://show/{:0>24}", "50001"),
        title: "Lucky Man".into(),
        year: 2016,
        guids: vec![],
    }])
    .await;
    let tracker = FakeTracker::start(vec![
        json!({"id": "lm", "title": "Lucky Man", "year": 2016}),
    ])
    .await;
    plex.list_shared_user();
    let text = daemon::config_with_plex(
        &plex.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        "[[matchers]]\nkind = \"title\"\n[poll]\nenabled = false\n",
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let d = InProc::start(dir.path(), &text).await;
    support::accounts_read(&d).await;
    scrobble(&d.webhook_url, "50001", "Lucky Man", 1, 1_700_000_000).await;
    eventually("E1 at the tracker", WAIT, || {
        tracker
            .watched()
            .contains_key(&("lm".to_string(), 1, 1))
            .then_some(())
    })
    .await;
    ok(&run(cfg.clone(), &["mappings", "set", "lucky man", "--disable"]).await);
    scrobble(&d.webhook_url, "50001", "Lucky Man", 2, 1_700_000_100).await;
    eventually("E2 journaled and resolved", WAIT, || {
        let c = &d.status_blocking_counts();
        (c.0 >= 2 && c.1 == 0).then_some(())
    })
    .await;
    assert!(!tracker.watched().contains_key(&("lm".to_string(), 1, 2)));
    let said = ok(&run(cfg.clone(), &["mappings", "set", "lucky man", "--enable"]).await);
    assert!(said.contains("1 episode(s) queued"), "{said}");
    eventually("E2 at the tracker once sync is on again", WAIT, || {
        tracker
            .watched()
            .contains_key(&("lm".to_string(), 1, 2))
            .then_some(())
    })
    .await;
}

/// A conflict decided with sync off (`mappings set ID --show X --disable`) is one write that
/// makes the mapping with sync off: its held play is recorded, not sent. Sync asked for on an
/// ignored show is refused, naming what to do instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_mapped_with_sync_off_sends_nothing_and_an_ignored_show_has_no_sync() {
    if samples().is_none() {
        return;
    }
    let (w, id) = lucky_man_in_a_conflict().await;
    let (cfg, d, tracker) = (&w.cfg, &w.d, &w.tracker);
    let v = json_out(
        &run(
            cfg.clone(),
            &[
                "mappings",
                "set",
                &id,
                "--show",
                "luckyman",
                "--disable",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(v["sync_enabled"], false, "{v}");
    assert_eq!(v["episodes_queued"], 0, "{v}");
    assert_eq!(v["plays_released"], 1, "{v}");
    let st = d.api("GET", "/api/status").await;
    assert_eq!(st["counts"]["outbox_items"], 0, "{st:#}");
    assert_eq!(st["counts"]["batches"], 0, "{st:#}");
    assert!(tracker.posts().is_empty());

    // A second show, ignored: turning its sync on is refused, with the way to map it.
    scrobble(
        &d.webhook_url,
        "50002",
        "Lucky Sevens Again",
        1,
        1_700_000_100,
    )
    .await;
    let listed = eventually("the second show in a conflict", WAIT, || {
        let v = json_out(&d.cli(&["conflicts", "list", "--json"], None));
        (v["total"] == 1).then_some(v)
    })
    .await;
    let other = listed["items"][0]["id"].as_str().unwrap().to_string();
    ok(&run(cfg.clone(), &["conflicts", "resolve", &other, "--ignore"]).await);
    let o = run(cfg.clone(), &["mappings", "set", &other, "--enable"]).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--show"), "{err}");
}

/// Two "Create new" for one conflict at once (a double click, the page and the CLI): the
/// tracker gets one new show, and the second answer says the conflict was decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_new_twice_at_once_creates_one_show() {
    if samples().is_none() {
        return;
    }
    let (w, id) = lucky_man_in_a_conflict().await;
    let (d, tracker) = (&w.d, &w.tracker);
    // The tracker is slow to create: both requests are in before the first is answered.
    tracker
        .state
        .lock()
        .unwrap()
        .faults
        .push(support::tracker::Fault::Hang(Duration::from_millis(300)));
    let shows_before = tracker.state.lock().unwrap().shows.len();
    let path = format!("/api/conflicts/{id}/resolve");
    let body = br#"{"action":"create"}"#.to_vec();
    let socket = d.socket();
    let (a, b) = tokio::join!(
        plexsync::client::request(&socket, "POST", &path, Some(body.clone())),
        plexsync::client::request(&socket, "POST", &path, Some(body)),
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "one decides, one is told: {a:?} {b:?}"
    );
    let err = a.err().or(b.err()).unwrap().to_string();
    assert!(
        err.contains("decided meanwhile") || err.contains("no open conflict has the id"),
        "{err}"
    );
    assert_eq!(
        tracker.state.lock().unwrap().shows.len(),
        shows_before + 1,
        "one new show"
    );
}

/// A "Create new" that outlasts its request (a slow tracker, a short `request_timeout`, or a
/// client that gave up): the request is answered 408, but the decision is carried out whole —
/// the conflict is decided with the show the tracker made, and asking again creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_outlasts_its_request_is_carried_out_whole() {
    if samples().is_none() {
        return;
    }
    let (w, id) = lucky_man_with_a_slow_create().await;
    let (d, tracker) = (&w.d, &w.tracker);
    let shows_before = tracker.state.lock().unwrap().shows.len();
    let path = format!("/api/conflicts/{id}/resolve");
    let body = br#"{"action":"create"}"#.to_vec();
    let socket = d.socket();
    // Over TCP (a script with the admin token) the request_timeout answers 408.
    let first = reqwest::Client::new()
        .post(format!("http://{}{path}", d.addr))
        .bearer_auth(d.admin_token().await)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 408);
    eventually("the decision carried out", WAIT, || {
        let v = json_out(&d.cli(&["conflicts", "list", "--json"], None));
        (v["total"] == 0).then_some(())
    })
    .await;
    let shows = tracker.state.lock().unwrap().shows.len();
    assert_eq!(shows, shows_before + 1, "one new show");
    let maps = json_out(&d.cli(&["mappings", "list", "--json"], None));
    assert!(
        maps.to_string().contains("created"),
        "mapped to the show made: {maps}"
    );
    let again = plexsync::client::request(&socket, "POST", &path, Some(body)).await;
    assert!(again.is_err(), "{again:?}");
    assert_eq!(tracker.state.lock().unwrap().shows.len(), shows);
}

/// The CLI waits for a slow decision's real answer (the socket has no request timeout for a
/// change): `conflicts resolve --create` against a tracker slower than `request_timeout`
/// exits 0 and says what it did, as it does offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_for_a_slow_create_and_reports_it() {
    if samples().is_none() {
        return;
    }
    let (w, id) = lucky_man_with_a_slow_create().await;
    let o = w.d.cli(&["conflicts", "resolve", &id, "--create"], None);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("mapped"), "{out}");
    let v = json_out(&w.d.cli(&["conflicts", "list", "--json"], None));
    assert_eq!(v["total"], 0, "{v}");
}

/// A person's *Create new* whose answer is lost (the tracker makes the show after the plugin's
/// 2 s timeout): clicking again is refused until the create has settled, then finds the show
/// in the tracker's catalogue and maps to it. One show, never two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_create_new_after_a_lost_answer_uses_the_show_the_first_made() {
    if samples().is_none() {
        return;
    }
    let (w, id) = lucky_man_in_a_conflict().await;
    let before = w.tracker.state.lock().unwrap().shows.len();
    w.tracker
        .state
        .lock()
        .unwrap()
        .create_faults
        .push(support::tracker::Fault::AnswerLate(Duration::from_secs(3)));
    let o = w.d.cli(&["conflicts", "resolve", &id, "--create"], None);
    assert!(!o.status.success(), "the first answer was lost");
    // The person clicks again until it works (each attempt before the create settles is
    // refused with a reason, not sent).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let out = loop {
        let o = w.d.cli(&["conflicts", "resolve", &id, "--create"], None);
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            std::time::Instant::now() < deadline,
            "never resolved: {err}\n{}",
            w.d.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(out.contains("mapped"), "{out}");
    let shows = w.tracker.state.lock().unwrap().shows.clone();
    assert_eq!(shows.len(), before + 1, "created once: {shows:?}");
    let made = shows.last().unwrap()["id"].as_str().unwrap().to_string();
    let v = json_out(&w.d.cli(&["mappings", "list", "--json"], None));
    assert_eq!(
        v["items"][0]["tracker"]["id"], made,
        "mapped to the show the first create made: {v}"
    );
}

/// A daemon with `[matching] auto_add_shows` (guid and title matchers, polling off) whose
/// Plex has one show (`rating_key`, `title`, TMDB id `tmdb`) that no tracker show matches; the
/// tracker's catalogue (one other show) is loaded.
struct AutoAdd {
    _dir: tempfile::TempDir,
    _plex: FakePlex,
    tracker: FakeTracker,
    d: InProc,
}

async fn auto_add_world(rating_key: &str, title: &str, tmdb: u64) -> AutoAdd {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![FakeShow {
        rating_key: rating_key.into(),
        guid: format!("plex://show/{rating_key:0>24}"),
        title: title.into(),
        year: 2024,
        guids: vec![format!("tmdb://{tmdb}")],
    }])
    .await;
    let tracker = FakeTracker::start(vec![
        json!({"id": "other", "title": "Something Else Entirely", "year": 1999}),
    ])
    .await;
    plex.list_shared_user();
    let text = daemon::config_with_plex(
        &plex.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        "[[matchers]]\nkind = \"guid\"\n[[matchers]]\nkind = \"title\"\n[poll]\nenabled = false\n[matching]\nauto_add_shows = true\n",
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let d = InProc::start(dir.path(), &text).await;
    support::accounts_read(&d).await;
    eventually("the catalogue", WAIT, || {
        let st = json_out(&d.cli(&["status", "--json"], None));
        (st["catalogue_shows"] == 1).then_some(())
    })
    .await;
    AutoAdd {
        _dir: dir,
        _plex: plex,
        tracker,
        d,
    }
}

/// `[matching] auto_add_shows`: a tracker that refuses to create the show (403: a key that
/// may not) is not asked again and again; the show waits in a conflict for a person, with the
/// reason, and health shows the refused key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_auto_add_becomes_a_conflict_and_shows_in_health() {
    if samples().is_none() {
        return;
    }
    let w = auto_add_world("60001", "Brand New Show", 999001).await;
    let (tracker, d) = (&w.tracker, &w.d);
    tracker
        .state
        .lock()
        .unwrap()
        .faults
        .push(support::tracker::Fault::Status(403, None));
    scrobble(&d.webhook_url, "60001", "Brand New Show", 1, 1_700_000_000).await;
    let listed = eventually("the show in a conflict", WAIT, || {
        let v = json_out(&d.cli(&["conflicts", "list", "--json"], None));
        (v["total"] == 1).then_some(v)
    })
    .await;
    let c = by_title(&listed, "Brand New Show");
    assert!(c.to_string().contains("refused to create the show"), "{c}");
    let st = d.api("GET", "/api/status").await;
    assert!(
        st["health"].as_array().unwrap().iter().any(|h| h["message"]
            .as_str()
            .unwrap_or("")
            .contains("403")
            || h["message"].as_str().unwrap_or("").contains("forbid")),
        "{st:#}"
    );
    let creates = tracker.state.lock().unwrap().shows.len();
    assert_eq!(creates, 1, "no show was created");
}

/// `[matching] auto_add_shows`: a create whose answer is lost (the tracker is slower than the
/// request may wait, and creates the show all the same) is not sent again blindly: the
/// tracker's catalogue is read once the create has settled, and the play maps to the show the
/// first create made. One show, never two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_add_whose_answer_was_lost_does_not_create_the_show_twice() {
    if samples().is_none() {
        return;
    }
    let w = auto_add_world("60002", "Slow To Create", 999002).await;
    let (tracker, d) = (&w.tracker, &w.d);
    // The create: answered after the tracker plugin's 2 s timeout, the show made anyway.
    tracker
        .state
        .lock()
        .unwrap()
        .create_faults
        .push(support::tracker::Fault::AnswerLate(Duration::from_secs(3)));
    scrobble(&d.webhook_url, "60002", "Slow To Create", 1, 1_700_000_000).await;
    let at = eventually("the play at the tracker", Duration::from_secs(60), || {
        let w = tracker.watched();
        (!w.is_empty()).then_some(w)
    })
    .await;
    let shows = tracker.state.lock().unwrap().shows.clone();
    let made: Vec<&Value> = shows.iter().filter(|s| s["tmdb_id"] == 999002).collect();
    assert_eq!(made.len(), 1, "created once: {shows:?}\n{}", d.log());
    let id = made[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        at.into_keys().collect::<Vec<_>>(),
        vec![(id, 1, 1)],
        "the play went to the show the first create made"
    );
}

/// Plex with "Lucky Man" (2016, rating key 50001) and "Lucky Sevens Again" (2010, 50002), a
/// tracker whose closest shows are not close enough to map either, a daemon with the title
/// matcher; then a play of Lucky Man, waited for until it is a conflict. Returns the world,
/// the config path and the conflict's id.
struct Lucky {
    _dir: tempfile::TempDir,
    _plex: FakePlex,
    tracker: FakeTracker,
    cfg: PathBuf,
    d: InProc,
}

async fn lucky_man_in_a_conflict() -> (Lucky, String) {
    lucky_man_in_a_conflict_with(|text| text).await
}

/// [`lucky_man_in_a_conflict`] where a request gives up after 1 s and the tracker answers the
/// next request (the create) after 2.5 s, well inside the exporter's own 10 s.
async fn lucky_man_with_a_slow_create() -> (Lucky, String) {
    let (w, id) = lucky_man_in_a_conflict_with(|text| {
        let t = text
            .replace("[server]\n", "[server]\nrequest_timeout = \"1s\"\n")
            .replace(
                "timeout = \"2s\"\n\n[outbox]",
                "timeout = \"10s\"\n\n[outbox]",
            );
        assert!(t.contains("timeout = \"10s\""), "{t}");
        t
    })
    .await;
    w.tracker
        .state
        .lock()
        .unwrap()
        .faults
        .push(support::tracker::Fault::Hang(Duration::from_millis(2500)));
    (w, id)
}

/// [`lucky_man_in_a_conflict`] with its config text edited by `edit`.
async fn lucky_man_in_a_conflict_with(edit: impl Fn(String) -> String) -> (Lucky, String) {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let show = |rk: &str, title: &str, year| FakeShow {
        rating_key: rk.into(),
        guid: format!("plex://show/{rk:0>24}"),
        title: title.into(),
        year,
        guids: vec![],
    };
    let plex = FakePlex::start(vec![
        show("50001", "Lucky Man", 2016),
        show("50002", "Lucky Sevens Again", 2010),
    ])
    .await;
    let tracker = FakeTracker::start(vec![
        json!({"id": "luckyman", "title": "Lucky Man (UK)", "year": 2016}),
        json!({"id": "lucky7", "title": "Lucky Seven", "year": 2003}),
    ])
    .await;
    plex.list_shared_user();
    let text = daemon::config_with_plex(
        &plex.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        "[[matchers]]\nkind = \"title\"\n[poll]\nenabled = false\n",
    );
    let text = edit(text);
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let d = InProc::start(dir.path(), &text).await;
    support::accounts_read(&d).await;
    scrobble(&d.webhook_url, "50001", "Lucky Man", 1, 1_700_000_000).await;
    let listed = eventually("Lucky Man in a conflict", WAIT, || {
        let v = json_out(&d.cli(&["conflicts", "list", "--json"], None));
        (v["total"] == 1).then_some(v)
    })
    .await;
    let id = by_title(&listed, "Lucky Man")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let w = Lucky {
        _dir: dir,
        _plex: plex,
        tracker,
        cfg,
        d,
    };
    (w, id)
}

trait Counts {
    /// (journaled plays, plays waiting for the resolver), read from the store's status.
    fn status_blocking_counts(&self) -> (u64, u64);
}

impl Counts for InProc {
    fn status_blocking_counts(&self) -> (u64, u64) {
        let out = self.cli(&["status", "--json"], None);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            v["counts"]["journal"].as_u64().unwrap_or(0),
            v["counts"]["pending_resolution"]
                .as_u64()
                .unwrap_or(u64::MAX),
        )
    }
}

/// A title carrying terminal escape sequences (a webhook's `grandparentTitle` is stored as
/// sent) never reaches the terminal of whoever lists or decides conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titles_with_control_characters_do_not_drive_the_terminal() {
    if samples().is_none() {
        return;
    }
    let (w, _) = lucky_man_in_a_conflict().await;
    let d = &w.d;
    let evil = "Evil\u{1b}]0;owned\u{7}\u{1b}[2J Show";
    scrobble(&d.webhook_url, "70001", evil, 1, 1_700_000_100).await;
    let listed = eventually("the second conflict", WAIT, || {
        let v = json_out(&d.cli(&["conflicts", "list", "--json"], None));
        (v["total"] == 2).then_some(v)
    })
    .await;
    let id = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["plex"]["title"]
                .as_str()
                .is_some_and(|t| t.contains("Evil"))
        })
        .expect("the evil show's conflict")["id"]
        .as_str()
        .unwrap()
        .to_string();
    for args in [
        vec!["conflicts", "list"],
        vec!["mappings", "list", "--conflicts"],
        vec!["conflicts", "resolve", &id, "--ignore"],
    ] {
        let o = d.cli(&args, None);
        assert!(o.status.success(), "{args:?}: {o:?}");
        for (what, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            assert!(
                !bytes.iter().any(|b| *b == 0x1b || *b == 0x07),
                "{args:?} {what}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Evil"),
            "{args:?}: {o:?}"
        );
    }
}
