//! plexsync.toml: the typed configuration, its defaults, validation, and error messages that
//! name the file, line and key.
//!
//! Loading is two steps: serde (with `deny_unknown_fields`) checks the shape and types, then
//! [`Config::validate`] checks values. Every error is a [`ConfigError`] carrying the dotted key
//! and, where the key is present in the file, its line — so `plexsync check` and a refused
//! SIGHUP reload can point at the exact spot.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

// Every duration key uses the one grammar the plugins' keys use too (plugins/api `values`),
// so `"1h 30m"` means the same in `[poll]` as in a plugin's table.
use plexsync_plugin_api::values::{de_duration, de_size};
use serde::{Deserialize, Serialize};

/// A config error with the place it was found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted key path, e.g. `matching.auto_map_threshold` or `matchers[1].kind`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// `[server] forwarded_header`: the header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` when the request has one, else `Forwarded: for=`.
    #[default]
    Auto,
    /// Only `X-Forwarded-For` (nginx, Caddy, Traefik, HAProxy's `option forwardfor`).
    XForwardedFor,
    /// Only `Forwarded` (RFC 7239; HAProxy's `option forwarded`).
    Forwarded,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the webhook + admin HTTP listener.
    pub listen: String,
    /// Base URL Plex should use to reach us, when it differs from `http://<listen>`
    /// (reverse proxy, another host).
    pub public_url: Option<String>,
    /// Largest webhook request body; a byte count or a size like "2 MiB".
    #[serde(deserialize_with = "de_size")]
    pub max_body_bytes: usize,
    /// Largest JSON payload part of a webhook; a byte count or a size like "256 KiB".
    #[serde(deserialize_with = "de_size")]
    pub max_payload_bytes: usize,
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub header_timeout: Duration,
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub request_timeout: Duration,
    /// Webhook requests a minute per client address (0: unlimited), and how many at once.
    pub webhook_rate_limit: u32,
    pub webhook_rate_burst: u32,
    /// Admin API requests (TCP; the unix socket is not limited) a minute per client address.
    pub admin_rate_limit: u32,
    pub admin_rate_burst: u32,
    /// Reverse proxies (CIDR blocks) whose `X-Forwarded-For` / `Forwarded` headers are
    /// believed for the client address (rate limits, activity rows, logs); never for access.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Which header the trusted proxies write the client into: `auto` reads
    /// `X-Forwarded-For` when present, else `Forwarded`; naming one never reads the other (a
    /// proxy that writes only `Forwarded` passes a client's own `X-Forwarded-For` on).
    pub forwarded_header: ForwardedHeader,
    /// Open TCP connections at most; past it the oldest idle connection is closed.
    pub max_connections: usize,
    /// Open TCP connections at most from one peer address.
    pub max_connections_per_client: usize,
}

