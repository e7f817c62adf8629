//! The `guid` matcher: maps a Plex show to a tracker show by the exact external ids in its
//! SHOW-level guids (TMDB, TVDB, IMDb), looked up in the tracker's catalogue.
//!
//! This crate owns the decision rule that turns "which catalogue rows do this show's ids point
//! to" into a [`MatchOutcome`]; parsing the guid strings belongs to
//! [`plexsync_plugin_api::guid`], shared with the other id-based matchers. The rule never
//! guesses: exactly one catalogue show proven by the ids is `Definite`; ids that disagree, or an
//! id held by several catalogue rows, give `Candidates` for a person to settle; nothing found is
//! `NoMatch`, so the next matcher in the chain gets its turn.

use std::sync::{Arc, PoisonError, RwLock};

use plexsync_plugin_api::guid::{ExternalId, parse_show_guids};
use plexsync_plugin_api::{
    BoxFuture, Candidate, Catalogue, MatchOutcome, Matcher, PluginContext, PluginError, ShowQuery,
};
use serde::Deserialize;

/// The `kind` name this matcher is configured under.
pub const KIND: &str = "guid";

/// The matcher's config table. It has no keys today; it exists so that a misspelt or
/// misplaced key is refused with its name instead of being silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuidConfig {}

/// Matches shows by exact external id. Cheap to query: the catalogue's id indices do the work.
pub struct GuidMatcher {
    /// Swapped whole on each refresh; readers clone the `Arc` and never hold the lock while
    /// matching. Starts empty, which answers `NoMatch` until the host sets a catalogue.
    catalogue: RwLock<Arc<Catalogue>>,
}

// By hand, so that logging the matcher does not dump thousands of catalogue rows.
impl std::fmt::Debug for GuidMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuidMatcher")
            .field("catalogue_shows", &self.current_catalogue().len())
            .finish()
    }
}

impl Default for GuidMatcher {
    fn default() -> Self {
        GuidMatcher {
            catalogue: RwLock::new(Arc::new(Catalogue::default())),
        }
    }
}

/// Build the matcher from its config table (`[[matchers]] kind = "guid"`).
pub fn build(ctx: &PluginContext) -> Result<GuidMatcher, PluginError> {
    GuidMatcher::build(ctx)
}

impl GuidMatcher {
    /// Build from the host's context: validates the (empty) config table.
    pub fn build(ctx: &PluginContext) -> Result<GuidMatcher, PluginError> {
        // No keys: any key is refused by name (its key path in the error).
        let _config: GuidConfig = ctx.parse_config()?;
        Ok(GuidMatcher::default())
    }

    /// Match one show now. [`Matcher::match_show`] wraps this; it needs no I/O, so offline
    /// tools and tests can call it without an async runtime.
    pub fn resolve(&self, query: &ShowQuery) -> MatchOutcome {
        let catalogue = self.current_catalogue();
        resolve_ids(&catalogue, &parse_show_guids(&query.guids))
    }

    fn current_catalogue(&self) -> Arc<Catalogue> {
        // A poisoned lock only means a writer panicked mid-swap of an `Arc`, which cannot leave a
        // half-written value behind, so the data is still sound.
        self.catalogue
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Matcher for GuidMatcher {
    fn kind(&self) -> &str {
        KIND
    }

    fn set_catalogue(&self, catalogue: Arc<Catalogue>) {
        *self
            .catalogue
            .write()
            .unwrap_or_else(PoisonError::into_inner) = catalogue;
    }

    fn match_show<'a>(
        &'a self,
        query: &'a ShowQuery,
    ) -> BoxFuture<'a, Result<MatchOutcome, PluginError>> {
        Box::pin(async move { Ok(self.resolve(query)) })
    }
}

/// The `method` an id proves a match by; `None` for ids no catalogue can hold.
fn method_of(id: &ExternalId) -> Option<&'static str> {
    match id {
        ExternalId::Tmdb(_) => Some("tmdb_id"),
        ExternalId::Tvdb(_) => Some("tvdb_id"),
        ExternalId::Imdb(_) => Some("imdb_id"),
        // A TMDB movie id lives in another number space than the catalogue's series ids, and
        // no tracker catalogue carries AniDB ids: both contribute nothing.
        ExternalId::TmdbMovie(_) | ExternalId::Anidb(_) => None,
    }
}

