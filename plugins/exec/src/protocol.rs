//! The wire protocol between the plugin and the external program (JSON lines; described for
//! program authors in README.md): the hello, requests, the catalogue notification, replies,
//! their validation into a [`MatchOutcome`], and a line reader whose memory is bounded.

use plexsync_plugin_api::{Candidate, Catalogue, MatchOutcome, ShowQuery};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The protocol version this plugin speaks. A program announcing another one is refused.
pub const PROTOCOL: u64 = 1;
/// What the program's hello must say in its `hello` field.
pub const HELLO: &str = "plexsync-matcher";
/// Longest line accepted from the program's stdout; a longer one is dropped unread (and the
/// request it may have answered times out), so a runaway program cannot exhaust memory.
pub const MAX_LINE: usize = 1024 * 1024;
/// Longest stderr line forwarded to the log; the rest of a longer line is cut.
pub const MAX_STDERR_LINE: usize = 8 * 1024;
/// At most this many candidates of one reply are kept.
pub const MAX_CANDIDATES: usize = 100;

/// The first line the program writes.
#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    pub hello: String,
    pub protocol: Value,
    /// How the program wants to be called in logs.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether it wants the tracker's catalogue (`catalogue` notifications).
    #[serde(default)]
    pub catalogue: bool,
}

/// Why a hello is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HelloError {
    #[error(
        "its first line is not a hello (expected {{\"hello\": \"{HELLO}\", \"protocol\": {PROTOCOL}}}): {0}"
    )]
    NotHello(String),
    #[error("it is not a plexsync matcher (hello {0:?}, expected {HELLO:?})")]
    WrongHello(String),
    #[error("it speaks protocol {0}, but this plexsync speaks protocol {PROTOCOL} only")]
    WrongProtocol(String),
}

/// Parse and check the program's first line.
pub fn parse_hello(line: &[u8]) -> Result<Hello, HelloError> {
    let hello: Hello = serde_json::from_slice(line)
        .map_err(|e| HelloError::NotHello(format!("{e} in {}", preview(line))))?;
    if hello.hello != HELLO {
        return Err(HelloError::WrongHello(hello.hello));
    }
    if hello.protocol.as_u64() != Some(PROTOCOL) {
        return Err(HelloError::WrongProtocol(hello.protocol.to_string()));
    }
    Ok(hello)
}

/// A request line: `{"id": 1, "method": "match", "params": {…}}`.
pub fn match_request(id: u64, query: &ShowQuery) -> Vec<u8> {
    #[derive(Serialize)]
    struct Req<'a> {
        id: u64,
        method: &'static str,
        params: &'a ShowQuery,
    }
    line(&Req {
        id,
        method: "match",
        params: query,
    })
}

/// The catalogue notification: `{"method": "catalogue", "params": {"shows": [...]}}` (no id,
/// no reply).
pub fn catalogue_notification(catalogue: &Catalogue) -> Vec<u8> {
    #[derive(Serialize)]
    struct Params<'a> {
        shows: plexsync_plugin_api::Shows<'a>,
    }
    #[derive(Serialize)]
    struct Note<'a> {
        method: &'static str,
        params: Params<'a>,
    }
    line(&Note {
        method: "catalogue",
        params: Params {
            shows: catalogue.shows(),
        },
    })
}

fn line<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs (strings, numbers, vectors) cannot fail; an empty line
    // would be ignored by the program rather than crash anything.
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The `error` member of a reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReplyError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub transient: bool,
}

/// A reply, once its id has been matched to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Result(Value),
    Error(ReplyError),
}

/// What one line from the program's stdout is.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Reply {
        id: u64,
        reply: Reply,
    },
    /// Valid JSON that is not a reply we can route (no id, no result/error).
    Other(String),
    /// Not JSON at all.
    Garbage(String),
}

/// Classify one stdout line.
pub fn parse_incoming(line: &[u8]) -> Incoming {
    let v: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return Incoming::Garbage(format!("{e} in {}", preview(line))),
    };
    let Some(id) = v.get("id").and_then(Value::as_u64) else {
        return Incoming::Other(format!("a line without a numeric id: {}", preview(line)));
    };
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        return match ReplyError::deserialize(e) {
            Ok(err) => Incoming::Reply {
                id,
                reply: Reply::Error(err),
            },
            Err(_) => Incoming::Reply {
                id,
                reply: Reply::Error(ReplyError {
                    message: format!("unreadable error object: {}", preview(line)),
                    transient: false,
                }),
            },
        };
    }
    match v.get("result") {
        Some(r) => Incoming::Reply {
            id,
            reply: Reply::Result(r.clone()),
        },
        None => Incoming::Other(format!("id {id} without result or error")),
    }
}

/// A show id as the program may write it: a string or a number.
fn show_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "show_id must be a non-empty string or a number, got {other}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum WireOutcome {
    Definite {
        #[serde(deserialize_with = "show_id")]
        show_id: String,
        confidence: f32,
        #[serde(default)]
        method: Option<String>,
    },
    Candidates {
        candidates: Vec<WireCandidate>,
    },
    NoMatch,
}

