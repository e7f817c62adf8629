//! The exec matcher's config table (`[[matchers]] kind = "exec"` in plexsync.toml): its keys,
//! their defaults, their validation, and where the program is found. Every error is a config
//! error that names the offending key, so `plexsync check` can point at the line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plexsync_plugin_api::values::{ConfigDuration, check_duration};
use plexsync_plugin_api::{PluginContext, PluginError};
use serde::Deserialize;

/// Default for `timeout` (one request).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for `start_timeout` (from spawning the program to its hello).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `restart_backoff` (the longest wait before restarting a program that died).
pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_secs(60);
/// Longest accepted duration: beyond an hour a wait is not slow but stuck, and a bound keeps
/// timer arithmetic far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// The table as written (minus `kind`), typed: a wrong type or an unknown key is a serde error
/// whose key path (`args[1]`, `env.TOKEN`) the plugin API reports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Optional here so its absence is "`command` is required", keyed like every other error.
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    timeout: Option<ConfigDuration>,
    #[serde(default)]
    start_timeout: Option<ConfigDuration>,
    #[serde(default)]
    restart_backoff: Option<ConfigDuration>,
}

/// The validated config.
#[derive(Clone)]
pub struct ExecConfig {
    /// The program, resolved to an existing executable file.
    pub command: PathBuf,
    pub args: Vec<String>,
    /// Extra environment variables (added to the inherited environment).
    pub env: BTreeMap<String, String>,
    /// The program's working directory: the config file's folder.
    pub dir: PathBuf,
    pub timeout: Duration,
    pub start_timeout: Duration,
    pub restart_backoff: Duration,
}

// By hand: `env` may carry tokens for the user's program, so only its names are shown.
impl fmt::Debug for ExecConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecConfig")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("dir", &self.dir)
            .field("timeout", &self.timeout)
            .field("start_timeout", &self.start_timeout)
            .field("restart_backoff", &self.restart_backoff)
            .finish()
    }
}

/// A config error about `key` (a path in the table: `command`, `args[1]`, `env.NAME`). No
/// plugin prefix and no key in the message: the host says "key `matchers[1].command`: matcher
/// `exec`:" before it.
fn err(key: &str, message: impl fmt::Display) -> PluginError {
    PluginError::config(message.to_string()).with_key(key)
}

fn duration(
    key: &str,
    value: Option<ConfigDuration>,
    default: Duration,
) -> Result<Duration, PluginError> {
    match value {
        None => Ok(default),
        Some(ConfigDuration(d)) => check_duration(d, MAX_DURATION).map_err(|why| err(key, why)),
    }
}

fn no_nul(key: &str, s: &str) -> Result<(), PluginError> {
    if s.contains('\0') {
        return Err(err(key, "must not contain a NUL character"));
    }
    Ok(())
}

impl ExecConfig {
    /// Parse and validate the plugin's table; resolve `command` against `ctx.config_dir`
    /// (or `PATH` for a bare name) and check that it is an executable file.
    pub fn from_context(ctx: &PluginContext) -> Result<ExecConfig, PluginError> {
        let raw: RawConfig = ctx.parse_config()?;
        let command = raw.command.ok_or_else(|| {
            err(
                "command",
                "is required: the program to run (a path, or a name on PATH)",
            )
        })?;
        no_nul("command", &command)?;
        if command.trim().is_empty() {
            return Err(err("command", "must not be empty"));
        }
        for (i, a) in raw.args.iter().enumerate() {
            no_nul(&format!("args[{i}]"), a)?;
        }
        for (name, v) in &raw.env {
            let key = format!("env.{name}");
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(err(&key, format!("{name:?} is not a valid variable name")));
            }
            no_nul(&key, v)?;
        }
        let (args, env) = (raw.args, raw.env);
        let timeout = duration("timeout", raw.timeout, DEFAULT_TIMEOUT)?;
        let start_timeout = duration("start_timeout", raw.start_timeout, DEFAULT_START_TIMEOUT)?;
        let restart_backoff = duration(
            "restart_backoff",
            raw.restart_backoff,
            DEFAULT_RESTART_BACKOFF,
        )?;
        let command = resolve_command(&command, &ctx.config_dir, std::env::var_os("PATH"))?;
        Ok(ExecConfig {
            command,
            args,
            env,
            dir: std::path::absolute(&ctx.config_dir).unwrap_or_else(|_| ctx.config_dir.clone()),
            timeout,
            start_timeout,
            restart_backoff,
        })
    }

    /// A short name for logs when the program's hello names none: the file name.
    pub fn file_name(&self) -> String {
        self.command
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "exec".into())
    }
}

