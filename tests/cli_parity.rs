//! Every read command answers the same whether the daemon runs (the CLI asks it over the
//! admin socket) or not (the CLI serves the same typed admin call on the store itself).

mod support;

use std::process::Output;

use serde_json::Value;
use support::daemon::{self, Daemon};
use support::plex::TOKEN;
use support::{NEW_AGENT_SCROBBLE, samples};

fn json_of(o: &Output, what: &str) -> Value {
    // `status` answers with 2 when health has an error (a stopped daemon is one).
    let answered = o.status.success() || (what == "status" && o.status.code() == Some(2));
    assert!(answered, "{what}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{what}: {e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// The commands compared, with `--json` where they have it.
const READS: &[&[&str]] = &[
    &["activity", "--json"],
    &["activity", "--status", "all", "--json"],
    &["activity", "--status", "success", "--json"],
    &["outbox", "list", "--json"],
    &["conflicts", "list", "--json"],
    &["mappings", "list", "--json"],
    &["mappings", "list", "--conflicts", "--json"],
    &["mappings", "list", "--unmapped", "--json"],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_and_offline_answers_are_equal() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let (_plex, _tracker, cfg_text) = support::office_conflict(dir.path()).await;
    let cfg = dir.path().join("plexsync.toml");
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    support::accounts_read(&d).await;
    assert_eq!(
        support::post_sample(&d.webhook_url, NEW_AGENT_SCROBBLE).await,
        200
    );
    let mut total = Value::Null;
    for _ in 0..1200 {
        total = d.api("GET", "/api/conflicts").await["total"].clone();
        if total == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(total, 1, "{}", d.log());

    let online: Vec<Value> = READS
        .iter()
        .map(|args| json_of(&d.cli(args, None), &args.join(" ")))
        .collect();
    let status_on = json_of(&d.cli(&["status", "--json"], None), "status");
    let urls_on: Vec<String> = ["webhook-url", "web-url"]
        .iter()
        .map(|c| String::from_utf8_lossy(&d.cli(&[c], None).stdout).to_string())
        .collect();
    assert_eq!(d.stop(), Some(0));

    for (args, on) in READS.iter().zip(&online) {
        let off = json_of(&daemon::cli(&cfg, args, None), &args.join(" "));
        assert_eq!(&off, on, "`plexsync {}` online vs offline", args.join(" "));
    }
    // `--status all` means every row, both ways (it once meant none offline).
    assert!(online[1]["total"].as_u64().unwrap() > 0);
    assert_eq!(online[0]["total"], online[1]["total"]);

    let status_off = json_of(&daemon::cli(&cfg, &["status", "--json"], None), "status");
    assert_eq!(status_on["running"], true);
    assert_eq!(status_off["running"], false);
    for key in ["counts", "cursors", "plex_token_set", "plex_url"] {
        assert_eq!(status_on[key], status_off[key], "status {key}");
    }
    // The test listens on port 0, which only the running daemon can resolve: compare the
    // URLs after the address (the secret, the token).
    let tail = |u: &str| {
        u.split_once("/webhook/")
            .or(u.split_once("/#token="))
            .map(|(_, t)| t.trim().to_string())
    };
    assert_eq!(
        tail(status_on["webhook_url"].as_str().unwrap()),
        tail(status_off["webhook_url"].as_str().unwrap())
    );
    for (c, on) in ["webhook-url", "web-url"].iter().zip(&urls_on) {
        let off = daemon::cli(&cfg, &[c], None);
        let off = String::from_utf8_lossy(&off.stdout).to_string();
        assert!(tail(&off).is_some(), "{c}: {off}");
        assert_eq!(tail(&off), tail(on), "{c}");
    }
}
