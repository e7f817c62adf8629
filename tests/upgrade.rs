//! Upgrades keep everything: the store of every earlier release, as that release wrote it
//! (`tests/fixtures/store-<release>/`, made by `scripts/make-fixture-store.sh`), opens in this
//! build with its webhook secret, stored secrets, mappings (automatic, manual, ignored), open
//! conflicts with their held plays, poll cursors, pending exports and dead letters, as its
//! `manifest.json` lists them.
//!
//! Each fixture is copied into a temporary folder (the committed files are never opened in
//! place, and the test checks they are unchanged) and checked twice: offline, with the
//! read-only commands and no daemon; then with the daemon running against a fake Plex and a
//! fake tracker that is down first (so the pending exports are still there to count, after the
//! exporter has retried them) and then comes back requiring the stored tracker key (so the
//! very batches the old release formed are delivered, with the old key). The fake Plex serves
//! the history rows the release's start-up poll journaled: their history keys, dedupe rows and
//! cursors make this build's start-up poll and a `backfill` over them journal nothing and
//! export nothing a second time. Afterwards the
//! held plays of the open conflict, the dead letter and a new webhook at the old URL all
//! reach the tracker; plays of the ignored show and of the show whose sync a person switched
//! off do not.

mod support;

#[path = "../plugins/tmdb/tests/support/fake_tmdb.rs"]
mod fake_tmdb;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::plex::{FakePlex, FakeShow, HistoryFixture};
use support::tracker::FakeTracker;

const WAIT: Duration = Duration::from_secs(30);

/// Every `tests/fixtures/store-*` folder, oldest release first (by name).
fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut all: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("store-"))
        })
        .collect();
    all.sort();
    assert!(
        !all.is_empty(),
        "no store fixtures under {}",
        root.display()
    );
    all
}

