//! Catalogue enrichment: more names for the tracker's shows from the matchers that know them
//! (the tmdb matcher: TMDB's alternative titles and translations), kept as [`AltTitles`],
//! stored beside the store's catalogue and merged into [`CatalogShow::alt_titles`] by
//! [`AltTitles::catalogue`] for every matcher, so a Plex show titled by a translation finds
//! its tracker show as a candidate (and `plexsync shows search` finds it, online or offline:
//! both build the catalogue from the same store rows).
//!
//! [`enrich`] is the one pass, shared by the daemon and `plexsync match`: every matcher's
//! [`Matcher::alt_titles`] over slices of the catalogue, publishing the names when they
//! changed, as they arrive (at most every [`PUBLISH_EVERY`]) and at the end; the daemon's
//! publication stores them before the catalogue built from them goes live. [`Enricher`] runs it in
//! the background after each catalogue load or refresh: it never holds up matching (until
//! names arrive the matchers work from the catalogue with the names stored), starts over from the new
//! catalogue on a refresh, asks again when the matchers change (a reload, a new secret:
//! `Wakeups::enrich`), retries a transient failure with backoff and stops with the daemon.
//!
//! Names only ever raise candidates; what a matcher makes of them is its business (the title
//! matcher caps them below the auto-map threshold). Conflicts recorded before the names
//! arrived are asked again after a pass that named shows, and the answer is merged into their
//! candidates only ([`refresh_conflicts`]); only those of the current tracker: another
//! tracker's are matched again whole by pipeline/rematch.rs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plexsync_plugin_api::{Candidate, CatalogShow, Catalogue, Matcher, PluginError};

use crate::alt_titles::AltTitles;
use crate::state::Shared;

use super::backoff;

/// Shows handed to a matcher per call: small enough that the names of a slice cut short by
/// a failure are few, large enough that a cached pass costs few calls.
pub const SLICE: usize = 50;

/// While names arrive, the enriched catalogue is published at most this often (each
/// publication rebuilds the matchers' indices), and once more at the end of a pass.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(30);

/// What one pass found.
#[derive(Debug, Default)]
pub struct Pass {
    /// Shows the matchers named in this pass, and the names they gave (whether or not the
    /// store had them already).
    pub shows_named: usize,
    pub names: usize,
    /// Publications made (none when the names are those the pass started with).
    pub published: usize,
    /// The failure that ended the pass early (the names found before it were published).
    pub error: Option<PluginError>,
    /// The pass stopped because `publish` said it is out of date.
    pub superseded: bool,
}

