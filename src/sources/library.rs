//! Plex's library watched state as a source of plays (source `library`):
//!
//! - the poller's incremental scan ([`scan_libraries`]): each TV section's episodes whose
//!   `lastViewedAt` moved since the section's cursor — catches a "mark as watched" by hand,
//!   which writes no history row;
//! - the full watched-state sync ([`sync`], `plexsync sync`, `POST /api/sync`): every show of
//!   the TV sections (or one show / one section), every episode Plex reports watched
//!   (`viewCount` >= 1) journaled with Plex's `lastViewedAt` as its watch time.
//!
//! Both journal through the store's one ingest path, so a library play and a history row or
//! webhook of the same viewing (same account, show, episode, within `[matching]
//! dedupe_window`) are one play; a viewing read before (history key
//! `library:<ratingKey>:<lastViewedAt>`) is a no-op, so a second sync journals nothing. The
//! section listing shows the watched state of the token's account: the owner's (PMS account
//! 1) with an admin token, so library plays are the owner's.
//!
//! One-way: an episode Plex lists as unwatched is skipped, never sent, never unmarked.
//!
//! Memory: the sync walks one page of shows and one page of a show's episodes at a time and
//! journals each page before reading the next; what it keeps across pages is counters, the
//! ids of the plays it journaled (for the parked count) and, in a dry run, the answer's lists.

use std::collections::HashSet;
use std::time::Duration;

use plexsync_plugin_api::PlaySource;

use super::accounts::refresh_accounts;
use super::history::{FutureRows, PollError, activity_for};
use crate::accounts::{AccountMap, OWNER_ID, pms_key};
use crate::api::SyncRequest;
use crate::model::{Activity, Play, PlexShow, PollReport, SyncStatus, SyncWould, now_secs};
use crate::pipeline::Would;
use crate::plex::library::{LibraryEpisode, LibraryShow, Section};
use crate::plex::{PlexClient, PlexError};
use crate::state::Shared;
use crate::store::StoreError;
use crate::store::ops::MappedPlays;

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Plex(#[from] PlexError),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The request cannot be served as asked (unknown show or section, owner not synced).
    #[error("{0}")]
    Refused(String),
}

impl From<PollError> for SyncError {
    fn from(e: PollError) -> Self {
        match e {
            PollError::Plex(e) => SyncError::Plex(e),
            PollError::Store(e) => SyncError::Store(e),
        }
    }
}

/// A watched library episode as the owner's play. `show` (the show being walked) supplies
/// the show's identity when known; else the episode's `grandparent*` attributes do. None for
/// an episode without season/episode numbers, a show title or a `lastViewedAt`.
pub fn episode_to_play(
    ep: &LibraryEpisode,
    show: Option<&LibraryShow>,
    server: &str,
    accounts: &AccountMap,
) -> Option<Play> {
    // Plex's own date of the (last) viewing, never "now": the tracker gets when it happened.
    let viewed_at = ep.last_viewed_at?;
    let (rating_key, title, year, guid) = match show {
        Some(s) => (
            Some(s.rating_key.clone()),
            s.title.clone(),
            s.year,
            s.guid.clone().or_else(|| ep.grandparent_guid.clone()),
        ),
        None => (
            ep.show_rating_key.clone(),
            ep.grandparent_title.clone()?,
            None,
            ep.grandparent_guid.clone(),
        ),
    };
    Some(Play {
        id: 0,
        source: PlaySource::Library,
        account_id: OWNER_ID.to_string(),
        // The same canonical key as the owner's history rows (accountID 1) and webhooks, so
        // the dedupe sees one viewing.
        account_key: pms_key(OWNER_ID),
        account_name: accounts.name_of(OWNER_ID).map(str::to_string),
        show: PlexShow {
            server: Some(server.to_string()),
            rating_key,
            title,
            year,
            guid,
            episode_guid: None,
        },
        season: ep.season?,
        episode: ep.episode?,
        episode_rating_key: Some(ep.rating_key.clone()),
        viewed_at,
        received_at: now_secs(),
        // A viewing seen in the library has no history row; its rating key and time identify
        // it, so reading it again (the next scan, a second sync) is a no-op.
        history_key: Some(format!("library:{}:{viewed_at}", ep.rating_key)),
    })
}

