//! Parsers for the values config tables share, so `timeout = "30s"` or a base URL means the
//! same thing — and is refused with the same words — in the host's tables and in every plugin,
//! and for the `Retry-After` header every HTTP plugin reads.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer};
pub use url::Url;

/// The hint every duration error ends with.
const DURATION_HINT: &str = "expected e.g. \"30s\", \"5m\", \"1h 30m\" or \"2 days\"";

/// What a duration key takes, as the "expected …" of a type error.
const DURATION_LIKE: &str = "a duration string like \"30s\", \"5m\", \"1h 30m\" or \"2 days\"";

/// THE duration grammar of plexsync.toml, for the host's keys and every plugin's alike:
/// humantime's (`"250ms"`, `"30s"`, `"5m"`, `"1h 30m"`, `"2 days"`, `"1.5s"`), surrounding
/// spaces ignored. Zero is a duration here; keys that need more say so ([`parse_duration_max`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); {DURATION_HINT}"))?;
    if d > LONGEST {
        return Err(format!(
            "{text:?} is longer than any setting takes (at most {})",
            human(LONGEST)
        ));
    }
    Ok(d)
}

/// No setting means more than a century, and every one is added to clocks and turned into
/// milliseconds somewhere: humantime takes up to ~584 billion years, which overflows both.
pub const LONGEST: Duration = Duration::from_secs(100 * 365 * 86_400);

/// [`parse_duration`], above zero and at most `max` (named in the error as config values are
/// written).
pub fn parse_duration_max(text: &str, max: Duration) -> Result<Duration, String> {
    check_duration(parse_duration(text)?, max)
}

/// The bounds of [`parse_duration_max`] for a duration already parsed (e.g. by
/// [`ConfigDuration`]).
pub fn check_duration(d: Duration, max: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    if d > max {
        return Err(format!("is longer than the maximum of {}", human(max)));
    }
    Ok(d)
}

/// `#[serde(deserialize_with = "de_duration")]`: a duration string in [`parse_duration`]'s
/// grammar (the host's config uses it for every duration key).
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    ConfigDuration::deserialize(d).map(|c| c.0)
}

/// A duration key of a plugin's typed config: a string in [`parse_duration`]'s grammar. A
/// wrong type or grammar is a serde error, so [`crate::PluginContext::parse_config`] names its
/// exact key path; bounds are the plugin's to check ([`check_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_LIKE)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConfigDuration, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(Visit)
    }
}

/// A duration the way config values are written (`10s`, `250ms`, `30d`); always accepted by
/// [`parse_duration`].
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The hint every size error ends with.
const SIZE_HINT: &str = "a whole number of bytes (e.g. 2097152) or a size like \"2 MiB\"";

/// THE size grammar of plexsync.toml's byte keys: a whole number of bytes, or a number and a
/// unit. Decimal units count in thousands (`kB`/`KB`, `MB`, `GB`), binary ones in 1024s
/// (`KiB`, `MiB`, `GiB`); units are case-insensitive, a space between is allowed, a fraction
/// rounds down to whole bytes (`"1.5 KiB"` is 1536). So `"2MB"` is 2 000 000 bytes and
/// `"2 MiB"` 2 097 152.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a size; expected {SIZE_HINT}");
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "byte" | "bytes" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(bad());
    }
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let mut bytes = whole.checked_mul(scale).ok_or_else(bad)?;
    if !frac.is_empty() {
        // Digits after the point, exactly: `frac / 10^len * scale`, rounded down.
        let digits = frac.len().min(9) as u32;
        let f: u64 = frac[..digits as usize].parse().map_err(|_| bad())?;
        bytes = bytes
            .checked_add(f * scale / 10u64.pow(digits))
            .ok_or_else(bad)?;
    }
    Ok(bytes)
}

