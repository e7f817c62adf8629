//! Unit tests of the title matcher's decisions on a small hand-made catalogue, of its
//! construction from a plugin context, and of the shipped sample config.

use std::collections::HashMap;
use std::sync::Arc;

use plexsync_plugin_api::{
    CatalogShow, Catalogue, ErrorClass, MatchOutcome, Matcher, MemoryCache, PluginContext,
    ShowQuery,
};

use super::*;

fn show(id: &str, title: &str, year: Option<i32>) -> CatalogShow {
    CatalogShow {
        id: id.to_string(),
        title: title.to_string(),
        year,
        ..Default::default()
    }
}

fn catalogue() -> Arc<Catalogue> {
    let mut aria = show("aria", "Aria", Some(2005));
    aria.original_title = Some("Aria the Animation".into());
    let mut menu = show("emiya", "Today's Menu for the Emiya Family", Some(2018));
    menu.original_title = Some("Emiya-san Chi no Kyou no Gohan".into());
    let mut alias = show("tbbt", "The Big Bang Theory", Some(2007));
    alias.aliases = vec!["TBBT".into()];
    Arc::new(Catalogue::new(vec![
        show("office", "The Office", Some(2005)),
        show("kanon02", "Kanon", Some(2002)),
        show("kanon06", "Kanon", Some(2006)),
        show("kyo12", "Kyousougiga", Some(2012)),
        show("kyo13", "Kyousougiga", Some(2013)),
        show("voice", "The Voice", Some(2011)),
        show("voiceuk", "The Voice UK", Some(2012)),
        show("bbuk", "Big Brother (UK)", Some(2000)),
        show("persona5", "Persona 5 the Animation", Some(2018)),
        show("working", "Working!!", Some(2010)),
        show("naruto", "Naruto Shippuden", Some(2007)),
        show("mayday", "Mayday", Some(2003)),
        show("getter", "Getter Robo", Some(1974)),
        show("wonder", "Wonder Egg Priority", Some(2021)),
        show("noyear", "Yearless Show", None),
        aria,
        menu,
        alias,
    ]))
}

fn matcher_with(config: TitleConfig) -> TitleMatcher {
    let m = TitleMatcher::new(config);
    m.set_catalogue(catalogue());
    m
}

fn ask(m: &TitleMatcher, title: &str, year: Option<i32>) -> MatchOutcome {
    m.match_query(&ShowQuery {
        title: title.to_string(),
        year,
        ..Default::default()
    })
    .unwrap()
}

#[track_caller]
fn assert_definite(out: &MatchOutcome, id: &str) -> f32 {
    match out {
        MatchOutcome::Definite {
            show_id,
            confidence,
            method,
        } => {
            assert_eq!(show_id, id, "{out:?}");
            assert_eq!(method, METHOD);
            assert!(*confidence >= 0.90, "{out:?}");
            *confidence
        }
        other => panic!("expected Definite({id}), got {other:?}"),
    }
}

#[track_caller]
fn assert_candidates(out: &MatchOutcome, first: &str) -> Vec<String> {
    match out {
        MatchOutcome::Candidates { candidates } => {
            assert_eq!(candidates[0].show_id, first, "{out:?}");
            for c in candidates {
                assert!(
                    c.score < 0.90,
                    "candidate scores stay below auto-map: {out:?}"
                );
                assert_eq!(c.method, METHOD);
            }
            candidates.iter().map(|c| c.show_id.clone()).collect()
        }
        other => panic!("expected Candidates led by {first}, got {other:?}"),
    }
}

#[test]
fn exact_title_and_year_maps() {
    let m = matcher_with(TitleConfig::default());
    assert_eq!(
        assert_definite(&ask(&m, "The Office", Some(2005)), "office"),
        1.0
    );
    assert_definite(&ask(&m, "the office", Some(2005)), "office");
    assert_definite(&ask(&m, "Naruto Shippūden", Some(2007)), "naruto");
}

#[test]
fn original_title_and_aliases_are_names_too() {
    let m = matcher_with(TitleConfig::default());
    assert_definite(
        &ask(&m, "Emiya-san Chi no Kyou no Gohan", Some(2018)),
        "emiya",
    );
    assert_definite(&ask(&m, "Aria the Animation", Some(2005)), "aria");
    assert_definite(&ask(&m, "TBBT", Some(2007)), "tbbt");
}

