//! The `tmdb` matcher plugin of plexsync: converts a show's TVDB or IMDb id into its TMDB id
//! through TMDB's `/find` API and maps the show when exactly one catalogue show carries that
//! TMDB id. It bridges a Plex library matched by TheTVDB / IMDb and a TMDB-first tracker.
//!
//! This file owns the plugin's entry point ([`build`]), the [`TmdbMatcher`], the conversion
//! cache and the decision rule. The config table is in `config`, the HTTP client (auth, 429,
//! error classes) in `client`, the outbound rate limiter in `limiter`.
//!
//! Rules it keeps:
//! - Only SHOW-level guids reach matchers; they are parsed by the shared
//!   [`plexsync_plugin_api::guid`] parser. Only TVDB and IMDb ids are converted: a TMDB id that
//!   is in the catalogue is the `guid` matcher's business.
//! - It never guesses: ids converting to different catalogue shows give `Candidates`; any
//!   failed conversion fails the whole lookup (classified transient or permanent), because the
//!   id that could not be converted might point elsewhere.
//! - Conversions are cached through the host's [`KvCache`]: found ones for `cache_ttl`,
//!   "TMDB knows no such show" for `negative_cache_ttl`. Failures are never cached.
//! - It names catalogue shows more ways for the host ([`Matcher::alt_titles`]): TMDB's
//!   alternative titles and translations of shows with a `tmdb_id` (`/tv/{id}`, cached like
//!   conversions; parsing and bounds in `names`). They only ever raise candidates.
//! - Without a `tmdb-key` secret it still builds (the shipped config names it), logs one
//!   warning and answers `NoMatch`.

mod client;
pub mod config;
mod limiter;
mod names;

use std::sync::{Arc, PoisonError, RwLock};

use plexsync_plugin_api::guid::{ExternalId, parse_show_guids};
use plexsync_plugin_api::{
    BoxFuture, Candidate, CatalogShow, Catalogue, KvCache, MatchOutcome, Matcher, PluginContext,
    PluginError, ShowNames, ShowQuery,
};

use crate::client::{Source, TmdbClient};
pub use crate::config::TmdbConfig;

/// The `kind` name this matcher is configured under.
pub const KIND: &str = "tmdb";

/// Name of the secret holding the TMDB key (a v3 API key, or a v4 read access token).
pub const SECRET_KEY: &str = "tmdb-key";

/// Every secret the plugin asks the host for.
pub const SECRETS: &[&str] = &[SECRET_KEY];

/// Confidence of a match proven by a converted id: an exact id, but one step removed (it
/// relies on TMDB's cross-reference), hence below the guid matcher's 1.0 and above the
/// host's default auto-map threshold of 0.90.
pub const CONFIDENCE: f32 = 0.95;

/// The `method` of its answers.
pub const METHOD: &str = "tmdb_id";

/// The `method` of a fallback search's candidates.
pub const SEARCH_METHOD: &str = "tmdb_search";

/// Score of the first search result in the catalogue, and what each later rank loses: a lead
/// for a person, far below the auto-map threshold (the host caps fallback answers anyway).
const SEARCH_SCORE: f32 = 0.80;
const SEARCH_SCORE_PER_RANK: f32 = 0.02;
/// Search results looked at (TMDB's first page is 20).
const SEARCH_RESULTS: usize = 10;

/// Converts TVDB / IMDb ids to TMDB ids and matches those exactly.
pub struct TmdbMatcher {
    config: TmdbConfig,
    /// None when no key is stored: the matcher then answers `NoMatch`.
    client: Option<TmdbClient>,
    cache: Arc<dyn KvCache>,
    /// Swapped whole on each refresh; starts empty.
    catalogue: RwLock<Arc<Catalogue>>,
}

impl std::fmt::Debug for TmdbMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TmdbMatcher")
            .field("config", &self.config)
            .field("client", &self.client)
            .field("catalogue_shows", &self.current_catalogue().len())
            .finish_non_exhaustive()
    }
}

