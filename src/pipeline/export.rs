//! The exporter task: outbox items into batches, batches to the exporter plugin, with backoff,
//! jitter, Retry-After and a dead letter after `max_attempts` — and kind to the tracker
//! (issue 15), whose API keys are often rate-limited and which is often a small web app:
//!
//! - **Coalescing.** A batch is formed at the last moment. While plays keep arriving (the
//!   unbatched outbox grew within `[outbox] coalesce`), only full batches are formed; part-full
//!   ones wait for the outbox to settle, at most `coalesce_max` (a running backfill: until it
//!   ends, at most [`BACKFILL_HOLD`]). A play arriving after a quiet window goes at once, so a
//!   lone play is not delayed.
//! - **Request budget.** `max_requests_per_minute` / `_per_hour` (sliding windows): only as
//!   many batches are formed as may be sent now, the fullest first, so the rest keep gathering
//!   episodes. A 429's Retry-After holds every export. `status` shows the wait and the backlog.
//! - **In flight.** At most `max_in_flight` requests at once, never two of the same show (a
//!   show's batches go in order). An AIMD window shrinks on failures and slow answers and grows
//!   back one step per fast answer; while it is small, part-full batches wait longer.
//!
//! Batches stay fixed once formed (the idempotency key of every attempt is the batch's).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use plexsync_plugin_api::{ExportBatch, ExportEpisode, ExportReceipt, PluginError, RateLimit};
use tokio::task::JoinSet;

use crate::config::OutboxConfig;
use crate::export_board::{BudgetView, ExportBudget};
use crate::model::{Batch, now_millis, now_secs};
use crate::state::Shared;
use crate::store::ops::{BatchOutcome, FormPlan, OutboxProbe};

use super::backoff;

/// While a backfill runs its plays are history, not news: part-full batches wait for its end
/// (every show gets one fuller request instead of one per page), at most this long.
pub const BACKFILL_HOLD: Duration = Duration::from_secs(600);
/// While plays keep arriving, the outbox is searched for full batches at most this often.
const FULL_SCAN_EVERY: Duration = Duration::from_millis(100);
/// How often a running backfill is checked for its end.
const HOLD_POLL: Duration = Duration::from_millis(100);
/// At most this many due batches are read in a round (and no more than can go at once).
const DUE_READ: usize = 64;
/// In-flight requests still running at shutdown get this long to finish; an abandoned one is
/// sent again (same idempotency key) after the restart.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// While new work keeps waking the exporter (every webhook of a mapped show queues its episode
/// in its own commit), a round it starts for that is at most this often: one look at the
/// outbox for all that came meanwhile, not one per webhook. A lone play (no round in the last
/// interval) is looked at at once. Like the resolver's, shorter than `[outbox] coalesce`.
const BUSY_ROUND_INTERVAL: Duration = Duration::from_millis(5);

