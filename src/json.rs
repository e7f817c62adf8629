//! JSON on the webhook's hot path: reading a payload or a stored row, and writing a row.
//!
//! Same bytes and same errors as `serde_json::from_slice` / `to_vec`, with less work a value:
//! - **Reading** checks UTF-8 once for the whole input and then parses it as `&str`.
//!   `from_slice` checks every string (keys included) on its own; a webhook payload has ~100 of
//!   them, and the check's per-call cost was ~4 % of the daemon's instructions under load.
//!   Input that is not UTF-8 goes through `from_slice` as before, so its error (and the line
//!   and column it names) does not change.
//! - **Writing** goes through a writer that appends single bytes with `Vec::push`: serde_json
//!   writes every quote, colon and comma as its own one-byte `write_all`, and `Vec`'s own
//!   `write_all` (a non-inlined `extend_from_slice`) cost ~30 instructions each, ~450 times a
//!   webhook.

use serde::{Deserialize, Serialize};

/// `serde_json::from_slice`, with UTF-8 checked once up front (see the module docs).
pub fn from_bytes<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(s) => serde_json::from_str(s),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// `serde_json::to_vec`, into a buffer of `room` bytes to begin with.
pub fn to_vec_with<T: Serialize + ?Sized>(v: &T, room: usize) -> serde_json::Result<Vec<u8>> {
    let mut w = Appender(Vec::with_capacity(room));
    serde_json::to_writer(&mut w, v)?;
    Ok(w.0)
}

/// A `Vec<u8>` writer whose one-byte writes are a `push`.
struct Appender(Vec<u8>);

impl std::io::Write for Appender {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let [b] = buf {
            self.0.push(*b);
        } else {
            self.0.extend_from_slice(buf);
        }
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn writes_what_serde_json_writes() {
        let v = json!({"a": "quote \" and \\ and \u{1} and é", "n": [1, -2, 3.5, null, true],
            "nested": {"k": ""}, "": "empty key"});
        assert_eq!(to_vec_with(&v, 0).unwrap(), serde_json::to_vec(&v).unwrap());
        assert_eq!(
            to_vec_with(&v, 1024).unwrap(),
            serde_json::to_vec(&v).unwrap()
        );
    }

    #[test]
    fn reads_what_serde_json_reads_and_fails_where_it_fails() {
        let ok = br#"{"a": "x\u00e9y", "b": [1, 2], "c": "\ud83d\ude00"}"#;
        assert_eq!(
            from_bytes::<Value>(ok).unwrap(),
            serde_json::from_slice::<Value>(ok).unwrap()
        );
        // Not UTF-8: the same error, at the same place.
        let bad: &[u8] = b"{\"a\": \"x\xffy\"}";
        let ours = from_bytes::<Value>(bad).unwrap_err();
        let theirs = serde_json::from_slice::<Value>(bad).unwrap_err();
        assert_eq!(ours.to_string(), theirs.to_string());
        assert_eq!(
            (ours.line(), ours.column()),
            (theirs.line(), theirs.column())
        );
        // Valid UTF-8, invalid JSON: the same error too.
        let broken = b"{\"a\": \"\xc3\xa9\", }";
        assert_eq!(
            from_bytes::<Value>(broken).unwrap_err().to_string(),
            serde_json::from_slice::<Value>(broken)
                .unwrap_err()
                .to_string()
        );
    }

    #[test]
    fn borrows_from_the_input() {
        #[derive(Deserialize)]
        struct B<'a> {
            #[serde(borrow)]
            s: std::borrow::Cow<'a, str>,
        }
        let b: B<'_> = from_bytes(br#"{"s": "plain"}"#).unwrap();
        assert!(matches!(b.s, std::borrow::Cow::Borrowed("plain")));
    }
}
