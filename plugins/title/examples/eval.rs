//! Measures the title matcher on the DEV query set and benchmarks its lookup speed.
//!
//! Reads `shared/matching/catalogue.jsonl` and `dev_queries.jsonl` in place (never copied into
//! the repository). Each query is matched from its `title` and `year` only, with no guids —
//! the "no usable guid" situation the title matcher exists for. `truth`, `evidence` and
//! `notes` are not even deserialised; `kind`, `subkind` and `expected` are used only to
//! score the answers.
//!
//! Two general checks that need no labels can be added; both count wrong auto-maps only:
//! - `--self-check`: every catalogue name, with its year, ±1 and no year, against the full
//!   catalogue (a definite answer must be the show itself);
//! - `--leave-one-out[=STEP]`: every STEP-th show is removed in turn and its names (year, ±1)
//!   are asked for — any definite answer is wrong, as for a show missing from the tracker.
//!   Slow (one index build per show): about two minutes at STEP 1.
//!
//! Run: `cargo run --release -p plexsync-plugin-title --example eval [-- --verbose]
//! [--slow] [--self-check] [--leave-one-out[=STEP]]`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use plexsync_plugin_api::{CatalogShow, Catalogue, MatchOutcome, Matcher, ShowQuery};
use plexsync_plugin_title::{TitleConfig, TitleMatcher};
use serde::Deserialize;

/// The fields of a DEV query the evaluation may look at.
#[derive(Deserialize)]
struct DevQuery {
    qid: String,
    kind: String,
    #[serde(default)]
    subkind: Option<String>,
    title: String,
    year: Option<i32>,
    expected: Option<serde_json::Value>,
}

fn data_dir() -> PathBuf {
    match std::env::var_os("PLEXSYNC_MATCHING_DATA") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/matching"),
    }
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &PathBuf) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Tally {
    n: usize,
    correct: usize,
    wrong: usize,
    conflict: usize,
    conflict_top5: usize,
    conflict_expected: usize,
    none: usize,
    none_expected: usize,
}

