//! The catalogue's extra names (issue 14): what the matchers' [`Matcher::alt_titles`] gave the
//! tracker's shows (the tmdb plugin: TMDB's alternative titles and translations), held by show
//! id with their bounds, and [`AltTitles::catalogue`], THE one way a catalogue gets them.
//!
//! The store keeps them beside its copy of the catalogue (table `catalogue_names`, see
//! `Store::save_alt_titles`), so every reader builds the same catalogue from the same store:
//! the daemon at start and after a refresh, its background pass (pipeline/enrich.rs) when it
//! publishes, and the CLI offline (admin.rs `open_offline`). `plexsync shows search` and the
//! page's search box therefore answer the same online and offline.
//!
//! [`Matcher::alt_titles`]: plexsync_plugin_api::Matcher::alt_titles

use std::collections::BTreeMap;
use std::sync::Arc;

use plexsync_plugin_api::{CatalogShow, Catalogue};

/// Most extra names a show keeps; later ones are dropped.
pub const MAX_PER_SHOW: usize = 32;

/// Longest extra name kept, in characters; a longer one is dropped whole.
pub const MAX_CHARS: usize = 200;

/// Extra names by tracker show id, each show's in arrival order, bounded ([`MAX_PER_SHOW`],
/// [`MAX_CHARS`]), none empty, none repeated (compared without regard to case or the
/// surrounding blanks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AltTitles {
    by_show: BTreeMap<String, Vec<String>>,
}

impl AltTitles {
    /// Add `name` to show `id`, unless it is empty, too long, the show's own `title`, already
    /// listed, or the show has [`MAX_PER_SHOW`] names. Whether it was added.
    pub fn add(&mut self, id: &str, title: &str, name: &str) -> bool {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_CHARS {
            return false;
        }
        let folded = name.to_lowercase();
        if title.trim().to_lowercase() == folded {
            return false;
        }
        if let Some(list) = self.by_show.get(id) {
            if list.len() >= MAX_PER_SHOW || list.iter().any(|n| n.to_lowercase() == folded) {
                return false;
            }
        }
        self.by_show
            .entry(id.to_string())
            .or_default()
            .push(name.to_string());
        true
    }

    /// Every name of `other` that [`AltTitles::add`] takes, after this one's.
    pub fn extend(&mut self, other: &AltTitles, titles: &Catalogue) {
        for (id, names) in &other.by_show {
            let title = titles.get(id).map_or("", |s| s.title);
            for n in names {
                self.add(id, title, n);
            }
        }
    }

    /// Only the shows `catalogue` holds.
    pub fn retain_in(&mut self, catalogue: &Catalogue) {
        self.by_show.retain(|id, _| catalogue.get(id).is_some());
    }

    /// The names of show `id`.
    pub fn get(&self, id: &str) -> &[String] {
        self.by_show.get(id).map_or(&[], Vec::as_slice)
    }

    /// Shows with names, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.by_show.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Shows with names.
    pub fn shows(&self) -> usize {
        self.by_show.len()
    }

    /// Names in all.
    pub fn names(&self) -> usize {
        self.by_show.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_show.is_empty()
    }

    /// `base` (the tracker's shows as fetched) with these names after each show's own
    /// `alt_titles`: the catalogue the matchers index and searches read. `base` itself when
    /// there are none, so an unnamed catalogue is not held twice. CPU-bound (a catalogue
    /// build): call it off the runtime's workers.
    pub fn catalogue(&self, base: &Arc<Catalogue>) -> Arc<Catalogue> {
        if self.is_empty() {
            return base.clone();
        }
        let shows: Vec<CatalogShow> = base
            .iter()
            .map(|s| {
                let mut s = s.to_show();
                for n in self.get(&s.id) {
                    if !s.alt_titles.contains(n) {
                        s.alt_titles.push(n.clone());
                    }
                }
                s
            })
            .collect();
        Arc::new(Catalogue::new(shows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_cleaned_and_kept_once() {
        let mut a = AltTitles::default();
        assert!(a.add("1", "Spiral", " Engrenages "));
        assert!(!a.add("1", "Spiral", "ENGRENAGES"));
        assert!(!a.add("1", "Spiral", "spiral"));
        assert!(!a.add("1", "Spiral", "  "));
        assert!(!a.add("1", "Spiral", &"x".repeat(MAX_CHARS + 1)));
        assert!(a.add("1", "Spiral", &"é".repeat(MAX_CHARS)));
        for i in 0..2 * MAX_PER_SHOW {
            a.add("1", "Spiral", &format!("n{i}"));
        }
        assert_eq!(a.get("1").len(), MAX_PER_SHOW);
        assert_eq!(a.get("1")[0], "Engrenages");
        assert!(a.get("2").is_empty());
    }

    #[test]
    fn the_catalogue_gets_each_shows_names_after_its_own() {
        let base = Arc::new(Catalogue::new(vec![
            CatalogShow {
                id: "1".into(),
                title: "Spiral".into(),
                alt_titles: vec!["Own".into()],
                ..Default::default()
            },
            CatalogShow {
                id: "2".into(),
                title: "Other".into(),
                ..Default::default()
            },
        ]));
        assert!(Arc::ptr_eq(&AltTitles::default().catalogue(&base), &base));
        let mut a = AltTitles::default();
        a.add("1", "Spiral", "Engrenages");
        a.add("1", "Spiral", "Own");
        a.add("9", "Gone", "Not in the catalogue");
        let c = a.catalogue(&base);
        assert_eq!(
            c.get("1").unwrap().alt_titles.to_vec(),
            ["Own", "Engrenages"]
        );
        assert!(c.get("2").unwrap().alt_titles.is_empty());
        a.retain_in(&base);
        assert_eq!(a.shows(), 1);
    }
}
