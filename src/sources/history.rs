//! Plex history polling: the fallback that catches what webhooks miss, and the only path for
//! users without Plex Pass. Also the engine of `plexsync backfill`; the library side (the
//! incremental watched-state scan, `plexsync sync`) is [`super::library`].
//!
//! One task runs polls; the cron schedule (tokio-cron-scheduler, UTC) only wakes it through a
//! `Notify`, which holds at most one permit — so two polls never run at once and a slow poll
//! never stacks up ticks. Each (server, account) has a cursor in the store that advances in the
//! same transaction as the rows it covers; every poll re-reads `[poll] overlap` before it
//! (history keys make the re-read rows no-ops). A failed poll leaves the cursor where it was.

pub use crate::model::{BackfillStatus, PollReport, WouldExport};
use std::sync::Arc;
use std::time::Duration;

use plexsync_plugin_api::PlaySource;

use super::accounts::refresh_accounts;
use crate::accounts::{AccountMap, OWNER_ID, pms_key};
use crate::model::{Activity, ActivityStatus, Play, PlexShow, now_millis, now_secs};
use crate::pipeline::Would;
use crate::plex::history::{HistoryQuery, HistoryRow};
use crate::plex::{PlexClient, PlexError};
use crate::state::Shared;
use crate::store::StoreError;
use crate::store::ops::MappedPlays;

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("{0}")]
    Plex(#[from] PlexError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl PollError {
    pub fn kind(&self) -> crate::model::PollFailure {
        use crate::model::PollFailure;
        match self {
            PollError::Plex(PlexError::Unauthorized { .. }) => PollFailure::TokenRejected,
            PollError::Plex(PlexError::Malformed { .. }) => PollFailure::Malformed,
            PollError::Plex(_) => PollFailure::Unreachable,
            PollError::Store(_) => PollFailure::Store,
        }
    }
}

/// How far past the daemon's own clock a poll cursor may move. A cursor only moves forward and
/// the next poll asks for rows since it, so one row dated ahead (Plex's clock ran fast and was
/// stepped back, or a nonsense `viewedAt` such as 2100-01-01) would otherwise put every later
/// row below `since` until that date came round: polls would keep succeeding with 0 rows.
/// Five minutes absorbs ordinary clock skew between Plex and this host without a warning, and
/// is below the default `[poll] overlap` (10 min), which re-reads that much before the cursor.
pub const CURSOR_SLACK: Duration = Duration::from_secs(5 * 60);

/// The furthest a poll cursor may stand at `now` (unix seconds): `now` + [`CURSOR_SLACK`].
pub fn cursor_ceiling(now: i64) -> i64 {
    now.saturating_add(CURSOR_SLACK.as_secs() as i64)
}

/// Where a poll from `cursor` starts reading at `now`: `overlap` before the cursor, the cursor
/// taken no further than [`cursor_ceiling`] — a cursor a release before the clamp stored in the
/// future would otherwise still hide every row until its date.
pub fn poll_since(cursor: i64, now: i64, overlap: i64) -> i64 {
    cursor.min(cursor_ceiling(now)).saturating_sub(overlap)
}

/// Rows of one cursor walk dated past [`cursor_ceiling`]: journaled like any row (their history
/// keys make re-reads no-ops), but the cursor stops at the ceiling. The first one is logged
/// as a warning, once per walk, so a poll does not repeat it for every such row.
#[derive(Debug, Default)]
pub(crate) struct FutureRows {
    seen: u64,
}

impl FutureRows {
    /// The time `viewed_at` may move the cursor `cursor` to at `now`, warning on the walk's
    /// first row dated past the ceiling.
    pub(crate) fn clamp(
        &mut self,
        cursor: &str,
        rating_key: Option<&str>,
        viewed_at: i64,
        now: i64,
    ) -> i64 {
        let ceiling = cursor_ceiling(now);
        if viewed_at <= ceiling {
            return viewed_at;
        }
        if self.seen == 0 {
            tracing::warn!(
                cursor = %cursor,
                rating_key = rating_key.unwrap_or(""),
                viewed_at,
                now,
                "Plex dates a viewing in the future (its clock?): journaled, but the poll cursor stops at now + 5 min"
            );
        }
        self.seen += 1;
        ceiling
    }
}

