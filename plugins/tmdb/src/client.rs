//! The TMDB HTTP client: `GET {api_url}/find/{id}?external_source=…`, `/search/tv` and
//! `/tv/{id}` (names, for the catalogue enrichment), with the key
//! attached (v3 key as the `api_key` query parameter, v4 read token as `Authorization:
//! Bearer`), the rate limiter, 429 handling, and the classification of every failure into a
//! [`PluginError`] (transient: TMDB down, 5xx, 429, timeouts; permanent: 401, other 4xx,
//! an answer that is not /find's JSON).
//!
//! The key never leaves through this module: request URLs carrying it are never put in a
//! message (reqwest errors are stripped of their URL), and answer snippets are redacted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use plexsync_plugin_api::values::parse_retry_after;
use plexsync_plugin_api::{ErrorClass, PluginError, Secret};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::config::{TmdbConfig, human};
use crate::limiter::RateLimiter;

/// Which external id `/find` is asked about (`external_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Tvdb,
    Imdb,
}

impl Source {
    pub(crate) fn param(self) -> &'static str {
        match self {
            Source::Tvdb => "tvdb_id",
            Source::Imdb => "imdb_id",
        }
    }
}

/// Series ids in the order given, each once.
fn unique_ids(results: Vec<TvResult>) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::new();
    for r in results {
        if !ids.contains(&r.id) {
            ids.push(r.id);
        }
    }
    ids
}

/// 429s waited out in place for one lookup before giving up with a transient error.
const MAX_429_WAITS: u32 = 2;

/// Largest answer read. A /find answer is a few KiB; anything much larger is not one.
const BODY_LIMIT: usize = 1024 * 1024;

/// Characters of an error answer quoted in a message.
const SNIPPET_CHARS: usize = 160;

/// How the key is sent.
#[derive(Clone)]
enum Auth {
    /// v3 API key: `?api_key=…`.
    Query(Secret),
    /// v4 read access token (a JWT): sent as a default `Authorization` header.
    Bearer,
}

/// The parts of a /find answer we read. TMDB also sends `movie_results`, `person_results`,
/// `tv_episode_results` and `tv_season_results`; only a series is a show.
///
/// `tv_results` is required, even when empty: TMDB always sends it, and a 200 without it
/// (`{"success":false,"status_code":7}` from a proxy or an API change) is not an answer.
/// Read as "no results", it would be cached as a miss for a day.
#[derive(Debug, Deserialize)]
struct FindResponse {
    tv_results: Vec<TvResult>,
}

#[derive(Debug, Deserialize)]
struct TvResult {
    id: u64,
}

/// The part of a `/search/tv` answer we read: the series ids, best first (TMDB's order).
/// `results` is required for the same reason as [`FindResponse::tv_results`].
#[derive(Debug, Deserialize)]
struct SearchResponse {
    results: Vec<TvResult>,
}

pub(crate) struct TmdbClient {
    http: reqwest::Client,
    base: Url,
    auth: Auth,
    key: Secret,
    timeout: Duration,
    max_retry_wait: Duration,
    limiter: RateLimiter,
    /// Set after a 401 so the warning is logged once per rejection, not once per show; a
    /// successful call clears it.
    rejected: AtomicBool,
}

impl std::fmt::Debug for TmdbClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TmdbClient")
            .field("base", &self.base.as_str())
            .field(
                "auth",
                &match self.auth {
                    Auth::Query(_) => "api_key",
                    Auth::Bearer => "bearer",
                },
            )
            .finish_non_exhaustive()
    }
}

