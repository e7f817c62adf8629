//! Catalogue enrichment: more names for the tracker's shows from the matchers that know them
//! (the tmdb matcher: TMDB's alternative titles and translations), merged into
//! [`CatalogShow::alt_titles`] and handed back to every matcher, so a Plex show titled by a
//! translation finds its tracker show as a candidate.
//!
//! [`enrich`] is the one pass, shared by the daemon and `plexsync match`: every matcher's
//! [`Matcher::alt_titles`] over slices of the catalogue, publishing the enriched catalogue
//! as names arrive (at most every [`PUBLISH_EVERY`]) and at the end. [`Enricher`] runs it in
//! the background after each catalogue load or refresh: it never holds up matching (until
//! names arrive the matchers work from the plain catalogue), starts over from the new
//! catalogue on a refresh, asks again when the matchers change (a reload, a new secret:
//! `Wakeups::enrich`), retries a transient failure with backoff and stops with the daemon.
//!
//! Names only ever raise candidates; what a matcher makes of them is its business (the title
//! matcher caps them below the auto-map threshold). Conflicts recorded before the names
//! arrived are asked again after a pass that named shows, and the answer is merged into their
//! candidates only ([`refresh_conflicts`]); only those of the current tracker: another
//! tracker's are matched again whole by pipeline/rematch.rs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexsync_plugin_api::{Candidate, CatalogShow, Catalogue, Matcher, PluginError};

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
    /// Shows that got at least one new name, and the names added.
    pub shows_named: usize,
    pub names: usize,
    /// Publications made.
    pub published: usize,
    /// The failure that ended the pass early (the names found before it were published).
    pub error: Option<PluginError>,
    /// The pass stopped because `publish` said it is out of date.
    pub superseded: bool,
}

/// Ask every matcher for more names of `base`'s shows, slice by slice, and hand `publish`
/// the enriched catalogue: at most every [`PUBLISH_EVERY`] while names arrive, and at the end
/// when anything was added. `publish` returns false when the pass is out of date (a newer
/// catalogue took over); the pass then stops without publishing again. The first matcher
/// error ends the pass. `publish` answers a future so the daemon can index off the runtime.
pub async fn enrich<P>(
    matchers: &[Arc<dyn Matcher>],
    base: &Catalogue,
    mut publish: impl FnMut(Arc<Catalogue>) -> P,
) -> Pass
where
    P: std::future::Future<Output = bool>,
{
    let mut pass = Pass::default();
    // show id → names added, in arrival order, compared without regard to case.
    let mut added: HashMap<String, Vec<String>> = HashMap::new();
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
                let list = added.entry(id).or_default();
                let before = list.len();
                for name in names {
                    let folded = name.trim().to_lowercase();
                    let known = folded.is_empty()
                        || show.title.trim().to_lowercase() == folded
                        || list.iter().any(|n| n.trim().to_lowercase() == folded);
                    if !known {
                        list.push(name);
                    }
                }
                if before == 0 && !list.is_empty() {
                    pass.shows_named += 1;
                }
                pass.names += list.len() - before;
                dirty |= list.len() > before;
            }
            if dirty && last_publish.elapsed() >= PUBLISH_EVERY {
                if !publish(merged(base, &added)).await {
                    pass.superseded = true;
                    return pass;
                }
                pass.published += 1;
                dirty = false;
                last_publish = Instant::now();
                tracing::info!(
                    matcher = m.kind(),
                    shows_named = pass.shows_named,
                    names = pass.names,
                    "catalogue names: progress published"
                );
            }
        }
    }
    if dirty {
        if publish(merged(base, &added)).await {
            pass.published += 1;
        } else {
            pass.superseded = true;
        }
    }
    pass
}

