//! The trigram inverted index over the catalogue's normalised titles.
//!
//! This module owns the lookup structure built on every `set_catalogue`: one *key* per
//! distinct normalised name of a show (title, original_title, aliases), two posting maps
//! from trigram to keys — one over the spaced words and one over the compact (spaceless)
//! form — and a map from whole normalised name to keys.
//!
//! A lookup walks only the posting lists of the query's own trigrams (all but its few most
//! common ones, see [`probe_plan`]), counting shared trigrams per key. Trigram sets are
//! de-duplicated, so that count is exactly pg_trgm's "common": the similarity follows from
//! it and the set sizes, and a key that shares nothing with the query is never touched.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use plexsync_plugin_api::Catalogue;

use crate::normalize::{Country, NormTitle, normalize};
use crate::trgm::{Trgm, trigrams};

/// Multiplicative hashing for `u32` trigram keys: SipHash's DoS resistance buys nothing for
/// keys derived from our own catalogue, and it would dominate the lookup time.
#[derive(Default)]
pub(crate) struct TrgmHasher(u64);

impl Hasher for TrgmHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type TrgmMap<V> = HashMap<u32, V, BuildHasherDefault<TrgmHasher>>;

fn pack(t: Trgm) -> u32 {
    (u32::from(t[0]) << 16) | (u32::from(t[1]) << 8) | u32::from(t[2])
}

/// Trigram → keys, stored flat: the trigrams sorted (binary searched), one start offset each,
/// and one allocation for all posting lists. A hash map of ranges cost twice the memory for
/// no measurable lookup gain at catalogue sizes.
#[derive(Default)]
struct Postings {
    trgms: Vec<u32>,
    /// `starts[i]..starts[i + 1]` is `trgms[i]`'s list in `keys`.
    starts: Vec<u32>,
    keys: KeyLists,
}

