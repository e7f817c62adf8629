//! The plugin contract of plexsync.
//!
//! This crate owns every type that crosses the boundary between the host (the `plexsync`
//! daemon) and its plugins: what a play and a show reference look like, the tracker's
//! catalogue, what a matcher answers, what an exporter is handed, and how a plugin reports a
//! failure. It depends on nothing of the host, so a plugin crate depends on this crate alone.
//!
//! Invariants a plugin can rely on:
//! - [`ShowQuery::guids`] holds only SHOW-level identifiers (the show's `guid`, the show's
//!   `Guid` children, or a legacy episode guid whose path encodes the show id). Episode-level
//!   ids from a new-agent `Guid` array never reach a matcher.
//! - The host calls [`Matcher::set_catalogue`] before the first match and after every refresh.
//! - The host, not the plugin, decides about retries: a plugin classifies its failure with
//!   [`ErrorClass`] and returns.
//! - Building a plugin (its `build(&PluginContext)`) only reads and checks its config: it
//!   starts no program and makes no request, because the host builds plugins for offline
//!   commands, for a stored secret and on every reload. What needs the outside world to be
//!   checked goes in [`Matcher::probe`] / [`Exporter::probe`], which the host calls only when
//!   the daemon starts (`plexsync run`) and in `plexsync check`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod catalogue;
pub mod guid;
pub mod secret;
pub mod values;

pub use catalogue::{CatalogShow, Catalogue, Names, Show, Shows};
pub use secret::Secret;

/// A boxed future, so the traits stay object safe (`Box<dyn Matcher>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Version of this contract; bumped on any breaking change so the host can refuse a plugin
/// built against another one.
/// 2: `probe` on the traits; config errors carry their key path in [`PluginError::key`] only.
/// 3: [`RateLimit`] on [`ExportReceipt::rate_limit`] and [`PluginError::rate_limit`].
/// 4: [`Catalogue`] is held compactly: its lookups answer with a borrowed [`Show`], no
///    public `shows` field ([`Catalogue::iter`], [`Catalogue::shows`] for the wire).
///    Later, without a break (a provided method): [`Exporter::instance`].
pub const API_VERSION: u32 = 4;

/// What a failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Try again later (connection refused, timeout, 5xx, 429).
    Transient,
    /// Trying again will not help (4xx, malformed answer): dead letter, tell a person.
    Permanent,
    /// The plugin's configuration is wrong: refuse to start or to reload.
    Config,
}

/// The one error type plugins return.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PluginError {
    pub class: ErrorClass,
    pub message: String,
    /// For transient errors: the earliest time worth retrying (from `Retry-After`).
    pub retry_after: Option<Duration>,
    /// For config errors: the key path inside the plugin's table at fault (`timeout`,
    /// `args[1]`, `env.TOKEN`), so the host can name it in full (`matchers[2].args[1]`) and
    /// point at its line. Unset: the error is about the table as a whole (or a secret).
    /// [`PluginContext::parse_config`] sets it from the deserializer's path.
    pub key: Option<String>,
    /// What the remote said of its request budget on this (refused) answer, if anything.
    pub rate_limit: Option<RateLimit>,
}

impl PluginError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            message: message.into(),
            retry_after: None,
            key: None,
            rate_limit: None,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            message: message.into(),
            retry_after: None,
            key: None,
            rate_limit: None,
        }
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Config,
            message: message.into(),
            retry_after: None,
            key: None,
            rate_limit: None,
        }
    }
    /// Name the config key at fault.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }
    pub fn with_rate_limit(mut self, rate_limit: Option<RateLimit>) -> Self {
        self.rate_limit = rate_limit;
        self
    }
    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

/// Where a play was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaySource {
    Webhook,
    Poll,
    Backfill,
    /// Plex's library watched state (`plexsync sync`, the poller's library scan).
    Library,
    /// Plex's notification websocket.
    Live,
}

impl fmt::Display for PlaySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlaySource::Webhook => "webhook",
            PlaySource::Poll => "poll",
            PlaySource::Backfill => "backfill",
            PlaySource::Library => "library",
            PlaySource::Live => "live",
        })
    }
}

/// The show as Plex describes it: what the matcher chain works from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShowQuery {
    /// The show's ratingKey on the Plex server, when known.
    pub rating_key: Option<String>,
    pub title: String,
    pub year: Option<i32>,
    /// SHOW-level guids only (see the crate docs), e.g. `plex://show/…`, `tvdb://81189`,
    /// `com.plexapp.agents.thetvdb://81189/1/1?lang=en`.
    #[serde(default)]
    pub guids: Vec<String>,
}