/// `base` with the names added (after the shows' own `alt_titles`, if any).
fn merged(base: &Catalogue, added: &HashMap<String, Vec<String>>) -> Arc<Catalogue> {
    let shows: Vec<CatalogShow> = base
        .iter()
        .map(|s| {
            let mut s = s.to_show();
            if let Some(names) = added.get(&s.id) {
                for n in names {
                    if !s.alt_titles.contains(n) {
                        s.alt_titles.push(n.clone());
                    }
                }
            }
            s
        })
        .collect();
    Arc::new(Catalogue::new(shows))
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

    /// Enrich `base` (the catalogue just published) in the background, replacing any pass
    /// in progress.
    pub fn start(&mut self, shared: &Arc<Shared>, base: Arc<Catalogue>) {
        self.stop();
        self.task = Some(tokio::spawn(run(shared.clone(), base)));
    }
}

impl Drop for Enricher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Passes over `base` until shutdown: one now, again when the matchers change, again after
/// a backoff when one failed transiently.
async fn run(shared: Arc<Shared>, base: Arc<Catalogue>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut failures = 0u32;
    // What this task published last: the live catalogue is either that or `base`, unless a
    // refresh replaced it (then this task is out of date). Shared with the publications'
    // blocking threads, one at a time.
    let current = Arc::new(std::sync::Mutex::new(base.clone()));
    loop {
        if *shutdown.borrow() {
            return;
        }
        let matchers = shared.plugins().matchers.clone();
        let started = Instant::now();
        tracing::info!(shows = base.len(), "catalogue names: pass started");
        let pass = enrich(&matchers, &base, |c| {
            let (shared, current, base) = (shared.clone(), current.clone(), base.clone());
            // Checked and published in one step, so a refresh's publication cannot come
            // between; on a blocking thread, as every matcher indexes the catalogue again.
            let publish = tokio::task::spawn_blocking(move || {
                let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
                let ours = shared.publish_catalogue(c.clone(), |live| {
                    live.is_some_and(|l| Arc::ptr_eq(l, &current) || Arc::ptr_eq(l, &base))
                });
                if ours {
                    *current = c;
                }
                ours
            });
            async move {
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
                    .is_some_and(|l| Arc::ptr_eq(&l, &current) || Arc::ptr_eq(&l, &base))
            };
            refresh_conflicts(&shared, &matchers, still_ours).await;
        }
        let retry = match &pass.error {
            Some(e) if e.is_transient() => {
                failures += 1;
                Some(backoff(
                    failures,
                    Duration::from_secs(60),
                    Duration::from_secs(3600),
                ))
            }
            _ => {
                failures = 0;
                None
            }
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
        let pass = enrich(&matchers, &base(120), |c| {
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
        assert_eq!(c.get("7").unwrap().alt_titles.to_vec(), ["n-t7"]);
        assert_eq!(c.len(), 120);
    }

    #[tokio::test]
    async fn a_failure_stops_the_pass_keeping_what_was_found() {
        let namer = Arc::new(Namer {
            slices: Mutex::new(Vec::new()),
            fail_at: Some(2),
        });
        let matchers: Vec<Arc<dyn Matcher>> = vec![namer.clone()];
        let mut got = Vec::new();
        let pass = enrich(&matchers, &base(120), |c| {
            got.push(c);
            std::future::ready(true)
        })
        .await;
        assert!(pass.error.as_ref().is_some_and(PluginError::is_transient));
        assert_eq!(pass.shows_named, 50);
        assert_eq!(got[0].get("49").unwrap().alt_titles.to_vec(), ["n-t49"]);
        assert!(got[0].get("50").unwrap().alt_titles.is_empty());
    }

    #[tokio::test]
    async fn nothing_new_publishes_nothing_and_superseded_stops() {
        let matchers: Vec<Arc<dyn Matcher>> = Vec::new();
        let pass = enrich(&matchers, &base(3), |_| -> std::future::Ready<bool> {
            panic!("nothing to publish")
        })
        .await;
        assert_eq!(pass.published, 0);
        let namer: Arc<dyn Matcher> = Arc::new(Namer {
            slices: Mutex::new(Vec::new()),
            fail_at: None,
        });
        let pass = enrich(&[namer], &base(3), |_| std::future::ready(false)).await;
        assert!(pass.superseded);
        assert_eq!(pass.published, 0);
    }
}
