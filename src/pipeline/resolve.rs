//! The resolver task: each pending play's show through the mapping cache, Plex's show ids and
//! the matcher chain ([`super::run_chain`]) to a mapping, a conflict (tagged with the tracker
//! whose catalogue it was matched against) or "retry later"; the same rules ([`rematch`]) for
//! an open conflict asked again after a tracker switch; and creating a show in the tracker
//! when a person asks for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexsync_plugin_api::{Candidate, ShowQuery};

use crate::model::{Conflict, Mapping, Play, now_millis, now_secs};
use crate::plex::{PlexError, ShowMeta};
use crate::state::Shared;
use crate::store::ops::{Applied, Resolution};

use super::{ChainResult, backoff, run_chain};

/// Resolve pending plays forever (until shutdown).
/// Plays resolved per round: matching happens once per show in a round, and all outcomes
/// are applied in one group commit.
const RESOLVE_BATCH: usize = 512;

/// While plays keep arriving, rounds start at most this often (one scan, one lookup per show
/// and one write for all the plays that came meanwhile, not one round per webhook on the
/// store's one writer). A lone play (no round in the last interval) is resolved at once.
/// Shorter than `[outbox] coalesce`, whose exporter counts outbox growth within it as one
/// burst.
const BUSY_ROUND_INTERVAL: Duration = Duration::from_millis(5);

/// After a round whose store read or write failed (a full disk, a store that cannot reopen)
/// the next waits this long, doubling per failed round up to [`FAILED_ROUND_MAX`] (each
/// jittered to between half and all of it, [`backoff`]); a round that succeeds resets it. The failed round's plays stay due, so without the pause every
/// round would run the whole matcher chain again a few ms later, re-asking Plex, TMDB and
/// exec programs about every unmapped show and logging an error each time.
const FAILED_ROUND_PAUSE: Duration = Duration::from_secs(1);
const FAILED_ROUND_MAX: Duration = Duration::from_secs(60);