/// One scored candidate show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub show_id: String,
    pub score: f32,
    /// Which rule produced it (`tmdb_id`, `tvdb_id`, `imdb_id`, `title_year`, …).
    pub method: String,
}

/// A matcher's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MatchOutcome {
    /// This is the show: proven by the method, with this confidence (0..=1).
    Definite {
        show_id: String,
        confidence: f32,
        method: String,
    },
    /// Maybe one of these, best first; not proven.
    Candidates { candidates: Vec<Candidate> },
    /// Nothing to say: the next matcher gets its turn.
    NoMatch,
}

/// Everything a plugin is handed when the host builds it from config.
pub struct PluginContext {
    /// The plugin's own table from plexsync.toml (without `kind`), as JSON.
    pub config: serde_json::Value,
    /// The secrets it asked for by name that are set (e.g. `tracker-key`, `tmdb-key`).
    pub secrets: HashMap<String, Secret>,
    /// A small persistent key-value cache owned by the host (backed by its store).
    pub cache: Arc<dyn KvCache>,
    /// Folder the config file lives in, to resolve relative paths a plugin is given.
    pub config_dir: std::path::PathBuf,
}

impl fmt::Debug for PluginContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginContext")
            .field("config", &self.config)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("config_dir", &self.config_dir)
            .finish_non_exhaustive()
    }
}

impl PluginContext {
    /// Deserialise the plugin's config table into its typed config; see [`parse_config`].
    pub fn parse_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, PluginError> {
        parse_config(&self.config)
    }
}

/// Deserialise a plugin's config table (as JSON; null, a table holding only `kind`, reads as
/// `{}`) into its typed config. The struct should use `#[serde(deny_unknown_fields)]` and
/// typed fields ([`values::ConfigDuration`], `Vec<String>`, …): a wrong type, an unknown key
/// or a value a field's deserializer refuses is a config error whose [`PluginError::key`] is
/// the exact path the deserializer was at (`timeout`, `args[1]`, `env.TOKEN`, `timout`).
pub fn parse_config<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, PluginError> {
    let empty = serde_json::Value::Object(Default::default());
    let value = if value.is_null() { &empty } else { value };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        // The value actually written there, for "got …" (none for an unknown key's path).
        let got = value_at(value, e.path()).map(values::describe_json);
        let message = values::plain_message(&e.inner().to_string(), got.as_deref(), None);
        let err = PluginError::config(message);
        // "." is the table itself (e.g. it is not a table at all).
        if path.is_empty() || path == "." {
            err
        } else {
            err.with_key(path)
        }
    })
}

/// The value at a deserializer's path in `root`, if there is one.
fn value_at<'v>(
    root: &'v serde_json::Value,
    path: &serde_path_to_error::Path,
) -> Option<&'v serde_json::Value> {
    use serde_path_to_error::Segment;
    let mut cur = root;
    for seg in path.iter() {
        cur = match seg {
            Segment::Seq { index } => cur.get(*index)?,
            Segment::Map { key } => cur.get(key.as_str())?,
            Segment::Enum { .. } => cur,
            Segment::Unknown => return None,
        };
    }
    Some(cur)
}

/// A namespaced persistent cache the host gives each plugin. Values are opaque bytes with an
/// expiry; a miss and an expired entry look the same.
pub trait KvCache: Send + Sync {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Store `value` under `key` for `ttl` (None = keep until overwritten).
    fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>);
}

/// A cached value and when it expires.
type CacheEntry = (Vec<u8>, Option<std::time::Instant>);

/// An in-memory [`KvCache`] for tests and offline runs.
#[derive(Default)]
pub struct MemoryCache {
    inner: std::sync::Mutex<HashMap<String, CacheEntry>>,
}

impl KvCache for MemoryCache {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let map = self.inner.lock().ok()?;
        let (value, expires) = map.get(key)?;
        match expires {
            Some(at) if *at <= std::time::Instant::now() => None,
            _ => Some(value.clone()),
        }
    }
    fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) {
        if let Ok(mut map) = self.inner.lock() {
            let expires = ttl.map(|t| std::time::Instant::now() + t);
            map.insert(key.to_string(), (value.to_vec(), expires));
        }
    }
}

/// A catalogue show's id and more names for it ([`Matcher::alt_titles`]).
pub type ShowNames = (String, Vec<String>);

