//! The admin API's typed requests and answers: what `/api/…` sends and receives as JSON. The
//! HTTP handlers ([`crate::admin`]) build these, the CLI deserialises the same types whether it
//! asked the daemon over its socket or served the request in process, and the web page reads
//! the same JSON. One definition, so the three cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::model::BackfillStatus;
use crate::model::{Activity, ActivitySource, ActivityStatus, Batch};
use crate::state::RuntimeStatus;
use crate::store::ops::Counts;

/// `GET /api/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// False when the CLI answered from the store because no daemon runs.
    pub running: bool,
    pub version: String,
    pub uptime_secs: u64,
    pub listen: String,
    /// None when no usable address is known (`listen` is a wildcard and no `public_url`).
    pub webhook_url: Option<String>,
    /// Which interface address the URL uses, or why there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url_note: Option<String>,
    pub plex_url: String,
    pub plex_token_set: bool,
    pub tracker_key_set: bool,
    #[serde(flatten)]
    pub runtime: RuntimeStatus,
    pub counts: Counts,
    /// Poll cursors: per (server, account), history up to `viewed_at` is journaled.
    pub cursors: Vec<CursorView>,
    // -- health (issue 12) --
    /// What needs attention, worst first; empty: all good ([`crate::health`]).
    #[serde(default)]
    pub health: Vec<HealthItem>,
    /// When a daemon first started on this store: `webhook_loss` counts plays viewed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_started_at: Option<i64>,
    // -- issue 13, the live source --
    /// Plex's notification websocket ([`LiveStatus`]).
    #[serde(default)]
    pub live: LiveStatus,
    /// Issue 15: how exports stand against the tracker's request budget (daemon only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_budget: Option<ExportBudget>,
}

// ---- issue 15, exports (helper EXPORTS) ----

pub use crate::export_board::ExportBudget;

pub use crate::health::{Component, HealthItem, Severity};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CursorView {
    pub key: String,
    pub viewed_at: i64,
    pub updated_at: i64,
}

/// `GET /api/activity`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActivityPage {
    pub items: Vec<Activity>,
    pub total: usize,
    pub page: usize,
}

// ---- issue 12, activity and outbox (helper ACTIVITY) ----

/// The highest activity `page` asked for: even one row a page, no log kept for its retention
/// comes near it, and a bound keeps the page arithmetic far from overflowing.
pub const MAX_ACTIVITY_PAGE: usize = 1_000_000;

/// `GET /api/activity?status=&source=&account=&q=&page=&per_page=`: the one request type
/// the CLI serialises into the query string and the handler parses, online and offline.
/// `status` / `source` absent (or `all`, or empty) = any.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityQuery {
    pub status: Option<ActivityStatus>,
    pub source: Option<ActivitySource>,
    pub account: Option<String>,
    pub q: Option<String>,
    pub page: usize,
    pub per_page: usize,
}

impl Default for ActivityQuery {
    fn default() -> Self {
        Self {
            status: None,
            source: None,
            account: None,
            q: None,
            page: 1,
            per_page: 50,
        }
    }
}

/// The query string's shape: what travels, before the enumerations are checked.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ActivityQueryWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per_page: Option<String>,
}

/// `all` plus every status: the choices `--status` and `?status=` accept.
pub const ACTIVITY_STATUS_CHOICES: [&str; 5] = ["all", "success", "failed", "ignored", "duplicate"];
/// `all` plus every source: the choices `--source` and `?source=` accept.
pub const ACTIVITY_SOURCE_CHOICES: [&str; 7] = [
    "all", "webhook", "poll", "backfill", "export", "library", "live",
];

impl ActivityQuery {
    /// `status` as the CLI and the API name it; `all` (or empty) = any.
    pub fn parse_status(s: &str) -> Result<Option<ActivityStatus>, String> {
        match s {
            "" | "all" => Ok(None),
            s => ActivityStatus::parse(s).map(Some).ok_or_else(|| {
                format!(
                    "status: unknown value {s:?}; choose one of {}",
                    ACTIVITY_STATUS_CHOICES.join(", ")
                )
            }),
        }
    }

