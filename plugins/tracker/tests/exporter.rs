//! Black-box tests of the `tracker` exporter through its public API: a tiny fake tracker on
//! 127.0.0.1:0 that speaks the real wire format checks what the plugin sends and how it reads
//! every kind of answer; plus config validation and the crate's sample.toml snippet.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use plexsync_plugin_api::{
    ErrorClass, ExportBatch, ExportEpisode, ExportReceipt, Exporter, MemoryCache, NewShow,
    PluginContext, PluginError, Secret,
};
use plexsync_plugin_tracker::{KIND, SECRET_KEY, TrackerExporter, build};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const KEY: &str = "sk-test-5f2c9a0e7b41d8";

/// One request as the fake tracker received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The raw (still percent-encoded) path.
    path: String,
    query: Option<String>,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the fake tracker answers.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Reply::text(status, &body.to_string()).header("content-type", "application/json")
    }
    fn text(status: u16, body: &str) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
    fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

struct Fake {
    /// The `url` to configure: a base with a path, like a real deployment.
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Start a fake tracker answering every request with `reply`.
async fn fake<F>(reply: F) -> Fake
where
    F: Fn(&Seen) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reply = Arc::new(reply);
    let seen_by_server = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let reply = reply.clone();
            let seen = seen_by_server.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let reply = reply.clone();
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes().to_vec())
                            .unwrap_or_default();
                        let request = Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            query: parts.uri.query().map(str::to_string),
                            headers: parts.headers,
                            body,
                        };
                        let r = reply(&request);
                        seen.lock().unwrap().push(request);
                        if !r.delay.is_zero() {
                            tokio::time::sleep(r.delay).await;
                        }
                        let mut response = Response::builder().status(r.status);
                        for (name, value) in r.headers {
                            response = response.header(name, value);
                        }
                        Ok::<_, Infallible>(response.body(Full::new(Bytes::from(r.body))).unwrap())
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Fake {
        url: format!("http://{addr}/api/plexsync"),
        seen,
    }
}

fn ctx(config: Value, key: Option<&str>) -> PluginContext {
    let mut secrets = HashMap::new();
    if let Some(k) = key {
        secrets.insert(SECRET_KEY.to_string(), Secret::new(k.to_string()));
    }
    PluginContext {
        config,
        secrets,
        cache: Arc::new(MemoryCache::default()),
        config_dir: PathBuf::from("."),
    }
}

fn exporter(url: &str, key: Option<&str>) -> TrackerExporter {
    build(&ctx(json!({"url": url, "timeout": "5s"}), key)).unwrap()
}

fn batch(show_id: &str) -> ExportBatch {
    ExportBatch {
        show_id: show_id.to_string(),
        idempotency_key: "batch-7f3a-0001".to_string(),
        episodes: vec![
            ExportEpisode {
                season: 1,
                episode: 2,
                watched_at: 1_694_589_633,
            },
            ExportEpisode {
                season: 0,
                episode: 1,
                watched_at: 951_782_400,
            },
        ],
    }
}

fn receipt_json() -> Value {
    json!({"marked": 1, "already_watched": 1, "unknown": [{"season": 0, "episode": 1}],
           "watched_episodes": 12, "total_episodes": 24})
}

fn config_error(config: Value) -> PluginError {
    let err = build(&ctx(config, None)).unwrap_err();
    assert_eq!(err.class, ErrorClass::Config, "{err:?}");
    err
}

// ---- what goes over the wire ------------------------------------------------------------

#[tokio::test]
async fn export_sends_headers_and_the_exact_body_and_parses_the_receipt() {
    let tracker = fake(|_| Reply::json(200, receipt_json())).await;
    let exp = exporter(&tracker.url, Some(KEY));
    assert_eq!(exp.kind(), KIND);

    let receipt = exp.export(&batch("42")).await.unwrap();
    assert_eq!(
        receipt,
        ExportReceipt {
            marked: 1,
            already_watched: 1,
            unknown: vec![(0, 1)],
            rate_limit: None,
        }
    );

    let seen = tracker.requests();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/plexsync/shows/42/watched");
    assert_eq!(req.query, None);
    assert_eq!(req.header("idempotency-key"), Some("batch-7f3a-0001"));
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("accept"), Some("application/json"));
    assert!(
        req.header("user-agent")
            .unwrap()
            .starts_with("plexsync-tracker/")
    );
    assert_eq!(
        req.json(),
        json!({"episodes": [
            {"season": 1, "episode": 2, "watched_at": "2023-09-13T07:20:33Z"},
            {"season": 0, "episode": 1, "watched_at": "2000-02-29T00:00:00Z"},
        ]})
    );
}

