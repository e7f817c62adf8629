//! plexsync matcher plugin `title`: maps a Plex show to a tracker show by its title and year.
//!
//! This crate owns the title matcher of the chain (`[[matchers]] kind = "title"`), which the
//! host consults when no usable guid identified the show:
//!
//! - [`trgm`]: a bit-exact port of PostgreSQL 15 pg_trgm `similarity()`;
//! - [`normalize`]: the plugin's own title normalisation on top of it (folding, articles,
//!   qualifiers such as `(US)` or `(2005)`, numbers);
//! - `index`: the trigram inverted index rebuilt on every catalogue refresh, so a lookup
//!   never scans the whole catalogue;
//! - [`TitleMatcher`]: the scoring (title similarity, year distance, qualifier and number
//!   agreement, margin over the runner-up) and the [`Matcher`] implementation.
//!
//! A wrong auto-map is much worse than a conflict, so the matcher answers `Definite` only for
//! a strong best candidate that clearly leads the runner-up; otherwise it returns its best
//! `Candidates` (one per show, scores capped below the host's 0.90 auto-map threshold) or
//! `NoMatch`.

pub mod config;
mod index;
pub mod normalize;
pub mod trgm;

use std::sync::{Arc, RwLock};

use plexsync_plugin_api::{
    BoxFuture, Candidate, Catalogue, MatchOutcome, Matcher, PluginContext, PluginError, ShowQuery,
};

pub use config::TitleConfig;
use index::{KeyEntry, Query, TitleIndex};

/// The `kind` this plugin is registered under.
pub const KIND: &str = "title";
/// The `method` of every answer.
pub const METHOD: &str = "title_year";
/// Candidate scores stay strictly below the host's auto-map threshold (0.90): only a
/// `Definite` answer may lead to a mapping.
const CANDIDATE_SCORE_CAP: f32 = 0.89;
/// Score of a catalogue name contained in the query: base plus a share of the query covered.
const CONTAINED_BASE: f32 = 0.40;
const CONTAINED_PER_COVER: f32 = 0.39;
/// Score of a name whose initials spell the query: a lead for a person, never a mapping.
const INITIALS_BASE: f32 = 0.45;
/// Highest confidence of a match through an extra key (a main title, a romanised spelling):
/// high enough that a main title in the same year leads the near misses, below anything
/// that could map.
const DERIVED_CAP: f32 = 0.85;
/// Least title similarity an extra key's match needs: these keys are there to find a show
/// whose full name shares too little with the query, not to add more weak neighbours (and a
/// higher bound lets the lookup skip more of the common trigrams).
const DERIVED_MIN_SIM: f32 = 0.6;

/// The `method` of [`Matcher::search`] answers.
pub const SEARCH_METHOD: &str = "title_search";
/// Search: the least title similarity listed (pg_trgm's default `similarity_threshold`).
const SEARCH_MIN_SIM: f32 = 0.3;
/// Search: the least share of the typed text's trigrams a name must hold to be listed, and
/// what a name holding all of them scores (below an identical title, above most near ones).
const SEARCH_MIN_SHARE: f32 = 0.6;
const SEARCH_CONTAINED: f32 = 0.85;
/// Search: an identical normalised name, before the year bonus.
const SEARCH_EXACT: f32 = 0.95;
/// Search: bonus for the year asked for (exact, one year off).
const SEARCH_YEAR_EXACT: f32 = 0.05;
const SEARCH_YEAR_NEAR: f32 = 0.02;

/// Confidence lost per scoring rule (see README.md for the rationale of each).
mod penalty {
    /// Applied to a similarity below 1: keeps it strictly under the 0.90 auto-map level.
    pub const NOT_IDENTICAL_SCALE: f32 = 0.9;
    /// Per year of distance within `year_tolerance`.
    pub const YEAR_PER_TOLERATED: f32 = 0.03;
    /// One year beyond the tolerance.
    pub const YEAR_JUST_OUTSIDE: f32 = 0.15;
    /// Two or more years beyond the tolerance, plus `YEAR_PER_FAR` per further year.
    pub const YEAR_FAR: f32 = 0.30;
    pub const YEAR_PER_FAR: f32 = 0.02;
    pub const YEAR_MAX: f32 = 0.60;
    /// Either side has no year.
    pub const YEAR_UNKNOWN: f32 = 0.06;
    /// The titles carry different numbers or sequel marks (a sequel, another season).
    pub const NUMBERS_DIFFER: f32 = 0.15;
    pub const NUMBERS_DIFFER_CAP: f32 = 0.80;
    /// Both titles name a country edition, and not the same one.
    pub const COUNTRY_CONFLICT: f32 = 0.50;
    /// Only one title names a country edition or a generic suffix: the name is shared by
    /// several productions, so at best a candidate unless an exact year confirms it.
    pub const ONE_SIDED_CAP: f32 = 0.85;
}

