//! The admin API's typed requests and answers: what `/api/…` sends and receives as JSON. The
//! HTTP handlers ([`crate::admin`]) build these, the CLI deserialises the same types whether it
//! asked the daemon over its socket or served the request in process, and the web page reads
//! the same JSON. One definition, so the three cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::model::BackfillStatus;
use crate::model::{Activity, Batch};
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
}

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

/// `GET /api/outbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxView {
    pub counts: Counts,
    pub dead_letters: Vec<Batch>,
}

/// `POST /api/outbox/retry`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Requeued {
    pub requeued_batches: usize,
}

/// `GET /api/webhook-url`, `GET /api/web-url`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicUrl {
    pub url: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// `GET /api/backfill` (null before the first backfill).
pub type BackfillView = Option<BackfillStatus>;

/// A list answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Items<T> {
    pub items: Vec<T>,
    pub total: usize,
}

/// A Plex show as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlexShowView {
    pub rating_key: Option<String>,
    pub title: String,
    pub year: Option<i32>,
    pub guids: Vec<String>,
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
    pub created_at: i64,
    pub updated_at: i64,
    pub candidates: Vec<CandidateView>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_plays: Option<usize>,
    pub plays_synced: u64,
    pub last_synced_at: Option<i64>,
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