/// Maps a Plex show to a tracker show.
pub trait Matcher: Send + Sync {
    /// The `kind` name it was built under, for logs and the `method` fallbacks.
    fn kind(&self) -> &str;
    /// A new catalogue (at start-up and after each refresh): rebuild any index here.
    fn set_catalogue(&self, catalogue: Arc<Catalogue>);
    /// Match one show. A transient error lets the chain go on to the next matcher; the host
    /// retries the play later only if no matcher produced a definite answer.
    fn match_show<'a>(
        &'a self,
        query: &'a ShowQuery,
    ) -> BoxFuture<'a, Result<MatchOutcome, PluginError>>;
    /// Check what building could not: start the program, shake hands. Called by the host only
    /// when the daemon starts and in `plexsync check`; a config-class error refuses the
    /// start. Default: nothing to check.
    fn probe(&self) -> BoxFuture<'_, Result<(), PluginError>> {
        Box::pin(async { Ok(()) })
    }
    /// A last try for a show the whole chain found no candidate for (every matcher answered
    /// without a definite answer or any candidate): a costlier or looser lookup (an outside
    /// search by title) that gives a person choices. The host takes what it answers as
    /// candidates only, never as a mapping, whatever the confidence. Default: nothing.
    fn fallback<'a>(
        &'a self,
        query: &'a ShowQuery,
    ) -> BoxFuture<'a, Result<MatchOutcome, PluginError>> {
        let _ = query;
        Box::pin(async { Ok(MatchOutcome::NoMatch) })
    }
    /// Search the catalogue for a person picking a show by hand (a search box, `plexsync
    /// shows search`): the shows whose names resemble `text`, best first, at most `limit`,
    /// with `year` (when given) favouring shows of that year. Unlike [`Matcher::match_show`]
    /// nothing is decided from the answer, so it ranks loosely. Synchronous: it must answer
    /// from what the plugin holds in memory (its index of the last catalogue), never from
    /// the outside world. Default: this matcher cannot search (empty).
    fn search(&self, text: &str, year: Option<i32>, limit: usize) -> Vec<Candidate> {
        let _ = (text, year, limit);
        Vec::new()
    }
    /// More names for catalogue shows this plugin can name other ways (an outside source's
    /// alternative titles and translations): `(show id, names)` for some of `shows`, any
    /// order, shows without new names left out. The host asks every matcher in the
    /// background after each catalogue load or refresh (and after a reload), in slices of
    /// the catalogue, merges the names into [`CatalogShow::alt_titles`] and hands the
    /// enriched catalogue to every matcher with [`Matcher::set_catalogue`]. Such names find
    /// candidates, never mappings.
    ///
    /// It may be slow (rate-limited outside calls) and should cache what it learns, so a
    /// second pass over the same shows costs no request. An error ends the host's pass (it
    /// keeps what earlier slices answered and asks again after the next refresh or reload),
    /// so a plugin should skip a show it cannot name rather than fail the whole slice.
    /// Default: nothing to add.
    fn alt_titles<'a>(
        &'a self,
        shows: &'a [CatalogShow],
    ) -> BoxFuture<'a, Result<Vec<ShowNames>, PluginError>> {
        let _ = shows;
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// One episode in an export batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportEpisode {
    pub season: u32,
    pub episode: u32,
    /// Unix seconds, UTC.
    pub watched_at: i64,
}

/// A batch of watched episodes of one tracker show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportBatch {
    pub show_id: String,
    /// Stable for every attempt of this batch.
    pub idempotency_key: String,
    pub episodes: Vec<ExportEpisode>,
}

/// What the tracker said about a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReceipt {
    pub marked: u64,
    pub already_watched: u64,
    /// Episodes the tracker does not know (season, episode).
    pub unknown: Vec<(u32, u32)>,
    /// What the tracker said of its request budget with this answer (rate-limit headers), so
    /// the host plans the next requests within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// A remote's request budget as it announced it (`RateLimit-*` / `X-RateLimit-*` headers,
/// read by [`values::parse_rate_limit`]): every field is optional because servers send any
/// subset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests allowed in the current window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Requests left in the current window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Until the window resets (and `remaining` is back to `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub reset_after: Option<Duration>,
}

/// `Option<Duration>` as whole seconds on the wire (the exec plugin's JSON lines).
mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

/// A show to create in the tracker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewShow {
    pub title: String,
    pub year: Option<i32>,
    pub tmdb_id: Option<u64>,
    pub tvdb_id: Option<u64>,
    pub imdb_id: Option<String>,
}

