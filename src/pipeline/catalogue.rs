//! The catalogue task: the tracker's shows, fetched on a schedule (and on wake-up), cached in
//! the store so matching works while the tracker is down, handed to every matcher.

use std::sync::Arc;
use std::time::Duration;

use plexsync_plugin_api::Catalogue;

use crate::state::Shared;

use super::backoff;

/// Keep the tracker catalogue fresh: the cached copy at start-up, then the tracker's on a
/// schedule (retrying with backoff while the tracker is down).
pub async fn catalogue_task(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    // More names for the shows, in the background, after each load or refresh.
    let mut enricher = super::enrich::Enricher::default();
    match shared.store.load_catalogue() {
        Ok(Some(shows)) => {
            tracing::info!(shows = shows.len(), "loaded the cached tracker catalogue");
            let c = Arc::new(Catalogue::new(shows));
            shared.set_catalogue(c.clone());
            enricher.start(&shared, c);
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
                enricher.stop();
                let c = Arc::new(Catalogue::new(shows));
                shared.set_catalogue(c.clone());
                enricher.start(&shared, c);
                shared.wake.resolve.notify_one();
                shared.config().tracker.catalogue_refresh
            }
            Err(e) => {
                failures += 1;
                shared.note_tracker_error(&e);
                let d = backoff(failures, Duration::from_secs(2), Duration::from_secs(300));
                tracing::warn!(error = %e, retry_in_s = d.as_secs(), "cannot fetch the tracker catalogue");
                d
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.wake.catalogue.notified() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
}
