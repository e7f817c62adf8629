//! Plex webhook JSON model and the "is this a watched episode?" classifier.
//!
//! This module owns the JSON inside the `payload` part of a Plex webhook
//! (PLEX_PROTOCOL.md §1.4/§1.5): the serde model ([`WebhookPayload`] and its
//! parts), [`parse_payload`] which turns bytes into that model with errors
//! that say what is wrong, and [`to_play`] which reduces a payload to an
//! [`EpisodePlay`] when it reports a fully watched TV episode. Framing of the
//! HTTP body is `super::multipart`'s job; mapping ids to a tracker is not
//! done here.
//!
//! Parsing is deliberately lenient, because Plex is inconsistent across
//! versions and endpoints: ids may arrive as JSON strings or numbers, numeric
//! fields may arrive as numeric strings, unknown fields are ignored and every
//! field except `event` is optional (`null` counts as absent). Checks that
//! matter for correctness (season/episode present and sane, …) happen in
//! [`to_play`], where the error can name the field.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use std::fmt;

/// JSON nesting deeper than this is rejected before serde sees it. Real
/// payloads nest 3 levels; the limit keeps recursion (and stack use) small.
pub const MAX_JSON_DEPTH: usize = 64;

/// Season and episode numbers above this are treated as garbage.
pub const MAX_SEASON_OR_EPISODE: i64 = 100_000;

/// Latest accepted `lastViewedAt`: 9999-12-31T23:59:59Z.
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// Errors from [`parse_payload`] and [`to_play`]. Each renders as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not valid JSON (syntax error or premature end).
    #[error("payload is not valid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        /// 1-based line.
        line: usize,
        /// 1-based column (bytes).
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// Valid JSON, but a field we model has an unusable type or value.
    #[error("payload JSON has an unexpected shape at line {line}, column {column}: {message}")]
    UnexpectedShape {
        /// 1-based line.
        line: usize,
        /// 1-based column (bytes).
        column: usize,
        /// What did not fit.
        message: String,
    },
    /// Arrays/objects nested deeper than [`MAX_JSON_DEPTH`].
    #[error("payload JSON nests deeper than {max_depth} levels (at line {line}, column {column})")]
    TooDeep {
        /// [`MAX_JSON_DEPTH`].
        max_depth: usize,
        /// 1-based line of the bracket that went too deep.
        line: usize,
        /// 1-based column (bytes).
        column: usize,
    },
    /// The top-level JSON value is not an object.
    #[error("payload JSON is not an object (found {found})")]
    NotAnObject {
        /// `array`, `string`, `number`, `boolean` or `null`.
        found: &'static str,
    },
    /// The top-level `event` field is absent, null or empty.
    #[error("payload has no `event` field (or it is empty)")]
    MissingEvent,
    /// [`to_play`]: a field needed for a scrobbled episode is absent.
    #[error("{field} missing")]
    MissingField {
        /// JSON path, e.g. `Metadata.parentIndex`.
        field: &'static str,
    },
    /// [`to_play`]: a field needed for a scrobbled episode has an unusable value.
    #[error("{field} invalid: {reason}")]
    InvalidField {
        /// JSON path, e.g. `Metadata.index`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Text of the payload: borrowed from the request's bytes unless it held escapes (or was a
/// number), so parsing allocates little (each owned string was a malloc, a copy and a free).
pub type Text<'a> = std::borrow::Cow<'a, str>;

/// The whole webhook JSON. Only `event` is required.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct WebhookPayload<'a> {
    /// e.g. `media.scrobble`, `media.play`, `library.new`.
    #[serde(deserialize_with = "de_string_or_empty")]
    pub event: String,
    /// Sent because the acting user has a webhook configured.
    #[serde(deserialize_with = "de_opt_bool")]
    pub user: Option<bool>,
    /// Sent because the server owner has a webhook configured.
    #[serde(deserialize_with = "de_opt_bool")]
    pub owner: Option<bool>,
    /// The plex.tv account that acted.
    #[serde(borrow, rename = "Account")]
    pub account: Option<Account<'a>>,
    /// The Plex Media Server that sent the webhook.
    #[serde(borrow, rename = "Server")]
    pub server: Option<Server<'a>>,
    /// The playing client; absent for library events.
    #[serde(borrow, rename = "Player")]
    pub player: Option<Player<'a>>,
    /// The library item the event is about.
    #[serde(borrow, rename = "Metadata")]
    pub metadata: Option<Metadata<'a>>,
}

/// `Account`: who acted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Account<'a> {
    /// plex.tv account id on current PMS; `1` for the owner on old PMS (§1.4).
    #[serde(borrow, deserialize_with = "de_opt_string")]
    pub id: Option<Text<'a>>,
    /// plex.tv username / display name.
    #[serde(borrow, deserialize_with = "de_opt_string")]
    pub title: Option<Text<'a>>,
    /// Avatar URL, `https://plex.tv/users/<user-uuid>/avatar?c=…`.
    #[serde(borrow, deserialize_with = "de_opt_string")]
    pub thumb: Option<Text<'a>>,
}

/// `Server`: the PMS that sent the webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Server<'a> {
    /// Friendly name.
    #[serde(borrow, deserialize_with = "de_opt_string")]
    pub title: Option<Text<'a>>,
    /// PMS `machineIdentifier` (40 hex chars, but redacted captures differ).
    #[serde(borrow, deserialize_with = "de_opt_string")]
    pub uuid: Option<Text<'a>>,
}

/// `Player`: the client that played the media.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Player<'a> {
    /// Client name.
    #[serde(borrow, deserialize_with = "de_opt_string")]
    pub title: Option<Text<'a>>,
    /// Client machine identifier.
    #[serde(borrow, deserialize_with = "de_opt_string")]
    pub uuid: Option<Text<'a>>,
    /// Public IP address of the client's network.
    #[serde(borrow, rename = "publicAddress", deserialize_with = "de_opt_string")]
    pub public_address: Option<Text<'a>>,
    /// Whether the client is on the server's LAN.
    #[serde(deserialize_with = "de_opt_bool")]
    pub local: Option<bool>,
}

