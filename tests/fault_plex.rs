//! Fault test: history polling through a Plex outage in every form, one after another — the
//! server is down (refused connections), then answers 401, then serves malformed XML in the
//! middle of a run, then recovers. No row is lost (the cursor never passes an unread row), no
//! row is journaled twice, the daemon does not storm the server (requests are counted), and
//! `status` tells the truth at each step.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::plex::{FakePlex, FakeShow, HistoryFixture, TOKEN};
use support::tracker::FakeTracker;

const WAIT: Duration = Duration::from_secs(25);
const HISTORY: &str = "/status/sessions/history/all";
/// 2020-04-04T01:15:56Z.
const VIEWED: i64 = 1_585_962_956;
const ROWS: u32 = 120;

fn row(n: u32) -> HistoryFixture {
    HistoryFixture {
        history_key: format!("/status/sessions/history/{n}"),
        rating_key: Some(format!("{}", 60_000 + n)),
        show_rating_key: Some("56850".into()),
        grandparent_title: "Be Cool, Scooby-Doo!".into(),
        season: 1 + n / 50,
        episode: 1 + n % 50,
        viewed_at: VIEWED + n as i64 * 60,
        account_id: 1,
    }
}

/// Poll `status` until `pred` holds; returns that status.
async fn status_until(d: &Daemon, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = d.status().await;
        if pred(&st) {
            return st;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}; status {st}\n{}", d.log());
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

fn poll_error(st: &Value) -> String {
    st["last_poll"]["error"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_then_401_then_malformed_then_recovery_loses_no_row_and_storms_nothing() {
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
    // Polls run at start-up, on request and on the failure backoff (100 ms, doubling).
    let poll = "[poll]\nschedule = \"0 0 0 1 1 *\"\ninitial_lookback = \"36500d\"\nretry_backoff = \"100ms\"\nlibrary_scan = false\n";
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), poll);
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let d = Daemon::start(dir.path(), &cfg_text).await;
    status_until(&d, "the start-up poll", |st| {
        st["polls"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    for n in 0..ROWS {
        plex.push_history(row(n));
    }

    // 1. Down: connections refused. The poll fails, nothing is stored, status says so.
    plex.server.go_down_hard();
    let polls = d.status().await["polls"].as_u64().unwrap();
    d.api("POST", "/api/poll").await;
    let st = status_until(&d, "a failed poll while Plex is down", |st| {
        st["polls"].as_u64().unwrap_or(0) > polls && !poll_error(st).is_empty()
    })
    .await;
    assert!(
        poll_error(&st).contains("unreachable"),
        "status names the outage: {st}"
    );
    assert!(st["plex_error"].is_string(), "{st}");
    assert_eq!(st["counts"]["journal"], 0);
    // No retry storm: the backoff doubles from 100 ms, so 1.5 s hold a handful of runs (a
    // longer outage would only lengthen the 401 pause below, which doubles on the same count).
    let before = d.status().await["polls"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = d.status().await;
    let runs = st["polls"].as_u64().unwrap() - before;
    assert!(runs <= 6, "{runs} polls in 1.5 s against a down server");
    assert!(poll_error(&st).contains("unreachable"), "{st}");

    // 2. Back, but rejecting the token: polling pauses (4 × the backoff, doubling).
    plex.state.lock().unwrap().fail_with = Some(401);
    plex.server.come_back().await;
    // The live source's upgrade (refused with 401 too) can say the token is rejected before
    // the poll's retry does: wait for the poll's own report of it.
    let st = status_until(&d, "the token rejected by a poll", |st| {
        st["plex_token_rejected"] == true && poll_error(st).contains("Plex token rejected")
    })
    .await;
    assert_eq!(st["counts"]["journal"], 0);
    let before = plex.state.lock().unwrap().requests.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = plex.state.lock().unwrap().requests.len() - before;
    assert!(
        during <= 8,
        "{during} requests in 2 s with a rejected token"
    );

    // 3. The token works again, but the second history page of the run is malformed XML:
    //    the first page is journaled, the cursor stops there.
    {
        let mut s = plex.state.lock().unwrap();
        s.malformed_history = 1_000;
        s.malformed_history_skip = 1;
        s.fail_with = None;
    }
    let st = status_until(&d, "a run broken by malformed XML", |st| {
        st["plex_token_rejected"] == false && poll_error(st).contains(HISTORY)
    })
    .await;
    assert_eq!(
        st["counts"]["journal"], 50,
        "the page before the broken one, and nothing from it: {st}"
    );
    assert!(st["plex_error"].is_string() || !poll_error(&st).is_empty());
    let before = plex.count(HISTORY);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = plex.count(HISTORY) - before;
    assert!(
        during <= 8,
        "{during} history requests in 3 s of malformed answers"
    );
    assert_eq!(d.status().await["counts"]["journal"], 50);

    // 4. Recovery: every row arrives, once, without a restart or a request.
    let recovery_from = plex.count(HISTORY);
    plex.state.lock().unwrap().malformed_history = 0;
    let st = status_until(&d, "all rows journaled", |st| {
        st["counts"]["journal"] == ROWS && poll_error(st).is_empty()
    })
    .await;
    assert!(st["plex_error"].is_null(), "status clears the error: {st}");
    assert_eq!(st["plex_token_rejected"], false);
    // The recovered run resumed at the cursor (less the overlap), not at the beginning.
    let since: Vec<i64> = plex.requests_to(HISTORY)[recovery_from..]
        .iter()
        .filter_map(|r| {
            r.query.split('&').find_map(|p| {
                p.split_once("%3E=")
                    .or_else(|| p.split_once(">="))
                    .and_then(|(_, v)| v.parse().ok())
            })
        })
        .collect();
    assert!(
        !since.is_empty() && since.iter().all(|&s| s > VIEWED),
        "the cursor advanced past page one: {since:?}"
    );
    // A further poll finds nothing new.
    let polls = st["polls"].as_u64().unwrap();
    d.api("POST", "/api/poll").await;
    let st = status_until(&d, "one more poll", |st| {
        st["polls"].as_u64().unwrap_or(0) > polls
    })
    .await;
    assert_eq!(st["last_poll"]["plays_new"], 0, "{st}");
    assert_eq!(st["counts"]["journal"], ROWS);
    support::eventually("every row at the tracker", WAIT, || {
        (tracker.watched().len() == ROWS as usize).then_some(())
    })
    .await;
    let mut key_of: HashMap<(u64, u64), String> = HashMap::new();
    for p in tracker.posts() {
        let key = p.header("idempotency-key").unwrap().to_string();
        let body: Value = serde_json::from_slice(&p.body).unwrap();
        for e in body["episodes"].as_array().unwrap() {
            let ep = (
                e["season"].as_u64().unwrap(),
                e["episode"].as_u64().unwrap(),
            );
            if let Some(k) = key_of.insert(ep, key.clone()) {
                assert_eq!(k, key, "episode {ep:?} exported twice");
            }
        }
    }
}
