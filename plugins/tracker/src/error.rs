//! How a failed call to the tracker becomes a [`PluginError`]: the error class of an HTTP
//! status or transport failure, `Retry-After`, a short sanitised snippet of the answer, and
//! redaction of the tracker key from every message the plugin produces.
//!
//! The plugin only classifies; the host's pipeline decides whether and when to retry.

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use plexsync_plugin_api::RateLimit;
use plexsync_plugin_api::values::{parse_rate_limit, parse_retry_after};
use plexsync_plugin_api::{ErrorClass, PluginError, Secret};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Upper bound for a `Retry-After` we pass on: a tracker asking for a day (or a broken header
/// asking for centuries) must not park the outbox that long.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Characters of an error body shown in a message.
pub(crate) const SNIPPET_CHARS: usize = 200;

/// Bytes of an error body read at most. Far more than the snippet needs, so whitespace
/// collapsing still fills it, yet bounded so a huge error page costs nothing.
pub(crate) const ERROR_BODY_LIMIT: usize = 8 * 1024;

/// The class of a non-2xx status.
pub(crate) fn status_class(status: StatusCode) -> ErrorClass {
    match status.as_u16() {
        // 408 Request Timeout and 429 Too Many Requests say "later", like every 5xx.
        408 | 429 | 500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// `Retry-After` from a response, by the plugin API's one parser, clamped to
/// [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now, MAX_RETRY_AFTER)
}

/// What the tracker announced of its request budget (`RateLimit-*`, `X-RateLimit-*`), by
/// the plugin API's one parser; resets clamped like a Retry-After.
pub(crate) fn rate_limit(headers: &HeaderMap, now: SystemTime) -> Option<RateLimit> {
    parse_rate_limit(
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        now,
        MAX_RETRY_AFTER,
    )
}

/// Removes the tracker key from text that leaves the plugin. A tracker (or a proxy in front
/// of it) may echo request headers back in an error page, and serde errors quote the values
/// they reject, so every message passes through here.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    key: Option<Secret>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor(<redacted>)")
    }
}

const REDACTED: &str = "<redacted>";

impl Redactor {
    pub(crate) fn new(key: Option<Secret>) -> Self {
        // An empty key would "match" everywhere; the caller refuses empty keys anyway.
        Self {
            key: key.filter(|k| !k.expose().is_empty()),
        }
    }

    /// `text` with every occurrence of the key replaced.
    pub(crate) fn clean(&self, text: &str) -> String {
        match &self.key {
            Some(k) => k.redact_in(text, REDACTED),
            None => text.to_string(),
        }
    }

    /// When a body was cut at a read limit, the key may straddle the cut, leaving a prefix of
    /// it that [`Redactor::clean`] cannot recognise. Dropping the last `key.len()` bytes
    /// removes any such prefix: an occurrence crossing the cut starts inside them.
    pub(crate) fn trim_cut(&self, body: &mut Vec<u8>) {
        if let Some(k) = &self.key {
            // Escaped (`\uXXXX` a character), an echo is up to six times the key's length.
            body.truncate(
                body.len()
                    .saturating_sub(k.expose().len().saturating_mul(6)),
            );
        }
    }

    /// A [`PluginError`] of `class` whose message is cleaned.
    pub(crate) fn error(&self, class: ErrorClass, message: &str) -> PluginError {
        let message = self.clean(message);
        match class {
            ErrorClass::Transient => PluginError::transient(message),
            ErrorClass::Permanent => PluginError::permanent(message),
            ErrorClass::Config => PluginError::config(message),
        }
    }
}

