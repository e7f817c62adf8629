//! The daemon's life under systemd's signals: SIGHUP re-reads plexsync.toml (a valid file takes
//! effect without a restart, an invalid one is refused and the running config stays), SIGTERM
//! stops accepting, lets in-flight requests finish, and exits 0 with nothing lost.
//!
//! What a reload does is tested in process (support/inproc.rs; its reload trigger runs the
//! same reload task SIGHUP wakes); that SIGHUP reaches it, and everything about SIGTERM and
//! crashes, on the real binary.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::inproc::InProc;
use support::plex::{FakePlex, FakeShow, TOKEN, baki_hanma};
use support::tracker::{FakeTracker, Fault};
use support::{NEW_AGENT_SCROBBLE, dead_url, eventually, multipart, sample_json, samples};

const WAIT: Duration = Duration::from_secs(20);

fn catalogue() -> Vec<Value> {
    vec![json!({"id": 101, "title": "Baki Hanma", "year": 2021, "tmdb_id": 108757})]
}

async fn post(url: &str, ct: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_valid_config_and_refuses_an_invalid_one() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![baki_hanma()]).await;
    let tracker = FakeTracker::start(catalogue()).await;
    let cfg = dir.path().join("plexsync.toml");
    // The capture is a shared user's play: listed by the server and synced.
    plex.list_shared_user();
    let config = |tracker_url: &str| {
        daemon::config_with_plex(
            &plex.url(),
            tracker_url,
            daemon::SYNC_SHARED_USER,
            "[poll]\nenabled = false\n",
        )
    };
    // First the tracker's address is wrong: the play waits.
    let wrong = config(&dead_url());
    std::fs::write(&cfg, &wrong).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let d = InProc::start(dir.path(), &wrong).await;
    support::accounts_read(&d).await;
    let (ct, body) = multipart(&sample_json(NEW_AGENT_SCROBBLE), None);
    let (s, t) = post(&d.webhook_url, &ct, body).await;
    assert_eq!(s, 200, "{t}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(tracker.posts().is_empty());

    // An invalid edit: refused with the file, line and key; the daemon runs on unchanged.
    let invalid = wrong.replace("[outbox]\n", "[outbox]\nmax_attempts_typo = 3\n");
    let line = invalid
        .lines()
        .position(|l| l.starts_with("max_attempts_typo"))
        .unwrap()
        + 1;
    std::fs::write(&cfg, &invalid).unwrap();
    d.reload();
    eventually("the reload is refused", WAIT, || {
        d.log()
            .contains("configuration reload refused")
            .then_some(())
    })
    .await;
    let log = d.log();
    let refused = log
        .lines()
        .find(|l| l.contains("configuration reload refused"))
        .unwrap();
    assert!(
        refused.contains(&format!("plexsync.toml:{line}")) && refused.contains("max_attempts_typo"),
        "the log names the line and key: {refused}"
    );
    let st = d.status().await;
    assert!(
        st["config_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("max_attempts_typo")),
        "{st}"
    );
    assert_eq!(
        reqwest::get(format!("http://{}/healthz", d.addr))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // The old limits still hold: a 1 MiB body is accepted.
    let (ct, mut body) = multipart(
        &sample_json(NEW_AGENT_SCROBBLE),
        Some(&vec![0xFF; 1024 * 1024]),
    );
    body.truncate(body.len()); // unchanged; the thumb makes it large
    let (s, t) = post(&d.webhook_url, &ct, body).await;
    assert_eq!(s, 200, "{t}");

    // A valid edit: the right tracker and a smaller body limit take effect without a restart.
    let right = config(&tracker.url()).replace(
        "[server]\n",
        "[server]\nmax_body_bytes = 65536\nmax_payload_bytes = 32768\n",
    );
    std::fs::write(&cfg, &right).unwrap();
    d.reload();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !tracker.watched().contains_key(&("101".to_string(), 1, 1)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the waiting play never reached the new tracker:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ct, body) = multipart(
        &sample_json(NEW_AGENT_SCROBBLE),
        Some(&vec![0xFF; 1024 * 1024]),
    );
    let (s, t) = post(&d.webhook_url, &ct, body).await;
    assert_eq!(s, 413, "the new limit applies: {t}");
    let st = d.status().await;
    assert!(st["config_reloaded_at"].as_i64().is_some(), "{st}");
    assert!(st["config_reload_error"].is_null(), "{st}");
    // The reload wakes the exporter before its task logs it: the play can reach the new
    // tracker before the line is written.
    eventually("the reload logged", WAIT, || {
        d.log().contains("configuration reloaded").then_some(())
    })
    .await;
}

/// A reload to another tracker: a play that arrives before the new tracker's catalogue is read
/// waits for it, and maps to the new tracker's show id, not to the old one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_another_tracker_matches_only_against_the_new_ones_shows() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![baki_hanma()]).await;
    let old = FakeTracker::start(catalogue()).await;
    let new = FakeTracker::start(vec![
        json!({"id": 202, "title": "Baki Hanma", "year": 2021, "tmdb_id": 108757}),
    ])
    .await;
    let cfg = dir.path().join("plexsync.toml");
    // The capture is a shared user's play: listed by the server and synced.
    plex.list_shared_user();
    let config = |tracker_url: &str| {
        daemon::config_with_plex(
            &plex.url(),
            tracker_url,
            daemon::SYNC_SHARED_USER,
            "[poll]\nenabled = false\n",
        )
    };
    let first = config(&old.url());
    std::fs::write(&cfg, &first).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let d = InProc::start(dir.path(), &first).await;
    support::accounts_read(&d).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while d.status().await["catalogue_shows"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no catalogue:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new tracker is slow to answer its catalogue (its first request): a play must not be
    // matched meanwhile.
    new.push_fault(Fault::Hang(Duration::from_secs(2)));
    std::fs::write(&cfg, config(&new.url())).unwrap();
    d.reload();
    let deadline = tokio::time::Instant::now() + WAIT;
    while d.status().await["config_reloaded_at"].as_i64().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ct, body) = multipart(&sample_json(NEW_AGENT_SCROBBLE), None);
    let (s, t) = post(&d.webhook_url, &ct, body).await;
    assert_eq!(s, 200, "{t}");
    eventually("the play at the new tracker", WAIT, || {
        (!new.watched().is_empty()).then_some(())
    })
    .await;
    let watched: Vec<_> = new.watched().into_keys().collect();
    assert_eq!(watched, vec![("202".to_string(), 1, 1)], "{}", d.log());
    assert!(old.posts().is_empty());
}

/// A second show on the fake Plex, "Quiet Harbour" (rating key 777), whose look-ups the tests
/// below slow down.
fn quiet_harbour(guids: Vec<String>) -> FakeShow {
    FakeShow {
        rating_key: "777".into(),
        guid: "plex://show/5d9c0000000000000000777a".into(),
        title: "Quiet Harbour".into(),
        year: 2019,
        guids,
    }
}

/// A play of Baki Hanma (the real capture), then one of Quiet Harbour (the capture made that
/// show's): two shows for one resolver round.
async fn post_baki_then_quiet_harbour(d: &InProc) {
    let baki = sample_json(NEW_AGENT_SCROBBLE);
    let mut quiet = baki.clone();
    let m = &mut quiet["Metadata"];
    m["grandparentRatingKey"] = json!("777");
    m["grandparentKey"] = json!("/library/metadata/777");
    m["grandparentGuid"] = json!("plex://show/5d9c0000000000000000777a");
    m["grandparentTitle"] = json!("Quiet Harbour");
    m["ratingKey"] = json!("778");
    m["key"] = json!("/library/metadata/778");
    m["Guid"] = json!([]);
    m["guid"] = json!("plex://episode/5d9c0000000000000000778a");
    for payload in [&baki, &quiet] {
        let (ct, body) = multipart(payload, None);
        let (s, t) = post(&d.webhook_url, &ct, body).await;
        assert_eq!(s, 200, "{t}");
    }
}

/// The defect this guards: a resolver round records its decisions together at its end, after
/// every play's look-ups. A show decided early in a round, before a reload to another tracker
/// that came while a later play's look-up hung, was recorded after it: mapped for good to the
/// old tracker's id, its episodes sent under that id to the new tracker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_decided_before_a_switch_to_another_tracker_is_decided_again() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let slow = quiet_harbour(vec!["tmdb://990777".into()]);
    let plex = FakePlex::start(vec![baki_hanma(), slow]).await;
    let old = FakeTracker::start(catalogue()).await;
    let new = FakeTracker::start(vec![
        json!({"id": 202, "title": "Baki Hanma", "year": 2021, "tmdb_id": 108757}),
    ])
    .await;
    let cfg = dir.path().join("plexsync.toml");
    plex.list_shared_user();
    // Plex look-ups may take 10 s here: the slow one below is a look-up, not a timeout.
    let config = |tracker_url: &str| {
        daemon::config_with_plex(
            &plex.url(),
            tracker_url,
            daemon::SYNC_SHARED_USER,
            "[poll]\nenabled = false\n",
        )
        .replacen("timeout = \"2s\"", "timeout = \"10s\"", 1)
    };
    let first = config(&old.url());
    assert!(first.contains("timeout = \"10s\""), "{first}");
    std::fs::write(&cfg, &first).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    // The old tracker's catalogue comes late, so both plays wait and go in one round.
    old.push_fault(Fault::Hang(Duration::from_secs(2)));
    plex.delay_on("/library/metadata/777", Duration::from_secs(5));
    let d = InProc::start(dir.path(), &first).await;
    support::accounts_read(&d).await;
    post_baki_then_quiet_harbour(&d).await;
    // The round has decided Baki Hanma (old tracker: 101) and waits on Quiet Harbour's
    // look-up: now the switch.
    eventually("the slow look-up under way", WAIT, || {
        (plex.delays_begun() >= 1).then_some(())
    })
    .await;
    std::fs::write(&cfg, config(&new.url())).unwrap();
    d.reload();
    eventually("the play at the new tracker under its id", WAIT, || {
        (!new.watched().is_empty()).then_some(())
    })
    .await;
    let watched: Vec<_> = new.watched().into_keys().collect();
    assert_eq!(watched, vec![("202".to_string(), 1, 1)], "{}", d.log());
    assert!(
        new.posts().iter().all(|p| !p.path.contains("/101/")),
        "the old id reached the new tracker:\n{}",
        d.log()
    );
    assert!(old.posts().is_empty());
}

