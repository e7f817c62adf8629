//! Config errors as a person meets them, through the real binary: every kind reads
//! `file:line: key `section.key`: reason` in words (no Rust type names), `check` and `run`
//! refuse the same things, a missing config says how to point at one, and `plexsync settings`
//! answers the same online and offline without ever showing a secret.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::daemon::{self, BIN, Daemon};
use support::plex::TOKEN;

const MIN: &str = "[tracker]\nurl = \"http://127.0.0.1:9/api\"\n\n[[matchers]]\nkind = \"guid\"\n";

/// Words of Rust's that must never reach a person reading a config error.
const RUST_WORDS: &[&str] = &[
    "usize", "isize", "u8", "u16", "u32", "u64", "u128", "i8", "i16", "i32", "i64", "i128", "f32",
    "f64", "struct", "enum", "Option", "map", "Vec", "sequence", "variant", "untagged",
];

fn rust_words(text: &str) -> Vec<&'static str> {
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .collect();
    RUST_WORDS
        .iter()
        .copied()
        .filter(|w| words.contains(w))
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// `plexsync ARGS` with the environment a person's shell might have, minus systemd's.
fn plexsync(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("PLEXSYNC_CONFIG")
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `check` refuses `text`; its one error line names the file, the line and the key, in words.
fn refused(dir: &Path, text: &str, line: usize, key: &str) -> String {
    let cfg = dir.join("plexsync.toml");
    std::fs::write(&cfg, text).unwrap();
    let o = daemon::cli(&cfg, &["check"], None);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{text}\n{err}");
    let want = format!("plexsync: {}:{line}: key `{key}`: ", cfg.display());
    assert!(err.starts_with(&want), "want {want:?}\ngot {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        rust_words(&err.replace(key, "")).is_empty(),
        "Rust names in: {err}"
    );
    err
}

#[test]
fn wrong_types_name_the_key_and_line_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let with = |section: &str| format!("{MIN}\n{section}\n");
    let e = refused(
        d,
        &with("[server]\nmax_body_bytes = \"2 lots\""),
        8,
        "server.max_body_bytes",
    );
    assert!(e.contains("\"2 lots\" is not a size; expected a whole number of bytes (e.g. 2097152) or a size like \"2 MiB\""), "{e}");
    let e = refused(
        d,
        &with("[server]\nmax_body_bytes = -5"),
        8,
        "server.max_body_bytes",
    );
    assert!(e.contains("got the number -5"), "{e}");
    let e = refused(d, &with("[server]\nlisten = 8750"), 8, "server.listen");
    assert!(
        e.contains("expected an address with a port, e.g. \"127.0.0.1:8750\", got the number 8750"),
        "{e}"
    );
    let e = refused(d, &with("[poll]\nenabled = \"yes\""), 8, "poll.enabled");
    assert!(
        e.contains("expected true or false, got the string \"yes\""),
        "{e}"
    );
    let e = refused(d, &with("[poll]\noverlap = 600"), 8, "poll.overlap");
    assert!(e.contains("a duration string like \"30s\""), "{e}");
    refused(d, &with("[poll]\npage_size = [1]"), 8, "poll.page_size");
    refused(
        d,
        &with("[outbox]\nmax_attempts = { n = 1 }"),
        8,
        "outbox.max_attempts",
    );
    let e = refused(
        d,
        &with("[outbox]\nmax_attempts = 5000000000"),
        8,
        "outbox.max_attempts",
    );
    assert!(e.contains("from 0 to 4294967295"), "{e}");
    refused(
        d,
        &with("[matching]\nauto_map_threshold = \"high\""),
        8,
        "matching.auto_map_threshold",
    );
    refused(
        d,
        &with("[plex]\naccounts = [\"Kids\", 1.5]"),
        8,
        "plex.accounts[1]",
    );
    refused(
        d,
        &with("[server]\ntrusted_proxies = [\"nope\"]"),
        8,
        "server.trusted_proxies[0]",
    );
    let e = refused(d, &with("[server]\nlistne = 1"), 8, "server.listne");
    assert!(
        e.contains("unknown key `listne`; the keys here are: listen,"),
        "{e}"
    );
    let e = refused(d, &with("[sever]\nlisten = \"x\""), 7, "sever");
    assert!(
        e.contains("unknown section; the sections are: [server]"),
        "{e}"
    );
    let e = refused(
        d,
        &with("[server]\nlisten = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\""),
        9,
        "server.listen",
    );
    assert!(e.contains("is given twice"), "{e}");
    // Sizes as people write them are accepted.
    let cfg = d.join("plexsync.toml");
    std::fs::write(&cfg, with("[server]\nmax_body_bytes = \"4 MiB\"")).unwrap();
    let o = daemon::cli(&cfg, &["check"], None);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn plugin_tables_read_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = refused(
        d,
        &format!("{MIN}\n[[matchers]]\nkind = \"title\"\nyear_tolerance = \"one\"\n"),
        9,
        "matchers[1].year_tolerance",
    );
    assert!(e.contains("got the string \"one\""), "{e}");
    let e = refused(
        d,
        &format!("{MIN}\n[[matchers]]\nkind = \"title\"\nmax_candidates = -1\n"),
        9,
        "matchers[1].max_candidates",
    );
    assert!(e.contains("got the number -1"), "{e}");
    let e = refused(
        d,
        &format!("{MIN}\n[[matchers]]\nkind = \"exec\"\ncommand = \"/bin/true\"\nargs = \"-v\"\n"),
        10,
        "matchers[1].args",
    );
    assert!(e.contains("expected a list, got the string \"-v\""), "{e}");
    let e = refused(
        d,
        "[tracker]\nurl = \"http://127.0.0.1:9/api\"\ntimeout = 20\n\n[[matchers]]\nkind = \"guid\"\n",
        3,
        "tracker.timeout",
    );
    assert!(e.contains("got the number 20"), "{e}");
    let e = refused(
        d,
        &format!("{MIN}\n[[matchers]]\nkind = \"guid\"\nthreshold = 1\n"),
        9,
        "matchers[1].threshold",
    );
    assert!(e.contains("this table takes no keys"), "{e}");
}

