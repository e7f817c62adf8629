//! The records plexsync keeps: plays, activity rows, mappings, conflicts, watched episodes and
//! outbox batches. Plain serde types; the store serialises them as JSON bytes so the on-disk
//! encoding is ours and survives redb upgrades.

use plexsync_plugin_api::{Candidate, PlaySource, ShowQuery};
use serde::{Deserialize, Serialize};

/// Current unix time in seconds.
pub fn now_secs() -> i64 {
    now_millis() / 1000
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The Plex show as a play describes it, before matching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlexShow {
    /// Plex server machine identifier, when known.
    pub server: Option<String>,
    pub rating_key: Option<String>,
    pub title: String,
    pub year: Option<i32>,
    /// The show's own guid (`grandparentGuid`), e.g. `plex://show/…` or a legacy agent guid.
    pub guid: Option<String>,
    /// The episode's guid; for legacy agents its path carries the show id.
    pub episode_guid: Option<String>,
}

impl PlexShow {
    /// The key plays, mappings and conflicts of this show share: server + ratingKey when Plex
    /// gave one, else the normalised title + year (rows of deleted items have no ratingKey).
    pub fn key(&self) -> String {
        match &self.rating_key {
            Some(rk) => {
                let server = self.server.as_deref().unwrap_or("-");
                let mut k = String::with_capacity(server.len() + 1 + rk.len());
                k.push_str(server);
                k.push('/');
                k.push_str(rk);
                k
            }
            None => format!(
                "title:{}|{}",
                self.title.trim().to_lowercase(),
                self.year.map(|y| y.to_string()).unwrap_or_default()
            ),
        }
    }

    /// The matcher query, before any enrichment with the show's own `Guid` list.
    pub fn query(&self) -> ShowQuery {
        let mut guids = Vec::new();
        if let Some(g) = &self.guid {
            guids.push(g.clone());
        }
        // A legacy episode guid (`…thetvdb://81189/1/1`) encodes the SHOW id; a new-agent one
        // (`plex://episode/…`) does not and is left out.
        if let Some(g) = &self.episode_guid {
            if !g.starts_with("plex://") {
                guids.push(g.clone());
            }
        }
        ShowQuery {
            rating_key: self.rating_key.clone(),
            title: self.title.clone(),
            year: self.year,
            guids,
        }
    }
}

/// One watched play, as journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Play {
    /// Journal sequence number, assigned by the store.
    #[serde(default)]
    pub id: u64,
    pub source: PlaySource,
    /// Plex account id as the source reported it.
    pub account_id: String,
    /// The canonical account this play belongs to (`pms:<id>` when known), the same for a
    /// webhook and a history row of one person; see `accounts.rs`.
    #[serde(default)]
    pub account_key: String,
    pub account_name: Option<String>,
    pub show: PlexShow,
    pub season: u32,
    pub episode: u32,
    pub episode_rating_key: Option<String>,
    /// When it was watched, unix seconds UTC.
    pub viewed_at: i64,
    /// When plexsync received it, unix seconds UTC.
    pub received_at: i64,
    /// Plex history row key, when it came from history.
    pub history_key: Option<String>,
}

impl Play {
    pub fn dedupe_key(&self) -> String {
        let account = if self.account_key.is_empty() {
            &self.account_id
        } else {
            &self.account_key
        };
        let show = self.show.key();
        let mut k = String::with_capacity(account.len() + show.len() + 24);
        k.push_str(account);
        k.push('\u{1f}');
        k.push_str(&show);
        k.push('\u{1f}');
        push_decimal(&mut k, self.season, 1);
        k.push('\u{1f}');
        push_decimal(&mut k, self.episode, 1);
        k
    }
}

/// Append `n` in decimal, zero-padded to at least `width` digits: `format!("{n:0width$}")`
/// without the formatting machinery, for the store keys built on the writer for every play
/// (each `format!` there cost ~1.5k instructions).
pub(crate) fn push_decimal(s: &mut String, n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in (buf.len() - i)..width {
        s.push('0');
    }
    for &d in &buf[i..] {
        s.push(char::from(d));
    }
}