/// Build the matcher from its config table (`[[matchers]] kind = "tmdb"`) and the `tmdb-key`
/// secret.
///
/// # Errors
///
/// A config-class [`PluginError`] naming the key when the table or the secret is unusable.
pub fn build(ctx: &PluginContext) -> Result<TmdbMatcher, PluginError> {
    TmdbMatcher::build(ctx)
}

impl TmdbMatcher {
    /// Build from the host's context.
    pub fn build(ctx: &PluginContext) -> Result<TmdbMatcher, PluginError> {
        let config = TmdbConfig::from_context(ctx)?;
        let client = match ctx.secrets.get(SECRET_KEY) {
            Some(key) => Some(TmdbClient::new(&config, key.clone())?),
            None => {
                tracing::warn!(
                    matcher = KIND,
                    "no TMDB key stored: the tmdb matcher answers no match (store one with `plexsync secret set tmdb-key`)"
                );
                None
            }
        };
        Ok(TmdbMatcher {
            config,
            client,
            cache: ctx.cache.clone(),
            catalogue: RwLock::new(Arc::new(Catalogue::default())),
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &TmdbConfig {
        &self.config
    }

    /// Whether a key is stored (without one every answer is `NoMatch`).
    pub fn has_key(&self) -> bool {
        self.client.is_some()
    }

    fn current_catalogue(&self) -> Arc<Catalogue> {
        // A poisoned lock only means a panic while swapping an `Arc`: the value is whole.
        self.catalogue
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Match one show: convert its TVDB / IMDb ids, then look the TMDB ids up.
    pub async fn resolve(&self, query: &ShowQuery) -> Result<MatchOutcome, PluginError> {
        let Some(client) = &self.client else {
            return Ok(MatchOutcome::NoMatch);
        };
        let catalogue = self.current_catalogue();
        if catalogue.is_empty() {
            return Ok(MatchOutcome::NoMatch);
        }
        let mut converted: Vec<Vec<u64>> = Vec::new();
        for id in parse_show_guids(&query.guids) {
            let (source, value) = match &id {
                ExternalId::Tvdb(n) => (Source::Tvdb, n.to_string()),
                ExternalId::Imdb(s) => (Source::Imdb, s.clone()),
                // TMDB ids are the guid matcher's; movie and AniDB ids convert to no series.
                ExternalId::Tmdb(_) | ExternalId::TmdbMovie(_) | ExternalId::Anidb(_) => continue,
            };
            converted.push(self.convert(client, source, &value).await?);
        }
        Ok(decide(&catalogue, &converted))
    }

    /// The fallback for a show the chain found nothing for: TMDB `/search/tv` with the title
    /// and year, and the results whose TMDB id a catalogue show carries, in TMDB's order, as
    /// candidates (`tmdb_search`). Answers are cached like conversions.
    pub async fn search(&self, query: &ShowQuery) -> Result<MatchOutcome, PluginError> {
        let Some(client) = &self.client else {
            return Ok(MatchOutcome::NoMatch);
        };
        let catalogue = self.current_catalogue();
        let title = query.title.trim();
        if catalogue.is_empty() || title.is_empty() {
            return Ok(MatchOutcome::NoMatch);
        }
        let key = format!(
            "search:{}:{}",
            query.year.map_or_else(String::new, |y| y.to_string()),
            title.to_lowercase()
        );
        let cached = self
            .cache
            .get(&key)
            .and_then(|bytes| serde_json::from_slice::<Vec<u64>>(&bytes).ok());
        let ids = match cached {
            Some(ids) => ids,
            None => {
                let ids = client.search_tv(title, query.year).await?;
                let ttl = if ids.is_empty() {
                    self.config.negative_cache_ttl
                } else {
                    self.config.cache_ttl
                };
                match serde_json::to_vec(&ids) {
                    Ok(bytes) => self.cache.put(&key, &bytes, Some(ttl)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot encode a TMDB search for the cache")
                    }
                }
                ids
            }
        };
        let outcome = search_candidates(&catalogue, &ids);
        tracing::debug!(title, year = ?query.year, tmdb_ids = ?ids, outcome = ?outcome, "TMDB search fallback");
        Ok(outcome)
    }

    /// More names for catalogue shows with a TMDB id (see [`Matcher::alt_titles`]): TMDB's
    /// name, original name, alternative titles and translations, less the names the show
    /// already carries. One `/tv/{id}` request per show not in the cache, through the rate
    /// limiter; found names are cached for `cache_ttl`, "no such series" (404) for
    /// `negative_cache_ttl`.
    ///
    /// A show TMDB answers oddly for (a malformed answer, another 4xx) is skipped. A
    /// rejected key fails the call at once. A transient failure (TMDB down, a timeout, a
    /// long 429) ends the slice: the names found before it are answered, or the error when
    /// there are none, so a pass over a catalogue stops after one failed request instead of
    /// waiting out a timeout per show.
    pub async fn names(&self, shows: &[CatalogShow]) -> Result<Vec<ShowNames>, PluginError> {
        let Some(client) = &self.client else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for show in shows {
            let Some(tmdb) = show.tmdb_id else { continue };
            let found = match self.tv_names(client, tmdb).await {
                Ok(found) => found,
                Err(e) if client.key_rejected() => return Err(e),
                Err(e) if e.is_transient() => {
                    if out.is_empty() {
                        return Err(e);
                    }
                    tracing::info!(tmdb_id = tmdb, error = %e, named = out.len(), "TMDB names: stopping this slice early");
                    return Ok(out);
                }
                Err(e) => {
                    tracing::debug!(tmdb_id = tmdb, show_id = %show.id, error = %e, "TMDB names: show skipped");
                    continue;
                }
            };
            let new = names::new_to(show, &found);
            if !new.is_empty() {
                out.push((show.id.clone(), new));
            }
        }
        Ok(out)
    }

    /// The names of one series, through the cache.
    async fn tv_names(&self, client: &TmdbClient, id: u64) -> Result<Vec<String>, PluginError> {
        let key = format!("tv:{id}");
        if let Some(bytes) = self.cache.get(&key) {
            if let Ok(names) = serde_json::from_slice::<Vec<String>>(&bytes) {
                return Ok(names);
            }
        }
        let (names, ttl) = match client.tv_names(id).await? {
            Some(names) => (names, self.config.cache_ttl),
            None => (Vec::new(), self.config.negative_cache_ttl),
        };
        tracing::debug!(tmdb_id = id, names = names.len(), "TMDB names");
        match serde_json::to_vec(&names) {
            Ok(bytes) => self.cache.put(&key, &bytes, Some(ttl)),
            Err(e) => tracing::warn!(error = %e, "cannot encode TMDB names for the cache"),
        }
        Ok(names)
    }

    /// One conversion, through the cache.
    async fn convert(
        &self,
        client: &TmdbClient,
        source: Source,
        id: &str,
    ) -> Result<Vec<u64>, PluginError> {
        let key = format!("find:{}:{id}", source.param());
        if let Some(bytes) = self.cache.get(&key) {
            // An unreadable entry (another version's format) is simply a miss.
            if let Ok(ids) = serde_json::from_slice::<Vec<u64>>(&bytes) {
                tracing::debug!(external_id = %id, source = source.param(), tmdb_ids = ?ids, "TMDB conversion from cache");
                return Ok(ids);
            }
        }
        let ids = client.find(source, id).await?;
        tracing::debug!(external_id = %id, source = source.param(), tmdb_ids = ?ids, "TMDB conversion");
        let ttl = if ids.is_empty() {
            self.config.negative_cache_ttl
        } else {
            self.config.cache_ttl
        };
        match serde_json::to_vec(&ids) {
            Ok(bytes) => self.cache.put(&key, &bytes, Some(ttl)),
            Err(e) => tracing::warn!(error = %e, "cannot encode a TMDB conversion for the cache"),
        }
        Ok(ids)
    }
}

/// The candidates of a search: catalogue shows carrying a result's TMDB id, in result order,
/// one entry per show.
fn search_candidates(catalogue: &Catalogue, ids: &[u64]) -> MatchOutcome {
    let mut candidates: Vec<Candidate> = Vec::new();
    for &id in ids.iter().take(SEARCH_RESULTS) {
        for show in catalogue.by_tmdb(id) {
            if candidates.iter().any(|c| c.show_id == show.id) {
                continue;
            }
            let rank = candidates.len() as f32;
            candidates.push(Candidate {
                show_id: show.id.to_string(),
                score: (SEARCH_SCORE - SEARCH_SCORE_PER_RANK * rank).max(0.0),
                method: SEARCH_METHOD.to_string(),
            });
        }
    }
    if candidates.is_empty() {
        MatchOutcome::NoMatch
    } else {
        MatchOutcome::Candidates { candidates }
    }
}

/// The decision rule on converted ids (one list of TMDB ids per external id).
fn decide(catalogue: &Catalogue, converted: &[Vec<u64>]) -> MatchOutcome {
    // (show id, how many external ids lead to it), in first-seen order.
    let mut hits: Vec<(String, usize)> = Vec::new();
    // One TMDB id held by several catalogue rows: the catalogue itself cannot tell them apart.
    let mut ambiguous = false;
    for tmdb_ids in converted {
        let mut rows: Vec<&str> = Vec::new();
        for &t in tmdb_ids {
            let found: Vec<&str> = catalogue.by_tmdb(t).map(|s| s.id).collect();
            ambiguous |= found.len() > 1;
            for r in found {
                if !rows.contains(&r) {
                    rows.push(r);
                }
            }
        }
        for r in rows {
            match hits.iter_mut().find(|(id, _)| id == r) {
                Some((_, n)) => *n += 1,
                None => hits.push((r.to_string(), 1)),
            }
        }
    }
    match hits.len() {
        0 => MatchOutcome::NoMatch,
        1 if !ambiguous => MatchOutcome::Definite {
            show_id: hits.remove(0).0,
            confidence: CONFIDENCE,
            method: METHOD.to_string(),
        },
        _ => {
            hits.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            MatchOutcome::Candidates {
                candidates: hits
                    .into_iter()
                    .map(|(show_id, _)| Candidate {
                        show_id,
                        score: CONFIDENCE,
                        method: METHOD.to_string(),
                    })
                    .collect(),
            }
        }
    }
}

impl Matcher for TmdbMatcher {
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
        Box::pin(self.resolve(query))
    }

    fn fallback<'a>(
        &'a self,
        query: &'a ShowQuery,
    ) -> BoxFuture<'a, Result<MatchOutcome, PluginError>> {
        Box::pin(self.search(query))
    }

    fn alt_titles<'a>(
        &'a self,
        shows: &'a [CatalogShow],
    ) -> BoxFuture<'a, Result<Vec<ShowNames>, PluginError>> {
        Box::pin(self.names(shows))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use plexsync_plugin_api::MemoryCache;