/// Progress callback: (rows read so far, total if known).
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Send + Sync);

pub(crate) fn activity_for(play: &Play) -> Option<Activity> {
    // Backfills can import years of history: they log a summary, not a row per play.
    if play.source == PlaySource::Backfill {
        return None;
    }
    Some(Activity {
        id: 0,
        at: now_millis(),
        source: play.source.to_string(),
        event: Some(
            match play.source {
                PlaySource::Library => "library",
                PlaySource::Live => "live",
                _ => "history",
            }
            .into(),
        ),
        account: play.account_name.clone(),
        show: Some(play.show.title.clone()),
        season: Some(play.season),
        episode: Some(play.episode),
        status: ActivityStatus::Success,
        action: String::new(),
        error: None,
        duration_ms: 0.0,
        play_id: None,
        client: None,
        title: Some(play.show.title.clone()),
        tracker_title: None,
        attempts: None,
        batch_id: None,
        sources: Vec::new(),
    })
}

/// A history row as a play; None for rows that are not a numbered episode.
pub fn row_to_play(
    row: &HistoryRow,
    server: &str,
    accounts: &AccountMap,
    source: PlaySource,
) -> Option<Play> {
    if row.kind != "episode" {
        return None;
    }
    let (season, episode) = (row.season?, row.episode?);
    let account = row.account_id.unwrap_or(OWNER_ID);
    let title = row
        .grandparent_title
        .clone()
        .filter(|t| !t.trim().is_empty())?;
    Some(Play {
        id: 0,
        source,
        account_id: account.to_string(),
        account_key: pms_key(account),
        account_name: accounts.name_of(account).map(str::to_string),
        show: PlexShow {
            server: Some(server.to_string()),
            // Rows of deleted items have no keys: the show is matched by title alone.
            rating_key: row.show_rating_key.clone(),
            title,
            year: None,
            guid: None,
            episode_guid: None,
        },
        season,
        episode,
        episode_rating_key: row.rating_key.clone(),
        viewed_at: row.viewed_at,
        received_at: now_secs(),
        history_key: row.history_key.clone(),
    })
}

/// Read one account's history since `since` into the store. With `cursor_key`, the cursor
/// advances page by page, in the transaction that journals the page.
#[allow(clippy::too_many_arguments)]
pub async fn ingest_history(
    shared: &Shared,
    client: &PlexClient,
    server: &str,
    accounts: &AccountMap,
    account_id: i64,
    since: i64,
    cursor_key: Option<String>,
    source: PlaySource,
    report: &mut PollReport,
    progress: Progress<'_>,
) -> Result<(), PollError> {
    let cfg = shared.config();
    let window = cfg.matching.dedupe_window.as_secs() as i64;
    let size = cfg.poll.page_size;
    let query = HistoryQuery {
        account_id: Some(account_id),
        viewed_since: since,
        library_section_id: None,
        metadata_item_id: None,
    };
    // The pager advances by the rows the server served (usable or not), refuses a server that
    // ignores X-Plex-Container-Start and bounds the walk; a page of only unusable rows is
    // read past, not taken for the end. Pages overlap, and a page holds only rows the walk has
    // not read yet: rows a person removes mid-walk shift the list without hiding any row.
    let mut pages = client.history_pages(&query, size);
    let mut future = FutureRows::default();
    while let Some(page) = pages.next_page().await? {
        report.rows_read += page.size;
        report.skipped += page.skipped;
        let mut plays = Vec::with_capacity(page.rows.len());
        let mut newest = since;
        let now = now_secs();
        for row in &page.rows {
            let at = match &cursor_key {
                Some(k) => future.clamp(k, row.rating_key.as_deref(), row.viewed_at, now),
                None => row.viewed_at,
            };
            newest = newest.max(at);
            match row_to_play(row, server, accounts, source) {
                Some(p) => plays.push(p),
                None => report.skipped += 1,
            }
        }
        // Once the pager says rows may have been skipped (rows vanished twice during the walk
        // beyond its overlap), those rows lie after the last page read before it: the cursor
        // stays there, and the next poll (from cursor - overlap) reads them. Rows after are
        // still journaled; their history keys make the re-read a no-op.
        let cursor = cursor_key
            .clone()
            .filter(|_| !pages.pager().may_have_skipped())
            .map(|k| (k, newest));
        let counts = shared
            .ingest_batch(plays, cursor, window, activity_for, MappedPlays::ToResolver)
            .await?;
        report.plays_new += counts.new;
        report.duplicates += counts.duplicates;
        report.already_seen += counts.already_seen;
        report.new_ids.extend(counts.new_ids);
        progress(report.rows_read, page.total);
    }
    report.may_have_skipped |= pages.pager().may_have_skipped();
    Ok(())
}