/// One scored show.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored {
    show: u32,
    /// What the answer reports; decides the order and the mapping.
    confidence: f32,
    /// Similarity less penalties; decides whether it is worth listing.
    strength: f32,
    /// Raw title similarity (of the normalised names).
    similarity: f32,
    /// Found through an extra key or a query variant: listed, never counted against the
    /// margin of a mapping, never mapped.
    derived: bool,
}

/// The title matcher. Build it with [`TitleMatcher::build`] or [`TitleMatcher::new`]; until
/// the host hands it a catalogue it answers with a transient error.
pub struct TitleMatcher {
    config: TitleConfig,
    index: RwLock<Option<Arc<TitleIndex>>>,
}

impl std::fmt::Debug for TitleMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TitleMatcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TitleMatcher {
    /// Build from the host's context, parsing and validating the plugin's config table.
    pub fn build(ctx: &PluginContext) -> Result<TitleMatcher, PluginError> {
        Ok(TitleMatcher::new(TitleConfig::from_value(&ctx.config)?))
    }

    /// Build from an already validated configuration.
    pub fn new(config: TitleConfig) -> TitleMatcher {
        TitleMatcher {
            config,
            index: RwLock::new(None),
        }
    }

    pub fn config(&self) -> &TitleConfig {
        &self.config
    }

