//! Offline matching (`plexsync match`): runs the configured matcher chain on JSON-lines
//! queries against a catalogue file, with no daemon and no store (plugins get an in-memory
//! cache), and prints one JSON line per query plus a summary. When queries carry an
//! `expected` answer (an evaluation set), the summary also measures the chain — `expected` and
//! `kind` are read for the summary only, never handed to a matcher.
//!
//! Secrets come from the caller (the CLI gets them sealed from a running daemon's socket, or
//! reads the store read-only). The environment variable [`TMDB_KEY_ENV`] (`PLEXSYNC_TMDB_KEY`),
//! when set and not empty, is handed to plugins as the `tmdb-key` secret instead: an offline
//! run cannot always read them (a daemon without its socket holds the store, or the last writer
//! did not close it cleanly), and a person trying the tmdb matcher on a test set should not
//! have to store a key first.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use plexsync_plugin_api::{CatalogShow, Catalogue, Secret, ShowQuery};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::pipeline::{ChainResult, run_chain};

#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    #[error("{file}:{line}: {message}")]
    Input {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

/// A query as read: what Plex says about a show (plus evaluation fields).
#[derive(Debug, Deserialize)]
struct QueryLine {
    qid: String,
    title: String,
    #[serde(default)]
    year: Option<i32>,
    #[serde(default)]
    guids: Vec<String>,
    /// Evaluation only: the right catalogue id (null = not in the catalogue).
    #[serde(default, deserialize_with = "id_or_null")]
    expected: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

fn id_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

#[derive(Debug, Serialize)]
pub struct CandidateOut {
    pub show_id: String,
    pub score: f32,
}

/// One line of output.
#[derive(Debug, Serialize)]
pub struct MatchLine {
    pub qid: String,
    /// `auto` (mapped without asking), `conflict` (a person decides between candidates) or
    /// `none` (no candidate at all).
    pub decision: &'static str,
    pub show_id: Option<String>,
    pub confidence: Option<f32>,
    pub method: Option<String>,
    pub candidates: Vec<CandidateOut>,
}

/// Totals, and the measurement when the queries had answers.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub queries: usize,
    pub auto: usize,
    pub conflict: usize,
    pub none: usize,
    /// Only when queries carry `expected`:
    pub evaluated: usize,
    pub in_catalogue: usize,
    pub auto_correct: usize,
    pub auto_wrong: usize,
    /// In-catalogue items that became a conflict with candidates, and how many of those
    /// have the right show among the first five.
    pub conflicts_with_answer: usize,
    pub conflicts_answer_in_top5: usize,
    /// In-catalogue items no matcher offered any candidate for (a conflict without choices).
    pub no_candidate_with_answer: usize,
    /// In-catalogue items that went to a person, with or without candidates
    /// (`conflicts_with_answer + no_candidate_with_answer`): the base of the recall figures.
    pub person_with_answer: usize,
    /// Of those, how many have the right show first, and among the first five: a conflict
    /// without candidates counts as a miss, since the person gets no right choice.
    pub person_answer_top1: usize,
    pub person_answer_top5: usize,
    pub per_kind: BTreeMap<String, KindSummary>,
    pub wrong: Vec<String>,
    pub lookup_p50_us: f64,
    pub lookup_p99_us: f64,
    /// Catalogue shows that got more names from the matchers before matching (TMDB
    /// alternative titles and translations), and how many names.
    pub alt_title_shows: usize,
    pub alt_titles: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct KindSummary {
    pub n: usize,
    pub auto_correct: usize,
    pub auto_wrong: usize,
    pub conflict: usize,
    pub none: usize,
}

impl Summary {
    pub fn human(&self) -> String {
        let mut s = format!(
            "{} queries: {} auto-mapped, {} conflicts, {} without candidates; chain time p50 {:.0} µs, p99 {:.0} µs\n",
            self.queries,
            self.auto,
            self.conflict,
            self.none,
            self.lookup_p50_us,
            self.lookup_p99_us
        );
        if self.alt_title_shows > 0 {
            s.push_str(&format!(
                "catalogue: {} shows got {} more names (alternative titles, translations) before matching\n",
                self.alt_title_shows, self.alt_titles
            ));
        }
        if self.evaluated > 0 {
            let pct = |a: usize, b: usize| {
                if b == 0 {
                    0.0
                } else {
                    100.0 * a as f64 / b as f64
                }
            };
            s.push_str(&format!(
                "evaluation: auto-map correct {} of {} in-catalogue items ({:.1}%), wrong auto-maps {}, right show in the top 5 of {} of {} conflicts ({:.1}%), {} in-catalogue item(s) without any candidate\n",
                self.auto_correct,
                self.in_catalogue,
                pct(self.auto_correct, self.in_catalogue),
                self.auto_wrong,
                self.conflicts_answer_in_top5,
                self.conflicts_with_answer,
                pct(self.conflicts_answer_in_top5, self.conflicts_with_answer),
                self.no_candidate_with_answer
            ));
            s.push_str(&format!(
                "recall for a person: right show first in {} of {} in-catalogue conflicts ({:.1}%), in the top 5 in {} of {} ({:.1}%), counting conflicts without candidates\n",
                self.person_answer_top1,
                self.person_with_answer,
                pct(self.person_answer_top1, self.person_with_answer),
                self.person_answer_top5,
                self.person_with_answer,
                pct(self.person_answer_top5, self.person_with_answer),
            ));
            s.push_str(&format!(
                "{:<22} {:>4} {:>8} {:>6} {:>9} {:>5}\n",
                "kind", "n", "correct", "wrong", "conflict", "none"
            ));
            for (k, v) in &self.per_kind {
                s.push_str(&format!(
                    "{:<22} {:>4} {:>8} {:>6} {:>9} {:>5}\n",
                    k, v.n, v.auto_correct, v.auto_wrong, v.conflict, v.none
                ));
            }
            for w in &self.wrong {
                s.push_str(&format!("WRONG: {w}\n"));
            }
        }
        s
    }
}

fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, MatchError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| MatchError::Io(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).map_err(|e| MatchError::Input {
            file: path.display().to_string(),
            line: i + 1,
            message: e.to_string(),
        })?);
    }
    Ok(out)
}

