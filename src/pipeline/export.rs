//! The exporter task: outbox batches to the exporter plugin, with backoff, jitter,
//! Retry-After and a dead letter after `max_attempts`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plexsync_plugin_api::{ExportBatch, ExportEpisode};

use crate::model::now_millis;
use crate::state::Shared;
use crate::store::ops::BatchOutcome;

use super::backoff;

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
                        .board
                        .metrics
                        .exports_delivered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    BatchOutcome::Delivered {
                        marked: r.marked,
                        already: r.already_watched,
                    }
                }
                Err(e) if e.is_transient() => {
                    shared.note_tracker_error(&e);
                    if let Some(ra) = e.retry_after {
                        hold_until = Some(Instant::now() + ra);
                    }
                    let d = backoff(b.attempts + 1, outbox.initial_backoff, outbox.max_backoff)
                        .max(e.retry_after.unwrap_or_default());
                    tracing::warn!(show_id = %b.show_id, attempt = b.attempts + 1, retry_in_s = d.as_secs(), error = %e, "export failed; will retry");
                    let m = &shared.board.metrics;
                    if b.attempts + 1 >= outbox.max_attempts {
                        &m.exports_dead
                    } else {
                        &m.exports_retried
                    }
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    BatchOutcome::Transient {
                        error: failure_text(&e),
                        retry_at_ms: now_millis() + d.as_millis() as i64,
                    }
                }
                Err(e) => {
                    shared.note_tracker_error(&e);
                    tracing::error!(show_id = %b.show_id, error = %e, "export refused; moved to the dead letter");
                    shared
                        .board
                        .metrics
                        .exports_dead
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    BatchOutcome::Permanent {
                        error: failure_text(&e),
                    }
                }
            };
            // The activity row names the tracker show as well as the Plex one.
            let tracker_title = shared
                .catalogue()
                .and_then(|c| c.get(&b.show_id).map(|s| s.title.clone()));
            if let Err(e) = shared
                .store
                .finish_batch_titled(b.id, outcome, outbox.max_attempts, ms, tracker_title)
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
            _ = shared.wake.export.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// An export failure as the activity row and the dead letter show it: a refused key says
/// what to do (`plexsync secret set tracker-key`) instead of the tracker's raw answer.
fn failure_text(e: &plexsync_plugin_api::PluginError) -> String {
    crate::health::tracker_error_text(e)
}
