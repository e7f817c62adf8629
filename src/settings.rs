//! `GET /api/settings`: the effective configuration as a flat list of dotted keys (the host's
//! keys with their defaults filled in, then the plugins' tables as written), the config file,
//! and which secrets are stored with the command that stores each. Read-only: settings change
//! in plexsync.toml (then `systemctl reload plexsync`), secrets with `plexsync secret set`.
//!
//! Secret values never appear here: secrets live in the store, not the config, and a plugin
//! key that might still carry one (an exec matcher's `env`, a key named like a token) is shown
//! as hidden.

use serde_json::Value;

use crate::api::{SecretView, SettingSource, SettingView, SettingsView};
use crate::config::{Config, PluginTable, table_to_json};
use crate::state::Shared;

/// The answer of `GET /api/settings` for the daemon's (or the offline CLI's) state. Keys only
/// a restart applies that a reload found changed show the value the daemon runs with, and
/// the file's beside it (`after_restart`): "what the daemon runs with" stays true.
pub fn view(shared: &Shared) -> SettingsView {
    let cfg = shared.config();
    let set = |name: &str| shared.secret(name).is_some();
    let mut all = settings(&cfg);
    let waiting = shared.status().restart_needed;
    if !waiting.is_empty() {
        let running = settings(shared.started_with());
        for s in all.iter_mut().filter(|s| waiting.contains(&s.key)) {
            if let Some(r) = running.iter().find(|r| r.key == s.key) {
                let file = std::mem::replace(&mut s.value, r.value.clone());
                s.source = r.source;
                s.after_restart = Some(file);
            }
        }
    }
    SettingsView {
        config_file: std::path::absolute(&cfg.source)
            .unwrap_or_else(|_| cfg.source.clone())
            .display()
            .to_string(),
        settings: all,
        secrets: secrets(&cfg, set),
    }
}

/// Every effective setting of `cfg`, dotted, sections in the order of the reference.
pub fn settings(cfg: &Config) -> Vec<SettingView> {
    let doc: Option<toml::Table> = cfg.source_text.parse().ok();
    let in_file = |key: &str| {
        doc.as_ref()
            .is_some_and(|d| crate::config::value_in(d, key).is_some())
    };
    let mut out = Vec::new();
    let mut host = |section: &str, v: Result<Value, serde_json::Error>| {
        if let Ok(Value::Object(map)) = v {
            for (k, value) in map {
                let key = format!("{section}.{k}");
                let source = if in_file(&key) {
                    SettingSource::File
                } else {
                    SettingSource::Default
                };
                out.push(SettingView {
                    key,
                    value,
                    source,
                    hidden: false,
                    after_restart: None,
                });
            }
        }
    };
    host("server", serde_json::to_value(&cfg.server));
    host("store", serde_json::to_value(&cfg.store));
    host("secrets", serde_json::to_value(&cfg.secrets));
    host("admin", serde_json::to_value(&cfg.admin));
    host("plex", serde_json::to_value(&cfg.plex));
    host("matching", serde_json::to_value(&cfg.matching));
    host("outbox", serde_json::to_value(&cfg.outbox));
    host("poll", serde_json::to_value(&cfg.poll));
    host("live", serde_json::to_value(&cfg.live));
    host("activity", serde_json::to_value(&cfg.activity));
    host("log", serde_json::to_value(&cfg.log));

    let tracker_refresh = "tracker.catalogue_refresh";
    out.push(SettingView {
        key: tracker_refresh.into(),
        value: Value::String(plexsync_plugin_api::values::human(
            cfg.tracker.catalogue_refresh,
        )),
        source: if in_file(tracker_refresh) {
            SettingSource::File
        } else {
            SettingSource::Default
        },
        hidden: false,
        after_restart: None,
    });
    for (key, n) in [
        (
            "tracker.max_requests_per_minute",
            cfg.tracker.max_requests_per_minute,
        ),
        (
            "tracker.max_requests_per_hour",
            cfg.tracker.max_requests_per_hour,
        ),
    ] {
        out.push(SettingView {
            key: key.into(),
            value: Value::from(n),
            source: if in_file(key) {
                SettingSource::File
            } else {
                SettingSource::Default
            },
            hidden: false,
            after_restart: None,
        });
    }
    plugin(
        &mut out,
        "tracker",
        &cfg.tracker.plugin,
        in_file("tracker.kind"),
    );
    for (i, m) in cfg.matchers.iter().enumerate() {
        plugin(&mut out, &format!("matchers[{i}]"), m, true);
    }
    out
}

/// A plugin's table: `kind`, then its keys as written (the plugin's defaults are its own).
fn plugin(out: &mut Vec<SettingView>, prefix: &str, t: &PluginTable, kind_in_file: bool) {
    out.push(SettingView {
        key: format!("{prefix}.kind"),
        value: Value::String(t.kind.clone()),
        source: if kind_in_file {
            SettingSource::File
        } else {
            SettingSource::Default
        },
        hidden: false,
        after_restart: None,
    });
    let mut keys: Vec<_> = t.settings.keys().collect();
    keys.sort();
    for k in keys {
        let value = table_to_json(&t.settings)
            .get(k)
            .cloned()
            .unwrap_or(Value::Null);
        flatten(out, &format!("{prefix}.{k}"), k, value, false);
    }
}