/// The poller's incremental scan: each TV section's episodes watched since its cursor
/// (`<server>/library/<section>`), journaled page by page with the cursor.
pub(crate) async fn scan_libraries(
    shared: &Shared,
    client: &PlexClient,
    server: &str,
    accounts: &AccountMap,
    report: &mut PollReport,
) -> Result<(), PollError> {
    let cfg = shared.config();
    let window = cfg.matching.dedupe_window.as_secs() as i64;
    let overlap = cfg.poll.overlap.as_secs() as i64;
    for section in client.show_sections().await? {
        let key = format!("{server}/library/{}", section.key);
        let since = match shared.store.cursor(&key)? {
            Some(c) => super::history::poll_since(c.viewed_at, now_secs(), overlap),
            None => now_secs() - cfg.poll.initial_lookback.as_secs() as i64,
        };
        let mut pages = client.watched_episode_pages(&section.key, since, cfg.poll.page_size);
        let mut future = FutureRows::default();
        while let Some(page) = pages.next_page().await? {
            report.rows_read += page.size;
            report.skipped += page.skipped;
            let mut newest = since;
            let mut plays = Vec::with_capacity(page.rows.len());
            let now = now_secs();
            for ep in &page.rows {
                if let Some(t) = ep.last_viewed_at {
                    newest = newest.max(future.clamp(&key, Some(&ep.rating_key), t, now));
                }
                match episode_to_play(ep, None, server, accounts) {
                    Some(p) if ep.view_count > 0 => plays.push(p),
                    _ => report.skipped += 1,
                }
            }
            // After a second gap in the walk rows may have slipped below a page's start: the
            // cursor stays before them so the next scan reads them (see `ingest_history`).
            let cursor = (!pages.pager().may_have_skipped()).then(|| (key.clone(), newest));
            let counts = shared
                .ingest_batch(plays, cursor, window, activity_for, MappedPlays::ToResolver)
                .await?;
            report.plays_new += counts.new;
            report.duplicates += counts.duplicates;
            report.already_seen += counts.already_seen;
            shared.board.metrics.plays(PlaySource::Library, counts.new);
        }
    }
    Ok(())
}

fn set_progress(shared: &Shared, f: impl FnOnce(&mut SyncStatus)) {
    if let Ok(mut g) = shared.board.sync_progress.lock() {
        if let Some(st) = g.as_mut() {
            f(st);
        }
    }
}

/// The last published status (the running sync's, or the last one's).
pub fn progress(shared: &Shared) -> Option<SyncStatus> {
    shared
        .board
        .sync_progress
        .lock()
        .ok()
        .and_then(|g| g.clone())
}

/// Publish a fresh "running" status (before the job starts, so a client asking at once sees
/// it). The caller holds `shared.sync`.
pub fn mark_started(shared: &Shared, dry_run: bool) {
    if let Ok(mut g) = shared.board.sync_progress.lock() {
        *g = Some(SyncStatus {
            running: true,
            dry_run,
            started_at: now_secs(),
            would_export: dry_run.then(Vec::new),
            would_need_a_person: dry_run.then(Vec::new),
            undecided_shows: dry_run.then(Vec::new),
            ..Default::default()
        });
    }
}

/// Run one watched-state sync to its end (the caller holds `shared.sync`): walk, journal,
/// wait (bounded) for the resolver so the summary can say what was parked. Progress and the
/// result are published in `shared.board.sync_progress`.
pub async fn sync(shared: &Shared, req: &SyncRequest) -> SyncStatus {
    if progress(shared).is_none_or(|st| !st.running) {
        mark_started(shared, req.dry_run);
    }
    // While the walk produces plays, the exporter holds part-full batches for fuller ones
    // (one request per show instead of one per page).
    let result = {
        let _bulk = (!req.dry_run).then(|| shared.board.export.bulk_import());
        run(shared, req).await
    };
    set_progress(shared, |st| {
        st.running = false;
        st.finished_at = Some(now_secs());
        if let Err(e) = &result {
            st.error = Some(e.to_string());
        }
    });
    let out = progress(shared).unwrap_or_default();
    tracing::info!(
        shows = out.shows_walked,
        vanished = out.shows_vanished,
        episodes = out.episodes_seen,
        watched = out.episodes_watched,
        new = out.plays_new,
        already_exported = out.already_exported,
        parked = out.parked_in_conflicts,
        dry_run = req.dry_run,
        error = out.error.as_deref().unwrap_or(""),
        "watched-state sync finished"
    );
    if !req.dry_run {
        let row = Activity::summary(
            &PlaySource::Library.to_string(),
            "sync",
            format!(
                "sync: {} shows, {} watched episodes, {} new plays, {} already exported, {} parked{}",
                out.shows_walked,
                out.episodes_watched,
                out.plays_new,
                out.already_exported,
                out.parked_in_conflicts,
                match out.shows_vanished {
                    0 => String::new(),
                    n => format!(", {n} vanished from Plex during the sync"),
                }
            ),
            out.error.clone(),
        );
        if let Err(e) = shared.store.record_activity(row).await {
            tracing::warn!(error = %e, "cannot record the sync summary");
        }
    }
    out
}

