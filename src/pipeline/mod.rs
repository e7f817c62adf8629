//! The pipeline after the journal: the resolver (mapping cache → Plex show ids → matcher
//! chain → mapping or conflict), the exporter (outbox batches → tracker, with backoff and a
//! dead letter), the catalogue refresher, and the rematch of open conflicts after a tracker
//! switch. Each is a long-lived task fed by the store; they
//! wake on a `Notify` when new work is committed and otherwise sleep until the next due time.
//!
//! Invariant: a play leaves the pending set only through [`Store::apply_resolution`], in the
//! same transaction that records where it went — a crash at any point leaves it pending.

mod catalogue;
pub mod enrich;
pub mod export;
mod rematch;
mod resolve;

pub use catalogue::catalogue_task;
pub use export::exporter_task;
pub use rematch::rematch_task;
pub(crate) use resolve::{Would, would_resolve};
pub use resolve::{create_recorded, create_show, create_unrecorded, resolver_task};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use plexsync_plugin_api::{Candidate, MatchOutcome, ShowQuery};

/// How many conflict candidates are kept.
const MAX_CANDIDATES: usize = 10;

/// The result of running the chain on one show.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainResult {
    Mapped {
        show_id: String,
        method: String,
        confidence: f32,
    },
    Conflict {
        candidates: Vec<Candidate>,
        reason: String,
    },
    /// Nothing definite and a matcher failed transiently: try again later.
    Retry(String),
}

/// Run the matchers in order. The first definite answer at or above `threshold` wins, unless
/// an earlier matcher already produced candidates that do not include it (ids pointing
/// elsewhere outweigh a later, weaker method). Without one, a matcher that failed transiently
/// means "retry later"; everything else becomes a conflict with the merged candidates.
pub async fn run_chain(
    matchers: &[Arc<dyn plexsync_plugin_api::Matcher>],
    query: &ShowQuery,
    threshold: f32,
) -> ChainResult {
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut transient: Option<String> = None;
    let mut reasons = Vec::new();
    for m in matchers {
        match m.match_show(query).await {
            Ok(MatchOutcome::Definite {
                show_id,
                confidence,
                method,
            }) => {
                let earlier_agree =
                    candidates.is_empty() || candidates.iter().any(|c| c.show_id == show_id);
                if confidence >= threshold && earlier_agree {
                    return ChainResult::Mapped {
                        show_id,
                        method,
                        confidence,
                    };
                }
                reasons.push(if confidence < threshold {
                    format!(
                        "{}: best match {confidence:.2} is below {threshold:.2}",
                        m.kind()
                    )
                } else {
                    format!("{}: its match disagrees with earlier candidates", m.kind())
                });
                candidates.push(Candidate {
                    show_id,
                    score: confidence,
                    method,
                });
            }
            Ok(MatchOutcome::Candidates { candidates: cs }) => {
                if !cs.is_empty() {
                    reasons.push(format!(
                        "{}: {} candidate(s), none proven",
                        m.kind(),
                        cs.len()
                    ));
                }
                candidates.extend(cs);
            }
            Ok(MatchOutcome::NoMatch) => {}
            Err(e) if e.is_transient() => {
                tracing::warn!(matcher = m.kind(), error = %e, "matcher failed transiently");
                transient = Some(format!("{}: {e}", m.kind()));
            }
            Err(e) => {
                tracing::warn!(matcher = m.kind(), error = %e, "matcher failed");
                reasons.push(format!("{}: {e}", m.kind()));
            }
        }
    }
    // A matcher that could not answer (TMDB down) might have proven the show: without a
    // definite answer from the others, ask again later rather than put a question to a
    // person that the matcher may settle on its own.
    if let Some(t) = transient {
        return ChainResult::Retry(t);
    }
    if candidates.is_empty() {
        candidates = fallback_candidates(matchers, query, threshold).await;
        if !candidates.is_empty() {
            reasons.push(format!(
                "{} candidate(s) from a fallback search",
                candidates.len()
            ));
        }
    }
    ChainResult::Conflict {
        candidates: merge_candidates(candidates),
        reason: if reasons.is_empty() {
            "no matcher found this show in the tracker".into()
        } else {
            reasons.join("; ")
        },
    }
}