/// One poll: identity, accounts, then each synced account's history from its cursor.
pub async fn poll_once(shared: &Shared) -> PollReport {
    let mut report = PollReport {
        started_at: now_secs(),
        ..Default::default()
    };
    let result = poll_inner(shared, &mut report).await;
    report.finished_at = now_secs();
    if let Err(e) = result {
        report.error = Some(e.to_string());
        report.failure = Some(e.kind());
    }
    report
}

async fn poll_inner(shared: &Shared, report: &mut PollReport) -> Result<(), PollError> {
    let client = shared.plex();
    let cfg = shared.config();
    // `/identity` needs no token, so its answer says nothing about the token: Plex counts as
    // fine only once `/accounts` (which needs it) answered.
    let identity = client.identity().await?;
    shared.note_plex_identity(&client, &identity);
    let server = identity.machine_identifier;
    let accounts = refresh_accounts(shared, &client).await?;
    if client.base() == shared.plex().base() {
        shared.note_plex_token_ok(crate::state::TokenWitness::Poll);
    }
    if shared.plex_server_name().is_none() {
        // The name is for people only: a server that does not give one is no failure.
        match client.friendly_name().await {
            Ok(Some(name)) => shared.note_plex_server_name(name),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the Plex server's name"),
        }
    }
    let (ids, unknown) = accounts.resolve(&cfg.plex.accounts);
    for name in unknown {
        tracing::warn!(account = %name, "[plex] accounts names an account the server does not have");
    }
    let overlap = cfg.poll.overlap.as_secs() as i64;
    for id in ids {
        let key = format!("{server}/{id}");
        let since = match shared.store.cursor(&key)? {
            Some(c) => poll_since(c.viewed_at, now_secs(), overlap),
            None => now_secs() - cfg.poll.initial_lookback.as_secs() as i64,
        };
        ingest_history(
            shared,
            &client,
            &server,
            &accounts,
            id,
            since,
            Some(key),
            PlaySource::Poll,
            report,
            &|_, _| {},
        )
        .await?;
    }
    if cfg.poll.library_scan && accounts.resolve(&cfg.plex.accounts).0.contains(&OWNER_ID) {
        super::library::scan_libraries(shared, &client, &server, &accounts, report).await?;
    }
    Ok(())
}

