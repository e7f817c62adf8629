//! Parsers for the values plugin tables share, so `timeout = "30s"` or a base URL means the
//! same thing — and is refused with the same words — in every plugin.

use std::time::Duration;

pub use url::Url;

/// A whole number followed by `ms`, `s`, `m`, `h` or `d` (`"500ms"`, `"10s"`, `"30d"`),
/// above zero. Written by hand: five units are all plexsync's config needs, and the error
/// says exactly that.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a whole number followed by ms, s, m, h or d, e.g. \"10s\"";
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(HINT.into());
    }
    let n: u64 = digits.parse().map_err(|_| "is far too long".to_string())?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => return Err(HINT.into()),
    }
    .ok_or("is far too long")?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// [`parse_duration`] with an upper bound, named in the error as config values are written.
pub fn parse_duration_max(text: &str, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d > max {
        return Err(format!("is longer than the maximum of {}", human(max)));
    }
    Ok(d)
}

/// A duration the way config values are written (`10s`, `250ms`, `30d`).
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
        for bad in [
            "",
            "d",
            "5",
            "5 s",
            "1.5s",
            "-1s",
            "0d",
            "0ms",
            "99999999999999999999d",
            "18446744073709551615d",
            "５s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let hour = Duration::from_secs(3600);
        assert_eq!(parse_duration_max("60m", hour), Ok(hour));
        assert_eq!(
            parse_duration_max("61m", hour),
            Err("is longer than the maximum of 1h".into())
        );
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_secs(600)), "10m");
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
