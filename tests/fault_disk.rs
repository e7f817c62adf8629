//! Fault test: the store's disk fills up. The store lives on a small tmpfs; a filler file
//! takes the rest of the space. While the disk is full, webhooks answer 503 with Retry-After
//! (never 200), nothing is half-written, and once space returns the daemon stores plays again
//! and delivers them; the store file opens cleanly afterwards with consistent counts.
//!
//! A *Create new* whose decision cannot be recorded on the full disk leaves the tracker's new
//! show remembered: asked again once space returns, it maps the conflict to that show and
//! creates no second one.
//!
//! Mounting needs root (CI runs as root on the same kind of machine). Where `mount` is refused
//! the test prints a NOTICE and skips rather than fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::plex::{FakePlex, FakeShow, PlexFault, TOKEN, baki_hanma};
use support::tracker::FakeTracker;
use support::{NEW_AGENT_SCROBBLE, eventually, multipart, sample_json, samples};

const LEGACY: &str = "webhook/episode_legacy-thetvdb_media.resume_owner-id1.json";
const WAIT: Duration = Duration::from_secs(20);

/// A tmpfs mounted for the test's lifetime; unmounted (lazily) on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "NOTICE: cannot mount a tmpfs ({}); skipping the disk-full test",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fill the file system holding `dir` with one file until writes fail.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // Smaller writes take the last partial chunk too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
    p
}

fn scrobble(season: u32, episode: u32) -> Value {
    let mut p = sample_json(LEGACY);
    p["event"] = json!("media.scrobble");
    p["Metadata"]["parentIndex"] = json!(season);
    p["Metadata"]["index"] = json!(episode);
    p["Metadata"]["ratingKey"] = json!(format!("9{season:03}{episode:03}"));
    p["Metadata"]["guid"] = json!(format!(
        "com.plexapp.agents.thetvdb://301376/{season}/{episode}?lang=en"
    ));
    p
}

async fn post(http: &reqwest::Client, url: &str, p: &Value) -> (u16, Option<String>, String) {
    let (ct, body) = multipart(p, None);
    let r = http
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, retry, r.text().await.unwrap_or_default())
}