/// The reviewer's case against the guard above: a reload that does not change the tracker
/// (here the same file) must not throw a round away, or a show the round created in the
/// tracker (`auto_add_shows`) is created again by the next round: two copies in the tracker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_the_same_tracker_keeps_the_rounds_created_show() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let slow = quiet_harbour(vec![]);
    let plex = FakePlex::start(vec![baki_hanma(), slow]).await;
    // Neither show is in the tracker: Baki Hanma (it has a TMDB id) is created.
    let tracker = FakeTracker::start(vec![
        json!({"id": "other", "title": "Something Else Entirely", "year": 1999}),
    ])
    .await;
    let cfg = dir.path().join("plexsync.toml");
    plex.list_shared_user();
    let text = daemon::config_with_plex(
        &plex.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        "[poll]\nenabled = false\n[matching]\nauto_add_shows = true\n",
    )
    .replacen("timeout = \"2s\"", "timeout = \"10s\"", 1);
    std::fs::write(&cfg, &text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    tracker.push_fault(Fault::Hang(Duration::from_secs(2)));
    plex.delay_on("/library/metadata/777", Duration::from_secs(5));
    let d = InProc::start(dir.path(), &text).await;
    support::accounts_read(&d).await;
    post_baki_then_quiet_harbour(&d).await;
    eventually("the slow look-up under way", WAIT, || {
        (plex.delays_begun() >= 1).then_some(())
    })
    .await;
    // Baki Hanma is created by now; a reload of the same file while the round waits.
    d.reload();
    eventually("the play at the tracker", WAIT, || {
        (!tracker.watched().is_empty()).then_some(())
    })
    .await;
    let made = |t: &FakeTracker| {
        t.state
            .lock()
            .unwrap()
            .shows
            .iter()
            .filter(|s| s["title"] == "Baki Hanma")
            .count()
    };
    assert_eq!(made(&tracker), 1, "{}", d.log());
    // Quiet Harbour's look-up ends and its round is recorded; still one Baki Hanma.
    let deadline = tokio::time::Instant::now() + WAIT;
    while d.status().await["counts"]["pending_resolution"] != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "plays still pending:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(made(&tracker), 1, "{}", d.log());
}

