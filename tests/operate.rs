//! The operator's CLI: `conflicts list|resolve` and `mappings list|set` against the running
//! daemon (over its admin socket) and, once it has stopped, against the store directly —
//! with the same rules and answers on both paths. The daemon runs in process
//! (support/inproc.rs); the CLI is the real binary.

mod support;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::daemon;
use support::inproc::InProc;
use support::plex::TOKEN;
use support::{eventually, samples};

const WAIT: Duration = Duration::from_secs(20);

async fn run(config: PathBuf, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        daemon::cli(&config, &refs, None)
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}\n{}",
        stderr(o),
        stdout(o)
    );
    stdout(o)
}

fn json_out(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_mappings_from_the_cli_online_and_offline() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let (_plex, tracker, cfg_text) = support::office_conflict(dir.path()).await;
    let cfg = dir.path().join("plexsync.toml");
    // Before the daemon ever ran there is nothing to list: a clear message, not a new store.
    let o = run(cfg.clone(), &["conflicts", "list"]).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("start the daemon once"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("plexsync.redb").exists());

    let out = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN));
    assert!(out.status.success());
    let mut d = InProc::start(dir.path(), &cfg_text).await;
    support::accounts_read(&d).await;
    assert_eq!(
        support::post_sample(&d.webhook_url, support::NEW_AGENT_SCROBBLE).await,
        200
    );
    let mut listed = Value::Null;
    for _ in 0..200 {
        listed = json_out(&run(cfg.clone(), &["conflicts", "list", "--json"]).await);
        if listed["total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["total"], 1, "{listed}\n{}", d.log());
    assert_eq!(listed["items"][0]["held_plays"], 1);

    // The table a person reads names the show, the held play and both candidates.
    let table = ok(&run(cfg.clone(), &["conflicts", "list"]).await);
    // (The webhook's own title of the show; Plex's metadata call supplies the year matched on.)
    assert!(table.contains("范马刃牙"), "{table}");
    assert!(table.contains("ratingKey 40275"), "{table}");
    assert!(table.contains("held:    1 play(s)"), "{table}");
    // The year comes from Plex's show metadata (the webhook has only the episode's).
    assert!(table.contains("范马刃牙 (2003)"), "{table}");
    assert!(
        table.contains("office-us") && table.contains("office-uk"),
        "{table}"
    );

    // Unknown conflict and unknown show: clear errors, nothing changes.
    let o = run(cfg.clone(), &["conflicts", "resolve", "99999", "--ignore"]).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no open conflict matches \"99999\""),
        "{}",
        stderr(&o)
    );
    let o = run(
        cfg.clone(),
        &["conflicts", "resolve", "40275", "--select", "nope"],
    )
    .await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not in the tracker's catalogue"),
        "{}",
        stderr(&o)
    );
    // An action is required.
    let o = run(cfg.clone(), &["conflicts", "resolve", "40275"]).await;
    assert!(!o.status.success());
    assert_eq!(d.api("GET", "/api/conflicts").await["total"], 1);

    // Resolve by ratingKey: the held play goes to the chosen show.
    let said = ok(&run(
        cfg.clone(),
        &["conflicts", "resolve", "40275", "--select", "office-us"],
    )
    .await);
    assert!(
        said.contains("1 held play(s) released, 1 episode(s) queued"),
        "{said}"
    );
    eventually("the held play reaches the tracker", WAIT, || {
        tracker
            .watched()
            .contains_key(&("office-us".to_string(), 1, 1))
            .then_some(())
    })
    .await;
    assert_eq!(
        json_out(&run(cfg.clone(), &["conflicts", "list", "--json"]).await)["total"],
        0
    );

    // The decision is a manual mapping.
    let maps = json_out(&run(cfg.clone(), &["mappings", "list", "--json"]).await);
    assert_eq!(maps["total"], 1, "{maps}");
    let m = &maps["items"][0];
    assert_eq!(m["tracker"]["id"], "office-us");
    assert_eq!(m["manual"], true);
    assert_eq!(m["sync_enabled"], true);
    let table = ok(&run(cfg.clone(), &["mappings", "list"]).await);
    assert!(
        table.contains("40275") && table.contains("office-us The Office (2005)"),
        "{table}"
    );
    assert_eq!(
        json_out(&run(cfg.clone(), &["mappings", "list", "--conflicts", "--json"]).await)["total"],
        0
    );

    // Switch sync off by the Plex title, while the daemon runs.
    let said = ok(&run(cfg.clone(), &["mappings", "set", "范马刃牙", "--disable"]).await);
    assert!(said.contains("sync off"), "{said}");
    let m = &d.api("GET", "/api/mappings?filter=all").await["items"][0];
    assert_eq!(m["sync_enabled"], false);

    // With the daemon stopped the same commands work on the store directly.
    assert_eq!(d.stop().await, Some(0));
    let offline = json_out(&run(cfg.clone(), &["mappings", "list", "--json"]).await);
    assert_eq!(offline["items"][0]["sync_enabled"], false, "{offline}");
    let o = run(cfg.clone(), &["mappings", "set", "40275", "--show", "nope"]).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not in the tracker's catalogue"),
        "the cached catalogue checks offline too: {}",
        stderr(&o)
    );
    let said = ok(&run(
        cfg.clone(),
        &[
            "mappings",
            "set",
            "40275",
            "--show",
            "office-uk",
            "--enable",
        ],
    )
    .await);
    assert!(
        said.contains("office-uk") && said.contains("sync on"),
        "{said}"
    );
    let o = run(cfg.clone(), &["mappings", "set", "40275"]).await;
    assert!(!o.status.success(), "a change is required");

    // Restarted, the daemon sees what was decided offline.
    d.restart().await;
    let m = &d.api("GET", "/api/mappings?filter=all").await["items"][0];
    assert_eq!(m["tracker"]["id"], "office-uk");
    assert_eq!(m["sync_enabled"], true);
    assert_eq!(m["method"], "manual");
}
