//! The plugin registry: maps the `kind` names of plexsync.toml to plugin constructors and
//! builds the configured chain. This table is the only place that names plugins; the rest of
//! the host sees `dyn Matcher` / `dyn Exporter` and never special-cases one.
//!
//! Two steps, on purpose: [`build`] reads and checks the plugins' configs and starts nothing
//! (no program, no request), so offline commands, a stored secret and every reload can build
//! freely; [`probe`] asks each plugin to check what needs the outside world (the exec
//! matcher's program and its hello) and is called only when the daemon starts and by
//! `plexsync check`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use plexsync_plugin_api::{Exporter, KvCache, Matcher, PluginContext, PluginError, Secret};

use crate::config::{Config, ConfigError, PluginTable, table_to_json};

use crate::store::Store;

type MatcherCtor = fn(&PluginContext) -> Result<Arc<dyn Matcher>, PluginError>;
type ExporterCtor = fn(&PluginContext) -> Result<Arc<dyn Exporter>, PluginError>;

/// A plugin kind: its name, the secrets it may use, and its constructor.
struct Kind<C> {
    name: &'static str,
    secrets: &'static [&'static str],
    ctor: C,
}

const MATCHERS: &[Kind<MatcherCtor>] = &[
    Kind {
        name: "guid",
        secrets: &[],
        ctor: |ctx| Ok(Arc::new(plexsync_plugin_guid::build(ctx)?)),
    },
    Kind {
        name: "tmdb",
        secrets: &["tmdb-key"],
        ctor: |ctx| Ok(Arc::new(plexsync_plugin_tmdb::build(ctx)?)),
    },
    Kind {
        name: "title",
        secrets: &[],
        ctor: |ctx| Ok(Arc::new(plexsync_plugin_title::TitleMatcher::build(ctx)?)),
    },
    Kind {
        name: "exec",
        secrets: &[],
        ctor: |ctx| Ok(Arc::new(plexsync_plugin_exec::build(ctx)?)),
    },
];

const EXPORTERS: &[Kind<ExporterCtor>] = &[Kind {
    name: "tracker",
    secrets: &["tracker-key"],
    ctor: |ctx| Ok(Arc::new(plexsync_plugin_tracker::build(ctx)?)),
}];

/// The secrets the configured exporter may use (for health: is its key stored?).
pub fn exporter_secrets(cfg: &Config) -> &'static [&'static str] {
    EXPORTERS
        .iter()
        .find(|k| k.name == cfg.tracker.plugin.kind)
        .map_or(&[], |k| k.secrets)
}

/// The built plugins, swapped as a whole on reload.
pub struct Plugins {
    pub matchers: Vec<Arc<dyn Matcher>>,
    pub exporter: Arc<dyn Exporter>,
}

/// A plugin's cache namespace inside the store.
struct StoreCache {
    store: Store,
    prefix: String,
}

impl KvCache for StoreCache {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.store
            .kv_get(&format!("{}{key}", self.prefix))
            .map_err(|e| tracing::warn!(error = %e, "plugin cache read failed"))
            .ok()
            .flatten()
    }
    fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) {
        let expires = ttl.map(|t| crate::model::now_millis() + t.as_millis() as i64);
        self.store
            .kv_put_detached(format!("{}{key}", self.prefix), value.to_vec(), expires);
    }
}

/// The key path a plugin's error is about: `table.path` when the plugin named one (its path
/// inside its own table, e.g. `timeout`, `args[1]`, `env.TOKEN`), else the table itself.
fn plugin_key(table_key: &str, e: &PluginError) -> String {
    match e.key.as_deref() {
        Some(k) if k.starts_with('[') => format!("{table_key}{k}"),
        Some(k) if !k.is_empty() => format!("{table_key}.{k}"),
        _ => table_key.to_string(),
    }
}