    fn current_index(&self) -> Option<Arc<TitleIndex>> {
        // A poisoned lock still holds a complete index (it is swapped in whole).
        match self.index.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Match synchronously (the lookup is CPU-only and takes microseconds).
    pub fn match_query(&self, query: &ShowQuery) -> Result<MatchOutcome, PluginError> {
        let Some(index) = self.current_index() else {
            return Err(PluginError::transient(
                "title matcher: no catalogue loaded yet",
            ));
        };
        Ok(self.match_in(&index, query))
    }

    fn match_in(&self, index: &TitleIndex, query: &ShowQuery) -> MatchOutcome {
        let q = Query::new(&query.title);
        if q.is_empty() {
            return MatchOutcome::NoMatch;
        }
        let mut query_years = q.norm.years.clone();
        query_years.extend(query.year);

        let mut scored: Vec<Scored> = Vec::new();
        let min_sim = self.config.min_candidate_score;
        let score = |q: &Query, key: &KeyEntry, sim: f32, via_variant: bool| {
            let years = index.show_years(key.show);
            let strength = self.strength(index, q, &query_years, key, years, sim);
            let derived = via_variant || key.derived;
            let mut confidence = Self::confidence_of(strength, sim);
            if derived {
                confidence = (strength * penalty::NOT_IDENTICAL_SCALE).min(DERIVED_CAP);
            }
            Scored {
                show: key.show,
                confidence,
                strength,
                similarity: sim,
                derived,
            }
        };
        index.lookup(&q, min_sim, |key, sim| {
            scored.push(score(&q, key, sim, false))
        });
        // A catalogue name found verbatim inside a longer Plex title ("Air Crash
        // Investigation - Mayday") is worth offering, but never enough for a mapping: its
        // base score stays below 0.80 whatever the share of the title it covers.
        index.contained_in(&q, |key, cover| {
            let years = index.show_years(key.show);
            let base = CONTAINED_BASE + CONTAINED_PER_COVER * cover.min(1.0);
            let strength = self.strength(index, &q, &query_years, key, years, base);
            scored.push(Scored {
                show: key.show,
                confidence: Self::confidence_of(strength, base),
                strength,
                similarity: base,
                derived: false,
            });
        });
        index.initials_of(&q, |key| {
            let years = index.show_years(key.show);
            let strength = self.strength(index, &q, &query_years, key, years, INITIALS_BASE);
            scored.push(Scored {
                show: key.show,
                confidence: Self::confidence_of(strength, INITIALS_BASE),
                strength,
                similarity: INITIALS_BASE,
                derived: false,
            });
        });
        // The mapping rule sees only what the names as spelled say, exactly as without the
        // extra keys: they cannot map (capped below the threshold) and, since they are there
        // to raise recall, must not take a mapping away either (a show's own shortened name
        // would stand as its runner-up).
        let mut spelled: Vec<Scored> = scored.iter().filter(|s| !s.derived).copied().collect();
        rank(&mut spelled);
        if let Some(&best) = spelled.first() {
            let runner_up = spelled.get(1).map_or(0.0, |s| s.confidence);
            if best.confidence >= self.config.definite_threshold
                && best.confidence - runner_up >= self.config.min_margin
            {
                if let Some(show_id) = index.show_id(best.show) {
                    return MatchOutcome::Definite {
                        show_id: show_id.to_string(),
                        confidence: best.confidence.min(1.0),
                        method: METHOD.to_string(),
                    };
                }
            }
        }
        // The query's main title and romanised spellings, against every key: only for a
        // show the names as spelled did not settle, since they cannot change a mapping.
        let derived_min = min_sim.max(DERIVED_MIN_SIM);
        for v in &q.variants {
            index.lookup_words(v, derived_min, |key, sim| {
                scored.push(score(v, key, sim, true))
            });
        }
        if scored.is_empty() {
            return MatchOutcome::NoMatch;
        }
        rank(&mut scored);

        let candidates: Vec<Candidate> = scored
            .iter()
            .filter(|s| s.strength >= self.config.min_candidate_score)
            .take(self.config.max_candidates)
            .filter_map(|s| {
                Some(Candidate {
                    show_id: index.show_id(s.show)?.to_string(),
                    score: s.confidence.clamp(0.0, CANDIDATE_SCORE_CAP),
                    method: METHOD.to_string(),
                })
            })
            .collect();
        if candidates.is_empty() {
            MatchOutcome::NoMatch
        } else {
            MatchOutcome::Candidates { candidates }
        }
    }

    /// A person's search (see [`Matcher::search`]): identical normalised names first, then by
    /// score — the better of the title similarity and the share of the typed text a name
    /// contains — with a bonus for the year asked for (or written in the text, "Lucky Man
    /// (2016)"). One entry per show; ties go to catalogue order.
    pub fn search_titles(&self, text: &str, year: Option<i32>, limit: usize) -> Vec<Candidate> {
        let Some(index) = self.current_index() else {
            return Vec::new();
        };
        let q = Query::new(text);
        if q.is_empty() || limit == 0 {
            return Vec::new();
        }
        let year = year.or_else(|| q.norm.years.first().copied());
        // show → (identical name, best title score)
        let mut best: std::collections::HashMap<u32, (bool, f32)> =
            std::collections::HashMap::new();
        let mut note = |show: u32, exact: bool, score: f32| {
            let e = best.entry(show).or_insert((false, 0.0));
            e.0 |= exact;
            e.1 = e.1.max(score);
        };
        for &k in index.exact(&q) {
            if let Some(key) = index.keys.get(k as usize) {
                note(key.show, true, SEARCH_EXACT);
            }
        }
        index.lookup(&q, SEARCH_MIN_SIM, |key, sim| {
            note(key.show, false, sim.min(SEARCH_EXACT))
        });
        index.containing(&q, SEARCH_MIN_SHARE, |key, share| {
            note(key.show, false, share * SEARCH_CONTAINED)
        });
        let mut ranked: Vec<(u32, bool, f32)> = best
            .into_iter()
            .map(|(show, (exact, score))| {
                let distance = year.and_then(|a| {
                    index
                        .show_years(show)
                        .map(|b| (i64::from(a) - i64::from(b)).unsigned_abs())
                        .min()
                });
                let bonus = match distance {
                    Some(0) => SEARCH_YEAR_EXACT,
                    Some(1) => SEARCH_YEAR_NEAR,
                    _ => 0.0,
                };
                (show, exact, score + bonus)
            })
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)).then(a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(limit)
            .filter_map(|(show, _, score)| {
                Some(Candidate {
                    show_id: index.show_id(show)?.to_string(),
                    score: score.clamp(0.0, 1.0),
                    method: SEARCH_METHOD.to_string(),
                })
            })
            .collect()
    }