/// `#[serde(deserialize_with = "de_size")]`: a byte count as a TOML integer or a size string
/// in [`parse_size`]'s grammar.
pub fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct Visit;
    impl serde::de::Visitor<'_> for Visit {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(SIZE_HINT)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<usize, E> {
            let n = parse_size(v).map_err(E::custom)?;
            usize::try_from(n).map_err(|_| E::custom(format!("{v:?} is too large")))
        }
    }
    d.deserialize_any(Visit)
}

/// A config value described the way a person wrote it, for the "got …" half of an error:
/// `the string "2MB"`, `the number -5`, `true`, `a list`, `a table`.
pub fn describe_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", quote_short(s)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a table".into(),
    }
}

/// `s` in double quotes, cut to 60 characters (a config value can be long).
pub fn quote_short(s: &str) -> String {
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{:?}", cut + "...")
    } else {
        format!("{s:?}")
    }
}

/// A deserializer's message about a config value in plain words. serde's messages name Rust
/// types (`invalid type: string "2MB", expected usize`, `struct TitleConfig`, `a sequence`);
/// people wrote TOML, so this says `expected a whole number (0 or more), got the string "2MB"`.
/// `got` describes the value actually written (see [`describe_json`]); without it the value
/// serde quoted is used. `expected` replaces what serde says is expected, for keys whose
/// caller knows better (`an address with a port, e.g. "127.0.0.1:8750"`). Messages not from
/// serde's own vocabulary (a duration's grammar, a plugin's check) are already in words and
/// pass through.
pub fn plain_message(message: &str, got: Option<&str>, expected: Option<&str>) -> String {
    let m = message.trim();
    let got_or = |unexp: &str| {
        got.map(str::to_string)
            .unwrap_or_else(|| plain_unexpected(unexp))
    };
    let invalid = m
        .strip_prefix("invalid type: ")
        .or_else(|| m.strip_prefix("invalid value: "));
    if let Some((unexp, exp)) = invalid.and_then(|r| r.split_once(", expected ")) {
        let plain = plain_expected(exp);
        let exp = match expected {
            // The right kind of value out of the type's range (a count past 4294967295):
            // the caller's phrase alone would not say why the number is refused.
            Some(e) if m.starts_with("invalid value") && plain != exp.trim() => {
                format!("{e} ({plain})")
            }
            Some(e) => e.to_string(),
            None => plain,
        };
        return format!("expected {exp}, got {}", got_or(unexp));
    }
    if let Some((n, exp)) = m
        .strip_prefix("invalid length ")
        .and_then(|r| r.split_once(", expected "))
    {
        let exp = expected
            .map(str::to_string)
            .unwrap_or_else(|| plain_expected(exp));
        return format!("expected {exp}, got {n} item(s)");
    }
    if let Some(rest) = m.strip_prefix("unknown field ") {
        let (name, tail) = ticked(rest);
        let known = if tail.contains("there are no fields") {
            "this table takes no keys".to_string()
        } else {
            format!("the keys here are: {}", ticked_list(tail))
        };
        return format!("unknown key `{name}`; {known}");
    }
    if let Some(rest) = m.strip_prefix("unknown variant ") {
        let (name, tail) = ticked(rest);
        return format!(
            "unknown value {name:?}; expected one of: {}",
            ticked_list(tail)
        );
    }
    if let Some(rest) = m.strip_prefix("missing field ") {
        return format!("the key `{}` is required here", ticked(rest).0);
    }
    if let Some(rest) = m.strip_prefix("duplicate field ") {
        return format!("the key `{}` is given twice", ticked(rest).0);
    }
    if m.starts_with("data did not match any variant") || expected.is_some() {
        let exp = expected.unwrap_or("a value of another kind");
        return match got {
            Some(g) => format!("expected {exp}, got {g}"),
            None => format!("expected {exp}"),
        };
    }
    m.to_string()
}

/// The name between the first pair of backticks, and what follows it.
fn ticked(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('`') {
        if let Some((name, tail)) = rest.split_once('`') {
            return (name, tail);
        }
    }
    (s, "")
}

