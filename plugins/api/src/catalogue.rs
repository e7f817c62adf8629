//! The tracker's catalogue of shows, with the exact-id indices every id-based matcher needs.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::normalize_imdb;

/// One show in the tracker, as `GET {tracker}/shows` returns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogShow {
    /// The tracker's id; numbers are accepted and kept as their decimal text.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub year: Option<i32>,
    #[serde(default)]
    pub tmdb_id: Option<u64>,
    #[serde(default)]
    pub tvdb_id: Option<u64>,
    #[serde(default)]
    pub imdb_id: Option<String>,
    #[serde(default)]
    pub original_title: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Looser names from outside sources (TMDB's alternative titles and translations),
    /// merged in by the host from [`crate::Matcher::alt_titles`]; never from the tracker.
    /// They raise candidates only: a match on one never maps a show by itself. Not in the
    /// tracker's answer nor in a catalogue cached by an earlier release, hence the default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alt_titles: Vec<String>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(serde_json::Number),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

/// The catalogue and its id indices. Built once per refresh and shared read-only.
#[derive(Debug, Default)]
pub struct Catalogue {
    pub shows: Vec<CatalogShow>,
    by_id: HashMap<String, usize>,
    by_tmdb: HashMap<u64, Vec<usize>>,
    by_tvdb: HashMap<u64, Vec<usize>>,
    by_imdb: HashMap<String, Vec<usize>>,
}

impl Catalogue {
    pub fn new(shows: Vec<CatalogShow>) -> Self {
        let mut c = Catalogue {
            shows,
            ..Default::default()
        };
        for (i, s) in c.shows.iter().enumerate() {
            c.by_id.insert(s.id.clone(), i);
            if let Some(t) = s.tmdb_id {
                c.by_tmdb.entry(t).or_default().push(i);
            }
            if let Some(t) = s.tvdb_id {
                c.by_tvdb.entry(t).or_default().push(i);
            }
            if let Some(t) = &s.imdb_id {
                c.by_imdb.entry(normalize_imdb(t)).or_default().push(i);
            }
        }
        c
    }
    pub fn len(&self) -> usize {
        self.shows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.shows.is_empty()
    }
    pub fn get(&self, id: &str) -> Option<&CatalogShow> {
        self.by_id.get(id).map(|&i| &self.shows[i])
    }
    pub fn by_tmdb(&self, id: u64) -> impl Iterator<Item = &CatalogShow> {
        self.lookup(self.by_tmdb.get(&id))
    }
    pub fn by_tvdb(&self, id: u64) -> impl Iterator<Item = &CatalogShow> {
        self.lookup(self.by_tvdb.get(&id))
    }
    pub fn by_imdb(&self, id: &str) -> impl Iterator<Item = &CatalogShow> {
        self.lookup(self.by_imdb.get(&normalize_imdb(id)))
    }
    fn lookup<'a>(&'a self, idx: Option<&'a Vec<usize>>) -> impl Iterator<Item = &'a CatalogShow> {
        idx.into_iter().flatten().map(|&i| &self.shows[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_may_be_numbers_or_strings_and_imdb_is_case_folded() {
        let rows: Vec<CatalogShow> = serde_json::from_str(
            r#"[{"id": 3540, "title": "Aria", "year": 2005, "imdb_id": "TT0977907", "tmdb_id": 53787},
                {"id": "abc", "title": "B", "year": null}]"#,
        )
        .unwrap();
        let c = Catalogue::new(rows);
        assert_eq!(c.get("3540").unwrap().title, "Aria");
        assert_eq!(c.by_imdb("tt0977907").next().unwrap().id, "3540");
        assert_eq!(c.by_tmdb(53787).count(), 1);
        assert_eq!(c.by_tvdb(1).count(), 0);
        assert_eq!(c.get("abc").unwrap().year, None);
    }
}