/// Ask every matcher for more names of `base`'s shows (the tracker's, without extra names),
/// slice by slice, and hand `publish` the catalogue's names whenever they differ from the
/// last ones handed (at first `known`, those the store had): at most every [`PUBLISH_EVERY`]
/// while names arrive, `known` and the new ones together; at the end of a pass that asked
/// every show, this pass's names alone (a name no matcher gives any more is dropped), and
/// after a failure `known` and the new ones together. `publish` builds the catalogue with
/// [`AltTitles::catalogue`] and returns false when the pass is out of date (a newer catalogue
/// took over); the pass then stops without publishing again. The first matcher error ends
/// the pass. `publish` answers a future so the daemon can store and index off the runtime.
pub async fn enrich<P>(
    matchers: &[Arc<dyn Matcher>],
    base: &Catalogue,
    known: &AltTitles,
    mut publish: impl FnMut(AltTitles) -> P,
) -> Pass
where
    P: std::future::Future<Output = bool>,
{
    let mut pass = Pass::default();
    // This pass's names, bounded ([`AltTitles::add`]) and only for `base`'s shows.
    let mut found = AltTitles::default();
    let mut last = known.clone();
    let together = |found: &AltTitles| {
        let mut all = known.clone();
        all.extend(found, base);
        all.retain_in(base);
        all
    };
    let mut dirty = false;
    let mut last_publish = Instant::now();
    'matchers: for m in matchers {
        for start in (0..base.len()).step_by(SLICE) {
            // The plugin API hands a matcher owned shows: one slice's worth at a time.
            let end = (start + SLICE).min(base.len());
            let slice: Vec<CatalogShow> = (start..end)
                .filter_map(|i| base.show(i as u32))
                .map(|s| s.to_show())
                .collect();
            let answer = match m.alt_titles(&slice).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(matcher = m.kind(), error = %e, "cannot get more names for the catalogue; the pass stops here");
                    pass.error = Some(e);
                    break 'matchers;
                }
            };
            for (id, names) in answer {
                let Some(show) = base.get(&id) else { continue };
                let before = found.get(&id).len();
                for name in &names {
                    found.add(&id, show.title, name);
                }
                let after = found.get(&id).len();
                if before == 0 && after > 0 {
                    pass.shows_named += 1;
                }
                pass.names += after - before;
                dirty |= after > before;
            }
            if dirty && last_publish.elapsed() >= PUBLISH_EVERY {
                dirty = false;
                last_publish = Instant::now();
                let now = together(&found);
                if now == last {
                    continue;
                }
                if !publish(now.clone()).await {
                    pass.superseded = true;
                    return pass;
                }
                last = now;
                pass.published += 1;
                tracing::info!(
                    matcher = m.kind(),
                    shows_named = pass.shows_named,
                    names = pass.names,
                    "catalogue names: progress published"
                );
            }
        }
    }
    let end = if pass.error.is_none() {
        found
    } else {
        together(&found)
    };
    if end != last {
        if publish(end).await {
            pass.published += 1;
        } else {
            pass.superseded = true;
        }
    }
    pass
}

