//! Writes an upgrade fixture: a store made by THIS checkout's `plexsync` binary, its key, the
//! config it ran with and a `manifest.json` naming what the store holds.
//!
//! Not a test of this repository: `scripts/make-fixture-store.sh` copies this file into the
//! `tests/` folder of a release's checkout (a separate git worktree) and runs it there, so the
//! release's own binary and its own `tests/support` fakes make the store. It needs
//! `FIXTURE_OUT` (an empty folder), `FIXTURE_RELEASE` and `FIXTURE_COMMIT`.
//!
//! Everything in it is made up here: fake tokens, fake shows and ids, hand-written webhook
//! payloads in the shape of Plex's. Nothing from `../shared` ends up in the store.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::plex::{FakePlex, FakeShow, HistoryFixture, TOKEN};
use support::tracker::{FakeTracker, Fault};

const WAIT: Duration = Duration::from_secs(30);
/// The fake Plex's machine identifier (the default of tests/support/plex.rs).
const MACHINE: &str = "fakeplexmachine0000000000000000000000000";
const TRACKER_KEY: &str = "fixture-tracker-key-not-a-secret";
const TMDB_KEY: &str = "fixture-tmdb-key-not-a-secret";
const ADMIN_TOKEN: &str = "fixture-admin-token-not-a-secret-0123456789";

/// The fixture's shows: (ratingKey, guid, title, year). All made up.
struct Show {
    rating_key: &'static str,
    guid: &'static str,
    title: &'static str,
    year: i32,
}

/// Mapped automatically by the guid matcher (legacy TVDB agent guid → tvdb_id 990001).
const AUTO: Show = Show {
    rating_key: "91001",
    guid: "com.plexapp.agents.thetvdb://990001?lang=en",
    title: "Fixture Auto Show",
    year: 2019,
};
/// Two tracker shows of its title: a conflict, resolved with `--select` (manual mapping).
const SELECTED: Show = Show {
    rating_key: "91002",
    guid: "plex://show/f1x700000000000000000002",
    title: "Harbour Lights",
    year: 2003,
};
/// Mapped automatically, then remapped with `mappings set --show … --disable` (manual, off).
const REMAPPED: Show = Show {
    rating_key: "91003",
    guid: "com.plexapp.agents.thetvdb://990003?lang=en",
    title: "Quiet Meadow",
    year: 2016,
};
/// A conflict resolved with `--ignore`.
const IGNORED: Show = Show {
    rating_key: "91004",
    guid: "plex://show/f1x700000000000000000004",
    title: "Lantern Street",
    year: 2010,
};
/// A conflict left open, holding two plays.
const OPEN: Show = Show {
    rating_key: "91005",
    guid: "plex://show/f1x700000000000000000005",
    title: "Copper Valley",
    year: 2014,
};

fn fake_show(s: &Show) -> FakeShow {
    FakeShow {
        rating_key: s.rating_key.into(),
        guid: s.guid.into(),
        title: s.title.into(),
        year: s.year,
        guids: vec![],
    }
}

/// A `media.scrobble` of an episode by the owner (Account.id 1), in the shape Plex posts.
fn scrobble(s: &Show, season: u32, episode: u32, viewed_at: i64) -> Value {
    let ep_key = format!("{}{season:02}{episode:02}", s.rating_key);
    let season_key = format!("{}{season:02}", s.rating_key);
    let ep_guid = if s.guid.starts_with("plex://") {
        format!("plex://episode/f1x7{ep_key:0>20}")
    } else {
        let base = s.guid.split('?').next().unwrap_or(s.guid);
        format!("{base}/{season}/{episode}?lang=en")
    };
    json!({
        "event": "media.scrobble",
        "user": true,
        "owner": true,
        "Account": { "id": 1, "title": "fixture-owner" },
        "Server": { "title": "fixture-pms", "uuid": MACHINE },
        "Player": { "local": true, "publicAddress": "192.0.2.1", "title": "fixture-player", "uuid": "fixtureplayer0001" },
        "Metadata": {
            "librarySectionType": "show",
            "ratingKey": ep_key,
            "key": format!("/library/metadata/{ep_key}"),
            "parentRatingKey": season_key,
            "grandparentRatingKey": s.rating_key,
            "guid": ep_guid,
            "grandparentGuid": s.guid,
            "type": "episode",
            "title": format!("Episode {episode}"),
            "grandparentKey": format!("/library/metadata/{}", s.rating_key),
            "parentKey": format!("/library/metadata/{season_key}"),
            "librarySectionTitle": "TV Shows",
            "librarySectionID": 2,
            "grandparentTitle": s.title,
            "parentTitle": format!("Season {season}"),
            "index": episode,
            "parentIndex": season,
            "viewCount": 1,
            "lastViewedAt": viewed_at,
            "year": s.year,
            "duration": 1_500_000,
        }
    })
}

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set (run scripts/make-fixture-store.sh)"))
}

