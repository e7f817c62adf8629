//! Tests of the spine: real Plex webhook payloads posted at the daemon end up as watched
//! episodes in a fake tracker — once, even across tracker outages and a SIGKILL — and bad
//! requests get the documented status without storing anything. The daemon runs in process
//! (support/inproc.rs); the SIGKILL test runs the real binary.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::Driver;
use support::daemon::{self, Daemon};
use support::inproc::InProc;
use support::plex::{FakePlex, TOKEN, baki_hanma};
use support::tracker::{FakeTracker, Fault};
use support::{eventually, multipart, sample_json, samples};

const WAIT: Duration = Duration::from_secs(20);

const NEW_AGENT: &str = support::NEW_AGENT_SCROBBLE;
const LEGACY: &str = "webhook/episode_legacy-thetvdb_media.resume_owner-id1.json";

/// Our own fixture catalogue. Show 777 carries the TMDB id of the sample's EPISODE: a matcher
/// that used episode ids would pick it.
fn catalogue() -> Vec<Value> {
    vec![
        json!({"id": 101, "title": "Baki Hanma", "year": 2021, "tmdb_id": 108757, "tvdb_id": null, "imdb_id": null}),
        json!({"id": "scooby", "title": "Be Cool, Scooby-Doo!", "year": 2015, "tmdb_id": null, "tvdb_id": 301376, "imdb_id": "tt4378376"}),
        json!({"id": 777, "title": "Decoy", "year": 2020, "tmdb_id": 3087250, "tvdb_id": 8530933, "imdb_id": "tt14765720"}),
    ]
}

struct World<D = InProc> {
    _dir: tempfile::TempDir,
    plex: FakePlex,
    tracker: FakeTracker,
    daemon: D,
    http: reqwest::Client,
}

/// The fakes and the config (with the Plex token set), before the daemon starts.
async fn setup() -> (tempfile::TempDir, FakePlex, FakeTracker, String) {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![baki_hanma()]).await;
    let tracker = FakeTracker::start(catalogue()).await;
    // No polling. The new-agent capture is a shared user's play: the server lists that user
    // and the config syncs it beside the owner (the tests are about the plays, not whose).
    plex.list_shared_user();
    let cfg_text = daemon::config_with_plex(
        &plex.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        "[poll]\nenabled = false\n",
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let out = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, plex, tracker, cfg_text)
}

/// The daemon in process.
async fn world() -> World {
    let (dir, plex, tracker, cfg_text) = setup().await;
    let daemon = InProc::start(dir.path(), &cfg_text).await;
    support::accounts_read(&daemon).await;
    World {
        _dir: dir,
        plex,
        tracker,
        daemon,
        http: reqwest::Client::new(),
    }
}

/// The real binary, for the test that kills it.
async fn world_bin() -> World<Daemon> {
    let (dir, plex, tracker, cfg_text) = setup().await;
    let daemon = Daemon::start(dir.path(), &cfg_text).await;
    support::accounts_read(&daemon).await;
    World {
        _dir: dir,
        plex,
        tracker,
        daemon,
        http: reqwest::Client::new(),
    }
}

impl<D: Driver> World<D> {
    async fn post(&self, content_type: &str, body: Vec<u8>) -> (u16, String) {
        self.post_to(self.daemon.webhook_url(), content_type, body)
            .await
    }

