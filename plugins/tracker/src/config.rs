//! The plugin's `[tracker]` config table: parsing and validating `url`, `timeout` and
//! `user_agent`. Every error is a config error that names the offending key, so
//! `plexsync check` and a SIGHUP reload can point a person at the exact line.

use std::time::Duration;

use plexsync_plugin_api::{PluginContext, PluginError};
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use serde_json::Value;

/// Default for `timeout`.
pub(crate) const DEFAULT_TIMEOUT: &str = "30s";

/// Default `User-Agent` when `user_agent` is not set.
pub(crate) const DEFAULT_USER_AGENT: &str = concat!("plexsync-tracker/", env!("CARGO_PKG_VERSION"));

/// Longest accepted `timeout`. Beyond an hour a request is not "slow" but stuck, and keeping
/// the value bounded means no timer arithmetic downstream can overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The table exactly as written in plexsync.toml (minus `kind`, which the host strips).
/// Values are taken as raw JSON and typed by hand below, because serde's own type errors
/// ("invalid type: integer, expected a string") do not say which key was wrong.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    url: Value,
    #[serde(default)]
    timeout: Option<Value>,
    #[serde(default)]
    user_agent: Option<Value>,
}

/// A string-valued key, or a config error naming it.
fn string(key: &str, value: Value) -> Result<String, PluginError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(PluginError::config(format!(
            "tracker: `{key}` must be a string, not {}",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::Array(_) => "an array",
                Value::Object(_) => "a table",
                Value::String(_) => "a string",
            }
        ))),
    }
}

/// The validated config.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Base URL of the tracker's plexsync API; endpoint paths are appended to it.
    pub base: Url,
    pub timeout: Duration,
    pub user_agent: HeaderValue,
}

/// Parse and validate the plugin's table.
pub(crate) fn parse(ctx: &PluginContext) -> Result<Config, PluginError> {
    // An empty `[tracker]` table may reach us as null; treat it as `{}` so the error is the
    // useful "missing field `url`" rather than a type mismatch.
    let raw: RawConfig = if ctx.config.is_null() {
        serde_json::from_value(Value::Object(Default::default()))
            .map_err(|e| PluginError::config(e.to_string()))
    } else {
        ctx.parse_config()
    }
    .map_err(|e| PluginError::config(format!("tracker: {}", e.message)))?;

    let url = string("url", raw.url)?;
    let base =
        parse_url(&url).map_err(|why| PluginError::config(format!("tracker: `url` {why}")))?;
    let timeout = match raw.timeout {
        Some(v) => string("timeout", v)?,
        None => DEFAULT_TIMEOUT.to_string(),
    };
    let timeout = parse_duration(&timeout)
        .map_err(|why| PluginError::config(format!("tracker: `timeout` = {timeout:?}: {why}")))?;
    let user_agent = raw
        .user_agent
        .map(|v| string("user_agent", v))
        .transpose()?;
    let user_agent = match user_agent.as_deref() {
        None => HeaderValue::from_static(DEFAULT_USER_AGENT),
        Some(ua) if ua.trim().is_empty() => {
            return Err(PluginError::config(
                "tracker: `user_agent` must not be empty",
            ));
        }
        Some(ua) => HeaderValue::from_str(ua).map_err(|_| {
            PluginError::config(
                "tracker: `user_agent` contains characters not allowed in an HTTP header",
            )
        })?,
    };
    Ok(Config {
        base,
        timeout,
        user_agent,
    })
}

/// Validate the tracker's base URL. The value itself is never echoed back: a URL with
/// credentials in it must not end up in a log.
fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("is not a valid absolute URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("must use http or https, not `{other}`")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in the URL would be stored in clear text in plexsync.toml and could
        // leak through any message that shows the URL.
        return Err(
            "must not contain a user name or password; put the API key in the `tracker-key` secret"
                .into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        // Endpoint paths are appended to the base path; a query or fragment would either be
        // lost or end up in the wrong place.
        return Err("must not have a query (`?…`) or fragment (`#…`)".into());
    }
    if url.cannot_be_a_base() {
        return Err("cannot have paths appended to it".into());
    }
    Ok(url)
}

/// Parse a humane duration: a whole number followed by `ms`, `s` or `m` (`"500ms"`, `"30s"`,
/// `"2m"`). Written by hand because these three units are all the plugin needs.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a whole number followed by ms, s or m, e.g. \"30s\"";
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(HINT.into());
    }
    // Too many digits for u64 is certainly above the maximum; say so rather than "invalid".
    let n: u64 = digits
        .parse()
        .map_err(|_| "is longer than the maximum of 60m".to_string())?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(HINT.into()),
    };
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    if duration > MAX_TIMEOUT {
        return Err("is longer than the maximum of 60m".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_ms_s_and_m() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 500ms "), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("60m"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn bad_durations_are_refused_without_panicking() {
        for bad in [
            "",
            "s",
            "30",
            "30 s",
            "30h",
            "-5s",
            "1.5s",
            "0s",
            "0ms",
            "61m",
            "3601s",
            "99999999999999999999999999s",
            "18446744073709551615m",
            "３０s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn urls_are_validated() {
        assert!(parse_url("http://127.0.0.1:3000/api/plexsync").is_ok());
        assert!(parse_url("https://tracker.example/").is_ok());
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
            assert!(parse_url(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn url_errors_never_echo_credentials() {
        let why = parse_url("http://user:hunter2@tracker.example/").unwrap_err();
        assert!(!why.contains("hunter2"), "{why}");
    }
}
