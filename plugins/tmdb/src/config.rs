//! The `[[matchers]] kind = "tmdb"` config table: its keys, their defaults and their
//! validation. Every error is a config error that names the offending key (also set as
//! [`PluginError::key`]), so `plexsync check` and a reload point a person at the exact line.

use std::time::Duration;

pub(crate) use plexsync_plugin_api::values::human;
use plexsync_plugin_api::values::{
    ConfigDuration, Url, check_duration, parse_base_url, parse_duration,
};
use plexsync_plugin_api::{PluginContext, PluginError};
use serde::Deserialize;
use serde_json::Value;

/// Default `api_url`: TMDB's v3 API.
pub const DEFAULT_API_URL: &str = "https://api.themoviedb.org/3";
/// Default `timeout` of one request.
pub const DEFAULT_TIMEOUT: &str = "10s";
/// Default `rate_limit`: TMDB's long-documented ceiling of 40 requests per 10 seconds. TMDB
/// has since relaxed it, but staying under the old figure costs nothing at our volume.
pub const DEFAULT_RATE_LIMIT: &str = "40/10s";
/// Default `cache_ttl` for a found conversion: ids of a show do not change.
pub const DEFAULT_CACHE_TTL: &str = "30d";
/// Default `negative_cache_ttl`: an id TMDB does not know yet may be added any day.
pub const DEFAULT_NEGATIVE_CACHE_TTL: &str = "1d";
/// Default `max_retry_wait`: the longest `Retry-After` of a 429 waited out in place.
pub const DEFAULT_MAX_RETRY_WAIT: &str = "10s";

/// Most requests a `rate_limit` may allow per window: the limiter keeps one timestamp per
/// request of the window, so this also bounds its memory.
const MAX_RATE_REQUESTS: u32 = 10_000;

/// The table exactly as written (minus `kind`), typed: a wrong type, a duration outside the
/// shared grammar or an unknown key is a serde error whose key the plugin API reports.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    timeout: Option<ConfigDuration>,
    #[serde(default)]
    rate_limit: Option<String>,
    #[serde(default)]
    cache_ttl: Option<ConfigDuration>,
    #[serde(default)]
    negative_cache_ttl: Option<ConfigDuration>,
    #[serde(default)]
    max_retry_wait: Option<ConfigDuration>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TmdbConfig {
    /// Base of the v3 API; `find/{id}` is appended to it.
    pub api_url: Url,
    /// Timeout of one request (connect included).
    pub timeout: Duration,
    /// At most `rate_requests` requests in any `rate_window`.
    pub rate_requests: u32,
    pub rate_window: Duration,
    /// How long a found conversion is cached.
    pub cache_ttl: Duration,
    /// How long "TMDB knows no show with this id" is cached.
    pub negative_cache_ttl: Duration,
    /// A 429 whose `Retry-After` is at most this long is waited out and the request repeated;
    /// a longer one becomes a transient error carrying `retry_after`.
    pub max_retry_wait: Duration,
}

/// A config error about `key`; the host names the key (and its line) before the message.
fn config_error(key: &str, why: impl std::fmt::Display) -> PluginError {
    PluginError::config(why.to_string()).with_key(key)
}

/// A duration key: its value (or the default), above zero and at most `max`.
fn duration(
    key: &str,
    value: Option<ConfigDuration>,
    default: &str,
    max: Duration,
) -> Result<Duration, PluginError> {
    let d = match value {
        Some(ConfigDuration(d)) => d,
        None => parse_duration(default).map_err(|why| config_error(key, why))?,
    };
    check_duration(d, max).map_err(|why| config_error(key, why))
}

impl TmdbConfig {
    /// Parse and validate the plugin's table; an absent table means all defaults.
    pub fn from_context(ctx: &PluginContext) -> Result<TmdbConfig, PluginError> {
        TmdbConfig::from_value(&ctx.config)
    }

    /// Parse and validate a table given as JSON.
    pub fn from_value(value: &Value) -> Result<TmdbConfig, PluginError> {
        let raw: RawConfig = plexsync_plugin_api::parse_config(value)?;
        let url = raw.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        let api_url =
            parse_base_url(url, "tmdb-key").map_err(|why| config_error("api_url", why))?;
        let day = Duration::from_secs(86_400);
        let timeout = duration(
            "timeout",
            raw.timeout,
            DEFAULT_TIMEOUT,
            Duration::from_secs(600),
        )?;
        let rate = raw.rate_limit.as_deref().unwrap_or(DEFAULT_RATE_LIMIT);
        let (rate_requests, rate_window) = parse_rate(rate)
            .map_err(|why| config_error("rate_limit", format!("{rate:?}: {why}")))?;
        let cache_ttl = duration("cache_ttl", raw.cache_ttl, DEFAULT_CACHE_TTL, 3650 * day)?;
        let negative_cache_ttl = duration(
            "negative_cache_ttl",
            raw.negative_cache_ttl,
            DEFAULT_NEGATIVE_CACHE_TTL,
            3650 * day,
        )?;
        let max_retry_wait = duration(
            "max_retry_wait",
            raw.max_retry_wait,
            DEFAULT_MAX_RETRY_WAIT,
            Duration::from_secs(600),
        )?;
        Ok(TmdbConfig {
            api_url,
            timeout,
            rate_requests,
            rate_window,
            cache_ttl,
            negative_cache_ttl,
            max_retry_wait,
        })
    }
}

