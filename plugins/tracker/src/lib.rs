//! The `tracker` exporter plugin of plexsync: it delivers watched episodes to the self-hosted
//! TV tracker over the tracker's HTTP API, creates shows there, and fetches the tracker's
//! catalogue of shows for the matchers.
//!
//! This file owns the plugin's entry point ([`build`]), the [`TrackerExporter`] and the HTTP
//! plumbing its three calls share. The config table lives in `config`, the JSON wire shapes
//! and the RFC 3339 formatter in `wire`, and failure classification and redaction in `error`.
//! The API contract itself is written down in this crate's README.md.
//!
//! The plugin never retries: it classifies each failure (transient / permanent / config) and
//! returns, and the host's outbox decides when to try again.

mod config;
mod error;
mod stream;
mod wire;

use std::fmt;
use std::time::{Duration, SystemTime};

use plexsync_plugin_api::{
    BoxFuture, CatalogShow, ErrorClass, ExportBatch, ExportReceipt, Exporter, NewShow,
    PluginContext, PluginError, RateLimit,
};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::error::Redactor;

/// The `kind` this plugin is registered under in plexsync.toml.
pub const KIND: &str = "tracker";

/// Name of the secret holding the tracker's API key (sent as `Authorization: Bearer <key>`).
pub const SECRET_KEY: &str = "tracker-key";

/// Every secret the plugin asks the host for.
pub const SECRETS: &[&str] = &[SECRET_KEY];

/// Cap on the connect phase: a tracker that cannot accept a TCP connection in 10 s is down,
/// whatever the overall `timeout` allows for a large catalogue.
const CONNECT_TIMEOUT_CAP: Duration = Duration::from_secs(10);

/// Largest catalogue read. A catalogue of 100 000 shows is a few tens of MB at most; anything
/// bigger is not a catalogue and must not exhaust the daemon's memory.
const SUCCESS_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Largest answer to an export or a create read (a receipt or an id is a few hundred bytes):
/// up to `max_in_flight` (64) exports wait on answers at once, so 64 MiB each could hold 4 GiB.
const ANSWER_BODY_LIMIT: usize = 1024 * 1024;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The exporter built from a `[tracker]` table. Cheap to share: it holds one pooled client.
pub struct TrackerExporter {
    client: reqwest::Client,
    base: Url,
    timeout: Duration,
    redactor: Redactor,
}

impl fmt::Debug for TrackerExporter {
    // By hand so the key (kept for redaction) can never be printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerExporter")
            .field("base", &self.base.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Build the exporter from its config table and the `tracker-key` secret.
///
/// Config keys: `url` (required, http or https), `timeout` (default `"30s"`; `ms`, `s`, `m`),
/// `user_agent` (optional). Any other key is refused with a config error naming it.
///
/// # Errors
///
/// A [`PluginError`] of class `Config` naming the key when the table or the `tracker-key`
/// secret is unusable.
pub fn build(ctx: &PluginContext) -> Result<TrackerExporter, PluginError> {
    let cfg = config::parse(ctx)?;

    let key = ctx.secrets.get(SECRET_KEY).cloned();
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(key) = &key {
        if key.expose().trim().is_empty() {
            return Err(PluginError::config(format!(
                "tracker: the `{SECRET_KEY}` secret is empty"
            )));
        }
        // Never echo the value: say what is wrong, not what it is.
        let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
            PluginError::config(format!(
                "tracker: the `{SECRET_KEY}` secret contains characters that cannot be sent in an HTTP header"
            ))
        })?;
        // Marks it sensitive for hyper/reqwest, so it never appears in their debug output.
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }

    // reqwest is built with `rustls-no-provider`: without a process-wide crypto provider its
    // client builder panics. The host may have installed one already, which is fine, so the
    // result is ignored.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let client = reqwest::Client::builder()
        .user_agent(cfg.user_agent)
        .default_headers(headers)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(CONNECT_TIMEOUT_CAP))
        // A redirected POST turns into a GET without its body (301/302), and following one to
        // another host would drop or leak the key: the user fixes `url` instead.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| PluginError::config(format!("tracker: cannot build the HTTP client: {e}")))?;

    Ok(TrackerExporter {
        client,
        base: cfg.base,
        timeout: cfg.timeout,
        redactor: Redactor::new(key),
    })
}