#[test]
fn year_separates_remakes() {
    let m = matcher_with(TitleConfig::default());
    assert_definite(&ask(&m, "Kanon", Some(2002)), "kanon02");
    assert_definite(&ask(&m, "Kanon", Some(2006)), "kanon06");
    assert_definite(&ask(&m, "Kanon (2006)", None), "kanon06");
    // Neither year is close: the better one leads, but no mapping.
    assert_candidates(&ask(&m, "Kanon", Some(2004)), "kanon02");
    // A year apart cannot be told apart from the usual off-by-one.
    let ids = assert_candidates(&ask(&m, "Kyousougiga", Some(2012)), "kyo12");
    assert!(ids.contains(&"kyo13".to_string()));
    // Without a year, two shows of one name are a conflict.
    assert_candidates(&ask(&m, "Kanon", None), "kanon02");
}

#[test]
fn a_year_in_a_yearless_catalogue_name_counts_as_its_year() {
    // The tracker gives no year, but the name says 2005: a query for the 1963 show must not
    // meet a show "of unknown year" and map to it.
    let m = TitleMatcher::new(TitleConfig::default());
    let mut revival = show("who05", "Doctor Who (2005)", None);
    revival.original_title = Some("Doctor Who".into());
    m.set_catalogue(Arc::new(Catalogue::new(vec![
        revival,
        show("other", "Yearless Show", None),
    ])));
    assert_candidates(&ask(&m, "Doctor Who", Some(1963)), "who05");
    assert_definite(&ask(&m, "Doctor Who", Some(2005)), "who05");
    assert_definite(&ask(&m, "Doctor Who", Some(2006)), "who05");
    // A year in an alias counts the same way; a name without one leaves the year unknown.
    let mut aliased = show("who05", "Doctor Who", None);
    aliased.aliases = vec!["Doctor Who 2005".into()];
    m.set_catalogue(Arc::new(Catalogue::new(vec![
        aliased,
        show("other", "Yearless Show", None),
    ])));
    assert_candidates(&ask(&m, "Doctor Who", Some(1963)), "who05");
    assert_definite(&ask(&m, "Yearless Show", Some(1963)), "other");

    // With the 1963 show listed too, its exact year now decides (it was a 1.0 against
    // 0.94 for the year-less revival: a conflict).
    let mut revival = show("who05", "Doctor Who (2005)", None);
    revival.original_title = Some("Doctor Who".into());
    m.set_catalogue(Arc::new(Catalogue::new(vec![
        show("who63", "Doctor Who", Some(1963)),
        revival,
    ])));
    assert_definite(&ask(&m, "Doctor Who", Some(1963)), "who63");
    assert_definite(&ask(&m, "Doctor Who", Some(2005)), "who05");
    // The catalogue's own year wins over one in the name.
    m.set_catalogue(Arc::new(Catalogue::new(vec![show(
        "who05",
        "Doctor Who (2005)",
        Some(1963),
    )])));
    assert_definite(&ask(&m, "Doctor Who", Some(1963)), "who05");
}

#[test]
fn year_distance_is_penalised() {
    let m = matcher_with(TitleConfig::default());
    let c = assert_definite(&ask(&m, "The Office", Some(2006)), "office");
    assert!(c < 1.0);
    // Two years off: a candidate only. Far off: a weak candidate.
    assert_candidates(&ask(&m, "The Office", Some(2007)), "office");
    assert_candidates(&ask(&m, "The Office", Some(2001)), "office");
    // No year at all is weaker evidence, still enough for a unique name.
    let c = assert_definite(&ask(&m, "Wonder Egg Priority", None), "wonder");
    assert!((0.90..1.0).contains(&c));
    let c = assert_definite(&ask(&m, "Yearless Show", Some(2020)), "noyear");
    assert!(c < 1.0);

    let strict = matcher_with(TitleConfig {
        allow_without_year: false,
        ..TitleConfig::default()
    });
    assert_candidates(&ask(&strict, "Wonder Egg Priority", None), "wonder");
    let exact_only = matcher_with(TitleConfig {
        year_tolerance: 0,
        ..TitleConfig::default()
    });
    assert_candidates(&ask(&exact_only, "The Office", Some(2006)), "office");
}