/// The background enrichment of the daemon's catalogue: one task per catalogue, replaced on
/// each new one, stopped when dropped (the catalogue task holds it).
#[derive(Default)]
pub struct Enricher {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Enricher {
    /// Stop the pass in progress (if any): call before publishing a new catalogue, so an
    /// old pass cannot publish over it.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Enrich `base` (the tracker `instance`'s shows, without extra names) in the background,
    /// replacing any pass in progress. `published` is the catalogue just made current from
    /// it with the stored names `known` ([`AltTitles::catalogue`]).
    pub fn start(
        &mut self,
        shared: &Arc<Shared>,
        base: Arc<Catalogue>,
        published: Arc<Catalogue>,
        known: AltTitles,
        instance: String,
    ) {
        self.stop();
        self.task = Some(tokio::spawn(run(
            shared.clone(),
            base,
            published,
            known,
            instance,
        )));
    }
}

impl Drop for Enricher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Passes over `base` until shutdown: one now, again when the matchers change, again after
/// a backoff when one failed transiently. Each publication stores the names first
/// ([`crate::store::Store::save_alt_titles`]), then makes the catalogue built from them
/// current: what the daemon searches is what the store gives a reader offline.
async fn run(
    shared: Arc<Shared>,
    base: Arc<Catalogue>,
    published: Arc<Catalogue>,
    known: AltTitles,
    instance: String,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut failures = 0u32;
    // What this task published last (at first the catalogue it was started for): the live
    // catalogue is that, unless a refresh replaced it (then this task is out of date).
    // Shared with the publications' blocking threads, one at a time.
    let current = Arc::new(std::sync::Mutex::new(published));
    // The names of `current`: each pass starts from them.
    let mut known = known;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let matchers = shared.plugins().matchers.clone();
        let started = Instant::now();
        tracing::info!(shows = base.len(), "catalogue names: pass started");
        let mut stored = None;
        // A publication whose names the store could not keep: the pass is asked again later
        // (from the matchers' caches), so the store gets them and a reader offline too.
        let unsaved = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pass = enrich(&matchers, &base, &known, |names| {
            stored = Some(names.clone());
            let (shared, current, base, instance, unsaved) = (
                shared.clone(),
                current.clone(),
                base.clone(),
                instance.clone(),
                unsaved.clone(),
            );
            async move {
                match shared
                    .store
                    .save_alt_titles(names.clone(), instance.clone())
                    .await
                {
                    Ok(true) => {}
                    Ok(false) if shared.plugins().exporter.instance() != instance => {
                        tracing::info!(tracker = %instance, "catalogue names: another tracker is configured now; this pass stops");
                        return false;
                    }
                    Ok(false) => {
                        // Still this tracker's names, but its catalogue is not the stored one
                        // (saving it failed, or an earlier release's copy): published, and
                        // stored by a later pass once the catalogue is.
                        unsaved.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(tracker = %instance, shows = names.shows(), "catalogue names: this tracker's catalogue is not the stored one yet; published anyway, stored on a later pass");
                    }
                    Err(e) => {
                        unsaved.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(error = %e, shows = names.shows(), "catalogue names: cannot store them; published anyway, stored on a later pass")
                    }
                }
                // Checked and published in one step, so a refresh's publication cannot come
                // between; on a blocking thread, as every matcher indexes the catalogue again.
                let publish = tokio::task::spawn_blocking(move || {
                    let c = names.catalogue(&base);
                    let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
                    let ours = shared.publish_catalogue(c.clone(), |live| {
                        live.is_some_and(|l| Arc::ptr_eq(l, &current))
                    });
                    if ours {
                        *current = c;
                    }
                    ours
                });
                publish.await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "catalogue names: publishing failed");
                    false
                })
            }
        })
        .await;
        if pass.superseded {
            return;
        }
        let unsaved = unsaved.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(names) = stored.filter(|_| !unsaved) {
            known = names;
        }
        tracing::info!(
            shows = base.len(),
            shows_named = pass.shows_named,
            names = pass.names,
            published = pass.published,
            took_ms = started.elapsed().as_millis() as u64,
            failed = pass.error.is_some(),
            "catalogue names: pass finished"
        );
        if pass.shows_named > 0 {
            // Only while the live catalogue is still this pass's: after a refresh, or a reload
            // to another tracker (which drops it), these matchers know a stale or another
            // tracker's shows, and their candidates would be wrong ones.
            let still_ours = || {
                let current = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                shared
                    .catalogue()
                    .is_some_and(|l| Arc::ptr_eq(&l, &current))
            };
            refresh_conflicts(&shared, &matchers, still_ours).await;
        }
        // A transient failure, or names the store did not keep: asked again after a backoff.
        let again = unsaved || pass.error.as_ref().is_some_and(PluginError::is_transient);
        let retry = if again {
            failures += 1;
            Some(backoff(
                failures,
                Duration::from_secs(60),
                Duration::from_secs(3600),
            ))
        } else {
            failures = 0;
            None
        };
        tokio::select! {
            _ = super::sleep_opt(retry) => {}
            _ = shared.wake.enrich.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Most candidates a refreshed conflict keeps.
const MAX_CANDIDATES: usize = 10;

/// Conflicts opened before the names arrived (the first start, a new TMDB key) asked the
/// chain when it knew less: ask it again for each open conflict's stored query and merge what
/// it answers into the candidates. Never a mapping: a person still decides, whatever the score.
async fn refresh_conflicts(
    shared: &Shared,
    matchers: &[Arc<dyn Matcher>],
    still_ours: impl Fn() -> bool,
) {
    let conflicts = match shared.store.conflicts() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "catalogue names: cannot read the conflicts");
            return;
        }
    };
    let threshold = shared.config().matching.auto_map_threshold;
    let tracker = shared.plugins().exporter.instance();
    let mut refreshed = 0usize;
    // Another tracker's conflict: its candidates are that tracker's ids, which must not be
    // merged with this one's (the rematch replaces them). One naming none is this tracker's.
    for c in conflicts
        .into_iter()
        .filter(|c| c.tracker.as_deref().is_none_or(|t| t == tracker))
    {
        if !still_ours() {
            tracing::debug!(
                "catalogue names: the catalogue changed; conflicts are left as they are"
            );
            break;
        }
        let fresh = match super::run_chain(matchers, &c.query, threshold).await {
            super::ChainResult::Conflict { candidates, .. } => candidates,
            super::ChainResult::Mapped {
                show_id,
                method,
                confidence,
            } => vec![Candidate {
                show_id,
                score: confidence,
                method,
            }],
            super::ChainResult::Retry(_) => continue,
        };
        let merged = merge_candidates(&c.candidates, fresh);
        if merged == c.candidates {
            continue;
        }
        match shared
            .store
            .set_conflict_candidates(c.key.clone(), tracker.clone(), merged)
            .await
        {
            Ok(true) => refreshed += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(show_key = %c.key, error = %e, "catalogue names: cannot update a conflict");
            }
        }
    }
    if refreshed > 0 {
        tracing::info!(
            conflicts = refreshed,
            "catalogue names: conflicts given new candidates"
        );
    }
}

