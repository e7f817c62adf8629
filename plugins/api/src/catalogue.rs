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

/// A run of [`Catalogue`]'s text: `start..start + len`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

/// One show, held compactly: its strings are spans of the catalogue's one text, its names
/// a run of the catalogue's name spans; which optional fields are present is in `flags`.
#[derive(Debug, Clone, Copy, Default)]
struct Record {
    id: Span,
    title: Span,
    original_title: Span,
    imdb_id: Span,
    tmdb_id: u64,
    tvdb_id: u64,
    year: i32,
    /// First of this show's names in `Catalogue::names`: `aliases` then `alt_titles`.
    names: u32,
    aliases: u16,
    alt_titles: u16,
    flags: u8,
}

const HAS_YEAR: u8 = 1;
const HAS_TMDB: u8 = 2;
const HAS_TVDB: u8 = 4;
const HAS_IMDB: u8 = 8;
const HAS_ORIGINAL: u8 = 16;

/// The catalogue and its id indices. Built once per refresh and shared read-only.
///
/// It lives as long as the daemon, so it is held in a handful of allocations rather than a
/// few per show: every string in one text, one fixed-size record per show, the aliases'
/// and alternative titles' spans in one array. [`Catalogue::show`] and the lookups answer
/// with a borrowed [`Show`]; [`CatalogShow`] stays the owned form, for building and for the
/// wire. The indices are show numbers sorted by the key they look up (binary searched), not
/// maps with keys of their own: no id is held twice, and four `u32` per show is all they cost.
#[derive(Debug, Default)]
pub struct Catalogue {
    text: Box<str>,
    records: Box<[Record]>,
    names: Box<[Span]>,
    by_id: Box<[u32]>,
    by_tmdb: Box<[u32]>,
    by_tvdb: Box<[u32]>,
    /// Shows with an imdb id, sorted by its [`normalize_imdb`] form (kept in `imdb_keys`,
    /// spans of `text`).
    by_imdb: Box<[u32]>,
    imdb_keys: Box<[Span]>,
}

/// One show of a [`Catalogue`], borrowed from it: the fields of [`CatalogShow`], by
/// reference. Serialises exactly as the [`CatalogShow`] it was built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Show<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub year: Option<i32>,
    pub tmdb_id: Option<u64>,
    pub tvdb_id: Option<u64>,
    pub imdb_id: Option<&'a str>,
    pub original_title: Option<&'a str>,
    pub aliases: Names<'a>,
    /// See [`CatalogShow::alt_titles`].
    pub alt_titles: Names<'a>,
}

/// A show's list of names (aliases or alternative titles), borrowed from its catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    text: &'a str,
    spans: &'a [Span],
}

impl<'a> Names<'a> {
    pub fn len(&self) -> usize {
        self.spans.len()
    }
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let text = self.text;
        self.spans.iter().map(move |&s| slice(text, s))
    }
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

impl PartialEq for Names<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Serialize for Names<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl Show<'_> {
    /// The owned form (for the wire, or to build a changed catalogue from).
    pub fn to_show(&self) -> CatalogShow {
        CatalogShow {
            id: self.id.to_string(),
            title: self.title.to_string(),
            year: self.year,
            tmdb_id: self.tmdb_id,
            tvdb_id: self.tvdb_id,
            imdb_id: self.imdb_id.map(str::to_string),
            original_title: self.original_title.map(str::to_string),
            aliases: self.aliases.to_vec(),
            alt_titles: self.alt_titles.to_vec(),
        }
    }
}

/// The same fields in the same order as [`CatalogShow`]'s derived `Serialize`: a catalogue
/// written from views reads back as the shows it was built from.
impl Serialize for Show<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let n = if self.alt_titles.is_empty() { 8 } else { 9 };
        let mut st = s.serialize_struct("CatalogShow", n)?;
        st.serialize_field("id", self.id)?;
        st.serialize_field("title", self.title)?;
        st.serialize_field("year", &self.year)?;
        st.serialize_field("tmdb_id", &self.tmdb_id)?;
        st.serialize_field("tvdb_id", &self.tvdb_id)?;
        st.serialize_field("imdb_id", &self.imdb_id)?;
        st.serialize_field("original_title", &self.original_title)?;
        st.serialize_field("aliases", &self.aliases)?;
        if self.alt_titles.is_empty() {
            st.skip_field("alt_titles")?;
        } else {
            st.serialize_field("alt_titles", &self.alt_titles)?;
        }
        st.end()
    }
}

