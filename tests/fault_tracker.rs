//! Fault test: a tracker outage in every form, one after another — 503, then 429 with
//! Retry-After, then refused connections, then a hang past `[tracker] timeout`, then
//! recovery. Plays posted during each phase all arrive, each under one idempotency key and
//! applied once (also the one whose answer the hang cut off); Retry-After is honoured; status
//! names the failure at each step; a permanent 4xx sends its batch to the dead letter and
//! `plexsync outbox retry` brings it back.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::plex::{FakePlex, FakeShow, TOKEN};
use support::tracker::{FakeTracker, Fault};
use support::{eventually, multipart, sample_json, samples};

const LEGACY: &str = "webhook/episode_legacy-thetvdb_media.resume_owner-id1.json";
const WAIT: Duration = Duration::from_secs(20);

fn scrobble(season: u32, episode: u32) -> Value {
    let mut p = sample_json(LEGACY);
    p["event"] = json!("media.scrobble");
    p["Metadata"]["parentIndex"] = json!(season);
    p["Metadata"]["index"] = json!(episode);
    p["Metadata"]["ratingKey"] = json!(format!("9{season:03}{episode:03}"));
    p["Metadata"]["guid"] = json!(format!(
        "com.plexapp.agents.thetvdb://301376/{season}/{episode}?lang=en"
    ));
    p
}

async fn wait_posts(tracker: &FakeTracker, n: usize, what: &str) {
    eventually(what, WAIT, || (tracker.posts().len() >= n).then_some(())).await;
}

