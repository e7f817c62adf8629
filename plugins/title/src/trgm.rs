//! A port of PostgreSQL 15 `pg_trgm`'s `similarity()` (contrib/pg_trgm/trgm_op.c).
//!
//! This module owns the trigram extraction and the similarity formula, bit for bit as the
//! database computes them in an `en_US.UTF-8` (glibc) database, so a score seen here is the
//! score a tracker's SQL would see:
//!
//! - `find_word`: a word is a maximal run of characters for which glibc's `iswalnum` is true,
//!   i.e. the Unicode `Alphabetic` property or a decimal digit (`Nd`). Everything else
//!   (punctuation, symbols such as `☆` or `½`, spaces) only separates words.
//! - `lowerstr_with_len`: each word is lower-cased with glibc `towlower` (simple case mapping).
//! - each word is padded as `"  w "` and every window of 3 characters is a trigram
//!   (`make_trigrams`).
//! - `compact_trigram`: a window longer than 3 bytes (any multibyte character) is replaced by
//!   the 3 low-order bytes of its *legacy* PostgreSQL CRC-32 (stored little-endian in memory).
//! - the trigrams form a set (`qsort` + `qunique`), and `cnt_sml` returns
//!   `common / (n1 + n2 - common)` as `float4`, 0 when either set is empty.

/// One trigram as PostgreSQL stores it: 3 raw bytes, or 3 bytes of a CRC for multibyte text.
pub type Trgm = [u8; 3];

/// The CRC-32 lookup table PostgreSQL calls `pg_crc32_table` (src/backend/utils/hash/pg_crc.c):
/// the usual table for the bit-reflected polynomial 0xEDB88320.
const CRC32_TABLE: [u32; 256] = build_crc32_table();

const fn build_crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// PostgreSQL's `INIT/COMP/FIN_LEGACY_CRC32`.
///
/// This is NOT the standard CRC-32 (which would index with the low byte and shift right):
/// pg_crc.h's `COMP_CRC32_REFLECTED_TABLE` indexes the reflected table with the *high* byte
/// and shifts *left* — a historical bug PostgreSQL keeps because pg_trgm indexes on disk
/// depend on it. Porting the "correct" CRC would make every multibyte trigram differ.
pub fn legacy_crc32(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xFFFF_FFFF;
    for &b in data {
        let idx = ((crc >> 24) ^ u32::from(b)) & 0xFF;
        crc = CRC32_TABLE[idx as usize] ^ (crc << 8);
    }
    crc ^ 0xFFFF_FFFF
}

/// Sorted code-point ranges of Unicode general category `Nd` (Unicode 14, the version of
/// glibc 2.36's locale data). glibc counts every `Nd` digit as alphanumeric, while Rust's
/// `char::is_numeric` also accepts `No` (`½`, `²`, `①`), which glibc does not.
const DECIMAL_DIGIT_RANGES: [(u32, u32); 62] = [
    (0x30, 0x39),
    (0x660, 0x669),
    (0x6F0, 0x6F9),
    (0x7C0, 0x7C9),
    (0x966, 0x96F),
    (0x9E6, 0x9EF),
    (0xA66, 0xA6F),
    (0xAE6, 0xAEF),
    (0xB66, 0xB6F),
    (0xBE6, 0xBEF),
    (0xC66, 0xC6F),
    (0xCE6, 0xCEF),
    (0xD66, 0xD6F),
    (0xDE6, 0xDEF),
    (0xE50, 0xE59),
    (0xED0, 0xED9),
    (0xF20, 0xF29),
    (0x1040, 0x1049),
    (0x1090, 0x1099),
    (0x17E0, 0x17E9),
    (0x1810, 0x1819),
    (0x1946, 0x194F),
    (0x19D0, 0x19D9),
    (0x1A80, 0x1A89),
    (0x1A90, 0x1A99),
    (0x1B50, 0x1B59),
    (0x1BB0, 0x1BB9),
    (0x1C40, 0x1C49),
    (0x1C50, 0x1C59),
    (0xA620, 0xA629),
    (0xA8D0, 0xA8D9),
    (0xA900, 0xA909),
    (0xA9D0, 0xA9D9),
    (0xA9F0, 0xA9F9),
    (0xAA50, 0xAA59),
    (0xABF0, 0xABF9),
    (0xFF10, 0xFF19),
    (0x104A0, 0x104A9),
    (0x10D30, 0x10D39),
    (0x11066, 0x1106F),
    (0x110F0, 0x110F9),
    (0x11136, 0x1113F),
    (0x111D0, 0x111D9),
    (0x112F0, 0x112F9),
    (0x11450, 0x11459),
    (0x114D0, 0x114D9),
    (0x11650, 0x11659),
    (0x116C0, 0x116C9),
    (0x11730, 0x11739),
    (0x118E0, 0x118E9),
    (0x11950, 0x11959),
    (0x11C50, 0x11C59),
    (0x11D50, 0x11D59),
    (0x11DA0, 0x11DA9),
    (0x16A60, 0x16A69),
    (0x16AC0, 0x16AC9),
    (0x16B50, 0x16B59),
    (0x1D7CE, 0x1D7FF),
    (0x1E140, 0x1E149),
    (0x1E2F0, 0x1E2F9),
    (0x1E950, 0x1E959),
    (0x1FBF0, 0x1FBF9),
];