#[test]
fn country_qualifiers() {
    let m = matcher_with(TitleConfig::default());
    // "(US)" on an unqualified title: the usual convention, confirmed by the exact year.
    assert_definite(&ask(&m, "The Office (US)", Some(2005)), "office");
    assert_candidates(&ask(&m, "The Office (US)", Some(2006)), "office");
    // Another country's edition of an unqualified (US) title never maps.
    assert_candidates(&ask(&m, "The Voice (AU)", Some(2011)), "voice");
    assert_definite(&ask(&m, "The Voice (UK)", Some(2012)), "voiceuk");
    assert_definite(&ask(&m, "The Voice UK", Some(2012)), "voiceuk");
    // An unqualified query against another country's edition never maps either.
    assert_candidates(&ask(&m, "Big Brother", Some(2000)), "bbuk");
    assert_definite(&ask(&m, "Big Brother (UK)", Some(2000)), "bbuk");
}

#[test]
fn sequels_and_near_misses_never_map() {
    let m = matcher_with(TitleConfig::default());
    assert_candidates(&ask(&m, "Persona 4: The Animation", Some(2018)), "persona5");
    assert_candidates(&ask(&m, "Working'!!", Some(2010)), "working");
    assert_candidates(&ask(&m, "Getter Robo G", Some(1974)), "getter");
    assert_definite(&ask(&m, "Working!!", Some(2010)), "working");
}

#[test]
fn contained_name_is_offered_as_a_candidate() {
    let m = matcher_with(TitleConfig::default());
    assert_candidates(
        &ask(&m, "Air Crash Investigation - Mayday", Some(2003)),
        "mayday",
    );
}

#[test]
fn max_candidates_and_nothing_found() {
    let m = matcher_with(TitleConfig {
        max_candidates: 1,
        ..TitleConfig::default()
    });
    let ids = assert_candidates(&ask(&m, "Kanon", None), "kanon02");
    assert_eq!(ids.len(), 1);
    assert_eq!(
        ask(&m, "Completely Unrelated Words", Some(2001)),
        MatchOutcome::NoMatch
    );
    assert_eq!(ask(&m, "", Some(2001)), MatchOutcome::NoMatch);
    assert_eq!(ask(&m, "☆ ½ !!", None), MatchOutcome::NoMatch);
    let long = "x".repeat(100_000);
    assert_eq!(ask(&m, &long, None), MatchOutcome::NoMatch);
}

#[test]
fn no_catalogue_yet_is_transient_and_refresh_replaces_it() {
    let m = TitleMatcher::new(TitleConfig::default());
    let q = ShowQuery {
        title: "The Office".into(),
        year: Some(2005),
        ..Default::default()
    };
    let e = m.match_query(&q).unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient);

    m.set_catalogue(catalogue());
    assert_definite(&m.match_query(&q).unwrap(), "office");
    m.set_catalogue(Arc::new(Catalogue::new(vec![show(
        "x",
        "The Office",
        Some(2005),
    )])));
    assert_definite(&m.match_query(&q).unwrap(), "x");
    m.set_catalogue(Arc::new(Catalogue::default()));
    assert_eq!(m.match_query(&q).unwrap(), MatchOutcome::NoMatch);
}

#[test]
fn match_show_future_is_ready_at_once() {
    let m = matcher_with(TitleConfig::default());
    assert_eq!(m.kind(), KIND);
    let q = ShowQuery {
        title: "Kanon".into(),
        year: Some(2002),
        ..Default::default()
    };
    let mut fut = m.match_show(&q);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => assert_definite(&out.unwrap(), "kanon02"),
        std::task::Poll::Pending => panic!("the title matcher never waits"),
    };
}

fn context(config: serde_json::Value) -> PluginContext {
    PluginContext {
        config,
        secrets: HashMap::new(),
        cache: Arc::new(MemoryCache::default()),
        config_dir: std::path::PathBuf::from("."),
    }
}

#[test]
fn build_from_context() {
    let m = TitleMatcher::build(&context(serde_json::json!({"min_margin": 0.2}))).unwrap();
    assert_eq!(m.config().min_margin, 0.2);
    assert_eq!(m.config().max_candidates, 5);
    let e = TitleMatcher::build(&context(serde_json::json!({"treshold": 0.9}))).unwrap_err();
    assert_eq!(e.class, ErrorClass::Config);
    assert!(e.message.contains("treshold"), "{}", e.message);
}

