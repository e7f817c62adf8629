//! The admin API of a person's decisions: conflicts (list, resolve one, resolve several),
//! mappings (a filtered, searched, sorted page; change one) and the search over the
//! tracker's catalogue a person picks a show with (`/api/shows`).
//!
//! Conflicts and mappings are named by a short id of their show key ([`key_id`]): 12
//! characters of base32 over a SHA-256 of the key, stable for the show. An id is resolved
//! by looking it up among the open conflicts and the mappings ([`find`]); the long hex ids
//! of earlier releases are still accepted.

use std::collections::{HashMap, HashSet};

use hyper::StatusCode;
use plexsync_plugin_api::guid::{ExternalId, parse_show_guids};

use super::{Resp, error, json};
use crate::api::{
    BulkResolveRequest, BulkResolved, BulkResolvedItem, CandidateView, ConflictView, Items,
    MAX_PER_PAGE, MappingChange, MappingChanged, MappingFilter, MappingPage, MappingSort,
    MappingStatus, MappingView, PlexShowView, ResolveAction, ResolveRequest, Resolved, ShowHit,
    TrackerShowView,
};
use crate::model::{Conflict, PlexShow};
use crate::plex::ShowMeta;
use crate::state::Shared;
use crate::store::StoreError;
use crate::store::ops::ConflictDecision;