pub async fn resolver_task(shared: Arc<Shared>) {
    // Retry counts per show key: a show Plex cannot describe right now backs off as a whole.
    let mut attempts: HashMap<String, u32> = HashMap::new();
    let mut shutdown = shared.shutdown.subscribe();
    let mut last_round: Option<Instant> = None;
    let mut catching_up = false;
    // Failed rounds in a row (see FAILED_ROUND_PAUSE).
    let mut failed_rounds: u32 = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Some(wait) = last_round
            .filter(|_| !catching_up)
            .and_then(|t| BUSY_ROUND_INTERVAL.checked_sub(t.elapsed()))
        {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => continue,
            }
        }
        last_round = Some(Instant::now());
        let due = match shared.store.due_pending(now_millis(), RESOLVE_BATCH) {
            Ok(d) => d,
            Err(e) => {
                failed_rounds += 1;
                let pause = backoff(failed_rounds, FAILED_ROUND_PAUSE, FAILED_ROUND_MAX);
                tracing::error!(error = %e, failed_rounds, retry_in_ms = pause.as_millis() as u64, "cannot read pending plays; the resolver pauses");
                pause_after_failure(pause, &mut shutdown).await;
                catching_up = false;
                continue;
            }
        };
        // The tracker the round's decisions are made for; see below.
        let round_tracker = shared.plugins().exporter.instance();
        let mut per_show: HashMap<String, Resolution> = HashMap::new();
        let mut decided = Vec::with_capacity(due.len());
        // Plays left pending because no catalogue is published yet.
        let mut awaiting_catalogue = false;
        for play in &due {
            if *shutdown.borrow() {
                break;
            }
            let key = play.show.key();
            let r = match per_show.get(&key) {
                Some(r) => r.clone(),
                None => match resolve(&shared, play, &mut attempts).await {
                    Some(r) => {
                        per_show.insert(key.clone(), r.clone());
                        r
                    }
                    None => {
                        awaiting_catalogue = true;
                        continue;
                    }
                },
            };
            if !matches!(r, Resolution::Retry { .. }) {
                attempts.remove(&key);
            }
            decided.push((play.id, r));
        }
        // A new conflict (no held play yet) matched against a tracker that is no longer
        // the current one: a reload came while the round ran, maybe after the pass that asks
        // the old tracker's conflicts again; it must see this one too.
        let tracker = shared.plugins().exporter.instance();
        let foreign = decided.iter().any(|(_, r)| {
            matches!(r, Resolution::Conflict(c)
                if c.held.is_empty() && c.tracker.as_deref().is_some_and(|t| t != tracker))
        });
        // A round's decisions are recorded together at its end, after every play's look-ups
        // (Plex, TMDB, an exec matcher). One made before a reload to another tracker must
        // not land after it: the show would be mapped for good to the old tracker's id, and
        // its episodes sent under it to the new one. So they are recorded only while the
        // round's tracker is still the live one, asked inside the write; otherwise the plays
        // stay pending and the next round decides them against the new one. Only another
        // tracker counts: any other reload or secret keeps the round (a show it created in
        // the tracker, `auto_add_shows`, would otherwise be created again next round).
        let still = {
            let shared = shared.clone();
            let round_tracker = round_tracker.clone();
            move || shared.plugins().exporter.instance() == round_tracker
        };
        let recorded = apply(&shared, decided, still).await;
        if let Ok(false) = recorded {
            tracing::info!(tracker = %round_tracker, "the tracker changed while the round ran; its plays are decided again against the new one");
            catching_up = true;
            continue;
        }
        if let Err(e) = recorded {
            failed_rounds += 1;
            let pause = backoff(failed_rounds, FAILED_ROUND_PAUSE, FAILED_ROUND_MAX);
            tracing::error!(error = %e, failed_rounds, retry_in_ms = pause.as_millis() as u64, "cannot record resolutions; the plays stay pending and the resolver pauses");
            pause_after_failure(pause, &mut shutdown).await;
            catching_up = false;
            continue;
        }
        failed_rounds = 0;
        if foreign {
            shared.wake.conflicts.notify_one();
        }
        catching_up = due.len() >= RESOLVE_BATCH && !awaiting_catalogue;
        if catching_up {
            continue;
        }
        let wait = match shared.store.next_pending_at() {
            // The plays due now wait for the catalogue: its publication wakes this task
            // (`Shared::set_catalogue`), and so do new plays; the timer is only a backstop.
            _ if awaiting_catalogue && shared.catalogue().is_none() => Duration::from_secs(60),
            _ if awaiting_catalogue => Duration::ZERO,
            Ok(Some(t)) => Duration::from_millis((t - now_millis()).clamp(0, 60_000) as u64),
            _ => Duration::from_secs(60),
        };
        tokio::select! {
            _ = shared.wake.resolve.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Record a round's decisions in one write.
/// Record a round's decisions if `still()` holds in the write; false when it did not (nothing
/// recorded).
async fn apply(
    shared: &Shared,
    decided: Vec<(u64, Resolution)>,
    still: impl Fn() -> bool + Send + 'static,
) -> Result<bool, crate::store::StoreError> {
    let Some(applied) = shared.store.apply_resolutions_while(decided, still).await? else {
        return Ok(false);
    };
    if applied.contains(&Applied::Queued) {
        shared.wake.export.notify_one();
    }
    Ok(true)
}

/// The pause after a failed round. New plays and catalogue publications do not cut it
/// short: while the store fails, each would start another round that fails the same way.
async fn pause_after_failure(pause: Duration, shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = shutdown.changed() => {}
    }
}

fn retry_later(attempts: &mut HashMap<String, u32>, show_key: &str) -> Resolution {
    let n = attempts.entry(show_key.to_string()).or_insert(0);
    *n += 1;
    let d = backoff(*n, Duration::from_secs(5), Duration::from_secs(15 * 60));
    Resolution::Retry {
        not_before_ms: now_millis() + d.as_millis() as i64,
    }
}

