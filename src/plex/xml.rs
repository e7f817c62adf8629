//! A small, bounded XML tree for Plex responses (MediaContainer documents).
//!
//! Plex answers are small flat documents whose data lives in attributes; a tree of elements
//! with their attributes is all the callers need. Depth and element count are bounded so a
//! hostile or broken server cannot make us recurse or allocate without limit.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 1_000_000;

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

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("malformed XML at byte {position}: {message}")]
pub struct XmlError {
    pub position: u64,
    pub message: String,
}

fn element(e: &BytesStart<'_>, pos: u64) -> Result<Element, XmlError> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
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
                stack.push(element(&e, pos)?);
            }
            Event::Empty(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(err("document too large"));
                }
                let el = element(&e, pos)?;
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
}