/// What became of a journaled play.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PlayState {
    /// Waiting for the resolver.
    Pending,
    /// Mapped to a tracker show and recorded as watched.
    Resolved { show_id: String },
    /// Held in a conflict until a person decides.
    Parked { conflict: String },
    /// The show is ignored by a person's decision.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub play: Play,
    pub state: PlayState,
    /// Every source that reported this viewing, the play's own first; a duplicate from
    /// another source adds its name here (one viewing, one play). Empty on entries written
    /// before issue 13: then only `play.source` saw it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<PlaySource>,
    /// The activity row journaling this play, so a later duplicate can add its source there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_id: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityStatus {
    Success,
    Failed,
    Ignored,
    Duplicate,
}

impl ActivityStatus {
    /// Every status, in the order people read them (the API's and the CLI's choices).
    pub const ALL: [ActivityStatus; 4] = [
        ActivityStatus::Success,
        ActivityStatus::Failed,
        ActivityStatus::Ignored,
        ActivityStatus::Duplicate,
    ];

    /// The status named `s` (as [`as_str`](Self::as_str) spells it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActivityStatus::Success => "success",
            ActivityStatus::Failed => "failed",
            ActivityStatus::Ignored => "ignored",
            ActivityStatus::Duplicate => "duplicate",
        }
    }
}

/// Where an activity row comes from (its `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivitySource {
    Webhook,
    Poll,
    Backfill,
    Export,
    Library,
    Live,
}

impl ActivitySource {
    /// Every source (the API's and the CLI's choices).
    pub const ALL: [ActivitySource; 6] = [
        ActivitySource::Webhook,
        ActivitySource::Poll,
        ActivitySource::Backfill,
        ActivitySource::Export,
        ActivitySource::Library,
        ActivitySource::Live,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActivitySource::Webhook => "webhook",
            ActivitySource::Poll => "poll",
            ActivitySource::Backfill => "backfill",
            ActivitySource::Export => "export",
            ActivitySource::Library => "library",
            ActivitySource::Live => "live",
        }
    }
}

/// One row of the activity log: a request or a pipeline step a person may want to see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    #[serde(default)]
    pub id: u64,
    /// Unix milliseconds.
    pub at: i64,
    pub source: String,
    pub event: Option<String>,
    pub account: Option<String>,
    pub show: Option<String>,
    pub season: Option<u32>,
    pub episode: Option<u32>,
    pub status: ActivityStatus,
    pub action: String,
    pub error: Option<String>,
    pub duration_ms: f64,
    /// The journaled play this row is about, if any.
    pub play_id: Option<u64>,
    /// The HTTP client's address (webhook rows), after `[server] trusted_proxies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The Plex show's title, when known (`show` may be a tracker id on older export rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Export rows: the tracker show's title, when the catalogue knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracker_title: Option<String>,
    /// Export rows: attempts so far. One row per batch, updated on every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Export rows: the outbox batch this row follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<u64>,
    /// The row of a journaled play: every source that saw this viewing (`webhook`, `poll`,
    /// `library`, `live`…), in the order they reported it. Empty on other rows.
    #[serde(default)]
    pub sources: Vec<String>,
}

impl Activity {
    /// The summary row of a job (backfill, sync): no play, show or account of its own.
    pub fn summary(source: &str, event: &str, action: String, error: Option<String>) -> Activity {
        Activity {
            id: 0,
            at: now_millis(),
            source: source.into(),
            event: Some(event.into()),
            account: None,
            show: None,
            season: None,
            episode: None,
            status: if error.is_some() {
                ActivityStatus::Failed
            } else {
                ActivityStatus::Success
            },
            action,
            error,
            duration_ms: 0.0,
            play_id: None,
            client: None,
            title: None,
            tracker_title: None,
            attempts: None,
            batch_id: None,
            sources: Vec::new(),
        }
    }
}

/// A decided Plex show → tracker show link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub plex: PlexShow,
    pub show_id: String,
    pub method: String,
    pub confidence: f32,
    /// Set by a person (conflict resolution or `mappings set`).
    pub manual: bool,
    pub sync_enabled: bool,
    pub created_at: i64,
    /// A person chose to ignore this show: its plays are kept (journaled as ignored, held)
    /// and sent if the show is mapped later.
    #[serde(default)]
    pub ignored: bool,
    /// When a person last changed it (remap, sync on/off); unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// A show that needs a person's decision, with the plays it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub key: String,
    pub plex: PlexShow,
    pub query: ShowQuery,
    pub candidates: Vec<Candidate>,
    pub held: Vec<u64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub reason: String,
    /// The tracker whose catalogue the candidates were matched against
    /// ([`plexsync_plugin_api::Exporter::instance`]): another tracker's show ids mean nothing
    /// to the current one, so such candidates are not offered, and the conflict is matched
    /// again once the current tracker's catalogue is read (pipeline/rematch.rs). None in a
    /// conflict an earlier release stored: the daemon tags it at start with the tracker its
    /// cached catalogue names (`Store::tag_conflicts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracker: Option<String>,
}

