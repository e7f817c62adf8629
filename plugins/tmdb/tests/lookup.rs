//! The tmdb matcher through its public API against a fake TMDB on 127.0.0.1:0 serving our own
//! small crosswalk fixture: conversions, the key as `api_key` or Bearer, caching (hits and
//! misses, counted in requests), 429 + Retry-After, 5xx / refused / timeouts as transient,
//! 401 as a permanent error with a warning that never shows the key, and the rate limiter.

#[path = "support/fake_tmdb.rs"]
mod fake_tmdb;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_tmdb::{FakeTmdb, Reply, Row, Script};
use plexsync_plugin_api::{
    CatalogShow, Catalogue, ErrorClass, KvCache, MatchOutcome, Matcher, MemoryCache, PluginContext,
    PluginError, Secret, ShowQuery,
};
use plexsync_plugin_tmdb::{TmdbMatcher, build};
use serde_json::json;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJ0ZXN0In0.c2lnbmF0dXJl";

/// Breaking Bad, Game of Thrones, and a show TMDB knows that is not in the catalogue.
fn rows() -> Vec<Row> {
    vec![
        Row::new(1396, Some(81189), Some("tt0903747")),
        Row::new(1399, Some(121361), Some("tt0944947")),
        Row::new(5555, Some(5556), Some("tt5555555")),
    ]
}

/// A TMDB-first catalogue: the rows carry only the TMDB id.
fn catalogue() -> Arc<Catalogue> {
    let show = |id: &str, tmdb: u64| CatalogShow {
        id: id.into(),
        title: id.into(),
        tmdb_id: Some(tmdb),
        ..Default::default()
    };
    Arc::new(Catalogue::new(vec![show("bb", 1396), show("got", 1399)]))
}

/// A cache that remembers the TTL of each put.
#[derive(Default)]
struct RecordingCache {
    inner: MemoryCache,
    ttls: Mutex<HashMap<String, Option<Duration>>>,
}

impl KvCache for RecordingCache {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.get(key)
    }
    fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) {
        self.ttls.lock().unwrap().insert(key.to_string(), ttl);
        self.inner.put(key, value, ttl);
    }
}

fn matcher_with(
    url: &str,
    key: Option<&str>,
    extra: serde_json::Value,
    cache: Arc<dyn KvCache>,
) -> TmdbMatcher {
    let mut config = json!({ "api_url": url });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let ctx = PluginContext {
        config,
        secrets: key
            .map(|k| ("tmdb-key".to_string(), Secret::new(k.to_string())))
            .into_iter()
            .collect(),
        cache,
        config_dir: PathBuf::from("."),
    };
    let m = build(&ctx).unwrap();
    m.set_catalogue(catalogue());
    m
}

fn matcher(fake: &FakeTmdb) -> TmdbMatcher {
    matcher_with(
        &fake.url,
        Some(KEY),
        json!({}),
        Arc::new(MemoryCache::default()),
    )
}

fn query(guids: &[&str]) -> ShowQuery {
    ShowQuery {
        rating_key: None,
        title: "irrelevant".into(),
        year: None,
        guids: guids.iter().map(|g| g.to_string()).collect(),
    }
}

fn definite(show_id: &str) -> MatchOutcome {
    MatchOutcome::Definite {
        show_id: show_id.into(),
        confidence: 0.95,
        method: "tmdb_id".into(),
    }
}

fn script(
    f: impl Fn(&fake_tmdb::Seen, usize) -> Option<Reply> + Send + Sync + 'static,
) -> Option<Script> {
    Some(Arc::new(f))
}

async fn lookup_err(m: &TmdbMatcher, guids: &[&str]) -> PluginError {
    match m.match_show(&query(guids)).await {
        Err(e) => e,
        Ok(o) => panic!("expected an error, got {o:?}"),
    }
}

#[tokio::test]
async fn tvdb_converts_to_the_catalogue_show_with_the_key_as_api_key() {
    let fake = fake_tmdb::start(rows(), KEY, None).await;
    let m = matcher(&fake);
    let out = m
        .match_show(&query(&["com.plexapp.agents.thetvdb://81189/1/3?lang=en"]))
        .await
        .unwrap();
    assert_eq!(out, definite("bb"));
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/3/find/81189");
    assert_eq!(seen[0].param("external_source"), Some("tvdb_id"));
    assert_eq!(seen[0].param("api_key"), Some(KEY));
    assert_eq!(seen[0].authorization, None);
}