/// Environment variable that hands `plexsync match` the `tmdb-key` secret.
pub const TMDB_KEY_ENV: &str = "PLEXSYNC_TMDB_KEY";

/// The secrets with the `tmdb-key` taken from [`TMDB_KEY_ENV`] when that is set.
fn with_env_overrides(secrets: &HashMap<String, Secret>) -> HashMap<String, Secret> {
    let mut secrets = secrets.clone();
    if let Ok(key) = std::env::var(TMDB_KEY_ENV) {
        if !key.trim().is_empty() {
            secrets.insert("tmdb-key".to_string(), Secret::new(key));
        }
    }
    secrets
}

/// Run the configured chain over `queries` against `catalog`, writing JSON lines to `out`.
pub async fn run_file(
    cfg: &Config,
    secrets: &HashMap<String, Secret>,
    catalog: &Path,
    queries: &Path,
    out: &mut dyn Write,
) -> Result<Summary, MatchError> {
    let shows: Vec<CatalogShow> = read_lines(catalog)?;
    let queries: Vec<QueryLine> = read_lines(queries)?;
    let plugins = crate::registry::build(cfg, &with_env_overrides(secrets), None)?;
    let catalogue = Arc::new(Catalogue::new(shows));
    for m in &plugins.matchers {
        m.set_catalogue(catalogue.clone());
    }
    // The daemon's background enrichment, run to its end before the first query, so the
    // figures are those of a daemon whose catalogue has all its names.
    let known = crate::alt_titles::AltTitles::default();
    let pass = crate::pipeline::enrich::enrich(&plugins.matchers, &catalogue, &known, |names| {
        let c = names.catalogue(&catalogue);
        for m in &plugins.matchers {
            m.set_catalogue(c.clone());
        }
        std::future::ready(true)
    })
    .await;
    if let Some(e) = &pass.error {
        tracing::warn!(error = %e, "plexsync match: the catalogue's extra names are incomplete");
    }
    let threshold = cfg.matching.auto_map_threshold;
    let mut summary = Summary {
        queries: queries.len(),
        alt_title_shows: pass.shows_named,
        alt_titles: pass.names,
        ..Default::default()
    };
    let mut times = Vec::with_capacity(queries.len());
    for q in queries {
        let query = ShowQuery {
            rating_key: None,
            title: q.title.clone(),
            year: q.year,
            guids: q.guids.clone(),
        };
        let t = Instant::now();
        let result = run_chain(&plugins.matchers, &query, threshold).await;
        times.push(t.elapsed());
        let line = match result {
            ChainResult::Mapped {
                show_id,
                method,
                confidence,
            } => MatchLine {
                qid: q.qid.clone(),
                decision: "auto",
                show_id: Some(show_id),
                confidence: Some(confidence),
                method: Some(method),
                candidates: Vec::new(),
            },
            ChainResult::Conflict { candidates, .. } => MatchLine {
                qid: q.qid.clone(),
                decision: if candidates.is_empty() {
                    "none"
                } else {
                    "conflict"
                },
                show_id: None,
                confidence: None,
                method: None,
                candidates: candidates
                    .into_iter()
                    .map(|c| CandidateOut {
                        show_id: c.show_id,
                        score: c.score,
                    })
                    .collect(),
            },
            ChainResult::Retry(_) => MatchLine {
                qid: q.qid.clone(),
                decision: "none",
                show_id: None,
                confidence: None,
                method: None,
                candidates: Vec::new(),
            },
        };
        match line.decision {
            "auto" => summary.auto += 1,
            "conflict" => summary.conflict += 1,
            _ => summary.none += 1,
        }
        if let Some(kind) = &q.kind {
            evaluate(&mut summary, kind, &q, &line);
        }
        let text = serde_json::to_string(&line).map_err(|e| MatchError::Io(e.to_string()))?;
        writeln!(out, "{text}").map_err(|e| MatchError::Io(e.to_string()))?;
    }
    times.sort();
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p).round().max(0.0) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    summary.lookup_p50_us = pct(0.5);
    summary.lookup_p99_us = pct(0.99);
    Ok(summary)
}