fn is_decimal_digit(c: char) -> bool {
    let cp = u32::from(c);
    let i = DECIMAL_DIGIT_RANGES.partition_point(|&(_, hi)| hi < cp);
    DECIMAL_DIGIT_RANGES
        .get(i)
        .is_some_and(|&(lo, hi)| lo <= cp && cp <= hi)
}

/// pg_trgm's `ISWORDCHR`: glibc `iswalnum` in `en_US.UTF-8`.
pub fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    c.is_alphabetic() || is_decimal_digit(c)
}

/// glibc `towlower`: the simple (one-to-one) lower-case mapping. Rust's `to_lowercase` is the
/// full mapping; the only unconditional one-to-many case (`İ` → `i̇`) starts with the simple
/// mapping's result, so its first char is what glibc returns.
pub fn to_lower(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    c.to_lowercase().next().unwrap_or(c)
}

/// Append the trigrams of one already lower-cased, padded word (`"  w "`) to `out`.
fn push_word_trigrams(padded: &str, out: &mut Vec<Trgm>) {
    let bytes = padded.as_bytes();
    if padded.len() == padded.chars().count() {
        // Same fast path as make_trigrams: every window is 3 raw bytes.
        for w in bytes.windows(3) {
            out.push([w[0], w[1], w[2]]);
        }
        return;
    }
    let starts: Vec<usize> = padded
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(padded.len()))
        .collect();
    for w in starts.windows(4) {
        let window = &bytes[w[0]..w[3]];
        if window.len() == 3 {
            out.push([window[0], window[1], window[2]]);
        } else {
            let crc = legacy_crc32(window).to_le_bytes();
            out.push([crc[0], crc[1], crc[2]]);
        }
    }
}