/// Delivers watched episodes to a tracker and provides its catalogue.
pub trait Exporter: Send + Sync {
    fn kind(&self) -> &str;
    /// The tracker's shows.
    fn fetch_catalogue(&self) -> BoxFuture<'_, Result<Vec<CatalogShow>, PluginError>>;
    /// Mark the batch's episodes watched.
    fn export<'a>(
        &'a self,
        batch: &'a ExportBatch,
    ) -> BoxFuture<'a, Result<ExportReceipt, PluginError>>;
    /// Create a show; returns its tracker id.
    fn create_show<'a>(&'a self, show: &'a NewShow) -> BoxFuture<'a, Result<String, PluginError>>;
    /// As [`Matcher::probe`]. Default: nothing to check (an unreachable tracker is no reason
    /// to refuse a start: the outbox waits for it).
    fn probe(&self) -> BoxFuture<'_, Result<(), PluginError>> {
        Box::pin(async { Ok(()) })
    }
    /// Which tracker this exporter talks to (e.g. its base URL): show ids from one tracker
    /// mean nothing to another, so the host keeps a catalogue, live or cached, only for the
    /// instance that answered it, and matches nothing against another's. Settings that do not
    /// change the tracker (a timeout, a key) must not change it. Never a secret: it is stored
    /// and logged. Default: the kind (every instance of a kind counts as one tracker).
    fn instance(&self) -> String {
        self.kind().to_string()
    }
}

/// Normalise an IMDb id for comparison (`tt0123` and `TT0123` are the same).
pub fn normalize_imdb(id: &str) -> String {
    id.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: HashMap<String, String>,
        #[serde(default)]
        timeout: Option<values::ConfigDuration>,
        #[serde(default)]
        retry: Option<Retry>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Retry {
        max: u32,
    }

    fn key_of(v: serde_json::Value) -> Option<String> {
        let e = parse_config::<Sample>(&v).unwrap_err();
        assert_eq!(e.class, ErrorClass::Config);
        e.key
    }

    #[test]
    fn config_errors_carry_the_exact_key_path() {
        assert!(parse_config::<Sample>(&serde_json::Value::Null).is_ok());
        assert!(parse_config::<Sample>(&json!({"timeout": "1h 30m"})).is_ok());
        assert_eq!(
            key_of(json!({"args": ["a", 1]})).as_deref(),
            Some("args[1]")
        );
        assert_eq!(key_of(json!({"args": "a"})).as_deref(), Some("args"));
        assert_eq!(
            key_of(json!({"env": {"TOKEN": 5}})).as_deref(),
            Some("env.TOKEN")
        );
        assert_eq!(key_of(json!({"timeout": "5"})).as_deref(), Some("timeout"));
        assert_eq!(key_of(json!({"timeout": 5})).as_deref(), Some("timeout"));
        assert_eq!(key_of(json!({"timout": "5s"})).as_deref(), Some("timout"));
        assert_eq!(
            key_of(json!({"retry": {"max": "x"}})).as_deref(),
            Some("retry.max")
        );
        assert_eq!(
            key_of(json!({"retry": {"mx": 1}})).as_deref(),
            Some("retry.mx")
        );
        assert_eq!(key_of(json!("flat")), None);
        let e = parse_config::<Sample>(&json!({"timeout": "5"})).unwrap_err();
        assert!(e.message.contains("is not a duration"), "{e}");
    }

    /// Plugins' config errors read like the host's: what was expected and what was written,
    /// in words, never a Rust type name.
    #[test]
    fn config_errors_are_in_plain_words() {
        let msg = |v: serde_json::Value| parse_config::<Sample>(&v).unwrap_err().message;
        assert_eq!(
            msg(json!({"retry": {"max": "x"}})),
            "expected a whole number from 0 to 4294967295, got the string \"x\""
        );
        assert_eq!(
            msg(json!({"retry": {"max": -1}})),
            "expected a whole number from 0 to 4294967295, got the number -1"
        );
        assert_eq!(
            msg(json!({"args": "a"})),
            "expected a list, got the string \"a\""
        );
        assert_eq!(
            msg(json!({"retry": 5})),
            "expected a table, got the number 5"
        );
        assert_eq!(
            msg(json!({"env": {"T": true}})),
            "expected a string, got true"
        );
        assert_eq!(
            msg(json!({"timeout": 5})),
            "expected a duration string like \"30s\", \"5m\", \"1h 30m\" or \"2 days\", got the number 5"
        );
        assert!(
            msg(json!({"timout": 1}))
                .starts_with("unknown key `timout`; the keys here are: args, env, timeout, retry")
        );
    }
}