/// A short, single-line, printable excerpt of a response body for an error message: key
/// redacted first (so truncation can't leave part of it), control and bidi characters
/// replaced, whitespace collapsed, at most [`SNIPPET_CHARS`] characters.
pub(crate) fn snippet(body: &[u8], redactor: &Redactor) -> String {
    let text = redactor.clean(&String::from_utf8_lossy(body));
    let mut out = String::new();
    let mut count = 0;
    let mut pending_space = false;
    for c in text.chars() {
        // Control characters (newlines, escapes that could forge log lines or colour a
        // terminal) and bidi overrides (which can visually reorder a log line) become spaces.
        let blank = c.is_whitespace()
            || c.is_control()
            || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if blank {
            pending_space = count > 0;
            continue;
        }
        let need = if pending_space { 2 } else { 1 };
        if count + need > SNIPPET_CHARS {
            // More text remains: mark the cut, keeping the total at the limit.
            if count >= SNIPPET_CHARS {
                out.pop();
            }
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
        count += need;
    }
    if out.is_empty() {
        "(empty body)".into()
    } else {
        out
    }
}

/// Describe a transport failure (no HTTP status): its class and a message without the URL.
/// `target` is `host:port`, named for connection failures. Everything here is transient
/// except a request the client could not even build.
pub(crate) fn transport(
    err: reqwest::Error,
    timeout: Duration,
    target: &str,
) -> (ErrorClass, String) {
    if err.is_timeout() {
        return (
            ErrorClass::Transient,
            format!("timed out after {}", human(timeout)),
        );
    }
    let class = if err.is_builder() {
        ErrorClass::Permanent
    } else {
        ErrorClass::Transient
    };
    // reqwest's own Display repeats the whole URL, so it is dropped.
    let err = err.without_url();
    if err.is_connect() {
        // The chain reads "error sending request: client error (Connect): tcp connect
        // error: Connection refused"; only the root cause tells a person anything.
        let mut root: &dyn std::error::Error = &err;
        while let Some(cause) = root.source() {
            root = cause;
        }
        return (class, format!("cannot connect to {target}: {root}"));
    }
    // Otherwise walk the whole chain, so the root cause is visible.
    let mut text = format!("request failed: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    (class, text)
}

/// `Duration` as the user wrote it in config terms (`30s`, `250ms`).
pub(crate) fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(key: &str) -> Redactor {
        Redactor::new(Some(Secret::new(key.into())))
    }

    #[test]
    fn status_classes() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(
                status_class(StatusCode::from_u16(s).unwrap()),
                ErrorClass::Transient,
                "{s}"
            );
        }
        for s in [300, 301, 400, 401, 403, 404, 409, 410, 422, 499, 600] {
            assert_eq!(
                status_class(StatusCode::from_u16(s).unwrap()),
                ErrorClass::Permanent,
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_forms() {
        // The parser is the plugin API's (tested there); this is the header and the clamp.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, v.parse().unwrap());
            retry_after(&h, now)
        };
        assert_eq!(at("7"), Some(Duration::from_secs(7)));
        assert_eq!(at("86400"), Some(MAX_RETRY_AFTER));
        let date = plexsync_plugin_api::values::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(at(&date), Some(Duration::from_secs(90)));
        assert_eq!(at("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn snippet_is_single_line_short_and_printable() {
        let r = Redactor::default();
        assert_eq!(snippet(b"", &r), "(empty body)");
        assert_eq!(
            snippet(b"  {\n  \"error\":\t\"nope\"\r\n}\n", &r),
            "{ \"error\": \"nope\" }"
        );
        assert_eq!(snippet(b"a\x1b[31mred\x07\x00b", &r), "a [31mred b");
        assert_eq!(snippet("x\u{202E}y".as_bytes(), &r), "x y");
        assert_eq!(snippet(b"\xff\xfeok", &r), "\u{FFFD}\u{FFFD}ok");

        let long = "é".repeat(1000);
        let s = snippet(long.as_bytes(), &r);
        assert_eq!(s.chars().count(), SNIPPET_CHARS);
        assert!(s.ends_with('…'));

        let exactly = "x".repeat(SNIPPET_CHARS);
        assert_eq!(snippet(exactly.as_bytes(), &r), exactly);

        let words = "ab ".repeat(500);
        let s = snippet(words.as_bytes(), &r);
        assert!(s.chars().count() <= SNIPPET_CHARS, "{}", s.chars().count());
        assert!(s.ends_with('…'));
    }

    #[test]
    fn snippet_redacts_before_truncating() {
        let key = "sk-0123456789abcdef";
        // The key starts just before the snippet limit: truncation must not leave its prefix.
        let body = format!("{}{key}", "x".repeat(SNIPPET_CHARS - 5));
        let s = snippet(body.as_bytes(), &redactor(key));
        assert!(!s.contains("sk-01"), "{s}");
        let s = snippet(format!("token was {key}!").as_bytes(), &redactor(key));
        assert_eq!(s, "token was <redacted>!");
    }

    /// A tracker (or a proxy) quoting the request's header back escapes it: PHP's
    /// `json_encode` writes `/` as `\/`, an HTML error page writes `&` as `&amp;`.
    #[test]
    fn an_escaped_echo_of_the_key_is_redacted() {
        let r = redactor("ab/cd+ef&gh==");
        for body in [
            r#"{"error":"bad token","got":"Bearer ab\/cd+ef&gh=="}"#,
            "<pre>Authorization: Bearer ab/cd+ef&amp;gh==</pre>",
        ] {
            let s = snippet(body.as_bytes(), &r);
            assert!(s.contains("<redacted>") && !s.contains("cd+ef"), "{s}");
        }
    }

    #[test]
    fn trim_cut_drops_a_straddling_key_prefix() {
        let key = "sk-0123456789abcdef";
        let r = redactor(key);
        let full = format!("{}{key}", " ".repeat(ERROR_BODY_LIMIT - 4));
        let mut cut = full.as_bytes()[..ERROR_BODY_LIMIT].to_vec();
        assert!(String::from_utf8_lossy(&cut).contains("sk-0"));
        r.trim_cut(&mut cut);
        assert!(!String::from_utf8_lossy(&cut).contains("sk-0"));
        assert!(!snippet(&cut, &r).contains("sk-0"));
    }

    #[test]
    fn errors_are_cleaned_and_keep_their_class() {
        let r = redactor("hunter2");
        let e = r.error(ErrorClass::Transient, "echo: Bearer hunter2");
        assert!(e.is_transient());
        assert_eq!(e.message, "echo: Bearer <redacted>");
        assert!(!format!("{e:?}").contains("hunter2"));
        assert_eq!(
            r.error(ErrorClass::Permanent, "x").class,
            ErrorClass::Permanent
        );
        assert_eq!(r.error(ErrorClass::Config, "x").class, ErrorClass::Config);
        assert_eq!(
            Redactor::new(Some(Secret::new(String::new()))).clean("abc"),
            "abc"
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }
}