    /// `source` as the CLI and the API name it; `all` (or empty) = any.
    pub fn parse_source(s: &str) -> Result<Option<ActivitySource>, String> {
        match s {
            "" | "all" => Ok(None),
            s => ActivitySource::parse(s).map(Some).ok_or_else(|| {
                format!(
                    "source: unknown value {s:?}; choose one of {}",
                    ACTIVITY_SOURCE_CHOICES.join(", ")
                )
            }),
        }
    }

    /// The query string (percent-encoded, without `?`).
    pub fn to_query_string(&self) -> String {
        let wire = ActivityQueryWire {
            status: self.status.map(|s| s.as_str().to_string()),
            source: self.source.map(|s| s.as_str().to_string()),
            account: self.account.clone().filter(|a| !a.is_empty()),
            q: self.q.clone().filter(|q| !q.is_empty()),
            page: Some(self.page.to_string()),
            per_page: Some(self.per_page.to_string()),
        };
        serde_urlencoded::to_string(&wire).unwrap_or_default()
    }

    /// Parse a query string (percent-encoded, without `?`); the error names what was wrong
    /// and, for an enumeration, the choices.
    pub fn from_query_string(raw: &str) -> Result<Self, String> {
        let w: ActivityQueryWire =
            serde_urlencoded::from_str(raw).map_err(|e| format!("query: {e}"))?;
        let number = |name: &str, v: Option<String>, default: usize| -> Result<usize, String> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(default),
                Some(t) => t
                    .parse::<usize>()
                    .map_err(|_| format!("{name}: {t:?} is not a whole number")),
            }
        };
        Ok(Self {
            status: Self::parse_status(w.status.as_deref().unwrap_or(""))?,
            source: Self::parse_source(w.source.as_deref().unwrap_or(""))?,
            account: w.account.filter(|a| !a.trim().is_empty()),
            q: w.q.filter(|q| !q.trim().is_empty()),
            page: match number("page", w.page, 1)? {
                p if p > MAX_ACTIVITY_PAGE => {
                    return Err(format!(
                        "page: {p} is past any page there can be (at most {MAX_ACTIVITY_PAGE})"
                    ));
                }
                p => p.max(1),
            },
            per_page: number("per_page", w.per_page, 50)?.clamp(1, 500),
        })
    }

    /// What the store filters on.
    pub fn filter(&self) -> crate::store::ops::ActivityFilter {
        crate::store::ops::ActivityFilter {
            status: self.status,
            source: self.source,
            account: self.account.clone(),
            q: self.q.clone(),
        }
    }
}

/// One episode of an outbox batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpisodeRef {
    pub season: u32,
    pub episode: u32,
}

/// `GET /api/outbox` `batches` item: a pending or dead-lettered export batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxBatchView {
    pub id: u64,
    pub show_id: String,
    /// The tracker show's title when the catalogue knows it, else the Plex show's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_title: Option<String>,
    /// The Plex show's title, kept with the batch's episodes (or, for episodes queued before
    /// it was kept, from the journal while it still has the plays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub episodes: Vec<EpisodeRef>,
    pub attempts: u32,
    /// Pending batches: when the next attempt is due (unix ms). Absent for dead letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub dead: bool,
}

/// `GET /api/outbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxView {
    pub counts: Counts,
    /// Pending batches (by next attempt), then dead letters.
    #[serde(default)]
    pub batches: Vec<OutboxBatchView>,
    pub dead_letters: Vec<Batch>,
}

// ---- end of issue 12, activity and outbox ----

/// `POST /api/outbox/retry`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Requeued {
    /// Dead letters put back (with a new key).
    pub requeued_batches: usize,
    /// Batches waiting out a back-off, made due now (same key).
    #[serde(default)]
    pub brought_forward: usize,
}

/// `GET /api/webhook-url`, `GET /api/web-url`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicUrl {
    pub url: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// `GET /api/secrets/sealed`, over the admin socket only: every stored secret still sealed
/// under the master key (`plexsync check` and `match` open them with the key file, as they
/// would from the store, which the running daemon holds alone).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedSecrets {
    pub secrets: Vec<NamedSealed>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedSealed {
    pub name: String,
    #[serde(flatten)]
    pub sealed: crate::secrets::SealedSecret,
}