#[derive(Debug, Deserialize)]
struct WireCandidate {
    #[serde(deserialize_with = "show_id")]
    show_id: String,
    score: f32,
    #[serde(default)]
    method: Option<String>,
}

fn unit(what: &str, v: f32) -> Result<f32, String> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{what} {v} is not between 0 and 1"))
    }
}

/// Turn a `result` into an outcome: shapes and ranges checked, ids checked against the
/// catalogue (when there is one). `method` defaults to `default_method`. Candidates naming
/// shows the catalogue does not hold are dropped (returned as the second value, for the log);
/// a definite answer naming one is an error, since mapping to it would dead-letter exports.
pub fn outcome(
    result: Value,
    catalogue: &Catalogue,
    default_method: &str,
) -> Result<(MatchOutcome, Vec<String>), String> {
    let wire: WireOutcome =
        serde_json::from_value(result).map_err(|e| format!("malformed result: {e}"))?;
    let known = |id: &str| catalogue.is_empty() || catalogue.get(id).is_some();
    let method = |m: Option<String>| {
        m.filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| default_method.to_string())
    };
    match wire {
        WireOutcome::Definite {
            show_id,
            confidence,
            method: m,
        } => {
            let confidence = unit("confidence", confidence)?;
            if !known(&show_id) {
                return Err(format!(
                    "definite answer names show {show_id:?}, which is not in the catalogue"
                ));
            }
            Ok((
                MatchOutcome::Definite {
                    show_id,
                    confidence,
                    method: method(m),
                },
                Vec::new(),
            ))
        }
        WireOutcome::Candidates { candidates } => {
            let mut out = Vec::new();
            let mut unknown = Vec::new();
            for c in candidates {
                let score = unit("candidate score", c.score)?;
                if !known(&c.show_id) {
                    unknown.push(c.show_id);
                    continue;
                }
                if out.len() < MAX_CANDIDATES {
                    out.push(Candidate {
                        show_id: c.show_id,
                        score,
                        method: method(c.method),
                    });
                }
            }
            Ok((MatchOutcome::Candidates { candidates: out }, unknown))
        }
        WireOutcome::NoMatch => Ok((MatchOutcome::NoMatch, Vec::new())),
    }
}

/// The start of a line, for logs and errors (lossy UTF-8, at most 200 characters).
pub fn preview(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().nth(200).is_some() {
        out.push('…');
    }
    format!("{out:?}")
}

/// One line read with [`read_line_capped`].
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A whole line (without its `\n` or `\r\n`) is in the buffer.
    Line,
    /// The line was longer than the cap: the buffer holds its first `cap` bytes, the rest was
    /// read and dropped. `len` is the full length.
    TooLong { len: usize },
    /// End of stream with nothing pending.
    Eof,
}

/// Read one line into `buf`, keeping at most `cap` bytes of it: memory stays bounded
/// whatever the other side writes. A last line without `\n` counts as a line.
pub async fn read_line_capped<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut len = 0usize;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if len == 0 {
                LineRead::Eof
            } else {
                finish(buf, len, cap)
            });
        }
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        len = len.saturating_add(chunk.len());
        reader.consume(used);
        if done {
            return Ok(finish(buf, len, cap));
        }
    }
}