    /// How well the query names this catalogue name of a show: the title similarity less the
    /// year, number, sequel-mark and qualifier penalties. The year distance is the closest
    /// of any query year to any of the show's years ([`TitleIndex::show_years`]).
    fn strength(
        &self,
        index: &TitleIndex,
        q: &Query,
        query_years: &[i32],
        key: &KeyEntry,
        show_years: impl Iterator<Item = i32>,
        sim: f32,
    ) -> f32 {
        let mut c = sim;

        let distance = show_years
            .flat_map(|sy| {
                query_years
                    .iter()
                    .map(move |&qy| (i64::from(qy) - i64::from(sy)).unsigned_abs())
            })
            .min();
        let tol = u64::from(self.config.year_tolerance);
        c -= match distance {
            None => penalty::YEAR_UNKNOWN,
            Some(0) => 0.0,
            Some(d) if d <= tol => penalty::YEAR_PER_TOLERATED * d as f32,
            Some(d) if d == tol + 1 => penalty::YEAR_JUST_OUTSIDE,
            Some(d) => (penalty::YEAR_FAR + penalty::YEAR_PER_FAR * (d - tol - 2) as f32)
                .min(penalty::YEAR_MAX),
        };
        if distance.is_none() && !self.config.allow_without_year {
            c = c.min(CANDIDATE_SCORE_CAP);
        }

        if q.norm.numbers[..] != *index.numbers(key)
            || !normalize::marks_agree(&q.norm.marks, index.marks(key))
        {
            c = (c - penalty::NUMBERS_DIFFER).min(penalty::NUMBERS_DIFFER_CAP);
        }

        let exact_year = distance == Some(0);
        match (q.norm.country, index.country(key)) {
            (Some(a), Some(b)) if a != b => c -= penalty::COUNTRY_CONFLICT,
            (Some(_), Some(_)) | (None, None) => {}
            // By the TVDB/TMDB naming convention an unqualified English title is the US
            // edition, so "The Office (US)" may be the catalogue's "The Office" — but the
            // qualifier says the name is shared, so only an exact year confirms it.
            (Some("US"), None) | (None, Some("US")) => {
                if !exact_year {
                    c = c.min(penalty::ONE_SIDED_CAP);
                }
            }
            // Another country's edition against an unqualified title, which by that same
            // convention is usually the US one ("Big Brother (UK)" vs "Big Brother", both
            // 2000): never enough for a mapping.
            (Some(_), None) | (None, Some(_)) => c = c.min(penalty::ONE_SIDED_CAP),
        }
        // "X The Animation" is at times a separate production of "X" a year apart; dropping
        // the suffix is fine for finding it, but only an exact year confirms it.
        if q.norm.generic_suffix != key.generic_suffix && !exact_year {
            c = c.min(penalty::ONE_SIDED_CAP);
        }
        c.max(0.0)
    }

    /// The confidence of a scored name: its strength, except that only a name identical
    /// after normalisation (the whole trigram set, spaced or compact) can reach a mapping —
    /// a near miss ("Getter Robo" / "Getter Robo G", 0.92) is too often a sequel. Scaling
    /// rather than capping keeps near misses ordered among the candidates.
    fn confidence_of(strength: f32, sim: f32) -> f32 {
        if sim >= 1.0 {
            strength
        } else {
            strength * penalty::NOT_IDENTICAL_SCALE
        }
    }
}

/// One entry per show (its best name), best first; ties go to the better raw title
/// similarity, then to catalogue order, so answers are deterministic.
fn rank(scored: &mut Vec<Scored>) {
    scored.sort_by(|a, b| {
        a.show.cmp(&b.show).then(
            b.confidence
                .total_cmp(&a.confidence)
                .then(b.similarity.total_cmp(&a.similarity)),
        )
    });
    scored.dedup_by_key(|s| s.show);
    scored.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(b.similarity.total_cmp(&a.similarity))
            .then(a.show.cmp(&b.show))
    });
}

impl Matcher for TitleMatcher {
    fn kind(&self) -> &str {
        KIND
    }

    fn set_catalogue(&self, catalogue: Arc<Catalogue>) {
        let built = Arc::new(TitleIndex::build(catalogue));
        match self.index.write() {
            Ok(mut g) => *g = Some(built),
            Err(poisoned) => *poisoned.into_inner() = Some(built),
        }
    }

    fn match_show<'a>(
        &'a self,
        query: &'a ShowQuery,
    ) -> BoxFuture<'a, Result<MatchOutcome, PluginError>> {
        let result = self.match_query(query);
        Box::pin(std::future::ready(result))
    }

    fn search(&self, text: &str, year: Option<i32>, limit: usize) -> Vec<Candidate> {
        self.search_titles(text, year, limit)
    }
}

#[cfg(test)]
mod tests;