/// A fixture as committed: its manifest and the bytes of every file (to prove it unchanged).
struct Fixture {
    dir: PathBuf,
    manifest: Value,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Fixture {
    fn load(dir: &Path) -> Fixture {
        let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("the fixture folder")
            .map(|e| {
                let p = e.expect("a fixture file").path();
                let bytes = std::fs::read(&p).expect("a fixture file");
                (p, bytes)
            })
            .collect();
        files.sort();
        let manifest = serde_json::from_slice(
            &std::fs::read(dir.join("manifest.json")).expect("manifest.json"),
        )
        .expect("manifest.json is JSON");
        Fixture {
            dir: dir.to_path_buf(),
            manifest,
            files,
        }
    }

    fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn secret(&self, name: &str) -> &str {
        self.manifest["secrets"][name]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no {name} in the manifest", self.name()))
    }

    fn list<'a>(&'a self, key: &str) -> &'a [Value] {
        self.manifest[key].as_array().map_or(&[], Vec::as_slice)
    }

    /// Copy store and key into `to` (the key with mode 0600, which git does not keep).
    fn copy_into(&self, to: &Path) {
        let files = &self.manifest["files"];
        for role in ["store", "key"] {
            let f = files[role].as_str().expect("files in the manifest");
            std::fs::copy(self.dir.join(f), to.join(f)).expect("copy a fixture file");
        }
        let key = to.join(files["key"].as_str().expect("the key file"));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the key");
    }

    /// The release's config with its fakes' URLs swapped for ours.
    fn config(&self, plex_url: &str, tracker_url: &str) -> String {
        let file = self.manifest["files"]["config"].as_str().expect("config");
        let text = std::fs::read_to_string(self.dir.join(file)).expect("the fixture config");
        let urls = &self.manifest["config_urls"];
        let (old_plex, old_tracker) = (
            urls["plex"].as_str().expect("plex URL"),
            urls["tracker"].as_str().expect("tracker URL"),
        );
        assert!(text.contains(old_plex) && text.contains(old_tracker));
        text.replace(&format!("\"{old_plex}\""), &format!("\"{plex_url}\""))
            .replace(&format!("\"{old_tracker}\""), &format!("\"{tracker_url}\""))
    }

    fn assert_unchanged(&self) {
        for (p, bytes) in &self.files {
            let now = std::fs::read(p).expect("a fixture file");
            assert!(&now == bytes, "{} changed", p.display());
        }
    }

    fn mapping_of_kind(&self, kind: &str) -> &Value {
        self.list("mappings")
            .iter()
            .find(|m| m["kind"] == kind)
            .unwrap_or_else(|| panic!("{}: no {kind} mapping in the manifest", self.name()))
    }

    fn plex_show(&self, rating_key: &Value) -> &Value {
        self.list("plex_shows")
            .iter()
            .find(|s| &s["rating_key"] == rating_key)
            .expect("the show in plex_shows")
    }

    /// The history rows the release's start-up poll journaled (their history keys, dedupe
    /// rows and cursors are in the store): the manifest's `history`, which 0.1.0's manifest
    /// predates — its rows are the generator's (scripts/fixture-store/generate.rs), whose
    /// times the manifest's cursors confirm.
    fn history(&self) -> Vec<HistoryFixture> {
        let listed = self.list("history");
        if !listed.is_empty() {
            return listed
                .iter()
                .map(|h| HistoryFixture {
                    history_key: h["history_key"].as_str().expect("history_key").into(),
                    rating_key: h["rating_key"].as_str().map(str::to_string),
                    show_rating_key: h["show_rating_key"].as_str().map(str::to_string),
                    grandparent_title: h["grandparent_title"].as_str().unwrap_or_default().into(),
                    season: h["season"].as_u64().expect("season") as u32,
                    episode: h["episode"].as_u64().expect("episode") as u32,
                    viewed_at: h["viewed_at"].as_i64().expect("viewed_at"),
                    account_id: h["account_id"].as_i64().expect("account_id"),
                })
                .collect();
        }
        assert_eq!(
            self.manifest["release"],
            "0.1.0",
            "{}: the manifest lists no history",
            self.name()
        );
        let auto = self.mapping_of_kind("auto");
        let rows: Vec<HistoryFixture> = [(1u32, 1i64), (2, 2)]
            .into_iter()
            .map(|(n, account)| HistoryFixture {
                history_key: format!("/status/sessions/history/{n}"),
                rating_key: Some(format!("9100101{n:02}")),
                show_rating_key: auto["plex_rating_key"].as_str().map(str::to_string),
                grandparent_title: auto["plex_title"].as_str().unwrap_or_default().into(),
                season: 1,
                episode: n,
                viewed_at: 1_700_000_000 + i64::from(n) * 3600,
                account_id: account,
            })
            .collect();
        for (row, cursor) in rows.iter().zip(self.list("cursors")) {
            assert_eq!(
                cursor["viewed_at"].as_i64(),
                Some(row.viewed_at),
                "{cursor}"
            );
        }
        rows
    }
}

async fn run(config: &Path, args: &[&str]) -> Output {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        daemon::cli(&config, &refs, None)
    })
    .await
    .expect("the CLI ran")
}

async fn ok(config: &Path, args: &[&str]) -> String {
    let o = run(config, args).await;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    // `status` answers with 2 when health has an error (a stopped daemon is one).
    let answered =
        o.status.success() || (args.first() == Some(&"status") && o.status.code() == Some(2));
    assert!(
        answered,
        "plexsync {args:?} failed: {}\n{out}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

async fn json_of(config: &Path, args: &[&str]) -> Value {
    let out = ok(config, args).await;
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("plexsync {args:?}: not JSON ({e}): {out}"))
}

fn kind(m: &Value) -> &'static str {
    if m["status"] == "ignored" {
        "ignored"
    } else if m["manual"] == true {
        "manual"
    } else {
        "auto"
    }
}

/// The id the API lists for a manifest's show: the short form of the long id the fixture's
/// release printed (which the API and the CLI still accept).
fn api_id(want: &Value) -> Value {
    let old = want["id"].as_str().unwrap_or_default();
    Value::from(plexsync::admin::id_from_legacy(old).unwrap_or_else(|| old.to_string()))
}