/// Deliver outbox batches forever (until shutdown).
pub async fn exporter_task(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut ex = Planner::default();
    let mut flights: JoinSet<Flight> = JoinSet::new();
    let mut last_round: Option<Instant> = None;
    let mut woken_for_work = false;
    ex.epoch = shared.wake.tracker_changes.load(Relaxed);
    ex.tracker = shared.plugins().exporter.instance();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let changes = shared.wake.tracker_changes.load(Relaxed);
        if changes != ex.epoch {
            ex.epoch = changes;
            tracker_changed(&shared, &mut ex).await;
        }
        if let Some(wait) = last_round
            .filter(|_| std::mem::take(&mut woken_for_work))
            .and_then(|t| BUSY_ROUND_INTERVAL.checked_sub(t.elapsed()))
        {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => continue,
            }
        }
        last_round = Some(Instant::now());
        let config = shared.config();
        let cfg = config.outbox.clone();
        while let Some(done) = flights.try_join_next_with_id() {
            landed(&shared, &mut ex, done, &cfg).await;
        }
        let now = Instant::now();
        ex.budget.set_limits(
            config.tracker.max_requests_per_minute,
            config.tracker.max_requests_per_hour,
        );
        ex.aimd.max = cfg.max_in_flight.max(1);
        let held = ex.held(now);

        // 1. Form batches: only as the coalescing and the budget allow.
        let probe = shared.store.outbox_probe().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the outbox");
            OutboxProbe::default()
        });
        let backfill = shared.backfill.try_lock().is_err()
            || shared.board.export.bulk_imports.load(Relaxed) > 0;
        let window = ex.aimd.widen(cfg.coalesce);
        let cap = if backfill {
            BACKFILL_HOLD.max(cfg.coalesce_max)
        } else {
            cfg.coalesce_max
        };
        let form =
            ex.coalesce
                .observe(now, probe, window, cap, backfill && !cfg.coalesce.is_zero());
        let slots = ex.budget.available(now);
        // Looking for full batches reads the whole outbox: not while a backfill holds
        // everything anyway, and otherwise only once a batch's worth has arrived and at most
        // every FULL_SCAN_EVERY, so a large burst is not read over and over.
        let scan_full = form == Form::FullOnly
            && !backfill
            && probe.items >= cfg.batch_size as u64
            && ex.full_scan.is_none_or(|(at, newest)| {
                now - at >= FULL_SCAN_EVERY
                    && probe.newest_id.unwrap_or(0) >= newest + cfg.batch_size as u64
            });
        if scan_full {
            ex.full_scan = Some((now, probe.newest_id.unwrap_or(0)));
        }
        if form == Form::All {
            ex.full_scan = None;
        }
        let form = if form == Form::FullOnly && !scan_full {
            Form::Nothing
        } else {
            form
        };
        if probe.items > 0 && form != Form::Nothing && held.is_none() && slots > 0 {
            // Under a budget or backpressure, form no more than can go now: the rest keep
            // gathering episodes in the outbox.
            let tight = ex.budget.limited() || ex.aimd.backing_off();
            let plan = FormPlan {
                full_only: form == Form::FullOnly,
                max_batches: if tight {
                    slots.min(ex.aimd.limit().saturating_sub(flights.len()).max(1))
                } else {
                    usize::MAX
                },
            };
            if let Err(e) = shared.store.form_batches_with(cfg.batch_size, plan).await {
                tracing::error!(error = %e, "cannot form export batches");
            }
        }

        // 2. Send due batches, up to the in-flight window, one per show at a time.
        let mut budget_blocked = false;
        if held.is_none() && flights.len() < ex.aimd.limit() {
            let due = shared
                .store
                .next_due_batches(
                    now_millis(),
                    DUE_READ.min(ex.aimd.limit() - flights.len()),
                    &ex.busy(now),
                )
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read export batches");
                    Vec::new()
                });
            for b in due {
                if flights.len() >= ex.aimd.limit() {
                    break;
                }
                // A show's batches go in order: a later one never overtakes one in flight.
                if ex.flying.contains(&b.id) || ex.shows.contains(&b.show_id) {
                    continue;
                }
                if !ex.budget.take(Instant::now()) {
                    budget_blocked = true;
                    shared.board.export.budget_waits.fetch_add(1, Relaxed);
                    break;
                }
                ex.flying.insert(b.id);
                ex.shows.insert(b.show_id.clone());
                shared.board.export.in_flight.fetch_add(1, Relaxed);
                let exporter = shared.plugins().exporter.clone();
                let epoch = ex.epoch;
                let (id, show) = (b.id, b.show_id.clone());
                let task = flights.spawn(async move {
                    let batch = export_batch(&b);
                    let started = Instant::now();
                    let result = exporter.export(&batch).await;
                    Flight {
                        batch: b,
                        result,
                        elapsed: started.elapsed(),
                        epoch,
                    }
                });
                ex.tasks.insert(task.id(), (id, show));
            }
        }
        // Waiting for the budget: a due batch could not go, or episodes wait to be batched.
        let budget_short = budget_blocked || (probe.items > 0 && ex.budget.limited());
        ex.publish(&shared, Instant::now(), budget_short);

        // 3. Sleep until something can change: a request finishes, new work, a retry or the
        //    budget comes due, the outbox may have settled, or shutdown.
        let now = Instant::now();
        let mut wait = Duration::from_secs(60);
        if let Some(t) = ex.coalesce.next_check(now, window, cap) {
            wait = wait.min(t);
        }
        let rest_end = ex.next_rest_end(now);
        if let Some(r) = rest_end {
            wait = wait.min(r);
        }
        if let Some(h) = ex.held(now) {
            wait = wait.min(h);
        } else if budget_blocked || (probe.items > 0 && slots == 0) {
            wait = wait.min(ex.budget.next_slot(now));
        }
        // With requests in flight their answers wake the loop; the scan of every batch for
        // the next retry is for when none is (a drain of thousands would read them all on
        // every answer otherwise).
        let next_retry = if flights.is_empty() {
            shared.store.next_batch_at()
        } else {
            Ok(None)
        };
        if let Ok(Some(t)) = next_retry {
            let d = t - now_millis();
            // A batch due now but not sent waits for a flight to finish (or the budget, above).
            if d > 0 {
                wait = wait.min(Duration::from_millis(d as u64));
            } else if flights.is_empty()
                && !budget_blocked
                && ex.held(now).is_none()
                && rest_end.is_none()
            {
                wait = wait.min(Duration::from_millis(1));
            }
        }
        tokio::select! {
            Some(done) = flights.join_next_with_id(), if !flights.is_empty() => {
                landed(&shared, &mut ex, done, &cfg).await;
            }
            _ = shared.wake.export.notified() => woken_for_work = true,
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    // Let requests already sent be answered and recorded; what is left is sent again later.
    let cfg = shared.config().outbox.clone();
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while !flights.is_empty() {
        match tokio::time::timeout_at(deadline, flights.join_next_with_id()).await {
            Ok(Some(done)) => landed(&shared, &mut ex, done, &cfg).await,
            Ok(None) | Err(_) => break,
        }
    }
    flights.abort_all();
    shared.board.export.in_flight.store(0, Relaxed);
}

/// One request's outcome, back from its task.
struct Flight {
    batch: Batch,
    result: Result<ExportReceipt, PluginError>,
    elapsed: Duration,
    /// [`Planner::epoch`] when it was sent.
    epoch: u64,
}

/// The tracker's settings or key changed (a reload, `secret set tracker-key`): what waits out
/// a back-off goes now, as the change may be the fix (a wrong URL, a refused key) — without
/// it, a fixed tracker got its exports over the next `max_backoff` (30 minutes by default),
/// with health showing the old error meanwhile. Retry-After holds and resting shows go too.
/// Another tracker altogether also starts with its own budget and in-flight window: what the
/// old one said of its limits ("0 left for 50 minutes") is not the new one's.
async fn tracker_changed(shared: &Shared, ex: &mut Planner) {
    let instance = shared.plugins().exporter.instance();
    ex.resting.clear();
    if instance != ex.tracker {
        tracing::info!(from = %ex.tracker, to = %instance, "another tracker: its request budget and in-flight window start afresh");
        ex.budget = Budget::default();
        ex.aimd = Aimd::default();
        ex.hold_until = None;
        ex.tracker = instance;
    }
    // The same tracker keeps what it said of its limits (a Retry-After, "0 left"): a
    // change on our side does not lift them. The batches brought forward wait for them.
    match shared.store.batches_due_now(now_millis()).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(
                batches = n,
                "the tracker's settings or key changed: exports waiting out a back-off go now"
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot bring waiting exports forward; they go at their next attempt")
        }
    }
}