/// "`a`, `b`" (after "expected" / "one of") as "a, b".
fn ticked_list(s: &str) -> String {
    s.split('`')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .join(", ")
}

/// serde's `Unexpected` text (`string "x"`, `integer `5``, `sequence`) in words.
fn plain_unexpected(u: &str) -> String {
    let inner = || ticked(u).0.to_string();
    if let Some(s) = u.strip_prefix("string ") {
        format!("the string {s}")
    } else if u.starts_with("integer ") || u.starts_with("floating point ") {
        let n = u.split('`').nth(1).unwrap_or("");
        format!("the number {n}")
    } else if u.starts_with("boolean ") {
        u.split('`').nth(1).unwrap_or("true or false").to_string()
    } else if u.starts_with("character ") {
        format!("the string {:?}", u.split('`').nth(1).unwrap_or(""))
    } else if u == "sequence" {
        "a list".into()
    } else if u == "map" {
        "a table".into()
    } else if u.starts_with('`') {
        inner()
    } else {
        "a value of another kind".into()
    }
}

/// serde's "expected" text (a Rust type name or a visitor's phrase) in words.
fn plain_expected(e: &str) -> String {
    let e = e.trim();
    match e {
        "u8" => "a whole number from 0 to 255".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "u64" | "usize" | "u128" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" | "i128" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" | "a borrowed string" | "a char" | "a character" => "a string".into(),
        "a sequence" | "a tuple" => "a list".into(),
        "a map" | "map" => "a table".into(),
        "unit" => "nothing".into(),
        _ if e.starts_with("struct ") => "a table".into(),
        _ if e.starts_with("tuple") || e.starts_with("a tuple") => "a list".into(),
        _ if e.starts_with("enum ") || e.starts_with("variant ") => {
            "one of the accepted values".into()
        }
        _ if e.starts_with("one of ") => format!("one of: {}", ticked_list(e)),
        _ => e.to_string(),
    }
}

/// THE `Retry-After` parser (RFC 9110 §10.2.3): delta-seconds or an HTTP-date, at most `max`
/// (a server asking for a day, or a broken header asking for centuries, must not park work
/// that long). More digits than fit are "a very long time" and clamp to `max`; a date in the
/// past means now (zero); anything else (negative, fractional, garbage) is ignored (None).
pub fn parse_retry_after(value: &str, now: SystemTime, max: Duration) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(max));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(max))
}

/// A remote's announced request budget from its response headers, by `header(name)` (any
/// case): the IETF draft's `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset`
/// (reset in seconds), its newer combined `RateLimit: limit=100, remaining=7, reset=30`, and
/// the widespread `X-RateLimit-*` (whose reset is seconds, or a Unix time when it is one —
/// GitHub's form). Resets are clamped to `max`; None when no header says anything usable.
pub fn parse_rate_limit<'h>(
    header: impl Fn(&str) -> Option<&'h str>,
    now: SystemTime,
    max: Duration,
) -> Option<crate::RateLimit> {
    let num = |v: &str| -> Option<u64> {
        // A list (`100, 100;w=3600`) names the tightest window first.
        let first = v.split([',', ';']).next()?.trim();
        first.parse::<u64>().ok()
    };
    let reset = |v: &str| -> Option<Duration> {
        let n = num(v)?;
        // Seconds until reset, unless it can only be a Unix time (past 2001-09-09).
        let secs = if n >= 1_000_000_000 {
            let unix = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
            n.saturating_sub(unix)
        } else {
            n
        };
        Some(Duration::from_secs(secs).min(max))
    };
    let mut rl = crate::RateLimit::default();
    if let Some(v) = header("ratelimit") {
        // Each list member is one policy (`"burst";r=0;t=5, "day";r=900;t=50000`), or, in the
        // older draft, one field (`limit=100, remaining=50, reset=30`). The tightest policy
        // (least remaining) is the one to plan by; a field its member lacks comes from any.
        let mut any = crate::RateLimit::default();
        let mut tightest: Option<crate::RateLimit> = None;
        for member in v.split(',') {
            let mut m = crate::RateLimit::default();
            for item in member.split(';') {
                let Some((k, val)) = item.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "limit" | "q" => m.limit = num(val),
                    "remaining" | "r" => m.remaining = num(val),
                    "reset" | "t" => m.reset_after = reset(val),
                    _ => {}
                }
            }
            any.limit = any.limit.or(m.limit);
            any.remaining = any.remaining.or(m.remaining);
            any.reset_after = any.reset_after.or(m.reset_after);
            if let Some(r) = m.remaining {
                if tightest
                    .as_ref()
                    .and_then(|t| t.remaining)
                    .is_none_or(|t| r < t)
                {
                    tightest = Some(m);
                }
            }
        }
        rl = match tightest {
            Some(t) => crate::RateLimit {
                limit: t.limit.or(any.limit),
                remaining: t.remaining,
                reset_after: t.reset_after.or(any.reset_after),
            },
            None => any,
        };
    }
    for prefix in ["ratelimit-", "x-ratelimit-"] {
        let h = |name: &str| header(&format!("{prefix}{name}"));
        rl.limit = rl.limit.or_else(|| h("limit").and_then(num));
        rl.remaining = rl.remaining.or_else(|| h("remaining").and_then(num));
        rl.reset_after = rl.reset_after.or_else(|| h("reset").and_then(reset));
    }
    (rl != crate::RateLimit::default()).then_some(rl)
}