/// The candidates of the open conflicts served by the daemon: (conflict count, every
/// candidate's show id, the first conflict's `waiting` note).
async fn served_candidates(d: &InProc) -> (u64, Vec<String>, Option<String>) {
    let v = d.api("GET", "/api/conflicts").await;
    let ids = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["candidates"].as_array().cloned().unwrap_or_default())
        .filter_map(|k| k["show_id"].as_str().map(str::to_string))
        .collect();
    let waiting = v["items"][0]["waiting"].as_str().map(str::to_string);
    (v["total"].as_u64().unwrap_or(0), ids, waiting)
}

/// Open conflicts across reloads to other trackers: their candidates are never the old
/// tracker's ids once another is named (none offered until its catalogue is read, then its
/// own), and a conflict the new tracker's catalogue settles (≥ the auto-map threshold) is
/// mapped there and its held play sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_conflicts_are_matched_again_against_a_new_trackers_catalogue() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    // Tracker A: "The Office" of 2001 and of 2005 for Plex's of 2003, a conflict.
    let (_plex, a, first) = support::office_conflict(dir.path()).await;
    // Tracker B: the same two shows under its own ids, still a conflict.
    let b = FakeTracker::start(vec![
        json!({"id": "b-uk", "title": "The Office", "year": 2001}),
        json!({"id": "b-us", "title": "The Office", "year": 2005}),
    ])
    .await;
    // Tracker C: the show itself, a match.
    let c = FakeTracker::start(vec![
        json!({"id": "c-office", "title": "The Office", "year": 2003}),
    ])
    .await;
    let cfg = dir.path().join("plexsync.toml");
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let d = InProc::start(dir.path(), &first).await;
    support::accounts_read(&d).await;
    let (ct, body) = multipart(&sample_json(NEW_AGENT_SCROBBLE), None);
    let (s, t) = post(&d.webhook_url, &ct, body).await;
    assert_eq!(s, 200, "{t}");
    let mut seen = (0, Vec::new(), None);
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.1.len() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no conflict on tracker A: {seen:?}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = served_candidates(&d).await;
    }
    let mut ids = seen.1.clone();
    ids.sort();
    assert_eq!(ids, ["office-uk", "office-us"]);

    // Reload to B, whose catalogue is refused twice first (retried after 1-2 s, then 2-4 s):
    // meanwhile none of A's candidates is offered.
    b.push_fault(Fault::Status(503, None));
    b.push_fault(Fault::Status(503, None));
    std::fs::write(&cfg, first.replace(&a.url(), &b.url())).unwrap();
    d.reload();
    let deadline = tokio::time::Instant::now() + WAIT;
    while d.status().await["config_reloaded_at"].as_i64().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (total, ids, waiting) = served_candidates(&d).await;
    assert_eq!(total, 1);
    assert!(
        ids.is_empty(),
        "A's candidates offered after the switch: {ids:?}"
    );
    assert!(
        waiting
            .as_deref()
            .is_some_and(|w| w.contains("waiting for the tracker's catalogue")),
        "{waiting:?}"
    );
    // Once B's catalogue is read: B's ids, and never A's on the way.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut ids = Vec::new();
    while ids.len() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B's candidates never offered: {ids:?}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (total, got, waiting) = served_candidates(&d).await;
        assert_eq!(total, 1);
        assert!(
            got.iter().all(|id| id.starts_with("b-")),
            "another tracker's candidates offered: {got:?} ({waiting:?})"
        );
        ids = got;
    }
    ids.sort();
    assert_eq!(ids, ["b-uk", "b-us"]);
    let listed = d.cli(&["conflicts", "list"], None);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{table}");
    assert!(table.contains("b-uk") && table.contains("b-us"), "{table}");
    assert!(!table.contains("office-u"), "{table}");

    // Reload to C, which has the show: the conflict is mapped there and its play sent.
    std::fs::write(&cfg, first.replace(&a.url(), &c.url())).unwrap();
    d.reload();
    eventually("the held play at tracker C", WAIT, || {
        (!c.watched().is_empty()).then_some(())
    })
    .await;
    let watched: Vec<_> = c.watched().into_keys().collect();
    assert_eq!(watched, vec![("c-office".to_string(), 1, 1)], "{}", d.log());
    assert_eq!(served_candidates(&d).await.0, 0);
    let m = d.api("GET", "/api/mappings").await;
    assert_eq!(m["items"][0]["tracker"]["id"], "c-office", "{m}");
    assert_eq!(m["items"][0]["manual"], false, "{m}");
    assert!(a.posts().is_empty() && b.posts().is_empty());
}