/// Length of a short id: 60 bits, far from a collision among a household's shows.
const ID_LEN: usize = 12;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The short, URL-safe id of a show key (keys contain `/` and can be long).
pub fn key_id(key: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(key.as_bytes());
    let mut n = 0u64;
    for b in d.iter().take(8) {
        n = (n << 8) | u64::from(*b);
    }
    (0..ID_LEN)
        .map(|i| BASE32[((n >> (59 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// The key of an id of an earlier release (the key's bytes in hex).
fn legacy_key(id: &str) -> Option<String> {
    if id.len() <= ID_LEN || id.len() > 2048 {
        return None;
    }
    String::from_utf8(crate::secrets::unhex(id)?).ok()
}

/// The short id of a long id of an earlier release (None when `id` is not one), so the
/// CLI can name a show by either.
pub fn id_from_legacy(id: &str) -> Option<String> {
    legacy_key(id).map(|k| key_id(&k))
}

/// What an id names.
pub(super) enum Found {
    Conflict(Box<Conflict>),
    Mapping { key: String },
}

/// The open conflict or the mapping `id` names (a short id, or a long one of old).
pub(super) fn find(shared: &Shared, id: &str) -> Result<Option<Found>, StoreError> {
    let legacy = legacy_key(id);
    let named = |key: &str| key_id(key) == id || legacy.as_deref() == Some(key);
    if let Some(c) = shared
        .store
        .conflicts()?
        .into_iter()
        .find(|c| named(&c.key))
    {
        return Ok(Some(Found::Conflict(Box::new(c))));
    }
    Ok(shared
        .store
        .mapping_entries()?
        .into_iter()
        .find(|(k, _)| named(k))
        .map(|(key, _)| Found::Mapping { key }))
}

/// Case- and diacritic-insensitive form of a title for searching: compatibility
/// decomposition without combining marks, lower case, punctuation as single spaces.
pub fn fold(s: &str) -> String {
    let nfkd = icu_normalizer::DecomposingNormalizerBorrowed::new_nfkd().normalize(s);
    let mut out = String::with_capacity(nfkd.len());
    for c in nfkd.chars() {
        let combining = matches!(c as u32, 0x300..=0x36F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F);
        if combining {
            continue;
        }
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    out.trim().to_string()
}

struct Ids {
    tmdb: Option<u64>,
    tvdb: Option<u64>,
    imdb: Option<String>,
}

fn ids_of(guids: &[String]) -> Ids {
    let mut ids = Ids {
        tmdb: None,
        tvdb: None,
        imdb: None,
    };
    for id in parse_show_guids(guids) {
        match id {
            ExternalId::Tmdb(n) => ids.tmdb = ids.tmdb.or(Some(n)),
            ExternalId::Tvdb(n) => ids.tvdb = ids.tvdb.or(Some(n)),
            ExternalId::Imdb(s) => ids.imdb = ids.imdb.or(Some(s)),
            _ => {}
        }
    }
    ids
}

/// The Plex show as a person deciding needs it: what the play said, completed from Plex's
/// show metadata cached by the resolver (year, library, the show's own guids).
fn plex_view(shared: &Shared, key: &str, p: &PlexShow, known: &[String]) -> PlexShowView {
    let meta: Option<ShowMeta> = shared.store.show_info(key).ok().flatten();
    let mut guids = known.to_vec();
    for g in p.query().guids.into_iter().chain(
        meta.iter()
            .flat_map(|m| m.guid.iter().chain(m.guids.iter()).cloned()),
    ) {
        if !guids.contains(&g) {
            guids.push(g);
        }
    }
    let ids = ids_of(&guids);
    PlexShowView {
        rating_key: p.rating_key.clone(),
        title: p.title.clone(),
        year: p.year.or(meta.as_ref().and_then(|m| m.year)),
        library: meta.and_then(|m| m.library),
        guids,
        tmdb_id: ids.tmdb,
        tvdb_id: ids.tvdb,
        imdb_id: ids.imdb,
    }
}

fn tracker_show(shared: &Shared, id: &str) -> TrackerShowView {
    match shared
        .catalogue()
        .as_ref()
        .and_then(|c| c.get(id).map(|s| s.to_show()))
    {
        Some(s) => TrackerShowView {
            id: s.id,
            title: Some(s.title),
            year: s.year,
        },
        None => TrackerShowView {
            id: id.to_string(),
            title: None,
            year: None,
        },
    }
}

/// Why `c`'s candidates cannot be offered now, if they cannot.
///
/// They are hidden rather than shown marked: they are show ids of another tracker (or of one
/// whose catalogue is not read, so neither title nor existence can be told), a pick among them
/// is refused at best and at worst maps the show to whatever the current tracker has under
/// that id. A person is better served by "wait" (or a search of the catalogue once it is
/// read, or Create / Ignore, which do not depend on them).
fn candidates_withheld(shared: &Shared, c: &Conflict) -> Option<String> {
    // A conflict that names no tracker is the current one's (see `Conflict::tracker`).
    let other = c
        .tracker
        .as_deref()
        .is_some_and(|t| t != shared.plugins().exporter.instance());
    // Offline (the CLI on the store) no catalogue is ever read: the tag alone tells.
    let unread = shared.serving() && shared.catalogue().is_none();
    match (other, unread) {
        (true, true) => Some("waiting for the tracker's catalogue: the candidates found in another tracker's are not offered; the show is matched again once this one's is read".into()),
        (true, false) => Some("the candidates were found in another tracker's catalogue and are not offered; the daemon matches the show again against this tracker's".into()),
        (false, true) => Some("waiting for the tracker's catalogue: the candidates are offered once it is read".into()),
        (false, false) => None,
    }
}

fn conflict_view(shared: &Shared, c: &Conflict) -> ConflictView {
    let cat = shared.catalogue();
    let waiting = candidates_withheld(shared, c);
    let offered: &[plexsync_plugin_api::Candidate] = if waiting.is_some() {
        &[]
    } else {
        &c.candidates
    };
    let candidates = offered
        .iter()
        .map(|k| {
            let show = cat.as_ref().and_then(|cat| cat.get(&k.show_id));
            CandidateView {
                show_id: k.show_id.clone(),
                title: show.map(|s| s.title.to_string()),
                year: show.and_then(|s| s.year),
                tmdb_id: show.and_then(|s| s.tmdb_id),
                tvdb_id: show.and_then(|s| s.tvdb_id),
                imdb_id: show.and_then(|s| s.imdb_id.map(str::to_string)),
                score: k.score,
                method: k.method.clone(),
            }
        })
        .collect();
    let mut plex = plex_view(shared, &c.key, &c.plex, &c.query.guids);
    // Conflicts stored before the year was kept on the show have it in the query.
    plex.year = plex.year.or(c.query.year);
    let times = shared.store.play_times(&c.held).unwrap_or_default();
    ConflictView {
        id: key_id(&c.key),
        plex,
        reason: c.reason.clone(),
        held_plays: c.held.len(),
        first_play_at: times.first,
        last_play_at: times.last,
        created_at: c.created_at,
        updated_at: c.updated_at,
        candidates,
        waiting,
    }
}

/// `GET /api/conflicts`: newest first.
pub(super) fn conflicts(shared: &Shared) -> Resp {
    match shared.store.conflicts() {
        Ok(mut c) => {
            c.sort_by(|a, b| {
                b.updated_at
                    .cmp(&a.updated_at)
                    .then(b.created_at.cmp(&a.created_at))
            });
            let items: Vec<_> = c.iter().map(|c| conflict_view(shared, c)).collect();
            json(
                StatusCode::OK,
                &Items {
                    total: items.len(),
                    items,
                },
            )
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Every mapping and open conflict as the listing shows them (unfiltered, unsorted).
pub fn mapping_views(shared: &Shared) -> Result<Vec<MappingView>, StoreError> {
    let entries = shared.store.mapping_entries()?;
    let ignored: HashSet<String> = entries
        .iter()
        .filter(|(_, m)| m.ignored)
        .map(|(k, _)| k.clone())
        .collect();
    let held = shared.store.ignored_plays(&ignored)?;
    let mut out = Vec::new();
    for (key, m) in entries {
        let sync = if m.ignored {
            Default::default()
        } else {
            shared.store.show_sync(&m.show_id)?
        };
        out.push(MappingView {
            id: key_id(&key),
            plex: plex_view(shared, &key, &m.plex, &[]),
            tracker: (!m.ignored).then(|| tracker_show(shared, &m.show_id)),
            status: if m.ignored {
                MappingStatus::Ignored
            } else {
                MappingStatus::Mapped
            },
            method: Some(m.method.clone()),
            confidence: Some(m.confidence),
            manual: m.manual,
            sync_enabled: m.sync_enabled && !m.ignored,
            held_plays: m.ignored.then(|| held.get(&key).map_or(0, |t| t.count)),
            plays_synced: sync.plays_synced,
            last_synced_at: sync.last_synced_at,
            updated_at: m.updated_at.unwrap_or(m.created_at),
        });
    }
    for c in shared.store.conflicts()? {
        let mut plex = plex_view(shared, &c.key, &c.plex, &c.query.guids);
        plex.year = plex.year.or(c.query.year);
        out.push(MappingView {
            id: key_id(&c.key),
            plex,
            tracker: None,
            status: MappingStatus::Conflict,
            method: None,
            // Another tracker's best score says nothing about this one.
            confidence: candidates_withheld(shared, &c)
                .is_none()
                .then(|| c.candidates.first().map(|k| k.score))
                .flatten(),
            manual: false,
            sync_enabled: false,
            held_plays: Some(c.held.len()),
            plays_synced: 0,
            last_synced_at: None,
            updated_at: c.updated_at,
        });
    }
    Ok(out)
}

/// The query of `GET /api/mappings`, checked.
pub struct MappingQuery {
    pub status: MappingFilter,
    pub q: String,
    pub sort: MappingSort,
    pub page: usize,
    pub per_page: usize,
}

impl MappingQuery {
    /// From the URL's parameters (`filter=` is the name earlier releases used for `status`).
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, String> {
        let status = q.get("status").or_else(|| q.get("filter"));
        let status = match status {
            None => MappingFilter::All,
            Some(s) => MappingFilter::parse(s)
                .ok_or_else(|| format!("status {s:?} is not one of {}", MappingFilter::CHOICES))?,
        };
        let sort = match q.get("sort") {
            None => MappingSort::Title,
            Some(s) => MappingSort::parse(s)
                .ok_or_else(|| format!("sort {s:?} is not one of {}", MappingSort::CHOICES))?,
        };
        let number = |name: &str, default: usize| -> Result<usize, String> {
            match q.get(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("{name} {v:?} is not a whole number from 1")),
            }
        };
        let page = number("page", 1)?;
        let per_page = number("per_page", 50)?;
        if per_page > MAX_PER_PAGE {
            return Err(format!("per_page is at most {MAX_PER_PAGE}"));
        }
        Ok(MappingQuery {
            status,
            q: q.get("q").map(|s| percent_decode(s)).unwrap_or_default(),
            sort,
            page,
            per_page,
        })
    }
}

/// `%XX` and `+` of a URL query value (the page and curl send them).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a listing row answers a person's search: the folded text inside the folded Plex
/// or tracker title, or the row's ratingKey / id / tracker id exactly.
fn matches_search(m: &MappingView, folded: &str, raw: &str) -> bool {
    if folded.is_empty() {
        return true;
    }
    let hay = |t: &str| fold(t).contains(folded);
    hay(&m.plex.title)
        || m.tracker
            .as_ref()
            .and_then(|t| t.title.as_deref())
            .is_some_and(hay)
        || m.plex.rating_key.as_deref() == Some(raw)
        || m.id == raw
        || m.tracker.as_ref().is_some_and(|t| t.id == raw)
}

fn plays_of(m: &MappingView) -> u64 {
    m.plays_synced + m.held_plays.unwrap_or(0) as u64
}

/// `GET /api/mappings`: one page of the filtered, searched and sorted listing.
pub fn mappings_page(shared: &Shared, q: &MappingQuery) -> Result<MappingPage, StoreError> {
    let folded = fold(&q.q);
    let raw = q.q.trim();
    let mut rows: Vec<MappingView> = mapping_views(shared)?
        .into_iter()
        .filter(|m| match q.status {
            MappingFilter::All => true,
            MappingFilter::Mapped => m.status == MappingStatus::Mapped,
            MappingFilter::Ignored => m.status == MappingStatus::Ignored,
            MappingFilter::Conflict => m.status == MappingStatus::Conflict,
        })
        .filter(|m| matches_search(m, &folded, raw))
        .collect();
    let title_key = |m: &MappingView| (fold(&m.plex.title), m.plex.year, m.id.clone());
    match q.sort {
        MappingSort::Title => rows.sort_by_cached_key(title_key),
        MappingSort::Updated => rows.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then_with(|| title_key(a).cmp(&title_key(b)))
        }),
        MappingSort::Plays => rows.sort_by(|a, b| {
            plays_of(b)
                .cmp(&plays_of(a))
                .then_with(|| title_key(a).cmp(&title_key(b)))
        }),
    }
    let total = rows.len();
    let items = rows
        .into_iter()
        .skip((q.page - 1).saturating_mul(q.per_page))
        .take(q.per_page)
        .collect();
    Ok(MappingPage {
        items,
        total,
        page: q.page,
    })
}

/// `GET /api/shows?q=…&year=…&limit=…`: the tracker's shows a person may mean, best first.
/// The matcher chain answers (the first matcher that can search, with its own
/// normalisation and index); without one, a plain folded-substring scan of the catalogue.
pub fn search_shows(shared: &Shared, text: &str, year: Option<i32>, limit: usize) -> Vec<ShowHit> {
    let Some(cat) = shared.catalogue() else {
        return Vec::new();
    };
    let mut found: Vec<(String, f32)> = Vec::new();
    for m in &shared.plugins().matchers {
        let hits = m.search(text, year, limit);
        if !hits.is_empty() {
            found = hits.into_iter().map(|c| (c.show_id, c.score)).collect();
            break;
        }
    }
    if found.is_empty() {
        let needle = fold(text);
        if !needle.is_empty() {
            found = cat
                .iter()
                .filter(|s| fold(s.title).contains(&needle))
                .take(limit)
                .map(|s| (s.id.to_string(), 0.5))
                .collect();
        }
    }
    found
        .into_iter()
        .filter_map(|(id, score)| {
            let s = cat.get(&id)?;
            Some(ShowHit {
                id: s.id.to_string(),
                title: s.title.to_string(),
                year: s.year,
                tmdb_id: s.tmdb_id,
                tvdb_id: s.tvdb_id,
                imdb_id: s.imdb_id.map(str::to_string),
                score,
            })
        })
        .take(limit)
        .collect()
}

/// Largest `limit` of a show search.
const MAX_SEARCH: usize = 100;

pub(super) fn shows(shared: &Shared, q: &HashMap<String, String>) -> Resp {
    let text = percent_decode(q.get("q").map(String::as_str).unwrap_or(""));
    if text.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "q: say what to search for");
    }
    let year = match q.get("year").filter(|y| !y.is_empty()) {
        None => None,
        Some(y) => match y.parse::<i32>() {
            Ok(y) if (1800..=2200).contains(&y) => Some(y),
            _ => return error(StatusCode::BAD_REQUEST, format!("year {y:?} is not a year")),
        },
    };
    let limit = match q.get("limit") {
        None => 20,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_SEARCH).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("limit {l:?} is not a number from 1 to {MAX_SEARCH}"),
                );
            }
        },
    };
    let items = search_shows(shared, text.trim(), year, limit);
    json(
        StatusCode::OK,
        &Items {
            total: items.len(),
            items,
        },
    )
}

/// Carry out a person's decision on an open conflict; the error is the answer to give.
/// `sync`: whether a show mapped by it sends its plays (a mapping made with sync off holds
/// them, in the same write).
async fn decide(
    shared: &Shared,
    conflict: &Conflict,
    action: ResolveAction,
    show_id: Option<String>,
    sync: bool,
) -> Result<Resolved, (StatusCode, String)> {
    // One decision at a time on a conflict, held until it is written: a double click, the
    // page and the CLI at once, or a retried request must not create the tracker show twice,
    // nor may the rematch after a tracker switch map the conflict while a show is being
    // created for it (the show would be left orphaned). Whoever comes second finds the
    // conflict as the first left it.
    let _claim = shared.claims.claim(&conflict.key).await;
    match shared.store.conflict(&conflict.key) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(decided_meanwhile(shared, conflict)),
        Err(e) => return Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
    // The show a *Create new* made (or found made) in the tracker, for its answer below.
    let mut created = None;
    let decision = match action {
        ResolveAction::Select => {
            let Some(show_id) = show_id else {
                return Err((StatusCode::BAD_REQUEST, "select needs a show_id".into()));
            };
            check_show_id(shared, &show_id)?;
            ConflictDecision::Select {
                show_id,
                method: "manual".into(),
                sync,
            }
        }
        ResolveAction::Create => {
            let failed = |e: plexsync_plugin_api::PluginError| {
                (
                    StatusCode::BAD_GATEWAY,
                    format!("the tracker did not create the show: {e}"),
                )
            };
            // A person asked for it: created from the title even without a TMDB id.
            let id = match crate::pipeline::create_show(shared, &conflict.query, false).await {
                Ok(Some(id)) => id,
                Ok(None) => {
                    return Err(failed(plexsync_plugin_api::PluginError::permanent(
                        "nothing to create the show from",
                    )));
                }
                Err(e) => return Err(failed(e)),
            };
            created = Some(id.clone());
            ConflictDecision::Select {
                show_id: id,
                method: "created".into(),
                sync,
            }
        }
        ResolveAction::Ignore => ConflictDecision::Ignore,
    };
    match shared
        .store
        .resolve_conflict(conflict.key.clone(), decision)
        .await
    {
        Ok((released, queued)) => {
            if created.is_some() {
                crate::pipeline::create_recorded(shared, &conflict.query);
            }
            tracing::info!(show = %conflict.plex.title, released, queued, action = ?action, "conflict resolved");
            shared.wake.export.notify_one();
            Ok(Resolved {
                resolved: true,
                plays_released: released,
                episodes_queued: queued,
            })
        }
        Err(e) => {
            let status = match e {
                StoreError::NotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let Some(id) = created else {
                return Err((status, e.to_string()));
            };
            // The tracker has the show and nothing maps to it yet: remembered, so that the
            // person's next *Create new* maps to it rather than make a second one.
            let marked = crate::pipeline::create_unrecorded(shared, &conflict.query, &id, &e).await;
            let title = &conflict.plex.title;
            Err((
                status,
                match e {
                    StoreError::NotFound(m) => format!(
                        "the tracker has the show {title:?} (show id {id:?}), but the conflict was decided meanwhile ({m}): nothing maps to that show"
                    ),
                    // Only a stored mark outlives this process: without it, a restart (or
                    // the CLI offline, its own process) would not know the show.
                    e if marked => format!(
                        "the tracker has the show {title:?} (show id {id:?}), but the decision could not be recorded: {e}; once that is fixed, Create new again maps the conflict to this show and does not create another (as does Select with show id {id:?})"
                    ),
                    e => format!(
                        "the tracker has the show {title:?} (show id {id:?}), but the decision could not be recorded: {e}; once that is fixed, choose it with Select (show id {id:?}): Create new maps to it only while this daemon runs"
                    ),
                },
            ))
        }
    }
}

/// The answer to a decision on a conflict that is no longer open: decided by a person (one
/// request before this one), or mapped by the daemon itself when it matched the conflict
/// again against a new tracker's catalogue (409: the person is told what was chosen).
fn decided_meanwhile(shared: &Shared, conflict: &Conflict) -> (StatusCode, String) {
    let title = &conflict.plex.title;
    match shared.store.mapping(&conflict.key) {
        Ok(Some(m)) if !m.manual && !m.ignored => {
            let show = tracker_show(shared, &m.show_id);
            let named = match &show.title {
                Some(t) => format!("{:?} ({t:?})", m.show_id),
                None => format!("{:?}", m.show_id),
            };
            (
                StatusCode::CONFLICT,
                format!(
                    "the conflict of {title:?} was decided meanwhile: the daemon matched it against the tracker's catalogue and mapped it to show {named}; change that mapping if it is not the show"
                ),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            format!("the conflict of {title:?} was decided meanwhile"),
        ),
    }
}

/// A show id a person chose must be the tracker's: in its catalogue. The daemon without a
/// live catalogue (its first read, or a reload that named another tracker) cannot tell, so it
/// refuses for now rather than map to an id that may be another tracker's; offline, with no
/// cached copy, the person's word stands as before.
fn check_show_id(shared: &Shared, show_id: &str) -> Result<(), (StatusCode, String)> {
    match shared.catalogue() {
        Some(cat) if cat.get(show_id).is_none() => Err((
            StatusCode::BAD_REQUEST,
            format!("show_id {show_id:?} is not in the tracker's catalogue"),
        )),
        None if shared.serving() => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the tracker's catalogue has not been read yet (a first start, or the config names another tracker): try again once it is (`plexsync status` shows the catalogue)".into(),
        )),
        _ => Ok(()),
    }
}

fn open_conflict(shared: &Shared, id: &str) -> Result<Conflict, (StatusCode, String)> {
    match find(shared, id) {
        Ok(Some(Found::Conflict(c))) => Ok(*c),
        Ok(_) => Err((
            StatusCode::NOT_FOUND,
            format!("no open conflict has the id {id:?}"),
        )),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// `POST /api/conflicts/{id}/resolve`.
pub(super) async fn resolve(shared: &Shared, id: &str, body: &[u8]) -> Resp {
    let r: ResolveRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let conflict = match open_conflict(shared, id) {
        Ok(c) => c,
        Err((s, m)) => return error(s, m),
    };
    let show_id = r.show_id.and_then(crate::api::ShowId::into_id);
    match decide(shared, &conflict, r.action, show_id, true).await {
        Ok(v) => json(StatusCode::OK, &v),
        Err((s, m)) => error(s, m),
    }
}

/// Most conflicts one bulk request decides.
const MAX_BULK: usize = 500;

/// `POST /api/conflicts/resolve`: ignore or create several conflicts; one answer per id,
/// each decided on its own (one failing leaves the others decided).
pub(super) async fn resolve_many(shared: &Shared, body: &[u8]) -> Resp {
    let r: BulkResolveRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    if r.action == ResolveAction::Select {
        return error(
            StatusCode::BAD_REQUEST,
            "action must be ignore or create (select names a show: decide each conflict on its own)",
        );
    }
    if r.ids.is_empty() || r.ids.len() > MAX_BULK {
        return error(
            StatusCode::BAD_REQUEST,
            format!("ids: name 1 to {MAX_BULK} conflicts"),
        );
    }
    let mut items = Vec::with_capacity(r.ids.len());
    for id in r.ids {
        let outcome = match open_conflict(shared, &id) {
            Ok(c) => decide(shared, &c, r.action, None, true).await,
            Err(e) => Err(e),
        };
        items.push(match outcome {
            Ok(v) => BulkResolvedItem {
                id,
                ok: true,
                error: None,
                plays_released: v.plays_released,
                episodes_queued: v.episodes_queued,
            },
            Err((_, m)) => BulkResolvedItem {
                id,
                ok: false,
                error: Some(m),
                plays_released: 0,
                episodes_queued: 0,
            },
        });
    }
    json(StatusCode::OK, &BulkResolved { items })
}

/// `PATCH /api/mappings/{id}`: remap, or switch sync. On an ignored show a new `show_id`
/// maps it, turns sync on and sends every held play; on an open conflict it decides the
/// conflict for that show (so one remap works on every row of the listing).
pub(super) async fn patch_mapping(shared: &Shared, id: &str, body: &[u8]) -> Resp {
    let r: MappingChange = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let show_id = match r.show_id.map(crate::api::ShowId::into_id) {
        None => None,
        Some(Some(s)) => Some(s),
        Some(None) => return error(StatusCode::BAD_REQUEST, "show_id must be a tracker show id"),
    };
    if let Some(id) = &show_id {
        if let Err((status, msg)) = check_show_id(shared, id) {
            return error(status, msg);
        }
    }
    if show_id.is_none() && r.sync_enabled.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "nothing to change: send sync_enabled and/or show_id",
        );
    }
    let key = match find(shared, id) {
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no mapping has the id {id:?}"),
            );
        }
        Ok(Some(Found::Mapping { key, .. })) => key,
        Ok(Some(Found::Conflict(c))) => {
            let Some(show_id) = show_id else {
                return error(
                    StatusCode::CONFLICT,
                    "this show waits in a conflict: choose a tracker show (show_id) first",
                );
            };
            // One write: the mapping is made with the sync asked for, so plays held by the
            // conflict are never queued when sync is to be off.
            let sync = r.sync_enabled.unwrap_or(true);
            return match decide(
                shared,
                &c,
                ResolveAction::Select,
                Some(show_id.clone()),
                sync,
            )
            .await
            {
                Ok(v) => {
                    tracing::info!(show = %c.plex.title, show_id = %show_id, sync, released = v.plays_released, queued = v.episodes_queued, "mapping changed");
                    json(
                        StatusCode::OK,
                        &MappingChanged {
                            id: id.to_string(),
                            show_id,
                            sync_enabled: sync,
                            method: "manual".into(),
                            plays_released: v.plays_released,
                            episodes_queued: v.episodes_queued,
                        },
                    )
                }
                Err((s, m)) => error(s, m),
            };
        }
    };
    match shared
        .store
        .update_mapping(key, show_id, r.sync_enabled)
        .await
    {
        Ok(u) => {
            let (released, queued) = (u.plays_released, u.episodes_queued);
            if queued > 0 {
                shared.wake.export.notify_one();
            }
            tracing::info!(show = %u.mapping.plex.title, show_id = %u.mapping.show_id, sync = u.mapping.sync_enabled, released, queued, "mapping changed");
            json(
                StatusCode::OK,
                &MappingChanged {
                    id: id.to_string(),
                    show_id: u.mapping.show_id,
                    sync_enabled: u.mapping.sync_enabled,
                    method: u.mapping.method,
                    plays_released: released,
                    episodes_queued: queued,
                },
            )
        }
        Err(StoreError::NotFound(m)) => error(StatusCode::NOT_FOUND, m),
        Err(StoreError::Invalid(m)) => error(StatusCode::CONFLICT, m),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon with no live catalogue (its first read, or a reload to another tracker) cannot
    /// check a chosen show id: it refuses for now; with a catalogue, an id not in it is refused.
    #[tokio::test]
    async fn a_chosen_show_id_waits_for_the_trackers_catalogue() {
        let dir = tempfile::tempdir().unwrap();
        let shared = crate::state::open_for_test(dir.path()).await;
        let body = br#"{"show_id": "101"}"#.to_vec();
        // Offline (not serving): the person's word stands; the mapping does not exist.
        let e = crate::admin::call(&shared, hyper::Method::PATCH, "mappings/abc", body.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("404") || e.contains("no "), "{e}");
        shared.mark_serving();
        let e = crate::admin::call(&shared, hyper::Method::PATCH, "mappings/abc", body.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not been read yet"), "{e}");
        shared.set_catalogue(std::sync::Arc::new(plexsync_plugin_api::Catalogue::new(
            vec![plexsync_plugin_api::CatalogShow {
                id: "7".into(),
                title: "Seven".into(),
                ..Default::default()
            }],
        )));
        let e = crate::admin::call(&shared, hyper::Method::PATCH, "mappings/abc", body)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in the tracker's catalogue"), "{e}");
    }

    #[test]
    fn ids_are_short_stable_and_url_safe() {
        let a = key_id("0123456789abcdef0123456789abcdef01234567/40275");
        assert_eq!(a.len(), ID_LEN);
        assert_eq!(a, key_id("0123456789abcdef0123456789abcdef01234567/40275"));
        assert_ne!(a, key_id("0123456789abcdef0123456789abcdef01234567/40276"));
        assert!(a.bytes().all(|b| BASE32.contains(&b)));
        let hex = crate::secrets::hex(b"srv-abcdef/10");
        assert_eq!(legacy_key(&hex).as_deref(), Some("srv-abcdef/10"));
        assert_eq!(legacy_key(&a), None);
    }

    #[test]
    fn fold_ignores_case_diacritics_and_punctuation() {
        assert_eq!(fold("Shōgun (2024)"), "shogun 2024");
        assert_eq!(fold("Pokémon: The Series"), "pokemon the series");
        assert_eq!(fold("ＡＢＣ"), "abc");
        assert_eq!(fold("范马刃牙"), "范马刃牙");
        assert!(fold("LUCKY MAN").contains(&fold("lucky")));
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("lucky+man"), "lucky man");
        assert_eq!(percent_decode("Sh%C5%8Dgun"), "Shōgun");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn mapping_queries_are_checked() {
        let q = |s: &str| {
            MappingQuery::parse(&super::super::parse_query(s))
                .map(|m| (m.status.as_str(), m.sort.as_str(), m.page, m.per_page, m.q))
        };
        assert_eq!(q("").unwrap(), ("all", "title", 1, 50, String::new()));
        assert_eq!(q("filter=unmapped").unwrap().0, "ignored");
        assert_eq!(
            q("status=conflict&sort=plays&page=2&per_page=500&q=a+b").unwrap(),
            ("conflict", "plays", 2, 500, "a b".to_string())
        );
        assert!(
            q("status=bogus")
                .unwrap_err()
                .contains("all, mapped, ignored or conflict")
        );
        assert!(q("sort=x").unwrap_err().contains("title, updated or plays"));
        assert!(q("per_page=501").is_err());
        assert!(q("page=0").is_err());
    }
}
