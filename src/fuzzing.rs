//! Fuzz harnesses for the parsers that read bytes from outside: the webhook multipart framing,
//! the webhook JSON and the Plex XML answers. This module owns the harness functions only;
//! the cargo-fuzz targets in `fuzz/fuzz_targets/` are one-line calls into it, and
//! `tests/fuzz_corpus.rs` replays the committed corpus through the same functions on stable,
//! so a fixed finding stays fixed without cargo-fuzz.
//!
//! Each harness takes arbitrary bytes, must never panic on its own account, and panics only
//! when an invariant of the code under test is broken (that is what the fuzzer reports).
//! Not part of the daemon's API: hidden from the docs and free to change.

use crate::plex::paging::Pager;
use crate::plex::xml::{self, Element};
use crate::plex::{history, library, parse_show_meta, server};
use crate::sources::webhook::multipart::{self, Limits, MultipartError, MultipartParser, Parts};
use crate::sources::webhook::payload::{self, EpisodePlay, WebhookPayload};

/// Limits used by [`webhook_multipart`]: far smaller than [`Limits::default`] so that every
/// limit is reachable by inputs of a few KiB, yet large enough for a real Plex body.
pub const FUZZ_LIMITS: Limits = Limits {
    max_part_bytes: 32 * 1024,
    max_header_bytes: 512,
    max_parts: 8,
};

/// Limits small enough that inputs of a few dozen bytes hit each of them.
pub const TIGHT_LIMITS: Limits = Limits {
    max_part_bytes: 64,
    max_header_bytes: 48,
    max_parts: 2,
};

/// Webhook body. Input layout: the first line (up to `\n`, a trailing `\r` dropped) is the
/// `Content-Type` header value, the rest is the body. When the line is not a usable
/// multipart Content-Type it is taken as the boundary itself, so the parser also sees
/// boundaries `boundary_from_content_type` would refuse.
///
/// The body is parsed twice, in one piece and in chunks whose sizes derive from the input
/// (1 byte up to a few KiB, with empty chunks between), and both results must be equal:
/// chunk boundaries must never change the outcome. After every `feed` the parser must hold
/// no more than its lookahead or one header block. A third parse under [`TIGHT_LIMITS`] must
/// end the same way unless it stops at one of those limits. A parsed `payload` goes on to
/// [`webhook_json`].
pub fn webhook_multipart(data: &[u8]) {
    let (line, body) = match memchr::memchr(b'\n', data) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = String::from_utf8_lossy(line);
    let boundary = match multipart::boundary_from_content_type(&line) {
        Ok(b) => {
            // A boundary the header accepted must be one the parser accepts.
            assert!(!b.is_empty() && b.len() <= 70, "boundary {b:?}");
            b
        }
        Err(e) => {
            let _ = e.to_string();
            line.into_owned()
        }
    };

    let whole = parse_multipart(&boundary, body, FUZZ_LIMITS, &mut Chunks::whole(body.len()));
    let chunked = parse_multipart(&boundary, body, FUZZ_LIMITS, &mut Chunks::seeded(data, 1));
    assert_eq!(
        whole, chunked,
        "the result depends on where the chunks were split"
    );
    // Tight limits only add limit errors: any other outcome must be the same as above.
    let tight = parse_multipart(&boundary, body, TIGHT_LIMITS, &mut Chunks::seeded(data, 2));
    match &tight {
        Err(e) if e.is_too_large() => {}
        other => assert_eq!(other, &whole, "tight limits changed a non-limit outcome"),
    }

    match whole {
        Ok(parts) => {
            assert!(parts.payload.len() <= FUZZ_LIMITS.max_part_bytes);
            assert!(parts.discarded.len() < FUZZ_LIMITS.max_parts);
            webhook_json(&parts.payload);
        }
        Err(e) => {
            let _ = (e.to_string(), e.is_too_large());
        }
    }
}