impl ServerConfig {
    pub fn webhook_rate(&self) -> crate::ratelimit::Rate {
        crate::ratelimit::Rate {
            per_minute: self.webhook_rate_limit,
            burst: self.webhook_rate_burst,
        }
    }
    pub fn admin_rate(&self) -> crate::ratelimit::Rate {
        crate::ratelimit::Rate {
            per_minute: self.admin_rate_limit,
            burst: self.admin_rate_burst,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8750".into(),
            public_url: None,
            max_body_bytes: 2 * 1024 * 1024,
            max_payload_bytes: 256 * 1024,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            webhook_rate_limit: 100,
            webhook_rate_burst: 30,
            admin_rate_limit: 600,
            admin_rate_burst: 120,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::Auto,
            max_connections: 512,
            max_connections_per_client: 128,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: "plexsync.redb".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    pub key_file: PathBuf,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            key_file: "plexsync.key".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Unix socket for the CLI; relative paths resolve against $RUNTIME_DIRECTORY, else the
    /// state folder. Empty string disables it.
    pub socket: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            socket: "plexsync.sock".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlexConfig {
    pub url: String,
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// X-Plex-Client-Identifier; generated and stored on first use when unset.
    pub client_identifier: Option<String>,
    /// Accounts whose plays are synced: server account ids or names. Empty: the owner.
    pub accounts: Vec<crate::accounts::AccountSel>,
}

impl Default for PlexConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:32400".into(),
            timeout: Duration::from_secs(15),
            client_identifier: None,
            accounts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchingConfig {
    #[serde(serialize_with = "ser_f32")]
    pub auto_map_threshold: f32,
    /// Same account + show + season + episode within this window is one viewing.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub dedupe_window: Duration,
    /// Create a show in the tracker when no matcher finds it but its TMDB id is known.
    pub auto_add_shows: bool,
}

impl Default for MatchingConfig {
    fn default() -> Self {
        Self {
            auto_map_threshold: 0.90,
            dedupe_window: Duration::from_secs(300),
            auto_add_shows: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Attempts before a batch goes to the dead letter.
    pub max_attempts: u32,
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub initial_backoff: Duration,
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub max_backoff: Duration,
    /// Episodes per export request.
    pub batch_size: usize,
    // -- issue 15 (helper EXPORTS): coalescing, request budget, requests in flight --
    /// How long the outbox must stay still before part-full batches go: while plays keep
    /// arriving (a burst, a backfill), each show's episodes gather into fuller requests.
    /// A lone play still goes at once (nothing arrived in the window before it). 0 = off.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub coalesce: Duration,
    /// The longest a part-full batch waits for the outbox to settle while plays keep
    /// arriving (a running backfill waits for its end, up to an hour).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub coalesce_max: Duration,
    /// Tracker requests at most in flight at once (never two of the same show).
    pub max_in_flight: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30 * 60),
            batch_size: 100,
            coalesce: Duration::from_millis(20),
            coalesce_max: Duration::from_secs(5),
            max_in_flight: 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// Poll Plex's watch history at all.
    pub enabled: bool,
    /// When to poll: six cron fields (sec min hour day-of-month month day-of-week), UTC.
    pub schedule: String,
    /// How far back each poll re-reads before its cursor (viewedAt has 1 s resolution and
    /// rows can land late).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub overlap: Duration,
    /// How far back the very first poll looks when there is no cursor yet.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub initial_lookback: Duration,
    /// Rows per history page.
    pub page_size: u64,
    /// Also scan show libraries for episodes marked watched by hand (no history row).
    pub library_scan: bool,
    /// First retry delay after a failed poll (doubles, with jitter, up to 10 minutes; a
    /// rejected token pauses four times as long, up to an hour).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub retry_backoff: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: "0 */5 * * * *".into(),
            overlap: Duration::from_secs(600),
            initial_lookback: Duration::from_secs(86_400),
            page_size: 200,
            library_scan: true,
            retry_backoff: Duration::from_secs(15),
        }
    }
}

/// `[live]`: the connection to Plex's notification websocket ([`crate::sources::live`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Keep the connection at all.
    pub enabled: bool,
    /// First delay before a reconnect; doubles (with jitter) up to `reconnect_max`.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub reconnect_min: Duration,
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub reconnect_max: Duration,
    /// A session that stops or pauses past this share of the item's duration is checked at
    /// once (Plex's own "watched" mark is at 90 %).
    #[serde(serialize_with = "ser_f32")]
    pub watched_threshold: f32,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(300),
            watched_threshold: 0.9,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivityConfig {
    /// Activity rows older than this are pruned (daily).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub retention: Duration,
    /// Keep failed rows past the retention (they are what a person investigates).
    pub keep_failed: bool,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(90 * 86_400),
            keep_failed: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter, e.g. "info" or "plexsync=debug,info"; RUST_LOG wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// A plugin's table: `kind` plus the plugin's own keys, handed to it untouched.
#[derive(Debug, Clone)]
pub struct PluginTable {
    pub kind: String,
    pub settings: toml::Table,
}

/// The `[tracker]` table: the exporter plugin's keys plus the host's own.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    pub plugin: PluginTable,
    /// How often the catalogue is fetched again.
    pub catalogue_refresh: Duration,
    /// Export requests per minute / per hour the tracker allows (its API key's budget);
    /// 0 = no limit. Host keys: the exporter plans within them, whatever the plugin.
    pub max_requests_per_minute: u32,
    pub max_requests_per_hour: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    store: StoreConfig,
    #[serde(default)]
    secrets: SecretsConfig,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    plex: PlexConfig,
    tracker: Option<toml::Table>,
    #[serde(default)]
    matching: MatchingConfig,
    #[serde(default)]
    matchers: Vec<toml::Table>,
    #[serde(default)]
    outbox: OutboxConfig,
    #[serde(default)]
    poll: PollConfig,
    #[serde(default)]
    live: LiveConfig,
    #[serde(default)]
    activity: ActivityConfig,
    #[serde(default)]
    log: LogConfig,
}

/// The whole configuration, validated, with paths still as written (see [`Config::resolve`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages and relative paths).
    pub source: PathBuf,
    /// Its text, so later checks (plugin configs) can point at a line.
    pub source_text: String,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub secrets: SecretsConfig,
    pub admin: AdminConfig,
    pub plex: PlexConfig,
    pub tracker: TrackerConfig,
    pub matching: MatchingConfig,
    pub matchers: Vec<PluginTable>,
    pub outbox: OutboxConfig,
    pub poll: PollConfig,
    pub live: LiveConfig,
    pub activity: ActivityConfig,
    pub log: LogConfig,
}

/// Where relative paths resolve.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub state: PathBuf,
    pub runtime: PathBuf,
    pub credentials: Option<PathBuf>,
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: if e.kind() == std::io::ErrorKind::NotFound {
                // The default path is tried when none is given: say how to give one.
                format!(
                    "no such file; point plexsync at its config with `--config FILE` (or `-c FILE`) \
                     or the PLEXSYNC_CONFIG environment variable (an example config: {EXAMPLE})"
                )
            } else {
                format!("cannot read: {e}")
            },
        })?;
        Config::parse(path, &text)
    }

    /// Parse and validate config text; `path` is used for messages and relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw = parse_raw(path, text)?;
        let err = |key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            line: locate(text, key),
            key: Some(key.to_string()),
            message,
        };

        let tracker = match raw.tracker {
            None => {
                return Err(err(
                    "tracker",
                    "missing [tracker] table (its `url` is required)".into(),
                ));
            }
            Some(mut t) => {
                let refresh = match t.remove("catalogue_refresh") {
                    None => Duration::from_secs(6 * 3600),
                    Some(toml::Value::String(s)) => {
                        let d = plexsync_plugin_api::values::parse_duration(&s)
                            .map_err(|why| err("tracker.catalogue_refresh", why))?;
                        // Zero would fetch the catalogue back to back, for ever.
                        if d < Duration::from_millis(100) {
                            return Err(err(
                                "tracker.catalogue_refresh",
                                "must be at least 100ms (e.g. \"6h\")".into(),
                            ));
                        }
                        d
                    }
                    Some(v) => {
                        return Err(err(
                            "tracker.catalogue_refresh",
                            format!(
                                "expected a duration string like \"6h\", got {}",
                                describe_toml(&v)
                            ),
                        ));
                    }
                };
                let mut budget = |name: &str| -> Result<u32, ConfigError> {
                    let key = format!("tracker.{name}");
                    match t.remove(name) {
                        None => Ok(0),
                        Some(toml::Value::Integer(n)) if (0..=i64::from(u32::MAX)).contains(&n) => {
                            Ok(n as u32)
                        }
                        Some(v) => Err(err(
                            &key,
                            format!(
                                "expected {}, got {}",
                                expected_for(&key).unwrap_or("a whole number"),
                                describe_toml(&v)
                            ),
                        )),
                    }
                };
                let max_requests_per_minute = budget("max_requests_per_minute")?;
                let max_requests_per_hour = budget("max_requests_per_hour")?;
                TrackerConfig {
                    plugin: plugin_table(t, "tracker", "tracker", &err)?,
                    catalogue_refresh: refresh,
                    max_requests_per_minute,
                    max_requests_per_hour,
                }
            }
        };
        let mut matchers = Vec::new();
        for (i, t) in raw.matchers.into_iter().enumerate() {
            matchers.push(plugin_table(t, &format!("matchers[{i}]"), "", &err)?);
        }

        let cfg = Config {
            source: path.to_path_buf(),
            source_text: text.to_string(),
            server: raw.server,
            store: raw.store,
            secrets: raw.secrets,
            admin: raw.admin,
            plex: raw.plex,
            tracker,
            matching: raw.matching,
            matchers,
            outbox: raw.outbox,
            poll: raw.poll,
            live: raw.live,
            activity: raw.activity,
            log: raw.log,
        };
        cfg.validate()
            .map_err(|(key, message)| err(&key, message))?;
        Ok(cfg)
    }

    /// Value checks; returns the dotted key and a message.
    fn validate(&self) -> Result<(), (String, String)> {
        let e = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return e(
                "server.listen",
                "expected an address with a port, e.g. \"127.0.0.1:8750\"",
            );
        }
        if let Some(u) = &self.server.public_url {
            if let Err(why) = base_url(u, None) {
                return Err((
                    "server.public_url".into(),
                    format!(
                        "{why}; expected an http:// or https:// URL, e.g. \"https://plexsync.example\""
                    ),
                ));
            }
        }
        if self.server.max_body_bytes < 1024 {
            return e("server.max_body_bytes", "must be at least 1024");
        }
        if self.server.max_payload_bytes < 1024
            || self.server.max_payload_bytes > self.server.max_body_bytes
        {
            return e(
                "server.max_payload_bytes",
                "must be at least 1024 and at most server.max_body_bytes",
            );
        }
        if self.server.webhook_rate_limit > 0 && self.server.webhook_rate_burst == 0 {
            return e(
                "server.webhook_rate_burst",
                "must be at least 1 while webhook_rate_limit is set (0 turns limiting off)",
            );
        }
        if self.server.admin_rate_limit > 0 && self.server.admin_rate_burst == 0 {
            return e(
                "server.admin_rate_burst",
                "must be at least 1 while admin_rate_limit is set (0 turns limiting off)",
            );
        }
        if self.server.max_connections < 16 {
            return e("server.max_connections", "must be at least 16");
        }
        if self.server.max_connections_per_client == 0
            || self.server.max_connections_per_client > self.server.max_connections
        {
            return e(
                "server.max_connections_per_client",
                "must be at least 1 and at most server.max_connections",
            );
        }
        if self.server.header_timeout.is_zero() {
            return e("server.header_timeout", "must be greater than zero");
        }
        if self.server.request_timeout.is_zero() {
            return e("server.request_timeout", "must be greater than zero");
        }
        if self.store.path.as_os_str().is_empty() {
            return e("store.path", "must not be empty");
        }
        if self.secrets.key_file.as_os_str().is_empty() {
            return e("secrets.key_file", "must not be empty");
        }
        if let Err(why) = base_url(&self.plex.url, Some("plex-token")) {
            return Err((
                "plex.url".into(),
                format!(
                    "{why}; expected an http:// or https:// URL, e.g. \"http://127.0.0.1:32400\""
                ),
            ));
        }
        if self.plex.timeout < Duration::from_millis(100) {
            // Zero would time every request out at once.
            return e("plex.timeout", "must be at least 100ms (e.g. \"15s\")");
        }
        let t = self.matching.auto_map_threshold;
        if !(t > 0.0 && t <= 1.0) {
            return e(
                "matching.auto_map_threshold",
                "must be greater than 0 and at most 1",
            );
        }
        if self.matchers.is_empty() {
            return e(
                "matchers",
                "at least one [[matchers]] entry is needed, e.g. kind = \"guid\"",
            );
        }
        if self.outbox.max_attempts == 0 {
            return e("outbox.max_attempts", "must be at least 1");
        }
        if self.outbox.batch_size == 0 || self.outbox.batch_size > 10_000 {
            return e("outbox.batch_size", "must be between 1 and 10000");
        }
        if self.outbox.initial_backoff.is_zero()
            || self.outbox.max_backoff < self.outbox.initial_backoff
        {
            return e(
                "outbox.max_backoff",
                "initial_backoff must be > 0 and max_backoff ≥ initial_backoff",
            );
        }
        if self.outbox.max_in_flight == 0 || self.outbox.max_in_flight > 64 {
            return e("outbox.max_in_flight", "must be between 1 and 64");
        }
        if self.outbox.coalesce_max < self.outbox.coalesce {
            return e("outbox.coalesce_max", "must be at least outbox.coalesce");
        }
        if let Err(why) = check_schedule(&self.poll.schedule) {
            return Err(("poll.schedule".into(), why));
        }
        if self.poll.page_size == 0 || self.poll.page_size > 5000 {
            return e("poll.page_size", "must be between 1 and 5000");
        }
        if self.live.reconnect_min < Duration::from_millis(10) {
            return e("live.reconnect_min", "must be at least 10ms");
        }
        if self.live.reconnect_max < self.live.reconnect_min {
            return e(
                "live.reconnect_max",
                "must be at least reconnect_min (the first delay)",
            );
        }
        if !(self.live.watched_threshold > 0.0 && self.live.watched_threshold <= 1.0) {
            return e(
                "live.watched_threshold",
                "must be greater than 0 and at most 1",
            );
        }
        // EnvFilter takes any word as a target name, so "verbose" would pass it and then
        // match nothing: the daemon would log nothing at all.
        if let Err(why) = crate::logging::check_level(&self.log.level) {
            return Err(("log.level".into(), why));
        }
        Ok(())
    }

    /// An error about `key` of this config, located in its text.
    pub fn error_at(&self, key: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.source.clone(),
            line: locate(&self.source_text, key),
            key: Some(key.to_string()),
            message,
        }
    }

    /// The folder of the config file (relative paths in plugin configs resolve here).
    pub fn config_dir(&self) -> PathBuf {
        match self.source.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Where relative paths go: systemd's $STATE_DIRECTORY / $RUNTIME_DIRECTORY /
    /// $CREDENTIALS_DIRECTORY when set, else the config's folder.
    pub fn dirs(&self) -> Dirs {
        let env_dir = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                // systemd may list several folders separated by ':'; the first is ours.
                .map(|v| PathBuf::from(v.to_string_lossy().split(':').next().unwrap_or_default()))
        };
        let state = env_dir("STATE_DIRECTORY").unwrap_or_else(|| self.config_dir());
        let runtime = env_dir("RUNTIME_DIRECTORY").unwrap_or_else(|| state.clone());
        Dirs {
            state,
            runtime,
            credentials: env_dir("CREDENTIALS_DIRECTORY"),
        }
    }

    pub fn store_path(&self) -> PathBuf {
        self.dirs().state.join(&self.store.path)
    }

    /// The key file: `$CREDENTIALS_DIRECTORY/plexsync.key` wins when it exists.
    pub fn key_path(&self) -> PathBuf {
        let dirs = self.dirs();
        if let Some(c) = dirs.credentials {
            let p = c.join("plexsync.key");
            if p.exists() {
                return p;
            }
        }
        dirs.state.join(&self.secrets.key_file)
    }

    pub fn socket_path(&self) -> Option<PathBuf> {
        if self.admin.socket.as_os_str().is_empty() {
            None
        } else {
            Some(self.dirs().runtime.join(&self.admin.socket))
        }
    }
}