/// Every show of a catalogue, in order, serialised as the JSON array of [`CatalogShow`]s it
/// was built from (the store's copy and the exec plugin protocol keep that shape).
pub struct Shows<'a>(&'a Catalogue);

impl Serialize for Shows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

fn slice(text: &str, s: Span) -> &str {
    text.get(s.start as usize..(s.start as usize).saturating_add(s.len as usize))
        .unwrap_or("")
}

/// Builds the one text (sized before it is filled, so it is one exact allocation).
struct Text {
    text: String,
}

impl Text {
    fn push(&mut self, s: &str) -> Span {
        // Offsets are u32: a catalogue's text stays far below 4 GiB (what is past is cut).
        let start = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
        if start == u32::MAX || u32::try_from(s.len()).is_err() {
            return Span { start, len: 0 };
        }
        self.text.push_str(s);
        Span {
            start,
            len: s.len() as u32,
        }
    }
}

impl Catalogue {
    pub fn new(shows: Vec<CatalogShow>) -> Self {
        let n = u32::try_from(shows.len()).unwrap_or(u32::MAX);
        let text_len: usize = shows
            .iter()
            .map(|s| {
                let imdb = s.imdb_id.as_deref().map_or(0, |i| 2 * i.len());
                s.id.len()
                    + s.title.len()
                    + imdb
                    + s.original_title.as_deref().map_or(0, str::len)
                    + s.aliases
                        .iter()
                        .chain(&s.alt_titles)
                        .map(String::len)
                        .sum::<usize>()
            })
            .sum();
        let names_len: usize = shows
            .iter()
            .map(|s| names_kept(&s.aliases) + names_kept(&s.alt_titles))
            .sum();
        let mut text = Text {
            text: String::with_capacity(text_len),
        };
        let mut names: Vec<Span> = Vec::with_capacity(names_len);
        let mut records: Vec<Record> = Vec::with_capacity(shows.len());
        let mut imdb: Vec<(Span, u32)> = Vec::new();
        for (i, s) in shows.iter().enumerate().take(n as usize) {
            let mut r = Record {
                id: text.push(&s.id),
                title: text.push(&s.title),
                names: u32::try_from(names.len()).unwrap_or(u32::MAX),
                ..Record::default()
            };
            if let Some(y) = s.year {
                r.year = y;
                r.flags |= HAS_YEAR;
            }
            if let Some(t) = s.tmdb_id {
                r.tmdb_id = t;
                r.flags |= HAS_TMDB;
            }
            if let Some(t) = s.tvdb_id {
                r.tvdb_id = t;
                r.flags |= HAS_TVDB;
            }
            if let Some(t) = &s.imdb_id {
                r.imdb_id = text.push(t);
                r.flags |= HAS_IMDB;
                imdb.push((text.push(&normalize_imdb(t)), i as u32));
            }
            if let Some(t) = &s.original_title {
                r.original_title = text.push(t);
                r.flags |= HAS_ORIGINAL;
            }
            // At most u16::MAX names of each kind per show (no real show comes close).
            for n in s.aliases.iter().take(usize::from(u16::MAX)) {
                names.push(text.push(n));
            }
            for n in s.alt_titles.iter().take(usize::from(u16::MAX)) {
                names.push(text.push(n));
            }
            r.aliases = names_kept(&s.aliases) as u16;
            r.alt_titles = names_kept(&s.alt_titles) as u16;
            records.push(r);
        }
        // The owned shows are garbage from here on: free them before the indices are built.
        drop(shows);
        let mut c = Catalogue {
            text: text.text.into_boxed_str(),
            records: records.into_boxed_slice(),
            names: names.into_boxed_slice(),
            ..Catalogue::default()
        };
        let all = 0..n;
        // Stable sorts: among equal keys the catalogue's order stays, which is the order the
        // lookups answer in (and, for a repeated id, the last one wins, as a map insert would).
        let mut by_id: Vec<u32> = all.clone().collect();
        by_id.sort_by(|&a, &b| c.id_of(a).cmp(c.id_of(b)));
        let mut by_tmdb: Vec<u32> = all
            .clone()
            .filter(|&i| c.record(i).is_some_and(|r| r.flags & HAS_TMDB != 0))
            .collect();
        by_tmdb.sort_by_key(|&i| c.record(i).map(|r| r.tmdb_id));
        let mut by_tvdb: Vec<u32> = all
            .filter(|&i| c.record(i).is_some_and(|r| r.flags & HAS_TVDB != 0))
            .collect();
        by_tvdb.sort_by_key(|&i| c.record(i).map(|r| r.tvdb_id));
        imdb.sort_by(|a, b| slice(&c.text, a.0).cmp(slice(&c.text, b.0)));
        let (imdb_keys, by_imdb): (Vec<Span>, Vec<u32>) = imdb.into_iter().unzip();
        c.by_id = by_id.into_boxed_slice();
        c.by_tmdb = by_tmdb.into_boxed_slice();
        c.by_tvdb = by_tvdb.into_boxed_slice();
        c.by_imdb = by_imdb.into_boxed_slice();
        c.imdb_keys = imdb_keys.into_boxed_slice();
        c
    }
    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
    /// The show at position `i` (catalogue order; matchers index their own tables by it).
    pub fn show(&self, i: u32) -> Option<Show<'_>> {
        let r = self.record(i)?;
        let text = &*self.text;
        let names = |from: u32, n: u16| Names {
            text,
            spans: self
                .names
                .get(from as usize..from as usize + usize::from(n))
                .unwrap_or(&[]),
        };
        let has = |f: u8| r.flags & f != 0;
        Some(Show {
            id: slice(text, r.id),
            title: slice(text, r.title),
            year: has(HAS_YEAR).then_some(r.year),
            tmdb_id: has(HAS_TMDB).then_some(r.tmdb_id),
            tvdb_id: has(HAS_TVDB).then_some(r.tvdb_id),
            imdb_id: has(HAS_IMDB).then(|| slice(text, r.imdb_id)),
            original_title: has(HAS_ORIGINAL).then(|| slice(text, r.original_title)),
            aliases: names(r.names, r.aliases),
            alt_titles: names(r.names.saturating_add(u32::from(r.aliases)), r.alt_titles),
        })
    }
    /// Every show, in catalogue order.
    pub fn iter(&self) -> impl Iterator<Item = Show<'_>> {
        (0..self.records.len() as u32).filter_map(|i| self.show(i))
    }
    /// Every show, serialisable as the JSON array of the [`CatalogShow`]s it was built from.
    pub fn shows(&self) -> Shows<'_> {
        Shows(self)
    }
    /// The owned shows (a copy: for a caller that rebuilds a changed catalogue).
    pub fn to_shows(&self) -> Vec<CatalogShow> {
        self.iter().map(|s| s.to_show()).collect()
    }
    pub fn get(&self, id: &str) -> Option<Show<'_>> {
        let end = self.by_id.partition_point(|&i| self.id_of(i) <= id);
        let last = *self.by_id.get(end.checked_sub(1)?)?;
        self.show(last).filter(|s| s.id == id)
    }
    pub fn by_tmdb(&self, id: u64) -> impl Iterator<Item = Show<'_>> {
        self.equal_range(&self.by_tmdb, move |r| {
            (r.flags & HAS_TMDB != 0)
                .then_some(r.tmdb_id)
                .cmp(&Some(id))
        })
    }
    pub fn by_tvdb(&self, id: u64) -> impl Iterator<Item = Show<'_>> {
        self.equal_range(&self.by_tvdb, move |r| {
            (r.flags & HAS_TVDB != 0)
                .then_some(r.tvdb_id)
                .cmp(&Some(id))
        })
    }
    pub fn by_imdb(&self, id: &str) -> impl Iterator<Item = Show<'_>> {
        let key = normalize_imdb(id);
        let text = &*self.text;
        let lo = self
            .imdb_keys
            .partition_point(|&k| slice(text, k) < key.as_str());
        let hi = self
            .imdb_keys
            .partition_point(|&k| slice(text, k) <= key.as_str());
        self.by_imdb
            .get(lo..hi)
            .unwrap_or(&[])
            .iter()
            .filter_map(|&i| self.show(i))
    }
    fn record(&self, i: u32) -> Option<&Record> {
        self.records.get(i as usize)
    }
    fn id_of(&self, i: u32) -> &str {
        self.record(i).map_or("", |r| slice(&self.text, r.id))
    }
    /// The shows of `index` whose key compares Equal (`cmp` orders a show against the key).
    fn equal_range<'a>(
        &'a self,
        index: &'a [u32],
        cmp: impl Fn(&Record) -> std::cmp::Ordering,
    ) -> impl Iterator<Item = Show<'a>> {
        use std::cmp::Ordering::{Greater, Less};
        let lo = index.partition_point(|&i| self.record(i).is_some_and(|r| cmp(r) == Less));
        let hi = index.partition_point(|&i| self.record(i).is_some_and(|r| cmp(r) != Greater));
        index
            .get(lo..hi)
            .unwrap_or(&[])
            .iter()
            .filter_map(|&i| self.show(i))
    }
}

