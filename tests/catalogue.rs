//! The catalogue task's refresh rules against a fake tracker: what a fetched catalogue may
//! replace. The daemon runs in process (support/inproc.rs).

mod support;

use std::time::Duration;

use serde_json::json;
use support::daemon;
use support::inproc::InProc;
use support::plex::FakePlex;
use support::tracker::FakeTracker;

const WAIT: Duration = Duration::from_secs(30);

/// Lines of `log` saying the tracker's catalogue was fetched with `shows` shows.
fn fetches(log: &str, shows: usize) -> usize {
    let field = format!("shows={shows}");
    log.lines()
        .filter(|l| l.contains("fetched the tracker catalogue") && l.contains(&field))
        .count()
}

/// Wait until the daemon has fetched an empty catalogue `n` times in all: the refresh after
/// each fetch is done before the next fetch starts, so all but the last are handled.
async fn until_empty_fetches(d: &InProc, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while fetches(&d.log(), 0) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} empty fetches:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_empty_answer_never_replaces_a_catalogue_with_shows() {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![]).await;
    let tracker = FakeTracker::start(vec![
        json!({"id": "office-uk", "title": "The Office", "year": 2001}),
        json!({"id": "bluey", "title": "Bluey", "year": 2018}),
    ])
    .await;
    let cfg = daemon::config(
        &plex.url(),
        &tracker.url(),
        "[[matchers]]\nkind = \"title\"\n[poll]\nenabled = false\n",
    )
    .replace("[tracker]\n", "[tracker]\ncatalogue_refresh = \"100ms\"\n");
    let mut d = InProc::start(dir.path(), &cfg).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while d.status().await["catalogue_shows"].as_u64() != Some(2) {
        assert!(tokio::time::Instant::now() < deadline, "no catalogue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The tracker answers `[]` from now on.
    tracker.state.lock().unwrap().shows.clear();
    until_empty_fetches(&d, 2).await;
    let st = d.status().await;
    assert_eq!(st["catalogue_shows"], 2, "{}", d.log());
    // Said in status, not only in the log.
    let health = st["health"].as_array().cloned().unwrap_or_default();
    assert!(
        health.iter().any(|h| h["message"]
            .as_str()
            .is_some_and(|m| m.contains("answered an empty catalogue"))),
        "{st:#}"
    );
    assert!(
        d.log()
            .contains("the tracker answered an empty catalogue; keeping the current one"),
        "{}",
        d.log()
    );

    // The stored copy was kept too: a restart loads it, and the tracker's `[]` still
    // replaces nothing.
    d.restart().await;
    let before = fetches(&d.log(), 0);
    until_empty_fetches(&d, before + 2).await;
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("loaded the cached tracker catalogue") && l.contains("shows=2")),
        "{}",
        d.log()
    );
    assert_eq!(d.status().await["catalogue_shows"], 2, "{}", d.log());

    // The tracker answers with shows again: the warning goes.
    tracker
        .state
        .lock()
        .unwrap()
        .shows
        .push(json!({"id": "bluey", "title": "Bluey", "year": 2018}));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = d.status().await;
        let refused = st["health"].as_array().is_some_and(|h| {
            h.iter().any(|h| {
                h["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("answered an empty catalogue"))
            })
        });
        if !refused && st["catalogue_shows"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{st:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