/// A command with a `/` is a path (relative ones against the config file's folder); a bare
/// name is looked up on `PATH`, as a shell would.
fn resolve_command(
    command: &str,
    config_dir: &Path,
    path_var: Option<std::ffi::OsString>,
) -> Result<PathBuf, PluginError> {
    if command.contains('/') {
        let p = Path::new(command);
        // Absolute, because the program runs in `config_dir`: a relative program path next
        // to a changed working directory is resolved differently by each platform.
        let full = std::path::absolute(config_dir.join(p))
            .map_err(|e| err("command", format!("{command:?}: {e}")))?;
        check_executable(&full)?;
        return Ok(full);
    }
    let dirs = path_var
        .as_deref()
        .map(|v| std::env::split_paths(v).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in dirs {
        let candidate = dir.join(command);
        if check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(err(
        "command",
        format!(
            "{command:?} was not found on PATH (give a path, e.g. \"./{command}\", for a file next to the config)"
        ),
    ))
}

fn check_executable(path: &Path) -> Result<(), PluginError> {
    let meta =
        std::fs::metadata(path).map_err(|e| err("command", format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(err("command", format!("{} is not a file", path.display())));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(err(
                "command",
                format!(
                    "{} is not executable (chmod +x it, or run it through an interpreter: command = \"python3\", args = [\"…\"])",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexsync_plugin_api::{ErrorClass, MemoryCache};
    use std::sync::Arc;

    fn ctx(config: serde_json::Value) -> PluginContext {
        PluginContext {
            config,
            secrets: Default::default(),
            cache: Arc::new(MemoryCache::default()),
            config_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        }
    }

    fn key_of(config: serde_json::Value) -> (ErrorClass, Option<String>, String) {
        let e = ExecConfig::from_context(&ctx(config)).unwrap_err();
        (e.class, e.key, e.message)
    }

    #[test]
    fn defaults_and_relative_command() {
        let c = ExecConfig::from_context(&ctx(
            serde_json::json!({"command": "examples/title_table.py"}),
        ))
        .unwrap();
        assert_eq!(
            c.command,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/title_table.py")
        );
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.start_timeout, DEFAULT_START_TIMEOUT);
        assert_eq!(c.restart_backoff, DEFAULT_RESTART_BACKOFF);
        assert!(c.args.is_empty() && c.env.is_empty());
        assert_eq!(c.file_name(), "title_table.py");
    }

    #[test]
    fn bare_names_are_looked_up_on_path() {
        let c = ExecConfig::from_context(&ctx(
            serde_json::json!({"command": "sh", "args": ["-c", "true"], "env": {"A": "1"}, "timeout": "250ms"}),
        ))
        .unwrap();
        assert!(c.command.is_absolute(), "{:?}", c.command);
        assert_eq!(c.args, ["-c", "true"]);
        assert_eq!(c.env["A"], "1");
        assert_eq!(c.timeout, Duration::from_millis(250));
        let e = resolve_command("no-such-program-xyz", Path::new("/"), Some("/bin".into()))
            .unwrap_err();
        assert!(e.message.contains("not found on PATH"), "{}", e.message);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (serde_json::json!({}), "command"),
            (serde_json::json!(null), "command"),
            (serde_json::json!({"command": 5}), "command"),
            (
                serde_json::json!({"command": "examples/missing.py"}),
                "command",
            ),
            // A directory, and a file without the x bit.
            (serde_json::json!({"command": "examples"}), "command"),
            (serde_json::json!({"command": "sample.toml"}), "command"),
            (serde_json::json!({"command": "sh", "args": "x"}), "args"),
            (
                serde_json::json!({"command": "sh", "args": ["x", 1]}),
                "args[1]",
            ),
            (
                serde_json::json!({"command": "sh", "args": ["x", "a\0b"]}),
                "args[1]",
            ),
            (
                serde_json::json!({"command": "sh", "env": {"A": 1}}),
                "env.A",
            ),
            (
                serde_json::json!({"command": "sh", "env": {"A=B": "1"}}),
                "env.A=B",
            ),
            (serde_json::json!({"command": "sh", "env": ["A"]}), "env"),
            (
                serde_json::json!({"command": "sh", "timeout": "5"}),
                "timeout",
            ),
            (
                serde_json::json!({"command": "sh", "timeout": "0s"}),
                "timeout",
            ),
            (
                serde_json::json!({"command": "sh", "start_timeout": 5}),
                "start_timeout",
            ),
            (
                serde_json::json!({"command": "sh", "restart_backoff": "2h"}),
                "restart_backoff",
            ),
            (
                serde_json::json!({"command": "sh", "timout": "5s"}),
                "timout",
            ),
        ];
        for (config, key) in cases {
            let (class, k, message) = key_of(config.clone());
            assert_eq!(class, ErrorClass::Config, "{config}");
            assert_eq!(k.as_deref(), Some(key), "{config}: {message}");
        }
    }

    #[test]
    fn debug_hides_env_values() {
        let c = ExecConfig::from_context(&ctx(
            serde_json::json!({"command": "sh", "env": {"TOKEN": "hunter2"}}),
        ))
        .unwrap();
        let d = format!("{c:?}");
        assert!(d.contains("TOKEN") && !d.contains("hunter2"), "{d}");
    }

    #[test]
    fn durations_use_the_shared_grammar_up_to_an_hour() {
        let c = ExecConfig::from_context(&ctx(serde_json::json!({
            "command": "sh", "timeout": "1m 30s", "start_timeout": " 150ms ", "restart_backoff": "1h",
        })))
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(90));
        assert_eq!(c.start_timeout, Duration::from_millis(150));
        assert_eq!(c.restart_backoff, Duration::from_secs(3600));
        for bad in ["61m", "99999999999999999999999s", "s", "2h", "0s"] {
            let (_, key, message) = key_of(serde_json::json!({"command": "sh", "timeout": bad}));
            assert_eq!(key.as_deref(), Some("timeout"), "{bad:?}: {message}");
        }
    }
}