/// What one walk keeps between pages.
struct Walk<'a> {
    shared: &'a Shared,
    client: &'a PlexClient,
    server: String,
    accounts: AccountMap,
    dry_run: bool,
    window: i64,
    page_size: u64,
    new_ids: Vec<u64>,
    /// Shows walked so far (rating keys): a listing read again from the start, after shows
    /// vanished under the walk (see `crate::plex::paging`), lists them again.
    walked: HashSet<String>,
}

async fn run(shared: &Shared, req: &SyncRequest) -> Result<(), SyncError> {
    let client = shared.plex();
    let cfg = shared.config();
    let server = client.identity().await?.machine_identifier;
    let accounts = refresh_accounts(shared, &client).await?;
    let (ids, _) = accounts.resolve(&cfg.plex.accounts);
    if !ids.contains(&OWNER_ID) {
        return Err(SyncError::Refused(
            "the library's watched state is the server owner's, and [plex] accounts does not sync the owner".into(),
        ));
    }
    let mut sections = client.show_sections().await?;
    if let Some(want) = req.section.as_deref().map(str::trim) {
        sections.retain(|s| s.key == want);
        if sections.is_empty() {
            return Err(SyncError::Refused(format!(
                "section {want:?}: no TV section with this id on the Plex server"
            )));
        }
    }
    let mut walk = Walk {
        shared,
        client: &client,
        server,
        accounts,
        dry_run: req.dry_run,
        window: cfg.matching.dedupe_window.as_secs() as i64,
        page_size: cfg.poll.page_size,
        new_ids: Vec::new(),
        walked: HashSet::new(),
    };
    set_progress(shared, |st| st.sections_total = sections.len() as u64);
    match req.show.as_deref().map(str::trim) {
        Some(want) => {
            let shows = find_shows(&client, &sections, want, walk.page_size).await?;
            set_progress(shared, |st| st.shows_total = Some(shows.len() as u64));
            for show in &shows {
                walk.show(show).await?;
            }
            set_progress(shared, |st| st.sections_done = st.sections_total);
        }
        None => {
            // Every section's total first (one one-item page each), so the bar has a total.
            let mut total = Some(0u64);
            for s in &sections {
                let p = client.show_page(&s.key, 0, 1).await?;
                total = total.zip(p.total).map(|(a, b)| a + b);
            }
            set_progress(shared, |st| st.shows_total = total);
            for s in &sections {
                walk.section(s).await?;
                set_progress(shared, |st| st.sections_done += 1);
            }
        }
    }
    if !walk.dry_run {
        walk.await_resolution().await?;
    }
    Ok(())
}

/// The shows `want` names: a ratingKey (of a show in the chosen sections), else a title
/// (any case) as the sections list it. Refused when none matches.
async fn find_shows(
    client: &PlexClient,
    sections: &[Section],
    want: &str,
    page_size: u64,
) -> Result<Vec<LibraryShow>, SyncError> {
    if !want.is_empty() && want.bytes().all(|b| b.is_ascii_digit()) {
        if let Some(show) = client.library_show(want).await? {
            let in_scope = match &show.section {
                Some(sec) => sections.iter().any(|s| &s.key == sec),
                None => true,
            };
            if in_scope {
                return Ok(vec![show]);
            }
        }
    }
    let needle = want.to_lowercase();
    let mut found = Vec::new();
    for s in sections {
        let mut pages = client.show_pages(&s.key, page_size);
        while let Some(page) = pages.next_page().await? {
            found.extend(
                page.rows
                    .into_iter()
                    .filter(|r| r.title.to_lowercase() == needle),
            );
        }
    }
    if found.is_empty() {
        return Err(SyncError::Refused(format!(
            "show {want:?}: no show with this ratingKey or title in the TV sections"
        )));
    }
    Ok(found)
}