/// An export's answer is a receipt of a few hundred bytes: one past 1 MiB is refused before
/// it is all read, as up to 64 exports may be waiting on answers at once.
#[tokio::test]
async fn an_export_answer_past_a_mib_is_refused() {
    let big = "x".repeat(2 * 1024 * 1024);
    let tracker = fake(move |_| Reply::json(200, json!({"marked": 1, "pad": big.clone()}))).await;
    let exp = exporter(&tracker.url, Some(KEY));
    let e = exp.export(&batch("42")).await.unwrap_err();
    assert!(e.message.contains("larger than 1 MiB"), "{e}");
}

#[tokio::test]
async fn the_same_batch_sends_the_same_idempotency_key_every_time() {
    let tracker = fake(|_| Reply::json(200, receipt_json())).await;
    let exp = exporter(&tracker.url, None);
    exp.export(&batch("42")).await.unwrap();
    exp.export(&batch("42")).await.unwrap();
    let keys: Vec<_> = tracker
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(keys, ["batch-7f3a-0001", "batch-7f3a-0001"]);
}

#[tokio::test]
async fn without_a_key_no_authorization_header_is_sent() {
    let tracker = fake(|_| Reply::json(200, json!([]))).await;
    let exp = exporter(&tracker.url, None);
    assert!(exp.fetch_catalogue().await.unwrap().is_empty());
    assert_eq!(tracker.requests()[0].header("authorization"), None);
}

#[tokio::test]
async fn show_ids_are_percent_encoded_as_one_path_segment() {
    let tracker = fake(|_| Reply::json(200, receipt_json())).await;
    // A trailing slash on the base URL changes nothing.
    let exp = exporter(&format!("{}/", tracker.url), None);
    exp.export(&batch("a/b c?d#e%f")).await.unwrap();
    let req = &tracker.requests()[0];
    assert_eq!(
        req.path,
        "/api/plexsync/shows/a%2Fb%20c%3Fd%23e%25f/watched"
    );
    assert_eq!(req.query, None);
}

#[tokio::test]
async fn ids_that_are_not_path_segments_are_refused_without_a_request() {
    let tracker = fake(|_| Reply::json(200, receipt_json())).await;
    let exp = exporter(&tracker.url, None);
    for id in ["", ".", ".."] {
        let err = exp.export(&batch(id)).await.unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent, "{id:?}: {err}");
    }
    assert!(tracker.requests().is_empty());
}

#[tokio::test]
async fn an_empty_batch_makes_no_request() {
    let tracker = fake(|_| Reply::text(500, "should not be called")).await;
    let exp = exporter(&tracker.url, None);
    let mut b = batch("42");
    b.episodes.clear();
    assert_eq!(exp.export(&b).await.unwrap(), ExportReceipt::default());
    assert!(tracker.requests().is_empty());
}

#[tokio::test]
async fn a_watched_at_outside_rfc3339_is_permanent_and_sends_nothing() {
    let tracker = fake(|_| Reply::json(200, receipt_json())).await;
    let exp = exporter(&tracker.url, None);
    let mut b = batch("42");
    b.episodes[1].watched_at = i64::MAX;
    let err = exp.export(&b).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("S00E01"), "{err}");
    assert!(tracker.requests().is_empty());
}