/// Run polls forever: at start-up, on every cron tick, and after a failure with backoff.
pub async fn poller_task(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut schedule = shared.config().poll.schedule.clone();
    let mut scheduler = start_or_log(&shared).await;
    shared.wake.poll_scheduled.notify_one();
    let mut failures = 0u32;
    let mut resume_at: Option<tokio::time::Instant> = None;
    let mut first = true;
    loop {
        if !first {
            let until_resume =
                resume_at.map(|t| t.saturating_duration_since(tokio::time::Instant::now()));
            tokio::select! {
                _ = shared.wake.poll.notified() => {}
                _ = crate::pipeline::sleep_opt(until_resume) => {}
                _ = shutdown.changed() => {}
                _ = shared.wake.schedule.notified() => {
                    // A reload: a new schedule replaces the running one; no poll by itself.
                    let now = shared.config().poll.schedule.clone();
                    if now != schedule {
                        if let Some(mut old) = scheduler.take() {
                            let _ = old.shutdown().await;
                        }
                        scheduler = start_or_log(&shared).await;
                        schedule = now;
                    }
                    continue;
                }
            }
        }
        first = false;
        if *shutdown.borrow() {
            break;
        }
        // A person asked (POST /api/poll) or the token changed: poll now, pause or not.
        let explicit = shared
            .wake
            .poll_now
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = resume_at {
            if tokio::time::Instant::now() < t && !explicit {
                // A tick during a back-off pause: skipped, so a failing Plex sees no storm.
                continue;
            }
        }
        if !shared.config().poll.enabled {
            continue;
        }
        let report = poll_once(&shared).await;
        match &report.error {
            None => {
                failures = 0;
                resume_at = None;
                tracing::info!(
                    rows = report.rows_read,
                    new = report.plays_new,
                    duplicates = report.duplicates,
                    "poll finished"
                );
                if report.plays_new > 0 {
                    shared.wake.resolve.notify_one();
                }
            }
            Some(e) => {
                failures += 1;
                let rejected = report.failure == Some(crate::model::PollFailure::TokenRejected);
                let first = shared
                    .config()
                    .poll
                    .retry_backoff
                    .max(Duration::from_millis(10));
                let d = if rejected {
                    crate::pipeline::backoff(failures, first * 4, Duration::from_secs(3600))
                } else {
                    crate::pipeline::backoff(failures, first, Duration::from_secs(600))
                };
                resume_at = Some(tokio::time::Instant::now() + d);
                tracing::warn!(error = %e, attempt = failures, retry_in_s = d.as_secs(), "poll failed; cursor unchanged");
            }
        }
        shared.note_poll(report);
    }
    if let Some(mut s) = scheduler {
        let _ = s.shutdown().await;
    }
}

async fn start_or_log(shared: &Arc<Shared>) -> Option<tokio_cron_scheduler::JobScheduler> {
    match start_scheduler(shared).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the poll scheduler; polling runs at start-up and on request only");
            None
        }
    }
}

async fn start_scheduler(
    shared: &Arc<Shared>,
) -> Result<tokio_cron_scheduler::JobScheduler, tokio_cron_scheduler::JobSchedulerError> {
    let sched = tokio_cron_scheduler::JobScheduler::new().await?;
    let expr = shared.config().poll.schedule.clone();
    let s = shared.clone();
    let job = tokio_cron_scheduler::Job::new_async(expr.as_str(), move |_, _| {
        let s = s.clone();
        Box::pin(async move {
            // Only a wake-up: the poller task does the work, one poll at a time.
            s.wake.poll.notify_one();
        })
    })?;
    sched.add(job).await?;
    sched.start().await?;
    tracing::info!(schedule = %expr, "history polling scheduled (UTC)");
    Ok(sched)
}

/// Parse `YYYY-MM-DD` as midnight UTC, in unix seconds.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > dim[(m - 1) as usize] {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400)
}

fn set_progress(shared: &Shared, f: impl FnOnce(&mut BackfillStatus)) {
    if let Ok(mut g) = shared.board.backfill_progress.lock() {
        if let Some(st) = g.as_mut() {
            f(st);
        }
    }
}

