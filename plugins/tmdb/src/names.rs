//! The other names of a TMDB series, for the host's catalogue enrichment
//! ([`plexsync_plugin_api::Matcher::alt_titles`]): what `GET /tv/{id}?append_to_response=
//! alternative_titles,translations` says, reduced to a short, bounded list of names.
//!
//! Read: `name`, `original_name`, `alternative_titles.results[].title` and
//! `translations.translations[].data.name`, in that order (the most telling first, so the
//! bound keeps those). Each name is trimmed, its control characters dropped; empty and
//! over-long names are skipped, and names are de-duplicated without regard to case. Every
//! name field may be missing or null (TMDB omits what it does not know); the series `id` may
//! not, since an answer without it is not a series at all (an error object sent with a 200).

use serde::Deserialize;

/// At most this many names are kept per series: a popular show has 40-odd translations, and
/// the title index stores a key for each name, so the bound caps its growth per show.
pub(crate) const MAX_NAMES: usize = 32;

/// A name longer than this (in characters) is not a title; it is skipped, not cut.
pub(crate) const MAX_NAME_CHARS: usize = 200;

/// The parts of a `/tv/{id}` answer read. TMDB sends much more (overviews, seasons, …).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TvDetails {
    /// Required: every `/tv/{id}` answer carries it. Without it, `{"success":false,…}` would
    /// read as a series without names and be cached as such for `cache_ttl`.
    pub(crate) id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    original_name: Option<String>,
    #[serde(default)]
    alternative_titles: Option<AltTitles>,
    #[serde(default)]
    translations: Option<Translations>,
}

#[derive(Debug, Default, Deserialize)]
struct AltTitles {
    #[serde(default)]
    results: Option<Vec<AltTitle>>,
}

#[derive(Debug, Default, Deserialize)]
struct AltTitle {
    #[serde(default)]
    title: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Translations {
    #[serde(default)]
    translations: Option<Vec<Translation>>,
}

#[derive(Debug, Default, Deserialize)]
struct Translation {
    #[serde(default)]
    data: Option<TranslationData>,
}

#[derive(Debug, Default, Deserialize)]
struct TranslationData {
    #[serde(default)]
    name: Option<String>,
}

impl TvDetails {
    /// Every name of the series, cleaned, de-duplicated and bounded (see the module docs).
    pub(crate) fn names(self) -> Vec<String> {
        let alt = self
            .alternative_titles
            .and_then(|a| a.results)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| a.title);
        let translated = self
            .translations
            .and_then(|t| t.translations)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| t.data.and_then(|d| d.name));
        let all = self
            .name
            .into_iter()
            .chain(self.original_name)
            .chain(alt)
            .chain(translated);
        let mut out: Vec<String> = Vec::new();
        let mut folded: Vec<String> = Vec::new();
        for raw in all {
            if out.len() >= MAX_NAMES {
                break;
            }
            let Some(name) = clean(&raw) else { continue };
            let f = name.to_lowercase();
            if !folded.contains(&f) {
                folded.push(f);
                out.push(name);
            }
        }
        out
    }
}

/// A name trimmed, control characters removed, runs of white space made one space; None when
/// nothing is left or it is longer than [`MAX_NAME_CHARS`].
fn clean(raw: &str) -> Option<String> {
    let mut name = String::with_capacity(raw.len());
    for word in raw
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if !name.is_empty() {
            name.push(' ');
        }
        name.push_str(word);
    }
    (!name.is_empty() && name.chars().count() <= MAX_NAME_CHARS).then_some(name)
}

/// The names of `names` that the show does not already carry (its title, original title or
/// tracker aliases, compared without regard to case and surrounding space).
pub(crate) fn new_to(show: &plexsync_plugin_api::CatalogShow, names: &[String]) -> Vec<String> {
    let own: Vec<String> = std::iter::once(show.title.as_str())
        .chain(show.original_title.as_deref())
        .chain(show.aliases.iter().map(String::as_str))
        .map(|n| n.trim().to_lowercase())
        .collect();
    names
        .iter()
        .filter(|n| !own.contains(&n.trim().to_lowercase()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexsync_plugin_api::CatalogShow;

    fn parse(json: &str) -> Vec<String> {
        serde_json::from_str::<TvDetails>(json).unwrap().names()
    }

    #[test]
    fn reads_every_name_field_in_order_without_duplicates() {
        let names = parse(
            r#"{"id": 7, "name": "Night Harbour", "original_name": "Port de Nuit",
                "overview": "…", "seasons": [{"season_number": 1}],
                "alternative_titles": {"results": [
                    {"iso_3166_1": "DE", "title": "Nachthafen", "type": ""},
                    {"iso_3166_1": "US", "title": "NIGHT HARBOUR", "type": ""},
                    {"iso_3166_1": "XX", "title": null}
                ]},
                "translations": {"translations": [
                    {"iso_639_1": "fr", "data": {"name": "Port de nuit", "overview": "x"}},
                    {"iso_639_1": "ru", "data": {"name": "Ночная гавань"}},
                    {"iso_639_1": "es", "data": {"name": ""}},
                    {"iso_639_1": "it", "data": null},
                    {"iso_639_1": "pt"}
                ]}}"#,
        );
        assert_eq!(
            names,
            [
                "Night Harbour",
                "Port de Nuit",
                "Nachthafen",
                "Ночная гавань"
            ]
        );
    }

    #[test]
    fn missing_or_null_fields_are_nothing() {
        assert!(parse(r#"{"id": 1}"#).is_empty());
        assert!(
            parse(r#"{"id": 1, "name": null, "alternative_titles": null, "translations": {"translations": null}}"#)
                .is_empty()
        );
        assert!(parse(r#"{"id": 1, "alternative_titles": {"results": []}}"#).is_empty());
        // A wrong type is a parse error (the caller treats the answer as malformed), and so
        // is an answer without the series id (TMDB's error object).
        assert!(serde_json::from_str::<TvDetails>(r#"{"id": 1, "name": 5}"#).is_err());
        for not_a_series in ["{}", r#"{"success": false, "status_code": 7}"#] {
            assert!(serde_json::from_str::<TvDetails>(not_a_series).is_err());
        }
    }

    #[test]
    fn names_are_cleaned_and_bounded() {
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        let fits = "y".repeat(MAX_NAME_CHARS);
        let many: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"title": "Name {i}"}}"#))
            .collect();
        let json = format!(
            r#"{{"id": 1, "name": "  Two\n\tLines \u0007 ", "original_name": "{long}",
                "alternative_titles": {{"results": [{{"title": "{fits}"}}, {}]}}}}"#,
            many.join(",")
        );
        let names = parse(&json);
        assert_eq!(names.len(), MAX_NAMES);
        assert_eq!(names[0], "Two Lines");
        assert_eq!(names[1], fits);
        assert_eq!(names[2], "Name 0");
        assert!(names.iter().all(|n| n.chars().count() <= MAX_NAME_CHARS));
    }

    #[test]
    fn a_shows_own_names_are_not_new() {
        let show = CatalogShow {
            id: "1".into(),
            title: "Night Harbour".into(),
            original_title: Some("Port de Nuit".into()),
            aliases: vec!["NH".into()],
            ..Default::default()
        };
        let names: Vec<String> = ["night harbour", "PORT DE NUIT", "nh", "Nachthafen"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(new_to(&show, &names), ["Nachthafen"]);
    }
}