#[tokio::test]
async fn imdb_converts_too() {
    let fake = fake_tmdb::start(rows(), KEY, None).await;
    let m = matcher(&fake);
    let out = m.match_show(&query(&["imdb://TT0944947"])).await.unwrap();
    assert_eq!(out, definite("got"));
    let seen = fake.requests();
    assert_eq!(seen[0].path, "/3/find/tt0944947");
    assert_eq!(seen[0].param("external_source"), Some("imdb_id"));
}

#[tokio::test]
async fn a_v4_token_goes_in_the_authorization_header() {
    let fake = fake_tmdb::start(rows(), JWT, None).await;
    let m = matcher_with(
        &fake.url,
        Some(JWT),
        json!({}),
        Arc::new(MemoryCache::default()),
    );
    let out = m.match_show(&query(&["tvdb://121361"])).await.unwrap();
    assert_eq!(out, definite("got"));
    let seen = fake.requests();
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {JWT}").as_str())
    );
    assert_eq!(
        seen[0].param("api_key"),
        None,
        "the token is not also in the URL"
    );
}

#[tokio::test]
async fn hits_and_misses_are_cached_with_their_ttls() {
    let fake = fake_tmdb::start(rows(), KEY, None).await;
    let cache = Arc::new(RecordingCache::default());
    let m = matcher_with(&fake.url, Some(KEY), json!({}), cache.clone());
    // Unknown to TMDB, and known to TMDB but not in the catalogue: both NoMatch.
    for guids in [["tvdb://999999"], ["tvdb://5556"]] {
        assert_eq!(
            m.match_show(&query(&guids)).await.unwrap(),
            MatchOutcome::NoMatch
        );
    }
    assert_eq!(
        m.match_show(&query(&["tvdb://81189"])).await.unwrap(),
        definite("bb")
    );
    assert_eq!(fake.count(), 3);
    // Asked again: all from the cache, no request.
    for guids in [["tvdb://999999"], ["tvdb://5556"], ["tvdb://81189"]] {
        m.match_show(&query(&guids)).await.unwrap();
    }
    assert_eq!(
        m.match_show(&query(&["tvdb://81189"])).await.unwrap(),
        definite("bb")
    );
    assert_eq!(fake.count(), 3, "second lookups must not reach TMDB");
    let ttls = cache.ttls.lock().unwrap().clone();
    let day = Duration::from_secs(86_400);
    assert_eq!(
        ttls["find:tvdb_id:999999"],
        Some(day),
        "a miss: negative_cache_ttl"
    );
    assert_eq!(
        ttls["find:tvdb_id:5556"],
        Some(30 * day),
        "a found id: cache_ttl"
    );
    assert_eq!(ttls["find:tvdb_id:81189"], Some(30 * day));
}

#[tokio::test]
async fn ids_pointing_to_different_shows_give_candidates() {
    let fake = fake_tmdb::start(rows(), KEY, None).await;
    let m = matcher(&fake);
    let out = m
        .match_show(&query(&["tvdb://81189", "imdb://tt0944947"]))
        .await
        .unwrap();
    match out {
        MatchOutcome::Candidates { candidates } => {
            let ids: Vec<&str> = candidates.iter().map(|c| c.show_id.as_str()).collect();
            assert_eq!(ids, ["bb", "got"]);
        }
        other => panic!("{other:?}"),
    }
    // Agreeing ids (one TMDB does not know) stay definite.
    let out = m
        .match_show(&query(&[
            "tvdb://81189",
            "imdb://tt0903747",
            "imdb://tt7777777",
        ]))
        .await
        .unwrap();
    assert_eq!(out, definite("bb"));
}