/// One entry of the `Guid` array: `{"id": "tvdb://7047159"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct GuidEntry<'a> {
    /// `provider://value`, e.g. `imdb://tt9413736`.
    #[serde(borrow, deserialize_with = "de_opt_string")]
    pub id: Option<Text<'a>>,
}

/// `Metadata`: the library item. Field meanings: PLEX_PROTOCOL.md §1.5.
/// For an episode, "parent" is the season and "grandparent" the show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Metadata<'a> {
    /// `episode`, `movie`, `show`, `season`, `track`, `album`, …
    #[serde(borrow, rename = "type", deserialize_with = "de_opt_string")]
    pub kind: Option<Text<'a>>,
    /// `show`, `movie`, `artist`, …
    #[serde(
        borrow,
        rename = "librarySectionType",
        deserialize_with = "de_opt_string"
    )]
    pub library_section_type: Option<Text<'a>>,
    /// Library section id (a number in webhooks, a string elsewhere).
    #[serde(rename = "librarySectionID", deserialize_with = "de_opt_int")]
    pub library_section_id: Option<i64>,
    /// Library section name.
    #[serde(
        borrow,
        rename = "librarySectionTitle",
        deserialize_with = "de_opt_string"
    )]
    pub library_section_title: Option<Text<'a>>,
    /// This item's id on this PMS (episode id for an episode).
    #[serde(borrow, rename = "ratingKey", deserialize_with = "de_opt_string")]
    pub rating_key: Option<Text<'a>>,
    /// Season id on this PMS.
    #[serde(borrow, rename = "parentRatingKey", deserialize_with = "de_opt_string")]
    pub parent_rating_key: Option<Text<'a>>,
    /// Show id on this PMS.
    #[serde(
        borrow,
        rename = "grandparentRatingKey",
        deserialize_with = "de_opt_string"
    )]
    pub grandparent_rating_key: Option<Text<'a>>,
    /// `/library/metadata/<ratingKey>` (a show in `library.new` ends in `/children`).
    #[serde(borrow, deserialize_with = "de_opt_string")]
    pub key: Option<Text<'a>>,
    /// `/library/metadata/<parentRatingKey>`.
    #[serde(borrow, rename = "parentKey", deserialize_with = "de_opt_string")]
    pub parent_key: Option<Text<'a>>,
    /// `/library/metadata/<grandparentRatingKey>`.
    #[serde(borrow, rename = "grandparentKey", deserialize_with = "de_opt_string")]
    pub grandparent_key: Option<Text<'a>>,
    /// Episode number (for a season: the season number).
    #[serde(deserialize_with = "de_opt_int")]
    pub index: Option<i64>,
    /// Season number of an episode.
    #[serde(rename = "parentIndex", deserialize_with = "de_opt_int")]
    pub parent_index: Option<i64>,
    /// Episode title.
    #[serde(borrow, deserialize_with = "de_opt_string")]
    pub title: Option<Text<'a>>,
    /// Season title, e.g. "Season 9".
    #[serde(borrow, rename = "parentTitle", deserialize_with = "de_opt_string")]
    pub parent_title: Option<Text<'a>>,
    /// Show title.
    #[serde(
        borrow,
        rename = "grandparentTitle",
        deserialize_with = "de_opt_string"
    )]
    pub grandparent_title: Option<Text<'a>>,
    /// Agent GUID of the item: `plex://episode/…` or `com.plexapp.agents.thetvdb://…`.
    #[serde(borrow, deserialize_with = "de_opt_string")]
    pub guid: Option<Text<'a>>,
    /// Agent GUID of the season.
    #[serde(borrow, rename = "parentGuid", deserialize_with = "de_opt_string")]
    pub parent_guid: Option<Text<'a>>,
    /// Agent GUID of the show.
    #[serde(borrow, rename = "grandparentGuid", deserialize_with = "de_opt_string")]
    pub grandparent_guid: Option<Text<'a>>,
    /// The `Guid` array (new Plex agents only): external ids of THIS ITEM.
    ///
    /// On an episode these are EPISODE ids (`tvdb://` = TVDB episode id,
    /// `tmdb://` = TMDB episode id, `imdb://` = the episode's IMDb id). They
    /// must never be used as show ids; the webhook carries no show-level
    /// external ids (fetch `/library/metadata/<grandparentRatingKey>` for those).
    #[serde(borrow, rename = "Guid", deserialize_with = "de_guid_list")]
    pub episode_guids: Vec<GuidEntry<'a>>,
    /// Release year.
    #[serde(deserialize_with = "de_opt_int")]
    pub year: Option<i64>,
    /// Last time fully watched, unix seconds.
    #[serde(rename = "lastViewedAt", deserialize_with = "de_opt_int")]
    pub last_viewed_at: Option<i64>,
    /// Times fully watched.
    #[serde(rename = "viewCount", deserialize_with = "de_opt_int")]
    pub view_count: Option<i64>,
    /// Playback position, milliseconds.
    #[serde(rename = "viewOffset", deserialize_with = "de_opt_int")]
    pub view_offset_ms: Option<i64>,
    /// Duration, milliseconds.
    #[serde(deserialize_with = "de_opt_int")]
    pub duration: Option<i64>,
    /// Air date, `YYYY-MM-DD`.
    #[serde(
        borrow,
        rename = "originallyAvailableAt",
        deserialize_with = "de_opt_string"
    )]
    pub originally_available_at: Option<Text<'a>>,
}