/// Import the synced accounts' whole history since `since` through the pipeline (or, with
/// `dry_run`, only say what would be exported). Progress is published in
/// `shared.board.backfill_progress`; the caller holds `shared.backfill`.
/// What a backfill says when Plex's history changed under it beyond what the walk could follow.
pub const MAY_BE_MISSED: &str = "Plex's history changed under the walk (rows deleted twice past a page's overlap), so rows may have been missed: run the backfill again to read them";

pub async fn backfill(shared: &Shared, since: i64, dry_run: bool) -> BackfillStatus {
    if let Ok(mut g) = shared.board.backfill_progress.lock() {
        *g = Some(BackfillStatus {
            running: true,
            since,
            dry_run,
            ..Default::default()
        });
    }
    let result = if dry_run {
        backfill_dry(shared, since).await
    } else {
        backfill_real(shared, since).await
    };
    set_progress(shared, |st| {
        st.running = false;
        if let Err(e) = &result {
            st.error = Some(e.to_string());
        }
    });
    let out = shared
        .board
        .backfill_progress
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_default();
    tracing::info!(
        rows = out.rows_read,
        new = out.plays_new,
        duplicates = out.duplicates,
        matched = out.matched,
        parked = out.parked,
        dry_run,
        error = out.error.as_deref().unwrap_or(""),
        "backfill finished"
    );
    if out.rows_may_be_missed {
        tracing::warn!(since, dry_run, "backfill: {MAY_BE_MISSED}");
    }
    if !dry_run {
        let row = Activity::summary(
            "backfill",
            "backfill",
            format!(
                "backfill: {} rows, {} new plays, {} duplicates, {} matched, {} parked{}{}",
                out.rows_read,
                out.plays_new,
                out.duplicates,
                out.matched,
                out.parked,
                match out.unknown_accounts.as_slice() {
                    [] => String::new(),
                    names => format!("; accounts Plex does not have: {}", names.join(", ")),
                },
                if out.rows_may_be_missed {
                    format!("; {MAY_BE_MISSED}")
                } else {
                    String::new()
                }
            ),
            out.error.clone(),
        );
        if let Err(e) = shared.store.record_activity(row).await {
            tracing::warn!(error = %e, "cannot record the backfill summary");
        }
    }
    out
}

async fn server_and_accounts(
    shared: &Shared,
    client: &PlexClient,
) -> Result<(String, AccountMap, Vec<i64>), PollError> {
    let server = client.identity().await?.machine_identifier;
    let accounts = refresh_accounts(shared, client).await?;
    let (ids, unknown) = accounts.resolve(&shared.config().plex.accounts);
    // A name Plex does not list (a typo, a removed user) has no history to read: said in the
    // summary and the log rather than left out without a word.
    for name in &unknown {
        tracing::warn!(account = %name, "backfill: [plex] accounts names an account the server does not have; its history is not read");
    }
    set_progress(shared, |st| st.unknown_accounts = unknown);
    Ok((server, accounts, ids))
}