#[tokio::test]
async fn only_tvdb_and_imdb_ids_are_converted() {
    let fake = fake_tmdb::start(rows(), KEY, None).await;
    let m = matcher(&fake);
    for guids in [
        &["tmdb://1396"][..],
        &["plex://show/5d9c086c46115600200aa2fe"][..],
        &["com.plexapp.agents.hama://anidb-17494?lang=en"][..],
        &["com.plexapp.agents.hama://tmdb-1396?lang=en"][..],
        &[][..],
    ] {
        assert_eq!(
            m.match_show(&query(guids)).await.unwrap(),
            MatchOutcome::NoMatch,
            "{guids:?}"
        );
    }
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn no_key_means_no_request_and_no_match() {
    let fake = fake_tmdb::start(rows(), KEY, None).await;
    let m = matcher_with(&fake.url, None, json!({}), Arc::new(MemoryCache::default()));
    assert!(!m.has_key());
    assert_eq!(
        m.match_show(&query(&["tvdb://81189"])).await.unwrap(),
        MatchOutcome::NoMatch
    );
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn a_short_retry_after_on_429_is_waited_out() {
    let fake = fake_tmdb::start(
        rows(),
        KEY,
        script(|_, i| {
            (i == 0).then(|| Reply::new(429, r#"{"status_code":25}"#).header("Retry-After", "1"))
        }),
    )
    .await;
    let m = matcher(&fake);
    let out = m.match_show(&query(&["tvdb://81189"])).await.unwrap();
    assert_eq!(out, definite("bb"));
    let seen = fake.requests();
    assert_eq!(seen.len(), 2);
    // A lower bound only: a slow machine can make the gap longer, never shorter.
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(900),
        "{:?}",
        seen[1].at - seen[0].at
    );
}

#[tokio::test]
async fn a_long_retry_after_becomes_a_transient_error_carrying_it() {
    let fake = fake_tmdb::start(
        rows(),
        KEY,
        script(|_, _| Some(Reply::new(429, "slow down").header("Retry-After", "120"))),
    )
    .await;
    let m = matcher(&fake);
    let e = lookup_err(&m, &["tvdb://81189"]).await;
    assert_eq!(e.class, ErrorClass::Transient);
    assert_eq!(e.retry_after, Some(Duration::from_secs(120)));
    assert!(e.message.contains("429"), "{}", e.message);
    assert_eq!(fake.count(), 1);

    // During that pause another lookup fails at once with what is left of it, and sends no
    // request (it used to sleep in the rate limiter for the whole two minutes).
    let e = tokio::time::timeout(Duration::from_secs(5), lookup_err(&m, &["tvdb://121361"]))
        .await
        .expect("a lookup during a long pause must not wait for it");
    assert_eq!(e.class, ErrorClass::Transient);
    let left = e.retry_after.expect("the pause left");
    assert!(
        left > Duration::from_secs(100) && left <= Duration::from_secs(120),
        "{left:?}"
    );
    assert!(e.message.contains("429"), "{}", e.message);
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn server_errors_are_transient_and_not_cached() {
    // 81189 fails twice, everything else works.
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fake = fake_tmdb::start(
        rows(),
        KEY,
        script(move |seen, _| {
            (seen.id() == "81189" && failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2)
                .then(|| Reply::new(503, "<html>down</html>").header("Retry-After", "30"))
        }),
    )
    .await;
    let m = matcher(&fake);
    let e = lookup_err(&m, &["tvdb://81189"]).await;
    assert_eq!(e.class, ErrorClass::Transient);
    assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
    assert!(
        e.message.contains("503") && e.message.contains("down"),
        "{}",
        e.message
    );
    // One id failing fails the lookup even when another converted: it might point elsewhere.
    let e = lookup_err(&m, &["imdb://tt0944947", "tvdb://81189"]).await;
    assert_eq!(e.class, ErrorClass::Transient);
    // TMDB is back: the failure was not cached.
    assert_eq!(
        m.match_show(&query(&["tvdb://81189"])).await.unwrap(),
        definite("bb")
    );
    assert_eq!(fake.count(), 4);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let m = matcher_with(
        &format!("http://127.0.0.1:{port}/3"),
        Some(KEY),
        json!({}),
        Arc::new(MemoryCache::default()),
    );
    let e = lookup_err(&m, &["tvdb://81189"]).await;
    assert_eq!(e.class, ErrorClass::Transient);
    assert!(e.message.contains("cannot connect"), "{}", e.message);
    assert!(!e.message.contains(KEY), "{}", e.message);
}

#[tokio::test]
async fn a_timeout_is_transient() {
    let fake = fake_tmdb::start(
        rows(),
        KEY,
        script(|_, _| Some(Reply::new(200, "{}").delay(Duration::from_secs(10)))),
    )
    .await;
    let m = matcher_with(
        &fake.url,
        Some(KEY),
        json!({"timeout": "300ms"}),
        Arc::new(MemoryCache::default()),
    );
    let e = lookup_err(&m, &["tvdb://81189"]).await;
    assert_eq!(e.class, ErrorClass::Transient);
    assert!(e.message.contains("timed out after 300ms"), "{}", e.message);
    assert!(!e.message.contains(KEY), "{}", e.message);
}

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

#[tokio::test]
async fn a_rejected_key_is_a_permanent_error_and_one_warning_without_the_key() {
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // The fake accepts another key; TMDB's 401 body echoes nothing, but a proxy might: make
    // this one echo the request's api_key to prove it is redacted.
    let fake = fake_tmdb::start(
        rows(),
        "the-right-key",
        script(|seen, _| {
            Some(Reply::new(
                401,
                &format!(
                    r#"{{"status_code":7,"status_message":"Invalid API key {}","success":false}}"#,
                    seen.param("api_key").unwrap_or("")
                ),
            ))
        }),
    )
    .await;
    let m = matcher(&fake);
    let e = lookup_err(&m, &["tvdb://81189"]).await;
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.message.contains("401") && e.message.contains("TMDB key was rejected"),
        "{}",
        e.message
    );
    assert!(!e.message.contains(KEY), "{}", e.message);
    assert!(!format!("{e:?}").contains(KEY));
    // Not cached, and warned about once however many shows hit it.
    lookup_err(&m, &["tvdb://121361"]).await;
    assert_eq!(fake.count(), 2);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("rejected the TMDB key").count(), 1, "{text}");
    assert!(text.contains("WARN"), "{text}");
    assert!(!text.contains(KEY), "{text}");
}

#[tokio::test]
async fn malformed_answers_and_a_wrong_api_url_are_permanent() {
    // TMDB's error object, but with a 200: JSON, yet neither /find's nor /tv's answer.
    const NOT_AN_ANSWER: &str =
        r#"{"success":false,"status_code":7,"status_message":"Invalid API key"}"#;
    let fake = fake_tmdb::start(
        rows(),
        KEY,
        script(|seen, _| match seen.id() {
            "81189" => Some(Reply::new(200, "<html>captive portal</html>")),
            "tt0944947" | "1396" => Some(Reply::new(200, NOT_AN_ANSWER)),
            _ => None,
        }),
    )
    .await;
    let m = matcher(&fake);
    let e = lookup_err(&m, &["tvdb://81189"]).await;
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("not /find's JSON"), "{}", e.message);

    // A JSON object without `tv_results` is not "no results": a permanent error, and nothing
    // cached (it used to be a miss, remembered for a day).
    for _ in 0..2 {
        let e = lookup_err(&m, &["imdb://tt0944947"]).await;
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(
            e.message.contains("not /find's JSON") && e.message.contains("tv_results"),
            "{}",
            e.message
        );
    }
    let asked = |id: &str| fake.requests().iter().filter(|s| s.id() == id).count();
    assert_eq!(asked("tt0944947"), 2, "the odd answer was cached");

    // The same for /tv/{id} (the catalogue names): the show gets no names and is asked again
    // next time; a real answer, even one without names, is cached.
    let shows = [
        CatalogShow {
            id: "bb".into(),
            title: "bb".into(),
            tmdb_id: Some(1396),
            ..Default::default()
        },
        CatalogShow {
            id: "got".into(),
            title: "got".into(),
            tmdb_id: Some(1399),
            ..Default::default()
        },
    ];
    for _ in 0..2 {
        assert!(m.alt_titles(&shows).await.unwrap().is_empty());
    }
    assert_eq!(asked("1396"), 2, "the odd /tv answer was cached");
    assert_eq!(asked("1399"), 1);

    // api_url without TMDB's `/3`.
    let base = fake.url.trim_end_matches("/3");
    let m = matcher_with(base, Some(KEY), json!({}), Arc::new(MemoryCache::default()));
    let e = lookup_err(&m, &["tvdb://121361"]).await;
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.message.contains("404") && e.message.contains("api_url"),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spaces_requests_across_concurrent_lookups() {
    let fake = fake_tmdb::start(rows(), KEY, None).await;
    let m = Arc::new(matcher_with(
        &fake.url,
        Some(KEY),
        json!({"rate_limit": "2/400ms"}),
        Arc::new(MemoryCache::default()),
    ));
    let start = Instant::now();
    // Six different ids (distinct cache keys), all at once.
    let ids = [
        "tvdb://81189",
        "tvdb://121361",
        "tvdb://5556",
        "imdb://tt0903747",
        "imdb://tt0944947",
        "imdb://tt5555555",
    ];
    let mut tasks = Vec::new();
    for id in ids {
        let m = m.clone();
        tasks.push(tokio::spawn(
            async move { m.match_show(&query(&[id])).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut arrivals: Vec<Duration> = fake.requests().iter().map(|s| s.at - start).collect();
    arrivals.sort();
    assert_eq!(arrivals.len(), 6);
    // At most 2 per 400 ms: request k (0-based, in arrival order) cannot arrive before
    // (k / 2) windows have passed. Lower bounds only, so a slow machine cannot fail this.
    for (k, at) in arrivals.iter().enumerate() {
        let earliest = Duration::from_millis(400) * (k as u32 / 2);
        assert!(
            *at >= earliest,
            "request {k} arrived at {at:?}, before {earliest:?}: {arrivals:?}"
        );
    }
}