fn finish(buf: &mut Vec<u8>, len: usize, cap: usize) -> LineRead {
    if len > cap {
        return LineRead::TooLong { len };
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    LineRead::Line
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexsync_plugin_api::CatalogShow;
    use serde_json::json;

    #[test]
    fn hello_is_checked() {
        let h = parse_hello(br#"{"hello": "plexsync-matcher", "protocol": 1, "name": "x", "catalogue": true, "future": 1}"#)
            .unwrap();
        assert_eq!(h.name.as_deref(), Some("x"));
        assert!(h.catalogue);
        assert!(matches!(
            parse_hello(br#"{"hello": "plexsync-matcher", "protocol": 2}"#),
            Err(HelloError::WrongProtocol(p)) if p == "2"
        ));
        assert!(matches!(
            parse_hello(br#"{"hello": "plexsync-matcher", "protocol": "1"}"#),
            Err(HelloError::WrongProtocol(_))
        ));
        assert!(matches!(
            parse_hello(br#"{"hello": "other", "protocol": 1}"#),
            Err(HelloError::WrongHello(_))
        ));
        assert!(matches!(
            parse_hello(b"hi there"),
            Err(HelloError::NotHello(_))
        ));
        assert!(matches!(
            parse_hello(br#"{"id": 1}"#),
            Err(HelloError::NotHello(_))
        ));
    }

    #[test]
    fn requests_and_notifications_are_single_lines() {
        let q = ShowQuery {
            rating_key: Some("7".into()),
            title: "A\nB".into(),
            year: Some(2001),
            guids: vec!["tvdb://1".into()],
        };
        let r = match_request(3, &q);
        assert_eq!(r.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(
            v,
            json!({"id": 3, "method": "match", "params": {"rating_key": "7", "title": "A\nB", "year": 2001, "guids": ["tvdb://1"]}})
        );
        let c = Catalogue::new(vec![CatalogShow {
            id: "1".into(),
            title: "T".into(),
            ..Default::default()
        }]);
        let v: Value = serde_json::from_slice(&catalogue_notification(&c)).unwrap();
        assert_eq!(v["method"], "catalogue");
        assert!(v.get("id").is_none());
        assert_eq!(v["params"]["shows"][0]["id"], "1");
    }

    #[test]
    fn incoming_lines_are_classified() {
        assert_eq!(
            parse_incoming(br#"{"id": 4, "result": {"outcome": "no_match"}}"#),
            Incoming::Reply {
                id: 4,
                reply: Reply::Result(json!({"outcome": "no_match"}))
            }
        );
        assert_eq!(
            parse_incoming(br#"{"id": 5, "error": {"message": "db down", "transient": true}}"#),
            Incoming::Reply {
                id: 5,
                reply: Reply::Error(ReplyError {
                    message: "db down".into(),
                    transient: true
                })
            }
        );
        assert!(matches!(
            parse_incoming(br#"{"id": 5, "error": 7}"#),
            Incoming::Reply {
                id: 5,
                reply: Reply::Error(ReplyError {
                    transient: false,
                    ..
                })
            }
        ));
        assert!(matches!(parse_incoming(b"not json"), Incoming::Garbage(_)));
        assert!(matches!(
            parse_incoming(br#"{"log": 1}"#),
            Incoming::Other(_)
        ));
        assert!(matches!(
            parse_incoming(br#"{"id": -1, "result": 1}"#),
            Incoming::Other(_)
        ));
        assert!(matches!(
            parse_incoming(br#"{"id": 1}"#),
            Incoming::Other(_)
        ));
    }

    #[test]
    fn outcomes_are_validated() {
        let cat = Catalogue::new(vec![
            CatalogShow {
                id: "1".into(),
                title: "A".into(),
                ..Default::default()
            },
            CatalogShow {
                id: "2".into(),
                title: "B".into(),
                ..Default::default()
            },
        ]);
        let (o, _) = outcome(
            json!({"outcome": "definite", "show_id": 1, "confidence": 0.95}),
            &cat,
            "exec:x",
        )
        .unwrap();
        assert_eq!(
            o,
            MatchOutcome::Definite {
                show_id: "1".into(),
                confidence: 0.95,
                method: "exec:x".into()
            }
        );
        let (o, unknown) = outcome(
            json!({"outcome": "candidates", "candidates": [{"show_id": "2", "score": 0.5, "method": "m"}, {"show_id": "9", "score": 0.4}]}),
            &cat,
            "exec:x",
        )
        .unwrap();
        assert_eq!(unknown, ["9"]);
        assert_eq!(
            o,
            MatchOutcome::Candidates {
                candidates: vec![Candidate {
                    show_id: "2".into(),
                    score: 0.5,
                    method: "m".into()
                }]
            }
        );
        assert_eq!(
            outcome(json!({"outcome": "no_match"}), &cat, "x")
                .unwrap()
                .0,
            MatchOutcome::NoMatch
        );
        for bad in [
            json!({"outcome": "definite", "show_id": "9", "confidence": 1.0}),
            json!({"outcome": "definite", "show_id": "1", "confidence": 1.5}),
            json!({"outcome": "definite", "show_id": "", "confidence": 1.0}),
            json!({"outcome": "definite", "show_id": null, "confidence": 1.0}),
            json!({"outcome": "maybe"}),
            json!("no_match"),
            json!({"outcome": "candidates", "candidates": [{"show_id": "1", "score": -1}]}),
        ] {
            assert!(outcome(bad.clone(), &cat, "x").is_err(), "{bad}");
        }
        // Without a catalogue nothing can be checked against it.
        assert!(
            outcome(
                json!({"outcome": "definite", "show_id": "9", "confidence": 1.0}),
                &Catalogue::default(),
                "x"
            )
            .is_ok()
        );
    }

    #[tokio::test]
    async fn lines_are_capped_and_split() {
        let data = b"short\r\n0123456789abcdef\n\nlast".to_vec();
        // A tiny buffer makes lines span several fill_buf calls.
        let mut r = tokio::io::BufReader::with_capacity(3, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"short");
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::TooLong { len: 16 }
        );
        assert_eq!(buf, b"01234567");
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"");
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"last");
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::Eof
        );
    }

    #[test]
    fn previews_are_short() {
        let p = preview(&[b'a'; 500]);
        assert!(p.chars().count() < 210, "{p}");
        assert_eq!(preview(b"x"), "\"x\"");
    }
}