/// A tracker episode known to be watched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watched {
    pub first_watched_at: i64,
    pub plays: u32,
    /// Unix seconds of the successful export, once delivered.
    pub exported_at: Option<i64>,
}

/// One episode waiting to be exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub play_id: u64,
    pub show_id: String,
    pub season: u32,
    pub episode: u32,
    pub watched_at: i64,
    pub queued_at: i64,
    /// The play's Plex show title, for the export's activity row; kept with the item so the
    /// writer does not read (and parse) the play's journal entry for every exported episode.
    /// None in items queued before it was kept: those read the journal as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The play's account (its name, else its id), as `title`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// A fixed group of outbox items sent together, with the idempotency key every attempt reuses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    #[serde(default)]
    pub id: u64,
    pub show_id: String,
    pub idempotency_key: String,
    pub items: Vec<OutboxItem>,
    pub attempts: u32,
    /// Unix milliseconds of the next attempt.
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    /// The activity row that follows this batch's attempts (one row per batch, not per try).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_id: Option<u64>,
    /// Dead letters: when the batch went to the dead letter (unix seconds). None on dead
    /// letters written before this was kept (their last attempt stands in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_at: Option<i64>,
    /// Brought forward from this next attempt (unix ms) by a change that may have fixed its
    /// cause (`Store::batches_due_now`): if that try fails as before, it was a test of the
    /// fix, not an attempt, and the batch waits until then again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_early_from: Option<i64>,
}

impl Batch {
    /// When this dead letter went dead, as near as the row knows.
    pub fn dead_since(&self) -> i64 {
        self.dead_at
            .unwrap_or(self.next_attempt_at.div_euclid(1000))
    }
}

/// Why a poll failed, as a kind the daemon decides on (the message is for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PollFailure {
    /// Plex answered 401: the token is wrong or revoked; polling pauses longer.
    TokenRejected,
    /// Plex did not answer, or answered 5xx / a redirect.
    Unreachable,
    /// Plex answered with something unusable.
    Malformed,
    /// The store could not commit.
    Store,
}

/// Why the tracker failed, as far as health needs to tell: a refused key is a person's job,
/// an outage is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackerErrorKind {
    /// HTTP 401: the key is missing or wrong.
    Unauthorized,
    /// HTTP 403: the key is not allowed to do this.
    Forbidden,
    /// Connection refused, timeout, 5xx, 429: it retries on its own.
    Unreachable,
    /// Any other refusal (4xx, an answer it cannot read).
    Refused,
    /// The plugin's configuration is wrong.
    Config,
}

impl TrackerErrorKind {
    /// Classify a tracker plugin's error. The plugin API has no status field, so 401/403 are
    /// recognised by the `HTTP 401` / `HTTP 403` that exporters put in their messages (the
    /// tracker plugin does: `tracker: export: HTTP 401 Unauthorized: …`).
    pub fn of(e: &plexsync_plugin_api::PluginError) -> Self {
        use plexsync_plugin_api::ErrorClass;
        // The status comes first; a body quoted after it may name other statuses
        // (`HTTP 422 …: {"error":"upstream HTTP 401"}`), which say nothing of this answer.
        let has = |code: &str| {
            e.message
                .find("HTTP ")
                .is_some_and(|i| e.message[i + 5..].starts_with(code))
        };
        match e.class {
            ErrorClass::Transient => Self::Unreachable,
            ErrorClass::Config => Self::Config,
            ErrorClass::Permanent if has("401") => Self::Unauthorized,
            ErrorClass::Permanent if has("403") => Self::Forbidden,
            ErrorClass::Permanent => Self::Refused,
        }
    }
}

