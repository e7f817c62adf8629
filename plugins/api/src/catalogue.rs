//! The tracker's catalogue of shows, with the exact-id indices every id-based matcher needs.

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
///
/// The indices are show numbers sorted by the key they look up (binary searched), not maps
/// with keys of their own: no id is held twice, and four `u32` per show is all they cost.
#[derive(Debug, Default)]
pub struct Catalogue {
    pub shows: Vec<CatalogShow>,
    by_id: Vec<u32>,
    by_tmdb: Vec<u32>,
    by_tvdb: Vec<u32>,
    /// Shows with an imdb id, sorted by its [`normalize_imdb`] form (kept in `imdb_keys`).
    by_imdb: Vec<u32>,
    imdb_keys: Vec<Box<str>>,
}

impl Catalogue {
    pub fn new(shows: Vec<CatalogShow>) -> Self {
        let n = u32::try_from(shows.len()).unwrap_or(u32::MAX);
        let all = 0..n;
        // Stable sorts: among equal keys the catalogue's order stays, which is the order the
        // lookups answer in (and, for a repeated id, the last one wins, as a map insert would).
        let mut by_id: Vec<u32> = all.clone().collect();
        by_id.sort_by(|&a, &b| shows[a as usize].id.cmp(&shows[b as usize].id));
        let mut by_tmdb: Vec<u32> = all
            .clone()
            .filter(|&i| shows[i as usize].tmdb_id.is_some())
            .collect();
        by_tmdb.sort_by_key(|&i| shows[i as usize].tmdb_id);
        let mut by_tvdb: Vec<u32> = all
            .clone()
            .filter(|&i| shows[i as usize].tvdb_id.is_some())
            .collect();
        by_tvdb.sort_by_key(|&i| shows[i as usize].tvdb_id);
        let mut imdb: Vec<(Box<str>, u32)> = all
            .filter_map(|i| {
                let id = shows[i as usize].imdb_id.as_deref()?;
                Some((normalize_imdb(id).into_boxed_str(), i))
            })
            .collect();
        imdb.sort_by(|a, b| a.0.cmp(&b.0));
        let (imdb_keys, by_imdb) = imdb.into_iter().unzip();
        Catalogue {
            shows,
            by_id,
            by_tmdb,
            by_tvdb,
            by_imdb,
            imdb_keys,
        }
    }
    pub fn len(&self) -> usize {
        self.shows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.shows.is_empty()
    }
    pub fn get(&self, id: &str) -> Option<&CatalogShow> {
        let end = self
            .by_id
            .partition_point(|&i| self.show(i).is_some_and(|s| s.id.as_str() <= id));
        let last = *self.by_id.get(end.checked_sub(1)?)?;
        self.show(last).filter(|s| s.id == id)
    }
    pub fn by_tmdb(&self, id: u64) -> impl Iterator<Item = &CatalogShow> {
        self.equal_range(&self.by_tmdb, move |s| s.tmdb_id.cmp(&Some(id)))
    }
    pub fn by_tvdb(&self, id: u64) -> impl Iterator<Item = &CatalogShow> {
        self.equal_range(&self.by_tvdb, move |s| s.tvdb_id.cmp(&Some(id)))
    }
    pub fn by_imdb(&self, id: &str) -> impl Iterator<Item = &CatalogShow> {
        let key = normalize_imdb(id);
        let lo = self.imdb_keys.partition_point(|k| **k < *key);
        let hi = self.imdb_keys.partition_point(|k| **k <= *key);
        self.by_imdb
            .get(lo..hi)
            .unwrap_or(&[])
            .iter()
            .filter_map(|&i| self.show(i))
    }
    fn show(&self, i: u32) -> Option<&CatalogShow> {
        self.shows.get(i as usize)
    }
    /// The shows of `index` whose key compares Equal (`cmp` orders a show against the key).
    fn equal_range<'a>(
        &'a self,
        index: &'a [u32],
        cmp: impl Fn(&CatalogShow) -> std::cmp::Ordering,
    ) -> impl Iterator<Item = &'a CatalogShow> {
        use std::cmp::Ordering::{Greater, Less};
        let lo = index.partition_point(|&i| self.show(i).is_some_and(|s| cmp(s) == Less));
        let hi = index.partition_point(|&i| self.show(i).is_some_and(|s| cmp(s) != Greater));
        index
            .get(lo..hi)
            .unwrap_or(&[])
            .iter()
            .filter_map(|&i| self.show(i))
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
        assert!(c.get("ab").is_none() && c.get("zzz").is_none() && c.get("").is_none());
    }

    #[test]
    fn lookups_answer_in_catalogue_order_and_a_repeated_id_is_the_last() {
        let show = |id: &str, title: &str, tmdb: Option<u64>, imdb: Option<&str>| CatalogShow {
            id: id.into(),
            title: title.into(),
            tmdb_id: tmdb,
            imdb_id: imdb.map(str::to_string),
            ..Default::default()
        };
        let c = Catalogue::new(vec![
            show("9", "First", Some(5), Some("tt1")),
            show("2", "Second", Some(7), None),
            show("9", "Again", Some(5), Some(" TT1 ")),
            show("4", "Fourth", Some(5), Some("tt2")),
        ]);
        let titles = |it: &mut dyn Iterator<Item = &CatalogShow>| {
            it.map(|s| s.title.clone()).collect::<Vec<_>>()
        };
        assert_eq!(titles(&mut c.by_tmdb(5)), ["First", "Again", "Fourth"]);
        assert_eq!(titles(&mut c.by_tmdb(7)), ["Second"]);
        assert_eq!(titles(&mut c.by_tmdb(6)), Vec::<String>::new());
        assert_eq!(titles(&mut c.by_imdb("TT1")), ["First", "Again"]);
        assert_eq!(c.get("9").unwrap().title, "Again");
        assert_eq!(c.get("4").unwrap().title, "Fourth");
        assert!(Catalogue::default().get("9").is_none());
    }
}