fn known<C>(kinds: &[Kind<C>]) -> String {
    kinds.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

fn context(
    cfg: &Config,
    table: &PluginTable,
    wanted: &[&str],
    secrets: &HashMap<String, Secret>,
    cache: Arc<dyn KvCache>,
) -> PluginContext {
    PluginContext {
        config: table_to_json(&table.settings),
        secrets: wanted
            .iter()
            .filter_map(|n| secrets.get(*n).map(|s| (n.to_string(), s.clone())))
            .collect(),
        cache,
        config_dir: cfg.config_dir(),
    }
}

/// Build every configured plugin. `cache_store` backs the plugins' caches (None: in memory,
/// for offline runs). Errors name the plugin's table in the config.
pub fn build(
    cfg: &Config,
    secrets: &HashMap<String, Secret>,
    cache_store: Option<&Store>,
) -> Result<Plugins, ConfigError> {
    let err = |key: String, message: String| cfg.error_at(&key, message);
    let cache_for = |prefix: String| -> Arc<dyn KvCache> {
        match cache_store {
            Some(s) => Arc::new(StoreCache {
                store: s.clone(),
                prefix,
            }),
            None => Arc::new(plexsync_plugin_api::MemoryCache::default()),
        }
    };
    let mut matchers = Vec::new();
    for (i, table) in cfg.matchers.iter().enumerate() {
        let kind = MATCHERS
            .iter()
            .find(|k| k.name == table.kind)
            .ok_or_else(|| {
                err(
                    format!("matchers[{i}].kind"),
                    format!(
                        "unknown matcher kind {:?}; known kinds: {}",
                        table.kind,
                        known(MATCHERS)
                    ),
                )
            })?;
        let ctx = context(
            cfg,
            table,
            kind.secrets,
            secrets,
            cache_for(format!("m{i}:{}:", kind.name)),
        );
        let m = (kind.ctor)(&ctx).map_err(|e| {
            err(
                plugin_key(&format!("matchers[{i}]"), &e),
                format!("matcher `{}`: {e}", kind.name),
            )
        })?;
        matchers.push(m);
    }
    let table = &cfg.tracker.plugin;
    let kind = EXPORTERS
        .iter()
        .find(|k| k.name == table.kind)
        .ok_or_else(|| {
            err(
                "tracker.kind".into(),
                format!(
                    "unknown exporter kind {:?}; known kinds: {}",
                    table.kind,
                    known(EXPORTERS)
                ),
            )
        })?;
    let ctx = context(
        cfg,
        table,
        kind.secrets,
        secrets,
        cache_for(format!("x:{}:", kind.name)),
    );
    let exporter = (kind.ctor)(&ctx).map_err(|e| {
        err(
            plugin_key("tracker", &e),
            format!("exporter `{}`: {e}", kind.name),
        )
    })?;
    Ok(Plugins { matchers, exporter })
}

/// Probe every built plugin (`Matcher::probe` / `Exporter::probe`): what building leaves
/// unchecked because it needs the outside world, such as starting the exec matcher's program.
/// Only the daemon's start and `plexsync check` call this. `plugins` must have been built
/// from `cfg`; errors name the plugin's table (and key) in it.
pub async fn probe(cfg: &Config, plugins: &Plugins) -> Result<(), ConfigError> {
    for (i, m) in plugins.matchers.iter().enumerate() {
        m.probe().await.map_err(|e| {
            cfg.error_at(
                &plugin_key(&format!("matchers[{i}]"), &e),
                format!("matcher `{}`: {e}", m.kind()),
            )
        })?;
    }
    let x = &plugins.exporter;
    x.probe().await.map_err(|e| {
        cfg.error_at(
            &plugin_key("tracker", &e),
            format!("exporter `{}`: {e}", x.kind()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn unknown_kind_lists_the_known_ones() {
        let text = "[tracker]\nurl = \"http://127.0.0.1:1/api\"\n[[matchers]]\nkind = \"guid\"\n[[matchers]]\nkind = \"magic\"\n";
        let cfg = Config::parse(Path::new("x.toml"), text).unwrap();
        let e = build(&cfg, &HashMap::new(), None).err().unwrap();
        assert_eq!(e.key.as_deref(), Some("matchers[1].kind"));
        assert!(
            e.message.contains("known kinds: guid, tmdb, title, exec"),
            "{e}"
        );
    }

    #[test]
    fn plugin_config_errors_point_at_the_key() {
        let text =
            "[tracker]\nkind = \"tracker\"\nurl = \"ftp://x\"\n[[matchers]]\nkind = \"guid\"\n";
        let cfg = Config::parse(Path::new("/nonexistent/x.toml"), text).unwrap();
        let e = build(&cfg, &HashMap::new(), None).err().unwrap();
        assert_eq!(e.key.as_deref(), Some("tracker.url"), "{e}");
    }

    #[test]
    fn tmdb_builds_without_its_key_and_its_errors_point_at_the_key() {
        let text = "[tracker]\nurl = \"http://127.0.0.1:1/api\"\n[[matchers]]\nkind = \"tmdb\"\n";
        let cfg = Config::parse(Path::new("x.toml"), text).unwrap();
        assert_eq!(
            build(&cfg, &HashMap::new(), None).unwrap().matchers[0].kind(),
            "tmdb"
        );
        let text = format!("{text}rate_limit = \"fast\"\n");
        let cfg = Config::parse(Path::new("x.toml"), &text).unwrap();
        let e = build(&cfg, &HashMap::new(), None).err().unwrap();
        assert_eq!(e.key.as_deref(), Some("matchers[0].rate_limit"), "{e}");
    }

    #[test]
    fn plugin_errors_carry_the_full_key_path_and_line() {
        let text = "[tracker]\nurl = \"http://127.0.0.1:1/api\"\n[[matchers]]\nkind = \"guid\"\n[[matchers]]\nkind = \"title\"\n[[matchers]]\nkind = \"tmdb\"\ntimeout = 10\n";
        let cfg = Config::parse(Path::new("x.toml"), text).unwrap();
        let e = build(&cfg, &HashMap::new(), None).err().unwrap();
        assert_eq!(e.key.as_deref(), Some("matchers[2].timeout"), "{e}");
        assert_eq!(e.line, Some(9), "{e}");
        assert!(
            e.to_string()
                .starts_with("x.toml:9: key `matchers[2].timeout`: matcher `tmdb`: "),
            "{e}"
        );
        let text = "[tracker]\nurl = \"http://127.0.0.1:1/api\"\nretry = { max = 3 }\n[[matchers]]\nkind = \"guid\"\n";
        let cfg = Config::parse(Path::new("x.toml"), text).unwrap();
        let e = build(&cfg, &HashMap::new(), None).err().unwrap();
        assert_eq!(e.key.as_deref(), Some("tracker.retry"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(
            plugin_key("matchers[2]", &PluginError::config("x").with_key("args[1]")),
            "matchers[2].args[1]"
        );
        assert_eq!(plugin_key("tracker", &PluginError::config("x")), "tracker");
    }

    #[test]
    fn probing_the_default_chain_checks_nothing_outside() {
        let text = "[tracker]\nurl = \"http://127.0.0.1:1/api\"\n[[matchers]]\nkind = \"guid\"\n";
        let cfg = Config::parse(Path::new("x.toml"), text).unwrap();
        let p = build(&cfg, &HashMap::new(), None).unwrap();
        // The tracker is unreachable (port 1): that is no reason to refuse a start.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(probe(&cfg, &p)).unwrap();
    }

    /// One grammar: what the host's own `[tracker]` key accepts, the tracker plugin's keys in
    /// the same table and the matchers' keys accept, and what one refuses, all refuse alike.
    #[test]
    fn host_and_plugin_keys_share_one_duration_grammar() {
        for d in ["1m 30s", "90s", "1.5s", "2 min", "500ms", "1h"] {
            let text = format!(
                "[tracker]\nurl = \"http://127.0.0.1:1/api\"\ncatalogue_refresh = \"{d}\"\ntimeout = \"{d}\"\n\
                 [poll]\noverlap = \"{d}\"\n\
                 [[matchers]]\nkind = \"exec\"\ncommand = \"sh\"\ntimeout = \"{d}\"\n\
                 [[matchers]]\nkind = \"tmdb\"\ncache_ttl = \"{d}\"\n"
            );
            let cfg = Config::parse(Path::new("x.toml"), &text).unwrap();
            let want = plexsync_plugin_api::values::parse_duration(d).unwrap();
            assert_eq!(cfg.tracker.catalogue_refresh, want, "{d}");
            assert_eq!(cfg.poll.overlap, want, "{d}");
            let p = build(&cfg, &HashMap::new(), None).unwrap_or_else(|e| panic!("{d:?}: {e}"));
            assert_eq!(p.matchers.len(), 2);
        }
        for (keys, key, line) in [
            (
                "catalogue_refresh = \"5\"\ntimeout = \"5s\"",
                "tracker.catalogue_refresh",
                3,
            ),
            (
                "catalogue_refresh = \"5s\"\ntimeout = \"5\"",
                "tracker.timeout",
                4,
            ),
        ] {
            let text = format!(
                "[tracker]\nurl = \"http://127.0.0.1:1/api\"\n{keys}\n[[matchers]]\nkind = \"guid\"\n"
            );
            let e = Config::parse(Path::new("x.toml"), &text)
                .and_then(|cfg| build(&cfg, &HashMap::new(), None).map(drop))
                .unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert!(e.message.contains("\"5\" is not a duration"), "{e}");
            assert_eq!(e.line, Some(line), "{e}");
        }
    }

    #[test]
    fn builds_the_default_chain() {
        let text = "[tracker]\nurl = \"http://127.0.0.1:1/api\"\n[[matchers]]\nkind = \"guid\"\n";
        let cfg = Config::parse(Path::new("x.toml"), text).unwrap();
        let p = build(&cfg, &HashMap::new(), None).unwrap();
        assert_eq!(p.matchers.len(), 1);
        assert_eq!(p.matchers[0].kind(), "guid");
        assert_eq!(p.exporter.kind(), "tracker");
    }
}
