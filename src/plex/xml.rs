//! A small, bounded XML tree for Plex responses (MediaContainer documents).
//!
//! Plex answers are small flat documents whose data lives in attributes; a tree of elements
//! with their attributes is all the callers need. Depth, element count and attribute counts
//! (per element and in all) are bounded so a hostile or broken server cannot make us recurse
//! or allocate without limit: within the 64 MiB body cap, ~5.6 million short attributes
//! (` a1=""`) would otherwise become a tree of about a gigabyte.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 1_000_000;
/// Attributes on one element. The most in the real captures (`../shared/plex-samples`) is 33
/// (plex.tv's `<user>`); PMS metadata elements carry some 40–50. 256 leaves room for
/// attributes Plex adds later.
const MAX_ELEMENT_ATTRIBUTES: usize = 256;
/// Attributes in a whole document. The largest answers we ask for are history and library
/// pages of at most 5,000 items (`[poll] page_size`) with ~50 attributes each: 250,000.
/// A million is four times that, and bounds the tree to some 100 MB of small strings.
const MAX_ATTRIBUTES: usize = 1_000_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Attribute parsed as a number; absent, empty or unparsable → None.
    pub fn attr_num<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.attr(name).and_then(|v| v.trim().parse().ok())
    }

    /// Attribute as an integer, leniently: surrounding blanks, a leading `+` and an integral
    /// decimal form (`"7.0"`, `"1.7e9"`) are accepted; a fraction, a non-number or a value
    /// out of `T`'s range → None. (PMS writes some ids as strings in one endpoint and numbers
    /// in another; JSON-to-XML bridges and proxies have been seen writing `"7.0"`.)
    pub fn attr_int<T: TryFrom<i64>>(&self, name: &str) -> Option<T> {
        self.attr(name)
            .and_then(lenient_i64)
            .and_then(|v| T::try_from(v).ok())
    }

    /// Attribute as a boolean: `1`/`true` → true, `0`/`false` → false (case-insensitive),
    /// anything else → None.
    pub fn attr_bool(&self, name: &str) -> Option<bool> {
        let v = self.attr(name)?.trim();
        if v == "1" || v.eq_ignore_ascii_case("true") {
            Some(true)
        } else if v == "0" || v.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            None
        }
    }

    /// Attribute trimmed, None when absent or blank.
    pub fn attr_nonempty(&self, name: &str) -> Option<&str> {
        self.attr(name).map(str::trim).filter(|v| !v.is_empty())
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// An integer written leniently (see [`Element::attr_int`]).
pub fn lenient_i64(v: &str) -> Option<i64> {
    let v = v.trim();
    let v = v.strip_prefix('+').unwrap_or(v);
    if v.is_empty() {
        return None;
    }
    if let Ok(n) = v.parse::<i64>() {
        return Some(n);
    }
    // Only a decimal/scientific spelling of a whole number; never "inf", "NaN" or a fraction.
    if !v
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
    {
        return None;
    }
    let f: f64 = v.parse().ok()?;
    // 2^63 is exactly representable; anything at or beyond it does not fit an i64.
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9_223_372_036_854_775_808.0).then_some(f as i64)
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("malformed XML at byte {position}: {message}")]
pub struct XmlError {
    pub position: u64,
    pub message: String,
}

/// The element `e` starts, its attributes counted against `total` (the document's so far).
fn element(e: &BytesStart<'_>, pos: u64, total: &mut usize) -> Result<Element, XmlError> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        // Counted before the attribute is read, so a refused element costs no more than
        // the bound.
        if attrs.len() >= MAX_ELEMENT_ATTRIBUTES {
            return Err(XmlError {
                position: pos,
                message: format!("an element with more than {MAX_ELEMENT_ATTRIBUTES} attributes"),
            });
        }
        *total += 1;
        if *total > MAX_ATTRIBUTES {
            return Err(XmlError {
                position: pos,
                message: format!("document with more than {MAX_ATTRIBUTES} attributes"),
            });
        }
        let a = a.map_err(|err| XmlError {
            position: pos,
            message: err.to_string(),
        })?;
        let key = a.key.as_ref().to_string();
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| XmlError {
                position: pos,
                message: err.to_string(),
            })?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name: e.name().as_ref().to_string(),
        attrs,
        children: Vec::new(),
    })
}

