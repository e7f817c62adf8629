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
use plexsync_plugin_api::values::de_duration;
use serde::Deserialize;

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the webhook + admin HTTP listener.
    pub listen: String,
    /// Base URL Plex should use to reach us, when it differs from `http://<listen>`
    /// (reverse proxy, another host).
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub max_payload_bytes: usize,
    #[serde(deserialize_with = "de_duration")]
    pub header_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
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
            max_connections: 512,
            max_connections_per_client: 128,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlexConfig {
    pub url: String,
    #[serde(deserialize_with = "de_duration")]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchingConfig {
    pub auto_map_threshold: f32,
    /// Same account + show + season + episode within this window is one viewing.
    #[serde(deserialize_with = "de_duration")]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Attempts before a batch goes to the dead letter.
    pub max_attempts: u32,
    #[serde(deserialize_with = "de_duration")]
    pub initial_backoff: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_backoff: Duration,
    /// Episodes per export request.
    pub batch_size: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30 * 60),
            batch_size: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// Poll Plex's watch history at all.
    pub enabled: bool,
    /// When to poll: six cron fields (sec min hour day-of-month month day-of-week), UTC.
    pub schedule: String,
    /// How far back each poll re-reads before its cursor (viewedAt has 1 s resolution and
    /// rows can land late).
    #[serde(deserialize_with = "de_duration")]
    pub overlap: Duration,
    /// How far back the very first poll looks when there is no cursor yet.
    #[serde(deserialize_with = "de_duration")]
    pub initial_lookback: Duration,
    /// Rows per history page.
    pub page_size: u64,
    /// Also scan show libraries for episodes marked watched by hand (no history row).
    pub library_scan: bool,
    /// First retry delay after a failed poll (doubles, with jitter, up to 10 minutes; a
    /// rejected token pauses four times as long, up to an hour).
    #[serde(deserialize_with = "de_duration")]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivityConfig {
    /// Activity rows older than this are pruned (daily).
    #[serde(deserialize_with = "de_duration")]
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

#[derive(Debug, Clone, Deserialize)]
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
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Parse and validate config text; `path` is used for messages and relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ConfigError {
                file: path.to_path_buf(),
                line,
                key: None,
                message: e.message().trim().to_string(),
            }
        })?;
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
                    Some(toml::Value::String(s)) => plexsync_plugin_api::values::parse_duration(&s)
                        .map_err(|why| err("tracker.catalogue_refresh", why))?,
                    Some(_) => {
                        return Err(err(
                            "tracker.catalogue_refresh",
                            "expected a duration string like \"6h\"".into(),
                        ));
                    }
                };
                TrackerConfig {
                    plugin: plugin_table(t, "tracker", "tracker", &err)?,
                    catalogue_refresh: refresh,
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
            if !is_http_url(u) {
                return e("server.public_url", "expected an http:// or https:// URL");
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
        if !is_http_url(&self.plex.url) {
            return e(
                "plex.url",
                "expected an http:// or https:// URL, e.g. \"http://127.0.0.1:32400\"",
            );
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
        if let Err(why) = check_schedule(&self.poll.schedule) {
            return Err(("poll.schedule".into(), why));
        }
        if self.poll.page_size == 0 || self.poll.page_size > 5000 {
            return e("poll.page_size", "must be between 1 and 5000");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return e(
                "log.level",
                "expected a level (error, warn, info, debug, trace) or a filter like \"plexsync=debug,info\"",
            );
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

fn is_http_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/'))
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
        Some(_) => {
            return Err(err(
                &format!("{key}.kind"),
                "expected a non-empty string".into(),
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
    fn relative_paths_resolve_against_the_config_folder() {
        let c = Config::parse(Path::new("/etc/plexsync/plexsync.toml"), MIN).unwrap();
        // Only when systemd's variables are absent (as in this test process).
        if std::env::var_os("STATE_DIRECTORY").is_none() {
            assert_eq!(c.store_path(), PathBuf::from("/etc/plexsync/plexsync.redb"));
        }
    }
}