/// The daemon for the shared user's plays against `plex` and `tracker`, with `extra` config
/// (the store on the test's small disk), the Plex token set, started and its accounts read.
async fn start_synced(dir: &Path, plex: &FakePlex, tracker: &FakeTracker, extra: &str) -> Daemon {
    let cfg_text =
        daemon::config_with_plex(&plex.url(), &tracker.url(), daemon::SYNC_SHARED_USER, extra);
    let cfg = dir.join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let out = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = Daemon::start(dir, &cfg_text).await;
    support::accounts_read(&d).await;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_recovers_when_space_returns() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("disk"), "16m") else {
        return;
    };
    let plex = FakePlex::start(vec![FakeShow {
        rating_key: "56850".into(),
        guid: "com.plexapp.agents.thetvdb://301376?lang=en".into(),
        title: "Be Cool, Scooby-Doo!".into(),
        year: 2015,
        guids: vec![],
    }])
    .await;
    let tracker = FakeTracker::start(vec![
        json!({"id": "scooby", "title": "Be Cool, Scooby-Doo!", "year": 2015, "tvdb_id": 301376}),
    ])
    .await;
    let store = fs.path.join("plexsync.redb");
    let extra = format!(
        "[poll]\nenabled = false\n\n[store]\npath = \"{}\"\n",
        store.display()
    );
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), &extra)
        .replace("[server]\n", "[server]\nwebhook_rate_limit = 100000\n");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let out = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    let http = reqwest::Client::new();

    // Space left: a play goes through.
    let (s, _, body) = post(&http, &d.webhook_url, &scrobble(1, 1)).await;
    assert_eq!(s, 200, "{body}");
    eventually("S1E1 at the tracker", WAIT, || {
        tracker
            .watched()
            .contains_key(&("scooby".into(), 1, 1))
            .then_some(())
    })
    .await;

    // The disk fills up: every webhook is refused with 503 + Retry-After, none with 200.
    let filler = fill(&fs.path);
    let mut refused = 0;
    for e in 2..=11 {
        let (s, retry, body) = post(&http, &d.webhook_url, &scrobble(1, e)).await;
        assert_ne!(s, 200, "a 200 while the disk is full (S1E{e}): {body}");
        assert_eq!(s, 503, "S1E{e}: {body}");
        assert!(
            retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|n| n >= 1)),
            "503 carries Retry-After"
        );
        refused += 1;
    }
    assert_eq!(refused, 10);
    // The daemon stays up and says so.
    let health = http
        .get(format!("http://{}/healthz", d.addr))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success() || health.status().as_u16() == 503);
    let st = d.status().await;
    assert_eq!(st["counts"]["journal"], 1, "nothing half-written: {st}");
    // Health says so, also with polling off: status, its exit code and the page.
    let store = st["health"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["component"] == "store" && h["severity"] == "error")
        .unwrap_or_else(|| panic!("a store error in health: {st:#}"))
        .clone();
    assert!(
        store["message"].as_str().unwrap().contains("cannot commit"),
        "{store}"
    );
    assert_eq!(d.cli(&["status"], None).status.code(), Some(2));

    // Space returns: webhooks are stored again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let mut ok_from = None;
    for attempt in 0..40 {
        let (s, _, body) = post(&http, &d.webhook_url, &scrobble(2, 1)).await;
        if s == 200 {
            ok_from = Some(attempt);
            break;
        }
        assert_eq!(s, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        ok_from.is_some(),
        "the daemon stores plays again once space returns:\n{}",
        d.log()
    );
    let st = d.status().await;
    assert!(
        !st["health"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["component"] == "store"),
        "cleared by a commit: {st:#}"
    );
    for e in 2..=5 {
        let (s, _, body) = post(&http, &d.webhook_url, &scrobble(2, e)).await;
        assert_eq!(s, 200, "{body}");
    }
    eventually("the recovered plays at the tracker", WAIT, || {
        let w = tracker.watched();
        (1..=5)
            .all(|e| w.contains_key(&("scooby".into(), 2, e)))
            .then_some(())
    })
    .await;
    // None of the refused plays reached the tracker.
    let w = tracker.watched();
    assert!(
        (2..=11).all(|e| !w.contains_key(&("scooby".into(), 1, e))),
        "{w:?}"
    );
    // Each episode went out under one idempotency key.
    let mut key_of = std::collections::HashMap::new();
    for p in tracker.posts() {
        let key = p.header("idempotency-key").unwrap().to_string();
        let body: Value = serde_json::from_slice(&p.body).unwrap();
        for e in body["episodes"].as_array().unwrap() {
            let ep = (e["season"].as_u64(), e["episode"].as_u64());
            if let Some(k) = key_of.insert(ep, key.clone()) {
                assert_eq!(k, key, "{ep:?} exported in two batches");
            }
        }
    }

    // After a clean stop the store opens offline with consistent counts.
    assert_eq!(d.stop(), Some(0));
    let out = d.cli(&["status", "--json"], None);
    assert!(
        matches!(out.status.code(), Some(0 | 2)), // 2: health has an error (not running)
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["counts"]["journal"], 6, "{st}");
    assert_eq!(st["counts"]["outbox_items"], 0, "{st}");
    assert_eq!(st["counts"]["dead_letters"], 0, "{st}");
    assert_eq!(st["counts"]["watched"], 6, "{st}");
    drop(d);
    drop(fs);
}