impl TmdbClient {
    /// Build the client for `key`. A key that looks like a JWT (`eyJ…`, TMDB's v4 read access
    /// token) goes in the `Authorization` header, anything else in the `api_key` parameter.
    pub(crate) fn new(cfg: &TmdbConfig, key: Secret) -> Result<TmdbClient, PluginError> {
        let value = key.expose().trim();
        if value.is_empty() {
            return Err(PluginError::config(
                "tmdb matcher: the `tmdb-key` secret is empty; set it with `plexsync secret set tmdb-key`",
            ));
        }
        let key = Secret::new(value.to_string());
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let auth = if key.expose().starts_with("eyJ") {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                PluginError::config(
                    "tmdb matcher: the `tmdb-key` secret contains characters that cannot be sent in an HTTP header",
                )
            })?;
            // Sensitive: hyper/reqwest never show it in their debug output.
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
            Auth::Bearer
        } else {
            Auth::Query(key.clone())
        };

        // reqwest is built with `rustls-no-provider`: without a process-wide crypto provider
        // its builder panics. The host may have installed one already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("plexsync-tmdb/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            // A redirect to another host would carry the key along; TMDB does not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                PluginError::config(format!("tmdb matcher: cannot build the HTTP client: {e}"))
            })?;
        Ok(TmdbClient {
            http,
            base: cfg.api_url.clone(),
            auth,
            key,
            timeout: cfg.timeout,
            max_retry_wait: cfg.max_retry_wait,
            limiter: RateLimiter::new(cfg.rate_requests, cfg.rate_window),
            rejected: AtomicBool::new(false),
        })
    }

    /// The TMDB series ids TMDB lists for an external id (empty: TMDB knows none).
    pub(crate) async fn find(&self, source: Source, id: &str) -> Result<Vec<u64>, PluginError> {
        let what = format!("TMDB /find/{id} ({})", source.param());
        let body = self
            .get(&["find", id], &[("external_source", source.param())], &what)
            .await?;
        let parsed: FindResponse = self.parse(&what, "/find's", &body)?;
        Ok(unique_ids(parsed.tv_results))
    }

    /// The TMDB series ids of a `/search/tv` for a title (with its first-air year when
    /// known), best first; only the first page, which is what a person would look at.
    pub(crate) async fn search_tv(
        &self,
        title: &str,
        year: Option<i32>,
    ) -> Result<Vec<u64>, PluginError> {
        let what = "TMDB /search/tv".to_string();
        let year = year.map(|y| y.to_string());
        let mut params = vec![("query", title), ("include_adult", "false")];
        if let Some(y) = &year {
            params.push(("first_air_date_year", y.as_str()));
        }
        let body = self.get(&["search", "tv"], &params, &what).await?;
        let parsed: SearchResponse = self.parse(&what, "/search/tv's", &body)?;
        Ok(unique_ids(parsed.results))
    }

    /// The names of series `id` (`/tv/{id}` with its alternative titles and translations,
    /// in one request), cleaned and bounded; None when TMDB knows no such series (404).
    pub(crate) async fn tv_names(&self, id: u64) -> Result<Option<Vec<String>>, PluginError> {
        let what = format!("TMDB /tv/{id}");
        let segment = id.to_string();
        let body = self
            .get_or_missing(
                &["tv", &segment],
                &[("append_to_response", "alternative_titles,translations")],
                &what,
            )
            .await?;
        let Some(body) = body else {
            return Ok(None);
        };
        let parsed: crate::names::TvDetails = self.parse(&what, "/tv's", &body)?;
        if parsed.id != id {
            // Names of another series would be cached as this one's for `cache_ttl`.
            return Err(PluginError::permanent(format!(
                "{what}: HTTP 200 but the answer is about series {}, not {id}",
                parsed.id
            )));
        }
        Ok(Some(parsed.names()))
    }

    /// Whether TMDB rejected the key (HTTP 401) since the last successful call: every
    /// further request would be rejected too.
    pub(crate) fn key_rejected(&self) -> bool {
        self.rejected.load(Ordering::Relaxed)
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        shape: &str,
        body: &[u8],
    ) -> Result<T, PluginError> {
        serde_json::from_slice(body).map_err(|e| {
            PluginError::permanent(format!(
                "{what}: HTTP 200 but the answer is not {shape} JSON ({}): {}",
                self.snippet(e.to_string().as_bytes()),
                self.snippet(body)
            ))
        })
    }

    /// One GET under the API base, rate-limited, waiting out short 429s; the body of a
    /// success, or the classified error.
    async fn get(
        &self,
        segments: &[&str],
        params: &[(&str, &str)],
        what: &str,
    ) -> Result<Vec<u8>, PluginError> {
        self.request(segments, params, what, false)
            .await
            .map(Option::unwrap_or_default)
    }

    /// As [`Self::get`], but a 404 is an answer (None: no such resource) rather than an
    /// error: under `/tv/{id}` it means TMDB knows no series with that id.
    async fn get_or_missing(
        &self,
        segments: &[&str],
        params: &[(&str, &str)],
        what: &str,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        self.request(segments, params, what, true).await
    }

    async fn request(
        &self,
        segments: &[&str],
        params: &[(&str, &str)],
        what: &str,
        missing_ok: bool,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let mut url = self.base.clone();
        match url.path_segments_mut() {
            Ok(mut path) => {
                path.pop_if_empty().extend(segments);
            }
            // Unreachable after config validation; an error rather than a panic.
            Err(()) => {
                return Err(PluginError::config(
                    "tmdb matcher: `api_url` cannot be a base",
                ));
            }
        }
        let mut waits = 0;
        loop {
            if let Err(left) = self.limiter.acquire(self.max_retry_wait).await {
                // TMDB asked (429) for a longer pause than a lookup waits out: every lookup
                // until it ends fails here, without a request, and says when to come back
                // (whole seconds, rounded up: never before the pause ends).
                let left = Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0));
                return Err(PluginError::transient(format!(
                    "{what}: not sent: TMDB asked us to pause (HTTP 429), {} left",
                    human(left)
                ))
                .with_retry_after(Some(left)));
            }
            let mut request = self.http.get(url.clone()).query(params);
            if let Auth::Query(key) = &self.auth {
                request = request.query(&[("api_key", key.expose())]);
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => return Err(self.transport(what, e)),
            };
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let after = retry_after(response.headers(), SystemTime::now());
                match after {
                    Some(d) if d <= self.max_retry_wait && waits < MAX_429_WAITS => {
                        waits += 1;
                        tracing::info!(wait = %human(d), "TMDB asked us to slow down (429); waiting");
                        // Every lookup waits, not just this one: they share the quota.
                        self.limiter.pause_until(tokio::time::Instant::now() + d);
                        continue;
                    }
                    _ => {
                        if let Some(d) = after {
                            self.limiter.pause_until(tokio::time::Instant::now() + d);
                        }
                        let when = after.map_or_else(
                            || "no Retry-After".to_string(),
                            |d| format!("Retry-After {}", human(d)),
                        );
                        return Err(PluginError::transient(format!(
                            "{what}: HTTP 429 Too Many Requests ({when})"
                        ))
                        .with_retry_after(after));
                    }
                }
            }
            if missing_ok && status == StatusCode::NOT_FOUND {
                self.rejected.store(false, Ordering::Relaxed);
                return Ok(None);
            }
            return self.answer(what, status, response).await.map(Some);
        }
    }

    async fn answer(
        &self,
        what: &str,
        status: StatusCode,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, PluginError> {
        let headers = response.headers().clone();
        let body = match read_limited(&mut response, BODY_LIMIT).await {
            Ok(b) => b,
            Err(e) if status.is_success() => return Err(self.transport(what, e)),
            // An error answer's body is only for the message.
            Err(_) => Vec::new(),
        };
        if status.is_success() {
            self.rejected.store(false, Ordering::Relaxed);
            return Ok(body);
        }
        let snippet = self.snippet(&body);
        match status.as_u16() {
            401 => {
                if !self.rejected.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        status = 401,
                        "TMDB rejected the TMDB key (HTTP 401); set a valid v3 API key or v4 read access token with `plexsync secret set tmdb-key`"
                    );
                }
                Err(PluginError::permanent(format!(
                    "{what}: HTTP 401: the TMDB key was rejected (set a valid one with `plexsync secret set tmdb-key`): {snippet}"
                )))
            }
            404 => Err(PluginError::permanent(format!(
                "{what}: HTTP 404 (is `api_url` the v3 API base, e.g. https://api.themoviedb.org/3?): {snippet}"
            ))),
            408 | 500..=599 => Err(PluginError::transient(format!(
                "{what}: HTTP {status}: {snippet}"
            ))
            .with_retry_after(retry_after(&headers, SystemTime::now()))),
            _ => Err(PluginError::permanent(format!(
                "{what}: HTTP {status}: {snippet}"
            ))),
        }
    }

    /// A transport failure (no status): transient, with the root cause and without the URL
    /// (which may carry `api_key`).
    fn transport(&self, what: &str, err: reqwest::Error) -> PluginError {
        if err.is_timeout() {
            return PluginError::transient(format!(
                "{what}: timed out after {}",
                human(self.timeout)
            ));
        }
        let class = if err.is_builder() {
            ErrorClass::Permanent
        } else {
            ErrorClass::Transient
        };
        let is_connect = err.is_connect();
        let err = err.without_url();
        let mut root: &dyn std::error::Error = &err;
        while let Some(cause) = root.source() {
            root = cause;
        }
        let target = match (self.base.host_str(), self.base.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => "TMDB".to_string(),
        };
        let message = if is_connect {
            format!("{what}: cannot connect to {target}: {root}")
        } else {
            format!("{what}: request failed: {err}: {root}")
        };
        let message = self.redact(&message);
        match class {
            ErrorClass::Permanent => PluginError::permanent(message),
            _ => PluginError::transient(message),
        }
    }

    /// Also the escaped forms a server quoting the request back may use (the v3 key travels in
    /// the query: an echoed URL carries it percent-encoded).
    fn redact(&self, text: &str) -> String {
        self.key.redact_in(text, "<redacted>")
    }

    /// A short single-line printable excerpt of an answer, key redacted.
    fn snippet(&self, body: &[u8]) -> String {
        let text = self.redact(&String::from_utf8_lossy(body));
        let mut out = String::new();
        for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
            if word.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
            if out.chars().count() > SNIPPET_CHARS {
                out = out.chars().take(SNIPPET_CHARS).collect();
                out.push('…');
                break;
            }
        }
        if out.is_empty() {
            "(empty body)".into()
        } else {
            out
        }
    }
}

