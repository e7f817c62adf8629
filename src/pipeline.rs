//! The pipeline after the journal: the resolver (mapping cache → Plex show ids → matcher
//! chain → mapping or conflict), the exporter (outbox batches → tracker, with backoff and a
//! dead letter) and the catalogue refresher. Each is a long-lived task fed by the store; they
//! wake on a `Notify` when new work is committed and otherwise sleep until the next due time.
//!
//! Invariant: a play leaves the pending set only through [`Store::apply_resolution`], in the
//! same transaction that records where it went — a crash at any point leaves it pending.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexsync_plugin_api::{
    Candidate, Catalogue, ExportBatch, ExportEpisode, MatchOutcome, ShowQuery,
};

use crate::model::{Conflict, Mapping, Play, now_millis, now_secs};
use crate::plex::{PlexError, ShowMeta};
use crate::state::Shared;
use crate::store::ops::{Applied, BatchOutcome, Resolution};

/// How many conflict candidates are kept.
const MAX_CANDIDATES: usize = 10;

/// The result of running the chain on one show.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainResult {
    Mapped {
        show_id: String,
        method: String,
        confidence: f32,
    },
    Conflict {
        candidates: Vec<Candidate>,
        reason: String,
    },
    /// Nothing definite and a matcher failed transiently: try again later.
    Retry(String),
}

/// Run the matchers in order. The first definite answer at or above `threshold` wins, unless
/// an earlier matcher already produced candidates that do not include it (ids pointing
/// elsewhere outweigh a later, weaker method). Without one, a matcher that failed transiently
/// means "retry later"; everything else becomes a conflict with the merged candidates.
pub async fn run_chain(
    matchers: &[Arc<dyn plexsync_plugin_api::Matcher>],
    query: &ShowQuery,
    threshold: f32,
) -> ChainResult {
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut transient: Option<String> = None;
    let mut reasons = Vec::new();
    for m in matchers {
        match m.match_show(query).await {
            Ok(MatchOutcome::Definite {
                show_id,
                confidence,
                method,
            }) => {
                let earlier_agree =
                    candidates.is_empty() || candidates.iter().any(|c| c.show_id == show_id);
                if confidence >= threshold && earlier_agree {
                    return ChainResult::Mapped {
                        show_id,
                        method,
                        confidence,
                    };
                }
                reasons.push(if confidence < threshold {
                    format!(
                        "{}: best match {confidence:.2} is below {threshold:.2}",
                        m.kind()
                    )
                } else {
                    format!("{}: its match disagrees with earlier candidates", m.kind())
                });
                candidates.push(Candidate {
                    show_id,
                    score: confidence,
                    method,
                });
            }
            Ok(MatchOutcome::Candidates { candidates: cs }) => {
                if !cs.is_empty() {
                    reasons.push(format!(
                        "{}: {} candidate(s), none proven",
                        m.kind(),
                        cs.len()
                    ));
                }
                candidates.extend(cs);
            }
            Ok(MatchOutcome::NoMatch) => {}
            Err(e) if e.is_transient() => {
                tracing::warn!(matcher = m.kind(), error = %e, "matcher failed transiently");
                transient = Some(format!("{}: {e}", m.kind()));
            }
            Err(e) => {
                tracing::warn!(matcher = m.kind(), error = %e, "matcher failed");
                reasons.push(format!("{}: {e}", m.kind()));
            }
        }
    }
    // A matcher that could not answer (TMDB down) might have proven the show: without a
    // definite answer from the others, ask again later rather than put a question to a
    // person that the matcher may settle on its own.
    if let Some(t) = transient {
        return ChainResult::Retry(t);
    }
    ChainResult::Conflict {
        candidates: merge_candidates(candidates),
        reason: if reasons.is_empty() {
            "no matcher found this show in the tracker".into()
        } else {
            reasons.join("; ")
        },
    }
}

/// One entry per show (its best score), best first.
pub fn merge_candidates(cs: Vec<Candidate>) -> Vec<Candidate> {
    let mut best: HashMap<String, Candidate> = HashMap::new();
    for c in cs {
        match best.get(&c.show_id) {
            Some(b) if b.score >= c.score => {}
            _ => {
                best.insert(c.show_id.clone(), c);
            }
        }
    }
    let mut v: Vec<Candidate> = best.into_values().collect();
    v.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.show_id.cmp(&b.show_id))
    });
    v.truncate(MAX_CANDIDATES);
    v
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let d = exp.min(max);
    let half = d / 2;
    let r = crate::secrets::random_bytes::<4>()
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    half + half.mul_f64(f64::from(r) / f64::from(u32::MAX))
}

