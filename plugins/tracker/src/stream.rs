//! The catalogue answer parsed as it arrives: `GET /shows` is one JSON array of show objects,
//! which for a large tracker is megabytes. Rather than holding the whole body and then its
//! parse, [`ArrayStream`] splits the array's elements out of the chunks as they come, keeping
//! only the element in progress, and decodes each into a compact [`CatalogShow`] at once.
//!
//! The splitter only tracks what it needs to find an element's end (strings, escapes, nesting
//! depth); the element's own syntax is serde_json's to judge.

use plexsync_plugin_api::CatalogShow;

/// Largest single show object accepted: a real one is a few hundred bytes; this bounds the
/// buffer whatever the tracker sends.
pub(crate) const MAX_ELEMENT: usize = 1024 * 1024;

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
}

/// Incremental splitter + decoder of a JSON array of show objects.
pub(crate) struct ArrayStream {
    state: State,
    element: Vec<u8>,
    depth: u32,
    in_string: bool,
    escaped: bool,
    shows: Vec<CatalogShow>,
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
        let mut show: CatalogShow =
            serde_json::from_slice(&self.element).map_err(StreamError::Element)?;
        compact(&mut show);
        self.shows.push(show);
        self.element.clear();
        // A rare huge element must not keep its buffer for the rest of the answer.
        if self.element.capacity() > 64 * 1024 {
            self.element.shrink_to(4096);
        }
        self.state = State::AfterElement;
        Ok(())
    }

    /// The shows, once the body has ended; an error when the array is unfinished.
    pub fn finish(mut self) -> Result<Vec<CatalogShow>, StreamError> {
        if self.state != State::Done {
            return Err(StreamError::Shape(if self.offset == 0 {
                "the answer is empty".to_string()
            } else {
                "the answer ends before the array's closing `]`".to_string()
            }));
        }
        self.shows.shrink_to_fit();
        Ok(self.shows)
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
        let mut s = ArrayStream::new();
        for c in body.chunks(size.max(1)) {
            s.feed(c)?;
        }
        s.finish()
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
