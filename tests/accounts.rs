//! The server's account list (`/accounts`) without polling: a webhook-only daemon
//! (`[poll] enabled = false`) reads it at start, after a failure (with backoff), when the Plex
//! token or URL changes, so `[plex] accounts` (default: the owner) decides whose webhooks are
//! synced. The daemon runs in process (support/inproc.rs) against the fake Plex.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::daemon;
use support::inproc::InProc;
use support::plex::{FakePlex, HistoryEntry, SHARED_USER, TOKEN, baki_hanma};
use support::tracker::FakeTracker;
use support::{NEW_AGENT_SCROBBLE, multipart, sample_json, samples};

const WAIT: Duration = Duration::from_secs(20);
const LEGACY: &str = "webhook/episode_legacy-thetvdb_media.resume_owner-id1.json";

/// A fresh store (no account list ever read), the Plex token stored, polling off.
async fn setup() -> (tempfile::TempDir, FakePlex, FakeTracker, String) {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![baki_hanma()]).await;
    let tracker = FakeTracker::start(vec![
        json!({"id": 101, "title": "Baki Hanma", "year": 2021, "tmdb_id": 108757}),
    ])
    .await;
    let text = daemon::config(&plex.url(), &tracker.url(), "[poll]\nenabled = false\n");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, plex, tracker, text)
}