fn export_batch(b: &Batch) -> ExportBatch {
    ExportBatch {
        show_id: b.show_id.clone(),
        idempotency_key: b.idempotency_key.clone(),
        episodes: b
            .items
            .iter()
            .map(|i| ExportEpisode {
                season: i.season,
                episode: i.episode,
                watched_at: i.watched_at,
            })
            .collect(),
    }
}

/// A request's task ended: record its outcome, or free its show if the task failed (the
/// batch stays due and goes again with its key).
async fn landed(
    shared: &Shared,
    ex: &mut Planner,
    done: Result<(tokio::task::Id, Flight), tokio::task::JoinError>,
    outbox: &OutboxConfig,
) {
    match done {
        Ok((id, f)) => {
            ex.tasks.remove(&id);
            finish(shared, ex, f, outbox).await;
        }
        Err(e) => {
            if let Some((batch, show)) = ex.tasks.remove(&e.id()) {
                ex.flying.remove(&batch);
                ex.shows.remove(&show);
                ex.rest(&show, Instant::now(), outbox);
                shared.board.export.in_flight.fetch_sub(1, Relaxed);
                tracing::error!(show_id = %show, error = %e, "export request task failed; the batch goes again after a rest");
            }
        }
    }
}

/// Record how a request went: the store, metrics, the in-flight window and holds.
async fn finish(shared: &Shared, ex: &mut Planner, f: Flight, outbox: &OutboxConfig) {
    let b = &f.batch;
    ex.flying.remove(&b.id);
    ex.shows.remove(&b.show_id);
    let board = &shared.board.export;
    board.in_flight.fetch_sub(1, Relaxed);
    board.latency.observe(f.elapsed);
    let ms = f.elapsed.as_secs_f64() * 1000.0;
    // An answer to a request sent before the tracker's settings or key changed says nothing
    // of the tracker as it is now: a success is the batch's, but its limits, latency,
    // Retry-After and errors are not ours to learn, and a failure is no verdict.
    let ours = f.epoch == ex.epoch;
    let stated = match &f.result {
        Ok(r) => r.rate_limit,
        Err(e) => e.rate_limit,
    };
    if let Some(rl) = stated.filter(|_| ours) {
        ex.budget.learn(&rl, ex.flying.len(), Instant::now());
    }
    let outcome = match f.result {
        Ok(r) => {
            if ours {
                ex.aimd.on_answer(f.elapsed, Instant::now());
                shared.note_tracker(None);
            }
            tracing::info!(show_id = %b.show_id, episodes = b.items.len(), marked = r.marked, already_watched = r.already_watched, unknown = r.unknown.len(), ms, "exported");
            shared.board.metrics.exports_delivered.fetch_add(1, Relaxed);
            let unknown: Vec<(u32, u32)> = r
                .unknown
                .iter()
                .copied()
                .filter(|u| b.items.iter().any(|i| (i.season, i.episode) == *u))
                .collect();
            if unknown.is_empty() {
                BatchOutcome::Delivered {
                    marked: r.marked,
                    already: r.already_watched,
                }
            } else {
                // Not counted as exported: a dead letter naming them, for a person to retry
                // once the tracker knows them (an episode that aired an hour ago).
                tracing::warn!(show_id = %b.show_id, unknown = ?unknown, "the tracker does not know some episodes; they go to the dead letter");
                shared.board.metrics.exports_dead.fetch_add(1, Relaxed);
                BatchOutcome::Partly {
                    marked: r.marked,
                    already: r.already_watched,
                    unknown,
                }
            }
        }
        Err(e) if !ours => {
            // Sent before a switch or a key change and refused: no verdict on the batch for
            // the tracker it goes to now, so no attempt counted and no wait.
            tracing::info!(show_id = %b.show_id, error = %e, "an export to the tracker before the change failed; it goes again now");
            BatchOutcome::Paused {
                error: failure_text(&e),
                retry_at_ms: now_millis(),
            }
        }
        Err(e) if e.is_transient() => {
            // A failing or refusing tracker: fewer requests at once, wider batches.
            if ours {
                ex.aimd.on_pushback(Instant::now());
                shared.note_tracker_error(&e);
            }
            if let Some(ra) = e.retry_after.filter(|_| ours) {
                // A Retry-After is the tracker asking for quiet, not a verdict on one batch:
                // until it passes no batch at all is sent.
                let until = Instant::now() + ra;
                ex.hold_until = Some(ex.hold_until.map_or(until, |h| h.max(until)));
            }
            let d = backoff(b.attempts + 1, outbox.initial_backoff, outbox.max_backoff)
                .max(e.retry_after.unwrap_or_default());
            let retry_at_ms = now_millis() + d.as_millis() as i64;
            let m = &shared.board.metrics;
            if e.retry_after.is_some() {
                tracing::warn!(show_id = %b.show_id, retry_in_s = d.as_secs(), error = %e, "the tracker asked for quiet; the export waits (not counted as an attempt)");
                m.exports_retried.fetch_add(1, Relaxed);
                BatchOutcome::Paused {
                    error: failure_text(&e),
                    retry_at_ms,
                }
            } else {
                tracing::warn!(show_id = %b.show_id, attempt = b.attempts + 1, retry_in_s = d.as_secs(), error = %e, "export failed; will retry");
                if b.attempts + 1 >= outbox.max_attempts {
                    &m.exports_dead
                } else {
                    &m.exports_retried
                }
                .fetch_add(1, Relaxed);
                BatchOutcome::Transient {
                    error: failure_text(&e),
                    retry_at_ms,
                }
            }
        }
        Err(e) => {
            if ours {
                shared.note_tracker_error(&e);
            }
            tracing::error!(show_id = %b.show_id, error = %e, "export refused; moved to the dead letter");
            shared.board.metrics.exports_dead.fetch_add(1, Relaxed);
            BatchOutcome::Permanent {
                error: failure_text(&e),
            }
        }
    };
    // The activity row names the tracker show as well as the Plex one.
    let tracker_title = shared
        .catalogue()
        .and_then(|c| c.get(&b.show_id).map(|s| s.title.to_string()));
    match shared
        .store
        .finish_batch_titled(b.id, outcome, outbox.max_attempts, ms, tracker_title)
        .await
    {
        Ok(()) => {
            ex.resting.remove(&b.show_id);
        }
        Err(e) => {
            ex.rest(&b.show_id, Instant::now(), outbox);
            tracing::error!(show_id = %b.show_id, batch_id = b.id, error = %e, "cannot record export result; the show's batch goes again after a rest");
        }
    }
}