/// All posting lists, one after another: key numbers in 16 bits while they fit (up to
/// 65,536 keys, some 30,000 shows), which halves the index's largest part.
enum KeyLists {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Default for KeyLists {
    fn default() -> Self {
        KeyLists::Narrow(Box::default())
    }
}

impl Postings {
    fn build(lists: TrgmMap<Vec<u32>>) -> Self {
        let mut lists: Vec<(u32, Vec<u32>)> = lists.into_iter().collect();
        lists.sort_unstable_by_key(|l| l.0);
        let total: usize = lists.iter().map(|l| l.1.len()).sum();
        let narrow = lists
            .iter()
            .all(|l| l.1.iter().all(|&k| u16::try_from(k).is_ok()));
        let mut p = Postings {
            trgms: Vec::with_capacity(lists.len()),
            starts: Vec::with_capacity(lists.len() + 1),
            keys: KeyLists::default(),
        };
        let mut wide: Vec<u32> = Vec::with_capacity(if narrow { 0 } else { total });
        let mut short: Vec<u16> = Vec::with_capacity(if narrow { total } else { 0 });
        for (t, list) in lists {
            p.trgms.push(t);
            p.starts.push((wide.len() + short.len()) as u32);
            if narrow {
                short.extend(list.iter().map(|&k| k as u16));
            } else {
                wide.extend_from_slice(&list);
            }
        }
        p.starts.push((wide.len() + short.len()) as u32);
        p.keys = if narrow {
            KeyLists::Narrow(short.into_boxed_slice())
        } else {
            KeyLists::Wide(wide.into_boxed_slice())
        };
        p
    }
    /// How many keys hold `t`.
    fn count(&self, t: u32) -> usize {
        let (start, end) = self.range(t);
        end.saturating_sub(start) as usize
    }
    /// Call `f` with every key holding `t`, in key order (one dispatch per list, so the
    /// loop over the list stays tight).
    #[inline]
    fn for_each(&self, t: u32, mut f: impl FnMut(u32)) {
        let (start, end) = self.range(t);
        let r = start as usize..end as usize;
        match &self.keys {
            KeyLists::Narrow(keys) => {
                for &k in keys.get(r).unwrap_or(&[]) {
                    f(u32::from(k));
                }
            }
            KeyLists::Wide(keys) => {
                for &k in keys.get(r).unwrap_or(&[]) {
                    f(k);
                }
            }
        }
    }
    /// `t`'s list as a range of `keys` (empty when no key holds `t`).
    fn range(&self, t: u32) -> (u32, u32) {
        let Ok(i) = self.trgms.binary_search(&t) else {
            return (0, 0);
        };
        match (self.starts.get(i), self.starts.get(i + 1)) {
            (Some(&start), Some(&end)) => (start, end),
            _ => (0, 0),
        }
    }
    /// Whether key `k` holds the trigram whose list is `range`: lists are in key order (keys
    /// are numbered as they are added), so a binary search answers it without a per-key copy
    /// of every trigram set.
    fn holds(&self, range: (u32, u32), k: u32) -> bool {
        let r = range.0 as usize..range.1 as usize;
        match &self.keys {
            KeyLists::Narrow(keys) => u16::try_from(k).is_ok_and(|k| {
                keys.get(r)
                    .is_some_and(|list| list.binary_search(&k).is_ok())
            }),
            KeyLists::Wide(keys) => keys
                .get(r)
                .is_some_and(|list| list.binary_search(&k).is_ok()),
        }
    }
}

/// Name → keys for exact lookups, without a `String` and a `Vec` per name: the distinct names
/// in one text, entries sorted by name (binary searched), each name's keys in the order they
/// were added.
#[derive(Default)]
struct NameMap {
    text: String,
    /// Per entry, its name's `(start, len)` in `text`; sorted by name.
    names: Vec<(u32, u32)>,
    /// Per entry, the key.
    keys: Vec<u32>,
}

impl NameMap {
    /// From `(name, key)` pairs in the order they were added; a pair repeated is kept once.
    fn build(mut pairs: Vec<(String, u32)>) -> Self {
        // Stable: a name's keys stay in the order they were added.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup();
        let mut m = NameMap {
            text: String::new(),
            names: Vec::with_capacity(pairs.len()),
            keys: Vec::with_capacity(pairs.len()),
        };
        let mut last: Option<(u32, u32)> = None;
        for (name, key) in pairs {
            let span = match last {
                Some(span) if m.name(span) == name => span,
                _ => {
                    let span = (m.text.len() as u32, name.len() as u32);
                    m.text.push_str(&name);
                    span
                }
            };
            last = Some(span);
            m.names.push(span);
            m.keys.push(key);
        }
        m.text.shrink_to_fit();
        m
    }
    fn name(&self, (start, len): (u32, u32)) -> &str {
        self.text
            .get(start as usize..(start + len) as usize)
            .unwrap_or("")
    }
    fn get(&self, name: &str) -> &[u32] {
        let lo = self.names.partition_point(|&n| self.name(n) < name);
        let hi = self.names.partition_point(|&n| self.name(n) <= name);
        self.keys.get(lo..hi).unwrap_or(&[])
    }
}

/// One distinct normalised name of a show. Its numbers and marks live in the index's flat
/// arrays ([`TitleIndex::numbers`], [`TitleIndex::marks`]): no allocation per key.
#[derive(Debug, Clone)]
pub(crate) struct KeyEntry {
    /// The show's position in the catalogue.
    pub show: u32,
    numbers: u32,
    marks: u32,
    numbers_len: u16,
    marks_len: u16,
    /// 0 for none, else one more than its place in [`TitleIndex::countries`].
    country: u8,
    pub generic_suffix: bool,
    /// An extra key (main title, romanised spelling) rather than a name as the tracker
    /// spells it: it may find a show, never map one.
    pub derived: bool,
}

/// The index built from one catalogue.
#[derive(Default)]
pub(crate) struct TitleIndex {
    /// The catalogue the index was built from: show ids and years are read from it, not
    /// copied (the index lives exactly as long as that catalogue is current).
    catalogue: Arc<Catalogue>,
    pub keys: Vec<KeyEntry>,
    /// Every key's numbers, one after another (`KeyEntry::numbers` and `numbers_len`).
    numbers: Vec<u32>,
    /// Every key's sequel marks, one after another (`KeyEntry::marks` and `marks_len`).
    marks: String,
    /// The distinct country qualifiers of the keys (a few dozen at most).
    countries: Vec<Country>,
    /// Trigram-set sizes per key, apart from `keys` so the hot loop stays in cache.
    words_len: Vec<u16>,
    compact_len: Vec<u16>,
    words: Postings,
    compact: Postings,
    /// Exact normalised name → keys, for names found verbatim inside a longer query.
    by_words: NameMap,
    /// Word initials of names with 2+ words (with and without a leading article) → keys:
    /// release and fan shorthand is often just that (`TBBT`, `HIMYM`).
    by_initials: NameMap,
    /// (show, year) for shows the catalogue gives no year but whose own names carry one
    /// (`Doctor Who (2005)`), sorted by show. Normalisation lifts such a year out of the
    /// name; without it here a query of another year would meet a year-less show and lose
    /// nothing for it. Few shows are like that, so a side table rather than a field per show.
    name_years: Vec<(u32, i32)>,
}

/// What [`TitleIndex::build`] gathers before the compact maps are made from it.
#[derive(Default)]
struct Building {
    words: TrgmMap<Vec<u32>>,
    compact: TrgmMap<Vec<u32>>,
    by_words: Vec<(String, u32)>,
    by_initials: Vec<(String, u32)>,
}

/// Lower-case first letters of the alphanumeric words of `name`, if it has 2 to 8 words.
pub(crate) fn initials(name: &str) -> Option<String> {
    let letters: String = name
        .split(|c: char| !c.is_alphanumeric())
        .filter_map(|w| w.chars().next())
        .flat_map(char::to_lowercase)
        .collect();
    (2..=8)
        .contains(&letters.chars().count())
        .then_some(letters)
}

/// A normalised query and its trigram sets (sorted).
pub(crate) struct Query {
    pub norm: NormTitle,
    words: Vec<u32>,
    compact: Vec<u32>,
    /// The query's extra forms ([`NormTitle::variants`]: main title, romanised spellings),
    /// looked up too; what they find is a candidate, never a mapping.
    pub variants: Vec<Query>,
}

impl Query {
    pub fn new(title: &str) -> Query {
        let title: String = title.chars().take(MAX_TITLE_CHARS).collect();
        let norm = normalize(&title);
        let variants = norm
            .variants(&title)
            .into_iter()
            .map(Query::from_norm)
            .collect();
        Query {
            variants,
            ..Query::from_norm(norm)
        }
    }