/// `GET /api/backfill` (null before the first backfill).
pub type BackfillView = Option<BackfillStatus>;

/// A list answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Items<T> {
    pub items: Vec<T>,
    pub total: usize,
}

/// A Plex show as the admin API shows it: what Plex says of it (the year and ids from its
/// metadata when the webhook lacked them), with the external ids parsed from its guids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlexShowView {
    pub rating_key: Option<String>,
    pub title: String,
    pub year: Option<i32>,
    /// The Plex library section it is in, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    pub guids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmdb_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tvdb_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imdb_id: Option<String>,
}

/// A tracker show; title and year are None when the show is not in the cached catalogue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrackerShowView {
    pub id: String,
    pub title: Option<String>,
    pub year: Option<i32>,
}

/// One candidate of a conflict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidateView {
    pub show_id: String,
    pub title: Option<String>,
    pub year: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmdb_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tvdb_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imdb_id: Option<String>,
    pub score: f32,
    pub method: String,
}

/// `GET /api/conflicts` items.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConflictView {
    pub id: String,
    pub plex: PlexShowView,
    /// Why no matcher could decide.
    pub reason: String,
    pub held_plays: usize,
    /// When the first and the last held play were viewed (unix s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_play_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_play_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Empty while `waiting` says why.
    pub candidates: Vec<CandidateView>,
    /// Set while the conflict's candidates cannot be offered: they were matched against
    /// another tracker than the current one (a reload or restart named another), or the
    /// daemon has not read the tracker's catalogue yet. It is matched again once it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// Where a Plex show stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingStatus {
    Mapped,
    Ignored,
    Conflict,
}

impl MappingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MappingStatus::Mapped => "mapped",
            MappingStatus::Ignored => "ignored",
            MappingStatus::Conflict => "conflict",
        }
    }
}

/// `GET /api/mappings` items.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MappingView {
    pub id: String,
    pub plex: PlexShowView,
    pub tracker: Option<TrackerShowView>,
    pub status: MappingStatus,
    pub method: Option<String>,
    pub confidence: Option<f32>,
    pub manual: bool,
    pub sync_enabled: bool,
    /// Plays held back: in the conflict, or journaled while the show is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_plays: Option<usize>,
    pub plays_synced: u64,
    pub last_synced_at: Option<i64>,
    /// When a person or the resolver last changed it (unix s).
    #[serde(default)]
    pub updated_at: i64,
}

/// `POST /api/conflicts/{id}/resolve` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub action: ResolveAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_id: Option<ShowId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolveAction {
    Select,
    Create,
    Ignore,
}

/// A tracker show id as clients send it: a string, or a number for trackers with integer ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ShowId {
    Text(String),
    Number(serde_json::Number),
}

impl ShowId {
    /// The id as the catalogue keys it; None when empty.
    pub fn into_id(self) -> Option<String> {
        match self {
            ShowId::Text(s) if !s.is_empty() => Some(s),
            ShowId::Text(_) => None,
            ShowId::Number(n) => Some(n.to_string()),
        }
    }
}

/// `POST /api/conflicts/{id}/resolve` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolved {
    pub resolved: bool,
    pub plays_released: usize,
    pub episodes_queued: usize,
}

/// `PATCH /api/mappings/{id}` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_id: Option<ShowId>,
}

/// `PATCH /api/mappings/{id}` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MappingChanged {
    pub id: String,
    pub show_id: String,
    pub sync_enabled: bool,
    pub method: String,
    /// Held plays the change released (an ignored show mapped, sync turned back on, a
    /// conflict decided).
    #[serde(default)]
    pub plays_released: usize,
    #[serde(default)]
    pub episodes_queued: usize,
}

// ---- Issue 12, decisions: show search, bulk resolve, mapping pages ----

/// `GET /api/mappings?status=…&q=…&sort=…&page=…&per_page=…`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MappingPage {
    pub items: Vec<MappingView>,
    pub total: usize,
    pub page: usize,
}

/// The `status` filter of `GET /api/mappings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingFilter {
    All,
    Mapped,
    Ignored,
    Conflict,
}