/// An export failure as the activity row and the dead letter show it: a refused key says
/// what to do (`plexsync secret set tracker-key`) instead of the tracker's raw answer.
fn failure_text(e: &PluginError) -> String {
    crate::health::tracker_error_text(e)
}

/// The exporter's working state between rounds.
#[derive(Default)]
struct Planner {
    coalesce: Coalescer,
    budget: Budget,
    aimd: Aimd,
    /// No request before this (a Retry-After).
    hold_until: Option<Instant>,
    /// Batches and shows with a request in flight, and which task carries which batch (so a
    /// task that panicked still frees its show).
    flying: HashSet<u64>,
    shows: HashSet<String>,
    tasks: HashMap<tokio::task::Id, (u64, String)>,
    /// Shows whose last request's outcome could not be recorded (the store could not commit
    /// the write: a full disk, an I/O error; or the request's task failed), until when they
    /// rest and how many times in a row. Their batch is still due as stored: without a rest
    /// it would go again at once, round after round, spending the budget without ever
    /// counting an attempt. Rows of the batch that do not decode never fail the recording
    /// (`Store::finish_batch_titled` records around them): what rests here is a store that
    /// cannot commit, which a rest can outlast, not one batch that could never be recorded
    /// and would be sent again for ever.
    resting: HashMap<String, (Instant, u32)>,
    /// The last search for full batches: when, and the newest outbox id then.
    full_scan: Option<(Instant, u64)>,
    /// The tracker the budget, the window and the holds are about.
    tracker: String,
    /// `Wakeups::tracker_changes` as this planner last saw it: requests sent before a change
    /// are answered by the tracker as it was.
    epoch: u64,
}

impl Planner {
    /// `show`'s last outcome was not recorded: it rests, longer each time in a row.
    fn rest(&mut self, show: &str, now: Instant, cfg: &OutboxConfig) {
        let n = self.resting.get(show).map_or(1, |r| r.1.saturating_add(1));
        let until = now + super::backoff(n, cfg.initial_backoff, cfg.max_backoff);
        self.resting.insert(show.to_string(), (until, n));
    }

    /// Shows that may not send now: a request in flight, or resting.
    fn busy(&self, now: Instant) -> std::borrow::Cow<'_, HashSet<String>> {
        if self.resting.values().all(|r| r.0 <= now) {
            return std::borrow::Cow::Borrowed(&self.shows);
        }
        let mut busy = self.shows.clone();
        busy.extend(
            self.resting
                .iter()
                .filter(|(_, r)| r.0 > now)
                .map(|(s, _)| s.clone()),
        );
        std::borrow::Cow::Owned(busy)
    }

    /// How long until the next resting show may send again.
    fn next_rest_end(&self, now: Instant) -> Option<Duration> {
        self.resting
            .values()
            .filter(|r| r.0 > now)
            .map(|r| r.0 - now)
            .min()
    }

    /// How long exports are still held by a Retry-After.
    fn held(&mut self, now: Instant) -> Option<Duration> {
        match self.hold_until {
            Some(t) if t > now => Some(t - now),
            _ => {
                self.hold_until = None;
                None
            }
        }
    }

    /// Show the budget state on the board for `status`.
    fn publish(&mut self, shared: &Shared, now: Instant, backlog: bool) {
        let unix_in = |d: Duration| now_secs() + d.as_secs_f64().ceil() as i64;
        let (waiting_until, waiting_for) = match self.held(now) {
            Some(d) => (Some(unix_in(d)), Some("tracker")),
            None if backlog && self.budget.available(now) == 0 => {
                (Some(unix_in(self.budget.next_slot(now))), Some("budget"))
            }
            None => (None, None),
        };
        let unix_at = |t: Instant| now_secs() + t.saturating_duration_since(now).as_secs() as i64;
        let view = BudgetView {
            tracker: self
                .budget
                .learned(now)
                .map(|l| crate::export_board::TrackerBudget {
                    limit: l.limit,
                    remaining: l.remaining,
                    reset_at: unix_at(l.reset_at),
                }),
            waiting_until,
            waiting_for,
            available_now: self.budget.available(now).min(u32::MAX as usize) as u64,
            in_flight_limit: self.aimd.limit(),
        };
        if let Ok(mut g) = shared.board.export.view.lock() {
            *g = view;
        }
    }
}

/// What the coalescing allows to be formed this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Everything waiting, part-full batches too.
    All,
    /// Only full batches: more of the same shows is still arriving.
    FullOnly,
    Nothing,
}

/// Tells a burst (or a backfill) from a lone play by watching the unbatched outbox grow.
#[derive(Debug, Default)]
struct Coalescer {
    /// The newest outbox id seen (ids only grow).
    newest: Option<u64>,
    last_growth: Option<Instant>,
    /// Set while plays keep arriving: when part-full batches started waiting.
    busy_since: Option<Instant>,
    /// A backfill runs: part-full batches wait for its end.
    holding: bool,
}