    async fn post_to(&self, url: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
        let r = self
            .http
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post_payload(&self, p: &Value) -> (u16, String) {
        let (ct, body) = multipart(p, None);
        self.post(&ct, body).await
    }

    async fn wait_watched(&self, show: &str, s: u32, e: u32) -> String {
        eventually(&format!("tracker marks {show} S{s}E{e}"), WAIT, || {
            self.tracker
                .watched()
                .get(&(show.to_string(), s, e))
                .cloned()
        })
        .await
    }
}

fn legacy_scrobble() -> Value {
    let mut p = sample_json(LEGACY);
    p["event"] = json!("media.scrobble");
    p
}

#[tokio::test]
async fn new_agent_scrobble_is_marked_watched_on_the_show_found_through_plex() {
    if samples().is_none() {
        return;
    }
    let w = world().await;
    let (status, body) = w.post_payload(&sample_json(NEW_AGENT)).await;
    assert_eq!(status, 200, "{body}");
    let at = w.wait_watched("101", 1, 1).await;
    assert_eq!(
        at, "2023-09-10T04:34:04Z",
        "lastViewedAt 1694320444 as RFC 3339 UTC"
    );
    // The show's ids came from Plex with the token; the decoy (episode ids) was never used.
    assert!(w.plex.metadata_requests() >= 1);
    // (After `/identity`: the show is looked up only for a play on that server.)
    let req = w.plex.requests_to("/library/metadata/")[0].clone();
    assert_eq!(req.path, "/library/metadata/40275");
    assert!(req.query.contains("includeGuids=1"));
    assert!(!w.tracker.watched().keys().any(|(id, _, _)| id == "777"));
    let st = w.daemon.status().await;
    assert_eq!(st["counts"]["mappings"], 1);
    let posts = w.tracker.posts();
    assert_eq!(posts.len(), 1);
    let sent: Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(
        sent,
        json!({"episodes": [{"season": 1, "episode": 1, "watched_at": "2023-09-10T04:34:04Z"}]})
    );
    assert!(
        posts[0]
            .header("idempotency-key")
            .is_some_and(|k| k.len() >= 16)
    );
    // The activity row says what happened.
    let act = w.daemon.activity().await;
    let row = act.iter().find(|a| a["source"] == "webhook").unwrap();
    assert_eq!(row["status"], "success");
    assert_eq!(row["event"], "media.scrobble");
    assert_eq!(
        (row["season"].as_u64(), row["episode"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(row["duration_ms"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn legacy_agent_scrobble_uses_the_show_id_inside_the_guid() {
    if samples().is_none() {
        return;
    }
    let w = world().await;
    let (status, body) = w.post_payload(&legacy_scrobble()).await;
    assert_eq!(status, 200, "{body}");
    let at = w.wait_watched("scooby", 1, 14).await;
    assert_eq!(at, "2020-04-04T01:15:56Z");
}

#[tokio::test]
async fn a_scrobbled_episode_without_its_number_is_ignored_not_refused() {
    if samples().is_none() {
        return;
    }
    let w = world().await;
    // Plex leaves `index` out for an episode it has not matched: nothing a tracker can take,
    // but not a malformed request either (the history poll skips the same rows).
    let mut p = legacy_scrobble();
    p["Metadata"].as_object_mut().unwrap().remove("index");
    let (status, body) = w.post_payload(&p).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ignored"), "{body}");
    let act = w.daemon.activity().await;
    assert_eq!(act.len(), 1, "{act:?}");
    assert_eq!(act[0]["status"], "ignored", "{act:?}");
    let action = act[0]["action"].as_str().unwrap_or_default();
    assert!(action.contains("without an episode number"), "{action}");
    assert_eq!(w.daemon.status().await["counts"]["journal"], 0);
    // A number that is there but malformed is still refused.
    let mut p = legacy_scrobble();
    p["Metadata"]["index"] = serde_json::json!(-1);
    let (status, body) = w.post_payload(&p).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Metadata.index"), "{body}");
}

#[tokio::test]
async fn the_real_raw_multipart_body_is_accepted_and_a_pause_is_ignored() {
    let Some(dir) = samples() else { return };
    let w = world().await;
    let headers = std::fs::read_to_string(
        dir.join("webhook/episode_plexagent_media.pause_shared-user.headers.txt"),
    )
    .unwrap();
    let ct = headers
        .trim()
        .strip_prefix("Content-Type: ")
        .unwrap()
        .to_string();
    let body = std::fs::read(
        dir.join("webhook/episode_plexagent_media.pause_shared-user.multipart-body.txt"),
    )
    .unwrap();
    let (status, text) = w.post(&ct, body.clone()).await;
    assert_eq!(status, 200, "LF framing: {text}");
    // The same body with CRLF framing, as PMS sends it on the wire.
    let crlf = String::from_utf8(body).unwrap().replace('\n', "\r\n");
    let (status, text) = w.post(&ct, crlf.into_bytes()).await;
    assert_eq!(status, 200, "CRLF framing: {text}");
    let act = w.daemon.activity().await;
    assert_eq!(act.len(), 2);
    assert!(
        act.iter()
            .all(|a| a["status"] == "ignored" && a["event"] == "media.pause"),
        "{act:?}"
    );
    assert_eq!(w.daemon.status().await["counts"]["journal"], 0);
}

#[tokio::test]
async fn a_thumbnail_part_is_discarded_and_plain_json_is_accepted() {
    if samples().is_none() {
        return;
    }
    let w = world().await;
    let jpeg = vec![0xFFu8; 1024 * 1024];
    let (ct, body) = multipart(&sample_json(NEW_AGENT), Some(&jpeg));
    let (status, text) = w.post(&ct, body).await;
    assert_eq!(status, 200, "{text}");
    // Tautulli-style relays post the JSON alone.
    let (status, text) = w
        .post(
            "application/json",
            serde_json::to_vec(&legacy_scrobble()).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    w.wait_watched("101", 1, 1).await;
    w.wait_watched("scooby", 1, 14).await;
}

#[tokio::test]
async fn the_same_webhook_twice_is_exported_once() {
    if samples().is_none() {
        return;
    }
    let w = world().await;
    let p = sample_json(NEW_AGENT);
    let (s1, b1) = w.post_payload(&p).await;
    let (s2, b2) = w.post_payload(&p).await;
    assert_eq!((s1, s2), (200, 200));
    assert!(b1.contains("journaled"), "{b1}");
    assert!(b2.contains("duplicate"), "{b2}");
    w.wait_watched("101", 1, 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(w.tracker.posts().len(), 1, "one export for one viewing");
    let act = w.daemon.activity().await;
    assert_eq!(act.iter().filter(|a| a["status"] == "duplicate").count(), 1);
    assert_eq!(w.daemon.status().await["counts"]["journal"], 1);
}

#[tokio::test]
async fn tracker_outage_503_then_refused_then_recovery_delivers_with_one_key() {
    if samples().is_none() {
        return;
    }
    let w = world().await;
    // Let the catalogue load first; then the tracker fails every export.
    eventually("catalogue", WAIT, || {
        (w.tracker.state.lock().unwrap().requests >= 1).then_some(())
    })
    .await;
    w.tracker.set_sticky(Some(Fault::Status(503, None)));
    let (status, _) = w.post_payload(&legacy_scrobble()).await;
    assert_eq!(status, 200);
    eventually("two failed attempts", WAIT, || {
        (w.tracker.posts().len() >= 2).then_some(())
    })
    .await;
    w.tracker.server.go_down();
    let mut st = w.daemon.status().await;
    for _ in 0..300 {
        if st["tracker_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        st = w.daemon.status().await;
    }
    assert!(
        st["tracker_error"].is_string(),
        "status tells the tracker is failing: {st}"
    );
    w.tracker.set_sticky(None);
    w.tracker.server.come_back().await;
    w.wait_watched("scooby", 1, 14).await;
    let keys: std::collections::HashSet<String> = w
        .tracker
        .posts()
        .iter()
        .map(|p| p.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 1, "every retry of the batch reuses its key");
    assert_eq!(w.tracker.applied(), 1);
    let mut st = w.daemon.status().await;
    for _ in 0..100 {
        if st["counts"]["outbox_items"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        st = w.daemon.status().await;
    }
    assert_eq!(st["counts"]["outbox_items"], 0, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_delivers_its_outbox_once_after_restart() {
    if samples().is_none() {
        return;
    }
    let mut w = world_bin().await;
    eventually("catalogue", WAIT, || {
        (w.tracker.state.lock().unwrap().requests >= 1).then_some(())
    })
    .await;
    // The tracker keeps failing: the play waits in the outbox.
    w.tracker.set_sticky(Some(Fault::Status(503, Some(0))));
    let (status, _) = w.post_payload(&legacy_scrobble()).await;
    assert_eq!(status, 200);
    eventually("an attempt", WAIT, || {
        (!w.tracker.posts().is_empty()).then_some(())
    })
    .await;
    w.daemon.kill();
    w.tracker.set_sticky(None);
    w.daemon.restart().await;
    w.wait_watched("scooby", 1, 14).await;
    // The tracker has the episode before the daemon has recorded its answer: wait until the
    // outbox is empty (then nothing more can be sent) before counting what arrived.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = w.daemon.status().await;
        if st["counts"]["outbox_items"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery never recorded: {st}"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(w.tracker.applied(), 1, "delivered once");
    let keys: std::collections::HashSet<String> = w
        .tracker
        .posts()
        .iter()
        .map(|p| p.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 1, "the batch survived the kill with its key");
    let st = w.daemon.status().await;
    assert_eq!(st["counts"]["outbox_items"], 0);
    assert_eq!(st["counts"]["journal"], 1);
}

#[tokio::test]
async fn bad_requests_get_their_status_an_activity_row_and_store_nothing() {
    if samples().is_none() {
        return;
    }
    let w = world().await;
    let base = format!("http://{}", w.daemon.addr);
    let good = serde_json::to_vec(&sample_json(NEW_AGENT)).unwrap();

    // Wrong or missing secret: 404 and no activity (nothing passed the secret check).
    let (s, _) = w
        .post_to(
            &format!("{base}/webhook/wrong"),
            "application/json",
            good.clone(),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = w
        .post_to(
            &format!("{base}/webhook/"),
            "application/json",
            good.clone(),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = w
        .post_to(&format!("{base}/webhook"), "application/json", good.clone())
        .await;
    assert_eq!(s, 404);
    assert!(w.daemon.activity().await.is_empty());

    let mut expect_rows = 0;
    // Wrong method.
    let r = w.http.get(&w.daemon.webhook_url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    expect_rows += 1;
    // Wrong or missing content type.
    let (s, t) = w.post("text/plain", good.clone()).await;
    assert_eq!(s, 415, "{t}");
    expect_rows += 1;
    let r = w
        .http
        .post(&w.daemon.webhook_url)
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    expect_rows += 1;
    // Too large: the whole body, and the payload part alone.
    let (s, _) = w
        .post("application/json", vec![b' '; 3 * 1024 * 1024])
        .await;
    assert_eq!(s, 413);
    expect_rows += 1;
    let mut big = sample_json(NEW_AGENT);
    big["Metadata"]["summary"] = json!("x".repeat(300 * 1024));
    let (ct, body) = multipart(&big, None);
    let (s, t) = w.post(&ct, body).await;
    assert_eq!(s, 413, "{t}");
    expect_rows += 1;
    // Malformed multipart: no closing delimiter, no boundary, no payload part.
    let (ct, body) = multipart(&sample_json(NEW_AGENT), None);
    let (s, t) = w.post(&ct, body[..body.len() - 40].to_vec()).await;
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("multipart"), "{t}");
    expect_rows += 1;
    let (s, _) = w
        .post("multipart/form-data", b"--x\r\n\r\n--x--".to_vec())
        .await;
    assert_eq!(s, 400);
    expect_rows += 1;
    let body = b"--b\r\nContent-Disposition: form-data; name=\"thumb\"; filename=\"a.jpg\"\r\n\r\nxx\r\n--b--\r\n".to_vec();
    let (s, t) = w.post("multipart/form-data; boundary=b", body).await;
    assert_eq!(s, 400, "{t}");
    expect_rows += 1;
    // Malformed JSON; not an object; a scrobbled episode with a negative season (one
    // without its season is ignored, not refused: see
    // a_scrobbled_episode_without_its_number_is_ignored_not_refused).
    let (s, t) = w.post("application/json", b"{\"event\": ".to_vec()).await;
    assert_eq!(s, 400, "{t}");
    expect_rows += 1;
    let (s, _) = w.post("application/json", b"[1,2,3]".to_vec()).await;
    assert_eq!(s, 400);
    expect_rows += 1;
    let mut bad_season = sample_json(NEW_AGENT);
    bad_season["Metadata"]["parentIndex"] = json!(-1);
    let (s, t) = w
        .post("application/json", serde_json::to_vec(&bad_season).unwrap())
        .await;
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("parentIndex"), "the reason names the field: {t}");
    expect_rows += 1;

    let act = w.daemon.activity().await;
    assert_eq!(act.len(), expect_rows, "{act:#?}");
    assert!(
        act.iter()
            .all(|a| a["status"] == "failed" && a["error"].is_string())
    );
    let st = w.daemon.status().await;
    assert_eq!(st["counts"]["journal"], 0, "nothing stored");
    // The daemon is still healthy.
    let r = w.http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn cli_works_while_the_daemon_runs() {
    let w = world().await;
    let out = w.daemon.cli(&["webhook-url"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        w.daemon.webhook_url
    );
    let secret = w.daemon.webhook_url.rsplit('/').next().unwrap();
    assert!(secret.len() >= 32, "≥ 128 bits of secret");
    let out = w
        .daemon
        .cli(&["secret", "set", "tracker-key"], Some("tk-secret-value\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("running daemon"));
    let out = w.daemon.cli(&["secret", "set", "nonsense"], Some("x"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown secret name"));
    let out = w.daemon.cli(&["status"], None);
    // 2: answered, with an error in health (this test leaves failures behind).
    assert!(matches!(out.status.code(), Some(0 | 2)));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("running") && text.contains("token set"),
        "{text}"
    );
    // Secrets never reach the log.
    assert!(!w.daemon.log().contains("tk-secret-value"));
    assert!(!w.daemon.log().contains(TOKEN));
    assert!(!w.daemon.log().contains(secret));
}