/// Poll `status` until its `tracker_error` satisfies `ok`; that error. Waiting for the
/// condition (not a fixed sleep) keeps the test honest on a slow or busy machine.
async fn tracker_error_where(d: &Daemon, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = d.status().await;
        if let Some(e) = last["tracker_error"].as_str() {
            if ok(e) {
                return e.to_string();
            }
        }
        if tokio::time::Instant::now() > deadline {
            panic!("status never showed {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outage_form_in_turn_then_recovery_delivers_everything_once() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![FakeShow {
        rating_key: "56850".into(),
        guid: "com.plexapp.agents.thetvdb://301376?lang=en".into(),
        title: "Be Cool, Scooby-Doo!".into(),
        year: 2015,
        guids: vec![],
    }])
    .await;
    let tracker = FakeTracker::start(vec![
        json!({"id": "scooby", "title": "Be Cool, Scooby-Doo!", "year": 2015, "tvdb_id": 301376}),
    ])
    .await;
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), "[poll]\nenabled = false\n")
        .replace("[server]\n", "[server]\nwebhook_rate_limit = 100000\n");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let d = Daemon::start(dir.path(), &cfg_text).await;
    let http = reqwest::Client::new();
    let post = |s: u32, e: u32| {
        let (ct, body) = multipart(&scrobble(s, e), None);
        let req = http
            .post(&d.webhook_url)
            .header("content-type", ct)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        }
    };
    eventually("the catalogue", WAIT, || {
        (tracker.state.lock().unwrap().requests >= 1).then_some(())
    })
    .await;

    // 1. 503 on every export.
    tracker.set_sticky(Some(Fault::Status(503, None)));
    post(1, 1).await;
    wait_posts(&tracker, 2, "two attempts answered 503").await;
    tracker_error_where(&d, "the 503", |e| e.contains("503")).await;

    // 2. 429 with Retry-After: 2 s. The daemon's own backoff is ≤ 500 ms here, so a gap of
    //    ~2 s between attempts is the header at work.
    tracker.set_sticky(Some(Fault::Status(429, Some(2))));
    post(1, 2).await;
    let before = tracker.posts().len();
    wait_posts(&tracker, before + 3, "attempts answered 429").await;
    // Each request carries its arrival time, so the times and the list cannot disagree.
    let posts = tracker.posts();
    let gaps: Vec<Duration> = (before + 1..before + 3)
        .map(|i| posts[i].at.duration_since(posts[i - 1].at))
        .collect();
    for g in &gaps {
        assert!(
            *g >= Duration::from_millis(1800),
            "Retry-After: 2 honoured between attempts: {gaps:?}"
        );
    }
    tracker_error_where(&d, "the 429", |e| e.contains("429")).await;

    // 3. Refused connections.
    tracker.server.go_down_hard();
    tracker.set_sticky(None);
    post(1, 3).await;
    // The next attempt comes after the 2 s Retry-After; status then names the refusal.
    tracker_error_where(&d, "the refusal instead of the 429", |e| !e.contains("429")).await;

    // 4. Back, but hanging past the 2 s timeout (the fake applies the batch after the
    //    sleep: the daemon never sees that answer and must resend under the same key).
    tracker.set_sticky(Some(Fault::Hang(Duration::from_millis(2600))));
    tracker.server.come_back().await;
    post(1, 4).await;
    let before = tracker.posts().len();
    wait_posts(&tracker, before + 1, "an attempt that hangs").await;
    tracker_error_where(&d, "the timeout", |e| e.to_lowercase().contains("time")).await;

    // 5. Recovery: everything arrives, once.
    tracker.set_sticky(None);
    eventually("all four plays at the tracker", WAIT, || {
        let w = tracker.watched();
        (1..=4)
            .all(|e| w.contains_key(&("scooby".into(), 1, e)))
            .then_some(())
    })
    .await;
    let mut st = d.status().await;
    for _ in 0..100 {
        if st["counts"]["outbox_items"] == 0 && st["tracker_error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        st = d.status().await;
    }
    assert_eq!(st["counts"]["outbox_items"], 0, "{st}");
    assert!(
        st["tracker_error"].is_null(),
        "status clears the error: {st}"
    );
    assert_once(&tracker);

    // A permanent 4xx: the batch goes to the dead letter, not round and round.
    tracker.push_fault(Fault::Status(422, None));
    let before = tracker.posts().len();
    post(2, 1).await;
    let mut st = d.status().await;
    for _ in 0..200 {
        if st["counts"]["dead_letters"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        st = d.status().await;
    }
    assert_eq!(st["counts"]["dead_letters"], 1, "{st}");
    // An absence can only be watched over a window: 800 ms is longer than the configured
    // max_backoff (500 ms), so an automatic retry would have been sent within it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        tracker.posts().len(),
        before + 1,
        "a 4xx is not retried on its own"
    );
    assert!(!tracker.watched().contains_key(&("scooby".into(), 2, 1)));
    let out = d.cli(&["outbox", "list", "--json"], None);
    assert!(out.status.success());
    let ob: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ob["dead_letters"].as_array().map(Vec::len), Some(1), "{ob}");
    let out = d.cli(&["outbox", "retry"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the retried dead letter at the tracker", WAIT, || {
        tracker
            .watched()
            .contains_key(&("scooby".into(), 2, 1))
            .then_some(())
    })
    .await;
    let st = d.status().await;
    assert_eq!(st["counts"]["dead_letters"], 0, "{st}");
    assert_once(&tracker);
    // The manual retry is a new batch with a new key (invariant 3).
    let keys: HashSet<String> = tracker.posts()[before..]
        .iter()
        .map(|p| p.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 2, "the retried dead letter got a new key");
}

/// Each episode was sent under one key only, and each key changed the tracker once.
fn assert_once(tracker: &FakeTracker) {
    let mut key_of: HashMap<(u64, u64), String> = HashMap::new();
    let mut applied_keys = HashSet::new();
    for p in tracker.posts() {
        let key = p.header("idempotency-key").unwrap().to_string();
        let Ok(body) = serde_json::from_slice::<Value>(&p.body) else {
            continue;
        };
        for e in body["episodes"].as_array().unwrap() {
            let ep = (
                e["season"].as_u64().unwrap(),
                e["episode"].as_u64().unwrap(),
            );
            if let Some(k) = key_of.insert(ep, key.clone()) {
                // The dead-lettered batch is the one exception: a manual retry gets a new key.
                if ep != (2, 1) {
                    assert_eq!(k, key, "episode {ep:?} went out under two keys");
                }
            }
        }
        if tracker.state.lock().unwrap().replies.contains_key(&key) {
            applied_keys.insert(key);
        }
    }
    assert_eq!(
        tracker.applied(),
        applied_keys.len(),
        "each key applied exactly once"
    );
}