/// `[log] level = "verbose"` once passed `check` and then the daemon logged nothing at all.
#[test]
fn check_and_run_both_refuse_a_bad_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("plexsync.toml");
    for bad in ["verbose", "plexsync=loud"] {
        std::fs::write(&cfg, format!("{MIN}\n[log]\nlevel = \"{bad}\"\n")).unwrap();
        let want = format!("plexsync: {}:8: key `log.level`: ", cfg.display());
        for cmd in ["check", "run"] {
            let o = daemon::cli(&cfg, &[cmd], None);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{cmd} {bad}: {err}");
            assert!(err.starts_with(&want), "{cmd} {bad}: {err}");
            assert!(err.contains("error, warn, info, debug, trace"), "{err}");
        }
    }
    std::fs::write(
        &cfg,
        format!("{MIN}\n[log]\nlevel = \"plexsync=debug,warn\"\n"),
    )
    .unwrap();
    let o = daemon::cli(&cfg, &["check"], None);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_missing_config_says_how_to_point_at_one() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("nowhere.toml");
    // Through PLEXSYNC_CONFIG, and (when this machine has none) the default path.
    let mut runs = vec![plexsync(&["status"], &[("PLEXSYNC_CONFIG", &absent)])];
    if !Path::new("/etc/plexsync/plexsync.toml").exists() {
        runs.push(plexsync(&["status"], &[]));
    }
    for o in runs {
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("no such file"), "{err}");
        assert!(err.contains("--config"), "{err}");
        assert!(err.contains("PLEXSYNC_CONFIG"), "{err}");
    }
    // And the variable is honoured.
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, MIN).unwrap();
    let o = plexsync(&["check"], &[("PLEXSYNC_CONFIG", &cfg)]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn json_of(o: &Output, what: &str) -> Value {
    assert!(o.status.success(), "{what}: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_the_same_online_and_offline_and_hold_no_secret() {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    // The exec matcher's `env` may carry tokens for its program: shown as hidden.
    let program =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/exec/examples/title_table.py");
    std::fs::write(dir.path().join("table.json"), "{}").unwrap();
    let text = daemon::config(
        &support::dead_url(),
        &support::dead_url(),
        &format!(
            "\n[[matchers]]\nkind = \"exec\"\ncommand = \"{}\"\nargs = [\"table.json\"]\nenv = {{ HOOK_TOKEN = \"exec-env-secret-4711\" }}\n",
            program.display()
        ),
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    let set = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN));
    assert!(set.status.success(), "{}", stderr(&set));

    let mut d = Daemon::start(dir.path(), &text).await;
    let online = json_of(&d.cli(&["settings", "--json"], None), "settings online");
    let online_text = String::from_utf8(d.cli(&["settings"], None).stdout).unwrap();
    let token = d.admin_token().await;
    assert_eq!(d.stop(), Some(0));
    let offline = json_of(&daemon::cli(&cfg, &["settings", "--json"], None), "offline");
    let offline_text = String::from_utf8(daemon::cli(&cfg, &["settings"], None).stdout).unwrap();
    assert_eq!(online, offline);
    assert_eq!(online_text, offline_text);

    let setting = |k: &str| {
        online["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == k)
            .unwrap_or_else(|| panic!("no {k} in {online}"))
            .clone()
    };
    assert_eq!(setting("server.listen")["value"], "127.0.0.1:0");
    assert_eq!(setting("server.listen")["source"], "file");
    assert_eq!(setting("server.max_body_bytes")["value"], 2 * 1024 * 1024);
    assert_eq!(setting("server.max_body_bytes")["source"], "default");
    assert_eq!(setting("outbox.initial_backoff")["value"], "100ms");
    assert_eq!(setting("matchers[1].kind")["value"], "exec");
    assert_eq!(setting("matchers[1].env.HOOK_TOKEN")["hidden"], true);
    assert_eq!(
        online["config_file"],
        std::fs::canonicalize(&cfg).unwrap().display().to_string()
    );
    let secret = |n: &str| {
        online["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("no {n}"))
            .clone()
    };
    assert_eq!(secret("plex-token")["set"], true);
    assert_eq!(
        secret("plex-token")["command"],
        "plexsync secret set plex-token"
    );
    assert_eq!(secret("tracker-key")["set"], false);
    assert_eq!(secret("admin-token")["set"], true);
    assert_eq!(secret("webhook-secret")["set"], true);

    let webhook_secret = d.webhook_url.rsplit('/').next().unwrap().to_string();
    for shown in [online.to_string(), online_text.clone()] {
        for secret in [
            TOKEN,
            token.as_str(),
            webhook_secret.as_str(),
            "exec-env-secret-4711",
        ] {
            assert!(
                !shown.contains(secret),
                "a secret value in the settings:\n{shown}"
            );
        }
    }
    assert!(online_text.contains("plex-token      set"), "{online_text}");
    assert!(
        online_text.contains("(hidden: may hold a secret)"),
        "{online_text}"
    );
}
