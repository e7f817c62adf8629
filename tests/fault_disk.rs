//! Fault test: the store's disk fills up. The store lives on a small tmpfs; a filler file
//! takes the rest of the space. While the disk is full, webhooks answer 503 with Retry-After
//! (never 200), nothing is half-written, and once space returns the daemon stores plays again
//! and delivers them; the store file opens cleanly afterwards with consistent counts.
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
    let cfg_text = daemon::config_with_plex(
        &plex.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        &extra,
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let out = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    support::accounts_read(&d).await;
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