/// While the store cannot write, the resolver pauses between rounds (1 s, doubling up to a
/// minute) instead of running the matcher chain again every few ms and logging an error each
/// time: one pending play of an unmapped show, whose mapping cannot be recorded with the disk
/// full, costs a handful of failed rounds over 2 s, not hundreds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resolver_backs_off_while_its_writes_fail() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("disk"), "16m") else {
        return;
    };
    let plex = FakePlex::start(vec![baki_hanma()]).await;
    // Plex cannot describe the show for now: the play waits (seconds) without a decision.
    plex.state.lock().unwrap().path_faults = (0..100_000)
        .map(|_| ("/library/metadata/".to_string(), PlexFault::Status(503)))
        .collect();
    let tracker = FakeTracker::start(vec![
        json!({"id": 101, "title": "Baki Hanma", "year": 2021, "tmdb_id": 108757}),
    ])
    .await;
    let store = fs.path.join("plexsync.redb");
    let extra = format!(
        "[poll]\nenabled = false\n\n[store]\npath = \"{}\"\n",
        store.display()
    );
    // The capture is a shared user's play: listed by the server and synced.
    plex.list_shared_user();
    let mut d = start_synced(dir.path(), &plex, &tracker, &extra).await;
    let (ct, body) = multipart(&sample_json(NEW_AGENT_SCROBBLE), None);
    let r = reqwest::Client::new()
        .post(&d.webhook_url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    eventually("the resolver's first lookup", WAIT, || {
        (plex.metadata_requests() >= 1).then_some(())
    })
    .await;

    // The disk fills up, then Plex answers: the play's next round maps the show, which
    // cannot be recorded, so the play stays due.
    let filler = fill(&fs.path);
    plex.state.lock().unwrap().path_faults.clear();
    let failed = |d: &Daemon| d.log().matches("cannot record resolutions").count();
    eventually("a round that cannot record its decision", WAIT, || {
        (failed(&d) >= 1).then_some(())
    })
    .await;
    let (rounds_from, asked_from) = (failed(&d), plex.metadata_requests());
    // A rate is measured over a fixed window; nothing here waits for a state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rounds = failed(&d) - rounds_from;
    let asked = plex.metadata_requests() - asked_from;
    assert!(
        rounds <= 4 && asked <= 4,
        "{rounds} failed rounds and {asked} Plex lookups in 2 s while writes fail:\n{}",
        d.log()
    );
    assert_eq!(d.status().await["counts"]["pending_resolution"], 1);

    // Space returns: the pause ends and the play goes through.
    std::fs::remove_file(&filler).unwrap();
    eventually("the play at the tracker once space returns", WAIT, || {
        (!tracker.watched().is_empty()).then_some(())
    })
    .await;
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    drop(d);
    drop(fs);
}

