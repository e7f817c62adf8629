//! The plugin's `[tracker]` config table: parsing and validating `url`, `timeout` and
//! `user_agent`. Every error is a config error that names the offending key, so
//! `plexsync check` and a SIGHUP reload can point a person at the exact line.

use std::time::Duration;

use plexsync_plugin_api::values::{Url, parse_base_url, parse_duration_max};
use plexsync_plugin_api::{PluginContext, PluginError};
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

fn parse_url(text: &str) -> Result<Url, String> {
    parse_base_url(text, "tracker-key")
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_duration_max(text, MAX_TIMEOUT)
}

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
    let timeout = parse_timeout(&timeout)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_ms_s_and_m() {
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout(" 500ms "), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("60m"), Ok(Duration::from_secs(3600)));
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
            assert!(parse_timeout(bad).is_err(), "{bad:?} was accepted");
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