/// A fully watched TV episode, distilled from a `media.scrobble` webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpisodePlay {
    /// `Account.id` (plex.tv id on current PMS, `1` for the owner on old PMS).
    pub account_id: String,
    /// `Account.title`.
    pub account_title: Option<String>,
    /// Lower-case hex user uuid from `Account.thumb`
    /// (`https://plex.tv/users/<uuid>/avatar…`); equals plex.tv `/api/v2/user`
    /// `uuid`, stable across the owner-id change. `None` if the URL is absent
    /// or not of that form (e.g. redacted).
    pub account_thumb_uuid: Option<String>,
    /// `Server.uuid` (PMS machineIdentifier); `None` if `Server`/`uuid` is absent.
    pub server_uuid: Option<String>,
    /// Show id on this PMS: `grandparentRatingKey`, else the id in
    /// `grandparentKey`; `None` if both are absent. Always decimal digits.
    pub show_rating_key: Option<String>,
    /// Episode id on this PMS (`ratingKey`); `None` if absent. Always decimal digits.
    pub episode_rating_key: Option<String>,
    /// `grandparentTitle`.
    pub show_title: String,
    /// `title`.
    pub episode_title: Option<String>,
    /// `grandparentGuid`: agent GUID of the show (legacy agents embed the
    /// TVDB/TMDB show id in it; new agents give `plex://show/…`).
    pub show_guid: Option<String>,
    /// `guid`: agent GUID of the episode.
    pub episode_guid: Option<String>,
    /// The `id`s of the `Guid` array, e.g. `["imdb://tt…", "tvdb://7047159"]`.
    ///
    /// These are EPISODE ids. Never use them as show ids: a `tvdb://` value
    /// here is a TVDB episode id, not a series id.
    pub episode_guids: Vec<String>,
    /// Season number (`parentIndex`; 0 = specials).
    pub season: u32,
    /// Episode number within the season (`index`).
    pub episode: u32,
    /// `lastViewedAt`, unix seconds; `None` if absent or 0.
    pub viewed_at: Option<i64>,
    /// `year`.
    pub year: Option<i32>,
}

/// Parses the webhook JSON (the bytes of the multipart `payload` part).
///
/// Rejects nesting deeper than [`MAX_JSON_DEPTH`] up front (iteratively, so
/// arbitrarily deep input cannot exhaust the stack), then deserializes.
pub fn parse_payload(bytes: &[u8]) -> Result<WebhookPayload<'_>, PayloadError> {
    // serde_json rejects a UTF-8 BOM; some HTTP stacks add one.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    check_depth(bytes, MAX_JSON_DEPTH)?;
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    if first != Some(b'{') {
        // A derived struct would accept a JSON array positionally, so only
        // objects go to serde; anything else is classified here.
        return Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
            Err(e) => json_error(&e),
            Ok(_) => PayloadError::NotAnObject {
                found: match first {
                    Some(b'[') => "array",
                    Some(b'"') => "string",
                    Some(b't' | b'f') => "boolean",
                    Some(b'n') => "null",
                    _ => "number",
                },
            },
        });
    }
    let payload: WebhookPayload = crate::json::from_bytes(bytes).map_err(|e| json_error(&e))?;
    if payload.event.trim().is_empty() {
        return Err(PayloadError::MissingEvent);
    }
    Ok(payload)
}

/// Classifies a payload: `Ok(Some(_))` for a `media.scrobble` of an episode,
/// `Ok(None)` for every other event or media type, and for an episode without
/// a season or episode number (the caller records those as ignored, with
/// [`ignored_because`]'s reason), `Err` for a scrobbled episode that lacks what
/// we need or carries a malformed value.
///
/// Required on a scrobbled episode: `Account.id`, `Metadata.grandparentTitle`.
/// `Metadata.parentIndex` and `Metadata.index` (both 0..=100000) must both be
/// there for a play: Plex leaves them out for an episode it has not matched
/// (personal media, a file the agent could not place), which no tracker can
/// take; the history poll skips such rows too, so both sources agree. Optional
/// but validated when present: rating keys (decimal digits), `lastViewedAt`
/// (0 = absent, otherwise 1..=year 9999), `year` (1..=9999).
///
/// A `media.scrobble` without `Metadata` or `Metadata.type` is an error,
/// not `None`: we cannot tell whether it was an episode, and silently
/// ignoring it could lose a watch.
pub fn to_play(p: &WebhookPayload<'_>) -> Result<Option<EpisodePlay>, PayloadError> {
    if p.event.trim() != "media.scrobble" {
        return Ok(None);
    }
    let meta = p
        .metadata
        .as_ref()
        .ok_or(PayloadError::MissingField { field: "Metadata" })?;
    let kind = required(&meta.kind, "Metadata.type")?;
    if !kind.eq_ignore_ascii_case("episode") {
        return Ok(None);
    }
    let account = p
        .account
        .as_ref()
        .ok_or(PayloadError::MissingField { field: "Account" })?;
    let (Some(season), Some(episode)) = (meta.parent_index, meta.index) else {
        return Ok(None);
    };
    // Rating keys may be absent (the caller then keys the show by title),
    // but a present, malformed one is an error: it ends up in a URL path.
    let show_rating_key = match non_empty(&meta.grandparent_rating_key) {
        Some(key) => Some(rating_key(key, "Metadata.grandparentRatingKey")?),
        None => match non_empty(&meta.grandparent_key) {
            Some(path) => Some(key_from_path(path, "Metadata.grandparentKey")?),
            None => None,
        },
    };
    let episode_rating_key = match non_empty(&meta.rating_key) {
        Some(key) => Some(rating_key(key, "Metadata.ratingKey")?),
        None => None,
    };

    Ok(Some(EpisodePlay {
        account_id: required(&account.id, "Account.id")?.to_owned(),
        account_title: non_empty(&account.title).map(str::to_owned),
        account_thumb_uuid: non_empty(&account.thumb).and_then(avatar_uuid),
        server_uuid: p
            .server
            .as_ref()
            .and_then(|s| non_empty(&s.uuid))
            .map(str::to_owned),
        show_rating_key,
        episode_rating_key,
        show_title: required(&meta.grandparent_title, "Metadata.grandparentTitle")?.to_owned(),
        episode_title: non_empty(&meta.title).map(str::to_owned),
        show_guid: non_empty(&meta.grandparent_guid).map(str::to_owned),
        episode_guid: non_empty(&meta.guid).map(str::to_owned),
        episode_guids: meta
            .episode_guids
            .iter()
            .filter_map(|g| non_empty(&g.id).map(str::to_owned))
            .collect(),
        season: small_number(season, "Metadata.parentIndex")?,
        episode: small_number(episode, "Metadata.index")?,
        viewed_at: viewed_at(meta.last_viewed_at)?,
        year: year(meta.year)?,
    }))
}

