//! `Matcher::alt_titles` of the tmdb matcher against a fake TMDB on 127.0.0.1:0 with our own
//! invented fixture: `/tv/{id}` names (alternative titles, translations) for catalogue shows
//! with a TMDB id, cached (a second pass makes no request, a 404 is cached as nothing),
//! through the rate limiter, and failures: a rejected key fails the pass, a timeout ends the
//! slice keeping what was found, an odd answer skips the show.

#[path = "support/fake_tmdb.rs"]
mod fake_tmdb;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_tmdb::{FakeTmdb, Reply, Row, Script};
use plexsync_plugin_api::{
    CatalogShow, ErrorClass, KvCache, Matcher, MemoryCache, PluginContext, Secret,
};
use plexsync_plugin_tmdb::build;
use serde_json::json;

const KEY: &str = "0123456789abcdef0123456789abcdef";

/// Invented series: two with other names, one TMDB knows by its own name only.
fn rows() -> Vec<Row> {
    vec![
        Row::new(9101, None, None)
            .named(&["Night Harbour", "Port de Nuit"], Some(2014))
            .alternative(&["Nachthafen", "night harbour"], &["Porto di Notte", ""]),
        Row::new(9102, None, None)
            .named(&["The Glass Orchard"], Some(2019))
            .alternative(&[], &["Le Verger de Verre"]),
        Row::new(9103, None, None).named(&["Plain Show"], None),
    ]
}

fn show(id: &str, title: &str, tmdb: Option<u64>) -> CatalogShow {
    CatalogShow {
        id: id.into(),
        title: title.into(),
        tmdb_id: tmdb,
        ..Default::default()
    }
}

/// The catalogue: the three series, one TMDB does not know (404), one without a TMDB id.
fn shows() -> Vec<CatalogShow> {
    vec![
        show("harbour", "Night Harbour", Some(9101)),
        show("orchard", "The Glass Orchard", Some(9102)),
        show("plain", "Plain Show", Some(9103)),
        show("gone", "Gone Show", Some(9999)),
        show("local", "Local Show", None),
    ]
}

fn matcher(
    fake: &FakeTmdb,
    extra: serde_json::Value,
    cache: Arc<dyn KvCache>,
) -> plexsync_plugin_tmdb::TmdbMatcher {
    let mut config = json!({ "api_url": fake.url });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    build(&PluginContext {
        config,
        secrets: [("tmdb-key".to_string(), Secret::new(KEY.to_string()))]
            .into_iter()
            .collect(),
        cache,
        config_dir: PathBuf::from("."),
    })
    .unwrap()
}

fn script(
    f: impl Fn(&fake_tmdb::Seen, usize) -> Option<Reply> + Send + Sync + 'static,
) -> Option<Script> {
    Some(Arc::new(f))
}

fn tv_requests(fake: &FakeTmdb) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|s| s.path.starts_with("/3/tv/"))
        .map(|s| s.id().to_string())
        .collect()
}

#[tokio::test]
async fn names_come_from_alternative_titles_and_translations_and_are_cached() {
    let fake = fake_tmdb::start(rows(), KEY, None).await;
    let cache: Arc<dyn KvCache> = Arc::new(MemoryCache::default());
    let m = matcher(&fake, json!({}), cache.clone());
    let shows = shows();
    let names = m.alt_titles(&shows).await.unwrap();
    assert_eq!(
        names,
        vec![
            (
                "harbour".to_string(),
                vec![
                    "Port de Nuit".to_string(),
                    "Nachthafen".to_string(),
                    "Porto di Notte".to_string()
                ]
            ),
            (
                "orchard".to_string(),
                vec!["Le Verger de Verre".to_string()]
            ),
        ]
    );
    // One request per show with a TMDB id, both names appended to it.
    assert_eq!(tv_requests(&fake), ["9101", "9102", "9103", "9999"]);
    for s in fake.requests() {
        assert_eq!(
            s.param("append_to_response"),
            Some("alternative_titles,translations")
        );
        assert_eq!(s.param("api_key"), Some(KEY));
    }
    // A second pass, and a new matcher on the same (store-backed) cache: no request, the
    // 404 included.
    assert_eq!(m.alt_titles(&shows).await.unwrap(), names);
    let again = matcher(&fake, json!({}), cache);
    assert_eq!(again.alt_titles(&shows).await.unwrap(), names);
    assert_eq!(fake.count(), 4);
}

#[tokio::test]
async fn without_a_key_nothing_is_asked() {
    let fake = fake_tmdb::start(rows(), KEY, None).await;
    let m = build(&PluginContext {
        config: json!({ "api_url": fake.url }),
        secrets: Default::default(),
        cache: Arc::new(MemoryCache::default()),
        config_dir: PathBuf::from("."),
    })
    .unwrap();
    assert!(m.alt_titles(&shows()).await.unwrap().is_empty());
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn a_rejected_key_fails_the_pass_and_is_not_cached() {
    let fake = fake_tmdb::start(rows(), "another-key", None).await;
    let m = matcher(&fake, json!({}), Arc::new(MemoryCache::default()));
    let e = m.alt_titles(&shows()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("401"), "{}", e.message);
    assert!(!e.message.contains(KEY), "{}", e.message);
    // It stopped at the first show, and asks again next time.
    assert_eq!(fake.count(), 1);
    let _ = m.alt_titles(&shows()).await;
    assert_eq!(fake.count(), 2);
}

#[tokio::test]
async fn a_timeout_ends_the_slice_keeping_what_was_found() {
    // The second series times out.
    let fake = fake_tmdb::start(
        rows(),
        KEY,
        script(|s, _| {
            (s.path == "/3/tv/9102").then(|| Reply::new(200, "{}").delay(Duration::from_secs(10)))
        }),
    )
    .await;
    let m = matcher(
        &fake,
        json!({"timeout": "300ms"}),
        Arc::new(MemoryCache::default()),
    );
    let names = m.alt_titles(&shows()).await.unwrap();
    assert_eq!(
        names.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["harbour"]
    );
    assert_eq!(tv_requests(&fake), ["9101", "9102"]);
    // A slice starting with the failing show answers the error (transient): the host stops
    // its pass there and tries again later.
    let e = m.alt_titles(&shows()[1..]).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient);
    assert!(e.message.contains("timed out"), "{}", e.message);
}

#[tokio::test]
async fn an_odd_answer_skips_only_that_show() {
    let fake = fake_tmdb::start(
        rows(),
        KEY,
        script(|s, _| (s.path == "/3/tv/9101").then(|| Reply::new(200, r#"{"name": 5}"#))),
    )
    .await;
    let m = matcher(&fake, json!({}), Arc::new(MemoryCache::default()));
    let names = m.alt_titles(&shows()).await.unwrap();
    assert_eq!(
        names.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["orchard"]
    );
}

#[tokio::test]
async fn name_lookups_keep_to_the_rate_limit() {
    let fake = fake_tmdb::start(rows(), KEY, None).await;
    let m = matcher(
        &fake,
        json!({"rate_limit": "2/400ms"}),
        Arc::new(MemoryCache::default()),
    );
    let start = Instant::now();
    m.alt_titles(&shows()).await.unwrap();
    let arrivals: Vec<Duration> = fake.requests().iter().map(|s| s.at - start).collect();
    assert_eq!(arrivals.len(), 4);
    // At most 2 per 400 ms (lower bounds only, so a slow machine cannot fail this).
    for (k, at) in arrivals.iter().enumerate() {
        let earliest = Duration::from_millis(400) * (k as u32 / 2);
        assert!(*at >= earliest, "request {k} at {at:?}: {arrivals:?}");
    }
}