/// Resolve pending plays forever (until shutdown).
/// Plays resolved per round: matching happens once per show in a round, and all outcomes
/// are applied in one group commit.
const RESOLVE_BATCH: usize = 512;

pub async fn resolver_task(shared: Arc<Shared>) {
    // Retry counts per show key: a show Plex cannot describe right now backs off as a whole.
    let mut attempts: HashMap<String, u32> = HashMap::new();
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let due = match shared.store.due_pending(now_millis(), RESOLVE_BATCH) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read pending plays");
                Vec::new()
            }
        };
        let mut per_show: HashMap<String, Resolution> = HashMap::new();
        let mut decided = Vec::with_capacity(due.len());
        for play in &due {
            if *shutdown.borrow() {
                break;
            }
            let key = play.show.key();
            let r = match per_show.get(&key) {
                Some(r) => r.clone(),
                None => {
                    let r = resolve(&shared, play, &mut attempts).await;
                    per_show.insert(key.clone(), r.clone());
                    r
                }
            };
            if !matches!(r, Resolution::Retry { .. }) {
                attempts.remove(&key);
            }
            decided.push((play.id, r));
        }
        match shared.store.apply_resolutions(decided).await {
            Ok(applied) => {
                if applied.contains(&Applied::Queued) {
                    shared.export_wake.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record resolutions; the plays stay pending")
            }
        }
        if due.len() >= RESOLVE_BATCH {
            continue;
        }
        let wait = match shared.store.next_pending_at() {
            Ok(Some(t)) => Duration::from_millis((t - now_millis()).clamp(0, 60_000) as u64),
            _ => Duration::from_secs(60),
        };
        tokio::select! {
            _ = shared.resolve_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
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

async fn resolve(shared: &Shared, play: &Play, attempts: &mut HashMap<String, u32>) -> Resolution {
    let key = play.show.key();
    match shared.store.mapping(&key) {
        Ok(Some(m)) if m.ignored => return Resolution::Ignored,
        Ok(Some(m)) => {
            return Resolution::Mapped {
                show_id: m.show_id,
                mapping: None,
            };
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read mappings");
            return retry_later(attempts, &play.show.key());
        }
    }
    // A show already waiting for a person keeps collecting its plays there.
    if let Ok(Some(c)) = shared.store.conflict(&key) {
        return Resolution::Conflict(Conflict {
            updated_at: now_secs(),
            ..c
        });
    }
    let Some(catalogue) = shared.catalogue() else {
        tracing::debug!(play_id = play.id, "no tracker catalogue yet; play waits");
        return retry_later(attempts, &play.show.key());
    };
    let query = match enrich(shared, play).await {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(play_id = play.id, rating_key = play.show.rating_key.as_deref().unwrap_or(""), error = %e, "cannot fetch the show's ids from Plex; play waits");
            return retry_later(attempts, &play.show.key());
        }
    };
    let (matchers, threshold) = {
        let p = shared.plugins();
        (
            p.matchers.clone(),
            shared.config().matching.auto_map_threshold,
        )
    };
    match run_chain(&matchers, &query, threshold).await {
        ChainResult::Mapped {
            show_id,
            method,
            confidence,
        } => {
            let title = catalogue
                .get(&show_id)
                .map(|s| s.title.clone())
                .unwrap_or_default();
            tracing::info!(show_id = %show_id, show = %play.show.title, tracker_title = %title, method = %method, confidence, "show mapped");
            Resolution::Mapped {
                show_id: show_id.clone(),
                mapping: Some(Mapping {
                    plex: crate::model::PlexShow {
                        year: query.year,
                        ..play.show.clone()
                    },
                    show_id,
                    method,
                    confidence,
                    manual: false,
                    sync_enabled: true,
                    created_at: now_secs(),
                    ignored: false,
                }),
            }
        }
        ChainResult::Conflict { candidates, .. }
            if candidates.is_empty() && shared.config().matching.auto_add_shows =>
        {
            match create_show(shared, &query).await {
                Ok(Some(show_id)) => {
                    tracing::info!(show_id = %show_id, show = %query.title, "show created in the tracker ([matching] auto_add_shows)");
                    Resolution::Mapped {
                        show_id: show_id.clone(),
                        mapping: Some(Mapping {
                            plex: crate::model::PlexShow {
                                year: query.year,
                                ..play.show.clone()
                            },
                            show_id,
                            method: "created".into(),
                            confidence: 1.0,
                            manual: false,
                            sync_enabled: true,
                            created_at: now_secs(),
                            ignored: false,
                        }),
                    }
                }
                Ok(None) => conflict(
                    key,
                    play,
                    query,
                    Vec::new(),
                    "no matcher found the show and it has no TMDB id to create it from".into(),
                ),
                Err(e) => {
                    tracing::warn!(show = %query.title, error = %e, "cannot create the show in the tracker; play waits");
                    retry_later(attempts, &play.show.key())
                }
            }
        }
        ChainResult::Conflict { candidates, reason } => {
            tracing::info!(show = %play.show.title, rating_key = play.show.rating_key.as_deref().unwrap_or(""), candidates = candidates.len(), reason = %reason, "show needs a person: conflict");
            conflict(key, play, query, candidates, reason)
        }
        ChainResult::Retry(why) => {
            tracing::warn!(play_id = play.id, error = %why, "matching deferred");
            retry_later(attempts, &play.show.key())
        }
    }
}

fn conflict(
    key: String,
    play: &Play,
    query: ShowQuery,
    candidates: Vec<Candidate>,
    reason: String,
) -> Resolution {
    Resolution::Conflict(Conflict {
        key,
        plex: play.show.clone(),
        query,
        candidates,
        held: Vec::new(),
        created_at: now_secs(),
        updated_at: now_secs(),
        reason,
    })
}

/// Create the show in the tracker from what Plex knows; None when it has no TMDB id (a show
/// created from a bare title would too often duplicate one the matchers missed).
pub async fn create_show(
    shared: &Shared,
    query: &ShowQuery,
) -> Result<Option<String>, plexsync_plugin_api::PluginError> {
    use plexsync_plugin_api::guid::{ExternalId, parse_show_guids};
    let ids = parse_show_guids(&query.guids);
    let mut show = plexsync_plugin_api::NewShow {
        title: query.title.clone(),
        year: query.year,
        ..Default::default()
    };
    for id in ids {
        match id {
            ExternalId::Tmdb(n) => show.tmdb_id = show.tmdb_id.or(Some(n)),
            ExternalId::Tvdb(n) => show.tvdb_id = show.tvdb_id.or(Some(n)),
            ExternalId::Imdb(s) => show.imdb_id = show.imdb_id.or(Some(s)),
            _ => {}
        }
    }
    if show.tmdb_id.is_none() {
        return Ok(None);
    }
    let exporter = shared.plugins().exporter.clone();
    let id = exporter.create_show(&show).await?;
    shared.catalogue_wake.notify_one();
    Ok(Some(id))
}

/// The matcher query for a play's show: the play's own show guids plus, when Plex can tell
/// us, the show's `<Guid>` list and first-air year (cached per show).
pub(crate) async fn enrich(shared: &Shared, play: &Play) -> Result<ShowQuery, PlexError> {
    let mut query = play.show.query();
    let Some(rk) = play.show.rating_key.clone() else {
        return Ok(query);
    };
    let key = play.show.key();
    let meta: Option<ShowMeta> = shared.store.show_info(&key).ok().flatten();
    let meta = match meta {
        Some(m) => Some(m),
        None => {
            let client = shared.plex();
            let started = Instant::now();
            match client.show_meta(&rk).await {
                Ok(m) => {
                    shared.note_plex_ok();
                    tracing::debug!(rating_key = %rk, guids = m.guids.len(), ms = started.elapsed().as_millis() as u64, "fetched show ids from Plex");
                    if let Err(e) = shared.store.put_show_info(key.clone(), m.clone()).await {
                        tracing::warn!(error = %e, "cannot cache show ids");
                    }
                    Some(m)
                }
                Err(PlexError::NotFound { .. }) => None,
                Err(e) => {
                    shared.note_plex_error(&e);
                    // A legacy agent's guid already carries the show id: go on without Plex.
                    let has_legacy_id = query.guids.iter().any(|g| !g.starts_with("plex://"));
                    if has_legacy_id && !matches!(e, PlexError::Unauthorized { .. })
                        || matches!(e, PlexError::Malformed { .. })
                    {
                        None
                    } else {
                        return Err(e);
                    }
                }
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

/// Deliver outbox batches forever (until shutdown).
pub async fn exporter_task(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    // A Retry-After is the tracker asking for quiet, not a verdict on one batch: until it
    // passes, no batch at all is sent (else a 429 is followed by every other due batch).
    let mut hold_until: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let outbox = shared.config().outbox.clone();
        if let Err(e) = shared.store.form_batches(outbox.batch_size).await {
            tracing::error!(error = %e, "cannot form export batches");
        }
        let due = shared
            .store
            .due_batches(now_millis(), 64)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read export batches");
                Vec::new()
            });
        for b in &due {
            if *shutdown.borrow() || hold_until.is_some_and(|t| Instant::now() < t) {
                break;
            }
            let exporter = shared.plugins().exporter.clone();
            let batch = ExportBatch {
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
            };
            let started = Instant::now();
            let result = exporter.export(&batch).await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let outcome = match result {
                Ok(r) => {
                    shared.note_tracker(None);
                    tracing::info!(show_id = %b.show_id, episodes = b.items.len(), marked = r.marked, already_watched = r.already_watched, unknown = r.unknown.len(), "exported");
                    shared
                        .metrics
                        .exports_delivered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    BatchOutcome::Delivered {
                        marked: r.marked,
                        already: r.already_watched,
                    }
                }
                Err(e) if e.is_transient() => {
                    shared.note_tracker(Some(e.to_string()));
                    if let Some(ra) = e.retry_after {
                        hold_until = Some(Instant::now() + ra);
                    }
                    let d = backoff(b.attempts + 1, outbox.initial_backoff, outbox.max_backoff)
                        .max(e.retry_after.unwrap_or_default());
                    tracing::warn!(show_id = %b.show_id, attempt = b.attempts + 1, retry_in_s = d.as_secs(), error = %e, "export failed; will retry");
                    let m = &shared.metrics;
                    if b.attempts + 1 >= outbox.max_attempts {
                        &m.exports_dead
                    } else {
                        &m.exports_retried
                    }
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    BatchOutcome::Transient {
                        error: e.to_string(),
                        retry_at_ms: now_millis() + d.as_millis() as i64,
                    }
                }
                Err(e) => {
                    shared.note_tracker(Some(e.to_string()));
                    tracing::error!(show_id = %b.show_id, error = %e, "export refused; moved to the dead letter");
                    shared
                        .metrics
                        .exports_dead
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    BatchOutcome::Permanent {
                        error: e.to_string(),
                    }
                }
            };
            if let Err(e) = shared
                .store
                .finish_batch(b.id, outcome, outbox.max_attempts, ms)
                .await
            {
                tracing::error!(error = %e, "cannot record export result");
            }
        }
        let held = hold_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        if due.len() >= 64 && held.is_zero() {
            continue;
        }
        let wait = match shared.store.next_batch_at() {
            Ok(Some(t)) => Duration::from_millis((t - now_millis()).clamp(0, 60_000) as u64),
            _ => Duration::from_secs(60),
        }
        .max(held);
        tokio::select! {
            _ = shared.export_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Keep the tracker catalogue fresh: the cached copy at start-up, then the tracker's on a
/// schedule (retrying with backoff while the tracker is down).
pub async fn catalogue_task(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    match shared.store.load_catalogue() {
        Ok(Some(shows)) => {
            tracing::info!(shows = shows.len(), "loaded the cached tracker catalogue");
            shared.set_catalogue(Arc::new(Catalogue::new(shows)));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the cached catalogue"),
    }
    let mut failures = 0u32;
    loop {
        let exporter = shared.plugins().exporter.clone();
        let wait = match exporter.fetch_catalogue().await {
            Ok(shows) => {
                failures = 0;
                shared.note_tracker(None);
                tracing::info!(shows = shows.len(), "fetched the tracker catalogue");
                if let Err(e) = shared.store.save_catalogue(shows.clone()).await {
                    tracing::warn!(error = %e, "cannot cache the catalogue");
                }
                shared.set_catalogue(Arc::new(Catalogue::new(shows)));
                shared.resolve_wake.notify_one();
                shared.config().tracker.catalogue_refresh
            }
            Err(e) => {
                failures += 1;
                shared.note_tracker(Some(e.to_string()));
                let d = backoff(failures, Duration::from_secs(2), Duration::from_secs(300));
                tracing::warn!(error = %e, retry_in_s = d.as_secs(), "cannot fetch the tracker catalogue");
                d
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.catalogue_wake.notified() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexsync_plugin_api::{BoxFuture, Matcher, PluginError};

    struct Fixed(&'static str, Result<MatchOutcome, PluginError>);
    impl Matcher for Fixed {
        fn kind(&self) -> &str {
            self.0
        }
        fn set_catalogue(&self, _: Arc<Catalogue>) {}
        fn match_show<'a>(
            &'a self,
            _: &'a ShowQuery,
        ) -> BoxFuture<'a, Result<MatchOutcome, PluginError>> {
            let r = self.1.clone();
            Box::pin(async move { r })
        }
    }

    fn def(id: &str, c: f32) -> Result<MatchOutcome, PluginError> {
        Ok(MatchOutcome::Definite {
            show_id: id.into(),
            confidence: c,
            method: "x".into(),
        })
    }

    fn cands(ids: &[&str]) -> Result<MatchOutcome, PluginError> {
        Ok(MatchOutcome::Candidates {
            candidates: ids
                .iter()
                .map(|i| Candidate {
                    show_id: i.to_string(),
                    score: 0.5,
                    method: "y".into(),
                })
                .collect(),
        })
    }

    async fn chain(ms: Vec<Fixed>) -> ChainResult {
        let ms: Vec<Arc<dyn Matcher>> = ms
            .into_iter()
            .map(|m| Arc::new(m) as Arc<dyn Matcher>)
            .collect();
        run_chain(&ms, &ShowQuery::default(), 0.9).await
    }

    #[tokio::test]
    async fn chain_semantics() {
        // First definite above the threshold wins.
        assert!(
            matches!(chain(vec![Fixed("a", Ok(MatchOutcome::NoMatch)), Fixed("b", def("7", 0.95))]).await, ChainResult::Mapped { show_id, .. } if show_id == "7")
        );
        // Below the threshold: conflict with it as a candidate.
        assert!(
            matches!(chain(vec![Fixed("a", def("7", 0.8))]).await, ChainResult::Conflict { candidates, .. } if candidates[0].show_id == "7")
        );
        // A later definite that contradicts earlier candidates does not auto-map.
        assert!(
            matches!(chain(vec![Fixed("a", cands(&["1", "2"])), Fixed("b", def("7", 0.99))]).await, ChainResult::Conflict { candidates, .. } if candidates.len() == 3)
        );
        // …but one that agrees does.
        assert!(matches!(
            chain(vec![
                Fixed("a", cands(&["1", "7"])),
                Fixed("b", def("7", 0.99))
            ])
            .await,
            ChainResult::Mapped { .. }
        ));
        // Transient failure with nothing else: retry later, not a conflict.
        assert!(matches!(
            chain(vec![Fixed("a", Err(PluginError::transient("down")))]).await,
            ChainResult::Retry(_)
        ));
        // …and also when others only have candidates: the failed matcher might settle it.
        assert!(matches!(
            chain(vec![
                Fixed("a", Err(PluginError::transient("down"))),
                Fixed("b", cands(&["1", "2"]))
            ])
            .await,
            ChainResult::Retry(_)
        ));
        // A later matcher's proof still maps while the first one is down.
        assert!(matches!(
            chain(vec![
                Fixed("a", Err(PluginError::transient("down"))),
                Fixed("b", def("7", 0.95))
            ])
            .await,
            ChainResult::Mapped { .. }
        ));
        // Nothing at all: an honest conflict.
        assert!(
            matches!(chain(vec![Fixed("a", Ok(MatchOutcome::NoMatch))]).await, ChainResult::Conflict { candidates, .. } if candidates.is_empty())
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let i = Duration::from_secs(2);
        let m = Duration::from_secs(60);
        for n in 1..30 {
            let d = backoff(n, i, m);
            let full = i.saturating_mul(1 << (n - 1).min(20)).min(m);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?}");
        }
    }

    #[test]
    fn candidates_merge_per_show() {
        let c = |id: &str, s: f32| Candidate {
            show_id: id.into(),
            score: s,
            method: "m".into(),
        };
        let m = merge_candidates(vec![c("a", 0.5), c("b", 0.9), c("a", 0.7)]);
        assert_eq!(
            m.iter()
                .map(|c| (c.show_id.as_str(), c.score))
                .collect::<Vec<_>>(),
            vec![("b", 0.9), ("a", 0.7)]
        );
    }
}
