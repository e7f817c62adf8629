//! A fake TMDB v3 API on 127.0.0.1 for tests and `examples/fake_tmdb.rs`: it answers
//! `GET …/find/{id}?external_source=tvdb_id|imdb_id` from crosswalk rows
//! (`{"tmdb_id", "tvdb_id", "imdb_id"}`, the shape of `shared/matching/tmdb_crosswalk.jsonl`)
//! in TMDB's answer shape, checks the key (v3 `api_key` parameter or v4 `Authorization:
//! Bearer`) like TMDB does (401 with TMDB's error body), records every request, and can be
//! scripted to fail. `GET …/search/tv?query=…[&first_air_date_year=…]` answers from the
//! names a test gives rows ([`Row::named`]); crosswalk rows have none, so a search of the
//! crosswalk finds nothing (TMDB's answer for an unknown title).
//! `GET …/tv/{id}?append_to_response=alternative_titles,translations` answers a row's names
//! in TMDB's shape (`name`/`original_name` from [`Row::named`], [`Row::alternative`]'s
//! alternative titles and translations); an id no row has is TMDB's 404. Crosswalk rows know
//! no names, so their answer carries none.
//!
//! Also compiled into the host's tests/matching.rs (by `#[path]`), so it uses only crates the
//! host has too.
#![allow(dead_code)]

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One crosswalk row.
#[derive(Debug, Clone)]
pub struct Row {
    pub tmdb: u64,
    pub tvdb: Option<u64>,
    pub imdb: Option<String>,
    /// Names `/search/tv` finds the row by (any case, whole or part), and its first-air year.
    pub names: Vec<String>,
    pub year: Option<i32>,
    /// `/tv/{id}`'s `alternative_titles.results[].title` and
    /// `translations.translations[].data.name`.
    pub alternative_titles: Vec<String>,
    pub translations: Vec<String>,
}

impl Row {
    pub fn new(tmdb: u64, tvdb: Option<u64>, imdb: Option<&str>) -> Row {
        Row {
            tmdb,
            tvdb,
            imdb: imdb.map(str::to_string),
            names: Vec::new(),
            year: None,
            alternative_titles: Vec::new(),
            translations: Vec::new(),
        }
    }