#[tokio::test]
async fn a_catalogue_over_the_show_cap_is_refused_naming_the_cap() {
    // 500,001 shows of 20 bytes: 10 MB, well inside the body cap.
    let mut body = String::from("[");
    body.push_str(&r#"{"id":1,"title":""},"#.repeat(500_000));
    body.push_str(r#"{"id":1,"title":""}]"#);
    let body = Arc::new(body);
    let tracker = fake(move |_| Reply::text(200, &body)).await;
    let err = exporter(&tracker.url, None)
        .fetch_catalogue()
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message
            .contains("more than 500000 shows, the most a catalogue may hold"),
        "{err}"
    );
}

#[tokio::test]
async fn one_row_that_does_not_fit_costs_that_field_not_the_catalogue() {
    let tracker = fake(|_| {
        Reply::text(
            200,
            r#"[{"id":1,"title":"A"},{"id":2,"title":"B","year":3000000000}]"#,
        )
    })
    .await;
    let shows = exporter(&tracker.url, None)
        .fetch_catalogue()
        .await
        .unwrap();
    let got: Vec<(&str, Option<i32>)> = shows.iter().map(|s| (s.id.as_str(), s.year)).collect();
    assert_eq!(got, [("1", None), ("2", None)]);
}

#[tokio::test]
async fn catalogue_parses_numeric_and_string_ids() {
    let tracker = fake(|_| {
        Reply::json(
            200,
            json!([
                {"id": 3540, "title": "Aria", "year": 2005, "tmdb_id": 53787, "tvdb_id": 79983,
                 "imdb_id": "tt0977907", "original_title": "ARIA The ANIMATION",
                 "aliases": ["Aria the Animation"], "poster": "ignored"},
                {"id": "b-7", "title": "Bluey", "year": 2018, "tmdb_id": null, "tvdb_id": null,
                 "imdb_id": null},
            ]),
        )
    })
    .await;
    let exp = exporter(&tracker.url, Some(KEY));
    let shows = exp.fetch_catalogue().await.unwrap();
    assert_eq!(shows.len(), 2);
    assert_eq!(shows[0].id, "3540");
    assert_eq!(shows[0].title, "Aria");
    assert_eq!(shows[0].year, Some(2005));
    assert_eq!(shows[0].tmdb_id, Some(53787));
    assert_eq!(shows[0].tvdb_id, Some(79983));
    assert_eq!(shows[0].imdb_id.as_deref(), Some("tt0977907"));
    assert_eq!(
        shows[0].original_title.as_deref(),
        Some("ARIA The ANIMATION")
    );
    assert_eq!(shows[0].aliases, ["Aria the Animation"]);
    assert_eq!(shows[1].id, "b-7");
    assert_eq!(shows[1].tmdb_id, None);
    assert!(shows[1].aliases.is_empty());

    let req = &tracker.requests()[0];
    assert_eq!(req.method, "GET");
    assert_eq!(req.path, "/api/plexsync/shows");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test]
async fn create_show_posts_every_field_and_reads_the_id() {
    let tracker = fake(|req| {
        if req.json()["title"] == "Aria" {
            Reply::json(201, json!({"id": 77, "title": "Aria"}))
        } else {
            Reply::json(200, json!({"id": "new-1"}))
        }
    })
    .await;
    let exp = exporter(&tracker.url, Some(KEY));
    let id = exp
        .create_show(&NewShow {
            title: "Aria".into(),
            year: Some(2005),
            tmdb_id: Some(53787),
            tvdb_id: None,
            imdb_id: Some("tt0977907".into()),
        })
        .await
        .unwrap();
    assert_eq!(id, "77");
    let id = exp
        .create_show(&NewShow {
            title: "Other".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(id, "new-1");

    let seen = tracker.requests();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/api/plexsync/shows");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(
        seen[0].json(),
        json!({"title": "Aria", "year": 2005, "tmdb_id": 53787, "tvdb_id": null, "imdb_id": "tt0977907"})
    );
    assert_eq!(
        seen[1].json(),
        json!({"title": "Other", "year": null, "tmdb_id": null, "tvdb_id": null, "imdb_id": null})
    );
}

// ---- error classes ----------------------------------------------------------------------

#[tokio::test]
async fn status_503_is_transient_and_the_message_names_the_call() {
    let tracker =
        fake(|_| Reply::text(503, "<html>\n  <b>down for maintenance</b>\n</html>")).await;
    let exp = exporter(&tracker.url, Some(KEY));
    let err = exp.export(&batch("42")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(err.retry_after, None);
    assert!(
        err.message.contains("POST /api/plexsync/shows/42/watched"),
        "{err}"
    );
    assert!(err.message.contains("503"), "{err}");
    assert!(
        err.message
            .contains("<html> <b>down for maintenance</b> </html>"),
        "{err}"
    );
    assert!(!err.message.contains('\n'), "{err}");
}

#[tokio::test]
async fn status_408_and_500_are_transient() {
    for status in [408, 500, 502, 504] {
        let tracker = fake(move |_| Reply::text(status, "later")).await;
        let err = exporter(&tracker.url, None)
            .fetch_catalogue()
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Transient, "{status}: {err}");
    }
}

#[tokio::test]
async fn rate_limit_headers_ride_on_the_receipt_and_on_a_refusal() {
    let tracker = fake(|_| {
        Reply::json(200, receipt_json())
            .header("x-ratelimit-limit", "100")
            .header("x-ratelimit-remaining", "41")
            .header("x-ratelimit-reset", "1200")
    })
    .await;
    let exp = exporter(&tracker.url, Some(KEY));
    let receipt = exp.export(&batch("42")).await.unwrap();
    assert_eq!(
        receipt.rate_limit,
        Some(plexsync_plugin_api::RateLimit {
            limit: Some(100),
            remaining: Some(41),
            reset_after: Some(Duration::from_secs(1200)),
        })
    );
    let tracker = fake(|_| {
        Reply::text(429, "slow down")
            .header("ratelimit-remaining", "0")
            .header("ratelimit-reset", "90")
    })
    .await;
    let exp = exporter(&tracker.url, Some(KEY));
    let err = exp.export(&batch("42")).await.unwrap_err();
    let rl = err.rate_limit.expect("the refusal's budget");
    assert_eq!(rl.remaining, Some(0));
    assert_eq!(rl.reset_after, Some(Duration::from_secs(90)));
}

#[tokio::test]
async fn status_429_with_retry_after_seconds() {
    let tracker = fake(|_| Reply::text(429, "slow down").header("retry-after", "7")).await;
    let err = exporter(&tracker.url, None)
        .export(&batch("42"))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    assert!(err.message.contains("429"), "{err}");
}

#[tokio::test]
async fn retry_after_as_an_http_date() {
    let at =
        plexsync_plugin_api::values::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let tracker = fake(move |_| Reply::text(503, "").header("retry-after", &at)).await;
    let err = exporter(&tracker.url, None)
        .fetch_catalogue()
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    let after = err.retry_after.expect("retry_after from an HTTP-date");
    assert!(
        (Duration::from_secs(100)..=Duration::from_secs(120)).contains(&after),
        "{after:?}"
    );
    assert!(err.message.contains("(empty body)"), "{err}");
}

#[tokio::test]
async fn a_huge_retry_after_is_clamped_to_an_hour() {
    let tracker = fake(|_| Reply::text(503, "").header("retry-after", "31536000")).await;
    let err = exporter(&tracker.url, None)
        .fetch_catalogue()
        .await
        .unwrap_err();
    assert_eq!(err.retry_after, Some(Duration::from_secs(3600)));
}

#[tokio::test]
async fn status_404_and_422_are_permanent_with_a_short_snippet() {
    let tracker = fake(|req| {
        if req.path.ends_with("/watched") {
            Reply::json(
                422,
                json!({"error": "season 99 does not exist", "pad": "x".repeat(5000)}),
            )
        } else {
            Reply::json(404, json!({"error": "no such endpoint"}))
        }
    })
    .await;
    let exp = exporter(&tracker.url, None);

    let err = exp.export(&batch("42")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.retry_after, None);
    assert!(
        err.message.contains("POST /api/plexsync/shows/42/watched"),
        "{err}"
    );
    assert!(err.message.contains("422"), "{err}");
    assert!(err.message.contains("season 99 does not exist"), "{err}");
    assert!(
        err.message.len() < 400,
        "message too long: {} bytes",
        err.message.len()
    );

    let err = exp.fetch_catalogue().await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("GET /api/plexsync/shows: HTTP 404"),
        "{err}"
    );
    assert!(err.message.contains("no such endpoint"), "{err}");
}

#[tokio::test]
async fn a_4xx_never_carries_retry_after() {
    let tracker = fake(|_| Reply::text(400, "bad").header("retry-after", "7")).await;
    let err = exporter(&tracker.url, None)
        .fetch_catalogue()
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.retry_after, None);
}

