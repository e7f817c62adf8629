//! Black-box test of the `exec` matcher through the host: `plexsync match` with the chain
//! guid → exec, where exec runs the example program shipped in plugins/exec/examples, on a
//! small catalogue and queries written here.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::daemon::cli;

#[test]
fn plexsync_match_runs_the_exec_program_after_guid() {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/exec/examples");
    // A table of our own (the shipped one names ids this catalogue does not have).
    std::fs::write(dir.path().join("table.json"), r#"{"Cool Couple": 5}"#).unwrap();
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tracker]\nurl = \"http://127.0.0.1:9/api\"\n\
             [[matchers]]\nkind = \"guid\"\n\
             [[matchers]]\nkind = \"exec\"\ncommand = \"{}\"\nargs = [\"table.json\"]\ntimeout = \"5s\"\n",
            examples.join("title_table.py").display()
        ),
    )
    .unwrap();
    let catalog = dir.path().join("catalogue.jsonl");
    std::fs::write(
        &catalog,
        [
            r#"{"id": 1, "title": "The Office", "year": 2005, "tvdb_id": 73244}"#,
            r#"{"id": 2, "title": "Kanon", "year": 2006}"#,
            r#"{"id": 3, "title": "Kanon", "year": 2002}"#,
            r#"{"id": 4, "title": "Spiral", "year": 2005, "original_title": "Engrenages"}"#,
            r#"{"id": 5, "title": "Iketeru Futari", "year": 2024}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let queries = dir.path().join("queries.jsonl");
    std::fs::write(
        &queries,
        [
            // Settled by guid before exec is asked.
            r#"{"qid": "id", "title": "The Office (US)", "year": 2005, "guids": ["com.plexapp.agents.thetvdb://73244?lang=en"]}"#,
            // exec: the original title, exactly.
            r#"{"qid": "orig", "title": "engrenages", "year": 2005, "guids": []}"#,
            // exec: the user's table.
            r#"{"qid": "table", "title": "Cool Couple", "year": 2024, "guids": []}"#,
            // exec: two shows with that title and no year to choose: candidates.
            r#"{"qid": "two", "title": "Kanon", "year": null, "guids": []}"#,
            // exec: nothing.
            r#"{"qid": "none", "title": "Zzyzx Qwerty", "year": 1990, "guids": []}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = cli(
        &cfg,
        &[
            "match",
            "--json",
            "--catalog",
            catalog.to_str().unwrap(),
            "--queries",
            queries.to_str().unwrap(),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.pop().unwrap();
    let by: HashMap<&str, &Value> = lines
        .iter()
        .map(|l| (l["qid"].as_str().unwrap(), l))
        .collect();
    assert_eq!(by["id"]["decision"], "auto");
    assert_eq!(by["id"]["method"], "tvdb_id");
    assert_eq!(by["orig"]["decision"], "auto", "{}", by["orig"]);
    assert_eq!(by["orig"]["show_id"], "4");
    assert_eq!(by["orig"]["method"], "exec:exact_title");
    assert_eq!(by["table"]["decision"], "auto");
    assert_eq!(by["table"]["show_id"], "5");
    assert_eq!(by["table"]["method"], "exec:table");
    assert_eq!(by["two"]["decision"], "conflict");
    let ids: Vec<&str> = by["two"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["show_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"2") && ids.contains(&"3"), "{ids:?}");
    assert_eq!(by["none"]["decision"], "none");
    assert_eq!(summary["auto"], 3, "{summary}");
}

#[test]
fn check_refuses_a_missing_exec_program() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(
        &cfg,
        "[tracker]\nurl = \"http://127.0.0.1:9/api\"\n[[matchers]]\nkind = \"exec\"\ncommand = \"./nowhere.py\"\n",
    )
    .unwrap();
    let out = cli(&cfg, &["check"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("command"), "{err}");
    assert!(err.contains("nowhere.py"), "{err}");
}

/// The pids the fixture program appended to `marker`, one per start.
fn starts(marker: &Path) -> Vec<String> {
    std::fs::read_to_string(marker)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Building plugins starts no program: offline commands, a stored secret (offline and through
/// the daemon) and a SIGHUP reload all build the exec matcher without running it. Only
/// `plexsync check` and the daemon's start probe it, i.e. start it and read its hello.
#[tokio::test]
async fn only_check_and_run_start_the_exec_program() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("starts");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/exec/tests/fixtures/scripted.py");
    let text = support::daemon::config(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/api",
        &format!(
            "[[matchers]]\nkind = \"exec\"\ncommand = \"{}\"\nargs = [\"--mark\", \"{}\"]\n",
            fixture.display(),
            marker.display()
        ),
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    let ok = |args: &[&str], stdin: Option<&str>| {
        let out = cli(&cfg, args, stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // Offline: the store is made, then state commands and a secret run in process.
    ok(&["webhook-url"], None);
    ok(&["conflicts", "list"], None);
    ok(&["mappings", "list"], None);
    ok(&["secret", "set", "tmdb-key"], Some("offline-key\n"));
    assert_eq!(starts(&marker), Vec::<String>::new(), "offline commands");

    // `check` probes: one start.
    ok(&["check"], None);
    assert_eq!(starts(&marker).len(), 1, "check");

    // The daemon's start probes: one more, kept as the working instance.
    let d = support::daemon::Daemon::start(dir.path(), &text).await;
    assert_eq!(starts(&marker).len(), 2, "run:\n{}", d.log());

    // A secret through the daemon (PUT /api/secrets) and a reload rebuild without starting.
    let out = d.cli(&["secret", "set", "tmdb-key"], Some("online-key\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.signal("HUP");
    support::eventually("the reload", Duration::from_secs(10), || {
        d.log().contains("configuration reloaded").then_some(())
    })
    .await;
    // Nothing to match, so nothing may start it; give a stray start time to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(starts(&marker).len(), 2, "secret and reload:\n{}", d.log());
}

/// A program that breaks the protocol is found by `check` (and the start), not by commands
/// that only build: the key and line point at `command`.
#[test]
fn check_probes_the_exec_program() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/exec/tests/fixtures/scripted.py");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tracker]\nurl = \"http://127.0.0.1:9/api\"\n[[matchers]]\nkind = \"guid\"\n[[matchers]]\nkind = \"exec\"\ncommand = \"{}\"\nargs = [\"--protocol\", \"2\"]\n",
            fixture.display()
        ),
    )
    .unwrap();
    let out = cli(&cfg, &["check"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plexsync.toml:7: key `matchers[1].command`"),
        "{err}"
    );
    assert!(err.contains("speaks protocol 2"), "{err}");
}
