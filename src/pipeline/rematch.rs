//! Open conflicts after a tracker switch: a conflict's candidates are show ids of the tracker
//! whose catalogue it was matched against ([`Conflict::tracker`]), which mean nothing to
//! another one. Once the current tracker's catalogue is live (its publication wakes this
//! task: `Wakeups::conflicts`), every open conflict of another tracker is asked again by the
//! resolver's own rules ([`super::resolve::rematch`]): the show is mapped as the resolver maps
//! one (≥ the auto-map threshold, or a show created under `[matching] auto_add_shows`; the
//! held plays are recorded and queued in the same write), or it stays a conflict with this
//! tracker's candidates and reason. A conflict a person decided meanwhile is gone from the
//! table and left alone (the writes check it is still open and still the old tracker's).
//! Each conflict is claimed while it is asked ([`crate::state::ConflictClaims`]): one a
//! person is deciding right now (a *Create new* waiting for the tracker) is passed over and
//! asked again later, and a person's decision waits for the conflict being asked, so neither
//! side's work (a show created at the tracker) is undone or left orphaned by the other.
//! Until then the admin API offers none of the old candidates (admin/decisions.rs).
//!
//! A matcher that fails transiently leaves the conflict as it is; the pass is tried again
//! with backoff.

use std::sync::Arc;
use std::time::Duration;

use crate::model::Conflict;
use crate::state::Shared;
use crate::store::ops::Resolution;

use super::backoff;

/// What a pass over the conflicts left to do.
#[derive(Debug, PartialEq)]
enum Pass {
    /// Every conflict of another tracker was asked again (or there is no catalogue yet: its
    /// publication wakes the task).
    Done,
    /// Some could not be decided now (a matcher or the store failed, the plugins changed):
    /// try again after a backoff.
    Again,
}

/// Ask open conflicts of another tracker again whenever a catalogue is published (and when
/// the resolver stores one of another tracker late), until shutdown.
pub async fn rematch_task(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let retry = match pass(&shared).await {
            Pass::Done => {
                failures = 0;
                None
            }
            Pass::Again => {
                failures += 1;
                let d = backoff(failures, Duration::from_secs(5), Duration::from_secs(900));
                tracing::info!(
                    retry_in_s = d.as_secs(),
                    "conflicts of another tracker: some are asked again later"
                );
                Some(d)
            }
        };
        tokio::select! {
            _ = super::sleep_opt(retry) => {}
            _ = shared.wake.conflicts.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One pass: each open conflict matched against another tracker than the current one, asked
/// again against the live catalogue.
async fn pass(shared: &Shared) -> Pass {
    if shared.catalogue().is_none() {
        return Pass::Done;
    }
    let tracker = shared.plugins().exporter.instance();
    let stale: Vec<Conflict> = match shared.store.conflicts() {
        // A conflict that names no tracker is the current one's (as an untagged cached
        // catalogue is): the catalogue task tags those of an earlier release at start.
        Ok(c) => c
            .into_iter()
            .filter(|c| c.tracker.as_deref().is_some_and(|t| t != tracker))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the conflicts to match them against the new tracker");
            return Pass::Again;
        }
    };
    if stale.is_empty() {
        return Pass::Done;
    }
    tracing::info!(
        conflicts = stale.len(),
        tracker = %tracker,
        "open conflicts of another tracker: matching them against this tracker's catalogue"
    );
    let (mut mapped, mut asked, mut again) = (0usize, 0usize, false);
    for c in stale {
        if *shared.shutdown.borrow() {
            return Pass::Done;
        }
        if shared.plugins().exporter.instance() != tracker {
            // Another switch: its catalogue's publication wakes the task again.
            return Pass::Done;
        }
        // Held from the look at the conflict to its write's commit: a person deciding it
        // meanwhile waits, and one deciding it now is left to it (`ConflictClaims`).
        let Some(_claim) = shared.claims.try_claim(&c.key) else {
            tracing::info!(show_key = %c.key, show = %c.plex.title, "a person is deciding this conflict; it is asked again later if still open");
            again = true;
            continue;
        };
        // As it is now: a person may have decided it since the pass read the table.
        let c = match shared.store.conflict(&c.key) {
            Ok(Some(now)) if now.tracker == c.tracker => now,
            Ok(_) => {
                tracing::debug!(show_key = %c.key, "the conflict was decided meanwhile; left alone");
                continue;
            }
            Err(e) => {
                tracing::warn!(show_key = %c.key, error = %e, "cannot read a conflict of another tracker");
                again = true;
                continue;
            }
        };
        match super::resolve::rematch(shared, &c).await {
            Some(Resolution::Mapped {
                show_id,
                mapping: Some(m),
            }) => match shared
                .store
                .map_conflict(c.key.clone(), c.tracker.clone(), m)
                .await
            {
                Ok(Some((released, queued))) => {
                    mapped += 1;
                    tracing::info!(show_key = %c.key, show_id = %show_id, show = %c.plex.title, released, queued, "a conflict of another tracker is mapped on this one");
                    if queued > 0 {
                        shared.wake.export.notify_one();
                    }
                    // Plays of the show still pending follow the new mapping.
                    shared.wake.resolve.notify_one();
                }
                Ok(None) => {
                    tracing::debug!(show_key = %c.key, "the conflict was decided meanwhile; left alone");
                }
                Err(e) => {
                    tracing::warn!(show_key = %c.key, error = %e, "cannot map a conflict of another tracker");
                    again = true;
                }
            },
            Some(Resolution::Conflict(fresh)) => {
                let Some(now) = fresh.tracker else {
                    // The resolver tags every conflict it makes; one without a tag would be
                    // asked again on every pass.
                    tracing::warn!(show_key = %c.key, "a conflict matched again names no tracker; left as it is");
                    continue;
                };
                match shared
                    .store
                    .rematch_conflict(
                        c.key.clone(),
                        c.tracker.clone(),
                        now,
                        fresh.candidates,
                        fresh.reason,
                    )
                    .await
                {
                    Ok(_) => asked += 1,
                    Err(e) => {
                        tracing::warn!(show_key = %c.key, error = %e, "cannot store a conflict's new candidates");
                        again = true;
                    }
                }
            }
            Some(Resolution::Retry { .. }) | None => again = true,
            // The resolver's rules never answer these for a show without a mapping.
            Some(Resolution::Mapped { mapping: None, .. }) | Some(Resolution::Ignored) => {
                tracing::warn!(show_key = %c.key, "unexpected answer matching a conflict again; left as it is");
            }
        }
    }
    tracing::info!(
        mapped,
        asked,
        tracker = %tracker,
        "open conflicts of another tracker matched against this one"
    );
    if again { Pass::Again } else { Pass::Done }
}