/// One request about to be made: its URL and the label every message about it starts with.
struct Call {
    url: Url,
    /// `METHOD /path` (no host, no query), e.g. `POST /api/plexsync/shows/42/watched`.
    label: String,
}

impl TrackerExporter {
    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    fn call(&self, method: &Method, segments: &[&str]) -> Result<Call, PluginError> {
        let mut url = self.base.clone();
        match url.path_segments_mut() {
            Ok(mut path) => {
                // `pop_if_empty` makes `…/plexsync/` and `…/plexsync` the same base.
                path.pop_if_empty().extend(segments);
            }
            Err(()) => {
                // Unreachable after config validation (http(s) URLs with a host are bases);
                // kept as an error rather than a panic.
                return Err(PluginError::config(
                    "tracker: `url` cannot have paths appended",
                ));
            }
        }
        let label = format!("{method} {}", url.path());
        Ok(Call { url, label })
    }

    fn fail(&self, class: ErrorClass, message: String) -> PluginError {
        self.redactor.error(class, &format!("tracker: {message}"))
    }

    /// Send a request; on a 2xx answer return its status and body, otherwise a classified
    /// error naming the call, the status and a snippet of the answer.
    async fn send(
        &self,
        call: &Call,
        request: RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), PluginError> {
        self.send_limited(call, request)
            .await
            .map(|(status, body, _)| (status, body))
    }

    /// [`Self::send`], with what the tracker said of its request budget (on a refusal it
    /// rides on the error).
    async fn send_limited(
        &self,
        call: &Call,
        request: RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>, Option<RateLimit>), PluginError> {
        let (status, mut response) = self.respond(call, request).await?;
        let rate_limit = error::rate_limit(response.headers(), SystemTime::now());
        match read_limited(&mut response, ANSWER_BODY_LIMIT).await {
            Ok((body, false)) => Ok((status, body, rate_limit)),
            Ok((_, true)) => Err(self.too_large(call, status, ANSWER_BODY_LIMIT)),
            Err(e) => Err(self.body_failed(call, status, e)),
        }
    }

    fn too_large(&self, call: &Call, status: StatusCode, limit: usize) -> PluginError {
        self.fail(
            ErrorClass::Permanent,
            format!(
                "{}: HTTP {status}: answer is larger than {} MiB",
                call.label,
                limit / (1024 * 1024)
            ),
        )
    }

    /// The status arrived but the body did not (reset, timeout): try again.
    fn body_failed(&self, call: &Call, status: StatusCode, e: reqwest::Error) -> PluginError {
        let (_, why) = error::transport(e, self.timeout, &target(&call.url));
        self.fail(
            ErrorClass::Transient,
            format!(
                "{}: HTTP {status}: reading the answer failed: {why}",
                call.label
            ),
        )
    }

    /// Send a request; on a 2xx answer return its status and the response with its body
    /// unread, otherwise a classified error (see [`Self::send`]).
    async fn respond(
        &self,
        call: &Call,
        request: RequestBuilder,
    ) -> Result<(StatusCode, Response), PluginError> {
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let (class, why) = error::transport(e, self.timeout, &target(&call.url));
                return Err(self.fail(class, format!("{}: {why}", call.label)));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok((status, response));
        }
        let rate_limit = error::rate_limit(response.headers(), SystemTime::now());