/// Why [`to_play`] gave no play for `p` (it returned `Ok(None)`): the action text of its
/// ignored activity row.
pub fn ignored_because(p: &WebhookPayload<'_>) -> String {
    let kind = p
        .metadata
        .as_ref()
        .and_then(|m| m.kind.as_deref())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .unwrap_or("no metadata");
    let scrobbled_episode =
        p.event.trim() == "media.scrobble" && kind.eq_ignore_ascii_case("episode");
    match p.metadata.as_ref() {
        Some(m) if scrobbled_episode && (m.parent_index.is_none() || m.index.is_none()) => {
            let missing = match (m.parent_index, m.index) {
                (None, None) => "a season or an episode number",
                (None, Some(_)) => "a season number",
                _ => "an episode number",
            };
            format!(
                "ignored {} of an episode without {missing} (Plex has not matched it; a tracker needs both)",
                p.event
            )
        }
        _ => format!("ignored {} of {kind}", p.event),
    }
}

// ---- field checks for to_play ----

fn non_empty<'v>(v: &'v Option<Text<'_>>) -> Option<&'v str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn required<'v>(v: &'v Option<Text<'_>>, field: &'static str) -> Result<&'v str, PayloadError> {
    non_empty(v).ok_or(PayloadError::MissingField { field })
}

/// Shortens untrusted text before echoing it in an error message.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// Rating keys are decimal ids; they end up in URL paths
/// (`/library/metadata/<key>`), so anything else is refused.
fn rating_key(v: &str, field: &'static str) -> Result<String, PayloadError> {
    if !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) {
        Ok(v.to_owned())
    } else {
        Err(PayloadError::InvalidField {
            field,
            reason: format!("expected a numeric rating key, got {:?}", shorten(v)),
        })
    }
}

/// `/library/metadata/<id>` (optionally followed by `/…` or `?…`) → `<id>`.
fn key_from_path(path: &str, field: &'static str) -> Result<String, PayloadError> {
    let invalid = || PayloadError::InvalidField {
        field,
        reason: format!("expected /library/metadata/<id>, got {:?}", shorten(path)),
    };
    let rest = path
        .strip_prefix("/library/metadata/")
        .ok_or_else(invalid)?;
    let id = rest.split(['/', '?']).next().unwrap_or_default();
    rating_key(id, field).map_err(|_| invalid())
}

/// `https://plex.tv/users/<hex>/avatar?c=…` → lower-case `<hex>`.
fn avatar_uuid(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/')?;
    if !host.eq_ignore_ascii_case("plex.tv") {
        return None;
    }
    let after = path.strip_prefix("users/")?;
    let uuid = after.split(['/', '?', '#']).next()?;
    if (1..=64).contains(&uuid.len()) && uuid.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(uuid.to_ascii_lowercase())
    } else {
        None
    }
}

fn small_number(n: i64, field: &'static str) -> Result<u32, PayloadError> {
    if n < 0 {
        return Err(PayloadError::InvalidField {
            field,
            reason: format!("negative ({n})"),
        });
    }
    if n > MAX_SEASON_OR_EPISODE {
        return Err(PayloadError::InvalidField {
            field,
            reason: format!("implausibly large ({n} > {MAX_SEASON_OR_EPISODE})"),
        });
    }
    u32::try_from(n).map_err(|_| PayloadError::InvalidField {
        field,
        reason: format!("does not fit ({n})"),
    })
}

fn viewed_at(v: Option<i64>) -> Result<Option<i64>, PayloadError> {
    const FIELD: &str = "Metadata.lastViewedAt";
    match v {
        None | Some(0) => Ok(None), // 0 = "never" in Plex; let the caller use receive time
        Some(t) if t < 0 => Err(PayloadError::InvalidField {
            field: FIELD,
            reason: format!("negative timestamp ({t})"),
        }),
        Some(t) if t > MAX_UNIX_SECONDS => Err(PayloadError::InvalidField {
            field: FIELD,
            reason: format!("timestamp after year 9999 ({t}); expected unix seconds"),
        }),
        Some(t) => Ok(Some(t)),
    }
}

fn year(v: Option<i64>) -> Result<Option<i32>, PayloadError> {
    match v {
        None => Ok(None),
        Some(y @ 1..=9999) => Ok(i32::try_from(y).ok()),
        Some(y) => Err(PayloadError::InvalidField {
            field: "Metadata.year",
            reason: format!("out of range 1..=9999 ({y})"),
        }),
    }
}

// ---- JSON helpers ----

fn json_error(e: &serde_json::Error) -> PayloadError {
    // serde_json appends " at line L column C" to its message; we report
    // position separately, so strip it to avoid saying it twice.
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    let (line, column) = (e.line(), e.column());
    match e.classify() {
        serde_json::error::Category::Data => PayloadError::UnexpectedShape {
            line,
            column,
            message,
        },
        _ => PayloadError::InvalidJson {
            line,
            column,
            message,
        },
    }
}

/// Iterative scan for `[`/`{` nesting outside strings. serde_json's own
/// recursion limit is 128, above what we want, and it cannot be lowered.
/// Strings are skipped with memchr, and the line and column are worked out only
/// for the error: this runs on every webhook before its JSON is parsed.
fn check_depth(bytes: &[u8], max_depth: usize) -> Result<(), PayloadError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // To the closing quote: the next `"` not escaped by an odd run of `\`.
                let mut j = i + 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[j.min(bytes.len())..]) {
                        None => return Ok(()), // unterminated: serde_json reports it
                        Some(k) if bytes[j + k] == b'\\' => j += k + 2,
                        Some(k) => {
                            i = j + k;
                            break;
                        }
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    let before = &bytes[..=i];
                    let line = 1 + memchr::memchr_iter(b'\n', before).count();
                    let line_start = memchr::memrchr(b'\n', before).map_or(0, |n| n + 1);
                    return Err(PayloadError::TooDeep {
                        max_depth,
                        line,
                        column: i + 1 - line_start,
                    });
                }
            }
            // Unbalanced closers are a syntax error serde_json will report.
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