impl Coalescer {
    /// Look at the outbox and decide. `window` zero turns coalescing off; `hold` (a backfill
    /// runs) keeps part-full batches waiting from its first play on.
    fn observe(
        &mut self,
        now: Instant,
        probe: OutboxProbe,
        window: Duration,
        cap: Duration,
        hold: bool,
    ) -> Form {
        self.holding = hold;
        if probe.newest_id > self.newest {
            // Several new at one look is a burst too, however late this look came (a busy
            // machine can leave the exporter asleep past the window).
            let several = self.newest.is_some()
                && probe.newest_id.unwrap_or(0) > self.newest.unwrap_or(0) + 1;
            self.newest = probe.newest_id;
            // Arrivals within a window of each other are one burst; the first play after a
            // quiet window goes at once (a lone play is not kept waiting).
            let streak = several || self.last_growth.is_some_and(|t| now - t < window);
            self.last_growth = Some(now);
            if streak || hold {
                self.busy_since.get_or_insert(now);
            } else {
                self.busy_since = None;
            }
        }
        if probe.items == 0 {
            self.busy_since = None;
            return Form::Nothing;
        }
        if window.is_zero() {
            self.busy_since = None;
            return Form::All;
        }
        match (self.busy_since, self.last_growth) {
            (Some(since), Some(last)) => {
                // Still at rest after a window, and nothing left to resolve: a resolver slowed
                // by a busy machine is not the end of the burst (the cap still bounds it).
                let settled = !hold && now - last >= window && probe.resolving == 0;
                if settled || now - since >= cap {
                    self.busy_since = None;
                    Form::All
                } else {
                    Form::FullOnly
                }
            }
            _ => Form::All,
        }
    }

    /// When to look again while part-full batches wait.
    fn next_check(&self, now: Instant, window: Duration, cap: Duration) -> Option<Duration> {
        let since = self.busy_since?;
        if self.holding {
            // A backfill's end has no wake-up of its own: look now and then.
            return Some((since + cap).saturating_duration_since(now).min(HOLD_POLL));
        }
        let last = self.last_growth.unwrap_or(since);
        let at = (last + window).min(since + cap).max(now);
        // Never spin: a window of a few ms is checked at most every millisecond.
        Some((at - now).max(Duration::from_millis(1)))
    }
}

/// Sliding-window request budget (per minute and per hour; limits of 0 are off), and what
/// the tracker itself announced with its last answer (rate-limit headers).
#[derive(Debug, Default)]
struct Budget {
    per_minute: u32,
    per_hour: u32,
    /// Send times within the longest window in use.
    sent: VecDeque<Instant>,
    learned: Option<Learned>,
}

/// The tracker's own budget as its last answer stated it: requests left until a reset.
#[derive(Debug, Clone, Copy)]
struct Learned {
    limit: Option<u64>,
    remaining: u64,
    reset_at: Instant,
}

/// A tracker that says how many requests are left but not when they come back: assume a
/// minute, the shortest window rate limiters use, rather than stopping for good.
const UNSTATED_RESET: Duration = Duration::from_secs(60);

const MINUTE: Duration = Duration::from_secs(60);

/// Two stated resets this close are the same window (trackers state them in whole seconds,
/// and answers take time to arrive).
const SAME_WINDOW: Duration = Duration::from_secs(2);

/// At most this many send times are kept (16 bytes each): more than a home tracker takes in
/// an hour, and a bound on memory whatever a tracker answers.
const SENT_KEPT: usize = 100_000;
const HOUR: Duration = Duration::from_secs(3600);

impl Budget {
    fn set_limits(&mut self, per_minute: u32, per_hour: u32) {
        self.per_minute = per_minute;
        self.per_hour = per_hour;
    }

    fn limited(&self) -> bool {
        self.per_minute > 0 || self.per_hour > 0 || self.learned.is_some()
    }

    /// Take in what the tracker said of its budget with an answer. Requests still in flight
    /// were sent after the tracker counted, so they come off what it says is left.
    fn learn(&mut self, rl: &RateLimit, in_flight: usize, now: Instant) {
        let Some(remaining) = rl.remaining else {
            return;
        };
        let mut said = Learned {
            limit: rl.limit,
            remaining: remaining.saturating_sub(in_flight as u64),
            reset_at: now + rl.reset_after.unwrap_or(UNSTATED_RESET),
        };
        // Answers land out of order. Within one window (resets that agree but for rounding)
        // an older answer (more left) must not undo what later answers and our own sends
        // counted down. A reset well after the known one is the tracker's next window, whose
        // count is the new truth; one well before it is a late answer from a window gone.
        if let Some(known) = self.learned(now) {
            if said.reset_at > known.reset_at + SAME_WINDOW {
                // A new window: as said.
            } else if said.reset_at + SAME_WINDOW < known.reset_at {
                return;
            } else {
                said.remaining = said.remaining.min(known.remaining);
                said.reset_at = said.reset_at.max(known.reset_at);
            }
        }
        self.learned = Some(said);
    }

    /// The tracker's stated budget while its window lasts (afterwards it is full again until
    /// the next answer says otherwise).
    fn learned(&mut self, now: Instant) -> Option<Learned> {
        if self.learned.is_some_and(|l| l.reset_at <= now) {
            self.learned = None;
        }
        self.learned
    }

    /// Keep an hour of send times whatever the limits are now: a limit set by a reload (the
    /// usual answer to 429s) counts what was sent before it, not from zero.
    fn prune(&mut self, now: Instant) {
        while self.sent.front().is_some_and(|t| now - *t >= HOUR) || self.sent.len() > SENT_KEPT {
            self.sent.pop_front();
        }
    }

    fn in_last(&self, now: Instant, w: Duration) -> usize {
        self.sent.iter().rev().take_while(|t| now - **t < w).count()
    }