/// A play's resolution; None while there is no tracker catalogue to match against (first
/// start): the play stays due and the resolver waits for the catalogue's publication.
async fn resolve(
    shared: &Shared,
    play: &Play,
    attempts: &mut HashMap<String, u32>,
) -> Option<Resolution> {
    let key = play.show.key();
    match shared.store.mapping(&key) {
        Ok(Some(m)) if m.ignored => return Some(Resolution::Ignored),
        Ok(Some(m)) => {
            return Some(Resolution::Mapped {
                show_id: m.show_id,
                mapping: None,
            });
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read mappings");
            return Some(retry_later(attempts, &play.show.key()));
        }
    }
    // A show already waiting for a person keeps collecting its plays there.
    if let Ok(Some(c)) = shared.store.conflict(&key) {
        return Some(Resolution::Conflict(Conflict {
            updated_at: now_secs(),
            ..c
        }));
    }
    let Some(catalogue) = shared.catalogue() else {
        tracing::debug!(
            play_id = play.id,
            "no tracker catalogue yet; play waits for it"
        );
        return None;
    };
    match_play(shared, play, attempts, key, &catalogue).await
}

/// Where the resolver would send a show's plays, as a dry run can tell without deciding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Would {
    /// Mapped with its sync on, or the matchers would map it: the tracker show and its title
    /// (when the catalogue knows it).
    Export {
        show_id: String,
        tracker_title: Option<String>,
    },
    /// No match, or already in a conflict: a person decides.
    NeedPerson,
    /// A person ignored the show or switched its sync off: its plays are kept, nothing is sent.
    Hold,
    /// Nothing can be decided now (Plex's show lookup failed, a matcher failed transiently, no
    /// catalogue yet): the resolver would try again later. The reason, for the log.
    Retry(String),
}

/// The resolver's rules for a play's show ([`resolve`], then [`match_play`]), in the same
/// order, without recording anything: the dry runs of `backfill` and `sync` answer through
/// this one function, so they list what the real run then sends.
pub(crate) async fn would_resolve(
    shared: &Shared,
    play: &Play,
) -> Result<Would, crate::store::StoreError> {
    let key = play.show.key();
    if let Some(m) = shared.store.mapping(&key)? {
        // An ignored show's mapping has no tracker show (show_id ""); one with sync off is
        // recorded as watched but never queued for export.
        if m.ignored || !m.sync_enabled {
            return Ok(Would::Hold);
        }
        let tracker_title = tracker_title(shared, &m.show_id);
        return Ok(Would::Export {
            show_id: m.show_id,
            tracker_title,
        });
    }
    if shared.store.conflict(&key)?.is_some() {
        return Ok(Would::NeedPerson);
    }
    if shared.catalogue().is_none() {
        return Ok(Would::Retry("no tracker catalogue yet".into()));
    }
    let query = match enrich(shared, play).await {
        Ok(q) => q,
        Err(e) => return Ok(Would::Retry(e.to_string())),
    };
    let matchers = shared.plugins().matchers.clone();
    let threshold = shared.config().matching.auto_map_threshold;
    Ok(match run_chain(&matchers, &query, threshold).await {
        ChainResult::Mapped { show_id, .. } => Would::Export {
            tracker_title: tracker_title(shared, &show_id),
            show_id,
        },
        ChainResult::Conflict { .. } => Would::NeedPerson,
        ChainResult::Retry(why) => Would::Retry(why),
    })
}

fn tracker_title(shared: &Shared, show_id: &str) -> Option<String> {
    shared
        .catalogue()
        .as_ref()
        .and_then(|c| c.get(show_id))
        .map(|s| s.title.to_string())
}