/// The defect this guards: after failures had grown an export's back-off to minutes, fixing
/// the cause — another tracker URL by a reload, or a person's `outbox retry` once the tracker
/// is back — left it waiting the rest of the back-off (up to `max_backoff`, 30 minutes by
/// default), with health showing the old error meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_tracker_gets_the_waiting_exports_at_once() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![FakeShow {
        rating_key: "56850".into(),
        guid: "com.plexapp.agents.thetvdb://301376?lang=en".into(),
        title: "Be Cool, Scooby-Doo!".into(),
        year: 2015,
        guids: vec![],
    }])
    .await;
    let show =
        json!({"id": "scooby", "title": "Be Cool, Scooby-Doo!", "year": 2015, "tvdb_id": 301376});
    let old = FakeTracker::start(vec![show.clone()]).await;
    let new = FakeTracker::start(vec![show]).await;
    // Every retry after a failure waits 10 minutes.
    let text_for = |tracker: &FakeTracker| {
        daemon::config(&plex.url(), &tracker.url(), "[poll]\nenabled = false\n").replace(
            "initial_backoff = \"100ms\"\nmax_backoff = \"500ms\"",
            "initial_backoff = \"10m\"\nmax_backoff = \"10m\"",
        )
    };
    let cfg_text = text_for(&old);
    assert!(cfg_text.contains("\"10m\""), "{cfg_text}");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let d = Daemon::start(dir.path(), &cfg_text).await;
    let http = reqwest::Client::new();
    let post = |s: u32, e: u32| {
        let (ct, body) = multipart(&scrobble(s, e), None);
        let req = http
            .post(&d.webhook_url)
            .header("content-type", ct)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        }
    };
    let delivered = |t: &FakeTracker, e: u32| t.watched().contains_key(&("scooby".into(), 1, e));

    // The old tracker asks for an hour's quiet (its budget is spent): every export waits.
    old.set_sticky(Some(Fault::Status(429, Some(3600))));
    post(1, 1).await;
    wait_posts(&old, 1, "the first attempt, answered 429").await;
    tracker_error_where(&d, "the 429", |e| e.contains("429")).await;

    // A reload to another tracker: the old one's quiet is not the new one's, and the export
    // goes now, not in an hour.
    std::fs::write(&cfg, text_for(&new)).unwrap();
    d.signal("HUP");
    eventually("the waiting export at the new tracker", WAIT, || {
        delivered(&new, 1).then_some(())
    })
    .await;

    // The new one fails in turn; once it is back, a person's `outbox retry` sends at once.
    new.set_sticky(Some(Fault::Status(503, None)));
    let before = new.posts().len();
    post(1, 2).await;
    wait_posts(&new, before + 1, "the attempt answered 503").await;
    // The tracker has the attempt before the daemon has recorded its 503 and the back-off
    // (the batch's activity row says "retrying" in the same commit): `outbox retry` only
    // finds a batch waiting out a back-off once that is recorded.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let act = d.activity().await;
        if act
            .iter()
            .any(|a| a["source"] == "export" && a["episode"] == 2 && a["event"] == "retrying")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the 503 never recorded: {act:#?}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    new.set_sticky(None);
    let out = d.cli(&["outbox", "retry"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("1 batch(es) waiting out a back-off go now"),
        "{said}"
    );
    eventually("the export after `outbox retry`", WAIT, || {
        delivered(&new, 2).then_some(())
    })
    .await;
    assert!(!delivered(&old, 1) && !delivered(&old, 2));
}