/// POST a webhook payload as Plex does; (status, body).
async fn webhook(d: &InProc, payload: &Value) -> (u16, String) {
    let (ct, body) = multipart(payload, None);
    let r = reqwest::Client::new()
        .post(&d.webhook_url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("the daemon answers");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// Poll the daemon's status until `ok` holds (bounded); the status that did.
async fn status_until(d: &InProc, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = d.status().await;
        if ok(&st) {
            return st;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}: {st}\n{}", d.log());
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Wait until `f` holds (bounded).
async fn until(d: &InProc, what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", d.log());
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// The newest activity row of a webhook (export rows may come after it).
async fn last_webhook_row(d: &InProc) -> Value {
    d.activity()
        .await
        .into_iter()
        .find(|a| a["source"] == "webhook")
        .expect("a webhook row")
}

fn read_at(st: &Value) -> Option<i64> {
    st["plex_accounts_read_at"].as_i64()
}

/// The shared user's scrobble, as episode `episode` (a distinct viewing each time).
fn shared_user_play(episode: u32) -> Value {
    let mut p = sample_json(NEW_AGENT_SCROBBLE);
    p["Metadata"]["index"] = json!(episode);
    p
}

/// The defect this guards: with polling off nothing read `/accounts`, so the selection never
/// knew who the owner was and synced every shared user's webhooks to the owner's tracker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_only_daemon_reads_the_accounts_and_syncs_only_the_selected() {
    if samples().is_none() {
        return;
    }
    let (dir, plex, _tracker, text) = setup().await;
    let d = InProc::start(dir.path(), &text).await;
    // Never read before (a fresh store); the daemon reads it by itself, no poll asked.
    until(
        &d,
        "the daemon asking Plex for /accounts with polling off",
        || plex.count("/accounts") >= 1,
    )
    .await;
    let st = status_until(&d, "the account list read at start", |st| {
        read_at(st).is_some()
    })
    .await;
    assert_eq!(plex.count("/status/sessions/history"), 0, "nothing polls");
    assert!(st["last_poll"].is_null(), "{st}");

    // 播放 is a shared user the server does not list; `[plex] accounts` is the owner.
    let (status, body) = webhook(&d, &shared_user_play(1)).await;
    assert_eq!(status, 200, "acknowledged all the same: {body}");
    assert_eq!(body.trim(), "ignored: account not synced");
    let row = last_webhook_row(&d).await;
    assert_eq!(row["status"], "ignored", "{row:?}");
    assert!(
        row["action"]
            .as_str()
            .unwrap()
            .contains("account 播放 is not synced"),
        "{row:?}"
    );
    let st = d.status().await;
    assert_eq!(st["counts"]["journal"], 0, "not journaled: {st}");

    // The owner's play is.
    let mut owner = sample_json(LEGACY);
    owner["event"] = json!("media.scrobble");
    let (status, body) = webhook(&d, &owner).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("journaled as play"), "{body}");
    let st = d.status().await;
    assert_eq!(st["counts"]["journal"], 1, "{st}");
}

/// Until a first read succeeds, an account the daemon cannot place is synced (an acknowledged
/// play is not dropped on a guess); a failed read is retried on its own with backoff and logged
/// with its fields, and then the selection applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_keeps_the_fallback_and_is_retried() {
    if samples().is_none() {
        return;
    }
    let (dir, plex, _tracker, text) = setup().await;
    // Every request fails until the fake recovers.
    plex.state.lock().unwrap().fail_with = Some(500);
    let d = InProc::start(dir.path(), &text).await;
    until(&d, "a failed read logged", || {
        d.log().contains("cannot read the Plex server's accounts")
    })
    .await;
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("cannot read the Plex server's accounts"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    for field in ["error=", "attempt=1", "retry_in_ms="] {
        assert!(line.contains(field), "{field} in: {line}");
    }
    assert!(line.contains("until it is read"), "{line}");
    assert!(read_at(&d.status().await).is_none());

    // The fallback window: the shared user's play is kept.
    let (status, body) = webhook(&d, &shared_user_play(1)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("journaled as play"), "{body}");
    assert_eq!(d.status().await["counts"]["journal"], 1);

    // Plex recovers: the next retry reads the list, unasked.
    plex.state.lock().unwrap().fail_with = None;
    // The list is in use (and `plex_accounts_read_at` set) before the task logs the read, so
    // wait for both.
    status_until(
        &d,
        "the account list read after the failures, and logged",
        |st| {
            read_at(st).is_some()
                && d.log()
                    .contains("read the Plex server's accounts after failures")
        },
    )
    .await;
    let (status, body) = webhook(&d, &shared_user_play(2)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), "ignored: account not synced");
    let st = d.status().await;
    assert_eq!(st["counts"]["journal"], 1, "{st}");
    assert!(
        st["health"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["key"] != "daemon.task_stopped"),
        "{st}"
    );
}

/// Lines of the log saying the list was read and how many people it had.
fn reads(d: &InProc, people: usize) -> usize {
    d.log()
        .matches(&format!(
            "read the Plex server's accounts accounts={people}"
        ))
        .count()
}

/// A new Plex token or another Plex URL is read at once, not at the next 6-hourly read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_token_or_plex_url_reads_the_accounts_again() {
    if samples().is_none() {
        return;
    }
    let (dir, plex, tracker, text) = setup().await;
    let d = InProc::start(dir.path(), &text).await;
    // The start's read: the owner (the system account 0 is nobody).
    until(&d, "the first read", || reads(&d, 1) == 1).await;
    let before = plex.count("/accounts");

    let out = d.cli(&["secret", "set", "plex-token"], Some(TOKEN));
    assert!(out.status.success());
    until(&d, "a read with the new token", || {
        plex.count("/accounts") > before && reads(&d, 1) == 2
    })
    .await;

    // Another server, which lists the shared user, selected by name.
    let other = FakePlex::start(vec![baki_hanma()]).await;
    other.list_shared_user();
    let moved = daemon::config_with_plex(
        &other.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        "[poll]\nenabled = false\n",
    );
    std::fs::write(&d.config, moved).unwrap();
    d.reload();
    until(&d, "the other server's accounts read", || reads(&d, 2) == 1).await;
    assert_eq!(
        plex.count("/accounts"),
        before + 1,
        "the old server is left"
    );
    // The list is in use: the shared user is placed by name and synced.
    let (status, body) = webhook(&d, &shared_user_play(3)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("journaled as play"), "{body}");
    let row = last_webhook_row(&d).await;
    assert_eq!(row["status"], "success", "{row:?}");
    assert_eq!(row["account"], SHARED_USER.1, "{row:?}");
    let st = d.status().await;
    assert!(st["last_poll"].is_null(), "nothing polled: {st}");
    assert_eq!(other.count("/status/sessions/history"), 0);
}

/// Moved to another Plex server that does not answer `/accounts` yet: the old server's list is
/// no list for the new one, so a webhook of an account nobody can place is kept (the window
/// before a first read), not dropped as "not synced"; after a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_plex_servers_account_list_is_not_used_for_this_one() {
    if samples().is_none() {
        return;
    }
    let (dir, _plex, tracker, text) = setup().await;
    let d = InProc::start(dir.path(), &text).await;
    until(&d, "the first read", || reads(&d, 1) == 1).await;
    let other = FakePlex::start(vec![baki_hanma()]).await;
    other.state.lock().unwrap().fail_with = Some(500);
    let moved = daemon::config(&other.url(), &tracker.url(), "[poll]\nenabled = false\n");
    std::fs::write(&d.config, &moved).unwrap();
    d.reload();
    // The reload says it is done before it drops the old server's list; it wakes the account
    // task only after, so the new server's (refused) read of `/accounts` says the list is gone.
    status_until(&d, "the reload and the new server's list asked for", |st| {
        st["config_reloaded_at"].is_i64() && other.count("/accounts") >= 1
    })
    .await;
    let (status, body) = webhook(&d, &shared_user_play(4)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("journaled as play"), "{body}");
    // A restart on the new config: the stored list is the old server's, not used either.
    // Dropping an InProc only begins its shutdown; the next start needs the store it holds.
    let mut d = d;
    assert_eq!(d.stop().await, Some(0), "{}", d.log());
    let d = InProc::start(dir.path(), &moved).await;
    assert!(read_at(&d.status().await).is_none());
    let (status, body) = webhook(&d, &shared_user_play(5)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("journaled as play"), "{body}");
}