/// Match a play's show (no mapping, no conflict yet) against `catalogue`; None as for
/// [`decide`].
async fn match_play(
    shared: &Shared,
    play: &Play,
    attempts: &mut HashMap<String, u32>,
    key: String,
    catalogue: &plexsync_plugin_api::Catalogue,
) -> Option<Resolution> {
    let query = match enrich(shared, play).await {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(play_id = play.id, rating_key = play.show.rating_key.as_deref().unwrap_or(""), error = %e, "cannot fetch the show's ids from Plex; play waits");
            return Some(retry_later(attempts, &play.show.key()));
        }
    };
    decide(shared, &play.show, query, key, attempts, catalogue).await
}

/// An open conflict asked again by the resolver's own rules ([`decide`]) on its stored query,
/// against the live catalogue: once the current tracker's catalogue is read after a switch,
/// its candidates (another tracker's) are replaced, or the show is mapped as the resolver maps
/// one (pipeline/rematch.rs). None while no catalogue is live, or as for [`decide`].
pub(crate) async fn rematch(shared: &Shared, c: &Conflict) -> Option<Resolution> {
    let catalogue = shared.catalogue()?;
    // Its backoff is the caller's: a conflict's plays are not pending.
    let mut attempts = HashMap::new();
    decide(
        shared,
        &c.plex,
        c.query.clone(),
        c.key.clone(),
        &mut attempts,
        &catalogue,
    )
    .await
}

/// The matcher chain's decision for a show (`show` as the play or conflict names it, `query`
/// completed from Plex) against `catalogue`: a mapping (or a show created, `[matching]
/// auto_add_shows`), a conflict tagged with the tracker the matchers know, or retry later.
/// The one place a chain answer becomes a resolution, for a pending play and for a conflict
/// matched again. None when the plugins were swapped or the catalogue dropped while the chain
/// ran (a reload, maybe to another tracker): the answer may be against another tracker's
/// shows, so it is asked again once a catalogue is live.
async fn decide(
    shared: &Shared,
    show: &crate::model::PlexShow,
    query: ShowQuery,
    key: String,
    attempts: &mut HashMap<String, u32>,
    catalogue: &plexsync_plugin_api::Catalogue,
) -> Option<Resolution> {
    let plugins = shared.plugins();
    let tracker = plugins.exporter.instance();
    let threshold = shared.config().matching.auto_map_threshold;
    let answer = run_chain(&plugins.matchers, &query, threshold).await;
    if !Arc::ptr_eq(&plugins, &shared.plugins()) || shared.catalogue().is_none() {
        tracing::debug!(show = %show.title, "the plugins changed while the show was matched; it is matched again");
        return None;
    }
    Some(match answer {
        ChainResult::Mapped {
            show_id,
            method,
            confidence,
        } => {
            let title = catalogue
                .get(&show_id)
                .map(|s| s.title.to_string())
                .unwrap_or_default();
            tracing::info!(show_id = %show_id, show = %show.title, tracker_title = %title, method = %method, confidence, "show mapped");
            Resolution::Mapped {
                show_id: show_id.clone(),
                mapping: Some(Mapping {
                    plex: crate::model::PlexShow {
                        year: query.year,
                        ..show.clone()
                    },
                    show_id,
                    method,
                    confidence,
                    manual: false,
                    sync_enabled: true,
                    created_at: now_secs(),
                    ignored: false,
                    updated_at: None,
                }),
            }
        }
        ChainResult::Conflict { candidates, .. }
            if candidates.is_empty() && shared.config().matching.auto_add_shows =>
        {
            match create_show(shared, &query, true).await {
                Ok(Some(show_id)) => {
                    tracing::info!(show_id = %show_id, show = %query.title, "show created in the tracker ([matching] auto_add_shows)");
                    Resolution::Mapped {
                        show_id: show_id.clone(),
                        mapping: Some(Mapping {
                            plex: crate::model::PlexShow {
                                year: query.year,
                                ..show.clone()
                            },
                            show_id,
                            method: "created".into(),
                            confidence: 1.0,
                            manual: false,
                            sync_enabled: true,
                            created_at: now_secs(),
                            ignored: false,
                            updated_at: None,
                        }),
                    }
                }
                Ok(None) => conflict(
                    key,
                    show,
                    &tracker,
                    query,
                    Vec::new(),
                    "no matcher found the show and it has no TMDB id to create it from".into(),
                ),
                Err(e) if !e.is_transient() => {
                    // A refusal (a key that may not create shows, "exists", a bad request)
                    // would be refused again on every retry: a person decides instead, and
                    // health shows the tracker's answer.
                    shared.note_tracker_error(&e);
                    tracing::warn!(show = %query.title, error = %e, "the tracker refused to create the show; it waits for a person");
                    conflict(
                        key,
                        show,
                        &tracker,
                        query,
                        Vec::new(),
                        format!(
                            "the tracker refused to create the show ({e}): choose a show, or create it there and map it"
                        ),
                    )
                }
                Err(e) => {
                    shared.note_tracker_error(&e);
                    tracing::warn!(show = %query.title, error = %e, "cannot create the show in the tracker; play waits");
                    retry_later(attempts, &show.key())
                }
            }
        }
        ChainResult::Conflict { candidates, reason } => {
            tracing::info!(show = %show.title, rating_key = show.rating_key.as_deref().unwrap_or(""), candidates = candidates.len(), reason = %reason, "show needs a person: conflict");
            conflict(key, show, &tracker, query, candidates, reason)
        }
        ChainResult::Retry(why) => {
            tracing::warn!(show = %show.title, error = %why, "matching deferred");
            retry_later(attempts, &show.key())
        }
    })
}

