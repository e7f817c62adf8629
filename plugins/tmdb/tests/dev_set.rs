//! The tmdb matcher alone against the DEV matching set (real shows, real ids), with a fake
//! TMDB serving `shared/matching/tmdb_crosswalk.jsonl`. Both files are read in place next to
//! the repository: the data is third-party and must not be copied into the repo or shipped.
//!
//! What it holds the matcher to:
//! - every `id_conversion_needed` query (Plex has only a TVDB or IMDb id, the catalogue row
//!   only the TMDB id) is `Definite` on the expected show, method `tmdb_id`;
//! - no `not_in_catalogue` query is `Definite`;
//! - no query of any kind is `Definite` on a show other than the expected one.
//!
//! Only `qid`, `kind`, `title`, `year`, `guids` and `expected` are read; `truth` is not.

#[path = "support/fake_tmdb.rs"]
mod fake_tmdb;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use plexsync_plugin_api::{
    CatalogShow, Catalogue, MatchOutcome, Matcher, MemoryCache, PluginContext, Secret, ShowQuery,
};
use serde::Deserialize;

const KEY: &str = "dev-set-test-key";

#[derive(Debug, Deserialize)]
struct DevQuery {
    qid: String,
    kind: String,
    title: String,
    year: Option<i32>,
    #[serde(default)]
    guids: Vec<String>,
    expected: Option<u64>,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/matching")
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), n + 1))
        })
        .collect()
}

#[derive(Debug, Default)]
struct Tally {
    n: usize,
    right: usize,
    wrong: usize,
    candidates: usize,
    no_match: usize,
}

#[tokio::test]
async fn dev_set_through_the_tmdb_matcher_alone() {
    let dir = data_dir();
    if !dir.is_dir() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "matching data folder {} is missing (required when CI=true)",
            dir.display()
        );
        println!(
            "NOTICE: {} not found; skipping the DEV set check",
            dir.display()
        );
        return;
    }
    let rows = fake_tmdb::read_crosswalk(&dir.join("tmdb_crosswalk.jsonl")).unwrap();
    let fake = fake_tmdb::start(rows, KEY, None).await;
    let shows: Vec<CatalogShow> = read_jsonl(&dir.join("catalogue.jsonl"));
    let queries: Vec<DevQuery> = read_jsonl(&dir.join("dev_queries.jsonl"));

    let ctx = PluginContext {
        // A generous limit: the fake is local, and the limiter is tested elsewhere.
        config: serde_json::json!({"api_url": fake.url, "rate_limit": "1000/1s"}),
        secrets: [("tmdb-key".to_string(), Secret::new(KEY.into()))].into(),
        cache: Arc::new(MemoryCache::default()),
        config_dir: dir.clone(),
    };
    let matcher = plexsync_plugin_tmdb::build(&ctx).unwrap();
    matcher.set_catalogue(Arc::new(Catalogue::new(shows)));

    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for q in &queries {
        let query = ShowQuery {
            rating_key: None,
            title: q.title.clone(),
            year: q.year,
            guids: q.guids.clone(),
        };
        let outcome = matcher.match_show(&query).await.unwrap_or_else(|e| {
            panic!("{}: the fake TMDB never fails, yet: {e}", q.qid);
        });
        let expected = q.expected.map(|id| id.to_string());
        let t = tallies.entry(q.kind.clone()).or_default();
        t.n += 1;
        match &outcome {
            MatchOutcome::Definite {
                show_id,
                method,
                confidence,
            } if Some(show_id) == expected.as_ref() => {
                t.right += 1;
                assert_eq!((method.as_str(), *confidence), ("tmdb_id", 0.95));
            }
            MatchOutcome::Definite { show_id, .. } => {
                t.wrong += 1;
                failures.push(format!(
                    "{} ({}): Definite {show_id}, expected {:?}; guids {:?}",
                    q.qid, q.kind, q.expected, q.guids
                ));
            }
            MatchOutcome::Candidates { .. } => t.candidates += 1,
            MatchOutcome::NoMatch => t.no_match += 1,
        }
        if q.kind == "id_conversion_needed" && !matches!(outcome, MatchOutcome::Definite { .. }) {
            failures.push(format!(
                "{} ({}): expected Definite {:?}, got {outcome:?}; guids {:?}",
                q.qid, q.kind, q.expected, q.guids
            ));
        }
    }
    println!(
        "{:<22} {:>4} {:>6} {:>6} {:>10} {:>8}",
        "kind", "n", "right", "wrong", "candidates", "nomatch"
    );
    for (kind, t) in &tallies {
        println!(
            "{kind:<22} {:>4} {:>6} {:>6} {:>10} {:>8}",
            t.n, t.right, t.wrong, t.candidates, t.no_match
        );
    }
    println!("TMDB requests: {}", fake.count());
    assert_eq!(
        tallies["id_conversion_needed"].n, 34,
        "the DEV set changed?"
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