/// A conflict without any candidate: each matcher's [`Matcher::fallback`] in chain order,
/// as candidates only — an answer reached this way is a lead for a person, so it is kept
/// below the auto-map threshold whatever it claims. A failure here only costs the lead
/// (the show is a conflict either way), so it is logged, not retried.
///
/// [`Matcher::fallback`]: plexsync_plugin_api::Matcher::fallback
async fn fallback_candidates(
    matchers: &[Arc<dyn plexsync_plugin_api::Matcher>],
    query: &ShowQuery,
    threshold: f32,
) -> Vec<Candidate> {
    let below = (threshold - 0.01).max(0.0);
    let mut out = Vec::new();
    for m in matchers {
        match m.fallback(query).await {
            Ok(MatchOutcome::Definite {
                show_id,
                confidence,
                method,
            }) => out.push(Candidate {
                show_id,
                score: confidence.min(below),
                method,
            }),
            Ok(MatchOutcome::Candidates { candidates }) => {
                out.extend(candidates.into_iter().map(|mut c| {
                    c.score = c.score.min(below);
                    c
                }));
            }
            Ok(MatchOutcome::NoMatch) => {}
            Err(e) => {
                tracing::warn!(matcher = m.kind(), error = %e, "fallback search failed");
            }
        }
    }
    out
}

/// One entry per show (its best score), best first.
pub fn merge_candidates(cs: Vec<Candidate>) -> Vec<Candidate> {
    let mut best: HashMap<String, Candidate> = HashMap::new();
    for c in cs {
        match best.get(&c.show_id) {
            Some(b) if b.score >= c.score => {}
            _ => {
                best.insert(c.show_id.clone(), c);
            }
        }
    }
    let mut v: Vec<Candidate> = best.into_values().collect();
    v.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.show_id.cmp(&b.show_id))
    });
    v.truncate(MAX_CANDIDATES);
    v
}