fn evaluate(s: &mut Summary, kind: &str, q: &QueryLine, line: &MatchLine) {
    s.evaluated += 1;
    let k = s.per_kind.entry(kind.to_string()).or_default();
    k.n += 1;
    match line.decision {
        "auto" => {
            if line.show_id == q.expected {
                k.auto_correct += 1;
                s.auto_correct += 1;
            } else {
                k.auto_wrong += 1;
                s.auto_wrong += 1;
                s.wrong.push(format!(
                    "{} {:?} ({:?}) → {:?}, expected {:?}",
                    q.qid, q.title, q.year, line.show_id, q.expected
                ));
            }
        }
        "conflict" => k.conflict += 1,
        _ => k.none += 1,
    }
    if let Some(expected) = &q.expected {
        s.in_catalogue += 1;
        if line.decision != "auto" {
            s.person_with_answer += 1;
            let rank = line.candidates.iter().position(|c| &c.show_id == expected);
            if rank == Some(0) {
                s.person_answer_top1 += 1;
            }
            if rank.is_some_and(|r| r < 5) {
                s.person_answer_top5 += 1;
            }
        }
        if line.decision == "none" {
            s.no_candidate_with_answer += 1;
        } else if line.decision == "conflict" {
            s.conflicts_with_answer += 1;
            if line
                .candidates
                .iter()
                .take(5)
                .any(|c| &c.show_id == expected)
            {
                s.conflicts_answer_in_top5 += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(expected: Option<&str>) -> QueryLine {
        QueryLine {
            qid: "q".into(),
            title: "T".into(),
            year: None,
            guids: Vec::new(),
            expected: expected.map(str::to_string),
            kind: Some("k".into()),
        }
    }

    fn line(decision: &'static str, ids: &[&str]) -> MatchLine {
        MatchLine {
            qid: "q".into(),
            decision,
            show_id: None,
            confidence: None,
            method: None,
            candidates: ids
                .iter()
                .map(|id| CandidateOut {
                    show_id: id.to_string(),
                    score: 0.5,
                })
                .collect(),
        }
    }

    #[test]
    fn recall_counts_conflicts_without_candidates_as_misses() {
        let mut s = Summary::default();
        evaluate(
            &mut s,
            "k",
            &query(Some("1")),
            &line("conflict", &["1", "2"]),
        );
        evaluate(
            &mut s,
            "k",
            &query(Some("1")),
            &line("conflict", &["2", "3", "1"]),
        );
        evaluate(
            &mut s,
            "k",
            &query(Some("1")),
            &line("conflict", &["2", "3", "4", "5", "6", "1"]),
        );
        evaluate(&mut s, "k", &query(Some("1")), &line("none", &[]));
        // Not in the catalogue: no part of recall.
        evaluate(&mut s, "k", &query(None), &line("none", &[]));
        assert_eq!(s.person_with_answer, 4);
        assert_eq!(s.person_answer_top1, 1);
        assert_eq!(s.person_answer_top5, 2);
        assert_eq!(
            (s.conflicts_with_answer, s.conflicts_answer_in_top5),
            (3, 2)
        );
        assert_eq!(s.no_candidate_with_answer, 1);
        assert!(
            s.human().contains("in the top 5 in 2 of 4 (50.0%)"),
            "{}",
            s.human()
        );
    }
}