/// Poll a future that is ready at once (the title matcher never waits).
fn run_now<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn bench(label: &str, matcher: &TitleMatcher, queries: &[ShowQuery], rounds: usize, verbose: bool) {
    let mut times = Vec::with_capacity(queries.len() * rounds);
    let mut slowest = vec![0.0f64; queries.len()];
    // One untimed pass, so first-use costs (per-thread scratch growth) are not counted.
    for q in queries {
        std::hint::black_box(matcher.match_query(q)).ok();
    }
    for _ in 0..rounds {
        for (i, q) in queries.iter().enumerate() {
            let t = Instant::now();
            let out = matcher.match_query(q);
            let us = t.elapsed().as_secs_f64() * 1e6;
            times.push(us);
            slowest[i] = slowest[i].max(us);
            std::hint::black_box(out).ok();
        }
    }
    if verbose {
        let mut order: Vec<usize> = (0..queries.len()).collect();
        order.sort_by(|&a, &b| slowest[b].total_cmp(&slowest[a]));
        for &i in order.iter().take(5) {
            println!("    slow: {:>8.1} µs {:?}", slowest[i], queries[i].title);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "  {label:<28} lookups={:<6} p50={:>7.1} µs  p99={:>7.1} µs  max={:>7.1} µs",
        times.len(),
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(0.0)
    );
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("eval: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let verbose = std::env::args().any(|a| a == "--verbose");
    let slow = std::env::args().any(|a| a == "--slow");
    let self_check = std::env::args().any(|a| a == "--self-check");
    let loo_step = std::env::args().find_map(|a| match a.as_str() {
        "--leave-one-out" => Some(1),
        _ => a
            .strip_prefix("--leave-one-out=")
            .and_then(|n| n.parse::<usize>().ok())
            .map(|n| n.max(1)),
    });
    let dir = data_dir();
    let shows: Vec<CatalogShow> = read_jsonl(&dir.join("catalogue.jsonl"))?;
    let queries: Vec<DevQuery> = read_jsonl(&dir.join("dev_queries.jsonl"))?;
    let catalogue = Arc::new(Catalogue::new(shows.clone()));

    let matcher = TitleMatcher::new(TitleConfig::default());
    let t = Instant::now();
    matcher.set_catalogue(catalogue.clone());
    let build_ms = t.elapsed().as_secs_f64() * 1e3;

    let mut by_kind: BTreeMap<String, Tally> = BTreeMap::new();
    let mut wrong = Vec::new();
    let mut missed_top5 = Vec::new();
    let mut show_queries = Vec::new();
    for q in &queries {
        let expected = q.expected.as_ref().and_then(|v| match v {
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::String(s) => Some(s.clone()),
            _ => None,
        });
        let sq = ShowQuery {
            rating_key: None,
            title: q.title.clone(),
            year: q.year,
            guids: Vec::new(),
        };
        let outcome = run_now(matcher.match_show(&sq)).map_err(|e| format!("{}: {e}", q.qid))?;
        show_queries.push(sq);
        let tally = by_kind.entry(q.kind.clone()).or_default();
        tally.n += 1;
        let sub = q.subkind.as_deref().unwrap_or("-");
        match &outcome {
            MatchOutcome::Definite {
                show_id,
                confidence,
                ..
            } => {
                if Some(show_id) == expected.as_ref() {
                    tally.correct += 1;
                } else {
                    tally.wrong += 1;
                    let got = catalogue.get(show_id);
                    wrong.push(format!(
                        "  {} [{}/{sub}] {:?} ({:?}) → {} {:?} ({:?}) conf {confidence:.3}, expected {:?}",
                        q.qid,
                        q.kind,
                        q.title,
                        q.year,
                        show_id,
                        got.map(|s| s.title).unwrap_or("?"),
                        got.and_then(|s| s.year),
                        expected
                    ));
                }
            }
            MatchOutcome::Candidates { candidates } => {
                tally.conflict += 1;
                if let Some(exp) = &expected {
                    tally.conflict_expected += 1;
                    if candidates.iter().take(5).any(|c| &c.show_id == exp) {
                        tally.conflict_top5 += 1;
                    } else {
                        missed_top5.push(format!(
                            "  {} [{}/{sub}] {:?} ({:?}): expected {exp} {:?} not in top 5 (best {:?})",
                            q.qid,
                            q.kind,
                            q.title,
                            q.year,
                            catalogue.get(exp).map(|s| s.title),
                            candidates
                                .first()
                                .and_then(|c| catalogue.get(&c.show_id))
                                .map(|s| s.title)
                        ));
                    }
                }
            }
            MatchOutcome::NoMatch => {
                tally.none += 1;
                if let Some(exp) = &expected {
                    tally.none_expected += 1;
                    missed_top5.push(format!(
                        "  {} [{}/{sub}] {:?} ({:?}): expected {exp} {:?}, got no match",
                        q.qid,
                        q.kind,
                        q.title,
                        q.year,
                        catalogue.get(exp).map(|s| s.title)
                    ));
                }
            }
        }
        if verbose {
            println!(
                "{} [{}/{sub}] {:?} ({:?}) → {outcome:?}",
                q.qid, q.kind, q.title, q.year
            );
        }
    }

    println!(
        "title matcher on DEV ({} queries, {} shows; titles and years only, no guids)\n",
        queries.len(),
        catalogue.len()
    );
    println!(
        "  {:<22} {:>4} {:>8} {:>6} {:>9} {:>5} {:>14}",
        "kind", "n", "correct", "wrong", "conflict", "none", "conflict top5"
    );
    let mut total = Tally::default();
    let mut title_only = Tally::default();
    for (kind, t) in &by_kind {
        println!(
            "  {:<22} {:>4} {:>8} {:>6} {:>9} {:>5} {:>9}/{:<4}",
            kind, t.n, t.correct, t.wrong, t.conflict, t.none, t.conflict_top5, t.conflict_expected
        );
        let acc = |a: &mut Tally| {
            a.n += t.n;
            a.correct += t.correct;
            a.wrong += t.wrong;
            a.conflict += t.conflict;
            a.none += t.none;
            a.conflict_top5 += t.conflict_top5;
            a.conflict_expected += t.conflict_expected;
            a.none_expected += t.none_expected;
        };
        acc(&mut total);
        if matches!(
            kind.as_str(),
            "exact_title" | "title_variant" | "year_disambiguation"
        ) {
            acc(&mut title_only);
        }
    }
    for (label, t) in [("title-only kinds", title_only), ("all", total)] {
        println!(
            "  {:<22} {:>4} {:>8} {:>6} {:>9} {:>5} {:>9}/{:<4}",
            label,
            t.n,
            t.correct,
            t.wrong,
            t.conflict,
            t.none,
            t.conflict_top5,
            t.conflict_expected
        );
    }
    let pct = |a: usize, b: usize| {
        if b == 0 {
            100.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    println!(
        "\n  wrong auto-maps: {}   title-only correct auto-maps: {}/{} ({:.1}%)   right show in top 5 of conflicts: {}/{} ({:.1}%)",
        total.wrong,
        title_only.correct,
        title_only.n,
        pct(title_only.correct, title_only.n),
        total.conflict_top5,
        total.conflict_expected,
        pct(total.conflict_top5, total.conflict_expected)
    );
    let unmapped = total.conflict_expected + total.none_expected;
    println!(
        "  in-catalogue items not auto-mapped: {unmapped}; right show among their candidates (top 5): {}/{unmapped} ({:.1}%)",
        total.conflict_top5,
        pct(total.conflict_top5, unmapped)
    );
    println!("\nwrong auto-maps:");
    if wrong.is_empty() {
        println!("  (none)");
    }
    for w in &wrong {
        println!("{w}");
    }
    println!("\nin-catalogue items whose show is not in the top 5:");
    for m in &missed_top5 {
        println!("{m}");
    }

    // Speed: the DEV titles against the real catalogue and a 50,000-show one made by
    // repeating the real rows under distinct ids.
    println!(
        "\nspeed (release build, one thread; index build {build_ms:.1} ms for {} shows)",
        catalogue.len()
    );
    bench("4,498-show catalogue", &matcher, &show_queries, 20, slow);
    // `--alt-titles=N`: the same catalogue with N alternative titles per show (as TMDB's
    // alternative titles and translations would add), made from other shows' titles with
    // their words reversed: Latin-script names sharing the catalogue's vocabulary, a
    // pessimistic stand-in for real ones (many are in other scripts and share no trigram).
    if let Some(n) = std::env::args().find_map(|a| {
        a.strip_prefix("--alt-titles=")
            .and_then(|n| n.parse::<usize>().ok())
    }) {
        let len = shows.len().max(1);
        let with_alt: Vec<CatalogShow> = shows
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut s = s.clone();
                s.alt_titles = (1..=n)
                    .map(|k| {
                        let other = &shows[(i + k * 997) % len].title;
                        other.split(' ').rev().collect::<Vec<_>>().join(" ")
                    })
                    .collect();
                s
            })
            .collect();
        let alt_matcher = TitleMatcher::new(TitleConfig::default());
        let t = Instant::now();
        alt_matcher.set_catalogue(Arc::new(Catalogue::new(with_alt)));
        println!(
            "  ({n} alternative titles per show: index build {:.1} ms)",
            t.elapsed().as_secs_f64() * 1e3
        );
        bench(
            &format!("4,498 shows + {n} alt titles"),
            &alt_matcher,
            &show_queries,
            20,
            slow,
        );
    }
    let mut big = Vec::with_capacity(50_000);
    let mut rep = 0;
    while big.len() < 50_000 {
        for s in &shows {
            if big.len() == 50_000 {
                break;
            }
            let mut s = s.clone();
            s.id = format!("{}-r{rep}", s.id);
            big.push(s);
        }
        rep += 1;
    }
    let big_matcher = TitleMatcher::new(TitleConfig::default());
    let t = Instant::now();
    big_matcher.set_catalogue(Arc::new(Catalogue::new(big)));
    println!(
        "  (50,000-show index build {:.1} ms)",
        t.elapsed().as_secs_f64() * 1e3
    );
    bench(
        "50,000-show catalogue",
        &big_matcher,
        &show_queries,
        5,
        slow,
    );

    if self_check {
        self_check_run(&matcher, &shows, &catalogue);
    }
    if let Some(step) = loo_step {
        leave_one_out(&shows, step);
    }
    Ok(())
}

fn describe(s: &CatalogShow) -> String {
    format!("{:?} / {:?} ({:?})", s.title, s.original_title, s.year)
}

fn names(s: &CatalogShow) -> impl Iterator<Item = &String> {
    std::iter::once(&s.title)
        .chain(s.original_title.as_ref())
        .chain(s.aliases.iter())
}

fn self_check_run(matcher: &TitleMatcher, shows: &[CatalogShow], catalogue: &Catalogue) {
    let (mut right, mut wrong, mut other) = (0, 0, 0);
    println!("\nself-check: each catalogue name with its year, ±1 and no year");
    for s in shows {
        for name in names(s) {
            for year in [s.year, s.year.map(|y| y + 1), s.year.map(|y| y - 1), None] {
                let q = ShowQuery {
                    title: name.clone(),
                    year,
                    ..Default::default()
                };
                match matcher.match_query(&q) {
                    Ok(MatchOutcome::Definite {
                        show_id,
                        confidence,
                        ..
                    }) if show_id != s.id => {
                        wrong += 1;
                        let got = catalogue
                            .get(&show_id)
                            .map(|s| describe(&s.to_show()))
                            .unwrap_or_default();
                        println!(
                            "  {name:?} ({year:?}) of {} → {got} conf {confidence:.3}",
                            describe(s)
                        );
                    }
                    Ok(MatchOutcome::Definite { .. }) => right += 1,
                    _ => other += 1,
                }
            }
        }
    }
    println!("  right {right}  wrong {wrong}  conflict or none {other}");
}

fn leave_one_out(shows: &[CatalogShow], step: usize) {
    let (mut asked, mut wrong) = (0, 0);
    println!(
        "\nleave-one-out (step {step}: each such show removed in turn; its names asked with year, ±1)"
    );
    for i in (0..shows.len()).step_by(step) {
        let mut rest = shows.to_vec();
        let gone = rest.remove(i);
        let catalogue = Catalogue::new(rest);
        let m = TitleMatcher::new(TitleConfig::default());
        let catalogue = Arc::new(catalogue);
        m.set_catalogue(catalogue.clone());
        for name in names(&gone) {
            for dy in [-1, 0, 1] {
                asked += 1;
                let q = ShowQuery {
                    title: name.clone(),
                    year: gone.year.map(|y| y + dy),
                    ..Default::default()
                };
                if let Ok(MatchOutcome::Definite {
                    show_id,
                    confidence,
                    ..
                }) = m.match_query(&q)
                {
                    wrong += 1;
                    let got = catalogue
                        .get(&show_id)
                        .map(|s| describe(&s.to_show()))
                        .unwrap_or_default();
                    println!(
                        "  {name:?} ({:?}) of {} → {got} conf {confidence:.3}",
                        q.year,
                        describe(&gone)
                    );
                }
            }
        }
    }
    println!("  wrong auto-maps {wrong} of {asked} queries for missing shows");
}