/// `old` and `fresh` by show, each at its better score, best first (ties keep old first).
fn merge_candidates(old: &[Candidate], fresh: Vec<Candidate>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = old.to_vec();
    for f in fresh {
        match out.iter_mut().find(|c| c.show_id == f.show_id) {
            Some(c) if f.score > c.score => *c = f,
            Some(_) => {}
            None => out.push(f),
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(MAX_CANDIDATES.max(old.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexsync_plugin_api::{BoxFuture, MatchOutcome, ShowNames, ShowQuery};
    use std::sync::Mutex;

    #[test]
    fn merged_candidates_keep_each_show_once_at_its_better_score_best_first() {
        let c = |id: &str, score: f32| Candidate {
            show_id: id.into(),
            score,
            method: "title".into(),
        };
        let old = vec![c("a", 0.6), c("b", 0.5)];
        let merged = merge_candidates(&old, vec![c("b", 0.8), c("a", 0.4), c("n", 0.7)]);
        let got: Vec<(&str, f32)> = merged
            .iter()
            .map(|c| (c.show_id.as_str(), c.score))
            .collect();
        assert_eq!(got, [("b", 0.8), ("n", 0.7), ("a", 0.6)]);
        assert_eq!(merge_candidates(&old, vec![c("a", 0.6)]), old);
        let many: Vec<Candidate> = (0..20).map(|i| c(&i.to_string(), 0.1)).collect();
        assert_eq!(merge_candidates(&[], many).len(), MAX_CANDIDATES);
    }

    /// Names every show `n-<title>`, records slice sizes, can fail at a slice.
    struct Namer {
        slices: Mutex<Vec<usize>>,
        fail_at: Option<usize>,
    }

    impl Matcher for Namer {
        fn kind(&self) -> &str {
            "namer"
        }
        fn set_catalogue(&self, _: Arc<Catalogue>) {}
        fn match_show<'a>(
            &'a self,
            _: &'a ShowQuery,
        ) -> BoxFuture<'a, Result<MatchOutcome, PluginError>> {
            Box::pin(async { Ok(MatchOutcome::NoMatch) })
        }
        fn alt_titles<'a>(
            &'a self,
            shows: &'a [CatalogShow],
        ) -> BoxFuture<'a, Result<Vec<ShowNames>, PluginError>> {
            Box::pin(async move {
                let n = {
                    let mut s = self.slices.lock().unwrap();
                    s.push(shows.len());
                    s.len()
                };
                if self.fail_at == Some(n) {
                    return Err(PluginError::transient("down"));
                }
                Ok(shows
                    .iter()
                    .map(|s| {
                        (
                            s.id.clone(),
                            vec![format!("n-{}", s.title), s.title.to_uppercase()],
                        )
                    })
                    .collect())
            })
        }
    }

    fn base(n: usize) -> Catalogue {
        Catalogue::new(
            (0..n)
                .map(|i| CatalogShow {
                    id: i.to_string(),
                    title: format!("t{i}"),
                    ..Default::default()
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn names_are_merged_in_slices_and_published_once_at_the_end() {
        let namer = Arc::new(Namer {
            slices: Mutex::new(Vec::new()),
            fail_at: None,
        });
        let matchers: Vec<Arc<dyn Matcher>> = vec![namer.clone(), namer.clone()];
        let mut got = Vec::new();
        let pass = enrich(&matchers, &base(120), &AltTitles::default(), |c| {
            got.push(c);
            std::future::ready(true)
        })
        .await;
        // Two matchers, 120 shows in slices of 50.
        assert_eq!(*namer.slices.lock().unwrap(), [50, 50, 20, 50, 50, 20]);
        assert_eq!(
            (pass.shows_named, pass.names, pass.published),
            (120, 120, 1)
        );
        assert!(pass.error.is_none());
        let c = &got[0];
        // The show's own title (in any case) and a second matcher's repeat are not added.
        assert_eq!(c.get("7"), ["n-t7"]);
        assert_eq!(c.shows(), 120);
    }

    #[tokio::test]
    async fn a_failure_stops_the_pass_keeping_what_was_found() {
        let namer = Arc::new(Namer {
            slices: Mutex::new(Vec::new()),
            fail_at: Some(2),
        });
        let matchers: Vec<Arc<dyn Matcher>> = vec![namer.clone()];
        let mut got = Vec::new();
        // Names stored by an earlier pass: kept after a failure, with the new ones.
        let mut known = AltTitles::default();
        known.add("100", "t100", "stored");
        let pass = enrich(&matchers, &base(120), &known, |c| {
            got.push(c);
            std::future::ready(true)
        })
        .await;
        assert!(pass.error.as_ref().is_some_and(PluginError::is_transient));
        assert_eq!(pass.shows_named, 50);
        assert_eq!(got[0].get("49"), ["n-t49"]);
        assert!(got[0].get("50").is_empty());
        assert_eq!(got[0].get("100"), ["stored"]);
    }

    #[tokio::test]
    async fn nothing_new_publishes_nothing_and_superseded_stops() {
        let matchers: Vec<Arc<dyn Matcher>> = Vec::new();
        let none = AltTitles::default();
        let pass = enrich(
            &matchers,
            &base(3),
            &none,
            |_| -> std::future::Ready<bool> { panic!("nothing to publish") },
        )
        .await;
        assert_eq!(pass.published, 0);
        let namer: Arc<dyn Matcher> = Arc::new(Namer {
            slices: Mutex::new(Vec::new()),
            fail_at: None,
        });
        let pass = enrich(std::slice::from_ref(&namer), &base(3), &none, |_| {
            std::future::ready(false)
        })
        .await;
        assert!(pass.superseded);
        assert_eq!(pass.published, 0);
        // The names the store holds already: counted as named, not published again.
        let mut got = Vec::new();
        enrich(std::slice::from_ref(&namer), &base(3), &none, |c| {
            got.push(c);
            std::future::ready(true)
        })
        .await;
        let known = got.pop().unwrap();
        let pass = enrich(
            &[namer],
            &base(3),
            &known,
            |_| -> std::future::Ready<bool> { panic!("the same names published again") },
        )
        .await;
        assert_eq!((pass.shows_named, pass.published), (3, 0));
    }

    #[tokio::test]
    async fn a_whole_pass_drops_names_no_matcher_gives_any_more() {
        let mut known = AltTitles::default();
        known.add("1", "t1", "old name");
        known.add("7", "gone", "a show the catalogue lost");
        let namer: Arc<dyn Matcher> = Arc::new(Namer {
            slices: Mutex::new(Vec::new()),
            fail_at: None,
        });
        let mut got = Vec::new();
        let pass = enrich(&[namer], &base(3), &known, |c| {
            got.push(c);
            std::future::ready(true)
        })
        .await;
        assert_eq!(pass.published, 1);
        assert_eq!(got[0].get("1"), ["n-t1"]);
        assert!(got[0].get("7").is_empty());
    }
}