// ---- lenient deserializers ----

/// String, or a number rendered as a decimal string (ids such as
/// `Account.id` or `librarySectionID` switch between the two). `null` → None.
fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Text<'de>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Text<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Text::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Text::Owned(v.to_owned())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Text::Owned(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Text::Owned(v.to_string())))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Text::Owned(v.to_string())))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // `42.0` → "42" so an id means the same whatever its JSON type.
            match float_to_i64(v) {
                Some(i) => Ok(Some(Text::Owned(i.to_string()))),
                None => Ok(Some(Text::Owned(v.to_string()))),
            }
        }
    }
    d.deserialize_option(V)
}

fn de_string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(de_opt_string(d)?.map(Text::into_owned).unwrap_or_default())
}

/// Exactly integral floats within ±2^53 (where f64 is exact), else None.
fn float_to_i64(v: f64) -> Option<i64> {
    const LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
    if v.is_finite() && v.fract() == 0.0 && v.abs() <= LIMIT {
        // In range and integral, so the cast is exact.
        Some(v as i64)
    } else {
        None
    }
}

/// Integer, integral float, or a string holding an integer. `null` → None.
fn de_opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer (JSON number or numeric string)")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("integer {v} is out of range")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            float_to_i64(v)
                .map(Some)
                .ok_or_else(|| E::custom(format!("expected an integer, got {v}")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let t = v.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse::<i64>()
                .map(Some)
                .map_err(|_| E::custom(format!("expected an integer, got {:?}", shorten(v))))
        }
    }
    d.deserialize_option(V)
}

/// Bool, 0/1, or "true"/"false"/"0"/"1". `null` → None.
fn de_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a boolean, 0/1 or \"true\"/\"false\"")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            match v {
                0 => Ok(Some(false)),
                1 => Ok(Some(true)),
                _ => Err(E::custom(format!("expected a boolean, got {v}"))),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            match v {
                0 => Ok(Some(false)),
                1 => Ok(Some(true)),
                _ => Err(E::custom(format!("expected a boolean, got {v}"))),
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v.trim() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                "" => Ok(None),
                _ => Err(E::custom(format!(
                    "expected a boolean, got {:?}",
                    shorten(v)
                ))),
            }
        }
    }
    d.deserialize_option(V)
}