/// Where the example config is (the .deb installs it; in a source tree it is
/// `plexsync.toml`).
const EXAMPLE: &str = "/usr/share/doc/plexsync/plexsync.toml.example";

/// The sections of plexsync.toml, for the message about an unknown one.
const SECTIONS: &[&str] = &[
    "server", "store", "secrets", "admin", "plex", "tracker", "matching", "matchers", "outbox",
    "poll", "live", "activity", "log",
];

/// Durations are written as config values are (`"5m"`), so the effective settings read back
/// in the same grammar.
fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&plexsync_plugin_api::values::human(*d))
}

/// An f32 as written (`0.9`, not its f64 widening `0.8999999761581421`).
fn ser_f32<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(v.to_string().parse().unwrap_or(f64::from(*v)))
}

/// The text as TOML, shaped and typed as [`RawConfig`]; every error names its line and, past
/// the syntax, its key, in plain words.
fn parse_raw(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(path, text, &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| shape_error(path, text, e))
}

/// A TOML syntax error (the document could not be read at all), or a key given twice.
fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let span = e.span();
    let line = span.as_ref().map(|s| line_of(text, s.start));
    let msg = e.message().trim();
    let mut out = ConfigError {
        file: path.to_path_buf(),
        line,
        key: None,
        message: format!("this is not valid TOML: {msg}"),
    };
    if msg.starts_with("duplicate key") {
        if let Some(span) = span {
            let name = text
                .get(span.clone())
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            let line_text = text[..span.start].rsplit('\n').next().unwrap_or("");
            let table = table_at(text, span.start);
            if line_text.trim_start().starts_with('[') {
                out.key = Some(name.to_string());
                out.message = format!(
                    "the section [{name}] is given twice; put all its keys under one [{name}]"
                );
            } else if !name.is_empty() {
                out.key = Some(if table.is_empty() {
                    name.to_string()
                } else {
                    format!("{table}.{name}")
                });
                out.message = "is given twice; a key may appear once in its table".into();
            }
        }
    }
    out
}

