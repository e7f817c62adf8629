//! First start (issue 15): a play that arrives before the tracker's catalogue is loaded is
//! resolved the moment the catalogue is published, not after a retry back-off. The daemon runs
//! in process (support/inproc.rs); the tracker's first `GET /shows` is held back.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Driver;
use support::inproc::InProc;
use support::plex::{FakePlex, TOKEN, baki_hanma};
use support::tracker::{FakeTracker, Fault};
use support::{daemon, eventually, multipart, sample_json, samples};

const LEGACY: &str = "webhook/episode_legacy-thetvdb_media.resume_owner-id1.json";

/// How long the tracker holds its first catalogue answer.
const HELD: Duration = Duration::from_secs(1);

fn catalogue() -> Vec<Value> {
    vec![json!({"id": "scooby", "title": "Be Cool, Scooby-Doo!", "year": 2015, "tvdb_id": 301376})]
}

#[tokio::test]
async fn a_play_waiting_for_the_first_catalogue_goes_as_soon_as_it_is_loaded() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![baki_hanma()]).await;
    let tracker = FakeTracker::start(catalogue()).await;
    // The first request the tracker sees is the catalogue task's GET /shows.
    tracker.push_fault(Fault::Hang(HELD));
    let cfg = daemon::config(&plex.url(), &tracker.url(), "[poll]\nenabled = false\n");
    std::fs::write(dir.path().join("plexsync.toml"), &cfg).unwrap();
    let out = daemon::cli(
        &dir.path().join("plexsync.toml"),
        &["secret", "set", "plex-token"],
        Some(TOKEN),
    );
    assert!(out.status.success());
    let d = InProc::start(dir.path(), &cfg).await;
    let started = Instant::now();

    let mut p = sample_json(LEGACY);
    p["event"] = json!("media.scrobble");
    let (ct, body) = multipart(&p, None);
    let r = reqwest::Client::new()
        .post(d.webhook_url())
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The play is journaled before the catalogue can be there.
    assert!(
        started.elapsed() < HELD,
        "the webhook took longer than the held catalogue"
    );

    eventually("the play at the tracker", Duration::from_secs(30), || {
        tracker
            .watched()
            .contains_key(&("scooby".to_string(), 1, 14))
            .then_some(())
    })
    .await;
    let took = started.elapsed();
    // A play that found no catalogue used to be put back by the resolver's first retry delay
    // (2.5–5 s with jitter, so never before 2.5 s); now it waits for the catalogue's
    // publication, which comes right after HELD.
    assert!(
        took < HELD + Duration::from_millis(1200),
        "the play reached the tracker {took:?} after start; the catalogue came after {HELD:?}"
    );
}
