//! Black-box tests of `plexsync match`: the configured chain on JSON-lines queries, against our
//! own small fixtures and against the DEV evaluation set (read in place from
//! ../shared/matching, never copied), where it must meet the matching targets.

mod support;

use std::path::PathBuf;

use serde_json::Value;
use support::daemon::cli;

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
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/matching"));
    if !dir.is_dir() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} missing in CI",
            dir.display()
        );
        eprintln!("NOTICE: {} not found; skipping", dir.display());
        return;
    }
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
}