impl Walk<'_> {
    /// Every show of a section, one page of shows at a time.
    async fn section(&mut self, section: &Section) -> Result<(), SyncError> {
        let mut pages = self.client.show_pages(&section.key, self.page_size);
        while let Some(page) = pages.next_page().await? {
            for show in &page.rows {
                self.show(show).await?;
            }
        }
        Ok(())
    }

    /// One show: its episodes page by page; the watched ones journaled (or, in a dry run,
    /// listed) before the next page is read.
    async fn show(&mut self, show: &LibraryShow) -> Result<(), SyncError> {
        if !self.walked.insert(show.rating_key.clone()) {
            return Ok(());
        }
        let key = PlexShow {
            server: Some(self.server.clone()),
            rating_key: Some(show.rating_key.clone()),
            title: show.title.clone(),
            year: show.year,
            guid: show.guid.clone(),
            episode_guid: None,
        }
        .key();
        // The tracker show, when a decision already exists: episodes it has are "already
        // exported" whatever the dedupe says (a rewatch sends nothing either).
        let mapping = self.shared.store.mapping(&key)?;
        let tracker_show = mapping
            .as_ref()
            .filter(|m| !m.ignored && m.sync_enabled)
            .map(|m| m.show_id.clone());
        let mut dry: Option<Would> = None;
        let mut vanished = false;
        let mut pages = self
            .client
            .show_episode_pages(&show.rating_key, self.page_size);
        // Episodes read (rating keys): a page list read again from the start lists them again.
        let mut read: HashSet<String> = HashSet::new();
        loop {
            let page = match pages.next_page().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(PlexError::NotFound { .. }) => {
                    // Deleted in Plex between the section's listing and this walk: there is
                    // nothing left of it to read, and no reason to stop the other shows'.
                    tracing::warn!(rating_key = %show.rating_key, show = %show.title, "show vanished from Plex during the sync (its episodes answer 404); skipped");
                    vanished = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let (mut seen, mut watched) = (0u64, 0u64);
            let mut known = Vec::new();
            let mut fresh = Vec::new();
            for ep in &page.rows {
                if !read.insert(ep.rating_key.clone()) {
                    continue;
                }
                seen += 1;
                // One-way: an unwatched episode is never sent, and never unmarks anything.
                if ep.view_count == 0 {
                    continue;
                }
                watched += 1;
                let Some(play) = episode_to_play(ep, Some(show), &self.server, &self.accounts)
                else {
                    tracing::debug!(rating_key = %ep.rating_key, "watched episode without numbers or lastViewedAt; skipped");
                    continue;
                };
                if self.dry_run {
                    if dry.is_none() {
                        dry = Some(crate::pipeline::would_resolve(self.shared, &play).await?);
                    }
                    self.dry_episode(&play, dry.as_ref())?;
                    continue;
                }
                let has = match &tracker_show {
                    Some(id) => self
                        .shared
                        .store
                        .watched(id, play.season, play.episode)?
                        .is_some(),
                    None => false,
                };
                if has {
                    known.push(play)
                } else {
                    fresh.push(play)
                }
            }
            let mut already = 0;
            let mut new = 0;
            if !known.is_empty() {
                // Journaled all the same, so the viewing's sources include the library.
                let c = self
                    .shared
                    .ingest_batch(known, None, self.window, |_| None, MappedPlays::ToResolver)
                    .await?;
                already += c.new + c.duplicates + c.already_seen;
            }
            if !fresh.is_empty() {
                let c = self
                    .shared
                    .ingest_batch(fresh, None, self.window, |_| None, MappedPlays::ToResolver)
                    .await?;
                already += c.duplicates + c.already_seen;
                new += c.new;
                self.new_ids.extend(c.new_ids);
            }
            if new > 0 {
                self.shared.board.metrics.plays(PlaySource::Library, new);
                // The resolver starts on them while the walk goes on.
                self.shared.wake.resolve.notify_one();
            }
            set_progress(self.shared, |st| {
                st.episodes_seen += seen;
                st.episodes_watched += watched;
                st.plays_new += new;
                st.already_exported += already;
            });
        }
        match dry {
            Some(Would::NeedPerson) => {
                let title = show.title.clone();
                set_progress(self.shared, |st| {
                    let list = st.would_need_a_person.get_or_insert_with(Vec::new);
                    if !list.contains(&title) {
                        list.push(title);
                    }
                });
            }
            Some(Would::Retry(why)) => {
                tracing::info!(show = %show.title, rating_key = %show.rating_key, reason = %why, "dry run: the show cannot be decided now; the resolver would retry");
                let title = show.title.clone();
                set_progress(self.shared, |st| {
                    let list = st.undecided_shows.get_or_insert_with(Vec::new);
                    if !list.contains(&title) {
                        list.push(title);
                    }
                });
            }
            _ => {}
        }
        set_progress(self.shared, |st| {
            if vanished {
                st.shows_vanished += 1;
            } else {
                st.shows_walked += 1;
            }
        });
        Ok(())
    }

    fn dry_episode(&self, play: &Play, dry: Option<&Would>) -> Result<(), SyncError> {
        let Some(Would::Export {
            show_id,
            tracker_title,
        }) = dry
        else {
            return Ok(());
        };
        let has = self
            .shared
            .store
            .watched(show_id, play.season, play.episode)?
            .is_some();
        let w = SyncWould {
            show: play.show.title.clone(),
            season: play.season,
            episode: play.episode,
            tracker_title: tracker_title.clone(),
        };
        set_progress(self.shared, |st| {
            if has {
                st.already_exported += 1;
            } else {
                st.plays_new += 1;
                st.would_export.get_or_insert_with(Vec::new).push(w);
            }
        });
        Ok(())
    }

    /// Wait (bounded) for the resolver to decide the new plays, so the summary can say how
    /// many wait in conflicts.
    async fn await_resolution(&self) -> Result<(), SyncError> {
        if self.new_ids.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (_, parked, waiting) = self.shared.store.play_outcomes(&self.new_ids)?;
            set_progress(self.shared, |st| st.parked_in_conflicts = parked);
            if waiting == 0 || tokio::time::Instant::now() > deadline {
                return Ok(());
            }
            self.shared.wake.resolve.notify_one();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(view_count: u64, last: Option<i64>) -> LibraryEpisode {
        LibraryEpisode {
            rating_key: "101".into(),
            show_rating_key: Some("5".into()),
            grandparent_title: Some("Listed".into()),
            grandparent_guid: Some("plex://show/abc".into()),
            season: Some(1),
            episode: Some(2),
            view_count,
            last_viewed_at: last,
        }
    }

    #[test]
    fn a_library_play_is_the_owners_with_plexs_date() {
        let p = episode_to_play(
            &ep(1, Some(1_600_000_000)),
            None,
            "srv",
            &AccountMap::default(),
        )
        .unwrap();
        assert_eq!(p.source, PlaySource::Library);
        assert_eq!(p.viewed_at, 1_600_000_000, "lastViewedAt, not now");
        assert_eq!(
            (p.account_key.as_str(), p.season, p.episode),
            ("pms:1", 1, 2)
        );
        assert_eq!(p.show.key(), "srv/5");
        assert_eq!(p.history_key.as_deref(), Some("library:101:1600000000"));
        // The walked show's identity wins over the episode's attributes.
        let show = LibraryShow {
            rating_key: "5".into(),
            title: "Walked".into(),
            year: Some(2001),
            guid: Some("plex://show/def".into()),
            section: None,
        };
        let p =
            episode_to_play(&ep(1, Some(1)), Some(&show), "srv", &AccountMap::default()).unwrap();
        assert_eq!(p.show.title, "Walked");
        assert_eq!(p.show.guid.as_deref(), Some("plex://show/def"));
        assert!(episode_to_play(&ep(1, None), None, "srv", &AccountMap::default()).is_none());
    }

    #[test]
    fn the_same_viewing_from_history_has_the_same_dedupe_key() {
        let lib = episode_to_play(
            &ep(1, Some(1_600_000_000)),
            None,
            "srv",
            &AccountMap::default(),
        )
        .unwrap();
        let row = crate::plex::history::HistoryRow {
            history_key: Some("/status/sessions/history/9".into()),
            rating_key: Some("101".into()),
            key: None,
            show_rating_key: Some("5".into()),
            parent_rating_key: None,
            kind: "episode".into(),
            title: "Ep".into(),
            grandparent_title: Some("Listed".into()),
            season: Some(1),
            episode: Some(2),
            viewed_at: 1_600_000_000,
            account_id: Some(1),
            device_id: None,
            library_section_id: None,
            originally_available_at: None,
        };
        let hist = super::super::history::row_to_play(
            &row,
            "srv",
            &AccountMap::default(),
            PlaySource::Poll,
        )
        .unwrap();
        assert_eq!(lib.dedupe_key(), hist.dedupe_key());
    }
}