        let class = error::status_class(status);
        let retry_after = match class {
            ErrorClass::Transient => error::retry_after(response.headers(), SystemTime::now()),
            _ => None,
        };
        let location = status
            .is_redirection()
            .then(|| redirect_target(&call.url, response.headers()));
        // The error body is only for the message; failing to read it changes nothing.
        let (mut body, cut) = read_limited(&mut response, error::ERROR_BODY_LIMIT)
            .await
            .unwrap_or_default();
        if cut {
            self.redactor.trim_cut(&mut body);
        }
        let snippet = error::snippet(&body, &self.redactor);
        let message = match location {
            Some(to) => format!(
                "{}: HTTP {status}: the tracker redirects to {to}; redirects are not followed, set `url` to the final address: {snippet}",
                call.label
            ),
            None => format!("{}: HTTP {status}: {snippet}", call.label),
        };
        Err(self
            .fail(class, message)
            .with_retry_after(retry_after)
            .with_rate_limit(rate_limit))
    }

    /// Decode a 2xx body; a body that is not the endpoint's JSON is permanent (retrying
    /// returns the same thing) and the message says which endpoint sent it.
    fn decode<T: DeserializeOwned>(
        &self,
        call: &Call,
        status: StatusCode,
        body: &[u8],
    ) -> Result<T, PluginError> {
        serde_json::from_slice(body).map_err(|e| {
            self.fail(
                ErrorClass::Permanent,
                format!(
                    "{}: HTTP {status} but the answer is not this endpoint's JSON ({}): {}",
                    call.label,
                    // serde quotes rejected values in full; keep that as short as the body.
                    error::snippet(e.to_string().as_bytes(), &self.redactor),
                    error::snippet(body, &self.redactor)
                ),
            )
        })
    }

    /// `GET /shows`, parsed as it arrives ([`stream`]): memory holds the shows and one
    /// element in progress, never the whole body and its parse at once.
    async fn fetch_catalogue_impl(&self) -> Result<Vec<CatalogShow>, PluginError> {
        let call = self.call(&Method::GET, &["shows"])?;
        let request = self.client.get(call.url.clone());
        let (status, mut response) = self.respond(&call, request).await?;
        let mut parse = stream::ArrayStream::new();
        let mut read = 0usize;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Err(self.body_failed(&call, status, e)),
            };
            read += chunk.len();
            if read > SUCCESS_BODY_LIMIT {
                return Err(self.too_large(&call, status, SUCCESS_BODY_LIMIT));
            }
            if let Err(e) = parse.feed(&chunk) {
                return Err(self.not_a_catalogue(&call, status, parse.head(), e));
            }
        }
        // `finish` consumes the parser; the head is kept for its message.
        let head = parse.head().to_vec();
        let parsed = parse
            .finish()
            .map_err(|e| self.not_a_catalogue(&call, status, &head, e))?;
        if let Some(first) = &parsed.flaws.first {
            // Once per fetch: the tracker's data needs fixing, but the rows that fit are used.
            tracing::warn!(
                endpoint = %call.label,
                shows = parsed.shows.len(),
                rows_skipped = parsed.flaws.skipped,
                rows_with_fields_unset = parsed.flaws.trimmed,
                first_row = first.row,
                first_id = first.id.as_deref().map(|id| error::snippet(id.as_bytes(), &self.redactor)),
                first_reason = %error::snippet(first.reason.as_bytes(), &self.redactor),
                "tracker catalogue: rows that do not fit the contract were left out or loaded without the fields that do not fit"
            );
        }
        Ok(parsed.shows)
    }

    /// A 2xx catalogue answer that is not a JSON array of shows: permanent, like [`Self::decode`].
    fn not_a_catalogue(
        &self,
        call: &Call,
        status: StatusCode,
        head: &[u8],
        e: stream::StreamError,
    ) -> PluginError {
        let why = match e {
            stream::StreamError::Shape(s) => s,
            stream::StreamError::Element(e) => e.to_string(),
            stream::StreamError::TooLarge => format!(
                "a show object is larger than {} KiB",
                stream::MAX_ELEMENT / 1024
            ),
            stream::StreamError::TooMany => format!(
                "more than {} shows, the most a catalogue may hold",
                stream::MAX_SHOWS
            ),
            stream::StreamError::NoShowFits(f) => format!(
                "no row has a usable id and title; row {}: {}",
                f.row, f.reason
            ),
        };
        self.fail(
            ErrorClass::Permanent,
            format!(
                "{}: HTTP {status} but the answer is not this endpoint's JSON ({}): {}",
                call.label,
                error::snippet(why.as_bytes(), &self.redactor),
                error::snippet(head, &self.redactor)
            ),
        )
    }

    async fn export_impl(&self, batch: &ExportBatch) -> Result<ExportReceipt, PluginError> {
        // Nothing to mark: no request, so a tracker that refuses empty lists cannot turn a
        // no-op into a dead letter.
        if batch.episodes.is_empty() {
            return Ok(ExportReceipt::default());
        }
        let endpoint = "POST /shows/{id}/watched";
        let id = batch.show_id.as_str();
        if matches!(id, "" | "." | "..") {
            // The URL library drops "." and ".." segments (and "" would address `/shows//…`),
            // so such an id would silently hit another endpoint.
            return Err(self.fail(
                ErrorClass::Permanent,
                format!("{endpoint}: show id {id:?} cannot be used as a URL path segment"),
            ));
        }
        if batch.idempotency_key.is_empty() {
            return Err(self.fail(
                ErrorClass::Permanent,
                format!("{endpoint}: the batch has no idempotency key"),
            ));
        }
        let idempotency = HeaderValue::from_str(&batch.idempotency_key).map_err(|_| {
            self.fail(
                ErrorClass::Permanent,
                format!("{endpoint}: the idempotency key is not a valid HTTP header value"),
            )
        })?;

        let mut episodes = Vec::with_capacity(batch.episodes.len());
        for ep in &batch.episodes {
            let watched_at = wire::format_rfc3339(ep.watched_at).ok_or_else(|| {
                self.fail(
                    ErrorClass::Permanent,
                    format!(
                        "{endpoint}: S{:02}E{:02} has watched_at {} (unix seconds), outside the years 0000-9999",
                        ep.season, ep.episode, ep.watched_at
                    ),
                )
            })?;
            episodes.push(wire::WatchedEpisode {
                season: ep.season,
                episode: ep.episode,
                watched_at,
            });
        }

        let call = self.call(&Method::POST, &["shows", id, "watched"])?;
        let request = self
            .client
            .post(call.url.clone())
            .header(IDEMPOTENCY_KEY, idempotency)
            .json(&wire::WatchedRequest { episodes });
        let (status, body, rate_limit) = self.send_limited(&call, request).await?;
        let answer: wire::WatchedResponse = self.decode(&call, status, &body)?;
        Ok(ExportReceipt {
            rate_limit,
            ..answer.into()
        })
    }

    async fn create_show_impl(&self, show: &NewShow) -> Result<String, PluginError> {
        let call = self.call(&Method::POST, &["shows"])?;
        let request = self
            .client
            .post(call.url.clone())
            .json(&wire::CreateShowRequest {
                title: &show.title,
                year: show.year,
                tmdb_id: show.tmdb_id,
                tvdb_id: show.tvdb_id,
                imdb_id: show.imdb_id.as_deref(),
            });
        let (status, body) = self.send(&call, request).await?;
        let created: wire::CreatedShow = self.decode(&call, status, &body)?;
        if created.id.trim().is_empty() {
            return Err(self.fail(
                ErrorClass::Permanent,
                format!(
                    "{}: HTTP {status} but the new show's id is empty",
                    call.label
                ),
            ));
        }
        Ok(created.id)
    }
}