/// Tables become dotted keys; lists stay values. `hidden` is inherited by everything under a
/// table that may hold secrets.
fn flatten(out: &mut Vec<SettingView>, key: &str, name: &str, value: Value, hidden: bool) {
    let hidden = hidden || may_hold_secret(name);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(out, &format!("{key}.{k}"), &k, v, hidden || name == "env");
            }
        }
        value => out.push(SettingView {
            key: key.to_string(),
            value: if hidden { Value::Null } else { value },
            source: SettingSource::File,
            hidden,
            after_restart: None,
        }),
    }
}

/// A plugin key whose value is withheld: named like a credential, or anything under a table
/// of environment variables or headers (the exec matcher's `env` carries tokens for the
/// user's program).
fn may_hold_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "apikey",
        "api_key",
        "auth",
        "credential",
        "cookie",
        "headers",
    ]
    .iter()
    .any(|w| n.contains(w))
        || n == "key"
        || n.ends_with("_key")
        || n.ends_with("-key")
}

/// The stored secrets: whether each is set and the command that sets it.
pub fn secrets(cfg: &Config, set: impl Fn(&str) -> bool) -> Vec<SecretView> {
    let cmd = |name: &str| format!("plexsync secret set {name}");
    let tmdb_used = cfg.matchers.iter().any(|m| m.kind == "tmdb");
    vec![
        SecretView {
            name: "plex-token".into(),
            set: set("plex-token"),
            command: cmd("plex-token"),
            used_by: "Plex: history polling, account names and show metadata".into(),
            note: None,
        },
        SecretView {
            name: "tracker-key".into(),
            set: set("tracker-key"),
            command: cmd("tracker-key"),
            used_by: format!("the tracker ([tracker] kind = {:?})", cfg.tracker.plugin.kind),
            note: None,
        },
        SecretView {
            name: "tmdb-key".into(),
            set: set("tmdb-key"),
            command: cmd("tmdb-key"),
            used_by: "the tmdb matcher".into(),
            note: (!tmdb_used).then(|| "no [[matchers]] of kind \"tmdb\" is configured".into()),
        },
        SecretView {
            name: crate::state::ADMIN_TOKEN.into(),
            set: set(crate::state::ADMIN_TOKEN),
            command: cmd(crate::state::ADMIN_TOKEN),
            used_by: "the admin API over TCP and the web page's login".into(),
            note: Some(
                "generated at the first start; `plexsync web-url` prints a login link".into(),
            ),
        },
        SecretView {
            name: crate::secrets::WEBHOOK_SECRET.into(),
            // Generated when the state is opened: always there once the store exists.
            set: true,
            command: "plexsync webhook-url".into(),
            used_by: "the webhook URL Plex posts to".into(),
            note: Some(
                "generated at the first start and not set by hand; the command prints the URL that carries it".into(),
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CFG: &str = r#"
[server]
max_body_bytes = "4 MiB"

[tracker]
url = "http://127.0.0.1:3000/api"
timeout = "20s"

[[matchers]]
kind = "guid"

[[matchers]]
kind = "exec"
command = "/bin/true"
args = ["--x"]
env = { TOKEN = "hunter2-very-secret", MODE = "fast" }
api_token = "also-secret"
"#;

    #[test]
    fn flat_keys_with_defaults_and_no_secret_values() {
        let cfg = Config::parse(Path::new("x.toml"), CFG).unwrap();
        let s = settings(&cfg);
        let get = |k: &str| {
            s.iter()
                .find(|v| v.key == k)
                .unwrap_or_else(|| panic!("{k}"))
        };
        assert_eq!(get("server.max_body_bytes").value, 4 * 1024 * 1024);
        assert_eq!(get("server.max_body_bytes").source, SettingSource::File);
        assert_eq!(get("server.listen").value, "127.0.0.1:8750");
        assert_eq!(get("server.listen").source, SettingSource::Default);
        assert_eq!(get("poll.overlap").value, "10m");
        assert_eq!(get("live.enabled").source, SettingSource::Default);
        assert_eq!(get("live.watched_threshold").value, 0.9);
        assert_eq!(get("matching.auto_map_threshold").value, 0.9);
        assert_eq!(get("plex.client_identifier").value, Value::Null);
        assert_eq!(get("tracker.kind").value, "tracker");
        assert_eq!(get("tracker.kind").source, SettingSource::Default);
        assert_eq!(get("tracker.timeout").value, "20s");
        assert_eq!(get("matchers[1].kind").value, "exec");
        assert_eq!(get("matchers[1].args").value, serde_json::json!(["--x"]));
        assert!(get("matchers[1].env.TOKEN").hidden);
        assert!(get("matchers[1].env.MODE").hidden);
        assert!(get("matchers[1].api_token").hidden);
        let all = serde_json::to_string(&s).unwrap();
        assert!(!all.contains("hunter2"), "{all}");
        assert!(!all.contains("also-secret"), "{all}");
    }
}