/// `mappings list --json` (all) holds exactly the manifest's mappings and conflicts.
fn assert_mappings(f: &Fixture, listed: &Value, how: &str) {
    let items = listed["items"].as_array().expect("mapping items");
    let mapped: Vec<&Value> = items.iter().filter(|m| m["status"] != "conflict").collect();
    assert_eq!(
        mapped.len(),
        f.list("mappings").len(),
        "{} {how}: {listed}",
        f.name()
    );
    for want in f.list("mappings") {
        let got = mapped
            .iter()
            .find(|m| m["id"] == api_id(want))
            .unwrap_or_else(|| {
                panic!(
                    "{} {how}: mapping {} is gone: {listed}",
                    f.name(),
                    want["id"]
                )
            });
        let what = format!("{} {how}: mapping {}", f.name(), want["plex_title"]);
        assert_eq!(kind(got), want["kind"], "{what}: {got}");
        assert_eq!(got["status"], want["status"], "{what}: {got}");
        assert_eq!(got["manual"], want["manual"], "{what}: {got}");
        assert_eq!(got["method"], want["method"], "{what}: {got}");
        assert_eq!(got["sync_enabled"], want["sync_enabled"], "{what}: {got}");
        assert_eq!(
            got["plex"]["rating_key"], want["plex_rating_key"],
            "{what}: {got}"
        );
        assert_eq!(got["plex"]["title"], want["plex_title"], "{what}: {got}");
        assert_eq!(
            got["tracker"]["id"], want["tracker_show_id"],
            "{what}: {got}"
        );
    }
    let conflicted = items.iter().filter(|m| m["status"] == "conflict").count();
    assert_eq!(
        conflicted,
        f.list("conflicts").len(),
        "{} {how}: {listed}",
        f.name()
    );
}

