//! Black-box tests of `plexsync match`: the configured chain on JSON-lines queries, against our
//! own small fixtures and against the DEV evaluation set (read in place from
//! ../shared/matching, never copied), where it must meet the matching targets. At the end,
//! what the daemon (in process, fake Plex and tracker) puts into the chain's query for a
//! webhook play: which Plex it may ask about the show, and when it must wait instead.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::daemon::cli;
use support::inproc::InProc;
use support::plex::{FakePlex, FakeShow};
use support::tracker::FakeTracker;

fn config(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("plexsync.toml");
    std::fs::write(
        &p,
        "[tracker]\nurl = \"http://127.0.0.1:9/api\"\n[[matchers]]\nkind = \"guid\"\n[[matchers]]\nkind = \"title\"\n",
    )
    .unwrap();
    p
}

fn run(
    cfg: &std::path::Path,
    catalog: &std::path::Path,
    queries: &std::path::Path,
) -> (Vec<Value>, Value, String) {
    let out = cli(
        cfg,
        &[
            "match",
            "--json",
            "--catalog",
            catalog.to_str().unwrap(),
            "--queries",
            queries.to_str().unwrap(),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let mut lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.pop().unwrap();
    (lines, summary, stderr)
}

#[test]
fn own_fixtures_auto_map_conflict_and_none() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let catalog = dir.path().join("catalogue.jsonl");
    std::fs::write(
        &catalog,
        [
            r#"{"id": 1, "title": "The Office", "year": 2005, "tmdb_id": 2316, "tvdb_id": 73244, "imdb_id": "tt0386676"}"#,
            r#"{"id": 2, "title": "The Office", "year": 2001, "tmdb_id": 2996, "tvdb_id": 78107, "imdb_id": "tt0290978"}"#,
            r#"{"id": 3, "title": "Kanon", "year": 2006, "tmdb_id": null, "tvdb_id": null, "imdb_id": null, "original_title": "Kanon (2006)"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let queries = dir.path().join("q.jsonl");
    std::fs::write(
        &queries,
        [
            // A legacy-agent id: exact.
            r#"{"qid": "a", "title": "The Office (US)", "year": 2005, "guids": ["com.plexapp.agents.thetvdb://73244?lang=en"]}"#,
            // Same title, the year decides: exact title + year.
            r#"{"qid": "b", "title": "The Office", "year": 2001, "guids": []}"#,
            // Same title, no year: two equal candidates, a person decides.
            r#"{"qid": "c", "title": "The Office", "year": null, "guids": []}"#,
            // Nothing like it.
            r#"{"qid": "d", "title": "Zzyzx Qwerty", "year": 1990, "guids": []}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (lines, summary, _) = run(&cfg, &catalog, &queries);
    let by: std::collections::HashMap<&str, &Value> = lines
        .iter()
        .map(|l| (l["qid"].as_str().unwrap(), l))
        .collect();
    assert_eq!(by["a"]["decision"], "auto");
    assert_eq!(by["a"]["show_id"], "1");
    assert_eq!(by["a"]["method"], "tvdb_id");
    assert_eq!(by["b"]["decision"], "auto");
    assert_eq!(by["b"]["show_id"], "2");
    assert_eq!(by["c"]["decision"], "conflict");
    let ids: Vec<&str> = by["c"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["show_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"1") && ids.contains(&"2"), "{ids:?}");
    assert_eq!(by["d"]["decision"], "none");
    assert_eq!(summary["queries"], 4);
    assert_eq!(summary["auto"], 2);
}

#[test]
fn bad_input_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let catalog = dir.path().join("c.jsonl");
    std::fs::write(&catalog, "{\"id\": 1, \"title\": \"A\"}\n{not json\n").unwrap();
    let queries = dir.path().join("q.jsonl");
    std::fs::write(&queries, "").unwrap();
    let out = cli(
        &cfg,
        &[
            "match",
            "--catalog",
            catalog.to_str().unwrap(),
            "--queries",
            queries.to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c.jsonl:2:"), "{err}");
}

/// The DEV set: zero wrong auto-maps (including every `not_in_catalogue` item), ≥ 85% of
/// in-catalogue items auto-mapped, every id-based item auto-mapped.
#[test]
fn dev_set_meets_the_matching_targets() {
    let Some(dir) = support::matching_data() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let (lines, s, human) = run(
        &cfg,
        &dir.join("catalogue.jsonl"),
        &dir.join("dev_queries.jsonl"),
    );
    eprintln!("{human}");
    assert_eq!(lines.len(), 318);
    assert_eq!(s["auto_wrong"], 0, "{s}");
    let in_cat = s["in_catalogue"].as_f64().unwrap();
    assert!(s["auto_correct"].as_f64().unwrap() / in_cat >= 0.85, "{s}");
    for kind in ["exact_id", "legacy_id", "id_conversion_needed"] {
        let k = &s["per_kind"][kind];
        assert_eq!(
            k["auto_correct"], k["n"],
            "every {kind} item auto-maps: {s}"
        );
    }
    assert_eq!(s["per_kind"]["not_in_catalogue"]["auto_correct"], 0);
    // Conflicts offer the right show among their first five candidates.
    let conflicts = s["conflicts_with_answer"].as_f64().unwrap();
    assert!(conflicts > 0.0, "{s}");
    assert!(
        s["conflicts_answer_in_top5"].as_f64().unwrap() / conflicts >= 0.90,
        "{s}"
    );
}

// ---- The chain guid → tmdb → title, with a fake TMDB -------------------------------------

#[path = "../plugins/tmdb/tests/support/fake_tmdb.rs"]
mod fake_tmdb;

const TMDB_KEY: &str = "black-box-tmdb-key";

/// A config whose chain is guid → tmdb (at the fake TMDB) → title.
fn tmdb_config(dir: &std::path::Path, api_url: &str) -> PathBuf {
    let p = dir.join("plexsync.toml");
    std::fs::write(
        &p,
        format!(
            "[tracker]\nurl = \"http://127.0.0.1:9/api\"\n[[matchers]]\nkind = \"guid\"\n[[matchers]]\nkind = \"tmdb\"\napi_url = \"{api_url}\"\nrate_limit = \"1000/1s\"\n[[matchers]]\nkind = \"title\"\n"
        ),
    )
    .unwrap();
    p
}

/// `plexsync match --json` with the TMDB key handed over in `PLEXSYNC_TMDB_KEY` (or none).
fn run_with_key(
    cfg: &std::path::Path,
    catalog: &std::path::Path,
    queries: &std::path::Path,
    key: Option<&str>,
) -> (Vec<Value>, Value, String) {
    let mut cmd = std::process::Command::new(support::daemon::BIN);
    cmd.args(["match", "--json", "--config"])
        .arg(cfg)
        .arg("--catalog")
        .arg(catalog)
        .arg("--queries")
        .arg(queries)
        .env_remove("PLEXSYNC_TMDB_KEY");
    if let Some(k) = key {
        cmd.env("PLEXSYNC_TMDB_KEY", k);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let mut lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.pop().unwrap();
    (lines, summary, stderr)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn tmdb_converts_ids_in_the_chain_and_is_skipped_without_a_key() {
    let rt = runtime();
    let fake = rt.block_on(fake_tmdb::start(
        vec![
            fake_tmdb::Row::new(1396, Some(81189), Some("tt0903747")),
            fake_tmdb::Row::new(2316, Some(73244), Some("tt0386676")),
            fake_tmdb::Row::new(777, None, None)
                .named(&["Harbour Lights", "Hafenlichter"], Some(2005)),
        ],
        TMDB_KEY,
        None,
    ));
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalogue.jsonl");
    std::fs::write(
        &catalog,
        [
            r#"{"id": 1, "title": "Breaking Bad", "year": 2008, "tmdb_id": 1396}"#,
            r#"{"id": 2, "title": "The Office", "year": 2005, "tmdb_id": 2316}"#,
            r#"{"id": 3, "title": "Harbour Lights", "year": 2005, "tmdb_id": 777}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let queries = dir.path().join("q.jsonl");
    std::fs::write(
        &queries,
        [
            // Titles the title matcher cannot map, so only a conversion maps them.
            r#"{"qid": "tvdb", "title": "BB", "year": 2008, "guids": ["com.plexapp.agents.thetvdb://81189?lang=en"]}"#,
            r#"{"qid": "imdb", "title": "Office US", "year": 2005, "guids": ["imdb://tt0386676"]}"#,
            // Direct TMDB id: the guid matcher's, no conversion.
            r#"{"qid": "tmdb", "title": "x", "year": 2008, "guids": ["tmdb://1396"]}"#,
            // TMDB does not know it.
            r#"{"qid": "unknown", "title": "Zzyzx Qwerty", "year": 1990, "guids": ["tvdb://999"]}"#,
            // A translated title sharing nothing with the catalogue's: TMDB's original name
            // of the show (added to the catalogue before matching) finds it, as a candidate
            // for a person only.
            r#"{"qid": "translated", "title": "Hafenlichter", "year": 2005, "guids": []}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let cfg = tmdb_config(dir.path(), &fake.url);
    let (lines, _, _) = run_with_key(&cfg, &catalog, &queries, Some(TMDB_KEY));
    let by: std::collections::HashMap<&str, &Value> = lines
        .iter()
        .map(|l| (l["qid"].as_str().unwrap(), l))
        .collect();
    for (qid, show) in [("tvdb", "1"), ("imdb", "2")] {
        assert_eq!(by[qid]["decision"], "auto", "{qid}");
        assert_eq!(by[qid]["show_id"], show, "{qid}");
        assert_eq!(by[qid]["method"], "tmdb_id", "{qid}");
    }
    assert_eq!(by["tmdb"]["method"], "tmdb_id");
    assert_eq!(by["unknown"]["decision"], "none");
    assert_eq!(by["translated"]["decision"], "conflict");
    assert_eq!(by["translated"]["candidates"][0]["show_id"], "3");
    assert!(by["translated"]["candidates"][0]["score"].as_f64().unwrap() < 0.9);
    let asked: Vec<String> = fake.requests().iter().map(|s| s.path.clone()).collect();
    // First the names of every catalogue show with a TMDB id, then the conversions; only
    // shows without any candidate are searched for (the translated title has one now).
    assert_eq!(
        asked,
        [
            "/3/tv/1396",
            "/3/tv/2316",
            "/3/tv/777",
            "/3/find/81189",
            "/3/find/tt0386676",
            "/3/find/999",
            "/3/search/tv",
        ]
    );
    let searched: Vec<Option<String>> = fake
        .requests()
        .iter()
        .filter(|s| s.path == "/3/search/tv")
        .map(|s| s.param("first_air_date_year").map(str::to_string))
        .collect();
    assert_eq!(searched, [Some("1990".to_string())]);
    assert!(
        fake.requests()
            .iter()
            .all(|s| s.param("api_key") == Some(TMDB_KEY))
    );

    // Without a key: the same config builds, tmdb answers nothing, TMDB is never asked.
    let (lines, _, _) = run_with_key(&cfg, &catalog, &queries, None);
    let tvdb = lines.iter().find(|l| l["qid"] == "tvdb").unwrap();
    assert_ne!(tvdb["method"], "tmdb_id");
    assert_eq!(fake.count(), 7);
}

/// The DEV set through guid → tmdb → title, TMDB faked from the real crosswalk: zero wrong
/// auto-maps, and every `id_conversion_needed` item auto-mapped by the tmdb matcher.
#[test]
fn dev_set_with_the_tmdb_matcher_in_the_chain() {
    let Some(dir) = support::matching_data() else {
        return;
    };
    let rt = runtime();
    let rows = fake_tmdb::read_crosswalk(&dir.join("tmdb_crosswalk.jsonl")).unwrap();
    let fake = rt.block_on(fake_tmdb::start(rows, TMDB_KEY, None));
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmdb_config(tmp.path(), &fake.url);
    let queries = dir.join("dev_queries.jsonl");
    let (lines, s, human) =
        run_with_key(&cfg, &dir.join("catalogue.jsonl"), &queries, Some(TMDB_KEY));
    eprintln!("{human}");
    assert_eq!(lines.len(), 318);
    assert_eq!(s["auto_wrong"], 0, "{s}");
    let k = &s["per_kind"]["id_conversion_needed"];
    assert_eq!(k["auto_correct"], k["n"], "{s}");
    assert_eq!(s["per_kind"]["not_in_catalogue"]["auto_correct"], 0);
    // …and each of them through the tmdb matcher, not by title.
    let kinds: std::collections::HashMap<String, String> = std::fs::read_to_string(&queries)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["qid"].as_str().unwrap().to_string(),
                v["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut converted = 0;
    for l in &lines {
        if kinds[l["qid"].as_str().unwrap()] == "id_conversion_needed" {
            assert_eq!(l["method"], "tmdb_id", "{l}");
            converted += 1;
        }
    }
    assert_eq!(converted, 34);
    assert!(fake.count() > 0);
    // Recall for a person, conflicts without candidates counted as misses. The crosswalk
    // has no titles, so TMDB's search finds nothing here: this is the title matcher's share.
    let base = s["person_with_answer"].as_f64().unwrap();
    assert!(base > 0.0, "{s}");
    assert!(
        s["person_answer_top5"].as_f64().unwrap() / base >= 0.85,
        "{s}"
    );
}

/// The shipped plexsync.toml lists the tmdb matcher; with no key stored it must still pass
/// `plexsync check` (the plugin builds and answers nothing until a key is set).
#[test]
fn the_shipped_config_with_tmdb_checks_without_a_key() {
    let shipped = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/plexsync.toml"));
    let text = std::fs::read_to_string(&shipped).unwrap();
    assert!(text.contains("kind = \"tmdb\""));
    let out = cli(&shipped, &["check"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- The daemon's query for a webhook play (in process, fake Plex and tracker) ---------------

const WAIT: Duration = Duration::from_secs(30);

/// Our fake Plex ("own") and the tracker, a config (guid and title matchers, no polling, the
/// captures' shared user listed and synced) with the Plex token stored, and the daemon started
/// on it (its account list read).
async fn daemon_with(
    dir: &std::path::Path,
    shows: Vec<FakeShow>,
    tracker_shows: Vec<Value>,
) -> (FakePlex, FakeTracker, InProc) {
    plexsync::daemon::install_tls_provider();
    let plex = FakePlex::start(shows).await;
    plex.state.lock().unwrap().machine_identifier = "own".into();
    let tracker = FakeTracker::start(tracker_shows).await;
    plex.list_shared_user();
    let text = support::daemon::config_with_plex(
        &plex.url(),
        &tracker.url(),
        support::daemon::SYNC_SHARED_USER,
        "[[matchers]]\nkind = \"title\"\n[poll]\nenabled = false\n",
    );
    let cfg = dir.join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = cli(
        &cfg,
        &["secret", "set", "plex-token"],
        Some(support::plex::TOKEN),
    );
    assert!(out.status.success(), "{out:?}");
    let d = InProc::start(dir, &text).await;
    support::accounts_read(&d).await;
    (plex, tracker, d)
}

/// A real scrobble capture, re-aimed: played on `server`, whose show is `rk` there, titled
/// `title`, with show guid `guid`.
async fn scrobble(d: &InProc, server: &str, rk: &str, title: &str, guid: &str) {
    let mut p = support::sample_json(support::NEW_AGENT_SCROBBLE);
    p["Server"]["uuid"] = json!(server);
    let m = &mut p["Metadata"];
    m["grandparentRatingKey"] = json!(rk);
    m["grandparentKey"] = json!(format!("/library/metadata/{rk}"));
    m["grandparentGuid"] = json!(guid);
    m["grandparentTitle"] = json!(title);
    m["lastViewedAt"] = json!(1_700_000_000);
    let (ct, body) = support::multipart(&p, None);
    let status = reqwest::Client::new()
        .post(&d.webhook_url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("the daemon answers")
        .status();
    assert_eq!(status, 200);
}

/// The tracker show the mapping of Plex show `rk` points to, once there is one.
async fn mapped_to(d: &InProc, rk: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = d.api("GET", "/api/mappings?status=mapped").await;
        let found = all["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["plex"]["rating_key"] == rk);
        if let Some(m) = found {
            return m["tracker"]["id"].as_str().unwrap_or("").to_string();
        }
        assert!(Instant::now() < deadline, "no mapping: {all}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A webhook travels with its user: a play on a friend's server names that server and the
/// friend's rating key. Our server's item of the same number (The Office, tmdb 2316) must
/// not be asked about, nor lend the play its ids: the play is matched on its own title.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_on_a_friends_server_is_not_looked_up_on_ours() {
    if support::samples().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (plex, _tracker, mut d) = daemon_with(
        dir.path(),
        vec![FakeShow {
            rating_key: "4711".into(),
            guid: "plex://show/5d9c086c46115600200aa2fe".into(),
            title: "The Office".into(),
            year: 2005,
            guids: vec!["tmdb://2316".into(), "tvdb://73244".into()],
        }],
        vec![
            json!({"id": "office", "title": "The Office", "year": 2005, "tmdb_id": 2316}),
            json!({"id": "bb", "title": "Breaking Bad", "year": 2008, "tmdb_id": 1396}),
        ],
    )
    .await;
    scrobble(
        &d,
        "friend",
        "4711",
        "Breaking Bad",
        "plex://show/5d9c08254eb8b6001f0c3c3a",
    )
    .await;
    let show = mapped_to(&d, "4711").await;
    assert_ne!(
        show,
        "office",
        "mapped by our server's item 4711\n{}",
        d.log()
    );
    assert_eq!(show, "bb");
    assert_eq!(
        plex.count("/library/metadata/4711"),
        0,
        "our Plex was asked about the friend's rating key"
    );
    assert_eq!(d.stop().await, Some(0));
}

/// Plex cannot describe the show right now (503) and the play's guid carries no id (a local
/// agent's): only "Shōgun" without a year is left, which the title matcher would map to the
/// 1980 series, the only one listed, for good. The play waits for Plex instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_show_without_an_id_in_its_guid_waits_for_plex_rather_than_match_on_title_alone() {
    if support::samples().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (plex, _tracker, mut d) = daemon_with(
        dir.path(),
        vec![FakeShow {
            rating_key: "5150".into(),
            guid: "local://5150".into(),
            title: "Shōgun".into(),
            year: 2024,
            guids: vec![],
        }],
        vec![json!({"id": "shogun80", "title": "Shōgun", "year": 1980})],
    )
    .await;
    plex.fail_next_on("/library/metadata/5150", 503, 1000);
    scrobble(&d, "own", "5150", "Shōgun", "local://5150").await;
    let deadline = Instant::now() + WAIT;
    while !d
        .log()
        .contains("cannot fetch the show's ids from Plex; play waits")
    {
        let mapped = d.api("GET", "/api/mappings?status=mapped").await;
        assert_eq!(mapped["total"], 0, "mapped without Plex: {mapped}");
        assert!(Instant::now() < deadline, "never deferred\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(plex.count("/library/metadata/5150") >= 1);
    let st = d.status().await;
    assert_eq!(st["counts"]["pending_resolution"], 1, "{st}");
    assert_eq!(st["counts"]["mappings"], 0, "{st}");
    assert_eq!(st["counts"]["conflicts"], 0, "{st}");
    assert_eq!(d.stop().await, Some(0));
}