/// The table a byte offset is in, from the headers above it: `server`, `matchers[1]`, or ""
/// for the top level.
fn table_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    // The offset's own line is excluded: a header there is the thing being named.
    let before = before.rsplit_once('\n').map(|(b, _)| b).unwrap_or("");
    let mut current = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = Default::default();
    for line in before.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("[[") {
            let name = rest.split("]]").next().unwrap_or("").trim().to_string();
            let n = arrays.entry(name.clone()).or_insert(0);
            current = format!("{name}[{n}]");
            *n += 1;
        } else if let Some(rest) = l.strip_prefix('[') {
            current = rest.split(']').next().unwrap_or("").trim().to_string();
        }
    }
    current
}

/// A shape or type error: serde's path names the key; the message says what was expected
/// and what is written there, in words (no Rust type names).
fn shape_error(
    path: &Path,
    text: &str,
    e: serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    let key = e.path().to_string();
    let key = (!key.is_empty() && key != ".").then_some(key);
    let inner = e.inner().message().trim().to_string();
    let doc: Option<toml::Table> = text.parse().ok();
    let got = match (&doc, &key) {
        (Some(d), Some(k)) => value_in(d, k).map(describe_toml),
        _ => None,
    };
    let top_level = key.as_deref().is_some_and(|k| !k.contains(['.', '[']));
    let message = if top_level && inner.starts_with("unknown field") {
        format!(
            "unknown section; the sections are: {}",
            SECTIONS
                .iter()
                .map(|s| if *s == "matchers" {
                    "[[matchers]]".to_string()
                } else {
                    format!("[{s}]")
                })
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        let expected = key.as_deref().and_then(expected_for);
        plexsync_plugin_api::values::plain_message(&inner, got.as_deref(), expected)
    };
    let line = key
        .as_deref()
        .and_then(|k| locate(text, k))
        .or_else(|| e.inner().span().map(|s| line_of(text, s.start)));
    ConfigError {
        file: path.to_path_buf(),
        line,
        key,
        message,
    }
}

/// What a host key takes, in words, where serde's own phrase would say less (`a string`
/// for an address). Keys with their own deserializer (durations, sizes) phrase themselves.
fn expected_for(key: &str) -> Option<&'static str> {
    // `plex.accounts[2]` → `plex.accounts[]`
    let mut k = String::with_capacity(key.len());
    let mut skip = false;
    for c in key.chars() {
        match c {
            '[' => {
                skip = true;
                k.push('[');
            }
            ']' => {
                skip = false;
                k.push(']');
            }
            _ if skip => {}
            _ => k.push(c),
        }
    }
    Some(match k.as_str() {
        "server.listen" => "an address with a port, e.g. \"127.0.0.1:8750\"",
        "server.public_url" => "an http:// or https:// URL, e.g. \"https://plexsync.example\"",
        "plex.url" => "an http:// or https:// URL, e.g. \"http://127.0.0.1:32400\"",
        "server.trusted_proxies" => "a list of address blocks, e.g. [\"192.168.1.0/24\"]",
        "server.forwarded_header" => "\"auto\", \"x-forwarded-for\" or \"forwarded\"",
        "server.trusted_proxies[]" => "an address block like \"192.168.1.0/24\"",
        "server.webhook_rate_limit" | "server.admin_rate_limit" => {
            "a whole number of requests a minute (0 turns the limit off)"
        }
        "server.webhook_rate_burst" | "server.admin_rate_burst" => {
            "a whole number of requests, e.g. 30"
        }
        "server.max_connections" | "server.max_connections_per_client" => {
            "a whole number of connections, e.g. 512"
        }
        "store.path" | "secrets.key_file" | "admin.socket" => "a file path (a string)",
        "plex.accounts" => "a list of account names or ids, e.g. [\"Kids\", 1]",
        "plex.accounts[]" => "an account name (a string) or an account id (a whole number)",
        "matching.auto_map_threshold" => "a number greater than 0 and at most 1, e.g. 0.9",
        "outbox.max_attempts" => "a whole number of attempts, e.g. 10",
        "outbox.batch_size" => "a whole number of episodes from 1 to 10000",
        "outbox.max_in_flight" => "a whole number of requests from 1 to 64",
        "tracker.max_requests_per_minute" | "tracker.max_requests_per_hour" => {
            "a whole number of requests (0 turns the limit off)"
        }
        "poll.page_size" => "a whole number of rows from 1 to 5000",
        "poll.schedule" => "a cron schedule of six fields, e.g. \"0 */5 * * * *\"",
        "live.watched_threshold" => "a number greater than 0 and at most 1, e.g. 0.9",
        "log.level" => crate::logging::LEVEL_HINT,
        "tracker" => "the [tracker] table",
        "matchers" => "a list of [[matchers]] tables",
        "matchers[]" => "a [[matchers]] table",
        "server" | "store" | "secrets" | "admin" | "plex" | "matching" | "outbox" | "poll"
        | "live" | "activity" | "log" => "a table (a [section] with its keys)",
        _ => return None,
    })
}