/// The snippet in sample.toml is what README.md tells people to paste: it must parse, and
/// its values must be the defaults it documents.
#[test]
fn sample_config_parses_to_the_defaults() {
    #[derive(serde::Deserialize)]
    struct Root {
        matchers: Vec<toml::Table>,
    }
    let text = include_str!("../sample.toml");
    let root: Root = toml::from_str(text).unwrap();
    assert_eq!(root.matchers.len(), 1);
    let mut table = root.matchers[0].clone();
    assert_eq!(
        table
            .remove("kind")
            .and_then(|k| k.as_str().map(String::from))
            .as_deref(),
        Some(KIND)
    );
    let json = serde_json::to_value(&table).unwrap();
    let m = TitleMatcher::build(&context(json)).unwrap();
    assert_eq!(m.config(), &TitleConfig::default());
}

#[test]
fn initials_offer_candidates_but_never_map() {
    use plexsync_plugin_api::{CatalogShow, Catalogue, MatchOutcome, ShowQuery};
    let shows = vec![
        CatalogShow {
            id: "1".into(),
            title: "The Big Bang Theory".into(),
            year: Some(2007),
            ..Default::default()
        },
        CatalogShow {
            id: "2".into(),
            title: "How I Met Your Mother".into(),
            year: Some(2005),
            ..Default::default()
        },
    ];
    let m = crate::TitleMatcher::new(crate::config::TitleConfig::default());
    plexsync_plugin_api::Matcher::set_catalogue(&m, std::sync::Arc::new(Catalogue::new(shows)));
    for (q, want) in [("TBBT", "1"), ("BBT", "1"), ("HIMYM", "2")] {
        let out = m
            .match_query(&ShowQuery {
                title: q.into(),
                year: None,
                ..Default::default()
            })
            .unwrap();
        match out {
            MatchOutcome::Candidates { candidates } => {
                assert_eq!(candidates[0].show_id, want, "{q}")
            }
            other => panic!("{q}: {other:?}"),
        }
    }
    assert_eq!(
        crate::index::initials("The Big Bang Theory").as_deref(),
        Some("tbbt")
    );
    assert_eq!(crate::index::initials("Lost"), None);
}

fn search(m: &TitleMatcher, text: &str, year: Option<i32>) -> Vec<String> {
    Matcher::search(m, text, year, 5)
        .into_iter()
        .map(|c| c.show_id)
        .collect()
}