/// Read at most `limit` bytes of a body (the rest is dropped).
async fn read_limited(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() >= room {
            break;
        }
    }
    Ok(body)
}

/// Upper bound of a `Retry-After` passed on: a broken header asking for centuries must not
/// park a show for that long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` from a response, by the plugin API's one parser, clamped.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(v, now, MAX_RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexsync_plugin_api::values::fmt_http_date;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers("3"), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers("999999999999999999999"), now),
            Some(MAX_RETRY_AFTER)
        );
        let date = fmt_http_date(now + Duration::from_secs(20));
        assert_eq!(
            retry_after(&headers(&date), now),
            Some(Duration::from_secs(20))
        );
        let past = fmt_http_date(now - Duration::from_secs(20));
        assert_eq!(retry_after(&headers(&past), now), Some(Duration::ZERO));
        for junk in ["", "-1", "1.5", "soon"] {
            assert_eq!(retry_after(&headers(junk), now), None, "{junk:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn an_echoed_key_is_redacted_escaped_or_not() {
        let cfg = TmdbConfig::from_value(&serde_json::Value::Null).unwrap();
        let c = TmdbClient::new(&cfg, Secret::new("ab/cd+ef==".into())).unwrap();
        let s = c.snippet(br#"{"status_message":"bad key","got":"ab\/cd+ef==","url":"?api_key=ab%2Fcd%2Bef%3D%3D"}"#);
        assert!(!s.contains("cd"), "{s}");
    }

    #[test]
    fn empty_key_is_a_config_error_and_debug_hides_the_key() {
        let cfg = TmdbConfig::from_value(&serde_json::Value::Null).unwrap();
        let e = TmdbClient::new(&cfg, Secret::new("  ".into())).unwrap_err();
        assert_eq!(e.class, ErrorClass::Config);
        let c = TmdbClient::new(&cfg, Secret::new("abc123secret".into())).unwrap();
        assert!(!format!("{c:?}").contains("abc123secret"));
        assert!(format!("{c:?}").contains("api_key"));
        let c = TmdbClient::new(&cfg, Secret::new("eyJhbGciOi.x.y".into())).unwrap();
        assert!(format!("{c:?}").contains("bearer"));
        let e = TmdbClient::new(&cfg, Secret::new("eyJ\nbad".into())).unwrap_err();
        assert_eq!(e.class, ErrorClass::Config);
        assert!(!e.message.contains("bad"), "{}", e.message);
    }

    #[test]
    fn snippets_are_short_single_line_and_redacted() {
        let cfg = TmdbConfig::from_value(&serde_json::Value::Null).unwrap();
        let c = TmdbClient::new(&cfg, Secret::new("k3y-value".into())).unwrap();
        assert_eq!(c.snippet(b""), "(empty body)");
        assert_eq!(c.snippet(b"a\n\n b\x1b c k3y-value"), "a b c <redacted>");
        let long = c.snippet("x ".repeat(1000).as_bytes());
        assert!(long.chars().count() <= SNIPPET_CHARS + 1 && long.ends_with('…'));
    }
}