    /// The row's alternative titles and translated names, as `/tv/{id}` lists them.
    pub fn alternative(mut self, titles: &[&str], translations: &[&str]) -> Row {
        self.alternative_titles = titles.iter().map(|n| n.to_string()).collect();
        self.translations = translations.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The row found by `/search/tv` under these names and year.
    pub fn named(mut self, names: &[&str], year: Option<i32>) -> Row {
        self.names = names.iter().map(|n| n.to_string()).collect();
        self.year = year;
        self
    }
}

/// Read crosswalk rows (JSON lines) in place.
pub fn read_crosswalk(path: &Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        let tmdb = v["tmdb_id"]
            .as_u64()
            .ok_or_else(|| format!("{}:{}: no tmdb_id", path.display(), i + 1))?;
        rows.push(Row {
            tmdb,
            tvdb: v["tvdb_id"].as_u64(),
            imdb: v["imdb_id"].as_str().map(str::to_ascii_lowercase),
            names: Vec::new(),
            year: None,
            alternative_titles: Vec::new(),
            translations: Vec::new(),
        });
    }
    Ok(rows)
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The path, e.g. `/3/find/81189`.
    pub path: String,
    /// Decoded query parameters in order.
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

impl Seen {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The id asked about (last path segment).
    pub fn id(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

/// A scripted answer: status, extra headers, body, and a delay before it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// Given a request and its 0-based index, a scripted reply, or None for the normal answer.
pub type Script = Arc<dyn Fn(&Seen, usize) -> Option<Reply> + Send + Sync>;

pub struct FakeTmdb {
    /// The `api_url` to configure (with TMDB's `/3` prefix).
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeTmdb {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

struct State {
    rows: Vec<Row>,
    key: String,
    script: Option<Script>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Start a fake TMDB on `addr` (use "127.0.0.1:0") accepting `key`.
pub async fn start_on(
    addr: &str,
    rows: Vec<Row>,
    key: &str,
    script: Option<Script>,
) -> std::io::Result<FakeTmdb> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = Arc::new(State {
        rows,
        key: key.to_string(),
        script,
        seen: seen.clone(),
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(FakeTmdb {
        url: format!("http://{local}/3"),
        seen,
    })
}

/// Start a fake TMDB on 127.0.0.1:0.
pub async fn start(rows: Vec<Row>, key: &str, script: Option<Script>) -> FakeTmdb {
    start_on("127.0.0.1:0", rows, key, script).await.unwrap()
}

fn json(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json;charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let seen = Seen {
        path: req.uri().path().to_string(),
        query: req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect(),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        at: Instant::now(),
    };
    let index = {
        let mut all = state.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    if let Some(script) = &state.script {
        if let Some(reply) = script(&seen, index) {
            if !reply.delay.is_zero() {
                tokio::time::sleep(reply.delay).await;
            }
            let mut b = Response::builder().status(reply.status);
            for (k, v) in &reply.headers {
                b = b.header(k.as_str(), v.as_str());
            }
            return b.body(Full::new(Bytes::from(reply.body))).unwrap();
        }
    }
    let bearer = format!("Bearer {}", state.key);
    let authorised = seen.param("api_key") == Some(state.key.as_str())
        || seen.authorization.as_deref() == Some(bearer.as_str());
    if !authorised {
        return json(
            401,
            r#"{"status_code":7,"status_message":"Invalid API key: You must be granted a valid key.","success":false}"#.into(),
        );
    }
    if seen.path == "/3/search/tv" && req.method() == hyper::Method::GET {
        let q = seen.param("query").unwrap_or("").to_lowercase();
        let year: Option<i32> = seen
            .param("first_air_date_year")
            .and_then(|y| y.parse().ok());
        let results: Vec<serde_json::Value> = state
            .rows
            .iter()
            .filter(|r| !q.is_empty() && r.names.iter().any(|n| n.to_lowercase().contains(&q)))
            .filter(|r| year.is_none() || r.year.is_none() || r.year == year)
            .map(|r| serde_json::json!({"id": r.tmdb, "name": r.names.first(), "media_type": "tv"}))
            .collect();
        let n = results.len();
        return json(
            200,
            serde_json::json!({"page": 1, "results": results, "total_pages": 1, "total_results": n})
                .to_string(),
        );
    }
    if let Some(id) = seen.path.strip_prefix("/3/tv/") {
        let row = id
            .parse::<u64>()
            .ok()
            .and_then(|id| state.rows.iter().find(|r| r.tmdb == id));
        let Some(row) = row.filter(|_| req.method() == hyper::Method::GET) else {
            return json(
                404,
                r#"{"status_code":34,"status_message":"The resource you requested could not be found.","success":false}"#.into(),
            );
        };
        let mut body = serde_json::json!({"id": row.tmdb, "overview": "", "seasons": []});
        if let Some(name) = row.names.first() {
            body["name"] = name.as_str().into();
            body["original_name"] = row.names.get(1).unwrap_or(name).as_str().into();
        }
        let appended = seen.param("append_to_response").unwrap_or("");
        if appended.split(',').any(|a| a == "alternative_titles") {
            body["alternative_titles"] = serde_json::json!({"results": row
                .alternative_titles
                .iter()
                .map(|t| serde_json::json!({"iso_3166_1": "XX", "title": t, "type": ""}))
                .collect::<Vec<_>>()});
        }
        if appended.split(',').any(|a| a == "translations") {
            body["translations"] = serde_json::json!({"translations": row
                .translations
                .iter()
                .map(|n| serde_json::json!({"iso_639_1": "xx", "iso_3166_1": "XX",
                    "data": {"name": n, "overview": "", "homepage": "", "tagline": ""}}))
                .collect::<Vec<_>>()});
        }
        return json(200, body.to_string());
    }
    let id = seen.path.strip_prefix("/3/find/").unwrap_or("");
    if req.method() != hyper::Method::GET || id.is_empty() || id.contains('/') {
        return json(
            404,
            r#"{"status_code":34,"status_message":"The resource you requested could not be found.","success":false}"#.into(),
        );
    }
    let id = id.to_ascii_lowercase();
    let hits: Vec<u64> = match seen.param("external_source") {
        Some("tvdb_id") => match id.parse::<u64>() {
            Ok(t) => state
                .rows
                .iter()
                .filter(|r| r.tvdb == Some(t))
                .map(|r| r.tmdb)
                .collect(),
            Err(_) => Vec::new(),
        },
        Some("imdb_id") => state
            .rows
            .iter()
            .filter(|r| r.imdb.as_deref() == Some(id.as_str()))
            .map(|r| r.tmdb)
            .collect(),
        _ => {
            return json(
                400,
                r#"{"status_code":5,"status_message":"Invalid parameters: Your request parameters are incorrect.","success":false}"#.into(),
            );
        }
    };
    let tv: Vec<serde_json::Value> = hits
        .iter()
        .map(|t| {
            serde_json::json!({
                "adult": false, "id": t, "name": format!("Show {t}"),
                "original_language": "en", "media_type": "tv", "popularity": 1.0,
                "first_air_date": "2010-01-01", "genre_ids": [], "origin_country": ["US"]
            })
        })
        .collect();
    json(
        200,
        serde_json::json!({
            "movie_results": [], "person_results": [], "tv_results": tv,
            "tv_episode_results": [], "tv_season_results": []
        })
        .to_string(),
    )
}