/// Sleep `d`, or for ever when there is nothing to wait for (a task's next retry, if any,
/// raced in a `select!` against its wake-ups).
pub async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let d = exp.min(max);
    let half = d / 2;
    let r = crate::secrets::random_bytes::<4>()
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    half + half.mul_f64(f64::from(r) / f64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexsync_plugin_api::{BoxFuture, Catalogue, Matcher, PluginError};

    struct Fixed(&'static str, Result<MatchOutcome, PluginError>);
    impl Matcher for Fixed {
        fn kind(&self) -> &str {
            self.0
        }
        fn set_catalogue(&self, _: Arc<Catalogue>) {}
        fn match_show<'a>(
            &'a self,
            _: &'a ShowQuery,
        ) -> BoxFuture<'a, Result<MatchOutcome, PluginError>> {
            let r = self.1.clone();
            Box::pin(async move { r })
        }
    }

    fn def(id: &str, c: f32) -> Result<MatchOutcome, PluginError> {
        Ok(MatchOutcome::Definite {
            show_id: id.into(),
            confidence: c,
            method: "x".into(),
        })
    }

    fn cands(ids: &[&str]) -> Result<MatchOutcome, PluginError> {
        Ok(MatchOutcome::Candidates {
            candidates: ids
                .iter()
                .map(|i| Candidate {
                    show_id: i.to_string(),
                    score: 0.5,
                    method: "y".into(),
                })
                .collect(),
        })
    }

    async fn chain(ms: Vec<Fixed>) -> ChainResult {
        let ms: Vec<Arc<dyn Matcher>> = ms
            .into_iter()
            .map(|m| Arc::new(m) as Arc<dyn Matcher>)
            .collect();
        run_chain(&ms, &ShowQuery::default(), 0.9).await
    }

    #[tokio::test]
    async fn chain_semantics() {
        // First definite above the threshold wins.
        assert!(
            matches!(chain(vec![Fixed("a", Ok(MatchOutcome::NoMatch)), Fixed("b", def("7", 0.95))]).await, ChainResult::Mapped { show_id, .. } if show_id == "7")
        );
        // Below the threshold: conflict with it as a candidate.
        assert!(
            matches!(chain(vec![Fixed("a", def("7", 0.8))]).await, ChainResult::Conflict { candidates, .. } if candidates[0].show_id == "7")
        );
        // A later definite that contradicts earlier candidates does not auto-map.
        assert!(
            matches!(chain(vec![Fixed("a", cands(&["1", "2"])), Fixed("b", def("7", 0.99))]).await, ChainResult::Conflict { candidates, .. } if candidates.len() == 3)
        );
        // …but one that agrees does.
        assert!(matches!(
            chain(vec![
                Fixed("a", cands(&["1", "7"])),
                Fixed("b", def("7", 0.99))
            ])
            .await,
            ChainResult::Mapped { .. }
        ));
        // Transient failure with nothing else: retry later, not a conflict.
        assert!(matches!(
            chain(vec![Fixed("a", Err(PluginError::transient("down")))]).await,
            ChainResult::Retry(_)
        ));
        // …and also when others only have candidates: the failed matcher might settle it.
        assert!(matches!(
            chain(vec![
                Fixed("a", Err(PluginError::transient("down"))),
                Fixed("b", cands(&["1", "2"]))
            ])
            .await,
            ChainResult::Retry(_)
        ));
        // A later matcher's proof still maps while the first one is down.
        assert!(matches!(
            chain(vec![
                Fixed("a", Err(PluginError::transient("down"))),
                Fixed("b", def("7", 0.95))
            ])
            .await,
            ChainResult::Mapped { .. }
        ));
        // Nothing at all: an honest conflict.
        assert!(
            matches!(chain(vec![Fixed("a", Ok(MatchOutcome::NoMatch))]).await, ChainResult::Conflict { candidates, .. } if candidates.is_empty())
        );
    }

    /// A matcher whose fallback answers: asked only when the chain found nothing.
    struct Falls(
        Result<MatchOutcome, PluginError>,
        Result<MatchOutcome, PluginError>,
    );
    impl Matcher for Falls {
        fn kind(&self) -> &str {
            "falls"
        }
        fn set_catalogue(&self, _: Arc<Catalogue>) {}
        fn match_show<'a>(
            &'a self,
            _: &'a ShowQuery,
        ) -> BoxFuture<'a, Result<MatchOutcome, PluginError>> {
            let r = self.0.clone();
            Box::pin(async move { r })
        }
        fn fallback<'a>(
            &'a self,
            _: &'a ShowQuery,
        ) -> BoxFuture<'a, Result<MatchOutcome, PluginError>> {
            let r = self.1.clone();
            Box::pin(async move { r })
        }
    }

    #[tokio::test]
    async fn fallback_gives_candidates_only_when_nothing_else_did() {
        let run = |m: Falls| async move {
            run_chain(
                &[Arc::new(m) as Arc<dyn Matcher>],
                &ShowQuery::default(),
                0.9,
            )
            .await
        };
        // Even a confident fallback answer is only a candidate, below the threshold.
        let r = run(Falls(Ok(MatchOutcome::NoMatch), def("7", 0.99))).await;
        assert!(
            matches!(&r, ChainResult::Conflict { candidates, .. } if candidates.len() == 1 && candidates[0].show_id == "7" && candidates[0].score < 0.9),
            "{r:?}"
        );
        // Not asked when the chain already has candidates.
        let r = run(Falls(cands(&["1"]), def("7", 0.5))).await;
        assert!(
            matches!(&r, ChainResult::Conflict { candidates, .. } if candidates.len() == 1 && candidates[0].show_id == "1"),
            "{r:?}"
        );
        // A failing fallback costs only the lead.
        let r = run(Falls(
            Ok(MatchOutcome::NoMatch),
            Err(PluginError::transient("down")),
        ))
        .await;
        assert!(
            matches!(&r, ChainResult::Conflict { candidates, .. } if candidates.is_empty()),
            "{r:?}"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let i = Duration::from_secs(2);
        let m = Duration::from_secs(60);
        for n in 1..30 {
            let d = backoff(n, i, m);
            let full = i.saturating_mul(1 << (n - 1).min(20)).min(m);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?}");
        }
    }

    #[test]
    fn candidates_merge_per_show() {
        let c = |id: &str, s: f32| Candidate {
            show_id: id.into(),
            score: s,
            method: "m".into(),
        };
        let m = merge_candidates(vec![c("a", 0.5), c("b", 0.9), c("a", 0.7)]);
        assert_eq!(
            m.iter()
                .map(|c| (c.show_id.as_str(), c.score))
                .collect::<Vec<_>>(),
            vec![("b", 0.9), ("a", 0.7)]
        );
    }
}