/// An HTTP-date for `at` (tests and fakes that send `Retry-After`).
pub fn fmt_http_date(at: SystemTime) -> String {
    httpdate::fmt_http_date(at)
}

/// An http(s) base URL that endpoint paths are appended to. `secret` names the secret that
/// holds the credentials, for the message when the URL carries some. The value is never
/// echoed: a URL with credentials must not end up in a log.
pub fn parse_base_url(text: &str, secret: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("is not a valid absolute URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("must use http or https, not `{other}`")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in the URL would sit in clear text in plexsync.toml and leak through
        // any message that shows the URL.
        return Err(format!(
            "must not contain a user name or password; store the key with `plexsync secret set {secret}`"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        // Endpoint paths are appended to the base path; a query or fragment would be lost or
        // end up in the wrong place.
        return Err(format!(
            "must not have a query (`?…`) or fragment (`#…`); credentials go in the `{secret}` secret"
        ));
    }
    if url.cannot_be_a_base() {
        return Err("cannot have paths appended to it".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_past_a_century_is_refused() {
        assert_eq!(parse_duration("36500d"), Ok(LONGEST));
        for text in ["36501d", "300000000000y", "101y"] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains("at most 36500d"), "{text}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration(" 250ms "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        // What people write, as the host has always accepted it.
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("2 days"),
            Ok(Duration::from_secs(2 * 86_400))
        );
        assert_eq!(parse_duration("5 s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "d",
            "5",
            "-1s",
            "1h, 30m",
            "soon",
            "99999999999999999999d",
            "18446744073709551615d",
            "５s",
        ] {
            let why = parse_duration(bad).unwrap_err();
            assert!(why.contains("expected e.g."), "{bad:?}: {why}");
        }
        let hour = Duration::from_secs(3600);
        assert_eq!(parse_duration_max("60m", hour), Ok(hour));
        assert_eq!(parse_duration_max("1h", hour), Ok(hour));
        assert_eq!(
            parse_duration_max("61m", hour),
            Err("is longer than the maximum of 1h".into())
        );
        assert_eq!(
            parse_duration_max("0ms", hour),
            Err("must be greater than zero".into())
        );
        for d in [1500, 90_000, 600_000, 7_200_000, 86_400_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&human(d)), Ok(d), "{}", human(d));
        }
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_secs(600)), "10m");
    }

    #[test]
    fn config_durations_deserialize_from_strings_only() {
        let d: ConfigDuration = serde_json::from_value(serde_json::json!("1h 30m")).unwrap();
        assert_eq!(d.0, Duration::from_secs(5400));
        let e = serde_json::from_value::<ConfigDuration>(serde_json::json!(5)).unwrap_err();
        assert!(e.to_string().contains("a duration string like"), "{e}");
        let e = serde_json::from_value::<ConfigDuration>(serde_json::json!("5")).unwrap_err();
        assert!(e.to_string().contains("is not a duration"), "{e}");
    }

    #[test]
    fn sizes() {
        for (text, want) in [
            ("2097152", 2_097_152),
            ("2MB", 2_000_000),
            ("2 MiB", 2_097_152),
            ("2mib", 2_097_152),
            ("256KiB", 262_144),
            ("256 kB", 256_000),
            ("1.5 KiB", 1536),
            ("1G", 1_000_000_000),
            ("1 GiB", 1 << 30),
            (" 64 bytes ", 64),
            ("0", 0),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text:?}");
        }
        for bad in [
            "",
            "MB",
            "2 MBs",
            "-1",
            "1..5MB",
            ".5MB",
            "2 XB",
            "99999999999999999999GB",
        ] {
            let why = parse_size(bad).unwrap_err();
            assert!(why.contains("2 MiB"), "{bad:?}: {why}");
        }
    }

    #[test]
    fn serde_messages_in_plain_words() {
        let p = |m: &str| plain_message(m, None, None);
        assert_eq!(
            p("invalid type: string \"2MB\", expected usize"),
            "expected a whole number (0 or more), got the string \"2MB\""
        );
        assert_eq!(
            p("invalid value: integer `-5`, expected u32"),
            "expected a whole number from 0 to 4294967295, got the number -5"
        );
        assert_eq!(
            p("invalid type: integer `99999999999999999999` as i128, expected usize"),
            "expected a whole number (0 or more), got the number 99999999999999999999"
        );
        assert_eq!(
            p("invalid type: sequence, expected struct TitleConfig"),
            "expected a table, got a list"
        );
        assert_eq!(
            p("invalid type: boolean `true`, expected f32"),
            "expected a number, got true"
        );
        assert_eq!(
            p("invalid type: map, expected a sequence"),
            "expected a list, got a table"
        );
        assert_eq!(
            p("unknown field `listne`, expected one of `listen`, `public_url`"),
            "unknown key `listne`; the keys here are: listen, public_url"
        );
        assert_eq!(
            p("unknown field `x`, there are no fields"),
            "unknown key `x`; this table takes no keys"
        );
        assert_eq!(
            p("unknown variant `verbose`, expected one of `a`, `b`"),
            "unknown value \"verbose\"; expected one of: a, b"
        );
        assert_eq!(
            plain_message(
                "data did not match any variant of untagged enum AccountSel",
                Some("the number 1.5"),
                Some("an account name or id")
            ),
            "expected an account name or id, got the number 1.5"
        );
        // Already in words: kept.
        let d = parse_duration("soon").unwrap_err();
        assert_eq!(p(&d), d);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let hour = Duration::from_secs(3600);
        let p = |v: &str| parse_retry_after(v, now, hour);
        assert_eq!(p("7"), Some(Duration::from_secs(7)));
        assert_eq!(p(" 0 "), Some(Duration::ZERO));
        assert_eq!(p("86400"), Some(hour));
        assert_eq!(p("99999999999999999999999"), Some(hour));
        assert_eq!(
            p(&fmt_http_date(now + Duration::from_secs(90))),
            Some(Duration::from_secs(90))
        );
        // The three date forms RFC 9110 makes recipients accept.
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        assert_eq!(fmt_http_date(at), "Tue, 14 Nov 2023 22:15:00 GMT");
        for form in [
            "Tue, 14 Nov 2023 22:15:00 GMT",
            "Tuesday, 14-Nov-23 22:15:00 GMT",
            "Tue Nov 14 22:15:00 2023",
        ] {
            assert_eq!(p(form), Some(Duration::from_secs(100)), "{form}");
        }
        assert_eq!(
            p(&fmt_http_date(now - Duration::from_secs(20))),
            Some(Duration::ZERO)
        );
        assert_eq!(p(&fmt_http_date(now + 2 * hour)), Some(hour));
        for junk in ["", " ", "-1", "1.5", "+3", "soon", "3 s", "0x10"] {
            assert_eq!(p(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn base_urls() {
        assert!(parse_base_url("http://127.0.0.1:3000/api/plexsync", "k").is_ok());
        assert!(parse_base_url("https://tracker.example/", "k").is_ok());
        for bad in [
            "",
            "tracker.example/api",
            "ftp://tracker.example/",
            "file:///etc/passwd",
            "http://user:pw@tracker.example/",
            "http://tracker.example/api?token=x",
            "http://tracker.example/api#frag",
            "mailto:someone@example.com",
        ] {
            assert!(parse_base_url(bad, "k").is_err(), "{bad:?} was accepted");
        }
        let why =
            parse_base_url("http://user:hunter2@tracker.example/", "tracker-key").unwrap_err();
        assert!(!why.contains("hunter2"), "{why}");
        assert!(why.contains("plexsync secret set tracker-key"), "{why}");
    }
}

#[cfg(test)]
mod rate_limit_tests {
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime};

    use super::parse_rate_limit;
    use crate::RateLimit;

    fn parse(headers: &[(&str, &str)]) -> Option<RateLimit> {
        let h: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        parse_rate_limit(
            |n| h.get(n).map(String::as_str),
            now,
            Duration::from_secs(86_400),
        )
    }

    #[test]
    fn every_header_form() {
        let want = Some(RateLimit {
            limit: Some(100),
            remaining: Some(7),
            reset_after: Some(Duration::from_secs(30)),
        });
        let ietf = [
            ("RateLimit-Limit", "100"),
            ("RateLimit-Remaining", "7"),
            ("RateLimit-Reset", "30"),
        ];
        assert_eq!(parse(&ietf), want);
        assert_eq!(
            parse(&[("RateLimit", "limit=100, remaining=7, reset=30")]),
            want
        );
        let x = [
            ("X-RateLimit-Limit", "100"),
            ("X-RateLimit-Remaining", "7"),
            ("X-RateLimit-Reset", "1800000030"),
        ];
        assert_eq!(parse(&x), want, "a Unix-time reset");
        let policy = [
            ("RateLimit-Limit", "100, 100;w=3600"),
            ("RateLimit-Remaining", "7"),
        ];
        assert_eq!(parse(&policy).unwrap().limit, Some(100));
    }

    /// Several policies in one `RateLimit` header: the tightest (least remaining) is the one
    /// planned by, whatever order they come in.
    #[test]
    fn the_tightest_of_several_policies_wins() {
        for v in [
            "\"burst\";r=0;t=5, \"day\";r=900;t=50000",
            "\"day\";r=900;t=50000, \"burst\";r=0;t=5",
        ] {
            let rl = parse(&[("RateLimit", v)]).unwrap();
            assert_eq!(rl.remaining, Some(0), "{v}");
            assert_eq!(rl.reset_after, Some(Duration::from_secs(5)), "{v}");
        }
        let one = parse(&[("RateLimit", "\"default\";r=50;t=30")]).unwrap();
        assert_eq!(one.remaining, Some(50));
        assert_eq!(one.reset_after, Some(Duration::from_secs(30)));
    }

    #[test]
    fn nothing_usable_is_none_and_resets_are_clamped() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[("X-RateLimit-Remaining", "many")]), None);
        let far = parse(&[("X-RateLimit-Reset", "999999999")]).unwrap();
        assert_eq!(far.reset_after, Some(Duration::from_secs(86_400)));
        let past = parse(&[("X-RateLimit-Reset", "1700000000")]).unwrap();
        assert_eq!(past.reset_after, Some(Duration::ZERO));
    }
}
