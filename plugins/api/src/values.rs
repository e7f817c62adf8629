//! Parsers for the values config tables share, so `timeout = "30s"` or a base URL means the
//! same thing — and is refused with the same words — in the host's tables and in every plugin,
//! and for the `Retry-After` header every HTTP plugin reads.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer};
pub use url::Url;

/// The hint every duration error ends with.
const DURATION_HINT: &str = "expected e.g. \"30s\", \"5m\", \"1h 30m\" or \"2 days\"";

/// THE duration grammar of plexsync.toml, for the host's keys and every plugin's alike:
/// humantime's (`"250ms"`, `"30s"`, `"5m"`, `"1h 30m"`, `"2 days"`, `"1.5s"`), surrounding
/// spaces ignored. Zero is a duration here; keys that need more say so ([`parse_duration_max`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); {DURATION_HINT}"))
}

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
                write!(f, "a duration string ({DURATION_HINT})")
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
        assert!(e.to_string().contains("a duration string"), "{e}");
        let e = serde_json::from_value::<ConfigDuration>(serde_json::json!("5")).unwrap_err();
        assert!(e.to_string().contains("is not a duration"), "{e}");
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