    fn from_norm(norm: NormTitle) -> Query {
        let words = trigrams(&norm.words).into_iter().map(pack).collect();
        let compact = trigrams(&norm.compact).into_iter().map(pack).collect();
        Query {
            norm,
            words,
            compact,
            variants: Vec::new(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

/// Titles (query and catalogue names) are cut to this many characters: no real title comes
/// close, and it keeps trigram counts and set sizes far inside 16 bits.
const MAX_TITLE_CHARS: usize = 512;

/// The compact (spaceless) form exists to forgive spacing and hyphenation, which leaves the
/// rest of the name alike: below this it adds nothing the spaced form does not already say,
/// and walking it for weak matches would double the cost of a lookup.
const COMPACT_MIN_SIM: f32 = 0.5;

/// At most this many of the query's most common trigrams are left unwalked (see
/// [`probe_plan`]). Skipping more saves posting-list walks but weakens the bound that
/// discards candidates before their sets are searched; 4 measured best on the DEV titles at
/// both 4.5k and 50k shows.
const MAX_SKIPPED: usize = 4;

/// Per-thread counters, sized to the largest index seen, so a lookup allocates nothing and
/// only resets the entries it touched. One `u32` per key holds both forms' hit counts
/// (words in the low half, compact in the high half): one memory access per posting.
#[derive(Default)]
struct Scratch {
    hits: Vec<u32>,
    touched: Vec<u32>,
    order: Vec<(usize, u32)>,
    /// The posting lists of the trigrams left unwalked, as ranges (see [`probe_plan`]).
    words_rest: Vec<(u32, u32)>,
    compact_rest: Vec<(u32, u32)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Which of a form's trigrams to walk, and which to check per candidate instead. Returns
/// the walk list in `order` (its first `n` entries, `n` returned) and the posting lists of
/// the rest in `rest`.
///
/// A name reaching similarity `t` shares at least `need = ceil(t * |Q|)` trigrams with the
/// query (similarity is at most common / |Q|), so up to `need - 1` query trigrams can be
/// left unwalked without losing it (prefix filtering). The ones skipped are the most common
/// ("the", "ion", …), whose posting lists cost the most; each surviving candidate is then
/// looked up in those lists (binary search).
fn probe_plan(
    query: &[u32],
    postings: &Postings,
    min_sim: f32,
    order: &mut Vec<(usize, u32)>,
    rest: &mut Vec<(u32, u32)>,
) -> usize {
    order.clear();
    rest.clear();
    order.extend(query.iter().map(|&t| (postings.count(t), t)));
    order.sort_unstable();
    let q = query.len();
    let need = ((min_sim.clamp(0.0, 1.0) * q as f32).ceil() as usize).max(1);
    let walk = q - need.saturating_sub(1).min(MAX_SKIPPED).min(q);
    rest.extend(order.iter().skip(walk).map(|&(_, t)| postings.range(t)));
    walk
}

/// One show's keys in the order they are indexed: `(name, normalised, derived)`. Its own
/// `names` (title, original title, aliases) once per normalised identity, then extra keys
/// (`derived`, name ""): the variants of those names, then the outside sources' `alt_titles`,
/// each only for words none of the keys before it already spell.
///
/// What was seen is kept in hash sets: a show with thousands of aliases (a tracker's data
/// can hold anything) would make the linear scans this replaced quadratic.
fn show_keys<'a>(
    names: impl Iterator<Item = &'a str>,
    alt_titles: impl Iterator<Item = &'a str>,
) -> Vec<(String, NormTitle, bool)> {
    let mut keys = Vec::new();
    let mut seen: HashSet<(String, Option<Country>, String, bool)> = HashSet::new();
    let mut seen_words: HashSet<String> = HashSet::new();
    let mut extra: Vec<NormTitle> = Vec::new();
    for name in names {
        let name: String = name.chars().take(MAX_TITLE_CHARS).collect();
        let norm = normalize(&name);
        if norm.words.is_empty() {
            continue;
        }
        let identity = (
            norm.words.clone(),
            norm.country,
            norm.marks.clone(),
            norm.generic_suffix,
        );
        if !seen.insert(identity) {
            continue;
        }
        seen_words.insert(norm.words.clone());
        extra.extend(norm.variants(&name));
        keys.push((name, norm, false));
    }
    // Names from outside sources (TMDB alternative titles, translations) are extra keys too:
    // they find the show, never map it.
    extra.extend(
        alt_titles
            .map(|n| normalize(&n.chars().take(MAX_TITLE_CHARS).collect::<String>()))
            .filter(|v| !v.words.is_empty()),
    );
    for v in extra {
        if !seen_words.insert(v.words.clone()) {
            continue;
        }
        keys.push((String::new(), v, true));
    }
    keys
}

impl TitleIndex {
    pub fn build(catalogue: Arc<Catalogue>) -> TitleIndex {
        let mut idx = TitleIndex::default();
        let mut b = Building::default();
        for (show_no, show) in catalogue.iter().enumerate() {
            let names = || {
                std::iter::once(show.title)
                    .chain(show.original_title)
                    .chain(show.aliases.iter())
            };
            for (name, norm, derived) in show_keys(names(), show.alt_titles.iter()) {
                idx.add_key(show_no as u32, &name, norm, derived, &mut b);
            }
            if show.year.is_none() {
                // The show's own names only (TMDB's names are looser). Normalised again rather
                // than taken from the keys: `show_keys` keeps one key per normalised identity,
                // which leaves the year out, so "Doctor Who" before "Doctor Who (2005)" would
                // hide it. Only year-less shows pay for this.
                let mut years: Vec<i32> = names()
                    .flat_map(|n| {
                        normalize(&n.chars().take(MAX_TITLE_CHARS).collect::<String>()).years
                    })
                    .collect();
                years.sort_unstable();
                years.dedup();
                idx.name_years
                    .extend(years.into_iter().map(|y| (show_no as u32, y)));
            }
        }
        idx.words = Postings::build(b.words);
        idx.compact = Postings::build(b.compact);
        idx.by_words = NameMap::build(b.by_words);
        idx.by_initials = NameMap::build(b.by_initials);
        // Built by pushing: give back the growth slack, the index lives until the next refresh.
        idx.keys.shrink_to_fit();
        idx.numbers.shrink_to_fit();
        idx.marks.shrink_to_fit();
        idx.words_len.shrink_to_fit();
        idx.compact_len.shrink_to_fit();
        idx.name_years.shrink_to_fit();
        idx.catalogue = catalogue;
        idx
    }

    /// The catalogue id of show `show` (a [`KeyEntry::show`]).
    pub fn show_id(&self, show: u32) -> Option<&str> {
        self.catalogue.show(show).map(|s| s.id)
    }

    /// The years of show `show`: the catalogue's, or when it has none, the years written in
    /// the show's own names (`Doctor Who (2005)`); empty when neither says.
    pub fn show_years(&self, show: u32) -> impl Iterator<Item = i32> + '_ {
        let year = self.catalogue.show(show).and_then(|s| s.year);
        let named: &[(u32, i32)] = if year.is_some() {
            &[]
        } else {
            let lo = self.name_years.partition_point(|&(s, _)| s < show);
            let hi = self.name_years.partition_point(|&(s, _)| s <= show);
            self.name_years.get(lo..hi).unwrap_or(&[])
        };
        year.into_iter().chain(named.iter().map(|&(_, y)| y))
    }

    /// A key's numbers (digit runs and roman numerals, sorted).
    pub fn numbers(&self, key: &KeyEntry) -> &[u32] {
        let start = key.numbers as usize;
        self.numbers
            .get(start..start + usize::from(key.numbers_len))
            .unwrap_or(&[])
    }

    /// A key's country qualifier.
    pub fn country(&self, key: &KeyEntry) -> Option<Country> {
        let i = usize::from(key.country.checked_sub(1)?);
        self.countries.get(i).copied()
    }

    /// A key's sequel marks.
    pub fn marks(&self, key: &KeyEntry) -> &str {
        let start = key.marks as usize;
        self.marks
            .get(start..start + usize::from(key.marks_len))
            .unwrap_or("")
    }

    /// Add one key of show `show_no`: its trigram sets, postings and (for a name as the
    /// tracker spells it) the whole-name and initials maps.
    fn add_key(
        &mut self,
        show_no: u32,
        name: &str,
        norm: NormTitle,
        derived: bool,
        b: &mut Building,
    ) {
        let key_no = self.keys.len() as u32;
        let w: Vec<u32> = trigrams(&norm.words).into_iter().map(pack).collect();
        let c: Vec<u32> = trigrams(&norm.compact).into_iter().map(pack).collect();
        for &t in &w {
            b.words.entry(t).or_default().push(key_no);
        }
        for &t in &c {
            b.compact.entry(t).or_default().push(key_no);
        }
        self.words_len
            .push(u16::try_from(w.len()).unwrap_or(u16::MAX));
        self.compact_len
            .push(u16::try_from(c.len()).unwrap_or(u16::MAX));
        // Extra keys stay out of the whole-name and initials maps: a shortened or respelled
        // name found inside a query, or spelled by its initials, says too little.
        if !derived {
            b.by_words.push((norm.words.clone(), key_no));
            for form in [initials(name), initials(&norm.words)]
                .into_iter()
                .flatten()
            {
                b.by_initials.push((form, key_no));
            }
        }
        // A title is cut to MAX_TITLE_CHARS, so its numbers and marks fit 16-bit lengths.
        let numbers = &norm.numbers[..norm.numbers.len().min(usize::from(u16::MAX))];
        let marks = if norm.marks.len() <= usize::from(u16::MAX) {
            norm.marks.as_str()
        } else {
            ""
        };
        let country = match norm.country {
            None => 0,
            Some(c) => match self.countries.iter().position(|&k| k == c) {
                Some(i) => i + 1,
                None => {
                    self.countries.push(c);
                    self.countries.len()
                }
            },
        };
        // The qualifiers come from the normaliser's fixed table, far fewer than 255.
        let country = u8::try_from(country).unwrap_or(0);
        self.keys.push(KeyEntry {
            show: show_no,
            numbers: self.numbers.len() as u32,
            marks: self.marks.len() as u32,
            numbers_len: numbers.len() as u16,
            marks_len: marks.len() as u16,
            country,
            generic_suffix: norm.generic_suffix,
            derived,
        });
        self.numbers.extend_from_slice(numbers);
        self.marks.push_str(marks);
    }

    /// Keys whose whole normalised name occurs as a run of whole words inside the query
    /// (`Mayday` in `Air Crash Investigation Mayday`), with the share of the query's
    /// characters that run covers. Names shorter than 4 characters are too common to mean
    /// anything.
    pub fn contained_in(&self, q: &Query, mut f: impl FnMut(&KeyEntry, f32)) {
        let words: Vec<&str> = q.norm.words.split(' ').filter(|w| !w.is_empty()).collect();
        let total = q.norm.words.len().max(1) as f32;
        let mut buf = String::new();
        for i in 0..words.len() {
            buf.clear();
            for (j, w) in words.iter().enumerate().skip(i) {
                if j > i {
                    buf.push(' ');
                }
                buf.push_str(w);
                if buf.len() < 4 || (i == 0 && j + 1 == words.len()) {
                    continue;
                }
                for &k in self.by_words.get(buf.as_str()) {
                    if let Some(key) = self.keys.get(k as usize) {
                        f(key, buf.len() as f32 / total);
                    }
                }
            }
        }
    }

    /// Keys whose whole normalised name equals the query's.
    pub fn exact(&self, q: &Query) -> &[u32] {
        self.by_words.get(q.norm.words.as_str())
    }

    /// Call `f(key, share)` for every key holding at least `min_share` of the query's
    /// (spaced) trigrams: how much of what a person typed the name contains, whatever else
    /// it holds ("lucky" in "Lucky Man"). Walks every posting list of the query: meant for
    /// a person's search, not for the matcher's hot path.
    pub fn containing(&self, q: &Query, min_share: f32, mut f: impl FnMut(&KeyEntry, f32)) {
        if q.words.is_empty() {
            return;
        }
        let mut hits: HashMap<u32, u32> = HashMap::new();
        for &t in &q.words {
            self.words.for_each(t, |k| *hits.entry(k).or_insert(0) += 1);
        }
        let total = q.words.len() as f32;
        for (k, n) in hits {
            let share = n as f32 / total;
            if share >= min_share {
                if let Some(key) = self.keys.get(k as usize) {
                    f(key, share);
                }
            }
        }
    }

    /// Call `f(key)` for every name whose word initials spell the query, when the query is a
    /// single short word (`TBBT` → The Big Bang Theory).
    pub fn initials_of(&self, q: &Query, mut f: impl FnMut(&KeyEntry)) {
        let w = q.norm.words.as_str();
        if w.contains(' ') || !(2..=8).contains(&w.chars().count()) {
            return;
        }
        for &k in self.by_initials.get(w) {
            if let Some(key) = self.keys.get(k as usize) {
                f(key);
            }
        }
    }

    /// Call `f(key, similarity)` for every key whose similarity to the query (the better of
    /// the spaced and the compact form) is at least `min_sim`.
    pub fn lookup(&self, q: &Query, min_sim: f32, f: impl FnMut(&KeyEntry, f32)) {
        self.lookup_forms(q, min_sim, true, f);
    }

    /// [`TitleIndex::lookup`] on the spaced form alone: for a query's extra forms, whose
    /// matches are near-identical names, the compact form's spacing forgiveness is not worth
    /// a second walk.
    pub fn lookup_words(&self, q: &Query, min_sim: f32, f: impl FnMut(&KeyEntry, f32)) {
        self.lookup_forms(q, min_sim, false, f);
    }

    fn lookup_forms(
        &self,
        q: &Query,
        min_sim: f32,
        compact: bool,
        mut f: impl FnMut(&KeyEntry, f32),
    ) {
        SCRATCH.with(|cell| {
            let Ok(mut guard) = cell.try_borrow_mut() else {
                // Re-entered from `f` on this thread: fall back to a private scratch.
                let mut own = Scratch::default();
                self.lookup_with(&mut own, q, min_sim, compact, &mut f);
                return;
            };
            self.lookup_with(&mut guard, q, min_sim, compact, &mut f);
        });
    }

    fn lookup_with(
        &self,
        s: &mut Scratch,
        q: &Query,
        min_sim: f32,
        with_compact: bool,
        f: &mut impl FnMut(&KeyEntry, f32),
    ) {
        let n = self.keys.len();
        if s.hits.len() < n {
            s.hits.resize(n, 0);
        }
        s.touched.clear();

        let walk = probe_plan(
            &q.words,
            &self.words,
            min_sim,
            &mut s.order,
            &mut s.words_rest,
        );
        for &(_, t) in s.order.iter().take(walk) {
            self.words.for_each(t, |k| {
                if let Some(h) = s.hits.get_mut(k as usize) {
                    if *h == 0 {
                        s.touched.push(k);
                    }
                    // A set holds a trigram once, so a key's count never exceeds |Q|, which
                    // the title length cap keeps far below 2^16.
                    *h += 1;
                }
            });
        }
        let compact_min = min_sim.max(COMPACT_MIN_SIM);
        let empty: [u32; 0] = [];
        let q_compact: &[u32] = if with_compact { &q.compact } else { &empty };
        let walk = probe_plan(
            q_compact,
            &self.compact,
            compact_min,
            &mut s.order,
            &mut s.compact_rest,
        );
        for &(_, t) in s.order.iter().take(walk) {
            self.compact.for_each(t, |k| {
                if let Some(h) = s.hits.get_mut(k as usize) {
                    if *h == 0 {
                        s.touched.push(k);
                    }
                    *h += 1 << 16;
                }
            });
        }

        let (qw, qc) = (q.words.len(), q_compact.len());
        for &k in &s.touched {
            let ku = k as usize;
            let Some(h) = s.hits.get_mut(ku) else {
                continue;
            };
            let (hw, hc) = ((*h & 0xFFFF) as usize, (*h >> 16) as usize);
            *h = 0;
            let (Some(&kw), Some(&kc)) = (self.words_len.get(ku), self.compact_len.get(ku)) else {
                continue;
            };
            let sw = form_similarity(hw, qw, &s.words_rest, min_sim, kw, |r| {
                self.words.holds(r, k)
            });
            let sc = form_similarity(hc, qc, &s.compact_rest, compact_min, kc, |r| {
                self.compact.holds(r, k)
            });
            let sim = sw.max(sc);
            if sim >= min_sim {
                if let Some(key) = self.keys.get(ku) {
                    f(key, sim);
                }
            }
        }
        s.touched.clear();
    }
}

/// Exact similarity of one key in one form, from the hits of the walked trigrams plus a
/// lookup of the key in the skipped ones' posting lists (`holds`); 0 when it cannot reach
/// `min_sim`.
fn form_similarity(
    hits: usize,
    q: usize,
    rest: &[(u32, u32)],
    min_sim: f32,
    key_len: u16,
    holds: impl Fn((u32, u32)) -> bool,
) -> f32 {
    if hits == 0 {
        return 0.0;
    }
    let k = usize::from(key_len);
    if rest.is_empty() {
        return crate::trgm::similarity_from_counts(hits, q, k);
    }
    // Upper bound before any lookup: every skipped trigram shared.
    let best = crate::trgm::similarity_from_counts((hits + rest.len()).min(k).min(q), q, k);
    if best < min_sim {
        return 0.0;
    }
    let common = hits + rest.iter().filter(|&&r| holds(r)).count();
    crate::trgm::similarity_from_counts(common, q, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The linear-scan selection `show_keys` replaced, kept as the reference for its output.
    fn show_keys_by_scans<'a>(
        names: impl Iterator<Item = &'a str>,
        alt_titles: impl Iterator<Item = &'a str>,
    ) -> Vec<(String, NormTitle, bool)> {
        let mut keys = Vec::new();
        let mut seen: Vec<(String, Option<Country>, String, bool)> = Vec::new();
        let mut extra: Vec<NormTitle> = Vec::new();
        for name in names {
            let name: String = name.chars().take(MAX_TITLE_CHARS).collect();
            let norm = normalize(&name);
            let identity = (
                norm.words.clone(),
                norm.country,
                norm.marks.clone(),
                norm.generic_suffix,
            );
            if norm.words.is_empty() || seen.contains(&identity) {
                continue;
            }
            seen.push(identity);
            extra.extend(norm.variants(&name));
            keys.push((name, norm, false));
        }
        extra.extend(
            alt_titles
                .map(|n| normalize(&n.chars().take(MAX_TITLE_CHARS).collect::<String>()))
                .filter(|v| !v.words.is_empty()),
        );
        for v in extra {
            if seen.iter().any(|s| s.0 == v.words) {
                continue;
            }
            seen.push((
                v.words.clone(),
                v.country,
                v.marks.clone(),
                v.generic_suffix,
            ));
            keys.push((String::new(), v, true));
        }
        keys
    }

    fn summary(keys: &[(String, NormTitle, bool)]) -> Vec<(String, String, bool)> {
        keys.iter()
            .map(|(name, n, derived)| (name.clone(), n.words.clone(), *derived))
            .collect()
    }

    #[test]
    fn show_keys_keep_the_first_of_each_name_in_order() {
        let names = [
            "The Office",
            "the office",
            "The Office (US)",
            "THE OFFICE",
            "",
            "Shingeki no Kyojin: The Final Season",
            "Working!!",
            "Working'!!",
            "Working!!",
            "The Office (US)",
        ];
        let alt = [
            "Le Bureau",
            "the office",
            "Le Bureau",
            "Attack on Titan",
            "!!",
        ];
        let got = show_keys(names.into_iter(), alt.into_iter());
        let want = show_keys_by_scans(names.into_iter(), alt.into_iter());
        assert_eq!(summary(&got), summary(&want));
        // Each own name once per identity, each extra key once per words, own names first.
        let own: Vec<&str> = got.iter().filter(|k| !k.2).map(|k| k.0.as_str()).collect();
        assert_eq!(
            own,
            [
                "The Office",
                "The Office (US)",
                "Shingeki no Kyojin: The Final Season",
                "Working!!",
                "Working'!!"
            ]
        );
        let extra: Vec<&str> = got
            .iter()
            .filter(|k| k.2)
            .map(|k| k.1.words.as_str())
            .collect();
        let mut unique = extra.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), extra.len(), "{extra:?}");
        assert!(got.iter().position(|k| k.2) >= Some(own.len()));
        assert!(extra.contains(&"le bureau"), "{extra:?}");
    }
}