impl Exporter for TrackerExporter {
    fn kind(&self) -> &str {
        KIND
    }

    fn fetch_catalogue(&self) -> BoxFuture<'_, Result<Vec<CatalogShow>, PluginError>> {
        Box::pin(self.fetch_catalogue_impl())
    }

    fn export<'a>(
        &'a self,
        batch: &'a ExportBatch,
    ) -> BoxFuture<'a, Result<ExportReceipt, PluginError>> {
        Box::pin(self.export_impl(batch))
    }

    fn create_show<'a>(&'a self, show: &'a NewShow) -> BoxFuture<'a, Result<String, PluginError>> {
        Box::pin(self.create_show_impl(show))
    }

    /// The base URL without what does not pick the tracker (user info, query, fragment, a
    /// trailing slash): `https://tracker.example:443/plexsync`.
    fn instance(&self) -> String {
        instance_of(&self.base)
    }
}

fn instance_of(base: &Url) -> String {
    let host = base.host_str().unwrap_or("").to_ascii_lowercase();
    let port = base
        .port_or_known_default()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!(
        "{}://{host}{port}{}",
        base.scheme(),
        base.path().trim_end_matches('/')
    )
}

/// Read at most `limit` bytes of a body; the flag says whether it was cut there.
async fn read_limited(
    response: &mut Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// `host:port` of a URL, for connection failures.
fn target(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Where a 3xx points, for the message: scheme, host, port and path only, since a query or
/// user info could carry credentials.
fn redirect_target(from: &Url, headers: &HeaderMap) -> String {
    let Some(location) = headers.get(LOCATION).and_then(|v| v.to_str().ok()) else {
        return "(no Location header)".into();
    };
    match from.join(location) {
        Ok(mut to) => {
            to.set_query(None);
            to.set_fragment(None);
            // Both only fail for URLs without a host, where there is nothing to remove.
            let _ = to.set_username("");
            let _ = to.set_password(None);
            // Bounded like any other echoed text.
            error::snippet(to.as_str().as_bytes(), &Redactor::default())
        }
        Err(_) => "(an unparseable Location)".into(),
    }
}