impl MappingFilter {
    pub const CHOICES: &'static str = "all, mapped, ignored or conflict";
    /// Also the names of the earlier `filter=` parameter (`unmapped`, `conflicts`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all" | "" => Self::All,
            "mapped" => Self::Mapped,
            "ignored" | "unmapped" => Self::Ignored,
            "conflict" | "conflicts" => Self::Conflict,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Mapped => "mapped",
            Self::Ignored => "ignored",
            Self::Conflict => "conflict",
        }
    }
}

/// The `sort` of `GET /api/mappings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingSort {
    /// By Plex title (folded), A first.
    Title,
    /// Most recently changed first.
    Updated,
    /// Most plays (synced or held) first.
    Plays,
}

impl MappingSort {
    pub const CHOICES: &'static str = "title, updated or plays";
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "title" | "" => Self::Title,
            "updated" => Self::Updated,
            "plays" => Self::Plays,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Title => "title",
            Self::Updated => "updated",
            Self::Plays => "plays",
        }
    }
}

/// The most `per_page` a mappings page may ask for.
pub const MAX_PER_PAGE: usize = 500;

/// `GET /api/shows?q=…&year=…&limit=…` items: tracker shows, best first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShowHit {
    pub id: String,
    pub title: String,
    pub year: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmdb_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tvdb_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imdb_id: Option<String>,
    pub score: f32,
}

/// `POST /api/conflicts/resolve` body: one decision for several conflicts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkResolveRequest {
    pub ids: Vec<String>,
    /// `ignore` or `create` (`select` names one show: it is per conflict).
    pub action: ResolveAction,
}

/// `POST /api/conflicts/resolve` answer: one item per id, in the order asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkResolved {
    pub items: Vec<BulkResolvedItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkResolvedItem {
    pub id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub plays_released: usize,
    pub episodes_queued: usize,
}

/// `POST /api/backfill` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    pub since: String,
    #[serde(default)]
    pub dry_run: bool,
}

/// An error answer: `{"error": "…"}` with a 4xx/5xx status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

// ---- Settings (issue 12): `GET /api/settings` ----

/// `GET /api/settings`: the effective configuration, read-only, and which secrets are stored.
/// Secret values never appear; plugin keys that may hold one are `hidden`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsView {
    /// The config file the settings come from (absolute).
    pub config_file: String,
    /// Every key, dotted (`server.listen`, `matchers[0].kind`): sections in the order of
    /// plexsync.toml's reference, keys alphabetical within each.
    pub settings: Vec<SettingView>,
    pub secrets: Vec<SecretView>,
}

/// One effective setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingView {
    pub key: String,
    /// The value as TOML would hold it (durations as `"5m"`); null when unset.
    pub value: serde_json::Value,
    /// Whether the file sets it or the default applies.
    pub source: SettingSource,
    /// The value is withheld: a plugin key that may carry a secret (an `env` entry, a key
    /// named like a token or password).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    /// A key only a restart applies that the file has changed since the start: `value` is
    /// what the daemon runs with, this what the file says (in effect after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_restart: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingSource {
    File,
    Default,
}

/// One secret: stored or not, and the command that stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretView {
    pub name: String,
    pub set: bool,
    pub command: String,
    /// What uses it, in words.
    pub used_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

// ---- issue 13, the live source (helper LIVE) ----

/// `/api/status` → `live` (the type lives with the status board it is kept on).
pub use crate::state::LiveStatus;

// issue 13, watched-state sync (helper SYNC)

/// `POST /api/sync` body: everything (default), one show, or one section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// A show's ratingKey, or its title as Plex lists it (any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show: Option<String>,
    /// A library section id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// `GET /api/sync` (null before the first sync).
pub type SyncView = Option<crate::model::SyncStatus>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activity_page_past_any_there_can_be_is_refused_by_name() {
        for raw in ["page=18446744073709551615", "page=1000001"] {
            let e = ActivityQuery::from_query_string(raw).unwrap_err();
            assert!(e.starts_with("page: "), "{e}");
        }
        let q = ActivityQuery::from_query_string("page=1000000&per_page=500").unwrap();
        assert_eq!((q.page, q.per_page), (MAX_ACTIVITY_PAGE, 500));
        assert_eq!(ActivityQuery::from_query_string("page=0").unwrap().page, 1);
    }
}