    /// Requests that may go now.
    fn available(&mut self, now: Instant) -> usize {
        self.prune(now);
        let mut n = usize::MAX;
        if self.per_minute > 0 {
            n = n.min((self.per_minute as usize).saturating_sub(self.in_last(now, MINUTE)));
        }
        if self.per_hour > 0 {
            n = n.min((self.per_hour as usize).saturating_sub(self.in_last(now, HOUR)));
        }
        if let Some(l) = self.learned(now) {
            n = n.min(usize::try_from(l.remaining).unwrap_or(usize::MAX));
        }
        n
    }

    /// Use one request of the budget, if there is one.
    fn take(&mut self, now: Instant) -> bool {
        if self.available(now) == 0 {
            return false;
        }
        self.sent.push_back(now);
        if let Some(l) = self.learned.as_mut() {
            l.remaining = l.remaining.saturating_sub(1);
        }
        true
    }

    /// How long until a request may go again.
    fn next_slot(&mut self, now: Instant) -> Duration {
        if self.available(now) > 0 {
            return Duration::ZERO;
        }
        let mut wait = Duration::ZERO;
        for (limit, w) in [(self.per_minute, MINUTE), (self.per_hour, HOUR)] {
            let n = self.in_last(now, w);
            if limit > 0 && n >= limit as usize {
                // The window frees a slot when its oldest request in it ages out.
                let i = self.sent.len() - n + (n - limit as usize);
                if let Some(t) = self.sent.get(i) {
                    wait = wait.max((*t + w).saturating_duration_since(now));
                }
            }
        }
        if let Some(l) = self.learned(now).filter(|l| l.remaining == 0) {
            wait = wait.max(l.reset_at.saturating_duration_since(now));
        }
        wait.max(Duration::from_millis(1))
    }
}

/// The in-flight window: additive increase on fast answers, halved on a failure or an answer
/// much slower than usual (at most once a second), between 1 and `max`.
#[derive(Debug)]
struct Aimd {
    window: f64,
    max: usize,
    /// Recent answer times (ms) of successful requests: the usual latency.
    recent: VecDeque<f64>,
    last_cut: Option<Instant>,
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            window: 2.0,
            max: 2,
            recent: VecDeque::new(),
            last_cut: None,
        }
    }
}

/// An answer this much slower than the usual (median) one counts as the tracker struggling,
/// with an absolute floor so a fast tracker's jitter (2 ms → 9 ms) is not mistaken for it.
const SLOW_FACTOR: f64 = 4.0;
const SLOW_FLOOR_MS: f64 = 250.0;
const RECENT: usize = 32;

impl Aimd {
    fn limit(&self) -> usize {
        (self.window.floor() as usize).clamp(1, self.max.max(1))
    }

    fn backing_off(&self) -> bool {
        self.limit() < self.max
    }

    /// The coalescing window while backing off: wider the fewer requests may fly.
    fn widen(&self, window: Duration) -> Duration {
        window.mul_f64(self.max.max(1) as f64 / self.limit() as f64)
    }