async fn backfill_real(shared: &Shared, since: i64) -> Result<(), PollError> {
    let client = shared.plex();
    let (server, accounts, ids) = server_and_accounts(shared, &client).await?;
    let mut report = PollReport::default();
    let accounts_n = ids.len() as u32;
    for (i, id) in ids.into_iter().enumerate() {
        // Plex totals one account at a time: the sum is known only on the last account
        // (rows read before it + its total); until then the bar must not claim a total.
        let before = report.rows_read;
        let last = i as u32 + 1 == accounts_n;
        let progress = move |rows: u64, total: Option<u64>| {
            set_progress(shared, |st| {
                st.rows_read = rows;
                st.total = total.filter(|_| last).map(|t| before + t);
                st.account = i as u32 + 1;
                st.accounts = accounts_n;
            });
        };
        ingest_history(
            shared,
            &client,
            &server,
            &accounts,
            id,
            since,
            None,
            PlaySource::Backfill,
            &mut report,
            &progress,
        )
        .await?;
        set_progress(shared, |st| {
            st.plays_new = report.plays_new;
            st.duplicates = report.duplicates;
            st.already_imported = report.already_seen;
            st.rows_may_be_missed = report.may_have_skipped;
        });
    }
    shared
        .board
        .metrics
        .plays(PlaySource::Backfill, report.plays_new);
    shared.wake.resolve.notify_one();
    // Wait (bounded) for the resolver, so the summary can say matched / parked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (matched, parked, waiting) = shared.store.play_outcomes(&report.new_ids)?;
        set_progress(shared, |st| {
            st.matched = matched;
            st.parked = parked;
            st.waiting = waiting;
        });
        if waiting == 0 || tokio::time::Instant::now() > deadline {
            break;
        }
        shared.wake.resolve.notify_one();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn backfill_dry(shared: &Shared, since: i64) -> Result<(), PollError> {
    let client = shared.plex();
    let (server, accounts, ids) = server_and_accounts(shared, &client).await?;
    let size = shared.config().poll.page_size;
    // Per show key: its Plex title (what people recognise) and where its plays would go.
    let mut shows: std::collections::HashMap<String, (String, Would)> = Default::default();
    let mut would: Vec<WouldExport> = Vec::new();
    let mut seen_eps = std::collections::HashSet::new();
    let mut rows_read = 0u64;
    let accounts_n = ids.len() as u32;
    for (i, id) in ids.into_iter().enumerate() {
        let before = rows_read;
        let last = i as u32 + 1 == accounts_n;
        let query = HistoryQuery {
            account_id: Some(id),
            viewed_since: since,
            library_section_id: None,
            metadata_item_id: None,
        };
        // The same walk as the real backfill (`ingest_history`): it advances by what the server
        // served, refuses a server that ignores X-Plex-Container-Start and is bounded, so a
        // dry run fails where the real one would instead of counting page one again and again.
        let mut pages = client.history_pages(&query, size);
        while let Some(page) = pages.next_page().await? {
            rows_read += page.size;
            for row in &page.rows {
                let Some(play) = row_to_play(row, &server, &accounts, PlaySource::Backfill) else {
                    continue;
                };
                let key = play.show.key();
                if !shows.contains_key(&key) {
                    // The resolver's own rules: an ignored show or one with sync off sends
                    // nothing, a failed lookup is no "no match".
                    let to = crate::pipeline::would_resolve(shared, &play).await?;
                    if let Would::Retry(why) = &to {
                        tracing::info!(show = %play.show.title, rating_key = play.show.rating_key.as_deref().unwrap_or(""), reason = %why, "dry run: the show cannot be decided now; the resolver would retry");
                    }
                    shows.insert(key.clone(), (play.show.title.clone(), to));
                }
                let Some((
                    _,
                    Would::Export {
                        show_id,
                        tracker_title,
                    },
                )) = shows.get(&key)
                else {
                    continue;
                };
                let ep = (show_id.clone(), play.season, play.episode);
                if shared
                    .store
                    .watched(show_id, play.season, play.episode)?
                    .is_none()
                    && seen_eps.insert(ep)
                {
                    would.push(WouldExport {
                        show: play.show.title.clone(),
                        show_id: show_id.clone(),
                        tracker_title: tracker_title.clone(),
                        season: play.season,
                        episode: play.episode,
                        watched_at: play.viewed_at,
                    });
                }
            }
            set_progress(shared, |st| {
                st.rows_read = rows_read;
                st.total = page.total.filter(|_| last).map(|t| before + t);
                st.account = i as u32 + 1;
                st.accounts = accounts_n;
            });
        }
        if pages.pager().may_have_skipped() {
            set_progress(shared, |st| st.rows_may_be_missed = true);
        }
    }
    let titles = |want: fn(&Would) -> bool| {
        let mut t: Vec<String> = shows
            .values()
            .filter(|(_, to)| want(to))
            .map(|(title, _)| title.clone())
            .collect();
        t.sort();
        t.dedup();
        t
    };
    let unmatched = titles(|to| matches!(to, Would::NeedPerson));
    let undecided = titles(|to| matches!(to, Would::Retry(_)));
    set_progress(shared, |st| {
        st.would_export = would;
        st.unmatched_shows = unmatched;
        st.undecided_shows = undecided;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_parse_as_utc_midnight() {
        assert_eq!(super::parse_date("1970-01-01"), Some(0));
        assert_eq!(super::parse_date("2023-09-10"), Some(1_694_304_000));
        assert_eq!(super::parse_date("2024-02-29"), Some(1_709_164_800));
        for bad in [
            "2023-02-29",
            "2023-13-01",
            "20230910",
            "x",
            "2023-09-10T00:00",
            "",
        ] {
            assert_eq!(super::parse_date(bad), None, "{bad}");
        }
    }

    use super::*;

    #[test]
    fn cursors_stop_at_now_plus_the_slack() {
        let now = 1_800_000_000;
        let slack = CURSOR_SLACK.as_secs() as i64;
        let mut f = FutureRows::default();
        assert_eq!(f.clamp("srv/1", None, now - 5, now), now - 5);
        // Plex's clock a minute ahead: within the slack, taken as is, no warning.
        assert_eq!(f.clamp("srv/1", None, now + 60, now), now + 60);
        assert_eq!(f.seen, 0);
        // 2100-01-01: journaled by the caller, but the cursor stops at the ceiling.
        assert_eq!(f.clamp("srv/1", Some("9"), 4_102_444_800, now), now + slack);
        assert_eq!(f.clamp("srv/1", Some("9"), now + 86_400, now), now + slack);
        assert_eq!(f.seen, 2);
        // A cursor an older release left in the future: the poll reads from the ceiling.
        assert_eq!(poll_since(4_102_444_800, now, 600), now + slack - 600);
        assert_eq!(poll_since(now - 100, now, 600), now - 700);
        assert_eq!(poll_since(i64::MIN, now, 600), i64::MIN);
    }

    fn row(
        kind: &str,
        season: Option<u32>,
        episode: Option<u32>,
        show_rk: Option<&str>,
    ) -> HistoryRow {
        HistoryRow {
            history_key: Some("/status/sessions/history/1".into()),
            rating_key: show_rk.map(|_| "11".into()),
            key: None,
            show_rating_key: show_rk.map(str::to_string),
            parent_rating_key: None,
            kind: kind.into(),
            title: "Ep".into(),
            grandparent_title: Some("Show".into()),
            season,
            episode,
            viewed_at: 1_700_000_000,
            account_id: Some(1),
            device_id: None,
            library_section_id: None,
            originally_available_at: None,
        }
    }

    #[test]
    fn rows_become_plays_only_for_numbered_episodes() {
        let m = AccountMap::default();
        let p = row_to_play(
            &row("episode", Some(2), Some(3), Some("10")),
            "srv",
            &m,
            PlaySource::Poll,
        )
        .unwrap();
        assert_eq!(
            (p.season, p.episode, p.account_key.as_str()),
            (2, 3, "pms:1")
        );
        assert_eq!(p.show.key(), "srv/10");
        assert!(
            row_to_play(
                &row("movie", None, None, Some("10")),
                "srv",
                &m,
                PlaySource::Poll
            )
            .is_none()
        );
        assert!(
            row_to_play(
                &row("episode", None, Some(3), Some("10")),
                "srv",
                &m,
                PlaySource::Poll
            )
            .is_none()
        );
        // A deleted item has no keys: kept, matched by title.
        let d = row_to_play(
            &row("episode", Some(1), Some(1), None),
            "srv",
            &m,
            PlaySource::Poll,
        )
        .unwrap();
        assert!(d.show.key().starts_with("title:show"));
    }
}