fn conflict(
    key: String,
    show: &crate::model::PlexShow,
    tracker: &str,
    query: ShowQuery,
    candidates: Vec<Candidate>,
    reason: String,
) -> Resolution {
    Resolution::Conflict(Conflict {
        key,
        // A webhook names the show without its year (Metadata.year is the episode's); the
        // query has it from Plex's show metadata, and a person deciding needs it.
        plex: crate::model::PlexShow {
            year: query.year.or(show.year),
            ..show.clone()
        },
        query,
        candidates,
        held: Vec::new(),
        created_at: now_secs(),
        updated_at: now_secs(),
        reason,
        tracker: Some(tracker.to_string()),
    })
}

/// `plugin_kv` prefix of a show create whose answer was lost (a transient failure: the
/// tracker may have created it all the same), by [`create_key`]; the value is when (unix ms)
/// the tracker has surely finished with it: the failure plus [`settle_time`].
const UNSETTLED_CREATE: &str = "host:create-unsettled:";

/// How long after a lost create the tracker may still be carrying it out: as long as the
/// request was allowed to run (a timeout's whole length), and at least 5 s (a reset
/// connection's request may still be at work).
fn settle_time(request_took: Duration) -> Duration {
    request_took.max(Duration::from_secs(5))
}

/// How long such a mark is kept: long past any catalogue read.
const UNSETTLED_FOR: Duration = Duration::from_secs(7 * 86_400);

/// What a create of the show `query` names sends the tracker: its title, year and ids.
fn new_show(query: &ShowQuery) -> plexsync_plugin_api::NewShow {
    use plexsync_plugin_api::guid::{ExternalId, parse_show_guids};
    let mut show = plexsync_plugin_api::NewShow {
        title: query.title.clone(),
        year: query.year,
        ..Default::default()
    };
    for id in parse_show_guids(&query.guids) {
        match id {
            ExternalId::Tmdb(n) => show.tmdb_id = show.tmdb_id.or(Some(n)),
            ExternalId::Tvdb(n) => show.tvdb_id = show.tvdb_id.or(Some(n)),
            ExternalId::Imdb(s) => show.imdb_id = show.imdb_id.or(Some(s)),
            _ => {}
        }
    }
    show
}

