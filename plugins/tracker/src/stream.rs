//! The catalogue answer parsed as it arrives: `GET /shows` is one JSON array of show objects,
//! which for a large tracker is megabytes. Rather than holding the whole body and then its
//! parse, [`ArrayStream`] splits the array's elements out of the chunks as they come, keeping
//! only the element in progress, and decodes each into a compact [`CatalogShow`] at once.
//!
//! The splitter only tracks what it needs to find an element's end (strings, escapes, nesting
//! depth); the element's own syntax is serde_json's to judge.
//!
//! One bad row must not cost the whole catalogue (on a first start that would leave matching
//! without one for as long as the tracker keeps it): an element that is JSON but does not fit
//! the contract is decoded field by field ([`lenient`]). Its optional fields that do not fit
//! are left unset; a row whose `id` or `title` does not fit is left out. Both are counted in
//! [`Flaws`] for one log line per fetch. An element that is not JSON at all still fails the
//! answer: that is a broken body, not a bad row.

use plexsync_plugin_api::CatalogShow;
use serde_json::{Map, Value};

/// Largest single show object accepted: a real one is a few hundred bytes; this bounds the
/// buffer whatever the tracker sends.
pub(crate) const MAX_ELEMENT: usize = 1024 * 1024;

/// Most shows one catalogue may hold. The 64 MiB body cap alone does not bound memory: a
/// show can be written in 20 bytes (`{"id":1,"title":""},`), which makes millions of shows
/// and over a gigabyte at the peak (each decoded show is a ~190-byte struct before its
/// strings, then the catalogue and every matcher's index). TMDB lists fewer than 200,000 TV
/// shows, so no tracker's real catalogue comes near this.
pub(crate) const MAX_SHOWS: usize = 500_000;

/// Bytes of the body's start kept for error messages.
const HEAD: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Before the opening `[`.
    Start,
    /// After `[` (`first`) or after a `,`: an element (or, at first, `]`) comes next.
    BeforeElement { first: bool },
    /// Inside an element object.
    InElement,
    /// After an element: `,` or `]`.
    AfterElement,
    /// After the closing `]`: only whitespace may follow.
    Done,
}

/// Why the body is not a catalogue.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// Not a JSON array of objects (what was found, in words).
    Shape(String),
    /// An element that is not a show object as the contract describes it.
    Element(serde_json::Error),
    /// An element larger than [`MAX_ELEMENT`].
    TooLarge,
    /// More shows than [`MAX_SHOWS`].
    TooMany,
    /// Elements were there, but not one has an `id` and a `title` that fit: the tracker
    /// speaks another contract (the first row's problem).
    NoShowFits(Flaw),
}

/// One row that did not fit: left out, or kept with some fields unset.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Flaw {
    /// The row's place in the array, from 1.
    pub row: usize,
    /// The row's id when it has a usable one.
    pub id: Option<String>,
    /// What did not fit, e.g. `year: expected an integer from -2147483648 to 2147483647, got 3000000000`.
    pub reason: String,
}

/// What the lenient decoding let pass in one answer, for one log line.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Flaws {
    /// Rows left out (their id or title did not fit).
    pub skipped: usize,
    /// Rows kept with one or more optional fields unset.
    pub trimmed: usize,
    /// The first row of either kind.
    pub first: Option<Flaw>,
}

impl Flaws {
    fn note(&mut self, flaw: Flaw, skipped: bool) {
        if skipped {
            self.skipped += 1;
        } else {
            self.trimmed += 1;
        }
        self.first.get_or_insert(flaw);
    }
}

/// The decoded answer.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub shows: Vec<CatalogShow>,
    pub flaws: Flaws,
}

/// Incremental splitter + decoder of a JSON array of show objects.
pub(crate) struct ArrayStream {
    state: State,
    element: Vec<u8>,
    depth: u32,
    in_string: bool,
    escaped: bool,
    shows: Vec<CatalogShow>,
    flaws: Flaws,
    /// Elements seen so far (kept or not), for [`Flaw::row`].
    rows: usize,
    head: Vec<u8>,
    offset: usize,
}

impl ArrayStream {
    pub fn new() -> Self {
        ArrayStream {
            state: State::Start,
            element: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            shows: Vec::new(),
            flaws: Flaws::default(),
            rows: 0,
            head: Vec::new(),
            offset: 0,
        }
    }