/// `generate_trgm`: the sorted, de-duplicated trigram set of `s`.
pub fn trigrams(s: &str) -> Vec<Trgm> {
    let mut out = Vec::with_capacity(s.len() + 8);
    let mut buf = String::with_capacity(s.len() + 4);
    let mut in_word = false;
    for c in s.chars() {
        if is_word_char(c) {
            if !in_word {
                buf.clear();
                buf.push_str("  ");
                in_word = true;
            }
            buf.push(to_lower(c));
        } else if in_word {
            buf.push(' ');
            push_word_trigrams(&buf, &mut out);
            in_word = false;
        }
    }
    if in_word {
        buf.push(' ');
        push_word_trigrams(&buf, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Number of trigrams two sorted, de-duplicated sets share.
pub fn common_count(a: &[Trgm], b: &[Trgm]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// `CALCSML`: `common / (n1 + n2 - common)` in `float4` arithmetic, 0 if either set is empty.
pub fn similarity_from_counts(common: usize, n1: usize, n2: usize) -> f32 {
    if n1 == 0 || n2 == 0 {
        return 0.0;
    }
    let union = (n1 + n2).saturating_sub(common);
    if union == 0 {
        return 0.0;
    }
    common as f32 / union as f32
}

/// Similarity of two trigram sets (both as returned by [`trigrams`]).
pub fn similarity_sets(a: &[Trgm], b: &[Trgm]) -> f32 {
    similarity_from_counts(common_count(a, b), a.len(), b.len())
}

/// `similarity(a, b)` exactly as PostgreSQL 15 pg_trgm computes it.
pub fn similarity(a: &str, b: &str) -> f32 {
    similarity_sets(&trigrams(a), &trigrams(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_table_is_the_reflected_crc32_table() {
        assert_eq!(CRC32_TABLE[1], 0x7707_3096);
        assert_eq!(CRC32_TABLE[128], 0xEDB8_8320);
        assert_eq!(CRC32_TABLE[255], 0x2D02_EF8D);
    }

    #[test]
    fn legacy_crc_is_not_the_standard_crc32() {
        // Standard CRC-32("123456789") is 0xCBF43926; pg's legacy variant differs.
        assert_ne!(legacy_crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(legacy_crc32(b""), 0);
    }

    /// `show_trgm` prints a hashed trigram as the 3 stored bytes read big-endian.
    fn show_trgm_value(t: Trgm) -> u32 {
        (u32::from(t[0]) << 16) | (u32::from(t[1]) << 8) | u32::from(t[2])
    }

    #[test]
    fn multibyte_trigrams_match_published_show_trgm_output() {
        // PostgreSQL: SELECT show_trgm('가나다라') →
        // {0x0dbca6,0x1fb1ac,0x66c945,0xb4c7cf,0xecf7cd}. The standard CRC-32 would give
        // other values, which a set-equality test alone cannot detect.
        let mut got: Vec<u32> = trigrams("가나다라")
            .into_iter()
            .map(show_trgm_value)
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![0x0dbca6, 0x1fb1ac, 0x66c945, 0xb4c7cf, 0xecf7cd]);
    }

    #[test]
    fn ascii_words_are_padded_two_left_one_right() {
        let t = trigrams("Cat");
        let want: Vec<Trgm> = vec![*b"  c", *b" ca", *b"at ", *b"cat"];
        assert_eq!(t, want);
        assert_eq!(similarity("cat", "CAT"), 1.0);
        assert_eq!(similarity("", ""), 0.0);
        assert_eq!(similarity("½ ☆", "abc"), 0.0);
    }

    #[test]
    fn word_chars_follow_glibc() {
        assert!(is_word_char('é'));
        assert!(is_word_char('ー'));
        assert!(is_word_char('漢'));
        assert!(is_word_char('Δ'));
        assert!(is_word_char('٣'));
        assert!(!is_word_char('½'));
        assert!(!is_word_char('☆'));
        assert!(!is_word_char('‼'));
        assert!(!is_word_char('²'));
        assert!(!is_word_char('_'));
    }

    /// Every pair of the reference file, computed by PostgreSQL 15.18 / pg_trgm 1.6.
    #[test]
    fn reproduces_postgres_reference_pairs() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/matching/pg_trgm_similarity.tsv");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("reference data {} missing in CI: {e}", path.display());
                }
                eprintln!(
                    "notice: {} not readable ({e}); skipping the pg_trgm reference test",
                    path.display()
                );
                return;
            }
        };
        let mut total = 0;
        let mut failures = Vec::new();
        for line in text.lines().skip(1) {
            if line.is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            assert!(cols.len() >= 3, "bad line: {line:?}");
            let want: f32 = cols[2].parse().unwrap();
            let got = similarity(cols[0], cols[1]);
            total += 1;
            if got.to_bits() != want.to_bits() {
                failures.push(format!(
                    "{:?} {:?}: want {want} got {got}",
                    cols[0], cols[1]
                ));
            }
        }
        assert_eq!(total, 2000, "expected 2000 reference pairs");
        assert!(
            failures.is_empty(),
            "{} of {total} differ:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}