/// What one poll (or backfill) did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PollReport {
    pub started_at: i64,
    pub finished_at: i64,
    /// Rows the server served, usable or not.
    pub rows_read: u64,
    pub plays_new: u64,
    pub duplicates: u64,
    pub already_seen: u64,
    /// Rows that are not episodes, lack season/episode numbers or a usable time.
    pub skipped: u64,
    pub error: Option<String>,
    /// What kind of failure `error` is, for decisions (backoff, the token warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<PollFailure>,
    /// Play ids journaled by this run (backfill uses them for its summary).
    #[serde(skip)]
    pub new_ids: Vec<u64>,
    /// Rows vanished under a walk twice beyond its overlap: rows may have been read past
    /// (see `crate::plex::paging`). A poll holds its cursor; a backfill says so.
    #[serde(skip)]
    pub may_have_skipped: bool,
}

/// One episode a dry-run backfill would send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WouldExport {
    /// The Plex show's title.
    pub show: String,
    pub show_id: String,
    /// The tracker show's title, when the catalogue knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracker_title: Option<String>,
    pub season: u32,
    pub episode: u32,
    pub watched_at: i64,
}

/// Progress and result of a backfill.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackfillStatus {
    pub running: bool,
    pub since: i64,
    pub dry_run: bool,
    /// History rows read so far, over every account.
    pub rows_read: u64,
    /// Rows in all, over every account; None until it is known (Plex gives one account's
    /// total at a time, so it is known once the last account's first page is read).
    pub total: Option<u64>,
    /// Which account is being read (1-based) and how many there are.
    #[serde(default)]
    pub account: u32,
    #[serde(default)]
    pub accounts: u32,
    pub plays_new: u64,
    pub duplicates: u64,
    pub already_imported: u64,
    /// Of the new plays: mapped to a tracker show / held in a conflict / still being resolved.
    pub matched: u64,
    pub parked: u64,
    pub waiting: u64,
    /// Titles of the shows a dry run could not map (they would become conflicts, or wait in
    /// their open one).
    pub unmatched_shows: Vec<String>,
    /// Titles of the shows a dry run could not decide now (Plex's show lookup or a matcher
    /// failed, or no catalogue yet): the resolver would try them again later.
    #[serde(default)]
    pub undecided_shows: Vec<String>,
    pub would_export: Vec<WouldExport>,
    /// Names in `[plex] accounts` the Plex server does not list: their history is not read.
    #[serde(default)]
    pub unknown_accounts: Vec<String>,
    /// Plex's history changed under the walk more than it could follow (rows deleted twice
    /// beyond a page's overlap): rows may have been missed, and a second run reads them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rows_may_be_missed: bool,
    pub error: Option<String>,
}

/// `POST /api/sync` / `plexsync sync`: one entry of a dry run's list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncWould {
    /// The Plex show's title.
    pub show: String,
    pub season: u32,
    pub episode: u32,
    /// The tracker show's title, when the show is mapped and the catalogue knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracker_title: Option<String>,
}

/// Progress and result of a watched-state sync (`GET /api/sync`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub running: bool,
    pub dry_run: bool,
    /// Unix seconds.
    pub started_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// TV sections to walk / walked.
    pub sections_total: u64,
    pub sections_done: u64,
    pub shows_walked: u64,
    /// Shows Plex listed but then had no episodes for (404: deleted during the sync):
    /// skipped.
    #[serde(default)]
    pub shows_vanished: u64,
    /// Shows in all, once Plex told every section's total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shows_total: Option<u64>,
    /// Episodes listed, watched or not.
    pub episodes_seen: u64,
    /// Of those, Plex reports watched (`viewCount` >= 1).
    pub episodes_watched: u64,
    /// Plays this sync journaled (viewings no source had reported).
    pub plays_new: u64,
    /// Watched episodes that needed nothing: the viewing was journaled before, or the tracker
    /// already has the episode.
    pub already_exported: u64,
    /// Of the new plays, held in a conflict until a person maps their show.
    pub parked_in_conflicts: u64,
    /// Dry run: the episodes that would be exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_export: Option<Vec<SyncWould>>,
    /// Dry run: the shows that would need a person (no match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_need_a_person: Option<Vec<String>>,
    /// Dry run: the shows that cannot be decided now (Plex's show lookup or a matcher failed,
    /// or no catalogue yet): the resolver would try them again later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undecided_shows: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