/// Ask the daemon `path` until `f` accepts its answer (at most [`WAIT`]); the accepted value.
async fn api_until<T>(
    d: &Daemon,
    what: &str,
    path: &str,
    mut f: impl FnMut(&Value) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = d.api("GET", path).await;
        if let Some(t) = f(&v) {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {v:#}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// *Create new* on a conflict while the disk is full: the tracker makes the show, but the
/// decision that maps the conflict to it cannot be recorded, and the person is told so (the
/// show's id, and that asking again maps to it). Once space returns, *Create new* again
/// (repeated until the store takes it) maps the conflict to that same show: the tracker got
/// exactly one create, never a second show beside an orphan, and the held play goes to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_new_whose_decision_cannot_be_recorded_creates_no_second_show() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("disk"), "16m") else {
        return;
    };
    let plex = FakePlex::start(vec![FakeShow {
        rating_key: "50001".into(),
        guid: format!("plex://show/{:0>24}", "50001"),
        title: "Lucky Man".into(),
        year: 2016,
        guids: vec![],
    }])
    .await;
    // Close to Lucky Man, not close enough to map it: a conflict.
    let tracker = FakeTracker::start(vec![
        json!({"id": "luckyman", "title": "Lucky Man (UK)", "year": 2016}),
        json!({"id": "lucky7", "title": "Lucky Seven", "year": 2003}),
    ])
    .await;
    plex.list_shared_user();
    let extra = format!(
        "[[matchers]]\nkind = \"title\"\n[poll]\nenabled = false\n\n[store]\npath = \"{}\"\n",
        fs.path.join("plexsync.redb").display()
    );
    let mut d = start_synced(dir.path(), &plex, &tracker, &extra).await;

    // A play of Lucky Man (the shared user's capture, re-aimed at the show) opens a conflict.
    let mut p = sample_json(NEW_AGENT_SCROBBLE);
    let m = &mut p["Metadata"];
    m["grandparentRatingKey"] = json!("50001");
    m["grandparentKey"] = json!("/library/metadata/50001");
    m["grandparentGuid"] = json!(format!("plex://show/{:0>24}", "50001"));
    m["grandparentTitle"] = json!("Lucky Man");
    m["ratingKey"] = json!("50001001");
    m["guid"] = json!(format!("plex://episode/50001{:021}", 1));
    m["index"] = json!(1);
    m["parentIndex"] = json!(1);
    let http = reqwest::Client::new();
    let (s, _, body) = post(&http, &d.webhook_url, &p).await;
    assert_eq!(s, 200, "{body}");
    let id = api_until(&d, "Lucky Man in a conflict", "/api/conflicts", |v| {
        v["items"]
            .as_array()?
            .iter()
            .find(|c| c["plex"]["title"] == "Lucky Man")?["id"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    assert_eq!(tracker.creates(), 0);

    // The disk fills up; Create new: the tracker makes the show, the decision cannot be
    // written, and the answer is an error.
    let filler = fill(&fs.path);
    let path = format!("/api/conflicts/{id}/resolve");
    let create = br#"{"action":"create"}"#.to_vec();
    let first = plexsync::client::request(&d.socket(), "POST", &path, Some(create.clone())).await;
    let first = match first {
        Ok(b) => panic!(
            "the decision was recorded on a full disk: {}\n{}",
            String::from_utf8_lossy(&b),
            d.log()
        ),
        Err(e) => e.to_string(),
    };
    assert_eq!(tracker.creates(), 1, "{first}");
    let made = tracker
        .state
        .lock()
        .unwrap()
        .shows
        .last()
        .and_then(|s| s["id"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(
        !made.is_empty() && made != "lucky7",
        "the tracker made a show"
    );

    // Space returns. The person clicks Create new again until the store takes the decision
    // (its writer reopens the file first; until then the answer is still an error).
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut errors = Vec::new();
    let resolved: Value = loop {
        match plexsync::client::request(&d.socket(), "POST", &path, Some(create.clone())).await {
            Ok(b) => break serde_json::from_slice(&b).unwrap(),
            Err(e) => errors.push(e.to_string()),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never resolved: {errors:#?}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(resolved["resolved"], true, "{resolved}");
    assert_eq!(
        tracker.creates(),
        1,
        "one create request, never a second show: {:?}\nanswers: {first}\n{errors:#?}",
        tracker.state.lock().unwrap().shows
    );
    // Mapped to the show the first click made, and its held play goes there.
    let conflicts = d.api("GET", "/api/conflicts").await;
    assert_eq!(conflicts["total"], 0, "{conflicts}");
    let maps = d.api("GET", "/api/mappings?status=mapped").await;
    let lucky = maps["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["plex"]["title"] == "Lucky Man")
        .unwrap_or_else(|| panic!("Lucky Man mapped: {maps:#}"));
    assert_eq!(lucky["tracker"]["id"], made.as_str(), "{lucky:#}");
    assert_eq!(lucky["method"], "created", "{lucky:#}");
    eventually("the held play at the show made", WAIT, || {
        tracker
            .watched()
            .contains_key(&(made.clone(), 1, 1))
            .then_some(())
    })
    .await;
    // The first answer said what happened and what to do: with the disk full, the mark that
    // outlives the process may not have been stored, and the answer says which holds.
    assert!(
        first.contains("the tracker has the show")
            && first.contains(&made)
            && (first.contains("does not create another")
                || first.contains("choose it with Select")),
        "{first}"
    );
    // And the log names the show left without a decision, by its tracker id.
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("decision naming it could not be recorded")
                && l.contains(&format!("show_id={made}"))),
        "{log}"
    );
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    drop(d);
    drop(fs);
}