/// The Office in a conflict on tracker A (two shows of its title, neither its year), the
/// daemon running with the title matcher, and the scrobble of it held there. `guids`: the
/// Plex show's own. Returns the dir, the fakes, the daemon, the config text and the
/// conflict's id.
async fn office_in_a_conflict(
    guids: Vec<String>,
    extra: &str,
) -> (
    tempfile::TempDir,
    FakePlex,
    FakeTracker,
    InProc,
    String,
    String,
) {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![FakeShow {
        rating_key: "40275".into(),
        guid: "plex://show/60e81fd8d8000e002d7d2976".into(),
        title: "The Office".into(),
        year: 2003,
        guids,
    }])
    .await;
    let a = FakeTracker::start(vec![
        json!({"id": "office-uk", "title": "The Office", "year": 2001}),
        json!({"id": "office-us", "title": "The Office", "year": 2005}),
    ])
    .await;
    plex.list_shared_user();
    // Every tracker request may take 30 s: the held ones below are held, not timed out.
    let text = daemon::config_with_plex(
        &plex.url(),
        &a.url(),
        daemon::SYNC_SHARED_USER,
        &format!("[[matchers]]\nkind = \"title\"\n[poll]\nenabled = false\n{extra}"),
    )
    .replace(
        "timeout = \"2s\"\n\n[outbox]",
        "timeout = \"30s\"\n\n[outbox]",
    );
    assert!(text.contains("timeout = \"30s\""), "{text}");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let d = InProc::start(dir.path(), &text).await;
    support::accounts_read(&d).await;
    let (ct, body) = multipart(&sample_json(NEW_AGENT_SCROBBLE), None);
    let (s, t) = post(&d.webhook_url, &ct, body).await;
    assert_eq!(s, 200, "{t}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let id = loop {
        let v = d.api("GET", "/api/conflicts").await;
        if v["items"][0]["candidates"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
        {
            break v["items"][0]["id"].as_str().unwrap().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no conflict on tracker A: {v}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (dir, plex, a, d, text, id)
}

/// A person's *Create new* on the conflict, sent over the admin socket: its answer (an
/// error as `<status>: <message>`).
fn create_new(d: &InProc, id: &str) -> tokio::task::JoinHandle<Result<Vec<u8>, String>> {
    let socket = d.socket();
    let path = format!("/api/conflicts/{id}/resolve");
    tokio::spawn(async move {
        plexsync::client::request(
            &socket,
            "POST",
            &path,
            Some(br#"{"action":"create"}"#.to_vec()),
        )
        .await
        .map_err(|e| match e {
            plexsync::client::ClientError::Http { status, body } => format!("{status}: {body}"),
            e => e.to_string(),
        })
    })
}

/// The defect this guards: a person's *Create new* on a conflict raced the rematch of that
/// conflict after a switch to another tracker. While the tracker was creating the person's
/// show, the new tracker's catalogue was read and the rematch mapped the conflict by itself;
/// the person's decision then found no conflict to record (404 "no open conflict"), and the
/// show made at the tracker for it was left orphaned. A conflict a person is deciding is now
/// passed over by the rematch: the person's decision stands, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_new_under_way_is_not_undone_by_the_rematch_of_its_conflict() {
    if samples().is_none() {
        return;
    }
    let (dir, _plex, a, d, text, id) = office_in_a_conflict(vec![], "").await;
    // Tracker C has the show itself: matched again there, the conflict would be mapped.
    let c = FakeTracker::start(vec![
        json!({"id": "c-office", "title": "The Office", "year": 2003}),
    ])
    .await;
    // C's catalogue and the person's create are held until the test lets each go.
    let (catalogue_read, create) = (
        support::tracker::Gate::default(),
        support::tracker::Gate::default(),
    );
    c.push_fault(Fault::Held(catalogue_read.clone()));
    c.state
        .lock()
        .unwrap()
        .create_faults
        .push(Fault::Held(create.clone()));
    std::fs::write(
        dir.path().join("plexsync.toml"),
        text.replace(&a.url(), &c.url()),
    )
    .unwrap();
    d.reload();
    eventually("tracker C's catalogue asked for", WAIT, || {
        (catalogue_read.arrived() >= 1).then_some(())
    })
    .await;
    let person = create_new(&d, &id);
    eventually("the person's show being created at C", WAIT, || {
        (create.arrived() >= 1).then_some(())
    })
    .await;
    // C's catalogue now: the rematch pass asks the conflict again while the create is under way.
    catalogue_read.open();
    eventually("the rematch pass over C's catalogue", WAIT, || {
        d.log()
            .contains("open conflicts of another tracker matched against this one")
            .then_some(())
    })
    .await;
    // (The pass met the conflict while the person held it: the race this is about.)
    assert!(
        d.log().contains("a person is deciding this conflict"),
        "{}",
        d.log()
    );
    create.open();
    let answer = person.await.unwrap();
    let shows = c.state.lock().unwrap().shows.clone();
    let made: Vec<String> = shows
        .iter()
        .filter_map(|s| s["id"].as_str())
        .filter(|id| *id != "c-office")
        .map(str::to_string)
        .collect();
    assert_eq!(made.len(), 1, "one show created: {shows:?}");
    let answer = answer.unwrap_or_else(|e| {
        panic!(
            "the person's decision failed and the show {:?} made for it is orphaned: {e}\n{}",
            made[0],
            d.log()
        )
    });
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(v["resolved"], true, "{v}");
    assert_eq!(v["plays_released"], 1, "{v}");
    // The held play goes to the show the person made, once, and nowhere else.
    eventually("the held play at C", WAIT, || {
        (!c.watched().is_empty()).then_some(())
    })
    .await;
    let watched: Vec<_> = c.watched().into_keys().collect();
    assert_eq!(watched, vec![(made[0].clone(), 1, 1)], "{}", d.log());
    assert_eq!(c.posts().len(), 1, "{:?}", c.posts());
    let m = d.api("GET", "/api/mappings").await;
    assert_eq!(m["total"], 1, "{m}");
    assert_eq!(m["items"][0]["tracker"]["id"], made[0].as_str(), "{m}");
    assert_eq!(m["items"][0]["manual"], true, "{m}");
    assert!(a.posts().is_empty());
}

/// The other way round: the rematch of a conflict after a switch is creating the show at the
/// new tracker (`[matching] auto_add_shows`) when a person asks to create it. The person's
/// decision waits for the rematch of that conflict, and is then told clearly that the daemon
/// mapped it (409) — not carried out beside it, which left the rematch's show orphaned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_new_during_the_rematch_of_its_conflict_is_told_what_the_rematch_did() {
    if samples().is_none() {
        return;
    }
    let (dir, _plex, a, d, text, id) = office_in_a_conflict(
        vec!["tmdb://2316".into()],
        "[matching]\nauto_add_shows = true\n",
    )
    .await;
    // Tracker C lacks the show: matched again there, the rematch creates it.
    let c = FakeTracker::start(vec![
        json!({"id": "other", "title": "Something Else Entirely", "year": 1999}),
    ])
    .await;
    let create = support::tracker::Gate::default();
    c.state
        .lock()
        .unwrap()
        .create_faults
        .push(Fault::Held(create.clone()));
    std::fs::write(
        dir.path().join("plexsync.toml"),
        text.replace(&a.url(), &c.url()),
    )
    .unwrap();
    d.reload();
    eventually("the rematch creating the show at C", WAIT, || {
        (create.arrived() >= 1).then_some(())
    })
    .await;
    let person = create_new(&d, &id);
    eventually("the person's decision waiting (or done)", WAIT, || {
        (person.is_finished()
            || d.log()
                .contains("the conflict is being decided; waiting for it"))
        .then_some(())
    })
    .await;
    create.open();
    let answer = person.await.unwrap();
    let shows = c.state.lock().unwrap().shows.clone();
    let made: Vec<&Value> = shows.iter().filter(|s| s["id"] != "other").collect();
    assert_eq!(made.len(), 1, "one show created: {shows:?}\n{}", d.log());
    let made = made[0]["id"].as_str().unwrap().to_string();
    let e = match answer {
        Err(e) => e,
        Ok(body) => panic!(
            "the person's create was carried out beside the rematch's: {}\n{}",
            String::from_utf8_lossy(&body),
            d.log()
        ),
    };
    assert!(
        e.contains("409") && e.contains("mapped it to show") && e.contains(&made),
        "{e}"
    );
    eventually("the held play at C", WAIT, || {
        (!c.watched().is_empty()).then_some(())
    })
    .await;
    let watched: Vec<_> = c.watched().into_keys().collect();
    assert_eq!(watched, vec![(made.clone(), 1, 1)], "{}", d.log());
    let m = d.api("GET", "/api/mappings").await;
    assert_eq!(m["total"], 1, "{m}");
    assert_eq!(m["items"][0]["tracker"]["id"], made.as_str(), "{m}");
    assert!(a.posts().is_empty());
}

/// SIGHUP reaches the reload: the binary re-reads its file (the reload itself is tested above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_text = daemon::config(&dead_url(), &dead_url(), "[poll]\nenabled = false\n");
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    assert!(d.status().await["config_reloaded_at"].is_null());
    let edited = cfg_text.replace("[server]\n", "[server]\nwebhook_rate_limit = 0\n");
    std::fs::write(&d.config, &edited).unwrap();
    d.signal("HUP");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !d.log().contains("configuration reloaded") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload after SIGHUP:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = d.status().await;
    assert!(st["config_reloaded_at"].as_i64().is_some(), "{st}");
    assert!(st["config_reload_error"].is_null(), "{st}");
    assert_eq!(d.stop(), Some(0), "{}", d.log());
}