/// Webhook JSON: [`payload::parse_payload`], then [`payload::to_play`]; a play must carry
/// the numbers and names the JSON holds, checked against an independent `serde_json::Value`.
pub fn webhook_json(data: &[u8]) {
    let parsed = match payload::parse_payload(data) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(!parsed.event.trim().is_empty(), "accepted without an event");
    match payload::to_play(&parsed) {
        Ok(Some(play)) => check_play(data, &parsed, &play),
        Ok(None) => {
            let why = payload::ignored_because(&parsed);
            assert!(why.starts_with("ignored "), "{why}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn check_play(data: &[u8], parsed: &WebhookPayload, play: &EpisodePlay) {
    assert_eq!(parsed.event.trim(), "media.scrobble");
    let meta = parsed.metadata.as_ref().expect("a play has Metadata");
    assert_eq!(Some(i64::from(play.season)), meta.parent_index);
    assert_eq!(Some(i64::from(play.episode)), meta.index);
    assert!(i64::from(play.season) <= payload::MAX_SEASON_OR_EPISODE);
    assert!(i64::from(play.episode) <= payload::MAX_SEASON_OR_EPISODE);
    assert!(!play.account_id.trim().is_empty() && !play.show_title.trim().is_empty());
    for key in [&play.show_rating_key, &play.episode_rating_key]
        .into_iter()
        .flatten()
    {
        assert!(
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()),
            "rating key {key:?}"
        );
    }
    assert!(play.viewed_at.is_none_or(|t| t > 0));
    assert!(play.year.is_none_or(|y| (1..=9999).contains(&y)));

    // An independent reading of the same bytes. It may fail where the typed parse did not
    // (serde skips unknown fields without building them), so only compare when it worked.
    let bytes = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    let json_int = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let m = &value["Metadata"];
    assert_eq!(json_int(&m["parentIndex"]), Some(i64::from(play.season)));
    assert_eq!(json_int(&m["index"]), Some(i64::from(play.episode)));
    if let Some(t) = m["grandparentTitle"].as_str() {
        assert_eq!(t.trim(), play.show_title);
    }
}

/// Plex XML: the bounded tree ([`xml::parse`], over lossy UTF-8 as the client reads a body),
/// then every parser that reads a tree: history, sections, episodes, identity, accounts and
/// show metadata, plus the pager fed with each page and the lenient attribute readers.
pub fn plex_xml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let root = match xml::parse(&text) {
        Ok(root) => root,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    check_tree(&root, 0);

    match history::parse_history(&root) {
        Ok(page) => {
            assert_eq!(root.name, "MediaContainer");
            assert_eq!(page.rows.len() as u64 + page.skipped, page.size);
            for row in &page.rows {
                assert!(row.viewed_at > 0);
                for id in [&row.show_rating_key, &row.parent_rating_key]
                    .into_iter()
                    .flatten()
                {
                    assert!(!id.trim().is_empty(), "empty id {id:?}");
                }
            }
            record_page(&root, "historyKey", page.total);
        }
        Err(msg) => assert_ne!(root.name, "MediaContainer", "{msg}"),
    }

    let episodes = library::parse_episodes(&root);
    assert_eq!(episodes.rows.len() as u64 + episodes.skipped, episodes.size);
    for ep in &episodes.rows {
        assert!(!ep.rating_key.trim().is_empty());
        assert!(ep.last_viewed_at.is_none_or(|t| t > 0));
    }
    record_page(&root, "ratingKey", episodes.total);

    let sections = library::parse_sections(&root);
    assert!(sections.iter().all(|s| !s.key.trim().is_empty()));
    let shows = library::show_sections_of(sections);
    assert!(shows.iter().all(library::Section::is_show));

    if let Some(id) = server::parse_identity(&root) {
        assert!(!id.machine_identifier.trim().is_empty());
    }
    let _ = server::parse_accounts(&root);
    if let Some(meta) = parse_show_meta(&root, "1") {
        assert!(meta.guids.iter().all(|g| !g.is_empty()));
    }
}

/// The tree respects the parser's bounds, and the lenient readers are total on every
/// attribute value.
fn check_tree(e: &Element, depth: usize) {
    // 32 open elements, plus one level of self-closing children below the deepest.
    assert!(depth <= 32, "tree deeper than the parser's bound");
    for (name, value) in &e.attrs {
        let int = xml::lenient_i64(value);
        if let Ok(exact) = value.trim().parse::<i64>() {
            assert_eq!(int, Some(exact), "{value:?}");
        }
        if let Some(n) = e.attr_int::<u32>(name) {
            assert_eq!(int, Some(i64::from(n)), "{value:?}");
        }
        let _ = (
            e.attr_bool(name),
            e.attr_num::<f64>(name),
            e.attr_nonempty(name),
        );
        if let Some(id) = history::id_from_key(value) {
            assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }
    for child in &e.children {
        let _ = history::parse_history_row(child);
        let _ = library::parse_episode(child);
        check_tree(child, depth + 1);
    }
}

/// The pager fed the same page again and again (the identities of its served items, by
/// `id_attr`): it says which items are new for every one, never hands out a step that both
/// ends and continues, and stops within its bound.
fn record_page(root: &Element, id_attr: &str, total: Option<u64>) {
    let ids: Vec<Option<&str>> = root
        .children
        .iter()
        .map(|e| e.attr_nonempty(id_attr))
        .collect();
    let mut pager = Pager::new(100).with_max_pages(3);
    for _ in 0..4 {
        match pager.record(&ids, total) {
            Ok(step) => {
                assert_eq!(step.seen.len(), ids.len());
                assert_eq!(step.more, !pager.is_done());
                assert!(pager.size() >= 1);
                if !step.more {
                    break;
                }
            }
            Err(_) => {
                assert!(pager.is_done());
                break;
            }
        }
    }
    assert!(pager.pages() <= 3);
}

/// A parse of `body` fed as `chunks` says, checking the buffering bound after each feed.
fn parse_multipart(
    boundary: &str,
    body: &[u8],
    limits: Limits,
    chunks: &mut Chunks,
) -> Result<Parts, MultipartError> {
    let mut parser = MultipartParser::new(boundary, limits);
    // The parser keeps `\r\n--boundary` plus two bytes of lookahead, or one header block.
    let bound = limits.max_header_bytes.max(boundary.len() + 6);
    let mut rest = body;
    while !rest.is_empty() {
        let n = chunks.next_len().min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if parser.feed(chunk).is_err() {
            break;
        }
        assert!(
            parser.buffered_len() <= bound,
            "buffered {} bytes, bound {bound}",
            parser.buffered_len()
        );
    }
    parser.finish()
}

/// Chunk sizes: the whole body at once, or a pseudo-random sequence seeded by the input.
struct Chunks {
    state: u64,
    whole: Option<usize>,
}

impl Chunks {
    fn whole(len: usize) -> Chunks {
        Chunks {
            state: 0,
            whole: Some(len.max(1)),
        }
    }

    /// A sequence per (input, `stream`): any change to the input moves the split points.
    fn seeded(data: &[u8], stream: u64) -> Chunks {
        // FNV-1a, started from a per-stream basis.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for &b in data {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Chunks {
            state: h | 1,
            whole: None,
        }
    }

    /// The next chunk length (0 = an empty feed, which must change nothing).
    fn next_len(&mut self) -> usize {
        if let Some(n) = self.whole {
            return n;
        }
        // xorshift64
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let r = self.state;
        const CAPS: [u64; 8] = [1, 1, 2, 3, 7, 16, 100, 4096];
        let cap = CAPS[(r & 7) as usize];
        if (r >> 3) % 16 == 0 {
            0
        } else {
            1 + ((r >> 8) % cap) as usize
        }
    }
}