/// `"<n>/<duration>"`, e.g. `"40/10s"`: at most n requests in any window of that length.
pub(crate) fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    const HINT: &str = "expected requests/window, e.g. \"40/10s\"";
    let (n, window) = text.split_once('/').ok_or(HINT)?;
    let n = n.trim();
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HINT.into());
    }
    let n: u32 = n
        .parse()
        .map_err(|_| format!("at most {MAX_RATE_REQUESTS} requests per window"))?;
    if n == 0 {
        return Err("must allow at least one request".into());
    }
    if n > MAX_RATE_REQUESTS {
        return Err(format!("at most {MAX_RATE_REQUESTS} requests per window"));
    }
    let window = parse_duration(window)?;
    if window.is_zero() {
        return Err("the window must be greater than zero".into());
    }
    if window > Duration::from_secs(86_400) {
        return Err("the window must be at most 1d".into());
    }
    Ok((n, window))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexsync_plugin_api::ErrorClass;
    use serde_json::json;

    #[test]
    fn defaults_when_absent_or_empty() {
        for v in [Value::Null, json!({})] {
            let c = TmdbConfig::from_value(&v).unwrap();
            assert_eq!(c.api_url.as_str(), "https://api.themoviedb.org/3");
            assert_eq!(c.timeout, Duration::from_secs(10));
            assert_eq!(
                (c.rate_requests, c.rate_window),
                (40, Duration::from_secs(10))
            );
            assert_eq!(c.cache_ttl, Duration::from_secs(30 * 86_400));
            assert_eq!(c.negative_cache_ttl, Duration::from_secs(86_400));
            assert_eq!(c.max_retry_wait, Duration::from_secs(10));
        }
    }

    #[test]
    fn every_key_can_be_set() {
        let c = TmdbConfig::from_value(&json!({
            "api_url": "http://127.0.0.1:8080/tmdb/3/",
            "timeout": "500ms",
            "rate_limit": "4/1s",
            "cache_ttl": "2h",
            "negative_cache_ttl": "15m",
            "max_retry_wait": "3s",
        }))
        .unwrap();
        assert_eq!(c.api_url.as_str(), "http://127.0.0.1:8080/tmdb/3/");
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(
            (c.rate_requests, c.rate_window),
            (4, Duration::from_secs(1))
        );
        assert_eq!(c.cache_ttl, Duration::from_secs(7200));
        assert_eq!(c.negative_cache_ttl, Duration::from_secs(900));
        assert_eq!(c.max_retry_wait, Duration::from_secs(3));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (json!({"api_key": "x"}), "api_key"),
            (json!({"api_url": "ftp://x"}), "api_url"),
            (json!({"api_url": "http://u:p@x/3"}), "api_url"),
            (json!({"api_url": "http://x/3?api_key=y"}), "api_url"),
            (json!({"api_url": 3}), "api_url"),
            (json!({"timeout": "10"}), "timeout"),
            (json!({"timeout": "11m"}), "timeout"),
            (json!({"timeout": 10}), "timeout"),
            (json!({"rate_limit": "40"}), "rate_limit"),
            (json!({"rate_limit": "0/10s"}), "rate_limit"),
            (json!({"rate_limit": "40/0s"}), "rate_limit"),
            (json!({"rate_limit": "99999/1s"}), "rate_limit"),
            (json!({"rate_limit": "-1/1s"}), "rate_limit"),
            (json!({"cache_ttl": "30"}), "cache_ttl"),
            (json!({"cache_ttl": "3651 days"}), "cache_ttl"),
            (json!({"negative_cache_ttl": "0s"}), "negative_cache_ttl"),
            (json!({"max_retry_wait": "1h"}), "max_retry_wait"),
        ];
        for (v, key) in cases {
            let e = TmdbConfig::from_value(&v).unwrap_err();
            assert_eq!(e.class, ErrorClass::Config, "{v}");
            assert_eq!(e.key.as_deref(), Some(key), "{v}: {}", e.message);
        }
        let e = TmdbConfig::from_value(&json!("tmdb")).unwrap_err();
        assert_eq!(e.class, ErrorClass::Config);
    }

    #[test]
    fn url_errors_never_echo_credentials() {
        let e = TmdbConfig::from_value(&json!({"api_url": "http://me:hunter2@x/3"})).unwrap_err();
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }

    #[test]
    fn durations_and_rates() {
        // The shared grammar, so "1h 30m" means what it means in the host's keys.
        let c = TmdbConfig::from_value(&json!({"cache_ttl": "1h 30m", "rate_limit": "40/1m 30s"}))
            .unwrap();
        assert_eq!(c.cache_ttl, Duration::from_secs(5400));
        assert_eq!(c.rate_window, Duration::from_secs(90));
        assert_eq!(parse_rate("40/10s"), Ok((40, Duration::from_secs(10))));
        assert_eq!(parse_rate(" 1 /250ms"), Ok((1, Duration::from_millis(250))));
        for bad in [
            "",
            "/",
            "40/",
            "/10s",
            "x/10s",
            "40/2d",
            "4294967296/1s",
            "40/10s/1",
            "40/0s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
        assert_eq!(human(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_secs(600)), "10m");
    }
}