    use super::*;

    fn show(id: &str, tmdb: Option<u64>) -> CatalogShow {
        CatalogShow {
            id: id.into(),
            title: id.into(),
            tmdb_id: tmdb,
            ..Default::default()
        }
    }

    fn catalogue() -> Catalogue {
        Catalogue::new(vec![
            show("bb", Some(1396)),
            show("got", Some(1399)),
            show("dup-a", Some(7)),
            show("dup-b", Some(7)),
            show("none", None),
        ])
    }

    #[test]
    fn one_show_is_definite_at_095() {
        let out = decide(&catalogue(), &[vec![1396]]);
        assert_eq!(
            out,
            MatchOutcome::Definite {
                show_id: "bb".into(),
                confidence: 0.95,
                method: "tmdb_id".into()
            }
        );
        // Two external ids agreeing, one of them with an unknown extra TMDB id.
        let out = decide(&catalogue(), &[vec![1396], vec![1396, 424242]]);
        assert!(matches!(out, MatchOutcome::Definite { ref show_id, .. } if show_id == "bb"));
    }

    #[test]
    fn disagreement_or_ambiguity_gives_candidates() {
        let ids = |o: MatchOutcome| match o {
            MatchOutcome::Candidates { candidates } => {
                assert!(
                    candidates
                        .iter()
                        .all(|c| c.score == 0.95 && c.method == "tmdb_id")
                );
                candidates
                    .into_iter()
                    .map(|c| c.show_id)
                    .collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ids(decide(&catalogue(), &[vec![1396], vec![1399]])),
            ["bb", "got"]
        );
        // The better-supported show first.
        assert_eq!(
            ids(decide(&catalogue(), &[vec![1399], vec![1396], vec![1396]])),
            ["bb", "got"]
        );
        assert_eq!(ids(decide(&catalogue(), &[vec![7]])), ["dup-a", "dup-b"]);
        // One /find answer listing two series that are both in the catalogue.
        assert_eq!(
            ids(decide(&catalogue(), &[vec![1396, 1399]])),
            ["bb", "got"]
        );
    }

    #[test]
    fn search_results_in_the_catalogue_become_ranked_candidates() {
        let c = catalogue();
        // 999 is not in the catalogue; the rest keep TMDB's order, each show once.
        let MatchOutcome::Candidates { candidates } =
            search_candidates(&c, &[999, 1399, 1396, 1399])
        else {
            panic!("expected candidates");
        };
        let ids: Vec<&str> = candidates.iter().map(|x| x.show_id.as_str()).collect();
        assert_eq!(ids, ["got", "bb"]);
        assert!(
            candidates
                .iter()
                .all(|x| x.method == SEARCH_METHOD && x.score < 0.9)
        );
        assert!(candidates[0].score > candidates[1].score);
        assert_eq!(search_candidates(&c, &[999]), MatchOutcome::NoMatch);
    }

    #[test]
    fn nothing_known_is_no_match() {
        assert_eq!(decide(&catalogue(), &[]), MatchOutcome::NoMatch);
        assert_eq!(
            decide(&catalogue(), &[vec![], vec![5]]),
            MatchOutcome::NoMatch
        );
    }

    fn ctx(config: serde_json::Value) -> PluginContext {
        PluginContext {
            config,
            secrets: HashMap::new(),
            cache: Arc::new(MemoryCache::default()),
            config_dir: PathBuf::from("."),
        }
    }

    #[tokio::test]
    async fn without_a_key_it_builds_and_answers_no_match() {
        let m = build(&ctx(serde_json::Value::Null)).unwrap();
        assert!(!m.has_key());
        m.set_catalogue(Arc::new(catalogue()));
        let q = ShowQuery {
            title: "x".into(),
            guids: vec!["tvdb://81189".into()],
            ..Default::default()
        };
        assert_eq!(m.match_show(&q).await.unwrap(), MatchOutcome::NoMatch);
        assert_eq!(m.kind(), "tmdb");
    }

    #[test]
    fn sample_config_parses_and_builds() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let mut built = 0;
        for entry in doc["matchers"].as_array().unwrap() {
            let mut table = entry.as_table().unwrap().clone();
            if table.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
                continue;
            }
            table.remove("kind");
            let config = serde_json::to_value(&table).unwrap();
            let m = build(&ctx(config)).unwrap();
            // The sample shows the defaults.
            assert_eq!(
                m.config(),
                &TmdbConfig::from_value(&serde_json::Value::Null).unwrap()
            );
            built += 1;
        }
        assert_eq!(built, 1, "sample.toml holds one tmdb matcher");
    }
}