async fn cli(config: PathBuf, args: Vec<String>, stdin: Option<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        daemon::cli(&config, &refs, stdin.as_deref())
    })
    .await
    .expect("the CLI ran")
}

async fn ok(config: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let o = cli(
        config.to_path_buf(),
        args.iter().map(|s| s.to_string()).collect(),
        stdin.map(str::to_string),
    )
    .await;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "plexsync {args:?} failed: {}\n{out}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
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

async fn post(d: &Daemon, payload: &Value) {
    let (ct, body) = support::multipart(payload, None);
    let status = reqwest::Client::new()
        .post(&d.webhook_url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("the daemon answers")
        .status();
    assert_eq!(status.as_u16(), 200, "webhook refused:\n{}", d.log());
}

async fn watched(tracker: &FakeTracker, show: &str, season: u32, episode: u32) {
    support::eventually(
        &format!("{show} S{season}E{episode} at the tracker"),
        WAIT,
        || {
            tracker
                .watched()
                .contains_key(&(show.to_string(), season, episode))
                .then_some(())
        },
    )
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_fixture_store() {
    let out = PathBuf::from(env("FIXTURE_OUT"));
    let release = env("FIXTURE_RELEASE");
    let commit = env("FIXTURE_COMMIT");
    plexsync::daemon::install_tls_provider();

    let plex = FakePlex::start(
        [AUTO, SELECTED, REMAPPED, IGNORED, OPEN]
            .iter()
            .map(fake_show)
            .collect(),
    )
    .await;
    let accounts = [(0, ""), (1, "fixture-owner"), (2, "fixture-kid")];
    plex.set_accounts(&accounts);
    // History the start-up poll journals: one row per account, so there is a cursor for each.
    // The manifest lists the rows, so tests/upgrade.rs serves them again to the new build.
    let mut history = Vec::new();
    for (n, account, episode) in [(1, 1, 1), (2, 2, 2)] {
        let row = HistoryFixture {
            history_key: format!("/status/sessions/history/{n}"),
            rating_key: Some(format!("{}01{episode:02}", AUTO.rating_key)),
            show_rating_key: Some(AUTO.rating_key.into()),
            grandparent_title: AUTO.title.into(),
            season: 1,
            episode,
            viewed_at: 1_700_000_000 + n * 3600,
            account_id: account,
        };
        history.push(json!({
            "history_key": row.history_key,
            "rating_key": row.rating_key,
            "show_rating_key": row.show_rating_key,
            "grandparent_title": row.grandparent_title,
            "season": row.season,
            "episode": row.episode,
            "viewed_at": row.viewed_at,
            "account_id": row.account_id,
        }));
        plex.push_history(row);
    }
    let tracker_shows = vec![
        json!({"id": "fx-auto", "title": "Fixture Auto Show", "year": 2019, "tvdb_id": 990001}),
        json!({"id": "harbour-uk", "title": "Harbour Lights", "year": 2001}),
        json!({"id": "harbour-us", "title": "Harbour Lights", "year": 2005}),
        json!({"id": "meadow-a", "title": "Quiet Meadow", "year": 2016, "tvdb_id": 990003}),
        json!({"id": "meadow-b", "title": "Quiet Meadow (Director's Cut)", "year": 2016}),
        json!({"id": "lantern-a", "title": "Lantern Street", "year": 2008}),
        json!({"id": "lantern-b", "title": "Lantern Street", "year": 2012}),
        json!({"id": "copper-a", "title": "Copper Valley", "year": 2012}),
        json!({"id": "copper-b", "title": "Copper Valley", "year": 2016}),
    ];
    let tracker = FakeTracker::start(tracker_shows.clone()).await;
    tracker.state.lock().expect("tracker state").expected_key = Some(TRACKER_KEY.into());

    let dir = tempfile::tempdir().expect("a temp dir");
    let (plex_url, tracker_url) = (plex.url(), tracker.url());
    // Polls run at start-up and when asked, not on the clock; retries are quick and never
    // give up, so the pending exports stay pending in a later build too.
    let config_text = format!(
        r#"# The config release {release} made this fixture store with. A test swaps the two URLs.
[server]
listen = "127.0.0.1:0"

[plex]
url = "{plex_url}"
timeout = "2s"
accounts = [1, "fixture-kid"]

[tracker]
url = "{tracker_url}"
timeout = "2s"

[outbox]
initial_backoff = "100ms"
max_backoff = "500ms"
max_attempts = 1000

[poll]
schedule = "0 0 0 1 1 *"
initial_lookback = "36500d"
retry_backoff = "200ms"
library_scan = false

[log]
level = "debug"

[[matchers]]
kind = "guid"

[[matchers]]
kind = "title"
"#
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &config_text).expect("write the config");
    for (name, value) in [
        ("plex-token", TOKEN),
        ("tracker-key", TRACKER_KEY),
        ("tmdb-key", TMDB_KEY),
        ("admin-token", ADMIN_TOKEN),
    ] {
        ok(&cfg, &["secret", "set", name], Some(value)).await;
    }

    let mut d = Daemon::start(dir.path(), &config_text).await;
    // The start-up poll: both history rows exported, a cursor per account.
    until(&d, "the start-up poll's cursors", "/api/status", |s| {
        s["cursors"].as_array().map_or(0, Vec::len) >= 2
    })
    .await;
    watched(&tracker, "fx-auto", 1, 1).await;
    watched(&tracker, "fx-auto", 1, 2).await;

    // A conflict resolved by selecting a candidate: a manual mapping.
    post(&d, &scrobble(&SELECTED, 1, 1, 1_700_100_000)).await;
    until(&d, "the Harbour Lights conflict", "/api/conflicts", |c| {
        c["total"] == 1
    })
    .await;
    ok(
        &cfg,
        &[
            "conflicts",
            "resolve",
            SELECTED.rating_key,
            "--select",
            "harbour-us",
        ],
        None,
    )
    .await;
    watched(&tracker, "harbour-us", 1, 1).await;

    // An automatic mapping, then remapped by hand with sync switched off.
    post(&d, &scrobble(&REMAPPED, 1, 1, 1_700_200_000)).await;
    watched(&tracker, "meadow-a", 1, 1).await;
    ok(
        &cfg,
        &[
            "mappings",
            "set",
            REMAPPED.rating_key,
            "--show",
            "meadow-b",
            "--disable",
        ],
        None,
    )
    .await;

    // A conflict resolved with --ignore.
    post(&d, &scrobble(&IGNORED, 1, 1, 1_700_300_000)).await;
    until(&d, "the Lantern Street conflict", "/api/conflicts", |c| {
        c["total"] == 1
    })
    .await;
    ok(
        &cfg,
        &["conflicts", "resolve", IGNORED.rating_key, "--ignore"],
        None,
    )
    .await;

    // A conflict left open with two held plays.
    post(&d, &scrobble(&OPEN, 1, 1, 1_700_400_000)).await;
    post(&d, &scrobble(&OPEN, 1, 2, 1_700_400_600)).await;
    until(
        &d,
        "the Copper Valley conflict with 2 plays",
        "/api/conflicts",
        |c| c["total"] == 1 && c["items"][0]["held_plays"] == 2,
    )
    .await;

    // A dead letter: the tracker refuses one export outright.
    tracker.set_sticky(Some(Fault::Status(422, None)));
    post(&d, &scrobble(&AUTO, 1, 3, 1_700_500_000)).await;
    until(&d, "a dead letter", "/api/status", |s| {
        s["counts"]["dead_letters"] == 1
    })
    .await;
    tracker.set_sticky(None);

    // Pending exports: the tracker is gone, two batches wait (one per tracker show).
    tracker.server.go_down_hard();
    post(&d, &scrobble(&AUTO, 1, 4, 1_700_600_000)).await;
    post(&d, &scrobble(&SELECTED, 1, 2, 1_700_600_600)).await;
    // (`outbox_items` counts every episode waiting, in a batch or not yet.)
    let status = until(&d, "two batches tried and waiting", "/api/status", |s| {
        s["counts"]["batches"] == 2
            && s["counts"]["outbox_items"] == 2
            && s["counts"]["pending_resolution"] == 0
            && s["tracker_error"].is_string()
    })
    .await;

    let mappings = d.api("GET", "/api/mappings?filter=all").await;
    let conflicts = d.api("GET", "/api/conflicts").await;
    let outbox = d.api("GET", "/api/outbox").await;
    let webhook_url = d.webhook_url.clone();
    assert_eq!(d.stop(), Some(0), "a clean stop:\n{}", d.log());

    let path = webhook_url
        .find("/webhook/")
        .map(|i| webhook_url[i..].to_string())
        .expect("a webhook URL");
    let mapping_rows: Vec<Value> = mappings["items"]
        .as_array()
        .expect("mappings")
        .iter()
        .filter(|m| m["status"] != "conflict")
        .map(|m| {
            json!({
                "id": m["id"],
                "kind": kind(m),
                "status": m["status"],
                "manual": m["manual"],
                "method": m["method"],
                "sync_enabled": m["sync_enabled"],
                "plex_rating_key": m["plex"]["rating_key"],
                "plex_title": m["plex"]["title"],
                "tracker_show_id": m["tracker"]["id"],
            })
        })
        .collect();
    let conflict_rows: Vec<Value> = conflicts["items"]
        .as_array()
        .expect("conflicts")
        .iter()
        .map(|c| {
            json!({
                "id": c["id"],
                "plex_rating_key": c["plex"]["rating_key"],
                "plex_title": c["plex"]["title"],
                "held_plays": c["held_plays"],
                "held_episodes": [{ "season": 1, "episode": 1 }, { "season": 1, "episode": 2 }],
                "candidates": c["candidates"].as_array().map(|cs| cs.iter().map(|k| k["show_id"].clone()).collect::<Vec<_>>()),
            })
        })
        .collect();
    let cursors: Vec<Value> = status["cursors"]
        .as_array()
        .expect("cursors")
        .iter()
        .map(|c| json!({ "key": c["key"], "viewed_at": c["viewed_at"] }))
        .collect();
    let plex_accounts: Vec<Value> = accounts
        .iter()
        .map(|(id, name)| json!({ "id": id, "name": name }))
        .collect();
    let plex_shows: Vec<Value> = [AUTO, SELECTED, REMAPPED, IGNORED, OPEN]
        .iter()
        .map(|s| json!({ "rating_key": s.rating_key, "guid": s.guid, "title": s.title, "year": s.year }))
        .collect();
    let manifest = json!({
        "release": release,
        "commit": commit,
        "made_by": "scripts/make-fixture-store.sh (scripts/fixture-store/generate.rs)",
        "files": { "store": "plexsync.redb", "key": "plexsync.key", "config": "plexsync.toml" },
        "note": "the key file must be copied with mode 0600 (git keeps 0644; plexsync refuses a key readable by others)",
        "config_urls": { "plex": plex_url, "tracker": tracker_url },
        "webhook": { "path": path, "secret": path.trim_start_matches("/webhook/") },
        "secrets": {
            "plex-token": TOKEN,
            "tracker-key": TRACKER_KEY,
            "tmdb-key": TMDB_KEY,
            "admin-token": ADMIN_TOKEN,
        },
        "plex_machine": MACHINE,
        "plex_accounts": plex_accounts,
        "plex_shows": plex_shows,
        "tracker_shows": tracker_shows,
        "mappings": mapping_rows,
        "conflicts": conflict_rows,
        "cursors": cursors,
        "history": history,
        "pending_exports": {
            "count": status["counts"]["outbox_items"],
            "batches": status["counts"]["batches"],
            "episodes": [
                { "show_id": "fx-auto", "season": 1, "episode": 4 },
                { "show_id": "harbour-us", "season": 1, "episode": 2 },
            ],
        },
        "dead_letters": {
            "count": status["counts"]["dead_letters"],
            "episodes": [{ "show_id": "fx-auto", "season": 1, "episode": 3 }],
        },
        "counts": status["counts"],
        "raw": { "dead_letters": outbox["dead_letters"] },
    });

    std::fs::create_dir_all(&out).expect("the output folder");
    for f in ["plexsync.redb", "plexsync.key", "plexsync.toml"] {
        std::fs::copy(dir.path().join(f), out.join(f)).unwrap_or_else(|e| panic!("copy {f}: {e}"));
    }
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).expect("JSON") + "\n",
    )
    .expect("write the manifest");
    eprintln!("fixture written to {}", out.display());
}
