//! Streaming `multipart/form-data` parser for Plex webhook bodies.
//!
//! This module owns the HTTP-body framing of a Plex webhook (RFC 7578 on top of
//! the RFC 2046 multipart syntax): reading the boundary out of the
//! `Content-Type` header, splitting the body into parts, parsing each part's
//! headers, keeping the bytes of the part named `payload` and throwing away
//! everything else (in practice the `thumb` JPEG). It knows nothing about the
//! JSON inside the payload; that is `super::payload`'s job.
//!
//! Design points:
//! - Push parser: the caller hands over body chunks as they arrive
//!   ([`MultipartParser::feed`]) and calls [`MultipartParser::finish`] at the
//!   end. Chunk boundaries may fall anywhere, including inside a delimiter.
//! - Bounded memory: apart from the kept `payload` part (capped by
//!   [`Limits::max_part_bytes`]) and one part's header block (capped by
//!   [`Limits::max_header_bytes`]) the parser holds at most a few bytes more
//!   than the boundary between calls, however large a discarded part is.
//!   The total body size is NOT limited here; bound it at the HTTP layer.
//! - Line endings: RFC 2046 mandates CRLF, but captures of Plex bodies are
//!   stored with bare LF, so both are accepted everywhere (delimiters, header
//!   lines, the blank line ending the headers).
//! - Never panics on any input; every problem is a [`MultipartError`].

/// The form field whose bytes are kept; every other part is discarded.
const PAYLOAD_NAME: &str = "payload";

/// RFC 2046 §5.1.1: a boundary is 1 to 70 characters long.
const MAX_BOUNDARY_LEN: usize = 70;

/// Errors from reading the boundary or parsing a multipart body.
///
/// Each variant renders as one human-readable line. After [`MultipartParser::feed`]
/// returned an error the parser is poisoned: later calls return the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The media type of the `Content-Type` header is not `multipart/form-data`.
    #[error("Content-Type is not multipart/form-data (got {0:?})")]
    NotFormData(String),
    /// `Content-Type` is `multipart/form-data` but has no `boundary` parameter.
    #[error("Content-Type multipart/form-data has no boundary parameter")]
    MissingBoundary,
    /// The `Content-Type` parameters could not be parsed (e.g. an unterminated quote).
    #[error("malformed Content-Type header: {0}")]
    MalformedContentType(String),
    /// The boundary is empty, too long or contains characters that would break framing.
    #[error("invalid multipart boundary: {0}")]
    InvalidBoundary(String),
    /// The body never contains `--boundary` at the start of a line.
    #[error(
        "multipart body contains no --boundary delimiter (wrong boundary, or not a multipart body)"
    )]
    BoundaryNotFound,
    /// The body ended before the closing `--boundary--` delimiter.
    #[error("multipart body is truncated: it ended before the closing --boundary-- delimiter")]
    Truncated,
    /// A delimiter line had something other than whitespace after the boundary.
    #[error(
        "malformed multipart delimiter line before part {part}: only whitespace may follow the boundary"
    )]
    MalformedDelimiter {
        /// 1-based number of the part the delimiter was meant to start.
        part: usize,
    },
    /// A part's header block could not be parsed (includes a part without a name).
    #[error("malformed headers in multipart part {part}: {reason}")]
    MalformedHeaders {
        /// 1-based part number.
        part: usize,
        /// What is wrong, in words.
        reason: String,
    },
    /// A part's header block (or the padding after its delimiter) exceeds the limit.
    #[error("headers of multipart part {part} exceed the {limit}-byte limit")]
    HeaderTooLarge {
        /// 1-based part number.
        part: usize,
        /// [`Limits::max_header_bytes`].
        limit: usize,
    },
    /// The body has more parts than [`Limits::max_parts`].
    #[error("multipart body has more than {limit} parts")]
    TooManyParts {
        /// [`Limits::max_parts`].
        limit: usize,
    },
    /// The `payload` part is larger than [`Limits::max_part_bytes`].
    #[error("the `payload` part exceeds the {limit}-byte limit")]
    PartTooLarge {
        /// [`Limits::max_part_bytes`].
        limit: usize,
    },
    /// The body is well-formed but has no part named `payload`.
    #[error("multipart body has no part named `payload`")]
    NoPayload,
    /// The body has a second part named `payload` (ambiguous, so rejected).
    #[error("multipart body has more than one part named `payload`")]
    DuplicatePayload,
}

impl MultipartError {
    /// True when a size limit of [`Limits`] was exceeded (payload, header
    /// block or part count): the sender's fault in a way that maps to HTTP
    /// 413, unlike the framing errors, which map to 400.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            MultipartError::PartTooLarge { .. }
                | MultipartError::HeaderTooLarge { .. }
                | MultipartError::TooManyParts { .. }
        )
    }
}

/// Resource limits for one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of the kept `payload` part's body (discarded parts are unlimited).
    pub max_part_bytes: usize,
    /// Maximum size of one part's header block, line endings and blank line included.
    pub max_header_bytes: usize,
    /// Maximum number of parts (payload and discarded ones together).
    pub max_parts: usize,
}

impl Default for Limits {
    /// Generous for Plex: payloads are a few KiB, a body has at most two parts.
    fn default() -> Self {
        Limits {
            max_part_bytes: 1024 * 1024,
            max_header_bytes: 8 * 1024,
            max_parts: 16,
        }
    }
}

/// A part that was skipped (its bytes were counted, not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscardedPart {
    /// The `name` parameter of its Content-Disposition (e.g. `thumb`).
    pub name: String,
    /// The `filename` parameter, if any.
    pub filename: Option<String>,
    /// The part's `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// Size of the part's body in bytes.
    pub size: u64,
}

/// Result of a successful parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// Body bytes of the part named `payload` (the webhook JSON).
    pub payload: Vec<u8>,
    /// The `payload` part's `Content-Type` header, if any (Plex: `application/json`).
    pub payload_content_type: Option<String>,
    /// Every other part, in body order.
    pub discarded: Vec<DiscardedPart>,
}

/// Extracts the boundary from a `Content-Type` header value.
///
/// The media type must be `multipart/form-data` (case-insensitive); the
/// `boundary` parameter may be a token or a quoted string and must be 1..=70
/// characters of printable ASCII (space allowed, but not last), per RFC 2046.
pub fn boundary_from_content_type(ct: &str) -> Result<String, MultipartError> {
    let (media_type, rest) = match ct.split_once(';') {
        Some((t, r)) => (t.trim(), r),
        None => (ct.trim(), ""),
    };
    if !media_type.eq_ignore_ascii_case("multipart/form-data") {
        return Err(MultipartError::NotFormData(truncate_for_message(
            media_type,
        )));
    }
    let params = parse_params(rest).map_err(MultipartError::MalformedContentType)?;
    let mut boundary = None;
    for (name, value) in params {
        if name == "boundary" {
            // Two boundaries would make the framing ambiguous.
            if boundary.is_some() {
                return Err(MultipartError::MalformedContentType(
                    "more than one boundary parameter".to_owned(),
                ));
            }
            boundary = Some(value);
        }
    }
    let boundary = boundary.ok_or(MultipartError::MissingBoundary)?;
    validate_boundary(&boundary)?;
    Ok(boundary)
}