/// The value at a dotted key path (`plex.accounts[1]`) of a parsed document.
pub fn value_in<'d>(doc: &'d toml::Table, key: &str) -> Option<&'d toml::Value> {
    let mut table = doc;
    let mut found: Option<&toml::Value> = None;
    for part in key.split('.') {
        if found.is_some() {
            table = found?.as_table()?;
        }
        let (name, indexes) = part.split_once('[').unwrap_or((part, ""));
        let mut v = table.get(name)?;
        for i in indexes.split('[') {
            let i = i.trim_end_matches(']');
            if !i.is_empty() {
                v = v.as_array()?.get(i.parse::<usize>().ok()?)?;
            }
        }
        found = Some(v);
    }
    found
}

/// A TOML value the way a person wrote it, for "got …".
fn describe_toml(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => {
            format!("the string {}", plexsync_plugin_api::values::quote_short(s))
        }
        toml::Value::Integer(n) => format!("the number {n}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// A cron schedule tokio-cron-scheduler accepts: six fields, seconds first, UTC.
pub fn check_schedule(expr: &str) -> Result<(), String> {
    let fields = expr.split_whitespace().count();
    let shape = "expected six fields `sec min hour day-of-month month day-of-week` (UTC), e.g. \"0 */5 * * * *\" for every 5 minutes";
    if fields != 6 {
        return Err(format!("{expr:?} has {fields} field(s); {shape}"));
    }
    tokio_cron_scheduler::Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| format!("{expr:?} is not a valid schedule ({e}); {shape}"))
}

/// A base URL as the plugins take theirs (`values::parse_base_url`): http(s), a host, no
/// user or password, no query or fragment. A token pasted into the URL would otherwise be
/// logged, shown in status and settings, and sent in every request's path. `secret` names
/// where a credential belongs instead, when there is one.
fn base_url(u: &str, secret: Option<&str>) -> Result<(), String> {
    if u.chars().any(char::is_whitespace) {
        return Err("must not contain spaces".into());
    }
    plexsync_plugin_api::values::parse_base_url(u, secret.unwrap_or(""))
        .map(|_| ())
        .map_err(|why| match secret {
            Some(_) => why,
            // The advice after `;` names a secret; without one only the fault is said.
            None => why.split(';').next().unwrap_or(&why).to_string(),
        })
}

fn plugin_table(
    mut t: toml::Table,
    key: &str,
    default_kind: &str,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<PluginTable, ConfigError> {
    let kind = match t.remove("kind") {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        None if !default_kind.is_empty() => default_kind.to_string(),
        None => {
            return Err(err(
                &format!("{key}.kind"),
                "missing; every plugin table names its `kind`".into(),
            ));
        }
        Some(v) => {
            return Err(err(
                &format!("{key}.kind"),
                format!(
                    "expected the plugin's name as a string, e.g. \"guid\", got {}",
                    describe_toml(&v)
                ),
            ));
        }
    };
    Ok(PluginTable { kind, settings: t })
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Line of a dotted key path (`a.b`, `matchers[2].kind`) in the TOML text, if present. When
/// the exact key is absent, the nearest present parent is used.
pub fn locate(text: &str, key: &str) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let root = toml::de::DeValue::Table(doc.into_inner());
    let mut cur = &root;
    let mut best: Option<usize> = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(v) = cur.get(name) else { break };
        best = Some(v.span().start);
        let mut v = v;
        if let Some(i) = index {
            match v.get_ref().get(i) {
                Some(item) => {
                    best = Some(item.span().start);
                    v = item;
                }
                None => break,
            }
        }
        cur = v.get_ref();
    }
    best.map(|off| line_of(text, off))
}

/// Convert a plugin's TOML table to the JSON value plugins receive.
pub fn table_to_json(t: &toml::Table) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str =
        "[tracker]\nurl = \"http://127.0.0.1:3000/api\"\n\n[[matchers]]\nkind = \"guid\"\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8750");
        assert_eq!(c.tracker.plugin.kind, "tracker");
        assert_eq!(c.matchers[0].kind, "guid");
        assert!((c.matching.auto_map_threshold - 0.90).abs() < 1e-6);
        assert_eq!(c.matching.dedupe_window, Duration::from_secs(300));
        assert_eq!(
            c.tracker.plugin.settings["url"].as_str(),
            Some("http://127.0.0.1:3000/api")
        );
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let text = format!("{MIN}\n[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(9), "{e}");
        assert!(e.message.contains("listne"), "{e}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let text = format!("{MIN}\n[matching]\nauto_map_threshold = 1.5\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("matching.auto_map_threshold"));
        assert_eq!(e.line, Some(8));
        let shown = e.to_string();
        assert!(
            shown.starts_with("test.toml:8: key `matching.auto_map_threshold`"),
            "{shown}"
        );
    }

    /// A Plex URL pasted from "View XML" carries the token in its query; it would be logged,
    /// shown in status and settings and break every request. Such URLs, and ones with a user
    /// and password, spaces or no host, are refused with the key and its line.
    #[test]
    fn a_base_url_with_a_token_credentials_or_no_host_is_refused() {
        for (table, key, url, says) in [
            (
                "plex",
                "plex.url",
                "http://192.168.1.5:32400/?X-Plex-Token=abc",
                "query",
            ),
            (
                "plex",
                "plex.url",
                "http://u:p@plex:32400",
                "user name or password",
            ),
            ("plex", "plex.url", "http://plex host:32400", "spaces"),
            ("plex", "plex.url", "http://:32400", "valid absolute URL"),
            ("plex", "plex.url", "ftp://plex", "http or https"),
            (
                "server",
                "server.public_url",
                "https://u:p@sync.example",
                "user name or password",
            ),
            (
                "server",
                "server.public_url",
                "https://sync.example/#x",
                "fragment",
            ),
        ] {
            let field = key.rsplit('.').next().unwrap();
            let text = format!("{MIN}\n[{table}]\n{field} = \"{url}\"\n");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{url}: {e}");
            assert_eq!(e.line, Some(8), "{url}: {e}");
            assert!(e.message.contains(says), "{url}: {e}");
            assert!(
                !e.message.contains("store the key") || key == "plex.url",
                "{e}"
            );
        }
        // A path (behind a reverse proxy) is fine.
        let text = format!("{MIN}\n[plex]\nurl = \"https://example.net/plex/\"\n");
        assert!(parse(&text).is_ok());
    }

    /// Zero durations that would spin or time out everything at once are refused.
    #[test]
    fn a_zero_plex_timeout_or_catalogue_refresh_is_refused() {
        let e = parse(&format!("{MIN}\n[plex]\ntimeout = \"0s\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("plex.timeout"), "{e}");
        assert_eq!(e.line, Some(8), "{e}");
        let text = MIN.replace("[tracker]\n", "[tracker]\ncatalogue_refresh = \"0s\"\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tracker.catalogue_refresh"), "{e}");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("at least 100ms"), "{e}");
    }

    #[test]
    fn matcher_without_kind_is_located() {
        let text = format!("{MIN}\n[[matchers]]\nthreshold = 1\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("matchers[1].kind"));
        // The key is absent, so the message points at its table's header.
        assert_eq!(e.line, Some(7), "{e}");
    }

    #[test]
    fn bad_duration_and_wrong_type() {
        let e = parse(&format!("{MIN}[outbox]\nmax_backoff = \"soon\"\n")).unwrap_err();
        assert!(e.message.contains("is not a duration"), "{e}");
        assert_eq!(e.line, Some(7), "{e}");
        let e = parse(&format!("{MIN}[outbox]\nmax_attempts = \"ten\"\n")).unwrap_err();
        assert_eq!(e.line, Some(7), "{e}");
        // Long enough to overflow the clock arithmetic it feeds (a panic in the exporter).
        let e = parse(&format!(
            "{MIN}[outbox]\ncoalesce_max = \"300000000000y\"\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("longer than any setting takes"), "{e}");
        assert_eq!(e.line, Some(7), "{e}");
    }

    #[test]
    fn missing_tracker_and_syntax_error() {
        let e = parse("[[matchers]]\nkind = \"guid\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tracker"));
        let e = parse("[server\nlisten = 1").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn poll_schedule_is_checked_with_the_expected_form() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.poll.schedule, "0 */5 * * * *");
        for bad in ["*/5 * * * *", "0 */5 * * * * *", "0 */5 * * * nope", ""] {
            let e = parse(&format!("{MIN}[poll]\nschedule = \"{bad}\"\n")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("poll.schedule"), "{bad}: {e}");
            assert!(e.message.contains("six fields"), "{e}");
            assert_eq!(e.line, Some(7));
        }
        let c = parse(&format!("{MIN}[plex]\naccounts = [\"Kids\", 1]\n")).unwrap();
        assert_eq!(c.plex.accounts.len(), 2);
    }

    #[test]
    fn live_keys_have_defaults_and_are_checked_with_file_line_key() {
        let c = parse(MIN).unwrap();
        assert!(c.live.enabled);
        assert_eq!(c.live.reconnect_min, Duration::from_secs(1));
        assert_eq!(c.live.reconnect_max, Duration::from_secs(300));
        assert_eq!(c.live.watched_threshold, 0.9);
        let c = parse(&format!(
            "{MIN}[live]\nenabled = false\nreconnect_min = \"250ms\"\nreconnect_max = \"1m\"\nwatched_threshold = 0.8\n"
        ))
        .unwrap();
        assert!(!c.live.enabled);
        assert_eq!(c.live.reconnect_min, Duration::from_millis(250));
        assert_eq!(c.live.reconnect_max, Duration::from_secs(60));
        for (body, key, line) in [
            ("watched_threshold = 1.5", "live.watched_threshold", 7),
            ("watched_threshold = 0", "live.watched_threshold", 7),
            ("watched_threshold = \"high\"", "live.watched_threshold", 7),
            ("reconnect_min = \"0s\"", "live.reconnect_min", 7),
            ("reconnect_min = \"10m\"", "live.reconnect_max", 6),
            ("reconnect_max = \"soon\"", "live.reconnect_max", 7),
            ("enabled = \"yes\"", "live.enabled", 7),
            ("ping = 1", "live.ping", 7),
        ] {
            let e = parse(&format!("{MIN}[live]\n{body}\n")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{body}: {e}");
            assert_eq!(e.line, Some(line), "{body}: {e}");
            let shown = e.to_string();
            assert!(shown.starts_with("test.toml:"), "{shown}");
            assert!(rust_words(&shown, key).is_empty(), "{shown}");
        }
    }

    /// Rust's words that must never reach a person reading a config error.
    const RUST_WORDS: &[&str] = &[
        "usize", "isize", "u8", "u16", "u32", "u64", "u128", "i8", "i16", "i32", "i64", "i128",
        "f32", "f64", "struct", "enum", "Option", "map", "Vec", "sequence", "variant", "untagged",
    ];

    fn rust_words(shown: &str, key: &str) -> Vec<&'static str> {
        let text = shown.replace(key, "");
        let words: Vec<&str> = text
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .collect();
        RUST_WORDS
            .iter()
            .copied()
            .filter(|w| words.contains(w))
            .collect()
    }

    fn kind_of(v: &serde_json::Value) -> &'static str {
        match v {
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "bool",
            serde_json::Value::Number(_) => "number",
            serde_json::Value::String(_) => "string",
            serde_json::Value::Array(_) => "list",
            serde_json::Value::Object(_) => "table",
        }
    }

    /// Every host key (as the settings list names them, so a new key is walked too), given
    /// each wrong kind of value: refused when the kind is wrong, and every refusal names the
    /// key and its line, in words without a Rust type name.
    #[test]
    fn every_key_with_a_wrong_value_is_refused_in_plain_words() {
        let base = parse(MIN).unwrap();
        let keys: Vec<_> = crate::settings::settings(&base)
            .into_iter()
            .filter(|s| !s.key.starts_with("matchers[") && s.key != "tracker.kind")
            .filter(|s| {
                !s.key.starts_with("tracker.")
                    || s.key == "tracker.catalogue_refresh"
                    || s.key.starts_with("tracker.max_requests_per_")
            })
            .collect();
        assert!(keys.len() > 35, "{}", keys.len());
        let wrong: &[(&str, &str)] = &[
            ("\"2MB x\"", "string"),
            ("5", "number"),
            ("-5", "number"),
            ("1.5", "number"),
            ("99999999999999999999", "number"),
            ("true", "bool"),
            ("[1, \"a\"]", "list"),
            ("{ a = 1 }", "table"),
            ("1979-05-27", "date"),
        ];
        let mut checked = 0;
        for s in &keys {
            let (section, name) = s.key.split_once('.').unwrap();
            for (literal, kind) in wrong {
                let text = if section == "tracker" {
                    format!(
                        "[tracker]\nurl = \"http://127.0.0.1:3000/api\"\n{name} = {literal}\n\n[[matchers]]\nkind = \"guid\"\n"
                    )
                } else {
                    format!("{MIN}\n[{section}]\n{name} = {literal}\n")
                };
                let line = text
                    .lines()
                    .collect::<Vec<_>>()
                    .iter()
                    .rposition(|l| l.starts_with(name))
                    .unwrap()
                    + 1;
                let default_kind = kind_of(&s.value);
                let must_fail = *kind != default_kind
                    && !(default_kind == "null" && *kind == "string")
                    // Byte counts are numbers or size strings.
                    && !(s.key.ends_with("_bytes") && *kind == "string");
                match parse(&text) {
                    Ok(_) => assert!(!must_fail, "{} = {literal} was accepted", s.key),
                    Err(e) => {
                        checked += 1;
                        let shown = e.to_string();
                        assert!(
                            e.key.as_deref().is_some_and(|k| k.starts_with(&s.key)),
                            "{} = {literal}: {shown}",
                            s.key
                        );
                        assert_eq!(e.line, Some(line), "{} = {literal}: {shown}", s.key);
                        assert!(
                            shown.starts_with(&format!("test.toml:{line}: key `{}", s.key)),
                            "{shown}"
                        );
                        let bad = rust_words(&shown, e.key.as_deref().unwrap_or(""));
                        assert!(bad.is_empty(), "{} = {literal}: {bad:?} in {shown}", s.key);
                    }
                }
            }
        }
        assert!(checked > 200, "{checked}");
    }

    #[test]
    fn the_reported_examples_read_in_words() {
        let e = parse(&format!("{MIN}\n[server]\nmax_body_bytes = \"2 lots\"\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.toml:8: key `server.max_body_bytes`: \"2 lots\" is not a size; expected a whole number of bytes (e.g. 2097152) or a size like \"2 MiB\""
        );
        let e = parse(&format!("{MIN}\n[server]\nmax_body_bytes = true\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.toml:8: key `server.max_body_bytes`: expected a whole number of bytes (e.g. 2097152) or a size like \"2 MiB\", got true"
        );
        // People write sizes: accepted, decimal and binary units as written.
        let c = parse(&format!(
            "{MIN}\n[server]\nmax_body_bytes = \"2MB\"\nmax_payload_bytes = \"256 KiB\"\n"
        ))
        .unwrap();
        assert_eq!(c.server.max_body_bytes, 2_000_000);
        assert_eq!(c.server.max_payload_bytes, 262_144);
        let e = parse(&format!("{MIN}\n[outbox]\nmax_attempts = 5000000000\n")).unwrap_err();
        assert!(e.message.contains("from 0 to 4294967295"), "{e}");
        let e = parse(&format!("{MIN}\n[plex]\naccounts = [\"Kids\", 1.5]\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("plex.accounts[1]"));
        assert!(e.message.ends_with("got the number 1.5"), "{e}");
        let e = parse(&format!("{MIN}\n[sever]\nlisten = \"x\"\n")).unwrap_err();
        assert_eq!(e.line, Some(7));
        assert!(
            e.to_string()
                .contains("key `sever`: unknown section; the sections are: [server]"),
            "{e}"
        );
        let e = parse(&format!("{MIN}\n[server]\nlistne = 1\n")).unwrap_err();
        assert!(e.to_string().starts_with("test.toml:8: key `server.listne`: unknown key `listne`; the keys here are: listen, "), "{e}");
        let e = parse(&format!(
            "{MIN}\n[server]\nlisten = \"a\"\nlisten = \"b\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.toml:9: key `server.listen`: is given twice; a key may appear once in its table"
        );
        let e = parse(&format!(
            "{MIN}\n[[matchers]]\nkind = \"title\"\n[tracker]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tracker"), "{e}");
        assert_eq!(e.line, Some(9), "{e}");
        let e = parse(&format!("{MIN}\n[server]\nlisten = \n")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("test.toml:8: this is not valid TOML: "),
            "{e}"
        );
    }

    #[test]
    fn log_levels_are_level_names_or_directives() {
        for ok in [
            "info",
            "DEBUG",
            "warn",
            "off",
            "plexsync=debug,info",
            "plexsync::http=trace",
            "info,hyper=warn",
        ] {
            let c = parse(&format!("{MIN}[log]\nlevel = \"{ok}\"\n"));
            assert!(c.is_ok(), "{ok}: {:?}", c.err());
        }
        for bad in ["verbose", "", "plexsync=verbose", "info,loud", "5"] {
            let e = parse(&format!("{MIN}[log]\nlevel = \"{bad}\"\n")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("log.level"), "{bad}: {e}");
            assert_eq!(e.line, Some(7), "{bad}: {e}");
            assert!(e.message.contains("error, warn, info, debug, trace"), "{e}");
        }
    }

    #[test]
    fn a_missing_file_says_how_to_point_at_one() {
        let e = Config::load(Path::new("/nonexistent/plexsync.toml")).unwrap_err();
        let shown = e.to_string();
        assert!(shown.starts_with("/nonexistent/plexsync.toml: "), "{shown}");
        assert!(
            shown.contains("--config") && shown.contains("PLEXSYNC_CONFIG"),
            "{shown}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let c = Config::parse(Path::new("/etc/plexsync/plexsync.toml"), MIN).unwrap();
        // Only when systemd's variables are absent (as in this test process).
        if std::env::var_os("STATE_DIRECTORY").is_none() {
            assert_eq!(c.store_path(), PathBuf::from("/etc/plexsync/plexsync.redb"));
        }
    }
}