/// SIGHUP during the start (`systemctl reload` right after `start`) neither kills the daemon
/// nor is lost: it comes up, and reloads once running. The start is held open by an exec
/// matcher that says hello only after 3 s; the signal goes once that program runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_during_the_start_is_a_reload_once_running() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("exec-starts");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/exec/tests/fixtures/scripted.py");
    let extra = format!(
        "[[matchers]]\nkind = \"exec\"\ncommand = \"{}\"\nargs = [\"--mark\", \"{}\", \"--hello-delay\", \"3\"]\nstart_timeout = \"60s\"\n[poll]\nenabled = false\n",
        fixture.display(),
        marker.display()
    );
    let cfg_text = daemon::config(&dead_url(), &dead_url(), &extra);
    let mut d = Daemon::launch(dir.path(), &cfg_text);
    // The daemon is in its start, probing the exec program (which marks itself first thing).
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::fs::read_to_string(&marker)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exec program never started:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The hello is 3 s away: the signal comes during the start.
    d.signal("HUP");
    d.wait_up().await;
    assert!(d.status().await["listen"].is_string());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !d.log().contains("configuration reloaded") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SIGHUP of the start was lost:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.stop(), Some(0), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_and_exits_cleanly() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![baki_hanma()]).await;
    // The tracker is down: the play must still be in the store after the exit.
    let cfg_text = daemon::config(&plex.url(), &dead_url(), "[poll]\nenabled = false\n");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    let path = d
        .webhook_url
        .strip_prefix(&format!("http://{}", d.addr))
        .unwrap()
        .to_string();
    let body = serde_json::to_vec(&sample_json(NEW_AGENT_SCROBBLE)).unwrap();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut conn = std::net::TcpStream::connect(&d.addr).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    // `Expect: 100-continue`: the daemon's HTTP layer answers `100 Continue` when the webhook
    // handler first reads the body, i.e. once the connection is accepted, the head parsed and
    // the request handed over (in progress, so shutdown does not close it as idle). That
    // answer is the signal the request is in flight; a fixed pause could end before the
    // daemon had even accepted the connection.
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.flush().unwrap();
    let interim = read_head(&mut conn);
    assert!(
        interim.starts_with("HTTP/1.1 100"),
        "the handler reads the body: {interim:?}\n{}",
        d.log()
    );
    conn.write_all(head).unwrap();
    conn.flush().unwrap();

    d.signal("TERM");
    // It stops accepting…
    let addr = d.addr.clone();
    eventually("the listener closes", WAIT, || {
        std::net::TcpStream::connect(&addr).is_err().then_some(())
    })
    .await;
    // …but the request already in flight completes, durably.
    conn.write_all(tail).unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("journaled"), "{answer}");
    let code = tokio::task::spawn_blocking(move || {
        let c = d.wait_exit(WAIT);
        (c, d)
    })
    .await
    .unwrap();
    let (code, d) = code;
    assert_eq!(code, Some(0), "{}", d.log());
    assert!(d.log().contains("stopped"));
    assert!(!d.socket().exists(), "the admin socket is removed");
    // The store is closed cleanly and holds the play.
    let out = daemon::cli(&cfg, &["status", "--json"], None);
    assert!(
        matches!(out.status.code(), Some(0 | 2)), // 2: health has an error (not running)
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["running"], false);
    assert_eq!(st["counts"]["journal"], 1, "{st}");
}

/// Read one response head (up to its blank line) from `conn`, byte by byte so nothing after
/// it is consumed.
fn read_head(conn: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_work_after_a_crash() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![baki_hanma()]).await;
    let cfg_text = daemon::config(&plex.url(), &dead_url(), "[poll]\nenabled = false\n");
    let cfg = dir.path().join("plexsync.toml");
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    let (ct, body) = multipart(&sample_json(NEW_AGENT_SCROBBLE), None);
    let (s, t) = post(&d.webhook_url, &ct, body).await;
    assert_eq!(s, 200, "{t}");
    // SIGKILL: redb gets no chance to record a clean shutdown.
    d.kill();
    let out = daemon::cli(&cfg, &["status", "--json"], None);
    assert!(
        matches!(out.status.code(), Some(0 | 2)), // 2: health has an error (not running)
        "status after a crash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        st["counts"]["journal"], 1,
        "the acknowledged play survived: {st}"
    );
    let out = daemon::cli(&cfg, &["activity", "--json"], None);
    assert!(out.status.success());
}
