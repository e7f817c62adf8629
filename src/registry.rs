//! The plugin registry: maps the `kind` names of plexsync.toml to plugin constructors and
//! builds the configured chain. This table is the only place that names plugins; the rest of
//! the host sees `dyn Matcher` / `dyn Exporter` and never special-cases one.

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

/// The dotted key a plugin's config error is about: `table.key` when the plugin named a key
/// that is present in its table, else the table itself.
fn plugin_key(table_key: &str, table: &PluginTable, e: &PluginError) -> String {
    match e.config_key() {
        Some(k) if table.settings.contains_key(&k) => format!("{table_key}.{k}"),
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
                plugin_key(&format!("matchers[{i}]"), table, &e),
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
            plugin_key("tracker", table, &e),
            format!("exporter `{}`: {e}", kind.name),
        )
    })?;
    Ok(Plugins { matchers, exporter })
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
    fn builds_the_default_chain() {
        let text = "[tracker]\nurl = \"http://127.0.0.1:1/api\"\n[[matchers]]\nkind = \"guid\"\n";
        let cfg = Config::parse(Path::new("x.toml"), text).unwrap();
        let p = build(&cfg, &HashMap::new(), None).unwrap();
        assert_eq!(p.matchers.len(), 1);
        assert_eq!(p.matchers[0].kind(), "guid");
        assert_eq!(p.exporter.kind(), "tracker");
    }
}
