//! A secret value that never shows itself: redacted `Debug`/`Display`, zeroized on drop.

use std::fmt;

use zeroize::Zeroizing;

/// A secret string (token, API key). Read it with [`Secret::expose`] at the point of use only.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Secret {
    /// `text` with every occurrence of this secret replaced by `with`: as written, and as a
    /// server echoing it back may have escaped it (JSON's `\/` and `\"`, `\uXXXX`, HTML
    /// entities, percent-encoding), since error pages that quote a request header are the
    /// way a key leaks into a message. An empty secret matches nothing.
    pub fn redact_in(&self, text: &str, with: &str) -> String {
        let key = self.expose();
        if key.is_empty() {
            return text.to_string();
        }
        let mut out = text.replace(key, with);
        for form in escaped_forms(key) {
            if form != key && !form.is_empty() {
                out = out.replace(&form, with);
            }
        }
        out
    }
}

/// The ways a server may have escaped `key` when quoting it back.
fn escaped_forms(key: &str) -> Vec<String> {
    let json_min: String = key
        .chars()
        .map(|c| match c {
            '/' => "\\/".to_string(),
            '"' => "\\\"".to_string(),
            '\\' => "\\\\".to_string(),
            c => c.to_string(),
        })
        .collect();
    let json_quotes: String = key
        .chars()
        .map(|c| match c {
            '"' => "\\\"".to_string(),
            '\\' => "\\\\".to_string(),
            c => c.to_string(),
        })
        .collect();
    let escape_each = |hex: &dyn Fn(char) -> String| -> String {
        key.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~') {
                    c.to_string()
                } else {
                    hex(c)
                }
            })
            .collect()
    };
    let json_unicode = escape_each(&|c| format!("\\u{:04x}", c as u32));
    let json_unicode_upper = escape_each(&|c| format!("\\u{:04X}", c as u32));
    let html: String = key
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            c => c.to_string(),
        })
        .collect();
    let html_slash = html.replace('/', "&#x2F;");
    let percent_with = |upper: bool| -> String {
        key.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    (b as char).to_string()
                } else if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect()
    };
    vec![
        json_min,
        json_quotes,
        json_unicode,
        json_unicode_upper,
        html,
        html_slash,
        percent_with(true),
        percent_with(false),
    ]
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-token".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-token");
    }

    #[test]
    fn a_secret_echoed_back_escaped_is_redacted_too() {
        let s = Secret::new("ab/cd+ef&g\"h==".into());
        for echoed in [
            r#"{"got":"Bearer ab/cd+ef&g\"h=="}"#,
            r#"{"got":"Bearer ab\/cd+ef&g\"h=="}"#,
            r#"{"got":"Bearer ab\u002fcd\u002bef\u0026g\u0022h\u003d\u003d"}"#,
            r#"{"got":"Bearer ab\u002Fcd\u002Bef\u0026g\u0022h\u003D\u003D"}"#,
            "<p>Bearer ab/cd+ef&amp;g&quot;h==</p>",
            "<p>Bearer ab&#x2F;cd+ef&amp;g&quot;h==</p>",
            "token=ab%2Fcd%2Bef%26g%22h%3D%3D",
            "token=ab%2fcd%2bef%26g%22h%3d%3d",
        ] {
            let out = s.redact_in(echoed, "<redacted>");
            assert!(
                out.contains("<redacted>") && !out.contains("cd"),
                "{echoed} -> {out}"
            );
        }
        assert_eq!(Secret::new(String::new()).redact_in("abc", "x"), "abc");
    }
}