/// Create the show in the tracker from what Plex knows. `require_tmdb` (the automatic
/// creation): None when it has no TMDB id (a show created from a bare title would too often
/// duplicate one the matchers missed); a person's "Create new" creates from the title.
///
/// A create whose answer was lost (a timeout, a reset: the tracker may have created it) is
/// not sent again until it has settled; then the tracker's catalogue is read, and if it has
/// the show (same TMDB id, or same title and year), its id is the answer, so a retry, the
/// resolver's or a person's second click, never makes a second show.
///
/// A show this process made (or found made) is remembered ([`Shared::created`]) until the
/// decision naming it is written ([`create_recorded`]): when that write failed (a full
/// disk), the next create of the same show answers the same id, once the tracker's catalogue
/// shows it is still there, instead of making a second show beside the orphan. A restart
/// finds it through the unsettled mark [`create_unrecorded`] leaves, when the store can
/// still take it.
pub async fn create_show(
    shared: &Shared,
    query: &ShowQuery,
    require_tmdb: bool,
) -> Result<Option<String>, plexsync_plugin_api::PluginError> {
    let show = new_show(query);
    if require_tmdb && show.tmdb_id.is_none() {
        return Ok(None);
    }
    let key = create_key(&show);
    let mark = format!("{UNSETTLED_CREATE}{key}");
    let unsettled = shared
        .store
        .kv_get(&mark)
        .map_err(|e| plexsync_plugin_api::PluginError::transient(format!("store: {e}")))?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(i64::from_le_bytes);
    let exporter = shared.plugins().exporter.clone();
    let tracker = exporter.instance();
    if let Some(id) = shared.created.get(&tracker, &key) {
        // Made by this process, its decision not written (or not known to be): the tracker
        // is asked whether the show is still there (someone may have deleted it since).
        // The row must still be that show, not merely an id (ids are small integers).
        let shows = exporter.fetch_catalogue().await?;
        if shows.iter().any(|s| s.id == id && is_the_show(s, &show)) {
            tracing::info!(show_id = %id, show = %show.title, "this show was created in the tracker before; that show is used, not created again");
            return Ok(Some(id));
        }
        tracing::warn!(show_id = %id, show = %show.title, "the show created earlier is no longer in the tracker's catalogue; it is created again");
        shared.created.remove(&tracker, &key);
    }
    if let Some(settled_at) = unsettled {
        if now_millis() <= settled_at {
            return Err(plexsync_plugin_api::PluginError::transient(
                "an earlier request to create this show got no answer; it is tried again once the tracker has surely finished with it, and only if its catalogue lacks the show",
            ));
        }
        // Asked now, after the lost create has settled: the tracker's own answer, not a copy
        // read before (or by another process: the CLI offline runs no catalogue task).
        let shows = exporter.fetch_catalogue().await?;
        if let Some(id) = find_created(&shows, &show) {
            tracing::info!(show_id = %id, show = %show.title, "the show an earlier create made is in the tracker's catalogue; not created again");
            shared.created.insert(&tracker, &key, &id);
            forget_unsettled(shared, mark);
            shared.wake.catalogue.notify_one();
            return Ok(Some(id));
        }
    }
    let started = Instant::now();
    match exporter.create_show(&show).await {
        Ok(id) => {
            shared.created.insert(&tracker, &key, &id);
            if unsettled.is_some() {
                forget_unsettled(shared, mark);
            }
            shared.wake.catalogue.notify_one();
            Ok(Some(id))
        }
        Err(e) if e.is_transient() => {
            let settled_at =
                now_millis().saturating_add(settle_time(started.elapsed()).as_millis() as i64);
            tracing::warn!(show = %show.title, error = %e, "a show create got no answer; the tracker's catalogue is read before it is tried again");
            let _ = mark_unsettled(shared, mark, settled_at, &show.title).await;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// The decision naming the show [`create_show`] answered for `query` is written: a mark
/// [`create_unrecorded`] left goes. The show stays remembered ([`Shared::created`]), so a
/// later create of the same show reuses it.
pub fn create_recorded(shared: &Shared, query: &ShowQuery) {
    let key = create_key(&new_show(query));
    let mark = format!("{UNSETTLED_CREATE}{key}");
    if let Ok(Some(_)) = shared.store.kv_get(&mark) {
        forget_unsettled(shared, mark);
    }
}

/// The decision naming `show_id`, which [`create_show`] answered for `query`, could not be
/// written (`err`): the show is in the tracker and nothing maps to it yet. This process
/// remembers it already ([`create_show`] did, under the tracker it asked); the unsettled
/// mark, settled at once, is left if the store takes it, so that another process (a restart,
/// the CLI offline) reads the tracker's catalogue first and finds the show instead of making
/// a second one. True when the mark was stored.
pub async fn create_unrecorded(
    shared: &Shared,
    query: &ShowQuery,
    show_id: &str,
    err: &crate::store::StoreError,
) -> bool {
    let show = new_show(query);
    let key = create_key(&show);
    tracing::error!(show = %show.title, show_id = %show_id, error = %err, "the show is in the tracker but the decision naming it could not be recorded");
    let mark = format!("{UNSETTLED_CREATE}{key}");
    mark_unsettled(shared, mark, now_millis(), &show.title).await
}

/// Leave the unsettled mark `mark`, settled at `settled_at` (unix ms); best effort: true when
/// stored.
async fn mark_unsettled(shared: &Shared, mark: String, settled_at: i64, title: &str) -> bool {
    let expires = settled_at.saturating_add(UNSETTLED_FOR.as_millis() as i64);
    match shared
        .store
        .kv_put(mark, settled_at.to_le_bytes().to_vec(), Some(expires))
        .await
    {
        Ok(_) => true,
        Err(se) => {
            tracing::warn!(show = %title, error = %se, "cannot record that a show's create is unsettled");
            false
        }
    }
}

/// What identifies a show to create: its TMDB id, else its title and year.
fn create_key(show: &plexsync_plugin_api::NewShow) -> String {
    match show.tmdb_id {
        Some(n) => format!("tmdb:{n}"),
        None => format!(
            "title:{}|{}",
            show.title.trim().to_lowercase(),
            show.year.map(|y| y.to_string()).unwrap_or_default()
        ),
    }
}

/// The show an earlier create of `show` made, if the tracker's catalogue `shows` has it.
fn find_created(
    shows: &[plexsync_plugin_api::CatalogShow],
    show: &plexsync_plugin_api::NewShow,
) -> Option<String> {
    shows
        .iter()
        .find(|s| is_the_show(s, show))
        .map(|s| s.id.clone())
}

/// Whether the tracker's show `s` is the one a create of `show` makes: the same TMDB id, else
/// the same title and year.
fn is_the_show(s: &plexsync_plugin_api::CatalogShow, show: &plexsync_plugin_api::NewShow) -> bool {
    match show.tmdb_id {
        Some(n) => s.tmdb_id == Some(n),
        None => s.title.trim().eq_ignore_ascii_case(show.title.trim()) && s.year == show.year,
    }
}

fn forget_unsettled(shared: &Shared, mark: String) {
    // Expired at once: reads as absent; the row goes with the next write of the key.
    shared
        .store
        .kv_put_detached(mark, Vec::new(), Some(now_millis()));
}

/// The matcher query for a play's show: the play's own show guids plus, when Plex can tell
/// us, the show's `<Guid>` list and first-air year (cached per show).
///
/// Only a play on our own server is looked up: a webhook travels with its user to friends'
/// servers, and such a play's rating key is the friend's, which on ours names some other item
/// (or nothing). Asking ours would give that item's title, year and ids, a confident wrong
/// mapping; a play from another server is matched on its own title and guids.
pub(crate) async fn enrich(shared: &Shared, play: &Play) -> Result<ShowQuery, PlexError> {
    let mut query = play.show.query();
    let Some(rk) = play.show.rating_key.clone() else {
        return Ok(query);
    };
    let meta = match our_show_meta(shared, play, &rk).await {
        Ok(m) => m,
        Err(e) => {
            shared.note_plex_error(&e);
            // Go on without Plex only when a guid of the play's already names the show (a
            // legacy agent's TVDB/TMDB/IMDb id). Without one (plex://, local://, the `none`
            // agents) only the title is left, and a webhook or history play has no year: the
            // title matcher would map a same-named show of another year, for good. Those
            // wait for Plex like plex:// shows. A malformed answer is not retried.
            if has_show_id(&query.guids) && !matches!(e, PlexError::Unauthorized { .. })
                || matches!(e, PlexError::Malformed { .. })
            {
                None
            } else {
                return Err(e);
            }
        }
    };
    if let Some(m) = meta {
        if let Some(g) = m.guid {
            if !query.guids.contains(&g) {
                query.guids.push(g);
            }
        }
        for g in m.guids {
            if !query.guids.contains(&g) {
                query.guids.push(g);
            }
        }
        if m.year.is_some() {
            query.year = m.year;
        }
        if let Some(t) = m.title.filter(|t| !t.trim().is_empty()) {
            query.title = t;
        }
    }
    Ok(query)
}

/// Whether `guids` name the show by an id a matcher can look up in the catalogue: a TVDB,
/// TMDB series or IMDb id (an AniDB id or a TMDB *movie* id identifies no catalogue show).
fn has_show_id(guids: &[String]) -> bool {
    use plexsync_plugin_api::guid::{ExternalId, parse_show_guids};
    parse_show_guids(guids).iter().any(|id| {
        matches!(
            id,
            ExternalId::Tvdb(_) | ExternalId::Tmdb(_) | ExternalId::Imdb(_)
        )
    })
}

/// What our Plex says about the play's show (`rating_key`): from the `show_info` cache, else
/// asked and cached. None when the play is not from our server (see [`enrich`]) or Plex has no
/// such item.
async fn our_show_meta(
    shared: &Shared,
    play: &Play,
    rating_key: &str,
) -> Result<Option<ShowMeta>, PlexError> {
    if !on_our_server(shared, play).await? {
        tracing::debug!(
            server = play.show.server.as_deref().unwrap_or(""),
            rating_key,
            show = %play.show.title,
            "play from another Plex server: matched on its own title and guids"
        );
        return Ok(None);
    }
    let key = play.show.key();
    if let Some(m) = shared.store.show_info(&key).ok().flatten() {
        return Ok(Some(m));
    }
    let started = Instant::now();
    match shared.plex().show_meta(rating_key).await {
        Ok(m) => {
            shared.note_plex_ok(crate::state::TokenWitness::Lookup);
            tracing::debug!(
                rating_key,
                guids = m.guids.len(),
                ms = started.elapsed().as_millis() as u64,
                "fetched show ids from Plex"
            );
            if let Err(e) = shared.store.put_show_info(key, m.clone()).await {
                tracing::warn!(error = %e, "cannot cache show ids");
            }
            Ok(Some(m))
        }
        Err(PlexError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the play was on our Plex server: its `server` (a webhook's `Server.uuid`, the
/// poller's and live source's `/identity`) is our machine id, asked once when not yet known.
/// A play that names no server is not assumed to be ours.
async fn on_our_server(shared: &Shared, play: &Play) -> Result<bool, PlexError> {
    let Some(server) = play.show.server.as_deref() else {
        return Ok(false);
    };
    let ours = match shared.plex_machine_id() {
        Some(id) => id,
        None => {
            let client = shared.plex();
            let identity = client.identity().await?;
            shared.note_plex_identity(&client, &identity);
            identity.machine_identifier
        }
    };
    Ok(server == ours)
}