    /// The first bytes of the body, for a message about it.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Feed the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), StreamError> {
        if self.head.len() < HEAD {
            let take = (HEAD - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        let mut i = 0;
        while i < chunk.len() {
            match self.state {
                State::InElement => {
                    // Copy the run up to the element's end (or the chunk's) in one go.
                    let start = i;
                    let mut end = None;
                    while i < chunk.len() {
                        let b = chunk[i];
                        i += 1;
                        if self.in_string {
                            if self.escaped {
                                self.escaped = false;
                            } else if b == b'\\' {
                                self.escaped = true;
                            } else if b == b'"' {
                                self.in_string = false;
                            }
                            continue;
                        }
                        match b {
                            b'"' => self.in_string = true,
                            b'{' | b'[' => self.depth += 1,
                            b'}' | b']' => {
                                self.depth = self.depth.saturating_sub(1);
                                if self.depth == 0 {
                                    end = Some(i);
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    let run = &chunk[start..end.unwrap_or(i)];
                    if self.element.len() + run.len() > MAX_ELEMENT {
                        return Err(StreamError::TooLarge);
                    }
                    self.element.extend_from_slice(run);
                    if end.is_some() {
                        self.finish_element()?;
                    }
                }
                state => {
                    let b = chunk[i];
                    i += 1;
                    if b.is_ascii_whitespace() {
                        continue;
                    }
                    self.state = match (state, b) {
                        (State::Start, b'[') => State::BeforeElement { first: true },
                        (State::BeforeElement { first: true }, b']') => State::Done,
                        (State::BeforeElement { .. }, b'{') => {
                            self.element.push(b);
                            self.depth = 1;
                            State::InElement
                        }
                        (State::AfterElement, b',') => State::BeforeElement { first: false },
                        (State::AfterElement, b']') => State::Done,
                        (_, b) => {
                            return Err(StreamError::Shape(format!(
                                "unexpected {} at byte {}, expected {}",
                                describe(b),
                                self.offset + i - 1,
                                match state {
                                    State::Start => "a JSON array `[`",
                                    State::BeforeElement { .. } => "a show object `{`",
                                    State::AfterElement => "`,` or `]`",
                                    _ => "the end of the answer",
                                }
                            )));
                        }
                    };
                }
            }
        }
        self.offset += chunk.len();
        Ok(())
    }

    fn finish_element(&mut self) -> Result<(), StreamError> {
        self.rows += 1;
        // The strict decode is the fast path every fitting row takes; only a row it refuses
        // for its values (not its syntax) is looked at field by field.
        let decoded = match serde_json::from_slice::<CatalogShow>(&self.element) {
            Ok(show) => Some(show),
            Err(e) if e.classify() != serde_json::error::Category::Data => {
                return Err(StreamError::Element(e));
            }
            Err(_) => {
                let object: Map<String, Value> =
                    serde_json::from_slice(&self.element).map_err(StreamError::Element)?;
                match lenient(object) {
                    Ok((show, dropped)) => {
                        let flaw = Flaw {
                            row: self.rows,
                            id: Some(show.id.clone()),
                            reason: dropped.join("; "),
                        };
                        self.flaws.note(flaw, false);
                        Some(show)
                    }
                    Err((id, reason)) => {
                        let flaw = Flaw {
                            row: self.rows,
                            id,
                            reason,
                        };
                        self.flaws.note(flaw, true);
                        None
                    }
                }
            }
        };
        if let Some(mut show) = decoded {
            // Refused while streaming, before the excess is held.
            if self.shows.len() >= MAX_SHOWS {
                return Err(StreamError::TooMany);
            }
            compact(&mut show);
            self.shows.push(show);
        }
        self.element.clear();
        // A rare huge element must not keep its buffer for the rest of the answer.
        if self.element.capacity() > 64 * 1024 {
            self.element.shrink_to(4096);
        }
        self.state = State::AfterElement;
        Ok(())
    }

    /// The shows, once the body has ended; an error when the array is unfinished or when it
    /// had rows and none fit.
    pub fn finish(mut self) -> Result<Parsed, StreamError> {
        if self.state != State::Done {
            return Err(StreamError::Shape(if self.offset == 0 {
                "the answer is empty".to_string()
            } else {
                "the answer ends before the array's closing `]`".to_string()
            }));
        }
        if self.shows.is_empty() {
            if let Some(first) = self.flaws.first.take() {
                return Err(StreamError::NoShowFits(first));
            }
        }
        self.shows.shrink_to_fit();
        Ok(Parsed {
            shows: self.shows,
            flaws: self.flaws,
        })
    }
}

/// A row the strict decode refused, field by field: the show with its unfitting optional
/// fields unset and what was dropped (`field: why` each), or, when `id` or `title` does not
/// fit, the id (if usable) and why the row is left out. Fields the contract does not name are
/// ignored, as the strict decode ignores them.
fn lenient(
    mut o: Map<String, Value>,
) -> Result<(CatalogShow, Vec<String>), (Option<String>, String)> {
    let id = match o.remove("id") {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        None => return Err((None, "id: missing".into())),
        Some(v) => {
            return Err((
                None,
                format!("id: expected a string or a number, got {}", shown(&v)),
            ));
        }
    };
    let title = match o.remove("title") {
        Some(Value::String(s)) => s,
        None => return Err((Some(id), "title: missing".into())),
        Some(v) => {
            return Err((
                Some(id),
                format!("title: expected a string, got {}", shown(&v)),
            ));
        }
    };
    let mut dropped = Vec::new();
    let mut field = |name: &str, expected: &str, take: &dyn Fn(&Value) -> bool| -> Option<Value> {
        match o.remove(name) {
            None | Some(Value::Null) => None,
            Some(v) if take(&v) => Some(v),
            Some(v) => {
                dropped.push(format!("{name}: expected {expected}, got {}", shown(&v)));
                None
            }
        }
    };
    let year = field("year", "an integer from -2147483648 to 2147483647", &|v| {
        v.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
    })
    .and_then(|v| v.as_i64())
    .and_then(|n| i32::try_from(n).ok());
    let id_number = &|v: &Value| v.as_u64().is_some();
    let tmdb_id = field("tmdb_id", "a whole number from 0", id_number).and_then(|v| v.as_u64());
    let tvdb_id = field("tvdb_id", "a whole number from 0", id_number).and_then(|v| v.as_u64());
    let text = |v: Value| match v {
        Value::String(s) => Some(s),
        _ => None,
    };
    let is_text = &|v: &Value| v.is_string();
    let imdb_id = field("imdb_id", "a string", is_text).and_then(text);
    let original_title = field("original_title", "a string", is_text).and_then(text);
    // A list keeps its strings: one bad alias is no reason to lose the others.
    let lists = [
        field("aliases", "an array of strings", &Value::is_array),
        field("alt_titles", "an array of strings", &Value::is_array),
    ];
    let [aliases, alt_titles] = lists.map(|v| {
        let items = match v {
            Some(Value::Array(a)) => a,
            _ => return (Vec::new(), None),
        };
        let bad = items.iter().find(|i| !i.is_string()).map(shown);
        (items.into_iter().filter_map(text).collect::<Vec<_>>(), bad)
    });
    for (name, bad) in [("aliases", &aliases.1), ("alt_titles", &alt_titles.1)] {
        if let Some(bad) = bad {
            dropped.push(format!("{name}: expected strings only, got {bad}"));
        }
    }
    let (aliases, alt_titles) = (aliases.0, alt_titles.0);
    let show = CatalogShow {
        id,
        title,
        year,
        tmdb_id,
        tvdb_id,
        imdb_id,
        original_title,
        aliases,
        alt_titles,
    };
    Ok((show, dropped))
}

/// A JSON value for a message: its text, cut short.
fn shown(v: &Value) -> String {
    const MAX: usize = 40;
    let text = v.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Give back what the parse over-allocated: the shows live as long as the catalogue.
fn compact(show: &mut CatalogShow) {
    show.aliases.shrink_to_fit();
    for s in std::iter::once(&mut show.id)
        .chain(std::iter::once(&mut show.title))
        .chain(show.original_title.as_mut())
        .chain(show.imdb_id.as_mut())
        .chain(show.aliases.iter_mut())
    {
        s.shrink_to_fit();
    }
}

fn describe(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("`{}`", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(body: &[u8], size: usize) -> Result<Vec<CatalogShow>, StreamError> {
        parse_with_flaws(body, size).map(|p| p.shows)
    }

    fn parse_with_flaws(body: &[u8], size: usize) -> Result<Parsed, StreamError> {
        let mut s = ArrayStream::new();
        for c in body.chunks(size.max(1)) {
            s.feed(c)?;
        }
        s.finish()
    }

    #[test]
    fn a_row_with_a_field_that_does_not_fit_costs_that_field_not_the_catalogue() {
        let body = br#"[{"id":1,"title":"A"},{"id":2,"title":"B","year":3000000000}]"#;
        let p = parse_with_flaws(body, 5).unwrap();
        let ids: Vec<&str> = p.shows.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(p.shows[1].year, None);
        assert_eq!((p.flaws.skipped, p.flaws.trimmed), (0, 1));
        let first = p.flaws.first.unwrap();
        assert_eq!((first.row, first.id.as_deref()), (2, Some("2")));
        assert!(first.reason.starts_with("year: "), "{}", first.reason);
        assert!(first.reason.contains("3000000000"), "{}", first.reason);
    }

    #[test]
    fn bad_optional_fields_are_unset_and_rows_without_id_or_title_left_out() {
        let body = br#"[
            {"id": 1, "title": "A", "tmdb_id": -1, "tvdb_id": 79983, "imdb_id": 7},
            {"id": "b", "title": "B", "year": "2005", "aliases": ["x", 3, "y"], "extra": [1]},
            {"id": [3], "title": "C"},
            {"id": 4, "title": null},
            {"id": 5, "title": "E", "year": 2001.5, "original_title": "\u00c9"},
            {"id": 6, "title": "F", "year": null, "tmdb_id": 18446744073709551615}
        ]"#;
        let p = parse_with_flaws(body, 7).unwrap();
        type Row<'a> = (&'a str, Option<i32>, Option<u64>, Option<u64>);
        let got: Vec<Row> = p
            .shows
            .iter()
            .map(|s| (s.id.as_str(), s.year, s.tmdb_id, s.tvdb_id))
            .collect();
        assert_eq!(
            got,
            [
                ("1", None, None, Some(79983)),
                ("b", None, None, None),
                ("5", None, None, None),
                ("6", None, Some(u64::MAX), None),
            ]
        );
        assert_eq!(p.shows[0].imdb_id, None);
        assert_eq!(p.shows[1].aliases, ["x", "y"]);
        assert_eq!(p.shows[2].original_title.as_deref(), Some("É"));
        assert_eq!((p.flaws.skipped, p.flaws.trimmed), (2, 3));
        let first = p.flaws.first.unwrap();
        assert_eq!((first.row, first.id.as_deref()), (1, Some("1")));
        assert!(first.reason.contains("tmdb_id") && first.reason.contains("imdb_id"));
        // Not JSON inside an element is a broken answer, not a bad row.
        assert!(matches!(
            parse_with_flaws(br#"[{"id": 1, "title": "A" "x"}]"#, 3),
            Err(StreamError::Element(_))
        ));
        // Rows, none of which fits: not a catalogue (an empty array is one).
        assert!(matches!(
            parse_with_flaws(br#"[{"id": 1}, {"title": "B"}]"#, 3),
            Err(StreamError::NoShowFits(Flaw { row: 1, .. }))
        ));
    }

    #[test]
    fn any_chunking_gives_the_whole_parse() {
        let body = br#" [ {"id": 1, "title": "A \"quoted\" } ] name", "aliases": ["x]", "{y"]},
            {"id": "b", "title": "B\\", "year": 2001, "extra": {"nested": [1, {"a": "}"}]}} ,
            {"id": 3, "title": "\u00e9t\u00e9"} ] "#;
        let whole: Vec<CatalogShow> = serde_json::from_slice(body).unwrap();
        for size in [1, 2, 3, 7, 64, body.len()] {
            let got = parse_in_chunks(body, size).unwrap();
            assert_eq!(got, whole, "chunk size {size}");
        }
        assert_eq!(whole[0].title, "A \"quoted\" } ] name");
        assert_eq!(whole[1].title, "B\\");
        assert_eq!(whole[2].title, "été");
    }

    #[test]
    fn empty_arrays_and_bad_shapes() {
        assert!(parse_in_chunks(b"[]", 1).unwrap().is_empty());
        assert!(parse_in_chunks(b" [ \n ] \n", 1).unwrap().is_empty());
        for bad in [
            &b"<html>login page</html>"[..],
            b"",
            b"[",
            b"[{\"id\": 1, \"title\": \"A\"}",
            b"[{\"id\": 1, \"title\": \"A\"},]",
            b"[1, 2]",
            b"{\"shows\": []}",
            b"[] x",
            b"[{\"id\": 1}]",
        ] {
            assert!(
                parse_in_chunks(bad, 3).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_catalogue_of_more_than_max_shows_is_refused() {
        let row = br#"{"id":1,"title":""},"#;
        let mut body = Vec::with_capacity(row.len() * (MAX_SHOWS + 1) + 2);
        body.push(b'[');
        for _ in 0..MAX_SHOWS {
            body.extend_from_slice(row);
        }
        body.extend_from_slice(br#"{"id":1,"title":""}]"#);
        let mut s = ArrayStream::new();
        let mut refused = None;
        for (i, chunk) in body.chunks(64 * 1024).enumerate() {
            if let Err(e) = s.feed(chunk) {
                refused = Some((e, i));
                break;
            }
        }
        let (e, chunk) = refused.expect("more than MAX_SHOWS shows accepted");
        assert!(matches!(e, StreamError::TooMany), "{e:?}");
        // Refused at the show past the cap, in the answer's last chunk.
        assert_eq!(chunk, body.len().div_ceil(64 * 1024) - 1);
    }

    #[test]
    fn an_oversized_element_is_refused_without_growing_past_the_cap() {
        let mut body = b"[{\"id\": 1, \"title\": \"".to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_ELEMENT + 10));
        body.extend_from_slice(b"\"}]");
        assert!(matches!(
            parse_in_chunks(&body, 8192),
            Err(StreamError::TooLarge)
        ));
    }
}