/// The `Guid` array; `null` → empty.
fn de_guid_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<GuidEntry<'de>>, D::Error> {
    Ok(Option::<Vec<GuidEntry<'de>>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::path::{Path, PathBuf};

    /// Real captures live outside the repo (third-party data); read in place.
    fn sample_dir() -> Option<PathBuf> {
        let dir = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/plex-samples/webhook/"
        ));
        if dir.is_dir() {
            return Some(dir);
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("sample folder {} missing on CI", dir.display());
        }
        eprintln!(
            "notice: {} not found, skipping sample-based test",
            dir.display()
        );
        None
    }

    fn read(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    fn sample(name: &str) -> Option<WebhookPayload<'static>> {
        let dir = sample_dir()?;
        // Leaked: a test's payload borrows its bytes, and a few KB a test is nothing.
        Some(parse_payload(read(&dir, name).leak()).unwrap())
    }

    /// A sample as a JSON value, for tests that tweak one field.
    fn sample_value(name: &str) -> Option<Value> {
        let dir = sample_dir()?;
        Some(serde_json::from_slice(&read(&dir, name)).unwrap())
    }

    fn play_of(v: &Value) -> Result<Option<EpisodePlay>, PayloadError> {
        to_play(&parse_payload(v.to_string().as_bytes())?)
    }

    const SCROBBLE: &str = "episode_plexagent_media.scrobble_shared-user_guid-array.json";
    const PAUSE: &str = "episode_plexagent_media.pause_shared-user.payload.json";
    const RESUME: &str = "episode_legacy-thetvdb_media.resume_owner-id1.json";

    #[test]
    fn every_sample_json_parses() {
        let Some(dir) = sample_dir() else { return };
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let p = parse_payload(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(p.event.contains('.'), "{}", path.display());
            assert!(p.account.is_some() && p.server.is_some() && p.metadata.is_some());
            // Classifying never fails on these: none is a scrobbled episode
            // missing fields.
            to_play(&p).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n >= 7, "only {n} samples");
    }

    #[test]
    fn scrobble_sample_becomes_episode_play() {
        let Some(p) = sample(SCROBBLE) else { return };
        assert_eq!(p.user, Some(false));
        assert_eq!(p.owner, Some(true));
        let meta = p.metadata.as_ref().unwrap();
        assert_eq!(meta.library_section_id, Some(7));
        assert_eq!(meta.view_count, Some(1));
        let play = to_play(&p).unwrap().unwrap();
        assert_eq!(
            play,
            EpisodePlay {
                account_id: "31646104".into(),
                account_title: Some("\u{64ad}\u{653e}".into()),
                // Redacted avatar URL ("…/users/xx") carries no uuid.
                account_thumb_uuid: None,
                server_uuid: Some("xxxx".into()),
                show_rating_key: Some("40275".into()),
                episode_rating_key: Some("40294".into()),
                show_title: "\u{8303}\u{9a6c}\u{5203}\u{7259}".into(),
                episode_title: Some("The World's Strongest Senior".into()),
                show_guid: Some("plex://show/60e81fd8d8000e002d7d2976".into()),
                episode_guid: Some("plex://episode/615580a9fa828e7f1a0caabd".into()),
                episode_guids: vec![
                    "imdb://tt14765720".into(),
                    "tmdb://3087250".into(),
                    "tvdb://8530933".into(),
                ],
                season: 1,
                episode: 1,
                viewed_at: Some(1_694_320_444),
                year: Some(2021),
            }
        );
    }

    #[test]
    fn pause_and_resume_are_ignored() {
        for name in [PAUSE, RESUME] {
            let Some(p) = sample(name) else { return };
            assert_eq!(to_play(&p).unwrap(), None, "{name}");
        }
    }

    #[test]
    fn non_episode_types_are_ignored_even_when_scrobbled() {
        for name in [
            "movie_legacy-imdb_media.play_owner-id1.json",
            "track_media.play_official-doc-example.json",
            "show_legacy-thetvdb_library.new_no-player.json",
            "album_library.new_owner-plextv-id.json",
        ] {
            let Some(mut v) = sample_value(name) else {
                return;
            };
            assert_eq!(play_of(&v).unwrap(), None, "{name}");
            // Also as media.scrobble: still not an episode.
            v["event"] = json!("media.scrobble");
            assert_eq!(play_of(&v).unwrap(), None, "{name} as scrobble");
        }
        let Some(p) = sample("show_legacy-thetvdb_library.new_no-player.json") else {
            return;
        };
        assert!(p.player.is_none());
    }

    #[test]
    fn pause_sample_as_scrobble() {
        let Some(mut v) = sample_value(PAUSE) else {
            return;
        };
        v["event"] = json!("media.scrobble");
        let play = play_of(&v).unwrap().unwrap();
        assert_eq!(play.account_id, "19267583");
        assert_eq!(play.account_title.as_deref(), Some("melissar26"));
        assert_eq!(play.account_thumb_uuid.as_deref(), Some("055a1ca820bd5eab"));
        assert_eq!(
            play.server_uuid.as_deref(),
            Some("544b62f0b4f85d5d8f2c91696763d13578f5264a")
        );
        assert_eq!(play.show_rating_key.as_deref(), Some("146560"));
        assert_eq!(play.episode_rating_key.as_deref(), Some("146734"));
        assert_eq!(play.show_title, "Bob's Burgers");
        assert_eq!((play.season, play.episode), (9, 15));
        assert_eq!(play.viewed_at, Some(1_687_821_924));
        assert_eq!(
            play.episode_guids,
            ["imdb://tt9413736", "tmdb://1707381", "tvdb://7047159"]
        );
    }

    #[test]
    fn legacy_resume_as_scrobble_and_show_key_fallback() {
        let Some(mut v) = sample_value(RESUME) else {
            return;
        };
        v["event"] = json!("media.scrobble");
        let play = play_of(&v).unwrap().unwrap();
        assert_eq!(play.account_id, "1");
        assert_eq!(play.show_rating_key.as_deref(), Some("56850"));
        assert_eq!((play.season, play.episode), (1, 14));
        assert_eq!(
            play.show_guid.as_deref(),
            Some("com.plexapp.agents.thetvdb://301376?lang=en")
        );
        assert!(play.episode_guids.is_empty());

        // No grandparentRatingKey: fall back to grandparentKey.
        let meta = v["Metadata"].as_object_mut().unwrap();
        meta.remove("grandparentRatingKey");
        meta.insert("grandparentKey".into(), json!("/library/metadata/777"));
        let key = |v: &Value| play_of(v).unwrap().unwrap().show_rating_key;
        assert_eq!(key(&v).as_deref(), Some("777"));
        v["Metadata"]["grandparentKey"] = json!("/library/metadata/778/children?x=1");
        assert_eq!(key(&v).as_deref(), Some("778"));
        v["Metadata"]["grandparentKey"] = json!("/library/sections/2");
        assert!(matches!(
            play_of(&v),
            Err(PayloadError::InvalidField {
                field: "Metadata.grandparentKey",
                ..
            })
        ));
        v["Metadata"]
            .as_object_mut()
            .unwrap()
            .remove("grandparentKey");
        // Neither key: no show key, the play is still reported.
        assert_eq!(key(&v), None);
    }

    /// A minimal scrobbled episode for field-level tests.
    fn minimal() -> Value {
        json!({
            "event": "media.scrobble",
            "Account": {"id": 5, "title": "a", "thumb": "https://plex.tv/users/ABCdef12/avatar?c=1"},
            "Server": {"uuid": "srv"},
            "Metadata": {
                "type": "episode",
                "ratingKey": "10",
                "grandparentRatingKey": 3,
                "grandparentTitle": "Show",
                "index": 2,
                "parentIndex": 1
            }
        })
    }

    #[test]
    fn minimal_scrobble_and_leniency() {
        let play = play_of(&minimal()).unwrap().unwrap();
        assert_eq!(play.account_id, "5");
        assert_eq!(play.account_thumb_uuid.as_deref(), Some("abcdef12"));
        assert_eq!(play.show_rating_key.as_deref(), Some("3"));
        assert_eq!(play.server_uuid.as_deref(), Some("srv"));
        assert_eq!((play.season, play.episode), (1, 2));
        assert_eq!(play.viewed_at, None);
        assert_eq!(play.year, None);

        // Numbers as strings, ids as numbers, nulls, unknown fields.
        let mut v = minimal();
        v["Account"]["id"] = json!("5");
        v["Metadata"]["index"] = json!("2");
        v["Metadata"]["parentIndex"] = json!(1.0);
        v["Metadata"]["ratingKey"] = json!(10);
        v["Metadata"]["librarySectionID"] = json!("7");
        v["Metadata"]["lastViewedAt"] = json!("1700000000");
        v["Metadata"]["year"] = json!(null);
        v["Metadata"]["Guid"] = json!(null);
        v["Metadata"]["somethingNew"] = json!({"deep": [1, 2, {"x": null}]});
        v["user"] = json!(1);
        v["owner"] = json!("false");
        v["Player"] = json!(null);
        let text = v.to_string();
        let p = parse_payload(text.as_bytes()).unwrap();
        assert_eq!(p.user, Some(true));
        assert_eq!(p.owner, Some(false));
        assert_eq!(p.metadata.as_ref().unwrap().library_section_id, Some(7));
        let play = to_play(&p).unwrap().unwrap();
        assert_eq!(play.episode_rating_key.as_deref(), Some("10"));
        assert_eq!((play.season, play.episode), (1, 2));
        assert_eq!(play.viewed_at, Some(1_700_000_000));

        // Type names are compared case-insensitively; other events ignored.
        let mut v = minimal();
        v["Metadata"]["type"] = json!("Episode");
        assert!(play_of(&v).unwrap().is_some());
        for event in ["media.play", "media.stop", "media.rate", "library.new"] {
            let mut v = minimal();
            v["event"] = json!(event);
            assert_eq!(play_of(&v).unwrap(), None, "{event}");
        }
    }

    #[test]
    fn avatar_uuid_forms() {
        assert_eq!(
            avatar_uuid("https://plex.tv/users/b921c1a7580bf543/avatar?c=1").as_deref(),
            Some("b921c1a7580bf543")
        );
        assert_eq!(
            avatar_uuid("https://plex.tv/users/b921c1a7580bf543").as_deref(),
            Some("b921c1a7580bf543")
        );
        assert_eq!(avatar_uuid("https://plex.tv/users/xx"), None);
        assert_eq!(avatar_uuid("https://evil.example/users/abcd/avatar"), None);
        assert_eq!(avatar_uuid("/users/abcd"), None);
        assert_eq!(avatar_uuid("https://plex.tv/users//avatar"), None);
    }

    fn err_of(v: &Value) -> PayloadError {
        play_of(v).unwrap_err()
    }

    #[test]
    fn an_episode_without_its_numbers_is_ignored_with_the_reason() {
        for (drop, says) in [
            (&["index"][..], "without an episode number"),
            (&["parentIndex"][..], "without a season number"),
            (
                &["index", "parentIndex"][..],
                "without a season or an episode number",
            ),
        ] {
            let mut v = minimal();
            for field in drop {
                v["Metadata"].as_object_mut().unwrap().remove(*field);
            }
            assert_eq!(play_of(&v).unwrap(), None, "{drop:?}");
            let why = ignored_because(&parse_payload(v.to_string().as_bytes()).unwrap());
            assert!(
                why.starts_with("ignored media.scrobble of an episode"),
                "{why}"
            );
            assert!(why.contains(says), "{why}");
        }
        // A number that is there but malformed is still the sender's error.
        let mut v = minimal();
        v["Metadata"]["index"] = json!(-2);
        assert!(play_of(&v).is_err());
        // Other classifications keep their wording.
        let mut v = minimal();
        v["Metadata"]["type"] = json!("movie");
        let why = ignored_because(&parse_payload(v.to_string().as_bytes()).unwrap());
        assert_eq!(why, "ignored media.scrobble of movie");
        let mut v = minimal();
        v["event"] = json!("media.pause");
        let why = ignored_because(&parse_payload(v.to_string().as_bytes()).unwrap());
        assert_eq!(why, "ignored media.pause of episode");
    }

    #[test]
    fn missing_fields_are_named() {
        for (path, field) in [
            ("grandparentTitle", "Metadata.grandparentTitle"),
            ("type", "Metadata.type"),
        ] {
            let mut v = minimal();
            v["Metadata"].as_object_mut().unwrap().remove(path);
            let err = err_of(&v);
            assert_eq!(err, PayloadError::MissingField { field }, "{path}");
            assert_eq!(err.to_string(), format!("{field} missing"));
        }
        let mut v = minimal();
        v["Metadata"]["grandparentTitle"] = json!("  ");
        assert_eq!(
            err_of(&v),
            PayloadError::MissingField {
                field: "Metadata.grandparentTitle"
            }
        );
        for (top, field) in [("Account", "Account"), ("Metadata", "Metadata")] {
            let mut v = minimal();
            v.as_object_mut().unwrap().remove(top);
            assert_eq!(err_of(&v), PayloadError::MissingField { field });
        }
        let mut v = minimal();
        v["Account"].as_object_mut().unwrap().remove("id");
        assert_eq!(
            err_of(&v),
            PayloadError::MissingField {
                field: "Account.id"
            }
        );
        // Server and rating keys are optional: the caller can key by title.
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("Server");
        let meta = v["Metadata"].as_object_mut().unwrap();
        meta.remove("ratingKey");
        meta.remove("grandparentRatingKey");
        let play = play_of(&v).unwrap().unwrap();
        assert_eq!(play.server_uuid, None);
        assert_eq!(play.show_rating_key, None);
        assert_eq!(play.episode_rating_key, None);
    }

    #[test]
    fn absurd_numbers_are_named() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("parentIndex", json!(-1), "Metadata.parentIndex"),
            ("index", json!(100_001), "Metadata.index"),
            ("index", json!(5_000_000_000_i64), "Metadata.index"),
            ("parentIndex", json!("-3"), "Metadata.parentIndex"),
            ("lastViewedAt", json!(-5), "Metadata.lastViewedAt"),
            (
                "lastViewedAt",
                json!(1_700_000_000_000_000_i64),
                "Metadata.lastViewedAt",
            ),
            ("year", json!(-2000), "Metadata.year"),
            ("year", json!(99_999), "Metadata.year"),
            ("ratingKey", json!("12/../34"), "Metadata.ratingKey"),
            (
                "grandparentRatingKey",
                json!("abc"),
                "Metadata.grandparentRatingKey",
            ),
        ];
        for (key, value, field) in cases {
            let mut v = minimal();
            v["Metadata"][key] = value.clone();
            match err_of(&v) {
                PayloadError::InvalidField { field: f, reason } => {
                    assert_eq!(f, field, "{key}={value}");
                    assert!(!reason.is_empty());
                }
                other => panic!("{key}={value}: {other:?}"),
            }
        }
        // Boundaries that are fine.
        let mut v = minimal();
        v["Metadata"]["index"] = json!(100_000);
        v["Metadata"]["parentIndex"] = json!(0);
        assert_eq!(
            play_of(&v).unwrap().map(|p| (p.season, p.episode)),
            Some((0, 100_000))
        );
    }

    #[test]
    fn parse_errors() {
        match parse_payload(b"{\n  \"event\": \"x\",\n  oops\n}") {
            Err(PayloadError::InvalidJson { line, column, .. }) => {
                assert_eq!((line, column), (3, 3));
            }
            other => panic!("{other:?}"),
        }
        let e = parse_payload(b"{\"event\":\"a\"").unwrap_err();
        assert!(matches!(e, PayloadError::InvalidJson { .. }), "{e:?}");
        assert!(!e.to_string().contains(" at line 1 column"), "{e}");
        assert!(matches!(
            parse_payload(b""),
            Err(PayloadError::InvalidJson { .. })
        ));
        assert!(matches!(
            parse_payload(b"{} trailing"),
            Err(PayloadError::InvalidJson { .. })
        ));
        assert!(matches!(
            parse_payload(b"\xff"),
            Err(PayloadError::InvalidJson { .. })
        ));
        for (input, found) in [
            (&b"[\"media.scrobble\"]"[..], "array"),
            (b" \"x\"", "string"),
            (b"42", "number"),
            (b"-1", "number"),
            (b"true", "boolean"),
            (b"null", "null"),
        ] {
            assert_eq!(
                parse_payload(input),
                Err(PayloadError::NotAnObject { found })
            );
        }
        assert_eq!(parse_payload(b"{}"), Err(PayloadError::MissingEvent));
        assert_eq!(
            parse_payload(b"{\"event\":null}"),
            Err(PayloadError::MissingEvent)
        );
        assert_eq!(
            parse_payload(b"{\"event\":\" \"}"),
            Err(PayloadError::MissingEvent)
        );
        assert!(matches!(
            parse_payload(b"{\"event\":\"a\",\"Account\":5}"),
            Err(PayloadError::UnexpectedShape { .. })
        ));
        assert!(matches!(
            parse_payload(b"{\"event\":\"a\",\"Metadata\":{\"index\":\"two\"}}"),
            Err(PayloadError::UnexpectedShape { .. })
        ));
        assert!(matches!(
            parse_payload(b"{\"event\":\"a\",\"Metadata\":{\"index\":1.5}}"),
            Err(PayloadError::UnexpectedShape { .. })
        ));
        assert!(matches!(
            parse_payload(b"{\"event\":\"a\",\"Metadata\":{\"index\":18446744073709551615}}"),
            Err(PayloadError::UnexpectedShape { .. })
        ));
        assert!(matches!(
            parse_payload(b"{\"event\":\"a\",\"event\":\"b\"}"),
            Err(PayloadError::UnexpectedShape { .. })
        ));
        // BOM tolerated.
        assert!(parse_payload(b"\xEF\xBB\xBF{\"event\":\"a\"}").is_ok());
        // Messages are single lines.
        for e in [
            parse_payload(b"{").unwrap_err(),
            parse_payload(b"[]").unwrap_err(),
            parse_payload(b"{}").unwrap_err(),
            parse_payload(&b"[".repeat(100)).unwrap_err(),
        ] {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn deep_nesting_is_rejected_without_stack_overflow() {
        for input in [
            b"[".repeat(100_000),
            b"{\"a\":".repeat(100_000),
            format!("{{\"event\":\"x\",\"a\":{}", "[".repeat(100_000)).into_bytes(),
        ] {
            assert!(
                matches!(
                    parse_payload(&input),
                    Err(PayloadError::TooDeep { max_depth: 64, .. })
                ),
                "{:?}",
                parse_payload(&input)
            );
        }
        // Exactly 64 levels (the object + 63 arrays) is fine; 65 is not.
        let nest = |n: usize| {
            format!(
                "{{\"event\":\"x\",\"a\":{}{}}}",
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(parse_payload(nest(63).as_bytes()).is_ok());
        assert!(matches!(
            parse_payload(nest(64).as_bytes()),
            Err(PayloadError::TooDeep { .. })
        ));
        // Brackets inside strings (with escaped quotes) do not count.
        let s = format!("{{\"event\":\"x\",\"a\":\"\\\"{}\"}}", "[".repeat(1000));
        assert!(parse_payload(s.as_bytes()).is_ok());
    }

    /// The scan agrees with a plain byte-by-byte walk (where the error is, and whether there is
    /// one) on random mixes of brackets, quotes, backslashes and newlines.
    #[test]
    fn depth_scan_matches_a_byte_by_byte_walk() {
        fn reference(bytes: &[u8], max: usize) -> Option<(usize, usize)> {
            let (mut depth, mut line, mut col, mut in_str, mut esc) = (0, 1, 0, false, false);
            for &b in bytes {
                if b == b'\n' {
                    line += 1;
                    col = 0;
                } else {
                    col += 1;
                }
                if in_str {
                    match (esc, b) {
                        (true, _) => esc = false,
                        (false, b'\\') => esc = true,
                        (false, b'"') => in_str = false,
                        _ => {}
                    }
                    continue;
                }
                match b {
                    b'"' => in_str = true,
                    b'[' | b'{' => {
                        depth += 1;
                        if depth > max {
                            return Some((line, col));
                        }
                    }
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            None
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"[]{}\"\\\na ";
        for _ in 0..20_000 {
            let len = (rng.next() % 40) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            let got = match check_depth(&input, 3) {
                Ok(()) => None,
                Err(PayloadError::TooDeep { line, column, .. }) => Some((line, column)),
                Err(e) => panic!("{e}"),
            };
            assert_eq!(
                got,
                reference(&input, 3),
                "{:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        let base = match sample_dir() {
            Some(dir) => read(&dir, SCROBBLE),
            None => minimal().to_string().into_bytes(),
        };
        let alphabet: &[u8] = b"{}[]\",:-0123456789.eE \\nulltrue";
        let mut rng = Rng(7);
        for _ in 0..5000 {
            let mut b = base.clone();
            for _ in 0..1 + rng.below(6) {
                match rng.below(4) {
                    0 if !b.is_empty() => {
                        let i = rng.below(b.len());
                        b[i] = alphabet[rng.below(alphabet.len())];
                    }
                    1 => {
                        let i = rng.below(b.len() + 1);
                        b.insert(i, alphabet[rng.below(alphabet.len())]);
                    }
                    2 if !b.is_empty() => {
                        let i = rng.below(b.len());
                        b.remove(i);
                    }
                    _ => {
                        let i = rng.below(b.len() + 1);
                        b.truncate(i);
                    }
                }
            }
            if let Ok(p) = parse_payload(&b) {
                let _ = to_play(&p);
            }
        }
    }
}