/// Method preference when several ids prove the same show: the catalogue is TMDB-first, so a
/// TMDB hit is the most direct evidence.
fn method_rank(method: &str) -> u8 {
    match method {
        "tmdb_id" => 0,
        "tvdb_id" => 1,
        _ => 2,
    }
}

/// One catalogue show the ids point to, with the evidence for it.
struct Hit {
    show_id: String,
    /// The preferred method among the ids that found it.
    method: &'static str,
    /// How many distinct ids found it (more agreeing ids rank a candidate higher).
    support: usize,
}

/// The decision rule, on already parsed ids.
fn resolve_ids(catalogue: &Catalogue, ids: &[ExternalId]) -> MatchOutcome {
    let mut hits: Vec<Hit> = Vec::new();
    // One id held by several catalogue rows means the catalogue itself cannot tell them apart.
    let mut ambiguous_id = false;
    for id in ids {
        let Some(method) = method_of(id) else {
            continue;
        };
        let rows: Vec<&str> = match id {
            ExternalId::Tmdb(n) => catalogue.by_tmdb(*n).map(|s| s.id).collect(),
            ExternalId::Tvdb(n) => catalogue.by_tvdb(*n).map(|s| s.id).collect(),
            ExternalId::Imdb(s) => catalogue.by_imdb(s).map(|s| s.id).collect(),
            ExternalId::TmdbMovie(_) | ExternalId::Anidb(_) => Vec::new(),
        };
        if rows.len() > 1 {
            ambiguous_id = true;
        }
        for show_id in rows {
            match hits.iter_mut().find(|h| h.show_id == show_id) {
                Some(hit) => {
                    hit.support += 1;
                    if method_rank(method) < method_rank(hit.method) {
                        hit.method = method;
                    }
                }
                None => hits.push(Hit {
                    show_id: show_id.to_string(),
                    method,
                    support: 1,
                }),
            }
        }
    }

    match hits.len() {
        0 => MatchOutcome::NoMatch,
        1 if !ambiguous_id => {
            let hit = hits.remove(0);
            MatchOutcome::Definite {
                show_id: hit.show_id,
                confidence: 1.0,
                method: hit.method.to_string(),
            }
        }
        _ => {
            // Best first: the show more of the ids agree on; ties keep the guid order. Every
            // candidate is an exact id hit, hence score 1.0; the person resolving decides.
            hits.sort_by_key(|h| std::cmp::Reverse(h.support));
            MatchOutcome::Candidates {
                candidates: hits
                    .into_iter()
                    .map(|h| Candidate {
                        show_id: h.show_id,
                        score: 1.0,
                        method: h.method.to_string(),
                    })
                    .collect(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::future::Future;
    use std::path::PathBuf;
    use std::task::{Context, Poll, Waker};

    use plexsync_plugin_api::{CatalogShow, MemoryCache};

    use super::*;

    fn show(id: &str, tmdb: Option<u64>, tvdb: Option<u64>, imdb: Option<&str>) -> CatalogShow {
        CatalogShow {
            id: id.to_string(),
            title: format!("Show {id}"),
            tmdb_id: tmdb,
            tvdb_id: tvdb,
            imdb_id: imdb.map(str::to_string),
            ..Default::default()
        }
    }

    /// Breaking Bad (all ids), The Office twice under one TVDB id (a catalogue duplicate), and a
    /// TMDB-only row.
    fn catalogue() -> Arc<Catalogue> {
        Arc::new(Catalogue::new(vec![
            show("bb", Some(1396), Some(81189), Some("tt0903747")),
            show("office-a", Some(2316), Some(73244), None),
            show("office-b", None, Some(73244), Some("tt0386676")),
            show("got", Some(1399), None, None),
        ]))
    }

    fn ctx(config: serde_json::Value) -> PluginContext {
        PluginContext {
            config,
            secrets: HashMap::new(),
            cache: Arc::new(MemoryCache::default()),
            config_dir: PathBuf::from("."),
        }
    }

    fn matcher() -> GuidMatcher {
        let m = build(&ctx(serde_json::json!({}))).unwrap();
        m.set_catalogue(catalogue());
        m
    }

    fn query(guids: &[&str]) -> ShowQuery {
        ShowQuery {
            title: "whatever".into(),
            guids: guids.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    fn definite(show_id: &str, method: &str) -> MatchOutcome {
        MatchOutcome::Definite {
            show_id: show_id.into(),
            confidence: 1.0,
            method: method.into(),
        }
    }

    fn candidate_ids(outcome: &MatchOutcome) -> Vec<&str> {
        match outcome {
            MatchOutcome::Candidates { candidates } => {
                assert!(candidates.iter().all(|c| c.score == 1.0));
                candidates.iter().map(|c| c.show_id.as_str()).collect()
            }
            other => panic!("expected candidates, got {other:?}"),
        }
    }

    /// Drive a future that never waits (ours is ready at once) without an async runtime.
    fn ready<F: Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("the guid matcher never waits"),
        }
    }

    #[test]
    fn each_provider_alone_is_definite_with_its_method() {
        let m = matcher();
        assert_eq!(
            m.resolve(&query(&["tmdb://1396"])),
            definite("bb", "tmdb_id")
        );
        assert_eq!(
            m.resolve(&query(&["tvdb://81189"])),
            definite("bb", "tvdb_id")
        );
        assert_eq!(
            m.resolve(&query(&["imdb://tt0903747"])),
            definite("bb", "imdb_id")
        );
        assert_eq!(
            m.resolve(&query(&["com.plexapp.agents.thetvdb://81189/3/7?lang=en"])),
            definite("bb", "tvdb_id")
        );
        assert_eq!(
            m.resolve(&query(&["com.plexapp.agents.hama://tvdb2-81189?lang=en"])),
            definite("bb", "tvdb_id")
        );
    }

    #[test]
    fn agreeing_ids_are_definite_and_prefer_tmdb() {
        let m = matcher();
        let q = query(&[
            "plex://show/5d9c086c46115600200aa2fe",
            "imdb://tt0903747",
            "tvdb://81189",
            "tmdb://1396",
        ]);
        assert_eq!(m.resolve(&q), definite("bb", "tmdb_id"));
        let q = query(&["imdb://tt0903747", "tvdb://81189"]);
        assert_eq!(m.resolve(&q), definite("bb", "tvdb_id"));
    }

    #[test]
    fn ids_missing_from_the_catalogue_do_not_spoil_a_definite() {
        // The catalogue row has only the TMDB id; Plex also reports TVDB and IMDb ids.
        let m = matcher();
        let q = query(&["imdb://tt0944947", "tmdb://1399", "tvdb://121361"]);
        assert_eq!(m.resolve(&q), definite("got", "tmdb_id"));
    }

    #[test]
    fn duplicate_keys_of_one_provider_are_fine_when_they_agree() {
        let m = matcher();
        let q = query(&[
            "tvdb://81189",
            "com.plexapp.agents.thetvdb://81189?lang=en",
            "TVDB://81189",
        ]);
        assert_eq!(m.resolve(&q), definite("bb", "tvdb_id"));
        // Two different TVDB ids, only one of which the catalogue knows: still one show.
        let q = query(&["tvdb://81189", "tvdb://999999"]);
        assert_eq!(m.resolve(&q), definite("bb", "tvdb_id"));
    }

    #[test]
    fn conflicting_ids_give_candidates_never_a_guess() {
        let m = matcher();
        // Two TVDB keys pointing at different catalogue shows.
        let out = m.resolve(&query(&["tvdb://81189", "tvdb://73244"]));
        assert_eq!(candidate_ids(&out), vec!["bb", "office-a", "office-b"]);
        // TMDB says one show, IMDb another.
        let out = m.resolve(&query(&["tmdb://1396", "imdb://tt0386676"]));
        assert_eq!(candidate_ids(&out), vec!["bb", "office-b"]);
    }

    #[test]
    fn one_id_held_by_several_rows_gives_candidates() {
        let m = matcher();
        let out = m.resolve(&query(&["tvdb://73244"]));
        assert_eq!(candidate_ids(&out), vec!["office-a", "office-b"]);
        // Even when another id singles out one of them, the catalogue is inconsistent: a person
        // decides, but the better-supported row comes first.
        let out = m.resolve(&query(&["tvdb://73244", "imdb://tt0386676"]));
        assert_eq!(candidate_ids(&out), vec!["office-b", "office-a"]);
        match out {
            MatchOutcome::Candidates { candidates } => {
                assert_eq!(candidates[0].method, "tvdb_id");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ids_that_cannot_be_resolved_contribute_nothing() {
        let m = matcher();
        for guids in [
            &[][..],
            &["plex://show/5d9c086c46115600200aa2fe"][..],
            &["com.plexapp.agents.hama://anidb-1396?lang=en"][..],
            // A TMDB *movie* id with the same number as a catalogue series id.
            &["com.plexapp.agents.hama://tmdb-1396?lang=en"][..],
            &["local://1396", "com.plexapp.agents.none://1396?lang=xn"][..],
            &["tvdb://424242", "tmdb://424242", "imdb://tt4242424"][..],
            &["not a guid", "", "tvdb://-1"][..],
        ] {
            assert_eq!(m.resolve(&query(guids)), MatchOutcome::NoMatch, "{guids:?}");
        }
        // An anidb id next to a resolvable id neither helps nor hurts.
        let q = query(&[
            "com.plexapp.agents.hama://anidb-17494?lang=en",
            "tmdb://1396",
        ]);
        assert_eq!(m.resolve(&q), definite("bb", "tmdb_id"));
    }

    #[test]
    fn no_catalogue_yet_is_no_match() {
        let m = build(&ctx(serde_json::json!({}))).unwrap();
        assert_eq!(m.resolve(&query(&["tmdb://1396"])), MatchOutcome::NoMatch);
    }

    #[test]
    fn a_new_catalogue_replaces_the_old_one() {
        let m = matcher();
        m.set_catalogue(Arc::new(Catalogue::new(vec![show(
            "new-bb",
            Some(1396),
            None,
            None,
        )])));
        assert_eq!(
            m.resolve(&query(&["tmdb://1396"])),
            definite("new-bb", "tmdb_id")
        );
        assert_eq!(m.resolve(&query(&["tvdb://81189"])), MatchOutcome::NoMatch);
    }

    #[test]
    fn the_trait_path_answers_the_same() {
        let m: Box<dyn Matcher> = Box::new(matcher());
        assert_eq!(m.kind(), "guid");
        let q = query(&["tmdb://1396"]);
        let out = ready(m.match_show(&q)).unwrap();
        assert_eq!(out, definite("bb", "tmdb_id"));
    }

    #[test]
    fn config_takes_no_keys_and_names_an_unknown_one() {
        assert!(build(&ctx(serde_json::json!({}))).is_ok());
        assert!(build(&ctx(serde_json::Value::Null)).is_ok());
        let err = build(&ctx(serde_json::json!({"treshold": 0.5}))).unwrap_err();
        assert_eq!(err.class, plexsync_plugin_api::ErrorClass::Config);
        assert!(err.message.contains("treshold"), "{}", err.message);
        // The host says "matcher `guid`" and the key path before the message.
        assert_eq!(err.key.as_deref(), Some("treshold"));
        let err = build(&ctx(serde_json::json!("guid"))).unwrap_err();
        assert_eq!(err.class, plexsync_plugin_api::ErrorClass::Config);
    }

    #[test]
    fn sample_config_parses_and_builds() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let matchers = doc["matchers"].as_array().unwrap();
        let mut built = 0;
        for entry in matchers {
            let mut table = entry.as_table().unwrap().clone();
            if table.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
                continue;
            }
            // The host hands a plugin its table without `kind`.
            table.remove("kind");
            let config = serde_json::to_value(&table).unwrap();
            build(&ctx(config)).unwrap();
            built += 1;
        }
        assert_eq!(built, 1, "sample.toml holds one guid matcher");
    }
}