#[test]
fn search_ranks_identical_names_first_and_the_year_breaks_ties() {
    let m = matcher_with(TitleConfig::default());
    // Identical normalised names first; the year asked for (or written in the text) orders
    // remakes of one name.
    assert_eq!(
        &search(&m, "kanon", Some(2006))[..2],
        ["kanon06", "kanon02"]
    );
    assert_eq!(
        &search(&m, "Kanon (2002)", None)[..2],
        ["kanon02", "kanon06"]
    );
    assert_eq!(search(&m, "The Office", None)[0], "office");
    // A part of a name finds it ("voice" → both Voice shows, the identical one first).
    assert_eq!(&search(&m, "voice", None)[..2], ["voice", "voiceuk"]);
    assert_eq!(search(&m, "Shippuden", None), ["naruto"]);
    // Aliases and original titles are names too; scores stay within 0..=1, best first.
    assert_eq!(search(&m, "tbbt", None)[0], "tbbt");
    let all = Matcher::search(&m, "Emiya", None, 10);
    assert_eq!(all[0].show_id, "emiya");
    assert!(all.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(all.iter().all(|c| (0.0..=1.0).contains(&c.score)));
    assert!(search(&m, "zzqx", None).is_empty());
    assert!(search(&m, "  ", None).is_empty());
    assert_eq!(Matcher::search(&m, "kanon", None, 1).len(), 1);
}

#[test]
fn search_without_a_catalogue_is_empty_and_leaves_matching_alone() {
    let m = TitleMatcher::new(TitleConfig::default());
    assert!(Matcher::search(&m, "kanon", None, 5).is_empty());
    let m = matcher_with(TitleConfig::default());
    let before = ask(&m, "Kanon", Some(2006));
    let _ = search(&m, "kanon", None);
    assert_eq!(ask(&m, "Kanon", Some(2006)), before);
}

fn recall_catalogue() -> Arc<Catalogue> {
    Arc::new(Catalogue::new(vec![
        show(
            "ibo",
            "Mobile Suit Gundam: Iron-Blooded Orphans",
            Some(2015),
        ),
        show("gundam", "Mobile Suit Gundam", Some(1979)),
        show("kyo", "Kyousougiga", Some(2013)),
        show("mayday", "Mayday", Some(2003)),
        show("kaguya", "Kaguya-sama: Love is War", Some(2019)),
        show("mob2", "Mob Psycho 100 II", Some(2019)),
    ]))
}

fn ids(out: &MatchOutcome) -> Vec<String> {
    match out {
        MatchOutcome::Candidates { candidates } => {
            for c in candidates {
                assert!(c.score < 0.90, "{out:?}");
            }
            candidates.iter().map(|c| c.show_id.clone()).collect()
        }
        other => panic!("expected candidates, got {other:?}"),
    }
}

#[test]
fn main_titles_find_shows_both_ways_but_never_map() {
    let m = TitleMatcher::new(TitleConfig::default());
    m.set_catalogue(recall_catalogue());
    // A short Plex title finds the long catalogue title, same year first.
    let out = ask(&m, "Kaguya-sama", Some(2019));
    assert_eq!(ids(&out).first().map(String::as_str), Some("kaguya"));
    // A long Plex title finds the catalogue's main title.
    let out = ask(&m, "Kyousougiga: Tokyo Gi", Some(2013));
    assert_eq!(ids(&out).first().map(String::as_str), Some("kyo"));
    // The same year decides which main-title match leads.
    let out = ask(&m, "Mobile Suit Gundam", Some(2015));
    assert!(ids(&out).contains(&"ibo".to_string()), "{out:?}");
    // A name as spelled still maps, its own shortened forms do not stand in its way.
    assert_definite(&ask(&m, "Mobile Suit Gundam", Some(1979)), "gundam");
    assert_definite(
        &ask(&m, "Mobile Suit Gundam: Iron-Blooded Orphans", Some(2015)),
        "ibo",
    );
}

#[test]
fn romanised_spellings_and_compatibility_forms_find_the_show() {
    let m = TitleMatcher::new(TitleConfig::default());
    m.set_catalogue(recall_catalogue());
    let out = ask(&m, "Kyosogiga", Some(2013));
    assert_eq!(ids(&out).first().map(String::as_str), Some("kyo"));
    // NFKC is part of the normalisation of both sides, so it can map.
    assert_definite(&ask(&m, "Mob Psycho 100 Ⅱ", Some(2019)), "mob2");
    assert_definite(&ask(&m, "Ｍａｙｄａｙ", Some(2003)), "mayday");
}

/// Alternative titles (TMDB's, merged in by the host) find their show as a candidate only:
/// an exact match on one, in the right year, stays below the auto-map threshold, and it
/// changes nothing for a query the show's own names settle.
#[test]
fn alternative_titles_find_the_show_but_never_map_it() {
    let mut harbour = show("harbour", "Night Harbour", Some(2014));
    harbour.alt_titles = vec![
        "Port de Nuit".into(),
        "Nachthafen".into(),
        "night harbour".into(),
    ];
    let m = TitleMatcher::new(TitleConfig::default());
    m.set_catalogue(Arc::new(Catalogue::new(vec![
        harbour,
        show("office", "The Office", Some(2005)),
    ])));
    for title in ["Port de Nuit", "Nachthafen", "PORT DE NUIT"] {
        match ask(&m, title, Some(2014)) {
            MatchOutcome::Candidates { candidates } => {
                assert_eq!(candidates[0].show_id, "harbour", "{title}");
                assert!(candidates[0].score <= DERIVED_CAP, "{candidates:?}");
            }
            other => panic!("{title}: {other:?}"),
        }
    }
    assert_definite(&ask(&m, "Night Harbour", Some(2014)), "harbour");
    // Without the alternative titles the translation finds nothing.
    let bare = TitleMatcher::new(TitleConfig::default());
    bare.set_catalogue(Arc::new(Catalogue::new(vec![show(
        "harbour",
        "Night Harbour",
        Some(2014),
    )])));
    assert_eq!(ask(&bare, "Nachthafen", Some(2014)), MatchOutcome::NoMatch);
}