#[tokio::test]
async fn redirects_are_not_followed_and_are_permanent() {
    let tracker = fake(|_| {
        Reply::text(301, "moved").header("location", "https://tracker.example/api/v2?token=abc")
    })
    .await;
    let err = exporter(&tracker.url, None)
        .export(&batch("42"))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("https://tracker.example/api/v2"),
        "{err}"
    );
    assert!(!err.message.contains("token=abc"), "{err}");
    assert_eq!(tracker.requests().len(), 1);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let exp = exporter(&format!("http://{addr}/api/plexsync"), Some(KEY));
    let err = exp.export(&batch("42")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert!(
        err.message.contains("POST /api/plexsync/shows/42/watched"),
        "{err}"
    );
    assert!(
        err.message.contains(&format!("cannot connect to {addr}")),
        "{err}"
    );
    assert!(!err.message.contains(KEY));
}

#[tokio::test]
async fn timeout_is_transient() {
    let tracker = fake(|_| Reply::json(200, json!([])).delay(Duration::from_secs(5))).await;
    let exp = build(&ctx(json!({"url": tracker.url, "timeout": "300ms"}), None)).unwrap();
    let started = std::time::Instant::now();
    let err = exp.fetch_catalogue().await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert!(err.message.contains("timed out after 300ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn bad_json_on_2xx_is_permanent_and_names_the_endpoint() {
    let tracker = fake(|req| match (req.method.as_str(), req.path.as_str()) {
        ("GET", _) => Reply::text(200, "<html>login page</html>"),
        ("POST", p) if p.ends_with("/watched") => Reply::json(200, json!({"ok": true})),
        _ => Reply::json(201, json!({"id": null})),
    })
    .await;
    let exp = exporter(&tracker.url, None);

    let err = exp.fetch_catalogue().await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("GET /api/plexsync/shows"), "{err}");
    assert!(err.message.contains("login page"), "{err}");

    let err = exp.export(&batch("42")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("POST /api/plexsync/shows/42/watched"),
        "{err}"
    );

    let err = exp
        .create_show(&NewShow {
            title: "X".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("POST /api/plexsync/shows"), "{err}");
}

#[tokio::test]
async fn the_key_never_appears_in_error_text() {
    // A hostile or careless tracker echoes the Authorization header everywhere it can.
    let tracker = fake(|req| {
        let auth = req.header("authorization").unwrap_or("").to_string();
        match req.path.as_str() {
            p if p.ends_with("/401/watched") => {
                Reply::text(401, &format!("bad credentials: {auth}"))
            }
            p if p.ends_with("/503/watched") => {
                Reply::text(503, &format!("{}{auth}", " ".repeat(9000))).header("x-echo", &auth)
            }
            p if p.ends_with("/cut/watched") => {
                // The key straddles the plugin's 8 KiB read limit for error bodies.
                // 12 bytes of the key fall inside the limit, more than the fragment checked below.
                let pad = "\n".repeat(8 * 1024 - 12 - "Bearer ".len());
                Reply::text(500, &format!("{pad}{auth}"))
            }
            p if p.ends_with("/json/watched") => {
                Reply::json(200, json!({"marked": auth, "already_watched": 0}))
            }
            _ => Reply::text(302, "").header("location", &format!("/login/{}", KEY)),
        }
    })
    .await;
    let exp = exporter(&tracker.url, Some(KEY));
    let mut errors = Vec::new();
    for id in ["401", "503", "cut", "json", "redirect"] {
        errors.push(exp.export(&batch(id)).await.unwrap_err());
    }
    errors.push(exp.fetch_catalogue().await.unwrap_err());
    let fragment = &KEY[..8];
    for err in &errors {
        let shown = format!("{err} {err:?} {}", err.message);
        assert!(!shown.contains(KEY), "key leaked: {shown}");
        assert!(!shown.contains(fragment), "part of the key leaked: {shown}");
    }
    assert!(errors[0].message.contains("<redacted>"), "{}", errors[0]);
    assert!(!format!("{exp:?}").contains(fragment));
}

// ---- config ------------------------------------------------------------------------------

#[test]
fn unknown_config_keys_are_refused_by_name() {
    let err = config_error(json!({"url": "http://127.0.0.1:3000/api", "tiemout": "5s"}));
    assert!(err.message.contains("tiemout"), "{err}");
    assert_eq!(err.key.as_deref(), Some("tiemout"));
}

#[test]
fn url_is_required_and_validated() {
    let err = config_error(json!({}));
    assert_eq!(err.key.as_deref(), Some("url"), "{err}");
    let err = config_error(Value::Null);
    assert_eq!(err.key.as_deref(), Some("url"), "{err}");
    for bad in [
        json!("not a url"),
        json!("ftp://tracker.example/api"),
        json!("http://user:hunter2@tracker.example/api"),
        json!("http://tracker.example/api?key=1"),
        json!("http://"),
        json!(42),
    ] {
        let err = config_error(json!({ "url": bad }));
        assert_eq!(err.key.as_deref(), Some("url"), "{bad}: {err}");
        assert!(!err.message.contains("hunter2"), "{err}");
    }
}

#[test]
fn timeout_and_user_agent_are_validated() {
    for bad in ["", "30", "30h", "0s", "fast", "2 x"] {
        let err = config_error(json!({"url": "http://127.0.0.1/", "timeout": bad}));
        assert_eq!(err.key.as_deref(), Some("timeout"), "{bad:?}: {err}");
    }
    // The one grammar the host's keys use too.
    for ok in ["500ms", "30s", "2m", "2 m", "1m 30s"] {
        build(&ctx(
            json!({"url": "http://127.0.0.1/", "timeout": ok}),
            None,
        ))
        .unwrap();
    }
    let err = config_error(json!({"url": "http://127.0.0.1/", "user_agent": "a\nb"}));
    assert_eq!(err.key.as_deref(), Some("user_agent"), "{err}");
    let err = config_error(json!({"url": "http://127.0.0.1/", "timeout": 30}));
    assert_eq!(err.key.as_deref(), Some("timeout"), "{err}");
    assert!(err.message.contains("a duration string"), "{err}");
    let err = config_error(json!({"url": "http://127.0.0.1/", "user_agent": ["x"]}));
    assert_eq!(err.key.as_deref(), Some("user_agent"), "{err}");
    assert!(err.message.contains("expected a string"), "{err}");
}

#[tokio::test]
async fn a_configured_user_agent_is_sent() {
    let tracker = fake(|_| Reply::json(200, json!([]))).await;
    let exp = build(&ctx(
        json!({"url": tracker.url, "user_agent": "my-plexsync/1"}),
        None,
    ))
    .unwrap();
    exp.fetch_catalogue().await.unwrap();
    assert_eq!(
        tracker.requests()[0].header("user-agent"),
        Some("my-plexsync/1")
    );
}

#[test]
fn a_bad_key_is_a_config_error_that_does_not_show_it() {
    let cfg = json!({"url": "http://127.0.0.1/"});
    let err = build(&ctx(cfg.clone(), Some("sk-line\nbreak"))).unwrap_err();
    assert_eq!(err.class, ErrorClass::Config);
    assert!(err.message.contains(SECRET_KEY), "{err}");
    assert!(!err.message.contains("sk-line"), "{err}");
    let err = build(&ctx(cfg, Some("  "))).unwrap_err();
    assert_eq!(err.class, ErrorClass::Config);
}

#[test]
fn https_urls_build_a_client() {
    // Exercises the rustls provider installation: without it reqwest's builder panics.
    build(&ctx(
        json!({"url": "https://tracker.example/api/plexsync"}),
        Some(KEY),
    ))
    .unwrap();
}

#[test]
fn the_sample_config_parses_and_builds() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sample.toml")).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let mut table = doc["tracker"].as_table().unwrap().clone();
    // The host strips `kind` before handing the table to the plugin.
    assert_eq!(table.remove("kind").unwrap().as_str(), Some(KIND));
    assert_eq!(
        table["url"].as_str(),
        Some("http://127.0.0.1:3000/api/plexsync")
    );
    assert_eq!(table["timeout"].as_str(), Some("30s"));
    let exp = build(&ctx(serde_json::to_value(&table).unwrap(), Some(KEY))).unwrap();
    assert!(format!("{exp:?}").contains("http://127.0.0.1:3000/api/plexsync"));
}

#[test]
fn the_readme_documents_every_config_key_and_the_secret() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for needle in [
        "`url`",
        "`timeout`",
        "`user_agent`",
        "`tracker-key`",
        "Idempotency-Key",
        "Retry-After",
    ] {
        assert!(
            readme.contains(needle),
            "README.md does not mention {needle}"
        );
    }
}

#[test]
fn the_instance_is_the_tracker_not_its_tuning_or_credentials() {
    let a = exporter("https://Tracker.Example/api/plexsync/", Some("k1"));
    assert_eq!(a.instance(), "https://tracker.example:443/api/plexsync");
    // Another key, a trailing slash, the default port spelled out, another timeout: the same
    // tracker.
    let same = build(&ctx(
        json!({"url": "https://tracker.example:443/api/plexsync", "timeout": "9s"}),
        Some("k2"),
    ))
    .unwrap();
    assert_eq!(same.instance(), a.instance());
    // Another host, port or path: another tracker.
    for other in [
        "https://staging.example/api/plexsync",
        "https://tracker.example:8443/api/plexsync",
        "https://tracker.example/other",
        "http://tracker.example/api/plexsync",
    ] {
        assert_ne!(
            exporter(other, Some("k1")).instance(),
            a.instance(),
            "{other}"
        );
    }
    // No credential can reach it (it is stored and logged): a URL with one is refused.
    assert!(
        build(&ctx(
            json!({"url": "https://me:pw@tracker.example/api/plexsync"}),
            Some("k1")
        ))
        .is_err()
    );
}