/// Parse a document and return its root element.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    let mut attributes = 0usize;
    loop {
        let pos = reader.buffer_position();
        let ev = reader.read_event().map_err(|e| XmlError {
            position: pos,
            message: e.to_string(),
        })?;
        let err = |message: &str| XmlError {
            position: pos,
            message: message.to_string(),
        };
        match ev {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                let _ = e;
                return Err(err("content after the root element"));
            }
            Event::Start(e) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(err("document too deep or too large"));
                }
                stack.push(element(&e, pos, &mut attributes)?);
            }
            Event::Empty(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(err("document too large"));
                }
                let el = element(&e, pos, &mut attributes)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(e) => {
                let el = stack.pop().ok_or_else(|| err("unexpected closing tag"))?;
                if e.name().as_ref() != el.name {
                    return Err(err("mismatched closing tag"));
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Eof => break,
            // Text, comments, declarations, processing instructions: Plex keeps its data in
            // attributes.
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError {
            position: reader.buffer_position(),
            message: "document ends inside an element".into(),
        });
    }
    root.ok_or(XmlError {
        position: 0,
        message: "no root element".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_attributes_and_children() {
        let x = r#"<?xml version="1.0"?><MediaContainer size="1"><Directory title="A &amp; B" year="2005"><Guid id="tvdb://1"/></Directory></MediaContainer>"#;
        let root = parse(x).unwrap();
        assert_eq!(root.name, "MediaContainer");
        let d = &root.children[0];
        assert_eq!(d.attr("title"), Some("A & B"));
        assert_eq!(d.attr_num::<i32>("year"), Some(2005));
        assert_eq!(d.children_named("Guid").count(), 1);
    }

    #[test]
    fn lenient_numbers_and_booleans() {
        let e = parse(
            r#"<V a="42" b=" 7 " c="+3" d="7.0" e="1.7e9" f="7.5" g="x" h="" i="-1" j="1e30" k="inf" l="NaN" t="1" u="true" v="0" w="yes"/>"#,
        )
        .unwrap();
        assert_eq!(e.attr_int::<i64>("a"), Some(42));
        assert_eq!(e.attr_int::<u32>("b"), Some(7));
        assert_eq!(e.attr_int::<u32>("c"), Some(3));
        assert_eq!(e.attr_int::<u32>("d"), Some(7));
        assert_eq!(e.attr_int::<i64>("e"), Some(1_700_000_000));
        for bad in ["f", "g", "h", "j", "k", "l", "missing"] {
            assert_eq!(e.attr_int::<i64>(bad), None, "{bad}");
        }
        assert_eq!(e.attr_int::<i64>("i"), Some(-1));
        assert_eq!(e.attr_int::<u32>("i"), None, "out of range for u32");
        assert_eq!(e.attr_bool("t"), Some(true));
        assert_eq!(e.attr_bool("u"), Some(true));
        assert_eq!(e.attr_bool("v"), Some(false));
        assert_eq!(e.attr_bool("w"), None);
        assert_eq!(e.attr_nonempty("h"), None);
        assert_eq!(e.attr_nonempty("b"), Some("7"));
    }

    #[test]
    fn rejects_broken_documents() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "<a x=\"1></a>",
            "not xml at all",
            &"<a>".repeat(100),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attributes_are_bounded_per_element_and_in_all() {
        use std::fmt::Write;
        // Many elements each within the bound, more than a million in all.
        let row: String = (0..100).map(|n| format!(" a{n}=\"\"")).collect();
        let mut x = String::from("<MediaContainer>");
        for _ in 0..10_001 {
            let _ = write!(x, "<Video{row}/>");
        }
        x.push_str("</MediaContainer>");
        let err = parse(&x).unwrap_err();
        assert!(
            err.message.contains("more than 1000000 attributes"),
            "{err}"
        );
        // One element with 5 million attributes (~50 MiB, under the body cap).
        let mut x = String::with_capacity(60 << 20);
        x.push_str("<MediaContainer");
        for n in 0..5_000_000 {
            let _ = write!(x, " a{n}=\"\"");
        }
        x.push_str("/>");
        let err = parse(&x).unwrap_err();
        assert!(err.message.contains("more than 256 attributes"), "{err}");
        // At the bounds: accepted.
        let row: String = (0..256).map(|n| format!(" a{n}=\"{n}\"")).collect();
        let ok = parse(&format!(
            "<MediaContainer{row}><Video{row}/></MediaContainer>"
        ))
        .unwrap();
        assert_eq!((ok.attrs.len(), ok.children[0].attrs.len()), (256, 256));
    }
}
