//! The plugin's `[tracker]` config table: parsing and validating `url`, `timeout` and
//! `user_agent`. Every error is a config error that names the offending key, so
//! `plexsync check` and a SIGHUP reload can point a person at the exact line.

use std::time::Duration;

use plexsync_plugin_api::values::{ConfigDuration, Url, check_duration, parse_base_url};
use plexsync_plugin_api::{PluginContext, PluginError};
use reqwest::header::HeaderValue;
use serde::Deserialize;

/// Default for `timeout`.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default `User-Agent` when `user_agent` is not set.
pub(crate) const DEFAULT_USER_AGENT: &str = concat!("plexsync-tracker/", env!("CARGO_PKG_VERSION"));

/// Longest accepted `timeout`. Beyond an hour a request is not "slow" but stuck, and keeping
/// the value bounded means no timer arithmetic downstream can overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

fn parse_url(text: &str) -> Result<Url, String> {
    parse_base_url(text, "tracker-key")
}

/// The table exactly as written in plexsync.toml (minus `kind`, and minus the host's own keys
/// such as `catalogue_refresh`, which the host strips), typed: a wrong type, a duration
/// outside the shared grammar or an unknown key is a serde error whose key the plugin API
/// reports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Optional here so its absence is "`url` is required", keyed like every other error.
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    timeout: Option<ConfigDuration>,
    #[serde(default)]
    user_agent: Option<String>,
}

/// A config error about `key`; the host names the key (and its line) before the message.
fn error(key: &str, why: impl std::fmt::Display) -> PluginError {
    PluginError::config(why.to_string()).with_key(key)
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
    let raw: RawConfig = ctx.parse_config()?;
    let url = raw.url.ok_or_else(|| {
        error(
            "url",
            "is required: the base URL of the tracker's plexsync API",
        )
    })?;
    let base = parse_url(&url).map_err(|why| error("url", why))?;
    let timeout = match raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(ConfigDuration(d)) => {
            check_duration(d, MAX_TIMEOUT).map_err(|why| error("timeout", why))?
        }
    };
    let user_agent = match raw.user_agent.as_deref() {
        None => HeaderValue::from_static(DEFAULT_USER_AGENT),
        Some(ua) if ua.trim().is_empty() => return Err(error("user_agent", "must not be empty")),
        Some(ua) => HeaderValue::from_str(ua).map_err(|_| {
            error(
                "user_agent",
                "contains characters not allowed in an HTTP header",
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

    fn ctx(config: serde_json::Value) -> PluginContext {
        PluginContext {
            config,
            secrets: Default::default(),
            cache: std::sync::Arc::new(plexsync_plugin_api::MemoryCache::default()),
            config_dir: ".".into(),
        }
    }

    fn timeout(text: &str) -> Result<Duration, PluginError> {
        parse(&ctx(
            serde_json::json!({"url": "http://t/api", "timeout": text}),
        ))
        .map(|c| c.timeout)
    }

    #[test]
    fn durations_use_the_shared_grammar() {
        assert_eq!(timeout("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(timeout(" 500ms ").unwrap(), Duration::from_millis(500));
        assert_eq!(timeout("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(timeout("60m").unwrap(), Duration::from_secs(3600));
        assert_eq!(timeout("1m 30s").unwrap(), Duration::from_secs(90));
        let absent = parse(&ctx(serde_json::json!({"url": "http://t/api"}))).unwrap();
        assert_eq!(absent.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn bad_durations_are_refused_without_panicking() {
        for bad in [
            "",
            "s",
            "30",
            "30h",
            "-5s",
            "0s",
            "0ms",
            "61m",
            "3601s",
            "99999999999999999999999999s",
            "18446744073709551615m",
            "３０s",
        ] {
            let e = timeout(bad).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("timeout"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn errors_carry_their_key() {
        for (v, key) in [
            (serde_json::json!({}), Some("url")),
            (serde_json::json!(null), Some("url")),
            (serde_json::json!({"url": 5}), Some("url")),
            (serde_json::json!({"url": "ftp://x/"}), Some("url")),
            (
                serde_json::json!({"url": "http://t/", "timeout": 5}),
                Some("timeout"),
            ),
            (
                serde_json::json!({"url": "http://t/", "user_agent": ""}),
                Some("user_agent"),
            ),
            (
                serde_json::json!({"url": "http://t/", "user_agent": "a\nb"}),
                Some("user_agent"),
            ),
            (
                serde_json::json!({"url": "http://t/", "retry": 3}),
                Some("retry"),
            ),
        ] {
            let e = parse(&ctx(v.clone())).unwrap_err();
            assert_eq!(e.class, plexsync_plugin_api::ErrorClass::Config, "{v}");
            assert_eq!(e.key.as_deref(), key, "{v}: {e}");
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