    fn usual_ms(&self) -> Option<f64> {
        if self.recent.len() < 8 {
            return None;
        }
        let mut v: Vec<f64> = self.recent.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    fn on_answer(&mut self, took: Duration, now: Instant) {
        let ms = took.as_secs_f64() * 1000.0;
        let slow = self
            .usual_ms()
            .is_some_and(|u| ms > (u * SLOW_FACTOR).max(u + SLOW_FLOOR_MS));
        if slow {
            self.cut(now);
        } else {
            self.window = (self.window + 1.0 / self.window.max(1.0)).min(self.max as f64);
        }
        self.recent.push_back(ms);
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }

    fn on_pushback(&mut self, now: Instant) {
        self.cut(now);
    }

    fn cut(&mut self, now: Instant) {
        // Answers to requests sent before the last cut say nothing new about it.
        if self
            .last_cut
            .is_some_and(|t| now - t < Duration::from_secs(1))
        {
            return;
        }
        self.last_cut = Some(now);
        self.window = (self.window.min(self.max as f64) / 2.0).max(1.0);
    }
}

/// Seconds until `beyond` more requests than may go now have gone under sliding limits: a
/// window lets `limit` requests go only as the sends in it age out, so each `limit` of them
/// takes a whole window (spreading them evenly, as a rate, said half that for a backlog
/// within one window). The tighter limit decides; rough, and never short.
fn windows_needed(beyond: u64, per_minute: u32, per_hour: u32) -> u64 {
    [(per_minute, 60), (per_hour, 3600)]
        .into_iter()
        .filter(|&(limit, _)| limit > 0 && beyond > 0)
        .map(|(limit, secs)| beyond.div_ceil(u64::from(limit)).saturating_mul(secs))
        .max()
        .unwrap_or(0)
}

/// `export_budget` for `/api/status`: limits, the wait, and the backlog at the allowed pace.
pub fn budget_status(shared: &Shared) -> ExportBudget {
    let view = shared
        .board
        .export
        .view
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    let config = shared.config();
    let cfg = &config.outbox;
    let (per_minute, per_hour) = (
        config.tracker.max_requests_per_minute,
        config.tracker.max_requests_per_hour,
    );
    let configured = per_minute > 0 || per_hour > 0;
    let limited = configured || view.waiting_until.is_some() || view.tracker.is_some();
    let backlog = if limited {
        shared.store.backlog_requests(cfg.batch_size).unwrap_or(0)
    } else {
        0
    };
    let wait_left = view
        .waiting_until
        .map(|t| (t - now_secs()).max(0) as u64)
        .unwrap_or(0);
    let eta = limited.then(|| {
        let beyond = backlog.saturating_sub(view.available_now);
        let ours = wait_left.max(windows_needed(beyond, per_minute, per_hour));
        // More than the tracker has left waits for its window to reset at least.
        let theirs = view
            .tracker
            .filter(|t| backlog > t.remaining)
            .map_or(0, |t| (t.reset_at - now_secs()).max(0) as u64);
        ours.max(theirs)
    });
    ExportBudget {
        limited,
        per_minute: (per_minute > 0).then_some(per_minute),
        per_hour: (per_hour > 0).then_some(per_hour),
        waiting_until: view.waiting_until,
        waiting_for: view.waiting_for.map(str::to_string),
        tracker: view.tracker,
        backlog_requests: backlog,
        backlog_eta_secs: eta.filter(|_| backlog > 0),
        in_flight_limit: if view.in_flight_limit == 0 {
            cfg.max_in_flight
        } else {
            view.in_flight_limit
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(items: u64, newest: u64) -> OutboxProbe {
        OutboxProbe {
            items,
            newest_id: Some(newest),
            resolving: 0,
        }
    }

    #[test]
    fn a_late_look_at_many_new_items_or_plays_still_resolving_is_still_a_burst() {
        let mut c = Coalescer::default();
        let t = Instant::now();
        assert_eq!(c.observe(t, probe(1, 1), W, CAP, false), Form::All);
        // Asleep well past the window, then 30 new items at once: a burst, not a lone play.
        let late = t + Duration::from_millis(500);
        assert_eq!(
            c.observe(late, probe(30, 31), W, CAP, false),
            Form::FullOnly
        );
        // Quiet outbox, but plays still wait for the resolver: keep waiting.
        let mut p = probe(30, 31);
        p.resolving = 5;
        assert_eq!(c.observe(late + W * 2, p, W, CAP, false), Form::FullOnly);
        p.resolving = 0;
        assert_eq!(c.observe(late + W * 3, p, W, CAP, false), Form::All);
    }

    const W: Duration = Duration::from_millis(20);
    const CAP: Duration = Duration::from_secs(2);

    /// A show whose outcome could not be recorded rests, longer each time in a row, and is
    /// busy for the next rounds' reads meanwhile; other shows are not.
    #[test]
    fn an_unrecorded_outcome_rests_its_show_and_longer_each_time() {
        let cfg = OutboxConfig::default();
        let mut p = Planner::default();
        let t = Instant::now();
        p.shows.insert("in-flight".into());
        assert!(matches!(p.busy(t), std::borrow::Cow::Borrowed(_)));
        p.rest("a", t, &cfg);
        let busy = p.busy(t);
        assert!(busy.contains("a") && busy.contains("in-flight") && !busy.contains("b"));
        let first = p.next_rest_end(t).unwrap();
        // The first rest is the first retry's backoff: half to all of initial_backoff.
        assert!(first >= cfg.initial_backoff / 2 && first <= cfg.initial_backoff);
        let after = t + first + Duration::from_millis(1);
        assert!(!p.busy(after).contains("a"));
        assert_eq!(p.next_rest_end(after), None);
        p.rest("a", after, &cfg);
        assert!(
            p.next_rest_end(after).unwrap() >= cfg.initial_backoff,
            "a second failure in a row rests longer"
        );
        p.resting.remove("a");
        assert!(matches!(p.busy(after), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn a_lone_play_goes_at_once() {
        let mut c = Coalescer::default();
        let t = Instant::now();
        assert_eq!(c.observe(t, probe(1, 1), W, CAP, false), Form::All);
        assert_eq!(c.next_check(t, W, CAP), None);
        // Much later, another lone play: at once again.
        let t2 = t + Duration::from_secs(5);
        assert_eq!(c.observe(t2, probe(1, 2), W, CAP, false), Form::All);
    }

    #[test]
    fn a_burst_waits_for_the_outbox_to_settle_then_sends_everything() {
        let mut c = Coalescer::default();
        let t = Instant::now();
        assert_eq!(c.observe(t, probe(1, 1), W, CAP, false), Form::All);
        let ms = Duration::from_millis;
        assert_eq!(
            c.observe(t + ms(5), probe(3, 4), W, CAP, false),
            Form::FullOnly
        );
        assert_eq!(
            c.observe(t + ms(15), probe(9, 10), W, CAP, false),
            Form::FullOnly
        );
        assert_eq!(c.next_check(t + ms(15), W, CAP), Some(ms(20)));
        // Nothing new for a window: part-full batches go.
        assert_eq!(
            c.observe(t + ms(36), probe(9, 10), W, CAP, false),
            Form::All
        );
        assert_eq!(c.next_check(t + ms(36), W, CAP), None);
    }

    #[test]
    fn a_stream_that_never_settles_is_capped() {
        let mut c = Coalescer::default();
        let t = Instant::now();
        c.observe(t, probe(1, 1), W, CAP, false);
        let mut sent_all = 0;
        for i in 1..=300u64 {
            let f = c.observe(
                t + Duration::from_millis(10 * i),
                probe(i, i + 1),
                W,
                CAP,
                false,
            );
            if f == Form::All {
                sent_all += 1;
            }
        }
        // 3 s of arrivals every 10 ms: the 2 s cap lets part-full batches go once.
        assert_eq!(sent_all, 1);
    }

    #[test]
    fn a_backfill_holds_part_full_batches_until_it_ends() {
        let mut c = Coalescer::default();
        let t = Instant::now();
        assert_eq!(
            c.observe(t, probe(5, 5), W, BACKFILL_HOLD, true),
            Form::FullOnly
        );
        // A pause between pages is no reason to send while the backfill runs.
        let later = t + Duration::from_millis(200);
        assert_eq!(
            c.observe(later, probe(5, 5), W, BACKFILL_HOLD, true),
            Form::FullOnly
        );
        // It ended: settled after a window.
        let end = later + Duration::from_millis(30);
        assert_eq!(c.observe(end, probe(5, 5), W, CAP, false), Form::All);
    }

    #[test]
    fn zero_window_sends_everything_at_once() {
        let mut c = Coalescer::default();
        let t = Instant::now();
        for i in 1..5 {
            assert_eq!(
                c.observe(t, probe(i, i), Duration::ZERO, CAP, false),
                Form::All
            );
        }
        assert_eq!(
            c.observe(t, probe(0, 4), Duration::ZERO, CAP, false),
            Form::Nothing
        );
    }

    #[test]
    fn the_trackers_stated_budget_is_spent_and_waited_for_and_not_undone_by_a_late_answer() {
        let now = Instant::now();
        let mut b = Budget::default();
        assert!(!b.limited());
        let said = |remaining, reset| RateLimit {
            limit: Some(4),
            remaining: Some(remaining),
            reset_after: Some(Duration::from_secs(reset)),
        };
        // The later answer first (1 left, another request in flight): nothing may go.
        b.learn(&said(2, 3), 1, now);
        assert!(b.limited());
        assert!(b.take(now));
        assert_eq!(b.available(now), 0);
        // The earlier answer (3 left) lands late: still nothing, until the reset.
        b.learn(&said(3, 3), 0, now);
        assert_eq!(b.available(now), 0);
        assert!(b.next_slot(now) >= Duration::from_millis(2900));
        let after = now + Duration::from_secs(3);
        assert_eq!(b.available(after), usize::MAX, "full again after the reset");
        assert!(!b.limited());
        // Only a count without a reset: a minute.
        b.learn(
            &RateLimit {
                remaining: Some(0),
                ..Default::default()
            },
            0,
            after,
        );
        assert_eq!(b.next_slot(after), UNSTATED_RESET);
    }

    #[test]
    fn a_backlog_past_the_budget_takes_a_window_for_each_limits_worth() {
        // 50 past an hourly 100 (all 100 available now): the next hour, not half of it.
        assert_eq!(windows_needed(50, 0, 100), 3600);
        assert_eq!(windows_needed(990, 10, 0), 99 * 60);
        // Both limits: the tighter one decides.
        assert_eq!(windows_needed(140, 10, 100), 2 * 3600);
        assert_eq!(windows_needed(0, 10, 100), 0);
        assert_eq!(windows_needed(5, 0, 0), 0);
    }

    /// An answer from the tracker's next window (its reset a window later) is taken as it
    /// says; a late answer from a window already gone changes nothing.
    #[test]
    fn the_trackers_next_window_replaces_the_last_ones_count() {
        let now = Instant::now();
        let said = |remaining, reset| RateLimit {
            limit: Some(100),
            remaining: Some(remaining),
            reset_after: Some(Duration::from_secs(reset)),
        };
        let mut b = Budget::default();
        b.learn(&said(3, 1), 0, now);
        let next = now + Duration::from_millis(500);
        b.learn(&said(99, 60), 0, next);
        assert_eq!(b.available(next), 99);
        // The old window's last answer, late: still 99.
        b.learn(&said(2, 1), 0, now);
        assert_eq!(b.available(next), 99);
        // The same window again, one request later: counted down.
        b.learn(&said(98, 60), 0, next + Duration::from_millis(100));
        assert_eq!(b.available(next + Duration::from_millis(100)), 98);
    }

    #[test]
    fn budget_counts_sliding_windows() {
        let mut b = Budget::default();
        let t = Instant::now();
        assert!(!b.limited());
        assert_eq!(b.available(t), usize::MAX);
        b.set_limits(10, 0);
        for _ in 0..10 {
            assert!(b.take(t));
        }
        assert!(!b.take(t));
        assert_eq!(b.next_slot(t), MINUTE);
        let later = t + MINUTE;
        assert_eq!(b.available(later), 10);
        // Per hour as well: the tighter one wins.
        let mut b = Budget::default();
        b.set_limits(10, 12);
        for _ in 0..10 {
            assert!(b.take(t));
        }
        assert_eq!(b.available(t + MINUTE), 2);
        for _ in 0..2 {
            assert!(b.take(t + MINUTE));
        }
        assert_eq!(b.available(t + MINUTE * 2), 0);
        assert_eq!(b.next_slot(t + MINUTE * 2), HOUR - MINUTE * 2);
    }

    /// An hourly limit added by a reload counts the sends of the hour before it, as does one
    /// set where there was no limit at all.
    #[test]
    fn a_limit_set_later_counts_the_hour_already_sent() {
        let t = Instant::now();
        let mut b = Budget::default();
        b.set_limits(60, 0);
        for _ in 0..60 {
            assert!(b.take(t));
        }
        // A round between, under the old limits.
        assert_eq!(b.available(t + MINUTE + Duration::from_secs(1)), 60);
        b.set_limits(60, 100);
        assert_eq!(b.available(t + MINUTE + Duration::from_secs(1)), 40);
        let mut b = Budget::default();
        for _ in 0..30 {
            assert!(b.take(t));
        }
        b.set_limits(0, 100);
        assert_eq!(b.available(t + MINUTE * 10), 70);
        assert_eq!(b.available(t + HOUR), 100);
    }

    #[test]
    fn aimd_halves_on_pushback_and_grows_back() {
        let mut a = Aimd {
            window: 4.0,
            max: 4,
            ..Default::default()
        };
        let t = Instant::now();
        a.on_pushback(t);
        assert_eq!(a.limit(), 2);
        // A second failure of the same moment does not cut again.
        a.on_pushback(t + Duration::from_millis(10));
        assert_eq!(a.limit(), 2);
        assert!(a.backing_off());
        assert_eq!(a.widen(W), W * 2);
        for i in 0..20 {
            a.on_answer(Duration::from_millis(5), t + Duration::from_millis(20 + i));
        }
        assert_eq!(a.limit(), 4);
        // A very slow answer against the usual 5 ms: back off.
        a.on_answer(Duration::from_millis(900), t + Duration::from_secs(3));
        assert_eq!(a.limit(), 2);
    }
}