/// A webhook-only setup with a token Plex refuses: health says so at once (the account list
/// needs the token), not only once a play waits for Plex; a good token clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_shows_in_health_without_polling_or_plays() {
    if samples().is_none() {
        return;
    }
    let (dir, _plex, _tracker, text) = setup().await;
    // Nothing else that asks Plex runs: no poll, no live connection.
    let text = text.replace("[poll]\n", "[live]\nenabled = false\n[poll]\n");
    assert!(text.contains("[live]"), "{text}");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = daemon::cli(
        &cfg,
        &["secret", "set", "plex-token"],
        Some("not-the-token"),
    );
    assert!(out.status.success());
    let d = InProc::start(dir.path(), &text).await;
    let rejected = |st: &Value| {
        st["plex_token_rejected"] == true
            && st["health"].as_array().is_some_and(|h| {
                h.iter().any(|c| {
                    c["component"] == "plex" && c["message"].as_str().unwrap_or("").contains("401")
                })
            })
    };
    status_until(&d, "the rejected token in health", rejected).await;
    assert_eq!(d.status().await["counts"]["journal"], 0);
    let out = d.cli(&["secret", "set", "plex-token"], Some(TOKEN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    status_until(&d, "health clear of the token", |st| {
        read_at(st).is_some() && !rejected(st)
    })
    .await;
}

/// The defect this guards: Plex took the token again (fixed on its side) and the account-list
/// read said so, so health showed Plex fine, while the poller sat out the rest of its pause
/// after the 401 (up to an hour): no play was polled, and nothing said why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_poll_goes_on_as_soon_as_the_token_works_again() {
    if samples().is_none() {
        return;
    }
    let (dir, plex, _tracker, text) = setup().await;
    // Polling on, with a pause after a 401 of at least 4 × 10 minutes. No live connection:
    // its upgrade (not refused here) would take the token as good while `/accounts` still
    // refuses it, and use up the minute's wake-up.
    let text = text.replace(
        "[poll]\nenabled = false\n",
        "[live]\nenabled = false\n[poll]\nschedule = \"0 0 0 1 1 *\"\ninitial_lookback = \"36500d\"\nretry_backoff = \"10m\"\nlibrary_scan = false\n",
    );
    assert!(text.contains("retry_backoff"), "{text}");
    plex.fail_next_on("/accounts", 401, 100_000);
    let d = InProc::start(dir.path(), &text).await;
    status_until(&d, "the poll refused with the token", |st| {
        st["plex_token_rejected"] == true && st["last_poll"]["failure"] == "token_rejected"
    })
    .await;
    let show = baki_hanma();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    plex.push_history(HistoryEntry::episode(
        9001,
        &show.rating_key,
        &show.title,
        1,
        4,
        now - 600,
        1,
    ));
    plex.clear_faults();
    // The account list is read again on its own (within seconds); the poll follows it. The
    // play is journaled before that poll's report replaces the 401's, so wait for both.
    let st = status_until(
        &d,
        "the polled play journaled and its poll reported",
        |st| {
            st["counts"]["journal"].as_u64().unwrap_or(0) >= 1 && st["last_poll"]["error"].is_null()
        },
    )
    .await;
    assert_eq!(st["plex_token_rejected"], false, "{st}");
}

/// The account list cannot be read (Plex down) and nothing else reads Plex: health says so,
/// and says it no more once the list is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_account_list_shows_in_health_without_polling() {
    if samples().is_none() {
        return;
    }
    let (dir, plex, _tracker, text) = setup().await;
    plex.fail_next_on("/accounts", 500, 100_000);
    let d = InProc::start(dir.path(), &text).await;
    let unreadable = |st: &Value| {
        st["health"].as_array().is_some_and(|h| {
            h.iter().any(|c| {
                c["component"] == "plex"
                    && c["severity"] == "warning"
                    && c["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("account list cannot be read")
            })
        })
    };
    let st = status_until(&d, "the unreadable list in health", unreadable).await;
    assert!(read_at(&st).is_none(), "{st}");
    plex.clear_faults();
    status_until(&d, "the list read and health clear of it", |st| {
        read_at(st).is_some() && !unreadable(st)
    })
    .await;
}