fn validate_boundary(b: &str) -> Result<(), MultipartError> {
    if b.is_empty() {
        return Err(MultipartError::InvalidBoundary(
            "boundary is empty".to_owned(),
        ));
    }
    if b.len() > MAX_BOUNDARY_LEN {
        return Err(MultipartError::InvalidBoundary(format!(
            "boundary is {} characters long, the maximum is {MAX_BOUNDARY_LEN}",
            b.len()
        )));
    }
    // RFC 2046 restricts boundaries to a small set (`bchars`); we accept any
    // printable ASCII to be lenient with senders, but reject control bytes
    // and non-ASCII because they could never match a delimiter line sanely.
    if !b.bytes().all(|c| c == b' ' || c.is_ascii_graphic()) {
        return Err(MultipartError::InvalidBoundary(
            "boundary contains control or non-ASCII characters".to_owned(),
        ));
    }
    if b.ends_with(' ') {
        return Err(MultipartError::InvalidBoundary(
            "boundary ends with a space".to_owned(),
        ));
    }
    Ok(())
}

/// Parses `; name=value; name="quoted value"` parameter lists (Content-Type,
/// Content-Disposition). Names are lower-cased; values keep their case.
/// Parameters without `=` are skipped; a broken quoted string is an error.
fn parse_params(s: &str) -> Result<Vec<(String, String)>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        // Skip separators and whitespace between parameters.
        while let Some(&c) = bytes.get(i) {
            if c == b';' || c == b' ' || c == b'\t' {
                i += 1;
            } else {
                break;
            }
        }
        if i >= bytes.len() {
            return Ok(out);
        }
        let name_start = i;
        while let Some(&c) = bytes.get(i) {
            if c == b'=' || c == b';' {
                break;
            }
            i += 1;
        }
        let name = s.get(name_start..i).unwrap_or_default().trim();
        if bytes.get(i) != Some(&b'=') {
            // `; flag` without a value: nothing we use looks like that.
            continue;
        }
        i += 1; // the '='
        while matches!(bytes.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        let value = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut v = Vec::new();
            loop {
                match bytes.get(i) {
                    None => {
                        return Err(format!("unterminated quoted value for parameter {name:?}"));
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        // quoted-pair: the next byte is taken literally.
                        match bytes.get(i + 1) {
                            Some(&c) => v.push(c),
                            None => {
                                return Err(format!(
                                    "unterminated quoted value for parameter {name:?}"
                                ));
                            }
                        }
                        i += 2;
                    }
                    Some(&c) => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            while matches!(bytes.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            if !matches!(bytes.get(i), None | Some(b';')) {
                return Err(format!(
                    "unexpected characters after the quoted value of parameter {name:?}"
                ));
            }
            // Only whole UTF-8 sequences were copied (escapes only ever skip
            // an ASCII backslash), so this is lossless for valid input.
            String::from_utf8_lossy(&v).into_owned()
        } else {
            let start = i;
            while let Some(&c) = bytes.get(i) {
                if c == b';' {
                    break;
                }
                i += 1;
            }
            s.get(start..i).unwrap_or_default().trim().to_owned()
        };
        out.push((name.to_ascii_lowercase(), value));
    }
}

/// Shortens attacker-controlled text before echoing it in an error message.
fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

/// What follows `--boundary` at a candidate delimiter.
enum After {
    /// Whitespace or a line break: a delimiter opening a new part.
    Part,
    /// `--`: the closing delimiter.
    Close,
    /// Anything else: not a delimiter, the bytes are content (as Go's
    /// `mime/multipart` does; RFC 2046 forbids it, but rejecting would not help).
    NotDelimiter,
    /// Not enough bytes yet to decide.
    NeedMore,
}

fn classify_after(after: &[u8]) -> After {
    match after.first() {
        None => After::NeedMore,
        Some(b' ' | b'\t' | b'\r' | b'\n') => After::Part,
        Some(b'-') => match after.get(1) {
            None => After::NeedMore,
            Some(b'-') => After::Close,
            Some(_) => After::NotDelimiter,
        },
        Some(_) => After::NotDelimiter,
    }
}

#[derive(Debug)]
enum State {
    /// Before the first delimiter; `line_start` says whether the next byte
    /// starts a line (true at the very beginning of the body).
    Preamble { line_start: bool },
    /// After `--boundary` of an opening delimiter: whitespace, then a line break.
    Padding,
    /// Collecting the header block of the current part.
    Headers,
    /// Inside a part's body; `at_start` while no body byte has been consumed
    /// (an empty body may be followed directly by `--boundary`, without the
    /// line break that normally precedes a delimiter, because that line break
    /// was eaten as the end of the headers).
    Body { at_start: bool },
    /// After the closing delimiter: everything is ignored.
    Epilogue,
    /// A previous call failed; the parser is unusable.
    Failed(MultipartError),
}

/// The part currently being read.
#[derive(Debug)]
struct CurrentPart {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    keep: bool,
    size: u64,
}

/// `\n--boundary`, found from the line breaks in the input: a boundary holds no line break,
/// so a candidate that is not the delimiter differs from it by the next line break at the
/// latest, and the search stays linear in the input, whatever it holds. Nothing is built per
/// body: a `memchr::memmem::Finder` for each of the two needles cost ~11k instructions a
/// request to build (callgrind), several times the search of a 2 KB payload.
#[derive(Debug)]
struct Delimiter(Vec<u8>);

impl Delimiter {
    /// Where the first complete `\n--boundary` in `hay` starts.
    fn find(&self, hay: &[u8]) -> Option<usize> {
        memchr::memchr_iter(b'\n', hay)
            .find(|&i| hay.get(i..).is_some_and(|s| s.starts_with(&self.0)))
    }

    /// `--boundary`.
    fn dash(&self) -> &[u8] {
        self.0.get(1..).unwrap_or_default()
    }
}

/// Push parser for one multipart/form-data body. See the module docs.
#[derive(Debug)]
pub struct MultipartParser {
    limits: Limits,
    /// `--` + boundary (length D).
    dash_boundary_len: usize,
    /// `\n--boundary`: a delimiter inside a part's body (an optional `\r` before the `\n`
    /// is handled by the caller), or in the preamble after a line break.
    delim: Delimiter,
    /// Maximum number of bytes any state needs to look at before it can
    /// make progress; also the top-up size when draining `carry`.
    lookahead: usize,
    state: State,
    /// Unconsumed tail of earlier chunks (always < `lookahead` between calls).
    carry: Vec<u8>,
    /// Raw header block of the current part.
    header_buf: Vec<u8>,
    /// Offset in `header_buf` where the current (unfinished) line starts.
    header_line_start: usize,
    /// Whitespace bytes seen after the current delimiter.
    padding_len: usize,
    /// Number of parts started so far.
    part_count: usize,
    current: Option<CurrentPart>,
    /// `Some` from the moment the `payload` part's headers are read.
    payload: Option<Vec<u8>>,
    payload_content_type: Option<String>,
    discarded: Vec<DiscardedPart>,
}

impl MultipartParser {
    /// Creates a parser for `boundary` (as returned by [`boundary_from_content_type`],
    /// which already validated it).
    ///
    /// Infallible so callers need no extra error path: a boundary that is not
    /// 1..=70 printable ASCII characters yields a parser that is already
    /// poisoned, and the first [`feed`](Self::feed) or [`finish`](Self::finish)
    /// returns [`MultipartError::InvalidBoundary`].
    pub fn new(boundary: &str, limits: Limits) -> Self {
        let state = match validate_boundary(boundary) {
            Ok(()) => State::Preamble { line_start: true },
            Err(e) => State::Failed(e),
        };
        let delim = Delimiter(format!("\n--{boundary}").into_bytes());
        let dash_boundary_len = delim.dash().len();
        MultipartParser {
            limits,
            dash_boundary_len,
            delim,
            // `\r` + `\n--boundary` + two bytes to classify what follows.
            lookahead: dash_boundary_len + 4,
            state,
            carry: Vec::new(),
            header_buf: Vec::new(),
            header_line_start: 0,
            padding_len: 0,
            part_count: 0,
            current: None,
            payload: None,
            payload_content_type: None,
            discarded: Vec::new(),
        }
    }

    /// Feeds the next chunk of the body. Chunks may be split anywhere.
    ///
    /// Errors are final: the parser is poisoned and keeps returning the error.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), MultipartError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        match self.feed_inner(chunk) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Release memory right away; nothing can be salvaged.
                self.state = State::Failed(e.clone());
                self.carry = Vec::new();
                self.header_buf = Vec::new();
                self.payload = None;
                Err(e)
            }
        }
    }

    /// Ends the body and returns the parts.
    ///
    /// Fails if the closing delimiter was not seen ([`MultipartError::Truncated`],
    /// or [`MultipartError::BoundaryNotFound`] if no delimiter was seen at all)
    /// or if there was no `payload` part.
    pub fn finish(self) -> Result<Parts, MultipartError> {
        match self.state {
            State::Failed(e) => Err(e),
            State::Epilogue => match self.payload {
                Some(payload) => Ok(Parts {
                    payload,
                    payload_content_type: self.payload_content_type,
                    discarded: self.discarded,
                }),
                None => Err(MultipartError::NoPayload),
            },
            State::Preamble { line_start } => {
                // A body ending right after an opening `--boundary` did have
                // a delimiter; call that truncated rather than "not found".
                let starts_with_delim = self.carry.len() >= self.dash_boundary_len
                    && self.carry.starts_with(self.delim.dash());
                if line_start && starts_with_delim {
                    Err(MultipartError::Truncated)
                } else {
                    Err(MultipartError::BoundaryNotFound)
                }
            }
            State::Padding | State::Headers | State::Body { .. } => Err(MultipartError::Truncated),
        }
    }

    /// Bytes held by the parser besides the kept payload: the lookahead tail
    /// plus the current header block. Stays below `boundary.len() + 6` while
    /// inside a part's body, however large that part is.
    pub fn buffered_len(&self) -> usize {
        self.carry.len() + self.header_buf.len()
    }

    fn feed_inner(&mut self, chunk: &[u8]) -> Result<(), MultipartError> {
        if matches!(self.state, State::Epilogue) {
            return Ok(());
        }
        let mut input = chunk;
        let mut carry = std::mem::take(&mut self.carry);
        // First finish the bytes left over from the previous call. Instead of
        // appending the whole chunk to `carry` (which would buffer it), top
        // `carry` up with a few bytes at a time; as soon as every old byte is
        // consumed, the unconsumed rest of `carry` is a suffix of what we took
        // from `input`, so we rewind `input` and process the chunk in place.
        while !carry.is_empty() && !input.is_empty() {
            let old = carry.len();
            let take = input.len().min(self.lookahead);
            let (head, tail) = input.split_at(take);
            carry.extend_from_slice(head);
            let n = self.process(&carry)?.min(carry.len());
            if n >= old {
                input = input.get(n - old..).unwrap_or_default();
                carry.clear();
            } else {
                carry.drain(..n);
                input = tail;
            }
        }
        if carry.is_empty() {
            let n = self.process(input)?;
            carry.extend_from_slice(input.get(n..).unwrap_or_default());
        }
        self.carry = carry;
        Ok(())
    }

    /// Consumes as much of `input` as can be decided without more bytes and
    /// returns how much was consumed. Leaves fewer than `lookahead` bytes.
    fn process(&mut self, input: &[u8]) -> Result<usize, MultipartError> {
        let mut pos = 0;
        while pos < input.len() {
            let rest = input.get(pos..).unwrap_or_default();
            let n = match self.state {
                State::Preamble { line_start } => self.step_preamble(rest, line_start),
                State::Padding => self.step_padding(rest)?,
                State::Headers => self.step_headers(rest)?,
                State::Body { at_start } => self.step_body(rest, at_start)?,
                State::Epilogue => rest.len(),
                // `feed` never calls in here when failed; consume nothing.
                State::Failed(_) => 0,
            };
            if n == 0 {
                break;
            }
            pos += n;
        }
        Ok(pos.min(input.len()))
    }

    fn step_preamble(&mut self, input: &[u8], line_start: bool) -> usize {
        let d = self.dash_boundary_len;
        let mut from: usize = 0;
        loop {
            // `--boundary` at a line start: the input's first byte when a line starts there,
            // else just after a line break (`\n--boundary` at or after `from - 1`).
            let found = if from == 0 && line_start && input.starts_with(self.delim.dash()) {
                Some(0)
            } else {
                let at = from.saturating_sub(1);
                input
                    .get(at..)
                    .and_then(|s| self.delim.find(s))
                    .map(|rel| at + rel + 1)
            };
            let Some(i) = found else {
                // Keep a possible partial `--boundary` at the end.
                let end = input.len().saturating_sub(d - 1);
                self.consume_preamble(input, end, line_start);
                return end;
            };
            match classify_after(input.get(i + d..).unwrap_or_default()) {
                After::Part => {
                    self.state = State::Padding;
                    self.padding_len = 0;
                    return i + d;
                }
                After::Close => {
                    // A body with only a closing delimiter: no parts at all.
                    self.state = State::Epilogue;
                    return i + d + 2;
                }
                After::NeedMore => {
                    self.consume_preamble(input, i, line_start);
                    return i;
                }
                After::NotDelimiter => from = i + 1,
            }
        }
    }

    /// Updates the line-start flag after discarding `input[..end]` of preamble.
    fn consume_preamble(&mut self, input: &[u8], end: usize, line_start: bool) {
        let line_start = match end.checked_sub(1).and_then(|i| input.get(i)) {
            Some(&b) => b == b'\n',
            None => line_start,
        };
        self.state = State::Preamble { line_start };
    }

    fn step_padding(&mut self, input: &[u8]) -> Result<usize, MultipartError> {
        let mut pos = 0;
        loop {
            match input.get(pos) {
                None => return Ok(pos),
                Some(b' ' | b'\t') => {
                    pos += 1;
                    self.padding_len += 1;
                    if self.padding_len > self.limits.max_header_bytes {
                        return Err(MultipartError::HeaderTooLarge {
                            part: self.part_count + 1,
                            limit: self.limits.max_header_bytes,
                        });
                    }
                }
                Some(b'\n') => {
                    self.begin_part()?;
                    return Ok(pos + 1);
                }
                Some(b'\r') => match input.get(pos + 1) {
                    Some(b'\n') => {
                        self.begin_part()?;
                        return Ok(pos + 2);
                    }
                    None => return Ok(pos),
                    Some(_) => {
                        return Err(MultipartError::MalformedDelimiter {
                            part: self.part_count + 1,
                        });
                    }
                },
                Some(_) => {
                    return Err(MultipartError::MalformedDelimiter {
                        part: self.part_count + 1,
                    });
                }
            }
        }
    }

    fn begin_part(&mut self) -> Result<(), MultipartError> {
        self.part_count += 1;
        if self.part_count > self.limits.max_parts {
            return Err(MultipartError::TooManyParts {
                limit: self.limits.max_parts,
            });
        }
        self.header_buf.clear();
        self.header_line_start = 0;
        self.state = State::Headers;
        Ok(())
    }

    fn step_headers(&mut self, input: &[u8]) -> Result<usize, MultipartError> {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            let (piece, line_done) = match memchr::memchr(b'\n', rest) {
                Some(j) => (rest.get(..=j).unwrap_or_default(), true),
                None => (rest, false),
            };
            if self.header_buf.len() + piece.len() > self.limits.max_header_bytes {
                return Err(MultipartError::HeaderTooLarge {
                    part: self.part_count,
                    limit: self.limits.max_header_bytes,
                });
            }
            self.header_buf.extend_from_slice(piece);
            pos += piece.len();
            if !line_done {
                return Ok(pos);
            }
            let line = self
                .header_buf
                .get(self.header_line_start..)
                .unwrap_or_default();
            if line == b"\n" || line == b"\r\n" {
                // Blank line: the header block is complete.
                let block = self
                    .header_buf
                    .get(..self.header_line_start)
                    .unwrap_or_default();
                let part = parse_part_headers(block, self.part_count)?;
                self.header_buf.clear();
                self.header_line_start = 0;
                self.start_body(part)?;
                return Ok(pos);
            }
            self.header_line_start = self.header_buf.len();
        }
    }

    fn start_body(&mut self, part: PartHeaders) -> Result<(), MultipartError> {
        let keep = part.name == PAYLOAD_NAME;
        if keep {
            if self.payload.is_some() {
                return Err(MultipartError::DuplicatePayload);
            }
            self.payload = Some(Vec::new());
            self.payload_content_type = part.content_type.clone();
        }
        self.current = Some(CurrentPart {
            name: part.name,
            filename: part.filename,
            content_type: part.content_type,
            keep,
            size: 0,
        });
        self.state = State::Body { at_start: true };
        Ok(())
    }

    fn step_body(&mut self, input: &[u8], at_start: bool) -> Result<usize, MultipartError> {
        let d = self.dash_boundary_len;
        if at_start {
            // Empty body followed directly by `--boundary` (see `State::Body`).
            let needle = self.delim.dash();
            if input.len() < d {
                if needle.starts_with(input) {
                    return Ok(0); // could still become `--boundary`
                }
            } else if input.starts_with(needle) {
                match classify_after(input.get(d..).unwrap_or_default()) {
                    After::Part => {
                        self.end_part();
                        self.state = State::Padding;
                        self.padding_len = 0;
                        return Ok(d);
                    }
                    After::Close => {
                        self.end_part();
                        self.state = State::Epilogue;
                        return Ok(d + 2);
                    }
                    After::NeedMore => return Ok(0),
                    After::NotDelimiter => {}
                }
            }
            self.state = State::Body { at_start: false };
        }

        let delim_len = d + 1; // `\n--boundary`
        let mut from = 0;
        loop {
            let Some(rel) = input.get(from..).and_then(|s| self.delim.find(s)) else {
                // Keep the last `delim_len` bytes: a partial delimiter plus
                // the `\r` that may precede it.
                let end = input.len().saturating_sub(delim_len);
                self.emit(input.get(..end).unwrap_or_default())?;
                return Ok(end);
            };
            let i = from + rel;
            // The line break before the delimiter belongs to the delimiter.
            let body_end = if i > 0 && input.get(i - 1) == Some(&b'\r') {
                i - 1
            } else {
                i
            };
            match classify_after(input.get(i + delim_len..).unwrap_or_default()) {
                After::Part => {
                    self.emit(input.get(..body_end).unwrap_or_default())?;
                    self.end_part();
                    self.state = State::Padding;
                    self.padding_len = 0;
                    return Ok(i + delim_len);
                }
                After::Close => {
                    self.emit(input.get(..body_end).unwrap_or_default())?;
                    self.end_part();
                    self.state = State::Epilogue;
                    return Ok(i + delim_len + 2);
                }
                After::NeedMore => {
                    self.emit(input.get(..body_end).unwrap_or_default())?;
                    return Ok(body_end);
                }
                After::NotDelimiter => from = i + 1,
            }
        }
    }

    fn emit(&mut self, data: &[u8]) -> Result<(), MultipartError> {
        if data.is_empty() {
            return Ok(());
        }
        let Some(part) = self.current.as_mut() else {
            return Ok(());
        };
        part.size = part.size.saturating_add(data.len() as u64);
        if part.keep {
            if let Some(buf) = self.payload.as_mut() {
                if buf.len().saturating_add(data.len()) > self.limits.max_part_bytes {
                    return Err(MultipartError::PartTooLarge {
                        limit: self.limits.max_part_bytes,
                    });
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(())
    }

    fn end_part(&mut self) {
        if let Some(part) = self.current.take() {
            if !part.keep {
                self.discarded.push(DiscardedPart {
                    name: part.name,
                    filename: part.filename,
                    content_type: part.content_type,
                    size: part.size,
                });
            }
        }
    }
}

/// The headers of one part that matter to us.
#[derive(Debug)]
struct PartHeaders {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
}

/// RFC 9110 `tchar`, the characters allowed in a header name.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn parse_part_headers(block: &[u8], part: usize) -> Result<PartHeaders, MultipartError> {
    let malformed = |reason: String| MultipartError::MalformedHeaders { part, reason };
    // Header values are ASCII in practice; filenames may be raw UTF-8
    // (RFC 7578 §4.2). Lossy decoding keeps us total on any bytes.
    let text = String::from_utf8_lossy(block);
    let mut headers: Vec<(String, String)> = Vec::new();
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // Obsolete line folding: continues the previous header's value.
            match headers.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                None => return Err(malformed("continuation line before any header".to_owned())),
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed(format!(
                "header line without ':' ({:?})",
                truncate_for_message(line)
            )));
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(malformed(format!(
                "invalid header name {:?}",
                truncate_for_message(name)
            )));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }

    let mut dispositions = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-disposition"));
    let Some((_, disposition)) = dispositions.next() else {
        return Err(malformed(
            "no Content-Disposition header, so the part has no name".to_owned(),
        ));
    };
    if dispositions.next().is_some() {
        return Err(malformed(
            "more than one Content-Disposition header".to_owned(),
        ));
    }
    let content_type = {
        let mut cts = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        let first = cts.next().map(|(_, v)| v.clone());
        if cts.next().is_some() {
            return Err(malformed("more than one Content-Type header".to_owned()));
        }
        first
    };

    let (kind, rest) = match disposition.split_once(';') {
        Some((k, r)) => (k.trim(), r),
        None => (disposition.trim(), ""),
    };
    if !kind.eq_ignore_ascii_case("form-data") {
        return Err(malformed(format!(
            "Content-Disposition is {:?}, expected form-data",
            truncate_for_message(kind)
        )));
    }
    let params = parse_params(rest).map_err(|e| malformed(format!("Content-Disposition: {e}")))?;
    let mut name = None;
    let mut filename = None;
    for (key, value) in params {
        match key.as_str() {
            "name" => {
                // Two names would let a sender smuggle a second `payload`.
                if name.is_some() {
                    return Err(malformed("more than one name parameter".to_owned()));
                }
                name = Some(value);
            }
            "filename" if filename.is_none() => filename = Some(value),
            _ => {}
        }
    }
    match name {
        Some(name) if !name.is_empty() => Ok(PartHeaders {
            name,
            filename,
            content_type,
        }),
        Some(_) => Err(malformed("the part's name is empty".to_owned())),
        None => Err(malformed(
            "Content-Disposition has no name parameter, so the part has no name".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const SAMPLE_BODY: &str = "episode_plexagent_media.pause_shared-user.multipart-body.txt";
    const SAMPLE_HEADERS: &str = "episode_plexagent_media.pause_shared-user.headers.txt";

    /// Real captures live outside the repo (third-party data); read in place.
    fn sample_dir() -> Option<PathBuf> {
        let dir = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/plex-samples/webhook/"
        ));
        if dir.is_dir() {
            return Some(dir);
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("sample folder {} missing on CI", dir.display());
        }
        eprintln!(
            "notice: {} not found, skipping sample-based test",
            dir.display()
        );
        None
    }

    /// (boundary, body) of the real capture.
    fn sample() -> Option<(String, Vec<u8>)> {
        let dir = sample_dir()?;
        let headers = std::fs::read_to_string(dir.join(SAMPLE_HEADERS)).unwrap();
        let ct = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type:"))
            .unwrap();
        let boundary = boundary_from_content_type(ct).unwrap();
        let body = std::fs::read(dir.join(SAMPLE_BODY)).unwrap();
        Some((boundary, body))
    }

    fn to_crlf(lf: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(lf.len() + lf.len() / 20);
        for &b in lf {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }

    fn parse_chunks<'a>(
        boundary: &str,
        limits: Limits,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Parts, MultipartError> {
        let mut p = MultipartParser::new(boundary, limits);
        for c in chunks {
            p.feed(c)?;
        }
        p.finish()
    }

    fn parse(boundary: &str, body: &[u8]) -> Result<Parts, MultipartError> {
        parse_chunks(boundary, Limits::default(), [body])
    }

    /// The JSON of the sample: the line between the blank line and the closing delimiter.
    fn expected_json(body: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(body).unwrap();
        let start = text.find("\n\n").unwrap() + 2;
        let end = text.rfind("\n--").unwrap();
        text.as_bytes()[start..end].to_vec()
    }

    // ---- boundary_from_content_type ----

    #[test]
    fn boundary_unquoted_and_quoted() {
        assert_eq!(
            boundary_from_content_type("multipart/form-data; boundary=abc123").unwrap(),
            "abc123"
        );
        assert_eq!(
            boundary_from_content_type("multipart/form-data; boundary=\"a b;c\"").unwrap(),
            "a b;c"
        );
        assert_eq!(
            boundary_from_content_type("Multipart/Form-Data;charset=utf-8;BOUNDARY = xyz ")
                .unwrap(),
            "xyz"
        );
        assert_eq!(
            boundary_from_content_type(r#"multipart/form-data; boundary="q\"x""#).unwrap(),
            "q\"x"
        );
    }

    #[test]
    fn boundary_errors() {
        assert!(matches!(
            boundary_from_content_type("application/json"),
            Err(MultipartError::NotFormData(_))
        ));
        assert!(matches!(
            boundary_from_content_type("multipart/mixed; boundary=x"),
            Err(MultipartError::NotFormData(_))
        ));
        assert_eq!(
            boundary_from_content_type("multipart/form-data"),
            Err(MultipartError::MissingBoundary)
        );
        assert_eq!(
            boundary_from_content_type("multipart/form-data; charset=utf-8"),
            Err(MultipartError::MissingBoundary)
        );
        assert!(matches!(
            boundary_from_content_type("multipart/form-data; boundary="),
            Err(MultipartError::InvalidBoundary(_))
        ));
        assert!(matches!(
            boundary_from_content_type("multipart/form-data; boundary=\"\""),
            Err(MultipartError::InvalidBoundary(_))
        ));
        let b70 = "a".repeat(70);
        assert_eq!(
            boundary_from_content_type(&format!("multipart/form-data; boundary={b70}")).unwrap(),
            b70
        );
        let err = boundary_from_content_type(&format!("multipart/form-data; boundary={b70}b"))
            .unwrap_err();
        assert!(matches!(err, MultipartError::InvalidBoundary(_)));
        assert!(err.to_string().contains("71"), "{err}");
        assert!(matches!(
            boundary_from_content_type("multipart/form-data; boundary=\"ab\u{e9}\""),
            Err(MultipartError::InvalidBoundary(_))
        ));
        assert!(matches!(
            boundary_from_content_type("multipart/form-data; boundary=\"ab \""),
            Err(MultipartError::InvalidBoundary(_))
        ));
        assert!(matches!(
            boundary_from_content_type("multipart/form-data; boundary=\"abc"),
            Err(MultipartError::MalformedContentType(_))
        ));
        assert!(matches!(
            boundary_from_content_type("multipart/form-data; boundary=a; boundary=b"),
            Err(MultipartError::MalformedContentType(_))
        ));
        for bad in ["", "a\r\nb", &"x".repeat(71)] {
            let mut p = MultipartParser::new(bad, Limits::default());
            assert!(matches!(
                p.feed(b"--x\r\n"),
                Err(MultipartError::InvalidBoundary(_))
            ));
            assert!(matches!(
                p.finish(),
                Err(MultipartError::InvalidBoundary(_))
            ));
            assert!(matches!(
                MultipartParser::new(bad, Limits::default()).finish(),
                Err(MultipartError::InvalidBoundary(_))
            ));
        }
    }

    #[test]
    fn error_messages_are_one_line() {
        let errs = [
            MultipartError::NotFormData("x".into()),
            MultipartError::MissingBoundary,
            MultipartError::MalformedContentType("x".into()),
            MultipartError::InvalidBoundary("x".into()),
            MultipartError::BoundaryNotFound,
            MultipartError::Truncated,
            MultipartError::MalformedDelimiter { part: 1 },
            MultipartError::MalformedHeaders {
                part: 1,
                reason: "x".into(),
            },
            MultipartError::HeaderTooLarge { part: 1, limit: 2 },
            MultipartError::TooManyParts { limit: 2 },
            MultipartError::PartTooLarge { limit: 2 },
            MultipartError::NoPayload,
            MultipartError::DuplicatePayload,
        ];
        for e in errs {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "{s:?}");
            let size = matches!(
                e,
                MultipartError::PartTooLarge { .. }
                    | MultipartError::HeaderTooLarge { .. }
                    | MultipartError::TooManyParts { .. }
            );
            assert_eq!(e.is_too_large(), size, "{e:?}");
        }
    }

    // ---- real sample ----

    #[test]
    fn sample_lf_and_crlf() {
        let Some((boundary, body)) = sample() else {
            return;
        };
        assert_eq!(boundary, "------------------------e9b6fd531fc73c30");
        let want = expected_json(&body);
        for body in [body.clone(), to_crlf(&body)] {
            let parts = parse(&boundary, &body).unwrap();
            assert_eq!(&parts.payload[..], &want[..]);
            assert_eq!(
                parts.payload_content_type.as_deref(),
                Some("application/json")
            );
            assert!(parts.discarded.is_empty());
            // And the payload is the webhook JSON.
            let p = super::super::payload::parse_payload(&parts.payload).unwrap();
            assert_eq!(p.event, "media.pause");
            assert_eq!(super::super::payload::to_play(&p).unwrap(), None);
        }
    }

    #[test]
    fn sample_every_split_point_and_byte_by_byte() {
        let Some((boundary, body)) = sample() else {
            return;
        };
        for body in [body.clone(), to_crlf(&body)] {
            let want = parse(&boundary, &body).unwrap();
            for i in 0..=body.len() {
                let (a, b) = body.split_at(i);
                let got = parse_chunks(&boundary, Limits::default(), [a, b]).unwrap();
                assert_eq!(got, want, "split at {i}");
            }
            let got = parse_chunks(&boundary, Limits::default(), body.chunks(1)).unwrap();
            assert_eq!(got, want);
            // Three-way splits around the delimiters (where the state changes).
            for i in (0..body.len()).step_by(7) {
                for j in [i + 1, i + 2, i + 41, i + 43, i + 45] {
                    if j <= body.len() {
                        let got = parse_chunks(
                            &boundary,
                            Limits::default(),
                            [&body[..i], &body[i..j], &body[j..]],
                        )
                        .unwrap();
                        assert_eq!(got, want, "split at {i},{j}");
                    }
                }
            }
        }
    }

    #[test]
    fn sample_truncated_at_every_point() {
        let Some((boundary, body)) = sample() else {
            return;
        };
        // The body ends "--B--\n"; every proper prefix without that final
        // newline lacks the closing delimiter.
        let end = body.len() - 1;
        for i in 0..end {
            let err = parse(&boundary, &body[..i]).unwrap_err();
            assert!(
                matches!(
                    err,
                    MultipartError::Truncated | MultipartError::BoundaryNotFound
                ),
                "cut at {i}: {err:?}"
            );
        }
        // Without the trailing newline after `--B--` it is still complete.
        assert!(parse(&boundary, &body[..end]).is_ok());
    }

    #[test]
    fn sample_with_wrong_boundary() {
        let Some((_, body)) = sample() else { return };
        assert_eq!(
            parse("nope", &body).unwrap_err(),
            MultipartError::BoundaryNotFound
        );
    }

    // ---- synthetic bodies ----

    const B: &str = "XyZ-boundary";

    fn body_with(parts: &[(&str, &[u8])], nl: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for (headers, data) in parts {
            out.extend_from_slice(format!("--{B}{nl}{headers}{nl}{nl}").as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(nl.as_bytes());
        }
        out.extend_from_slice(format!("--{B}--{nl}").as_bytes());
        out
    }

    const PAYLOAD_HDR: &str = "Content-Disposition: form-data; name=\"payload\"";
    const THUMB_HDR: &str = "Content-Disposition: form-data; name=\"thumb\"; filename=\"thumb.jpg\"\r\nContent-Type: image/jpeg";

    #[test]
    fn preamble_epilogue_and_padding_ignored() {
        let body = format!(
            "This is a preamble.\r\n--{B}x is not a delimiter\r\n--{B} \t\r\n{PAYLOAD_HDR}\r\n\r\n{{\"a\":1}}\r\n--{B}-- trailing\r\nepilogue --{B}\r\n"
        );
        let parts = parse(B, body.as_bytes()).unwrap();
        assert_eq!(&parts.payload[..], b"{\"a\":1}");
        // The delimiter at a line start is found wherever the chunks split the preamble.
        let body = body.as_bytes();
        for i in 0..=body.len() {
            let got = parse_chunks(B, Limits::default(), [&body[..i], &body[i..]]).unwrap();
            assert_eq!(got, parts, "split at {i}");
        }
        let got = parse_chunks(B, Limits::default(), body.chunks(1)).unwrap();
        assert_eq!(got, parts);
        // A body that starts with a delimiter line and one that starts with its line break.
        for lead in ["", "\r\n", "\n"] {
            let body = format!("{lead}--{B}\r\n{PAYLOAD_HDR}\r\n\r\n{{}}\r\n--{B}--\r\n");
            assert_eq!(
                &parse(B, body.as_bytes()).unwrap().payload[..],
                b"{}",
                "{lead:?}"
            );
        }
    }

    #[test]
    fn thumb_is_discarded_and_recorded() {
        for nl in ["\r\n", "\n"] {
            let body = body_with(&[(THUMB_HDR, b"\xff\xd8jpeg"), (PAYLOAD_HDR, b"{}")], nl);
            let parts = parse(B, &body).unwrap();
            assert_eq!(&parts.payload[..], b"{}");
            assert_eq!(
                parts.discarded,
                vec![DiscardedPart {
                    name: "thumb".into(),
                    filename: Some("thumb.jpg".into()),
                    content_type: Some("image/jpeg".into()),
                    size: 6,
                }]
            );
        }
    }

    /// Deterministic xorshift so tests need no extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn multi_megabyte_thumb_uses_bounded_memory() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut thumb = rng.bytes(5 * 1024 * 1024);
        // Sprinkle near-misses of the delimiter into the JPEG bytes.
        let near = [
            format!("\r\n--{B}X"),
            format!("\n--{B}-x"),
            format!("\r\n--{}", &B[..5]),
            format!("--{B}\r\n"),
        ];
        for k in 0..200 {
            let s = near[k % near.len()].as_bytes();
            let at = rng.below(thumb.len() - s.len());
            thumb[at..at + s.len()].copy_from_slice(s);
        }
        let payload = br#"{"event":"media.play"}"#;
        for order in 0..2 {
            let parts: Vec<(&str, &[u8])> = if order == 0 {
                vec![(PAYLOAD_HDR, payload), (THUMB_HDR, &thumb)]
            } else {
                vec![(THUMB_HDR, &thumb), (PAYLOAD_HDR, payload)]
            };
            let body = body_with(&parts, "\r\n");
            let mut p = MultipartParser::new(B, Limits::default());
            let mut max_buffered = 0;
            for chunk in body.chunks(8 * 1024) {
                p.feed(chunk).unwrap();
                max_buffered = max_buffered.max(p.buffered_len());
            }
            assert!(max_buffered <= B.len() + 6, "buffered {max_buffered} bytes");
            let parts = p.finish().unwrap();
            assert_eq!(&parts.payload[..], payload);
            assert_eq!(parts.discarded.len(), 1);
            assert_eq!(parts.discarded[0].size, thumb.len() as u64);
        }
    }

    #[test]
    fn payload_bytes_preserved_exactly() {
        // Content that looks almost like delimiters must come through intact.
        // (It must not end in '\r': with LF framing a trailing CR is
        // indistinguishable from a CRLF delimiter and is stripped.)
        let data = format!(
            "line1\r\n--{B}X\n--{B}-y\r\r\n-{B}\n\n--{}\r\nend\r.",
            &B[..3]
        );
        for nl in ["\r\n", "\n"] {
            let body = body_with(&[(PAYLOAD_HDR, data.as_bytes())], nl);
            let want = parse(B, &body).unwrap();
            assert_eq!(&want.payload[..], data.as_bytes());
            for i in 0..=body.len() {
                let got = parse_chunks(B, Limits::default(), [&body[..i], &body[i..]]).unwrap();
                assert_eq!(got, want, "split at {i}");
            }
            let got = parse_chunks(B, Limits::default(), body.chunks(1)).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn empty_part_bodies() {
        // Well-formed empty body (blank line, then the delimiter's line break)...
        let body = format!("--{B}\r\n{PAYLOAD_HDR}\r\n\r\n\r\n--{B}--\r\n");
        assert_eq!(&parse(B, body.as_bytes()).unwrap().payload[..], b"");
        // ...and the sloppy form with the delimiter right after the blank line.
        let body = format!("--{B}\r\n{PAYLOAD_HDR}\r\n\r\n--{B}--\r\n");
        assert_eq!(&parse(B, body.as_bytes()).unwrap().payload[..], b"");
        let body = format!("--{B}\n{THUMB_HDR}\n\n--{B}\n{PAYLOAD_HDR}\n\nx\n--{B}--");
        let parts = parse(B, body.as_bytes()).unwrap();
        assert_eq!(&parts.payload[..], b"x");
        assert_eq!(parts.discarded[0].size, 0);
    }

    #[test]
    fn header_parsing() {
        let hdrs = "content-DISPOSITION:form-data;name=payload ;filename=\"a\\\"b.json\"\r\ncoNTent-type:  application/json ";
        let body = body_with(&[(hdrs, b"{}")], "\r\n");
        let parts = parse(B, &body).unwrap();
        assert_eq!(
            parts.payload_content_type.as_deref(),
            Some("application/json")
        );
        // Folded header line.
        let hdrs = "Content-Disposition: form-data;\r\n name=\"payload\"";
        let body = body_with(&[(hdrs, b"{}")], "\r\n");
        assert_eq!(&parse(B, &body).unwrap().payload[..], b"{}");
        // Quoted name containing ';' is not split.
        let hdrs = "Content-Disposition: form-data; name=\"pay;load\"";
        let body = body_with(&[(hdrs, b"{}"), (PAYLOAD_HDR, b"1")], "\r\n");
        let parts = parse(B, &body).unwrap();
        assert_eq!(parts.discarded[0].name, "pay;load");
    }

    fn expect_headers_err(hdrs: &str) -> String {
        let body = body_with(&[(hdrs, b"{}")], "\r\n");
        match parse(B, &body) {
            Err(MultipartError::MalformedHeaders { part, reason }) => {
                assert_eq!(part, 1);
                reason
            }
            other => panic!("{hdrs:?}: {other:?}"),
        }
    }

    #[test]
    fn malformed_headers() {
        assert!(expect_headers_err("Content-Type: text/plain").contains("no name"));
        assert!(expect_headers_err("Content-Disposition: form-data").contains("no name"));
        assert!(
            expect_headers_err("Content-Disposition: form-data; filename=\"a\"")
                .contains("no name")
        );
        assert!(expect_headers_err("Content-Disposition: form-data; name=\"\"").contains("empty"));
        assert!(
            expect_headers_err("Content-Disposition: attachment; name=payload")
                .contains("form-data")
        );
        assert!(
            expect_headers_err("Content-Disposition: form-data; name=\"payload")
                .contains("unterminated")
        );
        assert!(expect_headers_err("no colon here").contains("':'"));
        assert!(expect_headers_err("Bad Name: x").contains("header name"));
        assert!(expect_headers_err(" folded: first").contains("continuation"));
        assert!(
            expect_headers_err("Content-Disposition: form-data; name=a; name=payload")
                .contains("more than one name")
        );
        assert!(expect_headers_err(
            "Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=payload"
        )
        .contains("more than one Content-Disposition"));
        // A part with no headers at all has no name either.
        let body = format!("--{B}\r\n\r\ndata\r\n--{B}--\r\n");
        assert!(matches!(
            parse(B, body.as_bytes()),
            Err(MultipartError::MalformedHeaders { .. })
        ));
    }

    #[test]
    fn malformed_delimiter_line() {
        let body = format!("--{B}  junk\r\n{PAYLOAD_HDR}\r\n\r\n{{}}\r\n--{B}--\r\n");
        assert_eq!(
            parse(B, body.as_bytes()),
            Err(MultipartError::MalformedDelimiter { part: 1 })
        );
        let body = format!("--{B}\rX{PAYLOAD_HDR}\r\n\r\n{{}}\r\n--{B}--\r\n");
        assert_eq!(
            parse(B, body.as_bytes()),
            Err(MultipartError::MalformedDelimiter { part: 1 })
        );
    }

    #[test]
    fn truncation_and_missing_parts() {
        assert_eq!(parse(B, b""), Err(MultipartError::BoundaryNotFound));
        assert_eq!(
            parse(B, b"just text\r\n"),
            Err(MultipartError::BoundaryNotFound)
        );
        assert_eq!(
            parse(B, format!("--{B}").as_bytes()),
            Err(MultipartError::Truncated)
        );
        assert_eq!(
            parse(B, format!("--{B}\r\n{PAYLOAD_HDR}\r\n").as_bytes()),
            Err(MultipartError::Truncated)
        );
        assert_eq!(
            parse(
                B,
                format!("--{B}\r\n{PAYLOAD_HDR}\r\n\r\n{{}}\r\n--{B}").as_bytes()
            ),
            Err(MultipartError::Truncated)
        );
        assert_eq!(
            parse(
                B,
                format!("--{B}\r\n{PAYLOAD_HDR}\r\n\r\n{{}}\r\n--{B}-").as_bytes()
            ),
            Err(MultipartError::Truncated)
        );
        assert_eq!(
            parse(B, format!("--{B}--\r\n").as_bytes()),
            Err(MultipartError::NoPayload)
        );
        let body = body_with(&[(THUMB_HDR, b"jpg")], "\r\n");
        assert_eq!(parse(B, &body), Err(MultipartError::NoPayload));
        let body = body_with(&[(PAYLOAD_HDR, b"1"), (PAYLOAD_HDR, b"2")], "\r\n");
        assert_eq!(parse(B, &body), Err(MultipartError::DuplicatePayload));
    }

    #[test]
    fn limits() {
        let data = vec![b'x'; 100];
        let body = body_with(&[(PAYLOAD_HDR, &data)], "\r\n");
        let at = |max_part_bytes| Limits {
            max_part_bytes,
            ..Limits::default()
        };
        assert!(parse_chunks(B, at(100), [&body[..]]).is_ok());
        assert_eq!(
            parse_chunks(B, at(99), [&body[..]]),
            Err(MultipartError::PartTooLarge { limit: 99 })
        );
        assert_eq!(
            parse_chunks(B, at(99), body.chunks(1)),
            Err(MultipartError::PartTooLarge { limit: 99 })
        );
        // Discarded parts are not subject to max_part_bytes.
        let body = body_with(&[(THUMB_HDR, &data), (PAYLOAD_HDR, b"{}")], "\r\n");
        assert!(parse_chunks(B, at(10), [&body[..]]).is_ok());

        let hdr_len = PAYLOAD_HDR.len() + 4; // header line + CRLF + blank CRLF
        let body = body_with(&[(PAYLOAD_HDR, b"{}")], "\r\n");
        let hl = |max_header_bytes| Limits {
            max_header_bytes,
            ..Limits::default()
        };
        assert!(parse_chunks(B, hl(hdr_len), [&body[..]]).is_ok());
        assert_eq!(
            parse_chunks(B, hl(hdr_len - 1), [&body[..]]),
            Err(MultipartError::HeaderTooLarge {
                part: 1,
                limit: hdr_len - 1
            })
        );
        // Endless header line, fed in chunks: fails without growing forever.
        let mut p = MultipartParser::new(B, hl(1000));
        p.feed(format!("--{B}\r\nX-Long: ").as_bytes()).unwrap();
        let mut failed = None;
        for _ in 0..100 {
            if let Err(e) = p.feed(&[b'a'; 64]) {
                failed = Some(e);
                break;
            }
            assert!(p.buffered_len() <= 1000 + B.len() + 6);
        }
        assert!(matches!(
            failed,
            Some(MultipartError::HeaderTooLarge { .. })
        ));
        // Poisoned afterwards.
        assert!(matches!(
            p.feed(b"x"),
            Err(MultipartError::HeaderTooLarge { .. })
        ));
        assert!(matches!(
            p.finish(),
            Err(MultipartError::HeaderTooLarge { .. })
        ));

        let three = body_with(
            &[(THUMB_HDR, b"1"), (THUMB_HDR, b"2"), (PAYLOAD_HDR, b"{}")],
            "\r\n",
        );
        let pl = |max_parts| Limits {
            max_parts,
            ..Limits::default()
        };
        assert!(parse_chunks(B, pl(3), [&three[..]]).is_ok());
        assert_eq!(
            parse_chunks(B, pl(2), [&three[..]]),
            Err(MultipartError::TooManyParts { limit: 2 })
        );
    }

    #[test]
    fn random_chunking_matches_one_shot() {
        let mut rng = Rng(42);
        let thumb = rng.bytes(3000);
        let body = body_with(
            &[(THUMB_HDR, &thumb), (PAYLOAD_HDR, b"{\"x\":[1,2]}")],
            "\r\n",
        );
        let want = parse(B, &body).unwrap();
        for _ in 0..300 {
            let mut chunks = Vec::new();
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(60));
                let (a, b) = rest.split_at(n);
                chunks.push(a);
                rest = b;
            }
            let got = parse_chunks(B, Limits::default(), chunks).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let base = match sample() {
            Some((_, body)) => body,
            None => body_with(&[(THUMB_HDR, b"\xff\xd8"), (PAYLOAD_HDR, b"{}")], "\r\n"),
        };
        let boundary = match sample() {
            Some((b, _)) => b,
            None => B.to_owned(),
        };
        let limits = Limits {
            max_part_bytes: 2000,
            max_header_bytes: 200,
            max_parts: 4,
        };
        let alphabet: &[u8] = b"-\r\n \t\";=:abcXyZ";
        for round in 0..3000 {
            let input: Vec<u8> = match round % 3 {
                // Pure random bytes.
                0 => {
                    let n = rng.below(600);
                    rng.bytes(n)
                }
                // Random bytes from a framing-heavy alphabet.
                1 => (0..rng.below(600))
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect(),
                // Mutations of a valid body.
                _ => {
                    let mut b = base.clone();
                    for _ in 0..1 + rng.below(8) {
                        match rng.below(4) {
                            0 if !b.is_empty() => {
                                let i = rng.below(b.len());
                                b[i] = rng.next() as u8;
                            }
                            1 => {
                                let i = rng.below(b.len() + 1);
                                b.insert(i, alphabet[rng.below(alphabet.len())]);
                            }
                            2 if !b.is_empty() => {
                                let i = rng.below(b.len());
                                b.remove(i);
                            }
                            _ => {
                                let i = rng.below(b.len() + 1);
                                b.truncate(i);
                            }
                        }
                    }
                    b
                }
            };
            let bnd = if round % 5 == 0 {
                "-"
            } else {
                boundary.as_str()
            };
            let mut p = MultipartParser::new(bnd, limits);
            let mut rest = &input[..];
            let mut ok = true;
            while !rest.is_empty() && ok {
                let n = 1 + rng.below(rest.len().min(50));
                let (a, b) = rest.split_at(n);
                ok = p.feed(a).is_ok();
                rest = b;
                assert!(p.buffered_len() <= limits.max_header_bytes + bnd.len() * 2 + 12);
            }
            let _ = p.finish();
            let _ = boundary_from_content_type(&String::from_utf8_lossy(&input));
        }
    }
}
