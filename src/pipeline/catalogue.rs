//! The catalogue task: the tracker's shows, fetched on a schedule (and on wake-up), cached in
//! the store so matching works while the tracker is down, handed to every matcher with the
//! extra names the store holds for them ([`AltTitles::catalogue`], as the CLI offline does).
//!
//! First start is on the request path of every play that arrives meanwhile, so it is kept
//! cheap: the plugin parses the answer as it arrives, the indices (the catalogue's and every
//! matcher's) are built on a blocking thread, never on a runtime worker, and the store's copy
//! is written in one transaction once they are published. Publishing wakes the resolver
//! ([`Shared::set_catalogue`]), which holds plays that found no catalogue until then, and the
//! rematch of conflicts matched against another tracker (pipeline/rematch.rs).

use std::sync::Arc;
use std::time::Duration;

use plexsync_plugin_api::Catalogue;

use crate::alt_titles::AltTitles;
use crate::state::Shared;

use super::backoff;

/// Keep the tracker catalogue fresh: the cached copy at start-up, then the tracker's on a
/// schedule (retrying with backoff while the tracker is down).
pub async fn catalogue_task(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    // More names for the shows, in the background, after each load or refresh.
    let mut enricher = super::enrich::Enricher::default();
    // The current catalogue when the store's copy holds the same shows (loaded from it, or
    // written): a fetch that brings the same shows changes nothing, so it is neither indexed
    // again nor rewritten. It is the enricher's base too, so holding it costs nothing; a
    // second copy and a megabyte rewritten into the store's cache would be idle memory.
    let mut stored: Option<Arc<Catalogue>> = None;
    // The tracker the catalogue is for (see `Exporter::instance`); a reload may name another.
    let mut instance = shared.plugins().exporter.instance();
    tag_conflicts(&shared, &instance).await;
    let cached = {
        let shared = shared.clone();
        let instance = instance.clone();
        tokio::task::spawn_blocking(move || match shared.store.load_catalogue_for(&instance) {
            Ok(Some(cached)) => {
                tracing::info!(
                    shows = cached.shows.len(),
                    named_shows = cached.names.shows(),
                    "loaded the cached tracker catalogue"
                );
                // An earlier release's copy names no tracker: not kept as `stored`, so the
                // first answer is saved with its tracker even when it holds the same shows.
                let tagged = cached.tagged;
                // The stored names with it: the very catalogue the CLI builds offline.
                let (base, named, names) = cached.build();
                publish_built(&shared, named, &instance)
                    .filter(|_| tagged)
                    .map(|named| (base, named, names))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cached catalogue");
                None
            }
        })
    };
    match cached.await {
        Ok(Some((base, named, names))) => {
            stored = Some(base.clone());
            enricher.start(&shared, base, named, names, instance.clone());
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "loading the cached catalogue failed"),
    }
    let mut failures = 0u32;
    loop {
        let exporter = shared.plugins().exporter.clone();
        if exporter.instance() != instance {
            // A reload named another tracker (and dropped the old one's live catalogue).
            instance = exporter.instance();
            stored = None;
            enricher.stop();
            failures = 0;
        }
        let wait = match exporter.fetch_catalogue().await {
            Ok(shows) if shared.plugins().exporter.instance() != instance => {
                tracing::info!(
                    shows = shows.len(),
                    "the tracker changed during the catalogue fetch; reading the new one"
                );
                Duration::ZERO
            }
            Ok(shows) => {
                failures = 0;
                shared.note_catalogue_ok();
                tracing::info!(shows = shows.len(), "fetched the tracker catalogue");
                refresh(&shared, shows, &mut stored, &mut enricher, &instance).await;
                shared.config().tracker.catalogue_refresh
            }
            Err(e) => {
                failures += 1;
                shared.note_catalogue_error(&e);
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

/// Conflicts an earlier release stored name no tracker: they were matched against the one
/// the store's cached catalogue names (its copy is saved after every read), else (a copy that
/// names none either) the current one, as the cached copy itself counts. Run first, before
/// this task saves a copy of its own, so a restart with another tracker still knows which
/// conflicts to match again (pipeline/rematch.rs).
async fn tag_conflicts(shared: &Shared, current: &str) {
    let tracker = match shared.store.catalogue_instance() {
        Ok(t) => t.unwrap_or_else(|| current.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read which tracker the cached catalogue is; older conflicts count as this one's");
            return;
        }
    };
    match shared.store.tag_conflicts(tracker.clone()).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(conflicts = n, tracker = %tracker, "conflicts of an earlier release tagged with their tracker")
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot tag older conflicts with their tracker; they count as this one's")
        }
    }
}

/// Make `catalogue` current, building every matcher's index (which wakes the resolver), then
/// give the build's garbage back to the system. CPU-bound: call it on a blocking thread.
/// None when a reload named another tracker than `instance` meanwhile: nothing is published.
fn publish_built(
    shared: &Shared,
    catalogue: Arc<Catalogue>,
    instance: &str,
) -> Option<Arc<Catalogue>> {
    let started = std::time::Instant::now();
    let published = shared.set_catalogue_of(catalogue.clone(), instance);
    crate::footprint::release_free_memory();
    if !published {
        tracing::info!("the tracker changed while its catalogue was indexed; not published");
        return None;
    }
    tracing::debug!(
        shows = catalogue.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "catalogue indexed"
    );
    Some(catalogue)
}

/// A fetched catalogue: unless it holds the same shows as `stored`, indexed and published off
/// the runtime's workers first (the enricher restarted on it), so plays waiting for it go as
/// soon as the index is built; then the store's copy (one transaction).
async fn refresh(
    shared: &Arc<Shared>,
    shows: Vec<plexsync_plugin_api::CatalogShow>,
    stored: &mut Option<Arc<Catalogue>>,
    enricher: &mut super::enrich::Enricher,
    instance: &str,
) {
    // An empty answer never replaces a catalogue with shows (live and stored copy both
    // stay): a tracker answering `[]` by mistake (an empty table during a migration, a
    // proxy's default) would otherwise turn every unmapped show into a conflict without
    // candidates. The status's load time stays too, so a tracker that keeps answering `[]`
    // shows as a stale catalogue in health; the refusal itself is a health warning at once.
    if shows.is_empty() {
        if let Some(current) = shared.catalogue().filter(|c| !c.is_empty()) {
            tracing::warn!(
                current_shows = current.len(),
                fetched_shows = 0,
                "the tracker answered an empty catalogue; keeping the current one"
            );
            shared.note_catalogue_refused_empty();
            return;
        }
    }
    // The compact catalogue is cheap to build (milliseconds); the indices are what cost.
    let build = tokio::task::spawn_blocking(move || Arc::new(Catalogue::new(shows)));
    let fetched = match build.await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "building the catalogue failed");
            return;
        }
    };
    // The same shows as the stored copy change nothing, unless a reload has dropped the live
    // catalogue since (another tracker named and then this one again): then they are
    // published again.
    if stored.as_deref() == Some(&*fetched) && shared.catalogue().is_some() {
        tracing::debug!("the fetched catalogue is the current, stored one");
        shared.note_catalogue_fresh();
        drop(fetched);
        crate::footprint::release_free_memory();
        return;
    }
    enricher.stop();
    // The names stored for the shows (a show's id names it across refreshes), added by the
    // same function as at start and offline.
    let publish = {
        let shared = shared.clone();
        let instance = instance.to_string();
        tokio::task::spawn_blocking(move || {
            let names = shared
                .store
                .alt_titles_for(&instance)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read the catalogue's stored names; published without them");
                    AltTitles::default()
                });
            let named = names.catalogue(&fetched);
            publish_built(&shared, named, &instance).map(|named| (fetched, named, names))
        })
    };
    let (fetched, named, names) = match publish.await {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "building the catalogue failed");
            return;
        }
    };
    // The tracker's shows as it answered them: the names are stored apart.
    *stored = match shared
        .store
        .save_catalogue(fetched.clone(), instance.to_string())
        .await
    {
        Ok(()) => Some(fetched.clone()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot cache the catalogue");
            None
        }
    };
    // The store's encoded copy is garbage now too.
    crate::footprint::release_free_memory();
    enricher.start(shared, fetched, named, names, instance.to_string());
}