/// Two catalogues are equal when they hold the same shows in the same order.
impl PartialEq for Catalogue {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

fn names_kept(names: &[String]) -> usize {
    names.len().min(usize::from(u16::MAX))
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
        let titles = |it: &mut dyn Iterator<Item = Show<'_>>| {
            it.map(|s| s.title.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(titles(&mut c.by_tmdb(5)), ["First", "Again", "Fourth"]);
        assert_eq!(titles(&mut c.by_tmdb(7)), ["Second"]);
        assert_eq!(titles(&mut c.by_tmdb(6)), Vec::<String>::new());
        assert_eq!(titles(&mut c.by_imdb("TT1")), ["First", "Again"]);
        assert_eq!(c.get("9").unwrap().title, "Again");
        assert_eq!(c.get("4").unwrap().title, "Fourth");
        assert!(Catalogue::default().get("9").is_none());
    }

    #[test]
    fn a_catalogue_serialises_as_the_shows_it_was_built_from() {
        let rows = vec![
            CatalogShow {
                id: "1".into(),
                title: "Aria".into(),
                year: Some(2005),
                tmdb_id: Some(0),
                tvdb_id: Some(u64::MAX),
                imdb_id: Some(" TT0977907".into()),
                original_title: Some("ARIA The Animation".into()),
                aliases: vec!["Aria the Natural".into(), String::new()],
                alt_titles: vec!["アリア".into()],
            },
            CatalogShow {
                id: "x".into(),
                title: String::new(),
                ..Default::default()
            },
            CatalogShow {
                id: "3".into(),
                title: "Three".into(),
                year: Some(-1),
                alt_titles: vec!["Drei".into(), "Trois".into()],
                ..Default::default()
            },
        ];
        let c = Catalogue::new(rows.clone());
        assert_eq!(
            serde_json::to_string(&c.shows()).unwrap(),
            serde_json::to_string(&rows).unwrap()
        );
        assert_eq!(c.to_shows(), rows);
        assert_eq!(c.len(), 3);
        let aria = c.get("1").unwrap();
        assert_eq!(
            aria.aliases.iter().collect::<Vec<_>>(),
            ["Aria the Natural", ""]
        );
        assert_eq!(aria.alt_titles.to_vec(), ["アリア"]);
        assert_eq!(c.by_tmdb(0).next().unwrap().id, "1");
        assert_eq!(c.by_tvdb(u64::MAX).count(), 1);
        assert_eq!(c.by_imdb("tt0977907 ").count(), 1);
        assert!(c.show(3).is_none());
        assert_eq!(c, Catalogue::new(rows));
        assert_ne!(c, Catalogue::default());
    }
}