/// `conflicts list --json` holds exactly the manifest's conflicts with their held plays.
fn assert_conflicts(f: &Fixture, listed: &Value, how: &str) {
    assert_eq!(
        listed["total"].as_u64(),
        Some(f.list("conflicts").len() as u64),
        "{} {how}: {listed}",
        f.name()
    );
    for want in f.list("conflicts") {
        let got = listed["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["id"] == api_id(want))
            .unwrap_or_else(|| {
                panic!(
                    "{} {how}: conflict {} is gone: {listed}",
                    f.name(),
                    want["id"]
                )
            });
        let what = format!("{} {how}: conflict {}", f.name(), want["plex_title"]);
        assert_eq!(got["held_plays"], want["held_plays"], "{what}: {got}");
        assert_eq!(
            got["plex"]["rating_key"], want["plex_rating_key"],
            "{what}: {got}"
        );
        assert_eq!(got["plex"]["title"], want["plex_title"], "{what}: {got}");
        let candidates: Vec<&Value> = got["candidates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| &c["show_id"])
            .collect();
        let wanted: Vec<&Value> = want["candidates"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(candidates, wanted, "{what}: {got}");
    }
}

/// Counts of pending exports, dead letters, conflicts and mappings as the manifest has them.
fn assert_counts(f: &Fixture, counts: &Value, how: &str) {
    let m = &f.manifest;
    let what = format!("{} {how}: {counts}", f.name());
    assert_eq!(
        counts["outbox_items"], m["pending_exports"]["count"],
        "{what}"
    );
    assert_eq!(counts["batches"], m["pending_exports"]["batches"], "{what}");
    assert_eq!(counts["dead_letters"], m["dead_letters"]["count"], "{what}");
    assert_eq!(
        counts["conflicts"].as_u64(),
        Some(f.list("conflicts").len() as u64),
        "{what}"
    );
    assert_eq!(
        counts["mappings"].as_u64(),
        Some(f.list("mappings").len() as u64),
        "{what}"
    );
    assert_eq!(counts["journal"], m["counts"]["journal"], "{what}");
}

/// `status --json`: the webhook path, which secrets are set, the poll cursors, the counts.
fn assert_status(f: &Fixture, status: &Value, how: &str) {
    let what = format!("{} {how}: {status}", f.name());
    assert_eq!(
        url_path(status["webhook_url"].as_str().unwrap_or_default()),
        f.manifest["webhook"]["path"],
        "{what}"
    );
    assert_eq!(status["plex_token_set"], true, "{what}");
    assert_eq!(status["tracker_key_set"], true, "{what}");
    let cursors = status["cursors"].as_array().map_or(&[][..], Vec::as_slice);
    assert_eq!(cursors.len(), f.list("cursors").len(), "{what}");
    for want in f.list("cursors") {
        let got = cursors
            .iter()
            .find(|c| c["key"] == want["key"])
            .unwrap_or_else(|| panic!("{what}: cursor {} is gone", want["key"]));
        assert_eq!(got["viewed_at"], want["viewed_at"], "{what}");
    }
    assert_counts(f, &status["counts"], how);
}

/// Health dates the open conflicts and the dead letters by the store's rows (when they were
/// raised, when they went dead), not by when this process first saw them: the release's store
/// was written long before this run, so `since` lies well before now.
fn assert_health_dated_by_the_store(f: &Fixture, status: &Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let health = status["health"].as_array().map_or(&[][..], Vec::as_slice);
    let since_of = |component: &str| {
        health
            .iter()
            .find(|h| h["component"] == component && h["severity"] != "info")
            .and_then(|h| h["since"].as_i64())
            .unwrap_or_else(|| panic!("{}: no dated {component} item: {status}", f.name()))
    };
    if !f.list("conflicts").is_empty() {
        let since = since_of("conflicts");
        assert!(
            since < now - 3600,
            "{}: conflicts since {since}, now {now}",
            f.name()
        );
    }
    if f.manifest["dead_letters"]["count"].as_u64().unwrap_or(0) > 0 {
        let dead = health
            .iter()
            .find(|h| {
                h["component"] == "exports"
                    && h["message"].as_str().unwrap_or("").contains("dead letters")
            })
            .and_then(|h| h["since"].as_i64())
            .unwrap_or_else(|| panic!("{}: no dead-letter item: {status}", f.name()));
        assert!(
            dead < now - 3600,
            "{}: dead letters since {dead}, now {now}",
            f.name()
        );
    }
}

fn url_path(url: &str) -> &str {
    url.find("/webhook/").map_or("", |i| url[i..].trim())
}

/// `plexsync match` with a tmdb matcher at a fake TMDB that accepts only the stored tmdb-key:
/// a TVDB id converts (method `tmdb_id`) only if the store's key decrypts to the same value.
async fn assert_tmdb_key(f: &Fixture, dir: &Path, config_text: &str) {
    let tmdb = fake_tmdb::start(
        vec![fake_tmdb::Row::new(770_001, Some(990_001), None)],
        f.secret("tmdb-key"),
        None,
    )
    .await;
    let cfg = dir.join("match.toml");
    std::fs::write(
        &cfg,
        format!(
            "{config_text}\n[[matchers]]\nkind = \"tmdb\"\napi_url = \"{}\"\nrate_limit = \"1000/1s\"\n",
            tmdb.url
        ),
    )
    .expect("write match.toml");
    let catalog = dir.join("catalogue.jsonl");
    std::fs::write(
        &catalog,
        r#"{"id": "only-tmdb", "title": "Known Only By TMDB", "year": 2019, "tmdb_id": 770001}"#,
    )
    .expect("write the catalogue");
    let queries = dir.join("queries.jsonl");
    std::fs::write(
        &queries,
        r#"{"qid": "q", "title": "Nothing Alike", "year": 1990, "guids": ["com.plexapp.agents.thetvdb://990001?lang=en"]}"#,
    )
    .expect("write the queries");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(daemon::BIN)
            .args(["match", "--json", "--config"])
            .arg(&cfg)
            .arg("--catalog")
            .arg(&catalog)
            .arg("--queries")
            .arg(&queries)
            .env_remove("PLEXSYNC_TMDB_KEY")
            .env_remove("STATE_DIRECTORY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .expect("plexsync match runs")
    })
    .await
    .expect("plexsync match ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: match failed: {}",
        f.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{}: match output ({e}): {stdout}", f.name()));
    assert_eq!(line["show_id"], "only-tmdb", "{}: {stdout}", f.name());
    assert_eq!(line["method"], "tmdb_id", "{}: {stdout}", f.name());
    assert!(
        tmdb.requests()
            .iter()
            .any(|s| s.param("api_key") == Some(f.secret("tmdb-key"))),
        "{}: TMDB never saw the stored key",
        f.name()
    );
}

/// The read-only commands (and the two URL commands) with no daemon running.
async fn offline(f: &Fixture, dir: &Path, cfg: &Path, config_text: &str) {
    let status = json_of(cfg, &["status", "--json"]).await;
    assert_eq!(status["running"], false, "{status}");
    assert_status(f, &status, "offline");
    assert_health_dated_by_the_store(f, &status);
    assert_mappings(
        f,
        &json_of(cfg, &["mappings", "list", "--json"]).await,
        "offline",
    );
    assert_conflicts(
        f,
        &json_of(cfg, &["conflicts", "list", "--json"]).await,
        "offline",
    );
    let outbox = json_of(cfg, &["outbox", "list", "--json"]).await;
    assert_counts(f, &outbox["counts"], "offline outbox");
    assert_dead_letters(f, &outbox, "offline");
    let url = ok(cfg, &["webhook-url"]).await;
    assert_eq!(
        url_path(&url),
        f.manifest["webhook"]["path"],
        "{}: {url}",
        f.name()
    );
    let web = ok(cfg, &["web-url"]).await;
    assert!(
        web.trim()
            .ends_with(&format!("#token={}", f.secret("admin-token"))),
        "{}: the stored admin token is not the one web-url hands out: {web}",
        f.name()
    );
    // Every stored secret decrypts and passes this build's checks against the old config.
    ok(cfg, &["check"]).await;
    assert_tmdb_key(f, dir, config_text).await;
}

fn assert_dead_letters(f: &Fixture, outbox: &Value, how: &str) {
    let mut got: Vec<(String, u64, u64)> = outbox["dead_letters"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["items"].as_array().into_iter().flatten())
        .map(episode)
        .collect();
    let mut want: Vec<(String, u64, u64)> = f.manifest["dead_letters"]["episodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(episode)
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{} {how}: {outbox}", f.name());
}

fn episode(v: &Value) -> (String, u64, u64) {
    (
        v["show_id"].as_str().unwrap_or_default().to_string(),
        v["season"].as_u64().unwrap_or_default(),
        v["episode"].as_u64().unwrap_or_default(),
    )
}

/// Ask the daemon `GET path` until `done` holds for the answer.
async fn until(d: &Daemon, what: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = d.api("GET", path).await;
        if done(&v) {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; last {path}: {v}\n{}",
                d.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delivered(tracker: &FakeTracker, d: &Daemon, eps: &[(String, u64, u64)]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let w = tracker.watched();
        let missing: Vec<_> = eps
            .iter()
            .filter(|(s, se, ep)| !w.contains_key(&(s.clone(), *se as u32, *ep as u32)))
            .collect();
        if missing.is_empty() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("not delivered: {missing:?}; tracker has {w:?}\n{}", d.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `media.scrobble` of an episode by the owner, in the shape Plex posts.
fn scrobble(show: &Value, machine: &Value, season: u32, episode: u32) -> Value {
    let rk = show["rating_key"].as_str().unwrap_or_default();
    let ep_key = format!("{rk}{season:02}{episode:02}");
    json!({
        "event": "media.scrobble",
        "user": true,
        "owner": true,
        "Account": { "id": 1, "title": "fixture-owner" },
        "Server": { "title": "fixture-pms", "uuid": machine },
        "Player": { "local": true, "title": "fixture-player", "uuid": "fixtureplayer0001" },
        "Metadata": {
            "librarySectionType": "show",
            "type": "episode",
            "ratingKey": ep_key,
            "grandparentRatingKey": rk,
            "grandparentKey": format!("/library/metadata/{rk}"),
            "grandparentGuid": show["guid"],
            "grandparentTitle": show["title"],
            "title": format!("Episode {episode}"),
            "index": episode,
            "parentIndex": season,
            "year": show["year"],
            "lastViewedAt": 1_800_000_000 + i64::from(season * 100 + episode),
        }
    })
}

async fn post(d: &Daemon, url: &str, payload: &Value) -> u16 {
    let (ct, body) = support::multipart(payload, None);
    reqwest::Client::new()
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}\n{}", d.log()))
        .status()
        .as_u16()
}

async fn check(fixture: &Path) {
    let f = Fixture::load(fixture);
    let m = &f.manifest;
    let dir = tempfile::tempdir().expect("a temp dir");
    f.copy_into(dir.path());

    let shows: Vec<FakeShow> = f
        .list("plex_shows")
        .iter()
        .map(|s| FakeShow {
            rating_key: s["rating_key"].as_str().unwrap_or_default().into(),
            guid: s["guid"].as_str().unwrap_or_default().into(),
            title: s["title"].as_str().unwrap_or_default().into(),
            year: s["year"].as_i64().unwrap_or_default() as i32,
            guids: vec![],
        })
        .collect();
    let plex = FakePlex::start(shows).await;
    let accounts: Vec<(i64, &str)> = f
        .list("plex_accounts")
        .iter()
        .map(|a| {
            (
                a["id"].as_i64().unwrap_or_default(),
                a["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    plex.set_accounts(&accounts);
    if let Some(machine) = m["plex_machine"].as_str() {
        plex.state.lock().expect("plex state").machine_identifier = machine.into();
    }
    // The rows the old release journaled, served again: its history keys make them no-ops.
    let history = f.history();
    for row in &history {
        plex.push_history(row.clone());
    }
    let tracker = FakeTracker::start(f.list("tracker_shows").to_vec()).await;
    // Only the stored tracker key opens it; down until the pending exports are counted.
    tracker.state.lock().expect("tracker state").expected_key =
        Some(f.secret("tracker-key").into());
    tracker.server.go_down_hard();

    let config_text = f.config(&plex.url(), &tracker.url());
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &config_text).expect("write the config");

    offline(&f, dir.path(), &cfg, &config_text).await;

    // ---- The daemon on the old store, the tracker down ----
    let mut d = Daemon::start(dir.path(), &config_text).await;
    assert_eq!(
        url_path(&d.webhook_url),
        m["webhook"]["path"],
        "{}",
        f.name()
    );
    // The start-up poll ran with the stored Plex token (the fake refuses any other).
    let status = until(&d, "the start-up poll", "/api/status", |s| {
        s["polls"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(status["plex_token_rejected"], false, "{status}");
    assert!(status["last_poll"]["error"].is_null(), "{status}");
    // It read the old rows again and journaled none (assert_status below: the journal count).
    assert_eq!(
        status["last_poll"]["rows_read"].as_u64(),
        Some(history.len() as u64),
        "{}: {status}",
        f.name()
    );
    assert_eq!(
        status["last_poll"]["plays_new"],
        0,
        "{}: {status}",
        f.name()
    );
    // The old release counted plays from before its own first start as webhook loss; this
    // build counts from its first start on this store, so the count starts over with it.
    assert_eq!(
        status["counts"]["webhook_loss"],
        0,
        "{}: {status}",
        f.name()
    );
    // The exporter has tried the old batches and keeps them.
    let status = until(
        &d,
        "an export attempt at the down tracker",
        "/api/status",
        |s| s["tracker_error"].is_string(),
    )
    .await;
    assert_status(&f, &status, "online");
    let status_cli = json_of(&cfg, &["status", "--json"]).await;
    assert_eq!(status_cli["webhook_url"], status["webhook_url"]);
    assert_status(&f, &status_cli, "online CLI");
    assert_mappings(
        &f,
        &json_of(&cfg, &["mappings", "list", "--json"]).await,
        "online",
    );
    assert_conflicts(
        &f,
        &json_of(&cfg, &["conflicts", "list", "--json"]).await,
        "online",
    );
    assert_dead_letters(&f, &d.api("GET", "/api/outbox").await, "online");
    let web = ok(&cfg, &["web-url"]).await;
    assert!(
        web.trim()
            .ends_with(&format!("#token={}", f.secret("admin-token"))),
        "{}: {web}",
        f.name()
    );
    assert_eq!(d.admin_token().await, f.secret("admin-token"));
    // The stored admin token opens /api over TCP.
    let api = format!("http://{}/api/status", d.addr);
    let http = reqwest::Client::new();
    let with = http
        .get(&api)
        .bearer_auth(f.secret("admin-token"))
        .send()
        .await
        .expect("the daemon answers");
    assert_eq!(with.status().as_u16(), 200, "{}", f.name());
    let without = http.get(&api).send().await.expect("the daemon answers");
    assert_eq!(without.status().as_u16(), 401, "{}", f.name());

    // ---- The tracker is back: the old batches go out with the old key ----
    tracker.server.come_back().await;
    let pending: Vec<(String, u64, u64)> = m["pending_exports"]["episodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(episode)
        .collect();
    delivered(&tracker, &d, &pending).await;
    let status = until(&d, "an empty outbox", "/api/status", |s| {
        s["counts"]["outbox_items"] == 0 && s["counts"]["batches"] == 0
    })
    .await;

    // A backfill over the old rows: nothing new, nothing sent again.
    let journal = status["counts"]["journal"].clone();
    let backfill = json_of(&cfg, &["backfill", "--since", "2000-01-01", "--json"]).await;
    assert_eq!(
        backfill["rows_read"].as_u64(),
        Some(history.len() as u64),
        "{}: {backfill}",
        f.name()
    );
    assert_eq!(backfill["plays_new"], 0, "{}: {backfill}", f.name());
    assert_eq!(
        d.status().await["counts"]["journal"],
        journal,
        "{}",
        f.name()
    );

    // The dead letter, put back, is delivered too.
    ok(&cfg, &["outbox", "retry"]).await;
    let dead: Vec<(String, u64, u64)> = m["dead_letters"]["episodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(episode)
        .collect();
    delivered(&tracker, &d, &dead).await;

    // The open conflict's held plays are intact: resolving it sends them.
    for c in f.list("conflicts") {
        let id = c["id"].as_str().expect("conflict id");
        let pick = c["candidates"][0].as_str().expect("a candidate");
        ok(&cfg, &["conflicts", "resolve", id, "--select", pick]).await;
        let held: Vec<(String, u64, u64)> = c["held_episodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    pick.to_string(),
                    e["season"].as_u64().unwrap_or_default(),
                    e["episode"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        delivered(&tracker, &d, &held).await;
    }

    // New plays at the URL Plex was given follow what a person decided: the automatic
    // mapping exports, the ignored show and the show with sync off do not.
    let url = format!(
        "http://{}{}",
        d.addr,
        m["webhook"]["path"].as_str().unwrap_or_default()
    );
    let auto = f.mapping_of_kind("auto");
    let ignored = f.mapping_of_kind("ignored");
    let journal_before = d.status().await["counts"]["journal"].as_u64().unwrap_or(0);
    let mut posted = 0;
    for mapping in [ignored].into_iter().chain(
        f.list("mappings")
            .iter()
            .filter(|m| m["sync_enabled"] == false && m["kind"] != "ignored"),
    ) {
        let show = f.plex_show(&mapping["plex_rating_key"]);
        assert_eq!(
            post(&d, &url, &scrobble(show, &m["plex_machine"], 9, 1)).await,
            200
        );
        posted += 1;
    }
    let show = f.plex_show(&auto["plex_rating_key"]);
    assert_eq!(
        post(&d, &url, &scrobble(show, &m["plex_machine"], 9, 2)).await,
        200
    );
    posted += 1;
    let auto_show = auto["tracker_show_id"]
        .as_str()
        .expect("auto show id")
        .to_string();
    delivered(&tracker, &d, &[(auto_show, 9, 2)]).await;
    let status = until(&d, "every new play resolved and sent", "/api/status", |s| {
        s["counts"]["journal"].as_u64() == Some(journal_before + posted)
            && s["counts"]["pending_resolution"] == 0
            && s["counts"]["outbox_items"] == 0
    })
    .await;
    assert_eq!(status["counts"]["conflicts"], 0, "{status}");
    let stray: Vec<_> = tracker
        .watched()
        .into_keys()
        .filter(|(_, season, episode)| *season == 9 && *episode == 1)
        .collect();
    assert!(
        stray.is_empty(),
        "{}: exported against a person's decision: {stray:?}",
        f.name()
    );
    // The old release exported its history rows; this tracker (new, empty) never got them.
    let again: Vec<_> = history
        .iter()
        .filter_map(|h| {
            let mapping = f
                .list("mappings")
                .iter()
                .find(|m| m["plex_rating_key"].as_str() == h.show_rating_key.as_deref())?;
            let show = mapping["tracker_show_id"].as_str()?.to_string();
            Some((show, h.season, h.episode))
        })
        .filter(|k| tracker.watched().contains_key(k))
        .collect();
    assert!(
        again.is_empty(),
        "{}: exported a second time: {again:?}",
        f.name()
    );

    assert_eq!(d.stop(), Some(0), "{}", d.log());
    f.assert_unchanged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_release_store_opens_with_everything() {
    plexsync::daemon::install_tls_provider();
    for fixture in fixtures() {
        check(&fixture).await;
    }
}
