//! Secrets end to end: `key generate`, `rekey` (one transaction, the old key then opens
//! nothing), key-file checks at start-up, and the promise that no secret value shows up in
//! clear text in logs, activity rows, error messages or the store file.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::plex::{FakePlex, TOKEN, baki_hanma};
use support::tracker::FakeTracker;
use support::{NEW_AGENT_SCROBBLE, eventually, multipart, sample_json, samples};

const WAIT: Duration = Duration::from_secs(20);
const TRACKER_KEY: &str = "trk-SENTINEL-9f3c2a7e51d04b8c";
const ADMIN_TOKEN: &str = "adm-SENTINEL-0d6e4f19a2b37c85";
const TMDB_KEY: &str = "tmdb-SENTINEL-77a1c3e5f9b2d4e6";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn generate(file: &std::path::Path) -> Output {
    std::process::Command::new(daemon::BIN)
        .args(["key", "generate"])
        .arg(file)
        .output()
        .unwrap()
}

fn set(cfg: &std::path::Path, name: &str, value: &str) {
    let o = daemon::cli(cfg, &["secret", "set", name], Some(value));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_moves_every_secret_to_the_new_key() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![baki_hanma()]).await;
    let tracker = FakeTracker::start(vec![
        json!({"id": 101, "title": "Baki Hanma", "year": 2021, "tmdb_id": 108757}),
    ])
    .await;
    tracker.state.lock().unwrap().expected_key = Some(TRACKER_KEY.into());
    // The capture is a shared user's play: listed by the server and synced.
    plex.list_shared_user();
    let cfg_text = daemon::config_with_plex(
        &plex.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        "[poll]\nenabled = false\n",
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    set(&cfg, "plex-token", TOKEN);
    set(&cfg, "tracker-key", TRACKER_KEY);
    set(&cfg, "admin-token", ADMIN_TOKEN);
    let url = daemon::cli(&cfg, &["webhook-url"], None);
    assert!(url.status.success(), "{}", stderr(&url));
    let url = stdout(&url);

    // `key generate`: a new 0600 file, never an overwrite.
    let new_key = dir.path().join("new.key");
    let o = generate(&new_key);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("key id"), "{}", stdout(&o));
    let meta = std::fs::metadata(&new_key).unwrap();
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let before = std::fs::read(&new_key).unwrap();
    let o = generate(&new_key);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&new_key).unwrap(), before);

    // The key in use is not a new key.
    let old_key = dir.path().join("plexsync.key");
    let o = daemon::cli(
        &cfg,
        &["rekey", "--new-key", old_key.to_str().unwrap()],
        None,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is the key in use"), "{}", stderr(&o));

    // Not while the daemon runs.
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    let o = daemon::cli(
        &cfg,
        &["rekey", "--new-key", new_key.to_str().unwrap()],
        None,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("stop it first"), "{}", stderr(&o));
    assert_eq!(d.stop(), Some(0));

    let o = daemon::cli(
        &cfg,
        &["rekey", "--new-key", new_key.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // plex-token, tracker-key, admin-token and the webhook secret.
    assert!(
        stdout(&o).contains("re-encrypted 4 secret(s)"),
        "{}",
        stdout(&o)
    );
    // The old key opens nothing any more: a clear refusal, not silently lost tokens.
    let o = daemon::cli(&cfg, &["webhook-url"], None);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("was encrypted with key"),
        "{}",
        stderr(&o)
    );
    // A second run has nothing left to do.
    let o = daemon::cli(
        &cfg,
        &["rekey", "--new-key", new_key.to_str().unwrap()],
        None,
    );
    assert!(
        stdout(&o).contains("re-encrypted 0 secret(s)"),
        "{}",
        stdout(&o)
    );

    // Under the new key everything is as it was: the same webhook URL, a working Plex token
    // and tracker key.
    let cfg_text = format!("{cfg_text}\n[secrets]\nkey_file = \"new.key\"\n");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let o = daemon::cli(&cfg, &["webhook-url"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), url);
    let d = Daemon::start(dir.path(), &cfg_text).await;
    support::accounts_read(&d).await;
    let (ct, body) = multipart(&sample_json(NEW_AGENT_SCROBBLE), None);
    let r = reqwest::Client::new()
        .post(&d.webhook_url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    eventually("the play reaches the tracker", WAIT, || {
        tracker
            .watched()
            .contains_key(&("101".to_string(), 1, 1))
            .then_some(())
    })
    .await;
}

#[test]
fn a_bad_key_file_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_text = daemon::config("http://127.0.0.1:9", "http://127.0.0.1:9/api", "");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let key = dir.path().join("plexsync.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = daemon::cli(&cfg, &["webhook-url"], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, [7u8; 31]).unwrap();
    let o = daemon::cli(&cfg, &["run"], None);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("must hold 32 raw bytes or 64 hex characters"),
        "{}",
        stderr(&o)
    );
    // 64 hex characters are a key too.
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let o = daemon::cli(&cfg, &["webhook-url"], None);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The packaged unit hands the key over as a systemd credential. systemd (256 and later, on
/// tmpfs) writes it 0400 and grants the service's user read through an ACL, which `stat` shows
/// as 0440: that key is accepted; one others may read is not, nor is a 0440 key elsewhere.
#[test]
fn a_systemd_credential_readable_through_its_acl_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_text = daemon::config("http://127.0.0.1:9", "http://127.0.0.1:9/api", "");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let key = creds.join("plexsync.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o500)).unwrap();
    let run = |mode: u32| {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        std::process::Command::new(daemon::BIN)
            .args(["webhook-url", "--config"])
            .arg(&cfg)
            .env("CREDENTIALS_DIRECTORY", &creds)
            .env_remove("STATE_DIRECTORY")
            .env_remove("RUNTIME_DIRECTORY")
            .output()
            .unwrap()
    };
    let o = run(0o440);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(0o444);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("systemd credential others may read"),
        "{}",
        stderr(&o)
    );
    // Outside the credentials directory the rule stays 0600.
    let own = dir.path().join("plexsync.key");
    std::fs::write(&own, [7u8; 32]).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o440)).unwrap();
    let o = daemon::cli(&cfg, &["webhook-url"], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_activity_errors_or_the_store_file() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![baki_hanma()]).await;
    let tracker = FakeTracker::start(vec![
        json!({"id": 101, "title": "Baki Hanma", "year": 2021, "tmdb_id": 108757}),
    ])
    .await;
    // The tracker wants another key than the one stored: every export is refused (401), so
    // errors about the key are logged and stored.
    tracker.state.lock().unwrap().expected_key = Some("some-other-key".into());
    // The capture is a shared user's play: listed by the server and synced.
    plex.list_shared_user();
    let cfg_text = daemon::config_with_plex(
        &plex.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        "[poll]\nschedule = \"0 0 0 1 1 *\"\ninitial_lookback = \"36500d\"\nlibrary_scan = false\n",
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    set(&cfg, "plex-token", TOKEN);
    set(&cfg, "tracker-key", TRACKER_KEY);
    set(&cfg, "admin-token", ADMIN_TOKEN);
    set(&cfg, "tmdb-key", TMDB_KEY);
    let d = Daemon::start(dir.path(), &cfg_text).await;
    support::accounts_read(&d).await;
    let webhook_secret = d.webhook_url.rsplit('/').next().unwrap().to_string();
    let http = reqwest::Client::new();
    // A good webhook (Plex is asked for the show with the token; the export fails with 401),
    // a wrong secret, a secret with a typo, and a Plex that rejects the token.
    let (ct, body) = multipart(&sample_json(NEW_AGENT_SCROBBLE), None);
    let r = http
        .post(&d.webhook_url)
        .header("content-type", ct.clone())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let wrong = format!("http://{}/webhook/{}x", d.addr, webhook_secret);
    let r = http
        .post(&wrong)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&webhook_secret), "{text}");
    eventually("the export is refused by the tracker", WAIT, || {
        d.log().contains("401").then_some(())
    })
    .await;
    plex.fail_next(401, 50);
    d.api("POST", "/api/poll").await;
    eventually("the rejected token shows", WAIT, || {
        d.log().contains("Plex token rejected").then_some(())
    })
    .await;
    // The error paths that echo input do not echo a secret.
    let r = http
        .put(format!("http://{}/api/secrets/not-a-secret", d.addr))
        .bearer_auth(ADMIN_TOKEN)
        .body(TMDB_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().await.unwrap();
    assert!(!text.contains(TMDB_KEY), "{text}");

    let activity = serde_json::to_string(&d.activity().await).unwrap();
    let status = serde_json::to_string(&d.status().await).unwrap();
    let outbox = serde_json::to_string(&d.api("GET", "/api/outbox").await).unwrap();
    let mut d = d;
    assert_eq!(d.stop(), Some(0));
    let log = d.log();
    let store = std::fs::read(dir.path().join("plexsync.redb")).unwrap();
    let key = std::fs::read(dir.path().join("plexsync.key")).unwrap();
    for (name, secret) in [
        ("plex-token", TOKEN),
        ("tracker-key", TRACKER_KEY),
        ("admin-token", ADMIN_TOKEN),
        ("tmdb-key", TMDB_KEY),
        ("webhook secret", webhook_secret.as_str()),
    ] {
        assert!(!log.contains(secret), "{name} in the log");
        assert!(!activity.contains(secret), "{name} in activity rows");
        assert!(!outbox.contains(secret), "{name} in the outbox errors");
        assert!(
            !store.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{name} in clear text in the store file"
        );
        if name != "webhook secret" {
            // The status shows the webhook URL by design (it is what a person pastes).
            assert!(!status.contains(secret), "{name} in /api/status");
        }
    }
    assert!(
        !store.windows(key.len()).any(|w| w == key.as_slice()),
        "the master key in the store file"
    );
    // The log says what happened without the values.
    assert!(log.contains("/webhook/<secret>"), "{log}");
    let _: Value = serde_json::from_str(&activity).unwrap();
}
